"""Sensors, schedules and jobs against a sandbox ERP over HTTP and a real PostgreSQL.

The change sensor is ticked through Dagster's own sensor context with a real instance; the runs
it requests are executed as the real sync jobs, and made to fail by a fault plan in the sandbox
ERP, so what is checked is how the cursor behaves when runs really fail and really succeed.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2
import pytest
from dagster import (
    AssetSelection,
    DagsterInstance,
    DefaultSensorStatus,
    Definitions,
    build_schedule_context,
    build_sensor_context,
    materialize,
)

from erp_connector_dagster.assets.sync import CONNECTIONS_TAG, CURSOR_TAG_PREFIX, MODE_TAG
from erp_connector_dagster.definitions import build_definitions
from erp_connector_dagster.jobs import DAY_ASSETS, DAY_KINDS, DAY_SYNC_ASSETS, sync_job_name
from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.server import (
    SandboxConnection,
    SandboxServer,
    available_erp_types,
)
from erp_connector_dagster.schedules import RANGE_END_TAG, RANGE_START_TAG
from erp_connector_dagster.sensors import REQUEST_TAG, sensor_name
from erp_connector_dagster.settings import ConnectionConfig
from erp_connector_dagster.storage.sync_jobs import advance_cursor, read_cursor

ERP_TYPE = "sap_s4hana" if "sap_s4hana" in available_erp_types() else available_erp_types()[0]
# A company whose history ended months ago, so no record carries a change stamp near "now"
# unless a test changed it.
PAST_END = dt.date(2026, 6, 30)
UTC = dt.timezone.utc


@dataclass
class Sandbox:
    connection: SandboxConnection
    config: ConnectionConfig
    database_url: str

    @property
    def company(self) -> SandboxCompany:
        return self.connection.company

    def definitions(self):
        return build_definitions([self.config], database_url=self.database_url)


@pytest.fixture
def sandbox(request, database_url: str) -> Iterator[Sandbox]:
    options = getattr(request, "param", {})
    name = f"orch-{uuid.uuid4().hex[:6]}"
    connection = SandboxConnection(
        name=name, erp_type=ERP_TYPE, company=SandboxCompany(seed=515, end=PAST_END)
    )
    with SandboxServer([connection], database_url=database_url) as server:
        config = server.connection_configs()[0]
        # No retries: a fault in the sandbox fails the run at once instead of after backoff.
        config = config.model_copy(
            update={"options": {**config.options, "max_retries": 0, **options}}
        )
        yield Sandbox(connection, config, database_url)


def store_cursor(database_url: str, connection: str, value: dt.datetime) -> None:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        for kind in DAY_KINDS:
            advance_cursor(cursor, connection, kind.value, value)
    conn.close()


def stored_cursor(database_url: str, connection: str, kind: RecordKind) -> dt.datetime | None:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        value = read_cursor(cursor, connection, kind.value)
    conn.close()
    return value


class SensorDriver:
    """Ticks one connection's change sensor and runs what it asks for, like the daemon would."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.definitions = sandbox.definitions()
        self.sensor = self.definitions.get_sensor_def(sensor_name(sandbox.config))
        self.resources = {
            key: self.definitions.resources[key]
            for key in ("database", sandbox.config.resource_key)
        }
        self.instance = DagsterInstance.ephemeral()
        self.cursor: str | None = None

    def tick(self):
        context = build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources=self.resources,
            definitions=self.definitions,
        )
        result = self.sensor(context)
        self.cursor = result.cursor
        return result.run_requests

    def run(self, run_request) -> bool:
        """Execute a requested run: its partition of the sync assets, with its tags."""
        # The sync part of the requested job; mappings, emissions and the asset checks are
        # tested in their own suites and add nothing to how the sensor treats run outcomes.
        result = materialize(
            list(self.definitions.assets or []),
            selection=AssetSelection.assets(*DAY_SYNC_ASSETS),
            resources=self.definitions.resources,
            partition_key=run_request.partition_key,
            tags=run_request.tags,
            instance=self.instance,
            raise_on_error=False,
        )
        return result.success

    @property
    def committed(self) -> dict[str, dt.datetime]:
        state = json.loads(self.cursor)
        return {
            kind: dt.datetime.fromisoformat(value) for kind, value in state["committed"].items()
        }


def test_definitions_have_a_job_per_mode_and_stopped_sensors(sandbox: Sandbox) -> None:
    definitions = sandbox.definitions()

    Definitions.validate_loadable(definitions)
    for mode in ("full", "incremental", "delta"):
        job = definitions.resolve_job_def(sync_job_name(mode))
        assert job.tags[MODE_TAG] == mode
        assert {key.path[-1] for key in job.asset_layer.executable_asset_keys} == set(DAY_ASSETS)
    sensor = definitions.get_sensor_def(sensor_name(sandbox.config))
    assert sensor.default_status is DefaultSensorStatus.STOPPED
    assert sensor.job_name == sync_job_name("incremental")


@pytest.mark.parametrize("sandbox", [{"sync_mode": "delta"}], indirect=True)
def test_sync_mode_comes_from_the_connection_options(sandbox: Sandbox) -> None:
    sensor = sandbox.definitions().get_sensor_def(sensor_name(sandbox.config))

    assert sensor.job_name == sync_job_name("delta")


def test_sensor_holds_its_cursor_until_the_requested_runs_succeed(sandbox: Sandbox) -> None:
    company = sandbox.company
    start = dt.datetime.now(UTC) - dt.timedelta(minutes=1)
    store_cursor(sandbox.database_url, sandbox.config.name, start)
    spend_day, order_day = company.business_days()[-40], company.business_days()[-25]
    spend_line = company.records(RecordKind.SPEND, spend_day)[0]
    company.amend(RecordKind.SPEND, spend_line.natural_key, spend_day, description="re-keyed")
    order = company.records(RecordKind.PURCHASE_ORDER, order_day)[0]
    company.amend(RecordKind.PURCHASE_ORDER, order.natural_key, order_day, order_status="closed")
    driver = SensorDriver(sandbox)

    first = driver.tick()

    requested = {request.partition_key for request in first}
    assert {spend_day.isoformat(), order_day.isoformat()} <= requested
    for request in first:
        assert request.job_name == sync_job_name("incremental")
        assert request.tags[CONNECTIONS_TAG] == sandbox.config.name
        assert request.tags[MODE_TAG] == "incremental"
        assert (
            dt.datetime.fromisoformat(request.tags[CURSOR_TAG_PREFIX + sandbox.config.name])
            == start
        )
    assert driver.committed[RecordKind.SPEND.value] == start

    # The ERP goes down: every requested run fails.
    sandbox.connection.faults.server_error(count=10**6)
    assert not any([driver.run(request) for request in first])

    second = driver.tick()

    assert {request.partition_key for request in second} == requested
    assert {r.tags[REQUEST_TAG] for r in second}.isdisjoint({r.tags[REQUEST_TAG] for r in first})
    assert {r.run_key for r in second}.isdisjoint({r.run_key for r in first})
    assert driver.committed[RecordKind.SPEND.value] == start
    assert stored_cursor(sandbox.database_url, sandbox.config.name, RecordKind.SPEND) == start

    # The ERP is back: the re-requested runs succeed, and only then does the cursor move.
    sandbox.connection.faults.clear()
    assert all([driver.run(request) for request in second])

    third = driver.tick()

    moved = stored_cursor(sandbox.database_url, sandbox.config.name, RecordKind.SPEND)
    assert moved is not None and moved > start
    assert driver.committed[RecordKind.SPEND.value] == moved
    assert driver.committed[RecordKind.PURCHASE_ORDER.value] > start
    # The amended rows sit on the new inclusive cursor; they are not asked for again.
    assert spend_day.isoformat() not in {request.partition_key for request in third}


@pytest.mark.parametrize("sandbox", [{"sensor_max_runs_per_tick": 4}], indirect=True)
def test_sensor_switched_on_after_a_week_catches_up_oldest_first(sandbox: Sandbox) -> None:
    company = sandbox.company
    start = dt.datetime.now(UTC) - dt.timedelta(minutes=1)
    store_cursor(sandbox.database_url, sandbox.config.name, start)
    days = company.business_days()[-60:-48]
    for day in days:
        line = company.records(RecordKind.SPEND, day)[0]
        company.amend(RecordKind.SPEND, line.natural_key, day, description="late correction")
    driver = SensorDriver(sandbox)

    first = driver.tick()
    while_running = driver.tick()

    assert [request.partition_key for request in first] == [d.isoformat() for d in days[:4]]
    assert while_running == []

    assert all([driver.run(request) for request in first])
    after_those = driver.tick()

    assert [request.partition_key for request in after_those] == [d.isoformat() for d in days[4:8]]
    # Not everything of the first scan has succeeded yet, so the cursor has not moved.
    assert stored_cursor(sandbox.database_url, sandbox.config.name, RecordKind.SPEND) == start


def test_reconciliation_is_one_full_run_over_the_last_week(sandbox: Sandbox) -> None:
    definitions = sandbox.definitions()
    scheduled = dt.datetime(2026, 11, 18, 2, 0, tzinfo=UTC)

    reconciliation = definitions.get_schedule_def("erp_daily_reconciliation")
    [request] = reconciliation.evaluate_tick(
        build_schedule_context(scheduled_execution_time=scheduled)
    ).run_requests
    mapping = definitions.get_schedule_def("scope3_mapping_refresh_daily")
    [mapping_request] = mapping.evaluate_tick(
        build_schedule_context(scheduled_execution_time=scheduled)
    ).run_requests

    assert request.job_name == sync_job_name("full")
    assert request.tags[MODE_TAG] == "full"
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (
        "2026-11-11",
        "2026-11-17",
    )
    assert mapping_request.job_name == "scope3_mapping_refresh"
    assert mapping_request.tags[RANGE_START_TAG] == "2026-11-11"
    assert reconciliation.default_status.value == "STOPPED"
