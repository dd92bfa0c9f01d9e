"""Assets: synced records, mappings and Scope 3 emissions."""

from __future__ import annotations

from collections.abc import Sequence

from dagster import AssetsDefinition

from erp_connector_dagster.assets.emissions import build_emission_assets
from erp_connector_dagster.assets.records import build_record_assets


def build_assets(erp_keys: Sequence[str]) -> list[AssetsDefinition]:
    """Every asset, for the ERP resource keys of the configured connections."""
    return [*build_record_assets(erp_keys), *build_emission_assets()]
