"""Which Dagster executor runs the steps of a run: chosen per deployment by ``RECON_EXECUTOR``.

The definitions stay the same on a laptop and on a cluster; only the executor changes:

- unset / ``default``: ``in_process``. A run is one step (``assets/window.py``), so a process for
  it buys nothing and costs an interpreter start and the code-location import (Great Expectations
  alone is about 4 s): ``bench.e2e`` measured a 1e5-fill partition at 2.8 s in process against
  11.8 s with Dagster's multiprocess executor (70 s when a run had eleven steps).
- ``in_process``: every step in the run's own process (what ``execute_in_process``, the CLI and the
  demo always use).
- ``multiprocess``: one subprocess per step on the run's machine (``RECON_MAX_CONCURRENT_STEPS``).
- ``celery``: every step is a Celery task on ``RECON_CELERY_QUEUE`` (default ``dagster``) of the
  broker ``RECON_CELERY_BROKER_URL`` (default the local Redis, ``redis://127.0.0.1:6379/0``), with
  results on ``RECON_CELERY_BACKEND_URL`` (default ``redis://127.0.0.1:6379/1``). Workers are
  ``dagster-celery worker start -A dagster_celery.app -y deploy/celery/worker.yaml -q <queue>``.

Kubernetes needs no executor here: the K8sRunLauncher (deploy/helm/values.yaml) starts each run
in its own pod, where the default executor runs its steps.

``recon_pipeline.executors:defs`` is the code location with the executor of the environment
applied (the same definitions as ``recon_pipeline.definitions``); it is built on first access so
``recon_pipeline.definitions`` may itself import :func:`executor_from_env` without a cycle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from recon_pipeline.settings import SettingsError

EXECUTOR_ENV = "RECON_EXECUTOR"
BROKER_ENV = "RECON_CELERY_BROKER_URL"
BACKEND_ENV = "RECON_CELERY_BACKEND_URL"
QUEUE_ENV = "RECON_CELERY_QUEUE"
MAX_STEPS_ENV = "RECON_MAX_CONCURRENT_STEPS"

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/1"
DEFAULT_QUEUE = "dagster"
EXECUTORS = ("default", "in_process", "multiprocess", "celery")


def celery_config(env: Mapping[str, str] | None = None) -> dict:
    """The ``celery_executor`` config (and, under ``execution.config``, the worker's ``-y`` file)."""
    env = os.environ if env is None else env
    queue = (env.get(QUEUE_ENV) or "").strip() or DEFAULT_QUEUE
    return {
        "broker": (env.get(BROKER_ENV) or "").strip() or DEFAULT_BROKER,
        "backend": (env.get(BACKEND_ENV) or "").strip() or DEFAULT_BACKEND,
        # Steps go to this queue; workers listen on it with -q. One step per worker process at a
        # time (prefetch 1): a long exchange snapshot never holds a second step hostage.
        "config_source": {"task_default_queue": queue, "worker_prefetch_multiplier": 1,
                          "broker_connection_retry_on_startup": True},
    }


def executor_name(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    name = (env.get(EXECUTOR_ENV) or "").strip().lower() or "default"
    if name not in EXECUTORS:
        raise SettingsError(f"{EXECUTOR_ENV}={name!r} is not an executor; accepted: {', '.join(EXECUTORS)}")
    return name


def executor_from_env(env: Mapping[str, str] | None = None):
    """The ExecutorDefinition ``RECON_EXECUTOR`` asks for (``in_process`` when unset)."""
    env = os.environ if env is None else env
    name = executor_name(env)
    if name in ("default", "in_process"):
        from dagster import in_process_executor

        return in_process_executor
    if name == "multiprocess":
        from dagster import multiprocess_executor

        raw = (env.get(MAX_STEPS_ENV) or "").strip()
        if not raw:
            return multiprocess_executor
        if not raw.isdigit() or int(raw) < 1:
            raise SettingsError(f"{MAX_STEPS_ENV}={raw!r} is not a positive integer")
        return multiprocess_executor.configured({"max_concurrent": int(raw)}, name="multiprocess")
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_config(env), name="celery")


def with_executor(defs, executor):
    """``defs`` with ``executor`` as the default executor of its jobs (unchanged if it has one)."""
    from dagster import Definitions

    if executor is None or defs.executor is not None:
        return defs
    return Definitions.merge(defs, Definitions(executor=executor))


def __getattr__(name: str):
    if name == "defs":
        from recon_pipeline.definitions import defs as base

        value = with_executor(base, executor_from_env())
        globals()["defs"] = value
        return value
    raise AttributeError(name)
