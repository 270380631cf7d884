"""The Dagster shape of DESIGN section 6: the named assets in their groups, and the job's step.

A window is one step (one multi-asset) for speed (docs/performance.md), but each asset keeps its own
lineage: what the UI draws is what each rule reads, not the whole step's inputs.
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
    *[(name, set()) for name in ("db_trade_history", "db_orders", "db_positions", "db_profile_state", "db_bad_rows")],
    *[(name, {"db_trade_history", "db_orders", "db_profile_state"}) for name in
      ("exchange_fills", "exchange_orders", "exchange_positions", "exchange_markets", "snapshot_clock",
       "exchange_bad_rows")],
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


def test_a_run_is_one_step_computing_every_asset_and_check():
    job = defs.resolve_job_def("reconcile")
    assert [node.name for node in job.nodes] == ["reconcile_window"]
    graph = _graph()
    every = set().union(*GROUPS.values())
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == every
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert checks == {(name, "structure") for name in GROUPS["snapshots"]
                      if not name.endswith(("_bad_rows", "_state", "_clock"))} | {("corrective_batch", "output_suites")}
    assert all(graph.get_check_spec(key).blocking for key in graph.asset_check_keys if key.name == "structure")


FRAME_SCHEMAS = {"db_trade_history": "TRADE_HISTORY", "db_orders": "DB_ORDERS", "db_positions": "DB_POSITIONS",
                 "exchange_fills": "EXCHANGE_FILLS", "exchange_orders": "EXCHANGE_ORDERS",
                 "exchange_positions": "EXCHANGE_POSITIONS", "exchange_markets": "EXCHANGE_MARKETS"}


@pytest.mark.parametrize("asset, schema", FRAME_SCHEMAS.items(), ids=list(FRAME_SCHEMAS))
def test_each_snapshot_frame_shows_its_columns_in_the_definition(asset, schema):
    """The column schema is definition metadata (the UI's Columns tab), not repeated in every event."""
    from recon_pipeline import schemas

    shown = _graph().get(AssetKey(asset)).metadata["dagster/column_schema"]
    assert [c.name for c in shown.columns] == list(getattr(schemas, schema))
