"""A backfill handed to a real `dagster-daemon`, on the production instance storage.

The daemon runs as its own process, loading the code location from the repository's
`workspace.yaml`, with its runs, events and schedules in PostgreSQL through dagster-postgres,
configured by the storage sections of the Helm chart's dagster.yaml (only the Kubernetes run
launcher is left out: runs start as local processes here). `erp-connector backfill` sees the
daemon's heartbeat, hands it the backfill, waits, and reports the days before and after.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from dagster import DagsterInstance

from erp_connector_dagster import settings
from erp_connector_dagster.cli import main
from erp_connector_dagster.orchestration.backfill import daemon_running
from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.server import SandboxConnection, SandboxServer
from erp_connector_dagster.storage import database

REPOSITORY = Path(__file__).parents[1]
HELM_DAGSTER_YAML = REPOSITORY / "helm" / "erp-connector-dagster" / "files" / "dagster.yaml"
DAYS = (dt.date(2026, 5, 4), dt.date(2026, 5, 8))


def _production_storage() -> str:
    """The run, event log and schedule storage sections of the chart's dagster.yaml."""
    storage = HELM_DAGSTER_YAML.read_text().split("\nrun_launcher:")[0]
    assert "{{" not in storage, "the storage sections must not depend on chart values"
    return storage + "\ntelemetry:\n  enabled: false\n"


def _postgres_environment(url: str) -> dict[str, str]:
    """The DAGSTER_PG_* variables the chart's ConfigMap and Secret provide, for this database."""
    parts = urlsplit(url)
    return {
        "DAGSTER_PG_HOST": parts.hostname or "127.0.0.1",
        "DAGSTER_PG_PORT": str(parts.port or 5432),
        "DAGSTER_PG_DB": parts.path.lstrip("/"),
        "DAGSTER_PG_USERNAME": parts.username or "postgres",
        # Trust authentication on the test server: any password is accepted.
        "DAGSTER_PG_PASSWORD": parts.password or "unused-on-trust-auth",
    }


@pytest.fixture
def daemon(fresh_database_url: str, tmp_path, monkeypatch) -> Iterator[SandboxConnection]:
    """A sandbox ERP, a DAGSTER_HOME on PostgreSQL, and a dagster-daemon serving it."""
    connection = SandboxConnection(
        name=f"daemon-{uuid.uuid4().hex[:6]}",
        erp_type="netsuite",
        company=SandboxCompany(seed=818, end=dt.date(2026, 6, 30)),
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(_production_storage())
    with SandboxServer([connection], database_url=fresh_database_url) as server:
        [config] = server.connection_configs()
        path = settings.write_connections([config], tmp_path / "connections.yaml")
        environment = {
            settings.CONNECTIONS_FILE_ENV: str(path),
            database.DATABASE_URL_ENV: fresh_database_url,
            "DAGSTER_HOME": str(home),
            **_postgres_environment(fresh_database_url),
            **server.secret_environment(),
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        log = (tmp_path / "daemon.log").open("wb")
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=REPOSITORY,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            instance = DagsterInstance.get()
            deadline = time.monotonic() + 120
            while not daemon_running(instance):
                assert process.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the daemon never reported healthy"
                time.sleep(1)
            yield connection
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            log.close()


def test_backfill_through_a_running_daemon_fills_the_days_in_one_run(
    daemon: SandboxConnection, fresh_database_url: str
) -> None:
    first, last = DAYS

    result = CliRunner().invoke(
        main,
        [
            "backfill",
            "--since",
            first.isoformat(),
            "--until",
            last.isoformat(),
            "--assets",
            "spend_records,purchase_orders",
            "--no-progress",
            "--wait-timeout",
            "300",
        ],
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    before, after = result.output.split("after:")
    assert "daemon is running: launched Dagster backfill" in before
    assert f"{daemon.name}: 0 synced, 5 missing ({first}..{last})" in before
    # The assets' backfill policy batches the five days into a single run.
    assert f"{first}..{last} (5 day(s)), run " in before and ": succeeded" in before
    assert f"{daemon.name}: 5 synced" in after
    assert "1 of 1 run(s) succeeded; 0 day partition(s) still need attention" in after

    with database.connection(fresh_database_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT transaction_date, count(*) FROM erp_connector_service.spend_records"
            " WHERE connection = %s GROUP BY 1",
            (daemon.name,),
        )
        stored = dict(cursor.fetchall())
    expected = {
        day: len(daemon.company.records(RecordKind.SPEND, day))
        for day in daemon.company.business_days(first, last)
    }
    assert stored == {day: count for day, count in expected.items() if count}
    # The run lives in the production storage: the Dagster UI on this instance shows it.
    [run] = DagsterInstance.get().get_runs()
    assert run.tags["dagster/asset_partition_range_start"] == first.isoformat()
    assert run.tags["dagster/asset_partition_range_end"] == last.isoformat()
