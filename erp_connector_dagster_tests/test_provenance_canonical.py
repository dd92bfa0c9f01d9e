"""Canonical form and record hashes: stable across platforms, types and a PostgreSQL round trip."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from decimal import Decimal

import pytest

from erp_connector_dagster.provenance.canonical import (
    LEAF_PREFIX,
    canonical_bytes,
    record_hash,
    record_hashes,
    stored_form,
)
from erp_connector_dagster.provenance.chain import chain_hashes, genesis_digest
from erp_connector_dagster.provenance.tables import HASHED_COLUMNS
from erp_connector_dagster.records import RecordStatus, SpendDocumentType, SpendRecord

UTC = dt.timezone.utc
BERLIN_SUMMER = dt.timezone(dt.timedelta(hours=2))


def spend_record(**changes) -> dict:
    record = {
        "connection": "acme-sap",
        "transaction_date": dt.date(2024, 3, 1),
        "record_key": "V-100/5100000123/1",
        "document_id": "5100000123",
        "line_number": 1,
        "document_type": SpendDocumentType.INVOICE,
        "vendor_id": "V-100",
        "material_id": None,
        "gl_account": "610000",
        "description": "Büromaterial – Lieferung März",
        "amount": Decimal("1234.50"),
        "currency": "EUR",
        "quantity": Decimal("3"),
        "unit": "EA",
        "is_capex": False,
        "purchase_order_id": "4500000017",
        "status": RecordStatus.ACTIVE,
        "updated_at": dt.datetime(2024, 3, 1, 9, 30, 15, 250000, tzinfo=UTC),
        "source_id": "SUPINV-5100000123-2024",
        "source_deleted": False,
    }
    record.update(changes)
    return record


def test_canonical_bytes_sort_keys_without_whitespace_in_utf8():
    assert canonical_bytes({"b": 1, "a": "é", "c": [True, None]}) == (
        b'{"a":"\xc3\xa9","b":1,"c":[true,null]}'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1.10"), "1.1"),
        (Decimal("12.3400"), "12.34"),
        (Decimal("100"), "100"),
        (Decimal("1E+2"), "100"),
        (Decimal("1.000E+3"), "1000"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("0.0000"), "0"),
        (Decimal("-0.00"), "0"),
        (Decimal("-42.500"), "-42.5"),
        (Decimal("123456789012345678.1234"), "123456789012345678.1234"),
        (0.1, "0.1"),
        (1e20, "100000000000000000000"),
    ],
)
def test_numbers_are_plain_decimal_strings_without_trailing_zeros(value, text):
    assert json.loads(canonical_bytes({"amount": value})) == {"amount": text}


def test_decimal_scale_does_not_change_the_hash():
    assert record_hash({"amount": Decimal("1.10")}) == record_hash({"amount": Decimal("1.1")})
    assert record_hash(spend_record(amount=Decimal("1234.5000"))) == record_hash(spend_record())
    assert record_hash({"amount": Decimal("1.1")}) != record_hash({"amount": Decimal("1.01")})


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), float("nan")])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ValueError, match="non-finite"):
        canonical_bytes({"amount": value})


def test_datetimes_render_in_utc_with_microseconds():
    moment = dt.datetime(2024, 3, 1, 11, 30, 15, tzinfo=BERLIN_SUMMER)
    assert json.loads(canonical_bytes({"at": moment})) == {"at": "2024-03-01T09:30:15.000000Z"}


def test_same_instant_in_another_time_zone_hashes_the_same():
    in_utc = spend_record()
    in_berlin = spend_record(updated_at=in_utc["updated_at"].astimezone(BERLIN_SUMMER))
    assert in_berlin["updated_at"].utcoffset() != in_utc["updated_at"].utcoffset()
    assert record_hash(in_berlin) == record_hash(in_utc)
    one_microsecond_later = in_utc["updated_at"] + dt.timedelta(microseconds=1)
    assert record_hash(spend_record(updated_at=one_microsecond_later)) != record_hash(in_utc)


def test_naive_datetime_is_rejected():
    with pytest.raises(ValueError, match="naive"):
        record_hash(spend_record(updated_at=dt.datetime(2024, 3, 1, 9, 30)))


def test_dates_enums_and_nested_values():
    rendered = json.loads(
        canonical_bytes(
            {
                "day": dt.date(2024, 2, 29),
                "early": dt.date(812, 1, 9),
                "status": RecordStatus.VOIDED,
                "nested": {"z": (1, 2), "a": {"kind": SpendDocumentType.CREDIT_NOTE}},
            }
        )
    )
    assert rendered == {
        "day": "2024-02-29",
        "early": "0812-01-09",
        "status": "voided",
        "nested": {"a": {"kind": "credit_note"}, "z": [1, 2]},
    }


def test_unsupported_values_and_keys_are_refused():
    with pytest.raises(TypeError):
        canonical_bytes({"at": dt.time(9, 30)})
    with pytest.raises(TypeError):
        canonical_bytes({"nested": {1: "one"}})
    with pytest.raises(ValueError, match="surrogate"):
        canonical_bytes({"text": "\udc80"})


GOLDEN_CANONICAL = (
    '{"amount":"1234.5","connection":"acme-sap","currency":"EUR",'
    '"description":"Büromaterial – Lieferung März","document_id":"5100000123",'
    '"document_type":"invoice","gl_account":"610000","is_capex":false,"line_number":1,'
    '"material_id":null,"purchase_order_id":"4500000017","quantity":"3",'
    '"record_key":"V-100/5100000123/1","source_deleted":false,"source_id":"SUPINV-5100000123-2024",'
    '"status":"active","transaction_date":"2024-03-01","unit":"EA",'
    '"updated_at":"2024-03-01T09:30:15.250000Z","vendor_id":"V-100"}'
)


def test_golden_canonical_text_and_hash_are_fixed_across_machines():
    # The digest was checked outside Python: printf '\x00<text>' | sha256sum.
    assert canonical_bytes(stored_form("spend_records", spend_record())) == (
        GOLDEN_CANONICAL.encode("utf-8")
    )
    assert record_hash(spend_record(), "spend_records") == (
        "6a6843b6e06db00eb55cb16af67f9241a73156c5275ab90a22390a94ded75faa"
    )


def test_hash_is_sha256_of_leaf_prefix_and_canonical_bytes():
    record = spend_record()
    expected = hashlib.sha256(LEAF_PREFIX + canonical_bytes(record)).hexdigest()
    assert record_hash(record) == expected


def test_canonical_form_is_a_fixpoint_of_parse_and_render():
    rendered = canonical_bytes(spend_record())
    assert canonical_bytes(json.loads(rendered)) == rendered
    parsed = json.loads(rendered)
    assert record_hash(parsed, "spend_records") == record_hash(spend_record(), "spend_records")


def test_with_table_only_hashed_columns_count():
    record = spend_record(
        sync_id="7f0c8ad4-5b8e-4c5e-9a53-0d2f5c7f1e11",
        synced_at=dt.datetime.now(UTC),
        chain_hash="ab" * 32,
        kind="spend",
    )
    assert record_hash(record, "spend_records") == record_hash(spend_record(), "spend_records")
    assert set(stored_form("spend_records", record)) == set(HASHED_COLUMNS["spend_records"])


def test_missing_hashed_column_is_an_error():
    record = spend_record()
    del record["source_deleted"]
    with pytest.raises(ValueError, match="source_deleted"):
        record_hash(record, "spend_records")
    with pytest.raises(ValueError, match="source_deleted"):
        record_hashes([record], "spend_records")
    with pytest.raises(ValueError, match="not a provenance table"):
        record_hash(record, "spend_record")


def test_numerics_are_hashed_at_the_column_scale_postgresql_keeps():
    # amount is numeric(20,4): PostgreSQL stores 1234.56789 as 1234.5679 (half away from 0).
    written = spend_record(amount=Decimal("1234.56789"), quantity=3)
    read_back = spend_record(amount=Decimal("1234.5679"), quantity=Decimal("3.000000"))
    assert record_hash(written, "spend_records") == record_hash(read_back, "spend_records")
    negative = spend_record(amount=Decimal("-0.00005"))
    assert stored_form("spend_records", negative)["amount"] == Decimal("-0.0001")


def test_batch_hashes_equal_single_hashes():
    rng = random.Random(3)
    records = [
        spend_record(
            record_key=f"DOC-{index}/1",
            amount=Decimal(rng.randint(-(10**6), 10**6)) / 100,
            quantity=None if index % 3 else Decimal(index) / 7,
            updated_at=None if index % 5 == 0 else dt.datetime(2024, 3, 1, tzinfo=BERLIN_SUMMER),
            status=RecordStatus.VOIDED if index % 4 == 0 else "active",
        )
        for index in range(300)
    ]
    assert record_hashes(records, "spend_records") == [
        record_hash(record, "spend_records") for record in records
    ]
    assert record_hashes(records) == [record_hash(record) for record in records]
    assert record_hashes([], "spend_records") == []


def _awkward_spend_record(rng: random.Random, index: int) -> dict:
    zones = [UTC, BERLIN_SUMMER, dt.timezone(dt.timedelta(hours=-9, minutes=-30))]
    return spend_record(
        record_key=rng.choice(["a\x00b", 'quote"d', "back\\slash", "tab\t", "ü", "\U0001f600"])
        + str(index),
        amount=rng.choice(
            [Decimal("-0.0000"), Decimal("1E+3"), Decimal("2.50000"), Decimal("0.00005"),
             Decimal("-1234.56785"), Decimal(rng.randint(-10**9, 10**9)).scaleb(-rng.randint(0, 7)),
             7, 2.675]
        ),
        quantity=rng.choice([None, Decimal("1e-6"), Decimal("3.0000005"), 0, 12]),
        line_number=rng.choice([1, 2**40]),
        updated_at=rng.choice(
            [None, dt.datetime(812, 1, 9, 0, 0, tzinfo=UTC),
             dt.datetime(2024, 3, 31, 1, 30, rng.randint(0, 59), rng.choice([0, 1, 999_999]),
                         tzinfo=rng.choice(zones))]
        ),
        status=rng.choice([RecordStatus.VOIDED, "active"]),
        document_type=rng.choice([SpendDocumentType.CREDIT_NOTE, "invoice"]),
        is_capex=rng.choice([True, False]),
        transaction_date=rng.choice([dt.date(2024, 2, 29), dt.date(999, 12, 31)]),
    )  # fmt: skip


def test_batch_hashes_are_exactly_those_of_the_canonical_bytes():
    rng = random.Random(29)
    records = [_awkward_spend_record(rng, index) for index in range(400)]
    assert record_hashes(records, "spend_records") == [
        hashlib.sha256(LEAF_PREFIX + canonical_bytes(stored_form("spend_records", r))).hexdigest()
        for r in records
    ]


def test_a_canonical_spend_record_model_hashes_like_its_stored_row():
    model = SpendRecord(
        connection="acme-sap",
        source_id="SUPINV-5100000123-2024",
        updated_at=dt.datetime(2024, 3, 1, 11, 30, 15, 250000, tzinfo=BERLIN_SUMMER),
        document_id="5100000123",
        line_number=1,
        document_type=SpendDocumentType.INVOICE,
        transaction_date=dt.date(2024, 3, 1),
        vendor_id="V-100",
        gl_account="610000",
        description="Büromaterial – Lieferung März",
        amount=Decimal("1234.5"),
        currency="EUR",
        quantity=Decimal("3"),
        unit="EA",
        purchase_order_id="4500000017",
    )
    row = model.model_dump() | {"record_key": model.natural_key, "source_deleted": False}
    assert record_hash(row, "spend_records") == record_hash(spend_record(), "spend_records")


def test_chain_links_depend_on_order_and_place():
    hashes = [record_hash({"n": index}) for index in range(4)]
    day = dt.date(2024, 3, 1)
    links = chain_hashes("spend_records", "acme-sap", day, hashes)
    assert len(set(links)) == 4
    assert links != chain_hashes("spend_records", "acme-sap", day, hashes[::-1])
    assert links != chain_hashes("spend_records", "acme-sap", dt.date(2024, 3, 2), hashes)
    assert links != chain_hashes("purchase_orders", "acme-sap", day, hashes)
    expected_first = hashlib.sha256(
        b"\x01" + genesis_digest("spend_records", "acme-sap", day) + bytes.fromhex(hashes[0])
    ).hexdigest()
    assert links[0] == expected_first
