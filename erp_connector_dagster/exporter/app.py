"""The exporter's small WSGI application and server: GET /metrics and GET /health."""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from erp_connector_dagster.exporter.collector import ErpMetricsCollector
from erp_connector_dagster.exporter.health import DEFAULT_STALE_SYNC_AFTER, check_health
from erp_connector_dagster.exporter.scrape_pool import ScrapePool

if TYPE_CHECKING:
    from dagster import DagsterInstance

logger = logging.getLogger(__name__)

EXPORTER_PORT_ENV = "ERP_CONNECTOR_EXPORTER_PORT"
EXPORTER_HOST_ENV = "ERP_CONNECTOR_EXPORTER_HOST"
DEFAULT_EXPORTER_PORT = 9464
DEFAULT_EXPORTER_HOST = "0.0.0.0"


class ExporterApp:
    """WSGI app serving /metrics (Prometheus exposition) and /health (JSON verdict)."""

    def __init__(
        self,
        scrape_pool: ScrapePool,
        dagster_instance_provider: Callable[[], DagsterInstance | None] | None = None,
        stale_sync_after: timedelta = DEFAULT_STALE_SYNC_AFTER,
    ) -> None:
        self.scrape_pool = scrape_pool
        self.stale_sync_after = stale_sync_after
        # A private registry: only what is computed from the tables, no in-process counters.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ErpMetricsCollector(scrape_pool, dagster_instance_provider))
        self._routes = Map(
            [
                Rule("/metrics", endpoint="metrics", methods=["GET"]),
                Rule("/health", endpoint="health", methods=["GET"]),
                Rule("/", endpoint="index", methods=["GET"]),
            ]
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, _ = self._routes.bind_to_environ(environ).match()
            response = getattr(self, f"_{endpoint}")(request)
        except HTTPException as error:  # 404 and 405 from the route map
            response = error.get_response(environ)
        return response(environ, start_response)

    def _metrics(self, request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encoder(self.registry), status=200, content_type=content_type)

    def _health(self, request: Request) -> Response:
        status_code, verdict = check_health(self.scrape_pool, self.stale_sync_after)
        return Response(
            json.dumps(verdict, sort_keys=True),
            status=status_code,
            content_type="application/json",
        )

    def _index(self, request: Request) -> Response:
        return Response(
            "erp-connector exporter: /metrics, /health\n", content_type="text/plain; charset=utf-8"
        )

    def close(self) -> None:
        self.scrape_pool.close()


def _dagster_instance_from_env() -> Callable[[], DagsterInstance | None] | None:
    """Read the Dagster instance lazily, only when DAGSTER_HOME points at one."""
    if not os.environ.get("DAGSTER_HOME"):
        return None
    instance_holder: list[DagsterInstance] = []
    lock = threading.Lock()

    def provide() -> DagsterInstance | None:
        with lock:
            if not instance_holder:
                from dagster import DagsterInstance

                instance_holder.append(DagsterInstance.get())
            return instance_holder[0]

    return provide


def _given_instance(instance: DagsterInstance) -> DagsterInstance:
    return instance


def build_exporter_app(
    database_url: str,
    dagster_instance: DagsterInstance | None = None,
    stale_sync_after: timedelta = DEFAULT_STALE_SYNC_AFTER,
) -> ExporterApp:
    """Build the WSGI app; the Dagster instance defaults to DAGSTER_HOME's, if that is set."""
    if dagster_instance is not None:
        provider = functools.partial(_given_instance, dagster_instance)
    else:
        provider = _dagster_instance_from_env()
    scrape_pool = ScrapePool(database_url, min_connections=1, max_connections=2)
    return ExporterApp(scrape_pool, provider, stale_sync_after)


class _QuietRequestHandler(WSGIRequestHandler):
    # Prometheus scrapes every few seconds; only failed requests are worth a log line.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).isdigit() and int(code) >= 400:
            super().log_request(code, size)


def make_exporter_server(
    database_url: str,
    host: str,
    port: int,
    dagster_instance: DagsterInstance | None = None,
) -> BaseWSGIServer:
    """A threaded server bound to host:port (port 0 picks a free one: see server.server_port)."""
    app = build_exporter_app(database_url, dagster_instance)
    return make_server(host, port, app, threaded=True, request_handler=_QuietRequestHandler)


def serve_exporter(database_url: str, host: str, port: int) -> None:
    """Serve /metrics and /health until interrupted."""
    server = make_exporter_server(database_url, host, port)
    logger.info("exporter listening on %s:%d", host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("exporter stopping")
    finally:
        server.server_close()
        server.app.close()


def exporter_address_from_env() -> tuple[str, int]:
    """Host and port from ERP_CONNECTOR_EXPORTER_HOST / _PORT, with the container defaults."""
    host = os.environ.get(EXPORTER_HOST_ENV, DEFAULT_EXPORTER_HOST)
    port = int(os.environ.get(EXPORTER_PORT_ENV, DEFAULT_EXPORTER_PORT))
    return host, port
