"""Rules stage: thin wiring of the pure rules in ``recon_pipeline.rules`` to the snapshot.

Five assets, one per rule (``order_reconciliation``, ``exit_backfill``, ``position_parity``,
``watchdog``, ``ledger_reconciliation``), each with its own description, metadata and lineage in the
UI, computed in the rules' order inside the one step of a window (``recon_pipeline.assets.window``
says why one step). The rules form a chain anyway (parity sees the slices as the EXIT backfill
leaves them, the ledger sees every correction), so nothing could run in parallel.

The only I/O here is the parity heartbeat persisting its streaks (its memory must survive between runs).
"""

from dataclasses import dataclass

import pandas as pd
from dagster import AssetExecutionContext, AssetOut, MetadataValue, Output

from recon_pipeline.assets.metadata import asset_keys, markdown_table
from recon_pipeline.assets.snapshots import ProfileState, Snapshot, SnapshotClock
from recon_pipeline.assets.stages import stage
from recon_pipeline.db.recon_store import upsert_streaks
from recon_pipeline.partitions import Window
from recon_pipeline.resources import TradingDatabase
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


def _order_reconciliation(window: Window, settings, db_orders, exchange_orders, db_trade_history, state: ProfileState,
                          clock: SnapshotClock) -> OrderReconResult:
    return reconcile_orders(
        db_orders, exchange_orders, state.profiles, db_trade_history,
        settings=settings, profile_id=window.profile_id, window_start=window.start,
        as_of=clock.as_of, now=clock.now, live=clock.live)


def _exit_backfill(window: Window, settings, db_trade_history, exchange_fills, exchange_orders, db_orders,
                   exchange_markets, state: ProfileState, clock: SnapshotClock) -> ExitBackfillResult:
    return backfill_exits(
        db_trade_history, exchange_fills, exchange_orders, db_orders, state.profiles, exchange_markets,
        settings=settings, profile_id=window.profile_id, window_start=window.start,
        as_of=clock.as_of, now=clock.now, live=clock.live)


def _position_parity(context: AssetExecutionContext, window: Window, settings, exits: ExitBackfillResult,
                     db_trade_history, exchange_positions, exchange_markets, state: ProfileState,
                     clock: SnapshotClock, trading_db: TradingDatabase, db_bad_rows: BadRows,
                     exchange_bad_rows: BadRows) -> tuple[ParityResult, dict]:
    slices = state_after.slices_after(db_trade_history, exits.corrections, actions=("BACKFILL_EXIT",))
    evaluated = bool(clock.live and settings.parity_enabled)
    # Excluded snapshot rows must never make a slice look like a ghost that is then closed at mark.
    taint = db_bad_rows.taint | exchange_bad_rows.taint
    bad_row_no_go = parity_no_go_trade_ids(slices, taint)
    if bad_row_no_go:
        context.log.warning(f"parity: {len(bad_row_no_go)} OPEN slices on instruments with bad snapshot rows "
                            f"are no-go this run: {sorted(bad_row_no_go)[:20]}")
    result = evaluate_parity(
        slices, exchange_positions, markets_for_parity(exchange_markets, taint), state.profiles,
        state.streaks, exits.no_go_trade_ids | bad_row_no_go, settings=settings,
        profile_id=window.profile_id,
        account=state.profile["account"], window_start=window.start, now=clock.now,
        evaluated=evaluated)
    if not evaluated:
        reason = "parity disabled (ENABLE_RECON_POSITION_PARITY_HEARTBEAT=false)" if not settings.parity_enabled \
            else "historical window: no position snapshot of its time"
        context.log.info(f"parity not evaluated: {reason}")
    with trading_db.begin() as conn:
        written = upsert_streaks(conn, result.streaks)
    summary = result.summary
    return result, _result_metadata(
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
    )


def _watchdog(window: Window, settings, parity: ParityResult, state: ProfileState,
              clock: SnapshotClock) -> tuple[WatchdogResult, dict]:
    summary = parity.summary
    result = evaluate_watchdog(
        summary, state.profile, state.pauses[state.pauses["profile_id"] == window.profile_id], state.run_history,
        settings=settings, profile_id=window.profile_id, window_start=window.start,
        now=clock.now, clean=bool(summary.get("clean", False)),
        evaluated=bool(summary.get("parity_evaluated", False)))
    ws = result.summary
    return result, _result_metadata(
        result.findings, result.corrections,
        triggered=MetadataValue.bool(bool(ws.get("triggered", False))),
        ratio=MetadataValue.float(float(ws.get("ratio") or 0.0)),
    )


def _ledger_reconciliation(window: Window, orders: OrderReconResult, exits: ExitBackfillResult,
                           parity: ParityResult, db_trade_history, db_orders, db_positions,
                           state: ProfileState) -> LedgerResult:
    batch = pd.concat([exits.corrections, parity.corrections, orders.corrections], ignore_index=True)
    live = batch[~batch["dry_run"].astype(bool)]  # DRY_RUN corrections will not change the tables
    slices = state_after.slices_after(db_trade_history, live)
    orders_after = state_after.orders_after(db_orders, live)
    return evaluate_ledger(slices, orders_after, state.ledger, db_positions,
                           profile_id=window.profile_id, window_start=window.start)


_STATE = ("db_profile_state", "snapshot_clock")


RULE_OUTS = {
    "order_reconciliation": AssetOut(group_name=RECONCILIATION, description=(
        "DB open orders vs exchange orders: ORDER_MISSING_FROM_EXCHANGE routed by the exchange's terminal "
        "state to reconcileEntryFill / reconcileExitFill / reconcileCancel, ORDER_MISSING_IN_DB reported "
        "and never adopted. Orders inside the settle interval are skipped.")),
    "exit_backfill": AssetOut(group_name=RECONCILIATION, description=(
        "EXIT backfill: OPEN slices whose exit happened on the exchange, closed (or partially exited) from "
        "ALL their attributed exit fills, behind the strong-attribution, heuristic and grace gates; "
        "everything that fails a gate stays NO_GO with its reason.")),
    "position_parity": AssetOut(group_name=RECONCILIATION, description=(
        "Position-parity heartbeat (live run only): ghost slices, N consecutive confirmations, synthetic "
        "EXIT for sub_tag-attributed slices, QUARANTINE for the rest. Sees the slices as this run's EXIT "
        "backfill leaves them. Persists the confirmation streaks. Slices on an instrument with a bad "
        "(excluded) snapshot row are treated like slices with NO_GO exit evidence: quarantined, never "
        "closed at mark.")),
    "watchdog": AssetOut(group_name=RECONCILIATION, description=(
        "Integrity watchdog: pause trading when ghost mismatch notional exceeds the configured share of "
        "allocated capital; auto-resume a parity_watchdog pause only after minimum pause, clean cycles "
        "and cooldown. Pauses of any other source are never lifted.")),
    "ledger_reconciliation": AssetOut(group_name=RECONCILIATION, description=(
        "Capital ledger and positions rows recomputed on the state the batch will leave: reserved capital "
        "(OPEN slices' remaining qty x entry price + open ENTRY orders' unfilled qty x price) and the "
        "signed remaining qty of each (profile, symbol).")),
}
# what each rule reads: its lineage in the UI
RULE_DEPS = {
    "order_reconciliation": asset_keys("db_orders", "exchange_orders", "db_trade_history", *_STATE),
    "exit_backfill": asset_keys("db_trade_history", "exchange_fills", "exchange_orders", "db_orders",
                                "exchange_markets", *_STATE),
    "position_parity": asset_keys("exit_backfill", "db_trade_history", "exchange_positions", "exchange_markets",
                                  "db_bad_rows", "exchange_bad_rows", *_STATE),
    "watchdog": asset_keys("position_parity", *_STATE),
    "ledger_reconciliation": asset_keys("order_reconciliation", "exit_backfill", "position_parity",
                                        "db_trade_history", "db_orders", "db_positions", "db_profile_state"),
}


@dataclass(frozen=True)
class RuleResults:
    orders: OrderReconResult
    exits: ExitBackfillResult
    parity: ParityResult
    watchdog: WatchdogResult
    ledger: LedgerResult


def run_rules(context: AssetExecutionContext, window: Window, settings, snap: Snapshot,
              trading_db: TradingDatabase):
    """Yield the five rule assets in order; return their :class:`RuleResults`."""
    state, clock = snap.db_profile_state, snap.snapshot_clock
    with stage("reconciliation"):
        orders = _order_reconciliation(window, settings, snap.db_orders, snap.exchange_orders, snap.db_trade_history,
                                       state, clock)
        yield Output(orders, "order_reconciliation", metadata=_result_metadata(orders.findings, orders.corrections))

        exits = _exit_backfill(window, settings, snap.db_trade_history, snap.exchange_fills, snap.exchange_orders,
                               snap.db_orders, snap.exchange_markets, state, clock)
        yield Output(exits, "exit_backfill", metadata=_result_metadata(
            exits.findings, exits.corrections, evidence_fills=MetadataValue.int(len(exits.evidence))))

        parity, parity_meta = _position_parity(context, window, settings, exits, snap.db_trade_history,
                                               snap.exchange_positions, snap.exchange_markets, state, clock,
                                               trading_db, snap.db_bad_rows, snap.exchange_bad_rows)
        yield Output(parity, "position_parity", metadata=parity_meta)

        dog, dog_meta = _watchdog(window, settings, parity, state, clock)
        yield Output(dog, "watchdog", metadata=dog_meta)

        ledger = _ledger_reconciliation(window, orders, exits, parity, snap.db_trade_history, snap.db_orders,
                                        snap.db_positions, state)
        yield Output(ledger, "ledger_reconciliation", metadata=_result_metadata(ledger.findings, ledger.corrections))
    return RuleResults(orders, exits, parity, dog, ledger)
