"""The soak run's world: a seeded trading system and exchange that evolve hour by hour (issue 7).

:class:`SoakWorld` plays both sides of the reconciliation for ``HOURS`` consecutive hourly windows:

* **the exchange** (a list of orders and fills per account, turned into an emulator scenario each
  hour; swap positions and spot balances are recomputed from the fills, since the emulator serves
  them statically);
* **the trading system** (it writes ``orders``, ``trade_history``, ``positions`` and
  ``capital_ledger`` rows into the trading database as it trades: entry orders and fills open slices,
  exit orders close them, resting entry orders are filled or cancelled, partial exits complete later);
* **the drift** it injects with some (seeded) probability, one :class:`Drift` ledger entry per
  injection with the outcome DESIGN.md prescribes for it (see ``KINDS``);
* **the oracle** (:meth:`SoakWorld.model_run`): a small model of what the trading tables must look
  like after each (window, profile) run, derived from DESIGN.md sections 3-5, not from the rules'
  code: the corrections each drift calls for, the parity heartbeat on the model's own slices (per
  account and instrument: exchange qty vs the signed remaining qty of the OPEN slices of every
  profile, "effectively zero", 3 confirmations, SYNTHETIC_EXIT vs QUARANTINE), and the integrity
  watchdog (pause above half the allocated capital, auto-resume after 15 minutes, 2 clean checks and
  the cooldown).

Lanes keep the injected outcomes deterministic (see ``MARKETS``): ghosts need an instrument the
exchange holds flat, and drift that leaves a permanent exchange/DB difference (over-fill, late fill,
DB ahead, a partial untied close) would turn every later ghost on its instrument into a QTY_MISMATCH,
so those live on their own instrument (XRP, profile beta only: its checks are unclean from then on,
which is why the big watchdog ghost is alpha's). Everything else trades on the normal lanes.

Time: hour ``h`` is the window ``[T0 + h, T0 + h + 1h)``; the trading system acts between minute 1
and minute 58 of it; the live run of the window happens at minute 65 (the hourly schedule's "five
past"), with the exchange clock there. A long-held "core" slice per account, opened before ``T0``,
keeps the fill span of every run starting before ``T0`` (the oldest OPEN slice's entry minus grace),
so every fill ever made stays evidence, as in a real account with a long-held position.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from recon_pipeline.rules.client_order_id import encode

T0 = pd.Timestamp("2026-11-20T00:00:00Z")
HOUR = pd.Timedelta(hours=1)
HOURS = 48
QUIET_HOURS = 4          # no new drift in the last hours: every ghost is resolved before the final check
RUN_OFFSET = pd.Timedelta(minutes=65)  # the live run of window W happens at W + 1h + 5 min
CONFIRMATIONS = 3        # RECON_POSITION_PARITY_CONFIRMATIONS default
MAX_NOTIONAL_PCT = 0.5   # RECON_POSITION_PARITY_MAX_NOTIONAL_PCT default
DUST_USD = 1.0           # RECON_POSITION_PARITY_DUST_USD default
MIN_PAUSE = pd.Timedelta(milliseconds=900_000)
COOLDOWN = pd.Timedelta(milliseconds=1_800_000)
CLEAN_CYCLES = 2
GRACE = pd.Timedelta(minutes=5)
EPS = 1e-9


def ms(ts: pd.Timestamp) -> int:
    return int(pd.Timestamp(ts).value // 1_000_000)


def ts_ms(value: int) -> pd.Timestamp:
    return pd.Timestamp(value, unit="ms", tz="UTC")


def window(hour: int) -> pd.Timestamp:
    return T0 + hour * HOUR


def run_clock(hour: int) -> pd.Timestamp:
    return window(hour) + RUN_OFFSET


@dataclass(frozen=True)
class MarketSpec:
    symbol: str
    account: str
    type: str           # spot | swap
    u: float            # amount precision (one unit)
    price_step: float
    start_price: float
    lane: str           # normal | ghost | quarantine | poison
    lot: tuple[int, int]  # order size range, in units

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def instrument(self) -> str:
        """Parity's key: the symbol on swap, the base asset on spot (DESIGN 4.4)."""
        return self.symbol if self.type == "swap" else self.base


MARKETS = {m.symbol: m for m in (
    MarketSpec("BTC/USDT:USDT", "main", "swap", 0.001, 0.1, 60000.0, "normal", (2, 20)),
    MarketSpec("ETH/USDT:USDT", "main", "swap", 0.01, 0.01, 3000.0, "normal", (2, 30)),
    MarketSpec("SOL/USDT:USDT", "main", "swap", 0.1, 0.01, 150.0, "ghost", (10, 50)),
    MarketSpec("DOGE/USDT:USDT", "main", "swap", 1.0, 0.00001, 0.38, "quarantine", (100, 2000)),
    MarketSpec("XRP/USDT:USDT", "main", "swap", 0.1, 0.0001, 0.6, "poison", (20, 200)),
    MarketSpec("BTC/USDT", "spot", "spot", 0.00001, 0.01, 60000.0, "normal", (200, 2000)),
    MarketSpec("ETH/USDT", "spot", "spot", 0.0001, 0.01, 3000.0, "normal", (100, 2000)),
    MarketSpec("SOL/USDT", "spot", "spot", 0.01, 0.01, 150.0, "ghost", (100, 500)),
    MarketSpec("DOGE/USDT", "spot", "spot", 1.0, 0.00001, 0.38, "quarantine", (100, 2000)),
)}
ACCOUNTS = ("main", "spot")


@dataclass(frozen=True)
class ProfileSpec:
    profile_id: str
    account: str
    market_type: str
    sub_tag: str
    capital: float
    normal: tuple[str, ...]
    ghost: str
    quarantine: str
    poison: str | None
    prefix: str


PROFILES = (
    # alpha and beta share the swap account "main": parity nets their slices against one position.
    ProfileSpec("alpha", "main", "swap", "alp", 20000.0, ("BTC/USDT:USDT", "ETH/USDT:USDT"),
                "SOL/USDT:USDT", "DOGE/USDT:USDT", None, "A"),
    ProfileSpec("beta", "main", "swap", "bet", 20000.0, ("BTC/USDT:USDT", "ETH/USDT:USDT"),
                "SOL/USDT:USDT", "DOGE/USDT:USDT", "XRP/USDT:USDT", "B"),
    ProfileSpec("gamma", "spot", "spot", "gam", 20000.0, ("BTC/USDT", "ETH/USDT"),
                "SOL/USDT", "DOGE/USDT", None, "G"),
)
PROFILE = {p.profile_id: p for p in PROFILES}
ALL = tuple(p.profile_id for p in PROFILES)

# kind -> (eligible profiles, probability per profile-hour, expected outcome per DESIGN.md)
KINDS: dict[str, tuple[tuple[str, ...], float, str]] = {
    "missed_exit": (ALL, 0.10,
                    "exit order filled on the exchange, DB slice and exit order left OPEN: BACKFILL_EXIT "
                    "(CLOSED, VWAP) + EXIT_FILL, each applied once in that window (4.2, 4.3)"),
    "missed_partial_exit": (ALL, 0.06,
                            "exit order partly filled and still open, DB unaware: BACKFILL_EXIT of the filled "
                            "qty, slice stays OPEN; no order correction (open on both sides) (4.3)"),
    "missed_partial_exit_cancel": (ALL, 0.06,
                                   "exit order partly filled then cancelled, DB unaware: CANCEL_ORDER keeping the "
                                   "filled qty + partial BACKFILL_EXIT, slice stays OPEN (4.2, 4.3)"),
    "missed_entry_cancel": (ALL, 0.07,
                            "resting entry order cancelled on the exchange, OPEN in the DB: CANCEL_ORDER (4.2)"),
    "missed_entry_fill": (ALL, 0.07,
                          "resting entry order filled, slice recorded but the order row left OPEN: ENTRY_FILL on "
                          "the order only (4.2)"),
    "unknown_open_order": (ALL, 0.06,
                           "exchange open order unknown to the DB: ORDER_MISSING_IN_DB (account-level, or own "
                           "profile when it carries the sub_tag), never adopted or cancelled (4.2)"),
    "ghost_subtag": (ALL, 0.06,
                     "DB-only OPEN slice with the sub_tag in its entry id, exchange flat: GHOST_SLICE in 3 "
                     "consecutive live checks, then SYNTHETIC_EXIT at mark (4.4)"),
    "ghost_no_subtag": (ALL, 0.05,
                        "DB-only OPEN slice without sub_tag attribution, exchange flat: 3 checks, then QUARANTINE, "
                        "never closed (4.4)"),
    "unattributed_close": (ALL, 0.05,
                           "slice closed on the exchange by an order with no attributable client id: NO_GO "
                           "NO_ATTRIBUTION, never backfilled; the exchange is flat, so a ghost: SYNTHETIC_EXIT "
                           "after 3 checks (NO_ATTRIBUTION is not in 4.4's quarantine list) (3, 4.3, 4.4)"),
    "stale_fill_ghost": (ALL, 0.04,
                         "slice whose exit fill predates its (wrongly recorded) entry time by more than the grace: "
                         "NO_GO STALE_FILL every run; exchange flat, so a ghost with NO_GO exit evidence: "
                         "QUARANTINE after 3 checks (4.3, 4.4)"),
    "big_ghost": (("alpha",), 0.05,
                  "ghost worth more than half the allocated capital: PAUSE_TRADING (parity_watchdog) in its "
                  "first check, SYNTHETIC_EXIT after 3, RESUME_TRADING after 15 min, 2 clean checks and the "
                  "cooldown (4.4, 4.5)"),
    "over_fill": (("beta",), 0.12,
                  "exit order and its re-send both filled, DB unaware: NO_GO OVER_FILL, the slice never touched; "
                  "EXIT_FILL on both order rows; QTY_MISMATCH NO_GO (4.2, 4.3, 4.4)"),
    "late_fill": (("beta",), 0.12,
                  "re-sent exit order filled after the slice was closed, DB unaware: NO_GO LATE_FILL, never "
                  "reopened; QTY_MISMATCH NO_GO (4.3, 4.4)"),
    "db_ahead": (("beta",), 0.10,
                 "DB records a partial exit the exchange never filled: NO_GO DB_AHEAD, no correction; "
                 "QTY_MISMATCH NO_GO (4.3, 4.4)"),
    "partial_untied_close": (("beta",), 0.10,
                             "part of a slice sold by an untied order: NO_GO NO_ATTRIBUTION + QTY_MISMATCH, no slice "
                             "closed on a partial difference (3, 4.4)"),
    "stale_derived": (ALL, 0.05,
                      "positions and capital_ledger rows left wrong by the trading system: POSITION_UPDATE and "
                      "RESERVATION_UPDATE recomputed by the applier in that window (4.6, 5)"),
}
SLICE_CHECK = ("status", "exit_qty", "exit_price", "exit_source")
ORDER_CHECK = ("status", "filled_qty", "avg_fill_price")


@dataclass
class ExOrder:
    id: int
    account: str
    symbol: str
    side: str
    amount: float
    price: float
    client_order_id: str | None
    created: int
    updated: int
    status: str = "open"     # ccxt unified: open | closed | canceled
    filled: float = 0.0
    notional: float = 0.0

    @property
    def average(self) -> float | None:
        return self.notional / self.filled if self.filled > 0 else None

    def as_ccxt(self) -> dict:
        return {"id": self.id, "clientOrderId": self.client_order_id, "symbol": self.symbol, "side": self.side,
                "type": "limit", "amount": self.amount, "price": self.price, "filled": self.filled,
                "average": self.average, "status": self.status, "timestamp": self.created,
                "lastUpdateTimestamp": self.updated}


@dataclass
class ExTrade:
    id: int
    order: int
    account: str
    symbol: str
    side: str
    amount: float
    price: float
    fee: float
    ts: int

    def as_ccxt(self) -> dict:
        return {"id": self.id, "order": self.order, "symbol": self.symbol, "side": self.side,
                "amount": self.amount, "price": self.price, "fee": {"cost": self.fee, "currency": "USDT"},
                "timestamp": self.ts}


@dataclass
class Slice:
    """A trade_history row as the model expects it to be (written by the trading system, then corrected)."""

    trade_id: str
    profile_id: str
    symbol: str
    side: str
    entry_qty: float
    entry_price: float
    entry_time: pd.Timestamp
    entry_client_order_id: str | None
    updated_at: pd.Timestamp
    status: str = "OPEN"
    exit_qty: float = 0.0
    exit_price: float | None = None
    exit_time: pd.Timestamp | None = None
    exit_source: str | None = None
    hour: int = 0
    frozen: bool = False     # drifted: the trading system never acts on it again
    core: bool = False       # the long-held position of the account
    active_exit: int | None = None   # exchange id of the healthy exit order in flight
    no_go_evidence: bool = False     # a NO_GO exit finding (STALE_FILL, OVER_FILL) in every run while OPEN
    drift: int | None = None

    @property
    def market(self) -> MarketSpec:
        return MARKETS[self.symbol]

    @property
    def remaining(self) -> float:
        return self.entry_qty - self.exit_qty

    @property
    def signed(self) -> float:
        return self.remaining if self.side == "long" else -self.remaining

    def row(self) -> dict:
        return {k: getattr(self, k) for k in (
            "trade_id", "profile_id", "symbol", "side", "status", "entry_qty", "entry_price", "entry_time",
            "entry_client_order_id", "exit_qty", "exit_price", "exit_time", "exit_source", "updated_at")}


@dataclass
class DbOrder:
    order_id: str
    profile_id: str
    trade_id: str | None
    symbol: str
    side: str
    role: str
    qty: float
    price: float
    status: str
    exchange_order_id: str
    client_order_id: str
    created_at: pd.Timestamp
    updated_at: pd.Timestamp
    filled_qty: float = 0.0
    avg_fill_price: float | None = None
    hour: int = 0
    frozen: bool = False

    def row(self) -> dict:
        return {k: getattr(self, k) for k in (
            "order_id", "profile_id", "trade_id", "symbol", "side", "role", "qty", "price", "filled_qty",
            "avg_fill_price", "status", "exchange_order_id", "client_order_id", "created_at", "updated_at")} | {
            "order_type": "limit"}


@dataclass
class Drift:
    """One injected drift and what DESIGN.md says must come of it."""

    n: int
    kind: str
    profile_id: str
    hour: int
    symbol: str
    trade_id: str | None = None
    order_ids: list[str] = field(default_factory=list)
    exchange_order_ids: list[str] = field(default_factory=list)
    # (hour, profile, action, target): each must be APPLIED exactly once, in that window
    corrections: list[tuple[int, str, str, str]] = field(default_factory=list)
    # (hour, profile, kind, reason, column, value): a finding that must exist
    findings: list[tuple[int, str, str, str, str, str]] = field(default_factory=list)
    note: str = ""

    def expect(self, hour: int, profile: str, action: str, target: str) -> None:
        self.corrections.append((hour, profile, action, target))

    def finding(self, hour: int, profile: str, kind: str, reason: str | None, column: str, value: str) -> None:
        self.findings.append((hour, profile, kind, reason or "", column, value))


@dataclass
class WatchdogModel:
    open_pause: tuple[int, pd.Timestamp] | None = None   # (window hour, paused_at)
    last_auto_resume: pd.Timestamp | None = None
    checks: list[tuple[int, bool]] = field(default_factory=list)   # evaluated checks: (hour, clean)


class Slots:
    """Increasing timestamps (ms) for one hour's actions; each action gets its own block of ``width``."""

    def __init__(self, rng: random.Random, start: pd.Timestamp, end: pd.Timestamp, blocks: int, width: int):
        lo, hi = ms(start), ms(end)
        self.times = sorted(rng.randint(lo, hi) for _ in range(max(1, blocks * width)))
        self.width = width

    def block(self, i: int) -> list[int]:
        return self.times[i * self.width:(i + 1) * self.width]


class SoakWorld:
    def __init__(self, seed: int, hours: int = HOURS):
        self.seed = seed
        self.hours = hours
        self.rng = random.Random(seed)
        self.orders: list[ExOrder] = []
        self.trades: list[ExTrade] = []
        self.slices: dict[str, Slice] = {}
        self.db_orders: dict[str, DbOrder] = {}
        self.drifts: list[Drift] = []
        self.marks: dict[str, float] = {s: m.start_price for s, m in MARKETS.items()}
        self.mark_history: dict[int, dict[str, float]] = {}
        self.next_order_id = 100_000
        self.next_trade_id = 5_000_000
        self.next_trade_no = {p.profile_id: 0 for p in PROFILES}
        self.next_tag = 0
        self.dirty_slices: set[str] = set()
        self.dirty_orders: set[str] = set()
        self.corrupt_derived: dict[str, int] = {}   # profile -> drift n (stale_derived this hour)
        self.fixes: dict[tuple[int, str], list[Callable[[pd.Timestamp], None]]] = defaultdict(list)
        self.scheduled_cancels: dict[int, list[ExOrder]] = defaultdict(list)
        self.streaks: dict[str, tuple[int, int]] = {}   # trade_id -> (streak, last hour)
        self.watchdog = {p.profile_id: WatchdogModel() for p in PROFILES}
        # model outputs, compared with the database at the end
        self.expected_parity: Counter = Counter()     # (hour, profile, action, target) of parity/watchdog
        self.unlinked: list[tuple[int, str, str, str]] = []  # parity actions on slices no drift explains
        self.ghost_findings: set[tuple[int, str, str]] = set()
        self.mismatch_findings: set[tuple[int, str, str]] = set()
        self.pending_big_ghost = False
        # every kind is injected at least once: kind i is due from hour i on, for one eligible profile
        self.forced: dict[tuple[str, str], int] = {
            (kind, eligible[i % len(eligible)]): i for i, (kind, (eligible, _p, _o)) in enumerate(KINDS.items())}

    # --- ids and prices -------------------------------------------------------------------------

    def order_id(self) -> int:
        self.next_order_id += 1
        return self.next_order_id

    def trade_no(self) -> int:
        self.next_trade_id += 1
        return self.next_trade_id

    def new_trade_id(self, p: ProfileSpec) -> str:
        self.next_trade_no[p.profile_id] += 1
        return f"{p.prefix}{self.next_trade_no[p.profile_id]:05d}"

    def qty(self, symbol: str, lo: int | None = None, hi: int | None = None) -> tuple[int, float]:
        """A random order size of ``symbol``: ``lo..hi`` units, by default the market's lot range."""
        n = self.rng.randint(lo or MARKETS[symbol].lot[0], hi or MARKETS[symbol].lot[1])
        return n, round(n * MARKETS[symbol].u, 10)

    def price(self, symbol: str) -> float:
        m = MARKETS[symbol]
        raw = self.marks[symbol] * (1 + self.rng.gauss(0, 0.001))
        return round(round(raw / m.price_step) * m.price_step, 10)

    def move_marks(self, hour: int) -> None:
        for symbol, m in MARKETS.items():
            if hour > 0:
                step = self.marks[symbol] * (1 + self.rng.gauss(0, 0.006))
                self.marks[symbol] = round(round(step / m.price_step) * m.price_step, 10)
        self.mark_history[hour] = dict(self.marks)

    # --- the exchange -----------------------------------------------------------------------------

    def place(self, account: str, symbol: str, side: str, amount: float, cid: str | None, t: int,
              price: float | None = None) -> ExOrder:
        order = ExOrder(self.order_id(), account, symbol, side, amount, price or self.price(symbol), cid, t, t)
        self.orders.append(order)
        return order

    def fill(self, order: ExOrder, amount: float, times: list[int], *, same_ms: bool | None = None) -> list[ExTrade]:
        """Fill ``amount`` of ``order`` in 1-3 fills at ``times`` (possibly all in one millisecond)."""
        u = MARKETS[order.symbol].u
        units = int(round(amount / u))
        k = max(1, min(len(times), units, self.rng.randint(1, 3)))
        cuts = sorted(self.rng.sample(range(1, units), k - 1)) if k > 1 else []
        parts = [b - a for a, b in zip([0, *cuts], [*cuts, units], strict=True)]
        if same_ms is None:
            same_ms = self.rng.random() < 0.3
        out = []
        for i, part in enumerate(parts):
            t = times[0] if same_ms else times[i]
            qty = round(part * u, 10)
            px = self.price(order.symbol)
            trade = ExTrade(self.trade_no(), order.id, order.account, order.symbol, order.side, qty, px,
                            round(qty * px * 0.0004, 8), t)
            self.trades.append(trade)
            order.filled = round(order.filled + qty, 10)
            order.notional += qty * px
            order.updated = t
            out.append(trade)
        if order.filled >= order.amount - u / 2:
            order.status = "closed"
        return out

    def cancel(self, order: ExOrder, t: int) -> None:
        order.status = "canceled"
        order.updated = t

    def exchange_qty(self, account: str) -> dict[str, float]:
        """Per parity instrument: swap net position, spot base balance (from every fill so far)."""
        out: dict[str, float] = defaultdict(float)
        for t in self.trades:
            if t.account == account:
                out[MARKETS[t.symbol].instrument] += t.amount if t.side == "buy" else -t.amount
        return {k: round(v, 10) for k, v in out.items()}

    def scenario(self, hour: int) -> dict:
        marks = self.mark_history[hour]
        accounts = {}
        for account in ACCOUNTS:
            markets = [m for m in MARKETS.values() if m.account == account]
            net = self.exchange_qty(account)
            positions, balances = [], {}
            for m in markets:
                qty = net.get(m.instrument, 0.0)
                if m.type == "swap" and abs(qty) > EPS:
                    positions.append({"symbol": m.symbol, "contracts": abs(qty), "side": "long" if qty > 0 else "short",
                                      "entryPrice": marks[m.symbol], "markPrice": marks[m.symbol]})
                if m.type == "spot" and qty > EPS:
                    balances[m.base] = {"free": qty, "used": 0.0}
            if any(m.type == "spot" for m in markets):
                balances["USDT"] = {"free": 1_000_000.0, "used": 0.0}
            accounts[account] = {
                "apiKey": f"soak-key-{account}", "secret": f"soak-secret-{account}-0123456789abcdef",
                "markets": [{"symbol": m.symbol, "type": m.type, "contractSize": 1,
                             "precision": {"amount": m.u, "price": m.price_step}} if m.type == "swap" else
                            {"symbol": m.symbol, "type": m.type, "precision": {"amount": m.u, "price": m.price_step}}
                            for m in markets],
                "orders": [o.as_ccxt() for o in self.orders if o.account == account],
                "trades": [t.as_ccxt() for t in self.trades if t.account == account],
                "positions": positions, "balances": balances,
                "markPrices": {m.symbol: marks[m.symbol] for m in markets},
            }
        return {"clock": ms(run_clock(hour)), "accounts": accounts, "faults": []}

    # --- the trading system's DB rows -----------------------------------------------------------

    def add_slice(self, s: Slice) -> Slice:
        self.slices[s.trade_id] = s
        self.dirty_slices.add(s.trade_id)
        return s

    def add_order(self, p: ProfileSpec, ex: ExOrder, role: str, trade_id: str | None, status: str, hour: int,
                  filled: float = 0.0, avg: float | None = None, updated: int | None = None) -> DbOrder:
        o = DbOrder(f"O{ex.id}", p.profile_id, trade_id, ex.symbol, ex.side, role, ex.amount, ex.price, status,
                    str(ex.id), ex.client_order_id, ts_ms(ex.created), ts_ms(updated or ex.created),
                    filled_qty=filled, avg_fill_price=avg, hour=hour)
        self.db_orders[o.order_id] = o
        self.dirty_orders.add(o.order_id)
        return o

    def record_fill(self, o: DbOrder, ex: ExOrder) -> None:
        """The trading system records the order as the exchange has it."""
        o.filled_qty = ex.filled
        o.avg_fill_price = ex.average
        o.status = {"closed": "FILLED", "canceled": "CANCELED", "open": "PARTIALLY_FILLED" if ex.filled else "OPEN"}[
            ex.status]
        o.updated_at = ts_ms(ex.updated)
        self.dirty_orders.add(o.order_id)

    def flush(self, engine, hour: int) -> None:
        """Write this hour's rows, then (as the trading system does) recompute positions and reservations."""
        slice_cols = ("trade_id", "profile_id", "symbol", "side", "status", "entry_qty", "entry_price", "entry_time",
                      "entry_client_order_id", "exit_qty", "exit_price", "exit_time", "exit_source", "updated_at")
        order_cols = ("order_id", "profile_id", "trade_id", "symbol", "side", "role", "order_type", "qty", "price",
                      "filled_qty", "avg_fill_price", "status", "exchange_order_id", "client_order_id", "created_at",
                      "updated_at")
        now = run_clock(hour) - pd.Timedelta(minutes=7)
        with engine.begin() as conn:
            for table, cols, key, rows in (
                    ("trade_history", slice_cols, "trade_id", [self.slices[k].row() for k in sorted(self.dirty_slices)]),
                    ("orders", order_cols, "order_id", [self.db_orders[k].row() for k in sorted(self.dirty_orders)])):
                if not rows:
                    continue
                sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c != key)
                conn.execute(sa.text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
                                     f" ON CONFLICT ({key}) DO UPDATE SET {sets}"),
                             [{c: _py(r[c]) for c in cols} for r in rows])
            for p in PROFILES:
                write_derived(conn, p.profile_id, now)
            for profile_id, n in self.corrupt_derived.items():
                # the trading system's bug: the dashboard rows are left wrong after this hour's trades
                symbol = conn.execute(sa.text("SELECT symbol FROM positions WHERE profile_id = :p ORDER BY symbol"
                                              " LIMIT 1"), {"p": profile_id}).scalar()
                conn.execute(sa.text("UPDATE positions SET qty = qty + 7 * :u WHERE profile_id = :p AND symbol = :s"),
                             {"u": MARKETS[symbol].u, "p": profile_id, "s": symbol})
                conn.execute(sa.text("UPDATE capital_ledger SET reserved_usd = reserved_usd + 1234.5 WHERE profile_id = :p"),
                             {"p": profile_id})
                drift = self.drifts[n]
                drift.symbol = symbol
                drift.expect(hour, profile_id, "POSITION_UPDATE", f"{profile_id}|{symbol}")
                drift.expect(hour, profile_id, "RESERVATION_UPDATE", profile_id)
        self.dirty_slices.clear()
        self.dirty_orders.clear()
        self.corrupt_derived.clear()

    # --- setup ------------------------------------------------------------------------------------

    def seed_rows(self) -> dict:
        """Profiles and the core position of each account (opened before T0, never closed)."""
        self.move_marks(0)
        t = ms(T0 - pd.Timedelta(minutes=50))
        for p, symbol, units in ((PROFILE["alpha"], "BTC/USDT:USDT", 40), (PROFILE["gamma"], "BTC/USDT", 1500)):
            tid = self.new_trade_id(p)
            qty = round(units * MARKETS[symbol].u, 10)
            ex = self.place(p.account, symbol, "buy", qty, encode(p.sub_tag, "e", tid), t)
            self.fill(ex, qty, [t + 1000], same_ms=True)
            self.add_order(p, ex, "ENTRY", tid, "FILLED", -1, ex.filled, ex.average, ex.updated)
            self.add_slice(Slice(tid, p.profile_id, symbol, "long", qty, ex.average, ts_ms(ex.updated),
                                 ex.client_order_id, ts_ms(ex.updated), hour=-1, core=True))
        return {"profiles": [{"profile_id": p.profile_id, "exchange": "binance", "account": p.account,
                              "market_type": p.market_type, "sub_tag": p.sub_tag, "allocated_capital_usd": p.capital,
                              "trading_paused": False} for p in PROFILES]}

    # --- one hour of trading and drift ------------------------------------------------------------

    def healthy_open(self, p: ProfileSpec, hour: int, claimed: set, min_units: int = 1) -> list[Slice]:
        return [s for s in self.slices.values()
                if s.profile_id == p.profile_id and s.status == "OPEN" and not s.frozen and not s.core
                and s.symbol in p.normal and s.active_exit is None and s.hour < hour and s.trade_id not in claimed
                and s.entry_qty / s.market.u >= min_units - EPS and s.exit_qty == 0]

    def resting(self, p: ProfileSpec, hour: int, claimed: set) -> list[DbOrder]:
        return [o for o in self.db_orders.values()
                if o.profile_id == p.profile_id and o.role == "ENTRY" and o.status == "OPEN" and not o.frozen
                and o.hour < hour and o.order_id not in claimed]

    def trade_hour(self, hour: int, engine) -> None:
        """The trading system's hour: normal trading plus (before the quiet hours) injected drift."""
        if hour > 0:
            self.move_marks(hour)
        w = window(hour)
        plans: list[Callable[[list[int]], None]] = []
        early: list[Callable[[list[int]], None]] = []
        claimed: set[str] = set()
        for o in self.scheduled_cancels.pop(hour, []):
            plans.append(lambda t, o=o: self.cancel(o, t[0]))
        for p in PROFILES:
            paused = self.watchdog[p.profile_id].open_pause is not None
            for o in self.resting(p, hour, claimed):
                r = self.rng.random()
                if r < 0.3:
                    claimed.add(o.order_id)
                    plans.append(lambda t, p=p, o=o: self.fill_resting(p, o, t, hour))
                elif r < 0.5:
                    claimed.add(o.order_id)
                    plans.append(lambda t, o=o: self.cancel_resting(o, t))
            for s in [s for s in self.slices.values() if s.profile_id == p.profile_id and s.active_exit is not None
                      and not s.frozen and s.status == "OPEN"]:
                if self.rng.random() < 0.6:
                    claimed.add(s.trade_id)
                    plans.append(lambda t, s=s: self.complete_exit(s, t))
            for s in self.healthy_open(p, hour, claimed):
                if self.rng.random() < 0.3:
                    claimed.add(s.trade_id)
                    partial = self.rng.random() < 0.2 and s.entry_qty / s.market.u >= 4
                    plans.append(lambda t, p=p, s=s, partial=partial: self.close(p, s, t, partial))
            if not paused:
                for _ in range(self.rng.randint(1, 3)):
                    plans.append(lambda t, p=p: self.open(p, self.rng.choice(p.normal), t, hour))
                if self.rng.random() < 0.35:
                    plans.append(lambda t, p=p: self.place_resting(p, t, hour))
            if hour < self.hours - QUIET_HOURS:
                for kind, (eligible, prob, _o) in KINDS.items():
                    if p.profile_id not in eligible:
                        continue
                    forced = self.forced.get((kind, p.profile_id), hour + 1) <= hour
                    if forced or self.rng.random() < prob:
                        plan = self.plan_drift(kind, p, hour, claimed)
                        if plan is None:
                            continue
                        self.forced.pop((kind, p.profile_id), None)
                        (early if kind == "stale_fill_ghost" else plans).append(plan)
        self.rng.shuffle(plans)
        width = 8
        early_slots = Slots(self.rng, w + pd.Timedelta(minutes=1), w + pd.Timedelta(minutes=5), len(early), 2)
        slots = Slots(self.rng, w + pd.Timedelta(minutes=6), w + pd.Timedelta(minutes=58), len(plans), width)
        for i, plan in enumerate(early):
            plan(early_slots.block(i))
        for i, plan in enumerate(plans):
            plan(slots.block(i))
        self.flush(engine, hour)

    # normal trading

    def open(self, p: ProfileSpec, symbol: str, t: list[int], hour: int, *, side: str | None = None,
             units: tuple[int, int] | None = None) -> Slice:
        side = side or ("long" if p.market_type == "spot" else self.rng.choice(("long", "short")))
        tid = self.new_trade_id(p)
        _, qty = self.qty(symbol, *(units or ()))
        ex = self.place(p.account, symbol, "buy" if side == "long" else "sell", qty, encode(p.sub_tag, "e", tid), t[0])
        self.fill(ex, qty, t[0:3])
        self.add_order(p, ex, "ENTRY", tid, "FILLED", hour, ex.filled, ex.average, ex.updated)
        return self.add_slice(Slice(tid, p.profile_id, symbol, side, qty, ex.average, ts_ms(ex.updated),
                                    ex.client_order_id, ts_ms(ex.updated), hour=hour))

    def exit_side(self, s: Slice) -> str:
        return "sell" if s.side == "long" else "buy"

    def close(self, p: ProfileSpec, s: Slice, t: list[int], partial: bool) -> None:
        ex = self.place(p.account, s.symbol, self.exit_side(s), s.remaining, encode(p.sub_tag, "x", s.trade_id), t[0])
        units = int(round(s.remaining / s.market.u))
        amount = round(self.rng.randint(1, units - 2) * s.market.u, 10) if partial else s.remaining
        self.fill(ex, amount, t[1:4])
        o = self.add_order(p, ex, "EXIT", s.trade_id, "OPEN", s.hour)
        self.record_fill(o, ex)
        self.record_exit(s, ex)
        if ex.status == "open":
            s.active_exit = ex.id

    def record_exit(self, s: Slice, ex: ExOrder) -> None:
        s.exit_qty = ex.filled
        s.exit_price = ex.average
        s.exit_time = ts_ms(ex.updated)
        s.exit_source = "exchange"
        s.status = "CLOSED" if ex.status == "closed" else "OPEN"
        s.updated_at = ts_ms(ex.updated)
        self.dirty_slices.add(s.trade_id)

    def complete_exit(self, s: Slice, t: list[int]) -> None:
        ex = next(o for o in self.orders if o.id == s.active_exit)
        self.fill(ex, round(ex.amount - ex.filled, 10), t[0:3])
        self.record_fill(self.db_orders[f"O{ex.id}"], ex)
        self.record_exit(s, ex)
        s.active_exit = None

    def place_resting(self, p: ProfileSpec, t: list[int], hour: int) -> DbOrder:
        symbol = self.rng.choice(p.normal)
        side = "buy" if p.market_type == "spot" else self.rng.choice(("buy", "sell"))
        tid = self.new_trade_id(p)
        _, qty = self.qty(symbol)
        away = 0.97 if side == "buy" else 1.03
        m = MARKETS[symbol]
        price = round(round(self.marks[symbol] * away / m.price_step) * m.price_step, 10)
        ex = self.place(p.account, symbol, side, qty, encode(p.sub_tag, "e", tid), t[0], price=price)
        return self.add_order(p, ex, "ENTRY", tid, "OPEN", hour)

    def fill_resting(self, p: ProfileSpec, o: DbOrder, t: list[int], hour: int, *, record_order: bool = True) -> Slice:
        ex = next(e for e in self.orders if e.id == int(o.exchange_order_id))
        self.fill(ex, ex.amount, t[0:3])
        if record_order:
            self.record_fill(o, ex)
        side = "long" if ex.side == "buy" else "short"
        return self.add_slice(Slice(o.trade_id, p.profile_id, ex.symbol, side, ex.filled, ex.average,
                                    ts_ms(ex.updated), ex.client_order_id, ts_ms(ex.updated), hour=hour))

    def cancel_resting(self, o: DbOrder, t: list[int]) -> None:
        ex = next(e for e in self.orders if e.id == int(o.exchange_order_id))
        self.cancel(ex, t[0])
        self.record_fill(o, ex)

    # drift

    def new_drift(self, kind: str, p: ProfileSpec, hour: int, symbol: str) -> Drift:
        d = Drift(len(self.drifts), kind, p.profile_id, hour, symbol)
        self.drifts.append(d)
        return d

    def fix(self, hour: int, profile_id: str, fn: Callable[[pd.Timestamp], None]) -> None:
        self.fixes[(hour, profile_id)].append(fn)

    def plan_drift(self, kind: str, p: ProfileSpec, hour: int, claimed: set) -> Callable[[list[int]], None] | None:
        """Pick what the drift acts on now (so no other plan takes it) and return the action."""
        if kind in ("missed_exit", "missed_partial_exit", "missed_partial_exit_cancel"):
            pool = self.healthy_open(p, hour, claimed, min_units=4)
            target = self.rng.choice(pool) if pool else None
            if target is not None:
                claimed.add(target.trade_id)
            return lambda t: self.drift_missed_exit(kind, p, hour, target, t)
        if kind in ("missed_entry_cancel", "missed_entry_fill"):
            pool = self.resting(p, hour, claimed)
            target = self.rng.choice(pool) if pool else None
            if target is not None:
                claimed.add(target.order_id)
            return lambda t: self.drift_resting(kind, p, hour, target, t)
        if kind == "big_ghost":
            if self.pending_big_ghost or self.watchdog[p.profile_id].open_pause is not None:
                return None
            self.pending_big_ghost = True
        if kind == "stale_derived":
            if p.profile_id in self.corrupt_derived:
                return None
            self.corrupt_derived[p.profile_id] = self.new_drift(kind, p, hour, "").n
            return lambda t: None
        return lambda t: getattr(self, f"drift_{kind}")(p, hour, t)

    def drift_missed_exit(self, kind: str, p: ProfileSpec, hour: int, s: Slice | None, t: list[int]) -> None:
        if s is None:  # nothing to exit: the trading system opens a slice first, in this hour
            symbol = self.rng.choice(p.normal)
            s = self.open(p, symbol, t[0:2], hour, units=(max(4, MARKETS[symbol].lot[0]), MARKETS[symbol].lot[1]))
            t = t[2:]
        d = self.new_drift(kind, p, hour, s.symbol)
        d.trade_id = s.trade_id
        s.frozen, s.drift = True, d.n
        ex = self.place(p.account, s.symbol, self.exit_side(s), s.remaining, encode(p.sub_tag, "x", s.trade_id), t[0])
        units = int(round(s.remaining / s.market.u))
        amount = s.remaining if kind == "missed_exit" else round(self.rng.randint(1, units - 2) * s.market.u, 10)
        fills = self.fill(ex, amount, t[1:4])
        if kind == "missed_partial_exit_cancel":
            self.cancel(ex, t[4])
        o = self.add_order(p, ex, "EXIT", s.trade_id, "OPEN", hour)   # the trading system sent it ...
        o.frozen = True                                                # ... and missed what happened to it
        d.order_ids.append(o.order_id)
        d.exchange_order_ids.append(o.exchange_order_id)
        total = sum(f.amount for f in fills)
        vwap = sum(f.amount * f.price for f in fills) / total
        closes = kind == "missed_exit"

        def backfill(_now, s=s, total=total, vwap=vwap, last=max(f.ts for f in fills), closes=closes):
            s.exit_qty, s.exit_price, s.exit_time = round(total, 10), vwap, ts_ms(last)
            s.exit_source, s.status = "backfill", ("CLOSED" if closes else "OPEN")

        self.fix(hour, p.profile_id, backfill)
        d.expect(hour, p.profile_id, "BACKFILL_EXIT", s.trade_id)
        if kind == "missed_exit":
            self.fix(hour, p.profile_id, lambda _now, o=o, ex=ex: self._order_to(o, ex, "FILLED"))
            d.expect(hour, p.profile_id, "EXIT_FILL", o.order_id)
        elif kind == "missed_partial_exit_cancel":
            self.fix(hour, p.profile_id, lambda _now, o=o, ex=ex: self._order_to(o, ex, "CANCELED"))
            d.expect(hour, p.profile_id, "CANCEL_ORDER", o.order_id)

    def _order_to(self, o: DbOrder, ex: ExOrder, status: str) -> None:
        o.status, o.filled_qty, o.avg_fill_price = status, ex.filled, ex.average

    def drift_resting(self, kind: str, p: ProfileSpec, hour: int, o: DbOrder | None, t: list[int]) -> None:
        if o is None:  # no resting order: one is placed first, in this hour
            o = self.place_resting(p, t[0:1], hour)
            t = t[1:]
        d = self.new_drift(kind, p, hour, o.symbol)
        o.frozen = True
        d.order_ids.append(o.order_id)
        d.exchange_order_ids.append(o.exchange_order_id)
        ex = next(e for e in self.orders if e.id == int(o.exchange_order_id))
        if kind == "missed_entry_cancel":
            self.cancel(ex, t[0])
            self.fix(hour, p.profile_id, lambda _now: self._order_to(o, ex, "CANCELED"))
            d.expect(hour, p.profile_id, "CANCEL_ORDER", o.order_id)
        else:
            s = self.fill_resting(p, o, t[0:3], hour, record_order=False)  # slice recorded, order row not
            d.trade_id = s.trade_id
            self.fix(hour, p.profile_id, lambda _now: self._order_to(o, ex, "FILLED"))
            d.expect(hour, p.profile_id, "ENTRY_FILL", o.order_id)

    def drift_unknown_open_order(self, p: ProfileSpec, hour: int, t: list[int]) -> None:
        symbol = self.rng.choice(p.normal)
        own = self.rng.random() < 0.5
        self.next_tag += 1
        cid = f"{p.sub_tag}-m{self.next_tag}" if own else f"web_{self.next_tag}"
        side = "buy" if p.market_type == "spot" else self.rng.choice(("buy", "sell"))
        _, qty = self.qty(symbol)
        m = MARKETS[symbol]
        price = round(round(self.marks[symbol] * (0.95 if side == "buy" else 1.05) / m.price_step) * m.price_step, 10)
        ex = self.place(p.account, symbol, side, qty, cid, t[0], price=price)
        self.scheduled_cancels[hour + self.rng.randint(1, 3)].append(ex)
        d = self.new_drift("unknown_open_order", p, hour, symbol)
        d.exchange_order_ids.append(str(ex.id))
        d.note = "own profile (sub_tag)" if own else "account-level"
        reporters = [p.profile_id] if own else [q.profile_id for q in PROFILES if q.account == p.account]
        for q in reporters:
            d.finding(hour, q, "ORDER_MISSING_IN_DB", "OWN_PROFILE" if own else "ACCOUNT_LEVEL",
                      "exchange_order_id", str(ex.id))

    def _ghost(self, kind: str, p: ProfileSpec, hour: int, t: list[int], symbol: str, cid: str | None,
               units: tuple[int, int]) -> Slice:
        tid = self.new_trade_id(p)
        _, qty = self.qty(symbol, *units)
        price = self.price(symbol)
        d = self.new_drift(kind, p, hour, symbol)
        d.trade_id = tid
        s = self.add_slice(Slice(tid, p.profile_id, symbol, "long", qty, price, ts_ms(t[0]),
                                 cid if cid != "<sub_tag>" else encode(p.sub_tag, "e", tid), ts_ms(t[0]),
                                 hour=hour, frozen=True, drift=d.n))
        return s

    def drift_ghost_subtag(self, p: ProfileSpec, hour: int, t: list[int]) -> None:
        self._ghost("ghost_subtag", p, hour, t, p.ghost, "<sub_tag>", MARKETS[p.ghost].lot)

    def drift_big_ghost(self, p: ProfileSpec, hour: int, t: list[int]) -> None:
        symbol = p.ghost
        target = p.capital * self.rng.uniform(0.6, 0.9) / self.marks[symbol]
        units = int(target / MARKETS[symbol].u)
        self._ghost("big_ghost", p, hour, t, symbol, "<sub_tag>", (units, units))

    def drift_ghost_no_subtag(self, p: ProfileSpec, hour: int, t: list[int]) -> None:
        self.next_tag += 1
        cid = None if self.rng.random() < 0.5 else f"manual-{self.next_tag}"
        self._ghost("ghost_no_subtag", p, hour, t, p.quarantine, cid, MARKETS[p.quarantine].lot)

    def drift_unattributed_close(self, p: ProfileSpec, hour: int, t: list[int]) -> None:
        s = self.open(p, p.ghost, t[0:3], hour, side="long")
        d = self.new_drift("unattributed_close", p, hour, s.symbol)
        d.trade_id = s.trade_id
        s.frozen, s.drift = True, d.n
        self.next_tag += 1
        ex = self.place(p.account, s.symbol, "sell", s.entry_qty, f"web_{self.next_tag}", t[3])
        self.fill(ex, s.entry_qty, t[4:7])
        d.exchange_order_ids.append(str(ex.id))
        d.finding(hour, p.profile_id, "NO_GO", "NO_ATTRIBUTION", "exchange_order_id", str(ex.id))

    def drift_stale_fill_ghost(self, p: ProfileSpec, hour: int, t: list[int]) -> None:
        symbol = p.quarantine   # it ends QUARANTINED: on the quarantine lane, so the ghost lane's books are judged
        tid = self.new_trade_id(p)
        _, qty = self.qty(symbol)
        entry = self.place(p.account, symbol, "buy", qty, encode(p.sub_tag, "e", tid), t[0])
        self.fill(entry, qty, [t[0]], same_ms=True)
        exit_ = self.place(p.account, symbol, "sell", qty, encode(p.sub_tag, "x", tid), t[1])
        self.fill(exit_, qty, [t[1]], same_ms=True)
        d = self.new_drift("stale_fill_ghost", p, hour, symbol)
        d.trade_id = tid
        self.add_order(p, entry, "ENTRY", tid, "FILLED", hour, entry.filled, entry.average, entry.updated)
        recorded = ts_ms(t[1]) + pd.Timedelta(minutes=8)  # the trading system's clock bug: entry recorded late
        self.add_slice(Slice(tid, p.profile_id, symbol, "long", qty, entry.average, recorded, entry.client_order_id,
                             recorded, hour=hour, frozen=True, no_go_evidence=True, drift=d.n))
        d.exchange_order_ids.append(str(exit_.id))
        d.finding(hour, p.profile_id, "NO_GO", "STALE_FILL", "trade_id", tid)

    def _poison_slice(self, kind: str, p: ProfileSpec, hour: int, t: list[int], side: str) -> tuple[Slice, Drift]:
        s = self.open(p, p.poison, t[0:2], hour, side=side)
        d = self.new_drift(kind, p, hour, s.symbol)
        d.trade_id = s.trade_id
        s.frozen, s.drift = True, d.n
        d.finding(hour, p.profile_id, "NO_GO", "QTY_MISMATCH", "symbol", s.symbol)
        return s, d

    def drift_over_fill(self, p: ProfileSpec, hour: int, t: list[int]) -> None:
        s, d = self._poison_slice("over_fill", p, hour, t, "short")
        s.no_go_evidence = True
        for i, cid in enumerate((encode(p.sub_tag, "x", s.trade_id), encode(p.sub_tag, "x", s.trade_id, resend=1))):
            ex = self.place(p.account, s.symbol, "buy", s.entry_qty, cid, t[2 + 2 * i])
            self.fill(ex, s.entry_qty, [t[3 + 2 * i]], same_ms=True)
            o = self.add_order(p, ex, "EXIT", s.trade_id, "OPEN", hour)
            o.frozen = True
            self.fix(hour, p.profile_id, lambda _now, o=o, ex=ex: self._order_to(o, ex, "FILLED"))
            d.expect(hour, p.profile_id, "EXIT_FILL", o.order_id)
            d.order_ids.append(o.order_id)
            d.exchange_order_ids.append(str(ex.id))
        d.finding(hour, p.profile_id, "NO_GO", "OVER_FILL", "trade_id", s.trade_id)

    def drift_late_fill(self, p: ProfileSpec, hour: int, t: list[int]) -> None:
        s, d = self._poison_slice("late_fill", p, hour, t, "short")
        self.close(p, s, t[2:5], partial=False)           # closed properly, DB and exchange agree ...
        units = int(round(s.entry_qty / s.market.u))
        extra = round(max(1, units // 3) * s.market.u, 10)
        ex = self.place(p.account, s.symbol, "buy", extra, encode(p.sub_tag, "x", s.trade_id, resend=1), t[5])
        self.fill(ex, extra, [t[6]], same_ms=True)        # ... then a re-sent exit fills too, DB unaware
        d.exchange_order_ids.append(str(ex.id))
        d.finding(hour, p.profile_id, "NO_GO", "LATE_FILL", "trade_id", s.trade_id)

    def drift_db_ahead(self, p: ProfileSpec, hour: int, t: list[int]) -> None:
        s, d = self._poison_slice("db_ahead", p, hour, t, "long")
        ex = self.place(p.account, s.symbol, "sell", s.entry_qty, encode(p.sub_tag, "x", s.trade_id), t[2])
        units = int(round(s.entry_qty / s.market.u))
        half = round((units // 2) * s.market.u, 10)
        o = self.add_order(p, ex, "EXIT", s.trade_id, "PARTIALLY_FILLED", hour, half, ex.price, t[3])
        o.frozen = True
        s.exit_qty, s.exit_price, s.exit_time, s.exit_source = half, ex.price, ts_ms(t[3]), "exchange"
        s.updated_at = ts_ms(t[3])                          # the DB records an exit that never filled
        d.order_ids.append(o.order_id)
        d.finding(hour, p.profile_id, "NO_GO", "DB_AHEAD", "trade_id", s.trade_id)

    def drift_partial_untied_close(self, p: ProfileSpec, hour: int, t: list[int]) -> None:
        s, d = self._poison_slice("partial_untied_close", p, hour, t, "long")
        units = int(round(s.entry_qty / s.market.u))
        part = round(self.rng.randint(1, units // 2) * s.market.u, 10)
        self.next_tag += 1
        ex = self.place(p.account, s.symbol, "sell", part, f"web_{self.next_tag}", t[2])
        self.fill(ex, part, t[3:5])
        d.exchange_order_ids.append(str(ex.id))
        d.finding(hour, p.profile_id, "NO_GO", "NO_ATTRIBUTION", "exchange_order_id", str(ex.id))

    # --- the oracle: what one (window, profile) run must do ----------------------------------------

    def model_run(self, hour: int, p: ProfileSpec) -> None:
        """Apply the corrections DESIGN.md prescribes for this run to the model, in the pipeline's order:
        order and EXIT backfill corrections, then parity (on the slices as the backfill left them), then
        the watchdog."""
        now = run_clock(hour)
        for fn in self.fixes.pop((hour, p.profile_id), []):
            fn(now)
        marks = self.mark_history[hour]
        account_open = [s for s in self.slices.values() if s.status == "OPEN" and PROFILE[s.profile_id].account == p.account]
        exch = self.exchange_qty(p.account)
        keys: dict[str, dict] = {}
        for s in account_open:
            k = keys.setdefault(s.market.instrument, {"db": 0.0, "n": 0, "mine": 0, "u": s.market.u,
                                                     "mark": marks[s.symbol], "symbol": s.symbol})
            if s.remaining >= s.market.u * (1 - EPS):   # a fee-dust remainder is zero, never a ghost
                k["db"] += s.signed
            k["n"] += 1
            k["mine"] += s.profile_id == p.profile_id
        for m in MARKETS.values():   # swap positions with no slice are keys too (account-level mismatches)
            if m.account == p.account and m.type == "swap" and abs(exch.get(m.instrument, 0.0)) > EPS:
                keys.setdefault(m.instrument, {"db": 0.0, "n": 0, "mine": 0, "u": m.u, "mark": marks[m.symbol],
                                               "symbol": m.symbol})

        def zero(q: float, k: dict) -> bool:
            return abs(q) < k["u"] * (1 - EPS) or abs(q) * k["mark"] < DUST_USD

        ghost_keys, mismatch_keys = set(), set()
        for inst, k in keys.items():
            ex_q = exch.get(inst, 0.0)
            if zero(ex_q, k) and not zero(k["db"], k):
                ghost_keys.add(inst)
            elif not zero(ex_q, k) and abs(ex_q - k["db"]) >= k["u"] * (1 - EPS):
                mismatch_keys.add(inst)
                if k["mine"] > 0 or k["n"] == 0:
                    self.mismatch_findings.add((hour, p.profile_id, inst))
        mine = sorted((s for s in account_open if s.profile_id == p.profile_id), key=lambda s: s.trade_id)
        ghosts = [s for s in mine if s.market.instrument in ghost_keys and s.remaining >= s.market.u * (1 - EPS)]
        ghost_ids = {s.trade_id for s in ghosts}
        acting = []
        for s in mine:
            streak, last = self.streaks.get(s.trade_id, (0, -1))
            if s.trade_id in ghost_ids:
                if hour > last:
                    streak += 1
                self.streaks[s.trade_id] = (streak, hour)
                self.ghost_findings.add((hour, p.profile_id, s.trade_id))
                if streak >= CONFIRMATIONS:
                    acting.append(s)
            elif s.trade_id in self.streaks:
                self.streaks[s.trade_id] = (0, hour)
        notional = sum(s.remaining * marks[s.symbol] for s in ghosts)
        quarantined = False
        for s in acting:
            attributed = bool(s.entry_client_order_id) and s.entry_client_order_id.split("-", 1)[0] == PROFILE[
                s.profile_id].sub_tag and "-" in s.entry_client_order_id
            if s.no_go_evidence or not attributed:
                action = "QUARANTINE"
                s.status = "QUARANTINED"
                quarantined = True
            else:
                action = "SYNTHETIC_EXIT"
                mark = marks[s.symbol]
                s.exit_price = mark if s.exit_qty == 0 or s.exit_price is None else (
                    (s.exit_qty * s.exit_price + s.remaining * mark) / s.entry_qty)
                s.exit_qty, s.exit_time, s.exit_source, s.status = s.entry_qty, now, "parity_synthetic", "CLOSED"
            self._expect_parity(hour, p.profile_id, action, s.trade_id, s.drift)
        mismatch_mine = any(s.market.instrument in mismatch_keys for s in mine)
        clean = not ghosts and not mismatch_mine and not quarantined
        # the integrity watchdog
        wd = self.watchdog[p.profile_id]
        triggered = notional > 0 and notional / p.capital > MAX_NOTIONAL_PCT
        if triggered and wd.open_pause is None:
            wd.open_pause = (hour, now)
            self._expect_parity(hour, p.profile_id, "PAUSE_TRADING", "", None)
        elif (not triggered and wd.open_pause is not None and now - wd.open_pause[1] >= MIN_PAUSE and clean
              and len(wd.checks) >= CLEAN_CYCLES - 1 and all(c for _h, c in wd.checks[-(CLEAN_CYCLES - 1):])
              and (wd.last_auto_resume is None or now - wd.last_auto_resume > COOLDOWN)):
            wd.open_pause = None
            wd.last_auto_resume = now
            self._expect_parity(hour, p.profile_id, "RESUME_TRADING", "", None)
        wd.checks.append((hour, clean))
        if any(self.drifts[s.drift].kind == "big_ghost" for s in acting if s.drift is not None):
            self.pending_big_ghost = False

    def _expect_parity(self, hour: int, profile_id: str, action: str, target: str, drift: int | None) -> None:
        self.expected_parity[(hour, profile_id, action, target)] += 1
        if drift is not None:
            self.drifts[drift].expect(hour, profile_id, action, target)
        elif action in ("SYNTHETIC_EXIT", "QUARANTINE"):
            self.unlinked.append((hour, profile_id, action, target))

    # --- expectations, aggregated -------------------------------------------------------------------

    def expected_corrections(self) -> Counter:
        """(hour, profile, action, target) of every non-derived correction that must be APPLIED once."""
        out: Counter = Counter()
        for d in self.drifts:
            for hour, profile, action, target in d.corrections:
                if action not in ("POSITION_UPDATE", "RESERVATION_UPDATE", "PAUSE_TRADING", "RESUME_TRADING"):
                    out[(hour, profile, action, target)] += 1
        for key, n in self.expected_parity.items():
            if key[2] in ("SYNTHETIC_EXIT", "QUARANTINE") and key not in out:
                out[key] += n
        return out

    def expected_pauses(self) -> Counter:
        return Counter({(h, p, a): n for (h, p, a, _t), n in self.expected_parity.items()
                        if a in ("PAUSE_TRADING", "RESUME_TRADING")})

    def poisoned_instruments(self) -> set[tuple[str, str]]:
        """(account, instrument) with a standing NO_GO or quarantine by construction."""
        out = set()
        for s in self.slices.values():
            acct = PROFILE[s.profile_id].account
            if s.status == "QUARANTINED" or (s.drift is not None and self.drifts[s.drift].kind in (
                    "over_fill", "late_fill", "db_ahead", "partial_untied_close")):
                out.add((acct, s.market.instrument))
        return out


def _py(value):
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_derived(conn, profile_id: str, at: pd.Timestamp) -> None:
    """What the trading system keeps in ``positions`` and ``capital_ledger``, computed from its tables."""
    conn.execute(sa.text(
        "INSERT INTO positions (profile_id, symbol, qty, avg_entry_price, updated_at)"
        " SELECT profile_id, symbol,"
        "  COALESCE(sum(CASE WHEN status = 'OPEN' THEN CASE WHEN side = 'long' THEN entry_qty - exit_qty"
        "                                                 ELSE exit_qty - entry_qty END END), 0),"
        "  sum(CASE WHEN status = 'OPEN' THEN (entry_qty - exit_qty) * entry_price END)"
        "   / NULLIF(sum(CASE WHEN status = 'OPEN' THEN entry_qty - exit_qty END), 0), :t"
        " FROM trade_history WHERE profile_id = :p GROUP BY profile_id, symbol"
        " ON CONFLICT (profile_id, symbol) DO UPDATE SET qty = excluded.qty,"
        " avg_entry_price = excluded.avg_entry_price, updated_at = excluded.updated_at"),
        {"p": profile_id, "t": at.to_pydatetime()})
    conn.execute(sa.text(
        "INSERT INTO capital_ledger (profile_id, reserved_usd, updated_at) VALUES (:p, "
        " COALESCE((SELECT sum((entry_qty - exit_qty) * entry_price) FROM trade_history"
        "           WHERE profile_id = :p AND status = 'OPEN'), 0)"
        " + COALESCE((SELECT sum((qty - filled_qty) * price) FROM orders WHERE profile_id = :p AND role = 'ENTRY'"
        "             AND status IN ('NEW', 'OPEN', 'PARTIALLY_FILLED')), 0), :t)"
        " ON CONFLICT (profile_id) DO UPDATE SET reserved_usd = excluded.reserved_usd,"
        " updated_at = excluded.updated_at"), {"p": profile_id, "t": at.to_pydatetime()})


def derived_from_tables(conn) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """DESIGN 4.6 on the final tables: signed remaining qty of OPEN slices per (profile, symbol) and the
    reservation per profile (OPEN slices' remaining x entry price + open ENTRY orders' unfilled x price)."""
    positions = {(r[0], r[1]): float(r[2]) for r in conn.execute(sa.text(
        "SELECT profile_id, symbol, sum(CASE WHEN side = 'long' THEN entry_qty - exit_qty ELSE exit_qty - entry_qty END)"
        " FROM trade_history WHERE status = 'OPEN' GROUP BY profile_id, symbol"))}
    reserved = {r[0]: float(r[1]) for r in conn.execute(sa.text(
        "SELECT p.profile_id,"
        " COALESCE((SELECT sum((entry_qty - exit_qty) * entry_price) FROM trade_history t"
        "           WHERE t.profile_id = p.profile_id AND t.status = 'OPEN'), 0)"
        " + COALESCE((SELECT sum((qty - filled_qty) * price) FROM orders o WHERE o.profile_id = p.profile_id"
        "             AND o.role = 'ENTRY' AND o.status IN ('NEW', 'OPEN', 'PARTIALLY_FILLED')), 0)"
        " FROM profiles p"))}
    return positions, reserved
