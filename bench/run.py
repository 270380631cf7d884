"""``make bench`` / ``python -m bench.run``: every measurement of the benchmark in one run, one table.

Each measurement runs in its own process (``bench.worker``), so its peak memory is its own. Options:
``--sizes 1e5,1e6,5e6`` (default), ``--quick`` (1e5 only, small I/O, one repeat), ``--repeats N``,
``--skip-io``, ``--skip-suites``. Exit status 1 when implementations disagree (the diff is printed);
the PASS/FAIL of the targets is reported, not enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import compare
from bench.measure import median

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LOOP_MAX = 1_000_000


def _worker(args: list[str], timeout: float = 1800) -> dict | None:
    with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as fh:
        out = fh.name
    cmd = [sys.executable, "-m", "bench.worker", *args[:1], *args[1:], out] if args[0] != "io" else \
        [sys.executable, "-m", "bench.worker", "io", out, *args[1:]]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"  worker {' '.join(args)} exceeded {timeout:.0f} s: stopped", flush=True)
        return {"timeout": timeout}
    if proc.returncode != 0:
        print(f"  worker {' '.join(args)} failed:\n{proc.stderr[-3000:]}", flush=True)
        return None
    with open(out, "rb") as fh:
        res = pickle.load(fh)
    os.unlink(out)
    res["wall"] = time.perf_counter() - t0
    return res


def _mib(b) -> str:
    return "" if b is None else f"{b / 2**20:,.0f} MiB"


def _fmt_n(n: int) -> str:
    return f"{n:.0e}".replace("e+0", "e")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run")
    ap.add_argument("--sizes", default="1e5,1e6,5e6")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-io", action="store_true")
    ap.add_argument("--skip-suites", action="store_true")
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="seconds one rules measurement may take before it is stopped and reported as FAIL")
    a = ap.parse_args(argv)
    sizes = [int(float(s)) for s in ("1e5" if a.quick else a.sizes).split(",")]
    repeats = 1 if a.quick else a.repeats
    t_start = time.perf_counter()
    rows: list[tuple] = []         # step, size, impl, median s, working mem, runs
    ratios: list[tuple] = []       # name, value, target, pass
    failed = False
    rules: dict[tuple[int, str], dict] = {}

    print(f"load average at start: {os.getloadavg()}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, Python {platform.python_version()}")
    for n in sizes:
        t0 = time.perf_counter()
        gen = subprocess.run([sys.executable, "-m", "bench.worker", "gen", str(n)], cwd=ROOT, capture_output=True,
                             text=True)
        if gen.returncode:
            print(gen.stderr[-2000:])
            return 2
        print(f"data {_fmt_n(n)}: {gen.stdout.strip()} ({time.perf_counter() - t0:.0f} s)", flush=True)
        impls = ["pandas", "duckdb"] + (["loop"] if n <= LOOP_MAX else [])
        for impl in impls:
            r = _worker(["rules", impl, str(n), str(repeats if n < 5_000_000 else 1)], timeout=a.timeout)
            if r is None:
                failed = True
                continue
            if "timeout" in r:
                rows.append(("rules", n, impl + " (stopped)", a.timeout, None, 0, None))
                ratios.append((f"rules {impl} @{_fmt_n(n)} finished within --timeout", a.timeout, "finishes",
                               False))
                continue
            rules[(n, impl)] = r
            rows.append(("rules", n, impl, median(r["times"]), r["working"], len(r["times"]), r["maxrss"]))
            print(f"  rules {impl:7s} {_fmt_n(n)}: {median(r['times']):8.2f} s  working {_mib(r['working'])}"
                  f"  peak RSS {_mib(r['maxrss'])}  findings {r['n_findings']} corrections {r['n_corrections']}",
                  flush=True)
        base = rules.get((n, "pandas"))
        for impl in impls[1:]:
            other = rules.get((n, impl))
            if base is None or other is None:
                continue
            d = compare.diff("pandas", base["findings"], impl, other["findings"]) + \
                compare.diff("pandas", base["corrections"], impl, other["corrections"])
            if d:
                failed = True
                print(f"  DISAGREEMENT at {_fmt_n(n)} between pandas and {impl}:\n{d}", flush=True)
            else:
                print(f"  pandas == {impl} at {_fmt_n(n)}: {len(base['findings'])} finding keys, "
                      f"{len(base['corrections'])} correction keys", flush=True)

    def ratio(name, num, den, target, ok):
        if num is None or den is None:
            return
        v = num / den
        ratios.append((name, v, target, ok(v)))

    def med(n, impl, key="times"):
        r = rules.get((n, impl))
        return None if r is None else (median(r[key]) if key == "times" else r[key])

    for n in sizes:
        ratio(f"rules pandas/DuckDB time @{_fmt_n(n)}", med(n, "pandas"), med(n, "duckdb"), "<= 1.5", lambda v: v <= 1.5)
        # the issue sets the loop target at 1e6 fills; below that the ratio is shown for information
        ratio(f"rules loop/pandas time @{_fmt_n(n)}", med(n, "loop"), med(n, "pandas"),
              ">= 3" if n >= 1_000_000 else "(none below 1e6)", (lambda v: v >= 3) if n >= 1_000_000 else (lambda v: None))
        ratio(f"rules pandas/DuckDB working memory @{_fmt_n(n)}", med(n, "pandas", "working"),
              med(n, "duckdb", "working"), "<= 2", lambda v: v <= 2)
    if (5_000_000, "pandas") in rules:
        peak = rules[(5_000_000, "pandas")]["maxrss"]
        ratios.append(("rules pandas 5e6 peak RSS (GiB)", peak / 2**30, "< 8", peak / 2**30 < 8))

    if not a.skip_suites:
        n_s = 100_000 if a.quick else 1_000_000
        r = _worker(["suites", str(n_s), str(repeats)])
        if r:
            rows.append(("output suites", n_s, "GE (package)", median(r["times"]), r["working"], len(r["times"]),
                         r["maxrss"]))
            print(f"  suites {_fmt_n(n_s)} rows: {median(r['times']):.2f} s working {_mib(r['working'])}", flush=True)
            ref = med(n_s, "pandas") if (n_s, "pandas") in rules else None
            ratio(f"suites @{_fmt_n(n_s)} rows / rules pandas @{_fmt_n(n_s)} fills", median(r["times"]), ref,
                  "<= 2", lambda v: v <= 2)

    if not a.skip_io:
        n_rows, n_corr = (20_000, 5_000) if a.quick else (1_000_000, 100_000)
        r = _worker(["io", str(n_rows), str(n_corr), str(max(2, repeats - 1) if not a.quick else 1)])
        if r:
            for key, step, n in (("read_package", "snapshot read", n_rows), ("read_copy", "snapshot read", n_rows),
                                 ("read_copy_arrow", "snapshot read", n_rows), ("apply_package", "apply", n_corr),
                                 ("apply_copy_ref", "apply", n_corr), ("apply_executemany", "apply", n_corr)):
                impl = {"read_package": "read_trade_history (package)", "read_copy": "raw COPY TO STDOUT",
                        "read_copy_arrow": "COPY + pyarrow csv + conform",
                        "apply_package": "apply_batch (package)", "apply_copy_ref": "COPY temp + UPDATE FROM (ref)",
                        "apply_executemany": "executemany (ref)"}[key]
                rows.append((step, n, impl, median(r[key]["times"]), r[key].get("working"), len(r[key]["times"]), None))
                print(f"  {step} {impl}: {median(r[key]['times']):.2f} s", flush=True)
            m = {k: median(r[k]["times"]) for k in r if isinstance(r[k], dict) and "times" in r[k]}
            ratio("snapshot read package/COPY", m["read_package"], m["read_copy"], "<= 2", lambda v: v <= 2)
            ratio("apply package/COPY-ref", m["apply_package"], m["apply_copy_ref"], "<= 1.5", lambda v: v <= 1.5)
            ratio("apply executemany/package", m["apply_executemany"], m["apply_package"], ">= 3", lambda v: v >= 3)

    total = time.perf_counter() - t_start
    table = ["| step | size | implementation | median s | working memory | runs | peak RSS |",
             "|---|---|---|---:|---:|---:|---:|"]
    for step, n, impl, t, w, runs, peak in rows:
        table.append(f"| {step} | {_fmt_n(n)} | {impl} | {t:.2f} | {_mib(w)} | {runs} | {_mib(peak)} |")
    rtable = ["| ratio | measured | target | result |", "|---|---:|---|---|"]
    for name, v, target, ok in ratios:
        rtable.append(f"| {name} | {v:.2f} | {target} | {'-' if ok is None else 'PASS' if ok else 'FAIL'} |")
    load = os.getloadavg()
    agree = "implementations agree" if not failed else "IMPLEMENTATIONS DISAGREE (or a worker failed): see above"
    text = "\n".join(table) + "\n\n" + "\n".join(rtable) + f"\n\n{agree}; total wall time {total / 60:.1f} min; load average at the end {load}\n"
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text(text)
    (RESULTS / "latest.json").write_text(json.dumps({"rows": rows, "ratios": ratios, "failed": failed,
                                                     "total_s": total}, default=str, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
