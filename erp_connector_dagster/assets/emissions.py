"""Mapping and emission assets: vendor and material mappings, then Scope 3 emissions per line.

Each day's stored spend lines are mapped (which spend category, which material group, by which
rule), converted to USD, brought to the factor set's dollar year and multiplied by their
factor. Every emission row keeps the inputs it came from; lines that cannot be calculated go
to quarantine with the reason, and unmapped spend stays visible with no kgCO2e.
"""


import datetime as dt
import functools
import uuid
from collections.abc import Sequence
from decimal import Decimal

from dagster import AssetExecutionContext, AssetsDefinition, MaterializeResult, MetadataValue, asset
from psycopg2 import sql

from erp_connector_dagster.assets.records import partition_days
from erp_connector_dagster.methodology.emissions import (
    CalculationResult,
    MethodologyContext,
    calculate_emission_lines,
)
from erp_connector_dagster.partitions import backfill_policy, daily_partitions
from erp_connector_dagster.provenance.audit import record_audit_event
from erp_connector_dagster.provenance.canonical import record_hashes
from erp_connector_dagster.provenance.chain import rechain_partition
from erp_connector_dagster.records import RecordKind, RejectedRecord
from erp_connector_dagster.storage.database import SCHEMA
from erp_connector_dagster.storage.readers import read_records, stored_connections
from erp_connector_dagster.storage.writers import copy_rows, replace_quarantine

METHODOLOGY_GROUP = "scope3"
MAPPING_COLUMNS = {
    "vendor_mappings": ("connection", "mapping_date", "vendor_id", "naics_code", "mapping_rule",
                        "rule_detail"),
    "material_mappings": ("connection", "mapping_date", "material_id", "material_group",
                          "activity_factor", "factor_unit", "factor_source", "mapping_rule",
                          "rule_detail"),
}


@functools.lru_cache(maxsize=1)
def default_methodology() -> MethodologyContext:
    """Factor set, price index, rules and rate provider, loaded once per process."""
    return MethodologyContext.default()


def calculate_day(cursor, connection: str, day: dt.date) -> CalculationResult:
    """Run the methodology over one connection's stored spend lines of one day."""
    spend_records = read_records(cursor, RecordKind.SPEND, connection, day)
    vendors = {v.vendor_id: v for v in read_records(cursor, RecordKind.VENDOR, connection)}
    materials = {
        m.material_id: m for m in read_records(cursor, RecordKind.MATERIAL, connection)
    }
    return calculate_emission_lines(
        spend_records, vendors, materials, default_methodology()
    )


def _replace_mappings(cursor, table: str, connection: str, day: dt.date, mappings) -> int:
    cursor.execute(
        sql.SQL("DELETE FROM {} WHERE connection = %s AND mapping_date = %s").format(
            sql.Identifier(SCHEMA, table)
        ),
        (connection, day),
    )
    columns = MAPPING_COLUMNS[table]
    rows = []
    for mapping in mappings:
        values = mapping.model_dump()
        values["mapping_date"] = day
        rows.append({column: values.get(column) for column in columns})
    return copy_rows(cursor, f"{SCHEMA}.{table}", columns, rows) if rows else 0


def _store_emission_lines(cursor, connection, day, result: CalculationResult, sync_id) -> dict:
    rows = [line.model_dump() for line in result.lines]
    for row, digest in zip(rows, record_hashes(rows, "emission_calculations"), strict=False):
        row["record_hash"] = digest
        row["sync_id"] = str(sync_id)
        row["is_current"] = True
    versions = sorted({row["factor_version"] for row in rows})
    # Lines whose spend line disappeared stay, no longer current: nothing stored is lost.
    cursor.execute(
        sql.SQL(
            "UPDATE {} SET is_current = false WHERE connection = %s AND transaction_date = %s"
            " AND is_current AND NOT (record_key = ANY(%s) AND factor_version = ANY(%s))"
        ).format(sql.Identifier(SCHEMA, "emission_calculations")),
        (connection, day, [row["record_key"] for row in rows], versions),
    )
    retired = cursor.rowcount
    changed = 0
    if rows:
        columns = list(rows[0])
        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS stage_emissions"
                " (LIKE {} INCLUDING DEFAULTS)"
            ).format(sql.Identifier(SCHEMA, "emission_calculations"))
        )
        cursor.execute("TRUNCATE stage_emissions")
        copy_rows(cursor, "stage_emissions", columns, rows)
        keys = ("connection", "transaction_date", "record_key", "factor_version")
        cursor.execute(
            sql.SQL(
                "INSERT INTO {target} AS t ({columns}) SELECT {columns} FROM stage_emissions"
                " ON CONFLICT ({keys}) DO UPDATE SET {assignments}, calculated_at = now()"
                " WHERE t.record_hash <> EXCLUDED.record_hash OR NOT t.is_current"
            ).format(
                target=sql.Identifier(SCHEMA, "emission_calculations"),
                columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
                keys=sql.SQL(", ").join(map(sql.Identifier, keys)),
                assignments=sql.SQL(", ").join(
                    sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                    for c in columns if c not in keys
                ),
            )
        )
        changed = cursor.rowcount
    head = rechain_partition(
        cursor, "emission_calculations", connection, day, sync_id=str(sync_id)
    )
    return {"lines": len(rows), "written": changed, "retired": retired,
            "chain_head": head.head_hash}


def _summary(result: CalculationResult) -> dict[str, object]:
    kg_by_category: dict[str, Decimal] = {}
    for line in result.lines:
        label = f"category_{line.scope3_category}" if line.scope3_category else "excluded"
        kg_by_category[label] = kg_by_category.get(label, Decimal(0)) + (line.kgco2e or 0)
    return {
        "kgco2e_by_category": {k: float(v) for k, v in sorted(kg_by_category.items())},
        "unmapped_lines": sum(1 for line in result.lines if line.mapping_rule == "unmapped"),
        "quarantined": len(result.quarantined),
    }


def _rejects(result: CalculationResult, connection: str, day: dt.date) -> list[RejectedRecord]:
    return [
        RejectedRecord(
            connection=connection, kind=RecordKind.SPEND, source_id=item.record_key,
            reason=item.reason, payload=item.model_dump(mode="json"), partition_date=day,
        )
        for item in result.quarantined
    ]


def build_emission_assets() -> list[AssetsDefinition]:
    """Mapping and emission assets; they read what the sync assets stored."""

    def for_each_connection(context: AssetExecutionContext, store) -> dict[str, object]:
        metadata: dict[str, object] = {}
        total = 0
        with context.resources.database.transaction() as conn, conn.cursor() as cursor:
            for day in partition_days(context):
                for connection in stored_connections(cursor, RecordKind.SPEND, day):
                    result = calculate_day(cursor, connection, day)
                    summary = store(cursor, connection, day, result)
                    total += summary.pop("rows")
                    metadata[f"{connection}/{day}"] = summary
        return {"dagster/row_count": total, "partitions": MetadataValue.json(metadata)}

    common = dict(
        partitions_def=daily_partitions,
        backfill_policy=backfill_policy,
        required_resource_keys={"database"},
        group_name=METHODOLOGY_GROUP,
        kinds={"postgres"},
    )

    @asset(deps=["spend_records", "vendor_master"], **common,
           description="Spend category (NAICS-2017) of each vendor of the day, with its rule.")
    def vendor_mappings(context: AssetExecutionContext) -> MaterializeResult:
        def store(cursor, connection, day, result):
            rows = _replace_mappings(
                cursor, "vendor_mappings", connection, day, result.vendor_mappings
            )
            rules: dict[str, int] = {}
            for mapping in result.vendor_mappings:
                rules[mapping.mapping_rule] = rules.get(mapping.mapping_rule, 0) + 1
            return {"rows": rows, "by_rule": rules}

        return MaterializeResult(metadata=for_each_connection(context, store))

    @asset(deps=["spend_records", "purchase_order_lines", "material_master"], **common,
           description="Material group and activity factor of each material of the day.")
    def material_mappings(context: AssetExecutionContext) -> MaterializeResult:
        def store(cursor, connection, day, result):
            rows = _replace_mappings(
                cursor, "material_mappings", connection, day, result.material_mappings
            )
            return {"rows": rows}

        return MaterializeResult(metadata=for_each_connection(context, store))

    @asset(deps=["spend_records", "vendor_mappings", "material_mappings"], **common,
           description="kgCO2e per spend line, with the rate, index and factor it used.")
    def scope3_emissions(context: AssetExecutionContext) -> MaterializeResult:
        def store(cursor, connection, day, result):
            sync_id = uuid.uuid4()
            stored = _store_emission_lines(cursor, connection, day, result, sync_id)
            quarantined = replace_quarantine(
                cursor, connection, RecordKind.SPEND, "methodology", day,
                _rejects(result, connection, day), sync_id,
            )
            summary = {**_summary(result), **stored, "quarantined": quarantined}
            record_audit_event(
                cursor, "emissions_calculated", connection=connection, kind="emission",
                partition_date=day, sync_id=str(sync_id), details=summary,
            )
            return {"rows": stored["lines"], **summary}

        return MaterializeResult(metadata=for_each_connection(context, store))

    return [vendor_mappings, material_mappings, scope3_emissions]


__all__: Sequence[str] = ["build_emission_assets", "calculate_day"]
