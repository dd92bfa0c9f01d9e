"""The demo: the whole pipeline on the embedded defaults, with a summary a person can read.

It serves the sandbox ERP connections on loopback, uses the configured database (or the
embedded PostgreSQL when none is set), materializes every asset for the most recent sandbox
days through Dagster, and summarises what was stored.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg2
from dagster import AssetSelection, DagsterInstance, materialize
from tqdm import tqdm

from erp_connector_dagster.definitions import build_definitions
from erp_connector_dagster.provenance.seal import seal_key_from_env
from erp_connector_dagster.provenance.verifier import verify_database
from erp_connector_dagster.sandbox.server import SandboxServer, sandbox_connections
from erp_connector_dagster.settings import SEAL_KEY_ENV, data_dir
from erp_connector_dagster.storage import database
from erp_connector_dagster.storage.schema import migrate

RECORD_TABLES = {
    "spend lines": ("spend_records", "transaction_date"),
    "purchase orders": ("purchase_orders", "order_date"),
    "purchase order lines": ("purchase_order_lines", "order_date"),
    "inventory snapshots": ("inventory_snapshots", "snapshot_date"),
}


@dataclass
class DemoSummary:
    """What the demo stored, for the closing printout."""

    first_day: dt.date
    last_day: dt.date
    connections: list[str]
    records: dict[str, int] = field(default_factory=dict)
    master_data: dict[str, int] = field(default_factory=dict)
    spend_usd: Decimal = Decimal(0)
    unmapped_spend_usd: Decimal = Decimal(0)
    kgco2e_by_category: dict[str, Decimal] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    verification: str = ""
    seal_key_source: str = ""

    def render(self) -> str:
        lines = [
            f"ERP connector demo: {self.first_day} .. {self.last_day}, "
            f"connections: {', '.join(self.connections)}",
            "",
            "records synced:",
        ]
        lines += [f"  {kind:24} {count:>10,}" for kind, count in self.master_data.items()]
        lines += [f"  {kind:24} {count:>10,}" for kind, count in self.records.items()]
        lines += ["", f"spend in USD:              {self.spend_usd:>16,.2f}"]
        lines += [f"  of which unmapped:       {self.unmapped_spend_usd:>16,.2f}", ""]
        lines.append("kgCO2e by Scope 3 category:")
        lines += [
            f"  {category:24} {kg:>16,.1f}" for category, kg in self.kgco2e_by_category.items()
        ] or ["  (none)"]
        total = sum(self.kgco2e_by_category.values(), Decimal(0))
        lines += [f"  {'total':24} {total:>16,.1f}", "", "quarantined records:"]
        lines += [f"  {count:>5}  {reason}" for reason, count in self.quarantined.items()] or [
            "  (none)"
        ]
        lines += [
            "",
            f"provenance: erp-connector verify -> {self.verification}"
            f" (seal key from {self.seal_key_source})",
        ]
        return "\n".join(lines)


def run_demo(
    days: int = 10, *, progress: bool = False, database_url: str | None = None
) -> DemoSummary:
    """Materialize every asset for the last `days` sandbox days; return the summary."""
    url = database_url or database.database_url()
    migrate(url)
    configured_key = os.environ.get(SEAL_KEY_ENV)
    seal_key_source = ensure_demo_seal_key()
    try:
        return _run(url, days, progress, seal_key_source)
    finally:
        if configured_key is None:
            os.environ.pop(SEAL_KEY_ENV, None)


def _run(url: str, days: int, progress: bool, seal_key_source: str) -> DemoSummary:
    """Serve the sandbox, materialize master data then each day, summarize and verify."""
    with SandboxServer(sandbox_connections(), database_url=url) as server:
        connections = server.connection_configs()
        definitions = build_definitions(connections, database_url=url)
        assets = list(definitions.assets or [])
        checks = list(definitions.asset_checks or [])
        resources = definitions.resources or {}
        last_day = min(c.company.end for c in server.connections.values())
        day_range = [last_day - dt.timedelta(days=offset) for offset in range(days - 1, -1, -1)]
        instance = DagsterInstance.ephemeral()
        # Dagster's own step-by-step log would bury the progress bar and the summary.
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

        unpartitioned = [a.key for a in assets if not a.partitions_def]
        partitioned = [a.key for a in assets if a.partitions_def]
        steps = tqdm(
            total=len(day_range) + 1, disable=not progress, desc="materializing", unit="step"
        )
        _check(
            materialize(
                [*assets, *checks],
                selection=AssetSelection.keys(*unpartitioned),
                resources=resources,
                instance=instance,
                run_config=quiet,
            )
        )
        steps.update()
        for day in day_range:
            steps.set_postfix_str(day.isoformat())
            _check(
                materialize(
                    [*assets, *checks],
                    selection=AssetSelection.keys(*partitioned)
                    | AssetSelection.checks_for_assets(*partitioned),
                    partition_key=day.isoformat(),
                    resources=resources,
                    instance=instance,
                    run_config=quiet,
                )
            )
            steps.update()
        steps.close()
        summary = summarize(url, [c.name for c in connections], day_range[0], day_range[-1])
    with psycopg2.connect(url) as conn:
        report = verify_database(conn, seal_key_from_env())
    conn.close()
    summary.verification = f"{report.status}, {len(report.problems)} problem(s)"
    summary.seal_key_source = seal_key_source
    return summary


def ensure_demo_seal_key() -> str:
    """Where the seal key comes from; the demo makes a local one when none is configured.

    The key lives in a mode-600 file in the data folder, never in the database, so the demo's
    chains are sealed the way production's are.
    """
    if os.environ.get(SEAL_KEY_ENV):
        return f"${SEAL_KEY_ENV}"
    key_file = data_dir() / "demo-seal.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(secrets.token_hex(32))
    os.environ[SEAL_KEY_ENV] = key_file.read_text().strip()
    return str(key_file)


def _check(result) -> None:
    if not result.success:
        failures = [
            event.message for event in result.all_events if event.is_failure and event.message
        ]
        raise RuntimeError("demo materialization failed: " + "; ".join(failures[:3]))


def summarize(
    url: str, connections: list[str], first_day: dt.date, last_day: dt.date
) -> DemoSummary:
    """Read the stored results for the connections and days back from PostgreSQL."""
    summary = DemoSummary(first_day, last_day, connections)
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        for label, table in (("vendors", "vendors"), ("materials", "materials")):
            cursor.execute(
                f"SELECT count(*) FROM erp_connector_service.{table} WHERE connection = ANY(%s)",
                (connections,),
            )
            summary.master_data[label] = cursor.fetchone()[0]
        for label, (table, column) in RECORD_TABLES.items():
            cursor.execute(
                f"SELECT count(*) FROM erp_connector_service.{table} WHERE connection = ANY(%s)"
                f" AND {column} BETWEEN %s AND %s AND NOT source_deleted",
                (connections, first_day, last_day),
            )
            summary.records[label] = cursor.fetchone()[0]
        scope = (connections, first_day, last_day)
        where = "connection = ANY(%s) AND transaction_date BETWEEN %s AND %s"
        cursor.execute(
            f"SELECT coalesce(sum(amount_usd), 0),"
            f" coalesce(sum(amount_usd) FILTER (WHERE mapping_rule = 'unmapped'), 0)"
            f" FROM erp_connector_service.emission_lines WHERE {where}",
            scope,
        )
        summary.spend_usd, summary.unmapped_spend_usd = cursor.fetchone()
        cursor.execute(
            f"SELECT coalesce('category ' || scope3_category::text, 'excluded'),"
            f" coalesce(sum(kgco2e), 0) FROM erp_connector_service.emission_lines"
            f" WHERE {where} GROUP BY scope3_category ORDER BY scope3_category NULLS LAST",
            scope,
        )
        summary.kgco2e_by_category = dict(cursor.fetchall())
        cursor.execute(
            "SELECT kind || ' (' || stage || '): ' || reason, count(*)"
            " FROM erp_connector_service.quarantine WHERE connection = ANY(%s)"
            " AND (partition_date IS NULL OR partition_date BETWEEN %s AND %s)"
            " GROUP BY 1 ORDER BY 2 DESC, 1",
            scope,
        )
        summary.quarantined = dict(cursor.fetchall())
    conn.close()
    return summary
