"""A backfill with read-ahead (the default) finds, corrects and leaves behind exactly what the same
backfill finds without it: on the real Postgres, through real ccxt, the worker a spawned process."""

from __future__ import annotations

import gc
import weakref

import pandas as pd
import pytest
import sqlalchemy as sa

from recon_pipeline import runner
from recon_pipeline.db.engine import make_engine
from recon_pipeline.db.seed import seed_file
from recon_pipeline.demo.run import SCENARIO, TRADING_DB
from recon_pipeline.exchange.read_ahead import ReadAhead
from recon_pipeline.runner import backfill, read_ahead_enabled
from recon_pipeline.settings import SettingsError
from recon_pipeline_tests.fixtures.postgres import _scratch_database, _url_for
from recon_pipeline_tests.integration.conftest import FAST_EXCHANGE

QUERIES = {
    "runs": "SELECT profile_id, window_start, status, mismatch_count, missing_from_exchange, missing_in_db, "
            "no_go_count, correction_count, parity_evaluated FROM recon_runs",
    "findings": "SELECT profile_id, window_start, kind, reason, symbol, trade_id, exchange_order_id, "
                "client_order_id, fill_ids, qty_db, qty_exchange FROM recon_findings",
    "corrections": "SELECT c.correction_id, c.action, c.target_table, c.target_id, c.expected_state, c.new_state, "
                   "c.status FROM recon_corrections c",
    "trade_history": "SELECT trade_id, status, entry_qty, exit_qty, exit_price, exit_time, exit_source "
                     "FROM trade_history",
    "orders": "SELECT order_id, status, filled_qty FROM orders",
}


def _state(url: str) -> dict[str, pd.DataFrame]:
    engine = make_engine(url)
    out = {}
    with engine.connect() as conn:
        for name, sql in QUERIES.items():
            result = conn.execute(sa.text(sql))
            frame = pd.DataFrame(result.fetchall(), columns=list(result.keys())).astype(str)
            out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    engine.dispose()
    return out


def test_backfill_with_read_ahead_equals_backfill_without(pg_template, emulator, exchange_env, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)          # the CLI's default: an ephemeral instance
    exchange_env(emulator(SCENARIO))
    taken: list[int] = []
    original = ReadAhead.take

    def spy(self, account, lo, hi):
        spans = original(self, account, lo, hi)
        taken.append(len(spans))
        return spans

    monkeypatch.setattr(ReadAhead, "take", spy)
    frozen_after: list[int] = []  # windows done when the start-up heap was frozen (once per backfill)
    monkeypatch.setattr(runner, "freeze_startup_heap", lambda: frozen_after.append(len(outcomes)))
    states = {}
    for mode in (False, True):
        with _scratch_database("recon_t", pg_template) as name:
            url = _url_for(name)
            engine = make_engine(url)
            seed_file(engine, TRADING_DB)
            engine.dispose()
            outcomes = []
            for outcome in backfill("2026-11-30T05:00:00Z", "2026-11-30T09:00:00Z", ["alpha", "beta"], apply=True,
                                    db_url=url, exchange_config=FAST_EXCHANGE, read_ahead=mode):
                outcomes.append(outcome)
            assert [o.success for o in outcomes] == [True] * 10
            states[mode] = _state(url)
    assert frozen_after == [1, 1]
    # without: nothing taken; with: windows 06-08 of each profile were read ahead (09 is the live one)
    assert sum(1 for n in taken if n) == 6
    assert len(states[True]["findings"]) and len(states[True]["corrections"])
    for name in QUERIES:
        pd.testing.assert_frame_equal(states[True][name], states[False][name], obj=name)


def test_read_ahead_switch():
    assert read_ahead_enabled({}) is True
    assert read_ahead_enabled({"RECON_BACKFILL_READ_AHEAD": "false"}) is False
    with pytest.raises(SettingsError, match="RECON_BACKFILL_READ_AHEAD"):
        read_ahead_enabled({"RECON_BACKFILL_READ_AHEAD": "sometimes"})


def test_the_start_up_heap_is_frozen_without_freezing_garbage():
    class Cycle:
        pass

    garbage = Cycle()
    garbage.self = garbage
    probe = weakref.ref(garbage)
    del garbage
    try:
        runner.freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        assert probe() is None  # collected before the freeze, not kept forever
    finally:
        gc.unfreeze()
