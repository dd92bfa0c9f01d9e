"""Versioned migrations of the `erp_connector_service` schema (yoyo-migrations SQL files).

Migrations run on start and alone (`erp-connector migrate`). Where the TimescaleDB extension is
available the day-partitioned tables become hypertables; elsewhere they stay plain tables.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg2
from yoyo import get_backend, read_migrations

from erp_connector_dagster.storage.database import SCHEMA

logger = logging.getLogger("erp_connector_dagster.storage")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Day-partitioned tables and their time column, turned into hypertables when possible.
HYPERTABLES = {
    "spend_records": "transaction_date",
    "purchase_orders": "order_date",
    "purchase_order_lines": "order_date",
    "inventory_snapshots": "snapshot_date",
    "emission_calculations": "transaction_date",
}


def _yoyo_url(url: str) -> str:
    # yoyo keeps its bookkeeping tables in the schema named here.
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}schema={SCHEMA}"


def migrate(url: str) -> list[str]:
    """Apply pending migrations; return the ids of the ones applied."""
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    conn.close()

    backend = get_backend(_yoyo_url(url))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    applied = [migration.id for migration in pending]
    if applied:
        logger.info("applied migrations: %s", ", ".join(applied))
    _enable_timescale(url)
    return applied


def pending_migrations(url: str) -> list[str]:
    backend = get_backend(_yoyo_url(url))
    return [migration.id for migration in backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))]


def timescale_available(cursor) -> bool:
    cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return cursor.fetchone() is not None


def _enable_timescale(url: str) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        if not timescale_available(cursor):
            return
        cursor.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for table, column in HYPERTABLES.items():
            cursor.execute(
                "SELECT create_hypertable(%s, %s, migrate_data => true, if_not_exists => true)",
                (f"{SCHEMA}.{table}", column),
            )
    conn.close()
