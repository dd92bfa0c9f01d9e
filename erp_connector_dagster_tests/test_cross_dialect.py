"""One truth through every dialect: the same company served by every emulator at once must
come back from every ERP source as the same canonical records (apart from source ids)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from erp_connector_dagster.erp import build_source
from erp_connector_dagster.erp.base import ErpSource, SyncWindow
from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.sandbox.company import SandboxCompany
from erp_connector_dagster.sandbox.server import (
    SandboxConnection,
    SandboxServer,
    available_erp_types,
)

ERP_TYPES = available_erp_types()
pytestmark = pytest.mark.skipif(len(ERP_TYPES) < 2, reason="fewer than two dialects built")


@pytest.fixture(scope="module")
def sources(database_url: str) -> Iterator[tuple[SandboxCompany, dict[str, ErpSource]]]:
    company = SandboxCompany(seed=31337)
    connections = [
        SandboxConnection(
            name=f"x-{erp_type.replace('_', '-')}", erp_type=erp_type, company=company
        )
        for erp_type in ERP_TYPES
    ]
    with SandboxServer(connections, database_url=database_url) as server:
        yield (
            company,
            {config.erp_type: build_source(config) for config in server.connection_configs()},
        )


def _comparable(records, unmapped: frozenset[str]) -> list[str]:
    # Decimals are compared by value: 2812 and 2812.0 are the same quantity.
    excluded = {"connection", "source_id", "updated_at", *unmapped}
    return sorted(
        repr(
            sorted(
                (field, value.normalize() if isinstance(value, Decimal) else value)
                for field, value in r.model_dump(exclude=excluded).items()
            )
        )
        for r in records
    )


def _unmapped(source: ErpSource, kind: RecordKind) -> frozenset[str]:
    return getattr(source, "unmapped_fields", {}).get(kind, frozenset())


@pytest.mark.parametrize(
    "kind",
    [
        RecordKind.SPEND,
        RecordKind.PURCHASE_ORDER,
        RecordKind.PURCHASE_ORDER_LINE,
        RecordKind.INVENTORY,
        RecordKind.VENDOR,
        RecordKind.MATERIAL,
    ],
    ids=lambda kind: kind.value,
)
def test_every_dialect_yields_the_same_records(sources, kind: RecordKind) -> None:
    company, by_type = sources
    day = company.business_days()[-4]
    window = (
        SyncWindow()
        if kind in (RecordKind.VENDOR, RecordKind.MATERIAL)
        else (SyncWindow.for_day(day))
    )
    offering = {t: s for t, s in by_type.items() if kind in s.supported_kinds}
    # Fields that any dialect cannot carry are left out of the comparison for all of them.
    unmapped = frozenset().union(*(_unmapped(source, kind) for source in offering.values()))
    readings = {
        erp_type: _comparable(
            (record for batch in source.fetch(kind, window) for record in batch.records),
            unmapped,
        )
        for erp_type, source in offering.items()
    }

    assert len(readings) >= 2
    reference_type, reference = next(iter(readings.items()))
    assert reference, f"{reference_type} returned no {kind.value}"
    for erp_type, reading in readings.items():
        assert reading == reference, f"{erp_type} differs from {reference_type}"
