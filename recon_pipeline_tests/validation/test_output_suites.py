"""Output suites: the vectorised row facts equal the per-row ``json.loads`` reference, and a failure still
names the expectation, the column, the row count and real example values (ids, not the codes GE sees)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recon_pipeline import schemas
from recon_pipeline.rules.corrections import corrections_frame, findings_frame
from recon_pipeline.settings import ReconSettings
from recon_pipeline.validation import gx_runner
from recon_pipeline.validation import outputs as O

WINDOW = pd.Timestamp("2026-11-30T09:00Z")


def _backfill(tid: str, *, exit_qty=0.0, new_qty=1.0, price=100.0, notional=None, attribution="client_order_id"):
    return {"action": "BACKFILL_EXIT", "target_table": "trade_history", "target_id": tid,
            "expected_state": {"status": "OPEN", "exit_qty": exit_qty},
            "new_state": {"status": "CLOSED", "exit_qty": new_qty, "exit_price": price, "exit_source": "backfill",
                          "exit_fees": {"USDT": 0.1}, "exit_time": WINDOW},
            "evidence": {"fill_ids": ["f1", "f2"], "attribution": attribution, "total_qty": new_qty},
            "attribution": attribution,
            "notional_usd": (new_qty - (exit_qty or 0.0)) * price if notional is None else notional}


def _parity(tid: str, action="SYNTHETIC_EXIT", remaining=2.0, mark=50.0, notional=None, drop=()):
    evidence = {"rule": "position_parity", "remaining_qty": remaining, "mark_price": mark, "attribution": "sub_tag"}
    evidence = {k: v for k, v in evidence.items() if k not in drop}
    return {"action": action, "target_table": "trade_history", "target_id": tid,
            "expected_state": {"status": "OPEN", "exit_qty": 0.0},
            "new_state": {"status": "CLOSED" if action == "SYNTHETIC_EXIT" else "QUARANTINED"},
            "evidence": evidence, "attribution": "sub_tag",
            "notional_usd": remaining * mark if notional is None else notional}


def _corrections(rows) -> pd.DataFrame:
    return corrections_frame(rows, window_start=WINDOW, profile_id="p_alpha")


def _mixed() -> pd.DataFrame:
    return _corrections([
        _backfill("t1"), _backfill("t2", exit_qty=0.5, new_qty=2.0, price=3.25),
        _backfill("t3", exit_qty=None, new_qty=1.0, price=10.0),   # null expected exit_qty counts as 0
        _backfill("t4", notional=999.0),                           # inconsistent
        _backfill("t5", attribution="single_open_trade"),          # forbidden by default flags
        _parity("t6"), _parity("t7", action="QUARANTINE", notional=1.0),
        _parity("t8", drop=("mark_price",), notional=5.0),          # no mark price: nothing to compare
        {"action": "ENTRY_FILL", "target_table": "orders", "target_id": "o1", "expected_state": {},
         "new_state": {"status": "FILLED"}, "evidence": {}, "attribution": None, "notional_usd": 1.0},
        {"action": "POSITION_UPDATE", "target_table": "positions", "target_id": "p|BTC/USDT", "expected_state": {},
         "new_state": {"qty": 1.0}, "evidence": {}, "attribution": None, "notional_usd": np.nan},
    ])


def _assert_same_facts(df: pd.DataFrame) -> None:
    present, want = O._row_facts(df)
    ref_present, ref_want = O._row_facts_python(df)
    assert present.tolist() == ref_present.tolist()
    assert np.array_equal(want, ref_want, equal_nan=True), (want, ref_want)


def test_vectorised_facts_equal_the_per_row_reference_without_falling_back(monkeypatch):
    df = _mixed()
    ref = O._row_facts_python(df)
    monkeypatch.setattr(O, "_row_facts_python", lambda d: pytest.fail("canonical JSON must take the fast path"))
    present, want = O._row_facts(df)
    assert present.tolist() == ref[0].tolist() == [True] * 8 + [False, True]
    assert np.array_equal(want, ref[1], equal_nan=True)


@pytest.mark.parametrize("row, column, value", [
    pytest.param(0, "new_state", '{\n "status": "CLOSED", "exit_qty": 1.0, "exit_price": 100.0}', id="newline-in-value"),
    pytest.param(0, "expected_state", ' {"exit_qty": 0.0}', id="leading-blank"),
    pytest.param(8, "expected_state", '{ }', id="blank-empty-object"),
    pytest.param(0, "new_state", '{"exit_qty": "1.0", "exit_price": 100.0}', id="number-as-string"),
    pytest.param(0, "new_state", '{"exit_qty": NaN, "exit_price": 100.0}', id="nan-token"),
    pytest.param(5, "evidence", '{"remaining_qty": NaN, "mark_price": 50.0}', id="nan-evidence"),
    pytest.param(9, "expected_state", '[]', id="array-on-derived-row"),
    pytest.param(8, "expected_state", '[1]', id="non-empty-array"),
    pytest.param(9, "evidence", 'null', id="null-document"),
])
def test_non_canonical_json_gives_the_reference_result(row, column, value):
    df = _mixed()
    df.loc[row, column] = value
    _assert_same_facts(df)


@pytest.mark.parametrize("value", ['{"a":1}{"b":2}', '{"a":1} null', '{"a":', "", '{"exit_qty":1,}'])
def test_json_the_reference_rejects_is_rejected(value):
    df = _mixed()
    df.loc[9, "evidence"] = value  # a POSITION_UPDATE: only the document's validity is at stake
    with pytest.raises((ValueError, TypeError)):
        O._row_facts_python(df)
    with pytest.raises((ValueError, TypeError)):
        O._row_facts(df)


def test_null_mark_price_is_an_error_as_in_the_reference():
    df = _mixed()
    df.loc[5, "evidence"] = json.dumps({"remaining_qty": 1.0, "mark_price": None})
    with pytest.raises(TypeError):
        O._row_facts(df)


def _failures(result) -> dict:
    return {(o.expectation, o.column): o for o in result.failures}


def test_failures_name_expectation_column_count_and_real_examples():
    rows = [_backfill(f"t{i}") for i in range(6)]
    df = _corrections(rows + [_backfill("t0")])          # a second correction on t0
    df.loc[1, "correction_id"] = df.loc[2, "correction_id"]
    df.loc[3, "correction_id"] = None
    df.loc[4, "attribution"] = "qty_unique"
    df.loc[5, "notional_usd"] = 7.0
    result = O.validate_outputs(schemas.empty(schemas.FINDINGS), df, ReconSettings())
    assert not result.success
    fails = _failures(result.corrections)
    assert set(fails) == {
        ("expect_column_values_to_not_be_null", "correction_id"),
        ("expect_column_values_to_be_unique", "correction_id"),
        ("expect_compound_columns_to_be_unique", "action,target_id"),
        ("expect_column_values_to_be_in_set", "attribution_allowed"),
        ("expect_column_values_to_be_in_set", "notional_consistent"),
    }
    dup_id = fails[("expect_column_values_to_be_unique", "correction_id")]
    # rows 1 and 2 share an id, and so do rows 0 and 6 (same window, action, target and evidence)
    assert dup_id.unexpected_count == 4 and set(dup_id.examples) == {df.loc[0, "correction_id"], df.loc[2, "correction_id"]}
    null_id = fails[("expect_column_values_to_not_be_null", "correction_id")]
    assert null_id.unexpected_count == 1 and pd.isna(null_id.examples[0])
    compound = fails[("expect_compound_columns_to_be_unique", "action,target_id")]
    assert compound.unexpected_count == 2
    assert compound.examples == [{"action": "BACKFILL_EXIT", "target_id": "t0"}] * 2
    assert fails[("expect_column_values_to_be_in_set", "attribution_allowed")].unexpected_count == 1
    assert fails[("expect_column_values_to_be_in_set", "notional_consistent")].examples == [False]
    assert "t0" in result.describe() and "| **NO** |" in result.markdown()


def test_findings_suite_reports_kinds_reasons_and_notional():
    findings = findings_frame([
        {"kind": "NO_GO", "reason": "NO_ATTRIBUTION", "notional_usd": 1.0},
        {"kind": "NO_GO", "reason": "WHO_KNOWS", "notional_usd": 1.0},
        {"kind": "SURPRISE", "notional_usd": np.inf},
        {"kind": "BAD_ROW", "reason": "NON_FINITE_QTY", "notional_usd": np.nan},
    ], window_start=WINDOW, profile_id="p_alpha")
    result = O.validate_outputs(findings, schemas.empty(schemas.CORRECTIONS), ReconSettings())
    fails = _failures(result.findings)
    assert fails[("expect_column_values_to_be_in_set", "kind")].examples == ["SURPRISE"]
    assert fails[("expect_column_values_to_be_in_set", "no_go_reason_known")].unexpected_count == 1
    assert fails[("expect_column_values_to_be_between", "notional_usd")].examples == [-1.0]
    assert result.corrections.success


def test_the_same_suite_is_built_once_per_process():
    df = _mixed()
    O.validate_outputs(schemas.empty(schemas.FINDINGS), df, ReconSettings())
    source = gx_runner._context()["source"]
    assets = len(source.assets)
    for _ in range(3):
        O.validate_outputs(schemas.empty(schemas.FINDINGS), df, ReconSettings())
    assert len(source.assets) == assets


def test_suite_runs_leave_no_results_behind_in_the_context():
    """A long-lived process (the daemon, a week's backfill) validates every hour of every profile:
    the results are turned into our own report, and the GE context must not keep a copy of each."""
    df = _mixed()
    store = gx_runner._context()["context"].validation_results_store
    O.validate_outputs(schemas.empty(schemas.FINDINGS), df, ReconSettings())
    kept = len(store.list_keys())
    for _ in range(3):
        O.validate_outputs(schemas.empty(schemas.FINDINGS), df, ReconSettings())
    assert len(store.list_keys()) == kept == 0


def test_a_clean_tiled_batch_passes_with_every_fact_true():
    df = pd.concat([_mixed().iloc[[0, 1, 2, 5, 7, 9]]] * 300, ignore_index=True)
    df["target_id"] = [f"t{i}" for i in range(len(df))]
    df["correction_id"] = [f"c{i}" for i in range(len(df))]
    checked = O.correction_checks(df, ReconSettings(), narrow=True)
    assert list(checked.columns) == ["correction_id", "action", "target_id", "attribution_allowed",
                                     "expected_state_present", "notional_consistent"]
    result = O.validate_outputs(schemas.empty(schemas.FINDINGS), df, ReconSettings())
    assert result.success, result.describe()


def _clean_corrections() -> pd.DataFrame:
    df = _mixed().iloc[[0, 1, 2, 5, 7, 9]].reset_index(drop=True)
    return df


def _clean_findings() -> pd.DataFrame:
    return findings_frame([
        {"kind": "NO_GO", "reason": "NO_ATTRIBUTION", "notional_usd": 1.0},
        {"kind": "MISSING_EXIT", "reason": "EXIT", "notional_usd": np.nan},
        {"kind": "BAD_ROW", "reason": "NON_FINITE_QTY", "notional_usd": 0.0},
    ], window_start=WINDOW, profile_id="p_alpha")


def _break_corrections(how: str):
    def apply(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        if how == "null_id":
            df.loc[0, "correction_id"] = None
        elif how == "dup_id":
            df.loc[1, "correction_id"] = df.loc[0, "correction_id"]
        elif how == "dup_target":
            df.loc[1, "target_id"] = df.loc[0, "target_id"]
        elif how == "forbidden_attribution":
            df.loc[0, "attribution"] = "qty_unique"
        elif how == "inconsistent_notional":
            df.loc[0, "notional_usd"] = 7.0
        return df
    return apply


@pytest.mark.parametrize("corrections, findings", [
    pytest.param(_clean_corrections, _clean_findings, id="both-clean"),
    pytest.param(lambda: schemas.empty(schemas.CORRECTIONS), _clean_findings, id="no-corrections"),
    pytest.param(_clean_corrections, lambda: schemas.empty(schemas.FINDINGS), id="no-findings"),
    pytest.param(lambda: schemas.empty(schemas.CORRECTIONS), lambda: schemas.empty(schemas.FINDINGS), id="empty"),
    *[pytest.param(lambda how=how: _break_corrections(how)(_clean_corrections()), _clean_findings, id=how)
      for how in ("null_id", "dup_id", "dup_target", "forbidden_attribution", "inconsistent_notional")],
    pytest.param(_clean_corrections, lambda: pd.concat([_clean_findings(), findings_frame(
        [{"kind": "SURPRISE", "notional_usd": 1.0}], window_start=WINDOW, profile_id="p_alpha")],
        ignore_index=True), id="unknown-kind"),
    pytest.param(_clean_corrections, lambda: findings_frame(
        [{"kind": "NO_GO", "reason": "WHO_KNOWS", "notional_usd": 1.0}], window_start=WINDOW,
        profile_id="p_alpha"), id="unknown-no-go-reason"),
    pytest.param(_clean_corrections, lambda: findings_frame(
        [{"kind": "MISSING_EXIT", "reason": "EXIT", "notional_usd": -2.0}], window_start=WINDOW,
        profile_id="p_alpha"), id="negative-notional"),
])
def test_the_combined_run_agrees_with_the_two_suites_run_apart(corrections, findings):
    """validate_outputs runs both suites as one GE run and falls back to separate runs on a failure:
    either way, each suite's verdict and outcomes are those of the suite run on its own."""
    corr, found = corrections(), findings()
    checked = O.correction_checks(corr, ReconSettings(), narrow=True)
    decode = {}
    for col in ("correction_id", "target_id"):
        checked[col], decode[col] = O._coded(checked[col])
    apart = (gx_runner.run_suite("corrective_batch", checked, O._correction_suite, decode=decode),
             gx_runner.run_suite("mismatch_report", O.finding_checks(found), O._finding_suite))
    result = O.validate_outputs(found, corr, ReconSettings())

    def key(suite):
        return suite.suite, suite.success, sorted((o.expectation, o.column, o.success, o.unexpected_count)
                                                  for o in suite.outcomes)
    assert (key(result.corrections), key(result.findings)) == (key(apart[0]), key(apart[1]))


@pytest.mark.parametrize("clean, runs", [(True, 1), (False, 3)])
def test_a_clean_batch_costs_one_ge_run_a_failing_one_three(monkeypatch, clean, runs):
    calls = []
    real = O.run_suite
    monkeypatch.setattr(O, "run_suite", lambda name, *a, **k: calls.append(name) or real(name, *a, **k))
    corr = _clean_corrections() if clean else _break_corrections("dup_id")(_clean_corrections())
    assert O.validate_outputs(_clean_findings(), corr, ReconSettings()).success is clean
    assert len(calls) == runs, calls
