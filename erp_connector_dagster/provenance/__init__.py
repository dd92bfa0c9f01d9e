"""Provenance: canonical hashes, partition hash chains, the audit chain, seals, verification.

The writer calls `record_hashes` (or `record_hash`) for each batch, then `rechain_partition`
for each partition it touched, `record_audit_event` for what it did, and `seal_heads` at the
end of a sync. Auditors call `verify_database`, `export_bundle` and `verify_bundle`.
"""

from erp_connector_dagster.provenance.audit import EVENT_TYPES, record_audit_event
from erp_connector_dagster.provenance.bundle import export_bundle
from erp_connector_dagster.provenance.canonical import (
    HASHED_COLUMNS,
    canonical_bytes,
    record_hash,
    record_hashes,
    stored_form,
)
from erp_connector_dagster.provenance.chain import (
    ChainHead,
    ChainProblem,
    ProblemReason,
    rechain_partition,
    verify_partition,
)
from erp_connector_dagster.provenance.lineage import emission_lineage
from erp_connector_dagster.provenance.seal import Seal, seal_heads, seal_key_from_env
from erp_connector_dagster.provenance.verifier import (
    VerificationReport,
    verify_bundle,
    verify_database,
)

__all__ = [
    "EVENT_TYPES",
    "HASHED_COLUMNS",
    "ChainHead",
    "ChainProblem",
    "ProblemReason",
    "Seal",
    "VerificationReport",
    "canonical_bytes",
    "emission_lineage",
    "export_bundle",
    "rechain_partition",
    "record_audit_event",
    "record_hash",
    "record_hashes",
    "seal_heads",
    "seal_key_from_env",
    "stored_form",
    "verify_bundle",
    "verify_database",
    "verify_partition",
]
