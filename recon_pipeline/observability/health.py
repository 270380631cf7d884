"""The runbook's health fields, per evaluation (written to recon_runs) and per profile (served).

Names are the runbook's, verbatim: operators grep for them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

PER_RUN_FIELDS = (
    "reconciliationMismatchCount",
    "reconciliationMissingFromExchange",
    "reconciliationMissingInDb",
    "reconciliationParityMismatchTrades",
    "reconciliationParityQuarantinedTrades",
    "reconciliationParityAutoClosedTrades",
    "reconciliationParityMaxMismatchNotionalUsd",
    "reconciliationParityTotalMismatchNotionalUsd",
    "reconciliationIntegrityWatchdogTriggered",
)


def run_health(findings: pd.DataFrame, corrections: pd.DataFrame, parity: dict, watchdog: dict,
               clock) -> tuple[dict, dict]:
    """(health fields of this evaluation, the recon_runs row that stores it)."""
    kinds = findings["kind"].value_counts()
    applied_actions = corrections.loc[~corrections["dry_run"].astype(bool), "action"].value_counts()
    health = {
        "reconciliationMismatchCount": int(len(findings)),
        "reconciliationMissingFromExchange": int(kinds.get("ORDER_MISSING_FROM_EXCHANGE", 0)),
        "reconciliationMissingInDb": int(kinds.get("ORDER_MISSING_IN_DB", 0)),
        "reconciliationParityMismatchTrades": int(parity.get("ghost_trades", 0) or 0)
        + int(parity.get("qty_mismatches", 0) or 0),
        "reconciliationParityQuarantinedTrades": int(parity.get("quarantined", 0) or 0),
        "reconciliationParityAutoClosedTrades": int(parity.get("auto_closed", 0) or 0),
        "reconciliationParityMaxMismatchNotionalUsd": float(parity.get("max_mismatch_notional_usd", 0.0) or 0.0),
        "reconciliationParityTotalMismatchNotionalUsd": float(parity.get("total_mismatch_notional_usd", 0.0) or 0.0),
        "reconciliationIntegrityWatchdogTriggered": bool(watchdog.get("triggered", False)),
        "parityEvaluated": bool(parity.get("parity_evaluated", False)),
        "live": bool(clock.live),
        "snapshotTime": clock.now.isoformat(),
        "asOf": clock.as_of.isoformat(),
        "proposedCorrections": int(applied_actions.sum()),
    }
    run_row = {
        "live": bool(clock.live),
        "evaluated_at": clock.now,
        "finished_at": datetime.now(UTC),
        "parity_evaluated": bool(parity.get("parity_evaluated", False)),
        "clean": bool(parity.get("parity_evaluated", False) and parity.get("clean", False)),
        "mismatch_count": health["reconciliationMismatchCount"],
        "missing_from_exchange": health["reconciliationMissingFromExchange"],
        "missing_in_db": health["reconciliationMissingInDb"],
        "no_go_count": int(kinds.get("NO_GO", 0) + kinds.get("BAD_ROW", 0)),
        "correction_count": int(len(corrections)),
        "health": health,
    }
    return health, run_row
