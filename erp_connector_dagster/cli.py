"""The `erp-connector` command: migrate, demo, sandbox, health checks and on-call tools.

On-call commands read our own tables (sync_jobs, sync_cursors, the record tables), so they tell
the truth even when Dagster's event log was wiped or runs crashed before reporting.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import click
from tqdm import tqdm

from erp_connector_dagster import settings
from erp_connector_dagster.jobs import (
    DAY_ASSETS,
    DAY_KINDS,
    MAPPING_ASSETS,
    MASTER_DATA_ASSETS,
    SYNCED_ASSET_BY_KIND,
    kinds_of_assets,
)
from erp_connector_dagster.orchestration.backfill import (
    DEFAULT_DAYS_PER_RUN,
    RangeRun,
    cli_instance,
    daemon_running,
    launch_daemon_backfill,
    materialize_days,
    materialize_unpartitioned,
    run_tags,
    wait_for_daemon_backfill,
)
from erp_connector_dagster.orchestration.coverage import (
    Coverage,
    PartitionState,
    day_ranges,
    days_between,
    format_day_ranges,
    partition_coverage,
)
from erp_connector_dagster.orchestration.reprocess import plan_repairs
from erp_connector_dagster.orchestration.status import connection_status
from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.storage import database
from erp_connector_dagster.storage.schema import migrate as apply_migrations
from erp_connector_dagster.storage.sync_jobs import SyncMode, SyncStatus, list_jobs


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
    click.echo(
        f"database {database.redact_url(url)}: "
        f"{len(applied)} migration(s) applied"
        + (f": {', '.join(applied)}" if applied else ", schema is current")
    )


@main.command()
@click.option("--port", default=8765, show_default=True, help="Loopback port to serve on.")
@click.option(
    "--connections-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the connections file (default: the configured one).",
)
@click.option(
    "--demo-only", is_flag=True, help="Serve only the demo's connections, not every ERP dialect."
)
def sandbox(port: int, connections_file: str | None, demo_only: bool) -> None:
    """Serve the sandbox ERP emulators on loopback and write a connections file for them.

    The connections' secrets go to an environment file beside the connections file (mode 600),
    to be sourced before running Dagster or `erp-connector check` against the sandbox.
    """
    from erp_connector_dagster.sandbox.server import SandboxServer, sandbox_connections

    server = SandboxServer(
        sandbox_connections(all_systems=not demo_only),
        port=port,
        database_url=None if demo_only else _database_url(),
    ).start()
    path = settings.write_connections(
        server.connection_configs(export_secrets=False),
        Path(connections_file) if connections_file else None,
    )
    env_file = path.with_name(path.stem + ".env")
    env_file.touch(mode=0o600)
    env_file.chmod(0o600)
    env_file.write_text(
        "".join(
            f"export {name}={value}\n"
            for name, value in sorted(server.secret_environment().items())
        )
    )
    click.echo(f"sandbox serving {len(server.connections)} connections on 127.0.0.1:{server.port}")
    click.echo(f"connections file: {path}")
    click.echo(f"secrets for them: source {env_file}")
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
    healths = []
    for connection in connections:
        health = build_source(connection).check_health()
        healths.append((health, connection.base_url))
        state = "ok" if health.healthy else "DOWN"
        latency = f"{health.latency_ms:.0f} ms" if health.latency_ms is not None else "-"
        detail = f"  {health.error}" if health.error else ""
        click.echo(f"{state:4}  {connection.name:24} {connection.erp_type:16} {latency}{detail}")
        down += 0 if health.healthy else 1
    _record_healths(healths)
    sys.exit(1 if down else 0)


def _record_healths(healths) -> None:
    """Keep the outcome for the exporter; a database that is down does not hide the report."""
    from erp_connector_dagster.storage.connections import record_health

    try:
        with database.connection(_database_url()) as conn, conn.cursor() as cursor:
            for health, base_url in healths:
                record_health(cursor, health, base_url)
    except Exception as error:  # noqa: BLE001 - the health report above is what matters
        click.echo(f"could not record the results in the database: {type(error).__name__}")


@main.command()
@click.option("--days", default=10, show_default=True, help="Recent sandbox days to materialize.")
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


def _selected_connections(names: Sequence[str]) -> list[settings.ConnectionConfig]:
    """Connections from the connections file, narrowed to `names` when any are given."""
    connections = settings.load_connections()
    if not connections:
        raise click.ClickException(
            f"no connections configured in {settings.connections_file_path()}"
        )
    known = {connection.name for connection in connections}
    unknown = sorted(set(names) - known)
    if unknown:
        raise click.BadParameter(
            f"unknown connection(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            param_hint="--connection",
        )
    return [c for c in connections if not names or c.name in names]


def _day_kinds(connection: settings.ConnectionConfig) -> list[RecordKind]:
    from erp_connector_dagster.erp import source_class

    supported = source_class(connection.erp_type).supported_kinds
    return [kind for kind in DAY_KINDS if kind in supported]


def _partition_bounds() -> tuple[dt.date, dt.date]:
    from erp_connector_dagster.partitions import daily_partitions

    first = daily_partitions.get_first_partition_key()
    last = daily_partitions.get_last_partition_key()
    if first is None or last is None:
        raise click.ClickException("no day partitions exist yet")
    return dt.date.fromisoformat(first), dt.date.fromisoformat(last)


def _timestamp(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _counts_text(counts: dict) -> str:
    if not counts:
        return "-"
    labels = (
        ("received", "read"),
        ("inserted", "new"),
        ("updated", "changed"),
        ("marked_deleted", "deleted"),
        ("quarantined", "quarantined"),
    )
    parts = [
        f"{label}={counts[key]}"
        for key, label in labels
        if counts.get(key) or (key == "received" and key in counts)
    ]
    return " ".join(parts) or "-"


def _partitions_text(start: dt.date | None, end: dt.date | None) -> str:
    if start is None:
        return "master data"
    return start.isoformat() if start == end else f"{start}..{end}"


def _render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


STATUS_CHOICE = click.Choice([status.value for status in SyncStatus])


@main.command("sync-jobs")
@click.option(
    "--status",
    "status",
    type=STATUS_CHOICE,
    default=None,
    help="Only jobs with this status (default: all).",
)
@click.option("--since", callback=_parse_date, default=None, help="Jobs created on or after DATE.")
@click.option("--connection", default=None, help="Only this connection.")
@click.option("--limit", default=200, show_default=True, help="Most recent jobs to show.")
def sync_jobs_command(
    status: str | None, since: dt.date | None, connection: str | None, limit: int
) -> None:
    """List sync jobs, oldest first: what ran, for which days, and how it ended."""
    url = _database_url()
    with database.connection(url) as conn, conn.cursor() as cursor:
        jobs = list_jobs(cursor, status=status, since=since, connection=connection, limit=limit)
    if not jobs:
        click.echo("no sync jobs match")
        return
    header = (
        "id",
        "connection",
        "kinds",
        "mode",
        "partitions",
        "status",
        "counts",
        "error",
        "started",
        "finished",
    )
    rows = [
        (
            str(job.id)[:8],
            job.connection,
            ",".join(job.kinds),
            job.mode,
            _partitions_text(job.partition_start, job.partition_end),
            job.status,
            _counts_text(job.counts),
            (job.error or "-")[:80],
            _timestamp(job.started_at),
            _timestamp(job.finished_at),
        )
        for job in reversed(jobs)
    ]
    click.echo(_render_table(header, rows))
    failed = sum(1 for job in jobs if job.status == SyncStatus.FAILED.value)
    click.echo(f"\n{len(jobs)} job(s), {failed} failed")


def _run_plans(definitions, plans, instance, progress: bool) -> list[tuple[str, RangeRun]]:
    outcomes: list[tuple[str, RangeRun]] = []
    work = sum(
        len(day_ranges(plan.days, DEFAULT_DAYS_PER_RUN)) + bool(plan.master_data_kinds)
        for plan in plans
    )
    with tqdm(total=work, desc="reprocessing", unit="run", disable=not progress) as bar:
        for plan in plans:
            tags = run_tags([plan.connection], SyncMode.FULL)
            if plan.master_data_kinds:
                names = [
                    SYNCED_ASSET_BY_KIND[RecordKind(kind)]
                    for kind in sorted(plan.master_data_kinds)
                ]
                outcomes.append(
                    (plan.connection, materialize_unpartitioned(definitions, names, tags, instance))
                )
                bar.update()
            if plan.days:
                names = [SYNCED_ASSET_BY_KIND[RecordKind(k)] for k in sorted(plan.kinds)]
                names = [*names, *MAPPING_ASSETS]
                for run in materialize_days(
                    definitions,
                    names,
                    sorted(plan.days),
                    tags,
                    instance,
                    on_run=lambda _run: bar.update(),
                ):
                    outcomes.append((plan.connection, run))
    return outcomes


@main.command()
@click.option(
    "--status",
    "status",
    type=STATUS_CHOICE,
    default=SyncStatus.FAILED.value,
    show_default=True,
    help="Re-run the partitions of jobs with this status.",
)
@click.option("--since", callback=_parse_date, required=True, help="Jobs created on or after DATE.")
@click.option("--connection", default=None, help="Only this connection.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def reprocess(status: str, since: dt.date, connection: str | None, progress: bool) -> None:
    """Re-run, in this process, the partitions of failed sync jobs; exit 1 if any still fail."""
    from erp_connector_dagster.definitions import build_definitions

    url = _database_url()
    with database.connection(url) as conn, conn.cursor() as cursor:
        jobs = list_jobs(cursor, status=status, since=since, connection=connection, limit=10_000)
        plans = plan_repairs(cursor, jobs)
    if not jobs:
        click.echo(f"no {status} sync jobs since {since}")
        return
    for plan in plans:
        skipped = (
            f"; {len(plan.already_synced)} day(s) synced since, skipped"
            if plan.already_synced
            else ""
        )
        days = format_day_ranges(plan.days) if plan.days else "no days"
        master = (
            f" + master data ({', '.join(sorted(plan.master_data_kinds))})"
            if plan.master_data_kinds
            else ""
        )
        click.echo(
            f"{plan.connection}: {len(plan.job_ids)} {status} job(s) -> {days}{master}{skipped}"
        )
    plans = [plan for plan in plans if not plan.empty]
    if not plans:
        click.echo("nothing to re-run")
        return
    connections = _selected_connections([plan.connection for plan in plans])
    definitions = build_definitions(connections, database_url=url)
    outcomes = _run_plans(definitions, plans, cli_instance(), progress)
    for name, run in outcomes:
        click.echo(f"{name}: {run.describe()}")
    failed = [run for _, run in outcomes if not run.success]
    click.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} run(s) succeeded")
    _hint_missing_neighbours(url, connections, plans)
    sys.exit(1 if failed else 0)


def _hint_missing_neighbours(url: str, connections, plans) -> None:
    """Name days near the repaired ones that no job ever covered."""
    # Days near a failed job that never got a sync job of their own (say, the process died
    # before reaching them) are named here for a backfill rather than re-run.
    _, last_partition = _partition_bounds()
    by_name = {connection.name: connection for connection in connections}
    for plan in plans:
        if not plan.days or plan.connection not in by_name:
            continue
        start = min(plan.days)
        end = min(max(plan.days) + dt.timedelta(days=DEFAULT_DAYS_PER_RUN - 1), last_partition)
        kinds = [RecordKind(kind) for kind in sorted(plan.kinds)]
        with database.connection(url) as conn, conn.cursor() as cursor:
            coverage = partition_coverage(cursor, plan.connection, kinds, start, end)
        missing = coverage.days_in(PartitionState.MISSING)
        if missing:
            click.echo(
                f"{plan.connection}: {len(missing)} day(s) nearby were never synced "
                f"({format_day_ranges(missing)}); run `erp-connector backfill --since "
                f"{missing[0]} --until {missing[-1]} --connection {plan.connection} --only-pending`"
            )


def _coverages(url: str, connections, kinds_for, start: dt.date, end: dt.date) -> list[Coverage]:
    with database.connection(url) as conn, conn.cursor() as cursor:
        return [partition_coverage(cursor, c.name, kinds_for(c), start, end) for c in connections]


@main.command()
@click.option("--since", callback=_parse_date, required=True, help="First day to backfill.")
@click.option(
    "--until",
    callback=_parse_date,
    default=None,
    help="Last day to backfill (default: the latest complete day).",
)
@click.option(
    "--connection",
    "connection_names",
    multiple=True,
    help="Only this connection (repeatable; default: all).",
)
@click.option(
    "--assets",
    "asset_option",
    multiple=True,
    help="Day-partitioned assets to backfill, comma separated or repeated "
    f"(default: all of {', '.join(DAY_ASSETS)}).",
)
@click.option(
    "--mode",
    type=click.Choice([m.value for m in SyncMode]),
    default=SyncMode.FULL.value,
    show_default=True,
    help="How the ERP is read.",
)
@click.option(
    "--only-pending",
    is_flag=True,
    help="Only days that are missing, failed or interrupted (default: every day, so "
    "edits and deletions in synced days are picked up too).",
)
@click.option("--with-master-data", is_flag=True, help="Re-read vendors and materials first.")
@click.option(
    "--days-per-run",
    default=DEFAULT_DAYS_PER_RUN,
    show_default=True,
    help="Most days one in-process run covers.",
)
@click.option("--in-process", is_flag=True, help="Run here even when a daemon is running.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="When the daemon runs the backfill, wait for it and report the days after.",
)
@click.option(
    "--wait-timeout",
    default=6 * 3600,
    show_default=True,
    help="Seconds to wait for a daemon backfill before giving up waiting (it carries on).",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def backfill(
    since: dt.date,
    until: dt.date | None,
    connection_names: tuple[str, ...],
    asset_option: tuple[str, ...],
    mode: str,
    only_pending: bool,
    with_master_data: bool,
    days_per_run: int,
    in_process: bool,
    wait: bool,
    wait_timeout: int,
    progress: bool,
) -> None:
    """Backfill day partitions after an outage; report missing and failed days before and after."""
    from erp_connector_dagster.definitions import build_definitions

    asset_names = [
        name.strip() for value in asset_option for name in value.split(",") if name.strip()
    ] or list(DAY_ASSETS)
    unknown = sorted(set(asset_names) - set(DAY_ASSETS))
    if unknown:
        raise click.BadParameter(
            f"not a day-partitioned asset: {', '.join(unknown)}", param_hint="--assets"
        )
    if days_per_run < 1:
        raise click.BadParameter("must be at least 1", param_hint="--days-per-run")
    first_partition, last_partition = _partition_bounds()
    start, end = max(since, first_partition), min(until or last_partition, last_partition)
    if start > end:
        raise click.BadParameter(f"no day partitions between {since} and {until or end}")

    url = _database_url()
    connections = _selected_connections(connection_names)
    selected_kinds = kinds_of_assets(asset_names)

    def kinds_for(connection) -> list[RecordKind]:
        supported = _day_kinds(connection)
        return [k for k in selected_kinds if k in supported] or supported

    click.echo(
        f"backfill {start}..{end} ({(end - start).days + 1} days), {mode} mode, "
        f"connections: {', '.join(c.name for c in connections)}"
    )
    click.echo(f"assets: {', '.join(asset_names)}")
    before = _coverages(url, connections, kinds_for, start, end)
    click.echo("before:")
    for coverage in before:
        click.echo(f"  {coverage.describe()}")

    if only_pending:
        days = sorted({day for coverage in before for day in coverage.pending})
    else:
        days = days_between(start, end)
    if not days:
        click.echo("nothing to backfill")
        return
    definitions = build_definitions(connections, database_url=url)
    tags = run_tags([c.name for c in connections] if connection_names else None, SyncMode(mode))
    instance = cli_instance()

    if not in_process and daemon_running(instance):
        names = [*MASTER_DATA_ASSETS, *asset_names] if with_master_data else asset_names
        backfill_id = launch_daemon_backfill(
            instance, definitions, names, days, tags, title=f"erp-connector backfill {start}..{end}"
        )
        click.echo(
            f"daemon is running: launched Dagster backfill {backfill_id} over {len(days)} day(s)"
        )
        if not wait:
            click.echo("follow it in the UI, then run `erp-connector status`")
            return
        click.echo("waiting for it (interrupting stops the waiting, not the backfill)")
        with tqdm(desc="backfilling", unit="run", disable=not progress) as bar:
            state = wait_for_daemon_backfill(
                instance,
                backfill_id,
                timeout_seconds=wait_timeout,
                # Runs only ever accrue, so the bar counts the runs launched so far.
                on_poll=lambda state: bar.update(len(state.runs) - bar.n),
            )
        runs = state.runs
        if not state.finished:
            click.echo(
                f"backfill {backfill_id} still {state.status.lower()} after {wait_timeout} s; "
                "the daemon carries on: follow it in the UI"
            )
        else:
            click.echo(f"backfill {backfill_id}: {state.status.lower()}")
        _report_after(url, connections, kinds_for, start, end, runs, finished=state.succeeded)

    ranges = day_ranges(days, days_per_run)
    click.echo(
        f"no daemon serving this instance: running in process, {len(ranges)} run(s) of at "
        f"most {days_per_run} days"
    )
    runs: list[RangeRun] = []
    if with_master_data:
        runs.append(
            materialize_unpartitioned(definitions, list(MASTER_DATA_ASSETS), tags, instance)
        )
        click.echo(f"  master data: {runs[-1].describe()}")
    with tqdm(total=len(ranges), desc="backfilling", unit="run", disable=not progress) as bar:
        for run in materialize_days(
            definitions,
            asset_names,
            days,
            tags,
            instance,
            days_per_run=days_per_run,
            on_run=lambda _run: bar.update(),
        ):
            runs.append(run)
    _report_after(url, connections, kinds_for, start, end, runs)


def _report_after(
    url: str,
    connections,
    kinds_for,
    start: dt.date,
    end: dt.date,
    runs: Sequence[RangeRun],
    *,
    finished: bool = True,
) -> None:
    """Print the runs and the days' coverage after a backfill; exit 1 if anything is left."""
    for run in runs:
        click.echo(f"  {run.describe()}")
    after = _coverages(url, connections, kinds_for, start, end)
    click.echo("after:")
    for coverage in after:
        click.echo(f"  {coverage.describe()}")
    failed_runs = [run for run in runs if not run.success]
    pending = sum(len(coverage.pending) for coverage in after)
    click.echo(
        f"{len(runs) - len(failed_runs)} of {len(runs)} run(s) succeeded; "
        f"{pending} day partition(s) still need attention"
    )
    sys.exit(1 if failed_runs or pending or not finished else 0)


def _lag_text(lag: dt.timedelta | None) -> str:
    if lag is None:
        return "-"
    hours = lag.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


@main.command()
@click.option(
    "--days",
    default=7,
    show_default=True,
    help="Recent day partitions to check for missing or failed syncs.",
)
@click.option("--connection", "connection_names", multiple=True, help="Only this connection.")
def status(days: int, connection_names: tuple[str, ...]) -> None:
    """Per connection: last successful sync, committed cursor and lag, days needing attention."""
    if days < 1:
        raise click.BadParameter("must be at least 1", param_hint="--days")
    url = _database_url()
    connections = _selected_connections(connection_names)
    _, last_partition = _partition_bounds()
    window = (last_partition - dt.timedelta(days=days - 1), last_partition)
    with database.connection(url) as conn, conn.cursor() as cursor:
        statuses = [
            connection_status(cursor, c.name, c.erp_type, _day_kinds(c), window)
            for c in connections
        ]
    header = (
        "connection",
        "erp",
        "last success",
        "cursor",
        "lag",
        "pending partitions",
        "last error",
    )
    rows = [
        (
            s.connection,
            s.erp_type,
            _timestamp(s.last_success),
            _timestamp(s.cursor),
            _lag_text(s.lag()),
            f"{len(s.pending)} ({format_day_ranges(s.pending, limit=3)})" if s.pending else "0",
            (s.last_error or "-")[:60]
            if s.last_failure and (not s.last_success or s.last_failure > s.last_success)
            else "-",
        )
        for s in statuses
    ]
    click.echo(f"day partitions checked: {window[0]}..{window[1]}")
    click.echo(_render_table(header, rows))


@main.command()
def verify() -> None:
    """Verify the hash chains, audit chain and seals; exit 1 naming each broken record."""
    from erp_connector_dagster.provenance.seal import seal_key_from_env
    from erp_connector_dagster.provenance.verifier import verify_database

    url = _database_url()
    with database.connection(url) as conn:
        report = verify_database(conn, seal_key_from_env())
    click.echo(report.summary())
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("factor_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--version", "version", required=True, help="Version name of the new factors.")
@click.option("--factor-set", default=None, help="Factor set name (default: the shipped EPA set).")
@click.option("--dollar-year", type=int, default=2022, show_default=True)
@click.option("--since", callback=_parse_date, default=None, help="First transaction day.")
@click.option("--until", callback=_parse_date, default=None, help="Day after the last one.")
def restate(
    factor_file: Path,
    version: str,
    factor_set: str | None,
    dollar_year: int,
    since: dt.date | None,
    until: dt.date | None,
) -> None:
    """Load a new version of a factor set and recalculate stored emissions with it.

    Earlier results stay queryable (is_current = false); the chains of the recalculated days
    are rebuilt and the restatement is an audit event.
    """
    from erp_connector_dagster.methodology.restatement import restate_with_provenance
    from erp_connector_dagster.reference.factors import DEFAULT_FACTOR_SET, load_factor_set

    new_set = load_factor_set(factor_file, factor_set or DEFAULT_FACTOR_SET, version, dollar_year)
    url = _database_url()
    with database.connection(url) as conn:
        result = restate_with_provenance(conn, new_set, version, since, until)
    click.echo(
        f"restated {result.rows_restated} emission lines of {result.factor_set} from "
        f"{', '.join(result.previous_versions) or '-'} to {result.new_version}: "
        f"{result.kgco2e_before:,.1f} -> {result.kgco2e_after:,.1f} kgCO2e"
    )
    if result.rows_without_factor:
        click.echo(
            f"{result.rows_without_factor} lines kept their factor: no factor in the new "
            f"version for {', '.join(result.codes_without_factor[:10])}"
        )


@main.command("audit-export")
@click.argument("path", type=click.Path(path_type=Path))
def audit_export(path: Path) -> None:
    """Write an audit bundle (a directory, or PATH ending in .tar.gz) for offline verification."""
    from erp_connector_dagster.provenance.bundle import export_bundle

    url = _database_url()
    with database.connection(url) as conn:
        try:
            written = export_bundle(conn, path)
        except FileExistsError as error:
            raise click.ClickException(str(error)) from None
    click.echo(f"audit bundle written to {written}")


@main.command()
@click.option("--host", default=None, help="Address to listen on (default from the environment).")
@click.option("--port", type=int, default=None, help="Port (default from the environment).")
def exporter(host: str | None, port: int | None) -> None:
    """Serve Prometheus metrics and /health from the database (the sidecar)."""
    from erp_connector_dagster.exporter import exporter_address_from_env, serve_exporter

    default_host, default_port = exporter_address_from_env()
    url = _database_url()
    serve_exporter(url, host or default_host, default_port if port is None else port)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
