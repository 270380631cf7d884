"""Output suites: the gate between a computed batch and the trading tables (DESIGN sections 5-6).

A batch is stored BLOCKED, never applied, when any of these fails:

* corrections: ids present and unique; actions known; no target with two corrections of one action;
  every slice-closing correction carries an attribution the flags allow (strong only by default,
  heuristics only when enabled, ``sub_tag`` for a synthetic exit when the sub-tag gate is on);
  an expected state on every non-derived correction; notional finite, non-negative and equal to
  qty x price of the change it makes.
* findings: kinds known, NO_GO rows carry a known reason, notional finite and non-negative.

Row-wise facts that need JSON (expected state, new state, evidence) are derived into plain columns
first, so each rule is one GE expectation on a column.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recon_pipeline import schemas
from recon_pipeline.settings import ReconSettings
from recon_pipeline.validation.gx_runner import SuiteResult, run_suite

STRONG = ("client_order_id", "trade_id_hint", "sub_tag")
HEURISTIC = ("single_open_trade", "qty_unique")
DERIVED = ("RESERVATION_UPDATE", "POSITION_UPDATE")
NOTIONAL_RTOL = 1e-6


def allowed_backfill_strengths(settings: ReconSettings) -> tuple[str, ...]:
    allowed = STRONG + (HEURISTIC if settings.backfill_allow_heuristic else ())
    return allowed + (("none",) if not settings.backfill_require_strong else ())


def _expected_notional(action: str, expected: dict, new: dict, evidence: dict) -> float:
    if action == "BACKFILL_EXIT":
        return (float(new.get("exit_qty") or 0) - float(expected.get("exit_qty") or 0)) * float(new.get("exit_price") or 0)
    if action in ("SYNTHETIC_EXIT", "QUARANTINE") and "remaining_qty" in evidence and "mark_price" in evidence:
        return float(evidence["remaining_qty"]) * float(evidence["mark_price"])
    return math.nan


def correction_checks(corrections: pd.DataFrame, settings: ReconSettings) -> pd.DataFrame:
    """The corrections plus one boolean column per row-level rule."""
    df = corrections.copy()
    expected = [json.loads(v) for v in df["expected_state"]]
    new = [json.loads(v) for v in df["new_state"]]
    evidence = [json.loads(v) for v in df["evidence"]]
    backfill_ok = df["attribution"].isin(allowed_backfill_strengths(settings))
    synthetic_ok = df["attribution"].eq("sub_tag") | (not settings.parity_require_subtag)
    df["attribution_allowed"] = np.where(
        df["action"].eq("BACKFILL_EXIT"), backfill_ok,
        np.where(df["action"].eq("SYNTHETIC_EXIT"), synthetic_ok, True)).astype(bool)
    df["expected_state_present"] = [a in DERIVED or bool(e) for a, e in zip(df["action"], expected, strict=True)]
    want = np.array([_expected_notional(a, e, n, v) for a, e, n, v in
                     zip(df["action"], expected, new, evidence, strict=True)], dtype=float)
    have = df["notional_usd"].to_numpy(dtype=float)
    consistent = np.isnan(want) | np.isclose(have, want, rtol=NOTIONAL_RTOL, atol=1e-9)
    finite = np.isnan(have) | (np.isfinite(have) & (have >= -1e-12))
    df["notional_consistent"] = consistent & finite
    return df


@dataclass(frozen=True)
class OutputValidation:
    corrections: SuiteResult
    findings: SuiteResult

    @property
    def success(self) -> bool:
        return self.corrections.success and self.findings.success

    def as_dict(self) -> dict:
        return {"success": self.success, "corrections": self.corrections.as_dict(),
                "findings": self.findings.as_dict()}

    def describe(self) -> str:
        return " | ".join(r.describe() for r in (self.corrections, self.findings) if not r.success) or "passed"

    def markdown(self) -> str:
        lines = ["| suite | expectation | column | ok | failing rows | examples |", "|---|---|---|---|---|---|"]
        for res in (self.corrections, self.findings):
            for o in res.outcomes:
                lines.append(f"| {res.suite} | {o.expectation} | {o.column or ''} | {'yes' if o.success else '**NO**'} "
                             f"| {o.unexpected_count} | {', '.join(map(str, o.examples[:3]))} |")
        return "\n".join(lines)


def _correction_suite(gx):
    E = gx.expectations
    return [
        E.ExpectColumnValuesToNotBeNull(column="correction_id"),
        E.ExpectColumnValuesToBeUnique(column="correction_id"),
        E.ExpectColumnValuesToBeInSet(column="action", value_set=list(schemas.CORRECTION_ACTIONS)),
        E.ExpectCompoundColumnsToBeUnique(column_list=["action", "target_id"]),
        E.ExpectColumnValuesToBeInSet(column="attribution_allowed", value_set=[True]),
        E.ExpectColumnValuesToBeInSet(column="expected_state_present", value_set=[True]),
        E.ExpectColumnValuesToBeInSet(column="notional_consistent", value_set=[True]),
    ]


def _finding_suite(gx):
    E = gx.expectations
    return [
        E.ExpectColumnValuesToBeInSet(column="kind", value_set=list(schemas.FINDING_KINDS)),
        E.ExpectColumnValuesToBeInSet(column="no_go_reason_known", value_set=[True]),
        E.ExpectColumnValuesToBeBetween(column="notional_usd", min_value=0, mostly=1.0),
    ]


def validate_outputs(findings: pd.DataFrame, corrections: pd.DataFrame, settings: ReconSettings) -> OutputValidation:
    checked = correction_checks(corrections, settings)
    f = findings.copy()
    f["no_go_reason_known"] = (~f["kind"].eq("NO_GO")) | f["reason"].isin(schemas.NO_GO_REASONS)
    f["notional_usd"] = f["notional_usd"].replace([np.inf, -np.inf], -1.0)
    return OutputValidation(
        corrections=run_suite("corrective_batch", checked, _correction_suite),
        findings=run_suite("mismatch_report", f, _finding_suite),
    )
