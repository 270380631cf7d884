"""Dagster resources: the trading database, the exchange, and the run's validated flags.

Resources only hand out connections and settings; they hold no reconciliation logic. Credentials
are read from the environment when a client is built and never stored on the resource, so they
cannot leak through Dagster's config display, run metadata or a repr.
"""

from __future__ import annotations

from contextlib import contextmanager

import sqlalchemy as sa
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from recon_pipeline.db.engine import engine_for, redacted
from recon_pipeline.settings import FLAGS, ReconSettings, database_url


class TradingDatabase(ConfigurableResource):
    """The trading Postgres (or the embedded SQLite file). Empty url: ``RECON_DATABASE_URL``."""

    url: str = Field(default="", description="SQLAlchemy URL; empty reads RECON_DATABASE_URL.")
    _engine: sa.engine.Engine | None = PrivateAttr(default=None)

    def resolved_url(self) -> str:
        return self.url or database_url()

    @property
    def engine(self) -> sa.engine.Engine:
        """The backfill's shared engine for this URL when one is open (``db.engine.shared_engine``),
        else this resource's own."""
        if self._engine is None:
            self._engine, _ = engine_for(self.resolved_url())
        return self._engine

    def describe(self) -> str:
        return redacted(self.resolved_url())

    @contextmanager
    def connect(self):
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def begin(self):
        with self.engine.begin() as conn:
            yield conn


class ExchangeClients(ConfigurableResource):
    """ccxt clients per account; credentials and base URL from ``RECON_EXCHANGE_<ACCOUNT>_*``."""

    timeout_ms: int = Field(default=10_000, description="Per-request timeout of the ccxt client.")
    enable_rate_limit: bool = Field(default=True, description="ccxt's built-in request throttle.")
    max_retries: int = Field(default=3, description="Retries of a retryable request (429, 5xx, timeout, reset).")
    retry_backoff_s: float = Field(default=0.5, description="First retry delay; doubles per attempt, capped at 10 s.")

    concurrency: int | None = Field(default=None, description=(
        "Requests in flight per account during a snapshot (symbols fetched in parallel over this many "
        "ccxt clients sharing one throttle). Empty: RECON_EXCHANGE_<ACCOUNT>_CONCURRENCY, else 4."))

    def options(self) -> dict:
        """The client settings (no credentials: those are read from the environment where a client is made)."""
        return {"timeout_ms": self.timeout_ms, "enable_rate_limit": self.enable_rate_limit,
                "max_retries": self.max_retries, "retry_backoff_s": self.retry_backoff_s}

    def clients(self, account: str) -> list:
        """The account's pool for one snapshot: the first client loads markets, all share its throttle."""
        from recon_pipeline.exchange.client import make_exchange_pool

        return make_exchange_pool(account, size=self.concurrency, **self.options())



class ReconConfig(ConfigurableResource):
    """The runbook flags of this run: the environment, overridden per run from the launchpad.

    Every field left empty keeps the environment's value; a set field is validated by the same
    rules as the environment variable it overrides.
    """

    dry_run: bool = Field(default=False, description="Whole batch DRY_RUN: nothing is written to trading tables.")
    parity_enabled: bool | None = Field(default=None, description="ENABLE_RECON_POSITION_PARITY_HEARTBEAT")
    parity_confirmations: int | None = Field(default=None, description="RECON_POSITION_PARITY_CONFIRMATIONS")
    parity_require_subtag: bool | None = Field(default=None, description="RECON_POSITION_PARITY_REQUIRE_SUBTAG_ATTRIBUTION")
    parity_max_notional_pct: float | None = Field(default=None, description="RECON_POSITION_PARITY_MAX_NOTIONAL_PCT")
    parity_dust_usd: float | None = Field(default=None, description="RECON_POSITION_PARITY_DUST_USD")
    parity_dry_run: bool | None = Field(default=None, description="RECON_POSITION_PARITY_DRY_RUN")
    watchdog_auto_resume: bool | None = Field(default=None, description="ENABLE_RECON_WATCHDOG_AUTO_RESUME")
    watchdog_min_pause_ms: int | None = Field(default=None, description="RECON_WATCHDOG_AUTO_RESUME_MIN_PAUSE_MS")
    watchdog_clean_cycles: int | None = Field(default=None, description="RECON_WATCHDOG_AUTO_RESUME_CLEAN_CYCLES")
    watchdog_cooldown_ms: int | None = Field(default=None, description="RECON_WATCHDOG_AUTO_RESUME_COOLDOWN_MS")
    backfill_require_strong: bool | None = Field(default=None, description="RECON_EXIT_BACKFILL_REQUIRE_STRONG_ATTRIBUTION")
    backfill_allow_heuristic: bool | None = Field(default=None, description="RECON_EXIT_BACKFILL_ALLOW_HEURISTIC_MATCH")
    backfill_grace_minutes: float | None = Field(default=None, description="RECON_EXIT_BACKFILL_FILL_AFTER_TRADE_GRACE_MINUTES")
    order_settle_seconds: float | None = Field(default=None, description="RECON_ORDER_SETTLE_SECONDS")

    def settings(self) -> ReconSettings:
        overrides = {flag.attr: getattr(self, flag.attr) for flag in FLAGS if hasattr(self, flag.attr)}
        overrides["dry_run"] = self.dry_run
        return ReconSettings.from_env().with_overrides(overrides)
