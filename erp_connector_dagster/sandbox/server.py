"""Serve sandbox ERP emulators on loopback and describe them as connections.

Each sandbox connection is one emulator (one ERP dialect) mounted under `/<connection name>` of
a single threaded HTTP server on 127.0.0.1, so its base URL is
`http://127.0.0.1:<port>/<name>`. Emulators reached through a database instead of HTTP build
their views in PostgreSQL and get a `postgresql://` base URL.

An emulator module (`erp_connector_dagster.sandbox.<system>`) provides:
    SANDBOX_CREDENTIALS: dict[str, str]   resource field -> value the emulator accepts
    SECRET_FIELDS: frozenset[str]         which of those are secrets (passed via environment)
    SANDBOX_OPTIONS: dict[str, object]    other resource fields (tenant, realm, company id)
    create_app(company, faults, credentials) -> WSGI application          (HTTP dialects)
    prepare_database(company, database_url, connection_name) -> str       (SQL dialects)
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import os
import threading
from dataclasses import dataclass, field
from types import ModuleType

from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Response

from erp_connector_dagster.sandbox.company import DEFAULT_SEED, SandboxCompany, shared_company
from erp_connector_dagster.sandbox.faults import FaultPlan
from erp_connector_dagster.settings import ConnectionConfig, SecretRef

logger = logging.getLogger("erp_connector_dagster.sandbox")

EMULATOR_MODULES: dict[str, str] = {
    "sap_s4hana": "erp_connector_dagster.sandbox.sap_s4hana",
    "sap_ecc": "erp_connector_dagster.sandbox.sap_ecc",
    "oracle_fusion": "erp_connector_dagster.sandbox.oracle_fusion",
    "oracle_ebs": "erp_connector_dagster.sandbox.oracle_ebs",
    "dynamics365_fo": "erp_connector_dagster.sandbox.dynamics365_fo",
    "dynamics365_bc": "erp_connector_dagster.sandbox.dynamics365_bc",
    "netsuite": "erp_connector_dagster.sandbox.netsuite",
    "workday": "erp_connector_dagster.sandbox.workday",
    "sage_intacct": "erp_connector_dagster.sandbox.sage_intacct",
    "xero": "erp_connector_dagster.sandbox.xero",
    "quickbooks": "erp_connector_dagster.sandbox.quickbooks",
}

# The connections `erp-connector sandbox` and the demo serve by default: every dialect that is
# built, each a different company (seed) so that their emissions add up rather than repeat.
DEFAULT_SANDBOX_CONNECTIONS: tuple[tuple[str, str, int], ...] = (
    ("sandbox-s4hana", "sap_s4hana", DEFAULT_SEED),
    ("sandbox-netsuite", "netsuite", DEFAULT_SEED + 1),
)


def emulator_module(erp_type: str) -> ModuleType:
    try:
        return importlib.import_module(EMULATOR_MODULES[erp_type])
    except KeyError:
        raise ValueError(f"no sandbox emulator for erp_type {erp_type!r}") from None


def available_erp_types() -> list[str]:
    """ERP types whose emulator and source modules both exist in this build."""
    from erp_connector_dagster.erp import ERP_SOURCE_CLASSES

    return [
        erp_type
        for erp_type, module_name in EMULATOR_MODULES.items()
        if importlib.util.find_spec(module_name) is not None
        and importlib.util.find_spec(ERP_SOURCE_CLASSES[erp_type].split(":")[0]) is not None
    ]


@dataclass
class SandboxConnection:
    """One emulated ERP tenant."""

    name: str
    erp_type: str
    seed: int = DEFAULT_SEED
    faults: FaultPlan = field(default_factory=FaultPlan)
    company: SandboxCompany | None = None

    def __post_init__(self) -> None:
        if self.company is None:
            self.company = shared_company(self.seed)


def _buffered_body(app):
    """Read each request body before the emulator answers: an answer that breaks off (a
    dropped-connection fault) must not leave the client still sending, waiting for a timeout."""

    def middleware(environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(length))
        return app(environ, start_response)

    return middleware


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-") -> None:  # one line per request is noise here
        pass

    def log_error(self, format: str, *args) -> None:  # noqa: A002 - signature from stdlib
        logger.debug(format, *args)


class SandboxServer:
    """All sandbox emulators behind one loopback HTTP server, started in a thread."""

    def __init__(
        self,
        connections: list[SandboxConnection],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        database_url: str | None = None,
    ) -> None:
        self.connections = {connection.name: connection for connection in connections}
        self.host = host
        self.port = port
        self.database_url = database_url
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._base_urls: dict[str, str] = {}

    def start(self) -> SandboxServer:
        mounts = {}
        for connection in self.connections.values():
            module = emulator_module(connection.erp_type)
            credentials = dict(module.SANDBOX_CREDENTIALS)
            if hasattr(module, "create_app"):
                mounts[f"/{connection.name}"] = _buffered_body(
                    module.create_app(connection.company, connection.faults, credentials)
                )
            else:
                if not self.database_url:
                    raise ValueError(f"{connection.erp_type} sandbox needs a database URL")
                self._base_urls[connection.name] = module.prepare_database(
                    connection.company, self.database_url, connection.name
                )
        app = DispatcherMiddleware(Response("no such sandbox connection", status=404), mounts)
        self._server = make_server(
            self.host, self.port, app, threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="erp-sandbox", daemon=True
        )
        self._thread.start()
        for name in mounts:
            self._base_urls[name.lstrip("/")] = f"http://{self.host}:{self.port}{name}"
        logger.info("sandbox serving %d connections on port %d", len(self.connections), self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def base_url(self, name: str) -> str:
        return self._base_urls[name]

    def connection_configs(self, *, export_secrets: bool = True) -> list[ConnectionConfig]:
        """Connections for the sandbox, secrets as environment references (set them if asked)."""
        configs = []
        for connection in self.connections.values():
            module = emulator_module(connection.erp_type)
            credentials: dict[str, str | SecretRef] = {}
            for field_name, value in module.SANDBOX_CREDENTIALS.items():
                if field_name in module.SECRET_FIELDS:
                    env_name = sandbox_secret_env(connection.name, field_name)
                    if export_secrets:
                        os.environ[env_name] = value
                    credentials[field_name] = SecretRef(env=env_name)
                else:
                    credentials[field_name] = value
            configs.append(
                ConnectionConfig(
                    name=connection.name,
                    erp_type=connection.erp_type,
                    base_url=self._base_urls[connection.name],
                    options=dict(getattr(module, "SANDBOX_OPTIONS", {})),
                    credentials=credentials,
                )
            )
        return configs

    def secret_environment(self) -> dict[str, str]:
        """The environment variables the sandbox connections' secrets are read from."""
        environment = {}
        for connection in self.connections.values():
            module = emulator_module(connection.erp_type)
            for field_name in module.SECRET_FIELDS:
                environment[sandbox_secret_env(connection.name, field_name)] = (
                    module.SANDBOX_CREDENTIALS[field_name]
                )
        return environment


def sandbox_secret_env(connection_name: str, field_name: str) -> str:
    return f"ERP_{connection_name}_{field_name}".upper().replace("-", "_")


def sandbox_connections(*, all_systems: bool = False) -> list[SandboxConnection]:
    """The default sandbox connections, or one per ERP dialect built (each its own company)."""
    if not all_systems:
        return [
            SandboxConnection(name=name, erp_type=erp_type, seed=seed)
            for name, erp_type, seed in DEFAULT_SANDBOX_CONNECTIONS
        ]
    return [
        SandboxConnection(
            name=f"sandbox-{erp_type.replace('_', '-')}", erp_type=erp_type, seed=DEFAULT_SEED + i
        )
        for i, erp_type in enumerate(available_erp_types())
    ]
