"""Scope 3 emissions of spend lines: spend-based, activity-based, or hybrid, one method a line.

Entry point: `calculate_emission_lines(spend_records, vendors, materials, context)`.

Methods (`MethodologyContext.method`, default "hybrid", or ERP_CONNECTOR_CALCULATION_METHOD):

- "spend": kgco2e = amount * fx_rate * price_index_ratio * factor_value, with the EEIO factor of
  the line's spend category (see mapping.py) and the BEA price-index ratio from the spend year
  to the factor's dollar year.
- "activity": kgco2e = quantity (converted to the factor's unit) * activity factor of the
  line material's group. A line without an activity factor, quantity or convertible unit is
  quarantined with the reason.
- "hybrid": per line, the best available evidence and only that one (no double counting):
  a supplier-specific factor (per unit, then per USD), else an activity factor with a
  convertible quantity, else the spend-based factor.

Every line that is not excluded needs an exchange rate at its transaction date; a missing rate
(beyond the provider's window) or an unknown currency quarantines the line. A line whose spend
category is unmapped stays visible as an emission line with method "unmapped", mapping_rule
"unmapped" and kgco2e None, so unmapped spend is counted (in USD) and reported, never given a
default factor. Excluded lines (intercompany, tax, payroll, interest, depreciation, or voided /
deleted in the ERP) are kept with their `excluded_reason`, no category and no emissions.
Credit notes (negative amounts) give negative kgco2e in their category; for activity-based
lines the quantity takes the sign of the credit.

Rounding: fx_rate (10 places) and price_index_ratio (10 places) are rounded when obtained and
the rounded values are the ones used and recorded, so the stored line recomputes exactly.
amount_usd is rounded to 4 places and kgco2e to 6 places (half away from zero), each from the
unrounded product (kgco2e does not use the rounded amount_usd).

Data quality score (1 best, 5 worst; GHG Protocol Scope 3 guidance ranks supplier-specific data
above secondary activity data above spend data):
1 supplier-specific factor per physical unit (product footprint);
2 supplier-specific factor per USD (supplier's own intensity);
3 activity-based with a published secondary factor;
4 spend-based, category from an override, material, GL account or vendor industry code;
5 spend-based, category from a keyword, or spend after the last published price index year.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from erp_connector_dagster.methodology.categories import (
    CategoryClassifier,
    CategoryDecision,
    CategoryRules,
)
from erp_connector_dagster.methodology.mapping import (
    MappingRules,
    MaterialMapping,
    MaterialMatch,
    SpendCategory,
    SpendCategoryMapper,
    VendorMapping,
)
from erp_connector_dagster.records import (
    Material,
    RecordStatus,
    SpendDocumentType,
    SpendRecord,
    Vendor,
)
from erp_connector_dagster.reference.activity_factors import ActivityFactor, ActivityFactorTable
from erp_connector_dagster.reference.currency import (
    FxRate,
    RateError,
    RateProvider,
    build_rate_provider,
)
from erp_connector_dagster.reference.factors import FactorSet, default_factor_set
from erp_connector_dagster.reference.naics import NaicsConcordance
from erp_connector_dagster.reference.price_index import PriceIndex, PriceIndexError
from erp_connector_dagster.reference.units import UnitConversionError, canonical_unit, convert

logger = logging.getLogger("erp_connector_dagster.methodology")

CALCULATION_METHOD_ENV = "ERP_CONNECTOR_CALCULATION_METHOD"
SUPPLIER_FACTORS_ENV = "ERP_CONNECTOR_SUPPLIER_FACTORS"
FX_PROVIDER_ENV = "ERP_CONNECTOR_FX_PROVIDER"
FX_SOURCE_ENV = "ERP_CONNECTOR_FX_SOURCE"

METHODS = ("spend", "activity", "hybrid")
SUPPLIER_FACTOR_SET = "SUPPLIER_SPECIFIC"
QUARANTINE_STAGE = "emission_calculation"

AMOUNT_USD_PLACES = Decimal("1e-4")
KGCO2E_PLACES = Decimal("1e-6")


class SupplierFactor(BaseModel):
    """A supplier's own emission factor: per USD of spend, or per physical unit of a product."""

    model_config = ConfigDict(frozen=True)

    vendor_id: str
    material_id: str | None = None
    value: Decimal
    basis: Literal["per_usd", "per_unit"]
    unit: str | None = None
    source: str
    version: str = ""

    @model_validator(mode="after")
    def _unit_for_per_unit(self) -> SupplierFactor:
        if self.basis == "per_unit":
            if not self.unit:
                raise ValueError("a per_unit supplier factor needs its unit")
            canonical_unit(self.unit)
        if self.value < 0:
            raise ValueError("a supplier factor is not negative")
        return self

    @property
    def key(self) -> str | tuple[str, str]:
        return (self.vendor_id, self.material_id) if self.material_id else self.vendor_id

    @property
    def factor_unit(self) -> str:
        return "kg CO2e/USD" if self.basis == "per_usd" else f"kg CO2e/{self.unit}"


SupplierFactors = dict[str | tuple[str, str], SupplierFactor]


def load_supplier_factors(path: Path | str) -> SupplierFactors:
    """Read supplier factors from a CSV file with the columns
    vendor_id,material_id,value,basis,unit,source,version (material_id, unit, version may be
    empty; basis is per_usd, in kg CO2e per USD, or per_unit, in kg CO2e per `unit`)."""
    factors: SupplierFactors = {}
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            factor = SupplierFactor(
                vendor_id=row["vendor_id"].strip(),
                material_id=(row.get("material_id") or "").strip() or None,
                value=Decimal(row["value"].strip()),
                basis=row["basis"].strip(),
                unit=(row.get("unit") or "").strip() or None,
                source=row["source"].strip(),
                version=(row.get("version") or "").strip(),
            )
            factors[factor.key] = factor
    return factors


@dataclass
class MethodologyContext:
    """Everything a calculation depends on, chosen once per run."""

    rate_provider: RateProvider
    factor_set: FactorSet
    price_index: PriceIndex
    mapping_rules: MappingRules
    category_rules: CategoryRules
    activity_factors: ActivityFactorTable
    method: str = "hybrid"
    supplier_factors: SupplierFactors = field(default_factory=dict)
    concordance: NaicsConcordance = field(default_factory=NaicsConcordance.default)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        self.mapper = SpendCategoryMapper(
            self.mapping_rules, self.factor_set, self.activity_factors, self.concordance
        )
        self.classifier: CategoryClassifier = self.category_rules.classifier()

    @classmethod
    def default(cls, method: str | None = None, **overrides: Any) -> MethodologyContext:
        """Shipped reference data and rules, with the user files named in the environment.

        No database is needed. Environment: ERP_CONNECTOR_CALCULATION_METHOD (spend, activity,
        hybrid), ERP_CONNECTOR_FX_PROVIDER (ecb, file, http) with ERP_CONNECTOR_FX_SOURCE (the
        CSV path or base URL), ERP_CONNECTOR_SUPPLIER_FACTORS (CSV), and the rule files of
        mapping.py and categories.py. Keyword arguments replace any part.
        """
        parts: dict[str, Any] = {
            "method": method or os.environ.get(CALCULATION_METHOD_ENV) or "hybrid",
            "factor_set": default_factor_set(),
            "price_index": PriceIndex.default(),
            "mapping_rules": MappingRules.default(),
            "category_rules": CategoryRules.default(),
            "activity_factors": ActivityFactorTable.default(),
        }
        if "rate_provider" not in overrides:
            parts["rate_provider"] = _rate_provider_from_environment()
        supplier_file = os.environ.get(SUPPLIER_FACTORS_ENV)
        if supplier_file and "supplier_factors" not in overrides:
            parts["supplier_factors"] = load_supplier_factors(supplier_file)
        parts.update(overrides)
        return cls(**parts)


def _rate_provider_from_environment() -> RateProvider:
    name = (os.environ.get(FX_PROVIDER_ENV) or "ecb").strip().lower()
    source = os.environ.get(FX_SOURCE_ENV)
    if name == "file":
        return build_rate_provider("file", path=source)
    if name == "http":
        from erp_connector_dagster.settings import data_dir

        return build_rate_provider("http", base_url=source, cache_dir=data_dir() / "fx-cache")
    return build_rate_provider(name)


class EmissionLine(BaseModel):
    """One calculated spend line: the non-bookkeeping columns of emission_calculations.

    `quantity` / `unit` are, for activity-based and per-unit supplier lines, the quantity in
    the factor's unit (so kgco2e = quantity * factor_value); for other lines they are as on the
    spend line. `factor_version` is "" for lines without a factor (unmapped, excluded).
    """

    model_config = ConfigDict(frozen=True)

    connection: str
    transaction_date: dt.date
    record_key: str
    vendor_id: str | None
    material_id: str | None
    scope3_category: int | None
    excluded_reason: str | None
    method: str
    amount: Decimal
    currency: str
    fx_rate: Decimal | None
    fx_rate_date: dt.date | None
    fx_provider: str | None
    amount_usd: Decimal | None
    price_index_ratio: Decimal | None
    price_index_rule: str | None
    factor_set: str | None
    factor_version: str
    factor_code: str | None
    factor_value: Decimal | None
    factor_unit: str | None
    quantity: Decimal | None
    unit: str | None
    kgco2e: Decimal | None
    data_quality_score: int | None
    mapping_rule: str | None

    COLUMNS: ClassVar[tuple[str, ...]]

    def as_row(self) -> dict[str, Any]:
        return {column: getattr(self, column) for column in self.COLUMNS}


EmissionLine.COLUMNS = tuple(EmissionLine.model_fields)


class QuarantinedLine(BaseModel):
    """A spend line that could not be calculated, for the quarantine table, with the reason."""

    model_config = ConfigDict(frozen=True)

    connection: str
    kind: str = "spend"
    stage: str = QUARANTINE_STAGE
    partition_date: dt.date
    source_id: str
    record_key: str
    reason: str
    payload: dict[str, Any]


class CalculationResult(BaseModel):
    """Lines, quarantined lines, and the vendor and material mappings used."""

    lines: list[EmissionLine]
    quarantined: list[QuarantinedLine]
    vendor_mappings: list[VendorMapping]
    material_mappings: list[MaterialMapping]

    @property
    def total_kgco2e(self) -> Decimal:
        return sum((line.kgco2e for line in self.lines if line.kgco2e is not None), Decimal(0))

    @property
    def unmapped_lines(self) -> list[EmissionLine]:
        return [line for line in self.lines if line.method == "unmapped"]

    @property
    def unmapped_amount_usd(self) -> Decimal:
        return sum((line.amount_usd or Decimal(0) for line in self.unmapped_lines), Decimal(0))

    def kgco2e_by_category(self) -> dict[int, Decimal]:
        totals: dict[int, Decimal] = {}
        for line in self.lines:
            if line.kgco2e is not None and line.scope3_category is not None:
                totals[line.scope3_category] = (
                    totals.get(line.scope3_category, Decimal(0)) + line.kgco2e
                )
        return totals


class _Quarantine(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def calculate_emission_lines(
    spend_records: Iterable[SpendRecord],
    vendors: dict[str, Vendor],
    materials: dict[str, Material],
    context: MethodologyContext,
) -> CalculationResult:
    """Calculate one emission line (or one quarantine entry) per spend record."""
    lines: list[EmissionLine] = []
    quarantined: list[QuarantinedLine] = []
    vendor_mappings: dict[tuple[str, dt.date, str], VendorMapping] = {}
    material_mappings: dict[tuple[str, dt.date, str], MaterialMapping] = {}

    for spend_record in spend_records:
        vendor = vendors.get(spend_record.vendor_id) if spend_record.vendor_id else None
        material = materials.get(spend_record.material_id) if spend_record.material_id else None
        _record_mappings(
            spend_record, vendor, material, context, vendor_mappings, material_mappings
        )
        try:
            lines.append(_calculate_line(spend_record, vendor, material, context))
        except _Quarantine as problem:
            quarantined.append(
                QuarantinedLine(
                    connection=spend_record.connection,
                    partition_date=spend_record.transaction_date,
                    source_id=spend_record.source_id,
                    record_key=spend_record.natural_key,
                    reason=problem.reason,
                    payload=spend_record.model_dump(mode="json"),
                )
            )

    result = CalculationResult(
        lines=lines,
        quarantined=quarantined,
        vendor_mappings=list(vendor_mappings.values()),
        material_mappings=list(material_mappings.values()),
    )
    logger.info(
        "calculated %d lines (%d unmapped, %d quarantined), %s kgCO2e",
        len(lines),
        len(result.unmapped_lines),
        len(quarantined),
        result.total_kgco2e,
    )
    return result


def _record_mappings(
    spend_record: SpendRecord,
    vendor: Vendor | None,
    material: Material | None,
    context: MethodologyContext,
    vendor_mappings: dict[tuple[str, dt.date, str], VendorMapping],
    material_mappings: dict[tuple[str, dt.date, str], MaterialMapping],
) -> None:
    connection, day = spend_record.connection, spend_record.transaction_date
    if spend_record.vendor_id and (connection, day, spend_record.vendor_id) not in vendor_mappings:
        decision = context.mapper.map_vendor(connection, spend_record.vendor_id, vendor)
        vendor_mappings[(connection, day, spend_record.vendor_id)] = VendorMapping(
            connection=connection,
            mapping_date=day,
            vendor_id=spend_record.vendor_id,
            naics_code=decision.naics_code,
            mapping_rule=decision.mapping_rule,
            rule_detail=decision.rule_detail,
        )
    material_id = spend_record.material_id
    if material_id and (connection, day, material_id) not in material_mappings:
        if material is None:
            mapping = MaterialMapping(
                connection=connection,
                mapping_date=day,
                material_id=material_id,
                material_group=None,
                activity_factor=None,
                factor_unit=None,
                factor_source=None,
                mapping_rule="unmapped",
                rule_detail=f"material {material_id} is not in the material master",
            )
        else:
            match = context.mapper.material_match(material)
            factor = match.activity_factor
            mapping = MaterialMapping(
                connection=connection,
                mapping_date=day,
                material_id=material_id,
                material_group=factor.material_group if factor else None,
                activity_factor=factor.value if factor else None,
                factor_unit=factor.factor_unit if factor else None,
                factor_source=factor.citation if factor else None,
                mapping_rule=match.mapping_rule,
                rule_detail=match.rule_detail
                + ("" if factor else "; no activity factor for this material"),
            )
        material_mappings[(connection, day, material_id)] = mapping


def _calculate_line(
    spend_record: SpendRecord,
    vendor: Vendor | None,
    material: Material | None,
    context: MethodologyContext,
) -> EmissionLine:
    spend_category = context.mapper.map_line(spend_record, vendor, material)
    material_match = context.mapper.material_match(material) if material else None
    activity_factor = material_match.activity_factor if material_match else None
    category = context.classifier.classify(
        spend_record,
        vendor,
        spend_category.naics_code,
        activity_factor.material_group if activity_factor else None,
    )
    base = _base_columns(spend_record, spend_category)

    if spend_record.status != RecordStatus.ACTIVE:
        category = CategoryDecision(
            scope3_category=None,
            excluded_reason=f"{spend_record.status.value} in the ERP",
            rule="status",
        )
    if category.excluded_reason is not None:
        return _excluded_line(spend_record, base, category, context)

    fx = _fx_rate(spend_record, context)
    base.update(
        scope3_category=category.scope3_category,
        fx_rate=fx.rate,
        fx_rate_date=fx.rate_date,
        fx_provider=fx.provider,
        amount_usd=_rounded(_product(spend_record.amount, fx.rate), AMOUNT_USD_PLACES),
    )

    if context.method == "hybrid":
        supplier_line = _supplier_line(spend_record, material, base, fx, context)
        if supplier_line is not None:
            return supplier_line
    if context.method in ("activity", "hybrid"):
        activity = _activity_columns(
            spend_record,
            material,
            material_match,
            activity_factor,
            strict=context.method == "activity",
        )
        if activity is not None:
            return EmissionLine(**{**base, **activity})
    return _spend_line(spend_record, base, spend_category, fx, context)


def _base_columns(spend_record: SpendRecord, spend_category: SpendCategory) -> dict[str, Any]:
    return {
        "connection": spend_record.connection,
        "transaction_date": spend_record.transaction_date,
        "record_key": spend_record.natural_key,
        "vendor_id": spend_record.vendor_id,
        "material_id": spend_record.material_id,
        "scope3_category": None,
        "excluded_reason": None,
        "amount": spend_record.amount,
        "currency": spend_record.currency.strip().upper(),
        "fx_rate": None,
        "fx_rate_date": None,
        "fx_provider": None,
        "amount_usd": None,
        "price_index_ratio": None,
        "price_index_rule": None,
        "factor_set": None,
        "factor_version": "",
        "factor_code": None,
        "factor_value": None,
        "factor_unit": None,
        "quantity": spend_record.quantity,
        "unit": spend_record.unit,
        "kgco2e": None,
        "data_quality_score": None,
        "mapping_rule": spend_category.mapping_rule,
    }


def _excluded_line(
    spend_record: SpendRecord,
    base: dict[str, Any],
    category: CategoryDecision,
    context: MethodologyContext,
) -> EmissionLine:
    # Excluded lines carry no emissions; a rate is recorded when there is one, for
    # reconciliation, but its absence does not quarantine the line.
    try:
        fx = context.rate_provider.rate(spend_record.currency, spend_record.transaction_date)
    except RateError:
        fx = None
    if fx is not None:
        base.update(
            fx_rate=fx.rate,
            fx_rate_date=fx.rate_date,
            fx_provider=fx.provider,
            amount_usd=_rounded(_product(spend_record.amount, fx.rate), AMOUNT_USD_PLACES),
        )
    base.update(excluded_reason=category.excluded_reason)
    return EmissionLine(**base, method="excluded")


def _fx_rate(spend_record: SpendRecord, context: MethodologyContext) -> FxRate:
    try:
        return context.rate_provider.rate(spend_record.currency, spend_record.transaction_date)
    except RateError as error:
        raise _Quarantine(error.reason) from error


def _supplier_line(
    spend_record: SpendRecord,
    material: Material | None,
    base: dict[str, Any],
    fx: FxRate,
    context: MethodologyContext,
) -> EmissionLine | None:
    vendor_id = spend_record.vendor_id
    if not vendor_id or not context.supplier_factors:
        return None
    candidates = []
    if spend_record.material_id:
        candidates.append(context.supplier_factors.get((vendor_id, spend_record.material_id)))
    candidates.append(context.supplier_factors.get(vendor_id))

    for supplier_factor in (c for c in candidates if c is not None):
        code = vendor_id + (
            f"/{supplier_factor.material_id}" if supplier_factor.material_id else ""
        )
        columns = {
            "method": "supplier_specific",
            "factor_set": SUPPLIER_FACTOR_SET,
            "factor_version": supplier_factor.version,
            "factor_code": code,
            "factor_value": supplier_factor.value,
            "factor_unit": supplier_factor.factor_unit,
        }
        if supplier_factor.basis == "per_unit":
            quantity = _converted_quantity(spend_record, material, supplier_factor.unit)
            if isinstance(quantity, str):
                continue
            return EmissionLine(
                **{
                    **base,
                    **columns,
                    "quantity": quantity,
                    "unit": supplier_factor.unit,
                    "kgco2e": _rounded(_product(quantity, supplier_factor.value), KGCO2E_PLACES),
                    "data_quality_score": 1,
                }
            )
        # Limitation: supplier intensities (kg CO2e per USD) are applied to the nominal USD of
        # the transaction, without price-index adjustment; give the intensity of the spend year.
        kgco2e = _product(spend_record.amount, fx.rate, supplier_factor.value)
        return EmissionLine(
            **{
                **base,
                **columns,
                "kgco2e": _rounded(kgco2e, KGCO2E_PLACES),
                "data_quality_score": 2,
            }
        )
    return None


def _converted_quantity(
    spend_record: SpendRecord, material: Material | None, to_unit: str | None
) -> Decimal | str:
    """The line quantity in `to_unit`, signed like the credit; or why it cannot be had."""
    if spend_record.quantity is None:
        return "the line has no quantity"
    unit = spend_record.unit or (material.base_unit if material else None)
    try:
        quantity = convert(abs(spend_record.quantity), unit, to_unit)
    except UnitConversionError as error:
        return error.reason
    is_credit = (
        spend_record.amount < 0
        or spend_record.quantity < 0
        or spend_record.document_type == SpendDocumentType.CREDIT_NOTE
    )
    return -quantity if is_credit else quantity


def _activity_columns(
    spend_record: SpendRecord,
    material: Material | None,
    material_match: MaterialMatch | None,
    activity_factor: ActivityFactor | None,
    strict: bool,
) -> dict[str, Any] | None:
    """Activity-based columns, or None to fall back (hybrid); strict (activity) quarantines."""
    if activity_factor is None:
        if not strict:
            return None
        if spend_record.material_id is None:
            raise _Quarantine("activity method: the line has no material")
        detail = material_match.rule_detail if material_match else "not in the material master"
        raise _Quarantine(
            f"activity method: no activity factor for material {spend_record.material_id} "
            f"({detail})"
        )
    quantity = _converted_quantity(spend_record, material, activity_factor.unit)
    if isinstance(quantity, str):
        if not strict:
            return None
        raise _Quarantine(f"activity method: {quantity}")
    return {
        "method": "activity",
        "factor_set": activity_factor.factor_set,
        "factor_version": activity_factor.factor_version,
        "factor_code": activity_factor.material_group,
        "factor_value": activity_factor.value,
        "factor_unit": activity_factor.factor_unit,
        "quantity": quantity,
        "unit": activity_factor.unit,
        "kgco2e": _rounded(_product(quantity, activity_factor.value), KGCO2E_PLACES),
        "data_quality_score": 3,
    }


def _spend_line(
    spend_record: SpendRecord,
    base: dict[str, Any],
    spend_category: SpendCategory,
    fx: FxRate,
    context: MethodologyContext,
) -> EmissionLine:
    factor = spend_category.factor
    if factor is None:
        return EmissionLine(**base, method="unmapped")
    try:
        ratio = context.price_index.ratio(
            factor.useeio_code, spend_record.transaction_date.year, factor.dollar_year
        )
    except PriceIndexError as error:
        raise _Quarantine(f"price index: {error}") from error

    kgco2e = _product(spend_record.amount, fx.rate, ratio.ratio, factor.value)
    held_index = spend_record.transaction_date.year > context.price_index.last_year
    weak_mapping = spend_category.mapping_rule == "keyword"
    return EmissionLine(
        **{
            **base,
            "method": "spend",
            "price_index_ratio": ratio.ratio,
            "price_index_rule": ratio.rule,
            "factor_set": factor.factor_set,
            "factor_version": factor.factor_version,
            "factor_code": factor.code,
            "factor_value": factor.value,
            "factor_unit": factor.unit,
            "kgco2e": _rounded(kgco2e, KGCO2E_PLACES),
            "data_quality_score": 5 if (held_index or weak_mapping) else 4,
        }
    )


def _product(*values: Decimal) -> Decimal:
    """Exact product: 60 digits hold any product of the stored column precisions."""
    with localcontext() as decimal_context:
        decimal_context.prec = 60
        result = Decimal(1)
        for value in values:
            result *= value
        return result


def _rounded(value: Decimal, places: Decimal) -> Decimal:
    with localcontext() as decimal_context:
        decimal_context.prec = 60
        return value.quantize(places, rounding=ROUND_HALF_UP)
