"""Prometheus metrics computed on scrape from the service's PostgreSQL tables.

Run workers are short-lived, so nothing here is counted in process: every scrape reads the
tables of schema `erp_connector_service` (and, when configured, the Dagster instance through its
Python API) and turns them into metric families under the `gl_erp_connector_` prefix. Each group
of queries is a section; a failing section is logged and flagged in
`gl_erp_connector_exporter_section_errors` while the other sections still answer.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extensions
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from psycopg2 import sql

from erp_connector_dagster.exporter.scrape_pool import DatabaseUnavailable, ScrapePool

if TYPE_CHECKING:
    from dagster import DagsterInstance

logger = logging.getLogger(__name__)

PREFIX = "gl_erp_connector_"
SCHEMA = "erp_connector_service"

# The sync SLO is p99 < 300 s: buckets stay fine around it and reach two hours for stuck jobs.
SYNC_DURATION_BUCKETS_SECONDS = (
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 180.0, 240.0, 300.0, 450.0, 600.0, 900.0, 1800.0,
    3600.0, 7200.0,
)  # fmt: skip
FAILURE_RATIO_WINDOW = "1 hour"
TERMINAL_SYNC_STATUSES = ("succeeded", "failed")
UNFINISHED_SYNC_STATUSES = ("pending", "running")

# Audit event types (erp_connector_dagster.provenance.audit.EVENT_TYPES) the exporter reads.
SYNC_STARTED_EVENT = "sync_started"
SYNC_FINISHED_EVENTS = ("sync_completed", "sync_failed")
# A verification run is recorded as one event whose details carry the report's `ok` flag.
VERIFICATION_EVENT = "verification"

# Counter families: table -> metric name (without the `_total` the client library appends).
# Limitation: these are exact count(*) per connection on every scrape; past tens of millions of
# rows a scrape gets slow, and a per-sync tally (or pg_class estimates) would be needed instead.
RECORD_COUNTERS = (
    ("spend_records", "spend_records", "Spend records stored, including source-deleted ones."),
    ("purchase_orders", "purchase_orders", "Purchase order headers stored."),
    ("purchase_order_lines", "purchase_order_lines", "Purchase order lines stored."),
    ("inventory_snapshots", "inventory_snapshots", "Inventory snapshot rows stored."),
)

MetricSection = Callable[[psycopg2.extensions.cursor], Iterable[Metric]]


def _name(short_name: str) -> str:
    return PREFIX + short_name


def _rows(cursor: psycopg2.extensions.cursor, query: Any, params: Any = None) -> list[tuple]:
    cursor.execute(query, params)
    return cursor.fetchall()


def _table(name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(name))


class OptionalTables:
    """Which provenance tables (migration 0003) exist in this database, read once per scrape."""

    def __init__(self, cursor: psycopg2.extensions.cursor) -> None:
        cursor.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (f"{SCHEMA}.audit_events", f"{SCHEMA}.seals"),
        )
        self.audit_events, self.seals = cursor.fetchone()


class ErpMetricsCollector:
    """A prometheus_client collector that reads the service's tables on every scrape."""

    def __init__(
        self,
        scrape_pool: ScrapePool,
        dagster_instance_provider: Callable[[], DagsterInstance | None] | None = None,
    ) -> None:
        self._scrape_pool = scrape_pool
        self._dagster_instance_provider = dagster_instance_provider

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        section_errors: dict[str, int] = {}
        database_up = 1.0

        try:
            with self._scrape_pool.connection() as connection, connection.cursor() as cursor:
                yield from self._database_sections(cursor, section_errors)
        except DatabaseUnavailable:
            database_up = 0.0

        if self._dagster_instance_provider is not None:
            yield from self._guarded("dagster_runs", section_errors, self._dagster_runs)

        yield GaugeMetricFamily(
            _name("database_up"),
            "1 when the exporter reached PostgreSQL on this scrape, else 0.",
            value=database_up,
        )
        errors = GaugeMetricFamily(
            _name("exporter_section_errors"),
            "1 when a group of exporter queries failed on this scrape.",
            labels=["section"],
        )
        for section, failed in sorted(section_errors.items()):
            errors.add_metric([section], failed)
        yield errors
        yield GaugeMetricFamily(
            _name("exporter_scrape_duration_seconds"),
            "Time the exporter spent computing this scrape.",
            value=time.monotonic() - started,
        )

    def _guarded(
        self, section: str, section_errors: dict[str, int], produce: Callable[[], Iterable[Metric]]
    ) -> list[Metric]:
        # Materialize before yielding, so a half-read section never leaks partial families.
        try:
            families = list(produce())
        # Any failure, SQL or Dagster's, is contained: one broken section must not hide the rest.
        except Exception as error:  # noqa: BLE001
            first_line = (str(error).strip().splitlines() or [""])[0]
            logger.warning(
                "exporter section %s failed: %s: %s", section, type(error).__name__, first_line
            )
            section_errors[section] = 1
            return []
        section_errors[section] = 0
        return families

    def _database_sections(
        self, cursor: psycopg2.extensions.cursor, section_errors: dict[str, int]
    ) -> Iterator[Metric]:
        optional_tables = None
        try:
            optional_tables = OptionalTables(cursor)
        except psycopg2.DatabaseError as error:
            logger.warning("exporter could not inspect optional tables: %s", type(error).__name__)

        sections: list[tuple[str, Callable[[], Iterable[Metric]]]] = [
            ("connections", lambda: connection_metrics(cursor)),
            ("sync_jobs", lambda: sync_job_metrics(cursor, optional_tables)),
            ("records", lambda: record_metrics(cursor)),
            ("quarantine", lambda: quarantine_metrics(cursor)),
            ("emissions", lambda: emission_metrics(cursor)),
            ("cursors", lambda: cursor_metrics(cursor)),
            ("audit", lambda: audit_metrics(cursor, optional_tables)),
        ]
        for section, produce in sections:
            yield from self._guarded(section, section_errors, produce)
            if cursor.connection.closed:
                # The server went away mid-scrape: report it down rather than fail every section.
                raise DatabaseUnavailable("connection lost during scrape")

    def _dagster_runs(self) -> Iterable[Metric]:
        instance = self._dagster_instance_provider() if self._dagster_instance_provider else None
        if instance is None:
            return []
        return [dagster_run_metrics(instance)]


def connection_metrics(cursor: psycopg2.extensions.cursor) -> list[Metric]:
    rows = _rows(
        cursor,
        sql.SQL(
            "SELECT name, erp_type, healthy, latency_ms,"
            " extract(epoch FROM now() - last_checked_at)::float8"
            " FROM {} ORDER BY name"
        ).format(_table("connections")),
    )
    active = GaugeMetricFamily(
        _name("active_connections"), "Connections whose last health check passed."
    )
    known = GaugeMetricFamily(_name("connections"), "Connections known to the service.")
    up = GaugeMetricFamily(
        _name("connection_up"),
        "1 when the connection's last health check passed, 0 when it failed or never ran.",
        labels=["connection", "erp_type"],
    )
    latency = GaugeMetricFamily(
        _name("connection_latency_seconds"),
        "Round trip of the connection's last health check.",
        labels=["connection"],
    )
    check_age = GaugeMetricFamily(
        _name("connection_check_age_seconds"),
        "Seconds since the connection's last health check.",
        labels=["connection"],
    )

    for name, erp_type, healthy, latency_ms, seconds_since_check in rows:
        up.add_metric([name, erp_type], 1.0 if healthy else 0.0)
        if latency_ms is not None:
            latency.add_metric([name], latency_ms / 1000.0)
        if seconds_since_check is not None:
            check_age.add_metric([name], seconds_since_check)

    active.add_metric([], sum(1 for row in rows if row[2]))
    known.add_metric([], len(rows))
    return [active, known, up, latency, check_age]


def sync_job_metrics(
    cursor: psycopg2.extensions.cursor, optional_tables: OptionalTables | None
) -> list[Metric]:
    sync_jobs = _table("sync_jobs")
    by_status = _rows(
        cursor,
        sql.SQL(
            "SELECT connection, mode, status, count(*),"
            " max(extract(epoch FROM now() - coalesce(started_at, created_at)))::float8"
            " FROM {} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).format(sync_jobs),
    )

    # Only jobs in a final state are counted, so the counter never goes down as jobs progress.
    # Limitation: purging old sync_jobs rows lowers the count, which Prometheus reads as a reset.
    finished = CounterMetricFamily(
        _name("sync_jobs"),
        "Sync jobs that reached a final state.",
        labels=["connection", "mode", "status"],
    )
    unfinished = GaugeMetricFamily(
        _name("sync_jobs_unfinished"),
        "Sync jobs pending or running now.",
        labels=["connection", "status"],
    )
    oldest_unfinished = GaugeMetricFamily(
        _name("oldest_unfinished_sync_age_seconds"),
        "Age of the oldest pending or running sync job (a stuck job shows here).",
        labels=["connection"],
    )
    unfinished_counts: dict[tuple[str, str], int] = defaultdict(int)
    oldest_age: dict[str, float] = {}
    failures_by_connection: dict[str, int] = defaultdict(int)
    for connection, mode, status, job_count, oldest_seconds in by_status:
        failures_by_connection.setdefault(connection, 0)
        if status in TERMINAL_SYNC_STATUSES:
            finished.add_metric([connection, mode, status], job_count)
            if status == "failed":
                failures_by_connection[connection] += job_count
        else:
            unfinished_counts[(connection, status)] += job_count
            oldest_age[connection] = max(oldest_age.get(connection, 0.0), oldest_seconds or 0.0)
    for (connection, status), job_count in sorted(unfinished_counts.items()):
        unfinished.add_metric([connection, status], job_count)
    for connection, age_seconds in sorted(oldest_age.items()):
        oldest_unfinished.add_metric([connection], age_seconds)

    connection_errors = _connection_errors(cursor, failures_by_connection)
    duration = _sync_duration_histogram(cursor)

    failed_recent, finished_recent = _rows(
        cursor,
        sql.SQL(
            "SELECT count(*) FILTER (WHERE status = 'failed'), count(*) FROM {}"
            " WHERE status IN ('succeeded', 'failed')"
            " AND finished_at >= now() - %s::interval"
        ).format(sync_jobs),
        (FAILURE_RATIO_WINDOW,),
    )[0]
    failure_ratio = GaugeMetricFamily(
        _name("sync_job_failure_ratio"),
        f"Share of sync jobs finished in the last {FAILURE_RATIO_WINDOW} that failed.",
        value=failed_recent / finished_recent if finished_recent else 0.0,
    )
    finished_window = GaugeMetricFamily(
        _name("sync_jobs_finished_recently"),
        f"Sync jobs finished in the last {FAILURE_RATIO_WINDOW} (the failure ratio's base).",
        value=finished_recent,
    )
    return [
        finished,
        unfinished,
        oldest_unfinished,
        connection_errors,
        duration,
        failure_ratio,
        finished_window,
    ]


def _connection_errors(
    cursor: psycopg2.extensions.cursor, failures_by_connection: dict[str, int]
) -> Metric:
    # Limitation: only failed syncs are counted. Health checks keep no history (the connections
    # table holds the latest outcome), so a failing check shows in connection_up, not here.
    errors_by_connection = dict(failures_by_connection)
    for (name,) in _rows(cursor, sql.SQL("SELECT name FROM {}").format(_table("connections"))):
        errors_by_connection.setdefault(name, 0)

    family = CounterMetricFamily(
        _name("connection_errors"),
        "Sync jobs that failed, per connection (zero for known connections without failures).",
        labels=["connection"],
    )
    for connection, error_count in sorted(errors_by_connection.items()):
        family.add_metric([connection], error_count)
    return family


def _sync_duration_histogram(cursor: psycopg2.extensions.cursor) -> Metric:
    durations = sql.SQL(
        "SELECT connection, extract(epoch FROM finished_at - started_at)::float8 AS seconds"
        " FROM {} WHERE status IN ('succeeded', 'failed')"
        " AND started_at IS NOT NULL AND finished_at IS NOT NULL"
    ).format(_table("sync_jobs"))
    bucket_rows = _rows(
        cursor,
        sql.SQL(
            "WITH durations AS ({durations})"
            " SELECT d.connection, b.le, count(*) FILTER (WHERE d.seconds <= b.le)"
            " FROM durations d CROSS JOIN unnest(%s::float8[]) AS b(le)"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ).format(durations=durations),
        (list(SYNC_DURATION_BUCKETS_SECONDS),),
    )
    totals = _rows(
        cursor,
        sql.SQL(
            "WITH durations AS ({durations})"
            " SELECT connection, count(*), coalesce(sum(seconds), 0) FROM durations GROUP BY 1"
        ).format(durations=durations),
    )

    cumulative: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for connection, upper_bound, at_or_below in bucket_rows:
        cumulative[connection].append((floatToGoString(upper_bound), at_or_below))
    family = HistogramMetricFamily(
        _name("sync_duration_seconds"),
        "Wall time of finished sync jobs, from start to finish.",
        labels=["connection"],
    )
    for connection, job_count, seconds_sum in sorted(totals):
        buckets = cumulative[connection] + [("+Inf", job_count)]
        family.add_metric([connection], buckets, sum_value=seconds_sum)
    return family


def record_metrics(cursor: psycopg2.extensions.cursor) -> list[Metric]:
    families = []
    for table, short_name, help_text in RECORD_COUNTERS:
        family = CounterMetricFamily(_name(short_name), help_text, labels=["connection"])
        rows = _rows(
            cursor,
            sql.SQL("SELECT connection, count(*) FROM {} GROUP BY 1 ORDER BY 1").format(
                _table(table)
            ),
        )
        for connection, record_count in rows:
            family.add_metric([connection], record_count)
        families.append(family)
    return families


def quarantine_metrics(cursor: psycopg2.extensions.cursor) -> list[Metric]:
    # Reasons are written as "class: detail"; the class becomes the label and anything that
    # does not look like a short word (ids, free text) collapses to "other" to bound cardinality.
    rows = _rows(
        cursor,
        sql.SQL(
            "SELECT connection, kind, stage,"
            " CASE WHEN reason_class ~ '^[a-z_]{{1,48}}$' THEN reason_class ELSE 'other' END,"
            " count(*)"
            " FROM (SELECT connection, kind, stage, trim(BOTH '_' FROM regexp_replace("
            "   lower(split_part(reason, ':', 1)), '[^a-z0-9]+', '_', 'g')) AS reason_class"
            "   FROM {}) classified"
            " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        ).format(_table("quarantine")),
    )
    family = GaugeMetricFamily(
        _name("quarantined_records"),
        "Records held in quarantine now (re-running a partition replaces its rows).",
        labels=["connection", "kind", "stage", "reason_class"],
    )
    totals: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for connection, kind, stage, reason_class, record_count in rows:
        totals[(connection, kind, stage, reason_class)] += record_count
    for labels, record_count in sorted(totals.items()):
        family.add_metric(list(labels), record_count)
    return [family]


def emission_metrics(cursor: psycopg2.extensions.cursor) -> list[Metric]:
    emission_lines = _table("emission_lines")
    by_category = _rows(
        cursor,
        sql.SQL(
            "SELECT connection, coalesce(scope3_category::text, 'unclassified'),"
            " coalesce(sum(kgco2e), 0)::float8"
            " FROM {} GROUP BY 1, 2 ORDER BY 1, 2"
        ).format(emission_lines),
    )
    by_connection = _rows(
        cursor,
        sql.SQL(
            "SELECT connection, coalesce(sum(amount_usd), 0)::float8,"
            " coalesce(sum(amount_usd) FILTER ("
            "   WHERE kgco2e IS NULL AND excluded_reason IS NULL), 0)::float8,"
            " count(*) FILTER (WHERE amount_usd IS NULL)"
            " FROM {} GROUP BY 1 ORDER BY 1"
        ).format(emission_lines),
    )
    by_method = _rows(
        cursor,
        sql.SQL("SELECT connection, method, count(*) FROM {} GROUP BY 1, 2 ORDER BY 1, 2").format(
            emission_lines
        ),
    )

    # Restatements replace current lines, so these totals can fall: gauges, not counters.
    emissions = GaugeMetricFamily(
        _name("emissions_kgco2e"),
        "Current calculated emissions in kgCO2e.",
        labels=["connection", "scope3_category"],
    )
    for connection, category, kgco2e in by_category:
        emissions.add_metric([connection, category], kgco2e)
    spend_usd = GaugeMetricFamily(
        _name("spend_usd"), "USD value of current emission lines.", labels=["connection"]
    )
    unmapped = GaugeMetricFamily(
        _name("unmapped_spend_usd"),
        "USD value of current lines with neither an emission result nor an exclusion reason.",
        labels=["connection"],
    )
    without_rate = GaugeMetricFamily(
        _name("emission_lines_without_fx_rate"),
        "Current emission lines whose amount could not be converted to USD.",
        labels=["connection"],
    )
    for connection, amount_usd, unmapped_usd, lines_without_rate in by_connection:
        spend_usd.add_metric([connection], amount_usd)
        unmapped.add_metric([connection], unmapped_usd)
        without_rate.add_metric([connection], lines_without_rate)
    lines = GaugeMetricFamily(
        _name("emission_lines"),
        "Current emission lines by calculation method.",
        labels=["connection", "method"],
    )
    for connection, method, line_count in by_method:
        lines.add_metric([connection, method], line_count)
    return [emissions, spend_usd, unmapped, without_rate, lines]


def cursor_metrics(cursor: psycopg2.extensions.cursor) -> list[Metric]:
    rows = _rows(
        cursor,
        sql.SQL(
            "SELECT connection, kind, extract(epoch FROM now() - cursor_value)::float8"
            " FROM {} ORDER BY 1, 2"
        ).format(_table("sync_cursors")),
    )
    family = GaugeMetricFamily(
        _name("sync_lag_seconds"),
        "Seconds between now and the change cursor of each connection and record kind.",
        labels=["connection", "kind"],
    )
    for connection, kind, lag_seconds in rows:
        family.add_metric([connection, kind], lag_seconds)
    return [family]


def audit_metrics(
    cursor: psycopg2.extensions.cursor, optional_tables: OptionalTables | None
) -> list[Metric]:
    if optional_tables is None:
        raise RuntimeError("optional tables could not be inspected")
    sync_jobs = _table("sync_jobs")
    events_total = CounterMetricFamily(
        _name("audit_events"), "Audit events recorded.", labels=["event_type"]
    )
    verification_failures = CounterMetricFamily(
        _name("chain_verification_failures"),
        "Verification runs recorded in the audit trail whose report was not ok.",
    )
    without_audit = GaugeMetricFamily(
        _name("syncs_without_audit_events"),
        "Sync jobs missing their sync_started event, or finished without a completion event.",
        labels=["connection"],
    )

    if optional_tables.audit_events:
        audit_events = _table("audit_events")
        for event_type, event_count in _rows(
            cursor,
            sql.SQL("SELECT event_type, count(*) FROM {} GROUP BY 1 ORDER BY 1").format(
                audit_events
            ),
        ):
            events_total.add_metric([event_type], event_count)
        ((failed_verifications,),) = _rows(
            cursor,
            sql.SQL(
                "SELECT count(*) FROM {} WHERE event_type = %s AND details->>'ok' = 'false'"
            ).format(audit_events),
            (VERIFICATION_EVENT,),
        )
        verification_failures.add_metric([], failed_verifications)
        # The same rule as the syncs_are_audited asset check, over all syncs ever recorded.
        gap_rows = _rows(
            cursor,
            sql.SQL(
                "SELECT s.connection, count(*) FILTER (WHERE"
                "   (s.status <> 'pending' AND NOT EXISTS (SELECT 1 FROM {audit} a"
                "      WHERE a.sync_id = s.id AND a.event_type = %s))"
                "   OR (s.status IN ('succeeded', 'failed') AND NOT EXISTS (SELECT 1 FROM {audit} a"
                "      WHERE a.sync_id = s.id AND a.event_type = ANY(%s))))"
                " FROM {sync_jobs} s GROUP BY 1 ORDER BY 1"
            ).format(audit=audit_events, sync_jobs=sync_jobs),
            (SYNC_STARTED_EVENT, list(SYNC_FINISHED_EVENTS)),
        )
    else:
        # Without an audit table no sync has an audit trail: every started sync is a gap.
        gap_rows = _rows(
            cursor,
            sql.SQL(
                "SELECT connection, count(*) FILTER (WHERE status <> 'pending') FROM {}"
                " GROUP BY 1 ORDER BY 1"
            ).format(sync_jobs),
        )
    for connection, gap_count in gap_rows:
        without_audit.add_metric([connection], gap_count)

    families: list[Metric] = [events_total, verification_failures, without_audit]
    if optional_tables.seals:
        (seal_age,) = _rows(
            cursor,
            sql.SQL("SELECT extract(epoch FROM now() - max(sealed_at))::float8 FROM {}").format(
                _table("seals")
            ),
        )[0]
        if seal_age is not None:
            families.append(
                GaugeMetricFamily(
                    _name("last_seal_age_seconds"),
                    "Seconds since the newest HMAC seal over the chain heads.",
                    value=seal_age,
                )
            )
    return families


def dagster_run_metrics(instance: DagsterInstance) -> Metric:
    from dagster import DagsterRunStatus, RunsFilter

    family = GaugeMetricFamily(
        _name("dagster_runs"),
        "Runs in the Dagster instance by status (queued runs included).",
        labels=["status"],
    )
    for status in DagsterRunStatus:
        run_count = instance.get_runs_count(RunsFilter(statuses=[status]))
        family.add_metric([status.value.lower()], run_count)
    return family
