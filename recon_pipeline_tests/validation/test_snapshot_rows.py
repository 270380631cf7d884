"""Row-level bad values of the snapshot frames: excluded, reported as BAD_ROW, the rest kept.

Table-driven: each case puts ONE bad row (named ``bad``) next to good rows in one frame and says
which reason code it must get. Good-but-unusual values (a rebate fee, a market order without price,
a client id of exactly 36 characters, ...) must be kept.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recon_pipeline import schemas
from recon_pipeline.settings import ReconSettings
from recon_pipeline.validation import snapshots as V
from recon_pipeline.validation.outputs import validate_outputs
from recon_pipeline_tests.rules import frames as F

NOW = F.at(60)
SINCE = F.at(-60)
SWAP = "BTC/USDT:USDT"
NAN, INF = math.nan, math.inf


def _markets(extra=()) -> pd.DataFrame:
    return F.markets([{"symbol": F.SYMBOL}, {"symbol": "ETH/USDT"},
                      {"symbol": SWAP, "market_type": "swap", "base": "BTC", "amount_precision": 0.001}, *extra])


def _exchange(fills=None, orders=None, positions=None, markets=None):
    return V.validate_exchange_snapshot(
        F.fills(fills) if fills is not None else F.fills([{"fill_id": "good"}]),
        F.exchange_orders(orders) if orders is not None else F.exchange_orders([{"exchange_order_id": "o1"}]),
        F.exchange_positions(positions) if positions is not None else F.exchange_positions(
            [{"instrument": "BTC", "qty": 1.0}]),
        markets if markets is not None else _markets(),
        account=F.ACCOUNT, now=NOW, fills_since=SINCE, as_of=NOW, window_start=F.T0, profile_id="p1")


def _db(slices=None, orders=None, positions=None):
    return V.validate_db_snapshot(
        F.slices(slices) if slices is not None else F.slices([{"trade_id": "good"}]),
        F.db_orders(orders) if orders is not None else F.db_orders([{"order_id": "good"}]),
        F.db_positions(positions) if positions is not None else F.db_positions([{"qty": 1.0}]),
        account=F.ACCOUNT, window_start=F.T0, profile_id="p1")


# (id, frame, bad row, expected reason)
EXCHANGE_CASES = [
    ("fill-nan-qty", "fills", {"qty": NAN}, "NON_FINITE_QTY"),
    ("fill-inf-qty", "fills", {"qty": INF}, "NON_FINITE_QTY"),
    ("fill-negative-qty", "fills", {"qty": -0.5}, "NON_POSITIVE_QTY"),
    ("fill-zero-qty", "fills", {"qty": 0.0}, "NON_POSITIVE_QTY"),
    ("fill-nan-price", "fills", {"price": NAN}, "NON_FINITE_PRICE"),
    ("fill-zero-price", "fills", {"price": 0.0}, "NON_POSITIVE_PRICE"),
    ("fill-unknown-symbol", "fills", {"symbol": "XRP/USDT"}, "UNKNOWN_SYMBOL"),
    ("fill-null-symbol", "fills", {"symbol": None}, "UNKNOWN_SYMBOL"),
    ("fill-bad-side", "fills", {"side": "long"}, "BAD_SIDE"),
    ("fill-null-order", "fills", {"exchange_order_id": None}, "NULL_ORDER_ID"),
    ("fill-infinite-fee", "fills", {"fee_cost": INF, "fee_currency": "USDT"}, "BAD_FEE"),
    ("fill-fee-without-currency", "fills", {"fee_cost": 0.1}, "BAD_FEE"),
    ("fill-null-time", "fills", {"ts": None}, "NULL_TIMESTAMP"),
    ("fill-epoch-zero", "fills", {"ts": "1970-01-01T00:00:00Z"}, "BEFORE_EPOCH"),
    ("fill-after-now", "fills", {"ts": F.at(61)}, "FUTURE_TIMESTAMP"),
    ("fill-before-span", "fills", {"ts": F.at(-61)}, "OUT_OF_SPAN"),
    ("order-client-id-37-chars", "orders", {"client_order_id": "g1-x-" + "a" * 32}, "BAD_CLIENT_ORDER_ID"),
    ("order-client-id-space", "orders", {"client_order_id": "g1 x t1"}, "BAD_CLIENT_ORDER_ID"),
    ("order-client-id-empty", "orders", {"client_order_id": ""}, "BAD_CLIENT_ORDER_ID"),
    ("order-filled-exceeds-qty", "orders", {"qty": 1.0, "filled_qty": 1.5}, "FILLED_EXCEEDS_QTY"),
    ("order-negative-filled", "orders", {"filled_qty": -0.1}, "NEGATIVE_FILLED"),
    ("order-nan-filled", "orders", {"filled_qty": NAN}, "NON_FINITE_FILLED"),
    ("order-zero-qty", "orders", {"qty": 0.0, "filled_qty": 0.0}, "NON_POSITIVE_QTY"),
    ("order-negative-price", "orders", {"price": -100.0}, "NON_POSITIVE_PRICE"),
    ("order-bad-status", "orders", {"status": "done"}, "BAD_STATUS"),
    ("order-bad-side", "orders", {"side": "short"}, "BAD_SIDE"),
    ("order-unknown-symbol", "orders", {"symbol": "XRP/USDT"}, "UNKNOWN_SYMBOL"),
    ("order-created-after-now", "orders", {"created_ts": F.at(61), "updated_ts": F.at(61)}, "FUTURE_TIMESTAMP"),
    ("position-nan-qty", "positions", {"qty": NAN}, "NON_FINITE_QTY"),
    ("position-negative-spot-balance", "positions", {"qty": -0.1}, "NEGATIVE_BALANCE"),
    ("position-long-with-negative-qty", "positions",
     {"market_type": "swap", "instrument": SWAP, "position_side": "long", "qty": -1.0}, "SIDE_SIGN_MISMATCH"),
    ("position-unknown-swap", "positions",
     {"market_type": "swap", "instrument": "XRP/USDT:USDT", "qty": 1.0}, "UNKNOWN_SYMBOL"),
    ("position-bad-side", "positions", {"position_side": "up"}, "BAD_POSITION_SIDE"),
    ("market-zero-precision", "markets", {"symbol": "SOL/USDT", "amount_precision": 0.0}, "NON_POSITIVE_PRECISION"),
    ("market-negative-mark", "markets", {"symbol": "SOL/USDT", "mark_price": -1.0}, "NON_POSITIVE_PRICE"),
    ("market-zero-contract-size", "markets",
     {"symbol": "SOL/USDT:USDT", "market_type": "swap", "contract_size": 0.0}, "NON_POSITIVE_CONTRACT_SIZE"),
    ("market-bad-type", "markets", {"symbol": "SOL/USDT", "market_type": "future"}, "BAD_MARKET_TYPE"),
]

DB_CASES = [
    ("slice-nan-entry-qty", "slices", {"entry_qty": NAN}, "NON_FINITE_QTY"),
    ("slice-negative-entry-qty", "slices", {"entry_qty": -1.0}, "NON_POSITIVE_QTY"),
    ("slice-exit-exceeds-entry", "slices", {"entry_qty": 1.0, "exit_qty": 1.001}, "EXIT_EXCEEDS_ENTRY"),
    ("slice-negative-exit-qty", "slices", {"exit_qty": -0.1}, "NEGATIVE_EXIT_QTY"),
    ("slice-nan-exit-qty", "slices", {"exit_qty": NAN}, "NEGATIVE_EXIT_QTY"),
    ("slice-null-entry-time", "slices", {"entry_time": None}, "NULL_ENTRY_TIME"),
    ("slice-entry-before-epoch", "slices", {"entry_time": "1970-01-01T00:00:00Z"}, "BEFORE_EPOCH"),
    ("slice-zero-entry-price", "slices", {"entry_price": 0.0}, "NON_POSITIVE_PRICE"),
    ("slice-nan-entry-price", "slices", {"entry_price": NAN}, "NON_POSITIVE_PRICE"),
    ("slice-bad-side", "slices", {"side": "buy"}, "BAD_SIDE"),
    ("slice-bad-status", "slices", {"status": "open"}, "BAD_STATUS"),
    ("slice-null-symbol", "slices", {"symbol": None}, "NULL_SYMBOL"),
    ("slice-bad-exit-source", "slices", {"exit_source": "manual"}, "BAD_EXIT_SOURCE"),
    ("slice-client-id-too-long", "slices", {"entry_client_order_id": "g1-e-" + "t" * 40}, "BAD_CLIENT_ORDER_ID"),
    ("db-order-filled-exceeds-qty", "orders", {"qty": 1.0, "filled_qty": 2.0}, "FILLED_EXCEEDS_QTY"),
    ("db-order-nan-qty", "orders", {"qty": NAN}, "NON_FINITE_QTY"),
    ("db-order-bad-role", "orders", {"role": "STOP"}, "BAD_ROLE"),
    ("db-order-bad-status", "orders", {"status": "DONE"}, "BAD_STATUS"),
    ("db-order-client-id-space", "orders", {"client_order_id": "g1 x t1"}, "BAD_CLIENT_ORDER_ID"),
    ("db-order-null-client-id", "orders", {"client_order_id": None}, "BAD_CLIENT_ORDER_ID"),
    ("db-order-null-created", "orders", {"created_at": None}, "NULL_TIMESTAMP"),
    ("db-position-nan-qty", "positions", {"qty": NAN}, "NON_FINITE_QTY"),
    ("db-position-negative-price", "positions", {"avg_entry_price": -5.0}, "NON_POSITIVE_PRICE"),
]

ID_COLUMN = {("exchange", "fills"): "fill_id", ("exchange", "orders"): "exchange_order_id",
             ("exchange", "positions"): None, ("exchange", "markets"): "symbol",
             ("db", "slices"): "trade_id", ("db", "orders"): "order_id", ("db", "positions"): None}
GOOD = {("exchange", "fills"): {"fill_id": "good"}, ("exchange", "orders"): {"exchange_order_id": "good"},
        ("exchange", "positions"): {"instrument": "ETH", "qty": 2.0},
        ("db", "slices"): {"trade_id": "good"}, ("db", "orders"): {"order_id": "good"},
        ("db", "positions"): {"symbol": "ETH/USDT", "qty": 1.0}}
FINDING_ID = {("exchange", "fills"): "fill_ids", ("exchange", "orders"): "exchange_order_id",
              ("exchange", "markets"): "symbol", ("db", "slices"): "trade_id", ("db", "orders"): "order_id"}


def _run(side: str, frame: str, bad: dict):
    id_col = ID_COLUMN[(side, frame)]
    row = {**({id_col: "bad"} if id_col and id_col not in bad else {}), **bad}
    if side == "exchange" and frame == "markets":
        result = _exchange(markets=_markets([row]))
        return result, result.markets, len(_markets())
    rows = [GOOD[(side, frame)], row]
    if side == "exchange":
        result = _exchange(**{frame: rows})
        return result, getattr(result, frame), 1
    result = _db(**{frame: rows})
    return result, getattr(result, frame), 1


@pytest.mark.parametrize(("side", "frame", "bad", "reason"),
                         [pytest.param("exchange", *c[1:], id=c[0]) for c in EXCHANGE_CASES]
                         + [pytest.param("db", *c[1:], id=c[0]) for c in DB_CASES])
def test_one_bad_value_is_excluded_and_reported(side, frame, bad, reason):
    result, clean, kept = _run(side, frame, bad)
    findings = result.bad_rows.findings
    assert findings["reason"].tolist() == [reason]
    assert set(findings["kind"]) == {"BAD_ROW"}
    assert len(clean) == kept  # the good rows stay
    f = findings.iloc[0]
    assert f["detail"].endswith("row excluded") and f"[{reason}]" in f["detail"]
    assert pd.isna(f["notional_usd"])
    assert (f["window_start"], f["profile_id"], f["account"]) == (F.T0, "p1", F.ACCOUNT)
    key = FINDING_ID.get((side, frame))
    if key:
        expected = bad.get(ID_COLUMN[(side, frame)], "bad")
        assert f[key] == expected and str(expected) in f["detail"]
    frame_name = {"slices": "db_trade_history"}.get(frame, f"{side}_{frame}" if side == "exchange" else f"db_{frame}")
    assert result.bad_rows.rows_excluded[frame_name] == 1
    assert result.bad_rows.excluded_by_reason[frame_name] == {reason: 1}


GOOD_CASES = [
    ("fill-rebate-fee", "fills", {"fee_cost": -0.01, "fee_currency": "USDT"}),
    ("fill-no-fee", "fills", {"fee_cost": None, "fee_currency": None}),
    ("fill-at-as-of", "fills", {"ts": NOW}),
    ("fill-at-since", "fills", {"ts": SINCE}),
    ("order-market-without-price", "orders", {"order_type": "market", "price": None}),
    ("order-client-id-36-chars", "orders", {"client_order_id": "g1-x-" + "a" * 31}),
    ("order-no-client-id", "orders", {"client_order_id": None}),
    ("order-filled-float-noise", "orders", {"qty": 0.3, "filled_qty": 0.1 + 0.2}),
    ("position-short-negative", "positions",
     {"market_type": "swap", "instrument": SWAP, "position_side": "short", "qty": -1.0}),
    ("position-one-way-negative", "positions",
     {"market_type": "swap", "instrument": SWAP, "position_side": "both", "qty": -1.0}),
    ("slice-exit-float-noise", "slices", {"entry_qty": 0.3, "exit_qty": 0.1 + 0.2}),
    ("slice-closed", "slices", {"status": "CLOSED", "exit_qty": 1.0, "exit_price": 100.0,
                                "exit_time": F.at(5), "exit_source": "backfill"}),
    ("db-position-short", "db-positions", {"qty": -2.0}),
]


@pytest.mark.parametrize(("frame", "row"), [pytest.param(*c[1:], id=c[0]) for c in GOOD_CASES])
def test_unusual_but_valid_values_are_kept(frame, row):
    if frame == "slices":
        result = _db(slices=[row])
    elif frame == "db-positions":
        result = _db(positions=[row])
    else:
        result = _exchange(**{frame: [row]})
    assert result.bad_rows.findings.empty, result.bad_rows.findings["detail"].tolist()


def test_identical_duplicate_fills_are_deduplicated_conflicting_ones_excluded_entirely():
    result = _exchange(fills=[{"fill_id": "1"}, {"fill_id": "1"}, {"fill_id": "2", "qty": 1.0},
                              {"fill_id": "2", "qty": 2.0}, {"fill_id": "3"}])
    assert result.fills["fill_id"].tolist() == ["1", "3"]
    assert result.bad_rows.duplicates_dropped == {"exchange_fills": 1}
    f = result.bad_rows.findings
    assert f["reason"].tolist() == ["DUPLICATE_FILL_CONFLICT"] * 2
    assert f["fill_ids"].tolist() == ["2", "2"] and f["qty_exchange"].tolist() == [1.0, 2.0]
    # the same fill id on another symbol is another fill
    other = _exchange(fills=[{"fill_id": "1"}, {"fill_id": "1", "symbol": "ETH/USDT"}])
    assert other.bad_rows.findings.empty and len(other.fills) == 2


def test_fills_of_an_excluded_order_are_excluded_with_it():
    result = _exchange(orders=[{"exchange_order_id": "o1", "client_order_id": "x" * 40},
                               {"exchange_order_id": "o2"}],
                       fills=[{"fill_id": "1", "exchange_order_id": "o1"}, {"fill_id": "2", "exchange_order_id": "o2"}])
    assert result.orders["exchange_order_id"].tolist() == ["o2"]
    assert result.fills["fill_id"].tolist() == ["2"]
    f = result.bad_rows.findings.set_index("reason")
    assert f.loc["ORDER_EXCLUDED", "fill_ids"] == "1" and f.loc["ORDER_EXCLUDED", "exchange_order_id"] == "o1"


def test_a_bad_market_makes_its_fills_unknown_symbol():
    result = _exchange(markets=_markets([{"symbol": "SOL/USDT", "amount_precision": NAN}]),
                       fills=[{"fill_id": "1", "symbol": "SOL/USDT"}, {"fill_id": "2"}])
    assert sorted(result.bad_rows.findings["reason"]) == ["NON_POSITIVE_PRECISION", "UNKNOWN_SYMBOL"]
    assert "SOL/USDT" not in set(result.markets["symbol"])
    assert result.fills["fill_id"].tolist() == ["2"]


def test_the_first_matching_reason_wins_and_every_bad_row_is_one_finding():
    result = _db(slices=[{"trade_id": "t1", "entry_qty": NAN, "side": "buy"},
                         {"trade_id": "t2", "entry_qty": -1.0}, {"trade_id": "t3"}])
    f = result.bad_rows.findings
    assert f[["trade_id", "reason"]].values.tolist() == [["t1", "BAD_SIDE"], ["t2", "NON_POSITIVE_QTY"]]
    assert result.slices["trade_id"].tolist() == ["t3"]
    assert math.isnan(f["qty_db"].iloc[0]) and f["qty_db"].iloc[1] == -1.0


# --- parity stays conservative ---------------------------------------------------------------------


def _open_slices():
    return F.slices([
        {"trade_id": "spot-btc", "symbol": "BTC/USDT"},
        {"trade_id": "spot-btc-closed", "symbol": "BTC/USDT", "status": "CLOSED", "exit_qty": 1.0},
        {"trade_id": "swap-btc", "symbol": SWAP},
        {"trade_id": "spot-eth", "symbol": "ETH/USDT"},
        {"trade_id": "other-account", "symbol": "BTC/USDT", "account": "acct2"},
    ])


@pytest.mark.parametrize(("case", "expected"), [
    pytest.param({"fills": [{"fill_id": "1", "qty": -1.0}]}, {"spot-btc"}, id="bad-spot-fill-taints-base"),
    pytest.param({"fills": [{"fill_id": "1", "symbol": SWAP, "qty": NAN}]}, {"swap-btc"},
                 id="bad-swap-fill-taints-symbol"),
    pytest.param({"orders": [{"exchange_order_id": "o1", "client_order_id": "a b"}]}, {"spot-btc"},
                 id="bad-order"),
    pytest.param({"fills": [{"fill_id": "1", "symbol": None}]}, {"spot-btc", "swap-btc", "spot-eth"},
                 id="null-symbol-taints-the-account"),
    pytest.param({"fills": [{"fill_id": "1"}]}, set(), id="no-bad-row"),
])
def test_open_slices_on_an_instrument_with_a_bad_exchange_row_are_no_go(case, expected):
    taint = _exchange(**case).bad_rows.taint
    assert V.parity_no_go_trade_ids(_open_slices(), taint) == expected


def test_a_bad_db_slice_makes_the_other_open_slices_of_its_instrument_no_go():
    db = _db(slices=[{"trade_id": "bad", "symbol": SWAP, "entry_qty": NAN}, {"trade_id": "ok"}])
    assert V.parity_no_go_trade_ids(_open_slices(), db.bad_rows.taint) == {"swap-btc"}


def test_a_bad_position_row_makes_its_instrument_not_evaluated():
    result = _exchange(positions=[{"instrument": "BTC", "qty": NAN},
                                  {"market_type": "swap", "instrument": SWAP, "qty": INF},
                                  {"instrument": "ETH", "qty": 1.0}])
    taint = result.bad_rows.taint
    assert taint.not_evaluated == {(F.ACCOUNT, "BTC"), (F.ACCOUNT, SWAP)} and not taint.no_go
    marks = V.markets_for_parity(result.markets, taint).set_index("symbol")["mark_price"]
    assert marks[F.SYMBOL] != marks[F.SYMBOL] and marks[SWAP] != marks[SWAP]  # NaN
    assert marks["ETH/USDT"] == 100.0


def test_parity_quarantines_a_sub_tag_ghost_on_a_tainted_instrument():
    from recon_pipeline.rules.parity import evaluate_parity

    slices = F.slices([{"trade_id": "t1", "symbol": "BTC/USDT", "entry_client_order_id": "g1-e-t1"}])
    streaks = F.parity_streaks([{"trade_id": "t1", "profile_id": "p1", "streak": 2,
                                 "first_seen_window": F.T0 - pd.Timedelta(hours=2),
                                 "last_window_start": F.T0 - pd.Timedelta(hours=1)}])
    settings = ReconSettings()

    def run(taint):
        return evaluate_parity(slices, F.exchange_positions([]), V.markets_for_parity(_markets(), taint),
                               F.default_profiles(), streaks, V.parity_no_go_trade_ids(slices, taint),
                               settings=settings, profile_id="p1", account=F.ACCOUNT, window_start=F.T0,
                               now=NOW, evaluated=True).corrections["action"].tolist()

    assert run(V.ParityTaint()) == ["SYNTHETIC_EXIT"]
    tainted = _exchange(fills=[{"fill_id": "1", "qty": -1.0}]).bad_rows.taint
    assert run(tainted) == ["QUARANTINE"]
    not_evaluated = _exchange(positions=[{"instrument": "BTC", "qty": NAN}]).bad_rows.taint
    assert run(not_evaluated) == []


# --- outputs ---------------------------------------------------------------------------------------


def test_bad_row_findings_pass_the_output_suite():
    ex = _exchange(fills=[{"fill_id": "1", "qty": INF}], orders=[{"exchange_order_id": "o1", "qty": -1.0}])
    db = _db(slices=[{"trade_id": "t1", "entry_qty": NAN}])
    from recon_pipeline.rules.corrections import concat

    findings = concat([ex.bad_rows.findings, db.bad_rows.findings], schemas.FINDINGS)
    assert len(findings) == 3
    assert findings["qty_exchange"].tolist()[:2] == [-1.0, None] or findings["qty_exchange"].isna().sum() == 2
    result = validate_outputs(findings, schemas.empty(schemas.CORRECTIONS), ReconSettings())
    assert result.success, result.describe()


def big_fills(n: int) -> pd.DataFrame:
    """``n`` fills as a snapshot builds them (one conform over whole columns)."""
    return schemas.conform(pd.DataFrame({
        "account": F.ACCOUNT, "fill_id": np.arange(n).astype(str), "exchange_order_id": (np.arange(n) // 4).astype(str),
        "symbol": np.where(np.arange(n) % 2 == 0, F.SYMBOL, "ETH/USDT"), "side": "sell", "qty": 1.0, "price": 100.0,
        "fee_cost": 0.01, "fee_currency": "USDT", "ts": F.at(30)}, index=range(n)), schemas.EXCHANGE_FILLS)


def test_row_rules_are_vectorised_fast_on_100k_rows():
    import time

    n = 100_000
    fills = big_fills(n)
    fills.loc[::1000, "qty"] = -1.0
    start = time.perf_counter()
    result = V.validate_exchange_snapshot(
        fills, F.exchange_orders([{"exchange_order_id": "o1"}]), F.exchange_positions([]), _markets(),
        account=F.ACCOUNT, now=NOW, fills_since=SINCE, as_of=NOW, window_start=F.T0, profile_id="p1")
    elapsed = time.perf_counter() - start
    assert len(result.bad_rows.findings) == 100 and len(result.fills) == n - 100
    assert elapsed < 3.0, elapsed  # about 0.3 s on an idle machine
