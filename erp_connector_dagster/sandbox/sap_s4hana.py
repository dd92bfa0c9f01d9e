"""Sandbox SAP S/4HANA: the OData v2 A2X APIs the connector reads, served from the company.

Follows the SAP Gateway OData v2 JSON format of S/4HANA (Cloud 2308 / on-premise 2022 API
shapes, as in the API Business Hub sandbox payloads under `shared/data/erp-samples`):

- `/sap/opu/odata/sap/<SERVICE>/<EntitySet>` answers `{"d": {"results": [...]}}`; every entity
  has `__metadata` (`id`, `uri`, `type`), navigation properties are `__deferred` links unless
  `$expand`ed (to-many as `{"results": [...]}`, to-one as the entity itself). Edm.DateTime is
  `/Date(ms)/`, Edm.DateTimeOffset `/Date(ms+0000)/`, Edm.Time `PThhHmmMssS`, Edm.Decimal a
  string. `$filter` (eq ne gt ge lt le, and, or, not, parentheses; string, datetime,
  datetimeoffset, decimal, boolean and null literals), `$orderby`, `$top`, `$skip`, `$select`,
  `$expand` (multi-level), `$inlinecount=allpages` (`d.__count`) and `/$count` are evaluated
  for real. Server-driven paging: at most `SERVER_PAGE_LIMIT` entities per response, the rest
  behind `d.__next` with a `$skiptoken`.
- Services and entity sets: API_SUPPLIERINVOICE_PROCESS_SRV/A_SupplierInvoice (expanding
  to_SupplierInvoiceItemGLAcct, to_SuplrInvcItemMaterial, to_SuplrInvcItemPurOrdRef),
  API_PURCHASEORDER_PROCESS_SRV/A_PurchaseOrder (to_PurchaseOrderItem with to_AccountAssignment
  and to_ScheduleLine), API_BUSINESS_PARTNER/A_BusinessPartner (to_Supplier with
  to_SupplierPurchasingOrg, to_BusinessPartnerAddress, to_BuPaIndustry) and A_Supplier,
  API_PRODUCT_SRV/A_Product (to_Description, to_Valuation), A_ProductValuation and
  A_ProductDescription, API_MATERIAL_STOCK_SRV/A_MaterialStock and A_MatlStkInAcctMod (stock
  now), and a customer CDS view exposed as API, YY1_STOCKATKEYDATE_CDS/YY1_StockAtKeyDate
  (P_KeyDate=datetime'...')/Results, for stock at a past key date (the standard stock API has
  none).
- Auth as a communication user: HTTP Basic, or OAuth 2.0 client credentials at
  `/sap/bc/sec/oauth2/token` with the same user as client id (tokens last an hour). A wrong
  secret gets 401 (`WWW-Authenticate: Basic realm=...` or `invalid_client`); an expired or
  revoked token gets 401 with `Bearer error="invalid_token"`. A successful Basic logon also
  sets an `SAP_SESSIONID_<SID>_<client>` cookie, as the ICM does.
- Throttling is rendered as 429 Too Many Requests with Retry-After and an OData error body,
  as SAP API Management and the ICM send it; errors use the Gateway shape
  `{"error": {"code", "message": {"lang", "value"}}}`.

How the company is rendered: each spend document is one supplier invoice (PostingDate =
DocumentDate = CreationDate = the transaction date); credit notes carry
SupplierInvoiceIsCreditMemo 'X' and credit (H) items, card charges the document type
`CARD_CHARGE_DOCUMENT_TYPE`. Lines with a material are material items (SAP derives their G/L
account from the product's valuation class), the others G/L account items. The last-change
stamp is served in SuplrInvcLstChgDteTmeTxt (UTC, `YYYYMMDDhhmmss.fffffff`). Purchase orders
carry LastChangeDateTime; deleted ones stay, flagged with PurchasingDocumentDeletionCode 'L',
as SAP never removes a posted purchase order. Locations are plants, valued at standard price
per 100 units.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from erp_connector_dagster.records import (
    Material,
    PurchaseOrder,
    PurchaseOrderLine,
    RecordKind,
    SpendDocumentType,
    SpendRecord,
    Vendor,
)
from erp_connector_dagster.sandbox.company import INDUSTRIES, LOCATIONS, SandboxCompany
from erp_connector_dagster.sandbox.faults import (
    Fault,
    FaultPlan,
    fault_response,
)
from erp_connector_dagster.sandbox.oauth import TokenStore, basic_credentials

SYSTEM_ID = "S4H"
SAP_CLIENT = "100"
SANDBOX_CREDENTIALS: dict[str, str] = {
    "username": "ERP_CONNECTOR_COMM",
    "password": "s4h-Sandbox-7Qm2-Lw9x-Kp4v",
}
SECRET_FIELDS = frozenset({"password"})
CARD_CHARGE_DOCUMENT_TYPE = "ZP"
TOKEN_PATH = "/sap/bc/sec/oauth2/token"
ODATA_ROOT = "/sap/opu/odata/sap"
STOCK_KEY_DATE_ENTITY = "YY1_STOCKATKEYDATE_CDS/YY1_StockAtKeyDate"
SERVER_PAGE_LIMIT = 1000
# Characters SAP Gateway leaves unescaped in the query options of its __next links.
ODATA_SAFE = "$'(),:"
TOKEN_LIFETIME_SECONDS = 3600
COMPANY_CODE = "1010"
STORAGE_LOCATION = "0001"
PRICE_UNIT = Decimal(100)

# One valuation class per G/L account the company books materials to; SAP's account
# determination maps the class back to the account, which the connector is told as config.
VALUATION_CLASS_BY_ACCOUNT: dict[str, str] = {
    account: f"{3000 + 10 * index}"
    for index, account in enumerate(sorted({gl for _, _, gl, _ in INDUSTRIES}))
}
SANDBOX_OPTIONS: dict[str, object] = {
    "auth_method": "oauth2",
    "stock_key_date_entity": STOCK_KEY_DATE_ENTITY,
    "valuation_class_accounts": {cls: gl for gl, cls in VALUATION_CLASS_BY_ACCOUNT.items()},
    "card_charge_document_types": [CARD_CHARGE_DOCUMENT_TYPE],
    "capex_gl_prefixes": ["15"],
}
_ACCOUNT_BY_NAICS = {naics: gl for naics, _, gl, _ in INDUSTRIES}
_EPOCH = dt.datetime(1970, 1, 1)
_UTC = dt.timezone.utc


class ODataError(Exception):
    """A request SAP Gateway would refuse; rendered as the Gateway error JSON."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# Entity model


@dataclasses.dataclass(frozen=True)
class EntitySpec:
    """An entity set: its type, key, typed properties and navigation properties."""

    name: str
    type_name: str
    keys: tuple[str, ...]
    properties: dict[str, str]  # property -> Edm type
    navigations: dict[str, tuple[str, bool]]  # navigation -> (target entity set, to-many)


@dataclasses.dataclass
class Entity:
    spec: EntitySpec
    values: dict[str, Any]
    children: dict[str, list[Entity] | Entity | None] = dataclasses.field(default_factory=dict)


def _spec(
    name: str, keys: tuple[str, ...], properties: str, navigations: dict | None = None
) -> EntitySpec:
    typed: dict[str, str] = {}
    for item in properties.split():
        prop, _, edm = item.partition(":")
        typed[prop] = {
            "s": "Edm.String",
            "d": "Edm.DateTime",
            "o": "Edm.DateTimeOffset",
            "n": "Edm.Decimal",
            "b": "Edm.Boolean",
            "t": "Edm.Time",
        }[edm or "s"]
    return EntitySpec(name, f"{name}Type", keys, typed, navigations or {})


SUPPLIER_INVOICE = _spec(
    "A_SupplierInvoice",
    ("SupplierInvoice", "FiscalYear"),
    "SupplierInvoice FiscalYear CompanyCode DocumentDate:d PostingDate:d CreationDate:d "
    "SuplrInvcLstChgDteTmeTxt SupplierInvoiceIDByInvcgParty InvoicingParty DocumentCurrency "
    "InvoiceGrossAmount:n DocumentHeaderText PaymentTerms AccountingDocumentType "
    "SupplierInvoiceStatus SuplrInvcIsCapitalGoodsRelated:b SupplierInvoiceIsCreditMemo "
    "ReverseDocument ReverseDocumentFiscalYear IsReversal:b IsReversed:b",
    {
        "to_SupplierInvoiceItemGLAcct": ("A_SupplierInvoiceItemGLAcct", True),
        "to_SuplrInvcItemMaterial": ("A_SupplierInvoiceItemMaterial", True),
        "to_SuplrInvcItemPurOrdRef": ("A_SuplrInvcItemPurOrdRef", True),
    },
)
INVOICE_GL_ITEM = _spec(
    "A_SupplierInvoiceItemGLAcct",
    ("SupplierInvoice", "FiscalYear", "SupplierInvoiceItem"),
    "SupplierInvoice FiscalYear SupplierInvoiceItem CompanyCode CostCenter GLAccount "
    "DocumentCurrency SupplierInvoiceItemAmount:n TaxCode DebitCreditCode "
    "SupplierInvoiceItemText AssignmentReference QuantityUnit Quantity:n",
)
INVOICE_MATERIAL_ITEM = _spec(
    "A_SupplierInvoiceItemMaterial",
    ("SupplierInvoice", "FiscalYear", "SupplierInvoiceItem"),
    "SupplierInvoice FiscalYear SupplierInvoiceItem Material ValuationArea CompanyCode Plant "
    "InventoryValuationType TaxCode DocumentCurrency SupplierInvoiceItemAmount:n QuantityUnit "
    "Quantity:n DebitCreditCode",
)
INVOICE_PO_ITEM = _spec(
    "A_SuplrInvcItemPurOrdRef",
    ("SupplierInvoice", "FiscalYear", "SupplierInvoiceItem"),
    "SupplierInvoice FiscalYear SupplierInvoiceItem PurchaseOrder PurchaseOrderItem Plant "
    "DocumentCurrency SupplierInvoiceItemAmount:n PurchaseOrderQuantityUnit "
    "QuantityInPurchaseOrderUnit:n SupplierInvoiceItemText IsSubsequentDebitCredit TaxCode",
)
PURCHASE_ORDER = _spec(
    "A_PurchaseOrder",
    ("PurchaseOrder",),
    "PurchaseOrder CompanyCode PurchaseOrderType PurchasingDocumentDeletionCode "
    "PurchasingProcessingStatus CreatedByUser CreationDate:d LastChangeDateTime:o Supplier "
    "Language PaymentTerms PurchasingOrganization PurchasingGroup PurchaseOrderDate:d "
    "DocumentCurrency ExchangeRate:n",
    {"to_PurchaseOrderItem": ("A_PurchaseOrderItem", True)},
)
PURCHASE_ORDER_ITEM = _spec(
    "A_PurchaseOrderItem",
    ("PurchaseOrder", "PurchaseOrderItem"),
    "PurchaseOrder PurchaseOrderItem PurchasingDocumentDeletionCode PurchaseOrderItemText "
    "Plant StorageLocation MaterialGroup OrderQuantity:n PurchaseOrderQuantityUnit "
    "OrderPriceUnit DocumentCurrency NetPriceAmount:n NetPriceQuantity:n "
    "IsCompletelyDelivered:b IsFinallyInvoiced:b AccountAssignmentCategory Material",
    {
        "to_AccountAssignment": ("A_PurOrdAccountAssignment", True),
        "to_ScheduleLine": ("A_PurchaseOrderScheduleLine", True),
    },
)
PO_ACCOUNT_ASSIGNMENT = _spec(
    "A_PurOrdAccountAssignment",
    ("PurchaseOrder", "PurchaseOrderItem", "AccountAssignmentNumber"),
    "PurchaseOrder PurchaseOrderItem AccountAssignmentNumber CostCenter GLAccount Quantity:n "
    "PurchaseOrderQuantityUnit DocumentCurrency IsDeleted:b",
)
PO_SCHEDULE_LINE = _spec(
    "A_PurchaseOrderScheduleLine",
    ("PurchasingDocument", "PurchasingDocumentItem", "ScheduleLine"),
    "PurchasingDocument PurchasingDocumentItem ScheduleLine DelivDateCategory "
    "ScheduleLineDeliveryDate:d PurchaseOrderQuantityUnit ScheduleLineOrderQuantity:n",
)
BUSINESS_PARTNER = _spec(
    "A_BusinessPartner",
    ("BusinessPartner",),
    "BusinessPartner Customer Supplier BusinessPartnerCategory BusinessPartnerFullName "
    "BusinessPartnerGrouping BusinessPartnerName CreationDate:d CreationTime:t "
    "LastChangeDate:d LastChangeTime:t OrganizationBPName1 OrganizationBPName2 Industry "
    "IsMarkedForArchiving:b BusinessPartnerIsBlocked:b",
    {
        "to_Supplier": ("A_Supplier", False),
        "to_BusinessPartnerAddress": ("A_BusinessPartnerAddress", True),
        "to_BuPaIndustry": ("A_BuPaIndustry", True),
    },
)
SUPPLIER = _spec(
    "A_Supplier",
    ("Supplier",),
    "Supplier CreatedByUser CreationDate:d Customer DeletionIndicator:b PostingIsBlocked:b "
    "PurchasingIsBlocked:b SupplierAccountGroup SupplierFullName SupplierName VATRegistration "
    "Industry TaxNumber1",
    {"to_SupplierPurchasingOrg": ("A_SupplierPurchasingOrg", True)},
)
SUPPLIER_PURCHASING_ORG = _spec(
    "A_SupplierPurchasingOrg",
    ("Supplier", "PurchasingOrganization"),
    "Supplier PurchasingOrganization PurchaseOrderCurrency PaymentTerms PurchasingIsBlocked:b "
    "DeletionIndicator:b",
)
BP_ADDRESS = _spec(
    "A_BusinessPartnerAddress",
    ("BusinessPartner", "AddressID"),
    "BusinessPartner AddressID ValidityStartDate:o ValidityEndDate:o CityName Country "
    "PostalCode StreetName Language",
)
BP_INDUSTRY = _spec(
    "A_BuPaIndustry",
    ("IndustrySector", "IndustrySystemType", "BusinessPartner"),
    "IndustrySector IndustrySystemType BusinessPartner IsStandardIndustry IndustryKeyDescription",
)
PRODUCT = _spec(
    "A_Product",
    ("Product",),
    "Product ProductType CreationDate:d CreatedByUser LastChangeDate:d LastChangeDateTime:o "
    "IsMarkedForDeletion:b ProductGroup BaseUnit ExternalProductGroup IndustrySector Division",
    {
        "to_Description": ("A_ProductDescription", True),
        "to_Valuation": ("A_ProductValuation", True),
    },
)
PRODUCT_DESCRIPTION = _spec(
    "A_ProductDescription",
    ("Product", "Language"),
    "Product Language ProductDescription",
)
PRODUCT_VALUATION = _spec(
    "A_ProductValuation",
    ("Product", "ValuationArea", "ValuationType"),
    "Product ValuationArea ValuationType ValuationClass PriceDeterminationControl "
    "StandardPrice:n PriceUnitQty:n InventoryValuationProcedure IsMarkedForDeletion:b "
    "MovingAveragePrice:n Currency",
)
MATERIAL_STOCK = _spec(
    "A_MaterialStock",
    ("Material",),
    "Material MaterialBaseUnit",
    {"to_MatlStkInAcctMod": ("A_MatlStkInAcctMod", True)},
)
STOCK_IN_ACCOUNT_MODEL = _spec(
    "A_MatlStkInAcctMod",
    (
        "Material",
        "Plant",
        "StorageLocation",
        "Batch",
        "Supplier",
        "Customer",
        "WBSElementInternalID",
        "SDDocument",
        "SDDocumentItem",
        "InventorySpecialStockType",
        "InventoryStockType",
    ),
    "Material Plant StorageLocation Batch Supplier Customer WBSElementInternalID SDDocument "
    "SDDocumentItem InventorySpecialStockType InventoryStockType MaterialBaseUnit "
    "MatlWrhsStkQtyInMatlBaseUnit:n",
)
STOCK_AT_KEY_DATE = _spec(
    "YY1_StockAtKeyDate",
    ("Material", "Plant", "StorageLocation", "InventoryStockType"),
    "Material Plant StorageLocation InventoryStockType InventorySpecialStockType "
    "MaterialBaseUnit MatlWrhsStkQtyInMatlBaseUnit:n",
)

SPECS: dict[str, EntitySpec] = {
    spec.name: spec
    for spec in (
        SUPPLIER_INVOICE,
        INVOICE_GL_ITEM,
        INVOICE_MATERIAL_ITEM,
        INVOICE_PO_ITEM,
        PURCHASE_ORDER,
        PURCHASE_ORDER_ITEM,
        PO_ACCOUNT_ASSIGNMENT,
        PO_SCHEDULE_LINE,
        BUSINESS_PARTNER,
        SUPPLIER,
        SUPPLIER_PURCHASING_ORG,
        BP_ADDRESS,
        BP_INDUSTRY,
        PRODUCT,
        PRODUCT_DESCRIPTION,
        PRODUCT_VALUATION,
        MATERIAL_STOCK,
        STOCK_IN_ACCOUNT_MODEL,
        STOCK_AT_KEY_DATE,
    )
}
# service -> entity sets addressable at its root
SERVICES: dict[str, tuple[str, ...]] = {
    "API_SUPPLIERINVOICE_PROCESS_SRV": ("A_SupplierInvoice",),
    "API_PURCHASEORDER_PROCESS_SRV": ("A_PurchaseOrder",),
    "API_BUSINESS_PARTNER": ("A_BusinessPartner", "A_Supplier"),
    "API_PRODUCT_SRV": ("A_Product", "A_ProductDescription", "A_ProductValuation"),
    "API_MATERIAL_STOCK_SRV": ("A_MaterialStock", "A_MatlStkInAcctMod"),
    "YY1_STOCKATKEYDATE_CDS": ("YY1_StockAtKeyDate",),
}


# $filter: tokens, syntax tree, evaluation

_FILTER_TOKEN = re.compile(
    r"\s*(?:(?P<typed>(?:datetimeoffset|datetime|guid|time)'[^']*')"
    r"|(?P<string>'(?:[^']|'')*')"
    r"|(?P<number>-?\d+(?:\.\d+)?[MmDdLlFf]?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<paren>[()]))"
)
_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_FLIPPED = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}


@dataclasses.dataclass(frozen=True)
class Comparison:
    prop: str
    op: str
    value: Any


@dataclasses.dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    left: Any
    right: Any


@dataclasses.dataclass(frozen=True)
class Negation:
    operand: Any


@dataclasses.dataclass(frozen=True)
class _Literal:
    value: Any


def parse_odata_datetime(text: str) -> dt.datetime:
    """`2026-11-26T00:00[:00[.fffffff]][Z|+hh:mm]` as a datetime (aware when an offset is given)."""
    match = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?(Z|[+-]\d{2}:\d{2})?",
        text,
    )
    if not match:
        raise ValueError(f"not an OData date/time: {text!r}")
    day, hour, minute, second, fraction, zone = match.groups()
    value = dt.datetime.combine(
        dt.date.fromisoformat(day),
        dt.time(int(hour), int(minute), int(second or 0), int((fraction or "0").ljust(6, "0")[:6])),
    )
    if zone == "Z":
        return value.replace(tzinfo=_UTC)
    if zone:
        sign = 1 if zone[0] == "+" else -1
        offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        return value.replace(tzinfo=dt.timezone(sign * offset))
    return value


class _FilterParser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text):
            if not text[position:].strip():
                break
            match = _FILTER_TOKEN.match(text, position)
            if not match:
                raise ODataError(
                    400, "/IWBEP/CM_MGW_RT/022", f"Invalid filter: {text[position:]!r}"
                )
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.index = 0

    def parse(self) -> Any:
        node = self._or()
        if self.index != len(self.tokens):
            raise ODataError(400, "/IWBEP/CM_MGW_RT/022", "Invalid filter: unexpected tokens")
        return node

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.index] if self.index < len(self.tokens) else ("end", "")

    def _word(self, word: str) -> bool:
        kind, value = self._peek()
        if kind == "name" and value == word:
            self.index += 1
            return True
        return False

    def _or(self) -> Any:
        node = self._and()
        while self._word("or"):
            node = BoolOp("or", node, self._and())
        return node

    def _and(self) -> Any:
        node = self._unary()
        while self._word("and"):
            node = BoolOp("and", node, self._unary())
        return node

    def _unary(self) -> Any:
        if self._word("not"):
            return Negation(self._unary())
        if self._peek() == ("paren", "("):
            self.index += 1
            node = self._or()
            if self._peek() != ("paren", ")"):
                raise ODataError(400, "/IWBEP/CM_MGW_RT/022", "Invalid filter: missing ')'")
            self.index += 1
            return node
        left = self._operand()
        kind, op = self._peek()
        if kind != "name" or op not in _COMPARISONS:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/022", "Invalid filter: comparison expected")
        self.index += 1
        right = self._operand()
        if isinstance(left, str) and isinstance(right, _Literal):
            return Comparison(left, op, right.value)
        if isinstance(right, str) and isinstance(left, _Literal):
            return Comparison(right, _FLIPPED[op], left.value)
        raise ODataError(400, "/IWBEP/CM_MGW_RT/022", "Invalid filter: property vs. literal only")

    def _operand(self) -> str | _Literal:
        kind, value = self._peek()
        self.index += 1
        if kind == "string":
            return _Literal(value[1:-1].replace("''", "'"))
        if kind == "typed":
            prefix, _, rest = value.partition("'")
            inner = rest[:-1]
            try:
                if prefix in ("datetime", "datetimeoffset"):
                    parsed = parse_odata_datetime(inner)
                    if prefix == "datetimeoffset" and parsed.tzinfo is None:
                        raise ValueError("datetimeoffset needs an offset")
                    return _Literal(parsed)
            except ValueError as error:
                raise ODataError(400, "/IWBEP/CM_MGW_RT/022", str(error)) from None
            return _Literal(inner)
        if kind == "number":
            return _Literal(Decimal(value.rstrip("MmDdLlFf")))
        if kind == "name":
            if value in ("true", "false"):
                return _Literal(value == "true")
            if value == "null":
                return _Literal(None)
            return value
        raise ODataError(400, "/IWBEP/CM_MGW_RT/022", "Invalid filter: operand expected")


def parse_filter(text: str | None, spec: EntitySpec) -> Any:
    """The $filter syntax tree, checked against the entity's properties."""
    if not text:
        return None
    tree = _FilterParser(text).parse()
    for comparison in _comparisons(tree):
        if comparison.prop not in spec.properties:
            raise ODataError(
                400,
                "/IWBEP/CM_MGW_RT/021",
                f"Property '{comparison.prop}' not found in type '{spec.type_name}'",
            )
    return tree


def _comparisons(node: Any) -> Iterable[Comparison]:
    if isinstance(node, Comparison):
        yield node
    elif isinstance(node, BoolOp):
        yield from _comparisons(node.left)
        yield from _comparisons(node.right)
    elif isinstance(node, Negation):
        yield from _comparisons(node.operand)


def _comparable(value: Any, edm: str) -> Any:
    if value is None:
        return None
    if edm == "Edm.DateTime" and isinstance(value, dt.datetime):
        return value.astimezone(_UTC).replace(tzinfo=None) if value.tzinfo else value
    if edm == "Edm.DateTimeOffset" and isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_UTC)
    return value


def matches(node: Any, entity: Entity) -> bool:
    """Evaluate a $filter tree against one entity."""
    if node is None:
        return True
    if isinstance(node, BoolOp):
        if node.op == "and":
            return matches(node.left, entity) and matches(node.right, entity)
        return matches(node.left, entity) or matches(node.right, entity)
    if isinstance(node, Negation):
        return not matches(node.operand, entity)
    edm = entity.spec.properties[node.prop]
    left = _comparable(entity.values.get(node.prop), edm)
    right = _comparable(node.value, edm)
    if node.op == "eq":
        return left == right
    if node.op == "ne":
        return left != right
    if left is None or right is None:
        return False
    try:
        return {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[
            node.op
        ]
    except TypeError:
        raise ODataError(
            400, "/IWBEP/CM_MGW_RT/022", f"Incompatible literal for property '{node.prop}'"
        ) from None


FULL_RANGE = (dt.date.min, dt.date.max)


def date_range(node: Any, date_props: set[str], stamp_props: set[str]):
    """Dates a row may have when `node` holds and every change-stamp comparison is false.

    Returns (first, after) or None when no row qualifies that way; rows that qualify through
    a change stamp are found separately from the stamp's lower bound (`stamp_floor`).
    """
    if node is None:
        return FULL_RANGE
    if isinstance(node, BoolOp):
        left = date_range(node.left, date_props, stamp_props)
        right = date_range(node.right, date_props, stamp_props)
        if node.op == "and":
            if left is None or right is None:
                return None
            first, after = max(left[0], right[0]), min(left[1], right[1])
            return (first, after) if first < after else None
        if left is None or right is None:
            return left or right
        return (min(left[0], right[0]), max(left[1], right[1]))
    if isinstance(node, Negation):
        return FULL_RANGE
    if node.prop in stamp_props:
        return None
    if node.prop in date_props and isinstance(node.value, dt.datetime):
        day = node.value.date()
        return {
            "ge": (day, dt.date.max),
            "gt": (day, dt.date.max),
            "le": (dt.date.min, day + dt.timedelta(days=1)),
            "lt": (dt.date.min, day + dt.timedelta(days=1)),
            "eq": (day, day + dt.timedelta(days=1)),
        }.get(node.op, FULL_RANGE)
    return FULL_RANGE


def stamp_floor(
    node: Any, stamp_props: set[str], to_datetime: Callable[[Any], dt.datetime | None]
) -> dt.datetime | None:
    """The earliest change stamp any `stamp ge/gt/eq X` admits; `datetime.min` if unbounded."""
    floor: dt.datetime | None = None
    negated = False

    def walk(current: Any, under_not: bool) -> None:
        nonlocal floor, negated
        if isinstance(current, BoolOp):
            walk(current.left, under_not)
            walk(current.right, under_not)
        elif isinstance(current, Negation):
            walk(current.operand, True)
        elif isinstance(current, Comparison) and current.prop in stamp_props:
            value = to_datetime(current.value)
            if under_not or current.op not in ("ge", "gt", "eq") or value is None:
                negated = True
            else:
                floor = value if floor is None else min(floor, value)

    walk(node, False)
    if negated:
        return dt.datetime.min.replace(tzinfo=_UTC)
    return floor


# JSON rendering


def _ms(value: dt.datetime) -> int:
    naive = value.astimezone(_UTC).replace(tzinfo=None) if value.tzinfo else value
    return int((naive - _EPOCH) / dt.timedelta(milliseconds=1))


def render_value(value: Any, edm: str) -> Any:
    if value is None:
        return None
    if edm == "Edm.DateTime":
        if not isinstance(value, dt.datetime):
            value = dt.datetime.combine(value, dt.time())
        return f"/Date({_ms(value)})/"
    if edm == "Edm.DateTimeOffset":
        return f"/Date({_ms(value)}+0000)/"
    if edm == "Edm.Time":
        return f"PT{value.hour:02d}H{value.minute:02d}M{value.second:02d}S"
    if edm == "Edm.Decimal":
        return str(value)
    return value


def _key_predicate(entity: Entity) -> str:
    def literal(prop: str) -> str:
        value = entity.values.get(prop)
        if isinstance(value, dt.datetime):
            return f"datetime'{value.strftime('%Y-%m-%dT%H:%M:%S')}'"
        return "'" + quote(str(value if value is not None else "").replace("'", "''")) + "'"

    if len(entity.spec.keys) == 1:
        return literal(entity.spec.keys[0])
    return ",".join(f"{prop}={literal(prop)}" for prop in entity.spec.keys)


def render_entity(
    entity: Entity, service_url: str, service: str, expand: dict, select: set[str] | None
) -> dict[str, Any]:
    uri = f"{service_url}{entity.spec.name}({_key_predicate(entity)})"
    rendered: dict[str, Any] = {
        "__metadata": {"id": uri, "uri": uri, "type": f"{service}.{entity.spec.type_name}"}
    }
    for prop, edm in entity.spec.properties.items():
        if select is None or prop in select:
            rendered[prop] = render_value(entity.values.get(prop), edm)
    for navigation, (_, to_many) in entity.spec.navigations.items():
        if navigation in expand:
            child = entity.children.get(navigation)
            if to_many:
                rendered[navigation] = {
                    "results": [
                        render_entity(item, service_url, service, expand[navigation], None)
                        for item in (child or [])
                    ]
                }
            else:
                rendered[navigation] = (
                    render_entity(child, service_url, service, expand[navigation], None)
                    if isinstance(child, Entity)
                    else None
                )
        elif select is None or navigation in select:
            rendered[navigation] = {"__deferred": {"uri": f"{uri}/{navigation}"}}
    return rendered


def parse_expand(text: str | None, spec: EntitySpec) -> dict:
    """`a,a/b,c` as a tree {a: {b: {}}, c: {}}, checked against the navigation properties."""
    tree: dict = {}
    for path in filter(None, (part.strip() for part in (text or "").split(","))):
        node, current = tree, spec
        for step in path.split("/"):
            if step not in current.navigations:
                raise ODataError(
                    400,
                    "/IWBEP/CM_MGW_RT/004",
                    f"Property '{step}' is not a navigation property of '{current.type_name}'",
                )
            node = node.setdefault(step, {})
            current = SPECS[current.navigations[step][0]]
    return tree


def parse_orderby(text: str | None, spec: EntitySpec) -> list[tuple[str, bool]]:
    order = []
    for part in filter(None, (part.strip() for part in (text or "").split(","))):
        prop, _, direction = part.partition(" ")
        if prop not in spec.properties:
            raise ODataError(
                400,
                "/IWBEP/CM_MGW_RT/021",
                f"Property '{prop}' not found in type '{spec.type_name}'",
            )
        order.append((prop, direction.strip().lower() == "desc"))
    return order or [(key, False) for key in spec.keys]


def sort_entities(entities: list[Entity], order: list[tuple[str, bool]]) -> list[Entity]:
    result = list(entities)
    for prop, descending in reversed(order):
        # None sorts first ascending, as SAP HANA's NULLS FIRST default does.
        result.sort(
            key=lambda entity: (
                entity.values.get(prop) is not None,
                entity.values.get(prop) if entity.values.get(prop) is not None else 0,
            ),
            reverse=descending,
        )
    return result


def _rate_limited(fault: Fault) -> Response:
    return odata_error_response(
        429,
        "HTTP/429",
        "Too many requests; the rate limit is exceeded",
        Retry_After=str(max(1, math.ceil(fault.retry_after))),
    )


def odata_error_response(status: int, code: str, message: str, **headers: str) -> Response:
    body = {"error": {"code": code, "message": {"lang": "en", "value": message}}}
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


# Rendering the company as S/4HANA entities


def _stamp_text(value: dt.datetime | None) -> str:
    if value is None:
        return "0.0000000"
    utc = value.astimezone(_UTC)
    return utc.strftime("%Y%m%d%H%M%S") + f".{utc.microsecond:06d}0"


def parse_stamp_text(value: Any) -> dt.datetime | None:
    """SuplrInvcLstChgDteTmeTxt (`YYYYMMDDhhmmss.fffffff`, UTC) as a datetime; 0 means never."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_UTC)
    text = str(value or "").strip()
    match = re.fullmatch(r"(\d{14})(?:\.(\d{1,7}))?", text)
    if not match:
        return None
    stamp = dt.datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=_UTC)
    return stamp.replace(microsecond=int((match.group(2) or "0").ljust(6, "0")[:6]))


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time())


def _item_amount(value: Any) -> Any:
    """The unsigned amount; a broken value passes through as text, since the sandbox serves
    bad records on purpose."""
    try:
        return abs(Decimal(str(value)))
    except InvalidOperation:
        return value


def _invoice_entity(document_id: str, lines: list[dict]) -> Entity:
    """One supplier invoice from its lines (canonical field dicts, good or deliberately bad)."""
    first = lines[0]
    day = dt.date.fromisoformat(str(first["transaction_date"]))
    fiscal_year = str(day.year)
    document_type = str(first["document_type"])
    is_credit = document_type == SpendDocumentType.CREDIT_NOTE.value
    stamps = [_line_stamp(line.get("updated_at")) for line in lines]
    last_change = max((stamp for stamp in stamps if stamp is not None), default=None)
    gross = Decimal(0)
    gl_items: list[Entity] = []
    material_items: list[Entity] = []
    for line in lines:
        amount = line["amount"]
        try:
            gross += abs(Decimal(str(amount)))
        except InvalidOperation:
            pass
        common = {
            "SupplierInvoice": document_id,
            "FiscalYear": fiscal_year,
            "SupplierInvoiceItem": str(line["line_number"]),
            "CompanyCode": COMPANY_CODE,
            "DocumentCurrency": line["currency"],
            "SupplierInvoiceItemAmount": _item_amount(amount),
            "TaxCode": "V0",
            "DebitCreditCode": "H" if _is_negative(amount) else "S",
        }
        quantity = line.get("quantity")
        quantity_value = abs(Decimal(str(quantity))) if quantity not in (None, "") else None
        if line.get("material_id"):
            material_items.append(
                Entity(
                    INVOICE_MATERIAL_ITEM,
                    {
                        **common,
                        "Material": line["material_id"],
                        "ValuationArea": "WH01",
                        "Plant": "WH01",
                        "InventoryValuationType": "",
                        "QuantityUnit": line.get("unit") or "",
                        "Quantity": (quantity_value or Decimal(0)).quantize(Decimal("0.001")),
                    },
                )
            )
        else:
            gl_items.append(
                Entity(
                    INVOICE_GL_ITEM,
                    {
                        **common,
                        "CostCenter": "10101101",
                        "GLAccount": line.get("gl_account") or "",
                        "SupplierInvoiceItemText": line.get("description") or "",
                        "AssignmentReference": "",
                        "QuantityUnit": (line.get("unit") or "")
                        if quantity_value is not None
                        else "",
                        "Quantity": (quantity_value or Decimal(0)).quantize(Decimal("0.001")),
                    },
                )
            )
    is_card = document_type == SpendDocumentType.CARD_CHARGE.value
    values = {
        "SupplierInvoice": document_id,
        "FiscalYear": fiscal_year,
        "CompanyCode": COMPANY_CODE,
        "DocumentDate": _midnight(day),
        "PostingDate": _midnight(day),
        "CreationDate": _midnight(day),
        "SuplrInvcLstChgDteTmeTxt": _stamp_text(last_change),
        "SupplierInvoiceIDByInvcgParty": f"INV-{document_id[-6:]}",
        "InvoicingParty": first.get("vendor_id") or "",
        "DocumentCurrency": first["currency"],
        "InvoiceGrossAmount": gross,
        "DocumentHeaderText": "",
        "PaymentTerms": "0001",
        "AccountingDocumentType": CARD_CHARGE_DOCUMENT_TYPE if is_card else "RE",
        "SupplierInvoiceStatus": "5",
        "SuplrInvcIsCapitalGoodsRelated": False,
        "SupplierInvoiceIsCreditMemo": "X" if is_credit else "",
        "ReverseDocument": "",
        "ReverseDocumentFiscalYear": "0000",
        "IsReversal": False,
        "IsReversed": False,
    }
    return Entity(
        SUPPLIER_INVOICE,
        values,
        {
            "to_SupplierInvoiceItemGLAcct": gl_items,
            "to_SuplrInvcItemMaterial": material_items,
            "to_SuplrInvcItemPurOrdRef": [],
        },
    )


def _is_negative(value: Any) -> bool:
    try:
        return Decimal(str(value)) < 0
    except InvalidOperation:
        return False


def _line_stamp(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def _spend_line_fields(record: SpendRecord) -> dict:
    fields = record.model_dump(mode="python")
    fields["document_type"] = record.document_type.value
    fields["transaction_date"] = record.transaction_date.isoformat()
    return fields


def _purchase_order_item(
    line: PurchaseOrderLine, delivered: bool, invoiced: bool, deletion_code: str
) -> Entity:
    item_key = {"PurchaseOrder": line.purchase_order_id, "PurchaseOrderItem": str(line.line_number)}
    assignment = Entity(
        PO_ACCOUNT_ASSIGNMENT,
        {
            **item_key,
            "AccountAssignmentNumber": "1",
            "CostCenter": "10101101",
            "GLAccount": line.gl_account or "",
            "Quantity": line.quantity,
            "PurchaseOrderQuantityUnit": line.unit or "",
            "DocumentCurrency": line.currency,
            "IsDeleted": bool(deletion_code),
        },
    )
    schedule = Entity(
        PO_SCHEDULE_LINE,
        {
            "PurchasingDocument": line.purchase_order_id,
            "PurchasingDocumentItem": str(line.line_number),
            "ScheduleLine": "1",
            "DelivDateCategory": "1",
            "ScheduleLineDeliveryDate": _midnight(line.delivery_date)
            if line.delivery_date
            else None,
            "PurchaseOrderQuantityUnit": line.unit or "",
            "ScheduleLineOrderQuantity": line.quantity,
        },
    )
    return Entity(
        PURCHASE_ORDER_ITEM,
        {
            **item_key,
            "PurchasingDocumentDeletionCode": deletion_code,
            "PurchaseOrderItemText": line.description or "",
            "Plant": "WH01",
            "StorageLocation": STORAGE_LOCATION,
            "MaterialGroup": "",
            "OrderQuantity": line.quantity,
            "PurchaseOrderQuantityUnit": line.unit or "",
            "OrderPriceUnit": line.unit or "",
            "DocumentCurrency": line.currency,
            "NetPriceAmount": line.unit_price,
            "NetPriceQuantity": Decimal(1),
            "IsCompletelyDelivered": delivered,
            "IsFinallyInvoiced": invoiced,
            "AccountAssignmentCategory": "K",
            "Material": line.material_id or "",
        },
        {"to_AccountAssignment": [assignment], "to_ScheduleLine": [schedule]},
    )


def _removed_item(po_id: str, item_number: str, currency: str) -> Entity:
    """An item deleted from the company: SAP keeps it, flagged, with its values gone here."""
    return Entity(
        PURCHASE_ORDER_ITEM,
        {
            "PurchaseOrder": po_id,
            "PurchaseOrderItem": item_number,
            "PurchasingDocumentDeletionCode": "L",
            "PurchaseOrderItemText": "",
            "Plant": "WH01",
            "StorageLocation": STORAGE_LOCATION,
            "MaterialGroup": "",
            "OrderQuantity": Decimal(0),
            "PurchaseOrderQuantityUnit": "",
            "OrderPriceUnit": "",
            "DocumentCurrency": currency,
            "NetPriceAmount": Decimal(0),
            "NetPriceQuantity": Decimal(1),
            "IsCompletelyDelivered": False,
            "IsFinallyInvoiced": False,
            "AccountAssignmentCategory": "",
            "Material": "",
        },
        {"to_AccountAssignment": [], "to_ScheduleLine": []},
    )


def _purchase_order_entity(
    po_id: str,
    order_day: dt.date,
    header: PurchaseOrder | None,
    lines: list[PurchaseOrderLine],
    removed_items: list[tuple[str, dt.datetime]],
    deleted_at: dt.datetime | None = None,
) -> Entity:
    """A purchase order; with no header it was deleted and is served flagged, items too."""
    status = header.order_status if header else "open"
    deletion_code = "" if header else "L"
    currency = header.currency if header else (lines[0].currency if lines else "")
    items = [
        _purchase_order_item(
            line, status in ("received", "closed"), status == "closed", deletion_code
        )
        for line in lines
    ]
    items += [_removed_item(po_id, number, currency) for number, _ in removed_items]
    items.sort(key=lambda item: int(item.values["PurchaseOrderItem"]))
    stamps = [header.updated_at if header else deleted_at]
    stamps += [line.updated_at for line in lines] + [at for _, at in removed_items]
    values = {
        "PurchaseOrder": po_id,
        "CompanyCode": COMPANY_CODE,
        "PurchaseOrderType": "NB",
        "PurchasingDocumentDeletionCode": deletion_code,
        "PurchasingProcessingStatus": "05",
        "CreatedByUser": "ERP_SANDBOX",
        "CreationDate": _midnight(order_day),
        "LastChangeDateTime": max(stamp for stamp in stamps if stamp is not None),
        "Supplier": (header.vendor_id or "") if header else "",
        "Language": "EN",
        "PaymentTerms": "0001",
        "PurchasingOrganization": COMPANY_CODE,
        "PurchasingGroup": "001",
        "PurchaseOrderDate": _midnight(order_day),
        "DocumentCurrency": currency,
        "ExchangeRate": Decimal("1.00000"),
    }
    return Entity(PURCHASE_ORDER, values, {"to_PurchaseOrderItem": items})


def _business_partner_entity(vendor: Vendor | None, vendor_id: str, deleted: bool) -> Entity:
    created = vendor.updated_at if vendor and vendor.updated_at else None
    supplier = Entity(
        SUPPLIER,
        {
            "Supplier": vendor_id,
            "CreatedByUser": "ERP_SANDBOX",
            "CreationDate": _midnight(created.date()) if created else None,
            "Customer": "",
            "DeletionIndicator": deleted,
            "PostingIsBlocked": deleted,
            "PurchasingIsBlocked": deleted,
            "SupplierAccountGroup": "SUPL",
            "SupplierFullName": vendor.name if vendor else "",
            "SupplierName": vendor.name if vendor else "",
            "VATRegistration": (vendor.tax_id or "") if vendor else "",
            "Industry": "",
            "TaxNumber1": "",
        },
        {
            "to_SupplierPurchasingOrg": [
                Entity(
                    SUPPLIER_PURCHASING_ORG,
                    {
                        "Supplier": vendor_id,
                        "PurchasingOrganization": COMPANY_CODE,
                        "PurchaseOrderCurrency": (vendor.currency or "") if vendor else "",
                        "PaymentTerms": "0001",
                        "PurchasingIsBlocked": deleted,
                        "DeletionIndicator": deleted,
                    },
                )
            ]
            if vendor
            else []
        },
    )
    addresses = (
        [
            Entity(
                BP_ADDRESS,
                {
                    "BusinessPartner": vendor_id,
                    "AddressID": "1",
                    "ValidityStartDate": dt.datetime(2000, 1, 1, tzinfo=_UTC),
                    "ValidityEndDate": dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=_UTC),
                    "CityName": "",
                    "Country": vendor.country or "",
                    "PostalCode": "",
                    "StreetName": "",
                    "Language": "EN",
                },
            )
        ]
        if vendor and vendor.country
        else []
    )
    industries = (
        [
            Entity(
                BP_INDUSTRY,
                {
                    "IndustrySector": vendor.industry_code,
                    "IndustrySystemType": "0001",
                    "BusinessPartner": vendor_id,
                    "IsStandardIndustry": "X",
                    "IndustryKeyDescription": "",
                },
            )
        ]
        if vendor and vendor.industry_code
        else []
    )
    changed = vendor.updated_at if vendor else None
    values = {
        "BusinessPartner": vendor_id,
        "Customer": "",
        "Supplier": vendor_id,
        "BusinessPartnerCategory": "2",
        "BusinessPartnerFullName": vendor.name if vendor else "",
        "BusinessPartnerGrouping": "BP02",
        "BusinessPartnerName": vendor.name if vendor else "",
        "CreationDate": _midnight(created.date()) if created else None,
        "CreationTime": created.time() if created else dt.time(),
        "LastChangeDate": _midnight(changed.date()) if changed else None,
        "LastChangeTime": changed.time() if changed else dt.time(),
        "OrganizationBPName1": (vendor.name[:40] if vendor else ""),
        "OrganizationBPName2": (vendor.name[40:80] if vendor else ""),
        "Industry": "",
        "IsMarkedForArchiving": deleted,
        "BusinessPartnerIsBlocked": deleted,
    }
    return Entity(
        BUSINESS_PARTNER,
        values,
        {
            "to_Supplier": supplier,
            "to_BusinessPartnerAddress": addresses,
            "to_BuPaIndustry": industries,
        },
    )


def _valuations(
    material: Material, facts: dict[tuple[str, str], tuple[Decimal, str]]
) -> list[Entity]:
    account = _ACCOUNT_BY_NAICS.get(material.commodity_code or "", "5900")
    valuation_class = VALUATION_CLASS_BY_ACCOUNT.get(account, "3900")
    result = []
    for plant in LOCATIONS:
        unit_cost, currency = facts.get((material.material_id, plant), (Decimal(0), "EUR"))
        price = (unit_cost * PRICE_UNIT).quantize(Decimal("0.01"))
        result.append(
            Entity(
                PRODUCT_VALUATION,
                {
                    "Product": material.material_id,
                    "ValuationArea": plant,
                    "ValuationType": "",
                    "ValuationClass": valuation_class,
                    "PriceDeterminationControl": "2",
                    "StandardPrice": price,
                    "PriceUnitQty": PRICE_UNIT,
                    "InventoryValuationProcedure": "S",
                    "IsMarkedForDeletion": False,
                    "MovingAveragePrice": price,
                    "Currency": currency,
                },
            )
        )
    return result


def _product_entity(
    company: SandboxCompany,
    material: Material | None,
    product_id: str,
    facts: dict[tuple[str, str], tuple[Decimal, str]],
    deleted_at: dt.datetime | None = None,
) -> Entity:
    changed = material.updated_at if material else deleted_at
    values = {
        "Product": product_id,
        "ProductType": "ROH",
        "CreatedByUser": "ERP_SANDBOX",
        "CreationDate": _midnight(company.start),
        "LastChangeDate": _midnight(changed.date()) if changed else None,
        "LastChangeDateTime": changed,
        "IsMarkedForDeletion": material is None,
        "ProductGroup": (material.material_group or "") if material else "",
        "BaseUnit": (material.base_unit or "") if material else "",
        "ExternalProductGroup": (material.commodity_code or "") if material else "",
        "IndustrySector": "M",
        "Division": "00",
    }
    descriptions = (
        [
            Entity(
                PRODUCT_DESCRIPTION,
                {
                    "Product": product_id,
                    "Language": "EN",
                    "ProductDescription": material.description,
                },
            )
        ]
        if material
        else []
    )
    return Entity(
        PRODUCT,
        values,
        {
            "to_Description": descriptions,
            "to_Valuation": _valuations(material, facts) if material else [],
        },
    )


def _stock_rows(company: SandboxCompany, key_date: dt.date, spec: EntitySpec) -> list[Entity]:
    """Stock on the last business day at or before `key_date` (none before the company began)."""
    days = company.business_days(company.start, key_date)
    if not days:
        return []
    rows = []
    for snapshot in company.records(RecordKind.INVENTORY, days[-1]):
        values = {
            "Material": snapshot.material_id,
            "Plant": snapshot.location,
            "StorageLocation": STORAGE_LOCATION,
            "InventoryStockType": "01",
            "InventorySpecialStockType": "",
            "MaterialBaseUnit": snapshot.unit or "",
            "MatlWrhsStkQtyInMatlBaseUnit": snapshot.quantity.quantize(Decimal("0.001")),
        }
        if spec is STOCK_IN_ACCOUNT_MODEL:
            values.update(
                {
                    "Batch": "",
                    "Supplier": "",
                    "Customer": "",
                    "WBSElementInternalID": "",
                    "SDDocument": "",
                    "SDDocumentItem": "",
                }
            )
        rows.append(Entity(spec, values))
    return rows


class CompanyCatalog:
    """Builds the entities of one entity set that a query can match, from the company."""

    def __init__(self, company: SandboxCompany) -> None:
        self.company = company
        self._valuation_facts: dict[tuple[str, str], tuple[Decimal, str]] | None = None

    def valuation_facts(self) -> dict[tuple[str, str], tuple[Decimal, str]]:
        """(material, plant) -> (unit cost, currency); constant over time in the company."""
        if self._valuation_facts is None:
            first_day = self.company.business_days()[0]
            self._valuation_facts = {
                (snapshot.material_id, snapshot.location): (
                    snapshot.unit_cost or Decimal(0),
                    snapshot.currency or "EUR",
                )
                for snapshot in self.company.records(RecordKind.INVENTORY, first_day)
            }
        return self._valuation_facts

    def candidates(self, spec: EntitySpec, tree: Any, key_date: dt.date | None) -> list[Entity]:
        """A superset of the entities `tree` matches, built only for the days it can touch.

        Limitation: a filter that bounds neither the document date nor the change stamp (say,
        `SupplierInvoice eq '...'` alone) renders the company's whole history, which is slow.
        """
        builders = {
            "A_SupplierInvoice": self._supplier_invoices,
            "A_PurchaseOrder": self._purchase_orders,
            "A_BusinessPartner": lambda tree: self._business_partners(),
            "A_Supplier": lambda tree: [
                bp.children["to_Supplier"] for bp in self._business_partners()
            ],
            "A_Product": lambda tree: self._products(),
            "A_ProductDescription": lambda tree: [
                child
                for product in self._products()
                for child in product.children["to_Description"]
            ],
            "A_ProductValuation": lambda tree: [
                child for product in self._products() for child in product.children["to_Valuation"]
            ],
            "A_MaterialStock": lambda tree: self._material_stock(),
            "A_MatlStkInAcctMod": lambda tree: _stock_rows(
                self.company, self.current_day(), STOCK_IN_ACCOUNT_MODEL
            ),
        }
        if spec is STOCK_AT_KEY_DATE:
            assert key_date is not None
            return _stock_rows(self.company, key_date, STOCK_AT_KEY_DATE)
        return builders[spec.name](tree)

    def current_day(self) -> dt.date:
        """The sandbox's 'today': the wall clock, but never past the company's last day."""
        return min(dt.datetime.now(_UTC).date(), self.company.end)

    def _days(self, span: tuple[dt.date, dt.date] | None) -> list[dt.date]:
        if span is None:
            return []
        first = max(span[0], self.company.start)
        last = min(
            span[1] - dt.timedelta(days=1) if span[1] != dt.date.max else self.company.end,
            self.company.end,
        )
        days = []
        day = first
        while day <= last:
            days.append(day)
            day += dt.timedelta(days=1)
        return days

    def _supplier_invoices(self, tree: Any) -> list[Entity]:
        stamps = {"SuplrInvcLstChgDteTmeTxt"}
        span = date_range(tree, {"PostingDate", "DocumentDate", "CreationDate"}, stamps)
        floor = stamp_floor(tree, stamps, parse_stamp_text)
        record_days = set(self._days(span))
        bad_days = set(record_days)
        touched: set[str] = set()
        if floor is not None and floor.year == 1:
            record_days = bad_days = set(self._days(FULL_RANGE))
            span = FULL_RANGE
        elif floor is not None:
            for record in self.company.changed_since(RecordKind.SPEND, floor):
                record_days.add(record.transaction_date)
                touched.add(record.document_id)
            # Broken lines carry their own day's stamp, so only later days can qualify.
            bad_days.update(self._days((floor.date(), dt.date.max)))
        documents: dict[str, list[dict]] = {}
        for day in sorted(record_days):
            in_span = span is not None and span[0] <= day < span[1]
            for record in self.company.records(RecordKind.SPEND, day):
                # A touched document is served whole, as SAP serves an invoice with its items.
                if in_span or record.document_id in touched:
                    documents.setdefault(record.document_id, []).append(_spend_line_fields(record))
        for day in sorted(bad_days):
            for line in self.company.bad_spend_lines(day):
                documents.setdefault(line["document_id"], []).append(line)
        return [
            _invoice_entity(document_id, sorted(lines, key=lambda line: int(line["line_number"])))
            for document_id, lines in documents.items()
        ]

    def _purchase_orders(self, tree: Any) -> list[Entity]:
        date_props = {"PurchaseOrderDate", "CreationDate"}
        stamps = {"LastChangeDateTime"}
        span = date_range(tree, date_props, stamps)
        floor = stamp_floor(
            tree,
            stamps,
            lambda value: value if isinstance(value, dt.datetime) and value.tzinfo else None,
        )
        days = set(self._days(span))
        if floor is not None:
            if floor.year == 1:
                days.update(self._days(FULL_RANGE))
            else:
                for kind in (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE):
                    days.update(
                        record.order_date for record in self.company.changed_since(kind, floor)
                    )
        epoch = dt.datetime(1970, 1, 1, tzinfo=_UTC)
        deleted_headers = self.company.deleted_since(RecordKind.PURCHASE_ORDER, epoch)
        deleted_lines = self.company.deleted_since(RecordKind.PURCHASE_ORDER_LINE, epoch)
        if floor is not None:
            days.update(
                day
                for _, day, at in deleted_headers + deleted_lines
                if day is not None and at >= floor
            )
        entities = []
        for day in sorted(days):
            lines_by_po: dict[str, list[PurchaseOrderLine]] = {}
            for line in self.company.records(RecordKind.PURCHASE_ORDER_LINE, day):
                lines_by_po.setdefault(line.purchase_order_id, []).append(line)
            removed_by_po: dict[str, list[tuple[str, dt.datetime]]] = {}
            for key, line_day, at in deleted_lines:
                if line_day == day:
                    po_id, _, item = key.partition("/")
                    removed_by_po.setdefault(po_id, []).append((item, at))
            for header in self.company.records(RecordKind.PURCHASE_ORDER, day):
                po_id = header.purchase_order_id
                entities.append(
                    _purchase_order_entity(
                        po_id,
                        day,
                        header,
                        lines_by_po.pop(po_id, []),
                        removed_by_po.get(po_id, []),
                    )
                )
            for po_id, deleted_day, deleted_at in deleted_headers:
                if deleted_day == day:
                    entities.append(
                        _purchase_order_entity(
                            po_id,
                            day,
                            None,
                            lines_by_po.pop(po_id, []),
                            removed_by_po.get(po_id, []),
                            deleted_at,
                        )
                    )
        return entities

    def _business_partners(self) -> list[Entity]:
        entities = [
            _business_partner_entity(vendor, vendor.vendor_id, False)
            for vendor in self.company.vendors()
        ]
        epoch = dt.datetime(1970, 1, 1, tzinfo=_UTC)
        entities += [
            _business_partner_entity(None, key, True)
            for key, _, _ in self.company.deleted_since(RecordKind.VENDOR, epoch)
        ]
        return entities

    def _products(self) -> list[Entity]:
        facts = self.valuation_facts()
        entities = [
            _product_entity(self.company, material, material.material_id, facts)
            for material in self.company.materials()
        ]
        epoch = dt.datetime(1970, 1, 1, tzinfo=_UTC)
        entities += [
            _product_entity(self.company, None, key, facts, deleted_at=at)
            for key, _, at in self.company.deleted_since(RecordKind.MATERIAL, epoch)
        ]
        return entities

    def _material_stock(self) -> list[Entity]:
        rows = _stock_rows(self.company, self.current_day(), STOCK_IN_ACCOUNT_MODEL)
        by_material: dict[str, list[Entity]] = {}
        for row in rows:
            by_material.setdefault(row.values["Material"], []).append(row)
        return [
            Entity(
                MATERIAL_STOCK,
                {"Material": material, "MaterialBaseUnit": stock[0].values["MaterialBaseUnit"]},
                {"to_MatlStkInAcctMod": stock},
            )
            for material, stock in by_material.items()
        ]


# The WSGI application


class _Sessions:
    """Access tokens and ICM session cookies currently valid."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tokens = TokenStore(lifetime_seconds=TOKEN_LIFETIME_SECONDS)
        self.cookies: set[str] = set()

    def issue_cookie(self) -> str:
        cookie = secrets.token_urlsafe(24)
        with self._lock:
            self.cookies.add(cookie)
        return cookie

    def cookie_valid(self, cookie: str | None) -> bool:
        with self._lock:
            return cookie is not None and cookie in self.cookies

    def expire_all(self) -> None:
        self.tokens.revoke_all()
        with self._lock:
            self.cookies.clear()


SESSION_COOKIE = f"SAP_SESSIONID_{SYSTEM_ID}_{SAP_CLIENT}"
REALM = f"SAP NetWeaver Application Server [{SYSTEM_ID}/{SAP_CLIENT}]"


class S4HanaEmulator:
    """The OData services, the token endpoint and the fault plan behind one sandbox tenant."""

    def __init__(self, company: SandboxCompany, faults: FaultPlan, credentials: dict) -> None:
        self.catalog = CompanyCatalog(company)
        self.faults = faults
        self.username = credentials["username"]
        self.password = credentials["password"]
        self.sessions = _Sessions()
        self.url_map = Map(
            [
                Rule(TOKEN_PATH, endpoint="token", methods=["POST"]),
                Rule(f"{ODATA_ROOT}/<service>/", endpoint="service_document", methods=["GET"]),
                Rule(
                    f"{ODATA_ROOT}/<service>/<path:resource>", endpoint="resource", methods=["GET"]
                ),
            ]
        )

    def __call__(self, environ, start_response):
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        forced = fault_response(
            self.faults.take(), throttled=_rate_limited, token_expired=self.sessions.expire_all
        )
        if forced is not None:
            return forced
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, arguments = adapter.match()
        except HTTPException:
            return odata_error_response(404, "/IWFND/MED/170", "No service found for namespace")
        if endpoint == "token":
            return self.token(request)
        refused = self.authenticate(request)
        if refused is not None:
            return refused
        try:
            if endpoint == "service_document":
                return self.service_document(request, arguments["service"])
            return self.resource(request, arguments["service"], arguments["resource"])
        except ODataError as error:
            return odata_error_response(error.status, error.code, error.message)

    # Auth

    def _credentials_ok(self, user: str, password: str) -> bool:
        return secrets.compare_digest(user, self.username) and secrets.compare_digest(
            password, self.password
        )

    def token(self, request: Request) -> Response:
        pair = basic_credentials(request) or (
            request.form.get("client_id", ""),
            request.form.get("client_secret", ""),
        )
        if request.form.get("grant_type") != "client_credentials":
            return _json(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "Only client_credentials is supported",
                },
                400,
            )
        if not self._credentials_ok(*pair):
            return _json(
                {"error": "invalid_client", "error_description": "Client authentication failed"},
                401,
            )
        return _json(
            {
                "access_token": self.sessions.tokens.issue(),
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME_SECONDS,
                "scope": " ".join(f"{service}_0001" for service in SERVICES),
            },
            200,
        )

    def authenticate(self, request: Request) -> Response | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            if self.sessions.tokens.valid(header[7:].strip()):
                return None
            response = Response("Logon failed", status=401, mimetype="text/html")
            response.headers["WWW-Authenticate"] = (
                f'Bearer realm="{REALM}", error="invalid_token", '
                'error_description="The access token is invalid or has expired"'
            )
            return response
        pair = basic_credentials(request)
        if pair is not None and self._credentials_ok(*pair):
            request.environ["sandbox.new_cookie"] = self.sessions.issue_cookie()
            return None
        if pair is None and self.sessions.cookie_valid(request.cookies.get(SESSION_COOKIE)):
            return None
        response = Response("Logon failed", status=401, mimetype="text/html")
        response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
        return response

    # OData

    def _service_url(self, request: Request, service: str) -> str:
        return f"{request.host_url.rstrip('/')}{request.script_root}{ODATA_ROOT}/{service}/"

    def service_document(self, request: Request, service: str) -> Response:
        if service not in SERVICES:
            raise ODataError(404, "/IWFND/MED/170", f"No service found for namespace '{service}'")
        return self._answer(request, {"d": {"EntitySets": list(SERVICES[service])}})

    def resource(self, request: Request, service: str, resource: str) -> Response:
        if service not in SERVICES:
            raise ODataError(404, "/IWFND/MED/170", f"No service found for namespace '{service}'")
        count_only = resource.endswith("/$count")
        if count_only:
            resource = resource[: -len("/$count")]
        key_date = None
        match = re.fullmatch(r"(\w+)\(P_KeyDate=datetime'([^']+)'\)/Results", resource)
        if match:
            entity_set = match.group(1)
            try:
                key_date = parse_odata_datetime(match.group(2)).date()
            except ValueError as error:
                raise ODataError(400, "/IWBEP/CM_MGW_RT/022", str(error)) from None
        else:
            entity_set = resource
        # Limitation: reads by key (`A_PurchaseOrder('4500000001')`) and the item entity sets
        # are not served; the connector reaches items through $expand on their headers.
        if entity_set not in SERVICES[service] or (
            SPECS[entity_set] is STOCK_AT_KEY_DATE and key_date is None
        ):
            raise ODataError(
                404,
                "/IWBEP/CM_MGW_RT/020",
                f"Resource not found for segment '{resource}'",
            )
        spec = SPECS[entity_set]
        args = request.args
        tree = parse_filter(args.get("$filter"), spec)
        expand = parse_expand(args.get("$expand"), spec)
        order = parse_orderby(args.get("$orderby"), spec)
        select = (
            {part.strip() for part in args["$select"].split(",")} if args.get("$select") else None
        )
        entities = [
            entity
            for entity in self.catalog.candidates(spec, tree, key_date)
            if matches(tree, entity)
        ]
        if count_only:
            return Response(str(len(entities)), mimetype="text/plain")
        entities = sort_entities(entities, order)
        total = len(entities)
        try:
            skip = int(args.get("$skiptoken") or args.get("$skip") or 0)
            top = int(args["$top"]) if args.get("$top") else None
        except ValueError:
            raise ODataError(
                400, "/IWBEP/CM_MGW_RT/022", "Invalid $top, $skip or $skiptoken"
            ) from None
        wanted = total - skip if top is None else min(top, max(total - skip, 0))
        served = max(min(wanted, SERVER_PAGE_LIMIT), 0)
        page = entities[skip : skip + served]
        service_url = self._service_url(request, service)
        body: dict[str, Any] = {
            "results": [
                render_entity(entity, service_url, service, expand, select) for entity in page
            ]
        }
        if args.get("$inlinecount") == "allpages":
            body["__count"] = str(total)
        if served < wanted:
            next_args = {
                key: value
                for key, value in args.items(multi=False)
                if key not in ("$skip", "$skiptoken", "$top")
            }
            next_args["$skiptoken"] = str(skip + served)
            if top is not None:
                next_args["$top"] = str(top - served)
            query = "&".join(
                f"{quote(key, safe='$')}={quote(value, safe=ODATA_SAFE)}"
                for key, value in next_args.items()
            )
            body["__next"] = f"{service_url}{resource}?{query}"
        return self._answer(request, {"d": body})

    def _answer(self, request: Request, body: dict) -> Response:
        response = _json(body, 200)
        response.headers["dataserviceversion"] = "2.0"
        new_cookie = request.environ.get("sandbox.new_cookie")
        if new_cookie:
            response.set_cookie(
                SESSION_COOKIE, new_cookie, httponly=True, path=request.script_root or "/"
            )
        return response


def _json(body: Any, status: int) -> Response:
    # SAP's serializer escapes the slashes of /Date(...)/; decoders read both forms alike.
    text = re.sub(r'"/Date\((-?\d+(?:[+-]\d{4})?)\)/"', r'"\\/Date(\1)\\/"', json.dumps(body))
    return Response(text, status=status, mimetype="application/json")


def create_app(company: SandboxCompany, faults: FaultPlan, credentials: dict) -> S4HanaEmulator:
    """The WSGI application serving one sandbox S/4HANA tenant."""
    return S4HanaEmulator(company, faults, credentials)


__all__ = [
    "SANDBOX_CREDENTIALS",
    "SANDBOX_OPTIONS",
    "SECRET_FIELDS",
    "STOCK_KEY_DATE_ENTITY",
    "VALUATION_CLASS_BY_ACCOUNT",
    "create_app",
    "parse_stamp_text",
]
