"""Benchmark: the partition writer (COPY + merge + chain) against plain execute_values inserts.

Both write the same synthetic spend lines into a throwaway database in the same run; the
figure that matters is the ratio, not the absolute time. Usage:

    python bench/bench_writer.py [--rows 20000]
"""

from __future__ import annotations

import argparse
import time
import uuid

import psycopg2
from psycopg2.extras import execute_values

from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.storage.database import create_database, drop_database, server_url
from erp_connector_dagster.storage.schema import migrate
from erp_connector_dagster.storage.writers import record_row, write_records


def synthetic_lines(rows: int) -> list:
    company = SandboxCompany(seed=5)
    day = company.business_days()[-1]
    base = company.records(RecordKind.SPEND, day)
    lines = []
    for copy in range(rows // len(base) + 1):
        for record in base:
            lines.append(
                record.model_copy(
                    update={
                        "connection": "bench",
                        "document_id": f"{record.document_id}-{copy}",
                    }
                )
            )
    return lines[:rows], day


def time_writer(url: str, lines, day) -> float:
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        started = time.perf_counter()
        batches = [lines[i : i + 1000] for i in range(0, len(lines), 1000)]
        write_records(
            cursor, RecordKind.SPEND, "bench", batches, sync_id=uuid.uuid4(), partition_date=day
        )
        conn.commit()
        return time.perf_counter() - started


def time_baseline(url: str, lines) -> float:
    rows = [record_row(record) for record in lines]
    columns = list(rows[0])
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE baseline AS SELECT * FROM erp_connector_service.spend_records"
            " WITH NO DATA"
        )
        started = time.perf_counter()
        execute_values(
            cursor,
            f"INSERT INTO baseline ({', '.join(columns)}, record_hash) VALUES %s",
            [[row[c] for c in columns] + ["x"] for row in rows],
            page_size=1000,
        )
        conn.commit()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args()
    server = server_url()
    name = f"erp_bench_{uuid.uuid4().hex[:8]}"
    url = create_database(server, name)
    try:
        migrate(url)
        lines, day = synthetic_lines(args.rows)
        baseline = time_baseline(url, lines)
        writer = time_writer(url, lines, day)
        print(f"rows: {len(lines)}  day: {day}")
        print(f"execute_values baseline: {baseline:.2f} s ({len(lines) / baseline:,.0f} rows/s)")
        print(
            f"writer (COPY, merge, hash, chain): {writer:.2f} s ({len(lines) / writer:,.0f} rows/s)"
        )
        print(f"ratio writer/baseline: {writer / baseline:.2f}")
    finally:
        drop_database(server, name)


if __name__ == "__main__":
    main()
