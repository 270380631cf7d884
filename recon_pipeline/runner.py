"""Run one (window, profile) partition of the reconcile job in process, as the CLI and the demo do.

The same job definition the schedule launches is executed here, against the Dagster instance of
``DAGSTER_HOME`` when it is set (so the run shows in the UI) or an ephemeral one otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from recon_pipeline.assets.stages import failure_text
from recon_pipeline.partitions import parse_window, partition_key, sync_profile_partitions


@dataclass
class Outcome:
    window_start: pd.Timestamp
    profile_id: str
    success: bool
    run_id: str | None = None
    error: str | None = None
    run_row: dict = field(default_factory=dict)
    batch: dict = field(default_factory=dict)
    applied: dict = field(default_factory=dict)
    apply_skipped: str | None = None

    def summary(self) -> str:
        head = f"window={self.window_start.isoformat()} profile={self.profile_id}"
        if not self.success:
            return f"{head} status=FAILED"
        row = self.run_row
        parts = [head, f"status={row.get('status', 'SUCCESS')}"]
        for key in ("mismatch_count", "missing_from_exchange", "missing_in_db", "no_go_count", "correction_count"):
            if key in row:
                parts.append(f"{key}={row[key]}")
        if self.batch:
            parts.append(f"batch={self.batch.get('batch_id')} batch_status={self.batch.get('status')}")
        if self.applied:
            parts.append("applied=" + ",".join(f"{k}:{v}" for k, v in sorted(self.applied.items())))
        if self.apply_skipped:
            parts.append(f"apply_skipped=({self.apply_skipped})")
        return " ".join(parts)


def get_instance():
    """The instance of ``DAGSTER_HOME`` when it is set (the run shows in the UI), else an ephemeral
    one tuned for in-process runs (:mod:`recon_pipeline.ephemeral_instance`)."""
    from dagster import DagsterInstance

    if os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.get()
    from recon_pipeline.ephemeral_instance import ephemeral_instance

    return ephemeral_instance(os.environ.get("RECON_LOG_LEVEL", "WARNING"))


def _first_error(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            err = event.step_failure_data.error
            while err.cause is not None and err.cls_name in ("DagsterExecutionStepExecutionError",):
                err = err.cause
            return failure_text(event.step_key, err.message)
    return "run failed"


def reconcile_partition(window: str | pd.Timestamp, profile_id: str, *, dry_run: bool = False,
                        apply: bool = False, instance=None, db_url: str | None = None,
                        run_config_extra: dict | None = None, exchange_config: dict | None = None) -> Outcome:
    from recon_pipeline.db.engine import engine_for
    from recon_pipeline.db.read import read_profiles
    from recon_pipeline.definitions import defs
    from recon_pipeline.settings import database_url

    start = parse_window(window) if isinstance(window, str) else pd.Timestamp(window)
    url = db_url or database_url()
    engine, owned = engine_for(url)
    try:
        with engine.connect() as conn:
            profiles = read_profiles(conn)
        if profile_id not in set(profiles["profile_id"]):
            raise LookupError(f"profile {profile_id!r} is not in the profiles table")
        instance = instance or get_instance()
        sync_profile_partitions(instance, profiles["profile_id"].tolist())
        config = {"dry_run": bool(dry_run), **(run_config_extra or {})}
        # Connections are handed over as resource instances, not run config: run config is stored
        # with the run and shown in the UI, and the database URL may carry a password.
        from recon_pipeline.resources import ExchangeClients, TradingDatabase

        resources = {"trading_db": TradingDatabase(url=url), "exchange": ExchangeClients(**(exchange_config or {}))}
        if instance.is_ephemeral:
            # Nothing outlives an ephemeral instance, so the outputs need not either: steps hand their
            # frames over in memory instead of pickling each to a temporary directory and back
            # (docs/performance.md). A persistent instance keeps the filesystem IO manager, so the
            # outputs of a CLI run can be loaded from the UI's instance like a launched run's.
            from dagster import mem_io_manager

            resources["io_manager"] = mem_io_manager
        job = defs.resolve_job_def("reconcile")
        result = job.execute_in_process(
            partition_key=partition_key(start, profile_id), instance=instance, raise_on_error=False,
            run_config={"resources": {"recon_config": {"config": config}}}, resources=resources,
        )
        outcome = Outcome(start, profile_id, result.success, run_id=result.run_id)
        if not result.success:
            outcome.error = _first_error(result)
        outcome.run_row, outcome.batch = _stored(engine, start, profile_id)
        if apply and result.success and outcome.batch.get("status") == "PENDING":
            from recon_pipeline.apply.applier import apply_batch
            from recon_pipeline.apply.lock import LockBusy

            try:
                report = apply_batch(engine, outcome.batch["batch_id"], run_id=result.run_id)
                outcome.applied = report.counts
            except LockBusy as exc:  # the batch stays PENDING; the apply sensor retries it
                outcome.apply_skipped = f"lock busy: {exc}"
            outcome.run_row, outcome.batch = _stored(engine, start, profile_id)
        return outcome
    finally:
        if owned:
            engine.dispose()


def _stored(engine, start, profile_id) -> tuple[dict, dict]:
    from recon_pipeline.db.read import ts_param

    with engine.connect() as conn:
        params = {"w": ts_param(conn, start), "p": profile_id}
        run = conn.execute(sa.text("SELECT * FROM recon_runs WHERE window_start = :w AND profile_id = :p"),
                           params).mappings().first()
        batch = conn.execute(sa.text(
            "SELECT * FROM recon_batches WHERE window_start = :w AND profile_id = :p"
            " ORDER BY created_at DESC LIMIT 1"), params).mappings().first()
    return dict(run or {}), dict(batch or {})


def backfill(start: str | pd.Timestamp, end: str | pd.Timestamp, profiles: list[str] | None = None, *,
             dry_run: bool = False, apply: bool = False, instance=None, db_url: str | None = None,
             exchange_config: dict | None = None, read_ahead: bool | None = None):
    """Reconcile every window of ``[start, end]`` (inclusive) for each profile, oldest window first.

    Windows of one profile run in time order (a later window's batch assumes the earlier ones
    landed); all runs share one process and one Dagster instance, so the code location and the
    heavy imports are paid once, not per window. While a window is reconciled, a worker process reads
    the next window's settled exchange history (``recon_pipeline.exchange.read_ahead``; off with
    ``read_ahead=False`` or ``RECON_BACKFILL_READ_AHEAD=false``). The runs share one database engine
    (``db.engine.shared_engine``). Yields one :class:`Outcome` per partition.
    """
    from recon_pipeline.db.engine import make_engine, shared_engine
    from recon_pipeline.db.read import read_profiles
    from recon_pipeline.settings import database_url

    first = parse_window(start) if isinstance(start, str) else pd.Timestamp(start)
    last = parse_window(end) if isinstance(end, str) else pd.Timestamp(end)
    if last < first:
        raise ValueError(f"backfill range is empty: --to {last.isoformat()} is before --from {first.isoformat()}")
    url = db_url or database_url()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            known = read_profiles(conn)["profile_id"].tolist()
    finally:
        engine.dispose()
    chosen = profiles or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise LookupError(f"profiles not in the profiles table: {', '.join(unknown)}")
    instance = instance or get_instance()
    windows = pd.date_range(first, last, freq="h")
    if read_ahead is None:
        read_ahead = read_ahead_enabled()
    from contextlib import nullcontext

    from recon_pipeline.exchange.read_ahead import reading_ahead

    planned = ((p, int(w.value // 1_000_000)) for p in chosen for w in windows)
    with reading_ahead(planned) if read_ahead else nullcontext(), shared_engine(url):
        first = True
        for profile_id in chosen:
            for window in windows:
                yield reconcile_partition(window, profile_id, dry_run=dry_run, apply=apply, instance=instance,
                                          db_url=url, exchange_config=exchange_config)
                if first:
                    first = False
                    freeze_startup_heap()


def freeze_startup_heap() -> None:
    """Exclude what start-up built from the garbage collector's full passes, for the rest of the process.

    After the first window the process holds about 6e5 long-lived objects (code location, Great
    Expectations, ccxt, the instance) that every full collection walks again: about 5 % of each later
    window of a backfill (docs/performance.md). ``gc.freeze`` moves them to the permanent generation;
    garbage made later is collected as before. A collection first, so no garbage is frozen.
    """
    import gc

    gc.collect()
    gc.freeze()


def read_ahead_enabled(env=os.environ) -> bool:
    """``RECON_BACKFILL_READ_AHEAD`` (default true)."""
    from recon_pipeline.settings import _parse_bool

    raw = (env.get("RECON_BACKFILL_READ_AHEAD") or "").strip()
    return _parse_bool("RECON_BACKFILL_READ_AHEAD", raw) if raw else True
