"""Sandbox emulator of the Sage Intacct XML Web Services gateway (DTD 3.0).

One endpoint, `POST /ia/xml/xmlgw.phtml`, takes `<request>` documents as Intacct does:

* `<control>` carries the Web Services sender id and password; a wrong pair fails the whole
  request (control status `failure`, error XL03000006).
* `<operation><authentication>` holds either a `<login>` (user, company, password) or a
  `<sessionid>`; `getAPISession` answers a session id and the endpoint to use with it. A
  wrong login or a session that is no longer valid fails the operation's authentication.
* `readByQuery` (object, fields, SQL-like query, pagesize up to 1000, docparid) answers
  `<data listtype count totalcount numremaining resultId>`; `readMore` with the `resultId`
  pages on through the same result set, which is fixed when the query runs.
* Objects: VENDOR, ITEM, GLACCOUNT, APBILL/APBILLITEM (supplier invoices),
  APADJUSTMENT/APADJUSTMENTITEM (supplier credit memos, negative), CCTRANSACTION/
  CCTRANSACTIONENTRY (card charges), PODOCUMENT/PODOCUMENTENTRY (docparid "Purchase Order")
  and AUDITHISTORY (deletions as ACCESSMODE "Delete").
* On hand: ITEMWAREHOUSEINFO (item warehouse details) gives the on-hand of now, which in this
  company is its latest business day; the company's Platform Services custom object of daily
  snapshots (`SNAPSHOT_OBJECT`, named to the source in `SANDBOX_OPTIONS`) gives every
  business day, filtered on SNAPSHOT_DATE.
* Dates are MM/DD/YYYY, timestamps MM/DD/YYYY HH:MM:SS (UTC in this company).
* Throttling is answered inside an HTTP 200: control status `failure` with error GW-0010 and
  a Retry-After header.

The sandbox company keeps its quantities on AP lines, the NAICS code of its items and the
industry of its vendors in fields named by `SANDBOX_OPTIONS` (custom fields and vendor type),
as an Intacct company would configure them.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qs

from werkzeug.wrappers import Request, Response

from erp_connector_dagster.records import (
    InventorySnapshot,
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
    spend_documents,
)
from erp_connector_dagster.sandbox.faults import (
    Fault,
    FaultPlan,
    fault_response,
)

GATEWAY_PATH = "/ia/xml/xmlgw.phtml"
SANDBOX_CREDENTIALS: dict[str, str] = {
    "sender_id": "erp_connector_sandbox",
    "sender_password": "intacct-sender-secret-4d2",
    "company_id": "SANDBOX-MFG",
    "user_id": "ws_erp_connector",
    "user_password": "intacct-user-secret-9k7",
}
SECRET_FIELDS: frozenset[str] = frozenset({"sender_password", "user_password"})
# The company's custom object of daily on-hand snapshots (its integration name).
SNAPSHOT_OBJECT = "glc_onhand_snapshot"
SANDBOX_OPTIONS: dict[str, object] = {
    "line_quantity_field": "SPEND_QUANTITY",
    "item_commodity_field": "NAICS_CODE",
    "vendor_industry_field": "VENDTYPE",
    "onhand_snapshot_object": SNAPSHOT_OBJECT,
}
SESSION_SECONDS = 3600
MAX_PAGE_SIZE = 1000
PURCHASE_ORDER = "Purchase Order"

# header object, line object, the documents they hold
SPEND_OBJECTS: dict[str, tuple[str, SpendDocumentType]] = {
    "APBILL": ("APBILLITEM", SpendDocumentType.INVOICE),
    "APADJUSTMENT": ("APADJUSTMENTITEM", SpendDocumentType.CREDIT_NOTE),
    "CCTRANSACTION": ("CCTRANSACTIONENTRY", SpendDocumentType.CARD_CHARGE),
}
LINE_OBJECTS = {line: header for header, (line, _) in SPEND_OBJECTS.items()}
PO_STATES = {"open": "Pending", "received": "Converted", "closed": "Closed"}
UNIT_GROUPS = {
    "KG": "Weight",
    "TO": "Weight",
    "L": "Volume",
    "H": "Time",
    "KWH": "Energy",
    "TKM": "Transport",
    "EA": "Count",
}


def intacct_date(day: dt.date | None) -> str:
    return day.strftime("%m/%d/%Y") if day else ""


def intacct_timestamp(moment: dt.datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(dt.timezone.utc).strftime("%m/%d/%Y %H:%M:%S")


def _parse_intacct_time(text: str) -> dt.datetime | None:
    for pattern in ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y"):
        try:
            return dt.datetime.strptime(text.strip(), pattern).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    return None


def _digits(text: str) -> int:
    return int("".join(ch for ch in text if ch.isdigit()) or "0")


def _day_of_document(company: SandboxCompany, document_id: str) -> dt.date:
    # Company document ids embed the day's ordinal after a two-digit prefix.
    return company.start + dt.timedelta(days=int(document_id[2:7]))


# The readByQuery query language


class QueryError(ValueError):
    """A query Intacct would refuse."""


_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:\\.|[^'\\])*')|(?P<number>-?\d+(?:\.\d+)?)|"
    r"(?P<op>>=|<=|<>|!=|=|<|>|\(|\)|,)|(?P<word>[A-Za-z_][\w.]*))"
)


def _tokens(query: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(query):
        if not query[position:].strip():
            break
        match = _TOKEN.match(query, position)
        if not match:
            raise QueryError(f"Invalid query near {query[position : position + 20]!r}")
        kind = match.lastgroup or ""
        text = match[kind]
        if kind == "word" and text.upper() in ("AND", "OR", "NOT", "IN", "LIKE", "IS", "NULL"):
            kind, text = "keyword", text.upper()
        tokens.append((kind, text))
        position = match.end()
    return tokens


@dataclass
class Comparison:
    field: str
    operator: str
    value: object  # str, Decimal, list of those, or None


@dataclass
class Junction:
    operator: str  # AND or OR
    terms: list = field(default_factory=list)


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (expected is not None and token[1] != expected):
            raise QueryError(f"Invalid query: expected {expected or 'more'}")
        self.position += 1
        return token

    def expression(self):
        terms = [self.conjunction()]
        while self.peek() == ("keyword", "OR"):
            self.take()
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else Junction("OR", terms)

    def conjunction(self):
        terms = [self.term()]
        while self.peek() == ("keyword", "AND"):
            self.take()
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else Junction("AND", terms)

    def literal(self) -> object:
        kind, text = self.take()
        if kind == "string":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if kind == "number":
            return Decimal(text)
        raise QueryError(f"Invalid query: {text!r} is not a value")

    def term(self):
        if self.peek() == ("op", "("):
            self.take()
            inner = self.expression()
            self.take(")")
            return inner
        kind, name = self.take()
        if kind != "word":
            raise QueryError(f"Invalid query: {name!r} is not a field")
        negated = False
        if self.peek() == ("keyword", "NOT"):
            self.take()
            negated = True
        token = self.peek()
        if token == ("keyword", "IN"):
            self.take()
            self.take("(")
            values = [self.literal()]
            while self.peek() == ("op", ","):
                self.take()
                values.append(self.literal())
            self.take(")")
            return Comparison(name, "NOT IN" if negated else "IN", values)
        if token == ("keyword", "LIKE"):
            self.take()
            return Comparison(name, "NOT LIKE" if negated else "LIKE", self.literal())
        if token == ("keyword", "IS"):
            self.take()
            is_not = self.peek() == ("keyword", "NOT")
            if is_not:
                self.take()
            self.take("NULL")
            return Comparison(name, "IS NOT NULL" if is_not else "IS NULL", None)
        operator = self.take()[1]
        if operator not in ("=", "<>", "!=", "<", ">", "<=", ">="):
            raise QueryError(f"Invalid query: unknown operator {operator!r}")
        return Comparison(name, operator, self.literal())


def parse_query(query: str):
    """The readByQuery condition as a tree of comparisons (None for an empty query)."""
    tokens = _tokens(query or "")
    if not tokens:
        return None
    parser = _Parser(tokens)
    tree = parser.expression()
    if parser.peek() is not None:
        raise QueryError("Invalid query: unexpected text after the condition")
    return tree


def _typed(value: object, like: object) -> object:
    if isinstance(like, Decimal):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None
    if isinstance(like, str):
        moment = _parse_intacct_time(like) if re.match(r"\d\d/\d\d/\d{4}", like) else None
        if moment is not None:
            return _parse_intacct_time(str(value))
    return value


def _literal_typed(value: object) -> object:
    if isinstance(value, str) and re.match(r"\d\d/\d\d/\d{4}", value):
        return _parse_intacct_time(value) or value
    return value


def evaluate(tree, row: dict[str, str]) -> bool:
    if tree is None:
        return True
    if isinstance(tree, Junction):
        results = (evaluate(term, row) for term in tree.terms)
        return all(results) if tree.operator == "AND" else any(results)
    raw = row.get(tree.field.upper(), "")
    if tree.operator in ("IS NULL", "IS NOT NULL"):
        return (raw == "") == (tree.operator == "IS NULL")
    if tree.operator in ("IN", "NOT IN"):
        found = any(_typed(raw, item) == _literal_typed(item) for item in tree.value)
        return found == (tree.operator == "IN")
    if tree.operator in ("LIKE", "NOT LIKE"):
        pattern = re.escape(str(tree.value)).replace("%", ".*").replace("_", ".")
        found = re.fullmatch(pattern, raw, flags=re.IGNORECASE) is not None
        return found == (tree.operator == "LIKE")
    actual, expected = _typed(raw, tree.value), _literal_typed(tree.value)
    if actual is None or actual == "":
        return tree.operator in ("<>", "!=")
    try:
        return {
            "=": actual == expected,
            "<>": actual != expected,
            "!=": actual != expected,
            "<": actual < expected,
            ">": actual > expected,
            "<=": actual <= expected,
            ">=": actual >= expected,
        }[tree.operator]
    except TypeError:
        return False


@dataclass
class _Bounds:
    """What the top-level ANDed conditions say, to pick candidate rows before filtering."""

    first_day: dt.date | None = None
    last_day: dt.date | None = None
    changed_since: dt.datetime | None = None
    parent_keys: list[int] | None = None


def _bounds(tree) -> _Bounds:
    bounds = _Bounds()
    terms = tree.terms if isinstance(tree, Junction) and tree.operator == "AND" else [tree]
    for term in terms:
        if not isinstance(term, Comparison):
            continue
        name = term.field.upper()
        if name in ("WHENCREATED", "SNAPSHOT_DATE") and isinstance(term.value, str):
            moment = _parse_intacct_time(term.value)
            if moment is None:
                continue
            if term.operator in (">=", ">", "="):
                bounds.first_day = moment.date()
            if term.operator in ("<", "<=", "="):
                bounds.last_day = moment.date() - dt.timedelta(
                    days=1 if term.operator == "<" else 0
                )
        elif name == "WHENMODIFIED" and term.operator in (">=", ">"):
            bounds.changed_since = _parse_intacct_time(str(term.value))
        elif name in ("RECORDKEY", "DOCHDRNO") and term.operator in ("IN", "="):
            values = term.value if isinstance(term.value, list) else [term.value]
            bounds.parent_keys = [_digits(str(value)) for value in values]
    return bounds


# Documents assembled from the company's lines


@dataclass
class _ResultSet:
    object_name: str
    rows: list[dict[str, str]]
    position: int
    page_size: int
    created: float


@dataclass
class _Session:
    user_id: str
    expires: float


class IntacctSandbox:
    """Renders the synthetic company as an Intacct company and serves the XML gateway."""

    def __init__(
        self, company: SandboxCompany, faults: FaultPlan, credentials: dict[str, str]
    ) -> None:
        self.company = company
        self.faults = faults
        self.credentials = credentials
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._result_sets: dict[str, _ResultSet] = {}
        self._document_types: dict[str, SpendDocumentType] = {}
        self._gl_titles: dict[str, str] = {}
        for _, words, gl_account, _ in INDUSTRIES:
            self._gl_titles.setdefault(gl_account, words)
        self._renderers: dict[str, Callable[[_Bounds, str | None], list[dict[str, str]]]] = {
            "VENDOR": lambda bounds, docparid: [self._vendor(v) for v in company.vendors()],
            "ITEM": lambda bounds, docparid: [self._item(m) for m in company.materials()],
            "GLACCOUNT": lambda bounds, docparid: self._gl_accounts(),
            "PODOCUMENT": self._purchase_order_headers,
            "PODOCUMENTENTRY": self._purchase_order_lines,
            "AUDITHISTORY": lambda bounds, docparid: self._audit_history(),
            "ITEMWAREHOUSEINFO": lambda bounds, docparid: self._item_warehouse_details(),
            SNAPSHOT_OBJECT.upper(): lambda bounds, docparid: self._on_hand_snapshots(bounds),
        }
        for header, (line, document_type) in SPEND_OBJECTS.items():
            self._renderers[header] = self._header_renderer(header, document_type)
            self._renderers[line] = self._line_renderer(header, document_type)

    # WSGI plumbing

    def __call__(self, environ, start_response):
        request = Request(environ)
        return self._dispatch(request)(environ, start_response)

    def _rate_limited(self, fault: Fault) -> Response:
        # Intacct reports its rate limit inside a successful HTTP answer.
        body = self._control_failure(
            "GW-0010", "API rate limit exceeded. Please retry the request later.", sender_id=""
        )
        return self._xml(body, headers={"Retry-After": str(fault.retry_after)})

    def _expire_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    def _dispatch(self, request: Request) -> Response:
        forced = fault_response(
            self.faults.take(), throttled=self._rate_limited, token_expired=self._expire_sessions
        )
        if forced is not None:
            return forced
        if request.path != GATEWAY_PATH or request.method != "POST":
            return Response("Not Found", status=404, mimetype="text/plain")
        payload = request.get_data(as_text=True)
        if payload.lstrip().startswith("xmlrequest="):
            payload = parse_qs(payload).get("xmlrequest", [""])[0]
        try:
            document = ET.fromstring(payload)
        except ET.ParseError:
            return self._xml(
                self._control_failure(
                    "XL03000001", "The request is not well-formed XML.", sender_id=""
                )
            )
        return self._xml(self._answer(document, request))

    @staticmethod
    def _xml(root: ET.Element, headers: dict[str, str] | None = None) -> Response:
        body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        return Response(
            body,
            status=200,
            headers=headers,
            content_type='text/xml; encoding="UTF-8";charset=UTF-8',
        )

    # Request handling

    def _answer(self, request_xml: ET.Element, request: Request) -> ET.Element:
        control = request_xml.find("control")
        sender_id = control.findtext("senderid", "") if control is not None else ""
        sender_password = control.findtext("password", "") if control is not None else ""
        if sender_id != self.credentials["sender_id"] or not secrets.compare_digest(
            sender_password, self.credentials["sender_password"]
        ):
            return self._control_failure(
                "XL03000006", "Incorrect Intacct XML Partner ID or password.", sender_id=sender_id
            )
        response = ET.Element("response")
        response.append(self._control(control, "success"))
        operation = ET.SubElement(response, "operation")
        user_id = self._authenticate(request_xml.find("operation/authentication"))
        authentication = ET.SubElement(operation, "authentication")
        if user_id is None:
            _text(authentication, "status", "failure")
            _text(authentication, "userid", "")
            _text(authentication, "companyid", self.credentials["company_id"])
            operation.append(_error_message("XL03000006", "Sign-in information is incorrect"))
            return response
        now = dt.datetime.now(dt.timezone.utc)
        for name, value in (
            ("status", "success"),
            ("userid", user_id),
            ("companyid", self.credentials["company_id"]),
            ("locationid", ""),
            ("sessiontimestamp", now.isoformat(timespec="seconds")),
            (
                "sessiontimeout",
                (now + dt.timedelta(seconds=SESSION_SECONDS)).isoformat(timespec="seconds"),
            ),
        ):
            _text(authentication, name, value)
        for function in request_xml.findall("operation/content/function"):
            operation.append(self._function(function, user_id, request))
        return response

    def _control(self, control: ET.Element | None, status: str) -> ET.Element:
        element = ET.Element("control")
        _text(element, "status", status)
        _text(element, "senderid", control.findtext("senderid", "") if control is not None else "")
        _text(
            element, "controlid", control.findtext("controlid", "") if control is not None else ""
        )
        _text(element, "uniqueid", "false")
        _text(element, "dtdversion", "3.0")
        return element

    def _control_failure(self, number: str, text: str, sender_id: str) -> ET.Element:
        response = ET.Element("response")
        control = ET.SubElement(response, "control")
        for name, value in (
            ("status", "failure"),
            ("senderid", sender_id),
            ("controlid", ""),
            ("uniqueid", "false"),
            ("dtdversion", "3.0"),
        ):
            _text(control, name, value)
        response.append(_error_message(number, text))
        return response

    def _authenticate(self, authentication: ET.Element | None) -> str | None:
        if authentication is None:
            return None
        session_id = authentication.findtext("sessionid")
        if session_id is not None:
            with self._lock:
                session = self._sessions.get(session_id)
            if session is None or session.expires < time.monotonic():
                return None
            return session.user_id
        login = authentication.find("login")
        if login is None:
            return None
        if (
            login.findtext("userid", "") != self.credentials["user_id"]
            or login.findtext("companyid", "") != self.credentials["company_id"]
            or not secrets.compare_digest(
                login.findtext("password", ""), self.credentials["user_password"]
            )
        ):
            return None
        return self.credentials["user_id"]

    def _function(self, function: ET.Element, user_id: str, request: Request) -> ET.Element:
        result = ET.Element("result")
        call = function[0] if len(function) else None
        name = call.tag if call is not None else ""
        try:
            if name == "getAPISession":
                data = self._new_session(user_id, request)
            elif name == "readByQuery":
                data = self._read_by_query(call)
            elif name == "readMore":
                data = self._read_more(call)
            else:
                raise QueryError(f"Unknown function {name}")
        except QueryError as error:
            _text(result, "status", "failure")
            _text(result, "function", name)
            _text(result, "controlid", function.get("controlid", ""))
            result.append(_error_message("DL02000001", str(error)))
            return result
        _text(result, "status", "success")
        _text(result, "function", name)
        _text(result, "controlid", function.get("controlid", ""))
        result.append(data)
        return result

    def _new_session(self, user_id: str, request: Request) -> ET.Element:
        session_id = secrets.token_urlsafe(36) + ".."
        with self._lock:
            self._sessions[session_id] = _Session(user_id, time.monotonic() + SESSION_SECONDS)
        data = ET.Element("data")
        api = ET.SubElement(data, "api")
        _text(api, "sessionid", session_id)
        endpoint = request.host_url.rstrip("/") + request.script_root + GATEWAY_PATH
        _text(api, "endpoint", endpoint)
        _text(api, "locationid", "")
        return data

    def _read_by_query(self, call: ET.Element) -> ET.Element:
        object_name = (call.findtext("object") or "").strip().upper()
        renderer = self._renderers.get(object_name)
        if renderer is None:
            raise QueryError(f"Object definition {object_name} not found")
        tree = parse_query(call.findtext("query") or "")
        docparid = (call.findtext("docparid") or "").strip() or None
        size = int(call.findtext("pagesize") or 100)
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise QueryError("pagesize must be between 1 and 1000")
        rows = [row for row in renderer(_bounds(tree), docparid) if evaluate(tree, row)]
        rows.sort(key=lambda row: _digits(row.get("RECORDNO", "0")))
        fields = [f.strip().upper() for f in (call.findtext("fields") or "*").split(",")]
        if fields != ["*"]:
            unknown = [name for name in fields if rows and name not in rows[0]]
            if unknown:
                raise QueryError(f"Invalid field {unknown[0]} for object {object_name}")
            rows = [{name: row.get(name, "") for name in fields} for row in rows]
        result_id = f"{uuid.uuid4().hex}-{object_name.lower()}"
        result_set = _ResultSet(object_name, rows, 0, size, time.monotonic())
        with self._lock:
            self._result_sets[result_id] = result_set
        return self._page(result_id, result_set)

    def _read_more(self, call: ET.Element) -> ET.Element:
        result_id = (call.findtext("resultId") or "").strip()
        with self._lock:
            result_set = self._result_sets.get(result_id)
        if result_set is None:
            raise QueryError("Invalid resultId or the result set has expired")
        return self._page(result_id, result_set)

    def _page(self, result_id: str, result_set: _ResultSet) -> ET.Element:
        start = result_set.position
        rows = result_set.rows[start : start + result_set.page_size]
        result_set.position = start + len(rows)
        remaining = len(result_set.rows) - result_set.position
        if remaining == 0:
            with self._lock:
                self._result_sets.pop(result_id, None)
        data = ET.Element(
            "data",
            {
                "listtype": result_set.object_name.lower(),
                "count": str(len(rows)),
                "totalcount": str(len(result_set.rows)),
                "numremaining": str(remaining),
                "resultId": result_id if remaining else "",
            },
        )
        for row in rows:
            element = ET.SubElement(data, result_set.object_name.lower())
            for name, value in row.items():
                _text(element, name, value)
        return data

    # Object rendering

    def _vendor(self, vendor: Vendor) -> dict[str, str]:
        return {
            "RECORDNO": str(_digits(vendor.vendor_id)),
            "VENDORID": vendor.vendor_id,
            "NAME": vendor.name,
            "STATUS": "active" if vendor.status.value == "active" else "inactive",
            "TAXID": vendor.tax_id or "",
            "CURRENCY": vendor.currency or "",
            "VENDTYPE": vendor.industry_code or "",
            "DISPLAYCONTACT.MAILADDRESS.COUNTRYCODE": vendor.country or "",
            "WHENCREATED": intacct_timestamp(vendor.updated_at),
            "WHENMODIFIED": intacct_timestamp(vendor.updated_at),
        }

    def _item(self, material: Material) -> dict[str, str]:
        gl_account = next(
            (gl for code, _, gl, _ in INDUSTRIES if code == material.commodity_code), "5900"
        )
        unit = material.base_unit or ""
        return {
            "RECORDNO": str(_digits(material.material_id)),
            "ITEMID": material.material_id,
            "NAME": material.description,
            "STATUS": "active" if material.status.value == "active" else "inactive",
            "ITEMTYPE": "Non-Inventory" if unit == "H" else "Inventory",
            "PRODUCTLINEID": material.material_group or "",
            "UOMGRP": UNIT_GROUPS.get(unit, "Count"),
            "BASEUOM": unit,
            "ITEMGLGROUP.EXPENSEACCOUNT.ACCTNO": gl_account,
            "NAICS_CODE": material.commodity_code or "",
            "WHENCREATED": intacct_timestamp(material.updated_at),
            "WHENMODIFIED": intacct_timestamp(material.updated_at),
        }

    def _item_warehouse_details(self) -> list[dict[str, str]]:
        latest = self.company.business_days()[-1]
        return [
            {
                "RECORDNO": str(position),
                "ITEMID": snapshot.material_id,
                "WAREHOUSEID": snapshot.location,
                "ONHAND": str(snapshot.quantity),
                "ONORDER": "0",
                "ONHOLD": "0",
            }
            for position, snapshot in enumerate(
                self.company.records(RecordKind.INVENTORY, latest), start=1
            )
        ]

    def _on_hand_snapshots(self, bounds: _Bounds) -> list[dict[str, str]]:
        rows = []
        for day in sorted(self._candidate_days(bounds, lambda key: self.company.start)):
            ordinal = (day - self.company.start).days
            for position, snapshot in enumerate(
                self.company.records(RecordKind.INVENTORY, day), start=1
            ):
                rows.append(self._snapshot_row(ordinal * 1_000_000 + position, snapshot))
        return rows

    @staticmethod
    def _snapshot_row(record_number: int, snapshot: InventorySnapshot) -> dict[str, str]:
        def text(value: object) -> str:
            return "" if value is None else str(value)

        return {
            "RECORDNO": str(record_number),
            "SNAPSHOT_DATE": intacct_date(snapshot.snapshot_date),
            "ITEMID": snapshot.material_id,
            "WAREHOUSEID": snapshot.location,
            "QUANTITY": text(snapshot.quantity),
            "UNIT": text(snapshot.unit),
            "UNIT_COST": text(snapshot.unit_cost),
            "VALUE": text(snapshot.value),
            "CURRENCY": text(snapshot.currency),
            "WHENCREATED": intacct_timestamp(snapshot.updated_at),
            "WHENMODIFIED": intacct_timestamp(snapshot.updated_at),
        }

    def _gl_accounts(self) -> list[dict[str, str]]:
        rows = []
        for account, words in sorted(self._gl_titles.items()):
            fixed = account.startswith("15")
            rows.append(
                {
                    "RECORDNO": account,
                    "ACCOUNTNO": account,
                    "TITLE": f"{words} {account}",
                    "ACCOUNTTYPE": "balancesheet" if fixed else "incomestatement",
                    "NORMALBALANCE": "debit",
                    "CATEGORY": "Fixed Assets" if fixed else "Other Expenses",
                    "STATUS": "active",
                    "WHENMODIFIED": "01/01/2024 00:00:00",
                }
            )
        return rows

    def _candidate_days(self, bounds: _Bounds, parent_day: Callable[[int], dt.date]) -> set:
        if bounds.parent_keys is not None:
            return {parent_day(key) for key in bounds.parent_keys}
        first, last = bounds.first_day, bounds.last_day
        if first is None and last is None and bounds.changed_since is not None:
            first = bounds.changed_since.date() - dt.timedelta(days=7)
        first = max(first or self.company.start, self.company.start)
        last = min(last or self.company.end, self.company.end)
        return set(days_between(first, last))

    def _documents(self, bounds: _Bounds, document_type: SpendDocumentType) -> list[SpendDocument]:
        days = self._candidate_days(
            bounds, lambda key: _day_of_document(self.company, str(key)[:10])
        )
        if bounds.changed_since is not None and bounds.parent_keys is None:
            days |= {
                line.transaction_date
                for line in self.company.changed_since(RecordKind.SPEND, bounds.changed_since)
            }
        documents = []
        for day in sorted(days):
            for document in spend_documents(self.company, day):
                self._document_types[document.document_id] = document.document_type
                if document.document_type is document_type:
                    documents.append(document)
        return documents

    def _header_renderer(self, object_name: str, document_type: SpendDocumentType):
        def render(bounds: _Bounds, docparid: str | None) -> list[dict[str, str]]:
            return [
                self._spend_header(object_name, document)
                for document in self._documents(bounds, document_type)
            ]

        return render

    def _line_renderer(self, header_object: str, document_type: SpendDocumentType):
        def render(bounds: _Bounds, docparid: str | None) -> list[dict[str, str]]:
            rows = []
            for document in self._documents(bounds, document_type):
                for line in document.lines:
                    rows.append(self._spend_line(header_object, document, line))
            return rows

        return render

    def _spend_header(self, object_name: str, document: SpendDocument) -> dict[str, str]:
        first = document.lines[0]
        header = first if isinstance(first, dict) else first.model_dump()
        total = sum(
            (line.amount for line in document.lines if not isinstance(line, dict)), Decimal("0")
        )
        vendor = next(
            (v for v in self.company.vendors() if v.vendor_id == header["vendor_id"]), None
        )
        row = {
            "RECORDNO": str(int(document.document_id)),
            "RECORDID": document.document_id,
            "STATE": "Posted",
            "WHENCREATED": intacct_date(document.day),
            "WHENPOSTED": intacct_date(document.day),
            "CURRENCY": header["currency"] or "",
            "BASECURR": "EUR",
            "TRX_TOTALENTERED": str(total),
            "DESCRIPTION": "",
            "WHENMODIFIED": intacct_timestamp(document.updated_at),
        }
        if object_name == "CCTRANSACTION":
            row.update(FINANCIALENTITY="CC-VISA-01", PAYEE=vendor.name if vendor else "")
        else:
            row.update(VENDORID=header["vendor_id"] or "", VENDORNAME=vendor.name if vendor else "")
        if object_name == "APBILL":
            row["WHENDUE"] = intacct_date(document.day + dt.timedelta(days=30))
        return row

    def _spend_line(
        self, header_object: str, document: SpendDocument, line: SpendRecord | dict
    ) -> dict[str, str]:
        raw = line if isinstance(line, dict) else None
        number = raw["line_number"] if raw else line.line_number
        row = {
            "RECORDNO": str(int(document.document_id) * 10 + number),
            "RECORDKEY": str(int(document.document_id)),
            "LINE_NO": str(number),
            "ACCOUNTNO": (raw["gl_account"] if raw else line.gl_account) or "",
            "ENTRY_DATE": intacct_date(document.day),
            # Broken lines are served as stored: the raw text where a number belongs.
            "TRX_AMOUNT": raw["amount"] if raw else str(line.amount),
            "ITEMID": (raw["material_id"] if raw else line.material_id) or "",
            "VENDORID": (raw["vendor_id"] if raw else line.vendor_id) or "",
            "CURRENCY": (raw["currency"] if raw else line.currency) or "",
            "SPEND_QUANTITY": "" if raw or line.quantity is None else str(line.quantity),
            "WHENMODIFIED": intacct_timestamp(document.updated_at),
        }
        description = (raw["description"] if raw else line.description) or ""
        row["DESCRIPTION" if header_object == "CCTRANSACTION" else "ENTRYDESCRIPTION"] = description
        return row

    def _purchase_orders(self, bounds: _Bounds, docparid: str | None):
        if docparid not in (None, PURCHASE_ORDER):
            return []
        days = self._candidate_days(
            bounds, lambda key: _day_of_document(self.company, str(key)[:10])
        )
        if bounds.changed_since is not None and bounds.parent_keys is None:
            days |= {
                record.order_date
                for kind in (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE)
                for record in self.company.changed_since(kind, bounds.changed_since)
            }
        orders = []
        for day in sorted(days):
            lines: dict[str, list[PurchaseOrderLine]] = {}
            for line in self.company.records(RecordKind.PURCHASE_ORDER_LINE, day):
                lines.setdefault(line.purchase_order_id, []).append(line)
            for header in self.company.records(RecordKind.PURCHASE_ORDER, day):
                orders.append((header, lines.get(header.purchase_order_id, [])))
        return orders

    def _purchase_order_headers(self, bounds: _Bounds, docparid: str | None) -> list[dict]:
        rows = []
        for header, lines in self._purchase_orders(bounds, docparid):
            rows.append(self._purchase_order_header(header, lines))
        return rows

    def _purchase_order_header(
        self, header: PurchaseOrder, lines: list[PurchaseOrderLine]
    ) -> dict[str, str]:
        updated = max([header.updated_at] + [line.updated_at for line in lines if line.updated_at])
        return {
            "RECORDNO": str(int(header.purchase_order_id)),
            "DOCNO": header.purchase_order_id,
            "DOCID": f"{PURCHASE_ORDER}-{header.purchase_order_id}",
            "DOCPARID": PURCHASE_ORDER,
            "STATE": PO_STATES.get(header.order_status, "Pending"),
            "WHENCREATED": intacct_date(header.order_date),
            "CUSTVENDID": header.vendor_id or "",
            "CURRENCY": header.currency,
            "TRX_TOTAL": str(header.total_amount),
            "WHENMODIFIED": intacct_timestamp(updated),
        }

    def _purchase_order_lines(self, bounds: _Bounds, docparid: str | None) -> list[dict]:
        rows = []
        for header, lines in self._purchase_orders(bounds, docparid):
            updated = max(
                [header.updated_at] + [line.updated_at for line in lines if line.updated_at]
            )
            for line in lines:
                rows.append(
                    {
                        "RECORDNO": str(int(header.purchase_order_id) * 100 + line.line_number),
                        "DOCHDRNO": str(int(header.purchase_order_id)),
                        "DOCHDRID": f"{PURCHASE_ORDER}-{header.purchase_order_id}",
                        "DOCPARID": PURCHASE_ORDER,
                        "LINE_NO": str(line.line_number),
                        "ITEMID": line.material_id or "",
                        "ITEMDESC": line.description or "",
                        "QUANTITY": str(line.quantity),
                        "UNIT": line.unit or "",
                        "TRX_PRICE": str(line.unit_price),
                        "TRX_VALUE": str(line.amount),
                        "CURRENCY": line.currency,
                        "NEEDBYDATE": intacct_date(line.delivery_date),
                        "WHENMODIFIED": intacct_timestamp(updated),
                    }
                )
        return rows

    def _audit_history(self) -> list[dict[str, str]]:
        epoch = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
        rows = []
        deleted_documents: dict[str, tuple[dt.date, dt.datetime]] = {}
        for natural_key, day, deleted_at in self.company.deleted_since(RecordKind.SPEND, epoch):
            document_id = self.company.deleted_document(RecordKind.SPEND, natural_key)
            if day is not None and not any(
                d.document_id == document_id for d in spend_documents(self.company, day)
            ):
                deleted_documents[document_id] = (day, deleted_at)
        for document_id, (_, deleted_at) in deleted_documents.items():
            document_type = self._document_types.get(document_id, SpendDocumentType.INVOICE)
            object_name = next(
                name for name, (_, kind) in SPEND_OBJECTS.items() if kind is document_type
            )
            rows.append(self._audit_row(object_name, str(int(document_id)), deleted_at))
        for kind, object_name in (
            (RecordKind.PURCHASE_ORDER, "PODOCUMENT"),
            (RecordKind.VENDOR, "VENDOR"),
            (RecordKind.MATERIAL, "ITEM"),
        ):
            for natural_key, _, deleted_at in self.company.deleted_since(kind, epoch):
                key = str(int(natural_key)) if kind is RecordKind.PURCHASE_ORDER else natural_key
                rows.append(self._audit_row(object_name, key, deleted_at))
        for number, row in enumerate(rows, start=1):
            row["RECORDNO"] = str(number)
        return rows

    @staticmethod
    def _audit_row(object_name: str, key: str, at: dt.datetime) -> dict[str, str]:
        return {
            "RECORDNO": "",
            "OBJECTTYPE": object_name.lower(),
            "OBJECTKEY": key,
            "ACCESSMODE": "Delete",
            "ACCESSTIME": intacct_timestamp(at),
            "SOURCE": "ui",
            "USERID": "Admin",
        }


def _text(parent: ET.Element, tag: str, value: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = value
    return element


def _error_message(number: str, description: str) -> ET.Element:
    message = ET.Element("errormessage")
    error = ET.SubElement(message, "error")
    _text(error, "errorno", number)
    _text(error, "description", "")
    _text(error, "description2", description)
    _text(error, "correction", "")
    return message


def create_app(
    company: SandboxCompany, faults: FaultPlan, credentials: dict[str, str]
) -> IntacctSandbox:
    """The WSGI application the sandbox server mounts for an Intacct connection."""
    return IntacctSandbox(company, faults, credentials)


__all__ = [
    "GATEWAY_PATH",
    "SANDBOX_CREDENTIALS",
    "SANDBOX_OPTIONS",
    "SECRET_FIELDS",
    "IntacctSandbox",
    "create_app",
    "evaluate",
    "intacct_date",
    "intacct_timestamp",
    "parse_query",
]
