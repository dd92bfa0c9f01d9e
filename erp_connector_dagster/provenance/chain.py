"""Hash chains over the records of one partition, their heads, and the check that reads them.

Records of one (table, connection, day) are chained in byte order of their key (record_key,
then factor_version for emission rows):

    genesis       = H(0x02 + canonical {"connection", "partition_date", "table"})
    chain_hash[0] = H(0x01 + genesis + record_hash[0])
    chain_hash[i] = H(0x01 + chain_hash[i-1] + record_hash[i])

where H is SHA-256 over raw digests and the stored values are hex. The last chain hash is the
partition's head, kept with the record count in `chain_heads`. Master data (vendors,
materials) is not partitioned by day: its rows carry no chain columns, but one head per
connection is kept all the same, so a deleted vendor changes a sealed head.

Every head change is written to the audit chain (event `chain_head_changed`, carrying the old
and the new head) in the caller's transaction, which is how the verifier tells a re-sync from
an edit.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from psycopg2 import sql
from psycopg2.extras import execute_values

from erp_connector_dagster.provenance.audit import append_audit_event, lock_audit_chain
from erp_connector_dagster.provenance.canonical import (
    GENESIS_PREFIX,
    LINK_PREFIX,
    canonical_bytes,
    record_hashes,
)
from erp_connector_dagster.provenance.tables import (
    CHAIN_ORDER_COLUMNS,
    CHAINED_TABLES,
    HASHED_COLUMNS,
    PARTITION_COLUMNS,
    SCHEMA,
    TABLE_KINDS,
    check_table,
)

# First key of pg_advisory_xact_lock(int, int) for partition locks; the second is a hash of
# the partition. Two-key locks never collide with the audit chain's one-key lock.
CHAIN_LOCK_CLASS = 0x45524348


class ProblemReason(str, enum.Enum):
    """What the verifier found wrong, in words an auditor can act on."""

    RECORD_EDITED = "record_edited"  # columns no longer hash to record_hash
    RECORD_INSERTED = "record_inserted"  # row is not part of the chain it sits in
    RECORDS_DELETED = "records_deleted"  # chain positions jump: rows removed before this one
    BROKEN_LINK = "broken_link"  # chain hash does not follow from its predecessor
    POSITION_MISMATCH = "position_mismatch"
    TAIL_TRUNCATED = "tail_truncated"  # fewer rows than the head records, after the last row
    COUNT_MISMATCH = "count_mismatch"
    HEAD_MISMATCH = "head_mismatch"  # rows chain to another head than chain_heads holds
    HEAD_MISSING = "head_missing"  # rows without a chain head, or a head without its rows
    HEAD_NOT_AUDITED = "head_not_audited"  # chain_heads changed without an audit event
    AUDIT_DISCONTINUITY = "audit_discontinuity"  # a head changed between two audited changes
    SEALED_HEAD_MISMATCH = "sealed_head_mismatch"  # differs from the sealed head, unaudited
    AUDIT_EVENT_EDITED = "audit_event_edited"
    AUDIT_LINK_BROKEN = "audit_link_broken"
    AUDIT_REWRITTEN = "audit_rewritten"  # audit chain no longer ends where a seal says
    SEAL_INVALID = "seal_invalid"  # HMAC does not verify: forged or altered seal
    SEAL_MISSING = "seal_missing"
    BUNDLE_FILE_CHANGED = "bundle_file_changed"
    BUNDLE_MALFORMED = "bundle_malformed"


@dataclass(frozen=True)
class ChainProblem:
    """One thing wrong, located as precisely as the evidence allows."""

    table: str
    connection: str | None
    partition_date: dt.date | None
    record_key: str | None  # None when only the partition (or the audit chain) is known
    reason: ProblemReason
    detail: str

    def __str__(self) -> str:
        where = "/".join(
            str(part)
            for part in (self.table, self.connection, self.partition_date, self.record_key)
            if part is not None
        )
        return f"{where}: {self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class ChainHead:
    """A partition's chain head after `rechain_partition`, with the head it replaced."""

    table: str
    connection: str
    partition_date: dt.date | None
    head_hash: str
    record_count: int
    previous_head: str | None
    previous_count: int
    audit_event_hash: str | None  # the chain_head_changed event, None when nothing changed

    @property
    def changed(self) -> bool:
        return self.audit_event_hash is not None


class ChainRow(NamedTuple):
    """What the chain check needs of one stored row."""

    sort_key: tuple[str, ...]
    record_key: str
    label: str  # record_key, plus factor_version for emission rows
    stored_hash: str
    computed_hash: str
    chain_position: int | None
    chain_hash: str | None


def genesis_digest(table: str, connection: str, partition_date: dt.date | None) -> bytes:
    """The raw starting value of a partition's chain: binds the chain to where it lives."""
    anchor = {"connection": connection, "partition_date": partition_date, "table": table}
    return hashlib.sha256(GENESIS_PREFIX + canonical_bytes(anchor)).digest()


def link_digest(previous: bytes, record_hash_hex: str) -> bytes:
    return hashlib.sha256(LINK_PREFIX + previous + bytes.fromhex(record_hash_hex)).digest()


def chain_hashes(
    table: str, connection: str, partition_date: dt.date | None, ordered_hashes: Sequence[str]
) -> list[str]:
    """Chain hashes (hex) of record hashes already in chain order."""
    previous = genesis_digest(table, connection, partition_date)
    links = []
    for record_hash_hex in ordered_hashes:
        previous = link_digest(previous, record_hash_hex)
        links.append(previous.hex())
    return links


def empty_head(table: str, connection: str, partition_date: dt.date | None) -> str:
    return genesis_digest(table, connection, partition_date).hex()


def _partition_filter(table: str, partition_date: dt.date | None) -> sql.Composable:
    date_column = PARTITION_COLUMNS[table]
    if date_column is None:
        if partition_date is not None:
            raise ValueError(f"{table} is not partitioned by day; pass partition_date=None")
        return sql.SQL("connection = %(connection)s")
    if partition_date is None:
        raise ValueError(f"{table} is partitioned by {date_column}; a partition_date is needed")
    return sql.SQL("connection = %(connection)s AND {} = %(day)s").format(
        sql.Identifier(date_column)
    )


def _order_by(table: str) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL('{} COLLATE "C"').format(sql.Identifier(column))
        for column in CHAIN_ORDER_COLUMNS[table]
    )


def lock_partition(cursor, table: str, connection: str, partition_date: dt.date | None) -> None:
    """Serialize writers of one partition until the transaction ends.

    For the writer to call before it touches a partition's rows, so two syncs of the same day
    queue instead of deadlocking on each other's rows while one holds the audit lock.
    """
    cursor.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
        (CHAIN_LOCK_CLASS, f"{table}|{connection}|{partition_date}"),
    )


def read_head(
    cursor, table: str, connection: str, partition_date: dt.date | None, *, for_update: bool
) -> tuple[str, int] | None:
    cursor.execute(
        "SELECT head_hash, record_count FROM erp_connector_service.chain_heads"
        " WHERE table_name = %s AND connection = %s"
        " AND partition_date IS NOT DISTINCT FROM %s::date" + (" FOR UPDATE" if for_update else ""),
        (table, connection, partition_date),
    )
    found = cursor.fetchone()
    return (found[0], found[1]) if found else None


def _write_head(
    cursor,
    table: str,
    connection: str,
    partition_date: dt.date | None,
    head: tuple[str, int],
    audit_event_id: int,
    *,
    exists: bool,
) -> None:
    if exists:
        cursor.execute(
            "UPDATE erp_connector_service.chain_heads"
            " SET head_hash = %s, record_count = %s, audit_event_id = %s, updated_at = now()"
            " WHERE table_name = %s AND connection = %s"
            " AND partition_date IS NOT DISTINCT FROM %s::date",
            (*head, audit_event_id, table, connection, partition_date),
        )
        return
    cursor.execute(
        "INSERT INTO erp_connector_service.chain_heads"
        " (table_name, connection, partition_date, head_hash, record_count, audit_event_id)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (table, connection, partition_date, *head, audit_event_id),
    )


def rechain_partition(
    cursor,
    table: str,
    connection: str,
    partition_date: dt.date | None,
    *,
    sync_id: Any = None,
) -> ChainHead:
    """Recompute chain positions and hashes of one partition from its stored record hashes.

    Only rows whose chain values change are updated, in one statement. When the head moves,
    a `chain_head_changed` audit event (old and new head) is appended and `chain_heads` is
    upserted, all in the caller's transaction, so rows, head and audit commit together.
    Holds the audit chain's lock until that transaction ends (see `audit`).
    `partition_date` is None for vendors and materials (one head per connection).
    """
    check_table(table)
    # The audit lock first: rows, head and audit event then change as one step, and a
    # transaction that rechains several partitions cannot deadlock with another one.
    lock_audit_chain(cursor)
    params = {"connection": connection, "day": partition_date}
    order_columns = CHAIN_ORDER_COLUMNS[table]
    chained = table in CHAINED_TABLES

    stored_columns = ["record_hash"] + (["chain_position", "chain_hash"] if chained else [])
    cursor.execute(
        sql.SQL("SELECT {} FROM {}.{} WHERE {} ORDER BY {}").format(
            sql.SQL(", ").join(map(sql.Identifier, [*order_columns, *stored_columns])),
            sql.Identifier(SCHEMA),
            sql.Identifier(table),
            _partition_filter(table, partition_date),
            _order_by(table),
        ),
        params,
    )
    rows = cursor.fetchall()
    key_width = len(order_columns)
    links = chain_hashes(table, connection, partition_date, [row[key_width] for row in rows])

    if chained:
        _update_links(cursor, table, connection, partition_date, rows, links, key_width)

    head = (links[-1] if links else empty_head(table, connection, partition_date), len(rows))
    previous = read_head(cursor, table, connection, partition_date, for_update=True)
    if previous == head or (previous is None and not rows):
        return ChainHead(table, connection, partition_date, *head, *(previous or (None, 0)), None)

    event_id, event_hash = append_audit_event(
        cursor,
        "chain_head_changed",
        connection=connection,
        kind=TABLE_KINDS[table],
        partition_date=partition_date,
        sync_id=sync_id,
        details={
            "table": table,
            "previous_head": previous[0] if previous else None,
            "previous_count": previous[1] if previous else 0,
            "head": head[0],
            "record_count": head[1],
        },
    )
    _write_head(
        cursor, table, connection, partition_date, head, event_id, exists=previous is not None
    )
    return ChainHead(table, connection, partition_date, *head, *(previous or (None, 0)), event_hash)


def _update_links(
    cursor,
    table: str,
    connection: str,
    partition_date: dt.date | None,
    rows: list[tuple],
    links: list[str],
    key_width: int,
) -> None:
    # Rows already at the right place keep their tuple: appending to a day rewrites one row.
    changed = [
        (*row[:key_width], position, link)
        for position, (row, link) in enumerate(zip(rows, links, strict=True))
        if row[key_width + 1] != position or row[key_width + 2] != link
    ]
    if not changed:
        return
    order_columns = CHAIN_ORDER_COLUMNS[table]
    date_column = PARTITION_COLUMNS[table]
    key_match = sql.SQL(" AND ").join(
        sql.SQL("target.{0} = link.{0}").format(sql.Identifier(column))
        for column in ("connection", date_column, *order_columns)
    )
    statement = sql.SQL(
        "UPDATE {schema}.{table} AS target"
        " SET chain_position = link.chain_position, chain_hash = link.chain_hash"
        " FROM (VALUES %s) AS link({keys}, chain_position, chain_hash)"
        " WHERE {match}"
    ).format(
        schema=sql.Identifier(SCHEMA),
        table=sql.Identifier(table),
        keys=sql.SQL(", ").join(map(sql.Identifier, ("connection", date_column, *order_columns))),
        match=key_match,
    )
    template = "(%s, %s::date, " + ", ".join(["%s"] * key_width + ["%s::integer", "%s"]) + ")"
    execute_values(
        cursor,
        statement.as_string(cursor),
        [(connection, partition_date, *link) for link in changed],
        template=template,
        page_size=len(changed),
    )


def check_chain(
    table: str,
    connection: str,
    partition_date: dt.date | None,
    rows: Sequence[ChainRow],
    recorded_head: tuple[str, int] | None,
) -> tuple[tuple[str, int], list[ChainProblem]]:
    """Check one partition's rows (in chain order) against their hashes, links and head.

    Returns the head the stored record hashes chain to, and the problems found. Each break is
    reported once: after a break the walk resynchronises on the stored chain hash, and a row
    that sits outside the chain (its successor links past it) is reported as inserted.
    """
    problems: list[ChainProblem] = []

    def report(row: ChainRow | None, reason: ProblemReason, detail: str) -> None:
        label = row.record_key if row is not None else None
        if row is not None and row.label != row.record_key:
            detail = f"{row.label}: {detail}"
        problems.append(ChainProblem(table, connection, partition_date, label, reason, detail))

    for row in rows:
        if row.computed_hash != row.stored_hash:
            report(row, ProblemReason.RECORD_EDITED, "columns do not hash to the stored hash")

    genesis = genesis_digest(table, connection, partition_date)
    computed_head = genesis
    for row in rows:
        computed_head = link_digest(computed_head, row.stored_hash)
    head = (computed_head.hex(), len(rows))

    if table in CHAINED_TABLES:
        _walk_links(rows, genesis, recorded_head, report)
    _compare_head(rows, head, recorded_head, table in CHAINED_TABLES, report)
    return head, problems


def _links_from(previous: bytes, row: ChainRow) -> bool:
    return row.chain_hash == link_digest(previous, row.stored_hash).hex()


def _walk_links(rows: Sequence[ChainRow], genesis: bytes, recorded_head, report) -> None:
    previous = genesis
    expected_position = 0
    for index, row in enumerate(rows):
        if _links_from(previous, row):
            if row.chain_position != expected_position:
                report(
                    row,
                    ProblemReason.POSITION_MISMATCH,
                    f"chain_position {row.chain_position}, expected {expected_position}",
                )
            previous = link_digest(previous, row.stored_hash)
            expected_position += 1
            continue

        successor = rows[index + 1] if index + 1 < len(rows) else None
        surplus_at_tail = (
            successor is None and recorded_head is not None and len(rows) > recorded_head[1]
        )
        if (
            row.chain_position is None
            or row.chain_position < expected_position
            or (successor is not None and _links_from(previous, successor))
            or surplus_at_tail
        ):
            report(row, ProblemReason.RECORD_INSERTED, "row is not part of the partition's chain")
            continue

        gap = row.chain_position - expected_position
        if gap > 0:
            report(
                row,
                ProblemReason.RECORDS_DELETED,
                f"{gap} record(s) missing just before this one (chain positions "
                f"{expected_position}..{row.chain_position - 1})",
            )
        else:
            report(
                row,
                ProblemReason.BROKEN_LINK,
                "chain hash does not follow from the previous record: this record or its "
                "chain hash was rewritten, or a neighbour was replaced",
            )
        previous = _resync(row, previous)
        expected_position = row.chain_position + 1


def _resync(row: ChainRow, previous: bytes) -> bytes:
    try:
        return bytes.fromhex(row.chain_hash or "")
    except ValueError:
        return link_digest(previous, row.stored_hash)


# Limitation: a deleted tail is named by its partition, the number of records missing and
# the last record still there; the deleted keys themselves are only in an earlier bundle or
# in record_versions. The same holds for any deletion of master data, which has no per-row
# chain: only its head and count show it.
def _compare_head(rows, head, recorded_head, chained: bool, report) -> None:
    if recorded_head is None:
        if rows:
            report(None, ProblemReason.HEAD_MISSING, f"{len(rows)} record(s) but no chain head")
        return
    recorded_hash, recorded_count = recorded_head
    last = rows[-1] if rows else None
    last_position = -1 if last is None else last.chain_position

    if chained and len(rows) < recorded_count and last_position is not None:
        missing = recorded_count - last_position - 1
        if missing > 0:
            after = "(all of them)" if last is None else f"after record_key {last.label!r}"
            report(
                None,
                ProblemReason.TAIL_TRUNCATED,
                f"chain head records {recorded_count} record(s), {len(rows)} found: "
                f"{missing} missing {after}",
            )
            return
    if recorded_count != len(rows):
        report(
            None,
            ProblemReason.COUNT_MISMATCH,
            f"chain head records {recorded_count} record(s), {len(rows)} found",
        )
    elif head[0] != recorded_hash and not (
        chained and last is not None and last.chain_hash == recorded_hash
    ):
        # When the stored tail still matches, the broken link above already says where.
        report(
            None,
            ProblemReason.HEAD_MISMATCH,
            "records chain to a different head than chain_heads holds: chain rewritten",
        )


def _row_label(table: str, stored: Mapping[str, Any]) -> str:
    extra = CHAIN_ORDER_COLUMNS[table][1:]
    if not extra:
        return stored["record_key"]
    qualifiers = ", ".join(f"{column}={stored[column]}" for column in extra)
    return f"{stored['record_key']} ({qualifiers})"


def partition_rows(table: str, stored_rows: Sequence[Mapping[str, Any]]) -> list[ChainRow]:
    """ChainRows in chain order from stored rows (dicts with the table's columns)."""
    computed = record_hashes(list(stored_rows), table)
    order_columns = CHAIN_ORDER_COLUMNS[table]
    chained = table in CHAINED_TABLES
    rows = [
        ChainRow(
            tuple(str(stored[column]) for column in order_columns),
            stored["record_key"],
            _row_label(table, stored),
            stored["record_hash"],
            computed_hash,
            stored.get("chain_position") if chained else None,
            stored.get("chain_hash") if chained else None,
        )
        for stored, computed_hash in zip(stored_rows, computed, strict=True)
    ]
    # Python orders str by code point, which is the byte order of UTF-8: COLLATE "C".
    rows.sort(key=lambda row: row.sort_key)
    return rows


def partition_columns(table: str) -> list[str]:
    chain_columns = ["chain_position", "chain_hash"] if table in CHAINED_TABLES else []
    return [*HASHED_COLUMNS[table], "record_hash", *chain_columns]


def verify_partition(
    cursor, table: str, connection: str, partition_date: dt.date | None
) -> list[ChainProblem]:
    """Re-hash and re-link one partition; compare with its chain head and last audited head.

    Names the record and what is wrong: an edit (hash mismatch), an insert, a deletion or a
    rewritten neighbour (broken link), a truncated tail (count/head mismatch), or a head
    changed without an audit event. A whole chain rewritten consistently, head and audit
    included, is only caught against a seal: see `verifier.verify_database`.
    """
    check_table(table)
    columns = partition_columns(table)
    cursor.execute(
        sql.SQL("SELECT {} FROM {}.{} WHERE {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.Identifier(SCHEMA),
            sql.Identifier(table),
            _partition_filter(table, partition_date),
        ),
        {"connection": connection, "day": partition_date},
    )
    stored_rows = [dict(zip(columns, values, strict=True)) for values in cursor.fetchall()]
    recorded_head = read_head(cursor, table, connection, partition_date, for_update=False)
    _, problems = check_chain(
        table, connection, partition_date, partition_rows(table, stored_rows), recorded_head
    )

    audited = last_audited_head(cursor, table, connection, partition_date)
    if recorded_head is not None and audited != recorded_head:
        problems.append(
            ChainProblem(
                table,
                connection,
                partition_date,
                None,
                ProblemReason.HEAD_NOT_AUDITED,
                "chain head differs from the last audited head change"
                if audited
                else "chain head was never written through an audited rechain",
            )
        )
    return problems


def last_audited_head(
    cursor, table: str, connection: str, partition_date: dt.date | None
) -> tuple[str, int] | None:
    cursor.execute(
        "SELECT details->>'head', (details->>'record_count')::integer"
        " FROM erp_connector_service.audit_events"
        " WHERE event_type = 'chain_head_changed' AND connection = %s"
        " AND partition_date IS NOT DISTINCT FROM %s::date AND details->>'table' = %s"
        " ORDER BY id DESC LIMIT 1",
        (connection, partition_date, table),
    )
    found = cursor.fetchone()
    return (found[0], found[1]) if found else None
