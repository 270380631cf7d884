"""Exchange snapshot fetchers: ccxt calls in, typed frames (``recon_pipeline.schemas``) out.

Pure I/O, no reconciliation logic. The one rule every function keeps: **complete or an error**.
Any failure (a ccxt exception after the client's bounded retries, a malformed body, a row missing a
field) raises :class:`ExchangeSnapshotError` naming account, endpoint and symbol/window; nothing
returns a partial or empty frame after an error, because an empty position list reads as "flat" and
a missing fill reads as "no exit".

Time conventions: fills are taken in ``[since, until)`` (``until`` exclusive, so adjacent hourly
windows never share a fill; in the live run a fill stamped exactly at "now" belongs to the next
snapshot); orders "touched" in ``[since, until]``: Binance filters ``allOrders`` on
the creation time, so an order created earlier and filled inside the span is only found through
``lookup_ids`` or the ``fills`` argument (every order a fill points to is fetched).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import ccxt
import pandas as pd
from ccxt.base.precise import Precise

from recon_pipeline import schemas
from recon_pipeline.exchange.client import Redactor
from recon_pipeline.exchange.read_ahead import Span

PAGE_LIMIT = 1000  # Binance's maximum page for myTrades / userTrades / allOrders
SPOT_WINDOW_MS = 24 * 3_600_000  # Binance spot: at most 24 h between startTime and endTime
SWAP_WINDOW_MS = 7 * 24 * 3_600_000  # USD-M: 7 days

_ENDPOINTS = {
    ("trades", "spot"): "/api/v3/myTrades", ("trades", "swap"): "/fapi/v1/userTrades",
    ("orders", "spot"): "/api/v3/allOrders", ("orders", "swap"): "/fapi/v1/allOrders",
    ("open", "spot"): "/api/v3/openOrders", ("open", "swap"): "/fapi/v1/openOrders",
    ("order", "spot"): "/api/v3/order", ("order", "swap"): "/fapi/v1/order",
    ("positions", "swap"): "/fapi/v3/positionRisk", ("balance", "spot"): "/api/v3/account",
    ("marks", "spot"): "/api/v3/ticker/price", ("marks", "swap"): "/fapi/v1/premiumIndex",
    ("markets", "any"): "/api/v3/exchangeInfo+/fapi/v1/exchangeInfo", ("time", "any"): "/api/v3/time",
}


class ExchangeSnapshotError(RuntimeError):
    """An exchange snapshot could not be taken completely. Never carries credentials."""

    def __init__(self, account: str, endpoint: str, detail: str, *, symbol: str | None = None,
                 window: tuple[pd.Timestamp, pd.Timestamp] | None = None):
        self.account, self.endpoint, self.detail = account, endpoint, detail
        self.symbol, self.window = symbol, window
        where = f"account={account} endpoint={endpoint}"
        if symbol:
            where += f" symbol={symbol}"
        if window:
            where += f" window=[{window[0].isoformat()}, {window[1].isoformat()})"
        super().__init__(f"exchange snapshot failed: {where}: {detail}")


class _Malformed(Exception):
    """A response parsed but lacks what the snapshot needs (raised inside a guard)."""


def _actual_endpoint(ex: Any, nominal: str) -> str:
    """The REST path of the request that failed (ccxt records the last one), else the nominal one."""
    url = getattr(ex, "last_request_url", None)
    if isinstance(url, str) and "://" in url:
        path = "/" + url.split("://", 1)[1].split("/", 1)[-1].split("?", 1)[0]
        if path.startswith(("/api/", "/fapi/", "/sapi/", "/dapi/")):
            return path
    return nominal


@contextmanager
def _guard(ex: Any, account: str, endpoint: str, *, symbol: str | None = None,
           window: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> Iterator[None]:
    """Turn any failure inside the block into an ExchangeSnapshotError with redacted detail."""
    if hasattr(ex, "last_request_url"):
        ex.last_request_url = None
    try:
        yield
    except ExchangeSnapshotError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure must become a snapshot error
        redact = getattr(ex, "redact", None) or Redactor(getattr(ex, "secret", None), getattr(ex, "apiKey", None))
        detail = f"{type(exc).__name__}: {redact(str(exc))[:500]}"
        raise ExchangeSnapshotError(account, _actual_endpoint(ex, endpoint), detail,
                                    symbol=symbol, window=window) from exc


def _ms(ts: pd.Timestamp) -> int:
    ts = pd.Timestamp(ts)
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts} must be timezone-aware (UTC)")
    return int(ts.tz_convert("UTC").value // 1_000_000)


epoch_ms = _ms  # public name: the snapshot and the read-ahead key spans by epoch milliseconds
guard = _guard  # public name: the read-ahead worker reports its failures as the snapshot does


def _ts(ms: int) -> pd.Timestamp:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC")


def _num(row: Mapping, key: str, what: str, *, allow_none: bool = False) -> float:
    value = row.get(key)
    if value is None:
        if allow_none:
            return math.nan
        raise _Malformed(f"{what} {row.get('id')!r} has no {key!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _Malformed(f"{what} {row.get('id')!r} has non-numeric {key!r}={value!r}") from None
    if not math.isfinite(number):
        raise _Malformed(f"{what} {row.get('id')!r} has non-finite {key!r}")
    return number


def _req(row: Mapping, key: str, what: str) -> Any:
    value = row.get(key)
    if value is None or value == "":
        raise _Malformed(f"{what} {row.get('id')!r} has no {key!r}")
    return value


def _market(ex: Any, symbol: str) -> dict:
    if ex.markets is None:
        ex.load_markets()
    market = ex.markets.get(symbol)
    if market is None:
        raise _Malformed(f"symbol {symbol} is not listed by the exchange")
    if market.get("type") not in ("spot", "swap"):
        raise _Malformed(f"symbol {symbol} is a {market.get('type')} market; only spot and swap are reconciled")
    return market


def _symbol_market(ex: Any, account: str, symbol: str, what: str) -> tuple[dict, int, float]:
    """(market, Binance's widest time window for it, contract size) of a symbol about to be fetched."""
    with _guard(ex, account, what, symbol=symbol):
        market = _market(ex, symbol)
    swap = market["type"] == "swap"
    return market, (SWAP_WINDOW_MS if swap else SPOT_WINDOW_MS), (float(market.get("contractSize") or 1.0) if swap else 1.0)


def _chunks(start: int, end: int, width: int) -> Iterator[tuple[int, int]]:
    """[start, end) cut into consecutive [a, b) pieces no wider than ``width`` ms."""
    a = start
    while a < end:
        b = min(end, a + width)
        yield a, b
        a = b


def _account_of(ex: Any) -> str:
    return getattr(ex, "recon_account", None) or "?"


def _frame(rows: list[dict], schema: schemas.Schema, name: str, ms_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """The rows as the schema's frame; ``ms_columns`` hold epoch milliseconds, made timestamps once per
    column (not a ``pd.Timestamp`` per row)."""
    if not rows:
        return schemas.empty(schema)
    frame = pd.DataFrame(rows)
    for col in ms_columns:
        frame[col] = pd.to_datetime(frame[col].astype("int64"), unit="ms", utc=True)
    return schemas.conform(frame, schema, name=name)


# --- server time and markets ---------------------------------------------------------------------------


def fetch_server_time(ex: Any) -> pd.Timestamp:
    """The exchange's "now" (DESIGN section 3: never the local clock)."""
    account = _account_of(ex)
    with _guard(ex, account, _ENDPOINTS["time", "any"]):
        ms = ex.fetch_time()
        if not isinstance(ms, int) or isinstance(ms, bool) or ms <= 0:
            raise _Malformed(f"serverTime {ms!r} is not a positive integer of milliseconds")
        return _ts(ms)


def fetch_markets_frame(ex: Any, account: str, symbols: Iterable[str] | None = None) -> pd.DataFrame:
    """EXCHANGE_MARKETS for ``symbols`` (default: every spot and linear swap market), with mark prices.

    A requested symbol the exchange does not list is left out (the rules report UNKNOWN_SYMBOL). A
    market without a mark price has NaN; a failed mark-price request is an error, not NaN.
    """
    with _guard(ex, account, _ENDPOINTS["markets", "any"]):
        ex.load_markets()
        wanted = set(symbols) if symbols is not None else None
        markets = [m for sym, m in ex.markets.items()
                   if (wanted is None or sym in wanted) and m.get("type") in ("spot", "swap")
                   and (m.get("type") == "spot" or m.get("linear"))]
    marks: dict[str, float] = {}
    for mtype, fetcher in (("spot", "fetch_last_prices"), ("swap", "fetch_mark_prices")):
        syms = sorted(m["symbol"] for m in markets if m["type"] == mtype)
        if not syms:
            continue
        with _guard(ex, account, _ENDPOINTS["marks", mtype]):
            answer = getattr(ex, fetcher)(syms)
            if not isinstance(answer, dict):
                raise _Malformed(f"{fetcher} returned {type(answer).__name__}")
            for sym, entry in answer.items():
                price = (entry or {}).get("markPrice" if mtype == "swap" else "price")
                if price is not None and sym in syms:
                    marks[sym] = float(price)
    rows = []
    with _guard(ex, account, _ENDPOINTS["markets", "any"]):
        for m in markets:
            precision = m.get("precision") or {}
            rows.append({
                "account": account, "symbol": m["symbol"], "market_type": m["type"],
                "base": _req(m, "base", "market"), "quote": _req(m, "quote", "market"),
                "amount_precision": _num(precision, "amount", f"market {m['symbol']} precision"),
                "price_precision": _num(precision, "price", f"market {m['symbol']} precision"),
                "contract_size": float(m.get("contractSize") or 1.0) if m["type"] == "swap" else 1.0,
                "mark_price": marks.get(m["symbol"], math.nan),
            })
        return _frame(sorted(rows, key=lambda r: r["symbol"]), schemas.EXCHANGE_MARKETS, "exchange_markets")


# --- fills ---------------------------------------------------------------------------------------------


def _page_window(ex: Any, call: Callable[..., list], symbol: str, a: int, b: int, id_param: str) -> list[dict]:
    """Every row with ``a <= timestamp < b``, each once (rows are deduplicated by id).

    Pages stay inside the time window Binance accepts: the next page starts AT the last row's
    millisecond, not one after it (``since = last + 1`` loses rows sharing that millisecond), and the
    rows seen twice are dropped by id. Only when a whole page shares one millisecond (no progress by
    time is possible) does it continue inside that millisecond by id (``fromId`` / ``orderId``).
    """
    rows: dict[str, dict] = {}

    def take(page: Any) -> list[dict]:
        if not isinstance(page, list):
            raise _Malformed(f"a page is {type(page).__name__}, not a list")
        for r in page:
            ts = int(_req(r, "timestamp", "row"))
            if a <= ts < b:
                rows.setdefault(str(_req(r, "id", "row")), r)
        return page

    cursor = a
    while True:
        page = take(call(symbol, cursor, PAGE_LIMIT, {"until": b - 1}))
        if len(page) < PAGE_LIMIT:
            return list(rows.values())
        last_ts = max(int(r["timestamp"]) for r in page)
        if last_ts > cursor:
            cursor = last_ts
            continue
        # PAGE_LIMIT rows in one millisecond: walk that millisecond by id, then go on after it.
        while True:
            last_id = max(int(r["id"]) for r in page)
            page = take(call(symbol, None, PAGE_LIMIT, {id_param: last_id + 1}))
            if len(page) < PAGE_LIMIT or any(int(r["timestamp"]) > cursor for r in page):
                break
        cursor += 1
        if cursor >= b:
            return list(rows.values())


def fetch_fills(ex: Any, account: str, symbols: Iterable[str], since: pd.Timestamp,
                until: pd.Timestamp) -> pd.DataFrame:
    """EXCHANGE_FILLS of ``symbols`` with ``since <= ts < until``, each fill exactly once.

    Per symbol, chunked by Binance's window limit (spot 24 h, USD-M 7 days), paged by time from the
    last row's millisecond and deduplicated by fill id (see ``_page_window``).
    ``qty`` is ccxt's amount times the market's contract size (ccxt gives USD-M amounts in contracts).
    """
    lo, hi = _ms(since), _ms(until)
    rows: list[tuple] = []
    for symbol in sorted(set(symbols)):
        rows.extend(symbol_fill_rows(ex, account, symbol, lo, hi))
    return fills_frame(rows)


def symbol_fill_rows(ex: Any, account: str, symbol: str, lo: int, hi: int) -> list[tuple]:
    """The fill rows (``_FILL_COLUMNS`` tuples, ``ts`` in ms) of one symbol with ``lo <= ts < hi``."""
    by_id: dict[str, tuple] = {}
    market, width, contract_size = _symbol_market(ex, account, symbol, "fetch_my_trades")
    call = _raw_trades_call(ex, market)
    for a, b in _chunks(lo, hi, width):
        window = (_ts(a), _ts(b))
        with _guard(ex, account, _ENDPOINTS["trades", market["type"]], symbol=symbol, window=window):
            for t in _page_window(ex, call, symbol, a, b, "fromId"):
                row = _raw_fill_row(ex, account, symbol, market["id"], t, contract_size)
                by_id[row[1]] = row
    return list(by_id.values())


def fills_frame(rows: list[tuple]) -> pd.DataFrame:
    """EXCHANGE_FILLS of fill rows, in time, symbol, numeric id order (rows of one id once)."""
    if not rows:
        return schemas.empty(schemas.EXCHANGE_FILLS)
    rows = sorted({(r[3], r[1]): r for r in rows}.values(), key=lambda r: (r[9], r[3], int(r[1])))
    frame = pd.DataFrame.from_records(rows, columns=_FILL_COLUMNS)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="ms", utc=True)
    return schemas.conform(frame, schemas.EXCHANGE_FILLS, name="exchange_fills")


_FILL_COLUMNS = ["account", "fill_id", "exchange_order_id", "symbol", "side", "qty", "price", "fee_cost",
                 "fee_currency", "ts"]


def _raw_page_call(method: Callable[[dict], Any], market: Mapping, id_param: str, id_key: str) -> Callable[..., list]:
    """A ``fetch_my_trades`` / ``fetch_orders``-shaped call (what :func:`_page_window` pages with) that
    sends the request ccxt's unified method would send and returns Binance's own rows, each with the
    ``timestamp`` and ``id`` the pager reads."""
    def call(symbol: str, since: int | None, limit: int, params: Mapping) -> list:
        request: dict[str, Any] = {"symbol": market["id"], "limit": limit}
        if since is not None:
            request["startTime"] = since
        if params.get("until") is not None:
            request["endTime"] = params["until"]
        if params.get(id_param) is not None:
            request[id_param] = params[id_param]
        rows = method(request)
        if not isinstance(rows, list):
            raise _Malformed(f"a page is {type(rows).__name__}, not a list")
        for row in rows:
            if isinstance(row, dict):
                row["timestamp"], row["id"] = row.get("time"), row.get(id_key)
        return rows
    return call


def _raw_trades_call(ex: Any, market: Mapping) -> Callable[..., list]:
    """Binance's own ``myTrades`` / ``userTrades`` rows, paged like ``fetch_my_trades``.

    ccxt's unified parsing (``parse_trade`` -> ``safe_trade`` -> fee reduction, symbol lookup, sort)
    costs about 50 us per fill, which made it the largest single cost of a window's snapshot
    (1e4 fills: half a second; a live run at 1e6 fills: about a minute). The request still goes
    through ccxt (signing, retries, error mapping, the strict-body checks of the client); only the
    unified parse is skipped, and :func:`_raw_fill_row` reads the few fields the snapshot needs, with
    ccxt's meaning (``recon_pipeline_tests/exchange/test_raw_rows_match_ccxt.py`` holds it to that)."""
    method = ex.privateGetMyTrades if market["type"] == "spot" else ex.fapiPrivateGetUserTrades
    return _raw_page_call(method, market, "fromId", "id")


def _raw_fill_row(ex: Any, account: str, symbol: str, market_id: str, t: Mapping, contract_size: float) -> tuple:
    """(fill id, ...) of one raw Binance trade row, checked as :func:`_fill_row` checks ccxt's.

    Side as ccxt reads it: ``isBuyer`` (spot), else ``side`` (USD-M); fee only when a commission is
    given, its currency through ccxt's currency codes."""
    if not isinstance(t, Mapping):
        raise _Malformed(f"a fill is {type(t).__name__}, not an object")
    if t.get("symbol") != market_id:
        raise _Malformed(f"fill {t.get('id')!r} is for {t.get('symbol')!r}, asked for {symbol}")
    if "isBuyer" in t:
        side = "buy" if t["isBuyer"] else "sell"
    else:
        side = str(t.get("side") or "").lower()
    if side not in ("buy", "sell"):
        raise _Malformed(f"fill {t.get('id')!r} has side {side!r}")
    amount = _num(t, "qty", "fill")
    price = _num(t, "price", "fill")
    if amount <= 0 or price <= 0:
        raise _Malformed(f"fill {t.get('id')!r} has amount {amount} / price {price}")
    commission = t.get("commission")
    cost = _num(t, "commission", "fill fee", allow_none=True)
    currency = ex.safe_currency_code(t.get("commissionAsset")) if commission is not None else None
    return (account, str(_req(t, "id", "fill")), str(_req(t, "orderId", "fill")), symbol, side,
            amount * contract_size, price, cost, currency, int(_req(t, "time", "fill")))


# --- orders --------------------------------------------------------------------------------------------


def _order_row(account: str, o: dict, contract_size: float) -> dict:
    status = _req(o, "status", "order")
    if status not in ("open", "closed", "canceled", "expired", "rejected"):
        raise _Malformed(f"order {o.get('id')!r} has status {status!r}")
    side = _req(o, "side", "order")
    if side not in ("buy", "sell"):
        raise _Malformed(f"order {o.get('id')!r} has side {side!r}")
    filled = _num(o, "filled", "order")
    price = _num(o, "price", "order", allow_none=True)
    order_type = str(_req(o, "type", "order"))
    if order_type == "market" or price == 0:
        price = math.nan
    average = _num(o, "average", "order", allow_none=True) if filled > 0 else math.nan
    created = int(_req(o, "timestamp", "order"))
    updated = o.get("lastUpdateTimestamp") or o.get("lastTradeTimestamp") or created
    return {
        "account": account, "exchange_order_id": str(_req(o, "id", "order")),
        "client_order_id": o.get("clientOrderId") or None, "symbol": _req(o, "symbol", "order"),
        "side": side, "order_type": order_type, "qty": _num(o, "amount", "order") * contract_size,
        "price": price, "filled_qty": filled * contract_size, "avg_fill_price": average, "status": status,
        "created_ts": created, "updated_ts": int(updated),  # ms; made timestamps once per frame
    }


def _raw_orders_call(ex: Any, market: Mapping) -> Callable[..., list]:
    """Binance's own ``allOrders`` rows, paged like ``fetch_orders``; :func:`_unified_order` reads them
    (ccxt's ``parse_order`` + ``safe_order`` cost ~130 us an order)."""
    method = ex.privateGetAllOrders if market["type"] == "spot" else ex.fapiPrivateGetAllOrders
    return _raw_page_call(method, market, "orderId", "orderId")


def _decimal_sign(text: str) -> int:
    """-1, 0 or 1 for a decimal string as ``Precise`` compares it with "0" (a float is exact enough for
    a sign: Binance sends plain decimals, never ones so small they round to zero), ~30x cheaper. Not a
    number: 1, so the value is kept and :func:`_order_row` reports it as malformed."""
    try:
        number = float(text)
    except (TypeError, ValueError):
        return 1
    if number != number:  # NaN: kept, reported as non-finite
        return 1
    return (number > 0) - (number < 0)


def _unified_order(ex: Any, market: Mapping, o: Mapping) -> dict:
    """The fields :func:`_order_row` reads, with the values ccxt's ``parse_order`` / ``safe_order`` give
    (its own status and type maps, ``omit_zero``, and the average as ccxt's decimal-string division of
    the quote cost by the filled qty when Binance sends no ``avgPrice``)."""
    if not isinstance(o, Mapping):
        raise _Malformed(f"an order is {type(o).__name__}, not an object")
    if o.get("symbol") != market["id"]:
        raise _Malformed(f"order {o.get('orderId')!r} is for {o.get('symbol')!r}, asked for {market['symbol']}")

    def text(key: str) -> str | None:
        value = o.get(key)
        return None if value is None or value == "" else str(value)

    def omit_zero(value: str | None) -> str | None:
        return None if value is None or _decimal_sign(value) == 0 else value

    market_type = "contract" if ("positionSide" in o or "cumQuote" in o) else "spot"
    status = ex.parse_order_status(text("status"))
    raw_type = text("type")
    order_type = ex.parse_order_type_by_market(raw_type.lower() if raw_type else None, market_type)
    filled = text("executedQty") or "0"
    amount = omit_zero(text("origQty"))
    if amount is None and status == "closed":
        amount = filled
    cost = text("cummulativeQuoteQty") or text("cumQuote")
    average = omit_zero(text("avgPrice"))
    if average is None and cost is not None and _decimal_sign(filled) > 0:
        size = ex.number_to_string(market.get("contractSize") or 1)
        average = Precise.string_div(cost, Precise.string_mul(filled, size))
    price = omit_zero(text("price"))
    if price is None and order_type == "market":
        price = average
    created = o.get("time")
    updated = o.get("updateTime")
    last_trade = updated if (status == "closed" or (status == "open" and _decimal_sign(filled) > 0)) else None
    side = text("side")
    return {
        "id": text("orderId"), "clientOrderId": text("clientOrderId"), "symbol": market["symbol"],
        "status": status, "side": side.lower() if side else None, "type": order_type,
        "amount": None if amount is None else float(amount), "filled": float(filled),
        "price": None if price is None else float(price), "average": None if average is None else float(average),
        "timestamp": created, "lastUpdateTimestamp": updated, "lastTradeTimestamp": last_trade,
    }


def fetch_orders(ex: Any, account: str, symbols: Iterable[str], since: pd.Timestamp, until: pd.Timestamp,
                 lookup_ids: Mapping[str, list[str]] | None = None, *, fills: pd.DataFrame | None = None,
                 lookup_delay_s: float = 0.0) -> pd.DataFrame:
    """EXCHANGE_ORDERS: created in ``[since, until]`` per symbol (paged), every open order of the
    symbols, and each id of ``lookup_ids`` (symbol -> exchange order ids) or referenced by ``fills``
    that is not already known, fetched one by one (throttled by the client's rate limiter: ccxt
    spaces ``GET /api/v3/order`` by its weight; ``lookup_delay_s`` adds a pause of our own).

    An id the exchange does not know (-2013, ccxt OrderNotFound) is absent from the frame (the caller
    reports ORDER_NOT_FOUND); any other error raises. One row per (symbol, order id), the latest update.
    """
    lo, hi = _ms(since), _ms(until) + 1
    symbols = sorted(set(symbols) | set(lookup_ids or {}))
    wanted: dict[str, set[str]] = {s: {str(i) for i in ids} for s, ids in (lookup_ids or {}).items()}
    if fills is not None and len(fills):
        for sym, oid in zip(fills["symbol"], fills["exchange_order_id"], strict=True):
            wanted.setdefault(str(sym), set()).add(str(oid))
            if str(sym) not in symbols:
                symbols.append(str(sym))
    rows: list[dict] = []
    for symbol in sorted(symbols):
        rows.extend(symbol_orders(ex, account, symbol, lo, hi, wanted.get(symbol, ()), lookup_delay_s=lookup_delay_s))
    return orders_frame(rows)


def orders_frame(rows: list[dict]) -> pd.DataFrame:
    rows = sorted(rows, key=lambda r: (r["symbol"], r["created_ts"], r["exchange_order_id"]))
    return _frame(rows, schemas.EXCHANGE_ORDERS, "exchange_orders", ms_columns=("created_ts", "updated_ts"))


def symbol_span_orders(ex: Any, account: str, symbol: str, lo: int, hi: int) -> list[dict]:
    """Order rows of one symbol created in ``[lo, hi)`` ms (``allOrders``, paged)."""
    market, width, cs = _symbol_market(ex, account, symbol, "fetch_orders")
    rows = []
    for a, b in _chunks(lo, hi, width):
        with _guard(ex, account, _ENDPOINTS["orders", market["type"]], symbol=symbol, window=(_ts(a), _ts(b))):
            for o in _page_window(ex, _raw_orders_call(ex, market), symbol, a, b, "orderId"):
                rows.append(_order_row(account, _unified_order(ex, market, o), cs))
    return rows


def symbol_orders(ex: Any, account: str, symbol: str, lo: int, hi: int, wanted: Iterable[str] = (), *,
                  known: Iterable[dict] = (), lookup_delay_s: float = 0.0) -> list[dict]:
    """Order rows of one symbol: created in ``[lo, hi)`` (paged; nothing when ``lo >= hi``), ``known``
    rows (created in a span fetched earlier, see ``read_ahead``), every open order, each ``wanted`` id
    not among them, one row per id with the latest update.

    A known row still ``open`` when it was fetched may have changed since: unless the open list has
    it, it is fetched again by id, so the rows are as of now, as if every one had just been paged
    (a closed, canceled, expired or rejected order does not change).
    """
    market, _, cs = _symbol_market(ex, account, symbol, "fetch_orders")
    mtype = market["type"]
    best: dict[str, dict] = {}

    def keep(row: dict) -> None:
        oid = row["exchange_order_id"]
        if oid not in best or row["updated_ts"] >= best[oid]["updated_ts"]:
            best[oid] = row

    for row in known:
        keep(dict(row))
    stale = {oid for oid, row in best.items() if row["status"] == "open"}
    if lo < hi:
        for row in symbol_span_orders(ex, account, symbol, lo, hi):
            keep(row)
    with _guard(ex, account, _ENDPOINTS["open", mtype], symbol=symbol):
        opened = ex.fetch_open_orders(symbol)
        if not isinstance(opened, list):
            raise _Malformed(f"open orders is {type(opened).__name__}")
        for o in opened:
            row = _order_row(account, o, cs)
            keep(row)
            stale.discard(row["exchange_order_id"])
    refetch = stale | {str(i) for i in wanted if str(i) not in best}
    for oid in sorted(refetch, key=lambda i: (len(i), i)):
        with _guard(ex, account, _ENDPOINTS["order", mtype], symbol=symbol):
            if lookup_delay_s > 0:
                time.sleep(lookup_delay_s)
            try:
                o = ex.fetch_order(oid, symbol)
            except ccxt.OrderNotFound:
                if oid in stale:  # it was listed a moment ago: gone now is an answer we cannot trust
                    raise _Malformed(f"order {oid} was listed by allOrders but is now unknown") from None
                continue
            keep(_order_row(account, o, cs))
    return list(best.values())


# --- fills and orders of many symbols, in parallel ---------------------------------------------------


def share_markets(clients: Sequence[Any]) -> None:
    """Give every client the markets the first one loaded (ccxt's ``set_markets_from_exchange``: the
    same dicts, no second ``exchangeInfo`` request)."""
    primary = clients[0]
    for other in clients[1:]:
        if other.markets is None and primary.markets is not None:
            other.set_markets_from_exchange(primary)


def fetch_activity(clients: Sequence[Any], account: str, symbols: Iterable[str], since: pd.Timestamp,
                   until: pd.Timestamp, lookup_ids: Mapping[str, list[str]] | None = None, *,
                   read_ahead: Mapping[str, Any] | None = None,
                   settled: dict[str, Span] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(EXCHANGE_FILLS, EXCHANGE_ORDERS) of ``symbols``: exactly :func:`fetch_fills` followed by
    :func:`fetch_orders` with ``fills=`` the fills, done per symbol, the symbols spread over
    ``clients`` (each client serves one symbol at a time: ccxt clients are not thread-safe).

    Why per symbol: a symbol's orders depend only on its own fills (the orders they point to), and
    most of a snapshot is waiting for the exchange to answer; with several requests in flight the
    exchange works while this process parses the previous answer. The fills-before-orders order that
    loses nothing holds per symbol. The frames equal the serial ones (same rows, same order).

    ``read_ahead``: symbol -> a span fetched earlier (:class:`recon_pipeline.exchange.read_ahead.Span`)
    ending exactly at ``until``; only the part of ``[since, until)`` before it is paged now (none if the
    span reaches back further: its rows before ``since`` are left out), its open orders are asked
    again (see :func:`symbol_orders`).

    ``settled``: when given, filled with symbol -> the :class:`Span` ``[since, until)`` of each fills
    symbol: its fills in it and the orders created in ``[since, until]``, as of now,
    for a later window's read-ahead to reuse (``read_ahead.ReadAhead.keep``; the caller keeps them
    only when ``until`` had passed on the exchange's clock).

    Complete or an error, as everywhere here: when symbols fail, nothing is returned, and the error
    raised is that of the first failed symbol in sorted order (as the serial fetch would raise);
    symbols not started yet are skipped.
    """
    fill_symbols = set(symbols)
    lookup = {str(k): list(v) for k, v in (lookup_ids or {}).items()}
    todo = sorted(fill_symbols | set(lookup))
    lo, hi = _ms(since), _ms(until)
    spans = {sym: span for sym, span in (read_ahead or {}).items() if span.hi == hi}
    if not todo:
        return schemas.empty(schemas.EXCHANGE_FILLS), schemas.empty(schemas.EXCHANGE_ORDERS)
    share_markets(clients)

    def one(ex: Any, symbol: str) -> tuple[list[tuple], list[dict]]:
        span = spans.get(symbol) if symbol in fill_symbols else None
        cut = max(span.lo, lo) if span is not None else hi  # [lo, cut) is paged now, [cut, hi) was read ahead
        fills = symbol_fill_rows(ex, account, symbol, lo, cut) if symbol in fill_symbols else []
        known: list[dict] = []
        if span is not None:  # a span reaching back past since: its rows before since are not asked for
            fills = fills + [r for r in span.fills if r[9] >= lo]
            known = [o for o in span.orders if o["created_ts"] >= lo]
        wanted = set(lookup.get(symbol, ())) | {r[2] for r in fills}
        # orders are created in [lo, until] (inclusive): the span read ahead holds [cut, hi]
        orders = symbol_orders(ex, account, symbol, lo, cut if span is not None else hi + 1, wanted, known=known)
        if settled is not None and symbol in fill_symbols:
            settled[symbol] = Span(symbol, lo, hi, tuple(fills), tuple(o for o in orders if lo <= o["created_ts"] <= hi))
        return fills, orders

    parts = per_symbol_in_parallel(clients, todo, one)
    return (fills_frame([r for f, _ in parts for r in f]),
            orders_frame([r for _, o in parts for r in o]))


def per_symbol_in_parallel(clients: Sequence[Any], symbols: list[str],
                            work: Callable[[Any, str], tuple]) -> list:
    """``work(client, symbol)`` for each symbol, at most one symbol per client at a time; results in
    ``symbols`` order. Once a symbol has failed no other symbol starts (the ones running finish their
    own bounded retries), and the error raised is that of the first failed symbol in ``symbols`` order.
    With one client or one symbol it all runs here, one symbol after the other."""
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    if len(clients) == 1 or len(symbols) <= 1:
        return [work(clients[0], symbol) for symbol in symbols]

    free: queue.SimpleQueue = queue.SimpleQueue()
    for client in clients:
        free.put(client)
    failed = threading.Event()

    def task(symbol: str):
        if failed.is_set():
            return _NOT_STARTED
        client = free.get()
        try:
            return work(client, symbol)
        except BaseException:
            failed.set()
            raise
        finally:
            free.put(client)

    pool = ThreadPoolExecutor(max_workers=min(len(clients), len(symbols)), thread_name_prefix="recon-fetch")
    try:
        futures = [pool.submit(task, symbol) for symbol in symbols]
    finally:  # waits for the running symbols
        pool.shutdown(wait=True)
    for future in futures:
        if future.exception() is not None:
            raise future.exception()
    return [future.result() for future in futures]


_NOT_STARTED = object()  # a symbol skipped after another one failed (only ever seen with an error raised)


# --- positions and balances ----------------------------------------------------------------------------


def fetch_positions_frame(ex: Any, account: str, market_types: set[str],
                          swap_symbols: Iterable[str] | None = None) -> pd.DataFrame:
    """EXCHANGE_POSITIONS: swap positions (signed qty = contracts x contractSize, short < 0;
    position_side long/short in hedge mode, both one-way) and spot balances (one row per asset with a
    non-zero total = free + used).

    ccxt omits flat swap positions and Binance zero balances: a missing row means zero, which is only
    true because the call succeeded; every failure raises.
    """
    rows: list[dict] = []
    if "swap" in market_types:
        syms = sorted(set(swap_symbols or ()))
        with _guard(ex, account, _ENDPOINTS["positions", "swap"]):
            positions = ex.fetch_positions(syms or None)
            if not isinstance(positions, list):
                raise _Malformed(f"positions is {type(positions).__name__}")
            for p in positions:
                rows.append(_position_row(ex, account, p))
    if "spot" in market_types:
        with _guard(ex, account, _ENDPOINTS["balance", "spot"]):
            balance = ex.fetch_balance()
            info = balance.get("info") if isinstance(balance, dict) else None
            if not isinstance(info, dict) or not isinstance(info.get("balances"), list):
                raise _Malformed("spot account answer has no 'balances' list")
            for entry in info["balances"]:
                asset = _req(entry, "asset", "balance")
                total = _num(entry, "free", f"balance {asset}") + _num(entry, "locked", f"balance {asset}")
                if total != 0:
                    rows.append({"account": account, "market_type": "spot", "instrument": ex.safe_currency_code(asset),
                                 "position_side": "both", "qty": total, "entry_price": math.nan})
    return _frame(rows, schemas.EXCHANGE_POSITIONS, "exchange_positions")


def _position_row(ex: Any, account: str, p: dict) -> dict:
    symbol = _req(p, "symbol", "position")
    side = _req(p, "side", f"position {symbol}")
    if side not in ("long", "short"):
        raise _Malformed(f"position {symbol} has side {side!r}")
    contracts = _num(p, "contracts", f"position {symbol}")
    contract_size = _num(p, "contractSize", f"position {symbol}", allow_none=True)
    if math.isnan(contract_size):
        contract_size = float(ex.markets[symbol].get("contractSize") or 1.0)
    raw_side = str((p.get("info") or {}).get("positionSide") or "").lower()
    position_side = raw_side if raw_side in ("long", "short", "both") else ("both" if not p.get("hedged") else side)
    qty = abs(contracts) * contract_size
    return {"account": account, "market_type": "swap", "instrument": symbol, "position_side": position_side,
            "qty": -qty if side == "short" else qty,
            "entry_price": _num(p, "entryPrice", f"position {symbol}", allow_none=True)}
