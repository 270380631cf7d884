"""Scale-out on Dagster's Celery executor: same tables as in process, and exactly-once under racing workers.

Started by the tests themselves (no daemon): Postgres instance storage from ``deploy/dagster.yaml``
in a scratch database, Celery workers (``celery -A dagster_celery.app worker``) on the local Redis on
a private queue, the demo scenario on the loopback emulator. Workers are killed at teardown (and die
with the test process if it is killed).
"""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from recon_pipeline.apply import lock
from recon_pipeline_tests.scaling import harness, world

pytestmark = [pytest.mark.slow, pytest.mark.scaling, pytest.mark.celery, pytest.mark.xdist_group("scaling"),
              pytest.mark.timeout(900)]

PROFILES = ("alpha", "beta", "gamma")
WINDOWS = list(pd.date_range("2026-11-30T04:00:00Z", "2026-11-30T09:00:00Z", freq="h"))  # clock 10:05Z
FAST_EXCHANGE = {"enable_rate_limit": False, "timeout_ms": 5000}


def _in_process(url: str, windows, profiles, *, apply: bool = True):
    """The reference: the CLI's in-process backfill (``recon-pipeline backfill --apply``)."""
    from dagster import DagsterInstance

    from recon_pipeline.runner import backfill

    with DagsterInstance.ephemeral() as instance:
        outcomes = list(backfill(min(windows), max(windows), list(profiles), apply=apply, instance=instance,
                                 db_url=url, exchange_config=FAST_EXCHANGE))
    failed = [o.summary() + f" {o.error}" for o in outcomes if not o.success]
    assert not failed, failed
    return outcomes


def _assert_succeeded(dist, outcomes):
    failed = [f"{o.job} {o.profile} {o.window}: {harness.run_errors(dist.instance, o.run_id)}"
              for o in outcomes if not o.success]
    assert not failed, "\n".join(failed)


def _applied_twice(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT correction_id, count(*) FROM recon_corrections WHERE status = 'APPLIED'"
            " GROUP BY correction_id HAVING count(*) > 1")).fetchall()


def test_celery_backfill_matches_in_process_run(tmp_path, redis_broker):
    """6 hours x 3 profiles through two Celery workers == the same partitions in process."""
    with world.distributed_world(tmp_path, n_workers=2) as dist:
        outcomes = dist.backfill(WINDOWS, PROFILES)
        _assert_succeeded(dist, outcomes)
        reconciles = [o for o in outcomes if o.job == "reconcile"]
        assert len(reconciles) == len(WINDOWS) * len(PROFILES)
        assert any(o.job == "apply_batch_job" for o in outcomes)
        steps = dist.workers.tasks_per_worker()
        assert all(n > 0 for n in steps), f"a worker ran no step: {steps}"

        celery_recon, celery_trading = world.recon_tables(dist.engine), world.trading_tables(dist.engine)
        assert _applied_twice(dist.engine) == []
        with world.seeded_database() as reference_url:  # same emulator, same env, second database
            _in_process(reference_url, WINDOWS, PROFILES)
            engine = sa.create_engine(reference_url)
            try:
                reference_recon, reference_trading = world.recon_tables(engine), world.trading_tables(engine)
            finally:
                engine.dispose()

    assert set(celery_recon) >= {"recon_runs", "recon_findings", "recon_batches", "recon_corrections",
                                 "recon_parity_streaks"}
    assert len(celery_recon["recon_runs"]) == len(WINDOWS) * len(PROFILES)
    assert (celery_recon["recon_runs"]["status"] == "SUCCESS").all()
    assert len(celery_recon["recon_findings"]) and len(celery_recon["recon_corrections"])
    assert "APPLIED" in set(celery_recon["recon_batches"]["status"])
    world.assert_same(celery_recon, reference_recon)
    world.assert_same(celery_trading, reference_trading)


def test_racing_workers_never_apply_a_correction_twice(tmp_path, redis_broker):
    """Apply runs of one profile launched at once on two workers: every correction lands at most once.

    alpha has two PENDING batches (04:00 and 09:00, both built before either was applied). Three apply
    runs start together: the 09:00 batch twice (each applies 04:00 first, in window order) and the
    04:00 batch once. The profile's advisory lock, the batch re-read under it and the partial unique
    index decide; a loser fails with LockBusy or finds the batch APPLIED. A batch still PENDING
    afterwards is applied once more, as the apply sensor's retry would. The end state must equal
    applying the two batches once, in window order, in process.
    """
    from recon_pipeline.apply.applier import apply_in_window_order
    from recon_pipeline.runner import reconcile_partition

    windows = [WINDOWS[0], WINDOWS[-1]]
    with world.distributed_world(tmp_path, n_workers=2) as dist:
        for window in windows:
            outcome = reconcile_partition(window, "alpha", db_url=dist.url, exchange_config=FAST_EXCHANGE,
                                          instance=_ephemeral())
            assert outcome.success, outcome.error
        batches = _pending(dist.engine, "alpha")
        assert len(batches) == 2, batches
        early, late = batches

        # A worker that finds the profile locked writes nothing and fails, so the sensor retries it.
        with dist.engine.connect() as conn, conn.begin():
            lock.acquire(conn, "alpha")
            blocked = harness.race_apply(dist.url, [late], "alpha")
        assert not blocked[0].success
        assert "lock" in harness.run_errors(dist.instance, blocked[0].run_id).lower()
        assert _pending(dist.engine, "alpha") == batches
        assert not _statuses(dist.engine) - {"PENDING", "DRY_RUN"}

        raced = harness.race_apply(dist.url, [late, late, early], "alpha")
        assert any(o.success for o in raced)
        for outcome in raced:
            if not outcome.success:
                assert "lock" in harness.run_errors(dist.instance, outcome.run_id).lower()
        if _pending(dist.engine, "alpha"):
            retry = harness.race_apply(dist.url, [late], "alpha")
            assert retry[0].success, harness.run_errors(dist.instance, retry[0].run_id)
        assert _pending(dist.engine, "alpha") == []
        assert _applied_twice(dist.engine) == []
        raced_recon, raced_trading = world.recon_tables(dist.engine), world.trading_tables(dist.engine)

        with world.seeded_database() as reference_url:
            instance = _ephemeral()
            for window in windows:
                assert reconcile_partition(window, "alpha", db_url=reference_url, exchange_config=FAST_EXCHANGE,
                                           instance=instance).success
            engine = sa.create_engine(reference_url)
            try:
                reference_batches = _pending(engine, "alpha")
                assert reference_batches == batches  # content-addressed batch ids
                apply_in_window_order(engine, reference_batches[-1])
                reference_recon, reference_trading = world.recon_tables(engine), world.trading_tables(engine)
            finally:
                engine.dispose()

    world.assert_same(raced_recon, reference_recon)
    world.assert_same(raced_trading, reference_trading)
    applied = raced_recon["recon_corrections"]
    assert (applied["status"] == "APPLIED").sum() == applied.loc[applied["status"] == "APPLIED",
                                                                 "correction_id"].nunique() > 0


def _ephemeral():
    from dagster import DagsterInstance

    return DagsterInstance.ephemeral()


def _pending(engine, profile: str) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text(
            "SELECT batch_id FROM recon_batches WHERE profile_id = :p AND status = 'PENDING' ORDER BY window_start"),
            {"p": profile})]


def _statuses(engine) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.text("SELECT DISTINCT status FROM recon_corrections"))}
