"""A tiny, lazily opened PostgreSQL pool for scrapes and health checks.

The exporter must answer even when the database is down, so the pool is opened on first use
(not at start-up), every connection attempt is bounded by a connect timeout, every statement by
a statement timeout, and a connection found dead is thrown away and replaced once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions
import psycopg2.pool

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3
STATEMENT_TIMEOUT_MS = 10_000
APPLICATION_NAME = "erp-connector-exporter"


class DatabaseUnavailable(Exception):
    """The exporter could not reach PostgreSQL; the cause is logged, never the URL."""


class _StaleConnection(Exception):
    """A pooled connection failed its liveness probe."""


def _log_failure(attempt: int, error: BaseException | None) -> None:
    # The first line of a psycopg2 error names host and port at most, never the password.
    first_line = (str(error).strip().splitlines() or [""])[0]
    logger.warning(
        "exporter database check failed (attempt %d): %s: %s",
        attempt,
        type(error).__name__,
        first_line,
    )


class ScrapePool:
    """At most `max_connections` read-only connections shared by scrape and health threads."""

    def __init__(
        self,
        database_url: str,
        min_connections: int = 1,
        max_connections: int = 2,
        connect_timeout: int = CONNECT_TIMEOUT_SECONDS,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    ) -> None:
        self._database_url = database_url
        self._min_connections = min_connections
        self._max_connections = max_connections
        self._connect_options = {
            "connect_timeout": connect_timeout,
            "application_name": APPLICATION_NAME,
            "options": (
                f"-c statement_timeout={statement_timeout_ms} -c default_transaction_read_only=on"
            ),
        }
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pool_lock = threading.Lock()
        # psycopg2's pool raises instead of waiting when exhausted, so callers queue here.
        self._slots = threading.BoundedSemaphore(max_connections)

    def _open_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._pool_lock:
            if self._pool is None or self._pool.closed:
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    self._min_connections,
                    self._max_connections,
                    self._database_url,
                    **self._connect_options,
                )
            return self._pool

    def _checked_out(self) -> psycopg2.extensions.connection:
        pool = self._open_pool()
        connection = pool.getconn()
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except psycopg2.Error as error:
            pool.putconn(connection, close=True)
            raise _StaleConnection from error
        return connection

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """Yield a live autocommit connection or raise DatabaseUnavailable."""
        with self._slots:
            connection = None
            failure: BaseException | None = None
            # A pooled connection may have died with a database restart: that earns one fresh
            # retry. A failed connect does not, so a scrape waits at most one connect timeout.
            for attempt in (1, 2):
                try:
                    connection = self._checked_out()
                    break
                except _StaleConnection as stale:
                    failure = stale.__cause__
                    _log_failure(attempt, failure)
                except (psycopg2.Error, psycopg2.pool.PoolError) as error:
                    failure = error
                    _log_failure(attempt, failure)
                    break
            if connection is None:
                raise DatabaseUnavailable(type(failure).__name__) from None

            broken = False
            try:
                yield connection
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                broken = True
                raise
            finally:
                pool = self._pool
                if pool is not None and not pool.closed:
                    pool.putconn(connection, close=broken or bool(connection.closed))

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None and not self._pool.closed:
                self._pool.closeall()
            self._pool = None
