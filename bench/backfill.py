"""Backfill throughput, as an analyst runs it: ``python -m bench.backfill``.

A week (168 hourly windows) of one profile with about 1e4 fills per window (:mod:`bench.week`),
served by the loopback emulator (``recon-pipeline emulator``, its own process) through real ccxt,
against two scratch Postgres databases loaded with the same trading rows:

* **one window alone**: ``recon-pipeline reconcile --window W --profile p_week --apply``, one fresh
  process per window, for the first ``--separate`` windows (default 8), on database ``..._single``;
  their median wall time is the unit;
* **the week**: ``recon-pipeline backfill --from W0 --to W167 --profile p_week --apply``, one process,
  on database ``..._backfill``; wall time, and the time of each window from the moment its summary
  line is printed;
* **identical results**: the findings, corrections (ids, actions, targets, states, statuses) and run
  counts of the separately run windows equal those of the same windows in the backfill (a later
  window's result depends only on the earlier windows applied before it, so the first K windows are
  comparable one for one); ``--separate 168`` compares the whole week. A difference fails the bench.

Both commands run with ``DAGSTER_HOME`` unset (an ephemeral instance, the CLI's default) unless
``--dagster-home`` is given. The start-up cost is measured apart: ``import recon_pipeline.definitions``
and ``recon-pipeline --help`` in fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from bench import scratch_db, week

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TABLE_ORDER = ("profiles", "trade_history", "orders", "positions", "capital_ledger")
FINDING_COLS = ["window_start", "kind", "reason", "symbol", "trade_id", "exchange_order_id", "client_order_id",
                "fill_ids", "attribution", "qty_db", "qty_exchange", "notional_usd"]
CORRECTION_COLS = ["correction_id", "action", "target_table", "target_id", "expected_state", "new_state", "status"]
RUN_COLS = ["window_start", "status", "mismatch_count", "missing_from_exchange", "missing_in_db", "no_go_count",
            "correction_count"]


def _fresh_database(name: str, data: Path) -> str:
    def fill(cur) -> None:
        for table in TABLE_ORDER:
            scratch_db.copy_csv_file(cur, table, data / f"{table}.csv")
    return scratch_db.create(name, fill)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_emulator(scenario: Path) -> tuple[subprocess.Popen, str, float]:
    port = _free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "recon-pipeline"), "emulator", "--scenario", str(scenario), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"emulator exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(root + "/api/v3/time", timeout=1).read()
            return proc, root, time.perf_counter() - t0
        except OSError:
            time.sleep(0.5)


def _env(db_url: str, exchange_url: str, dagster_home: str | None, rate_limit: str = "on") -> dict[str, str]:
    from recon_pipeline.settings import account_env_prefix

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECON_", "DAGSTER_HOME"))}
    prefix = account_env_prefix(week.ACCOUNT)
    env.update({"RECON_DATABASE_URL": db_url, prefix + "API_KEY": week.API_KEY, prefix + "SECRET": week.SECRET,
                prefix + "URL": exchange_url, prefix + "RATE_LIMIT": rate_limit, "GX_ANALYTICS_ENABLED": "False"})
    if dagster_home:
        env["DAGSTER_HOME"] = dagster_home
    return env


def _iso(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, list[tuple[float, str]]]:
    """Wall time of ``cmd`` and each stdout line with the time it arrived (from the start)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines = [(time.perf_counter() - t0, line.rstrip()) for line in proc.stdout]
    err = proc.stderr.read()
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(cmd[1:4])} failed ({proc.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - t0, lines


def _results(url: str, windows: list[pd.Timestamp]) -> dict[str, pd.DataFrame]:
    engine = sa.create_engine(url)
    lo, hi = windows[0].to_pydatetime(), windows[-1].to_pydatetime()
    with engine.connect() as conn:
        def q(sql: str) -> pd.DataFrame:
            r = conn.execute(sa.text(sql), {"lo": lo, "hi": hi})
            return pd.DataFrame(r.fetchall(), columns=list(r.keys()))
        out = {
            "findings": q(f"SELECT {', '.join(FINDING_COLS)} FROM recon_findings "
                          "WHERE window_start BETWEEN :lo AND :hi"),
            "corrections": q(f"SELECT b.window_start, {', '.join('c.' + c for c in CORRECTION_COLS)} "
                             "FROM recon_corrections c JOIN recon_batches b USING (batch_id) "
                             "WHERE b.window_start BETWEEN :lo AND :hi"),
            "runs": q(f"SELECT {', '.join(RUN_COLS)} FROM recon_runs WHERE window_start BETWEEN :lo AND :hi"),
        }
    engine.dispose()
    for name, frame in out.items():
        frame = frame.astype(str)
        out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


def _startup(env: dict[str, str]) -> dict[str, float]:
    out = {}
    for label, cmd in (("python -c 'import recon_pipeline.definitions'",
                        [sys.executable, "-c", "import recon_pipeline.definitions"]),
                       ("recon-pipeline --help", [str(BIN / "recon-pipeline"), "--help"])):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
            times.append(time.perf_counter() - t0)
        out[label] = statistics.median(times)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__.splitlines()[0])
    p.add_argument("--fills-per-window", type=int, default=10_000)
    p.add_argument("--windows", type=int, default=week.WINDOWS)
    p.add_argument("--separate", type=int, default=8, help="windows also run one process each (compared)")
    p.add_argument("--dagster-home", default=None, help="run both with this DAGSTER_HOME (persistent instance)")
    p.add_argument("--keep", action="store_true", help="keep the scratch databases")
    p.add_argument("--rate-limit", choices=("on", "off"), default="off",
                   help="ccxt's request throttle (RECON_EXCHANGE_WEEK_RATE_LIMIT); the emulator has no limits")
    args = p.parse_args(argv)
    separate = min(args.separate, args.windows)

    print(f"load average at start: {os.getloadavg()}", flush=True)
    data = ROOT / ".recon" / "bench_cache" / f"week_{args.fills_per_window}_{args.windows}"
    if not (data / "scenario.json").exists():
        t0 = time.perf_counter()
        counts = week.write(data, fills_per_window=args.fills_per_window, windows=args.windows)
        print(f"generated {data.name}: {counts} ({time.perf_counter() - t0:.0f} s)", flush=True)
    names = {"single": "recon_bench_week_single", "backfill": "recon_bench_week_backfill"}
    t0 = time.perf_counter()
    urls = {k: _fresh_database(v, data) for k, v in names.items()}
    print(f"databases loaded ({time.perf_counter() - t0:.0f} s)", flush=True)
    emulator, root, load_s = _start_emulator(data / "scenario.json")
    print(f"emulator serving {data.name} ({load_s:.0f} s to load)", flush=True)
    windows = list(pd.date_range(week.WEEK_START, periods=args.windows, freq="h"))
    rec = str(BIN / "recon-pipeline")
    try:
        startup = _startup(_env(urls["single"], root, args.dagster_home, args.rate_limit))
        singles = []
        for w in windows[:separate]:
            wall, lines = _timed([rec, "reconcile", "--window", _iso(w), "--profile", week.PROFILE, "--apply"],
                                 _env(urls["single"], root, args.dagster_home, args.rate_limit))
            singles.append(wall)
            print(f"  one window alone {_iso(w)}: {wall:6.2f} s  {lines[-1][1][:150] if lines else ''}", flush=True)
        rss_single = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        wall, lines = _timed([rec, "backfill", "--from", _iso(windows[0]), "--to", _iso(windows[-1]),
                              "--profile", week.PROFILE, "--apply"], _env(urls["backfill"], root, args.dagster_home, args.rate_limit))
        rss_all = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        arrivals = [t for t, line in lines if line.startswith("window=")]
        per_window = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
        print(f"  the week in one backfill: {wall:.1f} s, {len(arrivals)} windows", flush=True)
        ours, theirs = _results(urls["backfill"], windows[:separate]), _results(urls["single"], windows[:separate])
        agree = all(ours[k].equals(theirs[k]) for k in ours)
        for k in ours:
            if not ours[k].equals(theirs[k]):
                print(f"DISAGREE on {k}:\n backfill:\n{ours[k].head(20)}\n separate:\n{theirs[k].head(20)}")
        whole = _results(urls["backfill"], windows)
    finally:
        emulator.terminate()
        emulator.wait()
        if not args.keep:
            for name in names.values():
                scratch_db.drop(name)

    one = statistics.median(singles)
    ratio = wall / one
    rows = [
        ("data", f"{args.windows} windows x ~{args.fills_per_window:,} fills; emulator load {load_s:.0f} s; "
                 f"ccxt throttle {args.rate_limit}"),
        ("start-up: import recon_pipeline.definitions", f"{startup[next(iter(startup))]:.2f} s"),
        ("start-up: recon-pipeline --help", f"{startup['recon-pipeline --help']:.2f} s"),
        ("one window alone (median of separate processes)",
         f"{one:.2f} s (min {min(singles):.2f}, max {max(singles):.2f}, n={len(singles)})"),
        ("the week, one backfill process", f"{wall:.1f} s"),
        ("  first window (incl. start-up)", f"{arrivals[0]:.2f} s" if arrivals else "-"),
        ("  later windows, median / max", f"{statistics.median(per_window):.2f} / {max(per_window):.2f} s"
         if per_window else "-"),
        ("backfill / one window (target <= 20)", f"{ratio:.1f} -> {'PASS' if ratio <= 20 else 'FAIL'}"),
        ("peak RSS of a child (separate runs / incl. backfill)", f"{rss_single / 1024:.0f} / {rss_all / 1024:.0f} MiB"),
        ("week totals", f"findings {len(whole['findings'])}, corrections {len(whole['corrections'])}, "
                        f"runs {len(whole['runs'])}"),
        (f"results of the first {separate} windows", "identical" if agree else "DIFFERENT"),
    ]
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"| {a:<{width}} | {b} |" for a, b in rows)
    print("\n| measurement | value |\n|---|---|\n" + table)
    print(f"load average at the end: {os.getloadavg()}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "backfill.md").write_text("| measurement | value |\n|---|---|\n" + table + "\n")
    (out / "backfill.json").write_text(json.dumps({"one_window_s": singles, "backfill_s": wall,
                                                   "per_window_s": per_window, "ratio": ratio, "agree": agree,
                                                   "startup_s": startup}, indent=1))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
