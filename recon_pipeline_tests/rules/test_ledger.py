"""Capital ledger (DESIGN 4.6): reservations and positions rows recomputed on the batch's end state."""

from __future__ import annotations

import json

import pytest

from recon_pipeline.rules.ledger import evaluate_ledger
from recon_pipeline.schemas import CORRECTIONS, FINDINGS
from recon_pipeline_tests.rules.parity_frames import (
    NAN,
    db_pos_row,
    db_positions,
    ledger,
    ledger_row,
    order_row,
    orders,
    slice_row,
    slices,
    w,
)

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"


def run(sl=(), od=(), lg=(), dp=()):
    return evaluate_ledger(slices(*sl), orders(*od), ledger(*lg), db_positions(*dp), profile_id="p1",
                           window_start=w(1))


# slices, orders, ledger rows, expected computed reservation, expect a RESERVATION_UPDATE
RESERVATION_CASES = [
    pytest.param([slice_row("a", qty=2.0, entry_price=100.0)], [], [ledger_row(200.0)], 200.0, False,
                 id="open-slice-matches"),
    pytest.param([slice_row("a", qty=2.0, exit_qty=0.5, entry_price=100.0)], [], [ledger_row(200.0)], 150.0, True,
                 id="partial-exit-reserves-remaining"),
    pytest.param([slice_row("a", status="CLOSED", exit_qty=1.0)], [], [ledger_row(100.0)], 0.0, True,
                 id="closed-slice-releases"),
    pytest.param([slice_row("a", status="QUARANTINED")], [], [ledger_row(0.0)], 0.0, False,
                 id="quarantined-slice-not-reserved"),
    pytest.param([], [order_row("o1", qty=2.0, filled=0.5, price=50.0, status="PARTIALLY_FILLED")],
                 [ledger_row(75.0)], 75.0, False, id="partial-entry-order-reserves-unfilled"),
    pytest.param([slice_row("a", qty=0.5, entry_price=50.0)],
                 [order_row("o1", qty=2.0, filled=0.5, price=50.0, status="PARTIALLY_FILLED"),
                  order_row("o2", qty=1.0, price=10.0, status="NEW")],
                 [ledger_row(0.0)], 25.0 + 75.0 + 10.0, True, id="slices-plus-new-and-partial-entry-orders"),
    pytest.param([slice_row("a", qty=1.0, entry_price=100.0)],
                 [order_row("x1", role="EXIT", side="sell", qty=1.0, price=120.0, status="OPEN")],
                 [ledger_row(100.0)], 100.0, False, id="exit-orders-ignored"),
    pytest.param([], [order_row("o1", status="FILLED", filled=1.0), order_row("o2", status="CANCELED"),
                      order_row("o3", status="REJECTED"), order_row("o4", status="EXPIRED")],
                 [ledger_row(0.0)], 0.0, False, id="terminal-entry-orders-ignored"),
    pytest.param([], [order_row("o1", profile_id="p2", qty=5.0)], [ledger_row(0.0)], 0.0, False,
                 id="other-profiles-orders-ignored"),
    pytest.param([slice_row("a", qty=1.0, entry_price=100.0)], [], [ledger_row(100.009)], 100.0, False,
                 id="within-one-cent"),
    pytest.param([slice_row("a", qty=1.0, entry_price=100.0)], [], [ledger_row(100.02)], 100.0, True,
                 id="beyond-one-cent"),
    pytest.param([], [], [], 0.0, False, id="no-row-nothing-reserved-no-create"),
    pytest.param([slice_row("a", qty=1.0, entry_price=100.0)], [], [], 100.0, True, id="no-row-creates"),
    pytest.param([], [order_row("o1", qty=1.0, price=NAN)], [ledger_row(0.0)], 0.0, False,
                 id="unpriced-market-entry-order-reserves-zero"),
]


@pytest.mark.parametrize("sl,od,lg,reserved,update", RESERVATION_CASES)
def test_reservation(sl, od, lg, reserved, update):
    res = run(sl, od, lg)
    assert res.summary["reserved_usd"] == pytest.approx(reserved)
    upd = res.corrections.loc[res.corrections["action"] == "RESERVATION_UPDATE"]
    assert len(upd) == int(update)
    assert (res.findings["kind"] == "RESERVATION_MISMATCH").sum() == int(update)
    if update:
        c = upd.iloc[0]
        assert (c["target_table"], c["target_id"], c["expected_state"]) == ("capital_ledger", "p1", "{}")
        assert json.loads(c["new_state"])["reserved_usd"] == pytest.approx(reserved)
        assert json.loads(c["new_state"])["create"] is (not lg)
    assert list(res.findings.columns) == list(FINDINGS) and list(res.corrections.columns) == list(CORRECTIONS)


# slices, positions rows, expected {symbol: new qty} of POSITION_UPDATEs
POSITION_CASES = [
    pytest.param([slice_row("a", qty=1.0)], [db_pos_row(BTC, 1.0)], {}, id="matches"),
    pytest.param([slice_row("a", qty=1.0), slice_row("b", qty=0.5, side="short")], [db_pos_row(BTC, 1.0)],
                 {BTC: 0.5}, id="signed-net-differs"),
    pytest.param([slice_row("a", qty=1.0, side="short")], [db_pos_row(BTC, -1.0)], {}, id="short-signed"),
    pytest.param([slice_row("a", qty=1.0, exit_qty=0.25)], [db_pos_row(BTC, 1.0)], {BTC: 0.75},
                 id="remaining-after-partial-exit"),
    pytest.param([slice_row("a", status="CLOSED", exit_qty=1.0)], [db_pos_row(BTC, 1.0)], {BTC: 0.0},
                 id="no-open-slice-nonzero-row-zeroed"),
    pytest.param([], [db_pos_row(ETH, 0.0)], {}, id="zero-row-without-slices-left-alone"),
    pytest.param([slice_row("a", qty=1.0), slice_row("b", qty=1.0, side="short")], [], {},
                 id="net-zero-no-row-not-created"),
    pytest.param([slice_row("a", qty=1.0, symbol=ETH)], [], {ETH: 1.0}, id="missing-row-created"),
    pytest.param([slice_row("a", qty=1.0)], [db_pos_row(BTC, 1.0 + 1e-12)], {}, id="float-noise-tolerated"),
    pytest.param([slice_row("a", qty=1.0)], [db_pos_row(BTC, 1.0, profile_id="p2")], {BTC: 1.0},
                 id="other-profiles-row-ignored"),
]


@pytest.mark.parametrize("sl,dp,expected", POSITION_CASES)
def test_positions(sl, dp, expected):
    res = run(sl, dp=dp)
    upd = res.corrections.loc[res.corrections["action"] == "POSITION_UPDATE"]
    got = {t.split("|", 1)[1]: json.loads(s)["qty"] for t, s in zip(upd["target_id"], upd["new_state"], strict=True)}
    assert got == pytest.approx(expected)
    assert set(upd["target_table"]) <= {"positions"}
    assert (upd["expected_state"] == "{}").all()
    assert (res.findings["kind"] == "POSITION_MISMATCH").sum() == len(expected)
    assert res.summary["position_mismatches"] == len(expected)


def test_position_update_avg_entry_price_and_ids_stable():
    sl = [slice_row("a", qty=1.0, entry_price=100.0), slice_row("b", qty=3.0, entry_price=200.0)]
    first, again = run(sl), run(sl)
    new = json.loads(first.corrections.set_index("action").loc["POSITION_UPDATE", "new_state"])
    assert new["qty"] == 4.0 and new["avg_entry_price"] == pytest.approx(175.0)
    assert first.corrections["correction_id"].tolist() == again.corrections["correction_id"].tolist()
    assert first.corrections["target_id"].is_unique
