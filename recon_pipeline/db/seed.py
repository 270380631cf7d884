"""Load trading rows from JSON-like dicts: the demo database, and the fixtures of the tests.

Table and column names cannot be bound parameters, so both are checked against the known tables'
columns before any SQL is built; values are always bound.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from recon_pipeline.db.read import ts_param

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "profiles": ("profile_id", "exchange", "account", "market_type", "sub_tag", "allocated_capital_usd",
                 "trading_paused"),
    "orders": ("order_id", "profile_id", "trade_id", "symbol", "side", "role", "order_type", "qty", "price",
               "filled_qty", "avg_fill_price", "status", "exchange_order_id", "client_order_id",
               "created_at", "updated_at"),
    "trade_history": ("trade_id", "profile_id", "symbol", "side", "status", "entry_qty", "entry_price",
                      "entry_time", "entry_client_order_id", "exit_qty", "exit_price", "exit_time",
                      "exit_source", "updated_at"),
    "positions": ("profile_id", "symbol", "qty", "avg_entry_price", "updated_at"),
    "capital_ledger": ("profile_id", "reserved_usd", "updated_at"),
    "trading_pauses": ("pause_id", "profile_id", "source", "reason", "paused_at", "resumed_at", "resumed_by"),
    "recon_parity_streaks": ("trade_id", "profile_id", "streak", "first_seen_window", "last_window_start",
                             "updated_at"),
}
TIME_COLUMNS = {"entry_time", "exit_time", "updated_at", "created_at", "paused_at", "resumed_at",
                "first_seen_window", "last_window_start"}
# Insert order respects the foreign-key-like dependencies (profiles first).
TABLE_ORDER = tuple(TABLE_COLUMNS)


def insert_rows(conn: Connection, table: str, rows: Iterable[Mapping]) -> int:
    if table not in TABLE_COLUMNS:
        raise ValueError(f"unknown table {table!r}; known: {', '.join(TABLE_COLUMNS)}")
    rows = list(rows)
    if not rows:
        return 0
    allowed = TABLE_COLUMNS[table]
    unknown = sorted({k for row in rows for k in row} - set(allowed))
    if unknown:
        raise ValueError(f"{table}: unknown columns {unknown}")
    cols = [c for c in allowed if any(c in row for row in rows)]
    params = [{c: ts_param(conn, row.get(c)) if c in TIME_COLUMNS else row.get(c) for c in cols} for row in rows]
    conn.execute(sa.text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"),
                 params)
    return len(params)


def seed(engine: Engine, data: Mapping[str, Iterable[Mapping]]) -> dict[str, int]:
    """Insert every known table of ``data`` in one transaction; returns rows per table."""
    counts = {}
    with engine.begin() as conn:
        for table in TABLE_ORDER:
            if table in data:
                counts[table] = insert_rows(conn, table, data[table])
    return counts


def seed_file(engine: Engine, path: str | Path) -> dict[str, int]:
    return seed(engine, json.loads(Path(path).read_text()))
