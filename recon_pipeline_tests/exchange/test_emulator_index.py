"""The emulator's lookup index answers exactly what a scan of the whole history would.

The index exists for speed (a week of a busy account is millions of rows); these properties pin
it to the scan's semantics on random histories, including long-lived and never-updated orders.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from recon_pipeline.exchange.emulator import _STATUS, HOUR_MS, _AccountIndex
from recon_pipeline.exchange.scenario import Account, Order, Trade

SYMBOLS = ("BTC/USDT", "BTC/USDT:USDT")
T0 = 1_796_000_000_000

order_st = st.builds(
    lambda i, sym, ts, life, status, cid: Order(
        id=i, client_order_id=cid, symbol=sym, side="buy", type="limit", amount=1.0, price=1.0, filled=0.0,
        average=None, status=status, timestamp=T0 + ts, last_update_timestamp=T0 + ts + life),
    # created within a few hours, lifetimes from 0 to 30 h: many orders are open at any clock
    st.integers(1, 10_000), st.sampled_from(SYMBOLS), st.integers(0, 6 * HOUR_MS),
    st.one_of(st.integers(0, 5_000), st.integers(0, 30 * HOUR_MS), st.sampled_from([HOUR_MS, 2 * HOUR_MS])),
    st.sampled_from(["open", "closed", "canceled", "expired", "rejected"]),
    st.one_of(st.none(), st.sampled_from(["c1", "c2", "c3"])),
)
trade_st = st.builds(
    lambda i, o, sym, ts: Trade(id=i, order=o, symbol=sym, side="buy", amount=1.0, price=1.0, fee_cost=None,
                                fee_currency=None, timestamp=T0 + ts),
    st.integers(1, 10_000), st.integers(1, 50), st.sampled_from(SYMBOLS), st.integers(0, 48 * HOUR_MS),
)


def _unique(rows, key):
    seen, out = set(), []
    for r in rows:
        if key(r) not in seen:
            seen.add(key(r))
            out.append(r)
    return out


def _account(orders, trades) -> Account:
    """The scenario loader refuses a duplicated order id within a symbol and a duplicated trade id."""
    return Account(name="main", api_key="k", secret="s", orders=_unique(orders, lambda o: (o.symbol, o.id)),
                   trades=_unique(trades, lambda t: t.id))


def _open_by_scan(account: Account, symbols, clock):
    def is_open(o):
        if o.timestamp > clock:
            return False
        return o.last_update_timestamp > clock or o.status not in _STATUS
    return sorted((o for o in account.orders if o.symbol in symbols and is_open(o)), key=lambda o: (o.timestamp, o.id))


@settings(max_examples=200, deadline=None)
@given(st.lists(order_st, max_size=60), st.lists(trade_st, max_size=60), st.integers(-HOUR_MS, 40 * HOUR_MS),
       st.sets(st.sampled_from(SYMBOLS), min_size=1))
def test_open_orders_equal_a_scan(orders, trades, at, symbols):
    account = _account(orders, trades)
    clock = T0 + at
    assert _AccountIndex(account).orders_open(symbols, clock) == _open_by_scan(account, symbols, clock)


@settings(max_examples=200, deadline=None)
@given(st.lists(trade_st, max_size=80), st.integers(0, 48 * HOUR_MS), st.integers(0, 24 * HOUR_MS),
       st.integers(1, 10_000), st.integers(1, 20))
def test_trade_pages_equal_a_scan(trades, lo, width, from_id, limit):
    account = _account([], trades)
    index = _AccountIndex(account)
    clock = T0 + lo + width // 2
    for symbol in SYMBOLS:
        mine = sorted((t for t in account.trades if t.symbol == symbol), key=lambda t: t.id)
        a, b = T0 + lo, T0 + lo + width
        assert index.trades_between(symbol, a, b) == [t for t in mine if a <= t.timestamp <= b]
        assert index.trades_from_id(symbol, from_id, clock, limit) == [
            t for t in mine if t.id >= from_id and t.timestamp <= clock][:limit]


@settings(max_examples=100, deadline=None)
@given(st.lists(order_st, max_size=60), st.lists(trade_st, max_size=60))
def test_order_lookups_and_own_trades_equal_a_scan(orders, trades):
    account = _account(orders, trades)
    index = _AccountIndex(account)
    by_time = sorted(account.orders, key=lambda o: (o.timestamp, o.id))
    for o in account.orders:
        assert index.order_by_id[(o.symbol, o.id)] is o
        assert index.trades_of(o) == [t for t in account.trades if t.order == o.id and t.symbol == o.symbol]
        if o.client_order_id:
            first = next(x for x in by_time if x.symbol == o.symbol and x.client_order_id == o.client_order_id)
            assert index.order_by_client_id[(o.symbol, o.client_order_id)] is first


def test_open_orders_at_every_lifetime_boundary():
    """Each lifetime group's edges: an order is open from its creation up to (excluding) its last update."""
    lifetimes = [0, 1, HOUR_MS - 1, HOUR_MS, HOUR_MS + 1]
    for k in range(1, 6):
        group = HOUR_MS * 2 ** k
        lifetimes += [group // 2, group // 2 + 1, group - 1, group, group + 1]
    orders = [Order(id=i + 1, client_order_id=None, symbol="BTC/USDT", side="buy", type="limit", amount=1.0,
                    price=1.0, filled=0.0, average=None, status="canceled", timestamp=T0 + 7 * i,
                    last_update_timestamp=T0 + 7 * i + life) for i, life in enumerate(lifetimes)]
    account = _account(orders, [])
    index = _AccountIndex(account)
    clocks = {T0 + 7 * i + d for i, life in enumerate(lifetimes) for d in (-1, 0, 1, life - 1, life, life + 1, life // 2)}
    for clock in sorted(clocks):
        assert index.orders_open({"BTC/USDT"}, clock) == _open_by_scan(account, {"BTC/USDT"}, clock), clock


@settings(max_examples=500, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_decimal_strings_are_what_decimal_spells(value):
    """The emulator's number format (its fast path skips Decimal when repr has no exponent)."""
    from decimal import Decimal

    from recon_pipeline.exchange.emulator import _fmt

    assert _fmt(value) == format(Decimal(repr(value)), "f")
