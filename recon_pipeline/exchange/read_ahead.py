"""Read-ahead for ``recon-pipeline backfill``: the next window's exchange history, fetched by a worker
process while this one reconciles the current window.

Why: windows of one profile run one after the other (a window's batch assumes the earlier ones were
applied), and a window's exchange snapshot is mostly waiting for the exchange and parsing its JSON.
In a backfill the next window is known in advance, and most of what its snapshot reads cannot change
any more: a fill is never edited, and the orders created in a past hour are a fixed set. So while
window k runs its rules, reports and apply, a worker process pages window k+1's fills and the orders
created in it (``allOrders``), per symbol, and window k+1's snapshot takes them instead of paging them.

What stays exact (the frames equal a snapshot that paged everything itself, at the time it ran):

- only a span that had ended by the exchange's own clock when it was read is read ahead (and only a
  window that will not be the live one), and it is used only for a window whose as-of time is exactly
  the span's end;
- everything that can still change is asked at snapshot time as before: the clock, markets and
  positions, the fills and orders before the span (an OPEN slice can reach further back than the
  window), every open order, each order looked up by id, and each order that was still open when
  the span was read (``fetch.symbol_orders`` fetches it again unless the open list answers for it);
- a read-ahead that failed, or covers other symbols, only costs the paging it would have saved:
  the snapshot pages what it lacks, and a real exchange fault surfaces there, named as always.

The worker is a separate process (spawned, so none of Dagster's threads are copied), with its own ccxt
clients. With ccxt's request throttle on, both processes space their requests twice as far apart as
one client would, so together they ask no more of the account's rate limit than a single run.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Span:
    """One symbol's history read ahead: fills with ``lo <= ts < hi`` and the orders created in
    ``[lo, hi]`` (both as ``fetch``'s row tuples / dicts)."""

    symbol: str
    lo: int
    hi: int
    fills: tuple = ()
    orders: tuple = ()


# --- the worker process ---------------------------------------------------------------------------------

_POOLS: dict[tuple, list] = {}  # in the worker: the account's clients, kept across windows


def read_spans(account: str, options: dict, concurrency: int, symbols: list[str], lo: int, hi: int,
               budget_share: int = 2) -> dict[str, Span]:
    """Every symbol's :class:`Span` of ``[lo, hi)``, or ``{}`` when the span has not ended on the
    exchange's clock. Runs in the worker; raises on any failure (nothing partial is returned)."""
    import os

    from recon_pipeline.exchange import fetch
    from recon_pipeline.exchange.client import make_exchange_pool
    from recon_pipeline.settings import account_env_prefix

    prefix = account_env_prefix(account)
    account_env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(prefix)))
    key = (account, tuple(sorted(options.items())), concurrency, account_env)
    clients = _POOLS.get(key)
    if clients is None:
        clients = make_exchange_pool(account, size=concurrency, **options)
        share_rate_limit(clients, budget_share)
        _POOLS[key] = clients
    now = fetch.epoch_ms(fetch.fetch_server_time(clients[0]))
    if now < hi:
        return {}
    # Markets afresh for every span, as the snapshot loads them (a contract size is read from them).
    with fetch.guard(clients[0], account, "/api/v3/exchangeInfo+/fapi/v1/exchangeInfo"):
        clients[0].load_markets(reload=True)
    for other in clients[1:]:
        other.markets = None
    fetch.share_markets(clients)

    def one(ex: Any, symbol: str) -> Span:
        fills = fetch.symbol_fill_rows(ex, account, symbol, lo, hi)
        orders = fetch.symbol_span_orders(ex, account, symbol, lo, hi + 1)
        return Span(symbol, lo, hi, tuple(fills), tuple(orders))

    spans = fetch.per_symbol_in_parallel(clients, sorted(set(symbols)), one)
    return {span.symbol: span for span in spans}


def share_rate_limit(clients: list, share: int) -> None:
    """Space the clients' throttled requests ``share`` times further apart: the backfill and its worker
    each take their share of the account's budget (nothing to do when ccxt's throttle is off)."""
    for client in clients:
        if client.enableRateLimit:
            client.rateLimit *= share


# --- the backfill's side --------------------------------------------------------------------------------


@dataclass
class ReadAhead:
    """The windows a backfill will run, and the spans being read for them (one worker process)."""

    windows: set[tuple[str, int]]             # (profile_id, window start ms) the backfill will run
    budget_share: int = 2
    _executor: ProcessPoolExecutor | None = None
    _pending: dict[tuple[str, int, int], Future] = field(default_factory=dict)
    _settled: dict[str, dict[str, Span]] = field(default_factory=dict)  # account -> the last window's history
    used: int = 0
    missed: int = 0

    def keep(self, account: str, settled: dict[str, Span]) -> None:
        """Keep the history a window's snapshot just read (``fetch.fetch_activity(settled=...)``), which
        had ended on the exchange's clock, for the next window of the account.

        Why: a window's fills span starts before the window when an OPEN slice was entered shortly
        before it (the span reaches back to its entry minus the grace), and that part lies in the
        window read just before, whose history cannot change any more. The next window takes it from
        here (:meth:`take`) instead of paging each symbol's fills and orders again (two requests per
        symbol and window). Only the last window is kept."""
        self._settled[account] = dict(settled)

    def schedule(self, account: str, profile_id: str, symbols: Iterable[str], lo: int, hi: int, now: int,
                 options: dict, concurrency: int) -> bool:
        """Start reading ``[lo, hi)`` for ``symbols`` if the backfill will run that window of
        ``profile_id`` and it will not be the live window (it ended an hour before ``now``)."""
        symbols = sorted(set(symbols))
        if (profile_id, lo) not in self.windows or not symbols or now < hi + HOUR_MS:
            return False
        key = (account, lo, hi)
        if key in self._pending:
            return False
        try:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            future = self._executor.submit(read_spans, account, dict(options), concurrency, symbols, lo, hi,
                                           self.budget_share)
        except Exception as exc:  # noqa: BLE001 - a worker that cannot start only costs the time it saves
            log.warning("read-ahead is off for the rest of this backfill: the worker could not start (%s: %s)",
                        type(exc).__name__, str(exc)[:300])
            self.windows.clear()
            return False
        self._pending[key] = future
        return True

    def take(self, account: str, lo: int, hi: int) -> dict[str, Span]:
        """The spans read for ``[lo, hi)`` (waiting for them if still being read); ``{}`` when none were
        scheduled or the read failed (the snapshot then pages everything itself)."""
        future = self._pending.pop((account, lo, hi), None)
        if future is None:
            return {}
        try:
            spans = future.result()
        except Exception as exc:  # noqa: BLE001 - the snapshot pages it itself, and reports a real fault
            log.warning("read-ahead of account=%s [%d, %d) failed (%s: %s); the snapshot fetches it itself",
                        account, lo, hi, type(exc).__name__, str(exc)[:300])
            self.missed += 1
            return {}
        self.used += 1 if spans else 0
        self.missed += 0 if spans else 1
        kept = self._settled.pop(account, {})
        return {sym: _joined(kept.get(sym), span) for sym, span in spans.items()}

    def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def _joined(before: Span | None, span: Span) -> Span:
    """``span`` extended back by the history kept ``before`` it, when that ends where it starts (an
    order created at the seam is in both: the snapshot keeps one row per order id)."""
    if before is None or before.hi != span.lo:
        return span
    return Span(span.symbol, before.lo, span.hi, before.fills + span.fills, before.orders + span.orders)


_ACTIVE: ReadAhead | None = None


def active() -> ReadAhead | None:
    """The read-ahead of the backfill running in this process, if any."""
    return _ACTIVE


@contextmanager
def reading_ahead(windows: Iterable[tuple[str, int]]):
    """Install a :class:`ReadAhead` for the windows (profile_id, start ms) of a backfill."""
    global _ACTIVE
    previous = _ACTIVE
    ahead = ReadAhead(set(windows))
    _ACTIVE = ahead
    try:
        yield ahead
    finally:
        _ACTIVE = previous
        ahead.close()
