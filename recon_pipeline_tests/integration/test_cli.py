"""The operator's command line against the real Postgres and the emulator, as a shell would call it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from recon_pipeline.cli import main
from recon_pipeline_tests.integration.conftest import DEMO_WINDOW

pytestmark = pytest.mark.slow
WINDOW = "2026-11-30T09:00:00Z"


@pytest.fixture
def cli_env(demo_world, monkeypatch):
    monkeypatch.setenv("RECON_DATABASE_URL", demo_world.url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return demo_world


def test_reconcile_exits_zero_and_prints_counts(cli_env, capsys):
    assert main(["reconcile", "--window", WINDOW, "--profile", "alpha", "--apply"]) == 0
    out = capsys.readouterr().out
    assert "profile=alpha" in out and "status=SUCCESS" in out and "batch_status=APPLIED" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reconcile", "--window", "yesterday", "--profile", "alpha"], "not an ISO hour"),
        (["reconcile", "--window", "2026-11-30T09:30:00Z", "--profile", "alpha"], "does not start on the hour"),
        (["reconcile", "--window", WINDOW, "--profile", "nobody"], "'nobody' is not in the profiles table"),
        (["backfill", "--from", "2026-11-30T09:00:00Z", "--to", "2026-11-30T08:00:00Z"], "range is empty"),
        (["backfill", "--from", WINDOW, "--to", WINDOW, "--profile", "ghost"], "profiles not in the profiles table"),
    ],
    ids=["bad-window", "not-on-the-hour", "unknown-profile", "empty-range", "unknown-backfill-profile"],
)
def test_bad_input_is_one_clear_line_and_exit_2(cli_env, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_flag_names_the_variable(cli_env, monkeypatch, capsys):
    monkeypatch.setenv("RECON_POSITION_PARITY_CONFIRMATIONS", "zero")
    assert main(["reconcile", "--window", WINDOW, "--profile", "alpha"]) != 0
    captured = capsys.readouterr()
    assert "RECON_POSITION_PARITY_CONFIRMATIONS" in captured.err + captured.out


def test_exchange_fault_fails_with_reason_and_stores_no_batch(cli_env, capsys):
    cli_env.server.add_fault(account="main", path="/fapi/v1/userTrades", mode="http_503")
    assert main(["reconcile", "--window", WINDOW, "--profile", "alpha", "--apply"]) == 1
    err = capsys.readouterr().err
    assert "reconcile failed" in err and "account=main" in err and "userTrades" in err
    assert cli_env.table("recon_batches").empty
    runs = cli_env.table("recon_runs")
    assert runs["status"].tolist() == ["FAILED"] and "userTrades" in runs["error"].item()


def test_backfill_three_hours_two_profiles_in_order(cli_env, capsys):
    assert main(["backfill", "--from", "2026-11-30T07:00:00Z", "--to", WINDOW,
                 "--profile", "alpha", "--profile", "beta"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("window=")]
    assert [line.split()[1] for line in lines] == ["profile=alpha"] * 3 + ["profile=beta"] * 3
    assert [line.split()[0] for line in lines[:3]] == [
        "window=2026-11-30T07:00:00+00:00", "window=2026-11-30T08:00:00+00:00", "window=2026-11-30T09:00:00+00:00"]
    runs = cli_env.table("recon_runs", "profile_id, window_start")
    assert len(runs) == 6 and set(runs["status"]) == {"SUCCESS"}
    assert runs.groupby("profile_id")["window_start"].is_monotonic_increasing.all()
    # Only the live window evaluates parity.
    live = runs[runs["window_start"] == DEMO_WINDOW]
    assert live["parity_evaluated"].all() and not runs[runs["window_start"] < DEMO_WINDOW]["parity_evaluated"].any()


def test_db_upgrade_twice_is_a_no_op(empty_pg_url, capsys):
    assert main(["db", "upgrade", "--url", empty_pg_url]) == 0
    assert "applied 001_trading_tables.sql, 002_recon_tables.sql, 003_snapshot_read_indexes.sql" in \
        capsys.readouterr().out
    assert main(["db", "upgrade", "--url", empty_pg_url]) == 0
    assert "already up to date" in capsys.readouterr().out
    engine = sa.create_engine(empty_pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM recon_schema_migrations")).scalar() == 3
    engine.dispose()
