"""The runbook's flags: names, defaults, validation.

Every flag of ``../shared/runbook/reconciliation.md`` and DESIGN sections 4-5 is read from the
environment once, validated, and carried as an immutable :class:`ReconSettings`. A bad value is an
error that names the variable and the accepted range: a pipeline that silently fell back to a default
would run the heartbeat with a confirmation gate nobody asked for.

Per-run overrides (the Dagster launchpad, ``reconcile --dry-run``) go through
:meth:`ReconSettings.with_overrides`, which validates them by the same rules.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class SettingsError(ValueError):
    """A flag has a value the pipeline cannot run with; the message names the variable."""


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; accepted: true/false (also 1/0, yes/no, on/off)")


def _int_parser(minimum: int, maximum: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        accepted = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        try:
            value = int(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not an integer; accepted: {accepted}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise SettingsError(f"{name}={raw!r} is out of range; accepted: {accepted}")
        return value

    return parse


def _float_parser(minimum: float, *, exclusive_min: bool = False) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        accepted = f"a finite number {'>' if exclusive_min else '>='} {minimum:g}"
        try:
            value = float(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number; accepted: {accepted}") from None
        if not math.isfinite(value) or value < minimum or (exclusive_min and value == minimum):
            raise SettingsError(f"{name}={raw!r} is out of range; accepted: {accepted}")
        return value

    return parse


@dataclass(frozen=True)
class Flag:
    """One environment variable: where it lands, its default and how it is checked."""

    env: str
    attr: str
    default: Any
    parse: Callable[[str, str], Any]
    doc: str


FLAGS: tuple[Flag, ...] = (
    Flag("ENABLE_RECON_POSITION_PARITY_HEARTBEAT", "parity_enabled", True, _parse_bool,
         "Run the position-parity heartbeat (ghost self-healing) in the live run of a window."),
    Flag("RECON_POSITION_PARITY_CONFIRMATIONS", "parity_confirmations", 3, _int_parser(1, 1000),
         "Consecutive evaluated checks a ghost slice must be seen in before any action."),
    Flag("RECON_POSITION_PARITY_REQUIRE_SUBTAG_ATTRIBUTION", "parity_require_subtag", True, _parse_bool,
         "Only slices whose entry client order id carries the profile's sub_tag may be closed "
         "synthetically; the rest are quarantined."),
    Flag("RECON_POSITION_PARITY_MAX_NOTIONAL_PCT", "parity_max_notional_pct", 0.5,
         _float_parser(0.0, exclusive_min=True),
         "Watchdog threshold: ghost mismatch notional / allocated capital strictly above this pauses."),
    Flag("RECON_POSITION_PARITY_DUST_USD", "parity_dust_usd", 1.0, _float_parser(0.0),
         "An exchange position with notional below this is effectively zero."),
    Flag("RECON_POSITION_PARITY_DRY_RUN", "parity_dry_run", False, _parse_bool,
         "Store parity and watchdog corrections as DRY_RUN: observe without applying."),
    Flag("ENABLE_RECON_WATCHDOG_AUTO_RESUME", "watchdog_auto_resume", True, _parse_bool,
         "Lift a parity_watchdog pause once reconciliation stays clean."),
    Flag("RECON_WATCHDOG_AUTO_RESUME_MIN_PAUSE_MS", "watchdog_min_pause_ms", 900_000, _int_parser(0),
         "A pause must have lasted this long (exchange time) before auto-resume."),
    Flag("RECON_WATCHDOG_AUTO_RESUME_CLEAN_CYCLES", "watchdog_clean_cycles", 2, _int_parser(1, 1000),
         "Consecutive clean checks (the current one included) needed before auto-resume."),
    Flag("RECON_WATCHDOG_AUTO_RESUME_COOLDOWN_MS", "watchdog_cooldown_ms", 1_800_000, _int_parser(0),
         "Minimum time since the profile's last auto-resume."),
    Flag("RECON_EXIT_BACKFILL_REQUIRE_STRONG_ATTRIBUTION", "backfill_require_strong", True, _parse_bool,
         "Only fills tied to the profile by client_order_id, trade_id_hint or sub_tag may be exit evidence."),
    Flag("RECON_EXIT_BACKFILL_ALLOW_HEURISTIC_MATCH", "backfill_allow_heuristic", False, _parse_bool,
         "Allow the heuristic slice assignment modes single_open_trade and qty_unique."),
    Flag("RECON_EXIT_BACKFILL_FILL_AFTER_TRADE_GRACE_MINUTES", "backfill_grace_minutes", 5.0,
         _float_parser(0.0),
         "A fill earlier than the slice's entry_time minus this many minutes is stale evidence."),
    Flag("RECON_ORDER_SETTLE_SECONDS", "order_settle_seconds", 60.0, _float_parser(0.0),
         "Orders created or updated this close to the snapshot are skipped: they may be in flight."),
    Flag("RECON_SCHEDULE_MINUTE_OF_HOUR", "schedule_minute_of_hour", 5, _int_parser(0, 59),
         "Minute past the hour at which the hourly schedule reconciles the hour that just closed."),
)

_BY_ATTR = {flag.attr: flag for flag in FLAGS}


@dataclass(frozen=True)
class ReconSettings:
    """The validated flags of one run. Build with :meth:`from_env`; never mutate."""

    parity_enabled: bool = True
    parity_confirmations: int = 3
    parity_require_subtag: bool = True
    parity_max_notional_pct: float = 0.5
    parity_dust_usd: float = 1.0
    parity_dry_run: bool = False
    watchdog_auto_resume: bool = True
    watchdog_min_pause_ms: int = 900_000
    watchdog_clean_cycles: int = 2
    watchdog_cooldown_ms: int = 1_800_000
    backfill_require_strong: bool = True
    backfill_allow_heuristic: bool = False
    backfill_grace_minutes: float = 5.0
    order_settle_seconds: float = 60.0
    schedule_minute_of_hour: int = 5
    # Whole-batch dry run (``reconcile --dry-run`` / run config): nothing touches trading tables.
    dry_run: bool = field(default=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReconSettings:
        """Read every flag; unset or empty means the runbook default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for flag in FLAGS:
            raw = env.get(flag.env)
            if raw is not None and raw.strip() != "":
                values[flag.attr] = flag.parse(flag.env, raw)
        return cls(**values)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> ReconSettings:
        """Apply per-run overrides keyed by env name or attribute name, validated like the env."""
        if not overrides:
            return self
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if value is None:
                continue
            if key == "dry_run":
                changes["dry_run"] = _parse_bool("dry_run", str(value))
                continue
            flag = _BY_ATTR.get(key) or next((f for f in FLAGS if f.env == key), None)
            if flag is None:
                raise SettingsError(f"unknown setting {key!r}; known: {', '.join(f.env for f in FLAGS)}")
            changes[flag.attr] = flag.parse(flag.env, str(value).lower() if isinstance(value, bool) else str(value))
        return dataclasses.replace(self, **changes)

    def as_env(self) -> dict[str, str]:
        """The flags as the environment would spell them (for docs, metadata and health)."""
        out = {}
        for flag in FLAGS:
            value = getattr(self, flag.attr)
            out[flag.env] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


def database_url(env: Mapping[str, str] | None = None) -> str:
    """``RECON_DATABASE_URL``, or the embedded SQLite file of the demo."""
    env = os.environ if env is None else env
    url = (env.get("RECON_DATABASE_URL") or "").strip()
    if url:
        if "://" not in url:
            raise SettingsError(
                f"RECON_DATABASE_URL={url!r} is not a SQLAlchemy URL; accepted: "
                "postgresql+psycopg2://user@host:port/db or sqlite:///path/to/file.db"
            )
        return url
    home = env.get("RECON_HOME") or os.path.join(os.getcwd(), ".recon")
    return f"sqlite:///{os.path.join(home, 'trading.db')}"


def account_env_prefix(account: str) -> str:
    """``RECON_EXCHANGE_<ACCOUNT>_``: the account upper-cased, non-alphanumerics replaced by ``_``."""
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in account.upper())
    return f"RECON_EXCHANGE_{cleaned}_"
