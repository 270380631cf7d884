"""End to end: one (hour x profile) partition at 1e6 fills through the real Dagster job.

``python -m bench.e2e [--size 1e6]`` (in its own process, so the peak RSS is this partition's):

* the trading DB side is real: the generated data set (:mod:`bench.generate`, both accounts) is
  loaded into a scratch Postgres database and the ``db_snapshot`` asset reads it (COPY path);
* the exchange side is the generated frames handed to the real ``exchange_snapshot`` asset in place
  of the ccxt fetch (``_fetch_account`` is replaced, nothing else): parsing 1e6 fills in ccxt costs
  about a minute of the exchange client's own time, which ``bench.backfill`` and the fetch tests
  measure through the emulator; here the question is the pipeline's time, and the asset's
  structure suite and row validation still run on the frames;
* **through Dagster**: ``runner.reconcile_partition`` (the job ``recon-pipeline reconcile`` runs:
  in-process executor, in-memory IO manager, ephemeral instance), run twice (cold: first run of the
  process; warm: imports, GE suites and caches ready), per-step durations from the event log;
* **multiprocess**: the same partition with ``RECON_EXECUTOR=multiprocess`` (the step in its own
  process, the filesystem IO manager pickling every output), as a deployment without in-process
  execution runs it;
* **standalone**: the step's own function called directly (no executor, no IO manager, no event
  log), with the time of its three stages (snapshot, rules, reports): the sum of the steps.

The partition is the live run of window 2026-11-30T09:00Z of profile ``p_alpha`` (as ``bench.run``).
"""

from __future__ import annotations

import argparse
import inspect
import os
import pickle
import resource
import sys
import time

import pandas as pd

from bench import scratch_db
from bench.generate import NOW, RUNNING_PROFILE, WINDOW_START, load_cached

DB = "recon_bench_e2e"
TABLES = {
    "profiles": ["profile_id", "exchange", "account", "market_type", "sub_tag", "allocated_capital_usd",
                 "trading_paused"],
    "trade_history": ["trade_id", "profile_id", "symbol", "side", "status", "entry_qty", "entry_price", "entry_time",
                      "entry_client_order_id", "exit_qty", "exit_price", "exit_time", "exit_source", "updated_at"],
    "orders": ["order_id", "profile_id", "trade_id", "symbol", "side", "role", "order_type", "qty", "price",
               "filled_qty", "avg_fill_price", "status", "exchange_order_id", "client_order_id", "created_at",
               "updated_at"],
    "recon_parity_streaks": ["trade_id", "profile_id", "streak", "first_seen_window", "last_window_start",
                             "updated_at"],
}
PICKLE = "(pickle dump + load of every output)"
ORDER = ("reconcile_window",)  # the job's one step
STAGES = ("snapshot", "rules", "reports")  # its stages, timed in the standalone call


def load_database(ds) -> str:
    streaks = ds.streaks.assign(updated_at=NOW - pd.Timedelta(hours=1))
    frames = {"profiles": ds.profiles, "trade_history": ds.slices, "orders": ds.db_orders,
              "recon_parity_streaks": streaks}

    def fill(cur) -> None:
        for table, cols in TABLES.items():
            scratch_db.copy_frame(cur, table, frames[table][cols])
    return scratch_db.create(DB, fill)


def install_prebuilt_exchange(part) -> None:
    """Replace the ccxt fetch of the exchange snapshot asset by the generated frames of the account
    (``part``: a partition Dataset, or a function returning one when first needed)."""
    from recon_pipeline.assets import snapshots

    def prebuilt(clients, account, window, market_types, db_trade_history, db_orders, grace_minutes, **_):
        ds = part() if callable(part) else part
        clock = snapshots.snapshot_clock(window, NOW, db_trade_history, grace_minutes)
        symbols = sorted(set(ds.fills["symbol"]))
        return NOW, clock, ds.markets, ds.positions, ds.fills, ds.exchange_orders, symbols

    snapshots._fetch_account = prebuilt


def _env() -> None:
    from recon_pipeline.settings import account_env_prefix

    for account in ("acctA", "acctB"):  # the client is built, never called
        os.environ[account_env_prefix(account) + "API_KEY"] = "bench"
        os.environ[account_env_prefix(account) + "SECRET"] = "bench-secret"


def through_dagster(url: str) -> tuple[float, dict[str, float], object]:
    from recon_pipeline.runner import get_instance, reconcile_partition

    instance = get_instance()
    t0 = time.perf_counter()
    outcome = reconcile_partition(WINDOW_START, RUNNING_PROFILE, db_url=url, instance=instance)
    wall = time.perf_counter() - t0
    if not outcome.success:
        raise SystemExit(f"run failed: {outcome.error}")
    return wall, step_durations(instance, outcome.run_id), outcome


def step_durations(instance, run_id: str) -> dict[str, float]:
    """Seconds from each step's start to its success, from the run's event log."""
    from dagster import DagsterEventType

    starts, steps = {}, {}
    for rec in instance.all_logs(run_id):
        ev = rec.dagster_event
        if ev is None or ev.step_key is None:
            continue
        if ev.event_type == DagsterEventType.STEP_START:
            starts[ev.step_key] = rec.timestamp
        elif ev.event_type == DagsterEventType.STEP_SUCCESS:
            steps[ev.step_key] = rec.timestamp - starts[ev.step_key]
    return steps


def standalone(url: str) -> tuple[float, dict[str, float]]:
    """Each asset's own function, called directly in dependency order (no executor, no IO manager)."""
    from dagster import AssetCheckResult, Output, build_asset_context

    from recon_pipeline.definitions import defs
    from recon_pipeline.partitions import partition_key
    from recon_pipeline.resources import ExchangeClients, ReconConfig, TradingDatabase

    resources = {"trading_db": TradingDatabase(url=url), "exchange": ExchangeClients(), "recon_config": ReconConfig()}
    by_op = {}
    job = defs.resolve_job_def("reconcile")
    for node in job.graph.node_defs:
        by_op[node.name] = node
    values: dict[str, object] = {}
    times: dict[str, float] = {}
    pk = partition_key(WINDOW_START, RUNNING_PROFILE)
    for name in ORDER:
        op = by_op[name]
        fn = op.compute_fn.decorated_fn
        params = list(inspect.signature(fn).parameters)
        kwargs = {}
        for p in params[1:] if params and params[0] == "context" else params:
            kwargs[p] = resources[p] if p in resources else values[p]
        context = build_asset_context(partition_key=pk, resources=resources)
        t0 = time.perf_counter()
        result = fn(context, **kwargs) if params and params[0] == "context" else fn(**kwargs)
        outs = list(_timed_stages(result, times)) if inspect.isgenerator(result) else [result]
        times[name] = time.perf_counter() - t0
        for out in outs:
            if isinstance(out, AssetCheckResult):
                continue
            value = out.value if isinstance(out, Output) else out
            values[out.output_name if isinstance(out, Output) and out.output_name != "result" else name] = value
    pickle_s = 0.0
    for value in values.values():  # what the filesystem IO manager does between step processes
        t0 = time.perf_counter()
        pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        pickle_s += time.perf_counter() - t0
    times["(pickle dump + load of every output)"] = pickle_s
    return sum(v for k, v in times.items() if k in ORDER), times


def _timed_stages(events, times: dict[str, float]):
    """Pass the step's events through, adding the time spent producing each to its stage's total."""
    from dagster import Output

    from recon_pipeline.assets.reconciliation import RULE_OUTS
    from recon_pipeline.assets.reports import REPORT_OUTS

    stage_of = {**dict.fromkeys(RULE_OUTS, "rules"), **dict.fromkeys(REPORT_OUTS, "reports")}
    t0 = time.perf_counter()
    for event in events:
        name = event.output_name if isinstance(event, Output) else event.asset_key.path[-1]  # or a check result
        stage = stage_of.get(name, "snapshot")
        times[f"  {stage}"] = times.get(f"  {stage}", 0.0) + time.perf_counter() - t0
        yield event
        t0 = time.perf_counter()


MULTIPROCESS_RUN = """
import os, sys, time
from dagster import DagsterInstance, execute_job
from bench.e2e import step_durations
from dagster._core.definitions.reconstruct import ReconstructableRepository
from bench.generate import RUNNING_PROFILE, WINDOW_START
from recon_pipeline.partitions import partition_key, sync_profile_partitions
repo = ReconstructableRepository.for_module("bench.e2e_location", "defs", working_directory=os.getcwd())
job = repo.get_reconstructable_job("reconcile")
with DagsterInstance.get() as instance:
    sync_profile_partitions(instance, ["p_alpha", "p_beta", "p_g1", "p_g12", "p_gamma"])
    tags = dict(job.get_definition().get_tags_for_partition_key(partition_key(WINDOW_START, RUNNING_PROFILE),
                                                                selected_asset_keys=None))
    t0 = time.perf_counter()
    result = execute_job(job, instance=instance, tags=tags, raise_on_error=False)
    wall = time.perf_counter() - t0
    print("RESULT", result.success, wall, repr(step_durations(instance, result.run_id)))
"""


def multiprocess(url: str, size: int) -> tuple[float, dict[str, float]]:
    """The partition as a launched run with one process per step and the pickling filesystem IO manager."""
    import ast
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DAGSTER_HOME": home, "RECON_EXECUTOR": "multiprocess", "RECON_DATABASE_URL": url,
               "RECON_BENCH_E2E_SIZE": str(size), "PYTHONPATH": os.getcwd()}
        open(os.path.join(home, "dagster.yaml"), "w").write(
            "python_logs:\n  python_log_level: WARNING\ntelemetry:\n  enabled: false\n")
        out = subprocess.run([sys.executable, "-c", MULTIPROCESS_RUN], env=env, capture_output=True, text=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None or line.split()[1] != "True":
        raise SystemExit(f"multiprocess run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    _, _, wall, steps = line.split(" ", 3)
    return float(wall), ast.literal_eval(steps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1e6")
    p.add_argument("--skip-multiprocess", action="store_true")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    n = int(float(args.size))
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.pop("DAGSTER_HOME", None)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    ds = load_cached(n)
    part = ds.partition()
    t0 = time.perf_counter()
    url = load_database(ds)
    print(f"database loaded: {len(ds.slices):,} slices, {len(ds.db_orders):,} orders ({time.perf_counter() - t0:.0f} s); "
          f"exchange frames of acctA: {len(part.fills):,} fills, {len(part.exchange_orders):,} orders", flush=True)
    _env()
    install_prebuilt_exchange(part)
    del ds
    try:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cold, cold_steps, outcome = through_dagster(url)
        print(f"  dagster in-process, cold: {cold:6.1f} s  {outcome.summary()[:160]}", flush=True)
        warm, warm_steps, _ = through_dagster(url)
        print(f"  dagster in-process, warm: {warm:6.1f} s", flush=True)
        rss_dagster = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        alone, alone_steps = standalone(url)
        print(f"  standalone (sum of steps): {alone:6.1f} s", flush=True)
        mp, mp_steps = (float("nan"), {}) if args.skip_multiprocess else multiprocess(url, n)
        print(f"  dagster multiprocess: {mp:6.1f} s", flush=True)
    finally:
        if not args.keep:
            scratch_db.drop(DB)
    nan = float("nan")
    rows = [(s, warm_steps.get(s, nan), mp_steps.get(s, nan), alone_steps.get(s, nan)) for s in ORDER]
    rows += [(f"  {s} (stage)", nan, nan, alone_steps.get(f"  {s}", nan)) for s in STAGES]
    print("\n| step | in-process run (warm), s | multiprocess run, s | standalone, s |\n|---|---:|---:|---:|")
    for s, a, m, b in rows:
        print(f"| {s} | {a:.2f} | {m:.2f} | {b:.2f} |")
    ratio = warm / alone
    print(f"| {PICKLE} | - | (in the steps) | {alone_steps.get(PICKLE, nan):.2f} |")
    print(f"| **partition wall** | **{warm:.1f}** (cold {cold:.1f}) | **{mp:.1f}** | **{alone:.1f}** (sum) |")
    print(f"\nend-to-end / sum of steps: in-process {ratio:.2f} (target <= 2) -> {'PASS' if ratio <= 2 else 'FAIL'}; "
          f"multiprocess {mp / alone:.2f}")
    print(f"Dagster's own share of the warm run: {warm - sum(warm_steps.values()):.1f} s outside steps, "
          f"{sum(warm_steps.values()) - alone:.1f} s inside steps beyond their own work")
    print(f"peak RSS: {rss_dagster:,.0f} MiB (inputs loaded: {rss0:,.0f} MiB)")
    print(f"load average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
