"""I/O against the real Postgres, in a scratch database that is dropped at the end.

* snapshot read of ``n_rows`` trade_history rows: the package's ``read.read_trade_history`` vs the same
  SELECT as a raw ``COPY ... TO STDOUT`` into memory (and, as the suggested fix, that COPY parsed by
  pyarrow's CSV reader and conformed to the schema);
* apply of ``n_corr`` BACKFILL_EXIT corrections: the package's ``apply_batch`` vs a reference COPY into
  a temp table + one ``UPDATE ... FROM`` (+ the outcomes, also set-based) vs per-row ``executemany``.
  Each run starts from the same state (targets reset, a fresh PENDING batch), not timed.

``python -m bench.worker io OUT N_ROWS N_CORR REPEATS [DSN_ADMIN]``
"""

from __future__ import annotations

import io
import json
import pickle
import sys
import time

import numpy as np
import pandas as pd
import psycopg2

from bench import measure
from bench.generate import WINDOW_START
from bench.scratch_db import copy_frame

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
DB = "recon_bench_scratch"


def _dsn(admin: str, db: str) -> str:
    return " ".join(p for p in admin.split() if not p.startswith("dbname=")) + f" dbname={db}"


def _trade_history(n: int, rng) -> pd.DataFrame:
    now = WINDOW_START + pd.Timedelta(hours=1, minutes=5)
    entry = now - pd.to_timedelta(rng.uniform(600, 6 * 3600, n), unit="s")
    status = np.where(rng.random(n) < 0.3, "OPEN", "CLOSED")
    qty = np.round(rng.integers(1, 5000, n) * 0.001, 3)
    closed = status == "CLOSED"
    exit_time = pd.Series(entry + pd.Timedelta(minutes=3)).where(closed)
    return pd.DataFrame({
        "trade_id": [f"t{i:08d}" for i in range(n)],
        "profile_id": rng.choice(["p_alpha", "p_beta", "p_g1", "p_g12"], n),
        "symbol": [f"B{b}/USDT:USDT" for b in rng.integers(0, 100, n)],
        "side": np.where(rng.random(n) < 0.5, "long", "short"), "status": status, "entry_qty": qty,
        "entry_price": np.round(rng.uniform(1, 1000, n), 4), "entry_time": entry.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
        "entry_client_order_id": [f"alpha-e-t{i:08d}" for i in range(n)],
        "exit_qty": np.where(closed, qty, 0.0), "exit_price": np.where(closed, 10.0, np.nan),
        "exit_time": exit_time.dt.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
        "exit_source": np.where(closed, "exchange", None),
        "updated_at": entry.strftime("%Y-%m-%d %H:%M:%S.%f+00")})


READ_SQL = """
    SELECT t.trade_id, t.profile_id, p.account, t.symbol, t.side, t.status, t.entry_qty,
           t.entry_price, t.entry_time, t.entry_client_order_id, t.exit_qty, t.exit_price,
           t.exit_time, t.exit_source, t.updated_at
      FROM trade_history t JOIN profiles p ON p.profile_id = t.profile_id
     WHERE p.account = %(account)s
       AND (t.status = 'OPEN' OR (t.updated_at >= %(start)s AND t.updated_at < %(end)s)
            OR t.exit_time >= %(since)s OR t.entry_time >= %(since)s)
     ORDER BY t.trade_id"""


def main(argv: list[str]) -> None:
    out, n_rows, n_corr, repeats = argv[0], int(float(argv[1])), int(float(argv[2])), int(argv[3])
    admin = argv[4] if len(argv) > 4 else ADMIN_DSN
    rng = np.random.default_rng(11)
    res: dict = {}
    a = psycopg2.connect(admin)
    a.autocommit = True
    a.cursor().execute(f"DROP DATABASE IF EXISTS {DB}")
    a.cursor().execute(f"CREATE DATABASE {DB}")
    try:
        res = _run(_dsn(admin, DB), n_rows, n_corr, repeats, rng)
    finally:
        a.cursor().execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        a.close()
    with open(out, "wb") as fh:
        pickle.dump(res, fh)


def _run(dsn: str, n_rows: int, n_corr: int, repeats: int, rng) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from recon_pipeline import schemas
    from recon_pipeline.apply.applier import apply_batch
    from recon_pipeline.db import migrate, read
    from recon_pipeline.db.engine import make_engine

    url = "postgresql://" + "postgres@127.0.0.1:5432/" + DB
    engine = make_engine(url)
    migrate.upgrade(engine)
    raw = psycopg2.connect(dsn)
    cur = raw.cursor()
    cur.execute("INSERT INTO profiles (profile_id, exchange, account, market_type, sub_tag, allocated_capital_usd)"
                " VALUES ('p_alpha','binance','acctA','swap','alpha',5e6), ('p_beta','binance','acctA','swap','beta',2e6),"
                " ('p_g1','binance','acctA','spot','g1',1e6), ('p_g12','binance','acctA','spot','g12',1e6)")
    th = _trade_history(n_rows, rng)
    copy_frame(cur, "trade_history", th)
    raw.commit()
    raw.autocommit = True
    cur.execute("VACUUM ANALYZE trade_history")
    raw.autocommit = False
    res: dict = {"n_rows": n_rows, "n_corr": n_corr}

    # ---- snapshot read ----------------------------------------------------------------------------
    ws, we = WINDOW_START, WINDOW_START + pd.Timedelta(hours=1)

    def package_read():
        with engine.connect() as conn:
            return read.read_trade_history(conn, "acctA", ws, we, 5.0)

    oldest = pd.Timestamp(th.loc[th["status"] == "OPEN", "entry_time"].min()) - pd.Timedelta(minutes=5)
    params = {"account": "acctA", "start": ws.to_pydatetime(), "end": we.to_pydatetime(),
              "since": min(ws, oldest).to_pydatetime()}
    copy_sql = "COPY (" + cur.mogrify(READ_SQL, params).decode() + ") TO STDOUT WITH (FORMAT csv, HEADER)"

    def raw_copy():
        buf = io.BytesIO()
        c = raw.cursor()
        c.execute("SELECT min(t.entry_time) FROM trade_history t JOIN profiles p ON p.profile_id = t.profile_id"
                  " WHERE p.account = 'acctA' AND t.status = 'OPEN'")
        c.fetchone()
        c.copy_expert(copy_sql, buf)
        raw.commit()
        return buf

    def copy_arrow():
        buf = raw_copy()
        tbl = pacsv.read_csv(pa.BufferReader(buf.getvalue()),
                             convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
        return schemas.conform(tbl.to_pandas(), schemas.TRADE_HISTORY, name="db_trade_history")

    for name, fn in (("read_package", package_read), ("read_copy", raw_copy), ("read_copy_arrow", copy_arrow)):
        times, working, maxrss, result = measure.timed(fn, repeats)
        res[name] = {"times": times, "working": working}
        n = len(result) if isinstance(result, pd.DataFrame) else None
        res[name]["rows"] = n
    res["read_rows"] = res["read_package"]["rows"]
    assert res["read_rows"] == res["read_copy_arrow"]["rows"] == n_rows, res

    # ---- apply ----------------------------------------------------------------------------------------
    open_ids = th.loc[th["status"] == "OPEN"].head(n_corr)
    assert len(open_ids) == n_corr, "not enough OPEN slices for the apply benchmark"
    targets = open_ids["trade_id"].tolist()
    counter = {"i": 0}

    def prepare() -> str:
        """Reset the targets to OPEN and store a fresh PENDING batch of n_corr corrections (not timed)."""
        i = counter["i"] = counter["i"] + 1
        window = WINDOW_START + pd.Timedelta(hours=i)
        c = raw.cursor()
        c.execute("UPDATE trade_history SET status = 'OPEN', exit_qty = 0, exit_price = NULL, exit_time = NULL,"
                  " exit_source = NULL WHERE trade_id = ANY(%s)", (targets,))
        batch = f"bench-{i}"
        c.execute("INSERT INTO recon_batches (batch_id, window_start, profile_id, run_id, status, n_corrections,"
                  " validation, created_at) VALUES (%s, %s, 'p_alpha', 'bench', 'PENDING', %s, '{}', now())",
                  (batch, window.to_pydatetime(), n_corr))
        exit_time = (window + pd.Timedelta(minutes=30)).isoformat()
        new = [json.dumps({"status": "CLOSED", "exit_qty": q, "exit_price": 10.5, "exit_time": exit_time,
                           "exit_source": "backfill", "exit_fees": {"USDT": 0.01}}, sort_keys=True)
               for q in open_ids["entry_qty"].tolist()]
        df = pd.DataFrame({
            "batch_id": batch, "correction_id": [f"c{i}-{j}" for j in range(n_corr)],
            "window_start": window.isoformat(), "profile_id": "p_alpha", "action": "BACKFILL_EXIT",
            "target_table": "trade_history", "target_id": targets,
            "expected_state": '{"exit_qty":0.0,"status":"OPEN"}', "new_state": new, "evidence": "{}",
            "attribution": "client_order_id", "notional_usd": 1.0, "status": "PENDING"})
        copy_frame(c, "recon_corrections", df)
        raw.commit()
        return batch

    def check(batch: str) -> None:
        c = raw.cursor()
        c.execute("SELECT count(*) FROM trade_history WHERE trade_id = ANY(%s) AND status = 'CLOSED'", (targets,))
        closed = c.fetchone()[0]
        c.execute("SELECT count(*) FROM recon_corrections WHERE batch_id = %s AND status = 'APPLIED'", (batch,))
        applied = c.fetchone()[0]
        raw.commit()
        assert closed == applied == n_corr, (batch, closed, applied)

    def copy_reference(batch: str) -> None:
        c = raw.cursor()
        c.execute("SELECT pg_try_advisory_xact_lock(42)")
        buf = io.BytesIO()
        c.copy_expert(f"COPY (SELECT correction_id, target_id, expected_state, new_state FROM recon_corrections"
                      f" WHERE batch_id = '{batch}' AND status = 'PENDING') TO STDOUT WITH (FORMAT csv)", buf)
        rows = pd.read_csv(io.BytesIO(buf.getvalue()), header=None, names=["cid", "target", "exp", "new"],
                           dtype=str, keep_default_na=False)
        exp = pd.json_normalize([json.loads(v) for v in rows["exp"]])
        new = pd.json_normalize([json.loads(v) for v in rows["new"]])
        stage = pd.DataFrame({"cid": rows["cid"], "target": rows["target"], "exp_status": exp["status"],
                              "exp_exit_qty": exp["exit_qty"], "new_status": new["status"],
                              "new_exit_qty": new["exit_qty"], "new_exit_price": new["exit_price"],
                              "new_exit_time": new["exit_time"], "new_exit_source": new["exit_source"]})
        c.execute("CREATE TEMP TABLE stage (cid text, target text, exp_status text, exp_exit_qty numeric,"
                  " new_status text, new_exit_qty numeric, new_exit_price numeric, new_exit_time timestamptz,"
                  " new_exit_source text) ON COMMIT DROP")
        copy_frame(c, "stage", stage)
        c.execute("CREATE TEMP TABLE applied ON COMMIT DROP AS WITH u AS ("
                  " UPDATE trade_history t SET status = s.new_status, exit_qty = s.new_exit_qty,"
                  " exit_price = s.new_exit_price, exit_time = s.new_exit_time, exit_source = s.new_exit_source,"
                  " updated_at = now() FROM stage s WHERE t.trade_id = s.target AND t.status = s.exp_status"
                  " AND abs(t.exit_qty - s.exp_exit_qty) <= 1e-10 RETURNING t.trade_id) SELECT trade_id FROM u")
        c.execute("UPDATE recon_corrections r SET status = CASE WHEN a.trade_id IS NULL THEN 'STALE' ELSE 'APPLIED' END,"
                  " outcome = CASE WHEN a.trade_id IS NULL THEN 'expected slice state changed' ELSE 'applied' END,"
                  " applied_at = CASE WHEN a.trade_id IS NULL THEN NULL ELSE now() END"
                  " FROM stage s LEFT JOIN applied a ON a.trade_id = s.target"
                  " WHERE r.batch_id = %s AND r.correction_id = s.cid", (batch,))
        c.execute("UPDATE recon_batches SET status = 'APPLIED', applied_at = now() WHERE batch_id = %s", (batch,))
        raw.commit()

    def executemany(batch: str) -> None:
        c = raw.cursor()
        c.execute("SELECT pg_try_advisory_xact_lock(42)")
        c.execute("SELECT correction_id, target_id, expected_state, new_state FROM recon_corrections"
                  " WHERE batch_id = %s AND status = 'PENDING'", (batch,))
        rows = c.fetchall()
        params, outcomes = [], []
        for cid, target, exp, new in rows:
            e, n = json.loads(exp), json.loads(new)
            params.append((n["status"], n["exit_qty"], n["exit_price"], n["exit_time"], n["exit_source"], target,
                           e["status"], e["exit_qty"]))
            outcomes.append((batch, cid))
        c.executemany("UPDATE trade_history SET status = %s, exit_qty = %s, exit_price = %s, exit_time = %s,"
                      " exit_source = %s, updated_at = now() WHERE trade_id = %s AND status = %s"
                      " AND abs(exit_qty - %s) <= 1e-10", params)
        c.executemany("UPDATE recon_corrections SET status = 'APPLIED', outcome = 'applied', applied_at = now()"
                      " WHERE batch_id = %s AND correction_id = %s", outcomes)
        c.execute("UPDATE recon_batches SET status = 'APPLIED', applied_at = now() WHERE batch_id = %s", (batch,))
        raw.commit()

    impls = (("apply_package", lambda b: apply_batch(engine, b), repeats),
             ("apply_copy_ref", copy_reference, repeats),
             ("apply_executemany", executemany, 1))
    for name, fn, reps in impls:
        times = []
        for _ in range(reps):
            if times and sum(times) + times[0] > 120:
                break
            batch = prepare()
            t0 = time.perf_counter()
            fn(batch)
            times.append(time.perf_counter() - t0)
            check(batch)
        res[name] = {"times": times}
    raw.close()
    engine.dispose()
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
