"""Unit conversion between ERP unit spellings and factor units."""

from __future__ import annotations

from decimal import Decimal

import pytest

from erp_connector_dagster.reference.units import UnitConversionError, canonical_unit, convert


@pytest.mark.parametrize(
    ("quantity", "from_unit", "to_unit", "expected"),
    [
        ("1500", "KGM", "TNE", "1.5"),  # UN/CEFACT
        ("2", "TO", "kg", "2000"),  # SAP internal code for tonne
        ("250", "GRM", "KG", "0.25"),
        ("1", "LB", "kg", "0.45359237"),  # exact by definition
        ("10", "GLL", "LTR", "37.85411784"),  # US gallon, exact
        ("2", "MTQ", "L", "2000"),
        ("1500", "ml", "L", "1.5"),
        ("3", "MWH", "kWh", "3000"),
        ("3.6", "MJ", "kWh", "1"),
        ("7200", "Wh", "kWh", "7.2"),
        ("10", "SMI", "km", "16.09344"),
        ("12", "TKM", "tkm", "12"),
        ("3", "NIGHTS", "room_night", "3"),
        ("4", "ST", "EA", "4"),  # SAP "Stueck" = piece
        ("4", "C62", "each", "4"),
        ("4", "H87", "PCE", "4"),
        ("2", "DZN", "EA", "24"),
        ("3", "PR", "EA", "6"),
    ],
)
def test_convert_within_a_dimension(quantity, from_unit, to_unit, expected):
    assert convert(Decimal(quantity), from_unit, to_unit) == Decimal(expected)


def test_gigajoule_to_kilowatt_hour_keeps_precision():
    assert convert(Decimal("1"), "GJ", "kWh").quantize(Decimal("1e-12")) == Decimal(
        "277.777777777778"
    )


@pytest.mark.parametrize(
    ("from_unit", "to_unit", "fragment"),
    [
        ("KG", "L", "mass"),  # no density
        ("EA", "kg", "count"),  # no item weight
        ("kWh", "L", "energy"),
        ("BOX", "kg", "unknown unit 'BOX'"),
        ("kg", "XYZ", "unknown unit 'XYZ'"),
        (None, "kg", "no unit given"),
        ("MT", "kg", "unknown unit 'MT'"),  # ambiguous: metric ton or metre
    ],
)
def test_incompatible_or_unknown_units_raise_with_a_reason(from_unit, to_unit, fragment):
    with pytest.raises(UnitConversionError) as raised:
        convert(Decimal("1"), from_unit, to_unit)
    assert fragment in raised.value.reason


def test_spellings_are_case_insensitive_and_trimmed():
    assert canonical_unit(" kgm ").code == "kg"
    assert canonical_unit("Kwh").code == "kWh"
    assert canonical_unit("kWh").code == "kWh"
