"""Xero as an ERP source: Accounting API 2.0 (`/api.xro/2.0/`) with OAuth 2.0.

What is read, and from where:

* spend: `Invoices` of Type `ACCPAY` (bills), `CreditNotes` of Type `ACCPAYCREDIT` (supplier
  credit notes, stored positive and turned negative here) and `BankTransactions` of Type
  `SPEND` (card charges when paid from a credit-card bank account); drafts and bills awaiting
  approval are not spend yet and are skipped;
* purchase orders: `PurchaseOrders`, lines inline (Xero numbers no lines: they are numbered
  10, 20, 30 in document order, the usual purchase-order item numbering);
* vendors: `Contacts` where `IsSupplier==true`, archived ones included;
* materials: `Items`;
* on hand, today only: `Items` where `IsTrackedAsInventory` is true, `QuantityOnHand` and
  `TotalCostPool` (the value of the stock held, in the organisation's base currency). Xero
  keeps one quantity per item for the whole organisation: no locations, no units, no unit
  cost and no history, and it has no custom objects or tables to add a daily snapshot to.

Dates are `/Date(milliseconds+0000)/` (milliseconds in UTC, an offset naming local time);
a document's day is its `DateString` when given, the organisation's own calendar day. Lines
with a description alone carry no money and are passed over; a tax-inclusive line is taken
net of its `TaxAmount`, and one without it is rejected. Paging is `page` with `pageSize`
(line items only come with paged reads), ordered by the document id so pages do not shift;
the change filter is the `If-Modified-Since` header (inclusive, whole seconds). Deleted
documents stay listed with Status `DELETED` and become `deleted_source_ids`; voided ones are
kept with status voided.
Tokens come from the client-credentials grant of a Xero custom connection (30 minutes), and
every call names the organisation in the `xero-tenant-id` header (found through
`/connections` when not configured). Throttling is a 429 with `Retry-After` and
`X-Rate-Limit-Problem` (minute, day or app limit). Inventory is read for today only (see
`XeroSource.supported_kinds`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
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
    FirstSightings,
    LatestVersions,
    RecordBatch,
    RecordRejected,
    SyncWindow,
    required_decimal,
    resolve_secret,
)
from erp_connector_dagster.erp.http import (
    ErpAuthError,
    ErpHttpClient,
    ErpRequestError,
    RetryableError,
    retry_after_seconds,
    standard_throttle_signal,
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

DEFAULT_TOKEN_URL = "https://identity.xero.com/connect/token"
API_ROOT = "api.xro/2.0"
MAX_PAGE_SIZE = 1000
# collection: (Type filter, id field, number field)
SPEND_COLLECTIONS: dict[str, tuple[str, str, str]] = {
    "Invoices": ("ACCPAY", "InvoiceID", "InvoiceNumber"),
    "CreditNotes": ("ACCPAYCREDIT", "CreditNoteID", "CreditNoteNumber"),
    "BankTransactions": ("SPEND", "BankTransactionID", "Reference"),
}
NOT_YET_SPEND = frozenset({"DRAFT", "SUBMITTED"})
OPEN_ORDER_STATUSES = frozenset({"DRAFT", "SUBMITTED", "AUTHORISED"})
_XERO_DATE = re.compile(r"/Date\((-?\d+)([+-]\d{4})?\)/")


def parse_xero_date(value: object) -> dt.datetime | None:
    """A Xero `/Date(ms+hhmm)/` (or ISO 8601) value as a timezone-aware moment.

    The milliseconds count from the epoch in UTC; an offset after them names the local time
    the value was written in, so the moment keeps that offset (and its `date()` is the local
    day). An ISO value without an offset is taken as UTC.
    """
    if value in (None, ""):
        return None
    text = str(value).strip()
    match = _XERO_DATE.fullmatch(text)
    if match:
        zone = dt.timezone.utc
        if match[2] and match[2][1:] != "0000":
            hours, minutes = int(match[2][1:3]), int(match[2][3:])
            if hours > 23 or minutes > 59:
                raise RecordRejected(f"not a Xero date: {text[:40]!r}")
            offset = dt.timedelta(hours=hours, minutes=minutes)
            zone = dt.timezone(-offset if match[2][0] == "-" else offset)
        try:
            return dt.datetime.fromtimestamp(int(match[1]) / 1000, zone)
        except (OverflowError, OSError, ValueError):
            raise RecordRejected(f"not a Xero date: {text[:40]!r}") from None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RecordRejected(f"not a Xero date: {text[:40]!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _day(value: object, name: str) -> dt.date:
    moment = parse_xero_date(value)
    if moment is None:
        raise RecordRejected(f"{name} is missing")
    return moment.date()


def document_day(document: dict, name: str = "Date") -> dt.date:
    """A document's calendar day: `DateString` (the organisation's own day) when given, else
    the `/Date(...)/` value; a missing day is a rejection naming the field."""
    written = document.get(f"{name}String")
    if written not in (None, ""):
        return _day(written, f"{name}String")
    return _day(document.get(name), name)


def _validation(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"


def _reason(error: Exception) -> str:
    """A rejection reason from what parsing raised."""
    if isinstance(error, ValidationError):
        return _validation(error)
    if isinstance(error, KeyError):
        return f"{error.args[0]} is missing"
    if isinstance(error, AttributeError):
        return "a line item is not an object"
    return str(error)


def _if_modified_since(moment: dt.datetime) -> str:
    # Xero compares whole seconds in UTC; flooring keeps the filter inclusive.
    return moment.astimezone(dt.timezone.utc).replace(microsecond=0, tzinfo=None).isoformat()


def _datetime_literal(day: dt.date) -> str:
    return f"DateTime({day.year},{day.month:02d},{day.day:02d})"


@dataclass
class XeroReference:
    """The organisation's lists that turn Xero ids into business codes."""

    contact_codes: dict[str, str] = field(default_factory=dict)
    capex_account_codes: set[str] = field(default_factory=set)
    card_accounts: set[str] = field(default_factory=set)

    def vendor_code(self, contact: dict | None) -> str | None:
        if not isinstance(contact, dict) or not contact.get("ContactID"):
            return None
        known = self.contact_codes.get(contact["ContactID"])
        return known or contact.get("AccountNumber") or contact["ContactID"]

    def is_card(self, bank_account: dict | None) -> bool:
        if not isinstance(bank_account, dict):
            return False
        return bool({bank_account.get("AccountID"), bank_account.get("Code")} & self.card_accounts)


def disposition(document: dict) -> str:
    """What a listed document means to a sync: "deleted", "not yet spend" or "live"."""
    status = document.get("Status")
    if status == "DELETED":
        return "deleted"
    if status in NOT_YET_SPEND:
        return "not yet spend"
    return "live"


def vendor_from_contact(contact: dict, connection: str) -> Vendor:
    """A Xero supplier `Contact` as a canonical vendor (archived means deleted in Xero)."""
    for name in ("ContactID", "Name"):
        if not contact.get(name):
            raise RecordRejected(f"{name} is missing")
    country = next(
        (
            address.get("Country")
            for address in contact.get("Addresses") or []
            if isinstance(address, dict) and address.get("Country")
        ),
        None,
    )
    return Vendor(
        connection=connection,
        source_id=f"Contacts:{contact['ContactID']}",
        updated_at=parse_xero_date(contact.get("UpdatedDateUTC")),
        status=(
            RecordStatus.ACTIVE
            if contact.get("ContactStatus", "ACTIVE") == "ACTIVE"
            else RecordStatus.DELETED
        ),
        vendor_id=contact.get("AccountNumber") or contact["ContactID"],
        name=contact["Name"],
        country=country,
        tax_id=contact.get("TaxNumber") or None,
        currency=contact.get("DefaultCurrency") or None,
    )


def material_from_item(item: dict, connection: str) -> Material:
    """A Xero `Item` as a canonical material."""
    for name in ("ItemID", "Code"):
        if not item.get(name):
            raise RecordRejected(f"{name} is missing")
    return Material(
        connection=connection,
        source_id=f"Items:{item['ItemID']}",
        updated_at=parse_xero_date(item.get("UpdatedDateUTC")),
        material_id=item["Code"],
        description=(
            item.get("PurchaseDescription")
            or item.get("Description")
            or item.get("Name")
            or item["Code"]
        ),
    )


def on_hand_from_item(
    item: dict, connection: str, snapshot_date: dt.date, location: str
) -> InventorySnapshot:
    """A tracked Xero `Item` as today's on-hand of the whole organisation, at `location`."""
    if not item.get("Code"):
        raise RecordRejected("Code is missing")
    return InventorySnapshot(
        connection=connection,
        source_id=f"Items:{item.get('ItemID')}:{snapshot_date.isoformat()}",
        snapshot_date=snapshot_date,
        material_id=item["Code"],
        location=location,
        quantity=required_decimal(item.get("QuantityOnHand"), "QuantityOnHand"),
        value=(
            required_decimal(item["TotalCostPool"], "TotalCostPool")
            if item.get("TotalCostPool") is not None
            else None
        ),
    )


def _net_amount(line: dict, inclusive: bool) -> Decimal:
    """The line's amount net of tax: a tax-inclusive `LineAmount` less its `TaxAmount`."""
    amount = required_decimal(line.get("LineAmount"), "LineAmount")
    if inclusive:
        if line.get("TaxAmount") in (None, ""):
            raise RecordRejected("TaxAmount is missing on a tax-inclusive line")
        amount -= required_decimal(line.get("TaxAmount"), "TaxAmount")
    return amount


def _unit_price(line: dict, inclusive: bool, quantity: Decimal, net: Decimal) -> Decimal:
    """The net price of one unit: a tax-inclusive `UnitAmount` loses its line's tax share, and
    a line without one is priced at its net amount over its quantity."""
    written = line.get("UnitAmount")
    if written in (None, ""):
        return (net / quantity).quantize(Decimal("0.0001")) if quantity else net
    price = required_decimal(written, "UnitAmount")
    if inclusive:
        gross = required_decimal(line.get("LineAmount"), "LineAmount")
        if gross:
            price = (price * net / gross).quantize(Decimal("0.0001"))
    return price


def _is_text_line(line: object) -> bool:
    """A line holding only words (Xero allows a description alone): no money to carry."""
    if not isinstance(line, dict):
        return False
    return all(line.get(name) in (None, "") for name in ("LineAmount", "UnitAmount", "Quantity"))


def spend_from_document(
    collection: str, document: dict, connection: str, reference: XeroReference | None = None
) -> tuple[list[SpendRecord], list[RejectedRecord]]:
    """The line items of an ACCPAY invoice, ACCPAYCREDIT credit note or SPEND bank transaction.

    Amounts are net of tax and signed: credit notes come back negative. Xero fills a quantity
    of 1 on account-coded lines; only item lines keep their quantity.
    """
    reference = reference or XeroReference()
    _, id_field, number_field = SPEND_COLLECTIONS[collection]
    source_id = f"{collection}:{document.get(id_field)}"
    if collection == "CreditNotes":
        document_type, sign = SpendDocumentType.CREDIT_NOTE, Decimal(-1)
    elif collection == "BankTransactions" and reference.is_card(document.get("BankAccount")):
        document_type, sign = SpendDocumentType.CARD_CHARGE, Decimal(1)
    else:
        document_type, sign = SpendDocumentType.INVOICE, Decimal(1)
    try:
        header = {
            "connection": connection,
            "source_id": source_id,
            "updated_at": parse_xero_date(document.get("UpdatedDateUTC")),
            "status": (
                RecordStatus.VOIDED if document.get("Status") == "VOIDED" else RecordStatus.ACTIVE
            ),
            "document_id": str(document.get(number_field) or document[id_field]),
            "document_type": document_type,
            "transaction_date": document_day(document),
            "currency": document.get("CurrencyCode"),
        }
        if not header["currency"]:
            raise RecordRejected("CurrencyCode is missing")
    except (RecordRejected, KeyError) as error:
        return [], [
            RejectedRecord(
                connection=connection,
                kind=RecordKind.SPEND,
                source_id=source_id,
                reason=_reason(error),
                payload=document,
            )
        ]
    vendor_id = reference.vendor_code(document.get("Contact"))
    inclusive = document.get("LineAmountTypes") == "Inclusive"
    records, rejected = [], []
    for position, line in enumerate(document.get("LineItems") or [], start=1):
        if _is_text_line(line):
            continue
        try:
            material_id = line.get("ItemCode") or None
            quantity = (
                required_decimal(line["Quantity"], "Quantity") * sign
                if material_id and line.get("Quantity") not in (None, "")
                else None
            )
            account = line.get("AccountCode") or None
            records.append(
                SpendRecord(
                    **header,
                    line_number=position,
                    vendor_id=vendor_id,
                    material_id=material_id,
                    gl_account=account,
                    description=line.get("Description") or None,
                    amount=_net_amount(line, inclusive) * sign,
                    quantity=quantity,
                    is_capex=account in reference.capex_account_codes,
                )
            )
        except (RecordRejected, ValidationError, AttributeError) as error:
            reason = _reason(error)
            rejected.append(
                RejectedRecord(
                    connection=connection,
                    kind=RecordKind.SPEND,
                    source_id=source_id,
                    reason=f"line {position}: {reason}",
                    payload={"document": document, "line": line},
                    partition_date=header["transaction_date"],
                )
            )
    return records, rejected


def purchase_order_from_document(
    document: dict, connection: str, reference: XeroReference | None = None
) -> tuple[list[CanonicalRecord], list[RejectedRecord]]:
    """A Xero `PurchaseOrder` as a header and its lines (or the reason it cannot be)."""
    reference = reference or XeroReference()
    source_id = f"PurchaseOrders:{document.get('PurchaseOrderID')}"
    try:
        inclusive = document.get("LineAmountTypes") == "Inclusive"
        delivery = (
            document_day(document, "DeliveryDate")
            if document.get("DeliveryDateString") or document.get("DeliveryDate")
            else None
        )
        common = {
            "connection": connection,
            "source_id": source_id,
            "updated_at": parse_xero_date(document.get("UpdatedDateUTC")),
            "purchase_order_id": str(
                document.get("PurchaseOrderNumber") or document["PurchaseOrderID"]
            ),
            "order_date": document_day(document),
            "currency": document.get("CurrencyCode") or "",
        }
        if not common["currency"]:
            raise RecordRejected("CurrencyCode is missing")
        header = PurchaseOrder(
            **common,
            vendor_id=reference.vendor_code(document.get("Contact")),
            total_amount=required_decimal(
                document.get("SubTotal")
                if document.get("SubTotal") is not None
                else document.get("Total"),
                "SubTotal",
            ),
            order_status="open" if document.get("Status") in OPEN_ORDER_STATUSES else "closed",
        )
        lines: list[CanonicalRecord] = []
        position = 0
        for line in document.get("LineItems") or []:
            if _is_text_line(line):
                continue
            position += 1
            # No quantity is one unit; a written zero stays zero.
            quantity = (
                Decimal("1")
                if line.get("Quantity") in (None, "")
                else required_decimal(line["Quantity"], "Quantity")
            )
            net = _net_amount(line, inclusive)
            lines.append(
                PurchaseOrderLine(
                    **common,
                    line_number=position * 10,
                    material_id=line.get("ItemCode") or None,
                    description=line.get("Description") or None,
                    quantity=quantity,
                    unit_price=_unit_price(line, inclusive, quantity, net),
                    amount=net,
                    gl_account=line.get("AccountCode") or None,
                    delivery_date=delivery,
                )
            )
    except (RecordRejected, ValidationError, KeyError, AttributeError) as error:
        reason = _reason(error)
        return [], [
            RejectedRecord(
                connection=connection,
                kind=RecordKind.PURCHASE_ORDER,
                source_id=source_id,
                reason=reason,
                payload=document,
            )
        ]
    return [header, *lines], []


class XeroSource(ErpSource):
    """A Xero organisation read through the Accounting API 2.0 with a custom connection."""

    erp_type: ClassVar[str] = "xero"
    api_version: ClassVar[str] = "Accounting API 2.0"
    # Limitation: Xero reports only the current QuantityOnHand of tracked items, for the whole
    # organisation, with no history and no locations, and offers no extension to keep a daily
    # snapshot. INVENTORY is left out of the offered kinds, so day-partitioned syncs (which
    # read past days) skip it; `fetch(INVENTORY)` of a window holding today reads today's.
    supported_kinds: ClassVar[frozenset[RecordKind]] = frozenset(RecordKind) - {
        RecordKind.INVENTORY
    }
    # Canonical fields Xero has no place for (or keeps only coarsely): no units of measure,
    # item groups, industry or commodity codes; no "received" order status; no line dates;
    # on-hand has no location (all at `inventory_location`), unit, unit cost or currency.
    unmapped_fields: ClassVar[dict[RecordKind, frozenset[str]]] = {
        RecordKind.INVENTORY: frozenset({"location", "unit", "unit_cost", "currency"}),
        RecordKind.VENDOR: frozenset({"industry_code"}),
        RecordKind.MATERIAL: frozenset({"material_group", "base_unit", "commodity_code"}),
        RecordKind.SPEND: frozenset({"unit"}),
        RecordKind.PURCHASE_ORDER: frozenset({"order_status"}),
        RecordKind.PURCHASE_ORDER_LINE: frozenset({"unit", "delivery_date"}),
    }

    client_id: str = Field(description="Client id of the Xero custom connection.")
    client_secret: str = Field(description="Client secret (from the environment).")
    tenant_id: str | None = Field(
        default=None, description="Organisation (tenant) id; found via /connections if unset."
    )
    token_url: str = Field(
        default=DEFAULT_TOKEN_URL,
        description="Token endpoint; a path starting with / is taken relative to base_url.",
    )
    scope: str | None = Field(default=None, description="Scopes to ask for, space-separated.")
    inventory_location: str = Field(
        default="ALL", description="Location given to on-hand, which Xero keeps per item only."
    )

    _http: ErpHttpClient | None = PrivateAttr(default=None)
    _token_expires_at: float = PrivateAttr(default=0.0)
    _tenant: str | None = PrivateAttr(default=None)
    _reference: XeroReference | None = PrivateAttr(default=None)
    _past_days_noted: bool = PrivateAttr(default=False)

    # Connection

    def _client(self) -> ErpHttpClient:
        if self._http is None:
            self._http = self.build_http_client(self._authenticate, self._throttle_signal)
        return self._http

    def _throttle_signal(self, response: requests.Response) -> float | None:
        wait = standard_throttle_signal(response)
        if wait is not None:
            logger.warning(
                "Xero rate limit reached (%s)",
                response.headers.get("X-Rate-Limit-Problem"),
                extra={"connection": self.connection_name},
            )
        return wait

    def _token_endpoint(self) -> str:
        if self.token_url.startswith("/"):
            return self.base_url.rstrip("/") + self.token_url
        return self.token_url

    def _authenticate(self, session: requests.Session) -> None:
        """Client-credentials grant, then the tenant header for every later call."""
        token = client_credentials_token(
            session,
            self.connection_name,
            self._token_endpoint(),
            client_id=self.client_id,
            client_secret=resolve_secret(self.client_secret),
            scope=self.scope,
            timeout=self.timeout_seconds,
        )
        session.headers["Authorization"] = f"Bearer {token['access_token']}"
        session.headers["Accept"] = "application/json"
        self._token_expires_at = token_expires_at(token, 1800)
        session.headers["xero-tenant-id"] = self._tenant or self._find_tenant(session)
        logger.info("Xero access token renewed", extra={"connection": self.connection_name})

    def _find_tenant(self, session: requests.Session) -> str:
        if self.tenant_id:
            self._tenant = self.tenant_id
            return self._tenant
        try:
            response = session.get(
                f"{self.base_url.rstrip('/')}/connections", timeout=self.timeout_seconds
            )
            _ = response.content
        except (requests.ConnectionError, requests.Timeout):
            raise RetryableError("connections endpoint unreachable") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableError(
                f"connections endpoint answered {response.status_code}",
                wait_seconds=retry_after_seconds(response),
            )
        if response.status_code >= 400:
            raise ErpAuthError(
                self.connection_name,
                f"listing connections failed ({response.status_code})",
                response.status_code,
            )
        tenants = [c["tenantId"] for c in response.json() if c.get("tenantType") == "ORGANISATION"]
        if not tenants:
            raise ErpAuthError(self.connection_name, "the app is connected to no organisation")
        self._tenant = tenants[0]
        return self._tenant

    def _get(
        self,
        collection: str,
        params: dict[str, str] | None = None,
        modified_since: dt.datetime | None = None,
    ) -> dict:
        client = self._client()
        if token_running_out(self._token_expires_at):
            client.reauthenticate()
        headers = (
            {"If-Modified-Since": _if_modified_since(modified_since)}
            if (modified_since is not None)
            else {}
        )
        response = client.get(f"{API_ROOT}/{collection}", params=params or {}, headers=headers)
        try:
            return response.json(parse_float=Decimal)
        except json.JSONDecodeError:
            raise ErpRequestError(
                self.connection_name, f"GET {collection} answered something that is not JSON"
            ) from None

    def _pages(
        self,
        collection: str,
        params: dict[str, str],
        modified_since: dt.datetime | None,
        key: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[list[dict]]:
        """Paged reads: a page shorter than the page size (or the last by count) ends it."""
        size = max(1, min(page_size or self.page_size, MAX_PAGE_SIZE))
        page = 1
        while True:
            body = self._get(
                collection, {**params, "page": str(page), "pageSize": str(size)}, modified_since
            )
            rows = body.get(key or collection) or []
            yield rows
            pagination = body.get("pagination") or {}
            if len(rows) < size or (pagination and page >= pagination.get("pageCount", page)):
                return
            page += 1

    def _reference_lists(self, refresh: bool = False) -> XeroReference:
        if self._reference is not None and not refresh:
            return self._reference
        reference = XeroReference()
        for account in self._get("Accounts").get("Accounts", []):
            if account.get("Type") == "FIXED":
                reference.capex_account_codes.add(account.get("Code"))
            if account.get("Type") == "BANK" and account.get("BankAccountType") == "CREDITCARD":
                reference.card_accounts.update({account.get("AccountID"), account.get("Code")})
        params = {"where": "IsSupplier==true", "includeArchived": "true", "order": "ContactID"}
        # Reference lists are small master data: read them in the largest pages allowed.
        for page in self._pages("Contacts", params, None, page_size=MAX_PAGE_SIZE):
            for contact in page:
                reference.contact_codes[contact["ContactID"]] = (
                    contact.get("AccountNumber") or contact["ContactID"]
                )
        self._reference = reference
        return reference

    # ErpSource

    def _probe(self) -> None:
        self._get("Organisation")

    def fetch(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        """Yield batches of canonical records of `kind` inside `window`, a page at a time."""
        if kind not in self.supported_kinds | {RecordKind.INVENTORY}:
            raise ErpRequestError(self.connection_name, f"Xero does not offer {kind.value}")
        # Snapshots repeat their key from day to day: they are told apart by their day.
        latest = FirstSightings() if kind is RecordKind.INVENTORY else LatestVersions()
        for records, rejected, deleted, watermark in self._read(kind, window):
            yield RecordBatch(
                records=latest.keep(records),
                rejected=rejected,
                deleted_source_ids=deleted,
                high_watermark=watermark,
            )
        if kind is RecordKind.INVENTORY and window.reaches_before_today(self.lookback_days):
            # Past days were not read: stored snapshots must not be taken as deleted.
            yield RecordBatch(complete=False)

    def _read(self, kind: RecordKind, window: SyncWindow):
        if kind is RecordKind.SPEND:
            yield from self._spend_pages(window)
        elif kind in (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE):
            yield from self._purchase_order_pages(kind, window)
        elif kind is RecordKind.INVENTORY:
            yield from self._on_hand_pages(window)
        elif kind is RecordKind.VENDOR:
            params = {"where": "IsSupplier==true", "includeArchived": "true", "order": "ContactID"}
            for page in self._pages("Contacts", params, window.changed_since):
                records, rejected = self._master(page, RecordKind.VENDOR)
                yield records, rejected, [], self._watermark(page)
        else:
            body = self._get("Items", {"order": "Code"}, window.changed_since)
            items = body.get("Items") or []
            records, rejected = self._master(items, RecordKind.MATERIAL)
            yield records, rejected, [], self._watermark(items)

    def _master(self, rows: list[dict], kind: RecordKind):
        """Contacts or items as vendors or materials, and the ones that cannot be, rejected."""
        parse, key, id_field = (
            (vendor_from_contact, "Contacts", "ContactID")
            if kind is RecordKind.VENDOR
            else (material_from_item, "Items", "ItemID")
        )
        records, rejected = [], []
        for row in rows:
            try:
                records.append(parse(row, self.connection_name))
            except (RecordRejected, ValidationError) as error:
                rejected.append(
                    RejectedRecord(
                        connection=self.connection_name,
                        kind=kind,
                        source_id=f"{key}:{row.get(id_field)}",
                        reason=_reason(error),
                        payload=row,
                    )
                )
        return records, rejected

    def _on_hand_pages(self, window: SyncWindow):
        """Today's QuantityOnHand of tracked items; a past day cannot be read from Xero."""
        days = window.snapshot_days(self.lookback_days)
        today = dt.datetime.now(dt.timezone.utc).date()
        if today in days:
            params = {"where": "IsTrackedAsInventory==true", "order": "Code"}
            records, rejected = [], []
            for item in self._get("Items", params).get("Items", []):
                try:
                    records.append(
                        on_hand_from_item(
                            item, self.connection_name, today, self.inventory_location
                        )
                    )
                except (RecordRejected, ValidationError) as error:
                    invalid = isinstance(error, ValidationError)
                    rejected.append(
                        RejectedRecord(
                            connection=self.connection_name,
                            kind=RecordKind.INVENTORY,
                            source_id=f"Items:{item.get('ItemID')}",
                            reason=_validation(error) if invalid else str(error),
                            payload=item,
                            partition_date=today,
                        )
                    )
            yield records, rejected, [], None
        if any(day != today for day in days) and not self._past_days_noted:
            self._past_days_noted = True
            logger.warning(
                "Xero keeps no on-hand of past days; read today only",
                extra={"connection": self.connection_name},
            )

    @staticmethod
    def _watermark(documents: list[dict]) -> dt.datetime | None:
        stamps = []
        for document in documents:
            try:
                stamps.append(parse_xero_date(document.get("UpdatedDateUTC")))
            except RecordRejected:
                continue
        stamps = [stamp for stamp in stamps if stamp is not None]
        return max(stamps) if stamps else None

    @staticmethod
    def _date_where(type_value: str, window: SyncWindow) -> str:
        conditions = [f'Type=="{type_value}"']
        if window.start is not None:
            conditions.append(f"Date>={_datetime_literal(window.start)}")
        if window.end is not None:
            conditions.append(f"Date<{_datetime_literal(window.end)}")
        return " AND ".join(conditions)

    def _spend_pages(self, window: SyncWindow):
        reference = self._reference_lists()
        for collection, (type_value, id_field, _) in SPEND_COLLECTIONS.items():
            params = {"where": self._date_where(type_value, window), "order": id_field}
            for page in self._pages(collection, params, window.changed_since):
                contacts = {(d.get("Contact") or {}).get("ContactID") for d in page} - {None}
                if contacts - set(reference.contact_codes):
                    reference = self._reference_lists(refresh=True)
                records, rejected, deleted = [], [], []
                for document in page:
                    state = disposition(document)
                    if state == "deleted":
                        deleted.append(f"{collection}:{document[id_field]}")
                    if state != "live":
                        continue
                    lines, refused = spend_from_document(
                        collection, document, self.connection_name, reference
                    )
                    records.extend(line for line in lines if window.contains(line.partition_date))
                    rejected.extend(refused)
                yield records, rejected, deleted, self._watermark(page)

    def _purchase_order_pages(self, kind: RecordKind, window: SyncWindow):
        reference = self._reference_lists()
        wanted = PurchaseOrder if kind is RecordKind.PURCHASE_ORDER else PurchaseOrderLine
        params = {"order": "PurchaseOrderID"}
        if window.start is not None:
            params["DateFrom"] = window.start.isoformat()
        if window.end is not None:
            params["DateTo"] = (window.end - dt.timedelta(days=1)).isoformat()
        for page in self._pages("PurchaseOrders", params, window.changed_since):
            records, rejected, deleted = [], [], []
            for document in page:
                if disposition(document) == "deleted":
                    deleted.append(f"PurchaseOrders:{document['PurchaseOrderID']}")
                    continue
                parsed, refused = purchase_order_from_document(
                    document, self.connection_name, reference
                )
                records.extend(record for record in parsed if isinstance(record, wanted))
                rejected.extend(r.model_copy(update={"kind": kind}) for r in refused)
            yield records, rejected, deleted, self._watermark(page)

    def changed_days(self, kind: RecordKind, since: dt.datetime) -> ChangeSummary:
        """Days holding records changed at or after `since`; invoices are read as summaries."""
        summary = ChangeSummary()
        if kind is RecordKind.SPEND:
            reads = [
                (
                    collection,
                    {
                        "where": f'Type=="{type_value}"',
                        "order": id_field,
                        **({"summaryOnly": "true"} if collection == "Invoices" else {}),
                    },
                    collection,
                )
                for collection, (type_value, id_field, _) in SPEND_COLLECTIONS.items()
            ]
        elif kind in (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE):
            reads = [("PurchaseOrders", {"order": "PurchaseOrderID"}, "PurchaseOrders")]
        elif kind is RecordKind.VENDOR:
            reads = [
                (
                    "Contacts",
                    {"where": "IsSupplier==true", "includeArchived": "true", "summaryOnly": "true"},
                    "Contacts",
                )
            ]
        elif kind is RecordKind.INVENTORY:
            # Only today's on-hand can be read, and it has no change stamp.
            if since <= dt.datetime.now(dt.timezone.utc):
                summary.days.add(dt.datetime.now(dt.timezone.utc).date())
            return summary
        elif kind is RecordKind.MATERIAL:
            items = self._get("Items", {}, since).get("Items", [])
            for item in items:
                stamp = parse_xero_date(item.get("UpdatedDateUTC"))
                if stamp:
                    summary.days.add(stamp.date())
            summary.high_watermark = self._watermark(items)
            return summary
        else:
            raise ErpRequestError(self.connection_name, f"Xero does not offer {kind.value}")
        for collection, params, key in reads:
            for page in self._pages(collection, params, since, key):
                for document in page:
                    try:
                        summary.days.add(document_day(document))
                        continue
                    except RecordRejected:
                        pass  # no readable day: the day it changed, if that can be read
                    try:
                        stamp = parse_xero_date(document.get("UpdatedDateUTC"))
                    except RecordRejected:
                        stamp = None
                    if stamp is not None:
                        summary.days.add(stamp.astimezone(dt.timezone.utc).date())
                watermark = self._watermark(page)
                if watermark and (
                    summary.high_watermark is None or watermark > summary.high_watermark
                ):
                    summary.high_watermark = watermark
        return summary


__all__ = [
    "XeroReference",
    "XeroSource",
    "disposition",
    "document_day",
    "material_from_item",
    "on_hand_from_item",
    "parse_xero_date",
    "purchase_order_from_document",
    "spend_from_document",
    "vendor_from_contact",
]
