"""Sage Intacct as an ERP source: the XML Web Services gateway, DTD 3.0 (`readByQuery`).

What is read, and from where:

* spend: AP bills (`APBILL` with `APBILLITEM` lines), AP adjustments (`APADJUSTMENT` with
  `APADJUSTMENTITEM`; negative amounts are supplier credit memos) and charge card
  transactions (`CCTRANSACTION` with `CCTRANSACTIONENTRY`); draft documents are not spend yet;
* purchase orders: purchasing transactions (`PODOCUMENT`/`PODOCUMENTENTRY`) of the transaction
  definition `purchase_order_docparid` ("Purchase Order"); state Converted means received;
* vendors: `VENDOR`; materials: `ITEM` (product line as material group);
* on hand today: `ITEMWAREHOUSEINFO` (item warehouse details). The object name and its
  RECORDNO, ITEMID and WAREHOUSEID fields are published (developer.intacct.com, Inventory
  Control, "Item Warehouse Details": lookup, query and readByQuery examples); the on-hand
  quantity field is not listed there nor in the SDK fixtures, so `ONHAND` stays unconfirmed
  until a live company's `lookup` names it. A company without it answers readByQuery with a
  failure (a clear error); an empty value is a rejected row, never a silent zero. Rows are
  summed per item and warehouse, with the item's base unit and no cost;
* on hand on a past day: a Platform Services custom object of daily snapshots, named by
  `onhand_snapshot_object` (fields SNAPSHOT_DATE, ITEMID, WAREHOUSEID, QUANTITY, UNIT,
  UNIT_COST, VALUE, CURRENCY), read with `readByQuery` like any standard object;
* deletions: `AUDITHISTORY` rows with ACCESSMODE "Delete".

Every request carries the Web Services sender id and password in `<control>`. The first call
logs in (`getAPISession` with user, company and password) and later calls use the session id,
posted to the endpoint the session names when it is on the configured host. A session that is
no longer valid fails authentication inside an HTTP 200 answer; the source logs in once more
and repeats the call. Paging is `readByQuery` (pagesize at most 1000) and `readMore` with the
`resultId`; a result set that ran ahead of us (a page lost in transit) or expired is read again
from the start, and records already passed on are not repeated. The change filter is
`WHENMODIFIED >=` (whole seconds, inclusive); dates are MM/DD/YYYY in the company's time zone.
Intacct reports its rate limit as an error inside an HTTP 200 answer (GW-0010); the wait is
the Retry-After header when present, else `throttle_wait_seconds`.

AP lines carry no quantity; companies that record one use a line custom field, named by
`line_quantity_field`. Units come from the item master, capital expenditure from the GL
account category. The NAICS code of an item and the industry of a vendor are read from the
fields named by `item_commodity_field` and `vendor_industry_field` when the company keeps them.
Responses are parsed with the standard library's ElementTree, which resolves no external
entities and, with the bundled expat, refuses entity expansion bombs.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import ClassVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import requests
from pydantic import Field, PrivateAttr, ValidationError

from erp_connector_dagster.erp.base import (
    ChangeSummary,
    ErpSource,
    FirstSightings,
    LatestVersions,
    RecordBatch,
    RecordRejected,
    SyncWindow,
    required_decimal,
    resolve_secret,
)
from erp_connector_dagster.erp.http import (
    ErpAuthError,
    ErpHttpClient,
    ErpRequestError,
    RetryableError,
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

GATEWAY_PATH = "ia/xml/xmlgw.phtml"
MAX_PAGE_SIZE = 1000
KEYS_PER_QUERY = 200
RESULT_SET_RESTARTS = 3
RATE_LIMIT_ERRORS = frozenset({"GW-0010"})
# Control-level failures that mean the Web Services sender id or password (or its authorization
# for the company) was refused; others there (XL03000003, an XML schema error; GW-0011, an
# invalid request) are request errors, not credential ones. Source: developer.intacct.com,
# Web Services "Error Handling", and the response fixtures of Intacct/intacct-sdk-php.
SENDER_REFUSED_ERRORS = frozenset({"XL03000006"})
NOT_YET_SPEND = frozenset({"draft"})
VOID_STATES = frozenset({"reversed", "reversal", "voided"})
RECEIVED_STATES = frozenset({"converted", "converted by line"})

# header object: (line object, line description field, the documents it holds)
SPEND_OBJECTS: dict[str, tuple[str, str, SpendDocumentType]] = {
    "APBILL": ("APBILLITEM", "ENTRYDESCRIPTION", SpendDocumentType.INVOICE),
    "APADJUSTMENT": ("APADJUSTMENTITEM", "ENTRYDESCRIPTION", SpendDocumentType.CREDIT_NOTE),
    "CCTRANSACTION": ("CCTRANSACTIONENTRY", "DESCRIPTION", SpendDocumentType.CARD_CHARGE),
}
SPEND_HEADER_FIELDS = [
    "RECORDNO",
    "RECORDID",
    "STATE",
    "WHENCREATED",
    "CURRENCY",
    "BASECURR",
    "WHENMODIFIED",
]
SPEND_LINE_FIELDS = [
    "RECORDNO",
    "RECORDKEY",
    "LINE_NO",
    "ACCOUNTNO",
    "TRX_AMOUNT",
    "ITEMID",
    "VENDORID",
    "CURRENCY",
]
PO_HEADER_FIELDS = [
    "RECORDNO",
    "DOCNO",
    "DOCID",
    "STATE",
    "WHENCREATED",
    "CUSTVENDID",
    "CURRENCY",
    "TRX_TOTAL",
    "WHENMODIFIED",
]
PO_LINE_FIELDS = [
    "RECORDNO",
    "DOCHDRNO",
    "LINE_NO",
    "ITEMID",
    "ITEMDESC",
    "QUANTITY",
    "UNIT",
    "TRX_PRICE",
    "TRX_VALUE",
    "CURRENCY",
    "NEEDBYDATE",
]
VENDOR_FIELDS = [
    "RECORDNO",
    "VENDORID",
    "NAME",
    "STATUS",
    "TAXID",
    "CURRENCY",
    "DISPLAYCONTACT.MAILADDRESS.COUNTRYCODE",
    "WHENMODIFIED",
]
ITEM_FIELDS = [
    "RECORDNO",
    "ITEMID",
    "NAME",
    "STATUS",
    "PRODUCTLINEID",
    "BASEUOM",
    "ITEMGLGROUP.EXPENSEACCOUNT.ACCTNO",
    "WHENMODIFIED",
]
GL_ACCOUNT_FIELDS = ["RECORDNO", "ACCOUNTNO", "CATEGORY"]
ON_HAND_OBJECT = "ITEMWAREHOUSEINFO"
# ONHAND: not confirmed by a published source (see the module docstring).
ON_HAND_FIELDS = ["RECORDNO", "ITEMID", "WAREHOUSEID", "ONHAND"]
SNAPSHOT_FIELDS = [
    "RECORDNO",
    "SNAPSHOT_DATE",
    "ITEMID",
    "WAREHOUSEID",
    "QUANTITY",
    "UNIT",
    "UNIT_COST",
    "VALUE",
    "CURRENCY",
]


class _ResultSetLost(Exception):
    """readMore served pages we never received, or the result set expired."""


def _text(parent: ET.Element, tag: str, value: str | None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = value
    return element


def quote(value: str) -> str:
    """A readByQuery string literal: single quotes and backslashes escaped with backslashes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _optional_decimal(value: str | None, name: str) -> Decimal | None:
    return None if value is None or not value.strip() else required_decimal(value, name)


def parse_date(value: str | None, name: str = "date") -> dt.date:
    """An Intacct MM/DD/YYYY date (a time after it, as on timestamps, is ignored)."""
    words = (value or "").split()
    try:
        return dt.datetime.strptime(words[0] if words else "", "%m/%d/%Y").date()
    except ValueError:
        raise RecordRejected(f"{name} is not an MM/DD/YYYY date: {value!r}") from None


def parse_timestamp(value: str | None, zone: dt.tzinfo = dt.timezone.utc) -> dt.datetime | None:
    """An Intacct MM/DD/YYYY HH:MM:SS timestamp in `zone`, as UTC."""
    if not value or not value.strip():
        return None
    text = " ".join(value.split())
    for pattern in ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y"):
        try:
            moment = dt.datetime.strptime(text, pattern)
        except ValueError:
            continue
        return moment.replace(tzinfo=zone).astimezone(dt.timezone.utc)
    return None


def row_fields(element: ET.Element, prefix: str = "") -> dict[str, str]:
    """A record element as field -> text; nested related objects become dotted names."""
    fields: dict[str, str] = {}
    for child in element:
        name = f"{prefix}{child.tag.upper()}"
        if len(child):
            fields.update(row_fields(child, f"{name}."))
        else:
            fields[name] = (child.text or "").strip()
    return fields


def _blank(value: str | None) -> str | None:
    return value if value else None


@dataclass
class IntacctReference:
    """The company's lists that complete a line: item units and accounts, GL categories."""

    item_units: dict[str, str] = field(default_factory=dict)
    item_expense_accounts: dict[str, str] = field(default_factory=dict)
    account_categories: dict[str, str] = field(default_factory=dict)
    capex_categories: frozenset[str] = frozenset({"Fixed Assets"})

    def is_capex(self, account: str | None) -> bool:
        return self.account_categories.get(account or "") in self.capex_categories


def vendor_from_row(
    row: dict[str, str],
    connection: str,
    industry_field: str | None = None,
    zone: dt.tzinfo = dt.timezone.utc,
) -> Vendor:
    """A VENDOR record as a canonical vendor."""
    if not row.get("VENDORID"):
        raise RecordRejected("VENDORID is missing")
    return Vendor(
        connection=connection,
        source_id=f"VENDOR:{row['VENDORID']}",
        updated_at=parse_timestamp(row.get("WHENMODIFIED"), zone),
        vendor_id=row["VENDORID"],
        name=row.get("NAME") or row["VENDORID"],
        country=_blank(row.get("DISPLAYCONTACT.MAILADDRESS.COUNTRYCODE")),
        industry_code=_blank(row.get(industry_field.upper())) if industry_field else None,
        tax_id=_blank(row.get("TAXID")),
        currency=_blank(row.get("CURRENCY")),
    )


def material_from_row(
    row: dict[str, str],
    connection: str,
    commodity_field: str | None = None,
    zone: dt.tzinfo = dt.timezone.utc,
) -> Material:
    """An ITEM record as a canonical material."""
    if not row.get("ITEMID"):
        raise RecordRejected("ITEMID is missing")
    return Material(
        connection=connection,
        source_id=f"ITEM:{row['ITEMID']}",
        updated_at=parse_timestamp(row.get("WHENMODIFIED"), zone),
        material_id=row["ITEMID"],
        description=row.get("NAME") or row["ITEMID"],
        material_group=_blank(row.get("PRODUCTLINEID")),
        base_unit=_blank(row.get("BASEUOM")),
        commodity_code=_blank(row.get(commodity_field.upper())) if commodity_field else None,
    )


def master_from_rows(
    kind: RecordKind,
    rows: list[dict[str, str]],
    connection: str,
    custom_field: str | None = None,
    zone: dt.tzinfo = dt.timezone.utc,
) -> tuple[list[CanonicalRecord], list[RejectedRecord]]:
    """VENDOR or ITEM rows as canonical vendors or materials; a bad row is rejected, not lost."""
    parse, key, prefix = (
        (vendor_from_row, "VENDORID", "VENDOR")
        if kind is RecordKind.VENDOR
        else (material_from_row, "ITEMID", "ITEM")
    )
    records: list[CanonicalRecord] = []
    rejected = []
    for row in rows:
        try:
            records.append(parse(row, connection, custom_field, zone))
        except (RecordRejected, ValidationError, ValueError, KeyError) as error:
            rejected.append(
                RejectedRecord(
                    connection=connection,
                    kind=kind,
                    source_id=f"{prefix}:{row.get(key) or row.get('RECORDNO')}",
                    reason=_reason(error),
                    payload=row,
                )
            )
    return records, rejected


def _validation(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"


def _reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return _validation(error)
    if isinstance(error, KeyError):
        return f"{error.args[0]} is missing"
    return str(error)


def snapshot_from_row(row: dict[str, str], connection: str) -> InventorySnapshot:
    """A row of the daily on-hand snapshot object as a canonical inventory snapshot."""
    day = parse_date(row.get("SNAPSHOT_DATE"), "SNAPSHOT_DATE")
    if not row.get("ITEMID") or not row.get("WAREHOUSEID"):
        raise RecordRejected("ITEMID or WAREHOUSEID is missing")
    return InventorySnapshot(
        connection=connection,
        source_id=f"SNAPSHOT:{row.get('RECORDNO')}",
        snapshot_date=day,
        material_id=row["ITEMID"],
        location=row["WAREHOUSEID"],
        quantity=required_decimal(row.get("QUANTITY"), "QUANTITY"),
        unit=_blank(row.get("UNIT")),
        unit_cost=_optional_decimal(row.get("UNIT_COST"), "UNIT_COST"),
        value=_optional_decimal(row.get("VALUE"), "VALUE"),
        currency=_blank(row.get("CURRENCY")),
    )


def spend_from_rows(
    header_object: str,
    header: dict[str, str],
    lines: list[dict[str, str]],
    connection: str,
    reference: IntacctReference | None = None,
    quantity_field: str | None = None,
    zone: dt.tzinfo = dt.timezone.utc,
) -> tuple[list[SpendRecord], list[RejectedRecord]]:
    """One AP bill, AP adjustment or card transaction with its lines, as spend records."""
    reference = reference or IntacctReference()
    _, description_field, document_type = SPEND_OBJECTS[header_object]
    source_id = f"{header_object}:{header.get('RECORDNO')}"
    state = (header.get("STATE") or "").lower()
    try:
        day = parse_date(header.get("WHENCREATED"), "WHENCREATED")
    except RecordRejected as error:
        return [], [
            RejectedRecord(
                connection=connection,
                kind=RecordKind.SPEND,
                source_id=source_id,
                reason=str(error),
                payload={"header": header, "lines": lines},
            )
        ]
    if not lines:
        # Every bill, adjustment and card transaction has at least one line: none read means
        # the lines were not readable (permissions, a lost page), not that there is no spend.
        return [], [
            RejectedRecord(
                connection=connection,
                kind=RecordKind.SPEND,
                source_id=source_id,
                reason=f"no {SPEND_OBJECTS[header_object][0]} lines were read for the document",
                payload={"header": header, "lines": []},
                partition_date=day,
            )
        ]
    records, rejected = [], []
    numbered: list[tuple[int | None, str | None, dict[str, str]]] = []
    for line in lines:
        try:
            numbered.append((_line_number(line), None, line))
        except RecordRejected as error:
            numbered.append((None, str(error), line))
    taken: set[int] = set()
    for number, reason, line in sorted(
        numbered, key=lambda entry: (entry[0] is None, entry[0] or 0)
    ):
        try:
            if number is None:
                raise RecordRejected(reason or "LINE_NO is missing")
            if number in taken:
                # Two lines under one number would be one canonical line: keep both visible.
                raise RecordRejected(f"LINE_NO {number} appears twice on the document")
            taken.add(number)
            amount = required_decimal(line.get("TRX_AMOUNT"), "TRX_AMOUNT")
            vendor_id = line.get("VENDORID") or header.get("VENDORID") or None
            material_id = _blank(line.get("ITEMID"))
            quantity = (
                _optional_decimal(line.get(quantity_field.upper()), quantity_field)
                if quantity_field
                else None
            )
            currency = (
                header.get("CURRENCY") or line.get("CURRENCY") or header.get("BASECURR") or ""
            )
            if not currency:
                raise RecordRejected("CURRENCY is missing (and no BASECURR)")
            kind = document_type
            if header_object == "APADJUSTMENT" and amount > 0:
                kind = SpendDocumentType.INVOICE  # a credit memo raises what is owed
            records.append(
                SpendRecord(
                    connection=connection,
                    source_id=source_id,
                    updated_at=parse_timestamp(header.get("WHENMODIFIED"), zone),
                    status=RecordStatus.VOIDED if state in VOID_STATES else RecordStatus.ACTIVE,
                    document_id=header.get("RECORDID") or header["RECORDNO"],
                    line_number=number,
                    document_type=kind,
                    transaction_date=day,
                    vendor_id=vendor_id,
                    material_id=material_id,
                    gl_account=_blank(line.get("ACCOUNTNO")),
                    description=_blank(line.get(description_field)),
                    amount=amount,
                    currency=currency,
                    quantity=quantity,
                    unit=reference.item_units.get(material_id) if material_id else None,
                    is_capex=reference.is_capex(line.get("ACCOUNTNO")),
                )
            )
        except (RecordRejected, ValidationError, ValueError, KeyError) as error:
            reason = _reason(error)
            rejected.append(
                RejectedRecord(
                    connection=connection,
                    kind=RecordKind.SPEND,
                    source_id=source_id,
                    reason=f"line {line.get('LINE_NO')}: {reason}",
                    payload={"header": header, "line": line},
                    partition_date=day,
                )
            )
    return records, rejected


def _line_number(line: dict[str, str]) -> int:
    """LINE_NO as a whole number; a line without one cannot be told from its neighbours."""
    text = (line.get("LINE_NO") or "").strip()
    if not text:
        raise RecordRejected("LINE_NO is missing")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise RecordRejected(f"LINE_NO is not a number: {text[:20]!r}") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise RecordRejected(f"LINE_NO is not a whole number: {text[:20]!r}")
    return int(number)


def purchase_order_from_rows(
    header: dict[str, str],
    lines: list[dict[str, str]],
    connection: str,
    reference: IntacctReference | None = None,
    zone: dt.tzinfo = dt.timezone.utc,
) -> tuple[list[CanonicalRecord], list[RejectedRecord]]:
    """A purchasing transaction (Purchase Order) and its lines as canonical records."""
    reference = reference or IntacctReference()
    source_id = f"PODOCUMENT:{header.get('RECORDNO')}"
    try:
        state = (header.get("STATE") or "").lower()
        common = {
            "connection": connection,
            "source_id": source_id,
            "updated_at": parse_timestamp(header.get("WHENMODIFIED"), zone),
            "purchase_order_id": header.get("DOCNO") or header["RECORDNO"],
            "order_date": parse_date(header.get("WHENCREATED"), "WHENCREATED"),
            "currency": header.get("CURRENCY") or "",
        }
        if not common["currency"]:
            raise RecordRejected("CURRENCY is missing")
        records: list[CanonicalRecord] = [
            PurchaseOrder(
                **common,
                vendor_id=_blank(header.get("CUSTVENDID")),
                total_amount=required_decimal(
                    header.get("TRX_TOTAL") or header.get("TOTAL"), "TRX_TOTAL"
                ),
                order_status=(
                    "closed"
                    if state == "closed"
                    else "received"
                    if state in RECEIVED_STATES
                    else "open"
                ),
            )
        ]
        numbered = sorted(((_line_number(line), line) for line in lines), key=lambda p: p[0])
        for position, (number, line) in enumerate(numbered):
            if position and numbered[position - 1][0] == number:
                raise RecordRejected(f"LINE_NO {number} appears twice on the order")
            material_id = _blank(line.get("ITEMID"))
            need_by = line.get("NEEDBYDATE")
            records.append(
                PurchaseOrderLine(
                    **common,
                    line_number=number,
                    material_id=material_id,
                    description=_blank(line.get("ITEMDESC") or line.get("MEMO")),
                    quantity=required_decimal(
                        line.get("QUANTITY") or line.get("UIQTY"), "QUANTITY"
                    ),
                    unit=_blank(line.get("UNIT")),
                    unit_price=required_decimal(
                        line.get("TRX_PRICE") or line.get("UIPRICE") or line.get("PRICE"),
                        "TRX_PRICE",
                    ),
                    amount=required_decimal(
                        line.get("TRX_VALUE") or line.get("UIVALUE") or line.get("TOTAL"),
                        "TRX_VALUE",
                    ),
                    gl_account=reference.item_expense_accounts.get(material_id or ""),
                    delivery_date=parse_date(need_by, "NEEDBYDATE") if need_by else None,
                )
            )
    except (RecordRejected, ValidationError, KeyError, ValueError) as error:
        reason = _validation(error) if isinstance(error, ValidationError) else str(error)
        return [], [
            RejectedRecord(
                connection=connection,
                kind=RecordKind.PURCHASE_ORDER,
                source_id=source_id,
                reason=reason,
                payload={"header": header, "lines": lines},
            )
        ]
    return records, []


class SageIntacctSource(ErpSource):
    """A Sage Intacct company read through the XML Web Services gateway (DTD 3.0)."""

    erp_type: ClassVar[str] = "sage_intacct"
    api_version: ClassVar[str] = "XML Web Services, DTD 3.0"
    # Limitation: Intacct's standard objects give on-hand only as it is now (item warehouse
    # details, without cost); a past day is read from the company's custom snapshot object
    # (`onhand_snapshot_object`), or not at all.
    supported_kinds: ClassVar[frozenset[RecordKind]] = frozenset(RecordKind)
    # Every canonical field has a home once the custom-field options below are set.
    unmapped_fields: ClassVar[dict[RecordKind, frozenset[str]]] = {}

    sender_id: str = Field(description="Web Services sender id.")
    sender_password: str = Field(description="Web Services sender password (environment).")
    company_id: str = Field(description="Intacct company id.")
    user_id: str = Field(description="Web Services user id.")
    user_password: str = Field(description="Web Services user password (environment).")
    entity_id: str | None = Field(
        default=None, description="Entity (location) to log in to in a multi-entity company."
    )
    line_quantity_field: str | None = Field(
        default=None, description="Custom field holding the quantity on AP and card lines."
    )
    item_commodity_field: str | None = Field(
        default=None, description="ITEM field holding the NAICS or other commodity code."
    )
    vendor_industry_field: str | None = Field(
        default=None, description="VENDOR field holding the vendor's industry code."
    )
    capex_account_categories: list[str] = Field(
        default=["Fixed Assets"], description="GL account categories that mean capital spend."
    )
    purchase_order_docparid: str = Field(
        default="Purchase Order", description="Transaction definition of purchase orders."
    )
    onhand_snapshot_object: str | None = Field(
        default=None,
        description="Integration name of a custom object with one on-hand row per item, "
        "warehouse and SNAPSHOT_DATE; without it only today's on-hand can be read.",
    )
    timezone: str = Field(default="UTC", description="Time zone of the company's timestamps.")
    throttle_wait_seconds: float = Field(
        default=2.0, description="Wait after a rate-limit error that names no delay."
    )

    _http: ErpHttpClient | None = PrivateAttr(default=None)
    _session_id: str | None = PrivateAttr(default=None)
    _endpoint: str = PrivateAttr(default=GATEWAY_PATH)
    _reference: IntacctReference | None = PrivateAttr(default=None)
    _past_days_noted: bool = PrivateAttr(default=False)

    # Connection

    def _client(self) -> ErpHttpClient:
        if self._http is None:
            self._http = self.build_http_client(self._authenticate, self._throttle_signal)
        return self._http

    @property
    def _zone(self) -> dt.tzinfo:
        return ZoneInfo(self.timezone)

    def _throttle_signal(self, response: requests.Response) -> float | None:
        """429, or a GW-0010 error inside an HTTP 200 answer, means slow down."""
        if response.status_code == 429:
            return retry_after_seconds(response) or self.throttle_wait_seconds
        if response.status_code != 200 or b"failure" not in response.content:
            return None
        try:
            root = ET.fromstring(response.content)
        except ET.ParseError:
            return None
        for error in root.iter("error"):
            number = (error.findtext("errorno") or "").strip()
            text = " ".join(
                (error.findtext(tag) or "") for tag in ("description", "description2")
            ).lower()
            if number in RATE_LIMIT_ERRORS or "rate limit" in text:
                logger.warning(
                    "Intacct rate limit reached", extra={"connection": self.connection_name}
                )
                return retry_after_seconds(response) or self.throttle_wait_seconds
        return None

    def _request_xml(
        self, function: ET.Element, login: bool, function_id: str | None = None
    ) -> bytes:
        request = ET.Element("request")
        control = ET.SubElement(request, "control")
        _text(control, "senderid", self.sender_id)
        _text(control, "password", resolve_secret(self.sender_password))
        _text(control, "controlid", str(uuid.uuid4()))
        _text(control, "uniqueid", "false")
        _text(control, "dtdversion", "3.0")
        _text(control, "includewhitespace", "false")
        operation = ET.SubElement(request, "operation")
        authentication = ET.SubElement(operation, "authentication")
        if login:
            credentials = ET.SubElement(authentication, "login")
            _text(credentials, "userid", self.user_id)
            _text(credentials, "companyid", self.company_id)
            _text(credentials, "password", resolve_secret(self.user_password))
            if self.entity_id:
                _text(credentials, "locationid", self.entity_id)
        else:
            _text(authentication, "sessionid", self._session_id)
        content = ET.SubElement(operation, "content")
        wrapper = ET.SubElement(
            content, "function", {"controlid": function_id or str(uuid.uuid4())}
        )
        wrapper.append(function)
        return ET.tostring(request, encoding="utf-8", xml_declaration=True)

    def _parse(self, response: requests.Response) -> tuple[ET.Element, str | None]:
        """The response document and what went wrong.

        None, "sender" (the sender credentials), "control" (the request as a whole, such as
        an XML schema or gateway error) or "authentication" (the user login or session).
        """
        try:
            root = ET.fromstring(response.content)
        except ET.ParseError:
            raise ErpRequestError(
                self.connection_name, "the gateway answered something that is not XML"
            ) from None
        if root.tag != "response":
            raise ErpRequestError(
                self.connection_name, f"the gateway answered <{root.tag}>, not a <response>"
            )
        if (root.findtext("control/status") or "").strip() == "failure":
            numbers = {(e.findtext("errorno") or "").strip() for e in root.iter("error")}
            return root, "sender" if numbers & SENDER_REFUSED_ERRORS else "control"
        if (root.findtext("operation/authentication/status") or "").strip() == "failure":
            return root, "authentication"
        return root, None

    @staticmethod
    def _first_error(element: ET.Element | None) -> str:
        """Every `<error>` under the element, "errorno text" each, joined (an aborted result
        names the failing call first and the rollback after it)."""
        errors = list(element.iter("error")) if element is not None else []
        parts = []
        for error in errors:
            number = (error.findtext("errorno") or "").strip()
            text = (error.findtext("description2") or "").strip() or (
                error.findtext("description") or ""
            ).strip()
            parts.append(f"{number} {text}".strip())
        return "; ".join(part for part in parts if part)[:500] or "no error detail"

    def _result(self, root: ET.Element, function_id: str, name: str) -> ET.Element:
        """The `<result>` of our function: by its control id, else the only one there is."""
        results = root.findall("operation/result")
        for result in results:
            if (result.findtext("controlid") or "").strip() == function_id:
                return result
        if len(results) == 1:
            return results[0]
        raise ErpRequestError(
            self.connection_name,
            f"the answer holds {len(results)} results and none for our {name}",
        )

    def _authenticate(self, session: requests.Session) -> None:
        """Log in with getAPISession and keep the session id and its endpoint."""
        function_id = str(uuid.uuid4())
        body = self._request_xml(ET.Element("getAPISession"), login=True, function_id=function_id)
        url = f"{self.base_url.rstrip('/')}/{GATEWAY_PATH}"
        try:
            response = session.post(
                url,
                data=body,
                timeout=self.timeout_seconds,
                headers={"Content-Type": "application/xml"},
            )
            _ = response.content
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ):
            raise RetryableError("gateway unreachable while logging in") from None
        wait = self._throttle_signal(response)
        if wait is not None:
            raise RetryableError("throttled while logging in", wait_seconds=wait)
        if response.status_code >= 500:
            raise RetryableError(f"gateway answered {response.status_code} while logging in")
        if response.status_code >= 400:
            raise ErpAuthError(
                self.connection_name,
                f"login refused ({response.status_code})",
                response.status_code,
            )
        root, problem = self._parse(response)
        if problem == "sender":
            raise ErpAuthError(
                self.connection_name, f"sender credentials refused ({self._first_error(root)})"
            )
        if problem == "control":
            raise ErpRequestError(
                self.connection_name, f"login request refused ({self._first_error(root)})"
            )
        if problem == "authentication":
            raise ErpAuthError(
                self.connection_name, f"login refused ({self._first_error(root.find('operation'))})"
            )
        result = self._result(root, function_id, "getAPISession")
        if (result.findtext("status") or "").strip() != "success":
            raise ErpAuthError(
                self.connection_name, f"getAPISession failed ({self._first_error(result)})"
            )
        self._session_id = result.findtext("data/api/sessionid")
        self._endpoint = self._trusted_endpoint(result.findtext("data/api/endpoint") or "")
        logger.info("Intacct API session opened", extra={"connection": self.connection_name})

    def _trusted_endpoint(self, endpoint: str) -> str:
        # The session id only goes to the configured host, whatever endpoint is named.
        configured, named = urlsplit(self.base_url), urlsplit(endpoint)
        if named.scheme == configured.scheme and named.netloc == configured.netloc:
            return endpoint
        if endpoint:
            logger.warning(
                "ignoring a session endpoint on another host",
                extra={"connection": self.connection_name},
            )
        return GATEWAY_PATH

    def _call(self, function: ET.Element) -> ET.Element:
        """Run one function with the session and return its `<result>`."""
        client = self._client()
        for attempt in (1, 2):
            client.ensure_authenticated()
            function_id = str(uuid.uuid4())
            response = client.post(
                self._endpoint,
                data=self._request_xml(function, login=False, function_id=function_id),
                headers={"Content-Type": "application/xml"},
            )
            root, problem = self._parse(response)
            if problem == "authentication" and attempt == 1:
                # The session expired or was ended (XL03000006 in the authentication block):
                # log in again and repeat the call once.
                client.reauthenticate()
                continue
            if problem == "control":
                raise ErpRequestError(
                    self.connection_name,
                    f"{function.tag} request refused ({self._first_error(root)})",
                )
            if problem is not None:
                where = root if problem == "sender" else root.find("operation")
                raise ErpAuthError(
                    self.connection_name, f"{problem} refused ({self._first_error(where)})"
                )
            result = self._result(root, function_id, function.tag)
            if (result.findtext("status") or "").strip() != "success":
                raise ErpRequestError(
                    self.connection_name,
                    f"{function.tag} failed ({self._first_error(result)})",
                )
            return result
        raise ErpAuthError(self.connection_name, "the session was refused after a new login")

    def _read(
        self,
        object_name: str,
        fields: list[str],
        query: str,
        docparid: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[list[dict[str, str]]]:
        """readByQuery, then readMore until nothing remains; yields each page's new rows."""
        size = max(1, min(page_size or self.page_size, MAX_PAGE_SIZE))
        wanted = fields if "RECORDNO" in fields else ["RECORDNO", *fields]
        passed: set[str] = set()
        for _ in range(RESULT_SET_RESTARTS):
            function = ET.Element("readByQuery")
            _text(function, "object", object_name)
            _text(function, "fields", ",".join(wanted))
            _text(function, "query", query)
            _text(function, "pagesize", str(size))
            if docparid:
                _text(function, "docparid", docparid)
            data = self._call(function).find("data")
            if data is None:
                raise ErpRequestError(
                    self.connection_name, f"readByQuery of {object_name} answered without <data>"
                )
            try:
                while data is not None:
                    rows = [row_fields(element) for element in data]
                    fresh = [row for row in rows if row.get("RECORDNO") not in passed]
                    passed.update(row.get("RECORDNO", "") for row in fresh)
                    yield fresh
                    remaining = self._count(data, "numremaining")
                    if remaining == 0:
                        return
                    if not (data.get("resultId") or "").strip():
                        raise ErpRequestError(
                            self.connection_name,
                            f"{remaining} {object_name} rows remain but no resultId names them",
                        )
                    data = self._read_more(data.get("resultId") or "", remaining)
                return
            except _ResultSetLost:
                logger.warning(
                    "Intacct result set lost; reading %s again",
                    object_name,
                    extra={"connection": self.connection_name},
                )
        raise ErpRequestError(
            self.connection_name, f"the {object_name} result set was lost repeatedly"
        )

    def _read_more(self, result_id: str, remaining: int) -> ET.Element:
        function = ET.Element("readMore")
        _text(function, "resultId", result_id)
        try:
            data = self._call(function).find("data")
        except ErpAuthError:
            raise
        except ErpRequestError:
            raise _ResultSetLost() from None
        if data is None:
            raise _ResultSetLost()
        # count + numremaining must account for exactly what was left; less means a page
        # was served but never reached us.
        if self._count(data, "count") + self._count(data, "numremaining") != remaining:
            raise _ResultSetLost()
        return data

    def _count(self, data: ET.Element, attribute: str) -> int:
        """A `<data>` count attribute (absent means 0); anything else is a clear error."""
        text = (data.get(attribute) or "0").strip()
        if not text.isdigit():
            raise ErpRequestError(
                self.connection_name, f"<data {attribute}={text[:20]!r}> is not a count"
            )
        return int(text)

    def _reference_lists(self, refresh: bool = False) -> IntacctReference:
        if self._reference is not None and not refresh:
            return self._reference
        reference = IntacctReference(capex_categories=frozenset(self.capex_account_categories))
        # Reference lists are small master data: read them in the largest pages allowed.
        for page in self._read("ITEM", ITEM_FIELDS, "", page_size=MAX_PAGE_SIZE):
            for row in page:
                if row.get("BASEUOM"):
                    reference.item_units[row["ITEMID"]] = row["BASEUOM"]
                if row.get("ITEMGLGROUP.EXPENSEACCOUNT.ACCTNO"):
                    reference.item_expense_accounts[row["ITEMID"]] = row[
                        "ITEMGLGROUP.EXPENSEACCOUNT.ACCTNO"
                    ]
        for page in self._read("GLACCOUNT", GL_ACCOUNT_FIELDS, "", page_size=MAX_PAGE_SIZE):
            reference.account_categories.update(
                {row["ACCOUNTNO"]: row.get("CATEGORY", "") for row in page}
            )
        self._reference = reference
        return reference

    # Query text

    def _stamp(self, moment: dt.datetime) -> str:
        # Whole seconds in the company's zone; flooring keeps ">=" inclusive.
        local = moment.astimezone(self._zone).replace(microsecond=0)
        return local.strftime("%m/%d/%Y %H:%M:%S")

    def _window_query(self, date_field: str | None, window: SyncWindow) -> str:
        conditions = []
        if date_field and window.start is not None:
            conditions.append(f"{date_field} >= {quote(window.start.strftime('%m/%d/%Y'))}")
        if date_field and window.end is not None:
            conditions.append(f"{date_field} < {quote(window.end.strftime('%m/%d/%Y'))}")
        if window.changed_since is not None:
            conditions.append(f"WHENMODIFIED >= {quote(self._stamp(window.changed_since))}")
        return " AND ".join(conditions)

    # ErpSource

    def _probe(self) -> None:
        self._call(ET.Element("getAPISession"))

    def fetch(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        """Yield batches of canonical records of `kind` inside `window`, a page at a time."""
        if kind not in self.supported_kinds:
            raise ErpRequestError(self.connection_name, f"Intacct does not offer {kind.value}")
        # Snapshots repeat their key from day to day: they are told apart by their day.
        latest = FirstSightings() if kind is RecordKind.INVENTORY else LatestVersions()
        for records, rejected, watermark in self._pages(kind, window):
            yield RecordBatch(
                records=latest.keep(records), rejected=rejected, high_watermark=watermark
            )
        if kind is RecordKind.INVENTORY and not self.onhand_snapshot_object:
            if window.reaches_before_today(self.lookback_days):
                # Past days were not read: stored snapshots must not be taken as deleted.
                yield RecordBatch(complete=False)
        if window.changed_since is not None and kind is not RecordKind.INVENTORY:
            deleted = self._deleted_since(kind, window.changed_since)
            if deleted:
                yield RecordBatch(deleted_source_ids=deleted)

    def _pages(self, kind: RecordKind, window: SyncWindow):
        if kind is RecordKind.SPEND:
            yield from self._spend_pages(window)
        elif kind in (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE):
            yield from self._purchase_order_pages(kind, window)
        elif kind is RecordKind.INVENTORY:
            yield from self._inventory_pages(window)
        elif kind is RecordKind.VENDOR:
            fields = VENDOR_FIELDS + (
                [self.vendor_industry_field.upper()] if self.vendor_industry_field else []
            )
            for page in self._read("VENDOR", fields, self._window_query(None, window)):
                records, rejected = master_from_rows(
                    kind, page, self.connection_name, self.vendor_industry_field, self._zone
                )
                yield records, rejected, self._watermark(page)
        else:
            fields = ITEM_FIELDS + (
                [self.item_commodity_field.upper()] if self.item_commodity_field else []
            )
            for page in self._read("ITEM", fields, self._window_query(None, window)):
                records, rejected = master_from_rows(
                    kind, page, self.connection_name, self.item_commodity_field, self._zone
                )
                yield records, rejected, self._watermark(page)

    def _watermark(self, rows: list[dict[str, str]]) -> dt.datetime | None:
        stamps = [parse_timestamp(row.get("WHENMODIFIED"), self._zone) for row in rows]
        stamps = [stamp for stamp in stamps if stamp is not None]
        return max(stamps) if stamps else None

    def _children(
        self,
        object_name: str,
        key_field: str,
        fields: list[str],
        keys: list[str],
        docparid: str | None = None,
    ) -> dict[str, list[dict[str, str]]]:
        """Lines of the given headers, read a few hundred header keys at a time."""
        by_parent: dict[str, list[dict[str, str]]] = {}
        for start in range(0, len(keys), KEYS_PER_QUERY):
            chunk = [key for key in keys[start : start + KEYS_PER_QUERY] if key.isdigit()]
            if not chunk:
                continue
            query = f"{key_field} IN ({','.join(chunk)})"
            for page in self._read(object_name, fields, query, docparid):
                for row in page:
                    by_parent.setdefault(row.get(key_field, ""), []).append(row)
        return by_parent

    def _spend_pages(self, window: SyncWindow):
        reference = self._reference_lists()
        for header_object, (line_object, description_field, _) in SPEND_OBJECTS.items():
            header_fields = SPEND_HEADER_FIELDS + (
                [] if header_object == "CCTRANSACTION" else ["VENDORID"]
            )
            line_fields = (
                SPEND_LINE_FIELDS
                + [description_field]
                + ([self.line_quantity_field.upper()] if self.line_quantity_field else [])
            )
            query = self._window_query("WHENCREATED", window)
            for headers in self._read(header_object, header_fields, query):
                headers = [
                    h for h in headers if (h.get("STATE") or "").lower() not in NOT_YET_SPEND
                ]
                lines = self._children(
                    line_object, "RECORDKEY", line_fields, [h.get("RECORDNO", "") for h in headers]
                )
                records, rejected = [], []
                for header in headers:
                    parsed, refused = spend_from_rows(
                        header_object,
                        header,
                        lines.get(header.get("RECORDNO", ""), []),
                        self.connection_name,
                        reference,
                        self.line_quantity_field,
                        self._zone,
                    )
                    records.extend(r for r in parsed if window.contains(r.partition_date))
                    rejected.extend(refused)
                yield records, rejected, self._watermark(headers)

    def _purchase_order_pages(self, kind: RecordKind, window: SyncWindow):
        reference = self._reference_lists()
        docparid = self.purchase_order_docparid
        query = self._window_query("WHENCREATED", window)
        for headers in self._read("PODOCUMENT", PO_HEADER_FIELDS, query, docparid):
            lines = {}
            if kind is RecordKind.PURCHASE_ORDER_LINE:
                lines = self._children(
                    "PODOCUMENTENTRY",
                    "DOCHDRNO",
                    PO_LINE_FIELDS,
                    [h.get("RECORDNO", "") for h in headers],
                    docparid,
                )
            wanted = PurchaseOrder if kind is RecordKind.PURCHASE_ORDER else PurchaseOrderLine
            records, rejected = [], []
            for header in headers:
                parsed, refused = purchase_order_from_rows(
                    header,
                    lines.get(header.get("RECORDNO", ""), []),
                    self.connection_name,
                    reference,
                    self._zone,
                )
                records.extend(r for r in parsed if isinstance(r, wanted))
                rejected.extend(r.model_copy(update={"kind": kind}) for r in refused)
            yield records, rejected, self._watermark(headers)

    def _inventory_pages(self, window: SyncWindow):
        """Past days from the snapshot object; without it, today's on-hand only."""
        days = window.snapshot_days(self.lookback_days)
        if not days:
            return
        if self.onhand_snapshot_object:
            yield from self._snapshot_pages(days)
            return
        today = dt.datetime.now(dt.timezone.utc).date()
        if today in days:
            yield self._current_on_hand(today)
        if any(day != today for day in days) and not self._past_days_noted:
            self._past_days_noted = True
            logger.warning(
                "on-hand of past days needs the daily snapshot object; read today only",
                extra={"connection": self.connection_name},
            )

    def _current_on_hand(self, today: dt.date):
        """Item warehouse details summed per item and warehouse, dated today."""
        reference = self._reference_lists()
        totals: dict[tuple[str, str], Decimal] = {}
        rejected = []
        for page in self._read(ON_HAND_OBJECT, ON_HAND_FIELDS, ""):
            for row in page:
                key = (row.get("ITEMID", ""), row.get("WAREHOUSEID", ""))
                try:
                    if not all(key):
                        raise RecordRejected("ITEMID or WAREHOUSEID is missing")
                    quantity = required_decimal(row.get("ONHAND"), "ONHAND")
                except RecordRejected as error:
                    rejected.append(
                        RejectedRecord(
                            connection=self.connection_name,
                            kind=RecordKind.INVENTORY,
                            source_id=f"{ON_HAND_OBJECT}:{row.get('RECORDNO')}",
                            reason=str(error),
                            payload=row,
                            partition_date=today,
                        )
                    )
                    continue
                totals[key] = totals.get(key, Decimal(0)) + quantity
        records = [
            InventorySnapshot(
                connection=self.connection_name,
                source_id=f"{ON_HAND_OBJECT}:{item}/{warehouse}/{today.isoformat()}",
                snapshot_date=today,
                material_id=item,
                location=warehouse,
                quantity=quantity,
                unit=reference.item_units.get(item),
            )
            for (item, warehouse), quantity in totals.items()
        ]
        return records, rejected, None

    def _snapshot_pages(self, days: list[dt.date]):
        wanted = set(days)
        after = max(days) + dt.timedelta(days=1)
        query = (
            f"SNAPSHOT_DATE >= {quote(min(days).strftime('%m/%d/%Y'))}"
            f" AND SNAPSHOT_DATE < {quote(after.strftime('%m/%d/%Y'))}"
        )
        for page in self._read(self.onhand_snapshot_object or "", SNAPSHOT_FIELDS, query):
            records, rejected = [], []
            for row in page:
                try:
                    record = snapshot_from_row(row, self.connection_name)
                except (RecordRejected, ValidationError) as error:
                    reason = (
                        _validation(error) if isinstance(error, ValidationError) else str(error)
                    )
                    rejected.append(
                        RejectedRecord(
                            connection=self.connection_name,
                            kind=RecordKind.INVENTORY,
                            source_id=f"SNAPSHOT:{row.get('RECORDNO')}",
                            reason=reason,
                            payload=row,
                        )
                    )
                    continue
                if record.snapshot_date in wanted:
                    records.append(record)
            yield records, rejected, None

    def _deleted_since(self, kind: RecordKind, since: dt.datetime) -> list[str]:
        """Source ids the audit trail reports as deleted at or after `since`."""
        object_types = {
            RecordKind.SPEND: [name.lower() for name in SPEND_OBJECTS],
            RecordKind.PURCHASE_ORDER: ["podocument"],
            RecordKind.PURCHASE_ORDER_LINE: ["podocument"],
            RecordKind.VENDOR: ["vendor"],
            RecordKind.MATERIAL: ["item"],
        }[kind]
        query = (
            f"ACCESSMODE = 'Delete' AND ACCESSTIME >= {quote(self._stamp(since))}"
            f" AND OBJECTTYPE IN ({','.join(quote(name) for name in object_types)})"
        )
        deleted = []
        for page in self._read("AUDITHISTORY", ["OBJECTTYPE", "OBJECTKEY", "ACCESSTIME"], query):
            deleted.extend(f"{row['OBJECTTYPE'].upper()}:{row['OBJECTKEY']}" for row in page)
        return deleted

    def changed_days(self, kind: RecordKind, since: dt.datetime) -> ChangeSummary:
        """Days holding records changed at or after `since`, reading only dates."""
        if kind not in self.supported_kinds:
            raise ErpRequestError(self.connection_name, f"Intacct does not offer {kind.value}")
        if kind is RecordKind.INVENTORY:
            return self._inventory_days(since)
        reads = {
            RecordKind.SPEND: [(name, None) for name in SPEND_OBJECTS],
            RecordKind.PURCHASE_ORDER: [("PODOCUMENT", self.purchase_order_docparid)],
            RecordKind.PURCHASE_ORDER_LINE: [("PODOCUMENT", self.purchase_order_docparid)],
            RecordKind.VENDOR: [("VENDOR", None)],
            RecordKind.MATERIAL: [("ITEM", None)],
        }[kind]
        dated = kind not in (RecordKind.VENDOR, RecordKind.MATERIAL)
        fields = ["WHENCREATED", "WHENMODIFIED"] if dated else ["WHENMODIFIED"]
        query = f"WHENMODIFIED >= {quote(self._stamp(since))}"
        summary = ChangeSummary()
        for object_name, docparid in reads:
            for page in self._read(object_name, fields, query, docparid):
                for row in page:
                    stamp = parse_timestamp(row.get("WHENMODIFIED"), self._zone)
                    if dated and row.get("WHENCREATED"):
                        summary.days.add(parse_date(row["WHENCREATED"]))
                    elif stamp is not None:
                        summary.days.add(stamp.date())
                    if stamp and (summary.high_watermark is None or stamp > summary.high_watermark):
                        summary.high_watermark = stamp
        return summary

    def _inventory_days(self, since: dt.datetime) -> ChangeSummary:
        """Snapshot days since the cursor (with lookback); without the object, today."""
        if self.onhand_snapshot_object:
            days = SyncWindow(changed_since=since).snapshot_days(self.lookback_days)
            return ChangeSummary(days=set(days))
        now = dt.datetime.now(dt.timezone.utc)
        return ChangeSummary(days={now.date()} if since <= now else set())


__all__ = [
    "IntacctReference",
    "SageIntacctSource",
    "master_from_rows",
    "material_from_row",
    "parse_date",
    "parse_timestamp",
    "purchase_order_from_rows",
    "quote",
    "row_fields",
    "snapshot_from_row",
    "spend_from_rows",
    "vendor_from_row",
]
