"""Fixtures of the reliability suite (issue 7): the demo world, a clean reference run, DB-fault helpers.

- ``world``: the demo trading rows in a fresh Postgres database, the emulator serving the demo
  scenario, and an *ephemeral* Dagster instance (in memory: about half the time of a persistent
  one per run, and ``instance.all_logs(run_id)`` still returns every event of a run).
- ``reference``: one clean, unfaulted reconcile + apply of ``PROFILE`` on a second fresh database,
  taken once per session; every "the next run produces exactly what an unfaulted run would" check
  compares against it.
- ``fast_backoff``: the exchange client's back-off shortened to 50 ms (the retry count, the
  ``Retry-After`` rule and the 418 rule are unchanged), so a persistent fault that is retried to the
  end costs a fraction of a second instead of 3.5 s.

``PROFILE`` is ``gamma``: its run evaluates the parity heartbeat (streaks move from 2 to 3 on a clean
run), pauses trading, quarantines and synthetically closes slices; and, because the snapshot is taken
for the whole account ``main``, every exchange endpoint is called (spot and swap fills, orders, open
orders, positions, balances, mark prices).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass

import pandas as pd
import pytest
import sqlalchemy as sa

from recon_pipeline.apply.applier import apply_batch
from recon_pipeline.db.engine import make_engine
from recon_pipeline.db.seed import seed_file
from recon_pipeline.demo.run import SCENARIO, TRADING_DB
from recon_pipeline.exchange.emulator import EmulatorServer
from recon_pipeline.exchange.scenario import load_scenario
from recon_pipeline.runner import reconcile_partition
from recon_pipeline_tests.fixtures.emulator import set_exchange_env
from recon_pipeline_tests.fixtures.postgres import _admin_engine, _drop, _url_for
from recon_pipeline_tests.integration.conftest import DEMO_WINDOW, TRADING_TABLES, World

PROFILE = "gamma"
ACCOUNT = "main"
EXCHANGE = {"enable_rate_limit": False, "timeout_ms": 5000}
RECON_TABLES = ("recon_runs", "recon_findings", "recon_batches", "recon_corrections", "recon_parity_streaks",
                "recon_locks")
# Columns a correction is identified and judged by (not its batch, status or time of application).
CORRECTION_KEY = ["correction_id", "action", "target_table", "target_id", "expected_state", "new_state", "evidence"]
RUN_COUNTS = ["status", "live", "parity_evaluated", "clean", "mismatch_count", "missing_from_exchange",
              "missing_in_db", "no_go_count", "correction_count"]
STREAK_COLUMNS = ["trade_id", "profile_id", "streak", "first_seen_window", "last_window_start"]


def new_instance():
    from dagster import DagsterInstance

    return DagsterInstance.ephemeral(settings={"python_logs": {"python_log_level": "WARNING"}})


class FaultWorld(World):
    def reconcile(self, profile: str = PROFILE, window=DEMO_WINDOW, **kwargs):
        kwargs.setdefault("exchange_config", EXCHANGE)
        return reconcile_partition(window, profile, instance=self.instance, db_url=self.url, **kwargs)

    def rows(self, sql: str, **params) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar())

    def streaks(self) -> pd.DataFrame:
        return self.table("recon_parity_streaks", "trade_id")[STREAK_COLUMNS].reset_index(drop=True)

    @property
    def database(self) -> str:
        return sa.engine.make_url(self.url).database


@dataclass
class Recorded:
    """What one reconcile of ``PROFILE`` left in the pipeline's tables (and, after apply, the trading ones)."""

    findings: pd.DataFrame
    corrections: pd.DataFrame
    run: dict
    streaks: pd.DataFrame
    applied_state: dict | None = None


def findings_of(world: World, profile: str = PROFILE) -> pd.DataFrame:
    frame = world.table("recon_findings", "seq")
    return frame[frame["profile_id"] == profile].reset_index(drop=True)


def corrections_of(world: World, profile: str = PROFILE) -> pd.DataFrame:
    frame = world.table("recon_corrections", "correction_id")
    return frame.loc[frame["profile_id"] == profile, CORRECTION_KEY].reset_index(drop=True)


def run_row(world: World, profile: str = PROFILE) -> dict:
    frame = world.table("recon_runs")
    frame = frame[frame["profile_id"] == profile]
    assert len(frame) == 1, frame
    return frame.iloc[0].to_dict()


def comparable_trading_state(world: World) -> dict[str, pd.DataFrame]:
    """The trading tables without ``updated_at`` (the applier stamps it with the wall clock)."""
    state = world.trading_state()
    return {name: frame.drop(columns=[c for c in ("updated_at",) if c in frame.columns]) for name, frame in state.items()}


def record(world: World, profile: str = PROFILE) -> Recorded:
    run = run_row(world, profile)
    return Recorded(findings_of(world, profile), corrections_of(world, profile),
                    {k: run[k] for k in RUN_COUNTS}, world.table("recon_parity_streaks", "trade_id")[STREAK_COLUMNS]
                    .reset_index(drop=True))


def assert_same_as_reference(world: World, reference: Recorded, profile: str = PROFILE) -> None:
    """The world's evaluation of ``profile`` is exactly the clean reference run's."""
    got = record(world, profile)
    pd.testing.assert_frame_equal(got.findings, reference.findings, check_exact=True, obj="recon_findings")
    pd.testing.assert_frame_equal(got.corrections, reference.corrections, check_exact=True, obj="recon_corrections")
    assert got.run == reference.run
    pd.testing.assert_frame_equal(got.streaks, reference.streaks, check_exact=True, obj="recon_parity_streaks")


def assert_nothing_stored(world: World, streaks_before: pd.DataFrame, trading_before: dict) -> None:
    """A failed run: no batch, no correction, no finding, no streak moved, trading tables untouched."""
    assert world.count("recon_batches") == 0
    assert world.count("recon_corrections") == 0
    assert world.count("recon_findings") == 0
    pd.testing.assert_frame_equal(world.streaks(), streaks_before, check_exact=True, obj="recon_parity_streaks")
    for name in TRADING_TABLES:
        pd.testing.assert_frame_equal(world.trading_state()[name], trading_before[name], check_exact=True, obj=name)


def _fresh_database(pg_template: str) -> str:
    admin = _admin_engine()
    name = f"recon_rel_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    admin.dispose()
    return name


@pytest.fixture(scope="session")
def reference(pg_template) -> Recorded:
    """A clean reconcile + apply of PROFILE on its own database (the ground truth of every recovery check)."""
    name = _fresh_database(pg_template)
    url = _url_for(name)
    engine = make_engine(url)
    server = EmulatorServer(load_scenario(SCENARIO)).start()
    try:
        seed_file(engine, TRADING_DB)
        with pytest.MonkeyPatch.context() as mp:
            set_exchange_env(mp, server)
            world = FaultWorld(url, engine, server, new_instance())
            outcome = world.reconcile(PROFILE)
            assert outcome.success, outcome.error
            recorded = record(world)
            assert len(recorded.corrections) > 0 and len(recorded.findings) > 0
            report = apply_batch(engine, outcome.batch["batch_id"])
            assert report.status == "APPLIED"
            recorded.applied_state = comparable_trading_state(world)
        return recorded
    finally:
        server.stop()
        engine.dispose()
        admin = _admin_engine()
        _drop(admin, name)
        admin.dispose()


@pytest.fixture
def world(pg_engine, pg_url, emulator, exchange_env) -> FaultWorld:
    seed_file(pg_engine, TRADING_DB)
    server = emulator(SCENARIO)
    exchange_env(server)
    return FaultWorld(pg_url, pg_engine, server, new_instance())


@pytest.fixture
def fast_backoff(monkeypatch):
    """Shorten the exchange client's back-off (retry count and the 418 / Retry-After rules unchanged)."""
    from recon_pipeline.exchange import client

    original = client.make_exchange

    def fast(*args, **kwargs):  # the resource passes retry_backoff_s itself: override it, not a default
        kwargs["retry_backoff_s"] = 0.05
        return original(*args, **kwargs)

    monkeypatch.setattr(client, "make_exchange", fast)


# --- database-fault helpers ------------------------------------------------------------------------------


def backends(engine, app_name: str, *, waiting: bool = False) -> list[int]:
    sql = "SELECT pid FROM pg_stat_activity WHERE application_name = :a"
    if waiting:
        sql += " AND wait_event_type = 'Lock'"
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text(sql), {"a": app_name})]


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout}s")


def terminate(engine, pids) -> None:
    with engine.connect() as conn:
        for pid in pids:
            conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})


def terminate_all_backends(database: str) -> int:
    """"Postgres restarted": every backend of the test's own database is terminated (not the server)."""
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            return len(conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                {"d": database}).fetchall())
    finally:
        admin.dispose()


class TableBlocker:
    """Holds a table lock in another session until released, so the pipeline's next statement on it waits."""

    def __init__(self, engine, table: str, mode: str = "ACCESS EXCLUSIVE"):
        self.conn = engine.connect()
        self.tx = self.conn.begin()
        self.conn.execute(sa.text(f"LOCK TABLE {table} IN {mode} MODE"))

    def release(self) -> None:
        if self.conn is not None:
            self.tx.rollback()
            self.conn.close()
            self.conn = None


def in_background(target, *args) -> threading.Thread:
    """Run ``target`` in a daemon thread; its exception (if any) is kept on ``thread.error``."""
    def run():
        try:
            thread.result = target(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            thread.error = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.result, thread.error = None, None
    thread.start()
    return thread


def json_text(value) -> str:
    return json.dumps(value, default=str, sort_keys=True)
