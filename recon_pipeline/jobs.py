"""Jobs: ``reconcile`` (one (window, profile) end to end) and ``apply_batch`` (one stored batch).

A failed reconcile step records the failure in ``recon_runs`` (through a failure hook), so
``/internal/health`` turns unhealthy when the last run of a profile failed, not only when runs stop.
"""

from dagster import (
    AssetSelection,
    Config,
    Failure,
    HookContext,
    OpExecutionContext,
    define_asset_job,
    failure_hook,
    job,
    op,
)

from recon_pipeline.apply.applier import apply_in_window_order
from recon_pipeline.apply.lock import LockBusy
from recon_pipeline.assets.stages import exception_text
from recon_pipeline.db.recon_store import upsert_run
from recon_pipeline.partitions import PROFILE_DIM, WINDOW_DIM, parse_window
from recon_pipeline.resources import TradingDatabase

RECONCILE_GROUPS = ("snapshots", "reconciliation", "reports")


@failure_hook(required_resource_keys={"trading_db"})
def record_failed_run(context: HookContext):
    run = context.instance.get_run_by_id(context.run_id)
    tags = run.tags if run else {}
    window = tags.get(f"dagster/partition/{WINDOW_DIM}")
    profile = tags.get(f"dagster/partition/{PROFILE_DIM}")
    if not window or not profile:
        return
    error = context.op_exception
    message = exception_text(context.op.name, error) if error else f"{context.op.name} failed"
    with context.resources.trading_db.begin() as conn:
        upsert_run(conn, {"window_start": parse_window(window), "profile_id": profile, "run_id": context.run_id,
                          "status": "FAILED", "error": message[:2000]})


reconcile_job = define_asset_job(
    name="reconcile",
    selection=AssetSelection.groups(*RECONCILE_GROUPS),
    description="Snapshot both sides of one (window, profile), reconcile, report and store the corrective batch.",
    tags={"recon/job": "reconcile"},
    hooks={record_failed_run},
)


class ApplyBatchConfig(Config):
    batch_id: str


@op(description="Apply the batch (and any earlier PENDING batch of its profile, in window order) under the "
                "profile's reconciliation lock, in one transaction per batch.")
def apply_corrective_batch(context: OpExecutionContext, config: ApplyBatchConfig, trading_db: TradingDatabase) -> dict:
    try:
        reports = apply_in_window_order(trading_db.engine, config.batch_id, run_id=context.run_id)
    except LockBusy as exc:
        raise Failure(description=f"skipped: {exc}; the apply sensor retries after its back-off",
                      metadata={"batch_id": config.batch_id, "reason": "lock busy"}) from exc
    summary = {r.batch_id: {"status": r.status, "skipped": r.skipped_reason, **r.counts} for r in reports}
    for batch_id, outcome in summary.items():
        context.log.info(f"batch {batch_id}: {outcome}")
    return summary


@job(description="Apply one stored corrective batch exactly once (launched by the apply sensor).",
     tags={"recon/job": "apply"})
def apply_batch_job():
    apply_corrective_batch()


def apply_run_config(batch_id: str) -> dict:
    return {"ops": {"apply_corrective_batch": {"config": {"batch_id": batch_id}}}}
