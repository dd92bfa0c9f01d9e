"""Asset checks that guard integrity: chains verify, syncs are audited, counts reconcile, and
every spend line has a rate and a factor or a stated reason why not.

Chain checks are blocking: a partition whose stored records no longer verify stops the assets
downstream of it. Checks look at the days of the run's partition (or partition range); run on
their own, they look at every stored day.
"""

import datetime as dt

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)
from psycopg2 import sql

from erp_connector_dagster.provenance.chain import verify_partition
from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.storage.database import SCHEMA
from erp_connector_dagster.storage.writers import TABLES

CHAINED_ASSETS: dict[str, tuple[str, str]] = {
    "spend_records": ("spend_records", "transaction_date"),
    "purchase_orders": ("purchase_orders", "order_date"),
    "purchase_order_lines": ("purchase_order_lines", "order_date"),
    "inventory_snapshots": ("inventory_snapshots", "snapshot_date"),
    "scope3_emissions": ("emission_calculations", "transaction_date"),
}
SYNCED_KINDS: dict[str, RecordKind] = {
    "spend_records": RecordKind.SPEND,
    "purchase_orders": RecordKind.PURCHASE_ORDER,
    "purchase_order_lines": RecordKind.PURCHASE_ORDER_LINE,
    "inventory_snapshots": RecordKind.INVENTORY,
}
MAX_PROBLEMS_SHOWN = 50


def run_days(context: AssetCheckExecutionContext) -> tuple[dt.date, dt.date] | None:
    """The first and last day of the run's partitions, or None for a run without partitions."""
    tags = context.run.tags
    single = tags.get("dagster/partition")
    if single:
        day = dt.date.fromisoformat(single)
        return day, day
    start = tags.get("dagster/asset_partition_range_start")
    end = tags.get("dagster/asset_partition_range_end")
    if start and end:
        return dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return None


def _partitions(cursor, table: str, column: str, days) -> list[tuple[str, dt.date]]:
    query = sql.SQL("SELECT DISTINCT connection, {c} FROM {t}").format(
        c=sql.Identifier(column), t=sql.Identifier(SCHEMA, table)
    )
    params: tuple = ()
    if days is not None:
        query += sql.SQL(" WHERE {c} BETWEEN %s AND %s").format(c=sql.Identifier(column))
        params = days
    cursor.execute(query + sql.SQL(" ORDER BY 2, 1"), params)
    return cursor.fetchall()


def _chain_check(asset_name: str) -> AssetChecksDefinition:
    table, column = CHAINED_ASSETS[asset_name]

    @asset_check(
        asset=asset_name,
        name="hash_chain_verifies",
        blocking=True,
        required_resource_keys={"database"},
        description="Every record re-hashes to its stored hash and the partition chain links "
        "up to its audited head.",
    )
    def _check(context: AssetCheckExecutionContext) -> AssetCheckResult:
        problems = []
        with context.resources.database.transaction() as conn, conn.cursor() as cursor:
            partitions = _partitions(cursor, table, column, run_days(context))
            for connection, day in partitions:
                problems.extend(verify_partition(cursor, table, connection, day))
        return AssetCheckResult(
            passed=not problems,
            metadata={
                "partitions_verified": len(partitions),
                "problems": len(problems),
                "broken_records": MetadataValue.json(
                    [str(problem) for problem in problems[:MAX_PROBLEMS_SHOWN]]
                ),
            },
        )

    return _check


def _audit_check(asset_name: str) -> AssetChecksDefinition:
    kind = SYNCED_KINDS[asset_name]

    @asset_check(
        asset=asset_name,
        name="syncs_are_audited",
        blocking=True,
        required_resource_keys={"database"},
        description="Every sync job of this run has its start and end in the audit trail "
        "(the ERPAuditGap alert watches the same condition).",
    )
    def _check(context: AssetCheckExecutionContext) -> AssetCheckResult:
        with context.resources.database.transaction() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT j.id::text, j.connection FROM {SCHEMA}.sync_jobs j"
                " WHERE j.dagster_run_id = %s AND %s = ANY(j.kinds) AND ("
                f" NOT EXISTS (SELECT 1 FROM {SCHEMA}.audit_events e"
                "   WHERE e.sync_id = j.id AND e.event_type = 'sync_started')"
                " OR (j.status IN ('succeeded', 'failed') AND NOT EXISTS ("
                f"  SELECT 1 FROM {SCHEMA}.audit_events e WHERE e.sync_id = j.id"
                "   AND e.event_type IN ('sync_completed', 'sync_failed'))))",
                (context.run.run_id, kind.value),
            )
            unaudited = cursor.fetchall()
            cursor.execute(
                f"SELECT count(*) FROM {SCHEMA}.sync_jobs"
                " WHERE dagster_run_id = %s AND %s = ANY(kinds)",
                (context.run.run_id, kind.value),
            )
            jobs = cursor.fetchone()[0]
        return AssetCheckResult(
            passed=not unaudited,
            metadata={
                "sync_jobs": jobs,
                "unaudited_sync_jobs": MetadataValue.json([f"{c}:{j}" for j, c in unaudited]),
            },
        )

    return _check


def _reconcile_check(asset_name: str) -> AssetChecksDefinition:
    kind = SYNCED_KINDS[asset_name]
    spec = TABLES[kind]

    @asset_check(
        asset=asset_name,
        name="counts_reconcile_with_source",
        required_resource_keys={"database"},
        description="Rows stored per connection and day equal the records the ERP returned.",
    )
    def _check(context: AssetCheckExecutionContext) -> AssetCheckResult:
        mismatches = []
        with context.resources.database.transaction() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT connection, partition_start, (counts->>'received')::int"
                f" FROM {SCHEMA}.sync_jobs WHERE dagster_run_id = %s AND %s = ANY(kinds)"
                " AND status = 'succeeded' AND mode = 'full'",
                (context.run.run_id, kind.value),
            )
            jobs = cursor.fetchall()
            for connection, day, received in jobs:
                cursor.execute(
                    sql.SQL(
                        "SELECT count(*) FROM {} WHERE connection = %s AND {} = %s"
                        " AND NOT source_deleted"
                    ).format(
                        sql.Identifier(SCHEMA, spec.table),
                        sql.Identifier(spec.partition_column),
                    ),
                    (connection, day),
                )
                stored = cursor.fetchone()[0]
                if stored != received:
                    mismatches.append(f"{connection}/{day}: source {received}, stored {stored}")
        return AssetCheckResult(
            passed=not mismatches,
            severity=AssetCheckSeverity.ERROR,
            metadata={"reconciled_syncs": len(jobs), "mismatches": MetadataValue.json(mismatches)},
        )

    return _check


@asset_check(
    asset="scope3_emissions",
    name="every_line_has_rate_and_factor_or_reason",
    required_resource_keys={"database"},
    description="Every stored spend line has a current emission line with a rate and a factor, "
    "or a stated reason (excluded, unmapped, quarantined).",
)
def every_line_is_accounted_for(context: AssetCheckExecutionContext) -> AssetCheckResult:
    days = run_days(context)
    day_filter = "AND s.transaction_date BETWEEN %s AND %s" if days else ""
    with context.resources.database.transaction() as conn, conn.cursor() as cursor:
        cursor.execute(
            f"SELECT s.connection, s.transaction_date, s.record_key FROM {SCHEMA}.spend_records s"
            f" WHERE NOT s.source_deleted {day_filter}"
            f" AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.emission_lines e"
            "   WHERE e.connection = s.connection AND e.transaction_date = s.transaction_date"
            "   AND e.record_key = s.record_key AND (e.excluded_reason IS NOT NULL"
            "    OR e.mapping_rule = 'unmapped'"
            "    OR (e.fx_rate IS NOT NULL AND e.factor_value IS NOT NULL)))"
            f" AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.quarantine q"
            "   WHERE q.connection = s.connection AND q.partition_date = s.transaction_date"
            "   AND q.stage = 'methodology' AND q.source_id = s.record_key)"
            " ORDER BY 2, 1, 3 LIMIT 200",
            days or (),
        )
        unaccounted = cursor.fetchall()
    return AssetCheckResult(
        passed=not unaccounted,
        metadata={
            "unaccounted_lines": len(unaccounted),
            "examples": MetadataValue.json([f"{c}/{d}/{k}" for c, d, k in unaccounted[:20]]),
        },
    )


def build_checks() -> list[AssetChecksDefinition]:
    return [
        *(_chain_check(name) for name in CHAINED_ASSETS),
        *(_audit_check(name) for name in SYNCED_KINDS),
        *(_reconcile_check(name) for name in SYNCED_KINDS),
        every_line_is_accounted_for,
    ]
