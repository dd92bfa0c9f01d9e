"""Sandbox SAP ECC 6.0: its tables, read through RFC_READ_TABLE over the SOAP RFC runtime.

Why this dialect: ECC releases no API for invoices, orders or stock; third-party extractors read
its tables, classically with the RFC-enabled function module RFC_READ_TABLE, which any ECC
(NetWeaver AS ABAP 7.0x) answers over HTTP at `/sap/bc/soap/rfc` (SOAP 1.1, namespace
`urn:sap-com:document:sap:rfc:functions`) with the user's Basic credentials. That keeps the real
table and field names, the real logon refusal (a replicated PostgreSQL copy could not refuse a
wrong password: the sandbox server trusts every local login) and the real quirks:

- parameters QUERY_TABLE, DELIMITER, ROWSKIPS, ROWCOUNT, OPTIONS (the Open SQL WHERE clause in
  lines of at most 72 characters) and FIELDS; the answer's FIELDS give each column's OFFSET,
  LENGTH and TYPE and DATA holds one fixed-width line (WA) per row, at most 512 characters,
  else the exception DATA_BUFFER_EXCEEDED. Exceptions come back as SOAP faults (HTTP 500).
- values as the database holds them: dates `YYYYMMDD` (`00000000` when empty), times `HHMMSS`,
  NUMC zero-padded, packed numbers right-aligned with the minus sign trailing (`1250.00-`), and
  amounts with the two decimals of the CURR type whatever the currency: 1250 JPY is stored as
  `12.50` (TCURX tells how far to shift).
- no ORDER BY: rows come in primary-key order, as the database returns them here.

Tables served, rendered from the sandbox company: RBKP (invoice headers), RBCO (G/L account
items), RBMA (material items), RSEG (purchase-order items: none in this company), EKKO, EKPO,
EKET (schedule lines), EKKN (account assignment), LFA1 and LFM1 (vendors), MARA and MAKT
(materials), MBEW (valuation), MARD (stock now), MSEG (goods movements, BUDAT_MKPF), CDHDR
(change documents for INCOMINGINVOICE, EINKBELEG and KRED), T001, T001K and TCURX.

How the company becomes ECC data: invoices are posted (RBSTAT 5) on their transaction date;
credit memos have XRECH empty and credit (H) items; card charges use document type
`CARD_CHARGE_DOCUMENT_TYPE`; an invoice is entered (CPUDT/CPUTM) when first stamped on its day
and every later stamp is a change document. Vendors carry the 4-digit NAICS industry group as
industry key (BRSCH); deleted records stay, flagged (LOEKZ, LOEVM). Stock is counted in one
storage location per plant; MSEG holds one goods movement per material and plant per business
day, so that MARD minus later movements gives the stock on any past day (as MB5B does).
Throttling is the ICM's 503 Service Unavailable with Retry-After (SAP documents none for ECC).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import math
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from werkzeug.wrappers import Request, Response

from erp_connector_dagster.records import RecordKind, SpendDocumentType
from erp_connector_dagster.sandbox.company import INDUSTRIES, LOCATIONS, SandboxCompany
from erp_connector_dagster.sandbox.faults import (
    Fault,
    FaultPlan,
    fault_response,
)

SYSTEM_ID = "ECC"
SAP_CLIENT = "100"
SOAP_RFC_PATH = "/sap/bc/soap/rfc"
RFC_NAMESPACE = "urn:sap-com:document:sap:rfc:functions"
SOAP_NAMESPACE = "http://schemas.xmlsoap.org/soap/envelope/"
SANDBOX_CREDENTIALS: dict[str, str] = {
    "username": "RFC_EXTRACT",
    "password": "ecc-Sandbox-3Hn8-Vq5r-Tz2w",
}
SECRET_FIELDS = frozenset({"password"})
COMPANY_CODE = "1000"
PURCHASING_ORG = "1000"
STORAGE_LOCATION = "0001"
CARD_CHARGE_DOCUMENT_TYPE = "ZP"
MAX_LINE = 512
ZERO_DECIMAL_CURRENCIES = ("JPY", "KRW", "HUF")
_ACCOUNT_BY_NAICS = {naics: gl for naics, _, gl, _ in INDUSTRIES}
VALUATION_CLASS_BY_ACCOUNT: dict[str, str] = {
    account: f"{3000 + 10 * index}"
    for index, account in enumerate(sorted({gl for _, _, gl, _ in INDUSTRIES}))
}
SANDBOX_OPTIONS: dict[str, object] = {
    "sap_client": SAP_CLIENT,
    "valuation_class_accounts": {cls: gl for gl, cls in VALUATION_CLASS_BY_ACCOUNT.items()},
    "card_charge_document_types": [CARD_CHARGE_DOCUMENT_TYPE],
    "capex_gl_prefixes": ["15"],
    "industry_key_codes": {naics[:4]: naics for naics, _, _, _ in INDUSTRIES},
}
_UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)


class RfcException(Exception):
    """An exception RFC_READ_TABLE raises (rendered as a SOAP fault)."""

    def __init__(self, name: str, text: str = "") -> None:
        super().__init__(name)
        self.name = name
        self.text = text or name


# Tables


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    abap_type: str  # C, N, D, T, P
    length: int  # characters in WA (for P: the output length)
    decimals: int = 0
    text: str = ""


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    keys: tuple[str, ...]
    columns: dict[str, Column]


def _table(name: str, keys: tuple[str, ...], spec: str) -> Table:
    """`FIELD:TYPE:LENGTH[:DECIMALS]` words; MANDT is implicit (the logon client)."""
    columns = {}
    for word in spec.split():
        parts = word.split(":")
        decimals = int(parts[3]) if len(parts) > 3 else 0
        length = int(parts[2])
        columns[parts[0]] = Column(parts[0], parts[1], length, decimals)
    return Table(name, keys, columns)


TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        _table(
            "RBKP",
            ("BELNR", "GJAHR"),
            "BELNR:C:10 GJAHR:N:4 BLART:C:2 BLDAT:D:8 BUDAT:D:8 USNAM:C:12 CPUDT:D:8 "
            "CPUTM:T:6 XRECH:C:1 BUKRS:C:4 LIFNR:C:10 WAERS:C:5 RMWWR:P:16:2 STBLG:C:10 "
            "STJAH:N:4 RBSTAT:C:1 BKTXT:C:25",
        ),
        _table(
            "RBCO",
            ("BELNR", "GJAHR", "BUZEI", "COBL_NR"),
            "BELNR:C:10 GJAHR:N:4 BUZEI:N:6 COBL_NR:N:4 WRBTR:P:16:2 SHKZG:C:1 MWSKZ:C:2 "
            "SAKNR:C:10 KOSTL:C:10 MENGE:P:17:3 MEINS:C:3 SGTXT:C:50",
        ),
        _table(
            "RBMA",
            ("BELNR", "GJAHR", "BUZEI"),
            "BELNR:C:10 GJAHR:N:4 BUZEI:N:6 WRBTR:P:16:2 SHKZG:C:1 MATNR:C:18 BWKEY:C:4 "
            "BWTAR:C:10 MENGE:P:17:3 MEINS:C:3 MWSKZ:C:2",
        ),
        _table(
            "RSEG",
            ("BELNR", "GJAHR", "BUZEI"),
            "BELNR:C:10 GJAHR:N:4 BUZEI:N:6 EBELN:C:10 EBELP:N:5 MATNR:C:18 BUKRS:C:4 "
            "WERKS:C:4 WRBTR:P:16:2 SHKZG:C:1 MENGE:P:17:3 BSTME:C:3 SGTXT:C:50",
        ),
        _table(
            "EKKO",
            ("EBELN",),
            "EBELN:C:10 BUKRS:C:4 BSTYP:C:1 BSART:C:4 LOEKZ:C:1 AEDAT:D:8 ERNAM:C:12 "
            "LIFNR:C:10 EKORG:C:4 EKGRP:C:3 WAERS:C:5 BEDAT:D:8 PROCSTAT:C:2",
        ),
        _table(
            "EKPO",
            ("EBELN", "EBELP"),
            "EBELN:C:10 EBELP:N:5 LOEKZ:C:1 AEDAT:D:8 TXZ01:C:40 MATNR:C:18 WERKS:C:4 "
            "LGORT:C:4 MATKL:C:9 MENGE:P:17:3 MEINS:C:3 NETPR:P:14:2 PEINH:P:6 "
            "NETWR:P:16:2 KNTTP:C:1 ELIKZ:C:1 EREKZ:C:1",
        ),
        _table(
            "EKET",
            ("EBELN", "EBELP", "ETENR"),
            "EBELN:C:10 EBELP:N:5 ETENR:N:4 EINDT:D:8 MENGE:P:17:3",
        ),
        _table(
            "EKKN",
            ("EBELN", "EBELP", "ZEKKN"),
            "EBELN:C:10 EBELP:N:5 ZEKKN:N:2 LOEKZ:C:1 SAKTO:C:10 KOSTL:C:10 MENGE:P:17:3",
        ),
        _table(
            "LFA1",
            ("LIFNR",),
            "LIFNR:C:10 LAND1:C:3 NAME1:C:35 NAME2:C:35 ORT01:C:35 KTOKK:C:4 BRSCH:C:4 "
            "STCEG:C:20 ERDAT:D:8 ERNAM:C:12 LOEVM:C:1 SPERR:C:1",
        ),
        _table("LFM1", ("LIFNR", "EKORG"), "LIFNR:C:10 EKORG:C:4 WAERS:C:5 ZTERM:C:4 LOEVM:C:1"),
        _table(
            "MARA",
            ("MATNR",),
            "MATNR:C:18 ERSDA:D:8 LAEDA:D:8 LVORM:C:1 MTART:C:4 MATKL:C:9 MEINS:C:3 EXTWG:C:18",
        ),
        _table("MAKT", ("MATNR", "SPRAS"), "MATNR:C:18 SPRAS:C:1 MAKTX:C:40"),
        _table(
            "MBEW",
            ("MATNR", "BWKEY", "BWTAR"),
            "MATNR:C:18 BWKEY:C:4 BWTAR:C:10 LVORM:C:1 LBKUM:P:17:3 BKLAS:C:4 VPRSV:C:1 "
            "VERPR:P:14:2 STPRS:P:14:2 PEINH:P:6",
        ),
        _table(
            "MARD",
            ("MATNR", "WERKS", "LGORT"),
            "MATNR:C:18 WERKS:C:4 LGORT:C:4 LVORM:C:1 LABST:P:17:3 INSME:P:17:3 SPEME:P:17:3",
        ),
        _table(
            "MSEG",
            ("MBLNR", "MJAHR", "ZEILE"),
            "MBLNR:C:10 MJAHR:N:4 ZEILE:N:4 BWART:C:3 MATNR:C:18 WERKS:C:4 LGORT:C:4 "
            "SHKZG:C:1 MENGE:P:17:3 MEINS:C:3 BUDAT_MKPF:D:8",
        ),
        _table(
            "CDHDR",
            ("OBJECTCLAS", "OBJECTID", "CHANGENR"),
            "OBJECTCLAS:C:15 OBJECTID:C:90 CHANGENR:C:10 USERNAME:C:12 UDATE:D:8 "
            "UTIME:T:6 TCODE:C:20 CHANGE_IND:C:1",
        ),
        _table("T001", ("BUKRS",), "BUKRS:C:4 BUTXT:C:25 LAND1:C:3 WAERS:C:5"),
        _table("T001K", ("BWKEY",), "BWKEY:C:4 BUKRS:C:4"),
        _table("TCURX", ("CURRKEY",), "CURRKEY:C:5 CURRDEC:N:2"),
    )
}


def db_text(value: Any, column: Column) -> str:
    """A value as RFC_READ_TABLE writes it into WA, padded to the column's length."""
    if column.abap_type == "P":
        if isinstance(value, Decimal):
            number = value.quantize(Decimal(1).scaleb(-column.decimals))
            text = f"{abs(number):f}" + ("-" if number < 0 else " ")
        else:  # a broken value the sandbox serves on purpose
            text = str(value if value is not None else "")
        return text.rjust(column.length)[-column.length :]
    if column.abap_type == "N":
        return str(value or "").zfill(column.length)[-column.length :]
    if column.abap_type == "D":
        return value.strftime("%Y%m%d") if isinstance(value, dt.date) else "00000000"
    if column.abap_type == "T":
        return value.strftime("%H%M%S") if isinstance(value, dt.time) else "000000"
    return str(value if value is not None else "").ljust(column.length)[: column.length]


def db_value(value: Any, column: Column) -> Any:
    """The value as the database compares it in a WHERE clause."""
    if column.abap_type == "P":
        return value if isinstance(value, Decimal) else None
    return db_text(value, column).rstrip() if column.abap_type == "C" else db_text(value, column)


# Open SQL WHERE clauses (the subset RFC_READ_TABLE users send)

_SQL_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<op><>|>=|<=|=|<|>)|(?P<name>[A-Za-z_][A-Za-z0-9_~]*)|(?P<paren>[(),]))"
)
_OPERATORS = {"EQ": "=", "NE": "<>", "GT": ">", "GE": ">=", "LT": "<", "LE": "<="}


@dataclasses.dataclass(frozen=True)
class Condition:
    field: str
    op: str  # = <> > >= < <= IN
    values: tuple


@dataclasses.dataclass(frozen=True)
class Junction:
    op: str  # AND | OR
    parts: tuple


@dataclasses.dataclass(frozen=True)
class Inverted:
    operand: Any


class _WhereParser:
    def __init__(self, text: str, table: Table) -> None:
        self.table = table
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text):
            if not text[position:].strip():
                break
            match = _SQL_TOKEN.match(text, position)
            if not match:
                raise RfcException("OPTION_NOT_VALID", f"cannot read: {text[position:]!r}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.index = 0

    def parse(self) -> Any:
        if not self.tokens:
            return None
        node = self._or()
        if self.index != len(self.tokens):
            raise RfcException("OPTION_NOT_VALID", "unexpected text after the condition")
        return node

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.index] if self.index < len(self.tokens) else ("end", "")

    def _keyword(self, word: str) -> bool:
        kind, value = self._peek()
        if kind == "name" and value.upper() == word:
            self.index += 1
            return True
        return False

    def _expect(self, kind: str, value: str) -> None:
        if self._peek() != (kind, value):
            raise RfcException("OPTION_NOT_VALID", f"{value!r} expected")
        self.index += 1

    def _or(self) -> Any:
        parts = [self._and()]
        while self._keyword("OR"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else Junction("OR", tuple(parts))

    def _and(self) -> Any:
        parts = [self._not()]
        while self._keyword("AND"):
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else Junction("AND", tuple(parts))

    def _not(self) -> Any:
        if self._keyword("NOT"):
            return Inverted(self._not())
        if self._peek() == ("paren", "("):
            self.index += 1
            node = self._or()
            self._expect("paren", ")")
            return node
        return self._condition()

    def _condition(self) -> Condition:
        kind, field = self._peek()
        if kind != "name":
            raise RfcException("OPTION_NOT_VALID", "field name expected")
        self.index += 1
        field = field.upper().split("~")[-1]
        if field not in self.table.columns:
            raise RfcException("OPTION_NOT_VALID", f"unknown field {field} of {self.table.name}")
        column = self.table.columns[field]
        negated = self._keyword("NOT")
        if self._keyword("IN"):
            self._expect("paren", "(")
            values = [self._literal(column)]
            while self._peek() == ("paren", ","):
                self.index += 1
                values.append(self._literal(column))
            self._expect("paren", ")")
            condition = Condition(field, "IN", tuple(values))
            return Inverted(condition) if negated else condition
        if self._keyword("BETWEEN"):
            low = self._literal(column)
            if not self._keyword("AND"):
                raise RfcException("OPTION_NOT_VALID", "BETWEEN needs AND")
            high = self._literal(column)
            condition = Junction(
                "AND", (Condition(field, ">=", (low,)), Condition(field, "<=", (high,)))
            )
            return Inverted(condition) if negated else condition
        kind, op = self._peek()
        op = _OPERATORS.get(op.upper(), op) if kind in ("name", "op") else ""
        if op not in _OPERATORS.values():
            raise RfcException("OPTION_NOT_VALID", f"comparison expected after {field}")
        self.index += 1
        return Condition(field, op, (self._literal(column),))

    def _literal(self, column: Column) -> Any:
        kind, value = self._peek()
        self.index += 1
        if kind == "string":
            text = value[1:-1].replace("''", "'")
        elif kind == "number":
            text = value
        else:
            raise RfcException("OPTION_NOT_VALID", "literal expected")
        if column.abap_type == "P":
            try:
                return Decimal(text)
            except InvalidOperation:
                raise RfcException("OPTION_NOT_VALID", f"not a number: {text}") from None
        if column.abap_type == "N":
            return text.zfill(column.length)
        return text.rstrip() if column.abap_type == "C" else text


def holds(node: Any, row: dict[str, Any], table: Table) -> bool:
    if node is None:
        return True
    if isinstance(node, Junction):
        results = (holds(part, row, table) for part in node.parts)
        return all(results) if node.op == "AND" else any(results)
    if isinstance(node, Inverted):
        return not holds(node.operand, row, table)
    value = db_value(row.get(node.field), table.columns[node.field])
    if node.op == "IN":
        return value in node.values
    other = node.values[0]
    if value is None:
        return False
    try:
        return {
            "=": value == other,
            "<>": value != other,
            ">": value > other,
            ">=": value >= other,
            "<": value < other,
            "<=": value <= other,
        }[node.op]
    except TypeError:
        return False


def key_values(node: Any, field: str) -> set[str] | None:
    """Values `field` must take for the clause to hold, or None when it is not pinned."""
    if isinstance(node, Condition):
        if node.field == field and node.op in ("=", "IN"):
            return set(node.values)
        return None
    if isinstance(node, Junction):
        found = [key_values(part, field) for part in node.parts]
        if node.op == "AND":
            pinned = [values for values in found if values is not None]
            return set.intersection(*pinned) if pinned else None
        if any(values is None for values in found):
            return None
        return set().union(*found)
    return None


_ALWAYS = (dt.date.min, dt.date.max)


def date_span(node: Any, fields: set[str]) -> tuple[dt.date, dt.date] | None:
    """[first, after) of the dates in `fields` a row can have when the clause holds."""
    if node is None or isinstance(node, Inverted):
        return _ALWAYS
    if isinstance(node, Junction):
        spans = [date_span(part, fields) for part in node.parts]
        if node.op == "AND":
            if any(span is None for span in spans):
                return None
            first = max(span[0] for span in spans)
            after = min(span[1] for span in spans)
            return (first, after) if first < after else None
        live = [span for span in spans if span is not None]
        if not live:
            return None
        return (min(span[0] for span in live), max(span[1] for span in live))
    if node.field not in fields or node.op in ("<>",):
        return _ALWAYS
    try:
        days = [dt.datetime.strptime(value, "%Y%m%d").date() for value in node.values]
    except (TypeError, ValueError):
        return _ALWAYS
    one = dt.timedelta(days=1)
    if node.op == "IN":
        return (min(days), max(days) + one)
    day = days[0]
    return {
        "=": (day, day + one),
        ">": (day + one, dt.date.max),
        ">=": (day, dt.date.max),
        "<": (dt.date.min, day),
        "<=": (dt.date.min, day + one),
    }[node.op]


# Rendering the company as ECC tables


def _stored_amount(value: Any, currency: str) -> Any:
    """An amount as a CURR field stores it: always two decimals, shifted for JPY and kin."""
    try:
        amount = abs(Decimal(str(value)))
    except InvalidOperation:
        return value
    if currency in ZERO_DECIMAL_CURRENCIES:
        return amount.scaleb(-2)
    return amount


def _split_name(name: str) -> tuple[str, str]:
    """NAME1/NAME2: 35 characters each, split at a word boundary as a clerk would."""
    if len(name) <= 35:
        return name, ""
    cut = name.rfind(" ", 0, 36)
    cut = cut if cut > 0 else 35
    return name[:cut], name[cut:].strip()


def _entry_and_changes(stamps: Iterable[dt.datetime | None], day: dt.date):
    """When a document was entered, and the later stamps that are change documents."""
    known = sorted({stamp for stamp in stamps if stamp is not None})
    if known and known[0].date() == day:
        entry = known[0]
    else:
        entry = dt.datetime.combine(day, dt.time(6, 0), tzinfo=_UTC)
    return entry, [stamp for stamp in known if stamp > entry]


class EccTables:
    """Rows of each table, rendered from the company for the documents a clause can touch."""

    def __init__(self, company: SandboxCompany) -> None:
        self.company = company
        self._lock = threading.Lock()
        # Document number -> posting or order day, learnt as headers are rendered; it plays
        # the part of the database's index on the item tables' document number.
        self.invoice_day: dict[str, dt.date] = {}
        self.order_day: dict[str, dt.date] = {}
        self._valuation: dict[tuple[str, str], tuple[Decimal, str]] | None = None

    def current_day(self) -> dt.date:
        """The sandbox's today: the wall clock, never past the company's last day."""
        return min(dt.datetime.now(_UTC).date(), self.company.end)

    def rows(self, table: Table, clause: Any) -> list[dict[str, Any]]:
        builders: dict[str, Callable[[Any], list[dict]]] = {
            "RBKP": self._invoice_headers,
            "RBCO": lambda c: self._invoice_items(c, "RBCO"),
            "RBMA": lambda c: self._invoice_items(c, "RBMA"),
            "RSEG": lambda c: [],
            "EKKO": self._order_headers,
            "EKPO": lambda c: self._order_items(c, "EKPO"),
            "EKET": lambda c: self._order_items(c, "EKET"),
            "EKKN": lambda c: self._order_items(c, "EKKN"),
            "LFA1": lambda c: self._vendors("LFA1"),
            "LFM1": lambda c: self._vendors("LFM1"),
            "MARA": lambda c: self._materials("MARA"),
            "MAKT": lambda c: self._materials("MAKT"),
            "MBEW": lambda c: self._materials("MBEW"),
            "MARD": lambda c: self._stock_now(),
            "MSEG": self._movements,
            "CDHDR": self._change_documents,
            "T001": lambda c: [
                {"BUKRS": COMPANY_CODE, "BUTXT": "Sandbox Company", "LAND1": "DE", "WAERS": "EUR"}
            ],
            "T001K": lambda c: [{"BWKEY": plant, "BUKRS": COMPANY_CODE} for plant in LOCATIONS],
            "TCURX": lambda c: [
                {"CURRKEY": key, "CURRDEC": "0"} for key in ZERO_DECIMAL_CURRENCIES
            ],
        }
        return builders[table.name](clause)

    def _days(self, span: tuple[dt.date, dt.date] | None) -> list[dt.date]:
        if span is None:
            return []
        first = max(span[0], self.company.start)
        last = min(
            span[1] - dt.timedelta(days=1) if span[1] != dt.date.max else self.company.end,
            self.company.end,
        )
        return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]

    # Invoices

    def _invoices_of_day(self, day: dt.date) -> dict[str, list[dict]]:
        documents: dict[str, list[dict]] = {}
        for record in self.company.records(RecordKind.SPEND, day):
            fields = record.model_dump(mode="python")
            fields["document_type"] = record.document_type.value
            documents.setdefault(record.document_id, []).append(fields)
        for line in self.company.bad_spend_lines(day):
            line = {**line, "updated_at": dt.datetime.fromisoformat(line["updated_at"])}
            documents.setdefault(line["document_id"], []).append(line)
        with self._lock:
            for document_id in documents:
                self.invoice_day[document_id] = day
        return documents

    def _invoice_header(self, document_id: str, lines: list[dict], day: dt.date) -> dict:
        first = lines[0]
        entry, _ = _entry_and_changes((line.get("updated_at") for line in lines), day)
        gross = Decimal(0)
        for line in lines:
            try:
                gross += abs(Decimal(str(line["amount"])))
            except InvalidOperation:
                pass
        document_type = first["document_type"]
        return {
            "BELNR": document_id,
            "GJAHR": str(day.year),
            "BLART": CARD_CHARGE_DOCUMENT_TYPE
            if document_type == SpendDocumentType.CARD_CHARGE.value
            else "RE",
            "BLDAT": day,
            "BUDAT": day,
            "USNAM": "AP_CLERK",
            "CPUDT": entry.date(),
            "CPUTM": entry.time().replace(microsecond=0),
            "XRECH": "" if document_type == SpendDocumentType.CREDIT_NOTE.value else "X",
            "BUKRS": COMPANY_CODE,
            "LIFNR": first.get("vendor_id") or "",
            "WAERS": first["currency"],
            "RMWWR": _stored_amount(gross, first["currency"]),
            "STBLG": "",
            "STJAH": "0000",
            "RBSTAT": "5",
            "BKTXT": "",
        }

    def _invoice_headers(self, clause: Any) -> list[dict]:
        days = self._days_of(clause, "BELNR", {"BUDAT", "BLDAT", "CPUDT"}, self.invoice_day)
        rows = []
        for day in days:
            for document_id, lines in self._invoices_of_day(day).items():
                rows.append(self._invoice_header(document_id, lines, day))
        return rows

    def _days_of(
        self, clause: Any, key: str, date_fields: set[str], index: dict[str, dt.date]
    ) -> list[dt.date]:
        """Days a header clause can touch: by document number when pinned, else by date."""
        pinned = key_values(clause, key)
        if pinned is not None:
            with self._lock:
                known = {index[value] for value in pinned if value in index}
                if all(value in index for value in pinned):
                    return sorted(known)
        return self._days(date_span(clause, date_fields))

    def _documents_for(self, clause: Any, index: dict[str, dt.date], loader) -> list[tuple]:
        wanted = key_values(clause, "BELNR" if index is self.invoice_day else "EBELN")
        with self._lock:
            indexed = wanted is not None and all(key in index for key in wanted)
            days = sorted({index[key] for key in wanted}) if indexed else []
        if not indexed:
            # Items asked for before their header: no index helps, the whole history is read.
            days = self._days(_ALWAYS)
        result = []
        for day in days:
            for key, content in loader(day).items():
                if wanted is None or key in wanted:
                    result.append((key, content, day))
        return result

    def _invoice_items(self, clause: Any, table: str) -> list[dict]:
        rows = []
        for document_id, lines, day in self._documents_for(
            clause, self.invoice_day, self._invoices_of_day
        ):
            for line in lines:
                currency = line["currency"]
                negative = False
                try:
                    negative = Decimal(str(line["amount"])) < 0
                except InvalidOperation:
                    pass
                quantity = line.get("quantity")
                quantity = abs(Decimal(str(quantity))) if quantity not in (None, "") else None
                common = {
                    "BELNR": document_id,
                    "GJAHR": str(day.year),
                    "BUZEI": str(line["line_number"]),
                    "WRBTR": _stored_amount(line["amount"], currency),
                    "SHKZG": "H" if negative else "S",
                    "MWSKZ": "V0",
                }
                if line.get("material_id") and table == "RBMA":
                    rows.append(
                        {
                            **common,
                            "MATNR": line["material_id"],
                            "BWKEY": "WH01",
                            "BWTAR": "",
                            "MENGE": quantity or Decimal(0),
                            "MEINS": line.get("unit") or "",
                        }
                    )
                elif not line.get("material_id") and table == "RBCO":
                    rows.append(
                        {
                            **common,
                            "COBL_NR": "1",
                            "SAKNR": line.get("gl_account") or "",
                            "KOSTL": "1000",
                            "MENGE": quantity or Decimal(0),
                            "MEINS": (line.get("unit") or "") if quantity else "",
                            "SGTXT": line.get("description") or "",
                        }
                    )
        return rows

    # Purchase orders

    def _orders_of_day(self, day: dt.date) -> dict[str, dict]:
        orders: dict[str, dict] = {}
        for header in self.company.records(RecordKind.PURCHASE_ORDER, day):
            orders[header.purchase_order_id] = {
                "header": header,
                "lines": [],
                "removed": [],
                "deleted_at": None,
            }
        for line in self.company.records(RecordKind.PURCHASE_ORDER_LINE, day):
            orders.setdefault(
                line.purchase_order_id,
                {
                    "header": None,
                    "lines": [],
                    "removed": [],
                    "deleted_at": None,
                },
            )["lines"].append(line)
        for key, deleted_day, at in self.company.deleted_since(RecordKind.PURCHASE_ORDER, _EPOCH):
            if deleted_day == day:
                orders.setdefault(
                    key, {"header": None, "lines": [], "removed": [], "deleted_at": None}
                )["deleted_at"] = at
        for key, deleted_day, at in self.company.deleted_since(
            RecordKind.PURCHASE_ORDER_LINE, _EPOCH
        ):
            if deleted_day == day:
                po_id, _, item = key.partition("/")
                if po_id in orders:
                    orders[po_id]["removed"].append((item, at))
        with self._lock:
            for po_id in orders:
                self.order_day[po_id] = day
        return orders

    def _order_headers(self, clause: Any) -> list[dict]:
        days = self._days_of(clause, "EBELN", {"BEDAT", "AEDAT"}, self.order_day)
        rows = []
        for day in days:
            for po_id, order in self._orders_of_day(day).items():
                header = order["header"]
                lines = order["lines"]
                rows.append(
                    {
                        "EBELN": po_id,
                        "BUKRS": COMPANY_CODE,
                        "BSTYP": "F",
                        "BSART": "NB",
                        "LOEKZ": "" if header else "L",
                        "AEDAT": day,
                        "ERNAM": "BUYER",
                        "LIFNR": (header.vendor_id or "") if header else "",
                        "EKORG": PURCHASING_ORG,
                        "EKGRP": "001",
                        "WAERS": header.currency
                        if header
                        else (lines[0].currency if lines else ""),
                        "BEDAT": day,
                        "PROCSTAT": "05",
                    }
                )
        return rows

    def _order_items(self, clause: Any, table: str) -> list[dict]:
        rows = []
        for po_id, order, day in self._documents_for(clause, self.order_day, self._orders_of_day):
            header = order["header"]
            status = header.order_status if header else "open"
            deletion = "" if header else "L"
            for line in order["lines"]:
                item = str(line.line_number)
                if table == "EKPO":
                    rows.append(
                        {
                            "EBELN": po_id,
                            "EBELP": item,
                            "LOEKZ": deletion,
                            "AEDAT": day,
                            "TXZ01": line.description or "",
                            "MATNR": line.material_id or "",
                            "WERKS": "WH01",
                            "LGORT": STORAGE_LOCATION,
                            "MATKL": "",
                            "MENGE": line.quantity,
                            "MEINS": line.unit or "",
                            "NETPR": _stored_amount(line.unit_price, line.currency),
                            "PEINH": Decimal(1),
                            "NETWR": _stored_amount(line.amount, line.currency),
                            "KNTTP": "K",
                            "ELIKZ": "X" if status in ("received", "closed") else "",
                            "EREKZ": "X" if status == "closed" else "",
                        }
                    )
                elif table == "EKET":
                    rows.append(
                        {
                            "EBELN": po_id,
                            "EBELP": item,
                            "ETENR": "1",
                            "EINDT": line.delivery_date,
                            "MENGE": line.quantity,
                        }
                    )
                else:
                    rows.append(
                        {
                            "EBELN": po_id,
                            "EBELP": item,
                            "ZEKKN": "1",
                            "LOEKZ": deletion,
                            "SAKTO": line.gl_account or "",
                            "KOSTL": "1000",
                            "MENGE": line.quantity,
                        }
                    )
            if table == "EKPO":
                for item, _ in order["removed"]:
                    rows.append(
                        {
                            "EBELN": po_id,
                            "EBELP": item,
                            "LOEKZ": "L",
                            "AEDAT": day,
                            "TXZ01": "",
                            "MATNR": "",
                            "WERKS": "WH01",
                            "LGORT": STORAGE_LOCATION,
                            "MATKL": "",
                            "MENGE": Decimal(0),
                            "MEINS": "",
                            "NETPR": Decimal(0),
                            "PEINH": Decimal(1),
                            "NETWR": Decimal(0),
                            "KNTTP": "",
                            "ELIKZ": "",
                            "EREKZ": "",
                        }
                    )
        return rows

    # Master data

    def _vendors(self, table: str) -> list[dict]:
        rows = []
        for vendor in self.company.vendors():
            # Every vendor exists from the company's first day; later stamps are changes.
            created = self.company.start
            if table == "LFA1":
                name1, name2 = _split_name(vendor.name)
                rows.append(
                    {
                        "LIFNR": vendor.vendor_id,
                        "LAND1": vendor.country or "",
                        "NAME1": name1,
                        "NAME2": name2,
                        "ORT01": "",
                        "KTOKK": "KRED",
                        "BRSCH": (vendor.industry_code or "")[:4],
                        "STCEG": vendor.tax_id or "",
                        "ERDAT": created,
                        "ERNAM": "MASTERDATA",
                        "LOEVM": "",
                        "SPERR": "",
                    }
                )
            else:
                rows.append(
                    {
                        "LIFNR": vendor.vendor_id,
                        "EKORG": PURCHASING_ORG,
                        "WAERS": vendor.currency or "",
                        "ZTERM": "0001",
                        "LOEVM": "",
                    }
                )
        for key, _, _ in self.company.deleted_since(RecordKind.VENDOR, _EPOCH):
            if table == "LFA1":
                rows.append(
                    {
                        "LIFNR": key,
                        "LAND1": "",
                        "NAME1": "",
                        "NAME2": "",
                        "ORT01": "",
                        "KTOKK": "KRED",
                        "BRSCH": "",
                        "STCEG": "",
                        "ERDAT": self.company.start,
                        "ERNAM": "MASTERDATA",
                        "LOEVM": "X",
                        "SPERR": "X",
                    }
                )
        return rows

    def valuation(self) -> dict[tuple[str, str], tuple[Decimal, str]]:
        if self._valuation is None:
            first_day = self.company.business_days()[0]
            self._valuation = {
                (snapshot.material_id, snapshot.location): (
                    snapshot.unit_cost or Decimal(0),
                    snapshot.currency or "EUR",
                )
                for snapshot in self.company.records(RecordKind.INVENTORY, first_day)
            }
        return self._valuation

    def _materials(self, table: str) -> list[dict]:
        rows = []
        valuation = self.valuation() if table == "MBEW" else {}
        for material in self.company.materials():
            changed = material.updated_at.date() if material.updated_at else self.company.start
            if table == "MARA":
                rows.append(
                    {
                        "MATNR": material.material_id,
                        "ERSDA": self.company.start,
                        "LAEDA": changed,
                        "LVORM": "",
                        "MTART": "ROH",
                        "MATKL": material.material_group or "",
                        "MEINS": material.base_unit or "",
                        "EXTWG": material.commodity_code or "",
                    }
                )
            elif table == "MAKT":
                rows.append(
                    {"MATNR": material.material_id, "SPRAS": "E", "MAKTX": material.description}
                )
            else:
                account = _ACCOUNT_BY_NAICS.get(material.commodity_code or "", "5900")
                for plant in LOCATIONS:
                    unit_cost, _ = valuation.get((material.material_id, plant), (Decimal(0), "EUR"))
                    price = (unit_cost * 100).quantize(Decimal("0.01"))
                    rows.append(
                        {
                            "MATNR": material.material_id,
                            "BWKEY": plant,
                            "BWTAR": "",
                            "LVORM": "",
                            "LBKUM": Decimal(0),
                            "BKLAS": VALUATION_CLASS_BY_ACCOUNT.get(account, "3900"),
                            "VPRSV": "S",
                            "VERPR": price,
                            "STPRS": price,
                            "PEINH": Decimal(100),
                        }
                    )
        if table == "MARA":
            for key, _, at in self.company.deleted_since(RecordKind.MATERIAL, _EPOCH):
                rows.append(
                    {
                        "MATNR": key,
                        "ERSDA": self.company.start,
                        "LAEDA": at.date(),
                        "LVORM": "X",
                        "MTART": "ROH",
                        "MATKL": "",
                        "MEINS": "",
                        "EXTWG": "",
                    }
                )
        return rows

    # Stock

    def _stock_on(self, day: dt.date) -> dict[tuple[str, str], tuple[Decimal, str]]:
        days = self.company.business_days(self.company.start, day)
        if not days:
            return {}
        return {
            (s.material_id, s.location): (s.quantity, s.unit or "")
            for s in self.company.records(RecordKind.INVENTORY, days[-1])
        }

    def _stock_now(self) -> list[dict]:
        return [
            {
                "MATNR": material,
                "WERKS": plant,
                "LGORT": STORAGE_LOCATION,
                "LVORM": "",
                "LABST": quantity,
                "INSME": Decimal(0),
                "SPEME": Decimal(0),
            }
            for (material, plant), (quantity, _) in self._stock_on(self.current_day()).items()
        ]

    def _movements(self, clause: Any) -> list[dict]:
        """One goods movement per material and plant per business day: that day's change."""
        span = date_span(clause, {"BUDAT_MKPF"})
        days = [
            day
            for day in self._days(span)
            if day <= self.current_day() and self.company.is_business_day(day)
        ]
        rows = []
        for day in days:
            before = self._stock_on(day - dt.timedelta(days=1))
            after = self._stock_on(day)
            ordinal = (day - self.company.start).days
            for plant_index, plant in enumerate(LOCATIONS):
                line = 0
                for (material, location), (quantity, unit) in after.items():
                    if location != plant:
                        continue
                    change = quantity - before.get((material, plant), (Decimal(0), unit))[0]
                    if change == 0:
                        continue
                    line += 1
                    rows.append(
                        {
                            "MBLNR": f"49{ordinal:05d}{plant_index:03d}",
                            "MJAHR": str(day.year),
                            "ZEILE": str(line),
                            "BWART": "101" if change > 0 else "261",
                            "MATNR": material,
                            "WERKS": plant,
                            "LGORT": STORAGE_LOCATION,
                            "SHKZG": "S" if change > 0 else "H",
                            "MENGE": abs(change),
                            "MEINS": unit,
                            "BUDAT_MKPF": day,
                        }
                    )
        return rows

    # Change documents

    def _change_documents(self, clause: Any) -> list[dict]:
        classes = key_values(clause, "OBJECTCLAS") or {"INCOMINGINVOICE", "EINKBELEG", "KRED"}
        span = date_span(clause, {"UDATE"})
        since = None
        if span is not None and span[0] != dt.date.min:
            since = dt.datetime.combine(span[0], dt.time(), tzinfo=_UTC)
        wanted = key_values(clause, "OBJECTID")
        rows: list[dict] = []
        if "INCOMINGINVOICE" in classes:
            rows += self._invoice_changes(since, wanted)
        if "EINKBELEG" in classes:
            rows += self._order_changes(since, wanted)
        if "KRED" in classes:
            for vendor in self.company.vendors():
                stamp = vendor.updated_at
                if stamp and stamp.date() > self.company.start:
                    rows.append(_change_row("KRED", vendor.vendor_id, 1, stamp, "XK02"))
        return rows

    def _invoice_changes(self, since: dt.datetime | None, wanted: set[str] | None) -> list[dict]:
        documents: dict[str, dt.date] = {}
        if wanted is not None:
            with self._lock:
                for object_id in wanted:
                    document_id = object_id[:10].rstrip()
                    if document_id in self.invoice_day:
                        documents[document_id] = self.invoice_day[document_id]
        elif since is not None:
            for record in self.company.changed_since(RecordKind.SPEND, since):
                documents[record.document_id] = record.transaction_date
        else:
            return []
        rows = []
        for day in sorted(set(documents.values())):
            for document_id, lines in self._invoices_of_day(day).items():
                if document_id not in documents:
                    continue
                _, changes = _entry_and_changes((line.get("updated_at") for line in lines), day)
                object_id = f"{document_id:<10}{day.year}"
                rows += [
                    _change_row("INCOMINGINVOICE", object_id, number, stamp, "MIR4")
                    for number, stamp in enumerate(changes, start=1)
                ]
        return rows

    def _order_changes(self, since: dt.datetime | None, wanted: set[str] | None) -> list[dict]:
        orders: dict[str, dt.date] = {}
        if wanted is not None:
            with self._lock:
                orders = {key: self.order_day[key] for key in wanted if key in self.order_day}
        elif since is not None:
            for kind in (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE):
                for record in self.company.changed_since(kind, since):
                    orders[record.purchase_order_id] = record.order_date
            for kind in (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE):
                for key, day, _ in self.company.deleted_since(kind, since):
                    if day is not None:
                        orders[key.partition("/")[0]] = day
        else:
            return []
        rows = []
        for day in sorted(set(orders.values())):
            for po_id, order in self._orders_of_day(day).items():
                if po_id not in orders:
                    continue
                header = order["header"]
                stamps = [header.updated_at if header else None]
                stamps += [line.updated_at for line in order["lines"]]
                stamps += [at for _, at in order["removed"]] + [order["deleted_at"]]
                _, changes = _entry_and_changes(stamps, day)
                rows += [
                    _change_row("EINKBELEG", po_id, number, stamp, "ME22N")
                    for number, stamp in enumerate(changes, start=1)
                ]
        return rows


def _change_row(
    object_class: str, object_id: str, number: int, stamp: dt.datetime, transaction: str
) -> dict:
    utc = stamp.astimezone(_UTC)
    return {
        "OBJECTCLAS": object_class,
        "OBJECTID": object_id,
        "CHANGENR": f"{number:010d}",
        "USERNAME": "AP_CLERK",
        "UDATE": utc.date(),
        "UTIME": utc.time().replace(microsecond=0),
        "TCODE": transaction,
        "CHANGE_IND": "U",
    }


# SOAP


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ElementTree.Element, name: str) -> ElementTree.Element | None:
    return next((child for child in element if _local(child.tag) == name), None)


def _items(element: ElementTree.Element | None, field: str) -> list[str]:
    if element is None:
        return []
    values = []
    for item in element:
        node = _child(item, field)
        values.append(node.text or "" if node is not None else "")
    return values


def soap_fault(name: str, text: str) -> Response:
    body = (
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_NAMESPACE}"><SOAP-ENV:Body>'
        "<SOAP-ENV:Fault><faultcode>SOAP-ENV:Server</faultcode>"
        f"<faultstring>{escape(name)}</faultstring><detail>"
        f'<rfc:RFC_READ_TABLE.Exception xmlns:rfc="{RFC_NAMESPACE}">'
        f"<Name>{escape(name)}</Name><Text>{escape(text)}</Text>"
        "</rfc:RFC_READ_TABLE.Exception></detail></SOAP-ENV:Fault>"
        "</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )
    return Response(body, status=500, mimetype="text/xml")


def _icm_overloaded(fault: Fault) -> Response:
    # The ICM in front of the RFC handler sheds load with 503 and Retry-After, not 429.
    response = Response(
        "<html><body>503 Service Unavailable</body></html>", status=503, mimetype="text/html"
    )
    response.headers["Retry-After"] = str(max(1, math.ceil(fault.retry_after)))
    return response


class EccSoapRfc:
    """The SOAP RFC endpoint of one sandbox ECC client."""

    def __init__(self, company: SandboxCompany, faults: FaultPlan, credentials: dict) -> None:
        self.tables = EccTables(company)
        self.faults = faults
        self.username = credentials["username"]
        self.password = credentials["password"]
        self._sessions: set[str] = set()
        self._lock = threading.Lock()
        # The last few query results, so paging through a large table renders it once.
        self._results: OrderedDict[tuple, list[dict]] = OrderedDict()

    def __call__(self, environ, start_response):
        return self.dispatch(Request(environ))(environ, start_response)

    def _expire_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    def dispatch(self, request: Request) -> Response:
        forced = fault_response(
            self.faults.take(), throttled=_icm_overloaded, token_expired=self._expire_sessions
        )
        if forced is not None:
            return forced
        if request.path != SOAP_RFC_PATH:
            return Response("Service cannot be reached", status=404, mimetype="text/html")
        if request.method != "POST":
            return Response("Method not allowed", status=405, mimetype="text/html")
        if request.args.get("sap-client", SAP_CLIENT) != SAP_CLIENT:
            return self._refuse()
        cookie = None
        if not self._logged_on(request):
            return self._refuse()
        if request.headers.get("Authorization"):
            cookie = secrets.token_urlsafe(24)
            with self._lock:
                self._sessions.add(cookie)
        try:
            response = self.read_table(request.get_data())
        except RfcException as error:
            response = soap_fault(error.name, error.text)
        if cookie:
            response.set_cookie(
                f"SAP_SESSIONID_{SYSTEM_ID}_{SAP_CLIENT}",
                cookie,
                httponly=True,
                path=request.script_root or "/",
            )
        return response

    def _logged_on(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return secrets.compare_digest(user.upper(), self.username) and (
                secrets.compare_digest(password, self.password)
            )
        session = request.cookies.get(f"SAP_SESSIONID_{SYSTEM_ID}_{SAP_CLIENT}")
        with self._lock:
            return session is not None and session in self._sessions

    def _refuse(self) -> Response:
        response = Response(
            "<html><body>Logon failed</body></html>", status=401, mimetype="text/html"
        )
        response.headers["WWW-Authenticate"] = (
            f'Basic realm="SAP NetWeaver Application Server [{SYSTEM_ID}/{SAP_CLIENT}]"'
        )
        return response

    def read_table(self, body: bytes) -> Response:
        try:
            envelope = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            raise RfcException("SOAP_PARSE_ERROR", "request is not XML") from None
        call = next(
            (node for node in envelope.iter() if _local(node.tag) == "RFC_READ_TABLE"), None
        )
        if call is None:
            raise RfcException("FUNCTION_NOT_FOUND", "only RFC_READ_TABLE is exposed here")
        name = (getattr(_child(call, "QUERY_TABLE"), "text", "") or "").strip().upper()
        table = TABLES.get(name)
        if table is None:
            raise RfcException("TABLE_NOT_AVAILABLE", f"table {name} is not available")
        delimiter = getattr(_child(call, "DELIMITER"), "text", "") or ""
        skips = int((getattr(_child(call, "ROWSKIPS"), "text", "") or "0").strip() or 0)
        count = int((getattr(_child(call, "ROWCOUNT"), "text", "") or "0").strip() or 0)
        where = "\n".join(_items(_child(call, "OPTIONS"), "TEXT"))
        fields = [f.strip().upper() for f in _items(_child(call, "FIELDS"), "FIELDNAME")]
        fields = [f for f in fields if f] or list(table.columns)
        unknown = [f for f in fields if f not in table.columns]
        if unknown:
            raise RfcException("FIELD_NOT_VALID", f"field {unknown[0]} not in {name}")
        columns = [table.columns[f] for f in fields]
        width = sum(c.length for c in columns) + len(delimiter) * (len(columns) - 1)
        if width > MAX_LINE:
            raise RfcException("DATA_BUFFER_EXCEEDED", f"row width {width} exceeds 512")
        rows = self._query(table, where, skips)
        page = rows[skips : skips + count] if count else rows[skips:]
        offsets, position = [], 0
        for column in columns:
            offsets.append(position)
            position += column.length + len(delimiter)
        data = "".join(
            "<item><WA>"
            + escape(delimiter.join(db_text(row.get(c.name), c) for c in columns))
            + "</WA></item>"
            for row in page
        )
        field_items = "".join(
            f"<item><FIELDNAME>{c.name}</FIELDNAME><OFFSET>{offset:06d}</OFFSET>"
            f"<LENGTH>{c.length:06d}</LENGTH><TYPE>{c.abap_type}</TYPE>"
            f"<FIELDTEXT>{escape(c.text)}</FIELDTEXT></item>"
            for c, offset in zip(columns, offsets, strict=True)
        )
        body = (
            f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_NAMESPACE}"><SOAP-ENV:Body>'
            f'<urn:RFC_READ_TABLE.Response xmlns:urn="{RFC_NAMESPACE}">'
            f"<DATA>{data}</DATA><FIELDS>{field_items}</FIELDS><OPTIONS/>"
            "</urn:RFC_READ_TABLE.Response></SOAP-ENV:Body></SOAP-ENV:Envelope>"
        )
        return Response(body, status=200, mimetype="text/xml")

    def _query(self, table: Table, where: str, skips: int) -> list[dict]:
        """The rows a clause selects, in key order; a later page reuses the first page's run,
        so paging through a large table renders it once."""
        cache_key = (table.name, where)
        if skips:
            with self._lock:
                cached = self._results.get(cache_key)
            if cached is not None:
                return cached
        clause = _WhereParser(where, table).parse()
        rows = [row for row in self.tables.rows(table, clause) if holds(clause, row, table)]
        rows.sort(
            key=lambda row: tuple(db_text(row.get(key), table.columns[key]) for key in table.keys)
        )
        with self._lock:
            self._results[cache_key] = rows
            self._results.move_to_end(cache_key)
            while len(self._results) > 8:
                self._results.popitem(last=False)
        return rows


def create_app(company: SandboxCompany, faults: FaultPlan, credentials: dict) -> EccSoapRfc:
    """The WSGI application serving one sandbox ECC client over SOAP RFC."""
    return EccSoapRfc(company, faults, credentials)


__all__ = ["SANDBOX_CREDENTIALS", "SANDBOX_OPTIONS", "SECRET_FIELDS", "TABLES", "create_app"]
