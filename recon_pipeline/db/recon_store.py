"""Writes to the pipeline's own ``recon_`` tables: findings, runs, parity streaks, batches.

These tables belong to the pipeline, so replacing a (window, profile)'s findings on a re-run is
allowed here (the trading tables are never deleted from). Every statement binds parameters; upserts
use ``INSERT ... ON CONFLICT``, which Postgres and SQLite both speak. Bulk inserts (findings) use
``COPY ... FROM STDIN`` on Postgres (:mod:`recon_pipeline.db.copy`), the same rows as the portable
``executemany`` INSERT that SQLite keeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recon_pipeline.db import copy as pgcopy
from recon_pipeline.db.read import ts_param

FINDING_COLUMNS = ("account", "kind", "symbol", "trade_id", "order_id", "exchange_order_id",
                   "client_order_id", "fill_ids", "attribution", "qty_db", "qty_exchange",
                   "notional_usd", "reason", "detail")


def _plain(conn: Connection, value):
    """A Python value the DB-API accepts: NA -> None, numpy scalars -> Python, times -> ts_param."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        return ts_param(conn, value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def records(conn: Connection, df: pd.DataFrame, columns: Iterable[str]) -> list[dict]:
    cols = list(columns)
    return [{c: _plain(conn, v) for c, v in zip(cols, row, strict=True)}
            for row in df[cols].itertuples(index=False, name=None)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def replace_findings(conn: Connection, window_start, profile_id: str, findings: pd.DataFrame) -> int:
    """The window's findings for the profile, replacing those of an earlier evaluation of it."""
    conn.execute(sa.text("DELETE FROM recon_findings WHERE window_start = :w AND profile_id = :p"),
                 {"w": ts_param(conn, window_start), "p": profile_id})
    if findings.empty:
        return 0
    rows = records(conn, findings, FINDING_COLUMNS)
    for seq, row in enumerate(rows):
        row.update(seq=seq, window_start=ts_param(conn, window_start), profile_id=profile_id)
    cols = ("window_start", "profile_id", "seq", *FINDING_COLUMNS)
    if pgcopy.use_copy(conn, len(rows)):  # Postgres: one COPY, the values in the data stream
        pgcopy.copy_in_dicts(conn, "recon_findings", cols, rows)
    else:
        conn.execute(sa.text(f"INSERT INTO recon_findings ({', '.join(cols)}) "
                             f"VALUES ({', '.join(':' + c for c in cols)})"), rows)
    return len(rows)


RUN_COLUMNS = ("window_start", "profile_id", "run_id", "status", "live", "evaluated_at", "finished_at",
               "parity_evaluated", "clean", "mismatch_count", "missing_from_exchange", "missing_in_db",
               "no_go_count", "correction_count", "health", "error")


def upsert_run(conn: Connection, run: Mapping) -> None:
    """Record one evaluation of (window, profile); the latest attempt wins."""
    row = {c: None for c in RUN_COLUMNS}
    row.update({"live": False, "parity_evaluated": False, "clean": False, "mismatch_count": 0,
                "missing_from_exchange": 0, "missing_in_db": 0, "no_go_count": 0, "correction_count": 0,
                "health": "{}", "finished_at": utcnow()})
    row.update(run)
    if not isinstance(row["health"], str):
        row["health"] = json.dumps(row["health"], sort_keys=True, default=str)
    row = {k: _plain(conn, v) for k, v in row.items()}
    updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS if c not in ("window_start", "profile_id"))
    conn.execute(sa.text(
        f"INSERT INTO recon_runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join(':' + c for c in RUN_COLUMNS)}) "
        f"ON CONFLICT (window_start, profile_id) DO UPDATE SET {updates}"), row)


def upsert_streaks(conn: Connection, streaks: pd.DataFrame) -> int:
    """Persist the heartbeat's streak rows (only the running profile's slices are ever passed)."""
    if streaks.empty:
        return 0
    cols = ("trade_id", "profile_id", "streak", "first_seen_window", "last_window_start")
    rows = records(conn, streaks, cols)
    now = ts_param(conn, utcnow())
    for row in rows:
        row["updated_at"] = now
    all_cols = (*cols, "updated_at")
    conn.execute(sa.text(
        f"INSERT INTO recon_parity_streaks ({', '.join(all_cols)}) VALUES ({', '.join(':' + c for c in all_cols)}) "
        "ON CONFLICT (trade_id) DO UPDATE SET profile_id = excluded.profile_id, streak = excluded.streak, "
        "first_seen_window = excluded.first_seen_window, last_window_start = excluded.last_window_start, "
        "updated_at = excluded.updated_at"), rows)
    return len(rows)
