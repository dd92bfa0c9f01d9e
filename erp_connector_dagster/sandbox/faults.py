"""Faults a test can switch on in a sandbox emulator: throttling, 5xx, drops, slow pages.

Each emulator asks its `FaultPlan` for the next fault on every request and renders it in its
own dialect (a throttle is a 429 for one ERP and an error inside an HTTP 200 for another).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from werkzeug.wrappers import Response


class FaultKind(str, enum.Enum):
    THROTTLE = "throttle"
    SERVER_ERROR = "server_error"
    DROP_CONNECTION = "drop_connection"
    SLOW = "slow"
    EXPIRE_TOKEN = "expire_token"


@dataclass
class Fault:
    kind: FaultKind
    retry_after: float = 1.0
    status: int = 503
    delay_seconds: float = 0.0


@dataclass
class _Planned:
    fault: Fault
    skip: int
    remaining: int


class FaultPlan:
    """A queue of faults, each fired on `count` requests after skipping `after` requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._planned: list[_Planned] = []
        self.requests_seen = 0
        self.faults_fired: list[FaultKind] = []

    def inject(self, fault: Fault, *, count: int = 1, after: int = 0) -> None:
        with self._lock:
            self._planned.append(_Planned(fault, skip=after, remaining=count))

    def throttle(self, retry_after: float = 1.0, *, count: int = 1, after: int = 0) -> None:
        self.inject(Fault(FaultKind.THROTTLE, retry_after=retry_after), count=count, after=after)

    def server_error(self, status: int = 503, *, count: int = 1, after: int = 0) -> None:
        self.inject(Fault(FaultKind.SERVER_ERROR, status=status), count=count, after=after)

    def drop_connection(self, *, count: int = 1, after: int = 0) -> None:
        self.inject(Fault(FaultKind.DROP_CONNECTION), count=count, after=after)

    def slow(self, seconds: float, *, count: int = 1, after: int = 0) -> None:
        self.inject(Fault(FaultKind.SLOW, delay_seconds=seconds), count=count, after=after)

    def expire_token(self, *, count: int = 1, after: int = 0) -> None:
        self.inject(Fault(FaultKind.EXPIRE_TOKEN), count=count, after=after)

    def clear(self) -> None:
        with self._lock:
            self._planned.clear()

    def take(self) -> Fault | None:
        """The fault for the current request, if any; call once per request."""
        fired = self._next_fault()
        if fired is not None and fired.kind is FaultKind.SLOW:
            # Stall outside the lock, so other requests and `clear` are not held up behind it.
            time.sleep(fired.delay_seconds)
            return None
        return fired

    def _next_fault(self) -> Fault | None:
        with self._lock:
            self.requests_seen += 1
            for planned in self._planned:
                if planned.skip > 0:
                    planned.skip -= 1
                    continue
                if planned.remaining > 0:
                    planned.remaining -= 1
                    self.faults_fired.append(planned.fault.kind)
                    return planned.fault
            self._planned = [p for p in self._planned if p.remaining > 0]
            return None


def server_error_response(fault: Fault) -> Response:
    return Response("upstream unavailable", status=fault.status, mimetype="text/plain")


def dropped_connection_response() -> Response:
    """A response that promises a body and breaks off mid-way, as a dropped connection does."""

    def broken_body() -> Iterable[bytes]:
        yield b'{"partial": '
        raise ConnectionAbortedError("sandbox fault: connection dropped")

    response = Response(broken_body(), status=200, mimetype="application/json")
    response.headers["Content-Length"] = "4096"
    return response


def fault_response(
    fault: Fault | None,
    *,
    throttled: Callable[[Fault], Response],
    token_expired: Callable[[], Response | None] | None = None,
) -> Response | None:
    """The answer a fault forces, rendered in the emulator's dialect, or None to serve on.

    `throttled` renders the dialect's "slow down"; `token_expired` forgets the issued tokens
    (and may answer at once). An emulator that expires tokens before it checks them leaves
    `token_expired` out and handles that fault itself.
    """
    if fault is None:
        return None
    if fault.kind is FaultKind.THROTTLE:
        return throttled(fault)
    if fault.kind is FaultKind.SERVER_ERROR:
        return server_error_response(fault)
    if fault.kind is FaultKind.DROP_CONNECTION:
        return dropped_connection_response()
    if fault.kind is FaultKind.EXPIRE_TOKEN and token_expired is not None:
        return token_expired()
    return None
