"""Change sensors: one per connection, turning ERP changes into runs for exactly those days.

Each tick asks the connection's ERP which day partitions of spend, purchase orders, purchase
order lines and inventory changed since the sensor's watermark, and requests one run per
changed day (oldest first, a bounded number in flight, so a sensor switched back on after a
week catches up without a flood). The watermark is committed, in the sensor cursor and in
`sync_cursors`, only after the runs of a change have succeeded; a failed run is requested again
and holds the watermark where it was. The logic of a tick lives in
`orchestration.change_cursor`; this module binds it to Dagster.

Per-connection options in the connections file (they are not ERP resource fields):
    sync_mode: incremental | delta          (default incremental)
    sensor_max_runs_per_tick: int           (default 10; also the cap on runs in flight)
    sensor_interval_seconds: int            (default 300)
    sensor_initial_lookback_days: int       (default 1; where a sensor with no cursor starts)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from erp_connector_dagster.assets.sync import CONNECTIONS_TAG, CURSOR_TAG_PREFIX, MODE_TAG
from erp_connector_dagster.erp.base import ErpSource
from erp_connector_dagster.jobs import DAY_KINDS, sync_job_name
from erp_connector_dagster.orchestration.change_cursor import ChangeCursor, RunOutcome, run_tick
from erp_connector_dagster.partitions import daily_partitions
from erp_connector_dagster.resources import PostgresResource
from erp_connector_dagster.settings import ConnectionConfig
from erp_connector_dagster.storage.sync_jobs import SyncMode, advance_cursor, read_cursor

REQUEST_TAG = "erp_connector/change_request"
SENSOR_MODES = (SyncMode.INCREMENTAL, SyncMode.DELTA)


@dataclass(frozen=True)
class SensorSettings:
    """How one connection's change sensor behaves, from the connection's options."""

    mode: SyncMode = SyncMode.INCREMENTAL
    max_runs_per_tick: int = 10
    interval_seconds: int = 300
    initial_lookback_days: int = 1

    @classmethod
    def from_connection(cls, connection: ConnectionConfig) -> SensorSettings:
        options = connection.options
        mode = SyncMode(options.get("sync_mode", SyncMode.INCREMENTAL.value))
        if mode not in SENSOR_MODES:
            raise ValueError(
                f"connection {connection.name}: sync_mode for its sensor must be incremental or"
                f" delta, not {mode.value} (full reads run on the reconciliation schedule)"
            )
        settings = cls(
            mode=mode,
            max_runs_per_tick=int(options.get("sensor_max_runs_per_tick", cls.max_runs_per_tick)),
            interval_seconds=int(options.get("sensor_interval_seconds", cls.interval_seconds)),
            initial_lookback_days=int(
                options.get("sensor_initial_lookback_days", cls.initial_lookback_days)
            ),
        )
        if settings.max_runs_per_tick < 1:
            raise ValueError(f"connection {connection.name}: sensor_max_runs_per_tick must be >= 1")
        return settings


def sensor_name(connection: ConnectionConfig) -> str:
    return "erp_changes_" + connection.name.replace("-", "_")


def run_outcome(instance: DagsterInstance, request_id: str) -> str:
    """How the latest run requested under `request_id` ended, if it has."""
    runs = instance.get_runs(RunsFilter(tags={REQUEST_TAG: request_id}), limit=1)
    if not runs:
        return RunOutcome.NOT_FOUND
    if runs[0].status == DagsterRunStatus.SUCCESS:
        return RunOutcome.SUCCEEDED
    if runs[0].status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
        return RunOutcome.FAILED
    return RunOutcome.IN_FLIGHT


def _first_partition_day() -> dt.date:
    return dt.date.fromisoformat(daily_partitions.get_first_partition_key())


def _partition_exists(day: dt.date) -> bool:
    # Limitation: a change on a day whose partition does not exist yet (today) is not requested
    # by the sensor; the daily reconciliation re-reads that day in full once it is complete.
    last = daily_partitions.get_last_partition_key()
    return last is not None and _first_partition_day() <= day <= dt.date.fromisoformat(last)


def load_state(
    cursor_text: str | None,
    database: PostgresResource,
    connection: str,
    kinds: list,
    settings: SensorSettings,
) -> ChangeCursor:
    """The sensor cursor, or a fresh one from `sync_cursors` (or the initial lookback)."""
    state = ChangeCursor.from_json(cursor_text) if cursor_text else ChangeCursor({}, {})
    missing = [kind for kind in kinds if kind.value not in state.scanned]
    if missing:
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=settings.initial_lookback_days)
        with database.transaction() as conn, conn.cursor() as cursor:
            for kind in missing:
                stored = read_cursor(cursor, connection, kind.value)
                state.scanned[kind.value] = state.committed[kind.value] = stored or start
    return state


def _commit(database: PostgresResource, connection: str, watermarks: list[dict]) -> None:
    if not watermarks:
        return
    with database.transaction() as conn, conn.cursor() as cursor:
        for batch in watermarks:
            for kind, value in batch.items():
                advance_cursor(cursor, connection, kind, value)


def build_change_sensor(connection: ConnectionConfig) -> SensorDefinition:
    """The change sensor of one connection (STOPPED until someone switches it on)."""
    settings = SensorSettings.from_connection(connection)
    job_name = sync_job_name(settings.mode)

    @sensor(
        name=sensor_name(connection),
        job_name=job_name,
        minimum_interval_seconds=settings.interval_seconds,
        default_status=DefaultSensorStatus.STOPPED,
        required_resource_keys={"database", connection.resource_key},
        description=(
            f"Runs {settings.mode.value} syncs of the days that changed in {connection.name}, "
            f"at most {settings.max_runs_per_tick} in flight."
        ),
    )
    def _change_sensor(context: SensorEvaluationContext, **_resources) -> SensorResult:
        # Resources are read from the context; direct invocation also passes them by name.
        source: ErpSource = getattr(context.resources, connection.resource_key)
        database: PostgresResource = context.resources.database
        kinds = [kind for kind in DAY_KINDS if kind in source.supported_kinds]
        state = load_state(context.cursor, database, connection.name, kinds, settings)

        tick = run_tick(
            state,
            connection=connection.name,
            kinds=kinds,
            changed_days=source.changed_days,
            outcome_of=lambda request_id: run_outcome(context.instance, request_id),
            syncable=_partition_exists,
            max_in_flight=settings.max_runs_per_tick,
        )
        _commit(database, connection.name, tick.committed)

        for watermarks in tick.committed:
            moved = ", ".join(f"{k}={v.isoformat()}" for k, v in sorted(watermarks.items()))
            context.log.info(f"{connection.name}: cursor moved ({moved or 'no new watermark'})")
        if tick.failed_days:
            context.log.warning(
                f"{connection.name}: runs failed for {sorted(set(tick.failed_days))};"
                " requesting them again, cursor held"
            )
        if tick.lost_days:
            context.log.warning(
                f"{connection.name}: no run appeared for {sorted(set(tick.lost_days))};"
                " requesting them again"
            )
        if tick.dropped_days:
            context.log.info(
                f"{connection.name}: changes on days outside the existing partitions left to"
                f" reconciliation: {tick.dropped_days[0]}..{tick.dropped_days[-1]}"
            )
        if tick.scan_error:
            context.log.error(
                f"{connection.name}: asking the ERP for changes failed: {tick.scan_error}"
            )
        if tick.new_days:
            context.log.info(f"{connection.name}: {len(tick.new_days)} changed day(s) found")

        run_requests = [
            RunRequest(
                run_key=request.request_id,
                job_name=job_name,
                partition_key=request.day.isoformat(),
                tags={
                    CONNECTIONS_TAG: connection.name,
                    MODE_TAG: settings.mode.value,
                    CURSOR_TAG_PREFIX + connection.name: request.since.isoformat(),
                    REQUEST_TAG: request.request_id,
                },
            )
            for request in tick.requests
        ]
        return SensorResult(run_requests=run_requests, cursor=state.to_json())

    return _change_sensor


def build_change_sensors(connections: list[ConnectionConfig]) -> list[SensorDefinition]:
    """One change sensor per configured connection."""
    return [build_change_sensor(connection) for connection in connections]
