"""The backfill's read-ahead: a window's settled history read earlier gives the frames a snapshot that
paged everything itself gives, at the time it runs; anything unsettled is not read ahead or is asked
again; a failed read-ahead costs nothing but time."""

from __future__ import annotations

import pandas as pd
import pytest

from recon_pipeline.exchange import read_ahead
from recon_pipeline.exchange.client import make_exchange_pool
from recon_pipeline.exchange.fetch import fetch_activity, fetch_fills, fetch_orders
from recon_pipeline.exchange.read_ahead import ReadAhead, read_spans, reading_ahead
from recon_pipeline.exchange.scenario import parse_timestamp
from recon_pipeline_tests.fixtures.emulator import make_order, make_scenario, make_trade

SPOT, SWAP = "BTC/USDT", "BTC/USDT:USDT"
HOUR = 3_600_000
T0 = parse_timestamp("2026-11-30T04:00:00Z")     # the span read ahead: [T0, T0 + 1 h)
OPTIONS = {"timeout_ms": 2000, "enable_rate_limit": False, "max_retries": 1, "retry_backoff_s": 0.01}


def _utc(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def _scenario(*, history: bool = False, **kw) -> dict:
    """Fills before, inside and after the span; an order created before it and filled inside it; an
    order created inside it, part-filled and canceled after it; one open across all of it. ``history``:
    also an order created and filled 50 and 45 minutes before the span."""
    trades, orders = [], []
    if history:
        orders.append(make_order(300, T0 - 50 * 60_000, symbol=SPOT, status="closed", amount=0.01, filled=0.01,
                                 average=60000.0, last_update=T0 - 45 * 60_000))
        trades.append(make_trade(1, 300, T0 - 45 * 60_000, symbol=SPOT))  # the oldest fill: the lowest id
    fid = 2
    for sym in (SPOT, SWAP):
        base = 100 if sym == SPOT else 200
        orders.append(make_order(base, T0 - 30 * 60_000, symbol=sym, status="closed", amount=0.02, filled=0.02,
                                 average=60000.0, last_update=T0 + 5 * 60_000))
        trades += [make_trade(fid, base, T0 - 20 * 60_000, symbol=sym),
                   make_trade(fid + 1, base, T0 + 5 * 60_000, symbol=sym)]
        fid += 2
        orders.append(make_order(base + 1, T0 + 10 * 60_000, symbol=sym, status="canceled", amount=0.05,
                                 filled=0.01, average=60000.0, last_update=T0 + 90 * 60_000))
        trades.append(make_trade(fid, base + 1, T0 + 20 * 60_000, symbol=sym))
        fid += 1
        orders.append(make_order(base + 2, T0 - 5 * HOUR, symbol=sym, status="open"))
        for j in range(40):  # busy minutes inside the span, several fills per millisecond
            orders.append(make_order(base + 10 + j, T0 + 30 * 60_000 + j, symbol=sym, status="closed",
                                     filled=0.01, average=60000.0, last_update=T0 + 30 * 60_000 + j))
            trades.append(make_trade(fid, base + 10 + j, T0 + 30 * 60_000 + j // 4, symbol=sym))
            fid += 1
        trades.append(make_trade(fid, base + 10, T0 + 2 * HOUR, symbol=sym))  # after the span
        fid += 1
    return make_scenario(trades=trades, orders=orders, **kw)


def _pool(server, exchange_env, size=3):
    exchange_env(server)
    return make_exchange_pool("main", size=size, **OPTIONS)


def _serial(ex, since, until, lookup=None):
    fills = fetch_fills(ex, "main", [SPOT, SWAP], since, until)
    return fills, fetch_orders(ex, "main", [SPOT, SWAP], since, until, lookup_ids=lookup, fills=fills)


def test_a_span_read_ahead_gives_the_frames_of_a_snapshot_that_pages_everything_later(emulator, exchange_env):
    server = emulator(_scenario(), clock=T0 + 65 * 60_000)   # the span has just ended
    exchange_env(server)
    spans = read_spans("main", OPTIONS, 2, [SPOT, SWAP], T0, T0 + HOUR)
    assert set(spans) == {SPOT, SWAP}
    early = {o["exchange_order_id"]: o["status"] for o in spans[SPOT].orders}
    assert early["101"] == "open"                           # part-filled, not canceled yet
    server.set_clock(T0 + 3 * HOUR)                         # the window's snapshot runs later
    since, until = _utc(T0 - HOUR), _utc(T0 + HOUR)         # an OPEN slice reaches back before the span
    lookup = {SPOT: ["102", "999999"]}
    want = _serial(_pool(server, exchange_env, 1)[0], since, until, lookup)
    got = fetch_activity(_pool(server, exchange_env), "main", [SPOT, SWAP], since, until, lookup_ids=lookup,
                         read_ahead=spans)
    pd.testing.assert_frame_equal(got[0], want[0])
    pd.testing.assert_frame_equal(got[1], want[1])
    orders = got[1].set_index("exchange_order_id")
    assert orders.loc["101", "status"] == "canceled"        # asked again: it was open when read
    assert "100" in orders.index                            # created before the span, found via its fill
    # the span's fills were not paged again: only the read-ahead's and the serial snapshot's pages
    # reach into it; the snapshot that used the span paged [T0 - 1 h, T0) only
    for path in ("/api/v3/myTrades", "/api/v3/allOrders"):
        into_span = [r for r in server.requests_to(path) if int(r.get("endTime", 0)) >= T0]
        assert len(into_span) == 2, path


def test_a_span_for_another_as_of_time_is_not_used(emulator, exchange_env):
    server = emulator(_scenario(), clock=T0 + 65 * 60_000)
    exchange_env(server)
    spans = read_spans("main", OPTIONS, 1, [SPOT], T0, T0 + HOUR)
    server.set_clock(T0 + 3 * HOUR)
    since, until = _utc(T0), _utc(T0 + 2 * HOUR + 1)      # a live window's as-of is "now", not the span's end
    want = _serial(_pool(server, exchange_env, 1)[0], since, until)
    got = fetch_activity(_pool(server, exchange_env), "main", [SPOT, SWAP], since, until, read_ahead=spans)
    pd.testing.assert_frame_equal(got[0], want[0])
    pd.testing.assert_frame_equal(got[1], want[1])


def test_a_span_that_has_not_ended_on_the_exchange_clock_is_not_read(emulator, exchange_env):
    exchange_env(emulator(_scenario(), clock=T0 + 59 * 60_000))
    assert read_spans("main", OPTIONS, 2, [SPOT, SWAP], T0, T0 + HOUR) == {}


@pytest.mark.parametrize("profile, lo, now, expected", [
    ("p", T0, T0 + 2 * HOUR, True),             # ended an hour ago: not the live window
    ("p", T0, T0 + 2 * HOUR - 1, False),        # would be the live window
    ("q", T0, T0 + 5 * HOUR, False),            # not a window of this backfill
    ("p", T0 + HOUR, T0 + 5 * HOUR, False),     # not a window of this backfill
])
def test_only_settled_windows_of_the_backfill_are_scheduled(profile, lo, now, expected):
    ahead = ReadAhead({("p", T0)})
    ahead._executor = _Recording()
    assert ahead.schedule("main", profile, [SPOT], lo, lo + HOUR, now, OPTIONS, 1) is expected
    assert len(ahead._executor.calls) == int(expected)
    assert ahead.schedule("main", profile, [SPOT], lo, lo + HOUR, now, OPTIONS, 1) is False  # once


class _Recording:
    def __init__(self):
        self.calls = []

    def submit(self, *args):
        from concurrent.futures import Future

        self.calls.append(args)
        return Future()

    def shutdown(self, **_):
        pass


def test_the_worker_process_reads_the_span(emulator, exchange_env):
    server = emulator(_scenario(), clock=T0 + 2 * HOUR)
    exchange_env(server)                                     # the spawned worker inherits the environment
    with reading_ahead([("p", T0)]) as ahead:
        assert read_ahead.active() is ahead
        assert ahead.schedule("main", "p", [SPOT, SWAP], T0, T0 + HOUR, T0 + 2 * HOUR, OPTIONS, 2)
        spans = ahead.take("main", T0, T0 + HOUR)
    assert read_ahead.active() is None
    assert spans == read_spans("main", OPTIONS, 2, [SPOT, SWAP], T0, T0 + HOUR)
    assert ahead.used == 1 and ahead.missed == 0


def test_a_failed_read_ahead_leaves_the_snapshot_to_page_it_itself(emulator, exchange_env):
    server = emulator(_scenario(), clock=T0 + 2 * HOUR)
    exchange_env(server)
    server.add_fault(account="main", path="/api/v3/myTrades", mode="malformed")
    with reading_ahead([("p", T0)]) as ahead:
        ahead.schedule("main", "p", [SPOT, SWAP], T0, T0 + HOUR, T0 + 2 * HOUR, OPTIONS, 2)
        assert ahead.take("main", T0, T0 + HOUR) == {}
        assert ahead.take("main", T0 + HOUR, T0 + 2 * HOUR) == {}   # never scheduled
    assert ahead.missed == 1 and ahead.used == 0


# --- the history a window read serves the next window's span start -------------------------------------


def _done(value):
    from concurrent.futures import Future

    future = Future()
    future.set_result(value)
    return future


@pytest.mark.parametrize("reach_back", [
    pytest.param(25 * 60_000, id="an OPEN slice reaches 25 min into the window before"),
    pytest.param(HOUR, id="back to the start of the window before"),
    pytest.param(2 * HOUR, id="further back than the window before"),
])
def test_the_window_before_serves_the_part_of_the_span_before_the_window(emulator, exchange_env, reach_back):
    server = emulator(_scenario(history=True), clock=T0 + 3 * HOUR)
    exchange_env(server)
    ahead = ReadAhead({("p", T0 - HOUR), ("p", T0)})
    # the window before, [T0 - 1 h, T0): its snapshot keeps what it read
    settled: dict = {}
    fetch_activity(_pool(server, exchange_env), "main", [SPOT, SWAP], _utc(T0 - HOUR), _utc(T0), settled=settled)
    ahead.keep("main", settled)
    # this window, [T0, T0 + 1 h): its span was read ahead
    ahead._pending["main", T0, T0 + HOUR] = _done(read_spans("main", OPTIONS, 2, [SPOT, SWAP], T0, T0 + HOUR))
    spans = ahead.take("main", T0, T0 + HOUR)
    assert {s.lo for s in spans.values()} == {T0 - HOUR}
    since, until = _utc(T0 - reach_back), _utc(T0 + HOUR)
    want = _serial(_pool(server, exchange_env, 1)[0], since, until)
    paged = {path: len(server.requests_to(path)) for path in ("/api/v3/myTrades", "/api/v3/allOrders")}

    got = fetch_activity(_pool(server, exchange_env), "main", [SPOT, SWAP], since, until, read_ahead=spans)

    pd.testing.assert_frame_equal(got[0], want[0])
    pd.testing.assert_frame_equal(got[1], want[1])
    assert ("300" in set(got[1]["exchange_order_id"])) is (reach_back > 45 * 60_000)
    for path, before in paged.items():  # only what lies before the window before is paged again
        again = server.requests_to(path)[before:]
        assert all(int(r["endTime"]) <= T0 - HOUR for r in again), path
        assert bool(again) is (reach_back > HOUR), path


def test_kept_history_is_joined_only_where_it_ends_at_the_span_start():
    span = read_ahead.Span(SPOT, T0, T0 + HOUR, fills=("f2",), orders=({"exchange_order_id": "2"},))
    right = read_ahead.Span(SPOT, T0 - HOUR, T0, fills=("f1",), orders=({"exchange_order_id": "1"},))
    gap = read_ahead.Span(SPOT, T0 - 2 * HOUR, T0 - 1, fills=("f0",))
    joined = read_ahead._joined(right, span)
    assert (joined.lo, joined.hi, joined.fills) == (T0 - HOUR, T0 + HOUR, ("f1", "f2"))
    assert [o["exchange_order_id"] for o in joined.orders] == ["1", "2"]
    assert read_ahead._joined(gap, span) is span
    assert read_ahead._joined(None, span) is span


def test_kept_history_serves_one_window_only():
    ahead = ReadAhead({("p", T0)})
    ahead.keep("main", {SPOT: read_ahead.Span(SPOT, T0 - HOUR, T0, fills=(("f1",),))})
    ahead._pending["main", T0, T0 + HOUR] = _done({SPOT: read_ahead.Span(SPOT, T0, T0 + HOUR)})
    assert ahead.take("main", T0, T0 + HOUR)[SPOT].lo == T0 - HOUR
    ahead._pending["main", T0, T0 + HOUR] = _done({SPOT: read_ahead.Span(SPOT, T0, T0 + HOUR)})
    assert ahead.take("main", T0, T0 + HOUR)[SPOT].lo == T0       # taken once, then gone
