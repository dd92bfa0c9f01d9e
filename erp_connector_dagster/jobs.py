"""Asset jobs an operator or a sensor launches: one sync job per mode, mappings, master data.

A sync job covers the day-partitioned record assets and the mapping and emission assets that
derive from them, so one run brings a day from the ERP all the way to kgCO2e. The mode is a run
tag the sync assets read; each job carries its own, so picking the job picks the mode.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import AssetKey, AssetSelection, define_asset_job

# Not exported at the top level of dagster 1.13; only used for type hints.
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from erp_connector_dagster.assets.sync import MODE_TAG
from erp_connector_dagster.partitions import daily_partitions
from erp_connector_dagster.records import RecordKind
from erp_connector_dagster.storage.sync_jobs import SyncMode

# Asset names as the asset factories define them.
SYNCED_ASSET_BY_KIND: dict[RecordKind, str] = {
    RecordKind.SPEND: "spend_records",
    RecordKind.PURCHASE_ORDER: "purchase_orders",
    RecordKind.PURCHASE_ORDER_LINE: "purchase_order_lines",
    RecordKind.INVENTORY: "inventory_snapshots",
    RecordKind.VENDOR: "vendor_master",
    RecordKind.MATERIAL: "material_master",
}
DAY_KINDS: tuple[RecordKind, ...] = (
    RecordKind.SPEND,
    RecordKind.PURCHASE_ORDER,
    RecordKind.PURCHASE_ORDER_LINE,
    RecordKind.INVENTORY,
)
DAY_SYNC_ASSETS: tuple[str, ...] = tuple(SYNCED_ASSET_BY_KIND[kind] for kind in DAY_KINDS)
MASTER_DATA_ASSETS: tuple[str, ...] = ("vendor_master", "material_master")
MAPPING_ASSETS: tuple[str, ...] = ("vendor_mappings", "material_mappings", "scope3_emissions")
DAY_ASSETS: tuple[str, ...] = (*DAY_SYNC_ASSETS, *MAPPING_ASSETS)

MAPPING_REFRESH_JOB = "scope3_mapping_refresh"
MASTER_DATA_JOB = "erp_master_data_sync"


def sync_job_name(mode: SyncMode | str) -> str:
    """The name of the sync job for one mode, e.g. `erp_sync_incremental`."""
    return f"erp_sync_{SyncMode(mode).value}"


def kinds_of_assets(asset_names: Sequence[str]) -> list[RecordKind]:
    """The record kinds whose sync assets are among `asset_names`."""
    return [kind for kind, name in SYNCED_ASSET_BY_KIND.items() if name in asset_names]


def _keys(names: Sequence[str]) -> AssetSelection:
    return AssetSelection.assets(*(AssetKey(name) for name in names))


def build_sync_job(mode: SyncMode) -> UnresolvedAssetJobDefinition:
    """Day partitions from the ERP to kgCO2e, reading the ERP in the given mode."""
    return define_asset_job(
        name=sync_job_name(mode),
        selection=_keys(DAY_ASSETS),
        partitions_def=daily_partitions,
        tags={MODE_TAG: mode.value},
        description=(
            f"Sync day partitions in {mode.value} mode, then refresh their mappings and "
            "Scope 3 emissions."
        ),
    )


def build_jobs() -> list[UnresolvedAssetJobDefinition]:
    """Every job of the project: one sync job per mode, mapping refresh, master data."""
    return [
        *(build_sync_job(mode) for mode in SyncMode),
        define_asset_job(
            name=MAPPING_REFRESH_JOB,
            selection=_keys(MAPPING_ASSETS),
            partitions_def=daily_partitions,
            description="Recompute vendor and material mappings and Scope 3 emissions.",
        ),
        define_asset_job(
            name=MASTER_DATA_JOB,
            selection=_keys(MASTER_DATA_ASSETS),
            tags={MODE_TAG: SyncMode.FULL.value},
            description="Re-read vendor and material master data from every connection.",
        ),
    ]
