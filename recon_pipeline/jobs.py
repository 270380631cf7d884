"""Jobs: ``reconcile`` (one (window, profile) end to end) and ``apply_batch`` (one stored batch).

A failed reconcile step records the failure in ``recon_runs`` (through a failure hook), so
``/internal/health`` turns unhealthy when the last run of a profile failed, not only when runs stop.
"""

from dagster import AssetSelection, HookContext, define_asset_job, failure_hook

from recon_pipeline.db.recon_store import upsert_run
from recon_pipeline.partitions import PROFILE_DIM, WINDOW_DIM, parse_window

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
    message = f"{context.op.name}: {type(error).__name__}: {error}" if error else f"{context.op.name} failed"
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
