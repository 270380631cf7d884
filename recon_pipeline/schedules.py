"""The hourly schedule: a few minutes past each hour, the hour that just closed, for every profile.

Profiles are read from the ``profiles`` table at every tick and registered as partitions, so a new
profile is reconciled from its first hour without a code change or redeploy. The minute comes from
``RECON_SCHEDULE_MINUTE_OF_HOUR`` (default 5): late fills settle before the window is judged.
"""

import pandas as pd
from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from recon_pipeline.db.read import read_profiles
from recon_pipeline.jobs import reconcile_job
from recon_pipeline.partitions import HOUR_FORMAT, partition_key, sync_profile_partitions
from recon_pipeline.resources import TradingDatabase
from recon_pipeline.settings import ReconSettings

MINUTE = ReconSettings.from_env().schedule_minute_of_hour


def closed_window(scheduled: pd.Timestamp) -> pd.Timestamp:
    """The hourly window that closed most recently before ``scheduled``."""
    return scheduled.tz_convert("UTC").floor("h") - pd.Timedelta(hours=1)


@schedule(job=reconcile_job, cron_schedule=f"{MINUTE} * * * *", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.STOPPED,
          description="Reconcile the hour that just closed, for every profile in the profiles table.")
def hourly_reconciliation(context: ScheduleEvaluationContext, trading_db: TradingDatabase):
    scheduled = pd.Timestamp(context.scheduled_execution_time)
    window = closed_window(scheduled if scheduled.tzinfo else scheduled.tz_localize("UTC"))
    with trading_db.connect() as conn:
        table = read_profiles(conn)
    profiles = table["profile_id"].tolist()
    accounts = dict(zip(table["profile_id"], table["account"], strict=True))
    if not profiles:
        return SkipReason("no profiles in the profiles table")
    sync_profile_partitions(context.instance, profiles)
    return [RunRequest(run_key=f"{window.strftime(HOUR_FORMAT)}|{p}", partition_key=partition_key(window, p),
                       tags={"recon/profile": p, "recon/account": accounts[p], "recon/window": window.isoformat()})
            for p in profiles]
