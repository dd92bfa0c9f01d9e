"""HMAC seals over the chain heads and the audit chain, with a key the database never sees.

A chain alone cannot show a deleted tail, nor a chain rewritten end to end by someone with
write access. A seal can: it binds, under HMAC-SHA256 with the key from
ERP_CONNECTOR_SEAL_KEY, the digest of every partition's (head, count), the heads changed
since the previous seal (stored in clear in `scope`, so a verifier can name a partition), the
audit chain's head at that moment, and the previous seal's HMAC (so seals form a chain too).

Without a key nothing is sealed: a `seal_skipped` audit event and a warning say so, and the
verifier reports the database as unsealed. The pipeline carries on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from erp_connector_dagster.provenance.audit import (
    AUDIT_GENESIS,
    append_audit_event,
    lock_audit_chain,
)
from erp_connector_dagster.provenance.canonical import canonical_bytes, encode_canonical
from erp_connector_dagster.settings import SEAL_KEY_ENV

logger = logging.getLogger(__name__)

SEAL_DOMAIN = b"erp-connector-seal/v1\x00"
HEADS_PREFIX = b"\x04"
MIN_KEY_BYTES = 16

# (table, connection, partition date as YYYY-MM-DD or None, head hash, record count)
HeadEntry = tuple[str, str, str | None, str, int]


@dataclass(frozen=True)
class Seal:
    """The outcome of `seal_heads`: a stored seal, or the reason there is none."""

    sealed: bool
    seal_id: int | None = None
    sealed_at: dt.datetime | None = None
    audit_event_id: int = 0
    audit_head: str = AUDIT_GENESIS
    heads_digest: str | None = None
    partition_count: int = 0
    record_count: int = 0
    changed_partitions: int = 0
    hmac: str | None = None
    reason: str | None = None


def seal_key_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The seal key from ERP_CONNECTOR_SEAL_KEY, or None when it is not set."""
    value = (environ if environ is not None else os.environ).get(SEAL_KEY_ENV, "")
    return value.encode("utf-8") if value else None


def _checked_key(key: bytes) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        # The message names the variable, never the value.
        raise ValueError(f"{SEAL_KEY_ENV} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def head_entry(
    table: str, connection: str, partition_date: dt.date | str | None, head: str, count: int
) -> HeadEntry:
    day = partition_date.isoformat() if isinstance(partition_date, dt.date) else partition_date
    return (table, connection, day, head, int(count))


def _entry_order(entry: HeadEntry) -> tuple[str, str, str]:
    return (entry[0], entry[1], entry[2] or "")


def heads_digest(entries: Iterable[HeadEntry]) -> str:
    """Digest of a set of partition heads, independent of the order they are given in."""
    digest = hashlib.sha256(HEADS_PREFIX)
    for entry in sorted(entries, key=_entry_order):
        digest.update(encode_canonical(list(entry)) + b"\n")
    return digest.hexdigest()


def seal_message(seal: Mapping[str, Any]) -> bytes:
    """The bytes an HMAC seal covers, from a seals row (database or bundle)."""
    covered = {
        "seal_id": seal["id"],
        "sealed_at": seal["sealed_at"],
        "audit_event_id": seal["audit_event_id"],
        "audit_head": seal["audit_head"],
        "heads_digest": seal["heads_digest"],
        "changed_digest": seal["changed_digest"],
        "partition_count": seal["partition_count"],
        "record_count": seal["record_count"],
        "previous_hmac": seal["previous_hmac"],
    }
    return SEAL_DOMAIN + canonical_bytes(covered)


def seal_hmac(key: bytes, seal: Mapping[str, Any]) -> str:
    return hmac.new(key, seal_message(seal), hashlib.sha256).hexdigest()


_warned_reasons: set[str] = set()


def _skip(cursor, reason: str) -> Seal:
    # Every skip is an audit event; the log says it once per process, not once per sync.
    if reason not in _warned_reasons:
        _warned_reasons.add(reason)
        logger.warning("chain heads not sealed: %s", reason)
    append_audit_event(cursor, "seal_skipped", details={"reason": reason})
    return Seal(sealed=False, reason=reason)


def seal_heads(cursor, key: bytes | None) -> Seal:
    """Seal the current chain heads and audit head into `seals`, in the caller's transaction.

    Takes the audit lock first, so no audited head change can slip between reading the heads
    and sealing them. Appends a `seal` audit event after the seal row.
    """
    if not key:
        return _skip(cursor, f"no seal key configured ({SEAL_KEY_ENV} is not set)")
    key = _checked_key(key)

    lock_audit_chain(cursor)
    cursor.execute(
        "SELECT id, event_hash FROM erp_connector_service.audit_events ORDER BY id DESC LIMIT 1"
    )
    audit_event_id, audit_head = cursor.fetchone() or (0, AUDIT_GENESIS)
    cursor.execute(
        "SELECT hmac, audit_event_id FROM erp_connector_service.seals ORDER BY id DESC LIMIT 1"
    )
    previous_hmac, previously_sealed_through = cursor.fetchone() or (None, -1)

    cursor.execute(
        "SELECT table_name, connection, partition_date, head_hash, record_count, audit_event_id"
        " FROM erp_connector_service.chain_heads"
    )
    entries: list[HeadEntry] = []
    changed: list[HeadEntry] = []
    for table, connection, day, head, count, event_id in cursor:
        entry = head_entry(table, connection, day, head, count)
        entries.append(entry)
        if event_id is None or event_id > previously_sealed_through:
            changed.append(entry)
    changed.sort(key=_entry_order)

    cursor.execute(
        "SELECT nextval(pg_get_serial_sequence('erp_connector_service.seals', 'id')),"
        " clock_timestamp()"
    )
    seal_id, sealed_at = cursor.fetchone()
    row = {
        "id": seal_id,
        "sealed_at": sealed_at,
        "audit_event_id": audit_event_id,
        "audit_head": audit_head,
        "heads_digest": heads_digest(entries),
        "changed_digest": heads_digest(changed),
        "partition_count": len(entries),
        "record_count": sum(entry[4] for entry in entries),
        "previous_hmac": previous_hmac,
    }
    row["hmac"] = seal_hmac(key, row)
    scope = {"changed": [list(entry) for entry in changed], **_scope_summary(entries)}
    cursor.execute(
        "INSERT INTO erp_connector_service.seals (id, sealed_at, audit_event_id, audit_head,"
        " heads_digest, changed_digest, partition_count, record_count, previous_hmac, hmac,"
        " scope) VALUES (%(id)s, %(sealed_at)s, %(audit_event_id)s, %(audit_head)s,"
        " %(heads_digest)s, %(changed_digest)s, %(partition_count)s, %(record_count)s,"
        " %(previous_hmac)s, %(hmac)s, %(scope)s::jsonb)",
        {**row, "scope": encode_canonical(scope).decode("utf-8")},
    )
    append_audit_event(
        cursor,
        "seal",
        details={
            "seal_id": seal_id,
            "hmac": row["hmac"],
            "audit_event_id": audit_event_id,
            "heads_digest": row["heads_digest"],
            "partitions": row["partition_count"],
            "records": row["record_count"],
        },
    )
    logger.info(
        "sealed %d chain heads (%d changed) through audit event %d as seal %d",
        len(entries),
        len(changed),
        audit_event_id,
        seal_id,
    )
    return Seal(
        sealed=True,
        seal_id=seal_id,
        sealed_at=sealed_at,
        audit_event_id=audit_event_id,
        audit_head=audit_head,
        heads_digest=row["heads_digest"],
        partition_count=row["partition_count"],
        record_count=row["record_count"],
        changed_partitions=len(changed),
        hmac=row["hmac"],
    )


def _scope_summary(entries: list[HeadEntry]) -> dict[str, Any]:
    tables: dict[str, dict[str, int]] = {}
    for table, _, _, _, count in entries:
        summary = tables.setdefault(table, {"partitions": 0, "records": 0})
        summary["partitions"] += 1
        summary["records"] += count
    return {"tables": tables}
