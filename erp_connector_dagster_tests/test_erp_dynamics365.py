"""Dynamics 365 (Finance & Operations, Business Central): what the acceptance suite does not see.

Published Business Central payloads parsed over real HTTP, the Entra ID handshake and token
renewal, the expired-token and throttling answers, server-driven paging under a path prefix,
F&O's date and credit-note conventions, Business Central's dimensions and positive credit memos,
and on-hand: today's through the standard entities, past days only through the snapshot extension.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from erp_connector_dagster.erp import build_source
from erp_connector_dagster.erp.base import SyncWindow
from erp_connector_dagster.erp.dynamics365 import (
    Dynamics365BusinessCentralSource,
    Dynamics365FinanceSource,
    odata_string,
    odata_throttle_signal,
    parse_date,
)
from erp_connector_dagster.erp.http import ErpAuthError
from erp_connector_dagster.records import (
    InventorySnapshot,
    Material,
    PurchaseOrder,
    PurchaseOrderLine,
    RecordKind,
    RecordStatus,
    SpendDocumentType,
    SpendRecord,
    Vendor,
)
from erp_connector_dagster.sandbox import dynamics365_bc, dynamics365_fo
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.faults import FaultPlan
from erp_connector_dagster.sandbox.server import SandboxConnection, SandboxServer

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "erp-samples" / "dynamics365_bc"
SEED = 5150
UTC = dt.timezone.utc


class Loopback:
    """A WSGI app served on 127.0.0.1 in a thread, for the length of one test."""

    def __init__(self, app) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_port}"

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def company() -> SandboxCompany:
    return SandboxCompany(seed=SEED)


def _source(cls, base_url: str, module, **overrides):
    fields = {
        "connection_name": "dyn-test",
        "base_url": base_url,
        **module.SANDBOX_CREDENTIALS,
        **module.SANDBOX_OPTIONS,
        **overrides,
    }
    return cls(**fields)


@pytest.fixture
def bc(company) -> Iterator[tuple[dynamics365_bc.BusinessCentralEmulator, str]]:
    app = dynamics365_bc.create_app(company, FaultPlan(), dict(dynamics365_bc.SANDBOX_CREDENTIALS))
    with Loopback(app) as base_url:
        yield app, base_url


@pytest.fixture
def fo(company) -> Iterator[tuple[dynamics365_fo.FinanceEmulator, str]]:
    app = dynamics365_fo.create_app(company, FaultPlan(), dict(dynamics365_fo.SANDBOX_CREDENTIALS))
    with Loopback(app) as base_url:
        yield app, base_url


def _token(base_url: str, module, scope: str) -> str:
    credentials = module.SANDBOX_CREDENTIALS
    response = requests.post(
        f"{base_url}/{credentials['tenant_id']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"],
            "scope": scope,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    grant = response.json()
    assert grant["token_type"] == "Bearer" and grant["expires_in"] > 0
    return grant["access_token"]


# --- Published Business Central payloads ---------------------------------------------------


def _sample(name: str) -> dict:
    if not SAMPLES.exists():
        pytest.skip(f"published Business Central samples not found at {SAMPLES}")
    return json.loads((SAMPLES / name).read_text(), parse_float=Decimal)


def _sample_service(collections: dict[str, list[dict]]):
    """Business Central as far as the samples go: a token and fixed entity set answers."""

    @Request.application
    def app(request: Request) -> Response:
        if request.path.endswith("/oauth2/v2.0/token"):
            return Response(
                json.dumps(
                    {"token_type": "Bearer", "expires_in": 3599, "access_token": "sample-token"}
                ),
                mimetype="application/json",
            )
        assert request.headers["Authorization"] == "Bearer sample-token"
        entity_set = request.path.rsplit("/", 1)[-1]
        body = {"value": collections.get(entity_set, [])}
        return Response(dynamics365_fo.json_dumps(body), mimetype="application/json")

    return app


def test_published_business_central_payloads_parse_to_canonical_records() -> None:
    invoice = {
        **_sample("purchaseinvoice.get_response.json"),
        "purchaseInvoiceLines": [_sample("purchaseinvoiceline.get_response.json")],
    }
    order = {
        **_sample("purchaseorder.get_response.json"),
        "purchaseOrderLines": [_sample("purchaseorderline.get_response.json")],
    }
    app = _sample_service(
        {
            "purchaseInvoices": [invoice],
            "purchaseOrders": [order],
            "vendors": [_sample("vendor.get_response.json")],
            "items": [_sample("item.get_response.json")],
        }
    )
    with Loopback(app) as base_url:
        # Without the snapshot page, inventory is today's `items.inventory`.
        source = _source(
            Dynamics365BusinessCentralSource, base_url, dynamics365_bc, onhand_snapshot_api=""
        )
        read = {
            kind: [r for b in source.fetch(kind, SyncWindow()) for r in b.records]
            for kind in source.supported_kinds
        }

    [spend] = read[RecordKind.SPEND]
    assert (spend.document_id, spend.line_number, spend.vendor_id) == ("108001", 10000, "20000")
    assert spend.document_type is SpendDocumentType.INVOICE
    assert spend.transaction_date == dt.date(2019, 1, 1)
    assert spend.material_id == "1896-S" and spend.gl_account is None
    assert spend.amount == Decimal("3122.8") and spend.currency == "USD"
    assert spend.quantity == Decimal("4") and spend.unit == "PCS"
    assert spend.description == "ATHENS Desk"
    assert spend.source_id == "dd8db9c0-44e3-ea11-bb43-000d3a2feca1"
    assert spend.updated_at == dt.datetime(2020, 8, 21, 0, 26, 53, 793000, tzinfo=UTC)

    [purchase_order] = read[RecordKind.PURCHASE_ORDER]
    assert purchase_order.purchase_order_id == "108001" and purchase_order.vendor_id == "20000"
    assert purchase_order.order_date == dt.date(2021, 1, 1)
    assert purchase_order.total_amount == Decimal("3122.8")
    # fullyReceived, nothing invoiced yet.
    assert purchase_order.order_status == "received"
    # The published example writes lastModifiedDateTime as a bare date.
    assert purchase_order.updated_at == dt.datetime(2021, 1, 1, tzinfo=UTC)

    [order_line] = read[RecordKind.PURCHASE_ORDER_LINE]
    assert (order_line.line_number, order_line.material_id) == (10000, "1996-S")
    assert order_line.quantity == Decimal("12") and order_line.unit_price == Decimal("1397.3")
    assert order_line.amount == Decimal("16767.6")
    assert order_line.delivery_date == dt.date(2020, 4, 2)
    assert order_line.description == "ATLANTA Whiteboard, base"

    [vendor] = read[RecordKind.VENDOR]
    assert (vendor.vendor_id, vendor.name, vendor.country) == ("10000", "Fabrikam, Inc.", "US")
    assert vendor.currency == "USD" and vendor.tax_id is None and vendor.industry_code is None

    [item] = read[RecordKind.MATERIAL]
    assert (item.material_id, item.description) == ("1896-S", "ATHENS Desk")
    assert item.material_group == "TABLE" and item.base_unit == "PCS"

    [on_hand] = read[RecordKind.INVENTORY]
    assert on_hand.snapshot_date == dt.datetime.now(UTC).date()
    assert (on_hand.material_id, on_hand.location, on_hand.unit) == ("1896-S", "ALL", "PCS")
    assert on_hand.quantity == Decimal("4") and on_hand.unit_cost == Decimal("780.7")
    assert on_hand.value == Decimal("3122.80") and on_hand.currency is None


# --- Documented OData v4 shapes, with values of our own -----------------------------------


def _odata_service(collections: dict[str, list[dict]], seen: list[str], page_size: int = 2):
    """OData v4 as documented: `@odata.context`, rows with `@odata.etag`, JSON numbers for
    decimals, and server-driven pages joined by `@odata.nextLink` with a `$skiptoken`."""

    @Request.application
    def app(request: Request) -> Response:
        if request.path.endswith("/oauth2/v2.0/token"):
            grant = {"token_type": "Bearer", "expires_in": 3599, "access_token": "doc-token"}
            return Response(json.dumps(grant), mimetype="application/json")
        assert request.headers["Authorization"] == "Bearer doc-token"
        entity_set = request.path.rsplit("/", 1)[-1]
        seen.append(entity_set)
        rows = collections.get(entity_set, [])
        start = int(request.args.get("$skiptoken", "0"))
        body: dict = {
            "@odata.context": f"{request.host_url}$metadata#{entity_set}",
            "value": rows[start : start + page_size],
        }
        if start + page_size < len(rows):
            body["@odata.nextLink"] = f"{request.base_url}?$skiptoken={start + page_size}"
        return Response(dynamics365_fo.json_dumps(body), mimetype="application/json")

    return app


def _bc_invoice(number: str, currency: str, lines: list[dict], **fields) -> dict:
    return {
        "@odata.etag": f'W/"JzQ0O{number}Jyc="',
        "id": f"7c1e4a10-0000-4000-8000-{number.rjust(12, '0')}",
        "number": number,
        "invoiceDate": "2025-03-03",
        "postingDate": "2025-03-04",
        "dueDate": "2025-04-03",
        "vendorId": "5a0b2c3d-0000-4000-8000-000000000042",
        "vendorNumber": "V-0042",
        "vendorName": "Lakeside Fasteners",
        "orderNumber": "",
        "currencyCode": currency,
        "pricesIncludeTax": False,
        "totalAmountExcludingTax": 0,
        "status": "Open",
        "lastModifiedDateTime": "2025-03-04T16:20:05.117Z",
        **fields,
        "purchaseInvoiceLines": lines,
    }


def _bc_line(line_id: str, sequence: int, net: Decimal, quantity: Decimal, **fields) -> dict:
    return {
        "@odata.etag": f'W/"JzE5O{line_id}Jyc="',
        "id": f"9d2f5b60-0000-4000-8000-{line_id.rjust(12, '0')}",
        "sequence": sequence,
        "lineType": "Item",
        "lineObjectNumber": "FX-M8-100",
        "description": "Hex bolts M8, box of 100",
        "unitOfMeasureCode": "BOX",
        "quantity": quantity,
        "directUnitCost": net / quantity if quantity else net,
        "netAmount": net,
        "expectedReceiptDate": "0001-01-01",
        **fields,
    }


def _read_all(source, kind: RecordKind) -> tuple[list, list]:
    batches = list(source.fetch(kind, SyncWindow()))
    return (
        [record for batch in batches for record in batch.records],
        [reject for batch in batches for reject in batch.rejected],
    )


def test_business_central_documented_documents_currencies_and_credit_memos() -> None:
    euro = _bc_invoice("PI-1001", "EUR", [_bc_line("1", 10000, Decimal("450.75"), Decimal("3"))])
    local = _bc_invoice(
        "PI-1002",
        "",
        [
            _bc_line(
                "2",
                10000,
                Decimal("80"),
                Decimal("0"),
                lineType="Account",
                lineObjectNumber="8110",
                description="Freight",
            )
        ],
    )
    memo = _bc_invoice(
        "PCM-77",
        "EUR",
        [],
        postingDate="2025-03-05",
        invoiceNumber="PI-1001",
        status="Paid",
    )
    memo.pop("purchaseInvoiceLines")
    memo["purchaseCreditMemoLines"] = [_bc_line("3", 10000, Decimal("120.5"), Decimal("2"))]
    order = {
        "@odata.etag": 'W/"JzE4O1BPJyc="',
        "id": "1b3c5d7e-0000-4000-8000-000000000501",
        "number": "PO-501",
        "orderDate": "2025-02-20",
        "vendorNumber": "V-0042",
        "currencyCode": "",
        "totalAmountExcludingTax": 905.25,
        "fullyReceived": False,
        "status": "Released",
        "lastModifiedDateTime": "2025-02-21T08:00:00Z",
        "purchaseOrderLines": [
            _bc_line(
                "4",
                10000,
                Decimal("905.25"),
                Decimal("7.5"),
                invoicedQuantity=0,
                directUnitCost=120.7,
                expectedReceiptDate="2025-03-01",
            )
        ],
    }
    seen: list[str] = []
    app = _odata_service(
        {
            "purchaseInvoices": [euro, local],
            "purchaseCreditMemos": [memo],
            "purchaseOrders": [order],
            "companyInformation": [
                {
                    "@odata.etag": 'W/"JzE="',
                    "id": "c0",
                    "displayName": "Lakeside Ltd.",
                    "currencyCode": "USD",
                }
            ],
        },
        seen,
    )
    with Loopback(app) as base_url:
        source = _source(Dynamics365BusinessCentralSource, base_url, dynamics365_bc)
        spend, rejected = _read_all(source, RecordKind.SPEND)
        orders, _ = _read_all(source, RecordKind.PURCHASE_ORDER)
        lines, _ = _read_all(source, RecordKind.PURCHASE_ORDER_LINE)
    assert rejected == []
    assert seen.count("companyInformation") == 1  # read once, when a blank code is first met

    stamp = dt.datetime(2025, 3, 4, 16, 20, 5, 117000, tzinfo=UTC)
    common = {"connection": "dyn-test", "vendor_id": "V-0042", "line_number": 10000}
    assert spend == [
        SpendRecord(
            **common,
            source_id="9d2f5b60-0000-4000-8000-000000000001",
            updated_at=stamp,
            document_id="PI-1001",
            document_type=SpendDocumentType.INVOICE,
            transaction_date=dt.date(2025, 3, 4),
            material_id="FX-M8-100",
            description="Hex bolts M8, box of 100",
            amount=Decimal("450.75"),
            currency="EUR",
            quantity=Decimal("3"),
            unit="BOX",
        ),
        SpendRecord(
            **common,
            source_id="9d2f5b60-0000-4000-8000-000000000002",
            updated_at=stamp,
            document_id="PI-1002",
            document_type=SpendDocumentType.INVOICE,
            transaction_date=dt.date(2025, 3, 4),
            gl_account="8110",
            description="Freight",
            amount=Decimal("80"),
            currency="USD",  # blank currencyCode: the company's local currency
            unit="BOX",
        ),
        SpendRecord(
            **common,
            source_id="9d2f5b60-0000-4000-8000-000000000003",
            updated_at=stamp,
            document_id="PCM-77",
            document_type=SpendDocumentType.CREDIT_NOTE,
            transaction_date=dt.date(2025, 3, 5),
            material_id="FX-M8-100",
            description="Hex bolts M8, box of 100",
            amount=Decimal("-120.5"),
            currency="EUR",
            quantity=Decimal("-2"),
            unit="BOX",
        ),
    ]
    assert orders == [
        PurchaseOrder(
            connection="dyn-test",
            source_id="1b3c5d7e-0000-4000-8000-000000000501",
            updated_at=dt.datetime(2025, 2, 21, 8, tzinfo=UTC),
            purchase_order_id="PO-501",
            vendor_id="V-0042",
            order_date=dt.date(2025, 2, 20),
            currency="USD",
            total_amount=Decimal("905.25"),
            order_status="open",
        )
    ]
    [line] = lines
    assert (line.quantity, line.unit_price, line.amount) == (
        Decimal("7.5"),
        Decimal("120.7"),
        Decimal("905.25"),
    )
    assert line.currency == "USD" and line.delivery_date == dt.date(2025, 3, 1)


def test_business_central_drafts_and_comment_lines_are_not_spend() -> None:
    posted = _bc_invoice(
        "PI-2001",
        "EUR",
        [
            _bc_line("11", 10000, Decimal("300"), Decimal("2")),
            _bc_line(
                "12",
                20000,
                Decimal("0"),
                Decimal("0"),
                lineType="Comment",
                lineObjectNumber="",
                description="Delivered to dock 4",
                unitOfMeasureCode="",
            ),
        ],
    )
    draft = _bc_invoice("PI-2002", "EUR", [_bc_line("13", 10000, Decimal("75"), Decimal("1"))])
    draft["status"] = "Draft"
    in_review = _bc_invoice("PI-2003", "EUR", [_bc_line("14", 10000, Decimal("9"), Decimal("1"))])
    in_review["status"] = "In Review"
    app = _odata_service(
        {"purchaseInvoices": [posted, draft, in_review], "purchaseCreditMemos": []}, []
    )
    with Loopback(app) as base_url:
        source = _source(Dynamics365BusinessCentralSource, base_url, dynamics365_bc)
        spend, rejected = _read_all(source, RecordKind.SPEND)

    assert rejected == []
    assert [(r.document_id, r.line_number, r.amount) for r in spend] == [
        ("PI-2001", 10000, Decimal("300"))
    ]


def test_business_central_blank_currency_without_a_known_local_currency_is_refused() -> None:
    local = _bc_invoice("PI-2001", "", [_bc_line("5", 10000, Decimal("12"), Decimal("1"))])
    seen: list[str] = []
    app = _odata_service({"purchaseInvoices": [local], "companyInformation": []}, seen)
    with Loopback(app) as base_url:
        unknown = _source(Dynamics365BusinessCentralSource, base_url, dynamics365_bc)
        spend, [refused] = _read_all(unknown, RecordKind.SPEND)
        assert spend == []
        assert refused.source_id == "PI-2001/9d2f5b60-0000-4000-8000-000000000005"
        assert "currencyCode is blank and the company's local currency is unknown" in (
            refused.reason
        )
        assert refused.partition_date == dt.date(2025, 3, 4)

        seen.clear()
        configured = _source(
            Dynamics365BusinessCentralSource, base_url, dynamics365_bc, local_currency="CAD"
        )
        [record], rejected = _read_all(configured, RecordKind.SPEND)
    assert rejected == [] and record.currency == "CAD"
    assert "companyInformation" not in seen


def test_master_data_rows_without_their_key_are_rejected_not_fatal() -> None:
    vendors = [
        {
            "@odata.etag": 'W/"JzE="',
            "id": "v-1",
            "number": "V-0042",
            "displayName": "Lakeside",
            "country": "GB",
            "currencyCode": "",
            "taxRegistrationNumber": "GB123456789",
            "lastModifiedDateTime": "0001-01-01T00:00:00Z",
        },
        {"@odata.etag": 'W/"JzI="', "id": "v-2", "displayName": "No number"},
    ]
    items = [
        {
            "@odata.etag": 'W/"JzM="',
            "id": "i-1",
            "number": "FX-M8-100",
            "displayName": "Hex bolts",
            "itemCategoryCode": "FASTEN",
            "baseUnitOfMeasureCode": "BOX",
            "lastModifiedDateTime": "2025-01-09T10:00:00Z",
        },
    ]
    app = _odata_service({"vendors": vendors, "items": items}, [])
    with Loopback(app) as base_url:
        source = _source(Dynamics365BusinessCentralSource, base_url, dynamics365_bc)
        vendor_records, [refused] = _read_all(source, RecordKind.VENDOR)
        materials, no_rejects = _read_all(source, RecordKind.MATERIAL)
    assert vendor_records == [
        Vendor(
            connection="dyn-test",
            source_id="v-1",
            vendor_id="V-0042",
            name="Lakeside",
            country="GB",
            tax_id="GB123456789",
        )
    ]
    assert (refused.source_id, refused.reason) == ("v-2", "number is missing")
    assert no_rejects == []
    assert materials == [
        Material(
            connection="dyn-test",
            source_id="i-1",
            updated_at=dt.datetime(2025, 1, 9, 10, tzinfo=UTC),
            material_id="FX-M8-100",
            description="Hex bolts",
            material_group="FASTEN",
            base_unit="BOX",
        )
    ]


def test_finance_documented_entities_price_units_blank_dates_and_bad_rows() -> None:
    header = {
        "@odata.etag": 'W/"JzEsNTYzNzE0NDU3Nic="',
        "dataAreaId": "gbsi",
        "HeaderReference": "APINV-000311",
        "InvoiceNumber": "SUP-88121",
        "InvoiceDate": "2025-02-03T12:00:00Z",
        "InvoiceAccount": "GB-V0042",
        "Currency": "EUR",
        "MethodOfPayment": "BANK",
        "PurchaseOrderNumber": "",
    }
    line = {
        "@odata.etag": 'W/"JzEsNTYzNzE0NDU3Nyc="',
        "dataAreaId": "gbsi",
        "HeaderReference": "APINV-000311",
        "LineNumber": 1,
        "ItemNumber": "",
        "LineDescription": "Calibration service",
        "NetAmount": 640.2,
        "Currency": "",
        "ReceiveNow": 0,
        "Unit": "",
        "MainAccountDisplayValue": "601200-OPS-044",
        "ProcurementCategory": "SERVICES",
        "PurchaseOrder": "",
    }
    po_header = {
        "@odata.etag": 'W/"JzEsNjgn"',
        "dataAreaId": "gbsi",
        "PurchaseOrderNumber": "GB-PO-0917",
        "OrderVendorAccountNumber": "GB-V0042",
        "CurrencyCode": "GBP",
        "AccountingDate": "2025-01-28T12:00:00Z",
        "PurchaseOrderStatus": "Backorder",
        "PurchaseOrderLinesV2": [
            {
                "dataAreaId": "gbsi",
                "PurchaseOrderNumber": "GB-PO-0917",
                "LineNumber": 1,
                "ItemNumber": "RM-WIRE-2",
                "LineDescription": "Copper wire 2mm",
                "OrderedPurchaseQuantity": 250,
                "PurchaseUnitSymbol": "m",
                "PurchasePrice": 38.5,
                "PurchasePriceQuantity": 100,
                "LineAmount": 96.25,
                "CurrencyCode": "GBP",
                "MainAccountIdDisplayValue": "",
                "RequestedDeliveryDate": "1900-01-01T12:00:00Z",
            }
        ],
    }
    vendors = [
        {
            "@odata.etag": 'W/"JzE="',
            "dataAreaId": "gbsi",
            "VendorAccountNumber": "GB-V0042",
            "VendorOrganizationName": "Lakeside Fasteners",
            "AddressCountryRegionISOCode": "GB",
            "CurrencyCode": "GBP",
            "LineOfBusinessId": "",
            "TaxExemptNumber": "",
        },
        {"@odata.etag": 'W/"JzI="', "dataAreaId": "gbsi", "VendorOrganizationName": "Ghost"},
    ]
    app = _odata_service(
        {
            "VendorInvoiceHeaders": [header, {**header, "HeaderReference": ""}],
            "VendorInvoiceLines": [line],
            "PurchaseOrderHeadersV2": [po_header],
            "VendorsV2": vendors,
        },
        [],
        page_size=1,
    )
    with Loopback(app) as base_url:
        source = _source(Dynamics365FinanceSource, base_url, dynamics365_fo)
        spend, [bad_header] = _read_all(source, RecordKind.SPEND)
        orders, _ = _read_all(source, RecordKind.PURCHASE_ORDER)
        order_lines, _ = _read_all(source, RecordKind.PURCHASE_ORDER_LINE)
        vendor_records, [bad_vendor] = _read_all(source, RecordKind.VENDOR)

    assert spend == [
        SpendRecord(
            connection="dyn-test",
            source_id="gbsi/APINV-000311/1",
            document_id="SUP-88121",
            line_number=1,
            document_type=SpendDocumentType.INVOICE,
            transaction_date=dt.date(2025, 2, 3),
            vendor_id="GB-V0042",
            gl_account="601200",
            description="Calibration service",
            amount=Decimal("640.2"),
            currency="EUR",  # the line's blank Currency falls back to the header's
        )
    ]
    assert bad_header.reason == "vendor invoice header without dataAreaId or HeaderReference"
    assert bad_header.partition_date == dt.date(2025, 2, 3)
    assert [order.total_amount for order in orders] == [Decimal("96.25")]
    assert order_lines == [
        PurchaseOrderLine(
            connection="dyn-test",
            source_id="gbsi/GB-PO-0917/1",
            purchase_order_id="GB-PO-0917",
            line_number=1,
            order_date=dt.date(2025, 1, 28),
            material_id="RM-WIRE-2",
            description="Copper wire 2mm",
            quantity=Decimal("250"),
            unit="m",
            unit_price=Decimal("0.385"),  # 38.5 per 100 m
            amount=Decimal("96.25"),
            currency="GBP",
            delivery_date=None,  # 1900-01-01 is F&O's blank date
        )
    ]
    assert [v.vendor_id for v in vendor_records] == ["GB-V0042"]
    assert bad_vendor.reason == "VendorAccountNumber is missing"


# --- Entra ID sign-in -----------------------------------------------------------------------


def test_token_request_is_a_client_credentials_grant_for_the_right_scope(bc, fo) -> None:
    _, bc_url = bc
    fo_app, fo_url = fo
    credentials = dynamics365_fo.SANDBOX_CREDENTIALS
    token_url = f"{fo_url}/{credentials['tenant_id']}/oauth2/v2.0/token"

    wrong_scope = requests.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"],
            "scope": "https://other/.default",
        },
        timeout=10,
    )
    wrong_grant = requests.post(token_url, data={"grant_type": "password"}, timeout=10)

    assert wrong_scope.status_code == 400 and wrong_scope.json()["error"] == "invalid_scope"
    assert wrong_grant.json()["error"] == "unsupported_grant_type"
    # F&O's scope is the environment URL; Business Central's is the fixed API resource.
    _token(fo_url, dynamics365_fo, f"{fo_url}/.default")
    _token(bc_url, dynamics365_bc, dynamics365_bc.BUSINESS_CENTRAL_SCOPE)
    assert fo_app.tokens.issued == 1


def test_wrong_secret_is_an_auth_error_naming_the_entra_code_not_the_secret(bc) -> None:
    _, base_url = bc
    source = _source(
        Dynamics365BusinessCentralSource,
        base_url,
        dynamics365_bc,
        client_secret="not-the-secret-123",
    )

    with pytest.raises(ErpAuthError) as refused:
        list(source.fetch(RecordKind.VENDOR, SyncWindow()))

    assert "AADSTS7000215" in str(refused.value)
    assert "not-the-secret-123" not in str(refused.value)
    assert refused.value.status == 401


def test_token_is_renewed_before_it_expires(company) -> None:
    app = dynamics365_bc.create_app(
        company, FaultPlan(), dict(dynamics365_bc.SANDBOX_CREDENTIALS), token_lifetime_seconds=2
    )
    with Loopback(app) as base_url:
        source = _source(Dynamics365BusinessCentralSource, base_url, dynamics365_bc, page_size=50)
        vendors = [r for b in source.fetch(RecordKind.VENDOR, SyncWindow()) for r in b.records]

    assert len(vendors) == len(company.vendors())
    # A token that lives less than the renewal margin is renewed before every page, so the
    # service never had to refuse one: five pages, five tokens, no 401 answered.
    assert app.tokens.issued == len(vendors) // 50 + 1
    assert source._http().client.reauthentications == app.tokens.issued - 1


def test_expired_token_gets_business_centrals_401(bc) -> None:
    app, base_url = bc
    token = _token(base_url, dynamics365_bc, dynamics365_bc.BUSINESS_CENTRAL_SCOPE)
    app.faults.expire_token()

    response = requests.get(
        f"{base_url}/{app.prefix}/vendors", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.json()["error"]["code"] == "Authentication_InvalidCredentials"


def test_expired_token_gets_an_empty_401_from_finance(fo) -> None:
    app, base_url = fo
    token = _token(base_url, dynamics365_fo, f"{base_url}/.default")
    app.faults.expire_token()

    response = requests.get(
        f"{base_url}/data/VendorsV2", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )

    assert response.status_code == 401 and response.content == b""


# --- Throttling and paging -------------------------------------------------------------------


def test_throttling_is_429_with_retry_after(bc) -> None:
    app, base_url = bc
    token = _token(base_url, dynamics365_bc, dynamics365_bc.BUSINESS_CENTRAL_SCOPE)
    app.faults.throttle(retry_after=7)

    response = requests.get(
        f"{base_url}/{app.prefix}/vendors", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "Application_TooManyRequests"
    assert odata_throttle_signal(response) == 7.0
    assert odata_throttle_signal(requests.Response()) is None


def test_server_driven_paging_under_a_path_prefix(company) -> None:
    connection = SandboxConnection(name="paging-bc", erp_type="dynamics365_bc", company=company)
    with SandboxServer([connection]) as server:
        source = build_source(server.connection_configs()[0]).model_copy(update={"page_size": 40})
        base_url = server.base_url("paging-bc")
        token = _token(base_url, dynamics365_bc, dynamics365_bc.BUSINESS_CENTRAL_SCOPE)
        first = requests.get(
            f"{base_url}/v2.0/{dynamics365_bc.SANDBOX_TENANT_ID}"
            f"/{dynamics365_bc.SANDBOX_ENVIRONMENT}"
            f"/api/v2.0/companies({dynamics365_bc.SANDBOX_COMPANY_ID})/vendors",
            headers={"Authorization": f"Bearer {token}", "Prefer": "odata.maxpagesize=40"},
            timeout=10,
        )
        vendors = [r for b in source.fetch(RecordKind.VENDOR, SyncWindow()) for r in b.records]

    assert first.headers["Preference-Applied"] == "odata.maxpagesize=40"
    page = first.json()
    assert len(page["value"]) == 40
    assert page["@odata.nextLink"].startswith(f"{base_url}/v2.0/")
    assert "$skiptoken=" in requests.utils.unquote(page["@odata.nextLink"])
    assert [v.vendor_id for v in vendors] == sorted(v.vendor_id for v in company.vendors())


def test_filter_literals_are_escaped() -> None:
    assert odata_string("O'Neil & Sons") == "'O''Neil & Sons'"
    expression = dynamics365_fo.parse_filter("VendorOrganizationName eq 'O''Neil' and x ge 2")
    assert dynamics365_fo.matches(expression, {"VendorOrganizationName": "O'Neil", "x": 3})


# --- Finance & Operations conventions --------------------------------------------------------


def test_finance_dates_are_noon_utc_and_blank_dates_are_none() -> None:
    assert parse_date("2026-11-25T12:00:00Z") == dt.date(2026, 11, 25)
    assert parse_date("1900-01-01T00:00:00Z") is None
    assert parse_date("0001-01-01") is None
    assert dynamics365_fo.fo_date(dt.date(2026, 11, 25)) == "2026-11-25T12:00:00Z"


def _day_with(company: SandboxCompany, document_type: SpendDocumentType) -> dt.date:
    for day in reversed(company.business_days(company.end - dt.timedelta(days=90))):
        if any(r.document_type is document_type for r in company.records(RecordKind.SPEND, day)):
            return day
    raise AssertionError(f"no {document_type.value} in the last 90 days")


def test_finance_credit_notes_are_negative_invoices_and_card_charges_a_payment_method(
    fo, company
) -> None:
    app, base_url = fo
    source = _source(Dynamics365FinanceSource, base_url, dynamics365_fo)
    token = _token(base_url, dynamics365_fo, f"{base_url}/.default")
    credit_day = _day_with(company, SpendDocumentType.CREDIT_NOTE)
    card_day = _day_with(company, SpendDocumentType.CARD_CHARGE)

    native = requests.get(
        f"{base_url}/data/VendorInvoiceLines",
        params={"cross-company": "true", "$filter": "HeaderReference eq 'none'"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    records = [
        r
        for day in (credit_day, card_day)
        for b in source.fetch(RecordKind.SPEND, SyncWindow.for_day(day))
        for r in b.records
    ]

    assert native.status_code == 200 and native.json()["value"] == []
    credits = [r for r in records if r.document_type is SpendDocumentType.CREDIT_NOTE]
    cards = [r for r in records if r.document_type is SpendDocumentType.CARD_CHARGE]
    truth = [r for day in (credit_day, card_day) for r in company.records(RecordKind.SPEND, day)]
    assert credits and all(r.amount < 0 for r in credits)
    assert {r.natural_key for r in cards} == {
        r.natural_key for r in truth if r.document_type is SpendDocumentType.CARD_CHARGE
    }
    assert {r.natural_key for r in credits} == {
        r.natural_key for r in truth if r.document_type is SpendDocumentType.CREDIT_NOTE
    }


def test_finance_change_cursor_is_cut_to_whole_seconds(fo, company) -> None:
    _, base_url = fo
    source = _source(Dynamics365FinanceSource, base_url, dynamics365_fo)
    day = company.business_days()[-30]
    line = company.records(RecordKind.SPEND, day)[0]
    amended = company.amend(RecordKind.SPEND, line.natural_key, day, description="re-keyed")

    # A cursor a fraction of a second after the change still finds it: F&O keeps seconds.
    cursor = amended.updated_at.replace(microsecond=999_000)
    records = [
        r
        for b in source.fetch(RecordKind.SPEND, SyncWindow(changed_since=cursor))
        for r in b.records
    ]

    assert line.natural_key in {r.natural_key for r in records}
    assert source.changed_days(RecordKind.SPEND, cursor).days == {day}


# --- Business Central conventions ------------------------------------------------------------


def test_business_central_credit_memos_are_stored_positive_and_read_negative(bc, company) -> None:
    app, base_url = bc
    source = _source(Dynamics365BusinessCentralSource, base_url, dynamics365_bc)
    token = _token(base_url, dynamics365_bc, dynamics365_bc.BUSINESS_CENTRAL_SCOPE)
    day = _day_with(company, SpendDocumentType.CREDIT_NOTE)

    native = requests.get(
        f"{base_url}/{app.prefix}/purchaseCreditMemos",
        params={
            "$filter": f"postingDate ge {day} and postingDate lt {day + dt.timedelta(days=1)}",
            "$expand": "purchaseCreditMemoLines",
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    native = json.loads(native.text, parse_float=Decimal)
    records = [
        r for b in source.fetch(RecordKind.SPEND, SyncWindow.for_day(day)) for r in b.records
    ]

    native_lines = [line for memo in native["value"] for line in memo["purchaseCreditMemoLines"]]
    assert native_lines and all(line["netAmount"] > 0 for line in native_lines)
    credits = [r for r in records if r.document_type is SpendDocumentType.CREDIT_NOTE]
    assert sorted(r.amount for r in credits) == sorted(-line["netAmount"] for line in native_lines)


def test_business_central_dimensions_carry_gl_account_capex_and_card_payment(bc, company) -> None:
    app, base_url = bc
    source = _source(Dynamics365BusinessCentralSource, base_url, dynamics365_bc)
    day = _day_with(company, SpendDocumentType.CARD_CHARGE)

    records = [
        r for b in source.fetch(RecordKind.SPEND, SyncWindow.for_day(day)) for r in b.records
    ]

    truth = {r.natural_key: r for r in company.records(RecordKind.SPEND, day)}
    item_lines = [r for r in records if r.material_id is not None]
    assert item_lines and all(r.gl_account == truth[r.natural_key].gl_account for r in item_lines)
    assert [r.is_capex for r in records] == [truth[r.natural_key].is_capex for r in records]
    assert any(r.document_type is SpendDocumentType.CARD_CHARGE for r in records)


def test_business_central_canceled_invoice_is_voided(bc, company) -> None:
    _, base_url = bc
    source = _source(Dynamics365BusinessCentralSource, base_url, dynamics365_bc)
    day = company.business_days()[-15]
    first = company.records(RecordKind.SPEND, day)[0]
    company.amend(RecordKind.SPEND, first.natural_key, day, status=RecordStatus.VOIDED)

    records = [
        r for b in source.fetch(RecordKind.SPEND, SyncWindow.for_day(day)) for r in b.records
    ]

    voided = {r.natural_key for r in records if r.status is RecordStatus.VOIDED}
    assert first.natural_key in voided
    assert all(r.document_id == first.document_id for r in records if r.natural_key in voided)


# --- On-hand: today through the standard entities, past days through the extension -----------


def _read(source, kind: RecordKind, window: SyncWindow) -> list:
    return [record for batch in source.fetch(kind, window) for record in batch.records]


def _stock(records) -> list[dict]:
    return sorted(
        (r.model_dump(exclude={"connection", "source_id", "updated_at"}) for r in records),
        key=str,
    )


def _today() -> dt.date:
    return dt.datetime.now(UTC).date()


def _latest_stock(company: SandboxCompany) -> list[InventorySnapshot]:
    """What the emulators serve as on-hand now: the company's latest business day."""
    return company.records(RecordKind.INVENTORY, company.business_days()[-1])


def _assert_past_day_yields_nothing_and_is_noted_once(source, company, caplog) -> None:
    past = SyncWindow.for_day(company.business_days()[-3])

    with caplog.at_level(logging.WARNING, logger="erp_connector_dagster.erp.dynamics365"):
        reads = [_read(source, RecordKind.INVENTORY, past) for _ in range(2)]

    assert reads == [[], []]
    notes = [r for r in caplog.records if "snapshot extension" in r.getMessage()]
    assert len(notes) == 1


def test_finance_on_hand_today_is_warehouses_on_hand_summed_per_item_and_warehouse(
    fo, company, caplog
) -> None:
    _, base_url = fo
    source = _source(Dynamics365FinanceSource, base_url, dynamics365_fo, onhand_snapshot_entity="")
    today = _today()

    records = _read(source, RecordKind.INVENTORY, SyncWindow.for_day(today))

    # WarehousesOnHandV2 carries no cost: unit cost, value and currency stay empty.
    expected = [
        snapshot.model_copy(
            update={"snapshot_date": today, "unit_cost": None, "value": None, "currency": None}
        )
        for snapshot in _latest_stock(company)
    ]
    assert records and _stock(records) == _stock(expected)
    assert source.changed_days(RecordKind.INVENTORY, dt.datetime.now(UTC)).days == {today}
    _assert_past_day_yields_nothing_and_is_noted_once(source, company, caplog)


def test_business_central_on_hand_today_is_items_inventory_at_one_location(
    bc, company, caplog
) -> None:
    _, base_url = bc
    source = _source(
        Dynamics365BusinessCentralSource, base_url, dynamics365_bc, onhand_snapshot_api=""
    )
    today = _today()

    records = _read(source, RecordKind.INVENTORY, SyncWindow.for_day(today))

    # items.inventory is the total over every location; unitCost the average cost of it.
    totals: dict[str, tuple[Decimal, Decimal, str | None]] = {}
    for snapshot in _latest_stock(company):
        quantity, value, _ = totals.get(snapshot.material_id, (Decimal(0), Decimal(0), None))
        totals[snapshot.material_id] = (
            quantity + snapshot.quantity,
            value + snapshot.value,
            snapshot.unit,
        )
    expected = []
    for material_id, (quantity, value, unit) in totals.items():
        unit_cost = (value / quantity).quantize(Decimal("0.00001"))
        expected.append(
            InventorySnapshot(
                connection="",
                source_id="",
                snapshot_date=today,
                material_id=material_id,
                location="ALL",
                quantity=quantity,
                unit=unit,
                unit_cost=unit_cost,
                value=(quantity * unit_cost).quantize(Decimal("0.01")),
            )
        )
    assert records and _stock(records) == _stock(expected)
    assert source.changed_days(RecordKind.INVENTORY, dt.datetime.now(UTC)).days == {today}
    _assert_past_day_yields_nothing_and_is_noted_once(source, company, caplog)


@pytest.mark.parametrize("system", ["fo", "bc"])
def test_snapshot_extension_reads_past_days_exactly(system, company, request) -> None:
    module, cls = {
        "fo": (dynamics365_fo, Dynamics365FinanceSource),
        "bc": (dynamics365_bc, Dynamics365BusinessCentralSource),
    }[system]
    _, base_url = request.getfixturevalue(system)
    source = _source(cls, base_url, module)
    first, last = company.business_days()[-6], company.business_days()[-4]

    records = _read(
        source,
        RecordKind.INVENTORY,
        SyncWindow(start=first, end=last + dt.timedelta(days=1)),
    )

    truth = company.records_between(RecordKind.INVENTORY, first, last + dt.timedelta(days=1))
    assert records and _stock(records) == _stock(truth)
    since = dt.datetime.combine(last, dt.time(), UTC)
    days = source.changed_days(RecordKind.INVENTORY, since).days
    assert min(days) == last - dt.timedelta(days=source.lookback_days)
    assert max(days) == _today()


def test_past_on_hand_without_the_extension_is_reported_as_an_incomplete_read() -> None:
    from erp_connector_dagster.erp.base import SyncWindow
    from erp_connector_dagster.erp.dynamics365 import Dynamics365FinanceSource

    source = Dynamics365FinanceSource(
        connection_name="no-extension",
        base_url="http://127.0.0.1:9/unused",
        tenant_id="t",
        client_id="c",
        client_secret="s",
    )
    past = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=30)

    batches = list(source.fetch(RecordKind.INVENTORY, SyncWindow.for_day(past)))

    assert [batch.complete for batch in batches] == [False]
    assert not batches[0].records
