"""The metrics sidecar against a real PostgreSQL, scraped over real HTTP on loopback."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from yoyo import get_backend, read_migrations

from erp_connector_dagster.exporter import make_exporter_server
from erp_connector_dagster.exporter.collector import SYNC_DURATION_BUCKETS_SECONDS

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
MIGRATIONS_DIR = Path(__file__).parents[1] / "erp_connector_dagster" / "storage" / "migrations"
ALERTS_FILE = Path(__file__).parents[1] / "erp_connector_dagster" / "exporter" / "alerts.yaml"
SCHEMA = "erp_connector_service"
CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/postgres"

RUNBOOK_FAMILIES = {
    # exposed name -> (type, label names)
    "gl_erp_connector_sync_jobs_total": ("counter", {"connection", "mode", "status"}),
    "gl_erp_connector_spend_records_total": ("counter", {"connection"}),
    "gl_erp_connector_active_connections": ("gauge", set()),
    "gl_erp_connector_connection_errors_total": ("counter", {"connection"}),
    "gl_erp_connector_sync_duration_seconds": ("histogram", {"connection"}),
}


def _url(database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{database}"


def _admin_execute_in(database: str, statement: str) -> None:
    connection = psycopg2.connect(_url(database))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def _admin_execute(statement: str) -> None:
    connection = psycopg2.connect(ADMIN_DSN)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    """A database with every migration applied, cloned by each test that needs its own."""
    name = f"erp_exporter_tmpl_{uuid.uuid4().hex[:10]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg2.connect(_url(name)) as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {SCHEMA}")
        connection.close()
        backend = get_backend(_url(name))
        with backend.lock():
            backend.apply_migrations(backend.to_apply(read_migrations(str(MIGRATIONS_DIR))))
        backend.connection.close()
        yield name
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database(template_database: str) -> Iterator[str]:
    name = f"erp_exporter_{uuid.uuid4().hex[:10]}"
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    try:
        yield name
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database() -> Iterator[str]:
    name = f"erp_exporter_empty_{uuid.uuid4().hex[:10]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _serve(database_url: str, dagster_instance=None) -> tuple[str, object]:
    server = make_exporter_server(database_url, "127.0.0.1", 0, dagster_instance)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_port}", server


@pytest.fixture
def serve() -> Iterator:
    servers = []

    def start(database_url: str, dagster_instance=None) -> str:
        base_url, server = _serve(database_url, dagster_instance)
        servers.append(server)
        return base_url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
        server.app.close()


def _scrape(base_url: str) -> dict:
    response = requests.get(f"{base_url}/metrics", timeout=30)
    assert response.status_code == 200
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def _value(families: dict, family_name: str, sample_name: str | None = None, **labels) -> float:
    family = families[family_name]
    sample_name = sample_name or (
        family_name + "_total" if family.type == "counter" else family_name
    )
    matches = [
        sample.value
        for sample in family.samples
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (sample_name, labels, family.samples)
    return matches[0]


# --- seed data -------------------------------------------------------------------------------

JOB_SAP_FULL = str(uuid.uuid4())
JOB_SAP_INCREMENTAL = str(uuid.uuid4())
JOB_SAP_FAILED = str(uuid.uuid4())
JOB_SAP_SLOW_OLD = str(uuid.uuid4())
JOB_NETSUITE_FAILED = str(uuid.uuid4())
JOB_NETSUITE_RUNNING = str(uuid.uuid4())


def _seed(database: str) -> None:
    """Insert a small, hand-countable operating history, audit trail and seals included."""
    with psycopg2.connect(_url(database)) as connection, connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {SCHEMA}.connections"
            " (name, erp_type, base_url, last_checked_at, healthy, latency_ms, last_error) VALUES"
            " ('acme-sap', 'sap_s4hana', 'http://127.0.0.1:1', now() - interval '60 s',"
            "  true, 120, NULL),"
            " ('acme-netsuite', 'netsuite', 'http://127.0.0.1:2', now() - interval '30 s',"
            "  false, NULL, 'HTTP 503'),"
            " ('acme-xero', 'xero', 'http://127.0.0.1:3', NULL, NULL, NULL, NULL)"
        )
        jobs = [
            # id, connection, mode, status, finished minutes ago, duration seconds
            (JOB_SAP_FULL, "acme-sap", "full", "succeeded", 50, 30),
            (JOB_SAP_INCREMENTAL, "acme-sap", "incremental", "succeeded", 40, 200),
            (JOB_SAP_FAILED, "acme-sap", "incremental", "failed", 30, 400),
            (JOB_SAP_SLOW_OLD, "acme-sap", "incremental", "succeeded", 2 * 24 * 60, 1000),
            (JOB_NETSUITE_FAILED, "acme-netsuite", "incremental", "failed", 20, 10),
        ]
        for job_id, connection_name, mode, status, minutes_ago, seconds in jobs:
            cursor.execute(
                f"INSERT INTO {SCHEMA}.sync_jobs (id, connection, kinds, mode, status,"
                " created_at, started_at, finished_at)"
                " VALUES (%s, %s, ARRAY['spend'], %s, %s,"
                "  now() - make_interval(mins => %s) - make_interval(secs => %s + 5),"
                "  now() - make_interval(mins => %s) - make_interval(secs => %s),"
                "  now() - make_interval(mins => %s))",
                (job_id, connection_name, mode, status)
                + (minutes_ago, seconds, minutes_ago, seconds, minutes_ago),
            )
        cursor.execute(
            f"INSERT INTO {SCHEMA}.sync_jobs (id, connection, kinds, mode, status, created_at,"
            " started_at) VALUES"
            " (%s, 'acme-netsuite', ARRAY['spend'], 'delta', 'running',"
            "  now() - interval '21 min', now() - interval '20 min'),"
            " (%s, 'acme-netsuite', ARRAY['spend'], 'full', 'pending',"
            "  now() - interval '5 min', NULL)",
            (JOB_NETSUITE_RUNNING, str(uuid.uuid4())),
        )

        spend = [("acme-sap", f"S{n}") for n in range(3)] + [("acme-netsuite", "N1")]
        for connection_name, key in spend:
            cursor.execute(
                f"INSERT INTO {SCHEMA}.spend_records (connection, transaction_date, record_key,"
                " document_id, line_number, document_type, amount, currency, status, source_id,"
                " record_hash) VALUES (%s, '2024-01-02', %s, %s, 1, 'invoice', 10, 'EUR',"
                " 'posted', %s, 'h')",
                (connection_name, key, key, key),
            )
        for key in ("P1", "P2"):
            cursor.execute(
                f"INSERT INTO {SCHEMA}.purchase_orders (connection, order_date, record_key,"
                " purchase_order_id, currency, total_amount, order_status, status, source_id,"
                " record_hash) VALUES ('acme-sap', '2024-01-02', %s, %s, 'EUR', 5, 'open',"
                " 'active', %s, 'h')",
                (key, key, key),
            )
        for key in ("P1-1", "P1-2", "P2-1"):
            cursor.execute(
                f"INSERT INTO {SCHEMA}.purchase_order_lines (connection, order_date, record_key,"
                " purchase_order_id, line_number, quantity, unit_price, amount, currency,"
                " status, source_id, record_hash) VALUES ('acme-sap', '2024-01-02', %s, 'P1',"
                " 1, 1, 1, 1, 'EUR', 'active', %s, 'h')",
                (key, key),
            )
        cursor.execute(
            f"INSERT INTO {SCHEMA}.inventory_snapshots (connection, snapshot_date, record_key,"
            " material_id, location, quantity, status, source_id, record_hash)"
            " VALUES ('acme-sap', '2024-01-02', 'M1@W1', 'M1', 'W1', 4, 'active', 'M1', 'h')"
        )

        quarantined = [
            ("acme-sap", "spend", "validate", "missing_vendor: vendor V1 is unknown"),
            ("acme-sap", "spend", "validate", "Missing vendor: vendor V2 is unknown"),
            ("acme-sap", "spend", "convert", "No FX rate: EUR on 2024-01-02"),
            ("acme-netsuite", "purchase_order", "fetch", "HTTP 500 from server"),
        ]
        for connection_name, kind, stage, reason in quarantined:
            cursor.execute(
                f"INSERT INTO {SCHEMA}.quarantine (connection, kind, stage, partition_date,"
                " reason, payload) VALUES (%s, %s, %s, '2024-01-02', %s, '{}')",
                (connection_name, kind, stage, reason),
            )

        emission_lines = [
            # key, scope3 category, kgco2e, amount_usd, excluded reason, version, current
            ("E1", 1, 100.5, 1000, None, "v1", True),
            ("E1", 1, 999.0, 1000, None, "v0", False),
            ("E2", 1, 50, 500, None, "v1", True),
            ("E3", 2, 20, 100, None, "v1", True),
            ("E4", None, None, 250, None, "v1", True),
            ("E5", None, None, 75, "capex_excluded", "v1", True),
            ("E6", None, None, None, None, "v1", True),
        ]
        for key, category, kgco2e, amount_usd, excluded, version, current in emission_lines:
            cursor.execute(
                f"INSERT INTO {SCHEMA}.emission_calculations (connection, transaction_date,"
                " record_key, scope3_category, excluded_reason, method, amount, currency,"
                " amount_usd, kgco2e, factor_version, is_current, record_hash)"
                " VALUES ('acme-sap', '2024-01-02', %s, %s, %s, 'spend_based', 1, 'EUR', %s, %s,"
                " %s, %s, 'h')",
                (key, category, excluded, amount_usd, kgco2e, version, current),
            )
        cursor.execute(
            f"INSERT INTO {SCHEMA}.sync_cursors (connection, kind, cursor_value)"
            " VALUES ('acme-sap', 'spend', now() - interval '2 hours')"
        )

        # Hashes are placeholders: the exporter counts events, it does not verify the chain.
        events = [
            ("sync_started", "acme-sap", JOB_SAP_FULL, {}),
            ("sync_completed", "acme-sap", JOB_SAP_FULL, {}),
            ("sync_started", "acme-sap", JOB_SAP_INCREMENTAL, {}),
            ("sync_completed", "acme-sap", JOB_SAP_INCREMENTAL, {}),
            ("sync_started", "acme-sap", JOB_SAP_FAILED, {}),
            ("sync_failed", "acme-sap", JOB_SAP_FAILED, {}),
            ("sync_started", "acme-sap", JOB_SAP_SLOW_OLD, {}),  # never completed: a gap
            ("sync_started", "acme-netsuite", JOB_NETSUITE_RUNNING, {}),
            ("verification", None, None, {"ok": True}),
            ("verification", None, None, {"ok": False}),
        ]
        for number, (event_type, connection_name, sync_id, details) in enumerate(events):
            cursor.execute(
                f"INSERT INTO {SCHEMA}.audit_events (event_type, connection, sync_id, details,"
                " prev_hash, event_hash) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    event_type,
                    connection_name,
                    sync_id,
                    json.dumps(details),
                    f"prev-{number}",
                    f"hash-{number}",
                ),
            )
        for days_ago, minutes_ago in ((2, 0), (0, 10)):
            cursor.execute(
                f"INSERT INTO {SCHEMA}.seals (sealed_at, audit_event_id, audit_head, heads_digest,"
                " changed_digest, partition_count, record_count, hmac, scope) VALUES"
                " (now() - make_interval(days => %s, mins => %s), 1, 'h', 'd', 'c', 1, 4,"
                " 'mac', '{}')",
                (days_ago, minutes_ago),
            )
    connection.close()


@pytest.fixture
def seeded(database: str, serve) -> str:
    _seed(database)
    return serve(_url(database))


# --- metrics ---------------------------------------------------------------------------------


def test_runbook_metrics_are_exposed_with_exact_names_types_and_labels(seeded) -> None:
    base_url = seeded
    exposition = requests.get(f"{base_url}/metrics", timeout=30).text

    for exposed_name, (metric_type, label_names) in RUNBOOK_FAMILIES.items():
        assert f"# TYPE {exposed_name} {metric_type}\n" in exposition
        sample_names = {exposed_name}
        if metric_type == "histogram":
            sample_names = {exposed_name + "_bucket"}
        samples = [
            sample
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples
            if sample.name in sample_names
        ]
        assert samples, exposed_name
        for sample in samples:
            assert set(sample.labels) - {"le"} == label_names, (exposed_name, sample.labels)


def test_sync_jobs_counted_per_connection_mode_and_final_status(seeded) -> None:
    families = _scrape(seeded)
    name = "gl_erp_connector_sync_jobs"

    assert _value(families, name, connection="acme-sap", mode="full", status="succeeded") == 1
    assert (
        _value(families, name, connection="acme-sap", mode="incremental", status="succeeded") == 2
    )
    assert _value(families, name, connection="acme-sap", mode="incremental", status="failed") == 1
    assert (
        _value(families, name, connection="acme-netsuite", mode="incremental", status="failed") == 1
    )
    assert {s.labels["status"] for s in families[name].samples} == {"succeeded", "failed"}

    unfinished = "gl_erp_connector_sync_jobs_unfinished"
    assert _value(families, unfinished, connection="acme-netsuite", status="running") == 1
    assert _value(families, unfinished, connection="acme-netsuite", status="pending") == 1
    oldest = _value(
        families, "gl_erp_connector_oldest_unfinished_sync_age_seconds", connection="acme-netsuite"
    )
    assert 20 * 60 - 5 <= oldest <= 20 * 60 + 60


def test_sync_duration_histogram_buckets_reach_past_the_slo(seeded) -> None:
    families = _scrape(seeded)
    name = "gl_erp_connector_sync_duration_seconds"
    assert max(SYNC_DURATION_BUCKETS_SECONDS) >= 3600

    def bucket(connection: str, upper_bound: str) -> float:
        return _value(families, name, name + "_bucket", connection=connection, le=upper_bound)

    # acme-sap durations: 30, 200, 400, 1000 seconds.
    assert bucket("acme-sap", "15.0") == 0
    assert bucket("acme-sap", "30.0") == 1
    assert bucket("acme-sap", "240.0") == 2
    assert bucket("acme-sap", "300.0") == 2
    assert bucket("acme-sap", "450.0") == 3
    assert bucket("acme-sap", "900.0") == 3
    assert bucket("acme-sap", "1800.0") == 4
    assert bucket("acme-sap", "+Inf") == 4
    assert _value(families, name, name + "_count", connection="acme-sap") == 4
    assert _value(families, name, name + "_sum", connection="acme-sap") == pytest.approx(1630)
    assert bucket("acme-netsuite", "5.0") == 0
    assert bucket("acme-netsuite", "15.0") == 1
    assert _value(families, name, name + "_sum", connection="acme-netsuite") == pytest.approx(10)


def test_connection_health_and_errors(seeded) -> None:
    families = _scrape(seeded)

    assert _value(families, "gl_erp_connector_active_connections") == 1
    assert _value(families, "gl_erp_connector_connections") == 3
    up = "gl_erp_connector_connection_up"
    assert _value(families, up, connection="acme-sap", erp_type="sap_s4hana") == 1
    assert _value(families, up, connection="acme-netsuite", erp_type="netsuite") == 0
    assert _value(families, up, connection="acme-xero", erp_type="xero") == 0
    latency = _value(families, "gl_erp_connector_connection_latency_seconds", connection="acme-sap")
    assert latency == pytest.approx(0.12)

    # Failed syncs per connection; a known connection without failures still exports zero.
    errors = "gl_erp_connector_connection_errors"
    assert _value(families, errors, connection="acme-sap") == 1
    assert _value(families, errors, connection="acme-netsuite") == 1
    assert _value(families, errors, connection="acme-xero") == 0


def test_record_counters_per_connection(seeded) -> None:
    families = _scrape(seeded)

    assert _value(families, "gl_erp_connector_spend_records", connection="acme-sap") == 3
    assert _value(families, "gl_erp_connector_spend_records", connection="acme-netsuite") == 1
    assert _value(families, "gl_erp_connector_purchase_orders", connection="acme-sap") == 2
    assert _value(families, "gl_erp_connector_purchase_order_lines", connection="acme-sap") == 3
    assert _value(families, "gl_erp_connector_inventory_snapshots", connection="acme-sap") == 1


def test_quarantine_grouped_by_reason_class(seeded) -> None:
    families = _scrape(seeded)
    name = "gl_erp_connector_quarantined_records"

    def quarantined(connection: str, kind: str, stage: str, reason_class: str) -> float:
        return _value(
            families, name, connection=connection, kind=kind, stage=stage, reason_class=reason_class
        )

    assert quarantined("acme-sap", "spend", "validate", "missing_vendor") == 2
    assert quarantined("acme-sap", "spend", "convert", "no_fx_rate") == 1
    # Free text carrying numbers collapses to "other" so label values stay few.
    assert quarantined("acme-netsuite", "purchase_order", "fetch", "other") == 1
    assert len(families[name].samples) == 3


def test_emissions_and_spend_use_current_lines_only(seeded) -> None:
    families = _scrape(seeded)
    emissions = "gl_erp_connector_emissions_kgco2e"

    assert _value(families, emissions, connection="acme-sap", scope3_category="1") == 150.5
    assert _value(families, emissions, connection="acme-sap", scope3_category="2") == 20
    assert _value(families, emissions, connection="acme-sap", scope3_category="unclassified") == 0
    assert _value(families, "gl_erp_connector_spend_usd", connection="acme-sap") == 1925
    assert _value(families, "gl_erp_connector_unmapped_spend_usd", connection="acme-sap") == 250
    without_rate = "gl_erp_connector_emission_lines_without_fx_rate"
    assert _value(families, without_rate, connection="acme-sap") == 1
    lines = "gl_erp_connector_emission_lines"
    assert _value(families, lines, connection="acme-sap", method="spend_based") == 6


def test_failure_ratio_and_sync_lag(seeded) -> None:
    families = _scrape(seeded)

    # Finished in the last hour: 2 succeeded, 2 failed; the 2-day-old job is outside.
    assert _value(families, "gl_erp_connector_sync_job_failure_ratio") == 0.5
    assert _value(families, "gl_erp_connector_sync_jobs_finished_recently") == 4
    lag = _value(families, "gl_erp_connector_sync_lag_seconds", connection="acme-sap", kind="spend")
    assert 7200 - 5 <= lag <= 7200 + 60


def test_audit_trail_metrics(seeded) -> None:
    families = _scrape(seeded)

    events = "gl_erp_connector_audit_events"
    assert _value(families, events, event_type="sync_started") == 5
    assert _value(families, events, event_type="sync_completed") == 2
    assert _value(families, events, event_type="verification") == 2
    assert _value(families, "gl_erp_connector_chain_verification_failures") == 1
    # Gaps: the old sap job never recorded its completion; the netsuite failure recorded
    # nothing. The running job has its start, the pending one has not started yet.
    gap = "gl_erp_connector_syncs_without_audit_events"
    assert _value(families, gap, connection="acme-sap") == 1
    assert _value(families, gap, connection="acme-netsuite") == 1
    seal_age = _value(families, "gl_erp_connector_last_seal_age_seconds")
    assert 600 - 5 <= seal_age <= 600 + 60


def test_without_an_audit_table_every_started_sync_is_a_gap(seeded, database: str) -> None:
    _admin_execute_in(database, f"DROP TABLE {SCHEMA}.audit_events CASCADE")

    families = _scrape(seeded)
    gap = "gl_erp_connector_syncs_without_audit_events"
    assert _value(families, gap, connection="acme-sap") == 4
    assert _value(families, gap, connection="acme-netsuite") == 2
    assert families["gl_erp_connector_audit_events"].samples == []
    assert _value(families, "gl_erp_connector_exporter_section_errors", section="audit") == 0


def test_at_least_twelve_families_and_no_section_failed(seeded) -> None:
    families = _scrape(seeded)

    with_samples = {
        name
        for name, family in families.items()
        if name.startswith("gl_erp_connector_")
        if family.samples
    }
    assert len(with_samples) >= 12, sorted(with_samples)
    assert _value(families, "gl_erp_connector_database_up") == 1
    section_errors = families["gl_erp_connector_exporter_section_errors"].samples
    assert section_errors and all(sample.value == 0 for sample in section_errors)
    assert 0 < _value(families, "gl_erp_connector_exporter_scrape_duration_seconds") < 10


def test_metrics_follow_the_tables_between_scrapes(seeded, database: str) -> None:
    base_url = seeded
    before = _scrape(base_url)
    with psycopg2.connect(_url(database)) as connection, connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {SCHEMA}.connections SET healthy = true WHERE name = 'acme-netsuite'"
        )
    connection.close()

    after = _scrape(base_url)
    assert _value(before, "gl_erp_connector_active_connections") == 1
    assert _value(after, "gl_erp_connector_active_connections") == 2


def test_scrape_recovers_after_its_database_session_is_killed(seeded, database: str) -> None:
    base_url = seeded
    _scrape(base_url)
    connection = psycopg2.connect(ADMIN_DSN)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name = 'erp-connector-exporter'",
            (database,),
        )
        assert cursor.fetchone()[0] >= 1
    connection.close()

    families = _scrape(base_url)
    assert _value(families, "gl_erp_connector_database_up") == 1
    assert _value(families, "gl_erp_connector_spend_records", connection="acme-sap") == 3


def test_schema_missing_flags_sections_and_degrades_health(empty_database: str, serve) -> None:
    base_url = serve(_url(empty_database))

    families = _scrape(base_url)
    assert _value(families, "gl_erp_connector_database_up") == 1
    errors = "gl_erp_connector_exporter_section_errors"
    assert _value(families, errors, section="connections") == 1
    assert _value(families, errors, section="sync_jobs") == 1

    response = requests.get(f"{base_url}/health", timeout=30)
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["connections"]["status"] == "error"


def test_dagster_runs_read_through_the_instance_api(database: str, serve) -> None:
    from dagster import DagsterInstance, asset, materialize

    @asset
    def exporter_probe() -> int:
        return 1

    with DagsterInstance.ephemeral() as instance:
        assert materialize([exporter_probe], instance=instance).success
        families = _scrape(serve(_url(database), instance))

    runs = "gl_erp_connector_dagster_runs"
    assert _value(families, runs, status="success") == 1
    assert _value(families, runs, status="queued") == 0
    assert _value(families, "gl_erp_connector_exporter_section_errors", section="dagster_runs") == 0


# --- database down and health ----------------------------------------------------------------


def test_database_down_scrape_answers_fast_with_database_up_zero(serve) -> None:
    base_url = serve(CLOSED_PORT_URL)

    started = time.monotonic()
    families = _scrape(base_url)
    assert time.monotonic() - started < 5
    assert _value(families, "gl_erp_connector_database_up") == 0
    assert "gl_erp_connector_sync_jobs" not in families


def test_health_is_503_when_the_database_is_unreachable(serve) -> None:
    base_url = serve(CLOSED_PORT_URL)

    started = time.monotonic()
    response = requests.get(f"{base_url}/health", timeout=30)
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    verdict = response.json()
    assert verdict["status"] == "unhealthy"
    assert verdict["checks"]["database"]["status"] == "down"
    assert "127.0.0.1" not in response.text and "postgres@" not in response.text


def test_health_healthy_when_all_connections_pass_and_last_sync_succeeded(
    database: str, serve
) -> None:
    with psycopg2.connect(_url(database)) as connection, connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {SCHEMA}.connections (name, erp_type, base_url, last_checked_at,"
            " healthy) VALUES ('acme-sap', 'sap_s4hana', 'http://127.0.0.1:1', now(), true)"
        )
        cursor.execute(
            f"INSERT INTO {SCHEMA}.sync_jobs (id, connection, kinds, mode, status, started_at,"
            " finished_at) VALUES (%s, 'acme-sap', ARRAY['spend'], 'incremental', 'succeeded',"
            " now() - interval '3 min', now() - interval '1 min')",
            (str(uuid.uuid4()),),
        )
    connection.close()

    response = requests.get(f"{serve(_url(database))}/health", timeout=30)
    assert response.status_code == 200
    verdict = response.json()
    assert verdict["status"] == "healthy", verdict
    assert set(verdict["checks"]) == {"database", "connections", "last_sync"}
    assert verdict["checks"]["connections"] == {
        "status": "ok",
        "total": 1,
        "healthy": 1,
        "failing": [],
        "unchecked": [],
    }
    assert verdict["checks"]["last_sync"]["outcome"] == "succeeded"


def test_health_degraded_names_failing_connections_and_syncs(seeded) -> None:
    response = requests.get(f"{seeded}/health", timeout=30)

    assert response.status_code == 200
    verdict = response.json()
    assert verdict["status"] == "degraded"
    assert verdict["checks"]["database"]["status"] == "ok"
    assert verdict["checks"]["connections"]["failing"] == ["acme-netsuite"]
    assert verdict["checks"]["connections"]["unchecked"] == ["acme-xero"]
    assert verdict["checks"]["last_sync"]["status"] == "failed"
    assert sorted(verdict["checks"]["last_sync"]["failing_connections"]) == [
        "acme-netsuite",
        "acme-sap",
    ]


def test_sidecar_command_serves_health_from_environment(tmp_path: Path) -> None:
    """`python -m erp_connector_dagster.exporter`, the Helm sidecar's command, end to end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    repo_root = Path(__file__).parents[1]
    environment = {
        key: value for key, value in os.environ.items() if key not in {"DAGSTER_HOME"}
    } | {
        "ERP_CONNECTOR_DATABASE_URL": CLOSED_PORT_URL,
        "ERP_CONNECTOR_EXPORTER_HOST": "127.0.0.1",
        "ERP_CONNECTOR_EXPORTER_PORT": str(port),
        "PYTHONPATH": str(repo_root),
    }
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "erp_connector_dagster.exporter"],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except requests.ConnectionError:
                assert sidecar.poll() is None, sidecar.stderr.read().decode()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert response.status_code == 503
    finally:
        sidecar.terminate()
        sidecar.wait(timeout=10)
    # The log names the failure but never the database URL.
    assert "postgresql://" not in sidecar.stderr.read().decode()


def test_sidecar_refuses_to_start_without_a_database_url(tmp_path: Path) -> None:
    environment = {
        key: value for key, value in os.environ.items() if key != "ERP_CONNECTOR_DATABASE_URL"
    } | {"PYTHONPATH": str(Path(__file__).parents[1])}
    finished = subprocess.run(
        [sys.executable, "-m", "erp_connector_dagster.exporter"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert b"ERP_CONNECTOR_DATABASE_URL" in finished.stderr


def test_unknown_path_is_404_and_post_is_405(serve) -> None:
    base_url = serve(CLOSED_PORT_URL)

    assert requests.get(f"{base_url}/nope", timeout=10).status_code == 404
    assert requests.post(f"{base_url}/metrics", timeout=10).status_code == 405


# --- alerting rules --------------------------------------------------------------------------

PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "sum", "min", "max", "avg", "count", "rate", "irate", "increase",
    "histogram_quantile", "absent", "clamp_min", "clamp_max", "le", "job", "connection",
    "status", "mode", "section", "event_type", "up", "time", "vector", "scalar",
}  # fmt: skip
REQUIRED_ALERTS = {
    "ERPConnectorServiceDown",
    "ERPHighSyncFailureRateCritical",
    "ERPConnectionFailure",
    "ERPAuditGap",
    "ERPDatabaseConnectionFailure",
    "ERPSyncDurationP99High",
}


def _exposed_sample_names(families: dict) -> set[str]:
    names = set()
    for family in families.values():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_alert_rules_are_well_formed_and_use_exposed_metrics(seeded) -> None:
    exposed = _exposed_sample_names(_scrape(seeded))
    document = yaml.safe_load(ALERTS_FILE.read_text())

    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert all(group.get("name") for group in document["groups"])
    assert {rule["alert"] for rule in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"].get("summary") and rule["annotations"].get("description")
        expression = re.sub(r'"[^"]*"', '""', rule["expr"])  # label values are not metrics
        expression = re.sub(r"\[[0-9]+[smhd]\]", "", expression)
        for identifier in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expression):
            if identifier in PROMQL_WORDS:
                continue
            assert identifier in exposed, (rule["alert"], identifier)

    by_name = {rule["alert"]: rule for rule in rules}
    service_down = by_name["ERPConnectorServiceDown"]
    assert service_down["expr"].replace(" ", "") == 'up{job="erp-connector-service"}==0'
    assert service_down["for"] == "5m" and service_down["labels"]["severity"] == "critical"
    assert "0.25" in by_name["ERPHighSyncFailureRateCritical"]["expr"]
    assert "300" in by_name["ERPSyncDurationP99High"]["expr"]


def test_alert_file_is_plain_json_compatible_yaml() -> None:
    # Prometheus reads the rules file as-is: no YAML anchors or tags that it would reject.
    document = yaml.safe_load(ALERTS_FILE.read_text())
    assert json.loads(json.dumps(document)) == document
