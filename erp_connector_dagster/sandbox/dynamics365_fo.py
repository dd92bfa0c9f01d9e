"""Sandbox Dynamics 365 Finance & Operations: data entities over OData v4, Entra ID sign-in.

Serves the synthetic company the way an F&O environment does under `/data/<EntitySet>`:
`VendorInvoiceHeaders` / `VendorInvoiceLines` (spend), `PurchaseOrderHeadersV2` with its
`PurchaseOrderLinesV2` navigation, `VendorsV2` and `ReleasedProductsV2`. Rows carry `dataAreaId`
and `@odata.etag`, dates are `Edm.DateTimeOffset` at 12:00 UTC (F&O's way of writing a calendar
date; a blank date is 1900-01-01), decimals are JSON numbers, blank strings are "" rather than
null. Credit notes are invoices with negative quantities and amounts, as F&O posts them.

Paging is server-driven: `Prefer: odata.maxpagesize` (default 10,000) and `@odata.nextLink` with
a key-set `$skiptoken`, so rows that change between pages are neither skipped nor repeated.
`$filter` (eq/ne/gt/ge/lt/le, and/or/not, parentheses), `$select`, `$expand` and
`cross-company=true` are understood.

The Microsoft Entra ID token endpoint is emulated under the same base URL, at
`/<tenant>/oauth2/v2.0/token` (client credentials, `scope=<environment URL>/.default`); the
connection points its `authority_url` at "/" for that. Tokens expire after `expires_in` seconds;
an expired or revoked token is answered 401 with an empty body, as F&O does. Throttling is 429
with `Retry-After` (service protection limits).

The OData machinery here (filter evaluation, paging, token issuing) is shared with the Business
Central emulator in `dynamics365_bc`.

Standard F&O entities expose no change timestamp; like an entity extension, this emulator adds
`ModifiedDateTime` to the invoice and purchase order headers (see the F&O source).

On-hand: the standard `WarehousesOnHandV2` entity serves the on-hand of now, which in this
company is its latest business day (one row per item, site and warehouse; no cost). The
customer's daily snapshot, a custom data entity (`ONHAND_SNAPSHOT_ENTITY`, named to the source
in `SANDBOX_OPTIONS`), serves every business day: item, warehouse, `SnapshotDate`, quantity,
unit, unit cost, value and currency.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlencode

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
from erp_connector_dagster.sandbox.dialect import exact_json as json_dumps
from erp_connector_dagster.sandbox.faults import (
    Fault,
    FaultKind,
    FaultPlan,
    fault_response,
)
from erp_connector_dagster.sandbox.oauth import TokenStore, bearer

UTC = dt.timezone.utc
LEGAL_ENTITY = "usmf"
SANDBOX_TENANT_ID = "7f3c2a10-5b7e-4d0c-9a51-2d4b8e6f1a90"

SANDBOX_CREDENTIALS: dict[str, str] = {
    "tenant_id": SANDBOX_TENANT_ID,
    "client_id": "b1d7e3a2-0c4f-4e8b-9f61-5a2c7d9e0f13",
    "client_secret": "fo-sandbox-client-secret-Q8~v2",
}
SECRET_FIELDS = frozenset({"client_secret"})
# The customer's custom data entity of daily on-hand snapshots.
ONHAND_SNAPSHOT_ENTITY = "GLOnHandDailySnapshots"
INVENTORY_SITE = "1"
SANDBOX_OPTIONS: dict[str, object] = {
    "authority_url": "/",
    "legal_entity": LEGAL_ENTITY,
    "onhand_snapshot_entity": ONHAND_SNAPSHOT_ENTITY,
}

DEFAULT_PAGE_SIZE = 10_000
TOKEN_LIFETIME_SECONDS = 3599
CARD_PAYMENT_METHOD = "CARD"
CAPEX_CATEGORY = "CAPEX"
PURCHASE_STATUS = {"open": "Backorder", "received": "Received", "closed": "Invoiced"}
BLANK_DATE = "1900-01-01T00:00:00Z"


# --- JSON with exact decimals -------------------------------------------------------------


def json_response(document: object, status: int = 200, headers: dict | None = None) -> Response:
    response = Response(json_dumps(document), status=status, mimetype="application/json")
    response.headers["OData-Version"] = "4.0"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# --- OData literals and $filter ------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})
      | (?P<datetime>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2}))
      | (?P<date>\d{4}-\d{2}-\d{2})
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<paren>[()])
      | (?P<word>[A-Za-z_][A-Za-z0-9_./]*)
    )""",
    re.VERBOSE,
)
_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}


class ODataError(ValueError):
    """A query the emulated service refuses with 400."""


@dataclass(frozen=True)
class Literal:
    value: object


@dataclass(frozen=True)
class Comparison:
    field: str
    operator: str
    literal: Literal


@dataclass(frozen=True)
class Junction:
    operator: str  # "and" / "or"
    parts: tuple


@dataclass(frozen=True)
class Negation:
    part: object


def parse_datetime(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise ODataError(f"Syntax error at position {position} in '{text}'.")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    return tokens


def parse_filter(text: str):
    """Parse the subset of OData `$filter` the emulators answer."""
    tokens = _tokens(text)
    position = 0

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal position
        if position >= len(tokens):
            raise ODataError("Unexpected end of $filter expression.")
        position += 1
        return tokens[position - 1]

    def literal(kind: str, text_value: str) -> Literal:
        if kind == "string":
            return Literal(text_value[1:-1].replace("''", "'"))
        if kind == "guid":
            return Literal(text_value.lower())
        if kind == "datetime":
            return Literal(parse_datetime(text_value))
        if kind == "date":
            return Literal(dt.date.fromisoformat(text_value))
        if kind == "number":
            return Literal(Decimal(text_value))
        if kind == "word" and text_value in ("true", "false"):
            return Literal(text_value == "true")
        if kind == "word" and text_value == "null":
            return Literal(None)
        raise ODataError(f"Expected a literal, found '{text_value}'.")

    def primary():
        kind, value = take()
        if kind == "paren" and value == "(":
            inner = disjunction()
            if take() != ("paren", ")"):
                raise ODataError("Missing closing parenthesis in $filter.")
            return inner
        if kind == "word" and value == "not":
            return Negation(primary())
        if kind != "word":
            raise ODataError(f"Expected a property name, found '{value}'.")
        operator = take()[1]
        if operator not in _COMPARISONS:
            raise ODataError(f"Unsupported operator '{operator}'.")
        return Comparison(value, operator, literal(*take()))

    def conjunction():
        parts = [primary()]
        while peek() == ("word", "and"):
            take()
            parts.append(primary())
        return parts[0] if len(parts) == 1 else Junction("and", tuple(parts))

    def disjunction():
        parts = [conjunction()]
        while peek() == ("word", "or"):
            take()
            parts.append(conjunction())
        return parts[0] if len(parts) == 1 else Junction("or", tuple(parts))

    expression = disjunction()
    if position != len(tokens):
        raise ODataError(f"Unexpected '{tokens[position][1]}' in $filter.")
    return expression


def _comparable(value: object, like: object) -> object:
    """The row's value converted to the literal's type, so that they can be compared."""
    if value is None or like is None:
        return value
    if isinstance(like, dt.datetime):
        return parse_datetime(value) if isinstance(value, str) else value
    if isinstance(like, dt.date):
        return dt.date.fromisoformat(value[:10]) if isinstance(value, str) else value
    if isinstance(like, Decimal):
        return Decimal(str(value)) if not isinstance(value, str) else Decimal(value)
    if isinstance(like, str) and isinstance(value, str):
        return value.lower() if re.fullmatch(r"[0-9a-fA-F-]{36}", like) else value
    return value


def matches(expression, row: dict) -> bool:
    """Evaluate a parsed `$filter` against one row."""
    if expression is None:
        return True
    if isinstance(expression, Junction):
        results = (matches(part, row) for part in expression.parts)
        return all(results) if expression.operator == "and" else any(results)
    if isinstance(expression, Negation):
        return not matches(expression.part, row)
    if expression.field not in row:
        raise ODataError(f"Could not find a property named '{expression.field}'.")
    like = expression.literal.value
    try:
        value = _comparable(row[expression.field], like)
    except (ValueError, ArithmeticError):
        return False
    if expression.operator == "eq":
        return value == like
    if expression.operator == "ne":
        return value != like
    if value is None or like is None:
        return False
    return {
        "gt": value > like,
        "ge": value >= like,
        "lt": value < like,
        "le": value <= like,
    }[expression.operator]


def bounds(expression, field_name: str) -> tuple[object | None, object | None]:
    """Lower and upper bounds the filter puts on one field (through top-level `and` only)."""
    lower = upper = None
    parts = (
        expression.parts
        if isinstance(expression, Junction) and (expression.operator == "and")
        else (expression,)
    )
    for part in parts:
        if isinstance(part, Comparison) and part.field == field_name:
            value = part.literal.value
            if part.operator in ("ge", "gt", "eq"):
                lower = value
            if part.operator in ("lt", "le", "eq"):
                upper = value
    return lower, upper


def key_values(expression, field_name: str) -> set[str]:
    """Values a filter of `field eq 'x' or (... and field eq 'y')` asks for."""
    if isinstance(expression, Comparison):
        if expression.field == field_name and expression.operator == "eq":
            return {str(expression.literal.value)}
        return set()
    if isinstance(expression, Junction):
        found: set[str] = set()
        for part in expression.parts:
            found |= key_values(part, field_name)
        return found
    return set()


# --- $select / $expand ---------------------------------------------------------------------


def split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for character in text:
        if character == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(character, 0)
        current += character
    if current:
        parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def parse_expand(text: str) -> dict[str, dict]:
    """`a($expand=b;$select=x),c` -> {"a": {"$expand": "b", "$select": "x"}, "c": {}}."""
    expanded = {}
    for part in split_top_level(text):
        name, _, options = part.partition("(")
        nested = {}
        for option in options.rstrip(")").split(";") if options else []:
            key, _, value = option.partition("=")
            nested[key.strip()] = value.strip()
        expanded[name.strip()] = nested
    return expanded


def project(row: dict, select: str | None) -> dict:
    if not select:
        return row
    wanted = {name.strip() for name in select.split(",")}
    return {key: value for key, value in row.items() if key in wanted or key.startswith("@")}


# --- Tokens issued by the emulated Entra ID -----------------------------------------------


def entra_error(status: int, error: str, code: int, description: str) -> Response:
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {description}",
        "error_codes": [code],
        "timestamp": dt.datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }
    return Response(json.dumps(body), status=status, mimetype="application/json")


def entra_sign_in(
    request: Request, path: str, credentials: dict[str, str], tokens: TokenStore, scope: str
) -> Response | None:
    """The answer of the emulated Entra ID when `path` is its token endpoint, else None."""
    if path == f"{credentials['tenant_id']}/oauth2/v2.0/token" and request.method == "POST":
        return entra_token_response(request, credentials, tokens, scope)
    if path.endswith("oauth2/v2.0/token"):
        return entra_error(400, "invalid_request", 90002, "Tenant not found.")
    return None


def entra_token_response(
    request: Request, credentials: dict[str, str], tokens: TokenStore, expected_scope: str
) -> Response:
    """Answer an Entra ID v2.0 client-credentials token request as login.microsoftonline.com."""
    form = request.form
    if form.get("grant_type") != "client_credentials":
        return entra_error(
            400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
        )
    if form.get("client_id") != credentials["client_id"]:
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            "Application with identifier "
            f"'{form.get('client_id')}' was not found in the directory.",
        )
    if not secrets.compare_digest(
        form.get("client_secret", "").encode(), credentials["client_secret"].encode()
    ):
        return entra_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. "
            "Ensure the secret being sent in the request is the client secret "
            "value, not the client secret ID.",
        )
    if form.get("scope") != expected_scope:
        return entra_error(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {form.get('scope')} is not valid.",
        )
    body = {
        "token_type": "Bearer",
        "expires_in": int(tokens.lifetime_seconds),
        "ext_expires_in": int(tokens.lifetime_seconds),
        "access_token": tokens.issue(),
    }
    return Response(json.dumps(body), mimetype="application/json")


# --- Paging over a sorted result ------------------------------------------------------------


def encode_skiptoken(key: tuple) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_skiptoken(token: str) -> tuple:
    padded = token + "=" * (-len(token) % 4)
    try:
        return tuple(json.loads(base64.urlsafe_b64decode(padded)))
    except (ValueError, TypeError):
        raise ODataError("The $skiptoken is not valid.") from None


def page_size(request: Request, default: int) -> int:
    match = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("Prefer", ""))
    return max(1, int(match.group(1))) if match else default


def paged_response(
    request: Request,
    entity_set: str,
    rows: list[dict],
    sort_key: Callable[[dict], tuple],
    default_page_size: int,
    shape: Callable[[dict], dict],
) -> Response:
    """One server-driven page of `rows` (already filtered), with a key-set nextLink."""
    size = page_size(request, default_page_size)
    rows = sorted(rows, key=sort_key)
    after = request.args.get("$skiptoken")
    if after:
        last = decode_skiptoken(after)
        rows = [row for row in rows if tuple(sort_key(row)) > last]
    page, more = rows[:size], len(rows) > size
    base = request.host_url.rstrip("/") + request.script_root + request.path
    body: dict = {"@odata.context": f"{base.split(entity_set)[0]}$metadata#{entity_set}"}
    body["value"] = [shape(row) for row in page]
    if more:
        arguments = [(k, v) for k, v in request.args.items(multi=True) if k != "$skiptoken"]
        arguments.append(("$skiptoken", encode_skiptoken(tuple(sort_key(page[-1])))))
        body["@odata.nextLink"] = f"{base}?{urlencode(arguments)}"
    headers = {}
    if "odata.maxpagesize" in request.headers.get("Prefer", ""):
        headers["Preference-Applied"] = f"odata.maxpagesize={size}"
    return json_response(body, headers=headers)


def etag(*parts: object) -> str:
    digest = uuid.uuid5(uuid.NAMESPACE_URL, "|".join(map(str, parts))).hex[:16]
    return 'W/"' + base64.b64encode(f"1,{int(digest, 16) % 10**11}".encode()).decode() + '"'


def stable_guid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, "|".join(map(str, parts))))


# --- Which company records a query needs -----------------------------------------------------


def _as_date(value: object) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).date()
    if isinstance(value, dt.date):
        return value
    return None


def candidate_records(
    company: SandboxCompany,
    kind: RecordKind,
    expression,
    date_field: str,
    modified_field: str | None,
) -> list:
    """Company records a filter can match, without generating the whole history."""
    lower, upper = bounds(expression, date_field) if expression is not None else (None, None)
    start, end = _as_date(lower), _as_date(upper)
    if start is not None or end is not None:
        first = start or company.start
        last = (end or company.end) + dt.timedelta(days=1)
        return company.records_between(kind, first, last)
    if modified_field is not None and expression is not None:
        since, _ = bounds(expression, modified_field)
        if isinstance(since, dt.datetime):
            return company.changed_since(kind, since)
    return company.records_between(kind, company.start, company.end + dt.timedelta(days=1))


def bad_lines_between(company: SandboxCompany, start: dt.date, end: dt.date) -> list[dict]:
    lines, day = [], start
    while day < end:
        lines.extend(company.bad_spend_lines(day))
        day += dt.timedelta(days=1)
    return lines


def group_documents(records: Iterable[SpendRecord]) -> dict[str, list[SpendRecord]]:
    documents: dict[str, list[SpendRecord]] = {}
    for record in records:
        documents.setdefault(record.document_id, []).append(record)
    return documents


# --- The F&O dialect -----------------------------------------------------------------------


def _throttled(fault: Fault) -> Response:
    return Response(b"", status=429, headers={"Retry-After": str(int(fault.retry_after))})


def fo_date(day: dt.date | None) -> str:
    return f"{day.isoformat()}T12:00:00Z" if day else BLANK_DATE


def fo_datetime(moment: dt.datetime | None) -> str:
    if moment is None:
        return BLANK_DATE
    # F&O stores utcdatetime values to the second.
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class FinanceEmulator:
    """The WSGI application of one emulated F&O environment."""

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
        # HeaderReference -> invoice date of headers served, so line queries find their day.
        # Limitation: a line query for headers this emulator never listed finds no lines.
        self._header_days: dict[str, dt.date] = {}
        self._lock = threading.Lock()
        self.entity_sets: dict[str, Callable[[Request], Response]] = {
            "VendorInvoiceHeaders": self._invoice_headers,
            "VendorInvoiceLines": self._invoice_lines,
            "PurchaseOrderHeadersV2": self._purchase_orders,
            "VendorsV2": self._vendors,
            "ReleasedProductsV2": self._products,
            "WarehousesOnHandV2": self._on_hand,
            ONHAND_SNAPSHOT_ENTITY: self._on_hand_snapshots,
        }

    def __call__(self, environ, start_response):
        request = Request(environ)
        return self.dispatch(request)(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path.strip("/")
        # F&O's scope is the environment's own URL.
        scope = request.host_url.rstrip("/") + request.script_root + "/.default"
        signed_in = entra_sign_in(request, path, self.credentials, self.tokens, scope)
        if signed_in is not None:
            return signed_in
        fault = self.faults.take()
        if fault is not None and fault.kind is FaultKind.EXPIRE_TOKEN:
            self.tokens.revoke_all()
        if not self.tokens.valid(bearer(request)):
            return Response(b"", status=401)
        forced = fault_response(fault, throttled=_throttled)
        if forced is not None:
            return forced
        if not path.startswith("data/") or path[5:] not in self.entity_sets:
            return json_response(
                {
                    "error": {
                        "code": "",
                        "message": "No HTTP resource was found "
                        f"that matches the request URI '{request.url}'.",
                    }
                },
                status=404,
            )
        try:
            return self.entity_sets[path[5:]](request)
        except ODataError as error:
            return json_response({"error": {"code": "", "message": str(error)}}, status=400)

    # Entity sets

    def _filter(self, request: Request):
        text = request.args.get("$filter")
        return parse_filter(text) if text else None

    def _legal_entity_rows(self, request: Request, rows: list[dict]) -> list[dict]:
        if request.args.get("cross-company", "").lower() == "true":
            return rows
        return [row for row in rows if row.get("dataAreaId") == LEGAL_ENTITY]

    def _invoice_headers(self, request: Request) -> Response:
        expression = self._filter(request)
        spend = candidate_records(
            self.company, RecordKind.SPEND, expression, "InvoiceDate", "ModifiedDateTime"
        )
        headers = [self._invoice_header(lines) for lines in group_documents(spend).values()]
        headers.extend(self._bad_headers(expression))
        rows = [
            row for row in self._legal_entity_rows(request, headers) if matches(expression, row)
        ]
        with self._lock:
            for row in rows:
                self._header_days[row["HeaderReference"]] = dt.date.fromisoformat(
                    row["InvoiceDate"][:10]
                )
        return paged_response(
            request,
            "VendorInvoiceHeaders",
            rows,
            lambda row: (row["dataAreaId"], row["HeaderReference"]),
            DEFAULT_PAGE_SIZE,
            lambda row: project(row, request.args.get("$select")),
        )

    def _invoice_lines(self, request: Request) -> Response:
        expression = self._filter(request)
        references = key_values(expression, "HeaderReference") if expression else set()
        with self._lock:
            days = {self._header_days[ref] for ref in references if ref in self._header_days}
        lines: list[dict] = []
        for day in sorted(days):
            for document in group_documents(self.company.records(RecordKind.SPEND, day)).values():
                lines.extend(self._invoice_line(record) for record in document)
            lines.extend(self._bad_line(bad) for bad in self.company.bad_spend_lines(day))
        rows = [row for row in self._legal_entity_rows(request, lines) if matches(expression, row)]
        return paged_response(
            request,
            "VendorInvoiceLines",
            rows,
            lambda row: (row["dataAreaId"], row["HeaderReference"], row["LineNumber"]),
            DEFAULT_PAGE_SIZE,
            lambda row: project(row, request.args.get("$select")),
        )

    def _purchase_orders(self, request: Request) -> Response:
        expression = self._filter(request)
        orders = candidate_records(
            self.company,
            RecordKind.PURCHASE_ORDER,
            expression,
            "AccountingDate",
            "ModifiedDateTime",
        )
        days = {order.order_date for order in orders}
        lines_by_order: dict[str, list[PurchaseOrderLine]] = {}
        for day in sorted(days):
            for line in self.company.records(RecordKind.PURCHASE_ORDER_LINE, day):
                lines_by_order.setdefault(line.purchase_order_id, []).append(line)
        rows = [
            self._purchase_order(order, lines_by_order.get(order.purchase_order_id, []))
            for order in orders
        ]
        rows = [row for row in self._legal_entity_rows(request, rows) if matches(expression, row)]
        expand = parse_expand(request.args.get("$expand", ""))
        unknown = set(expand) - {"PurchaseOrderLinesV2"}
        if unknown:
            raise ODataError(f"Could not find a property named '{sorted(unknown)[0]}'.")

        def shape(row: dict) -> dict:
            shaped = project(
                {k: v for k, v in row.items() if k != "_lines"}, request.args.get("$select")
            )
            if "PurchaseOrderLinesV2" in expand:
                shaped["PurchaseOrderLinesV2"] = [
                    project(line, expand["PurchaseOrderLinesV2"].get("$select"))
                    for line in row["_lines"]
                ]
            return shaped

        return paged_response(
            request,
            "PurchaseOrderHeadersV2",
            rows,
            lambda row: (row["dataAreaId"], row["PurchaseOrderNumber"]),
            DEFAULT_PAGE_SIZE,
            shape,
        )

    def _vendors(self, request: Request) -> Response:
        expression = self._filter(request)
        rows = [self._vendor(vendor) for vendor in self.company.vendors()]
        rows = [row for row in self._legal_entity_rows(request, rows) if matches(expression, row)]
        return paged_response(
            request,
            "VendorsV2",
            rows,
            lambda row: (row["dataAreaId"], row["VendorAccountNumber"]),
            DEFAULT_PAGE_SIZE,
            lambda row: project(row, request.args.get("$select")),
        )

    def _products(self, request: Request) -> Response:
        expression = self._filter(request)
        rows = [self._product(material) for material in self.company.materials()]
        rows = [row for row in self._legal_entity_rows(request, rows) if matches(expression, row)]
        return paged_response(
            request,
            "ReleasedProductsV2",
            rows,
            lambda row: (row["dataAreaId"], row["ItemNumber"]),
            DEFAULT_PAGE_SIZE,
            lambda row: project(row, request.args.get("$select")),
        )

    def _on_hand(self, request: Request) -> Response:
        expression = self._filter(request)
        latest = self.company.business_days()[-1]
        rows = [
            self._on_hand_row(snapshot)
            for snapshot in self.company.records(RecordKind.INVENTORY, latest)
        ]
        rows = [row for row in self._legal_entity_rows(request, rows) if matches(expression, row)]
        return paged_response(
            request,
            "WarehousesOnHandV2",
            rows,
            lambda row: (
                row["dataAreaId"],
                row["ItemNumber"],
                row["InventorySiteId"],
                row["InventoryWarehouseId"],
            ),
            DEFAULT_PAGE_SIZE,
            lambda row: project(row, request.args.get("$select")),
        )

    def _on_hand_snapshots(self, request: Request) -> Response:
        expression = self._filter(request)
        snapshots = candidate_records(
            self.company, RecordKind.INVENTORY, expression, "SnapshotDate", None
        )
        rows = [self._snapshot_row(snapshot) for snapshot in snapshots]
        rows = [row for row in self._legal_entity_rows(request, rows) if matches(expression, row)]
        return paged_response(
            request,
            ONHAND_SNAPSHOT_ENTITY,
            rows,
            lambda row: (
                row["dataAreaId"],
                row["SnapshotDate"],
                row["ItemNumber"],
                row["InventoryWarehouseId"],
            ),
            DEFAULT_PAGE_SIZE,
            lambda row: project(row, request.args.get("$select")),
        )

    # Rendering company records as F&O rows

    def _on_hand_row(self, snapshot: InventorySnapshot) -> dict:
        zero = Decimal("0")
        return {
            "@odata.etag": etag(snapshot.material_id, snapshot.location),
            "dataAreaId": LEGAL_ENTITY,
            "ItemNumber": snapshot.material_id,
            "ProductName": "",
            "ProductColorId": "",
            "ProductConfigurationId": "",
            "ProductSizeId": "",
            "ProductStyleId": "",
            "ProductVersionId": "",
            "InventorySiteId": INVENTORY_SITE,
            "InventoryWarehouseId": snapshot.location,
            "OnHandQuantity": snapshot.quantity,
            "ReservedOnHandQuantity": zero,
            "AvailableOnHandQuantity": snapshot.quantity,
            "OrderedQuantity": zero,
            "ReservedOrderedQuantity": zero,
            "AvailableOrderedQuantity": zero,
            "OnOrderQuantity": zero,
            "TotalAvailableQuantity": snapshot.quantity,
            "AreWarehouseManagementProcessesUsed": "No",
        }

    def _snapshot_row(self, snapshot: InventorySnapshot) -> dict:
        return {
            "@odata.etag": etag(snapshot.source_id, snapshot.updated_at),
            "dataAreaId": LEGAL_ENTITY,
            "SnapshotDate": fo_date(snapshot.snapshot_date),
            "ItemNumber": snapshot.material_id,
            "InventorySiteId": INVENTORY_SITE,
            "InventoryWarehouseId": snapshot.location,
            "OnHandQuantity": snapshot.quantity,
            "InventoryUnitSymbol": snapshot.unit or "",
            "UnitCost": snapshot.unit_cost,
            "OnHandValue": snapshot.value,
            "CurrencyCode": snapshot.currency or "",
        }

    def _invoice_header(self, lines: list[SpendRecord]) -> dict:
        first = lines[0]
        reference = f"APINV-{first.document_id}"
        modified = max(line.updated_at for line in lines if line.updated_at is not None)
        card = first.document_type is SpendDocumentType.CARD_CHARGE
        return {
            "@odata.etag": etag(reference, modified),
            "dataAreaId": LEGAL_ENTITY,
            "HeaderReference": reference,
            "InvoiceNumber": first.document_id,
            "InvoiceAccount": first.vendor_id or "",
            "VendorAccount": first.vendor_id or "",
            "InvoiceDate": fo_date(first.transaction_date),
            "Date": fo_date(first.transaction_date),
            "Currency": first.currency,
            "PurchaseOrderNumber": first.purchase_order_id or "",
            "MethodOfPayment": CARD_PAYMENT_METHOD if card else "CHECK",
            "InvoiceDescription": "",
            "IsOnHold": "No",
            "ModifiedDateTime": fo_datetime(modified),
        }

    def _invoice_line(self, record: SpendRecord) -> dict:
        return {
            "@odata.etag": etag(record.source_id, record.updated_at),
            "dataAreaId": LEGAL_ENTITY,
            "HeaderReference": f"APINV-{record.document_id}",
            "LineNumber": record.line_number,
            "InvoiceLineNumber": record.line_number,
            "ItemNumber": record.material_id or "",
            "ItemName": (record.description or "") if record.material_id else "",
            "LineDescription": record.description or "",
            "ProcurementCategory": CAPEX_CATEGORY if record.is_capex else "",
            "ReceiveNow": record.quantity if record.quantity is not None else Decimal("0"),
            "Unit": record.unit or "",
            "UnitPrice": (
                (record.amount / record.quantity).quantize(Decimal("0.01"))
                if record.quantity
                else record.amount
            ),
            "NetAmount": record.amount,
            "Currency": record.currency,
            "MainAccountDisplayValue": record.gl_account or "",
            "PurchaseOrder": record.purchase_order_id or "",
            "InvoiceAccount": record.vendor_id or "",
            "VendorAccount": record.vendor_id or "",
        }

    def _bad_headers(self, expression) -> list[dict]:
        if expression is None:
            return []
        lower, upper = bounds(expression, "InvoiceDate")
        start, end = _as_date(lower), _as_date(upper)
        if start is None or end is None:
            return []
        headers = []
        for bad in bad_lines_between(self.company, start, end + dt.timedelta(days=1)):
            day = dt.date.fromisoformat(bad["transaction_date"])
            modified = parse_datetime(bad["updated_at"])
            headers.append(
                {
                    "@odata.etag": etag(bad["document_id"], modified),
                    "dataAreaId": LEGAL_ENTITY,
                    "HeaderReference": f"APINV-{bad['document_id']}",
                    "InvoiceNumber": bad["document_id"],
                    "InvoiceAccount": bad["vendor_id"] or "",
                    "VendorAccount": bad["vendor_id"] or "",
                    "InvoiceDate": fo_date(day),
                    "Date": fo_date(day),
                    "Currency": bad["currency"],
                    "PurchaseOrderNumber": "",
                    "MethodOfPayment": "CHECK",
                    "InvoiceDescription": "",
                    "IsOnHold": "No",
                    "ModifiedDateTime": fo_datetime(modified),
                }
            )
        return headers

    def _bad_line(self, bad: dict) -> dict:
        return {
            "@odata.etag": etag(bad["source_id"]),
            "dataAreaId": LEGAL_ENTITY,
            "HeaderReference": f"APINV-{bad['document_id']}",
            "LineNumber": bad["line_number"],
            "InvoiceLineNumber": bad["line_number"],
            "ItemNumber": bad["material_id"] or "",
            "ItemName": "",
            "LineDescription": bad["description"],
            "ProcurementCategory": "",
            "ReceiveNow": Decimal("0"),
            "Unit": "",
            "UnitPrice": Decimal("0"),
            # Rendered verbatim: a value the entity's Edm.Decimal cannot hold.
            "NetAmount": bad["amount"],
            "Currency": bad["currency"],
            "MainAccountDisplayValue": bad["gl_account"] or "",
            "PurchaseOrder": "",
            "InvoiceAccount": bad["vendor_id"] or "",
            "VendorAccount": bad["vendor_id"] or "",
        }

    def _purchase_order(self, order: PurchaseOrder, lines: list[PurchaseOrderLine]) -> dict:
        modified = max(
            [order.updated_at] + [line.updated_at for line in lines if line.updated_at is not None]
        )
        status = (
            "Canceled"
            if order.status is RecordStatus.VOIDED
            else PURCHASE_STATUS.get(order.order_status, order.order_status)
        )
        return {
            "@odata.etag": etag(order.purchase_order_id, modified),
            "dataAreaId": LEGAL_ENTITY,
            "PurchaseOrderNumber": order.purchase_order_id,
            "OrderVendorAccountNumber": order.vendor_id or "",
            "InvoiceVendorAccountNumber": order.vendor_id or "",
            "CurrencyCode": order.currency,
            "AccountingDate": fo_date(order.order_date),
            "PurchaseOrderStatus": status,
            "DocumentApprovalStatus": "Approved",
            "ModifiedDateTime": fo_datetime(modified),
            "_lines": [self._purchase_order_line(line) for line in lines],
        }

    def _purchase_order_line(self, line: PurchaseOrderLine) -> dict:
        return {
            "@odata.etag": etag(line.source_id, line.updated_at),
            "dataAreaId": LEGAL_ENTITY,
            "PurchaseOrderNumber": line.purchase_order_id,
            "LineNumber": line.line_number,
            "ItemNumber": line.material_id or "",
            "LineDescription": line.description or "",
            "OrderedPurchaseQuantity": line.quantity,
            "PurchaseUnitSymbol": line.unit or "",
            "PurchasePrice": line.unit_price,
            "PurchasePriceQuantity": Decimal(1),
            "LineAmount": line.amount,
            "CurrencyCode": line.currency,
            "MainAccountIdDisplayValue": line.gl_account or "",
            "RequestedDeliveryDate": fo_date(line.delivery_date),
        }

    def _vendor(self, vendor: Vendor) -> dict:
        return {
            "@odata.etag": etag(vendor.vendor_id, vendor.updated_at),
            "dataAreaId": LEGAL_ENTITY,
            "VendorAccountNumber": vendor.vendor_id,
            "VendorOrganizationName": vendor.name,
            "VendorGroupId": "10",
            "AddressCountryRegionISOCode": vendor.country or "",
            "CurrencyCode": vendor.currency or "",
            "TaxExemptNumber": vendor.tax_id or "",
            "LineOfBusinessId": vendor.industry_code or "",
            "OnHoldStatus": "All" if vendor.status is not RecordStatus.ACTIVE else "No",
        }

    def _product(self, material: Material) -> dict:
        return {
            "@odata.etag": etag(material.material_id, material.updated_at),
            "dataAreaId": LEGAL_ENTITY,
            "ItemNumber": material.material_id,
            "ProductNumber": material.material_id,
            "ProductName": material.description,
            "SearchName": material.description[:20],
            "ProductGroupId": material.material_group or "",
            "InventoryUnitSymbol": material.base_unit or "",
            "IntrastatCommodityCode": material.commodity_code or "",
            "ProductType": "Item",
        }


def create_app(
    company: SandboxCompany,
    faults: FaultPlan,
    credentials: dict[str, str],
    *,
    token_lifetime_seconds: float = TOKEN_LIFETIME_SECONDS,
) -> FinanceEmulator:
    """The WSGI app of a sandbox F&O environment serving `company`."""
    return FinanceEmulator(company, faults, credentials, token_lifetime_seconds)
