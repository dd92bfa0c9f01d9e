"""NetSuite source: SuiteQL over SuiteTalk REST web services with token-based authentication.

Follows the REST web services SuiteQL query service (`POST /services/rest/query/v1/suiteql`,
header `Prefer: transient`, body `{"q": ...}`, paging with `limit` up to 1000 and `offset`,
answers `{links, count, hasMore, items, offset, totalResults}`), as documented for NetSuite
2024.2. Requests are signed with OAuth 1.0a TBA, HMAC-SHA256, `realm` = account id
(requests-oauthlib). Values come back as strings; dates in the account's date format (M/D/YYYY
by default) and date/times only through `TO_CHAR`, in the account's time zone, so both are
connection options.

Where things live: supplier bills, vendor credits and credit-card charges are `transaction`
rows of type VendBill / VendCred / CardChrg joined to their `transactionline` rows (main and tax
lines excluded); purchase orders are type PurchOrd; vendors `vendor` (+ `entityaddress` for the
country); items `item`. Deletions come from the `deletedrecord` table. A throttled request is
answered 429 (or, from a RESTlet gateway, 400 `SSS_REQUEST_LIMIT_EXCEEDED`) without a
Retry-After: the wait is a fixed concurrency back-off.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import zoneinfo
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from typing import ClassVar

import requests
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256
from pydantic import Field, PrivateAttr, ValidationError, field_validator
from requests_oauthlib import OAuth1

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

logger = logging.getLogger(__name__)

SUITEQL_PATH = "/services/rest/query/v1/suiteql"
MAX_PAGE_SIZE = 1000
MAX_QUERY_RESULTS = 100_000
# NetSuite sends no Retry-After when the account's concurrency limit is hit; a slot frees as
# soon as another request finishes, so a short fixed wait beats a long exponential one.
CONCURRENCY_WAIT_SECONDS = 2.0
TIMESTAMP_FORMAT = "YYYY-MM-DD HH24:MI:SS"
# The date formats a NetSuite user can pick in Set Preferences; strptime reads the one- and
# two-digit forms alike, and month names in English (the C locale), whatever their case.
DATE_FORMATS = {
    "M/D/YYYY": "%m/%d/%Y",
    "MM/DD/YYYY": "%m/%d/%Y",
    "D/M/YYYY": "%d/%m/%Y",
    "DD/MM/YYYY": "%d/%m/%Y",
    "D.M.YYYY": "%d.%m.%Y",
    "DD.MM.YYYY": "%d.%m.%Y",
    "D-Mon-YYYY": "%d-%b-%Y",
    "DD-Mon-YYYY": "%d-%b-%Y",
    "D-MONTH-YYYY": "%d-%B-%Y",
    "DD-MONTH-YYYY": "%d-%B-%Y",
    "D MONTH, YYYY": "%d %B, %Y",
    "DD MONTH, YYYY": "%d %B, %Y",
    "YYYY-MM-DD": "%Y-%m-%d",
    "YYYY/MM/DD": "%Y/%m/%d",
}
SPEND_TYPES = {
    "VendBill": SpendDocumentType.INVOICE,
    "VendCred": SpendDocumentType.CREDIT_NOTE,
    "CardChrg": SpendDocumentType.CARD_CHARGE,
}
# Purchase order status letters (BUILTIN.DF gives "Purchase Order : Pending Receipt" etc.).
PO_STATUSES = {
    "A": "pending_approval",
    "B": "open",
    "C": "rejected",
    "D": "open",
    "E": "open",
    "F": "received",
    "G": "received",
    "H": "closed",
}
DELETED_RECORD_TYPES = {
    RecordKind.SPEND: ("vendorbill", "vendorcredit", "creditcardcharge"),
    RecordKind.PURCHASE_ORDER: ("purchaseorder",),
    RecordKind.PURCHASE_ORDER_LINE: ("purchaseorder",),
    RecordKind.VENDOR: ("vendor",),
    RecordKind.MATERIAL: ("inventoryitem", "noninventoryitem", "serviceitem"),
    RecordKind.INVENTORY: ("customrecord_onhand_snapshot",),
}
# Limitation: NetSuite keeps only the current on-hand balance (InventoryBalance). Day snapshots
# are read from a custom record type that a scheduled script in the account fills nightly from
# InventoryBalance; the account must have it (the sandbox does).
SNAPSHOT_RECORD = "customrecord_onhand_snapshot"

_LAST_MODIFIED = "TO_CHAR({column}, '" + TIMESTAMP_FORMAT + "') AS last_modified"
# Bill headers and lines are read apart: a day's lines would otherwise repeat every header field.
_SPEND_HEADER_SELECT = f"""SELECT t.id AS transaction_id, t.tranid, t.type, t.trandate, t.voided,
 {_LAST_MODIFIED.format(column="t.lastmodifieddate")},
 v.entityid AS vendor_entityid, c.symbol AS currency_symbol
FROM transaction t
 LEFT JOIN vendor v ON v.id = t.entity
 LEFT JOIN currency c ON c.id = t.currency
WHERE t.type IN ('VendBill', 'VendCred', 'CardChrg')"""
_SPEND_SELECT = """SELECT tl.transaction AS transaction_id, tl.id AS line_id,
 tl.linesequencenumber, tl.memo, tl.foreignamount, tl.quantity, i.itemid AS item_itemid,
 u.abbreviation AS unit_abbreviation, a.acctnumber, a.accttype
FROM transactionline tl
 INNER JOIN transaction t ON t.id = tl.transaction
 LEFT JOIN item i ON i.id = tl.item
 LEFT JOIN unitstypeuom u ON u.internalid = tl.units
 LEFT JOIN account a ON a.id = tl.expenseaccount
WHERE t.type IN ('VendBill', 'VendCred', 'CardChrg') AND tl.mainline = 'F' AND tl.taxline = 'F'"""
_ORDER_SELECT = f"""SELECT t.id AS transaction_id, t.tranid, t.trandate, t.status, t.voided,
 {_LAST_MODIFIED.format(column="t.lastmodifieddate")},
 v.entityid AS vendor_entityid, c.symbol AS currency_symbol, t.foreigntotal
FROM transaction t
 LEFT JOIN vendor v ON v.id = t.entity
 LEFT JOIN currency c ON c.id = t.currency
WHERE t.type = 'PurchOrd'"""
_ORDER_LINE_SELECT = f"""SELECT t.id AS transaction_id, t.tranid, t.trandate,
 {_LAST_MODIFIED.format(column="t.lastmodifieddate")}, c.symbol AS currency_symbol,
 tl.id AS line_id, tl.linesequencenumber, tl.memo, tl.quantity, tl.rate, tl.foreignamount,
 tl.expectedreceiptdate, i.itemid AS item_itemid, u.abbreviation AS unit_abbreviation,
 a.acctnumber
FROM transaction t
 INNER JOIN transactionline tl ON tl.transaction = t.id
 LEFT JOIN currency c ON c.id = t.currency
 LEFT JOIN item i ON i.id = tl.item
 LEFT JOIN unitstypeuom u ON u.internalid = tl.units
 LEFT JOIN account a ON a.id = tl.expenseaccount
WHERE t.type = 'PurchOrd' AND tl.mainline = 'F' AND tl.taxline = 'F'"""
_VENDOR_SELECT = f"""SELECT v.id, v.entityid, v.companyname, v.taxidnum, v.custentity_naics_code,
 c.symbol AS currency_symbol, ea.country, {_LAST_MODIFIED.format(column="v.lastmodifieddate")}
FROM vendor v
 LEFT JOIN currency c ON c.id = v.currency
 LEFT JOIN entityaddress ea ON ea.nkey = v.defaultbillingaddress
WHERE v.isinactive = 'F'"""
_ITEM_SELECT = f"""SELECT i.id, i.itemid, i.displayname, i.custitem_naics_code,
 cl.name AS class_name, u.abbreviation AS stock_unit,
 {_LAST_MODIFIED.format(column="i.lastmodifieddate")}
FROM item i
 LEFT JOIN classification cl ON cl.id = i.class
 LEFT JOIN unitstypeuom u ON u.internalid = i.stockunit
WHERE i.isinactive = 'F'"""
_SNAPSHOT_SELECT = f"""SELECT s.id, s.custrecord_ohs_date, i.itemid AS item_itemid,
 l.name AS location_name, s.custrecord_ohs_quantity, s.custrecord_ohs_unit_cost,
 s.custrecord_ohs_value, c.symbol AS currency_symbol, u.abbreviation AS unit_abbreviation,
 {_LAST_MODIFIED.format(column="s.lastmodified")}
FROM {SNAPSHOT_RECORD} s
 INNER JOIN item i ON i.id = s.custrecord_ohs_item
 LEFT JOIN location l ON l.id = s.custrecord_ohs_location
 LEFT JOIN currency c ON c.id = s.custrecord_ohs_currency
 LEFT JOIN unitstypeuom u ON u.internalid = i.stockunit
WHERE s.isinactive = 'F'"""


@dataclasses.dataclass(frozen=True)
class _Query:
    """One SuiteQL statement per kind, and what change detection needs of it."""

    select: str
    table: str  # the main table with its alias
    own_filter: str  # the conditions on the main table alone
    date_column: str | None
    stamp_column: str
    order: str
    parse: Callable[[NetSuiteSource, dict], CanonicalRecord]
    header_select: str | None = None  # headers merged into each row by transaction_id


def netsuite_throttle_signal(response: requests.Response) -> float | None:
    """429 from REST web services, or 400 SSS_REQUEST_LIMIT_EXCEEDED from a RESTlet gateway."""
    if response.status_code == 429:
        return retry_after_seconds(response) or CONCURRENCY_WAIT_SECONDS
    if response.status_code == 400 and "SSS_REQUEST_LIMIT_EXCEEDED" in response.text:
        return retry_after_seconds(response) or CONCURRENCY_WAIT_SECONDS
    return None


class NetSuiteSource(ErpSource):
    """A NetSuite account read with SuiteQL over REST web services, signed with TBA."""

    erp_type: ClassVar[str] = "netsuite"
    api_version: ClassVar[str] = "SuiteTalk REST web services 2024.2, SuiteQL query service"

    account_id: str = Field(description="NetSuite account id, the OAuth realm (e.g. 1234567_SB1).")
    consumer_key: str = Field(repr=False, description="Integration record consumer key.")
    consumer_secret: str = Field(repr=False, description="Integration record consumer secret.")
    token_id: str = Field(repr=False, description="Access token id of the integration user.")
    token_secret: str = Field(repr=False, description="Access token secret.")
    account_timezone: str = Field(
        default="America/Los_Angeles",
        description="Time zone of the integration user's preferences; TO_CHAR times use it.",
    )
    date_format: str = Field(
        default="M/D/YYYY", description="Date format of the integration user's preferences."
    )

    _http: ErpHttpClient | None = PrivateAttr(default=None)
    # The instance the private state belongs to: a model_copy builds its own.
    _owner: int = PrivateAttr(default=0)

    @field_validator("account_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        zoneinfo.ZoneInfo(value)
        return value

    @field_validator("date_format")
    @classmethod
    def _known_date_format(cls, value: str) -> str:
        if value not in DATE_FORMATS:
            raise ValueError(f"date_format must be one of {', '.join(DATE_FORMATS)}")
        return value

    # Connection

    @property
    def http(self) -> ErpHttpClient:
        if self._http is None or self._owner != id(self):
            self._owner = id(self)
            self._http = self.build_http_client(self._sign_requests, netsuite_throttle_signal)
        return self._http

    def _sign_requests(self, session: requests.Session) -> None:
        # A fresh OAuth1 signer per (re)authentication; each request gets its own nonce.
        session.auth = OAuth1(
            resolve_secret(self.consumer_key),
            client_secret=resolve_secret(self.consumer_secret),
            resource_owner_key=resolve_secret(self.token_id),
            resource_owner_secret=resolve_secret(self.token_secret),
            realm=self.account_id,
            signature_method=SIGNATURE_HMAC_SHA256,
        )

    def _probe(self) -> None:
        next(self._pages("SELECT c.id FROM currency c ORDER BY c.id", page_size=1), None)

    # Reading

    def fetch(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        query = _QUERIES[kind]
        logger.info(
            "suiteql %s sync started",
            kind.value,
            extra={"connection": self.connection_name, "window": str(window)},
        )
        headers: dict[str, dict] | None = None
        if query.header_select is not None:
            statement = self._statement(query.header_select, query, window, "t.id")
            # Keys as text: an id may come as a JSON number in one query and a string in another.
            headers = {
                str(item.get("transaction_id")): item
                for page in self._pages(statement)
                for item in page
            }
        seen: set[str] = set()
        total = 0
        for items in self._pages(self._statement(query.select, query, window, query.order)):
            if headers is not None:
                # A line whose bill was created after the headers were read is left for the
                # next sync: its change stamp is later than this sync's watermark.
                items = [
                    {**headers[str(item.get("transaction_id"))], **item}
                    for item in items
                    if str(item.get("transaction_id")) in headers
                ]
            batch = self.records_from_items(kind, items, seen)
            total += len(batch.records)
            yield batch
        if window.changed_since is not None:
            yield RecordBatch(deleted_source_ids=self._deleted_since(kind, window.changed_since))
        logger.info(
            "suiteql %s sync read %d records",
            kind.value,
            total,
            extra={"connection": self.connection_name},
        )

    def changed_days(self, kind: RecordKind, since: dt.datetime) -> ChangeSummary:
        query = _QUERIES[kind]
        columns = [_LAST_MODIFIED.format(column=query.stamp_column)]
        if query.date_column is not None:
            columns.insert(0, query.date_column)
        # Only the dates and stamps of the main table: no lines, no joins.
        statement = (
            f"SELECT DISTINCT {', '.join(columns)}\nFROM {query.table}\n"
            f"WHERE {query.own_filter} AND {query.stamp_column} >= "
            f"{self._timestamp_literal(since)}"
        )
        summary = ChangeSummary()
        for items in self._pages(statement):
            for item in items:
                if query.date_column is not None:
                    summary.days.add(self._date(item[query.date_column.split(".")[1]]))
                stamp = self._instant(item["last_modified"])
                if summary.high_watermark is None or stamp > summary.high_watermark:
                    summary.high_watermark = stamp
        return summary

    def _statement(self, select: str, query: _Query, window: SyncWindow, order: str) -> str:
        conditions = []
        if query.date_column is not None and window.start is not None:
            conditions.append(f"{query.date_column} >= {_date_literal(window.start)}")
        if query.date_column is not None and window.end is not None:
            conditions.append(f"{query.date_column} < {_date_literal(window.end)}")
        if window.changed_since is not None:
            conditions.append(
                f"{query.stamp_column} >= {self._timestamp_literal(window.changed_since)}"
            )
        where = "".join(f"\n AND {condition}" for condition in conditions)
        return f"{select}{where}\nORDER BY {order}"

    def _pages(self, statement: str, page_size: int | None = None) -> Iterator[list[dict]]:
        """Each page's items; the next page is the envelope's `next` link, read in key order."""
        limit = max(1, min(page_size or self.page_size, MAX_PAGE_SIZE))
        url = f"{SUITEQL_PATH}?limit={limit}&offset=0"
        while url:
            response = self.http.post(url, json={"q": statement}, headers={"Prefer": "transient"})
            page = self._envelope(response)
            total = page.get("totalResults")
            if isinstance(total, (int, str)) and str(total).isdigit():
                if int(total) > MAX_QUERY_RESULTS:
                    raise ErpRequestError(
                        self.connection_name,
                        f"query matches {total} rows, over SuiteQL's limit of "
                        f"{MAX_QUERY_RESULTS}; sync a narrower window",
                    )
            items = page["items"]
            yield items
            url = self._next_page(page, items, limit, url) if _true(page.get("hasMore")) else None

    def _envelope(self, response: requests.Response) -> dict:
        """The SuiteQL collection envelope of an answer, or a clear error instead of no rows."""
        try:
            page = response.json()
        except ValueError:
            raise ErpRequestError(
                self.connection_name, "SuiteQL answered something that is not JSON"
            ) from None
        if not isinstance(page, dict):
            raise ErpRequestError(self.connection_name, "SuiteQL answered a non-object JSON body")
        if "o:errorDetails" in page:
            raise ErpRequestError(
                self.connection_name, f"SuiteQL refused the query ({error_details(page)})"
            )
        items = page.get("items")
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise ErpRequestError(
                self.connection_name, "SuiteQL answered without an items list of rows"
            )
        return page

    def _next_page(self, page: dict, items: list[dict], limit: int, current: str) -> str:
        """The `next` link; without one, the offset after this page's rows."""
        link = next(
            (
                link.get("href")
                for link in page.get("links") or []
                if isinstance(link, dict) and link.get("rel") == "next" and link.get("href")
            ),
            None,
        )
        if link is None:
            try:
                offset = int(page.get("offset", 0)) + int(page.get("count", len(items)))
            except (TypeError, ValueError):
                raise ErpRequestError(
                    self.connection_name, "SuiteQL says hasMore but names no next page"
                ) from None
            link = f"{SUITEQL_PATH}?limit={limit}&offset={offset}"
        if not items or link == current:
            # More rows promised but none served, or the same page again: a loop, not data.
            raise ErpRequestError(
                self.connection_name, "SuiteQL says hasMore but the next page does not advance"
            )
        return link

    def records_from_items(
        self, kind: RecordKind, items: list[dict], seen: set[str] | None = None
    ) -> RecordBatch:
        """Canonical records (and rejects) from SuiteQL result items of this kind's query.

        Spend items carry their bill header's columns merged in. `seen` holds the natural keys
        (or, for rejects, source ids) already read in this sync: offset paging can repeat a row
        when data shifts between pages, and the first reading is kept.
        """
        seen = set() if seen is None else seen
        batch = RecordBatch()
        for item in items:
            row = {key: value for key, value in item.items() if key != "links"}
            try:
                record = _QUERIES[kind].parse(self, row)
            except (ValueError, KeyError, InvalidOperation, ValidationError) as error:
                source_id = _source_id(row)
                if source_id not in seen:
                    seen.add(source_id)
                    batch.rejected.append(self._rejected(kind, row, source_id, error))
                continue
            if record.natural_key not in seen:
                seen.add(record.natural_key)
                batch.records.append(record)
        stamps = [r.updated_at for r in batch.records if r.updated_at is not None]
        batch.high_watermark = max(stamps, default=None)
        return batch

    def _rejected(
        self, kind: RecordKind, row: dict, source_id: str, error: Exception
    ) -> RejectedRecord:
        return RejectedRecord(
            connection=self.connection_name,
            kind=kind,
            source_id=source_id,
            reason=rejection_reason(error),
            payload=row,
            partition_date=self._maybe_date(row.get("trandate")),
        )

    def _deleted_since(self, kind: RecordKind, since: dt.datetime) -> list[str]:
        types = ", ".join(f"'{name}'" for name in DELETED_RECORD_TYPES[kind])
        statement = (
            "SELECT d.recordid, d.recordtypeid FROM deletedrecord d\n"
            f"WHERE d.recordtypeid IN ({types}) AND d.deleteddate >= "
            f"{self._timestamp_literal(since)}\nORDER BY d.recordid"
        )
        # Limitation: NetSuite logs deletions per record, not per line: for line kinds the
        # transaction's id is reported, and each of its lines' source_id starts with it + "/".
        return [str(item["recordid"]) for items in self._pages(statement) for item in items]

    # Native values

    def _timestamp_literal(self, instant: dt.datetime) -> str:
        local = instant.astimezone(zoneinfo.ZoneInfo(self.account_timezone))
        # Seconds are the finest grain NetSuite shows; flooring keeps the cursor inclusive.
        return f"TO_TIMESTAMP('{local:%Y-%m-%d %H:%M:%S}', '{TIMESTAMP_FORMAT}')"

    def _instant(self, value: str) -> dt.datetime:
        try:
            local = dt.datetime.strptime(str(value).strip(), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise ValueError(f"last_modified {value!r} is not YYYY-MM-DD HH24:MI:SS") from None
        zone = zoneinfo.ZoneInfo(self.account_timezone)
        return local.replace(tzinfo=zone).astimezone(dt.timezone.utc)

    def _date(self, value: str) -> dt.date:
        try:
            return dt.datetime.strptime(str(value).strip(), DATE_FORMATS[self.date_format]).date()
        except ValueError:
            raise ValueError(
                f"date {value!r} is not in the account format {self.date_format}"
            ) from None

    def _maybe_date(self, value: str | None) -> dt.date | None:
        try:
            return self._date(value) if value else None
        except ValueError:
            return None

    def _parse_spend(self, row: dict) -> SpendRecord:
        if row.get("type") not in SPEND_TYPES:
            raise ValueError(f"type {row.get('type')!r} is not a bill, credit or card charge")
        document_type = SPEND_TYPES[row["type"]]
        amount = _number(row, "foreignamount")
        quantity = _number(row, "quantity", required=False)
        if document_type is SpendDocumentType.CREDIT_NOTE:
            # A vendor credit lowers spend whichever sign the account posts its lines with.
            amount = -abs(amount)
            quantity = -abs(quantity) if quantity is not None else None
        return SpendRecord(
            connection=self.connection_name,
            source_id=_source_id(row),
            updated_at=self._instant(row["last_modified"]),
            status=RecordStatus.VOIDED if _true(row.get("voided")) else RecordStatus.ACTIVE,
            document_id=required_field(row, "tranid"),
            line_number=_whole(row, "linesequencenumber"),
            document_type=document_type,
            transaction_date=self._date(row["trandate"]),
            vendor_id=row.get("vendor_entityid"),
            material_id=row.get("item_itemid"),
            gl_account=row.get("acctnumber"),
            description=row.get("memo"),
            amount=amount,
            currency=required_field(row, "currency_symbol"),
            quantity=quantity,
            unit=row.get("unit_abbreviation"),
            is_capex=row.get("accttype") == "FixedAsset",
            # Limitation: the purchase order a bill line was created from (createdfrom) is not read.
            purchase_order_id=None,
        )

    def _parse_order(self, row: dict) -> PurchaseOrder:
        return PurchaseOrder(
            connection=self.connection_name,
            source_id=row["transaction_id"],
            updated_at=self._instant(row["last_modified"]),
            status=RecordStatus.VOIDED if _true(row.get("voided")) else RecordStatus.ACTIVE,
            purchase_order_id=required_field(row, "tranid"),
            vendor_id=row.get("vendor_entityid"),
            order_date=self._date(row["trandate"]),
            currency=required_field(row, "currency_symbol"),
            total_amount=_number(row, "foreigntotal"),
            order_status=_order_status(row.get("status")),
        )

    def _parse_order_line(self, row: dict) -> PurchaseOrderLine:
        delivery = row.get("expectedreceiptdate")
        return PurchaseOrderLine(
            connection=self.connection_name,
            source_id=_source_id(row),
            updated_at=self._instant(row["last_modified"]),
            purchase_order_id=required_field(row, "tranid"),
            line_number=_whole(row, "linesequencenumber"),
            order_date=self._date(row["trandate"]),
            material_id=row.get("item_itemid"),
            description=row.get("memo"),
            quantity=_number(row, "quantity"),
            unit=row.get("unit_abbreviation"),
            unit_price=_number(row, "rate"),
            amount=_number(row, "foreignamount"),
            currency=required_field(row, "currency_symbol"),
            gl_account=row.get("acctnumber"),
            delivery_date=self._date(delivery) if delivery else None,
        )

    def _parse_vendor(self, row: dict) -> Vendor:
        return Vendor(
            connection=self.connection_name,
            source_id=row["id"],
            updated_at=self._instant(row["last_modified"]),
            vendor_id=required_field(row, "entityid"),
            # A vendor that is a person has no company name: its entity id names it.
            name=row.get("companyname") or required_field(row, "entityid"),
            country=row.get("country"),
            industry_code=row.get("custentity_naics_code"),
            tax_id=row.get("taxidnum"),
            currency=row.get("currency_symbol"),
        )

    def _parse_item(self, row: dict) -> Material:
        return Material(
            connection=self.connection_name,
            source_id=row["id"],
            updated_at=self._instant(row["last_modified"]),
            material_id=row["itemid"],
            description=row.get("displayname") or row["itemid"],
            material_group=row.get("class_name"),
            base_unit=row.get("stock_unit"),
            commodity_code=row.get("custitem_naics_code"),
        )

    def _parse_snapshot(self, row: dict) -> InventorySnapshot:
        return InventorySnapshot(
            connection=self.connection_name,
            source_id=row["id"],
            updated_at=self._instant(row["last_modified"]),
            snapshot_date=self._date(row["custrecord_ohs_date"]),
            material_id=row["item_itemid"],
            location=required_field(row, "location_name"),
            quantity=_number(row, "custrecord_ohs_quantity"),
            unit=row.get("unit_abbreviation"),
            unit_cost=_number(row, "custrecord_ohs_unit_cost", required=False),
            value=_number(row, "custrecord_ohs_value", required=False),
            currency=row.get("currency_symbol"),
        )


_SPEND_FILTER = "t.type IN ('VendBill', 'VendCred', 'CardChrg')"
_QUERIES: dict[RecordKind, _Query] = {
    RecordKind.SPEND: _Query(
        _SPEND_SELECT,
        "transaction t",
        _SPEND_FILTER,
        "t.trandate",
        "t.lastmodifieddate",
        "t.id, tl.id",
        NetSuiteSource._parse_spend,
        header_select=_SPEND_HEADER_SELECT,
    ),
    RecordKind.PURCHASE_ORDER: _Query(
        _ORDER_SELECT,
        "transaction t",
        "t.type = 'PurchOrd'",
        "t.trandate",
        "t.lastmodifieddate",
        "t.id",
        NetSuiteSource._parse_order,
    ),
    RecordKind.PURCHASE_ORDER_LINE: _Query(
        _ORDER_LINE_SELECT,
        "transaction t",
        "t.type = 'PurchOrd'",
        "t.trandate",
        "t.lastmodifieddate",
        "t.id, tl.id",
        NetSuiteSource._parse_order_line,
    ),
    RecordKind.VENDOR: _Query(
        _VENDOR_SELECT,
        "vendor v",
        "v.isinactive = 'F'",
        None,
        "v.lastmodifieddate",
        "v.id",
        NetSuiteSource._parse_vendor,
    ),
    RecordKind.MATERIAL: _Query(
        _ITEM_SELECT,
        "item i",
        "i.isinactive = 'F'",
        None,
        "i.lastmodifieddate",
        "i.id",
        NetSuiteSource._parse_item,
    ),
    RecordKind.INVENTORY: _Query(
        _SNAPSHOT_SELECT,
        f"{SNAPSHOT_RECORD} s",
        "s.isinactive = 'F'",
        "s.custrecord_ohs_date",
        "s.lastmodified",
        "s.id",
        NetSuiteSource._parse_snapshot,
    ),
}


def error_details(body: dict) -> str:
    """The `o:errorDetails` of a REST web services error body as one line: code and detail."""
    details = body.get("o:errorDetails")
    if not isinstance(details, list):
        return str(body.get("title") or "no error detail")
    parts = [
        f"{detail.get('o:errorCode', '')} {detail.get('detail', '')}".strip()
        for detail in details
        if isinstance(detail, dict)
    ]
    return "; ".join(part for part in parts if part)[:500] or "no error detail"


def _number(row: dict, name: str, *, required: bool = True) -> Decimal | None:
    """An amount or quantity, as text or a JSON number; NaN and infinities are refused."""
    number = decimal_field(row, name, required=required)
    if number is not None and not number.is_finite():
        raise ValueError(f"{name} {row.get(name)!r} is not a finite number")
    return number


def _true(value: object) -> bool:
    """A SuiteQL boolean: "T"/"F" as text, or a JSON boolean."""
    return value is True or (isinstance(value, str) and value.strip().upper() in ("T", "TRUE"))


def _whole(row: dict, name: str) -> int:
    """A whole number that may come as text ("3", "3.0") or a JSON number."""
    value = row.get(name)
    if value in (None, ""):
        raise ValueError(f"{name} is missing")
    try:
        number = decimal_field(row, name)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a whole number") from None
    if number is None or number != number.to_integral_value():
        raise ValueError(f"{name} {value!r} is not a whole number")
    return int(number)


def _order_status(value: object) -> str:
    """A purchase order status: the letter, or the letter after the type ("PurchOrd:B")."""
    letter = str(value or "").rsplit(":", 1)[-1].strip()
    return PO_STATUSES.get(letter, "open")


def _date_literal(day: dt.date) -> str:
    return f"TO_DATE('{day.isoformat()}', 'YYYY-MM-DD')"


def _source_id(row: dict) -> str:
    if "line_id" in row:
        return f"{row.get('transaction_id')}/{row['line_id']}"
    return str(row.get("transaction_id") or row.get("id"))
