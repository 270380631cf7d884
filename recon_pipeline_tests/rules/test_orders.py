import json

import pandas as pd
import pytest

from recon_pipeline.rules.orders import reconcile_orders
from recon_pipeline.schemas import CORRECTIONS, FINDINGS
from recon_pipeline.settings import ReconSettings
from recon_pipeline_tests.rules import frames as F

NOW = F.at(65)


def run(db=(), ex=(), *, profile_id="p1", settings=None, slices=None):
    return reconcile_orders(
        F.db_orders(list(db)), F.exchange_orders(list(ex)), F.default_profiles(),
        slices if slices is not None else F.slices([{"trade_id": "t1"}]),
        settings=settings or ReconSettings(), profile_id=profile_id, window_start=F.at(0), as_of=NOW,
        now=NOW, live=True)


DB_EXIT = {"order_id": "d1", "trade_id": "t1", "role": "EXIT", "side": "sell", "qty": 1.0, "status": "OPEN",
           "exchange_order_id": "o1", "client_order_id": "g1-x-t1"}
DB_ENTRY = {**DB_EXIT, "role": "ENTRY", "side": "buy", "client_order_id": "g1-e-t1"}


@pytest.mark.parametrize(
    "db, ex, action, new_status, filled, handler",
    [
        (DB_ENTRY, {"exchange_order_id": "o1", "status": "closed", "side": "buy", "qty": 1.0},
         "ENTRY_FILL", "FILLED", 1.0, "reconcileEntryFill"),
        (DB_EXIT, {"exchange_order_id": "o1", "status": "closed", "qty": 1.0, "avg_fill_price": 101.0},
         "EXIT_FILL", "FILLED", 1.0, "reconcileExitFill"),
        ({**DB_EXIT, "status": "PARTIALLY_FILLED", "filled_qty": 0.2},
         {"exchange_order_id": "o1", "status": "canceled", "filled_qty": 0.4, "avg_fill_price": 99.0},
         "CANCEL_ORDER", "CANCELED", 0.4, "reconcileCancel"),
        (DB_EXIT, {"exchange_order_id": "o1", "status": "expired", "filled_qty": 0.0},
         "CANCEL_ORDER", "CANCELED", 0.0, "reconcileCancel"),
        (DB_EXIT, {"exchange_order_id": "o1", "status": "rejected", "filled_qty": 0.0},
         "CANCEL_ORDER", "CANCELED", 0.0, "reconcileCancel"),
        ({**DB_EXIT, "exchange_order_id": None},
         {"exchange_order_id": "o77", "client_order_id": "g1-x-t1", "status": "closed"},
         "EXIT_FILL", "FILLED", 1.0, "reconcileExitFill"),
        ({**DB_EXIT, "status": "NEW"}, {"exchange_order_id": "o1", "status": "closed"},
         "EXIT_FILL", "FILLED", 1.0, "reconcileExitFill"),
    ],
    ids=["entry-filled", "exit-filled", "cancel-after-partial", "expired", "rejected", "matched-by-client-id",
         "new-status"],
)
def test_missing_from_exchange_terminal(db, ex, action, new_status, filled, handler):
    res = run([db], [ex])
    assert list(res.corrections.columns) == list(CORRECTIONS)
    assert res.corrections["action"].tolist() == [action]
    c = res.corrections.iloc[0]
    assert (c["target_table"], c["target_id"]) == ("orders", "d1")
    assert json.loads(c["expected_state"]) == {"status": db["status"], "filled_qty": db.get("filled_qty", 0.0)}
    new = json.loads(c["new_state"])
    assert new["status"] == new_status and new["filled_qty"] == filled
    assert new["exchange_order_id"] == ex["exchange_order_id"]
    if action == "CANCEL_ORDER" and filled:
        assert new["avg_fill_price"] == ex["avg_fill_price"]    # partial fill kept with its price
        assert json.loads(c["evidence"])["exchange_status"] == ex["status"]
    f = res.findings
    assert f["kind"].tolist() == ["ORDER_MISSING_FROM_EXCHANGE"]
    assert handler in f.loc[0, "detail"] and f.loc[0, "reason"] == handler
    # order corrections never touch slices
    assert set(res.corrections["target_table"]) == {"orders"}


def test_not_found_is_no_go_without_correction():
    res = run([DB_EXIT], [])
    assert res.corrections.empty
    assert res.findings[["kind", "reason"]].values.tolist() == [["NO_GO", "ORDER_NOT_FOUND"]]
    assert res.findings.loc[0, "notional_usd"] == 100.0


@pytest.mark.parametrize(
    "db, ex",
    [
        (DB_EXIT, {"exchange_order_id": "o1", "status": "open"}),
        ({**DB_EXIT, "status": "FILLED"}, {"exchange_order_id": "o1", "status": "closed"}),
        ({**DB_EXIT, "status": "CANCELED"}, {"exchange_order_id": "o1", "status": "canceled"}),
        ({**DB_EXIT, "profile_id": "p2"}, {"exchange_order_id": "o1", "status": "closed"}),
    ],
    ids=["both-open", "db-terminal", "db-canceled", "other-profiles-order"],
)
def test_nothing_to_do(db, ex):
    res = run([db], [ex])
    assert res.corrections.empty and res.findings.empty


@pytest.mark.parametrize(
    "db_times, ex_times, skipped",
    [
        ({"updated_at": NOW - pd.Timedelta(seconds=30)}, {}, True),
        ({"created_at": NOW - pd.Timedelta(seconds=59)}, {}, True),
        ({"updated_at": NOW - pd.Timedelta(seconds=61)}, {}, False),
        ({}, {"updated_ts": NOW - pd.Timedelta(seconds=10)}, True),
        ({}, {"updated_ts": NOW - pd.Timedelta(seconds=120)}, False),
    ],
    ids=["db-updated-30s", "db-created-59s", "db-updated-61s", "exchange-updated-10s", "exchange-updated-120s"],
)
def test_settle_interval(db_times, ex_times, skipped):
    res = run([{**DB_EXIT, **db_times}], [{"exchange_order_id": "o1", "status": "closed", **ex_times}])
    assert res.corrections.empty is skipped


def test_settle_interval_is_a_setting():
    db = {**DB_EXIT, "updated_at": NOW - pd.Timedelta(seconds=30)}
    res = run([db], [{"exchange_order_id": "o1", "status": "closed"}],
              settings=ReconSettings(order_settle_seconds=10))
    assert res.corrections["action"].tolist() == ["EXIT_FILL"]


@pytest.mark.parametrize(
    "client_id, profile_id, expected",
    [
        ("g1-x-t1", "p1", ("OWN_PROFILE", "client_order_id")),
        ("g1-manual-9", "p1", ("OWN_PROFILE", "sub_tag")),
        ("g2-manual-9", "p1", None),                       # p2's run reports it
        ("g2-manual-9", "p2", ("OWN_PROFILE", "sub_tag")),
        ("web_abc", "p1", ("ACCOUNT_LEVEL", "none")),
        ("web_abc", "p2", ("ACCOUNT_LEVEL", "none")),
        ("g12-x-t1", "p1", ("ACCOUNT_LEVEL", "none")),     # g12 is not g1
    ],
    ids=["own-deterministic", "own-subtag", "other-profile", "other-profile-own-run", "foreign-p1", "foreign-p2",
         "g12-prefix"],
)
def test_missing_in_db_reported_never_adopted(client_id, profile_id, expected):
    ex = {"exchange_order_id": "o5", "client_order_id": client_id, "status": "open", "qty": 2.0, "price": 50.0}
    res = run([], [ex], profile_id=profile_id)
    assert res.corrections.empty                              # never adopted or cancelled
    if expected is None:
        assert res.findings.empty
        return
    f = res.findings
    assert list(f.columns) == list(FINDINGS)
    assert f["kind"].tolist() == ["ORDER_MISSING_IN_DB"]
    assert (f.loc[0, "reason"], f.loc[0, "attribution"]) == expected
    assert f.loc[0, "profile_id"] == profile_id and f.loc[0, "notional_usd"] == 100.0


@pytest.mark.parametrize(
    "db",
    [
        {**DB_EXIT, "status": "FILLED", "exchange_order_id": "o5"},
        {**DB_EXIT, "profile_id": "p2", "exchange_order_id": None, "client_order_id": "cid-5"},
    ],
    ids=["known-by-id-any-status", "known-by-client-id-other-profile"],
)
def test_open_exchange_order_known_to_db_is_not_missing(db):
    ex = {"exchange_order_id": "o5", "client_order_id": "cid-5", "status": "open"}
    res = run([db], [ex])
    assert not (res.findings["kind"] == "ORDER_MISSING_IN_DB").any()


def test_rerun_gives_identical_ids():
    db = [DB_EXIT, {**DB_ENTRY, "order_id": "d2", "exchange_order_id": "o2"}]
    ex = [{"exchange_order_id": "o1", "status": "closed"}, {"exchange_order_id": "o2", "status": "canceled"}]
    a, b = run(db, ex), run(list(reversed(db)), list(reversed(ex)))
    assert a.corrections["correction_id"].tolist() == b.corrections["correction_id"].tolist()
    assert a.corrections["target_id"].is_unique
    pd.testing.assert_frame_equal(a.findings, b.findings)


# --- matching looks only at the exchange orders a DB order can match ----------------------------------

EX_MANY = [{"exchange_order_id": f"o{i}", "client_order_id": f"g1-x-t{i}", "status": "closed",
            "updated_ts": F.at(i)} for i in range(2, 9)] + [
           {"exchange_order_id": "o5", "client_order_id": "g1-x-t5", "status": "open", "updated_ts": F.at(1)}]


@pytest.mark.parametrize("db", [
    pytest.param([], id="no open DB order"),
    pytest.param([{**DB_EXIT, "exchange_order_id": "o404", "client_order_id": "g1-x-t404"}], id="found by neither id"),
    pytest.param([{**DB_EXIT, "exchange_order_id": "o5"}], id="by exchange id, the open row wins"),
    pytest.param([{**DB_EXIT, "exchange_order_id": None, "client_order_id": "g1-x-t3"}], id="by client id"),
    pytest.param([{**DB_EXIT, "exchange_order_id": "o2"},
                  {**DB_EXIT, "order_id": "d2", "exchange_order_id": "o404", "client_order_id": "g1-x-t7"}],
                 id="one by each id"),
])
def test_matching_equals_the_merge_over_every_exchange_order(db, monkeypatch):
    from recon_pipeline.rules import orders

    db_open = F.db_orders(db)
    ex = F.exchange_orders(EX_MANY)
    got = orders._match(db_open, ex)
    monkeypatch.setattr(orders, "_candidates", lambda frame, col, wanted: frame)  # no pruning: the reference
    want = orders._match(db_open, ex)
    pd.testing.assert_frame_equal(got, want)
