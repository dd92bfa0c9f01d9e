"""Restatement with provenance: recalculate with a new factor version, then re-chain and audit.

`reference.factors.restate` writes the new rows and retires the old ones; this module hashes
them the way the chain does, re-hashes the retired rows (whether a row is current is part of
its hashed content), rebuilds the chain of every affected partition and records a
`restatement` audit event, all in one transaction. Old results stay queryable with
`is_current = false`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from erp_connector_dagster.provenance.audit import record_audit_event
from erp_connector_dagster.provenance.canonical import record_hash, record_hashes
from erp_connector_dagster.provenance.chain import rechain_partition
from erp_connector_dagster.provenance.seal import seal_heads, seal_key_from_env
from erp_connector_dagster.reference.factors import FactorSet, RestatementResult, restate
from erp_connector_dagster.storage.database import SCHEMA

TABLE = "emission_calculations"


def _current_row_hash(row: dict[str, Any]) -> str:
    return record_hash({**row, "is_current": True}, TABLE)


def restate_with_provenance(
    conn,
    factor_set: str | FactorSet,
    new_version: str,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> RestatementResult:
    """Restate current rows of a factor set to `new_version`; chains and audit trail follow."""
    try:
        result = restate(
            conn,
            factor_set,
            new_version,
            since,
            until,
            record_hasher=_current_row_hash,
            commit=False,
        )
        with conn.cursor() as cursor:
            partitions = _affected_partitions(cursor, result)
            for connection, day in partitions:
                _rehash_retired(cursor, connection, day)
                rechain_partition(cursor, TABLE, connection, day)
            record_audit_event(
                cursor,
                "restatement",
                kind="emission",
                details={
                    "factor_set": result.factor_set,
                    "new_version": result.new_version,
                    "previous_versions": result.previous_versions,
                    "since": since,
                    "until": until,
                    "rows_restated": result.rows_restated,
                    "rows_without_factor": result.rows_without_factor,
                    "kgco2e_before": result.kgco2e_before,
                    "kgco2e_after": result.kgco2e_after,
                    "partitions": len(partitions),
                },
            )
            seal_heads(cursor, seal_key_from_env())
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return result


def _affected_partitions(cursor, result: RestatementResult) -> list[tuple[str, dt.date]]:
    cursor.execute(
        f"SELECT DISTINCT connection, transaction_date FROM {SCHEMA}.{TABLE}"
        " WHERE factor_set = %s AND factor_version = %s AND chain_hash IS NULL"
        " ORDER BY 2, 1",
        (result.factor_set, result.new_version),
    )
    return cursor.fetchall()


def _rehash_retired(cursor, connection: str, day: dt.date) -> None:
    cursor.execute(
        f"SELECT * FROM {SCHEMA}.{TABLE} WHERE connection = %s AND transaction_date = %s"
        " AND NOT is_current",
        (connection, day),
    )
    names = [column.name for column in cursor.description]
    rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    for row, digest in zip(rows, record_hashes(rows, TABLE), strict=True):
        if digest != row["record_hash"]:
            cursor.execute(
                f"UPDATE {SCHEMA}.{TABLE} SET record_hash = %s WHERE connection = %s"
                " AND transaction_date = %s AND record_key = %s AND factor_version = %s",
                (digest, connection, day, row["record_key"], row["factor_version"]),
            )
