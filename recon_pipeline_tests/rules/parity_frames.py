"""Tiny typed-frame builders for the parity, watchdog and ledger rule tests.

Each ``*_row`` returns a dict with sensible defaults; ``frame(SCHEMA, rows)`` casts a list of them
to the schema (an empty list gives the empty typed frame).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from recon_pipeline.schemas import (
    CAPITAL_LEDGER,
    DB_ORDERS,
    DB_POSITIONS,
    EXCHANGE_MARKETS,
    EXCHANGE_POSITIONS,
    PARITY_STREAKS,
    PROFILES,
    RUN_HISTORY,
    TRADE_HISTORY,
    TRADING_PAUSES,
    Schema,
    conform,
    empty,
)

ACC = "acc1"
T0 = pd.Timestamp("2026-11-30T00:00:00Z")
HOUR = pd.Timedelta(hours=1)
NAN = math.nan


def w(i: int) -> pd.Timestamp:
    """Window ``i`` hours after T0."""
    return T0 + i * HOUR


def frame(schema: Schema, rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return empty(schema)
    return conform(pd.DataFrame(rows), schema)


def slice_row(trade_id: str, *, profile_id: str = "p1", symbol: str = "BTC/USDT:USDT", side: str = "long",
              qty: float = 1.0, exit_qty: float = 0.0, status: str = "OPEN", coid: str | None = "t1-e-x",
              account: str = ACC, entry_price: float = 100.0, exit_price: float = NAN) -> dict[str, Any]:
    return {
        "trade_id": trade_id, "profile_id": profile_id, "account": account, "symbol": symbol,
        "side": side, "status": status, "entry_qty": qty, "entry_price": entry_price,
        "entry_time": T0 - 10 * HOUR, "entry_client_order_id": coid, "exit_qty": exit_qty,
        "exit_price": exit_price, "exit_time": pd.NaT, "exit_source": None, "updated_at": T0 - 10 * HOUR,
    }


def slices(*rows: dict[str, Any]) -> pd.DataFrame:
    return frame(TRADE_HISTORY, list(rows))


def market_row(symbol: str = "BTC/USDT:USDT", *, market_type: str | None = None, prec: float = 0.001,
               mark: float = 100.0, account: str = ACC) -> dict[str, Any]:
    mt = market_type or ("swap" if ":" in symbol else "spot")
    base, rest = symbol.split("/")
    return {"account": account, "symbol": symbol, "market_type": mt, "base": base,
            "quote": rest.split(":")[0], "amount_precision": prec, "price_precision": 0.01,
            "contract_size": 1.0, "mark_price": mark}


def markets(*rows: dict[str, Any]) -> pd.DataFrame:
    return frame(EXCHANGE_MARKETS, list(rows) or [market_row()])


def pos_row(instrument: str = "BTC/USDT:USDT", qty: float = 1.0, *, side: str = "both",
            market_type: str | None = None, account: str = ACC) -> dict[str, Any]:
    mt = market_type or ("swap" if ":" in instrument else "spot")
    return {"account": account, "market_type": mt, "instrument": instrument, "position_side": side,
            "qty": qty, "entry_price": NAN}


def positions(*rows: dict[str, Any]) -> pd.DataFrame:
    return frame(EXCHANGE_POSITIONS, list(rows))


def profile_row(profile_id: str = "p1", *, sub_tag: str = "t1", capital: float = 1000.0,
                paused: bool = False, account: str = ACC, market_type: str = "swap") -> dict[str, Any]:
    return {"profile_id": profile_id, "exchange": "binance", "account": account,
            "market_type": market_type, "sub_tag": sub_tag, "allocated_capital_usd": capital,
            "trading_paused": paused}


def profiles(*rows: dict[str, Any]) -> pd.DataFrame:
    return frame(PROFILES, list(rows) or [profile_row()])


def streak_row(trade_id: str, streak: int, last: pd.Timestamp, *, first: pd.Timestamp | None = None,
               profile_id: str = "p1") -> dict[str, Any]:
    return {"trade_id": trade_id, "profile_id": profile_id, "streak": streak,
            "first_seen_window": first if first is not None else last, "last_window_start": last}


def streaks(*rows: dict[str, Any]) -> pd.DataFrame:
    return frame(PARITY_STREAKS, list(rows))


def pause_row(pause_id: str, *, source: str = "parity_watchdog", paused_at: pd.Timestamp = T0,
              resumed_at: pd.Timestamp | None = None, resumed_by: str | None = None,
              profile_id: str = "p1") -> dict[str, Any]:
    return {"pause_id": pause_id, "profile_id": profile_id, "source": source, "reason": "test",
            "paused_at": paused_at, "resumed_at": resumed_at if resumed_at is not None else pd.NaT,
            "resumed_by": resumed_by}


def pauses(*rows: dict[str, Any]) -> pd.DataFrame:
    return frame(TRADING_PAUSES, list(rows))


def run_row(window: pd.Timestamp, clean: bool, *, evaluated: bool = True,
            profile_id: str = "p1") -> dict[str, Any]:
    return {"window_start": window, "profile_id": profile_id, "parity_evaluated": evaluated,
            "clean": clean, "evaluated_at": window + HOUR + pd.Timedelta(minutes=5)}


def run_history(*rows: dict[str, Any]) -> pd.DataFrame:
    return frame(RUN_HISTORY, list(rows))


def order_row(order_id: str, *, role: str = "ENTRY", status: str = "OPEN", qty: float = 1.0,
              filled: float = 0.0, price: float = 100.0, symbol: str = "BTC/USDT:USDT",
              side: str = "buy", profile_id: str = "p1", trade_id: str | None = None) -> dict[str, Any]:
    return {"order_id": order_id, "profile_id": profile_id, "account": ACC, "trade_id": trade_id,
            "symbol": symbol, "side": side, "role": role, "order_type": "limit", "qty": qty,
            "price": price, "filled_qty": filled, "avg_fill_price": NAN, "status": status,
            "exchange_order_id": f"x{order_id}", "client_order_id": f"t1-e-{order_id}",
            "created_at": T0, "updated_at": T0}


def orders(*rows: dict[str, Any]) -> pd.DataFrame:
    return frame(DB_ORDERS, list(rows))


def ledger_row(reserved: float, profile_id: str = "p1") -> dict[str, Any]:
    return {"profile_id": profile_id, "reserved_usd": reserved, "updated_at": T0}


def ledger(*rows: dict[str, Any]) -> pd.DataFrame:
    return frame(CAPITAL_LEDGER, list(rows))


def db_pos_row(symbol: str, qty: float, profile_id: str = "p1") -> dict[str, Any]:
    return {"profile_id": profile_id, "symbol": symbol, "qty": qty, "avg_entry_price": 100.0,
            "updated_at": T0}


def db_positions(*rows: dict[str, Any]) -> pd.DataFrame:
    return frame(DB_POSITIONS, list(rows))
