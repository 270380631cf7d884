"""The apply sensor: every PENDING corrective batch is applied, once, and none is stranded.

New batches are found through the ``corrective_batch`` materializations after a storage-id cursor
(``@asset_sensor`` would only see the newest event per tick, and two profiles finishing in one tick
would lose a batch). Each launch has the batch id as run key, so a batch is launched once however
often its materialization is seen. A batch still PENDING after a back-off (its apply run failed, or
the lock was busy) is launched again under a new run key, at most once per back-off period, unless
an apply run for it is still queued or running.
"""

import warnings

import pandas as pd
import sqlalchemy as sa
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    BetaWarning,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from recon_pipeline.db.read import ts_param
from recon_pipeline.jobs import apply_batch_job, apply_run_config
from recon_pipeline.resources import TradingDatabase

# @sensor passes its (beta) `owners` parameter even when unset; that is not our API use.
warnings.filterwarnings("ignore", category=BetaWarning, message=".*owners.*")

BATCH_ASSET = AssetKey("corrective_batch")
RETRY_BACKOFF_SECONDS = 600
ACTIVE = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def _request(batch_id: str, profile_id: str, run_key: str) -> RunRequest:
    return RunRequest(run_key=run_key, run_config=apply_run_config(batch_id),
                      tags={"recon/batch_id": batch_id, "recon/profile": profile_id})


def _pending(trading_db: TradingDatabase, batch_ids: list[str]) -> set[str]:
    if not batch_ids:
        return set()
    stmt = sa.text("SELECT batch_id FROM recon_batches WHERE status = 'PENDING' AND batch_id IN :ids")
    stmt = stmt.bindparams(sa.bindparam("ids", expanding=True))
    with trading_db.connect() as conn:
        return {r[0] for r in conn.execute(stmt, {"ids": batch_ids})}


def _stranded(trading_db: TradingDatabase, now: pd.Timestamp) -> list[tuple[str, str]]:
    with trading_db.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT batch_id, profile_id FROM recon_batches WHERE status = 'PENDING' AND created_at < :cutoff"
            " ORDER BY window_start"), {"cutoff": ts_param(conn, now - pd.Timedelta(seconds=RETRY_BACKOFF_SECONDS))})
        return [(r[0], r[1]) for r in rows]


@sensor(job=apply_batch_job, minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
        description="Launches the apply job for every new PENDING corrective batch, and again for one "
                    "left PENDING after a back-off (lock busy, run failed).")
def apply_pending_batches(context: SensorEvaluationContext, trading_db: TradingDatabase):
    cursor = int(context.cursor) if context.cursor else 0
    result = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=BATCH_ASSET, after_storage_id=cursor), limit=500, ascending=True)
    seen = []
    for record in result.records:
        cursor = max(cursor, record.storage_id)
        meta = record.asset_materialization.metadata if record.asset_materialization else {}
        if "batch_id" in meta and meta.get("batch_status") and meta["batch_status"].value == "PENDING":
            seen.append((meta["batch_id"].value, meta["profile_id"].value))
    # The table is the truth: a batch applied since it was materialized (by `reconcile --apply`, or an
    # earlier launch) needs no run.
    still_pending = _pending(trading_db, [b for b, _ in seen])
    requests = [_request(b, p, f"apply:{b}") for b, p in seen if b in still_pending]

    now = pd.Timestamp.now(tz="UTC")
    period = int(now.timestamp()) // RETRY_BACKOFF_SECONDS
    launched = {r.tags["recon/batch_id"] for r in requests}
    for batch_id, profile_id in _stranded(trading_db, now):
        if batch_id in launched:
            continue
        active = context.instance.get_run_records(
            filters=RunsFilter(tags={"recon/batch_id": batch_id}, statuses=ACTIVE), limit=1)
        if not active:
            requests.append(_request(batch_id, profile_id, f"apply:{batch_id}:retry:{period}"))
    return SensorResult(run_requests=requests, cursor=str(cursor))
