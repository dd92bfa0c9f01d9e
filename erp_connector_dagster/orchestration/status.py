"""Per-connection status for on-call: last success, cursors and lag, days needing attention."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from psycopg2 import sql

from erp_connector_dagster.orchestration.coverage import Coverage, partition_coverage
from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.storage.database import SCHEMA
from erp_connector_dagster.storage.sync_jobs import SyncStatus


@dataclass
class ConnectionStatus:
    """What on-call wants to know about one connection at a glance."""

    connection: str
    erp_type: str
    last_success: dt.datetime | None
    last_failure: dt.datetime | None
    last_error: str | None
    cursors: dict[str, dt.datetime] = field(default_factory=dict)
    coverage: Coverage | None = None

    @property
    def cursor(self) -> dt.datetime | None:
        """The oldest committed cursor: every change before it is in the database."""
        return min(self.cursors.values()) if self.cursors else None

    def lag(self, now: dt.datetime | None = None) -> dt.timedelta | None:
        if self.cursor is None:
            return None
        return (now or dt.datetime.now(dt.timezone.utc)) - self.cursor

    @property
    def pending(self) -> list[dt.date]:
        return self.coverage.pending if self.coverage else []


def _last_job(cursor, connection: str, status: SyncStatus) -> tuple[dt.datetime | None, str | None]:
    cursor.execute(
        sql.SQL(
            "SELECT coalesce(finished_at, started_at, created_at), error FROM {}"
            " WHERE connection = %s AND status = %s ORDER BY created_at DESC LIMIT 1"
        ).format(sql.Identifier(SCHEMA, "sync_jobs")),
        (connection, status.value),
    )
    row = cursor.fetchone()
    return (row[0], row[1]) if row else (None, None)


def stored_cursors(cursor, connection: str) -> dict[str, dt.datetime]:
    cursor.execute(
        sql.SQL("SELECT kind, cursor_value FROM {} WHERE connection = %s").format(
            sql.Identifier(SCHEMA, "sync_cursors")
        ),
        (connection,),
    )
    return dict(cursor.fetchall())


def connection_status(
    cursor,
    connection: str,
    erp_type: str,
    kinds: Iterable[RecordKind],
    window: tuple[dt.date, dt.date],
) -> ConnectionStatus:
    """Status of one connection, with the coverage of the day partitions in `window`."""
    last_success, _ = _last_job(cursor, connection, SyncStatus.SUCCEEDED)
    last_failure, last_error = _last_job(cursor, connection, SyncStatus.FAILED)
    return ConnectionStatus(
        connection=connection,
        erp_type=erp_type,
        last_success=last_success,
        last_failure=last_failure,
        last_error=last_error,
        cursors=stored_cursors(cursor, connection),
        coverage=partition_coverage(cursor, connection, kinds, *window),
    )
