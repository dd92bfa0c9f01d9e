"""Scope 3 category (GHG Protocol 1-15) of every spend line, by readable rules in a YAML file.

The shipped rules (methodology/rules/scope3_categories.yaml) put capital goods (is_capex or
fixed-asset GL accounts) in 2, freight and logistics in 4, fuel and energy in 3, waste in 5,
travel and lodging in 6, rent and leases in 8, and the rest of purchased goods and services
in 1. Lines that are not purchases at all (intercompany charges, taxes, payroll, interest,
depreciation) are excluded: they keep an `excluded_reason` and get no category.

A user file named by the environment variable ERP_CONNECTOR_CATEGORY_RULES replaces the
shipped file as a whole (same format), because the order of the rules is part of their meaning.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from erp_connector_dagster.methodology.criteria import AccountRange, compile_pattern
from erp_connector_dagster.records import SpendRecord, Vendor

RULES_DIR = Path(__file__).parent / "rules"
DEFAULT_CATEGORY_RULES_FILE = RULES_DIR / "scope3_categories.yaml"
CATEGORY_RULES_ENV = "ERP_CONNECTOR_CATEGORY_RULES"

CATEGORY_NAMES = {
    1: "Purchased goods and services",
    2: "Capital goods",
    3: "Fuel- and energy-related activities",
    4: "Upstream transportation and distribution",
    5: "Waste generated in operations",
    6: "Business travel",
    7: "Employee commuting",
    8: "Upstream leased assets",
    9: "Downstream transportation and distribution",
    10: "Processing of sold products",
    11: "Use of sold products",
    12: "End-of-life treatment of sold products",
    13: "Downstream leased assets",
    14: "Franchises",
    15: "Investments",
}


class LineCriteria(BaseModel):
    """Conditions on a line; a rule matches when any one of them holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    is_capex: bool | None = None
    gl_accounts: list[str] = Field(default_factory=list)
    naics_prefixes: list[str] = Field(default_factory=list)
    activity_groups: list[str] = Field(default_factory=list)
    description_patterns: list[str] = Field(default_factory=list)
    vendor_name_patterns: list[str] = Field(default_factory=list)

    def compiled(self) -> CompiledCriteria:
        return CompiledCriteria(self)


class CompiledCriteria:
    """Criteria with their ranges and expressions parsed once."""

    def __init__(self, criteria: LineCriteria) -> None:
        self.criteria = criteria
        self.account_ranges = [AccountRange.parse(text) for text in criteria.gl_accounts]
        self.description_expressions = [compile_pattern(p) for p in criteria.description_patterns]
        self.vendor_expressions = [compile_pattern(p) for p in criteria.vendor_name_patterns]
        self.activity_groups = {group.lower() for group in criteria.activity_groups}

    def first_match(
        self,
        spend_record: SpendRecord,
        vendor: Vendor | None,
        naics_code: str | None,
        activity_group: str | None,
    ) -> str | None:
        """A short description of the first criterion that holds, or None."""
        criteria = self.criteria
        if criteria.is_capex is not None and spend_record.is_capex == criteria.is_capex:
            return f"is_capex={spend_record.is_capex}"
        for account_range in self.account_ranges:
            if account_range.contains(spend_record.gl_account):
                return f"GL account {spend_record.gl_account} in {account_range}"
        if naics_code:
            for prefix in criteria.naics_prefixes:
                if naics_code.startswith(prefix):
                    return f"NAICS {naics_code} starts with {prefix}"
        if activity_group and activity_group.lower() in self.activity_groups:
            return f"activity group {activity_group}"
        found = _search(self.description_expressions, spend_record.description)
        if found:
            return f"description {found!r}"
        found = _search(self.vendor_expressions, vendor.name if vendor else None)
        if found:
            return f"vendor name {found!r}"
        return None


def _search(expressions: list[re.Pattern[str]], text: str | None) -> str | None:
    if not text:
        return None
    for expression in expressions:
        found = expression.search(text)
        if found:
            return found.group(0)
    return None


class ExclusionRule(LineCriteria):
    reason: str


class CategoryRule(LineCriteria):
    category: int

    @field_validator("category")
    @classmethod
    def _ghg_protocol_category(cls, value: int) -> int:
        if not 1 <= value <= 15:
            raise ValueError("Scope 3 categories are 1 to 15")
        return value


class CategoryDecision(BaseModel):
    """A line's category, or the reason it is excluded, and the rule that decided."""

    model_config = ConfigDict(frozen=True)

    scope3_category: int | None
    excluded_reason: str | None
    rule: str


class CategoryRules(BaseModel):
    """Exclusions, category rules in order, and the default category."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exclusions: list[ExclusionRule] = Field(default_factory=list)
    categories: list[CategoryRule] = Field(default_factory=list)
    default_category: int = 1
    source: str = ""

    @classmethod
    def from_yaml(cls, path: Path | str) -> CategoryRules:
        path = Path(path)
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return cls.model_validate({**document, "source": str(path)})

    @classmethod
    def default(cls, include_environment: bool = True) -> CategoryRules:
        configured = os.environ.get(CATEGORY_RULES_ENV) if include_environment else None
        return cls.from_yaml(configured or DEFAULT_CATEGORY_RULES_FILE)

    def classifier(self) -> CategoryClassifier:
        return CategoryClassifier(self)


class CategoryClassifier:
    """Applies category rules to lines; rules are compiled once."""

    def __init__(self, rules: CategoryRules) -> None:
        self.rules = rules
        self._exclusions = [(rule, rule.compiled()) for rule in rules.exclusions]
        self._categories = [(rule, rule.compiled()) for rule in rules.categories]

    def classify(
        self,
        spend_record: SpendRecord,
        vendor: Vendor | None,
        naics_code: str | None,
        activity_group: str | None,
    ) -> CategoryDecision:
        """Exclusion first, then the first category rule that matches, else the default."""
        for rule, criteria in self._exclusions:
            found = criteria.first_match(spend_record, vendor, naics_code, activity_group)
            if found:
                return CategoryDecision(
                    scope3_category=None,
                    excluded_reason=rule.reason,
                    rule=f"excluded as {rule.reason}: {found}",
                )
        for rule, criteria in self._categories:
            found = criteria.first_match(spend_record, vendor, naics_code, activity_group)
            if found:
                return CategoryDecision(
                    scope3_category=rule.category,
                    excluded_reason=None,
                    rule=f"category {rule.category}: {found}",
                )
        return CategoryDecision(
            scope3_category=self.rules.default_category,
            excluded_reason=None,
            rule=f"category {self.rules.default_category}: default",
        )
