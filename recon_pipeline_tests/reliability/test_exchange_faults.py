"""Exchange faults in the middle of a snapshot, through the real Dagster job, ccxt and the emulator.

Every case asserts on the database: a failed run stores no batch, no correction, no finding, moves
no parity streak and leaves the trading tables untouched; its recon_runs row is FAILED with an error
naming the account and the endpoint (and the time window for the paged endpoints); a fault that is
retried through, or gone, yields exactly the clean reference run (``reference``: same findings, same
correction ids and contents, same counts, same streaks).

The per-request fault matrix (every mode on fills, orders, positions; attempts counted) is in
``recon_pipeline_tests/exchange/test_fetch.py``; this file proves the pipeline around it.
"""

from __future__ import annotations

import copy
import json

import pytest

from recon_pipeline.demo.run import SCENARIO
from recon_pipeline.exchange.client import DEFAULT_CONCURRENCY as CONCURRENCY
from recon_pipeline.settings import account_env_prefix
from recon_pipeline_tests.integration.conftest import DEMO_WINDOW, assert_same_tables
from recon_pipeline_tests.reliability.conftest import (
    ACCOUNT,
    EXCHANGE,
    PROFILE,
    assert_nothing_stored,
    assert_same_as_reference,
    comparable_trading_state,
    run_row,
)

pytestmark = pytest.mark.slow

MAX_RETRIES = 3  # make_exchange's default: 1 + 3 attempts per request
PAGED = ("/api/v3/myTrades", "/fapi/v1/userTrades", "/api/v3/allOrders", "/fapi/v1/allOrders")
PER_SYMBOL = PAGED + ("/api/v3/openOrders", "/fapi/v1/openOrders")  # fetched per symbol, CONCURRENCY at a time

# (id, path, mode, after, times, retried, error class named in the message)
# ``after`` lets the first pages (earlier symbols) succeed, so each fault hits the middle of the snapshot.
FAILING = [
    ("fills-429", "/fapi/v1/userTrades", "http_429", 2, None, True, "DDoSProtection"),
    ("orders-418-ip-ban", "/fapi/v1/allOrders", "http_418", 1, None, False, "DDoSProtection"),
    ("positions-500", "/fapi/v3/positionRisk", "http_500", 0, None, True, "OperationFailed"),
    ("spot-fills-502", "/api/v3/myTrades", "http_502", 1, None, True, "ExchangeNotAvailable"),
    ("balances-503", "/api/v3/account", "http_503", 0, None, True, "ExchangeNotAvailable"),
    ("open-orders-hang", "/fapi/v1/openOrders", "timeout", 1, None, True, "RequestTimeout"),
    ("fills-reset", "/fapi/v1/userTrades", "reset", 3, None, True, "NetworkError"),
    ("positions-malformed-200", "/fapi/v3/positionRisk", "malformed", 0, 1, False, "BadResponse"),
    ("fills-html-200", "/fapi/v1/userTrades", "html", 1, 1, False, "BadResponse"),
]


def _failed_cleanly(world, outcome, path: str, error_class: str) -> None:
    assert not outcome.success
    for text in (outcome.error, run_row(world)["error"]):
        assert f"account={ACCOUNT}" in text and f"endpoint={path}" in text and error_class in text, text
        if path in PAGED:
            assert "window=[" in text and "symbol=" in text, text
    row = run_row(world)
    assert row["status"] == "FAILED" and row["window_start"] == DEMO_WINDOW and row["run_id"] == outcome.run_id


@pytest.mark.parametrize("case", FAILING, ids=[c[0] for c in FAILING])
def test_a_fault_that_outlasts_the_retries_fails_the_run_and_stores_nothing(world, fast_backoff, case):
    _, path, mode, after, times, retried, error_class = case
    streaks, trading = world.streaks(), world.trading_state()
    world.server.add_fault(account=ACCOUNT, path=path, mode=mode, after=after, times=times)
    exchange = {**EXCHANGE, "timeout_ms": 500} if mode == "timeout" else EXCHANGE

    outcome = world.reconcile(exchange_config=exchange)

    _failed_cleanly(world, outcome, path, error_class)
    attempts = 1 + MAX_RETRIES if retried else 1  # bounded retries; none for an IP ban or an untrustworthy body
    # Symbols are fetched CONCURRENCY at a time: each symbol in flight when the fault begins makes its own
    # bounded attempts, and no symbol starts after one has failed.
    made = len(world.server.requests_to(path, ACCOUNT))
    per_symbol = path in PER_SYMBOL
    assert after + attempts <= made <= after + attempts * (CONCURRENCY if per_symbol else 1), made
    assert_nothing_stored(world, streaks, trading)


def test_transient_faults_everywhere_are_retried_through_to_the_unfaulted_result(world, reference):
    """One fault per endpoint family, each failing one request mid-snapshot: the run equals the clean run."""
    faults = [world.server.add_fault(account=ACCOUNT, path=path, mode=mode, after=after, times=1) for path, mode, after in [
        ("/fapi/v1/userTrades", "http_429", 1),   # Retry-After: 1 honoured
        ("/api/v3/myTrades", "reset", 1),
        ("/fapi/v1/allOrders", "http_500", 2),
        ("/api/v3/openOrders", "http_502", 1),
        ("/fapi/v1/openOrders", "timeout", 1),    # hangs past the 800 ms client timeout
        ("/fapi/v3/positionRisk", "http_503", 0),
    ]]

    outcome = world.reconcile(exchange_config={**EXCHANGE, "timeout_ms": 800})

    assert outcome.success, outcome.error
    for fault in faults:
        assert fault.seen >= fault.after + 2, (fault.path, fault.mode, fault.seen)  # failed once, then retried
    assert_same_as_reference(world, reference)


def test_after_a_mid_paging_failure_the_next_run_and_its_apply_equal_the_unfaulted_ones(world, reference):
    streaks, trading = world.streaks(), world.trading_state()
    world.server.add_fault(account=ACCOUNT, path="/fapi/v1/userTrades", mode="malformed", after=2, times=1)
    failed = world.reconcile()
    _failed_cleanly(world, failed, "/fapi/v1/userTrades", "BadResponse")
    assert_nothing_stored(world, streaks, trading)

    outcome = world.reconcile(apply=True)  # the fault is spent: the exchange answers normally again

    assert outcome.success, outcome.error
    assert run_row(world)["status"] == "SUCCESS" and run_row(world)["error"] is None
    assert_same_as_reference(world, reference)
    assert outcome.batch["status"] == "APPLIED"
    assert_same_tables(reference.applied_state, comparable_trading_state(world))


def test_key_rotation_wrong_signature_fails_without_retry_and_the_new_secret_recovers(world, reference, monkeypatch):
    rotated = copy.deepcopy(json.loads(SCENARIO.read_text()))
    rotated["accounts"][ACCOUNT]["secret"] = "rotated-secret-7f3a9c"
    world.server.load(rotated)  # the exchange now expects the new secret; the pipeline still signs with the old
    streaks, trading = world.streaks(), world.trading_state()

    failed = world.reconcile()

    assert not failed.success
    assert "AuthenticationError" in failed.error and "Signature for this request is not valid" in failed.error
    path = failed.error.split("endpoint=", 1)[1].split(" ", 1)[0].rstrip(":")
    assert f"account={ACCOUNT}" in failed.error and path.startswith(("/api/", "/fapi/"))
    assert len(world.server.requests_to(path, ACCOUNT)) == 1  # an authentication error is not retried
    assert run_row(world)["status"] == "FAILED"
    assert_nothing_stored(world, streaks, trading)
    assert "rotated-secret-7f3a9c" not in failed.error and "demo-main-secret" not in failed.error

    monkeypatch.setenv(account_env_prefix(ACCOUNT) + "SECRET", "rotated-secret-7f3a9c")
    outcome = world.reconcile()
    assert outcome.success, outcome.error
    assert_same_as_reference(world, reference)


def test_profile_constant_is_the_parity_profile(reference):
    """The reference run moved streaks (so 'no streak moves' above is a real check, not a vacuous one)."""
    assert PROFILE == "gamma"
    assert set(reference.streaks["streak"]) == {3}
