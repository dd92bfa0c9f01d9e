"""Day partitions shared by every day-partitioned asset (transaction, order or snapshot date)."""

from __future__ import annotations

import os

from dagster import BackfillPolicy, DailyPartitionsDefinition

PARTITION_START_ENV = "ERP_CONNECTOR_PARTITION_START"
DEFAULT_PARTITION_START = "2024-11-01"

daily_partitions = DailyPartitionsDefinition(
    start_date=os.environ.get(PARTITION_START_ENV, DEFAULT_PARTITION_START),
    timezone="UTC",
)

# A backfill of a long range runs in a few runs of at most a month each, not one run a day.
backfill_policy = BackfillPolicy.multi_run(max_partitions_per_run=31)
