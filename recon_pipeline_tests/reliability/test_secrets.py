"""API secrets and database passwords never appear where an operator or an attacker could read them.

A distinctive API key, API secret and database password are used for a successful reconcile + apply
and for two failed ones (an HTTP 502 whose ccxt message carries the full signed URL, and a wrong
signature after key rotation). Then every place text lands is scanned: Python logs (all loggers at
DEBUG), stdout/stderr, every event of each run in the Dagster instance (serialised whole: messages,
errors with their causes and stacks, materialization and check metadata), the Outcome and its error,
every row of every recon_ table, and the health server's answers (200 and 503).
"""

from __future__ import annotations

import copy
import json
import logging
import urllib.error
import urllib.request
import uuid

import pytest
import sqlalchemy as sa
from dagster._serdes import serialize_value

from recon_pipeline.demo.run import SCENARIO
from recon_pipeline.observability.server import HEALTH_PATH, METRICS_PATH, HealthServer
from recon_pipeline.settings import account_env_prefix
from recon_pipeline_tests.reliability.conftest import ACCOUNT, PROFILE, RECON_TABLES

pytestmark = pytest.mark.slow

TOKEN = uuid.uuid4().hex[:12]
API_KEY = f"ApiKeyRel{TOKEN}"
SECRET = f"ApiSecretRel{TOKEN}"
ROTATED = f"RotatedSecretRel{TOKEN}"
DB_PASSWORD = f"DbPasswordRel{TOKEN}"
SECRETS = (API_KEY, SECRET, ROTATED, DB_PASSWORD)


def _scenario(secret: str) -> dict:
    scenario = copy.deepcopy(json.loads(SCENARIO.read_text()))
    scenario["accounts"][ACCOUNT].update(apiKey=API_KEY, secret=secret)
    return scenario


def _with_password(url: str) -> str:
    # trust authentication ignores the password, so the real server accepts the URL as it is
    return sa.engine.make_url(url).set(password=DB_PASSWORD).render_as_string(hide_password=False)


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return f"{response.status} {response.read().decode()}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read().decode()}"


def _run_texts(instance, run_id: str) -> list[str]:
    texts = []
    for entry in instance.all_logs(run_id):
        texts.append(serialize_value(entry))  # the whole record: message, error, metadata, step data
        texts.append(entry.user_message or "")
    return texts


def _leaks(texts: list[str]) -> list[tuple[str, str]]:
    return [(secret, text[max(0, text.find(secret) - 200): text.find(secret) + 50])
            for text in texts for secret in SECRETS if secret in text]


@pytest.fixture
def secret_world(world, monkeypatch):
    world.server.load(_scenario(SECRET))
    prefix = account_env_prefix(ACCOUNT)
    monkeypatch.setenv(prefix + "API_KEY", API_KEY)
    monkeypatch.setenv(prefix + "SECRET", SECRET)
    world.url = _with_password(world.url)
    return world


def test_secrets_never_reach_logs_events_metadata_errors_tables_or_health(secret_world, fast_backoff, caplog,
                                                                           capfd, monkeypatch):
    world = secret_world
    caplog.set_level(logging.DEBUG)  # every logger, ccxt's request lines included
    outcomes = [world.reconcile(PROFILE, apply=True)]
    assert outcomes[0].success and outcomes[0].batch["status"] == "APPLIED", outcomes[0].error

    world.server.add_fault(account=ACCOUNT, path="/fapi/v1/userTrades", mode="http_502", after=1)
    outcomes.append(world.reconcile("alpha"))
    assert not outcomes[-1].success and "http://127.0.0.1" in outcomes[-1].error  # the URL is there, redacted
    assert "signature=***" in outcomes[-1].error

    world.server.load(_scenario(ROTATED))  # key rotation: the exchange expects a secret the pipeline lacks
    outcomes.append(world.reconcile("beta"))
    assert not outcomes[-1].success and "Signature for this request is not valid" in outcomes[-1].error

    texts: list[str] = []
    for outcome in outcomes:
        texts += [repr(outcome), outcome.error or "", outcome.summary(), *_run_texts(world.instance, outcome.run_id)]
    assert sum("ASSET_MATERIALIZATION" in t for t in texts) >= 10  # the metadata was really scanned
    assert sum("STEP_FAILURE" in t for t in texts) >= 2
    with world.engine.connect() as conn:
        for table in RECON_TABLES:
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).fetchall()
            texts.append(f"{table}: " + "\n".join(map(repr, rows)))
    assert any("FAILED" in t and "ExchangeNotAvailable" in t for t in texts)

    from recon_pipeline.db.engine import make_engine

    engine = make_engine(world.url)
    broken = make_engine(sa.engine.make_url(world.url).set(database=f"missing_{TOKEN}")
                         .render_as_string(hide_password=False))
    try:
        with HealthServer(engine) as health:
            texts += [_get(health.url + HEALTH_PATH), _get(health.url + METRICS_PATH)]
        with HealthServer(broken) as health:
            down = _get(health.url + HEALTH_PATH)
            assert down.startswith("503") and "***" in down
            texts.append(down)
    finally:
        engine.dispose()
        broken.dispose()

    captured = capfd.readouterr()
    texts += [caplog.text, captured.out, captured.err]
    assert "Request:" in caplog.text or "GET" in caplog.text  # ccxt's debug lines were captured
    assert _leaks(texts) == []


def test_the_database_password_is_not_stored_in_the_dagster_run_config(secret_world):
    # a run that fails at the first exchange call is enough: the run config is stored when the run starts
    secret_world.server.add_fault(account=ACCOUNT, path="/fapi/v3/positionRisk", mode="malformed")
    outcome = secret_world.reconcile(PROFILE)
    run = secret_world.instance.get_run_by_id(outcome.run_id)
    assert _leaks([json.dumps(run.run_config, default=str), serialize_value(run)]) == []
