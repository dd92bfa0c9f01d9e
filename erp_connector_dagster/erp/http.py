"""HTTP plumbing every ERP source shares: retries with backoff, throttling signals, re-auth.

ERPs signal "slow down" in different ways (429 with Retry-After, a 400 with a limit error code,
an error inside an HTTP 200); each source passes a `throttle_signal` that recognises its own and
returns how long the server asked us to wait. Retries use bounded exponential backoff, and the
server's wait overrides the backoff when it is longer. An answer of 401 triggers one
re-authentication (an expired token) before the request is tried again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

logger = logging.getLogger("erp_connector_dagster.erp")

MAX_BACKOFF_SECONDS = 60.0


class ErpRequestError(RuntimeError):
    """A request the ERP refused for a reason retrying will not fix."""

    def __init__(self, connection: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{connection}: {message}")
        self.connection = connection
        self.status = status


class ErpAuthError(ErpRequestError):
    """The ERP rejected our credentials (after a renewal attempt, when one was possible)."""


class RetryableError(RuntimeError):
    """A failure worth retrying: throttling, a 5xx, a dropped connection."""

    def __init__(self, message: str, wait_seconds: float | None = None) -> None:
        super().__init__(message)
        self.wait_seconds = wait_seconds


def retry_after_seconds(response: requests.Response) -> float | None:
    """Seconds from a Retry-After header, given as seconds or as an HTTP date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def standard_throttle_signal(response: requests.Response) -> float | None:
    """429 means throttled; the wait is Retry-After when given, else the backoff's."""
    if response.status_code == 429:
        return retry_after_seconds(response) or 0.0
    return None


def _wait(retry_state: RetryCallState) -> float:
    backoff = wait_exponential_jitter(initial=0.5, max=MAX_BACKOFF_SECONDS)(retry_state)
    error = retry_state.outcome.exception() if retry_state.outcome else None
    server_wait = getattr(error, "wait_seconds", None)
    return max(backoff, server_wait) if server_wait is not None else backoff


class ErpHttpClient:
    """A requests session bound to one connection's base URL, with retries and re-auth."""

    def __init__(
        self,
        connection: str,
        base_url: str,
        *,
        timeout_seconds: float = 30.0,
        max_retries: int = 5,
        authenticate: Callable[[requests.Session], None] | None = None,
        throttle_signal: Callable[[requests.Response], float | None] = standard_throttle_signal,
    ) -> None:
        self.connection = connection
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.session = requests.Session()
        self._authenticate = authenticate
        self._throttle_signal = throttle_signal
        self._authenticated = False
        self.retries = 0
        self.reauthentications = 0

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def ensure_authenticated(self) -> None:
        if self._authenticate is not None and not self._authenticated:
            self._authenticate(self.session)
            self._authenticated = True

    def reauthenticate(self) -> None:
        """Drop the current session credentials and log in again (an expired token)."""
        self._authenticated = False
        self.reauthentications += 1
        logger.info("re-authenticating", extra={"connection": self.connection})
        self.ensure_authenticated()

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """Send a request; retry throttling, 5xx and dropped connections; renew auth on 401."""
        caller = retry(
            retry=retry_if_exception_type(RetryableError),
            wait=_wait,
            stop=stop_after_attempt(self.max_retries + 1),
            before_sleep=self._log_retry,
            reraise=True,
        )(self._send_once)
        return caller(method, path, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def _send_once(self, method: str, path: str, **kwargs) -> requests.Response:
        self.ensure_authenticated()
        kwargs.setdefault("timeout", self.timeout_seconds)
        # A redirect could carry credentials to a host nobody configured: refuse it instead.
        kwargs.setdefault("allow_redirects", False)
        response = self._send(method, path, **kwargs)
        if response.status_code == 401 and self._authenticate is not None:
            self.reauthenticate()
            response = self._send(method, path, **kwargs)
        if response.status_code in (401, 403):
            raise ErpAuthError(
                self.connection,
                f"{method} {path} refused ({response.status_code})",
                response.status_code,
            )
        if response.is_redirect:
            target = urlsplit(response.headers.get("Location", "")).netloc or "elsewhere"
            raise ErpRequestError(
                self.connection,
                f"{method} {path} redirected to {target}; redirects are not followed",
                response.status_code,
            )
        wait = self._throttle_signal(response)
        if wait is not None:
            raise RetryableError(f"throttled ({response.status_code})", wait_seconds=wait)
        if response.status_code >= 500:
            raise RetryableError(f"server error {response.status_code}")
        if response.status_code >= 400:
            raise ErpRequestError(
                self.connection,
                f"{method} {path} failed ({response.status_code}): {response.text[:300]}",
                response.status_code,
            )
        return response

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            response = self.session.request(method, self.url(path), **kwargs)
            # Read the body here so a connection dropped mid-body is retried too.
            _ = response.content
            return response
        except (
            requests.ConnectionError,
            requests.Timeout,
            # A body cut short after the headers arrived is a dropped connection too.
            requests.exceptions.ChunkedEncodingError,
        ) as error:
            raise RetryableError(f"connection failed: {type(error).__name__}") from None

    def _log_retry(self, retry_state: RetryCallState) -> None:
        self.retries += 1
        error = retry_state.outcome.exception() if retry_state.outcome else None
        logger.warning(
            "retrying ERP request: %s (attempt %d, waiting %.1fs)",
            error,
            retry_state.attempt_number,
            retry_state.upcoming_sleep,
            extra={"connection": self.connection},
        )
