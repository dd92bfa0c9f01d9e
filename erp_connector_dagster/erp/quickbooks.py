"""QuickBooks Online as an ERP source: Accounting API v3 (minor version 75) over OAuth 2.0.

What is read, and from where:

* spend: `Bill` (supplier invoices), `VendorCredit` (credit notes, stored positive and turned
  negative here) and `Purchase` (card charges when `PaymentType` is `CreditCard`; a purchase
  with `Credit: true` is a card refund) with their expense lines;
* purchase orders: `PurchaseOrder` with its item lines;
* inventory: the `InventoryValuationSummary` report as of the snapshot day, once per location
  (QuickBooks "Department"), giving quantity, asset value and average cost per item;
* vendors: `Vendor` (inactive vendors are the ones QuickBooks calls deleted);
* materials: `Item`, whose parent category is the material group.

Paging is `STARTPOSITION`/`MAXRESULTS` (at most 1000) ordered by `Id`; the change filter is
`MetaData.LastUpdatedTime >=` (inclusive, whole seconds). Deletions come from the change data
capture endpoint (`/cdc`, 30 days back at most), whose tombstones carry `status: Deleted`.
Access tokens come from a refresh token (QuickBooks has no client-credentials grant); the
token endpoint may rotate the refresh token, and the newest one is kept for the next renewal.
Throttling is a 429 `ThrottleExceeded` (error 003001) without a Retry-After header, so the
wait is `throttle_wait_seconds` unless the server ever names one.

A transaction without `CurrencyRef` (a company without multicurrency may leave it out) is in
its vendor's currency, else in that of the account it was paid from. `TxnDate` is the day it
names, with or without the company's UTC offset after it. A line of another detail type that
carries an amount is rejected with the reason rather than passed over.

Line references are resolved through the company's lists: vendor and item ids to their codes
(`AcctNum`, `Sku`), account ids to account numbers, and an item line's account to its item's
expense account. A fixed-asset account marks a line as capital expenditure.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar

import requests
from oauthlib.oauth2 import WebApplicationClient
from pydantic import Field, PrivateAttr, ValidationError

from erp_connector_dagster.erp.auth import (
    parse_token,
    request_token,
    token_expires_at,
    token_running_out,
)
from erp_connector_dagster.erp.base import (
    ChangeSummary,
    ErpSource,
    LatestVersions,
    RecordBatch,
    RecordRejected,
    SyncWindow,
    required_decimal,
    resolve_secret,
    utc_timestamp,
)
from erp_connector_dagster.erp.http import (
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

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
MAX_RESULTS = 1000
CDC_MAX_DAYS = 30
SPEND_ENTITIES = ("Bill", "VendorCredit", "Purchase")
EXPENSE_DETAILS = ("ItemBasedExpenseLineDetail", "AccountBasedExpenseLineDetail")
FIXED_ASSET_ACCOUNT_TYPE = "Fixed Asset"
# A QuickBooks date: `YYYY-MM-DD`, sometimes with the company's UTC offset (`2014-09-19-07:00`)
# or as a local date-time; the calendar day written is the day, whatever the offset.
_QBO_DATE = re.compile(
    r"(\d{4}-\d{2}-\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?"
)


def _optional_decimal(value: object, name: str) -> Decimal | None:
    return None if value is None or value == "" else required_decimal(value, name)


def _date(value: object, name: str) -> dt.date:
    """A QuickBooks date as the calendar day it names (an offset or a time does not move it)."""
    if value is None or value == "":
        raise RecordRejected(f"{name} is missing")
    match = _QBO_DATE.fullmatch(str(value).strip())
    try:
        if match is None:
            raise ValueError
        return dt.date.fromisoformat(match[1])
    except ValueError:
        raise RecordRejected(f"{name} is not a date: {str(value)[:40]!r}") from None


def parse_timestamp(value: str | None) -> dt.datetime | None:
    """A QuickBooks timestamp (local time with its UTC offset) as UTC."""
    if not value:
        return None
    try:
        return utc_timestamp(str(value))
    except ValueError:
        raise RecordRejected(f"not a QuickBooks timestamp: {str(value)[:40]!r}") from None


def _updated_at(entity: dict) -> dt.datetime | None:
    metadata = entity.get("MetaData")
    return parse_timestamp(metadata.get("LastUpdatedTime") if isinstance(metadata, dict) else None)


def _line_number(line: dict, position: int) -> int:
    """The line's `LineNum` (an integer, maybe written as text), else its position."""
    value = line.get("LineNum")
    if value is None or value == "":
        return position
    try:
        number = int(str(value))
    except ValueError:
        raise RecordRejected(f"LineNum is not a whole number: {str(value)[:20]!r}") from None
    if number < 1:
        raise RecordRejected(f"LineNum {number} is not positive")
    return number


def _query_time(moment: dt.datetime) -> str:
    # QuickBooks compares whole seconds; flooring keeps the filter inclusive.
    return moment.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat()


def _as_list(value: object) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _ref_value(entity: dict, name: str) -> str | None:
    ref = entity.get(name)
    return str(ref["value"]) if isinstance(ref, dict) and ref.get("value") else None


@dataclass
class QuickBooksReference:
    """The company's lists that turn QuickBooks ids into business codes."""

    vendor_codes: dict[str, str] = field(default_factory=dict)
    item_codes: dict[str, str] = field(default_factory=dict)
    item_expense_accounts: dict[str, str] = field(default_factory=dict)
    account_numbers: dict[str, str] = field(default_factory=dict)
    capex_accounts: set[str] = field(default_factory=set)
    categories: dict[str, str] = field(default_factory=dict)
    departments: dict[str, str] = field(default_factory=dict)
    # A transaction without `CurrencyRef` is in its vendor's currency (QuickBooks makes the two
    # the same), or in that of the bank or card account it was paid from.
    vendor_currencies: dict[str, str] = field(default_factory=dict)
    account_currencies: dict[str, str] = field(default_factory=dict)

    def is_vendor(self, entity_id: str) -> bool:
        return entity_id in self.vendor_codes

    def vendor_code(self, vendor_id: str | None) -> str | None:
        if vendor_id is None:
            return None
        return self.vendor_codes.get(vendor_id, vendor_id)

    def item_code(self, item_ref: dict | None) -> str | None:
        if not isinstance(item_ref, dict) or not item_ref.get("value"):
            return None
        # Without the item list, the item's name is its identifier in QuickBooks.
        return self.item_codes.get(str(item_ref["value"]), item_ref.get("name") or None)

    def account_number(self, account_id: str | None) -> str | None:
        if account_id is None:
            return None
        return self.account_numbers.get(account_id, account_id)

    def item_account(self, item_ref: dict | None) -> str | None:
        if not isinstance(item_ref, dict):
            return None
        return self.item_expense_accounts.get(str(item_ref.get("value")))


def vendor_code_of(vendor: dict) -> str:
    """The vendor's business code: its account number when the company keeps one, else its id."""
    return str(vendor.get("AcctNum") or vendor["Id"])


def item_code_of(item: dict) -> str:
    """The item's business code: its SKU when set, else its (unique) name."""
    return str(item.get("Sku") or item.get("Name") or item["Id"])


def vendor_from_entity(entity: dict, connection: str) -> Vendor:
    """A QuickBooks `Vendor` as a canonical vendor."""
    address = entity.get("BillAddr") or {}
    if not entity.get("Id"):
        raise RecordRejected("Id is missing")
    return Vendor(
        connection=connection,
        source_id=f"Vendor:{entity['Id']}",
        updated_at=_updated_at(entity),
        # QuickBooks "deletes" a vendor by making it inactive; it stays in the list.
        status=RecordStatus.ACTIVE if entity.get("Active", True) else RecordStatus.DELETED,
        vendor_id=vendor_code_of(entity),
        name=entity.get("CompanyName") or entity.get("DisplayName") or vendor_code_of(entity),
        country=address.get("Country") or None,
        tax_id=entity.get("TaxIdentifier") or None,
        currency=_ref_value(entity, "CurrencyRef"),
    )


def material_from_item(
    entity: dict, connection: str, categories: dict[str, str] | None = None
) -> Material | None:
    """A QuickBooks `Item` as a canonical material; categories are not materials."""
    if entity.get("Type") == "Category":
        return None
    if not entity.get("Id"):
        raise RecordRejected("Id is missing")
    if not (entity.get("Sku") or entity.get("Name")):
        raise RecordRejected("Name is missing")
    parent = entity.get("ParentRef") or {}
    group = parent.get("name") or (categories or {}).get(str(parent.get("value")))
    return Material(
        connection=connection,
        source_id=f"Item:{entity['Id']}",
        updated_at=_updated_at(entity),
        status=RecordStatus.ACTIVE if entity.get("Active", True) else RecordStatus.DELETED,
        material_id=item_code_of(entity),
        description=(
            entity.get("Description")
            or entity.get("PurchaseDesc")
            or entity.get("Name")
            or item_code_of(entity)
        ),
        material_group=group or None,
    )


def _reject(
    connection: str,
    kind: RecordKind,
    source_id: str,
    reason: str,
    payload: dict,
    day: dt.date | None = None,
) -> RejectedRecord:
    return RejectedRecord(
        connection=connection,
        kind=kind,
        source_id=source_id,
        reason=reason,
        payload=payload,
        partition_date=day,
    )


def _vendor_of(entity_name: str, entity: dict, reference: QuickBooksReference) -> str | None:
    """The QuickBooks id of the document's vendor, if it names one."""
    if entity_name != "Purchase":
        return _ref_value(entity, "VendorRef")
    payee = entity.get("EntityRef")
    if not isinstance(payee, dict) or not payee.get("value"):
        return None
    payee_id = str(payee["value"])
    kind = payee.get("type")
    # A payee of unstated type counts as a vendor when the vendor list knows its id.
    if kind == "Vendor" or (kind in (None, "") and reference.is_vendor(payee_id)):
        return payee_id
    return None


def _currency_of(
    entity_name: str, entity: dict, vendor_id: str | None, reference: QuickBooksReference
) -> str:
    currency = _ref_value(entity, "CurrencyRef")
    if currency:
        return currency
    currency = reference.vendor_currencies.get(vendor_id or "")
    if not currency and entity_name == "Purchase":
        currency = reference.account_currencies.get(_ref_value(entity, "AccountRef") or "")
    if not currency:
        raise RecordRejected("CurrencyRef is missing and neither vendor nor account has one")
    return currency


def spend_from_entity(
    entity_name: str, entity: dict, connection: str, reference: QuickBooksReference | None = None
) -> tuple[list[SpendRecord], list[RejectedRecord]]:
    """The expense lines of a Bill, VendorCredit or Purchase as signed spend records.

    Line `Amount` is net of tax whatever `GlobalTaxCalculation` says (a tax-inclusive line
    carries its gross in `TaxInclusiveAmt`). A line of another detail type that moves money
    is rejected with its reason; an empty one (no amount) is nothing to carry.
    """
    reference = reference or QuickBooksReference()
    source_id = f"{entity_name}:{entity.get('Id')}"
    credit = entity_name == "VendorCredit" or (
        entity_name == "Purchase" and entity.get("Credit") in (True, "true")
    )
    if credit:
        document_type = SpendDocumentType.CREDIT_NOTE
    elif entity_name == "Purchase" and entity.get("PaymentType") == "CreditCard":
        document_type = SpendDocumentType.CARD_CHARGE
    else:
        document_type = SpendDocumentType.INVOICE
    sign = Decimal(-1) if credit else Decimal(1)
    try:
        vendor_ref = _vendor_of(entity_name, entity, reference)
        header = {
            "document_id": str(entity.get("DocNumber") or entity["Id"]),
            "document_type": document_type,
            "transaction_date": _date(entity.get("TxnDate"), "TxnDate"),
            "currency": _currency_of(entity_name, entity, vendor_ref, reference),
            "updated_at": _updated_at(entity),
        }
    except (RecordRejected, KeyError) as error:
        reason = f"{error.args[0]} is missing" if isinstance(error, KeyError) else str(error)
        return [], [_reject(connection, RecordKind.SPEND, source_id, reason, entity)]
    vendor_id = reference.vendor_code(vendor_ref)

    records, rejected = [], []
    lines = entity.get("Line") or []
    position = 0
    for line in lines if isinstance(lines, list) else []:
        if not isinstance(line, dict):
            continue
        expense = line.get("DetailType") in EXPENSE_DETAILS
        if expense:
            position += 1
        try:
            if not expense:
                amount = _optional_decimal(line.get("Amount"), "Amount")
                if amount is None or amount == 0:
                    continue
                raise RecordRejected(
                    f"DetailType {str(line.get('DetailType'))[:40]!r} is not an expense line"
                )
            records.append(
                _spend_line(
                    line, position, header, vendor_id, sign, connection, source_id, reference
                )
            )
        except (RecordRejected, ValidationError) as error:
            reason = str(error) if isinstance(error, RecordRejected) else _validation(error)
            rejected.append(
                _reject(
                    connection,
                    RecordKind.SPEND,
                    source_id,
                    f"line {line.get('LineNum') or line.get('Id') or position}: {reason}",
                    {"document": entity, "line": line},
                    header["transaction_date"],
                )
            )
    return records, rejected


def _validation(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"


def _spend_line(
    line: dict,
    position: int,
    header: dict,
    vendor_id: str | None,
    sign: Decimal,
    connection: str,
    source_id: str,
    reference: QuickBooksReference,
) -> SpendRecord:
    amount = required_decimal(line.get("Amount"), "Amount") * sign
    detail = line.get(line["DetailType"])
    detail = detail if isinstance(detail, dict) else {}
    material_id = quantity = None
    if line["DetailType"] == "ItemBasedExpenseLineDetail":
        item_ref = detail.get("ItemRef")
        material_id = reference.item_code(item_ref)
        quantity = _optional_decimal(detail.get("Qty"), "Qty")
        account_id = reference.item_account(item_ref)
    else:
        account_id = _ref_value(detail, "AccountRef")
    if quantity is not None:
        quantity *= sign
    return SpendRecord(
        connection=connection,
        source_id=source_id,
        line_number=_line_number(line, position),
        vendor_id=vendor_id,
        material_id=material_id,
        gl_account=reference.account_number(account_id),
        description=line.get("Description") or None,
        amount=amount,
        quantity=quantity,
        is_capex=account_id in reference.capex_accounts,
        **header,
    )


def purchase_order_from_entity(
    entity: dict, connection: str, reference: QuickBooksReference | None = None
) -> tuple[list[CanonicalRecord], list[RejectedRecord]]:
    """A QuickBooks `PurchaseOrder` as a header and its lines (or the reason it cannot be).

    A line without `Qty` is one unit and one without `UnitPrice` costs its amount; zero is
    kept as written.
    """
    reference = reference or QuickBooksReference()
    source_id = f"PurchaseOrder:{entity.get('Id')}"
    try:
        order_date = _date(entity.get("TxnDate"), "TxnDate")
        vendor_ref = _ref_value(entity, "VendorRef")
        currency = _currency_of("PurchaseOrder", entity, vendor_ref, reference)
        common = {
            "connection": connection,
            "source_id": source_id,
            "updated_at": _updated_at(entity),
            "purchase_order_id": str(entity.get("DocNumber") or entity["Id"]),
            "order_date": order_date,
            "currency": currency,
        }
        header = PurchaseOrder(
            **common,
            vendor_id=reference.vendor_code(vendor_ref),
            total_amount=required_decimal(entity.get("TotalAmt"), "TotalAmt"),
            order_status=str(entity.get("POStatus") or "Open").lower(),
        )
        lines: list[CanonicalRecord] = []
        position = 0
        for line in entity.get("Line") or []:
            if line.get("DetailType") not in EXPENSE_DETAILS:
                if _optional_decimal(line.get("Amount"), "Amount") in (None, 0):
                    continue
                raise RecordRejected(
                    f"line {line.get('LineNum') or line.get('Id')}: DetailType"
                    f" {str(line.get('DetailType'))[:40]!r} is not an order line"
                )
            position += 1
            detail = line.get(line["DetailType"])
            detail = detail if isinstance(detail, dict) else {}
            amount = required_decimal(line.get("Amount"), "Amount")
            item_ref = detail.get("ItemRef")
            quantity = _optional_decimal(detail.get("Qty"), "Qty")
            unit_price = _optional_decimal(detail.get("UnitPrice"), "UnitPrice")
            account_id = (
                reference.item_account(item_ref) if item_ref else _ref_value(detail, "AccountRef")
            )
            lines.append(
                PurchaseOrderLine(
                    **common,
                    line_number=_line_number(line, position),
                    material_id=reference.item_code(item_ref),
                    description=line.get("Description") or None,
                    quantity=Decimal("1") if quantity is None else quantity,
                    unit_price=amount if unit_price is None else unit_price,
                    amount=amount,
                    gl_account=reference.account_number(account_id),
                )
            )
    except (RecordRejected, ValidationError, KeyError, AttributeError) as error:
        if isinstance(error, ValidationError):
            reason = _validation(error)
        elif isinstance(error, KeyError):
            reason = f"{error.args[0]} is missing"
        elif isinstance(error, AttributeError):
            reason = "a line is not an object"
        else:
            reason = str(error)
        return [], [_reject(connection, RecordKind.PURCHASE_ORDER, source_id, reason, entity)]
    return [header, *lines], []


def _report_rows(rows: dict | None) -> Iterator[dict]:
    for row in (rows or {}).get("Row", []):
        if row.get("type") == "Data" or ("ColData" in row and "type" not in row):
            yield row
        yield from _report_rows(row.get("Rows"))


def inventory_from_report(
    report: dict,
    connection: str,
    day: dt.date,
    location: str,
    reference: QuickBooksReference | None = None,
) -> tuple[list[InventorySnapshot], list[RejectedRecord]]:
    """The rows of an InventoryValuationSummary report as snapshots at one location."""
    reference = reference or QuickBooksReference()
    titles = [column.get("ColTitle", "") for column in report["Columns"]["Column"]]
    index = {title: position for position, title in enumerate(titles)}
    currency = report.get("Header", {}).get("Currency")
    snapshots, rejected = [], []
    for row in _report_rows(report.get("Rows")):
        cells = row["ColData"]
        item = cells[0]
        source_id = f"InventoryValuationSummary:{day}:{location}:{item.get('id') or item['value']}"

        def cell(title: str, cells: list[dict] = cells) -> str | None:
            position = index.get(title)
            return cells[position].get("value") if position is not None else None

        try:
            material_id = cell("SKU") or reference.item_code(
                {"value": item.get("id"), "name": item.get("value")}
            )
            if not material_id:
                raise RecordRejected("the row names no item")
            snapshots.append(
                InventorySnapshot(
                    connection=connection,
                    source_id=source_id,
                    snapshot_date=day,
                    material_id=material_id,
                    location=location,
                    quantity=required_decimal(cell("Qty"), "Qty"),
                    unit_cost=_optional_decimal(cell("Calc. Avg"), "Calc. Avg"),
                    value=_optional_decimal(cell("Asset Value"), "Asset Value"),
                    currency=currency,
                )
            )
        except (RecordRejected, ValidationError) as error:
            reason = _validation(error) if isinstance(error, ValidationError) else str(error)
            rejected.append(_reject(connection, RecordKind.INVENTORY, source_id, reason, row, day))
    return snapshots, rejected


class QuickBooksSource(ErpSource):
    """A QuickBooks Online company (realm) read through the Accounting API v3."""

    erp_type: ClassVar[str] = "quickbooks"
    api_version: ClassVar[str] = "Accounting API v3, minorversion 75"
    supported_kinds: ClassVar[frozenset[RecordKind]] = frozenset(RecordKind)
    # Canonical fields QuickBooks has no place for (or keeps only coarsely): no units of
    # measure, no industry or commodity codes, only Open/Closed order statuses, no line dates.
    unmapped_fields: ClassVar[dict[RecordKind, frozenset[str]]] = {
        RecordKind.VENDOR: frozenset({"industry_code"}),
        RecordKind.MATERIAL: frozenset({"base_unit", "commodity_code"}),
        RecordKind.SPEND: frozenset({"unit"}),
        RecordKind.PURCHASE_ORDER: frozenset({"order_status"}),
        RecordKind.PURCHASE_ORDER_LINE: frozenset({"unit", "delivery_date"}),
        RecordKind.INVENTORY: frozenset({"unit"}),
    }

    realm_id: str = Field(description="QuickBooks company id (realmId).")
    client_id: str = Field(description="OAuth 2.0 client id of the Intuit app.")
    client_secret: str = Field(description="OAuth 2.0 client secret (from the environment).")
    refresh_token: str = Field(description="OAuth 2.0 refresh token (from the environment).")
    token_url: str = Field(
        default=DEFAULT_TOKEN_URL,
        description="Token endpoint; a path starting with / is taken relative to base_url.",
    )
    minor_version: int = Field(default=75, description="Accounting API minor version.")
    throttle_wait_seconds: float = Field(
        default=2.0, description="Wait after a ThrottleExceeded answer that names no delay."
    )
    inventory_location: str = Field(
        default="ALL", description="Location of stock in a company that tracks no locations."
    )

    _http: ErpHttpClient | None = PrivateAttr(default=None)
    _token_expires_at: float = PrivateAttr(default=0.0)
    _current_refresh_token: str | None = PrivateAttr(default=None)
    _reference: QuickBooksReference | None = PrivateAttr(default=None)

    # Connection

    def _client(self) -> ErpHttpClient:
        if self._http is None:
            self._http = self.build_http_client(self._authenticate, self._throttle_signal)
        return self._http

    def _throttle_signal(self, response: requests.Response) -> float | None:
        if response.status_code != 429:
            return None
        return retry_after_seconds(response) or self.throttle_wait_seconds

    def _token_endpoint(self) -> str:
        if self.token_url.startswith("/"):
            return self.base_url.rstrip("/") + self.token_url
        return self.token_url

    def _authenticate(self, session: requests.Session) -> None:
        """Trade the refresh token for an access token; keep the refresh token it returns."""
        oauth = WebApplicationClient(self.client_id)
        body = oauth.prepare_refresh_body(
            refresh_token=self._current_refresh_token or resolve_secret(self.refresh_token)
        )
        response = request_token(
            session,
            self._token_endpoint(),
            data=body,
            auth=(self.client_id, resolve_secret(self.client_secret)),
            timeout=self.timeout_seconds,
        )
        token = parse_token(oauth, response, self.connection_name)
        session.headers["Authorization"] = f"Bearer {token['access_token']}"
        session.headers["Accept"] = "application/json"
        self._token_expires_at = token_expires_at(token, 3600)
        if token.get("refresh_token"):
            self._current_refresh_token = token["refresh_token"]
        logger.info("QuickBooks access token renewed", extra={"connection": self.connection_name})

    def _get(self, path: str, params: dict[str, str]) -> dict:
        client = self._client()
        if token_running_out(self._token_expires_at):
            client.reauthenticate()
        response = client.get(
            f"v3/company/{self.realm_id}/{path}",
            params={**params, "minorversion": str(self.minor_version)},
        )
        try:
            return response.json(parse_float=Decimal)
        except json.JSONDecodeError:
            raise ErpRequestError(
                self.connection_name, f"GET {path} answered something that is not JSON"
            ) from None

    def _query_pages(
        self,
        entity: str,
        conditions: list[str],
        fields: str = "*",
        page_size: int | None = None,
    ) -> Iterator[list[dict]]:
        """Pages of a query, ordered by Id; a short page is the last one."""
        size = max(1, min(page_size or self.page_size, MAX_RESULTS))
        where = f" where {' and '.join(conditions)}" if conditions else ""
        position = 1
        while True:
            query = (
                f"select {fields} from {entity}{where} orderby Id"
                f" startposition {position} maxresults {size}"
            )
            body = self._get("query", {"query": query})
            rows = self._query_rows(body, entity)
            yield rows
            if len(rows) < size:
                return
            position += size

    def _query_rows(self, body: object, entity: str) -> list[dict]:
        """The entities of a query answer; `{"QueryResponse": {}}` is an empty page.

        A `Fault` in the body, or an answer that is not a query response, is an error rather
        than an empty page, so a failed read never passes for "no records".
        """
        if not isinstance(body, dict) or "Fault" in body or "QueryResponse" not in body:
            fault = body.get("Fault") if isinstance(body, dict) else None
            errors = (fault or {}).get("Error") if isinstance(fault, dict) else None
            detail = ""
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                detail = f": {errors[0].get('code', '')} {errors[0].get('Message', '')}".rstrip()
            raise ErpRequestError(
                self.connection_name, f"query of {entity} answered no QueryResponse{detail}"
            )
        response = body["QueryResponse"] or {}
        rows = response.get(entity) if isinstance(response, dict) else None
        if rows is None:
            return []
        if not isinstance(rows, list):
            rows = [rows]
        return [row for row in rows if isinstance(row, dict)]

    def _reference_lists(self, refresh: bool = False) -> QuickBooksReference:
        if self._reference is not None and not refresh:
            return self._reference
        reference = QuickBooksReference()
        every = ["Active IN (true, false)"]
        # Reference lists are small master data: read them in the largest pages allowed.
        for page in self._query_pages("Account", every, page_size=MAX_RESULTS):
            for account in page:
                reference.account_numbers[account["Id"]] = account.get("AcctNum") or account["Id"]
                if _ref_value(account, "CurrencyRef"):
                    reference.account_currencies[account["Id"]] = _ref_value(account, "CurrencyRef")
                if account.get("AccountType") == FIXED_ASSET_ACCOUNT_TYPE:
                    reference.capex_accounts.add(account["Id"])
        for page in self._query_pages("Vendor", every, page_size=MAX_RESULTS):
            reference.vendor_codes.update({v["Id"]: vendor_code_of(v) for v in page})
            reference.vendor_currencies.update(
                {
                    v["Id"]: _ref_value(v, "CurrencyRef")
                    for v in page
                    if _ref_value(v, "CurrencyRef")
                }
            )
        for page in self._query_pages("Item", every, page_size=MAX_RESULTS):
            for item in page:
                if item.get("Type") == "Category":
                    reference.categories[item["Id"]] = item["Name"]
                    continue
                reference.item_codes[item["Id"]] = item_code_of(item)
                expense = _ref_value(item, "ExpenseAccountRef")
                if expense:
                    reference.item_expense_accounts[item["Id"]] = expense
        for page in self._query_pages("Department", [], page_size=MAX_RESULTS):
            reference.departments.update({d["Id"]: d["Name"] for d in page})
        self._reference = reference
        return reference

    # ErpSource

    def _probe(self) -> None:
        self._get(f"companyinfo/{self.realm_id}", {})

    def fetch(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        """Yield batches of canonical records of `kind` inside `window`, a page at a time."""
        latest = LatestVersions()
        for records, rejected, watermark in self._pages(kind, window):
            yield RecordBatch(
                records=latest.keep(records), rejected=rejected, high_watermark=watermark
            )
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
            yield from self._master_pages("Vendor", window, vendor_from_entity)
        else:
            categories = self._reference_lists().categories
            yield from self._master_pages(
                "Item", window, lambda item, name: material_from_item(item, name, categories)
            )

    @staticmethod
    def _window_conditions(window: SyncWindow, date_field: str | None) -> list[str]:
        conditions = []
        if date_field and window.start is not None:
            conditions.append(f"{date_field} >= '{window.start.isoformat()}'")
        if date_field and window.end is not None:
            conditions.append(f"{date_field} < '{window.end.isoformat()}'")
        if window.changed_since is not None:
            conditions.append(f"MetaData.LastUpdatedTime >= '{_query_time(window.changed_since)}'")
        return conditions

    @staticmethod
    def _watermark(entities: list[dict]) -> dt.datetime | None:
        stamps = []
        for entity in entities:
            try:
                stamps.append(_updated_at(entity))
            except RecordRejected:
                continue  # the entity itself is rejected for it
        stamps = [stamp for stamp in stamps if stamp is not None]
        return max(stamps) if stamps else None

    def _spend_pages(self, window: SyncWindow):
        reference = self._reference_lists()
        for entity_name in SPEND_ENTITIES:
            for page in self._query_pages(entity_name, self._window_conditions(window, "TxnDate")):
                # A vendor new since the lists were read (a purchase's payee may be one).
                payees = {
                    _ref_value(e, "VendorRef")
                    or (
                        _ref_value(e, "EntityRef")
                        if (e.get("EntityRef") or {}).get("type") in (None, "", "Vendor")
                        else None
                    )
                    for e in page
                }
                if payees - {None} - set(reference.vendor_codes):
                    reference = self._reference_lists(refresh=True)
                records, rejected = [], []
                for entity in page:
                    lines, refused = spend_from_entity(
                        entity_name, entity, self.connection_name, reference
                    )
                    records.extend(line for line in lines if window.contains(line.partition_date))
                    rejected.extend(refused)
                yield records, rejected, self._watermark(page)

    def _purchase_order_pages(self, kind: RecordKind, window: SyncWindow):
        reference = self._reference_lists()
        wanted = PurchaseOrder if kind is RecordKind.PURCHASE_ORDER else PurchaseOrderLine
        for page in self._query_pages("PurchaseOrder", self._window_conditions(window, "TxnDate")):
            records, rejected = [], []
            for entity in page:
                parsed, refused = purchase_order_from_entity(
                    entity, self.connection_name, reference
                )
                records.extend(record for record in parsed if isinstance(record, wanted))
                rejected.extend(
                    refused
                    if kind is RecordKind.PURCHASE_ORDER
                    else [r.model_copy(update={"kind": kind}) for r in refused]
                )
            yield records, rejected, self._watermark(page)

    def _master_pages(self, entity_name: str, window: SyncWindow, parse):
        conditions = ["Active IN (true, false)", *self._window_conditions(window, None)]
        kind = RecordKind.VENDOR if entity_name == "Vendor" else RecordKind.MATERIAL
        for page in self._query_pages(entity_name, conditions):
            records, rejected = [], []
            for entity in page:
                try:
                    record = parse(entity, self.connection_name)
                except (RecordRejected, ValidationError) as error:
                    invalid = isinstance(error, ValidationError)
                    rejected.append(
                        _reject(
                            self.connection_name,
                            kind,
                            f"{entity_name}:{entity.get('Id')}",
                            _validation(error) if invalid else str(error),
                            entity,
                        )
                    )
                    continue
                if record is not None:
                    records.append(record)
            yield records, rejected, self._watermark(page)

    def _inventory_pages(self, window: SyncWindow):
        # The report has no change stamp: a changed-since window reads its days again.
        if window.start is None or window.end is None:
            raise ErpRequestError(
                self.connection_name, "inventory is read per snapshot day; give a date window"
            )
        reference = self._reference_lists()
        # One report per location; a company without location tracking has one stock.
        locations = sorted(reference.departments.items()) or [(None, self.inventory_location)]
        day = window.start
        while day < window.end:
            for department_id, location in locations:
                params = {"report_date": day.isoformat()}
                if department_id is not None:
                    params["department"] = department_id
                report = self._get("reports/InventoryValuationSummary", params)
                records, rejected = inventory_from_report(
                    report, self.connection_name, day, location, reference
                )
                yield records, rejected, None
            day += dt.timedelta(days=1)

    def _deleted_since(self, kind: RecordKind, since: dt.datetime) -> list[str]:
        """Source ids the change data capture feed reports as deleted since `since`."""
        entities = {
            RecordKind.SPEND: SPEND_ENTITIES,
            RecordKind.PURCHASE_ORDER: ("PurchaseOrder",),
            RecordKind.PURCHASE_ORDER_LINE: ("PurchaseOrder",),
            RecordKind.VENDOR: ("Vendor",),
            RecordKind.MATERIAL: ("Item",),
        }[kind]
        now = dt.datetime.now(dt.timezone.utc)
        if since < now - dt.timedelta(days=CDC_MAX_DAYS):
            # Limitation: CDC looks back 30 days at most; older deletions surface only when a
            # full read of the partition no longer returns the record.
            logger.warning(
                "cursor older than the CDC window; deletions not requested",
                extra={"connection": self.connection_name},
            )
            return []
        if since > now:
            return []
        body = self._get(
            "cdc", {"entities": ",".join(entities), "changedSince": _query_time(since)}
        )
        if not isinstance(body, dict) or "Fault" in body or "CDCResponse" not in body:
            raise ErpRequestError(self.connection_name, "cdc answered no CDCResponse")
        deleted = []
        for answer in _as_list(body.get("CDCResponse")):
            for response in _as_list(
                answer.get("QueryResponse") if isinstance(answer, dict) else None
            ):
                if not isinstance(response, dict):
                    continue
                for entity_name in entities:
                    for entity in _as_list(response.get(entity_name)):
                        if not isinstance(entity, dict) or not entity.get("Id"):
                            continue
                        if str(entity.get("status", "")).lower() == "deleted":
                            deleted.append(f"{entity_name}:{entity['Id']}")
        return list(dict.fromkeys(deleted))

    def changed_days(self, kind: RecordKind, since: dt.datetime) -> ChangeSummary:
        """Days holding records changed at or after `since`, asking only for ids and dates."""
        if kind is RecordKind.INVENTORY:
            today = dt.datetime.now(dt.timezone.utc).date()
            days = {
                since.date() + dt.timedelta(days=n)
                for n in range(max((today - since.date()).days + 1, 0))
            }
            return ChangeSummary(days=days)
        entities = {
            RecordKind.SPEND: SPEND_ENTITIES,
            RecordKind.VENDOR: ("Vendor",),
            RecordKind.MATERIAL: ("Item",),
        }.get(kind, ("PurchaseOrder",))
        dated = kind not in (RecordKind.VENDOR, RecordKind.MATERIAL)
        fields = "Id, TxnDate, MetaData.LastUpdatedTime" if dated else "Id, MetaData"
        summary = ChangeSummary()
        condition = [f"MetaData.LastUpdatedTime >= '{_query_time(since)}'"]
        for entity_name in entities:
            for page in self._query_pages(entity_name, condition, fields):
                for entity in page:
                    try:
                        stamp = _updated_at(entity)
                    except RecordRejected:
                        stamp = None
                    try:
                        day = _date(entity["TxnDate"], "TxnDate") if entity.get("TxnDate") else None
                    except RecordRejected:
                        day = None  # its read rejects it, with the reason
                    if dated and day is not None:
                        summary.days.add(day)
                    elif stamp is not None:
                        summary.days.add(stamp.date())
                    if stamp and (summary.high_watermark is None or stamp > summary.high_watermark):
                        summary.high_watermark = stamp
        return summary


__all__ = [
    "QuickBooksReference",
    "QuickBooksSource",
    "inventory_from_report",
    "material_from_item",
    "purchase_order_from_entity",
    "spend_from_entity",
    "vendor_from_entity",
]
