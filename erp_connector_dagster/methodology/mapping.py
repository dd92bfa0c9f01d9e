"""Map spend to a spend category (a NAICS-2017 commodity with an EEIO factor) and materials to
an activity-factor group, by explicit precedence, recording the rule that decided.

Precedence for one spend line; the first level that yields a code present in the factor set
(directly or through the NAICS vintage concordance) decides:

1. "override": a person's vendor id -> NAICS assignment;
2. "material": the line material's commodity code, then its material group, through the
   material rules (a six-digit commodity code that is itself a NAICS code is used as such);
3. "gl_account": the line's GL account inside a rule's account range;
4. "vendor_industry": the industry code the ERP holds for the vendor (NAICS of any vintage);
5. "keyword": rule expressions on the line description, then on the vendor name;
otherwise "unmapped". Unmapped spend gets no default category: it stays visible and counted.
A level whose rule names a code without a factor does not decide; the detail says so.

`VendorMapping` (one per vendor and day) records the vendor's own category from the evidence
about the vendor alone (override, industry code, name keywords); each emission line carries
its own `mapping_rule`, which may come from the line's material or account instead.

Rules are data. The shipped defaults are in methodology/rules/mapping_rules.yaml and
vendor_overrides.csv. User files are named by environment variables:

- ERP_CONNECTOR_MAPPING_RULES: one or more YAML files (separated by the OS path separator, ":"
  on Linux) in the same format as mapping_rules.yaml; their rules are tried before the shipped
  ones within each level.
- ERP_CONNECTOR_VENDOR_OVERRIDES: a CSV file with the columns vendor_id,naics_code and optional
  connection,note; these overrides are tried before the YAML ones.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from erp_connector_dagster.methodology.criteria import AccountRange, code_matches, compile_pattern
from erp_connector_dagster.records import Material, SpendRecord, Vendor
from erp_connector_dagster.reference.activity_factors import ActivityFactor, ActivityFactorTable
from erp_connector_dagster.reference.factors import EmissionFactor, FactorSet
from erp_connector_dagster.reference.naics import NaicsConcordance

RULES_DIR = Path(__file__).parent / "rules"
DEFAULT_MAPPING_RULES_FILE = RULES_DIR / "mapping_rules.yaml"
DEFAULT_VENDOR_OVERRIDES_FILE = RULES_DIR / "vendor_overrides.csv"
MAPPING_RULES_ENV = "ERP_CONNECTOR_MAPPING_RULES"
VENDOR_OVERRIDES_ENV = "ERP_CONNECTOR_VENDOR_OVERRIDES"

MAPPING_RULES = ("override", "material", "gl_account", "vendor_industry", "keyword", "unmapped")


class VendorOverride(BaseModel):
    """A person's decision: this vendor's spend belongs to this NAICS commodity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vendor_id: str
    naics: str
    connection: str | None = None
    note: str | None = None


class MaterialRule(BaseModel):
    """Material commodity code or material group pattern -> NAICS and/or activity group."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commodity_code: str | None = None
    material_group: str | None = None
    naics: str | None = None
    activity_group: str | None = None

    @model_validator(mode="after")
    def _one_matcher_one_outcome(self) -> MaterialRule:
        if (self.commodity_code is None) == (self.material_group is None):
            raise ValueError("a material rule names exactly one of commodity_code, material_group")
        if self.naics is None and self.activity_group is None:
            raise ValueError("a material rule gives a naics code, an activity_group or both")
        return self

    @property
    def field(self) -> str:
        return "commodity_code" if self.commodity_code is not None else "material_group"

    @property
    def pattern(self) -> str:
        return self.commodity_code if self.commodity_code is not None else self.material_group


class GlAccountRule(BaseModel):
    """GL account range -> NAICS."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accounts: str
    naics: str

    @property
    def account_range(self) -> AccountRange:
        return AccountRange.parse(self.accounts)


class KeywordRule(BaseModel):
    """Regular expression on descriptions and vendor names -> NAICS."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str
    naics: str

    @property
    def expression(self) -> re.Pattern[str]:
        return compile_pattern(self.pattern)


class MappingRules(BaseModel):
    """All mapping rules, in the order they are tried within each level."""

    model_config = ConfigDict(frozen=True)

    overrides: list[VendorOverride] = Field(default_factory=list)
    material_rules: list[MaterialRule] = Field(default_factory=list)
    gl_account_rules: list[GlAccountRule] = Field(default_factory=list)
    keyword_rules: list[KeywordRule] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)

    @classmethod
    def from_yaml(cls, path: Path | str) -> MappingRules:
        path = Path(path)
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        unknown = set(document) - {
            "overrides",
            "material_rules",
            "gl_account_rules",
            "keyword_rules",
        }
        if unknown:
            raise ValueError(f"{path}: unknown sections {sorted(unknown)}")
        rules = cls.model_validate({**document, "sources": [str(path)]})
        for rule in rules.gl_account_rules:
            rule.account_range  # noqa: B018 - parse now so a bad range fails at load time
        for rule in rules.keyword_rules:
            rule.expression  # noqa: B018
        return rules

    @classmethod
    def overrides_from_csv(cls, path: Path | str) -> MappingRules:
        path = Path(path)
        overrides = []
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = {"vendor_id", "naics_code"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: lacks columns {sorted(missing)}")
            for row in reader:
                if not (row.get("vendor_id") or "").strip():
                    continue
                overrides.append(
                    VendorOverride(
                        vendor_id=row["vendor_id"].strip(),
                        naics=row["naics_code"].strip(),
                        connection=(row.get("connection") or "").strip() or None,
                        note=(row.get("note") or "").strip() or None,
                    )
                )
        return cls(overrides=overrides, sources=[str(path)])

    @classmethod
    def default(cls, include_environment: bool = True) -> MappingRules:
        """Shipped rules, with the user files named in the environment layered in front."""
        layers: list[MappingRules] = []
        if include_environment:
            overrides_file = os.environ.get(VENDOR_OVERRIDES_ENV)
            if overrides_file:
                layers.append(cls.overrides_from_csv(overrides_file))
            for rules_file in (os.environ.get(MAPPING_RULES_ENV) or "").split(os.pathsep):
                if rules_file.strip():
                    layers.append(cls.from_yaml(rules_file.strip()))
        layers.append(cls.overrides_from_csv(DEFAULT_VENDOR_OVERRIDES_FILE))
        layers.append(cls.from_yaml(DEFAULT_MAPPING_RULES_FILE))
        return cls.layered(*layers)

    @classmethod
    def layered(cls, *layers: MappingRules) -> MappingRules:
        """Rules of earlier layers come first within each level."""
        return cls(
            overrides=[rule for layer in layers for rule in layer.overrides],
            material_rules=[rule for layer in layers for rule in layer.material_rules],
            gl_account_rules=[rule for layer in layers for rule in layer.gl_account_rules],
            keyword_rules=[rule for layer in layers for rule in layer.keyword_rules],
            sources=[source for layer in layers for source in layer.sources],
        )

    def problems(
        self, factor_set: FactorSet, activity_factors: ActivityFactorTable | None = None
    ) -> list[str]:
        """Rules that can never decide: codes without a factor, unknown activity groups."""
        found = []
        coded = [
            *(("override", rule.naics) for rule in self.overrides),
            *(("material rule", rule.naics) for rule in self.material_rules if rule.naics),
            *(("gl_account rule", rule.naics) for rule in self.gl_account_rules),
            *(("keyword rule", rule.naics) for rule in self.keyword_rules),
        ]
        for kind, code in coded:
            if factor_set.resolve(code) is None:
                found.append(f"{kind} names NAICS {code}, which has no factor in {factor_set.name}")
        if activity_factors is not None:
            for rule in self.material_rules:
                if rule.activity_group and rule.activity_group not in activity_factors:
                    found.append(
                        f"material rule names unknown activity group {rule.activity_group}"
                    )
        return found


class SpendCategory(BaseModel):
    """The spend category a line (or vendor) was mapped to, and the rule that decided."""

    model_config = ConfigDict(frozen=True)

    naics_code: str | None
    mapping_rule: str
    rule_detail: str
    factor: EmissionFactor | None = None


class MaterialMatch(BaseModel):
    """What a material's rules say: a NAICS code and/or an activity-factor group."""

    model_config = ConfigDict(frozen=True)

    material_id: str
    naics: str | None
    activity_factor: ActivityFactor | None
    mapping_rule: str  # "commodity_code", "material_group" or "unmapped"
    rule_detail: str


class VendorMapping(BaseModel):
    """One row of table vendor_mappings."""

    model_config = ConfigDict(frozen=True)

    connection: str
    mapping_date: dt.date
    vendor_id: str
    naics_code: str | None
    mapping_rule: str
    rule_detail: str | None


class MaterialMapping(BaseModel):
    """One row of table material_mappings."""

    model_config = ConfigDict(frozen=True)

    connection: str
    mapping_date: dt.date
    material_id: str
    material_group: str | None
    activity_factor: Decimal | None
    factor_unit: str | None
    factor_source: str | None
    mapping_rule: str
    rule_detail: str | None


class SpendCategoryMapper:
    """Applies mapping rules against one factor set and one activity factor table."""

    def __init__(
        self,
        rules: MappingRules,
        factor_set: FactorSet,
        activity_factors: ActivityFactorTable,
        concordance: NaicsConcordance | None = None,
    ) -> None:
        self.rules = rules
        self.factor_set = factor_set
        self.activity_factors = activity_factors
        self.concordance = concordance or NaicsConcordance.default()
        self._keyword_expressions = [(rule, rule.expression) for rule in rules.keyword_rules]
        self._gl_ranges = [(rule, rule.account_range) for rule in rules.gl_account_rules]
        self._material_cache: dict[tuple[str, str], MaterialMatch] = {}
        self._vendor_cache: dict[tuple[str, str], SpendCategory] = {}

    # -- single levels ------------------------------------------------------------------

    def _resolved(self, code: str, rule: str, evidence: str) -> SpendCategory | str:
        """A decision if `code` has a factor, else a note saying why this level did not decide."""
        resolved = self.factor_set.resolve(code, self.concordance)
        if resolved is None:
            return f"{evidence} -> NAICS {code} has no factor in {self.factor_set.name}"
        detail = evidence
        if resolved.factor.code != code:
            detail = f"{evidence}; {resolved.detail}"
        return SpendCategory(
            naics_code=resolved.factor.code,
            mapping_rule=rule,
            rule_detail=detail,
            factor=resolved.factor,
        )

    def _override(self, connection: str, vendor_id: str | None) -> SpendCategory | str | None:
        if not vendor_id:
            return None
        for override in self.rules.overrides:
            if override.vendor_id == vendor_id and override.connection in (None, connection):
                note = f" ({override.note})" if override.note else ""
                return self._resolved(
                    override.naics, "override", f"override for vendor {vendor_id}{note}"
                )
        return None

    def material_match(self, material: Material) -> MaterialMatch:
        """The material rules' verdict on one material (cached per connection and material)."""
        key = (material.connection, material.material_id)
        cached = self._material_cache.get(key)
        if cached is not None:
            return cached
        match = self._match_material(material)
        self._material_cache[key] = match
        return match

    def _match_material(self, material: Material) -> MaterialMatch:
        for field in ("commodity_code", "material_group"):
            value = getattr(material, field)
            for rule in self.rules.material_rules:
                if rule.field == field and code_matches(rule.pattern, value):
                    factor = (
                        self.activity_factors.get(rule.activity_group)
                        if rule.activity_group
                        else None
                    )
                    return MaterialMatch(
                        material_id=material.material_id,
                        naics=rule.naics,
                        activity_factor=factor,
                        mapping_rule=field,
                        rule_detail=f"{field} {value} matches rule {rule.pattern!r}",
                    )
        # A group named exactly like an activity group needs no rule.
        group = (material.material_group or "").strip().lower()
        if group and group in self.activity_factors:
            return MaterialMatch(
                material_id=material.material_id,
                naics=None,
                activity_factor=self.activity_factors.get(group),
                mapping_rule="material_group",
                rule_detail=f"material_group {material.material_group} is an activity group",
            )
        return MaterialMatch(
            material_id=material.material_id,
            naics=None,
            activity_factor=None,
            mapping_rule="unmapped",
            rule_detail="no material rule matches its commodity code or material group",
        )

    def _material(self, material: Material | None) -> SpendCategory | str | None:
        if material is None:
            return None
        match = self.material_match(material)
        if match.naics:
            return self._resolved(
                match.naics, "material", f"material {material.material_id}: {match.rule_detail}"
            )
        code = (material.commodity_code or "").strip()
        if len(code) == 6 and code.isdigit():
            decision = self._resolved(
                code, "material", f"material {material.material_id}: commodity code is NAICS"
            )
            if isinstance(decision, SpendCategory):
                return decision
        if match.mapping_rule != "unmapped":
            return f"material {material.material_id}: {match.rule_detail} (no NAICS in rule)"
        return None

    def _gl_account(self, gl_account: str | None) -> SpendCategory | str | None:
        if not gl_account:
            return None
        for rule, account_range in self._gl_ranges:
            if account_range.contains(gl_account):
                return self._resolved(
                    rule.naics, "gl_account", f"GL account {gl_account} in {account_range}"
                )
        return None

    def _vendor_industry(self, vendor: Vendor | None) -> SpendCategory | str | None:
        if vendor is None or not vendor.industry_code:
            return None
        code = re.sub(r"\D", "", vendor.industry_code)
        evidence = f"vendor {vendor.vendor_id} industry code {vendor.industry_code}"
        if len(code) != 6:
            return f"{evidence} is not a six-digit NAICS code"
        return self._resolved(code, "vendor_industry", evidence)

    def _keyword(self, text: str | None, what: str) -> SpendCategory | str | None:
        if not text:
            return None
        for rule, expression in self._keyword_expressions:
            found = expression.search(text)
            if found:
                return self._resolved(
                    rule.naics, "keyword", f"{what} {found.group(0)!r} matches {rule.pattern!r}"
                )
        return None

    # -- decisions -----------------------------------------------------------------------

    def map_line(
        self,
        spend_record: SpendRecord,
        vendor: Vendor | None,
        material: Material | None,
    ) -> SpendCategory:
        """The spend category of one line, by the precedence in the module docstring."""
        connection = spend_record.connection
        levels = (
            lambda: self._override(connection, spend_record.vendor_id),
            lambda: self._material(material),
            lambda: self._gl_account(spend_record.gl_account),
            lambda: self._vendor_industry(vendor),
            lambda: self._keyword(spend_record.description, "description"),
            lambda: self._keyword(vendor.name if vendor else None, "vendor name"),
        )
        return _first_decision(levels)

    def map_vendor(self, connection: str, vendor_id: str, vendor: Vendor | None) -> SpendCategory:
        """The vendor's own category, from override, industry code and name (cached).

        `vendor` is the vendor master record, or None when the ERP sent none for this id.
        """
        key = (connection, vendor_id)
        cached = self._vendor_cache.get(key)
        if cached is not None:
            return cached
        levels = (
            lambda: self._override(connection, vendor_id),
            lambda: self._vendor_industry(vendor),
            lambda: self._keyword(vendor.name if vendor else None, "vendor name"),
            lambda: None if vendor else f"vendor {vendor_id} is not in the vendor master",
        )
        decision = _first_decision(levels)
        self._vendor_cache[key] = decision
        return decision


def _first_decision(levels: Any) -> SpendCategory:
    notes: list[str] = []
    for level in levels:
        outcome = level()
        if isinstance(outcome, SpendCategory):
            if notes:
                detail = f"{outcome.rule_detail} (not decided before: {'; '.join(notes)})"
                return outcome.model_copy(update={"rule_detail": detail})
            return outcome
        if isinstance(outcome, str):
            notes.append(outcome)
    detail = "; ".join(notes) if notes else "no rule matched"
    return SpendCategory(naics_code=None, mapping_rule="unmapped", rule_detail=detail)
