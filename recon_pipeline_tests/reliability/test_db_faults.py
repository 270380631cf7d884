"""Database faults: the trading tables end unchanged or fully corrected, never half; a retry completes.

The pipeline's backends are told apart by ``application_name`` (``RECON_DB_APPLICATION_NAME``, read
when an engine is made). To hit "the right moment", another session holds a table lock, the
pipeline's statement waits on it (``wait_event_type = 'Lock'``), and then the fault happens: the
backend is terminated (connection lost) or the database's ``statement_timeout`` cancels it.
"Postgres restarted between two runs" is simulated by terminating every backend of the test's own
database (restarting the shared server would disturb parallel tests).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest
import sqlalchemy as sa

from recon_pipeline.apply import lock
from recon_pipeline.apply.applier import apply_batch
from recon_pipeline.db.engine import make_engine
from recon_pipeline.jobs import apply_run_config
from recon_pipeline.observability.server import HEALTH_PATH, HealthServer
from recon_pipeline.resources import TradingDatabase
from recon_pipeline_tests.integration.conftest import assert_same_tables
from recon_pipeline_tests.reliability.conftest import (
    PROFILE,
    TableBlocker,
    assert_nothing_stored,
    assert_same_as_reference,
    backends,
    comparable_trading_state,
    in_background,
    run_row,
    terminate,
    terminate_all_backends,
    wait_for,
)

pytestmark = pytest.mark.slow
# What libpq reports for a terminated backend, depending on whether the client was reading or writing.
CONNECTION_LOST = ("terminating connection", "server closed the connection unexpectedly")


@pytest.fixture
def app_name(monkeypatch) -> str:
    """A unique application_name for every engine the pipeline makes from now on in this test."""
    name = f"recon_rel_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RECON_DB_APPLICATION_NAME", name)
    return name


def _fault_when_waiting(world, app: str, blocker: TableBlocker, *, kill: bool):
    """Background: wait until the pipeline blocks on the held lock, terminate it (kill=True) or let the
    statement timeout fire, then release the lock."""
    def act():
        pids = wait_for(lambda: backends(world.engine, app, waiting=True), what=f"{app} waiting on a lock")
        if kill:
            terminate(world.engine, pids)
            wait_for(lambda: not set(pids) & set(backends(world.engine, app)), what="backend gone")
        else:
            wait_for(lambda: not backends(world.engine, app, waiting=True), timeout=30, what="statement cancelled")
        blocker.release()
        return pids
    return in_background(act)


def _batch(world, batch_id: str) -> dict:
    return world.rows("SELECT status FROM recon_batches WHERE batch_id = :b", b=batch_id)[0]


def test_connection_lost_during_the_snapshot_fails_the_run_and_the_retry_equals_a_clean_run(
        world, reference, app_name):
    streaks, trading = world.streaks(), world.trading_state()
    blocker = TableBlocker(world.engine, "trade_history")
    helper = _fault_when_waiting(world, app_name, blocker, kill=True)
    try:
        outcome = world.reconcile()
    finally:
        helper.join(60)
        blocker.release()
    assert helper.error is None, helper.error

    assert not outcome.success
    assert outcome.error.startswith("db_snapshot:") and "OperationalError" in outcome.error
    assert any(text in outcome.error for text in CONNECTION_LOST), outcome.error
    row = run_row(world)
    assert row["status"] == "FAILED" and "db_snapshot" in row["error"]  # written on a fresh connection
    assert_nothing_stored(world, streaks, trading)

    retry = world.reconcile()
    assert retry.success, retry.error
    assert_same_as_reference(world, reference)


def test_connection_lost_during_apply_rolls_back_and_the_retry_corrects_fully(world, reference, app_name):
    outcome = world.reconcile()
    batch_id = outcome.batch["batch_id"]
    before = world.trading_state()
    engine = make_engine(world.url)  # the applier's engine, named app_name
    # Hold recon_corrections: the applier blocks AFTER its trading-table UPDATEs, inside its transaction.
    blocker = TableBlocker(world.engine, "recon_corrections", "EXCLUSIVE")
    helper = _fault_when_waiting(world, app_name, blocker, kill=True)
    try:
        with pytest.raises(sa.exc.OperationalError, match="|".join(CONNECTION_LOST)):
            apply_batch(engine, batch_id)
    finally:
        helper.join(60)
        blocker.release()
    assert helper.error is None, helper.error

    assert_same_tables(before, world.trading_state())  # nothing half-applied
    assert _batch(world, batch_id)["status"] == "PENDING"
    assert set(world.table("recon_corrections")["status"]) == {"PENDING"}

    report = apply_batch(engine, batch_id)  # same engine: the dead connection was discarded
    engine.dispose()
    assert report.status == "APPLIED" and report.counts.get("APPLIED", 0) > 0
    assert_same_tables(reference.applied_state, comparable_trading_state(world))


def test_statement_timeout_in_snapshot_and_in_apply_leaves_nothing_half_done(world, reference, app_name):
    """``ALTER DATABASE <test db> SET statement_timeout`` (the setting a DBA would use), on the test's own DB."""
    with world.engine.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{world.database}" SET statement_timeout = \'1500ms\''))
        conn.commit()
    streaks, trading = world.streaks(), world.trading_state()

    blocker = TableBlocker(world.engine, "trade_history")
    helper = _fault_when_waiting(world, app_name, blocker, kill=False)
    try:
        failed = world.reconcile()
    finally:
        helper.join(60)
        blocker.release()
    assert helper.error is None, helper.error
    assert not failed.success and "canceling statement due to statement timeout" in failed.error
    assert run_row(world)["status"] == "FAILED"
    assert_nothing_stored(world, streaks, trading)

    outcome = world.reconcile()  # same timeout, nothing blocking: completes
    assert outcome.success, outcome.error
    assert_same_as_reference(world, reference)

    before = world.trading_state()
    engine = make_engine(world.url)
    blocker = TableBlocker(world.engine, "recon_corrections", "EXCLUSIVE")
    helper = _fault_when_waiting(world, app_name, blocker, kill=False)
    try:
        with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
            apply_batch(engine, outcome.batch["batch_id"])
    finally:
        helper.join(60)
        blocker.release()
    assert helper.error is None, helper.error
    assert_same_tables(before, world.trading_state())
    assert _batch(world, outcome.batch["batch_id"])["status"] == "PENDING"

    assert apply_batch(engine, outcome.batch["batch_id"]).status == "APPLIED"
    engine.dispose()
    assert_same_tables(reference.applied_state, comparable_trading_state(world))


def _health(url: str) -> dict:
    with urllib.request.urlopen(url + HEALTH_PATH, timeout=10) as response:
        return json.loads(response.read())


def test_lock_held_by_another_session_skips_the_apply_job_with_a_reason_and_health_shows_it(world, reference):
    from recon_pipeline.definitions import defs

    outcome = world.reconcile()
    batch_id = outcome.batch["batch_id"]
    before = world.trading_state()
    job = defs.resolve_job_def("apply_batch_job")
    resources = {"trading_db": TradingDatabase(url=world.url)}

    holder = world.engine.connect()
    tx = holder.begin()
    lock.acquire(holder, PROFILE)
    try:
        with HealthServer(world.engine) as health:
            doc = _health(health.url)
            assert doc["profiles"][PROFILE]["lockHeld"] is True
            assert doc["profiles"][PROFILE]["lockHeldSeconds"] is not None
            assert doc["profiles"]["alpha"]["lockHeld"] is False
            result = job.execute_in_process(run_config=apply_run_config(batch_id), instance=world.instance,
                                            resources=resources, raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        message = failure.step_failure_data.user_failure_data.description
        assert message.startswith("skipped: reconciliation lock of profile 'gamma' is held by another session")
        assert_same_tables(before, world.trading_state())
        assert _batch(world, batch_id)["status"] == "PENDING"
    finally:
        tx.rollback()
        holder.close()

    with HealthServer(world.engine) as health:
        assert _health(health.url)["profiles"][PROFILE]["lockHeld"] is False
    result = job.execute_in_process(run_config=apply_run_config(batch_id), instance=world.instance,
                                    resources=resources, raise_on_error=False)
    assert result.success
    assert _batch(world, batch_id)["status"] == "APPLIED"
    assert_same_tables(reference.applied_state, comparable_trading_state(world))


def test_all_backends_terminated_between_two_runs_as_after_a_postgres_restart(world, reference):
    first = world.reconcile()
    assert first.success, first.error
    assert world.count("recon_batches") == 1  # the long-lived engine now holds a pooled connection
    assert terminate_all_backends(world.database) >= 1

    # The long-lived engine (pool_pre_ping) replaces its dead pooled connection transparently.
    report = apply_batch(world.engine, first.batch["batch_id"])
    assert report.status == "APPLIED"
    assert_same_tables(reference.applied_state, comparable_trading_state(world))

    assert terminate_all_backends(world.database) >= 1
    with HealthServer(world.engine) as health:  # the health server survives it too
        try:
            doc = _health(health.url)
        except urllib.error.HTTPError as exc:  # pragma: no cover - would be the bug
            raise AssertionError(f"health answered {exc.code} after the restart") from exc
        assert doc["profiles"][PROFILE]["lastStatus"] == "SUCCESS"

    second = world.reconcile()
    assert second.success, second.error
    assert run_row(world)["status"] == "SUCCESS" and run_row(world)["run_id"] == second.run_id
