"""The soak run of issue 7: 48 hourly windows x 3 profiles with seeded drift and exchange faults.

Every hour the simulated trading system of :mod:`.world` trades (and, before the last quiet hours,
injects drift), the emulator is reloaded with the exchange as of five past the next hour, and the
three profiles' live partitions run through the real Dagster job with ``--apply``. Some runs get an
exchange fault: a persistent one must fail the run and store nothing for its window (then the window is
re-run, as an operator would), a transient one must be retried through. At the end the database is
judged against the drift ledger and the oracle (see ``_final_checks``).

``make soak`` runs it; ``RECON_SOAK_SEED`` picks the seed (default ``DEFAULT_SEED``; the seed and the
summary table are printed, so a failure is reproducible), ``RECON_SOAK_HOURS`` shortens it while
developing (default 48; drift stops 4 hours before the end, so 20 or more shows every kind) and
``RECON_SOAK_VERBOSE=1`` records each run's outcome line (shown with the failure report).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pandas as pd
import pytest
import sqlalchemy as sa

from recon_pipeline.db.seed import seed
from recon_pipeline.runner import reconcile_partition
from recon_pipeline.settings import FLAGS
from recon_pipeline_tests.soak.world import (
    HOURS,
    KINDS,
    MARKETS,
    ORDER_CHECK,
    PROFILE,
    PROFILES,
    SLICE_CHECK,
    T0,
    SoakWorld,
    derived_from_tables,
    window,
)

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1800)]

DEFAULT_SEED = 20261130
# 2.5 s client timeout against a 3 s hang: a "timeout" fault costs one timeout, then the retry succeeds.
EXCHANGE = {"enable_rate_limit": False, "timeout_ms": 2500, "retry_backoff_s": 0.05}
# Every mode is injected once early on (persistent ones in hours 1-8, transient ones in hours 9-14, the
# profile rotating), then faults come at random, their modes taken in turn from a seeded shuffle.
P_PERSISTENT = 0.03
P_TRANSIENT = 0.05
PERSISTENT_MODES = ("http_500", "http_502", "http_503", "reset", "malformed", "html", "http_418", "http_429")
TRANSIENT_MODES = ("http_500", "http_502", "http_503", "reset", "http_429", "timeout")
FAULT_PATHS = {
    "swap": ("/fapi/v1/userTrades", "/fapi/v1/allOrders", "/fapi/v1/openOrders", "/fapi/v3/positionRisk",
             "/fapi/v1/premiumIndex", "/fapi/v1/exchangeInfo", "/api/v3/time"),
    "spot": ("/api/v3/myTrades", "/api/v3/allOrders", "/api/v3/openOrders", "/api/v3/account",
             "/api/v3/ticker/price", "/api/v3/exchangeInfo"),
}
PAGED = {"/fapi/v1/userTrades", "/fapi/v1/allOrders", "/fapi/v1/openOrders", "/api/v3/myTrades", "/api/v3/allOrders",
         "/api/v3/openOrders"}
PUBLIC = {"/fapi/v1/premiumIndex", "/fapi/v1/exchangeInfo", "/api/v3/time", "/api/v3/ticker/price",
          "/api/v3/exchangeInfo"}
TRADING_TABLES = {"profiles": "profile_id", "orders": "order_id", "trade_history": "trade_id",
                  "positions": "profile_id, symbol", "capital_ledger": "profile_id", "trading_pauses": "pause_id"}
DERIVED = ("POSITION_UPDATE", "RESERVATION_UPDATE")
PAUSES = ("PAUSE_TRADING", "RESUME_TRADING")
EXPECTED_NO_GO = {"NO_ATTRIBUTION", "OVER_FILL", "LATE_FILL", "DB_AHEAD", "STALE_FILL", "QTY_MISMATCH"}


@dataclass
class FaultRecord:
    hour: int
    profile_id: str
    kind: str            # persistent | transient
    path: str
    mode: str
    after: int
    fired: bool = False
    outcome: str = ""
    ok: bool = False


@dataclass
class Soak:
    world: SoakWorld
    server: object
    engine: sa.engine.Engine
    url: str
    instance: object
    rng: random.Random
    faults: list[FaultRecord] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    counts: dict[str, Counter] = field(default_factory=dict)
    runs: int = 0
    run_seconds: float = 0.0
    run_times: list[tuple[int, float]] = field(default_factory=list)
    modes: dict[str, list[str]] = field(default_factory=dict)                # fault kind -> modes, in turn
    planned: dict[tuple[int, str], tuple[str, str]] = field(default_factory=dict)  # (hour, profile) -> fault

    def __post_init__(self) -> None:
        """The fault plan: each mode once early on, then random faults taking the modes in turn."""
        self.modes = {"persistent": list(PERSISTENT_MODES), "transient": list(TRANSIENT_MODES)}
        for modes in self.modes.values():
            self.rng.shuffle(modes)
        names = [p.profile_id for p in PROFILES]
        self.planned = {(1 + i, names[i % len(names)]): ("persistent", m) for i, m in enumerate(PERSISTENT_MODES)}
        self.planned |= {(9 + i, names[(i + 1) % len(names)]): ("transient", m) for i, m in enumerate(TRANSIENT_MODES)}

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def rows(self, sql: str, **params) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]

    def reconcile(self, hour: int, profile_id: str):
        start = time.perf_counter()
        outcome = reconcile_partition(window(hour), profile_id, apply=True, instance=self.instance, db_url=self.url,
                                      exchange_config=EXCHANGE)
        self.runs += 1
        self.run_seconds += time.perf_counter() - start
        self.run_times.append((hour, time.perf_counter() - start))
        if os.environ.get("RECON_SOAK_VERBOSE"):
            print(f"{time.perf_counter() - start:5.2f}s {outcome.summary()} {outcome.error or ''}", flush=True)
        return outcome

    # --- one (window, profile) -------------------------------------------------------------------------

    def run(self, hour: int, profile_id: str) -> None:
        p = PROFILE[profile_id]
        counts = self.counts.get(profile_id)
        r = self.rng.random()
        plan = self.planned.get((hour, profile_id))
        if plan is None and r < P_PERSISTENT + P_TRANSIENT:
            kind = "persistent" if r < P_PERSISTENT else "transient"
            plan = (kind, self.modes[kind][sum(f.kind == kind for f in self.faults) % len(self.modes[kind])])
        if plan is None or not counts:
            self.checked_run(hour, profile_id)
            return
        kind, mode = plan
        # half of the faults hit the paged, per-symbol fill and order endpoints, where ``after`` lets the first
        # requests (earlier symbols and pages) succeed so the fault lands mid-snapshot; the others any endpoint
        # the profile's previous run called (positions, balances, marks, markets, server time, ...)
        paths = [path for path in FAULT_PATHS[p.market_type] if counts.get(path, 0) > 0]
        paged = [path for path in paths if path in PAGED and counts[path] > 1]
        path = self.rng.choice(paged if paged and self.rng.random() < 0.5 else paths)
        record = FaultRecord(hour, profile_id, kind, path, mode,
                             self.rng.randint(1 if counts[path] > 1 else 0, counts[path] - 1))
        self.faults.append(record)
        if kind == "persistent":
            self.persistent_fault(hour, p, record)
        else:
            self.transient_fault(hour, p, record)

    def checked_run(self, hour: int, profile_id: str):
        start = len(self.server.request_log)
        outcome = self.reconcile(hour, profile_id)
        self.counts[profile_id] = Counter(path for _a, _m, path, _p in self.server.request_log[start:])
        where = f"hour {hour} ({window(hour).isoformat()}) profile {profile_id}"
        if not outcome.success:
            self.fail(f"{where}: run failed without an injected fault: {outcome.error}")
        elif outcome.batch.get("status") not in ("APPLIED", "EMPTY"):
            self.fail(f"{where}: batch {outcome.batch.get('batch_id')} is {outcome.batch.get('status')} "
                      f"({outcome.apply_skipped or outcome.batch.get('validation')})")
        return outcome

    def fault_kwargs(self, p, record: FaultRecord, times: int | None) -> dict:
        account = None if record.path in PUBLIC else p.account
        return {"account": account, "path": record.path, "mode": record.mode, "after": record.after, "times": times}

    def persistent_fault(self, hour: int, p, record: FaultRecord) -> None:
        w = window(hour)
        before = self.state(w, p.profile_id)
        # modes that are never retried fail the run even when they happen once
        once = record.mode in ("malformed", "html", "http_418") and self.rng.random() < 0.5
        fault = self.server.add_fault(**self.fault_kwargs(p, record, 1 if once else None))
        outcome = self.reconcile(hour, p.profile_id)
        self.server.clear_faults()
        record.fired = fault.seen > record.after
        record.outcome = (outcome.error or "succeeded")[:300]
        where = f"hour {hour} profile {p.profile_id} fault {record.mode} on {record.path} after={record.after}"
        problems = []
        if not record.fired:
            problems.append("the fault never fired")
        if outcome.success:
            problems.append("the run succeeded")
        else:
            if f"account={p.account}" not in outcome.error or record.path not in outcome.error:
                problems.append(f"the error does not name account and endpoint: {outcome.error}")
            after = self.state(w, p.profile_id)
            run = self.rows("SELECT status, error FROM recon_runs WHERE window_start = :w AND profile_id = :p",
                            w=w.to_pydatetime(), p=p.profile_id)
            if [r["status"] for r in run] != ["FAILED"] or not run[0]["error"]:
                problems.append(f"recon_runs holds {run}, not one FAILED row with the error")
            for key in ("findings", "batches", "corrections", "streaks", "trading"):
                if before[key] != after[key]:
                    problems.append(f"the failed run changed {key}")
        for problem in problems:
            self.fail(f"{where}: {problem}")
        # the operator re-runs the window once the exchange is healthy again
        rerun = self.checked_run(hour, p.profile_id)
        record.ok = not problems and rerun.success

    def transient_fault(self, hour: int, p, record: FaultRecord) -> None:
        fault = self.server.add_fault(**self.fault_kwargs(p, record, 1))
        outcome = self.checked_run(hour, p.profile_id)
        self.server.clear_faults()
        record.fired = fault.seen > record.after
        record.outcome = "retried through" if outcome.success else (outcome.error or "")[:300]
        if not record.fired:
            self.fail(f"hour {hour} profile {p.profile_id}: transient {record.mode} on {record.path} never fired")
        record.ok = record.fired and outcome.success

    def state(self, w: pd.Timestamp, profile_id: str) -> dict:
        """What a failed attempt must leave untouched."""
        params = {"w": w.to_pydatetime(), "p": profile_id}
        with self.engine.connect() as conn:
            def q(sql, **kw):
                return [tuple(r) for r in conn.execute(sa.text(sql), kw)]
            return {
                "findings": q("SELECT * FROM recon_findings WHERE window_start = :w AND profile_id = :p ORDER BY seq",
                              **params),
                "batches": q("SELECT batch_id, status FROM recon_batches WHERE window_start = :w AND profile_id = :p",
                             **params),
                "corrections": q("SELECT count(*), count(*) FILTER (WHERE status = 'APPLIED') FROM recon_corrections"),
                "streaks": q("SELECT trade_id, streak, last_window_start FROM recon_parity_streaks ORDER BY trade_id"),
                "trading": {t: q(f"SELECT * FROM {t} ORDER BY {k}") for t, k in TRADING_TABLES.items()},
            }

    # --- after every hour --------------------------------------------------------------------------------

    def hour_checks(self, hour: int) -> None:
        """After each hour's three runs the derived rows equal what the tables say (DESIGN 4.6), and
        profiles.trading_paused equals "a pause row is open" (4.5)."""
        with self.engine.connect() as conn:
            positions, reserved = derived_from_tables(conn)
            rows = {(r[0], r[1]): float(r[2]) for r in conn.execute(sa.text(
                "SELECT profile_id, symbol, qty FROM positions"))}
            ledger = {r[0]: float(r[1]) for r in conn.execute(sa.text(
                "SELECT profile_id, reserved_usd FROM capital_ledger"))}
            paused = {r[0]: (bool(r[1]), int(r[2])) for r in conn.execute(sa.text(
                "SELECT p.profile_id, p.trading_paused, (SELECT count(*) FROM trading_pauses t"
                " WHERE t.profile_id = p.profile_id AND t.resumed_at IS NULL) FROM profiles p"))}
        for key in set(positions) | set(rows):
            if abs(positions.get(key, 0.0) - rows.get(key, 0.0)) > 1e-9:
                self.fail(f"hour {hour}: positions {key} = {rows.get(key)} but the OPEN slices net "
                          f"{positions.get(key, 0.0)}")
        for profile_id, value in reserved.items():
            if abs(ledger.get(profile_id, 0.0) - value) > 0.01:
                self.fail(f"hour {hour}: capital_ledger {profile_id} = {ledger.get(profile_id)}, computed {value}")
        for profile_id, (flag, open_pauses) in paused.items():
            if flag != (open_pauses > 0):
                self.fail(f"hour {hour}: {profile_id}.trading_paused={flag} with {open_pauses} open pauses")
            model = self.world.watchdog[profile_id].open_pause is not None
            if model != (open_pauses > 0):
                self.fail(f"hour {hour}: {profile_id} has {open_pauses} open pauses, the oracle expects "
                          f"{'one' if model else 'none'}")


def _hour(ts) -> int:
    return int((pd.Timestamp(ts).tz_convert("UTC") - T0) / pd.Timedelta(hours=1))


def _instrument(symbol: str) -> str:
    return MARKETS[symbol].instrument if symbol in MARKETS else symbol


def _final_checks(soak: Soak) -> dict:
    world = soak.world
    corr = pd.DataFrame(soak.rows("SELECT window_start, profile_id, action, target_id, status FROM recon_corrections"),
                        columns=["window_start", "profile_id", "action", "target_id", "status"])
    corr["hour"] = [_hour(w) for w in corr["window_start"]]
    applied = corr[corr["status"] == "APPLIED"]
    key4 = list(zip(applied["hour"], applied["profile_id"], applied["action"], applied["target_id"], strict=True))
    applied_all = Counter(key4)
    applied_direct = Counter(k for k in key4 if k[2] not in DERIVED + PAUSES)

    # 1. no correction the drift did not call for, and every one it called for exactly once
    expected = world.expected_corrections()
    for key in sorted(set(applied_direct) | set(expected)):
        if applied_direct[key] != expected[key]:
            soak.fail(f"correction {key}: applied {applied_direct[key]} times, expected {expected[key]}")
    by_target = Counter((a, t) for _h, _p, a, t in applied_direct.elements())
    for (action, target), n in by_target.items():
        want = sum(v for (_h, _p, a, t), v in expected.items() if (a, t) == (action, target))
        if n != want:
            soak.fail(f"{action} on {target}: APPLIED {n} times, expected {want}")
    # 2. nothing stale, blocked, pending or dry-run among the direct corrections
    odd = corr[~corr["action"].isin(DERIVED) & (corr["status"] != "APPLIED")]
    for r in odd.itertuples(index=False):
        soak.fail(f"correction {r.action} on {r.target_id} in hour {r.hour} ({r.profile_id}) is {r.status}")
    batches = Counter(r["status"] for r in soak.rows("SELECT status FROM recon_batches"))
    if set(batches) - {"APPLIED", "EMPTY"}:
        soak.fail(f"batches not APPLIED/EMPTY: {dict(batches)}")
    # 3. the watchdog's pauses and resumes, window by window
    pauses_seen = Counter((h, p, a) for h, p, a, _t in key4 if a in PAUSES)
    if pauses_seen != world.expected_pauses():
        soak.fail(f"PAUSE/RESUME applied {sorted(pauses_seen.elements())}, "
                  f"expected {sorted(world.expected_pauses().elements())}")
    sources = {r["pause_id"]: r["source"] for r in soak.rows("SELECT pause_id, source FROM trading_pauses")}
    for h, p, a, t in key4:
        if a == "RESUME_TRADING" and sources.get(t) != "parity_watchdog":
            soak.fail(f"RESUME_TRADING in hour {h} ({p}) resumed pause {t} of source {sources.get(t)}")

    # 4. findings: the parity oracle's ghosts and mismatches, the drift's NO_GO reasons, nothing unexplained
    findings = soak.rows("SELECT window_start, profile_id, kind, reason, trade_id, exchange_order_id, symbol"
                         " FROM recon_findings")
    have = set()
    ghosts, mismatches = set(), set()
    no_go_reasons: Counter = Counter()
    for f in findings:
        h = _hour(f["window_start"])
        for col in ("trade_id", "exchange_order_id", "symbol"):
            for value in (f[col] or "").split(","):
                if value:
                    have.add((h, f["profile_id"], f["kind"], f["reason"] or "", col, value))
        if f["kind"] == "GHOST_SLICE":
            ghosts.add((h, f["profile_id"], f["trade_id"]))
        if f["kind"] == "QTY_MISMATCH":
            mismatches.add((h, f["profile_id"], f["symbol"]))
        if f["kind"] in ("NO_GO", "BAD_ROW"):
            no_go_reasons[(f["kind"], f["reason"])] += 1
    if ghosts != world.ghost_findings:
        soak.fail(f"GHOST_SLICE findings differ from the oracle: unexpected {sorted(ghosts - world.ghost_findings)[:10]}"
                  f", missing {sorted(world.ghost_findings - ghosts)[:10]}")
    if mismatches != world.mismatch_findings:
        soak.fail(f"QTY_MISMATCH findings differ from the oracle: unexpected "
                  f"{sorted(mismatches - world.mismatch_findings)[:10]}, missing "
                  f"{sorted(world.mismatch_findings - mismatches)[:10]}")
    for (kind, reason), n in no_go_reasons.items():
        if kind == "BAD_ROW" or reason not in EXPECTED_NO_GO:
            soak.fail(f"{n} {kind} findings with reason {reason}: no injected drift calls for it")
    untied = {e for d in world.drifts if d.kind in ("unattributed_close", "partial_untied_close")
              for e in d.exchange_order_ids}
    for f in findings:
        if f["kind"] == "NO_GO" and f["reason"] == "NO_ATTRIBUTION" and f["exchange_order_id"] not in untied:
            soak.fail(f"NO_ATTRIBUTION on order {f['exchange_order_id']}, which is not an untied order")

    # 5. per drift: its corrections exactly once in its window, its findings, its rows' final state
    db_slices = {r["trade_id"]: r for r in soak.rows("SELECT * FROM trade_history")}
    db_orders = {r["order_id"]: r for r in soak.rows("SELECT * FROM orders")}
    verdicts: dict[int, list[str]] = defaultdict(list)
    for d in world.drifts:
        for key in d.corrections:
            if applied_all[key] != 1:
                verdicts[d.n].append(f"{key[2]} on {key[3]} in hour {key[0]} applied {applied_all[key]} times")
        for f in d.findings:
            if f not in have:
                verdicts[d.n].append(f"no {f[2]} {f[3]} finding for {f[4]}={f[5]} in hour {f[0]} ({f[1]})")
    for tid, s in world.slices.items():
        row = db_slices.get(tid)
        bad = [c for c in SLICE_CHECK if not _same(row and row[c], getattr(s, c))] if row else ["missing"]
        if bad:
            message = f"slice {tid} ({s.symbol}) final {[(c, row and row[c], getattr(s, c)) for c in bad]}"
            (verdicts[s.drift].append(message) if s.drift is not None else soak.fail(message + " (healthy slice)"))
    order_drift = {o: d.n for d in world.drifts for o in d.order_ids}
    for oid, o in world.db_orders.items():
        row = db_orders.get(oid)
        bad = [c for c in ORDER_CHECK if not _same(row and row[c], getattr(o, c))] if row else ["missing"]
        if bad:
            message = f"order {oid} final {[(c, row and row[c], getattr(o, c)) for c in bad]}"
            (verdicts[order_drift[oid]].append(message) if oid in order_drift else soak.fail(message))
    unknown = {e for d in world.drifts if d.kind == "unknown_open_order" for e in d.exchange_order_ids}
    adopted = [r for r in db_orders.values() if r["exchange_order_id"] in unknown]
    if adopted:
        soak.fail(f"unknown exchange orders adopted into the DB: {[r['order_id'] for r in adopted]}")
    for d in world.drifts:
        for message in verdicts.get(d.n, []):
            soak.fail(f"drift #{d.n} {d.kind} ({d.profile_id}, hour {d.hour}, {d.trade_id or d.exchange_order_ids}): "
                      f"{message}")
    for h, p, a, t in world.unlinked:
        soak.fail(f"the oracle's parity closed a slice no drift explains: {a} {t} hour {h} ({p})")

    # 6. the books balance wherever nothing is open in NO_GO or quarantine
    last = window(world.hours - 1).to_pydatetime()
    standing = set()
    for f in soak.rows("SELECT f.symbol, p.account FROM recon_findings f JOIN profiles p USING (profile_id)"
                       " WHERE f.window_start = :w AND f.kind = 'NO_GO'", w=last):
        standing.add((f["account"], _instrument(f["symbol"])))
    for r in soak.rows("SELECT t.symbol, p.account FROM trade_history t JOIN profiles p USING (profile_id)"
                       " WHERE t.status = 'QUARANTINED'"):
        standing.add((r["account"], _instrument(r["symbol"])))
    if standing != world.poisoned_instruments():
        soak.fail(f"standing NO_GO/quarantine on {sorted(standing)}, the drift ledger expects "
                  f"{sorted(world.poisoned_instruments())}")
    db_net: dict[tuple[str, str], float] = defaultdict(float)
    for r in soak.rows("SELECT t.symbol, t.side, t.entry_qty, t.exit_qty, p.account FROM trade_history t"
                       " JOIN profiles p USING (profile_id) WHERE t.status = 'OPEN'"):
        q = float(r["entry_qty"]) - float(r["exit_qty"])
        db_net[(r["account"], _instrument(r["symbol"]))] += q if r["side"] == "long" else -q
    balance = []
    for account in ("main", "spot"):
        exch = world.exchange_qty(account)
        instruments = {m.instrument for m in MARKETS.values() if m.account == account}
        for inst in sorted(instruments | {i for a, i in db_net if a == account} | set(exch)):
            u = min(m.u for m in MARKETS.values() if m.account == account and m.instrument == inst)
            excluded = (account, inst) in standing
            ok = abs(db_net.get((account, inst), 0.0) - exch.get(inst, 0.0)) < u / 2
            balance.append((account, inst, round(db_net.get((account, inst), 0.0), 8) + 0.0, exch.get(inst, 0.0) + 0.0,
                            "excluded (standing NO_GO/quarantine)" if excluded else ("balanced" if ok else "MISMATCH")))
            if not excluded and not ok:
                soak.fail(f"books do not balance on {account} {inst}: DB open {db_net.get((account, inst), 0.0)}, "
                          f"exchange {exch.get(inst, 0.0)}")

    # 7. derived rows equal the DESIGN 4.6 computation on the final tables
    with soak.engine.connect() as conn:
        positions, reserved = derived_from_tables(conn)
    rows = {(r["profile_id"], r["symbol"]): float(r["qty"]) for r in soak.rows("SELECT * FROM positions")}
    for key in set(positions) | set(rows):
        if abs(positions.get(key, 0.0) - rows.get(key, 0.0)) > 1e-9:
            soak.fail(f"final positions {key} = {rows.get(key)}, OPEN slices net {positions.get(key, 0.0)}")
    ledger = {r["profile_id"]: float(r["reserved_usd"]) for r in soak.rows("SELECT * FROM capital_ledger")}
    for profile_id, value in reserved.items():
        if abs(ledger.get(profile_id, 0.0) - value) > 0.01:
            soak.fail(f"final capital_ledger {profile_id} = {ledger.get(profile_id)}, computed {value}")
    stale_derived = Counter(a for a, s in zip(corr["action"], corr["status"], strict=True)
                            if a in DERIVED and s != "APPLIED")
    return {"verdicts": verdicts, "balance": balance, "no_go": no_go_reasons, "applied": applied_direct,
            "applied_all": applied_all, "derived_not_applied": stale_derived}


def _same(got, want) -> bool:
    if want is None or got is None:
        return got is None and want is None
    if isinstance(want, float):
        return abs(float(got) - want) <= 1e-9 * max(1.0, abs(want))
    return got == want


def _summary(soak: Soak, result: dict, seed: int, elapsed: float) -> str:
    world = soak.world
    first = [s for h, s in soak.run_times if h < 6]
    last = [s for h, s in soak.run_times if h >= world.hours - 6]
    lines = [f"soak seed RECON_SOAK_SEED={seed}: {world.hours} windows x {len(PROFILES)} profiles, "
             f"{soak.runs} runs ({soak.run_seconds:.0f} s in reconcile_partition; a run took "
             f"{sum(first) / max(1, len(first)):.2f} s in the first 6 hours, {sum(last) / max(1, len(last)):.2f} s "
             f"in the last 6), {elapsed:.0f} s in all",
             "", "| drift kind | injected | expected | observed |", "|---|---|---|---|"]
    for kind, (_e, _p, text) in KINDS.items():
        drifts = [d for d in world.drifts if d.kind == kind]
        bad = [d for d in drifts if result["verdicts"].get(d.n)]
        observed = (f"{len(drifts) - len(bad)}/{len(drifts)} as expected" if not bad else
                    f"{len(bad)}/{len(drifts)} NOT as expected (first: #{bad[0].n}: {result['verdicts'][bad[0].n][0]})")
        lines.append(f"| {kind} | {len(drifts)} | {text} | {observed} |")
    applied = Counter(k[2] for k in result["applied_all"].elements())
    lines += ["", "corrections APPLIED by action: " + ", ".join(f"{a} {n}" for a, n in sorted(applied.items())),
              "derived corrections not applied (recomputed value already there): "
              + (", ".join(f"{a} {n}" for a, n in sorted(result["derived_not_applied"].items())) or "none"),
              "NO_GO findings by reason (all windows): "
              + ", ".join(f"{r} {n}" for (_k, r), n in sorted(result["no_go"].items())),
              "", "| fault | injected | fired | expected | observed as expected |", "|---|---|---|---|---|"]
    by = defaultdict(list)
    for f in soak.faults:
        by[(f.kind, f.mode)].append(f)
    for (kind, mode), fs in sorted(by.items()):
        expect = ("run fails naming account and endpoint, stores nothing; the re-run succeeds" if kind == "persistent"
                  else "retried through, run succeeds")
        paths = ", ".join(sorted({f"{f.path}(after={f.after})" for f in fs}))
        lines.append(f"| {kind} {mode} on {paths} | {len(fs)} | {sum(f.fired for f in fs)} | {expect} | "
                     f"{sum(f.ok for f in fs)}/{len(fs)} |")
    lines += ["", "| account | instrument | DB open qty | exchange qty | books |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {i} | {d:g} | {e:g} | {v} |" for a, i, d, e, v in result["balance"]]
    if soak.failures:
        lines += ["", f"{len(soak.failures)} FAILURES (seed {seed}):"] + [f"- {f}" for f in soak.failures[:60]]
    return "\n".join(lines)


def run_soak(pg_engine, pg_url, emulator, exchange_env, monkeypatch, *, seed_value: int, hours: int,
             flags: dict[str, str] | None = None) -> tuple[Soak, str]:
    """The whole soak; returns it (``soak.failures``) and its summary. ``flags`` overrides runbook flags
    (only to prove the checks bite: the oracle assumes the runbook defaults)."""
    from dagster import DagsterInstance

    started = time.perf_counter()
    for flag in FLAGS:  # the runbook defaults, whatever the caller's environment says
        monkeypatch.delenv(flag.env, raising=False)
    for name, value in (flags or {}).items():
        monkeypatch.setenv(name, value)
    world = SoakWorld(seed_value, hours)
    seed(pg_engine, world.seed_rows())
    world.flush(pg_engine, -1)
    server = emulator(world.scenario(0), hang_seconds=3.0)
    exchange_env(server)
    instance = DagsterInstance.ephemeral(settings={"python_logs": {"python_log_level": "ERROR"}})
    soak = Soak(world, server, pg_engine, pg_url, instance, random.Random(seed_value + 1))
    for hour in range(hours):
        world.trade_hour(hour, pg_engine)
        server.load(world.scenario(hour))
        for p in PROFILES:
            world.model_run(hour, p)
            soak.run(hour, p.profile_id)
        soak.hour_checks(hour)
    result = _final_checks(soak)
    return soak, _summary(soak, result, seed_value, time.perf_counter() - started)


def test_soak(pg_engine, pg_url, emulator, exchange_env, monkeypatch, capsys):
    seed_value = int(os.environ.get("RECON_SOAK_SEED") or DEFAULT_SEED)
    hours = int(os.environ.get("RECON_SOAK_HOURS") or HOURS)
    soak, summary = run_soak(pg_engine, pg_url, emulator, exchange_env, monkeypatch, seed_value=seed_value,
                             hours=hours)
    with capsys.disabled():
        print("\n" + summary + "\n")
    assert not soak.failures, f"soak seed {seed_value}: {len(soak.failures)} failures:\n" + "\n".join(
        soak.failures[:40])
