"""The sync step every record asset shares: read one day from each connection, store it.

For each configured connection a sync job is opened, the ERP is read in batches, records are
written through the COPY writer (idempotently, chained), rejects go to quarantine with their
reason, and audit events mark the start and the end. One connection failing does not stop the
others; the materialization fails afterwards naming the connections that failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from dagster import AssetExecutionContext, Failure, MetadataValue

from erp_connector_dagster.erp.base import ConnectionHealth, ErpSource, SyncWindow
from erp_connector_dagster.erp.http import ErpAuthError, RetryableError
from erp_connector_dagster.provenance.audit import record_audit_event
from erp_connector_dagster.provenance.seal import seal_heads, seal_key_from_env
from erp_connector_dagster.records import CanonicalRecord, RecordKind, RejectedRecord
from erp_connector_dagster.resources import PostgresResource
from erp_connector_dagster.storage.connections import record_health
from erp_connector_dagster.storage.sync_jobs import SyncMode, SyncStatus, finish_job, start_job
from erp_connector_dagster.storage.writers import WriteCounts, replace_quarantine, write_records

MODE_TAG = "erp_connector/mode"
CONNECTIONS_TAG = "erp_connector/connections"
CURSOR_TAG_PREFIX = "erp_connector/since/"


@dataclass
class SyncOutcome:
    """What a sync of one kind did across all connections."""

    kind: RecordKind
    counts: dict[str, WriteCounts] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    sync_ids: dict[str, str] = field(default_factory=dict)

    @property
    def row_count(self) -> int:
        return sum(count.received for count in self.counts.values())

    def metadata(self) -> dict[str, object]:
        per_connection = {
            name: {**count.as_metadata(), "chain_head": count.chain_head}
            for name, count in self.counts.items()
        }
        return {
            "dagster/row_count": self.row_count,
            "connections": MetadataValue.json(per_connection),
            "quarantined": sum(count.quarantined for count in self.counts.values()),
            "sync_ids": MetadataValue.json(self.sync_ids),
            "failed_connections": MetadataValue.json(self.failures),
        }


def run_mode(context: AssetExecutionContext) -> SyncMode:
    """The sync mode asked for by the run's tag (sensors set it); full by default."""
    return SyncMode(context.run.tags.get(MODE_TAG, SyncMode.FULL.value))


def selected_sources(
    context: AssetExecutionContext, resource_keys: Sequence[str]
) -> dict[str, ErpSource]:
    """The ERP sources this run covers: all, or those named in the connections tag."""
    sources = {key: getattr(context.resources, key) for key in resource_keys}
    wanted = context.run.tags.get(CONNECTIONS_TAG)
    by_name = {source.connection_name: source for source in sources.values()}
    if not wanted:
        return by_name
    names = {name.strip() for name in wanted.split(",") if name.strip()}
    unknown = names - set(by_name)
    if unknown:
        raise Failure(f"unknown connections in tag {CONNECTIONS_TAG}: {sorted(unknown)}")
    return {name: source for name, source in by_name.items() if name in names}


def _since(context: AssetExecutionContext, connection: str) -> dt.datetime | None:
    value = context.run.tags.get(CURSOR_TAG_PREFIX + connection)
    return dt.datetime.fromisoformat(value) if value else None


def sync_kind(
    context: AssetExecutionContext,
    kind: RecordKind,
    sources: dict[str, ErpSource],
    database: PostgresResource,
    day: dt.date | None,
) -> SyncOutcome:
    """Sync one kind of record for one day (or all master data) from every source."""
    mode = run_mode(context)
    outcome = SyncOutcome(kind)
    for name, source in sources.items():
        if kind not in source.supported_kinds:
            continue
        window = SyncWindow() if day is None else SyncWindow.for_day(day)
        if mode is not SyncMode.FULL:
            window = window.model_copy(update={"changed_since": _since(context, name)})
        try:
            counts, sync_id = _sync_connection(context, kind, source, database, day, window, mode)
        except Exception as error:  # noqa: BLE001 - recorded per connection, raised below
            outcome.failures[name] = _describe(error)
            context.log.error(f"sync of {kind.value} from {name} failed: {_describe(error)}")
            _record_sync_health(database, source, error)
            continue
        _record_sync_health(database, source, None)
        outcome.counts[name] = counts
        outcome.sync_ids[name] = str(sync_id)
        context.log.info(
            f"synced {counts.received} {kind.value} records from {name} for {day or 'master'}"
            f" ({counts.inserted} new, {counts.updated} changed,"
            f" {counts.marked_deleted} deleted, {counts.quarantined} quarantined)"
        )
    if outcome.failures:
        raise Failure(
            description=f"{kind.value} sync failed for {sorted(outcome.failures)}",
            metadata={"failed_connections": MetadataValue.json(outcome.failures)},
        )
    return outcome


def _sync_connection(context, kind, source, database, day, window, mode):
    partition = (day, day) if day else (None, None)
    with database.transaction() as conn, conn.cursor() as cursor:
        sync_id = start_job(
            cursor, source.connection_name, [kind.value], mode, *partition, context.run_id
        )
        record_audit_event(
            cursor,
            "sync_started",
            connection=source.connection_name,
            kind=kind.value,
            partition_date=day,
            sync_id=str(sync_id),
            details={"mode": mode.value, "erp_type": source.erp_type, "run_id": context.run_id},
        )
    try:
        with database.transaction() as conn, conn.cursor() as cursor:
            state = _ReadState()
            counts = write_records(
                cursor,
                kind,
                source.connection_name,
                _collect(source.fetch(kind, window), state),
                sync_id=sync_id,
                partition_date=day,
                full_read=lambda: mode is SyncMode.FULL and state.complete,
                deleted_keys=state.deleted,
            )
            rejected = state.rejected
            counts.quarantined = replace_quarantine(
                cursor, source.connection_name, kind, "sync", day, rejected, sync_id
            )
            finish_job(cursor, sync_id, SyncStatus.SUCCEEDED, counts.as_metadata())
            record_audit_event(
                cursor,
                "sync_completed",
                connection=source.connection_name,
                kind=kind.value,
                partition_date=day,
                sync_id=str(sync_id),
                details={**counts.as_metadata(), "chain_head": counts.chain_head},
            )
            if rejected:
                record_audit_event(
                    cursor,
                    "records_quarantined",
                    connection=source.connection_name,
                    kind=kind.value,
                    partition_date=day,
                    sync_id=str(sync_id),
                    details={
                        "count": len(rejected),
                        "reasons": sorted({reject.reason for reject in rejected}),
                    },
                )
            # Seal the heads this sync moved, with a key that never enters the database.
            seal_heads(cursor, seal_key_from_env())
        return counts, sync_id
    except Exception as error:
        with database.transaction() as conn, conn.cursor() as cursor:
            finish_job(cursor, sync_id, SyncStatus.FAILED, {}, _describe(error))
            record_audit_event(
                cursor,
                "sync_failed",
                connection=source.connection_name,
                kind=kind.value,
                partition_date=day,
                sync_id=str(sync_id),
                details={"error": _describe(error)},
            )
        raise


def _record_sync_health(
    database: PostgresResource, source: ErpSource, error: BaseException | None
) -> None:
    """A sync is a health check too: the exporter's connection gauges follow real traffic.

    Only failures of the connection itself (unreachable after retries, credentials refused)
    make it unhealthy; a sync that failed for another reason keeps it healthy, with the error.
    """
    unreachable = isinstance(error, RetryableError)
    refused = isinstance(error, ErpAuthError)
    health = ConnectionHealth(
        connection=source.connection_name,
        erp_type=source.erp_type,
        reachable=not unreachable,
        authenticated=not (unreachable or refused),
        error=_describe(error) if error is not None else None,
    )
    with database.transaction() as conn, conn.cursor() as cursor:
        record_health(cursor, health, source.base_url)


@dataclass
class _ReadState:
    """What a read reported besides its records: rejects, deletions, and whether it was whole."""

    rejected: list[RejectedRecord] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    complete: bool = True


def _collect(batches, state: _ReadState) -> Iterator[Sequence[CanonicalRecord]]:
    for batch in batches:
        state.rejected.extend(batch.rejected)
        state.deleted.extend(batch.deleted_source_ids)
        state.complete = state.complete and batch.complete
        yield batch.records


def _describe(error: BaseException) -> str:
    # Exception texts from our ERP clients never carry secrets; keep them short for the UI.
    return f"{type(error).__name__}: {str(error)[:500]}"
