"""The demo world on the real Postgres: trading rows seeded, the emulator serving the demo scenario."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest
import sqlalchemy as sa

from recon_pipeline.db.seed import seed_file
from recon_pipeline.demo.run import SCENARIO, TRADING_DB
from recon_pipeline.runner import Outcome, reconcile_partition

DEMO_WINDOW = pd.Timestamp("2026-11-30T09:00:00Z")
TRADING_TABLES = ("profiles", "orders", "trade_history", "positions", "capital_ledger", "trading_pauses")
FAST_EXCHANGE = {"enable_rate_limit": False, "timeout_ms": 5000}


@dataclass
class World:
    url: str
    engine: sa.engine.Engine
    server: object
    instance: object

    def reconcile(self, profile: str, window=DEMO_WINDOW, **kwargs) -> Outcome:
        kwargs.setdefault("exchange_config", FAST_EXCHANGE)
        return reconcile_partition(window, profile, instance=self.instance, db_url=self.url, **kwargs)

    def table(self, name: str, order_by: str | None = None) -> pd.DataFrame:
        sql = f"SELECT * FROM {name}" + (f" ORDER BY {order_by}" if order_by else "")
        with self.engine.connect() as conn:
            result = conn.execute(sa.text(sql))
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def trading_state(self) -> dict[str, pd.DataFrame]:
        keys = {"profiles": "profile_id", "orders": "order_id", "trade_history": "trade_id",
                "positions": "profile_id, symbol", "capital_ledger": "profile_id", "trading_pauses": "pause_id"}
        return {t: self.table(t, keys[t]) for t in TRADING_TABLES}


def assert_same_tables(before: dict, after: dict) -> None:
    for name in before:
        pd.testing.assert_frame_equal(before[name], after[name], check_exact=True, obj=name)


@pytest.fixture
def demo_world(pg_engine, pg_url, emulator, exchange_env):
    from dagster import instance_for_test

    seed_file(pg_engine, TRADING_DB)
    server = emulator(SCENARIO)
    exchange_env(server)
    with instance_for_test() as instance:  # persistent (temp dir): schedules and sensors need an instance ref
        yield World(pg_url, pg_engine, server, instance)
