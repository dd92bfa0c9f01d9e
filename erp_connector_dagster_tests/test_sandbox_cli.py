"""`erp-connector sandbox` serves every ERP dialect; `erp-connector check` reports them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import yaml

from erp_connector_dagster.sandbox.server import available_erp_types


def _cli(*args: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "erp_connector_dagster.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def _sourced(env_file: Path) -> dict[str, str]:
    exported = {}
    for line in env_file.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        exported[name] = value
    return exported


def test_sandbox_serves_every_dialect_and_check_reports_each(
    database_url: str, tmp_path: Path
) -> None:
    connections_file = tmp_path / "connections.yaml"
    env = {
        **os.environ,
        "ERP_CONNECTOR_DATABASE_URL": database_url,
        "ERP_CONNECTOR_DATA_DIR": str(tmp_path),
        "ERP_CONNECTOR_CONNECTIONS_FILE": str(connections_file),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "erp_connector_dagster.cli", "sandbox", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        env_file = tmp_path / "connections.env"
        deadline = time.monotonic() + 90
        while not env_file.exists() or not env_file.read_text():
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "sandbox did not start"
            time.sleep(0.2)
        secrets = _sourced(env_file)
        configured = yaml.safe_load(connections_file.read_text())["connections"]

        healthy = _cli("check", env={**env, **secrets})

        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        assert not any(value in connections_file.read_text() for value in secrets.values())
        assert {c["erp_type"] for c in configured} == set(available_erp_types())
        assert len(available_erp_types()) == 11
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert healthy.stdout.count("ok ") == len(configured)
        with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM erp_connector_service.connections"
                " WHERE healthy AND name = ANY(%s)",
                ([c["name"] for c in configured],),
            )
            assert cursor.fetchone()[0] == len(configured)
        conn.close()

        configured[0]["base_url"] = "http://127.0.0.1:9/closed"
        connections_file.write_text(yaml.safe_dump({"connections": configured}))
        one_down = _cli("check", env={**env, **secrets})

        assert one_down.returncode == 1
        assert "DOWN" in one_down.stdout and configured[0]["name"] in one_down.stdout
        assert not any(value in one_down.stdout for value in secrets.values())
    finally:
        server.terminate()
        server.wait(timeout=30)
