"""Sage Intacct: published responses, the sender and session handshake, readMore, deletes.

Runs the real source against the Intacct gateway emulator over loopback HTTP (some tests put
a recording or page-losing middleware in front of it), and parses the published sample
responses in ../shared/data/erp-samples/sage_intacct.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from werkzeug.serving import make_server

from erp_connector_dagster.erp.base import SyncWindow
from erp_connector_dagster.erp.http import ErpAuthError, ErpRequestError
from erp_connector_dagster.erp.sage_intacct import (
    IntacctReference,
    SageIntacctSource,
    master_from_rows,
    parse_date,
    parse_timestamp,
    purchase_order_from_rows,
    quote,
    row_fields,
    spend_from_rows,
    vendor_from_row,
)
from erp_connector_dagster.records import (
    RecordKind,
    RecordStatus,
    SpendDocumentType,
    SpendRecord,
)
from erp_connector_dagster.sandbox import sage_intacct as emulator
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.faults import FaultPlan

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "erp-samples" / "sage_intacct"
SEED = 7373
UTC = dt.timezone.utc


def sample(name: str) -> ET.Element:
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"published Intacct sample not found at {path}")
    return ET.fromstring(path.read_bytes())


@dataclass
class Gateway:
    """The emulator behind a middleware that records function names and can lose a page."""

    app: emulator.IntacctSandbox
    calls: list[tuple[str, str]] = field(default_factory=list)  # (function, authentication)
    lose_next_read_more: bool = False

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        try:
            request = ET.fromstring(body)
            function = request.find("operation/content/function")
            name = function[0].tag if function is not None and len(function) else ""
            login = request.find("operation/authentication/login") is not None
            self.calls.append((name, "login" if login else "session"))
        except ET.ParseError:
            name = ""
        if name == "readMore" and self.lose_next_read_more:
            # Intacct served this page but it never arrived: the result set ran ahead.
            self.lose_next_read_more = False
            lost = dict(environ, **{"wsgi.input": io.BytesIO(body)})
            b"".join(self.app(lost, lambda *args, **kwargs: None))
        environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)


@dataclass
class Sandbox:
    company: SandboxCompany
    faults: FaultPlan
    gateway: Gateway
    base_url: str
    source: SageIntacctSource


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    company, faults = SandboxCompany(seed=SEED), FaultPlan()
    gateway = Gateway(emulator.create_app(company, faults, dict(emulator.SANDBOX_CREDENTIALS)))
    server = make_server("127.0.0.1", 0, gateway, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{server.server_port}"
    source = SageIntacctSource(
        connection_name="intacct-test",
        base_url=base_url,
        **emulator.SANDBOX_CREDENTIALS,
        **emulator.SANDBOX_OPTIONS,
    )
    try:
        yield Sandbox(company, faults, gateway, base_url, source)
    finally:
        server.shutdown()
        server.server_close()


def read(source: SageIntacctSource, kind: RecordKind, window: SyncWindow) -> list:
    return [record for batch in source.fetch(kind, window) for record in batch.records]


def comparable(record) -> dict:
    return record.model_dump(exclude={"connection", "source_id", "updated_at"})


def post(sandbox: Sandbox, function: str, sender_password: str | None = None) -> requests.Response:
    credentials = emulator.SANDBOX_CREDENTIALS
    body = (
        "<?xml version='1.0' encoding='UTF-8'?><request><control>"
        f"<senderid>{credentials['sender_id']}</senderid>"
        f"<password>{sender_password or credentials['sender_password']}</password>"
        "<controlid>t</controlid><uniqueid>false</uniqueid><dtdversion>3.0</dtdversion>"
        "</control><operation><authentication><login>"
        f"<userid>{credentials['user_id']}</userid><companyid>{credentials['company_id']}"
        f"</companyid><password>{credentials['user_password']}</password></login>"
        f"</authentication><content><function controlid='f'>{function}</function></content>"
        "</operation></request>"
    )
    return requests.post(
        f"{sandbox.base_url}{emulator.GATEWAY_PATH}",
        data=body,
        headers={"Content-Type": "application/xml"},
        timeout=10,
    )


# Published responses


def test_sample_read_by_query_vendor_becomes_a_vendor() -> None:
    response = sample("readbyquery_vendor_response.xml")
    results = {r.findtext("function"): r for r in response.findall("operation/result")}
    data = results["readByQuery"].find("data")

    (row,) = [row_fields(element) for element in data]
    vendor = vendor_from_row(row, "intacct")
    session = row_fields(results["test1"].find("data"))

    assert data.get("listtype") == "vendor" and data.get("numremaining") == "0"
    assert (vendor.vendor_id, vendor.name, vendor.tax_id) == ("V0004", "Vendor 4", "99-9999999")
    assert vendor.source_id == "VENDOR:V0004" and vendor.country is None
    assert session["API.SESSIONID"] == "fAkESesSiOnId.."
    assert session["API.ENDPOINT"] == "https://unittest.intacct.com/ia/xml/xmlgw.phtml"
    assert response.findtext("operation/authentication/status") == "success"


def test_sample_paged_result_names_what_remains() -> None:
    response = sample("readbyquery_class_paged_response.xml")
    data = response.find("operation/result/data")

    (row,) = [row_fields(element) for element in data]

    assert (data.get("count"), data.get("totalcount"), data.get("numremaining")) == ("1", "2", "1")
    assert data.get("resultId") == "myResultId"
    assert (row["RECORDNO"], row["CLASSID"], row["NAME"]) == ("8", "C1234", "hello world")
    assert parse_timestamp(row["WHENMODIFIED"]) == dt.datetime(2017, 7, 24, 15, 19, 46, tzinfo=UTC)


def test_ap_adjustments_are_credits_when_negative() -> None:
    header = {
        "RECORDNO": "77",
        "RECORDID": "ADJ-1",
        "VENDORID": "V1",
        "STATE": "Posted",
        "WHENCREATED": "10/29/2026",
        "CURRENCY": "USD",
        "WHENMODIFIED": "10/30/2026 08:15:00",
    }
    lines = [
        {
            "RECORDNO": "771",
            "RECORDKEY": "77",
            "LINE_NO": "1",
            "ACCOUNTNO": "1500",
            "TRX_AMOUNT": "-250.00",
            "ITEMID": "M1",
            "QTY": "-5",
            "ENTRYDESCRIPTION": "Return",
        },
        {
            "RECORDNO": "772",
            "RECORDKEY": "77",
            "LINE_NO": "2",
            "ACCOUNTNO": "6400",
            "TRX_AMOUNT": "12,5",
            "ITEMID": "",
        },
    ]
    reference = IntacctReference(
        item_units={"M1": "EA"}, account_categories={"1500": "Fixed Assets"}
    )

    (credit,), (refused,) = spend_from_rows(
        "APADJUSTMENT", header, lines, "intacct", reference, quantity_field="qty"
    )
    positive = spend_from_rows(
        "APADJUSTMENT", header, [dict(lines[0], TRX_AMOUNT="9.00")], "intacct"
    )[0][0]

    assert credit.document_type is SpendDocumentType.CREDIT_NOTE
    assert (credit.amount, credit.quantity, credit.unit) == (Decimal("-250.00"), Decimal(-5), "EA")
    assert credit.is_capex and credit.transaction_date == dt.date(2026, 10, 29)
    assert "TRX_AMOUNT is not a number" in refused.reason and refused.source_id == "APADJUSTMENT:77"
    assert positive.document_type is SpendDocumentType.INVOICE


def test_purchase_order_states_map_to_open_received_closed() -> None:
    header = {
        "RECORDNO": "9",
        "DOCNO": "PO0213",
        "WHENCREATED": "10/01/2026",
        "CUSTVENDID": "V1",
        "CURRENCY": "EUR",
        "TRX_TOTAL": "10.00",
    }
    line = {
        "RECORDNO": "90",
        "DOCHDRNO": "9",
        "LINE_NO": "0",
        "ITEMID": "M1",
        "QUANTITY": "2",
        "UNIT": "Each",
        "TRX_PRICE": "5.00",
        "TRX_VALUE": "10.00",
        "NEEDBYDATE": "",
    }

    states = {
        state: purchase_order_from_rows(dict(header, STATE=state), [line], "i")[0][0]
        for state in ("Pending", "Partially Converted", "Converted", "Closed")
    }
    order_line = purchase_order_from_rows(
        header, [line], "i", IntacctReference(item_expense_accounts={"M1": "5100"})
    )[0][1]

    assert {s: o.order_status for s, o in states.items()} == {
        "Pending": "open",
        "Partially Converted": "open",
        "Converted": "received",
        "Closed": "closed",
    }
    assert (order_line.purchase_order_id, order_line.line_number, order_line.unit) == (
        "PO0213",
        0,
        "Each",
    )
    assert order_line.gl_account == "5100" and order_line.delivery_date is None


def test_dates_time_zones_and_query_quoting() -> None:
    eastern = ZoneInfo("America/New_York")

    assert parse_date("02/18/1972") == dt.date(1972, 2, 18)
    assert parse_timestamp("06/24/2026 14:57:37", eastern) == dt.datetime(
        2026, 6, 24, 18, 57, 37, tzinfo=UTC
    )
    assert parse_timestamp("08/27/2010\n        07:28:42") == dt.datetime(
        2010, 8, 27, 7, 28, 42, tzinfo=UTC
    )
    assert quote("Jane's Deli \\ Co") == "'Jane\\'s Deli \\\\ Co'"
    tree = emulator.parse_query(
        "NAME = " + quote("Jane's Deli") + " AND WHENCREATED < "
        "'01/02/2027' AND (STATUS = 'active' OR STATUS IS NULL)"
    )
    assert emulator.evaluate(
        tree, {"NAME": "Jane's Deli", "WHENCREATED": "12/31/2026", "STATUS": ""}
    )
    # Dates compare as dates, not as text: 12/31/2026 is before 01/02/2027.
    assert not emulator.evaluate(
        tree, {"NAME": "Jane's Deli", "WHENCREATED": "01/03/2027", "STATUS": "active"}
    )


# The emulated company


def test_every_offered_kind_round_trips(sandbox: Sandbox) -> None:
    day = sandbox.company.business_days()[-4]

    for kind in SageIntacctSource.supported_kinds:
        window = (
            SyncWindow()
            if kind in (RecordKind.VENDOR, RecordKind.MATERIAL)
            else (SyncWindow.for_day(day))
        )
        broken = {line["document_id"] for line in sandbox.company.bad_spend_lines(day)}
        records = [
            r
            for r in read(sandbox.source, kind, window)
            if getattr(r, "document_id", None) not in broken
        ]

        assert records, kind
        assert sorted(map(comparable, records), key=str) == sorted(
            map(comparable, sandbox.company.records(kind, day)), key=str
        ), kind


def test_one_login_then_the_session_for_every_page(sandbox: Sandbox) -> None:
    narrow = sandbox.source.model_copy(update={"page_size": 3})
    day = sandbox.company.business_days()[-2]

    orders = read(narrow, RecordKind.PURCHASE_ORDER, SyncWindow.for_day(day))

    logins = [call for call in sandbox.gateway.calls if call[1] == "login"]
    assert logins == [("getAPISession", "login")]
    assert sum(1 for name, _ in sandbox.gateway.calls if name == "readMore") >= 2
    assert len(orders) == len(sandbox.company.records(RecordKind.PURCHASE_ORDER, day))


def test_sender_and_user_are_refused_separately_without_secrets(sandbox: Sandbox) -> None:
    bad_sender = sandbox.source.model_copy(update={"sender_password": "not-the-sender"})
    bad_user = sandbox.source.model_copy(update={"user_password": "not-the-user"})
    bad_sender._http = bad_user._http = None

    with pytest.raises(ErpAuthError) as sender_refused:
        read(bad_sender, RecordKind.VENDOR, SyncWindow())
    with pytest.raises(ErpAuthError) as user_refused:
        read(bad_user, RecordKind.VENDOR, SyncWindow())
    raw = ET.fromstring(post(sandbox, "<getAPISession/>", sender_password="x").content)

    assert "sender credentials refused (XL03000006" in str(sender_refused.value)
    assert "login refused (XL03000006 Sign-in information is incorrect)" in str(user_refused.value)
    assert "not-the-sender" not in str(sender_refused.value)
    assert "not-the-user" not in str(user_refused.value)
    assert raw.findtext("control/status") == "failure"


def test_rate_limit_is_an_error_inside_http_200(sandbox: Sandbox) -> None:
    sandbox.faults.throttle(retry_after=1.5, count=1)
    throttled = post(sandbox, "<getAPISession/>")
    day = sandbox.company.business_days()[-3]
    read(sandbox.source, RecordKind.PURCHASE_ORDER, SyncWindow.for_day(day))
    sandbox.faults.throttle(retry_after=1.5, count=1)

    started = time.monotonic()
    orders = read(sandbox.source, RecordKind.PURCHASE_ORDER, SyncWindow.for_day(day))

    body = ET.fromstring(throttled.content)
    assert throttled.status_code == 200 and throttled.headers["Retry-After"] == "1.5"
    assert body.findtext("control/status") == "failure"
    assert body.findtext("errormessage/error/errorno") == "GW-0010"
    assert sandbox.source._throttle_signal(throttled) == 1.5
    assert time.monotonic() - started >= 1.5 and orders


def test_a_page_lost_after_intacct_served_it_is_read_again(sandbox: Sandbox, caplog) -> None:
    narrow = sandbox.source.model_copy(update={"page_size": 2})
    day = sandbox.company.business_days()[-6]
    read(narrow, RecordKind.VENDOR, SyncWindow(changed_since=dt.datetime.now(UTC)))  # log in
    sandbox.gateway.lose_next_read_more = True

    with caplog.at_level("WARNING", logger="erp_connector_dagster.erp.sage_intacct"):
        records = read(narrow, RecordKind.SPEND, SyncWindow.for_day(day))

    keys = [record.natural_key for record in records]
    broken = {line["document_id"] for line in sandbox.company.bad_spend_lines(day)}
    truth = sandbox.company.records(RecordKind.SPEND, day)
    assert not sandbox.gateway.lose_next_read_more  # a page really went missing
    assert any("result set lost" in message for message in caplog.messages)
    assert len(keys) == len(set(keys))
    kept = {r.natural_key for r in records if r.document_id not in broken}
    assert kept == {r.natural_key for r in truth}


def test_expired_session_logs_in_again(sandbox: Sandbox) -> None:
    day = sandbox.company.business_days()[-3]
    read(sandbox.source, RecordKind.PURCHASE_ORDER, SyncWindow.for_day(day))
    sandbox.faults.expire_token(count=1)

    orders = read(sandbox.source, RecordKind.PURCHASE_ORDER, SyncWindow.for_day(day))

    assert [c for c in sandbox.gateway.calls if c[1] == "login"] == [("getAPISession", "login")] * 2
    assert len(orders) == len(sandbox.company.records(RecordKind.PURCHASE_ORDER, day))


def test_audit_history_reports_a_deleted_bill_and_order(sandbox: Sandbox) -> None:
    company = sandbox.company
    day = next(
        d
        for d in reversed(company.business_days())
        if any(
            r.document_type is SpendDocumentType.INVOICE
            for r in company.records(RecordKind.SPEND, d)
        )
    )
    window = SyncWindow.for_day(day)
    bill = next(
        r
        for r in read(sandbox.source, RecordKind.SPEND, window)
        if r.document_type is SpendDocumentType.INVOICE
    )
    order = company.records(RecordKind.PURCHASE_ORDER, day)[0]
    since = dt.datetime.now(UTC).replace(microsecond=0)
    for line in [
        r for r in company.records(RecordKind.SPEND, day) if r.document_id == bill.document_id
    ]:
        company.delete(RecordKind.SPEND, line.natural_key, day)
    company.delete(RecordKind.PURCHASE_ORDER, order.natural_key, day)
    changed = window.model_copy(update={"changed_since": since})

    spend_deleted = [
        k for b in sandbox.source.fetch(RecordKind.SPEND, changed) for k in b.deleted_source_ids
    ]
    orders_deleted = [
        k
        for b in sandbox.source.fetch(RecordKind.PURCHASE_ORDER, changed)
        for k in b.deleted_source_ids
    ]

    assert spend_deleted == [bill.source_id] == [f"APBILL:{int(bill.document_id)}"]
    assert orders_deleted == [f"PODOCUMENT:{int(order.purchase_order_id)}"]
    assert all(
        r.status is RecordStatus.ACTIVE for r in read(sandbox.source, RecordKind.SPEND, window)
    )


def test_changed_days_reads_only_dates(sandbox: Sandbox) -> None:
    company = sandbox.company
    day = company.business_days()[-25]
    line = company.records(RecordKind.SPEND, day)[0]
    since = dt.datetime.now(UTC)
    company.amend(RecordKind.SPEND, line.natural_key, day, description="amended")
    answer = ET.fromstring(
        post(
            sandbox,
            (
                "<readByQuery><object>APBILL</object><fields>WHENCREATED,WHENMODIFIED</fields>"
                f"<query>WHENMODIFIED &gt;= '{since.strftime('%m/%d/%Y %H:%M:%S')}'</query>"
                "<pagesize>100</pagesize></readByQuery>"
            ),
        ).content
    )

    summary = sandbox.source.changed_days(RecordKind.SPEND, since)

    assert day in summary.days
    for row in answer.find("operation/result/data"):
        assert sorted(child.tag for child in row) == ["WHENCREATED", "WHENMODIFIED"]


# On hand: today from item warehouse details, past days from the snapshot object


def test_on_hand_today_without_the_snapshot_object_is_item_warehouse_details(
    sandbox: Sandbox, caplog
) -> None:
    source = sandbox.source.model_copy(update={"onhand_snapshot_object": None})
    company = sandbox.company
    today = dt.datetime.now(UTC).date()
    past = SyncWindow.for_day(company.business_days()[-3])

    records = read(source, RecordKind.INVENTORY, SyncWindow.for_day(today))
    with caplog.at_level(logging.WARNING, logger="erp_connector_dagster.erp.sage_intacct"):
        past_reads = [read(source, RecordKind.INVENTORY, past) for _ in range(2)]

    # Item warehouse details hold quantities only: no cost, value or currency; the unit is
    # the item's base unit. The emulator's "now" is the company's latest business day.
    latest = company.records(RecordKind.INVENTORY, company.business_days()[-1])
    expected = [
        snapshot.model_copy(
            update={"snapshot_date": today, "unit_cost": None, "value": None, "currency": None}
        )
        for snapshot in latest
    ]
    assert records
    assert sorted(map(comparable, records), key=str) == sorted(map(comparable, expected), key=str)
    assert past_reads == [[], []]
    notes = [r for r in caplog.records if "snapshot object" in r.getMessage()]
    assert len(notes) == 1
    assert source.changed_days(RecordKind.INVENTORY, dt.datetime.now(UTC)).days == {today}


def test_snapshot_object_reads_several_past_days_exactly(sandbox: Sandbox) -> None:
    company = sandbox.company
    first, last = company.business_days()[-7], company.business_days()[-5]
    window = SyncWindow(start=first, end=last + dt.timedelta(days=1))

    records = read(sandbox.source, RecordKind.INVENTORY, window)

    truth = company.records_between(RecordKind.INVENTORY, first, last + dt.timedelta(days=1))
    assert len({r.snapshot_date for r in records}) == 3
    assert sorted(map(comparable, records), key=str) == sorted(map(comparable, truth), key=str)
    since = dt.datetime.combine(last, dt.time(), UTC)
    days = sandbox.source.changed_days(RecordKind.INVENTORY, since).days
    assert min(days) == last - dt.timedelta(days=sandbox.source.lookback_days)
    assert max(days) == dt.datetime.now(UTC).date()


# Documented response shapes beyond the shared samples: a gateway that answers with XML written
# here in the shapes of developer.intacct.com and the Intacct SDK fixtures (own values).

CONTROL_OK = (
    "<control><status>success</status><senderid>s</senderid><controlid>c</controlid>"
    "<uniqueid>false</uniqueid><dtdversion>3.0</dtdversion></control>"
)
AUTH_OK = (
    "<authentication><status>success</status><userid>u</userid><companyid>co</companyid>"
    "<locationid></locationid><sessiontimestamp>2026-03-02T08:00:00-08:00</sessiontimestamp>"
    "</authentication>"
)


def answer(*results: str, authentication: str = AUTH_OK) -> str:
    body = "".join(results)
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><response>{CONTROL_OK}"
        f"<operation>{authentication}{body}</operation></response>"
    )


def result(function: str, controlid: str, data: str, status: str = "success") -> str:
    return (
        f"<result><status>{status}</status><function>{function}</function>"
        f"<controlid>{controlid}</controlid>{data}</result>"
    )


def empty(listtype: str) -> str:
    return f'<data listtype="{listtype}" count="0" totalcount="0" numremaining="0" resultId=""/>'


@dataclass
class Canned:
    """Answers each function from a table: readByQuery by object, readMore by resultId."""

    answers: dict[str, str | Callable[[str], str]]
    asked: list[str] = field(default_factory=list)

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        request = ET.fromstring(body)
        function = request.find("operation/content/function")
        call = function[0]
        controlid = function.get("controlid", "")
        if call.tag == "getAPISession":
            key = "getAPISession"
            data = "<data><api><sessionid>sess..</sessionid><endpoint></endpoint></api></data>"
            text = answer(result("getAPISession", controlid, data))
        else:
            key = (call.findtext("object") or call.findtext("resultId") or "").strip()
            canned = self.answers.get(key)
            if canned is None:
                canned = answer(result(call.tag, "{controlid}", empty(key.lower())))
            text = canned(controlid) if callable(canned) else canned.replace("{cid}", controlid)
            text = text.replace("{controlid}", controlid)
        self.asked.append(key)
        start_response("200 OK", [("Content-Type", "text/xml; charset=UTF-8")])
        return [text.encode()]


@contextmanager
def canned_source(answers: dict) -> Iterator[tuple[SageIntacctSource, Canned]]:
    app = Canned(answers)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (
            SageIntacctSource(
                connection_name="intacct-docs",
                base_url=f"http://127.0.0.1:{server.server_port}",
                sender_id="s",
                sender_password="sender-secret",
                company_id="co",
                user_id="u",
                user_password="user-secret",
                max_retries=0,
            ),
            app,
        )
    finally:
        server.shutdown()
        server.server_close()


BILL_PAGE_1 = answer(
    # A result for another function first: ours is found by its control id.
    result("getAPISession", "someone-else", "<data><api><sessionid>x</sessionid></api></data>"),
    result(
        "readByQuery",
        "{cid}",
        '<data listtype="apbill" count="1" totalcount="2" numremaining="1" resultId="bills-1">'
        "<apbill><RECORDNO>501</RECORDNO><RECORDID>INV-77</RECORDID><STATE>Posted</STATE>"
        "<WHENCREATED>03/02/2026</WHENCREATED><CURRENCY>CAD</CURRENCY><BASECURR>CAD</BASECURR>"
        "<WHENMODIFIED>03/03/2026 14:05:09</WHENMODIFIED><VENDORID>V-OAK</VENDORID></apbill>"
        "</data>",
    ),
)
BILL_PAGE_2 = answer(
    result(
        "readMore",
        "{cid}",
        '<data listtype="apbill" count="1" totalcount="2" numremaining="0" resultId="">'
        "<apbill><RECORDNO>502</RECORDNO><RECORDID/><STATE>Paid</STATE>"
        "<WHENCREATED>03/02/2026</WHENCREATED><CURRENCY></CURRENCY><BASECURR>USD</BASECURR>"
        "<WHENMODIFIED>03/04/2026 09:00:00</WHENMODIFIED><VENDORID>V-ELM</VENDORID></apbill>"
        "</data>",
    )
)
BILL_LINES = answer(
    result(
        "readByQuery",
        "{cid}",
        '<data listtype="apbillitem" count="3" totalcount="3" numremaining="0" resultId="">'
        "<apbillitem><RECORDNO>9001</RECORDNO><RECORDKEY>501</RECORDKEY><LINE_NO>2</LINE_NO>"
        "<ACCOUNTNO>6100</ACCOUNTNO><TRX_AMOUNT>40.10</TRX_AMOUNT><ITEMID/>"
        "<VENDORID>V-OAK</VENDORID><CURRENCY>CAD</CURRENCY>"
        "<ENTRYDESCRIPTION>Freight</ENTRYDESCRIPTION></apbillitem>"
        "<apbillitem><RECORDNO>9000</RECORDNO><RECORDKEY>501</RECORDKEY><LINE_NO>1</LINE_NO>"
        "<ACCOUNTNO>1500</ACCOUNTNO><TRX_AMOUNT>1234.5</TRX_AMOUNT><ITEMID>BOLT-8</ITEMID>"
        "<VENDORID>V-OAK</VENDORID><CURRENCY>CAD</CURRENCY><ENTRYDESCRIPTION>"
        "</ENTRYDESCRIPTION></apbillitem>"
        # No CURRENCY anywhere but the header's BASECURR; ENTRYDESCRIPTION absent.
        "<apbillitem><RECORDNO>9002</RECORDNO><RECORDKEY>502</RECORDKEY><LINE_NO>1</LINE_NO>"
        "<ACCOUNTNO>6200</ACCOUNTNO><TRX_AMOUNT>-3</TRX_AMOUNT><ITEMID></ITEMID>"
        "<VENDORID></VENDORID><CURRENCY/></apbillitem>"
        "</data>",
    )
)
ADJUSTMENTS = answer(
    result(
        "readByQuery",
        "{cid}",
        '<data listtype="apadjustment" count="1" totalcount="1" numremaining="0" resultId="">'
        "<apadjustment><RECORDNO>61</RECORDNO><RECORDID>CM-61</RECORDID><STATE>Posted</STATE>"
        "<WHENCREATED>03/02/2026</WHENCREATED><CURRENCY>CAD</CURRENCY><BASECURR>CAD</BASECURR>"
        "<WHENMODIFIED>03/02/2026 23:59:59</WHENMODIFIED><VENDORID>V-OAK</VENDORID>"
        "</apadjustment></data>",
    )
)
ADJUSTMENT_LINES = answer(
    result(
        "readByQuery",
        "{cid}",
        '<data listtype="apadjustmentitem" count="1" totalcount="1" numremaining="0"'
        ' resultId=""><apadjustmentitem><RECORDNO>610</RECORDNO><RECORDKEY>61</RECORDKEY>'
        "<LINE_NO>1</LINE_NO><ACCOUNTNO>1500</ACCOUNTNO><TRX_AMOUNT>-99.99</TRX_AMOUNT>"
        "<ITEMID>BOLT-8</ITEMID><VENDORID>V-OAK</VENDORID><CURRENCY>CAD</CURRENCY>"
        "<ENTRYDESCRIPTION>Returned bolts</ENTRYDESCRIPTION></apadjustmentitem></data>",
    )
)
ITEMS = answer(
    result(
        "readByQuery",
        "{cid}",
        '<data listtype="item" count="1" totalcount="1" numremaining="0" resultId="">'
        "<item><RECORDNO>1</RECORDNO><ITEMID>BOLT-8</ITEMID><NAME>Bolt M8</NAME>"
        "<STATUS>active</STATUS><PRODUCTLINEID></PRODUCTLINEID><BASEUOM>Each</BASEUOM>"
        "<ITEMGLGROUP><EXPENSEACCOUNT><ACCTNO>1500</ACCTNO></EXPENSEACCOUNT></ITEMGLGROUP>"
        "<WHENMODIFIED>01/05/2026 10:00:00</WHENMODIFIED></item></data>",
    )
)
ACCOUNTS = answer(
    result(
        "readByQuery",
        "{cid}",
        '<data listtype="glaccount" count="2" totalcount="2" numremaining="0" resultId="">'
        "<glaccount><RECORDNO>1</RECORDNO><ACCOUNTNO>1500</ACCOUNTNO>"
        "<CATEGORY>Fixed Assets</CATEGORY></glaccount>"
        "<glaccount><RECORDNO>2</RECORDNO><ACCOUNTNO>6100</ACCOUNTNO>"
        "<CATEGORY>Freight</CATEGORY></glaccount></data>",
    )
)


def test_documented_bill_pages_empty_objects_and_text_values_become_exact_records() -> None:
    answers = {
        "APBILL": BILL_PAGE_1,
        "bills-1": BILL_PAGE_2,
        "APBILLITEM": BILL_LINES,
        "APADJUSTMENT": ADJUSTMENTS,
        "APADJUSTMENTITEM": ADJUSTMENT_LINES,
        "ITEM": ITEMS,
        "GLACCOUNT": ACCOUNTS,
        # CCTRANSACTION: <data count="0"/>, the documented empty answer.
    }
    with canned_source(answers) as (source, gateway):
        batches = list(source.fetch(RecordKind.SPEND, SyncWindow.for_day(dt.date(2026, 3, 2))))

    records = [r for b in batches for r in b.records]
    rejected = [r for b in batches for r in b.rejected]
    common = {"connection": "intacct-docs", "transaction_date": dt.date(2026, 3, 2)}
    expected = [
        SpendRecord(
            **common,
            source_id="APBILL:501",
            updated_at=dt.datetime(2026, 3, 3, 14, 5, 9, tzinfo=UTC),
            document_id="INV-77",
            line_number=1,
            document_type=SpendDocumentType.INVOICE,
            vendor_id="V-OAK",
            material_id="BOLT-8",
            gl_account="1500",
            description=None,
            amount=Decimal("1234.5"),
            currency="CAD",
            unit="Each",
            is_capex=True,
        ),
        SpendRecord(
            **common,
            source_id="APBILL:501",
            updated_at=dt.datetime(2026, 3, 3, 14, 5, 9, tzinfo=UTC),
            document_id="INV-77",
            line_number=2,
            document_type=SpendDocumentType.INVOICE,
            vendor_id="V-OAK",
            gl_account="6100",
            description="Freight",
            amount=Decimal("40.10"),
            currency="CAD",
        ),
        SpendRecord(
            **common,
            source_id="APBILL:502",
            updated_at=dt.datetime(2026, 3, 4, 9, 0, 0, tzinfo=UTC),
            document_id="502",
            line_number=1,
            document_type=SpendDocumentType.INVOICE,
            vendor_id="V-ELM",
            gl_account="6200",
            amount=Decimal("-3"),
            currency="USD",
        ),
        SpendRecord(
            **common,
            source_id="APADJUSTMENT:61",
            updated_at=dt.datetime(2026, 3, 2, 23, 59, 59, tzinfo=UTC),
            document_id="CM-61",
            line_number=1,
            document_type=SpendDocumentType.CREDIT_NOTE,
            vendor_id="V-OAK",
            material_id="BOLT-8",
            gl_account="1500",
            description="Returned bolts",
            amount=Decimal("-99.99"),
            currency="CAD",
            unit="Each",
            is_capex=True,
        ),
    ]
    assert records == expected and rejected == []
    assert gateway.asked.count("bills-1") == 1 and "CCTRANSACTION" in gateway.asked


def test_a_success_without_data_or_a_remainder_without_result_id_is_an_error() -> None:
    no_data = answer(result("readByQuery", "{cid}", ""))
    orphan = answer(
        result(
            "readByQuery",
            "{cid}",
            '<data listtype="vendor" count="0" totalcount="5" numremaining="5" resultId=""/>',
        )
    )
    with canned_source({"VENDOR": no_data}) as (source, _):
        with pytest.raises(ErpRequestError, match="without <data>"):
            list(source.fetch(RecordKind.VENDOR, SyncWindow()))
    with canned_source({"VENDOR": orphan}) as (source, _):
        with pytest.raises(ErpRequestError, match="no resultId"):
            list(source.fetch(RecordKind.VENDOR, SyncWindow()))


ABORTED = answer(
    result(
        "readByQuery",
        "{cid}",
        "<errormessage><error><errorno>Query Failed</errorno><description></description>"
        "<description2>Object definition PODOCUMENTX not found</description2>"
        "<correction></correction></error><error><errorno>XL03000009</errorno>"
        "<description></description><description2>The entire transaction in this operation "
        "has been rolled back due to an error.</description2><correction></correction>"
        "</error></errormessage>",
        status="aborted",
    )
)
SCHEMA_ERROR = (
    "<?xml version='1.0' encoding='UTF-8'?><response><control><status>failure</status>"
    "<senderid>s</senderid><controlid>c</controlid><uniqueid>false</uniqueid>"
    "<dtdversion>3.0</dtdversion></control><errormessage><error><errorno>XL03000003"
    "</errorno><description></description><description2>XML Parse schema error: tag "
    "mismatch</description2><correction></correction></error></errormessage></response>"
)
GATEWAY_ERROR = (
    "<?xml version='1.0' encoding='UTF-8'?><response><control><status>failure</status>"
    "</control><errormessage><error><errorno>GW-0011</errorno><description>Invalid Request"
    " [Request ID: own-1]</description></error></errormessage></response>"
)
SENDER_REFUSED = (
    "<?xml version='1.0' encoding='UTF-8'?><response><control><status>failure</status>"
    "<senderid>s</senderid><controlid>c</controlid><uniqueid>false</uniqueid>"
    "<dtdversion>3.0</dtdversion></control><errormessage><error><errorno>XL03000006"
    "</errorno><description></description><description2>Incorrect Intacct XML Partner ID"
    " or password.</description2><correction></correction></error></errormessage></response>"
)


@pytest.mark.parametrize(
    "body, error, words",
    [
        (ABORTED, ErpRequestError, ["Query Failed", "PODOCUMENTX", "XL03000009"]),
        (SCHEMA_ERROR, ErpRequestError, ["request refused", "XL03000003"]),
        (GATEWAY_ERROR, ErpRequestError, ["request refused", "GW-0011", "Invalid Request"]),
        (SENDER_REFUSED, ErpAuthError, ["sender refused", "XL03000006"]),
    ],
)
def test_errors_inside_http_200_name_every_error_and_only_credentials_are_auth(
    body: str, error: type, words: list[str]
) -> None:
    with canned_source({"VENDOR": body}) as (source, _):
        with pytest.raises(error) as raised:
            list(source.fetch(RecordKind.VENDOR, SyncWindow()))

    assert type(raised.value) is error
    assert all(word in str(raised.value) for word in words)
    assert "sender-secret" not in str(raised.value) and "user-secret" not in str(raised.value)


def test_gateway_rate_limit_with_only_a_description_is_throttling() -> None:
    limited = requests.Response()
    limited.status_code = 200
    limited._content = (
        b"<response><control><status>failure</status></control><errormessage><error>"
        b"<errorno>GW-0099</errorno><description>Rate limit reached</description></error>"
        b"</errormessage></response>"
    )
    source = SageIntacctSource(
        connection_name="x",
        base_url="http://127.0.0.1:9",
        sender_id="s",
        sender_password="p",
        company_id="c",
        user_id="u",
        user_password="p",
        throttle_wait_seconds=4.0,
    )

    assert source._throttle_signal(limited) == 4.0


def line(number: str | None, amount: str, **extra: str) -> dict[str, str]:
    row = {"RECORDNO": f"7{number}", "RECORDKEY": "70", "TRX_AMOUNT": amount, **extra}
    if number is not None:
        row["LINE_NO"] = number
    return row


def test_lines_without_a_usable_number_currency_or_any_lines_are_rejected_with_reasons() -> None:
    header = {
        "RECORDNO": "70",
        "RECORDID": "INV-70",
        "STATE": "Posted",
        "WHENCREATED": "04/30/2026",
        "CURRENCY": "",
        "VENDORID": "V-PINE",
        "WHENMODIFIED": "04/30/2026 12:00:00",
    }
    lines = [
        line("1", "10.00", CURRENCY="GBP"),
        line(None, "11.00", CURRENCY="GBP"),
        line("1", "12.00", CURRENCY="GBP"),
        line("2.5", "13.00", CURRENCY="GBP"),
        line("3", "14.00", CURRENCY=""),
    ]

    records, rejected = spend_from_rows("APBILL", header, lines, "intacct")
    _, no_lines = spend_from_rows("APBILL", header, [], "intacct")

    assert [(r.line_number, r.amount, r.currency) for r in records] == [
        (1, Decimal("10.00"), "GBP")
    ]
    assert sorted(r.reason for r in rejected) == [
        "line 1: LINE_NO 1 appears twice on the document",
        "line 2.5: LINE_NO is not a whole number: '2.5'",
        "line 3: CURRENCY is missing (and no BASECURR)",
        "line None: LINE_NO is missing",
    ]
    assert all(r.partition_date == dt.date(2026, 4, 30) for r in rejected)
    assert [(r.source_id, r.reason) for r in no_lines] == [
        ("APBILL:70", "no APBILLITEM lines were read for the document")
    ]


def test_vendor_and_item_rows_with_empty_keys_are_rejected_not_lost() -> None:
    data = ET.fromstring(
        '<data listtype="vendor" count="2" totalcount="2" numremaining="0" resultId="">'
        "<vendor><RECORDNO>4</RECORDNO><VENDORID>V-ASH</VENDORID><NAME></NAME><TAXID/>"
        "<DISPLAYCONTACT><MAILADDRESS><COUNTRYCODE>CA</COUNTRYCODE></MAILADDRESS>"
        "</DISPLAYCONTACT><WHENMODIFIED>02/01/2026 07:30:00</WHENMODIFIED></vendor>"
        "<vendor><RECORDNO>5</RECORDNO><VENDORID></VENDORID><NAME>Nobody</NAME></vendor></data>"
    )
    rows = [row_fields(element) for element in data]

    vendors, refused = master_from_rows(RecordKind.VENDOR, rows, "intacct")
    items, bad_items = master_from_rows(
        RecordKind.MATERIAL, [{"RECORDNO": "9", "NAME": "No id"}], "intacct"
    )

    assert [v.model_dump(exclude={"connection"}) for v in vendors] == [
        {
            "source_id": "VENDOR:V-ASH",
            "updated_at": dt.datetime(2026, 2, 1, 7, 30, tzinfo=UTC),
            "status": RecordStatus.ACTIVE,
            "vendor_id": "V-ASH",
            "name": "V-ASH",
            "country": "CA",
            "industry_code": None,
            "tax_id": None,
            "currency": None,
        }
    ]
    assert [(r.source_id, r.reason) for r in refused] == [("VENDOR:5", "VENDORID is missing")]
    assert items == [] and [(r.source_id, r.reason) for r in bad_items] == [
        ("ITEM:9", "ITEMID is missing")
    ]


def test_purchase_order_lines_with_a_repeated_number_reject_the_order() -> None:
    header = {
        "RECORDNO": "31",
        "DOCNO": "PO-31",
        "STATE": "Pending",
        "WHENCREATED": "05/04/2026",
        "CUSTVENDID": "V-OAK",
        "CURRENCY": "CAD",
        "TRX_TOTAL": "30",
        "WHENMODIFIED": "05/04/2026 08:00:00",
    }
    entry = {"QUANTITY": "1", "TRX_PRICE": "15", "TRX_VALUE": "15", "DOCHDRNO": "31"}

    records, rejected = purchase_order_from_rows(
        header, [{**entry, "LINE_NO": "0"}, {**entry, "LINE_NO": "0"}], "intacct"
    )

    assert records == []
    assert [r.reason for r in rejected] == ["LINE_NO 0 appears twice on the order"]


def test_dates_with_a_time_part_still_read_as_the_day() -> None:
    assert parse_date("07/24/2017 15:19:46") == dt.date(2017, 7, 24)
    with pytest.raises(ValueError, match="not an MM/DD/YYYY date"):
        parse_date("2017-07-24")
