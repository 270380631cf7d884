"""Partitions per minute through the Celery executor with N workers (numbers for docs/scaling.md).

    .venv/bin/python -m recon_pipeline_tests.scaling.measure --workers 1 2 [--hours 6]

Needs the local Postgres and Redis, like the scaling tests. Each measurement: fresh trading DB and
Dagster instance DB, the demo scenario on the emulator, N workers started and warmed up (their
first step imports the code location), then the timed backfill of hours x 3 profiles (reconcile
and apply runs, each profile's windows in order, profiles side by side).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

FIRST_WINDOW = pd.Timestamp("2026-11-30T04:00:00Z")
PROFILES = ("alpha", "beta", "gamma")


def measure(workers: int, hours: int) -> dict:
    from recon_pipeline_tests.scaling import world

    windows = list(pd.date_range(FIRST_WINDOW, periods=hours, freq="h"))
    with tempfile.TemporaryDirectory() as tmp, world.distributed_world(Path(tmp), workers) as dist:
        warm = time.monotonic()
        dist.warm_up()
        warm = time.monotonic() - warm
        started = time.monotonic()
        outcomes = dist.backfill(windows, PROFILES)
        seconds = time.monotonic() - started
        failed = [o for o in outcomes if not o.success]
        partitions = len(windows) * len(PROFILES)
        return {"workers": workers, "partitions": partitions, "runs": len(outcomes), "failed": len(failed),
                "seconds": round(seconds, 1), "warm_up_seconds": round(warm, 1),
                "partitions_per_minute": round(partitions / seconds * 60, 1),
                "steps_per_worker": dist.workers.tasks_per_worker(),
                "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hours", type=int, default=6)
    args = parser.parse_args()
    for n in args.workers:
        print(measure(n, args.hours), flush=True)


if __name__ == "__main__":
    main()
