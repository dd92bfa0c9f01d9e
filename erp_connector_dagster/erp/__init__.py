"""ERP sources: one module per ERP system, and the registry that builds them from configuration."""

from __future__ import annotations

import importlib

from dagster import EnvVar

from erp_connector_dagster.erp.base import ErpSource
from erp_connector_dagster.settings import ConnectionConfig, SecretRef

# erp_type -> "module:Class"; imported only when a connection of that type is configured.
ERP_SOURCE_CLASSES: dict[str, str] = {
    "sap_s4hana": "erp_connector_dagster.erp.sap_s4hana:SapS4HanaSource",
    "sap_ecc": "erp_connector_dagster.erp.sap_ecc:SapEccSource",
    "oracle_fusion": "erp_connector_dagster.erp.oracle_fusion:OracleFusionSource",
    "oracle_ebs": "erp_connector_dagster.erp.oracle_ebs:OracleEbsSource",
    "dynamics365_fo": "erp_connector_dagster.erp.dynamics365:Dynamics365FinanceSource",
    "dynamics365_bc": "erp_connector_dagster.erp.dynamics365:Dynamics365BusinessCentralSource",
    "netsuite": "erp_connector_dagster.erp.netsuite:NetSuiteSource",
    "workday": "erp_connector_dagster.erp.workday:WorkdaySource",
    "sage_intacct": "erp_connector_dagster.erp.sage_intacct:SageIntacctSource",
    "xero": "erp_connector_dagster.erp.xero:XeroSource",
    "quickbooks": "erp_connector_dagster.erp.quickbooks:QuickBooksSource",
}


def source_class(erp_type: str) -> type[ErpSource]:
    """The resource class for an ERP type, or a clear error naming the known types."""
    try:
        target = ERP_SOURCE_CLASSES[erp_type]
    except KeyError:
        known = ", ".join(sorted(ERP_SOURCE_CLASSES))
        raise ValueError(f"unknown erp_type {erp_type!r}; known types: {known}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_source(connection: ConnectionConfig) -> ErpSource:
    """Build the Dagster resource for one configured connection; secrets stay `EnvVar`s."""
    fields: dict[str, object] = {
        "connection_name": connection.name,
        "base_url": connection.base_url,
        **connection.options,
    }
    for field, value in connection.credentials.items():
        fields[field] = EnvVar(value.env) if isinstance(value, SecretRef) else value
    return source_class(connection.erp_type)(**fields)
