"""Storing a corrective batch: PENDING, DRY_RUN, BLOCKED or EMPTY, once per content.

The batch id is a hash of the window, the profile, the mode and the sorted correction ids. Re-running
a window that finds the same drift therefore produces the same batch id, and storing it again is a
no-op: the batch keeps whatever status it reached (an APPLIED batch is not turned back to PENDING).
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recon_pipeline.db import copy as pgcopy
from recon_pipeline.db.read import ts_param
from recon_pipeline.db.recon_store import records, utcnow

CORRECTION_COLUMNS = ("correction_id", "window_start", "profile_id", "action", "target_table", "target_id",
                      "expected_state", "new_state", "evidence", "attribution", "notional_usd")


def batch_id_for(window_start, profile_id: str, correction_ids, mode: str) -> str:
    window = pd.Timestamp(window_start).tz_convert("UTC").isoformat()
    payload = "\x1f".join([window, profile_id, mode, *sorted(correction_ids)])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def batch_status(n_corrections: int, *, dry_run: bool, blocked: bool) -> str:
    if blocked:
        return "BLOCKED"
    if dry_run:
        return "DRY_RUN"
    if n_corrections == 0:
        return "EMPTY"
    return "PENDING"


def store_batch(conn: Connection, *, window_start, profile_id: str, run_id: str | None,
                corrections: pd.DataFrame, dry_run: bool, blocked: bool = False,
                validation: dict | None = None) -> dict:
    """Insert the batch and its corrections unless this exact batch is stored already.

    Returns the stored batch row (``batch_id``, ``status``, ``n_corrections``, ``created``).
    """
    status = batch_status(len(corrections), dry_run=dry_run, blocked=blocked)
    mode = "dry_run" if dry_run else "live"
    batch_id = batch_id_for(window_start, profile_id, corrections["correction_id"].tolist(), mode)
    existing = conn.execute(sa.text("SELECT batch_id, status, n_corrections FROM recon_batches WHERE batch_id = :b"),
                            {"b": batch_id}).mappings().first()
    if existing is not None:
        return {**existing, "created": False}
    now = ts_param(conn, utcnow())
    conn.execute(sa.text(
        "INSERT INTO recon_batches (batch_id, window_start, profile_id, run_id, status, n_corrections,"
        " validation, created_at) VALUES (:b, :w, :p, :r, :s, :n, :v, :c)"),
        {"b": batch_id, "w": ts_param(conn, window_start), "p": profile_id, "r": run_id, "s": status,
         "n": len(corrections), "v": json.dumps(validation or {}, sort_keys=True, default=str), "c": now})
    if len(corrections):
        rows = records(conn, corrections, CORRECTION_COLUMNS)
        per_row_dry = corrections["dry_run"].astype(bool).tolist()
        for row, row_dry in zip(rows, per_row_dry, strict=True):
            row["batch_id"] = batch_id
            row["status"] = status if status in ("BLOCKED", "DRY_RUN") else ("DRY_RUN" if row_dry else "PENDING")
        cols = ("batch_id", *CORRECTION_COLUMNS, "status")
        if pgcopy.use_copy(conn, len(rows)):  # Postgres: one COPY, the values in the data stream
            pgcopy.copy_in_dicts(conn, "recon_corrections", cols, rows)
        else:
            conn.execute(sa.text(f"INSERT INTO recon_corrections ({', '.join(cols)}) "
                                 f"VALUES ({', '.join(':' + c for c in cols)})"), rows)
    return {"batch_id": batch_id, "status": status, "n_corrections": len(corrections), "created": True}
