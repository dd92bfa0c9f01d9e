"""What every ERP source offers: health, windowed fetches of canonical records, change detection.

One subclass per ERP system lives beside this module. A subclass speaks its system's protocol
(auth, paging, change filter, throttling signal) and turns native payloads into the canonical
records of `erp_connector_dagster.records`; anything it cannot turn into one becomes a
`RejectedRecord` with the reason, so nothing is silently dropped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import ClassVar

from dagster import ConfigurableResource, EnvVar
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{field} {value!r} is not a number") from None


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


class RecordBatch(BaseModel):
    """One page (or a few) of canonical records, with the rejects met on the way."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    records: list[CanonicalRecord] = Field(default_factory=list)
    rejected: list[RejectedRecord] = Field(default_factory=list)
    # Highest source change timestamp seen in this batch, when the ERP reports one.
    high_watermark: dt.datetime | None = None
    # Records the source reported as deleted since the window's changed_since (CDC, tombstones).
    deleted_source_ids: list[str] = Field(default_factory=list)


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

    def check_health(self) -> ConnectionHealth:
        """Reach the ERP, authenticate, and report the round-trip latency."""
        raise NotImplementedError

    def fetch(self, kind: RecordKind, window: SyncWindow) -> Iterator[RecordBatch]:
        """Yield batches of canonical records of `kind` inside `window`."""
        raise NotImplementedError

    def changed_days(self, kind: RecordKind, since: dt.datetime) -> ChangeSummary:
        """Report which partition days hold records of `kind` changed at or after `since`."""
        raise NotImplementedError
