"""The applier's derived recomputation never sums a non-finite or invalid value (issue 7).

RESERVATION_UPDATE and POSITION_UPDATE are recomputed inside the apply transaction from the tables
(DESIGN 5), which still hold the rows the snapshot excluded as BAD_ROW. A NaN or infinite qty or price
there must be skipped, like the snapshot skipped it, never turned into a NaN reservation or position.
"""

from __future__ import annotations

import json
import math

import pytest
import sqlalchemy as sa

from recon_pipeline.apply.applier import apply_batch
from recon_pipeline.db.seed import insert_rows, seed

SYMBOL = "BTC/USDT:USDT"
AT = "2026-11-30T09:30:00Z"
NAN, INF = float("nan"), float("inf")


def _slice(trade_id, side="long", entry_qty=1.0, entry_price=100.0, exit_qty=0.0, status="OPEN"):
    return {"trade_id": trade_id, "profile_id": "p1", "symbol": SYMBOL, "side": side, "status": status,
            "entry_qty": entry_qty, "entry_price": entry_price, "entry_time": AT, "exit_qty": exit_qty,
            "updated_at": AT}


def _order(order_id, qty=2.0, filled=0.0, price=10.0, avg=None, status="OPEN", role="ENTRY"):
    return {"order_id": order_id, "profile_id": "p1", "symbol": SYMBOL, "side": "buy", "role": role,
            "qty": qty, "price": price, "filled_qty": filled, "avg_fill_price": avg, "status": status,
            "client_order_id": f"p1-e-{order_id}", "created_at": AT, "updated_at": AT}


def _world(engine, *, with_nan: bool) -> tuple[float, float]:
    """Valid and invalid rows of profile p1; returns the (reservation, position) of the valid ones."""
    slices = [
        _slice("T-ok", entry_qty=2.0, entry_price=100.0, exit_qty=0.5),     # 1.5 x 100 = 150, +1.5
        _slice("T-short", side="short", entry_qty=0.5, entry_price=200.0),  # 0.5 x 200 = 100, -0.5
        _slice("T-closed", entry_qty=9.0, status="CLOSED", exit_qty=9.0),    # not OPEN: nothing
        # the snapshot's BAD_ROWs: never summed
        _slice("T-inf-qty", entry_qty=INF), _slice("T-inf-price", entry_price=INF),
        _slice("T-neg-inf-price", entry_price=-INF), _slice("T-neg-price", entry_price=-5.0),
        _slice("T-zero-qty", entry_qty=0.0), _slice("T-exit-above-entry", entry_qty=1.0, exit_qty=2.0),
        _slice("T-neg-exit", exit_qty=-1.0),
    ]
    orders = [
        _order("O-ok", qty=3.0, filled=1.0, price=10.0),                     # 2 x 10 = 20
        _order("O-market", qty=2.0, filled=1.0, price=None, avg=7.0),        # no limit price: 1 x avg 7
        _order("O-unpriced", qty=2.0, filled=0.0, price=None, avg=None),     # nothing to price it with: 0
        _order("O-exit", qty=5.0, price=10.0, role="EXIT"),                  # an exit reserves nothing
        # BAD_ROWs
        _order("O-inf-qty", qty=INF), _order("O-inf-price", price=INF), _order("O-zero-price", price=0.0),
        _order("O-inf-avg", qty=2.0, filled=1.0, price=10.0, avg=INF), _order("O-over-filled", qty=1.0, filled=2.0),
        _order("O-neg-filled", filled=-1.0),
    ]
    reserved, position = 150.0 + 100.0 + 20.0 + 7.0, 1.5 - 0.5
    if with_nan:  # SQLite has no NaN (it stores NULL, refused by the NOT NULL columns): Postgres only
        slices += [_slice("T-nan-qty", entry_qty=NAN), _slice("T-nan-exit", exit_qty=NAN),
                   _slice("T-nan-price", entry_price=NAN)]
        orders += [_order("O-nan-price", qty=2.0, filled=1.0, price=NAN, avg=9.0),   # NaN price = no limit price
                   _order("O-nan-qty", qty=NAN), _order("O-nan-filled", filled=NAN)]
        reserved += 9.0
    seed(engine, {
        "profiles": [{"profile_id": "p1", "exchange": "binance", "account": "main", "market_type": "swap",
                      "sub_tag": "p1", "allocated_capital_usd": 1000}],
        "trade_history": slices, "orders": orders,
        "positions": [{"profile_id": "p1", "symbol": SYMBOL, "qty": NAN if with_nan else 42.0, "updated_at": AT}],
        "capital_ledger": [{"profile_id": "p1", "reserved_usd": NAN if with_nan else 42.0, "updated_at": AT}],
    })
    return reserved, position


def _pending_batch(engine) -> str:
    with engine.begin() as conn:
        insert_batch = sa.text(
            "INSERT INTO recon_batches (batch_id, window_start, profile_id, status, n_corrections, created_at)"
            " VALUES ('b1', :w, 'p1', 'PENDING', 2, :w)")
        conn.execute(insert_batch, {"w": "2026-11-30 09:00:00+00:00"})
        rows = [("c-res", "RESERVATION_UPDATE", "capital_ledger", "p1"),
                ("c-pos", "POSITION_UPDATE", "positions", f"p1|{SYMBOL}")]
        for cid, action, table, target in rows:
            conn.execute(sa.text(
                "INSERT INTO recon_corrections (batch_id, correction_id, window_start, profile_id, action,"
                " target_table, target_id, expected_state, new_state, evidence, status)"
                " VALUES ('b1', :c, :w, 'p1', :a, :t, :i, '{}', :n, '{}', 'PENDING')"),
                {"c": cid, "w": "2026-11-30 09:00:00+00:00", "a": action, "t": table, "i": target,
                 "n": json.dumps({"derived": True})})
    return "b1"


@pytest.fixture
def engine(migrated_engine):
    return migrated_engine


def test_derived_recomputation_skips_non_finite_and_invalid_rows(engine):
    reserved, position = _world(engine, with_nan=engine.dialect.name == "postgresql")

    report = apply_batch(engine, _pending_batch(engine))

    assert report.counts == {"APPLIED": 2}
    with engine.connect() as conn:
        got_reserved = float(conn.execute(sa.text("SELECT reserved_usd FROM capital_ledger WHERE profile_id = 'p1'"))
                             .scalar())
        got_qty, got_avg = conn.execute(sa.text("SELECT qty, avg_entry_price FROM positions WHERE profile_id = 'p1'")).one()
        outcomes = dict(conn.execute(sa.text("SELECT action, outcome FROM recon_corrections")).fetchall())
    assert math.isfinite(got_reserved) and got_reserved == pytest.approx(reserved, abs=1e-9)
    assert math.isfinite(float(got_qty)) and float(got_qty) == pytest.approx(position, abs=1e-12)
    # remaining-weighted entry price of the valid OPEN slices: (1.5 x 100 + 0.5 x 200) / 2
    assert float(got_avg) == pytest.approx(125.0)
    assert "nan" not in " ".join(outcomes.values()).lower()


@pytest.mark.slow
def test_a_bad_row_slice_does_not_poison_the_applied_reservation(demo_world):
    """End to end: the snapshot excludes the NaN slice as a BAD_ROW, the rules propose the derived rows
    without it, and the applier's recomputation (from the tables, which still hold it) agrees."""
    with demo_world.engine.begin() as conn:
        insert_rows(conn, "trade_history", [{
            "trade_id": "T1099", "profile_id": "alpha", "symbol": SYMBOL, "side": "long", "status": "OPEN",
            "entry_qty": NAN, "entry_price": 60000.0, "entry_time": "2026-11-30T09:10:00Z",
            "entry_client_order_id": "alpha-e-T1099", "exit_qty": 0.0, "updated_at": "2026-11-30T09:10:01Z"}])

    outcome = demo_world.reconcile("alpha", apply=True)

    assert outcome.success and outcome.batch["status"] == "APPLIED", outcome.error
    findings = demo_world.table("recon_findings")
    bad = findings[(findings["kind"] == "BAD_ROW") & (findings["trade_id"] == "T1099")]
    assert bad["reason"].tolist() == ["NON_FINITE_QTY"]
    corrections = demo_world.table("recon_corrections")
    derived = corrections[corrections["action"].isin(["RESERVATION_UPDATE", "POSITION_UPDATE"])]
    assert set(derived["status"]) == {"APPLIED"}
    proposed = json.loads(derived.loc[derived["action"] == "RESERVATION_UPDATE", "new_state"].item())["reserved_usd"]
    ledger = demo_world.table("capital_ledger").set_index("profile_id")
    assert math.isfinite(float(ledger.loc["alpha", "reserved_usd"]))
    assert float(ledger.loc["alpha", "reserved_usd"]) == pytest.approx(proposed, abs=0.01)
    positions = demo_world.table("positions").set_index(["profile_id", "symbol"])
    # T1001 closed by the batch; T1003 + T1004 remain (docs/demo.md), the NaN slice counts for nothing
    assert float(positions.loc[("alpha", SYMBOL), "qty"]) == pytest.approx(0.007, abs=1e-12)


# --- several POSITION_UPDATEs of one batch are recomputed together --------------------------------------

ETH = "ETH/USDT:USDT"
SOL = "SOL/USDT:USDT"

# (case, profile, symbol, OPEN slices as (side, entry_qty, exit_qty, entry_price), held qty or None,
#  expected status, expected (qty, avg) in the table after the apply (None: no row))
POSITION_CASES = [
    ("long and short net", "p1", SYMBOL, [("long", 2.0, 0.5, 100.0), ("short", 0.5, 0.0, 200.0)], 42.0,
     "APPLIED", (1.0, 125.0)),
    ("already right", "p1", ETH, [("long", 3.0, 0.0, 10.0)], 3.0, "STALE", (3.0, None)),
    ("no slices, no row", "p1", SOL, [], None, "STALE", None),
    ("no slices, a row left", "p2", SYMBOL, [], 5.0, "APPLIED", (0.0, 7.0)),
    ("other profile, same symbol as p1's", "p2", ETH, [("short", 4.0, 1.0, 20.0)], None, "APPLIED", (-3.0, 20.0)),
]


def _positions_world(engine) -> None:
    profiles = [{"profile_id": p, "exchange": "binance", "account": "main", "market_type": "swap", "sub_tag": p,
                 "allocated_capital_usd": 1000} for p in ("p1", "p2")]
    slices, positions = [], []
    for n, (_, profile, symbol, open_slices, held, _, _) in enumerate(POSITION_CASES):
        for k, (side, qty, exit_qty, price) in enumerate(open_slices):
            slices.append({**_slice(f"T{n}-{k}", side=side, entry_qty=qty, entry_price=price, exit_qty=exit_qty),
                           "profile_id": profile, "symbol": symbol})
        if held is not None:
            positions.append({"profile_id": profile, "symbol": symbol, "qty": held,
                              "avg_entry_price": 7.0 if profile == "p2" else None, "updated_at": AT})
    # a CLOSED slice and a slice of a symbol no correction names: neither counts
    slices.append({**_slice("T-closed", entry_qty=9.0, exit_qty=9.0, status="CLOSED"), "symbol": ETH})
    slices.append({**_slice("T-elsewhere", entry_qty=9.0), "symbol": "XRP/USDT:USDT"})
    seed(engine, {"profiles": profiles, "trade_history": slices, "positions": positions})
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO recon_batches (batch_id, window_start, profile_id, status, n_corrections, created_at)"
            " VALUES ('b2', :w, 'p1', 'PENDING', :n, :w)"), {"w": "2026-11-30 09:00:00+00:00", "n": len(POSITION_CASES)})
        for n, (_, profile, symbol, *_rest) in enumerate(POSITION_CASES):
            conn.execute(sa.text(
                "INSERT INTO recon_corrections (batch_id, correction_id, window_start, profile_id, action,"
                " target_table, target_id, expected_state, new_state, evidence, status)"
                " VALUES ('b2', :c, :w, 'p1', 'POSITION_UPDATE', 'positions', :i, '{}', '{}', '{}', 'PENDING')"),
                {"c": f"c{n}", "w": "2026-11-30 09:00:00+00:00", "i": f"{profile}|{symbol}"})


def test_positions_of_one_batch_are_each_recomputed_from_their_own_slices(engine):
    _positions_world(engine)

    apply_batch(engine, "b2")

    with engine.connect() as conn:
        status = dict(conn.execute(sa.text("SELECT correction_id, status FROM recon_corrections")).fetchall())
        table = {(p, s): (float(q), None if a is None else float(a)) for p, s, q, a in conn.execute(sa.text(
            "SELECT profile_id, symbol, qty, avg_entry_price FROM positions")).fetchall()}
    for n, (case, profile, symbol, _, _, want_status, want_row) in enumerate(POSITION_CASES):
        assert status[f"c{n}"] == want_status, case
        got = table.get((profile, symbol))
        if want_row is None:
            assert got is None, case
        else:
            assert got[0] == pytest.approx(want_row[0], abs=1e-12), case
            assert got[1] == (None if want_row[1] is None else pytest.approx(want_row[1])), case
