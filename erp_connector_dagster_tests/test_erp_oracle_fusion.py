"""Oracle Fusion specifics the acceptance suite does not see: the client-credentials handshake
and token expiry, the REST framework's q/orderBy/limit rules and error document, inline child
paging, exact decimals, credit memos and cancellations."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
import requests

from erp_connector_dagster.erp import build_source
from erp_connector_dagster.erp.base import SyncWindow
from erp_connector_dagster.erp.http import ErpAuthError
from erp_connector_dagster.erp.oracle_fusion import OracleFusionSource
from erp_connector_dagster.records import RecordKind, RecordStatus, SpendDocumentType
from erp_connector_dagster.sandbox import oracle_fusion as emulator
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.server import SandboxConnection, SandboxServer

CREDENTIALS = emulator.SANDBOX_CREDENTIALS


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[SandboxServer, SandboxConnection, OracleFusionSource]]:
    connection = SandboxConnection(
        name="fusion-test", erp_type="oracle_fusion", company=SandboxCompany(seed=888)
    )
    with SandboxServer([connection]) as server:
        yield server, connection, build_source(server.connection_configs()[0])


@pytest.fixture
def source(served) -> OracleFusionSource:
    served[1].faults.clear()
    return served[2]


@pytest.fixture
def company(served) -> SandboxCompany:
    return served[1].company


def base(served) -> str:
    return served[0].base_url(served[1].name)


def token(served) -> str:
    response = requests.post(
        f"{base(served)}/oauth2/v1/token",
        data={"grant_type": "client_credentials", "scope": emulator.SCOPE},
        auth=(CREDENTIALS["client_id"], CREDENTIALS["client_secret"]),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def get(served, resource: str, **params) -> requests.Response:
    return requests.get(
        f"{base(served)}/fscmRestApi/resources/11.13.18.05/{resource}",
        params=params,
        headers={"Authorization": f"Bearer {token(served)}"},
        timeout=10,
    )


def read(source, kind: RecordKind, window: SyncWindow) -> list:
    return [record for batch in source.fetch(kind, window) for record in batch.records]


# OAuth 2.0 client credentials


def test_the_token_endpoint_speaks_client_credentials(served) -> None:
    good = requests.post(
        f"{base(served)}/oauth2/v1/token",
        data={"grant_type": "client_credentials", "scope": emulator.SCOPE},
        auth=(CREDENTIALS["client_id"], CREDENTIALS["client_secret"]),
        timeout=10,
    )
    wrong = requests.post(
        f"{base(served)}/oauth2/v1/token",
        data={"grant_type": "client_credentials"},
        auth=(CREDENTIALS["client_id"], "not-the-secret"),
        timeout=10,
    )
    password = requests.post(
        f"{base(served)}/oauth2/v1/token",
        data={"grant_type": "password", "username": "u", "password": "p"},
        auth=(CREDENTIALS["client_id"], CREDENTIALS["client_secret"]),
        timeout=10,
    )

    assert good.json()["token_type"] == "Bearer" and good.json()["expires_in"] == 3600
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    assert password.json()["error"] == "unsupported_grant_type"


def test_a_resource_without_a_valid_token_is_refused_as_invalid_token(served) -> None:
    response = requests.get(
        f"{base(served)}/fscmRestApi/resources/11.13.18.05/suppliers",
        headers={"Authorization": "Bearer forged"},
        timeout=10,
    )

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_wrong_secret_raises_an_auth_error_without_the_secret(served, monkeypatch) -> None:
    config = served[0].connection_configs()[0]
    monkeypatch.setenv(config.credentials["client_secret"].env, "s3cret-that-is-wrong")
    source = build_source(config)

    with pytest.raises(ErpAuthError) as refused:
        read(source, RecordKind.VENDOR, SyncWindow())

    assert "invalid_client" in str(refused.value)
    assert "s3cret-that-is-wrong" not in str(refused.value)


def test_an_expired_token_is_answered_401_and_renewed(source, served) -> None:
    source.check_health()
    renewals = source.http.reauthentications
    served[1].faults.expire_token(count=1)

    vendors = read(source, RecordKind.VENDOR, SyncWindow())

    assert len(vendors) == served[1].company.vendor_count
    assert source.http.reauthentications == renewals + 1


def test_a_token_close_to_expiry_is_renewed_before_use(source) -> None:
    source.check_health()
    renewals = source.http.reauthentications
    source._token_expires_at = time.time() + 5  # inside the renewal margin

    source.check_health()

    assert source.http.reauthentications == renewals + 1
    assert source._token_expires_at > time.time() + 3000


# The REST framework: q, orderBy, limit, errors, children


def test_q_filters_and_order_by_sorts_with_a_500_row_cap(served, company) -> None:
    day = company.business_days()[-4]

    response = get(
        served,
        "invoices",
        q=f"InvoiceDate>='{day}';InvoiceDate<'{day + dt.timedelta(days=1)}'",
        orderBy="InvoiceNumber:desc",
        limit=9999,
        onlyData="true",
        totalResults="true",
    )

    page = response.json()
    numbers = [item["InvoiceNumber"] for item in page["items"]]
    assert page["limit"] == 500 and page["hasMore"] is False and page["links"] == []
    assert numbers == sorted(numbers, reverse=True) and len(numbers) == page["totalResults"]
    truth = {r.document_id for r in company.records(RecordKind.SPEND, day)}
    truth |= {line["document_id"] for line in company.bad_spend_lines(day)}
    assert set(numbers) == truth


@pytest.mark.parametrize(
    "params",
    [
        {"q": "NoSuchAttribute='x'"},
        {"q": "InvoiceDate~'2026-01-01'"},
        {"orderBy": "InvoiceId:sideways"},
        {"expand": "noSuchChild"},
    ],
    ids=["unknown-attribute", "bad-operator", "bad-order", "bad-child"],
)
def test_invalid_query_parameters_get_the_adf_error_document(served, params) -> None:
    response = get(served, "invoices", **params)

    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/vnd.oracle.adf.error+json")
    body = response.json()
    assert body["status"] == "400" and body["o:errorDetails"][0]["detail"]


def test_links_are_built_under_the_mount_prefix(served) -> None:
    item = get(served, "suppliers", limit=1).json()["items"][0]

    hrefs = {link["rel"]: link["href"] for link in item["links"]}

    assert hrefs["self"].startswith(f"{base(served)}/fscmRestApi/resources/11.13.18.05/")
    assert hrefs["child"].endswith("/child/sites")


def test_amounts_are_exact_json_numbers(served, company) -> None:
    day = company.business_days()[-6]
    response = get(
        served, "invoices", q=f"InvoiceDate='{day}'", expand="invoiceLines", onlyData="true"
    )

    raw = response.text
    first = company.records(RecordKind.SPEND, day)[0]
    assert f'"LineAmount": {first.amount:f}' in raw  # trailing zeros kept, not a string
    parsed = json.loads(raw, parse_float=Decimal)
    assert any(
        isinstance(line["LineAmount"], Decimal | int)
        for invoice in parsed["items"]
        for line in invoice["invoiceLines"]["items"]
    )


def test_an_inline_child_that_has_more_is_completed_from_the_child_resource(source, served):
    company = served[1].company
    day = company.business_days()[-7]
    lines_of: dict[str, list] = {}
    for record in company.records(RecordKind.SPEND, day):
        lines_of.setdefault(record.document_id, []).append(record)
    number, lines = next((n, lines) for n, lines in lines_of.items() if len(lines) > 1)
    invoice = get(
        served, "invoices", q=f"InvoiceDate='{day}';InvoiceNumber='{number}'", onlyData="true"
    ).json()["items"][0]
    first_page_only = {
        "items": [{"LineNumber": 1}],
        "count": 1,
        "hasMore": True,
        "limit": 1,
        "offset": 0,
    }
    item = {**invoice, "invoiceLines": first_page_only}

    source._complete_children("invoices", item)

    assert item["invoiceLines"]["hasMore"] is False
    assert [line["LineNumber"] for line in item["invoiceLines"]["items"]] == [
        line.line_number for line in lines
    ]


# Throttling


def test_throttling_is_a_429_with_retry_after_and_the_source_waits(source, served) -> None:
    source.check_health()
    served[1].faults.throttle(retry_after=1.0, count=1)

    started = time.monotonic()
    vendors = read(source, RecordKind.VENDOR, SyncWindow())

    assert time.monotonic() - started >= 1.0
    assert len(vendors) == served[1].company.vendor_count
    bearer = token(served)
    served[1].faults.throttle(retry_after=2.0, count=1)
    throttled = requests.get(
        f"{base(served)}/fscmRestApi/resources/11.13.18.05/suppliers",
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=10,
    )
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"


# Credit memos, cancellations, charge accounts, rejects


def test_credit_memos_are_negative_and_canceled_invoices_voided(source, company) -> None:
    day = next(
        d
        for d in reversed(company.business_days())
        if any(
            r.document_type is SpendDocumentType.CREDIT_NOTE
            for r in company.records(RecordKind.SPEND, d)
        )
    )
    line = next(
        r
        for r in company.records(RecordKind.SPEND, day)
        if r.document_type is SpendDocumentType.INVOICE
    )
    company.amend(RecordKind.SPEND, line.natural_key, day, status=RecordStatus.VOIDED)

    records = read(source, RecordKind.SPEND, SyncWindow.for_day(day))

    credits = [r for r in records if r.document_type is SpendDocumentType.CREDIT_NOTE]
    assert credits and all(r.amount < 0 for r in credits)
    by_key = {r.natural_key: r for r in records}
    assert by_key[line.natural_key].status is RecordStatus.VOIDED
    assert by_key[line.natural_key].gl_account == line.gl_account


def test_natural_account_segment_is_configurable(source) -> None:
    invoice = {
        "InvoiceId": 7,
        "InvoiceNumber": "INV-7",
        "InvoiceType": "Standard",
        "InvoiceDate": "2026-03-02",
        "InvoiceCurrency": "EUR",
        "LastUpdateDate": "2026-03-02T10:15:00.000+00:00",
        "invoiceLines": {
            "items": [
                {
                    "LineNumber": 1,
                    "LineAmount": Decimal("99.90"),
                    "DistributionCombination": "101.6400.10.000",
                },
                {"LineNumber": 2, "LineAmount": "12O0.00", "DistributionCombination": "101"},
            ]
        },
    }

    batch = source.model_copy(update={"natural_account_segment": 2}).records_from_items(
        RecordKind.SPEND, [invoice]
    )

    assert [r.gl_account for r in batch.records] == ["6400"]
    assert batch.records[0].amount == Decimal("99.90")
    assert batch.records[0].updated_at == dt.datetime(2026, 3, 2, 10, 15, tzinfo=dt.timezone.utc)
    assert [r.source_id for r in batch.rejected] == ["7/2"]
    assert "LineAmount" in batch.rejected[0].reason


def test_changed_days_asks_only_for_dates(source, company, served) -> None:
    day = company.business_days()[-15]
    line = company.records(RecordKind.SPEND, day)[1]
    since = dt.datetime.now(dt.timezone.utc)
    company.amend(RecordKind.SPEND, line.natural_key, day, description="re-keyed")
    sent = []
    session = source.http.session
    session.hooks["response"].append(lambda response, **_: sent.append(response.request.url))
    try:
        summary = source.changed_days(RecordKind.SPEND, since)
    finally:
        session.hooks["response"].clear()

    assert summary.days == {day}
    assert summary.high_watermark is not None and summary.high_watermark >= since.replace(
        microsecond=0
    )
    assert all("fields=LastUpdateDate%2CInvoiceDate" in url for url in sent)
    assert all("expand" not in url for url in sent)
