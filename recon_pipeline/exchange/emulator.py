"""A loopback Binance (spot ``/api/v3`` + USD-M ``/fapi``) that real, unmodified ccxt talks to.

Why: no network reaches a real exchange here, and mocking ccxt would test our assumptions about ccxt
instead of ccxt. The emulator answers the read-only REST endpoints ccxt 4.5.90 calls for the snapshot
(see ``ENDPOINTS``) from a :mod:`scenario <recon_pipeline.exchange.scenario>`, the way Binance does:

- **Time**: the scenario clock is "now". ``serverTime`` is the clock; fills and orders created after it
  are invisible; an order whose last update lies after the clock is shown as it was at the clock
  (open, filled by the fills visible so far). Positions and balances have no history: they are the
  state at the clock whatever the clock is.
- **Auth**: signed endpoints need ``X-MBX-APIKEY`` of an account and an HMAC-SHA256 hex signature
  of the query string with that account's secret. Unknown key: HTTP 401 ``-2015``; bad or missing
  signature: HTTP 400 ``-1022`` / ``-1102``. ``timestamp`` / ``recvWindow`` are NOT checked against
  the clock: the clock is a scenario clock, not the wall clock ccxt signs with.
- **Paging**: ``myTrades`` / ``userTrades`` and ``allOrders`` take ``startTime``/``endTime``/
  ``fromId``(``orderId``)/``limit`` (default 500, max 1000), answer ascending by id, and refuse a
  window wider than Binance's (spot 24 h, USD-M 7 days: ``-1127``) or ``fromId`` mixed with a time
  window (``-1128``). Only ``startTime`` means ``[startTime, startTime + max window]``; only
  ``endTime`` the window ending there; neither, the newest ``limit`` rows.
- **Faults** (scenario ``faults`` or :meth:`EmulatorServer.add_fault`): ``http_429``/``http_418``
  (Binance's ``-1003`` body), ``http_500`` (``-1000``), ``http_502``/``http_503`` (plain text),
  ``timeout`` (hang ``hang_seconds``, default 30 s, longer than any client timeout), ``reset`` (RST
  the socket), ``malformed`` (HTTP 200, the real JSON body truncated), ``html`` (HTTP 200, an HTML
  error page, as a captive portal or a misconfigured proxy serves it).

One server serves every account of the scenario, told apart by API key. Public endpoints
(``exchangeInfo``, mark prices) serve the union of the accounts' markets.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from recon_pipeline.exchange.scenario import (
    Account,
    Fault,
    Market,
    Order,
    Scenario,
    ScenarioError,
    Trade,
    load_scenario,
    parse_fault,
    parse_timestamp,
)

HOUR_MS = 3_600_000
SPOT_WINDOW_MS = 24 * HOUR_MS
FAPI_WINDOW_MS = 7 * 24 * HOUR_MS
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000


class ApiError(Exception):
    """A Binance error answer: HTTP status plus ``{"code": ..., "msg": ...}``."""

    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _fmt(value: float | None) -> str:
    """Binance sends decimals as plain strings ("0.00001000"), never in exponent notation."""
    if value is None:
        return "0"
    text = repr(float(value))
    if "e" in text or "n" in text:  # exponent (1e-05, 1e+16), inf, nan: Decimal spells it out
        return format(Decimal(text), "f")
    return text  # the shortest repr is already the plain decimal Decimal would give ("43210.5", "100.0")


# --- request helpers ---------------------------------------------------------------------------------


def _int_param(params: dict, name: str, *, default: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.") from None


def _limit(params: dict) -> int:
    limit = _int_param(params, "limit", default=DEFAULT_LIMIT)
    if limit < 1 or limit > MAX_LIMIT:
        raise ApiError(400, -1130, f"Invalid data sent for a parameter: limit={limit} (1..{MAX_LIMIT}).")
    return limit


def _time_window(params: dict, max_window: int, label: str) -> tuple[int | None, int | None]:
    """Binance's startTime/endTime rules. Returns the inclusive [lo, hi] or (None, None) for "newest"."""
    start = _int_param(params, "startTime")
    end = _int_param(params, "endTime")
    if start is not None and end is not None:
        if end < start:
            raise ApiError(400, -1127, "startTime is after endTime.")
        if end - start > max_window:
            raise ApiError(400, -1127, f"More than {label} between startTime and endTime.")
        return start, end
    if start is not None:
        return start, start + max_window
    if end is not None:
        return end - max_window, end
    return None, None


class _State:
    """The scenario plus the derived views the handlers need; guarded by the server's lock."""

    def __init__(self, scenario: Scenario, clock: int | None):
        self.scenario = scenario
        if clock is not None:
            scenario.clock_ms = clock
        self.spot: dict[str, Market] = {}
        self.swap: dict[str, Market] = {}
        for account in scenario.accounts.values():
            for market in account.markets.values():
                book = self.spot if market.type == "spot" else self.swap
                known = book.get(market.market_id)
                if known is not None and known != market:
                    raise ScenarioError(f"scenario {scenario.source}: accounts.{account.name}: market "
                                        f"{market.symbol} differs from another account's definition")
                book[market.market_id] = market
        self.mark_prices: dict[str, float] = {}
        for account in scenario.accounts.values():
            for position in account.positions:
                if position.mark_price:
                    self.mark_prices.setdefault(position.symbol, position.mark_price)
        for account in scenario.accounts.values():
            self.mark_prices.update(account.mark_prices)
        self._indexes: dict[str, _AccountIndex] = {}

    @property
    def clock(self) -> int:
        return self.scenario.clock_ms

    def index(self, account: Account) -> _AccountIndex:
        """The account's lookup index, built on first use (a loaded scenario is never mutated)."""
        found = self._indexes.get(account.name)
        if found is None:
            found = self._indexes[account.name] = _AccountIndex(account)
        return found


class _AccountIndex:
    """Sorted views of one account's trades and orders, so each request costs a bisect and the rows
    it returns, not a scan of the whole history: a week of a busy account is millions of rows, and
    the snapshot of every hourly window asks for a few of them.

    Orders open at the clock ``c`` are those with ``timestamp <= c`` and either status ``open`` or
    ``last_update_timestamp > c``. Orders are grouped by lifetime (``last_update - timestamp`` below
    1 h, 2 h, 4 h, ...): an order of a group with lifetime below ``L`` can only be open at ``c`` when
    it was created in ``(c - L, c]``, a bisect per group.
    """

    def __init__(self, account: Account) -> None:
        trades: dict[str, list[Trade]] = {}
        self.trades_of_order: dict[tuple[str, int], list[Trade]] = {}
        for t in account.trades:
            trades.setdefault(t.symbol, []).append(t)
            self.trades_of_order.setdefault((t.symbol, t.order), []).append(t)
        self.trades_by_time = {s: sorted(ts, key=lambda t: (t.timestamp, t.id)) for s, ts in trades.items()}
        self.trade_times = {s: [t.timestamp for t in ts] for s, ts in self.trades_by_time.items()}
        self.trades_by_id = {s: sorted(ts, key=lambda t: t.id) for s, ts in trades.items()}
        self.trade_ids = {s: [t.id for t in ts] for s, ts in self.trades_by_id.items()}
        orders: dict[str, list[Order]] = {}
        self.order_by_id: dict[tuple[str, int], Order] = {}
        self.order_by_client_id: dict[tuple[str, str], Order] = {}
        for o in account.orders:
            orders.setdefault(o.symbol, []).append(o)
        self.orders_by_time = {s: sorted(os_, key=lambda o: (o.timestamp, o.id)) for s, os_ in orders.items()}
        for os_ in self.orders_by_time.values():  # the earliest order wins a duplicated client id
            for o in os_:
                self.order_by_id.setdefault((o.symbol, o.id), o)
                if o.client_order_id:
                    self.order_by_client_id.setdefault((o.symbol, o.client_order_id), o)
        self.order_times = {s: [o.timestamp for o in os_] for s, os_ in self.orders_by_time.items()}
        # symbol -> [(max lifetime or None for "open until further notice", times, orders)]
        self.lifetimes: dict[str, list[tuple[int | None, list[int], list[Order]]]] = {}
        for symbol, os_ in self.orders_by_time.items():
            groups: dict[int | None, list[Order]] = {}
            for o in os_:
                if o.status not in _STATUS:  # "open": open from creation on, whatever the clock
                    key = None
                else:
                    life, key = max(o.last_update_timestamp - o.timestamp, 0), HOUR_MS
                    while key <= life:
                        key *= 2
                groups.setdefault(key, []).append(o)
            self.lifetimes[symbol] = [(k, [o.timestamp for o in g], g) for k, g in groups.items()]

    def trades_of(self, order: Order) -> list[Trade]:
        return self.trades_of_order.get((order.symbol, order.id), [])

    def trades_between(self, symbol: str, lo: int, hi: int) -> list[Trade]:
        """Trades of ``symbol`` with ``lo <= timestamp <= hi``, ascending by id."""
        times = self.trade_times.get(symbol, [])
        rows = self.trades_by_time.get(symbol, [])[bisect.bisect_left(times, lo):bisect.bisect_right(times, hi)]
        return sorted(rows, key=lambda t: t.id)

    def trades_from_id(self, symbol: str, from_id: int, clock: int, limit: int) -> list[Trade]:
        """The first ``limit`` trades of ``symbol`` with ``id >= from_id`` visible at ``clock``."""
        rows = self.trades_by_id.get(symbol, [])
        out = []
        for t in rows[bisect.bisect_left(self.trade_ids.get(symbol, []), from_id):]:
            if t.timestamp <= clock:
                out.append(t)
                if len(out) == limit:
                    break
        return out

    def orders_created(self, symbols: set[str], lo: int, hi: int) -> list[Order]:
        """Orders of ``symbols`` created in ``[lo, hi]``, by (timestamp, id)."""
        out = []
        for symbol in symbols:
            times = self.order_times.get(symbol, [])
            out += self.orders_by_time.get(symbol, [])[bisect.bisect_left(times, lo):bisect.bisect_right(times, hi)]
        return sorted(out, key=lambda o: (o.timestamp, o.id)) if len(symbols) > 1 else out

    def orders_open(self, symbols: set[str], clock: int) -> list[Order]:
        """Orders of ``symbols`` open at ``clock`` (see the class docstring), by (timestamp, id)."""
        out = []
        for symbol in symbols:
            for life, times, group in self.lifetimes.get(symbol, []):
                lo = 0 if life is None else bisect.bisect_right(times, clock - life)
                out += [o for o in group[lo:bisect.bisect_right(times, clock)]
                        if o.status not in _STATUS or o.last_update_timestamp > clock]
        return sorted(out, key=lambda o: (o.timestamp, o.id))


# --- the Binance wire format -------------------------------------------------------------------------


def _symbol_info(market: Market) -> dict[str, Any]:
    filters = [
        {"filterType": "PRICE_FILTER", "minPrice": _fmt(market.price_step), "maxPrice": "10000000",
         "tickSize": _fmt(market.price_step)},
        {"filterType": "LOT_SIZE", "minQty": _fmt(market.amount_step), "maxQty": "9000000",
         "stepSize": _fmt(market.amount_step)},
        {"filterType": "MARKET_LOT_SIZE", "minQty": _fmt(market.amount_step), "maxQty": "9000000",
         "stepSize": _fmt(market.amount_step)},
    ]
    info: dict[str, Any] = {
        "symbol": market.market_id, "status": "TRADING", "baseAsset": market.base, "quoteAsset": market.quote,
        "baseAssetPrecision": 8, "quotePrecision": 8, "orderTypes": ["LIMIT", "MARKET"], "filters": filters,
    }
    if market.type == "spot":
        info.update({"isSpotTradingAllowed": True, "isMarginTradingAllowed": False, "permissions": ["SPOT"]})
    else:
        info.update({
            "pair": market.market_id, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000, "contractStatus": "TRADING", "marginAsset": market.settle,
            "pricePrecision": 8, "quantityPrecision": 8, "underlyingType": "COIN",
            "contractSize": market.contract_size, "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
        })
    return info


_STATUS = {"closed": "FILLED", "canceled": "CANCELED", "expired": "EXPIRED", "rejected": "REJECTED"}


def _order_at_clock(order: Order, trades: list[Trade], clock: int) -> tuple[str, float, float | None, int]:
    """(Binance status, executed qty, average price, update time) of the order as it was at ``clock``;
    ``trades`` are the order's own (see :meth:`_AccountIndex.trades_of`)."""
    visible = [t for t in trades if t.timestamp <= clock]
    if order.last_update_timestamp <= clock:
        status = _STATUS.get(order.status) or ("PARTIALLY_FILLED" if order.filled > 0 else "NEW")
        average = order.average
        if average is None and order.filled > 0 and visible:
            # A scenario order without "average": the exchange would report its fills' VWAP.
            average = sum(t.amount * t.price for t in visible) / sum(t.amount for t in visible)
        return status, order.filled, average, order.last_update_timestamp
    filled = min(order.amount, sum(t.amount for t in visible))
    average = (sum(t.amount * t.price for t in visible) / filled) if filled > 0 else None
    updated = max([order.timestamp] + [t.timestamp for t in visible])
    return ("PARTIALLY_FILLED" if filled > 0 else "NEW"), filled, average, updated


def _order_json(order: Order, market: Market, trades: list[Trade], clock: int) -> dict[str, Any]:
    status, filled, average, updated = _order_at_clock(order, trades, clock)
    quote = filled * (average or 0.0)
    price = order.price if order.price is not None else 0.0
    body: dict[str, Any] = {
        "symbol": market.market_id, "orderId": order.id, "clientOrderId": order.client_order_id or "",
        "price": _fmt(price), "origQty": _fmt(order.amount), "executedQty": _fmt(filled),
        "status": status, "timeInForce": "GTC", "type": order.type.upper(), "side": order.side.upper(),
        "stopPrice": "0", "time": order.timestamp, "updateTime": updated,
    }
    if market.type == "spot":
        body.update({"orderListId": -1, "cummulativeQuoteQty": _fmt(quote), "icebergQty": "0",
                     "isWorking": True, "workingTime": order.timestamp, "origQuoteOrderQty": "0",
                     "selfTradePreventionMode": "NONE"})
    else:
        body.update({"avgPrice": _fmt(average or 0.0), "cumQuote": _fmt(quote), "reduceOnly": order.reduce_only,
                     "positionSide": order.position_side, "closePosition": False,
                     "origType": order.type.upper(), "workingType": "CONTRACT_PRICE", "priceProtect": False,
                     "priceMatch": "NONE", "selfTradePreventionMode": "NONE", "goodTillDate": 0})
    return body


def _trade_json(trade: Trade, market: Market) -> dict[str, Any]:
    quote = trade.amount * trade.price * market.contract_size
    body: dict[str, Any] = {
        "symbol": market.market_id, "id": trade.id, "orderId": trade.order, "price": _fmt(trade.price),
        "qty": _fmt(trade.amount), "quoteQty": _fmt(quote), "time": trade.timestamp,
    }
    if trade.fee_cost is not None:
        body["commission"] = _fmt(trade.fee_cost)
        body["commissionAsset"] = trade.fee_currency or market.quote
    maker = trade.taker_or_maker == "maker"
    if market.type == "spot":
        body.update({"orderListId": -1, "isBuyer": trade.side == "buy", "isMaker": maker, "isBestMatch": True})
    else:
        body.update({"buyer": trade.side == "buy", "maker": maker, "side": trade.side.upper(),
                     "positionSide": trade.position_side, "realizedPnl": "0", "marginAsset": market.settle})
    return body


# --- endpoint handlers ---------------------------------------------------------------------------------

Handler = Callable[[_State, Account | None, dict], Any]


def _market_param(state: _State, params: dict, book: dict[str, Market], *, required: bool) -> Market | None:
    market_id = params.get("symbol")
    if not market_id:
        if required:
            raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        return None
    market = book.get(market_id)
    if market is None:
        raise ApiError(400, -1121, "Invalid symbol.")
    return market


def _exchange_info(book_name: str) -> Handler:
    def handle(state: _State, _account, _params):
        book = state.spot if book_name == "spot" else state.swap
        return {"timezone": "UTC", "serverTime": state.clock, "rateLimits": [], "exchangeFilters": [],
                "symbols": [_symbol_info(m) for m in book.values()]}
    return handle


def _time(state: _State, _account, _params):
    return {"serverTime": state.clock}


def _ping(_state, _account, _params):
    return {}


def _prices(book_name: str) -> Handler:
    """Spot ``ticker/price`` (last price; our mark for spot) and USD-M ``premiumIndex`` (mark price)."""
    def entry(state: _State, market: Market) -> dict[str, Any] | None:
        price = state.mark_prices.get(market.symbol)
        if price is None:
            return None
        if book_name == "spot":
            return {"symbol": market.market_id, "price": _fmt(price)}
        return {"symbol": market.market_id, "markPrice": _fmt(price), "indexPrice": _fmt(price),
                "estimatedSettlePrice": _fmt(price), "lastFundingRate": "0.00010000",
                "interestRate": "0.00010000", "nextFundingTime": (state.clock // (8 * HOUR_MS) + 1) * 8 * HOUR_MS,
                "time": state.clock}

    def handle(state: _State, _account, params):
        book = state.spot if book_name == "spot" else state.swap
        market = _market_param(state, params, book, required=False)
        if market is not None:
            found = entry(state, market)
            if found is None:
                raise ApiError(400, -1121, "Invalid symbol.")
            return found
        wanted = None
        if params.get("symbols"):
            try:
                wanted = set(json.loads(params["symbols"]))
            except (ValueError, TypeError):
                raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
        rows = [entry(state, m) for m in book.values() if wanted is None or m.market_id in wanted]
        return [row for row in rows if row is not None]
    return handle


def _my_trades(book_name: str) -> Handler:
    max_window, label = (SPOT_WINDOW_MS, "24 hours") if book_name == "spot" else (FAPI_WINDOW_MS, "7 days")

    def handle(state: _State, account: Account, params):
        book = state.spot if book_name == "spot" else state.swap
        market = _market_param(state, params, book, required=True)
        limit = _limit(params)
        from_id = _int_param(params, "fromId")
        order_id = _int_param(params, "orderId")
        if from_id is not None and (params.get("startTime") or params.get("endTime")):
            raise ApiError(400, -1128, "Combination of optional parameters invalid.")
        lo, hi = _time_window(params, max_window, label)
        index = state.index(account)
        if from_id is not None and order_id is None:
            rows = index.trades_from_id(market.symbol, from_id, state.clock, limit)
        elif lo is not None and order_id is None:
            rows = index.trades_between(market.symbol, lo, min(hi, state.clock))[:limit]
        else:
            rows = sorted((t for t in index.trades_by_id.get(market.symbol, []) if t.timestamp <= state.clock),
                          key=lambda t: t.id)
            if order_id is not None:
                rows = [t for t in rows if t.order == order_id]
            if from_id is not None:
                rows = [t for t in rows if t.id >= from_id][:limit]
            elif lo is not None:
                rows = [t for t in rows if lo <= t.timestamp <= hi][:limit]
            else:
                if book_name == "swap":
                    rows = [t for t in rows if t.timestamp >= state.clock - max_window]
                rows = rows[-limit:]
        return [_trade_json(t, market) for t in rows]
    return handle


def _book_symbols(market: Market | None, book: dict[str, Market]) -> set[str]:
    return {m.symbol for m in book.values()} if market is None else {market.symbol}


def _visible_orders(state: _State, account: Account, market: Market | None, book: dict[str, Market]):
    """Orders created up to the clock, by (timestamp, id) (= Binance's id order when ids follow time)."""
    return state.index(account).orders_created(_book_symbols(market, book), -(2 ** 62), state.clock)


def _all_orders(book_name: str) -> Handler:
    max_window, label = (SPOT_WINDOW_MS, "24 hours") if book_name == "spot" else (FAPI_WINDOW_MS, "7 days")

    def handle(state: _State, account: Account, params):
        book = state.spot if book_name == "spot" else state.swap
        market = _market_param(state, params, book, required=True)
        limit = _limit(params)
        order_id = _int_param(params, "orderId")
        lo, hi = _time_window(params, max_window, label)
        index = state.index(account)
        if lo is not None and order_id is None:
            rows = index.orders_created({market.symbol}, lo, min(hi, state.clock))
        else:
            rows = _visible_orders(state, account, market, book)
            if order_id is not None:
                rows = sorted((o for o in rows if o.id >= order_id), key=lambda o: o.id)
            if lo is not None:
                rows = [o for o in rows if lo <= o.timestamp <= hi]
        rows = rows[:limit] if (order_id is not None or lo is not None) else rows[-limit:]
        return [_order_json(o, book[market.market_id], index.trades_of(o), state.clock) for o in rows]
    return handle


def _open_orders(book_name: str) -> Handler:
    def handle(state: _State, account: Account, params):
        book = state.spot if book_name == "spot" else state.swap
        market = _market_param(state, params, book, required=False)
        index = state.index(account)
        out = []
        for order in index.orders_open(_book_symbols(market, book), state.clock):
            mkt = account.markets[order.symbol]
            body = _order_json(order, mkt, index.trades_of(order), state.clock)
            if body["status"] in ("NEW", "PARTIALLY_FILLED"):
                out.append(body)
        return out
    return handle


def _order(book_name: str) -> Handler:
    def handle(state: _State, account: Account, params):
        book = state.spot if book_name == "spot" else state.swap
        market = _market_param(state, params, book, required=True)
        order_id = _int_param(params, "orderId")
        client_id = params.get("origClientOrderId")
        if order_id is None and not client_id:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        index = state.index(account)
        order = (index.order_by_id.get((market.symbol, order_id)) if order_id is not None
                 else index.order_by_client_id.get((market.symbol, client_id)))
        if order is not None and order.timestamp <= state.clock:
            return _order_json(order, market, index.trades_of(order), state.clock)
        raise ApiError(400, -2013, "Order does not exist.")
    return handle


def _spot_account(state: _State, account: Account, _params):
    return {
        "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
        "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
        "requireSelfTradePrevention": False, "updateTime": state.clock, "accountType": "SPOT",
        "balances": [{"asset": asset, "free": _fmt(b.free), "locked": _fmt(b.used)}
                     for asset, b in account.balances.items()],
        "permissions": ["SPOT"],
    }


def _leverage_bracket(state: _State, account: Account, _params):
    return [{"symbol": m.market_id, "notionalCoef": 1.0, "brackets": [
        {"bracket": 1, "initialLeverage": 20, "notionalCap": 1_000_000_000, "notionalFloor": 0,
         "maintMarginRatio": 0.004, "cum": 0.0}]} for m in state.swap.values()]


def _position_risk(state: _State, account: Account, params):
    """v2/v3 positionRisk: every swap market of the account, flat ones with positionAmt 0 (ccxt drops them)."""
    market = _market_param(state, params, state.swap, required=False)
    rows = []
    held = set()
    for pos in account.positions:
        mkt = account.markets[pos.symbol]
        if market is not None and mkt.market_id != market.market_id:
            continue
        held.add(pos.symbol)
        sign = -1.0 if pos.side == "short" else 1.0
        mark = state.mark_prices.get(pos.symbol) or pos.mark_price or pos.entry_price
        amt = sign * pos.contracts
        notional = amt * mark * mkt.contract_size
        rows.append({
            "symbol": mkt.market_id, "positionSide": pos.position_side, "positionAmt": _fmt(amt),
            "entryPrice": _fmt(pos.entry_price), "breakEvenPrice": _fmt(pos.entry_price), "markPrice": _fmt(mark),
            "unRealizedProfit": _fmt(round((mark - pos.entry_price) * amt * mkt.contract_size, 8)),
            "liquidationPrice": "0", "isolatedMargin": "0", "notional": _fmt(notional),
            "marginAsset": mkt.settle, "isolatedWallet": "0", "initialMargin": _fmt(abs(notional) / 20),
            "maintMargin": _fmt(abs(notional) * 0.004), "positionInitialMargin": _fmt(abs(notional) / 20),
            "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0", "askNotional": "0",
            "leverage": "20", "marginType": "cross",
            "updateTime": pos.timestamp if pos.timestamp is not None else state.clock,
        })
    for mkt in account.markets.values():
        if mkt.type == "swap" and mkt.symbol not in held and (market is None or market.market_id == mkt.market_id):
            rows.append({"symbol": mkt.market_id, "positionSide": "BOTH", "positionAmt": "0", "entryPrice": "0",
                         "breakEvenPrice": "0", "markPrice": _fmt(state.mark_prices.get(mkt.symbol, 0.0)),
                         "unRealizedProfit": "0", "liquidationPrice": "0", "isolatedMargin": "0", "notional": "0",
                         "marginAsset": mkt.settle, "isolatedWallet": "0", "updateTime": 0})
    return rows


PUBLIC: dict[str, Handler] = {
    "/api/v3/ping": _ping,
    "/api/v3/time": _time,
    "/api/v3/exchangeInfo": _exchange_info("spot"),
    "/api/v3/ticker/price": _prices("spot"),
    "/fapi/v1/ping": _ping,
    "/fapi/v1/time": _time,
    "/fapi/v1/exchangeInfo": _exchange_info("swap"),
    "/fapi/v1/premiumIndex": _prices("swap"),
}
SIGNED: dict[str, Handler] = {
    "/api/v3/account": _spot_account,
    "/api/v3/myTrades": _my_trades("spot"),
    "/api/v3/allOrders": _all_orders("spot"),
    "/api/v3/openOrders": _open_orders("spot"),
    "/api/v3/order": _order("spot"),
    "/fapi/v1/userTrades": _my_trades("swap"),
    "/fapi/v1/allOrders": _all_orders("swap"),
    "/fapi/v1/openOrders": _open_orders("swap"),
    "/fapi/v1/order": _order("swap"),
    "/fapi/v1/leverageBracket": _leverage_bracket,
    "/fapi/v2/positionRisk": _position_risk,
    "/fapi/v3/positionRisk": _position_risk,
}
ENDPOINTS = tuple(PUBLIC) + tuple(SIGNED)


# --- HTTP plumbing -----------------------------------------------------------------------------------

_HTML_PAGE = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
              b"<center><h1>502 Bad Gateway</h1></center><hr><center>cloudfront</center></body></html>")
_FAULT_STATUS = {
    "http_429": (429, b'{"code":-1003,"msg":"Too many requests; current limit of IP is 6000 request weight per 1 MINUTE."}'),
    "http_418": (418, b'{"code":-1003,"msg":"Way too many requests; IP banned until 9999999999999."}'),
    "http_500": (500, b'{"code":-1000,"msg":"An unknown error occured while processing the request."}'),
    "http_502": (502, b"Bad Gateway"),
    "http_503": (503, b"Service Unavailable."),
}


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: ccxt's requests session reuses the connection
    disable_nagle_algorithm = True  # read by StreamRequestHandler.setup(); else ~40 ms per answer
    server: EmulatorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: tests read ``request_log`` instead of stderr."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def _send(self, status: int, body: bytes, content_type: str = "application/json;charset=UTF-8",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0): the client sees 'connection reset by peer'."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the socket was reset on purpose, or the client gave up (timeout fault)

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        split = urlsplit(self.path)
        path, raw_query = split.path, split.query
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        params.pop("signature", None)
        api_key = self.headers.get("X-MBX-APIKEY")
        emulator = self.server.emulator
        body, fault = emulator._prepare(method, path, raw_query, params, api_key)
        if fault is None:
            status, payload = body
            self._send(status, payload)
            return
        if fault == "timeout":
            emulator._stopping.wait(emulator.hang_seconds)
            self._reset()
        elif fault == "reset":
            self._reset()
        elif fault == "malformed":
            status, payload = body
            self._send(200, payload[: max(1, len(payload) // 2)] + b"\x00garbage")
        elif fault == "html":
            self._send(200, _HTML_PAGE, "text/html; charset=utf-8")
        else:
            status, payload = _FAULT_STATUS[fault]
            kind = "application/json;charset=UTF-8" if payload.startswith(b"{") else "text/plain"
            self._send(status, payload, kind, {"Retry-After": "1"} if status in (418, 429) else None)


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hanging "timeout" handler never blocks shutdown
    emulator: EmulatorServer

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-answer is normal here (timeouts, resets); anything else is printed."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handle_error(request, client_address)


class EmulatorServer:
    """The loopback Binance. ``with EmulatorServer(scenario) as server: ... server.url``."""

    def __init__(self, scenario: Scenario | dict | str | Path, host: str = "127.0.0.1", port: int = 0,
                 clock: int | str | None = None, *, hang_seconds: float = 30.0):
        self.host, self.port = host, port
        self.hang_seconds = hang_seconds
        self.request_log: list[tuple[str | None, str, str, dict[str, str]]] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.load(scenario, clock=clock)

    # -- state --
    def load(self, scenario: Scenario | dict | str | Path, *, clock: int | str | None = None) -> None:
        """Replace the whole scenario (faults and their counters included)."""
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        state = _State(scenario, None if clock is None else parse_timestamp(clock))
        with self._lock:
            self._state = state

    @property
    def scenario(self) -> Scenario:
        return self._state.scenario

    def set_clock(self, ts: int | str) -> None:
        """Move "now" (int ms or ISO-8601)."""
        with self._lock:
            self._state.scenario.clock_ms = parse_timestamp(ts)

    def add_fault(self, fault: Fault | dict | None = None, **kwargs: Any) -> Fault:
        """Inject a fault at runtime: ``add_fault(path=..., mode=..., account=..., after=0, times=1)``."""
        if not isinstance(fault, Fault):
            fault = parse_fault(dict(fault or {}, **kwargs), where="add_fault")
        with self._lock:
            self._state.scenario.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._state.scenario.faults.clear()

    def requests_to(self, path: str, account: str | None = None) -> list[dict[str, str]]:
        """Params of the logged requests to ``path`` (optionally of one account), oldest first."""
        with self._lock:
            return [p for a, _m, pth, p in self.request_log if pth == path and (account is None or a == account)]

    # -- request processing (called from handler threads) --
    def _prepare(self, method: str, path: str, raw_query: str, params: dict, api_key: str | None):
        """Return ((status, body), fault_mode). The body is computed even for a fault: ``malformed``
        truncates the real answer."""
        with self._lock:
            state = self._state
            account = state.scenario.account_by_key(api_key)
            name = account.name if account is not None else None
            self.request_log.append((name, method, path, dict(params)))
            fault = None
            for candidate in state.scenario.faults:
                if candidate.matches(name, path) and candidate.fires():
                    fault = candidate.mode
                    break
            try:
                result = self._answer(state, method, path, raw_query, params, api_key, account)
                answer = (200, json.dumps(result, separators=(",", ":")).encode())
            except ApiError as err:
                answer = (err.status, json.dumps({"code": err.code, "msg": err.msg}).encode())
        return answer, fault

    @staticmethod
    def _answer(state: _State, method: str, path: str, raw_query: str, params: dict,
                api_key: str | None, account: Account | None) -> Any:
        handler = PUBLIC.get(path)
        signed = SIGNED.get(path)
        if handler is None and signed is None:
            raise ApiError(404, -404, f"emulator: no endpoint {method} {path}")
        if method != "GET":
            raise ApiError(405, -405, f"emulator: {method} {path} not served (the emulator is read-only)")
        if handler is not None:
            return handler(state, account, params)
        if account is None:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        marker = raw_query.rfind("signature=")
        if marker < 0 or not params.get("timestamp"):
            raise ApiError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        payload = raw_query[: max(0, marker - 1)]
        expected = hmac.new(account.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, raw_query[marker + len("signature="):]):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        return signed(state, account, params)

    # -- lifecycle --
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("emulator not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    def start(self) -> EmulatorServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = EmulatorHTTPServer((self.host, self.port), _RequestHandler)
        httpd.emulator = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"binance-emulator:{httpd.server_address[1]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # release hanging "timeout" handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(scenario_path: str | Path, port: int = 0, clock: int | str | None = None,
                  host: str = "127.0.0.1") -> None:
    """The ``recon-pipeline emulator`` command: serve until interrupted, printing the URL and accounts."""
    from recon_pipeline.observability.server import stop_on_sigterm

    stop_on_sigterm()
    server = EmulatorServer(scenario_path, host=host, port=port, clock=clock).start()
    accounts = ", ".join(sorted(server.scenario.accounts))
    print(f"binance emulator serving {scenario_path} at {server.url} "
          f"(clock {server.scenario.clock_ms}, accounts: {accounts})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
