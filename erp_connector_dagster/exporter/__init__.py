"""The metrics sidecar: Prometheus metrics and a health endpoint computed from PostgreSQL."""

from erp_connector_dagster.exporter.app import (
    build_exporter_app,
    exporter_address_from_env,
    make_exporter_server,
    serve_exporter,
)

__all__ = [
    "build_exporter_app",
    "exporter_address_from_env",
    "make_exporter_server",
    "serve_exporter",
]
