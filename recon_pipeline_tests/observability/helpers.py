"""Rows written straight into the tables health reads, and a tiny urllib client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from recon_pipeline.db.read import ts_param

PARITY_KEYS = ("reconciliationParityMismatchTrades", "reconciliationParityQuarantinedTrades",
               "reconciliationParityAutoClosedTrades", "reconciliationParityMaxMismatchNotionalUsd",
               "reconciliationParityTotalMismatchNotionalUsd", "reconciliationIntegrityWatchdogTriggered")


def t(hhmm: str, day: int = 30) -> datetime:
    hour, minute = (int(x) for x in hhmm.split(":"))
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def add_profile(conn, pid: str, paused: bool = False) -> None:
    conn.execute(sa.text(
        "INSERT INTO profiles (profile_id, exchange, account, market_type, sub_tag, allocated_capital_usd,"
        " trading_paused) VALUES (:p, 'binance', 'main', 'spot', :p, 10000, :paused)"),
        {"p": pid, "paused": paused})


def add_run(conn, pid: str, window: datetime, finished: datetime, *, status: str = "SUCCESS",
            live: bool = True, mismatch: int = 0, mfe: int = 0, mid: int = 0, parity: dict | None = None,
            error: str | None = None) -> None:
    health = {"reconciliationMismatchCount": mismatch, "reconciliationMissingFromExchange": mfe,
              "reconciliationMissingInDb": mid, "live": live, "parityEvaluated": live}
    health.update({k: 0 for k in PARITY_KEYS[:3]})
    health.update({PARITY_KEYS[3]: 0.0, PARITY_KEYS[4]: 0.0, PARITY_KEYS[5]: False})
    health.update(parity or {})
    if status != "SUCCESS":
        health = {}
    conn.execute(sa.text(
        "INSERT INTO recon_runs (window_start, profile_id, run_id, status, live, evaluated_at, finished_at,"
        " parity_evaluated, clean, mismatch_count, missing_from_exchange, missing_in_db, health, error)"
        " VALUES (:w, :p, :r, :s, :live, :e, :f, :pe, :clean, :m, :mfe, :mid, :h, :err)"
        " ON CONFLICT (window_start, profile_id) DO UPDATE SET status = excluded.status,"
        " finished_at = excluded.finished_at, health = excluded.health, error = excluded.error,"
        " mismatch_count = excluded.mismatch_count, missing_from_exchange = excluded.missing_from_exchange,"
        " missing_in_db = excluded.missing_in_db, live = excluded.live, run_id = excluded.run_id"),
        {"w": ts_param(conn, window), "p": pid, "r": f"run-{pid}-{window:%H%M}-{status}", "s": status,
         "live": live, "e": ts_param(conn, finished), "f": ts_param(conn, finished), "pe": live,
         "clean": mismatch == 0, "m": mismatch if status == "SUCCESS" else 0,
         "mfe": mfe if status == "SUCCESS" else 0, "mid": mid if status == "SUCCESS" else 0,
         "h": json.dumps(health), "err": error})


def add_batch(conn, batch_id: str, pid: str, status: str, created: datetime) -> None:
    conn.execute(sa.text(
        "INSERT INTO recon_batches (batch_id, window_start, profile_id, status, created_at)"
        " VALUES (:b, :w, :p, :s, :c)"),
        {"b": batch_id, "w": ts_param(conn, created), "p": pid, "s": status, "c": ts_param(conn, created)})


def add_pause(conn, pause_id: str, pid: str, source: str, paused_at: datetime,
              resumed_at: datetime | None = None) -> None:
    conn.execute(sa.text(
        "INSERT INTO trading_pauses (pause_id, profile_id, source, reason, paused_at, resumed_at)"
        " VALUES (:i, :p, :s, 'test', :a, :r)"),
        {"i": pause_id, "p": pid, "s": source, "a": ts_param(conn, paused_at),
         "r": ts_param(conn, resumed_at)})


def request(url: str, method: str = "GET") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def get_json(url: str) -> tuple[int, dict]:
    code, _, body = request(url)
    return code, json.loads(body)


def samples(body: bytes) -> dict[tuple[str, str], float]:
    """{(sample name, profile label): value} of a Prometheus exposition."""
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, s.labels.get("profile", ""))] = s.value
    return out
