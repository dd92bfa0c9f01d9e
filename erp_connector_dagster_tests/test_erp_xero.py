"""Xero: published payloads, the client-credentials and tenant handshake, 429s and deletes.

Runs the real source against the Xero sandbox emulator over loopback HTTP, and parses the
published sample payloads in ../shared/data/erp-samples/xero.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from erp_connector_dagster.erp import build_source
from erp_connector_dagster.erp.base import SyncWindow
from erp_connector_dagster.erp.http import ErpAuthError
from erp_connector_dagster.erp.xero import (
    XeroReference,
    XeroSource,
    disposition,
    document_day,
    material_from_item,
    on_hand_from_item,
    parse_xero_date,
    purchase_order_from_document,
    spend_from_document,
    vendor_from_contact,
)
from erp_connector_dagster.records import (
    InventorySnapshot,
    PurchaseOrder,
    PurchaseOrderLine,
    RecordKind,
    RecordStatus,
    SpendDocumentType,
    SpendRecord,
)
from erp_connector_dagster.sandbox import xero as emulator
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.server import SandboxConnection, SandboxServer

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "erp-samples" / "xero"
SEED = 6262
UTC = dt.timezone.utc


def sample(name: str) -> dict:
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"published Xero sample not found at {path}")
    return json.loads(path.read_text(), parse_float=Decimal)


@dataclass
class Sandbox:
    server: SandboxServer
    connection: SandboxConnection
    source: XeroSource

    @property
    def company(self) -> SandboxCompany:
        return self.connection.company

    @property
    def root(self) -> str:
        return self.server.base_url(self.connection.name)

    def token(self) -> str:
        answer = requests.post(
            f"{self.root}/connect/token",
            data={"grant_type": "client_credentials"},
            auth=(
                emulator.SANDBOX_CREDENTIALS["client_id"],
                emulator.SANDBOX_CREDENTIALS["client_secret"],
            ),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def get(
        self,
        collection: str,
        tenant: str | None = emulator.SANDBOX_TENANT_ID,
        token: str | None = None,
        **kwargs,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.token()}", **kwargs.pop("headers", {})}
        if tenant:
            headers["xero-tenant-id"] = tenant
        return requests.get(
            f"{self.root}/api.xro/2.0/{collection}", headers=headers, timeout=10, **kwargs
        )


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    connection = SandboxConnection(
        name="xero-test", erp_type="xero", company=SandboxCompany(seed=SEED)
    )
    with SandboxServer([connection]) as server:
        source = build_source(server.connection_configs()[0])
        yield Sandbox(server, connection, source)


def read(source: XeroSource, kind: RecordKind, window: SyncWindow) -> list:
    return [record for batch in source.fetch(kind, window) for record in batch.records]


def comparable(record, kind: RecordKind) -> dict:
    excluded = {"connection", "source_id", "updated_at", *XeroSource.unmapped_fields.get(kind, ())}
    return record.model_dump(exclude=excluded)


# Published payloads


def test_sample_bill_becomes_a_net_spend_line() -> None:
    bill = sample("invoice_accpay_single.json")["Invoices"][0]

    (line,), rejected = spend_from_document("Invoices", bill, "xero")

    assert rejected == []
    assert (line.document_id, line.line_number, line.document_type) == (
        "9871",
        1,
        SpendDocumentType.INVOICE,
    )
    assert line.transaction_date == dt.date(2017, 10, 17)
    assert line.amount == Decimal("135.0")  # LineAmountTypes Exclusive: the tax is apart
    assert (line.currency, line.gl_account) == ("AUD", "449")
    assert line.description == "Company car park (month in advance)"
    assert line.vendor_id == "d6a384fb-f46f-41a3-8ac7-b7bc9e0b5efa"  # no AccountNumber
    assert line.quantity is None and line.material_id is None  # an account-coded line
    assert line.status is RecordStatus.ACTIVE  # PAID is still spend
    assert line.updated_at == dt.datetime(2008, 9, 16, 10, 28, 51, 500000, tzinfo=UTC)


def test_sample_invoice_list_has_no_lines_without_paging() -> None:
    listed = sample("invoices_accpay.json")["Invoices"]

    parsed = [spend_from_document("Invoices", bill, "xero") for bill in listed]

    assert [bill["LineItems"] for bill in listed] == [[], []]
    assert parsed == [([], []), ([], [])]
    assert {disposition(bill) for bill in listed} == {"live"}


def test_credit_notes_are_negative_and_voids_are_kept() -> None:
    reference = XeroReference(contact_codes={"c-1": "V00042"}, capex_account_codes={"1500"})
    credit_note = {
        "CreditNoteID": "cn-1",
        "CreditNoteNumber": "CN-7",
        "Type": "ACCPAYCREDIT",
        "Contact": {"ContactID": "c-1"},
        "Date": "/Date(1761782400000+0000)/",
        "Status": "VOIDED",
        "LineAmountTypes": "Inclusive",
        "CurrencyCode": "EUR",
        "LineItems": [
            {
                "ItemCode": "M1",
                "Quantity": Decimal("2.0000"),
                "LineAmount": Decimal("121.00"),
                "TaxAmount": Decimal("21.00"),
                "AccountCode": "1500",
            }
        ],
    }

    (line,), _ = spend_from_document("CreditNotes", credit_note, "xero", reference)

    assert line.document_type is SpendDocumentType.CREDIT_NOTE
    assert (line.amount, line.quantity) == (Decimal("-100.00"), Decimal("-2.0000"))
    assert line.status is RecordStatus.VOIDED
    assert (line.vendor_id, line.is_capex, line.transaction_date) == (
        "V00042",
        True,
        dt.date(2025, 10, 30),
    )


def test_sample_purchase_orders_parse_and_are_known_deleted() -> None:
    orders = sample("purchase_orders.json")["PurchaseOrders"]

    records, rejected = purchase_order_from_document(orders[0], "xero")

    assert rejected == []
    header, line = records
    assert isinstance(header, PurchaseOrder) and isinstance(line, PurchaseOrderLine)
    assert (header.purchase_order_id, header.currency, header.total_amount) == (
        "PO-0001",
        "NZD",
        Decimal("20.00"),
    )
    assert header.order_date == dt.date(2019, 3, 12)
    assert header.vendor_id == "430fa14a-f945-44d3-9f97-5df5e28441b8"
    assert (line.line_number, line.description, line.quantity, line.unit_price) == (
        10,
        "Foobar",
        Decimal("1.0000"),
        Decimal("20.0000"),
    )
    assert [disposition(order) for order in orders] == ["deleted", "deleted"]


def test_sample_contacts_and_items_become_master_data() -> None:
    katherine, lisa = sample("contacts.json")["Contacts"]
    guitars, barfoo = sample("items.json")["Items"]

    supplier = vendor_from_contact(katherine, "xero")
    material = material_from_item(guitars, "xero")

    assert katherine["IsSupplier"] and not lisa["IsSupplier"]
    assert supplier.vendor_id == "5cc8cf28-567e-4d43-b287-687cfcaec47c"
    assert (supplier.name, supplier.country) == ("Katherine Warren", "United States")
    assert supplier.tax_id is None and supplier.status is RecordStatus.ACTIVE
    assert (material.material_id, material.description) == ("123", "Guitars Fender Strat")
    assert material_from_item(barfoo, "xero").material_id == "abc65591"


def test_xero_dates_and_the_if_modified_since_header() -> None:
    assert parse_xero_date("/Date(1508198400000+0000)/") == dt.datetime(2017, 10, 17, tzinfo=UTC)
    assert parse_xero_date("/Date(1518298927172)/").year == 2018
    assert parse_xero_date("2019-03-12T00:00:00") == dt.datetime(2019, 3, 12, tzinfo=UTC)
    assert emulator.xero_date(dt.date(2017, 10, 17)) == "/Date(1508198400000+0000)/"


# Documented shapes with values of our own: what the API reference allows beyond the samples


def test_date_forms_xero_documents() -> None:
    nz = dt.timezone(dt.timedelta(hours=13))
    pacific = dt.timezone(-dt.timedelta(hours=8))

    # The milliseconds are UTC; an offset names the local time, and so the local day.
    assert parse_xero_date("/Date(1739876400000+1300)/") == dt.datetime(2025, 2, 19, tzinfo=nz)
    assert parse_xero_date("/Date(1739876400000+1300)/").date() == dt.date(2025, 2, 19)
    assert parse_xero_date("/Date(1739952000000-0800)/").date() == dt.date(2025, 2, 19)
    assert parse_xero_date("/Date(1739952000000-0800)/").tzinfo == pacific
    assert parse_xero_date("/Date(-86400000)/") == dt.datetime(1969, 12, 31, tzinfo=UTC)
    assert parse_xero_date("2025-02-19") == dt.datetime(2025, 2, 19, tzinfo=UTC)
    assert parse_xero_date("2025-02-19T08:30:00Z") == dt.datetime(2025, 2, 19, 8, 30, tzinfo=UTC)
    assert parse_xero_date("2025-02-18T16:29:47.96-08:00") == dt.datetime(
        2025, 2, 19, 0, 29, 47, 960000, tzinfo=UTC
    )
    # DateString is the organisation's own day and wins over the /Date()/ form.
    assert document_day({"Date": "/Date(1739923200000+0000)/"}) == dt.date(2025, 2, 19)
    assert document_day(
        {"DateString": "2025-02-20T00:00:00", "Date": "/Date(1739923200000+0000)/"}
    ) == dt.date(2025, 2, 20)
    assert document_day({"DateString": "2025-02-21T00:00:00"}) == dt.date(2025, 2, 21)
    for bad in ("/Date(abc)/", "19/02/2025", "/Date(1739923200000+9900)/"):
        with pytest.raises(ValueError, match="not a Xero date"):
            parse_xero_date(bad)
    with pytest.raises(ValueError, match="Date is missing"):
        document_day({"DueDate": "/Date(1739923200000+0000)/"})


def _credit_note() -> dict:
    """An ACCPAYCREDIT as listed in `{"CreditNotes": [...]}`: numbers as text, tax-inclusive."""
    return {
        "CreditNoteID": "5b1c9f7e-0c2a-4d7e-9a51-3f2e1d0c9b8a",
        "CreditNoteNumber": "SUP-CR-19",
        "Type": "ACCPAYCREDIT",
        "Contact": {"ContactID": "c-77", "Name": "Harbour Timber"},
        "DateString": "2025-09-30T00:00:00",
        "Date": "/Date(1759190400000+0000)/",
        "Status": "AUTHORISED",
        "LineAmountTypes": "Inclusive",
        "LineItems": [
            {
                "LineItemID": "l-1",
                "ItemCode": "PLY-18",
                "Description": "Plywood 18mm, returned",
                "Quantity": "4.0000",
                "UnitAmount": "57.5000",
                "TaxAmount": "30.00",
                "LineAmount": "230.00",
                "AccountCode": "310",
            },
            {"LineItemID": "l-2", "Description": "Goods returned under claim 4411"},
            {
                "LineItemID": "l-3",
                "ItemCode": "FREIGHT",
                "Description": "Freight refund",
                "TaxAmount": 3.0,
                "LineAmount": 23.0,
                "AccountCode": "425",
            },
        ],
        "SubTotal": "220.00",
        "TotalTax": "33.00",
        "Total": "253.00",
        "UpdatedDateUTC": "/Date(1759237200000+0000)/",
        "CurrencyCode": "GBP",
        "CurrencyRate": "0.862000",
        "RemainingCredit": "253.00",
    }


def test_supplier_credit_note_with_inclusive_text_amounts_in_a_foreign_currency() -> None:
    envelope = {"CreditNotes": [_credit_note()]}  # no pagination block: an unpaged answer
    reference = XeroReference(contact_codes={"c-77": "SUPP-077"}, capex_account_codes={"310"})

    records, rejected = spend_from_document(
        "CreditNotes", envelope["CreditNotes"][0], "xero", reference
    )

    common = {
        "connection": "xero",
        "source_id": "CreditNotes:5b1c9f7e-0c2a-4d7e-9a51-3f2e1d0c9b8a",
        "updated_at": dt.datetime(2025, 9, 30, 13, tzinfo=UTC),
        "document_id": "SUP-CR-19",
        "document_type": SpendDocumentType.CREDIT_NOTE,
        "transaction_date": dt.date(2025, 9, 30),
        "vendor_id": "SUPP-077",
        "currency": "GBP",
    }
    assert rejected == []
    # The words-only line carries no money and is passed over; positions stay as written.
    assert records == [
        SpendRecord(
            **common,
            line_number=1,
            material_id="PLY-18",
            gl_account="310",
            description="Plywood 18mm, returned",
            amount=Decimal("-200.00"),
            quantity=Decimal("-4.0000"),
            is_capex=True,
        ),
        SpendRecord(
            **common,
            line_number=3,
            material_id="FREIGHT",
            gl_account="425",
            description="Freight refund",
            amount=Decimal("-20.0"),
        ),
    ]


def test_voided_and_deleted_and_draft_documents() -> None:
    voided = {**_credit_note(), "Status": "VOIDED"}

    records, _ = spend_from_document("CreditNotes", voided, "xero")

    assert {r.status for r in records} == {RecordStatus.VOIDED}
    assert disposition(voided) == "live"
    assert disposition({**voided, "Status": "DELETED"}) == "deleted"
    assert disposition({**voided, "Status": "DRAFT"}) == "not yet spend"
    assert disposition({**voided, "Status": "PAID"}) == "live"


def test_unreadable_lines_and_documents_are_rejected_with_their_reason() -> None:
    bill = {
        "InvoiceID": "inv-5",
        "InvoiceNumber": "B-5",
        "Type": "ACCPAY",
        "Date": "/Date(1759190400000+0000)/",
        "Status": "AUTHORISED",
        "LineAmountTypes": "Inclusive",
        "CurrencyCode": "NZD",
        "LineItems": [
            {"Description": "ok", "LineAmount": 115.0, "TaxAmount": 15.0, "AccountCode": "400"},
            {"Description": "no tax figure", "LineAmount": 46.0, "AccountCode": "400"},
            {
                "Description": "garbled",
                "LineAmount": "1O0.00",
                "TaxAmount": 0,
                "AccountCode": "400",
            },
        ],
    }

    records, rejected = spend_from_document("Invoices", bill, "xero")
    _, no_currency = spend_from_document("Invoices", {**bill, "CurrencyCode": None}, "xero")
    _, no_date = spend_from_document("Invoices", {**bill, "Date": None}, "xero")
    _, no_id = spend_from_document("Invoices", {"Date": bill["Date"]}, "xero")

    assert [(r.line_number, r.amount) for r in records] == [(1, Decimal("100.0"))]
    assert [r.reason for r in rejected] == [
        "line 2: TaxAmount is missing on a tax-inclusive line",
        "line 3: LineAmount is not a number: '1O0.00'",
    ]
    assert [r.reason for r in no_currency + no_date + no_id] == [
        "CurrencyCode is missing",
        "Date is missing",
        "InvoiceID is missing",
    ]


def test_purchase_order_with_inclusive_lines_a_zero_quantity_and_words_only_lines() -> None:
    order = {
        "PurchaseOrderID": "po-guid-31",
        "PurchaseOrderNumber": "PO-0031",
        "DateString": "2025-11-03T00:00:00",
        "Date": "/Date(1762128000000+0000)/",
        "DeliveryDateString": "2025-11-17T00:00:00",
        "DeliveryDate": "/Date(1763337600000+0000)/",
        "Type": "PURCHASEORDER",
        "Status": "AUTHORISED",
        "LineAmountTypes": "Inclusive",
        "CurrencyCode": "AUD",
        "CurrencyRate": 1.0,
        "Contact": {"ContactID": "c-9"},
        "LineItems": [
            {
                "ItemCode": "GLV-L",
                "Description": "Gloves, large",
                "Quantity": 10.0,
                "UnitAmount": 11.0,
                "TaxAmount": 10.0,
                "LineAmount": 110.0,
                "AccountCode": "310",
            },
            {"Description": "Deliver to dock 2"},
            {
                "ItemCode": "GLV-S",
                "Description": "Gloves, small (back-ordered)",
                "Quantity": 0.0,
                "UnitAmount": 11.0,
                "TaxAmount": 0.0,
                "LineAmount": 0.0,
            },
        ],
        "SubTotal": 100.0,
        "TotalTax": 10.0,
        "Total": 110.0,
        "UpdatedDateUTC": "/Date(1762160400000+0000)/",
    }

    records, rejected = purchase_order_from_document(order, "xero")

    assert rejected == []
    header, large, small = records
    assert (header.order_date, header.total_amount, header.currency, header.vendor_id) == (
        dt.date(2025, 11, 3),
        Decimal("100.0"),
        "AUD",
        "c-9",
    )
    assert (large.line_number, large.quantity, large.unit_price, large.amount) == (
        10,
        Decimal("10.0"),
        Decimal("10.0000"),
        Decimal("100.0"),
    )
    assert large.delivery_date == dt.date(2025, 11, 17)
    assert (small.line_number, small.quantity, small.amount) == (20, Decimal("0.0"), Decimal(0))


def test_master_data_without_its_key_fields_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="Name is missing"):
        vendor_from_contact({"ContactID": "c-1"}, "xero")
    with pytest.raises(ValueError, match="Code is missing"):
        material_from_item({"ItemID": "i-1", "Name": "Loose item"}, "xero")
    supplier = vendor_from_contact(
        {"ContactID": "c-2", "Name": "Archived Co", "ContactStatus": "ARCHIVED", "Addresses": None},
        "xero",
    )
    assert (supplier.vendor_id, supplier.status, supplier.country) == (
        "c-2",
        RecordStatus.DELETED,
        None,
    )


# The emulated organisation


def test_every_offered_kind_round_trips_but_what_xero_cannot_hold(sandbox: Sandbox) -> None:
    day = sandbox.company.business_days()[-4]

    for kind in XeroSource.supported_kinds:
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
    assert RecordKind.INVENTORY not in XeroSource.supported_kinds


def test_client_credentials_give_thirty_minute_tokens(sandbox: Sandbox) -> None:
    good = requests.post(
        f"{sandbox.root}/connect/token",
        data={"grant_type": "client_credentials"},
        auth=(
            emulator.SANDBOX_CREDENTIALS["client_id"],
            emulator.SANDBOX_CREDENTIALS["client_secret"],
        ),
        timeout=10,
    )
    bad = requests.post(
        f"{sandbox.root}/connect/token",
        data={"grant_type": "client_credentials"},
        auth=(emulator.SANDBOX_CREDENTIALS["client_id"], "guess"),
        timeout=10,
    )
    wrong = sandbox.source.model_copy(update={"client_secret": "guess-secret"})
    wrong._http = None

    with pytest.raises(ErpAuthError) as refused:
        read(wrong, RecordKind.VENDOR, SyncWindow())

    assert good.json()["expires_in"] == 1800 and good.json()["token_type"] == "Bearer"
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid_client"})
    assert "invalid_client" in str(refused.value) and "guess-secret" not in str(refused.value)


def test_the_tenant_header_is_required_and_found_through_connections(sandbox: Sandbox) -> None:
    token = sandbox.token()
    missing = sandbox.get("Organisation", tenant=None, token=token)
    wrong = sandbox.get("Organisation", tenant="1b0b5c6e-0000-4000-8000-000000000000", token=token)
    expired = sandbox.get("Organisation", token="not-a-token")
    discovering = sandbox.source.model_copy(update={"tenant_id": None})
    discovering._http = None

    health = discovering.check_health()

    assert missing.status_code == 403 and missing.json()["Detail"] == "AuthenticationUnsuccessful"
    assert wrong.status_code == 403
    assert expired.status_code == 401 and expired.json()["Detail"].startswith("TokenExpired")
    assert health.authenticated, health.error
    assert discovering._tenant == emulator.SANDBOX_TENANT_ID


def test_rate_limit_answer_names_the_wait_and_the_source_keeps_it(sandbox: Sandbox) -> None:
    sandbox.connection.faults.throttle(retry_after=2.0, count=1)
    throttled = sandbox.get("Contacts", token="unused")  # the fault answers before auth
    day = sandbox.company.business_days()[-5]
    read(sandbox.source, RecordKind.PURCHASE_ORDER, SyncWindow.for_day(day))
    sandbox.connection.faults.throttle(retry_after=2.0, count=1)

    started = time.monotonic()
    orders = read(sandbox.source, RecordKind.PURCHASE_ORDER, SyncWindow.for_day(day))

    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2"
    assert throttled.headers["X-Rate-Limit-Problem"] == "minute"
    assert time.monotonic() - started >= 2.0 and orders


def test_a_deleted_bill_stays_listed_as_deleted(sandbox: Sandbox) -> None:
    company = sandbox.company
    day = next(
        d
        for d in reversed(company.business_days())
        if any(
            r.document_type is SpendDocumentType.INVOICE and not r.material_id
            for r in company.records(RecordKind.SPEND, d)
        )
    )
    window = SyncWindow.for_day(day)
    bill = next(
        r
        for r in read(sandbox.source, RecordKind.SPEND, window)
        if r.document_type is SpendDocumentType.INVOICE
    )
    since = dt.datetime.now(UTC)
    for line in [
        r for r in company.records(RecordKind.SPEND, day) if r.document_id == bill.document_id
    ]:
        company.delete(RecordKind.SPEND, line.natural_key, day)
    where = f'InvoiceNumber=="{bill.document_id}" AND Date=={emulator_date(day)}'
    listed = sandbox.get("Invoices", params={"where": where, "page": "1"}).json()["Invoices"]

    batches = list(
        sandbox.source.fetch(RecordKind.SPEND, window.model_copy(update={"changed_since": since}))
    )

    assert [invoice["Status"] for invoice in listed] == ["DELETED"]
    assert [key for batch in batches for key in batch.deleted_source_ids] == [bill.source_id]
    assert not any(r.document_id == bill.document_id for b in batches for r in b.records)


def test_line_items_come_only_with_paged_reads(sandbox: Sandbox) -> None:
    day = sandbox.company.business_days()[-3]
    where = {"where": f'Type=="ACCPAY" AND Date=={emulator_date(day)}'}
    token = sandbox.token()

    summary = sandbox.get("Invoices", token=token, params=where).json()["Invoices"]
    paged = sandbox.get("Invoices", token=token, params={**where, "page": "1"}).json()
    lighter = sandbox.get(
        "Invoices", token=token, params={**where, "page": "1", "summaryOnly": "true"}
    ).json()

    assert summary and all("LineItems" not in invoice for invoice in summary)
    assert all(invoice["LineItems"] for invoice in paged["Invoices"])
    assert paged["pagination"]["itemCount"] == len(summary)
    assert all("LineItems" not in invoice for invoice in lighter["Invoices"])


def emulator_date(day: dt.date) -> str:
    return f"DateTime({day.year},{day.month},{day.day})"


def test_if_modified_since_is_inclusive_to_the_second(sandbox: Sandbox) -> None:
    company = sandbox.company
    day = company.business_days()[-20]
    line = company.records(RecordKind.SPEND, day)[0]
    amended = company.amend(RecordKind.SPEND, line.natural_key, day, description="fixed")
    boundary = amended.updated_at.replace(microsecond=0, tzinfo=None).isoformat()
    kind = {
        SpendDocumentType.INVOICE: "Invoices",
        SpendDocumentType.CREDIT_NOTE: "CreditNotes",
        SpendDocumentType.CARD_CHARGE: "BankTransactions",
    }[line.document_type]

    answer = sandbox.get(kind, headers={"If-Modified-Since": boundary}, params={"page": "1"}).json()
    summary = sandbox.source.changed_days(RecordKind.SPEND, amended.updated_at)

    numbers = {
        d.get("InvoiceNumber") or d.get("CreditNoteNumber") or d.get("Reference")
        for d in answer[kind]
    }
    assert line.document_id in numbers
    assert day in summary.days


def test_where_language_of_the_emulator() -> None:
    clauses = emulator.parse_where(
        'Type=="ACCPAY" AND Date>=DateTime(2026,10,01) && Reference=="A AND B"'
    )

    assert [(c.path, c.operator) for c in clauses] == [
        ("Type", "=="),
        ("Date", ">="),
        ("Reference", "=="),
    ]
    assert clauses[1].value == dt.datetime(2026, 10, 1, tzinfo=UTC)
    assert clauses[2].value == "A AND B"
    with pytest.raises(emulator.WhereError):
        emulator.parse_where("Type = ACCPAY")


# On hand: today only, one figure per item


def test_tracked_item_is_todays_on_hand_of_the_whole_organisation() -> None:
    item = {"ItemID": "9a59", "Code": "GB1-White", "QuantityOnHand": Decimal("12.5")}
    today = dt.date(2026, 12, 3)

    snapshot = on_hand_from_item({**item, "TotalCostPool": Decimal("310.00")}, "xero", today, "ALL")

    assert (snapshot.material_id, snapshot.location, snapshot.snapshot_date) == (
        "GB1-White",
        "ALL",
        today,
    )
    assert snapshot.quantity == Decimal("12.5") and snapshot.value == Decimal("310.00")
    assert snapshot.unit is None and snapshot.unit_cost is None and snapshot.currency is None
    assert on_hand_from_item(item, "xero", today, "ALL").value is None


def test_on_hand_today_is_quantity_on_hand_per_item_and_past_days_are_not_read(
    sandbox: Sandbox, caplog
) -> None:
    company = sandbox.company
    today = dt.datetime.now(UTC).date()
    past = SyncWindow.for_day(company.business_days()[-3])

    records = read(sandbox.source, RecordKind.INVENTORY, SyncWindow.for_day(today))
    with caplog.at_level(logging.WARNING, logger="erp_connector_dagster.erp.xero"):
        past_reads = [read(sandbox.source, RecordKind.INVENTORY, past) for _ in range(2)]

    # Xero keeps one QuantityOnHand and TotalCostPool per item: the company's locations of
    # its latest business day (the emulator's "now") add up, and nothing else is carried.
    totals: dict[str, tuple[Decimal, Decimal]] = {}
    for snapshot in company.records(RecordKind.INVENTORY, company.business_days()[-1]):
        quantity, value = totals.get(snapshot.material_id, (Decimal(0), Decimal(0)))
        totals[snapshot.material_id] = (quantity + snapshot.quantity, value + snapshot.value)
    expected = [
        InventorySnapshot(
            connection="",
            source_id="",
            snapshot_date=today,
            material_id=material_id,
            location="ALL",
            quantity=quantity,
            value=value,
        )
        for material_id, (quantity, value) in totals.items()
    ]
    exact = {"connection", "source_id", "updated_at"}
    assert records
    assert sorted((r.model_dump(exclude=exact) for r in records), key=str) == sorted(
        (r.model_dump(exclude=exact) for r in expected), key=str
    )
    assert past_reads == [[], []]
    notes = [r for r in caplog.records if "past days" in r.getMessage()]
    assert len(notes) == 1
    assert sandbox.source.changed_days(RecordKind.INVENTORY, dt.datetime.now(UTC)).days == {today}
    # Daily syncs read past days, so Xero does not offer inventory to them.
    assert RecordKind.INVENTORY not in XeroSource.supported_kinds
