"""Snapshot fetchers over real ccxt and the emulator: complete or ExchangeSnapshotError, never partial."""

from __future__ import annotations

import gzip
import json
import logging
import math
from pathlib import Path

import pandas as pd
import pytest

from recon_pipeline import schemas
from recon_pipeline.exchange.fetch import (
    ExchangeSnapshotError,
    fetch_fills,
    fetch_markets_frame,
    fetch_orders,
    fetch_positions_frame,
    fetch_server_time,
)
from recon_pipeline.exchange.fetch import _decimal_sign as decimal_sign
from recon_pipeline.exchange.scenario import parse_timestamp
from recon_pipeline_tests.fixtures.emulator import (
    SPOT_BTC,
    SWAP_BTC,
    make_order,
    make_scenario,
    make_trade,
)

REAL_TRADES = Path("/work/shared/data/real-trades/freqtrade_XRP_OLD-trades.json.gz")
SPOT, SWAP = "BTC/USDT", "BTC/USDT:USDT"
CLOCK = parse_timestamp("2026-11-30T10:05:00Z")
T0 = parse_timestamp("2026-11-27T00:00:00Z")
HOUR = 3_600_000


def _utc(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def _clustered_fills(symbol: str, n: int = 2500, group: int = 300) -> list[dict]:
    """``n`` fills in groups of ``group`` sharing one millisecond, groups 5 h apart (> 24 h in all).

    Group size 300 puts the 1000-row page boundaries (ids 1000/1001, 2000/2001) inside a group, so
    hundreds of fills share the boundary millisecond; ``since = last + 1`` paging would lose them.
    """
    return [make_trade(i + 1, 10_000 + i // 50, T0 + (i // group) * 5 * HOUR, symbol=symbol,
                       side="sell" if i % 2 else "buy", amount=0.001 * (1 + i % 7), price=60000.0 + i)
            for i in range(n)]


@pytest.mark.parametrize("symbol", [SPOT, SWAP])
def test_2500_fills_sharing_milliseconds_across_pages_arrive_exactly_once(emulator, emulated_exchange, symbol):
    trades = _clustered_fills(symbol)
    assert trades[999]["timestamp"] == trades[1000]["timestamp"] == trades[1099]["timestamp"]
    server = emulator(make_scenario(trades=trades))
    ex = emulated_exchange(server)
    since, until = _utc(T0), _utc(CLOCK)
    fills = fetch_fills(ex, "main", [symbol], since, until)
    assert list(fills.columns) == list(schemas.EXCHANGE_FILLS)
    assert len(fills) == 2500 and fills["fill_id"].is_unique
    assert sorted(fills["fill_id"].astype(int)) == list(range(1, 2501))
    assert fills["qty"].sum() == pytest.approx(sum(t["amount"] for t in trades))
    assert (fills["fee_currency"] == "USDT").all() and (fills["fee_cost"] == 0.01).all()
    path = "/api/v3/myTrades" if symbol == SPOT else "/fapi/v1/userTrades"
    requests = server.requests_to(path)
    starts = [int(r["startTime"]) for r in requests]
    # a page after a full one starts AT the last millisecond seen (shared by the next page), not after it
    fill_ms = {t["timestamp"] for t in trades}
    assert len([ms for ms in starts if ms in fill_ms and ms != T0]) >= 2
    windows = [int(r["endTime"]) - int(r["startTime"]) for r in requests if "startTime" in r]
    limit = 24 * HOUR if symbol == SPOT else 7 * 24 * HOUR
    assert max(windows) < limit
    if symbol == SPOT:
        assert len(windows) >= 3, "the > 24 h span was chunked"


def test_more_than_a_page_in_one_millisecond_is_walked_by_id(emulator, emulated_exchange):
    trades = _clustered_fills(SWAP, n=2300, group=2100)  # 2100 fills in one ms, then 200 five hours later
    server = emulator(make_scenario(trades=trades))
    fills = fetch_fills(emulated_exchange(server), "main", [SWAP], _utc(T0), _utc(CLOCK))
    assert len(fills) == 2300 and fills["fill_id"].is_unique
    assert [r["fromId"] for r in server.requests_to("/fapi/v1/userTrades") if "fromId" in r] == ["1001", "2001"]


def test_real_xrp_trades_with_millisecond_clusters_arrive_exactly_once(emulator, emulated_exchange):
    raw = json.loads(gzip.open(REAL_TRADES).read())
    xrp = {"symbol": "XRP/ETH", "type": "spot", "precision": {"amount": 1, "price": 1e-8}}
    trades = [{**t, "symbol": "XRP/ETH", "order": 1_000_000 + i // 10, "fee": {"cost": 0.0, "currency": "ETH"}}
              for i, t in enumerate(raw)]
    first, last = trades[0]["timestamp"], trades[-1]["timestamp"]
    server = emulator(make_scenario(clock=last + 1, markets=[xrp], trades=trades, mark_prices={}))
    ex = emulated_exchange(server)
    fills = fetch_fills(ex, "main", ["XRP/ETH"], _utc(first), _utc(last + 1))
    assert len(fills) == len(raw) == 12_477
    assert set(fills["fill_id"]) == {t["id"] for t in raw}
    assert fills["ts"].duplicated().sum() > 2000  # the data does cluster


def test_fill_window_is_inclusive_of_since_and_exclusive_of_until(emulator, emulated_exchange):
    trades = [make_trade(1, 1, T0 - 1), make_trade(2, 1, T0), make_trade(3, 1, T0 + HOUR - 1), make_trade(4, 1, T0 + HOUR)]
    ex = emulated_exchange(emulator(make_scenario(trades=trades)))
    fills = fetch_fills(ex, "main", [SPOT], _utc(T0), _utc(T0 + HOUR))
    assert list(fills["fill_id"]) == ["2", "3"]


def test_fills_after_the_clock_are_invisible(emulator, emulated_exchange):
    trades = [make_trade(1, 1, CLOCK - 5), make_trade(2, 1, CLOCK + 5)]
    server = emulator(make_scenario(trades=trades))
    ex = emulated_exchange(server)
    assert list(fetch_fills(ex, "main", [SPOT], _utc(T0), _utc(CLOCK + HOUR))["fill_id"]) == ["1"]
    server.set_clock(CLOCK + 10)
    assert list(fetch_fills(ex, "main", [SPOT], _utc(T0), _utc(CLOCK + HOUR))["fill_id"]) == ["1", "2"]


def test_swap_fill_qty_is_contracts_times_contract_size(emulator, emulated_exchange):
    swap = dict(SWAP_BTC, contractSize=0.1)
    ex = emulated_exchange(emulator(make_scenario(
        markets=[SPOT_BTC, swap], trades=[make_trade(1, 1, T0, symbol=SWAP, amount=3)])))
    fills = fetch_fills(ex, "main", [SWAP], _utc(T0), _utc(CLOCK))
    assert fills.loc[0, "qty"] == pytest.approx(0.3)


def _orders_scenario():
    return make_scenario(
        orders=[make_order(i, T0 + i * 60_000, client_order_id=f"ab-e-t{i}", status="closed", filled=0.01,
                           average=60000.0) for i in range(1, 1201)]
        + [make_order(5000, T0 - 48 * HOUR, client_order_id="ab-x-old", status="open"),
           make_order(5001, T0 - 48 * HOUR, client_order_id="ab-x-gone", status="canceled"),
           make_order(7000, T0 + HOUR, symbol=SWAP, type="market", price=None, status="closed", filled=0.01,
                      average=60100.0)],
        trades=[make_trade(1, 1, T0 + 60_000)],
    )


def test_orders_window_open_orders_and_lookups(emulator, emulated_exchange):
    server = emulator(_orders_scenario())
    ex = emulated_exchange(server)
    orders = fetch_orders(ex, "main", [SPOT, SWAP], _utc(T0), _utc(CLOCK),
                          lookup_ids={SPOT: ["5001", "424242"]}, lookup_delay_s=0)
    assert list(orders.columns) == list(schemas.EXCHANGE_ORDERS)
    ids = set(orders["exchange_order_id"])
    assert {str(i) for i in range(1, 1201)} <= ids  # paged past 1000
    assert "5000" in ids  # open, created before the span
    assert "5001" in ids  # looked up by id
    assert "424242" not in ids  # the exchange does not know it: absent, no error
    assert orders["exchange_order_id"].is_unique
    market = orders.set_index("exchange_order_id").loc["7000"]
    assert market["symbol"] == SWAP and math.isnan(market["price"]) and market["avg_fill_price"] == 60100.0
    assert len(server.requests_to("/api/v3/order")) == 2


def test_orders_referenced_by_fills_are_looked_up(emulator, emulated_exchange):
    old = make_order(9, T0 - 72 * HOUR, status="closed", filled=0.01, average=60000.0, last_update=T0 + 5)
    server = emulator(make_scenario(orders=[old], trades=[make_trade(1, 9, T0 + 5)]))
    ex = emulated_exchange(server)
    fills = fetch_fills(ex, "main", [SPOT], _utc(T0), _utc(CLOCK))
    orders = fetch_orders(ex, "main", [SPOT], _utc(T0), _utc(CLOCK), fills=fills, lookup_delay_s=0)
    assert list(orders["exchange_order_id"]) == ["9"]


def test_positions_hedge_one_way_and_spot_balances(emulator, emulated_exchange):
    scenario = make_scenario(
        positions=[{"symbol": SWAP, "contracts": 0.2, "side": "short", "entryPrice": 61000.0, "hedged": True},
                   {"symbol": SWAP, "contracts": 1.5, "side": "long", "entryPrice": 59000.0, "hedged": True}],
        balances={"BTC": {"free": 0.5, "used": 0.25}, "ETH": {"free": 0.0, "used": 0.0}})
    ex = emulated_exchange(emulator(scenario))
    frame = fetch_positions_frame(ex, "main", {"spot", "swap"}, [SWAP])
    assert list(frame.columns) == list(schemas.EXCHANGE_POSITIONS)
    rows = {(r.instrument, r.position_side): r.qty for r in frame.itertuples()}
    assert rows == {(SWAP, "short"): -0.2, (SWAP, "long"): 1.5, ("BTC", "both"): 0.75}
    one_way = make_scenario(positions=[{"symbol": SWAP, "contracts": 2, "side": "short", "entryPrice": 6e4}])
    frame = fetch_positions_frame(emulated_exchange(emulator(one_way)), "main", {"swap"}, [SWAP])
    assert [(r.position_side, r.qty) for r in frame.itertuples()] == [("both", -2.0)]


def test_markets_frame_and_server_time(emulator, emulated_exchange):
    scenario = make_scenario(mark_prices={"BTC/USDT:USDT": 61010.0})
    ex = emulated_exchange(emulator(scenario))
    assert fetch_server_time(ex) == _utc(CLOCK)
    frame = fetch_markets_frame(ex, "main").set_index("symbol")
    assert frame.loc[SWAP, "mark_price"] == 61010.0 and math.isnan(frame.loc[SPOT, "mark_price"])
    assert frame.loc[SPOT, "amount_precision"] == 0.00001 and frame.loc[SWAP, "contract_size"] == 1.0
    assert list(fetch_markets_frame(ex, "main", [SPOT, "DOGE/USDT"])["symbol"]) == [SPOT]


# --- faults ---------------------------------------------------------------------------------------


FAULT_CASES = [
    ("malformed", "BadResponse", 1),
    ("html", "BadResponse", 1),
    ("http_503", "ExchangeNotAvailable", 3),
    ("http_502", "ExchangeNotAvailable", 3),
    ("http_500", "OperationFailed", 3),
    ("http_429", "DDoSProtection", 3),
    ("http_418", "DDoSProtection", 1),  # an IP ban is not retried (asking again extends it)
    ("timeout", "RequestTimeout", 3),
    ("reset", "NetworkError", 3),
]


@pytest.mark.parametrize("mode,error,attempts", FAULT_CASES, ids=[c[0] for c in FAULT_CASES])
def test_a_persistent_fault_raises_naming_account_and_endpoint(emulator, emulated_exchange, mode, error, attempts):
    server = emulator(make_scenario(trades=_clustered_fills(SWAP, 20)), hang_seconds=1.0)
    ex = emulated_exchange(server, timeout_ms=250, max_retries=2)
    ex.load_markets()
    server.add_fault(account="main", path="/fapi/v1/userTrades", mode=mode)
    with pytest.raises(ExchangeSnapshotError) as info:
        fetch_fills(ex, "main", [SWAP], _utc(T0), _utc(CLOCK))
    err = info.value
    assert (err.account, err.endpoint, err.symbol) == ("main", "/fapi/v1/userTrades", SWAP)
    assert "account=main endpoint=/fapi/v1/userTrades" in str(err) and error in str(err)
    assert len(server.requests_to("/fapi/v1/userTrades")) == attempts  # bounded retries, none for bad bodies


@pytest.mark.parametrize("mode", ["http_503", "http_429", "timeout", "reset", "http_500"])
def test_a_transient_fault_is_retried_through_and_the_result_is_complete(emulator, emulated_exchange, mode):
    server = emulator(make_scenario(trades=_clustered_fills(SPOT)), hang_seconds=1.0)
    ex = emulated_exchange(server, timeout_ms=250)
    server.add_fault(path="/api/v3/myTrades", mode=mode, after=2, times=1)  # fails a fromId page
    fills = fetch_fills(ex, "main", [SPOT], _utc(T0), _utc(CLOCK))
    assert len(fills) == 2500 and fills["fill_id"].is_unique


def test_malformed_positions_raise_instead_of_reading_flat(emulator, emulated_exchange):
    scenario = make_scenario(positions=[{"symbol": SWAP, "contracts": 1, "side": "long", "entryPrice": 6e4}],
                             faults=[{"path": "/fapi/v3/positionRisk", "mode": "malformed"}])
    ex = emulated_exchange(emulator(scenario))
    with pytest.raises(ExchangeSnapshotError, match="endpoint=/fapi/v3/positionRisk.*BadResponse"):
        fetch_positions_frame(ex, "main", {"swap"}, [SWAP])


def test_well_formed_json_of_the_wrong_shape_is_rejected_too(emulator, emulated_exchange, monkeypatch):
    """``{}`` instead of ``[]`` would become "no positions" in ccxt (to_array); the client refuses it."""
    from recon_pipeline.exchange import emulator as emulator_module

    monkeypatch.setitem(emulator_module.SIGNED, "/fapi/v3/positionRisk", lambda *_: {})
    ex = emulated_exchange(emulator(make_scenario()))
    with pytest.raises(ExchangeSnapshotError, match="expected a JSON array"):
        fetch_positions_frame(ex, "main", {"swap"}, [SWAP])


def test_order_lookup_errors_other_than_not_found_raise(emulator, emulated_exchange):
    server = emulator(_orders_scenario())
    ex = emulated_exchange(server, max_retries=1)
    server.add_fault(path="/api/v3/order", mode="http_503")
    with pytest.raises(ExchangeSnapshotError, match="endpoint=/api/v3/order"):
        fetch_orders(ex, "main", [SPOT], _utc(T0), _utc(CLOCK), lookup_ids={SPOT: ["5001"]}, lookup_delay_s=0)


def test_the_secret_never_leaks(emulator, emulated_exchange, caplog):
    server = emulator(make_scenario(trades=_clustered_fills(SPOT, 10)))
    ex = emulated_exchange(server, max_retries=1)
    secret, key = ex.secret, ex.apiKey
    caplog.set_level(logging.DEBUG)
    fetch_fills(ex, "main", [SPOT], _utc(T0), _utc(CLOCK))
    calls = len(server.requests_to("/api/v3/myTrades"))
    server.add_fault(path="/api/v3/myTrades", mode="http_429")
    with pytest.raises(ExchangeSnapshotError) as info:
        fetch_fills(ex, "main", [SPOT], _utc(T0), _utc(CLOCK))
    texts = [repr(ex), str(ex), str(info.value), repr(info.value), caplog.text]
    assert len(server.requests_to("/api/v3/myTrades")) == calls + 2  # the 429 and one retry
    assert "Request:" in caplog.text  # ccxt's debug lines went through the redacting logger
    for text in texts:
        assert secret not in text and key not in text
    server.clear_faults()
    ex.secret = "wrong-secret-value"
    ex.redact = type(ex.redact)("wrong-secret-value", key)
    with pytest.raises(ExchangeSnapshotError, match="AuthenticationError") as auth:
        fetch_fills(ex, "main", [SPOT], _utc(T0), _utc(CLOCK))
    assert "wrong-secret-value" not in str(auth.value)
    assert len(server.requests_to("/api/v3/myTrades")) == calls + 3  # an auth error is not retried


@pytest.mark.parametrize("text, sign", [
    ("0", 0), ("0.00000000", 0), ("-0.0", 0), ("0.00000001", 1), ("-0.00000001", -1), ("43210.50000000", 1),
    ("1000000000.000000001", 1), ("abc", 1), ("", 1), (None, 1), ("nan", 1), ("inf", 1), ("-inf", -1),
])
def test_decimal_sign_as_precise_compares_with_zero(text, sign):
    """The order reader's cheap sign test; a non-number is kept (1) so the row check reports it."""
    assert decimal_sign(text) == sign
    if sign == 0 or text not in ("abc", "", None, "nan", "inf", "-inf"):
        from ccxt.base.precise import Precise
        assert (Precise.string_gt(text, "0"), Precise.string_eq(text, "0")) == (sign > 0, sign == 0)
