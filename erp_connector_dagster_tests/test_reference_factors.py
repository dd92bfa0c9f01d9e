"""EEIO factor sets, the NAICS concordance and the curated activity factors, checked against
the shipped files read independently of the loaders."""

from __future__ import annotations

import csv
import hashlib
import re
from decimal import Decimal
from pathlib import Path

import pytest

from erp_connector_dagster.reference import factors as factors_module
from erp_connector_dagster.reference.activity_factors import ActivityFactorTable
from erp_connector_dagster.reference.factors import (
    FactorSetError,
    default_factor_set,
    load_factor_set,
)
from erp_connector_dagster.reference.naics import NaicsConcordance
from erp_connector_dagster.reference.units import canonical_unit

DATA = Path(factors_module.__file__).parent / "data"
EPA_FILE = DATA / "SupplyChainGHGEmissionFactors_v1.3.0_NAICS_CO2e_USD2022.csv"


def _published_rows() -> list[dict[str, str]]:
    with EPA_FILE.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    "name",
    [
        "SupplyChainGHGEmissionFactors_v1.3.0_NAICS_CO2e_USD2022.csv",
        "BEA_Detail_GrossOutput_PriceIndex_2017schema_1997-2023.csv",
        "NAICS_Year_Concordance.csv",
    ],
)
def test_shipped_files_match_the_hash_in_their_provenance(name):
    provenance = "\n".join(path.read_text() for path in DATA.glob("*_PROVENANCE.md"))
    digest = hashlib.sha256((DATA / name).read_bytes()).hexdigest()
    assert digest in provenance


def test_default_set_carries_every_published_factor_exactly():
    factor_set = default_factor_set()
    rows = _published_rows()

    assert (factor_set.name, factor_set.version, factor_set.dollar_year) == (
        "EPA_SUPPLY_CHAIN_GHG",
        "1.3.0",
        2022,
    )
    assert factor_set.unit == "kg CO2e/2022 USD, purchaser price"
    assert len(factor_set) == len(rows) == 1016
    for row in rows:
        factor = factor_set.lookup(row["2017 NAICS Code"])
        assert factor is not None
        assert factor.value == Decimal(row["Supply Chain Emission Factors with Margins"])
        assert str(factor.value) == row["Supply Chain Emission Factors with Margins"]
        assert factor.useeio_code == row["Reference USEEIO Code"]
        assert factor.title == row["2017 NAICS Title"]


def test_lookup_returns_the_published_examples():
    factor_set = default_factor_set()
    assert factor_set.lookup("541511").value == Decimal("0.084")
    assert factor_set.lookup("327310").value == Decimal("3.924")
    assert factor_set.lookup("221122") is None  # electricity is left out by EPA
    assert factor_set.lookup("999999") is None


def test_resolve_maps_a_newer_vintage_through_the_concordance():
    factor_set = default_factor_set()
    one_to_one = factor_set.resolve("513210")  # NAICS 2022 software publishers
    assert one_to_one.factor.code == "511210"
    assert "2022 513210 -> 2017 511210" in one_to_one.detail

    split = factor_set.resolve("455110")  # 2022 code split into two 2017 codes
    candidates = [factor_set.lookup("452210"), factor_set.lookup("454110")]
    assert split.factor.value == max(c.value for c in candidates)
    assert "452210" in split.detail and "454110" in split.detail
    assert "highest factor" in split.detail

    assert factor_set.resolve("000000") is None


def test_concordance_reads_the_newest_vintage_that_knows_a_code():
    concordance = NaicsConcordance.default()
    assert concordance.to_naics_2017("541511").naics_2017 == ("541511",)
    match = concordance.to_naics_2017("516210")
    assert match.vintage == 2022
    assert set(match.naics_2017) == {"515111", "515120", "515210", "519110", "519130"}


def test_a_new_version_loads_from_a_csv_in_the_same_format(tmp_path):
    rows = _published_rows()
    for row in rows:
        if row["2017 NAICS Code"] == "541511":
            row["Supply Chain Emission Factors with Margins"] = "0.091"
    changed = tmp_path / "factors_v2.csv"
    with changed.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    factor_set = load_factor_set(changed, "EPA_SUPPLY_CHAIN_GHG", "1.3.1-test", 2022)

    assert factor_set.version == "1.3.1-test"
    assert factor_set.lookup("541511").value == Decimal("0.091")
    assert factor_set.lookup("541511").factor_version == "1.3.1-test"
    assert factor_set.lookup("327310").value == Decimal("3.924")
    assert "sha256:" in factor_set.source


def test_a_malformed_factor_file_is_refused(tmp_path):
    broken = tmp_path / "broken.csv"
    broken.write_text("2017 NAICS Code,Unit\n541511,kg\n")
    with pytest.raises(FactorSetError, match="lacks columns"):
        load_factor_set(broken, "X", "1", 2022)


def test_activity_factor_table_is_curated_and_cited():
    table = ActivityFactorTable.default()
    with (DATA / "material_activity_factors.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    assert 15 <= len(table) == len(rows) <= 25
    for row in rows:
        factor = table.get(row["material_group"])
        assert factor.value == Decimal(row["activity_factor"]) > 0
        assert canonical_unit(factor.unit).code == factor.unit
        assert 1 <= factor.scope3_category <= 15
        assert "DESNZ" in factor.source
        # Each row cites DESNZ flat-file IDs (<scope>_<group>_<item>_<unit>_<gas>).
        assert re.fullmatch(r"\d+_\d+_\d+_\d+_1( \+ \d+_\d+_\d+_\d+_1)*", factor.source_ids)
    # The electricity row is documented as the sum of three published rows.
    assert table.get("electricity").value == Decimal("0.0459") + Decimal("0.00397") + Decimal(
        "0.01853"
    )
    assert table.get("steel").factor_unit == "kg CO2e/t"
    assert table.get("nonexistent") is None
