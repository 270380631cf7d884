"""The strict ccxt Binance client the snapshot assets use.

Why a subclass rather than plain ``ccxt.binance``: ccxt returns a malformed or non-JSON HTTP 200
body as a string (or, for positions, silently as ``[]``, which reads as "flat" and would make the
parity heartbeat close real positions). :class:`StrictBinance` turns every such body into
``ccxt.BadResponse``, checks the top-level shape of each endpoint's answer, retries transient
failures a bounded number of times with exponential back-off, and keeps credentials out of its
repr, its log lines and the messages it raises.

Configuration (DESIGN section 9): ``RECON_EXCHANGE_<ACCOUNT>_API_KEY``, ``..._SECRET`` and optionally
``..._URL`` (a ``scheme://host:port`` root that replaces Binance's hosts, paths kept: how tests and
the demo point ccxt at the loopback emulator).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import ccxt

from recon_pipeline.settings import SettingsError, _parse_bool, account_env_prefix

log = logging.getLogger(__name__)

# Options that restrict market loading to /api/v3/exchangeInfo and /fapi/v1/exchangeInfo
# (STACK_NOTES): no currencies, margin pairs, inverse or options markets.
MARKET_OPTIONS: dict[str, Any] = {
    "fetchMarkets": {"types": ["spot", "linear"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
}

# Errors worth another try: the exchange was busy, unreachable, slow, or failed internally (-1000).
# Not BadResponse (a body we cannot trust is not made trustworthy by asking again quickly and the
# snapshot must fail loudly), not ExchangeError (auth, bad request, order not found: deterministic).
_NOT_RETRYABLE = (ccxt.BadResponse, ccxt.CancelPending)

# The top-level JSON each endpoint must answer with; anything else is a BadResponse.
_LIST_PATHS = {"myTrades", "userTrades", "allOrders", "openOrders", "positionRisk", "leverageBracket"}
_DICT_KEYS = {"exchangeInfo": "symbols", "time": "serverTime", "order": "orderId", "account": None}
_EITHER_PATHS = {"premiumIndex", "ticker/price"}  # one object with ?symbol=, a list without
MAX_BACKOFF_S = 10.0  # longest pause between two attempts; a longer Retry-After fails the request


def is_retryable(exc: BaseException) -> bool:
    """DDoSProtection (429; a 418 IP ban is refused in ``fetch2``), ExchangeNotAvailable (5xx),
    RequestTimeout, NetworkError, -1000."""
    return isinstance(exc, ccxt.OperationFailed) and not isinstance(exc, _NOT_RETRYABLE)


class Redactor:
    """Replaces the credentials (and request signatures) in any text that may reach a log or a user."""

    _SIGNATURE = re.compile(r"signature=[0-9a-fA-F%]+")

    def __init__(self, *secrets: str | None):
        self._secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return self._SIGNATURE.sub("signature=***", text)


class _RedactingLogger:
    """Stands in for ccxt's ``self.logger``: ccxt logs request headers (the API key) at DEBUG."""

    def __init__(self, logger: logging.Logger, redact: Redactor):
        self._logger, self._redact = logger, redact

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging API name
        return self._logger.isEnabledFor(level)

    def log(self, level: int, msg: Any, *args: Any, **_: Any) -> None:
        if self._logger.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            self._logger.log(level, "%s", self._redact(text))

    def debug(self, msg: Any, *args: Any, **kw: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kw)

    def info(self, msg: Any, *args: Any, **kw: Any) -> None:
        self.log(logging.INFO, msg, *args, **kw)

    def warning(self, msg: Any, *args: Any, **kw: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kw)

    def error(self, msg: Any, *args: Any, **kw: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kw)


class SharedThrottle:
    """ccxt's request spacing, shared by every client of one account.

    ccxt (sync) spaces requests per client: before each one it sleeps until ``rateLimit x cost`` ms
    after the client's previous request. Clients fetching in parallel for one account would each
    keep their own spacing and together exceed the account's limits, so the clients of one pool
    reserve their slots here instead: under a lock, a request's slot is at least ``rateLimit x cost``
    after the previous slot, then it sleeps (outside the lock) until its slot. One client alone gets
    exactly ccxt's spacing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0.0

    def reserve(self, now_ms: float, spacing_ms: float) -> float:
        """The next slot (ms): at least ``spacing_ms`` after the previous one, not before ``now_ms``."""
        with self._lock:
            slot = max(now_ms, self._last_ms + spacing_ms)
            self._last_ms = slot
        return slot

    def wait(self, now_ms: float, spacing_ms: float) -> float:
        """Reserve the next slot and sleep until it. Returns the seconds slept."""
        slot = self.reserve(now_ms, spacing_ms)
        delay = (slot - now_ms) / 1000.0
        if delay > 0:
            time.sleep(delay)
        return max(delay, 0.0)


class StrictBinance(ccxt.binance):
    """``ccxt.binance`` that rejects untrustworthy bodies and retries transient failures, boundedly.

    ``max_retries`` extra attempts per request (each re-signed, so a long back-off cannot push a signed
    request out of Binance's recvWindow), sleeping ``retry_backoff_s * 2**attempt`` (capped at 10 s), or
    the 429's ``Retry-After`` when that is longer (above 10 s: no retry). A 418 (IP ban) is not retried.
    """

    def __init__(self, config: dict[str, Any] | None = None, *, account: str = "?", max_retries: int = 3,
                 retry_backoff_s: float = 0.5):
        super().__init__(config or {})
        self.recon_account = account
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.redact = Redactor(self.secret, self.apiKey)
        self.logger = _RedactingLogger(logging.getLogger("recon_pipeline.exchange.ccxt"), self.redact)
        self.shared_throttle: SharedThrottle | None = None

    def throttle(self, cost=None):
        """ccxt's spacing, through the pool's :class:`SharedThrottle` when the client is in one."""
        if self.shared_throttle is None:
            return super().throttle(cost)
        self.shared_throttle.wait(float(self.milliseconds()), self.rateLimit * (1 if cost is None else cost))
        return None

    def __repr__(self) -> str:
        base = self.urls.get("api", {}).get("public", "?") if isinstance(self.urls.get("api"), dict) else "?"
        return f"StrictBinance(account={self.recon_account!r}, api={base!r})"

    __str__ = __repr__

    # -- strict bodies --
    def fetch(self, url, method="GET", headers=None, body=None):
        response = super().fetch(url, method, headers, body)
        if not isinstance(response, dict | list):
            kind = "HTML" if isinstance(response, str) and "<html" in response[:200].lower() else "non-JSON"
            snippet = self.redact(str(response)[:80])
            raise ccxt.BadResponse(f"{self.id} {method} {self.redact(url.split('?')[0])}: {kind} body "
                                   f"with HTTP 200: {snippet!r}")
        return response

    def fetch2(self, path, api=["public"], method="GET", params={}, config={}):  # noqa: B006 - ccxt's signature
        attempt = 0
        while True:
            try:
                response = super().fetch2(path, api, method, params, config)
                _check_shape(self.id, path, params, response)
                return response
            except Exception as exc:
                if not is_retryable(exc) or attempt >= self.max_retries or _is_ip_ban(self.id, exc):
                    raise
                delay = min(MAX_BACKOFF_S, self.retry_backoff_s * (2 ** attempt))
                if isinstance(exc, ccxt.DDoSProtection):
                    wait = _retry_after(self.last_response_headers)
                    if wait is not None and wait > MAX_BACKOFF_S:
                        raise  # the exchange asks for a longer pause than one snapshot may wait: fail now
                    delay = max(delay, wait or 0.0)
                attempt += 1
                log.warning("exchange account=%s %s %s: %s; retry %d/%d in %.2fs", self.recon_account, method, path,
                            type(exc).__name__, attempt, self.max_retries, delay)
                time.sleep(delay)


def _is_ip_ban(exchange_id: str, exc: BaseException) -> bool:
    """HTTP 418: Binance has banned the IP for ignoring 429s. Asking again extends the ban (bans grow
    from 2 minutes to 3 days for repeat offenders), so a 418 is never retried."""
    return isinstance(exc, ccxt.DDoSProtection) and str(exc).startswith(f"{exchange_id} 418 ")


def _retry_after(headers: Any) -> float | None:
    """Seconds of the ``Retry-After`` header of the last answer (Binance sends it with 429/418)."""
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


def _check_shape(exchange_id: str, path: str, params: Mapping, response: Any) -> None:
    """The endpoint answered with the JSON shape Binance documents, or BadResponse."""
    if path in _LIST_PATHS:
        ok, want = isinstance(response, list), "a JSON array"
    elif path in _DICT_KEYS:
        key = _DICT_KEYS[path]
        ok = isinstance(response, dict) and (key is None or key in response)
        want = "a JSON object" + (f" with {key!r}" if key else "")
    elif path in _EITHER_PATHS:
        wants_one = bool(params.get("symbol"))
        ok = isinstance(response, dict) if wants_one else isinstance(response, list)
        want = "a JSON object" if wants_one else "a JSON array"
    else:
        return
    if path == "account" and ok and "balances" not in response and "positions" not in response:
        ok, want = False, "an account object with 'balances' or 'positions'"
    if not ok:
        raise ccxt.BadResponse(f"{exchange_id} {path}: expected {want}, got {type(response).__name__}")


def _exchange_url(var: str, raw: str) -> str:
    """Validate ``scheme://host[:port]`` and return it without a trailing slash."""
    try:
        parts = urlsplit(raw.strip())
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        parts, port = None, None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
            or parts.path not in ("", "/") or parts.query or parts.fragment or parts.username):
        raise SettingsError(f"{var}={raw!r} is not a base URL; expected scheme://host:port "
                            "(e.g. http://127.0.0.1:8765), with no path")
    netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
    return f"{parts.scheme}://{netloc}"


def _rewrite_hosts(urls: Any, base: str) -> Any:
    """Every Binance API root keeps its path and gets ``base`` as scheme and host."""
    if isinstance(urls, dict):
        return {key: _rewrite_hosts(value, base) for key, value in urls.items()}
    if isinstance(urls, str) and urls.startswith(("http://", "https://")):
        return base + urlsplit(urls).path
    return urls


DEFAULT_CONCURRENCY = 4  # clients per account in a snapshot: requests in flight at once


def exchange_concurrency(account: str, env: Mapping[str, str] = os.environ,
                         default: int = DEFAULT_CONCURRENCY) -> int:
    """``RECON_EXCHANGE_<ACCOUNT>_CONCURRENCY`` (1-32), else ``default``; a bad value names the variable."""
    var = account_env_prefix(account) + "CONCURRENCY"
    raw = (env.get(var) or "").strip()
    if not raw:
        value = default
    else:
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{var}={raw!r} is not an integer (requests in flight per account, 1-32)") from None
    if not 1 <= value <= 32:
        raise SettingsError(f"{var}={value} is out of range: requests in flight per account must be 1-32")
    return value


def make_exchange_pool(account: str, env: Mapping[str, str] = os.environ, *, size: int | None = None,
                       **kwargs: Any) -> list[StrictBinance]:
    """``size`` clients of ``account`` (default :func:`exchange_concurrency`) for parallel per-symbol
    fetches: one request in flight per client (a ccxt client keeps per-request state: last URL,
    headers, throttle clock, HTTP session), all spaced by one :class:`SharedThrottle`, so the pool
    asks no more of the account's rate limit than one client does. The first client is the one that
    loads markets; :func:`recon_pipeline.exchange.fetch.share_markets` hands them to the others."""
    size = exchange_concurrency(account, env) if size is None else size
    if size < 1:
        raise SettingsError(f"an exchange pool needs at least one client, not {size}")
    clients = [make_exchange(account, env, **kwargs) for _ in range(size)]
    if size > 1:
        shared = SharedThrottle()
        for client in clients:
            client.shared_throttle = shared
    return clients


def make_exchange(account: str, env: Mapping[str, str] = os.environ, *, timeout_ms: int = 10_000,
                  enable_rate_limit: bool = True, max_retries: int = 3, retry_backoff_s: float = 0.5,
                  options: Mapping[str, Any] | None = None) -> StrictBinance:
    """A :class:`StrictBinance` for ``account``, credentials and base URL from the environment.

    Missing ``_API_KEY`` / ``_SECRET`` or a bad ``_URL`` is a :class:`SettingsError` naming the
    variable (never its value, for the credentials). ``_RATE_LIMIT=false`` switches ccxt's request
    throttle off for the account (default on, as ``enable_rate_limit``): ccxt spaces Binance requests
    by endpoint weight (``fetch_my_trades`` waits 250 ms), which is right against Binance and pure
    waiting against a host without limits, such as the loopback emulator or a caching proxy.
    """
    prefix = account_env_prefix(account)
    creds = {}
    for suffix in ("API_KEY", "SECRET"):
        var = prefix + suffix
        value = (env.get(var) or "").strip()
        if not value:
            raise SettingsError(f"{var} is not set: the exchange {suffix.lower().replace('_', ' ')} of "
                                f"account {account!r}")
        creds[suffix] = value
    raw_url = env.get(prefix + "URL")
    base = _exchange_url(prefix + "URL", raw_url) if raw_url and raw_url.strip() else None
    if timeout_ms <= 0:
        raise SettingsError(f"timeout_ms={timeout_ms} must be positive")
    raw_limit = (env.get(prefix + "RATE_LIMIT") or "").strip()
    if raw_limit:
        enable_rate_limit = _parse_bool(prefix + "RATE_LIMIT", raw_limit)
    exchange = StrictBinance({
        "apiKey": creds["API_KEY"],
        "secret": creds["SECRET"],
        "timeout": int(timeout_ms),
        "enableRateLimit": bool(enable_rate_limit),
        "options": {**MARKET_OPTIONS, **dict(options or {})},
    }, account=account, max_retries=max_retries, retry_backoff_s=retry_backoff_s)
    if base is not None:
        exchange.urls["api"] = _rewrite_hosts(exchange.urls["api"], base)
    return exchange
