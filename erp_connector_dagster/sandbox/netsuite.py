"""Sandbox NetSuite: SuiteTalk REST web services, SuiteQL query service (REST API 2024.2 shape).

Serves `POST /services/rest/query/v1/suiteql?limit=&offset=` with the `Prefer: transient`
header and a JSON body `{"q": "SELECT ..."}`, authenticated with OAuth 1.0a token-based
authentication (HMAC-SHA256, `realm` = account id) verified by oauthlib. The answer is NetSuite's
collection envelope: `links` (self/first/previous/next/last), `count`, `hasMore`, `items` (each
with its own empty `links`), `offset`, `totalResults`; every value is a string, null columns are
left out, dates come in the account's date format (M/D/YYYY) and datetimes only through
`TO_CHAR(...)`, in the account's time zone. Errors use the REST error shape (`type`, `title`,
`status`, `o:errorDetails[{detail, o:errorCode}]`).

The query is really executed: a small, strict SuiteQL parser accepts SELECT [DISTINCT] with
INNER/LEFT JOIN ... ON a = b, WHERE with AND/OR/NOT, comparisons, IN, IS [NOT] NULL, the
functions TO_DATE, TO_TIMESTAMP and TO_CHAR, and ORDER BY; anything else is refused with
NetSuite's "Invalid or unsupported search" error. Tables (`transaction`, `transactionline`,
`vendor`, `entityaddress`, `item`, `classification`, `unitstypeuom`, `currency`, `account`,
`location`, `deletedrecord`, `customrecord_onhand_snapshot`) are rendered from the sandbox
company for the days the WHERE clause can touch, so a day's query costs a day's data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import threading
import time
import zoneinfo
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

from oauthlib.oauth1 import RequestValidator, ResourceEndpoint
from oauthlib.oauth1.rfc5849 import SIGNATURE_HMAC_SHA256
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from erp_connector_dagster.records import (
    PurchaseOrder,
    PurchaseOrderLine,
    RecordKind,
    RecordStatus,
    SpendDocumentType,
    SpendRecord,
)
from erp_connector_dagster.sandbox.company import INDUSTRIES, LOCATIONS, SandboxCompany
from erp_connector_dagster.sandbox.faults import (
    Fault,
    FaultPlan,
    fault_response,
)

ACCOUNT_ID = "4242424_SB1"
ACCOUNT_TIMEZONE = "America/Los_Angeles"
SANDBOX_CREDENTIALS: dict[str, str] = {
    "consumer_key": "5f0c1d7e2b9a4c86a1e3f07d9b2c4e61a8d5f3b7c2e9a0d4f6b1c8e3a7d2f5b9",
    "consumer_secret": "c3a9e1f7b5d2a8c4e6f0b3d7a1c5e9f2b8d4a6c0e3f7b1d5a9c2e6f4b0d8a3c7",
    "token_id": "9e2b6d0a4f8c1e5b3d7a9c2f6e0b4d8a1c5f9e3b7d2a6c0f4e8b1d5a9c3f7e2b",
    "token_secret": "1d5a9c3f7e2b6d0a4f8c2e6b0d4a8c1f5e9b3d7a2c6f0e4b8d1a5c9f3e7b2d6a",
}
SECRET_FIELDS = frozenset(SANDBOX_CREDENTIALS)
SANDBOX_OPTIONS: dict[str, object] = {
    "account_id": ACCOUNT_ID,
    "account_timezone": ACCOUNT_TIMEZONE,
    "date_format": "M/D/YYYY",
}

MAX_PAGE_SIZE = 1000
MAX_QUERY_RESULTS = 100_000
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
SPEND_TYPES = {
    SpendDocumentType.INVOICE: "VendBill",
    SpendDocumentType.CREDIT_NOTE: "VendCred",
    SpendDocumentType.CARD_CHARGE: "CardChrg",
}
DELETED_TYPE_IDS = {
    "VendBill": "vendorbill",
    "VendCred": "vendorcredit",
    "CardChrg": "creditcardcharge",
    "PurchOrd": "purchaseorder",
}
PO_STATUS_CODES = {"open": "B", "received": "F", "closed": "H"}
SNAPSHOT_TABLE = "customrecord_onhand_snapshot"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class SuiteQLError(ValueError):
    """A query NetSuite would refuse; the message is the 'Search error occurred' text."""


def internal_id(record_type: str, business_id: str) -> int:
    """A stable NetSuite-style internal id for a business identifier."""
    if business_id.isdigit() and record_type == "transaction":
        return int(business_id)
    digest = hashlib.sha256(f"{record_type}:{business_id}".encode()).digest()
    return int.from_bytes(digest[:5], "big") % 10**11 + 1000


# SuiteQL: tokens and syntax tree

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><>|!=|>=|<=|[=<>(),.*]))"
)
_KEYWORDS = {
    "select",
    "distinct",
    "from",
    "where",
    "and",
    "or",
    "not",
    "in",
    "is",
    "null",
    "join",
    "inner",
    "left",
    "outer",
    "on",
    "order",
    "by",
    "asc",
    "desc",
    "as",
}


@dataclasses.dataclass(frozen=True)
class Column:
    alias: str | None
    name: str


@dataclasses.dataclass(frozen=True)
class Literal:
    value: Any


@dataclasses.dataclass(frozen=True)
class Call:
    function: str
    args: tuple


@dataclasses.dataclass(frozen=True)
class Comparison:
    op: str
    left: Any
    right: Any


@dataclasses.dataclass(frozen=True)
class InList:
    operand: Any
    values: tuple
    negated: bool


@dataclasses.dataclass(frozen=True)
class IsNull:
    operand: Any
    negated: bool


@dataclasses.dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple


@dataclasses.dataclass(frozen=True)
class Not:
    operand: Any


@dataclasses.dataclass(frozen=True)
class Join:
    table: str
    alias: str
    left_outer: bool
    condition: Any


@dataclasses.dataclass(frozen=True)
class Query:
    distinct: bool
    columns: tuple  # (expression, output name)
    table: str
    alias: str
    joins: tuple
    where: Any
    order_by: tuple  # (expression, descending)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.strip().rstrip(";")
        while position < len(text):
            match = _TOKEN.match(text, position)
            if not match or match.end() == position:
                if text[position:].strip() == "":
                    break
                raise SuiteQLError("Invalid or unsupported search.")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.index = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        if self.index + offset < len(self.tokens):
            return self.tokens[self.index + offset]
        return ("end", "")

    def keyword(self, word: str) -> bool:
        kind, value = self.peek()
        if kind == "name" and value.lower() == word:
            self.index += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            raise SuiteQLError("Invalid or unsupported search.")

    def symbol(self, text: str) -> bool:
        if self.peek() == ("op", text):
            self.index += 1
            return True
        return False

    def expect_symbol(self, text: str) -> None:
        if not self.symbol(text):
            raise SuiteQLError("Invalid or unsupported search.")

    def name(self) -> str:
        kind, value = self.peek()
        if kind != "name" or value.lower() in _KEYWORDS:
            raise SuiteQLError("Invalid or unsupported search.")
        self.index += 1
        return value.lower()

    def parse(self) -> Query:
        self.expect_keyword("select")
        distinct = self.keyword("distinct")
        columns = [self.select_item()]
        while self.symbol(","):
            columns.append(self.select_item())
        self.expect_keyword("from")
        table, alias = self.table_ref()
        joins = []
        while True:
            left_outer = False
            if self.keyword("left"):
                self.keyword("outer")
                left_outer = True
            elif self.keyword("inner"):
                pass
            elif self.peek()[1].lower() != "join":
                break
            self.expect_keyword("join")
            join_table, join_alias = self.table_ref()
            self.expect_keyword("on")
            joins.append(Join(join_table, join_alias, left_outer, self.expression()))
        where = self.expression() if self.keyword("where") else None
        order_by = []
        if self.keyword("order"):
            self.expect_keyword("by")
            while True:
                expression = self.operand()
                descending = self.keyword("desc")
                if not descending:
                    self.keyword("asc")
                order_by.append((expression, descending))
                if not self.symbol(","):
                    break
        if self.peek()[0] != "end":
            raise SuiteQLError("Invalid or unsupported search.")
        return Query(distinct, tuple(columns), table, alias, tuple(joins), where, tuple(order_by))

    def select_item(self) -> tuple[Any, str]:
        expression = self.operand()
        if self.keyword("as"):
            return expression, self.name()
        kind, value = self.peek()
        if kind == "name" and value.lower() not in _KEYWORDS:
            return expression, self.name()
        if isinstance(expression, Column):
            return expression, expression.name
        return expression, f"expr{self.index}"

    def table_ref(self) -> tuple[str, str]:
        table = self.name()
        kind, value = self.peek()
        if kind == "name" and value.lower() not in _KEYWORDS:
            return table, self.name()
        return table, table

    def expression(self) -> Any:
        parts = [self.conjunction()]
        while self.keyword("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def conjunction(self) -> Any:
        parts = [self.negation()]
        while self.keyword("and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def negation(self) -> Any:
        if self.keyword("not"):
            return Not(self.negation())
        return self.predicate()

    def predicate(self) -> Any:
        if self.peek() == ("op", "("):
            self.index += 1
            inner = self.expression()
            self.expect_symbol(")")
            return inner
        left = self.operand()
        if self.keyword("is"):
            negated = self.keyword("not")
            self.expect_keyword("null")
            return IsNull(left, negated)
        negated = self.keyword("not")
        if self.keyword("in"):
            self.expect_symbol("(")
            values = [self.operand()]
            while self.symbol(","):
                values.append(self.operand())
            self.expect_symbol(")")
            return InList(left, tuple(values), negated)
        if negated:
            raise SuiteQLError("Invalid or unsupported search.")
        kind, op = self.peek()
        if kind != "op" or op not in ("=", "<>", "!=", ">=", "<=", "<", ">"):
            raise SuiteQLError("Invalid or unsupported search.")
        self.index += 1
        return Comparison("<>" if op == "!=" else op, left, self.operand())

    def operand(self) -> Any:
        kind, value = self.peek()
        if kind == "string":
            self.index += 1
            return Literal(value[1:-1].replace("''", "'"))
        if kind == "number":
            self.index += 1
            return Literal(Decimal(value) if "." in value else int(value))
        if kind == "op" and value == "-" and self.peek(1)[0] == "number":
            raise SuiteQLError("Invalid or unsupported search.")
        first = self.name()
        if self.symbol("."):
            second = self.name()
            if self.peek() == ("op", "("):
                return self.call(f"{first}.{second}")
            return Column(first, second)
        if self.peek() == ("op", "("):
            return self.call(first)
        return Column(None, first)

    def call(self, function: str) -> Call:
        if function not in ("to_date", "to_timestamp", "to_char"):
            raise SuiteQLError("Invalid or unsupported search.")
        self.expect_symbol("(")
        args = [self.operand()]
        while self.symbol(","):
            args.append(self.operand())
        self.expect_symbol(")")
        if len(args) != 2 or not isinstance(args[1], Literal):
            raise SuiteQLError("Invalid or unsupported search.")
        return Call(function, tuple(args))


def parse_suiteql(text: str) -> Query:
    """Parse the SuiteQL subset the emulator executes; refuse anything else."""
    return _Parser(text).parse()


# Oracle-style date formats used by TO_DATE / TO_TIMESTAMP / TO_CHAR.
_FORMAT_TOKENS = (
    ("YYYY", "%Y"),
    ("HH24", "%H"),
    ("MM", "%m"),
    ("DD", "%d"),
    ("MI", "%M"),
    ("SS", "%S"),
)


def _strftime_pattern(oracle_format: str) -> str:
    pattern = ""
    rest = oracle_format.upper()
    while rest:
        for token, directive in _FORMAT_TOKENS:
            if rest.startswith(token):
                pattern += directive
                rest = rest[len(token) :]
                break
        else:
            if rest[0] not in "-/:. T":
                raise SuiteQLError(f"Invalid date format {oracle_format!r}.")
            pattern += rest[0]
            rest = rest[1:]
    return pattern


def account_date(day: dt.date) -> str:
    """A date in the account's M/D/YYYY format (no leading zeros)."""
    return f"{day.month}/{day.day}/{day.year}"


# Execution


@dataclasses.dataclass
class _Bounds:
    """What the WHERE clause says about the days and change time a query can touch."""

    first_day: dt.date | None = None
    last_day: dt.date | None = None  # inclusive
    changed_since: dt.datetime | None = None
    types: frozenset[str] | None = None


class SuiteQLEngine:
    """Executes parsed SuiteQL over tables rendered from the sandbox company."""

    def __init__(self, company: SandboxCompany, timezone: str = ACCOUNT_TIMEZONE) -> None:
        self.company = company
        self.zone = zoneinfo.ZoneInfo(timezone)

    def execute(self, query: Query) -> list[dict[str, str]]:
        tables = _QueryTables(self, query)
        rows: Iterable[dict[str, dict | None]] = (
            {query.alias: row} for row in tables.rows(query.table, query.alias)
        )
        for join in query.joins:
            rows = self._join(rows, join, tables)
        if query.where is not None:
            rows = (row for row in rows if self._truth(query.where, row) is True)
        matched = list(rows)
        for expression, descending in reversed(query.order_by):
            matched.sort(
                key=lambda row, e=expression: _sort_key(self._value(e, row)), reverse=descending
            )
        result = [self._project(query, row) for row in matched]
        if query.distinct:
            seen: set[tuple] = set()
            unique = []
            for item in result:
                key = tuple(sorted(item.items()))
                if key not in seen:
                    seen.add(key)
                    unique.append(item)
            result = unique
        return result

    def _join(self, rows, join: Join, tables: _QueryTables) -> Iterator[dict]:
        condition = join.condition
        if not (
            isinstance(condition, Comparison)
            and condition.op == "="
            and isinstance(condition.left, Column)
            and isinstance(condition.right, Column)
        ):
            raise SuiteQLError("Invalid or unsupported search.")
        inner, outer = condition.left, condition.right
        if (inner.alias or join.alias) != join.alias:
            inner, outer = outer, inner
        if inner.alias != join.alias:
            raise SuiteQLError("Invalid or unsupported search.")
        index: dict[Any, list[dict]] = {}
        for candidate in tables.rows(join.table, join.alias):
            if inner.name not in candidate:
                raise SuiteQLError(
                    f"Field '{inner.name}' for record '{join.table}' was not found. "
                    "Reason: NOT_EXPOSED - Not available for channel SEARCH."
                )
            index.setdefault(candidate[inner.name], []).append(candidate)
        for row in rows:
            key = self._value(outer, row)
            partners = index.get(key, []) if key is not None else []
            if partners:
                for partner in partners:
                    yield {**row, join.alias: partner}
            elif join.left_outer:
                yield {**row, join.alias: None}

    def _project(self, query: Query, row: dict) -> dict[str, str]:
        item: dict[str, str] = {}
        for expression, name in query.columns:
            rendered = self._render(self._value(expression, row))
            if rendered is not None:
                item[name] = rendered
        return item

    def _render(self, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            # Without TO_CHAR, NetSuite shows a date/time field in the date format only.
            return account_date(value.astimezone(self.zone).date())
        if isinstance(value, dt.date):
            return account_date(value)
        return str(value)

    def _value(self, expression: Any, row: dict) -> Any:
        if isinstance(expression, Literal):
            return expression.value
        if isinstance(expression, Column):
            return self._column(expression, row)
        if isinstance(expression, Call):
            return self._call(expression, row)
        raise SuiteQLError("Invalid or unsupported search.")

    def _column(self, column: Column, row: dict) -> Any:
        if column.alias is not None:
            if column.alias not in row:
                raise SuiteQLError(f"Unknown identifier '{column.alias}'.")
            record = row[column.alias]
            if record is None:
                return None
            if column.name not in record:
                raise SuiteQLError(
                    f"Field '{column.name}' for record '{column.alias}' was not found. "
                    "Reason: NOT_EXPOSED - Not available for channel SEARCH."
                )
            return record[column.name]
        owners = [
            alias for alias, record in row.items() if record is not None and column.name in record
        ]
        if len(owners) != 1:
            raise SuiteQLError(f"Unknown or ambiguous identifier '{column.name}'.")
        return row[owners[0]][column.name]

    def _call(self, call: Call, row: dict) -> Any:
        pattern = _strftime_pattern(call.args[1].value)
        value = self._value(call.args[0], row)
        if call.function == "to_char":
            if value is None:
                return None
            if isinstance(value, dt.datetime):
                value = value.astimezone(self.zone)
            return value.strftime(pattern)
        if not isinstance(value, str):
            raise SuiteQLError("Invalid or unsupported search.")
        try:
            parsed = dt.datetime.strptime(value, pattern)
        except ValueError:
            raise SuiteQLError(f"Invalid date value '{value}'.") from None
        if call.function == "to_date":
            return parsed.date()
        return parsed.replace(tzinfo=self.zone).astimezone(dt.timezone.utc)

    def _truth(self, condition: Any, row: dict) -> bool | None:
        if isinstance(condition, BoolOp):
            results = [self._truth(part, row) for part in condition.parts]
            if condition.op == "and":
                if False in results:
                    return False
                return None if None in results else True
            if True in results:
                return True
            return None if None in results else False
        if isinstance(condition, Not):
            inner = self._truth(condition.operand, row)
            return None if inner is None else not inner
        if isinstance(condition, IsNull):
            missing = self._value(condition.operand, row) is None
            return not missing if condition.negated else missing
        if isinstance(condition, InList):
            value = self._value(condition.operand, row)
            if value is None:
                return None
            found = any(self._compare("=", value, self._value(v, row)) for v in condition.values)
            return not found if condition.negated else found
        if isinstance(condition, Comparison):
            left = self._value(condition.left, row)
            right = self._value(condition.right, row)
            if left is None or right is None:
                return None
            return self._compare(condition.op, left, right)
        raise SuiteQLError("Invalid or unsupported search.")

    def _compare(self, op: str, left: Any, right: Any) -> bool:
        left, right = self._coerce(left, right)
        try:
            if op == "=":
                return left == right
            if op == "<>":
                return left != right
            if op == ">=":
                return left >= right
            if op == "<=":
                return left <= right
            if op == ">":
                return left > right
            return left < right
        except TypeError:
            raise SuiteQLError("Invalid or unsupported search.") from None

    def _coerce(self, left: Any, right: Any) -> tuple[Any, Any]:
        def as_instant(value: Any) -> Any:
            if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
                return dt.datetime.combine(value, dt.time(), tzinfo=self.zone)
            return value

        if isinstance(left, dt.datetime) or isinstance(right, dt.datetime):
            return as_instant(left), as_instant(right)
        if isinstance(left, int | Decimal) and isinstance(right, str):
            return str(left), right
        if isinstance(right, int | Decimal) and isinstance(left, str):
            return left, str(right)
        return left, right


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (1, "")  # NULLs sort last, as in Oracle
    if isinstance(value, dt.datetime):
        return (0, value.timestamp())
    return (0, value)


class _QueryTables:
    """The tables one query can see, rendered lazily and only for the days it can touch."""

    def __init__(self, engine: SuiteQLEngine, query: Query) -> None:
        self.engine = engine
        self.company = engine.company
        self.query = query
        aliases = [query.alias] + [join.alias for join in query.joins]
        tables = [query.table] + [join.table for join in query.joins]
        if len(set(aliases)) != len(aliases):
            raise SuiteQLError("Duplicate table alias.")
        self.table_of = dict(zip(aliases, tables, strict=True))
        self._documents: list[_Document] | None = None
        self._cache: dict[str, list[dict]] = {}

    # Which days a query touches, from the top-level AND of its WHERE clause.

    def _bounds(self, alias: str, date_column: str, stamp_column: str) -> _Bounds:
        bounds = _Bounds()
        where = self.query.where
        conjuncts = (
            where.parts
            if isinstance(where, BoolOp) and where.op == "and"
            else ([where] if where is not None else [])
        )
        for condition in conjuncts:
            if (
                isinstance(condition, InList)
                and not condition.negated
                and _is_column(condition.operand, alias, "type", self.query.alias)
            ):
                bounds.types = frozenset(
                    str(self.engine._value(value, {})) for value in condition.values
                )
            if not isinstance(condition, Comparison):
                continue
            column, literal, op = condition.left, condition.right, condition.op
            if isinstance(column, Literal | Call) and isinstance(literal, Column):
                column, literal = literal, column
                op = {">": "<", "<": ">", ">=": "<=", "<=": ">="}.get(op, op)
            if not isinstance(literal, Literal | Call):
                continue
            value = self.engine._value(literal, {})
            if _is_column(column, alias, "type", self.query.alias) and op == "=":
                bounds.types = frozenset({str(value)})
            elif _is_column(column, alias, date_column, self.query.alias) and isinstance(
                value, dt.date
            ):
                day = value.date() if isinstance(value, dt.datetime) else value
                if op in (">=", ">", "="):
                    bounds.first_day = max(filter(None, (bounds.first_day, day)))
                if op in ("<", "<=", "="):
                    last = day - dt.timedelta(days=1) if op == "<" else day
                    bounds.last_day = min(filter(None, (bounds.last_day, last)))
            elif (
                _is_column(column, alias, stamp_column, self.query.alias)
                and op in (">=", ">")
                and isinstance(value, dt.datetime)
            ):
                bounds.changed_since = value
        return bounds

    def rows(self, table: str, alias: str) -> list[dict]:
        if table in ("transaction", "transactionline"):
            documents = self.documents()
            if table == "transaction":
                return [document.header for document in documents]
            return [line for document in documents for line in document.lines]
        if table not in self._cache:
            builder = self._builders().get(table)
            if builder is None:
                raise SuiteQLError(f"Record '{table}' was not found.")
            self._cache[table] = builder(alias)
        return self._cache[table]

    def _builders(self) -> dict[str, Callable[[str], list[dict]]]:
        return {
            "vendor": lambda alias: [_vendor_row(v) for v in self.company.vendors()],
            "entityaddress": lambda alias: [
                {
                    "nkey": internal_id("entityaddress", v.vendor_id),
                    "country": v.country,
                    "addressee": v.name,
                }
                for v in self.company.vendors()
            ],
            "item": lambda alias: [_item_row(m) for m in self.company.materials()],
            "classification": lambda alias: _named_rows(
                "classification",
                "name",
                {m.material_group for m in self.company.materials() if m.material_group},
            ),
            "unitstypeuom": lambda alias: [
                {"internalid": row["id"], "abbreviation": row["name"], "unitname": row["name"]}
                for row in _named_rows("unit", "name", self._units())
            ],
            "currency": lambda alias: [
                {**row, "symbol": row["name"]}
                for row in _named_rows("currency", "name", self._currencies())
            ],
            "account": lambda alias: [
                {
                    **row,
                    "acctnumber": row["name"],
                    "accttype": "FixedAsset" if row["name"].startswith("15") else "Expense",
                }
                for row in _named_rows("account", "name", self._accounts())
            ],
            "location": lambda alias: _named_rows("location", "name", self._locations()),
            "deletedrecord": lambda alias: self._deleted_rows(),
            SNAPSHOT_TABLE: self._snapshot_rows,
        }

    # Master data referenced from documents (ids are derived from the business key).

    def _units(self) -> set[str]:
        units = {m.base_unit for m in self.company.materials() if m.base_unit}
        return units | {
            line["_unit"]
            for doc in self._documents or []
            for line in doc.lines
            if line.get("_unit")
        }

    def _currencies(self) -> set[str]:
        known = {v.currency for v in self.company.vendors() if v.currency} | {"USD", "EUR"}
        return known | {doc.currency for doc in self._documents or [] if doc.currency}

    def _accounts(self) -> set[str]:
        known = {gl_account for _, _, gl_account, _ in INDUSTRIES} | {"5900"}
        return known | {
            line["_account"]
            for doc in self._documents or []
            for line in doc.lines
            if line.get("_account")
        }

    def _locations(self) -> set[str]:
        return set(LOCATIONS)

    # Transactions

    def documents(self) -> list[_Document]:
        if self._documents is None:
            transaction_aliases = [a for a, t in self.table_of.items() if t == "transaction"]
            if len(transaction_aliases) == 1:
                bounds = self._bounds(transaction_aliases[0], "trandate", "lastmodifieddate")
            else:
                bounds = _Bounds()
            self._documents = _render_documents(self.company, bounds)
        return self._documents

    def _deleted_rows(self) -> list[dict]:
        rows = []
        for kind, type_id in (
            (RecordKind.PURCHASE_ORDER, "purchaseorder"),
            (RecordKind.VENDOR, "vendor"),
            (RecordKind.MATERIAL, "inventoryitem"),
        ):
            for key, _, deleted_at in self.company.deleted_since(kind, EPOCH):
                record_type = "transaction" if kind is RecordKind.PURCHASE_ORDER else type_id
                rows.append(
                    {
                        "recordid": internal_id(record_type, key),
                        "recordtypeid": type_id,
                        "name": key,
                        "deleteddate": deleted_at,
                    }
                )
        for key, day, deleted_at in self.company.deleted_since(RecordKind.SPEND, EPOCH):
            document_id = self.company.deleted_document(RecordKind.SPEND, key)
            if day is None or any(
                r.document_id == document_id for r in self.company.records(RecordKind.SPEND, day)
            ):
                continue  # the bill lost a line but lives on: it is modified, not deleted
            rows.append(
                {
                    "recordid": internal_id("transaction", document_id),
                    "recordtypeid": "vendorbill",
                    "name": document_id,
                    "deleteddate": deleted_at,
                }
            )
        return rows

    def _snapshot_rows(self, alias: str) -> list[dict]:
        bounds = self._bounds(alias, "custrecord_ohs_date", "lastmodified")
        days = _days_in(self.company, bounds, RecordKind.INVENTORY)
        rows = []
        for day in days:
            for snapshot in self.company.records(RecordKind.INVENTORY, day):
                rows.append(
                    {
                        "id": internal_id(SNAPSHOT_TABLE, snapshot.source_id),
                        "name": snapshot.source_id,
                        "custrecord_ohs_date": snapshot.snapshot_date,
                        "custrecord_ohs_item": internal_id("item", snapshot.material_id),
                        "custrecord_ohs_location": internal_id("location", snapshot.location),
                        "custrecord_ohs_quantity": snapshot.quantity,
                        "custrecord_ohs_unit_cost": snapshot.unit_cost,
                        "custrecord_ohs_value": snapshot.value,
                        "custrecord_ohs_currency": (
                            internal_id("currency", snapshot.currency)
                            if snapshot.currency
                            else None
                        ),
                        "lastmodified": snapshot.updated_at,
                        "isinactive": "F",
                    }
                )
        return rows


def _is_column(expression: Any, alias: str, name: str, base_alias: str) -> bool:
    return (
        isinstance(expression, Column)
        and expression.name == name
        and (expression.alias == alias or (expression.alias is None and alias == base_alias))
    )


def _named_rows(record_type: str, field: str, names: Iterable[str]) -> list[dict]:
    return [{"id": internal_id(record_type, name), field: name} for name in sorted(names)]


def _vendor_row(vendor) -> dict:
    return {
        "id": internal_id("vendor", vendor.vendor_id),
        "entityid": vendor.vendor_id,
        "companyname": vendor.name,
        "isperson": "F",
        "isinactive": "F",
        "taxidnum": vendor.tax_id,
        "custentity_naics_code": vendor.industry_code,
        "currency": internal_id("currency", vendor.currency) if vendor.currency else None,
        "defaultbillingaddress": internal_id("entityaddress", vendor.vendor_id),
        "datecreated": vendor.updated_at,
        "lastmodifieddate": vendor.updated_at,
    }


def _item_row(material) -> dict:
    return {
        "id": internal_id("item", material.material_id),
        "itemid": material.material_id,
        "displayname": material.description,
        "itemtype": "InvtPart",
        "isinactive": "F",
        "class": (
            internal_id("classification", material.material_group)
            if material.material_group
            else None
        ),
        "stockunit": internal_id("unit", material.base_unit) if material.base_unit else None,
        "custitem_naics_code": material.commodity_code,
        "lastmodifieddate": material.updated_at,
    }


@dataclasses.dataclass
class _Document:
    header: dict
    lines: list[dict]
    currency: str | None


def days_touched(
    company: SandboxCompany,
    first_day: dt.date | None,
    last_day: dt.date | None,
    changed_since: dt.datetime | None,
    *kinds: RecordKind,
) -> list[dt.date]:
    """Days whose records can meet a query's bounds (a superset: the query itself decides).

    Shared by the sandbox dialects: a filter on the business date bounds the days, and a
    change-since filter adds the days of records changed or deleted since then.
    """
    first = first_day or company.start
    last = last_day or company.end
    if changed_since is None:
        return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    days = set(company.business_days(changed_since.date() - dt.timedelta(days=1), company.end))
    for kind in kinds:
        days |= {r.partition_date for r in company.changed_since(kind, changed_since)}
        days |= {d for _, d, _ in company.deleted_since(kind, changed_since) if d is not None}
    return sorted(day for day in days if day is not None and first <= day <= last)


def _days_in(company: SandboxCompany, bounds: _Bounds, *kinds: RecordKind) -> list[dt.date]:
    return days_touched(company, bounds.first_day, bounds.last_day, bounds.changed_since, *kinds)


def _render_documents(company: SandboxCompany, bounds: _Bounds) -> list[_Document]:
    wants_spend = bounds.types is None or bool(bounds.types & set(SPEND_TYPES.values()))
    wants_orders = bounds.types is None or "PurchOrd" in bounds.types
    kinds = ([RecordKind.SPEND] if wants_spend else []) + (
        [RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE] if wants_orders else []
    )
    documents: list[_Document] = []
    for day in _days_in(company, bounds, *kinds):
        if wants_spend:
            documents.extend(_spend_documents(company, day))
        if wants_orders:
            documents.extend(_order_documents(company, day))
    return documents


@dataclasses.dataclass
class SpendDocument:
    """One supplier document of a day, as every dialect stores it: header facts and lines.

    Lines are canonical records, or dictionaries for the company's deliberately broken lines.
    Deleting a line modifies its document, so `last_modified` counts line deletions too.
    """

    document_id: str
    day: dt.date
    document_type: SpendDocumentType
    vendor_id: str | None
    currency: str | None
    lines: list[SpendRecord | dict]
    created: dt.datetime
    last_modified: dt.datetime
    voided: bool


@dataclasses.dataclass
class OrderDocument:
    """One purchase order of a day with its lines; line changes modify the order."""

    order: PurchaseOrder
    lines: list[PurchaseOrderLine]
    last_modified: dt.datetime


def line_value(line: SpendRecord | dict, name: str) -> Any:
    """A field of a spend line, canonical or deliberately broken."""
    return line.get(name) if isinstance(line, dict) else getattr(line, name)


def _line_deletions(
    company: SandboxCompany, kind: RecordKind, day: dt.date
) -> dict[str, dt.datetime]:
    """Latest line deletion per document on `day`."""
    latest: dict[str, dt.datetime] = {}
    for key, deleted_day, at in company.deleted_since(kind, EPOCH):
        if deleted_day == day:
            document_id = company.deleted_document(kind, key)
            latest[document_id] = max(at, latest.get(document_id, at))
    return latest


def spend_documents(company: SandboxCompany, day: dt.date) -> list[SpendDocument]:
    """The day's bills, credits and card charges, bad lines included."""
    by_document: dict[str, list[SpendRecord | dict]] = {}
    for record in company.records(RecordKind.SPEND, day):
        by_document.setdefault(record.document_id, []).append(record)
    for bad_line in company.bad_spend_lines(day):
        by_document.setdefault(bad_line["document_id"], []).append(bad_line)
    deletions = _line_deletions(company, RecordKind.SPEND, day)
    documents = []
    for document_id, lines in by_document.items():
        stamps = [_stamp(line) for line in lines]
        first = lines[0]
        documents.append(
            SpendDocument(
                document_id=document_id,
                day=day,
                document_type=SpendDocumentType(line_value(first, "document_type")),
                vendor_id=line_value(first, "vendor_id"),
                currency=line_value(first, "currency"),
                lines=lines,
                created=min(stamps),
                last_modified=max(stamps + [deletions.get(document_id, EPOCH)]),
                voided=any(_status(line) is RecordStatus.VOIDED for line in lines),
            )
        )
    return documents


def order_documents(company: SandboxCompany, day: dt.date) -> list[OrderDocument]:
    """The day's purchase orders (deleted orders are gone, with their lines)."""
    lines_by_order: dict[str, list[PurchaseOrderLine]] = {}
    for line in company.records(RecordKind.PURCHASE_ORDER_LINE, day):
        lines_by_order.setdefault(line.purchase_order_id, []).append(line)
    deletions = _line_deletions(company, RecordKind.PURCHASE_ORDER_LINE, day)
    documents = []
    for order in company.records(RecordKind.PURCHASE_ORDER, day):
        lines = lines_by_order.get(order.purchase_order_id, [])
        stamps = [order.updated_at or EPOCH] + [line.updated_at or EPOCH for line in lines]
        stamps.append(deletions.get(order.purchase_order_id, EPOCH))
        documents.append(OrderDocument(order, lines, max(stamps)))
    return documents


def _spend_documents(company: SandboxCompany, day: dt.date) -> list[_Document]:
    documents = []
    for document in spend_documents(company, day):
        header = {
            "id": internal_id("transaction", document.document_id),
            "tranid": document.document_id,
            "type": SPEND_TYPES[document.document_type],
            "trandate": day,
            "entity": internal_id("vendor", document.vendor_id) if document.vendor_id else None,
            "currency": (internal_id("currency", document.currency) if document.currency else None),
            "voided": "T" if document.voided else "F",
            "status": "A",
            "foreigntotal": None,
            "createddate": document.created,
            "lastmodifieddate": document.last_modified,
            "memo": None,
        }
        rendered = [_mainline(header)] + [_spend_line(header, line) for line in document.lines]
        documents.append(_Document(header, rendered, document.currency))
    return documents


def _stamp(line: SpendRecord | dict) -> dt.datetime:
    if isinstance(line, dict):
        return dt.datetime.fromisoformat(line["updated_at"])
    return line.updated_at or EPOCH


def _status(line: SpendRecord | dict) -> RecordStatus:
    return RecordStatus.ACTIVE if isinstance(line, dict) else line.status


def _mainline(header: dict) -> dict:
    return {
        "transaction": header["id"],
        "id": 0,
        "linesequencenumber": 0,
        "mainline": "T",
        "taxline": "F",
        "item": None,
        "memo": None,
        "quantity": None,
        "rate": None,
        "foreignamount": header["foreigntotal"],
        "units": None,
        "expenseaccount": None,
        "expectedreceiptdate": None,
        "createdfrom": None,
    }


def _spend_line(header: dict, line: SpendRecord | dict) -> dict:
    if isinstance(line, dict):  # a deliberately broken line, rendered as the ERP holds it
        amount = line["amount"] or None
        quantity, material_id, unit, line_number = None, None, None, line["line_number"]
        description, gl_account = line["description"], line["gl_account"]
    else:
        amount, quantity, material_id, unit = (
            line.amount,
            line.quantity,
            line.material_id,
            line.unit,
        )
        line_number, description, gl_account = line.line_number, line.description, line.gl_account
    return {
        "transaction": header["id"],
        "id": line_number,
        "linesequencenumber": line_number,
        "mainline": "F",
        "taxline": "F",
        "item": internal_id("item", material_id) if material_id else None,
        "memo": description,
        "quantity": quantity,
        "rate": None,
        # Debits are positive on a bill's expense lines, so a vendor credit's lines are negative.
        "foreignamount": amount,
        "units": internal_id("unit", unit) if unit else None,
        "expenseaccount": internal_id("account", gl_account) if gl_account else None,
        "expectedreceiptdate": None,
        "createdfrom": None,
        "_unit": unit,
        "_account": gl_account,
    }


def _order_documents(company: SandboxCompany, day: dt.date) -> list[_Document]:
    documents = []
    for document in order_documents(company, day):
        header = _order_header(document.order, document.last_modified)
        rendered = [_mainline(header)] + [_order_line(header, line) for line in document.lines]
        documents.append(_Document(header, rendered, document.order.currency))
    return documents


def _order_header(order: PurchaseOrder, modified: dt.datetime) -> dict:
    return {
        "id": internal_id("transaction", order.purchase_order_id),
        "tranid": order.purchase_order_id,
        "type": "PurchOrd",
        "trandate": order.order_date,
        "entity": internal_id("vendor", order.vendor_id) if order.vendor_id else None,
        "currency": internal_id("currency", order.currency),
        "voided": "T" if order.status is RecordStatus.VOIDED else "F",
        "status": PO_STATUS_CODES.get(order.order_status, "B"),
        "foreigntotal": order.total_amount,
        "createddate": order.updated_at,
        "lastmodifieddate": modified,
        "memo": None,
    }


def _order_line(header: dict, line: PurchaseOrderLine) -> dict:
    return {
        "transaction": header["id"],
        "id": line.line_number // 10 if line.line_number % 10 == 0 else line.line_number,
        "linesequencenumber": line.line_number,
        "mainline": "F",
        "taxline": "F",
        "item": internal_id("item", line.material_id) if line.material_id else None,
        "memo": line.description,
        "quantity": line.quantity,
        "rate": line.unit_price,
        "foreignamount": line.amount,
        "units": internal_id("unit", line.unit) if line.unit else None,
        "expenseaccount": internal_id("account", line.gl_account) if line.gl_account else None,
        "expectedreceiptdate": line.delivery_date,
        "createdfrom": None,
        "_unit": line.unit,
        "_account": line.gl_account,
    }


# HTTP: OAuth 1.0a verification and the SuiteQL resource


class _TokenValidator(RequestValidator):
    """oauthlib validator for one integration record and one access token."""

    def __init__(self, credentials: dict[str, str], account_id: str) -> None:
        super().__init__()
        self.credentials = credentials
        self.account_id = account_id
        self._nonces: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    allowed_signature_methods = (SIGNATURE_HMAC_SHA256,)
    enforce_ssl = False
    dummy_client = "dummy-consumer"
    dummy_access_token = "dummy-token"

    def check_client_key(self, client_key: str) -> bool:
        return bool(client_key)

    def check_access_token(self, request_token: str) -> bool:
        return bool(request_token)

    def check_nonce(self, nonce: str) -> bool:
        return bool(nonce)

    def validate_client_key(self, client_key: str, request) -> bool:
        return client_key == self.credentials["consumer_key"]

    def validate_access_token(self, client_key: str, token: str, request) -> bool:
        return token == self.credentials["token_id"]

    def get_client_secret(self, client_key: str, request) -> str:
        if client_key == self.credentials["consumer_key"]:
            return self.credentials["consumer_secret"]
        return "dummy-secret"

    def get_access_token_secret(self, client_key: str, token: str, request) -> str:
        if token == self.credentials["token_id"]:
            return self.credentials["token_secret"]
        return "dummy-secret"

    def validate_realms(self, client_key, token, request, uri=None, realms=None) -> bool:
        return request.realm == self.account_id

    def validate_timestamp_and_nonce(
        self, client_key, timestamp, nonce, request, request_token=None, access_token=None
    ) -> bool:
        # A nonce may be used once per timestamp: a replayed request is refused.
        now = time.time()
        with self._lock:
            self._nonces = {k: t for k, t in self._nonces.items() if now - t < 900}
            if (nonce, timestamp) in self._nonces:
                return False
            self._nonces[(nonce, timestamp)] = now
        return True


def _concurrency_limited(fault: Fault) -> Response:
    # REST web services answer a request over the account's concurrency limit with 429 and no
    # Retry-After: the slot frees when another request ends.
    return _error(
        429,
        "Too Many Requests",
        "CONCURRENCY_LIMIT_EXCEEDED",
        "Concurrent request limit exceeded. Request blocked.",
    )


def _error(status: int, title: str, code: str, detail: str, **extra: str) -> Response:
    sections = {400: "15.5.1", 401: "15.5.2", 404: "15.5.5", 405: "15.5.6", 500: "15.6.1"}
    if status == 429:
        error_type = "https://www.rfc-editor.org/rfc/rfc6585.html#section-4"
    else:
        error_type = f"https://www.rfc-editor.org/rfc/rfc9110.html#section-{sections[status]}"
    body = {
        "type": error_type,
        "title": title,
        "status": status,
        "o:errorDetails": [{"detail": detail, "o:errorCode": code, **extra}],
    }
    return Response(
        json.dumps(body), status=status, mimetype="application/vnd.oracle.resource+json; type=error"
    )


class NetSuiteEmulator:
    """The WSGI application of one sandbox NetSuite account."""

    def __init__(
        self,
        company: SandboxCompany,
        faults: FaultPlan,
        credentials: dict[str, str],
        account_id: str = ACCOUNT_ID,
        timezone: str = ACCOUNT_TIMEZONE,
    ) -> None:
        self.faults = faults
        self.account_id = account_id
        self.engine = SuiteQLEngine(company, timezone)
        self.endpoint = ResourceEndpoint(_TokenValidator(credentials, account_id))
        self.routes = Map([Rule(SUITEQL_PATH, endpoint="suiteql", methods=["POST"])])

    def __call__(self, environ, start_response):
        request = Request(environ)
        return self.dispatch(request)(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        # Read the body first: closing a socket with unread input resets it mid-answer.
        request.get_data()
        # TBA tokens do not expire, but a request whose timestamp or nonce is refused gets the
        # same answer as a revoked token: sign afresh and try again.
        forced = fault_response(
            self.faults.take(), throttled=_concurrency_limited, token_expired=self._login_refused
        )
        if forced is not None:
            return forced
        adapter = self.routes.bind_to_environ(request.environ)
        try:
            endpoint, _ = adapter.match()
        except Exception:  # noqa: BLE001 - werkzeug raises NotFound or MethodNotAllowed
            return _error(
                404,
                "Not Found",
                "NONEXISTENT_ID",
                "The record instance does not exist. Provide a valid record instance ID.",
            )
        if not self._authenticated(request):
            return self._login_refused()
        return self.suiteql(request)

    def _authenticated(self, request: Request) -> bool:
        valid, _ = self.endpoint.validate_protected_resource_request(
            request.url,
            http_method=request.method,
            body=request.get_data(as_text=True),
            headers=dict(request.headers),
        )
        return valid

    def _login_refused(self) -> Response:
        response = _error(
            401,
            "Unauthorized",
            "INVALID_LOGIN",
            "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite "
            "UI at Setup > Users/Roles > User Management > View Login Audit Trail.",
        )
        response.headers["WWW-Authenticate"] = (
            f'OAuth realm="{self.account_id}", error="token_rejected", '
            'error_description="Invalid login attempt."'
        )
        return response

    def suiteql(self, request: Request) -> Response:
        if "transient" not in request.headers.get("Prefer", "").lower():
            return _error(
                400,
                "Bad Request",
                "INVALID_HEADER",
                "Invalid value for the Prefer header: 'transient' is required for "
                "the SuiteQL query service.",
                **{"o:errorHeader": "Prefer"},
            )
        try:
            limit = int(request.args.get("limit", MAX_PAGE_SIZE))
            offset = int(request.args.get("offset", 0))
        except ValueError:
            return _error(
                400,
                "Bad Request",
                "INVALID_PARAMETER",
                "Invalid value for the limit or offset query parameter.",
                **{"o:errorQueryParam": "limit"},
            )
        if not 1 <= limit <= MAX_PAGE_SIZE or offset < 0:
            return _error(
                400,
                "Bad Request",
                "INVALID_PARAMETER",
                f"The limit query parameter must be between 1 and {MAX_PAGE_SIZE}, "
                "and the offset must not be negative.",
                **{"o:errorQueryParam": "limit"},
            )
        try:
            body = json.loads(request.get_data(as_text=True) or "{}")
            statement = body["q"]
            rows = self.engine.execute(parse_suiteql(statement))
        except (ValueError, KeyError, TypeError) as error:
            reason = (
                str(error)
                if isinstance(error, SuiteQLError)
                else ("Invalid or unsupported search.")
            )
            return _error(
                400,
                "Bad Request",
                "INVALID_PARAMETER",
                f"Invalid search query. Detailed unprocessed description follows. Search error "
                f"occurred: {reason}",
                **{"o:errorQueryParam": "q"},
            )
        rows = rows[:MAX_QUERY_RESULTS]
        page = rows[offset : offset + limit]
        return Response(
            json.dumps(self._envelope(request, page, offset, limit, len(rows))),
            mimetype="application/vnd.oracle.resource+json; type=collection",
        )

    def _envelope(
        self, request: Request, page: list[dict], offset: int, limit: int, total: int
    ) -> dict:
        def link(relation: str, at: int) -> dict:
            return {"rel": relation, "href": f"{request.base_url}?limit={limit}&offset={at}"}

        last_offset = max((total - 1) // limit * limit, 0)
        has_more = offset + len(page) < total
        links = []
        if offset > 0:
            links.append(link("previous", max(offset - limit, 0)))
        links.append(link("first", 0))
        if has_more:
            links.append(link("next", offset + limit))
        links.append(link("last", last_offset))
        links.append(link("self", offset))
        return {
            "links": links,
            "count": len(page),
            "hasMore": has_more,
            "items": [{"links": [], **item} for item in page],
            "offset": offset,
            "totalResults": total,
        }


def create_app(
    company: SandboxCompany, faults: FaultPlan, credentials: dict[str, str]
) -> NetSuiteEmulator:
    """The sandbox NetSuite account for the sandbox server."""
    return NetSuiteEmulator(company, faults, credentials)


__all__ = [
    "ACCOUNT_ID",
    "SANDBOX_CREDENTIALS",
    "SANDBOX_OPTIONS",
    "SECRET_FIELDS",
    "NetSuiteEmulator",
    "SuiteQLEngine",
    "SuiteQLError",
    "account_date",
    "create_app",
    "internal_id",
    "parse_suiteql",
]
