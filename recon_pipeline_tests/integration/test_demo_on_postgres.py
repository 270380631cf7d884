"""The demo scenario through the real Dagster job, real Postgres and real ccxt against the emulator.

Each kind of drift seeded in ``recon_pipeline/demo`` must produce its finding and correction, the
applied batch must leave the trading tables in the exact state the exchange implies, and repeating
anything must change nothing.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recon_pipeline.apply.applier import apply_batch
from recon_pipeline_tests.integration.conftest import DEMO_WINDOW, assert_same_tables

pytestmark = pytest.mark.slow

EXPECTED_KINDS = {
    "alpha": {"MISSING_EXIT": 2, "NO_GO": 1, "ORDER_MISSING_FROM_EXCHANGE": 2, "ORDER_MISSING_IN_DB": 1,
              "POSITION_MISMATCH": 2, "RESERVATION_MISMATCH": 1, "UNATTRIBUTED": 1},
    "beta": {"MISSING_EXIT": 1, "NO_GO": 2, "ORDER_MISSING_FROM_EXCHANGE": 1, "ORDER_MISSING_IN_DB": 1,
             "POSITION_MISMATCH": 1, "QTY_MISMATCH": 1, "RESERVATION_MISMATCH": 1},
    "gamma": {"GHOST_SLICE": 2, "ORDER_MISSING_IN_DB": 1, "POSITION_MISMATCH": 2, "RESERVATION_MISMATCH": 1,
              "UNATTRIBUTED": 1, "WATCHDOG_TRIGGERED": 1},
}
EXPECTED_NO_GO = {"alpha": ["ORDER_NOT_FOUND"], "beta": ["NO_ATTRIBUTION", "QTY_MISMATCH"], "gamma": []}
EXPECTED_ACTIONS = {
    "alpha": {"BACKFILL_EXIT": 2, "ENTRY_FILL": 1, "EXIT_FILL": 1, "POSITION_UPDATE": 2, "RESERVATION_UPDATE": 1},
    "beta": {"BACKFILL_EXIT": 1, "CANCEL_ORDER": 1, "POSITION_UPDATE": 1, "RESERVATION_UPDATE": 1},
    "gamma": {"PAUSE_TRADING": 1, "POSITION_UPDATE": 2, "QUARANTINE": 1, "RESERVATION_UPDATE": 1,
              "SYNTHETIC_EXIT": 1},
}


def _counts(frame: pd.DataFrame, column: str) -> dict:
    return {str(k): int(v) for k, v in frame[column].value_counts().sort_index().items()}


def _row(frame: pd.DataFrame, key: str, value: str) -> dict:
    match = frame[frame[key] == value]
    assert len(match) == 1, f"{key}={value}: {len(match)} rows"
    return match.iloc[0].to_dict()


@pytest.mark.parametrize("profile", ["alpha", "beta", "gamma"])
def test_each_drift_kind_is_found_and_corrected(demo_world, profile):
    outcome = demo_world.reconcile(profile, apply=True)
    assert outcome.success, outcome.error

    findings = demo_world.table("recon_findings")
    mine = findings[findings["profile_id"] == profile]
    assert _counts(mine, "kind") == EXPECTED_KINDS[profile]
    assert sorted(mine.loc[mine["kind"] == "NO_GO", "reason"]) == EXPECTED_NO_GO[profile]

    corrections = demo_world.table("recon_corrections")
    mine = corrections[corrections["profile_id"] == profile]
    assert _counts(mine, "action") == EXPECTED_ACTIONS[profile]
    assert set(mine["status"]) == {"APPLIED"}
    assert outcome.batch["status"] == "APPLIED"


@pytest.mark.parametrize("copy_min_rows", ["100000", "1"], ids=["bound-statements", "copy-for-every-write"])
def test_applied_demo_leaves_the_books_as_the_exchange_says(demo_world, monkeypatch, copy_min_rows):
    # Postgres writes switch from bound statements to COPY above RECON_COPY_MIN_ROWS: both paths must
    # leave exactly the same books.
    monkeypatch.setenv("RECON_COPY_MIN_ROWS", copy_min_rows)
    for profile in ("alpha", "beta", "gamma"):
        assert demo_world.reconcile(profile, apply=True).success

    slices = demo_world.table("trade_history")
    t1001 = _row(slices, "trade_id", "T1001")  # two exit fills in one millisecond close it at VWAP
    assert (t1001["status"], float(t1001["exit_qty"]), t1001["exit_source"]) == ("CLOSED", 0.01, "backfill")
    assert float(t1001["exit_price"]) == pytest.approx((0.004 * 61000 + 0.006 * 61050) / 0.01)
    assert t1001["exit_time"] == pd.Timestamp("2026-11-30T09:20:00.123Z")
    t1002 = _row(slices, "trade_id", "T1002")  # partial exit: stays OPEN
    assert (t1002["status"], float(t1002["exit_qty"])) == ("OPEN", 0.4)
    t3002 = _row(slices, "trade_id", "T3002")  # fills before the cancel are kept
    assert (t3002["status"], float(t3002["exit_qty"])) == ("OPEN", 0.1)
    t2001 = _row(slices, "trade_id", "T2001")  # sub_tag ghost, 3rd confirmation: synthetic exit at mark
    assert (t2001["status"], t2001["exit_source"], float(t2001["exit_price"])) == ("CLOSED", "parity_synthetic", 150.0)
    t2002 = _row(slices, "trade_id", "T2002")  # ghost without sub_tag: quarantined, never closed
    assert (t2002["status"], float(t2002["exit_qty"])) == ("QUARANTINED", 0.0)
    t3001 = _row(slices, "trade_id", "T3001")  # unattributed sell: NO_GO, untouched
    assert (t3001["status"], float(t3001["exit_qty"])) == ("OPEN", 0.0)

    orders = demo_world.table("orders")
    assert _row(orders, "order_id", "O-1002")["status"] == "FILLED"
    assert _row(orders, "order_id", "O-1005")["status"] == "FILLED"
    o3004 = _row(orders, "order_id", "O-3004")
    assert (o3004["status"], float(o3004["filled_qty"])) == ("CANCELED", 0.1)
    assert _row(orders, "order_id", "O-1006")["status"] == "OPEN"  # not found: NO_GO, untouched
    assert _row(orders, "order_id", "O-1007")["status"] == "OPEN"  # inside the settle interval

    positions = demo_world.table("positions")
    by_key = {(r.profile_id, r.symbol): float(r.qty) for r in positions.itertuples()}
    assert by_key[("alpha", "BTC/USDT:USDT")] == pytest.approx(0.007)
    assert by_key[("alpha", "ETH/USDT:USDT")] == pytest.approx(-0.6)
    assert by_key[("beta", "ETH/USDT")] == pytest.approx(0.4)
    assert by_key[("gamma", "SOL/USDT:USDT")] == 0.0

    ledger = {r.profile_id: float(r.reserved_usd) for r in demo_world.table("capital_ledger").itertuples()}
    assert ledger["alpha"] == pytest.approx(0.6 * 3100 + 0.005 * 60500 + 0.002 * 61000 + 0.003 * 58000 + 0.002 * 61000)
    assert ledger["beta"] == pytest.approx(0.05 * 60000 + 0.4 * 2900)
    assert ledger["gamma"] == 0.0

    pauses = demo_world.table("trading_pauses")
    open_pauses = pauses[pauses["resumed_at"].isna()]
    assert sorted(zip(open_pauses["profile_id"], open_pauses["source"], strict=True)) == [
        ("beta", "manual"), ("gamma", "parity_watchdog")]
    paused = {r.profile_id: bool(r.trading_paused) for r in demo_world.table("profiles").itertuples()}
    assert paused == {"alpha": False, "beta": True, "gamma": True}


def test_apply_twice_and_rerun_change_nothing(demo_world):
    first = demo_world.reconcile("alpha", apply=True)
    assert first.success and first.batch["status"] == "APPLIED"
    after_first = demo_world.trading_state()

    again = apply_batch(demo_world.engine, first.batch["batch_id"])
    assert again.skipped_reason and "APPLIED" in again.skipped_reason
    rerun = demo_world.reconcile("alpha", apply=True)
    assert rerun.success

    assert_same_tables(after_first, demo_world.trading_state())
    corrections = demo_world.table("recon_corrections")
    applied = corrections[corrections["status"] == "APPLIED"]
    assert applied["correction_id"].is_unique
    assert len(applied) == sum(EXPECTED_ACTIONS["alpha"].values())


def test_same_window_twice_gives_same_findings_and_ids(demo_world):
    first = demo_world.reconcile("beta")
    findings_1 = demo_world.table("recon_findings", "profile_id, seq")
    second = demo_world.reconcile("beta")
    findings_2 = demo_world.table("recon_findings", "profile_id, seq")
    assert first.batch["batch_id"] == second.batch["batch_id"]
    pd.testing.assert_frame_equal(findings_1, findings_2)
    assert len(demo_world.table("recon_batches")) == 1


def test_dry_run_writes_nothing_to_trading_tables(demo_world):
    before = demo_world.trading_state()
    for profile in ("alpha", "beta", "gamma"):
        outcome = demo_world.reconcile(profile, dry_run=True, apply=True)
        assert outcome.success and outcome.batch["status"] == "DRY_RUN"
    assert_same_tables(before, demo_world.trading_state())
    corrections = demo_world.table("recon_corrections")
    assert len(corrections) > 0 and set(corrections["status"]) == {"DRY_RUN"}
    assert len(demo_world.table("recon_findings")) > 0
    runs = demo_world.table("recon_runs")
    assert (runs["mismatch_count"] > 0).all()


def test_parity_dry_run_holds_parity_actions_only(demo_world):
    outcome = demo_world.reconcile("gamma", apply=True, run_config_extra={"parity_dry_run": True})
    assert outcome.success
    corrections = demo_world.table("recon_corrections")
    status = dict(zip(corrections["action"], corrections["status"], strict=False))
    for action in ("SYNTHETIC_EXIT", "QUARANTINE", "PAUSE_TRADING"):
        assert status[action] == "DRY_RUN"
    # The ledger is judged on the state the batch really leaves: with the parity actions held, gamma's
    # reservations and positions still match its (unchanged) slices, so nothing derived is proposed.
    assert set(status) == {"SYNTHETIC_EXIT", "QUARANTINE", "PAUSE_TRADING"}
    slices = demo_world.table("trade_history")
    assert _row(slices, "trade_id", "T2001")["status"] == "OPEN"
    assert demo_world.table("trading_pauses")["source"].tolist() == ["manual"]


def test_stale_target_is_skipped_and_the_rest_applied(demo_world):
    outcome = demo_world.reconcile("alpha")
    assert outcome.batch["status"] == "PENDING"
    # The trading system writes a partial exit of T1001 after the batch was built.
    with demo_world.engine.begin() as conn:
        import sqlalchemy as sa
        conn.execute(sa.text("UPDATE trade_history SET exit_qty = 0.004 WHERE trade_id = 'T1001'"))

    report = apply_batch(demo_world.engine, outcome.batch["batch_id"])

    corrections = demo_world.table("recon_corrections")
    by_target = {(r.action, r.target_id): r.status for r in corrections.itertuples()}
    assert by_target[("BACKFILL_EXIT", "T1001")] == "STALE"
    assert by_target[("BACKFILL_EXIT", "T1002")] == "APPLIED"
    assert by_target[("EXIT_FILL", "O-1002")] == "APPLIED"
    assert report.counts["STALE"] >= 1
    t1001 = _row(demo_world.table("trade_history"), "trade_id", "T1001")
    assert (t1001["status"], float(t1001["exit_qty"])) == ("OPEN", 0.004)
    # The derived reservation is recomputed from what the tables hold, the STALE slice included.
    reserved = float(_row(demo_world.table("capital_ledger"), "profile_id", "alpha")["reserved_usd"])
    assert reserved == pytest.approx(0.006 * 60000 + 0.6 * 3100 + 0.005 * 60500 + 0.002 * 61000
                                     + 0.003 * 58000 + 0.002 * 61000)


def test_historical_window_does_not_evaluate_parity(demo_world):
    streaks_before = demo_world.table("recon_parity_streaks", "trade_id")
    outcome = demo_world.reconcile("gamma", window=DEMO_WINDOW - pd.Timedelta(hours=3))
    assert outcome.success
    assert outcome.run_row["parity_evaluated"] is False
    health = json.loads(outcome.run_row["health"])
    assert health["reconciliationParityMismatchTrades"] == 0
    pd.testing.assert_frame_equal(streaks_before, demo_world.table("recon_parity_streaks", "trade_id"))
    corrections = demo_world.table("recon_corrections")
    assert not corrections["action"].isin(["SYNTHETIC_EXIT", "QUARANTINE", "PAUSE_TRADING"]).any()
