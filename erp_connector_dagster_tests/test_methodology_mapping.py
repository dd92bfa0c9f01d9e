"""Spend-category mapping precedence and material mapping."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from erp_connector_dagster.methodology.mapping import (
    MAPPING_RULES_ENV,
    VENDOR_OVERRIDES_ENV,
    GlAccountRule,
    KeywordRule,
    MappingRules,
    MaterialRule,
    SpendCategoryMapper,
    VendorOverride,
)
from erp_connector_dagster.records import Material, SpendDocumentType, SpendRecord, Vendor
from erp_connector_dagster.reference.activity_factors import ActivityFactorTable
from erp_connector_dagster.reference.factors import default_factor_set

# One line carries evidence for every level, each pointing at a different NAICS code.
OVERRIDE, MATERIAL, GL_ACCOUNT, INDUSTRY, KEYWORD = (
    "541611",
    "334111",
    "541511",
    "541512",
    "481111",
)

RULES = MappingRules(
    overrides=[VendorOverride(vendor_id="V1", naics=OVERRIDE, note="checked by buyer")],
    material_rules=[
        MaterialRule(commodity_code="4321*", naics=MATERIAL, activity_group="it_equipment")
    ],
    gl_account_rules=[GlAccountRule(accounts="6000-6099", naics=GL_ACCOUNT)],
    keyword_rules=[KeywordRule(pattern=r"\bairways\b", naics=KEYWORD)],
)


def _mapper(rules: MappingRules = RULES) -> SpendCategoryMapper:
    return SpendCategoryMapper(rules, default_factor_set(), ActivityFactorTable.default())


def _line(**changes) -> SpendRecord:
    fields = dict(
        connection="acme",
        source_id="S1",
        document_id="INV-1",
        line_number=1,
        document_type=SpendDocumentType.INVOICE,
        transaction_date=dt.date(2023, 5, 2),
        vendor_id="V1",
        material_id="M1",
        gl_account="6010",
        description="services",
        amount=Decimal("100"),
        currency="USD",
    )
    fields.update(changes)
    return SpendRecord(**fields)


def _vendor(**changes) -> Vendor:
    fields = dict(
        connection="acme",
        source_id="V1",
        vendor_id="V1",
        name="Blue Airways",
        industry_code=INDUSTRY,
    )
    fields.update(changes)
    return Vendor(**fields)


MATERIAL_RECORD = Material(
    connection="acme",
    source_id="M1",
    material_id="M1",
    description="laptop",
    commodity_code="43211503",
)


def test_each_level_beats_the_next():
    mapper = _mapper()
    line, vendor, material = _line(), _vendor(), MATERIAL_RECORD

    decided = mapper.map_line(line, vendor, material)
    assert (decided.mapping_rule, decided.naics_code) == ("override", OVERRIDE)
    assert "checked by buyer" in decided.rule_detail

    decided = mapper.map_line(line.model_copy(update={"vendor_id": "V9"}), vendor, material)
    assert (decided.mapping_rule, decided.naics_code) == ("material", MATERIAL)

    decided = mapper.map_line(line.model_copy(update={"vendor_id": "V9"}), vendor, None)
    assert (decided.mapping_rule, decided.naics_code) == ("gl_account", GL_ACCOUNT)

    no_account = line.model_copy(update={"vendor_id": "V9", "gl_account": "7000"})
    decided = mapper.map_line(no_account, vendor, None)
    assert (decided.mapping_rule, decided.naics_code) == ("vendor_industry", INDUSTRY)

    decided = mapper.map_line(no_account, vendor.model_copy(update={"industry_code": None}), None)
    assert (decided.mapping_rule, decided.naics_code) == ("keyword", KEYWORD)
    assert "vendor name 'Airways'" in decided.rule_detail

    anonymous = vendor.model_copy(update={"industry_code": None, "name": "Unknown Ltd"})
    decided = mapper.map_line(no_account, anonymous, None)
    assert (decided.mapping_rule, decided.naics_code, decided.factor) == ("unmapped", None, None)


def test_decision_carries_the_published_factor():
    decided = _mapper().map_line(_line(), _vendor(), MATERIAL_RECORD)
    assert decided.factor == default_factor_set().lookup(OVERRIDE)


def test_a_rule_naming_a_code_without_factor_does_not_decide():
    rules = RULES.model_copy(
        update={
            "overrides": [],
            "material_rules": [MaterialRule(commodity_code="4321*", naics="221122")],
        }
    )
    decided = _mapper(rules).map_line(_line(), _vendor(), MATERIAL_RECORD)

    assert (decided.mapping_rule, decided.naics_code) == ("gl_account", GL_ACCOUNT)
    assert "221122 has no factor" in decided.rule_detail


def test_override_can_be_scoped_to_one_connection():
    rules = RULES.model_copy(
        update={"overrides": [VendorOverride(vendor_id="V1", naics=OVERRIDE, connection="other")]}
    )
    decided = _mapper(rules).map_line(_line(), _vendor(), MATERIAL_RECORD)
    assert decided.mapping_rule == "material"


def test_vendor_industry_code_of_a_newer_vintage_goes_through_the_concordance():
    mapper = _mapper(MappingRules())
    vendor = _vendor(industry_code="NAICS 513210", name="Somebody")

    decided = mapper.map_line(_line(gl_account=None), vendor, None)

    assert (decided.mapping_rule, decided.naics_code) == ("vendor_industry", "511210")
    assert "2022 513210 -> 2017 511210" in decided.rule_detail


def test_industry_codes_that_are_not_six_digit_naics_fall_through():
    decided = _mapper(MappingRules()).map_line(
        _line(gl_account=None), _vendor(industry_code="7371", name="X"), None
    )
    assert decided.mapping_rule == "unmapped"
    assert "not a six-digit NAICS code" in decided.rule_detail


def test_description_keywords_are_tried_before_the_vendor_name():
    rules = MappingRules(
        keyword_rules=[
            KeywordRule(pattern=r"\bairways\b", naics=KEYWORD),
            KeywordRule(pattern=r"\bhotel\b", naics="721110"),
        ]
    )
    decided = _mapper(rules).map_line(
        _line(gl_account=None, description="Hotel, 2 nights"),
        _vendor(industry_code=None),
        None,
    )
    assert (decided.mapping_rule, decided.naics_code) == ("keyword", "721110")


def test_numeric_account_ranges_compare_as_numbers():
    mapper = _mapper(
        MappingRules(gl_account_rules=[GlAccountRule(accounts="6100-6199", naics=GL_ACCOUNT)])
    )
    inside = mapper.map_line(_line(gl_account="6150"), None, None)
    outside = mapper.map_line(_line(gl_account="61500"), None, None)
    assert inside.mapping_rule == "gl_account"
    assert outside.mapping_rule == "unmapped"


def test_vendor_mapping_uses_vendor_evidence_only():
    mapper = _mapper()
    assert mapper.map_vendor("acme", "V1", _vendor()).mapping_rule == "override"
    assert mapper.map_vendor("acme", "V2", _vendor(vendor_id="V2")).mapping_rule == (
        "vendor_industry"
    )
    missing = mapper.map_vendor("acme", "V3", None)
    assert missing.mapping_rule == "unmapped"
    assert "not in the vendor master" in missing.rule_detail


def test_material_match_gives_the_activity_factor_and_rule():
    match = _mapper().material_match(MATERIAL_RECORD)
    assert match.mapping_rule == "commodity_code"
    assert match.activity_factor.material_group == "it_equipment"

    by_group_name = _mapper(MappingRules()).material_match(
        MATERIAL_RECORD.model_copy(update={"commodity_code": None, "material_group": "Glass"})
    )
    assert by_group_name.activity_factor.material_group == "glass"

    unknown = _mapper(MappingRules()).material_match(
        MATERIAL_RECORD.model_copy(update={"commodity_code": "99", "material_group": "Z1"})
    )
    assert (unknown.mapping_rule, unknown.activity_factor) == ("unmapped", None)


def test_shipped_rules_only_name_codes_and_groups_that_exist():
    rules = MappingRules.default(include_environment=False)
    assert rules.keyword_rules and rules.material_rules
    assert rules.problems(default_factor_set(), ActivityFactorTable.default()) == []


def test_user_files_from_the_environment_come_before_the_shipped_rules(tmp_path, monkeypatch):
    overrides = tmp_path / "overrides.csv"
    overrides.write_text("vendor_id,naics_code,connection,note\nV1,541611,,from file\n")
    extra = tmp_path / "rules.yaml"
    extra.write_text('keyword_rules:\n  - pattern: "blue"\n    naics: "541330"\n')
    monkeypatch.setenv(VENDOR_OVERRIDES_ENV, str(overrides))
    monkeypatch.setenv(MAPPING_RULES_ENV, str(extra))

    rules = MappingRules.default()
    mapper = _mapper(rules)

    assert mapper.map_line(_line(), _vendor(), None).rule_detail.startswith(
        "override for vendor V1 (from file)"
    )
    keyword = mapper.map_line(
        _line(vendor_id="V7", gl_account=None, description=None),
        _vendor(vendor_id="V7", industry_code=None, name="Blue Airways"),
        None,
    )
    assert keyword.naics_code == "541330"  # the user's rule wins over the shipped airline rule
    assert str(extra) in rules.sources


def test_bad_rules_fail_when_loaded(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text('gl_account_rules:\n  - accounts: "6000-"\n    naics: "541511"\n')
    with pytest.raises(ValueError, match="account range"):
        MappingRules.from_yaml(broken)
    with pytest.raises(ValueError):
        MaterialRule(commodity_code="1", material_group="2", naics="541511")
