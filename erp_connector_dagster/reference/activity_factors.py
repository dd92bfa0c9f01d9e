"""Curated activity factors per material group (kg CO2e per physical unit), with their sources.

The shipped table, data/material_activity_factors.csv, holds about two dozen groups taken from
the UK DESNZ GHG conversion factors 2025 (steel, aluminium, paper, plastics, concrete, diesel,
natural gas, electricity, road freight, flights, hotel nights, ...). Each row cites the
publication row it comes from; data/MATERIAL_FACTORS_PROVENANCE.md says what was checked and
why each row was chosen. Another table in the same format can be loaded as a new version.
"""

# Limitation: the shipped factors are UK-centred (UK grid electricity, UK fuel blends, UK
# hotels, UK-origin flights) and only 3 of the 25 values were cross-checked against a second
# copy of the DESNZ 2025 tables (see data/MATERIAL_FACTORS_PROVENANCE.md).

from __future__ import annotations

import csv
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from erp_connector_dagster.reference.units import canonical_unit

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_ACTIVITY_FILE = DATA_DIR / "material_activity_factors.csv"
DEFAULT_ACTIVITY_SET = "DESNZ_GHG_CONVERSION_FACTORS"
DEFAULT_ACTIVITY_VERSION = "2025"

_COLUMNS = (
    "material_group",
    "label",
    "activity_factor",
    "unit",
    "scope3_category",
    "boundary",
    "source",
    "source_ids",
    "source_path",
)


class ActivityFactor(BaseModel):
    """kg CO2e per one `unit` of a material group, and where the number comes from."""

    model_config = ConfigDict(frozen=True)

    factor_set: str
    factor_version: str
    material_group: str
    label: str
    value: Decimal
    unit: str
    scope3_category: int
    boundary: str
    source: str
    source_ids: str
    source_path: str

    @property
    def factor_unit(self) -> str:
        return f"kg CO2e/{self.unit}"

    @property
    def citation(self) -> str:
        """Short reference an auditor can follow back to the published row."""
        return f"{self.source}, ID {self.source_ids} ({self.source_path})"


class ActivityFactorTable:
    """Activity factors by material group."""

    def __init__(self, name: str, version: str, factors: dict[str, ActivityFactor]) -> None:
        self.name = name
        self.version = version
        self._factors = factors

    @classmethod
    def from_csv(cls, path: Path | str, name: str, version: str) -> ActivityFactorTable:
        path = Path(path)
        factors: dict[str, ActivityFactor] = {}
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = set(_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path.name} lacks columns: {', '.join(sorted(missing))}")
            for line_number, row in enumerate(reader, start=2):
                group = row["material_group"].strip().lower()
                if group in factors:
                    raise ValueError(f"{path.name} line {line_number}: duplicate group {group}")
                unit = canonical_unit(row["unit"]).code
                value = Decimal(row["activity_factor"].strip())
                if value <= 0:
                    raise ValueError(f"{path.name} line {line_number}: factor must be > 0")
                factors[group] = ActivityFactor(
                    factor_set=name,
                    factor_version=version,
                    material_group=group,
                    label=row["label"].strip(),
                    value=value,
                    unit=unit,
                    scope3_category=int(row["scope3_category"]),
                    boundary=row["boundary"].strip(),
                    source=row["source"].strip(),
                    source_ids=row["source_ids"].strip(),
                    source_path=row["source_path"].strip(),
                )
        return cls(name, version, factors)

    @classmethod
    def default(cls) -> ActivityFactorTable:
        return _default_table()

    def __len__(self) -> int:
        return len(self._factors)

    def __contains__(self, group: object) -> bool:
        return isinstance(group, str) and group.strip().lower() in self._factors

    def groups(self) -> list[str]:
        return sorted(self._factors)

    def get(self, material_group: str) -> ActivityFactor | None:
        return self._factors.get(material_group.strip().lower())


@lru_cache(maxsize=1)
def _default_table() -> ActivityFactorTable:
    return ActivityFactorTable.from_csv(
        DEFAULT_ACTIVITY_FILE, DEFAULT_ACTIVITY_SET, DEFAULT_ACTIVITY_VERSION
    )
