"""Offline verification of everything stored: records, chains, the audit chain and the seals.

`verify_database` reads only PostgreSQL (never an ERP); `verify_bundle` runs the same checks
on an exported audit bundle, on another machine, without a database. Both answer whether any
stored record was changed, added or removed after it was synced, and name what was.

How a legitimate re-sync is told apart from tampering: every head change goes through
`rechain_partition`, which appends a `chain_head_changed` audit event carrying the old and the
new head. The verifier replays those events in order:

- each event must start from the head the previous one left (otherwise the head moved
  outside the audit: AUDIT_DISCONTINUITY);
- the replayed heads must equal `chain_heads` (HEAD_NOT_AUDITED) and the rows must chain to
  them (record and partition problems);
- the audit chain recomputed from content must end, at each seal's checkpoint, on the head the
  seal's HMAC covers (AUDIT_REWRITTEN), and the replay up to the latest seal must equal the
  heads sealed (SEALED_HEAD_MISMATCH): seals carry the heads they changed, in clear.

A change audited after the latest seal is legitimate-looking but not yet protected by a key:
it is reported as a warning (status "sealed_with_later_changes") naming the partition.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erp_connector_dagster.provenance.audit import AuditChainWalk
from erp_connector_dagster.provenance.bundle import BundleReader, open_bundle
from erp_connector_dagster.provenance.chain import (
    ChainProblem,
    ProblemReason,
    check_chain,
    partition_columns,
    partition_rows,
)
from erp_connector_dagster.provenance.seal import head_entry, heads_digest, seal_hmac
from erp_connector_dagster.provenance.store import (
    audit_events,
    chain_heads,
    day_text,
    read_snapshot,
    seals,
    stream_partitioned,
)
from erp_connector_dagster.provenance.tables import (
    CHAIN_ORDER_COLUMNS,
    HASHED_COLUMNS,
    PARTITION_COLUMNS,
)

logger = logging.getLogger(__name__)

# (table, connection, day as YYYY-MM-DD or None)
PartitionKey = tuple[str, str, str | None]
Head = tuple[str, int]

STATUS_SEALED = "sealed"
STATUS_LATER_CHANGES = "sealed_with_later_changes"
STATUS_UNSEALED = "unsealed"
STATUS_FAILED = "failed"


@dataclass
class VerificationReport:
    """What verification found. `ok` means no problem; `status` also says how well sealed."""

    status: str = STATUS_UNSEALED
    problems: list[ChainProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unsealed_partitions: list[PartitionKey] = field(default_factory=list)
    records_checked: int = 0
    partitions_checked: int = 0
    audit_events_checked: int = 0
    seals_checked: int = 0
    latest_seal_id: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def problems_for(
        self, *, table: str | None = None, record_key: str | None = None
    ) -> list[ChainProblem]:
        return [
            problem
            for problem in self.problems
            if (table is None or problem.table == table)
            and (record_key is None or problem.record_key == record_key)
        ]

    def summary(self) -> str:
        lines = [
            f"status: {self.status}; {len(self.problems)} problem(s), "
            f"{len(self.warnings)} warning(s); {self.records_checked} records in "
            f"{self.partitions_checked} partitions, {self.audit_events_checked} audit events, "
            f"{self.seals_checked} seals checked"
        ]
        lines += [f"PROBLEM {problem}" for problem in self.problems]
        lines += [f"warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


def _as_date(day: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(day) if day else None
    except ValueError:
        return None


@dataclass
class _Replay:
    """Partition heads as the audit chain tells their story."""

    heads: dict[PartitionKey, Head] = field(default_factory=dict)
    at_latest_seal: dict[PartitionKey, Head] | None = None
    changed_after_seal: set[PartitionKey] = field(default_factory=set)
    seal_events: dict[int, str] = field(default_factory=dict)  # seal id -> hmac in the event


class _Verification:
    """The checks shared by the database and the bundle paths."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self.report = VerificationReport()
        self.replay = _Replay()
        self.sealed_heads: dict[PartitionKey, Head] = {}
        self.latest_seal: Mapping[str, Any] | None = None
        self.recorded_heads: dict[PartitionKey, Head] = {}
        self.seen: set[PartitionKey] = set()

    def problem(
        self,
        table: str,
        partition: PartitionKey | None,
        reason: ProblemReason,
        detail: str,
        record_key: str | None = None,
    ) -> None:
        connection, day = (partition[1], _as_date(partition[2])) if partition else (None, None)
        self.report.problems.append(
            ChainProblem(table, connection, day, record_key, reason, detail)
        )

    # -- audit chain and seals ------------------------------------------------------------

    def check_audit_and_seals(
        self, seal_rows: list[Mapping[str, Any]], events: Iterable[Mapping[str, Any]]
    ) -> None:
        authentic = self._authenticate_seals(seal_rows)
        self.latest_seal = authentic[-1] if authentic else None
        latest_checkpoint = self.latest_seal["audit_event_id"] if self.latest_seal else None
        walk = AuditChainWalk(checkpoints={row["audit_event_id"] for row in authentic})
        if latest_checkpoint == 0:
            self.replay.at_latest_seal = {}

        for event in events:
            walk.add(event)
            self._replay_event(event, latest_checkpoint)
            if event["id"] == latest_checkpoint:
                self.replay.at_latest_seal = dict(self.replay.heads)

        for event_id, reason, detail in walk.problems:
            self.problem("audit_events", None, ProblemReason(reason), detail, str(event_id))
        self.report.audit_events_checked = walk.count
        self._check_seals(seal_rows, authentic, walk)

    def _replay_event(self, event: Mapping[str, Any], latest_checkpoint: int | None) -> None:
        details = event["details"] if isinstance(event["details"], Mapping) else {}
        if event["event_type"] == "seal" and isinstance(details.get("seal_id"), int):
            self.replay.seal_events[details["seal_id"]] = str(details.get("hmac"))
        if event["event_type"] != "chain_head_changed":
            return
        partition = (
            str(details.get("table")),
            event["connection"],
            day_text(event["partition_date"]),
        )
        before = self.replay.heads.get(partition)
        claimed_before = (
            (details.get("previous_head"), details.get("previous_count"))
            if details.get("previous_head") is not None
            else None
        )
        if claimed_before != before:
            self.problem(
                partition[0],
                partition,
                ProblemReason.AUDIT_DISCONTINUITY,
                f"audit event {event['id']} changes the head from one the audit never recorded:"
                " the partition was changed outside an audited sync before it",
            )
        self.replay.heads[partition] = (details.get("head"), details.get("record_count"))
        if latest_checkpoint is not None and event["id"] > latest_checkpoint:
            self.replay.changed_after_seal.add(partition)

    def _authenticate_seals(self, seal_rows: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Seals whose HMAC verifies under the key, in order; the others are problems."""
        if not seal_rows:
            self.report.warnings.append("no seal found: chain heads were never sealed")
            return []
        self.report.latest_seal_id = seal_rows[-1]["id"]
        if self.key is None:
            self.report.warnings.append(
                f"{len(seal_rows)} seal(s) present but not checked: no seal key given"
            )
            return []
        authentic = []
        for row in seal_rows:
            self.report.seals_checked += 1
            if hmac.compare_digest(seal_hmac(self.key, row), str(row["hmac"])):
                authentic.append(row)
                continue
            self.problem(
                "seals",
                None,
                ProblemReason.SEAL_INVALID,
                f"seal {row['id']} does not verify under the key: forged or altered",
                str(row["id"]),
            )
        return authentic

    def _check_seals(
        self,
        seal_rows: list[Mapping[str, Any]],
        authentic: list[Mapping[str, Any]],
        walk: AuditChainWalk,
    ) -> None:
        for seal_id in sorted(set(self.replay.seal_events) - {row["id"] for row in seal_rows}):
            self.problem(
                "seals",
                None,
                ProblemReason.SEAL_MISSING,
                f"the audit chain records seal {seal_id}, which is gone",
                str(seal_id),
            )
        previous_hmac = None
        for row in authentic:
            label = str(row["id"])
            if row["previous_hmac"] != previous_hmac:
                self.problem(
                    "seals",
                    None,
                    ProblemReason.SEAL_MISSING,
                    f"seal {label} does not follow the seal before it: a seal was removed",
                    label,
                )
            previous_hmac = row["hmac"]
            if self.replay.seal_events.get(row["id"]) != row["hmac"]:
                self.problem(
                    "seals",
                    None,
                    ProblemReason.AUDIT_REWRITTEN,
                    f"the audit event recording seal {label} is missing or altered",
                    label,
                )
            if walk.recomputed_head(row["audit_event_id"]) != row["audit_head"]:
                self.problem(
                    "audit_events",
                    None,
                    ProblemReason.AUDIT_REWRITTEN,
                    f"audit events up to id {row['audit_event_id']} no longer hash to the head "
                    f"sealed by seal {label}: they were changed, removed or rewritten",
                    str(row["audit_event_id"]),
                )
            self._accumulate_scope(row, label)
        if not authentic:
            return

        latest = authentic[-1]
        digest = heads_digest(
            head_entry(table, connection, day, *head)
            for (table, connection, day), head in self.sealed_heads.items()
        )
        if digest != latest["heads_digest"]:
            self.problem(
                "seals",
                None,
                ProblemReason.SEAL_INVALID,
                f"heads sealed across all seals do not add up to seal {latest['id']}'s digest",
                str(latest["id"]),
            )
        self._compare_replay_with_seal(latest)

    def _accumulate_scope(self, row: Mapping[str, Any], label: str) -> None:
        scope = row["scope"] if isinstance(row["scope"], Mapping) else {}
        try:
            changed = [head_entry(*entry) for entry in scope.get("changed", [])]
        except TypeError:
            changed = None
        if changed is None or heads_digest(changed) != row["changed_digest"]:
            self.problem(
                "seals",
                None,
                ProblemReason.SEAL_INVALID,
                f"seal {label}'s list of changed heads was altered",
                label,
            )
            return
        for table, connection, day, head, count in changed:
            self.sealed_heads[(table, connection, day)] = (head, count)

    def _compare_replay_with_seal(self, latest: Mapping[str, Any]) -> None:
        replayed = self.replay.at_latest_seal
        if replayed is None:
            return  # the checkpoint event is missing; AUDIT_REWRITTEN already says so
        for partition in sorted(set(replayed) | set(self.sealed_heads), key=_partition_order):
            if replayed.get(partition) != self.sealed_heads.get(partition):
                self.problem(
                    partition[0],
                    partition,
                    ProblemReason.SEALED_HEAD_MISMATCH,
                    f"audited history up to seal {latest['id']} does not reach the sealed head",
                )

    # -- partitions -----------------------------------------------------------------------

    def add_recorded_heads(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            partition = (row["table_name"], row["connection"], day_text(row["partition_date"]))
            self.recorded_heads[partition] = (row["head_hash"], row["record_count"])

    def check_partition(
        self, table: str, connection: str, day: str | None, stored_rows: list[Mapping[str, Any]]
    ) -> None:
        partition = (table, connection, day)
        if partition in self.seen:
            self.problem(
                table,
                partition,
                ProblemReason.BUNDLE_MALFORMED,
                "rows of this partition are not contiguous: records were moved",
            )
        self.seen.add(partition)
        try:
            chain_rows = partition_rows(table, stored_rows)
        except (KeyError, TypeError, ValueError) as error:
            self.problem(table, partition, ProblemReason.BUNDLE_MALFORMED, f"unreadable: {error}")
            return
        _, problems = check_chain(
            table, connection, _as_date(day), chain_rows, self.recorded_heads.get(partition)
        )
        self.report.problems.extend(problems)
        self.report.records_checked += len(chain_rows)
        self.report.partitions_checked += 1

    def finish(self) -> VerificationReport:
        for partition in sorted(set(self.recorded_heads) - self.seen, key=_partition_order):
            self.check_partition(*partition, [])
        self._compare_heads()
        report = self.report
        if report.problems:
            report.status = STATUS_FAILED
        elif self.key is None or self.latest_seal is None:
            report.status = STATUS_UNSEALED
        elif report.unsealed_partitions:
            report.status = STATUS_LATER_CHANGES
        else:
            report.status = STATUS_SEALED
        logger.info(
            "verification %s: %d problem(s) over %d records",
            report.status,
            len(report.problems),
            report.records_checked,
        )
        return report

    def _compare_heads(self) -> None:
        sealed = self.key is not None and self.latest_seal is not None
        partitions = set(self.recorded_heads) | set(self.replay.heads) | set(self.sealed_heads)
        for partition in sorted(partitions, key=_partition_order):
            table = partition[0]
            recorded = self.recorded_heads.get(partition)
            audited = self.replay.heads.get(partition)
            if recorded != audited:
                self.problem(
                    table,
                    partition,
                    ProblemReason.HEAD_NOT_AUDITED,
                    "chain head differs from the last audited head change"
                    if recorded is not None
                    else "audited chain head is missing from chain_heads",
                )
            if not sealed or partition in self.replay.changed_after_seal:
                continue
            if self.sealed_heads.get(partition) != recorded:
                self.problem(
                    table,
                    partition,
                    ProblemReason.SEALED_HEAD_MISMATCH,
                    f"chain head differs from the one sealed by seal {self.latest_seal['id']}"
                    " and no audited change since explains it",
                )
        # Limitation: anyone with write access can append a well-formed head change after the
        # latest seal; it reads as an unsealed re-sync until the next seal, which then covers
        # it. Deleting the newest seals together with the audit events after an older seal
        # reads as "not sealed since". Only a copy of the latest seal (id and hmac) kept
        # outside the database, compared by hand, closes both.
        if sealed:
            for partition in sorted(self.replay.changed_after_seal, key=_partition_order):
                self.report.unsealed_partitions.append(partition)
                self.report.warnings.append(
                    f"{'/'.join(str(part) for part in partition if part)} changed after "
                    f"seal {self.latest_seal['id']}: audited, not sealed yet"
                )


def _partition_order(partition: PartitionKey) -> tuple[str, str, str]:
    return (partition[0], partition[1], partition[2] or "")


# -- PostgreSQL ---------------------------------------------------------------------------


def verify_database(conn, key: bytes | None) -> VerificationReport:
    """Verify every record, chain, audit event and seal stored in PostgreSQL.

    `conn` is a psycopg2 connection; reading happens in one read-only snapshot that is rolled
    back afterwards. With `key` None, seals are not checked and the status is "unsealed".
    """
    verification = _Verification(key)
    with read_snapshot(conn):
        verification.check_audit_and_seals(seals(conn), audit_events(conn))
        verification.add_recorded_heads(chain_heads(conn))
        for table in HASHED_COLUMNS:
            columns = partition_columns(table)
            for connection, day, rows in stream_partitioned(
                conn, table, columns, PARTITION_COLUMNS[table], CHAIN_ORDER_COLUMNS[table]
            ):
                verification.check_partition(table, connection, day, rows)
        _warn_on_unknown_spend_hashes(conn, verification.report)
    return verification.finish()


def _warn_on_unknown_spend_hashes(conn, report: VerificationReport) -> None:
    # An emission row names the hash of the spend record it was calculated from; that hash
    # must be the current record or a version kept in record_versions.
    # Limitation: only checked against the database, not in verify_bundle, and reported as a
    # warning: record_versions is the writer's evidence, not covered by a chain.
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT e.connection, e.transaction_date, e.record_key, e.factor_version"
            " FROM erp_connector_service.emission_calculations e"
            " WHERE e.spend_record_hash IS NOT NULL AND NOT EXISTS ("
            "   SELECT 1 FROM erp_connector_service.spend_records s"
            "   WHERE s.connection = e.connection AND s.transaction_date = e.transaction_date"
            "   AND s.record_key = e.record_key AND s.record_hash = e.spend_record_hash)"
            " AND NOT EXISTS ("
            "   SELECT 1 FROM erp_connector_service.record_versions v"
            "   WHERE v.connection = e.connection AND v.kind = 'spend'"
            "   AND v.record_key = e.record_key AND v.record_hash = e.spend_record_hash)"
            " ORDER BY 1, 2, 3, 4 LIMIT 100"
        )
        for connection, day, record_key, factor_version in cursor.fetchall():
            report.warnings.append(
                f"emission_calculations/{connection}/{day}/{record_key} ({factor_version}): "
                "spend_record_hash matches no stored spend record version"
            )


# -- audit bundle -------------------------------------------------------------------------


def verify_bundle(path: str | Path, key: bytes | None) -> VerificationReport:
    """Verify an audit bundle written by `export_bundle`, without any database.

    Besides the checks of `verify_database`, every file is compared with the digest listed in
    the bundle's manifest, and every unreadable line is named by file and line number.
    """
    verification = _Verification(key)
    with open_bundle(path) as reader:
        _check_files(reader, verification)
        verification.check_audit_and_seals(
            list(_bundle_rows(reader, "seals.jsonl", verification)),
            _bundle_rows(reader, "audit_events.jsonl", verification),
        )
        verification.add_recorded_heads(_bundle_rows(reader, "chain_heads.jsonl", verification))
        for table in HASHED_COLUMNS:
            _check_bundle_table(reader, table, verification)
    return verification.finish()


def _check_files(reader: BundleReader, verification: _Verification) -> None:
    if reader.manifest_error:
        verification.problem(
            "bundle", None, ProblemReason.BUNDLE_MALFORMED, reader.manifest_error, "manifest.json"
        )
    for name, listed in sorted(reader.manifest.get("files", {}).items()):
        if not reader.exists(name):
            verification.problem(
                "bundle", None, ProblemReason.BUNDLE_MALFORMED, f"{name} is missing", name
            )
            continue
        digest = hashlib.sha256()
        with reader.open_binary(name) as handle:
            for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != listed.get("sha256"):
            verification.problem(
                "bundle",
                None,
                ProblemReason.BUNDLE_FILE_CHANGED,
                f"{name} differs from the digest in the manifest",
                name,
            )


def _bundle_rows(
    reader: BundleReader, name: str, verification: _Verification
) -> Iterable[dict[str, Any]]:
    if not reader.exists(name):
        verification.problem(
            "bundle", None, ProblemReason.BUNDLE_MALFORMED, f"{name} is missing", name
        )
        return
    with reader.open_text(name) as handle:
        for number, line in enumerate(handle, start=1):
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict):
                verification.problem(
                    "bundle",
                    None,
                    ProblemReason.BUNDLE_MALFORMED,
                    f"{name} line {number} is not a JSON object",
                    f"{name}:{number}",
                )
                continue
            yield row


def _check_bundle_table(reader: BundleReader, table: str, verification: _Verification) -> None:
    name = f"records/{table}.jsonl"
    date_column = PARTITION_COLUMNS[table]
    current: tuple[str, str | None] | None = None
    rows: list[dict[str, Any]] = []
    for row in _bundle_rows(reader, name, verification):
        partition = (row.get("connection"), row.get(date_column) if date_column else None)
        if partition != current and rows:
            verification.check_partition(table, *current, rows)
            rows = []
        current = partition
        rows.append(row)
    if rows:
        verification.check_partition(table, *current, rows)
