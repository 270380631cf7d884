"""Apply one corrective batch: one transaction, expected state checked per row, each id applied once.

The protocol of DESIGN section 5:

1. In ONE transaction, take the profile's reconciliation lock (busy: skip, nothing written).
2. Re-read the batch; only a PENDING batch is applied (re-running an APPLIED batch is a no-op).
3. Per action, in a fixed order (slice exits before parity actions on the same slice, orders, pauses),
   stage the corrections in a temporary table and run ONE ``UPDATE ... FROM`` whose WHERE clause is
   the expected state: a row that changed since the batch was built simply does not match and its
   correction is STALE. This is a compare-and-set, not a read-then-write, so nothing can slip in
   between the check and the write.
4. Derived corrections (RESERVATION_UPDATE, POSITION_UPDATE) are recomputed from what the tables hold
   at that point, so a sibling that went STALE cannot leave them wrong.
5. Outcomes are recorded per correction; a partial unique index allows a correction id to be APPLIED
   once, whatever batch carries it, so two appliers racing end with one winner and one rollback.

A crash anywhere rolls the transaction back: the trading tables are as before and the batch is still
PENDING for the retry.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from recon_pipeline.apply import lock
from recon_pipeline.db import copy as pgcopy
from recon_pipeline.db.read import ts_param
from recon_pipeline.db.recon_store import utcnow

QTY_TOLERANCE = 1e-10
SLICE_ACTIONS = ("BACKFILL_EXIT", "SYNTHETIC_EXIT", "QUARANTINE")
ORDER_ACTIONS = ("ENTRY_FILL", "EXIT_FILL", "CANCEL_ORDER")
PAUSE_ACTIONS = ("PAUSE_TRADING", "RESUME_TRADING")
DERIVED_ACTIONS = ("RESERVATION_UPDATE", "POSITION_UPDATE")
EXIT_SOURCE = {"BACKFILL_EXIT": "backfill", "SYNTHETIC_EXIT": "parity_synthetic"}


@dataclass
class ApplyReport:
    batch_id: str
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    skipped_reason: str | None = None


def apply_batch(engine: Engine, batch_id: str, *, run_id: str | None = None, holder: str | None = None) -> ApplyReport:
    """Apply a PENDING batch exactly once; raises :class:`lock.LockBusy` when the profile is locked."""
    with engine.begin() as conn:
        batch = _load_batch(conn, batch_id)
        if batch is None:
            raise LookupError(f"no corrective batch {batch_id!r}")
        if batch["status"] != "PENDING":
            return ApplyReport(batch_id, batch["status"], skipped_reason=f"batch is {batch['status']}, not PENDING")
        lock.acquire(conn, batch["profile_id"], holder)
        batch = _load_batch(conn, batch_id, for_update=True)  # re-read under the lock
        if batch["status"] != "PENDING":
            lock.release(conn, batch["profile_id"])
            return ApplyReport(batch_id, batch["status"], skipped_reason=f"batch is {batch['status']}, not PENDING")
        pending = _load_pending(conn, batch_id)
        now = utcnow()
        outcomes: dict[str, tuple[str, str]] = {}

        already = _applied_elsewhere(conn, pending["correction_id"].tolist())
        for cid in already:
            outcomes[cid] = ("STALE", "already applied in another batch")
        todo = pending[~pending["correction_id"].isin(already)]

        for action in SLICE_ACTIONS:
            rows = todo[todo["action"] == action]
            if len(rows):
                applied = _compare_and_set(conn, _SLICES, rows, now, {"exit_source": EXIT_SOURCE.get(action)})
                _record(outcomes, rows, applied, "expected slice state changed since the batch was built")
        for action in ORDER_ACTIONS:
            rows = todo[todo["action"] == action]
            if len(rows):
                applied = _compare_and_set(conn, _ORDERS, rows, now)
                _record(outcomes, rows, applied, "expected order state changed since the batch was built")
        pause_rows = todo[todo["action"].isin(PAUSE_ACTIONS)]
        if len(pause_rows):
            applied = _apply_pauses(conn, pause_rows, now)
            _record(outcomes, pause_rows, applied, "pause state changed since the batch was built")
            _sync_trading_paused(conn, batch["profile_id"])
        outcomes.update(_apply_derived(conn, todo[todo["action"].isin(DERIVED_ACTIONS)], now))

        _write_outcomes(conn, batch_id, outcomes, now)
        conn.execute(sa.text("UPDATE recon_batches SET status = 'APPLIED', applied_at = :t, apply_run_id = :r"
                             " WHERE batch_id = :b"), {"t": ts_param(conn, now), "r": run_id, "b": batch_id})
        lock.release(conn, batch["profile_id"])
    counts = Counter(status for status, _ in outcomes.values())
    return ApplyReport(batch_id, "APPLIED", dict(counts))


def _load_batch(conn: Connection, batch_id: str, for_update: bool = False):
    sql = "SELECT batch_id, profile_id, window_start, status FROM recon_batches WHERE batch_id = :b"
    if for_update and conn.dialect.name == "postgresql":
        sql += " FOR UPDATE"
    return conn.execute(sa.text(sql), {"b": batch_id}).mappings().first()


def _load_pending(conn: Connection, batch_id: str) -> pd.DataFrame:
    result = conn.execute(sa.text(
        "SELECT correction_id, action, target_table, target_id, expected_state, new_state FROM recon_corrections"
        " WHERE batch_id = :b AND status = 'PENDING' ORDER BY correction_id"), {"b": batch_id})
    keys = list(result.keys())
    rows = result.fetchall()
    if not rows:
        return pd.DataFrame(columns=["correction_id", "action", "target_table", "target_id",
                                     "expected_state", "new_state"])
    # column-wise from plain tuples (a frame built from Row objects probes each row: slow at 1e5 rows)
    columns = dict(zip(keys, (list(col) for col in zip(*rows, strict=True)), strict=True))
    frame = pd.DataFrame(columns)
    # expected states repeat (most are "OPEN, nothing exited"): parse each distinct document once. The
    # parsed dicts are only read, never modified, so sharing them between rows is safe.
    parsed: dict[str, dict] = {}
    frame["expected"] = [parsed[v] if v in parsed else parsed.setdefault(v, json.loads(v))
                         for v in columns["expected_state"]]
    frame["new"] = [json.loads(v) for v in columns["new_state"]]
    return frame


def _applied_elsewhere(conn: Connection, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    if conn.dialect.name == "postgresql":
        # one array parameter instead of len(ids) expanded ones
        stmt = sa.text("SELECT correction_id FROM recon_corrections WHERE status = 'APPLIED'"
                       " AND correction_id = ANY(CAST(:ids AS text[]))")
        return {r[0] for r in conn.execute(stmt, {"ids": ids})}
    stmt = sa.text("SELECT correction_id FROM recon_corrections WHERE status = 'APPLIED' AND correction_id IN :ids")
    stmt = stmt.bindparams(sa.bindparam("ids", expanding=True))
    return {r[0] for r in conn.execute(stmt, {"ids": ids})}


def _record(outcomes, rows: pd.DataFrame, applied_targets: set[str], stale_reason: str) -> None:
    for cid, target in zip(rows["correction_id"].tolist(), rows["target_id"].tolist(), strict=True):
        outcomes[cid] = ("APPLIED", "applied") if target in applied_targets else ("STALE", stale_reason)


def _stage(conn: Connection, name: str, columns: dict[str, str], data: dict[str, list]) -> None:
    """A temporary table holding this step's corrections; dropped by the caller's next _stage or commit.

    ``data`` holds one list per column. Postgres: the rows are streamed in with ``COPY ... FROM STDIN``
    (one round trip, the values in the data stream); SQLite and small stages: the portable
    ``executemany`` INSERT.
    """
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    cols = ", ".join(f"{c} {t}" for c, t in columns.items())
    suffix = " ON COMMIT DROP" if conn.dialect.name == "postgresql" else ""
    conn.execute(sa.text(f"CREATE TEMPORARY TABLE {name} ({cols}){suffix}"))
    n_rows = len(next(iter(data.values())))
    if pgcopy.use_copy(conn, n_rows):
        pgcopy.copy_in_columns(conn, name, list(columns), [data[c] for c in columns])
        return
    rows = [dict(zip(columns, values, strict=True)) for values in zip(*(data[c] for c in columns), strict=True)]
    conn.execute(sa.text(f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"),
                 rows)


def _num(value):
    return None if value is None else float(value)


# The ISO 8601 forms the rules write (Timestamp.isoformat()); datetime.fromisoformat reads them exactly
# as pd.Timestamp does, at a fraction of the cost. Anything else goes through ts_param.
_ISO_TS = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})?")


def _ts_value(conn: Connection, value):
    """``ts_param`` of a JSON time value, None when it is missing or empty."""
    if not value:
        return None
    if type(value) is str and conn.dialect.name == "postgresql" and _ISO_TS.fullmatch(value):
        stamp = datetime.fromisoformat(value)
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    return ts_param(conn, value)


@dataclass(frozen=True)
class _Target:
    """A trading table corrected by compare-and-set: expected (status, qty) in, new columns out."""

    table: str
    key: str
    qty: str                          # the quantity column of the expected state (exit_qty / filled_qty)
    columns: tuple[tuple[str, str], ...]  # (column, staged SQL type) written from new_state when present


_SLICES = _Target("trade_history", "trade_id", "exit_qty",
                  (("status", "text"), ("exit_qty", "numeric"), ("exit_price", "numeric"),
                   ("exit_time", "timestamptz"), ("exit_source", "text")))
_ORDERS = _Target("orders", "order_id", "filled_qty",
                  (("status", "text"), ("filled_qty", "numeric"), ("avg_fill_price", "numeric")))


def _staged_value(conn: Connection, sql_type: str, value):
    if sql_type == "numeric":
        return _num(value)
    if sql_type == "timestamptz":
        return _ts_value(conn, value)
    return value


def _compare_and_set(conn: Connection, target: _Target, rows: pd.DataFrame, now,
                     defaults: dict | None = None) -> set[str]:
    """Stage the rows, then ONE ``UPDATE ... FROM`` whose WHERE is the expected state; returns the keys written.

    A row whose status or quantity changed since the batch was built does not match, so its
    correction is STALE; unset new columns keep their current value (COALESCE).
    """
    exp = rows["expected"].tolist()
    new = rows["new"].tolist()
    defaults = defaults or {}
    stage = f"recon_stage_{target.table}"
    data = {"target_id": rows["target_id"].tolist(),
            "exp_status": [e.get("status") for e in exp],
            f"exp_{target.qty}": [_num(e.get(target.qty)) for e in exp]}
    types = {"target_id": "text", "exp_status": "text", f"exp_{target.qty}": "numeric"}
    for col, sql_type in target.columns:
        fallback = defaults.get(col)
        data[f"new_{col}"] = [_staged_value(conn, sql_type, fallback if n.get(col) in (None, "") else n.get(col))
                              for n in new]
        types[f"new_{col}"] = sql_type
    _stage(conn, stage, types, data)
    t = target.table
    sets = ", ".join(f"{col} = COALESCE(s.new_{col}, {t}.{col})" for col, _ in target.columns)
    result = conn.execute(sa.text(
        f"UPDATE {t} SET {sets}, updated_at = :now FROM {stage} s"
        f" WHERE {t}.{target.key} = s.target_id AND {t}.status = s.exp_status"
        f" AND abs({t}.{target.qty} - s.exp_{target.qty}) <= :tol"
        f" RETURNING {t}.{target.key}"), {"now": ts_param(conn, now), "tol": QTY_TOLERANCE})
    return {r[0] for r in result}


def _apply_pauses(conn: Connection, rows: pd.DataFrame, now) -> set[str]:
    """Pauses are a handful per batch: one conditional statement each."""
    applied = set()
    for row in rows.itertuples(index=False):
        new = row.new
        if row.action == "PAUSE_TRADING":
            result = conn.execute(sa.text(
                "INSERT INTO trading_pauses (pause_id, profile_id, source, reason, paused_at)"
                " SELECT :pid, :prof, :src, :reason, :at"
                " WHERE NOT EXISTS (SELECT 1 FROM trading_pauses WHERE profile_id = :prof AND source = :src"
                "                   AND resumed_at IS NULL)"
                " AND NOT EXISTS (SELECT 1 FROM trading_pauses WHERE pause_id = :pid)"),
                {"pid": new.get("pause_id", row.target_id), "prof": new["profile_id"],
                 "src": new.get("source", "parity_watchdog"), "reason": new.get("reason"),
                 "at": ts_param(conn, new.get("paused_at") or now)})
        else:
            result = conn.execute(sa.text(
                "UPDATE trading_pauses SET resumed_at = :at, resumed_by = :by"
                " WHERE pause_id = :pid AND resumed_at IS NULL"),
                {"pid": row.target_id, "at": ts_param(conn, new.get("resumed_at") or now),
                 "by": new.get("resumed_by", "auto_resume")})
        if result.rowcount == 1:
            applied.add(row.target_id)
    return applied


def _sync_trading_paused(conn: Connection, profile_id: str) -> None:
    """profiles.trading_paused is true exactly while any pause row of the profile is open."""
    open_count = conn.execute(sa.text(
        "SELECT count(*) FROM trading_pauses WHERE profile_id = :p AND resumed_at IS NULL"), {"p": profile_id}).scalar()
    conn.execute(sa.text("UPDATE profiles SET trading_paused = :v WHERE profile_id = :p"),
                 {"v": bool(open_count), "p": profile_id})


# The derived recomputation reads the tables as they are, including rows the snapshot excluded as BAD_ROW
# (recon_pipeline.validation.snapshots): a NaN or infinite qty or price there would make the whole sum NaN
# and be written into capital_ledger / positions. Such rows are skipped, as the ledger rule never saw them:
# the value checks of the snapshot's row rules that bear on the two formulas (DESIGN 4.6), in portable SQL.
# "Finite" is ``abs(x) < 1e308``: false for +-Infinity, for NULL, and for NaN (Postgres sorts NaN above
# every number; SQLite stores NaN as NULL).
_FINITE = "(abs({0}) < 1e308)"
_SLICE_VALUES_OK = " AND ".join([
    "side IN ('long', 'short')",
    _FINITE.format("entry_qty"), "entry_qty > 0",                         # NON_FINITE_QTY / NON_POSITIVE_QTY
    _FINITE.format("exit_qty"), "exit_qty >= 0",                          # NEGATIVE_EXIT_QTY
    "exit_qty <= entry_qty + abs(entry_qty) * 1e-9 + 1e-12",              # EXIT_EXCEEDS_ENTRY
    _FINITE.format("entry_price"), "entry_price > 0",                     # NON_POSITIVE_PRICE
])
# remaining qty, never negative (an exit within float noise above the entry counts as fully exited)
_REMAINING = "(CASE WHEN entry_qty > exit_qty THEN entry_qty - exit_qty ELSE 0 END)"


def _price_ok(col: str) -> str:
    """A limit / average price the snapshot keeps: absent (NULL, or NaN: a market order) or finite and > 0."""
    return f"({col} IS NULL OR {col} = 'NaN' OR ({_FINITE.format(col)} AND {col} > 0))"


_ORDER_VALUES_OK = " AND ".join([
    _FINITE.format("qty"), "qty > 0",                                     # NON_FINITE_QTY / NON_POSITIVE_QTY
    _FINITE.format("filled_qty"), "filled_qty >= 0",                      # NON_FINITE_FILLED / NEGATIVE_FILLED
    "filled_qty <= qty + abs(qty) * 1e-9 + 1e-12",                        # FILLED_EXCEEDS_QTY
    _price_ok("price"), _price_ok("avg_fill_price"),                      # NON_POSITIVE_PRICE
])
# an open entry order without a usable limit price (a market order) is priced at its average fill price,
# else it reserves nothing (recon_pipeline.rules.ledger)
_ORDER_PRICE = (f"(CASE WHEN {_FINITE.format('price')} THEN price"
                f" WHEN {_FINITE.format('avg_fill_price')} THEN avg_fill_price END)")
_RESERVED_SQL = (
    f"SELECT COALESCE((SELECT sum({_REMAINING} * entry_price) FROM trade_history"
    f"                 WHERE profile_id = :p AND status = 'OPEN' AND {_SLICE_VALUES_OK}), 0)"
    f" + COALESCE((SELECT sum((CASE WHEN qty > filled_qty THEN qty - filled_qty ELSE 0 END) * {_ORDER_PRICE})"
    f"             FROM orders WHERE profile_id = :p AND role = 'ENTRY'"
    f"             AND status IN ('NEW', 'OPEN', 'PARTIALLY_FILLED') AND {_ORDER_VALUES_OK}), 0)")
# every OPEN slice's remaining qty (signed by side) and entry-price average, per (profile, symbol)
_POSITIONS_SQL = (
    f"SELECT profile_id, symbol, COALESCE(sum(CASE WHEN side = 'long' THEN {_REMAINING} ELSE -{_REMAINING} END), 0),"
    f" sum({_REMAINING} * entry_price) / NULLIF(sum({_REMAINING}), 0)"
    f" FROM trade_history WHERE profile_id IN :profiles AND symbol IN :symbols AND status = 'OPEN'"
    f" AND {_SLICE_VALUES_OK} GROUP BY profile_id, symbol")


def _apply_derived(conn: Connection, rows: pd.DataFrame, now) -> dict[str, tuple[str, str]]:
    """Recompute reservations / positions from the tables as they are now, inside the transaction.

    Rows with a non-finite or invalid qty or price (the snapshot's BAD_ROWs) are skipped, never summed
    (see ``_SLICE_VALUES_OK`` / ``_ORDER_VALUES_OK``), so a NaN is never written. A derived correction
    reads the slices and orders, which only the corrections before it write, never the ledger or the
    positions it writes itself, so the positions of a batch are recomputed together: one grouped read
    of the OPEN slices instead of one scan of them per position (9 positions a window cost 50 ms).
    """
    outcomes: dict[str, tuple[str, str]] = {}
    for row in rows[rows["action"] == "RESERVATION_UPDATE"].itertuples(index=False):  # one per profile
        outcomes[row.correction_id] = _apply_reservation(conn, row.target_id, now)
    positions = rows[rows["action"] == "POSITION_UPDATE"]
    if len(positions):
        outcomes.update(_apply_positions(conn, positions, now))
    return outcomes


def _apply_reservation(conn: Connection, profile_id: str, now) -> tuple[str, str]:
    reserved = conn.execute(sa.text(_RESERVED_SQL), {"p": profile_id}).scalar()
    reserved = float(reserved or 0.0)
    current = conn.execute(sa.text("SELECT reserved_usd FROM capital_ledger WHERE profile_id = :p"),
                           {"p": profile_id}).scalar()
    if current is not None and abs(float(current) - reserved) <= 1e-6:
        return ("STALE", f"reserved_usd already {reserved:.8g}")
    conn.execute(sa.text(
        "INSERT INTO capital_ledger (profile_id, reserved_usd, updated_at) VALUES (:p, :r, :t)"
        " ON CONFLICT (profile_id) DO UPDATE SET reserved_usd = excluded.reserved_usd,"
        " updated_at = excluded.updated_at"), {"p": profile_id, "r": reserved, "t": ts_param(conn, now)})
    return ("APPLIED", f"reserved_usd recomputed: {reserved:.8g}")


def _apply_positions(conn: Connection, rows: pd.DataFrame, now) -> dict[str, tuple[str, str]]:
    """POSITION_UPDATEs (target ``profile|symbol``): the recomputed qty is written unless the table
    already holds it (STALE); a position without OPEN slices is 0, with no average price."""
    targets = [tuple(target.split("|", 1)) for target in rows["target_id"]]
    profiles = sorted({p for p, _ in targets})
    symbols = sorted({s for _, s in targets})
    params = {"profiles": profiles, "symbols": symbols}
    expanding = (sa.bindparam("profiles", expanding=True), sa.bindparam("symbols", expanding=True))
    computed = {(p, s): (q, a) for p, s, q, a in conn.execute(sa.text(_POSITIONS_SQL).bindparams(*expanding), params)}
    held = {(p, s): q for p, s, q in conn.execute(sa.text(
        "SELECT profile_id, symbol, qty FROM positions WHERE profile_id IN :profiles AND symbol IN :symbols"
    ).bindparams(*expanding), params)}
    outcomes: dict[str, tuple[str, str]] = {}
    writes = []
    at = ts_param(conn, now)
    for correction_id, (profile_id, symbol) in zip(rows["correction_id"], targets, strict=True):
        qty, avg = computed.get((profile_id, symbol), (0.0, None))
        qty = float(qty or 0.0)
        current = held.get((profile_id, symbol))
        if (current is None and qty == 0.0) or (current is not None and abs(float(current) - qty) <= QTY_TOLERANCE):
            outcomes[correction_id] = ("STALE", f"position already {qty:.10g}")
            continue
        writes.append({"p": profile_id, "s": symbol, "q": qty, "a": None if avg is None else float(avg), "t": at})
        held[profile_id, symbol] = qty  # a second correction of the same position finds it written
        outcomes[correction_id] = ("APPLIED", f"position recomputed: {qty:.10g}")
    if writes:
        conn.execute(sa.text(
            "INSERT INTO positions (profile_id, symbol, qty, avg_entry_price, updated_at) VALUES (:p, :s, :q, :a, :t)"
            " ON CONFLICT (profile_id, symbol) DO UPDATE SET qty = excluded.qty,"
            " avg_entry_price = COALESCE(excluded.avg_entry_price, positions.avg_entry_price),"
            " updated_at = excluded.updated_at"), writes)
    return outcomes


def _write_outcomes(conn: Connection, batch_id: str, outcomes: dict, now) -> None:
    if not outcomes:
        return
    at = ts_param(conn, now)
    if pgcopy.use_copy(conn, len(outcomes)):
        # Postgres: stage (correction_id, status, outcome) with COPY, then ONE set-based UPDATE; the
        # same rows get the same values as the per-row statements below.
        _stage(conn, "recon_stage_outcomes", {"correction_id": "text", "status": "text", "outcome": "text"},
               {"correction_id": list(outcomes), "status": [status for status, _ in outcomes.values()],
                "outcome": [reason for _, reason in outcomes.values()]})
        conn.execute(sa.text(
            "UPDATE recon_corrections SET status = o.status, outcome = o.outcome,"
            " applied_at = CASE WHEN o.status = 'APPLIED' THEN CAST(:t AS timestamptz) END"
            " FROM recon_stage_outcomes o"
            " WHERE recon_corrections.batch_id = :b AND recon_corrections.correction_id = o.correction_id"),
            {"t": at, "b": batch_id})
        return
    conn.execute(sa.text(
        "UPDATE recon_corrections SET status = :s, outcome = :o, applied_at = :t"
        " WHERE batch_id = :b AND correction_id = :c"),
        [{"s": status, "o": reason, "t": at if status == "APPLIED" else None, "b": batch_id, "c": cid}
         for cid, (status, reason) in outcomes.items()])


def pending_before(engine: Engine, batch_id: str) -> list[str]:
    """PENDING batches of the batch's profile up to its window, oldest window first (itself last)."""
    with engine.connect() as conn:
        batch = _load_batch(conn, batch_id)
        if batch is None:
            raise LookupError(f"no corrective batch {batch_id!r}")
        rows = conn.execute(sa.text(
            "SELECT batch_id FROM recon_batches WHERE profile_id = :p AND status = 'PENDING'"
            " AND window_start <= :w AND batch_id <> :b ORDER BY window_start, created_at"),
            {"p": batch["profile_id"], "w": batch["window_start"], "b": batch_id})
        return [r[0] for r in rows] + [batch_id]


def apply_in_window_order(engine: Engine, batch_id: str, *, run_id: str | None = None) -> list[ApplyReport]:
    """Apply every PENDING batch of the profile up to this one's window, in window order.

    Batches of one profile must land in the order of their windows: a later window's batch was built
    on a view that already contained the earlier drift. Each batch is its own transaction.
    """
    return [apply_batch(engine, bid, run_id=run_id) for bid in pending_before(engine, batch_id)]
