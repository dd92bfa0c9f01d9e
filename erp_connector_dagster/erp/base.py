"""What every ERP source offers: health, windowed fetches of canonical records, change detection.

One subclass per ERP system lives beside this module. A subclass speaks its system's protocol
(auth, paging, change filter, throttling signal) and turns native payloads into the canonical
records of `erp_connector_dagster.records`; anything it cannot turn into one becomes a
`RejectedRecord` with the reason, so nothing is silently dropped.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from typing import ClassVar

import requests
from dagster import ConfigurableResource, EnvVar
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from erp_connector_dagster.erp.http import (
    ErpAuthError,
    ErpHttpClient,
    ErpRequestError,
    RetryableError,
    standard_throttle_signal,
)
from erp_connector_dagster.records import CanonicalRecord, RecordKind, RejectedRecord


def resolve_secret(value: str) -> str:
    """A credential field's value: an `EnvVar` is read from the environment when used.

    Dagster resolves `EnvVar` fields when it initializes a resource for a run; a source built
    directly (tests, the CLI, sensors) still holds the `EnvVar` itself.
    """
    if isinstance(value, EnvVar):
        return value.get_value() or ""
    return value


def required_field(item: dict, field: str) -> str:
    """A native field that must be present and non-empty, else a ValueError naming it."""
    value = item.get(field)
    if value in (None, ""):
        raise ValueError(f"{field} is missing")
    return value


class RecordRejected(ValueError):
    """A native value that cannot become a canonical field; the message is the reason."""


def required_decimal(value: object, name: str) -> Decimal:
    """A native amount or quantity (text, JSON number or Decimal) as an exact, finite Decimal."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise RecordRejected(f"{name} is missing")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise RecordRejected(f"{name} is not a number: {str(value)[:40]!r}") from None
    if not number.is_finite():
        raise RecordRejected(f"{name} is not a finite number")
    return number


def decimal_field(item: dict, field: str, *, required: bool = True) -> Decimal | None:
    """A native amount or quantity (string, JSON number or Decimal) as an exact Decimal."""
    value = item.get(field)
    if value in (None, ""):
        if required:
            raise ValueError(f"{field} is missing")
        return None
    if isinstance(value, bool):
        raise ValueError(f"{field} {value!r} is not a number")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{field} {value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{field} {value!r} is not a finite number")
    return number


def utc_timestamp(text: str) -> dt.datetime:
    """An ISO 8601 date-time (`Z` or an offset) as UTC; one without an offset is UTC already."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def later_stamp(current: dt.datetime | None, candidate: dt.datetime | None) -> dt.datetime | None:
    """The later of two change stamps, either of which may be unknown."""
    if candidate is None:
        return current
    return candidate if current is None or candidate > current else current


def rejection_reason(error: Exception) -> str:
    """A short reason for a RejectedRecord from a parsing or validation error."""
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    if isinstance(error, KeyError):
        return f"{error.args[0]} is missing"
    return str(error)


class SyncWindow(BaseModel):
    """Which records to read: a date range of the partition field, optionally changed since."""

    model_config = ConfigDict(frozen=True)

    start: dt.date | None = None  # inclusive
    end: dt.date | None = None  # exclusive
    changed_since: dt.datetime | None = None  # inclusive: rows at the boundary are read again

    @classmethod
    def for_day(cls, day: dt.date) -> SyncWindow:
        return cls(start=day, end=day + dt.timedelta(days=1))

    def contains(self, day: dt.date | None) -> bool:
        if day is None:
            return True
        if self.start is not None and day < self.start:
            return False
        return not (self.end is not None and day >= self.end)

    def snapshot_days(self, lookback_days: int) -> list[dt.date]:
        """The stock snapshot days this window asks for, never after today.

        Stock has no change stamp, so a cursor means every day from `lookback_days` before it
        up to today; without dates or a cursor, today alone.
        """
        today = dt.datetime.now(dt.timezone.utc).date()
        tomorrow = today + dt.timedelta(days=1)
        if self.changed_since is not None:
            if self.changed_since > dt.datetime.now(dt.timezone.utc):
                return []
            first = self.changed_since.astimezone(dt.timezone.utc).date() - dt.timedelta(
                days=lookback_days
            )
            first = max(first, self.start) if self.start else first
            after = min(self.end, tomorrow) if self.end else tomorrow
        elif self.start is not None:
            first = self.start
            # Stock of a day still to come does not exist yet.
            after = min(self.end or self.start + dt.timedelta(days=1), tomorrow)
        else:
            first, after = today, tomorrow
        return [first + dt.timedelta(days=offset) for offset in range((after - first).days)]

    def reaches_before_today(self, lookback_days: int) -> bool:
        """Whether the window asks for a snapshot of a day before today (a history read)."""
        today = dt.datetime.now(dt.timezone.utc).date()
        return any(day != today for day in self.snapshot_days(lookback_days))


class RecordBatch(BaseModel):
    """One page (or a few) of canonical records, with the rejects met on the way."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    records: list[CanonicalRecord] = Field(default_factory=list)
    rejected: list[RejectedRecord] = Field(default_factory=list)
    # Highest source change timestamp seen in this batch, when the ERP reports one.
    high_watermark: dt.datetime | None = None
    # Records the source reported as deleted since the window's changed_since (CDC, tombstones).
    deleted_source_ids: list[str] = Field(default_factory=list)
    # False when the source could not read all of the window (say, on-hand of a past day from an
    # ERP that keeps only today's): then nothing missing from the read is marked deleted.
    complete: bool = True


class ConnectionHealth(BaseModel):
    """The result of a health check against one connection."""

    connection: str
    erp_type: str
    reachable: bool
    authenticated: bool
    latency_ms: float | None = None
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.reachable and self.authenticated


class ChangeSummary(BaseModel):
    """Which partition days changed since a cursor, and how far the source has been read."""

    days: set[dt.date] = Field(default_factory=set)
    high_watermark: dt.datetime | None = None


class LatestVersions:
    """Paging over changing data can serve a record twice: pass each version of it once.

    A record met again passes only when its `updated_at` is later than the version already
    passed (a re-read page, a restarted query, a row that moved between offset pages).
    """

    def __init__(self) -> None:
        self._seen: dict[str, dt.datetime | None] = {}

    def keep(self, records: list[CanonicalRecord]) -> list[CanonicalRecord]:
        kept = []
        for record in records:
            key = record.natural_key
            if key in self._seen:
                previous = self._seen[key]
                newer = record.updated_at and (previous is None or record.updated_at > previous)
                if not newer:
                    continue
            self._seen[key] = record.updated_at
            kept.append(record)
        return kept


class FirstSightings:
    """A record met again while paging (a retried or shifted page) passes only the first time.

    The partition day is part of the key: stock snapshots repeat their key from day to day.
    """

    def __init__(self) -> None:
        self._seen: set[tuple] = set()

    def keep(self, records: list[CanonicalRecord]) -> list[CanonicalRecord]:
        kept = []
        for record in records:
            key = (record.partition_date, record.natural_key)
            if key not in self._seen:
                self._seen.add(key)
                kept.append(record)
        return kept


class ErpSource(ConfigurableResource):
    """A connection to one ERP tenant; subclasses implement one ERP system's protocol."""

    connection_name: str = Field(description="Name of the connection, unique in the file.")
    base_url: str = Field(description="Root URL of the ERP API (or a database URL for SQL).")
    page_size: int = Field(default=1000, description="Records asked for per page.")
    timeout_seconds: float = Field(default=30.0, description="Timeout for one request.")
    max_retries: int = Field(default=5, description="Retries for throttling and 5xx.")
    lookback_days: int = Field(
        default=3, description="Overlap for objects without a change timestamp."
    )

    erp_type: ClassVar[str] = ""
    api_version: ClassVar[str] = ""
    supported_kinds: ClassVar[frozenset[RecordKind]] = frozenset(RecordKind)
    # Canonical fields this ERP has nowhere to keep (they come back empty or defaulted); the
    # cross-dialect comparisons leave them out.
    unmapped_fields: ClassVar[dict[RecordKind, frozenset[str]]] = {}
    # Whether an ERP that refuses the health probe (not for credentials) still counts as
    # reachable: an SAP gateway that answers at all is up, whatever it says.
    refused_probe_is_reachable: ClassVar[bool] = False

    def check_health(self) -> ConnectionHealth:
        """Reach the ERP, authenticate, and report the round-trip latency of the probe."""
        started = time.monotonic()
        try:
            self._probe()
        except ErpAuthError as error:
            return self._health(started, reachable=True, authenticated=False, error=error)
        except RetryableError as error:
            return self._health(started, reachable=False, authenticated=False, error=error)
        except ErpRequestError as error:
            reachable = self.refused_probe_is_reachable
            return self._health(started, reachable=reachable, authenticated=False, error=error)
        return self._health(started, reachable=True, authenticated=True)

    def build_http_client(
        self,
        authenticate: Callable[[requests.Session], None] | None,
        throttle_signal: Callable[[requests.Response], float | None] = standard_throttle_signal,
        *,
        max_retries: int | None = None,
    ) -> ErpHttpClient:
        """An HTTP client for this connection, with its base URL, timeout and retries."""
        return ErpHttpClient(
            self.connection_name,
            self.base_url,
            timeout_seconds=self.timeout_seconds,
            max_retries=self.max_retries if max_retries is None else max_retries,
            authenticate=authenticate,
            throttle_signal=throttle_signal,
        )

    def _probe(self) -> None:
        """The cheapest authenticated request this ERP offers; raises what the client raises."""
        raise NotImplementedError

    def _health(
        self,
        started: float,
        *,
        reachable: bool,
        authenticated: bool,
        error: Exception | None = None,
    ) -> ConnectionHealth:
        return ConnectionHealth(
            connection=self.connection_name,
            erp_type=self.erp_type,
            reachable=reachable,
            authenticated=authenticated,
            latency_ms=(time.monotonic() - started) * 1000,
            error=str(error) if error is not None else None,
        )

    def fetch(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        """Yield batches of canonical records of `kind` inside `window`."""
        raise NotImplementedError

    def changed_days(self, kind: RecordKind, since: dt.datetime) -> ChangeSummary:
        """Report which partition days hold records of `kind` changed at or after `since`."""
        raise NotImplementedError
