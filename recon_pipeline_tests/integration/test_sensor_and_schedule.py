"""The apply sensor sees every batch once; the hourly schedule asks for the closed hour of every profile."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import build_schedule_context, build_sensor_context

from recon_pipeline.definitions import defs
from recon_pipeline.jobs import apply_run_config
from recon_pipeline.resources import TradingDatabase
from recon_pipeline.schedules import closed_window, hourly_reconciliation
from recon_pipeline.sensors import apply_pending_batches

pytestmark = pytest.mark.slow


def _tick(world, cursor=None):
    context = build_sensor_context(instance=world.instance, cursor=cursor,
                                   resources={"trading_db": TradingDatabase(url=world.url)})
    return apply_pending_batches(context)


def test_sensor_launches_each_new_batch_once(demo_world):
    batches = {p: demo_world.reconcile(p).batch["batch_id"] for p in ("alpha", "beta")}

    first = _tick(demo_world)
    assert sorted(r.run_key for r in first.run_requests) == sorted(f"apply:{b}" for b in batches.values())
    assert {r.tags["recon/profile"] for r in first.run_requests} == {"alpha", "beta"}

    second = _tick(demo_world, cursor=first.cursor)
    assert second.run_requests == []


def test_sensor_relaunches_a_stranded_pending_batch_after_backoff(demo_world):
    batch_id = demo_world.reconcile("alpha").batch["batch_id"]
    first = _tick(demo_world)
    assert [r.run_key for r in first.run_requests] == [f"apply:{batch_id}"]
    # Its apply never happened (lock busy, run failed): an hour later it is still PENDING.
    with demo_world.engine.begin() as conn:
        conn.execute(sa.text("UPDATE recon_batches SET created_at = created_at - interval '1 hour'"))
    retry = _tick(demo_world, cursor=first.cursor)
    assert len(retry.run_requests) == 1
    assert retry.run_requests[0].run_key.startswith(f"apply:{batch_id}:retry:")


def test_apply_job_applies_the_batch_and_earlier_windows_first(demo_world):
    earlier = demo_world.reconcile("alpha", window=pd.Timestamp("2026-11-30T08:00:00Z")).batch
    later = demo_world.reconcile("alpha").batch
    assert earlier["status"] == later["status"] == "PENDING"
    result = defs.resolve_job_def("apply_batch_job").execute_in_process(
        run_config=apply_run_config(later["batch_id"]), instance=demo_world.instance,
        resources={"trading_db": TradingDatabase(url=demo_world.url)})
    assert result.success
    outcome = result.output_for_node("apply_corrective_batch")
    assert list(outcome) == [earlier["batch_id"], later["batch_id"]]
    batches = demo_world.table("recon_batches")
    assert set(batches["status"]) == {"APPLIED"}
    # The later batch proposed what the earlier one already did: those corrections went STALE. Derived
    # ledger rows are recomputed by each batch on what the tables hold then, so they may apply twice.
    corrections = demo_world.table("recon_corrections")
    applied = corrections[(corrections["status"] == "APPLIED")
                          & ~corrections["action"].isin(["RESERVATION_UPDATE", "POSITION_UPDATE"])]
    assert applied.groupby(["action", "target_id"]).size().max() == 1
    assert (corrections["status"] == "STALE").any()


def test_schedule_requests_the_closed_hour_for_every_profile(demo_world):
    scheduled = datetime(2026, 11, 30, 10, 5, tzinfo=UTC)
    context = build_schedule_context(instance=demo_world.instance, scheduled_execution_time=scheduled,
                                     resources={"trading_db": TradingDatabase(url=demo_world.url)})
    requests = hourly_reconciliation(context)
    keys = sorted(str(r.partition_key) for r in requests)
    assert keys == ["alpha|2026-11-30-09:00", "beta|2026-11-30-09:00", "gamma|2026-11-30-09:00"]

    with demo_world.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO profiles (profile_id, exchange, account, market_type, sub_tag,"
                             " allocated_capital_usd) VALUES ('delta', 'binance', 'main', 'spot', 'dlt', 100)"))
    requests = hourly_reconciliation(context)
    assert "delta|2026-11-30-09:00" in {str(r.partition_key) for r in requests}
    assert "delta" in demo_world.instance.get_dynamic_partitions("profile")


@pytest.mark.parametrize(
    "scheduled, window",
    [("2026-11-30T10:05:00Z", "2026-11-30T09:00:00Z"),
     ("2026-11-30T00:05:00Z", "2026-11-29T23:00:00Z"),
     ("2026-11-30T10:59:59Z", "2026-11-30T09:00:00Z")],
)
def test_closed_window(scheduled, window):
    assert closed_window(pd.Timestamp(scheduled)) == pd.Timestamp(window)


def test_sensor_skips_a_batch_already_applied_since_it_was_materialized(demo_world):
    demo_world.reconcile("alpha", apply=True)
    assert _tick(demo_world).run_requests == []
