"""Property tests of the EXIT backfill over random small accounts (two profiles, two symbols).

* no slice is exited without attribution at or above the configured strength;
* no target row gets two corrections in one batch; only the running profile's OPEN slices are targeted;
* the same inputs (in any row order) give the same corrections and ids.
"""

import json

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recon_pipeline.rules import client_order_id as C
from recon_pipeline.rules.attribution import STRONG
from recon_pipeline.rules.exit_backfill import backfill_exits
from recon_pipeline.settings import ReconSettings
from recon_pipeline_tests.rules import frames as F

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
CID_KINDS = ["det_x", "det_e", "det_x_other", "det_unknown", "subtag", "subtag_other", "g12", "none", "hint"]

slice_st = st.fixed_dictionaries({
    "profile_id": st.sampled_from(["p1", "p1", "p2"]),
    "symbol": st.sampled_from(SYMBOLS),
    "side": st.sampled_from(["long", "short"]),
    "status": st.sampled_from(["OPEN", "OPEN", "OPEN", "CLOSED"]),
    "entry_qty": st.sampled_from([1.0, 2.0]),
    "exit_qty": st.sampled_from([0.0, 0.0, 0.5]),
    "entry_time": st.integers(0, 40).map(F.at),
})

order_st = st.fixed_dictionaries({
    "kind": st.sampled_from(CID_KINDS),
    "target": st.integers(0, 3),
    "side": st.sampled_from(["buy", "sell"]),
    "fills": st.lists(st.tuples(st.sampled_from([0.25, 0.5, 1.0]), st.integers(-20, 70),
                                st.sampled_from([99.0, 100.0, 101.5])), min_size=1, max_size=3),
})


def build(slice_rows, order_rows):
    sl = [{**s, "trade_id": f"t{i + 1}"} for i, s in enumerate(slice_rows)]
    orders, fills, db = [], [], []
    for j, o in enumerate(order_rows):
        target = sl[o["target"] % len(sl)] if sl else None
        tid = target["trade_id"] if target else "t9"
        tag = "g1" if (target is None or target["profile_id"] == "p1") else "g2"
        symbol = target["symbol"] if target else SYMBOLS[0]
        oid = f"o{j + 1}"
        cid = {
            "det_x": C.encode(tag, "x", tid, j + 1), "det_e": C.encode(tag, "e", tid, j + 1),
            "det_x_other": C.encode("g2", "x", tid, j + 1), "det_unknown": C.encode("g1", "x", f"zz{j}"),
            "subtag": f"g1-m-{j}", "subtag_other": f"g2-m-{j}", "g12": f"g12-m-{j}", "none": None,
            "hint": f"web-{j}",
        }[o["kind"]]
        if o["kind"] == "hint":
            db.append({"order_id": f"d{j}", "exchange_order_id": oid, "trade_id": tid, "status": "FILLED",
                       "profile_id": target["profile_id"] if target else "p1"})
        qty = sum(q for q, _, _ in o["fills"])
        orders.append({"exchange_order_id": oid, "client_order_id": cid, "side": o["side"], "symbol": symbol,
                       "qty": qty})
        for k, (q, minute, px) in enumerate(o["fills"]):
            fills.append({"fill_id": f"f{j}_{k}", "exchange_order_id": oid, "side": o["side"], "symbol": symbol,
                          "qty": q, "price": px, "ts": F.at(minute), "fee_cost": 0.01, "fee_currency": "USDT"})
    return sl, orders, fills, db


PROFILES = F.default_profiles()
MARKETS = F.default_markets()


def run(sl, orders, fills, db, st_, live):
    return backfill_exits(F.slices(sl), F.fills(fills), F.exchange_orders(orders), F.db_orders(db),
                          PROFILES, MARKETS, settings=st_, profile_id="p1",
                          window_start=F.at(0), as_of=F.at(65), now=F.at(65), live=live)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(slice_rows=st.lists(slice_st, min_size=1, max_size=4), order_rows=st.lists(order_st, max_size=5),
       require_strong=st.booleans(), allow_heuristic=st.booleans(), live=st.booleans(), data=st.data())
def test_backfill_properties(slice_rows, order_rows, require_strong, allow_heuristic, live, data):
    st_ = ReconSettings(backfill_require_strong=require_strong, backfill_allow_heuristic=allow_heuristic)
    sl, orders, fills, db = build(slice_rows, order_rows)
    res = run(sl, orders, fills, db, st_, live)
    corr = res.corrections
    slices = F.slices(sl).set_index("trade_id")

    # 1. attribution at or above the configured strength, own OPEN slices only
    att = res.attributed.set_index("fill_id")
    allowed_assign = set(STRONG) | ({"single_open_trade", "qty_unique"} if allow_heuristic else set())
    for r in corr.itertuples():
        assert r.action == "BACKFILL_EXIT"
        assert slices.loc[r.target_id, "profile_id"] == "p1" and slices.loc[r.target_id, "status"] == "OPEN"
        ev = json.loads(r.evidence)
        assert set(ev["strengths"]) <= allowed_assign
        for fid in ev["fill_ids"]:
            a = att.loc[fid]
            assert not a["unknown_trade"] and a["role"] != "e"
            if require_strong:
                assert a["strength"] in STRONG and a["profile_id"] == "p1"
            else:
                assert a["strength"] == "none" or a["profile_id"] == "p1"
        new = json.loads(r.new_state)
        assert new["exit_qty"] <= slices.loc[r.target_id, "entry_qty"] + 1e-5 + 1e-12
        assert new["exit_qty"] > json.loads(r.expected_state)["exit_qty"]

    # 2. one correction per target row
    assert corr["target_id"].is_unique

    # 3. same inputs, any row order -> same corrections and ids
    perm = data.draw(st.permutations(range(len(fills))))
    res2 = run(list(reversed(sl)), list(reversed(orders)), [fills[i] for i in perm], list(reversed(db)), st_, live)
    key = ["target_id"]
    pd.testing.assert_frame_equal(corr.sort_values(key).reset_index(drop=True),
                                  res2.corrections.sort_values(key).reset_index(drop=True))
    assert res.no_go_trade_ids == res2.no_go_trade_ids
    pd.testing.assert_frame_equal(res.findings, res2.findings)
