"""Reports stage: what an analyst browses and what the apply sensor acts on.

``mismatch_report`` and ``no_go_queue`` are the findings of the window; ``corrective_batch`` validates
the corrections and stores them (PENDING / DRY_RUN / BLOCKED) in the pipeline's tables;
``reconciliation_health`` records the evaluation in ``recon_runs``, which ``/internal/health`` and
``/metrics`` read. The four are computed in that order, last in the one step of a window
(``recon_pipeline.assets.window``): the queue and the batch read the report, the health reads both.
"""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetOut,
    MetadataValue,
    Output,
)

from recon_pipeline import schemas
from recon_pipeline.apply.batch_store import store_batch
from recon_pipeline.assets.metadata import asset_keys, column_schema, markdown_table
from recon_pipeline.assets.reconciliation import CORRECTION_PREVIEW, FINDING_PREVIEW, RuleResults
from recon_pipeline.assets.snapshots import Snapshot, SnapshotClock
from recon_pipeline.assets.stages import stage
from recon_pipeline.db.recon_store import replace_findings, upsert_run
from recon_pipeline.observability.health import run_health
from recon_pipeline.partitions import Window
from recon_pipeline.resources import TradingDatabase
from recon_pipeline.rules.corrections import concat
from recon_pipeline.rules.parity import ParityResult
from recon_pipeline.rules.watchdog import WatchdogResult
from recon_pipeline.validation.outputs import validate_outputs
from recon_pipeline.validation.snapshots import BadRows

REPORTS = "reports"

FINDING_DESCRIPTIONS = {
    "kind": "ORDER_MISSING_FROM_EXCHANGE, ORDER_MISSING_IN_DB, MISSING_EXIT, GHOST_SLICE, QTY_MISMATCH, "
            "WATCHDOG_TRIGGERED, UNATTRIBUTED, RESERVATION_MISMATCH, POSITION_MISMATCH, NO_GO, BAD_ROW",
    "reason": "NO_GO reason code (NO_ATTRIBUTION, AMBIGUOUS, STALE_FILL, OVER_FILL, ...) or detail code",
    "attribution": "strength tying the exchange activity to the profile, strongest first: client_order_id, "
                   "trade_id_hint, sub_tag, single_open_trade, qty_unique, none",
    "notional_usd": "mismatch notional in USD (qty x mark or fill price)",
    "fill_ids": "exchange fill ids used as evidence, comma separated",
}
CORRECTION_DESCRIPTIONS = {
    "correction_id": "deterministic: hash of window, action, target and evidence",
    "expected_state": "what the applier must find in the target row before writing (else STALE)",
    "new_state": "the columns the correction writes",
    "dry_run": "stored as DRY_RUN, never applied",
}


def _all_findings(*results) -> pd.DataFrame:
    return concat([r.findings for r in results], schemas.FINDINGS)


def _worst(findings: pd.DataFrame, limit: int = 15) -> pd.DataFrame:
    return findings.sort_values("notional_usd", ascending=False, na_position="last", kind="stable").head(limit)


def _mismatch_report(window, results: tuple, db_bad_rows: BadRows, exchange_bad_rows: BadRows,
                     trading_db: TradingDatabase) -> tuple[pd.DataFrame, dict]:
    findings = _all_findings(*results, db_bad_rows, exchange_bad_rows)
    with trading_db.begin() as conn:
        replace_findings(conn, window.start, window.profile_id, findings)
    notional = findings["notional_usd"].fillna(0.0)
    by_kind = {str(k): int(v) for k, v in findings["kind"].value_counts().sort_index().items()}
    counts_md = "\n".join(["| kind | count |", "|---|---|"] + [f"| {k} | {v} |" for k, v in by_kind.items()])
    return findings, {
        "dagster/row_count": MetadataValue.int(len(findings)),
        "findings_by_kind": MetadataValue.md(counts_md if by_kind else "_no findings_"),
        "worst_findings": MetadataValue.md(markdown_table(_worst(findings), FINDING_PREVIEW + ["detail"], 15)),
        "total_mismatch_notional_usd": MetadataValue.float(float(notional.sum())),
        "max_mismatch_notional_usd": MetadataValue.float(float(notional.max()) if len(notional) else 0.0),
        "missing_from_exchange": MetadataValue.int(by_kind.get("ORDER_MISSING_FROM_EXCHANGE", 0)),
        "missing_in_db": MetadataValue.int(by_kind.get("ORDER_MISSING_IN_DB", 0)),
        "bad_rows": MetadataValue.int(by_kind.get("BAD_ROW", 0)),
    }


def _no_go_queue(mismatch_report: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    queue = mismatch_report[mismatch_report["kind"].isin(["NO_GO", "BAD_ROW"])].reset_index(drop=True)
    by_reason = {str(k): int(v) for k, v in queue["reason"].value_counts().sort_index().items()}
    return queue, {
        "dagster/row_count": MetadataValue.int(len(queue)),
        "by_reason": MetadataValue.json(by_reason),
        "queue": MetadataValue.md(markdown_table(queue, ["reason", "symbol", "trade_id", "exchange_order_id",
                                                          "fill_ids", "qty_exchange", "notional_usd", "detail"], 25)),
    }


def _corrective_batch(context: AssetExecutionContext, window, settings, results: tuple,
                      mismatch_report: pd.DataFrame, trading_db: TradingDatabase):
    """The batch, its metadata and the output_suites check result."""
    corrections = concat([r.corrections for r in results], schemas.CORRECTIONS)
    validation = validate_outputs(mismatch_report, corrections, settings)
    with trading_db.begin() as conn:
        stored = store_batch(conn, window_start=window.start, profile_id=window.profile_id, run_id=context.run_id,
                             corrections=corrections, dry_run=settings.dry_run, blocked=not validation.success,
                             validation=validation.as_dict())
    if not validation.success:
        context.log.error(f"corrective batch {stored['batch_id']} BLOCKED: {validation.describe()}")
    by_action = {str(k): int(v) for k, v in corrections["action"].value_counts().sort_index().items()}
    metadata = {
        "dagster/row_count": MetadataValue.int(len(corrections)),
        "batch_id": MetadataValue.text(stored["batch_id"]),
        "batch_status": MetadataValue.text(stored["status"]),
        "newly_stored": MetadataValue.bool(bool(stored.get("created"))),
        "corrections_by_action": MetadataValue.json(by_action),
        "validation": MetadataValue.md(validation.markdown()),
        "corrections_table": MetadataValue.md(markdown_table(corrections, CORRECTION_PREVIEW + ["new_state"], 25)),
        "profile_id": MetadataValue.text(window.profile_id),
        "window_start": MetadataValue.text(window.start.isoformat()),
    }
    failures = [f for suite in (validation.corrections, validation.findings) for f in suite.failures]
    check = AssetCheckResult(
        check_name="output_suites", asset_key="corrective_batch", passed=validation.success,
        severity=AssetCheckSeverity.ERROR,
        metadata={"batch_id": stored["batch_id"], "batch_status": stored["status"],
                  "failed_expectations": MetadataValue.json(
                      [{"expectation": f.expectation, "column": f.column, "failing_rows": f.unexpected_count,
                        "examples": [str(e) for e in f.examples[:5]]} for f in failures]),
                  "suites": MetadataValue.md(validation.markdown())})
    return corrections, metadata, check


def _reconciliation_health(context: AssetExecutionContext, window, mismatch_report: pd.DataFrame,
                           corrective_batch: pd.DataFrame, parity: ParityResult, dog: WatchdogResult,
                           clock: SnapshotClock, trading_db: TradingDatabase) -> tuple[dict, dict]:
    health, run_row = run_health(mismatch_report, corrective_batch, parity.summary, dog.summary, clock)
    with trading_db.begin() as conn:
        upsert_run(conn, {**run_row, "window_start": window.start, "profile_id": window.profile_id,
                          "run_id": context.run_id, "status": "SUCCESS"})
    return health, {k: (MetadataValue.float(float(v)) if isinstance(v, float) else
                        MetadataValue.int(int(v)) if isinstance(v, (bool, int)) and not isinstance(v, bool) else
                        MetadataValue.bool(v) if isinstance(v, bool) else MetadataValue.text(str(v)))
                    for k, v in health.items()}


_RESULTS = ("order_reconciliation", "exit_backfill", "position_parity", "watchdog", "ledger_reconciliation")


REPORT_OUTS = {
    "mismatch_report": AssetOut(group_name=REPORTS, description=(
        "Every finding of the (window, profile): orders, exits, parity, watchdog, ledger, and the snapshot "
        "rows excluded for a bad value (BAD_ROW). Stored in recon_findings; the worst findings by notional "
        "are shown below."),
        metadata={"dagster/column_schema": column_schema(schemas.FINDINGS, FINDING_DESCRIPTIONS)}),
    "no_go_queue": AssetOut(group_name=REPORTS, description=(
        "The NO_GO queue: evidence that looked like drift but failed a safety gate, and snapshot rows "
        "excluded for a bad value (BAD_ROW), kept for operator review with its reason. Nothing here is ever "
        "acted on automatically."),
        metadata={"dagster/column_schema": column_schema(schemas.FINDINGS, FINDING_DESCRIPTIONS)}),
    "corrective_batch": AssetOut(group_name=REPORTS, description=(
        "The corrective batch of the (window, profile): validated by the output expectation suites, then "
        "stored in recon_batches / recon_corrections as PENDING (applied by the apply sensor), DRY_RUN, "
        "or BLOCKED with the failing expectations."),
        metadata={"dagster/column_schema": column_schema(schemas.CORRECTIONS, CORRECTION_DESCRIPTIONS)}),
    "reconciliation_health": AssetOut(group_name=REPORTS, description=(
        "The runbook's health fields for this evaluation, recorded in recon_runs (read by "
        "/internal/health and /metrics).")),
}
# what each report reads: its lineage in the UI
REPORT_DEPS = {
    "mismatch_report": asset_keys(*_RESULTS, "db_bad_rows", "exchange_bad_rows"),
    "no_go_queue": asset_keys("mismatch_report"),
    "corrective_batch": asset_keys(*_RESULTS, "mismatch_report"),
    "reconciliation_health": asset_keys("mismatch_report", "corrective_batch", "position_parity", "watchdog",
                                          "snapshot_clock"),
}
REPORT_CHECKS = [AssetCheckSpec("output_suites", asset="corrective_batch", description=(
    "The output expectation suites over the findings and corrections. A failure stores the batch "
    "BLOCKED (never applied); the asset itself writes that, so the run still records its health."))]


def run_reports(context: AssetExecutionContext, window: Window, settings, snap: Snapshot, rules: RuleResults,
                trading_db: TradingDatabase):
    """Yield the four report assets (and the output suites' check) in order."""
    results = (rules.orders, rules.exits, rules.parity, rules.watchdog, rules.ledger)
    with stage("reports"):
        findings, meta = _mismatch_report(window, results, snap.db_bad_rows, snap.exchange_bad_rows, trading_db)
        yield Output(findings, "mismatch_report", metadata=meta)

        queue, meta = _no_go_queue(findings)
        yield Output(queue, "no_go_queue", metadata=meta)

        # the batch concatenates corrections in this order: exits, parity, watchdog, orders, ledger
        ordered = (rules.exits, rules.parity, rules.watchdog, rules.orders, rules.ledger)
        corrections, meta, check = _corrective_batch(context, window, settings, ordered, findings, trading_db)
        yield Output(corrections, "corrective_batch", metadata=meta)
        yield check

        health, meta = _reconciliation_health(context, window, findings, corrections, rules.parity, rules.watchdog,
                                              snap.snapshot_clock, trading_db)
        yield Output(health, "reconciliation_health", metadata=meta)
