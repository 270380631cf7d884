"""Per-profile reconciliation status, read from the pipeline's own tables on every call.

Nothing is kept in memory between calls: ``/internal/health`` and ``/metrics`` are computed from
``recon_runs`` (one row per (window, profile) evaluation, written by ``reconciliation_health`` and by
the reconcile job's failure hook), ``recon_batches``, ``trading_pauses``, ``profiles`` and the
reconciliation lock, so they survive restarts of the server and of the pipeline.

Per profile (every row of ``profiles``):

- the *latest run* is the ``recon_runs`` row with the greatest ``finished_at`` (any window, any status);
- the *latest success* is the greatest ``finished_at`` among ``status = 'SUCCESS'`` rows: it gives
  ``reconciliationMismatchCount``, ``reconciliationMissingFromExchange``, ``reconciliationMissingInDb``;
- the *latest live success* (``live`` true; parity is only evaluated in the live run of a window)
  gives the six parity / watchdog fields;
- the loop is healthy unless: there is no run at all, the latest run FAILED, or the latest success
  finished more than ``max_age_seconds`` (default two schedule intervals, 7200 s) before ``now``.

Every statement binds its parameters; the SQL is the same on Postgres and SQLite (window functions
need SQLite >= 3.25). Times are bound through :func:`~recon_pipeline.db.read.ts_param` and read back
with ``pd.to_datetime(utc=True, format="ISO8601")``, which accepts both dialects' values.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from recon_pipeline.apply.lock import lock_key
from recon_pipeline.db.read import ts_param
from recon_pipeline.observability.health import PER_RUN_FIELDS
from recon_pipeline.settings import SettingsError

log = logging.getLogger(__name__)

MAX_AGE_ENV = "RECON_HEALTH_MAX_AGE_SECONDS"
DEFAULT_MAX_AGE_SECONDS = 7200  # two schedule intervals of one hour

# The runbook's per-run fields, split by where they come from and how they aggregate over profiles.
MISMATCH_FIELDS = PER_RUN_FIELDS[:3]           # latest successful run; summed
PARITY_COUNT_FIELDS = PER_RUN_FIELDS[3:6]      # latest successful live run; summed
PARITY_MAX_FIELD = PER_RUN_FIELDS[6]           # reconciliationParityMaxMismatchNotionalUsd; max
PARITY_TOTAL_FIELD = PER_RUN_FIELDS[7]         # reconciliationParityTotalMismatchNotionalUsd; summed
WATCHDOG_FIELD = PER_RUN_FIELDS[8]             # reconciliationIntegrityWatchdogTriggered; any()
PARITY_FIELDS = PER_RUN_FIELDS[3:]
_RUN_COLUMN_OF = {"reconciliationMismatchCount": "mismatch_count",
                  "reconciliationMissingFromExchange": "missing_from_exchange",
                  "reconciliationMissingInDb": "missing_in_db"}

Now = datetime | Callable[[], datetime] | None


def max_age_from_env(env: Mapping[str, str] | None = None) -> int:
    """``RECON_HEALTH_MAX_AGE_SECONDS`` (default 7200), validated like the other flags."""
    env = os.environ if env is None else env
    raw = (env.get(MAX_AGE_ENV) or "").strip()
    if not raw:
        return DEFAULT_MAX_AGE_SECONDS
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{MAX_AGE_ENV}={raw!r} is not an integer; accepted: an integer >= 60") from None
    if value < 60:
        raise SettingsError(f"{MAX_AGE_ENV}={raw!r} is out of range; accepted: an integer >= 60")
    return value


def resolve_now(now: Now) -> pd.Timestamp:
    """``now`` may be None (wall clock), a datetime, or a zero-argument callable returning one."""
    value = now() if callable(now) else now
    return _ts(value if value is not None else datetime.now(UTC))


def _ts(value) -> pd.Timestamp | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return pd.to_datetime(value, utc=True, format="ISO8601")


def _iso(value: pd.Timestamp | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class RunRow:
    """One ``recon_runs`` row, as health needs it."""

    window_start: pd.Timestamp
    profile_id: str
    run_id: str | None
    status: str
    live: bool
    finished_at: pd.Timestamp
    parity_evaluated: bool
    health: dict
    error: str | None
    columns: dict  # mismatch_count, missing_from_exchange, missing_in_db (fallback for health JSON)

    def field(self, name: str):
        """A runbook field of this run, typed; the ``health`` JSON first, the count columns second."""
        value = self.health.get(name)
        if value is None:
            value = self.columns.get(_RUN_COLUMN_OF.get(name, ""), 0)
        if name == WATCHDOG_FIELD:
            return bool(value)
        if name in (PARITY_MAX_FIELD, PARITY_TOTAL_FIELD):
            return float(value or 0.0)
        return int(value or 0)


@dataclass
class ProfileStatus:
    profile_id: str
    trading_paused: bool
    open_pauses: list[str] = field(default_factory=list)
    latest: RunRow | None = None
    last_success: RunRow | None = None
    last_live_success: RunRow | None = None
    runs_by_status: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=lambda: {c: 0 for c in _RUN_COLUMN_OF.values()})
    mismatch_streak: int = 0
    pending_batches: int = 0
    blocked_batches: int = 0
    oldest_pending_at: pd.Timestamp | None = None
    lock_held_since: pd.Timestamp | None = None
    lock_held: bool | None = False  # None: the lock could not be inspected
    reasons: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.reasons

    def evaluate(self, now: pd.Timestamp, max_age_seconds: int) -> None:
        self.reasons = []
        if self.latest is None:
            self.reasons.append("no reconciliation run recorded")
            return
        if self.latest.status == "FAILED":
            self.reasons.append(f"latest run failed (window {_iso(self.latest.window_start)})")
        if self.last_success is None:
            self.reasons.append("no successful reconciliation run recorded")
        else:
            age = (now - self.last_success.finished_at).total_seconds()
            if age > max_age_seconds:
                self.reasons.append(f"last successful run finished {int(age)} s ago (> {max_age_seconds} s)")

    def runbook_fields(self) -> dict[str, Any]:
        """The runbook's names; None where no run of the kind the field comes from exists."""
        out: dict[str, Any] = {
            "reconciliationLoopHealthy": self.healthy,
            "reconciliationLastRun": _iso(self.latest.finished_at) if self.latest else None,
        }
        for name in MISMATCH_FIELDS:
            out[name] = self.last_success.field(name) if self.last_success else None
        for name in PARITY_FIELDS:
            out[name] = self.last_live_success.field(name) if self.last_live_success else None
        return out

    def to_json(self, now: pd.Timestamp) -> dict[str, Any]:
        out = self.runbook_fields()
        out.update({
            "unhealthyReasons": list(self.reasons),
            "lastStatus": self.latest.status if self.latest else None,
            "lastWindow": _iso(self.latest.window_start) if self.latest else None,
            "lastRunId": self.latest.run_id if self.latest else None,
            "lastError": self.latest.error if self.latest else None,
            "lastSuccess": _iso(self.last_success.finished_at) if self.last_success else None,
            "lastLiveSuccess": _iso(self.last_live_success.finished_at) if self.last_live_success else None,
            "parityEvaluated": self.last_live_success.parity_evaluated if self.last_live_success else None,
            "mismatchRunStreak": self.mismatch_streak,
            "tradingPaused": self.trading_paused,
            "openPauses": list(self.open_pauses),
            "pendingBatches": self.pending_batches,
            "blockedBatches": self.blocked_batches,
            "oldestPendingBatchAgeSeconds": _age(now, self.oldest_pending_at),
            "lockHeld": self.lock_held,
            "lockHeldSeconds": _age(now, self.lock_held_since),
            "runsByStatus": dict(sorted(self.runs_by_status.items())),
        })
        return out


def _age(now: pd.Timestamp, since: pd.Timestamp | None) -> float | None:
    return None if since is None else max(0.0, round((now - since).total_seconds(), 3))


@dataclass
class ReconStatus:
    profiles: dict[str, ProfileStatus]
    checked_at: pd.Timestamp
    max_age_seconds: int

    @property
    def healthy(self) -> bool:
        """All profiles healthy; a database without profiles is not a healthy reconciliation loop."""
        return bool(self.profiles) and all(p.healthy for p in self.profiles.values())

    def to_json(self) -> dict[str, Any]:
        per = {pid: p.runbook_fields() for pid, p in self.profiles.items()}
        last_runs = [f["reconciliationLastRun"] for f in per.values() if f["reconciliationLastRun"]]
        last = max((_ts(v) for v in last_runs), default=None)

        def values(name):
            return [f[name] for f in per.values() if f[name] is not None]

        out: dict[str, Any] = {
            "reconciliationLoopHealthy": self.healthy,
            "reconciliationLastRun": _iso(last),
        }
        for name in (*MISMATCH_FIELDS, *PARITY_COUNT_FIELDS):
            out[name] = int(sum(values(name)))
        out[PARITY_MAX_FIELD] = float(max(values(PARITY_MAX_FIELD), default=0.0))
        out[PARITY_TOTAL_FIELD] = float(sum(values(PARITY_TOTAL_FIELD)))
        out[WATCHDOG_FIELD] = any(values(WATCHDOG_FIELD))
        out["unhealthyProfiles"] = sorted(pid for pid, p in self.profiles.items() if not p.healthy)
        out["maxAgeSeconds"] = self.max_age_seconds
        out["checkedAt"] = _iso(self.checked_at)
        out["profiles"] = {pid: p.to_json(self.checked_at) for pid, p in self.profiles.items()}
        return out


# --- reading ---------------------------------------------------------------------------------------

_RUN_SELECT = ("window_start, profile_id, run_id, status, live, finished_at, parity_evaluated,"
               " mismatch_count, missing_from_exchange, missing_in_db, health, error")
# Fixed filters (never built from input): any run, successful runs, successful live runs.
_LATEST_FILTERS = {
    "latest": "1 = 1",
    "last_success": "status = 'SUCCESS'",
    "last_live_success": "status = 'SUCCESS' AND live = :live",
}
_LATEST_SQL = (
    "SELECT " + _RUN_SELECT + " FROM ("
    " SELECT " + _RUN_SELECT + ", ROW_NUMBER() OVER ("
    "   PARTITION BY profile_id ORDER BY finished_at DESC, window_start DESC) AS rn"
    " FROM recon_runs WHERE {where}) ranked WHERE rn = 1"
)
_TOTALS_SQL = (
    "SELECT profile_id, status, COUNT(*) AS n, SUM(mismatch_count) AS mismatch_count,"
    " SUM(missing_from_exchange) AS missing_from_exchange, SUM(missing_in_db) AS missing_in_db"
    " FROM recon_runs GROUP BY profile_id, status"
)
# Successful runs with findings since the profile's latest clean successful run.
_STREAK_SQL = (
    "SELECT r.profile_id, COUNT(*) AS n FROM recon_runs r"
    " WHERE r.status = 'SUCCESS' AND r.mismatch_count > 0 AND NOT EXISTS ("
    "   SELECT 1 FROM recon_runs c WHERE c.profile_id = r.profile_id AND c.status = 'SUCCESS'"
    "   AND c.mismatch_count = 0 AND c.finished_at > r.finished_at)"
    " GROUP BY r.profile_id"
)
_PAUSES_SQL = ("SELECT profile_id, source FROM trading_pauses WHERE resumed_at IS NULL"
               " ORDER BY profile_id, paused_at, pause_id")
_BATCHES_SQL = ("SELECT profile_id, status, COUNT(*) AS n, MIN(created_at) AS oldest FROM recon_batches"
                " WHERE status IN ('PENDING', 'BLOCKED') GROUP BY profile_id, status")


def _health_json(text) -> dict:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _run_row(row) -> RunRow:
    m = row._mapping
    return RunRow(
        window_start=_ts(m["window_start"]), profile_id=m["profile_id"], run_id=m["run_id"],
        status=m["status"], live=bool(m["live"]), finished_at=_ts(m["finished_at"]),
        parity_evaluated=bool(m["parity_evaluated"]), health=_health_json(m["health"]), error=m["error"],
        columns={c: int(m[c] or 0) for c in _RUN_COLUMN_OF.values()},
    )


def _read_locks(conn: Connection, profiles: dict[str, ProfileStatus], now: pd.Timestamp) -> None:
    """Who holds the reconciliation lock: advisory locks on Postgres, live lease rows on SQLite."""
    if conn.dialect.name == "postgresql":
        # pg_try_advisory_xact_lock(bigint k) shows as classid = high 32 bits, objid = low 32 bits.
        by_key = {}
        for pid in profiles:
            unsigned = lock_key(pid) & 0xFFFFFFFFFFFFFFFF
            by_key[(unsigned >> 32, unsigned & 0xFFFFFFFF)] = pid
        try:
            with conn.begin_nested():
                rows = conn.execute(sa.text(
                    "SELECT l.classid::bigint AS classid, l.objid::bigint AS objid, a.xact_start"
                    " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1")).fetchall()
        except sa.exc.DBAPIError as exc:
            log.warning("cannot inspect reconciliation locks: %s", type(exc).__name__)
            for p in profiles.values():
                p.lock_held = None
            return
        for row in rows:
            pid = by_key.get((int(row.classid), int(row.objid)))
            if pid is not None:
                profiles[pid].lock_held = True
                profiles[pid].lock_held_since = _ts(row.xact_start) or now
        return
    rows = conn.execute(sa.text("SELECT profile_id, acquired_at FROM recon_locks WHERE expires_at > :now"),
                        {"now": ts_param(conn, now)}).fetchall()
    for row in rows:
        if row.profile_id in profiles:
            profiles[row.profile_id].lock_held = True
            profiles[row.profile_id].lock_held_since = _ts(row.acquired_at)


def read_status_conn(conn: Connection, *, now: Now = None, max_age_seconds: int | None = None) -> ReconStatus:
    checked_at = resolve_now(now)
    max_age = max_age_from_env() if max_age_seconds is None else int(max_age_seconds)
    profiles = {
        row.profile_id: ProfileStatus(row.profile_id, bool(row.trading_paused))
        for row in conn.execute(sa.text("SELECT profile_id, trading_paused FROM profiles ORDER BY profile_id"))
    }
    for attr, where in _LATEST_FILTERS.items():
        params = {"live": True} if ":live" in where else {}
        for row in conn.execute(sa.text(_LATEST_SQL.format(where=where)), params):
            run = _run_row(row)
            if run.profile_id in profiles:
                setattr(profiles[run.profile_id], attr, run)
    for row in conn.execute(sa.text(_TOTALS_SQL)):
        p = profiles.get(row.profile_id)
        if p is None:
            continue
        p.runs_by_status[row.status] = int(row.n)
        if row.status == "SUCCESS":
            p.totals = {c: int(getattr(row, c) or 0) for c in _RUN_COLUMN_OF.values()}
    for row in conn.execute(sa.text(_STREAK_SQL)):
        if row.profile_id in profiles:
            profiles[row.profile_id].mismatch_streak = int(row.n)
    for row in conn.execute(sa.text(_PAUSES_SQL)):
        if row.profile_id in profiles:
            profiles[row.profile_id].open_pauses.append(row.source)
    for row in conn.execute(sa.text(_BATCHES_SQL)):
        p = profiles.get(row.profile_id)
        if p is None:
            continue
        if row.status == "PENDING":
            p.pending_batches, p.oldest_pending_at = int(row.n), _ts(row.oldest)
        else:
            p.blocked_batches = int(row.n)
    _read_locks(conn, profiles, checked_at)
    for p in profiles.values():
        p.evaluate(checked_at, max_age)
    return ReconStatus(profiles, checked_at, max_age)


def read_status(engine: Engine, *, now: Now = None, max_age_seconds: int | None = None) -> ReconStatus:
    """The status of every profile, read in one connection."""
    with engine.connect() as conn:
        return read_status_conn(conn, now=now, max_age_seconds=max_age_seconds)


def health_report(engine: Engine, *, now: Now = None, max_age_seconds: int | None = None) -> dict[str, Any]:
    """The ``/internal/health`` document."""
    return read_status(engine, now=now, max_age_seconds=max_age_seconds).to_json()
