"""Which trade_history rows the DB snapshot of a window reads (``db.read.read_trade_history``).

Every OPEN slice; the slices touched in the window; every slice alive during the fills span (from the
oldest OPEN entry minus grace up to the latest as-of a run of the window can have, one window length
after its end). Table-driven, on Postgres (the COPY path) and on SQLite (the portable SELECT).
"""

from __future__ import annotations

import pandas as pd
import pytest

from recon_pipeline.db.read import read_trade_history
from recon_pipeline.db.seed import seed

W = pd.Timestamp("2026-11-23T10:00:00Z")        # the window [10:00, 11:00); latest as-of 12:00
H = pd.Timedelta(hours=1)
M = pd.Timedelta(minutes=1)

# trade_id, status, entry_time, exit_time, updated_at, read?
CASES = [
    ("open_long_ago", "OPEN", W - 30 * H, None, W - 30 * H, True),
    ("open_in_future", "OPEN", W + 50 * H, None, W + 50 * H, True),
    ("closed_in_window", "CLOSED", W - 2 * H, W + 10 * M, W + 10 * M, True),
    ("entered_in_window", "CLOSED", W + 5 * M, W + 3 * H, W + 3 * H, True),
    ("partial_exit_in_span_closed_later", "CLOSED", W - 2 * H, W + 20 * H, W + 20 * H, True),
    ("entered_during_live_grace", "CLOSED", W + H + 30 * M, W + H + 40 * M, W + H + 40 * M, True),
    ("closed_before_span", "CLOSED", W - 5 * H, W - 4 * H, W - 4 * H, False),
    ("entered_after_latest_as_of", "CLOSED", W + 2 * H + M, W + 3 * H, W + 3 * H, False),
    ("a_week_later", "CLOSED", W + 100 * H, W + 101 * H, W + 101 * H, False),
    ("touched_in_window_only", "CLOSED", W - 9 * H, W - 8 * H, W + 30 * M, True),
    # the span's ends are inclusive: it starts at W (no older OPEN slice), latest as-of = W + 2 h
    ("exited_exactly_at_span_start", "CLOSED", W - 3 * H, W, W - 2 * H, True),
    ("exited_just_before_span_start", "CLOSED", W - 3 * H, W - M, W - M, False),
    ("entered_exactly_at_latest_as_of", "CLOSED", W + 2 * H, W + 3 * H, W + 3 * H, True),
    # no exit_time recorded (Postgres reads greatest(entry, NULL) as the entry): the entry alone decides
    ("no_exit_time_entered_in_span", "QUARANTINED", W + 10 * M, None, W + 3 * H, True),
    ("no_exit_time_entered_before_span", "QUARANTINED", W - 5 * H, None, W - 5 * H, False),
]


def _row(trade_id, status, entry, exit_, updated):
    return {"trade_id": trade_id, "profile_id": "p1", "symbol": "BTC/USDT:USDT", "side": "long", "status": status,
            "entry_qty": 1.0, "entry_price": 100.0, "entry_time": entry, "entry_client_order_id": None,
            "exit_qty": 0.0 if status == "OPEN" else 1.0, "exit_price": None if status == "OPEN" else 101.0,
            "exit_time": exit_, "exit_source": None if status == "OPEN" else "exchange", "updated_at": updated}


@pytest.fixture
def engine(migrated_engine):
    return migrated_engine


def test_the_snapshot_reads_every_slice_the_fills_span_can_name_and_no_later_one(engine):
    profile = {"profile_id": "p1", "exchange": "binance", "account": "acc", "market_type": "swap",
               "sub_tag": "pa", "allocated_capital_usd": 1000.0, "trading_paused": False}
    # without the 30-hour-old OPEN slice the span starts at the window start (the other OPEN slice is newer)
    rows = [_row(*c[:5]) for c in CASES if c[0] != "open_long_ago"]
    seed(engine, {"profiles": [profile], "trade_history": rows})
    with engine.connect() as conn:
        got = set(read_trade_history(conn, "acc", W, W + H, grace_minutes=5.0)["trade_id"])
    expected = {c[0] for c in CASES if c[5] and c[0] != "open_long_ago"}
    assert got == expected, (sorted(got - expected), sorted(expected - got))


def test_an_old_open_slice_stretches_the_span_back_to_its_entry(engine):
    profile = {"profile_id": "p1", "exchange": "binance", "account": "acc", "market_type": "swap",
               "sub_tag": "pa", "allocated_capital_usd": 1000.0, "trading_paused": False}
    seed(engine, {"profiles": [profile], "trade_history": [_row(*c[:5]) for c in CASES]})
    with engine.connect() as conn:
        got = set(read_trade_history(conn, "acc", W, W + H, grace_minutes=5.0)["trade_id"])
    # the span now starts 30 h before the window: the slice closed before the window is in it too
    expected = {c[0] for c in CASES if c[5]} | {"closed_before_span", "exited_just_before_span_start",
                                                 "no_exit_time_entered_before_span"}
    assert got == expected, (sorted(got - expected), sorted(expected - got))


def test_the_window_snapshot_reads_the_same_frames_on_two_connections_as_on_one(engine):
    """``assets.snapshots.read_db`` reads the slices on a second connection on Postgres, alongside the
    rest: the frames equal the ones each read gives alone, on one connection."""
    from recon_pipeline.assets.snapshots import read_db
    from recon_pipeline.db import read
    from recon_pipeline.partitions import Window
    from recon_pipeline.resources import TradingDatabase
    from recon_pipeline.settings import ReconSettings

    profile = {"profile_id": "p1", "exchange": "binance", "account": "acc", "market_type": "swap",
               "sub_tag": "pa", "allocated_capital_usd": 1000.0, "trading_paused": False}
    order = {"order_id": "o1", "profile_id": "p1", "trade_id": "open_in_future", "symbol": "BTC/USDT:USDT",
             "side": "buy", "role": "ENTRY", "qty": 1.0, "price": 100.0, "filled_qty": 0.0, "status": "OPEN",
             "client_order_id": "p1-e-1", "created_at": W, "updated_at": W}
    seed(engine, {"profiles": [profile], "trade_history": [_row(*c[:5]) for c in CASES], "orders": [order],
                  "positions": [{"profile_id": "p1", "symbol": "BTC/USDT:USDT", "qty": 1.0, "updated_at": W}]})
    window = Window(start=W, profile_id="p1")
    settings = ReconSettings()

    got = read_db(TradingDatabase(url=engine.url.render_as_string(hide_password=False)), window, settings)

    with engine.connect() as conn:
        want_slices = read.read_trade_history(conn, "acc", W, W + H, settings.backfill_grace_minutes)
        want_orders = read.read_orders(conn, "acc", W, W + H)
        want_positions = read.read_positions(conn, ["p1"])
    assert len(got.slices) == sum(c[5] for c in CASES) + 3  # the old OPEN slice stretches the span back
    pd.testing.assert_frame_equal(got.slices, want_slices)
    pd.testing.assert_frame_equal(got.orders, want_orders)
    pd.testing.assert_frame_equal(got.positions, want_positions)
    assert got.state.profile["profile_id"] == "p1"
