"""Backfills of day partitions in a few bounded runs: through the daemon, or in process.

When a Dagster daemon is running against the instance (DAGSTER_HOME set and a fresh backfill
daemon heartbeat), a backfill is handed to it like one launched from the UI, so the assets'
backfill policy batches it (at most 31 days per run). Otherwise the partitions are materialized
here, in ranges of at most the same number of days, so a year is about a dozen runs, not 365.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dagster import AssetKey, AssetSelection, DagsterInstance, Definitions, materialize

from erp_connector_dagster.assets.sync import CONNECTIONS_TAG, MODE_TAG
from erp_connector_dagster.orchestration.coverage import day_ranges
from erp_connector_dagster.partitions import backfill_policy
from erp_connector_dagster.storage.sync_jobs import SyncMode

logger = logging.getLogger("erp_connector_dagster.orchestration")

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
BACKFILL_DAEMON = "BACKFILL"
# The same batch size the assets' backfill policy gives the daemon.
DEFAULT_DAYS_PER_RUN = backfill_policy.max_partitions_per_run or 31


@dataclass
class RangeRun:
    """One in-process run over a range of day partitions, and how it ended."""

    first: dt.date
    last: dt.date
    run_id: str | None = None
    success: bool = False
    error: str | None = None

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def describe(self) -> str:
        span = self.first.isoformat() if self.days == 1 else f"{self.first}..{self.last}"
        outcome = "succeeded" if self.success else f"FAILED: {self.error}"
        return f"{span} ({self.days} day(s)), run {self.run_id or '-'}: {outcome}"


def run_tags(connections: Sequence[str] | None, mode: SyncMode) -> dict[str, str]:
    """Tags the sync assets read: the mode, and the connections when not all of them."""
    tags = {MODE_TAG: mode.value}
    if connections:
        tags[CONNECTIONS_TAG] = ",".join(connections)
    return tags


def cli_instance() -> DagsterInstance:
    """The instance under DAGSTER_HOME when set (runs show in the UI), else an ephemeral one."""
    if os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.get()
    return DagsterInstance.ephemeral()


def daemon_running(instance: DagsterInstance) -> bool:
    """Whether a daemon with a healthy backfill loop serves this instance."""
    if instance.is_ephemeral:
        return False
    try:
        status = instance.get_daemon_statuses([BACKFILL_DAEMON]).get(BACKFILL_DAEMON)
    except Exception as error:  # noqa: BLE001 - no heartbeat table means no daemon
        logger.info("no daemon heartbeat readable: %s", type(error).__name__)
        return False
    return bool(status and status.healthy)


def launch_daemon_backfill(
    instance: DagsterInstance,
    definitions: Definitions,
    asset_names: Sequence[str],
    days: Sequence[dt.date],
    tags: dict[str, str],
    title: str,
) -> str:
    """Record an asset backfill for the daemon to run; return its id."""
    # The same private constructor the UI's launchPartitionBackfill mutation ends in; there is
    # no public one for asset backfills in Dagster 1.13.
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=definitions.resolve_asset_graph(),
        partition_names=[day.isoformat() for day in days],
        asset_selection=[AssetKey(name) for name in asset_names],
        backfill_timestamp=time.time(),
        tags=tags,
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=title,
        description=None,
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id


def _failure_message(result) -> str:
    messages = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error if event.event_specific_data else None
        text = error.message.strip() if error else (event.message or "")
        first_line = re.sub(r"^[\w.]+\.(\w+): ", r"\1: ", text.splitlines()[0] if text else "")
        messages.append(f"{event.step_key}: {first_line or 'failed'}")
    return "; ".join(messages[:3])[:500] or "run failed"


def _run_config() -> dict:
    # Dagster's console logger prints every event with stack traces; on the command line the
    # outcome lines are enough unless the operator asked for more (`erp-connector -v`).
    level = "DEBUG" if logging.getLogger().isEnabledFor(logging.INFO) else "CRITICAL"
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def materialize_range(
    definitions: Definitions,
    asset_names: Sequence[str],
    first: dt.date,
    last: dt.date,
    tags: dict[str, str],
    instance: DagsterInstance,
) -> RangeRun:
    """Materialize `asset_names` for the days first..last in one run."""
    outcome = RangeRun(first, last)
    range_tags = dict(tags)
    partition_key = None
    if first == last:
        partition_key = first.isoformat()
    else:
        range_tags[RANGE_START_TAG] = first.isoformat()
        range_tags[RANGE_END_TAG] = last.isoformat()
    try:
        result = materialize(
            list(definitions.assets or []),
            selection=AssetSelection.assets(*(AssetKey(name) for name in asset_names)),
            resources=definitions.resources or {},
            instance=instance,
            partition_key=partition_key,
            tags=range_tags,
            run_config=_run_config(),
            raise_on_error=False,
        )
    except Exception as error:  # noqa: BLE001 - one bad range must not stop the others
        outcome.error = f"{type(error).__name__}: {str(error)[:300]}"
        return outcome
    outcome.run_id = result.run_id
    outcome.success = result.success
    if not result.success:
        outcome.error = _failure_message(result)
    return outcome


def materialize_days(
    definitions: Definitions,
    asset_names: Sequence[str],
    days: Sequence[dt.date],
    tags: dict[str, str],
    instance: DagsterInstance,
    *,
    days_per_run: int = DEFAULT_DAYS_PER_RUN,
    on_run: Callable[[RangeRun], None] | None = None,
) -> list[RangeRun]:
    """Materialize the given days in runs of at most `days_per_run` consecutive days."""
    runs = []
    for first, last in day_ranges(days, days_per_run):
        outcome = materialize_range(definitions, asset_names, first, last, tags, instance)
        logger.info("backfill range %s", outcome.describe())
        runs.append(outcome)
        if on_run is not None:
            on_run(outcome)
    return runs


def materialize_unpartitioned(
    definitions: Definitions,
    asset_names: Sequence[str],
    tags: dict[str, str],
    instance: DagsterInstance,
) -> RangeRun:
    """Materialize unpartitioned assets (master data) once; reported as a range of today."""
    today = dt.datetime.now(dt.timezone.utc).date()
    outcome = RangeRun(today, today)
    result = materialize(
        list(definitions.assets or []),
        selection=AssetSelection.assets(*(AssetKey(name) for name in asset_names)),
        resources=definitions.resources or {},
        instance=instance,
        tags=tags,
        run_config=_run_config(),
        raise_on_error=False,
    )
    outcome.run_id = result.run_id
    outcome.success = result.success
    if not result.success:
        outcome.error = _failure_message(result)
    return outcome


@dataclass
class DaemonBackfill:
    """Where a backfill handed to the daemon stands: its status and the runs it launched."""

    backfill_id: str
    status: str
    runs: list[RangeRun]
    finished: bool

    @property
    def succeeded(self) -> bool:
        return (
            self.finished
            and self.status in {"COMPLETED", "COMPLETED_SUCCESS"}
            and all(run.success for run in self.runs)
        )


def _range_run(run) -> RangeRun:
    first = run.tags.get(RANGE_START_TAG) or run.tags.get("dagster/partition")
    last = run.tags.get(RANGE_END_TAG) or first
    today = dt.datetime.now(dt.timezone.utc).date()
    outcome = RangeRun(
        dt.date.fromisoformat(first) if first else today,
        dt.date.fromisoformat(last) if last else today,
        run_id=run.run_id,
        success=run.status.value == "SUCCESS",
    )
    if not outcome.success:
        outcome.error = run.status.value.lower()
    return outcome


def daemon_backfill_state(instance: DagsterInstance, backfill_id: str) -> DaemonBackfill:
    """The backfill's status and its runs, oldest first, as the instance records them."""
    from dagster import RunsFilter
    from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES

    backfill = instance.get_backfill(backfill_id)
    if backfill is None:
        raise LookupError(f"no Dagster backfill {backfill_id} on this instance")
    runs = instance.get_runs(filters=RunsFilter.for_backfill(backfill_id))
    ranges = sorted((_range_run(run) for run in runs), key=lambda r: (r.first, r.run_id or ""))
    finished = backfill.status in BULK_ACTION_TERMINAL_STATUSES and all(
        run.is_finished for run in runs
    )
    return DaemonBackfill(backfill_id, backfill.status.value, ranges, finished)


def wait_for_daemon_backfill(
    instance: DagsterInstance,
    backfill_id: str,
    *,
    timeout_seconds: float,
    poll_seconds: float = 2.0,
    on_poll: Callable[[DaemonBackfill], None] | None = None,
) -> DaemonBackfill:
    """Poll the backfill until it and all its runs have finished, or the timeout passes."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        state = daemon_backfill_state(instance, backfill_id)
        if on_poll is not None:
            on_poll(state)
        if state.finished or time.monotonic() >= deadline:
            return state
        time.sleep(poll_seconds)
