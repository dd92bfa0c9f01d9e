"""Oracle E-Business Suite source: SQL on the R12.2 APPS tables through a read-only session.

Reads the multi-org tables an EBS reporting user is granted: AP_INVOICES_ALL and
AP_INVOICE_LINES_ALL (supplier invoices; type CREDIT is a credit memo with negative amounts,
EXPENSE REPORT carries corporate card charges, CANCELLED_DATE / CANCELLED_FLAG mark
cancellations), PO_HEADERS_ALL, PO_LINES_ALL with PO_LINE_LOCATIONS_ALL (need-by date) and
PO_DISTRIBUTIONS_ALL (charge account), AP_SUPPLIERS with AP_SUPPLIER_SITES_ALL (country),
MTL_SYSTEM_ITEMS_B of the item master organization, and GL_CODE_COMBINATIONS for the natural
account segment. ORG_ID restricts every read to the configured operating unit.

Paging is keyset paging on the table keys (`ORDER BY key ... FETCH FIRST n ROWS ONLY`, then
`key > last key`), so rows that change while a sync runs are neither skipped nor repeated.
Changes are found with LAST_UPDATE_DATE (inclusive); a DATE has seconds and no zone, so the
database time zone is a connection option. Before reading, the application user's password is
checked with FND_WEB_SEC.VALIDATE_LOGIN, as EBS integrations do; a refusal is an ErpAuthError.
The SQL keeps to what Oracle 12c and PostgreSQL both run (FETCH FIRST, GREATEST, COALESCE).

Limitation: this module runs its SQL with psycopg2 against the sandbox's PostgreSQL copy of the
APPS tables; in production the same statements would run through python-oracledb (thin mode)
with `:name` binds instead of `%(name)s`, and that driver is not wired in.
Limitation: EBS keeps only the current on-hand (MTL_ONHAND_QUANTITIES_DETAIL); day snapshots
are read from the customer extension table XXGL_ONHAND_DAILY_SNAPSHOTS that a nightly
concurrent program fills from it.
Limitation: EBS records no deletions; a purged document simply vanishes from re-reads of its
day, so `deleted_source_ids` stays empty.
Limitation: EBS has no purchase order date or total column: the order is dated by its
CREATION_DATE and its total is the sum of its lines' quantity times unit price.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import zoneinfo
from collections.abc import Callable, Iterator
from decimal import InvalidOperation
from typing import Any, ClassVar

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from pydantic import Field, PrivateAttr, ValidationError, field_validator
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

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
from erp_connector_dagster.erp.http import ErpAuthError, ErpRequestError
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

INVOICE_TYPES = {
    "STANDARD": SpendDocumentType.INVOICE,
    "DEBIT": SpendDocumentType.INVOICE,
    "MIXED": SpendDocumentType.INVOICE,
    "CREDIT": SpendDocumentType.CREDIT_NOTE,
    "EXPENSE REPORT": SpendDocumentType.CARD_CHARGE,
}
CLOSED_CODES = {
    "OPEN": "open",
    "CLOSED FOR INVOICE": "open",
    "CLOSED FOR RECEIVING": "received",
    "CLOSED": "closed",
    "FINALLY CLOSED": "closed",
}
# Column names reach the SQL text, so they come from these allow-lists only.
SEGMENT_COLUMNS = frozenset(f"segment{n}" for n in range(1, 31))
ATTRIBUTE_COLUMNS = frozenset(f"attribute{n}" for n in range(1, 16))


@dataclasses.dataclass(frozen=True)
class _Statement:
    """One kind's SELECT (with a `{where}` slot), its keyset, dates and parser."""

    select: str
    keys: tuple[str, ...]  # ORDER BY / keyset columns, unique together
    key_fields: tuple[str, ...]  # the same columns as the cursor names them
    date_column: str | None
    stamp_columns: tuple[str, ...]  # a row changed if any of these is at or after the cursor
    org_column: str | None
    parse: Callable[[OracleEbsSource, dict], CanonicalRecord]


_SPEND = """SELECT i.invoice_id, i.invoice_num, i.invoice_type_lookup_code, i.invoice_date,
 i.invoice_currency_code, i.cancelled_date, s.segment1 AS vendor_num,
 l.line_number, l.line_type_lookup_code, l.amount, l.quantity_invoiced,
 l.unit_meas_lookup_code, l.description, l.assets_tracking_flag, l.cancelled_flag,
 GREATEST(i.last_update_date, l.last_update_date) AS last_update_date,
 msi.segment1 AS item_number, gcc.{account} AS natural_account, ph.segment1 AS po_number
FROM ap_invoices_all i
 JOIN ap_invoice_lines_all l ON l.invoice_id = i.invoice_id
 LEFT JOIN ap_suppliers s ON s.vendor_id = i.vendor_id
 LEFT JOIN mtl_system_items_b msi ON msi.inventory_item_id = l.inventory_item_id
  AND msi.organization_id = %(master_org)s
 LEFT JOIN gl_code_combinations gcc ON gcc.code_combination_id = l.default_dist_ccid
 LEFT JOIN po_headers_all ph ON ph.po_header_id = l.po_header_id
WHERE l.line_type_lookup_code IN ('ITEM', 'FREIGHT', 'MISCELLANEOUS'){where}"""
_ORDERS = """SELECT h.po_header_id, h.segment1 AS po_number, h.creation_date, h.currency_code,
 h.closed_code, h.cancel_flag, h.last_update_date, s.segment1 AS vendor_num,
 (SELECT SUM(pl.quantity * pl.unit_price) FROM po_lines_all pl
   WHERE pl.po_header_id = h.po_header_id AND COALESCE(pl.cancel_flag, 'N') <> 'Y')
  AS total_amount
FROM po_headers_all h
 LEFT JOIN ap_suppliers s ON s.vendor_id = h.vendor_id
WHERE h.type_lookup_code = 'STANDARD'{where}"""
_ORDER_LINES = """SELECT h.po_header_id, h.segment1 AS po_number, h.creation_date,
 h.currency_code, pl.po_line_id, pl.line_num, pl.item_description, pl.unit_meas_lookup_code,
 pl.quantity, pl.unit_price, pl.quantity * pl.unit_price AS amount,
 GREATEST(h.last_update_date, pl.last_update_date) AS last_update_date,
 msi.segment1 AS item_number, ll.need_by_date, gcc.{account} AS natural_account
FROM po_lines_all pl
 JOIN po_headers_all h ON h.po_header_id = pl.po_header_id
 LEFT JOIN mtl_system_items_b msi ON msi.inventory_item_id = pl.item_id
  AND msi.organization_id = %(master_org)s
 LEFT JOIN po_line_locations_all ll ON ll.po_line_id = pl.po_line_id AND ll.shipment_num = 1
 LEFT JOIN po_distributions_all pd ON pd.line_location_id = ll.line_location_id
  AND pd.distribution_num = 1
 LEFT JOIN gl_code_combinations gcc ON gcc.code_combination_id = pd.code_combination_id
WHERE h.type_lookup_code = 'STANDARD' AND COALESCE(pl.cancel_flag, 'N') <> 'Y'{where}"""
_SUPPLIERS = """SELECT s.vendor_id, s.segment1, s.vendor_name, s.vat_registration_num,
 s.standard_industry_class, s.invoice_currency_code, s.last_update_date, ss.country
FROM ap_suppliers s
 LEFT JOIN ap_supplier_sites_all ss ON ss.vendor_id = s.vendor_id
  AND ss.primary_pay_site_flag = 'Y'{site_org}
WHERE COALESCE(s.enabled_flag, 'Y') = 'Y'{where}"""
_ITEMS = """SELECT msi.inventory_item_id, msi.segment1, msi.description, msi.item_type,
 msi.primary_uom_code, msi.{naics} AS naics_code, msi.last_update_date
FROM mtl_system_items_b msi
WHERE msi.organization_id = %(master_org)s{where}"""
_SNAPSHOTS = """SELECT x.snapshot_id, x.snapshot_date, msi.segment1 AS item_number,
 x.subinventory_code, x.primary_quantity, x.primary_uom_code, x.item_cost, x.onhand_value,
 x.currency_code, x.last_update_date
FROM xxgl_onhand_daily_snapshots x
 JOIN mtl_system_items_b msi ON msi.inventory_item_id = x.inventory_item_id
  AND msi.organization_id = x.organization_id
WHERE 1 = 1{where}"""


class OracleEbsSource(ErpSource):
    """An Oracle E-Business Suite instance read with SQL on its APPS tables."""

    erp_type: ClassVar[str] = "oracle_ebs"
    api_version: ClassVar[str] = "E-Business Suite R12.2 APPS tables (SQL)"

    apps_username: str = Field(description="EBS application user the sync runs as.")
    apps_password: str = Field(repr=False, description="That user's EBS password.")
    org_id: int | None = Field(default=None, description="Operating unit (ORG_ID) to read.")
    master_organization_id: int = Field(description="Item master inventory organization id.")
    natural_account_column: str = Field(
        default="segment3", description="GL_CODE_COMBINATIONS segment holding the account."
    )
    item_naics_column: str = Field(
        default="attribute1", description="MTL_SYSTEM_ITEMS_B flexfield column with NAICS."
    )
    database_timezone: str = Field(
        default="UTC", description="Time zone of the database server, which DATEs are in."
    )

    _connection: Any = PrivateAttr(default=None)
    # The instance the private state belongs to: a model_copy builds its own.
    _owner: int = PrivateAttr(default=0)

    @field_validator("natural_account_column")
    @classmethod
    def _segment(cls, value: str) -> str:
        if value.lower() not in SEGMENT_COLUMNS:
            raise ValueError("natural_account_column must be one of SEGMENT1..SEGMENT30")
        return value.lower()

    @field_validator("item_naics_column")
    @classmethod
    def _attribute(cls, value: str) -> str:
        if value.lower() not in ATTRIBUTE_COLUMNS:
            raise ValueError("item_naics_column must be one of ATTRIBUTE1..ATTRIBUTE15")
        return value.lower()

    @field_validator("database_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zoneinfo.ZoneInfo(value)
        return value

    # Session

    def _session(self) -> psycopg2.extensions.connection:
        if self._owner != id(self):
            # A copy (model_copy) may differ in credentials: it opens its own session.
            self._owner, self._connection = id(self), None
        if self._connection is None or self._connection.closed:
            connection = psycopg2.connect(self.base_url, connect_timeout=int(self.timeout_seconds))
            connection.set_session(readonly=True, autocommit=True)
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT fnd_web_sec.validate_login(%s, %s) FROM dual",
                        (self.apps_username, resolve_secret(self.apps_password)),
                    )
                    (valid,) = cursor.fetchone()
            except psycopg2.Error:
                connection.close()
                raise
            if valid != "Y":
                connection.close()
                raise ErpAuthError(
                    self.connection_name,
                    f"EBS refused the login of application user {self.apps_username}",
                )
            self._connection = connection
        return self._connection

    def _query(self, statement: str, params: dict) -> list[dict]:
        """Run one page's statement; a dropped session is reopened and the page read again."""

        @retry(
            retry=retry_if_exception_type(psycopg2.OperationalError),
            wait=wait_exponential_jitter(initial=0.5, max=30),
            stop=stop_after_attempt(self.max_retries + 1),
            reraise=True,
        )
        def run() -> list[dict]:
            try:
                with self._session().cursor(
                    cursor_factory=psycopg2.extras.RealDictCursor
                ) as cursor:
                    cursor.execute(statement, params)
                    return [dict(row) for row in cursor.fetchall()]
            except psycopg2.OperationalError:
                logger.warning(
                    "EBS session lost; reconnecting", extra={"connection": self.connection_name}
                )
                self._close()
                raise

        try:
            return run()
        except psycopg2.Error as error:
            raise ErpRequestError(
                self.connection_name, f"EBS query failed: {type(error).__name__}"
            ) from None

    def _close(self) -> None:
        if self._connection is not None and self._owner == id(self):
            try:
                self._connection.close()
            except psycopg2.Error:
                pass
        self._connection = None

    def _probe(self) -> None:
        # A fresh session, so the probe proves the login and not an old connection.
        self._close()
        self._query("SELECT dummy FROM dual", {})

    # Reading

    def fetch(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        statement = _STATEMENTS[kind]
        logger.info(
            "ebs %s sync started",
            kind.value,
            extra={"connection": self.connection_name, "window": str(window)},
        )
        conditions, params = self._window(statement, window)
        order = ", ".join(statement.keys)
        last_key: tuple | None = None
        total = 0
        while True:
            page_conditions = list(conditions)
            page_params = dict(params, page_size=self.page_size)
            if last_key is not None:
                page_conditions.append(_after_key(statement.keys))
                page_params.update({f"key{n}": value for n, value in enumerate(last_key)})
            rows = self._query(
                self._sql(statement, page_conditions)
                + f"\nORDER BY {order}\nFETCH FIRST %(page_size)s ROWS ONLY",
                page_params,
            )
            if not rows:
                break
            batch = self.records_from_rows(kind, rows)
            total += len(batch.records)
            yield batch
            if len(rows) < self.page_size:
                break
            last_key = tuple(rows[-1][name] for name in statement.key_fields)
        logger.info(
            "ebs %s sync read %d records",
            kind.value,
            total,
            extra={"connection": self.connection_name},
        )

    def changed_days(self, kind: RecordKind, since: dt.datetime) -> ChangeSummary:
        statement = _STATEMENTS[kind]
        conditions, params = self._window(statement, SyncWindow(changed_since=since))
        changed = self._sql(statement, conditions)
        # Only dates leave the database: one row per day with its latest change.
        if statement.date_column:
            day = f"changed.{_alias(statement.date_column)}"
            query = (
                f"SELECT {day} AS partition_day, MAX(changed.last_update_date) AS "
                f"last_change FROM ({changed}) changed GROUP BY {day}"
            )
        else:
            query = (
                f"SELECT NULL AS partition_day, MAX(changed.last_update_date) AS "
                f"last_change FROM ({changed}) changed"
            )
        summary = ChangeSummary()
        for row in self._query(query, params):
            if row["partition_day"] is not None:
                summary.days.add(row["partition_day"].date())
            if row["last_change"] is None:
                continue
            stamp = self._instant(row["last_change"])
            if summary.high_watermark is None or stamp > summary.high_watermark:
                summary.high_watermark = stamp
        return summary

    def records_from_rows(self, kind: RecordKind, rows: list[dict]) -> RecordBatch:
        """Canonical records (and rejects with their reason) from rows of this kind's SELECT."""
        batch = RecordBatch()
        seen: set[str] = set()
        for row in rows:
            try:
                record = _STATEMENTS[kind].parse(self, row)
            except (ValueError, KeyError, InvalidOperation, ValidationError) as error:
                batch.rejected.append(self._rejected(kind, row, error))
                continue
            if record.natural_key not in seen:
                seen.add(record.natural_key)
                batch.records.append(record)
        stamps = [r.updated_at for r in batch.records if r.updated_at is not None]
        batch.high_watermark = max(stamps, default=None)
        return batch

    def _window(self, statement: _Statement, window: SyncWindow) -> tuple[list[str], dict]:
        conditions: list[str] = []
        params: dict[str, Any] = {"master_org": self.master_organization_id}
        if statement.date_column and window.start is not None:
            conditions.append(f"{statement.date_column} >= %(start)s")
            params["start"] = dt.datetime.combine(window.start, dt.time())
        if statement.date_column and window.end is not None:
            conditions.append(f"{statement.date_column} < %(end)s")
            params["end"] = dt.datetime.combine(window.end, dt.time())
        if window.changed_since is not None:
            changed = " OR ".join(f"{column} >= %(since)s" for column in statement.stamp_columns)
            conditions.append(f"({changed})")
            params["since"] = self._database_time(window.changed_since)
        if self.org_id is not None:
            params["org_id"] = self.org_id
            if statement.org_column:
                conditions.append(f"{statement.org_column} = %(org_id)s")
        return conditions, params

    def _sql(self, statement: _Statement, conditions: list[str]) -> str:
        where = "".join(f"\n AND {condition}" for condition in conditions)
        site_org = "\n  AND ss.org_id = %(org_id)s" if self.org_id is not None else ""
        return statement.select.format(
            where=where,
            account=self.natural_account_column,
            naics=self.item_naics_column,
            site_org=site_org,
        )

    def _database_time(self, instant: dt.datetime) -> dt.datetime:
        # DATE columns hold whole seconds: flooring keeps the cursor inclusive.
        local = instant.astimezone(zoneinfo.ZoneInfo(self.database_timezone))
        return local.replace(tzinfo=None, microsecond=0)

    def _instant(self, value: dt.datetime) -> dt.datetime:
        zone = zoneinfo.ZoneInfo(self.database_timezone)
        return value.replace(tzinfo=zone).astimezone(dt.timezone.utc)

    def _rejected(self, kind: RecordKind, row: dict, error: Exception) -> RejectedRecord:
        statement = _STATEMENTS[kind]
        source_id = "/".join(str(row.get(name)) for name in statement.key_fields)
        day = row.get(_alias(statement.date_column)) if statement.date_column else None
        return RejectedRecord(
            connection=self.connection_name,
            kind=kind,
            source_id=source_id,
            reason=rejection_reason(error),
            payload={key: _plain(value) for key, value in row.items()},
            partition_date=day.date() if isinstance(day, dt.datetime) else None,
        )

    # Rows to canonical records

    def _parse_spend(self, row: dict) -> SpendRecord:
        invoice_type = row["invoice_type_lookup_code"]
        if invoice_type not in INVOICE_TYPES:
            raise ValueError(f"invoice type {invoice_type!r} is not spend")
        document_type = INVOICE_TYPES[invoice_type]
        amount = decimal_field(row, "amount")
        quantity = decimal_field(row, "quantity_invoiced", required=False)
        if document_type is SpendDocumentType.CREDIT_NOTE:
            amount = -abs(amount)
            quantity = -abs(quantity) if quantity is not None else None
        cancelled = row.get("cancelled_date") is not None or row.get("cancelled_flag") == "Y"
        return SpendRecord(
            connection=self.connection_name,
            source_id=f"{row['invoice_id']}/{row['line_number']}",
            updated_at=self._instant(row["last_update_date"]),
            status=RecordStatus.VOIDED if cancelled else RecordStatus.ACTIVE,
            document_id=row["invoice_num"],
            line_number=int(row["line_number"]),
            document_type=document_type,
            transaction_date=row["invoice_date"].date(),
            vendor_id=row.get("vendor_num"),
            material_id=row.get("item_number"),
            gl_account=row.get("natural_account"),
            description=row.get("description"),
            amount=amount,
            currency=required_field(row, "invoice_currency_code"),
            quantity=quantity,
            unit=row.get("unit_meas_lookup_code"),
            is_capex=row.get("assets_tracking_flag") == "Y",
            purchase_order_id=row.get("po_number"),
        )

    def _parse_order(self, row: dict) -> PurchaseOrder:
        return PurchaseOrder(
            connection=self.connection_name,
            source_id=str(row["po_header_id"]),
            updated_at=self._instant(row["last_update_date"]),
            status=RecordStatus.VOIDED if row.get("cancel_flag") == "Y" else RecordStatus.ACTIVE,
            purchase_order_id=row["po_number"],
            vendor_id=row.get("vendor_num"),
            order_date=row["creation_date"].date(),
            currency=required_field(row, "currency_code"),
            total_amount=decimal_field(row, "total_amount"),
            order_status=CLOSED_CODES.get(row.get("closed_code") or "OPEN", "open"),
        )

    def _parse_order_line(self, row: dict) -> PurchaseOrderLine:
        need_by = row.get("need_by_date")
        return PurchaseOrderLine(
            connection=self.connection_name,
            source_id=str(row["po_line_id"]),
            updated_at=self._instant(row["last_update_date"]),
            purchase_order_id=row["po_number"],
            line_number=int(row["line_num"]),
            order_date=row["creation_date"].date(),
            material_id=row.get("item_number"),
            description=row.get("item_description"),
            quantity=decimal_field(row, "quantity"),
            unit=row.get("unit_meas_lookup_code"),
            unit_price=decimal_field(row, "unit_price"),
            amount=decimal_field(row, "amount"),
            currency=required_field(row, "currency_code"),
            gl_account=row.get("natural_account"),
            delivery_date=need_by.date() if need_by else None,
        )

    def _parse_supplier(self, row: dict) -> Vendor:
        return Vendor(
            connection=self.connection_name,
            source_id=str(row["vendor_id"]),
            updated_at=self._instant(row["last_update_date"]),
            vendor_id=required_field(row, "segment1"),
            name=required_field(row, "vendor_name"),
            country=row.get("country"),
            industry_code=row.get("standard_industry_class"),
            tax_id=row.get("vat_registration_num"),
            currency=row.get("invoice_currency_code"),
        )

    def _parse_item(self, row: dict) -> Material:
        return Material(
            connection=self.connection_name,
            source_id=str(row["inventory_item_id"]),
            updated_at=self._instant(row["last_update_date"]),
            material_id=required_field(row, "segment1"),
            description=row.get("description") or row["segment1"],
            material_group=row.get("item_type"),
            base_unit=row.get("primary_uom_code"),
            commodity_code=row.get("naics_code"),
        )

    def _parse_snapshot(self, row: dict) -> InventorySnapshot:
        return InventorySnapshot(
            connection=self.connection_name,
            source_id=str(row["snapshot_id"]),
            updated_at=self._instant(row["last_update_date"]),
            snapshot_date=row["snapshot_date"].date(),
            material_id=row["item_number"],
            location=required_field(row, "subinventory_code"),
            quantity=decimal_field(row, "primary_quantity"),
            unit=row.get("primary_uom_code"),
            unit_cost=decimal_field(row, "item_cost", required=False),
            value=decimal_field(row, "onhand_value", required=False),
            currency=row.get("currency_code"),
        )


_STATEMENTS: dict[RecordKind, _Statement] = {
    RecordKind.SPEND: _Statement(
        _SPEND,
        ("l.invoice_id", "l.line_number"),
        ("invoice_id", "line_number"),
        "i.invoice_date",
        ("i.last_update_date", "l.last_update_date"),
        "i.org_id",
        OracleEbsSource._parse_spend,
    ),
    RecordKind.PURCHASE_ORDER: _Statement(
        _ORDERS,
        ("h.po_header_id",),
        ("po_header_id",),
        "h.creation_date",
        ("h.last_update_date",),
        "h.org_id",
        OracleEbsSource._parse_order,
    ),
    RecordKind.PURCHASE_ORDER_LINE: _Statement(
        _ORDER_LINES,
        ("pl.po_line_id",),
        ("po_line_id",),
        "h.creation_date",
        ("h.last_update_date", "pl.last_update_date"),
        "h.org_id",
        OracleEbsSource._parse_order_line,
    ),
    RecordKind.VENDOR: _Statement(
        _SUPPLIERS,
        ("s.vendor_id",),
        ("vendor_id",),
        None,
        ("s.last_update_date",),
        None,
        OracleEbsSource._parse_supplier,
    ),
    RecordKind.MATERIAL: _Statement(
        _ITEMS,
        ("msi.inventory_item_id",),
        ("inventory_item_id",),
        None,
        ("msi.last_update_date",),
        None,
        OracleEbsSource._parse_item,
    ),
    RecordKind.INVENTORY: _Statement(
        _SNAPSHOTS,
        ("x.snapshot_id",),
        ("snapshot_id",),
        "x.snapshot_date",
        ("x.last_update_date",),
        None,
        OracleEbsSource._parse_snapshot,
    ),
}


def _alias(column: str | None) -> str:
    return (column or "").split(".")[-1]


def _after_key(keys: tuple[str, ...]) -> str:
    """Rows after the last key read: (a > x) OR (a = x AND b > y), portable to Oracle."""
    clauses = []
    for n in range(len(keys)):
        equal = [f"{keys[m]} = %(key{m})s" for m in range(n)]
        clauses.append(" AND ".join([*equal, f"{keys[n]} > %(key{n})s"]))
    return "(" + " OR ".join(f"({clause})" for clause in clauses) + ")"


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
