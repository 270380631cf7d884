"""Fills and orders of many symbols over a pool of clients: the serial frames exactly, errors as the
serial fetch raises them, and no more requests per second than one client makes."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from recon_pipeline.exchange.client import SharedThrottle, exchange_concurrency, make_exchange_pool
from recon_pipeline.exchange.fetch import ExchangeSnapshotError, fetch_activity, fetch_fills, fetch_orders
from recon_pipeline.exchange.scenario import parse_timestamp
from recon_pipeline.settings import SettingsError
from recon_pipeline_tests.fixtures.emulator import make_order, make_scenario, make_trade

CLOCK = parse_timestamp("2026-11-30T10:05:00Z")
T0 = parse_timestamp("2026-11-30T00:00:00Z")
SWAPS = [f"S{i}/USDT:USDT" for i in range(6)]
SPOTS = ["A/USDT", "B/USDT"]
MARKETS = ([{"symbol": s, "type": "swap", "contractSize": 1, "precision": {"amount": 0.001, "price": 0.1}}
            for s in SWAPS]
           + [{"symbol": s, "type": "spot", "precision": {"amount": 0.00001, "price": 0.01}} for s in SPOTS])
MARKS = {s: 100.0 for s in SWAPS} | {s: 10.0 for s in SPOTS}


def _utc(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def _busy_scenario(faults=()) -> dict:
    """Per symbol: 1,100 fills over 300 orders (two pages of fills, several fills per millisecond across
    symbols), an order created before the span but filled in it (found through its fill), one open
    order created long ago, and one order only a lookup finds."""
    trades, orders = [], []
    fill_id, order_id = 1, 1
    for k, symbol in enumerate(SWAPS + SPOTS):
        old = order_id
        orders.append(make_order(old, T0 - 48 * 3_600_000, symbol=symbol, status="closed", filled=0.01,
                                 average=100.0, last_update=T0 + 10))
        trades.append(make_trade(fill_id, old, T0 + 10, symbol=symbol))
        fill_id += 1
        orders.append(make_order(old + 1, T0 - 72 * 3_600_000, symbol=symbol, status="open"))
        orders.append(make_order(old + 2, T0 - 96 * 3_600_000, symbol=symbol, status="canceled",
                                 last_update=T0 - 90 * 3_600_000))
        order_id += 3
        for j in range(300):
            ts = T0 + 1000 + j * 60_000
            orders.append(make_order(order_id, ts, symbol=symbol, status="closed", amount=0.04, filled=0.04,
                                     average=100.0, last_update=ts + 300))
            for f in range(4 if j < 200 else 3):
                trades.append(make_trade(fill_id, order_id, ts + 100 * f, symbol=symbol, amount=0.01,
                                         side="buy" if (j + k) % 2 else "sell"))
                fill_id += 1
            order_id += 1
    return make_scenario(markets=MARKETS, mark_prices=MARKS, trades=trades, orders=orders, faults=list(faults))


def _lookups() -> dict[str, list[str]]:
    """Per symbol: the open order (also on the open list), the canceled one (only a lookup finds it),
    and an id the exchange does not know."""
    out = {}
    for k, symbol in enumerate(SWAPS + SPOTS):
        base = 1 + k * 303
        out[symbol] = [str(base + 1), str(base + 2), str(900_000 + k)]
    return out


def _pool(emulator_server, exchange_env, size: int):
    exchange_env(emulator_server)
    return make_exchange_pool("main", size=size, timeout_ms=2000, enable_rate_limit=False, retry_backoff_s=0.01)


def _serial(ex, symbols, lookup):
    fills = fetch_fills(ex, "main", symbols, _utc(T0), _utc(CLOCK))
    orders = fetch_orders(ex, "main", symbols, _utc(T0), _utc(CLOCK), lookup_ids=lookup, fills=fills)
    return fills, orders


@pytest.mark.parametrize("size", [1, 2, 4, 9])
def test_the_pool_returns_the_serial_frames_exactly(emulator, exchange_env, size):
    server = emulator(_busy_scenario())
    symbols, lookup = SWAPS + SPOTS, _lookups()
    serial_fills, serial_orders = _serial(_pool(server, exchange_env, 1)[0], symbols, lookup)
    fills, orders = fetch_activity(_pool(server, exchange_env, size), "main", symbols, _utc(T0), _utc(CLOCK),
                                   lookup_ids=lookup)
    assert len(serial_fills) == 8 * (1 + 200 * 4 + 100 * 3)
    assert {"4", "5", "7"} <= set(serial_orders["exchange_order_id"])  # open, lookup-only, filled-in-span old order
    pd.testing.assert_frame_equal(fills, serial_fills)
    pd.testing.assert_frame_equal(orders, serial_orders)


def test_lookups_of_a_symbol_without_fills_wanted_are_still_made(emulator, exchange_env):
    server = emulator(_busy_scenario())
    lookup = {SPOTS[1]: _lookups()[SPOTS[1]]}
    fills, orders = fetch_activity(_pool(server, exchange_env, 3), "main", SWAPS[:2], _utc(T0), _utc(CLOCK),
                                   lookup_ids=lookup)
    assert set(fills["symbol"]) == set(SWAPS[:2])
    assert set(orders.loc[orders["symbol"] == SPOTS[1], "exchange_order_id"]) >= set(lookup[SPOTS[1]][:2])


def test_no_symbols_is_two_empty_frames(emulator, exchange_env):
    server = emulator(_busy_scenario())
    fills, orders = fetch_activity(_pool(server, exchange_env, 4), "main", [], _utc(T0), _utc(CLOCK))
    assert fills.empty and orders.empty
    assert server.requests_to("/fapi/v1/userTrades") == []


def test_a_failing_symbol_fails_the_whole_fetch_naming_it(emulator, exchange_env):
    server = emulator(_busy_scenario())
    clients = _pool(server, exchange_env, 4)
    server.add_fault(account="main", path="/api/v3/myTrades", mode="malformed")  # the spot symbols only
    with pytest.raises(ExchangeSnapshotError) as info:
        fetch_activity(clients, "main", SWAPS + SPOTS, _utc(T0), _utc(CLOCK))
    assert (info.value.endpoint, info.value.symbol) == ("/api/v3/myTrades", SPOTS[0])


def test_when_every_symbol_fails_the_error_is_the_first_symbols_as_serially(emulator, exchange_env):
    server = emulator(_busy_scenario())
    clients = _pool(server, exchange_env, 4)
    server.add_fault(account="main", path="/fapi/v1/userTrades", mode="html")
    with pytest.raises(ExchangeSnapshotError) as info:
        fetch_activity(clients, "main", SWAPS, _utc(T0), _utc(CLOCK))
    assert (info.value.endpoint, info.value.symbol) == ("/fapi/v1/userTrades", SWAPS[0])
    assert len(server.requests_to("/fapi/v1/userTrades")) <= len(SWAPS)  # one bad body each, none retried


def test_a_transient_fault_inside_the_pool_is_retried_through(emulator, exchange_env):
    server = emulator(_busy_scenario())
    symbols, lookup = SWAPS + SPOTS, _lookups()
    serial = _serial(_pool(server, exchange_env, 1)[0], symbols, lookup)
    server.add_fault(path="/fapi/v1/allOrders", mode="http_503", after=3, times=2)
    fills, orders = fetch_activity(_pool(server, exchange_env, 4), "main", symbols, _utc(T0), _utc(CLOCK),
                                   lookup_ids=lookup)
    pd.testing.assert_frame_equal(fills, serial[0])
    pd.testing.assert_frame_equal(orders, serial[1])


# --- one throttle for the pool --------------------------------------------------------------------------


def test_shared_throttle_spaces_slots_across_threads():
    throttle = SharedThrottle()
    slots: list[float] = []
    lock = threading.Lock()
    reserve = throttle.reserve

    def recording(now_ms, spacing_ms):
        slot = reserve(now_ms, spacing_ms)
        with lock:
            slots.append(slot)
        return slot

    throttle.reserve = recording
    t0 = time.monotonic()
    threads = [threading.Thread(target=throttle.wait, args=(time.time() * 1000, 40.0)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert min(gaps) >= 40.0  # 40 ms slots, whichever thread asked first
    assert time.monotonic() - t0 >= 5 * 0.035  # and each thread slept until its own


def test_a_lone_client_keeps_ccxts_own_spacing_and_a_pool_shares_one(monkeypatch):
    monkeypatch.setenv("RECON_EXCHANGE_MAIN_API_KEY", "k")
    monkeypatch.setenv("RECON_EXCHANGE_MAIN_SECRET", "s")
    (lone,) = make_exchange_pool("main", size=1)
    assert lone.shared_throttle is None
    pool = make_exchange_pool("main", size=3)
    assert len({id(c) for c in pool}) == 3 and len({id(c.shared_throttle) for c in pool}) == 1
    assert pool[0].shared_throttle is not None


def test_pool_requests_through_ccxts_throttle_are_spaced_like_one_clients(emulator, exchange_env):
    server = emulator(_busy_scenario())
    exchange_env(server)
    clients = make_exchange_pool("main", size=4, timeout_ms=2000, enable_rate_limit=True, retry_backoff_s=0.01)
    for c in clients:
        c.rateLimit = 20  # ms per unit of weight; userTrades weighs 5 on USD-M: 100 ms a request
    slots = []
    original = SharedThrottle.reserve

    def recording(self, now_ms, spacing_ms):
        slot = original(self, now_ms, spacing_ms)
        slots.append((slot, spacing_ms))
        return slot

    SharedThrottle.reserve = recording
    try:
        fetch_activity(clients, "main", SWAPS[:4], _utc(T0), _utc(CLOCK))
    finally:
        SharedThrottle.reserve = original
    slots.sort()
    assert len(slots) >= 12 and len({id(c.shared_throttle) for c in clients}) == 1
    # each request's slot is at least its own weight's spacing after the previous request's slot
    assert all(b - a >= spacing - 1e-6 for (a, _), (b, spacing) in zip(slots, slots[1:], strict=False))


@pytest.mark.parametrize("raw, expected", [("", 4), ("1", 1), (" 8 ", 8), ("32", 32)])
def test_concurrency_from_the_environment(raw, expected):
    assert exchange_concurrency("main", {"RECON_EXCHANGE_MAIN_CONCURRENCY": raw}) == expected


@pytest.mark.parametrize("raw", ["0", "33", "-2", "four", "2.5"])
def test_a_bad_concurrency_names_the_variable(raw):
    with pytest.raises(SettingsError, match="RECON_EXCHANGE_MAIN_CONCURRENCY"):
        exchange_concurrency("main", {"RECON_EXCHANGE_MAIN_CONCURRENCY": raw})
