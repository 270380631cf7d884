"""Property tests for parity + watchdog + ledger: safety and determinism over random account states.

Quantities are multiples of 0.25 and marks round numbers, so every sum is exact in binary floating
point and a shuffled input must give bit-identical evidence (and therefore identical correction ids).
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from recon_pipeline.rules.ledger import evaluate_ledger
from recon_pipeline.rules.parity import evaluate_parity
from recon_pipeline.rules.watchdog import evaluate_watchdog
from recon_pipeline.settings import ReconSettings
from recon_pipeline_tests.rules.parity_frames import (
    ACC,
    db_positions,
    ledger,
    market_row,
    markets,
    orders,
    pos_row,
    positions,
    profile_row,
    profiles,
    run_history,
    slice_row,
    slices,
    streak_row,
    streaks,
    w,
)

SYMBOLS = ["BTC/USDT:USDT", "ETH/USDT:USDT", "BTC/USDT"]
MARKETS = markets(market_row("BTC/USDT:USDT", mark=2000.0, prec=0.25),
                  market_row("ETH/USDT:USDT", mark=100.0, prec=0.25),
                  market_row("BTC/USDT", mark=2000.0, prec=0.25))
PROFILES = profiles(profile_row("p1", sub_tag="t1", capital=1000.0), profile_row("p2", sub_tag="t2"))
COIDS = {"own": "t1-e-{}", "other": "t2-e-{}", "bare_prefix": "t12-e-{}", "foreign": "zz-{}", "none": None}

PROPS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                 phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])


@st.composite
def scenario(draw):
    n = draw(st.integers(0, 6))
    rows, p1_ids = [], []
    for i in range(n):
        tid = f"s{i}"
        profile = draw(st.sampled_from(["p1", "p2"]))
        qty_q = draw(st.integers(1, 8))
        exit_q = draw(st.integers(0, qty_q - 1))
        coid_kind = draw(st.sampled_from(sorted(COIDS)))
        coid = COIDS[coid_kind].format(tid) if COIDS[coid_kind] else None
        if profile == "p2" and coid_kind == "own":
            coid = f"t2-e-{tid}"
        rows.append(slice_row(tid, profile_id=profile, symbol=draw(st.sampled_from(SYMBOLS)),
                              side=draw(st.sampled_from(["long", "short"])), qty=qty_q * 0.25,
                              exit_qty=exit_q * 0.25, coid=coid,
                              status=draw(st.sampled_from(["OPEN", "OPEN", "OPEN", "CLOSED", "QUARANTINED"]))))
        if profile == "p1":
            p1_ids.append(tid)
    hedge = draw(st.booleans())
    pos = []
    for inst in ["BTC/USDT:USDT", "ETH/USDT:USDT"]:
        for side in (["long", "short"] if hedge else ["both"]):
            q = draw(st.integers(-4 if side != "long" else 0, 4 if side != "short" else 0))
            if q:
                pos.append(pos_row(inst, q * 0.25, side=side))
    spot_q = draw(st.integers(0, 8))
    if spot_q:
        pos.append(pos_row("BTC", spot_q * 0.25))
    stored = [streak_row(t, draw(st.integers(0, 3)), w(0)) for t in p1_ids if draw(st.booleans())]
    no_go = [t for t in p1_ids if draw(st.integers(0, 4)) == 0]
    cfg = ReconSettings(parity_require_subtag=draw(st.booleans()), parity_confirmations=draw(st.integers(1, 3)),
                        parity_dry_run=draw(st.booleans()))
    return slices(*rows), positions(*pos), streaks(*stored), no_go, cfg


def parity(sl, pos, st_, no_go, cfg):
    return evaluate_parity(sl, pos, MARKETS, PROFILES, st_, no_go, settings=cfg, profile_id="p1", account=ACC,
                           window_start=w(1), now=w(2), evaluated=True)


@PROPS
@given(scenario())
def test_no_slice_closed_without_subtag_attribution(case):
    sl, pos, st_, no_go, cfg = case
    cfg = dataclasses.replace(cfg, parity_require_subtag=True)
    res = parity(sl, pos, st_, no_go, cfg)
    by_id = sl.set_index("trade_id")
    for tid in res.corrections.loc[res.corrections["action"] == "SYNTHETIC_EXIT", "target_id"]:
        coid = by_id.loc[tid, "entry_client_order_id"]
        assert by_id.loc[tid, "profile_id"] == "p1"
        assert isinstance(coid, str) and coid.startswith("t1-"), coid
        assert tid not in no_go
    # whatever the flag, NO_GO evidence is never closed at mark, and only the running profile is touched
    res_any = parity(sl, pos, st_, no_go, dataclasses.replace(cfg, parity_require_subtag=False))
    closed = res_any.corrections.loc[res_any.corrections["action"] == "SYNTHETIC_EXIT", "target_id"]
    assert not set(closed) & set(no_go)
    for r in (res, res_any):
        assert set(by_id.loc[list(r.corrections["target_id"]), "profile_id"]) <= {"p1"}
        assert set(by_id.loc[list(r.corrections["target_id"]), "status"]) <= {"OPEN"}
        assert set(r.streaks["profile_id"]) <= {"p1"}


def apply_slices(sl: pd.DataFrame, corrections: pd.DataFrame) -> pd.DataFrame:
    sl = sl.copy()
    for rec in corrections.to_dict("records"):
        if rec["target_table"] != "trade_history":
            continue
        mask = sl["trade_id"] == rec["target_id"]
        for col, val in json.loads(rec["new_state"]).items():
            sl.loc[mask, col] = pd.Timestamp(val) if col == "exit_time" else val
    return sl


@PROPS
@given(scenario())
def test_no_target_row_gets_two_corrections(case):
    sl, pos, st_, no_go, cfg = case
    par = parity(sl, pos, st_, no_go, cfg)
    wd = evaluate_watchdog(par.summary, PROFILES.iloc[0], pd.DataFrame(
        {"pause_id": ["m1"], "profile_id": ["p1"], "source": ["manual"], "reason": [""],
         "paused_at": [w(0)], "resumed_at": [pd.NaT], "resumed_by": [None]}).astype({"resumed_by": "str"}),
        run_history(), settings=cfg, profile_id="p1", window_start=w(1), now=w(2),
        clean=par.summary["clean"], evaluated=True)
    led = evaluate_ledger(apply_slices(sl, par.corrections), orders(), ledger(), db_positions(),
                          profile_id="p1", window_start=w(1))
    allc = pd.concat([par.corrections, wd.corrections, led.corrections], ignore_index=True)
    assert not allc.duplicated(["target_table", "target_id"]).any()
    assert allc["correction_id"].is_unique
    assert "m1" not in set(allc["target_id"])  # a manual pause is never a target


@PROPS
@given(scenario(), st.randoms(use_true_random=False))
def test_same_inputs_same_correction_ids(case, rnd):
    sl, pos, st_, no_go, cfg = case
    first, second = parity(sl, pos, st_, no_go, cfg), parity(sl, pos, st_, no_go, cfg)
    pd.testing.assert_frame_equal(first.corrections, second.corrections)
    pd.testing.assert_frame_equal(first.findings, second.findings)
    order = list(range(len(sl)))
    rnd.shuffle(order)
    shuffled = parity(sl.iloc[order].reset_index(drop=True), pos.iloc[::-1].reset_index(drop=True), st_,
                      list(reversed(no_go)), cfg)
    assert shuffled.corrections["correction_id"].tolist() == first.corrections["correction_id"].tolist()
    pd.testing.assert_frame_equal(shuffled.streaks, first.streaks)
    assert shuffled.summary == first.summary


@PROPS
@given(scenario())
def test_dry_run_same_findings_as_real_run(case):
    sl, pos, st_, no_go, cfg = case
    real = parity(sl, pos, st_, no_go, dataclasses.replace(cfg, parity_dry_run=False))
    dry = parity(sl, pos, st_, no_go, dataclasses.replace(cfg, parity_dry_run=True))
    pd.testing.assert_frame_equal(real.findings, dry.findings)
    pd.testing.assert_frame_equal(real.streaks, dry.streaks)
    assert {k: v for k, v in real.summary.items() if k != "dry_run"} == \
        {k: v for k, v in dry.summary.items() if k != "dry_run"}
    assert dry.corrections["correction_id"].tolist() == real.corrections["correction_id"].tolist()
    assert dry.corrections["dry_run"].all() and not real.corrections["dry_run"].any()
