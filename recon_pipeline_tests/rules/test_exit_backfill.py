import json

import pandas as pd
import pytest

from recon_pipeline.rules import client_order_id as C
from recon_pipeline.rules.exit_backfill import backfill_exits, slices_after
from recon_pipeline.schemas import CORRECTIONS, FINDINGS
from recon_pipeline.settings import ReconSettings
from recon_pipeline_tests.rules import frames as F

STRICT = ReconSettings()
HEUR = ReconSettings(backfill_allow_heuristic=True)
LOOSE = ReconSettings(backfill_require_strong=False)
LOOSE_HEUR = ReconSettings(backfill_require_strong=False, backfill_allow_heuristic=True)
PROFILES = F.default_profiles()
MARKETS = F.default_markets()


def run(slices, fills, orders=(), db_orders=(), *, settings=STRICT, live=True, profile_id="p1",
        as_of=F.at(65), markets=None):
    return backfill_exits(
        F.slices(slices), F.fills(fills), F.exchange_orders(list(orders)), F.db_orders(list(db_orders)),
        PROFILES, markets if markets is not None else MARKETS,
        settings=settings, profile_id=profile_id, window_start=F.at(0), as_of=as_of, now=as_of, live=live)


def order(oid, cid, **kw):
    return {"exchange_order_id": oid, "client_order_id": cid, **kw}


X1 = C.encode("g1", "x", "t1")
X2 = C.encode("g2", "x", "t2")
TWO_PROFILES = [{"trade_id": "t1", "profile_id": "p1"}, {"trade_id": "t2", "profile_id": "p2"}]


def summary(res):
    """(action, target, status) of corrections and (kind, reason, trade_id) of findings."""
    corr = [(r.action, r.target_id, json.loads(r.new_state)["status"]) for r in res.corrections.itertuples()]
    finds = [(r.kind, r.reason, None if pd.isna(r.trade_id) else r.trade_id) for r in res.findings.itertuples()]
    return corr, finds


def new_state(res, i=0):
    return json.loads(res.corrections.iloc[i]["new_state"])


# ---- the main table: one case per edge case ----------------------------------------------------

CASES = [
    # id, slices, fills, orders, db_orders, settings, live, profile, expected corrections, expected findings
    ("two-profiles-attributed-exit", TWO_PROFILES, [{"exchange_order_id": "o1"}], [order("o1", X1)], [], STRICT,
     True, "p1", [("BACKFILL_EXIT", "t1", "CLOSED")], [("MISSING_EXIT", "EXIT", "t1")]),
    ("two-profiles-other-run-untouched", TWO_PROFILES, [{"exchange_order_id": "o1"}], [order("o1", X1)], [],
     STRICT, True, "p2", [], []),
    ("same-fill-no-client-id", TWO_PROFILES, [{"exchange_order_id": "o1"}], [order("o1", None)], [], STRICT, True,
     "p1", [], [("NO_GO", "NO_ATTRIBUTION", "t1")]),
    ("trade-id-hint", [{"trade_id": "t1"}], [{"exchange_order_id": "o1"}], [order("o1", "web-1")],
     [{"exchange_order_id": "o1", "trade_id": "t1", "status": "FILLED"}], STRICT, True, "p1",
     [("BACKFILL_EXIT", "t1", "CLOSED")], [("MISSING_EXIT", "EXIT", "t1")]),
    ("subtag-single-own-slice", TWO_PROFILES, [{"exchange_order_id": "o1"}], [order("o1", "g1-manual-1")], [],
     STRICT, True, "p1", [("BACKFILL_EXIT", "t1", "CLOSED")], [("MISSING_EXIT", "EXIT", "t1")]),
    ("g12-is-not-g1", [{"trade_id": "t1"}], [{"exchange_order_id": "o1"}], [order("o1", "g12-manual-1")], [],
     STRICT, True, "p1", [], [("NO_GO", "NO_ATTRIBUTION", "t1")]),
    ("grace-inside", [{"trade_id": "t1", "entry_time": F.at(30)}],
     [{"exchange_order_id": "o1", "ts": F.at(25, 1)}], [order("o1", X1)], [], STRICT, True, "p1",
     [("BACKFILL_EXIT", "t1", "CLOSED")], [("MISSING_EXIT", "EXIT", "t1")]),
    ("grace-boundary", [{"trade_id": "t1", "entry_time": F.at(30)}],
     [{"exchange_order_id": "o1", "ts": F.at(25)}], [order("o1", X1)], [], STRICT, True, "p1",
     [("BACKFILL_EXIT", "t1", "CLOSED")], [("MISSING_EXIT", "EXIT", "t1")]),
    ("grace-just-outside", [{"trade_id": "t1", "entry_time": F.at(30)}],
     [{"exchange_order_id": "o1", "ts": F.at(24, 59)}], [order("o1", X1)], [], STRICT, True, "p1",
     [], [("NO_GO", "STALE_FILL", "t1")]),
    ("stale-with-trade-id-hint", [{"trade_id": "t1", "entry_time": F.at(30)}],
     [{"exchange_order_id": "o1", "ts": F.at(10)}], [order("o1", "web-1")],
     [{"exchange_order_id": "o1", "trade_id": "t1", "status": "FILLED"}], STRICT, True, "p1",
     [], [("NO_GO", "STALE_FILL", "t1")]),
    ("subtag-two-slices-heuristic-off", [{"trade_id": "t1", "entry_qty": 1.0}, {"trade_id": "t3", "entry_qty": 2.0}],
     [{"exchange_order_id": "o1", "qty": 2.0}], [order("o1", "g1-manual-1", qty=2.0)], [], STRICT, True, "p1",
     [], [("NO_GO", "AMBIGUOUS", None)]),
    ("subtag-two-slices-qty-unique", [{"trade_id": "t1", "entry_qty": 1.0}, {"trade_id": "t3", "entry_qty": 2.0}],
     [{"exchange_order_id": "o1", "qty": 2.0}], [order("o1", "g1-manual-1", qty=2.0)], [], HEUR, True, "p1",
     [("BACKFILL_EXIT", "t3", "CLOSED")], [("MISSING_EXIT", "EXIT", "t3")]),
    ("subtag-equal-qty-stays-ambiguous", [{"trade_id": "t1"}, {"trade_id": "t3"}],
     [{"exchange_order_id": "o1"}], [order("o1", "g1-manual-1")], [], HEUR, True, "p1",
     [], [("NO_GO", "AMBIGUOUS", None)]),
    ("untied-strict-heuristic-on", [{"trade_id": "t1"}], [{"exchange_order_id": "o1"}], [order("o1", None)], [],
     HEUR, True, "p1", [], [("NO_GO", "NO_ATTRIBUTION", "t1")]),
    ("untied-loose-heuristic-off", [{"trade_id": "t1"}], [{"exchange_order_id": "o1"}], [order("o1", None)], [],
     LOOSE, True, "p1", [], [("NO_GO", "NO_ATTRIBUTION", "t1")]),
    ("untied-single-open-trade", [{"trade_id": "t1"}], [{"exchange_order_id": "o1"}], [order("o1", None)], [],
     LOOSE_HEUR, True, "p1", [("BACKFILL_EXIT", "t1", "CLOSED")], [("MISSING_EXIT", "EXIT", "t1")]),
    ("untied-single-open-trade-of-other-profile", [{"trade_id": "t2", "profile_id": "p2"}],
     [{"exchange_order_id": "o1"}], [order("o1", None)], [], LOOSE_HEUR, True, "p1", [], []),
    ("untied-qty-unique-own", [{"trade_id": "t1", "entry_qty": 1.0}, {"trade_id": "t2", "profile_id": "p2",
                                                                      "entry_qty": 3.0}],
     [{"exchange_order_id": "o1", "qty": 0.5}], [order("o1", None, qty=1.0)], [], LOOSE_HEUR, True, "p1",
     [("BACKFILL_EXIT", "t1", "OPEN")], [("MISSING_EXIT", "PARTIAL_EXIT", "t1")]),
    ("untied-qty-unique-other-left-alone", [{"trade_id": "t1", "entry_qty": 1.0},
                                            {"trade_id": "t2", "profile_id": "p2", "entry_qty": 3.0}],
     [{"exchange_order_id": "o1", "qty": 3.0}], [order("o1", None, qty=3.0)], [], LOOSE_HEUR, True, "p1", [], []),
    ("untied-equal-qty-ambiguous", TWO_PROFILES, [{"exchange_order_id": "o1"}], [order("o1", None)], [],
     LOOSE_HEUR, True, "p1", [], [("NO_GO", "AMBIGUOUS", None)]),
    ("partial-exit-stays-open", [{"trade_id": "t1"}], [{"exchange_order_id": "o1", "qty": 0.4}],
     [order("o1", X1)], [], STRICT, True, "p1", [("BACKFILL_EXIT", "t1", "OPEN")],
     [("MISSING_EXIT", "PARTIAL_EXIT", "t1")]),
    ("equal-exit-qty-nothing", [{"trade_id": "t1", "exit_qty": 0.4}], [{"exchange_order_id": "o1", "qty": 0.4}],
     [order("o1", X1)], [], STRICT, True, "p1", [], []),
    ("over-fill", [{"trade_id": "t1"}], [{"exchange_order_id": "o1", "qty": 0.7}, {"exchange_order_id": "o2",
                                                                                   "qty": 0.7}],
     [order("o1", X1), order("o2", C.encode("g1", "x", "t1", 2))], [], STRICT, True, "p1", [],
     [("NO_GO", "OVER_FILL", "t1")]),
    ("within-one-precision-unit-closes", [{"trade_id": "t1"}], [{"exchange_order_id": "o1", "qty": 0.99999}],
     [order("o1", X1)], [], STRICT, True, "p1", [("BACKFILL_EXIT", "t1", "CLOSED")],
     [("MISSING_EXIT", "EXIT", "t1")]),
    ("two-units-short-stays-open", [{"trade_id": "t1"}], [{"exchange_order_id": "o1", "qty": 0.99998}],
     [order("o1", X1)], [], STRICT, True, "p1", [("BACKFILL_EXIT", "t1", "OPEN")],
     [("MISSING_EXIT", "PARTIAL_EXIT", "t1")]),
    ("db-ahead-live", [{"trade_id": "t1", "exit_qty": 0.5}], [{"exchange_order_id": "o1", "qty": 0.2}],
     [order("o1", X1)], [], STRICT, True, "p1", [], [("NO_GO", "DB_AHEAD", "t1")]),
    ("db-ahead-historical", [{"trade_id": "t1", "exit_qty": 0.5}], [{"exchange_order_id": "o1", "qty": 0.2}],
     [order("o1", X1)], [], STRICT, False, "p1", [], []),
    ("late-fill-after-synthetic-live", [{"trade_id": "t1", "status": "CLOSED", "exit_qty": 1.0,
                                         "exit_source": "parity_synthetic"}],
     [{"exchange_order_id": "o1"}], [order("o1", X1)], [], STRICT, True, "p1", [], [("NO_GO", "LATE_FILL", "t1")]),
    ("late-fill-qty-differs-live", [{"trade_id": "t1", "status": "CLOSED", "exit_qty": 1.0,
                                     "exit_source": "exchange"}],
     [{"exchange_order_id": "o1", "qty": 0.3}], [order("o1", X1)], [], STRICT, True, "p1", [],
     [("NO_GO", "LATE_FILL", "t1")]),
    ("late-fill-historical", [{"trade_id": "t1", "status": "CLOSED", "exit_qty": 1.0,
                               "exit_source": "parity_synthetic"}],
     [{"exchange_order_id": "o1"}], [order("o1", X1)], [], STRICT, False, "p1", [], []),
    ("closed-slice-matching-exit", [{"trade_id": "t1", "status": "CLOSED", "exit_qty": 1.0,
                                     "exit_source": "exchange"}],
     [{"exchange_order_id": "o1"}], [order("o1", X1)], [], STRICT, True, "p1", [], []),
    ("unknown-trade", [{"trade_id": "t1"}], [{"exchange_order_id": "o1"}], [order("o1", C.encode("g1", "x", "zz"))],
     [], HEUR, True, "p1", [], [("NO_GO", "UNKNOWN_TRADE", None)]),
    ("entry-role-never-exit", [{"trade_id": "t1"}], [{"exchange_order_id": "o1", "side": "sell"}],
     [order("o1", C.encode("g1", "e", "t1"))], [], LOOSE_HEUR, True, "p1", [], []),
    ("entry-role-db-hint-never-exit", [{"trade_id": "t1"}], [{"exchange_order_id": "o1"}], [order("o1", "web")],
     [{"exchange_order_id": "o1", "trade_id": "t1", "role": "ENTRY"}], LOOSE_HEUR, True, "p1", [], []),
    ("buy-is-not-a-long-exit", [{"trade_id": "t1"}], [{"exchange_order_id": "o1", "side": "buy"}],
     [order("o1", "g1-manual")], [], STRICT, True, "p1", [], []),
    ("short-closed-by-buy", [{"trade_id": "t1", "side": "short"}], [{"exchange_order_id": "o1", "side": "buy"}],
     [order("o1", X1, side="buy")], [], STRICT, True, "p1", [("BACKFILL_EXIT", "t1", "CLOSED")],
     [("MISSING_EXIT", "EXIT", "t1")]),
    ("explicit-wrong-side", [{"trade_id": "t1"}], [{"exchange_order_id": "o1", "side": "buy"}],
     [order("o1", X1, side="buy")], [], STRICT, True, "p1", [], [("NO_GO", "AMBIGUOUS", "t1")]),
    ("unknown-symbol", [{"trade_id": "t1", "symbol": "DOGE/USDT"}],
     [{"exchange_order_id": "o1", "symbol": "DOGE/USDT"}], [order("o1", X1, symbol="DOGE/USDT")], [], STRICT,
     True, "p1", [], [("NO_GO", "UNKNOWN_SYMBOL", None)]),
    ("unattributed-in-window", [], [{"exchange_order_id": "o1", "ts": F.at(30)}], [order("o1", None)], [],
     STRICT, True, "p1", [], [("UNATTRIBUTED", "ACCOUNT_LEVEL", None)]),
    ("unattributed-before-window-not-repeated", [], [{"exchange_order_id": "o1", "ts": F.at(-30)}],
     [order("o1", None)], [], STRICT, True, "p1", [], []),
    ("fill-after-as-of-ignored", [{"trade_id": "t1"}], [{"exchange_order_id": "o1", "ts": F.at(70)}],
     [order("o1", X1)], [], STRICT, True, "p1", [], []),
    ("quarantined-slice-untouched", [{"trade_id": "t1", "status": "QUARANTINED"}], [{"exchange_order_id": "o1"}],
     [order("o1", X1)], [], STRICT, True, "p1", [], []),
]


@pytest.mark.parametrize(
    "slices, fills, orders, db_orders, settings, live, profile_id, corrections, findings",
    [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_backfill_table(slices, fills, orders, db_orders, settings, live, profile_id, corrections, findings):
    res = run(slices, fills, orders, db_orders, settings=settings, live=live, profile_id=profile_id)
    assert list(res.findings.columns) == list(FINDINGS)
    assert list(res.corrections.columns) == list(CORRECTIONS)
    assert summary(res) == (corrections, findings)
    assert res.corrections["target_id"].is_unique
    assert (res.findings["profile_id"] == profile_id).all()


# ---- details ---------------------------------------------------------------------------------------


def test_three_partial_fills_in_one_millisecond_close_at_vwap():
    ts = F.at(30)
    fills = [{"fill_id": "f3", "qty": 0.5, "price": 103.0, "ts": ts},
             {"fill_id": "f1", "qty": 0.2, "price": 100.0, "ts": ts},
             {"fill_id": "f2", "qty": 0.3, "price": 101.0, "ts": ts}]
    res = run([{"trade_id": "t1"}], fills, [order("o1", X1)])
    ns = new_state(res)
    assert ns["status"] == "CLOSED" and ns["exit_qty"] == pytest.approx(1.0)
    assert ns["exit_price"] == pytest.approx((0.2 * 100 + 0.3 * 101 + 0.5 * 103) / 1.0)
    assert pd.Timestamp(ns["exit_time"]) == ts and ns["exit_source"] == "backfill"
    ev = json.loads(res.corrections.iloc[0]["evidence"])
    assert ev["fill_ids"] == ["f1", "f2", "f3"] and ev["attribution"] == "client_order_id"
    assert json.loads(res.corrections.iloc[0]["expected_state"]) == {"status": "OPEN", "exit_qty": 0.0}
    assert res.findings.loc[0, "fill_ids"] == "f1,f2,f3"


@pytest.mark.parametrize(
    "fees, expected",
    [
        ([("BTC", 0.001), ("BTC", 0.002)], {"BTC": 0.003}),
        ([("USDT", 0.1), ("BNB", 0.0005)], {"USDT": 0.1, "BNB": 0.0005}),
        ([("BNB", 0.0005), (None, None)], {"BNB": 0.0005}),
        ([(None, None), (None, None)], {}),
    ],
    ids=["base-currency", "quote-and-third-currency", "one-without-fee", "no-fees"],
)
def test_fees_summed_per_currency(fees, expected):
    fills = [{"qty": 0.5, "fee_currency": cur, "fee_cost": cost} for cur, cost in fees]
    ns = new_state(run([{"trade_id": "t1"}], fills, [order("o1", X1)]))
    assert ns["exit_fees"] == pytest.approx(expected)


def test_partial_then_rest_closes_with_vwap_of_all():
    first = [{"fill_id": "f1", "qty": 0.4, "price": 100.0, "ts": F.at(20)}]
    res = run([{"trade_id": "t1"}], first, [order("o1", X1)])
    after = slices_after(F.slices([{"trade_id": "t1"}]), res.corrections)
    assert after.loc[0, "status"] == "OPEN" and after.loc[0, "exit_qty"] == 0.4
    rest = first + [{"fill_id": "f2", "qty": 0.6, "price": 110.0, "ts": F.at(40), "exchange_order_id": "o2"}]
    res2 = run([{"trade_id": "t1", "exit_qty": 0.4}], rest,
               [order("o1", X1), order("o2", C.encode("g1", "x", "t1", 1))])
    ns = new_state(res2)
    assert ns["status"] == "CLOSED" and ns["exit_price"] == pytest.approx(106.0)
    assert json.loads(res2.corrections.iloc[0]["expected_state"])["exit_qty"] == 0.4


def test_rerun_gives_identical_correction_ids_and_reordered_input_too():
    slices = [{"trade_id": "t1"}, {"trade_id": "t3", "symbol": "ETH/USDT"}]
    fills = [{"fill_id": "f1", "qty": 0.5}, {"fill_id": "f2", "qty": 0.5, "ts": F.at(31)},
             {"fill_id": "f3", "symbol": "ETH/USDT", "exchange_order_id": "o3", "qty": 0.3}]
    orders = [order("o1", X1), order("o3", C.encode("g1", "x", "t3"), symbol="ETH/USDT")]
    a = run(slices, fills, orders)
    b = run(list(reversed(slices)), list(reversed(fills)), list(reversed(orders)), as_of=F.at(66))
    assert len(a.corrections) == 2
    assert sorted(a.corrections["correction_id"]) == sorted(b.corrections["correction_id"])
    pd.testing.assert_frame_equal(a.corrections.sort_values("target_id").reset_index(drop=True),
                                  b.corrections.sort_values("target_id").reset_index(drop=True))
    # applying the batch and running again proposes nothing
    after = slices_after(F.slices(slices), a.corrections)
    c = backfill_exits(after, F.fills(fills), F.exchange_orders(orders), F.db_orders([]), F.default_profiles(),
                       F.default_markets(), settings=STRICT, profile_id="p1", window_start=F.at(0),
                       as_of=F.at(65), now=F.at(65), live=True)
    assert c.corrections.empty and c.findings.empty


@pytest.mark.parametrize(
    "slices, fills, orders, settings, expected",
    [
        ([{"trade_id": "t1"}], [{"qty": 0.7}, {"qty": 0.7, "exchange_order_id": "o2"}],
         [order("o1", X1), order("o2", C.encode("g1", "x", "t1", 1))], STRICT, {("t1", "OVER_FILL")}),
        ([{"trade_id": "t1"}, {"trade_id": "t3"}], [{}], [order("o1", "g1-m")], STRICT,
         {("t1", "AMBIGUOUS"), ("t3", "AMBIGUOUS")}),
        ([{"trade_id": "t1", "entry_time": F.at(30)}], [{"ts": F.at(10)}], [order("o1", X1)], STRICT,
         {("t1", "STALE_FILL")}),
        ([{"trade_id": "t1"}, {"trade_id": "t5", "side": "short"}], [{}], [order("o1", C.encode("g1", "x", "zz"))],
         STRICT, {("t1", "UNKNOWN_TRADE")}),
        ([{"trade_id": "t1"}], [{}], [order("o1", None)], STRICT, set()),       # NO_ATTRIBUTION: no quarantine
    ],
    ids=["over-fill", "ambiguous-all-candidates", "stale", "unknown-trade-same-symbol-side", "no-attribution"],
)
def test_no_go_trade_ids_for_parity(slices, fills, orders, settings, expected):
    res = run(slices, fills, orders, settings=settings)
    assert set(map(tuple, res.no_go_evidence[["trade_id", "reason"]].values.tolist())) == expected
    assert res.no_go_trade_ids == frozenset(t for t, _ in expected)


def test_slices_after_only_applies_backfill_and_keeps_dtypes():
    sl = F.slices([{"trade_id": "t1"}, {"trade_id": "t2"}])
    res = run([{"trade_id": "t1"}, {"trade_id": "t2", "symbol": "ETH/USDT"}], [{"qty": 0.25}], [order("o1", X1)])
    after = slices_after(sl, res.corrections)
    assert after.dtypes.equals(sl.dtypes)
    assert after.loc[0, "exit_qty"] == 0.25 and after.loc[0, "exit_source"] == "backfill"
    assert after.loc[0, "exit_time"] == F.at(30)
    pd.testing.assert_series_equal(after.iloc[1], sl.iloc[1])
    pd.testing.assert_frame_equal(slices_after(sl, res.corrections.iloc[0:0]), sl)


def test_window_and_profile_stamped():
    res = run([{"trade_id": "t1"}], [{}], [order("o1", X1)])
    assert (res.corrections["window_start"] == F.at(0)).all()
    assert (res.corrections["profile_id"] == "p1").all() and not res.corrections["dry_run"].any()
    assert res.findings.loc[0, "notional_usd"] == 100.0 and res.findings.loc[0, "account"] == "acct"
    assert res.evidence["fill_id"].tolist() == ["f1"] and res.evidence["assigned_strength"].tolist() == [
        "client_order_id"]


def test_evidence_lists_sorted_and_deduplicated():
    # two exit orders of t1 (one with two fills): fill ids sorted, order and client ids once each
    x1b = C.encode("g1", "x", "t1", 1)
    res = run([{"trade_id": "t1", "entry_qty": 1.0}],
              [{"fill_id": "f3", "exchange_order_id": "o2", "qty": 0.25, "price": 110.0, "ts": F.at(20)},
               {"fill_id": "f1", "exchange_order_id": "o1", "qty": 0.25, "price": 100.0, "ts": F.at(10)},
               {"fill_id": "f2", "exchange_order_id": "o1", "qty": 0.5, "price": 100.0, "ts": F.at(15)}],
              [order("o1", X1), order("o2", x1b)])
    ev = json.loads(res.corrections.iloc[0]["evidence"])
    assert ev["fill_ids"] == ["f1", "f2", "f3"] and ev["exchange_order_ids"] == ["o1", "o2"]
    assert ev["client_order_ids"] == sorted([X1, x1b]) and ev["strengths"] == ["client_order_id"]
    assert new_state(res)["exit_qty"] == 1.0 and new_state(res)["exit_price"] == pytest.approx(102.5)
    f = res.findings.iloc[0]
    assert f["fill_ids"] == "f1,f2,f3" and f["exchange_order_id"] == "o1,o2"


def test_stale_finding_lists_each_order_once():
    res = run([{"trade_id": "t1", "entry_time": F.at(30)}],
              [{"fill_id": "f2", "ts": F.at(10)}, {"fill_id": "f1", "ts": F.at(11)}], [order("o1", X1)])
    f = res.findings.loc[res.findings["reason"] == "STALE_FILL"].iloc[0]
    assert f["fill_ids"] == "f1,f2" and f["exchange_order_id"] == "o1"


def test_order_findings_join_fill_ids_per_order():
    # untied fills of two orders, one with two fills: each NO_ATTRIBUTION finding lists its own fills
    res = run([{"trade_id": "t1"}],
              [{"fill_id": "f9", "exchange_order_id": "o2"}, {"fill_id": "f2", "exchange_order_id": "o1"},
               {"fill_id": "f1", "exchange_order_id": "o1"}],
              [order("o1", None), order("o2", "foreign-1")])
    got = dict(zip(res.findings["exchange_order_id"], res.findings["fill_ids"], strict=True))
    assert got == {"o1": "f1,f2", "o2": "f9"}
