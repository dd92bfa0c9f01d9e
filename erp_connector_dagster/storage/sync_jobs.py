"""Sync jobs as the operator sees them: one row per connection per run, with its outcome."""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg2 import sql

from erp_connector_dagster.storage.database import SCHEMA


class SyncMode(str, enum.Enum):
    """How much of the source a sync reads."""

    FULL = "full"  # the whole partition; rows the ERP no longer returns are marked deleted
    INCREMENTAL = "incremental"  # rows changed since the cursor; nothing is marked deleted
    DELTA = "delta"  # changed rows plus the deletions the ERP reports


class SyncStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass
class SyncJob:
    id: uuid.UUID
    connection: str
    kinds: list[str]
    mode: str
    partition_start: dt.date | None
    partition_end: dt.date | None
    status: str
    counts: dict
    error: str | None
    dagster_run_id: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


def start_job(
    cursor,
    connection: str,
    kinds: Sequence[str],
    mode: SyncMode,
    partition_start: dt.date | None,
    partition_end: dt.date | None,
    dagster_run_id: str | None,
) -> uuid.UUID:
    job_id = uuid.uuid4()
    cursor.execute(
        sql.SQL(
            "INSERT INTO {} (id, connection, kinds, mode, partition_start, partition_end,"
            " status, dagster_run_id, started_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())"
        ).format(sql.Identifier(SCHEMA, "sync_jobs")),
        (
            str(job_id),
            connection,
            list(kinds),
            mode.value,
            partition_start,
            partition_end,
            SyncStatus.RUNNING.value,
            dagster_run_id,
        ),
    )
    return job_id


def finish_job(
    cursor, job_id: uuid.UUID, status: SyncStatus, counts: dict, error: str | None = None
) -> None:
    cursor.execute(
        sql.SQL(
            "UPDATE {} SET status = %s, counts = %s, error = %s, finished_at = now() WHERE id = %s"
        ).format(sql.Identifier(SCHEMA, "sync_jobs")),
        (status.value, json.dumps(counts, default=str), error, str(job_id)),
    )


def list_jobs(
    cursor,
    *,
    status: str | None = None,
    since: dt.date | dt.datetime | None = None,
    connection: str | None = None,
    limit: int = 200,
) -> list[SyncJob]:
    conditions = [sql.SQL("true")]
    params: list[object] = []
    if status:
        conditions.append(sql.SQL("status = %s"))
        params.append(status)
    if since:
        conditions.append(sql.SQL("created_at >= %s"))
        params.append(since)
    if connection:
        conditions.append(sql.SQL("connection = %s"))
        params.append(connection)
    cursor.execute(
        sql.SQL(
            "SELECT id, connection, kinds, mode, partition_start, partition_end, status, counts,"
            " error, dagster_run_id, created_at, started_at, finished_at FROM {}"
            " WHERE {} ORDER BY created_at DESC LIMIT %s"
        ).format(sql.Identifier(SCHEMA, "sync_jobs"), sql.SQL(" AND ").join(conditions)),
        [*params, limit],
    )
    return [SyncJob(*row) for row in cursor.fetchall()]


def read_cursor(cursor, connection: str, kind: str) -> dt.datetime | None:
    cursor.execute(
        sql.SQL("SELECT cursor_value FROM {} WHERE connection = %s AND kind = %s").format(
            sql.Identifier(SCHEMA, "sync_cursors")
        ),
        (connection, kind),
    )
    row = cursor.fetchone()
    return row[0] if row else None


def advance_cursor(cursor, connection: str, kind: str, value: dt.datetime) -> None:
    """Move a cursor forward only; an older value never replaces a newer one."""
    cursor.execute(
        sql.SQL(
            "INSERT INTO {table} (connection, kind, cursor_value) VALUES (%s, %s, %s)"
            " ON CONFLICT (connection, kind) DO UPDATE SET"
            " cursor_value = GREATEST({table}.cursor_value, EXCLUDED.cursor_value),"
            " updated_at = now()"
        ).format(table=sql.Identifier(SCHEMA, "sync_cursors")),
        (connection, kind, value),
    )
