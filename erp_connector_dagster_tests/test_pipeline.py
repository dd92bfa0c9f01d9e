"""The whole path through Dagster on real PostgreSQL and real HTTP to the sandbox ERPs."""

from __future__ import annotations

import csv
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner
from dagster import AssetSelection, DagsterInstance, Definitions, materialize

from erp_connector_dagster.cli import main
from erp_connector_dagster.definitions import build_definitions
from erp_connector_dagster.methodology.restatement import restate_with_provenance
from erp_connector_dagster.provenance.verifier import verify_database
from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.reference.factors import (
    DEFAULT_FACTOR_FILE,
    DEFAULT_FACTOR_SET,
    load_factor_set,
)
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.server import (
    DEFAULT_SANDBOX_CONNECTIONS,
    SandboxConnection,
    SandboxServer,
    available_erp_types,
)
from erp_connector_dagster.settings import SEAL_KEY_ENV

SEED = 777
PIPELINE_ERP_TYPES = [
    erp_type for _, erp_type, _ in DEFAULT_SANDBOX_CONNECTIONS if erp_type in available_erp_types()
]
pytestmark = pytest.mark.skipif(not PIPELINE_ERP_TYPES, reason="no sandbox dialect built")
SNAPSHOT_TABLES = {
    "spend_records": "transaction_date",
    "purchase_orders": "order_date",
    "purchase_order_lines": "order_date",
    "inventory_snapshots": "snapshot_date",
    "emission_calculations": "transaction_date",
}


@dataclass
class Pipeline:
    definitions: Definitions
    company: SandboxCompany
    database_url: str
    instance: DagsterInstance

    def materialize_master(self) -> None:
        self._run(AssetSelection.keys("vendor_master", "material_master"), None)

    def materialize_day(self, day: dt.date) -> None:
        partitioned = [a.key for a in self.definitions.assets if a.partitions_def]
        self._run(
            AssetSelection.keys(*partitioned) | AssetSelection.checks_for_assets(*partitioned),
            day.isoformat(),
        )

    def _run(self, selection, partition_key) -> None:
        result = materialize(
            [*self.definitions.assets, *self.definitions.asset_checks],
            selection=selection,
            partition_key=partition_key,
            resources=self.definitions.resources,
            instance=self.instance,
        )
        assert result.success

    def query(self, statement: str, params=()) -> list[tuple]:
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cursor:
            cursor.execute(statement, params)
            rows = cursor.fetchall()
        conn.close()
        return rows


SEAL_KEY = "pipeline-test-seal-key-0123456789abcdef"


@contextmanager
def serving_pipeline(database_url: str) -> Iterator[Pipeline]:
    company = SandboxCompany(seed=SEED)
    connections = [
        SandboxConnection(
            name=f"pipe-{erp_type.replace('_', '-')}", erp_type=erp_type, company=company
        )
        for erp_type in PIPELINE_ERP_TYPES[:1]
    ]
    with SandboxServer(connections, database_url=database_url) as server:
        definitions = build_definitions(server.connection_configs(), database_url=database_url)
        pipe = Pipeline(definitions, company, database_url, DagsterInstance.ephemeral())
        pipe.materialize_master()
        yield pipe


@pytest.fixture(scope="module")
def pipeline(database_url: str) -> Iterator[Pipeline]:
    previous = os.environ.get(SEAL_KEY_ENV)
    os.environ[SEAL_KEY_ENV] = SEAL_KEY
    try:
        with serving_pipeline(database_url) as pipe:
            yield pipe
    finally:
        if previous is None:
            os.environ.pop(SEAL_KEY_ENV, None)
        else:
            os.environ[SEAL_KEY_ENV] = previous


def _snapshot(pipeline: Pipeline, day: dt.date) -> dict[str, list[tuple]]:
    return {
        table: pipeline.query(
            f"SELECT record_key, record_hash, chain_hash, sync_id"
            f" FROM erp_connector_service.{table} WHERE {column} = %s ORDER BY record_key",
            (day,),
        )
        for table, column in SNAPSHOT_TABLES.items()
    }


def test_definitions_load_with_every_asset() -> None:
    definitions = build_definitions([], database_url="postgresql://unused@127.0.0.1/none")
    keys = {key.to_user_string() for key in definitions.resolve_asset_graph().get_all_asset_keys()}

    assert keys == {
        "vendor_master",
        "material_master",
        "spend_records",
        "purchase_orders",
        "purchase_order_lines",
        "inventory_snapshots",
        "vendor_mappings",
        "material_mappings",
        "scope3_emissions",
    }


def test_one_partition_materializes_end_to_end(pipeline: Pipeline) -> None:
    day = pipeline.company.business_days()[-2]
    pipeline.materialize_day(day)

    counts = {table: len(rows) for table, rows in _snapshot(pipeline, day).items()}
    truth = len(pipeline.company.records(RecordKind.SPEND, day))
    assert counts["spend_records"] == truth
    assert all(counts.values()), counts
    health = pipeline.query("SELECT name, healthy FROM erp_connector_service.connections")
    assert health and all(healthy for _, healthy in health)


def test_every_emission_row_equals_the_product_of_its_inputs(pipeline: Pipeline) -> None:
    day = pipeline.company.business_days()[-2]
    pipeline.materialize_day(day)

    rows = pipeline.query(
        "SELECT e.amount, e.currency, e.fx_rate, e.fx_rate_date, e.price_index_ratio,"
        " e.factor_value, e.factor_code, e.factor_version, e.kgco2e, s.amount, s.currency"
        " FROM erp_connector_service.emission_lines e JOIN erp_connector_service.spend_records s"
        " USING (connection, transaction_date, record_key)"
        " WHERE e.transaction_date = %s AND e.method = 'spend'",
        (day,),
    )

    assert rows
    for (
        amount,
        currency,
        rate,
        rate_date,
        ratio,
        factor,
        code,
        version,
        kgco2e,
        spend_amount,
        spend_currency,
    ) in rows:
        assert (amount, currency) == (spend_amount, spend_currency)
        assert rate_date <= day and code and version
        expected = (amount * rate * ratio * factor).quantize(
            Decimal("0.000001"), rounding=ROUND_HALF_EVEN
        )
        assert abs(kgco2e - expected) <= Decimal("0.000001"), (amount, rate, ratio, factor)


def test_materializing_a_day_twice_changes_nothing(pipeline: Pipeline) -> None:
    day = pipeline.company.business_days()[-3]
    pipeline.materialize_day(day)
    first = _snapshot(pipeline, day)

    pipeline.materialize_day(day)

    assert _snapshot(pipeline, day) == first


def test_bad_records_are_quarantined_with_their_reason(pipeline: Pipeline) -> None:
    company = pipeline.company
    latest_by_flaw: dict[str, dt.date] = {}
    for day in company.business_days()[-90:]:
        for line in company.bad_spend_lines(day):
            flaw = "currency" if line["currency"] == "ZZZ" else line["amount"] or "empty"
            latest_by_flaw[flaw] = day
    days = sorted(set(latest_by_flaw.values()))
    for day in days:
        pipeline.materialize_day(day)

    rows = pipeline.query(
        "SELECT stage, source_id, reason FROM erp_connector_service.quarantine"
        " WHERE partition_date = ANY(%s)",
        (days,),
    )

    assert len(latest_by_flaw) == 3 and len(rows) == 3
    assert all(reason for _, _, reason in rows)
    assert {stage for stage, _, _ in rows} == {"sync", "methodology"}
    assert any("ZZZ" in reason for stage, _, reason in rows if stage == "methodology")


def test_demo_command_runs_and_prints_the_summary(
    fresh_database_url: str, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("ERP_CONNECTOR_DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("ERP_CONNECTOR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv(SEAL_KEY_ENV, raising=False)

    result = CliRunner().invoke(main, ["demo", "--days", "2"])

    assert result.exit_code == 0, result.output
    assert "kgCO2e by Scope 3 category" in result.output
    assert "spend in USD" in result.output
    assert "verify -> sealed, 0 problem(s)" in result.output
    assert SEAL_KEY_ENV not in os.environ


def test_synced_and_calculated_data_verifies_sealed(pipeline: Pipeline) -> None:
    day = pipeline.company.business_days()[-2]
    pipeline.materialize_day(day)

    with psycopg2.connect(pipeline.database_url) as conn:
        report = verify_database(conn, SEAL_KEY.encode())
    conn.close()

    assert report.ok, report.summary()
    assert report.status == "sealed", report.summary()


def test_a_restatement_recalculates_and_keeps_the_old_results(
    fresh_database_url: str, tmp_path
) -> None:
    with serving_pipeline(fresh_database_url) as pipe:
        day = pipe.company.business_days()[-2]
        pipe.materialize_day(day)
        (code, old_factor), *_ = pipe.query(
            "SELECT factor_code, factor_value FROM erp_connector_service.emission_lines"
            " WHERE transaction_date = %s AND method = 'spend'"
            " GROUP BY 1, 2 ORDER BY count(*) DESC",
            (day,),
        )
        new_file = tmp_path / "factors.csv"
        with (
            open(DEFAULT_FACTOR_FILE, newline="", encoding="utf-8-sig") as source,
            open(new_file, "w", newline="", encoding="utf-8") as target,
        ):
            reader = csv.DictReader(source)
            writer = csv.DictWriter(target, fieldnames=reader.fieldnames)
            writer.writeheader()
            for row in reader:
                if row["2017 NAICS Code"] == code:
                    row["Supply Chain Emission Factors with Margins"] = str(old_factor * 2)
                writer.writerow(row)
        new_set = load_factor_set(new_file, DEFAULT_FACTOR_SET, "1.3.0-restated", 2022)

        with psycopg2.connect(fresh_database_url) as conn:
            result = restate_with_provenance(conn, new_set, "1.3.0-restated")
            report = verify_database(conn, None)
        conn.close()
        current = pipe.query(
            "SELECT factor_version, factor_value, kgco2e, amount * fx_rate * price_index_ratio"
            " * factor_value FROM erp_connector_service.emission_lines"
            " WHERE transaction_date = %s AND factor_code = %s",
            (day, code),
        )
        old = pipe.query(
            "SELECT count(*) FROM erp_connector_service.emission_calculations"
            " WHERE transaction_date = %s AND factor_code = %s AND NOT is_current"
            " AND factor_version = '1.3.0'",
            (day, code),
        )[0][0]
        pipe.materialize_day(day)
        after_rerun = pipe.query(
            "SELECT DISTINCT factor_version FROM erp_connector_service.emission_lines"
            " WHERE transaction_date = %s AND method = 'spend'",
            (day,),
        )

    assert result.rows_restated >= len(current) > 0
    assert {version for version, *_ in current} == {"1.3.0-restated"}
    assert all(factor == old_factor * 2 for _, factor, _, _ in current)
    assert all(abs(kg - product) <= Decimal("0.000001") for _, _, kg, product in current)
    assert old == len(current)
    assert report.ok, report.summary()
    assert after_rerun == [("1.3.0-restated",)]


def test_a_tampered_record_fails_the_blocking_chain_check(fresh_database_url: str) -> None:
    with serving_pipeline(fresh_database_url) as pipe:
        day = pipe.company.business_days()[-6]
        pipe.materialize_day(day)
        (victim,) = pipe.query(
            "SELECT record_key FROM erp_connector_service.spend_records"
            " WHERE transaction_date = %s ORDER BY record_key LIMIT 1 OFFSET 3",
            (day,),
        )[0]
        with psycopg2.connect(fresh_database_url) as conn, conn.cursor() as cursor:
            cursor.execute(
                "UPDATE erp_connector_service.spend_records SET amount = amount + 1"
                " WHERE transaction_date = %s AND record_key = %s",
                (day, victim),
            )
        conn.close()

        partitioned = [a.key for a in pipe.definitions.assets if a.partitions_def]
        result = materialize(
            [*pipe.definitions.assets, *pipe.definitions.asset_checks],
            selection=AssetSelection.keys(*partitioned)
            | AssetSelection.checks_for_assets(*partitioned),
            partition_key=day.isoformat(),
            resources=pipe.definitions.resources,
            instance=pipe.instance,
            raise_on_error=False,
        )

    evaluations = {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }
    chain_check = evaluations[("spend_records", "hash_chain_verifies")]
    assert not chain_check.passed
    assert victim in str(chain_check.metadata["broken_records"].value)
    assert evaluations[("purchase_orders", "hash_chain_verifies")].passed
    # Blocking: what is downstream of the tampered partition did not run.
    materialized = {
        event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
    }
    assert "scope3_emissions" not in materialized
    assert not result.success


def test_dagster_loads_the_code_location_with_every_dialect(database_url: str, tmp_path) -> None:
    from erp_connector_dagster.sandbox.server import sandbox_connections
    from erp_connector_dagster.settings import write_connections

    with SandboxServer(sandbox_connections(all_systems=True), database_url=database_url) as server:
        connections_file = write_connections(
            server.connection_configs(export_secrets=False), tmp_path / "connections.yaml"
        )
    repository_root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "ERP_CONNECTOR_DATABASE_URL": database_url,
        "ERP_CONNECTOR_CONNECTIONS_FILE": str(connections_file),
        "DAGSTER_HOME": str(tmp_path),
    }

    validated = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=repository_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "All code locations passed validation" in validated.stdout + validated.stderr
