"""The Dagster shape of DESIGN section 6: the named assets in their groups, and the job's steps.

The rules and the reports are each one step (multi-asset) for speed (docs/performance.md), but each
asset keeps its own lineage: what the UI draws is what each rule reads, not the whole step's inputs.
"""

from __future__ import annotations

import pytest
from dagster import AssetKey

from recon_pipeline.definitions import defs

GROUPS = {
    "snapshots": {"db_trade_history", "db_orders", "db_positions", "db_profile_state", "db_bad_rows",
                  "exchange_fills", "exchange_orders", "exchange_positions", "exchange_markets", "snapshot_clock",
                  "exchange_bad_rows"},
    "reconciliation": {"order_reconciliation", "exit_backfill", "position_parity", "watchdog",
                       "ledger_reconciliation"},
    "reports": {"mismatch_report", "no_go_queue", "corrective_batch", "reconciliation_health"},
}

# asset -> the assets it reads (its lineage in the UI)
UPSTREAM = [
    ("order_reconciliation", {"db_orders", "exchange_orders", "db_trade_history", "db_profile_state",
                              "snapshot_clock"}),
    ("exit_backfill", {"db_trade_history", "exchange_fills", "exchange_orders", "db_orders", "exchange_markets",
                       "db_profile_state", "snapshot_clock"}),
    ("position_parity", {"exit_backfill", "db_trade_history", "exchange_positions", "exchange_markets",
                         "db_bad_rows", "exchange_bad_rows", "db_profile_state", "snapshot_clock"}),
    ("watchdog", {"position_parity", "db_profile_state", "snapshot_clock"}),
    ("ledger_reconciliation", {"order_reconciliation", "exit_backfill", "position_parity", "db_trade_history",
                               "db_orders", "db_positions", "db_profile_state"}),
    ("mismatch_report", GROUPS["reconciliation"] | {"db_bad_rows", "exchange_bad_rows"}),
    ("no_go_queue", {"mismatch_report"}),
    ("corrective_batch", GROUPS["reconciliation"] | {"mismatch_report"}),
    ("reconciliation_health", {"mismatch_report", "corrective_batch", "position_parity", "watchdog",
                               "snapshot_clock"}),
]


def _graph():
    return defs.resolve_asset_graph()


def test_every_design_asset_is_in_its_group():
    graph = _graph()
    for group, names in GROUPS.items():
        found = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).group_name == group}
        assert found == names, group


@pytest.mark.parametrize("asset, upstream", UPSTREAM, ids=[a for a, _ in UPSTREAM])
def test_lineage_is_what_each_rule_reads(asset, upstream):
    parents = {key.to_user_string() for key in _graph().get(AssetKey(asset)).parent_keys}
    assert parents == upstream


def test_a_run_has_four_steps_in_a_chain():
    job = defs.resolve_job_def("reconcile")
    assert {node.name for node in job.nodes} == {"db_snapshot", "exchange_snapshot", "reconciliation", "reports"}
    deps = {node.name: {up.node.name for ups in job.graph.dependency_structure.input_to_upstream_outputs_for_node(
        node.name).values() for up in ups} for node in job.nodes}
    assert deps == {"db_snapshot": set(), "exchange_snapshot": {"db_snapshot"},
                    "reconciliation": {"db_snapshot", "exchange_snapshot"},
                    "reports": {"db_snapshot", "exchange_snapshot", "reconciliation"}}
