"""Where the database is, and a small connection pool to it.

The URL comes from `ERP_CONNECTOR_DATABASE_URL`. With none set, an embedded PostgreSQL (the
`pgserver` package ships real PostgreSQL binaries) is started under the local data folder, so a
fresh machine runs the demo without a database server. The pool holds 2 to 10 connections.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
import psycopg2.pool
from psycopg2 import sql

from erp_connector_dagster.settings import DATABASE_URL_ENV, data_dir

logger = logging.getLogger("erp_connector_dagster.storage")

SCHEMA = "erp_connector_service"
POOL_MIN = 2
POOL_MAX = 10
# Where tests look for a PostgreSQL server before falling back to the embedded one.
TEST_SERVER_URL_ENV = "ERP_CONNECTOR_TEST_SERVER_URL"
LOCAL_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

_pools: dict[str, psycopg2.pool.ThreadedConnectionPool] = {}
_pools_lock = threading.Lock()

__all__ = [
    "DATABASE_URL_ENV",
    "SCHEMA",
    "connection",
    "create_database",
    "database_url",
    "drop_database",
    "embedded_database_url",
    "redact_url",
    "server_url",
]


def embedded_database_url() -> str:
    """Start (or reuse) the embedded PostgreSQL under the data folder and return its URL."""
    import pgserver  # imported lazily: only needed when no database URL is configured

    pgdata = data_dir() / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    logger.info("using embedded PostgreSQL under %s", pgdata)
    return server.get_uri()


def database_url() -> str:
    """The configured database URL, or the embedded server's when none is configured."""
    return os.environ.get(DATABASE_URL_ENV) or embedded_database_url()


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and metadata."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _reachable(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


def server_url() -> str:
    """A maintenance-database URL of a server where throwaway databases can be created."""
    configured = os.environ.get(TEST_SERVER_URL_ENV)
    if configured:
        return configured
    if _reachable(LOCAL_SERVER_URL):
        return LOCAL_SERVER_URL
    return embedded_database_url()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database(server: str, name: str) -> str:
    """Create database `name` on the server and return its URL."""
    admin = psycopg2.connect(server)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        admin.close()
    return _with_database(server, name)


def drop_database(server: str, name: str) -> None:
    admin = psycopg2.connect(server)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        admin.close()


def pool(url: str | None = None) -> psycopg2.pool.ThreadedConnectionPool:
    """The process-wide pool for a database URL (min 2, max 10 connections)."""
    url = url or database_url()
    with _pools_lock:
        existing = _pools.get(url)
        if existing is None or existing.closed:
            existing = psycopg2.pool.ThreadedConnectionPool(POOL_MIN, POOL_MAX, url)
            _pools[url] = existing
        return existing


@contextmanager
def connection(url: str | None = None) -> Iterator[psycopg2.extensions.connection]:
    """A pooled connection in a transaction: committed on success, rolled back on error."""
    connection_pool = pool(url)
    conn = connection_pool.getconn()
    try:
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        connection_pool.putconn(conn)


def close_pools() -> None:
    with _pools_lock:
        for connection_pool in _pools.values():
            connection_pool.closeall()
        _pools.clear()
