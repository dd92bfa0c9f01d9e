"""Shared fixtures: a throwaway PostgreSQL database per test session, migrated."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg2
import pytest

from erp_connector_dagster.storage.database import (
    DATABASE_URL_ENV,
    create_database,
    drop_database,
    server_url,
)
from erp_connector_dagster.storage.schema import migrate


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database on the test server (or the embedded one), with migrations applied."""
    base = server_url()
    name = f"erp_test_{uuid.uuid4().hex[:10]}"
    url = create_database(base, name)
    migrate(url)
    previous = os.environ.get(DATABASE_URL_ENV)
    os.environ[DATABASE_URL_ENV] = url
    yield url
    if previous is None:
        os.environ.pop(DATABASE_URL_ENV, None)
    else:
        os.environ[DATABASE_URL_ENV] = previous
    drop_database(base, name)


@pytest.fixture
def db_connection(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(database_url)
    try:
        yield connection
    finally:
        connection.rollback()
        connection.close()


@pytest.fixture
def fresh_database_url() -> Iterator[str]:
    """A database of its own for one test (for tests that change shared state such as the
    active factor version)."""
    base = server_url()
    name = f"erp_test_{uuid.uuid4().hex[:10]}"
    url = create_database(base, name)
    migrate(url)
    yield url
    drop_database(base, name)
