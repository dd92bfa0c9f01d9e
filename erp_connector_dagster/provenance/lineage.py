"""Lineage of one emission figure: from the kgCO2e back to the spend line, sync, rate and factor.

Reads the `emission_lineage` view (migration 0003) and completes it with what an auditor
asks next: whether the spend record still hashes to what the emission row names, where it
sits in its chain, which sync brought it and which audit events recorded that sync.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from erp_connector_dagster.provenance.canonical import record_hash
from erp_connector_dagster.provenance.chain import read_head
from erp_connector_dagster.provenance.tables import HASHED_COLUMNS


def _fetch_dicts(cursor) -> list[dict[str, Any]]:
    names = [column.name for column in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def _spend_record(cursor, connection: str, day: dt.date, record_key: str) -> dict | None:
    columns = [*HASHED_COLUMNS["spend_records"], "record_hash", "chain_position", "chain_hash"]
    cursor.execute(
        "SELECT " + ", ".join(columns) + ", sync_id, synced_at"
        " FROM erp_connector_service.spend_records"
        " WHERE connection = %s AND transaction_date = %s AND record_key = %s",
        (connection, day, record_key),
    )
    found = _fetch_dicts(cursor)
    return found[0] if found else None


def emission_lineage(
    cursor, connection: str, transaction_date: dt.date, record_key: str
) -> dict[str, Any]:
    """The path from an emission row (the current factor version first) to its sources.

    Raises LookupError when no emission row has that key.
    """
    cursor.execute(
        "SELECT * FROM erp_connector_service.emission_lineage"
        " WHERE connection = %s AND transaction_date = %s AND record_key = %s"
        " ORDER BY is_current DESC, factor_version DESC",
        (connection, transaction_date, record_key),
    )
    versions = _fetch_dicts(cursor)
    if not versions:
        raise LookupError(f"no emission row {connection}/{transaction_date}/{record_key}")
    emission = versions[0]

    spend = _spend_record(cursor, connection, transaction_date, record_key)
    spend_head = read_head(cursor, "spend_records", connection, transaction_date, for_update=False)
    sync_id = spend["sync_id"] if spend else None
    sync_job = None
    events: list[dict[str, Any]] = []
    if sync_id is not None:
        cursor.execute("SELECT * FROM erp_connector_service.sync_jobs WHERE id = %s", (sync_id,))
        jobs = _fetch_dicts(cursor)
        sync_job = jobs[0] if jobs else None
        cursor.execute(
            "SELECT id, event_type, connection, kind, partition_date, created_at, event_hash,"
            " details FROM erp_connector_service.audit_events WHERE sync_id = %s"
            " AND (partition_date IS NULL OR (connection = %s AND partition_date = %s))"
            " ORDER BY id",
            (sync_id, connection, transaction_date),
        )
        events = _fetch_dicts(cursor)

    return {
        "emission": {
            name: emission[name]
            for name in (
                "connection",
                "transaction_date",
                "record_key",
                "factor_version",
                "is_current",
                "method",
                "amount",
                "currency",
                "amount_usd",
                "kgco2e",
                "emission_record_hash",
                "emission_chain_position",
                "calculation_sync_id",
            )
        },
        "spend_record": None
        if spend is None
        else {
            "record_hash": spend["record_hash"],
            "hash_verified": record_hash(spend, "spend_records") == spend["record_hash"],
            "chain_position": spend["chain_position"],
            "chain_hash": spend["chain_hash"],
            "partition_head": spend_head[0] if spend_head else None,
            "partition_record_count": spend_head[1] if spend_head else None,
            "synced_at": spend["synced_at"],
        },
        "spend_record_hash": emission["spend_record_hash"],
        "spend_record_is_current": emission["spend_record_is_current"],
        "spend_version_superseded_at": emission["spend_version_superseded_at"],
        "sync": {"sync_id": sync_id, "job": sync_job, "audit_events": events},
        "rate": {
            "fx_rate": emission["fx_rate"],
            "fx_rate_date": emission["fx_rate_date"],
            "fx_provider": emission["fx_provider"],
        },
        "factor": {
            "set": emission["factor_set"],
            "version": emission["factor_version"],
            "code": emission["factor_code"],
            "value": emission["factor_value"],
            "unit": emission["factor_unit"],
        },
        "other_factor_versions": [
            {
                "factor_version": row["factor_version"],
                "is_current": row["is_current"],
                "kgco2e": row["kgco2e"],
            }
            for row in versions[1:]
        ],
    }
