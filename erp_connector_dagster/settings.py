"""Configuration from the environment and the connections file.

The connections file (YAML) declares any number of ERP connections:

    connections:
      - name: acme-sap
        erp_type: sap_s4hana
        base_url: https://erp.example.com
        options: {page_size: 500}
        credentials:
          username: COMM_USER_1            # a plain value
          password: {env: ACME_SAP_PASSWORD}  # read from the environment at run time

Secrets are referenced by environment variable name only; the file never holds them.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, Field, field_validator

DATABASE_URL_ENV = "ERP_CONNECTOR_DATABASE_URL"
CONNECTIONS_FILE_ENV = "ERP_CONNECTOR_CONNECTIONS_FILE"
DATA_DIR_ENV = "ERP_CONNECTOR_DATA_DIR"
SEAL_KEY_ENV = "ERP_CONNECTOR_SEAL_KEY"
BATCH_SIZE_ENV = "ERP_CONNECTOR_BATCH_SIZE"

DEFAULT_BATCH_SIZE = 1000
DEFAULT_DATA_DIR = Path.home() / ".erp-connector"


METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


def _is_link_local(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_link_local or address.is_unspecified


class SecretRef(BaseModel):
    """A credential read from an environment variable when the resource is used."""

    env: str


class ConnectionConfig(BaseModel):
    """One ERP connection as declared in the connections file."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    erp_type: str
    base_url: str
    options: dict[str, Any] = Field(default_factory=dict)
    credentials: dict[str, str | SecretRef] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _http_or_database_url(cls, value: str) -> str:
        allowed = ("http://", "https://", "postgresql://", "postgres://")
        if not value.startswith(allowed):
            raise ValueError(f"base_url must start with one of {', '.join(allowed)}")
        host = (urlsplit(value).hostname or "").lower()
        if host in METADATA_HOSTS or _is_link_local(host):
            # Cloud metadata endpoints hand out credentials; no ERP lives there.
            raise ValueError(f"base_url host {host!r} is a link-local or metadata address")
        return value.rstrip("/")

    @property
    def resource_key(self) -> str:
        return "erp_" + self.name.replace("-", "_")


class ConnectionsFile(BaseModel):
    """The parsed connections file."""

    connections: list[ConnectionConfig] = Field(default_factory=list)

    @field_validator("connections")
    @classmethod
    def _unique_names(cls, value: list[ConnectionConfig]) -> list[ConnectionConfig]:
        names = [connection.name for connection in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"connection names must be unique: {', '.join(duplicates)}")
        return value


def data_dir() -> Path:
    """Local folder for the embedded database, sandbox files and caches."""
    return Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)).expanduser()


def batch_size() -> int:
    return int(os.environ.get(BATCH_SIZE_ENV, DEFAULT_BATCH_SIZE))


def connections_file_path() -> Path:
    configured = os.environ.get(CONNECTIONS_FILE_ENV)
    if configured:
        return Path(configured).expanduser()
    return data_dir() / "connections.yaml"


def load_connections(path: Path | None = None) -> list[ConnectionConfig]:
    """Read the connections file; a missing file means no connections yet."""
    path = path or connections_file_path()
    if not path.exists():
        return []
    parsed = yaml.safe_load(path.read_text()) or {}
    return ConnectionsFile.model_validate(parsed).connections


def write_connections(connections: list[ConnectionConfig], path: Path | None = None) -> Path:
    path = path or connections_file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    document = ConnectionsFile(connections=connections).model_dump(mode="json")
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
