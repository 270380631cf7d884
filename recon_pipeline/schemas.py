"""The dataframes that flow between the snapshot assets and the rules, column by column.

One place says what every frame holds, so a snapshot (I/O) and a rule (pure) agree without reading
each other. Quantities and prices are float64 (a tolerance of one amount-precision unit is applied
wherever they are compared); identifiers are pandas strings; times are tz-aware UTC timestamps.
``conform`` casts a frame to its schema and fails loudly on a missing column: a snapshot that lost a
column cannot be trusted.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

TS = "datetime64[ns, UTC]"
STR = "str"
F64 = "float64"
I64 = "int64"
BOOL = "bool"

Schema = Mapping[str, str]

# --- exchange side (one account; the exchange is the truth) -------------------------------------

EXCHANGE_FILLS: Schema = {
    "account": STR,            # the profile's exchange account (the whole account is snapshotted)
    "fill_id": STR,            # exchange trade id, unique per account+symbol
    "exchange_order_id": STR,  # ccxt trade['order']: links the fill to an exchange order
    "symbol": STR,             # ccxt unified symbol, BTC/USDT or BTC/USDT:USDT
    "side": STR,               # buy | sell
    "qty": F64,                # base amount (swap: contracts x contractSize)
    "price": F64,
    "fee_cost": F64,           # NaN when the exchange gave no fee
    "fee_currency": STR,       # <NA> when no fee
    "ts": TS,
}

EXCHANGE_ORDERS: Schema = {
    "account": STR,
    "exchange_order_id": STR,
    "client_order_id": STR,    # <NA> when the exchange has none
    "symbol": STR,
    "side": STR,               # buy | sell
    "order_type": STR,         # limit | market | ...
    "qty": F64,                # ordered base amount
    "price": F64,              # NaN for market orders
    "filled_qty": F64,
    "avg_fill_price": F64,     # NaN when nothing filled
    "status": STR,             # open | closed | canceled | expired | rejected  (ccxt unified)
    "created_ts": TS,
    "updated_ts": TS,
}

# Markets of the account's exchange plus the mark price of each, at the snapshot.
EXCHANGE_MARKETS: Schema = {
    "account": STR,
    "symbol": STR,
    "market_type": STR,        # spot | swap
    "base": STR,               # BTC for BTC/USDT and BTC/USDT:USDT
    "quote": STR,
    "amount_precision": F64,   # one unit of amount precision (step size), e.g. 0.00001
    "price_precision": F64,
    "contract_size": F64,      # 1.0 for spot
    "mark_price": F64,         # NaN when the exchange gave none ("not evaluated")
}

# What the account holds on the exchange. ``instrument`` is the parity key: the unified symbol for
# swap positions, the base asset code for spot balances (spot parity nets every symbol of a base).
EXCHANGE_POSITIONS: Schema = {
    "account": STR,
    "market_type": STR,        # spot | swap
    "instrument": STR,         # swap: BTC/USDT:USDT ; spot: BTC
    "position_side": STR,      # long | short (hedge mode) | both (one-way swap, and spot)
    "qty": F64,                # signed base qty: swap contracts x contractSize (short < 0); spot total balance
    "entry_price": F64,        # NaN for spot
}

# --- database side ---------------------------------------------------------------------------

PROFILES: Schema = {
    "profile_id": STR,
    "exchange": STR,
    "account": STR,
    "market_type": STR,
    "sub_tag": STR,
    "allocated_capital_usd": F64,
    "trading_paused": BOOL,
}

TRADE_HISTORY: Schema = {
    "trade_id": STR,
    "profile_id": STR,
    "account": STR,            # joined from profiles: parity nets per account
    "symbol": STR,
    "side": STR,               # long | short
    "status": STR,             # OPEN | CLOSED | QUARANTINED
    "entry_qty": F64,
    "entry_price": F64,
    "entry_time": TS,
    "entry_client_order_id": STR,
    "exit_qty": F64,
    "exit_price": F64,
    "exit_time": TS,
    "exit_source": STR,        # exchange | backfill | parity_synthetic | <NA>
    "updated_at": TS,
}

DB_ORDERS: Schema = {
    "order_id": STR,
    "profile_id": STR,
    "account": STR,            # joined from profiles
    "trade_id": STR,           # <NA> when the trading system did not record one
    "symbol": STR,
    "side": STR,               # buy | sell
    "role": STR,               # ENTRY | EXIT
    "order_type": STR,
    "qty": F64,
    "price": F64,
    "filled_qty": F64,
    "avg_fill_price": F64,
    "status": STR,             # NEW | OPEN | PARTIALLY_FILLED | FILLED | CANCELED | REJECTED | EXPIRED
    "exchange_order_id": STR,
    "client_order_id": STR,
    "created_at": TS,
    "updated_at": TS,
}

DB_POSITIONS: Schema = {
    "profile_id": STR,
    "symbol": STR,
    "qty": F64,                # signed
    "avg_entry_price": F64,
    "updated_at": TS,
}

TRADING_PAUSES: Schema = {
    "pause_id": STR,
    "profile_id": STR,
    "source": STR,             # parity_watchdog | manual | risk | ...
    "reason": STR,
    "paused_at": TS,
    "resumed_at": TS,          # NaT while the pause is open
    "resumed_by": STR,
}

CAPITAL_LEDGER: Schema = {
    "profile_id": STR,
    "reserved_usd": F64,
    "updated_at": TS,
}

# The heartbeat's memory (pipeline table recon_parity_streaks): one row per slice that was ever a
# ghost. ``last_window_start`` is the window of the last check that counted, so re-running a window
# does not count twice.
PARITY_STREAKS: Schema = {
    "trade_id": STR,
    "profile_id": STR,
    "streak": I64,
    "first_seen_window": TS,
    "last_window_start": TS,
}

# Earlier evaluations of the profile (pipeline table recon_runs), newest last; the watchdog reads
# the clean streak and the last auto-resume from it.
RUN_HISTORY: Schema = {
    "window_start": TS,
    "profile_id": STR,
    "parity_evaluated": BOOL,
    "clean": BOOL,
    "evaluated_at": TS,        # exchange time of the snapshot
}

# --- outputs -----------------------------------------------------------------------------------

FINDING_KINDS = (
    "ORDER_MISSING_FROM_EXCHANGE",
    "ORDER_MISSING_IN_DB",
    "MISSING_EXIT",            # an OPEN slice whose exit happened on the exchange
    "GHOST_SLICE",
    "QTY_MISMATCH",
    "WATCHDOG_TRIGGERED",
    "UNATTRIBUTED",            # account-level activity tied to no profile
    "RESERVATION_MISMATCH",
    "POSITION_MISMATCH",
    "NO_GO",                   # evidence that failed a gate; reason says which
    "BAD_ROW",                 # a snapshot row excluded for a bad value; reason says which
)

NO_GO_REASONS = (
    "NO_ATTRIBUTION", "AMBIGUOUS", "STALE_FILL", "OVER_FILL", "UNKNOWN_SYMBOL", "UNKNOWN_TRADE",
    "DB_AHEAD", "LATE_FILL", "ORDER_NOT_FOUND", "SPOT_SHORT", "QTY_MISMATCH", "BAD_VALUE",
)

ATTRIBUTION_STRENGTHS = (  # strongest first
    "client_order_id", "trade_id_hint", "sub_tag", "single_open_trade", "qty_unique", "none",
)

FINDINGS: Schema = {
    "window_start": TS,
    "profile_id": STR,
    "account": STR,
    "kind": STR,               # one of FINDING_KINDS
    "symbol": STR,
    "trade_id": STR,
    "order_id": STR,           # DB order id
    "exchange_order_id": STR,
    "client_order_id": STR,
    "fill_ids": STR,           # comma-separated exchange fill ids, sorted
    "attribution": STR,        # one of ATTRIBUTION_STRENGTHS, <NA> where it does not apply
    "qty_db": F64,
    "qty_exchange": F64,
    "notional_usd": F64,
    "reason": STR,             # NO_GO reason code, or a short machine-readable detail
    "detail": STR,             # a sentence for the analyst
}

CORRECTION_ACTIONS = (
    "BACKFILL_EXIT", "SYNTHETIC_EXIT", "QUARANTINE", "ENTRY_FILL", "EXIT_FILL", "CANCEL_ORDER",
    "PAUSE_TRADING", "RESUME_TRADING", "RESERVATION_UPDATE", "POSITION_UPDATE",
)

# Actions governed by RECON_POSITION_PARITY_DRY_RUN.
PARITY_ACTIONS = ("SYNTHETIC_EXIT", "QUARANTINE", "PAUSE_TRADING", "RESUME_TRADING")

CORRECTIONS: Schema = {
    "correction_id": STR,      # deterministic: see rules.corrections.correction_ids
    "window_start": TS,
    "profile_id": STR,
    "action": STR,             # one of CORRECTION_ACTIONS
    "target_table": STR,       # trade_history | orders | trading_pauses | profiles | capital_ledger | positions
    "target_id": STR,          # trade_id, order_id, pause_id, profile_id, or "profile_id|symbol"
    "expected_state": STR,     # canonical JSON: what the applier must find before writing
    "new_state": STR,          # canonical JSON: the columns it writes
    "evidence": STR,           # canonical JSON: fill ids, attribution strength, notional...
    "attribution": STR,
    "notional_usd": F64,
    "dry_run": BOOL,           # True: stored as DRY_RUN, never applied
}


def empty(schema: Schema) -> pd.DataFrame:
    """A zero-row frame with the schema's columns and dtypes (a fresh copy of one built per schema:
    building it column by column costs about a millisecond, and a window asks for dozens)."""
    key = tuple(schema.items())
    template = _EMPTY.get(key)
    if template is None:
        template = _EMPTY[key] = pd.DataFrame({col: pd.Series([], dtype=dtype) for col, dtype in schema.items()})
    return template.copy()


_EMPTY: dict[tuple, pd.DataFrame] = {}
_DTYPES = {name: pd.Series([], dtype=name).dtype for name in (TS, STR, F64, I64, BOOL)}


def conform(df: pd.DataFrame, schema: Schema, *, name: str = "frame", extra: str = "drop") -> pd.DataFrame:
    """Cast ``df`` to ``schema`` (column order included).

    A missing column is a ``ValueError`` naming the frame and the columns: structural damage is never
    papered over with defaults. ``extra='keep'`` keeps columns the schema does not name, after it.
    """
    missing = [col for col in schema if col not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}; expected {list(schema)}")
    out = {}
    for col, dtype in schema.items():
        series = df[col]
        if series.dtype == _DTYPES[dtype]:
            pass  # already the schema's dtype: every cast below would return an equal copy
        elif dtype == TS:
            if series.dtype == object or pd.api.types.is_string_dtype(series):
                series = pd.to_datetime(series, utc=True, format="ISO8601")
            else:
                series = pd.to_datetime(series, utc=True)
            series = series.astype(TS)
        elif dtype == STR:
            series = series.astype(STR)  # one cast: the same values as via "string", in half the time
        elif dtype == BOOL:
            series = series.fillna(False).astype(BOOL)
        else:
            series = pd.to_numeric(series, errors="raise").astype(dtype)
        out[col] = series
    result = pd.DataFrame(out, index=df.index)
    if extra == "keep":
        for col in df.columns:
            if col not in schema:
                result[col] = df[col]
    return result.reset_index(drop=True)
