"""The output suites are the last gate: a rule that misbehaves must not reach the trading tables.

The rules are correct, so the misbehaviour is simulated by wrapping one rule so that it returns a
correction the flags forbid (a heuristic attribution with heuristics off) or a second correction on
the same target; the real suites run on the result.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
from dagster import AssetCheckKey, AssetKey
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from recon_pipeline.apply.applier import apply_batch
from recon_pipeline.assets import reconciliation
from recon_pipeline_tests.integration.conftest import assert_same_tables

pytestmark = pytest.mark.slow


def _heuristic_attribution(result):
    corr = result.corrections.copy()
    corr.loc[corr["action"] == "BACKFILL_EXIT", "attribution"] = "single_open_trade"
    return dataclasses.replace(result, corrections=corr)


def _duplicate_target(result):
    corr = result.corrections
    extra = corr[corr["action"] == "BACKFILL_EXIT"].head(1).assign(correction_id="f" * 32)
    return dataclasses.replace(result, corrections=pd.concat([corr, extra], ignore_index=True))


@pytest.mark.parametrize(
    "mutate, expectation, column",
    [(_heuristic_attribution, "expect_column_values_to_be_in_set", "attribution_allowed"),
     (_duplicate_target, "expect_compound_columns_to_be_unique", "action,target_id")],
    ids=["forbidden-attribution", "two-corrections-one-target"],
)
def test_failing_suite_blocks_the_batch_and_nothing_is_applied(demo_world, monkeypatch, mutate, expectation,
                                                                 column):
    real = reconciliation.backfill_exits
    monkeypatch.setattr(reconciliation, "backfill_exits", lambda *a, **k: mutate(real(*a, **k)))
    before = demo_world.trading_state()

    outcome = demo_world.reconcile("alpha", apply=True)

    assert outcome.success  # BLOCKED is an outcome, written by the batch asset, not a crash
    assert outcome.batch["status"] == "BLOCKED"
    failures = json.loads(outcome.batch["validation"])["corrections"]["failures"]
    assert [(f["expectation"], f["column"]) for f in failures] == [(expectation, column)]
    assert failures[0]["unexpected_count"] >= 1 and failures[0]["examples"]
    corrections = demo_world.table("recon_corrections")
    assert set(corrections["status"]) == {"BLOCKED"}
    report = apply_batch(demo_world.engine, outcome.batch["batch_id"])
    assert report.skipped_reason == "batch is BLOCKED, not PENDING"
    assert_same_tables(before, demo_world.trading_state())
    # The failed check is reported in Dagster too.
    checks = demo_world.instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey("corrective_batch"), "output_suites"), limit=1)
    assert [c.status for c in checks] == [AssetCheckExecutionRecordStatus.FAILED]
