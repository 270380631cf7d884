"""Where a backfill window's time goes: ``python -m bench.window_profile`` (``make bench-window``).

``make bench-backfill`` says how long the week takes; this says why, and is the tool for comparing a
change. It backfills the first ``--windows`` windows of the week (:mod:`bench.week`) *in this process*
(``runner.backfill``, as ``recon-pipeline backfill`` does), against a fresh scratch Postgres database
and the emulator in its own process, and prints:

* each window's wall time and this process's CPU time (all its threads);
* the CPU time per window of every process the backfill keeps busy, read from ``/proc`` between the
  end of window ``--settle`` and the last one: this process, the emulator, the backfill's workers
  (the read-ahead) and Postgres. Their sum against the wall time says whether the machine's cores,
  not this process, are the limit: on the two cores measured in docs/performance.md about 1.4 of them were
  busy, and moving work into another process made no window faster;
* the median of the later windows, wall and CPU.

This machine drifts by ±15 % within minutes, so two runs of this command do not compare a change
reliably. Compare within one run instead: ``--toggle module:function`` calls ``function(on)`` (a
boolean) before every window, alternating on and off, and prints the median of the paired differences
(on minus off). Attach ``py-spy record -p <pid>`` (the pid is printed) for a profile of a window.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from bench import backfill as bench_backfill
from bench import scratch_db, week

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _postgres_pids() -> list[int]:
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                pids.append(int(comm.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def _processes(emulator_pid: int) -> dict[str, list[int]]:
    me = os.getpid()
    return {"this process (the backfill)": [me], "emulator": [emulator_pid],
            "backfill workers (read-ahead)": [p for p in _children(me) if p != emulator_pid],
            "postgres (all its processes)": _postgres_pids()}


def _sample(groups: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    return {name: {p: c for p in pids if (c := _cpu_seconds(p)) is not None} for name, pids in groups.items()}


def _toggle(spec: str):
    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--toggle wants module:function, not {spec!r}")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.window_profile", description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=60, help="windows of the week to backfill (default 60)")
    p.add_argument("--settle", type=int, default=5, help="windows left out of the CPU sample and medians")
    p.add_argument("--fills-per-window", type=int, default=10_000)
    p.add_argument("--toggle", default=None, help="module:function called with True / False on alternate windows")
    p.add_argument("--no-read-ahead", action="store_true", help="RECON_BACKFILL_READ_AHEAD=false")
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = p.parse_args(argv)
    if args.windows <= args.settle + 1:
        raise SystemExit("--windows must exceed --settle + 1")

    data = ROOT / ".recon" / "bench_cache" / f"week_{args.fills_per_window}_{week.WINDOWS}"
    if not (data / "scenario.json").exists():
        counts = week.write(data, fills_per_window=args.fills_per_window, windows=week.WINDOWS)
        print(f"generated {data.name}: {counts}", flush=True)
    name = "recon_bench_window_profile"
    url = bench_backfill._fresh_database(name, data)
    emulator, root, load_s = bench_backfill._start_emulator(data / "scenario.json")
    print(f"database loaded; emulator serving {data.name} ({load_s:.0f} s to load); pid {os.getpid()}", flush=True)
    for key in [k for k in os.environ if k.startswith(("RECON_", "DAGSTER_HOME"))]:
        del os.environ[key]  # as the bench's commands run: this environment only, an ephemeral instance
    os.environ.update(bench_backfill._env(url, root, None, "off"))
    if args.no_read_ahead:
        os.environ["RECON_BACKFILL_READ_AHEAD"] = "false"
    toggle = _toggle(args.toggle) if args.toggle else None
    try:
        from recon_pipeline import runner

        windows = pd.date_range(week.WEEK_START, periods=args.windows, freq="h")
        rows: list[tuple[float, float, bool | None]] = []
        on = True
        if toggle is not None:
            toggle(on)
        before = after = None
        t_before = t_after = 0.0
        t, c = time.perf_counter(), time.process_time()
        for i, outcome in enumerate(runner.backfill(windows[0], windows[-1], [week.PROFILE], apply=True)):
            t2, c2 = time.perf_counter(), time.process_time()
            rows.append((t2 - t, c2 - c, on if toggle is not None else None))
            flag = ("on   " if on else "off  ") if toggle is not None else ""
            print(f"{i:4d} wall {t2 - t:6.3f} s  cpu {c2 - c:6.3f} s  {flag}{outcome.summary()[:100]}", flush=True)
            if i == args.settle:
                before, t_before = _sample(_processes(emulator.pid)), time.perf_counter()
            if i == len(windows) - 1:  # before the backfill ends: its workers and connections close then
                after, t_after = _sample(_processes(emulator.pid)), time.perf_counter()
            if toggle is not None:
                on = not on
                toggle(on)
            t, c = time.perf_counter(), time.process_time()
    finally:
        emulator.terminate()
        emulator.wait()
        if not args.keep:
            scratch_db.drop(name)

    if before is None or after is None:
        raise SystemExit(f"the backfill stopped after {len(rows)} of {args.windows} windows")
    later = rows[args.settle + 1:]
    n = len(later)
    print(f"\nlater windows ({n}): median wall {statistics.median(r[0] for r in later):.3f} s, "
          f"median CPU of this process {statistics.median(r[1] for r in later):.3f} s; "
          f"all {len(rows)} windows {sum(r[0] for r in rows):.1f} s")
    span = t_after - t_before
    print(f"CPU per window over the later windows ({span / n:.3f} s of wall time each):")
    total = 0.0
    for group, now in after.items():
        used = sum(cpu - before[group].get(pid, 0.0) for pid, cpu in now.items())
        total += used
        print(f"  {group:34s} {1000 * used / n:7.0f} ms")
    print(f"  {'all of them':34s} {1000 * total / n:7.0f} ms = {total / span:.2f} cores busy on average "
          f"(this machine has {os.cpu_count()})")
    if toggle is not None:
        pairs = [(a, b) for a, b in zip(later[0::2], later[1::2], strict=False)]
        diffs = [(a[0] - b[0]) if a[2] else (b[0] - a[0]) for a, b in pairs]
        cpu = [(a[1] - b[1]) if a[2] else (b[1] - a[1]) for a, b in pairs]
        print(f"paired on - off ({len(pairs)} pairs): wall median {1000 * statistics.median(diffs):+.1f} ms "
              f"(mean {1000 * statistics.mean(diffs):+.1f}), CPU median {1000 * statistics.median(cpu):+.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
