"""Assembles the Dagster Definitions: one ERP resource per configured connection, the assets,
checks, sensors and schedules. Nothing else lives here."""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar

from erp_connector_dagster.assets import build_assets
from erp_connector_dagster.checks import build_checks
from erp_connector_dagster.erp import build_source
from erp_connector_dagster.jobs import build_jobs
from erp_connector_dagster.resources import PostgresResource
from erp_connector_dagster.schedules import build_schedules
from erp_connector_dagster.sensors import build_change_sensors
from erp_connector_dagster.settings import DATABASE_URL_ENV, ConnectionConfig, load_connections
from erp_connector_dagster.storage.database import embedded_database_url


def database_resource(database_url: str | None = None) -> PostgresResource:
    if database_url:
        return PostgresResource(database_url=database_url)
    if os.environ.get(DATABASE_URL_ENV):
        return PostgresResource(database_url=EnvVar(DATABASE_URL_ENV))
    return PostgresResource(database_url=embedded_database_url())


def build_definitions(
    connections: list[ConnectionConfig] | None = None, database_url: str | None = None
) -> Definitions:
    """Definitions for the given connections (default: the connections file)."""
    connections = load_connections() if connections is None else connections
    erp_resources = {
        connection.resource_key: build_source(connection) for connection in connections
    }
    return Definitions(
        assets=build_assets(sorted(erp_resources)),
        asset_checks=build_checks(),
        resources={"database": database_resource(database_url), **erp_resources},
        jobs=build_jobs(),
        schedules=build_schedules(),
        sensors=build_change_sensors(connections),
    )


defs = build_definitions()
