"""The daemon-free pieces of a distributed deployment, started by a test (or by ``measure``).

- :func:`scratch_database`: an empty Postgres database for Dagster's own storage, dropped afterwards.
- :func:`instance_home`: a DAGSTER_HOME holding ``deploy/dagster.yaml`` (the production instance
  config, unchanged) and the DAGSTER_PG_* variables that point it at the scratch database.
- :class:`CeleryWorkers`: ``dagster-celery worker start`` subprocesses on a private queue, each in
  its own process group so teardown kills the worker and its pool children, whatever happened.
- :func:`run_backfill`: stands in for the backfill daemon and the queued run coordinator, which
  a test does not start: it submits the reconcile run of every (window, profile) partition, and
  the apply run of its PENDING batch, keeping the coordinator's rule that one profile's runs go one
  at a time, in window order, while different profiles run side by side (``max_concurrent_runs``).
  Each run is an ordinary ``execute_job`` of the ``recon_pipeline.executors:defs`` code location,
  whose executor (``RECON_EXECUTOR=celery``) ships every step to the workers.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
import yaml

from recon_pipeline.partitions import partition_key

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_INSTANCE = REPO_ROOT / "deploy" / "dagster.yaml"
WORKER_READY_TIMEOUT_S = 60
RUN_TIMEOUT_S = 120


def admin_url() -> str:
    return os.environ.get("RECON_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@contextmanager
def scratch_database(prefix: str = "recon_dagster") -> Iterator[str]:
    """Create an empty database; yield its name; drop it (with any open connections) afterwards."""
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def instance_env(db_name: str) -> dict[str, str]:
    """DAGSTER_PG_* for ``deploy/dagster.yaml``, from the admin URL's server and credentials."""
    url = sa.engine.make_url(admin_url())
    return {"DAGSTER_PG_HOST": url.host or "127.0.0.1", "DAGSTER_PG_PORT": str(url.port or 5432),
            "DAGSTER_PG_USERNAME": url.username or "postgres", "DAGSTER_PG_PASSWORD": url.password or "",
            "DAGSTER_PG_DB": db_name}


def instance_home(home: Path) -> Path:
    """Write the production dagster.yaml into ``home`` with the console kept to warnings."""
    home.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(DEPLOY_INSTANCE.read_text())
    config["python_logs"] = {"python_log_level": "WARNING"}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home


def worker_config(path: Path, env: dict[str, str]) -> Path:
    """The worker's ``-y`` file: ``deploy/celery/worker.yaml`` with this run's broker, backend, queue."""
    from recon_pipeline.executors import celery_config

    base = yaml.safe_load((REPO_ROOT / "deploy" / "celery" / "worker.yaml").read_text())
    base["execution"]["config"].update(celery_config(env))
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux prctl)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class CeleryWorkers:
    """``n`` worker processes (one step at a time each), started and stopped by the caller."""

    def __init__(self, workdir: Path, env: dict[str, str], queue: str, includes: Sequence[str] = ()):
        self.workdir, self.env, self.queue, self.includes = workdir, env, queue, tuple(includes)
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, n: int) -> CeleryWorkers:
        """``celery -A dagster_celery.app worker``, as ``dagster-celery worker start`` runs it.

        The Celery settings module is the one dagster-celery's CLI writes from the ``-y`` file
        (broker, backend, queue); the worker is started directly rather than through the CLI
        wrapper so that it can be tied to this process: it gets SIGTERM if the test process dies.
        """
        from dagster_celery.cli import get_config_dir

        config_dir = get_config_dir(str(worker_config(self.workdir / "celery_worker.yaml", self.env)))
        bindir = str(Path(sys.executable).parent)
        env = {**self.env, "PATH": bindir + os.pathsep + self.env.get("PATH", os.environ.get("PATH", "")),
               "PYTHONPATH": os.pathsep.join([config_dir, str(REPO_ROOT)])}
        for i in range(n):
            log = self.workdir / f"worker{i}.log"
            cmd = [os.path.join(bindir, "celery"), "-A", "dagster_celery.app", "worker", "--prefetch-multiplier=1",
                   "--loglevel", "INFO", "-Q", self.queue, "-n", f"recon{i}-{self.queue}@%h",
                   "--concurrency=1", "--without-gossip", "--without-mingle", "--without-heartbeat"]
            if self.includes:
                cmd += ["-I", ",".join(self.includes)]
            with open(log, "wb") as out:
                self.procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                   start_new_session=True, preexec_fn=_die_with_parent))
            self.logs.append(log)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = WORKER_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        pending = set(range(len(self.procs)))
        while pending and time.monotonic() < deadline:
            for i in list(pending):
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"celery worker {i} exited:\n{self.logs[i].read_text()[-3000:]}")
                if b" ready." in self.logs[i].read_bytes():
                    pending.discard(i)
            time.sleep(0.2)
        if pending:
            tails = "\n".join(self.logs[i].read_text()[-2000:] for i in pending)
            raise TimeoutError(f"celery workers {sorted(pending)} not ready after {timeout}s:\n{tails}")

    def tasks_per_worker(self) -> list[int]:
        """Steps each worker ran (from its log: one 'succeeded' line per task)."""
        return [log.read_bytes().count(b"succeeded in") for log in self.logs]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the pool children share the group: make sure nothing outlives the test
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        self.procs.clear()
        self._forget_queue()

    def _forget_queue(self) -> None:
        """Drop this test's private queue and its binding keys from the broker."""
        import redis

        from recon_pipeline.executors import celery_config

        client = redis.Redis.from_url(celery_config(self.env)["broker"])
        try:
            client.delete(self.queue, f"_kombu.binding.{self.queue}", f"_kombu.binding_permanent.{self.queue}")
        except redis.RedisError:
            pass
        finally:
            client.close()


def recon_job(name: str):
    """A reconstructable job of the ``recon_pipeline.executors:defs`` code location."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module("recon_pipeline.executors", "defs", working_directory=str(REPO_ROOT))
    return repo.get_reconstructable_job(name)


def partition_tags(job, window: pd.Timestamp, profile: str) -> dict[str, str]:
    key = partition_key(window, profile)
    return dict(job.get_definition().get_tags_for_partition_key(key, selected_asset_keys=None))


@dataclass
class RunOutcome:
    profile: str
    window: pd.Timestamp
    job: str
    run_id: str
    success: bool
    seconds: float


def run_config(db_url: str) -> dict:
    return {"resources": {"trading_db": {"config": {"url": db_url}},
                          "exchange": {"config": {"enable_rate_limit": False, "timeout_ms": 5000}}}}


def pending_batch(engine, window: pd.Timestamp, profile: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT batch_id FROM recon_batches WHERE window_start = :w AND profile_id = :p AND status = 'PENDING'"
            " ORDER BY created_at DESC LIMIT 1"), {"w": window.to_pydatetime(), "p": profile}).scalar()


def launch(instance, job_name: str, config: dict, tags: dict[str, str]):
    """One run of the job, executed like a launched run (its steps go wherever its executor says)."""
    from dagster import execute_job

    return execute_job(recon_job(job_name), instance=instance, run_config=config, tags=tags, raise_on_error=False)


def _run_profile(db_url: str, profile: str, windows: Sequence[pd.Timestamp], account: str | None,
                 apply: bool) -> list[RunOutcome]:
    """One profile's windows in time order, each run to completion before the next is started."""
    from dagster import DagsterInstance

    from recon_pipeline.db.engine import make_engine
    from recon_pipeline.jobs import apply_run_config

    instance = DagsterInstance.get()
    engine = make_engine(db_url)
    job = recon_job("reconcile")
    config = run_config(db_url)
    extra = {"recon/profile": profile, **({"recon/account": account} if account else {})}
    out = []
    try:
        for window in sorted(windows):
            started = time.monotonic()
            result = launch(instance, "reconcile", config, {**partition_tags(job, window, profile), **extra})
            out.append(RunOutcome(profile, window, "reconcile", result.run_id, result.success,
                                  time.monotonic() - started))
            if not result.success or not apply:
                continue
            batch_id = pending_batch(engine, window, profile)
            if batch_id:
                started = time.monotonic()
                cfg = {**config, **apply_run_config(batch_id)}
                result = launch(instance, "apply_batch_job", cfg, {"recon/batch_id": batch_id, **extra})
                out.append(RunOutcome(profile, window, "apply_batch_job", result.run_id, result.success,
                                      time.monotonic() - started))
    finally:
        engine.dispose()
    return out


def run_backfill(db_url: str, windows: Sequence[pd.Timestamp], profiles: Sequence[str], *,
                 accounts: dict[str, str] | None = None, apply: bool = True,
                 max_concurrent_runs: int = 4) -> list[RunOutcome]:
    """Every (window, profile): reconcile, then apply its PENDING batch; per profile in window order.

    Each profile's runs are orchestrated by its own process (as a run launcher starts one process or
    pod per run): Dagster's run orchestration is not meant to share a process between concurrent
    runs. The instance is DAGSTER_HOME's, inherited through the environment.
    """
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(max_concurrent_runs, len(profiles)), mp_context=ctx) as pool:
        futures = [pool.submit(_run_profile, db_url, profile, list(windows),
                               (accounts or {}).get(profile), apply) for profile in profiles]
        return [o for future in futures for o in future.result(timeout=RUN_TIMEOUT_S * 2 * len(windows))]


def _apply_when_released(db_url: str, batch_id: str, profile: str, barrier) -> RunOutcome:
    """Launch one apply run of ``batch_id`` once every racer is ready (the barrier opens)."""
    from dagster import DagsterInstance

    from recon_pipeline.jobs import apply_run_config

    instance = DagsterInstance.get()
    recon_job("apply_batch_job").get_definition()  # load the code location before the start line
    barrier.wait(timeout=RUN_TIMEOUT_S)
    started = time.monotonic()
    result = launch(instance, "apply_batch_job", {**run_config(db_url), **apply_run_config(batch_id)},
                    {"recon/batch_id": batch_id, "recon/profile": profile})
    return RunOutcome(profile, pd.NaT, f"apply_batch_job:{batch_id}", result.run_id, result.success,
                      time.monotonic() - started)


def race_apply(db_url: str, batch_ids: Sequence[str], profile: str) -> list[RunOutcome]:
    """Launch one apply run per entry of ``batch_ids`` (repeats allowed) at the same moment.

    Each run is orchestrated by its own process (like two launched runs); their single step goes to
    whichever Celery worker takes it, so two workers apply the same profile's batches at once.
    """
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=len(batch_ids), mp_context=ctx) as pool:
        barrier = manager.Barrier(len(batch_ids))
        futures = [pool.submit(_apply_when_released, db_url, bid, profile, barrier) for bid in batch_ids]
        return [f.result(timeout=RUN_TIMEOUT_S * 2) for f in futures]


def run_errors(instance, run_id: str) -> str:
    """The step failures of a run, for an assertion message."""
    from dagster import DagsterEventType

    lines = []
    for record in instance.all_logs(run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}):
        event = record.dagster_event
        lines.append(f"{event.step_key}: {event.message}")
        data = event.step_failure_data if event.is_step_failure else None
        if data is not None:
            if data.user_failure_data is not None:
                lines.append(f"  {data.user_failure_data.description}")
            err = data.error
            while err is not None:
                lines.append(f"  {err.cls_name}: {err.message.strip()}")
                err = err.cause
    return "\n".join(lines) or "(no failure events)"
