"""Benchmark: what provenance (record hashes and partition chains) costs next to a whole sync.

Syncs several sandbox days of spend, purchase orders, their lines and inventory from the SAP
S/4HANA emulator over loopback HTTP into a throwaway database, timing the whole sync and,
inside it, the time spent hashing records and re-chaining partitions. The figure that matters
is the share, measured in the same run. Usage:

    python bench/bench_sync_provenance.py [--days 5]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections import defaultdict

import psycopg2

from erp_connector_dagster.erp import build_source
from erp_connector_dagster.erp.base import SyncWindow
from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.server import SandboxConnection, SandboxServer
from erp_connector_dagster.storage import writers
from erp_connector_dagster.storage.database import create_database, drop_database, server_url
from erp_connector_dagster.storage.schema import migrate

KINDS = (
    RecordKind.SPEND,
    RecordKind.PURCHASE_ORDER,
    RecordKind.PURCHASE_ORDER_LINE,
    RecordKind.INVENTORY,
)
spent: dict[str, float] = defaultdict(float)


def timed(name: str, function):
    """Wrap a function of the writer so its time is added to `spent[name]`."""

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - started

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5)
    args = parser.parse_args()
    writers.record_hashes = timed("hashing", writers.record_hashes)
    writers.rechain_partition = timed("chaining", writers.rechain_partition)

    server = server_url()
    name = f"erp_bench_{uuid.uuid4().hex[:8]}"
    url = create_database(server, name)
    company = SandboxCompany(seed=8)
    connection = SandboxConnection(name="bench-s4", erp_type="sap_s4hana", company=company)
    records = 0
    try:
        migrate(url)
        with SandboxServer([connection]) as sandbox:
            source = build_source(sandbox.connection_configs()[0])
            started = time.perf_counter()
            with psycopg2.connect(url) as conn, conn.cursor() as cursor:
                for day in company.business_days()[-args.days :]:
                    for kind in KINDS:
                        counts = writers.write_records(
                            cursor,
                            kind,
                            "bench-s4",
                            (
                                batch.records
                                for batch in source.fetch(kind, SyncWindow.for_day(day))
                            ),
                            sync_id=uuid.uuid4(),
                            partition_date=day,
                        )
                        records += counts.received
                    conn.commit()
            total = time.perf_counter() - started
        conn.close()
    finally:
        drop_database(server, name)

    provenance = spent["hashing"] + spent["chaining"]
    print(f"days: {args.days}  records: {records:,}")
    print(f"whole sync (HTTP, parse, COPY, merge, provenance): {total:.2f} s")
    print(f"  hashing records: {spent['hashing']:.2f} s")
    print(f"  re-chaining partitions: {spent['chaining']:.2f} s")
    print(f"provenance share of the sync: {provenance / total:.1%}")


if __name__ == "__main__":
    main()
