"""Dagster resources that are not ERP sources: the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2.extensions
from dagster import ConfigurableResource
from pydantic import Field

from erp_connector_dagster.storage import database


class PostgresResource(ConfigurableResource):
    """The connector's PostgreSQL database (schema erp_connector_service)."""

    database_url: str = Field(description="libpq URL; pass it as an EnvVar when it has a password.")

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.connection]:
        with database.connection(self.database_url) as conn:
            yield conn
