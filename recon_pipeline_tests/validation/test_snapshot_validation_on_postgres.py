"""Snapshot validation through the real Dagster job, Postgres and ccxt against the emulator.

The demo world plus: a bad DB slice (entry_qty NaN, seeded with SQL), an exchange order whose client
id Binance could not have accepted (served by the emulator on the ghost's symbol) and a fill served
twice with different contents (injected behind the fetcher: the emulator's loader refuses duplicate
ids). The bad rows are BAD_ROW findings, the rest of the window is reconciled, and the sub_tag ghost
on the tainted symbol is QUARANTINEd instead of closed at mark. A structural failure (the exchange
serving two positions for one symbol and side) fails the run and stores no batch.
"""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import instance_for_test

from recon_pipeline import schemas
from recon_pipeline.db.seed import seed_file
from recon_pipeline.demo.run import SCENARIO, TRADING_DB
from recon_pipeline.exchange import fetch
from recon_pipeline_tests.fixtures.emulator import make_order
from recon_pipeline_tests.integration.conftest import World

pytestmark = pytest.mark.slow

BAD_CLIENT_ID = "gam-x-T2001-" + "z" * 30  # 42 characters: over Binance's 36


def _scenario(mutate) -> dict:
    scenario = json.loads(SCENARIO.read_text())
    mutate(scenario["accounts"]["main"])
    return scenario


@pytest.fixture
def world(pg_engine, pg_url, emulator, exchange_env):
    def start(mutate=lambda account: None) -> World:
        seed_file(pg_engine, TRADING_DB)
        server = emulator(_scenario(mutate))
        exchange_env(server)
        return server

    with instance_for_test() as instance:
        yield lambda mutate=lambda a: None: World(pg_url, pg_engine, start(mutate), instance)


def _add_bad_order(account: dict) -> None:
    account["orders"].append(make_order(2099, "2026-11-30T09:30:00Z", symbol="SOL/USDT:USDT", side="sell",
                                        client_order_id=BAD_CLIENT_ID, amount=10, status="canceled"))


def test_bad_rows_are_reported_and_the_rest_of_the_window_is_reconciled(world, monkeypatch):
    w = world(_add_bad_order)
    with w.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO trade_history (trade_id, profile_id, symbol, side, status, entry_qty, entry_price,"
            " entry_time, entry_client_order_id, exit_qty, updated_at) VALUES ('T1099', 'alpha',"
            " 'BTC/USDT:USDT', 'long', 'OPEN', 'NaN', 60000, '2026-11-30T08:30:00Z', 'alpha-e-T1099', 0,"
            " '2026-11-30T08:30:01Z')"))

    real_fetch_activity = fetch.fetch_activity

    def fills_with_conflicting_copy(*args, **kwargs):
        fills, orders = real_fetch_activity(*args, **kwargs)
        copy_ = fills[fills["fill_id"] == "900001"].assign(qty=9.0)  # the same fill id, another qty
        return schemas.conform(pd.concat([fills, copy_], ignore_index=True), schemas.EXCHANGE_FILLS), orders

    monkeypatch.setattr(fetch, "fetch_activity", fills_with_conflicting_copy)
    outcome = w.reconcile("gamma")
    assert outcome.success, outcome.error

    findings = w.table("recon_findings")
    bad = findings[findings["kind"] == "BAD_ROW"]
    assert sorted(bad["reason"]) == ["BAD_CLIENT_ORDER_ID", "DUPLICATE_FILL_CONFLICT", "DUPLICATE_FILL_CONFLICT",
                                     "NON_FINITE_QTY"]
    db_row = bad[bad["reason"] == "NON_FINITE_QTY"].iloc[0]
    assert (db_row["trade_id"], db_row["symbol"]) == ("T1099", "BTC/USDT:USDT")
    assert "T1099" in db_row["detail"] and "alpha" in db_row["detail"]
    order_row = bad[bad["reason"] == "BAD_CLIENT_ORDER_ID"].iloc[0]
    assert (order_row["exchange_order_id"], order_row["client_order_id"]) == ("2099", BAD_CLIENT_ID)
    assert set(bad.loc[bad["reason"] == "DUPLICATE_FILL_CONFLICT", "fill_ids"]) == {"900001"}

    # the rest of the window is still reconciled: every other expected finding and correction is there
    kinds = findings["kind"].value_counts().to_dict()
    assert {k: kinds.get(k) for k in ("GHOST_SLICE", "WATCHDOG_TRIGGERED", "POSITION_MISMATCH",
                                      "RESERVATION_MISMATCH")} == {
        "GHOST_SLICE": 2, "WATCHDOG_TRIGGERED": 1, "POSITION_MISMATCH": 2, "RESERVATION_MISMATCH": 1}
    corrections = w.table("recon_corrections")
    actions = corrections.groupby("action")["target_id"].apply(sorted).to_dict()
    # the sub_tag ghost T2001 would be closed at mark; its symbol has bad exchange rows: QUARANTINE
    assert actions["QUARANTINE"] == ["T2001", "T2002"]
    assert "SYNTHETIC_EXIT" not in actions
    assert len(actions["PAUSE_TRADING"]) == 1
    evidence = json.loads(corrections.loc[corrections["target_id"] == "T2001", "evidence"].iloc[0])
    assert evidence["reason"] == "no_go_exit_evidence"
    assert outcome.batch["status"] == "PENDING"


def test_structural_failure_fails_the_run_and_stores_no_batch(world):
    def duplicate_position(account: dict) -> None:
        account["positions"].append(copy.deepcopy(account["positions"][0]))  # BTC/USDT:USDT long, twice

    w = world(duplicate_position)
    outcome = w.reconcile("alpha")
    assert not outcome.success
    assert outcome.error.startswith("snapshot_structure: "), outcome.error
    assert "exchange_positions_structure" in outcome.error
    assert "expect_compound_columns_to_be_unique" in outcome.error
    assert "BTC/USDT:USDT" in outcome.error
    assert outcome.batch == {}
    assert w.table("recon_batches").empty and w.table("recon_corrections").empty
    assert w.table("recon_findings").empty


def _check_evaluations(instance, run_id: str) -> dict[tuple[str, str], bool]:
    from dagster import DagsterEventType

    out = {}
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        data = record.dagster_event.event_specific_data
        out[(data.asset_key.to_user_string(), data.check_name)] = data.passed
    return out


def test_a_structural_failure_is_named_even_when_the_broken_db_frame_breaks_the_row_rules_first(world,
                                                                                              monkeypatch):
    """The seven structure checks run as one suite after the fetch; a DB frame without its status
    column would make the row rules raise KeyError first. The run must still fail with the structure
    report of that frame, recorded as its failed blocking check, and store nothing."""
    from recon_pipeline.db import read

    real_read = read.read_trade_history
    monkeypatch.setattr(read, "read_trade_history", lambda *a, **k: real_read(*a, **k).drop(columns=["status"]))
    w = world()
    outcome = w.reconcile("alpha")
    assert not outcome.success
    assert outcome.error.startswith("snapshot_structure: "), outcome.error
    assert "db_trade_history_structure" in outcome.error and "status" in outcome.error
    assert "KeyError" not in outcome.error.splitlines()[0]
    checks = _check_evaluations(w.instance, outcome.run_id)
    assert checks == {("db_trade_history", "structure"): False, ("db_orders", "structure"): True,
                      ("db_positions", "structure"): True}
    assert outcome.batch == {}
    assert w.table("recon_batches").empty and w.table("recon_findings").empty
    runs = w.table("recon_runs")
    assert list(runs["status"]) == ["FAILED"] and runs["error"].iloc[0].startswith("snapshot_structure: ")


def test_a_clean_window_records_every_structure_check_passed(world):
    w = world()
    outcome = w.reconcile("alpha")
    assert outcome.success, outcome.error
    checks = _check_evaluations(w.instance, outcome.run_id)
    frames = ("db_trade_history", "db_orders", "db_positions", "exchange_fills", "exchange_orders",
              "exchange_positions", "exchange_markets")
    assert checks == {**{(f, "structure"): True for f in frames}, ("corrective_batch", "output_suites"): True}
