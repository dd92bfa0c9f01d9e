"""The outage drill: a backfill dies half-way, the ERP changes meanwhile, on-call recovers.

Everything runs for real: the sandbox ERP over HTTP (made to fail hard after a number of
requests, as an ERP going down mid-backfill does), the `erp-connector` commands in process
through click, Dagster materializations and PostgreSQL. Afterwards every day of the outage is
synced, every edit and deletion made in the ERP meanwhile is in the database (with the old
version kept), nothing is duplicated, and `sync-jobs` shows failed jobs followed by good ones.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import psycopg2
import pytest
from click.testing import CliRunner

from erp_connector_dagster import settings
from erp_connector_dagster.cli import main
from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.faults import FaultKind
from erp_connector_dagster.sandbox.server import (
    SandboxConnection,
    SandboxServer,
    available_erp_types,
)

ERP_TYPE = "sap_s4hana" if "sap_s4hana" in available_erp_types() else available_erp_types()[0]
COMPANY_END = dt.date(2026, 6, 30)
SYNCED_BEFORE = (dt.date(2026, 5, 4), dt.date(2026, 5, 31))
OUTAGE_START = dt.date(2026, 6, 1)
ASSETS = "spend_records,purchase_orders"


@dataclass
class Drill:
    connection: SandboxConnection
    database_url: str

    @property
    def company(self) -> SandboxCompany:
        return self.connection.company

    @property
    def name(self) -> str:
        return self.connection.name


HTTP_ERP_TYPES = [erp_type for erp_type in available_erp_types() if erp_type != "oracle_ebs"]


@pytest.fixture
def drill(request, database_url: str, tmp_path, monkeypatch) -> Iterator[Drill]:
    connection = SandboxConnection(
        name=f"drill-{uuid.uuid4().hex[:6]}",
        erp_type=getattr(request, "param", ERP_TYPE),
        company=SandboxCompany(seed=616, end=COMPANY_END),
    )
    with SandboxServer([connection], database_url=database_url) as server:
        config = server.connection_configs()[0]
        # No retries, so a request the ERP refuses fails its partition at once.
        config = config.model_copy(update={"options": {**config.options, "max_retries": 0}})
        path = settings.write_connections([config], tmp_path / "connections.yaml")
        monkeypatch.setenv(settings.CONNECTIONS_FILE_ENV, str(path))
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        yield Drill(connection, database_url)


def run_cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def backfill(since: dt.date, until: dt.date, *extra: str):
    return run_cli(
        "backfill",
        "--since",
        since.isoformat(),
        "--until",
        until.isoformat(),
        "--assets",
        ASSETS,
        "--no-progress",
        *extra,
    )


def live_rows(database_url: str, table: str, column: str, connection: str, day: dt.date) -> dict:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            f"SELECT record_key, to_jsonb(t) FROM erp_connector_service.{table} t"
            f" WHERE connection = %s AND {column} = %s AND NOT source_deleted",
            (connection, day),
        )
        rows = dict(cursor.fetchall())
    conn.close()
    return rows


def query(database_url: str, statement: str, params: tuple) -> list[tuple]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    conn.close()
    return rows


def test_backfill_after_a_crashed_backfill_fills_every_gap_and_reflects_every_change(
    drill: Drill,
) -> None:
    company, url = drill.company, drill.database_url
    outage_days = company.business_days(OUTAGE_START, COMPANY_END)

    # Normal life: May is synced.
    assert backfill(*SYNCED_BEFORE).exit_code == 0
    requests_per_day = drill.connection.faults.requests_seen / len(
        company.business_days(*SYNCED_BEFORE)
    )

    # June's backfill dies half-way: the ERP goes down after about a week of requests.
    drill.connection.faults.server_error(status=503, count=10**6, after=int(requests_per_day * 7))
    crashed = backfill(OUTAGE_START, COMPANY_END, "--days-per-run", "10")

    assert crashed.exit_code == 1, crashed.output
    assert "FAILED" in crashed.output
    synced_days = [
        d for d in outage_days if live_rows(url, "spend_records", "transaction_date", drill.name, d)
    ]
    assert synced_days and len(synced_days) < len(outage_days)
    lost_days = [d for d in outage_days if d not in synced_days]

    # Meanwhile the ERP changes: edits and deletions on days that had been synced, and on
    # days that never were.
    early = synced_days[0]
    edited = company.records(RecordKind.SPEND, early)[0]
    company.amend(RecordKind.SPEND, edited.natural_key, early, amount=edited.amount + 100)
    removed = company.records(RecordKind.SPEND, synced_days[-1])[-1]
    company.delete(RecordKind.SPEND, removed.natural_key, synced_days[-1])
    cancelled = company.records(RecordKind.PURCHASE_ORDER, early)[0]
    company.delete(RecordKind.PURCHASE_ORDER, cancelled.natural_key, early)
    late = lost_days[0]
    late_edit = company.records(RecordKind.SPEND, late)[0]
    company.amend(RecordKind.SPEND, late_edit.natural_key, late, amount=late_edit.amount + 7)

    # The ERP is back; on-call runs the backfill from the start of the outage.
    drill.connection.faults.clear()
    recovered = backfill(OUTAGE_START, COMPANY_END)

    assert recovered.exit_code == 0, recovered.output
    assert "0 day partition(s) still need attention" in recovered.output
    before, after = recovered.output.split("after:")
    assert "failed" in before or "missing" in before
    assert "failed" not in after and "missing" not in after

    # Every day matches the ERP exactly: nothing missing, nothing extra, nothing doubled.
    for day in outage_days:
        for kind, table, column in (
            (RecordKind.SPEND, "spend_records", "transaction_date"),
            (RecordKind.PURCHASE_ORDER, "purchase_orders", "order_date"),
        ):
            truth = {record.natural_key for record in company.records(kind, day)}
            if kind is RecordKind.SPEND:
                # A well-formed line in an unknown currency passes the sync (the methodology
                # quarantines it later), so it is stored like any other.
                truth |= {
                    f"{line['vendor_id']}/{line['document_id']}/{line['line_number']}"
                    for line in company.bad_spend_lines(day)
                    if line["currency"] == "ZZZ"
                }
            assert set(live_rows(url, table, column, drill.name, day)) == truth, (kind, day)

    spend = live_rows(url, "spend_records", "transaction_date", drill.name, early)
    assert Decimal(str(spend[edited.natural_key]["amount"])) == edited.amount + 100
    [(old_version,)] = query(
        url,
        "SELECT record FROM erp_connector_service.record_versions"
        " WHERE connection = %s AND kind = 'spend' AND record_key = %s",
        (drill.name, edited.natural_key),
    )
    assert Decimal(str(old_version["amount"])) == edited.amount
    late_row = live_rows(url, "spend_records", "transaction_date", drill.name, late)[
        late_edit.natural_key
    ]
    assert Decimal(str(late_row["amount"])) == late_edit.amount + 7
    for table, column, day, key in (
        ("spend_records", "transaction_date", synced_days[-1], removed.natural_key),
        ("purchase_orders", "order_date", early, cancelled.natural_key),
    ):
        assert query(
            url,
            f"SELECT source_deleted FROM erp_connector_service.{table}"
            f" WHERE connection = %s AND {column} = %s AND record_key = %s",
            (drill.name, day, key),
        ) == [(True,)]

    # sync-jobs tells the story: for a day lost in the crash, a failed job, then a good one.
    story = run_cli(
        "sync-jobs",
        "--since",
        dt.date.today().isoformat(),
        "--connection",
        drill.name,
        "--limit",
        "1000",
    )
    assert story.exit_code == 0
    lines = [line for line in story.output.splitlines() if "spend" in line]
    failed_at = [i for i, line in enumerate(lines) if " failed " in f" {line} "]
    assert failed_at, story.output
    assert any(" succeeded " in f" {line} " for line in lines[failed_at[0] + 1 :])
    failed_only = run_cli(
        "sync-jobs",
        "--status",
        "failed",
        "--since",
        dt.date.today().isoformat(),
        "--connection",
        drill.name,
    )
    assert "succeeded" not in failed_only.output.split("\n\n")[0]
    assert "503" in failed_only.output or "server error" in failed_only.output


def test_sync_jobs_counts_are_what_the_writer_recorded(drill: Drill) -> None:
    day = drill.company.business_days(*SYNCED_BEFORE)[0]

    assert backfill(day, day).exit_code == 0
    listing = run_cli("sync-jobs", "--connection", drill.name)

    [(counts,)] = query(
        drill.database_url,
        "SELECT counts FROM erp_connector_service.sync_jobs"
        " WHERE connection = %s AND 'spend' = ANY(kinds)",
        (drill.name,),
    )
    received = counts["received"] if isinstance(counts, dict) else json.loads(counts)["received"]
    assert received == len(drill.company.records(RecordKind.SPEND, day))
    assert f"read={received}" in listing.output


def _running_jobs(database_url: str, connection: str) -> list[tuple]:
    return query(
        database_url,
        "SELECT partition_start FROM erp_connector_service.sync_jobs"
        " WHERE connection = %s AND status = 'running'",
        (connection,),
    )


def _wait_for_a_stalled_job(drill: Drill, process: subprocess.Popen) -> None:
    """Return once one sync job has stayed running across two polls while the ERP stalls."""
    deadline = time.monotonic() + 90
    previous: list[tuple] = []
    while True:
        assert process.poll() is None, "backfill finished before it could be killed"
        assert time.monotonic() < deadline, "no sync job stalled"
        stalling = FaultKind.SLOW in drill.connection.faults.faults_fired
        running = _running_jobs(drill.database_url, drill.name) if stalling else []
        if running and running == previous:
            return
        previous = running
        time.sleep(0.5)


# Every dialect read over HTTP: the process is killed while its ERP stalls on a request.
# (Oracle EBS is read over SQL; its own tests kill the database session mid-read instead.)
@pytest.mark.parametrize("drill", HTTP_ERP_TYPES, indirect=True)
def test_a_killed_backfill_leaves_an_interrupted_day_that_the_next_backfill_fills(
    drill: Drill, tmp_path
) -> None:
    since, until = dt.date(2026, 4, 6), dt.date(2026, 4, 17)
    # From a few requests in, every request stalls, so whichever day is syncing when the process
    # is killed cannot have finished: the kill lands mid-partition, never between two days.
    drill.connection.faults.slow(10.0, count=1000, after=6)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erp_connector_dagster.cli",
            "backfill",
            "--since",
            since.isoformat(),
            "--until",
            until.isoformat(),
            "--assets",
            "spend_records",
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_a_stalled_job(drill, process)
    finally:
        process.kill()
        process.wait(timeout=10)
    [(interrupted_day,)] = _running_jobs(drill.database_url, drill.name)
    drill.connection.faults.clear()

    recovered = run_cli(
        "backfill",
        "--since",
        since.isoformat(),
        "--until",
        until.isoformat(),
        "--assets",
        "spend_records",
        "--only-pending",
        "--no-progress",
    )

    assert recovered.exit_code == 0, recovered.output
    before = recovered.output.split("after:")[0]
    assert f"1 running ({interrupted_day.isoformat()})" in before
    assert "missing" in before
    for day in drill.company.business_days(since, until):
        stored = live_rows(drill.database_url, "spend_records", "transaction_date", drill.name, day)
        assert {r.natural_key for r in drill.company.records(RecordKind.SPEND, day)} <= set(stored)
