"""The per-profile reconciliation lock (runbook: "confirm the reconciliation lock is available").

Postgres: a transaction-level advisory lock, ``pg_try_advisory_xact_lock``: it is released by the
commit or rollback that ends the apply transaction, so a killed process can never leave it held.
SQLite (the embedded demo default): a lease row in ``recon_locks`` with an expiry, taken and removed
inside the same transaction; SQLite's single writer serialises the rest.
A busy lock is never waited on: the caller skips with a reason and the sensor retries later.
"""

from __future__ import annotations

import hashlib
import os
import socket
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recon_pipeline.db.read import ts_param
from recon_pipeline.db.recon_store import utcnow


class LockBusy(RuntimeError):
    """Another session holds the profile's reconciliation lock."""


def lock_key(profile_id: str) -> int:
    """A stable signed 64-bit advisory-lock key for the profile."""
    digest = hashlib.sha256(f"recon_pipeline:{profile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def acquire(conn: Connection, profile_id: str, holder: str | None = None, lease_seconds: int = 600) -> None:
    """Take the lock for the rest of ``conn``'s transaction, or raise :class:`LockBusy`."""
    if conn.dialect.name == "postgresql":
        got = conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(profile_id)}).scalar()
        if not got:
            raise LockBusy(f"reconciliation lock of profile {profile_id!r} is held by another session")
        return
    now = utcnow()
    result = conn.execute(sa.text(
        "INSERT INTO recon_locks (profile_id, holder, acquired_at, expires_at) VALUES (:p, :h, :a, :e) "
        "ON CONFLICT (profile_id) DO UPDATE SET holder = excluded.holder, acquired_at = excluded.acquired_at, "
        "expires_at = excluded.expires_at WHERE recon_locks.expires_at < :a"),
        {"p": profile_id, "h": holder or default_holder(), "a": ts_param(conn, now),
         "e": ts_param(conn, now + timedelta(seconds=lease_seconds))})
    if result.rowcount != 1:
        raise LockBusy(f"reconciliation lock of profile {profile_id!r} is held (lease row in recon_locks)")


def release(conn: Connection, profile_id: str) -> None:
    """End the SQLite lease within the same transaction (Postgres releases at commit by itself)."""
    if conn.dialect.name != "postgresql":
        conn.execute(sa.text("DELETE FROM recon_locks WHERE profile_id = :p"), {"p": profile_id})


def holders(conn: Connection) -> list[dict]:
    """Who holds reconciliation locks now (for health and the runbook's 'release a stuck lock')."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(sa.text(
            "SELECT l.objid, l.classid, a.pid, a.application_name, a.xact_start FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"))
        return [dict(r._mapping) for r in rows]
    rows = conn.execute(sa.text("SELECT profile_id, holder, acquired_at, expires_at FROM recon_locks"))
    return [dict(r._mapping) for r in rows]
