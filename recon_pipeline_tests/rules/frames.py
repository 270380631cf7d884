"""Tiny typed frames from short dict literals, one builder per schema of ``recon_pipeline.schemas``.

Every builder takes rows as dicts naming only the columns a test cares about; the rest get the
defaults below, ids are numbered when omitted, times may be ISO strings, ``T0 + minutes``
(:func:`at`) or Timestamps, and the result is cast with ``schemas.conform`` (so dtypes are exactly
what the snapshots produce)::

    fills([{"qty": 0.5, "side": "sell", "exchange_order_id": "o1"}])
    slices([{"trade_id": "t1", "profile_id": "p1"}, {"trade_id": "t2", "profile_id": "p2"}])

Defaults describe one spot account ``acct`` with two profiles (p1/g1, p2/g2) trading ``BTC/USDT``
around ``T0 = 2026-11-30T09:00Z``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from recon_pipeline import schemas as S

T0 = pd.Timestamp("2026-11-30T09:00:00Z")
ACCOUNT = "acct"
SYMBOL = "BTC/USDT"


def at(minutes: float = 0.0, seconds: float = 0.0) -> pd.Timestamp:
    """``T0`` plus an offset: ``at(30)`` is 09:30Z."""
    return T0 + pd.Timedelta(minutes=minutes, seconds=seconds)


def build(schema: S.Schema, rows: Iterable[Mapping[str, Any]] | None, defaults: Mapping[str, Any],
          id_col: str | None = None, id_prefix: str = "") -> pd.DataFrame:
    """Generic builder: ``defaults`` under each row, auto-numbered ``id_col``, cast to ``schema``.

    A default may be a callable taking the row dict (as filled so far) and its position.
    Unknown keys raise, so a typo in a test is not silently ignored.
    """
    rows = list(rows or [])
    if not rows:
        return S.empty(schema)
    out = []
    for i, row in enumerate(rows):
        unknown = set(row) - set(schema)
        if unknown:
            raise KeyError(f"unknown columns {sorted(unknown)}; schema has {list(schema)}")
        full: dict[str, Any] = dict(row)
        if id_col and id_col not in full:
            full[id_col] = f"{id_prefix}{i + 1}"
        for col in schema:
            if col not in full:
                value = defaults.get(col)
                full[col] = value(full, i) if callable(value) else value
        out.append(full)
    df = pd.DataFrame(out, columns=list(schema))
    for col, dtype in schema.items():
        if dtype == S.F64:
            df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
        elif dtype == S.TS:
            df[col] = pd.to_datetime(df[col], utc=True)
    return S.conform(df, schema)


def fills(rows=None) -> pd.DataFrame:
    return build(S.EXCHANGE_FILLS, rows, {
        "account": ACCOUNT, "exchange_order_id": "o1", "symbol": SYMBOL, "side": "sell",
        "qty": 1.0, "price": 100.0, "fee_cost": None, "fee_currency": None, "ts": at(30),
    }, "fill_id", "f")


def exchange_orders(rows=None) -> pd.DataFrame:
    return build(S.EXCHANGE_ORDERS, rows, {
        "account": ACCOUNT, "client_order_id": None, "symbol": SYMBOL, "side": "sell",
        "order_type": "limit", "qty": 1.0, "price": 100.0,
        "filled_qty": lambda r, i: r["qty"] if r.get("status", "closed") == "closed" else 0.0,
        "avg_fill_price": lambda r, i: r["price"] if r.get("status", "closed") == "closed" else None,
        "status": "closed", "created_ts": at(29), "updated_ts": at(30),
    }, "exchange_order_id", "o")


def markets(rows=None) -> pd.DataFrame:
    return build(S.EXCHANGE_MARKETS, rows, {
        "account": ACCOUNT, "market_type": "spot",
        "base": lambda r, i: r["symbol"].split("/")[0], "quote": "USDT",
        "amount_precision": 0.00001, "price_precision": 0.01, "contract_size": 1.0, "mark_price": 100.0,
    }, "symbol", "SYM")


def default_markets() -> pd.DataFrame:
    return markets([{"symbol": SYMBOL}, {"symbol": "ETH/USDT"}])


def exchange_positions(rows=None) -> pd.DataFrame:
    return build(S.EXCHANGE_POSITIONS, rows, {
        "account": ACCOUNT, "market_type": "spot", "instrument": "BTC", "position_side": "both",
        "qty": 0.0, "entry_price": None,
    })


def profiles(rows=None) -> pd.DataFrame:
    return build(S.PROFILES, rows, {
        "exchange": "binance", "account": ACCOUNT, "market_type": "spot",
        "sub_tag": lambda r, i: f"g{r['profile_id'].lstrip('p')}", "allocated_capital_usd": 10_000.0,
        "trading_paused": False,
    }, "profile_id", "p")


def default_profiles() -> pd.DataFrame:
    """p1 (sub_tag g1) and p2 (g2) sharing account ``acct``."""
    return profiles([{"profile_id": "p1"}, {"profile_id": "p2"}])


def slices(rows=None) -> pd.DataFrame:
    return build(S.TRADE_HISTORY, rows, {
        "profile_id": "p1", "account": ACCOUNT, "symbol": SYMBOL, "side": "long", "status": "OPEN",
        "entry_qty": 1.0, "entry_price": 90.0, "entry_time": at(0), "entry_client_order_id": None,
        "exit_qty": 0.0, "exit_price": None, "exit_time": None, "exit_source": None, "updated_at": at(0),
    }, "trade_id", "t")


def db_orders(rows=None) -> pd.DataFrame:
    return build(S.DB_ORDERS, rows, {
        "profile_id": "p1", "account": ACCOUNT, "trade_id": None, "symbol": SYMBOL, "side": "sell",
        "role": "EXIT", "order_type": "limit", "qty": 1.0, "price": 100.0, "filled_qty": 0.0,
        "avg_fill_price": None, "status": "OPEN", "exchange_order_id": None,
        "client_order_id": lambda r, i: f"manual-{i + 1}", "created_at": at(0), "updated_at": at(0),
    }, "order_id", "d")


def db_positions(rows=None) -> pd.DataFrame:
    return build(S.DB_POSITIONS, rows, {
        "profile_id": "p1", "symbol": SYMBOL, "qty": 0.0, "avg_entry_price": None, "updated_at": at(0),
    })


def trading_pauses(rows=None) -> pd.DataFrame:
    return build(S.TRADING_PAUSES, rows, {
        "profile_id": "p1", "source": "parity_watchdog", "reason": "test", "paused_at": at(0),
        "resumed_at": None, "resumed_by": None,
    }, "pause_id", "pause")


def capital_ledger(rows=None) -> pd.DataFrame:
    return build(S.CAPITAL_LEDGER, rows, {"profile_id": "p1", "reserved_usd": 0.0, "updated_at": at(0)})


def parity_streaks(rows=None) -> pd.DataFrame:
    return build(S.PARITY_STREAKS, rows, {
        "profile_id": "p1", "streak": 1, "first_seen_window": at(0), "last_window_start": at(0),
    }, "trade_id", "t")


def run_history(rows=None) -> pd.DataFrame:
    return build(S.RUN_HISTORY, rows, {
        "window_start": at(0), "profile_id": "p1", "parity_evaluated": True, "clean": True,
        "evaluated_at": lambda r, i: pd.Timestamp(r["window_start"]) + pd.Timedelta(minutes=65),
    })
