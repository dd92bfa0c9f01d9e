"""What a change sensor remembers between ticks, and how one tick moves it forward.

The ERP is asked which day partitions changed since the scanned watermark; those days become a
batch, remembered together with the watermark the ERP reported. Days are requested as runs, at
most a fixed number in flight, oldest day first. A batch is committed (its watermark becomes the
stored cursor) only when every run of it has succeeded and every earlier batch is committed, so
the committed cursor never passes a change that is not in the database. A failed run is simply
requested again with the same `since`, and the batch waits for it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from erp_connector_dagster.erp.base import ChangeSummary
from erp_connector_dagster.records import RecordKind

STATE_VERSION = 1
# A request with no run after this long was lost (the daemon creates runs within its tick).
LOST_REQUEST_AFTER = dt.timedelta(hours=1)
QUIET_SCAN_MARGIN = dt.timedelta(minutes=1)


class RunOutcome:
    """The states of a requested run, as the tick cares about them."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    IN_FLIGHT = "in_flight"  # queued or running
    NOT_FOUND = "not_found"  # no run carries the request: not created yet, or lost


@dataclass
class DayRequest:
    """One day partition of a batch, and the run currently responsible for it."""

    day: dt.date
    request_id: str | None = None
    attempts: int = 0
    done: bool = False
    requested_at: dt.datetime | None = None

    def to_json(self) -> dict:
        return {
            "day": self.day.isoformat(),
            "request_id": self.request_id,
            "attempts": self.attempts,
            "done": self.done,
            "requested_at": self.requested_at.isoformat() if self.requested_at else None,
        }

    @classmethod
    def from_json(cls, raw: dict) -> DayRequest:
        requested_at = raw.get("requested_at")
        return cls(
            dt.date.fromisoformat(raw["day"]),
            raw.get("request_id"),
            int(raw.get("attempts", 0)),
            bool(raw.get("done", False)),
            dt.datetime.fromisoformat(requested_at) if requested_at else None,
        )


@dataclass
class ChangeBatch:
    """Days found changed by one scan, and the watermarks to commit once they are synced."""

    since: dt.datetime
    watermarks: dict[str, dt.datetime]
    days: list[DayRequest] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(request.done for request in self.days)

    def to_json(self) -> dict:
        return {
            "since": self.since.isoformat(),
            "watermarks": {kind: value.isoformat() for kind, value in self.watermarks.items()},
            "days": [request.to_json() for request in self.days],
        }

    @classmethod
    def from_json(cls, raw: dict) -> ChangeBatch:
        return cls(
            dt.datetime.fromisoformat(raw["since"]),
            {kind: dt.datetime.fromisoformat(v) for kind, v in raw["watermarks"].items()},
            [DayRequest.from_json(day) for day in raw["days"]],
        )


@dataclass
class ChangeCursor:
    """The sensor cursor: scanned and committed watermarks per kind, and open batches."""

    scanned: dict[str, dt.datetime]
    committed: dict[str, dt.datetime]
    batches: list[ChangeBatch] = field(default_factory=list)
    requests_made: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "scanned": {kind: value.isoformat() for kind, value in self.scanned.items()},
                "committed": {kind: value.isoformat() for kind, value in self.committed.items()},
                "batches": [batch.to_json() for batch in self.batches],
                "requests_made": self.requests_made,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ChangeCursor:
        raw = json.loads(text)
        if raw.get("version") != STATE_VERSION:
            raise ValueError(f"unknown change cursor version {raw.get('version')!r}")
        return cls(
            {kind: dt.datetime.fromisoformat(v) for kind, v in raw["scanned"].items()},
            {kind: dt.datetime.fromisoformat(v) for kind, v in raw["committed"].items()},
            [ChangeBatch.from_json(batch) for batch in raw["batches"]],
            int(raw.get("requests_made", 0)),
        )

    @classmethod
    def starting_at(cls, watermarks: dict[str, dt.datetime]) -> ChangeCursor:
        return cls(scanned=dict(watermarks), committed=dict(watermarks))

    def open_requests(self) -> list[DayRequest]:
        return [r for batch in self.batches for r in batch.days if r.request_id and not r.done]

    def waiting_days(self) -> set[dt.date]:
        return {r.day for batch in self.batches for r in batch.days if not r.request_id}


@dataclass(frozen=True)
class DayRunRequest:
    """A run the tick wants: one day partition, read since `since`."""

    request_id: str
    day: dt.date
    since: dt.datetime
    attempt: int


@dataclass
class TickOutcome:
    """What one tick did, for the sensor to turn into run requests and log lines."""

    requests: list[DayRunRequest] = field(default_factory=list)
    committed: list[dict[str, dt.datetime]] = field(default_factory=list)
    failed_days: list[dt.date] = field(default_factory=list)
    lost_days: list[dt.date] = field(default_factory=list)
    new_days: list[dt.date] = field(default_factory=list)
    dropped_days: list[dt.date] = field(default_factory=list)
    scan_error: str | None = None


def refresh_runs(state: ChangeCursor, outcome_of: Callable[[str], str], tick: TickOutcome) -> None:
    """Mark days whose run succeeded as done; free days whose run failed for a new request."""
    now = dt.datetime.now(dt.timezone.utc)
    for request in state.open_requests():
        result = outcome_of(request.request_id)
        if result == RunOutcome.SUCCEEDED:
            request.done = True
        elif result == RunOutcome.FAILED:
            tick.failed_days.append(request.day)
            request.request_id = None
        elif result == RunOutcome.NOT_FOUND and (
            request.requested_at is None or now - request.requested_at > LOST_REQUEST_AFTER
        ):
            tick.lost_days.append(request.day)
            request.request_id = None


def commit_complete_batches(state: ChangeCursor, tick: TickOutcome) -> None:
    """Commit batches in order while the oldest one is complete."""
    while state.batches and state.batches[0].complete:
        batch = state.batches.pop(0)
        state.committed.update(batch.watermarks)
        tick.committed.append(batch.watermarks)


def scan_changes(
    state: ChangeCursor,
    kinds: Iterable[RecordKind],
    changed_days: Callable[[RecordKind, dt.datetime], ChangeSummary],
    syncable: Callable[[dt.date], bool],
    tick: TickOutcome,
) -> None:
    """Ask the ERP what changed since the scanned watermarks; open a batch when anything did."""
    kinds = list(kinds)
    since = min(state.scanned[kind.value] for kind in kinds)
    days: set[dt.date] = set()
    watermarks: dict[str, dt.datetime] = {}
    scan_started = dt.datetime.now(dt.timezone.utc)
    for kind in kinds:
        summary = changed_days(kind, state.scanned[kind.value])
        if summary.high_watermark is None:
            # Nothing stamped was found (no change, or a kind without change stamps whose days
            # the source names by its own lookback): move on to just before this scan, with a
            # margin for changes committed while it ran.
            # Limitation: for a kind the ERP cannot stamp (S/4HANA stock), the source names its
            # lookback days on every scan, so those few days are re-run on every tick.
            days |= summary.days
            watermark = scan_started - QUIET_SCAN_MARGIN
            if watermark > state.scanned[kind.value]:
                watermarks[kind.value] = watermark
            continue
        # A change stamped later than our clock (skew) must not push the cursor past changes
        # still to come: such rows are simply found again until the clock catches up.
        watermark = min(summary.high_watermark, scan_started)
        if watermark > state.scanned[kind.value]:
            watermarks[kind.value] = watermark
            days |= summary.days
        # Otherwise every row found sits exactly on the inclusive cursor: an earlier batch
        # already asked for its day, and asking again would repeat it on every tick.
    tick.dropped_days = sorted(day for day in days if not syncable(day))
    # A day already waiting for its first run will be read after this scan anyway.
    waiting = state.waiting_days()
    new_days = sorted(day for day in days if syncable(day) and day not in waiting)
    if not new_days and not watermarks:
        return
    state.scanned.update(watermarks)
    tick.new_days = new_days
    if not new_days and state.batches:
        # Nothing to run: the watermarks simply commit together with the newest open batch.
        state.batches[-1].watermarks.update(watermarks)
        return
    state.batches.append(
        ChangeBatch(since=since, watermarks=watermarks, days=[DayRequest(d) for d in new_days])
    )


def request_days(
    state: ChangeCursor, connection: str, max_in_flight: int, tick: TickOutcome
) -> None:
    """Request runs for waiting days, oldest first, keeping at most `max_in_flight` open."""
    now = dt.datetime.now(dt.timezone.utc)
    budget = max_in_flight - len({r.request_id for r in state.open_requests()})
    waiting: dict[dt.date, list[tuple[ChangeBatch, DayRequest]]] = {}
    for batch in state.batches:
        for request in batch.days:
            if not request.request_id and not request.done:
                waiting.setdefault(request.day, []).append((batch, request))
    for day in sorted(waiting)[: max(budget, 0)]:
        state.requests_made += 1
        request_id = f"{connection}/{day.isoformat()}/{state.requests_made}"
        entries = waiting[day]
        attempt = max(request.attempts for _, request in entries) + 1
        for _, request in entries:
            request.request_id = request_id
            request.attempts = attempt
            request.requested_at = now
        # The earliest `since` covers the changes of every batch waiting for this day.
        since = min(batch.since for batch, _ in entries)
        tick.requests.append(DayRunRequest(request_id, day, since, attempt))


def run_tick(
    state: ChangeCursor,
    *,
    connection: str,
    kinds: Iterable[RecordKind],
    changed_days: Callable[[RecordKind, dt.datetime], ChangeSummary],
    outcome_of: Callable[[str], str],
    syncable: Callable[[dt.date], bool],
    max_in_flight: int,
) -> TickOutcome:
    """One sensor tick: settle finished runs, commit, scan the ERP, request runs."""
    tick = TickOutcome()
    refresh_runs(state, outcome_of, tick)
    commit_complete_batches(state, tick)
    try:
        scan_changes(state, kinds, changed_days, syncable, tick)
    except Exception as error:  # noqa: BLE001 - an ERP outage must not stall retries and commits
        tick.scan_error = f"{type(error).__name__}: {str(error)[:300]}"
    # An empty scan with a newer watermark commits right away when nothing is pending.
    commit_complete_batches(state, tick)
    request_days(state, connection, max_in_flight, tick)
    return tick
