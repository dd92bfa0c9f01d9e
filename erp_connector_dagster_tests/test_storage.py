"""The COPY writer on real PostgreSQL: idempotent partitions, kept versions, soft deletes."""

from __future__ import annotations

import uuid

import pytest

from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.storage.writers import write_records

DAY = SandboxCompany(seed=99).business_days()[-5]


@pytest.fixture
def company() -> SandboxCompany:
    return SandboxCompany(seed=99)


def _as_connection(records, name="store-test"):
    assert records, "the sandbox company has spend on the test day"
    return [record.model_copy(update={"connection": name}) for record in records]


def _rows(cursor, connection="store-test"):
    cursor.execute(
        "SELECT record_key, record_hash, chain_hash, source_deleted, sync_id"
        " FROM erp_connector_service.spend_records WHERE connection = %s"
        " AND transaction_date = %s ORDER BY record_key",
        (connection, DAY),
    )
    return cursor.fetchall()


def _write(cursor, records, **kwargs):
    return write_records(
        cursor,
        RecordKind.SPEND,
        "store-test",
        [records[:7], records[7:]],
        sync_id=uuid.uuid4(),
        partition_date=DAY,
        **kwargs,
    )


def test_writing_a_partition_twice_changes_nothing(db_connection, company) -> None:
    records = _as_connection(company.records(RecordKind.SPEND, DAY))
    with db_connection.cursor() as cursor:
        first = _write(cursor, records)
        before = _rows(cursor)
        second = _write(cursor, records)
        after = _rows(cursor)

    assert first.inserted == len(records) and first.updated == 0
    assert second.inserted == second.updated == second.marked_deleted == 0
    assert second.unchanged == len(records)
    assert before == after
    assert first.chain_head == second.chain_head


def test_a_changed_record_keeps_its_previous_version(db_connection, company) -> None:
    records = _as_connection(company.records(RecordKind.SPEND, DAY))
    changed = records[0].model_copy(update={"description": "re-keyed by accounts payable"})
    with db_connection.cursor() as cursor:
        _write(cursor, records)
        counts = _write(cursor, [changed, *records[1:]])
        cursor.execute(
            "SELECT record->>'description' FROM erp_connector_service.record_versions"
            " WHERE connection = 'store-test' AND record_key = %s",
            (changed.natural_key,),
        )
        versions = [row[0] for row in cursor.fetchall()]

    assert counts.updated == 1
    assert versions == [records[0].description]


def test_a_record_gone_from_a_full_read_is_marked_not_removed(db_connection, company) -> None:
    records = _as_connection(company.records(RecordKind.SPEND, DAY))
    with db_connection.cursor() as cursor:
        _write(cursor, records)
        counts = _write(cursor, records[1:])
        rows = {key: deleted for key, _, _, deleted, _ in _rows(cursor)}
        incremental = _write(cursor, records[2:], full_read=False)

    assert counts.marked_deleted == 1
    assert rows[records[0].natural_key] is True
    assert len(rows) == len(records)
    assert incremental.marked_deleted == 0


def test_duplicates_met_while_paging_are_stored_once(db_connection, company) -> None:
    records = _as_connection(company.records(RecordKind.SPEND, DAY))
    with db_connection.cursor() as cursor:
        counts = write_records(
            cursor,
            RecordKind.SPEND,
            "store-test",
            [records, records[:5]],
            sync_id=uuid.uuid4(),
            partition_date=DAY,
        )

    assert counts.received == len(records)


def test_an_incomplete_read_marks_nothing_deleted(db_connection, company) -> None:
    records = _as_connection(company.records(RecordKind.SPEND, DAY))
    read_was_whole = []
    with db_connection.cursor() as cursor:
        _write(cursor, records)
        counts = _write(cursor, records[3:], full_read=lambda: bool(read_was_whole))
        rows = {key: deleted for key, _, _, deleted, _ in _rows(cursor)}

    assert counts.marked_deleted == 0
    assert not any(rows.values())


def test_two_suppliers_with_the_same_invoice_number_are_two_records(db_connection, company) -> None:
    # Most ERPs store the supplier's own invoice number, unique per supplier only.
    first = _as_connection(company.records(RecordKind.SPEND, DAY))[0]
    other_vendor = next(v.vendor_id for v in company.vendors() if v.vendor_id != first.vendor_id)
    same_number = first.model_copy(
        update={"vendor_id": other_vendor, "source_id": f"{first.source_id}-other"}
    )
    with db_connection.cursor() as cursor:
        counts = _write(cursor, [first, same_number])
        cursor.execute(
            "SELECT vendor_id FROM erp_connector_service.spend_records"
            " WHERE connection = 'store-test' AND document_id = %s AND line_number = %s",
            (first.document_id, first.line_number),
        )
        vendors = sorted(row[0] for row in cursor.fetchall())

    assert counts.inserted == 2
    assert vendors == sorted([first.vendor_id, other_vendor])
