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
from erp_connector_dagster.records import RecordKind, RecordStatus, SpendDocumentType, SpendRecord
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
    # Without a REST-Framework-Version header the pod answers framework 1: bare child arrays.
    assert any(
        isinstance(line["LineAmount"], Decimal | int)
        for invoice in parsed["items"]
        for line in invoice["invoiceLines"]
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


# The published shape: Payables invoices as the REST reference and its examples write them


def _published_invoices(framework: int) -> list[dict]:
    """Three invoices in the documented attribute names, with values of our own.

    A standard invoice, a credit memo (Payables stores it negative) and a canceled invoice
    (validation status "Canceled", a cancellation date, amounts zeroed).
    """

    def lines(rows: list[dict]) -> list[dict] | dict:
        if framework < 3:
            return rows
        return {"items": rows, "count": len(rows), "hasMore": False, "limit": 25, "offset": 0}

    common = {
        "InvoiceCurrency": "EUR",
        "PaymentCurrency": "EUR",
        "BusinessUnit": "Lyon Operations BU",
        "Supplier": "Rhone Valley Fasteners",
        "SupplierNumber": "20417",
        "SupplierSite": "LYON-01",
        "ApprovalStatus": "Approved",
        "PaidStatus": "Unpaid",
        "PurchaseOrderNumber": None,
        "CanceledDate": None,
        "CanceledBy": None,
    }
    return [
        {
            **common,
            "InvoiceId": 300100552311001,
            "InvoiceNumber": "RVF-88120",
            "InvoiceAmount": Decimal("1130.40"),
            "InvoiceDate": "2026-10-14",
            "AccountingDate": "2026-10-14",
            "InvoiceType": "Standard",
            "ValidationStatus": "Validated",
            "LastUpdateDate": "2026-10-15T08:01:12.345+00:00",
            "invoiceLines": lines(
                [
                    {
                        "LineNumber": 1,
                        "LineType": "Item",
                        "LineAmount": Decimal("1000.40"),
                        "Description": "Hex bolts M12, zinc plated",
                        "Quantity": Decimal("4000"),
                        "UOM": "Each",
                        "UnitPrice": Decimal("0.2501"),
                        "Item": "FAST-M12",
                        "DistributionCombination": "310.4410.6120.000",
                        "TrackAsAssetFlag": False,
                        "CanceledFlag": False,
                        "DiscardedFlag": False,
                        "PurchaseOrderNumber": "LY-PO-5521",
                    },
                    {
                        "LineNumber": "2",  # framework 9 writes long numbers as strings
                        "LineType": "Item",
                        "LineAmount": 130,
                        "Description": "Torque wrench",
                        "Quantity": None,
                        "UOM": None,
                        "Item": None,
                        "DistributionCombination": "310.4410.1520.000",
                        "TrackAsAssetFlag": True,
                        "CanceledFlag": False,
                        "DiscardedFlag": False,
                        "PurchaseOrderNumber": None,
                    },
                ]
            ),
        },
        {
            **common,
            "InvoiceId": 300100552311002,
            "InvoiceNumber": "RVF-CM-0093",
            "InvoiceAmount": Decimal("-250.00"),
            "InvoiceDate": "2026-10-14",
            "AccountingDate": "2026-10-14",
            "InvoiceType": "Credit memo",
            "ValidationStatus": "Validated",
            "LastUpdateDate": "2026-10-14T16:45:00+02:00",
            "invoiceLines": lines(
                [
                    {
                        "LineNumber": 1,
                        "LineType": "Item",
                        "LineAmount": Decimal("-250.00"),
                        "Description": "Returned damaged bolts",
                        "Quantity": Decimal("-1000"),
                        "UOM": "Each",
                        "Item": "FAST-M12",
                        "DistributionCombination": "310.4410.6120.000",
                        "TrackAsAssetFlag": False,
                        "CanceledFlag": False,
                        "DiscardedFlag": False,
                        "PurchaseOrderNumber": "LY-PO-5521",
                    }
                ]
            ),
        },
        {
            **common,
            "InvoiceId": 300100552311003,
            "InvoiceNumber": "RVF-88121",
            "InvoiceAmount": 0,
            "InvoiceDate": "2026-10-14",
            "AccountingDate": "2026-10-14",
            "InvoiceType": "Standard",
            "ValidationStatus": "Canceled",
            "CanceledDate": "2026-10-16",
            "CanceledBy": "AP.CLERK",
            "LastUpdateDate": "2026-10-16T09:30:00.000+00:00",
            "invoiceLines": lines(
                [
                    {
                        "LineNumber": 1,
                        "LineType": "Item",
                        "LineAmount": 0,
                        "Description": "Duplicate of RVF-88120",
                        "Quantity": 0,
                        "UOM": "Each",
                        "Item": "FAST-M12",
                        "DistributionCombination": "310.4410.6120.000",
                        "TrackAsAssetFlag": False,
                        "CanceledFlag": True,
                        "DiscardedFlag": False,
                        "PurchaseOrderNumber": None,
                    }
                ]
            ),
        },
    ]


def _expected_published_records(connection: str) -> list[SpendRecord]:
    day = dt.date(2026, 10, 14)

    def record(**fields) -> SpendRecord:
        base = {
            "connection": connection,
            "transaction_date": day,
            "vendor_id": "20417",
            "currency": "EUR",
            "status": RecordStatus.ACTIVE,
            "document_type": SpendDocumentType.INVOICE,
            "gl_account": "6120",
            "material_id": "FAST-M12",
            "unit": "Each",
            "is_capex": False,
            "purchase_order_id": None,
        }
        return SpendRecord(**{**base, **fields})

    return [
        record(
            source_id="300100552311001/1",
            updated_at=dt.datetime(2026, 10, 15, 8, 1, 12, 345000, tzinfo=dt.timezone.utc),
            document_id="RVF-88120",
            line_number=1,
            description="Hex bolts M12, zinc plated",
            amount=Decimal("1000.40"),
            quantity=Decimal("4000"),
            purchase_order_id="LY-PO-5521",
        ),
        record(
            source_id="300100552311001/2",
            updated_at=dt.datetime(2026, 10, 15, 8, 1, 12, 345000, tzinfo=dt.timezone.utc),
            document_id="RVF-88120",
            line_number=2,
            description="Torque wrench",
            amount=Decimal("130"),
            quantity=None,
            unit=None,
            material_id=None,
            gl_account="1520",
            is_capex=True,
        ),
        record(
            source_id="300100552311002/1",
            updated_at=dt.datetime(2026, 10, 14, 14, 45, tzinfo=dt.timezone.utc),
            document_id="RVF-CM-0093",
            line_number=1,
            document_type=SpendDocumentType.CREDIT_NOTE,
            description="Returned damaged bolts",
            amount=Decimal("-250.00"),
            quantity=Decimal("-1000"),
            purchase_order_id="LY-PO-5521",
        ),
        record(
            source_id="300100552311003/1",
            updated_at=dt.datetime(2026, 10, 16, 9, 30, tzinfo=dt.timezone.utc),
            document_id="RVF-88121",
            line_number=1,
            status=RecordStatus.VOIDED,
            description="Duplicate of RVF-88120",
            amount=Decimal("0"),
            quantity=Decimal("0"),
        ),
    ]


@pytest.mark.parametrize("framework", [1, 3], ids=["bare-child-arrays", "child-collections"])
def test_published_invoice_shape_gives_exact_canonical_records(source, framework) -> None:
    payload = json.loads(
        emulator.dump_json({"items": _published_invoices(framework)}), parse_float=Decimal
    )

    batch = source.records_from_items(RecordKind.SPEND, payload["items"])

    assert batch.rejected == []
    assert batch.records == _expected_published_records(source.connection_name)
    # The credit memo lowers the document's spend; the canceled invoice adds nothing.
    assert sum(r.amount for r in batch.records) == Decimal("880.40")
    assert batch.high_watermark == dt.datetime(2026, 10, 16, 9, 30, tzinfo=dt.timezone.utc)


def test_credit_memo_type_is_read_whatever_its_capitals_and_sign(source) -> None:
    invoice = _published_invoices(3)[1]
    invoice["InvoiceType"] = "Credit Memo"
    line = invoice["invoiceLines"]["items"][0]
    line["LineAmount"], line["Quantity"] = Decimal("250.00"), Decimal("1000")

    batch = source.records_from_items(RecordKind.SPEND, [invoice])

    assert [(r.amount, r.quantity) for r in batch.records] == [
        (Decimal("-250.00"), Decimal("-1000"))
    ]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"invoiceLines": "not lines"}, "neither a collection nor an array"),
        ({"invoiceLines": []}, "no invoiceLines"),
        ({"InvoiceType": "Prepayment"}, "is not spend"),
        ({"InvoiceCurrency": None}, "InvoiceCurrency is missing"),
        ({"line": {"TrackAsAssetFlag": "perhaps"}}, "TrackAsAssetFlag"),
        ({"line": {"LineAmount": "twelve"}}, "LineAmount"),
    ],
    ids=["child-garbage", "no-lines", "prepayment", "no-currency", "bad-flag", "bad-amount"],
)
def test_unreadable_invoices_are_rejected_with_a_reason(source, change, reason) -> None:
    invoice = _published_invoices(3)[0]
    line_change = change.pop("line", None)
    invoice.update(change)
    if line_change:
        invoice["invoiceLines"]["items"][0].update(line_change)

    batch = source.records_from_items(RecordKind.SPEND, [invoice])

    assert batch.rejected and all(reason in r.reason for r in batch.rejected)
    assert batch.rejected[0].source_id.startswith("300100552311001")
    # Nothing vanishes: every line is a record or a reject.
    assert len(batch.records) + len(batch.rejected) >= 1


def test_the_source_asks_for_framework_3_and_the_pod_answers_by_version(served, source):
    day = served[1].company.business_days()[-5]
    sent = []
    session = source.http.session
    session.hooks["response"].append(lambda response, **_: sent.append(response.request))
    try:
        records = read(source, RecordKind.SPEND, SyncWindow.for_day(day))
    finally:
        session.hooks["response"].clear()
    query = {"q": f"InvoiceDate='{day}'", "expand": "invoiceLines", "onlyData": "true"}
    default = get(served, "invoices", **query).json()["items"][0]
    bearer = {"Authorization": f"Bearer {token(served)}"}
    url = f"{base(served)}/fscmRestApi/resources/11.13.18.05/invoices"
    three = requests.get(
        url, params=query, headers={**bearer, "REST-Framework-Version": "3"}, timeout=10
    )
    refused = requests.get(
        url, params=query, headers={**bearer, "REST-Framework-Version": "x"}, timeout=10
    )

    assert records and all(r.headers["REST-Framework-Version"] == "3" for r in sent)
    assert all("+and+" in r.url or "%20and%20" in r.url for r in sent)
    assert isinstance(default["invoiceLines"], list)
    assert set(three.json()["items"][0]["invoiceLines"]) >= {"items", "count", "hasMore"}
    assert refused.status_code == 400


def test_a_bare_child_array_as_long_as_a_page_is_read_again_in_full(source, served) -> None:
    company = served[1].company
    day = company.business_days()[-7]
    invoice = get(served, "invoices", q=f"InvoiceDate='{day}'", onlyData="true").json()["items"][0]
    truth = [
        r.line_number
        for r in company.records(RecordKind.SPEND, day)
        if r.document_id == invoice["InvoiceNumber"]
    ]
    item = {**invoice, "invoiceLines": [{"LineNumber": 99}] * emulator.DEFAULT_LIMIT}

    source._complete_children("invoices", item)

    assert [line["LineNumber"] for line in item["invoiceLines"]["items"]] == truth


def test_a_canceled_header_voids_lines_whose_own_flags_are_clear(source) -> None:
    invoice = _published_invoices(1)[2]
    invoice["invoiceLines"][0]["CanceledFlag"] = False
    by_date = {**invoice, "ValidationStatus": "Validated"}  # only the cancellation date says so

    records = source.records_from_items(RecordKind.SPEND, [invoice, by_date]).records

    assert [r.status for r in records] == [RecordStatus.VOIDED]
    assert source.records_from_items(RecordKind.SPEND, [by_date]).records[0].status is (
        RecordStatus.VOIDED
    )
