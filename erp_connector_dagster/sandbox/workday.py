"""Sandbox Workday tenant: WQL and Report-as-a-Service (RaaS) JSON, OAuth 2.0 refresh tokens.

Serves the synthetic company as a Workday Financials tenant does to an integration system user:

* `POST /ccx/oauth2/<tenant>/token` with `grant_type=refresh_token`, the API client's id and
  secret in HTTP Basic; answers a bearer token (an unknown client is 401 `invalid_client`, a
  wrong refresh token 400 `invalid_grant`). Tokens expire; an expired one is refused 401.
* `POST /ccx/api/wql/v1/<tenant>/data?limit=&offset=` with `{"query": "SELECT ... FROM
  <data source> WHERE ..."}`: Workday Query Language, answered `{"total": n, "data": [...]}`
  with offset paging (limit at most 10,000). Instances are references
  `{"id": <WID>, "descriptor": ...}`, dates `YYYY-MM-DD`, date-times in the tenant's time zone
  (`-08:00`), currency amounts as decimal strings. Data sources served: `supplierInvoices`,
  `supplierInvoiceLines`, `purchaseOrders`, `purchaseOrderLines`.
* `GET /ccx/service/customreport2/<tenant>/<owner>/<report>?format=json`: RaaS custom reports,
  `{"Report_Entry": [...]}` with every value a string, empty fields left out and dates written
  as XML dates with the tenant offset (`2026-11-25-08:00`). Reports served:
  `ERP_Connector_Suppliers`, `ERP_Connector_Purchase_Items` and
  `ERP_Connector_Inventory_Balances` (prompt `As_Of_Date`).

Credit notes are Supplier Invoice Adjustments, whose amounts Workday keeps positive; card
charges are Procurement Card Transactions; a canceled invoice keeps its lines with status
"Canceled". Throttling is 429 with `Retry-After`. WQL data source and field names, like the
report fields, are those of the connector's tenant setup (WQL aliases and RaaS XML aliases are
chosen when the data source or report is configured).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import threading
import uuid
from decimal import Decimal

from werkzeug.wrappers import Request, Response

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
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.faults import (
    Fault,
    FaultKind,
    FaultPlan,
    fault_response,
)
from erp_connector_dagster.sandbox.oauth import (
    TokenStore,
    basic_credentials,
    bearer,
    client_authenticated,
)

UTC = dt.timezone.utc
TENANT_ZONE = dt.timezone(dt.timedelta(hours=-8))
SANDBOX_TENANT = "acme_sandbox1"
REPORT_OWNER = "ISU_ERP_Connector"

SANDBOX_CREDENTIALS: dict[str, str] = {
    "client_id": "NzY1ZDQ4OTEtYjQyZS00ZjE5LWE2YTQtMzE0ZjdjNmQ4ZWFk",
    "client_secret": "wd-sandbox-client-secret-4bq9x2r7",
    "refresh_token": "wd-sandbox-refresh-token-p8m2c6v1k3",
}
SECRET_FIELDS = frozenset({"client_secret", "refresh_token"})
SANDBOX_OPTIONS: dict[str, object] = {"tenant": SANDBOX_TENANT, "report_owner": REPORT_OWNER}

TOKEN_LIFETIME_SECONDS = 3600
MAX_WQL_LIMIT = 10_000
DOCUMENT_TYPES = {
    SpendDocumentType.INVOICE: "Supplier Invoice",
    SpendDocumentType.CREDIT_NOTE: "Supplier Invoice Adjustment",
    SpendDocumentType.CARD_CHARGE: "Procurement Card Transaction",
}
ORDER_STATUS = {
    "open": ("Issued", "Not Received"),
    "received": ("Issued", "Fully Received"),
    "closed": ("Closed", "Fully Received"),
}


def wid(*parts: object) -> str:
    """A Workday ID: 32 lower-case hex digits."""
    return uuid.uuid5(uuid.NAMESPACE_DNS, "|".join(map(str, parts))).hex


def reference(descriptor: str | None, *parts: object) -> dict | None:
    if descriptor is None:
        return None
    return {"id": wid(*parts), "descriptor": descriptor}


def tenant_datetime(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(TENANT_ZONE).isoformat(timespec="milliseconds")


def xml_date(day: dt.date) -> str:
    """A date as RaaS writes it: an XML date with the tenant's offset."""
    return f"{day.isoformat()}-08:00"


def text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def error_response(status: int, message: str, headers: dict | None = None) -> Response:
    body = {"error": message, "errors": [{"error": message}]}
    return Response(
        json.dumps(body), status=status, mimetype="application/json", headers=headers or {}
    )


# --- WQL -----------------------------------------------------------------------------------

_QUERY = re.compile(
    r"\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<source>\w+)(?:\s+WHERE\s+(?P<where>.+?))?\s*",
    re.IGNORECASE | re.DOTALL,
)
_COMPARISON = re.compile(r"\s*(\w+)\s*(>=|<=|!=|=|<|>)\s*'((?:[^']|'')*)'\s*")
_MEMBERSHIP = re.compile(r"\s*(\w+)\s+IN\s*\((.*)\)\s*", re.IGNORECASE | re.DOTALL)


class WqlError(ValueError):
    """A query the emulated WQL service refuses with 400."""


def split_and(where: str) -> list[str]:
    parts, depth, quoted, current, index = [], 0, False, "", 0
    while index < len(where):
        character = where[index]
        if character == "'":
            quoted = not quoted
        elif not quoted and character in "()":
            depth += 1 if character == "(" else -1
        elif not quoted and depth == 0 and where[index : index + 5].upper() == " AND ":
            parts.append(current)
            current, index = "", index + 5
            continue
        current += character
        index += 1
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def parse_query(query: str) -> tuple[list[str], str, list[tuple[str, str, object]]]:
    """(fields, data source, [(field, operator, value)]) of a WQL query."""
    match = _QUERY.fullmatch(query)
    if match is None:
        raise WqlError("The WQL query could not be parsed.")
    fields = [name.strip() for name in match.group("fields").split(",") if name.strip()]
    conditions: list[tuple[str, str, object]] = []
    for part in split_and(match.group("where") or ""):
        membership = _MEMBERSHIP.fullmatch(part)
        comparison = _COMPARISON.fullmatch(part)
        if membership:
            values = re.findall(r"'((?:[^']|'')*)'", membership.group(2))
            conditions.append((membership.group(1), "IN", [v.replace("''", "'") for v in values]))
        elif comparison:
            conditions.append(
                (comparison.group(1), comparison.group(2), comparison.group(3).replace("''", "'"))
            )
        else:
            raise WqlError(f"Invalid WHERE condition: {part}")
    return fields, match.group("source"), conditions


def _typed(value: object, literal: str) -> tuple[object, object]:
    """Row value and literal made comparable (references compare by WID)."""
    if isinstance(value, dict):
        value = value.get("id")
    if value is None:
        return None, literal
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}T.+", literal):
        moment = dt.datetime.fromisoformat(literal.replace("Z", "+00:00"))
        return dt.datetime.fromisoformat(str(value)), moment
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", literal):
        return dt.date.fromisoformat(str(value)[:10]), dt.date.fromisoformat(literal)
    return str(value), literal


def satisfies(row: dict, conditions: list[tuple[str, str, object]]) -> bool:
    for field_name, operator, literal in conditions:
        if field_name not in row:
            raise WqlError(f"Invalid field alias in WHERE clause: {field_name}")
        if operator == "IN":
            value = row[field_name]
            value = value.get("id") if isinstance(value, dict) else value
            if value not in literal:
                return False
            continue
        value, bound = _typed(row[field_name], literal)
        if value is None:
            return False
        if not {
            "=": value == bound,
            "!=": value != bound,
            ">=": value >= bound,
            "<=": value <= bound,
            ">": value > bound,
            "<": value < bound,
        }[operator]:
            return False
    return True


def date_bounds(conditions, field_name: str) -> tuple[dt.date | None, dt.date | None]:
    lower = upper = None
    for name, operator, literal in conditions:
        if name == field_name and operator in (">=", ">", "="):
            lower = dt.date.fromisoformat(str(literal)[:10])
        if name == field_name and operator in ("<", "<=", "="):
            upper = dt.date.fromisoformat(str(literal)[:10])
    return lower, upper


def since_bound(conditions, field_name: str) -> dt.datetime | None:
    for name, operator, literal in conditions:
        if name == field_name and operator in (">=", ">"):
            return dt.datetime.fromisoformat(str(literal).replace("Z", "+00:00"))
    return None


def _throttled(fault: Fault) -> Response:
    return error_response(
        429, "Too many requests; retry later.", {"Retry-After": str(int(fault.retry_after))}
    )


class WorkdayEmulator:
    """The WSGI application of one emulated Workday tenant."""

    def __init__(
        self,
        company: SandboxCompany,
        faults: FaultPlan,
        credentials: dict[str, str],
        token_lifetime_seconds: float = TOKEN_LIFETIME_SECONDS,
    ) -> None:
        self.company = company
        self.faults = faults
        self.credentials = credentials
        self.tokens = TokenStore(lifetime_seconds=token_lifetime_seconds)
        self.token_requests = 0
        # WIDs of documents served -> their business date, so line queries find their day.
        # Limitation: a line query for documents this emulator never listed finds no lines.
        self._document_days: dict[str, dt.date] = {}
        self._lock = threading.Lock()
        self.data_sources = {
            "supplierInvoices": self._invoices,
            "supplierInvoiceLines": self._invoice_lines,
            "purchaseOrders": self._orders,
            "purchaseOrderLines": self._order_lines,
        }
        self.reports = {
            "ERP_Connector_Suppliers": self._suppliers_report,
            "ERP_Connector_Purchase_Items": self._items_report,
            "ERP_Connector_Inventory_Balances": self._inventory_report,
        }

    def __call__(self, environ, start_response):
        request = Request(environ)
        return self.dispatch(request)(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path.strip("/")
        if path == f"ccx/oauth2/{SANDBOX_TENANT}/token" and request.method == "POST":
            return self._token(request)
        fault = self.faults.take()
        if fault is not None and fault.kind is FaultKind.EXPIRE_TOKEN:
            self.tokens.revoke_all()
        if not self.tokens.valid(bearer(request)):
            return error_response(401, "invalid_token")
        forced = fault_response(fault, throttled=_throttled)
        if forced is not None:
            return forced
        if path == f"ccx/api/wql/v1/{SANDBOX_TENANT}/data" and request.method in ("GET", "POST"):
            return self._wql(request)
        prefix = f"ccx/service/customreport2/{SANDBOX_TENANT}/{REPORT_OWNER}/"
        if path.startswith(prefix) and path[len(prefix) :] in self.reports:
            if request.args.get("format") != "json":
                return error_response(400, "This sandbox serves format=json only.")
            entries = self.reports[path[len(prefix) :]](request)
            return Response(json.dumps({"Report_Entry": entries}), mimetype="application/json")
        return error_response(404, "Resource not found.")

    def _token(self, request: Request) -> Response:
        self.token_requests += 1
        if not client_authenticated(basic_credentials(request), self.credentials):
            return Response(
                json.dumps({"error": "invalid_client"}), status=401, mimetype="application/json"
            )
        if request.form.get("grant_type") != "refresh_token":
            return Response(
                json.dumps({"error": "unsupported_grant_type"}),
                status=400,
                mimetype="application/json",
            )
        if not secrets.compare_digest(
            request.form.get("refresh_token", "").encode(),
            self.credentials["refresh_token"].encode(),
        ):
            return Response(
                json.dumps({"error": "invalid_grant"}), status=400, mimetype="application/json"
            )
        body = {
            "access_token": self.tokens.issue(),
            "token_type": "Bearer",
            "refresh_token": self.credentials["refresh_token"],
        }
        return Response(json.dumps(body), mimetype="application/json")

    # WQL

    def _wql(self, request: Request) -> Response:
        try:
            query = request.args.get("query")
            if query is None:
                query = (request.get_json(silent=True) or {}).get("query", "")
            limit = int(request.args.get("limit", 20))
            offset = int(request.args.get("offset", 0))
            if not 1 <= limit <= MAX_WQL_LIMIT or offset < 0:
                raise WqlError(f"limit must be between 1 and {MAX_WQL_LIMIT}")
            fields, source, conditions = parse_query(query)
            if source not in self.data_sources:
                raise WqlError(f"Invalid data source: {source}")
            rows = [
                row for row in self.data_sources[source](conditions) if satisfies(row, conditions)
            ]
            unknown = [name for name in fields if rows and name not in rows[0]]
            if unknown:
                raise WqlError(f"Invalid field alias: {unknown[0]}")
        except (WqlError, ValueError) as error:
            return error_response(400, str(error))
        rows.sort(key=lambda row: row["_key"])
        page = [{name: row.get(name) for name in fields} for row in rows[offset : offset + limit]]
        return Response(json.dumps({"total": len(rows), "data": page}), mimetype="application/json")

    def _records(self, kind: RecordKind, conditions, date_field: str) -> list:
        start, end = date_bounds(conditions, date_field)
        if start is not None or end is not None:
            return self.company.records_between(
                kind,
                start or self.company.start,
                (end or self.company.end) + dt.timedelta(days=1),
            )
        since = since_bound(conditions, "lastUpdated")
        if since is not None:
            return self.company.changed_since(kind, since)
        return self.company.records_between(
            kind, self.company.start, self.company.end + dt.timedelta(days=1)
        )

    def _remember(self, document_wid: str, day: dt.date) -> None:
        with self._lock:
            self._document_days[document_wid] = day

    def _days_of(self, conditions, field_name: str) -> list[dt.date]:
        wanted: set[str] = set()
        for name, operator, literal in conditions:
            if name == field_name and operator == "IN":
                wanted |= set(literal)
            elif name == field_name and operator == "=":
                wanted.add(literal)
        with self._lock:
            return sorted({self._document_days[w] for w in wanted if w in self._document_days})

    def _invoices(self, conditions) -> list[dict]:
        documents: dict[str, list[SpendRecord]] = {}
        for record in self._records(RecordKind.SPEND, conditions, "invoiceDate"):
            documents.setdefault(record.document_id, []).append(record)
        rows = [self._invoice(lines) for lines in documents.values()]
        start, end = date_bounds(conditions, "invoiceDate")
        if start is not None and end is not None:
            day = start
            while day <= end:
                rows.extend(self._bad_invoice(bad) for bad in self.company.bad_spend_lines(day))
                day += dt.timedelta(days=1)
        for row in rows:
            self._remember(row["workdayID"], dt.date.fromisoformat(row["invoiceDate"]))
        return rows

    def _invoice_lines(self, conditions) -> list[dict]:
        rows = []
        for day in self._days_of(conditions, "supplierInvoice"):
            rows.extend(
                self._invoice_line(record) for record in self.company.records(RecordKind.SPEND, day)
            )
            rows.extend(self._bad_invoice_line(bad) for bad in self.company.bad_spend_lines(day))
        return rows

    def _orders(self, conditions) -> list[dict]:
        orders = self._records(RecordKind.PURCHASE_ORDER, conditions, "orderDate")
        rows = [self._order(order) for order in orders]
        for row in rows:
            self._remember(row["workdayID"], dt.date.fromisoformat(row["orderDate"]))
        return rows

    def _order_lines(self, conditions) -> list[dict]:
        rows = []
        for day in self._days_of(conditions, "purchaseOrder"):
            rows.extend(
                self._order_line(line)
                for line in self.company.records(RecordKind.PURCHASE_ORDER_LINE, day)
            )
        return rows

    # Rendering company records as WQL rows

    def _invoice(self, lines: list[SpendRecord]) -> dict:
        first = lines[0]
        modified = max(line.updated_at for line in lines if line.updated_at is not None)
        return {
            "_key": ("invoice", first.document_id),
            "workdayID": wid("supplier-invoice", first.document_id),
            "invoiceNumber": first.document_id,
            "documentType": reference(
                DOCUMENT_TYPES[first.document_type], "document-type", first.document_type.value
            ),
            "invoiceDate": first.transaction_date.isoformat(),
            "supplier": reference(first.vendor_id, "supplier", first.vendor_id),
            "supplierID": first.vendor_id,
            "currency": reference(first.currency, "currency", first.currency),
            "invoiceStatus": reference(
                "Canceled" if first.status is RecordStatus.VOIDED else "Approved",
                "invoice-status",
                first.status.value,
            ),
            "purchaseOrderNumber": first.purchase_order_id,
            "lastUpdated": tenant_datetime(modified),
        }

    def _invoice_line(self, record: SpendRecord) -> dict:
        # Adjustments (credit notes) are kept positive; the document type says what they are.
        sign = Decimal(-1) if record.document_type is SpendDocumentType.CREDIT_NOTE else 1
        return {
            "_key": ("invoice", record.document_id, record.line_number),
            "workdayID": wid("supplier-invoice-line", record.source_id),
            "supplierInvoice": reference(
                record.document_id, "supplier-invoice", record.document_id
            ),
            "lineNumber": record.line_number,
            "item": reference(record.description, "item", record.material_id)
            if record.material_id
            else None,
            "itemID": record.material_id,
            "itemDescription": record.description,
            "spendCategory": reference(
                f"GL {record.gl_account}", "spend-category", record.gl_account
            ),
            "ledgerAccountID": record.gl_account,
            "capitalAsset": record.is_capex,
            "quantity": text(sign * record.quantity if record.quantity is not None else None),
            "unitOfMeasure": reference(record.unit, "unit", record.unit),
            "extendedAmount": text(sign * record.amount),
        }

    def _bad_invoice(self, bad: dict) -> dict:
        modified = dt.datetime.fromisoformat(bad["updated_at"])
        return {
            "_key": ("invoice", bad["document_id"]),
            "workdayID": wid("supplier-invoice", bad["document_id"]),
            "invoiceNumber": bad["document_id"],
            "documentType": reference("Supplier Invoice", "document-type", "invoice"),
            "invoiceDate": bad["transaction_date"],
            "supplier": reference(bad["vendor_id"], "supplier", bad["vendor_id"]),
            "supplierID": bad["vendor_id"],
            "currency": reference(bad["currency"], "currency", bad["currency"]),
            "invoiceStatus": reference("Approved", "invoice-status", "active"),
            "purchaseOrderNumber": None,
            "lastUpdated": tenant_datetime(modified),
        }

    def _bad_invoice_line(self, bad: dict) -> dict:
        return {
            "_key": ("invoice", bad["document_id"], bad["line_number"]),
            "workdayID": wid("supplier-invoice-line", bad["source_id"]),
            "supplierInvoice": reference(
                bad["document_id"], "supplier-invoice", bad["document_id"]
            ),
            "lineNumber": bad["line_number"],
            "item": None,
            "itemID": None,
            "itemDescription": bad["description"],
            "spendCategory": reference(
                f"GL {bad['gl_account']}", "spend-category", bad["gl_account"]
            ),
            "ledgerAccountID": bad["gl_account"],
            "capitalAsset": False,
            "quantity": None,
            "unitOfMeasure": None,
            # Verbatim from the scanned document: not a currency amount.
            "extendedAmount": bad["amount"],
        }

    def _order(self, order: PurchaseOrder) -> dict:
        status, receipt = ORDER_STATUS.get(order.order_status, ("Issued", "Not Received"))
        if order.status is RecordStatus.VOIDED:
            status = "Canceled"
        lines = self.company.records(RecordKind.PURCHASE_ORDER_LINE, order.order_date)
        modified = max(
            [order.updated_at]
            + [
                line.updated_at
                for line in lines
                if line.purchase_order_id == order.purchase_order_id and line.updated_at is not None
            ]
        )
        return {
            "_key": ("order", order.purchase_order_id),
            "workdayID": wid("purchase-order", order.purchase_order_id),
            "poNumber": order.purchase_order_id,
            "orderDate": order.order_date.isoformat(),
            "supplier": reference(order.vendor_id, "supplier", order.vendor_id),
            "supplierID": order.vendor_id,
            "currency": reference(order.currency, "currency", order.currency),
            "totalAmount": text(order.total_amount),
            "status": reference(status, "po-status", status),
            "receiptStatus": reference(receipt, "receipt-status", receipt),
            "lastUpdated": tenant_datetime(modified),
        }

    def _order_line(self, line: PurchaseOrderLine) -> dict:
        return {
            "_key": ("order", line.purchase_order_id, line.line_number),
            "workdayID": wid("purchase-order-line", line.source_id),
            "purchaseOrder": reference(
                line.purchase_order_id, "purchase-order", line.purchase_order_id
            ),
            "lineNumber": line.line_number,
            "itemID": line.material_id,
            "itemDescription": line.description,
            "quantity": text(line.quantity),
            "unitOfMeasure": reference(line.unit, "unit", line.unit),
            "unitCost": text(line.unit_price),
            "extendedAmount": text(line.amount),
            "ledgerAccountID": line.gl_account,
            "dueDate": line.delivery_date.isoformat() if line.delivery_date else None,
        }

    # RaaS reports

    def _suppliers_report(self, request: Request) -> list[dict]:
        return [_without_blanks(self._supplier(vendor)) for vendor in self.company.vendors()]

    def _items_report(self, request: Request) -> list[dict]:
        return [_without_blanks(self._item(material)) for material in self.company.materials()]

    def _inventory_report(self, request: Request) -> list[dict]:
        prompt = request.args.get("As_Of_Date", "")
        try:
            day = dt.date.fromisoformat(prompt[:10])
        except ValueError:
            return []
        return [
            _without_blanks(self._balance(snapshot))
            for snapshot in self.company.records(RecordKind.INVENTORY, day)
        ]

    @staticmethod
    def _supplier(vendor: Vendor) -> dict:
        return {
            "Supplier_ID": vendor.vendor_id,
            "Supplier_Name": vendor.name,
            "Country_ISO_Code": vendor.country,
            "NAICS_Code": vendor.industry_code,
            "Tax_ID": vendor.tax_id,
            "Default_Currency": vendor.currency,
            "Supplier_Status": "Active" if vendor.status is RecordStatus.ACTIVE else "Inactive",
            "Last_Updated": tenant_datetime(vendor.updated_at),
            "workdayID": wid("supplier", vendor.vendor_id),
        }

    @staticmethod
    def _item(material: Material) -> dict:
        return {
            "Item_ID": material.material_id,
            "Item_Name": material.description,
            "Spend_Category": material.material_group,
            "Unit_of_Measure": material.base_unit,
            "Commodity_Code": material.commodity_code,
            "Last_Updated": tenant_datetime(material.updated_at),
            "workdayID": wid("item", material.material_id),
        }

    @staticmethod
    def _balance(snapshot: InventorySnapshot) -> dict:
        return {
            "Item_ID": snapshot.material_id,
            "Location": snapshot.location,
            "As_Of_Date": xml_date(snapshot.snapshot_date),
            "Quantity_On_Hand": text(snapshot.quantity),
            "Unit_of_Measure": snapshot.unit,
            "Unit_Cost": text(snapshot.unit_cost),
            "Total_Value": text(snapshot.value),
            "Currency": snapshot.currency,
            "workdayID": wid("balance", snapshot.source_id),
        }


def _without_blanks(entry: dict) -> dict:
    """RaaS leaves fields without a value out of the entry."""
    return {key: value for key, value in entry.items() if value not in (None, "")}


def create_app(
    company: SandboxCompany,
    faults: FaultPlan,
    credentials: dict[str, str],
    *,
    token_lifetime_seconds: float = TOKEN_LIFETIME_SECONDS,
) -> WorkdayEmulator:
    """The WSGI app of a sandbox Workday tenant serving `company`."""
    return WorkdayEmulator(company, faults, credentials, token_lifetime_seconds)
