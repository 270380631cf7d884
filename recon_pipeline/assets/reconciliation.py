"""Reconciliation assets: thin wiring of the pure rules in ``recon_pipeline.rules`` to the snapshots.

Each asset hands frames to one rule and describes the result for the UI. The only I/O here is the
parity heartbeat persisting its streaks (the heartbeat's memory must survive between runs).
"""

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from recon_pipeline.assets.metadata import markdown_table
from recon_pipeline.assets.snapshots import ProfileState, SnapshotClock
from recon_pipeline.db.recon_store import upsert_streaks
from recon_pipeline.partitions import window_of, window_x_profile
from recon_pipeline.resources import ReconConfig, TradingDatabase
from recon_pipeline.rules import state_after
from recon_pipeline.rules.exit_backfill import ExitBackfillResult, backfill_exits
from recon_pipeline.rules.ledger import LedgerResult, evaluate_ledger
from recon_pipeline.rules.orders import OrderReconResult, reconcile_orders
from recon_pipeline.rules.parity import ParityResult, evaluate_parity
from recon_pipeline.rules.watchdog import WatchdogResult, evaluate_watchdog
from recon_pipeline.validation.snapshots import BadRows, markets_for_parity, parity_no_go_trade_ids

RECONCILIATION = "reconciliation"
FINDING_PREVIEW = ["kind", "reason", "symbol", "trade_id", "order_id", "qty_db", "qty_exchange", "notional_usd"]
CORRECTION_PREVIEW = ["action", "target_id", "attribution", "notional_usd", "dry_run"]


def _result_metadata(findings: pd.DataFrame, corrections: pd.DataFrame, **extra) -> dict:
    meta = {
        "findings": MetadataValue.int(len(findings)),
        "corrections": MetadataValue.int(len(corrections)),
        "findings_by_kind": MetadataValue.json(
            {str(k): int(v) for k, v in findings["kind"].value_counts().sort_index().items()}),
        "corrections_by_action": MetadataValue.json(
            {str(k): int(v) for k, v in corrections["action"].value_counts().sort_index().items()}),
        "findings_preview": MetadataValue.md(markdown_table(findings, FINDING_PREVIEW)),
        "corrections_preview": MetadataValue.md(markdown_table(corrections, CORRECTION_PREVIEW)),
    }
    meta.update(extra)
    return meta


@asset(group_name=RECONCILIATION, partitions_def=window_x_profile, description=(
    "DB open orders vs exchange orders: ORDER_MISSING_FROM_EXCHANGE routed by the exchange's terminal "
    "state to reconcileEntryFill / reconcileExitFill / reconcileCancel, ORDER_MISSING_IN_DB reported "
    "and never adopted. Orders inside the settle interval are skipped."))
def order_reconciliation(context: AssetExecutionContext, db_orders: pd.DataFrame, exchange_orders: pd.DataFrame,
                         db_trade_history: pd.DataFrame, db_profile_state: ProfileState,
                         snapshot_clock: SnapshotClock, recon_config: ReconConfig) -> Output[OrderReconResult]:
    window = window_of(context.partition_key)
    result = reconcile_orders(
        db_orders, exchange_orders, db_profile_state.profiles, db_trade_history,
        settings=recon_config.settings(), profile_id=window.profile_id, window_start=window.start,
        as_of=snapshot_clock.as_of, now=snapshot_clock.now, live=snapshot_clock.live)
    return Output(result, metadata=_result_metadata(result.findings, result.corrections))


@asset(group_name=RECONCILIATION, partitions_def=window_x_profile, description=(
    "EXIT backfill: OPEN slices whose exit happened on the exchange, closed (or partially exited) from "
    "ALL their attributed exit fills, behind the strong-attribution, heuristic and grace gates; "
    "everything that fails a gate stays NO_GO with its reason."))
def exit_backfill(context: AssetExecutionContext, db_trade_history: pd.DataFrame, exchange_fills: pd.DataFrame,
                  exchange_orders: pd.DataFrame, db_orders: pd.DataFrame, exchange_markets: pd.DataFrame,
                  db_profile_state: ProfileState, snapshot_clock: SnapshotClock,
                  recon_config: ReconConfig) -> Output[ExitBackfillResult]:
    window = window_of(context.partition_key)
    result = backfill_exits(
        db_trade_history, exchange_fills, exchange_orders, db_orders, db_profile_state.profiles, exchange_markets,
        settings=recon_config.settings(), profile_id=window.profile_id, window_start=window.start,
        as_of=snapshot_clock.as_of, now=snapshot_clock.now, live=snapshot_clock.live)
    return Output(result, metadata=_result_metadata(
        result.findings, result.corrections, evidence_fills=MetadataValue.int(len(result.evidence))))


@asset(group_name=RECONCILIATION, partitions_def=window_x_profile, description=(
    "Position-parity heartbeat (live run only): ghost slices, N consecutive confirmations, synthetic "
    "EXIT for sub_tag-attributed slices, QUARANTINE for the rest. Sees the slices as this run's EXIT "
    "backfill leaves them. Persists the confirmation streaks. Slices on an instrument with a bad (excluded) "
    "snapshot row are treated like slices with NO_GO exit evidence: quarantined, never closed at mark."))
def position_parity(context: AssetExecutionContext, exit_backfill: ExitBackfillResult,
                    db_trade_history: pd.DataFrame, exchange_positions: pd.DataFrame,
                    exchange_markets: pd.DataFrame, db_profile_state: ProfileState,
                    snapshot_clock: SnapshotClock, recon_config: ReconConfig,
                    trading_db: TradingDatabase, db_bad_rows: BadRows,
                    exchange_bad_rows: BadRows) -> Output[ParityResult]:
    window = window_of(context.partition_key)
    settings = recon_config.settings()
    slices = state_after.slices_after(db_trade_history, exit_backfill.corrections, actions=("BACKFILL_EXIT",))
    evaluated = bool(snapshot_clock.live and settings.parity_enabled)
    # Excluded snapshot rows must never make a slice look like a ghost that is then closed at mark.
    taint = db_bad_rows.taint | exchange_bad_rows.taint
    bad_row_no_go = parity_no_go_trade_ids(slices, taint)
    if bad_row_no_go:
        context.log.warning(f"parity: {len(bad_row_no_go)} OPEN slices on instruments with bad snapshot rows "
                            f"are no-go this run: {sorted(bad_row_no_go)[:20]}")
    result = evaluate_parity(
        slices, exchange_positions, markets_for_parity(exchange_markets, taint), db_profile_state.profiles,
        db_profile_state.streaks, exit_backfill.no_go_trade_ids | bad_row_no_go, settings=settings,
        profile_id=window.profile_id,
        account=db_profile_state.profile["account"], window_start=window.start, now=snapshot_clock.now,
        evaluated=evaluated)
    if not evaluated:
        reason = "parity disabled (ENABLE_RECON_POSITION_PARITY_HEARTBEAT=false)" if not settings.parity_enabled \
            else "historical window: no position snapshot of its time"
        context.log.info(f"parity not evaluated: {reason}")
    with trading_db.begin() as conn:
        written = upsert_streaks(conn, result.streaks)
    summary = result.summary
    return Output(result, metadata=_result_metadata(
        result.findings, result.corrections,
        parity=MetadataValue.text("evaluated" if summary.get("parity_evaluated") else
                                  f"not evaluated: {summary.get('not_evaluated_reason') or 'historical window'}"),
        ghost_trades=MetadataValue.int(int(summary.get("ghost_trades", 0))),
        quarantined=MetadataValue.int(int(summary.get("quarantined", 0))),
        auto_closed=MetadataValue.int(int(summary.get("auto_closed", 0))),
        total_mismatch_notional_usd=MetadataValue.float(float(summary.get("total_mismatch_notional_usd", 0.0))),
        max_mismatch_notional_usd=MetadataValue.float(float(summary.get("max_mismatch_notional_usd", 0.0))),
        streak_rows_written=MetadataValue.int(written),
        bad_row_no_go_trades=MetadataValue.int(len(bad_row_no_go)),
    ))


@asset(group_name=RECONCILIATION, partitions_def=window_x_profile, description=(
    "Integrity watchdog: pause trading when ghost mismatch notional exceeds the configured share of "
    "allocated capital; auto-resume a parity_watchdog pause only after minimum pause, clean cycles "
    "and cooldown. Pauses of any other source are never lifted."))
def watchdog(context: AssetExecutionContext, position_parity: ParityResult, db_profile_state: ProfileState,
             snapshot_clock: SnapshotClock, recon_config: ReconConfig) -> Output[WatchdogResult]:
    window = window_of(context.partition_key)
    state = db_profile_state
    summary = position_parity.summary
    result = evaluate_watchdog(
        summary, state.profile, state.pauses[state.pauses["profile_id"] == window.profile_id], state.run_history,
        settings=recon_config.settings(), profile_id=window.profile_id, window_start=window.start,
        now=snapshot_clock.now, clean=bool(summary.get("clean", False)),
        evaluated=bool(summary.get("parity_evaluated", False)))
    ws = result.summary
    return Output(result, metadata=_result_metadata(
        result.findings, result.corrections,
        triggered=MetadataValue.bool(bool(ws.get("triggered", False))),
        ratio=MetadataValue.float(float(ws.get("ratio") or 0.0)),
    ))


@asset(group_name=RECONCILIATION, partitions_def=window_x_profile, description=(
    "Capital ledger and positions rows recomputed on the state the batch will leave: reserved capital "
    "(OPEN slices' remaining qty x entry price + open ENTRY orders' unfilled qty x price) and the signed "
    "remaining qty of each (profile, symbol)."))
def ledger_reconciliation(context: AssetExecutionContext, order_reconciliation: OrderReconResult,
                          exit_backfill: ExitBackfillResult, position_parity: ParityResult,
                          db_trade_history: pd.DataFrame, db_orders: pd.DataFrame, db_positions: pd.DataFrame,
                          db_profile_state: ProfileState) -> Output[LedgerResult]:
    window = window_of(context.partition_key)
    batch = pd.concat([exit_backfill.corrections, position_parity.corrections, order_reconciliation.corrections],
                      ignore_index=True)
    live = batch[~batch["dry_run"].astype(bool)]  # DRY_RUN corrections will not change the tables
    slices = state_after.slices_after(db_trade_history, live)
    orders = state_after.orders_after(db_orders, live)
    result = evaluate_ledger(slices, orders, db_profile_state.ledger, db_positions,
                             profile_id=window.profile_id, window_start=window.start)
    return Output(result, metadata=_result_metadata(result.findings, result.corrections))
