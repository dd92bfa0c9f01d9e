"""Sandbox Oracle ERP Cloud (Fusion): the ADF REST resources of fscmRestApi 11.13.18.05.

Serves the Oracle REST framework shape: collections at
`/fscmRestApi/resources/11.13.18.05/<resource>` with `limit` (default 25, capped at 500),
`offset`, `q` (conditions joined by `;` or `and`, e.g. `InvoiceDate>='2026-11-02'`),
`orderBy=Attr:asc`, `fields`, `expand` (child collections inline), `onlyData=true` and
`totalResults=true`; answers `{items, count, hasMore, limit, offset, links[, totalResults]}`
with dates as `YYYY-MM-DD`, timestamps as ISO 8601 with offset, and amounts as JSON numbers.
Child collections are also served at `<resource>/<id>/child/<child>`. The `REST-Framework-Version`
header is honoured: without it (framework 1, Fusion's default) or with 2, an expanded child is
its first page as a bare array; from 3 on it is a collection with `hasMore`. Errors are the ADF
REST error document; throttling is 429 with Retry-After.

Authentication is OAuth 2.0 client credentials against an IDCS-style token endpoint
(`POST /oauth2/v1/token`, HTTP Basic client authentication, bearer tokens living an hour);
a wrong client secret gets `invalid_client`, an expired token a 401 with
`WWW-Authenticate: Bearer error="invalid_token"`.

Resources: `invoices` (+ `invoiceLines`), `purchaseOrders` (+ `lines`), `suppliers`
(+ `sites`), `itemsV2`, and `inventoryOnhandBalances` with a `SnapshotDate` (see the source
module for why). Credit memos carry negative amounts, as Payables stores them. A canceled
invoice has ValidationStatus "Canceled", a CanceledDate and CanceledBy (no header flag); lines
carry CanceledFlag, DiscardedFlag and TrackAsAssetFlag, as the published resource names them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request, Response

from erp_connector_dagster.records import RecordKind, RecordStatus, SpendDocumentType
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.faults import (
    Fault,
    FaultPlan,
    fault_response,
)
from erp_connector_dagster.sandbox.netsuite import (
    days_touched,
    internal_id,
    line_value,
    order_documents,
    spend_documents,
)
from erp_connector_dagster.sandbox.oauth import (
    TokenStore,
    basic_credentials,
    bearer,
    client_authenticated,
)

API_ROOT = "/fscmRestApi/resources/11.13.18.05"
TOKEN_PATH = "/oauth2/v1/token"
SCOPE = "urn:opc:resource:fa:instanceid=424242urn:opc:resource:consumer::all"
SANDBOX_CREDENTIALS: dict[str, str] = {
    "client_id": "a3f1c9e07d2b4b6e9c5d8f0a1b2c3d4e",
    "client_secret": "idcs-7c1e5a9b-3d2f-4e8a-b6c0-9f1d2e3a4b5c",
}
SECRET_FIELDS = frozenset({"client_secret"})
SANDBOX_OPTIONS: dict[str, object] = {"scope": SCOPE}

TOKEN_LIFETIME_SECONDS = 3600
DEFAULT_LIMIT = 25
MAX_LIMIT = 500
DEFAULT_FRAMEWORK_VERSION = 1
SUPPORTED_FRAMEWORK_VERSIONS = range(1, 10)
INVOICE_TYPES = {
    SpendDocumentType.INVOICE: "Standard",
    SpendDocumentType.CREDIT_NOTE: "Credit memo",
    SpendDocumentType.CARD_CHARGE: "Expense report",
}
PO_STATUSES = {
    "open": ("OPEN", "Open"),
    "received": ("CLOSED FOR RECEIVING", "Closed for Receiving"),
    "closed": ("CLOSED", "Closed"),
}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class RestError(ValueError):
    """A request the ADF REST framework refuses with 400."""


def charge_account(gl_account: str | None) -> str | None:
    """The sandbox chart of accounts: company.cost-centre.account.product.intercompany.future."""
    return f"101.10.{gl_account}.000.000.000" if gl_account else None


# Collections


@dataclasses.dataclass(frozen=True)
class _Collection:
    name: str
    key: str
    date_attribute: str | None
    stamp_attribute: str
    kinds: tuple[RecordKind, ...]
    build: Callable[[SandboxCompany, list[dt.date] | None], list[dict]]
    children: tuple[str, ...] = ()


def _invoice_rows(company: SandboxCompany, days: list[dt.date] | None) -> list[dict]:
    rows = []
    for day in days or []:
        for document in spend_documents(company, day):
            invoice_id = internal_id("invoice", document.document_id)
            sign = -1 if document.document_type is SpendDocumentType.CREDIT_NOTE else 1
            lines = [_invoice_line(invoice_id, line) for line in document.lines]
            amounts = [line["LineAmount"] for line in lines]
            rows.append(
                {
                    "InvoiceId": invoice_id,
                    "InvoiceNumber": document.document_id,
                    "InvoiceCurrency": document.currency,
                    "PaymentCurrency": document.currency,
                    "InvoiceAmount": (
                        sum(amounts, Decimal(0))
                        if all(isinstance(a, Decimal) for a in amounts)
                        else None
                    ),
                    "InvoiceDate": document.day,
                    "AccountingDate": document.day,
                    "BusinessUnit": "US1 Business Unit",
                    "Supplier": _supplier_name(company, document.vendor_id),
                    "SupplierNumber": document.vendor_id,
                    "SupplierSite": "MAIN" if document.vendor_id else None,
                    "InvoiceType": INVOICE_TYPES[document.document_type],
                    # Payables marks a canceled invoice in its validation status and dates the
                    # cancellation; there is no header flag for it.
                    "ValidationStatus": "Canceled" if document.voided else "Validated",
                    "ApprovalStatus": "Approved" if sign > 0 else "Not Required",
                    "PaidStatus": "Unpaid",
                    "CanceledDate": document.last_modified.date() if document.voided else None,
                    "CanceledBy": "AP.SPECIALIST" if document.voided else None,
                    "Description": None,
                    "CreationDate": document.created,
                    "LastUpdateDate": document.last_modified,
                    "invoiceLines": lines,
                }
            )
    return rows


def _invoice_line(invoice_id: int, line) -> dict:
    amount = line_value(line, "amount")
    if isinstance(amount, str):  # a deliberately broken line, rendered as the ERP holds it
        amount = Decimal(amount) if re.fullmatch(r"-?\d+(\.\d+)?", amount) else (amount or None)
    gl_account = line_value(line, "gl_account")
    updated_at = line_value(line, "updated_at")
    return {
        "InvoiceId": invoice_id,
        "LineNumber": line_value(line, "line_number"),
        "LineType": "Item",
        "LineAmount": amount,
        "Description": line_value(line, "description"),
        "Item": line_value(line, "material_id"),
        "Quantity": line_value(line, "quantity"),
        "UOM": line_value(line, "unit"),
        "UnitPrice": None,
        "DistributionCombination": charge_account(gl_account),
        "TrackAsAssetFlag": bool(gl_account and gl_account.startswith("15")),
        "PurchaseOrderNumber": line_value(line, "purchase_order_id"),
        "CanceledFlag": line_value(line, "status") == RecordStatus.VOIDED,
        "DiscardedFlag": False,
        "LastUpdateDate": (
            dt.datetime.fromisoformat(updated_at) if isinstance(updated_at, str) else updated_at
        ),
    }


def _supplier_name(company: SandboxCompany, vendor_id: str | None) -> str | None:
    for vendor in company.vendors():
        if vendor.vendor_id == vendor_id:
            return vendor.name
    return None


def _order_rows(company: SandboxCompany, days: list[dt.date] | None) -> list[dict]:
    rows = []
    for day in days or []:
        for document in order_documents(company, day):
            order = document.order
            header_id = internal_id("purchaseOrder", order.purchase_order_id)
            status_code, status = PO_STATUSES.get(order.order_status, ("OPEN", "Open"))
            rows.append(
                {
                    "POHeaderId": header_id,
                    "OrderNumber": order.purchase_order_id,
                    "ProcurementBU": "US1 Business Unit",
                    "Supplier": _supplier_name(company, order.vendor_id),
                    "SupplierNumber": order.vendor_id,
                    "SupplierSite": "MAIN",
                    "CurrencyCode": order.currency,
                    "Ordered": order.total_amount,
                    "StatusCode": "CANCELED"
                    if order.status is RecordStatus.VOIDED
                    else status_code,
                    "Status": "Canceled" if order.status is RecordStatus.VOIDED else status,
                    # The order is dated by its creation in the buying business unit's day.
                    "CreationDate": dt.datetime.combine(
                        order.order_date, dt.time(12), dt.timezone.utc
                    ),
                    "LastUpdateDate": document.last_modified,
                    "lines": [
                        {
                            "POLineId": internal_id(
                                "poLine", f"{order.purchase_order_id}/{line.line_number}"
                            ),
                            "LineNumber": line.line_number,
                            "LineType": "Goods",
                            "Item": line.material_id,
                            "Description": line.description,
                            "Quantity": line.quantity,
                            "UOMCode": line.unit,
                            "Price": line.unit_price,
                            "Amount": line.amount,
                            "RequestedDeliveryDate": line.delivery_date,
                            "POChargeAccount": charge_account(line.gl_account),
                            "LastUpdateDate": line.updated_at,
                        }
                        for line in document.lines
                    ],
                }
            )
    return rows


def _supplier_rows(company: SandboxCompany, days: list[dt.date] | None) -> list[dict]:
    return [
        {
            "SupplierId": internal_id("supplier", vendor.vendor_id),
            "Supplier": vendor.name,
            "SupplierNumber": vendor.vendor_id,
            "Status": "ACTIVE",
            "TaxpayerCountryCode": vendor.country,
            "TaxpayerId": vendor.tax_id,
            "StandardIndustryClass": vendor.industry_code,
            "CreationDate": vendor.updated_at,
            "LastUpdateDate": vendor.updated_at,
            "sites": [
                {
                    "SupplierSiteId": internal_id("supplierSite", vendor.vendor_id),
                    "SupplierSite": "MAIN",
                    "ProcurementBU": "US1 Business Unit",
                    "InvoiceCurrencyCode": vendor.currency,
                    "PaymentCurrencyCode": vendor.currency,
                }
            ],
        }
        for vendor in company.vendors()
    ]


def _item_rows(company: SandboxCompany, days: list[dt.date] | None) -> list[dict]:
    return [
        {
            "ItemId": internal_id("item", material.material_id),
            "OrganizationCode": "M1",
            "ItemNumber": material.material_id,
            "ItemDescription": material.description,
            "ItemClass": material.material_group,
            "PrimaryUOMCode": material.base_unit,
            "CommodityCode": material.commodity_code,
            "ItemStatusValue": "Active",
            "CreationDateTime": material.updated_at,
            "LastUpdateDateTime": material.updated_at,
        }
        for material in company.materials()
    ]


def _onhand_rows(company: SandboxCompany, days: list[dt.date] | None) -> list[dict]:
    rows = []
    for day in days or []:
        for snapshot in company.records(RecordKind.INVENTORY, day):
            rows.append(
                {
                    "OnhandBalanceId": internal_id("onhand", snapshot.source_id),
                    "OrganizationCode": "M1",
                    "ItemNumber": snapshot.material_id,
                    "Subinventory": snapshot.location,
                    "SnapshotDate": snapshot.snapshot_date,
                    "OnhandQuantity": snapshot.quantity,
                    "PrimaryUOMCode": snapshot.unit,
                    "UnitCost": snapshot.unit_cost,
                    "OnhandValue": snapshot.value,
                    "CurrencyCode": snapshot.currency,
                    "LastUpdateDate": snapshot.updated_at,
                }
            )
    return rows


COLLECTIONS: dict[str, _Collection] = {
    collection.name: collection
    for collection in (
        _Collection(
            "invoices",
            "InvoiceId",
            "InvoiceDate",
            "LastUpdateDate",
            (RecordKind.SPEND,),
            _invoice_rows,
            ("invoiceLines",),
        ),
        _Collection(
            "purchaseOrders",
            "POHeaderId",
            "CreationDate",
            "LastUpdateDate",
            (RecordKind.PURCHASE_ORDER, RecordKind.PURCHASE_ORDER_LINE),
            _order_rows,
            ("lines",),
        ),
        _Collection(
            "suppliers", "SupplierId", None, "LastUpdateDate", (), _supplier_rows, ("sites",)
        ),
        _Collection("itemsV2", "ItemId", None, "LastUpdateDateTime", (), _item_rows),
        _Collection(
            "inventoryOnhandBalances",
            "OnhandBalanceId",
            "SnapshotDate",
            "LastUpdateDate",
            (RecordKind.INVENTORY,),
            _onhand_rows,
        ),
    )
}


# Query parameters: q, orderBy


_CONDITION = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)\s*(>=|<=|!=|<>|=|>|<)\s*(.+?)\s*$")


def parse_q(q: str) -> list[tuple[str, str, str]]:
    """`Attr op value` conditions joined by ';' or ' and ' (REST framework 1 and 2 syntax)."""
    conditions = []
    for part in re.split(r";|\s+and\s+", q, flags=re.IGNORECASE):
        if not part.strip():
            continue
        match = _CONDITION.match(part)
        if not match:
            raise RestError(f'URL request parameter q with value "{q}" is not valid.')
        attribute, op, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        conditions.append((attribute, "<>" if op == "!=" else op, value))
    return conditions


def _typed(sample: Any, text: str, attribute: str) -> Any:
    try:
        if isinstance(sample, bool):
            return text.lower() == "true"
        if isinstance(sample, dt.datetime):
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
        if isinstance(sample, dt.date):
            return dt.date.fromisoformat(text[:10])
        if isinstance(sample, int | Decimal):
            return Decimal(text)
    except ValueError:
        raise RestError(f'The value "{text}" is not valid for attribute {attribute}.') from None
    return text


def _matches(row: dict, conditions: list[tuple[str, str, Any]]) -> bool:
    for attribute, op, value in conditions:
        actual = row.get(attribute)
        if actual is None:
            return False
        if isinstance(actual, dt.datetime) and not isinstance(value, dt.datetime):
            value = dt.datetime.combine(value, dt.time(), dt.timezone.utc)
        if isinstance(actual, int | Decimal) and not isinstance(actual, bool):
            actual = Decimal(actual)
        outcome = {
            "=": actual == value,
            "<>": actual != value,
            ">": actual > value,
            ">=": actual >= value,
            "<": actual < value,
            "<=": actual <= value,
        }[op]
        if not outcome:
            return False
    return True


# JSON: amounts stay exact JSON numbers, dates ISO 8601.

_DECIMAL_MARK = re.compile(r'"@decimal:(-?\d+(?:\.\d+)?)@"')


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, Decimal):
        return f"@decimal:{value:f}@"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def dump_json(document: Any) -> str:
    """JSON text with each Decimal written as an exact number (1250.00 stays 1250.00)."""
    return _DECIMAL_MARK.sub(r"\1", json.dumps(_jsonable(document)))


def _throttled(fault: Fault) -> Response:
    response = _error(
        429,
        "Too Many Requests",
        "The request was throttled. Retry after the given time.",
        "TOO_MANY_REQUESTS",
    )
    response.headers["Retry-After"] = str(max(int(fault.retry_after), 1))
    return response


def _error(status: int, title: str, detail: str, code: str) -> Response:
    body = {
        "type": f"http://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.{status - 399}",
        "title": title,
        "status": str(status),
        "o:errorDetails": [{"detail": detail, "o:errorCode": code}],
    }
    return Response(
        dump_json(body), status=status, mimetype="application/vnd.oracle.adf.error+json"
    )


class FusionEmulator:
    """The WSGI application of one sandbox Oracle Fusion pod and its identity domain."""

    def __init__(
        self, company: SandboxCompany, faults: FaultPlan, credentials: dict[str, str]
    ) -> None:
        self.company = company
        self.faults = faults
        self.credentials = credentials
        self._tokens = TokenStore(lifetime_seconds=TOKEN_LIFETIME_SECONDS)
        self._children: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        request = Request(environ)
        return self.dispatch(request)(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        # Read the body first: closing a socket with unread input resets it mid-answer.
        request.get_data()
        forced = fault_response(
            self.faults.take(), throttled=_throttled, token_expired=self._expire_tokens
        )
        if forced is not None:
            return forced
        if request.path == TOKEN_PATH and request.method == "POST":
            return self.token(request)
        if not request.path.startswith(API_ROOT + "/"):
            return _error(404, "Not Found", "The requested resource was not found.", "404")
        if request.method != "GET":
            return _error(405, "Method Not Allowed", "Only GET is served here.", "405")
        refused = self._refuse_token(request)
        if refused is not None:
            return refused
        try:
            return self.collection(request)
        except RestError as error:
            return _error(400, "Bad Request", str(error), "27502")

    # OAuth 2.0 client credentials

    def _expire_tokens(self) -> None:
        # Kept, not forgotten: a request with one is told its token expired, not that it is bad.
        self._tokens.expire_all()

    def token(self, request: Request) -> Response:
        client = basic_credentials(request) or (
            request.form.get("client_id", ""),
            request.form.get("client_secret", ""),
        )
        if request.form.get("grant_type") != "client_credentials":
            return self._oauth_error(
                400, "unsupported_grant_type", "The grant type is not supported."
            )
        if not client_authenticated(client, self.credentials):
            return self._oauth_error(401, "invalid_client", "Client authentication failed.")
        body = {
            "access_token": self._tokens.issue(),
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECONDS,
        }
        return Response(
            json.dumps(body), mimetype="application/json", headers={"Cache-Control": "no-store"}
        )

    def _oauth_error(self, status: int, error: str, description: str) -> Response:
        return Response(
            json.dumps({"error": error, "error_description": description}),
            status=status,
            mimetype="application/json",
        )

    def _refuse_token(self, request: Request) -> Response | None:
        token = bearer(request)
        if self._tokens.valid(token):
            return None
        error = "invalid_token"
        description = (
            "The access token expired"
            if self._tokens.known(token)
            else "The access token is invalid"
        )
        response = Response("", status=401)
        response.headers["WWW-Authenticate"] = (
            f'Bearer error="{error}", error_description="{description}"'
        )
        return response

    # Collections

    def collection(self, request: Request) -> Response:
        parts = request.path[len(API_ROOT) + 1 :].strip("/").split("/")
        args = request.args
        limit = min(int(args.get("limit", DEFAULT_LIMIT)), MAX_LIMIT)
        offset = int(args.get("offset", 0))
        if limit < 1 or offset < 0:
            raise RestError("The limit must be positive and the offset not negative.")
        if len(parts) == 4 and parts[2] == "child":
            return self._child(request, parts[0], parts[1], parts[3], limit, offset)
        if len(parts) != 1 or parts[0] not in COLLECTIONS:
            return _error(404, "Not Found", f"Resource {'/'.join(parts)} was not found.", "404")
        spec = COLLECTIONS[parts[0]]
        # Refuse a malformed request before doing any work for it.
        framework = self._framework(request)
        expand = self._expand(spec, args)
        order = self._order_by(spec, args, self._sample(spec))
        rows = self._rows(spec, args, order)
        page = rows[offset : offset + limit]
        fields = [f for f in args.get("fields", "").split(",") if f]
        only_data = args.get("onlyData", "false").lower() == "true"
        items = []
        for row in page:
            item = {
                key: value
                for key, value in row.items()
                if key not in spec.children and (not fields or key in fields)
            }
            for child in spec.children:
                with self._lock:
                    self._children[(spec.name, str(row[spec.key]))] = row
                if child in expand and framework < 3:
                    # Framework 1 and 2: the child's first page as a bare array, no hasMore.
                    item[child] = row[child][:DEFAULT_LIMIT]
                elif child in expand:
                    item[child] = self._envelope(
                        request,
                        row[child][:DEFAULT_LIMIT],
                        0,
                        DEFAULT_LIMIT,
                        len(row[child]),
                        only_data,
                        f"{self._href(request, spec.name)}/{row[spec.key]}/child/{child}",
                    )
            if not only_data:
                item["links"] = self._item_links(request, spec, row)
            items.append(item)
        body = self._envelope(
            request, items, offset, limit, len(rows), only_data, self._href(request, spec.name)
        )
        if args.get("totalResults", "false").lower() == "true":
            body["totalResults"] = len(rows)
        return Response(
            dump_json(body), mimetype="application/vnd.oracle.adf.resourcecollection+json"
        )

    @staticmethod
    def _framework(request: Request) -> int:
        """The REST framework version the client asked for (header), 1 when it asked none."""
        text = request.headers.get("REST-Framework-Version", str(DEFAULT_FRAMEWORK_VERSION))
        if not text.strip().isdigit() or int(text) not in SUPPORTED_FRAMEWORK_VERSIONS:
            raise RestError(f'The REST framework version "{text}" is not supported.')
        return int(text)

    def _rows(
        self, spec: _Collection, args: MultiDict, order: list[tuple[str, bool]]
    ) -> list[dict]:
        conditions = parse_q(args.get("q", ""))
        first_day = last_day = since = None
        typed = []
        sample = self._sample(spec)
        for attribute, op, text in conditions:
            if attribute not in sample:
                raise RestError(f"The attribute {attribute} is not valid for {spec.name}.")
            value = _typed(sample[attribute], text, attribute)
            typed.append((attribute, op, value))
            day = value.date() if isinstance(value, dt.datetime) else value
            if attribute == spec.date_attribute and op in (">=", ">", "="):
                first_day = max(filter(None, (first_day, day)))
            if attribute == spec.date_attribute and op in ("<", "<=", "="):
                last = day - dt.timedelta(days=1) if op == "<" else day
                last_day = min(filter(None, (last_day, last)))
            if attribute == spec.stamp_attribute and op in (">=", ">"):
                since = value
        days = None
        if spec.kinds:
            days = days_touched(self.company, first_day, last_day, since, *spec.kinds)
        rows = [row for row in spec.build(self.company, days) if _matches(row, typed)]
        for attribute, descending in reversed(order):
            rows.sort(
                key=lambda row, a=attribute: (row.get(a) is None, row.get(a) or 0),
                reverse=descending,
            )
        return rows

    def _sample(self, spec: _Collection) -> dict:
        """The attributes of a resource, with a value of each one's type."""
        day = self.company.business_days()[-1]
        rows = spec.build(self.company, [day] if spec.kinds else None)
        sample: dict[str, Any] = {}
        for row in rows:
            for key, value in row.items():
                if sample.get(key) is None:
                    sample[key] = value
        return sample

    def _order_by(self, spec: _Collection, args: MultiDict, sample: dict) -> list[tuple[str, bool]]:
        order = []
        for part in filter(None, args.get("orderBy", f"{spec.key}:asc").split(",")):
            attribute, _, direction = part.partition(":")
            if attribute not in sample or direction.lower() not in ("", "asc", "desc"):
                raise RestError(f'URL request parameter orderBy with value "{part}" is not valid.')
            order.append((attribute, direction.lower() == "desc"))
        return order

    def _expand(self, spec: _Collection, args: MultiDict) -> set[str]:
        requested = {c for c in args.get("expand", "").split(",") if c}
        if "all" in requested:
            return set(spec.children)
        unknown = requested - set(spec.children)
        if unknown:
            raise RestError(f"The child {', '.join(sorted(unknown))} is not valid for {spec.name}.")
        return requested

    def _child(
        self, request: Request, name: str, key: str, child: str, limit: int, offset: int
    ) -> Response:
        with self._lock:
            parent = self._children.get((name, key))
        if parent is None or child not in parent:
            return _error(404, "Not Found", f"{name} {key} was not found.", "404")
        rows = parent[child]
        only_data = request.args.get("onlyData", "false").lower() == "true"
        body = self._envelope(
            request,
            rows[offset : offset + limit],
            offset,
            limit,
            len(rows),
            only_data,
            f"{self._href(request, name)}/{key}/child/{child}",
        )
        return Response(
            dump_json(body), mimetype="application/vnd.oracle.adf.resourcecollection+json"
        )

    def _href(self, request: Request, name: str) -> str:
        return f"{request.host_url.rstrip('/')}{request.script_root}{API_ROOT}/{name}"

    def _item_links(self, request: Request, spec: _Collection, row: dict) -> list[dict]:
        href = f"{self._href(request, spec.name)}/{row[spec.key]}"
        links = [
            {"rel": "self", "href": href, "name": spec.name, "kind": "item"},
            {"rel": "canonical", "href": href, "name": spec.name, "kind": "item"},
        ]
        links += [
            {"rel": "child", "href": f"{href}/child/{child}", "name": child, "kind": "collection"}
            for child in spec.children
        ]
        return links

    def _envelope(
        self,
        request: Request,
        items: list,
        offset: int,
        limit: int,
        total: int,
        only_data: bool,
        href: str,
    ) -> dict:
        body = {
            "items": items,
            "count": len(items),
            "hasMore": offset + len(items) < total,
            "limit": limit,
            "offset": offset,
        }
        body["links"] = (
            []
            if only_data
            else [
                {"rel": "self", "href": href, "name": href.rsplit("/", 1)[1], "kind": "collection"}
            ]
        )
        return body


def create_app(
    company: SandboxCompany, faults: FaultPlan, credentials: dict[str, str]
) -> FusionEmulator:
    """The sandbox Oracle Fusion pod for the sandbox server."""
    return FusionEmulator(company, faults, credentials)
