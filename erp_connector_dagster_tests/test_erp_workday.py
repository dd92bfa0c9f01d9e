"""Workday: what the acceptance suite does not see.

The refresh-token grant (HTTP Basic client authentication, `invalid_client` / `invalid_grant`),
renewal after a token expires, WQL offset paging and its envelope, RaaS quirks (XML dates with an
offset, empty fields left out), positive adjustments read as credit notes, the tenant time zone,
canceled invoices and the throttling answer.
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
import requests
from werkzeug.serving import make_server

from erp_connector_dagster.erp.base import SyncWindow
from erp_connector_dagster.erp.http import ErpAuthError
from erp_connector_dagster.erp.workday import (
    WorkdaySource,
    parse_date,
    parse_moment,
    workday_throttle_signal,
    wql_string,
)
from erp_connector_dagster.records import RecordKind, RecordStatus, SpendDocumentType, SpendRecord
from erp_connector_dagster.sandbox import workday
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.faults import FaultPlan

SEED = 6160
UTC = dt.timezone.utc
TENANT = workday.SANDBOX_TENANT


class Tenant:
    """A sandbox Workday tenant served on loopback for one test."""

    def __init__(self, company: SandboxCompany, **options) -> None:
        self.app = workday.create_app(
            company, FaultPlan(), dict(workday.SANDBOX_CREDENTIALS), **options
        )
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def source(self, **overrides) -> WorkdaySource:
        return WorkdaySource(
            connection_name="wd-test",
            base_url=self.base_url,
            **{**workday.SANDBOX_CREDENTIALS, **workday.SANDBOX_OPTIONS, **overrides},
        )

    def token(self) -> str:
        credentials = workday.SANDBOX_CREDENTIALS
        response = requests.post(
            f"{self.base_url}/ccx/oauth2/{TENANT}/token",
            data={"grant_type": "refresh_token", "refresh_token": credentials["refresh_token"]},
            auth=(credentials["client_id"], credentials["client_secret"]),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def wql(self, query: str, limit: int = 100, offset: int = 0) -> requests.Response:
        return requests.post(
            f"{self.base_url}/ccx/api/wql/v1/{TENANT}/data",
            params={"limit": limit, "offset": offset},
            json={"query": query},
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=10,
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def company() -> SandboxCompany:
    return SandboxCompany(seed=SEED)


@pytest.fixture
def tenant(company) -> Iterator[Tenant]:
    served = Tenant(company)
    yield served
    served.close()


def read(source: WorkdaySource, kind: RecordKind, window: SyncWindow) -> list:
    return [record for batch in source.fetch(kind, window) for record in batch.records]


def day_with(company: SandboxCompany, document_type: SpendDocumentType) -> dt.date:
    for day in reversed(company.business_days(company.end - dt.timedelta(days=90))):
        if any(r.document_type is document_type for r in company.records(RecordKind.SPEND, day)):
            return day
    raise AssertionError(f"no {document_type.value} in the last 90 days")


# --- The refresh-token grant --------------------------------------------------------------


def test_token_grant_needs_basic_client_auth_and_the_refresh_token(tenant) -> None:
    credentials = workday.SANDBOX_CREDENTIALS
    url = f"{tenant.base_url}/ccx/oauth2/{TENANT}/token"
    grant = {"grant_type": "refresh_token", "refresh_token": credentials["refresh_token"]}

    in_body = requests.post(
        url,
        data={
            **grant,
            "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"],
        },
        timeout=10,
    )
    basic = base64.b64encode(
        f"{credentials['client_id']}:{credentials['client_secret']}".encode()
    ).decode()
    accepted = requests.post(
        url, data=grant, headers={"Authorization": f"Basic {basic}"}, timeout=10
    )

    assert in_body.status_code == 401 and in_body.json() == {"error": "invalid_client"}
    assert accepted.status_code == 200
    assert accepted.json()["token_type"] == "Bearer" and accepted.json()["access_token"]


@pytest.mark.parametrize(
    ("field", "error"),
    [
        ("client_secret", "invalid_client"),
        ("refresh_token", "invalid_grant"),
    ],
)
def test_refused_grant_is_an_auth_error_without_the_secret(tenant, field, error) -> None:
    source = tenant.source(**{field: "wrong-value-9931"})

    with pytest.raises(ErpAuthError) as refused:
        read(source, RecordKind.VENDOR, SyncWindow())
    health = source.check_health()

    assert error in str(refused.value) and "wrong-value-9931" not in str(refused.value)
    assert health.reachable and not health.authenticated
    assert "wrong-value-9931" not in (health.error or "")


def test_expired_token_is_refused_401_and_renewed(company) -> None:
    served = Tenant(company, token_lifetime_seconds=0.5)
    try:
        source = served.source()
        first = read(source, RecordKind.MATERIAL, SyncWindow())
        time.sleep(0.7)
        expired = requests.get(
            f"{served.base_url}/ccx/service/customreport2/{TENANT}/{workday.REPORT_OWNER}/"
            "ERP_Connector_Purchase_Items",
            params={"format": "json"},
            headers={"Authorization": "Bearer stale"},
            timeout=10,
        )
        second = read(source, RecordKind.MATERIAL, SyncWindow())
    finally:
        served.close()

    assert expired.status_code == 401 and expired.json()["error"] == "invalid_token"
    assert first == second and len(first) == len(company.materials())
    # One sign-in for the first read; the expired token cost exactly one more.
    assert served.app.token_requests == 2
    assert source._http().reauthentications == 1


# --- WQL and RaaS shapes ---------------------------------------------------------------------


def test_wql_pages_by_offset_with_total_and_references(tenant, company) -> None:
    day = company.business_days()[-4]
    query = (
        f"SELECT workdayID, invoiceNumber, supplier, currency, invoiceDate FROM "
        f"supplierInvoices WHERE invoiceDate >= '{day}' AND invoiceDate < "
        f"'{day + dt.timedelta(days=1)}'"
    )

    first, second = tenant.wql(query, limit=5).json(), tenant.wql(query, limit=5, offset=5).json()
    everything = tenant.wql(query, limit=1000).json()
    bad = tenant.wql(query.replace("invoiceNumber", "nope"))

    assert first["total"] == everything["total"] == len(everything["data"]) > 10
    assert first["data"] + second["data"] == everything["data"][:10]
    row = first["data"][0]
    assert set(row) == {"workdayID", "invoiceNumber", "supplier", "currency", "invoiceDate"}
    assert len(row["workdayID"]) == 32 and set(row["supplier"]) == {"id", "descriptor"}
    assert bad.status_code == 400 and "nope" in bad.json()["error"]


def test_small_pages_read_the_same_records_as_one_page(tenant, company) -> None:
    day = company.business_days()[-6]

    paged = read(tenant.source(page_size=4), RecordKind.SPEND, SyncWindow.for_day(day))
    whole = read(tenant.source(), RecordKind.SPEND, SyncWindow.for_day(day))

    assert paged == whole and len({r.natural_key for r in paged}) == len(paged)


def test_raas_dates_carry_an_offset_and_empty_fields_are_left_out(tenant, company) -> None:
    day = company.business_days()[-2]
    url = (
        f"{tenant.base_url}/ccx/service/customreport2/{TENANT}/{workday.REPORT_OWNER}/"
        "ERP_Connector_Inventory_Balances"
    )
    entries = requests.get(
        url,
        params={"format": "json", "As_Of_Date": day.isoformat()},
        headers={"Authorization": f"Bearer {tenant.token()}"},
        timeout=10,
    ).json()["Report_Entry"]
    suppliers = read(tenant.source(), RecordKind.VENDOR, SyncWindow())

    assert entries[0]["As_Of_Date"] == f"{day.isoformat()}-08:00"
    assert parse_date(entries[0]["As_Of_Date"]) == day
    truth = {v.vendor_id: v for v in company.vendors()}
    without_industry = [v for v in suppliers if truth[v.vendor_id].industry_code is None]
    assert without_industry and all(v.industry_code is None for v in without_industry)
    assert {v.vendor_id for v in suppliers} == set(truth)


def test_inventory_is_read_one_as_of_date_per_day(tenant, company) -> None:
    monday = next(d for d in reversed(company.business_days()) if d.weekday() == 0)
    window = SyncWindow(start=monday - dt.timedelta(days=3), end=monday + dt.timedelta(days=1))

    records = read(tenant.source(), RecordKind.INVENTORY, window)

    # Friday and Monday have stock counts; the weekend has none.
    assert {r.snapshot_date for r in records} == {monday - dt.timedelta(days=3), monday}
    truth = company.records(RecordKind.INVENTORY, monday)
    mine = {r.natural_key: r for r in records if r.snapshot_date == monday}
    assert {k: (r.quantity, r.value) for k, r in mine.items()} == {
        r.natural_key: (r.quantity, r.value) for r in truth
    }


# --- Meaning of the native values -------------------------------------------------------------


def test_adjustments_are_stored_positive_and_read_as_negative_credit_notes(tenant, company) -> None:
    day = day_with(company, SpendDocumentType.CREDIT_NOTE)
    invoices = tenant.wql(
        "SELECT workdayID, documentType FROM supplierInvoices WHERE invoiceDate >= "
        f"'{day}' AND invoiceDate < '{day + dt.timedelta(days=1)}'"
    ).json()["data"]
    adjustments = [
        row["workdayID"]
        for row in invoices
        if row["documentType"]["descriptor"] == "Supplier Invoice Adjustment"
    ]
    lines = tenant.wql(
        "SELECT extendedAmount FROM supplierInvoiceLines WHERE supplierInvoice IN ("
        + ", ".join(wql_string(w) for w in adjustments)
        + ")"
    ).json()["data"]

    records = read(tenant.source(), RecordKind.SPEND, SyncWindow.for_day(day))

    assert lines and all(Decimal(line["extendedAmount"]) > 0 for line in lines)
    credits = [r for r in records if r.document_type is SpendDocumentType.CREDIT_NOTE]
    assert sorted(r.amount for r in credits) == sorted(
        -Decimal(line["extendedAmount"]) for line in lines
    )


def test_tenant_time_zone_is_converted_to_utc(tenant, company) -> None:
    day = company.business_days()[-7]
    records = read(tenant.source(), RecordKind.SPEND, SyncWindow.for_day(day))

    truth = company.records(RecordKind.SPEND, day)
    latest = {}
    for record in truth:
        stamp = record.updated_at.replace(microsecond=record.updated_at.microsecond // 1000 * 1000)
        latest[record.document_id] = max(latest.get(record.document_id, stamp), stamp)
    assert parse_moment("2026-11-24T22:30:00.000-08:00") == dt.datetime(
        2026, 11, 25, 6, 30, tzinfo=UTC
    )
    assert all(r.updated_at == latest[r.document_id] for r in records)


def test_canceled_invoice_is_kept_as_voided(tenant, company) -> None:
    day = company.business_days()[-11]
    first = company.records(RecordKind.SPEND, day)[0]
    company.amend(RecordKind.SPEND, first.natural_key, day, status=RecordStatus.VOIDED)

    records = read(tenant.source(), RecordKind.SPEND, SyncWindow.for_day(day))

    by_key = {r.natural_key: r for r in records}
    assert by_key[first.natural_key].status is RecordStatus.VOIDED
    assert all(
        r.status is RecordStatus.ACTIVE for r in records if r.document_id != (first.document_id)
    )


def test_throttling_is_429_with_retry_after(tenant) -> None:
    token = tenant.token()
    tenant.app.faults.throttle(retry_after=4)

    response = requests.post(
        f"{tenant.base_url}/ccx/api/wql/v1/{TENANT}/data",
        params={"limit": 1},
        json={"query": "SELECT workdayID FROM purchaseOrders"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )

    assert response.status_code == 429 and response.headers["Retry-After"] == "4"
    assert workday_throttle_signal(response) == 4.0


# --- The published WQL row shape: references, decimal strings, dates -------------------------


def _ref(wid_hex: str, text: str) -> dict:
    return {"id": wid_hex, "descriptor": text}


def _published_invoice_rows() -> tuple[list[dict], list[dict]]:
    """WQL rows (our own values) in the documented shape: single-instance fields as references
    `{"id", "descriptor"}`, currency amounts as decimal strings, dates `YYYY-MM-DD`,
    date-times with the tenant offset."""
    headers = [
        {
            "workdayID": "a1" * 16,
            "invoiceNumber": "SI-000771",
            "documentType": _ref("d1" * 16, "Supplier Invoice"),
            "invoiceDate": "2026-09-30",
            "supplierID": "SUP-3310",
            "currency": _ref("c1" * 16, "CAD"),
            "invoiceStatus": _ref("e1" * 16, "Approved"),
            "purchaseOrderNumber": "PO-2026-0410",
            "lastUpdated": "2026-09-30T17:05:00.000-07:00",
        },
        {
            "workdayID": "a2" * 16,
            "invoiceNumber": "SIA-000052",
            "documentType": _ref("d2" * 16, "Supplier Invoice Adjustment"),
            "invoiceDate": "2026-09-30",
            "supplierID": _ref("f1" * 16, "SUP-3310"),
            "currency": _ref("c1" * 16, "CAD"),
            "invoiceStatus": _ref("e1" * 16, "Approved"),
            "purchaseOrderNumber": None,
            "lastUpdated": "2026-10-01T09:00:00.000-07:00",
        },
        {
            "workdayID": "a3" * 16,
            "invoiceNumber": "SI-000772",
            "documentType": _ref("d1" * 16, "Supplier Invoice"),
            "invoiceDate": "2026-09-30",
            "supplierID": "SUP-3310",
            "currency": _ref("c1" * 16, "CAD"),
            "invoiceStatus": _ref("e2" * 16, "Canceled"),
            "purchaseOrderNumber": None,
            "lastUpdated": "2026-10-02T08:15:30.250-07:00",
        },
    ]
    lines = [
        {
            "workdayID": "b1" * 16,
            "supplierInvoice": _ref("a1" * 16, "SI-000771"),
            "lineNumber": 1,
            "itemID": "PAL-120",
            "itemDescription": "Wooden pallets 1200x800",
            "ledgerAccountID": [_ref("91" * 16, "6150")],  # multi-instance, one value
            "capitalAsset": False,
            "quantity": "40",
            "unitOfMeasure": _ref("u1" * 16, "EA"),
            "extendedAmount": "920.00",
        },
        {
            "workdayID": "b2" * 16,
            "supplierInvoice": _ref("a2" * 16, "SIA-000052"),
            "lineNumber": 1,
            "itemID": "PAL-120",
            "itemDescription": "Pallets returned",
            "ledgerAccountID": "6150",
            "capitalAsset": False,
            "quantity": "5",
            "unitOfMeasure": _ref("u1" * 16, "EA"),
            "extendedAmount": "115.00",
        },
        {
            "workdayID": "b3" * 16,
            "supplierInvoice": _ref("a3" * 16, "SI-000772"),
            "lineNumber": 1,
            "itemID": None,
            "itemDescription": "Forklift",
            "ledgerAccountID": "1540",
            "capitalAsset": True,
            "quantity": None,
            "unitOfMeasure": None,
            "extendedAmount": "31000.00",
        },
    ]
    return headers, lines


def test_published_wql_rows_give_exact_canonical_records() -> None:
    source = WorkdaySource(
        connection_name="wd-shape",
        base_url="http://127.0.0.1:9",
        **workday.SANDBOX_CREDENTIALS,
        **workday.SANDBOX_OPTIONS,
    )
    headers, lines = _published_invoice_rows()

    records = [
        source._spend_record(header, line) for header, line in zip(headers, lines, strict=True)
    ]

    day = dt.date(2026, 9, 30)
    common = {
        "connection": "wd-shape",
        "transaction_date": day,
        "vendor_id": "SUP-3310",
        "currency": "CAD",
        "line_number": 1,
    }
    assert records == [
        SpendRecord(
            **common,
            source_id="b1" * 16,
            updated_at=dt.datetime(2026, 10, 1, 0, 5, tzinfo=UTC),
            document_id="SI-000771",
            document_type=SpendDocumentType.INVOICE,
            material_id="PAL-120",
            gl_account="6150",
            description="Wooden pallets 1200x800",
            amount=Decimal("920.00"),
            quantity=Decimal("40"),
            unit="EA",
            purchase_order_id="PO-2026-0410",
        ),
        SpendRecord(
            **common,
            source_id="b2" * 16,
            updated_at=dt.datetime(2026, 10, 1, 16, 0, tzinfo=UTC),
            document_id="SIA-000052",
            document_type=SpendDocumentType.CREDIT_NOTE,
            material_id="PAL-120",
            gl_account="6150",
            description="Pallets returned",
            amount=Decimal("-115.00"),
            quantity=Decimal("-5"),
            unit="EA",
        ),
        SpendRecord(
            **common,
            source_id="b3" * 16,
            updated_at=dt.datetime(2026, 10, 2, 15, 15, 30, 250000, tzinfo=UTC),
            status=RecordStatus.VOIDED,
            document_id="SI-000772",
            document_type=SpendDocumentType.INVOICE,
            gl_account="1540",
            description="Forklift",
            amount=Decimal("31000.00"),
            is_capex=True,
        ),
    ]
    # The adjustment lowers spend; a negative stored adjustment is not turned positive.
    assert sum(r.amount for r in records if r.status is RecordStatus.ACTIVE) == Decimal("805.00")
    negative = {**lines[1], "extendedAmount": "-115.00", "quantity": "-5"}
    assert source._spend_record(headers[1], negative).amount == Decimal("-115.00")


@pytest.mark.parametrize(
    ("header_change", "line_change", "reason"),
    [
        ({}, {"ledgerAccountID": [_ref("91" * 16, "6150"), _ref("92" * 16, "6160")]}, "one"),
        ({}, {"capitalAsset": "sometimes"}, "capitalAsset"),
        ({}, {"extendedAmount": "9OO.00"}, "extendedAmount"),
        ({"currency": None}, {}, "currency is blank"),
        ({"documentType": _ref("d9" * 16, "Supplier Invoice Request")}, {}, "not spend"),
    ],
    ids=["two-accounts", "bad-flag", "bad-amount", "no-currency", "not-spend"],
)
def test_unreadable_wql_rows_raise_a_clear_error(header_change, line_change, reason) -> None:
    source = WorkdaySource(
        connection_name="wd-shape",
        base_url="http://127.0.0.1:9",
        **workday.SANDBOX_CREDENTIALS,
        **workday.SANDBOX_OPTIONS,
    )
    headers, lines = _published_invoice_rows()

    with pytest.raises(ValueError, match=reason):
        source._spend_record({**headers[0], **header_change}, {**lines[0], **line_change})


def test_a_line_of_no_queried_invoice_is_rejected_not_dropped(tenant, company) -> None:
    day = company.business_days()[-3]
    source = tenant.source()
    original = source._documents_and_lines

    def with_a_stray_line(*args, **kwargs):
        for headers, lines in original(*args, **kwargs):
            stray = {**lines[0], "supplierInvoice": _ref("ff" * 16, "SI-ELSEWHERE")}
            yield headers, [*lines, stray]

    source.__dict__["_documents_and_lines"] = with_a_stray_line
    batches = list(source.fetch(RecordKind.SPEND, SyncWindow.for_day(day)))

    rejected = [r for batch in batches for r in batch.rejected if "no invoice" in r.reason]
    assert len(rejected) == len(batches) and "SI-ELSEWHERE" in rejected[0].reason


def test_a_currency_amount_sent_as_a_json_number_stays_exact(tenant) -> None:
    response = requests.Response()
    response._content = b'{"total": 1, "data": [{"extendedAmount": 12345678901234.57}]}'

    row = tenant.source()._json(response, "WQL query")["data"][0]

    assert row["extendedAmount"] == Decimal("12345678901234.57")
