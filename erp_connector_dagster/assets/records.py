"""Synced ERP records as assets: spend, purchase orders and lines, inventory, master data.

Day-partitioned assets read their partition's days from every configured connection; master
data (vendors, materials) is not partitioned. Asset factories take the resource keys of the
configured connections, because connections are configuration, not code.
"""

import datetime as dt
from collections.abc import Sequence

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from erp_connector_dagster.assets.sync import SyncOutcome, selected_sources, sync_kind
from erp_connector_dagster.partitions import backfill_policy, daily_partitions
from erp_connector_dagster.records import RecordKind

SYNC_GROUP = "erp_sync"


def partition_days(context: AssetExecutionContext) -> list[dt.date]:
    """Every day of the run's partition range (one day, or a backfill's batch of days)."""
    window = context.partition_time_window
    days = []
    day = window.start.date()
    while day < window.end.date():
        days.append(day)
        day += dt.timedelta(days=1)
    return days


def _merge(outcomes: Sequence[SyncOutcome]) -> dict[str, object]:
    if len(outcomes) == 1:
        return outcomes[0].metadata()
    return {
        "dagster/row_count": sum(outcome.row_count for outcome in outcomes),
        "days": len(outcomes),
        "quarantined": sum(
            count.quarantined for outcome in outcomes for count in outcome.counts.values()
        ),
    }


def _day_partitioned_asset(
    name: str, kind: RecordKind, description: str, erp_keys: Sequence[str], deps=()
) -> AssetsDefinition:
    @asset(
        name=name,
        description=description,
        partitions_def=daily_partitions,
        backfill_policy=backfill_policy,
        required_resource_keys={"database", *erp_keys},
        group_name=SYNC_GROUP,
        deps=list(deps),
        kinds={"postgres"},
    )
    def _sync(context: AssetExecutionContext) -> MaterializeResult:
        sources = selected_sources(context, erp_keys)
        outcomes, failed_days = [], []
        # A failed day does not stop the range: every day gets its sync job, and the
        # materialization fails at the end naming the days that failed.
        for day in partition_days(context):
            try:
                outcomes.append(sync_kind(context, kind, sources, context.resources.database, day))
            except Failure as failure:
                failed_days.append(day.isoformat())
                context.log.error(f"{name} for {day} failed: {failure.description}")
        if failed_days:
            raise Failure(
                description=f"{name} failed for {len(failed_days)} day(s): {failed_days[:10]}",
                metadata={"failed_days": MetadataValue.json(failed_days)},
            )
        return MaterializeResult(metadata=_merge(outcomes))

    return _sync


def _master_data_asset(
    name: str, kind: RecordKind, description: str, erp_keys: Sequence[str]
) -> AssetsDefinition:
    @asset(
        name=name,
        description=description,
        required_resource_keys={"database", *erp_keys},
        group_name=SYNC_GROUP,
        kinds={"postgres"},
    )
    def _sync(context: AssetExecutionContext) -> MaterializeResult:
        sources = selected_sources(context, erp_keys)
        outcome = sync_kind(context, kind, sources, context.resources.database, None)
        return MaterializeResult(metadata=outcome.metadata())

    return _sync


def build_record_assets(erp_keys: Sequence[str]) -> list[AssetsDefinition]:
    """The sync assets for the given ERP resource keys."""
    return [
        _master_data_asset(
            "vendor_master",
            RecordKind.VENDOR,
            "Suppliers from every ERP's vendor master.",
            erp_keys,
        ),
        _master_data_asset(
            "material_master",
            RecordKind.MATERIAL,
            "Items and materials from every ERP's material master.",
            erp_keys,
        ),
        _day_partitioned_asset(
            "spend_records",
            RecordKind.SPEND,
            "Supplier invoice, credit note and card charge lines by transaction date.",
            erp_keys,
        ),
        _day_partitioned_asset(
            "purchase_orders",
            RecordKind.PURCHASE_ORDER,
            "Purchase order headers by order date.",
            erp_keys,
        ),
        _day_partitioned_asset(
            "purchase_order_lines",
            RecordKind.PURCHASE_ORDER_LINE,
            "Purchase order lines by their order's date.",
            erp_keys,
            deps=["purchase_orders"],
        ),
        _day_partitioned_asset(
            "inventory_snapshots",
            RecordKind.INVENTORY,
            "Quantity on hand per material and location, one snapshot per day.",
            erp_keys,
        ),
    ]
