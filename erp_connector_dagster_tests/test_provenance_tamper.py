"""Chains, audit trail, seals, verifier, bundles and lineage against a real PostgreSQL.

A throwaway database is migrated once and filled the way the storage writer will fill it:
rows inserted with their canonical hashes, each partition rechained, audit events written,
heads sealed. Each tampering test works inside a transaction that is rolled back, so every
test starts from the same sealed store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors, sql
from psycopg2.extras import execute_values
from yoyo import get_backend, read_migrations

import erp_connector_dagster
from erp_connector_dagster.provenance import (
    ProblemReason,
    emission_lineage,
    export_bundle,
    rechain_partition,
    record_audit_event,
    record_hash,
    record_hashes,
    seal_heads,
    seal_key_from_env,
    verify_bundle,
    verify_database,
    verify_partition,
)
from erp_connector_dagster.provenance.audit import append_audit_event, audit_event_hash
from erp_connector_dagster.provenance.chain import chain_hashes, lock_partition
from erp_connector_dagster.provenance.tables import (
    BOOKKEEPING_COLUMNS,
    CHAIN_ORDER_COLUMNS,
    HASHED_COLUMNS,
    NUMERIC_SCALES,
    PARTITION_COLUMNS,
    TABLE_KINDS,
)

pytestmark = pytest.mark.timeout(120)

SERVER = "host=127.0.0.1 port=5432 user=root"
MIGRATIONS = Path(erp_connector_dagster.__file__).parent / "storage" / "migrations"
SCHEMA = "erp_connector_service"
KEY = b"provenance-test-seal-key-32bytes"
CONNECTIONS = ("acme-sap", "globex-netsuite")
DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 4))
BERLIN_SUMMER = dt.timezone(dt.timedelta(hours=2))
CHAINED = ("spend_records", "purchase_orders", "purchase_order_lines", "inventory_snapshots",
           "emission_calculations")  # fmt: skip
SEEDS = (11, 23, 37, 41, 59)


# -- databases ------------------------------------------------------------------------------


def _admin(statement: str) -> None:
    conn = psycopg2.connect(f"{SERVER} dbname=postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()


def _clone(template: str, name: str) -> str:
    _admin(f"CREATE DATABASE {name} TEMPLATE {template}")
    return f"{SERVER} dbname={name}"


@pytest.fixture(scope="module")
def template_db() -> Iterator[str]:
    name = f"erp_provenance_{uuid.uuid4().hex[:10]}_tpl"
    _admin(f"CREATE DATABASE {name}")
    try:
        conn = psycopg2.connect(f"{SERVER} dbname={name}")
        with conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.close()
        backend = get_backend(f"postgresql://root@127.0.0.1:5432/{name}")
        with backend.lock():
            backend.apply_migrations(backend.to_apply(read_migrations(str(MIGRATIONS))))
        backend.connection.close()
        yield name
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def store_dsn(template_db) -> Iterator[str]:
    name = template_db.replace("_tpl", "_store")
    dsn = _clone(template_db, name)
    try:
        conn = psycopg2.connect(dsn)
        with conn:
            _populate(conn, random.Random(2024))
        conn.close()
        yield dsn
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def empty_dsn(template_db) -> Iterator[str]:
    name = f"erp_provenance_{uuid.uuid4().hex[:10]}_empty"
    dsn = _clone(template_db, name)
    try:
        yield dsn
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def conn(store_dsn) -> Iterator:
    connection = psycopg2.connect(store_dsn)
    try:
        yield connection
    finally:
        connection.rollback()
        connection.close()


# -- a realistic store, written the way the storage writer writes ---------------------------


def _money(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randint(low, high)) / 100


def _moment(rng: random.Random, day: dt.date) -> dt.datetime:
    return dt.datetime(
        day.year, day.month, day.day, rng.randint(0, 23), rng.randint(0, 59),
        rng.randint(0, 59), rng.randint(0, 999_999), tzinfo=BERLIN_SUMMER,
    )  # fmt: skip


def _unique_keys(rng: random.Random, count: int, make) -> list[str]:
    keys: set[str] = set()
    while len(keys) < count:
        keys.add(make(rng))
    return sorted(keys)


def _document_key(rng: random.Random) -> str:
    # Mixed case, digits of different widths and non-ASCII: byte order is not dictionary order.
    prefix = rng.choice(["INV", "inv", "Rg", "CRN", "Fä", "Ω"])
    return f"{prefix}-{rng.randint(1, 99999)}/{rng.randint(1, 4)}"


def _spend_rows(rng, connection, day, vendors, materials) -> list[dict]:
    rows = []
    for key in _unique_keys(rng, rng.randint(12, 22), _document_key):
        document_id, line = key.split("/")
        amount = _money(rng, -40_000, 900_000)
        rows.append(
            {
                "connection": connection, "transaction_date": day, "record_key": key,
                "document_id": document_id, "line_number": int(line),
                "document_type": "credit_note" if amount < 0 else "invoice",
                "vendor_id": rng.choice(vendors), "material_id": rng.choice(materials + [None]),
                "gl_account": rng.choice(["610000", "620100", "400000"]),
                "description": rng.choice(["Büromaterial", "Freight – März", "Cloud services"]),
                "amount": amount, "currency": rng.choice(["EUR", "USD", "GBP"]),
                "quantity": rng.choice([None, Decimal(rng.randint(1, 5000)) / 1000]),
                "unit": rng.choice([None, "EA", "KG"]), "is_capex": rng.random() < 0.1,
                "purchase_order_id": rng.choice([None, f"45{rng.randint(10**7, 10**8 - 1)}"]),
                "status": rng.choice(["active", "active", "voided"]),
                "updated_at": _moment(rng, day), "source_id": f"SRC-{key}",
                "source_deleted": rng.random() < 0.05,
            }
        )  # fmt: skip
    return rows


def _purchase_order_rows(rng, connection, day, vendors) -> list[dict]:
    return [
        {
            "connection": connection, "order_date": day, "record_key": key,
            "purchase_order_id": key, "vendor_id": rng.choice(vendors),
            "currency": "EUR", "total_amount": _money(rng, 100, 5_000_000),
            "order_status": rng.choice(["open", "closed"]), "status": "active",
            "updated_at": _moment(rng, day), "source_id": f"PO-{key}", "source_deleted": False,
        }
        for key in _unique_keys(rng, rng.randint(5, 10), lambda r: f"45{r.randint(10**7, 10**8)}")
    ]  # fmt: skip


def _purchase_order_line_rows(rng, connection, day, materials) -> list[dict]:
    rows = []
    for key in _unique_keys(
        rng, rng.randint(8, 16), lambda r: f"45{r.randint(1000, 1100)}/{r.randint(1, 9)}"
    ):  # noqa: E501
        order, line = key.split("/")
        quantity = Decimal(rng.randint(1, 10**6)) / 1000
        # Seven decimals on purpose: numeric(20,6) rounds it, the hash must follow.
        unit_price = Decimal(rng.randint(1, 10**9)) / 10**7
        rows.append(
            {
                "connection": connection, "order_date": day, "record_key": key,
                "purchase_order_id": order, "line_number": int(line),
                "material_id": rng.choice(materials), "description": "Ersatzteil",
                "quantity": quantity, "unit": "EA", "unit_price": unit_price,
                "amount": (quantity * unit_price).quantize(Decimal("0.01")),
                "currency": "EUR", "gl_account": "620100",
                "delivery_date": day + dt.timedelta(days=rng.randint(3, 30)),
                "status": "active", "updated_at": _moment(rng, day),
                "source_id": f"POL-{key}", "source_deleted": False,
            }
        )  # fmt: skip
    return rows


def _inventory_rows(rng, connection, day, materials) -> list[dict]:
    rows = []
    for material in materials:
        for location in rng.sample(["1000", "2000", "WH-Süd"], 2):
            quantity = Decimal(rng.randint(0, 10**7)) / 1000
            rows.append(
                {
                    "connection": connection, "snapshot_date": day,
                    "record_key": f"{material}@{location}", "material_id": material,
                    "location": location, "quantity": quantity, "unit": "KG",
                    "unit_cost": Decimal("2.125"), "value": quantity * Decimal("2.125"),
                    "currency": "EUR", "status": "active", "updated_at": None,
                    "source_id": f"STOCK-{material}-{location}", "source_deleted": False,
                }
            )  # fmt: skip
    return rows


def _emission_rows(rng, spend_rows, spend_hashes) -> list[dict]:
    rows = []
    for spend, spend_hash in zip(spend_rows, spend_hashes, strict=True):
        fx_rate = Decimal("1") if spend["currency"] == "USD" else Decimal("1.0865123456")
        amount_usd = (spend["amount"] * fx_rate).quantize(Decimal("0.0001"))
        versions = [("2.0.1", True, Decimal("0.12345678"))]
        if rng.random() < 0.25:  # restated: the earlier factor version is kept, not current
            versions.append(("1.1.0", False, Decimal("0.2")))
        for version, current, factor in versions:
            rows.append(
                {
                    "connection": spend["connection"],
                    "transaction_date": spend["transaction_date"],
                    "record_key": spend["record_key"], "vendor_id": spend["vendor_id"],
                    "material_id": spend["material_id"], "scope3_category": 1,
                    "excluded_reason": None, "method": "spend_based",
                    "amount": spend["amount"], "currency": spend["currency"],
                    "fx_rate": fx_rate, "fx_rate_date": spend["transaction_date"],
                    "fx_provider": "ecb", "amount_usd": amount_usd,
                    "price_index_ratio": Decimal("0.9731"), "price_index_rule": "cpi-2022",
                    "factor_set": "useeio", "factor_version": version, "factor_code": "541511",
                    "factor_value": factor, "factor_unit": "kgCO2e/USD", "quantity": None,
                    "unit": None, "kgco2e": (amount_usd * factor).quantize(Decimal("0.000001")),
                    "data_quality_score": 3, "mapping_rule": "vendor_naics",
                    "is_current": current, "spend_record_hash": spend_hash,
                }
            )  # fmt: skip
    return rows


def _insert(cursor, table: str, rows: list[dict], sync_id: str) -> list[str]:
    hashes = record_hashes(rows, table)
    columns = [*HASHED_COLUMNS[table], "record_hash", "sync_id"]
    execute_values(
        cursor,
        sql.SQL("INSERT INTO {}.{} ({}) VALUES %s")
        .format(
            sql.Identifier(SCHEMA),
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
        )
        .as_string(cursor),
        [
            tuple(row[c] for c in HASHED_COLUMNS[table]) + (h, sync_id)
            for row, h in zip(rows, hashes, strict=True)
        ],
    )
    return hashes


def _write_partition(cursor, table, connection, day, rows, sync_id) -> list[str]:
    hashes = _insert(cursor, table, rows, sync_id)
    head = rechain_partition(cursor, table, connection, day, sync_id=sync_id)
    record_audit_event(
        cursor, "records_written", connection=connection, kind=TABLE_KINDS[table],
        partition_date=day, sync_id=sync_id,
        details={"table": table, "records": len(rows), "head": head.head_hash},
    )  # fmt: skip
    return hashes


def _populate(conn, rng: random.Random) -> None:
    with conn.cursor() as cursor:
        for connection in CONNECTIONS:
            sync_id = str(uuid.UUID(int=rng.getrandbits(128)))
            cursor.execute(
                "INSERT INTO erp_connector_service.sync_jobs (id, connection, kinds, mode,"
                " partition_start, partition_end, status, started_at, finished_at)"
                " VALUES (%s, %s, %s, 'full', %s, %s, 'succeeded', now(), now())",
                (sync_id, connection, ["spend", "purchase_order"], DAYS[0], DAYS[-1]),
            )
            record_audit_event(
                cursor, "sync_started", connection=connection, sync_id=sync_id,
                details={"mode": "full", "kinds": ["spend", "purchase_order", "inventory"]},
            )  # fmt: skip
            vendors = [f"V-{n:04d}" for n in rng.sample(range(1, 9999), 8)]
            materials = [f"M-{n}" for n in rng.sample(range(100, 999), 6)]
            _write_partition(cursor, "vendors", connection, None, [
                {"connection": connection, "record_key": vendor, "vendor_id": vendor,
                 "name": f"Lieferant {vendor} GmbH", "country": rng.choice(["DE", "US", None]),
                 "industry_code": "541511", "tax_id": None, "currency": "EUR",
                 "status": "active", "updated_at": _moment(rng, DAYS[0]), "source_id": vendor}
                for vendor in vendors
            ], sync_id)  # fmt: skip
            _write_partition(cursor, "materials", connection, None, [
                {"connection": connection, "record_key": material, "material_id": material,
                 "description": "Schrauben M8", "material_group": "FAST", "base_unit": "EA",
                 "commodity_code": None, "status": "active", "updated_at": None,
                 "source_id": material}
                for material in materials
            ], sync_id)  # fmt: skip
            for day in DAYS:
                spend = _spend_rows(rng, connection, day, vendors, materials)
                spend_hashes = _write_partition(
                    cursor, "spend_records", connection, day, spend, sync_id
                )
                _write_partition(
                    cursor, "purchase_orders", connection, day,
                    _purchase_order_rows(rng, connection, day, vendors), sync_id,
                )  # fmt: skip
                _write_partition(
                    cursor, "purchase_order_lines", connection, day,
                    _purchase_order_line_rows(rng, connection, day, materials), sync_id,
                )  # fmt: skip
                _write_partition(
                    cursor, "inventory_snapshots", connection, day,
                    _inventory_rows(rng, connection, day, materials), sync_id,
                )  # fmt: skip
                _write_partition(
                    cursor, "emission_calculations", connection, day,
                    _emission_rows(rng, spend, spend_hashes), sync_id,
                )  # fmt: skip
            record_audit_event(
                cursor, "sync_completed", connection=connection, sync_id=sync_id,
                details={"duration_seconds": 1.25, "records": Decimal("412")},
            )  # fmt: skip
        seal = seal_heads(cursor, KEY)
        assert seal.sealed and seal.partition_count == len(CONNECTIONS) * (2 + 5 * len(DAYS))


# -- helpers for tampering ------------------------------------------------------------------


def _rows(cursor, table: str, connection: str, day: dt.date | None) -> list[dict]:
    date_column = PARTITION_COLUMNS[table]
    where = sql.SQL("connection = %s") + (
        sql.SQL(" AND {} = %s").format(sql.Identifier(date_column)) if date_column else sql.SQL("")
    )
    order = sql.SQL(", ").join(
        sql.SQL('{} COLLATE "C"').format(sql.Identifier(c)) for c in CHAIN_ORDER_COLUMNS[table]
    )
    cursor.execute(
        sql.SQL("SELECT * FROM {}.{} WHERE {} ORDER BY {}").format(
            sql.Identifier(SCHEMA), sql.Identifier(table), where, order
        ),
        (connection, day) if date_column else (connection,),
    )
    names = [column.name for column in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def _row_filter(table: str, row: dict) -> tuple[sql.Composable, list]:
    keys = ["connection", PARTITION_COLUMNS[table], *CHAIN_ORDER_COLUMNS[table]]
    keys = [key for key in keys if key]
    condition = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in keys)
    return condition, [row[key] for key in keys]


def _update(cursor, table: str, row: dict, changes: dict) -> None:
    condition, values = _row_filter(table, row)
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = %s").format(sql.Identifier(column)) for column in changes
    )
    cursor.execute(
        sql.SQL("UPDATE {}.{} SET {} WHERE {}").format(
            sql.Identifier(SCHEMA), sql.Identifier(table), assignments, condition
        ),
        [*changes.values(), *values],
    )
    assert cursor.rowcount == 1


def _delete(cursor, table: str, row: dict) -> None:
    condition, values = _row_filter(table, row)
    cursor.execute(
        sql.SQL("DELETE FROM {}.{} WHERE {}").format(
            sql.Identifier(SCHEMA), sql.Identifier(table), condition
        ),
        values,
    )
    assert cursor.rowcount == 1


def _insert_raw(cursor, table: str, row: dict) -> None:
    columns = [c for c in row if c not in ("synced_at", "calculated_at")]
    cursor.execute(
        sql.SQL("INSERT INTO {}.{} ({}) VALUES ({})").format(
            sql.Identifier(SCHEMA), sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        ),
        [row[c] for c in columns],
    )  # fmt: skip


def _pick_partition(rng: random.Random, table: str | None = None):
    table = table or rng.choice(CHAINED)
    return table, rng.choice(CONNECTIONS), rng.choice(DAYS)


KEY_COLUMNS = {"connection", "record_key", "factor_version", *PARTITION_COLUMNS.values()}


def _altered(value, rng: random.Random):
    if isinstance(value, bool):
        return not value
    if isinstance(value, Decimal):
        return value + Decimal("0.01")
    if isinstance(value, int):
        return value + 1 if value < 5 else value - 1
    if isinstance(value, dt.datetime):
        return value + dt.timedelta(seconds=1)
    if isinstance(value, dt.date):
        return value + dt.timedelta(days=1)
    if isinstance(value, str):
        return value[:-1] + ("X" if not value.endswith("X") else "Y")
    raise AssertionError(f"cannot alter {value!r}")


def _named(report_or_problems, reason: ProblemReason, record_key: str | None = None):
    problems = getattr(report_or_problems, "problems", report_or_problems)
    return [
        problem
        for problem in problems
        if problem.reason == reason and (record_key is None or problem.record_key == record_key)
    ]


# -- the untouched store --------------------------------------------------------------------


def test_untouched_store_verifies_clean_and_sealed(conn):
    report = verify_database(conn, KEY)
    assert report.ok, report.summary()
    assert report.status == "sealed"
    assert report.warnings == []
    assert report.seals_checked == 1 and report.latest_seal_id is not None
    assert report.partitions_checked == len(CONNECTIONS) * (2 + 5 * len(DAYS))
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM erp_connector_service.spend_records)"
            " + (SELECT count(*) FROM erp_connector_service.emission_calculations)"
            " + (SELECT count(*) FROM erp_connector_service.purchase_orders)"
            " + (SELECT count(*) FROM erp_connector_service.purchase_order_lines)"
            " + (SELECT count(*) FROM erp_connector_service.inventory_snapshots)"
            " + (SELECT count(*) FROM erp_connector_service.vendors)"
            " + (SELECT count(*) FROM erp_connector_service.materials)"
        )
        assert report.records_checked == cursor.fetchone()[0]
        for table in CHAINED:
            assert verify_partition(cursor, table, CONNECTIONS[0], DAYS[0]) == []


def test_rows_read_back_from_postgresql_hash_as_written(conn):
    with conn.cursor() as cursor:
        for table in HASHED_COLUMNS:
            day = DAYS[1] if PARTITION_COLUMNS[table] else None
            rows = _rows(cursor, table, CONNECTIONS[1], day)
            assert rows
            assert record_hashes(rows, table) == [row["record_hash"] for row in rows]
        spend = _rows(cursor, "spend_records", CONNECTIONS[0], DAYS[0])
        assert any(row["amount"].as_tuple().exponent == -4 for row in spend)


def test_chain_order_is_byte_order_and_positions_are_dense(conn):
    with conn.cursor() as cursor:
        rows = _rows(cursor, "spend_records", CONNECTIONS[0], DAYS[0])
    keys = [row["record_key"] for row in rows]
    assert keys == sorted(keys, key=lambda key: key.encode("utf-8"))
    assert [row["chain_position"] for row in rows] == list(range(len(rows)))
    assert [row["chain_hash"] for row in rows] == chain_hashes(
        "spend_records", CONNECTIONS[0], DAYS[0], [row["record_hash"] for row in rows]
    )


def test_hashed_columns_cover_every_business_column_of_the_schema(conn):
    with conn.cursor() as cursor:
        for table, hashed in HASHED_COLUMNS.items():
            cursor.execute(
                "SELECT column_name, numeric_scale, data_type FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s",
                (SCHEMA, table),
            )
            found = cursor.fetchall()
            business = {name for name, _, _ in found} - BOOKKEEPING_COLUMNS
            assert set(hashed) == business, table
            scales = {name: scale for name, scale, kind in found if kind == "numeric"}
            assert scales == NUMERIC_SCALES[table], table


# -- randomized tampering, each must be found and named -------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_edited_field_is_named(conn, seed):
    rng = random.Random(seed)
    table, connection, day = _pick_partition(rng)
    with conn.cursor() as cursor:
        row = rng.choice(_rows(cursor, table, connection, day))
        column = rng.choice(
            [c for c in HASHED_COLUMNS[table] if c not in KEY_COLUMNS and row[c] is not None]
        )
        _update(cursor, table, row, {column: _altered(row[column], rng)})
        problems = verify_partition(cursor, table, connection, day)

    assert _named(problems, ProblemReason.RECORD_EDITED, row["record_key"]), (column, problems)
    report = verify_database(conn, KEY)
    assert report.status == "failed"
    edited = _named(report, ProblemReason.RECORD_EDITED, row["record_key"])
    assert [(p.table, p.connection, p.partition_date) for p in edited] == [(table, connection, day)]


@pytest.mark.parametrize("seed", SEEDS)
def test_deleted_record_is_named_by_its_successor(conn, seed):
    rng = random.Random(seed)
    table, connection, day = _pick_partition(rng)
    with conn.cursor() as cursor:
        rows = _rows(cursor, table, connection, day)
        index = rng.randrange(0, len(rows) - 1)  # not the last one: that is tail truncation
        _delete(cursor, table, rows[index])
        problems = verify_partition(cursor, table, connection, day)

    successor = rows[index + 1]["record_key"]
    deleted = _named(problems, ProblemReason.RECORDS_DELETED, successor)
    assert deleted and "1 record(s) missing" in deleted[0].detail, problems
    assert _named(verify_database(conn, KEY), ProblemReason.RECORDS_DELETED, successor)


@pytest.mark.parametrize("seed", SEEDS)
def test_inserted_record_is_named(conn, seed):
    rng = random.Random(seed)
    table, connection, day = _pick_partition(rng)
    with conn.cursor() as cursor:
        rows = _rows(cursor, table, connection, day)
        forged = dict(rng.choice(rows))
        forged["record_key"] = forged["record_key"] + rng.choice(["-a", "0", "~", "ä"])
        forged["record_hash"] = record_hash(forged, table)
        # Either left unchained, or given a neighbour's plausible position and a made-up link.
        if rng.random() < 0.5:
            forged["chain_position"], forged["chain_hash"] = None, None
        else:
            forged["chain_hash"] = hashlib.sha256(forged["record_key"].encode()).hexdigest()
        _insert_raw(cursor, table, forged)
        problems = verify_partition(cursor, table, connection, day)

    assert _named(problems, ProblemReason.RECORD_INSERTED, forged["record_key"]), problems
    report = verify_database(conn, KEY)
    assert _named(report, ProblemReason.RECORD_INSERTED, forged["record_key"])
    blamed = {p.record_key for p in report.problems if p.record_key is not None}
    assert blamed == {forged["record_key"]}, report.summary()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("with_hashes", [False, True])
def test_swapped_contents_are_named(conn, seed, with_hashes):
    rng = random.Random(seed)
    table, connection, day = _pick_partition(rng)
    moved = [c for c in HASHED_COLUMNS[table] if c not in KEY_COLUMNS]
    if with_hashes:
        moved += ["record_hash", "chain_position", "chain_hash"]
    with conn.cursor() as cursor:
        rows = _rows(cursor, table, connection, day)
        first, second = rng.sample(rows, 2)
        _update(cursor, table, first, {c: second[c] for c in moved})
        _update(cursor, table, second, {c: first[c] for c in moved})
        problems = verify_partition(cursor, table, connection, day)

    for row in (first, second):
        assert _named(problems, ProblemReason.RECORD_EDITED, row["record_key"]), problems
        assert _named(verify_database(conn, KEY), ProblemReason.RECORD_EDITED, row["record_key"])


@pytest.mark.parametrize("seed", SEEDS)
def test_truncated_tail_is_named(conn, seed):
    rng = random.Random(seed)
    table, connection, day = _pick_partition(rng)
    with conn.cursor() as cursor:
        rows = _rows(cursor, table, connection, day)
        cut = rng.randint(1, 3)
        for row in rows[-cut:]:
            _delete(cursor, table, row)
        problems = verify_partition(cursor, table, connection, day)

    truncated = _named(problems, ProblemReason.TAIL_TRUNCATED)
    assert truncated, problems
    survivor = rows[-cut - 1]
    label = survivor["record_key"]
    if table == "emission_calculations":
        label += f" (factor_version={survivor['factor_version']})"
    assert f"{cut} missing after record_key {label!r}" in truncated[0].detail
    report = verify_database(conn, KEY)
    assert [(p.table, p.connection, p.partition_date) for p in
            _named(report, ProblemReason.TAIL_TRUNCATED)] == [(table, connection, day)]  # fmt: skip


def test_deleted_vendor_changes_the_master_data_head(conn):
    with conn.cursor() as cursor:
        vendor = _rows(cursor, "vendors", CONNECTIONS[0], None)[3]
        _delete(cursor, "vendors", vendor)
        problems = verify_partition(cursor, "vendors", CONNECTIONS[0], None)
    assert _named(problems, ProblemReason.COUNT_MISMATCH)
    assert not verify_database(conn, KEY).ok


def _rewrite_chain(cursor, table, connection, day, rng) -> dict:
    """What an attacker with write access but no key can do: a fully consistent rewrite."""
    rows = _rows(cursor, table, connection, day)
    victim = rng.choice(rows)
    column = rng.choice(
        [c for c in HASHED_COLUMNS[table] if c not in KEY_COLUMNS and victim[c] is not None]
    )
    victim[column] = _altered(victim[column], rng)
    _update(cursor, table, victim, {column: victim[column]})
    hashes = [record_hash(row, table) for row in rows]
    links = chain_hashes(table, connection, day, hashes)
    for position, (row, record_hash_hex, link) in enumerate(zip(rows, hashes, links, strict=True)):
        _update(cursor, table, row, {"record_hash": record_hash_hex, "chain_position": position,
                                     "chain_hash": link})  # fmt: skip
    cursor.execute(
        "UPDATE erp_connector_service.chain_heads SET head_hash = %s"
        " WHERE table_name = %s AND connection = %s AND partition_date = %s",
        (links[-1], table, connection, day),
    )
    return {"victim": victim, "head": links[-1], "count": len(rows)}


@pytest.mark.parametrize("seed", SEEDS)
def test_consistently_rewritten_chain_is_caught_by_audit_and_seal(conn, seed):
    rng = random.Random(seed)
    table, connection, day = _pick_partition(rng)
    with conn.cursor() as cursor:
        _rewrite_chain(cursor, table, connection, day, rng)
        problems = verify_partition(cursor, table, connection, day)

    assert [p.reason for p in problems] == [ProblemReason.HEAD_NOT_AUDITED]
    report = verify_database(conn, KEY)
    located = {(p.reason, p.table, p.connection, p.partition_date) for p in report.problems}
    assert located == {
        (ProblemReason.HEAD_NOT_AUDITED, table, connection, day),
        (ProblemReason.SEALED_HEAD_MISMATCH, table, connection, day),
    }


def test_rewrite_with_forged_audit_history_is_caught_by_the_seal(conn):
    rng = random.Random(5)
    table, connection, day = _pick_partition(rng)
    with conn.cursor() as cursor:
        forged = _rewrite_chain(cursor, table, connection, day, rng)
        cursor.execute(
            "ALTER TABLE erp_connector_service.audit_events"
            " DISABLE TRIGGER audit_events_append_only"
        )
        cursor.execute(
            "SELECT id, event_type, connection, kind, partition_date, sync_id, details,"
            " created_at, prev_hash, event_hash FROM erp_connector_service.audit_events"
            " ORDER BY id"
        )
        names = [column.name for column in cursor.description]
        events = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
        # Make the audit trail tell the forged head, and re-link every later event.
        previous = None
        for event in events:
            details = event["details"]
            if (
                event["event_type"] == "chain_head_changed"
                and details["table"] == table
                and event["connection"] == connection
                and event["partition_date"] == day
            ):
                details["head"] = forged["head"]
            event["prev_hash"] = previous or event["prev_hash"]
            event["event_hash"] = audit_event_hash(event["prev_hash"], event)
            previous = event["event_hash"]
            cursor.execute(
                "UPDATE erp_connector_service.audit_events"
                " SET details = %s, prev_hash = %s, event_hash = %s WHERE id = %s",
                (json.dumps(details), event["prev_hash"], event["event_hash"], event["id"]),
            )

    report = verify_database(conn, KEY)
    reasons = {p.reason for p in report.problems}
    assert ProblemReason.AUDIT_EVENT_EDITED not in reasons  # the rewrite is self-consistent
    assert ProblemReason.AUDIT_REWRITTEN in reasons
    assert (table, connection, day) in {
        (p.table, p.connection, p.partition_date)
        for p in _named(report, ProblemReason.SEALED_HEAD_MISMATCH)
    }
    # Without the key, the same store passes every keyless check: the seal is what caught it.
    assert verify_database(conn, None).ok


def test_forged_head_change_after_the_seal_is_reported_as_unsealed(conn):
    # Limitation: a well-formed audit event appended after the latest seal looks like a
    # re-sync until the next seal; the report names the partition as not sealed yet.
    rng = random.Random(8)
    table, connection, day = _pick_partition(rng)
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT head_hash, record_count FROM erp_connector_service.chain_heads"
            " WHERE table_name = %s AND connection = %s AND partition_date = %s",
            (table, connection, day),
        )
        old_head, old_count = cursor.fetchone()
        forged = _rewrite_chain(cursor, table, connection, day, rng)
        append_audit_event(
            cursor, "chain_head_changed", connection=connection, kind=TABLE_KINDS[table],
            partition_date=day,
            details={"table": table, "previous_head": old_head, "previous_count": old_count,
                     "head": forged["head"], "record_count": forged["count"]},
        )  # fmt: skip
    report = verify_database(conn, KEY)
    assert report.ok
    assert report.status == "sealed_with_later_changes"
    assert report.unsealed_partitions == [(table, connection, day.isoformat())]


def test_forged_seal_without_the_key_is_refused(conn):
    with conn.cursor() as cursor:
        seal_heads(cursor, b"an-attackers-own-key-of-32-bytes")
    report = verify_database(conn, KEY)
    assert [p.reason for p in report.problems] == [ProblemReason.SEAL_INVALID]


def test_wrong_key_fails_every_seal(conn):
    report = verify_database(conn, b"not-the-key-that-sealed-this-db!")
    assert {p.reason for p in report.problems} == {ProblemReason.SEAL_INVALID}


# -- a legitimate re-sync -------------------------------------------------------------------


def _resync_one_spend_record(cursor) -> dict:
    connection, day = CONNECTIONS[1], DAYS[2]
    row = _rows(cursor, "spend_records", connection, day)[4]
    sync_id = str(uuid.uuid4())
    cursor.execute(
        "INSERT INTO erp_connector_service.record_versions"
        " (connection, kind, partition_date, record_key, record_hash, record, superseded_by)"
        " VALUES (%s, 'spend', %s, %s, %s, %s, %s)",
        (connection, day, row["record_key"], row["record_hash"],
         json.dumps({"amount": str(row["amount"])}), sync_id),
    )  # fmt: skip
    updated = {**row, "amount": row["amount"] + Decimal("100.25"), "status": "voided"}
    updated["record_hash"] = record_hash(updated, "spend_records")
    _update(cursor, "spend_records", row, {
        "amount": updated["amount"], "status": "voided", "record_hash": updated["record_hash"],
        "sync_id": sync_id,
    })  # fmt: skip
    head = rechain_partition(cursor, "spend_records", connection, day, sync_id=sync_id)
    assert head.changed and head.previous_head != head.head_hash
    record_audit_event(
        cursor, "records_written", connection=connection, kind="spend", partition_date=day,
        sync_id=sync_id, details={"table": "spend_records", "records": 1, "updated": 1},
    )  # fmt: skip
    return {"row": row, "updated": updated, "sync_id": sync_id, "head": head}


def test_legitimate_resync_verifies_clean_and_seals_again(conn):
    with conn.cursor() as cursor:
        resync = _resync_one_spend_record(cursor)
    before_seal = verify_database(conn, KEY)
    assert before_seal.ok, before_seal.summary()
    assert before_seal.status == "sealed_with_later_changes"
    assert before_seal.unsealed_partitions == [
        ("spend_records", CONNECTIONS[1], DAYS[2].isoformat())
    ]

    with conn.cursor() as cursor:
        seal = seal_heads(cursor, KEY)
    assert seal.changed_partitions == 1
    report = verify_database(conn, KEY)
    assert report.ok and report.status == "sealed" and report.seals_checked == 2
    assert resync["head"].audit_event_hash


def test_rechain_is_idempotent_and_rewrites_only_moved_rows(conn):
    connection, day = CONNECTIONS[0], DAYS[1]
    with conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM erp_connector_service.audit_events")
        events_before = cursor.fetchone()[0]
        again = rechain_partition(cursor, "spend_records", connection, day)
        assert not again.changed
        cursor.execute("SELECT count(*) FROM erp_connector_service.audit_events")
        assert cursor.fetchone()[0] == events_before

        rows = _rows(cursor, "spend_records", connection, day)
        appended = {**rows[-1], "record_key": "\U0001f4e6-last/1", "amount": Decimal("1.5")}
        appended["record_hash"] = record_hash(appended, "spend_records")
        _insert_raw(cursor, "spend_records", {**appended, "chain_position": None,
                                              "chain_hash": None})  # fmt: skip
        cursor.execute(
            "SELECT record_key, xmin::text FROM erp_connector_service.spend_records"
            " WHERE connection = %s AND transaction_date = %s",
            (connection, day),
        )
        versions_before = dict(cursor.fetchall())
        head = rechain_partition(cursor, "spend_records", connection, day)
        assert head.changed and head.record_count == len(rows) + 1
        cursor.execute(
            "SELECT record_key FROM erp_connector_service.spend_records"
            " WHERE connection = %s AND transaction_date = %s AND xmin::text <> %s",
            (connection, day, versions_before[rows[0]["record_key"]]),
        )
        # Appending at the end of the byte order moves no other row: only it was written.
        assert [key for (key,) in cursor.fetchall()] == [appended["record_key"]]
        assert verify_partition(cursor, "spend_records", connection, day) == []
    assert verify_database(conn, KEY).ok


# -- the audit trail ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE erp_connector_service.audit_events SET details = '{}' WHERE id = 3",
        "DELETE FROM erp_connector_service.audit_events WHERE id = 3",
        "TRUNCATE erp_connector_service.audit_events",
        "UPDATE erp_connector_service.seals SET hmac = 'x'",
        "DELETE FROM erp_connector_service.seals",
        "TRUNCATE erp_connector_service.seals",
    ],
)
def test_audit_evidence_is_append_only(conn, statement):
    with conn.cursor() as cursor, pytest.raises(errors.InsufficientPrivilege, match="append-only"):
        cursor.execute(statement)


def test_audit_edit_behind_a_disabled_trigger_is_named(conn):
    with conn.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE erp_connector_service.audit_events"
            " DISABLE TRIGGER audit_events_append_only"
        )
        cursor.execute(
            "SELECT id FROM erp_connector_service.audit_events"
            " WHERE event_type = 'records_written' ORDER BY id LIMIT 1 OFFSET 5"
        )
        (event_id,) = cursor.fetchone()
        cursor.execute(
            "UPDATE erp_connector_service.audit_events"
            " SET details = jsonb_set(details, '{records}', '0') WHERE id = %s",
            (event_id,),
        )
    report = verify_database(conn, KEY)
    assert _named(report, ProblemReason.AUDIT_EVENT_EDITED, str(event_id))
    assert _named(report, ProblemReason.AUDIT_REWRITTEN)
    assert not verify_database(conn, None).ok  # the chain alone shows it, key or not


def test_audit_event_deleted_behind_a_disabled_trigger_is_named(conn):
    with conn.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE erp_connector_service.audit_events"
            " DISABLE TRIGGER audit_events_append_only"
        )
        cursor.execute("DELETE FROM erp_connector_service.audit_events WHERE id = 7")
    report = verify_database(conn, KEY)
    assert _named(report, ProblemReason.AUDIT_LINK_BROKEN, "8")


def test_deleted_latest_seal_is_noticed(conn):
    with conn.cursor() as cursor:
        cursor.execute("ALTER TABLE erp_connector_service.seals DISABLE TRIGGER seals_append_only")
        cursor.execute("DELETE FROM erp_connector_service.seals")
    report = verify_database(conn, KEY)
    assert _named(report, ProblemReason.SEAL_MISSING)


def test_concurrent_writers_keep_one_audit_chain(empty_dsn):
    failures: list[BaseException] = []

    def write_events(writer: int) -> None:
        connection = psycopg2.connect(empty_dsn)
        try:
            for index in range(25):
                with connection, connection.cursor() as cursor:
                    record_audit_event(
                        cursor, "records_written", connection=f"writer-{writer}",
                        details={"batch": index},
                    )  # fmt: skip
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=write_events, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []

    connection = psycopg2.connect(empty_dsn)
    try:
        report = verify_database(connection, None)
    finally:
        connection.close()
    assert report.ok, report.summary()
    assert report.audit_events_checked == 75
    assert report.status == "unsealed"


def test_concurrent_syncs_and_seals_keep_chains_heads_and_seals_consistent(empty_dsn):
    failures: list[BaseException] = []

    def sync(connection_name: str, seed: int) -> None:
        rng = random.Random(seed)
        connection = psycopg2.connect(empty_dsn)
        try:
            for round_number in range(4):
                with connection, connection.cursor() as cursor:
                    lock_partition(cursor, "spend_records", connection_name, DAYS[0])
                    rows = _spend_rows(rng, connection_name, DAYS[0], ["V-1"], ["M-1"])
                    for row in rows:
                        row["record_key"] += f"#{round_number}"
                    _write_partition(
                        cursor, "spend_records", connection_name, DAYS[0], rows, str(uuid.uuid4())
                    )
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)
        finally:
            connection.close()

    def seal_repeatedly() -> None:
        connection = psycopg2.connect(empty_dsn)
        try:
            for _ in range(4):
                with connection, connection.cursor() as cursor:
                    seal_heads(cursor, KEY)
        except BaseException as error:  # noqa: BLE001
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=sync, args=(name, n)) for n, name in enumerate(CONNECTIONS)]
    threads.append(threading.Thread(target=seal_repeatedly))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []

    connection = psycopg2.connect(empty_dsn)
    try:
        with connection, connection.cursor() as cursor:
            seal_heads(cursor, KEY)
        report = verify_database(connection, KEY)
    finally:
        connection.close()
    assert report.ok, report.summary()
    assert report.status == "sealed" and report.seals_checked == 5


# -- running without a key ------------------------------------------------------------------


def test_sealing_without_a_key_warns_and_carries_on(conn, caplog):
    with conn.cursor() as cursor:
        seal = seal_heads(cursor, seal_key_from_env({}))
        assert not seal.sealed and "ERP_CONNECTOR_SEAL_KEY" in seal.reason
        cursor.execute(
            "SELECT details->>'reason' FROM erp_connector_service.audit_events"
            " ORDER BY id DESC LIMIT 1"
        )
        assert "not set" in cursor.fetchone()[0]
    assert "not sealed" in caplog.text
    report = verify_database(conn, None)
    assert report.ok and report.status == "unsealed"
    assert any("no seal key" in warning for warning in report.warnings)


def test_short_key_is_refused_without_echoing_it(conn):
    with conn.cursor() as cursor, pytest.raises(ValueError) as refused:
        seal_heads(cursor, b"short-secret")
    assert "short-secret" not in str(refused.value)
    assert seal_key_from_env({"ERP_CONNECTOR_SEAL_KEY": "k" * 32}) == b"k" * 32


# -- audit bundles --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(store_dsn, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    connection = psycopg2.connect(store_dsn)
    try:
        folder = export_bundle(connection, root / "bundle")
        archive = export_bundle(connection, root / "bundle.tar.gz")
    finally:
        connection.close()
    return {"folder": folder, "archive": archive}


@pytest.mark.parametrize("kind", ["folder", "archive"])
def test_exported_bundle_verifies_clean_without_a_database(bundles, kind):
    report = verify_bundle(bundles[kind], KEY)
    assert report.ok, report.summary()
    assert report.status == "sealed"
    assert report.partitions_checked == len(CONNECTIONS) * (2 + 5 * len(DAYS))


def test_bundle_holds_rate_and_factor_provenance(bundles):
    manifest = json.loads((bundles["folder"] / "manifest.json").read_text())
    assert "fx_provider" in manifest["emission_provenance_columns"]
    first = json.loads(
        (bundles["folder"] / "records" / "emission_calculations.jsonl").read_text().split("\n")[0]
    )
    assert {"fx_rate", "fx_rate_date", "fx_provider", "factor_set", "factor_version",
            "factor_value", "spend_record_hash"} <= set(first)  # fmt: skip
    assert isinstance(first["fx_rate"], str)  # money stays a decimal string


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_tampered_bundle_line_is_named(bundles, tmp_path, seed):
    rng = random.Random(seed)
    copy = tmp_path / "copy"
    _copy_tree(bundles["folder"], copy)
    table = rng.choice(CHAINED)
    records = copy / "records" / f"{table}.jsonl"
    lines = records.read_text(encoding="utf-8").splitlines()
    index = rng.randrange(len(lines))
    row = json.loads(lines[index])
    column = rng.choice(
        [c for c in HASHED_COLUMNS[table] if c not in KEY_COLUMNS and isinstance(row[c], str)]
    )
    row[column] = row[column] + "1"
    lines[index] = json.dumps(row, ensure_ascii=False)
    records.write_text("\n".join(lines) + "\n", encoding="utf-8")

    report = verify_bundle(copy, KEY)
    edited = _named(report, ProblemReason.RECORD_EDITED, row["record_key"])
    assert [(p.table, p.connection, p.partition_date.isoformat()) for p in edited] == [
        (table, row["connection"], row[PARTITION_COLUMNS[table]])
    ]
    assert _named(report, ProblemReason.BUNDLE_FILE_CHANGED, f"records/{table}.jsonl")


def test_line_removed_from_bundle_is_named(bundles, tmp_path):
    copy = tmp_path / "copy"
    _copy_tree(bundles["folder"], copy)
    records = copy / "records" / "purchase_orders.jsonl"
    lines = records.read_text(encoding="utf-8").splitlines()
    successor = json.loads(lines[3])
    del lines[2]
    records.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = verify_bundle(copy, KEY)
    assert _named(report, ProblemReason.RECORDS_DELETED, successor["record_key"])


def test_audit_line_edited_in_bundle_is_named(bundles, tmp_path):
    copy = tmp_path / "copy"
    _copy_tree(bundles["folder"], copy)
    audit = copy / "audit_events.jsonl"
    lines = audit.read_text(encoding="utf-8").splitlines()
    event = json.loads(lines[10])
    event["details"]["forged"] = True
    lines[10] = json.dumps(event)
    audit.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = verify_bundle(copy, KEY)
    assert _named(report, ProblemReason.AUDIT_EVENT_EDITED, str(event["id"]))


def _copy_tree(source: Path, target: Path) -> None:
    for path in source.rglob("*"):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(path.read_bytes())


# -- lineage --------------------------------------------------------------------------------


def test_emission_lineage_leads_back_to_spend_sync_rate_and_factor(conn):
    connection, day = CONNECTIONS[1], DAYS[2]
    with conn.cursor() as cursor:
        spend = _rows(cursor, "spend_records", connection, day)[4]
        lineage = emission_lineage(cursor, connection, day, spend["record_key"])

    assert lineage["emission"]["factor_version"] == "2.0.1"
    assert lineage["emission"]["is_current"] is True
    assert lineage["spend_record_hash"] == spend["record_hash"]
    assert lineage["spend_record_is_current"] is True
    assert lineage["spend_record"]["hash_verified"] is True
    assert lineage["spend_record"]["chain_position"] == 4
    assert lineage["rate"]["fx_provider"] == "ecb"
    assert lineage["factor"] == {
        "set": "useeio", "version": "2.0.1", "code": "541511",
        "value": Decimal("0.12345678"), "unit": "kgCO2e/USD",
    }  # fmt: skip
    assert lineage["sync"]["job"]["status"] == "succeeded"
    event_types = [event["event_type"] for event in lineage["sync"]["audit_events"]]
    assert "records_written" in event_types and "sync_started" in event_types


def test_lineage_view_follows_a_superseded_spend_version(conn):
    with conn.cursor() as cursor:
        resync = _resync_one_spend_record(cursor)
        cursor.execute(
            "SELECT spend_record_is_current, spend_version_superseded_at IS NOT NULL,"
            " spend_audit_event_type FROM erp_connector_service.emission_lineage"
            " WHERE connection = %s AND transaction_date = %s AND record_key = %s AND is_current",
            (CONNECTIONS[1], DAYS[2], resync["row"]["record_key"]),
        )
        assert cursor.fetchone() == (False, True, "records_written")
        lineage = emission_lineage(cursor, CONNECTIONS[1], DAYS[2], resync["row"]["record_key"])
        assert lineage["sync"]["sync_id"] == resync["sync_id"]
        with pytest.raises(LookupError):
            emission_lineage(cursor, CONNECTIONS[1], DAYS[2], "no-such-key")
    report = verify_database(conn, KEY)
    assert report.ok and not any("spend_record_hash" in w for w in report.warnings)
