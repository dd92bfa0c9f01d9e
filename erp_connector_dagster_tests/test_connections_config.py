"""Connections are configuration: the file format, secrets by reference, unsafe URLs refused,
and redirects never followed with credentials."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from pydantic import ValidationError
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from erp_connector_dagster.erp.http import ErpHttpClient, ErpRequestError
from erp_connector_dagster.settings import (
    ConnectionConfig,
    ConnectionsFile,
    SecretRef,
    load_connections,
    write_connections,
)


@pytest.mark.parametrize(
    "base_url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://metadata.google.internal/computeMetadata",
        "http://[fe80::1]/odata",
        "http://0.0.0.0:8080/",
        "ftp://erp.example.com/",
        "file:///etc/passwd",
    ],
)
def test_unsafe_base_urls_are_refused(base_url: str) -> None:
    with pytest.raises(ValidationError):
        ConnectionConfig(name="acme", erp_type="xero", base_url=base_url)


def test_the_connections_file_round_trips_with_secrets_by_reference(tmp_path) -> None:
    connection = ConnectionConfig(
        name="acme-s4",
        erp_type="sap_s4hana",
        base_url="https://s4.example.com/",
        credentials={"username": "CARBON", "password": SecretRef(env="ACME_S4_PASSWORD")},
    )

    path = write_connections([connection], tmp_path / "connections.yaml")

    assert load_connections(path) == [
        connection.model_copy(update={"base_url": "https://s4.example.com"})
    ]
    assert "ACME_S4_PASSWORD" in path.read_text()


def test_duplicate_connection_names_are_refused() -> None:
    twice = {"name": "acme", "erp_type": "xero", "base_url": "https://x.example.com"}
    with pytest.raises(ValidationError, match="unique"):
        ConnectionsFile.model_validate({"connections": [twice, twice]})


@pytest.fixture
def redirecting_server() -> Iterator[str]:
    @Request.application
    def app(request: Request) -> Response:
        return Response(status=302, headers={"Location": "http://attacker.example/steal"})

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_redirect_is_refused_not_followed(redirecting_server: str) -> None:
    client = ErpHttpClient("acme", redirecting_server, max_retries=0)

    with pytest.raises(ErpRequestError, match="attacker.example"):
        client.get("/api/items", headers={"Authorization": "Bearer secret-token"})
