"""The `erp-connector` command: migrate, demo, sandbox, health checks and on-call tools."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click

from erp_connector_dagster import settings
from erp_connector_dagster.storage import database
from erp_connector_dagster.storage.schema import migrate as apply_migrations


def _database_url() -> str:
    url = database.database_url()
    apply_migrations(url)
    return url


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log each step.")
def main(verbose: bool) -> None:
    """ERP-to-carbon connector: sync ERP procurement data into Scope 3 emissions."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@main.command()
def migrate() -> None:
    """Create or upgrade the erp_connector_service schema."""
    url = database.database_url()
    applied = apply_migrations(url)
    click.echo(f"database {database.redact_url(url)}: "
               f"{len(applied)} migration(s) applied" + (f": {', '.join(applied)}" if applied
                                                        else ", schema is current"))


@main.command()
@click.option("--port", default=8765, show_default=True, help="Loopback port to serve on.")
@click.option("--connections-file", type=click.Path(dir_okay=False), default=None,
              help="Where to write the connections file (default: the configured one).")
@click.option("--all-systems", is_flag=True, help="Serve every ERP dialect, not only the defaults.")
def sandbox(port: int, connections_file: str | None, all_systems: bool) -> None:
    """Serve the sandbox ERP emulators on loopback and write a connections file for them."""
    from erp_connector_dagster.sandbox.server import SandboxServer, sandbox_connections

    server = SandboxServer(
        sandbox_connections(all_systems=all_systems), port=port,
        database_url=_database_url() if all_systems else None,
    ).start()
    path = settings.write_connections(
        server.connection_configs(export_secrets=False),
        Path(connections_file) if connections_file else None,
    )
    click.echo(f"sandbox serving {len(server.connections)} connections on 127.0.0.1:{server.port}")
    click.echo(f"connections file: {path}")
    click.echo("export these before running Dagster against the sandbox:")
    for name, value in sorted(server.secret_environment().items()):
        click.echo(f"  export {name}={value}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@main.command()
def check() -> None:
    """Check the health of every configured connection; exit 1 when one is down."""
    from erp_connector_dagster.erp import build_source

    connections = settings.load_connections()
    if not connections:
        click.echo(f"no connections configured in {settings.connections_file_path()}")
        sys.exit(1)
    down = 0
    for connection in connections:
        health = build_source(connection).check_health()
        state = "ok" if health.healthy else "DOWN"
        latency = f"{health.latency_ms:.0f} ms" if health.latency_ms is not None else "-"
        detail = f"  {health.error}" if health.error else ""
        click.echo(f"{state:4}  {connection.name:24} {connection.erp_type:16} {latency}{detail}")
        down += 0 if health.healthy else 1
    sys.exit(1 if down else 0)


@main.command()
@click.option("--days", default=5, show_default=True, help="Recent sandbox days to materialize.")
def demo(days: int) -> None:
    """Run the whole pipeline on the embedded defaults and print a summary."""
    from erp_connector_dagster.demo import run_demo

    if days < 1:
        raise click.BadParameter("must be at least 1", param_hint="--days")
    summary = run_demo(days=days, progress=True)
    click.echo(summary.render())


def _parse_date(_ctx, _param, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
