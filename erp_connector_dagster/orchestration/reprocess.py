"""Turn failed sync jobs back into work: which connection, which days, which kinds.

Partitions that a later job already synced are left alone, so reprocessing after the
reconciliation schedule (or a second reprocess) does nothing twice. The re-run reads the whole
partition (full mode): the `since` of a failed incremental run is not kept, and a full read
also catches deletions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from erp_connector_dagster.orchestration.coverage import days_between, latest_job_status
from erp_connector_dagster.storage.sync_jobs import SyncJob, SyncStatus


@dataclass
class RepairPlan:
    """What to re-run for one connection."""

    connection: str
    days: set[dt.date] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)
    master_data_kinds: set[str] = field(default_factory=set)
    job_ids: list[str] = field(default_factory=list)
    already_synced: set[dt.date] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not self.days and not self.master_data_kinds


def plan_repairs(cursor, jobs: Sequence[SyncJob]) -> list[RepairPlan]:
    """Group jobs by connection into days and kinds, skipping days synced since."""
    plans: dict[str, RepairPlan] = {}
    for job in jobs:
        plan = plans.setdefault(job.connection, RepairPlan(job.connection))
        plan.job_ids.append(str(job.id))
        if job.partition_start is None or job.partition_end is None:
            plan.master_data_kinds.update(job.kinds)
            continue
        plan.kinds.update(job.kinds)
        plan.days.update(days_between(job.partition_start, job.partition_end))

    for plan in plans.values():
        if not plan.days:
            continue
        latest = latest_job_status(
            cursor, plan.connection, sorted(plan.kinds), min(plan.days), max(plan.days)
        )
        healed = {
            day
            for day in plan.days
            if all(latest.get((day, kind)) == SyncStatus.SUCCEEDED.value for kind in plan.kinds)
        }
        plan.already_synced = healed
        plan.days -= healed
    return sorted(plans.values(), key=lambda plan: plan.connection)
