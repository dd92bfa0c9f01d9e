"""Append-only audit events that form their own hash chain.

Each event hashes its content (id, type, connection, kind, partition date, sync id, details,
creation time) as a leaf and links it to the previous event's hash, like the record chains.
Appends are serialized with a transaction-scoped advisory lock, and `prev_hash` is unique in
the table, so two writers can never fork the chain: the loser of a race fails instead.
Migration 0003 refuses UPDATE, DELETE and TRUNCATE on the table; if an owner disables that
trigger, the chain still shows the edit, and a seal shows a consistent rewrite.

Call it inside the transaction that writes what the event describes, in READ COMMITTED (the
default). The lock is held until that transaction ends, so provenance writes of concurrent
transactions run one after the other from their first audited step to their commit: keep
such transactions short, and take every other lock (rows, `chain.lock_partition`) before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from erp_connector_dagster.provenance.canonical import (
    GENESIS_PREFIX,
    LEAF_PREFIX,
    LINK_PREFIX,
    canonical_bytes,
    canonical_value,
)

logger = logging.getLogger(__name__)

EVENT_TYPES: frozenset[str] = frozenset(
    {
        "sync_started",
        "sync_completed",
        "sync_failed",
        "records_written",
        "records_quarantined",
        "emissions_calculated",
        "mapping_changed",
        "restatement",
        "chain_head_changed",
        "seal",
        "seal_skipped",
        "verification",
    }
)

# pg_advisory_xact_lock(bigint) key of the audit chain ("ERAUDIT1").
AUDIT_LOCK_KEY = 0x4552415544495431

AUDIT_GENESIS = hashlib.sha256(
    GENESIS_PREFIX + canonical_bytes({"chain": "erp_connector_service.audit_events"})
).hexdigest()

HASHED_EVENT_FIELDS = (
    "id",
    "event_type",
    "connection",
    "kind",
    "partition_date",
    "sync_id",
    "details",
    "created_at",
)


def audit_event_hash(prev_hash: str, event: Mapping[str, Any]) -> str:
    """Hex hash of an event linked to its predecessor's hash."""
    content = {name: event[name] for name in HASHED_EVENT_FIELDS}
    leaf = hashlib.sha256(LEAF_PREFIX + canonical_bytes(content)).digest()
    return hashlib.sha256(LINK_PREFIX + bytes.fromhex(prev_hash) + leaf).hexdigest()


# Limitation: one linear audit chain means one writer at a time from its first audited step
# to its commit; with very many concurrent partition writers this lock is the ceiling.
def lock_audit_chain(cursor) -> None:
    """Take the audit chain's lock until the transaction ends (re-entrant within it)."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK_KEY,))


def _normalized_sync_id(sync_id: Any) -> str | None:
    # PostgreSQL prints uuids lower-case with hyphens; hash what it will give back.
    return None if sync_id is None else str(uuid.UUID(str(sync_id)))


def _checked_partition_date(partition_date: Any) -> dt.date | None:
    if partition_date is None:
        return None
    if isinstance(partition_date, dt.datetime) or not isinstance(partition_date, dt.date):
        raise TypeError("partition_date must be a datetime.date")
    return partition_date


def append_audit_event(
    cursor,
    event_type: str,
    *,
    connection: str | None = None,
    kind: Any = None,
    partition_date: dt.date | None = None,
    sync_id: Any = None,
    details: Mapping[str, Any],
) -> tuple[int, str]:
    """Append one event to the audit chain; returns its id and hash."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown audit event type {event_type!r}")
    if not isinstance(details, Mapping):
        raise TypeError("details must be a mapping")
    event = {
        "event_type": event_type,
        "connection": connection,
        "kind": canonical_value(kind),
        "partition_date": _checked_partition_date(partition_date),
        "sync_id": _normalized_sync_id(sync_id),
        "details": canonical_value(dict(details)),
    }

    lock_audit_chain(cursor)
    cursor.execute(
        "SELECT event_hash FROM erp_connector_service.audit_events ORDER BY id DESC LIMIT 1"
    )
    last = cursor.fetchone()
    prev_hash = last[0] if last else AUDIT_GENESIS
    cursor.execute(
        "SELECT nextval(pg_get_serial_sequence('erp_connector_service.audit_events', 'id')),"
        " clock_timestamp()"
    )
    event["id"], event["created_at"] = cursor.fetchone()
    event_hash = audit_event_hash(prev_hash, event)

    cursor.execute(
        "INSERT INTO erp_connector_service.audit_events (id, event_type, connection, kind,"
        " partition_date, sync_id, details, created_at, prev_hash, event_hash)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)",
        (
            event["id"],
            event_type,
            connection,
            event["kind"],
            event["partition_date"],
            event["sync_id"],
            canonical_bytes(event["details"]).decode("utf-8"),
            event["created_at"],
            prev_hash,
            event_hash,
        ),
    )
    logger.debug("audit event %s #%s appended", event_type, event["id"])
    return event["id"], event_hash


def record_audit_event(
    cursor,
    event_type: str,
    *,
    connection: str | None = None,
    kind: Any = None,
    partition_date: dt.date | None = None,
    sync_id: Any = None,
    details: Mapping[str, Any],
) -> str:
    """Append one event to the audit chain in the caller's transaction; returns its hash.

    `details` may hold any value the canonical form accepts (Decimal, dates, enums...); it is
    stored as its canonical JSON, so what is read back hashes the same.
    """
    _, event_hash = append_audit_event(
        cursor,
        event_type,
        connection=connection,
        kind=kind,
        partition_date=partition_date,
        sync_id=sync_id,
        details=details,
    )
    return event_hash


@dataclass
class AuditChainWalk:
    """Checks events one by one in id order; remembers the recomputed chain at checkpoints.

    Two chains are followed: the stored one (each event must name its stored predecessor and
    hash correctly from it) and the recomputed one (from genesis over the content alone). A
    seal holds the recomputed value at its checkpoint, so a consistent rewrite shows there.
    """

    checkpoints: set[int] = field(default_factory=set)
    recomputed_at: dict[int, str] = field(default_factory=dict)
    problems: list[tuple[int, str, str]] = field(default_factory=list)  # id, reason, detail
    last_id: int = 0
    last_hash: str = AUDIT_GENESIS
    count: int = 0
    _recomputed: str = AUDIT_GENESIS

    def add(self, event: Mapping[str, Any]) -> None:
        event_id = event["id"]
        if event["prev_hash"] != self.last_hash:
            self.problems.append(
                (
                    event_id,
                    "audit_link_broken",
                    f"event {event_id} does not follow event {self.last_id}: "
                    "events were removed, inserted or reordered before it",
                )
            )
        try:
            expected = audit_event_hash(event["prev_hash"], event)
        except (TypeError, ValueError) as error:
            expected = f"unhashable: {error}"
        if expected != event["event_hash"]:
            self.problems.append(
                (event_id, "audit_event_edited", f"event {event_id} content was changed")
            )
        try:
            self._recomputed = audit_event_hash(self._recomputed, event)
        except (TypeError, ValueError):
            self._recomputed = hashlib.sha256(self._recomputed.encode()).hexdigest()
        if event_id in self.checkpoints:
            self.recomputed_at[event_id] = self._recomputed
        self.last_id, self.last_hash = event_id, event["event_hash"]
        self.count += 1

    def recomputed_head(self, event_id: int) -> str | None:
        """The chain recomputed from content up to `event_id` (genesis for 0)."""
        if event_id == 0:
            return AUDIT_GENESIS
        return self.recomputed_at.get(event_id)


def walk_audit_chain(events: Iterable[Mapping[str, Any]], checkpoints: set[int]) -> AuditChainWalk:
    walk = AuditChainWalk(checkpoints=set(checkpoints))
    for event in events:
        walk.add(event)
    return walk
