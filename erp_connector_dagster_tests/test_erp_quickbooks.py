"""QuickBooks Online: published payloads, the refresh-token handshake, throttling, CDC deletes.

Runs the real source against the QuickBooks sandbox emulator over loopback HTTP, and parses
the published sample records in ../shared/data/erp-samples/quickbooks.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from erp_connector_dagster.erp import build_source
from erp_connector_dagster.erp.base import SyncWindow
from erp_connector_dagster.erp.http import ErpAuthError, ErpRequestError
from erp_connector_dagster.erp.quickbooks import (
    QuickBooksReference,
    QuickBooksSource,
    inventory_from_report,
    material_from_item,
    purchase_order_from_entity,
    spend_from_entity,
    vendor_from_entity,
)
from erp_connector_dagster.records import (
    PurchaseOrder,
    PurchaseOrderLine,
    RecordKind,
    RecordStatus,
    SpendDocumentType,
    SpendRecord,
)
from erp_connector_dagster.sandbox import quickbooks as emulator
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.server import SandboxConnection, SandboxServer

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "erp-samples" / "quickbooks"
SEED = 5151
UTC = dt.timezone.utc


def sample_lines(name: str) -> list[dict]:
    if not SAMPLES.is_dir():
        pytest.skip(f"published QuickBooks samples not found at {SAMPLES}")
    text = (SAMPLES / name).read_text()
    return [json.loads(line, parse_float=Decimal) for line in text.splitlines() if line.strip()]


@dataclass
class Sandbox:
    server: SandboxServer
    connection: SandboxConnection
    source: QuickBooksSource

    @property
    def company(self) -> SandboxCompany:
        return self.connection.company

    @property
    def api(self) -> str:
        return (
            f"{self.server.base_url(self.connection.name)}/v3/company/{emulator.SANDBOX_REALM_ID}"
        )

    def access_token(self) -> str:
        answer = requests.post(
            f"{self.server.base_url(self.connection.name)}/oauth2/v1/tokens/bearer",
            data={
                "grant_type": "refresh_token",
                "refresh_token": emulator.SANDBOX_CREDENTIALS["refresh_token"],
            },
            auth=(
                emulator.SANDBOX_CREDENTIALS["client_id"],
                emulator.SANDBOX_CREDENTIALS["client_secret"],
            ),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    connection = SandboxConnection(
        name="qbo-test", erp_type="quickbooks", company=SandboxCompany(seed=SEED)
    )
    with SandboxServer([connection]) as server:
        source = build_source(server.connection_configs()[0])
        yield Sandbox(server, connection, source)


def read(source: QuickBooksSource, kind: RecordKind, window: SyncWindow) -> list:
    return [record for batch in source.fetch(kind, window) for record in batch.records]


def comparable(record, kind: RecordKind) -> dict:
    excluded = {"connection", "source_id", "updated_at", *QuickBooksSource.unmapped_fields[kind]}
    return record.model_dump(exclude=excluded)


# Published payloads


def test_sample_bills_become_lines_with_their_accounts_items_and_quantities() -> None:
    bill_24, bill_126 = sample_lines("bill.airbyte_records.jsonl")

    records, rejected = spend_from_entity("Bill", bill_24, "qbo")
    item_records, item_rejected = spend_from_entity("Bill", bill_126, "qbo")

    assert rejected == [] and item_rejected == []
    (rent,) = records
    assert rent.document_id == "24"  # no DocNumber on this bill: its id names it
    assert rent.document_type is SpendDocumentType.INVOICE
    assert rent.transaction_date == dt.date(2023, 2, 2)
    assert rent.vendor_id == "40" and rent.gl_account == "17"
    assert rent.description == "Building Lease"
    assert rent.amount == Decimal("900.0") and rent.currency == "USD"
    assert rent.material_id is None and rent.quantity is None
    assert rent.updated_at == dt.datetime(2023, 2, 17, 21, 43, 8, tzinfo=UTC)
    assert rent.source_id == "Bill:24"
    pump, fountain = item_records
    assert (pump.line_number, pump.material_id, pump.quantity, pump.amount) == (
        1,
        "Pump",
        Decimal(8),
        Decimal("80.0"),
    )
    assert (fountain.line_number, fountain.material_id, fountain.quantity) == (
        2,
        "Rock Fountain",
        Decimal(1),
    )
    assert pump.vendor_id == "46"


def test_sample_bill_lines_resolve_codes_through_the_company_lists() -> None:
    bill_126 = sample_lines("bill.airbyte_records.jsonl")[1]
    reference = QuickBooksReference(
        vendor_codes={"46": "NORTON-01"},
        item_codes={"11": "PUMP-11"},
        item_expense_accounts={"11": "80"},
        account_numbers={"80": "5000"},
        capex_accounts={"80"},
    )

    pump = spend_from_entity("Bill", bill_126, "qbo", reference)[0][0]

    assert (pump.vendor_id, pump.material_id, pump.gl_account, pump.is_capex) == (
        "NORTON-01",
        "PUMP-11",
        "5000",
        True,
    )


def test_sample_purchases_are_card_charges_and_a_payee_is_optional() -> None:
    lunch, fuel = sample_lines("purchase.airbyte_records.jsonl")

    (charge,), _ = spend_from_entity("Purchase", lunch, "qbo")
    (unnamed,), rejected = spend_from_entity("Purchase", fuel, "qbo")

    assert charge.document_type is SpendDocumentType.CARD_CHARGE
    assert (charge.vendor_id, charge.amount, charge.gl_account) == ("56", Decimal("18.97"), "13")
    assert charge.transaction_date == dt.date(2023, 2, 23)
    assert rejected == []
    assert unnamed.vendor_id is None and unnamed.amount == Decimal("34.0")
    assert unnamed.line_number == 1 and unnamed.gl_account == "55"


def test_sample_purchase_orders_become_headers_and_lines() -> None:
    open_order, closed_order = sample_lines("purchaseorder.airbyte_records.jsonl")

    records, rejected = purchase_order_from_entity(open_order, "qbo")
    closed, _ = purchase_order_from_entity(closed_order, "qbo")

    assert rejected == []
    header, line = records
    assert isinstance(header, PurchaseOrder) and isinstance(line, PurchaseOrderLine)
    assert (header.purchase_order_id, header.order_status, header.total_amount) == (
        "1002",
        "open",
        Decimal("125.0"),
    )
    assert header.vendor_id == "51" and header.order_date == dt.date(2023, 2, 16)
    assert (line.line_number, line.material_id, line.quantity, line.unit_price) == (
        1,
        "Rock Fountain",
        Decimal(1),
        Decimal(125),
    )
    assert closed[0].order_status == "closed"
    assert len([r for r in closed if isinstance(r, PurchaseOrderLine)]) == 4


def test_sample_items_and_vendors_become_master_data() -> None:
    concrete, sprinklers = sample_lines("item.airbyte_records.jsonl")
    if not (SAMPLES / "vendor_query_response.json").exists():
        pytest.skip("vendor sample missing")
    vendors = json.loads((SAMPLES / "vendor_query_response.json").read_text())

    service = material_from_item(concrete, "qbo")
    stocked = material_from_item(sprinklers, "qbo")
    parsed = [vendor_from_entity(v, "qbo") for v in vendors["QueryResponse"]["Vendor"]]

    assert (service.material_id, service.description) == (
        "Concrete",
        "Concrete for fountain installation",
    )
    assert stocked.material_id == "Sprinkler Heads" and stocked.source_id == "Item:16"
    assert material_from_item({"Id": "9", "Name": "Tools", "Type": "Category"}, "qbo") is None
    burger, bessie = parsed[0], parsed[1]
    assert (burger.vendor_id, burger.name, burger.currency) == ("56", "Bob's Burger Joint", "USD")
    assert (bessie.vendor_id, bessie.name) == ("1345", "Books by Bessie")  # its AcctNum
    assert bessie.updated_at == dt.datetime(2024, 2, 17, 19, 13, 46, tzinfo=UTC)
    assert all(vendor.status is RecordStatus.ACTIVE for vendor in parsed)


def test_inventory_report_rows_become_snapshots() -> None:
    report = {
        "Header": {"ReportName": "InventoryValuationSummary", "Currency": "USD"},
        "Columns": {
            "Column": [
                {"ColTitle": ""},
                {"ColTitle": "SKU"},
                {"ColTitle": "Qty"},
                {"ColTitle": "Asset Value"},
                {"ColTitle": "Calc. Avg"},
            ]
        },
        "Rows": {
            "Row": [
                {
                    "Header": {"ColData": [{"value": "Garden"}]},
                    "type": "Section",
                    "Rows": {
                        "Row": [
                            {
                                "ColData": [
                                    {"value": "Sprinkler Heads", "id": "16"},
                                    {"value": ""},
                                    {"value": "25"},
                                    {"value": "18.75"},
                                    {"value": "0.75"},
                                ],
                                "type": "Data",
                            }
                        ]
                    },
                },
                {"Summary": {"ColData": [{"value": "TOTAL"}]}, "type": "Section"},
            ]
        },
    }

    (snapshot,), rejected = inventory_from_report(report, "qbo", dt.date(2023, 2, 18), "WH01")

    assert rejected == []
    assert (snapshot.material_id, snapshot.quantity, snapshot.value, snapshot.unit_cost) == (
        "Sprinkler Heads",
        Decimal(25),
        Decimal("18.75"),
        Decimal("0.75"),
    )
    assert (snapshot.location, snapshot.currency) == ("WH01", "USD")


# Documented shapes with values of our own: what the API reference allows beyond the samples


def _spend(connection: str = "qbo", **fields) -> SpendRecord:
    """The spend record a test expects, with the defaults these payloads share."""
    return SpendRecord(connection=connection, **fields)


def test_a_bill_without_currency_ref_takes_its_vendors_currency_and_dates_keep_their_day() -> None:
    # A company without multicurrency may leave CurrencyRef out; the vendor's currency is the
    # document's. TxnDate may carry the company's offset; LineNum may be missing.
    reference = QuickBooksReference(
        vendor_codes={"77": "ACME-77"},
        vendor_currencies={"77": "CAD"},
        item_codes={"9": "BOLT-M8"},
        item_expense_accounts={"9": "64"},
        account_numbers={"64": "5100", "81": "6200"},
    )
    bill = {
        "Id": "3107",
        "SyncToken": "2",
        "domain": "QBO",
        "DocNumber": "INV-88",
        "TxnDate": "2025-03-07-08:00",
        "VendorRef": {"value": "77", "name": "Acme Fasteners"},
        "GlobalTaxCalculation": "TaxInclusive",
        "TotalAmt": 161.5,
        "MetaData": {
            "CreateTime": "2025-03-07T23:10:00-08:00",
            "LastUpdatedTime": "2025-03-07T23:15:30.25-08:00",
        },
        "Line": [
            {
                "Id": "1",
                "Description": "M8 bolts",
                "Amount": "120.00",
                "DetailType": "ItemBasedExpenseLineDetail",
                "ItemBasedExpenseLineDetail": {
                    "ItemRef": {"value": "9", "name": "Bolt M8"},
                    "Qty": 400,
                    "UnitPrice": 0.3,
                    "TaxInclusiveAmt": 135.6,
                },
            },
            {
                "Id": "2",
                "Amount": 41.5,
                "DetailType": "AccountBasedExpenseLineDetail",
                "AccountBasedExpenseLineDetail": {
                    "AccountRef": {"value": "81", "name": "Freight"},
                    "TaxInclusiveAmt": 46.9,
                },
            },
        ],
    }
    common = {
        "source_id": "Bill:3107",
        "updated_at": dt.datetime(2025, 3, 8, 7, 15, 30, 250000, tzinfo=UTC),
        "document_id": "INV-88",
        "document_type": SpendDocumentType.INVOICE,
        "transaction_date": dt.date(2025, 3, 7),
        "vendor_id": "ACME-77",
        "currency": "CAD",
    }

    records, rejected = spend_from_entity("Bill", bill, "qbo", reference)

    assert rejected == []
    # Amount is the net of tax even when the document is tax-inclusive.
    assert records == [
        _spend(
            **common,
            line_number=1,
            material_id="BOLT-M8",
            gl_account="5100",
            description="M8 bolts",
            amount=Decimal("120.00"),
            quantity=Decimal(400),
        ),
        _spend(**common, line_number=2, gl_account="6200", amount=Decimal("41.5")),
    ]


def test_vendor_credit_in_a_foreign_currency_is_negative() -> None:
    credit = {
        "Id": "512",
        "TxnDate": "2025-04-02",
        "VendorRef": {"value": "12"},
        "CurrencyRef": {"value": "GBP", "name": "British Pound Sterling"},
        "ExchangeRate": 1.1842,
        "TotalAmt": 75.25,
        "MetaData": {"LastUpdatedTime": "2025-04-02T09:00:00Z"},
        "Line": [
            {
                "Id": "1",
                "LineNum": 1,
                "Amount": 75.25,
                "DetailType": "ItemBasedExpenseLineDetail",
                "ItemBasedExpenseLineDetail": {
                    "ItemRef": {"value": "5", "name": "Pallet"},
                    "Qty": 5,
                },
            }
        ],
    }

    records, rejected = spend_from_entity("VendorCredit", credit, "qbo")

    assert rejected == []
    assert records == [
        _spend(
            source_id="VendorCredit:512",
            updated_at=dt.datetime(2025, 4, 2, 9, tzinfo=UTC),
            document_id="512",
            line_number=1,
            document_type=SpendDocumentType.CREDIT_NOTE,
            transaction_date=dt.date(2025, 4, 2),
            vendor_id="12",
            material_id="Pallet",
            amount=Decimal("-75.25"),
            currency="GBP",
            quantity=Decimal(-5),
        )
    ]


def _purchase(payment_type: str, **extra) -> dict:
    return {
        "Id": "90",
        "PaymentType": payment_type,
        "AccountRef": {"value": "35", "name": "Checking"},
        "TxnDate": "2025-05-20",
        "TotalAmt": 60,
        "Line": [
            {
                "Id": "1",
                "Amount": 60,
                "DetailType": "AccountBasedExpenseLineDetail",
                "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "54"}},
            }
        ],
        **extra,
    }


def test_cash_cheque_and_card_purchases_and_card_refunds() -> None:
    reference = QuickBooksReference(
        vendor_codes={"42": "V-42"},
        vendor_currencies={"42": "USD"},
        account_currencies={"35": "USD", "41": "EUR"},
    )
    payee = {"value": "42", "name": "Corner Hardware"}  # a payee whose type is not given
    card = {"AccountRef": {"value": "41", "name": "Company card"}}

    cash = spend_from_entity("Purchase", _purchase("Cash", EntityRef=payee), "qbo", reference)
    cheque = spend_from_entity(
        "Purchase", _purchase("Check", DocNumber="1044", EntityRef=payee), "qbo", reference
    )
    customer = spend_from_entity(
        "Purchase",
        _purchase("Check", EntityRef={"value": "42", "type": "Customer"}),
        "qbo",
        reference,
    )
    refund = spend_from_entity(
        "Purchase", _purchase("CreditCard", Credit=True, **card), "qbo", reference
    )
    charge = spend_from_entity("Purchase", _purchase("CreditCard", **card), "qbo", reference)

    def summary(result):
        (line,), rejected = result
        assert rejected == []
        return (line.document_id, line.document_type, line.vendor_id, line.amount, line.currency)

    assert summary(cash) == ("90", SpendDocumentType.INVOICE, "V-42", Decimal(60), "USD")
    assert summary(cheque) == ("1044", SpendDocumentType.INVOICE, "V-42", Decimal(60), "USD")
    assert summary(customer) == ("90", SpendDocumentType.INVOICE, None, Decimal(60), "USD")
    # No payee and no CurrencyRef: the card account's currency is the purchase's.
    assert summary(refund) == ("90", SpendDocumentType.CREDIT_NOTE, None, Decimal(-60), "EUR")
    assert summary(charge) == ("90", SpendDocumentType.CARD_CHARGE, None, Decimal(60), "EUR")


def test_lines_that_cannot_be_read_are_rejected_with_their_reason() -> None:
    bill = {
        "Id": "77",
        "TxnDate": "2025-06-01",
        "CurrencyRef": {"value": "USD"},
        "Line": [
            {
                "Id": "1",
                "Amount": 10,
                "DetailType": "AccountBasedExpenseLineDetail",
                "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "7"}},
            },
            {"Id": "2", "Amount": -4.5, "DetailType": "TDSLineDetail", "TDSLineDetail": {}},
            {"Id": "3", "Amount": 0, "DetailType": "DescriptionOnly"},
            {
                "Id": "4",
                "LineNum": "four",
                "Amount": 3,
                "DetailType": "AccountBasedExpenseLineDetail",
                "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "7"}},
            },
            {
                "Id": "5",
                "Amount": "n/a",
                "DetailType": "AccountBasedExpenseLineDetail",
                "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "7"}},
            },
        ],
    }

    records, rejected = spend_from_entity("Bill", bill, "qbo")

    assert [(r.line_number, r.amount) for r in records] == [(1, Decimal(10))]
    assert [r.reason for r in rejected] == [
        "line 2: DetailType 'TDSLineDetail' is not an expense line",
        "line four: LineNum is not a whole number: 'four'",
        "line 5: Amount is not a number: 'n/a'",
    ]
    assert all(r.partition_date == dt.date(2025, 6, 1) for r in rejected)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"CurrencyRef": None}, "CurrencyRef is missing and neither vendor nor account has one"),
        ({"TxnDate": "07/03/2025"}, "TxnDate is not a date: '07/03/2025'"),
        ({"TxnDate": None}, "TxnDate is missing"),
        ({"MetaData": {"LastUpdatedTime": "yesterday"}}, "not a QuickBooks timestamp: 'yesterday'"),
    ],
)
def test_a_document_that_cannot_be_read_is_rejected_whole(change: dict, reason: str) -> None:
    bill = {"Id": "8", "TxnDate": "2025-06-01", "CurrencyRef": {"value": "USD"}, "Line": []}

    records, rejected = spend_from_entity("Bill", {**bill, **change}, "qbo")

    assert records == []
    assert [(r.source_id, r.reason) for r in rejected] == [("Bill:8", reason)]


def test_purchase_order_lines_keep_written_zeroes_and_default_only_what_is_missing() -> None:
    order = {
        "Id": "1200",
        "DocNumber": "PO-1200",
        "TxnDate": "2025-07-01",
        "POStatus": "Closed",
        "VendorRef": {"value": "3"},
        "TotalAmt": 250,
        "MetaData": {"LastUpdatedTime": "2025-07-02T10:00:00+02:00"},
        "Line": [
            {
                "Id": "1",
                "LineNum": 1,
                "Amount": 0,
                "DetailType": "ItemBasedExpenseLineDetail",
                "ItemBasedExpenseLineDetail": {
                    "ItemRef": {"value": "6", "name": "Sample kit"},
                    "Qty": 0,
                    "UnitPrice": 0,
                },
            },
            {
                "Id": "2",
                "LineNum": 2,
                "Amount": 250,
                "DetailType": "AccountBasedExpenseLineDetail",
                "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "70"}},
            },
        ],
    }
    reference = QuickBooksReference(vendor_currencies={"3": "AUD"}, account_numbers={"70": "6400"})

    records, rejected = purchase_order_from_entity(order, "qbo", reference)

    assert rejected == []
    header, kit, service = records
    assert (header.purchase_order_id, header.currency, header.order_status) == (
        "PO-1200",
        "AUD",
        "closed",
    )
    assert header.updated_at == dt.datetime(2025, 7, 2, 8, tzinfo=UTC)
    assert (kit.quantity, kit.unit_price, kit.amount, kit.material_id) == (
        Decimal(0),
        Decimal(0),
        Decimal(0),
        "Sample kit",
    )
    assert (service.quantity, service.unit_price, service.gl_account) == (
        Decimal(1),
        Decimal(250),
        "6400",
    )


def test_master_data_without_an_id_or_name_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="Id is missing"):
        vendor_from_entity({"DisplayName": "Nobody"}, "qbo")
    with pytest.raises(ValueError, match="Name is missing"):
        material_from_item({"Id": "4", "Type": "Inventory"}, "qbo")
    assert material_from_item({"Id": "4", "Name": "Widget"}, "qbo").description == "Widget"


def test_query_envelopes_empty_paged_and_faults() -> None:
    source = QuickBooksSource(
        connection_name="qbo",
        base_url="http://127.0.0.1:9",
        realm_id="1",
        client_id="id",
        client_secret="secret",
        refresh_token="refresh",
    )
    vendors = {
        "QueryResponse": {
            "Vendor": [{"Id": "1"}, {"Id": "2"}],
            "startPosition": 1,
            "maxResults": 2,
            "totalCount": 2,
        },
        "time": "2025-01-01T10:00:00.000-08:00",
    }
    fault = {
        "Fault": {
            "Error": [{"Message": "Error parsing query", "code": "4000"}],
            "type": "ValidationFault",
        },
        "time": "2025-01-01T10:00:00.000-08:00",
    }

    assert source._query_rows(vendors, "Vendor") == [{"Id": "1"}, {"Id": "2"}]
    assert source._query_rows({"QueryResponse": {}, "time": "x"}, "Vendor") == []
    with pytest.raises(ErpRequestError, match="4000 Error parsing query"):
        source._query_rows(fault, "Vendor")
    with pytest.raises(ErpRequestError, match="no QueryResponse"):
        source._query_rows({"time": "x"}, "Vendor")


# The emulated company file


def test_every_kind_round_trips_but_the_fields_quickbooks_cannot_hold(sandbox: Sandbox) -> None:
    day = sandbox.company.business_days()[-4]

    for kind in RecordKind:
        window = (
            SyncWindow()
            if kind in (RecordKind.VENDOR, RecordKind.MATERIAL)
            else (SyncWindow.for_day(day))
        )
        broken = {line["document_id"] for line in sandbox.company.bad_spend_lines(day)}
        records = [
            r
            for r in read(sandbox.source, kind, window)
            if getattr(r, "document_id", None) not in broken
        ]
        truth = sandbox.company.records(kind, day)

        assert records, kind
        assert sorted((comparable(r, kind) for r in records), key=str) == sorted(
            (comparable(r, kind) for r in truth), key=str
        ), kind


def test_small_pages_read_every_line_once(sandbox: Sandbox) -> None:
    day = sandbox.company.business_days()[-6]
    narrow = sandbox.source.model_copy(update={"page_size": 2})

    records = read(narrow, RecordKind.SPEND, SyncWindow.for_day(day))

    keys = [record.natural_key for record in records]
    assert len(keys) == len(set(keys))
    assert set(keys) == {r.natural_key for r in sandbox.company.records(RecordKind.SPEND, day)}


def test_refresh_token_grant_is_checked_and_the_rotated_token_is_kept(sandbox: Sandbox) -> None:
    token_url = f"{sandbox.server.base_url(sandbox.connection.name)}/oauth2/v1/tokens/bearer"
    credentials = emulator.SANDBOX_CREDENTIALS

    wrong_client = requests.post(
        token_url,
        data={"grant_type": "refresh_token", "refresh_token": credentials["refresh_token"]},
        auth=(credentials["client_id"], "nope"),
        timeout=10,
    )
    wrong_grant = requests.post(
        token_url,
        data={"grant_type": "refresh_token", "refresh_token": "stale"},
        auth=(credentials["client_id"], credentials["client_secret"]),
        timeout=10,
    )
    health = sandbox.source.check_health()
    first_rotation = sandbox.source._current_refresh_token
    sandbox.source._client().reauthenticate()

    assert (wrong_client.status_code, wrong_client.json()) == (401, {"error": "invalid_client"})
    assert (wrong_grant.status_code, wrong_grant.json()) == (400, {"error": "invalid_grant"})
    assert health.authenticated
    assert first_rotation and first_rotation != credentials["refresh_token"]
    assert sandbox.source._current_refresh_token not in (first_rotation, None)
    assert sandbox.source._token_expires_at - time.time() > 3000  # one-hour tokens


def test_expired_access_token_is_an_authentication_failed_fault(sandbox: Sandbox) -> None:
    answer = requests.get(
        f"{sandbox.api}/companyinfo/{emulator.SANDBOX_REALM_ID}",
        headers={"Authorization": "Bearer expired-token"},
        timeout=10,
    )

    assert answer.status_code == 401
    error = answer.json()["fault"]["error"][0]
    assert error["code"] == "3200" and "AuthenticationFailed" in error["message"]


def test_another_realm_is_refused(sandbox: Sandbox) -> None:
    stranger = sandbox.source.model_copy(update={"realm_id": "123145"})
    stranger._http = None

    with pytest.raises(ErpAuthError) as refused:
        read(stranger, RecordKind.VENDOR, SyncWindow())

    assert "403" in str(refused.value)
    assert emulator.SANDBOX_CREDENTIALS["client_secret"] not in str(refused.value)


def test_throttling_is_429_throttle_exceeded_and_the_source_waits(sandbox: Sandbox) -> None:
    token = sandbox.access_token()
    sandbox.connection.faults.throttle(retry_after=1.0, count=1)
    throttled = requests.get(
        f"{sandbox.api}/query",
        params={"query": "select * from Vendor"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    patient = sandbox.source.model_copy(update={"throttle_wait_seconds": 1.2})
    day = sandbox.company.business_days()[-7]
    read(patient, RecordKind.PURCHASE_ORDER, SyncWindow.for_day(day))  # lists now cached
    sandbox.connection.faults.throttle(retry_after=1.0, count=1)

    started = time.monotonic()
    orders = read(patient, RecordKind.PURCHASE_ORDER, SyncWindow.for_day(day))

    assert throttled.status_code == 429 and "Retry-After" not in throttled.headers
    error = throttled.json()["Fault"]["Error"][0]
    assert "ThrottleExceeded; errorCode=003001" in error["Message"] and error["code"] == "3001"
    assert time.monotonic() - started >= 1.2
    assert orders


def test_cdc_reports_a_deleted_bill(sandbox: Sandbox) -> None:
    company = sandbox.company
    day = next(
        d
        for d in reversed(company.business_days())
        if any(
            r.document_type is SpendDocumentType.INVOICE
            for r in company.records(RecordKind.SPEND, d)
        )
    )
    window = SyncWindow.for_day(day)
    before = read(sandbox.source, RecordKind.SPEND, window)
    bill = next(r for r in before if r.document_type is SpendDocumentType.INVOICE)
    since = dt.datetime.now(UTC)
    for line in [
        r for r in company.records(RecordKind.SPEND, day) if r.document_id == bill.document_id
    ]:
        company.delete(RecordKind.SPEND, line.natural_key, day)

    batches = list(
        sandbox.source.fetch(RecordKind.SPEND, window.model_copy(update={"changed_since": since}))
    )
    full = read(sandbox.source, RecordKind.SPEND, window)

    deleted = [key for batch in batches for key in batch.deleted_source_ids]
    assert deleted == [bill.source_id]
    assert bill.document_id not in {r.document_id for r in full}


def test_changed_days_reads_only_ids_and_dates(sandbox: Sandbox) -> None:
    company = sandbox.company
    day = company.business_days()[-30]
    line = company.records(RecordKind.SPEND, day)[0]
    since = dt.datetime.now(UTC)
    company.amend(RecordKind.SPEND, line.natural_key, day, description="amended")
    token = sandbox.access_token()
    stamp = since.replace(microsecond=0).isoformat()
    sparse = requests.get(
        f"{sandbox.api}/query",
        headers={"Authorization": f"Bearer {token}"},
        params={
            "query": "select Id, TxnDate, MetaData.LastUpdatedTime from "
            f"Bill where MetaData.LastUpdatedTime >= '{stamp}'"
        },
        timeout=10,
    ).json()

    summary = sandbox.source.changed_days(RecordKind.SPEND, since)

    assert day in summary.days
    assert summary.high_watermark is not None and summary.high_watermark >= since.replace(
        microsecond=0
    )
    for entity in sparse["QueryResponse"].get("Bill", []):
        assert entity["sparse"] is True and "Line" not in entity


def test_query_language_of_the_emulator() -> None:
    parsed = emulator.parse_query(
        "SELECT count(*) FROM Bill WHERE TxnDate >= '2026-10-01' AND DocNumber = 'O\\'Brien'"
        " AND Active IN (true, false) ORDERBY Id DESC STARTPOSITION 11 MAXRESULTS 5000"
    )

    assert parsed["entity"] == "Bill" and parsed["fields"] == ["count(*)"]
    assert [c.path for c in parsed["conditions"]] == ["TxnDate", "DocNumber", "Active"]
    assert parsed["conditions"][1].value == "O'Brien"
    assert (parsed["start"], parsed["max"], parsed["descending"]) == (11, 1000, True)
    with pytest.raises(emulator.QueryError):
        emulator.parse_query("delete from Bill")
