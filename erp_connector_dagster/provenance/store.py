"""Reading the provenance evidence out of PostgreSQL, in one consistent snapshot.

The verifier and the bundle export read every table; doing it inside one REPEATABLE READ,
READ ONLY transaction means a sync committing meanwhile cannot make rows and heads disagree.
Rows come through server-side cursors, a partition at a time, so memory stays flat.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
from collections.abc import Iterator
from typing import Any

from psycopg2 import extensions, sql

from erp_connector_dagster.provenance.tables import SCHEMA, check_table

logger = logging.getLogger(__name__)

FETCH_ROWS = 5000
_cursor_names = itertools.count()

AUDIT_EVENT_COLUMNS = (
    "id",
    "event_type",
    "connection",
    "kind",
    "partition_date",
    "sync_id",
    "details",
    "created_at",
    "prev_hash",
    "event_hash",
)
SEAL_COLUMNS = (
    "id",
    "sealed_at",
    "audit_event_id",
    "audit_head",
    "heads_digest",
    "changed_digest",
    "partition_count",
    "record_count",
    "previous_hmac",
    "hmac",
    "scope",
)
CHAIN_HEAD_COLUMNS = (
    "table_name",
    "connection",
    "partition_date",
    "head_hash",
    "record_count",
    "audit_event_id",
    "updated_at",
)


def day_text(value: dt.date | str | None) -> str | None:
    """Partition dates as keys: the same text whether read from PostgreSQL or a bundle."""
    return value.isoformat() if isinstance(value, dt.date) else value


@contextlib.contextmanager
def read_snapshot(conn) -> Iterator[Any]:
    """A REPEATABLE READ, READ ONLY transaction on `conn`, rolled back afterwards.

    If the caller already has a transaction open, its own snapshot rules apply instead.
    """
    autocommit = conn.autocommit
    status = conn.info.transaction_status
    started = autocommit or status == extensions.TRANSACTION_STATUS_IDLE
    if started:
        conn.autocommit = False
        with conn.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    else:
        logger.info("reading provenance inside the caller's open transaction")
    try:
        yield conn
    finally:
        if started:
            conn.rollback()
            conn.autocommit = autocommit


def stream_rows(
    conn,
    relation: str,
    columns: tuple[str, ...] | list[str],
    order_by: tuple[str, ...] | list[str],
) -> Iterator[dict[str, Any]]:
    """Rows of one table of the schema as dicts, through a server-side cursor."""
    with conn.cursor(name=f"provenance_read_{next(_cursor_names)}") as cursor:
        cursor.itersize = FETCH_ROWS
        cursor.execute(
            sql.SQL("SELECT {} FROM {}.{} ORDER BY {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.Identifier(SCHEMA),
                sql.Identifier(relation),
                sql.SQL(", ").join(map(sql.Identifier, order_by)),
            )
        )
        for values in cursor:
            yield dict(zip(columns, values, strict=True))


def table_columns(conn, relation: str) -> list[str]:
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (SCHEMA, relation),
        )
        return [name for (name,) in cursor.fetchall()]


def stream_partitioned(
    conn, table: str, columns: list[str], date_column: str | None, key_columns: tuple[str, ...]
) -> Iterator[tuple[str, str | None, list[dict[str, Any]]]]:
    """(connection, day, rows) for each partition of a provenance table, in primary key order."""
    check_table(table)
    partition = ("connection",) + ((date_column,) if date_column else ())
    rows = stream_rows(conn, table, columns, partition + key_columns)
    for (connection, *day), group in itertools.groupby(
        rows, key=lambda row: tuple(row[column] for column in partition)
    ):
        yield connection, day_text(day[0]) if day else None, list(group)


def audit_events(conn) -> Iterator[dict[str, Any]]:
    return stream_rows(conn, "audit_events", AUDIT_EVENT_COLUMNS, ("id",))


def seals(conn) -> list[dict[str, Any]]:
    return list(stream_rows(conn, "seals", SEAL_COLUMNS, ("id",)))


def chain_heads(conn) -> Iterator[dict[str, Any]]:
    return stream_rows(
        conn, "chain_heads", CHAIN_HEAD_COLUMNS, ("table_name", "connection", "partition_date")
    )
