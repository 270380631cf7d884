"""Findings and corrections: building the output frames, and the deterministic correction id.

A correction id is a hash of (window, action, target, evidence). The same inputs always give the
same id, so re-running a window proposes the same corrections and the applier's unique constraint
on APPLIED ids makes a second application impossible. A later window that still finds the drift
proposes a *different* id for it, which the expected-state check turns STALE once the first one
has been applied.

Every rule returns its findings and corrections through :func:`findings_frame` and
:func:`corrections_frame`, which fill absent columns with nulls and cast to the schema; rules only
name the columns they know.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from recon_pipeline.schemas import CORRECTIONS, FINDINGS, PARITY_ACTIONS, conform, empty

_PLAIN = (str, int, bool)


def _jsonable(value: Any) -> Any:
    t = type(value)  # fast paths by exact type; anything else takes the general chain below
    if t is str or t is int or t is bool:
        return value
    if t is float:
        return value if math.isfinite(value) else None
    if t is dict:  # plain values inline: evidence documents are mostly strings and id lists
        return {k if type(k) is str else str(k): v if type(v) in _PLAIN else _jsonable(v)
                for k, v in value.items()}
    if t is list:
        return [v if type(v) in _PLAIN else _jsonable(v) for v in value]
    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        if pd.isna(value):
            return None
        if value.tzinfo is datetime.UTC:  # already UTC: tz_convert would not change it
            return value.isoformat()
        return (value.tz_convert("UTC") if value.tzinfo else value.tz_localize("UTC")).isoformat()
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return None if not math.isfinite(f) else f
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def canonical_json(value: Any) -> str:
    """Stable JSON: sorted keys, no whitespace, floats in shortest round-trip form, NaN -> null.

    Python's float repr round-trips exactly, so a value read back compares equal and the same
    evidence hashes identically on every machine.
    """
    return json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical_json_str_keys(value: Any) -> str:
    """:func:`canonical_json` of a document whose dicts all have ``str`` keys (the caller's promise:
    json would write a ``True`` or ``None`` key differently), in one pass of json's C encoder.

    Values json does not know (timestamps, numpy scalars) go through the same conversion as in
    :func:`canonical_json`; a NaN or infinite float falls back to it (it writes them as null)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
                          default=_jsonable)
    except ValueError:
        return canonical_json(value)


def correction_id(window_start: pd.Timestamp, action: str, target_table: str, target_id: str,
                  evidence_json: str) -> str:
    """32 hex chars of sha256 over the window, action, target and canonical evidence."""
    return _hash_id(_window_iso(window_start), action, target_table, target_id, evidence_json)


def _window_iso(window_start: pd.Timestamp) -> str:
    return pd.Timestamp(window_start).tz_convert("UTC").isoformat()


def _hash_id(window: str, action: str, target_table: str, target_id: str, evidence_json: str) -> str:
    payload = "\x1f".join([window, action, target_table, target_id, evidence_json])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def findings_frame(rows: pd.DataFrame | list[dict] | None, **constants: Any) -> pd.DataFrame:
    """Cast rule output to the FINDINGS schema; missing columns become null; ``constants`` fill columns."""
    return _to_schema(rows, FINDINGS, constants, "findings")


def corrections_frame(rows: pd.DataFrame | list[dict] | None, *, parity_dry_run: bool = False,
                      **constants: Any) -> pd.DataFrame:
    """Cast rule output to the CORRECTIONS schema and stamp each row with its deterministic id.

    ``expected_state``, ``new_state`` and ``evidence`` may be given as dicts (serialised here with
    :func:`canonical_json`) or already as canonical JSON strings. ``parity_dry_run`` marks the parity
    and watchdog actions DRY_RUN (``RECON_POSITION_PARITY_DRY_RUN``).
    """
    if rows is None or len(rows) == 0:
        return empty(CORRECTIONS)
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows.copy()
    for col in ("expected_state", "new_state", "evidence"):
        if col not in df.columns:
            df[col] = [canonical_json({})] * len(df)
        else:
            df[col] = [v if isinstance(v, str) else canonical_json(v) for v in df[col].tolist()]
    if "dry_run" not in df.columns:
        df["dry_run"] = False
    if parity_dry_run:
        df["dry_run"] = df["dry_run"].astype(bool) | df["action"].isin(PARITY_ACTIONS)
    df = _to_schema(df, CORRECTIONS | {"correction_id": "str"}, constants, "corrections", fill_id=True)
    windows = {w: _window_iso(w) for w in df["window_start"].unique()}
    df["correction_id"] = [
        _hash_id(windows[w], a, t, i, e)
        for w, a, t, i, e in zip(df["window_start"].tolist(), df["action"].tolist(), df["target_table"].tolist(),
                                 df["target_id"].tolist(), df["evidence"].tolist(), strict=True)
    ]
    return conform(df, CORRECTIONS, name="corrections")


def _to_schema(rows, schema, constants, name, fill_id=False) -> pd.DataFrame:
    """The schema's columns, in one frame construction: a constant where given, the rows' column where
    present, else the dtype's null (assigning the missing columns one by one cost more than the rules
    that made the rows, at a few dozen rows per call)."""
    if rows is None or len(rows) == 0:
        return empty(schema)
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows
    n = len(df)
    columns = {}
    for col, dtype in schema.items():
        if col in constants:
            columns[col] = np.full(n, constants[col], dtype=object)
        elif col in df.columns:
            columns[col] = df[col]
        else:
            columns[col] = _nulls(dtype, n)
    if fill_id:
        columns["correction_id"] = np.full(n, "", dtype=object)
    return conform(pd.DataFrame(columns, index=df.index), schema, name=name)


def _nulls(dtype: str, n: int):
    """``n`` nulls of ``dtype`` (bool: False), as an array ``conform`` casts cheaply."""
    if dtype == "bool":
        return np.zeros(n, dtype=bool)
    if dtype.startswith("datetime"):
        return pd.array([pd.NaT] * n, dtype=dtype)
    if dtype == "float64":
        return np.full(n, np.nan)
    return np.full(n, None, dtype=object)


def concat(frames: list[pd.DataFrame], schema) -> pd.DataFrame:
    """Concatenate rule outputs of one schema, ignoring empty ones (keeps dtypes stable)."""
    non_empty = [f for f in frames if len(f)]
    if not non_empty:
        return empty(schema)
    return conform(pd.concat(non_empty, ignore_index=True), schema)
