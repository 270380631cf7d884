"""The deploy/ files are valid and name what the code expects (no cluster needed).

- deploy/dagster.yaml loads as a real DagsterInstance (Postgres storages, queued coordinator, limits),
  in test_celery.py; here its schema and the limits it promises are checked.
- deploy/dagster.k8s.yaml: the run launcher block validates against dagster-k8s's K8sRunLauncher.
- deploy/helm/values.yaml: YAML, a schema of the chart keys we set, the image, env var names the
  settings module reads, and secrets that exist in deploy/helm/secrets.example.yaml with the keys the
  code reads (RECON_DATABASE_URL, RECON_EXCHANGE_<ACCOUNT>_API_KEY/_SECRET for every demo account).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recon_pipeline.executors import EXECUTORS, celery_config, executor_from_env
from recon_pipeline.settings import FLAGS, SettingsError, account_env_prefix

pytestmark = pytest.mark.scaling

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VALUES = DEPLOY / "helm" / "values.yaml"
SECRETS = DEPLOY / "helm" / "secrets.example.yaml"
PROFILE_TAG_LIMIT = {"key": "dagster/partition/profile", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}

_STR = {"type": "string", "minLength": 1}
_NAMED = {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {"name": _STR}}}
_TAG_LIMITS = {"type": "array", "items": {"type": "object", "required": ["key", "limit"],
                                          "properties": {"key": _STR, "limit": {"type": "integer", "minimum": 1}}}}
# The part of the Dagster chart's values this deployment relies on (the chart's own schema is larger).
VALUES_SCHEMA = {
    "type": "object",
    "required": ["global", "dagster-user-deployments", "runLauncher", "postgresql", "dagsterDaemon"],
    "properties": {
        "global": {"type": "object", "required": ["postgresqlSecretName", "dagsterHome"]},
        "dagster-user-deployments": {
            "type": "object", "required": ["enabled", "deployments"],
            "properties": {"deployments": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "image", "dagsterApiGrpcArgs", "port", "envSecrets"],
                "properties": {
                    "image": {"type": "object", "required": ["repository", "tag", "pullPolicy"],
                              "properties": {"repository": _STR, "tag": {"type": "string", "pattern": "^(?!latest$).+"},
                                             "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}},
                    "dagsterApiGrpcArgs": {"type": "array", "items": {"type": "string"}},
                    "port": {"type": "integer"},
                    "env": {"type": "array", "items": {"type": "object", "required": ["name", "value"]}},
                    "envSecrets": _NAMED}}}}},
        "runLauncher": {"type": "object", "required": ["type", "config"], "properties": {
            "type": {"const": "K8sRunLauncher"},
            "config": {"type": "object", "required": ["k8sRunLauncher"], "properties": {
                "k8sRunLauncher": {"type": "object", "required": ["envSecrets"],
                                   "properties": {"envSecrets": _NAMED}}}}}},
        "postgresql": {"type": "object", "required": ["enabled", "postgresqlHost", "postgresqlUsername",
                                                      "postgresqlDatabase", "postgresqlScheme", "service"],
                       "properties": {"enabled": {"const": False},
                                      "postgresqlScheme": {"const": "postgresql+psycopg2"}}},
        "dagsterDaemon": {"type": "object", "required": ["enabled", "runCoordinator"], "properties": {
            "enabled": {"const": True},
            "runCoordinator": {"type": "object", "properties": {
                "type": {"const": "QueuedRunCoordinator"},
                "config": {"type": "object", "properties": {"queuedRunCoordinator": {
                    "type": "object", "required": ["maxConcurrentRuns", "tagConcurrencyLimits"],
                    "properties": {"maxConcurrentRuns": {"type": "integer", "minimum": 1},
                                   "tagConcurrencyLimits": _TAG_LIMITS}}}}}}}},
    },
}


def _check(schema: dict, value, path: str = "values") -> list[str]:
    """A small JSON-schema subset (type, required, properties, items, enum, const, minimum, pattern)."""
    import re

    errors = []
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool}
    if kind and not isinstance(value, types[kind]):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: empty")
        if "pattern" in schema and not re.match(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, int) and "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value} < {schema['minimum']}")
    if isinstance(value, dict):
        errors += [f"{path}.{k}: missing" for k in schema.get("required", []) if k not in value]
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += _check(sub, value[key], f"{path}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        for i, item in enumerate(value):
            errors += _check(schema.get("items", {}), item, f"{path}[{i}]")
    return errors


def _values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _secrets() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(SECRETS.read_text()) if d]
    assert all(d["kind"] == "Secret" and d["apiVersion"] == "v1" for d in docs)
    return {d["metadata"]["name"]: d["stringData"] for d in docs}


def _demo_accounts() -> set[str]:
    data = json.loads((REPO / "recon_pipeline" / "demo" / "trading_db.json").read_text())
    return {row["account"] for row in data["profiles"]}


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO).as_posix() for p in DEPLOY.rglob("*.yaml")))
def test_every_deploy_yaml_parses(path):
    assert list(yaml.safe_load_all((REPO / path).read_text()))


def test_helm_values_match_the_schema_we_rely_on():
    assert _check(VALUES_SCHEMA, _values()) == []


def test_helm_image_is_the_one_the_dockerfile_builds():
    deployment = _values()["dagster-user-deployments"]["deployments"][0]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"-t {image} " in dockerfile
    from importlib.metadata import version

    assert deployment["image"]["tag"] == version("recon_pipeline")
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "recon_pipeline.definitions"]
    # the module the code server loads is the project's Dagster module
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'module_name = "recon_pipeline.definitions"' in pyproject


def test_helm_env_names_are_settings_the_code_reads():
    known = {flag.env for flag in FLAGS} | {"GX_ANALYTICS_ENABLED", "RECON_EXECUTOR"}
    deployment = _values()["dagster-user-deployments"]["deployments"][0]
    names = {e["name"] for e in deployment["env"]}
    assert names <= known, names - known
    assert executor_from_env({"RECON_EXECUTOR": next(e["value"] for e in deployment["env"]
                                                     if e["name"] == "RECON_EXECUTOR")}).name == "in_process"
    launcher_env = _values()["runLauncher"]["config"]["k8sRunLauncher"].get("envVars", [])
    assert {v.split("=", 1)[0] for v in launcher_env} <= known


def test_helm_secrets_exist_and_hold_the_variables_the_code_reads():
    values, secrets = _values(), _secrets()
    deployment = values["dagster-user-deployments"]["deployments"][0]
    code_secrets = [s["name"] for s in deployment["envSecrets"]]
    run_secrets = [s["name"] for s in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]]
    assert code_secrets == run_secrets, "run pods need the same secrets as the code server"
    assert set(code_secrets) <= set(secrets)
    assert values["global"]["postgresqlSecretName"] in secrets
    assert "postgresql-password" in secrets[values["global"]["postgresqlSecretName"]]
    keys = {key for name in code_secrets for key in secrets[name]}
    assert "RECON_DATABASE_URL" in keys
    assert all(secrets[n]["RECON_DATABASE_URL"].startswith("postgresql+psycopg2://")
               for n in code_secrets if "RECON_DATABASE_URL" in secrets[n])
    for account in _demo_accounts():
        prefix = account_env_prefix(account)
        assert {prefix + "API_KEY", prefix + "SECRET"} <= keys, account
    exchange_keys = {k for k in keys if k.startswith("RECON_EXCHANGE_")}
    assert all(k.endswith(("_API_KEY", "_SECRET", "_URL")) for k in exchange_keys), exchange_keys


def test_helm_run_queue_limits_match_the_instance_config():
    queued = _values()["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    runs = instance["concurrency"]["runs"]
    assert queued["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    assert PROFILE_TAG_LIMIT in runs["tag_concurrency_limits"]
    assert _values()["concurrency"]["pools"]["defaultLimit"] == instance["concurrency"]["pools"]["default_limit"]


def test_production_instance_config_validates_against_dagsters_schema():
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config_schema

    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    result = validate_config(dagster_instance_config_schema(), config)
    assert result.success, [e.message for e in result.errors]
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        assert config[key]["module"].startswith("dagster_postgres")
        assert config[key]["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_k8s_run_launcher_config_validates_against_dagster_k8s():
    from dagster._config import validate_config
    from dagster_k8s import K8sRunLauncher

    block = yaml.safe_load((DEPLOY / "dagster.k8s.yaml").read_text())["run_launcher"]
    assert (block["module"], block["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = validate_config(K8sRunLauncher.config_type(), block["config"])
    assert result.success, [e.message for e in result.errors]
    secrets = _secrets()
    assert set(block["config"]["env_secrets"]) <= set(secrets)
    assert "DAGSTER_PG_PASSWORD" in {k for s in block["config"]["env_secrets"] for k in secrets[s]}
    env_names = {v.split("=", 1)[0] for v in block["config"]["env_vars"]}
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_DB"} <= env_names


def test_celery_worker_config_matches_the_executor_defaults():
    from dagster._config import validate_config
    from dagster_celery import celery_executor

    worker = yaml.safe_load((DEPLOY / "celery" / "worker.yaml").read_text())["execution"]["config"]
    assert validate_config(celery_executor.config_schema.config_type, worker).success
    assert worker == celery_config({}), "worker.yaml and the executor's defaults must name the same broker"


def test_executor_is_chosen_by_env_and_bad_values_are_refused():
    assert executor_from_env({}).name == "in_process"
    assert executor_from_env({"RECON_EXECUTOR": "default"}).name == "in_process"
    assert executor_from_env({"RECON_EXECUTOR": "celery"}).name == "celery"
    assert executor_from_env({"RECON_EXECUTOR": "multiprocess", "RECON_MAX_CONCURRENT_STEPS": "3"}).name == "multiprocess"
    assert set(EXECUTORS) == {"default", "in_process", "multiprocess", "celery"}
    with pytest.raises(SettingsError, match="RECON_EXECUTOR"):
        executor_from_env({"RECON_EXECUTOR": "dask"})
    with pytest.raises(SettingsError, match="RECON_MAX_CONCURRENT_STEPS"):
        executor_from_env({"RECON_EXECUTOR": "multiprocess", "RECON_MAX_CONCURRENT_STEPS": "0"})
