"""Integrity watchdog: pause on ghost notional, auto-resume when clean (DESIGN 4.5).

Pure pandas: no I/O, no dagster. :func:`evaluate_watchdog` turns one parity check of a profile into
at most one ``PAUSE_TRADING`` and/or ``RESUME_TRADING`` corrections (never both in one check).

Decisions where DESIGN is silent (also in the lead's docs):

* **Ratio**: the profile's ghost mismatch notional of this check (confirmed or not) / allocated
  capital; a pause only when it is *strictly* above ``parity_max_notional_pct``. A check that was not
  evaluated never triggers (there is no ghost data) and never resumes (it is not clean).
* **Zero or missing allocated capital**: any ghost notional > 0 triggers (ratio = inf, finding reason
  ``NO_ALLOCATED_CAPITAL``): a profile with no capital of record and positions the exchange does not
  hold is the unsafe case, and a pause is the safe answer. No ghost notional: no trigger.
* **pause_id** is ``pw-`` + 24 hex of sha256(``profile_id|window_start ISO``): deterministic, so a
  re-run of the window proposes the same row; the applier's expected state (no open parity_watchdog
  pause) makes a second one impossible. No pause is proposed while a parity_watchdog pause is open;
  one is proposed even when a manual/risk pause is open (the watchdog's reason must outlive it).
* **Auto-resume marker**: a resumed pause gets ``resumed_by = "recon_auto_resume"``
  (:data:`AUTO_RESUME_BY`); the cooldown reads the newest ``resumed_at`` of the profile's pauses with
  that marker. ``min_pause``: ``now - paused_at >= watchdog_min_pause_ms`` ("has lasted");
  cooldown: ``now - last_auto_resume > watchdog_cooldown_ms`` ("older than"). Times are exchange time.
* **Clean cycles**: the current check (evaluated and clean) plus the newest
  ``watchdog_clean_cycles - 1`` earlier *evaluated* checks of RUN_HISTORY (windows before this one,
  one per window: the latest evaluation of a re-run window wins) must all be clean; too few earlier
  checks block. The pausing check itself is unclean, so the clean checks always follow the pause.
* **Other pauses**: only ``parity_watchdog`` rows are ever resumed. If a manual/risk pause (or another
  watchdog pause that is not resumed) stays open, ``profile_trading_paused`` in the new state stays
  True: ``profiles.trading_paused`` must equal "any pause open"; the applier sets it in the same
  transaction (and should recompute it from the table rather than trust the proposed value).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from recon_pipeline.rules.corrections import corrections_frame, findings_frame
from recon_pipeline.rules.parity import utc
from recon_pipeline.schemas import CORRECTIONS, FINDINGS, empty
from recon_pipeline.settings import ReconSettings

WATCHDOG_SOURCE = "parity_watchdog"
AUTO_RESUME_BY = "recon_auto_resume"


@dataclass(frozen=True)
class WatchdogResult:
    """``findings`` (WATCHDOG_TRIGGERED), ``corrections`` (PAUSE_TRADING / RESUME_TRADING), ``summary``."""

    findings: pd.DataFrame
    corrections: pd.DataFrame
    summary: dict[str, Any]


def watchdog_pause_id(profile_id: str, window_start: Any) -> str:
    """Deterministic id of the pause row the watchdog would create for (profile, window)."""
    payload = f"{profile_id}|{utc(window_start).isoformat()}"
    return "pw-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def ghost_notional(parity_summary_or_ghost_findings: Any, profile_id: str) -> float:
    """The profile's ghost mismatch notional: from a parity summary dict or from findings rows."""
    src = parity_summary_or_ghost_findings
    if src is None:
        return 0.0
    if isinstance(src, pd.DataFrame):
        rows = src.loc[(src["kind"] == "GHOST_SLICE") & (src["profile_id"] == profile_id), "notional_usd"]
        return float(rows.fillna(0.0).sum())
    value = src.get("total_mismatch_notional_usd", 0.0)
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _profile_value(profile: Any, column: str) -> Any:
    if profile is None:
        return None
    if isinstance(profile, pd.DataFrame):
        return profile[column].iloc[0] if len(profile) and column in profile.columns else None
    return profile.get(column) if hasattr(profile, "get") else None


def evaluate_watchdog(
    parity_summary_or_ghost_findings: Any,
    profile: Any,
    pauses: pd.DataFrame,
    run_history: pd.DataFrame,
    *,
    settings: ReconSettings,
    profile_id: str,
    window_start: Any,
    now: Any,
    clean: bool,
    evaluated: bool,
) -> WatchdogResult:
    """Pause / auto-resume decision for one profile's check.

    ``parity_summary_or_ghost_findings``: :class:`ParityResult.summary` or a FINDINGS frame (its
    GHOST_SLICE rows of the profile). ``profile``: the PROFILES row (Series, dict or 1-row frame).
    ``pauses``: TRADING_PAUSES of the profile (others are ignored). ``run_history``: RUN_HISTORY of
    earlier checks. ``clean`` / ``evaluated``: this check's parity verdict.

    Summary keys: triggered, paused (a PAUSE_TRADING proposed), resumed (a RESUME_TRADING proposed),
    ratio, ghost_notional_usd, allocated_capital_usd, pause_id, watchdog_pause_open,
    other_pause_open, trading_paused_after (what profiles.trading_paused becomes if the batch
    applies), resume_blocked_by (list of: disabled, not_evaluated, triggered, no_watchdog_pause,
    min_pause, clean_cycles, cooldown), dry_run.
    """
    window_start = utc(window_start)
    now = utc(now)
    p = pauses.loc[pauses["profile_id"] == profile_id]
    open_ = p.loc[p["resumed_at"].isna()]
    is_wd = open_["source"] == WATCHDOG_SOURCE
    open_wd = open_.loc[is_wd].sort_values("pause_id")
    open_other = open_.loc[~is_wd]

    notional = ghost_notional(parity_summary_or_ghost_findings, profile_id) if evaluated else 0.0
    capital_raw = _profile_value(profile, "allocated_capital_usd")
    capital = float(capital_raw) if capital_raw is not None and pd.notna(capital_raw) else math.nan
    no_capital = not (capital > 0)
    if notional <= 0:
        ratio = 0.0
    elif no_capital:
        ratio = math.inf
    else:
        ratio = notional / capital
    threshold = float(settings.parity_max_notional_pct)
    triggered = bool(evaluated and notional > 0 and ratio > threshold)
    pause_id = watchdog_pause_id(profile_id, window_start)

    rows: list[dict[str, Any]] = []
    findings_rows: list[dict[str, Any]] = []
    paused = triggered and len(open_wd) == 0
    if triggered:
        reason = "NO_ALLOCATED_CAPITAL" if no_capital else f"ratio={ratio:.6g}>{threshold:g}"
        findings_rows.append({
            "kind": "WATCHDOG_TRIGGERED", "notional_usd": notional, "reason": reason,
            "detail": (f"ghost mismatch notional {notional:.2f} USD is "
                       + ("above zero with no allocated capital" if no_capital else
                          f"{ratio:.2%} of allocated capital {capital:.2f} USD (threshold {threshold:.2%})")
                       + ("; pausing trading" if paused else "; a parity_watchdog pause is already open")),
        })
    if paused:
        rows.append({
            "action": "PAUSE_TRADING", "target_table": "trading_pauses", "target_id": pause_id,
            "expected_state": {"profile_id": profile_id, "open_parity_watchdog_pauses": 0},
            "new_state": {
                "pause_id": pause_id, "profile_id": profile_id, "source": WATCHDOG_SOURCE,
                "reason": f"parity ghost notional {notional:.2f} USD > {threshold:g} x allocated capital",
                "paused_at": now, "resumed_at": None, "resumed_by": None, "profile_trading_paused": True,
            },
            "evidence": {"ghost_notional_usd": notional, "allocated_capital_usd": capital,
                         "ratio": ratio, "threshold": threshold},
            "notional_usd": notional,
        })

    # --- auto-resume: every condition is evaluated so the summary says what blocks it ------------
    blocked: list[str] = []
    if not settings.watchdog_auto_resume:
        blocked.append("disabled")
    if not evaluated:
        blocked.append("not_evaluated")
    if triggered:
        blocked.append("triggered")
    if len(open_wd) == 0:
        blocked.append("no_watchdog_pause")
    lasted_ms = (now - open_wd["paused_at"]).dt.total_seconds() * 1000.0
    ripe = open_wd.loc[lasted_ms >= settings.watchdog_min_pause_ms]
    if len(open_wd) and not len(ripe):
        blocked.append("min_pause")
    clean_windows = _clean_streak(run_history, profile_id, window_start, settings.watchdog_clean_cycles,
                                  clean and evaluated)
    if clean_windows is None:
        blocked.append("clean_cycles")
    auto = p.loc[(p["resumed_by"] == AUTO_RESUME_BY) & p["resumed_at"].notna(), "resumed_at"]
    last_auto = auto.max() if len(auto) else pd.NaT
    if pd.notna(last_auto) and (now - last_auto).total_seconds() * 1000.0 <= settings.watchdog_cooldown_ms:
        blocked.append("cooldown")

    resumed = not blocked
    if resumed:
        still_open = len(open_other) + len(open_wd) - len(ripe)
        for rec in ripe.to_dict("records"):
            rows.append({
                "action": "RESUME_TRADING", "target_table": "trading_pauses", "target_id": rec["pause_id"],
                "expected_state": {"resumed_at": None},
                "new_state": {"resumed_at": now, "resumed_by": AUTO_RESUME_BY,
                              "profile_trading_paused": bool(still_open > 0)},
                "evidence": {"source": WATCHDOG_SOURCE, "paused_at": rec["paused_at"],
                             "paused_ms": float((now - rec["paused_at"]).total_seconds() * 1000.0),
                             "clean_windows": clean_windows, "last_auto_resume": last_auto},
                "notional_usd": 0.0,
            })
    corrections = (corrections_frame(rows, parity_dry_run=settings.parity_dry_run,
                                     window_start=window_start, profile_id=profile_id)
                   if rows else empty(CORRECTIONS))
    findings = (findings_frame(findings_rows, window_start=window_start, profile_id=profile_id,
                               account=_profile_value(profile, "account"))
                if findings_rows else empty(FINDINGS))

    remaining_open = len(open_other) + len(open_wd) - (len(ripe) if resumed else 0) + (1 if paused else 0)
    summary = {
        "triggered": triggered,
        "paused": paused,
        "resumed": resumed,
        "ratio": ratio,
        "ghost_notional_usd": notional,
        "allocated_capital_usd": capital,
        "pause_id": pause_id if paused else None,
        "watchdog_pause_open": bool(len(open_wd)),
        "other_pause_open": bool(len(open_other)),
        "trading_paused_after": bool(remaining_open > 0),
        "resume_blocked_by": blocked,
        "dry_run": settings.parity_dry_run,
    }
    return WatchdogResult(findings, corrections, summary)


def _clean_streak(run_history: pd.DataFrame, profile_id: str, window_start: pd.Timestamp, cycles: int,
                  current_clean: bool) -> list[pd.Timestamp] | None:
    """The windows of the last ``cycles`` checks when all were clean (the current one last), else None."""
    if not current_clean:
        return None
    need = cycles - 1
    rh = run_history.loc[(run_history["profile_id"] == profile_id) & run_history["parity_evaluated"]
                         & (run_history["window_start"] < window_start)]
    rh = rh.sort_values(["window_start", "evaluated_at"]).drop_duplicates("window_start", keep="last")
    last = rh.tail(need) if need > 0 else rh.iloc[0:0]
    if len(last) < need or not bool(last["clean"].all()):
        return None
    return [*last["window_start"].tolist(), window_start]
