"""Structural checks of the Helm chart (no helm binary here: nothing renders the whole chart).

What is checked: Chart.yaml and values.yaml parse and carry the runbook's figures; every
`.Values.x.y` a template uses exists in values.yaml; includes, files and blocks line up; every
namespaced object takes the release namespace and the runbook's labels; and the production
dagster.yaml and workspace.yaml, rendered with a handful of literal substitutions, pass Dagster's
own config schemas, including K8sRunLauncher's, QueuedRunCoordinator's and dagster_postgres'.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.workspace.config_schema import process_workspace_config
from dagster._serdes.config_class import class_from_code_pointer
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

from erp_connector_dagster.settings import ConnectionsFile

CHART = Path(__file__).parents[1] / "helm" / "erp-connector-dagster"
TEMPLATES = sorted((CHART / "templates").glob("*"))
CHART_FILES = sorted((CHART / "files").glob("*"))
RELEASE_NAMESPACE = "greenlang"
SECRET_NAME_KEYS = {"secrets.existingSecret", "image.pullSecrets"}

VALUES_REFERENCE = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
INCLUDE = re.compile(r'(?:include|template) "([^"]+)"')
DEFINE = re.compile(r'define "([^"]+)"')
BLOCK_OPEN = re.compile(r"{{-?\s*(?:if|with|range|define)\b")
BLOCK_END = re.compile(r"{{-?\s*end\s*-?}}")


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _lookup(values: dict[str, Any], dotted_path: str) -> Any:
    node: Any = values
    for key in dotted_path.strip(".").split("."):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(dotted_path)
        node = node[key]
    return node


def _render_plain(path: Path, values: dict[str, Any]) -> str:
    """Substitute the few template expressions a chart file may use; anything else fails."""
    fullname = values["fullnameOverride"]
    text = path.read_text()
    text = text.replace('{{ include "erp-connector-dagster.fullname" . }}', fullname)
    text = text.replace('{{ include "erp-connector-dagster.serviceAccountName" . }}', fullname)
    text = text.replace("{{ .Release.Namespace }}", RELEASE_NAMESPACE)
    text = re.sub(
        r"{{ \.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+) }}",
        lambda match: (
            str(_lookup(values, match.group(1))).lower()
            if isinstance(_lookup(values, match.group(1)), bool)
            else str(_lookup(values, match.group(1)))
        ),
        text,
    )
    assert "{{" not in text, f"{path.name} uses a template construct the test cannot render"
    return text


def test_chart_metadata_is_self_contained() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())

    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "erp-connector-dagster"
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"]
    assert "dependencies" not in chart


def test_values_carry_the_runbook_sizing(values: dict[str, Any]) -> None:
    assert values["codeLocation"]["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    autoscaling = values["autoscaling"]
    assert (autoscaling["minReplicas"], autoscaling["maxReplicas"]) == (2, 8)
    assert autoscaling["targetCPUUtilizationPercentage"]
    assert autoscaling["targetMemoryUtilizationPercentage"]
    assert values["podDisruptionBudget"] == {"enabled": True, "minAvailable": 1}
    assert values["exporter"]["port"] == 9464
    assert values["serviceMonitor"]["enabled"] is False
    assert values["config"]["batchSize"] == 1000
    assert values["dagster"]["maxConcurrentRuns"] > 0
    ConnectionsFile.model_validate({"connections": values["connections"]})


def test_values_hold_no_secret(values: dict[str, Any]) -> None:
    suspicious = re.compile(r"pass(word)?|token|secret|credential|api_?key", re.IGNORECASE)

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                if suspicious.search(str(key)) and not isinstance(child, dict):
                    # Only names of Secrets may appear, never their content.
                    assert path + key in SECRET_NAME_KEYS, path + key
                walk(child, f"{path}{key}.")
        elif isinstance(node, list):
            for child in node:
                walk(child, path)

    walk(values, "")
    assert values["secrets"]["existingSecret"] == "erp-connector-service-secrets"
    for template in TEMPLATES:
        assert not re.search(r"^kind:\s*Secret\s*$", template.read_text(), re.MULTILINE)


def test_every_values_reference_exists(values: dict[str, Any]) -> None:
    references = []
    for path in TEMPLATES + CHART_FILES:
        for match in VALUES_REFERENCE.finditer(path.read_text()):
            references.append((path.name, match.group(1)))

    assert len(references) > 50
    missing = []
    for file_name, dotted_path in references:
        try:
            _lookup(values, dotted_path)
        except KeyError:
            missing.append((file_name, dotted_path))
    assert not missing


def test_includes_files_and_blocks_line_up() -> None:
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    defined = set(DEFINE.findall(helpers))

    for template in TEMPLATES:
        text = template.read_text()
        for name in INCLUDE.findall(text):
            assert name in defined, (template.name, name)
        for chart_file in re.findall(r'\.Files\.Get "([^"]+)"', text):
            assert (CHART / chart_file).is_file(), (template.name, chart_file)
        for sibling in re.findall(r'\$\.Template\.BasePath "(/[^"]+)"', text):
            assert (CHART / "templates" / sibling.lstrip("/")).is_file(), (template.name, sibling)
        assert len(BLOCK_OPEN.findall(text)) == len(BLOCK_END.findall(text)), template.name
        assert text.count("{{") == text.count("}}"), template.name


def test_objects_use_release_namespace_and_runbook_labels() -> None:
    kinds = []
    for template in TEMPLATES:
        if template.suffix != ".yaml":
            continue
        for document in template.read_text().split("\n---\n"):
            kind = re.search(r"^kind:\s*(\S+)", document, re.MULTILINE)
            assert kind, template.name
            kinds.append(kind.group(1))
            assert "namespace: {{ .Release.Namespace }}" in document, template.name
            assert 'include "erp-connector-dagster.labels"' in document, template.name

    assert sorted(kinds) == sorted(
        [
            "ConfigMap", "ConfigMap", "ConfigMap", "ConfigMap", "Deployment", "Deployment",
            "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Role",
            "RoleBinding", "Service", "Service", "ServiceAccount", "ServiceMonitor",
        ]
    )  # fmt: skip
    assert "app: erp-connector-service" in (CHART / "templates" / "_helpers.tpl").read_text()


def test_code_location_pod_runs_grpc_exporter_and_migrations(values: dict[str, Any]) -> None:
    deployment = (CHART / "templates" / "deployment-code-location.yaml").read_text()

    assert "- name: check-db-migration" in deployment
    assert 'command: ["erp-connector", "migrate"]' in deployment
    assert re.search(r"- dagster\s+- api\s+- grpc\s+- -m\s+- {{ .Values.codeLocation.module }}",
                     deployment)  # fmt: skip
    assert values["codeLocation"]["module"] == "erp_connector_dagster.definitions"
    assert 'command: ["python", "-m", "erp_connector_dagster.exporter"]' in deployment
    assert deployment.count("path: /health") == 2  # readiness and liveness
    assert "containerPort: {{ .Values.exporter.port }}" in deployment
    assert "{{- toYaml .Values.codeLocation.resources" in deployment
    assert "secretRef:" in (CHART / "templates" / "_helpers.tpl").read_text()
    assert (
        "{{ .Values.secrets.existingSecret }}" in (CHART / "templates" / "_helpers.tpl").read_text()
    )
    hpa = (CHART / "templates" / "hpa.yaml").read_text()
    assert "name: cpu" in hpa and "name: memory" in hpa
    monitor = (CHART / "templates" / "servicemonitor.yaml").read_text()
    assert monitor.startswith("{{- if and .Values.serviceMonitor.enabled")


def test_production_dagster_yaml_passes_dagster_schemas(
    values: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "dagster.yaml").write_text(_render_plain(CHART / "files" / "dagster.yaml", values))

    instance_config, custom_instance_class = dagster_instance_config(str(tmp_path))
    assert custom_instance_class is None

    expected_classes = {
        "run_storage": "PostgresRunStorage",
        "event_log_storage": "PostgresEventLogStorage",
        "schedule_storage": "PostgresScheduleStorage",
        "run_launcher": "K8sRunLauncher",
        "run_coordinator": "QueuedRunCoordinator",
    }
    for section, class_name in expected_classes.items():
        pointer = instance_config[section]
        assert pointer["class"] == class_name
        configurable = class_from_code_pointer(pointer["module"], pointer["class"])
        result = validate_config(configurable.config_type(), pointer["config"])
        assert result.success, (section, [error.message for error in result.errors])

    launcher = instance_config["run_launcher"]["config"]
    # Volumes handed to run Jobs must convert into real Kubernetes models.
    for volume in launcher["volumes"]:
        k8s_model_from_dict(
            kubernetes.client.V1Volume, k8s_snake_case_dict(kubernetes.client.V1Volume, volume)
        )
    for mount in launcher["volume_mounts"]:
        mount_model = k8s_model_from_dict(
            kubernetes.client.V1VolumeMount,
            k8s_snake_case_dict(kubernetes.client.V1VolumeMount, mount),
        )
        assert mount_model.mount_path == "/opt/erp-connector/connections"
    assert launcher["job_namespace"] == RELEASE_NAMESPACE
    assert launcher["instance_config_map"] == "erp-connector-service-dagster-instance"
    assert launcher["env_secrets"] == [values["secrets"]["existingSecret"]]
    coordinator = instance_config["run_coordinator"]["config"]
    assert coordinator["max_concurrent_runs"] == values["dagster"]["maxConcurrentRuns"]
    postgres_db = instance_config["run_storage"]["config"]["postgres_db"]
    assert postgres_db["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert postgres_db.pop("scheme") == "postgresql+psycopg2"
    assert all(isinstance(setting, dict) and "env" in setting for setting in postgres_db.values())


def test_workspace_points_at_the_code_location_service(values: dict[str, Any]) -> None:
    rendered = yaml.safe_load(_render_plain(CHART / "files" / "workspace.yaml", values))

    result = process_workspace_config(rendered)
    assert result.success, [error.message for error in result.errors]
    grpc_server = rendered["load_from"][0]["grpc_server"]
    assert grpc_server["port"] == values["codeLocation"]["port"]
    assert grpc_server["host"] == f"erp-connector-service.{RELEASE_NAMESPACE}.svc.cluster.local"


def test_environment_config_map_matches_what_dagster_yaml_reads() -> None:
    config_map = (CHART / "templates" / "configmap-config.yaml").read_text()
    instance = (CHART / "files" / "dagster.yaml").read_text()

    read_from_env = set(re.findall(r"env: (DAGSTER_PG_[A-Z]+)", instance))
    assert read_from_env == {
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_PORT",
        "DAGSTER_PG_DB",
        "DAGSTER_PG_USERNAME",
        "DAGSTER_PG_PASSWORD",
    }
    for variable in read_from_env - {"DAGSTER_PG_PASSWORD"}:
        assert f"  {variable}:" in config_map
    # The password reaches pods only from the existing Secret.
    assert "DAGSTER_PG_PASSWORD" not in config_map
