"""Position-parity heartbeat (DESIGN 4.4): one table of single checks, then multi-window scenarios."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pandas as pd
import pytest

from recon_pipeline.rules.parity import evaluate_parity, subtag_attributed
from recon_pipeline.schemas import CORRECTIONS, FINDINGS, PARITY_STREAKS
from recon_pipeline.settings import ReconSettings
from recon_pipeline_tests.rules.parity_frames import (
    ACC,
    NAN,
    market_row,
    markets,
    pos_row,
    positions,
    profile_row,
    profiles,
    slice_row,
    slices,
    streak_row,
    streaks,
    w,
)

S = ReconSettings()
BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
PROFILES2 = [profile_row("p1", sub_tag="t1"), profile_row("p2", sub_tag="t2")]


def run(sl, pos, *, mk=None, prof=None, st=None, no_go=(), settings=S, window=None, now=None,
        evaluated=True, profile_id="p1"):
    window = w(1) if window is None else window
    return evaluate_parity(
        sl, pos, mk if mk is not None else markets(), prof if prof is not None else profiles(*PROFILES2),
        st if st is not None else streaks(), list(no_go), settings=settings, profile_id=profile_id,
        account=ACC, window_start=window, now=now if now is not None else window + pd.Timedelta(minutes=65),
        evaluated=evaluated)


def confirmed(trade_id="a", profile_id="p1"):
    """A stored streak one short of the default 3 confirmations, from the previous window."""
    return streaks(streak_row(trade_id, 2, w(0), profile_id=profile_id))


# id, slices, positions, markets, streaks, no_go, settings,
# expected: ghost trade ids (running profile), {trade_id: action}, finding kinds, clean
CASES = [
    pytest.param([slice_row("a")], [], None, None, (), S,
                 {"a"}, {}, {"GHOST_SLICE": 1}, False, id="flat-exchange-ghost-unconfirmed"),
    pytest.param([slice_row("a")], [pos_row(BTC, 1.0)], None, None, (), S,
                 set(), {}, {}, True, id="matching-position-clean"),
    pytest.param([slice_row("a")], [pos_row(BTC, 0.005)], None, None, (), S,
                 {"a"}, {}, {"GHOST_SLICE": 1}, False, id="exchange-dust-notional-is-zero"),
    pytest.param([slice_row("a")], [pos_row(BTC, 0.0005)], [market_row(BTC, mark=10_000.0)], None, (), S,
                 {"a"}, {}, {"GHOST_SLICE": 1}, False, id="exchange-below-one-precision-unit-is-zero"),
    pytest.param([slice_row("a", qty=1.0, exit_qty=0.9996)], [], None, None, (), S,
                 set(), {}, {}, True, id="fee-dust-slice-never-ghost"),
    pytest.param([slice_row("a", qty=0.005)], [], None, None, (), S,
                 set(), {}, {}, True, id="db-net-below-dust-usd-not-ghost"),
    pytest.param([slice_row("a"), slice_row("b", profile_id="p2", side="short", coid="t2-e-b")], [],
                 None, None, (), S, set(), {}, {}, True, id="two-profiles-offsetting-one-way-flat"),
    pytest.param([slice_row("a", qty=2.0), slice_row("b", profile_id="p2", side="short", coid="t2-e-b")],
                 [pos_row(BTC, 1.0)], None, None, (), S,
                 set(), {}, {}, True, id="two-profiles-net-matches-one-way"),
    pytest.param([slice_row("a", qty=2.0), slice_row("b", profile_id="p2", side="short", coid="t2-e-b")],
                 [], None, None, (), S,
                 {"a"}, {}, {"GHOST_SLICE": 1}, False, id="two-profiles-net-nonzero-flat-both-ghosts"),
    pytest.param([slice_row("a"), slice_row("b", side="short")], [pos_row(BTC, 1.0, side="long")],
                 None, None, (), S, {"b"}, {}, {"GHOST_SLICE": 1}, False, id="hedge-mode-per-side"),
    pytest.param([slice_row("a"), slice_row("b", profile_id="p2", side="short", coid="t2-e-b"),
                  slice_row("e", profile_id="p2", symbol=ETH, qty=3.0, coid="t2-e-e")],
                 [pos_row(ETH, 3.0, side="long")], [market_row(BTC), market_row(ETH)], None, (), S,
                 {"a"}, {}, {"GHOST_SLICE": 1}, False, id="hedge-mode-inferred-account-wide"),
    pytest.param([slice_row("a", symbol="BTC/USDT", qty=0.5), slice_row("b", symbol="BTC/USDC", qty=0.5)],
                 [pos_row("BTC", 1.0)], [market_row("BTC/USDT"), market_row("BTC/USDC")], None, (), S,
                 set(), {}, {}, True, id="spot-nets-two-symbols-of-one-base"),
    pytest.param([slice_row("a", symbol="BTC/USDT", qty=0.5), slice_row("b", symbol="BTC/USDC", qty=0.5)],
                 [], [market_row("BTC/USDT"), market_row("BTC/USDC")], None, (), S,
                 {"a", "b"}, {}, {"GHOST_SLICE": 2}, False, id="spot-base-flat-both-symbols-ghosts"),
    pytest.param([slice_row("a", symbol="BTC/USDT", qty=0.5), slice_row("b", symbol="BTC/USDC", qty=0.5)],
                 [pos_row("BTC", 0.7)], [market_row("BTC/USDT"), market_row("BTC/USDC")], None, (), S,
                 set(), {}, {"QTY_MISMATCH": 1, "NO_GO": 1}, False, id="spot-partial-balance-qty-mismatch"),
    pytest.param([slice_row("a", symbol="BTC/USDT", side="short")], [], [market_row("BTC/USDT")], None, (),
                 S, set(), {}, {"NO_GO": 1}, True, id="spot-short-no-go"),
    pytest.param([slice_row("a")], [pos_row(BTC, 0.5)], None, None, (), S,
                 set(), {}, {"QTY_MISMATCH": 1, "NO_GO": 1}, False, id="swap-qty-mismatch-no-close"),
    pytest.param([], [pos_row(BTC, 1.0)], None, None, (), S,
                 set(), {}, {"QTY_MISMATCH": 1, "NO_GO": 1}, True, id="exchange-position-without-slice"),
    pytest.param([], [pos_row("DOGE", 100.0)], None, None, (), S,
                 set(), {}, {}, True, id="spot-balance-of-untraded-base-ignored"),
    pytest.param([slice_row("a")], [], [market_row(BTC, mark=NAN)], None, (), S,
                 set(), {}, {}, False, id="no-mark-price-not-evaluated"),
    pytest.param([slice_row("a", symbol="XYZ/USDT:USDT")], [], None, None, (), S,
                 set(), {}, {}, False, id="unknown-symbol-not-evaluated"),
    pytest.param([slice_row("a", status="CLOSED", exit_qty=1.0)], [], None, None, (), S,
                 set(), {}, {}, True, id="slice-closed-by-backfill-not-ghost"),
    pytest.param([slice_row("a", status="QUARANTINED")], [], None, None, (), S,
                 set(), {}, {}, True, id="quarantined-slice-not-netted"),
    pytest.param([slice_row("a", coid="t1-e-a")], [], None, "confirm", (), S,
                 {"a"}, {"a": "SYNTHETIC_EXIT"}, {"GHOST_SLICE": 1}, False, id="confirmed-subtag-synthetic-exit"),
    pytest.param([slice_row("a", coid="zz-e-a")], [], None, "confirm", (), S,
                 {"a"}, {"a": "QUARANTINE"}, {"GHOST_SLICE": 1}, False, id="confirmed-no-subtag-quarantined"),
    pytest.param([slice_row("a", coid=None)], [], None, "confirm", (), S,
                 {"a"}, {"a": "QUARANTINE"}, {"GHOST_SLICE": 1}, False, id="confirmed-no-client-id-quarantined"),
    pytest.param([slice_row("a", coid="t12-e-a")], [], None, "confirm", (), S,
                 {"a"}, {"a": "QUARANTINE"}, {"GHOST_SLICE": 1}, False, id="confirmed-bare-prefix-quarantined"),
    pytest.param([slice_row("a", coid="t1-e-a")], [], None, "confirm", ("a",), S,
                 {"a"}, {"a": "QUARANTINE"}, {"GHOST_SLICE": 1}, False, id="confirmed-with-no-go-evidence-quarantined"),
    pytest.param([slice_row("a", coid=None)], [], None, "confirm", (),
                 dataclasses.replace(S, parity_require_subtag=False),
                 {"a"}, {"a": "SYNTHETIC_EXIT"}, {"GHOST_SLICE": 1}, False, id="subtag-gate-off-closes-all"),
    pytest.param([slice_row("a", coid="zz")], [], None, "confirm", ("a",),
                 dataclasses.replace(S, parity_require_subtag=False),
                 {"a"}, {"a": "QUARANTINE"}, {"GHOST_SLICE": 1}, False, id="subtag-gate-off-no-go-still-quarantined"),
    pytest.param([slice_row("a")], [], None, None, (), dataclasses.replace(S, parity_confirmations=1),
                 {"a"}, {"a": "SYNTHETIC_EXIT"}, {"GHOST_SLICE": 1}, False, id="one-confirmation-acts-first-check"),
    pytest.param([slice_row("b", profile_id="p2", coid="t2-e-b")], [], None, "confirm-p2", (), S,
                 set(), {}, {}, True, id="other-profiles-ghost-not-ours"),
]


@pytest.mark.parametrize("sl,pos,mk,st,no_go,settings,ghosts,actions,kinds,clean", CASES)
def test_single_check(sl, pos, mk, st, no_go, settings, ghosts, actions, kinds, clean):
    stored = {None: None, "confirm": confirmed("a"), "confirm-p2": confirmed("b", "p2")}[st]
    res = run(slices(*sl), positions(*pos), mk=markets(*mk) if mk else None, st=stored, no_go=no_go,
              settings=settings)
    f = res.findings
    assert set(f.loc[f["kind"] == "GHOST_SLICE", "trade_id"]) == ghosts
    assert dict(zip(res.corrections["target_id"], res.corrections["action"], strict=True)) == actions
    assert Counter(f["kind"]) == Counter(kinds)
    assert res.summary["parity_evaluated"] is True
    assert res.summary["clean"] is clean
    assert res.summary["ghost_trades"] == len(ghosts)
    assert list(res.findings.columns) == list(FINDINGS)
    assert list(res.corrections.columns) == list(CORRECTIONS)
    assert set(res.streaks["profile_id"]) <= {"p1"}


def test_no_mark_price_lists_instrument_and_keeps_streak():
    res = run(slices(slice_row("a")), positions(), mk=markets(market_row(BTC, mark=NAN)), st=confirmed("a"))
    assert res.summary["not_evaluated_instruments"] == [BTC]
    assert res.streaks.empty and res.corrections.empty and res.findings.empty


def test_no_go_reasons_and_notional():
    res = run(slices(slice_row("a", qty=1.0)), positions(pos_row(BTC, 0.4)), mk=markets(market_row(BTC, mark=200.0)))
    no_go = res.findings.loc[res.findings["kind"] == "NO_GO"].iloc[0]
    assert no_go["reason"] == "QTY_MISMATCH"
    assert no_go["qty_db"] == 1.0 and no_go["qty_exchange"] == 0.4
    assert no_go["notional_usd"] == pytest.approx(0.6 * 200.0)
    assert res.summary["qty_mismatches"] == 1 and res.corrections.empty
    spot = run(slices(slice_row("s", symbol="ETH/USDT", side="short")), positions(),
               mk=markets(market_row("ETH/USDT")))
    assert spot.findings["reason"].tolist() == ["SPOT_SHORT"] and spot.summary["spot_shorts"] == 1


def test_ghost_summary_notional_and_detail():
    sl = slices(slice_row("a", qty=2.0), slice_row("b", qty=1.0, exit_qty=0.5))
    res = run(sl, positions(), mk=markets(market_row(BTC, mark=50.0)))
    assert res.summary["total_mismatch_notional_usd"] == pytest.approx(2.0 * 50 + 0.5 * 50)
    assert res.summary["max_mismatch_notional_usd"] == pytest.approx(100.0)
    ghost = res.findings.set_index("trade_id").loc["b"]
    assert ghost["qty_db"] == 0.5 and ghost["reason"] == "streak=1/3" and "1 of 3" in ghost["detail"]


@pytest.mark.parametrize("positions_arg,evaluated,settings,reason", [
    pytest.param(None, True, S, "position_fetch_failed", id="position-fetch-failed"),
    pytest.param(positions(), False, S, "historical_window", id="historical-window"),
    pytest.param(positions(), True, dataclasses.replace(S, parity_enabled=False), "disabled", id="disabled"),
])
def test_not_evaluated_leaves_streak_untouched(positions_arg, evaluated, settings, reason):
    res = run(slices(slice_row("a")), positions_arg, st=confirmed("a"), evaluated=evaluated, settings=settings)
    assert res.summary["parity_evaluated"] is False
    assert res.summary["not_evaluated_reason"] == reason
    assert res.findings.empty and res.corrections.empty and res.streaks.empty
    assert list(res.streaks.columns) == list(PARITY_STREAKS)


def test_synthetic_exit_states():
    now = pd.Timestamp("2026-11-30T02:05:00Z")
    res = run(slices(slice_row("a", qty=2.0)), positions(), mk=markets(market_row(BTC, mark=123.5)),
              st=confirmed("a"), now=now)
    c = res.corrections.iloc[0]
    assert (c["action"], c["target_table"], c["target_id"], c["attribution"]) == \
        ("SYNTHETIC_EXIT", "trade_history", "a", "sub_tag")
    assert json.loads(c["expected_state"]) == {"status": "OPEN", "exit_qty": 0.0}
    assert json.loads(c["new_state"]) == {"status": "CLOSED", "exit_qty": 2.0, "exit_price": 123.5,
                                          "exit_time": now.isoformat(), "exit_source": "parity_synthetic"}
    assert c["notional_usd"] == pytest.approx(247.0) and not c["dry_run"]
    assert res.summary["auto_closed"] == 1 and res.summary["quarantined"] == 0


def test_synthetic_exit_of_partly_exited_slice_blends_price():
    sl = slices(slice_row("a", qty=2.0, exit_qty=1.0, exit_price=90.0))
    res = run(sl, positions(), mk=markets(market_row(BTC, mark=110.0)), st=confirmed("a"))
    new = json.loads(res.corrections["new_state"].iloc[0])
    assert new["exit_qty"] == 2.0 and new["exit_price"] == pytest.approx(100.0)
    assert json.loads(res.corrections["expected_state"].iloc[0]) == {"status": "OPEN", "exit_qty": 1.0}
    assert json.loads(res.corrections["evidence"].iloc[0])["mark_price"] == 110.0


def test_quarantine_states_and_reason():
    res = run(slices(slice_row("a", coid="zz-e-a")), positions(), st=confirmed("a"))
    c = res.corrections.iloc[0]
    assert json.loads(c["new_state"]) == {"status": "QUARANTINED"}
    assert json.loads(c["evidence"])["reason"] == "no_subtag_attribution"
    assert c["attribution"] == "none"
    assert res.summary["quarantined"] == 1 and res.summary["clean"] is False


def test_dry_run_marks_parity_actions_only():
    dry = dataclasses.replace(S, parity_dry_run=True)
    sl = slices(slice_row("a"), slice_row("b", coid="zz"))
    st = streaks(streak_row("a", 2, w(0)), streak_row("b", 2, w(0)))
    real, dryres = run(sl, positions(), st=st), run(sl, positions(), st=st, settings=dry)
    assert dryres.corrections["dry_run"].all() and not real.corrections["dry_run"].any()
    pd.testing.assert_frame_equal(real.findings, dryres.findings)
    pd.testing.assert_frame_equal(real.streaks, dryres.streaks)
    assert dryres.corrections["correction_id"].tolist() == real.corrections["correction_id"].tolist()
    assert dryres.summary["auto_closed"] == 1 and dryres.summary["quarantined"] == 1
    assert dryres.summary["dry_run"] is True


# --- streaks over windows ------------------------------------------------------------------------

def upsert(stored: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty:
        return stored
    both = pd.concat([stored, rows], ignore_index=True) if len(stored) else rows
    return both.drop_duplicates("trade_id", keep="last").reset_index(drop=True)


def apply(sl: pd.DataFrame, corrections: pd.DataFrame) -> pd.DataFrame:
    """What the applier would do to trade_history (expected state checked)."""
    sl = sl.copy()
    for rec in corrections.to_dict("records"):
        idx = sl.index[sl["trade_id"] == rec["target_id"]]
        exp = json.loads(rec["expected_state"])
        row = sl.loc[idx[0]]
        if row["status"] != exp["status"] or row["exit_qty"] != exp["exit_qty"]:
            continue
        for col, val in json.loads(rec["new_state"]).items():
            sl.loc[idx, col] = pd.Timestamp(val) if col == "exit_time" else val
    return sl


def test_six_windows_acts_on_third_consecutive_ghost_exactly_once():
    # exchange: flat / dust / real position / flat / flat / flat / flat (after the synthetic exit)
    exch = [[], [pos_row(BTC, 0.005)], [pos_row(BTC, 1.0)], [], [], [], []]
    expected_streak = [1, 2, 0, 1, 2, 3, None]
    sl, stored, actions = slices(slice_row("a", coid="t1-e-a")), streaks(), []
    for i, pos in enumerate(exch):
        res = run(sl, positions(*pos), st=stored, window=w(i))
        stored = upsert(stored, res.streaks)
        if expected_streak[i] is not None:
            assert stored.set_index("trade_id").loc["a", "streak"] == expected_streak[i], f"window {i}"
        actions += [(i, a) for a in res.corrections["action"]]
        sl = apply(sl, res.corrections)
    assert actions == [(5, "SYNTHETIC_EXIT")]
    assert sl["status"].tolist() == ["CLOSED"] and sl["exit_source"].tolist() == ["parity_synthetic"]
    assert stored.set_index("trade_id").loc["a", "first_seen_window"] == w(0)


def test_rerun_of_same_window_does_not_double_count():
    sl = slices(slice_row("a"))
    first = run(sl, positions(), st=streaks(streak_row("a", 1, w(0))), window=w(1))
    stored = upsert(streaks(streak_row("a", 1, w(0))), first.streaks)
    again = run(sl, positions(), st=stored, window=w(1))
    assert first.streaks["streak"].tolist() == [2]
    assert again.streaks.empty  # nothing to write: the window already counted
    assert again.findings["reason"].tolist() == ["streak=2/3"] and again.corrections.empty


def test_rerun_of_confirming_window_reproposes_same_id():
    sl, st = slices(slice_row("a")), confirmed("a")
    first = run(sl, positions(), st=st, window=w(1))
    again = run(sl, positions(), st=upsert(st, first.streaks), window=w(1))
    assert again.corrections["correction_id"].tolist() == first.corrections["correction_id"].tolist()


def test_stale_action_is_reproposed_next_window_with_new_id():
    sl = slices(slice_row("a"))
    first = run(sl, positions(), st=confirmed("a"), window=w(1))
    stored = upsert(confirmed("a"), first.streaks)
    later = run(sl, positions(), st=stored, window=w(2))  # the first went STALE: slice still OPEN
    assert later.streaks["streak"].tolist() == [4]
    assert later.corrections["action"].tolist() == ["SYNTHETIC_EXIT"]
    assert later.corrections["correction_id"].iloc[0] != first.corrections["correction_id"].iloc[0]


@pytest.mark.parametrize("stored,window,pos,expected_rows", [
    pytest.param([streak_row("a", 2, w(0))], w(1), [pos_row(BTC, 1.0)], [("a", 0, w(1))], id="clean-resets"),
    pytest.param([streak_row("a", 0, w(0))], w(1), [pos_row(BTC, 1.0)], [], id="clean-at-zero-no-write"),
    pytest.param([], w(1), [pos_row(BTC, 1.0)], [], id="clean-never-ghost-no-row"),
    pytest.param([streak_row("a", 2, w(1))], w(1), [pos_row(BTC, 1.0)], [("a", 0, w(1))],
                 id="clean-rerun-of-same-window-resets"),
    pytest.param([streak_row("a", 2, w(5))], w(1), [], [], id="older-window-ignored"),
    pytest.param([streak_row("a", 1, w(0), profile_id="p2")], w(1), [], [("a", 1, w(1))],
                 id="another-profiles-row-is-not-ours"),
])
def test_streak_transitions(stored, window, pos, expected_rows):
    res = run(slices(slice_row("a")), positions(*pos), st=streaks(*stored), window=window)
    got = list(zip(res.streaks["trade_id"], res.streaks["streak"], res.streaks["last_window_start"], strict=True))
    assert got == expected_rows


def test_streak_only_for_running_profile():
    sl = slices(slice_row("a"), slice_row("b", profile_id="p2", coid="t2-e-b"))
    res = run(sl, positions())
    assert res.streaks["trade_id"].tolist() == ["a"]
    assert res.summary["account_ghost_trades"] == 2 and res.summary["ghost_trades"] == 1


def test_other_accounts_are_ignored():
    sl = slices(slice_row("a"), slice_row("z", account="other"))
    res = run(sl, positions(pos_row(BTC, 1.0), pos_row(BTC, 5.0, account="other")))
    assert res.findings.empty and res.summary["clean"]


@pytest.mark.parametrize("coid,tag,expected", [
    pytest.param("t1-e-abc", "t1", True, id="deterministic"),
    pytest.param("t1-manual", "t1", True, id="sub-tag-prefixed"),
    pytest.param("t12-e-abc", "t1", False, id="bare-prefix"),
    pytest.param("t1", "t1", False, id="no-dash"),
    pytest.param(None, "t1", False, id="missing-id"),
    pytest.param("t1-e-abc", None, False, id="missing-tag"),
    pytest.param("-e-abc", "", False, id="empty-tag"),
])
def test_subtag_attributed(coid, tag, expected):
    got = subtag_attributed(pd.Series([coid], dtype="str"), pd.Series([tag], dtype="str"))
    assert got.tolist() == [expected]
