"""Which stored tables carry provenance, and how each one is hashed, partitioned and chained.

These facts mirror migration 0001: the hashed columns are a table's business columns (the
canonical record plus connection, partition date, record_key, status and source_deleted);
bookkeeping written by the pipeline itself (sync_id, synced_at, calculated_at, the hash and
chain columns) is left out, so re-writing identical business data yields identical hashes.
"""

from __future__ import annotations

SCHEMA = "erp_connector_service"

# Columns the pipeline fills for its own bookkeeping; never part of a record hash.
BOOKKEEPING_COLUMNS: frozenset[str] = frozenset(
    {"record_hash", "chain_position", "chain_hash", "sync_id", "synced_at", "calculated_at"}
)

HASHED_COLUMNS: dict[str, tuple[str, ...]] = {
    "vendors": (
        "connection", "record_key", "vendor_id", "name", "country", "industry_code", "tax_id",
        "currency", "status", "updated_at", "source_id",
    ),
    "materials": (
        "connection", "record_key", "material_id", "description", "material_group",
        "base_unit", "commodity_code", "status", "updated_at", "source_id",
    ),
    "spend_records": (
        "connection", "transaction_date", "record_key", "document_id", "line_number",
        "document_type", "vendor_id", "material_id", "gl_account", "description", "amount",
        "currency", "quantity", "unit", "is_capex", "purchase_order_id", "status", "updated_at",
        "source_id", "source_deleted",
    ),
    "purchase_orders": (
        "connection", "order_date", "record_key", "purchase_order_id", "vendor_id", "currency",
        "total_amount", "order_status", "status", "updated_at", "source_id", "source_deleted",
    ),
    "purchase_order_lines": (
        "connection", "order_date", "record_key", "purchase_order_id", "line_number",
        "material_id", "description", "quantity", "unit", "unit_price", "amount", "currency",
        "gl_account", "delivery_date", "status", "updated_at", "source_id", "source_deleted",
    ),
    "inventory_snapshots": (
        "connection", "snapshot_date", "record_key", "material_id", "location", "quantity",
        "unit", "unit_cost", "value", "currency", "status", "updated_at", "source_id",
        "source_deleted",
    ),
    # is_current is hashed: flipping it silently would change what the emission_lines view
    # reports, so a restatement re-hashes the rows it retires and rechains their partition.
    "emission_calculations": (
        "connection", "transaction_date", "record_key", "vendor_id", "material_id",
        "scope3_category", "excluded_reason", "method", "amount", "currency", "fx_rate",
        "fx_rate_date", "fx_provider", "amount_usd", "price_index_ratio", "price_index_rule",
        "factor_set", "factor_version", "factor_code", "factor_value", "factor_unit",
        "quantity", "unit", "kgco2e", "data_quality_score", "mapping_rule", "is_current",
        "spend_record_hash",
    ),
}  # fmt: skip

# The day column of each table; None for master data, which forms one chain per connection.
PARTITION_COLUMNS: dict[str, str | None] = {
    "vendors": None,
    "materials": None,
    "spend_records": "transaction_date",
    "purchase_orders": "order_date",
    "purchase_order_lines": "order_date",
    "inventory_snapshots": "snapshot_date",
    "emission_calculations": "transaction_date",
}

# Order of records inside a chain: these columns ascending, compared as bytes (COLLATE "C").
CHAIN_ORDER_COLUMNS: dict[str, tuple[str, ...]] = {
    table: ("record_key", "factor_version") if table == "emission_calculations" else ("record_key",)
    for table in HASHED_COLUMNS
}

# Tables whose rows store chain_position/chain_hash; master data keeps only its head.
CHAINED_TABLES: frozenset[str] = frozenset(
    table for table, column in PARTITION_COLUMNS.items() if column is not None
)

# The `kind` written on audit events about a table.
TABLE_KINDS: dict[str, str] = {
    "vendors": "vendor",
    "materials": "material",
    "spend_records": "spend",
    "purchase_orders": "purchase_order",
    "purchase_order_lines": "purchase_order_line",
    "inventory_snapshots": "inventory",
    "emission_calculations": "emission",
}

# Scale of every numeric column: PostgreSQL rounds to it on insert, so hashes are taken of
# the rounded value, the one that will be read back.
NUMERIC_SCALES: dict[str, dict[str, int]] = {
    "vendors": {},
    "materials": {},
    "spend_records": {"amount": 4, "quantity": 6},
    "purchase_orders": {"total_amount": 4},
    "purchase_order_lines": {"quantity": 6, "unit_price": 6, "amount": 4},
    "inventory_snapshots": {"quantity": 6, "unit_cost": 6, "value": 4},
    "emission_calculations": {
        "amount": 4,
        "fx_rate": 10,
        "amount_usd": 4,
        "price_index_ratio": 10,
        "factor_value": 8,
        "quantity": 6,
        "kgco2e": 6,
    },
}


def check_table(table: str) -> str:
    """Return `table` if it carries provenance, else raise: table names reach SQL text."""
    if table not in HASHED_COLUMNS:
        raise ValueError(f"not a provenance table: {table!r}")
    return table
