"""SAP S/4HANA source: reads the OData v2 A2X APIs as a communication user.

Follows SAP S/4HANA's released OData v2 APIs (S/4HANA Cloud 2308 / on-premise 2022 shapes):
API_SUPPLIERINVOICE_PROCESS_SRV (A_SupplierInvoice with its G/L account, material and
purchase-order items), API_PURCHASEORDER_PROCESS_SRV (A_PurchaseOrder with items, account
assignments and schedule lines), API_BUSINESS_PARTNER (A_BusinessPartner with A_Supplier,
addresses and industries), API_PRODUCT_SRV (A_Product, descriptions, valuation) and
API_MATERIAL_STOCK_SRV (A_MatlStkInAcctMod). Payloads are `{"d": {"results": [...]}}` with
`/Date(ms)/` dates and decimals as strings; paging is `$top`/`$skip` over a key `$orderby`,
following `d.__next` whenever the server cuts a page short (server-driven paging).
A `d` that is neither a collection nor an entity is an error, never an empty page; an invoice
or purchase order whose item navigations came back deferred is rejected, not read as empty.

Auth is HTTP Basic or OAuth 2.0 client credentials with the communication user as client
(`/sap/bc/sec/oauth2/token`); a 401 renews the token once, a second 401 is an `ErpAuthError`.
Throttling is 429 (or 503) with Retry-After.

Change detection: purchase orders and products carry LastChangeDateTime; supplier invoices
carry their last change only as text (SuplrInvcLstChgDteTmeTxt, `YYYYMMDDhhmmss.fffffff`,
"0.0000000" when never changed), so an incremental read also takes every invoice created on or
after the cursor's day and every invoice posted within `lookback_days` of it. Business partners
change by date only (LastChangeDate). Stock has no change stamp at all, and
API_MATERIAL_STOCK_SRV knows only today's stock: a past day is read from a customer CDS view
over I_MaterialStock_2 with the parameter P_KeyDate, exposed as OData API
(`stock_key_date_entity`, `<View>(P_KeyDate=datetime'...')/Results`), and valued at the
A_ProductValuation price of each plant.

Mapping: credit memos (SupplierInvoiceIsCreditMemo 'X') become credit notes and credit (H)
items negative amounts; reversed and reversing invoices are kept with status voided;
purchase orders flagged for deletion (PurchasingDocumentDeletionCode) are reported in
`deleted_source_ids`, never as live records. Material items carry no G/L account in the API: it
is SAP's account determination from the product's valuation class, given here as
`valuation_class_accounts`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from pydantic import Field, PrivateAttr, ValidationError

from erp_connector_dagster.erp.auth import request_token
from erp_connector_dagster.erp.base import (
    ChangeSummary,
    ErpSource,
    RecordBatch,
    SyncWindow,
    later_stamp,
    rejection_reason,
    resolve_secret,
)
from erp_connector_dagster.erp.http import (
    ErpAuthError,
    ErpHttpClient,
    ErpRequestError,
    retry_after_seconds,
)
from erp_connector_dagster.records import (
    CanonicalRecord,
    InventorySnapshot,
    Material,
    PurchaseOrder,
    PurchaseOrderLine,
    RecordKind,
    RecordStatus,
    RejectedRecord,
    SpendDocumentType,
    SpendRecord,
    Vendor,
)

logger = logging.getLogger("erp_connector_dagster.erp.sap_s4hana")

UTC = dt.timezone.utc
ODATA_ROOT = "/sap/opu/odata/sap"
INVOICE_SERVICE = "API_SUPPLIERINVOICE_PROCESS_SRV"
PURCHASE_ORDER_SERVICE = "API_PURCHASEORDER_PROCESS_SRV"
PARTNER_SERVICE = "API_BUSINESS_PARTNER"
PRODUCT_SERVICE = "API_PRODUCT_SRV"
STOCK_SERVICE = "API_MATERIAL_STOCK_SRV"
INVOICE_ITEM_NAVIGATIONS = (
    "to_SupplierInvoiceItemGLAcct",
    "to_SuplrInvcItemMaterial",
    "to_SuplrInvcItemPurOrdRef",
)
PURCHASE_ORDER_EXPAND = (
    "to_PurchaseOrderItem,to_PurchaseOrderItem/to_AccountAssignment,"
    "to_PurchaseOrderItem/to_ScheduleLine"
)
PARTNER_EXPAND = (
    "to_Supplier,to_Supplier/to_SupplierPurchasingOrg,to_BusinessPartnerAddress,to_BuPaIndustry"
)
# Products looked up per request when resolving material items; keeps URLs well under 8 KB.
PRODUCTS_PER_LOOKUP = 40
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_DATE_PATTERN = re.compile(r"/Date\((-?\d+)(?:([+-])(\d{4}))?\)/")
_TIME_PATTERN = re.compile(r"PT(\d+)H(\d+)M(\d+)(?:\.\d+)?S")


# Reading OData v2 values


def odata_timestamp(value: Any) -> dt.datetime | None:
    """`/Date(ms)/` or `/Date(ms+0000)/` (or ISO 8601) as an aware UTC datetime."""
    if value in (None, ""):
        return None
    text = str(value)
    match = _DATE_PATTERN.fullmatch(text)
    if match:
        return _EPOCH + dt.timedelta(milliseconds=int(match.group(1)))
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def odata_date(value: Any) -> dt.date | None:
    """An Edm.DateTime holding a calendar date, as a date."""
    stamp = odata_timestamp(value)
    return stamp.date() if stamp is not None else None


def odata_time(value: Any) -> dt.time:
    """An Edm.Time (`PT13H52M33S`) as a time; midnight when empty."""
    match = _TIME_PATTERN.fullmatch(str(value or ""))
    if not match:
        return dt.time()
    hours, minutes, seconds = (int(part) for part in match.groups())
    return dt.time(hours % 24, minutes, seconds)


def sap_decimal(value: Any, field: str) -> Decimal:
    """An Edm.Decimal string as a Decimal, or a ValueError naming the field."""
    try:
        if value is None or isinstance(value, bool):
            raise InvalidOperation
        number = Decimal(str(value).strip())
        if not number.is_finite():
            raise InvalidOperation
        return number
    except InvalidOperation:
        raise ValueError(f"{field} is not a decimal: {value!r}") from None


def plain(number: Decimal) -> Decimal:
    """The decimal without trailing fractional zeros (quantities come padded to 3 places)."""
    if number == number.to_integral_value():
        return number.quantize(Decimal(1))
    return number.normalize()


def change_stamp_text(value: dt.datetime) -> str:
    """A UTC instant in SuplrInvcLstChgDteTmeTxt's text form, for comparisons in $filter."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y%m%d%H%M%S") + f".{utc.microsecond:06d}0"


def parse_change_stamp_text(value: Any) -> dt.datetime | None:
    """SuplrInvcLstChgDteTmeTxt as an aware datetime; None for "0.0000000" (never changed)."""
    match = re.fullmatch(r"(\d{14})(?:\.(\d{1,7}))?", str(value or "").strip())
    if not match:
        return None
    stamp = dt.datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    return stamp.replace(microsecond=int((match.group(2) or "0").ljust(6, "0")[:6]))


def odata_string(value: str) -> str:
    """A string literal for $filter: single quotes doubled, as OData requires."""
    return "'" + value.replace("'", "''") + "'"


def odata_datetime(day: dt.date) -> str:
    return f"datetime'{day.isoformat()}T00:00:00'"


def odata_datetimeoffset(value: dt.datetime) -> str:
    utc = value.astimezone(UTC)
    return f"datetimeoffset'{utc.strftime('%Y-%m-%dT%H:%M:%S')}.{utc.microsecond:06d}Z'"


def navigation_results(value: Any) -> list[dict]:
    """The entities of an expanded to-many navigation; none when it was left deferred."""
    if isinstance(value, dict) and isinstance(value.get("results"), list):
        return value["results"]
    if isinstance(value, list):
        return value
    return []


def is_deferred(value: Any) -> bool:
    """Whether a navigation property was left unexpanded (`{"__deferred": {"uri": ...}}`)."""
    return isinstance(value, dict) and "__deferred" in value


def odata_entities(envelope: Any) -> list[dict]:
    """The entities of an OData v2 JSON `d` object, whatever form the service chose.

    A collection is `{"results": [...]}` (with `__count` and `__next` beside it when asked
    for or paged), a bare list in the older verbose form, and a single entity (a key read,
    or a navigation to one) the entity object itself. Anything else is a ValueError, never an
    empty page.
    """
    if isinstance(envelope, list):
        entities = envelope
    elif isinstance(envelope, dict) and "results" in envelope:
        entities = envelope["results"]
        if not isinstance(entities, list):
            raise ValueError("d.results is not a list")
    elif isinstance(envelope, dict) and envelope:
        if not ("__metadata" in envelope or any(not key.startswith("__") for key in envelope)):
            raise ValueError("d holds neither results nor an entity")
        entities = [envelope]
    else:
        raise ValueError("d holds neither results nor an entity")
    if not all(isinstance(entity, dict) for entity in entities):
        raise ValueError("an entity in d.results is not an object")
    return entities


def odata_payload_entities(body: Any) -> list[dict]:
    """The entities of a whole OData v2 JSON response body (`{"d": ...}`)."""
    if not isinstance(body, dict) or "d" not in body:
        raise ValueError("not an OData v2 JSON payload: no top-level d")
    return odata_entities(body["d"])


def master_data_batch(
    connection: str,
    kind: RecordKind,
    rows: list[dict],
    to_record: Callable[[dict], CanonicalRecord | None],
    key_field: str,
    payload: Callable[[dict], dict],
    seen: set[str],
) -> RecordBatch:
    """One page of vendors or materials: a row flagged for deletion (mapped to None) becomes a
    deleted id, one that cannot be mapped a reject, one already passed on (`seen`) is skipped."""
    batch = RecordBatch()
    for row in rows:
        try:
            record = to_record(row)
        except (ValueError, ValidationError) as error:
            batch.rejected.append(
                RejectedRecord(
                    connection=connection,
                    kind=kind,
                    source_id=str(row.get(key_field) or "") or None,
                    reason=rejection_reason(error),
                    payload=payload(row),
                )
            )
            continue
        if record is None:
            batch.deleted_source_ids.append(str(row.get(key_field)))
        elif record.natural_key not in seen:
            seen.add(record.natural_key)
            batch.records.append(record)
            batch.high_watermark = later_stamp(batch.high_watermark, record.updated_at)
    return batch


def _scalars(entity: dict) -> dict:
    """The entity's own properties, for a rejected record's payload (JSON-safe)."""
    return {
        key: value
        for key, value in entity.items()
        if not key.startswith("__") and not isinstance(value, dict | list)
    }


def _is_flag(value: Any) -> bool:
    return value is True or str(value).strip().upper() in ("X", "TRUE")


def sap_throttle_signal(response: requests.Response) -> float | None:
    """429 always throttles; a 503 throttles when it says when to come back (ICM overload)."""
    if response.status_code == 429:
        return retry_after_seconds(response) or 0.0
    if response.status_code == 503 and response.headers.get("Retry-After"):
        return retry_after_seconds(response)
    return None


# Native -> canonical


@dataclasses.dataclass(frozen=True)
class MappingRules:
    """Customizing-dependent facts the mapping needs, taken from the source's configuration."""

    connection: str
    card_charge_document_types: frozenset[str] = frozenset()
    capex_gl_prefixes: tuple[str, ...] = ()
    valuation_class_accounts: dict[str, str] = dataclasses.field(default_factory=dict)
    language: str = "EN"
    industry_system_type: str = ""

    def is_capex(self, gl_account: str | None, asset_item: bool = False) -> bool:
        if asset_item:
            return True
        return bool(gl_account) and any(
            gl_account.startswith(prefix) for prefix in self.capex_gl_prefixes
        )


@dataclasses.dataclass
class ProductFacts:
    """What a material item needs from the product master: its text and valuation classes."""

    description: str | None
    valuation_classes: dict[str, str]  # valuation area -> valuation class


def product_facts(product: dict, language: str = "EN") -> ProductFacts:
    descriptions = navigation_results(product.get("to_Description"))
    text = next(
        (
            item.get("ProductDescription")
            for item in descriptions
            if item.get("Language") == language
        ),
        descriptions[0].get("ProductDescription") if descriptions else None,
    )
    classes = {
        item.get("ValuationArea", ""): item.get("ValuationClass", "")
        for item in navigation_results(product.get("to_Valuation"))
        if not item.get("ValuationType")
    }
    return ProductFacts(description=text or None, valuation_classes=classes)


def spend_records(
    invoice: dict, rules: MappingRules, products: dict[str, ProductFacts] | None = None
) -> tuple[list[SpendRecord], list[RejectedRecord]]:
    """The spend lines of one A_SupplierInvoice with expanded items, and the lines refused."""
    products = products or {}
    document_id = str(invoice.get("SupplierInvoice", ""))
    fiscal_year = str(invoice.get("FiscalYear", ""))
    items = [
        (navigation, item)
        for navigation in INVOICE_ITEM_NAVIGATIONS
        for item in navigation_results(invoice.get(navigation))
    ]
    expanded = [
        navigation
        for navigation in INVOICE_ITEM_NAVIGATIONS
        if navigation in invoice and not is_deferred(invoice.get(navigation))
    ]
    records: list[SpendRecord] = []
    rejected: list[RejectedRecord] = []

    def refuse(item: dict | None, reason: str, posting: dt.date | None) -> None:
        number = (item or {}).get("SupplierInvoiceItem", "")
        rejected.append(
            RejectedRecord(
                connection=rules.connection,
                kind=RecordKind.SPEND,
                source_id=f"{document_id}/{fiscal_year}/{number}".rstrip("/"),
                reason=reason,
                payload={**_scalars(invoice), "item": _scalars(item) if item else None},
                partition_date=posting,
            )
        )

    try:
        posting = odata_date(invoice.get("PostingDate"))
        if posting is None:
            raise ValueError("PostingDate is empty")
    except ValueError as error:
        for _, item in items or [(None, None)]:
            refuse(item, f"invoice header unreadable: {error}", None)
        return records, rejected
    if not expanded:
        # A header whose item tables were not read (deferred) has lines nobody saw: say so.
        refuse(None, "no item navigation expanded: the invoice's lines were not read", posting)
        return records, rejected
    if not items:
        refuse(None, f"no items in {', '.join(expanded)}: the invoice has no lines", posting)
        return records, rejected

    if _is_flag(invoice.get("SupplierInvoiceIsCreditMemo")):
        document_type = SpendDocumentType.CREDIT_NOTE
    elif invoice.get("AccountingDocumentType") in rules.card_charge_document_types:
        document_type = SpendDocumentType.CARD_CHARGE
    else:
        document_type = SpendDocumentType.INVOICE
    voided = _is_flag(invoice.get("IsReversed")) or _is_flag(invoice.get("IsReversal"))
    updated_at = parse_change_stamp_text(invoice.get("SuplrInvcLstChgDteTmeTxt"))
    seen_numbers: set[int] = set()
    for navigation, item in items:
        try:
            record = _spend_line(
                invoice,
                item,
                navigation,
                rules,
                products,
                document_type,
                posting,
                updated_at,
                RecordStatus.VOIDED if voided else RecordStatus.ACTIVE,
            )
        except (ValueError, ValidationError) as error:
            refuse(item, rejection_reason(error), posting)
            continue
        if record.line_number in seen_numbers:
            # Limitation: item numbers are unique per item table only; a clash is refused, not
            # renumbered, so the canonical line number stays the ERP's.
            refuse(item, f"item number {record.line_number} appears in two item tables", posting)
            continue
        seen_numbers.add(record.line_number)
        records.append(record)
    return records, rejected


def _spend_line(
    invoice: dict,
    item: dict,
    navigation: str,
    rules: MappingRules,
    products: dict[str, ProductFacts],
    document_type: SpendDocumentType,
    posting: dt.date,
    updated_at: dt.datetime | None,
    status: RecordStatus,
) -> SpendRecord:
    number = str(item.get("SupplierInvoiceItem", "")).strip()
    if not number.isdigit():
        raise ValueError(f"SupplierInvoiceItem is not a number: {number!r}")
    currency = str(item.get("DocumentCurrency") or invoice.get("DocumentCurrency") or "").strip()
    if not currency:
        raise ValueError("DocumentCurrency is empty")
    # The debit/credit code gives the direction; purchase-order items have none, and there
    # the credit memo flag does (a credit memo credits its items).
    debit_credit = item.get("DebitCreditCode")
    if debit_credit in ("S", "H"):
        sign = Decimal(-1) if debit_credit == "H" else Decimal(1)
    else:
        sign = Decimal(-1) if document_type is SpendDocumentType.CREDIT_NOTE else Decimal(1)
    amount = sap_decimal(item.get("SupplierInvoiceItemAmount"), "SupplierInvoiceItemAmount")
    material_id = gl_account = description = purchase_order_id = None
    if navigation == "to_SuplrInvcItemMaterial":
        material_id = str(item.get("Material") or "").strip() or None
        facts = products.get(material_id or "")
        if facts is not None:
            description = facts.description
            area = item.get("ValuationArea") or item.get("Plant") or ""
            gl_account = rules.valuation_class_accounts.get(facts.valuation_classes.get(area, ""))
        quantity_text, unit = item.get("Quantity"), item.get("QuantityUnit")
    elif navigation == "to_SuplrInvcItemPurOrdRef":
        purchase_order_id = str(item.get("PurchaseOrder") or "").strip() or None
        description = item.get("SupplierInvoiceItemText") or None
        quantity_text = item.get("QuantityInPurchaseOrderUnit")
        unit = item.get("PurchaseOrderQuantityUnit")
    else:
        gl_account = str(item.get("GLAccount") or "").strip() or None
        description = item.get("SupplierInvoiceItemText") or None
        quantity_text, unit = item.get("Quantity"), item.get("QuantityUnit")
    quantity = None
    if unit:
        quantity = sign * plain(abs(sap_decimal(quantity_text, "Quantity")))
    # Limitation: SupplierInvoice numbers are unique per fiscal year only; the canonical
    # document_id is the number alone (as in every other dialect), so a number range that
    # restarts each year would let two years' invoices share a document_id.
    return SpendRecord(
        connection=rules.connection,
        source_id=f"{invoice.get('SupplierInvoice')}/{invoice.get('FiscalYear')}/{number}",
        updated_at=updated_at,
        status=status,
        document_id=str(invoice.get("SupplierInvoice")),
        line_number=int(number),
        document_type=document_type,
        transaction_date=posting,
        vendor_id=str(invoice.get("InvoicingParty") or "").strip() or None,
        material_id=material_id,
        gl_account=gl_account,
        description=description,
        amount=sign * abs(amount),
        currency=currency,
        quantity=quantity,
        unit=unit or None,
        is_capex=rules.is_capex(gl_account),
        purchase_order_id=purchase_order_id,
    )


@dataclasses.dataclass
class PurchaseOrderParts:
    """One A_PurchaseOrder as canonical header and lines, with what it reports deleted."""

    header: PurchaseOrder | None = None
    lines: list[PurchaseOrderLine] = dataclasses.field(default_factory=list)
    deleted_header_ids: list[str] = dataclasses.field(default_factory=list)
    deleted_line_ids: list[str] = dataclasses.field(default_factory=list)
    rejected: list[RejectedRecord] = dataclasses.field(default_factory=list)


def purchase_order_records(purchase_order: dict, rules: MappingRules) -> PurchaseOrderParts:
    """Header and lines of one A_PurchaseOrder with expanded items."""
    parts = PurchaseOrderParts()
    po_id = str(purchase_order.get("PurchaseOrder", ""))
    items = navigation_results(purchase_order.get("to_PurchaseOrderItem"))
    if "to_PurchaseOrderItem" not in purchase_order or is_deferred(
        purchase_order.get("to_PurchaseOrderItem")
    ):
        # The header carries no total: without its items the order cannot be valued.
        parts.rejected.append(
            _po_reject(
                rules,
                RecordKind.PURCHASE_ORDER,
                po_id,
                purchase_order,
                None,
                "to_PurchaseOrderItem not expanded: the order's items and total were not read",
                _safe_date(purchase_order.get("PurchaseOrderDate")),
            )
        )
        return parts
    if purchase_order.get("PurchasingDocumentDeletionCode"):
        parts.deleted_header_ids.append(po_id)
        parts.deleted_line_ids.extend(f"{po_id}/{item.get('PurchaseOrderItem')}" for item in items)
        return parts
    try:
        order_date = odata_date(purchase_order.get("PurchaseOrderDate"))
        if order_date is None:
            raise ValueError("PurchaseOrderDate is empty")
        currency = str(purchase_order.get("DocumentCurrency") or "").strip()
        if not currency:
            raise ValueError("DocumentCurrency is empty")
        updated_at = odata_timestamp(purchase_order.get("LastChangeDateTime")) or odata_timestamp(
            purchase_order.get("CreationDate")
        )
    except ValueError as error:
        parts.rejected.append(
            _po_reject(
                rules, RecordKind.PURCHASE_ORDER, po_id, purchase_order, None, str(error), None
            )
        )
        return parts

    live_items = []
    for item in items:
        line_id = f"{po_id}/{item.get('PurchaseOrderItem')}"
        if item.get("PurchasingDocumentDeletionCode"):
            parts.deleted_line_ids.append(line_id)
            continue
        live_items.append(item)
        try:
            parts.lines.append(
                _purchase_order_line(item, rules, po_id, order_date, currency, updated_at)
            )
        except (ValueError, ValidationError) as error:
            parts.rejected.append(
                _po_reject(
                    rules,
                    RecordKind.PURCHASE_ORDER_LINE,
                    line_id,
                    purchase_order,
                    item,
                    rejection_reason(error),
                    order_date,
                )
            )
    if live_items and all(_is_flag(item.get("IsFinallyInvoiced")) for item in live_items):
        order_status = "closed"
    elif live_items and all(_is_flag(item.get("IsCompletelyDelivered")) for item in live_items):
        order_status = "received"
    else:
        order_status = "open"
    try:
        parts.header = PurchaseOrder(
            connection=rules.connection,
            source_id=po_id,
            updated_at=updated_at,
            purchase_order_id=po_id,
            vendor_id=str(purchase_order.get("Supplier") or "").strip() or None,
            order_date=order_date,
            currency=currency,
            total_amount=sum((line.amount for line in parts.lines), Decimal(0)),
            order_status=order_status,
        )
    except ValidationError as error:
        parts.rejected.append(
            _po_reject(
                rules,
                RecordKind.PURCHASE_ORDER,
                po_id,
                purchase_order,
                None,
                rejection_reason(error),
                order_date,
            )
        )
    return parts


def _safe_date(value: Any) -> dt.date | None:
    """A date for a rejected record's partition, or None when it cannot be read."""
    try:
        return odata_date(value)
    except ValueError:
        return None


def _po_reject(rules, kind, source_id, header, item, reason, day) -> RejectedRecord:
    return RejectedRecord(
        connection=rules.connection,
        kind=kind,
        source_id=source_id,
        reason=reason,
        payload={**_scalars(header), "item": _scalars(item) if item else None},
        partition_date=day,
    )


def _purchase_order_line(
    item: dict,
    rules: MappingRules,
    po_id: str,
    order_date: dt.date,
    currency: str,
    updated_at: dt.datetime | None,
) -> PurchaseOrderLine:
    number = str(item.get("PurchaseOrderItem", "")).strip()
    if not number.isdigit():
        raise ValueError(f"PurchaseOrderItem is not a number: {number!r}")
    quantity = plain(sap_decimal(item.get("OrderQuantity"), "OrderQuantity"))
    price = sap_decimal(item.get("NetPriceAmount"), "NetPriceAmount")
    price_quantity = sap_decimal(item.get("NetPriceQuantity") or "1", "NetPriceQuantity")
    if price_quantity == 0:
        raise ValueError("NetPriceQuantity is zero")
    unit_price = price / price_quantity
    # The net value SAP shows is rounded to the currency's places, which the price carries.
    amount = (quantity * unit_price).quantize(Decimal(1).scaleb(price.as_tuple().exponent))
    assignments = [
        entry
        for entry in navigation_results(item.get("to_AccountAssignment"))
        if not _is_flag(entry.get("IsDeleted"))
    ]
    gl_account = next(
        (str(entry["GLAccount"]) for entry in assignments if entry.get("GLAccount")), None
    )
    delivery_dates = [
        odata_date(line.get("ScheduleLineDeliveryDate"))
        for line in navigation_results(item.get("to_ScheduleLine"))
    ]
    delivery_dates = [day for day in delivery_dates if day is not None]
    return PurchaseOrderLine(
        connection=rules.connection,
        source_id=f"{po_id}/{number}",
        updated_at=updated_at,
        purchase_order_id=po_id,
        line_number=int(number),
        order_date=order_date,
        material_id=str(item.get("Material") or "").strip() or None,
        description=item.get("PurchaseOrderItemText") or None,
        quantity=quantity,
        unit=item.get("PurchaseOrderQuantityUnit") or None,
        unit_price=unit_price,
        amount=amount,
        currency=str(item.get("DocumentCurrency") or currency),
        gl_account=gl_account,
        delivery_date=min(delivery_dates) if delivery_dates else None,
    )


def vendor_record(partner: dict, rules: MappingRules) -> Vendor | None:
    """A supplier from A_BusinessPartner (with to_Supplier expanded); None if flagged deleted."""
    supplier = partner.get("to_Supplier") if isinstance(partner.get("to_Supplier"), dict) else {}
    supplier = supplier if "__deferred" not in supplier else {}
    if _is_flag(supplier.get("DeletionIndicator")) or _is_flag(partner.get("IsMarkedForArchiving")):
        return None
    vendor_id = str(partner.get("Supplier") or supplier.get("Supplier") or "").strip()
    if not vendor_id:
        raise ValueError("business partner is not a supplier")
    addresses = sorted(
        navigation_results(partner.get("to_BusinessPartnerAddress")),
        key=lambda address: str(address.get("AddressID", "")),
    )
    industries = navigation_results(partner.get("to_BuPaIndustry"))
    if rules.industry_system_type:
        industries = [
            entry
            for entry in industries
            if entry.get("IndustrySystemType") == rules.industry_system_type
        ]
    else:
        industries = [entry for entry in industries if _is_flag(entry.get("IsStandardIndustry"))]
    purchasing = sorted(
        navigation_results(supplier.get("to_SupplierPurchasingOrg")),
        key=lambda org: str(org.get("PurchasingOrganization", "")),
    )
    updated_at = _partner_stamp(partner)
    name = (
        supplier.get("SupplierName")
        or partner.get("BusinessPartnerName")
        or partner.get("BusinessPartnerFullName")
        or ""
    )
    return Vendor(
        connection=rules.connection,
        source_id=str(partner.get("BusinessPartner") or vendor_id),
        updated_at=updated_at,
        vendor_id=vendor_id,
        name=name,
        country=next((a.get("Country") for a in addresses if a.get("Country")), None),
        industry_code=next(
            (e.get("IndustrySector") for e in industries if e.get("IndustrySector")), None
        ),
        tax_id=supplier.get("VATRegistration") or supplier.get("TaxNumber1") or None,
        currency=next(
            (
                org.get("PurchaseOrderCurrency")
                for org in purchasing
                if org.get("PurchaseOrderCurrency")
            ),
            None,
        ),
    )


def _partner_stamp(partner: dict) -> dt.datetime | None:
    """LastChangeDate with LastChangeTime, else CreationDate with CreationTime (UTC)."""
    for day_field, time_field in (
        ("LastChangeDate", "LastChangeTime"),
        ("CreationDate", "CreationTime"),
    ):
        day = odata_date(partner.get(day_field))
        if day is not None:
            return dt.datetime.combine(day, odata_time(partner.get(time_field)), tzinfo=UTC)
    return None


def material_record(product: dict, rules: MappingRules) -> Material | None:
    """A material from A_Product (with to_Description expanded); None if flagged for deletion."""
    if _is_flag(product.get("IsMarkedForDeletion")):
        return None
    product_id = str(product.get("Product") or "").strip()
    if not product_id:
        raise ValueError("Product is empty")
    return Material(
        connection=rules.connection,
        source_id=product_id,
        updated_at=odata_timestamp(product.get("LastChangeDateTime")),
        material_id=product_id,
        description=product_facts(product, rules.language).description or "",
        material_group=product.get("ProductGroup") or None,
        base_unit=product.get("BaseUnit") or None,
        commodity_code=product.get("ExternalProductGroup") or None,
    )


def valuation_prices(valuations: Iterable[dict]) -> dict[tuple[str, str], tuple[Decimal, str]]:
    """(product, valuation area) -> (price per base unit, currency) from A_ProductValuation."""
    prices = {}
    for valuation in valuations:
        if valuation.get("ValuationType"):
            continue
        field = (
            "MovingAveragePrice"
            if valuation.get("InventoryValuationProcedure") == "V"
            else "StandardPrice"
        )
        try:
            price = sap_decimal(valuation.get(field), field)
            per = sap_decimal(valuation.get("PriceUnitQty") or "1", "PriceUnitQty") or Decimal(1)
        except ValueError:
            continue
        key = (str(valuation.get("Product")), str(valuation.get("ValuationArea")))
        prices[key] = (plain(price / per), str(valuation.get("Currency") or ""))
    return prices


def inventory_records(
    stock_rows: Iterable[dict],
    snapshot_date: dt.date,
    prices: dict[tuple[str, str], tuple[Decimal, str]],
    rules: MappingRules,
) -> tuple[list[InventorySnapshot], list[RejectedRecord]]:
    """Own stock per material and plant (all storage locations, batches and stock types)."""
    totals: dict[tuple[str, str], Decimal] = {}
    units: dict[tuple[str, str], str] = {}
    rejected = []
    for row in stock_rows:
        if row.get("InventorySpecialStockType"):
            continue  # consignment and other special stock is not the company's own
        key = (str(row.get("Material", "")), str(row.get("Plant", "")))
        try:
            quantity = sap_decimal(
                row.get("MatlWrhsStkQtyInMatlBaseUnit"), "MatlWrhsStkQtyInMatlBaseUnit"
            )
        except ValueError as error:
            rejected.append(
                RejectedRecord(
                    connection=rules.connection,
                    kind=RecordKind.INVENTORY,
                    source_id=f"{key[0]}/{key[1]}/{snapshot_date.isoformat()}",
                    reason=str(error),
                    payload=_scalars(row),
                    partition_date=snapshot_date,
                )
            )
            continue
        totals[key] = totals.get(key, Decimal(0)) + quantity
        units[key] = row.get("MaterialBaseUnit") or units.get(key, "")
    records = []
    for (material_id, plant), quantity in totals.items():
        quantity = plain(quantity)
        unit_cost, currency = prices.get((material_id, plant), (None, None))
        records.append(
            InventorySnapshot(
                connection=rules.connection,
                source_id=f"{material_id}/{plant}/{snapshot_date.isoformat()}",
                snapshot_date=snapshot_date,
                material_id=material_id,
                location=plant,
                quantity=quantity,
                unit=units.get((material_id, plant)) or None,
                unit_cost=unit_cost,
                value=(quantity * unit_cost).quantize(Decimal("0.01"))
                if unit_cost is not None
                else None,
                currency=currency or None,
            )
        )
    return records, rejected


# The resource


class SapS4HanaSource(ErpSource):
    """SAP S/4HANA (Cloud or on-premise) read through its OData v2 A2X APIs."""

    erp_type = "sap_s4hana"
    api_version = "OData v2 A2X (S/4HANA Cloud 2308 / on-premise 2022)"
    # The gateway answered, so the system is up even when it refuses the probe.
    refused_probe_is_reachable = True

    username: str = Field(description="Communication user (also the OAuth 2.0 client id).")
    password: str = Field(description="Its password (also the OAuth 2.0 client secret).")
    auth_method: str = Field(default="basic", description="'basic' or 'oauth2'.")
    token_path: str = Field(
        default="/sap/bc/sec/oauth2/token",
        description="OAuth 2.0 token endpoint: a path on base_url or a full URL.",
    )
    sap_client: str = Field(default="", description="sap-client to send, if not the default.")
    language: str = Field(default="EN", description="Language of product descriptions.")
    stock_key_date_entity: str = Field(
        default="",
        description="'<SERVICE>/<EntitySet>' of a custom CDS view over I_MaterialStock_2 "
        "with parameter P_KeyDate; without it only today's stock can be read.",
    )
    valuation_class_accounts: dict[str, str] = Field(
        default_factory=dict,
        description="Valuation class -> G/L account (account determination) for material items.",
    )
    card_charge_document_types: list[str] = Field(
        default_factory=list, description="Accounting document types of card charges."
    )
    capex_gl_prefixes: list[str] = Field(
        default_factory=list, description="G/L account prefixes that are capital expenditure."
    )
    industry_system_type: str = Field(
        default="", description="Industry system to read; empty takes the standard industry."
    )

    _client: ErpHttpClient | None = PrivateAttr(default=None)

    # Plumbing

    @property
    def rules(self) -> MappingRules:
        return MappingRules(
            connection=self.connection_name,
            card_charge_document_types=frozenset(self.card_charge_document_types),
            capex_gl_prefixes=tuple(self.capex_gl_prefixes),
            valuation_class_accounts=dict(self.valuation_class_accounts),
            language=self.language,
            industry_system_type=self.industry_system_type,
        )

    def _http(self) -> ErpHttpClient:
        if self._client is None:
            self._client = self._new_client(self.max_retries)
        return self._client

    def _new_client(self, max_retries: int) -> ErpHttpClient:
        return self.build_http_client(
            self._authenticate, sap_throttle_signal, max_retries=max_retries
        )

    def _credentials(self) -> tuple[str, str]:
        return resolve_secret(self.username), resolve_secret(self.password)

    def _authenticate(self, session: requests.Session) -> None:
        session.headers.pop("Authorization", None)
        if self.auth_method == "basic":
            session.auth = self._credentials()
            return
        if self.auth_method != "oauth2":
            raise ErpRequestError(self.connection_name, f"unknown auth_method {self.auth_method!r}")
        session.auth = None
        token_url = (
            self.token_path
            if self.token_path.startswith(("http://", "https://"))
            else (f"{self.base_url.rstrip('/')}/{self.token_path.lstrip('/')}")
        )
        response = request_token(
            session,
            token_url,
            data={"grant_type": "client_credentials"},
            auth=self._credentials(),
            timeout=self.timeout_seconds,
        )
        if response.status_code != 200:
            try:
                code = response.json().get("error", "")
            except ValueError:
                code = ""
            raise ErpAuthError(
                self.connection_name,
                f"OAuth token request refused ({response.status_code} {code})".rstrip(),
                response.status_code,
            )
        try:
            token = response.json()["access_token"]
        except (ValueError, KeyError, TypeError):
            raise ErpAuthError(
                self.connection_name, "token endpoint sent no access_token"
            ) from None
        session.headers["Authorization"] = f"Bearer {token}"

    def _service_path(self, service: str, resource: str = "") -> str:
        return f"{ODATA_ROOT}/{service}/{resource}"

    def _params(self, params: dict[str, str]) -> dict[str, str]:
        result = {**params, "$format": "json"}
        if self.sap_client:
            result["sap-client"] = self.sap_client
        return result

    def _get_d(self, path: str, params: dict[str, str] | None) -> dict:
        response = self._http().get(path, params=params)
        try:
            body = response.json()
            envelope = body["d"]
        except (ValueError, KeyError, TypeError):
            raise ErpRequestError(
                self.connection_name, f"GET {path.split('?')[0]} sent no OData payload"
            ) from None
        return envelope

    def _pages(self, service: str, resource: str, params: dict[str, str]) -> Iterator[list[dict]]:
        """Pages of entities: `$top`/`$skip` windows, each followed through `__next`."""
        path = self._service_path(service, resource)
        skip = 0
        while True:
            query = self._params({**params, "$top": str(self.page_size), "$skip": str(skip)})
            url: str | None = path
            received = 0
            while url is not None:
                envelope = self._get_d(url, query)
                try:
                    results = odata_entities(envelope)
                except ValueError as error:
                    raise ErpRequestError(
                        self.connection_name,
                        f"GET {path} sent an unreadable OData payload: {error}",
                    ) from None
                received += len(results)
                if results:
                    yield results
                url = envelope.get("__next") if isinstance(envelope, dict) else None
                query = None
            if received < self.page_size:
                return
            skip += received

    # ErpSource

    def _probe(self) -> None:
        """Read the business partner service document, retrying at most once."""
        client = self._new_client(max_retries=min(1, self.max_retries))
        client.get(self._service_path(PARTNER_SERVICE), params=self._params({}))

    def fetch(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        """Batches of `kind` in `window`; stock needs `stock_key_date_entity` for past days."""
        logger.info(
            "sync started",
            extra={
                "connection": self.connection_name,
                "kind": kind.value,
                "window": window.model_dump(),
            },
        )
        readers = {
            RecordKind.SPEND: self._fetch_spend,
            RecordKind.PURCHASE_ORDER: self._fetch_purchase_orders,
            RecordKind.PURCHASE_ORDER_LINE: self._fetch_purchase_orders,
            RecordKind.INVENTORY: self._fetch_inventory,
            RecordKind.VENDOR: self._fetch_vendors,
            RecordKind.MATERIAL: self._fetch_materials,
        }
        count = 0
        for batch in readers[kind](kind, window):
            count += len(batch.records)
            yield batch
        logger.info(
            "sync read %d %s records", count, kind.value, extra={"connection": self.connection_name}
        )

    def changed_days(self, kind: RecordKind, since: dt.datetime) -> ChangeSummary:
        """Days with records changed at or after `since`; master data has no days, only a mark."""
        window = SyncWindow(changed_since=since)
        summary = ChangeSummary()
        if kind is RecordKind.SPEND:
            params = {
                "$filter": self._spend_filter(window),
                "$select": "SupplierInvoice,FiscalYear,PostingDate,SuplrInvcLstChgDteTmeTxt",
                "$orderby": "SupplierInvoice,FiscalYear",
            }
            for page in self._pages(INVOICE_SERVICE, "A_SupplierInvoice", params):
                for invoice in page:
                    day = odata_date(invoice.get("PostingDate"))
                    if day is not None:
                        summary.days.add(day)
                    summary.high_watermark = later_stamp(
                        summary.high_watermark,
                        parse_change_stamp_text(invoice.get("SuplrInvcLstChgDteTmeTxt")),
                    )
        elif kind in (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE):
            params = {
                "$filter": self._purchase_order_filter(window),
                "$select": "PurchaseOrder,PurchaseOrderDate,LastChangeDateTime",
                "$orderby": "PurchaseOrder",
            }
            for page in self._pages(PURCHASE_ORDER_SERVICE, "A_PurchaseOrder", params):
                for purchase_order in page:
                    day = odata_date(purchase_order.get("PurchaseOrderDate"))
                    if day is not None:
                        summary.days.add(day)
                    summary.high_watermark = later_stamp(
                        summary.high_watermark,
                        odata_timestamp(purchase_order.get("LastChangeDateTime")),
                    )
        elif kind is RecordKind.INVENTORY:
            summary.days.update(window.snapshot_days(self.lookback_days))
        elif kind is RecordKind.VENDOR:
            params = {
                "$filter": self._vendor_filter(window),
                "$orderby": "BusinessPartner",
                "$select": "BusinessPartner,LastChangeDate,LastChangeTime,CreationDate,"
                "CreationTime",
            }
            for page in self._pages(PARTNER_SERVICE, "A_BusinessPartner", params):
                for partner in page:
                    summary.high_watermark = later_stamp(
                        summary.high_watermark, _partner_stamp(partner)
                    )
        else:
            params = {
                "$filter": self._material_filter(window),
                "$orderby": "Product",
                "$select": "Product,LastChangeDateTime",
            }
            for page in self._pages(PRODUCT_SERVICE, "A_Product", params):
                for product in page:
                    summary.high_watermark = later_stamp(
                        summary.high_watermark, odata_timestamp(product.get("LastChangeDateTime"))
                    )
        return summary

    # Filters

    def _spend_filter(self, window: SyncWindow) -> str | None:
        parts = []
        if window.start is not None:
            parts.append(f"PostingDate ge {odata_datetime(window.start)}")
        if window.end is not None:
            parts.append(f"PostingDate lt {odata_datetime(window.end)}")
        if window.changed_since is not None:
            since_day = window.changed_since.astimezone(UTC).date()
            lookback_day = since_day - dt.timedelta(days=self.lookback_days)
            parts.append(
                f"(SuplrInvcLstChgDteTmeTxt ge "
                f"{odata_string(change_stamp_text(window.changed_since))}"
                f" or CreationDate ge {odata_datetime(since_day)}"
                f" or PostingDate ge {odata_datetime(lookback_day)})"
            )
        return " and ".join(parts) or None

    def _purchase_order_filter(self, window: SyncWindow) -> str | None:
        parts = []
        if window.start is not None:
            parts.append(f"PurchaseOrderDate ge {odata_datetime(window.start)}")
        if window.end is not None:
            parts.append(f"PurchaseOrderDate lt {odata_datetime(window.end)}")
        if window.changed_since is not None:
            since_day = window.changed_since.astimezone(UTC).date()
            parts.append(
                f"(LastChangeDateTime ge {odata_datetimeoffset(window.changed_since)}"
                f" or CreationDate ge {odata_datetime(since_day)})"
            )
        return " and ".join(parts) or None

    # Readers

    def _fetch_spend(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        params = {
            "$orderby": "SupplierInvoice,FiscalYear",
            "$expand": ",".join(INVOICE_ITEM_NAVIGATIONS),
        }
        spend_filter = self._spend_filter(window)
        if spend_filter:
            params["$filter"] = spend_filter
        rules = self.rules
        products: dict[str, ProductFacts] = {}
        seen: set[str] = set()
        for page in self._pages(INVOICE_SERVICE, "A_SupplierInvoice", params):
            self._load_products(page, products)
            batch = RecordBatch()
            for invoice in page:
                records, rejected = spend_records(invoice, rules, products)
                batch.rejected.extend(rejected)
                for record in records:
                    if record.natural_key not in seen:
                        seen.add(record.natural_key)
                        batch.records.append(record)
                        batch.high_watermark = later_stamp(batch.high_watermark, record.updated_at)
            yield batch

    def _load_products(self, invoices: list[dict], products: dict[str, ProductFacts]) -> None:
        wanted = sorted(
            {
                str(item.get("Material"))
                for invoice in invoices
                for item in navigation_results(invoice.get("to_SuplrInvcItemMaterial"))
                if item.get("Material") and str(item.get("Material")) not in products
            }
        )
        for start in range(0, len(wanted), PRODUCTS_PER_LOOKUP):
            chunk = wanted[start : start + PRODUCTS_PER_LOOKUP]
            params = {
                "$filter": " or ".join(f"Product eq {odata_string(product)}" for product in chunk),
                "$expand": "to_Description,to_Valuation",
                "$orderby": "Product",
            }
            for page in self._pages(PRODUCT_SERVICE, "A_Product", params):
                for product in page:
                    products[str(product.get("Product"))] = product_facts(product, self.language)

    def _fetch_purchase_orders(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        params = {"$orderby": "PurchaseOrder", "$expand": PURCHASE_ORDER_EXPAND}
        po_filter = self._purchase_order_filter(window)
        if po_filter:
            params["$filter"] = po_filter
        rules = self.rules
        seen: set[str] = set()
        for page in self._pages(PURCHASE_ORDER_SERVICE, "A_PurchaseOrder", params):
            batch = RecordBatch()
            for purchase_order in page:
                parts = purchase_order_records(purchase_order, rules)
                if kind is RecordKind.PURCHASE_ORDER:
                    records: list[CanonicalRecord] = [parts.header] if parts.header else []
                    batch.deleted_source_ids.extend(parts.deleted_header_ids)
                else:
                    records = list(parts.lines)
                    batch.deleted_source_ids.extend(parts.deleted_line_ids)
                batch.rejected.extend(r for r in parts.rejected if r.kind is kind)
                for record in records:
                    if record.natural_key not in seen:
                        seen.add(record.natural_key)
                        batch.records.append(record)
                        batch.high_watermark = later_stamp(batch.high_watermark, record.updated_at)
            yield batch

    def _vendor_filter(self, window: SyncWindow) -> str:
        parts = ["Supplier ne ''"]
        if window.changed_since is not None:
            # Business partners keep their change date and time apart; the day is the filter.
            day = odata_datetime(window.changed_since.astimezone(UTC).date())
            parts.append(f"(LastChangeDate ge {day} or CreationDate ge {day})")
        return " and ".join(parts)

    def _material_filter(self, window: SyncWindow) -> str | None:
        if window.changed_since is None:
            return None
        return (
            f"LastChangeDateTime ge {odata_datetimeoffset(window.changed_since)} or "
            f"CreationDate ge {odata_datetime(window.changed_since.astimezone(UTC).date())}"
        )

    def _fetch_vendors(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        params = {
            "$filter": self._vendor_filter(window),
            "$orderby": "BusinessPartner",
            "$expand": PARTNER_EXPAND,
        }
        rules = self.rules
        seen: set[str] = set()
        for page in self._pages(PARTNER_SERVICE, "A_BusinessPartner", params):
            yield master_data_batch(
                self.connection_name,
                RecordKind.VENDOR,
                page,
                lambda partner: vendor_record(partner, rules),
                "BusinessPartner",
                _scalars,
                seen,
            )

    def _fetch_materials(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        params = {"$orderby": "Product", "$expand": "to_Description"}
        material_filter = self._material_filter(window)
        if material_filter:
            params["$filter"] = material_filter
        rules = self.rules
        seen: set[str] = set()
        for page in self._pages(PRODUCT_SERVICE, "A_Product", params):
            yield master_data_batch(
                self.connection_name,
                RecordKind.MATERIAL,
                page,
                lambda product: material_record(product, rules),
                "Product",
                _scalars,
                seen,
            )

    def _fetch_inventory(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        days = window.snapshot_days(self.lookback_days)
        if not days:
            return
        rules = self.rules
        if not self.stock_key_date_entity:
            # Limitation: API_MATERIAL_STOCK_SRV knows only current stock; without a key-date
            # view a past day cannot be read, so it is refused rather than filled with today's.
            today = dt.datetime.now(UTC).date()
            if days != [today]:
                raise ErpRequestError(
                    self.connection_name,
                    "API_MATERIAL_STOCK_SRV reports only current stock; configure "
                    "stock_key_date_entity to read stock on past days",
                )
        prices = self._valuation_prices()
        for day in days:
            if self.stock_key_date_entity:
                service, _, entity_set = self.stock_key_date_entity.partition("/")
                resource = f"{entity_set}(P_KeyDate={odata_datetime(day)})/Results"
                order = "Material,Plant,StorageLocation,InventoryStockType"
            else:
                service, resource = STOCK_SERVICE, "A_MatlStkInAcctMod"
                order = "Material,Plant,StorageLocation,Batch,InventoryStockType"
            rows = [
                row for page in self._pages(service, resource, {"$orderby": order}) for row in page
            ]
            records, rejected = inventory_records(rows, day, prices, rules)
            for start in range(0, max(len(records), 1), self.page_size):
                yield RecordBatch(
                    records=records[start : start + self.page_size],
                    rejected=rejected if start == 0 else [],
                )

    def _valuation_prices(self) -> dict[tuple[str, str], tuple[Decimal, str]]:
        params = {"$orderby": "Product,ValuationArea,ValuationType"}
        return valuation_prices(
            valuation
            for page in self._pages(PRODUCT_SERVICE, "A_ProductValuation", params)
            for valuation in page
        )


__all__ = [
    "MappingRules",
    "ProductFacts",
    "PurchaseOrderParts",
    "SapS4HanaSource",
    "inventory_records",
    "master_data_batch",
    "material_record",
    "is_deferred",
    "odata_date",
    "odata_entities",
    "odata_payload_entities",
    "odata_timestamp",
    "product_facts",
    "purchase_order_records",
    "spend_records",
    "valuation_prices",
    "vendor_record",
]
