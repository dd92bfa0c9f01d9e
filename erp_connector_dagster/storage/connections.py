"""The connections table: which connections exist and how their last health check went.

The metrics exporter reads it (active connections, connection errors), so every health check
and every sync outcome is written here.
"""

from __future__ import annotations

from psycopg2 import sql

from erp_connector_dagster.erp.base import ConnectionHealth
from erp_connector_dagster.storage.database import SCHEMA


def record_health(cursor, health: ConnectionHealth, base_url: str) -> None:
    """Upsert a connection with the outcome of its latest health check (or sync)."""
    cursor.execute(
        sql.SQL(
            "INSERT INTO {table} (name, erp_type, base_url, last_checked_at, healthy, latency_ms,"
            " last_error) VALUES (%s, %s, %s, now(), %s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET erp_type = EXCLUDED.erp_type,"
            " base_url = EXCLUDED.base_url, last_checked_at = now(),"
            " healthy = EXCLUDED.healthy, latency_ms = EXCLUDED.latency_ms,"
            " last_error = EXCLUDED.last_error"
        ).format(table=sql.Identifier(SCHEMA, "connections")),
        (
            health.connection,
            health.erp_type,
            base_url,
            health.healthy,
            health.latency_ms,
            health.error,
        ),
    )
