"""Mapping and emission assets: vendor and material mappings, then Scope 3 emissions per line.

Each day's stored spend lines are mapped (which spend category, which material group, by which
rule), converted to USD, brought to the factor set's dollar year and multiplied by their
factor. Every emission row keeps the inputs it came from; lines that cannot be calculated go
to quarantine with the reason, and unmapped spend stays visible with no kgCO2e.
"""

import datetime as dt
import functools
import json
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
from erp_connector_dagster.provenance.lineage import emission_lineage
from erp_connector_dagster.provenance.seal import seal_heads, seal_key_from_env
from erp_connector_dagster.records import RecordKind, RejectedRecord
from erp_connector_dagster.reference.factors import (
    DEFAULT_FACTOR_SET,
    DEFAULT_FACTOR_VERSION,
    load_stored_factor_set,
)
from erp_connector_dagster.storage.database import SCHEMA
from erp_connector_dagster.storage.readers import read_records, stored_connections
from erp_connector_dagster.storage.writers import copy_rows, replace_quarantine

METHODOLOGY_GROUP = "scope3"
MAPPING_COLUMNS = {
    "vendor_mappings": (
        "connection",
        "mapping_date",
        "vendor_id",
        "naics_code",
        "mapping_rule",
        "rule_detail",
    ),
    "material_mappings": (
        "connection",
        "mapping_date",
        "material_id",
        "material_group",
        "activity_factor",
        "factor_unit",
        "factor_source",
        "mapping_rule",
        "rule_detail",
    ),
}


@functools.lru_cache(maxsize=1)
def shipped_methodology() -> MethodologyContext:
    """Factor set, price index, rules and rate provider as shipped, loaded once per process."""
    return MethodologyContext.default()


_restated_methodologies: dict[str, MethodologyContext] = {}


def methodology_for(cursor) -> MethodologyContext:
    """The shipped methodology, or the same with the latest stored (restated) factor version."""
    version = active_factor_version(cursor)
    if version is None:
        return shipped_methodology()
    if version not in _restated_methodologies:
        factor_set = load_stored_factor_set(cursor.connection, DEFAULT_FACTOR_SET, version)
        _restated_methodologies[version] = MethodologyContext.default(factor_set=factor_set)
    return _restated_methodologies[version]


def active_factor_version(cursor) -> str | None:
    """The latest stored version of the default factor set when it is not the shipped one.

    After a restatement to a new version, re-materialized partitions use that version too, so
    a routine re-run does not quietly bring back the old factors.
    """
    cursor.execute(
        f"SELECT factor_version FROM {SCHEMA}.factor_sets WHERE factor_set = %s"
        " ORDER BY loaded_at DESC LIMIT 1",
        (DEFAULT_FACTOR_SET,),
    )
    row = cursor.fetchone()
    if row is None or row[0] == DEFAULT_FACTOR_VERSION:
        return None
    return row[0]


def calculate_day(cursor, connection: str, day: dt.date) -> CalculationResult:
    """Run the methodology over one connection's stored spend lines of one day."""
    spend_records = read_records(cursor, RecordKind.SPEND, connection, day)
    vendors = {v.vendor_id: v for v in read_records(cursor, RecordKind.VENDOR, connection)}
    materials = {m.material_id: m for m in read_records(cursor, RecordKind.MATERIAL, connection)}
    return calculate_emission_lines(spend_records, vendors, materials, methodology_for(cursor))


def _replace_mappings(cursor, table: str, connection: str, day: dt.date, mappings) -> int:
    """Replace a day's mappings; a change of any mapping is written to the audit trail."""
    columns = MAPPING_COLUMNS[table]
    target = sql.Identifier(SCHEMA, table)
    compared = sql.SQL(", ").join(map(sql.Identifier, columns[2:]))
    cursor.execute(
        sql.SQL("SELECT {} FROM {} WHERE connection = %s AND mapping_date = %s").format(
            compared, target
        ),
        (connection, day),
    )
    before = {tuple(row) for row in cursor.fetchall()}
    rows = []
    for mapping in mappings:
        values = {**mapping.model_dump(), "mapping_date": day}
        rows.append({column: values.get(column) for column in columns})
    after = {tuple(row[column] for column in columns[2:]) for row in rows}
    if before == after:
        return len(rows)

    cursor.execute(
        sql.SQL("DELETE FROM {} WHERE connection = %s AND mapping_date = %s").format(target),
        (connection, day),
    )
    if rows:
        copy_rows(cursor, f"{SCHEMA}.{table}", columns, rows)
    if before:
        changed = sorted(str(key[0]) for key in before ^ after)
        record_audit_event(
            cursor,
            "mapping_changed",
            connection=connection,
            kind=table,
            partition_date=day,
            details={"table": table, "changed": len(set(changed)), "keys": changed[:50]},
        )
    return len(rows)


def _spend_hashes(cursor, connection: str, day: dt.date) -> dict[str, str]:
    cursor.execute(
        sql.SQL(
            "SELECT record_key, record_hash FROM {} WHERE connection = %s AND transaction_date = %s"
        ).format(sql.Identifier(SCHEMA, "spend_records")),
        (connection, day),
    )
    return dict(cursor.fetchall())


def _retire(cursor, connection: str, day: dt.date, keep: list[tuple[str, str]]) -> int:
    """Mark current rows not in `keep` as no longer current, re-hashing them (the flag is
    part of the hashed record). They stay queryable: nothing stored is lost."""
    table = sql.Identifier(SCHEMA, "emission_calculations")
    cursor.execute(
        sql.SQL(
            "SELECT * FROM {} WHERE connection = %s AND transaction_date = %s AND is_current"
        ).format(table),
        (connection, day),
    )
    names = [column.name for column in cursor.description]
    kept = set(keep)
    retired = [
        {**row, "is_current": False}
        for row in (dict(zip(names, values, strict=True)) for values in cursor.fetchall())
        if (row["record_key"], row["factor_version"]) not in kept
    ]
    for row, digest in zip(retired, record_hashes(retired, "emission_calculations"), strict=True):
        cursor.execute(
            sql.SQL(
                "UPDATE {} SET is_current = false, record_hash = %s WHERE connection = %s"
                " AND transaction_date = %s AND record_key = %s AND factor_version = %s"
            ).format(table),
            (digest, connection, day, row["record_key"], row["factor_version"]),
        )
    return len(retired)


def _store_emission_lines(cursor, connection, day, result: CalculationResult, sync_id) -> dict:
    spend_hashes = _spend_hashes(cursor, connection, day)
    rows = []
    for line in result.lines:
        row = line.model_dump()
        row["is_current"] = True
        row["spend_record_hash"] = spend_hashes.get(line.record_key)
        row["sync_id"] = str(sync_id)
        rows.append(row)
    hashes = record_hashes(rows, "emission_calculations")
    for row, digest in zip(rows, hashes, strict=True):
        row["record_hash"] = digest
    retired = _retire(
        cursor, connection, day, [(row["record_key"], row["factor_version"]) for row in rows]
    )
    changed = 0
    if rows:
        columns = list(rows[0])
        cursor.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS stage_emissions (LIKE {} INCLUDING DEFAULTS)"
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
                    for c in columns
                    if c not in keys
                ),
            )
        )
        changed = cursor.rowcount
    head = rechain_partition(cursor, "emission_calculations", connection, day, sync_id=str(sync_id))
    return {
        "lines": len(rows),
        "written": changed,
        "retired": retired,
        "chain_head": head.head_hash,
    }


def _summary(result: CalculationResult) -> dict[str, object]:
    """kgCO2e of a day by category, method, data quality and vendor, for asset metadata."""

    def total_by(label_of) -> dict[str, float]:
        totals: dict[str, Decimal] = {}
        for line in result.lines:
            label = label_of(line)
            totals[label] = totals.get(label, Decimal(0)) + (line.kgco2e or Decimal(0))
        return {label: float(kg) for label, kg in sorted(totals.items())}

    by_vendor = total_by(lambda line: line.vendor_id or "none")
    top_vendors = dict(sorted(by_vendor.items(), key=lambda item: -abs(item[1]))[:10])
    return {
        "kgco2e": float(result.total_kgco2e),
        "kgco2e_by_category": total_by(
            lambda line: f"category_{line.scope3_category}" if line.scope3_category else "excluded"
        ),
        "kgco2e_by_method": total_by(lambda line: line.method),
        "kgco2e_by_data_quality": total_by(lambda line: f"dq_{line.data_quality_score or 'na'}"),
        "kgco2e_top_vendors": top_vendors,
        "unmapped_lines": len(result.unmapped_lines),
        "unmapped_amount_usd": float(result.unmapped_amount_usd),
        "quarantined": len(result.quarantined),
    }


def _rejects(result: CalculationResult, connection: str, day: dt.date) -> list[RejectedRecord]:
    return [
        RejectedRecord(
            connection=connection,
            kind=RecordKind.SPEND,
            source_id=item.record_key,
            reason=item.reason,
            payload=item.model_dump(mode="json"),
            partition_date=day,
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

    @asset(
        deps=["spend_records", "vendor_master"],
        **common,
        description="Spend category (NAICS-2017) of each vendor of the day, with its rule.",
    )
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

    @asset(
        deps=["spend_records", "purchase_order_lines", "material_master"],
        **common,
        description="Material group and activity factor of each material of the day.",
    )
    def material_mappings(context: AssetExecutionContext) -> MaterializeResult:
        def store(cursor, connection, day, result):
            rows = _replace_mappings(
                cursor, "material_mappings", connection, day, result.material_mappings
            )
            return {"rows": rows}

        return MaterializeResult(metadata=for_each_connection(context, store))

    @asset(
        deps=["spend_records", "vendor_mappings", "material_mappings"],
        **common,
        description="kgCO2e per spend line, with the rate, index and factor it used.",
    )
    def scope3_emissions(context: AssetExecutionContext) -> MaterializeResult:
        def store(cursor, connection, day, result):
            sync_id = uuid.uuid4()
            stored = _store_emission_lines(cursor, connection, day, result, sync_id)
            quarantined = replace_quarantine(
                cursor,
                connection,
                RecordKind.SPEND,
                "methodology",
                day,
                _rejects(result, connection, day),
                sync_id,
            )
            summary = {**_summary(result), **stored, "quarantined": quarantined}
            record_audit_event(
                cursor,
                "emissions_calculated",
                connection=connection,
                kind="emission",
                partition_date=day,
                sync_id=str(sync_id),
                details=summary,
            )
            if result.quarantined:
                record_audit_event(
                    cursor,
                    "records_quarantined",
                    connection=connection,
                    kind="spend",
                    partition_date=day,
                    sync_id=str(sync_id),
                    details={
                        "stage": "methodology",
                        "count": len(result.quarantined),
                        "reasons": sorted({item.reason for item in result.quarantined}),
                    },
                )
            seal_heads(cursor, seal_key_from_env())
            if result.lines:
                # One worked example per partition for auditors: the path from an emission row
                # back to its ERP document, rate, factor and sync (view emission_lineage).
                lineage = emission_lineage(cursor, connection, day, result.lines[0].record_key)
                summary["lineage_example"] = json.loads(json.dumps(lineage, default=str))
            return {"rows": stored["lines"], **summary}

        return MaterializeResult(metadata=for_each_connection(context, store))

    return [vendor_mappings, material_mappings, scope3_emissions]


__all__: Sequence[str] = ["build_emission_assets", "calculate_day"]
