"""The package's rules (pandas), called exactly as the Dagster assets call them."""

from __future__ import annotations

import pandas as pd

from bench.generate import NOW, RUNNING_PROFILE, WINDOW_START, Dataset, settings
from recon_pipeline import schemas as S
from recon_pipeline.rules import state_after
from recon_pipeline.rules.corrections import concat
from recon_pipeline.rules.exit_backfill import backfill_exits
from recon_pipeline.rules.orders import reconcile_orders
from recon_pipeline.rules.parity import evaluate_parity


def run(ds: Dataset, profile_id: str = RUNNING_PROFILE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Order reconciliation + EXIT backfill (attribution inside) + parity of one live partition."""
    s = settings()
    account = ds.profiles.loc[ds.profiles["profile_id"] == profile_id, "account"].iloc[0]
    orders = reconcile_orders(ds.db_orders, ds.exchange_orders, ds.profiles, ds.slices, settings=s,
                              profile_id=profile_id, window_start=WINDOW_START, as_of=NOW, now=NOW, live=True)
    eb = backfill_exits(ds.slices, ds.fills, ds.exchange_orders, ds.db_orders, ds.profiles, ds.markets,
                        settings=s, profile_id=profile_id, window_start=WINDOW_START, as_of=NOW, now=NOW,
                        live=True)
    after = state_after.slices_after(ds.slices, eb.corrections, actions=("BACKFILL_EXIT",))
    parity = evaluate_parity(after, ds.positions, ds.markets, ds.profiles, ds.streaks, eb.no_go_trade_ids,
                             settings=s, profile_id=profile_id, account=account, window_start=WINDOW_START,
                             now=NOW, evaluated=True)
    findings = concat([orders.findings, eb.findings, parity.findings], S.FINDINGS)
    corrections = concat([eb.corrections, parity.corrections, orders.corrections], S.CORRECTIONS)
    return findings, corrections
