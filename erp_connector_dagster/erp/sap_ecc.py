"""SAP ECC source: reads ECC 6.0 tables with RFC_READ_TABLE over the SOAP RFC runtime.

ECC (SAP ERP 6.0, EhP4 or later) releases no API for invoices, orders or stock, so the
connector reads the tables themselves, as third-party extractors do, through the RFC-enabled
function module RFC_READ_TABLE called as SOAP at `/sap/bc/soap/rfc` with the user's Basic
credentials: RBKP with RBCO, RBMA and RSEG (supplier invoices and their G/L, material and
purchase-order items), EKKO, EKPO, EKET and EKKN (purchase orders), LFA1 and LFM1 (vendors),
MARA and MAKT (materials), MBEW (valuation), MARD and MSEG (stock and goods movements), CDHDR
(change documents), T001, T001K and TCURX. See `sandbox/sap_ecc.py` for why this interface
rather than a replicated database.

The module's rules shape the reader: a WHERE clause goes in OPTIONS lines of at most 72
characters, a row is at most 512 characters (so each read names its FIELDS), paging is
ROWSKIPS/ROWCOUNT without ORDER BY (rows are de-duplicated on their key), values come as the
database holds them (dates `YYYYMMDD`, packed numbers with a trailing minus, CURR amounts with
two decimals whatever the currency, shifted back with TCURX) and exceptions are SOAP faults.

Change detection: invoice headers carry only their entry date and time (CPUDT/CPUTM) and
purchase order headers their creation date (AEDAT); later changes are change documents in
CDHDR (object classes INCOMINGINVOICE, EINKBELEG and KRED), which the reader follows. Stock has
no history table: the stock of a past day is MARD (now) minus the goods movements posted after
it (MSEG.BUDAT_MKPF), as transaction MB5B computes it. Deletion flags (EKKO/EKPO.LOEKZ,
LFA1.LOEVM, MARA.LVORM) are reported in `deleted_source_ids`, reversed invoices (STBLG) kept as
voided, credit memos (XRECH empty) and credit (H) items made negative.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import requests
from pydantic import Field, PrivateAttr, ValidationError

from erp_connector_dagster.erp.base import (
    ChangeSummary,
    ErpSource,
    RecordBatch,
    SyncWindow,
    later_stamp,
    rejection_reason,
    resolve_secret,
)
from erp_connector_dagster.erp.http import (
    ErpHttpClient,
    ErpRequestError,
)
from erp_connector_dagster.erp.sap_s4hana import (
    MappingRules,
    master_data_batch,
    plain,
    sap_throttle_signal,
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

logger = logging.getLogger("erp_connector_dagster.erp.sap_ecc")

UTC = dt.timezone.utc
SOAP_RFC_PATH = "/sap/bc/soap/rfc"
RFC_NAMESPACE = "urn:sap-com:document:sap:rfc:functions"
SOAP_NAMESPACE = "http://schemas.xmlsoap.org/soap/envelope/"
OPTION_LINE = 72
# Keys per IN list, so a WHERE clause stays a few hundred OPTIONS lines at most.
KEYS_PER_READ = 150
CHANGE_CLASS = {"spend": "INCOMINGINVOICE", "order": "EINKBELEG", "vendor": "KRED"}

RBKP_FIELDS = (
    "BELNR",
    "GJAHR",
    "BLART",
    "BUDAT",
    "CPUDT",
    "CPUTM",
    "XRECH",
    "LIFNR",
    "WAERS",
    "STBLG",
    "BUKRS",
)
RBCO_FIELDS = (
    "BELNR",
    "GJAHR",
    "BUZEI",
    "COBL_NR",
    "WRBTR",
    "SHKZG",
    "SAKNR",
    "MENGE",
    "MEINS",
    "SGTXT",
)
RBMA_FIELDS = ("BELNR", "GJAHR", "BUZEI", "WRBTR", "SHKZG", "MATNR", "BWKEY", "MENGE", "MEINS")
RSEG_FIELDS = (
    "BELNR",
    "GJAHR",
    "BUZEI",
    "EBELN",
    "EBELP",
    "MATNR",
    "WERKS",
    "WRBTR",
    "SHKZG",
    "MENGE",
    "BSTME",
    "SGTXT",
)
EKKO_FIELDS = ("EBELN", "BUKRS", "LOEKZ", "AEDAT", "LIFNR", "WAERS", "BEDAT")
EKPO_FIELDS = (
    "EBELN",
    "EBELP",
    "LOEKZ",
    "TXZ01",
    "MATNR",
    "MENGE",
    "MEINS",
    "NETPR",
    "PEINH",
    "NETWR",
    "ELIKZ",
    "EREKZ",
)


# Reading RFC_READ_TABLE values


def sap_date(value: str | None) -> dt.date | None:
    """A DATS value (`YYYYMMDD`); None for the initial date `00000000` or blanks."""
    text = (value or "").strip()
    if not text or text == "00000000":
        return None
    return dt.datetime.strptime(text, "%Y%m%d").date()


def sap_time(value: str | None) -> dt.time:
    text = (value or "").strip() or "000000"
    return dt.datetime.strptime(text.zfill(6), "%H%M%S").time()


def sap_number(value: str | None, field: str) -> Decimal:
    """A packed number as RFC_READ_TABLE writes it: right-aligned, minus sign trailing."""
    text = (value or "").strip()
    negative = text.endswith("-")
    try:
        number = Decimal(text.rstrip("-").strip())
        if not number.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise ValueError(f"{field} is not a number: {value!r}") from None
    return -number if negative else number


def sap_amount(value: str | None, field: str, currency: str, decimals: dict[str, int]) -> Decimal:
    """A CURR amount in the currency's own places: 12.50 stored for JPY is 1250."""
    stored = sap_number(value, field)
    return stored.scaleb(2 - decimals.get(currency, 2))


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def option_lines(clause: str) -> list[str]:
    """A WHERE clause cut into OPTIONS lines of at most 72 characters, between words."""
    lines: list[str] = []
    current = ""
    for word in clause.split(" "):
        if not word:
            continue
        candidate = f"{current} {word}" if current else word
        if len(candidate) > OPTION_LINE and current:
            lines.append(current)
            candidate = word
        if len(candidate) > OPTION_LINE:
            raise ValueError(f"a WHERE token longer than {OPTION_LINE} characters: {word[:20]}")
        current = candidate
    if current:
        lines.append(current)
    return lines


def _in_list(field: str, values: Iterable[str]) -> str:
    return f"{field} IN ( " + " , ".join(sql_literal(value) for value in values) + " )"


def _chunks(values: list[str], size: int = KEYS_PER_READ) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _stamp(day: dt.date | None, moment: dt.time | None = None) -> dt.datetime | None:
    if day is None:
        return None
    return dt.datetime.combine(day, moment or dt.time(), tzinfo=UTC)


# Native -> canonical


@dataclasses.dataclass(frozen=True)
class MaterialFacts:
    """Material text and valuation class per valuation area, for material items."""

    description: str | None
    valuation_classes: dict[str, str]


def spend_records(
    header: dict[str, str],
    items: list[tuple[str, dict[str, str]]],
    rules: MappingRules,
    currency_decimals: dict[str, int],
    materials: dict[str, MaterialFacts],
    updated_at: dt.datetime | None,
) -> tuple[list[SpendRecord], list[RejectedRecord]]:
    """The lines of one RBKP invoice from its RBCO, RBMA and RSEG rows (`(table, row)`)."""
    document_id = header.get("BELNR", "")
    fiscal_year = header.get("GJAHR", "")
    records: list[SpendRecord] = []
    rejected: list[RejectedRecord] = []

    def refuse(table: str | None, item: dict | None, reason: str, day: dt.date | None) -> None:
        rejected.append(
            RejectedRecord(
                connection=rules.connection,
                kind=RecordKind.SPEND,
                source_id=f"{document_id}/{fiscal_year}/{(item or {}).get('BUZEI', '')}",
                reason=reason,
                payload={"RBKP": header, table or "item": item},
                partition_date=day,
            )
        )

    try:
        posting = sap_date(header.get("BUDAT"))
        if posting is None:
            raise ValueError("BUDAT is initial")
    except ValueError as error:
        for table, item in items or [(None, None)]:
            refuse(table, item, f"invoice header unreadable: {error}", None)
        return records, rejected
    if not header.get("XRECH"):
        document_type = SpendDocumentType.CREDIT_NOTE
    elif header.get("BLART") in rules.card_charge_document_types:
        document_type = SpendDocumentType.CARD_CHARGE
    else:
        document_type = SpendDocumentType.INVOICE
    status = RecordStatus.VOIDED if header.get("STBLG") else RecordStatus.ACTIVE
    currency = header.get("WAERS", "")
    seen: set[int] = set()
    for table, item in sorted(items, key=lambda pair: pair[1].get("BUZEI", "")):
        try:
            record = _spend_line(
                header,
                table,
                item,
                rules,
                currency_decimals,
                materials,
                document_type,
                posting,
                status,
                updated_at,
                currency,
            )
        except (ValueError, ValidationError) as error:
            refuse(table, item, rejection_reason(error), posting)
            continue
        if record.line_number in seen:
            # Limitation: RBCO, RBMA and RSEG number their items apart; a clash is refused.
            refuse(table, item, f"item {record.line_number} appears in two item tables", posting)
            continue
        seen.add(record.line_number)
        records.append(record)
    return records, rejected


def _spend_line(
    header: dict[str, str],
    table: str,
    item: dict[str, str],
    rules: MappingRules,
    currency_decimals: dict[str, int],
    materials: dict[str, MaterialFacts],
    document_type: SpendDocumentType,
    posting: dt.date,
    status: RecordStatus,
    updated_at: dt.datetime | None,
    currency: str,
) -> SpendRecord:
    number = item.get("BUZEI", "")
    if not number.isdigit():
        raise ValueError(f"BUZEI is not a number: {number!r}")
    if not currency:
        raise ValueError("WAERS is empty")
    amount = abs(sap_amount(item.get("WRBTR"), "WRBTR", currency, currency_decimals))
    sign = Decimal(-1) if item.get("SHKZG") == "H" else Decimal(1)
    material_id = item.get("MATNR") or None
    facts = materials.get(material_id or "")
    description = gl_account = purchase_order_id = None
    if table == "RBCO":
        gl_account = item.get("SAKNR") or None
        description = item.get("SGTXT") or None
        unit = item.get("MEINS")
    elif table == "RBMA":
        if facts is not None:
            description = facts.description
            gl_account = rules.valuation_class_accounts.get(
                facts.valuation_classes.get(item.get("BWKEY", ""), "")
            )
        unit = item.get("MEINS")
    else:
        purchase_order_id = item.get("EBELN") or None
        description = item.get("SGTXT") or (facts.description if facts else None)
        unit = item.get("BSTME")
    quantity = sign * plain(abs(sap_number(item.get("MENGE"), "MENGE"))) if unit else None
    return SpendRecord(
        connection=rules.connection,
        source_id=f"{header.get('BELNR')}/{header.get('GJAHR')}/{number}",
        updated_at=updated_at,
        status=status,
        document_id=header.get("BELNR", ""),
        line_number=int(number),
        document_type=document_type,
        transaction_date=posting,
        vendor_id=header.get("LIFNR") or None,
        material_id=material_id,
        gl_account=gl_account,
        description=description,
        amount=sign * amount,
        currency=currency,
        quantity=quantity,
        unit=unit or None,
        is_capex=rules.is_capex(gl_account),
        purchase_order_id=purchase_order_id,
    )


@dataclasses.dataclass
class OrderParts:
    """One EKKO order as canonical header and lines, with what it reports deleted."""

    header: PurchaseOrder | None = None
    lines: list[PurchaseOrderLine] = dataclasses.field(default_factory=list)
    deleted_header_ids: list[str] = dataclasses.field(default_factory=list)
    deleted_line_ids: list[str] = dataclasses.field(default_factory=list)
    rejected: list[RejectedRecord] = dataclasses.field(default_factory=list)


def order_records(
    header: dict[str, str],
    items: list[dict[str, str]],
    schedule_lines: list[dict[str, str]],
    assignments: list[dict[str, str]],
    rules: MappingRules,
    currency_decimals: dict[str, int],
    updated_at: dt.datetime | None,
) -> OrderParts:
    """Header and lines of one purchase order from its EKKO, EKPO, EKET and EKKN rows."""
    parts = OrderParts()
    po_id = header.get("EBELN", "")
    if header.get("LOEKZ"):
        parts.deleted_header_ids.append(po_id)
        parts.deleted_line_ids += [
            f"{po_id}/{int(i['EBELP'])}" for i in items if i.get("EBELP", "").isdigit()
        ]
        return parts
    try:
        order_date = sap_date(header.get("BEDAT"))
        if order_date is None:
            raise ValueError("BEDAT is initial")
        currency = header.get("WAERS", "")
        if not currency:
            raise ValueError("WAERS is empty")
    except ValueError as error:
        parts.rejected.append(
            RejectedRecord(
                connection=rules.connection,
                kind=RecordKind.PURCHASE_ORDER,
                source_id=po_id,
                reason=str(error),
                payload={"EKKO": header},
            )
        )
        return parts
    live = []
    for item in sorted(items, key=lambda row: row.get("EBELP", "")):
        line_id = f"{po_id}/{int(item['EBELP'])}" if item.get("EBELP", "").isdigit() else po_id
        if item.get("LOEKZ"):
            parts.deleted_line_ids.append(line_id)
            continue
        live.append(item)
        try:
            parts.lines.append(
                _order_line(
                    item,
                    schedule_lines,
                    assignments,
                    rules,
                    po_id,
                    order_date,
                    currency,
                    currency_decimals,
                    updated_at,
                )
            )
        except (ValueError, ValidationError) as error:
            parts.rejected.append(
                RejectedRecord(
                    connection=rules.connection,
                    kind=RecordKind.PURCHASE_ORDER_LINE,
                    source_id=line_id,
                    reason=rejection_reason(error),
                    payload={"EKKO": header, "EKPO": item},
                    partition_date=order_date,
                )
            )
    if live and all(item.get("EREKZ") for item in live):
        order_status = "closed"
    elif live and all(item.get("ELIKZ") for item in live):
        order_status = "received"
    else:
        order_status = "open"
    parts.header = PurchaseOrder(
        connection=rules.connection,
        source_id=po_id,
        updated_at=updated_at,
        purchase_order_id=po_id,
        vendor_id=header.get("LIFNR") or None,
        order_date=order_date,
        currency=currency,
        total_amount=sum((line.amount for line in parts.lines), Decimal(0)),
        order_status=order_status,
    )
    return parts


def _order_line(
    item: dict[str, str],
    schedule_lines: list[dict[str, str]],
    assignments: list[dict[str, str]],
    rules: MappingRules,
    po_id: str,
    order_date: dt.date,
    currency: str,
    currency_decimals: dict[str, int],
    updated_at: dt.datetime | None,
) -> PurchaseOrderLine:
    number = item.get("EBELP", "")
    if not number.isdigit():
        raise ValueError(f"EBELP is not a number: {number!r}")
    price = sap_amount(item.get("NETPR"), "NETPR", currency, currency_decimals)
    per = sap_number(item.get("PEINH") or "1", "PEINH") or Decimal(1)
    ours = [row for row in schedule_lines if row.get("EBELP") == number]
    booked = [row for row in assignments if row.get("EBELP") == number and not row.get("LOEKZ")]
    delivery = [day for day in (sap_date(row.get("EINDT")) for row in ours) if day]
    return PurchaseOrderLine(
        connection=rules.connection,
        source_id=f"{po_id}/{int(number)}",
        updated_at=updated_at,
        purchase_order_id=po_id,
        line_number=int(number),
        order_date=order_date,
        material_id=item.get("MATNR") or None,
        description=item.get("TXZ01") or None,
        quantity=plain(sap_number(item.get("MENGE"), "MENGE")),
        unit=item.get("MEINS") or None,
        unit_price=price / per,
        amount=sap_amount(item.get("NETWR"), "NETWR", currency, currency_decimals),
        currency=currency,
        gl_account=next(
            (
                row["SAKTO"]
                for row in sorted(booked, key=lambda r: r.get("ZEKKN", ""))
                if row.get("SAKTO")
            ),
            None,
        ),
        delivery_date=min(delivery) if delivery else None,
    )


def vendor_record(
    lfa1: dict[str, str],
    currency: str | None,
    rules: MappingRules,
    industry_key_codes: dict[str, str],
    updated_at: dt.datetime | None,
) -> Vendor | None:
    """A vendor from its LFA1 row; None when flagged for deletion (LOEVM)."""
    if lfa1.get("LOEVM"):
        return None
    vendor_id = lfa1.get("LIFNR", "")
    if not vendor_id:
        raise ValueError("LIFNR is empty")
    industry = lfa1.get("BRSCH") or ""
    return Vendor(
        connection=rules.connection,
        source_id=vendor_id,
        updated_at=updated_at,
        vendor_id=vendor_id,
        name=" ".join(part for part in (lfa1.get("NAME1"), lfa1.get("NAME2")) if part),
        country=lfa1.get("LAND1") or None,
        industry_code=industry_key_codes.get(industry, industry) or None,
        tax_id=lfa1.get("STCEG") or None,
        currency=currency or None,
    )


def material_record(
    mara: dict[str, str], description: str | None, rules: MappingRules
) -> Material | None:
    """A material from MARA (and its MAKT text); None when flagged for deletion (LVORM)."""
    if mara.get("LVORM"):
        return None
    material_id = mara.get("MATNR", "")
    if not material_id:
        raise ValueError("MATNR is empty")
    changed = sap_date(mara.get("LAEDA")) or sap_date(mara.get("ERSDA"))
    return Material(
        connection=rules.connection,
        source_id=material_id,
        updated_at=_stamp(changed),
        material_id=material_id,
        description=description or "",
        material_group=mara.get("MATKL") or None,
        base_unit=mara.get("MEINS") or None,
        commodity_code=mara.get("EXTWG") or None,
    )


def stock_on(
    current: Iterable[dict[str, str]],
    movements: Iterable[dict[str, str]],
    day: dt.date,
) -> dict[tuple[str, str], Decimal]:
    """Own stock per material and plant on `day`: MARD now, less the movements posted after."""
    totals: dict[tuple[str, str], Decimal] = {}
    for row in current:
        key = (row.get("MATNR", ""), row.get("WERKS", ""))
        quantity = sum(
            (sap_number(row.get(field) or "0", field) for field in ("LABST", "INSME", "SPEME")),
            Decimal(0),
        )
        totals[key] = totals.get(key, Decimal(0)) + quantity
    for row in movements:
        posted = sap_date(row.get("BUDAT_MKPF"))
        if posted is None or posted <= day:
            continue
        key = (row.get("MATNR", ""), row.get("WERKS", ""))
        quantity = sap_number(row.get("MENGE"), "MENGE")
        signed = quantity if row.get("SHKZG") == "S" else -quantity
        totals[key] = totals.get(key, Decimal(0)) - signed
    return totals


# The resource


class SapEccSource(ErpSource):
    """SAP ECC 6.0 read table by table with RFC_READ_TABLE over SOAP RFC."""

    erp_type = "sap_ecc"
    api_version = "RFC_READ_TABLE over /sap/bc/soap/rfc (SAP ERP 6.0 EhP4+)"
    # The gateway answered, so the system is up even when it refuses the probe.
    refused_probe_is_reachable = True

    username: str = Field(description="SAP user with S_TABU_DIS for the tables read.")
    password: str = Field(description="Its password.")
    sap_client: str = Field(default="", description="Client (MANDT) to log on to.")
    language_key: str = Field(default="E", description="MAKT language key (SPRAS).")
    company_code: str = Field(default="", description="Only this company code (BUKRS).")
    purchasing_org: str = Field(default="", description="Purchasing org for vendor currency.")
    valuation_class_accounts: dict[str, str] = Field(
        default_factory=dict,
        description="Valuation class (MBEW.BKLAS) -> G/L account, from account determination.",
    )
    card_charge_document_types: list[str] = Field(
        default_factory=list, description="Document types (BLART) of card charges."
    )
    capex_gl_prefixes: list[str] = Field(
        default_factory=list, description="G/L account prefixes that are capital expenditure."
    )
    industry_key_codes: dict[str, str] = Field(
        default_factory=dict, description="Industry key (LFA1.BRSCH) -> NAICS code."
    )

    _client: ErpHttpClient | None = PrivateAttr(default=None)

    @property
    def rules(self) -> MappingRules:
        return MappingRules(
            connection=self.connection_name,
            card_charge_document_types=frozenset(self.card_charge_document_types),
            capex_gl_prefixes=tuple(self.capex_gl_prefixes),
            valuation_class_accounts=dict(self.valuation_class_accounts),
        )

    # RFC plumbing

    def _http(self) -> ErpHttpClient:
        if self._client is None:
            self._client = self._new_client(self.max_retries)
        return self._client

    def _new_client(self, max_retries: int) -> ErpHttpClient:
        return self.build_http_client(
            self._authenticate, self._answer_signal, max_retries=max_retries
        )

    def _authenticate(self, session: requests.Session) -> None:
        session.auth = (resolve_secret(self.username), resolve_secret(self.password))

    def _answer_signal(self, response: requests.Response) -> float | None:
        """Throttling as the ICM signals it; a SOAP fault is the module's final answer."""
        wait = sap_throttle_signal(response)
        if wait is not None:
            return wait
        if response.status_code == 500 and b"<faultstring>" in response.content:
            try:
                fault = ElementTree.fromstring(response.content)
                name = next((node.text for node in fault.iter() if node.tag == "faultstring"), "")
                text = next((node.text for node in fault.iter() if node.tag == "Text"), "")
            except ElementTree.ParseError:
                name, text = "SOAP fault", ""
            raise ErpRequestError(
                self.connection_name, f"RFC_READ_TABLE raised {name}: {text}".strip(), 500
            )
        return None

    def read_table(
        self,
        table: str,
        fields: Iterable[str],
        where: str = "",
        skips: int = 0,
        count: int = 0,
        client: ErpHttpClient | None = None,
    ) -> list[dict[str, str]]:
        """One RFC_READ_TABLE call: rows as {field: value without padding}."""
        options = "".join(
            f"<item><TEXT>{escape(line)}</TEXT></item>" for line in option_lines(where)
        )
        field_items = "".join(f"<item><FIELDNAME>{name}</FIELDNAME></item>" for name in fields)
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><SOAP-ENV:Envelope '
            f'xmlns:SOAP-ENV="{SOAP_NAMESPACE}"><SOAP-ENV:Body>'
            f'<urn:RFC_READ_TABLE xmlns:urn="{RFC_NAMESPACE}">'
            f"<QUERY_TABLE>{escape(table)}</QUERY_TABLE><DELIMITER></DELIMITER>"
            f"<ROWSKIPS>{skips}</ROWSKIPS><ROWCOUNT>{count}</ROWCOUNT>"
            f"<OPTIONS>{options}</OPTIONS><FIELDS>{field_items}</FIELDS><DATA/>"
            "</urn:RFC_READ_TABLE></SOAP-ENV:Body></SOAP-ENV:Envelope>"
        )
        params = {"sap-client": self.sap_client} if self.sap_client else None
        response = (client or self._http()).post(
            SOAP_RFC_PATH,
            params=params,
            data=body.encode(),
            headers={
                "Content-Type": "text/xml; charset=utf-8",
                "SOAPAction": f"{RFC_NAMESPACE}:RFC_READ_TABLE",
            },
        )
        try:
            answer = ElementTree.fromstring(response.content)
        except ElementTree.ParseError:
            raise ErpRequestError(
                self.connection_name, f"RFC_READ_TABLE on {table} sent no SOAP answer"
            ) from None
        layout = []
        for item in _rfc_table(answer, "FIELDS"):
            layout.append(
                (
                    item.get("FIELDNAME", "").strip(),
                    int(item.get("OFFSET") or 0),
                    int(item.get("LENGTH") or 0),
                )
            )
        return [
            {name: line[offset : offset + length].strip() for name, offset, length in layout}
            for line in (row.get("WA", "") for row in _rfc_table(answer, "DATA"))
        ]

    def _rows(self, table: str, fields: Iterable[str], where: str = "") -> Iterator[list[dict]]:
        """Pages of a table read with ROWSKIPS/ROWCOUNT."""
        fields = tuple(fields)
        skips = 0
        while True:
            rows = self.read_table(table, fields, where, skips, self.page_size)
            if rows:
                yield rows
            if len(rows) < self.page_size:
                return
            skips += len(rows)

    def _all(self, table: str, fields: Iterable[str], where: str = "") -> list[dict]:
        return [row for page in self._rows(table, fields, where) for row in page]

    def _by_keys(
        self,
        table: str,
        fields: Iterable[str],
        key_field: str,
        keys: Iterable[str],
        extra: str = "",
    ) -> list[dict]:
        rows = []
        for chunk in _chunks(sorted(set(keys))):
            where = _in_list(key_field, chunk) + (f" AND {extra}" if extra else "")
            rows += self._all(table, fields, where)
        return rows

    def _currency_decimals(self) -> dict[str, int]:
        return {
            row["CURRKEY"]: int(row["CURRDEC"] or 2)
            for row in self._all("TCURX", ("CURRKEY", "CURRDEC"))
        }

    def _changed_objects(self, kind: str, since: dt.datetime) -> dict[str, dt.datetime]:
        """OBJECTID -> latest change at or after `since` (to the second), from CDHDR."""
        floor = since.astimezone(UTC).replace(microsecond=0)
        where = (
            f"OBJECTCLAS EQ {sql_literal(CHANGE_CLASS[kind])} AND "
            f"UDATE GE {sql_literal(floor.strftime('%Y%m%d'))}"
        )
        return self._change_stamps(self._all("CDHDR", ("OBJECTID", "UDATE", "UTIME"), where), floor)

    def _object_stamps(self, kind: str, object_ids: Iterable[str]) -> dict[str, dt.datetime]:
        rows = self._by_keys(
            "CDHDR",
            ("OBJECTID", "UDATE", "UTIME"),
            "OBJECTID",
            object_ids,
            f"OBJECTCLAS EQ {sql_literal(CHANGE_CLASS[kind])}",
        )
        return self._change_stamps(rows, None)

    @staticmethod
    def _change_stamps(rows: list[dict], floor: dt.datetime | None) -> dict[str, dt.datetime]:
        stamps: dict[str, dt.datetime] = {}
        for row in rows:
            stamp = _stamp(sap_date(row.get("UDATE")), sap_time(row.get("UTIME")))
            if stamp is None or (floor is not None and stamp < floor):
                continue
            object_id = row.get("OBJECTID", "")
            stamps[object_id] = max(stamp, stamps.get(object_id, stamp))
        return stamps

    # ErpSource

    def _probe(self) -> None:
        """Read one row of T001, retrying at most once: a health check must answer quickly."""
        client = self._new_client(max_retries=min(1, self.max_retries))
        self.read_table("T001", ("BUKRS",), count=1, client=client)

    def fetch(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        """Batches of `kind` in `window`, table by table."""
        logger.info(
            "sync started",
            extra={
                "connection": self.connection_name,
                "kind": kind.value,
                "window": window.model_dump(),
            },
        )
        readers = {
            RecordKind.SPEND: self._fetch_spend,
            RecordKind.PURCHASE_ORDER: self._fetch_orders,
            RecordKind.PURCHASE_ORDER_LINE: self._fetch_orders,
            RecordKind.INVENTORY: self._fetch_inventory,
            RecordKind.VENDOR: self._fetch_vendors,
            RecordKind.MATERIAL: self._fetch_materials,
        }
        count = 0
        for batch in readers[kind](kind, window):
            count += len(batch.records)
            yield batch
        logger.info(
            "sync read %d %s records", count, kind.value, extra={"connection": self.connection_name}
        )

    def changed_days(self, kind: RecordKind, since: dt.datetime) -> ChangeSummary:
        """Days with records changed at or after `since`; master data has no days, only a mark."""
        window = SyncWindow(changed_since=since)
        summary = ChangeSummary()
        if kind is RecordKind.SPEND:
            fields = ("BELNR", "GJAHR", "BUDAT", "CPUDT", "CPUTM")
            for headers, changes in self._changed_headers("spend", window, fields):
                for header in headers:
                    summary.days.add(sap_date(header["BUDAT"]))
                    summary.high_watermark = later_stamp(
                        summary.high_watermark,
                        later_stamp(
                            _stamp(sap_date(header.get("CPUDT")), sap_time(header.get("CPUTM"))),
                            changes.get(_invoice_object(header)),
                        ),
                    )
        elif kind in (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE):
            for headers, changes in self._changed_headers(
                "order", window, ("EBELN", "BEDAT", "AEDAT")
            ):
                for header in headers:
                    summary.days.add(sap_date(header["BEDAT"]))
                    summary.high_watermark = later_stamp(
                        summary.high_watermark,
                        later_stamp(
                            _stamp(sap_date(header.get("AEDAT"))), changes.get(header["EBELN"])
                        ),
                    )
        elif kind is RecordKind.INVENTORY:
            summary.days.update(window.snapshot_days(self.lookback_days))
        else:
            for batch in self.fetch(kind, window):
                for record in batch.records:
                    summary.high_watermark = later_stamp(summary.high_watermark, record.updated_at)
        summary.days.discard(None)
        return summary

    # Headers of a window

    def _header_clause(self, kind: str, window: SyncWindow) -> list[str]:
        date_field = "BUDAT" if kind == "spend" else "BEDAT"
        parts = ["RBSTAT EQ '5'"] if kind == "spend" else []
        if self.company_code:
            parts.append(f"BUKRS EQ {sql_literal(self.company_code)}")
        if window.start is not None:
            parts.append(f"{date_field} GE {sql_literal(window.start.strftime('%Y%m%d'))}")
        if window.end is not None:
            parts.append(f"{date_field} LT {sql_literal(window.end.strftime('%Y%m%d'))}")
        return parts

    def _changed_headers(
        self, kind: str, window: SyncWindow, fields: tuple[str, ...]
    ) -> Iterator[tuple[list[dict], dict[str, dt.datetime]]]:
        """Header pages in a window; with a cursor, those entered, posted within the lookback
        or changed (CDHDR) since it. Each page comes with the change stamps found."""
        table = "RBKP" if kind == "spend" else "EKKO"
        keys = ("BELNR", "GJAHR") if kind == "spend" else ("EBELN",)
        seen: set[tuple[str, ...]] = set()

        def fresh(page: list[dict]) -> list[dict]:
            # A header both recent and changed is read twice; it is served once.
            new = [row for row in page if tuple(row[key] for key in keys) not in seen]
            seen.update(tuple(row[key] for key in keys) for row in new)
            return new

        base = self._header_clause(kind, window)
        if window.changed_since is None:
            for page in self._rows(table, fields, " AND ".join(base)):
                yield fresh(page), {}
            return
        since_day = window.changed_since.astimezone(UTC).date()
        lookback_day = since_day - dt.timedelta(days=self.lookback_days)
        changes = self._changed_objects(kind, window.changed_since)
        if kind == "spend":
            recent = (
                f"( CPUDT GE {sql_literal(since_day.strftime('%Y%m%d'))} OR BUDAT GE "
                f"{sql_literal(lookback_day.strftime('%Y%m%d'))} )"
            )
        else:
            recent = (
                f"( AEDAT GE {sql_literal(since_day.strftime('%Y%m%d'))} OR BEDAT GE "
                f"{sql_literal(lookback_day.strftime('%Y%m%d'))} )"
            )
        for page in self._rows(table, fields, " AND ".join([*base, recent])):
            yield fresh(page), changes
        if kind == "spend":
            by_year: dict[str, list[str]] = {}
            for object_id in changes:
                by_year.setdefault(object_id[10:14], []).append(object_id[:10].strip())
            for year, numbers in sorted(by_year.items()):
                for chunk in _chunks(sorted(numbers)):
                    where = " AND ".join(
                        [*base, f"GJAHR EQ {sql_literal(year)}", _in_list("BELNR", chunk)]
                    )
                    for page in self._rows(table, fields, where):
                        yield fresh(page), changes
        else:
            for chunk in _chunks(sorted(changes)):
                where = " AND ".join([*base, _in_list("EBELN", chunk)])
                for page in self._rows(table, fields, where):
                    yield fresh(page), changes

    # Readers

    def _fetch_spend(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        rules = self.rules
        decimals = self._currency_decimals()
        materials: dict[str, MaterialFacts] = {}
        seen: set[str] = set()
        for headers, changes in self._changed_headers("spend", window, RBKP_FIELDS):
            batch = RecordBatch()
            items = self._invoice_items(headers)
            self._load_materials(
                {row["MATNR"] for _, row in items if row.get("MATNR")} - materials.keys(),
                materials,
            )
            stamps = self._object_stamps("spend", [_invoice_object(h) for h in headers])
            by_document: dict[tuple[str, str], list[tuple[str, dict]]] = {}
            for table, row in items:
                by_document.setdefault((row["BELNR"], row["GJAHR"]), []).append((table, row))
            for header in headers:
                entered = _stamp(sap_date(header.get("CPUDT")), sap_time(header.get("CPUTM")))
                object_id = _invoice_object(header)
                updated_at = later_stamp(
                    entered, later_stamp(stamps.get(object_id), changes.get(object_id))
                )
                records, rejected = spend_records(
                    header,
                    by_document.get((header["BELNR"], header["GJAHR"]), []),
                    rules,
                    decimals,
                    materials,
                    updated_at,
                )
                batch.rejected.extend(rejected)
                for record in records:
                    if record.natural_key not in seen:
                        seen.add(record.natural_key)
                        batch.records.append(record)
                        batch.high_watermark = later_stamp(batch.high_watermark, record.updated_at)
            yield batch

    def _invoice_items(self, headers: list[dict]) -> list[tuple[str, dict]]:
        by_year: dict[str, list[str]] = {}
        for header in headers:
            by_year.setdefault(header["GJAHR"], []).append(header["BELNR"])
        items: list[tuple[str, dict]] = []
        for year, numbers in by_year.items():
            for table, fields in (
                ("RBCO", RBCO_FIELDS),
                ("RBMA", RBMA_FIELDS),
                ("RSEG", RSEG_FIELDS),
            ):
                rows = self._by_keys(
                    table, fields, "BELNR", numbers, f"GJAHR EQ {sql_literal(year)}"
                )
                if table == "RBCO":
                    rows = _merge_account_splits(rows)
                items += [(table, row) for row in rows]
        return items

    def _load_materials(self, wanted: set[str], materials: dict[str, MaterialFacts]) -> None:
        if not wanted:
            return
        texts = {
            row["MATNR"]: row["MAKTX"]
            for row in self._by_keys(
                "MAKT",
                ("MATNR", "MAKTX"),
                "MATNR",
                wanted,
                f"SPRAS EQ {sql_literal(self.language_key)}",
            )
        }
        classes: dict[str, dict[str, str]] = {}
        for row in self._by_keys("MBEW", ("MATNR", "BWKEY", "BWTAR", "BKLAS"), "MATNR", wanted):
            if not row.get("BWTAR"):
                classes.setdefault(row["MATNR"], {})[row["BWKEY"]] = row.get("BKLAS", "")
        for material in wanted:
            materials[material] = MaterialFacts(texts.get(material), classes.get(material, {}))

    def _fetch_orders(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        rules = self.rules
        decimals = self._currency_decimals()
        seen: set[str] = set()
        for headers, changes in self._changed_headers("order", window, EKKO_FIELDS):
            numbers = [header["EBELN"] for header in headers]
            items = self._by_keys("EKPO", EKPO_FIELDS, "EBELN", numbers)
            schedule = self._by_keys("EKET", ("EBELN", "EBELP", "ETENR", "EINDT"), "EBELN", numbers)
            accounts = self._by_keys(
                "EKKN", ("EBELN", "EBELP", "ZEKKN", "LOEKZ", "SAKTO"), "EBELN", numbers
            )
            stamps = self._object_stamps("order", numbers)
            batch = RecordBatch()
            for header in headers:
                po_id = header["EBELN"]
                updated_at = later_stamp(
                    _stamp(sap_date(header.get("AEDAT"))),
                    later_stamp(stamps.get(po_id), changes.get(po_id)),
                )
                parts = order_records(
                    header,
                    [row for row in items if row["EBELN"] == po_id],
                    [row for row in schedule if row["EBELN"] == po_id],
                    [row for row in accounts if row["EBELN"] == po_id],
                    rules,
                    decimals,
                    updated_at,
                )
                if kind is RecordKind.PURCHASE_ORDER:
                    records: list[CanonicalRecord] = [parts.header] if parts.header else []
                    batch.deleted_source_ids.extend(parts.deleted_header_ids)
                else:
                    records = list(parts.lines)
                    batch.deleted_source_ids.extend(parts.deleted_line_ids)
                batch.rejected.extend(r for r in parts.rejected if r.kind is kind)
                for record in records:
                    if record.natural_key not in seen:
                        seen.add(record.natural_key)
                        batch.records.append(record)
                        batch.high_watermark = later_stamp(batch.high_watermark, record.updated_at)
            yield batch

    def _fetch_vendors(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        rules = self.rules
        where = ""
        changes: dict[str, dt.datetime] = {}
        if window.changed_since is not None:
            changes = self._changed_objects("vendor", window.changed_since)
            since_day = window.changed_since.astimezone(UTC).strftime("%Y%m%d")
            where = f"ERDAT GE {sql_literal(since_day)}"
            if changes:
                where = " OR ".join(
                    [where, *(_in_list("LIFNR", chunk) for chunk in _chunks(sorted(changes)))]
                )
        lfm1_where = f"EKORG EQ {sql_literal(self.purchasing_org)}" if self.purchasing_org else ""
        currencies: dict[str, str] = {}
        for row in sorted(
            self._all("LFM1", ("LIFNR", "EKORG", "WAERS", "LOEVM"), lfm1_where),
            key=lambda row: row.get("EKORG", ""),
        ):
            if row.get("WAERS") and not row.get("LOEVM"):
                currencies.setdefault(row["LIFNR"], row["WAERS"])
        fields = ("LIFNR", "LAND1", "NAME1", "NAME2", "BRSCH", "STCEG", "ERDAT", "LOEVM")
        seen: set[str] = set()
        for page in self._rows("LFA1", fields, where):
            stamps = self._object_stamps("vendor", [row["LIFNR"] for row in page])
            updated = {
                row.get("LIFNR", ""): later_stamp(
                    _stamp(sap_date(row.get("ERDAT"))), stamps.get(row.get("LIFNR", ""))
                )
                for row in page
            }
            yield master_data_batch(
                self.connection_name,
                RecordKind.VENDOR,
                page,
                lambda row: vendor_record(
                    row,
                    currencies.get(row.get("LIFNR", "")),
                    rules,
                    self.industry_key_codes,
                    updated[row.get("LIFNR", "")],  # noqa: B023 - used before the page moves on
                ),
                "LIFNR",
                lambda row: {"LFA1": row},
                seen,
            )

    def _fetch_materials(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        rules = self.rules
        where = ""
        if window.changed_since is not None:
            day = sql_literal(window.changed_since.astimezone(UTC).strftime("%Y%m%d"))
            where = f"LAEDA GE {day} OR ERSDA GE {day}"
        fields = ("MATNR", "ERSDA", "LAEDA", "LVORM", "MATKL", "MEINS", "EXTWG")
        seen: set[str] = set()
        for page in self._rows("MARA", fields, where):
            texts = {
                row["MATNR"]: row["MAKTX"]
                for row in self._by_keys(
                    "MAKT",
                    ("MATNR", "MAKTX"),
                    "MATNR",
                    [row["MATNR"] for row in page],
                    f"SPRAS EQ {sql_literal(self.language_key)}",
                )
            }
            yield master_data_batch(
                self.connection_name,
                RecordKind.MATERIAL,
                page,
                lambda row: material_record(
                    row,
                    texts.get(row.get("MATNR", "")),  # noqa: B023 - used before the page moves on
                    rules,
                ),
                "MATNR",
                lambda row: {"MARA": row},
                seen,
            )

    def _fetch_inventory(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        days = window.snapshot_days(self.lookback_days)
        if not days:
            return
        current = self._all("MARD", ("MATNR", "WERKS", "LGORT", "LABST", "INSME", "SPEME"))
        # Limitation: a day far back replays every goods movement since, as MB5B does.
        movements = self._all(
            "MSEG",
            ("MATNR", "WERKS", "SHKZG", "MENGE", "BUDAT_MKPF"),
            f"BUDAT_MKPF GT {sql_literal(days[0].strftime('%Y%m%d'))}",
        )
        units = {
            row["MATNR"]: row.get("MEINS", "") for row in self._all("MARA", ("MATNR", "MEINS"))
        }
        prices = self._valuation_prices()
        for day in days:
            records: list[InventorySnapshot] = []
            for (material_id, plant), quantity in sorted(stock_on(current, movements, day).items()):
                if quantity == 0:
                    continue  # no stock, or none yet on that day
                quantity = plain(quantity)
                unit_cost, currency = prices.get((material_id, plant), (None, None))
                records.append(
                    InventorySnapshot(
                        connection=self.connection_name,
                        source_id=f"{material_id}/{plant}/{day.isoformat()}",
                        snapshot_date=day,
                        material_id=material_id,
                        location=plant,
                        quantity=quantity,
                        unit=units.get(material_id) or None,
                        unit_cost=unit_cost,
                        value=(quantity * unit_cost).quantize(Decimal("0.01"))
                        if unit_cost is not None
                        else None,
                        currency=currency,
                    )
                )
            for start in range(0, len(records), self.page_size):
                yield RecordBatch(records=records[start : start + self.page_size])

    def _valuation_prices(self) -> dict[tuple[str, str], tuple[Decimal, str]]:
        """(material, plant) -> (price per base unit, company code currency), from MBEW."""
        company_of = {row["BWKEY"]: row["BUKRS"] for row in self._all("T001K", ("BWKEY", "BUKRS"))}
        currency_of = {row["BUKRS"]: row["WAERS"] for row in self._all("T001", ("BUKRS", "WAERS"))}
        decimals = self._currency_decimals()
        prices = {}
        fields = ("MATNR", "BWKEY", "BWTAR", "VPRSV", "VERPR", "STPRS", "PEINH")
        for row in self._all("MBEW", fields):
            if row.get("BWTAR"):
                continue
            currency = currency_of.get(company_of.get(row["BWKEY"], ""), "")
            field = "VERPR" if row.get("VPRSV") == "V" else "STPRS"
            try:
                price = sap_amount(row.get(field), field, currency, decimals)
                per = sap_number(row.get("PEINH") or "1", "PEINH") or Decimal(1)
            except ValueError:
                continue
            prices[(row["MATNR"], row["BWKEY"])] = (plain(price / per), currency)
        return prices


def _invoice_object(header: dict[str, str]) -> str:
    """CDHDR's OBJECTID of an invoice: document number (10 places) and fiscal year."""
    return f"{header.get('BELNR', ''):<10}{header.get('GJAHR', '')}"


def _rfc_table(answer: ElementTree.Element, name: str) -> list[dict[str, str]]:
    """The rows of a table parameter (`<NAME><item>...</item></NAME>`) of the response."""
    for node in answer.iter():
        if node.tag.rsplit("}", 1)[-1] == name:
            return [
                {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in item} for item in node
            ]
    return []


def _merge_account_splits(rows: list[dict]) -> list[dict]:
    """RBCO keeps one row per account assignment of an item; a canonical line is the item."""
    merged: dict[tuple[str, str, str], dict] = {}
    for row in sorted(
        rows, key=lambda r: (r["BELNR"], r["GJAHR"], r["BUZEI"], r.get("COBL_NR", ""))
    ):
        key = (row["BELNR"], row["GJAHR"], row["BUZEI"])
        if key not in merged:
            merged[key] = dict(row)
            continue
        first = merged[key]
        try:
            total = sap_number(first["WRBTR"], "WRBTR") + sap_number(row["WRBTR"], "WRBTR")
            first["WRBTR"] = f"{total:f}"
        except ValueError:
            first["WRBTR"] = f"{first['WRBTR']}+{row['WRBTR']}"  # refused later, with both
    return list(merged.values())


__all__ = [
    "MaterialFacts",
    "OrderParts",
    "SapEccSource",
    "material_record",
    "option_lines",
    "order_records",
    "sap_amount",
    "sap_date",
    "sap_number",
    "spend_records",
    "stock_on",
    "vendor_record",
]
