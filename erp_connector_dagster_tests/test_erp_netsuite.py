"""NetSuite specifics the acceptance suite does not see: the TBA signature, SuiteQL's envelope,
error and throttle shapes, account date formats and time zone, and deletions."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from urllib.parse import quote

import pytest
import requests
from werkzeug.serving import make_server

from erp_connector_dagster.erp import build_source
from erp_connector_dagster.erp.base import SyncWindow
from erp_connector_dagster.erp.http import ErpRequestError
from erp_connector_dagster.erp.netsuite import (
    CONCURRENCY_WAIT_SECONDS,
    NetSuiteSource,
    netsuite_throttle_signal,
)
from erp_connector_dagster.records import (
    RecordKind,
    RecordStatus,
    SpendDocumentType,
    SpendRecord,
)
from erp_connector_dagster.sandbox import netsuite as emulator
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.server import SandboxConnection, SandboxServer

UTC = dt.timezone.utc
SUITEQL = "services/rest/query/v1/suiteql"
CREDENTIALS = emulator.SANDBOX_CREDENTIALS


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[SandboxServer, SandboxConnection, NetSuiteSource]]:
    connection = SandboxConnection(
        name="ns-test", erp_type="netsuite", company=SandboxCompany(seed=777)
    )
    with SandboxServer([connection]) as server:
        yield server, connection, build_source(server.connection_configs()[0])


@pytest.fixture
def source(served) -> NetSuiteSource:
    served[1].faults.clear()
    return served[2]


@pytest.fixture
def company(served) -> SandboxCompany:
    return served[1].company


def _enc(value: str) -> str:
    return quote(value, safe="~-._")


def signed_by_hand(
    url: str,
    *,
    consumer_secret: str = CREDENTIALS["consumer_secret"],
    realm: str = emulator.ACCOUNT_ID,
    nonce: str | None = None,
    timestamp: str | None = None,
) -> str:
    """An Authorization header built from RFC 5849 alone: base string, HMAC-SHA256 key."""
    base_url, _, query = url.partition("?")
    oauth = {
        "oauth_consumer_key": CREDENTIALS["consumer_key"],
        "oauth_token": CREDENTIALS["token_id"],
        "oauth_signature_method": "HMAC-SHA256",
        "oauth_timestamp": timestamp or str(int(time.time())),
        "oauth_nonce": nonce or uuid.uuid4().hex,
        "oauth_version": "1.0",
    }
    params = [tuple(pair.split("=", 1)) for pair in query.split("&") if pair]
    params += list(oauth.items())
    normalized = "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted(params))
    base_string = "&".join(("POST", _enc(base_url), _enc(normalized)))
    key = f"{_enc(consumer_secret)}&{_enc(CREDENTIALS['token_secret'])}"
    digest = hmac.new(key.encode(), base_string.encode(), hashlib.sha256).digest()
    oauth["oauth_signature"] = base64.b64encode(digest).decode()
    fields = ", ".join(f'{k}="{_enc(v)}"' for k, v in oauth.items())
    return f'OAuth realm="{realm}", {fields}'


def post_suiteql(served, statement: str, *, authorization: str | None = None, **headers):
    server, connection, _ = served
    url = f"{server.base_url(connection.name)}/{SUITEQL}?limit=5&offset=0"
    headers.setdefault("Prefer", "transient")
    headers["Authorization"] = authorization or signed_by_hand(url)
    return requests.post(url, json={"q": statement}, headers=headers, timeout=10)


# Token-based authentication


def test_a_request_signed_by_the_rfc_alone_is_accepted(served) -> None:
    response = post_suiteql(served, "SELECT c.id, c.symbol FROM currency c ORDER BY c.id")

    assert response.status_code == 200, response.text
    page = response.json()
    assert page["count"] == 5 and page["offset"] == 0 and page["hasMore"] is True
    assert all(item["links"] == [] and isinstance(item["id"], str) for item in page["items"])


@pytest.mark.parametrize(
    "tamper",
    [
        {"consumer_secret": "not-the-secret"},
        {"realm": "4242424_sb1"},  # sandbox realms are upper case
        {"timestamp": str(int(time.time()) - 3600)},
    ],
    ids=["wrong-secret", "wrong-realm", "stale-timestamp"],
)
def test_a_wrongly_signed_request_gets_invalid_login(served, tamper: dict) -> None:
    server, connection, _ = served
    url = f"{server.base_url(connection.name)}/{SUITEQL}?limit=5&offset=0"

    response = post_suiteql(
        served, "SELECT c.id FROM currency c", authorization=signed_by_hand(url, **tamper)
    )

    assert response.status_code == 401
    body = response.json()
    assert body["status"] == 401 and body["title"] == "Unauthorized"
    assert body["o:errorDetails"][0]["o:errorCode"] == "INVALID_LOGIN"
    assert f'realm="{emulator.ACCOUNT_ID}"' in response.headers["WWW-Authenticate"]


def test_a_replayed_nonce_is_refused(served) -> None:
    server, connection, _ = served
    url = f"{server.base_url(connection.name)}/{SUITEQL}?limit=5&offset=0"
    authorization = signed_by_hand(url, nonce="replayed-nonce-1")

    first = post_suiteql(served, "SELECT c.id FROM currency c", authorization=authorization)
    again = post_suiteql(served, "SELECT c.id FROM currency c", authorization=authorization)

    assert (first.status_code, again.status_code) == (200, 401)


def test_the_source_signs_with_hmac_sha256_and_the_account_realm(source, served) -> None:
    source.check_health()
    sent = []
    session = source.http.session
    session.hooks["response"].append(lambda response, **_: sent.append(response.request))
    try:
        list(source.fetch(RecordKind.VENDOR, SyncWindow()))
    finally:
        session.hooks["response"].clear()

    authorization = sent[0].headers["Authorization"].decode()
    assert authorization.startswith(f'OAuth realm="{emulator.ACCOUNT_ID}"')
    assert 'oauth_signature_method="HMAC-SHA256"' in authorization
    assert sent[0].headers["Prefer"] in ("transient", b"transient")
    assert CREDENTIALS["consumer_secret"] not in authorization
    assert len({request.headers["Authorization"] for request in sent}) == len(sent), "nonces"


def test_an_expired_session_is_answered_401_and_renewed(source, served) -> None:
    served[1].faults.expire_token(count=1)

    vendors = [r for batch in source.fetch(RecordKind.VENDOR, SyncWindow()) for r in batch.records]

    assert len(vendors) == served[1].company.vendor_count
    assert served[1].faults.faults_fired[-1].value == "expire_token"


# SuiteQL: strict parsing, envelope, errors


@pytest.mark.parametrize(
    "statement, detail",
    [
        ("SELECT * FROM transaction", "Invalid or unsupported search"),
        ("DELETE FROM transaction", "Invalid or unsupported search"),
        ("SELECT t.id FROM transaction t WHERE t.trandate LIKE '1/%'", "unsupported"),
        ("SELECT v.nosuchfield FROM vendor v", "Field 'nosuchfield' for record 'v'"),
        ("SELECT x.id FROM nosuchrecord x", "Record 'nosuchrecord' was not found"),
    ],
)
def test_unsupported_suiteql_gets_the_real_error_shape(served, statement, detail) -> None:
    response = post_suiteql(served, statement)

    assert response.status_code == 400
    body = response.json()
    error = body["o:errorDetails"][0]
    assert error["o:errorCode"] == "INVALID_PARAMETER" and error["o:errorQueryParam"] == "q"
    assert error["detail"].startswith("Invalid search query.")
    assert detail in error["detail"]


def test_suiteql_needs_the_transient_preference(served) -> None:
    response = post_suiteql(served, "SELECT c.id FROM currency c", Prefer="respond-async")

    assert response.status_code == 400
    assert response.json()["o:errorDetails"][0]["o:errorHeader"] == "Prefer"


def test_the_emulator_really_filters_joins_and_orders(served, company) -> None:
    day = company.business_days()[-20]
    statement = (
        "SELECT DISTINCT t.tranid, v.entityid FROM transaction t "
        "LEFT JOIN vendor v ON v.id = t.entity "
        f"WHERE t.type = 'PurchOrd' AND t.trandate = TO_DATE('{day}', 'YYYY-MM-DD') "
        "AND NOT (v.entityid IS NULL) ORDER BY t.tranid DESC"
    )

    response = post_suiteql(served, statement)

    truth = sorted(
        (
            (o.purchase_order_id, o.vendor_id)
            for o in company.records(RecordKind.PURCHASE_ORDER, day)
        ),
        reverse=True,
    )[:5]
    assert [(i["tranid"], i["entityid"]) for i in response.json()["items"]] == truth


def test_next_links_keep_the_mount_prefix_and_pages_cover_the_result(source, served) -> None:
    server, connection, _ = served
    paged = source.model_copy(update={"page_size": 7})

    pages = list(paged._pages("SELECT v.id FROM vendor v ORDER BY v.id"))

    assert [len(page) for page in pages[:-1]] == [7] * (len(pages) - 1)
    ids = [item["id"] for page in pages for item in page]
    assert len(ids) == len(set(ids)) == connection.company.vendor_count
    response = post_suiteql(served, "SELECT v.id FROM vendor v ORDER BY v.id")
    links = {link["rel"]: link["href"] for link in response.json()["links"]}
    assert links["next"] == f"{server.base_url(connection.name)}/{SUITEQL}?limit=5&offset=5"
    assert set(links) == {"first", "next", "last", "self"}


# Throttling


def test_throttle_is_a_429_concurrency_error_without_retry_after(served) -> None:
    served[1].faults.throttle(count=1)

    response = post_suiteql(served, "SELECT c.id FROM currency c")

    assert response.status_code == 429 and "Retry-After" not in response.headers
    assert response.json()["o:errorDetails"][0]["o:errorCode"] == "CONCURRENCY_LIMIT_EXCEEDED"
    assert netsuite_throttle_signal(response) == CONCURRENCY_WAIT_SECONDS


def test_restlet_style_limit_errors_are_throttling_but_bad_queries_are_not() -> None:
    def answer(status: int, code: str) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps({"error": {"code": code, "message": "x"}}).encode()
        return response

    assert netsuite_throttle_signal(answer(400, "SSS_REQUEST_LIMIT_EXCEEDED")) is not None
    assert netsuite_throttle_signal(answer(400, "INVALID_PARAMETER")) is None
    assert netsuite_throttle_signal(answer(200, "")) is None


# Dates and times in the account's format and time zone


def test_dates_come_in_the_account_format_and_times_in_its_zone(served, company) -> None:
    day = dt.date(2026, 7, 6)  # summer time in Los Angeles: UTC-7
    bill = company.records(RecordKind.SPEND, day)[0]
    statement = (
        "SELECT t.trandate, t.lastmodifieddate, "
        "TO_CHAR(t.lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS stamp FROM transaction t "
        f"WHERE t.tranid = '{bill.document_id}' AND t.trandate = TO_DATE('{day}', 'YYYY-MM-DD')"
    )

    item = post_suiteql(served, statement).json()["items"][0]

    assert item["trandate"] == "7/6/2026"
    local = bill.updated_at.astimezone(dt.timezone(dt.timedelta(hours=-7)))
    assert item["stamp"] == f"{local:%Y-%m-%d %H:%M:%S}"
    assert item["lastmodifieddate"] == f"{local.month}/{local.day}/{local.year}"


def test_the_source_turns_account_times_back_into_utc(source, company) -> None:
    for day in (dt.date(2026, 1, 13), dt.date(2026, 7, 14)):  # winter and summer time
        truth = {r.natural_key: r for r in company.records(RecordKind.SPEND, day)}

        broken = {line["document_id"] for line in company.bad_spend_lines(day)}

        read = [
            r
            for b in source.fetch(RecordKind.SPEND, SyncWindow.for_day(day))
            for r in b.records
            if r.document_id not in broken
        ]

        assert read and {r.natural_key for r in read} == set(truth)
        for record in read:
            assert record.updated_at == truth[record.natural_key].updated_at.replace(microsecond=0)


@pytest.mark.parametrize(
    "date_format, text", [("D/M/YYYY", "26/11/2026"), ("DD.MM.YYYY", "26.11.2026")]
)
def test_other_account_date_formats_parse(source, date_format: str, text: str) -> None:
    european = source.model_copy(update={"date_format": date_format})
    item = {
        "transaction_id": "1",
        "tranid": "PO-1",
        "trandate": text,
        "status": "B",
        "voided": "F",
        "last_modified": "2026-11-26 09:30:00",
        "currency_symbol": "EUR",
        "foreigntotal": "10.50",
    }

    batch = european.records_from_items(RecordKind.PURCHASE_ORDER, [item])

    assert batch.records[0].order_date == dt.date(2026, 11, 26)
    assert batch.records[0].total_amount == Decimal("10.50")


def test_numbers_as_json_numbers_and_missing_nulls_are_read(source) -> None:
    item = {
        "links": [],
        "transaction_id": 9,
        "tranid": "BILL-9",
        "type": "VendCred",
        "trandate": "1/2/2026",
        "voided": "F",
        "last_modified": "2026-01-02 10:00:00",
        "currency_symbol": "USD",
        "line_id": 1,
        "linesequencenumber": 1,
        "foreignamount": 12.5,
    }

    record = source.records_from_items(RecordKind.SPEND, [item]).records[0]

    assert record.amount == Decimal("-12.5") and record.quantity is None
    assert record.document_type is SpendDocumentType.CREDIT_NOTE and record.vendor_id is None
    assert record.source_id == "9/1"


# Credits, voids and deletions


def test_vendor_credit_lines_are_negative_on_the_wire_and_in_canonical_form(source, company):
    day = next(
        d
        for d in reversed(company.business_days())
        if any(
            r.document_type is SpendDocumentType.CREDIT_NOTE
            for r in company.records(RecordKind.SPEND, d)
        )
    )
    credit = next(
        r
        for r in company.records(RecordKind.SPEND, day)
        if r.document_type is SpendDocumentType.CREDIT_NOTE
    )
    statement = (
        "SELECT t.type, tl.foreignamount FROM transactionline tl "
        "INNER JOIN transaction t ON t.id = tl.transaction "
        f"WHERE t.tranid = '{credit.document_id}' AND tl.mainline = 'F' "
        f"AND t.trandate = TO_DATE('{day}', 'YYYY-MM-DD')"
    )

    wire = source._pages(statement)
    records = [
        r for b in source.fetch(RecordKind.SPEND, SyncWindow.for_day(day)) for r in b.records
    ]

    assert all(i["type"] == "VendCred" and i["foreignamount"].startswith("-") for i in next(wire))
    assert all(r.amount < 0 for r in records if r.document_id == credit.document_id)


def test_a_voided_bill_is_read_as_voided(source, company) -> None:
    day = company.business_days()[-30]
    line = company.records(RecordKind.SPEND, day)[0]
    company.amend(RecordKind.SPEND, line.natural_key, day, status=RecordStatus.VOIDED)

    records = [
        r for b in source.fetch(RecordKind.SPEND, SyncWindow.for_day(day)) for r in b.records
    ]

    voided = {r.natural_key for r in records if r.status is RecordStatus.VOIDED}
    assert line.natural_key in voided
    assert voided == {r.natural_key for r in records if r.document_id == line.document_id}


def test_deleted_orders_and_bills_are_reported_from_deletedrecord(source, company) -> None:
    day = company.business_days()[-25]
    order = company.records(RecordKind.PURCHASE_ORDER, day)[0]
    bill_lines = {}
    for line in company.records(RecordKind.SPEND, day):
        bill_lines.setdefault(line.document_id, []).append(line)
    multi = next(lines for lines in bill_lines.values() if len(lines) > 1)
    since = dt.datetime.now(UTC) - dt.timedelta(seconds=1)
    before = [r for b in source.fetch(RecordKind.SPEND, SyncWindow.for_day(day)) for r in b.records]
    order_source_id = next(
        r.source_id
        for b in source.fetch(RecordKind.PURCHASE_ORDER, SyncWindow.for_day(day))
        for r in b.records
        if r.natural_key == order.natural_key
    )
    company.delete(RecordKind.PURCHASE_ORDER, order.natural_key, day)
    for line in multi[1:]:
        company.delete(RecordKind.SPEND, line.natural_key, day)  # the bill lives on, modified
    whole = next(lines for lines in bill_lines.values() if lines is not multi)
    for line in whole:
        company.delete(RecordKind.SPEND, line.natural_key, day)  # the bill is gone

    orders = list(source.fetch(RecordKind.PURCHASE_ORDER, SyncWindow(changed_since=since)))
    spend = list(source.fetch(RecordKind.SPEND, SyncWindow(changed_since=since)))

    assert order_source_id in orders[-1].deleted_source_ids
    whole_id = next(r.source_id for r in before if r.document_id == whole[0].document_id)
    assert whole_id.split("/")[0] in spend[-1].deleted_source_ids
    changed = [r for b in spend for r in b.records if r.transaction_date == day]
    assert {r.natural_key for r in changed} == {multi[0].natural_key}
    assert day in source.changed_days(RecordKind.SPEND, since).days


# Documented SuiteQL shapes beyond the emulator's: a server answering with JSON written here in
# the shapes of Oracle's REST web services docs ("Executing SuiteQL Queries Through REST Web
# Services", "Collection Paging", "Error Handling in REST Web Services"), own values.


class CannedSuiteQL:
    """Answers SuiteQL posts with the first canned page whose predicate takes the request."""

    def __init__(self, pages: list[tuple[Callable[[str, str], bool], int, object]]) -> None:
        self.pages = pages
        self.asked: list[tuple[str, str]] = []

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        query = environ.get("QUERY_STRING", "")
        statement = json.loads(body)["q"]
        self.asked.append((query, statement))
        status, payload = next(
            (status, payload) for taken, status, payload in self.pages if taken(query, statement)
        )
        text = payload if isinstance(payload, str) else json.dumps(payload)
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [text.encode()]


@contextmanager
def canned(pages, **options) -> Iterator[tuple[NetSuiteSource, CannedSuiteQL]]:
    app = CannedSuiteQL(pages)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (
            NetSuiteSource(
                connection_name="ns-docs",
                base_url=f"http://127.0.0.1:{server.server_port}",
                account_id="TSTDRV1",
                consumer_key="ck",
                consumer_secret="consumer-secret-value",
                token_id="ti",
                token_secret="token-secret-value",
                account_timezone="UTC",
                max_retries=0,
                **options,
            ),
            app,
        )
    finally:
        server.shutdown()
        server.server_close()


def envelope(items: list[dict], *, offset: int, total: int, more: bool, links=None) -> dict:
    return {
        "links": links if links is not None else [],
        "count": len(items),
        "hasMore": more,
        "items": [{"links": [], **item} for item in items],
        "offset": offset,
        "totalResults": total,
    }


def is_headers(query: str, statement: str) -> bool:
    return statement.startswith("SELECT t.id AS transaction_id, t.tranid, t.type")


def is_lines(query: str, statement: str) -> bool:
    return statement.startswith("SELECT tl.transaction AS transaction_id")


def test_documented_pages_absent_nulls_and_mixed_id_types_become_exact_records() -> None:
    headers = [
        # The header query gives ids as text, the line query as JSON numbers below.
        {
            "transaction_id": "812",
            "tranid": "VB-812",
            "type": "VendBill",
            "trandate": "3-Feb-2026",
            "voided": "F",
            "last_modified": "2026-02-04 06:07:08",
            "vendor_entityid": "Birch Supply",
            "currency_symbol": "GBP",
        },
        {
            "transaction_id": "813",
            "tranid": "VC-813",
            "type": "VendCred",
            "trandate": "3-Feb-2026",
            "voided": "T",
            "last_modified": "2026-02-05 00:00:00",
            "currency_symbol": "GBP",
        },
    ]
    first = [
        {
            "transaction_id": 812,
            "line_id": 1,
            "linesequencenumber": "1",
            "foreignamount": "250.75",
            "quantity": 3,
            "item_itemid": "CEMENT-25",
            "unit_abbreviation": "bag",
            "acctnumber": "5010",
            "accttype": "COGS",
        },
    ]
    second = [
        # memo, item, unit, quantity: null columns, simply absent.
        {
            "transaction_id": 813,
            "line_id": 4,
            "linesequencenumber": 2.0,
            "foreignamount": ".5",
            "acctnumber": "1600",
            "accttype": "FixedAsset",
        },
    ]
    pages = [
        (is_headers, 200, envelope(headers, offset=0, total=2, more=False)),
        (
            lambda q, s: is_lines(q, s) and "offset=0" in q,
            200,
            envelope(
                first,
                offset=0,
                total=2,
                more=True,
                links=[
                    {"rel": "next", "href": "/services/rest/query/v1/suiteql?limit=1&offset=1"},
                    {"rel": "self", "href": "/services/rest/query/v1/suiteql?limit=1&offset=0"},
                ],
            ),
        ),
        (lambda q, s: is_lines(q, s), 200, envelope(second, offset=1, total=2, more=False)),
    ]
    with canned(pages, date_format="D-Mon-YYYY", page_size=1) as (source, app):
        batches = list(source.fetch(RecordKind.SPEND, SyncWindow.for_day(dt.date(2026, 2, 3))))

    common = {"connection": "ns-docs", "transaction_date": dt.date(2026, 2, 3), "currency": "GBP"}
    assert [r for b in batches for r in b.records] == [
        SpendRecord(
            **common,
            source_id="812/1",
            updated_at=dt.datetime(2026, 2, 4, 6, 7, 8, tzinfo=UTC),
            document_id="VB-812",
            line_number=1,
            document_type=SpendDocumentType.INVOICE,
            vendor_id="Birch Supply",
            material_id="CEMENT-25",
            gl_account="5010",
            amount=Decimal("250.75"),
            quantity=Decimal("3"),
            unit="bag",
        ),
        SpendRecord(
            **common,
            source_id="813/4",
            updated_at=dt.datetime(2026, 2, 5, tzinfo=UTC),
            status=RecordStatus.VOIDED,
            document_id="VC-813",
            line_number=2,
            document_type=SpendDocumentType.CREDIT_NOTE,
            vendor_id=None,
            gl_account="1600",
            amount=Decimal("-0.5"),
            is_capex=True,
        ),
    ]
    assert [b.rejected for b in batches] == [[], []]
    assert [q for q, s in app.asked if is_lines(q, s)] == [
        "limit=1&offset=0",
        "limit=1&offset=1",
    ]


def test_has_more_without_a_next_link_pages_on_by_offset_and_count() -> None:
    def vendor(number: int) -> dict:
        return {"id": str(number), "entityid": f"V{number}", "last_modified": "2026-01-01 00:00:00"}

    pages = [
        (
            lambda q, s: "offset=0" in q,
            200,
            envelope([vendor(1), vendor(2)], offset=0, total=3, more=True),
        ),
        (lambda q, s: "offset=2" in q, 200, envelope([vendor(3)], offset=2, total=3, more=False)),
    ]
    with canned(pages, page_size=2) as (source, _):
        records = [r for b in source.fetch(RecordKind.VENDOR, SyncWindow()) for r in b.records]

    # A vendor that is a person has no companyname: its entity id names it.
    assert [(r.vendor_id, r.name, r.country) for r in records] == [
        ("V1", "V1", None),
        ("V2", "V2", None),
        ("V3", "V3", None),
    ]


@pytest.mark.parametrize(
    "status, payload, words",
    [
        (
            400,
            {
                "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1",
                "title": "Bad Request",
                "status": 400,
                "o:errorDetails": [
                    {
                        "detail": "Invalid search query. Unknown identifier 'v.nosuchfield'.",
                        "o:errorCode": "INVALID_PARAMETER",
                    }
                ],
            },
            ["400", "INVALID_PARAMETER", "nosuchfield"],
        ),
        (
            200,
            {"title": "Bad Request", "o:errorDetails": [{"detail": "x", "o:errorCode": "E1"}]},
            ["refused the query", "E1 x"],
        ),
        (200, {"links": [], "count": 0, "hasMore": False}, ["without an items list"]),
        (200, "<html>maintenance</html>", ["not JSON"]),
        (200, envelope([], offset=0, total=9, more=True), ["does not advance"]),
    ],
)
def test_error_bodies_and_broken_envelopes_are_clear_errors(status, payload, words) -> None:
    with canned([(lambda q, s: True, status, payload)]) as (source, _):
        with pytest.raises(ErpRequestError) as raised:
            list(source.fetch(RecordKind.VENDOR, SyncWindow()))

    message = str(raised.value)
    assert all(word in message for word in words), message
    assert "consumer-secret-value" not in message and "token-secret-value" not in message


@pytest.mark.parametrize(
    "date_format, text",
    [
        ("DD-Mon-YYYY", "07-Dec-2026"),
        ("D-MONTH-YYYY", "7-DECEMBER-2026"),
        ("DD MONTH, YYYY", "07 December, 2026"),
        ("YYYY/MM/DD", "2026/12/07"),
    ],
)
def test_month_name_account_date_formats_parse(source, date_format: str, text: str) -> None:
    account = source.model_copy(update={"date_format": date_format})
    item = {
        "transaction_id": "5",
        "tranid": "PO-5",
        "trandate": text,
        "status": "PurchOrd:F",
        "voided": False,
        "last_modified": "2026-12-07 10:00:00",
        "currency_symbol": "USD",
        "foreigntotal": 99,
    }

    (order,) = account.records_from_items(RecordKind.PURCHASE_ORDER, [item]).records

    assert (order.order_date, order.order_status, order.total_amount) == (
        dt.date(2026, 12, 7),
        "received",
        Decimal("99"),
    )


def test_unreadable_rows_are_rejected_with_the_reason(source) -> None:
    base = {
        "transaction_id": "6",
        "tranid": "VB-6",
        "type": "VendBill",
        "trandate": "1/9/2026",
        "last_modified": "2026-01-09 10:00:00",
        "currency_symbol": "USD",
        "foreignamount": "5",
    }
    items = [
        {**base, "line_id": "1", "linesequencenumber": "1.5"},
        {**base, "line_id": "2", "linesequencenumber": "2", "foreignamount": "NaN"},
        {**base, "line_id": "3", "linesequencenumber": "3", "type": "Journal"},
        {**base, "line_id": "4", "linesequencenumber": "4", "trandate": "2026-01-09"},
    ]

    batch = source.records_from_items(RecordKind.SPEND, items)

    assert batch.records == []
    assert [(r.source_id, r.reason) for r in batch.rejected] == [
        ("6/1", "linesequencenumber '1.5' is not a whole number"),
        ("6/2", "foreignamount 'NaN' is not a finite number"),
        ("6/3", "type 'Journal' is not a bill, credit or card charge"),
        ("6/4", "date '2026-01-09' is not in the account format M/D/YYYY"),
    ]
