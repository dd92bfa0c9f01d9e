-- Provenance: chain heads per partition, the append-only audit chain, HMAC seals, and the
-- emission lineage view. Hashing and sealing happen in erp_connector_dagster.provenance.

-- Current head of every partition's hash chain; partition_date is NULL for master data
-- (vendors, materials), which keeps one head per connection.
CREATE TABLE erp_connector_service.chain_heads (
    table_name      text NOT NULL,
    connection      text NOT NULL,
    partition_date  date,
    head_hash       text NOT NULL,
    record_count    integer NOT NULL CHECK (record_count >= 0),
    audit_event_id  bigint,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX chain_heads_partition ON erp_connector_service.chain_heads
    (table_name, connection, COALESCE(partition_date, DATE '0001-01-01'));

-- Every event links to its predecessor through prev_hash; uniqueness makes a fork impossible.
CREATE TABLE erp_connector_service.audit_events (
    id              bigserial PRIMARY KEY,
    event_type      text NOT NULL,
    connection      text,
    kind            text,
    partition_date  date,
    sync_id         uuid,
    details         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    prev_hash       text NOT NULL UNIQUE,
    event_hash      text NOT NULL UNIQUE
);
CREATE INDEX audit_events_sync ON erp_connector_service.audit_events (sync_id);
CREATE INDEX audit_events_partition
    ON erp_connector_service.audit_events (connection, partition_date, event_type);

CREATE TABLE erp_connector_service.seals (
    id              bigserial PRIMARY KEY,
    sealed_at       timestamptz NOT NULL,
    audit_event_id  bigint NOT NULL,
    audit_head      text NOT NULL,
    heads_digest    text NOT NULL,
    changed_digest  text NOT NULL,
    partition_count bigint NOT NULL,
    record_count    bigint NOT NULL,
    previous_hmac   text,
    hmac            text NOT NULL,
    -- Heads changed since the previous seal, in clear, plus per-table totals.
    scope           jsonb NOT NULL
);

-- Audit events and seals are evidence: they may be added to, never changed or removed.
CREATE FUNCTION erp_connector_service.refuse_evidence_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on %.% refused: audit evidence is append-only',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON erp_connector_service.audit_events
    FOR EACH ROW EXECUTE FUNCTION erp_connector_service.refuse_evidence_change();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON erp_connector_service.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION erp_connector_service.refuse_evidence_change();
CREATE TRIGGER seals_append_only
    BEFORE UPDATE OR DELETE ON erp_connector_service.seals
    FOR EACH ROW EXECUTE FUNCTION erp_connector_service.refuse_evidence_change();
CREATE TRIGGER seals_no_truncate
    BEFORE TRUNCATE ON erp_connector_service.seals
    FOR EACH STATEMENT EXECUTE FUNCTION erp_connector_service.refuse_evidence_change();

CREATE INDEX record_versions_hash
    ON erp_connector_service.record_versions (connection, kind, record_key, record_hash);

-- From an emission row back to the spend record it was calculated from (current, or an
-- earlier version kept in record_versions), the sync that brought that record, and the
-- audit event that recorded the write.
CREATE VIEW erp_connector_service.emission_lineage AS
SELECT e.connection,
       e.transaction_date,
       e.record_key,
       e.factor_version,
       e.is_current,
       e.method,
       e.amount,
       e.currency,
       e.fx_rate,
       e.fx_rate_date,
       e.fx_provider,
       e.amount_usd,
       e.factor_set,
       e.factor_code,
       e.factor_value,
       e.factor_unit,
       e.kgco2e,
       e.record_hash AS emission_record_hash,
       e.chain_position AS emission_chain_position,
       e.sync_id AS calculation_sync_id,
       e.spend_record_hash,
       s.record_hash AS current_spend_record_hash,
       (s.record_hash IS NOT DISTINCT FROM e.spend_record_hash) AS spend_record_is_current,
       s.chain_position AS spend_chain_position,
       s.chain_hash AS spend_chain_hash,
       v.superseded_at AS spend_version_superseded_at,
       s.sync_id AS spend_sync_id,
       j.mode AS spend_sync_mode,
       j.status AS spend_sync_status,
       j.started_at AS spend_sync_started_at,
       j.finished_at AS spend_sync_finished_at,
       j.dagster_run_id AS spend_sync_run_id,
       a.id AS spend_audit_event_id,
       a.event_type AS spend_audit_event_type,
       a.event_hash AS spend_audit_event_hash
FROM erp_connector_service.emission_calculations e
LEFT JOIN erp_connector_service.spend_records s
       ON s.connection = e.connection
      AND s.transaction_date = e.transaction_date
      AND s.record_key = e.record_key
LEFT JOIN LATERAL (
       SELECT rv.superseded_at
       FROM erp_connector_service.record_versions rv
       WHERE rv.connection = e.connection AND rv.kind = 'spend'
         AND rv.record_key = e.record_key AND rv.record_hash = e.spend_record_hash
         AND s.record_hash IS DISTINCT FROM e.spend_record_hash
       ORDER BY rv.superseded_at DESC
       LIMIT 1
) v ON true
LEFT JOIN erp_connector_service.sync_jobs j ON j.id = s.sync_id
LEFT JOIN LATERAL (
       SELECT ae.id, ae.event_type, ae.event_hash
       FROM erp_connector_service.audit_events ae
       WHERE ae.sync_id = s.sync_id
       ORDER BY COALESCE(ae.connection = e.connection
                         AND ae.partition_date = e.transaction_date
                         AND ae.kind = 'spend', false) DESC,
                (ae.event_type = 'records_written') DESC,
                ae.id DESC
       LIMIT 1
) a ON true;
