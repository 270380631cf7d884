"""The two large snapshot reads can be answered from indexes on Postgres (sql/003), never only by a scan.

Planner choices depend on table size and statistics, so the plans are taken with sequential scans
disabled: a predicate no index can serve still plans as a ``Seq Scan`` (as both reads did before
sql/003, 0.3-0.4 s each on the backfill bench's 840k orders / 420k slices); a servable one uses the
indexes named here. Which rows the reads return is pinned by ``test_snapshot_scope``.
"""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from recon_pipeline.db.read import ORDERS_SELECT, trade_history_select

W = pd.Timestamp("2026-11-23T10:00:00Z").to_pydatetime()
H = pd.Timedelta(hours=1).to_pytimedelta()


def _plan(engine, sql: str, params: dict) -> str:
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        return "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + sql), params))


@pytest.mark.parametrize("table, sql, params, indexes", [
    ("orders", ORDERS_SELECT, {"account": "acc", "start": W, "end": W + H},
     ["orders_open_status_idx", "orders_updated_at_idx"]),
    ("trade_history", trade_history_select("postgresql"),
     {"account": "acc", "start": W, "end": W + H, "since": W - H, "upper": W + 2 * H},
     ["trade_history_open_idx", "trade_history_updated_at_idx", "trade_history_alive_idx"]),
])
def test_snapshot_read_uses_indexes(pg_engine, table, sql, params, indexes):
    plan = _plan(pg_engine, sql, params)
    assert f"Seq Scan on {table}" not in plan, plan
    for index in indexes:
        assert index in plan, plan
