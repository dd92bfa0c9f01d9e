"""Oracle ERP Cloud (Fusion) source: ADF REST resources of fscmRestApi 11.13.18.05.

Follows the REST API for Oracle Fusion Cloud Financials, Procurement and SCM (resource version
11.13.18.05): collections answer `{items, count, hasMore, limit, offset, links}`, paged with
`limit` (the server caps it at 500) and `offset`, filtered with `q`, ordered with
`orderBy=Key:asc` so offset paging is stable, and trimmed with `onlyData=true` and `fields`.
Children come inline with `expand` and, when an inline child says `hasMore`, from
`<id>/child/<name>`. Amounts are JSON numbers, read as exact decimals.

Every request carries `REST-Framework-Version: 3`. Fusion answers framework 1 when a client
names none, and framework 1 and 2 render an expanded child as a bare array with no `hasMore`;
framework 3 renders it as a collection that says whether rows are missing, and (like 2) reads
`q` as a row-match expression, so conditions are joined with `and`. A bare array still parses
(a pod or proxy that drops the header); one as long as a default page (25) is read again from
the child resource, since it may have been cut there.

Authentication is OAuth 2.0 client credentials against the pod's identity domain (IDCS/IAM)
through requests-oauthlib; the bearer token is renewed before it expires and on a 401.
Throttling is 429 with Retry-After.

Where things live: supplier invoices `invoices` (+ `invoiceLines`; Payables stores credit
memos negative, the sign is forced negative here whatever it is), `purchaseOrders` (+ `lines`),
`suppliers` (+ `sites` for the invoice currency), `itemsV2`, `inventoryOnhandBalances`.

Sources checked (stored copies, 2026):
- docs.oracle.com, REST API for Oracle Fusion Cloud Financials (farfa, 23d-25d): "Find Invoices
  that are Canceled" and "Get Specific Details for Invoices" example responses (InvoiceId as a
  number, InvoiceNumber, InvoiceCurrency, PaymentCurrency, InvoiceAmount, InvoiceDate and
  AccountingDate as `YYYY-MM-DD`, BusinessUnit, Supplier, SupplierNumber as a string,
  SupplierSite, InvoiceType "Standard", ValidationStatus "Canceled" with InvoiceAmount 0);
  "REST API Attributes" for Payables invoices (LastUpdateDate, CreationDate, ValidationStatus,
  CanceledDate, CanceledBy, ApprovalStatus, PaidStatus, PurchaseOrderNumber: no header
  cancellation flag); the invoiceLines child GET schema (a collection with items, count,
  hasMore, limit, offset, links); "Set the REST Framework Version" (default 1; 2 changes `q`;
  3 renders nested children as collections); the Supplier Portal cancelLine action (a canceled
  line's amount is set to zero).
- Public client code in the code index (a TypeScript Fusion financials client listing invoice
  and invoiceLines fields; a C# invoice-line model; Python and PL/SQL invoice payloads):
  invoiceLines LineNumber (a string in framework 9), LineType "Item", LineAmount, Quantity,
  UOM, UnitPrice, Item, ItemDescription, DistributionCombination, TrackAsAssetFlag (not the
  SOAP interface's AssetsTrackingFlag), CanceledFlag, DiscardedFlag, PurchaseOrderNumber,
  LastUpdateDate; invoiceDistributions with DistributionCombination.
- Public purchase-order clients in the code index (a Kotlin PO DTO, a Python procurement tool's
  test): POHeaderId, OrderNumber, ProcurementBU, Currency, Supplier, SupplierSite, and lines
  with LineNumber, Item, Quantity, UOM, Description, Price.

A canceled invoice is recognised by ValidationStatus "Canceled" or a CanceledDate; a canceled
or discarded line by its CanceledFlag or DiscardedFlag. Its amounts are read as stored (zero
after a real cancellation) and the records are kept as voided.

Limitation (not confirmed against a published payload): the "Credit memo", "Debit memo" and
"Expense report" meanings of InvoiceType (matched without regard to capitals); tax, freight and
miscellaneous lines are read as spend like item lines; on purchase orders SupplierNumber,
CurrencyCode, Ordered (the total), StatusCode and the lines' UOMCode and Amount; the PO line's
charge account (`POChargeAccount`, a distribution attribute) and `RequestedDeliveryDate` (a
schedule attribute), flattened onto the line here; the item's `CommodityCode`, the supplier's
NAICS code in `StandardIndustryClass`; all of `inventoryOnhandBalances`.
Limitation: Fusion keeps only current on-hand balances; day snapshots are read from
`inventoryOnhandBalances` filtered on a `SnapshotDate` that the pod's daily extract adds.
Limitation: the REST API reports no deletions; a deleted document vanishes from re-reads of its
day, so `deleted_source_ids` stays empty.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from typing import ClassVar

import requests
from pydantic import Field, PrivateAttr, ValidationError

from erp_connector_dagster.erp.auth import (
    client_credentials_token,
    token_expires_at,
    token_running_out,
)
from erp_connector_dagster.erp.base import (
    ChangeSummary,
    ErpSource,
    RecordBatch,
    SyncWindow,
    decimal_field,
    rejection_reason,
    required_field,
    resolve_secret,
)
from erp_connector_dagster.erp.http import (
    ErpHttpClient,
    ErpRequestError,
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

logger = logging.getLogger(__name__)

API_ROOT = "fscmRestApi/resources/11.13.18.05"
MAX_PAGE_SIZE = 500
# Framework 3 is the first to render an expanded child as a collection with `hasMore`; it also
# reads `q` as a row-match expression (framework 2 syntax). A pod answers framework 1 without it.
FRAMEWORK_VERSION = "3"
# An expanded child that came back as a plain array (framework 1 or 2) carries no `hasMore`:
# at this many rows (the server's default page) it may be cut short, so it is read again in full.
CHILD_DEFAULT_LIMIT = 25
CANCELED_VALIDATION_STATUS = "canceled"
# Keyed by the lower-cased meaning: pods and releases differ in capitals ("Credit memo",
# "Credit Memo").
INVOICE_TYPES = {
    "standard": SpendDocumentType.INVOICE,
    "debit memo": SpendDocumentType.INVOICE,
    "credit memo": SpendDocumentType.CREDIT_NOTE,
    "expense report": SpendDocumentType.CARD_CHARGE,
}
PO_STATUSES = {
    "OPEN": "open",
    "CLOSED FOR RECEIVING": "received",
    "CLOSED FOR INVOICING": "open",
    "CLOSED": "closed",
    "FINALLY CLOSED": "closed",
    "CANCELED": "canceled",
    "PENDING APPROVAL": "pending_approval",
    "INCOMPLETE": "pending_approval",
    "ON HOLD": "open",
}


@dataclasses.dataclass(frozen=True)
class _Resource:
    """A REST collection and what a kind needs from it."""

    name: str
    key: str
    date_attribute: str | None
    stamp_attribute: str
    expand: str | None
    parse: Callable[[OracleFusionSource, dict], list[CanonicalRecord | RejectedRecord]]


def _json(response: requests.Response) -> dict:
    # Amounts are JSON numbers: read them as exact decimals, never floats.
    return json.loads(response.text, parse_float=Decimal)


def fusion_timestamp(instant: dt.datetime) -> str:
    """An instant as the REST framework compares it: ISO 8601 in UTC with milliseconds."""
    return instant.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")


class OracleFusionSource(ErpSource):
    """An Oracle Fusion Cloud pod read through its REST resources with OAuth client credentials."""

    erp_type: ClassVar[str] = "oracle_fusion"
    api_version: ClassVar[str] = "fscmRestApi 11.13.18.05 (Fusion Cloud 24D)"

    client_id: str = Field(description="Confidential application client id in the identity domain.")
    client_secret: str = Field(repr=False, description="Confidential application client secret.")
    scope: str = Field(description="Scope of the Fusion resource (urn:opc:resource:fa:...).")
    token_url: str | None = Field(
        default=None,
        description="Identity domain token endpoint; defaults to <base_url>/oauth2/v1/token.",
    )
    natural_account_segment: int = Field(
        default=3, description="Position (1-based) of the natural account in a charge account."
    )

    _http: ErpHttpClient | None = PrivateAttr(default=None)
    _token_expires_at: float = PrivateAttr(default=0.0)
    # The instance the private state belongs to: a model_copy builds its own.
    _owner: int = PrivateAttr(default=0)

    # Connection

    @property
    def http(self) -> ErpHttpClient:
        if self._http is None or self._owner != id(self):
            self._owner = id(self)
            self._token_expires_at = 0.0
            self._http = self.build_http_client(self._fetch_token)
            self._http.session.headers["REST-Framework-Version"] = FRAMEWORK_VERSION
        return self._http

    def _fetch_token(self, session: requests.Session) -> None:
        token_url = self.token_url or f"{self.base_url.rstrip('/')}/oauth2/v1/token"
        # The grant goes out on its own: the identity domain needs none of the session's headers.
        token = client_credentials_token(
            None,
            self.connection_name,
            token_url,
            client_id=self.client_id,
            client_secret=resolve_secret(self.client_secret),
            scope=[self.scope],
            timeout=self.timeout_seconds,
        )
        self._token_expires_at = token_expires_at(token, 3600)
        session.headers["Authorization"] = f"Bearer {token['access_token']}"

    def _get(self, path: str, params: dict[str, str | int]) -> dict:
        if token_running_out(self._token_expires_at):
            self.http.reauthenticate()
        return _json(self.http.get(path, params=params))

    def _probe(self) -> None:
        self._get(f"{API_ROOT}/suppliers", {"limit": 1, "onlyData": "true", "fields": "SupplierId"})

    # Reading

    def fetch(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        resource = _RESOURCES[kind]
        params: dict[str, str | int] = {"onlyData": "true", "orderBy": f"{resource.key}:asc"}
        q = self._q(resource, window)
        if q:
            params["q"] = q
        if resource.expand:
            params["expand"] = resource.expand
        logger.info(
            "fusion %s sync started",
            kind.value,
            extra={"connection": self.connection_name, "window": str(window)},
        )
        seen: set[str] = set()
        total = 0
        for items in self._pages(resource.name, params):
            batch = self.records_from_items(kind, items, seen)
            total += len(batch.records)
            yield batch
        logger.info(
            "fusion %s sync read %d records",
            kind.value,
            total,
            extra={"connection": self.connection_name},
        )

    def changed_days(self, kind: RecordKind, since: dt.datetime) -> ChangeSummary:
        resource = _RESOURCES[kind]
        fields = [resource.stamp_attribute] + (
            [resource.date_attribute] if resource.date_attribute else []
        )
        params: dict[str, str | int] = {
            "onlyData": "true",
            "orderBy": f"{resource.key}:asc",
            "fields": ",".join(fields),  # only the dates: no lines, no amounts
            "q": self._q(resource, SyncWindow(changed_since=since)),
        }
        summary = ChangeSummary()
        for items in self._pages(resource.name, params):
            for item in items:
                if resource.date_attribute:
                    summary.days.add(_date(item[resource.date_attribute]))
                stamp = _instant(item[resource.stamp_attribute])
                if summary.high_watermark is None or stamp > summary.high_watermark:
                    summary.high_watermark = stamp
        return summary

    def records_from_items(
        self, kind: RecordKind, items: list[dict], seen: set[str] | None = None
    ) -> RecordBatch:
        """Canonical records (and rejects) from items of this kind's REST collection.

        `seen` holds natural keys (or rejected source ids) already read in this sync: offset
        paging can repeat an item when rows shift between pages, and the first one is kept.
        """
        seen = set() if seen is None else seen
        batch = RecordBatch()
        for item in items:
            for parsed in _RESOURCES[kind].parse(self, item):
                key = (
                    parsed.natural_key
                    if isinstance(parsed, CanonicalRecord)
                    else (parsed.source_id or "")
                )
                if key in seen:
                    continue
                seen.add(key)
                if isinstance(parsed, CanonicalRecord):
                    batch.records.append(parsed)
                else:
                    batch.rejected.append(parsed)
        stamps = [r.updated_at for r in batch.records if r.updated_at is not None]
        batch.high_watermark = max(stamps, default=None)
        return batch

    def _q(self, resource: _Resource, window: SyncWindow) -> str:
        conditions = []
        if resource.date_attribute and window.start is not None:
            conditions.append(f"{resource.date_attribute}>='{window.start.isoformat()}'")
        if resource.date_attribute and window.end is not None:
            conditions.append(f"{resource.date_attribute}<'{window.end.isoformat()}'")
        if window.changed_since is not None:
            conditions.append(
                f"{resource.stamp_attribute}>='{fusion_timestamp(window.changed_since)}'"
            )
        # Row-match syntax of framework 2 and later: conditions joined by `and`.
        return " and ".join(conditions)

    def _pages(self, name: str, params: dict[str, str | int]) -> Iterator[list[dict]]:
        """Each page's items in key order; the next offset is this one plus the count."""
        limit = max(1, min(self.page_size, MAX_PAGE_SIZE))
        offset = 0
        while True:
            page = self._get(f"{API_ROOT}/{name}", {**params, "limit": limit, "offset": offset})
            items = page.get("items", [])
            for item in items:
                self._complete_children(name, item)
            yield items
            if not page.get("hasMore") or not items:
                return
            offset += page.get("count", len(items))

    def _complete_children(self, name: str, item: dict) -> None:
        """An inline child may stop short of all its rows: fetch the rest of it.

        Framework 3 and later say so with the child collection's `hasMore`; a pod that answers
        framework 1 or 2 anyway sends a bare array, read again in full when it is as long as a
        default page (it may have been cut there).
        """
        resource = next((r for r in _RESOURCES.values() if r.name == name), None)
        if resource is None or not resource.expand or resource.expand not in item:
            return
        child = item[resource.expand]
        if isinstance(child, list):
            if len(child) < CHILD_DEFAULT_LIMIT:
                item[resource.expand] = {"items": child, "count": len(child), "hasMore": False}
                return
            child, rows = {}, []
        elif isinstance(child, dict) and isinstance(child.get("items", []), list):
            if not child.get("hasMore"):
                return
            rows = list(child.get("items", []))
        else:
            raise ErpRequestError(
                self.connection_name,
                f"{name} child {resource.expand} is neither a collection nor an array",
            )
        path = f"{API_ROOT}/{name}/{item[resource.key]}/child/{resource.expand}"
        while True:
            page = self._get(
                path, {"onlyData": "true", "offset": len(rows), "limit": MAX_PAGE_SIZE}
            )
            rows.extend(page.get("items", []))
            if not page.get("hasMore") or not page.get("items"):
                break
        item[resource.expand] = {**child, "items": rows, "count": len(rows), "hasMore": False}

    # Native to canonical

    def _reject(
        self, kind: RecordKind, item: dict, source_id: str, error: Exception, day: dt.date | None
    ) -> RejectedRecord:
        return RejectedRecord(
            connection=self.connection_name,
            kind=kind,
            source_id=source_id,
            reason=rejection_reason(error),
            payload=_plain(item),
            partition_date=day,
        )

    def _account(self, combination: str | None) -> str | None:
        if not combination:
            return None
        segments = combination.split(".")
        if len(segments) < self.natural_account_segment:
            raise ValueError(f"charge account {combination!r} has no natural account segment")
        return segments[self.natural_account_segment - 1]

    def _parse_invoice(self, invoice: dict) -> list[CanonicalRecord | RejectedRecord]:
        results: list[CanonicalRecord | RejectedRecord] = []
        try:
            lines = _child_items(invoice, "invoiceLines")
            if not lines:
                raise ValueError("invoice has no invoiceLines")
        except ValueError as error:
            # An invoice without readable lines would vanish from spend: keep it as a reject.
            return [
                self._reject(
                    RecordKind.SPEND,
                    invoice,
                    str(invoice.get("InvoiceId")),
                    error,
                    _maybe_date(invoice.get("InvoiceDate")),
                )
            ]
        for line in lines:
            line = line if isinstance(line, dict) else {"unreadable": line}
            source_id = f"{invoice.get('InvoiceId')}/{line.get('LineNumber')}"
            try:
                results.append(self._spend_line(invoice, line, source_id))
            except (ValueError, KeyError, InvalidOperation, ValidationError) as error:
                header = {k: v for k, v in invoice.items() if k != "invoiceLines"}
                results.append(
                    self._reject(
                        RecordKind.SPEND,
                        {**header, "line": line},
                        source_id,
                        error,
                        _maybe_date(invoice.get("InvoiceDate")),
                    )
                )
        return results

    def _spend_line(self, invoice: dict, line: dict, source_id: str) -> SpendRecord:
        invoice_type = invoice["InvoiceType"]
        document_type = INVOICE_TYPES.get(str(invoice_type).strip().lower())
        if document_type is None:
            raise ValueError(f"invoice type {invoice_type!r} is not spend")
        amount = decimal_field(line, "LineAmount")
        quantity = decimal_field(line, "Quantity", required=False)
        if document_type is SpendDocumentType.CREDIT_NOTE:
            amount = -abs(amount)
            quantity = -abs(quantity) if quantity is not None else None
        # A canceled invoice says so in its validation status and cancellation date; a canceled
        # or discarded line in its own flags (Payables zeroes the amounts of both).
        canceled = (
            str(invoice.get("ValidationStatus") or "").lower() == CANCELED_VALIDATION_STATUS
            or bool(invoice.get("CanceledDate"))
            or _flag(line, "CanceledFlag")
            or _flag(line, "DiscardedFlag")
        )
        return SpendRecord(
            connection=self.connection_name,
            source_id=source_id,
            updated_at=_instant(invoice["LastUpdateDate"]),
            status=RecordStatus.VOIDED if canceled else RecordStatus.ACTIVE,
            document_id=invoice["InvoiceNumber"],
            line_number=int(line["LineNumber"]),
            document_type=document_type,
            transaction_date=_date(invoice["InvoiceDate"]),
            vendor_id=invoice.get("SupplierNumber"),
            material_id=line.get("Item"),
            gl_account=self._account(line.get("DistributionCombination")),
            description=line.get("Description"),
            amount=amount,
            currency=required_field(invoice, "InvoiceCurrency"),
            quantity=quantity,
            unit=line.get("UOM"),
            is_capex=_flag(line, "TrackAsAssetFlag"),
            purchase_order_id=line.get("PurchaseOrderNumber"),
        )

    def _parse_order(self, order: dict) -> list[CanonicalRecord | RejectedRecord]:
        source_id = str(order.get("POHeaderId"))
        try:
            return [
                PurchaseOrder(
                    connection=self.connection_name,
                    source_id=source_id,
                    updated_at=_instant(order["LastUpdateDate"]),
                    status=RecordStatus.VOIDED
                    if order.get("StatusCode") == "CANCELED"
                    else (RecordStatus.ACTIVE),
                    purchase_order_id=order["OrderNumber"],
                    vendor_id=order.get("SupplierNumber"),
                    order_date=_date(order["CreationDate"]),
                    currency=required_field(order, "CurrencyCode"),
                    total_amount=decimal_field(order, "Ordered"),
                    order_status=PO_STATUSES.get(order.get("StatusCode", ""), "open"),
                )
            ]
        except (ValueError, KeyError, InvalidOperation, ValidationError) as error:
            return [
                self._reject(
                    RecordKind.PURCHASE_ORDER,
                    order,
                    source_id,
                    error,
                    _maybe_date(order.get("CreationDate")),
                )
            ]

    def _parse_order_lines(self, order: dict) -> list[CanonicalRecord | RejectedRecord]:
        results: list[CanonicalRecord | RejectedRecord] = []
        try:
            order_lines = _child_items(order, "lines")
        except ValueError as error:
            source_id = str(order.get("POHeaderId"))
            day = _maybe_date(order.get("CreationDate"))
            return [self._reject(RecordKind.PURCHASE_ORDER_LINE, order, source_id, error, day)]
        for line in order_lines:
            source_id = str(line.get("POLineId"))
            try:
                delivery = line.get("RequestedDeliveryDate")
                results.append(
                    PurchaseOrderLine(
                        connection=self.connection_name,
                        source_id=source_id,
                        updated_at=_instant(order["LastUpdateDate"]),
                        purchase_order_id=order["OrderNumber"],
                        line_number=int(line["LineNumber"]),
                        order_date=_date(order["CreationDate"]),
                        material_id=line.get("Item"),
                        description=line.get("Description"),
                        quantity=decimal_field(line, "Quantity"),
                        unit=line.get("UOMCode"),
                        unit_price=decimal_field(line, "Price"),
                        amount=decimal_field(line, "Amount"),
                        currency=required_field(order, "CurrencyCode"),
                        gl_account=self._account(line.get("POChargeAccount")),
                        delivery_date=_date(delivery) if delivery else None,
                    )
                )
            except (ValueError, KeyError, InvalidOperation, ValidationError) as error:
                header = {k: v for k, v in order.items() if k != "lines"}
                results.append(
                    self._reject(
                        RecordKind.PURCHASE_ORDER_LINE,
                        {**header, "line": line},
                        source_id,
                        error,
                        _maybe_date(order.get("CreationDate")),
                    )
                )
        return results

    def _parse_supplier(self, supplier: dict) -> list[CanonicalRecord | RejectedRecord]:
        source_id = str(supplier.get("SupplierId"))
        try:
            sites = _child_items(supplier, "sites")
            return [
                Vendor(
                    connection=self.connection_name,
                    source_id=source_id,
                    updated_at=_instant(supplier["LastUpdateDate"]),
                    vendor_id=supplier["SupplierNumber"],
                    name=required_field(supplier, "Supplier"),
                    country=supplier.get("TaxpayerCountryCode"),
                    industry_code=supplier.get("StandardIndustryClass"),
                    tax_id=supplier.get("TaxpayerId"),
                    currency=next(
                        (s["InvoiceCurrencyCode"] for s in sites if s.get("InvoiceCurrencyCode")),
                        None,
                    ),
                )
            ]
        except (ValueError, KeyError, ValidationError) as error:
            return [self._reject(RecordKind.VENDOR, supplier, source_id, error, None)]

    def _parse_item(self, item: dict) -> list[CanonicalRecord | RejectedRecord]:
        source_id = str(item.get("ItemId"))
        try:
            return [
                Material(
                    connection=self.connection_name,
                    source_id=source_id,
                    updated_at=_instant(item["LastUpdateDateTime"]),
                    material_id=item["ItemNumber"],
                    description=item.get("ItemDescription") or item["ItemNumber"],
                    material_group=item.get("ItemClass"),
                    base_unit=item.get("PrimaryUOMCode"),
                    commodity_code=item.get("CommodityCode"),
                )
            ]
        except (ValueError, KeyError, ValidationError) as error:
            return [self._reject(RecordKind.MATERIAL, item, source_id, error, None)]

    def _parse_onhand(self, balance: dict) -> list[CanonicalRecord | RejectedRecord]:
        source_id = str(balance.get("OnhandBalanceId"))
        try:
            return [
                InventorySnapshot(
                    connection=self.connection_name,
                    source_id=source_id,
                    updated_at=_instant(balance["LastUpdateDate"]),
                    snapshot_date=_date(balance["SnapshotDate"]),
                    material_id=balance["ItemNumber"],
                    location=required_field(balance, "Subinventory"),
                    quantity=decimal_field(balance, "OnhandQuantity"),
                    unit=balance.get("PrimaryUOMCode"),
                    unit_cost=decimal_field(balance, "UnitCost", required=False),
                    value=decimal_field(balance, "OnhandValue", required=False),
                    currency=balance.get("CurrencyCode"),
                )
            ]
        except (ValueError, KeyError, InvalidOperation, ValidationError) as error:
            return [
                self._reject(
                    RecordKind.INVENTORY,
                    balance,
                    source_id,
                    error,
                    _maybe_date(balance.get("SnapshotDate")),
                )
            ]


_RESOURCES: dict[RecordKind, _Resource] = {
    RecordKind.SPEND: _Resource(
        "invoices",
        "InvoiceId",
        "InvoiceDate",
        "LastUpdateDate",
        "invoiceLines",
        OracleFusionSource._parse_invoice,
    ),
    RecordKind.PURCHASE_ORDER: _Resource(
        "purchaseOrders",
        "POHeaderId",
        "CreationDate",
        "LastUpdateDate",
        None,
        OracleFusionSource._parse_order,
    ),
    RecordKind.PURCHASE_ORDER_LINE: _Resource(
        "purchaseOrders",
        "POHeaderId",
        "CreationDate",
        "LastUpdateDate",
        "lines",
        OracleFusionSource._parse_order_lines,
    ),
    RecordKind.VENDOR: _Resource(
        "suppliers",
        "SupplierId",
        None,
        "LastUpdateDate",
        "sites",
        OracleFusionSource._parse_supplier,
    ),
    RecordKind.MATERIAL: _Resource(
        "itemsV2", "ItemId", None, "LastUpdateDateTime", None, OracleFusionSource._parse_item
    ),
    RecordKind.INVENTORY: _Resource(
        "inventoryOnhandBalances",
        "OnhandBalanceId",
        "SnapshotDate",
        "LastUpdateDate",
        None,
        OracleFusionSource._parse_onhand,
    ),
}


def _instant(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no offset")
    return parsed.astimezone(dt.timezone.utc)


def _date(value: str) -> dt.date:
    # A date attribute is "YYYY-MM-DD"; a date-time one is read as its UTC calendar day.
    if len(value) == 10:
        return dt.date.fromisoformat(value)
    return _instant(value).date()


def _maybe_date(value: str | None) -> dt.date | None:
    try:
        return _date(value) if value else None
    except ValueError:
        return None


def _child_items(item: dict, child: str) -> list[dict]:
    """Rows of an expanded child, whether a collection (framework 3+) or an array (1 and 2)."""
    value = item.get(child)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and isinstance(value.get("items", []), list):
        return value.get("items", [])
    raise ValueError(f"{child} is neither a collection nor an array")


def _flag(item: dict, name: str) -> bool:
    """A boolean attribute: JSON true/false, or null for not set."""
    value = item.get(name)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "y", "n"):
        return value.lower() in ("true", "y")
    raise ValueError(f"{name} {value!r} is not a boolean")


def _plain(item: dict) -> dict:
    """The item as plain JSON values, for a reject's payload."""
    return json.loads(json.dumps(item, default=str))
