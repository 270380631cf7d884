"""One measurement in a fresh process (so peak memory is its own): ``python -m bench.worker JOB ARGS``.

Jobs: ``gen N`` (build the cache), ``rules IMPL N REPEATS OUT``, ``suites N REPEATS OUT``. The result is
a pickle at OUT: times, working memory, peak RSS, and for ``rules`` the finding/correction key sets.
"""

from __future__ import annotations

import os
import pickle
import sys

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def _rules(impl: str, n: int, repeats: int, out: str) -> None:
    from bench import compare, measure
    from bench.generate import load_cached

    ds = load_cached(n).partition()
    sizes = ds.sizes()
    if impl == "pandas":
        from bench import impl_pandas

        def fn():
            f, c = impl_pandas.run(ds)
            return compare.finding_keys(f), compare.correction_keys(c), len(f), len(c)
    elif impl == "duckdb":
        from bench import impl_duckdb
        con = impl_duckdb.connect()

        def fn():
            f, c = impl_duckdb.run(ds, con)
            return f, c, len(f), len(c)
    elif impl == "loop":
        from bench import impl_loop
        records = impl_loop.to_records(ds)
        del ds

        def fn():
            f, c = impl_loop.run(records)
            return f, c, len(f), len(c)
    else:
        raise SystemExit(f"unknown impl {impl}")
    times, working, maxrss, (fk, ck, nf, nc) = measure.timed(fn, repeats)
    with open(out, "wb") as fh:
        pickle.dump({"times": times, "working": working, "maxrss": maxrss, "findings": fk, "corrections": ck,
                     "n_findings": nf, "n_corrections": nc, "sizes": sizes}, fh)


def _suites(n: int, repeats: int, out: str) -> None:
    """The output suites on ``n``-row findings and corrections frames (the rules' output, tiled)."""
    import numpy as np
    import pandas as pd

    from bench import impl_pandas, measure
    from bench.generate import load_cached, settings
    from recon_pipeline.validation.outputs import validate_outputs

    f, c = impl_pandas.run(load_cached(100_000).partition())
    c = c.loc[c["action"] == "BACKFILL_EXIT"]
    reps = -(-n // len(f))
    findings = pd.concat([f] * reps, ignore_index=True).iloc[:n].reset_index(drop=True)
    reps = -(-n // len(c))
    corr = pd.concat([c] * reps, ignore_index=True).iloc[:n].reset_index(drop=True)
    idx = np.arange(n).astype(str)
    corr["correction_id"] = pd.Series(idx, dtype="str").radd("c")
    corr["target_id"] = pd.Series(idx, dtype="str").radd("t")
    s = settings()
    validate_outputs(findings.head(100), corr.head(100), s)  # GE import and context: not part of the timing

    def fn():
        v = validate_outputs(findings, corr, s)
        assert v.success, v.describe()
        return v.success
    times, working, maxrss, _ = measure.timed(fn, repeats)
    with open(out, "wb") as fh:
        pickle.dump({"times": times, "working": working, "maxrss": maxrss, "rows": n}, fh)


def main(argv: list[str]) -> None:
    job = argv[0]
    if job == "gen":
        from bench.generate import load_cached
        ds = load_cached(int(float(argv[1])))
        print(ds.sizes(), ds.partition().sizes())
    elif job == "rules":
        _rules(argv[1], int(float(argv[2])), int(argv[3]), argv[4])
    elif job == "suites":
        _suites(int(float(argv[1])), int(argv[2]), argv[3])
    elif job == "io":
        from bench import io_bench
        io_bench.main(argv[1:])
    else:
        raise SystemExit(f"unknown job {job}")


if __name__ == "__main__":
    main(sys.argv[1:])
