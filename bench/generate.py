"""Seeded generator of consistent trading data for the benchmark.

One call, :func:`generate`, builds both sides of one reconciliation partition (the live run of the
window ``2026-11-30T09:00Z`` of profile ``p_alpha``) at a requested size, as typed frames that
``recon_pipeline.schemas.conform`` produced:

* two accounts (``acctA``: four profiles, sub_tags ``alpha``, ``beta``, ``g1`` and ``g12`` -- the last
  two exercise the "``g12-`` is not ``g1``" rule; ``acctB``: one profile), spot and swap markets of
  ``n_bases`` base assets (one spot ``B7/USDT`` and one swap ``B7/USDT:USDT`` each);
* slices (``trade_history``): about a third of the fills; each has 1..3 entry fills of one entry
  order whose client id is ``client_order_id.encode(tag, "e", trade_id)`` and, when it exited, 1..2
  exit fills of one exit order (``encode(tag, "x", trade_id)``); about 1 % of trade ids are long
  "legacy" ids with ``-`` (the base62 digest path of the trade key);
* open orders: about a twentieth of the fills, on both sides;
* about 1 % injected drift of every finding kind (see :data:`DRIFT_KINDS`);
* exchange positions and balances consistent with the DB *as the running profile's own EXIT
  backfill leaves it* (the exchange is the truth), except the injected ghost instruments (flat on
  the exchange) and qty-mismatch instruments (off by 7 units). Other profiles' drift is corrected by
  their own runs, so the generator counts their slices as the DB has them.

Everything is a pure function of ``(n_fills, seed)``. :func:`load_cached` keeps each size as parquet
under ``.recon/bench_cache`` so a benchmark run and its worker processes generate it once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recon_pipeline import schemas as S
from recon_pipeline.rules import client_order_id as coid
from recon_pipeline.settings import ReconSettings

WINDOW_START = pd.Timestamp("2026-11-30T09:00:00Z")
WINDOW_END = WINDOW_START + pd.Timedelta(hours=1)
NOW = WINDOW_END + pd.Timedelta(minutes=5)          # live run: the snapshot 5 min after the hour
SPAN = pd.Timedelta(hours=6)                        # fills span: oldest OPEN entry - grace .. now
RUNNING_PROFILE = "p_alpha"
ACCOUNT = "acctA"
PREC = 0.001                                        # amount precision of every market
DRIFT = 0.01

# profile_id, account, market_type, sub_tag, allocated capital, share of trades
PROFILES = (
    ("p_alpha", "acctA", "swap", "alpha", 5.0e6, 0.45),
    ("p_beta", "acctA", "swap", "beta", 2.0e6, 0.20),
    ("p_g1", "acctA", "spot", "g1", 1.0e6, 0.15),
    ("p_g12", "acctA", "spot", "g12", 1.0e6, 0.10),
    ("p_gamma", "acctB", "swap", "gam", 1.0e6, 0.10),
)

#: Injected drift, each on about 1 % of the trades (or open orders), and what the rules must find.
DRIFT_KINDS = {
    "missing_exit": "exited on the exchange, DB OPEN exit_qty 0 -> BACKFILL_EXIT CLOSED + MISSING_EXIT",
    "partial_exit": "half exited on the exchange, DB OPEN 0 -> BACKFILL_EXIT OPEN (PARTIAL_EXIT)",
    "hint_exit": "exit order with a foreign client id, DB orders row names the trade -> trade_id_hint backfill",
    "subtag_exit": "exit order id '{tag}-m-N' (sub_tag, not deterministic) -> AMBIGUOUS or a unique pick",
    "untied_exit": "exit order with no/foreign client id -> NO_ATTRIBUTION",
    "untied_buy": "untied buy fills on spot in the window -> UNATTRIBUTED (ACCOUNT_LEVEL)",
    "stale_fill": "exit fill before entry_time - grace -> STALE_FILL",
    "over_fill": "exit fills above entry_qty -> OVER_FILL",
    "db_ahead": "DB exit_qty above the exchange's -> DB_AHEAD",
    "late_fill": "CLOSED parity_synthetic slice with real exit fills -> LATE_FILL",
    "unknown_trade": "deterministic exit id naming a trade the DB lacks -> UNKNOWN_TRADE",
    "unknown_symbol": "untied fills on a symbol not listed -> UNKNOWN_SYMBOL",
    "contra": "exit id of a slice on the wrong side -> AMBIGUOUS (slice level)",
    "spot_short": "OPEN short slice on spot -> NO_GO SPOT_SHORT",
    "manual_entry": "entry with no client id: parity QUARANTINE instead of SYNTHETIC_EXIT",
    "order_filled": "DB open, exchange closed -> ENTRY_FILL / EXIT_FILL",
    "order_canceled": "DB open, exchange canceled/expired/rejected -> CANCEL_ORDER",
    "order_not_found": "DB open, unknown on the exchange -> NO_GO ORDER_NOT_FOUND",
    "order_by_client_id": "DB open without exchange id, exchange closed -> fill matched on client id",
    "order_in_flight": "DB updated inside the settle interval -> skipped",
    "order_missing_in_db": "exchange open order unknown to the DB -> ORDER_MISSING_IN_DB",
    "ghost": "instrument flat on the exchange with OPEN slices -> GHOST_SLICE (+ streaks, actions)",
    "qty_mismatch": "exchange qty off by 7 units -> QTY_MISMATCH + NO_GO",
}


def settings() -> ReconSettings:
    """The defaults of the runbook (strong attribution required, heuristics off)."""
    return ReconSettings.from_env({})


@dataclass
class Dataset:
    n_fills: int
    seed: int
    profiles: pd.DataFrame
    markets: pd.DataFrame
    positions: pd.DataFrame
    slices: pd.DataFrame
    db_orders: pd.DataFrame
    exchange_orders: pd.DataFrame
    fills: pd.DataFrame
    streaks: pd.DataFrame
    meta: dict = field(default_factory=dict)

    FRAMES = ("profiles", "markets", "positions", "slices", "db_orders", "exchange_orders", "fills", "streaks")

    def partition(self, account: str = ACCOUNT) -> Dataset:
        """The frames one partition's snapshot holds: the running profile's account only."""
        def acct(df):
            return df.loc[df["account"] == account].reset_index(drop=True) if "account" in df.columns else df
        return Dataset(self.n_fills, self.seed, acct(self.profiles), acct(self.markets), acct(self.positions),
                       acct(self.slices), acct(self.db_orders), acct(self.exchange_orders), acct(self.fills),
                       self.streaks, dict(self.meta))

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in self.FRAMES}


def _ids(prefix: str, start: int, n: int, width: int = 9) -> np.ndarray:
    return np.array([f"{prefix}{i:0{width}d}" for i in range(start, start + n)], dtype=object)


def _coids(tags: np.ndarray, role: str, trade_ids: np.ndarray) -> np.ndarray:
    """encode(tag, role, trade_id) for every row: the raw-key case by concatenation, the rest by encode.

    The concatenation is checked against ``encode`` on a sample, so the two can never diverge."""
    raw = pd.Series(trade_ids, dtype=object).str.fullmatch(r"[A-Za-z0-9_]{1,20}").to_numpy(bool)
    out = np.empty(len(trade_ids), dtype=object)
    out[raw] = tags[raw] + f"-{role}-" + trade_ids[raw]
    out[~raw] = [coid.encode(t, role, k) for t, k in zip(tags[~raw], trade_ids[~raw], strict=True)]
    for i in np.flatnonzero(raw)[:50]:
        assert out[i] == coid.encode(tags[i], role, trade_ids[i])
    return out


def generate(n_fills: int, seed: int = 7) -> Dataset:
    rng = np.random.default_rng(seed)
    grace = pd.Timedelta(minutes=settings().backfill_grace_minutes)
    n_bases = max(10, n_fills // 10_000)
    n_trades = max(300, int(n_fills / 3.2 / 0.9))  # account A (90 % of trades) holds about n_fills fills

    # --- profiles and markets ----------------------------------------------------------------------
    prof = pd.DataFrame([p[:5] for p in PROFILES],
                        columns=["profile_id", "account", "market_type", "sub_tag", "allocated_capital_usd"])
    prof["exchange"] = "binance"
    prof["trading_paused"] = False
    profiles = S.conform(prof, S.PROFILES, name="profiles")
    p_acct = prof["account"].to_numpy(object)
    p_tag = prof["sub_tag"].to_numpy(object)
    p_id = prof["profile_id"].to_numpy(object)

    base_names = np.array([f"B{i}" for i in range(n_bases)], dtype=object)
    base_price = np.round(np.exp(rng.uniform(np.log(5.0), np.log(60_000.0), n_bases)), 2)
    mk_rows = []
    for account in ("acctA", "acctB"):
        for b, px in zip(base_names, base_price, strict=True):
            for mtype, sym in (("spot", f"{b}/USDT"), ("swap", f"{b}/USDT:USDT")):
                mk_rows.append({"account": account, "symbol": sym, "market_type": mtype, "base": b, "quote": "USDT",
                                "amount_precision": PREC, "price_precision": 0.01, "contract_size": 1.0,
                                "mark_price": px})
    mk_rows[-1]["mark_price"] = float("nan")  # one market without a mark: "not evaluated"
    markets = S.conform(pd.DataFrame(mk_rows), S.EXCHANGE_MARKETS, name="markets")

    # --- trades (slices) -----------------------------------------------------------------------------
    n = n_trades
    pidx = rng.choice(len(PROFILES), n, p=[p[5] for p in PROFILES])
    tag = p_tag[pidx]
    acct = p_acct[pidx]
    bidx = rng.integers(0, n_bases, n)
    spot = rng.random(n) < 0.4
    long_ = spot | (rng.random(n) < 0.5)
    units = rng.integers(2, 5000, n)
    entry_qty = np.round(units * PREC, 3)
    entry_price = np.round(base_price[bidx] * (1 + rng.normal(0, 0.01, n)), 4)
    start = NOW - SPAN
    entry_time = start + pd.to_timedelta(rng.uniform(0, (SPAN - pd.Timedelta(minutes=20)).total_seconds(), n), unit="s")
    entry_time = pd.DatetimeIndex(entry_time).floor("ms")
    trade_id = _ids("t", 0, n, 8)
    legacy = rng.random(n) < 0.01
    trade_id[legacy] = [f"legacy-{i:08d}-slice" for i in np.flatnonzero(legacy)]
    symbol = np.where(spot, base_names[bidx] + "/USDT", base_names[bidx] + "/USDT:USDT")
    state = np.where(rng.random(n) < 0.70, "closed", "open").astype(object)
    state[(state == "open") & (rng.random(n) < 0.33)] = "partial"

    # ghost instruments (swap, account A) are chosen first and kept free of exit drift, so their ghosts
    # are confirmed into SYNTHETIC_EXIT (or QUARANTINE for the manual entries among them)
    ghost_bases = rng.choice(n_bases, max(1, n_bases // 60), replace=False)
    on_ghost = ~spot & np.isin(bidx, ghost_bases) & (acct == "acctA")
    # drift labels, disjoint, about 1 % each
    label = np.full(n, "", dtype=object)
    trade_kinds = ("missing_exit", "partial_exit", "hint_exit", "subtag_exit", "untied_exit", "stale_fill",
                   "over_fill", "db_ahead", "late_fill", "contra", "spot_short", "manual_entry")
    k = max(3, int(n * DRIFT))
    perm = rng.permutation(np.flatnonzero(~on_ghost))
    for i, kind in enumerate(trade_kinds[:-1]):
        label[perm[i * k:(i + 1) * k]] = kind
    label[rng.choice(np.flatnonzero(label == ""), k, replace=False)] = "manual_entry"
    # spot shorts only on two bases, so untied spot buys elsewhere stay UNATTRIBUTED
    ss = label == "spot_short"
    bidx[ss] = rng.integers(0, 2, int(ss.sum()))
    state[np.isin(label, ["missing_exit", "hint_exit", "subtag_exit", "untied_exit", "late_fill"])] = "closed"
    state[label == "partial_exit"] = "partial"
    state[np.isin(label, ["stale_fill", "over_fill", "db_ahead", "contra", "spot_short", "manual_entry"])] = "open"
    spot[ss], long_[ss] = True, False
    symbol[ss] = base_names[bidx[ss]] + "/USDT"
    side = np.where(long_, "long", "short")

    entry_coid = _coids(tag, "e", trade_id)
    manual = label == "manual_entry"
    entry_coid_db = entry_coid.copy()
    entry_coid_db[manual] = None
    entry_order_coid = entry_coid.copy()
    entry_order_coid[manual] = np.array([f"web{i}" for i in np.flatnonzero(manual)], dtype=object)

    # --- fills: entry orders ---------------------------------------------------------------------
    fill_parts = []   # dicts of equal-length arrays
    order_parts = []
    next_order = 0

    def add_orders(m: int):
        nonlocal next_order
        ids = _ids("o", next_order, m)
        next_order += m
        return ids

    e_oid = add_orders(n)
    n_entry_fills = rng.integers(1, 4, n)
    rep = np.repeat(np.arange(n), n_entry_fills)
    share = rng.uniform(0.2, 1.0, len(rep))
    share_sum = np.bincount(rep, share, n)
    e_qty = entry_qty[rep] * share / share_sum[rep]
    fill_parts.append({
        "account": acct[rep], "exchange_order_id": e_oid[rep], "symbol": symbol[rep],
        "side": np.where(long_[rep], "buy", "sell"), "qty": e_qty, "price": entry_price[rep],
        "ts": entry_time[rep] + pd.to_timedelta(np.arange(len(rep)) % 3, unit="ms")})
    order_parts.append({
        "account": acct, "exchange_order_id": e_oid, "client_order_id": entry_order_coid, "symbol": symbol,
        "side": np.where(long_, "buy", "sell"), "qty": entry_qty, "price": entry_price, "filled_qty": entry_qty,
        "avg_fill_price": entry_price, "status": np.full(n, "closed", dtype=object),
        "created_ts": entry_time, "updated_ts": entry_time + pd.Timedelta(milliseconds=2)})

    # --- fills: exit orders ----------------------------------------------------------------------
    has_exit = (state != "open") | np.isin(label, ["stale_fill", "over_fill", "contra"])
    xi = np.flatnonzero(has_exit)
    m = len(xi)
    x_units = np.where(state[xi] == "partial", units[xi] // 2, units[xi])
    x_units = np.where(label[xi] == "over_fill", units[xi] + 10, x_units)
    x_units = np.where(label[xi] == "contra", units[xi] // 2, x_units)
    x_qty = np.round(x_units * PREC, 3)
    lo = (entry_time[xi] + pd.Timedelta(minutes=1)).asi8
    hi = (NOW - pd.Timedelta(minutes=2)).value
    x_time = pd.DatetimeIndex(lo + (rng.random(m) * (hi - lo)).astype("int64"), tz="UTC").floor("ms")
    stale = label[xi] == "stale_fill"
    x_time = x_time.where(~stale, (entry_time[xi] - grace - pd.Timedelta(minutes=5)))
    x_price = np.round(entry_price[xi] * (1 + rng.normal(0, 0.02, m)), 4)
    x_side = np.where(long_[xi], "sell", "buy")
    contra = label[xi] == "contra"
    x_side[contra] = np.where(long_[xi][contra], "buy", "sell")
    x_coid = _coids(tag[xi], "x", trade_id[xi])
    lx = label[xi]
    x_coid[lx == "hint_exit"] = [f"man{i}" for i in xi[lx == "hint_exit"]]
    x_coid[lx == "subtag_exit"] = [f"{t}-m-{i}" for t, i in zip(tag[xi][lx == "subtag_exit"], xi[lx == "subtag_exit"],
                                                                   strict=True)]
    ut = np.flatnonzero(lx == "untied_exit")
    x_coid[ut] = [None if j % 2 else f"web{i}" for j, i in enumerate(xi[ut])]
    x_oid = add_orders(m)
    n_xf = rng.integers(1, 3, m)
    rep = np.repeat(np.arange(m), n_xf)
    first = np.r_[True, rep[1:] != rep[:-1]]
    # two fills of 1 unit + rest, so every fill is a whole number of precision units
    two = n_xf[rep] == 2
    f_units = np.where(two & first, 1, np.where(two, x_units[rep] - 1, x_units[rep]))
    fill_parts.append({
        "account": acct[xi][rep], "exchange_order_id": x_oid[rep], "symbol": symbol[xi][rep], "side": x_side[rep],
        "qty": np.round(f_units * PREC, 3), "price": x_price[rep],
        "ts": x_time[rep] + pd.to_timedelta(np.where(first, 0, 1), unit="ms")})
    x_last = x_time + pd.Timedelta(milliseconds=1)
    order_parts.append({
        "account": acct[xi], "exchange_order_id": x_oid, "client_order_id": x_coid, "symbol": symbol[xi],
        "side": x_side, "qty": x_qty, "price": x_price, "filled_qty": x_qty, "avg_fill_price": x_price,
        "status": np.full(m, "closed", dtype=object), "created_ts": x_time, "updated_ts": x_last})

    # --- DB state of the slices --------------------------------------------------------------------
    true_exit = np.zeros(n)
    true_exit[xi] = x_qty
    true_exit[np.isin(label, ["stale_fill", "over_fill", "contra"])] = 0.0
    exit_price = np.full(n, np.nan)
    exit_price[xi] = x_price
    exit_time = pd.Series(pd.NaT, index=range(n), dtype=S.TS)
    exit_time.iloc[xi] = x_last
    db_status = np.where(state == "closed", "CLOSED", "OPEN").astype(object)
    db_exit = true_exit.copy()
    db_source = np.where(true_exit > 0, "exchange", None).astype(object)
    reset = np.isin(label, ["missing_exit", "partial_exit", "hint_exit", "subtag_exit", "untied_exit"])
    db_status[reset], db_exit[reset], db_source[reset] = "OPEN", 0.0, None
    ahead = label == "db_ahead"
    db_exit[ahead] = np.round((units[ahead] // 2) * PREC, 3)
    db_source[ahead] = "exchange"
    exit_price[ahead] = entry_price[ahead]
    exit_time[ahead] = entry_time[ahead] + pd.Timedelta(minutes=3)
    late = label == "late_fill"
    db_source[late] = "parity_synthetic"
    no_exit = db_exit == 0
    exit_price[no_exit] = np.nan
    exit_time[no_exit] = pd.NaT
    slices = pd.DataFrame({
        "trade_id": trade_id, "profile_id": p_id[pidx], "account": acct, "symbol": symbol, "side": side,
        "status": db_status, "entry_qty": entry_qty, "entry_price": entry_price, "entry_time": entry_time,
        "entry_client_order_id": entry_coid_db, "exit_qty": db_exit, "exit_price": exit_price,
        "exit_time": exit_time.to_numpy(), "exit_source": db_source,
        "updated_at": exit_time.fillna(pd.Series(entry_time)).to_numpy()})
    slices = S.conform(slices, S.TRADE_HISTORY, name="slices")

    # --- extra account activity: unknown trades, unknown symbols, untied spot buys ------------------
    in_win = WINDOW_START.value + (rng.random(k) * (WINDOW_END - WINDOW_START).value).astype("int64")
    in_win = pd.DatetimeIndex(in_win, tz="UTC").floor("ms")
    extra_acct = np.where(rng.random(k) < 0.9, "acctA", "acctB").astype(object)

    def extra(kind: str, coids, syms, sides, count: int):
        oid = add_orders(count)
        qty = np.round(rng.integers(1, 2000, count) * PREC, 3)
        px = base_price[rng.integers(0, n_bases, count)]
        fill_parts.append({"account": extra_acct[:count], "exchange_order_id": oid, "symbol": syms, "side": sides,
                           "qty": qty, "price": px, "ts": in_win[:count]})
        order_parts.append({"account": extra_acct[:count], "exchange_order_id": oid, "client_order_id": coids,
                            "symbol": syms, "side": sides, "qty": qty, "price": px, "filled_qty": qty,
                            "avg_fill_price": px, "status": np.full(count, "closed", dtype=object),
                            "created_ts": in_win[:count], "updated_ts": in_win[:count]})

    ptag = np.array([p_tag[0 if a == "acctA" else 4] for a in extra_acct], dtype=object)
    ptag[1::3] = "beta"
    ptag[(extra_acct == "acctB")] = "gam"
    eb = base_names[rng.choice(np.setdiff1d(np.arange(n_bases), ghost_bases), k)]
    extra("unknown_trade", _coids(ptag, "x", _ids("gone", 0, k, 6)), eb + "/USDT:USDT",
          np.where(rng.random(k) < 0.5, "sell", "buy"), k)
    ku = max(2, k // 5)
    extra("unknown_symbol", np.full(ku, None, dtype=object), np.array([f"ZZ{i % 3}/USDT" for i in range(ku)],
                                                                      dtype=object), np.full(ku, "sell", dtype=object), ku)
    extra("untied_buy", np.full(k, None, dtype=object), eb + "/USDT", np.full(k, "buy", dtype=object), k)

    # --- open orders (both sides), with drift ---------------------------------------------------------
    n_open = max(100, n_fills // 20)
    opi = rng.choice(len(PROFILES), n_open, p=[p[5] for p in PROFILES])
    o_acct, o_tag = p_acct[opi], p_tag[opi]
    o_role = np.where(rng.random(n_open) < 0.8, "ENTRY", "EXIT").astype(object)
    o_pending = _ids("n", 0, n_open, 8)
    o_coid = np.where(o_role == "ENTRY", _coids(o_tag, "e", o_pending), _coids(o_tag, "x", o_pending))
    o_bidx = rng.integers(0, n_bases, n_open)
    o_sym = base_names[o_bidx] + "/USDT:USDT"
    o_side = np.where(rng.random(n_open) < 0.5, "buy", "sell").astype(object)
    o_qty = np.round(rng.integers(1, 3000, n_open) * PREC, 3)
    o_px = np.round(base_price[o_bidx] * 0.99, 4)
    o_status = rng.choice(["NEW", "OPEN", "PARTIALLY_FILLED"], n_open).astype(object)
    o_filled = np.where(o_status == "PARTIALLY_FILLED", np.round(np.floor(o_qty / PREC / 2) * PREC, 3), 0.0)
    o_created = pd.DatetimeIndex(NOW.value - (rng.uniform(300, 5 * 3600, n_open) * 1e9).astype("int64"),
                                 tz="UTC").floor("ms")
    o_updated = o_created.copy()
    o_eoid = _ids("q", 0, n_open)
    ko = max(2, int(n_open * DRIFT))
    operm = rng.permutation(n_open)
    olabel = np.full(n_open, "", dtype=object)
    for i, kind in enumerate(("order_filled", "order_canceled", "order_not_found", "order_by_client_id",
                              "order_in_flight")):
        olabel[operm[i * ko:(i + 1) * ko]] = kind
    ex_status = np.full(n_open, "open", dtype=object)
    ex_status[np.isin(olabel, ["order_filled", "order_by_client_id", "order_in_flight"])] = "closed"
    canc = olabel == "order_canceled"
    ex_status[canc] = rng.choice(["canceled", "expired", "rejected"], int(canc.sum()))
    ex_filled = np.where(ex_status == "closed", o_qty, o_filled)
    ex_updated = o_updated.where(ex_status == "open", NOW - pd.Timedelta(minutes=10))
    o_updated = o_updated.where(olabel != "order_in_flight", NOW - pd.Timedelta(seconds=10))
    db_eoid = o_eoid.copy()
    db_eoid[olabel == "order_by_client_id"] = None
    o_db_id = _ids("d", 0, n_open)
    db_open = pd.DataFrame({
        "order_id": o_db_id, "profile_id": p_id[opi], "account": o_acct, "trade_id": None, "symbol": o_sym,
        "side": o_side, "role": o_role, "order_type": "limit", "qty": o_qty, "price": o_px, "filled_qty": o_filled,
        "avg_fill_price": np.where(o_filled > 0, o_px, np.nan), "status": o_status, "exchange_order_id": db_eoid,
        "client_order_id": o_coid, "created_at": o_created, "updated_at": o_updated})
    keep = olabel != "order_not_found"
    ex_open = {
        "account": o_acct[keep], "exchange_order_id": o_eoid[keep], "client_order_id": o_coid[keep],
        "symbol": o_sym[keep], "side": o_side[keep], "qty": o_qty[keep], "price": o_px[keep],
        "filled_qty": ex_filled[keep], "avg_fill_price": np.where(ex_filled[keep] > 0, o_px[keep], np.nan),
        "status": ex_status[keep], "created_ts": o_created[keep], "updated_ts": ex_updated[keep]}
    order_parts.append(ex_open)
    # open on the exchange, unknown to the DB: own deterministic ids, other profiles' and untied ones
    mi = rng.choice(n_open, ko, replace=False)
    mi_coid = _coids(o_tag[mi], "e", _ids("u", 0, ko, 8))
    mi_coid[1::3] = [f"web{j}" for j in range(len(mi_coid[1::3]))]
    order_parts.append({
        "account": o_acct[mi], "exchange_order_id": _ids("m", 0, ko), "client_order_id": mi_coid, "symbol": o_sym[mi],
        "side": o_side[mi], "qty": o_qty[mi], "price": o_px[mi], "filled_qty": np.zeros(ko),
        "avg_fill_price": np.full(ko, np.nan), "status": np.full(ko, "open", dtype=object),
        "created_ts": o_created[mi], "updated_ts": o_created[mi]})

    def cat(parts):
        return pd.DataFrame({c: np.concatenate([np.asarray(p[c]) if not isinstance(p[c], pd.DatetimeIndex)
                                                 else p[c].to_numpy() for p in parts]) for c in parts[0]})

    fills = cat(fill_parts)
    fills["ts"] = pd.to_datetime(fills["ts"], utc=True)
    fills = fills.sort_values(["ts", "exchange_order_id"], kind="stable").reset_index(drop=True)
    fills["fill_id"] = _ids("f", 0, len(fills), 10)
    fills["fee_cost"] = np.round(fills["qty"] * fills["price"] * 0.0004, 8)
    fills["fee_currency"] = "USDT"
    nofee = rng.random(len(fills)) < 0.01
    fills.loc[nofee, "fee_cost"] = np.nan
    fills.loc[nofee, "fee_currency"] = None
    fills = S.conform(fills, S.EXCHANGE_FILLS, name="fills")
    ex = cat(order_parts)
    ex["order_type"] = "limit"
    exchange_orders = S.conform(ex, S.EXCHANGE_ORDERS, name="exchange_orders")

    # --- DB orders: open ones, the window's filled ones, the hint rows ----------------------------
    eo = exchange_orders
    slice_orders = eo.loc[eo["exchange_order_id"].str.startswith("o")]
    coid_trade = dict(zip(entry_order_coid, trade_id, strict=True)) | dict(zip(x_coid, trade_id[xi], strict=True))
    hint_oids = set(x_oid[lx == "hint_exit"])
    in_window = (slice_orders["updated_ts"] >= WINDOW_START) & (slice_orders["updated_ts"] < WINDOW_END)
    hint = slice_orders["exchange_order_id"].isin(hint_oids)
    deterministic = slice_orders["client_order_id"].str.contains(r"-[ex]-", regex=True).fillna(False)
    w = slice_orders.loc[(in_window & deterministic) | hint].reset_index(drop=True)
    w_trade = w["client_order_id"].map(coid_trade)
    w_owner = pd.Series(dict(zip(trade_id, p_id[pidx], strict=True)))
    w_prof = w_trade.map(w_owner)
    ok = w_prof.notna()
    w, w_trade, w_prof = w.loc[ok], w_trade.loc[ok], w_prof.loc[ok]
    w_role = np.where(w["client_order_id"].str.contains("-e-", regex=False).fillna(False), "ENTRY", "EXIT")
    db_window = pd.DataFrame({
        "order_id": _ids("w", 0, len(w)), "profile_id": w_prof.to_numpy(), "account": w["account"].to_numpy(),
        "trade_id": w_trade.to_numpy(), "symbol": w["symbol"].to_numpy(), "side": w["side"].to_numpy(),
        "role": w_role, "order_type": "limit", "qty": w["qty"].to_numpy(), "price": w["price"].to_numpy(),
        "filled_qty": w["filled_qty"].to_numpy(), "avg_fill_price": w["avg_fill_price"].to_numpy(),
        "status": "FILLED", "exchange_order_id": w["exchange_order_id"].to_numpy(),
        "client_order_id": w["client_order_id"].to_numpy(), "created_at": w["created_ts"].to_numpy(),
        "updated_at": w["updated_ts"].to_numpy()})
    db_orders = S.conform(pd.concat([db_open, db_window], ignore_index=True), S.DB_ORDERS, name="db_orders")

    # --- exchange positions: the DB as the running profile's backfill leaves it ---------------------
    after_status = slices["status"].to_numpy(object).copy()
    after_exit = slices["exit_qty"].to_numpy(float).copy()
    mine = p_id[pidx] == RUNNING_PROFILE
    my_open = mine & (after_status == "OPEN")
    per_key = pd.Series(1, index=pd.MultiIndex.from_arrays([symbol[my_open], side[my_open]])).groupby(level=[0, 1]).sum()
    sub_unique = np.array([per_key.get((s, d), 0) == 1 for s, d in zip(symbol, side, strict=True)])
    fixed = mine & (np.isin(label, ["missing_exit", "partial_exit", "hint_exit"])
                    | ((label == "subtag_exit") & sub_unique))
    after_exit[fixed] = true_exit[fixed]
    after_status[fixed & (state == "closed")] = "CLOSED"
    remaining = entry_qty - after_exit
    remaining = np.where(np.abs(remaining) < PREC * (1 - 1e-9), 0.0, remaining)
    counted = (after_status == "OPEN") & ~(label == "spot_short")
    instrument = np.where(spot, base_names[bidx], symbol)
    signed = np.where(long_, 1.0, -1.0) * remaining
    pos = (pd.DataFrame({"account": acct[counted], "market_type": np.where(spot, "spot", "swap")[counted],
                         "instrument": instrument[counted], "qty": signed[counted]})
           .groupby(["account", "market_type", "instrument"], as_index=False)["qty"].sum())
    pos["qty"] = np.round(pos["qty"], 6)
    # ghosts: instruments of account A flat on the exchange; mismatches: off by 7 units
    ghosts = {f"{base_names[b]}/USDT:USDT" for b in ghost_bases}
    open_a = pd.Series(instrument[counted & (acct == "acctA")]).value_counts()
    rest = [i for i in open_a.index[rng.permutation(len(open_a))] if i not in ghosts]
    mism = set(rest[:max(1, len(rest) // 100)])
    pos.loc[(pos["account"] == "acctA") & pos["instrument"].isin(mism), "qty"] += 7.0
    pos = pos.loc[~((pos["account"] == "acctA") & pos["instrument"].isin(ghosts))]
    pos = pos.loc[(pos["market_type"] == "spot") | (pos["qty"].abs() > 1e-9)]  # fetch_positions omits flat
    pos["position_side"] = "both"
    pos["entry_price"] = np.nan
    usdt = pd.DataFrame({"account": ["acctA", "acctB"], "market_type": "spot", "instrument": "USDT",
                         "qty": 1.0e6, "position_side": "both", "entry_price": np.nan})
    positions = S.conform(pd.concat([pos, usdt], ignore_index=True), S.EXCHANGE_POSITIONS, name="positions")

    # --- parity streaks: half of the running profile's ghost slices seen twice before --------------
    gs = np.flatnonzero(mine & (after_status == "OPEN") & np.isin(instrument, list(ghosts)) & (acct == "acctA"))
    gs = gs[rng.random(len(gs)) < 0.5]
    resets = np.flatnonzero(my_open & ~np.isin(instrument, list(ghosts)))
    resets = rng.choice(resets, min(len(resets), max(1, len(gs))), replace=False) if len(resets) else resets
    st = pd.DataFrame({
        "trade_id": np.concatenate([trade_id[gs], trade_id[resets]]), "profile_id": RUNNING_PROFILE,
        "streak": np.r_[np.full(len(gs), 2), np.full(len(resets), 1)].astype("int64"),
        "first_seen_window": WINDOW_START - pd.Timedelta(hours=3),
        "last_window_start": WINDOW_START - pd.Timedelta(hours=1)})
    streaks = S.conform(st, S.PARITY_STREAKS, name="streaks") if len(st) else S.empty(S.PARITY_STREAKS)

    meta = {"n_fills": n_fills, "seed": seed, "n_bases": n_bases, "ghost_instruments": sorted(ghosts),
            "mismatch_instruments": sorted(mism),
            "labels": {kind: int((label == kind).sum()) for kind in trade_kinds}
            | {kind: int((olabel == kind).sum()) for kind in set(olabel) - {""}}}
    return Dataset(n_fills, seed, profiles, markets, positions, slices, db_orders, exchange_orders, fills,
                   streaks, meta)


CACHE = Path(__file__).resolve().parents[1] / ".recon" / "bench_cache"


def load_cached(n_fills: int, seed: int = 7, cache: Path = CACHE) -> Dataset:
    """:func:`generate` once per (size, seed), then the parquet copy (dtypes re-conformed on load)."""
    d = cache / f"n{n_fills}_s{seed}"
    schemas = {"profiles": S.PROFILES, "markets": S.EXCHANGE_MARKETS, "positions": S.EXCHANGE_POSITIONS,
               "slices": S.TRADE_HISTORY, "db_orders": S.DB_ORDERS, "exchange_orders": S.EXCHANGE_ORDERS,
               "fills": S.EXCHANGE_FILLS, "streaks": S.PARITY_STREAKS}
    if (d / "meta.json").exists():
        frames = {name: S.conform(pd.read_parquet(d / f"{name}.parquet"), schemas[name], name=name)
                  for name in Dataset.FRAMES}
        meta = json.loads((d / "meta.json").read_text())
        return Dataset(n_fills, seed, meta=meta, **frames)
    ds = generate(n_fills, seed)
    d.mkdir(parents=True, exist_ok=True)
    for name in Dataset.FRAMES:
        getattr(ds, name).to_parquet(d / f"{name}.parquet", index=False)
    (d / "meta.json").write_text(json.dumps(ds.meta, sort_keys=True))
    return ds
