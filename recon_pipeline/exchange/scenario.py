"""The scenario file: the exchange state the loopback emulator serves (DESIGN section 9).

A scenario is what an operator exports from the real exchange to reproduce an incident, so the loader
accepts ccxt's unified structures as ccxt printed them: timestamps as integer milliseconds or ISO-8601
strings, extra fields (``info``, ``datetime``, ``cost``...) ignored. It is strict about what the emulator
needs to answer like Binance, because a scenario that silently loses a fill reproduces nothing:

- every order and trade names a market the account lists;
- order and trade ids are integers (Binance's ``orderId`` / trade ``id`` are); per symbol, trade ids
  increase with time as Binance assigns them (paging by id inside one millisecond relies on it).
  Hand-written order ids need not follow creation time: the emulator serves orders in (time, id)
  order, which is Binance's id order for real data;
- a problem is a :class:`ScenarioError` naming the source, the account and the field.

The loaded state is plain mutable dataclasses: tests replace the scenario or move the clock between
runs through :class:`~recon_pipeline.exchange.emulator.EmulatorServer`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FAULT_MODES = (
    "http_429", "http_418", "http_500", "http_502", "http_503", "timeout", "reset", "malformed", "html",
)
ORDER_STATUSES = ("open", "closed", "canceled", "expired", "rejected")


class ScenarioError(ValueError):
    """The scenario cannot be served; the message names the source, account and field."""


@dataclass
class Market:
    """One tradable market. Spot ``BTC/USDT`` and swap ``BTC/USDT:USDT`` share the id ``BTCUSDT``."""

    symbol: str
    type: str                 # spot | swap
    base: str
    quote: str
    settle: str | None
    amount_step: float
    price_step: float
    contract_size: float = 1.0

    @property
    def market_id(self) -> str:
        return f"{self.base}{self.quote}"


@dataclass
class Order:
    id: int
    client_order_id: str | None
    symbol: str
    side: str                 # buy | sell
    type: str                 # limit | market | ...
    amount: float
    price: float | None
    filled: float
    average: float | None
    status: str               # ccxt unified status
    timestamp: int            # creation, ms
    last_update_timestamp: int
    reduce_only: bool = False
    position_side: str = "BOTH"


@dataclass
class Trade:
    id: int
    order: int
    symbol: str
    side: str
    amount: float             # ccxt amount: base qty on spot, contracts on swap
    price: float
    fee_cost: float | None
    fee_currency: str | None
    timestamp: int
    taker_or_maker: str = "taker"
    position_side: str = "BOTH"


@dataclass
class Position:
    symbol: str
    contracts: float          # unsigned, as ccxt gives it
    side: str                 # long | short
    entry_price: float
    mark_price: float | None
    position_side: str        # LONG | SHORT (hedge mode) | BOTH (one-way)
    timestamp: int | None = None


@dataclass
class Balance:
    free: float
    used: float


@dataclass
class Account:
    name: str
    api_key: str
    secret: str = field(repr=False)
    markets: dict[str, Market] = field(default_factory=dict)
    orders: list[Order] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    balances: dict[str, Balance] = field(default_factory=dict)
    mark_prices: dict[str, float] = field(default_factory=dict)


@dataclass
class Fault:
    """Fail the matching requests ``after+1 .. after+times`` (``times=None``: all after ``after``).

    ``account=None`` matches every caller, including unsigned public requests (which carry no API key).
    ``path`` is the request path (``/fapi/v1/userTrades``); a trailing ``*`` matches a prefix.
    """

    path: str
    mode: str
    account: str | None = None
    after: int = 0
    times: int | None = None
    seen: int = 0             # matching requests so far (mutated by the emulator)

    def matches(self, account: str | None, path: str) -> bool:
        if self.account is not None and self.account != account:
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path

    def fires(self) -> bool:
        """Count one matching request; True when this one must fail."""
        self.seen += 1
        if self.seen <= self.after:
            return False
        return self.times is None or self.seen <= self.after + self.times


@dataclass
class Scenario:
    clock_ms: int
    accounts: dict[str, Account]
    faults: list[Fault] = field(default_factory=list)
    source: str = "<dict>"

    def account_by_key(self, api_key: str | None) -> Account | None:
        if not api_key:
            return None
        for account in self.accounts.values():
            if account.api_key == api_key:
                return account
        return None


# --- parsing ---------------------------------------------------------------------------------------


class _Ctx:
    """Where we are in the file, so every error names it."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, msg: str) -> ScenarioError:
        return ScenarioError(f"scenario {self.source}: {where}: {msg}")


def parse_timestamp(value: Any) -> int:
    """Integer ms (ccxt) or an ISO-8601 string (naive means UTC) -> epoch ms. ValueError otherwise."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a timestamp")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not a timestamp in ms")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return parse_timestamp(int(text))
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not ISO-8601 or integer milliseconds") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(round(parsed.timestamp() * 1000))
    raise ValueError(f"{value!r} is not a timestamp")


def _ts(ctx: _Ctx, where: str, obj: dict, key: str, default: Any = ...) -> int:
    if key not in obj or obj[key] is None:
        if default is ...:
            raise ctx.fail(where, f"missing field {key!r}")
        return default
    try:
        return parse_timestamp(obj[key])
    except ValueError as exc:
        raise ctx.fail(where, f"field {key!r}: {exc}") from None


def _num(ctx: _Ctx, where: str, obj: dict, key: str, default: Any = ..., *, positive: bool = False):
    value = obj.get(key)
    if value is None:
        if default is ...:
            raise ctx.fail(where, f"missing field {key!r}")
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ctx.fail(where, f"field {key!r}={value!r} is not a number") from None
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ctx.fail(where, f"field {key!r}={value!r} must be a finite {'positive' if positive else 'non-negative'} number")
    return number


def _int_id(ctx: _Ctx, where: str, obj: dict, key: str) -> int:
    value = obj.get(key)
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        return int(str(value))
    except ValueError:
        raise ctx.fail(where, f"field {key!r}={value!r} must be an integer id (Binance ids are integers)") from None


def _str(ctx: _Ctx, where: str, obj: dict, key: str, choices: tuple[str, ...] | None = None,
         default: Any = ...) -> str:
    value = obj.get(key)
    if value is None or value == "":
        if default is ...:
            raise ctx.fail(where, f"missing field {key!r}")
        return default
    if not isinstance(value, str):
        raise ctx.fail(where, f"field {key!r}={value!r} must be a string")
    if choices is not None and value not in choices:
        raise ctx.fail(where, f"field {key!r}={value!r} must be one of {list(choices)}")
    return value


def _market(ctx: _Ctx, where: str, raw: Any) -> Market:
    if not isinstance(raw, dict):
        raise ctx.fail(where, "a market must be an object")
    symbol = _str(ctx, where, raw, "symbol")
    head, _, settle = symbol.partition(":")
    base, slash, quote = head.partition("/")
    if not slash or not base or not quote or (":" in symbol and not settle):
        raise ctx.fail(where, f"field 'symbol'={symbol!r} is not a ccxt unified symbol (BTC/USDT, BTC/USDT:USDT)")
    mtype = _str(ctx, where, raw, "type", ("spot", "swap"), default="swap" if settle else "spot")
    if (mtype == "swap") != bool(settle):
        raise ctx.fail(where, f"field 'type'={mtype!r} does not fit symbol {symbol!r}")
    if mtype == "swap" and settle != quote:
        raise ctx.fail(where, f"symbol {symbol!r}: only linear (USD-M) swaps are served")
    precision = raw.get("precision") or {}
    if not isinstance(precision, dict):
        raise ctx.fail(where, "field 'precision' must be an object")
    return Market(
        symbol=symbol, type=mtype, base=base, quote=quote, settle=settle or None,
        amount_step=_num(ctx, f"{where}.precision", precision, "amount", 1e-8, positive=True),
        price_step=_num(ctx, f"{where}.precision", precision, "price", 1e-8, positive=True),
        contract_size=_num(ctx, where, raw, "contractSize", 1.0, positive=True) if mtype == "swap" else 1.0,
    )


def _order(ctx: _Ctx, where: str, raw: Any, markets: dict[str, Market]) -> Order:
    if not isinstance(raw, dict):
        raise ctx.fail(where, "an order must be an object")
    symbol = _str(ctx, where, raw, "symbol")
    if symbol not in markets:
        raise ctx.fail(where, f"field 'symbol'={symbol!r} is not among the account's markets {sorted(markets)}")
    created = _ts(ctx, where, raw, "timestamp")
    amount = _num(ctx, where, raw, "amount", positive=True)
    filled = _num(ctx, where, raw, "filled", 0.0)
    if filled > amount * (1 + 1e-9):
        raise ctx.fail(where, f"field 'filled'={filled} exceeds 'amount'={amount}")
    info = raw.get("info") if isinstance(raw.get("info"), dict) else {}
    position_side = str(raw.get("positionSide") or info.get("positionSide") or "BOTH").upper()
    return Order(
        id=_int_id(ctx, where, raw, "id"),
        client_order_id=_str(ctx, where, raw, "clientOrderId", default=None),
        symbol=symbol,
        side=_str(ctx, where, raw, "side", ("buy", "sell")),
        type=_str(ctx, where, raw, "type", default="limit"),
        amount=amount,
        price=_num(ctx, where, raw, "price", None),
        filled=filled,
        average=_num(ctx, where, raw, "average", None),
        status=_str(ctx, where, raw, "status", ORDER_STATUSES),
        timestamp=created,
        last_update_timestamp=max(created, _ts(ctx, where, raw, "lastUpdateTimestamp", created)),
        reduce_only=bool(raw.get("reduceOnly") or False),
        position_side=position_side,
    )


def _trade(ctx: _Ctx, where: str, raw: Any, markets: dict[str, Market]) -> Trade:
    if not isinstance(raw, dict):
        raise ctx.fail(where, "a trade must be an object")
    symbol = _str(ctx, where, raw, "symbol")
    if symbol not in markets:
        raise ctx.fail(where, f"field 'symbol'={symbol!r} is not among the account's markets {sorted(markets)}")
    fee = raw.get("fee")
    if fee is not None and not isinstance(fee, dict):
        raise ctx.fail(where, "field 'fee' must be an object {cost, currency} or null")
    fee = fee or {}
    info = raw.get("info") if isinstance(raw.get("info"), dict) else {}
    return Trade(
        id=_int_id(ctx, where, raw, "id"),
        order=_int_id(ctx, where, raw, "order"),
        symbol=symbol,
        side=_str(ctx, where, raw, "side", ("buy", "sell")),
        amount=_num(ctx, where, raw, "amount", positive=True),
        price=_num(ctx, where, raw, "price", positive=True),
        fee_cost=_num(ctx, f"{where}.fee", fee, "cost", None),
        fee_currency=_str(ctx, f"{where}.fee", fee, "currency", default=None),
        timestamp=_ts(ctx, where, raw, "timestamp"),
        taker_or_maker=_str(ctx, where, raw, "takerOrMaker", ("taker", "maker"), default="taker"),
        position_side=str(raw.get("positionSide") or info.get("positionSide") or "BOTH").upper(),
    )


def _position(ctx: _Ctx, where: str, raw: Any, markets: dict[str, Market]) -> Position:
    if not isinstance(raw, dict):
        raise ctx.fail(where, "a position must be an object")
    symbol = _str(ctx, where, raw, "symbol")
    if markets.get(symbol) is None or markets[symbol].type != "swap":
        raise ctx.fail(where, f"field 'symbol'={symbol!r} is not a swap market of the account")
    side = _str(ctx, where, raw, "side", ("long", "short"))
    info = raw.get("info") if isinstance(raw.get("info"), dict) else {}
    position_side = raw.get("positionSide") or info.get("positionSide")
    if position_side is None:
        position_side = side.upper() if raw.get("hedged") else "BOTH"
    position_side = str(position_side).upper()
    if position_side not in ("LONG", "SHORT", "BOTH"):
        raise ctx.fail(where, f"field 'positionSide'={position_side!r} must be LONG, SHORT or BOTH")
    if position_side != "BOTH" and position_side.lower() != side:
        raise ctx.fail(where, f"positionSide {position_side} contradicts side {side!r}")
    contract_size = raw.get("contractSize")
    if contract_size is not None and float(contract_size) != markets[symbol].contract_size:
        raise ctx.fail(where, f"field 'contractSize'={contract_size} differs from the market's "
                              f"{markets[symbol].contract_size}")
    return Position(
        symbol=symbol,
        contracts=_num(ctx, where, raw, "contracts"),
        side=side,
        entry_price=_num(ctx, where, raw, "entryPrice", positive=True),
        mark_price=_num(ctx, where, raw, "markPrice", None),
        position_side=position_side,
        timestamp=_ts(ctx, where, raw, "timestamp", None),
    )


def _check_ids(ctx: _Ctx, where: str, rows: list[Trade], what: str) -> None:
    """Per symbol, ids are unique and never go back in time (Binance assigns them in time order; the
    fetcher's paging relies on it)."""
    by_symbol: dict[str, list] = {}
    for row in rows:
        by_symbol.setdefault(row.symbol, []).append(row)
    for symbol, group in by_symbol.items():
        group = sorted(group, key=lambda r: r.id)
        for prev, cur in zip(group, group[1:], strict=False):
            if cur.id == prev.id:
                raise ctx.fail(where, f"symbol {symbol}: duplicate {what} id {cur.id}")
            if cur.timestamp < prev.timestamp:
                raise ctx.fail(where, f"symbol {symbol}: {what} id {cur.id} is older than id {prev.id}; "
                                      f"Binance {what} ids increase with time")


def _account(ctx: _Ctx, name: str, raw: Any) -> Account:
    where = f"accounts.{name}"
    if not isinstance(raw, dict):
        raise ctx.fail(where, "an account must be an object")
    api_key = _str(ctx, where, raw, "apiKey")
    secret = _str(ctx, where, raw, "secret")

    def items(key: str, kind: type) -> Any:
        value = raw.get(key)
        if value is None:
            return kind()
        if not isinstance(value, kind):
            raise ctx.fail(where, f"field {key!r} must be a{'n object' if kind is dict else ' list'}")
        return value

    markets: dict[str, Market] = {}
    for i, m in enumerate(items("markets", list)):
        market = _market(ctx, f"{where}.markets[{i}]", m)
        if market.symbol in markets:
            raise ctx.fail(f"{where}.markets[{i}]", f"duplicate market {market.symbol}")
        markets[market.symbol] = market
    orders = [_order(ctx, f"{where}.orders[{i}]", o, markets) for i, o in enumerate(items("orders", list))]
    seen: set[tuple[str, int]] = set()
    for i, order in enumerate(orders):
        if (order.symbol, order.id) in seen:
            raise ctx.fail(f"{where}.orders[{i}]", f"duplicate order id {order.id} in {order.symbol}")
        seen.add((order.symbol, order.id))
    trades = [_trade(ctx, f"{where}.trades[{i}]", t, markets) for i, t in enumerate(items("trades", list))]
    _check_ids(ctx, f"{where}.trades", trades, "trade")
    positions = [_position(ctx, f"{where}.positions[{i}]", p, markets)
                 for i, p in enumerate(items("positions", list))]
    balances = {}
    for asset, bal in items("balances", dict).items():
        if not isinstance(bal, dict):
            raise ctx.fail(f"{where}.balances.{asset}", "must be an object {free, used}")
        balances[str(asset)] = Balance(
            free=_num(ctx, f"{where}.balances.{asset}", bal, "free", 0.0),
            used=_num(ctx, f"{where}.balances.{asset}", bal, "used", 0.0),
        )
    mark_prices = {}
    for symbol, price in items("markPrices", dict).items():
        if symbol not in markets:
            raise ctx.fail(f"{where}.markPrices", f"symbol {symbol!r} is not among the account's markets")
        mark_prices[symbol] = _num(ctx, f"{where}.markPrices", {symbol: price}, symbol, positive=True)
    return Account(name=name, api_key=api_key, secret=secret, markets=markets, orders=orders, trades=trades,
                   positions=positions, balances=balances, mark_prices=mark_prices)


def parse_fault(raw: Any, *, where: str = "faults", source: str = "<dict>") -> Fault:
    """One fault entry (also used by ``EmulatorServer.add_fault``)."""
    ctx = _Ctx(source)
    if not isinstance(raw, dict):
        raise ctx.fail(where, "a fault must be an object")
    path = _str(ctx, where, raw, "path")
    if not path.startswith("/"):
        raise ctx.fail(where, f"field 'path'={path!r} must be a request path like /api/v3/myTrades")
    times = raw.get("times")
    return Fault(
        path=path,
        mode=_str(ctx, where, raw, "mode", FAULT_MODES),
        account=_str(ctx, where, raw, "account", default=None),
        after=int(_num(ctx, where, raw, "after", 0)),
        times=None if times is None else int(_num(ctx, where, raw, "times")),
    )


def load_scenario(source: str | Path | dict) -> Scenario:
    """Parse a scenario from a path (str or Path) or an already-decoded dict."""
    if isinstance(source, dict):
        label, data = "<dict>", source
    else:
        label = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"scenario {label}: cannot read: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"scenario {label}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    ctx = _Ctx(label)
    if not isinstance(data, dict):
        raise ctx.fail("top level", "must be an object with 'clock' and 'accounts'")
    if data.get("clock") is None:
        raise ctx.fail("top level", "missing field 'clock' (the exchange's 'now')")
    clock_ms = _ts(ctx, "top level", data, "clock")
    raw_accounts = data.get("accounts")
    if not isinstance(raw_accounts, dict) or not raw_accounts:
        raise ctx.fail("top level", "field 'accounts' must be a non-empty object")
    accounts = {str(name): _account(ctx, str(name), raw) for name, raw in raw_accounts.items()}
    keys: dict[str, str] = {}
    for account in accounts.values():
        if account.api_key in keys:
            raise ctx.fail(f"accounts.{account.name}", f"apiKey is also used by account {keys[account.api_key]!r}")
        keys[account.api_key] = account.name
    raw_faults = data.get("faults") or []
    if not isinstance(raw_faults, list):
        raise ctx.fail("top level", "field 'faults' must be a list")
    faults = [parse_fault(f, where=f"faults[{i}]", source=label) for i, f in enumerate(raw_faults)]
    for i, fault in enumerate(faults):
        if fault.account is not None and fault.account not in accounts:
            raise ctx.fail(f"faults[{i}]", f"field 'account'={fault.account!r} is not an account of the scenario")
    return Scenario(clock_ms=clock_ms, accounts=accounts, faults=faults, source=label)
