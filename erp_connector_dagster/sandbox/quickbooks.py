"""Sandbox emulator of the QuickBooks Online Accounting API v3 (minor version 75).

Serves the synthetic company the way a QuickBooks Online company file shows it:

* OAuth 2.0 with refresh tokens at `/oauth2/v1/tokens/bearer` (client id and secret in a Basic
  header, `grant_type=refresh_token`), one-hour access tokens, `invalid_client` (401) and
  `invalid_grant` (400) answers, and a 401 `AuthenticationFailed` (003200) fault for an expired
  or unknown access token.
* `GET /v3/company/{realmId}/query?query=select ... STARTPOSITION n MAXRESULTS m` over Bill,
  VendorCredit, Purchase (card charges), PurchaseOrder, Vendor, Item (with categories),
  Account and Department, answering `{"QueryResponse": {...}, "time": ...}`; `count(*)` and
  sparse field lists are understood; WHERE clauses are ANDed comparisons as in QuickBooks.
* `GET /v3/company/{realmId}/cdc?entities=...&changedSince=...` with deleted entities as
  `{"Id": ..., "status": "Deleted"}` tombstones.
* `GET /v3/company/{realmId}/reports/InventoryValuationSummary?report_date=...&department=...`
  with the on-hand quantity, asset value and average cost of each item at one location.
* Throttling as 429 `ThrottleExceeded` (errorCode 003001) with no Retry-After header.

Times are rendered in the company's time zone with a UTC offset and whole seconds, as
QuickBooks does; amounts keep the company's decimal places.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

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
from erp_connector_dagster.sandbox.company import INDUSTRIES, LOCATIONS, SandboxCompany
from erp_connector_dagster.sandbox.dialect import (
    SpendDocument,
    days_between,
    exact_json,
    line_updated,
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

SANDBOX_REALM_ID = "9341453050298476"
SANDBOX_CREDENTIALS: dict[str, str] = {
    "client_id": "ABsandboxQuickBooksClient0001",
    "client_secret": "qbo-sandbox-client-secret-7f3a",
    "refresh_token": "AB11795987235sandboxRefreshToken0042",
}
SECRET_FIELDS: frozenset[str] = frozenset({"client_secret", "refresh_token"})
SANDBOX_OPTIONS: dict[str, object] = {
    "realm_id": SANDBOX_REALM_ID,
    # The token endpoint lives on another host in production; the sandbox serves it itself.
    "token_url": "/oauth2/v1/tokens/bearer",
}

ACCESS_TOKEN_SECONDS = 3600
COMPANY_TIMEZONE = ZoneInfo("America/Los_Angeles")
HOME_CURRENCY = "EUR"  # the sandbox company values its stock in euros
MAX_RESULTS = 1000

SPEND_ENTITIES: dict[str, SpendDocumentType] = {
    "Bill": SpendDocumentType.INVOICE,
    "VendorCredit": SpendDocumentType.CREDIT_NOTE,
    "Purchase": SpendDocumentType.CARD_CHARGE,
}
CARD_ACCOUNT = {"value": "41", "name": "Mastercard"}
AP_ACCOUNT = {"value": "33", "name": "Accounts Payable (A/P)"}


# Rendering helpers


def _json(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON with decimals written as numbers carrying their exact digits."""
    return Response(
        exact_json(payload), status=status, mimetype="application/json", headers=headers
    )


def _timestamp(moment: dt.datetime | None) -> str:
    moment = moment or dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    local = moment.astimezone(COMPANY_TIMEZONE).replace(microsecond=0)
    return local.isoformat()


def _parse_timestamp(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=COMPANY_TIMEZONE)
    return moment.astimezone(dt.timezone.utc)


def _floor_second(moment: dt.datetime) -> dt.datetime:
    return moment.replace(microsecond=0)


def _throttle_exceeded(fault: Fault) -> Response:
    # QuickBooks names no wait: the client backs off on its own.
    return _fault(
        "message=ThrottleExceeded; errorCode=003001; statusCode=429",
        "The request limit was reached.  Try again later",
        "3001",
        "SERVICE",
        429,
    )


def _fault(message: str, detail: str, code: str, fault_type: str, status: int) -> Response:
    body = {
        "Fault": {
            "Error": [{"Message": message, "Detail": detail, "code": code}],
            "type": fault_type,
        },
        "time": _timestamp(dt.datetime.now(dt.timezone.utc)),
    }
    return _json(body, status=status)


def _authentication_failed(detail: str) -> Response:
    # The gateway answers 401 in its own lower-case envelope, unlike the API's "Fault".
    body = {
        "warnings": None,
        "intuitObject": None,
        "fault": {
            "error": [
                {
                    "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                    "detail": detail,
                    "code": "3200",
                    "element": None,
                }
            ],
            "type": "AUTHENTICATION",
        },
        "time": int(time.time() * 1000),
    }
    return _json(body, status=401, headers={"WWW-Authenticate": 'Bearer realm="Intuit"'})


def _numeric_id(text: str) -> str:
    return str(int("".join(ch for ch in text if ch.isdigit()) or "0"))


# Documents assembled from the company's lines


@dataclass
class _Bounds:
    """What a WHERE clause says about dates, used to pick candidates before filtering."""

    first_day: dt.date | None = None
    last_day: dt.date | None = None
    changed_since: dt.datetime | None = None


# Query language


@dataclass
class _Condition:
    path: str
    operator: str
    value: object


_QUERY = re.compile(
    r"^\s*select\s+(?P<fields>.+?)\s+from\s+(?P<entity>\w+)"
    r"(?:\s+where\s+(?P<where>.+?))?"
    r"(?:\s+orderby\s+(?P<order>[\w.]+)(?:\s+(?P<direction>asc|desc))?)?"
    r"(?:\s+startposition\s+(?P<start>\d+))?"
    r"(?:\s+maxresults\s+(?P<max>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CONDITION = re.compile(
    r"^\s*(?P<path>[\w.]+)\s*(?P<op>>=|<=|!=|=|<|>|\bin\b|\blike\b)\s*(?P<value>.+?)\s*$",
    re.IGNORECASE | re.DOTALL,
)


class QueryError(ValueError):
    """A query QuickBooks would refuse to parse."""


def _split_and(where: str) -> list[str]:
    """Split on AND outside string literals (a backslash escapes a quote inside one)."""
    parts, current, quoted, position = [], [], False, 0
    while position < len(where):
        char = where[position]
        if quoted and char == "\\" and position + 1 < len(where):
            current.append(where[position : position + 2])
            position += 2
            continue
        if char == "'":
            quoted = not quoted
        elif not quoted:
            separator = re.match(r"\s+and\s+", where[position:], flags=re.IGNORECASE)
            if separator:
                parts.append("".join(current))
                current = []
                position += separator.end()
                continue
        current.append(char)
        position += 1
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def _literal(text: str) -> object:
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        return [_literal(item) for item in re.findall(r"'(?:\\'|[^'])*'|[^,\s]+", text[1:-1])]
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("\\'", "'")
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return Decimal(text)
    except ArithmeticError:
        raise QueryError(f"cannot read literal {text!r}") from None


def parse_query(query: str) -> dict:
    """Split a QuickBooks query into its parts; raises QueryError on anything else."""
    match = _QUERY.match(query)
    if not match:
        raise QueryError("QueryParserError: Encountered an unexpected token")
    conditions = []
    for part in _split_and(match["where"] or ""):
        condition = _CONDITION.match(part)
        if not condition:
            raise QueryError(f"QueryParserError: cannot read condition {part.strip()!r}")
        conditions.append(
            _Condition(condition["path"], condition["op"].upper(), _literal(condition["value"]))
        )
    return {
        "fields": [item.strip() for item in match["fields"].split(",")],
        "entity": match["entity"],
        "conditions": conditions,
        "order": match["order"],
        "descending": (match["direction"] or "").lower() == "desc",
        "start": int(match["start"] or 1),
        "max": min(int(match["max"] or 100), MAX_RESULTS),
    }


def _lookup(entity: dict, path: str) -> object:
    value: object = entity
    for part in path.split("."):
        if isinstance(value, dict):
            value = next((v for k, v in value.items() if k.lower() == part.lower()), None)
        else:
            return None
    return value


def _comparable(path: str, value: object) -> object:
    if value is None:
        return None
    if path.lower().endswith("time") and isinstance(value, str):
        return _floor_second(_parse_timestamp(value))
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, str) and path.lower() == "id":
        return Decimal(value)
    return value


def _matches(entity: dict, condition: _Condition) -> bool:
    actual = _comparable(condition.path, _lookup(entity, condition.path))
    if condition.operator == "IN":
        return actual in [_comparable(condition.path, item) for item in condition.value]
    expected = _comparable(condition.path, condition.value)
    if condition.operator == "LIKE":
        pattern = re.escape(str(expected)).replace("%", ".*")
        return actual is not None and re.fullmatch(pattern, str(actual)) is not None
    if actual is None:
        return condition.operator == "!=" and expected is not None
    comparisons: dict[str, Callable[[object, object], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        ">=": lambda a, b: a >= b,
    }
    try:
        return comparisons[condition.operator](actual, expected)
    except TypeError:
        return False


def _bounds(conditions: list[_Condition]) -> _Bounds:
    bounds = _Bounds()
    for condition in conditions:
        path = condition.path.lower()
        if path == "txndate" and isinstance(condition.value, str):
            day = dt.date.fromisoformat(condition.value)
            if condition.operator in (">=", ">", "="):
                bounds.first_day = day
            if condition.operator in ("<", "<=", "="):
                bounds.last_day = day - dt.timedelta(days=1) if condition.operator == "<" else day
        if path == "metadata.lastupdatedtime" and condition.operator in (">=", ">"):
            bounds.changed_since = _parse_timestamp(str(condition.value))
    return bounds


# The emulated company file


class QuickBooksSandbox:
    """Renders the synthetic company as QuickBooks Online entities and serves the API."""

    def __init__(
        self, company: SandboxCompany, faults: FaultPlan, credentials: dict[str, str]
    ) -> None:
        self.company = company
        self.faults = faults
        self.credentials = credentials
        self.realm_id = SANDBOX_REALM_ID
        self._lock = threading.Lock()
        self._access_tokens = TokenStore(lifetime_seconds=ACCESS_TOKEN_SECONDS)
        # Intuit rotates refresh tokens; the one presented stays usable for a while.
        self._refresh_tokens: set[str] = {credentials["refresh_token"]}
        self._url_map = Map(
            [
                Rule("/oauth2/v1/tokens/bearer", endpoint="token", methods=["POST"]),
                Rule("/v3/company/<realm>/query", endpoint="query", methods=["GET", "POST"]),
                Rule("/v3/company/<realm>/cdc", endpoint="cdc", methods=["GET"]),
                Rule("/v3/company/<realm>/reports/<report>", endpoint="report", methods=["GET"]),
                Rule("/v3/company/<realm>/companyinfo/<key>", endpoint="company_info"),
            ]
        )
        self._accounts = self._chart_of_accounts()
        # CDC tombstones name the entity type of a deleted document, which the company no
        # longer knows once the lines are gone; remember the types of documents served.
        self._document_types: dict[str, SpendDocumentType] = {}
        self._vendor_ids = {v.vendor_id: _numeric_id(v.vendor_id) for v in company.vendors()}

    # WSGI plumbing

    def __call__(self, environ, start_response):
        request = Request(environ)
        response = self._dispatch(request)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        forced = fault_response(
            self.faults.take(), throttled=_throttle_exceeded, token_expired=self._expire_tokens
        )
        if forced is not None:
            return forced
        try:
            endpoint, arguments = self._url_map.bind_to_environ(request.environ).match()
        except NotFound:
            return _fault("Resource not found", "no such endpoint", "610", "SERVICE", 404)
        except HTTPException as error:
            return error.get_response(request.environ)
        if endpoint == "token":
            return self._token(request)
        refused = self._refuse(request, arguments["realm"])
        if refused is not None:
            return refused
        handler = getattr(self, f"_{endpoint}")
        try:
            return handler(request, **{k: v for k, v in arguments.items() if k != "realm"})
        except QueryError as error:
            return _fault("Error parsing query", str(error), "4000", "ValidationFault", 400)

    # OAuth 2.0

    def _expire_tokens(self) -> None:
        self._access_tokens.revoke_all()

    def _token(self, request: Request) -> Response:
        if not client_authenticated(basic_credentials(request), self.credentials):
            return _json({"error": "invalid_client"}, status=401)
        if request.form.get("grant_type") != "refresh_token":
            return _json({"error": "unsupported_grant_type"}, status=400)
        refresh_token = request.form.get("refresh_token", "")
        with self._lock:
            known = any(
                secrets.compare_digest(refresh_token, token) for token in self._refresh_tokens
            )
        if not known:
            return _json({"error": "invalid_grant"}, status=400)
        access_token = self._access_tokens.issue(prefix="eyJlbmMiOiJBMTI4Q0JDLUhTMjU2")
        rotated = "AB11" + secrets.token_urlsafe(30)
        with self._lock:
            self._refresh_tokens.add(rotated)
        return _json(
            {
                "token_type": "bearer",
                "access_token": access_token,
                "expires_in": ACCESS_TOKEN_SECONDS,
                "refresh_token": rotated,
                "x_refresh_token_expires_in": 8726400,
            },
            headers={"Cache-Control": "no-store"},
        )

    def _refuse(self, request: Request, realm: str) -> Response | None:
        token = bearer(request)
        if not self._access_tokens.valid(token):
            return _authentication_failed("Token expired: " + token[:12] if token else "missing")
        if realm != self.realm_id:
            return _fault(
                "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                "",
                "003100",
                "SECURITY",
                403,
            )
        return None

    # Endpoints

    def _company_info(self, request: Request, key: str) -> Response:
        info = {
            "CompanyName": "Sandbox Manufacturing Co",
            "Id": "1",
            "Country": "US",
            "MetaData": {"CreateTime": _timestamp(None)},
        }
        return _json({"CompanyInfo": info, "time": _timestamp(dt.datetime.now(dt.timezone.utc))})

    def _query(self, request: Request) -> Response:
        text = request.args.get("query") or request.get_data(as_text=True)
        parsed = parse_query(text)
        entity_name = parsed["entity"][0].upper() + parsed["entity"][1:]
        entities = [
            entity
            for entity in self._entities(entity_name, _bounds(parsed["conditions"]))
            if all(_matches(entity, condition) for condition in parsed["conditions"])
        ]
        now = _timestamp(dt.datetime.now(dt.timezone.utc))
        if parsed["fields"] == ["count(*)"]:
            return _json({"QueryResponse": {"totalCount": len(entities)}, "time": now})
        order = parsed["order"] or "Id"
        entities.sort(
            key=lambda entity: (
                _comparable(order, _lookup(entity, order)) is None,
                _comparable(order, _lookup(entity, order)) or 0,
            ),
            reverse=parsed["descending"],
        )
        page = entities[parsed["start"] - 1 : parsed["start"] - 1 + parsed["max"]]
        if parsed["fields"] != ["*"]:
            page = [self._sparse(entity, parsed["fields"]) for entity in page]
        body: dict = {}
        if page:
            body = {entity_name: page, "startPosition": parsed["start"], "maxResults": len(page)}
        return _json({"QueryResponse": body, "time": now})

    def _cdc(self, request: Request) -> Response:
        names = [name.strip() for name in request.args.get("entities", "").split(",") if name]
        since_text = request.args.get("changedSince")
        if not names or not since_text:
            return _fault(
                "Request has invalid or unsupported property",
                "entities and changedSince are required",
                "2010",
                "ValidationFault",
                400,
            )
        since = _parse_timestamp(since_text)
        if since < dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30):
            return _fault(
                "Invalid request",
                "changedSince must be within the last 30 days",
                "2020",
                "ValidationFault",
                400,
            )
        responses = []
        for name in names:
            entity_name = name[0].upper() + name[1:]
            changed = [
                entity
                for entity in self._entities(entity_name, _Bounds(changed_since=since))
                if _floor_second(_parse_timestamp(entity["MetaData"]["LastUpdatedTime"]))
                >= _floor_second(since)
            ]
            changed += self._tombstones(entity_name, since)
            # CDC answers at most 1000 objects per entity, like the live service.
            changed = changed[:MAX_RESULTS]
            responses.append({entity_name: changed, "startPosition": 1, "maxResults": len(changed)})
        now = _timestamp(dt.datetime.now(dt.timezone.utc))
        return _json({"CDCResponse": [{"QueryResponse": responses}], "time": now})

    def _report(self, request: Request, report: str) -> Response:
        if report != "InventoryValuationSummary":
            return _fault("Unsupported report", report, "2030", "ValidationFault", 400)
        report_date = dt.date.fromisoformat(
            request.args.get("report_date", self.company.end.isoformat())
        )
        departments = {str(index): name for index, name in enumerate(LOCATIONS, start=1)}
        wanted = [
            departments[key]
            for key in request.args.get("department", "").split(",")
            if key in departments
        ] or list(LOCATIONS)
        return _json(self._inventory_valuation(report_date, wanted))

    # Entities

    def _entities(self, entity_name: str, bounds: _Bounds) -> list[dict]:
        if entity_name in SPEND_ENTITIES:
            return [
                self._spend_entity(entity_name, document)
                for document in self._documents(bounds)
                if document.document_type is SPEND_ENTITIES[entity_name]
            ]
        if entity_name == "PurchaseOrder":
            return [
                self._purchase_order(header, lines)
                for header, lines in self._purchase_orders(bounds)
            ]
        if entity_name == "Vendor":
            return [self._vendor(vendor) for vendor in self.company.vendors()]
        if entity_name == "Item":
            return self._items()
        if entity_name == "Account":
            return list(self._accounts.values())
        if entity_name == "Department":
            return [
                {
                    "Id": str(index),
                    "Name": name,
                    "SubDepartment": False,
                    "Active": True,
                    "FullyQualifiedName": name,
                    "domain": "QBO",
                    "sparse": False,
                    "SyncToken": "0",
                    "MetaData": {
                        "CreateTime": _timestamp(None),
                        "LastUpdatedTime": _timestamp(None),
                    },
                }
                for index, name in enumerate(LOCATIONS, start=1)
            ]
        raise QueryError(f"QueryValidationError: Unknown entity {entity_name}")

    def _candidate_days(self, bounds: _Bounds) -> list[dt.date]:
        if bounds.first_day or bounds.last_day:
            first = bounds.first_day or self.company.start
            last = bounds.last_day or self.company.end
        elif bounds.changed_since:
            first, last = bounds.changed_since.date() - dt.timedelta(days=40), self.company.end
        else:
            first, last = self.company.start, self.company.end
        return list(days_between(max(first, self.company.start), min(last, self.company.end)))

    def _documents(self, bounds: _Bounds) -> list[SpendDocument]:
        if bounds.changed_since and not (bounds.first_day or bounds.last_day):
            return self._changed_documents(bounds.changed_since)
        documents = []
        for day in self._candidate_days(bounds):
            documents.extend(spend_documents(self.company, day))
        return documents

    def _changed_documents(self, since: dt.datetime) -> list[SpendDocument]:
        changed_days: dict[dt.date, set[str]] = {}
        for line in self.company.changed_since(RecordKind.SPEND, _floor_second(since)):
            changed_days.setdefault(line.transaction_date, set()).add(line.document_id)
        for day in days_between(since.date() - dt.timedelta(days=1), self.company.end):
            for bad in self.company.bad_spend_lines(day):
                if line_updated(bad) >= _floor_second(since):
                    changed_days.setdefault(day, set()).add(bad["document_id"])
        documents = []
        for day, document_ids in sorted(changed_days.items()):
            documents.extend(
                document
                for document in spend_documents(self.company, day)
                if document.document_id in document_ids
            )
        return documents

    def _purchase_orders(self, bounds: _Bounds) -> list[tuple[PurchaseOrder, list]]:
        if bounds.changed_since and not (bounds.first_day or bounds.last_day):
            since = _floor_second(bounds.changed_since)
            days = sorted(
                {
                    record.order_date
                    for kind in (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE)
                    for record in self.company.changed_since(kind, since)
                }
            )
        else:
            days = self._candidate_days(bounds)
        orders = []
        for day in days:
            lines_by_order: dict[str, list[PurchaseOrderLine]] = {}
            for line in self.company.records(RecordKind.PURCHASE_ORDER_LINE, day):
                lines_by_order.setdefault(line.purchase_order_id, []).append(line)
            for header in self.company.records(RecordKind.PURCHASE_ORDER, day):
                orders.append((header, lines_by_order.get(header.purchase_order_id, [])))
        return orders

    def _tombstones(self, entity_name: str, since: dt.datetime) -> list[dict]:
        """Deleted entities as CDC reports them: only the id, status and change time."""
        kind = {
            "PurchaseOrder": RecordKind.PURCHASE_ORDER,
            "Vendor": RecordKind.VENDOR,
            "Item": RecordKind.MATERIAL,
        }.get(entity_name, RecordKind.SPEND)
        tombstones: dict[str, dict] = {}
        for natural_key, day, deleted_at in self.company.deleted_since(kind, since):
            if kind is RecordKind.SPEND:
                document_id = self.company.deleted_document(kind, natural_key)
                remaining = [
                    document
                    for document in spend_documents(self.company, day)
                    if document.document_id == document_id
                ]
                served_as = self._document_types.get(document_id, SpendDocumentType.INVOICE)
                if remaining or SPEND_ENTITIES.get(entity_name) is not served_as:
                    continue
                entity_id = _numeric_id(document_id)
            elif kind is RecordKind.MATERIAL:
                entity_id = str(100000 + int(_numeric_id(natural_key)))
            else:
                entity_id = _numeric_id(natural_key)
            tombstones[entity_id] = {
                "domain": "QBO",
                "status": "Deleted",
                "Id": entity_id,
                "MetaData": {"LastUpdatedTime": _timestamp(deleted_at)},
            }
        return list(tombstones.values())

    @staticmethod
    def _sparse(entity: dict, fields: list[str]) -> dict:
        sparse: dict = {"domain": "QBO", "sparse": True, "Id": entity["Id"]}
        for path in fields:
            head, _, rest = path.partition(".")
            value = entity.get(head)
            if rest and isinstance(value, dict):
                sparse.setdefault(head, {})[rest] = value.get(rest)
            elif value is not None:
                sparse[head] = value
        return sparse

    # Rendering of each entity

    def _chart_of_accounts(self) -> dict[str, dict]:
        accounts: dict[str, dict] = {}
        gl_names: dict[str, str] = {}
        for _, words, gl_account, _ in INDUSTRIES:
            gl_names.setdefault(gl_account, words)
        for index, gl_account in enumerate(sorted(gl_names), start=100):
            if gl_account.startswith("15"):
                account_type, sub_type = "Fixed Asset", "MachineryAndEquipment"
            elif gl_account.startswith("51"):
                account_type, sub_type = "Cost of Goods Sold", "SuppliesMaterialsCogs"
            else:
                account_type, sub_type = "Expense", "OtherMiscellaneousServiceCost"
            accounts[gl_account] = {
                "Id": str(index),
                "Name": f"{gl_names[gl_account]} {gl_account}",
                "AcctNum": gl_account,
                "FullyQualifiedName": f"{gl_names[gl_account]} {gl_account}",
                "Active": True,
                "Classification": "Asset" if account_type == "Fixed Asset" else "Expense",
                "AccountType": account_type,
                "AccountSubType": sub_type,
                "CurrencyRef": {"value": HOME_CURRENCY},
                "domain": "QBO",
                "sparse": False,
                "SyncToken": "0",
                "MetaData": {"CreateTime": _timestamp(None), "LastUpdatedTime": _timestamp(None)},
            }
        return accounts

    def _account_ref(self, gl_account: str | None) -> dict:
        account = self._accounts.get(gl_account or "")
        if account is None:
            return {"value": gl_account or "", "name": gl_account or ""}
        return {"value": account["Id"], "name": account["Name"]}

    def _vendor(self, vendor: Vendor) -> dict:
        entity = {
            "Id": self._vendor_ids.get(vendor.vendor_id, _numeric_id(vendor.vendor_id)),
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "DisplayName": vendor.name,
            "CompanyName": vendor.name,
            "PrintOnCheckName": vendor.name,
            "AcctNum": vendor.vendor_id,
            "Active": vendor.status.value == "active",
            "Vendor1099": False,
            "Balance": Decimal("0"),
            "CurrencyRef": {"value": vendor.currency or HOME_CURRENCY},
            "MetaData": {
                "CreateTime": _timestamp(vendor.updated_at),
                "LastUpdatedTime": _timestamp(vendor.updated_at),
            },
        }
        if vendor.tax_id:
            entity["TaxIdentifier"] = vendor.tax_id
        if vendor.country:
            entity["BillAddr"] = {"Id": entity["Id"], "Country": vendor.country}
        return entity

    def _vendor_ref(self, vendor_id: str | None) -> dict | None:
        if not vendor_id:
            return None
        vendor = next((v for v in self.company.vendors() if v.vendor_id == vendor_id), None)
        return {
            "value": self._vendor_ids.get(vendor_id, _numeric_id(vendor_id)),
            "name": vendor.name if vendor else vendor_id,
        }

    def _items(self) -> list[dict]:
        materials = self.company.materials()
        groups = sorted({m.material_group for m in materials if m.material_group})
        category_ids = {group: str(index) for index, group in enumerate(groups, start=1)}
        items = [
            {
                "Id": category_ids[group],
                "Name": group,
                "Type": "Category",
                "Active": True,
                "FullyQualifiedName": group,
                "SubItem": False,
                "domain": "QBO",
                "sparse": False,
                "SyncToken": "0",
                "MetaData": {"CreateTime": _timestamp(None), "LastUpdatedTime": _timestamp(None)},
            }
            for group in groups
        ]
        for material in materials:
            items.append(self._item(material, category_ids))
        return items

    def _item(self, material: Material, category_ids: dict[str, str]) -> dict:
        gl_account = next(
            (gl for code, _, gl, _ in INDUSTRIES if code == material.commodity_code), "5900"
        )
        service = material.base_unit == "H"
        entity = {
            "Id": str(100000 + int(_numeric_id(material.material_id))),
            "Name": material.description,
            "Sku": material.material_id,
            "Description": material.description,
            "PurchaseDesc": material.description,
            "Active": material.status.value == "active",
            "Type": "Service" if service else "Inventory",
            "TrackQtyOnHand": not service,
            "ExpenseAccountRef": self._account_ref(gl_account),
            "domain": "QBO",
            "sparse": False,
            "SyncToken": "0",
            "MetaData": {
                "CreateTime": _timestamp(material.updated_at),
                "LastUpdatedTime": _timestamp(material.updated_at),
            },
        }
        if material.material_group:
            entity["SubItem"] = True
            entity["ParentRef"] = {
                "value": category_ids[material.material_group],
                "name": material.material_group,
            }
            entity["FullyQualifiedName"] = f"{material.material_group}:{material.description}"
        else:
            entity["FullyQualifiedName"] = material.description
        return entity

    def _item_ref(self, material_id: str | None) -> dict:
        material = next((m for m in self.company.materials() if m.material_id == material_id), None)
        return {
            "value": str(100000 + int(_numeric_id(material_id or "0"))),
            "name": material.description if material else material_id,
        }

    def _spend_entity(self, entity_name: str, document: SpendDocument) -> dict:
        self._document_types[document.document_id] = document.document_type
        first = document.lines[0]
        header = first if isinstance(first, dict) else first.model_dump()
        sign = Decimal(-1) if document.document_type is SpendDocumentType.CREDIT_NOTE else 1
        lines = []
        total = Decimal("0")
        for number, line in enumerate(document.lines, start=1):
            rendered = self._expense_line(line, sign, number)
            lines.append(rendered)
            if isinstance(rendered["Amount"], Decimal):
                total += rendered["Amount"]
        updated = _timestamp(document.updated_at)
        entity: dict = {
            "Id": _numeric_id(document.document_id),
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "DocNumber": document.document_id,
            "TxnDate": document.day.isoformat(),
            "CurrencyRef": {"value": header["currency"]},
            "Line": lines,
            "TotalAmt": total,
            "MetaData": {"CreateTime": updated, "LastUpdatedTime": updated},
        }
        vendor_ref = self._vendor_ref(header["vendor_id"])
        if entity_name == "Purchase":
            entity.update(PaymentType="CreditCard", AccountRef=CARD_ACCOUNT, Credit=False)
            if vendor_ref:
                entity["EntityRef"] = {**vendor_ref, "type": "Vendor"}
        else:
            entity["APAccountRef"] = AP_ACCOUNT
            if vendor_ref:
                entity["VendorRef"] = vendor_ref
            if entity_name == "Bill":
                entity["DueDate"] = (document.day + dt.timedelta(days=30)).isoformat()
                entity["Balance"] = total
        return entity

    def _expense_line(self, line: SpendRecord | dict, sign, number: int) -> dict:
        if isinstance(line, dict):
            # A broken line is served as the ERP would hand it over: the raw text as stored.
            amount = line["amount"]
            return {
                "Id": str(number),
                "LineNum": line["line_number"],
                "Description": line["description"],
                "Amount": amount,
                "DetailType": "AccountBasedExpenseLineDetail",
                "AccountBasedExpenseLineDetail": {
                    "AccountRef": self._account_ref(line["gl_account"]),
                    "BillableStatus": "NotBillable",
                    "TaxCodeRef": {"value": "NON"},
                },
            }
        amount = line.amount * sign
        rendered: dict = {
            "Id": str(number),
            "LineNum": line.line_number,
            "Description": line.description,
            "Amount": amount,
        }
        if line.material_id:
            quantity = (line.quantity or Decimal("1")) * sign
            rendered["DetailType"] = "ItemBasedExpenseLineDetail"
            rendered["ItemBasedExpenseLineDetail"] = {
                "ItemRef": self._item_ref(line.material_id),
                "Qty": quantity,
                "UnitPrice": (amount / quantity).quantize(Decimal("0.0001")) if quantity else 0,
                "BillableStatus": "NotBillable",
                "TaxCodeRef": {"value": "NON"},
            }
        else:
            rendered["DetailType"] = "AccountBasedExpenseLineDetail"
            rendered["AccountBasedExpenseLineDetail"] = {
                "AccountRef": self._account_ref(line.gl_account),
                "BillableStatus": "NotBillable",
                "TaxCodeRef": {"value": "NON"},
            }
        return rendered

    def _purchase_order(self, header: PurchaseOrder, lines: list[PurchaseOrderLine]) -> dict:
        updated = max([header.updated_at] + [line.updated_at for line in lines if line.updated_at])
        # QuickBooks knows only Open and Closed; receiving goods closes the order on billing.
        status = "Open" if header.order_status == "open" else "Closed"
        entity: dict = {
            "Id": _numeric_id(header.purchase_order_id),
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "DocNumber": header.purchase_order_id,
            "TxnDate": header.order_date.isoformat(),
            "CurrencyRef": {"value": header.currency},
            "POStatus": status,
            "TotalAmt": header.total_amount,
            "APAccountRef": AP_ACCOUNT,
            "Line": [
                {
                    "Id": str(index),
                    "LineNum": line.line_number,
                    "Description": line.description,
                    "Amount": line.amount,
                    "DetailType": "ItemBasedExpenseLineDetail",
                    "ItemBasedExpenseLineDetail": {
                        "ItemRef": self._item_ref(line.material_id),
                        "Qty": line.quantity,
                        "UnitPrice": line.unit_price,
                        "BillableStatus": "NotBillable",
                        "TaxCodeRef": {"value": "NON"},
                    },
                }
                for index, line in enumerate(lines, start=1)
            ],
            "MetaData": {
                "CreateTime": _timestamp(header.updated_at),
                "LastUpdatedTime": _timestamp(updated),
            },
        }
        vendor_ref = self._vendor_ref(header.vendor_id)
        if vendor_ref:
            entity["VendorRef"] = vendor_ref
        return entity

    def _inventory_valuation(self, report_date: dt.date, locations: list[str]) -> dict:
        snapshots = [
            snapshot
            for snapshot in self.company.records(RecordKind.INVENTORY, report_date)
            if snapshot.location in locations
        ]
        rows = []
        for snapshot in sorted(snapshots, key=lambda s: (s.material_id, s.location)):
            item_ref = self._item_ref(snapshot.material_id)
            rows.append(
                {
                    "ColData": [
                        {"value": item_ref["name"], "id": item_ref["value"]},
                        {"value": snapshot.material_id},
                        {"value": str(snapshot.quantity)},
                        {"value": str(snapshot.value)},
                        {"value": str(snapshot.unit_cost)},
                    ],
                    "type": "Data",
                }
            )
        total_quantity = sum((s.quantity for s in snapshots), Decimal("0"))
        total_value = sum((s.value or Decimal("0") for s in snapshots), Decimal("0"))
        rows.append(
            {
                "Summary": {
                    "ColData": [
                        {"value": "TOTAL"},
                        {"value": ""},
                        {"value": str(total_quantity)},
                        {"value": str(total_value)},
                        {"value": ""},
                    ]
                },
                "type": "Section",
                "group": "GrandTotal",
            }
        )
        return {
            "Header": {
                "Time": _timestamp(dt.datetime.now(dt.timezone.utc)),
                "ReportName": "InventoryValuationSummary",
                "DateMacro": "",
                "StartPeriod": report_date.isoformat(),
                "EndPeriod": report_date.isoformat(),
                "SummarizeColumnsBy": "Total",
                "Currency": HOME_CURRENCY,
                "Option": [
                    {"Name": "report_date", "Value": report_date.isoformat()},
                    {"Name": "NoReportData", "Value": str(not snapshots).lower()},
                ],
            },
            "Columns": {
                "Column": [
                    {"ColTitle": "", "ColType": "ProductsAndService"},
                    {"ColTitle": "SKU", "ColType": "String"},
                    {"ColTitle": "Qty", "ColType": "Quantity"},
                    {"ColTitle": "Asset Value", "ColType": "Money"},
                    {"ColTitle": "Calc. Avg", "ColType": "Money"},
                ]
            },
            "Rows": {"Row": rows if snapshots else []},
        }


def create_app(
    company: SandboxCompany, faults: FaultPlan, credentials: dict[str, str]
) -> QuickBooksSandbox:
    """The WSGI application the sandbox server mounts for a QuickBooks connection."""
    return QuickBooksSandbox(company, faults, credentials)


__all__ = [
    "SANDBOX_CREDENTIALS",
    "SANDBOX_OPTIONS",
    "SECRET_FIELDS",
    "QuickBooksSandbox",
    "create_app",
    "parse_query",
]
