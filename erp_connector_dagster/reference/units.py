"""Unit conversion between the unit codes ERP systems put on lines and the units factors use.

ERPs spell the same unit many ways: SAP uses its internal codes (ST, KG, TO, L) or ISO codes
(PCE, KGM, TNE, LTR), Dynamics and NetSuite free text ("each", "pcs"), and e-invoicing uses
UN/CEFACT Recommendation 20 codes (C62, H87, KGM, MTQ, KWH). Every spelling maps to one
canonical unit with a dimension and an exact factor to the dimension's base unit; conversion
within a dimension is exact `Decimal` arithmetic, across dimensions it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction


class UnitConversionError(ValueError):
    """A quantity could not be converted; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Unit:
    """A canonical unit: its code, what it measures, and how many base units one of it is."""

    code: str
    dimension: str
    # Exact ratio to the base unit; a Fraction so that 1/3.6 (MJ per kWh) stays exact.
    to_base: Fraction


# Base units: kg (mass), L (volume), kWh (energy), km (distance), tkm (freight transport
# work), pkm (passenger transport), each (count), room_night (accommodation).
_CANONICAL: dict[str, Unit] = {
    unit.code: unit
    for unit in (
        Unit("g", "mass", Fraction("0.001")),
        Unit("kg", "mass", Fraction("1")),
        Unit("t", "mass", Fraction("1000")),
        # International avoirdupois pound and short ton, exact by definition.
        Unit("lb", "mass", Fraction("0.45359237")),
        Unit("short_ton", "mass", Fraction("907.18474")),
        Unit("ml", "volume", Fraction("0.001")),
        Unit("L", "volume", Fraction("1")),
        Unit("m3", "volume", Fraction("1000")),
        # US liquid gallon, exact by definition (231 cubic inches).
        Unit("gal_us", "volume", Fraction("3.785411784")),
        Unit("Wh", "energy", Fraction("0.001")),
        Unit("kWh", "energy", Fraction("1")),
        Unit("MWh", "energy", Fraction("1000")),
        Unit("GWh", "energy", Fraction("1000000")),
        # 1 kWh = 3.6 MJ exactly.
        Unit("MJ", "energy", 1 / Fraction("3.6")),
        Unit("GJ", "energy", 1000 / Fraction("3.6")),
        Unit("m", "distance", Fraction("0.001")),
        Unit("km", "distance", Fraction("1")),
        Unit("mi", "distance", Fraction("1.609344")),
        Unit("tkm", "freight", Fraction("1")),
        Unit("pkm", "passenger_distance", Fraction("1")),
        Unit("each", "count", Fraction("1")),
        Unit("pair", "count", Fraction("2")),
        Unit("dozen", "count", Fraction("12")),
        Unit("room_night", "accommodation", Fraction("1")),
    )
}

# Spellings seen on ERP lines, upper-cased, mapped to the canonical code. "MT" is left out on
# purpose: some systems mean metric ton by it, others metre.
# fmt: off
_ALIASES: dict[str, str] = {
    # count: SAP ST (Stueck), ISO PCE, UN/CEFACT C62 (one) and H87 (piece), EA each
    "EA": "each", "EACH": "each", "PC": "each", "PCS": "each", "PCE": "each", "ST": "each",
    "C62": "each", "H87": "each", "UNIT": "each", "UNITS": "each", "PIECE": "each",
    "PIECES": "each", "STK": "each", "NAR": "each",
    "PR": "pair", "PAA": "pair", "PAIR": "pair",
    "DZ": "dozen", "DZN": "dozen", "DOZEN": "dozen",
    # mass: UN/CEFACT KGM, GRM, TNE, LBR, STN
    "G": "g", "GR": "g", "GRM": "g", "GRAM": "g", "GRAMS": "g",
    "KG": "kg", "KGM": "kg", "KGS": "kg", "KILOGRAM": "kg", "KILOGRAMS": "kg",
    "T": "t", "TO": "t", "TNE": "t", "TON": "t", "TONNE": "t", "TONNES": "t",
    "LB": "lb", "LBS": "lb", "LBR": "lb", "POUND": "lb", "POUNDS": "lb",
    "STN": "short_ton", "SHORT_TON": "short_ton",
    # volume: UN/CEFACT LTR, MLT, MTQ, GLL
    "ML": "ml", "MLT": "ml",
    "L": "L", "LT": "L", "LTR": "L", "LITRE": "L", "LITRES": "L", "LITER": "L", "LITERS": "L",
    "M3": "m3", "MTQ": "m3", "CBM": "m3", "CUBIC_METRE": "m3", "CUBIC METRES": "m3",
    "GAL": "gal_us", "GLL": "gal_us", "GALLON": "gal_us", "GALLONS": "gal_us",
    # energy: UN/CEFACT WHR, KWH, MWH, GWH, MJ (3B), GJ (GV)
    "WH": "Wh", "WHR": "Wh",
    "KWH": "kWh", "MWH": "MWh", "GWH": "GWh",
    "MJ": "MJ", "3B": "MJ", "GJ": "GJ", "GV": "GJ",
    # distance: UN/CEFACT MTR, KMT, SMI
    "M": "m", "MTR": "m",
    "KM": "km", "KMT": "km", "KILOMETRE": "km", "KILOMETER": "km",
    "MI": "mi", "SMI": "mi", "MILE": "mi", "MILES": "mi",
    # transport work: UN/CEFACT TKM (tonne kilometre)
    "TKM": "tkm", "TONNE.KM": "tkm", "TONNE-KM": "tkm", "T.KM": "tkm",
    "PKM": "pkm", "PASSENGER.KM": "pkm", "PASSENGER-KM": "pkm", "P.KM": "pkm",
    # accommodation
    "ROOM_NIGHT": "room_night", "ROOM-NIGHT": "room_night", "ROOM NIGHT": "room_night",
    "ROOM_NIGHTS": "room_night", "NIGHT": "room_night", "NIGHTS": "room_night",
}
# fmt: on


def canonical_unit(unit: str | None) -> Unit:
    """The canonical unit for an ERP spelling, or `UnitConversionError` if it is unknown."""
    if unit is None or not unit.strip():
        raise UnitConversionError("no unit given")
    spelled = unit.strip()
    if spelled in _CANONICAL:
        return _CANONICAL[spelled]
    code = _ALIASES.get(spelled.upper())
    if code is None:
        raise UnitConversionError(f"unknown unit {spelled!r}")
    return _CANONICAL[code]


def is_known_unit(unit: str | None) -> bool:
    try:
        canonical_unit(unit)
    except UnitConversionError:
        return False
    return True


def convert(quantity: Decimal, from_unit: str | None, to_unit: str | None) -> Decimal:
    """Convert `quantity` between two units of the same dimension, exactly where possible.

    Raises `UnitConversionError` when either unit is unknown or the dimensions differ (a mass
    cannot become a volume without a density, a count cannot become a mass without a weight).
    """
    source = canonical_unit(from_unit)
    target = canonical_unit(to_unit)
    if source.dimension != target.dimension:
        raise UnitConversionError(
            f"cannot convert {from_unit!r} ({source.dimension}) to {to_unit!r} ({target.dimension})"
        )
    if source.code == target.code:
        return quantity

    # Exact rational arithmetic, then one division: 1500 kg -> 1.5 t exactly; only ratios
    # with a factor of 3 (MJ, GJ) need rounding, at 34 significant digits.
    ratio = Fraction(quantity) * source.to_base / target.to_base
    with localcontext() as context:
        context.prec = 34
        return Decimal(ratio.numerator) / Decimal(ratio.denominator)
