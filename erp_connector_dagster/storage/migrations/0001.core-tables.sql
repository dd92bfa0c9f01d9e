-- Core tables: connections, synced records with their provenance columns, quarantine,
-- sync jobs and cursors, mappings and emission calculations.

CREATE TABLE erp_connector_service.connections (
    name            text PRIMARY KEY,
    erp_type        text NOT NULL,
    base_url        text NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_checked_at timestamptz,
    healthy         boolean,
    latency_ms      double precision,
    last_error      text
);

-- Master data: not partitioned by day, upserted by natural key.
CREATE TABLE erp_connector_service.vendors (
    connection      text NOT NULL,
    record_key      text NOT NULL,
    vendor_id       text NOT NULL,
    name            text NOT NULL,
    country         text,
    industry_code   text,
    tax_id          text,
    currency        text,
    status          text NOT NULL,
    updated_at      timestamptz,
    source_id       text NOT NULL,
    record_hash     text NOT NULL,
    sync_id         uuid,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, record_key)
);

CREATE TABLE erp_connector_service.materials (
    connection      text NOT NULL,
    record_key      text NOT NULL,
    material_id     text NOT NULL,
    description     text NOT NULL,
    material_group  text,
    base_unit       text,
    commodity_code  text,
    status          text NOT NULL,
    updated_at      timestamptz,
    source_id       text NOT NULL,
    record_hash     text NOT NULL,
    sync_id         uuid,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, record_key)
);

-- Day-partitioned records. chain_position/chain_hash link the records of one
-- (connection, day) in record_key order; source_deleted marks rows the ERP no longer
-- returns (kept, never removed).
CREATE TABLE erp_connector_service.spend_records (
    connection        text NOT NULL,
    transaction_date  date NOT NULL,
    record_key        text NOT NULL,
    document_id       text NOT NULL,
    line_number       integer NOT NULL,
    document_type     text NOT NULL,
    vendor_id         text,
    material_id       text,
    gl_account        text,
    description       text,
    amount            numeric(20, 4) NOT NULL,
    currency          char(3) NOT NULL,
    quantity          numeric(20, 6),
    unit              text,
    is_capex          boolean NOT NULL DEFAULT false,
    purchase_order_id text,
    status            text NOT NULL,
    updated_at        timestamptz,
    source_id         text NOT NULL,
    source_deleted    boolean NOT NULL DEFAULT false,
    record_hash       text NOT NULL,
    chain_position    integer,
    chain_hash        text,
    sync_id           uuid,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, transaction_date, record_key)
);

CREATE TABLE erp_connector_service.purchase_orders (
    connection        text NOT NULL,
    order_date        date NOT NULL,
    record_key        text NOT NULL,
    purchase_order_id text NOT NULL,
    vendor_id         text,
    currency          char(3) NOT NULL,
    total_amount      numeric(20, 4) NOT NULL,
    order_status      text NOT NULL,
    status            text NOT NULL,
    updated_at        timestamptz,
    source_id         text NOT NULL,
    source_deleted    boolean NOT NULL DEFAULT false,
    record_hash       text NOT NULL,
    chain_position    integer,
    chain_hash        text,
    sync_id           uuid,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, order_date, record_key)
);

CREATE TABLE erp_connector_service.purchase_order_lines (
    connection        text NOT NULL,
    order_date        date NOT NULL,
    record_key        text NOT NULL,
    purchase_order_id text NOT NULL,
    line_number       integer NOT NULL,
    material_id       text,
    description       text,
    quantity          numeric(20, 6) NOT NULL,
    unit              text,
    unit_price        numeric(20, 6) NOT NULL,
    amount            numeric(20, 4) NOT NULL,
    currency          char(3) NOT NULL,
    gl_account        text,
    delivery_date     date,
    status            text NOT NULL,
    updated_at        timestamptz,
    source_id         text NOT NULL,
    source_deleted    boolean NOT NULL DEFAULT false,
    record_hash       text NOT NULL,
    chain_position    integer,
    chain_hash        text,
    sync_id           uuid,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, order_date, record_key)
);

CREATE TABLE erp_connector_service.inventory_snapshots (
    connection        text NOT NULL,
    snapshot_date     date NOT NULL,
    record_key        text NOT NULL,
    material_id       text NOT NULL,
    location          text NOT NULL,
    quantity          numeric(20, 6) NOT NULL,
    unit              text,
    unit_cost         numeric(20, 6),
    value             numeric(20, 4),
    currency          char(3),
    status            text NOT NULL,
    updated_at        timestamptz,
    source_id         text NOT NULL,
    source_deleted    boolean NOT NULL DEFAULT false,
    record_hash       text NOT NULL,
    chain_position    integer,
    chain_hash        text,
    sync_id           uuid,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, snapshot_date, record_key)
);

-- Earlier versions of records that a later sync replaced: nothing stored is lost.
CREATE TABLE erp_connector_service.record_versions (
    id              bigserial PRIMARY KEY,
    connection      text NOT NULL,
    kind            text NOT NULL,
    partition_date  date,
    record_key      text NOT NULL,
    record_hash     text NOT NULL,
    record          jsonb NOT NULL,
    superseded_at   timestamptz NOT NULL DEFAULT now(),
    superseded_by   uuid
);
CREATE INDEX record_versions_lookup
    ON erp_connector_service.record_versions (connection, kind, record_key);

-- Records that could not be synced or calculated, with the reason. One row per
-- (connection, kind, day, stage, source id, reason): re-running a partition replaces its rows.
CREATE TABLE erp_connector_service.quarantine (
    id              bigserial PRIMARY KEY,
    connection      text NOT NULL,
    kind            text NOT NULL,
    stage           text NOT NULL,
    partition_date  date,
    source_id       text,
    reason          text NOT NULL,
    payload         jsonb NOT NULL,
    sync_id         uuid,
    quarantined_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_partition
    ON erp_connector_service.quarantine (connection, kind, stage, partition_date);

CREATE TABLE erp_connector_service.sync_jobs (
    id              uuid PRIMARY KEY,
    connection      text NOT NULL,
    kinds           text[] NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('full', 'incremental', 'delta')),
    partition_start date,
    partition_end   date,
    status          text NOT NULL
                    CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    counts          jsonb NOT NULL DEFAULT '{}'::jsonb,
    error           text,
    dagster_run_id  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX sync_jobs_status ON erp_connector_service.sync_jobs (status, created_at);
CREATE INDEX sync_jobs_connection ON erp_connector_service.sync_jobs (connection, created_at);

CREATE TABLE erp_connector_service.sync_cursors (
    connection      text NOT NULL,
    kind            text NOT NULL,
    cursor_value    timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, kind)
);

-- Which spend category (NAICS-2017 commodity) each vendor of a day's spend was mapped to,
-- and by which rule.
CREATE TABLE erp_connector_service.vendor_mappings (
    connection      text NOT NULL,
    mapping_date    date NOT NULL,
    vendor_id       text NOT NULL,
    naics_code      text,
    mapping_rule    text NOT NULL,
    rule_detail     text,
    mapped_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, mapping_date, vendor_id)
);

CREATE TABLE erp_connector_service.material_mappings (
    connection      text NOT NULL,
    mapping_date    date NOT NULL,
    material_id     text NOT NULL,
    material_group  text,
    activity_factor numeric(20, 8),
    factor_unit     text,
    factor_source   text,
    mapping_rule    text NOT NULL,
    rule_detail     text,
    mapped_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, mapping_date, material_id)
);

-- One row per calculated spend line and factor version; restatements add rows with a new
-- factor version and mark the old ones not current, so earlier results stay queryable.
CREATE TABLE erp_connector_service.emission_calculations (
    connection          text NOT NULL,
    transaction_date    date NOT NULL,
    record_key          text NOT NULL,
    vendor_id           text,
    material_id         text,
    scope3_category     smallint CHECK (scope3_category BETWEEN 1 AND 15),
    excluded_reason     text,
    method              text NOT NULL,
    amount              numeric(20, 4) NOT NULL,
    currency            char(3) NOT NULL,
    fx_rate             numeric(20, 10),
    fx_rate_date        date,
    fx_provider         text,
    amount_usd          numeric(20, 4),
    price_index_ratio   numeric(20, 10),
    price_index_rule    text,
    factor_set          text,
    factor_version      text NOT NULL DEFAULT '',
    factor_code         text,
    factor_value        numeric(20, 8),
    factor_unit         text,
    quantity            numeric(20, 6),
    unit                text,
    kgco2e              numeric(24, 6),
    data_quality_score  smallint CHECK (data_quality_score BETWEEN 1 AND 5),
    mapping_rule        text,
    is_current          boolean NOT NULL DEFAULT true,
    spend_record_hash   text,
    record_hash         text NOT NULL,
    chain_position      integer,
    chain_hash          text,
    sync_id             uuid,
    calculated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, transaction_date, record_key, factor_version)
);

CREATE VIEW erp_connector_service.emission_lines AS
SELECT connection, transaction_date, record_key, vendor_id, material_id, scope3_category,
       excluded_reason, method, amount, currency, fx_rate, fx_rate_date, fx_provider,
       amount_usd, price_index_ratio, price_index_rule, factor_set, factor_version,
       factor_code, factor_value, factor_unit, quantity, unit, kgco2e, data_quality_score,
       mapping_rule, calculated_at
FROM erp_connector_service.emission_calculations
WHERE is_current;
