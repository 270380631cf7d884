"""/internal/health and /metrics over HTTP, read from recon_runs (real Postgres; one SQLite test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from recon_pipeline.apply.lock import lock_key
from recon_pipeline.cli import main
from recon_pipeline.db.engine import make_engine
from recon_pipeline.db.migrate import upgrade
from recon_pipeline.db.read import ts_param
from recon_pipeline.observability.server import HealthServer
from recon_pipeline_tests.fixtures.postgres import _admin_engine

from .helpers import add_batch, add_pause, add_profile, add_run, get_json, request, samples, t

H, M = "/internal/health", "/metrics"
PASSWORD = "S3cr3t-pw-Zq9"


def _two_profiles(engine) -> None:
    """alpha: three successful runs (latest is a non-live backfill), paused by the watchdog, batches.
    beta: a clean live run then a live run with findings."""
    with engine.begin() as conn:
        add_profile(conn, "alpha", paused=True)
        add_profile(conn, "beta")
        add_run(conn, "alpha", t("07:00"), t("07:05"), mismatch=3, mfe=1, mid=2)
        add_run(conn, "alpha", t("08:00"), t("08:05"), mismatch=2, mfe=0, mid=1, parity={
            "reconciliationParityMismatchTrades": 2, "reconciliationParityQuarantinedTrades": 1,
            "reconciliationParityAutoClosedTrades": 1, "reconciliationParityMaxMismatchNotionalUsd": 1500.5,
            "reconciliationParityTotalMismatchNotionalUsd": 2500.25,
            "reconciliationIntegrityWatchdogTriggered": True})
        add_run(conn, "alpha", t("09:00"), t("09:05"), live=False, mismatch=1, mfe=1, mid=0)
        add_run(conn, "beta", t("08:00"), t("08:06"), parity={
            "reconciliationParityMaxMismatchNotionalUsd": 100.0,
            "reconciliationParityTotalMismatchNotionalUsd": 100.0})
        add_run(conn, "beta", t("09:00"), t("09:07"), mismatch=4, mfe=2, mid=2, parity={
            "reconciliationParityMismatchTrades": 1, "reconciliationParityMaxMismatchNotionalUsd": 400.0,
            "reconciliationParityTotalMismatchNotionalUsd": 400.0})
        add_batch(conn, "b1", "alpha", "PENDING", t("09:06"))
        add_batch(conn, "b2", "alpha", "PENDING", t("08:06"))
        add_batch(conn, "b3", "alpha", "BLOCKED", t("07:06"))
        add_batch(conn, "b4", "alpha", "APPLIED", t("06:06"))
        add_batch(conn, "b5", "beta", "APPLIED", t("09:08"))
        add_pause(conn, "p1", "alpha", "parity_watchdog", t("08:05"))
        add_pause(conn, "p2", "beta", "manual", t("06:00"), resumed_at=t("06:30"))


def test_health_and_metrics_serve_the_runs_in_the_database(pg_engine):
    _two_profiles(pg_engine)
    with pg_engine.connect() as holder, HealthServer(pg_engine, now=t("09:30")) as server:
        # another session applying alpha's batch holds alpha's reconciliation lock
        holder.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key("alpha")})
        code, headers, body = request(server.url + H)
        assert code == 200 and headers["Content-Type"] == "application/json"
        doc = json.loads(body)
        code, headers, metrics_body = request(server.url + M)
        assert code == 200 and headers["Content-Type"].startswith("text/plain; version=")
        holder.rollback()
        assert get_json(server.url + H)[1]["profiles"]["alpha"]["lockHeld"] is False

        # counters grow as runs accumulate; the latest-run gauge follows the new run
        with pg_engine.begin() as conn:
            add_run(conn, "alpha", t("10:00"), t("10:05"), mismatch=5, mfe=2, mid=3)
        after = samples(request(server.url + M)[2])

    assert doc["reconciliationLoopHealthy"] is True
    assert doc["checkedAt"] == "2026-11-30T09:30:00+00:00"
    assert doc["reconciliationLastRun"] == "2026-11-30T09:07:00+00:00"
    # latest successful run per profile: alpha 09:00 (backfill), beta 09:00
    assert doc["reconciliationMismatchCount"] == 1 + 4
    assert doc["reconciliationMissingFromExchange"] == 1 + 2
    assert doc["reconciliationMissingInDb"] == 0 + 2
    # parity: latest successful LIVE run per profile: alpha 08:00, beta 09:00
    assert doc["reconciliationParityMismatchTrades"] == 2 + 1
    assert doc["reconciliationParityQuarantinedTrades"] == 1
    assert doc["reconciliationParityAutoClosedTrades"] == 1
    assert doc["reconciliationParityMaxMismatchNotionalUsd"] == 1500.5
    assert doc["reconciliationParityTotalMismatchNotionalUsd"] == 2500.25 + 400.0
    assert doc["reconciliationIntegrityWatchdogTriggered"] is True
    assert doc["unhealthyProfiles"] == []

    alpha, beta = doc["profiles"]["alpha"], doc["profiles"]["beta"]
    assert alpha["reconciliationLoopHealthy"] is True
    assert alpha["reconciliationLastRun"] == "2026-11-30T09:05:00+00:00"
    assert alpha["lastWindow"] == "2026-11-30T09:00:00+00:00"
    assert alpha["lastLiveSuccess"] == "2026-11-30T08:05:00+00:00"
    assert alpha["reconciliationMismatchCount"] == 1
    assert alpha["reconciliationIntegrityWatchdogTriggered"] is True
    assert alpha["tradingPaused"] is True and alpha["openPauses"] == ["parity_watchdog"]
    assert alpha["pendingBatches"] == 2 and alpha["blockedBatches"] == 1
    assert alpha["oldestPendingBatchAgeSeconds"] == 84 * 60
    assert alpha["mismatchRunStreak"] == 3 and beta["mismatchRunStreak"] == 1
    assert alpha["lastError"] is None
    assert alpha["lockHeld"] is True and beta["lockHeld"] is False
    assert beta["reconciliationMismatchCount"] == 4 and beta["reconciliationMissingInDb"] == 2
    assert beta["reconciliationParityMaxMismatchNotionalUsd"] == 400.0
    assert beta["tradingPaused"] is False and beta["openPauses"] == []
    assert beta["pendingBatches"] == 0 and beta["oldestPendingBatchAgeSeconds"] is None

    s = samples(metrics_body)
    # counters: summed over every SUCCESS row
    assert s[("reconciliation_mismatch_total", "alpha")] == 3 + 2 + 1
    assert s[("reconciliation_mismatch_total", "beta")] == 0 + 4
    assert s[("reconciliation_missing_from_exchange_total", "alpha")] == 2
    assert s[("reconciliation_missing_from_exchange_total", "beta")] == 2
    assert s[("reconciliation_missing_in_db_total", "alpha")] == 3
    assert s[("reconciliation_missing_in_db_total", "beta")] == 2
    # gauges of the latest (live) successful run
    assert s[("reconciliation_mismatch_count", "alpha")] == 1
    assert s[("reconciliation_mismatch_count", "beta")] == 4
    assert s[("reconciliation_loop_healthy", "alpha")] == 1
    assert s[("reconciliation_last_run_timestamp_seconds", "beta")] == t("09:07").timestamp()
    assert s[("reconciliation_parity_mismatch_trades", "alpha")] == 2
    assert s[("reconciliation_parity_quarantined_trades", "alpha")] == 1
    assert s[("reconciliation_parity_auto_closed_trades", "alpha")] == 1
    assert s[("reconciliation_parity_max_mismatch_notional_usd", "alpha")] == 1500.5
    assert s[("reconciliation_parity_total_mismatch_notional_usd", "beta")] == 400.0
    assert s[("reconciliation_integrity_watchdog_triggered", "alpha")] == 1
    assert s[("reconciliation_integrity_watchdog_triggered", "beta")] == 0
    assert s[("reconciliation_pending_batches", "alpha")] == 2
    assert s[("reconciliation_blocked_batches", "alpha")] == 1
    assert s[("reconciliation_mismatch_consecutive_runs", "alpha")] == 3
    assert s[("reconciliation_open_pauses", "alpha")] == 1
    assert s[("reconciliation_lock_held", "alpha")] == 1 and s[("reconciliation_lock_held", "beta")] == 0
    assert s[("reconciliation_runs_total", "alpha")] == 3

    assert after[("reconciliation_mismatch_total", "alpha")] == 6 + 5
    assert after[("reconciliation_missing_in_db_total", "alpha")] == 3 + 3
    assert after[("reconciliation_mismatch_total", "beta")] == 4
    assert after[("reconciliation_mismatch_count", "alpha")] == 5
    assert after[("reconciliation_mismatch_consecutive_runs", "alpha")] == 4


def test_unhealthy_when_runs_stop_or_fail_and_healthy_after_a_later_success(pg_engine):
    clock = {"now": t("10:00")}
    with pg_engine.begin() as conn:
        add_profile(conn, "alpha")
        add_run(conn, "alpha", t("09:00"), t("09:05"), mismatch=2)
    with HealthServer(pg_engine, now=lambda: clock["now"]) as server:
        code, doc = get_json(server.url + H)
        assert code == 200 and doc["reconciliationLoopHealthy"] is True

        clock["now"] = t("11:06")  # > 09:05 + 2 h: the loop stopped
        doc = get_json(server.url + H)[1]
        alpha = doc["profiles"]["alpha"]
        assert doc["reconciliationLoopHealthy"] is False and doc["unhealthyProfiles"] == ["alpha"]
        assert alpha["reconciliationLoopHealthy"] is False
        assert "last successful run finished 7260 s ago" in alpha["unhealthyReasons"][0]
        assert samples(request(server.url + M)[2])[("reconciliation_loop_healthy", "alpha")] == 0

        with pg_engine.begin() as conn:
            add_run(conn, "alpha", t("10:00"), t("10:05"), status="FAILED",
                    error="fetch_my_trades: DDoSProtection: binance 429 Too Many Requests")
        clock["now"] = t("10:10")  # fresh enough, but the latest run failed
        alpha = get_json(server.url + H)[1]["profiles"]["alpha"]
        assert alpha["reconciliationLoopHealthy"] is False
        assert alpha["lastStatus"] == "FAILED"
        assert alpha["lastError"] == "fetch_my_trades: DDoSProtection: binance 429 Too Many Requests"
        assert alpha["reconciliationLastRun"] == "2026-11-30T10:05:00+00:00"
        assert alpha["reconciliationMismatchCount"] == 2  # still from the 09:00 success
        assert alpha["unhealthyReasons"] == ["latest run failed (window 2026-11-30T10:00:00+00:00)"]
        s = samples(request(server.url + M)[2])
        assert s[("reconciliation_loop_healthy", "alpha")] == 0
        assert s[("reconciliation_last_run_failed", "alpha")] == 1

        with pg_engine.begin() as conn:
            add_run(conn, "alpha", t("11:00"), t("11:05"), mismatch=0)
        clock["now"] = t("11:10")
        doc = get_json(server.url + H)[1]
        alpha = doc["profiles"]["alpha"]
        assert doc["reconciliationLoopHealthy"] is True
        assert alpha["lastError"] is None and alpha["unhealthyReasons"] == []
        assert alpha["reconciliationMismatchCount"] == 0 and alpha["mismatchRunStreak"] == 0
        assert samples(request(server.url + M)[2])[("reconciliation_loop_healthy", "alpha")] == 1


def test_profile_without_runs_is_unhealthy_and_max_age_is_configurable(pg_engine):
    with pg_engine.begin() as conn:
        add_profile(conn, "alpha")
        add_profile(conn, "idle")
        add_run(conn, "alpha", t("09:00"), t("09:05"))
    with HealthServer(pg_engine, now=t("09:40"), max_age_seconds=1800) as server:
        doc = get_json(server.url + H)[1]
        s = samples(request(server.url + M)[2])
    assert doc["reconciliationLoopHealthy"] is False and doc["maxAgeSeconds"] == 1800
    assert doc["unhealthyProfiles"] == ["alpha", "idle"]  # alpha: 35 min > 30 min
    idle = doc["profiles"]["idle"]
    assert idle["unhealthyReasons"] == ["no reconciliation run recorded"]
    assert idle["reconciliationLastRun"] is None and idle["reconciliationMismatchCount"] is None
    assert s[("reconciliation_loop_healthy", "idle")] == 0
    assert ("reconciliation_last_run_timestamp_seconds", "idle") not in s
    assert s[("reconciliation_mismatch_total", "idle")] == 0


def test_methods_other_than_get_and_head_are_405_and_unknown_paths_404(pg_engine):
    with HealthServer(pg_engine) as server:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for path in (H, M, "/nowhere"):
                code, headers, _ = request(server.url + path, method)
                assert code == 405, (method, path)
                assert headers["Allow"] == "GET, HEAD"
        code, headers, body = request(server.url + H, "HEAD")
        assert code == 200 and body == b"" and int(headers["Content-Length"]) > 0
        assert request(server.url + "/nowhere")[0] == 404
        assert request(server.url + "/internal")[0] == 404
        assert request(server.url + H + "?pretty=1")[0] == 200


def test_db_outage_is_503_and_the_server_recovers(pg_url, pg_template):
    engine = make_engine(pg_url)
    name = sa.engine.make_url(pg_url).database
    admin = _admin_engine()
    try:
        with engine.begin() as conn:
            add_profile(conn, "alpha")
        with HealthServer(engine) as server:
            assert request(server.url + H)[0] == 200
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            code, headers, body = request(server.url + H)
            assert code == 503 and headers["Content-Type"] == "application/json"
            err = json.loads(body)
            assert err["error"] == "database unavailable" and err["type"] == "OperationalError"
            assert name in err["detail"]  # "database ... does not exist"
            assert request(server.url + M)[0] == 503
            assert request(server.url + "/nowhere")[0] == 404  # still serving
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
            assert request(server.url + H)[0] == 200
    finally:
        engine.dispose()
        admin.dispose()


def test_no_response_carries_the_password(pg_url, capsys):
    down = make_engine(f"postgresql+psycopg2://recon:{PASSWORD}@127.0.0.1:1/recon")
    try:
        with HealthServer(down) as server:
            for path in (H, M):
                code, _, body = request(server.url + path)
                assert code == 503
                assert PASSWORD.encode() not in body
                assert json.loads(body)["database"] == "postgresql+psycopg2://recon:***@127.0.0.1:1/recon"
    finally:
        down.dispose()
    assert main(["health", "--url", f"postgresql://recon:{PASSWORD}@127.0.0.1:1/recon"]) == 1
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err and "recon:***@127.0.0.1:1" in out.err

    # Trust auth ignores the password, so a URL with one reaches the real database.
    url = sa.engine.make_url(pg_url).set(password=PASSWORD).render_as_string(hide_password=False)
    up = make_engine(url)
    try:
        with up.begin() as conn:
            add_profile(conn, "alpha")
            add_run(conn, "alpha", t("09:00"), t("09:05"), status="FAILED", error="boom")
        with HealthServer(up) as server:
            for path in (H, M, "/nowhere"):
                code, headers, body = request(server.url + path)
                assert code in (200, 404) and PASSWORD.encode() not in body
                assert PASSWORD not in json.dumps(headers)
    finally:
        up.dispose()


def test_sqlite_file_database(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'trading.db'}")
    upgrade(engine)
    try:
        _two_profiles(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO recon_locks (profile_id, holder, acquired_at, expires_at)"
                                 " VALUES ('beta', 'host:1', :a, :e)"),
                         {"a": ts_param(conn, t("09:20")), "e": ts_param(conn, t("09:40"))})
        with HealthServer(engine, now=t("09:30")) as server:
            doc = get_json(server.url + H)[1]
            s = samples(request(server.url + M)[2])
    finally:
        engine.dispose()
    assert doc["reconciliationLoopHealthy"] is True
    assert doc["reconciliationMismatchCount"] == 5
    assert doc["reconciliationLastRun"] == "2026-11-30T09:07:00+00:00"
    assert doc["reconciliationParityTotalMismatchNotionalUsd"] == 2900.25
    assert doc["reconciliationIntegrityWatchdogTriggered"] is True
    assert doc["profiles"]["alpha"]["pendingBatches"] == 2
    assert doc["profiles"]["alpha"]["openPauses"] == ["parity_watchdog"]
    assert doc["profiles"]["alpha"]["mismatchRunStreak"] == 3
    assert doc["profiles"]["beta"]["lockHeld"] is True and doc["profiles"]["beta"]["lockHeldSeconds"] == 600
    assert s[("reconciliation_mismatch_total", "alpha")] == 6
    assert s[("reconciliation_lock_held_seconds", "beta")] == 600


def test_cli_prints_health_once_or_serves_it(pg_url, capsys, monkeypatch):
    assert main(["health", "--url", pg_url]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["profiles"] == {}
    assert doc["reconciliationLoopHealthy"] is False  # no profiles: nothing is being reconciled
    with monkeypatch.context() as env:
        env.setenv("RECON_HEALTH_MAX_AGE_SECONDS", "soon")
        assert main(["health", "--url", pg_url]) == 2
        assert "RECON_HEALTH_MAX_AGE_SECONDS" in capsys.readouterr().err

    engine = make_engine(pg_url)
    with engine.begin() as conn:
        add_profile(conn, "alpha")
        add_run(conn, "alpha", t("09:00"), t("09:05"), mismatch=2)
    engine.dispose()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recon_pipeline.cli", "health", "--serve", "--port", "0", "--url", pg_url],
        stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "serving http://127.0.0.1:" in line, line
        base = line.split("serving ", 1)[1].split(H, 1)[0]
        code, doc = get_json(base + H)
        assert code == 200 and doc["profiles"]["alpha"]["reconciliationMismatchCount"] == 2
        assert samples(request(base + M)[2])[("reconciliation_mismatch_total", "alpha")] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("value", ["59", "-1", "1.5"])
def test_max_age_validation(value):
    from recon_pipeline.observability.status import max_age_from_env
    from recon_pipeline.settings import SettingsError

    with pytest.raises(SettingsError, match="RECON_HEALTH_MAX_AGE_SECONDS"):
        max_age_from_env({"RECON_HEALTH_MAX_AGE_SECONDS": value})
    assert max_age_from_env({}) == 7200
