"""Schedules: nightly master data, reconciliation of recent days, and mapping refresh.

Reconciliation re-reads a recent window of day partitions in full mode, so late edits and
deletions the change sensors could not see (objects without a change timestamp, rows deleted
without a tombstone) still reach the database. The window goes out as ONE run over a partition
range rather than one run per day: the assets walk the range day by day anyway, a week is well
inside the 31-day batch the backfill policy allows, and sync_jobs still records one row per
connection and day, so on-call sees which day failed. The mapping refresh does the same for
mappings and emissions, after reconciliation has finished.

The sync assets go on past a failed day and fail the run at the end naming it, so one bad day
does not leave the rest of the window unread; `sync_jobs` shows which day failed.
"""

from __future__ import annotations

import datetime as dt

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from erp_connector_dagster.assets.sync import MODE_TAG
from erp_connector_dagster.jobs import MAPPING_REFRESH_JOB, MASTER_DATA_JOB, sync_job_name
from erp_connector_dagster.partitions import daily_partitions
from erp_connector_dagster.storage.sync_jobs import SyncMode

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
DEFAULT_WINDOW_DAYS = 7
RECONCILIATION_CRON = "0 2 * * *"
MAPPING_REFRESH_CRON = "0 4 * * *"
MASTER_DATA_CRON = "0 1 * * *"


def recent_window(scheduled: dt.datetime, days: int) -> tuple[str, str] | None:
    """First and last partition key of the `days` complete days before `scheduled`."""
    last = scheduled.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)
    first = last - dt.timedelta(days=days - 1)
    keys = daily_partitions.get_partition_keys(
        current_time=dt.datetime.combine(
            last + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc
        )
    )
    window = [key for key in keys if first.isoformat() <= key <= last.isoformat()]
    if not window:
        return None
    return window[0], window[-1]


def _range_request(
    context: ScheduleEvaluationContext, job_name: str, days: int, tags: dict[str, str]
) -> RunRequest | SkipReason:
    window = recent_window(context.scheduled_execution_time, days)
    if window is None:
        return SkipReason("no day partitions in the window yet")
    first, last = window
    return RunRequest(
        run_key=f"{job_name}:{first}..{last}",
        job_name=job_name,
        tags={**tags, RANGE_START_TAG: first, RANGE_END_TAG: last},
    )


def build_schedules(window_days: int = DEFAULT_WINDOW_DAYS) -> list[ScheduleDefinition]:
    """The project's schedules; they start STOPPED so a new deployment reads no ERP unasked."""
    if window_days < 1:
        raise ValueError("the reconciliation window needs at least one day")

    @schedule(
        name="erp_daily_reconciliation",
        cron_schedule=RECONCILIATION_CRON,
        job_name=sync_job_name(SyncMode.FULL),
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Re-read the last {window_days} days in full mode (late edits, deletions).",
    )
    def erp_daily_reconciliation(context: ScheduleEvaluationContext):
        return _range_request(
            context, sync_job_name(SyncMode.FULL), window_days, {MODE_TAG: SyncMode.FULL.value}
        )

    @schedule(
        name="scope3_mapping_refresh_daily",
        cron_schedule=MAPPING_REFRESH_CRON,
        job_name=MAPPING_REFRESH_JOB,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Recompute mappings and emissions of the last {window_days} days.",
    )
    def scope3_mapping_refresh_daily(context: ScheduleEvaluationContext):
        return _range_request(context, MAPPING_REFRESH_JOB, window_days, {})

    @schedule(
        name="erp_master_data_daily",
        cron_schedule=MASTER_DATA_CRON,
        job_name=MASTER_DATA_JOB,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description="Re-read vendor and material master data before reconciliation.",
    )
    def erp_master_data_daily(context: ScheduleEvaluationContext):
        day = context.scheduled_execution_time.astimezone(dt.timezone.utc).date()
        return RunRequest(run_key=f"{MASTER_DATA_JOB}:{day.isoformat()}", job_name=MASTER_DATA_JOB)

    return [erp_daily_reconciliation, scope3_mapping_refresh_daily, erp_master_data_daily]
