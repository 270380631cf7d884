"""The one Definitions object: assets, checks, jobs, schedules, sensors and resources.

Loading this module validates the runbook flags from the environment, so a bad value stops the code
location with a message naming the variable instead of failing an hour later inside a run.
"""

from dagster import Definitions, load_assets_from_modules

from recon_pipeline.assets import window
from recon_pipeline.executors import executor_from_env
from recon_pipeline.jobs import apply_batch_job, reconcile_job
from recon_pipeline.resources import ExchangeClients, ReconConfig, TradingDatabase
from recon_pipeline.schedules import hourly_reconciliation
from recon_pipeline.sensors import apply_pending_batches
from recon_pipeline.settings import ReconSettings

ReconSettings.from_env()  # fail fast on a bad flag

defs = Definitions(
    assets=load_assets_from_modules([window]),
    jobs=[reconcile_job, apply_batch_job],
    schedules=[hourly_reconciliation],
    sensors=[apply_pending_batches],
    resources={
        "trading_db": TradingDatabase(),
        "exchange": ExchangeClients(),
        "recon_config": ReconConfig(),
    },
    executor=executor_from_env(),  # RECON_EXECUTOR: default, in_process, multiprocess or celery
)
