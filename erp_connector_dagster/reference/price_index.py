"""BEA gross-output price indexes per USEEIO commodity, to bring spend into the factor's dollars.

EEIO factors are per dollar of one year (EPA v1.3: 2022 USD). Spend from another year is
deflated or inflated first: spend_in_target_dollars = spend * index[target] / index[spend_year].
The indexes are the BEA chain-type price indexes for gross output at the detailed level that
EPA's own tooling uses (see data/BEA_PROVENANCE.md), 2017 = 100, published for 1997-2023.

Decisions recorded in every ratio's `rule` text:
- a factor that lists several USEEIO codes (some construction NAICS codes do) uses the
  arithmetic mean of the listed codes' indexes, for the spend year and the target year alike;
- a year after the last published one holds the last published index (no extrapolation);
- a year before the first published one is an error, never a guess.

Limitation: these are producer-price indexes applied to purchaser-price factors (EPA's own
tooling does the same), and BEA revises its latest years.
"""

from __future__ import annotations

import csv
from decimal import ROUND_HALF_UP, Decimal, localcontext
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_INDEX_FILE = DATA_DIR / "BEA_Detail_GrossOutput_PriceIndex_2017schema_1997-2023.csv"
RATIO_PLACES = Decimal("1e-10")


class PriceIndexError(ValueError):
    """No index for the code or the year asked for."""


class PriceIndexRatio(BaseModel):
    """index[target_year] / index[source_year], with the rule that produced it."""

    model_config = ConfigDict(frozen=True)

    ratio: Decimal
    rule: str
    source_year: int
    target_year: int


class PriceIndex:
    """Price index values by USEEIO code and year."""

    def __init__(self, indexes: dict[str, dict[int, Decimal]], source: str) -> None:
        if not indexes:
            raise PriceIndexError("price index table is empty")
        self._indexes = indexes
        self.source = source
        years = {year for by_year in indexes.values() for year in by_year}
        self.first_year = min(years)
        self.last_year = max(years)

    @classmethod
    def from_csv(cls, path: Path, source: str | None = None) -> PriceIndex:
        """Read a table with a code column first and one column per year."""
        indexes: dict[str, dict[int, Decimal]] = {}
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            years = [int(column) for column in header[1:]]
            for row in reader:
                if not row:
                    continue
                code = row[0].strip()
                indexes[code] = {
                    year: Decimal(value)
                    for year, value in zip(years, row[1:], strict=True)
                    if value.strip() not in ("", "NA")
                }
        return cls(indexes, source or path.name)

    @classmethod
    def default(cls) -> PriceIndex:
        """The shipped BEA detail table (2017 schema, 1997-2023)."""
        return _default_price_index()

    def codes(self) -> set[str]:
        return set(self._indexes)

    def index(self, useeio_code: str, year: int) -> Decimal:
        """The published index of one code in one year (no holding, no averaging)."""
        by_year = self._indexes.get(useeio_code.strip())
        if by_year is None:
            raise PriceIndexError(f"no price index for USEEIO code {useeio_code!r}")
        if year not in by_year:
            raise PriceIndexError(f"no price index for USEEIO code {useeio_code!r} in {year}")
        return by_year[year]

    def ratio(self, useeio_code: str, spend_year: int, target_year: int = 2022) -> PriceIndexRatio:
        """The factor that turns `spend_year` dollars into `target_year` dollars."""
        codes = [code.strip() for code in useeio_code.split(",") if code.strip()]
        if not codes:
            raise PriceIndexError("no USEEIO code given")

        source_year, source_note = self._published_year(spend_year)
        target_index_year, target_note = self._published_year(target_year)
        source_index = self._mean_index(codes, source_year)
        target_index = self._mean_index(codes, target_index_year)

        with localcontext() as context:
            context.prec = 40
            ratio = (target_index / source_index).quantize(RATIO_PLACES, rounding=ROUND_HALF_UP)

        if len(codes) == 1:
            subject = f"USEEIO {codes[0]}"
        else:
            subject = f"mean of {len(codes)} USEEIO codes ({', '.join(codes)})"
        notes = "".join(note for note in (source_note, target_note) if note)
        rule = (
            f"BEA gross output price index, {subject}: {target_year}/{spend_year} = "
            f"{_plain(target_index)}/{_plain(source_index)}{notes}"
        )
        return PriceIndexRatio(
            ratio=ratio, rule=rule, source_year=spend_year, target_year=target_year
        )

    def _published_year(self, year: int) -> tuple[int, str]:
        if year < self.first_year:
            raise PriceIndexError(f"no price index before {self.first_year} (spend year {year})")
        if year > self.last_year:
            return self.last_year, f"; held {self.last_year} index for {year}"
        return year, ""

    def _mean_index(self, codes: list[str], year: int) -> Decimal:
        values = [self.index(code, year) for code in codes]
        if len(values) == 1:
            return values[0]
        with localcontext() as context:
            context.prec = 40
            return sum(values, Decimal(0)) / len(values)


def _plain(value: Decimal) -> str:
    # Means of several codes can have long expansions; the rule text shows 6 places for them.
    if value.as_tuple().exponent < -6:
        return str(value.quantize(Decimal("1e-6"), rounding=ROUND_HALF_UP))
    return str(value)


@lru_cache(maxsize=1)
def _default_price_index() -> PriceIndex:
    return PriceIndex.from_csv(
        DEFAULT_INDEX_FILE,
        source="BEA gross output chain-type price index, detail, 2017 schema (via useeior 1.7.2)",
    )
