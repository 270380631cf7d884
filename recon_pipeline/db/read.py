"""Read the trading tables into typed frames (the DB half of a snapshot).

Every query binds its parameters; nothing is formatted into SQL text. Times are bound through
:func:`ts_param`, which gives Postgres a real ``timestamptz`` and SQLite the one text format the
pipeline also writes, so SQLite's text comparison orders them correctly.

The two large reads (``trade_history``, ``orders``) go through ``COPY (SELECT ...) TO STDOUT`` and
pyarrow's CSV reader on Postgres (:mod:`recon_pipeline.db.copy`: the parameters are bound into
transaction-local settings first, since COPY takes no bind parameters); SQLite, and the small reads,
use the portable ``SELECT``. Both give the same conformed frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from recon_pipeline import schemas
from recon_pipeline.db import copy as pgcopy

SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f+00:00"


def ts_param(conn: Connection | Engine, ts) -> object:
    """A timestamp as the dialect compares it: datetime for Postgres, canonical text for SQLite."""
    if ts is None or pd.isna(ts):
        return None
    stamp = pd.Timestamp(ts)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if conn.dialect.name == "sqlite":
        return stamp.strftime(SQLITE_TS_FORMAT)
    return stamp.to_pydatetime()


def _read(conn: Connection, sql: str, params: dict, schema, name: str,
          expanding: Sequence[str] = ()) -> pd.DataFrame:
    stmt = sa.text(sql)
    if expanding:
        stmt = stmt.bindparams(*(sa.bindparam(key, expanding=True) for key in expanding))
    result = conn.execute(stmt, params)
    frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    if frame.empty:
        return schemas.empty(schema)
    return schemas.conform(frame, schema, name=name)


def _read_bulk(conn: Connection, sql: str, params: dict, types: dict[str, str], schema, name: str) -> pd.DataFrame:
    """A large read: COPY + pyarrow on Postgres, the portable SELECT elsewhere."""
    if pgcopy.can_bind_params(conn):
        return pgcopy.copy_out_frame(conn, sql, params, types, schema, name)
    return _read(conn, sql, params, schema, name)


def read_profiles(conn: Connection, account: str | None = None) -> pd.DataFrame:
    sql = ("SELECT profile_id, exchange, account, market_type, sub_tag, allocated_capital_usd,"
           " trading_paused FROM profiles")
    params: dict = {}
    if account is not None:
        sql += " WHERE account = :account"
        params["account"] = account
    return _read(conn, sql + " ORDER BY profile_id", params, schemas.PROFILES, "profiles")


# "Alive at some point of [since, upper]": entered by ``upper`` and entered or exited since ``since``.
# On Postgres the same predicate as an interval overlap, [entry, max(entry, exit)] && [since, upper]
# (greatest() skips a NULL exit_time), which the GiST index of sql/003 answers without a table scan.
_ALIVE_IN_SPAN = {
    False: "(t.entry_time <= :upper AND (t.exit_time >= :since OR t.entry_time >= :since))",
    True: "tstzrange(t.entry_time, greatest(t.entry_time, t.exit_time), '[]') && tstzrange(:since, :upper, '[]')",
}


def trade_history_select(dialect: str) -> str:
    """The SELECT of :func:`read_trade_history` (parameters :account :start :end :since :upper)."""
    return f"""
        SELECT t.trade_id, t.profile_id, p.account, t.symbol, t.side, t.status, t.entry_qty,
               t.entry_price, t.entry_time, t.entry_client_order_id, t.exit_qty, t.exit_price,
               t.exit_time, t.exit_source, t.updated_at
          FROM trade_history t JOIN profiles p ON p.profile_id = t.profile_id
         WHERE p.account = :account
           AND (t.status = 'OPEN'
                OR (t.updated_at >= :start AND t.updated_at < :end)
                OR {_ALIVE_IN_SPAN[dialect == "postgresql"]})
         ORDER BY t.trade_id"""


def read_trade_history(conn: Connection, account: str, window_start, window_end,
                       grace_minutes: float = 0.0) -> pd.DataFrame:
    """The account's slices a reconciliation of the window can need (all profiles: parity nets per account).

    Every OPEN slice; every slice touched in the window; and every slice alive at some point of the
    fills span: entered or exited since the oldest OPEN slice's entry minus grace (the start of the
    span), and entered by the latest as-of time a run of this window can have, one window length after
    its end (a run is live only while less than a window length has passed). A fill in the span may
    name a slice that is already CLOSED, and without the slice it would look like an unknown trade;
    a slice entered after the span cannot be named by its fills. That upper bound keeps a historical
    window from reading every later slice of the account: backfilling the first hour of a busy week
    read the whole week.
    """
    oldest = conn.execute(sa.text(
        "SELECT min(t.entry_time) FROM trade_history t JOIN profiles p ON p.profile_id = t.profile_id"
        " WHERE p.account = :account AND t.status = 'OPEN'"), {"account": account}).scalar()
    since = pd.Timestamp(window_start)
    if oldest is not None:
        oldest = pd.to_datetime(oldest, utc=True, format="ISO8601") if isinstance(oldest, str) else pd.Timestamp(oldest)
        oldest = oldest.tz_localize("UTC") if oldest.tzinfo is None else oldest
        since = min(since, oldest - pd.Timedelta(minutes=grace_minutes))
    sql = trade_history_select(conn.dialect.name)
    end = pd.Timestamp(window_end)
    upper = end + (end - pd.Timestamp(window_start))
    params = {"account": account, "start": ts_param(conn, window_start), "end": ts_param(conn, window_end),
              "since": ts_param(conn, since), "upper": ts_param(conn, upper)}
    types = {"account": "text", "start": "timestamptz", "end": "timestamptz", "since": "timestamptz",
             "upper": "timestamptz"}
    return _read_bulk(conn, sql, params, types, schemas.TRADE_HISTORY, "db_trade_history")


ORDERS_SELECT = """
        SELECT o.order_id, o.profile_id, p.account, o.trade_id, o.symbol, o.side, o.role, o.order_type,
               o.qty, o.price, o.filled_qty, o.avg_fill_price, o.status, o.exchange_order_id,
               o.client_order_id, o.created_at, o.updated_at
          FROM orders o JOIN profiles p ON p.profile_id = o.profile_id
         WHERE p.account = :account
           AND (o.status IN ('NEW', 'OPEN', 'PARTIALLY_FILLED')
                OR (o.updated_at >= :start AND o.updated_at < :end))
         ORDER BY o.order_id"""


def read_orders(conn: Connection, account: str, window_start, window_end) -> pd.DataFrame:
    """The account's open orders plus orders updated in the window."""
    sql = ORDERS_SELECT
    params = {"account": account, "start": ts_param(conn, window_start), "end": ts_param(conn, window_end)}
    types = {"account": "text", "start": "timestamptz", "end": "timestamptz"}
    return _read_bulk(conn, sql, params, types, schemas.DB_ORDERS, "db_orders")



def read_positions(conn: Connection, profile_ids: Sequence[str]) -> pd.DataFrame:
    sql = ("SELECT profile_id, symbol, qty, avg_entry_price, updated_at FROM positions"
           " WHERE profile_id IN :ids ORDER BY profile_id, symbol")
    return _read(conn, sql, {"ids": list(profile_ids)}, schemas.DB_POSITIONS, "db_positions", ("ids",))


def read_pauses(conn: Connection, profile_ids: Sequence[str]) -> pd.DataFrame:
    sql = ("SELECT pause_id, profile_id, source, reason, paused_at, resumed_at, resumed_by"
           " FROM trading_pauses WHERE profile_id IN :ids ORDER BY paused_at, pause_id")
    return _read(conn, sql, {"ids": list(profile_ids)}, schemas.TRADING_PAUSES, "trading_pauses", ("ids",))


def read_ledger(conn: Connection, profile_ids: Sequence[str]) -> pd.DataFrame:
    sql = "SELECT profile_id, reserved_usd, updated_at FROM capital_ledger WHERE profile_id IN :ids"
    return _read(conn, sql, {"ids": list(profile_ids)}, schemas.CAPITAL_LEDGER, "capital_ledger", ("ids",))


def read_streaks(conn: Connection, profile_ids: Sequence[str]) -> pd.DataFrame:
    sql = ("SELECT trade_id, profile_id, streak, first_seen_window, last_window_start"
           " FROM recon_parity_streaks WHERE profile_id IN :ids")
    return _read(conn, sql, {"ids": list(profile_ids)}, schemas.PARITY_STREAKS, "recon_parity_streaks", ("ids",))


def read_run_history(conn: Connection, profile_id: str, before_window) -> pd.DataFrame:
    """Earlier successful evaluations of the profile, oldest first (the watchdog's clean streak)."""
    sql = ("SELECT window_start, profile_id, parity_evaluated, clean, evaluated_at FROM recon_runs"
           " WHERE profile_id = :pid AND status = 'SUCCESS' AND window_start < :before"
           " ORDER BY window_start")
    params = {"pid": profile_id, "before": ts_param(conn, before_window)}
    return _read(conn, sql, params, schemas.RUN_HISTORY, "recon_runs")
