"""The demo world twice over: once behind Celery workers, once in process, and their recon_ tables.

:func:`distributed_world` seeds the demo trading rows into a fresh Postgres database, serves the demo
scenario from the loopback emulator, creates a scratch Postgres database for Dagster's own storage
(``deploy/dagster.yaml``), and starts N Celery workers with the exchange credentials in their
environment. :func:`seeded_database` is the second, independent trading database the in-process
reference run writes to. :func:`recon_tables` reads every ``recon_`` table minus the columns that
name runs or hold wall-clock times, in a stable row order, for an exact comparison.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from recon_pipeline_tests.scaling import harness

# Columns that differ between two correct executions: ids of Dagster runs and wall-clock stamps.
VOLATILE = {
    "recon_runs": ("run_id", "finished_at"),
    "recon_findings": (),
    "recon_batches": ("run_id", "apply_run_id", "created_at", "applied_at"),
    "recon_corrections": ("applied_at",),
    "recon_parity_streaks": ("updated_at",),
    "recon_locks": ("acquired_at", "expires_at"),
    "recon_schema_migrations": ("applied_at",),
}
ORDER = {
    "recon_runs": "window_start, profile_id",
    "recon_findings": "window_start, profile_id, seq",
    "recon_batches": "batch_id",
    "recon_corrections": "batch_id, correction_id",
    "recon_parity_streaks": "trade_id",
    "recon_locks": "profile_id",
    "recon_schema_migrations": "version",
}
TRADING_ORDER = {"profiles": "profile_id", "orders": "order_id", "trade_history": "trade_id",
                 "positions": "profile_id, symbol", "capital_ledger": "profile_id", "trading_pauses": "pause_id"}
# Worker processes import the code location (and Great Expectations, imported lazily by the checks)
# once at start, before the pool process is forked, instead of in their first step.
WORKER_INCLUDES = ("recon_pipeline.definitions", "great_expectations")


def _frame(conn, sql: str) -> pd.DataFrame:
    result = conn.execute(sa.text(sql))
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def recon_table_names(engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(sa.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            " AND table_name LIKE 'recon\\_%'")))


def recon_tables(engine) -> dict[str, pd.DataFrame]:
    """Every recon_ table (a table this module does not know fails loudly: add it to VOLATILE)."""
    names = recon_table_names(engine)
    unknown = sorted(set(names) - set(VOLATILE))
    assert not unknown, f"recon_ tables without a comparison rule: {unknown}"
    out = {}
    with engine.connect() as conn:
        for name in names:
            frame = _frame(conn, f"SELECT * FROM {name} ORDER BY {ORDER[name]}")
            out[name] = frame.drop(columns=list(VOLATILE[name])).reset_index(drop=True)
    return out


def trading_tables(engine) -> dict[str, pd.DataFrame]:
    """The trading tables minus ``updated_at`` (the applier stamps wall-clock time)."""
    out = {}
    with engine.connect() as conn:
        for name, order in TRADING_ORDER.items():
            frame = _frame(conn, f"SELECT * FROM {name} ORDER BY {order}")
            out[name] = frame.drop(columns=[c for c in ("updated_at",) if c in frame.columns])
    return out


def assert_same(left: dict[str, pd.DataFrame], right: dict[str, pd.DataFrame]) -> None:
    assert sorted(left) == sorted(right)
    for name in left:
        pd.testing.assert_frame_equal(left[name], right[name], check_exact=True, obj=name)


def _db_url(name: str) -> str:
    return str(sa.engine.make_url(harness.admin_url()).set(database=name).render_as_string(hide_password=False))


@contextmanager
def seeded_database() -> Iterator[str]:
    """A fresh trading database, migrated and holding the demo's trading rows; dropped afterwards."""
    from recon_pipeline.db.engine import make_engine
    from recon_pipeline.db.migrate import upgrade
    from recon_pipeline.db.seed import seed_file
    from recon_pipeline.demo.run import TRADING_DB

    with harness.scratch_database("recon_trade") as name:
        url = _db_url(name)
        engine = make_engine(url)
        try:
            upgrade(engine)
            seed_file(engine, TRADING_DB)
        finally:
            engine.dispose()
        yield url


@contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class DistributedWorld:
    url: str
    engine: sa.engine.Engine
    server: object
    instance: object
    workers: harness.CeleryWorkers
    accounts: dict[str, str]

    def warm_up(self) -> None:
        """Nothing left to warm: the workers import the code location before they report ready."""

    def backfill(self, windows: Sequence[pd.Timestamp], profiles: Sequence[str], *, apply: bool = True,
                 max_concurrent_runs: int = 4) -> list[harness.RunOutcome]:
        return harness.run_backfill(self.url, windows, profiles, accounts=self.accounts, apply=apply,
                                    max_concurrent_runs=max_concurrent_runs)


@contextmanager
def distributed_world(tmp: Path, n_workers: int, *, server=None) -> Iterator[DistributedWorld]:
    """Trading DB + emulator + Postgres-backed DAGSTER_HOME + ``n_workers`` Celery workers."""
    from dagster import DagsterInstance

    from recon_pipeline.db.engine import make_engine
    from recon_pipeline.demo.run import SCENARIO
    from recon_pipeline.exchange.emulator import EmulatorServer
    from recon_pipeline.exchange.scenario import load_scenario
    from recon_pipeline.partitions import sync_profile_partitions
    from recon_pipeline.settings import account_env_prefix

    own_server = server is None
    server = server or EmulatorServer(load_scenario(SCENARIO)).start()
    queue = f"recon-test-{uuid.uuid4().hex[:10]}"
    try:
        with seeded_database() as url, harness.scratch_database() as dagster_db:
            home = harness.instance_home(tmp / "dagster_home")
            env = {**harness.instance_env(dagster_db), "DAGSTER_HOME": str(home), "RECON_EXECUTOR": "celery",
                   "RECON_CELERY_QUEUE": queue, "RECON_DATABASE_URL": url, "GX_ANALYTICS_ENABLED": "False"}
            for name, account in server.scenario.accounts.items():
                prefix = account_env_prefix(name)
                env.update({prefix + "API_KEY": account.api_key, prefix + "SECRET": account.secret,
                            prefix + "URL": server.url})
            engine = make_engine(url)
            with patched_environ(env):
                workers = harness.CeleryWorkers(tmp, dict(os.environ), queue, includes=WORKER_INCLUDES)
                instance = DagsterInstance.get()
                try:
                    with engine.connect() as conn:
                        profiles = _frame(conn, "SELECT profile_id, account FROM profiles ORDER BY profile_id")
                    sync_profile_partitions(instance, profiles["profile_id"].tolist())
                    workers.start(n_workers)
                    yield DistributedWorld(url, engine, server, instance, workers,
                                           dict(zip(profiles["profile_id"], profiles["account"], strict=True)))
                finally:
                    workers.stop()
                    instance.dispose()
                    engine.dispose()
    finally:
        if own_server:
            server.stop()
