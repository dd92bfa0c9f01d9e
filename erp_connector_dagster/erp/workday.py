"""Workday source: WQL for transactions, Report-as-a-Service for master data and stock.

Sign-in is OAuth 2.0 with a refresh token, as Workday issues to an integration API client: the
client posts `grant_type=refresh_token` to `/ccx/oauth2/<tenant>/token` with its id and secret
in HTTP Basic and gets a bearer token; when a call answers 401 (the token expired) a new one is
fetched and the call repeated once. A refused sign-in (`invalid_client`, `invalid_grant`)
becomes `ErpAuthError`, without the secrets.

Transactions come from Workday Query Language (`POST /ccx/api/wql/v1/<tenant>/data` with
`limit`/`offset` paging, answers `{"total": n, "data": [...]}`): supplier invoices
(`supplierInvoices`, then `supplierInvoiceLines` of those invoices) and purchase orders
(`purchaseOrders`, `purchaseOrderLines`), selected by business date or by `lastUpdated` (an
inclusive cursor). Instances arrive as references `{"id": WID, "descriptor": ...}`, currency
amounts as decimal strings, date-times in the tenant's time zone. Supplier Invoice Adjustments
(credit notes) are stored positive and negated here; Procurement Card Transactions are card
charges; a canceled invoice is kept as voided.

Suppliers, purchase items and inventory balances come from RaaS custom reports
(`/ccx/service/customreport2/<tenant>/<owner>/<report>?format=json`, `Report_Entry`), which
return the whole report at once, write dates as XML dates with an offset (`2026-11-25-08:00`)
and leave empty fields out. Inventory is read one `As_Of_Date` prompt per day.

Throttling is 429 with `Retry-After`. Workday reports no deletions (documents are canceled, not
deleted), so `deleted_source_ids` stays empty.

Sources checked (stored copies, 2026): public WQL calls in moveworks/developer-docs
(plugins/workday-request-time-off/.codeblocks/block_1.sh, plugins/workday-view-total-
compensation/.codeblocks/block_2.sh) confirm `POST /ccx/api/wql/v1/<tenant>/data?limit=&offset=`
with a bearer token and a JSON body `{"query": "SELECT workdayID, ... FROM <data source> ..."}`.
The `{"total": n, "data": [...]}` answer, references `{"id": WID, "descriptor": ...}` for
single-instance fields and lists of them for multi-instance ones, and the refresh-token grant
are as the brief and ERP-PROTOCOLS.md describe; public JSON schemas of Workday supplier invoices
(api-evangelist, not Workday's own) agree on invoiceNumber, invoiceDate as a date, supplier and
currency as references and a "Canceled" status.

Hardening: a multi-instance field read where one value is expected must hold exactly one (two
ledger accounts are an error, never a string of a list); a line whose invoice or order is not
among the queried headers is rejected with the reason, never skipped; a blank currency, an
unknown document type or a boolean that is not one are errors, so the line is rejected;
adjustments are made negative whatever sign the tenant stores.

Limitation (not confirmed against a published payload): WQL data source and field names
(`supplierInvoices`, `supplierInvoiceLines`, `purchaseOrders`, `purchaseOrderLines`,
`extendedAmount`, `ledgerAccountID`, `capitalAsset`, ...) are aliases fixed when the tenant's
data sources are set up, so they are this connector's setup, not Workday's published names;
whether currency amounts come as decimal strings or JSON numbers (both are read exactly); the
sign Supplier Invoice Adjustments are stored with; the RaaS report field names, which are the
report's own XML aliases.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import ClassVar

import requests
from pydantic import Field, PrivateAttr

from erp_connector_dagster.erp.auth import request_token
from erp_connector_dagster.erp.base import (
    ChangeSummary,
    ErpSource,
    FirstSightings,
    RecordBatch,
    SyncWindow,
    resolve_secret,
    utc_timestamp,
)
from erp_connector_dagster.erp.http import (
    ErpAuthError,
    ErpHttpClient,
    ErpRequestError,
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

logger = logging.getLogger("erp_connector_dagster.erp.workday")

UTC = dt.timezone.utc
MAX_WQL_LIMIT = 10_000
# Documents named in one `IN (...)` of a line query; keeps the query text short.
KEYS_PER_QUERY = 50
DOCUMENT_TYPES = {
    "supplier invoice": SpendDocumentType.INVOICE,
    "supplier invoice adjustment": SpendDocumentType.CREDIT_NOTE,
    "procurement card transaction": SpendDocumentType.CARD_CHARGE,
}
INVOICE_FIELDS = (
    "workdayID",
    "invoiceNumber",
    "documentType",
    "invoiceDate",
    "supplierID",
    "currency",
    "invoiceStatus",
    "purchaseOrderNumber",
    "lastUpdated",
)
INVOICE_LINE_FIELDS = (
    "workdayID",
    "supplierInvoice",
    "lineNumber",
    "itemID",
    "itemDescription",
    "ledgerAccountID",
    "capitalAsset",
    "quantity",
    "unitOfMeasure",
    "extendedAmount",
)
ORDER_FIELDS = (
    "workdayID",
    "poNumber",
    "orderDate",
    "supplierID",
    "currency",
    "totalAmount",
    "status",
    "receiptStatus",
    "lastUpdated",
)
ORDER_LINE_FIELDS = (
    "workdayID",
    "purchaseOrder",
    "lineNumber",
    "itemID",
    "itemDescription",
    "quantity",
    "unitOfMeasure",
    "unitCost",
    "extendedAmount",
    "ledgerAccountID",
    "dueDate",
)


def workday_throttle_signal(response: requests.Response) -> float | None:
    """Workday answers 429 with `Retry-After` when an API client sends too much."""
    if response.status_code == 429:
        return retry_after_seconds(response) or 0.0
    return None


# --- Native value parsing ------------------------------------------------------------------


def parse_amount(value: object, name: str) -> Decimal:
    """A Workday currency or numeric value, given as a decimal string (or a JSON number)."""
    if value is None or isinstance(value, bool):
        raise ValueError(f"{name} is missing")
    try:
        number = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"{name} is not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} is not a number: {value!r}")
    return number


def parse_date(value: object) -> dt.date | None:
    """`2026-11-25`, or the XML date RaaS writes with the tenant offset: `2026-11-25-08:00`."""
    if not value:
        return None
    return dt.date.fromisoformat(str(value)[:10])


def parse_moment(value: object) -> dt.datetime | None:
    """A date-time in the tenant's zone (`...-08:00`), as UTC."""
    return utc_timestamp(str(value)) if value else None


def _single(value: object) -> object:
    """A single-instance value: a multi-instance field (a list of references) must hold one."""
    if isinstance(value, list):
        if len(value) > 1:
            raise ValueError(f"expected one instance, got {len(value)}: {value!r}")
        return value[0] if value else None
    return value


def descriptor(value: object) -> str | None:
    """The descriptor of a reference `{"id", "descriptor"}` (or a plain value)."""
    value = _single(value)
    if isinstance(value, dict):
        value = value.get("descriptor")
    text = str(value).strip() if value is not None else ""
    return text or None


def required_descriptor(row: dict, name: str) -> str:
    """The descriptor of a field that must be there, else a ValueError naming it."""
    text = descriptor(row.get(name))
    if text is None:
        raise ValueError(f"{name} is blank")
    return text


def reference_id(value: object) -> str | None:
    """The WID of a reference `{"id", "descriptor"}` (or a plain value)."""
    value = _single(value)
    return value.get("id") if isinstance(value, dict) else (str(value) if value else None)


def parse_flag(value: object, name: str) -> bool:
    """A boolean field: JSON true/false (or `1`/`0` text, as RaaS writes it); null is false."""
    value = _single(value)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "0", "true", "false"):
        return value.strip().lower() in ("1", "true")
    raise ValueError(f"{name} {value!r} is not a boolean")


def wql_string(value: str) -> str:
    """A WQL string literal: single quotes, inner quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def wql_moment(moment: dt.datetime) -> str:
    # Cut to milliseconds (Workday's precision), never rounded up, so the cursor stays inclusive.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def whole_number(value: object, name: str) -> int:
    number = parse_amount(value, name)
    if number != number.to_integral_value():
        raise ValueError(f"{name} {value!r} is not a whole number")
    return int(number)


class WorkdaySource(ErpSource):
    """Workday Financials: WQL and RaaS JSON over REST with an OAuth 2.0 refresh token."""

    erp_type: ClassVar[str] = "workday"
    api_version: ClassVar[str] = "WQL v1 and RaaS (customreport2) JSON"

    tenant: str = Field(description="Workday tenant name, as in /ccx/service/<tenant>.")
    client_id: str = Field(description="Client id of the registered integration API client.")
    client_secret: str = Field(description="Client secret of the API client.")
    refresh_token: str = Field(description="Refresh token issued to the integration user.")
    report_owner: str = Field(description="Account that owns the RaaS custom reports.")
    suppliers_report: str = Field(default="ERP_Connector_Suppliers")
    purchase_items_report: str = Field(default="ERP_Connector_Purchase_Items")
    inventory_report: str = Field(default="ERP_Connector_Inventory_Balances")

    _client: ErpHttpClient | None = PrivateAttr(default=None)

    # HTTP

    def _http(self) -> ErpHttpClient:
        if self._client is None:
            self._client = self.build_http_client(self._sign_in, workday_throttle_signal)
        return self._client

    def _sign_in(self, session: requests.Session) -> None:
        """Exchange the refresh token for a bearer token."""
        session.headers.pop("Authorization", None)
        response = request_token(
            session,
            f"{self.base_url.rstrip('/')}/ccx/oauth2/{self.tenant}/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": resolve_secret(self.refresh_token),
            },
            auth=(resolve_secret(self.client_id), resolve_secret(self.client_secret)),
            timeout=self.timeout_seconds,
        )
        if response.status_code != 200:
            try:
                reason = str(response.json().get("error", response.status_code))
            except ValueError:
                reason = f"HTTP {response.status_code}"
            raise ErpAuthError(
                self.connection_name,
                f"Workday refused the refresh-token grant ({reason})",
                response.status_code,
            )
        session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        logger.info("signed in to Workday", extra={"connection": self.connection_name})

    def _json(self, response: requests.Response, what: str) -> dict:
        try:
            # A JSON number (some tenants send currency as numbers) stays an exact decimal.
            return json.loads(response.text, parse_float=Decimal)
        except ValueError:
            raise ErpRequestError(self.connection_name, f"{what} did not return JSON") from None

    def _wql(self, query: str) -> Iterator[list[dict]]:
        """Every page of a WQL query's result."""
        limit = max(1, min(self.page_size, MAX_WQL_LIMIT))
        offset = 0
        while True:
            response = self._http().post(
                f"ccx/api/wql/v1/{self.tenant}/data",
                params={"limit": limit, "offset": offset},
                json={"query": query},
                headers={"Accept": "application/json"},
            )
            document = self._json(response, "WQL query")
            rows = document.get("data") or []
            yield rows
            offset += len(rows)
            if not rows or offset >= int(document.get("total", 0)):
                return

    def _report(self, report: str, **prompts: str) -> list[dict]:
        response = self._http().get(
            f"ccx/service/customreport2/{self.tenant}/{self.report_owner}/{report}",
            params={"format": "json", **prompts},
            headers={"Accept": "application/json"},
        )
        return self._json(response, f"report {report}").get("Report_Entry") or []

    # ErpSource

    def _probe(self) -> None:
        next(
            self._wql(
                "SELECT workdayID FROM purchaseOrders WHERE orderDate >= "
                f"{wql_string(dt.date.today().isoformat())}"
            )
        )

    def fetch(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        first = FirstSightings()
        if kind is RecordKind.SPEND:
            batches = self._spend(window)
        elif kind in (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE):
            batches = self._orders(kind, window)
        elif kind is RecordKind.INVENTORY:
            batches = self._inventory(window)
        else:
            batches = self._master(kind, window)
        for batch in batches:
            # Offset paging can repeat a row that moved between pages; keep the first.
            batch.records = first.keep(batch.records)
            yield batch

    def _conditions(self, window: SyncWindow, date_field: str) -> str:
        conditions = []
        if window.start is not None:
            conditions.append(f"{date_field} >= {wql_string(window.start.isoformat())}")
        if window.end is not None:
            conditions.append(f"{date_field} < {wql_string(window.end.isoformat())}")
        if window.changed_since is not None:
            conditions.append(f"lastUpdated >= {wql_string(wql_moment(window.changed_since))}")
        return f" WHERE {' AND '.join(conditions)}" if conditions else ""

    def _documents_and_lines(
        self,
        source: str,
        fields: tuple[str, ...],
        line_source: str,
        line_fields: tuple[str, ...],
        parent_field: str,
        window: SyncWindow,
        date_field: str,
    ) -> Iterator[tuple[dict[str, dict], list[dict]]]:
        """Headers chosen by the window, then their lines, a slice of headers at a time."""
        headers: dict[str, dict] = {}
        query = f"SELECT {', '.join(fields)} FROM {source}{self._conditions(window, date_field)}"
        for page in self._wql(query):
            headers.update({row["workdayID"]: row for row in page})
        wids = list(headers)
        for start in range(0, len(wids), KEYS_PER_QUERY):
            chosen = wids[start : start + KEYS_PER_QUERY]
            line_query = (
                f"SELECT {', '.join(line_fields)} FROM {line_source} WHERE {parent_field} IN "
                f"({', '.join(wql_string(w) for w in chosen)})"
            )
            lines = [line for page in self._wql(line_query) for line in page]
            yield {w: headers[w] for w in chosen}, lines

    def _with_headers(
        self,
        kind: RecordKind,
        headers: dict[str, dict],
        lines: list[dict],
        parent_field: str,
        line_noun: str,
        parent_noun: str,
    ) -> tuple[list[tuple[dict, dict]], list[RejectedRecord]]:
        """Each line with its header; a line whose header was not read is rejected, not dropped."""
        pairs: list[tuple[dict, dict]] = []
        rejected: list[RejectedRecord] = []
        for line in lines:
            try:
                header = headers.get(reference_id(line.get(parent_field)) or "")
            except ValueError:
                header = None
            if header is None:
                rejected.append(
                    RejectedRecord(
                        connection=self.connection_name,
                        kind=kind,
                        source_id=str(line.get("workdayID")),
                        reason=f"{line_noun} line refers to no {parent_noun} of this query: "
                        f"{line.get(parent_field)!r}",
                        payload={"line": line},
                    )
                )
            else:
                pairs.append((header, line))
        return pairs, rejected

    # Spend

    def _spend(self, window: SyncWindow) -> Iterator[RecordBatch]:
        for headers, lines in self._documents_and_lines(
            "supplierInvoices",
            INVOICE_FIELDS,
            "supplierInvoiceLines",
            INVOICE_LINE_FIELDS,
            "supplierInvoice",
            window,
            "invoiceDate",
        ):
            records: list[CanonicalRecord] = []
            pairs, rejected = self._with_headers(
                RecordKind.SPEND, headers, lines, "supplierInvoice", "supplier invoice", "invoice"
            )
            for header, line in pairs:
                try:
                    records.append(self._spend_record(header, line))
                except (ValueError, KeyError) as error:
                    rejected.append(
                        RejectedRecord(
                            connection=self.connection_name,
                            kind=RecordKind.SPEND,
                            source_id=f"{header.get('invoiceNumber')}/{line.get('workdayID')}",
                            reason=f"unreadable supplier invoice line: {error}",
                            payload={"invoice": header, "line": line},
                            partition_date=parse_date(header.get("invoiceDate")),
                        )
                    )
            yield _batch(records, rejected)

    def _spend_record(self, header: dict, line: dict) -> SpendRecord:
        invoice_date = parse_date(header.get("invoiceDate"))
        if invoice_date is None:
            raise ValueError("invoiceDate is blank")
        vendor_id = descriptor(header.get("supplierID"))
        if vendor_id is None:
            raise ValueError("supplierID is blank")
        kind = (descriptor(header.get("documentType")) or "supplier invoice").lower()
        document_type = DOCUMENT_TYPES.get(kind)
        if document_type is None:
            raise ValueError(f"documentType {kind!r} is not spend")
        currency = descriptor(header.get("currency"))
        if currency is None:
            raise ValueError("currency is blank")
        amount = parse_amount(line.get("extendedAmount"), "extendedAmount")
        quantity = line.get("quantity")
        quantity = parse_amount(quantity, "quantity") if quantity is not None else None
        if document_type is SpendDocumentType.CREDIT_NOTE:
            # Adjustments lower spend whichever sign the tenant stores them with.
            amount = -abs(amount)
            quantity = -abs(quantity) if quantity is not None else None
        return SpendRecord(
            connection=self.connection_name,
            source_id=str(line["workdayID"]),
            updated_at=parse_moment(header.get("lastUpdated")),
            status=(
                RecordStatus.VOIDED
                if descriptor(header.get("invoiceStatus")) == "Canceled"
                else RecordStatus.ACTIVE
            ),
            document_id=str(header["invoiceNumber"]),
            line_number=whole_number(line.get("lineNumber"), "lineNumber"),
            document_type=document_type,
            transaction_date=invoice_date,
            vendor_id=vendor_id,
            material_id=descriptor(line.get("itemID")),
            gl_account=descriptor(line.get("ledgerAccountID")),
            description=descriptor(line.get("itemDescription")),
            amount=amount,
            currency=currency,
            quantity=quantity,
            unit=descriptor(line.get("unitOfMeasure")),
            is_capex=parse_flag(line.get("capitalAsset"), "capitalAsset"),
            purchase_order_id=descriptor(header.get("purchaseOrderNumber")),
        )

    # Purchase orders

    def _orders(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        if kind is RecordKind.PURCHASE_ORDER:
            query = (
                f"SELECT {', '.join(ORDER_FIELDS)} FROM purchaseOrders"
                f"{self._conditions(window, 'orderDate')}"
            )
            for page in self._wql(query):
                yield self._order_batch(page)
            return
        for headers, lines in self._documents_and_lines(
            "purchaseOrders",
            ORDER_FIELDS,
            "purchaseOrderLines",
            ORDER_LINE_FIELDS,
            "purchaseOrder",
            window,
            "orderDate",
        ):
            records: list[CanonicalRecord] = []
            pairs, rejected = self._with_headers(
                kind, headers, lines, "purchaseOrder", "purchase order", "order"
            )
            for header, line in pairs:
                try:
                    records.append(self._order_line(header, line))
                except (ValueError, KeyError) as error:
                    rejected.append(
                        RejectedRecord(
                            connection=self.connection_name,
                            kind=kind,
                            source_id=str(line.get("workdayID")),
                            reason=f"unreadable purchase order line: {error}",
                            payload=line,
                            partition_date=parse_date(header.get("orderDate")),
                        )
                    )
            yield _batch(records, rejected)

    def _order_batch(self, rows: list[dict]) -> RecordBatch:
        records: list[CanonicalRecord] = []
        rejected: list[RejectedRecord] = []
        for row in rows:
            try:
                records.append(self._order(row))
            except (ValueError, KeyError) as error:
                rejected.append(
                    RejectedRecord(
                        connection=self.connection_name,
                        kind=RecordKind.PURCHASE_ORDER,
                        source_id=str(row.get("workdayID")),
                        reason=f"unreadable purchase order: {error}",
                        payload=row,
                        partition_date=parse_date(row.get("orderDate")),
                    )
                )
        return _batch(records, rejected)

    def _order(self, row: dict) -> PurchaseOrder:
        order_date = parse_date(row.get("orderDate"))
        if order_date is None:
            raise ValueError("orderDate is blank")
        status = descriptor(row.get("status")) or ""
        if status == "Closed":
            order_status = "closed"
        elif descriptor(row.get("receiptStatus")) == "Fully Received":
            order_status = "received"
        else:
            order_status = "open" if status in ("Issued", "Approved", "") else status.lower()
        return PurchaseOrder(
            connection=self.connection_name,
            source_id=str(row["workdayID"]),
            updated_at=parse_moment(row.get("lastUpdated")),
            status=RecordStatus.VOIDED if status == "Canceled" else RecordStatus.ACTIVE,
            purchase_order_id=str(row["poNumber"]),
            vendor_id=descriptor(row.get("supplierID")),
            order_date=order_date,
            currency=required_descriptor(row, "currency"),
            total_amount=parse_amount(row.get("totalAmount"), "totalAmount"),
            order_status=order_status,
        )

    def _order_line(self, header: dict, line: dict) -> PurchaseOrderLine:
        order_date = parse_date(header.get("orderDate"))
        if order_date is None:
            raise ValueError("orderDate is blank")
        return PurchaseOrderLine(
            connection=self.connection_name,
            source_id=str(line["workdayID"]),
            updated_at=parse_moment(header.get("lastUpdated")),
            purchase_order_id=str(header["poNumber"]),
            line_number=whole_number(line.get("lineNumber"), "lineNumber"),
            order_date=order_date,
            material_id=descriptor(line.get("itemID")),
            description=descriptor(line.get("itemDescription")),
            quantity=parse_amount(line.get("quantity"), "quantity"),
            unit=descriptor(line.get("unitOfMeasure")),
            unit_price=parse_amount(line.get("unitCost"), "unitCost"),
            amount=parse_amount(line.get("extendedAmount"), "extendedAmount"),
            currency=required_descriptor(header, "currency"),
            gl_account=descriptor(line.get("ledgerAccountID")),
            delivery_date=parse_date(line.get("dueDate")),
        )

    # RaaS: inventory and master data

    def _inventory(self, window: SyncWindow) -> Iterator[RecordBatch]:
        today = dt.datetime.now(UTC).date()
        start = window.start or (window.changed_since.date() if window.changed_since else today)
        end = window.end or today + dt.timedelta(days=1)
        day = start
        while day < end:
            records: list[CanonicalRecord] = []
            rejected: list[RejectedRecord] = []
            for entry in self._report(self.inventory_report, As_Of_Date=day.isoformat()):
                try:
                    records.append(self._balance(entry, day))
                except (ValueError, KeyError) as error:
                    rejected.append(
                        RejectedRecord(
                            connection=self.connection_name,
                            kind=RecordKind.INVENTORY,
                            source_id=f"{entry.get('Item_ID')}@{entry.get('Location')}",
                            reason=f"unreadable inventory balance: {error}",
                            payload=entry,
                            partition_date=day,
                        )
                    )
            if records or rejected:
                yield _batch(records, rejected)
            day += dt.timedelta(days=1)

    def _balance(self, entry: dict, day: dt.date) -> InventorySnapshot:
        def optional(name: str) -> Decimal | None:
            return parse_amount(entry[name], name) if name in entry else None

        return InventorySnapshot(
            connection=self.connection_name,
            source_id=str(entry.get("workdayID") or f"{entry['Item_ID']}@{entry['Location']}"),
            snapshot_date=parse_date(entry.get("As_Of_Date")) or day,
            material_id=str(entry["Item_ID"]),
            location=str(entry["Location"]),
            quantity=parse_amount(entry.get("Quantity_On_Hand"), "Quantity_On_Hand"),
            unit=entry.get("Unit_of_Measure"),
            unit_cost=optional("Unit_Cost"),
            value=optional("Total_Value"),
            currency=entry.get("Currency"),
        )

    def _master(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        report = (
            self.suppliers_report if kind is RecordKind.VENDOR else (self.purchase_items_report)
        )
        convert = self._supplier if kind is RecordKind.VENDOR else self._item
        records: list[CanonicalRecord] = []
        rejected: list[RejectedRecord] = []
        for entry in self._report(report):
            try:
                record = convert(entry)
            except (ValueError, KeyError) as error:
                rejected.append(
                    RejectedRecord(
                        connection=self.connection_name,
                        kind=kind,
                        source_id=str(entry.get("workdayID")),
                        reason=f"unreadable entry: {error}",
                        payload=entry,
                    )
                )
                continue
            # A report has no change filter; the cursor is applied here, still inclusive.
            if window.changed_since is None or (
                record.updated_at is None or record.updated_at >= window.changed_since
            ):
                records.append(record)
        yield _batch(records, rejected)

    def _supplier(self, entry: dict) -> Vendor:
        return Vendor(
            connection=self.connection_name,
            source_id=str(entry.get("workdayID") or entry["Supplier_ID"]),
            updated_at=parse_moment(entry.get("Last_Updated")),
            status=(
                RecordStatus.ACTIVE
                if entry.get("Supplier_Status", "Active") == "Active"
                else RecordStatus.VOIDED
            ),
            vendor_id=str(entry["Supplier_ID"]),
            name=str(entry.get("Supplier_Name") or entry["Supplier_ID"]),
            country=entry.get("Country_ISO_Code"),
            industry_code=entry.get("NAICS_Code"),
            tax_id=entry.get("Tax_ID"),
            currency=entry.get("Default_Currency"),
        )

    def _item(self, entry: dict) -> Material:
        return Material(
            connection=self.connection_name,
            source_id=str(entry.get("workdayID") or entry["Item_ID"]),
            updated_at=parse_moment(entry.get("Last_Updated")),
            material_id=str(entry["Item_ID"]),
            description=str(entry.get("Item_Name") or entry["Item_ID"]),
            material_group=entry.get("Spend_Category"),
            base_unit=entry.get("Unit_of_Measure"),
            commodity_code=entry.get("Commodity_Code"),
        )

    # Change detection

    def changed_days(self, kind: RecordKind, since: dt.datetime) -> ChangeSummary:
        summary = ChangeSummary()
        if kind not in (
            RecordKind.SPEND,
            RecordKind.PURCHASE_ORDER,
            RecordKind.PURCHASE_ORDER_LINE,
        ):
            return summary
        source, date_field = (
            ("supplierInvoices", "invoiceDate")
            if kind is RecordKind.SPEND
            else ("purchaseOrders", "orderDate")
        )
        query = (
            f"SELECT {date_field}, lastUpdated FROM {source} WHERE lastUpdated >= "
            f"{wql_string(wql_moment(since))}"
        )
        for page in self._wql(query):
            for row in page:
                day, moment = parse_date(row.get(date_field)), parse_moment(row.get("lastUpdated"))
                if day is not None:
                    summary.days.add(day)
                if moment is not None and (
                    summary.high_watermark is None or moment > summary.high_watermark
                ):
                    summary.high_watermark = moment
        return summary


def _batch(records: list[CanonicalRecord], rejected: list[RejectedRecord]) -> RecordBatch:
    stamps = [record.updated_at for record in records if record.updated_at is not None]
    return RecordBatch(
        records=records, rejected=rejected, high_watermark=max(stamps) if stamps else None
    )
