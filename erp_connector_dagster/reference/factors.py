"""Versioned EEIO emission factor sets, their storage in PostgreSQL, and restatements.

The default set is EPA's "Supply Chain GHG Emission Factors v1.3 by NAICS-6" (see
data/EPA_PROVENANCE.md): one factor per NAICS-2017 commodity, in kg CO2e per 2022 US dollar at
purchaser price, taken from the "Supply Chain Emission Factors with Margins" column exactly as
published (Decimal("0.084"), never a float).

A factor set is identified by (name, version). New versions in the same CSV format load with
`load_factor_set`; `store_factor_set` writes a set into the tables of migration 0002 so that
`restate` can recalculate stored results with it. A restatement adds rows with the new version
to `emission_calculations` and marks the old rows not current; the old rows stay queryable.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Decimal, localcontext
from functools import lru_cache
from pathlib import Path
from typing import Any

from psycopg2.extras import execute_values
from pydantic import BaseModel, ConfigDict

from erp_connector_dagster.reference.naics import NaicsConcordance
from erp_connector_dagster.reference.price_index import PriceIndex, PriceIndexError

logger = logging.getLogger("erp_connector_dagster.reference")

SCHEMA = "erp_connector_service"
DATA_DIR = Path(__file__).parent / "data"
DEFAULT_FACTOR_FILE = DATA_DIR / "SupplyChainGHGEmissionFactors_v1.3.0_NAICS_CO2e_USD2022.csv"
DEFAULT_FACTOR_SET = "EPA_SUPPLY_CHAIN_GHG"
DEFAULT_FACTOR_VERSION = "1.3.0"
DEFAULT_DOLLAR_YEAR = 2022
DEFAULT_FACTOR_UNIT = "kg CO2e/2022 USD, purchaser price"

CODE_COLUMN = "2017 NAICS Code"
TITLE_COLUMN = "2017 NAICS Title"
UNIT_COLUMN = "Unit"
VALUE_COLUMN = "Supply Chain Emission Factors with Margins"
USEEIO_COLUMN = "Reference USEEIO Code"

KGCO2E_PLACES = Decimal("1e-6")


class FactorSetError(ValueError):
    """A factor file or stored set is malformed, or a stored version differs from a new one."""


class EmissionFactor(BaseModel):
    """One published EEIO factor: kg CO2e per dollar of `dollar_year` spent on `code`."""

    model_config = ConfigDict(frozen=True)

    factor_set: str
    factor_version: str
    code: str
    title: str
    value: Decimal
    unit: str
    useeio_code: str
    dollar_year: int


class ResolvedFactor(BaseModel):
    """A factor found for a code, and how (direct, or through the NAICS concordance)."""

    model_config = ConfigDict(frozen=True)

    requested_code: str
    factor: EmissionFactor
    detail: str


class FactorSet:
    """All factors of one (name, version), keyed by NAICS-2017 code."""

    def __init__(
        self,
        name: str,
        version: str,
        dollar_year: int,
        factors: dict[str, EmissionFactor],
        source: str = "",
        naics_vintage: int = 2017,
    ) -> None:
        if not factors:
            raise FactorSetError(f"factor set {name} {version} has no factors")
        self.name = name
        self.version = version
        self.dollar_year = dollar_year
        self.source = source
        self.naics_vintage = naics_vintage
        self._factors = factors
        units = {factor.unit for factor in factors.values()}
        if len(units) != 1:
            raise FactorSetError(f"factor set {name} {version} mixes units: {sorted(units)}")
        self.unit = units.pop()

    def __len__(self) -> int:
        return len(self._factors)

    def __contains__(self, code: object) -> bool:
        return code in self._factors

    def codes(self) -> list[str]:
        return sorted(self._factors)

    def factors(self) -> list[EmissionFactor]:
        return [self._factors[code] for code in sorted(self._factors)]

    def lookup(self, naics_code: str) -> EmissionFactor | None:
        """The factor published for exactly this code, or None."""
        return self._factors.get(naics_code.strip())

    def resolve(
        self, naics_code: str, concordance: NaicsConcordance | None = None
    ) -> ResolvedFactor | None:
        """The factor for a code of any NAICS vintage, or None.

        A code of another vintage goes through the concordance. When it corresponds to several
        codes of this set, the one with the highest factor is taken (the conservative choice:
        emissions are not understated) and the detail names every candidate.
        """
        code = naics_code.strip()
        direct = self._factors.get(code)
        if direct is not None:
            return ResolvedFactor(
                requested_code=code,
                factor=direct,
                detail=f"NAICS {code} is in {self.name} {self.version}",
            )

        match = (concordance or NaicsConcordance.default()).to_naics_2017(code)
        if match is None:
            return None
        candidates = [self._factors[c] for c in match.naics_2017 if c in self._factors]
        if not candidates:
            return None
        chosen = max(candidates, key=lambda factor: (factor.value, factor.code))
        if len(candidates) == 1:
            detail = f"NAICS {match.vintage} {code} -> 2017 {chosen.code} via concordance"
        else:
            listed = ", ".join(f"{c.code}={c.value}" for c in candidates)
            detail = (
                f"NAICS {match.vintage} {code} -> 2017 {{{listed}}} via concordance; "
                f"took {chosen.code}, the highest factor (conservative)"
            )
        return ResolvedFactor(requested_code=code, factor=chosen, detail=detail)


def load_factor_set(
    path: Path | str,
    name: str,
    version: str,
    dollar_year: int,
    naics_vintage: int = 2017,
) -> FactorSet:
    """Read a factor CSV in EPA's supply-chain factor format (the v1.3 column names)."""
    path = Path(path)
    required = {CODE_COLUMN, TITLE_COLUMN, UNIT_COLUMN, VALUE_COLUMN, USEEIO_COLUMN}
    factors: dict[str, EmissionFactor] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise FactorSetError(f"{path.name} lacks columns: {', '.join(sorted(missing))}")
        for line_number, row in enumerate(reader, start=2):
            code = row[CODE_COLUMN].strip()
            if code in factors:
                raise FactorSetError(f"{path.name} line {line_number}: duplicate code {code}")
            try:
                value = Decimal(row[VALUE_COLUMN].strip())
            except ArithmeticError as error:
                raise FactorSetError(
                    f"{path.name} line {line_number}: factor {row[VALUE_COLUMN]!r} is no number"
                ) from error
            factors[code] = EmissionFactor(
                factor_set=name,
                factor_version=version,
                code=code,
                title=row[TITLE_COLUMN].strip(),
                value=value,
                unit=row[UNIT_COLUMN].strip(),
                useeio_code=row[USEEIO_COLUMN].strip(),
                dollar_year=dollar_year,
            )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    logger.info("loaded factor set %s %s: %d factors from %s", name, version, len(factors), path)
    return FactorSet(
        name,
        version,
        dollar_year,
        factors,
        source=f"{path.name} sha256:{digest}",
        naics_vintage=naics_vintage,
    )


def default_factor_set() -> FactorSet:
    """EPA Supply Chain GHG Emission Factors v1.3.0, 2022 USD, purchaser price (shipped)."""
    return _default_factor_set()


@lru_cache(maxsize=1)
def _default_factor_set() -> FactorSet:
    return load_factor_set(
        DEFAULT_FACTOR_FILE, DEFAULT_FACTOR_SET, DEFAULT_FACTOR_VERSION, DEFAULT_DOLLAR_YEAR
    )


# --- storage ------------------------------------------------------------------------------


def store_factor_set(conn: Any, factor_set: FactorSet) -> bool:
    """Write a factor set into PostgreSQL and commit; False if that version was already stored.

    A stored version is immutable: storing different values under an existing (name, version)
    raises `FactorSetError` instead of overwriting what earlier results were calculated with.
    """
    with conn.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {SCHEMA}.emission_factors "
            "WHERE factor_set = %s AND factor_version = %s",
            (factor_set.name, factor_set.version),
        )
        (stored_count,) = cursor.fetchone()
        if stored_count:
            stored = load_stored_factor_set(conn, factor_set.name, factor_set.version)
            differing = [
                factor.code
                for factor in factor_set.factors()
                if factor.code not in stored or stored.lookup(factor.code).value != factor.value
            ]
            if differing or len(stored) != len(factor_set):
                raise FactorSetError(
                    f"{factor_set.name} {factor_set.version} is already stored with other "
                    f"values ({len(differing)} codes differ); store it under a new version"
                )
            return False

        cursor.execute(
            f"INSERT INTO {SCHEMA}.factor_sets "
            "(factor_set, factor_version, dollar_year, unit, naics_vintage, source, factor_count)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                factor_set.name,
                factor_set.version,
                factor_set.dollar_year,
                factor_set.unit,
                factor_set.naics_vintage,
                factor_set.source,
                len(factor_set),
            ),
        )
        execute_values(
            cursor,
            f"INSERT INTO {SCHEMA}.emission_factors "
            "(factor_set, factor_version, code, title, value, unit, useeio_code) VALUES %s",
            [
                (
                    factor.factor_set,
                    factor.factor_version,
                    factor.code,
                    factor.title,
                    factor.value,
                    factor.unit,
                    factor.useeio_code,
                )
                for factor in factor_set.factors()
            ],
            page_size=1000,
        )
    conn.commit()
    logger.info("stored factor set %s %s", factor_set.name, factor_set.version)
    return True


def load_stored_factor_set(conn: Any, name: str, version: str) -> FactorSet:
    """Read one stored (name, version) back from PostgreSQL."""
    with conn.cursor() as cursor:
        cursor.execute(
            f"SELECT dollar_year, naics_vintage, source FROM {SCHEMA}.factor_sets "
            "WHERE factor_set = %s AND factor_version = %s",
            (name, version),
        )
        header = cursor.fetchone()
        if header is None:
            raise FactorSetError(f"factor set {name} {version} is not stored")
        dollar_year, naics_vintage, source = header
        cursor.execute(
            f"SELECT code, title, value, unit, useeio_code FROM {SCHEMA}.emission_factors "
            "WHERE factor_set = %s AND factor_version = %s",
            (name, version),
        )
        factors = {
            code: EmissionFactor(
                factor_set=name,
                factor_version=version,
                code=code,
                title=title,
                # numeric(20, 8) pads with zeros; normalize back to the published digits.
                value=_published(value),
                unit=unit,
                useeio_code=useeio_code,
                dollar_year=dollar_year,
            )
            for code, title, value, unit, useeio_code in cursor.fetchall()
        }
    return FactorSet(name, version, dollar_year, factors, source, naics_vintage)


def stored_factor_versions(conn: Any, name: str) -> list[str]:
    with conn.cursor() as cursor:
        cursor.execute(
            f"SELECT factor_version FROM {SCHEMA}.factor_sets WHERE factor_set = %s "
            "ORDER BY loaded_at, factor_version",
            (name,),
        )
        return [version for (version,) in cursor.fetchall()]


def _published(value: Decimal) -> Decimal:
    normalized = value.normalize()
    # normalize() writes 100 as 1E+2; keep integers in plain notation.
    return normalized.quantize(Decimal(1)) if normalized.as_tuple().exponent > 0 else normalized


# --- restatement --------------------------------------------------------------------------

# The calculation columns of emission_calculations (migration 0001) that a restatement copies
# or recomputes; bookkeeping columns (hash, chain, sync, timestamps, is_current) are set apart.
CALCULATION_COLUMNS = (
    "connection",
    "transaction_date",
    "record_key",
    "vendor_id",
    "material_id",
    "scope3_category",
    "excluded_reason",
    "method",
    "amount",
    "currency",
    "fx_rate",
    "fx_rate_date",
    "fx_provider",
    "amount_usd",
    "price_index_ratio",
    "price_index_rule",
    "factor_set",
    "factor_version",
    "factor_code",
    "factor_value",
    "factor_unit",
    "quantity",
    "unit",
    "kgco2e",
    "data_quality_score",
    "mapping_rule",
)

ROW_COLUMNS = (*CALCULATION_COLUMNS, "spend_record_hash")

RecordHasher = Callable[[Mapping[str, Any]], str]


class RestatementResult(BaseModel):
    """What a restatement changed, for the audit trail and the run's metadata."""

    factor_set: str
    new_version: str
    previous_versions: list[str]
    since: dt.date | None
    until: dt.date | None
    rows_restated: int
    rows_without_factor: int
    codes_without_factor: list[str]
    rows_without_price_index: int
    kgco2e_before: Decimal
    kgco2e_after: Decimal


def calculation_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 of a calculation row's columns: sorted keys, decimals and dates as strings.

    The default `record_hash` of restated rows; pass the provenance module's hasher to
    `restate` to hash them the way the rest of the chain is hashed.
    """
    canonical = {column: _canonical_value(row.get(column)) for column in CALCULATION_COLUMNS}
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _canonical_value(value: Any) -> Any:
    # Decimals in plain notation without trailing zeros, so a value hashes the same before and
    # after a numeric(p, s) column pads it.
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def restate(
    conn: Any,
    factor_set: str | FactorSet,
    new_version: str,
    since: dt.date | None = None,
    until: dt.date | None = None,
    *,
    price_index: PriceIndex | None = None,
    record_hasher: RecordHasher = calculation_hash,
    batch_size: int = 5000,
    commit: bool = True,
) -> RestatementResult:
    """Recalculate current spend-based rows of one factor set with another version of it.

    `factor_set` is the set's name (the version is then read from the database) or a loaded
    `FactorSet` whose version must equal `new_version` (it is stored first if it is not yet).
    Rows of `transaction_date` in [since, until) whose current version differs are recalculated:
    kgco2e = amount * fx_rate * price_index_ratio * factor_value with the recorded amount and
    rate, the new factor and a price-index ratio to the new version's dollar year. A row with
    the new version is inserted and the old row gets is_current = false; nothing else is
    written. Rows whose code has no factor in the new version stay current and are counted.
    Everything happens in one transaction, committed at the end unless `commit` is false (the
    caller then re-chains the affected partitions in the same transaction and commits).
    """
    new_set = _new_factor_set(conn, factor_set, new_version)
    price_index = price_index or PriceIndex.default()

    select_sql = (
        f"SELECT {', '.join(ROW_COLUMNS)} "
        f"FROM {SCHEMA}.emission_calculations "
        "WHERE is_current AND factor_set = %s AND factor_version <> %s "
        "AND (%s::date IS NULL OR transaction_date >= %s::date) "
        "AND (%s::date IS NULL OR transaction_date < %s::date) "
        "ORDER BY connection, transaction_date, record_key"
    )
    counts = {"restated": 0, "without_factor": 0, "without_index": 0}
    missing_codes: set[str] = set()
    previous_versions: set[str] = set()
    totals = {"before": Decimal(0), "after": Decimal(0)}

    try:
        with conn.cursor(name="restatement_rows") as reader:
            reader.itersize = batch_size
            reader.execute(select_sql, (new_set.name, new_set.version, since, since, until, until))
            while True:
                rows = reader.fetchmany(batch_size)
                if not rows:
                    break
                restated = []
                for values in rows:
                    old_row = dict(zip(ROW_COLUMNS, values, strict=True))
                    new_row = _restated_row(old_row, new_set, price_index, record_hasher)
                    if isinstance(new_row, str):
                        counts[new_row] += 1
                        if new_row == "without_factor":
                            missing_codes.add(str(old_row["factor_code"]))
                        continue
                    previous_versions.add(old_row["factor_version"])
                    totals["before"] += old_row["kgco2e"] or Decimal(0)
                    totals["after"] += new_row["kgco2e"]
                    restated.append((old_row, new_row))
                _write_restated(conn, restated)
                counts["restated"] += len(restated)
        if commit:
            conn.commit()
    except Exception:
        conn.rollback()
        raise

    result = RestatementResult(
        factor_set=new_set.name,
        new_version=new_set.version,
        previous_versions=sorted(previous_versions),
        since=since,
        until=until,
        rows_restated=counts["restated"],
        rows_without_factor=counts["without_factor"],
        codes_without_factor=sorted(missing_codes),
        rows_without_price_index=counts["without_index"],
        kgco2e_before=totals["before"],
        kgco2e_after=totals["after"],
    )
    logger.info(
        "restated %d rows of %s to version %s (%d without factor)",
        result.rows_restated,
        result.factor_set,
        result.new_version,
        result.rows_without_factor,
    )
    return result


def _new_factor_set(conn: Any, factor_set: str | FactorSet, new_version: str) -> FactorSet:
    if isinstance(factor_set, FactorSet):
        if factor_set.version != new_version:
            raise FactorSetError(
                f"factor set given is version {factor_set.version}, not {new_version}"
            )
        store_factor_set(conn, factor_set)
        return factor_set
    return load_stored_factor_set(conn, factor_set, new_version)


def _restated_row(
    old_row: dict[str, Any],
    new_set: FactorSet,
    price_index: PriceIndex,
    record_hasher: RecordHasher,
) -> dict[str, Any] | str:
    resolved = new_set.resolve(str(old_row["factor_code"]))
    if resolved is None:
        return "without_factor"
    factor = resolved.factor
    try:
        ratio = price_index.ratio(
            factor.useeio_code, old_row["transaction_date"].year, new_set.dollar_year
        )
    except PriceIndexError:
        return "without_index"

    with localcontext() as context:
        context.prec = 60
        kgco2e = old_row["amount"] * old_row["fx_rate"] * ratio.ratio * factor.value
    new_row = dict(old_row)
    new_row.update(
        factor_version=new_set.version,
        factor_code=factor.code,
        factor_value=factor.value,
        factor_unit=factor.unit,
        price_index_ratio=ratio.ratio,
        price_index_rule=ratio.rule,
        kgco2e=kgco2e.quantize(KGCO2E_PLACES, rounding=ROUND_HALF_UP),
    )
    new_row["record_hash"] = record_hasher(new_row)
    return new_row


# Rows are written with chain_position and chain_hash NULL: the caller re-chains the affected
# partitions (methodology.restatement.restate_with_provenance does, in the same transaction).
def _write_restated(conn: Any, restated: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    if not restated:
        return
    insert_columns = (*CALCULATION_COLUMNS, "spend_record_hash", "record_hash")
    key_columns = ("connection", "transaction_date", "record_key", "factor_version")
    updated = [column for column in insert_columns if column not in key_columns]
    insert_sql = (
        f"INSERT INTO {SCHEMA}.emission_calculations ({', '.join(insert_columns)}) VALUES %s "
        f"ON CONFLICT ({', '.join(key_columns)}) DO UPDATE SET "
        + ", ".join(f"{column} = EXCLUDED.{column}" for column in updated)
        + ", is_current = true, chain_position = NULL, chain_hash = NULL, sync_id = NULL, "
        "calculated_at = now()"
    )
    retire_sql = (
        f"UPDATE {SCHEMA}.emission_calculations AS calculation SET is_current = false "
        "FROM (VALUES %s) AS retired (connection, transaction_date, record_key, factor_version) "
        "WHERE calculation.connection = retired.connection "
        "AND calculation.transaction_date = retired.transaction_date::date "
        "AND calculation.record_key = retired.record_key "
        "AND calculation.factor_version = retired.factor_version"
    )
    with conn.cursor() as writer:
        execute_values(
            writer,
            insert_sql,
            [tuple(new_row[column] for column in insert_columns) for _, new_row in restated],
            page_size=1000,
        )
        execute_values(
            writer,
            retire_sql,
            [tuple(old_row[column] for column in key_columns) for old_row, _ in restated],
            page_size=1000,
        )
