"""Which day partitions of a connection are synced, failed, interrupted or missing.

The answer comes from our own tables, not from Dagster's event log: the latest sync job that
covered a (day, kind) says how its last attempt ended, and the record tables say whether data
for the day exists at all (data written before sync jobs were kept still counts as synced).
A day is as good as its worst kind.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from psycopg2 import sql

from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.storage.database import SCHEMA
from erp_connector_dagster.storage.sync_jobs import SyncStatus
from erp_connector_dagster.storage.writers import TABLES


class PartitionState(str, enum.Enum):
    SYNCED = "synced"
    FAILED = "failed"  # the latest attempt failed
    # Limitation: a job whose process died stays "running" in sync_jobs; nothing here can tell
    # it from one still at work, so both count as needing a backfill.
    RUNNING = "running"  # started and not finished: still running, or the process died
    MISSING = "missing"  # never synced

    @property
    def needs_backfill(self) -> bool:
        return self is not PartitionState.SYNCED


_SEVERITY = (PartitionState.FAILED, PartitionState.RUNNING, PartitionState.MISSING)


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from start to end, both included."""
    return [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]


def latest_job_status(
    cursor, connection: str, kinds: Sequence[str], start: dt.date, end: dt.date
) -> dict[tuple[dt.date, str], str]:
    """(day, kind) -> status of the most recent sync job that covered it."""
    cursor.execute(
        sql.SQL(
            "SELECT DISTINCT ON (day, kind) day::date, kind, status"
            " FROM {jobs} j,"
            " LATERAL generate_series(greatest(j.partition_start, %(start)s::date),"
            "   least(j.partition_end, %(end)s::date), interval '1 day') AS day,"
            " LATERAL unnest(j.kinds) AS kind"
            " WHERE j.connection = %(connection)s AND j.partition_start <= %(end)s"
            "  AND j.partition_end >= %(start)s AND kind = ANY(%(kinds)s)"
            " ORDER BY day, kind, j.created_at DESC"
        ).format(jobs=sql.Identifier(SCHEMA, "sync_jobs")),
        {"connection": connection, "start": start, "end": end, "kinds": list(kinds)},
    )
    return {(day, kind): status for day, kind, status in cursor.fetchall()}


def stored_row_counts(
    cursor, connection: str, kind: RecordKind, start: dt.date, end: dt.date
) -> dict[dt.date, int]:
    """Live (not source-deleted) rows per day of one kind."""
    spec = TABLES[kind]
    cursor.execute(
        sql.SQL(
            "SELECT {day}, count(*) FROM {table} WHERE connection = %s AND {day} BETWEEN %s AND %s"
            " AND NOT source_deleted GROUP BY 1"
        ).format(
            day=sql.Identifier(spec.partition_column), table=sql.Identifier(SCHEMA, spec.table)
        ),
        (connection, start, end),
    )
    return dict(cursor.fetchall())


@dataclass
class Coverage:
    """The state of each day of one connection, with the rows stored per day."""

    connection: str
    states: dict[dt.date, PartitionState]
    rows: dict[dt.date, int]

    def days_in(self, *states: PartitionState) -> list[dt.date]:
        return sorted(day for day, state in self.states.items() if state in states)

    @property
    def pending(self) -> list[dt.date]:
        return sorted(day for day, state in self.states.items() if state.needs_backfill)

    def describe(self) -> str:
        """One line: counts per state, and the days that need attention as ranges."""
        parts = [f"{len(self.days_in(PartitionState.SYNCED))} synced"]
        for state in _SEVERITY:
            days = self.days_in(state)
            if days:
                parts.append(f"{len(days)} {state.value} ({format_day_ranges(days)})")
        total_rows = sum(self.rows.values())
        return f"{self.connection}: {', '.join(parts)}; {total_rows} rows stored"


def partition_coverage(
    cursor, connection: str, kinds: Iterable[RecordKind], start: dt.date, end: dt.date
) -> Coverage:
    """The state of every day in [start, end] for the given day-partitioned kinds."""
    kinds = [kind for kind in kinds if TABLES[kind].partition_column is not None]
    statuses = latest_job_status(cursor, connection, [k.value for k in kinds], start, end)
    rows_by_kind = {kind: stored_row_counts(cursor, connection, kind, start, end) for kind in kinds}
    states: dict[dt.date, PartitionState] = {}
    rows: dict[dt.date, int] = {}
    for day in days_between(start, end):
        per_kind = []
        for kind in kinds:
            status = statuses.get((day, kind.value))
            if status == SyncStatus.FAILED.value:
                per_kind.append(PartitionState.FAILED)
            elif status in (SyncStatus.RUNNING.value, SyncStatus.PENDING.value):
                per_kind.append(PartitionState.RUNNING)
            elif status == SyncStatus.SUCCEEDED.value or rows_by_kind[kind].get(day):
                per_kind.append(PartitionState.SYNCED)
            else:
                per_kind.append(PartitionState.MISSING)
        states[day] = next(
            (state for state in _SEVERITY if state in per_kind), PartitionState.SYNCED
        )
        rows[day] = sum(rows_by_kind[kind].get(day, 0) for kind in kinds)
    return Coverage(connection, states, rows)


def day_ranges(
    days: Iterable[dt.date], max_days: int | None = None
) -> list[tuple[dt.date, dt.date]]:
    """Consecutive days grouped into (first, last) ranges of at most `max_days` days."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(set(days)):
        if ranges:
            first, last = ranges[-1]
            fits = max_days is None or (day - first).days < max_days
            if day == last + dt.timedelta(days=1) and fits:
                ranges[-1] = (first, day)
                continue
        ranges.append((day, day))
    return ranges


def format_day_ranges(days: Iterable[dt.date], limit: int = 6) -> str:
    """Days as `2026-11-02..2026-11-06, 2026-11-09`, shortened after `limit` ranges."""
    ranges = day_ranges(days)
    shown = [
        first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"
        for first, last in ranges[:limit]
    ]
    if len(ranges) > limit:
        shown.append(f"and {len(ranges) - limit} more ranges")
    return ", ".join(shown)
