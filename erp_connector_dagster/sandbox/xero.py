"""Sandbox emulator of the Xero Accounting API 2.0 (`/api.xro/2.0/`) for one organisation.

Serves the synthetic company the way a Xero organisation shows it:

* OAuth 2.0 client credentials ("custom connection") at `/connect/token`, 30-minute access
  tokens, `GET /connections` listing the tenant, and the `xero-tenant-id` header on every API
  call; an expired token is a 401 whose body says `TokenExpired`, a wrong tenant a 403
  `AuthenticationUnsuccessful`.
* `Invoices` (Type `ACCPAY`), `CreditNotes` (Type `ACCPAYCREDIT`, amounts positive) and
  `BankTransactions` (Type `SPEND` from the company credit card) for spend; `PurchaseOrders`
  with lines inline; `Contacts` (`IsSupplier`), `Items` and `Accounts`. Every item is tracked
  (`IsTrackedAsInventory`): `QuantityOnHand` is the company's stock of now (its latest
  business day) summed over its locations, as Xero keeps one figure per item, and
  `TotalCostPool` the value of that stock.
* Filters as Xero takes them: `where` (`Field=="value"`, `DateTime(y,m,d)`, `AND`), the
  `If-Modified-Since` header (inclusive, whole seconds), `order`, `page` with `pageSize`
  (line items only come with paged reads), and `DateFrom`/`DateTo` for purchase orders.
* Dates as `/Date(milliseconds+0000)/`; deleted documents stay listed with Status `DELETED`.
* Throttling as 429 with `Retry-After` and `X-Rate-Limit-Problem: minute`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
import threading
import uuid
from dataclasses import dataclass
from decimal import Decimal

from werkzeug.exceptions import HTTPException, NotFound
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
from erp_connector_dagster.sandbox.company import INDUSTRIES, SandboxCompany
from erp_connector_dagster.sandbox.dialect import (
    SpendDocument,
    days_between,
    exact_json,
    spend_documents,
)
from erp_connector_dagster.sandbox.faults import (
    Fault,
    FaultPlan,
    fault_response,
)
from erp_connector_dagster.sandbox.oauth import (
    TokenStore,
    basic_credentials,
    bearer,
    client_authenticated,
)

SANDBOX_TENANT_ID = "0d4c6a6e-2f51-4a8c-9a2e-6b5a1f3e7c21"
SANDBOX_CREDENTIALS: dict[str, str] = {
    "client_id": "A1B2C3D4E5F6SANDBOXXEROCLIENT01",
    "client_secret": "xero-sandbox-secret-Zq81LkP0",
}
SECRET_FIELDS: frozenset[str] = frozenset({"client_secret"})
SANDBOX_OPTIONS: dict[str, object] = {
    "tenant_id": SANDBOX_TENANT_ID,
    # Xero's token endpoint is identity.xero.com; the sandbox serves it under its own root.
    "token_url": "/connect/token",
}

ACCESS_TOKEN_SECONDS = 1800
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
CARD_ACCOUNT_CODE = "090"
_NAMESPACE = uuid.UUID("6f1b0c1e-8a53-4c61-a0a5-5a8f0b9d2c77")

SPEND_ENDPOINTS: dict[str, tuple[str, str, SpendDocumentType]] = {
    # endpoint: (collection key, Type value, the documents it holds)
    "Invoices": ("Invoices", "ACCPAY", SpendDocumentType.INVOICE),
    "CreditNotes": ("CreditNotes", "ACCPAYCREDIT", SpendDocumentType.CREDIT_NOTE),
    "BankTransactions": ("BankTransactions", "SPEND", SpendDocumentType.CARD_CHARGE),
}


def _xero_id(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, ":".join(str(part) for part in parts)))


def _json(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON with decimals written as numbers carrying their exact digits."""
    return Response(
        exact_json(payload), status=status, mimetype="application/json", headers=headers
    )


def _rate_limited(fault: Fault) -> Response:
    return Response(
        "Rate limit exceeded",
        status=429,
        mimetype="text/plain",
        headers={
            "Retry-After": str(max(int(round(fault.retry_after)), 1)),
            "X-Rate-Limit-Problem": "minute",
            "X-MinLimit-Remaining": "0",
        },
    )


def _problem(title: str, status: int, detail: str, headers: dict | None = None) -> Response:
    body = {
        "Type": None,
        "Title": title,
        "Status": status,
        "Detail": detail,
        "Instance": str(uuid.uuid4()),
        "Extensions": {},
    }
    return _json(body, status=status, headers=headers)


def xero_date(moment: dt.datetime | dt.date) -> str:
    """Xero's `/Date(milliseconds+0000)/` form of a date or a UTC moment."""
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime.combine(moment, dt.time(), tzinfo=dt.timezone.utc)
    milliseconds = int(moment.astimezone(dt.timezone.utc).timestamp() * 1000)
    return f"/Date({milliseconds}+0000)/"


def _date_string(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00"


_XERO_DATE = re.compile(r"/Date\((-?\d+)([+-]\d{4})?\)/")


def _native(value: object) -> object:
    """A rendered value in comparable form (Xero dates become UTC datetimes)."""
    if isinstance(value, str):
        match = _XERO_DATE.fullmatch(value)
        if match:
            return dt.datetime.fromtimestamp(int(match[1]) / 1000, dt.timezone.utc)
    return value


def _floor_millisecond(moment: dt.datetime) -> dt.datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# The "where" language


@dataclass
class _Clause:
    path: str
    operator: str
    value: object


class WhereError(ValueError):
    """A where clause Xero would refuse."""


_CLAUSE = re.compile(
    r'^\s*(?P<path>[\w.]+)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>"(?:[^"\\]|\\.)*"|'
    r"DateTime\([\d,\s]+\)|true|false|-?\d+(?:\.\d+)?|null)\s*$",
    re.IGNORECASE,
)


def _split_conditions(where: str) -> list[str]:
    """Split on AND / && outside string literals."""
    parts, current, quoted, position = [], [], False, 0
    while position < len(where):
        char = where[position]
        if char == '"' and (position == 0 or where[position - 1] != "\\"):
            quoted = not quoted
        if not quoted:
            rest = where[position:]
            separator = re.match(r"\s+AND\s+|\s*&&\s*", rest, flags=re.IGNORECASE)
            if separator:
                parts.append("".join(current))
                current = []
                position += separator.end()
                continue
        current.append(char)
        position += 1
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def parse_where(where: str) -> list[_Clause]:
    """ANDed comparisons, the part of Xero's filter language this emulator serves."""
    clauses = []
    for part in _split_conditions(where or ""):
        match = _CLAUSE.match(part)
        if not match:
            raise WhereError(f"cannot read the condition {part.strip()!r}")
        clauses.append(_Clause(match["path"], match["op"], _where_value(match["value"])))
    return clauses


def _where_value(text: str) -> object:
    if text.startswith('"'):
        return json.loads(text)
    if text.lower().startswith("datetime("):
        numbers = [int(n) for n in re.findall(r"\d+", text)]
        return dt.datetime(*numbers, tzinfo=dt.timezone.utc)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "null":
        return None
    return Decimal(text)


def _lookup(entity: dict, path: str) -> object:
    value: object = entity
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return _native(value)


def _holds(entity: dict, clause: _Clause) -> bool:
    actual = _lookup(entity, clause.path)
    expected = clause.value
    if isinstance(actual, (int, float)) and not isinstance(actual, bool):
        actual = Decimal(str(actual))
    if clause.operator == "==":
        return actual == expected
    if clause.operator == "!=":
        return actual != expected
    if actual is None or expected is None:
        return False
    try:
        return {
            ">": actual > expected,
            "<": actual < expected,
            ">=": actual >= expected,
            "<=": actual <= expected,
        }[clause.operator]
    except TypeError:
        return False


def _if_modified_since(header: str | None) -> dt.datetime | None:
    if not header:
        return None
    try:
        moment = dt.datetime.fromisoformat(header.replace("Z", "+00:00"))
    except ValueError:
        moment = email.utils.parsedate_to_datetime(header)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


# Documents assembled from the company's lines


class XeroSandbox:
    """Renders the synthetic company as a Xero organisation and serves the API."""

    def __init__(
        self, company: SandboxCompany, faults: FaultPlan, credentials: dict[str, str]
    ) -> None:
        self.company = company
        self.faults = faults
        self.credentials = credentials
        self.tenant_id = SANDBOX_TENANT_ID
        self._lock = threading.Lock()
        self._access_tokens = TokenStore(lifetime_seconds=ACCESS_TOKEN_SECONDS)
        # Deleted documents stay listed as DELETED; remember what each one was.
        self._document_types: dict[str, SpendDocumentType] = {}
        self._url_map = Map(
            [
                Rule("/connect/token", endpoint="token", methods=["POST"]),
                Rule("/connections", endpoint="connections", methods=["GET"]),
                Rule("/api.xro/2.0/<collection>", endpoint="collection", methods=["GET"]),
            ]
        )
        self._accounts = self._chart_of_accounts()

    def __call__(self, environ, start_response):
        request = Request(environ)
        return self._dispatch(request)(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        forced = fault_response(
            self.faults.take(), throttled=_rate_limited, token_expired=self._expire_tokens
        )
        if forced is not None:
            return forced
        try:
            endpoint, arguments = self._url_map.bind_to_environ(request.environ).match()
        except NotFound:
            return _problem("Not Found", 404, "The resource you're looking for cannot be found")
        except HTTPException as error:
            return error.get_response(request.environ)
        if endpoint == "token":
            return self._token(request)
        refused = self._refuse(request, needs_tenant=endpoint != "connections")
        if refused is not None:
            return refused
        if endpoint == "connections":
            return self._connections()
        try:
            response = self._collection(request, arguments["collection"])
        except WhereError as error:
            return _json(
                {"ErrorNumber": 16, "Type": "QueryParseException", "Message": str(error)},
                status=400,
            )
        response.headers["X-DayLimit-Remaining"] = "4999"
        response.headers["X-MinLimit-Remaining"] = "59"
        response.headers["X-AppMinLimit-Remaining"] = "9999"
        return response

    # OAuth 2.0

    def _expire_tokens(self) -> None:
        self._access_tokens.revoke_all()

    def _token(self, request: Request) -> Response:
        client = basic_credentials(request) or (
            request.form.get("client_id", ""),
            request.form.get("client_secret", ""),
        )
        if not client_authenticated(client, self.credentials):
            return _json({"error": "invalid_client"}, status=400)
        if request.form.get("grant_type") != "client_credentials":
            return _json({"error": "unsupported_grant_type"}, status=400)
        access_token = self._access_tokens.issue(prefix="eyJhbGciOiJSUzI1NiIsImtpZCI6")
        return _json(
            {
                "access_token": access_token,
                "expires_in": ACCESS_TOKEN_SECONDS,
                "token_type": "Bearer",
                "scope": "accounting.transactions.read accounting.contacts.read"
                " accounting.settings.read",
            }
        )

    def _refuse(self, request: Request, needs_tenant: bool) -> Response | None:
        if not self._access_tokens.valid(bearer(request)):
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%m/%d/%Y %H:%M:%S")
            return _problem(
                "Unauthorized",
                401,
                f"TokenExpired: token expired at {stamp}",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if needs_tenant and request.headers.get("xero-tenant-id") != self.tenant_id:
            return _problem("Forbidden", 403, "AuthenticationUnsuccessful")
        return None

    def _connections(self) -> Response:
        created = "2024-11-29T10:00:00.0000000"
        return _json(
            [
                {
                    "id": _xero_id("connection", self.tenant_id),
                    "authEventId": _xero_id("auth", self.tenant_id),
                    "tenantId": self.tenant_id,
                    "tenantType": "ORGANISATION",
                    "tenantName": "Sandbox Manufacturing Ltd",
                    "createdDateUtc": created,
                    "updatedDateUtc": created,
                }
            ]
        )

    # Collections

    def _collection(self, request: Request, collection: str) -> Response:
        since = _if_modified_since(request.headers.get("If-Modified-Since"))
        clauses = parse_where(request.args.get("where", ""))
        paged = "page" in request.args
        summary_only = request.args.get("summaryOnly", "").lower() == "true"
        if collection in SPEND_ENDPOINTS:
            entities = self._spend(
                collection, clauses, since, with_lines=paged and not summary_only
            )
        elif collection == "PurchaseOrders":
            entities = self._purchase_orders(request, since)
        elif collection == "Contacts":
            entities = [self._contact(vendor) for vendor in self.company.vendors()]
            if request.args.get("includeArchived", "").lower() != "true":
                entities = [e for e in entities if e["ContactStatus"] != "ARCHIVED"]
        elif collection == "Items":
            stock = self._stock_now()
            entities = [
                self._item(material, *stock.get(material.material_id, (Decimal(0), Decimal(0))))
                for material in self.company.materials()
            ]
            paged = False  # Xero returns every item at once
        elif collection == "Accounts":
            entities = list(self._accounts)
        elif collection == "Organisation":
            return _json(
                {
                    "Id": str(uuid.uuid4()),
                    "Status": "OK",
                    "Organisations": [
                        {
                            "Name": "Sandbox Manufacturing Ltd",
                            "BaseCurrency": "EUR",
                            "OrganisationID": self.tenant_id,
                        }
                    ],
                }
            )
        else:
            return _problem("Not Found", 404, f"{collection} is not a Xero collection")
        entities = [e for e in entities if all(_holds(e, clause) for clause in clauses)]
        if since is not None:
            entities = [
                e
                for e in entities
                if "UpdatedDateUTC" not in e
                or _native(e["UpdatedDateUTC"]) >= since.replace(microsecond=0)
            ]
        entities = self._ordered(entities, request.args.get("order"), collection)
        body: dict = {
            "Id": str(uuid.uuid4()),
            "Status": "OK",
            "ProviderName": "Sandbox",
            "DateTimeUTC": xero_date(dt.datetime.now(dt.timezone.utc)),
        }
        if paged and collection not in ("Accounts",):
            page = max(int(request.args.get("page", "1")), 1)
            size = min(max(int(request.args.get("pageSize", DEFAULT_PAGE_SIZE)), 1), MAX_PAGE_SIZE)
            body["pagination"] = {
                "page": page,
                "pageSize": size,
                "pageCount": (len(entities) + size - 1) // size,
                "itemCount": len(entities),
            }
            entities = entities[(page - 1) * size : page * size]
        body[SPEND_ENDPOINTS.get(collection, (collection,))[0]] = entities
        return _json(body)

    @staticmethod
    def _ordered(entities: list[dict], order: str | None, collection: str) -> list[dict]:
        id_field = {
            "Invoices": "InvoiceID",
            "CreditNotes": "CreditNoteID",
            "BankTransactions": "BankTransactionID",
            "PurchaseOrders": "PurchaseOrderID",
            "Contacts": "ContactID",
            "Items": "ItemID",
            "Accounts": "AccountID",
        }.get(collection, "")
        field_name, _, direction = (order or id_field).partition(" ")

        def key(entity: dict) -> tuple:
            value = _lookup(entity, field_name)
            return (
                value is None,
                str(value) if value is not None else "",
                str(entity.get(id_field, "")),
            )

        return sorted(entities, key=key, reverse=direction.strip().upper() == "DESC")

    def _window_days(self, clauses: list[_Clause], since: dt.datetime | None) -> list[dt.date]:
        first, last = self.company.start, self.company.end
        for clause in clauses:
            if clause.path == "Date" and isinstance(clause.value, dt.datetime):
                day = clause.value.date()
                if clause.operator in (">=", ">", "=="):
                    first = max(first, day)
                if clause.operator in ("<", "<=", "=="):
                    last = min(last, day - dt.timedelta(days=1) if clause.operator == "<" else day)
        if since is not None and first == self.company.start:
            # Base documents change at most a few days after their date; later edits are
            # found through the company's change log below.
            first = max(first, since.date() - dt.timedelta(days=7))
        return list(days_between(first, last))

    def _spend(
        self,
        collection: str,
        clauses: list[_Clause],
        since: dt.datetime | None,
        with_lines: bool,
    ) -> list[dict]:
        _, type_value, document_type = SPEND_ENDPOINTS[collection]
        days = set(self._window_days(clauses, since))
        if since is not None:
            days |= {
                line.transaction_date
                for line in self.company.changed_since(
                    RecordKind.SPEND, since.replace(microsecond=0)
                )
            }
        entities = []
        for day in sorted(days):
            for document in spend_documents(self.company, day):
                self._document_types[document.document_id] = document.document_type
                if document.document_type is document_type:
                    entities.append(self._spend_document(collection, document, with_lines))
        entities.extend(self._deleted_documents(collection, type_value, document_type, days, since))
        return entities

    def _deleted_documents(
        self,
        collection: str,
        type_value: str,
        document_type: SpendDocumentType,
        days: set[dt.date],
        since: dt.datetime | None,
    ) -> list[dict]:
        epoch = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
        tombstones = {}
        for natural_key, day, deleted_at in self.company.deleted_since(RecordKind.SPEND, epoch):
            document_id = self.company.deleted_document(RecordKind.SPEND, natural_key)
            if day not in days and (since is None or deleted_at < since):
                continue
            if self._document_types.get(document_id, SpendDocumentType.INVOICE) is not (
                document_type
            ) or any(d.document_id == document_id for d in spend_documents(self.company, day)):
                continue
            key, number = self._keys(collection)
            tombstones[document_id] = {
                key: _xero_id(collection, document_id),
                number: document_id,
                "Type": type_value,
                "Status": "DELETED",
                "Date": xero_date(day),
                "DateString": _date_string(day),
                "LineItems": [],
                "UpdatedDateUTC": xero_date(_floor_millisecond(deleted_at)),
            }
        return list(tombstones.values())

    @staticmethod
    def _keys(collection: str) -> tuple[str, str]:
        return {
            "Invoices": ("InvoiceID", "InvoiceNumber"),
            "CreditNotes": ("CreditNoteID", "CreditNoteNumber"),
            "BankTransactions": ("BankTransactionID", "Reference"),
        }[collection]

    def _spend_document(self, collection: str, document: SpendDocument, with_lines: bool) -> dict:
        first = document.lines[0]
        header = first if isinstance(first, dict) else first.model_dump()
        line_items = [self._line_item(line) for line in document.lines]
        total = sum(
            (item["LineAmount"] for item in line_items if isinstance(item["LineAmount"], Decimal)),
            Decimal("0"),
        )
        key, number = self._keys(collection)
        entity: dict = {
            key: _xero_id(collection, document.document_id),
            number: document.document_id,
            "Type": SPEND_ENDPOINTS[collection][1],
            "Date": xero_date(document.day),
            "DateString": _date_string(document.day),
            "Status": "AUTHORISED",
            "LineAmountTypes": "Exclusive",
            "SubTotal": total,
            "TotalTax": Decimal("0.00"),
            "Total": total,
            "UpdatedDateUTC": xero_date(_floor_millisecond(document.updated_at)),
            "CurrencyCode": header["currency"],
            "CurrencyRate": Decimal("1.000000"),
            "HasAttachments": False,
        }
        if header.get("vendor_id"):
            entity["Contact"] = self._contact_ref(header["vendor_id"])
        if collection == "BankTransactions":
            entity["BankAccount"] = {
                "AccountID": _xero_id("account", CARD_ACCOUNT_CODE),
                "Code": CARD_ACCOUNT_CODE,
                "Name": "Company Credit Card",
            }
            entity["IsReconciled"] = False
        elif collection == "Invoices":
            entity["DueDate"] = xero_date(document.day + dt.timedelta(days=30))
            entity.update(
                AmountDue=total, AmountPaid=Decimal("0.00"), AmountCredited=Decimal("0.00")
            )
        else:
            entity["RemainingCredit"] = total
        if with_lines:
            entity["LineItems"] = line_items
        return entity

    @staticmethod
    def _line_item(line: SpendRecord | dict) -> dict:
        if isinstance(line, dict):
            # A broken line is served as stored: the raw text where Xero expects a number.
            return {
                "LineItemID": _xero_id("line", line["source_id"]),
                "Description": line["description"],
                "Quantity": Decimal("1.0000"),
                "UnitAmount": line["amount"],
                "AccountCode": line["gl_account"],
                "TaxType": "NONE",
                "TaxAmount": Decimal("0.00"),
                "LineAmount": line["amount"],
                "Tracking": [],
            }
        quantity = abs(line.quantity) if line.quantity is not None else Decimal("1.0000")
        amount = abs(line.amount)
        item = {
            "LineItemID": _xero_id("line", line.document_id, line.line_number),
            "Description": line.description,
            "Quantity": quantity,
            "UnitAmount": (amount / quantity).quantize(Decimal("0.0001")),
            "AccountCode": line.gl_account,
            "TaxType": "NONE",
            "TaxAmount": Decimal("0.00"),
            "LineAmount": amount,
            "Tracking": [],
        }
        if line.material_id:
            item["ItemCode"] = line.material_id
        return item

    def _purchase_orders(self, request: Request, since: dt.datetime | None) -> list[dict]:
        first = request.args.get("DateFrom")
        last = request.args.get("DateTo")
        days = (
            set(
                days_between(
                    max(
                        dt.date.fromisoformat(first[:10]) if first else self.company.start,
                        self.company.start,
                    ),
                    min(
                        dt.date.fromisoformat(last[:10]) if last else self.company.end,
                        self.company.end,
                    ),
                )
            )
            if first or last or since is None
            else set()
        )
        if since is not None:
            stamp = since.replace(microsecond=0)
            days |= {
                record.order_date
                for kind in (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE)
                for record in self.company.changed_since(kind, stamp)
                if (not first or record.order_date >= dt.date.fromisoformat(first[:10]))
                and (not last or record.order_date <= dt.date.fromisoformat(last[:10]))
            }
        orders = []
        for day in sorted(days):
            lines: dict[str, list[PurchaseOrderLine]] = {}
            for line in self.company.records(RecordKind.PURCHASE_ORDER_LINE, day):
                lines.setdefault(line.purchase_order_id, []).append(line)
            for header in self.company.records(RecordKind.PURCHASE_ORDER, day):
                orders.append(self._purchase_order(header, lines.get(header.purchase_order_id, [])))
        epoch = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
        for natural_key, day, deleted_at in self.company.deleted_since(
            RecordKind.PURCHASE_ORDER, epoch
        ):
            if day in days or (since is not None and deleted_at >= since):
                orders.append(
                    {
                        "PurchaseOrderID": _xero_id("PurchaseOrders", natural_key),
                        "PurchaseOrderNumber": natural_key,
                        "Status": "DELETED",
                        "Date": xero_date(day),
                        "DateString": _date_string(day),
                        "LineItems": [],
                        "UpdatedDateUTC": xero_date(_floor_millisecond(deleted_at)),
                    }
                )
        status = request.args.get("status")
        return [order for order in orders if not status or order["Status"] == status.upper()]

    def _purchase_order(self, header: PurchaseOrder, lines: list[PurchaseOrderLine]) -> dict:
        updated = max([header.updated_at] + [line.updated_at for line in lines if line.updated_at])
        delivery = min((line.delivery_date for line in lines if line.delivery_date), default=None)
        # Xero has no "received" status: an order whose goods arrived gets billed.
        status = "AUTHORISED" if header.order_status == "open" else "BILLED"
        entity = {
            "PurchaseOrderID": _xero_id("PurchaseOrders", header.purchase_order_id),
            "PurchaseOrderNumber": header.purchase_order_id,
            "Date": xero_date(header.order_date),
            "DateString": _date_string(header.order_date),
            "Type": "PURCHASEORDER",
            "Status": status,
            "LineAmountTypes": "Exclusive",
            "CurrencyCode": header.currency,
            "CurrencyRate": Decimal("1.000000"),
            "LineItems": [
                {
                    "LineItemID": _xero_id("po-line", line.purchase_order_id, line.line_number),
                    "ItemCode": line.material_id,
                    "Description": line.description,
                    "UnitAmount": line.unit_price,
                    "TaxType": "NONE",
                    "TaxAmount": Decimal("0.00"),
                    "LineAmount": line.amount,
                    "AccountCode": line.gl_account,
                    "Quantity": line.quantity,
                    "Tracking": [],
                }
                for line in lines
            ],
            "SubTotal": header.total_amount,
            "TotalTax": Decimal("0.00"),
            "Total": header.total_amount,
            "UpdatedDateUTC": xero_date(_floor_millisecond(updated)),
            "HasAttachments": False,
        }
        if delivery:
            entity["DeliveryDate"] = xero_date(delivery)
            entity["DeliveryDateString"] = _date_string(delivery)
        if header.vendor_id:
            entity["Contact"] = self._contact_ref(header.vendor_id)
        return entity

    def _contact_ref(self, vendor_id: str) -> dict:
        vendor = next((v for v in self.company.vendors() if v.vendor_id == vendor_id), None)
        return {
            "ContactID": _xero_id("contact", vendor_id),
            "Name": vendor.name if vendor else vendor_id,
        }

    def _contact(self, vendor: Vendor) -> dict:
        contact = {
            "ContactID": _xero_id("contact", vendor.vendor_id),
            "AccountNumber": vendor.vendor_id,
            "ContactStatus": "ACTIVE" if vendor.status.value == "active" else "ARCHIVED",
            "Name": vendor.name,
            "Addresses": [
                {"AddressType": "POBOX", "Country": vendor.country or ""},
                {"AddressType": "STREET", "Country": ""},
            ],
            "Phones": [],
            "UpdatedDateUTC": xero_date(_floor_millisecond(vendor.updated_at)),
            "ContactGroups": [],
            "IsSupplier": True,
            "IsCustomer": False,
            "ContactPersons": [],
            "HasAttachments": False,
            "HasValidationErrors": False,
        }
        if vendor.tax_id:
            contact["TaxNumber"] = vendor.tax_id
        if vendor.currency:
            contact["DefaultCurrency"] = vendor.currency
        return contact

    def _stock_now(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Item code -> (quantity on hand, total cost pool) over all locations, latest day."""
        stock: dict[str, tuple[Decimal, Decimal]] = {}
        latest = self.company.business_days()[-1]
        for snapshot in self.company.records(RecordKind.INVENTORY, latest):
            quantity, value = stock.get(snapshot.material_id, (Decimal(0), Decimal(0)))
            stock[snapshot.material_id] = (
                quantity + snapshot.quantity,
                value + (snapshot.value or Decimal(0)),
            )
        return stock

    def _item(self, material: Material, on_hand: Decimal, cost_pool: Decimal) -> dict:
        gl_account = next(
            (gl for code, _, gl, _ in INDUSTRIES if code == material.commodity_code), "5900"
        )
        return {
            "ItemID": _xero_id("item", material.material_id),
            "Code": material.material_id,
            "Name": material.description[:50],
            "Description": material.description,
            "PurchaseDescription": material.description,
            "UpdatedDateUTC": xero_date(_floor_millisecond(material.updated_at)),
            "PurchaseDetails": {"AccountCode": gl_account, "TaxType": "NONE"},
            "SalesDetails": {},
            "IsTrackedAsInventory": True,
            "InventoryAssetAccountCode": "630",
            "QuantityOnHand": on_hand,
            "TotalCostPool": cost_pool,
            "IsSold": False,
            "IsPurchased": True,
        }

    def _chart_of_accounts(self) -> list[dict]:
        names: dict[str, str] = {}
        for _, words, gl_account, _ in INDUSTRIES:
            names.setdefault(gl_account, words)
        accounts = []
        for code in sorted(names):
            fixed = code.startswith("15")
            accounts.append(
                {
                    "AccountID": _xero_id("account", code),
                    "Code": code,
                    "Name": f"{names[code]} {code}",
                    "Status": "ACTIVE",
                    "Type": "FIXED"
                    if fixed
                    else ("DIRECTCOSTS" if code.startswith("51") else "EXPENSE"),
                    "TaxType": "NONE",
                    "Class": "ASSET" if fixed else "EXPENSE",
                    "EnablePaymentsToAccount": False,
                    "ShowInExpenseClaims": False,
                    "ReportingCode": "ASS.NCA.FIX" if fixed else "EXP",
                    "UpdatedDateUTC": xero_date(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)),
                }
            )
        accounts.append(
            {
                "AccountID": _xero_id("account", CARD_ACCOUNT_CODE),
                "Code": CARD_ACCOUNT_CODE,
                "Name": "Company Credit Card",
                "Status": "ACTIVE",
                "Type": "BANK",
                "BankAccountType": "CREDITCARD",
                "CurrencyCode": "EUR",
                "Class": "LIABILITY",
                "UpdatedDateUTC": xero_date(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)),
            }
        )
        return accounts


def create_app(
    company: SandboxCompany, faults: FaultPlan, credentials: dict[str, str]
) -> XeroSandbox:
    """The WSGI application the sandbox server mounts for a Xero connection."""
    return XeroSandbox(company, faults, credentials)


__all__ = [
    "SANDBOX_CREDENTIALS",
    "SANDBOX_OPTIONS",
    "SECRET_FIELDS",
    "XeroSandbox",
    "create_app",
    "parse_where",
    "xero_date",
]
