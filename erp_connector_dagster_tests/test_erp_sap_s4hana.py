"""SAP S/4HANA: published API payloads, and what the acceptance suite cannot see.

The first half parses the API Business Hub sandbox payloads under shared/data/erp-samples; the
second drives the sandbox over real HTTP: the OAuth and Basic handshakes, token expiry, the
429 shape, server-driven paging, deletion flags, credit memos, the change stamp beyond the
lookback window and the current-stock path.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from erp_connector_dagster.erp import build_source
from erp_connector_dagster.erp.base import SyncWindow
from erp_connector_dagster.erp.http import ErpAuthError, ErpRequestError
from erp_connector_dagster.erp.sap_s4hana import (
    MappingRules,
    SapS4HanaSource,
    inventory_records,
    material_record,
    odata_payload_entities,
    odata_time,
    odata_timestamp,
    purchase_order_records,
    spend_records,
    vendor_record,
)
from erp_connector_dagster.records import (
    InventorySnapshot,
    PurchaseOrder,
    PurchaseOrderLine,
    RecordKind,
    RecordStatus,
    SpendDocumentType,
    SpendRecord,
    Vendor,
)
from erp_connector_dagster.sandbox import sap_s4hana as emulator
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.server import SandboxConnection, SandboxServer

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "erp-samples" / "sap_s4hana"
RULES = MappingRules(connection="sample")
USER = emulator.SANDBOX_CREDENTIALS["username"]
PASSWORD = emulator.SANDBOX_CREDENTIALS["password"]


def sample(name: str) -> list[dict]:
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"real S/4HANA samples not found at {SAMPLES} (shared/data beside the repo)")
    return json.loads(path.read_text())["d"]["results"]


def by_key(entities: list[dict], field: str, value: str) -> dict:
    return next(entity for entity in entities if entity[field] == value)


# Published payloads


def test_supplier_invoice_sample_headers_and_gl_items() -> None:
    headers = sample("a_supplierinvoice.json")
    gl_items = sample("a_supplierinvoiceitemglacct.json")
    item = by_key(gl_items, "SupplierInvoice", "5100000021")

    plain_invoice = {
        **by_key(headers, "SupplierInvoice", "5100000003"),
        "to_SupplierInvoiceItemGLAcct": {"results": [item]},
    }
    records, rejected = spend_records(plain_invoice, RULES)

    assert rejected == []
    [line] = records
    assert line.document_id == "5100000003"
    assert line.line_number == 1
    assert line.document_type is SpendDocumentType.INVOICE
    assert line.transaction_date == dt.date(2016, 7, 2)
    assert line.vendor_id == "USSU-VSF01"
    assert line.gl_account == "61061000"
    assert line.amount == Decimal("1000.00") and line.currency == "USD"
    assert line.quantity is None and line.unit is None  # "0.000" without a unit
    assert line.status is RecordStatus.ACTIVE
    assert line.updated_at is None  # SuplrInvcLstChgDteTmeTxt "0.0000000": never changed


def test_supplier_invoice_sample_reversal_pair_is_voided() -> None:
    headers = sample("a_supplierinvoice.json")
    item = by_key(sample("a_supplierinvoiceitemglacct.json"), "SupplierInvoice", "5100000027")

    reversed_doc = {
        **by_key(headers, "SupplierInvoice", "5100000001"),
        "to_SupplierInvoiceItemGLAcct": {"results": [item]},
    }
    reversal = {
        **by_key(headers, "SupplierInvoice", "5100000002"),
        "to_SupplierInvoiceItemGLAcct": {"results": [{**item, "DebitCreditCode": "H"}]},
    }
    [original], _ = spend_records(reversed_doc, RULES)
    [credit], _ = spend_records(reversal, RULES)

    assert original.status is RecordStatus.VOIDED and original.amount == Decimal("200.00")
    assert original.currency == "GBP" and original.gl_account == "68000000"
    assert credit.document_type is SpendDocumentType.CREDIT_NOTE  # SupplierInvoiceIsCreditMemo X
    assert credit.status is RecordStatus.VOIDED and credit.amount == Decimal("-200.00")


def test_purchase_order_samples() -> None:
    header = by_key(sample("a_purchaseorder.json"), "PurchaseOrder", "4500000001")
    items = [
        item for item in sample("a_purchaseorderitem.json") if item["PurchaseOrder"] == "4500000012"
    ]

    bare = purchase_order_records(header, RULES)
    with_items = purchase_order_records(
        {**header, "PurchaseOrder": "4500000012", "to_PurchaseOrderItem": {"results": items}},
        RULES,
    )

    # The sample header leaves to_PurchaseOrderItem deferred: with no items there is no total,
    # so the header is refused with the reason rather than read as an order worth zero.
    assert bare.header is None and bare.lines == []
    [refused] = bare.rejected
    assert refused.kind is RecordKind.PURCHASE_ORDER and refused.source_id == "4500000001"
    assert "to_PurchaseOrderItem not expanded" in refused.reason
    assert refused.partition_date == dt.date(2016, 8, 4)
    assert with_items.header is not None
    assert with_items.header.vendor_id == "17300001"
    assert with_items.header.order_date == dt.date(2016, 8, 4)
    assert with_items.header.currency == "USD"
    assert with_items.header.updated_at == dt.datetime(2016, 8, 4, tzinfo=dt.timezone.utc)
    assert [line.line_number for line in with_items.lines] == [30, 40, 60]
    rack = with_items.lines[0]
    assert rack.material_id == "MZ-TG-A17"
    assert rack.description == "Explorer MTX Rear Rack"
    assert rack.quantity == Decimal(20) and rack.unit == "PC"
    assert rack.unit_price == Decimal("22.00") and rack.amount == Decimal("440.00")
    # All three items are completely delivered and none is finally invoiced.
    assert with_items.header.order_status == "received"
    assert with_items.header.total_amount == Decimal("440.00") + Decimal("400.00") + Decimal(
        "150.00"
    )


def test_product_samples() -> None:
    products = sample("a_product.json")

    service = material_record(by_key(products, "Product", "21"), RULES)
    raw = material_record(by_key(products, "Product", "68"), RULES)

    assert service.material_id == "21" and service.material_group == "P001"
    assert service.base_unit == "H" and service.commodity_code is None
    assert service.updated_at == dt.datetime(2016, 10, 17, tzinfo=dt.timezone.utc)
    assert raw.base_unit == "KG" and raw.material_group is None
    assert raw.updated_at == dt.datetime(2017, 4, 14, 8, 17, 18, tzinfo=dt.timezone.utc)


def test_business_partner_samples() -> None:
    partners = sample("a_businesspartner.json")

    supplier = vendor_record(by_key(partners, "BusinessPartner", "1018"), RULES)

    assert supplier.vendor_id == "1018" and supplier.source_id == "1018"
    assert supplier.name == "Bechtle AG Kriek street"
    # LastChangeDate plus LastChangeTime (PT05H51M10S)
    assert supplier.updated_at == dt.datetime(2018, 10, 29, 5, 51, 10, tzinfo=dt.timezone.utc)
    with pytest.raises(ValueError, match="not a supplier"):
        vendor_record(by_key(partners, "BusinessPartner", "11"), RULES)


def test_odata_timestamps_with_offsets_and_escapes() -> None:
    assert odata_timestamp("/Date(1492157838000+0000)/") == dt.datetime(
        2017, 4, 14, 8, 17, 18, tzinfo=dt.timezone.utc
    )
    assert odata_timestamp(json.loads('"\\/Date(1467417600000)\\/"')).date() == dt.date(2016, 7, 2)
    assert odata_timestamp(None) is None


# Documented OData v2 shapes, with values of our own

SERVICE_ROOT = "https://s4.example.test/sap/opu/odata/sap"
UTC = dt.timezone.utc


def meta(service: str, entity_type: str, key: str) -> dict:
    uri = f"{SERVICE_ROOT}/{service}/{entity_type}({key})"
    return {"id": uri, "uri": uri, "type": f"{service}.{entity_type}Type"}


def deferred(service: str, entity: str, navigation: str) -> dict:
    return {"__deferred": {"uri": f"{SERVICE_ROOT}/{service}/{entity}/{navigation}"}}


INVOICE_KEY = "SupplierInvoice='5105600112',FiscalYear='2025'"
INVOICE_SRV = "API_SUPPLIERINVOICE_PROCESS_SRV"


def invoice_payload(**header: object) -> dict:
    """A_SupplierInvoice read with $expand of the G/L and purchase-order item tables."""
    entity = f"A_SupplierInvoice({INVOICE_KEY})"
    return {
        "d": {
            "__metadata": meta(INVOICE_SRV, "A_SupplierInvoice", INVOICE_KEY),
            "SupplierInvoice": "5105600112",
            "FiscalYear": "2025",
            "CompanyCode": "1710",
            "DocumentDate": "/Date(1736121600000)/",
            "PostingDate": "/Date(1736208000000)/",
            "CreationDate": "/Date(1736208000000)/",
            "SuplrInvcLstChgDteTmeTxt": "20250107093015.5000000",
            "InvoicingParty": "17386002",
            "DocumentCurrency": "CHF",
            "InvoiceGrossAmount": "1350.40",
            "SupplierInvoiceIsCreditMemo": "",
            "IsReversed": False,
            "IsReversal": False,
            "AccountingDocumentType": "RE",
            "to_SupplierInvoiceTax": deferred(INVOICE_SRV, entity, "to_SupplierInvoiceTax"),
            "to_SuplrInvcItemMaterial": {"results": []},
            "to_SupplierInvoiceItemGLAcct": {
                "results": [
                    {
                        "__metadata": meta(INVOICE_SRV, "A_SupplierInvoiceItemGLAcct", "item-gl-1"),
                        "SupplierInvoice": "5105600112",
                        "FiscalYear": "2025",
                        "SupplierInvoiceItem": "000001",
                        "GLAccount": "0061003000",
                        "DocumentCurrency": "CHF",
                        "SupplierInvoiceItemAmount": "250.40",
                        "DebitCreditCode": "S",
                        "SupplierInvoiceItemText": "Courier, January",
                        "Quantity": "0.000",
                        "QuantityUnit": "",
                    }
                ]
            },
            "to_SuplrInvcItemPurOrdRef": {
                "results": [
                    {
                        "__metadata": meta(INVOICE_SRV, "A_SuplrInvcItemPurOrdRef", "item-po-2"),
                        "SupplierInvoice": "5105600112",
                        "FiscalYear": "2025",
                        "SupplierInvoiceItem": "000002",
                        "PurchaseOrder": "4500008831",
                        "PurchaseOrderItem": "00010",
                        "DocumentCurrency": "CHF",
                        "SupplierInvoiceItemAmount": "1100.00",
                        "PurchaseOrderQuantityUnit": "KG",
                        "QuantityInPurchaseOrderUnit": "40.000",
                        "SupplierInvoiceItemText": "Resin pellets",
                        "to_SupplierInvoiceItmAcctAssgmt": deferred(
                            INVOICE_SRV, "item-po-2", "to_SupplierInvoiceItmAcctAssgmt"
                        ),
                    }
                ]
            },
            **header,
        }
    }


def test_documented_envelopes_collection_single_entity_and_errors() -> None:
    one = {"__metadata": {"uri": "x", "type": "T"}, "Product": "P-1"}
    two = {"__metadata": {"uri": "y", "type": "T"}, "Product": "P-2"}
    paged = {"d": {"results": [one, two], "__count": "7", "__next": "A_Product?$skiptoken=2"}}

    assert odata_payload_entities(paged) == [one, two]
    assert odata_payload_entities({"d": one}) == [one]  # a key read: the entity itself
    assert odata_payload_entities({"d": [two]}) == [two]  # the older verbose collection form
    assert odata_payload_entities({"d": {"results": []}}) == []
    with pytest.raises(ValueError, match="no top-level d"):
        odata_payload_entities({"error": {"code": "/IWBEP/CM_MGW_RT/020", "message": {}}})
    with pytest.raises(ValueError, match="neither results nor an entity"):
        odata_payload_entities({"d": {"__count": "0"}})
    with pytest.raises(ValueError, match="not a list"):
        odata_payload_entities({"d": {"results": {"__deferred": {"uri": "z"}}}})


def test_documented_supplier_invoice_in_foreign_currency() -> None:
    [invoice] = odata_payload_entities(invoice_payload())

    records, rejected = spend_records(invoice, RULES)

    assert rejected == []
    common = {
        "connection": "sample",
        "updated_at": dt.datetime(2025, 1, 7, 9, 30, 15, 500000, tzinfo=UTC),
        "document_id": "5105600112",
        "document_type": SpendDocumentType.INVOICE,
        "transaction_date": dt.date(2025, 1, 7),
        "vendor_id": "17386002",
        "currency": "CHF",
    }
    assert records == [
        SpendRecord(
            **common,
            source_id="5105600112/2025/000001",
            line_number=1,
            gl_account="0061003000",
            description="Courier, January",
            amount=Decimal("250.40"),
        ),
        SpendRecord(
            **common,
            source_id="5105600112/2025/000002",
            line_number=2,
            description="Resin pellets",
            amount=Decimal("1100.00"),
            quantity=Decimal("40"),
            unit="KG",
            purchase_order_id="4500008831",
        ),
    ]


def test_documented_credit_memo_lowers_spend_on_items_without_a_debit_credit_code() -> None:
    [memo] = odata_payload_entities(
        invoice_payload(
            SupplierInvoiceIsCreditMemo="X",
            SuplrInvcLstChgDteTmeTxt="0.0000000",
            PostingDate="/Date(1736208000000+0000)/",
        )
    )

    records, rejected = spend_records(memo, RULES)

    assert rejected == []
    assert [(r.document_type, r.amount, r.quantity) for r in records] == [
        (SpendDocumentType.CREDIT_NOTE, Decimal("250.40"), None),  # its own code S says debit
        (SpendDocumentType.CREDIT_NOTE, Decimal("-1100.00"), Decimal("-40")),
    ]
    assert {r.updated_at for r in records} == {None}
    assert {r.transaction_date for r in records} == {dt.date(2025, 1, 7)}


def test_invoice_with_deferred_or_empty_item_tables_is_refused_not_dropped() -> None:
    entity = f"A_SupplierInvoice({INVOICE_KEY})"
    unexpanded = invoice_payload(
        **{
            navigation: deferred(INVOICE_SRV, entity, navigation)
            for navigation in (
                "to_SupplierInvoiceItemGLAcct",
                "to_SuplrInvcItemPurOrdRef",
                "to_SuplrInvcItemMaterial",
            )
        }
    )["d"]
    empty = invoice_payload(
        to_SupplierInvoiceItemGLAcct={"results": []}, to_SuplrInvcItemPurOrdRef={"results": []}
    )["d"]
    bad_amount = invoice_payload()["d"]
    bad_amount["to_SupplierInvoiceItemGLAcct"]["results"][0]["SupplierInvoiceItemAmount"] = "1,5"

    records, [refused] = spend_records(unexpanded, RULES)
    assert records == []
    assert refused.source_id == "5105600112/2025" and refused.partition_date == dt.date(2025, 1, 7)
    assert refused.reason == "no item navigation expanded: the invoice's lines were not read"

    records, [refused] = spend_records(empty, RULES)
    assert records == [] and refused.reason.startswith("no items in ")

    records, [refused] = spend_records(bad_amount, RULES)
    assert [r.line_number for r in records] == [2]
    assert refused.source_id == "5105600112/2025/000001"
    assert refused.reason == "SupplierInvoiceItemAmount is not a decimal: '1,5'"


def test_documented_purchase_order_single_entity_with_price_unit_and_schedule() -> None:
    srv = "API_PURCHASEORDER_PROCESS_SRV"
    item_key = "PurchaseOrder='4500008831',PurchaseOrderItem='10'"
    payload = {
        "d": {
            "__metadata": meta(srv, "A_PurchaseOrder", "'4500008831'"),
            "PurchaseOrder": "4500008831",
            "PurchaseOrderType": "NB",
            "Supplier": "17386002",
            "PurchaseOrderDate": "/Date(1735689600000)/",
            "CreationDate": "/Date(1735689600000)/",
            "LastChangeDateTime": "/Date(1735810200000+0000)/",
            "DocumentCurrency": "EUR",
            "PurchasingDocumentDeletionCode": "",
            "to_PurchaseOrderNote": deferred(srv, "A_PurchaseOrder('4500008831')", "notes"),
            "to_PurchaseOrderItem": {
                "results": [
                    {
                        "__metadata": meta(srv, "A_PurchaseOrderItem", item_key),
                        "PurchaseOrder": "4500008831",
                        "PurchaseOrderItem": "10",
                        "PurchaseOrderItemText": "Resin pellets",
                        "Material": "RM-PEL-04",
                        "OrderQuantity": "40.000",
                        "PurchaseOrderQuantityUnit": "KG",
                        "NetPriceAmount": "275.00",
                        "NetPriceQuantity": "10",
                        "DocumentCurrency": "EUR",
                        "IsCompletelyDelivered": False,
                        "IsFinallyInvoiced": False,
                        "PurchasingDocumentDeletionCode": "",
                        "to_AccountAssignment": {
                            "results": [
                                {
                                    "PurchaseOrder": "4500008831",
                                    "PurchaseOrderItem": "10",
                                    "AccountAssignmentNumber": "1",
                                    "GLAccount": "0051100000",
                                    "IsDeleted": False,
                                }
                            ]
                        },
                        "to_ScheduleLine": {
                            "results": [
                                {
                                    "ScheduleLine": "2",
                                    "ScheduleLineDeliveryDate": "/Date(1738368000000)/",
                                },
                                {
                                    "ScheduleLine": "1",
                                    "ScheduleLineDeliveryDate": "/Date(1737158400000)/",
                                },
                            ]
                        },
                        "to_PurchaseOrderPricingElement": deferred(srv, item_key, "pricing"),
                    }
                ]
            },
        }
    }
    [order] = odata_payload_entities(payload)

    parts = purchase_order_records(order, RULES)

    stamp = dt.datetime(2025, 1, 2, 9, 30, tzinfo=UTC)
    assert parts.rejected == [] and parts.deleted_header_ids == []
    assert parts.lines == [
        PurchaseOrderLine(
            connection="sample",
            source_id="4500008831/10",
            updated_at=stamp,
            purchase_order_id="4500008831",
            line_number=10,
            order_date=dt.date(2025, 1, 1),
            material_id="RM-PEL-04",
            description="Resin pellets",
            quantity=Decimal("40"),
            unit="KG",
            unit_price=Decimal("27.5"),  # 275.00 per 10 KG
            amount=Decimal("1100.00"),
            currency="EUR",
            gl_account="0051100000",
            delivery_date=dt.date(2025, 1, 18),
        )
    ]
    assert parts.header == PurchaseOrder(
        connection="sample",
        source_id="4500008831",
        updated_at=stamp,
        purchase_order_id="4500008831",
        vendor_id="17386002",
        order_date=dt.date(2025, 1, 1),
        currency="EUR",
        total_amount=Decimal("1100.00"),
        order_status="open",
    )


def test_documented_business_partner_with_expanded_supplier_and_edm_time() -> None:
    srv = "API_BUSINESS_PARTNER"
    payload = {
        "d": {
            "results": [
                {
                    "__metadata": meta(srv, "A_BusinessPartner", "'17386002'"),
                    "BusinessPartner": "17386002",
                    "BusinessPartnerFullName": "Harbour Polymers GmbH",
                    "Supplier": "17386002",
                    "CreationDate": "/Date(1704067200000)/",
                    "CreationTime": "PT08H15M00S",
                    "LastChangeDate": "/Date(1735689600000)/",
                    "LastChangeTime": "PT12H00M00S",
                    "IsMarkedForArchiving": False,
                    "to_Supplier": {
                        "__metadata": meta(srv, "A_Supplier", "'17386002'"),
                        "Supplier": "17386002",
                        "SupplierName": "Harbour Polymers",
                        "VATRegistration": "DE298765432",
                        "DeletionIndicator": False,
                        "to_SupplierPurchasingOrg": {
                            "results": [
                                {"PurchasingOrganization": "1710", "PurchaseOrderCurrency": "EUR"}
                            ]
                        },
                        "to_SupplierCompany": deferred(srv, "A_Supplier('17386002')", "co"),
                    },
                    "to_BusinessPartnerAddress": {
                        "results": [{"AddressID": "24601", "Country": "DE", "CityName": "Kiel"}]
                    },
                    "to_BuPaIndustry": {
                        "results": [
                            {"IndustrySector": "C22", "IsStandardIndustry": "X"},
                            {"IndustrySector": "G46", "IsStandardIndustry": ""},
                        ]
                    },
                    "to_BusinessPartnerRole": deferred(srv, "A_BusinessPartner('17386002')", "r"),
                }
            ],
            "__count": "1",
        }
    }
    [partner] = odata_payload_entities(payload)

    assert odata_time("PT12H00M00S") == dt.time(12, 0)
    assert vendor_record(partner, RULES) == Vendor(
        connection="sample",
        source_id="17386002",
        updated_at=dt.datetime(2025, 1, 1, 12, 0, tzinfo=UTC),
        vendor_id="17386002",
        name="Harbour Polymers",
        country="DE",
        industry_code="C22",
        tax_id="DE298765432",
        currency="EUR",
    )


def test_documented_material_stock_rows_sum_own_stock_per_plant() -> None:
    srv = "API_MATERIAL_STOCK_SRV"
    base = {"Material": "RM-PEL-04", "Plant": "1710", "Batch": "", "MaterialBaseUnit": "KG"}
    rows = odata_payload_entities(
        {
            "d": {
                "results": [
                    {
                        "__metadata": meta(srv, "A_MatlStkInAcctMod", "a"),
                        **base,
                        "StorageLocation": "171A",
                        "InventoryStockType": "01",
                        "InventorySpecialStockType": "",
                        "MatlWrhsStkQtyInMatlBaseUnit": "120.500",
                    },
                    {
                        "__metadata": meta(srv, "A_MatlStkInAcctMod", "b"),
                        **base,
                        "StorageLocation": "171B",
                        "InventoryStockType": "02",
                        "InventorySpecialStockType": "",
                        "MatlWrhsStkQtyInMatlBaseUnit": "4.500",
                    },
                    {
                        "__metadata": meta(srv, "A_MatlStkInAcctMod", "c"),
                        **base,
                        "StorageLocation": "171A",
                        "InventoryStockType": "01",
                        "InventorySpecialStockType": "K",  # vendor consignment
                        "Supplier": "17386002",
                        "MatlWrhsStkQtyInMatlBaseUnit": "900.000",
                    },
                    {
                        "__metadata": meta(srv, "A_MatlStkInAcctMod", "d"),
                        **base,
                        "Plant": "1720",
                        "StorageLocation": "172A",
                        "InventoryStockType": "01",
                        "InventorySpecialStockType": "",
                        "MatlWrhsStkQtyInMatlBaseUnit": None,
                    },
                ]
            }
        }
    )
    day = dt.date(2025, 1, 7)
    prices = {("RM-PEL-04", "1710"): (Decimal("2.75"), "EUR")}

    records, [refused] = inventory_records(rows, day, prices, RULES)

    assert records == [
        InventorySnapshot(
            connection="sample",
            source_id="RM-PEL-04/1710/2025-01-07",
            snapshot_date=day,
            material_id="RM-PEL-04",
            location="1710",
            quantity=Decimal("125"),
            unit="KG",
            unit_cost=Decimal("2.75"),
            value=Decimal("343.75"),
            currency="EUR",
        )
    ]
    assert refused.source_id == "RM-PEL-04/1720/2025-01-07"
    assert refused.reason == "MatlWrhsStkQtyInMatlBaseUnit is not a decimal: None"


# The sandbox over HTTP


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    connection = SandboxConnection(
        name="s4-own", erp_type="sap_s4hana", company=SandboxCompany(seed=515)
    )
    with SandboxServer([connection]) as server:
        yield server


def source_for(server: SandboxServer, **changes) -> SapS4HanaSource:
    return build_source(server.connection_configs()[0]).model_copy(update=changes)


def odata_url(server: SandboxServer, service: str, resource: str) -> str:
    return f"{server.base_url('s4-own')}/sap/opu/odata/sap/{service}/{resource}"


def token(server: SandboxServer) -> dict:
    response = requests.post(
        f"{server.base_url('s4-own')}{emulator.TOKEN_PATH}",
        data={"grant_type": "client_credentials"},
        auth=(USER, PASSWORD),
        timeout=10,
    )
    assert response.status_code == 200
    return response.json()


def test_oauth_client_credentials_handshake(sandbox: SandboxServer) -> None:
    issued = token(sandbox)
    wrong = requests.post(
        f"{sandbox.base_url('s4-own')}{emulator.TOKEN_PATH}",
        data={"grant_type": "client_credentials"},
        auth=(USER, "nope"),
        timeout=10,
    )
    url = odata_url(sandbox, "API_BUSINESS_PARTNER", "A_Supplier")
    with_token = requests.get(
        url,
        params={"$top": "1", "$format": "json"},
        timeout=10,
        headers={"Authorization": f"Bearer {issued['access_token']}"},
    )
    forged = requests.get(
        url, params={"$top": "1"}, timeout=10, headers={"Authorization": "Bearer forged"}
    )

    assert issued["token_type"] == "Bearer" and issued["expires_in"] == 3600
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert with_token.status_code == 200 and len(with_token.json()["d"]["results"]) == 1
    assert forged.status_code == 401
    assert 'error="invalid_token"' in forged.headers["WWW-Authenticate"]


def test_basic_auth_is_refused_with_a_realm_and_accepted_with_a_session(
    sandbox: SandboxServer,
) -> None:
    url = odata_url(sandbox, "API_BUSINESS_PARTNER", "A_Supplier")
    refused = requests.get(url, auth=(USER, "wrong"), timeout=10)
    session = requests.Session()
    first = session.get(url, params={"$top": "1"}, auth=(USER, PASSWORD), timeout=10)
    by_cookie = session.get(url, params={"$top": "1"}, timeout=10)

    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith('Basic realm="SAP NetWeaver')
    assert first.status_code == 200 and "SAP_SESSIONID_S4H_100" in session.cookies
    assert by_cookie.status_code == 200


def test_basic_auth_source_reads_the_vendor_master(sandbox: SandboxServer) -> None:
    source = source_for(sandbox, auth_method="basic")
    company = sandbox.connections["s4-own"].company

    vendors = [r for b in source.fetch(RecordKind.VENDOR, SyncWindow()) for r in b.records]

    assert source.check_health().authenticated
    expected = {
        v.vendor_id: v.model_dump(exclude={"connection", "updated_at", "source_id"})
        for v in company.vendors()
    }
    assert {
        v.vendor_id: v.model_dump(exclude={"connection", "updated_at", "source_id"})
        for v in vendors
    } == expected


def test_expired_token_answers_invalid_token_and_is_renewed(sandbox: SandboxServer) -> None:
    source = source_for(sandbox)
    faults = sandbox.connections["s4-own"].faults
    health = source.check_health()
    faults.expire_token(count=1, after=1)  # after the token request, before the first read

    materials = [r for b in source.fetch(RecordKind.MATERIAL, SyncWindow()) for r in b.records]

    assert health.authenticated
    assert source._http().reauthentications == 1
    assert len(materials) == len(sandbox.connections["s4-own"].company.materials())


def test_throttle_is_429_with_retry_after_and_an_odata_error(sandbox: SandboxServer) -> None:
    sandbox.connections["s4-own"].faults.throttle(retry_after=2.0, count=1)

    response = requests.get(
        odata_url(sandbox, "API_PRODUCT_SRV", "A_Product"), auth=(USER, PASSWORD), timeout=10
    )

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.json()["error"]["message"]["lang"] == "en"


def test_server_driven_paging_with_next_links_under_the_mount_prefix(
    sandbox: SandboxServer,
) -> None:
    url = odata_url(sandbox, "API_MATERIAL_STOCK_SRV", "A_MatlStkInAcctMod")
    first = requests.get(
        url,
        params={"$format": "json", "$inlinecount": "allpages"},
        auth=(USER, PASSWORD),
        timeout=30,
    ).json()["d"]
    second = requests.get(first["__next"], auth=(USER, PASSWORD), timeout=30).json()["d"]

    total = int(first["__count"])
    assert len(first["results"]) == emulator.SERVER_PAGE_LIMIT < total
    assert first["__next"].startswith(sandbox.base_url("s4-own") + "/sap/opu/odata/sap/")
    assert "$skiptoken=1000" in first["__next"]
    assert len(second["results"]) == total - emulator.SERVER_PAGE_LIMIT
    assert "__next" not in second
    keys = [(row["Material"], row["Plant"]) for row in first["results"] + second["results"]]
    assert len(set(keys)) == total
    assert first["results"][0]["__metadata"]["uri"].startswith(sandbox.base_url("s4-own"))


def test_wire_format_dates_decimals_and_filter_errors(sandbox: SandboxServer) -> None:
    day = sandbox.connections["s4-own"].company.business_days()[-4]
    url = odata_url(sandbox, "API_PURCHASEORDER_PROCESS_SRV", "A_PurchaseOrder")
    raw = requests.get(
        url,
        auth=(USER, PASSWORD),
        timeout=10,
        params={
            "$filter": f"PurchaseOrderDate eq datetime'{day.isoformat()}T00:00'",
            "$expand": "to_PurchaseOrderItem",
            "$top": "1",
        },
    )
    quoted = requests.get(
        odata_url(sandbox, "API_BUSINESS_PARTNER", "A_Supplier"),
        auth=(USER, PASSWORD),
        timeout=10,
        params={"$filter": "SupplierName eq 'O''Brien Steel'"},
    )
    unknown = requests.get(
        url, auth=(USER, PASSWORD), timeout=10, params={"$filter": "NoSuchField eq 'x'"}
    )

    assert '"\\/Date(' in raw.text  # SAP escapes the slashes of /Date(...)/
    [purchase_order] = raw.json()["d"]["results"]
    item = purchase_order["to_PurchaseOrderItem"]["results"][0]
    assert isinstance(item["NetPriceAmount"], str) and isinstance(item["OrderQuantity"], str)
    assert purchase_order["to_PurchaseOrderItem"]["results"][0]["__metadata"]["type"] == (
        "API_PURCHASEORDER_PROCESS_SRV.A_PurchaseOrderItemType"
    )
    assert "__deferred" in item["to_ScheduleLine"]
    assert quoted.status_code == 200 and quoted.json()["d"]["results"] == []
    assert (
        unknown.status_code == 400 and "NoSuchField" in unknown.json()["error"]["message"]["value"]
    )


def test_credit_memo_is_flagged_and_read_negative(sandbox: SandboxServer) -> None:
    company = sandbox.connections["s4-own"].company
    day = next(
        d
        for d in reversed(company.business_days())
        if any(
            r.document_type is SpendDocumentType.CREDIT_NOTE
            for r in company.records(RecordKind.SPEND, d)
        )
    )
    credit_id = next(
        r.document_id
        for r in company.records(RecordKind.SPEND, day)
        if r.document_type is SpendDocumentType.CREDIT_NOTE
    )
    raw = requests.get(
        odata_url(sandbox, "API_SUPPLIERINVOICE_PROCESS_SRV", "A_SupplierInvoice"),
        auth=(USER, PASSWORD),
        timeout=10,
        params={
            "$filter": f"PostingDate eq datetime'{day.isoformat()}T00:00:00' and "
            f"SupplierInvoice eq '{credit_id}'",
            "$expand": "to_SupplierInvoiceItemGLAcct,to_SuplrInvcItemMaterial",
        },
    ).json()["d"]["results"][0]

    records = [
        r
        for b in source_for(sandbox).fetch(RecordKind.SPEND, SyncWindow.for_day(day))
        for r in b.records
        if r.document_id == credit_id
    ]

    items = (
        raw["to_SupplierInvoiceItemGLAcct"]["results"] + raw["to_SuplrInvcItemMaterial"]["results"]
    )
    assert raw["SupplierInvoiceIsCreditMemo"] == "X"
    assert {item["DebitCreditCode"] for item in items} == {"H"}
    assert all(not item["SupplierInvoiceItemAmount"].startswith("-") for item in items)
    assert records and all(r.amount < 0 for r in records)


def test_change_stamp_finds_an_edit_older_than_the_lookback(sandbox: SandboxServer) -> None:
    company = sandbox.connections["s4-own"].company
    day = company.business_days()[-60]
    line = next(r for r in company.records(RecordKind.SPEND, day) if r.material_id is None)
    before = dt.datetime.now(dt.timezone.utc)
    company.amend(RecordKind.SPEND, line.natural_key, day, description="re-keyed text")
    source = source_for(sandbox)

    batches = list(source.fetch(RecordKind.SPEND, SyncWindow(changed_since=before)))

    records = {r.natural_key: r for b in batches for r in b.records}
    assert records[line.natural_key].description == "re-keyed text"
    assert day < before.date() - dt.timedelta(days=source.lookback_days)
    # The whole invoice comes back, not only the edited line.
    siblings = {
        r.natural_key
        for r in company.records(RecordKind.SPEND, day)
        if r.document_id == line.document_id
    }
    assert siblings <= set(records)
    assert max(b.high_watermark for b in batches if b.high_watermark) >= before


def test_deleted_purchase_order_is_reported_not_returned(sandbox: SandboxServer) -> None:
    company = sandbox.connections["s4-own"].company
    day = company.business_days()[-20]
    victim, survivor = company.records(RecordKind.PURCHASE_ORDER, day)[:2]
    line = next(
        r
        for r in company.records(RecordKind.PURCHASE_ORDER_LINE, day)
        if r.purchase_order_id == survivor.purchase_order_id
    )
    victim_lines = {
        r.natural_key
        for r in company.records(RecordKind.PURCHASE_ORDER_LINE, day)
        if r.purchase_order_id == victim.purchase_order_id
    }
    before = dt.datetime.now(dt.timezone.utc)
    company.delete(RecordKind.PURCHASE_ORDER, victim.natural_key, day)
    company.delete(RecordKind.PURCHASE_ORDER_LINE, line.natural_key, day)
    source = source_for(sandbox)

    headers = list(source.fetch(RecordKind.PURCHASE_ORDER, SyncWindow(changed_since=before)))
    lines = list(source.fetch(RecordKind.PURCHASE_ORDER_LINE, SyncWindow.for_day(day)))
    raw = requests.get(
        odata_url(sandbox, "API_PURCHASEORDER_PROCESS_SRV", "A_PurchaseOrder"),
        auth=(USER, PASSWORD),
        timeout=10,
        params={
            "$filter": f"PurchaseOrderDate eq datetime'{day.isoformat()}T00:00:00' and "
            f"PurchaseOrder eq '{victim.purchase_order_id}'",
            "$expand": "to_PurchaseOrderItem",
        },
    ).json()["d"]["results"]

    # SAP keeps a deleted purchase order, flagged, items and all.
    assert raw[0]["PurchasingDocumentDeletionCode"] == "L"
    assert {
        item["PurchasingDocumentDeletionCode"] for item in raw[0]["to_PurchaseOrderItem"]["results"]
    } == {"L"}
    deleted_headers = {i for b in headers for i in b.deleted_source_ids}
    assert victim.purchase_order_id in deleted_headers
    assert survivor.purchase_order_id not in deleted_headers
    assert victim.purchase_order_id not in {r.natural_key for b in headers for r in b.records}
    assert survivor.purchase_order_id in {r.natural_key for b in headers for r in b.records}
    deleted_lines = {i for b in lines for i in b.deleted_source_ids}
    assert {line.natural_key} | victim_lines == deleted_lines
    live_lines = {r.natural_key for b in lines for r in b.records}
    remaining = {r.natural_key for r in company.records(RecordKind.PURCHASE_ORDER_LINE, day)}
    assert live_lines == remaining - victim_lines


def test_current_stock_path_and_its_refusal_of_past_days() -> None:
    today = dt.datetime.now(dt.timezone.utc).date()
    company = SandboxCompany(seed=616, end=today, years=1, vendor_count=20, material_count=30)
    connection = SandboxConnection(name="s4-now", erp_type="sap_s4hana", company=company)
    with SandboxServer([connection]) as server:
        source = build_source(server.connection_configs()[0]).model_copy(
            update={"stock_key_date_entity": "", "page_size": 25}
        )

        snapshots = [
            r
            for b in source.fetch(RecordKind.INVENTORY, SyncWindow.for_day(today))
            for r in b.records
        ]
        with pytest.raises(ErpRequestError, match="only current stock"):
            list(
                source.fetch(RecordKind.INVENTORY, SyncWindow.for_day(today - dt.timedelta(days=7)))
            )

    counted = company.records(RecordKind.INVENTORY, company.business_days()[-1])
    assert {r.snapshot_date for r in snapshots} == {today}
    assert sorted((r.material_id, r.location, r.quantity, r.value) for r in snapshots) == sorted(
        (r.material_id, r.location, r.quantity, r.value) for r in counted
    )


def test_wrong_secret_never_appears_in_errors(sandbox: SandboxServer) -> None:
    source = source_for(sandbox, password="hunter2-wrong", auth_method="basic")

    health = source.check_health()
    with pytest.raises(ErpAuthError) as refused:
        list(source.fetch(RecordKind.MATERIAL, SyncWindow()))

    assert not health.authenticated and "hunter2" not in (health.error or "")
    assert "hunter2" not in str(refused.value)
