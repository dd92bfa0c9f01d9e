"""Bulk writers: canonical records into PostgreSQL through COPY, idempotently per partition.

A partition (one connection, one kind, one day) is written in one transaction:
COPY into a staging table, keep the previous version of every row whose content changed in
`record_versions`, upsert rows whose hash changed, and (on a full read) mark rows the ERP no
longer returns as `source_deleted` instead of removing them. Writing the same records twice
changes nothing: unchanged rows are not touched, so their hashes and sync ids stay as they were.
The partition's hash chain is then rebuilt and the write is recorded as an audit event.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from psycopg2 import sql

from erp_connector_dagster.provenance.canonical import record_hashes
from erp_connector_dagster.provenance.chain import rechain_partition
from erp_connector_dagster.records import CanonicalRecord, RecordKind, RejectedRecord
from erp_connector_dagster.storage.database import SCHEMA


@dataclass(frozen=True)
class TableSpec:
    """Where one kind of record is stored."""

    table: str
    partition_column: str | None

    @property
    def key_columns(self) -> tuple[str, ...]:
        if self.partition_column is None:
            return ("connection", "record_key")
        return ("connection", self.partition_column, "record_key")


TABLES: dict[RecordKind, TableSpec] = {
    RecordKind.SPEND: TableSpec("spend_records", "transaction_date"),
    RecordKind.PURCHASE_ORDER: TableSpec("purchase_orders", "order_date"),
    RecordKind.PURCHASE_ORDER_LINE: TableSpec("purchase_order_lines", "order_date"),
    RecordKind.INVENTORY: TableSpec("inventory_snapshots", "snapshot_date"),
    RecordKind.VENDOR: TableSpec("vendors", None),
    RecordKind.MATERIAL: TableSpec("materials", None),
}


@dataclass
class WriteCounts:
    """What one partition write did."""

    received: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    marked_deleted: int = 0
    quarantined: int = 0
    chain_head: str | None = None

    def as_metadata(self) -> dict[str, int]:
        return {
            "received": self.received,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "marked_deleted": self.marked_deleted,
            "quarantined": self.quarantined,
        }


def record_row(record: CanonicalRecord, *, source_deleted: bool = False) -> dict:
    """The stored (and hashed) columns of a canonical record."""
    row = record.model_dump(mode="python")
    row["record_key"] = record.natural_key
    for field, value in row.items():
        if hasattr(value, "value") and not isinstance(value, Decimal):
            row[field] = value.value  # enums are stored by value
    if record.partition_field is not None:
        row["source_deleted"] = source_deleted
    return row


def _csv_value(value: object) -> object:
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    return value  # str, Decimal, int, date and aware datetime print as PostgreSQL reads them


def copy_rows(cursor, table: str, columns: Sequence[str], rows: Iterable[dict]) -> int:
    """COPY rows into `table` (unqualified names are looked up on the search path)."""
    buffer = io.StringIO()
    lines = [[_csv_value(row.get(column)) for column in columns] for row in rows]
    csv.writer(buffer).writerows(lines)
    buffer.seek(0)
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, NULL '\\N')").format(
        sql.SQL(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    cursor.copy_expert(statement.as_string(cursor), buffer)
    return len(lines)


def write_records(
    cursor,
    kind: RecordKind,
    connection: str,
    batches: Iterable[Sequence[CanonicalRecord]],
    *,
    sync_id: uuid.UUID,
    partition_date: dt.date | None = None,
    full_read: bool | Callable[[], bool] = True,
    deleted_keys: Iterable[str] = (),
) -> WriteCounts:
    """Write one partition's records (or master data) idempotently, batch by batch.

    Each batch is hashed and copied into a staging table as it arrives, so memory holds one
    batch, not the whole partition; the merge into the target runs once at the end.
    `full_read` (or its value, when a callable, asked after the last batch) says whether the
    batches were the whole partition, so that rows missing from them were deleted at source.
    """
    spec = TABLES[kind]
    stage = sql.Identifier(f"stage_{spec.table}")
    cursor.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {target} INCLUDING DEFAULTS)"
        ).format(stage=stage, target=sql.Identifier(SCHEMA, spec.table))
    )
    cursor.execute(sql.SQL("TRUNCATE {}").format(stage))
    counts = WriteCounts()
    columns: list[str] = []
    for batch in batches:
        rows = [record_row(record) for record in batch]
        if not rows:
            continue
        for row, digest in zip(rows, record_hashes(rows, spec.table), strict=False):
            row["record_hash"] = digest
            row["sync_id"] = str(sync_id)
        columns = columns or list(rows[0])
        copy_rows(cursor, f"stage_{spec.table}", columns, rows)

    if columns:
        _drop_superseded_duplicates(cursor, spec)
        cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(stage))
        counts.received = cursor.fetchone()[0]
        _keep_replaced_versions(cursor, kind, spec, sync_id)
        counts.inserted, counts.updated = _upsert(cursor, spec, columns)
        counts.unchanged = counts.received - counts.inserted - counts.updated

    if spec.partition_column is not None and partition_date is not None:
        deleted = set(deleted_keys)
        full_read = full_read() if callable(full_read) else full_read
        if full_read or deleted:
            counts.marked_deleted = _mark_missing_deleted(
                cursor,
                kind,
                spec,
                connection,
                partition_date,
                sync_id,
                only=None if full_read else deleted,
            )
    if spec.partition_column is None or partition_date is not None:
        # Master data forms one chain per connection (partition date None).
        head = rechain_partition(
            cursor, spec.table, connection, partition_date, sync_id=str(sync_id)
        )
        counts.chain_head = head.head_hash
    return counts


def _drop_superseded_duplicates(cursor, spec: TableSpec) -> None:
    """A record met twice while paging keeps only its latest version (dedupe on the key)."""
    keys = sql.SQL(", ").join(map(sql.Identifier, spec.key_columns))
    cursor.execute(
        sql.SQL(
            "DELETE FROM {stage} s USING ("
            " SELECT ctid, row_number() OVER (PARTITION BY {keys}"
            "  ORDER BY updated_at DESC NULLS LAST) AS rank FROM {stage}) ranked"
            " WHERE s.ctid = ranked.ctid AND ranked.rank > 1"
        ).format(stage=sql.Identifier(f"stage_{spec.table}"), keys=keys)
    )


def _keep_replaced_versions(cursor, kind: RecordKind, spec: TableSpec, sync_id) -> None:
    key_match = sql.SQL(" AND ").join(
        sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(c)) for c in spec.key_columns
    )
    partition = (
        sql.SQL("t.{}").format(sql.Identifier(spec.partition_column))
        if spec.partition_column
        else sql.SQL("NULL::date")
    )
    cursor.execute(
        sql.SQL(
            "INSERT INTO {versions} (connection, kind, partition_date, record_key, record_hash,"
            " record, superseded_by)"
            " SELECT t.connection, %s, {partition}, t.record_key, t.record_hash,"
            " to_jsonb(t) - 'chain_hash' - 'chain_position', %s"
            " FROM {target} t JOIN {stage} s ON {key_match}"
            " WHERE t.record_hash <> s.record_hash"
        ).format(
            versions=sql.Identifier(SCHEMA, "record_versions"),
            partition=partition,
            target=sql.Identifier(SCHEMA, spec.table),
            stage=sql.Identifier(f"stage_{spec.table}"),
            key_match=key_match,
        ),
        (kind.value, str(sync_id)),
    )


def _upsert(cursor, spec: TableSpec, columns: list[str]) -> tuple[int, int]:
    updatable = [c for c in columns if c not in spec.key_columns]
    cursor.execute(
        sql.SQL(
            "INSERT INTO {target} AS t ({columns}) SELECT {columns} FROM {stage}"
            " ON CONFLICT ({keys}) DO UPDATE SET {assignments}, synced_at = now()"
            " WHERE t.record_hash <> EXCLUDED.record_hash"
            " RETURNING (xmax = 0) AS inserted"
        ).format(
            target=sql.Identifier(SCHEMA, spec.table),
            columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
            stage=sql.Identifier(f"stage_{spec.table}"),
            keys=sql.SQL(", ").join(map(sql.Identifier, spec.key_columns)),
            assignments=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updatable
            ),
        )
    )
    outcomes = [row[0] for row in cursor.fetchall()]
    inserted = sum(1 for outcome in outcomes if outcome)
    return inserted, len(outcomes) - inserted


def _mark_missing_deleted(
    cursor, kind, spec: TableSpec, connection, day, sync_id, only=None
) -> int:
    """Flag rows the ERP no longer returns; their previous version is kept."""
    table = sql.Identifier(SCHEMA, spec.table)
    # Keys are compared in Python: a planner estimate of one fresh row would otherwise pick a
    # nested loop over the staging table, which is quadratic in the partition size.
    partition = sql.Identifier(spec.partition_column)
    cursor.execute(
        sql.SQL("SELECT record_key FROM {}").format(sql.Identifier(f"stage_{spec.table}"))
    )
    read_keys = {row[0] for row in cursor.fetchall()}
    cursor.execute(
        sql.SQL(
            "SELECT record_key, source_id FROM {table} WHERE connection = %s"
            " AND {partition} = %s AND NOT source_deleted"
        ).format(table=table, partition=partition),
        (connection, day),
    )
    missing = [
        key
        for key, source_id in cursor.fetchall()
        if key not in read_keys and (only is None or key in only or source_id in only)
    ]
    if not missing:
        return 0
    cursor.execute(
        sql.SQL(
            "SELECT * FROM {table} WHERE connection = %s AND {partition} = %s"
            " AND record_key = ANY(%s)"
        ).format(table=table, partition=partition),
        (connection, day, missing),
    )
    names = [column.name for column in cursor.description]
    gone = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    bookkeeping = {"record_hash", "chain_hash", "chain_position", "sync_id", "synced_at"}
    hashed = [
        {**{k: v for k, v in row.items() if k not in bookkeeping}, "source_deleted": True}
        for row in gone
    ]
    for row, new_hash in zip(gone, record_hashes(hashed, spec.table), strict=False):
        cursor.execute(
            sql.SQL(
                "INSERT INTO {versions} (connection, kind, partition_date, record_key,"
                " record_hash, record, superseded_by) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            ).format(versions=sql.Identifier(SCHEMA, "record_versions")),
            (
                connection,
                kind.value,
                day,
                row["record_key"],
                row["record_hash"],
                json.dumps(row, default=str),
                str(sync_id),
            ),
        )
        cursor.execute(
            sql.SQL(
                "UPDATE {table} SET source_deleted = true, record_hash = %s, sync_id = %s,"
                " synced_at = now() WHERE connection = %s AND {partition} = %s"
                " AND record_key = %s"
            ).format(table=table, partition=sql.Identifier(spec.partition_column)),
            (new_hash, str(sync_id), connection, day, row["record_key"]),
        )
    return len(gone)


def replace_quarantine(
    cursor,
    connection: str,
    kind: RecordKind,
    stage: str,
    partition_date: dt.date | None,
    rejected: Sequence[RejectedRecord],
    sync_id: uuid.UUID,
) -> int:
    """Replace a partition's quarantine rows for one stage, so re-runs do not pile up."""
    cursor.execute(
        sql.SQL(
            "DELETE FROM {} WHERE connection = %s AND kind = %s AND stage = %s"
            " AND partition_date IS NOT DISTINCT FROM %s"
        ).format(sql.Identifier(SCHEMA, "quarantine")),
        (connection, kind.value, stage, partition_date),
    )
    rows = [
        {
            "connection": connection,
            "kind": kind.value,
            "stage": stage,
            "partition_date": partition_date,
            "source_id": reject.source_id,
            "reason": reject.reason,
            "payload": json.dumps(reject.payload, default=str, sort_keys=True),
            "sync_id": str(sync_id),
        }
        for reject in rejected
    ]
    if not rows:
        return 0
    return copy_rows(cursor, f"{SCHEMA}.quarantine", list(rows[0]), rows)
