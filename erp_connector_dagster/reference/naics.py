"""NAICS vintage concordance: which NAICS-2017 codes a code from another vintage corresponds to.

EEIO factors (EPA v1.3) are keyed on NAICS 2017, while vendor master data may carry NAICS 2022
(or 2012 and older) codes. The shipped table (data/NAICS_PROVENANCE.md) links six-digit codes of
the 2002, 2007, 2012, 2017 and 2022 vintages, one link per row, so a code can correspond to
several 2017 codes; callers decide how to choose among them and must record the choice.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_CONCORDANCE_FILE = DATA_DIR / "NAICS_Year_Concordance.csv"
# Newest first: a code found in several vintages is read in the newest one, the vintage vendor
# master data most likely uses.
VINTAGES = (2017, 2022, 2012, 2007, 2002)


@dataclass(frozen=True)
class ConcordanceMatch:
    """The NAICS-2017 codes one code corresponds to, and the vintage it was read in."""

    code: str
    vintage: int
    naics_2017: tuple[str, ...]


class NaicsConcordance:
    """Links between NAICS vintages, read from the concordance table."""

    def __init__(self, links: dict[int, dict[str, set[str]]]) -> None:
        self._links = links

    @classmethod
    def from_csv(cls, path: Path) -> NaicsConcordance:
        links: dict[int, dict[str, set[str]]] = {vintage: {} for vintage in VINTAGES}
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                code_2017 = row["NAICS_2017_Code"].strip()
                for vintage in VINTAGES:
                    code = row[f"NAICS_{vintage}_Code"].strip()
                    if code:
                        links[vintage].setdefault(code, set()).add(code_2017)
        return cls(links)

    @classmethod
    def default(cls) -> NaicsConcordance:
        return _default_concordance()

    def to_naics_2017(self, code: str) -> ConcordanceMatch | None:
        """The 2017 codes for `code`, read in the newest vintage that knows it; None if none."""
        code = code.strip()
        for vintage in VINTAGES:
            targets = self._links[vintage].get(code)
            if targets:
                return ConcordanceMatch(code, vintage, tuple(sorted(targets)))
        return None


@lru_cache(maxsize=1)
def _default_concordance() -> NaicsConcordance:
    return NaicsConcordance.from_csv(DEFAULT_CONCORDANCE_FILE)
