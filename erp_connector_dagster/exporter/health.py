"""The health verdict served at /health: database, ERP connections and the latest sync.

"unhealthy" (HTTP 503) means the database cannot be reached, which is the one condition under
which the pod can do nothing useful. Problems the service can live with for a while (an ERP
down, the last sync failed or is old, no connection configured yet) make it "degraded", which
still answers 200 so Kubernetes keeps the pod in rotation while alerts tell a person.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg2
from psycopg2.extensions import cursor as Cursor

from erp_connector_dagster.exporter.scrape_pool import DatabaseUnavailable, ScrapePool

logger = logging.getLogger(__name__)

HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"
DEFAULT_STALE_SYNC_AFTER = timedelta(hours=26)


def check_health(
    scrape_pool: ScrapePool, stale_sync_after: timedelta = DEFAULT_STALE_SYNC_AFTER
) -> tuple[int, dict[str, Any]]:
    """Return the HTTP status and the JSON body for /health."""
    started = time.monotonic()
    try:
        with scrape_pool.connection() as connection:
            database_latency_ms = round((time.monotonic() - started) * 1000, 1)
            with connection.cursor() as cursor:
                connections = _guarded_check(_connections_check, cursor)
                last_sync = _guarded_check(_last_sync_check, cursor, stale_sync_after)
    except DatabaseUnavailable as error:
        checks = {
            "database": {"status": "down", "error": str(error)},
            "connections": {"status": "unknown"},
            "last_sync": {"status": "unknown"},
        }
        return 503, {"status": UNHEALTHY, "checks": checks}

    checks = {
        "database": {"status": "ok", "latency_ms": database_latency_ms},
        "connections": connections,
        "last_sync": last_sync,
    }
    degraded = any(check["status"] != "ok" for check in checks.values())
    return 200, {"status": DEGRADED if degraded else HEALTHY, "checks": checks}


def _guarded_check(
    check: Callable[..., dict[str, Any]], cursor: Cursor, *args: Any
) -> dict[str, Any]:
    try:
        return check(cursor, *args)
    except psycopg2.Error as error:
        # Reachable database but missing or broken schema (e.g. migrations not applied yet).
        logger.warning("health check %s failed: %s", check.__name__, type(error).__name__)
        return {"status": "error", "error": type(error).__name__}


def _connections_check(cursor: Cursor) -> dict[str, Any]:
    cursor.execute(
        "SELECT name, healthy FROM erp_connector_service.connections ORDER BY name",
    )
    rows = cursor.fetchall()
    healthy = [name for name, is_healthy in rows if is_healthy]
    failing = [name for name, is_healthy in rows if is_healthy is False]
    unchecked = [name for name, is_healthy in rows if is_healthy is None]

    if not rows:
        status = "none_configured"
    elif failing or unchecked:
        status = "degraded"
    else:
        status = "ok"
    return {
        "status": status,
        "total": len(rows),
        "healthy": len(healthy),
        "failing": failing,
        "unchecked": unchecked,
    }


def _last_sync_check(cursor: Cursor, stale_sync_after: timedelta) -> dict[str, Any]:
    # The latest finished job per connection: a connection whose latest sync failed is named.
    cursor.execute(
        "SELECT DISTINCT ON (connection) connection, status, finished_at,"
        " extract(epoch FROM now() - finished_at)::float8"
        " FROM erp_connector_service.sync_jobs"
        " WHERE status IN ('succeeded', 'failed') AND finished_at IS NOT NULL"
        " ORDER BY connection, finished_at DESC"
    )
    latest_per_connection = cursor.fetchall()
    if not latest_per_connection:
        return {"status": "none_yet"}

    connection, outcome, finished_at, age_seconds = max(
        latest_per_connection, key=lambda row: row[2]
    )
    failing_connections = [row[0] for row in latest_per_connection if row[1] == "failed"]
    stale = age_seconds > stale_sync_after.total_seconds()
    if failing_connections:
        status = "failed"
    elif stale:
        status = "stale"
    else:
        status = "ok"
    return {
        "status": status,
        "connection": connection,
        "outcome": outcome,
        "finished_at": finished_at.isoformat(),
        "age_seconds": round(age_seconds, 1),
        "failing_connections": failing_connections,
    }
