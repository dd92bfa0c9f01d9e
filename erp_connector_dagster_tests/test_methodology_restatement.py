"""Storing factor sets and restating stored results with a new version, on real PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import os
import uuid
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import psycopg2
import pytest
from yoyo import get_backend, read_migrations
from yoyo.migrations import MigrationList

from erp_connector_dagster.methodology.emissions import (
    EmissionLine,
    MethodologyContext,
    calculate_emission_lines,
)
from erp_connector_dagster.methodology.mapping import MappingRules
from erp_connector_dagster.records import Material, SpendDocumentType, SpendRecord, Vendor
from erp_connector_dagster.reference import factors as factors_module
from erp_connector_dagster.reference.currency import FileRateProvider
from erp_connector_dagster.reference.factors import (
    FactorSet,
    FactorSetError,
    calculation_hash,
    default_factor_set,
    load_factor_set,
    load_stored_factor_set,
    restate,
    store_factor_set,
    stored_factor_versions,
)

PACKAGE = Path(factors_module.__file__).parents[1]
MIGRATIONS = PACKAGE / "storage" / "migrations"
EPA_FILE = (
    PACKAGE / "reference" / "data" / ("SupplyChainGHGEmissionFactors_v1.3.0_NAICS_CO2e_USD2022.csv")
)
BEA_FILE = (
    PACKAGE / "reference" / "data" / ("BEA_Detail_GrossOutput_PriceIndex_2017schema_1997-2023.csv")
)
SERVER_URLS = [
    os.environ.get("ERP_CONNECTOR_TEST_SERVER_URL"),
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgresql://root@127.0.0.1:5432/postgres",
]
TABLE = "erp_connector_service.emission_calculations"


def _server_url() -> str:
    problems = []
    for url in filter(None, SERVER_URLS):
        try:
            psycopg2.connect(url, connect_timeout=3).close()
            return url
        except psycopg2.OperationalError as error:
            problems.append(f"{url.split('@')[-1]}: {error}")
    raise RuntimeError(f"no PostgreSQL server for the tests: {problems}")


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    server = _server_url()
    name = f"erp_methodology_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    url = server.rsplit("/", 1)[0] + f"/{name}"
    try:
        with psycopg2.connect(url) as conn, conn.cursor() as cursor:
            cursor.execute("CREATE SCHEMA erp_connector_service")
        conn.close()
        # Only the migrations this area depends on, so colleagues' work in progress cannot
        # break these tests.
        wanted = {"0001.core-tables", "0002.methodology"}
        migrations = MigrationList([m for m in read_migrations(str(MIGRATIONS)) if m.id in wanted])
        backend = get_backend(url)
        with backend.lock():
            backend.apply_migrations(backend.to_apply(migrations))
        del backend
        yield url
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def conn(database_url) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(database_url)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {TABLE}")
        cursor.execute("TRUNCATE erp_connector_service.emission_factors")
        cursor.execute("DELETE FROM erp_connector_service.factor_sets")
    connection.commit()
    yield connection
    connection.close()


def _line(number: int, vendor_id: str, day: dt.date, currency: str = "USD", **changes):
    return SpendRecord(
        connection="acme",
        source_id=f"S{number}",
        document_id=f"INV-{number}",
        line_number=1,
        document_type=SpendDocumentType.INVOICE,
        transaction_date=day,
        vendor_id=vendor_id,
        amount=Decimal("1000") + number,
        currency=currency,
        **changes,
    )


def _calculated_lines(tmp_path: Path) -> list[EmissionLine]:
    rates = tmp_path / "rates.csv"
    rates.write_text("date,currency,usd_rate\n2023-03-01,EUR,1.0605000000\n")
    context = MethodologyContext.default(
        method="hybrid",
        rate_provider=FileRateProvider(rates),
        mapping_rules=MappingRules.default(include_environment=False),
    )
    vendors = {
        code: Vendor(
            connection="acme",
            source_id=code,
            vendor_id=code,
            name="V",
            industry_code=code if code != "none" else None,
        )
        for code in ("541511", "327310", "331110", "none")
    }
    steel = Material(
        connection="acme",
        source_id="M1",
        material_id="M1",
        description="steel",
        material_group="STEEL",
    )
    records = [
        _line(1, "541511", dt.date(2023, 3, 1)),
        _line(2, "327310", dt.date(2023, 3, 1), currency="EUR"),
        _line(3, "331110", dt.date(2021, 7, 9)),
        _line(4, "541511", dt.date(2023, 3, 1), material_id="M1", quantity=Decimal(2), unit="t"),
        _line(5, "none", dt.date(2023, 3, 1), description="sundry"),
        _line(6, "541511", dt.date(2023, 3, 1), description="VAT"),
    ]
    result = calculate_emission_lines(records, vendors, {"M1": steel}, context)
    assert not result.quarantined
    assert [line.method for line in result.lines] == [
        "spend",
        "spend",
        "spend",
        "activity",
        "unmapped",
        "excluded",
    ]
    return result.lines


def _insert(conn, lines: list[EmissionLine]) -> None:
    columns = [*EmissionLine.COLUMNS, "record_hash"]
    with conn.cursor() as cursor:
        for line in lines:
            row = line.as_row()
            row["record_hash"] = calculation_hash(row)
            cursor.execute(
                f"INSERT INTO {TABLE} ({', '.join(columns)}) "
                f"VALUES ({', '.join(['%s'] * len(columns))})",
                [row[column] for column in columns],
            )
    conn.commit()


def _rows(conn, where: str = "TRUE", params: tuple = ()) -> list[dict]:
    with conn.cursor() as cursor:
        cursor.execute(
            # Spend record keys are vendor/document/line; these tests name lines by document/line.
            f"SELECT *, substr(record_key, strpos(record_key, '/') + 1) AS line"
            f" FROM {TABLE} WHERE {where} "
            "ORDER BY record_key, calculated_at",
            params,
        )
        names = [column.name for column in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def _new_version(
    tmp_path: Path, version: str, changes: dict[str, str], drop: set[str], dollar_year: int = 2022
) -> FactorSet:
    with EPA_FILE.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    kept = [row for row in rows if row["2017 NAICS Code"] not in drop]
    for row in kept:
        if row["2017 NAICS Code"] in changes:
            row["Supply Chain Emission Factors with Margins"] = changes[row["2017 NAICS Code"]]
    path = tmp_path / f"factors-{version}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return load_factor_set(path, "EPA_SUPPLY_CHAIN_GHG", version, dollar_year)


def _recomputed(row: dict) -> Decimal:
    exact = row["amount"] * row["fx_rate"] * row["price_index_ratio"] * row["factor_value"]
    return exact.quantize(Decimal("1e-6"), rounding=ROUND_HALF_UP)


def test_factor_sets_store_once_and_read_back_exactly(conn):
    published = default_factor_set()

    assert store_factor_set(conn, published) is True
    assert store_factor_set(conn, published) is False  # same values: nothing to do
    stored = load_stored_factor_set(conn, published.name, published.version)

    assert len(stored) == len(published) == 1016
    for factor in published.factors():
        assert stored.lookup(factor.code) == factor
    assert str(stored.lookup("541511").value) == "0.084"
    assert stored_factor_versions(conn, published.name) == ["1.3.0"]


def test_a_stored_version_is_immutable(conn, tmp_path):
    store_factor_set(conn, default_factor_set())
    tampered = _new_version(tmp_path, "1.3.0", {"541511": "0.5"}, set())
    with pytest.raises(FactorSetError, match="already stored with other values"):
        store_factor_set(conn, tampered)


def test_restatement_adds_new_rows_and_keeps_the_old_ones_queryable(conn, tmp_path):
    lines = _calculated_lines(tmp_path)
    _insert(conn, lines)
    store_factor_set(conn, default_factor_set())
    before = {row["line"]: row for row in _rows(conn)}
    new_set = _new_version(tmp_path, "1.3.1-test", {"541511": "0.1"}, drop={"331110"})

    result = restate(conn, new_set, "1.3.1-test")

    assert (result.rows_restated, result.rows_without_factor) == (2, 1)
    assert result.codes_without_factor == ["331110"]
    assert result.previous_versions == ["1.3.0"]
    assert result.kgco2e_before == before["INV-1/1"]["kgco2e"] + before["INV-2/1"]["kgco2e"]

    programming = _rows(conn, "record_key LIKE %s", ("%/INV-1/1",))
    old, new = sorted(programming, key=lambda row: row["factor_version"])
    assert (old["factor_version"], old["is_current"]) == ("1.3.0", False)
    assert (new["factor_version"], new["is_current"]) == ("1.3.1-test", True)
    # The old row is untouched; the new one recomputes from its recorded values.
    assert {k: v for k, v in old.items() if k != "is_current"} == {
        k: v for k, v in before["INV-1/1"].items() if k != "is_current"
    }
    assert new["factor_value"] == Decimal("0.1")
    assert new["kgco2e"] == _recomputed(new)
    assert new["kgco2e"] != old["kgco2e"]
    for column in (
        "amount",
        "fx_rate",
        "amount_usd",
        "price_index_ratio",
        "scope3_category",
        "mapping_rule",
        "data_quality_score",
    ):
        assert new[column] == old[column], column
    assert new["record_hash"] == calculation_hash(new) != old["record_hash"]
    assert new["chain_position"] is None and new["chain_hash"] is None

    cement_new = _rows(conn, "record_key LIKE '%%/INV-2/1' AND is_current")[0]
    assert cement_new["factor_version"] == "1.3.1-test"
    assert cement_new["kgco2e"] == before["INV-2/1"]["kgco2e"]  # same factor, new version

    # The view shows one current row per line; untouched lines keep their own rows.
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT substr(record_key, strpos(record_key, '/') + 1), factor_version"
            " FROM erp_connector_service.emission_lines ORDER BY record_key"
        )
        current = dict(cursor.fetchall())
    assert current == {
        "INV-1/1": "1.3.1-test",
        "INV-2/1": "1.3.1-test",
        "INV-3/1": "1.3.0",  # no factor in the new version: stays current, counted above
        "INV-4/1": "2025",  # activity-based, another factor set
        "INV-5/1": "",  # unmapped
        "INV-6/1": "",  # excluded
    }
    old_results = _rows(conn, "factor_version = '1.3.0'")
    assert {row["line"] for row in old_results} == {"INV-1/1", "INV-2/1", "INV-3/1"}

    again = restate(conn, "EPA_SUPPLY_CHAIN_GHG", "1.3.1-test")
    assert again.rows_restated == 0


def test_restating_back_makes_the_earlier_rows_current_again(conn, tmp_path):
    _insert(conn, _calculated_lines(tmp_path))
    store_factor_set(conn, default_factor_set())
    original = {row["line"]: row["kgco2e"] for row in _rows(conn)}
    restate(conn, _new_version(tmp_path, "9.9", {"541511": "0.2"}, set()), "9.9")

    result = restate(conn, "EPA_SUPPLY_CHAIN_GHG", "1.3.0")

    assert result.rows_restated == 3 and result.previous_versions == ["9.9"]
    current = _rows(conn, "is_current AND factor_set = 'EPA_SUPPLY_CHAIN_GHG'")
    assert {row["factor_version"] for row in current} == {"1.3.0"}
    assert {row["line"]: row["kgco2e"] for row in current} == {
        key: original[key] for key in ("INV-1/1", "INV-2/1", "INV-3/1")
    }
    assert len(_rows(conn, "factor_version = '9.9' AND NOT is_current")) == 3


def test_a_new_dollar_year_changes_the_price_index_ratio(conn, tmp_path):
    _insert(conn, _calculated_lines(tmp_path)[:1])
    store_factor_set(conn, default_factor_set())

    restate(conn, _new_version(tmp_path, "usd2021", {}, set(), dollar_year=2021), "usd2021")

    (row,) = _rows(conn, "is_current")
    with BEA_FILE.open(newline="", encoding="utf-8") as handle:
        index = next(r for r in csv.DictReader(handle) if r["USEEIO_Code"] == "541511")
    expected = (Decimal(index["2021"]) / Decimal(index["2023"])).quantize(
        Decimal("1e-10"), rounding=ROUND_HALF_UP
    )
    assert row["price_index_ratio"] == expected
    assert "2021/2023" in row["price_index_rule"]
    assert row["kgco2e"] == _recomputed(row)


def test_restatement_respects_the_date_window(conn, tmp_path):
    _insert(conn, _calculated_lines(tmp_path))
    store_factor_set(conn, default_factor_set())
    new_set = _new_version(tmp_path, "window", {"541511": "0.3"}, set())

    result = restate(conn, new_set, "window", since=dt.date(2021, 1, 1), until=dt.date(2022, 1, 1))

    assert result.rows_restated == 1  # only the 2021 line
    assert {row["line"] for row in _rows(conn, "factor_version = 'window'")} == {"INV-3/1"}


def test_unknown_versions_are_refused(conn):
    with pytest.raises(FactorSetError, match="not stored"):
        restate(conn, "EPA_SUPPLY_CHAIN_GHG", "0.0")
    with pytest.raises(FactorSetError, match="not 2.0"):
        restate(conn, default_factor_set(), "2.0")
