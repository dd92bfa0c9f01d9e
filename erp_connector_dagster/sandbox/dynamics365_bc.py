"""Sandbox Dynamics 365 Business Central: API v2.0 over OData v4, Entra ID sign-in.

Serves the synthetic company under
`/v2.0/<tenant>/<environment>/api/v2.0/companies(<id>)/<entitySet>` as Business Central does:
`purchaseInvoices` and `purchaseCreditMemos` with their lines (`$expand`), `purchaseOrders` with
`purchaseOrderLines`, `vendors` and `items` with `defaultDimensions`, document lines with
`dimensionSetLines`, and `companyInformation` (its `currencyCode` is the local currency).
Field names and types follow the API v2.0 reference: GUID `id`s, `Edm.Date`
dates as `2026-11-25`, `lastModifiedDateTime` in UTC with milliseconds, decimals as JSON
numbers, document status words ("Open", "Paid", "Canceled"). Credit memos carry positive
quantities and amounts: the document type says that they are credits.

Business Central's standard pages cannot be extended, so what the standard API lacks rides on
dimensions, the place a Business Central company keeps analysis codes: the vendor's default
dimension `INDUSTRY` (NAICS), the item's default dimension `COMMODITY`, a line's `GLACCOUNT`
(the G/L account an item line posts to) and `CAPEX`, and a card charge's header dimension
`PAYMENT` = `CARD`.

Paging is server-driven (`Prefer: odata.maxpagesize`, default 20,000; `@odata.nextLink` with a
key-set `$skiptoken`); the Entra ID token endpoint is emulated under the same base URL at
`/<tenant>/oauth2/v2.0/token` (scope `https://api.businesscentral.dynamics.com/.default`).
An expired token is refused 401 with `WWW-Authenticate: Bearer ... error="invalid_token"`;
throttling is 429 `Application_TooManyRequests` with `Retry-After`.

API v2.0 has no on-hand quantity per location and day: `items.inventory` is the total of now
(here the company's latest business day, summed over its locations) and `items.unitCost` the
average cost of that stock (value over quantity, to five decimals). Past days come from the
customer's custom API page (an AL extension, `ONHAND_SNAPSHOT_API`, named to the source in
`SANDBOX_OPTIONS`): one row per item, location and `snapshotDate` with unit, unit cost, value
and currency.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from decimal import Decimal

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
from erp_connector_dagster.sandbox.dynamics365_fo import (
    TOKEN_LIFETIME_SECONDS,
    ODataError,
    bad_lines_between,
    bounds,
    candidate_records,
    entra_sign_in,
    etag,
    group_documents,
    json_response,
    matches,
    paged_response,
    parse_datetime,
    parse_expand,
    parse_filter,
    project,
    stable_guid,
)
from erp_connector_dagster.sandbox.faults import (
    Fault,
    FaultKind,
    FaultPlan,
    fault_response,
)
from erp_connector_dagster.sandbox.oauth import TokenStore, bearer

UTC = dt.timezone.utc
SANDBOX_TENANT_ID = "3e9a51c4-8d2b-4f6e-a0c7-91b5d3f2e814"
SANDBOX_ENVIRONMENT = "production"
SANDBOX_COMPANY_ID = "5d115c9c-44e3-ea11-bb43-000d3a2feca1"
BUSINESS_CENTRAL_SCOPE = "https://api.businesscentral.dynamics.com/.default"
# The company's local currency: companyInformation.currencyCode (the LCY code).
LOCAL_CURRENCY = "USD"

SANDBOX_CREDENTIALS: dict[str, str] = {
    "tenant_id": SANDBOX_TENANT_ID,
    "client_id": "c4a9e2f7-1b3d-4c5e-8f90-6a7b8c9d0e21",
    "client_secret": "bc-sandbox-client-secret-7Hq~x1",
}
SECRET_FIELDS = frozenset({"client_secret"})
# The customer's custom API page of daily on-hand snapshots: publisher/group/version/entitySet.
ONHAND_SNAPSHOT_API = "glcarbon/inventory/v1.0/itemOnHandSnapshots"
SANDBOX_OPTIONS: dict[str, object] = {
    "authority_url": "/",
    "environment": SANDBOX_ENVIRONMENT,
    "company_id": SANDBOX_COMPANY_ID,
    "onhand_snapshot_api": ONHAND_SNAPSHOT_API,
}

DEFAULT_PAGE_SIZE = 20_000
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
BLANK_DATE = "0001-01-01"
DIMENSION_NAMES = {
    "INDUSTRY": "Industry (NAICS)",
    "COMMODITY": "Commodity code",
    "GLACCOUNT": "G/L account",
    "CAPEX": "Capital expenditure",
    "PAYMENT": "Payment channel",
}
UNIT_COST_PRECISION = Decimal("0.00001")
ORDER_STATUS = {
    "open": ("Open", False),
    "received": ("Released", True),
    "closed": ("Released", True),
}


def bc_datetime(moment: dt.datetime | None) -> str:
    if moment is None:
        return "0001-01-01T00:00:00Z"
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def bc_date(day: dt.date | None) -> str:
    return day.isoformat() if day else BLANK_DATE


def dimension_line(parent_id: str, parent_type: str, code: str, value: str) -> dict:
    return {
        "id": stable_guid("dimension", code),
        "code": code,
        "parentId": parent_id,
        "parentType": parent_type,
        "displayName": DIMENSION_NAMES.get(code, code),
        "valueId": stable_guid("dimension-value", code, value),
        "valueCode": value,
        "valueDisplayName": value,
    }


def default_dimension(parent_id: str, parent_type: str, code: str, value: str) -> dict:
    return {
        "id": stable_guid("default-dimension", parent_id, code),
        "parentType": parent_type,
        "parentId": parent_id,
        "dimensionId": stable_guid("dimension", code),
        "dimensionCode": code,
        "dimensionValueId": stable_guid("dimension-value", code, value),
        "dimensionValueCode": value,
        "postingValidation": " ",
    }


def _throttled(fault: Fault) -> Response:
    return json_response(
        {
            "error": {
                "code": "Application_TooManyRequests",
                "message": "Too many requests reached.  Actual (6001).  Maximum (6000).",
            }
        },
        status=429,
        headers={"Retry-After": str(int(fault.retry_after))},
    )


class BusinessCentralEmulator:
    """The WSGI application of one emulated Business Central environment."""

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
        self._lock = threading.Lock()
        self.prefix = (
            f"v2.0/{credentials['tenant_id']}/{SANDBOX_ENVIRONMENT}/api/v2.0/"
            f"companies({SANDBOX_COMPANY_ID})"
        )
        self.entity_sets: dict[str, Callable[[Request], Response]] = {
            "purchaseInvoices": lambda request: self._documents(request, "purchaseInvoices"),
            "purchaseCreditMemos": lambda request: self._documents(request, "purchaseCreditMemos"),
            "purchaseOrders": self._purchase_orders,
            "vendors": self._vendors,
            "items": self._items,
            "companyInformation": self._company_information,
        }
        api_route, _, self.snapshot_entity_set = ONHAND_SNAPSHOT_API.rpartition("/")
        self.snapshot_prefix = (
            f"v2.0/{credentials['tenant_id']}/{SANDBOX_ENVIRONMENT}/api/{api_route}/"
            f"companies({SANDBOX_COMPANY_ID})"
        )

    def __call__(self, environ, start_response):
        request = Request(environ)
        return self.dispatch(request)(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path.strip("/")
        signed_in = entra_sign_in(
            request, path, self.credentials, self.tokens, BUSINESS_CENTRAL_SCOPE
        )
        if signed_in is not None:
            return signed_in
        fault = self.faults.take()
        if fault is not None and fault.kind is FaultKind.EXPIRE_TOKEN:
            self.tokens.revoke_all()
        if not self.tokens.valid(bearer(request)):
            return self._unauthorized()
        forced = fault_response(fault, throttled=_throttled)
        if forced is not None:
            return forced
        try:
            return self._route(request, path)
        except ODataError as error:
            return json_response(
                {"error": {"code": "BadRequest", "message": str(error)}}, status=400
            )

    def _route(self, request: Request, path: str) -> Response:
        if path == self.prefix:
            return json_response(
                {
                    "@odata.context": request.host_url.rstrip("/")
                    + request.script_root
                    + "/"
                    + self.prefix.rsplit("/", 1)[0]
                    + "/$metadata#companies/$entity",
                    "id": SANDBOX_COMPANY_ID,
                    "systemVersion": "24.0.16410.18056",
                    "name": "CRONUS USA, Inc.",
                    "displayName": "CRONUS USA, Inc.",
                    "businessProfileId": "",
                }
            )
        if path == f"{self.snapshot_prefix}/{self.snapshot_entity_set}":
            return self._on_hand_snapshots(request)
        entity_set = path[len(self.prefix) + 1 :] if path.startswith(self.prefix + "/") else ""
        if entity_set not in self.entity_sets:
            return json_response(
                {
                    "error": {
                        "code": "BadRequest_NotFound",
                        "message": "The request URI is not valid. Since the segment "
                        f"'{entity_set or path}' refers to a collection, this must "
                        "be the last segment in the request URI or it must be "
                        "followed by an function or action that can be bound to "
                        "it otherwise all other segments must be omitted.",
                    }
                },
                status=404,
            )
        return self.entity_sets[entity_set](request)

    def _unauthorized(self) -> Response:
        response = json_response(
            {
                "error": {
                    "code": "Authentication_InvalidCredentials",
                    "message": "The server has rejected the client credentials.",
                }
            },
            status=401,
        )
        response.headers["WWW-Authenticate"] = (
            'Bearer authorization_uri="https://login.microsoftonline.com/common/oauth2/'
            'authorize", error="invalid_token", error_description="The token is expired"'
        )
        return response

    # Entity sets

    @staticmethod
    def _filter(request: Request):
        text = request.args.get("$filter")
        return parse_filter(text) if text else None

    @staticmethod
    def _expansion(request: Request, allowed: set[str]) -> dict[str, dict]:
        expand = parse_expand(request.args.get("$expand", ""))
        for name, nested in expand.items():
            inner = set(parse_expand(nested.get("$expand", "")))
            if name not in allowed or inner - {"dimensionSetLines"}:
                bad = name if name not in allowed else sorted(inner)[0]
                raise ODataError(
                    f"Could not find a property named '{bad}' on type "
                    "'Microsoft.NAV.purchaseDocument'."
                )
        return expand

    def _documents(self, request: Request, entity_set: str) -> Response:
        credit = entity_set == "purchaseCreditMemos"
        lines_name = "purchaseCreditMemoLines" if credit else "purchaseInvoiceLines"
        expand = self._expansion(request, {lines_name, "dimensionSetLines"})
        expression = self._filter(request)
        spend = candidate_records(
            self.company, RecordKind.SPEND, expression, "postingDate", "lastModifiedDateTime"
        )
        rows = []
        for lines in group_documents(spend).values():
            if (lines[0].document_type is SpendDocumentType.CREDIT_NOTE) == credit:
                rows.append(self._document(lines, credit))
        if not credit:
            rows.extend(self._bad_documents(expression))
        rows = [row for row in rows if matches(expression, row)]

        def shape(row: dict) -> dict:
            shaped = project(
                {k: v for k, v in row.items() if not k.startswith("_")}, request.args.get("$select")
            )
            if "dimensionSetLines" in expand:
                shaped["dimensionSetLines"] = row["_dimensions"]
            if lines_name in expand:
                nested = parse_expand(expand[lines_name].get("$expand", ""))
                shaped[lines_name] = [
                    {
                        **project(
                            {k: v for k, v in line.items() if not k.startswith("_")},
                            expand[lines_name].get("$select"),
                        ),
                        **(
                            {"dimensionSetLines": line["_dimensions"]}
                            if "dimensionSetLines" in nested
                            else {}
                        ),
                    }
                    for line in row["_lines"]
                ]
            return shaped

        return paged_response(
            request, entity_set, rows, lambda row: (row["number"],), DEFAULT_PAGE_SIZE, shape
        )

    def _purchase_orders(self, request: Request) -> Response:
        expand = self._expansion(request, {"purchaseOrderLines", "dimensionSetLines"})
        expression = self._filter(request)
        orders = candidate_records(
            self.company,
            RecordKind.PURCHASE_ORDER,
            expression,
            "orderDate",
            "lastModifiedDateTime",
        )
        lines_by_order: dict[str, list[PurchaseOrderLine]] = {}
        for day in sorted({order.order_date for order in orders}):
            for line in self.company.records(RecordKind.PURCHASE_ORDER_LINE, day):
                lines_by_order.setdefault(line.purchase_order_id, []).append(line)
        rows = [
            self._purchase_order(order, lines_by_order.get(order.purchase_order_id, []))
            for order in orders
        ]
        rows = [row for row in rows if matches(expression, row)]

        def shape(row: dict) -> dict:
            shaped = project(
                {k: v for k, v in row.items() if not k.startswith("_")}, request.args.get("$select")
            )
            if "dimensionSetLines" in expand:
                shaped["dimensionSetLines"] = []
            if "purchaseOrderLines" in expand:
                nested = parse_expand(expand["purchaseOrderLines"].get("$expand", ""))
                shaped["purchaseOrderLines"] = [
                    {
                        **project(
                            {k: v for k, v in line.items() if not k.startswith("_")},
                            expand["purchaseOrderLines"].get("$select"),
                        ),
                        **(
                            {"dimensionSetLines": line["_dimensions"]}
                            if "dimensionSetLines" in nested
                            else {}
                        ),
                    }
                    for line in row["_lines"]
                ]
            return shaped

        return paged_response(
            request, "purchaseOrders", rows, lambda row: (row["number"],), DEFAULT_PAGE_SIZE, shape
        )

    def _vendors(self, request: Request) -> Response:
        return self._master(request, "vendors", [self._vendor(v) for v in self.company.vendors()])

    def _items(self, request: Request) -> Response:
        stock = self._stock_now()
        rows = [self._item(m, *stock.get(m.material_id, (0, 0))) for m in self.company.materials()]
        return self._master(request, "items", rows)

    def _company_information(self, request: Request) -> Response:
        """The one companyInformation row; `currencyCode` is the local currency (LCY code)."""
        row = {
            "@odata.etag": etag(SANDBOX_COMPANY_ID, None),
            "id": SANDBOX_COMPANY_ID,
            "displayName": "CRONUS USA, Inc.",
            "country": "US",
            "currencyCode": LOCAL_CURRENCY,
            "currentFiscalYearStartDate": f"{self.company.business_days()[-1].year}-01-01",
            "lastModifiedDateTime": BLANK_DATE + "T00:00:00Z",
        }
        return paged_response(
            request,
            "companyInformation",
            [row],
            lambda row: (row["id"],),
            DEFAULT_PAGE_SIZE,
            lambda row: project(row, request.args.get("$select")),
        )

    def _stock_now(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Item number -> (inventory, unit cost) over all locations on the latest day."""
        quantities: dict[str, Decimal] = {}
        values: dict[str, Decimal] = {}
        latest = self.company.business_days()[-1]
        for snapshot in self.company.records(RecordKind.INVENTORY, latest):
            key = snapshot.material_id
            quantities[key] = quantities.get(key, Decimal(0)) + snapshot.quantity
            values[key] = values.get(key, Decimal(0)) + (snapshot.value or Decimal(0))
        return {
            key: (
                quantity,
                (values[key] / quantity).quantize(UNIT_COST_PRECISION) if quantity else Decimal(0),
            )
            for key, quantity in quantities.items()
        }

    def _on_hand_snapshots(self, request: Request) -> Response:
        expression = self._filter(request)
        snapshots = candidate_records(
            self.company, RecordKind.INVENTORY, expression, "snapshotDate", None
        )
        rows = [self._snapshot(snapshot) for snapshot in snapshots]
        rows = [row for row in rows if matches(expression, row)]
        return paged_response(
            request,
            self.snapshot_entity_set,
            rows,
            lambda row: (row["snapshotDate"], row["itemNumber"], row["locationCode"]),
            DEFAULT_PAGE_SIZE,
            lambda row: project(row, request.args.get("$select")),
        )

    def _master(self, request: Request, entity_set: str, rows: list[dict]) -> Response:
        expand = parse_expand(request.args.get("$expand", ""))
        if set(expand) - {"defaultDimensions"}:
            raise ODataError(f"Could not find a property named '{sorted(expand)[0]}'.")
        expression = self._filter(request)
        rows = [row for row in rows if matches(expression, row)]

        def shape(row: dict) -> dict:
            shaped = project(
                {k: v for k, v in row.items() if not k.startswith("_")}, request.args.get("$select")
            )
            if "defaultDimensions" in expand:
                shaped["defaultDimensions"] = row["_dimensions"]
            return shaped

        return paged_response(
            request, entity_set, rows, lambda row: (row["number"],), DEFAULT_PAGE_SIZE, shape
        )

    # Rendering company records as Business Central entities

    def _document(self, lines: list[SpendRecord], credit: bool) -> dict:
        first = lines[0]
        document_id = stable_guid("purchase-document", first.document_id)
        modified = max(line.updated_at for line in lines if line.updated_at is not None)
        sign = Decimal(-1) if credit else Decimal(1)
        total = sum((sign * line.amount for line in lines), Decimal("0"))
        status = "Canceled" if first.status is RecordStatus.VOIDED else "Open"
        row = {
            "@odata.etag": etag(document_id, modified),
            "id": document_id,
            "number": first.document_id,
            ("creditMemoDate" if credit else "invoiceDate"): bc_date(first.transaction_date),
            "postingDate": bc_date(first.transaction_date),
            "dueDate": bc_date(first.transaction_date + dt.timedelta(days=30)),
            "vendorId": stable_guid("vendor", first.vendor_id) if first.vendor_id else EMPTY_GUID,
            "vendorNumber": first.vendor_id or "",
            "currencyId": stable_guid("currency", first.currency),
            "currencyCode": first.currency,
            "pricesIncludeTax": False,
            "discountAmount": 0,
            "totalAmountExcludingTax": total,
            "totalTaxAmount": 0,
            "totalAmountIncludingTax": total,
            "status": status,
            "lastModifiedDateTime": bc_datetime(modified),
            "_dimensions": (
                [dimension_line(document_id, "Purchase Invoice", "PAYMENT", "CARD")]
                if first.document_type is SpendDocumentType.CARD_CHARGE
                else []
            ),
            "_lines": [self._document_line(document_id, line, sign) for line in lines],
        }
        if not credit:
            row["vendorInvoiceNumber"] = first.document_id
            row["orderId"] = EMPTY_GUID
            row["orderNumber"] = first.purchase_order_id or ""
        return row

    def _document_line(self, document_id: str, line: SpendRecord, sign: Decimal) -> dict:
        line_id = stable_guid("purchase-line", line.source_id)
        is_item = line.material_id is not None
        quantity = sign * line.quantity if line.quantity is not None else Decimal("0")
        dimensions = []
        if is_item and line.gl_account:
            dimensions.append(
                dimension_line(line_id, "Purchase Line", "GLACCOUNT", line.gl_account)
            )
        if line.is_capex:
            dimensions.append(dimension_line(line_id, "Purchase Line", "CAPEX", "YES"))
        amount = sign * line.amount
        return {
            "@odata.etag": etag(line_id, line.updated_at),
            "id": line_id,
            "documentId": document_id,
            "sequence": line.line_number,
            "itemId": stable_guid("item", line.material_id) if is_item else EMPTY_GUID,
            "accountId": EMPTY_GUID if is_item else stable_guid("account", line.gl_account),
            "lineType": "Item" if is_item else "Account",
            "lineObjectNumber": line.material_id if is_item else (line.gl_account or ""),
            "description": line.description or "",
            "unitOfMeasureCode": line.unit or "",
            "unitCost": (amount / quantity).quantize(Decimal("0.01")) if quantity else amount,
            "quantity": quantity,
            "discountAmount": 0,
            "discountPercent": 0,
            "amountExcludingTax": amount,
            "netAmount": amount,
            "netTaxAmount": 0,
            "netAmountIncludingTax": amount,
            "_dimensions": dimensions,
        }

    def _bad_documents(self, expression) -> list[dict]:
        if expression is None:
            return []
        lower, upper = bounds(expression, "postingDate")
        if not isinstance(lower, dt.date) or not isinstance(upper, dt.date):
            return []
        documents = []
        for bad in bad_lines_between(self.company, lower, upper + dt.timedelta(days=1)):
            document_id = stable_guid("purchase-document", bad["document_id"])
            line_id = stable_guid("purchase-line", bad["source_id"])
            modified = parse_datetime(bad["updated_at"])
            documents.append(
                {
                    "@odata.etag": etag(document_id, modified),
                    "id": document_id,
                    "number": bad["document_id"],
                    "invoiceDate": bad["transaction_date"],
                    "postingDate": bad["transaction_date"],
                    "vendorInvoiceNumber": bad["document_id"],
                    "vendorId": EMPTY_GUID,
                    "vendorNumber": bad["vendor_id"] or "",
                    "currencyCode": bad["currency"],
                    "orderNumber": "",
                    "status": "Open",
                    "lastModifiedDateTime": bc_datetime(modified),
                    "_dimensions": [],
                    "_lines": [
                        {
                            "@odata.etag": etag(line_id),
                            "id": line_id,
                            "documentId": document_id,
                            "sequence": bad["line_number"],
                            "lineType": "Account",
                            "lineObjectNumber": bad["gl_account"],
                            "description": bad["description"],
                            "unitOfMeasureCode": "",
                            "quantity": 0,
                            # Rendered verbatim: a value the decimal property cannot hold.
                            "netAmount": bad["amount"],
                            "_dimensions": [],
                        }
                    ],
                }
            )
        return documents

    def _purchase_order(self, order: PurchaseOrder, lines: list[PurchaseOrderLine]) -> dict:
        order_id = stable_guid("purchase-order", order.purchase_order_id)
        modified = max(
            [order.updated_at] + [line.updated_at for line in lines if line.updated_at is not None]
        )
        status, fully_received = ORDER_STATUS.get(order.order_status, ("Open", False))
        invoiced = order.order_status == "closed"
        return {
            "@odata.etag": etag(order_id, modified),
            "id": order_id,
            "number": order.purchase_order_id,
            "orderDate": bc_date(order.order_date),
            "postingDate": bc_date(order.order_date),
            "vendorId": stable_guid("vendor", order.vendor_id) if order.vendor_id else EMPTY_GUID,
            "vendorNumber": order.vendor_id or "",
            "currencyCode": order.currency,
            "pricesIncludeTax": False,
            "discountAmount": 0,
            "totalAmountExcludingTax": order.total_amount,
            "totalTaxAmount": 0,
            "totalAmountIncludingTax": order.total_amount,
            "fullyReceived": fully_received,
            "status": status,
            "lastModifiedDateTime": bc_datetime(modified),
            "_lines": [
                self._order_line(order_id, line, fully_received, invoiced) for line in lines
            ],
        }

    def _order_line(
        self, order_id: str, line: PurchaseOrderLine, received: bool, invoiced: bool
    ) -> dict:
        line_id = stable_guid("purchase-order-line", line.source_id)
        dimensions = (
            [dimension_line(line_id, "Purchase Order Line", "GLACCOUNT", line.gl_account)]
            if line.gl_account
            else []
        )
        return {
            "@odata.etag": etag(line_id, line.updated_at),
            "id": line_id,
            "documentId": order_id,
            "sequence": line.line_number,
            "itemId": stable_guid("item", line.material_id) if line.material_id else EMPTY_GUID,
            "lineType": "Item" if line.material_id else "Account",
            "lineObjectNumber": line.material_id or line.gl_account or "",
            "description": line.description or "",
            "unitOfMeasureCode": line.unit or "",
            "quantity": line.quantity,
            "directUnitCost": line.unit_price,
            "discountAmount": 0,
            "amountExcludingTax": line.amount,
            "netAmount": line.amount,
            "expectedReceiptDate": bc_date(line.delivery_date),
            "receivedQuantity": line.quantity if received else 0,
            "invoicedQuantity": line.quantity if invoiced else 0,
            "_dimensions": dimensions,
        }

    def _vendor(self, vendor: Vendor) -> dict:
        vendor_guid = stable_guid("vendor", vendor.vendor_id)
        return {
            "@odata.etag": etag(vendor_guid, vendor.updated_at),
            "id": vendor_guid,
            "number": vendor.vendor_id,
            "displayName": vendor.name,
            "addressLine1": "",
            "addressLine2": "",
            "city": "",
            "state": "",
            "country": vendor.country or "",
            "postalCode": "",
            "taxRegistrationNumber": vendor.tax_id or "",
            "currencyId": stable_guid("currency", vendor.currency),
            "currencyCode": vendor.currency or "",
            "taxLiable": False,
            "blocked": " " if vendor.status is RecordStatus.ACTIVE else "All",
            "balance": 0,
            "lastModifiedDateTime": bc_datetime(vendor.updated_at),
            "_dimensions": (
                [default_dimension(vendor_guid, "Vendor", "INDUSTRY", vendor.industry_code)]
                if vendor.industry_code
                else []
            ),
        }

    def _snapshot(self, snapshot: InventorySnapshot) -> dict:
        row_id = stable_guid("onhand", snapshot.source_id)
        return {
            "@odata.etag": etag(row_id, snapshot.updated_at),
            "id": row_id,
            "snapshotDate": bc_date(snapshot.snapshot_date),
            "itemNumber": snapshot.material_id,
            "locationCode": snapshot.location,
            "quantity": snapshot.quantity,
            "baseUnitOfMeasureCode": snapshot.unit or "",
            "unitCost": snapshot.unit_cost,
            "inventoryValue": snapshot.value,
            "currencyCode": snapshot.currency or "",
        }

    def _item(
        self, material: Material, inventory: Decimal = Decimal(0), unit_cost: Decimal = Decimal(0)
    ) -> dict:
        item_guid = stable_guid("item", material.material_id)
        return {
            "@odata.etag": etag(item_guid, material.updated_at),
            "id": item_guid,
            "number": material.material_id,
            "displayName": material.description,
            "type": "Inventory",
            "itemCategoryId": stable_guid("item-category", material.material_group),
            "itemCategoryCode": material.material_group or "",
            "blocked": material.status is not RecordStatus.ACTIVE,
            "gtin": "",
            "inventory": inventory,
            "unitPrice": 0,
            "priceIncludesTax": False,
            "unitCost": unit_cost,
            "baseUnitOfMeasureCode": material.base_unit or "",
            "lastModifiedDateTime": bc_datetime(material.updated_at),
            "_dimensions": (
                [default_dimension(item_guid, "Item", "COMMODITY", material.commodity_code)]
                if material.commodity_code
                else []
            ),
        }


def create_app(
    company: SandboxCompany,
    faults: FaultPlan,
    credentials: dict[str, str],
    *,
    token_lifetime_seconds: float = TOKEN_LIFETIME_SECONDS,
) -> BusinessCentralEmulator:
    """The WSGI app of a sandbox Business Central environment serving `company`."""
    return BusinessCentralEmulator(company, faults, credentials, token_lifetime_seconds)
