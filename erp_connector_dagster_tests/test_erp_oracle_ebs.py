"""Oracle EBS specifics the acceptance suite does not see: the application-user login check,
keyset paging under concurrent change, a dropped database session, EBS's own storage of credit
memos, cancellations and PO totals, the operating-unit filter and the column allow-lists."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import psycopg2
import pytest
from pydantic import ValidationError

from erp_connector_dagster.erp import build_source
from erp_connector_dagster.erp.base import SyncWindow
from erp_connector_dagster.erp.http import ErpAuthError
from erp_connector_dagster.erp.oracle_ebs import OracleEbsSource
from erp_connector_dagster.records import RecordKind, RecordStatus, SpendDocumentType
from erp_connector_dagster.sandbox import oracle_ebs as sandbox
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.server import SandboxConnection, SandboxServer


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[tuple[SandboxServer, SandboxConnection, OracleEbsSource]]:
    connection = SandboxConnection(
        name="ebs-test", erp_type="oracle_ebs", company=SandboxCompany(seed=4242)
    )
    with SandboxServer([connection], database_url=database_url) as server:
        yield server, connection, build_source(server.connection_configs()[0])


@pytest.fixture
def source(served) -> OracleEbsSource:
    return served[2]


@pytest.fixture
def company(served) -> SandboxCompany:
    return served[1].company


def apps(served, statement: str, params: tuple = ()) -> list[tuple]:
    """Query the connection's APPS tables directly, as a DBA would."""
    connection = psycopg2.connect(served[0].base_url(served[1].name))
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall()
    finally:
        connection.close()


def read(source, kind: RecordKind, window: SyncWindow) -> list:
    return [record for batch in source.fetch(kind, window) for record in batch.records]


def test_the_application_user_password_is_checked_by_fnd_web_sec(served) -> None:
    good = apps(
        served,
        "SELECT fnd_web_sec.validate_login(%s, %s) FROM dual",
        ("gl_carbon_sync", sandbox.SANDBOX_CREDENTIALS["apps_password"]),
    )
    wrong = apps(
        served,
        "SELECT fnd_web_sec.validate_login(%s, %s) FROM dual",
        ("GL_CARBON_SYNC", "Welcome1"),
    )

    assert (good, wrong) == ([("Y",)], [("N",)])


def test_a_wrong_password_is_an_auth_error_without_the_password(source) -> None:
    refused = source.model_copy(update={"apps_password": "hunter2-not-it"})

    health = refused.check_health()
    with pytest.raises(ErpAuthError) as error:
        read(refused, RecordKind.VENDOR, SyncWindow())

    assert health.reachable and not health.authenticated
    assert "hunter2" not in str(error.value) and "hunter2" not in (health.error or "")


def test_an_unreachable_database_is_reported_unreachable(source) -> None:
    nowhere = source.model_copy(
        update={
            "base_url": "postgresql://postgres@127.0.0.1:1/none",
            "max_retries": 0,
            "timeout_seconds": 2,
        }
    )

    health = nowhere.check_health()

    assert not health.reachable and health.error


def test_keyset_paging_skips_nothing_when_rows_vanish_mid_sync(source, company) -> None:
    day = company.business_days()[-10]
    truth = {r.natural_key for r in company.records(RecordKind.SPEND, day)}
    paged = source.model_copy(update={"page_size": 5})
    batches = paged.fetch(RecordKind.SPEND, SyncWindow.for_day(day))

    first = next(batches)
    # Deleting rows already read shifts every later row: offset paging would now skip some.
    for record in first.records[:3]:
        company.delete(RecordKind.SPEND, record.natural_key, day)
    rest = [r for batch in batches for r in batch.records]

    keys = [r.natural_key for r in first.records + rest]
    broken = {line["document_id"] for line in company.bad_spend_lines(day)}
    assert len(keys) == len(set(keys))
    assert {k for k in keys if k.split("/")[0] not in broken} == truth


def test_a_dropped_session_is_reopened_and_the_page_read_again(source, company, served) -> None:
    day = company.business_days()[-11]
    paged = source.model_copy(update={"page_size": 4})
    clean = read(paged, RecordKind.PURCHASE_ORDER_LINE, SyncWindow.for_day(day))
    batches = paged.fetch(RecordKind.PURCHASE_ORDER_LINE, SyncWindow.for_day(day))

    first = next(batches)
    (pid,) = apps(served, "SELECT pg_backend_pid()")[0]  # not ours: find the source's session
    backend = paged._connection.get_backend_pid()
    assert backend != pid
    apps(served, "SELECT pg_terminate_backend(%s)", (backend,))
    rest = [r for batch in batches for r in batch.records]

    assert first.records + rest == clean
    assert paged._connection.get_backend_pid() != backend


def test_credit_memos_are_stored_negative_and_read_negative(source, company, served) -> None:
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

    stored = apps(
        served,
        "SELECT i.invoice_type_lookup_code, l.amount FROM ap_invoices_all i JOIN "
        "ap_invoice_lines_all l ON l.invoice_id = i.invoice_id WHERE i.invoice_num = %s "
        "AND l.line_number = %s",
        (credit.document_id, credit.line_number),
    )
    records = {r.natural_key: r for r in read(source, RecordKind.SPEND, SyncWindow.for_day(day))}

    assert stored == [("CREDIT", credit.amount)] and credit.amount < 0
    assert records[credit.natural_key].amount == credit.amount


def test_a_cancelled_line_is_voided_and_a_null_amount_rejected(source, company) -> None:
    day = next(
        d
        for d in reversed(company.business_days())
        if any(line["amount"] == "" or "O" in line["amount"] for line in company.bad_spend_lines(d))
    )
    line = company.records(RecordKind.SPEND, day)[0]
    company.amend(RecordKind.SPEND, line.natural_key, day, status=RecordStatus.VOIDED)

    batches = list(source.fetch(RecordKind.SPEND, SyncWindow.for_day(day)))

    records = {r.natural_key: r for b in batches for r in b.records}
    rejected = [r for b in batches for r in b.rejected]
    assert records[line.natural_key].status is RecordStatus.VOIDED
    bad = company.bad_spend_lines(day)[0]
    assert [r.reason for r in rejected] == ["amount is missing"]
    assert rejected[0].payload["invoice_num"] == bad["document_id"]
    assert rejected[0].partition_date == day


def test_order_totals_are_the_sum_of_their_lines(source, company) -> None:
    day = company.business_days()[-6]
    truth = {
        o.purchase_order_id: o.total_amount for o in company.records(RecordKind.PURCHASE_ORDER, day)
    }

    orders = read(source, RecordKind.PURCHASE_ORDER, SyncWindow.for_day(day))

    assert {o.purchase_order_id: o.total_amount for o in orders} == truth
    assert all(str(o.total_amount) == str(truth[o.purchase_order_id]) for o in orders)


def test_another_operating_unit_sees_nothing(source, company) -> None:
    day = company.business_days()[-4]
    other_unit = source.model_copy(update={"org_id": 999})

    assert read(other_unit, RecordKind.SPEND, SyncWindow.for_day(day)) == []
    assert read(other_unit, RecordKind.PURCHASE_ORDER, SyncWindow.for_day(day)) == []
    assert all(v.country is None for v in read(other_unit, RecordKind.VENDOR, SyncWindow()))


@pytest.mark.parametrize(
    "field, value",
    [("natural_account_column", "segment3 FROM dual; --"), ("item_naics_column", "description")],
)
def test_column_options_are_allow_listed(source, field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        OracleEbsSource(**{**source.model_dump(), field: value})


def test_changes_are_found_to_the_second_and_inclusively(source, company) -> None:
    day = company.business_days()[-20]
    line = company.records(RecordKind.SPEND, day)[2]

    amended = company.amend(RecordKind.SPEND, line.natural_key, day, description="re-keyed")
    changed = read(source, RecordKind.SPEND, SyncWindow(changed_since=amended.updated_at))
    summary = source.changed_days(RecordKind.SPEND, amended.updated_at)

    assert line.natural_key in {r.natural_key for r in changed}
    assert day in summary.days
    assert summary.high_watermark == amended.updated_at.replace(microsecond=0)
    assert next(r for r in changed if r.natural_key == line.natural_key).description == "re-keyed"


def test_items_come_from_the_master_organization(source, company) -> None:
    materials = read(source, RecordKind.MATERIAL, SyncWindow())
    elsewhere = source.model_copy(update={"master_organization_id": 1})

    assert len(materials) == company.material_count
    assert materials[0].commodity_code and materials[0].base_unit
    assert read(elsewhere, RecordKind.MATERIAL, SyncWindow()) == []


def test_day_snapshots_and_current_on_hand_agree_on_the_last_day(served, company) -> None:
    last = dt.datetime.combine(company.business_days()[-1], dt.time())

    daily = apps(
        served,
        "SELECT SUM(primary_quantity) FROM xxgl_onhand_daily_snapshots WHERE snapshot_date = %s",
        (last,),
    )
    current = apps(
        served, "SELECT SUM(primary_transaction_quantity) FROM mtl_onhand_quantities_detail"
    )

    assert daily == current and daily[0][0] > Decimal(0)
