"""Integrity watchdog (DESIGN 4.5): pause threshold, auto-resume gates, other pause sources."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest

from recon_pipeline.rules.corrections import findings_frame
from recon_pipeline.rules.watchdog import (
    AUTO_RESUME_BY,
    WATCHDOG_SOURCE,
    evaluate_watchdog,
    ghost_notional,
    watchdog_pause_id,
)
from recon_pipeline.schemas import CORRECTIONS, FINDINGS
from recon_pipeline.settings import ReconSettings
from recon_pipeline_tests.rules.parity_frames import (
    NAN,
    pause_row,
    pauses,
    profile_row,
    profiles,
    run_history,
    run_row,
    w,
)

S = ReconSettings()  # pct 0.5, min pause 15 min, 2 clean cycles, cooldown 30 min
MIN = pd.Timedelta(minutes=1)
WINDOW = w(10)
NOW = WINDOW + 65 * MIN


def run(notional=0.0, *, capital=1000.0, ps=(), history=(), settings=S, clean=True, evaluated=True,
        summary=None):
    parity = summary if summary is not None else {"total_mismatch_notional_usd": notional}
    return evaluate_watchdog(parity, profiles(profile_row(capital=capital)).iloc[0], pauses(*ps),
                             run_history(*history), settings=settings, profile_id="p1",
                             window_start=WINDOW, now=NOW, clean=clean, evaluated=evaluated)


@pytest.mark.parametrize("notional,capital,evaluated,triggered,ratio", [
    pytest.param(500.0, 1000.0, True, False, 0.5, id="exactly-at-threshold-no-pause"),
    pytest.param(500.01, 1000.0, True, True, 0.50001, id="just-above-threshold-pauses"),
    pytest.param(499.99, 1000.0, True, False, 0.49999, id="just-below"),
    pytest.param(0.0, 1000.0, True, False, 0.0, id="no-ghost"),
    pytest.param(10.0, 0.0, True, True, math.inf, id="zero-capital-with-ghost-pauses"),
    pytest.param(10.0, NAN, True, True, math.inf, id="missing-capital-with-ghost-pauses"),
    pytest.param(0.0, 0.0, True, False, 0.0, id="zero-capital-no-ghost"),
    pytest.param(900.0, 1000.0, False, False, 0.0, id="not-evaluated-never-triggers"),
])
def test_threshold(notional, capital, evaluated, triggered, ratio):
    res = run(notional, capital=capital, evaluated=evaluated, clean=False)
    assert res.summary["triggered"] is triggered
    assert res.summary["paused"] is triggered
    assert res.summary["ratio"] == pytest.approx(ratio)
    assert res.corrections["action"].tolist() == (["PAUSE_TRADING"] if triggered else [])
    assert res.findings["kind"].tolist() == (["WATCHDOG_TRIGGERED"] if triggered else [])
    assert list(res.corrections.columns) == list(CORRECTIONS) and list(res.findings.columns) == list(FINDINGS)


def test_pause_correction_shape():
    res = run(600.0, clean=False)
    c = res.corrections.iloc[0]
    pid = watchdog_pause_id("p1", WINDOW)
    assert (c["target_table"], c["target_id"]) == ("trading_pauses", pid)
    assert pid == watchdog_pause_id("p1", WINDOW.isoformat()) and pid != watchdog_pause_id("p2", WINDOW)
    assert json.loads(c["expected_state"]) == {"profile_id": "p1", "open_parity_watchdog_pauses": 0}
    new = json.loads(c["new_state"])
    assert new["source"] == WATCHDOG_SOURCE and new["paused_at"] == NOW.isoformat()
    assert new["resumed_at"] is None and new["profile_trading_paused"] is True
    assert res.summary["pause_id"] == pid and res.summary["trading_paused_after"] is True
    assert res.findings["notional_usd"].tolist() == [600.0]


@pytest.mark.parametrize("open_pauses,expect_pause", [
    pytest.param([pause_row("w1")], False, id="open-watchdog-pause-no-second"),
    pytest.param([pause_row("w1", resumed_at=NOW - 60 * MIN, resumed_by=AUTO_RESUME_BY)], True,
                 id="resumed-watchdog-pause-allows-new"),
    pytest.param([pause_row("m1", source="manual")], True, id="manual-pause-open-still-pauses"),
])
def test_no_second_pause(open_pauses, expect_pause):
    res = run(600.0, ps=open_pauses, clean=False)
    assert res.summary["triggered"] is True
    assert res.summary["paused"] is expect_pause
    assert (res.corrections["action"] == "PAUSE_TRADING").sum() == int(expect_pause)


def test_ghost_findings_frame_as_input():
    f = findings_frame([{"kind": "GHOST_SLICE", "notional_usd": 300.0}, {"kind": "GHOST_SLICE", "notional_usd": 301.0},
                        {"kind": "QTY_MISMATCH", "notional_usd": 5000.0}],
                       window_start=WINDOW, profile_id="p1", account="acc1")
    assert ghost_notional(f, "p1") == 601.0 and ghost_notional(f, "p2") == 0.0
    res = run(summary=f, clean=False)
    assert res.summary["triggered"] is True


# --- auto-resume ------------------------------------------------------------------------------

OPEN_WD = pause_row("w1", paused_at=NOW - 60 * MIN)
CLEAN_HISTORY = (run_row(w(9), True),)


@pytest.mark.parametrize("ps,history,clean,settings,blocked", [
    pytest.param([OPEN_WD], CLEAN_HISTORY, True, S, [], id="all-conditions-hold-resumes"),
    pytest.param([pause_row("m1", source="manual", paused_at=NOW - 600 * MIN)], CLEAN_HISTORY, True, S,
                 ["no_watchdog_pause"], id="blocked-by-source-manual"),
    pytest.param([pause_row("r1", source="risk", paused_at=NOW - 600 * MIN)], CLEAN_HISTORY, True, S,
                 ["no_watchdog_pause"], id="blocked-by-source-risk"),
    pytest.param([pause_row("w1", paused_at=NOW - 14 * MIN)], CLEAN_HISTORY, True, S,
                 ["min_pause"], id="blocked-by-min-pause"),
    pytest.param([pause_row("w1", paused_at=NOW - 15 * MIN)], CLEAN_HISTORY, True, S,
                 [], id="min-pause-exactly-lasted-resumes"),
    pytest.param([OPEN_WD], (run_row(w(9), False),), True, S, ["clean_cycles"], id="blocked-by-unclean-previous"),
    pytest.param([OPEN_WD], CLEAN_HISTORY, False, S, ["clean_cycles"], id="blocked-by-unclean-current"),
    pytest.param([OPEN_WD], (), True, S, ["clean_cycles"], id="blocked-by-too-few-checks"),
    pytest.param([OPEN_WD], (run_row(w(8), False), run_row(w(9), True)), True,
                 dataclasses.replace(S, watchdog_clean_cycles=3), ["clean_cycles"], id="blocked-three-cycles"),
    pytest.param([OPEN_WD], (run_row(w(8), True), run_row(w(9), False, evaluated=False)), True, S,
                 [], id="unevaluated-check-skipped"),
    pytest.param([OPEN_WD], (run_row(w(9), False), run_row(w(10), True)), True, S,
                 ["clean_cycles"], id="current-window-in-history-ignored"),
    pytest.param([OPEN_WD, pause_row("w0", paused_at=NOW - 300 * MIN, resumed_at=NOW - 20 * MIN,
                                     resumed_by=AUTO_RESUME_BY)], CLEAN_HISTORY, True, S,
                 ["cooldown"], id="blocked-by-cooldown"),
    pytest.param([OPEN_WD, pause_row("w0", paused_at=NOW - 300 * MIN, resumed_at=NOW - 31 * MIN,
                                     resumed_by=AUTO_RESUME_BY)], CLEAN_HISTORY, True, S,
                 [], id="cooldown-elapsed-resumes"),
    pytest.param([OPEN_WD, pause_row("w0", paused_at=NOW - 300 * MIN, resumed_at=NOW - 5 * MIN,
                                     resumed_by="operator")], CLEAN_HISTORY, True, S,
                 [], id="manual-resume-does-not-start-cooldown"),
    pytest.param([OPEN_WD], CLEAN_HISTORY, True, dataclasses.replace(S, watchdog_auto_resume=False),
                 ["disabled"], id="blocked-by-flag"),
])
def test_auto_resume(ps, history, clean, settings, blocked):
    res = run(0.0, ps=ps, history=history, clean=clean, settings=settings)
    assert res.summary["resume_blocked_by"] == blocked
    assert res.summary["resumed"] is (blocked == [])
    actions = res.corrections["action"].tolist()
    assert actions == (["RESUME_TRADING"] if not blocked else [])
    assert all(json.loads(s)["resumed_by"] == AUTO_RESUME_BY for s in res.corrections["new_state"])


def test_resume_correction_shape():
    res = run(0.0, ps=[OPEN_WD], history=CLEAN_HISTORY)
    c = res.corrections.iloc[0]
    assert (c["target_table"], c["target_id"]) == ("trading_pauses", "w1")
    assert json.loads(c["expected_state"]) == {"resumed_at": None}
    assert json.loads(c["new_state"]) == {"resumed_at": NOW.isoformat(), "resumed_by": AUTO_RESUME_BY,
                                          "profile_trading_paused": False}
    assert res.summary["trading_paused_after"] is False


def test_manual_pause_never_lifted():
    manual = pause_row("m1", source="manual", paused_at=NOW - 600 * MIN)
    res = run(0.0, ps=[manual, OPEN_WD], history=CLEAN_HISTORY)
    assert res.corrections["target_id"].tolist() == ["w1"]  # the manual row is never a target
    assert json.loads(res.corrections["new_state"].iloc[0])["profile_trading_paused"] is True
    assert res.summary["trading_paused_after"] is True and res.summary["other_pause_open"] is True
    only_manual = run(0.0, ps=[manual], history=CLEAN_HISTORY)
    assert only_manual.corrections.empty and only_manual.summary["trading_paused_after"] is True


def test_triggered_check_never_resumes():
    res = run(600.0, ps=[OPEN_WD], history=CLEAN_HISTORY, clean=True)
    assert res.summary["resumed"] is False and "triggered" in res.summary["resume_blocked_by"]
    assert res.corrections.empty  # and no second pause while w1 is open


def test_other_profiles_pauses_ignored():
    other = pause_row("x1", profile_id="p2", paused_at=NOW - 600 * MIN)
    res = run(0.0, ps=[other], history=CLEAN_HISTORY)
    assert res.corrections.empty and res.summary["trading_paused_after"] is False


def test_dry_run_marks_pause_and_resume():
    dry = dataclasses.replace(S, parity_dry_run=True)
    pause = run(600.0, clean=False, settings=dry)
    resume = run(0.0, ps=[OPEN_WD], history=CLEAN_HISTORY, settings=dry)
    assert pause.corrections["dry_run"].tolist() == [True] and resume.corrections["dry_run"].tolist() == [True]
    real = run(600.0, clean=False)
    assert pause.corrections["correction_id"].tolist() == real.corrections["correction_id"].tolist()
