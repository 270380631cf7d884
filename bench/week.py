"""A week of one busy profile, for the backfill-throughput benchmark (``bench.backfill``).

168 hourly windows of profile ``p_week`` (sub_tag ``wk``, account ``week``, USD-M swap on ten
symbols), about ``fills_per_window`` exchange fills each: every slice has one entry order of two
fills and one exit order of two fills, a few minutes apart, so a slice usually lives inside its
window (some exits fall into the next one). Ids follow time, as Binance's do.

The DB is the trading system's view at the end of the week: CLOSED slices with their exits and
FILLED orders, except about ``drift`` of the slices whose exit the trading system missed (slice
OPEN with ``exit_qty`` 0, exit order OPEN): the backfill of the window the exit happened in finds
them (BACKFILL_EXIT + EXIT_FILL). ``positions`` says what the trading system believes is open (the
missed exits). The exchange is flat at the end of the week.

:func:`write` produces ``scenario.json`` (DESIGN section 9, what ``recon-pipeline emulator``
serves) and one CSV per trading table (loaded into Postgres by COPY).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from recon_pipeline.rules import client_order_id as coid

WEEK_START = pd.Timestamp("2026-11-23T00:00:00Z")
WINDOWS = 168
CLOCK = WEEK_START + pd.Timedelta(hours=WINDOWS, minutes=5)   # the live run of the last window
PROFILE, ACCOUNT, SUB_TAG = "p_week", "week", "wk"
API_KEY, SECRET = "bench-week-key", "bench-week-secret-0123456789abcdef"
SYMBOLS = tuple(f"W{i}/USDT:USDT" for i in range(10))
PREC = 0.001


def _ms(ts: np.ndarray) -> np.ndarray:
    return ts.astype("datetime64[ms]").astype("int64")


def generate(fills_per_window: int = 10_000, windows: int = WINDOWS, drift: float = 0.01, seed: int = 11):
    """(scenario dict, {table: DataFrame}) of the week; a pure function of its arguments."""
    rng = np.random.default_rng(seed)
    per = max(fills_per_window // 4, 1)
    n = per * windows
    hour = np.repeat(np.arange(windows), per)
    trade_id = np.array([f"wk{h:03d}{i:05d}" for h in range(windows) for i in range(per)], dtype=object)
    sym_i = rng.integers(0, len(SYMBOLS), n)
    symbol = np.array(SYMBOLS, dtype=object)[sym_i]
    long = rng.random(n) < 0.5
    qty = np.round(rng.uniform(0.01, 2.0, n), 3)
    base_px = 100.0 * (1 + sym_i)
    entry_px = np.round(base_px * rng.uniform(0.98, 1.02, n), 2)
    exit_px = np.round(entry_px * rng.uniform(0.99, 1.01, n), 2)
    start = WEEK_START.to_datetime64().astype("datetime64[ms]")
    entry_t = start + (hour * 3_600_000 + rng.integers(0, 50 * 60_000, n)).astype("timedelta64[ms]")
    exit_t = entry_t + rng.integers(60_000, 9 * 60_000, n).astype("timedelta64[ms]")
    missed = rng.random(n) < drift

    # orders: entry then exit of each slice; ids by creation time
    o_ts = np.concatenate([_ms(entry_t), _ms(exit_t)])
    o_role = np.repeat(np.array(["e", "x"]), n)
    o_slice = np.concatenate([np.arange(n), np.arange(n)])
    order_rank = np.empty(2 * n, dtype=np.int64)
    order_rank[np.lexsort((o_slice, o_ts))] = np.arange(2 * n)
    order_id = 1_000_000 + order_rank
    o_side_buy = np.where(o_role == "e", long[o_slice], ~long[o_slice])
    o_px = np.where(o_role == "e", entry_px[o_slice], exit_px[o_slice])
    coids = np.array([coid.encode(SUB_TAG, r, t) for r, t in zip(o_role, trade_id[o_slice], strict=True)],
                     dtype=object)

    # fills: two per order (60 % / 40 %), 100 ms apart; ids by time
    f_order = np.repeat(np.arange(2 * n), 2)
    f_part = np.tile(np.array([0.6, 0.4]), 2 * n)
    f_qty = np.round(qty[o_slice][f_order] * f_part, 3)
    second = np.arange(4 * n) % 2 == 1
    f_qty[second] = np.round(qty[o_slice][f_order][second] - f_qty[~second], 3)
    f_ts = o_ts[f_order] + np.where(second, 100, 0)
    fill_rank = np.empty(4 * n, dtype=np.int64)
    fill_rank[np.lexsort((f_order, f_ts))] = np.arange(4 * n)
    fill_id = 50_000_000 + fill_rank
    f_px = o_px[f_order]
    fee = np.round(f_qty * f_px * 0.0004, 6)

    trades = [{"id": int(i), "order": int(order_id[o]), "symbol": symbol[o_slice[o]],
               "side": "buy" if o_side_buy[o] else "sell", "amount": float(q), "price": float(p),
               "fee": {"cost": float(c), "currency": "USDT"}, "timestamp": int(t)}
              for i, o, q, p, c, t in zip(fill_id.tolist(), f_order.tolist(), f_qty.tolist(), f_px.tolist(),
                                          fee.tolist(), f_ts.tolist(), strict=True)]
    last_fill = o_ts + 100
    orders = [{"id": int(order_id[o]), "clientOrderId": coids[o], "symbol": symbol[o_slice[o]],
               "side": "buy" if o_side_buy[o] else "sell", "type": "limit", "amount": float(qty[o_slice[o]]),
               "price": float(o_px[o]), "filled": float(qty[o_slice[o]]), "status": "closed",
               "timestamp": int(o_ts[o]), "lastUpdateTimestamp": int(last_fill[o])} for o in range(2 * n)]
    scenario = {
        "clock": CLOCK.isoformat().replace("+00:00", "Z"),
        "accounts": {ACCOUNT: {
            "apiKey": API_KEY, "secret": SECRET,
            "markets": [{"symbol": s, "type": "swap", "contractSize": 1, "precision": {"amount": PREC, "price": 0.01}}
                        for s in SYMBOLS],
            "orders": orders, "trades": trades, "positions": [], "balances": {},
            "markPrices": {s: 100.0 * (1 + i) for i, s in enumerate(SYMBOLS)},
        }},
    }

    ts = pd.to_datetime(entry_t, utc=True)
    xts = pd.to_datetime(exit_t, utc=True)
    trade_history = pd.DataFrame({
        "trade_id": trade_id, "profile_id": PROFILE, "symbol": symbol, "side": np.where(long, "long", "short"),
        "status": np.where(missed, "OPEN", "CLOSED"), "entry_qty": qty, "entry_price": entry_px, "entry_time": ts,
        "entry_client_order_id": coids[:n],
        "exit_qty": np.where(missed, 0.0, qty), "exit_price": np.where(missed, np.nan, exit_px),
        "exit_time": pd.Series(xts).where(~missed), "exit_source": np.where(missed, None, "exchange"),
        "updated_at": pd.Series(xts).where(~missed, pd.Series(ts)),
    })
    o_created = pd.to_datetime(o_ts.astype("datetime64[ms]"), utc=True)
    o_missed = missed[o_slice] & (o_role == "x")
    db_orders = pd.DataFrame({
        "order_id": [f"db-{i}" for i in order_id.tolist()], "profile_id": PROFILE, "trade_id": trade_id[o_slice],
        "symbol": symbol[o_slice], "side": np.where(o_side_buy, "buy", "sell"),
        "role": np.where(o_role == "e", "ENTRY", "EXIT"), "order_type": "limit", "qty": qty[o_slice],
        "price": o_px, "filled_qty": np.where(o_missed, 0.0, qty[o_slice]),
        "avg_fill_price": np.where(o_missed, np.nan, o_px), "status": np.where(o_missed, "OPEN", "FILLED"),
        "exchange_order_id": order_id.astype(str), "client_order_id": coids,
        "created_at": o_created, "updated_at": pd.to_datetime(last_fill.astype("datetime64[ms]"), utc=True)
        .where(~o_missed, o_created),
    })
    signed = np.where(long, qty, -qty)
    open_net = (pd.DataFrame({"symbol": symbol[missed], "qty": signed[missed]}).groupby("symbol")["qty"].sum()
                .round(6))
    positions = pd.DataFrame({"profile_id": PROFILE, "symbol": open_net.index, "qty": open_net.to_numpy(),
                              "avg_entry_price": np.nan, "updated_at": CLOCK - pd.Timedelta(minutes=5)})
    reserved = float((qty[missed] * entry_px[missed]).sum())
    tables = {
        "profiles": pd.DataFrame([{"profile_id": PROFILE, "exchange": "binance", "account": ACCOUNT,
                                   "market_type": "swap", "sub_tag": SUB_TAG, "allocated_capital_usd": 1.0e8,
                                   "trading_paused": False}]),
        "trade_history": trade_history, "orders": db_orders, "positions": positions,
        "capital_ledger": pd.DataFrame([{"profile_id": PROFILE, "reserved_usd": round(reserved, 6),
                                         "updated_at": CLOCK - pd.Timedelta(minutes=5)}]),
    }
    return scenario, tables


def write(out: Path, **kwargs) -> dict[str, int]:
    """Write ``scenario.json`` and ``<table>.csv`` under ``out``; returns row counts."""
    out.mkdir(parents=True, exist_ok=True)
    scenario, tables = generate(**kwargs)
    with open(out / "scenario.json", "w") as fh:
        json.dump(scenario, fh, separators=(",", ":"))
    counts = {"exchange_trades": len(scenario["accounts"][ACCOUNT]["trades"]),
              "exchange_orders": len(scenario["accounts"][ACCOUNT]["orders"])}
    for name, frame in tables.items():
        frame.to_csv(out / f"{name}.csv", index=False)
        counts[name] = len(frame)
    return counts
