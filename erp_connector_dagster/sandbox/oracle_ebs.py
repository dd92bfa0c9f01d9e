"""Sandbox Oracle E-Business Suite (R12.2): the APPS tables a reporting user reads, in PostgreSQL.

`prepare_database` builds, in a schema per connection (`sandbox_<name>`), the multi-org tables
with EBS's own column names: AP_INVOICES_ALL, AP_INVOICE_LINES_ALL, PO_HEADERS_ALL,
PO_LINES_ALL, PO_LINE_LOCATIONS_ALL, PO_DISTRIBUTIONS_ALL, AP_SUPPLIERS, AP_SUPPLIER_SITES_ALL,
MTL_SYSTEM_ITEMS_B, MTL_ONHAND_QUANTITIES_DETAIL, GL_CODE_COMBINATIONS, FND_USER, the DUAL
view, FND_WEB_SEC.VALIDATE_LOGIN (the EBS check of an application user's password), and the
customer extension XXGL_ONHAND_DAILY_SNAPSHOTS (see the source module). It returns a
`postgresql://` URL whose search_path is that schema.

EBS stores what the sandbox company says the way EBS does: credit memos as invoice type CREDIT
with negative amounts, card charges as EXPENSE REPORT invoices, cancellations as
CANCELLED_DATE / CANCELLED_FLAG, purchase order totals only as the sum of their lines, DATE
columns to the second in the database time zone (UTC here). An amount EBS could not hold (the
company's deliberately broken lines) is stored as NULL.

The company's history is rendered once per database into a base schema and copied for each
connection, so a test pays for it once; `amend`, `delete` and `add` on the company are then
applied to the connection's tables as they happen, re-rendering the day they touch.

Limitation: the sandbox holds the last HISTORY_DAYS days of the company's history (plus any day
a change touches), which keeps preparing it to a few seconds.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import io
import threading
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from erp_connector_dagster.records import RecordKind, RecordStatus, SpendDocumentType
from erp_connector_dagster.sandbox.company import INDUSTRIES, SandboxCompany
from erp_connector_dagster.sandbox.netsuite import (
    internal_id,
    line_value,
    order_documents,
    spend_documents,
)

SANDBOX_CREDENTIALS: dict[str, str] = {
    "apps_username": "GL_CARBON_SYNC",
    "apps_password": "Welcome1-sandbox-9f3c",
}
SECRET_FIELDS = frozenset({"apps_password"})
ORG_ID = 204  # the operating unit, and the inventory (master) organization
SANDBOX_OPTIONS: dict[str, object] = {"org_id": ORG_ID, "master_organization_id": ORG_ID}
HISTORY_DAYS = 70
FUNCTIONAL_CURRENCY = "EUR"
INVOICE_TYPES = {
    SpendDocumentType.INVOICE: "STANDARD",
    SpendDocumentType.CREDIT_NOTE: "CREDIT",
    SpendDocumentType.CARD_CHARGE: "EXPENSE REPORT",
}
CLOSED_CODES = {"open": "OPEN", "received": "CLOSED FOR RECEIVING", "closed": "CLOSED"}

# (table, columns with PostgreSQL types standing in for NUMBER / VARCHAR2 / DATE)
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "ap_suppliers": (
        ("vendor_id", "bigint primary key"),
        ("segment1", "varchar(30)"),
        ("vendor_name", "varchar(240)"),
        ("vendor_type_lookup_code", "varchar(30)"),
        ("vat_registration_num", "varchar(20)"),
        ("standard_industry_class", "varchar(25)"),
        ("invoice_currency_code", "varchar(15)"),
        ("enabled_flag", "varchar(1)"),
        ("end_date_active", "timestamp(0)"),
        ("creation_date", "timestamp(0)"),
        ("last_update_date", "timestamp(0)"),
    ),
    "ap_supplier_sites_all": (
        ("vendor_site_id", "bigint primary key"),
        ("vendor_id", "bigint"),
        ("vendor_site_code", "varchar(15)"),
        ("org_id", "bigint"),
        ("country", "varchar(25)"),
        ("primary_pay_site_flag", "varchar(1)"),
        ("invoice_currency_code", "varchar(15)"),
        ("last_update_date", "timestamp(0)"),
    ),
    "mtl_system_items_b": (
        ("inventory_item_id", "bigint"),
        ("organization_id", "bigint"),
        ("segment1", "varchar(40)"),
        ("description", "varchar(240)"),
        ("item_type", "varchar(30)"),
        ("primary_uom_code", "varchar(3)"),
        ("inventory_item_status_code", "varchar(10)"),
        ("attribute1", "varchar(240)"),
        ("creation_date", "timestamp(0)"),
        ("last_update_date", "timestamp(0)"),
    ),
    "gl_code_combinations": (
        ("code_combination_id", "bigint primary key"),
        ("segment1", "varchar(25)"),
        ("segment2", "varchar(25)"),
        ("segment3", "varchar(25)"),
        ("segment4", "varchar(25)"),
        ("segment5", "varchar(25)"),
        ("account_type", "varchar(1)"),
        ("enabled_flag", "varchar(1)"),
    ),
    "ap_invoices_all": (
        ("invoice_id", "bigint primary key"),
        ("invoice_num", "varchar(50)"),
        ("invoice_type_lookup_code", "varchar(25)"),
        ("invoice_date", "timestamp(0)"),
        ("gl_date", "timestamp(0)"),
        ("vendor_id", "bigint"),
        ("vendor_site_id", "bigint"),
        ("invoice_currency_code", "varchar(15)"),
        ("invoice_amount", "numeric"),
        ("cancelled_date", "timestamp(0)"),
        ("cancelled_amount", "numeric"),
        ("source", "varchar(25)"),
        ("description", "varchar(240)"),
        ("org_id", "bigint"),
        ("creation_date", "timestamp(0)"),
        ("last_update_date", "timestamp(0)"),
    ),
    "ap_invoice_lines_all": (
        ("invoice_id", "bigint"),
        ("line_number", "bigint"),
        ("line_type_lookup_code", "varchar(25)"),
        ("amount", "numeric"),
        ("quantity_invoiced", "numeric"),
        ("unit_price", "numeric"),
        ("unit_meas_lookup_code", "varchar(25)"),
        ("inventory_item_id", "bigint"),
        ("item_description", "varchar(240)"),
        ("description", "varchar(240)"),
        ("default_dist_ccid", "bigint"),
        ("assets_tracking_flag", "varchar(1)"),
        ("cancelled_flag", "varchar(1)"),
        ("po_header_id", "bigint"),
        ("accounting_date", "timestamp(0)"),
        ("org_id", "bigint"),
        ("creation_date", "timestamp(0)"),
        ("last_update_date", "timestamp(0)"),
    ),
    "po_headers_all": (
        ("po_header_id", "bigint primary key"),
        ("segment1", "varchar(20)"),
        ("type_lookup_code", "varchar(25)"),
        ("vendor_id", "bigint"),
        ("vendor_site_id", "bigint"),
        ("currency_code", "varchar(15)"),
        ("authorization_status", "varchar(25)"),
        ("closed_code", "varchar(25)"),
        ("cancel_flag", "varchar(1)"),
        ("org_id", "bigint"),
        ("creation_date", "timestamp(0)"),
        ("last_update_date", "timestamp(0)"),
    ),
    "po_lines_all": (
        ("po_line_id", "bigint primary key"),
        ("po_header_id", "bigint"),
        ("line_num", "bigint"),
        ("item_id", "bigint"),
        ("item_description", "varchar(240)"),
        ("unit_meas_lookup_code", "varchar(25)"),
        ("quantity", "numeric"),
        ("unit_price", "numeric"),
        ("cancel_flag", "varchar(1)"),
        ("closed_code", "varchar(25)"),
        ("org_id", "bigint"),
        ("creation_date", "timestamp(0)"),
        ("last_update_date", "timestamp(0)"),
    ),
    "po_line_locations_all": (
        ("line_location_id", "bigint primary key"),
        ("po_line_id", "bigint"),
        ("po_header_id", "bigint"),
        ("shipment_num", "bigint"),
        ("quantity", "numeric"),
        ("need_by_date", "timestamp(0)"),
        ("org_id", "bigint"),
        ("last_update_date", "timestamp(0)"),
    ),
    "po_distributions_all": (
        ("po_distribution_id", "bigint primary key"),
        ("line_location_id", "bigint"),
        ("po_line_id", "bigint"),
        ("po_header_id", "bigint"),
        ("distribution_num", "bigint"),
        ("code_combination_id", "bigint"),
        ("org_id", "bigint"),
        ("last_update_date", "timestamp(0)"),
    ),
    "mtl_onhand_quantities_detail": (
        ("onhand_quantities_id", "bigint primary key"),
        ("inventory_item_id", "bigint"),
        ("organization_id", "bigint"),
        ("subinventory_code", "varchar(10)"),
        ("primary_transaction_quantity", "numeric"),
        ("transaction_uom_code", "varchar(3)"),
        ("date_received", "timestamp(0)"),
        ("last_update_date", "timestamp(0)"),
    ),
    "xxgl_onhand_daily_snapshots": (
        ("snapshot_id", "bigint primary key"),
        ("snapshot_date", "timestamp(0)"),
        ("inventory_item_id", "bigint"),
        ("organization_id", "bigint"),
        ("subinventory_code", "varchar(10)"),
        ("primary_quantity", "numeric"),
        ("primary_uom_code", "varchar(3)"),
        ("item_cost", "numeric"),
        ("onhand_value", "numeric"),
        ("currency_code", "varchar(15)"),
        ("last_update_date", "timestamp(0)"),
    ),
    "fnd_user": (
        ("user_id", "bigint primary key"),
        ("user_name", "varchar(100)"),
        ("encrypted_user_password", "varchar(100)"),
        ("start_date", "timestamp(0)"),
        ("end_date", "timestamp(0)"),
    ),
}
DAY_TABLES = {
    RecordKind.SPEND: ("ap_invoices_all", "ap_invoice_lines_all"),
    RecordKind.PURCHASE_ORDER: (
        "po_headers_all",
        "po_lines_all",
        "po_line_locations_all",
        "po_distributions_all",
    ),
    RecordKind.INVENTORY: ("xxgl_onhand_daily_snapshots",),
}
KIND_GROUPS = {
    RecordKind.SPEND: RecordKind.SPEND,
    RecordKind.PURCHASE_ORDER: RecordKind.PURCHASE_ORDER,
    RecordKind.PURCHASE_ORDER_LINE: RecordKind.PURCHASE_ORDER,
    RecordKind.INVENTORY: RecordKind.INVENTORY,
    RecordKind.VENDOR: RecordKind.VENDOR,
    RecordKind.MATERIAL: RecordKind.MATERIAL,
}
_PREPARE_LOCK = threading.Lock()


def _stamp(value: dt.datetime | str | None) -> dt.datetime | None:
    """An Oracle DATE: to the second, in the database time zone (UTC), without a zone."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time())


def _ccid(gl_account: str | None) -> int | None:
    return internal_id("ccid", gl_account) if gl_account else None


def _amount(value) -> Decimal | None:
    """A broken amount EBS could not have stored becomes NULL."""
    if value is None or isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value)) if str(value).strip() else None
    except InvalidOperation:
        return None


# Rendering the company as EBS rows


def _master_rows(company: SandboxCompany, kind: RecordKind) -> dict[str, list[tuple]]:
    if kind is RecordKind.VENDOR:
        suppliers, sites = [], []
        for vendor in company.vendors():
            vendor_id = internal_id("vendor", vendor.vendor_id)
            stamp = _stamp(vendor.updated_at)
            suppliers.append(
                (
                    vendor_id,
                    vendor.vendor_id,
                    vendor.name,
                    "VENDOR",
                    vendor.tax_id,
                    vendor.industry_code,
                    vendor.currency,
                    "Y",
                    None,
                    stamp,
                    stamp,
                )
            )
            sites.append(
                (
                    internal_id("vendor_site", vendor.vendor_id),
                    vendor_id,
                    "MAIN",
                    ORG_ID,
                    vendor.country,
                    "Y",
                    vendor.currency,
                    stamp,
                )
            )
        return {"ap_suppliers": suppliers, "ap_supplier_sites_all": sites}
    items = []
    for material in company.materials():
        stamp = _stamp(material.updated_at)
        items.append(
            (
                internal_id("item", material.material_id),
                ORG_ID,
                material.material_id,
                material.description,
                material.material_group,
                material.base_unit,
                "Active",
                material.commodity_code,
                stamp,
                stamp,
            )
        )
    return {"mtl_system_items_b": items}


def _code_combinations(gl_accounts: Iterable[str]) -> list[tuple]:
    return [
        (_ccid(gl), "01", "000", gl, "0000", "000", "A" if gl.startswith("15") else "E", "Y")
        for gl in sorted(set(gl_accounts))
    ]


def _day_rows(company: SandboxCompany, kind: RecordKind, day: dt.date) -> dict[str, list[tuple]]:
    if kind is RecordKind.SPEND:
        return _spend_rows(company, day)
    if kind is RecordKind.PURCHASE_ORDER:
        return _order_rows(company, day)
    snapshots = [
        (
            internal_id("snapshot", s.source_id),
            _midnight(s.snapshot_date),
            internal_id("item", s.material_id),
            ORG_ID,
            s.location,
            s.quantity,
            s.unit,
            s.unit_cost,
            s.value,
            s.currency,
            _stamp(s.updated_at),
        )
        for s in company.records(RecordKind.INVENTORY, day)
    ]
    return {"xxgl_onhand_daily_snapshots": snapshots}


def _spend_rows(company: SandboxCompany, day: dt.date) -> dict[str, list[tuple]]:
    invoices, lines = [], []
    for document in spend_documents(company, day):
        invoice_id = internal_id("ap_invoice", document.document_id)
        vendor_id = internal_id("vendor", document.vendor_id) if document.vendor_id else None
        amounts = [_amount(line_value(line, "amount")) for line in document.lines]
        total = sum(amounts, Decimal(0)) if None not in amounts else None
        modified = _stamp(document.last_modified)
        invoices.append(
            (
                invoice_id,
                document.document_id,
                INVOICE_TYPES[document.document_type],
                _midnight(day),
                _midnight(day),
                vendor_id,
                internal_id("vendor_site", document.vendor_id) if document.vendor_id else None,
                document.currency,
                total,
                modified if document.voided else None,
                total if document.voided else None,
                "MANUAL INVOICE ENTRY",
                None,
                ORG_ID,
                _stamp(document.created),
                modified,
            )
        )
        for line, amount in zip(document.lines, amounts, strict=True):
            material_id = line_value(line, "material_id")
            gl_account = line_value(line, "gl_account")
            status = line_value(line, "status")
            lines.append(
                (
                    invoice_id,
                    line_value(line, "line_number"),
                    "ITEM",
                    amount,
                    line_value(line, "quantity"),
                    None,
                    line_value(line, "unit"),
                    internal_id("item", material_id) if material_id else None,
                    line_value(line, "description") if material_id else None,
                    line_value(line, "description"),
                    _ccid(gl_account),
                    "Y" if gl_account and gl_account.startswith("15") else "N",
                    "Y" if status == RecordStatus.VOIDED else "N",
                    None,
                    _midnight(day),
                    ORG_ID,
                    _stamp(document.created),
                    _stamp(line_value(line, "updated_at")),
                )
            )
    return {"ap_invoices_all": invoices, "ap_invoice_lines_all": lines}


def _order_rows(company: SandboxCompany, day: dt.date) -> dict[str, list[tuple]]:
    headers, lines, locations, distributions = [], [], [], []
    for document in order_documents(company, day):
        order = document.order
        header_id = internal_id("po_header", order.purchase_order_id)
        # EBS has no order date column: the order is dated by its creation.
        created = _midnight(order.order_date) + dt.timedelta(hours=12)
        headers.append(
            (
                header_id,
                order.purchase_order_id,
                "STANDARD",
                internal_id("vendor", order.vendor_id) if order.vendor_id else None,
                internal_id("vendor_site", order.vendor_id) if order.vendor_id else None,
                order.currency,
                "APPROVED",
                CLOSED_CODES.get(order.order_status, "OPEN"),
                "Y" if order.status is RecordStatus.VOIDED else "N",
                ORG_ID,
                created,
                _stamp(document.last_modified),
            )
        )
        for line in document.lines:
            key = f"{order.purchase_order_id}/{line.line_number}"
            line_id = internal_id("po_line", key)
            location_id = internal_id("po_line_location", key)
            stamp = _stamp(line.updated_at)
            lines.append(
                (
                    line_id,
                    header_id,
                    line.line_number,
                    internal_id("item", line.material_id) if line.material_id else None,
                    line.description,
                    line.unit,
                    line.quantity,
                    line.unit_price,
                    "N",
                    "OPEN",
                    ORG_ID,
                    created,
                    stamp,
                )
            )
            locations.append(
                (
                    location_id,
                    line_id,
                    header_id,
                    1,
                    line.quantity,
                    _midnight(line.delivery_date) if line.delivery_date else None,
                    ORG_ID,
                    stamp,
                )
            )
            distributions.append(
                (
                    internal_id("po_distribution", key),
                    location_id,
                    line_id,
                    header_id,
                    1,
                    _ccid(line.gl_account),
                    ORG_ID,
                    stamp,
                )
            )
    return {
        "po_headers_all": headers,
        "po_lines_all": lines,
        "po_line_locations_all": locations,
        "po_distributions_all": distributions,
    }


def _onhand_rows(company: SandboxCompany, day: dt.date) -> list[tuple]:
    """Current on-hand (MTL_ONHAND_QUANTITIES_DETAIL) is the latest day's count."""
    return [
        (
            internal_id("onhand", f"{s.material_id}@{s.location}"),
            internal_id("item", s.material_id),
            ORG_ID,
            s.location,
            s.quantity,
            s.unit,
            _midnight(day),
            _stamp(s.updated_at),
        )
        for s in company.records(RecordKind.INVENTORY, day)
    ]


# Loading


def _copy(cursor, schema: str, table: str, rows: list[tuple]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow(["\\N" if value is None else value for value in row])
    buffer.seek(0)
    columns = ", ".join(name for name, _ in TABLES[table])
    cursor.copy_expert(
        f"COPY {schema}.{table} ({columns}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buffer
    )


def _create_tables(cursor, schema: str) -> None:
    cursor.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    for table, columns in TABLES.items():
        definition = ", ".join(f"{name} {kind}" for name, kind in columns)
        cursor.execute(f"CREATE TABLE {schema}.{table} ({definition})")


def _history_days(company: SandboxCompany) -> list[dt.date]:
    return company.business_days(company.end - dt.timedelta(days=HISTORY_DAYS), company.end)


def _fingerprint(company: SandboxCompany) -> str:
    facts = (
        company.seed,
        company.start,
        company.end,
        company.vendor_count,
        company.material_count,
        HISTORY_DAYS,
    )
    return hashlib.sha256(repr(facts).encode()).hexdigest()[:12]


def _build_base(cursor, schema: str, company: SandboxCompany) -> None:
    _create_tables(cursor, schema)
    days = _history_days(company)
    for kind in (RecordKind.VENDOR, RecordKind.MATERIAL):
        for table, rows in _master_rows(company, kind).items():
            _copy(cursor, schema, table, rows)
    gl_accounts = {gl for _, _, gl, _ in INDUSTRIES} | {"5900"}
    for kind in (RecordKind.SPEND, RecordKind.PURCHASE_ORDER, RecordKind.INVENTORY):
        for day in days:
            for table, rows in _day_rows(company, kind, day).items():
                _copy(cursor, schema, table, rows)
    _copy(cursor, schema, "gl_code_combinations", _code_combinations(gl_accounts))
    _copy(cursor, schema, "mtl_onhand_quantities_detail", _onhand_rows(company, days[-1]))


# The body names FND_USER unqualified: each connection's search_path picks its own table.
_LOGIN_FUNCTION = """
SET LOCAL check_function_bodies = off;
CREATE SCHEMA IF NOT EXISTS fnd_web_sec;
CREATE OR REPLACE FUNCTION fnd_web_sec.validate_login(p_user text, p_pwd text)
RETURNS varchar LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (
        SELECT 1 FROM fnd_user u
        WHERE u.user_name = upper(p_user)
          AND u.encrypted_user_password = encode(sha256(convert_to(p_pwd, 'UTF8')), 'hex')
          AND (u.end_date IS NULL OR u.end_date > now())
    ) THEN 'Y' ELSE 'N' END
$$;
"""


def _password_digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class _EbsTables:
    """The EBS tables of one sandbox connection, kept in step with its company."""

    def __init__(self, company: SandboxCompany, database_url: str, schema: str) -> None:
        self.company = company
        self.database_url = database_url
        self.schema = schema

    def refresh(self, kind: RecordKind, days: Iterable[dt.date | None]) -> None:
        """Render again what a change touched: the day of a document, or the master list."""
        group = KIND_GROUPS[kind]
        connection = psycopg2.connect(self.database_url)
        try:
            with connection, connection.cursor() as cursor:
                if group in (RecordKind.VENDOR, RecordKind.MATERIAL):
                    rendered = _master_rows(self.company, group)
                    for table, rows in rendered.items():
                        cursor.execute(f"DELETE FROM {self.schema}.{table}")
                        _copy(cursor, self.schema, table, rows)
                    return
                for day in {d for d in days if d is not None}:
                    self._refresh_day(cursor, group, day)
        finally:
            connection.close()

    def _refresh_day(self, cursor, group: RecordKind, day: dt.date) -> None:
        start, end = _midnight(day), _midnight(day + dt.timedelta(days=1))
        schema = self.schema
        if group is RecordKind.SPEND:
            cursor.execute(
                f"DELETE FROM {schema}.ap_invoice_lines_all WHERE invoice_id IN (SELECT "
                f"invoice_id FROM {schema}.ap_invoices_all WHERE invoice_date >= %s AND "
                "invoice_date < %s)",
                (start, end),
            )
            cursor.execute(
                f"DELETE FROM {schema}.ap_invoices_all WHERE invoice_date >= %s "
                "AND invoice_date < %s",
                (start, end),
            )
        elif group is RecordKind.PURCHASE_ORDER:
            headers = (
                f"SELECT po_header_id FROM {schema}.po_headers_all WHERE creation_date "
                ">= %s AND creation_date < %s"
            )
            for table in ("po_distributions_all", "po_line_locations_all", "po_lines_all"):
                cursor.execute(
                    f"DELETE FROM {schema}.{table} WHERE po_header_id IN ({headers})", (start, end)
                )
            cursor.execute(
                f"DELETE FROM {schema}.po_headers_all WHERE creation_date >= %s "
                "AND creation_date < %s",
                (start, end),
            )
        else:
            cursor.execute(
                f"DELETE FROM {schema}.xxgl_onhand_daily_snapshots WHERE snapshot_date = %s",
                (start,),
            )
        rendered = _day_rows(self.company, group, day)
        gl_accounts = {
            line_value(line, "gl_account")
            for document in (
                spend_documents(self.company, day) if group is RecordKind.SPEND else []
            )
            for line in document.lines
        } - {None}
        for table, rows in rendered.items():
            _copy(cursor, schema, table, rows)
        for row in _code_combinations(gl_accounts):
            cursor.execute(
                f"INSERT INTO {schema}.gl_code_combinations VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                row,
            )

    def follow(self) -> None:
        """Apply each later amend/delete/add of the company to these tables too."""
        company = self.company
        amend, delete, add = company.amend, company.delete, company.add

        @functools.wraps(amend)
        def amend_and_store(kind, natural_key, day, **changes):
            amended = amend(kind, natural_key, day, **changes)
            self.refresh(kind, [day, amended.partition_date])
            return amended

        @functools.wraps(delete)
        def delete_and_store(kind, natural_key, day):
            delete(kind, natural_key, day)
            self.refresh(kind, [day])

        @functools.wraps(add)
        def add_and_store(record):
            add(record)
            self.refresh(record.kind, [record.partition_date])

        company.amend, company.delete, company.add = (
            amend_and_store,
            delete_and_store,
            add_and_store,
        )


def _schema_name(connection_name: str) -> str:
    return "sandbox_" + "".join(c if c.isalnum() else "_" for c in connection_name.lower())


def _with_search_path(database_url: str, schema: str) -> str:
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query))
    query["options"] = f"-csearch_path={schema}"
    return urlunsplit(parts._replace(query=urlencode(query)))


def prepare_database(company: SandboxCompany, database_url: str, connection_name: str) -> str:
    """Build the EBS tables for one sandbox connection; return its postgresql:// base URL."""
    schema = _schema_name(connection_name)
    base = f"sandbox_ebs_base_{_fingerprint(company)}"
    with _PREPARE_LOCK:
        connection = psycopg2.connect(database_url)
        try:
            with connection, connection.cursor() as cursor:
                # One base per company history and database, even across processes.
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (base,))
                cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (base,))
                if cursor.fetchone() is None:
                    _build_base(cursor, base, company)
                cursor.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
                cursor.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                for table in TABLES:
                    cursor.execute(
                        f"CREATE TABLE {schema}.{table} (LIKE {base}.{table} INCLUDING ALL)"
                    )
                    if table != "fnd_user":
                        cursor.execute(f"INSERT INTO {schema}.{table} SELECT * FROM {base}.{table}")
                cursor.execute(
                    f"INSERT INTO {schema}.fnd_user VALUES (%s, %s, %s, %s, NULL)",
                    (
                        1001,
                        SANDBOX_CREDENTIALS["apps_username"].upper(),
                        _password_digest(SANDBOX_CREDENTIALS["apps_password"]),
                        _midnight(company.start),
                    ),
                )
                cursor.execute(f"CREATE VIEW {schema}.dual AS SELECT 'X'::varchar(1) AS dummy")
                cursor.execute(_LOGIN_FUNCTION)
        finally:
            connection.close()
    tables = _EbsTables(company, database_url, schema)
    # Changes the company already carries (stamped after its own history) are applied now.
    horizon = dt.datetime.combine(company.end + dt.timedelta(days=7), dt.time(), dt.timezone.utc)
    for kind in RecordKind:
        touched = [r.partition_date for r in company.changed_since(kind, horizon)]
        touched += [day for _, day, _ in company.deleted_since(kind, horizon)]
        if touched:
            tables.refresh(kind, touched)
    tables.follow()
    return _with_search_path(database_url, schema)
