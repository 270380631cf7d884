"""The apply protocol under races and crashes, on the real Postgres (DESIGN section 5).

Processes, not threads: each applier has its own connection and its own Python, as two sensors or a
retried run would.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest
import sqlalchemy as sa

from recon_pipeline.apply import lock
from recon_pipeline.apply.applier import apply_batch
from recon_pipeline.db.engine import make_engine
from recon_pipeline_tests.integration.conftest import assert_same_tables

pytestmark = pytest.mark.slow
SPAWN = mp.get_context("spawn")


def _apply_at(url: str, batch_id: str, start_at: float, queue) -> None:
    engine = make_engine(url)
    time.sleep(max(0.0, start_at - time.time()))
    try:
        report = apply_batch(engine, batch_id)
        queue.put(("ok", report.status, report.skipped_reason, report.counts))
    except lock.LockBusy as exc:
        queue.put(("busy", str(exc), None, {}))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        queue.put(("error", f"{type(exc).__name__}: {exc}", None, {}))
    finally:
        engine.dispose()


def _apply_forever(url: str, batch_id: str) -> None:
    os.environ["RECON_DB_APPLICATION_NAME"] = "recon_apply_victim"
    engine = make_engine(url)
    apply_batch(engine, batch_id)


def test_two_processes_started_together_apply_each_correction_once(demo_world):
    outcome = demo_world.reconcile("alpha")
    batch_id = outcome.batch["batch_id"]
    queue = SPAWN.Queue()
    start_at = time.time() + 3.0
    procs = [SPAWN.Process(target=_apply_at, args=(demo_world.url, batch_id, start_at, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)

    winners = [r for r in results if r[0] == "ok" and r[2] is None]
    assert len(winners) == 1, results
    loser = next(r for r in results if r is not winners[0])
    assert loser[0] == "busy" or (loser[0] == "ok" and "APPLIED" in loser[2]), results
    corrections = demo_world.table("recon_corrections")
    applied = corrections[corrections["status"] == "APPLIED"]
    assert applied["correction_id"].is_unique and len(applied) == len(corrections)


def test_applying_twice_in_sequence_is_applying_once(demo_world):
    outcome = demo_world.reconcile("gamma")
    first = apply_batch(demo_world.engine, outcome.batch["batch_id"])
    state = demo_world.trading_state()
    second = apply_batch(demo_world.engine, outcome.batch["batch_id"])
    assert first.status == "APPLIED" and not first.skipped_reason
    assert second.skipped_reason == "batch is APPLIED, not PENDING"
    assert_same_tables(state, demo_world.trading_state())


def test_a_correction_id_cannot_be_applied_in_two_batches(demo_world):
    """The partial unique index is the last line of defence, whatever the application code does."""
    outcome = demo_world.reconcile("alpha", apply=True)
    with demo_world.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM recon_corrections WHERE status = 'APPLIED' LIMIT 1")).mappings().one()
    dup = dict(row)
    dup["batch_id"] = "another-batch"
    cols = ", ".join(dup)
    with pytest.raises(sa.exc.IntegrityError):
        with demo_world.engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO recon_corrections ({cols}) VALUES ({', '.join(':' + c for c in dup)})"),
                         dup)
    assert outcome.batch["status"] == "APPLIED"


def _backend_waiting(engine, app_name: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = :a AND wait_event_type = 'Lock'"),
            {"a": app_name}).scalar())


def _backend_gone(engine, app_name: str) -> bool:
    with engine.connect() as conn:
        return not conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"),
                                {"a": app_name}).scalar()


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_killed_mid_transaction_leaves_tables_as_before_and_retry_completes(demo_world):
    outcome = demo_world.reconcile("alpha")
    batch_id = outcome.batch["batch_id"]
    before = demo_world.trading_state()

    # Hold recon_corrections so the applier blocks after writing the trading rows, inside its transaction.
    blocker = demo_world.engine.connect()
    tx = blocker.begin()
    blocker.execute(sa.text("LOCK TABLE recon_corrections IN EXCLUSIVE MODE"))
    victim = SPAWN.Process(target=_apply_forever, args=(demo_world.url, batch_id))
    victim.start()
    try:
        _wait(lambda: _backend_waiting(demo_world.engine, "recon_apply_victim"))
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=10)
    finally:
        tx.rollback()
        blocker.close()
    _wait(lambda: _backend_gone(demo_world.engine, "recon_apply_victim"))

    assert_same_tables(before, demo_world.trading_state())
    batches = demo_world.table("recon_batches")
    assert batches.loc[batches["batch_id"] == batch_id, "status"].item() == "PENDING"

    report = apply_batch(demo_world.engine, batch_id)
    assert report.status == "APPLIED" and report.counts.get("APPLIED", 0) > 0
    corrections = demo_world.table("recon_corrections")
    assert set(corrections["status"]) == {"APPLIED"}


def test_lock_held_by_another_session_skips_with_a_reason(demo_world):
    outcome = demo_world.reconcile("beta")
    holder = demo_world.engine.connect()
    tx = holder.begin()
    lock.acquire(holder, "beta")
    try:
        before = demo_world.trading_state()
        with pytest.raises(lock.LockBusy, match="beta"):
            apply_batch(demo_world.engine, outcome.batch["batch_id"])
        assert_same_tables(before, demo_world.trading_state())
    finally:
        tx.rollback()
        holder.close()
    assert apply_batch(demo_world.engine, outcome.batch["batch_id"]).status == "APPLIED"
