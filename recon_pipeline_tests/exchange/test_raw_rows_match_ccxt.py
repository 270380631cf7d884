"""Fills and orders read from Binance's own rows mean exactly what ccxt's unified parse says.

``fetch_fills`` / ``fetch_orders`` read ``myTrades``/``userTrades`` and ``allOrders`` rows through ccxt's
implicit API and skip its unified parse (the largest cost of a snapshot). These tests pin that choice:
on random histories (spot and USD-M, every status, market and limit orders, partial fills, fees in
several currencies) every row read raw equals the row built from ccxt's ``fetch_my_trades`` /
``fetch_orders`` answer for the same request.
"""

from __future__ import annotations

import math
import random

import pytest

from recon_pipeline.exchange import fetch
from recon_pipeline_tests.fixtures.emulator import make_order, make_scenario, make_trade

T0 = 1_796_029_200_000
SYMBOLS = ("BTC/USDT", "BTC/USDT:USDT")


def _history(seed: int):
    rnd = random.Random(seed)
    orders, trades, tid = [], [], 1
    for i in range(1, 161):
        sym = rnd.choice(SYMBOLS)
        amount = round(rnd.uniform(0.001, 3), 3)
        status = rnd.choice(["open", "closed", "canceled", "expired", "rejected"])
        kind = rnd.choice(["limit", "market"])
        filled = amount if status == "closed" else round(amount * rnd.choice([0, 0.3, 0.77]), 3)
        ts = T0 + i * 997
        parts = [filled] if rnd.random() < 0.5 else [round(filled * 0.4, 3), round(filled - round(filled * 0.4, 3), 3)]
        for q in (p for p in parts if filled > 0 and p > 0):
            fee = rnd.choice([None, 0.0, round(rnd.uniform(0, 2), 6)])
            trades.append(make_trade(tid, i, ts + 10 + tid, symbol=sym, amount=q, side=rnd.choice(["buy", "sell"]),
                                     price=round(rnd.uniform(100, 70000), rnd.choice([1, 2])), fee=fee,
                                     fee_currency=rnd.choice(["USDT", "BNB", "BTC"])))
            tid += 1
        orders.append(make_order(i, ts, symbol=sym, client_order_id=rnd.choice([None, f"ab-e-t{i}"]),
                                 side=rnd.choice(["buy", "sell"]), type=kind, amount=amount,
                                 price=None if kind == "market" else round(rnd.uniform(100, 70000), rnd.choice([1, 2])),
                                 filled=filled, status=status, last_update=ts + rnd.choice([0, 50, 5000])))
    return make_scenario(orders=orders, trades=trades, clock=T0 + 250_000)


def _same(a, b) -> bool:
    return all((x == y) or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
               for x, y in zip(a, b, strict=True))


def _markets(emulator, emulated_exchange, seed: int):
    """(exchange, [(symbol, market, contract size)]) of a random history served by the emulator."""
    ex = emulated_exchange(emulator(_history(seed)), "main")
    ex.load_markets()
    out = []
    for symbol in SYMBOLS:
        market = ex.market(symbol)
        out.append((symbol, market, float(market.get("contractSize") or 1.0) if market["type"] == "swap" else 1.0))
    return ex, out


def _unified_fill_row(account: str, symbol: str, t: dict, contract_size: float) -> tuple:
    """The row the snapshot built from ccxt's unified trade before it read raw rows."""
    fee = t.get("fee") or {}
    cost = fee.get("cost")
    return (account, str(t["id"]), str(t["order"]), symbol, t["side"], float(t["amount"]) * contract_size,
            float(t["price"]), math.nan if cost is None else float(cost),
            fee.get("currency") if cost is not None else None, int(t["timestamp"]))


@pytest.mark.parametrize("seed", range(4))
def test_raw_fill_rows_equal_ccxt_unified_trades(emulator, emulated_exchange, seed):
    ex, markets = _markets(emulator, emulated_exchange, seed)
    for symbol, market, cs in markets:
        raw = fetch._raw_trades_call(ex, market)(symbol, T0, 1000, {"until": T0 + 250_000})
        unified = ex.fetch_my_trades(symbol, T0, 1000, {"until": T0 + 250_000})
        assert len(raw) == len(unified) > 20
        by_id = {str(t["id"]): t for t in unified}
        for r in raw:
            mine = fetch._raw_fill_row(ex, "main", symbol, market["id"], r, cs)
            assert _same(mine, _unified_fill_row("main", symbol, by_id[mine[1]], cs)), (mine, by_id[mine[1]])


@pytest.mark.parametrize("seed", range(4))
def test_raw_order_rows_equal_ccxt_unified_orders(emulator, emulated_exchange, seed):
    ex, markets = _markets(emulator, emulated_exchange, seed)
    statuses = set()
    for symbol, market, cs in markets:
        raw = fetch._raw_orders_call(ex, market)(symbol, T0, 1000, {"until": T0 + 250_000})
        unified = ex.fetch_orders(symbol, T0, 1000, {"until": T0 + 250_000})
        assert len(raw) == len(unified) > 20
        by_id = {str(o["id"]): o for o in unified}
        for r in raw:
            mine = fetch._order_row("main", fetch._unified_order(ex, market, r), cs)
            theirs = fetch._order_row("main", by_id[mine["exchange_order_id"]], cs)
            assert _same(list(mine.values()), list(theirs.values())) and list(mine) == list(theirs), (mine, theirs)
            statuses.add(mine["status"])
    assert statuses == {"open", "closed", "canceled", "expired", "rejected"}


def test_a_row_for_another_symbol_is_malformed(emulator, emulated_exchange):
    server = emulator(_history(0))
    ex = emulated_exchange(server, "main")
    ex.load_markets()
    market = ex.market("BTC/USDT")
    row = {"symbol": "ETHUSDT", "orderId": 1, "time": T0, "status": "FILLED"}
    with pytest.raises(fetch._Malformed, match="asked for BTC/USDT"):
        fetch._unified_order(ex, market, row)
    with pytest.raises(fetch._Malformed, match="asked for BTC/USDT"):
        fetch._raw_fill_row(ex, "main", "BTC/USDT", market["id"], {**row, "id": 5}, 1.0)
