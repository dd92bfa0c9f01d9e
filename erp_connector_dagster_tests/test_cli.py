"""The `erp-connector` on-call commands, run through click against the sandbox ERP over HTTP,
a real PostgreSQL and real Dagster instances (a temporary DAGSTER_HOME where it matters)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2
import pytest
import requests
from click.testing import CliRunner
from dagster import DagsterInstance

from erp_connector_dagster import settings
from erp_connector_dagster.cli import main
from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.server import (
    SandboxConnection,
    SandboxServer,
    available_erp_types,
)
from erp_connector_dagster.storage.sync_jobs import advance_cursor

ERP_TYPE = "sap_s4hana" if "sap_s4hana" in available_erp_types() else available_erp_types()[0]
COMPANY_END = dt.date(2026, 4, 30)


@dataclass
class Erp:
    connection: SandboxConnection
    database_url: str

    @property
    def name(self) -> str:
        return self.connection.name

    @property
    def company(self) -> SandboxCompany:
        return self.connection.company


@pytest.fixture
def erp(database_url: str, tmp_path, monkeypatch) -> Iterator[Erp]:
    connection = SandboxConnection(
        name=f"cli-{uuid.uuid4().hex[:6]}",
        erp_type=ERP_TYPE,
        company=SandboxCompany(seed=717, end=COMPANY_END),
    )
    with SandboxServer([connection], database_url=database_url) as server:
        config = server.connection_configs()[0]
        config = config.model_copy(update={"options": {**config.options, "max_retries": 0}})
        path = settings.write_connections([config], tmp_path / "connections.yaml")
        monkeypatch.setenv(settings.CONNECTIONS_FILE_ENV, str(path))
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        yield Erp(connection, database_url)


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def sync(since: str, until: str, assets: str = "spend_records"):
    return cli("backfill", "--since", since, "--until", until, "--assets", assets, "--no-progress")


def test_backfill_of_60_days_launches_two_runs(erp: Erp, tmp_path, monkeypatch) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    result = sync("2026-02-01", "2026-04-01")

    assert result.exit_code == 0, result.output
    assert "2 run(s) of at most 31 days" in result.output
    instance = DagsterInstance.from_config(str(home))
    runs = instance.get_runs()
    assert len(runs) == 2
    ranges = sorted(
        (
            run.tags["dagster/asset_partition_range_start"],
            run.tags["dagster/asset_partition_range_end"],
        )
        for run in runs
    )
    assert ranges == [("2026-02-01", "2026-03-03"), ("2026-03-04", "2026-04-01")]
    assert "after:\n  " + erp.name + ": 60 synced" in result.output


def test_backfill_goes_to_the_daemon_when_one_is_running(erp: Erp, tmp_path, monkeypatch) -> None:
    from dagster._daemon.types import DaemonHeartbeat

    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.from_config(str(home))
    # What a running `dagster-daemon` writes every few seconds.
    instance.add_daemon_heartbeat(
        DaemonHeartbeat(timestamp=time.time(), daemon_type="BACKFILL", daemon_id="on-call-test")
    )

    result = cli(
        "backfill",
        "--since",
        "2026-01-01",
        "--until",
        "2026-03-31",
        "--connection",
        erp.name,
        "--no-progress",
        "--no-wait",
    )

    assert result.exit_code == 0, result.output
    assert "launched Dagster backfill" in result.output
    [backfill] = instance.get_backfills()
    assert backfill.tags["erp_connector/connections"] == erp.name
    assert backfill.tags["erp_connector/mode"] == "full"
    target = backfill.asset_backfill_data.target_subset
    assert {key.path[-1] for key in target.asset_keys} >= {"spend_records", "scope3_emissions"}
    assert (
        len(target.get_partitions_subset(next(iter(target.asset_keys))).get_partition_keys()) == 90
    )
    assert instance.get_runs() == []


def test_reprocess_reruns_the_partitions_of_failed_jobs(erp: Erp) -> None:
    erp.connection.faults.server_error(count=10**6)
    failed = sync("2026-03-02", "2026-03-04", "spend_records,purchase_orders")
    assert failed.exit_code == 1
    listing = cli("sync-jobs", "--status", "failed", "--connection", erp.name)
    assert listing.exit_code == 0
    assert "2026-03-02" in listing.output and "failed" in listing.output

    erp.connection.faults.clear()
    repaired = cli(
        "reprocess",
        "--status",
        "failed",
        "--since",
        dt.date.today().isoformat(),
        "--connection",
        erp.name,
        "--no-progress",
    )

    assert repaired.exit_code == 0, repaired.output
    assert "succeeded" in repaired.output
    with psycopg2.connect(erp.database_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (partition_start, kind) partition_start, kind, status"
            " FROM erp_connector_service.sync_jobs, unnest(kinds) kind WHERE connection = %s"
            " ORDER BY partition_start, kind, created_at DESC",
            (erp.name,),
        )
        latest = cursor.fetchall()
    conn.close()
    assert latest and all(status == "succeeded" for _, _, status in latest)
    assert {day for day, _, _ in latest} >= {dt.date(2026, 3, 2)}

    again = cli(
        "reprocess",
        "--since",
        dt.date.today().isoformat(),
        "--connection",
        erp.name,
        "--no-progress",
    )
    assert "nothing to re-run" in again.output


def test_status_shows_last_success_cursor_and_pending_days(erp: Erp) -> None:
    assert sync("2026-04-01", "2026-04-30", "spend_records").exit_code == 0
    cursor_value = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=5)
    with psycopg2.connect(erp.database_url) as conn, conn.cursor() as cursor:
        for kind in (RecordKind.SPEND, RecordKind.PURCHASE_ORDER):
            advance_cursor(cursor, erp.name, kind.value, cursor_value)
    conn.close()

    result = cli("status", "--connection", erp.name)

    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if line.startswith(erp.name)]
    assert cursor_value.strftime("%Y-%m-%d %H:%M") in row
    assert "5.0 h" in row
    # The last week of partitions was never synced (the company ends in April).
    assert " 7 (" in row


def test_verify_passes_then_names_a_tampered_record(erp: Erp) -> None:
    assert sync("2026-04-06", "2026-04-07", "spend_records").exit_code == 0
    clean = cli("verify")
    assert clean.exit_code == 0, clean.output

    with psycopg2.connect(erp.database_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "UPDATE erp_connector_service.spend_records SET amount = amount + 1"
            " WHERE connection = %s AND record_key = (SELECT min(record_key) FROM"
            " erp_connector_service.spend_records WHERE connection = %s) RETURNING record_key",
            (erp.name, erp.name),
        )
        [(tampered_key,)] = cursor.fetchall()
    conn.close()
    broken = cli("verify")

    assert broken.exit_code == 1
    assert tampered_key in broken.output


def test_audit_export_writes_a_bundle(erp: Erp, tmp_path) -> None:
    assert sync("2026-04-08", "2026-04-08", "spend_records").exit_code == 0

    result = cli("audit-export", str(tmp_path / "bundle"))

    assert result.exit_code == 0, result.output
    assert (tmp_path / "bundle").is_dir() and any((tmp_path / "bundle").iterdir())
    refused = CliRunner().invoke(main, ["audit-export", str(tmp_path / "bundle")])
    assert refused.exit_code != 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_exporter_serves_health_and_metrics(database_url: str) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erp_connector_dagster.cli",
            "exporter",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**os.environ, settings.DATABASE_URL_ENV: database_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                break
            except requests.ConnectionError:
                assert process.poll() is None, "exporter exited"
                assert time.monotonic() < deadline, "exporter did not start"
                time.sleep(0.3)
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert metrics.status_code == 200
    assert "gl_erp_connector_" in metrics.text
    assert health.status_code in (200, 503)


def test_unknown_connection_and_bad_dates_are_refused(erp: Erp) -> None:
    unknown = CliRunner().invoke(
        main, ["backfill", "--since", "2026-01-01", "--connection", "nope"]
    )
    bad_date = CliRunner().invoke(main, ["sync-jobs", "--since", "yesterday"])

    assert unknown.exit_code == 2 and "unknown connection" in unknown.output
    assert bad_date.exit_code == 2 and "is not a date" in bad_date.output


def test_the_earlier_commands_still_work(erp: Erp) -> None:
    migrate = cli("migrate")
    check = CliRunner().invoke(main, ["check"])

    assert migrate.exit_code == 0 and "schema is current" in migrate.output
    assert check.exit_code == 0, check.output
    assert check.output.startswith("ok") and erp.name in check.output
