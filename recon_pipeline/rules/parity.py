"""Position-parity heartbeat: netting, "effectively zero", ghost slices, streaks (DESIGN 4.4).

Pure pandas: no I/O, no dagster. :func:`evaluate_parity` compares, per (account, instrument,
position side), the DB's virtual open qty (signed remaining qty of every OPEN slice of every profile
on the account, as the EXIT backfill of the same run left them) with what the exchange holds, and
decides for the running profile's slices only: ghost findings, streak rows, and, once a ghost is
confirmed, a ``SYNTHETIC_EXIT`` or a ``QUARANTINE`` correction.

Decisions where DESIGN is silent (also in the lead's docs):

* **Parity key.** ``(market_type, instrument, position_side)``. Swap: instrument = unified symbol;
  spot: instrument = base asset (the total base balance nets against the slices of every spot symbol
  with that base). A slice whose symbol is not in the markets snapshot is keyed by parsing the unified
  symbol (``BASE/QUOTE[:SETTLE]``) and makes its instrument "not evaluated" (no market, no mark).
* **Position mode.** Binance's mode is account-wide but ``fetch_positions`` omits flat positions, so
  it is inferred: an instrument with ``long``/``short`` rows is hedge mode, with a ``both`` row
  one-way; an instrument with no row takes the account's mode (hedge if any swap row of the account is
  ``long``/``short``), else one-way. One-way is the conservative default: long and short slices net,
  so offsetting slices on a flat account are never ghosts.
* **Effectively zero** applies to the exchange qty AND to the DB net: ``|qty| < one amount precision
  unit`` or ``|qty| x mark < parity_dust_usd``. A DB net that is itself dust is not a ghost source.
  For a spot base traded through several symbols the instrument's precision is the coarsest of them
  and its mark the mean of their marks (the zero test only; slice notionals use the slice's own mark).
  A slice's remaining qty below one precision unit counts as zero in the net and is never a ghost.
  Comparisons allow a relative 1e-9 of one unit for float noise.
* **Not evaluated**: an instrument with a slice or exchange row whose market, precision or mark price
  is missing. Its slices' streaks are neither counted nor reset. Spot exchange balances of a base no
  OPEN slice trades are not evaluated (an account may hold coins the bots never trade); a swap position
  with no slice is a ``QTY_MISMATCH``.
* **QTY_MISMATCH**: exchange not effectively zero and ``|exchange - DB net| >= one precision unit``.
  Two rows: a ``QTY_MISMATCH`` finding (the mismatch report) and a ``NO_GO`` row with reason
  ``QTY_MISMATCH`` (the operator queue); notional = |difference| x mark. Reported in the run of every
  profile with an OPEN slice on that key, and of every profile when no slice is on it (account level).
* **SPOT_SHORT**: an OPEN short slice of a spot symbol is a ``NO_GO`` row (running profile's slices),
  excluded from netting, never a ghost, its streak untouched. Only reported when parity is evaluated.
* **Streaks** (``PARITY_STREAKS``, running profile only, one row per slice that was ever a ghost):
  a ghost check of a window later than ``last_window_start`` counts (+1); the same window again
  changes nothing (no double count); a clean check resets to 0 (also on a re-run of the same window:
  the conservative direction); a check of a window earlier than ``last_window_start`` is ignored.
  ``first_seen_window`` is the first window the slice was ever seen a ghost, never rewritten (no
  nulls). Only changed rows are returned (to upsert).
* **Acting**: every evaluated check in which the slice is a ghost and its streak (after this check)
  is ``>= parity_confirmations`` proposes the action again. A successful SYNTHETIC_EXIT / QUARANTINE
  takes the slice out of OPEN, so it is proposed once in practice; a STALE or DRY_RUN one is retried
  while the ghost persists. The id includes the window, so a re-run of the same window repeats the
  same id, and the expected state ``{status: OPEN, exit_qty}`` prevents any double apply.
* **SYNTHETIC_EXIT exit price**: the remaining qty exits at mark; a slice that was already partly
  exited gets the qty-weighted average of its recorded exit and the mark (``= mark`` when nothing was
  exited before), so the slice's P&L keeps the real partial exit. The mark is in the evidence.
* **clean** (for the watchdog): evaluated, no ghost slice of the profile, no QTY_MISMATCH on a key
  where the profile has an OPEN slice, no QUARANTINE proposed for the profile, and no instrument the
  profile has an OPEN slice on left unevaluated (no mark / unknown market): a check that could not
  look at everything cannot vouch that it is clean. SPOT_SHORT NO_GO rows do not make it unclean (a
  standing DB defect would otherwise block auto-resume forever; they are reported every live run).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recon_pipeline.rules.attribution import isin_str
from recon_pipeline.rules.corrections import corrections_frame, findings_frame
from recon_pipeline.schemas import CORRECTIONS, FINDINGS, PARITY_STREAKS, conform, empty
from recon_pipeline.settings import ReconSettings

SYNTHETIC_EXIT_SOURCE = "parity_synthetic"
REL_EPS = 1e-9  # slack on one precision unit against float noise
_MIN_PREC = 1e-12  # a zero/absent precision step would make float noise a mismatch
_KEY = ["market_type", "instrument", "pside"]


@dataclass(frozen=True)
class ParityResult:
    """What one parity check decided.

    ``findings`` (FINDINGS), ``corrections`` (CORRECTIONS: SYNTHETIC_EXIT / QUARANTINE), ``streaks``
    (PARITY_STREAKS rows to upsert, running profile only), ``summary`` (health counters, see
    :func:`evaluate_parity`).
    """

    findings: pd.DataFrame
    corrections: pd.DataFrame
    streaks: pd.DataFrame
    summary: dict[str, Any]


def utc(ts: Any) -> pd.Timestamp:
    """A tz-aware UTC timestamp from a Timestamp, datetime or ISO string."""
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def subtag_attributed(client_ids: pd.Series, sub_tags: pd.Series) -> pd.Series:
    """True where the client id starts with ``{sub_tag}-`` (never a bare prefix: ``g12-`` is not ``g1``).

    sub_tags are alphanumeric (no ``-``), so "starts with tag + '-'" is "the part before the first
    '-' equals the tag and there is a '-'". Missing ids or tags are not attributed.
    """
    if len(client_ids) == 0:
        return pd.Series([], index=client_ids.index, dtype=bool)
    parts = client_ids.astype("str").fillna("").str.partition("-")
    tags = sub_tags.astype("str").to_numpy()
    ok = (parts[0].to_numpy() == tags) & (parts[1].to_numpy() == "-") & pd.notna(tags) & (tags != "")
    ok &= client_ids.notna().to_numpy()
    return pd.Series(np.asarray(ok, dtype=bool), index=client_ids.index)


def safe_merge(left: pd.DataFrame, right: pd.DataFrame, on: list[str] | str, **kw: Any) -> pd.DataFrame:
    """``left.merge(right)`` that survives empty frames keyed by pyarrow strings.

    pandas 3.1 concatenates the key chunks of both sides; two chunk-less (empty) arrow arrays raise
    ``ArrowInvalid``. With an empty side the keys go through object dtype and come back as ``str``.
    """
    if len(left) and len(right):
        return left.merge(right, on=on, **kw)
    keys = [on] if isinstance(on, str) else list(on)
    str_keys = [k for k in keys if pd.api.types.is_string_dtype(left[k]) or pd.api.types.is_string_dtype(right[k])]
    cast = {k: object for k in str_keys}
    out = left.astype(cast).merge(right.astype(cast), on=on, **kw)
    return out.astype({k: "str" for k in str_keys})


def _summary(evaluated: bool, reason: str | None, dry_run: bool) -> dict[str, Any]:
    return {
        "parity_evaluated": evaluated,
        "not_evaluated_reason": reason,
        "ghost_trades": 0,
        "confirmed_ghosts": 0,
        "quarantined": 0,
        "auto_closed": 0,
        "max_mismatch_notional_usd": 0.0,
        "total_mismatch_notional_usd": 0.0,
        "qty_mismatches": 0,
        "qty_mismatch_notional_usd": 0.0,
        "spot_shorts": 0,
        "account_ghost_trades": 0,
        "not_evaluated_instruments": [],
        "clean": False,
        "dry_run": dry_run,
    }


def _not_evaluated(reason: str, settings: ReconSettings) -> ParityResult:
    return ParityResult(empty(FINDINGS), empty(CORRECTIONS), empty(PARITY_STREAKS),
                        _summary(False, reason, settings.parity_dry_run))


def _zero(qty: pd.Series, prec: pd.Series, mark: pd.Series, dust: float) -> pd.Series:
    """Effectively zero: below one precision unit, or notional below the dust threshold."""
    a = qty.abs()
    return (a < prec * (1 - REL_EPS)) | (a * mark < dust)


def evaluate_parity(
    slices: pd.DataFrame,
    positions: pd.DataFrame | None,
    markets: pd.DataFrame,
    profiles: pd.DataFrame,
    streaks: pd.DataFrame,
    no_go_trade_ids: Iterable[str],
    *,
    settings: ReconSettings,
    profile_id: str,
    account: str,
    window_start: Any,
    now: Any,
    evaluated: bool,
) -> ParityResult:
    """One heartbeat check of ``account``, acting on ``profile_id``'s slices only.

    ``slices``: TRADE_HISTORY of the account after this run's EXIT backfill (all profiles).
    ``positions``: EXCHANGE_POSITIONS, or None when the fetch failed (not evaluated).
    ``markets``: EXCHANGE_MARKETS (precision, mark price). ``profiles``: PROFILES (sub_tags).
    ``streaks``: PARITY_STREAKS as stored. ``no_go_trade_ids``: trades with NO_GO exit evidence in
    this run (OVER_FILL, AMBIGUOUS, STALE_FILL, UNKNOWN_TRADE): quarantined, never closed at mark.
    ``evaluated=False``: a historical window ("parity not evaluated").

    Summary keys: parity_evaluated, not_evaluated_reason (historical_window | position_fetch_failed |
    disabled | None), ghost_trades, confirmed_ghosts, quarantined, auto_closed,
    max_mismatch_notional_usd, total_mismatch_notional_usd (the profile's ghost slices, confirmed or
    not: the watchdog's numerator), qty_mismatches, qty_mismatch_notional_usd, spot_shorts,
    account_ghost_trades (all profiles), not_evaluated_instruments, clean, dry_run.
    """
    if not settings.parity_enabled:
        return _not_evaluated("disabled", settings)
    if not evaluated:
        return _not_evaluated("historical_window", settings)
    if positions is None:
        return _not_evaluated("position_fetch_failed", settings)

    window_start = utc(window_start)
    now = utc(now)
    dust = float(settings.parity_dust_usd)
    n_conf = int(settings.parity_confirmations)
    no_go = {str(t) for t in no_go_trade_ids}

    # --- slices: OPEN ones on the account, with their market --------------------------------------
    sl = slices.loc[(slices["account"] == account) & (slices["status"] == "OPEN")].copy()
    mk = markets.loc[markets["account"] == account].drop_duplicates("symbol", keep="last")
    sl = safe_merge(sl, mk[["symbol", "market_type", "base", "amount_precision", "mark_price"]],
                    on="symbol", how="left")
    parsed_swap = sl["symbol"].str.contains(":", regex=False).fillna(False)
    sl["market_type"] = sl["market_type"].fillna(pd.Series(np.where(parsed_swap, "swap", "spot"),
                                                           index=sl.index, dtype="str"))
    no_base = sl["base"].isna().to_numpy(bool)
    if no_base.any():  # split only the symbols with no market row
        sl.loc[no_base, "base"] = sl.loc[no_base, "symbol"].str.split("/").str[0]
    sl["remaining"] = sl["entry_qty"] - sl["exit_qty"].fillna(0.0)
    sl["dust"] = sl["remaining"].abs() < sl["amount_precision"].clip(lower=_MIN_PREC) * (1 - REL_EPS)
    is_spot = sl["market_type"] == "spot"
    sl["spot_short"] = is_spot & (sl["side"] == "short")
    sl["instrument"] = sl["base"].where(is_spot, sl["symbol"])

    # --- position mode, per instrument, falling back to the account's ---------------------------
    pos = positions.loc[positions["account"] == account].copy()
    swap_pos = pos.loc[pos["market_type"] == "swap"]
    hedge_row = swap_pos["position_side"].isin(["long", "short"])
    inst_hedge = hedge_row.groupby(swap_pos["instrument"]).any()
    account_hedge = bool(hedge_row.any())
    hedge_insts = inst_hedge.index[inst_hedge.to_numpy(dtype=bool)]
    slice_hedge = np.where(sl["instrument"].isin(inst_hedge.index), sl["instrument"].isin(hedge_insts),
                           account_hedge)
    sl["pside"] = sl["side"].where((sl["market_type"] == "swap") & slice_hedge, "both")
    sl["signed"] = np.where(sl["dust"], 0.0, np.where(sl["side"] == "long", 1.0, -1.0) * sl["remaining"])

    sl["is_mine"] = (sl["profile_id"] == profile_id).astype(int)
    netted = sl.loc[~sl["spot_short"]]
    db = (netted.assign(n_slices=1)[_KEY + ["signed", "n_slices", "is_mine"]]
          .groupby(_KEY, as_index=False).sum()
          .rename(columns={"signed": "db_net", "is_mine": "n_profile"}))

    # --- exchange side ---------------------------------------------------------------------------
    q = pos["qty"].astype(float)
    pos["exch_signed"] = np.where(pos["position_side"] == "long", q.abs(),
                                  np.where(pos["position_side"] == "short", -q.abs(), q))
    pos["pside"] = pos["position_side"]
    ex = pos.groupby(_KEY, as_index=False)["exch_signed"].sum().rename(columns={"exch_signed": "exch_qty"})

    keys = safe_merge(db, ex, on=_KEY, how="outer")
    keys["n_slices"] = keys["n_slices"].fillna(0).astype(int)
    keys["n_profile"] = keys["n_profile"].fillna(0).astype(int)
    keys["db_net"] = keys["db_net"].fillna(0.0)
    keys["exch_qty"] = keys["exch_qty"].fillna(0.0)
    # a spot balance of a base no OPEN slice trades is not evaluated (nor reported)
    keys = keys.loc[(keys["market_type"] == "swap") | (keys["n_slices"] > 0)]

    # --- instrument precision and mark -----------------------------------------------------------
    inst = ["market_type", "instrument"]
    per_slice = pd.DataFrame({
        "market_type": netted["market_type"], "instrument": netted["instrument"],
        "mark_sum": netted["mark_price"].fillna(0.0), "mark_n": netted["mark_price"].notna().astype(int),
        "mark_missing": netted["mark_price"].isna().astype(int),
        "prec_missing": netted["amount_precision"].isna().astype(int),
        "prec": netted["amount_precision"],
    })
    grouped = per_slice.groupby(inst, as_index=False)
    sl_info = grouped[["mark_sum", "mark_n", "mark_missing", "prec_missing"]].sum()
    sl_info["prec"] = grouped["prec"].max()["prec"].to_numpy()
    sl_info["mark"] = sl_info["mark_sum"] / sl_info["mark_n"].where(sl_info["mark_n"] > 0)
    sl_info["mark_missing"] = sl_info["mark_missing"] > 0
    sl_info["prec_missing"] = sl_info["prec_missing"] > 0
    sl_info = sl_info[inst + ["mark", "prec", "mark_missing", "prec_missing"]]
    swap_mk = mk.loc[mk["market_type"] == "swap"]
    mk_info = pd.DataFrame({
        "market_type": swap_mk["market_type"], "instrument": swap_mk["symbol"],
        "mark": swap_mk["mark_price"], "prec": swap_mk["amount_precision"],
        "mark_missing": swap_mk["mark_price"].isna(), "prec_missing": swap_mk["amount_precision"].isna(),
    })
    mk_info = safe_merge(mk_info, sl_info[["market_type", "instrument"]], on=["market_type", "instrument"],
                         how="left", indicator=True)
    mk_info = mk_info.loc[mk_info["_merge"] == "left_only"].drop(columns="_merge")
    info = pd.concat([sl_info, mk_info], ignore_index=True) if len(mk_info) else sl_info
    keys = safe_merge(keys, info, on=["market_type", "instrument"], how="left")
    keys["evaluated"] = (keys["mark"].notna() & keys["prec"].notna()
                         & ~keys["mark_missing"].fillna(True).astype(bool)
                         & ~keys["prec_missing"].fillna(True).astype(bool))
    prec = keys["prec"].clip(lower=_MIN_PREC)
    keys["exch_zero"] = _zero(keys["exch_qty"], prec, keys["mark"], dust)
    keys["db_zero"] = _zero(keys["db_net"], prec, keys["mark"], dust)
    diff = (keys["exch_qty"] - keys["db_net"]).abs()
    keys["ghost_key"] = keys["evaluated"] & keys["exch_zero"] & ~keys["db_zero"]
    keys["mismatch"] = keys["evaluated"] & ~keys["exch_zero"] & (diff >= prec * (1 - REL_EPS))
    keys["mismatch_notional"] = diff * keys["mark"]

    not_eval_keys = keys.loc[~keys["evaluated"] & ((keys["n_slices"] > 0) | (keys["exch_qty"] != 0))]
    not_eval = not_eval_keys["instrument"]
    profile_not_evaluated = bool((not_eval_keys["n_profile"] > 0).any())
    not_evaluated_instruments = sorted({str(i) for i in not_eval})

    # --- slice verdicts --------------------------------------------------------------------------
    sv = safe_merge(netted, keys[_KEY + ["evaluated", "ghost_key", "exch_qty", "db_net"]], on=_KEY, how="left")
    sv["evaluated"] = sv["evaluated"].fillna(False).astype(bool)
    sv["ghost"] = sv["ghost_key"].fillna(False).astype(bool) & ~sv["dust"]
    sv["notional"] = sv["remaining"] * sv["mark_price"]
    account_ghost_trades = int(sv["ghost"].sum())

    mine = sv.loc[(sv["profile_id"] == profile_id) & sv["evaluated"]].copy()
    sub_tag = profiles.loc[profiles["profile_id"] == profile_id, "sub_tag"]
    tag = str(sub_tag.iloc[0]) if len(sub_tag) and pd.notna(sub_tag.iloc[0]) else ""
    mine["attributed"] = subtag_attributed(mine["entry_client_order_id"],
                                           pd.Series([tag] * len(mine), index=mine.index, dtype="str"))

    # --- streaks ---------------------------------------------------------------------------------
    prior = streaks.loc[streaks["profile_id"] == profile_id,
                        ["trade_id", "streak", "first_seen_window", "last_window_start"]]
    prior = prior.drop_duplicates("trade_id", keep="last").rename(columns={
        "streak": "prior_streak", "first_seen_window": "prior_first", "last_window_start": "prior_last"})
    mine = safe_merge(mine, prior, on="trade_id", how="left")
    has_prior = mine["prior_last"].notna()
    prior_streak = mine["prior_streak"].fillna(0).astype(int)
    older = has_prior & (mine["prior_last"] > window_start)
    same = has_prior & (mine["prior_last"] == window_start)
    newer = ~older & ~same
    ghost = mine["ghost"]
    mine["streak"] = np.where(ghost & newer, prior_streak + 1,
                              np.where(~ghost & ~older, 0, prior_streak))
    counted = ghost & newer
    reset = ~ghost & ~older & has_prior & (prior_streak > 0)
    mine["act"] = ghost & ~older & (mine["streak"] >= n_conf)

    changed = mine.loc[counted | reset].sort_values("trade_id")
    streak_rows = pd.DataFrame({
        "trade_id": changed["trade_id"],
        "profile_id": profile_id,
        "streak": changed["streak"].astype("int64"),
        "first_seen_window": changed["prior_first"].where(changed["prior_first"].notna(), window_start),
        "last_window_start": window_start,
    })
    streak_rows = conform(streak_rows, PARITY_STREAKS, name="parity_streaks") if len(streak_rows) \
        else empty(PARITY_STREAKS)

    # --- corrections -----------------------------------------------------------------------------
    acting = mine.loc[mine["act"]].sort_values("trade_id")
    quarantine = pd.Series(isin_str(acting["trade_id"], pd.Series(sorted(no_go), dtype="str")),
                           index=acting.index) | (settings.parity_require_subtag & ~acting["attributed"])
    rows: list[dict[str, Any]] = []
    for rec, q_flag in zip(acting.to_dict("records"), quarantine.tolist(), strict=True):
        rows.append(_action_row(rec, bool(q_flag), no_go, settings, now, n_conf))
    corrections = corrections_frame(rows, parity_dry_run=settings.parity_dry_run,
                                    window_start=window_start, profile_id=profile_id)
    n_quarantined = int((corrections["action"] == "QUARANTINE").sum())
    n_closed = int((corrections["action"] == "SYNTHETIC_EXIT").sum())

    # --- findings --------------------------------------------------------------------------------
    ghosts = mine.loc[mine["ghost"]].sort_values("trade_id")
    f_rows: list[dict[str, Any]] = []
    for rec in ghosts.to_dict("records"):
        f_rows.append({
            "kind": "GHOST_SLICE", "symbol": rec["symbol"], "trade_id": rec["trade_id"],
            "client_order_id": rec["entry_client_order_id"],
            "attribution": "sub_tag" if rec["attributed"] else "none",
            "qty_db": rec["remaining"], "qty_exchange": rec["exch_qty"], "notional_usd": rec["notional"],
            "reason": f"streak={int(rec['streak'])}/{n_conf}",
            "detail": (f"{rec['side']} slice {rec['trade_id']} has {rec['remaining']:g} {rec['symbol']} open "
                       f"in the DB while the exchange {rec['instrument']} {rec['pside']} position is "
                       f"effectively zero ({rec['exch_qty']:g}); seen in {int(rec['streak'])} of "
                       f"{n_conf} consecutive checks; mismatch {rec['notional']:.2f} USD"
                       + ("; confirmed" if rec["act"] else "")),
        })
    mismatches = keys.loc[keys["mismatch"] & ((keys["n_profile"] > 0) | (keys["n_slices"] == 0))]
    for rec in mismatches.sort_values(_KEY).to_dict("records"):
        base = {
            "symbol": rec["instrument"], "qty_db": rec["db_net"], "qty_exchange": rec["exch_qty"],
            "notional_usd": rec["mismatch_notional"], "reason": "QTY_MISMATCH",
            "detail": (f"{rec['market_type']} {rec['instrument']} {rec['pside']}: exchange holds "
                       f"{rec['exch_qty']:g}, the DB's OPEN slices net {rec['db_net']:g} "
                       f"({int(rec['n_slices'])} slices); difference {rec['mismatch_notional']:.2f} USD; "
                       "no slice is closed on a partial difference"),
        }
        f_rows.append({"kind": "QTY_MISMATCH", **base})
        f_rows.append({"kind": "NO_GO", **base})
    spot_shorts = sl.loc[sl["spot_short"] & (sl["profile_id"] == profile_id)].sort_values("trade_id")
    for rec in spot_shorts.to_dict("records"):
        f_rows.append({
            "kind": "NO_GO", "symbol": rec["symbol"], "trade_id": rec["trade_id"],
            "client_order_id": rec["entry_client_order_id"], "qty_db": rec["remaining"],
            "notional_usd": rec["remaining"] * rec["mark_price"], "reason": "SPOT_SHORT",
            "detail": f"OPEN short slice {rec['trade_id']} on spot {rec['symbol']}: spot cannot be short",
        })
    findings = findings_frame(f_rows, window_start=window_start, profile_id=profile_id, account=account)

    notional = ghosts["notional"]
    profile_mismatch = int((mismatches["n_profile"] > 0).sum())
    summary = _summary(True, None, settings.parity_dry_run)
    summary.update({
        "ghost_trades": int(len(ghosts)),
        "confirmed_ghosts": int(len(acting)),
        "quarantined": n_quarantined,
        "auto_closed": n_closed,
        "max_mismatch_notional_usd": float(notional.max()) if len(notional) else 0.0,
        "total_mismatch_notional_usd": float(notional.sum()) if len(notional) else 0.0,
        "qty_mismatches": int(len(mismatches)),
        "qty_mismatch_notional_usd": float(mismatches["mismatch_notional"].sum()) if len(mismatches) else 0.0,
        "spot_shorts": int(len(spot_shorts)),
        "account_ghost_trades": account_ghost_trades,
        "not_evaluated_instruments": not_evaluated_instruments,
        "clean": bool(len(ghosts) == 0 and profile_mismatch == 0 and n_quarantined == 0
                      and not profile_not_evaluated),
    })
    return ParityResult(findings, corrections, streak_rows, summary)


def _action_row(rec: dict[str, Any], quarantine: bool, no_go: set[str], settings: ReconSettings,
                now: pd.Timestamp, n_conf: int) -> dict[str, Any]:
    """One SYNTHETIC_EXIT or QUARANTINE correction for a confirmed ghost slice."""
    exit_qty = float(rec["exit_qty"]) if pd.notna(rec["exit_qty"]) else 0.0
    attribution = "sub_tag" if rec["attributed"] else "none"
    evidence = {
        "rule": "position_parity",
        "confirmations": n_conf,
        "streak": int(rec["streak"]),
        "first_seen_window": rec["prior_first"] if pd.notna(rec["prior_first"]) else None,
        "instrument": rec["instrument"],
        "position_side": rec["pside"],
        "exchange_qty": float(rec["exch_qty"]),
        "db_net_qty": float(rec["db_net"]),
        "remaining_qty": float(rec["remaining"]),
        "mark_price": float(rec["mark_price"]),
        "attribution": attribution,
    }
    base = {
        "target_table": "trade_history",
        "target_id": rec["trade_id"],
        "expected_state": {"status": "OPEN", "exit_qty": exit_qty},
        "attribution": attribution,
        "notional_usd": float(rec["notional"]),
    }
    if quarantine:
        why = "no_go_exit_evidence" if rec["trade_id"] in no_go else "no_subtag_attribution"
        return {**base, "action": "QUARANTINE", "new_state": {"status": "QUARANTINED"},
                "evidence": {**evidence, "reason": why}}
    mark = float(rec["mark_price"])
    entry_qty = float(rec["entry_qty"])
    prev_price = rec["exit_price"]
    if exit_qty > 0 and pd.notna(prev_price) and entry_qty > 0:
        exit_price = (exit_qty * float(prev_price) + (entry_qty - exit_qty) * mark) / entry_qty
    else:
        exit_price = mark
    new_state = {
        "status": "CLOSED", "exit_qty": entry_qty, "exit_price": exit_price, "exit_time": now,
        "exit_source": SYNTHETIC_EXIT_SOURCE,
    }
    return {**base, "action": "SYNTHETIC_EXIT", "new_state": new_state,
            "evidence": {**evidence, "reason": "confirmed_ghost"}}
