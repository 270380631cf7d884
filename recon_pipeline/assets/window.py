"""The one step of a (window, profile) run: snapshot, rules, reports, as one Dagster multi-asset.

Every asset of DESIGN section 6 (the eleven snapshots, the five rules, the four reports) keeps its
key, group, description, metadata, checks and lineage in the UI; what is one is the step that
computes them, in order: ``snapshots.take_snapshot``, ``reconciliation.run_rules``,
``reports.run_reports``.

Why one step: each step of a run costs Dagster's machinery whatever the step does (start and
success events, an input event plus a data-version lookup per upstream asset it reads, a hook), and
for a 1e4-fill window of a week-long backfill that machinery was a third of the window's time
(docs/performance.md). The stages are a chain in any case: the exchange fetch needs the DB's OPEN
slices, the rules need both snapshots, the reports need every rule. A failure still says which
stage failed (``recon_pipeline.assets.stages``), and a blocking check still stops the run before any
batch is stored.
"""

from dagster import AssetExecutionContext, multi_asset

from recon_pipeline.assets.reconciliation import RULE_DEPS, RULE_OUTS, run_rules
from recon_pipeline.assets.reports import REPORT_CHECKS, REPORT_DEPS, REPORT_OUTS, run_reports
from recon_pipeline.assets.snapshots import (
    DB_OUTS,
    EXCHANGE_OUTS,
    SNAPSHOT_DEPS,
    STRUCTURE_CHECKS,
    take_snapshot,
)
from recon_pipeline.partitions import window_of, window_x_profile
from recon_pipeline.resources import ExchangeClients, ReconConfig, TradingDatabase


@multi_asset(
    name="reconcile_window",
    outs={**DB_OUTS, **EXCHANGE_OUTS, **RULE_OUTS, **REPORT_OUTS},
    internal_asset_deps={**SNAPSHOT_DEPS, **RULE_DEPS, **REPORT_DEPS},
    check_specs=[*STRUCTURE_CHECKS, *REPORT_CHECKS],
    partitions_def=window_x_profile,
    description=("One (window, profile): snapshot the trading database and the exchange (validated), run the "
                 "rules in order (orders, EXIT backfill, parity, watchdog, ledger), then report and store the "
                 "corrective batch."),
)
def reconcile_window(context: AssetExecutionContext, trading_db: TradingDatabase, exchange: ExchangeClients,
                     recon_config: ReconConfig):
    window = window_of(context.partition_key)
    settings = recon_config.settings()
    snap = yield from take_snapshot(context, window, settings, trading_db, exchange)
    rules = yield from run_rules(context, window, settings, snap, trading_db)
    yield from run_reports(context, window, settings, snap, rules, trading_db)
