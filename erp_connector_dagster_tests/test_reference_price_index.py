"""BEA price-index ratios, checked against the shipped table read independently."""

from __future__ import annotations

import csv
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from erp_connector_dagster.reference import price_index as price_index_module
from erp_connector_dagster.reference.factors import default_factor_set
from erp_connector_dagster.reference.price_index import PriceIndex, PriceIndexError

BEA_FILE = (
    Path(price_index_module.__file__).parent
    / "data"
    / "BEA_Detail_GrossOutput_PriceIndex_2017schema_1997-2023.csv"
)


def _published() -> dict[str, dict[str, str]]:
    with BEA_FILE.open(newline="", encoding="utf-8") as handle:
        return {row["USEEIO_Code"]: row for row in csv.DictReader(handle)}


def test_worked_example_custom_programming_2023():
    ratio = PriceIndex.default().ratio("541511", 2023)

    assert ratio.ratio == Decimal("0.9975996421")  # 91.433 / 91.653, 10 places
    assert "91.433/91.653" in ratio.rule
    spend_2022 = Decimal(1000) * ratio.ratio
    assert spend_2022.quantize(Decimal("0.01")) == Decimal("997.60")
    assert (spend_2022 * Decimal("0.084")).quantize(Decimal("0.01")) == Decimal("83.80")


def test_worked_example_cement_2023():
    ratio = PriceIndex.default().ratio("327310", 2023)

    assert "121.071/135.516" in ratio.rule
    spend_2022 = Decimal(1000) * ratio.ratio
    assert spend_2022.quantize(Decimal("0.01")) == Decimal("893.41")
    assert (spend_2022 * Decimal("3.924")).quantize(Decimal("0.1")) == Decimal("3505.7")


def test_ratios_equal_the_published_index_quotient_for_every_code_and_year():
    index = PriceIndex.default()
    for code, row in _published().items():
        for year in (1997, 2010, 2019, 2023):
            expected = (Decimal(row["2022"]) / Decimal(row[str(year)])).quantize(
                Decimal("1e-10"), rounding=ROUND_HALF_UP
            )
            assert index.ratio(code, year).ratio == expected, (code, year)


def test_every_factor_of_the_default_set_has_an_index():
    index = PriceIndex.default()
    for factor in default_factor_set().factors():
        assert index.ratio(factor.useeio_code, 2020).ratio > 0


def test_several_useeio_codes_use_the_mean_of_their_indexes():
    published = _published()
    useeio = default_factor_set().lookup("238110").useeio_code
    codes = [code.strip() for code in useeio.split(",")]
    assert len(codes) > 1

    ratio = PriceIndex.default().ratio(useeio, 2020)

    mean_2022 = sum(Decimal(published[c]["2022"]) for c in codes) / len(codes)
    mean_2020 = sum(Decimal(published[c]["2020"]) for c in codes) / len(codes)
    assert abs(ratio.ratio - mean_2022 / mean_2020) < Decimal("1e-9")
    assert f"mean of {len(codes)} USEEIO codes" in ratio.rule


def test_years_after_the_last_publication_hold_the_last_index():
    index = PriceIndex.default()
    held = index.ratio("541511", 2026)

    assert held.ratio == index.ratio("541511", 2023).ratio
    assert "held 2023 index for 2026" in held.rule
    assert held.source_year == 2026


def test_same_year_gives_one_and_unknown_inputs_raise():
    index = PriceIndex.default()
    assert index.ratio("541511", 2022).ratio == Decimal("1.0000000000")
    with pytest.raises(PriceIndexError, match="before 1997"):
        index.ratio("541511", 1990)
    with pytest.raises(PriceIndexError, match="no price index for USEEIO code"):
        index.ratio("NOPE00", 2020)
