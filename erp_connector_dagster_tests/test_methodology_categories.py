"""Scope 3 category rules and exclusions."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from erp_connector_dagster.methodology.categories import CATEGORY_RULES_ENV, CategoryRules
from erp_connector_dagster.records import SpendDocumentType, SpendRecord, Vendor


def _line(**changes) -> SpendRecord:
    fields = dict(
        connection="acme",
        source_id="S1",
        document_id="INV-1",
        line_number=1,
        document_type=SpendDocumentType.INVOICE,
        transaction_date=dt.date(2023, 5, 2),
        vendor_id="V1",
        amount=Decimal("100"),
        currency="USD",
    )
    fields.update(changes)
    return SpendRecord(**fields)


VENDOR = Vendor(connection="acme", source_id="V1", vendor_id="V1", name="Supplier Ltd")


@pytest.fixture(scope="module")
def classifier():
    return CategoryRules.default(include_environment=False).classifier()


@pytest.mark.parametrize(
    ("line", "naics", "activity_group", "category"),
    [
        (_line(is_capex=True), "333249", None, 2),
        (_line(), "484121", None, 4),
        (_line(description="Freight incl. fuel surcharge"), None, None, 4),
        (_line(), None, "road_freight", 4),
        (_line(), "324110", None, 3),
        (_line(), None, "electricity", 3),
        (_line(description="Electricity May"), None, None, 3),
        (_line(), "562111", None, 5),
        (_line(description="waste collection"), None, None, 5),
        (_line(), "481111", None, 6),
        (_line(), "721110", None, 6),
        (_line(description="Taxi to airport"), None, None, 6),
        (_line(), None, "hotel_stay", 6),
        (_line(), "531120", None, 8),
        (_line(description="Office rent June"), None, None, 8),
        (_line(), "541511", None, 1),
        (_line(), None, None, 1),
    ],
)
def test_category_rules(classifier, line, naics, activity_group, category):
    decision = classifier.classify(line, VENDOR, naics, activity_group)
    assert decision.scope3_category == category, decision.rule
    assert decision.excluded_reason is None


@pytest.mark.parametrize(
    ("line", "vendor_name", "reason"),
    [
        (_line(description="Intercompany recharge Q2"), "Supplier Ltd", "intercompany"),
        (_line(description="VAT 20%"), "Supplier Ltd", "tax"),
        (_line(description="payment"), "HMRC", "tax"),
        (_line(description="Payroll June"), "Supplier Ltd", "payroll"),
        (_line(description="Loan interest Q2"), "Supplier Ltd", "interest"),
        (_line(description="Depreciation of vehicles"), "Supplier Ltd", "depreciation"),
    ],
)
def test_exclusions_keep_the_reason_and_give_no_category(classifier, line, vendor_name, reason):
    vendor = VENDOR.model_copy(update={"name": vendor_name})
    decision = classifier.classify(line, vendor, "541511", None)
    assert (decision.scope3_category, decision.excluded_reason) == (None, reason)


def test_exclusions_come_before_categories(classifier):
    decision = classifier.classify(
        _line(description="VAT on freight", is_capex=True), VENDOR, "484121", None
    )
    assert decision.excluded_reason == "tax"


def test_a_user_file_replaces_the_shipped_rules(tmp_path, monkeypatch):
    rules_file = tmp_path / "categories.yaml"
    rules_file.write_text(
        "exclusions:\n"
        "  - reason: intercompany\n"
        "    vendor_name_patterns: ['^ACME ']\n"
        "categories:\n"
        "  - category: 2\n"
        "    gl_accounts: ['0200-0499']\n"
        "  - category: 4\n"
        "    naics_prefixes: ['484']\n"
        "default_category: 1\n"
    )
    monkeypatch.setenv(CATEGORY_RULES_ENV, str(rules_file))
    classifier = CategoryRules.default().classifier()

    assert classifier.classify(_line(gl_account="0300"), VENDOR, None, None).scope3_category == 2
    assert classifier.classify(_line(gl_account="0500"), VENDOR, None, None).scope3_category == 1
    own_company = VENDOR.model_copy(update={"name": "ACME GmbH"})
    assert classifier.classify(_line(), own_company, None, None).excluded_reason == "intercompany"
    # The shipped description rules are gone with the shipped file.
    assert classifier.classify(_line(description="VAT"), VENDOR, None, None).scope3_category == 1


def test_category_numbers_outside_1_to_15_are_refused(tmp_path):
    rules_file = tmp_path / "bad.yaml"
    rules_file.write_text("categories:\n  - category: 16\n    naics_prefixes: ['1']\n")
    with pytest.raises(ValueError, match="1 to 15"):
        CategoryRules.from_yaml(rules_file)
