"""``/metrics``: the runbook's Prometheus names, read from the database on every scrape.

A custom :class:`ReconCollector` computes every family from :func:`status.read_status` when the
registry is collected; it is registered on a private :class:`CollectorRegistry` (no module-level
state, no default process/platform collectors), so two servers in one process never share values.
If the database cannot be read, ``collect`` raises and the HTTP layer answers 503: Prometheus then
records the scrape as failed (``up == 0``) instead of ingesting stale or partial values.

Counters vs gauges (the runbook calls the first three ``*_total``):

- ``reconciliation_mismatch_total``, ``reconciliation_missing_from_exchange_total``,
  ``reconciliation_missing_in_db_total`` are **counters**: the sum of ``mismatch_count`` /
  ``missing_from_exchange`` / ``missing_in_db`` over every SUCCESS row of ``recon_runs`` for the
  profile. They grow as windows are reconciled. ``recon_runs`` keeps one row per (window, profile),
  so re-running a window replaces that window's contribution: a re-run that finds fewer findings (or
  fails) lowers the sum, which ``rate()``/``increase()`` treat as a counter reset. Use them for
  "how many findings per hour" trends; use the gauges for "is it elevated now".
- ``reconciliation_mismatch_count`` and friends are **gauges** of the latest successful run.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.engine import Engine

from recon_pipeline.observability.status import (
    PARITY_MAX_FIELD,
    PARITY_TOTAL_FIELD,
    WATCHDOG_FIELD,
    Now,
    ReconStatus,
    read_status,
)

LABELS = ["profile"]

# (metric name, recon_runs column summed over SUCCESS rows, help)
COUNTERS = (
    ("reconciliation_mismatch_total", "mismatch_count",
     "Findings (all kinds) summed over every successful recon_runs row of the profile."),
    ("reconciliation_missing_from_exchange_total", "missing_from_exchange",
     "ORDER_MISSING_FROM_EXCHANGE findings summed over every successful recon_runs row of the profile."),
    ("reconciliation_missing_in_db_total", "missing_in_db",
     "ORDER_MISSING_IN_DB findings summed over every successful recon_runs row of the profile."),
)

# (metric name, runbook health field, help); values from the latest successful (live) run.
LATEST_GAUGES = (
    ("reconciliation_mismatch_count", "reconciliationMismatchCount",
     "Findings of the latest successful run (runbook reconciliationMismatchCount)."),
    ("reconciliation_missing_from_exchange_count", "reconciliationMissingFromExchange",
     "ORDER_MISSING_FROM_EXCHANGE findings of the latest successful run."),
    ("reconciliation_missing_in_db_count", "reconciliationMissingInDb",
     "ORDER_MISSING_IN_DB findings of the latest successful run."),
    ("reconciliation_parity_mismatch_trades", "reconciliationParityMismatchTrades",
     "Ghost or quantity-mismatch slices seen by the parity heartbeat in the latest successful live run."),
    ("reconciliation_parity_quarantined_trades", "reconciliationParityQuarantinedTrades",
     "Slices quarantined by the parity heartbeat in the latest successful live run."),
    ("reconciliation_parity_auto_closed_trades", "reconciliationParityAutoClosedTrades",
     "Slices synthetically closed by the parity heartbeat in the latest successful live run."),
    ("reconciliation_parity_max_mismatch_notional_usd", PARITY_MAX_FIELD,
     "Largest single parity mismatch notional (USD) in the latest successful live run."),
    ("reconciliation_parity_total_mismatch_notional_usd", PARITY_TOTAL_FIELD,
     "Total parity mismatch notional (USD) in the latest successful live run."),
    ("reconciliation_integrity_watchdog_triggered", WATCHDOG_FIELD,
     "1 when the integrity watchdog triggered a pause in the latest successful live run."),
)


class ReconCollector(Collector):
    """Reads ``recon_runs`` and friends on each scrape; holds no values between scrapes."""

    def __init__(self, engine: Engine, *, now: Now = None, max_age_seconds: int | None = None):
        self.engine = engine
        self.now = now
        self.max_age_seconds = max_age_seconds

    def describe(self) -> list[Metric]:
        # Declared empty so registering does not trigger a database read.
        return []

    def collect(self) -> Iterator[Metric]:
        status = read_status(self.engine, now=self.now, max_age_seconds=self.max_age_seconds)
        yield from families(status)


def _gauge(name: str, doc: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=LABELS)


def families(status: ReconStatus) -> list[Metric]:
    """Every metric family for one status snapshot (also handy for tests without HTTP)."""
    out: list[Metric] = []
    for name, column, doc in COUNTERS:
        fam = CounterMetricFamily(name, doc, labels=LABELS)
        for pid, p in status.profiles.items():
            fam.add_metric([pid], float(p.totals.get(column, 0)))
        out.append(fam)

    runs = CounterMetricFamily("reconciliation_runs_total",
                               "recon_runs rows (one per reconciled window) by latest status.",
                               labels=["profile", "status"])
    for pid, p in status.profiles.items():
        for run_status in sorted({"SUCCESS", "FAILED", *p.runs_by_status}):
            runs.add_metric([pid, run_status], float(p.runs_by_status.get(run_status, 0)))
    out.append(runs)

    for name, field_name, doc in LATEST_GAUGES:
        fam = _gauge(name, doc)
        for pid, p in status.profiles.items():
            value = p.runbook_fields()[field_name]
            if value is not None:  # no (live) successful run yet: no sample rather than a fake zero
                fam.add_metric([pid], float(value))
        out.append(fam)

    healthy = _gauge("reconciliation_loop_healthy",
                     "1 when the profile's reconciliation loop is healthy (see /internal/health).")
    last_run = _gauge("reconciliation_last_run_timestamp_seconds",
                      "Unix time the latest run of the profile (any status) finished.")
    last_success = _gauge("reconciliation_last_success_timestamp_seconds",
                          "Unix time the latest successful run of the profile finished.")
    last_failed = _gauge("reconciliation_last_run_failed",
                         "1 when the latest run of the profile FAILED.")
    streak = _gauge("reconciliation_mismatch_consecutive_runs",
                    "Successful runs with findings since the profile's latest clean successful run.")
    pending = _gauge("reconciliation_pending_batches", "Corrective batches waiting to be applied (PENDING).")
    pending_age = _gauge("reconciliation_oldest_pending_batch_age_seconds",
                         "Age of the oldest PENDING corrective batch (0 when none).")
    blocked = _gauge("reconciliation_blocked_batches", "Corrective batches BLOCKED by validation.")
    paused = _gauge("reconciliation_trading_paused", "1 when profiles.trading_paused is set.")
    open_pauses = _gauge("reconciliation_open_pauses", "Open trading_pauses rows (resumed_at IS NULL).")
    lock_held = _gauge("reconciliation_lock_held", "1 while the profile's reconciliation lock is held.")
    lock_age = _gauge("reconciliation_lock_held_seconds",
                      "How long the profile's reconciliation lock has been held (0 when free).")
    for pid, p in status.profiles.items():
        healthy.add_metric([pid], 1.0 if p.healthy else 0.0)
        if p.latest is not None:
            last_run.add_metric([pid], p.latest.finished_at.timestamp())
            last_failed.add_metric([pid], 1.0 if p.latest.status == "FAILED" else 0.0)
        if p.last_success is not None:
            last_success.add_metric([pid], p.last_success.finished_at.timestamp())
        streak.add_metric([pid], float(p.mismatch_streak))
        pending.add_metric([pid], float(p.pending_batches))
        age = p.to_json(status.checked_at)["oldestPendingBatchAgeSeconds"]
        pending_age.add_metric([pid], float(age or 0.0))
        blocked.add_metric([pid], float(p.blocked_batches))
        paused.add_metric([pid], 1.0 if p.trading_paused else 0.0)
        open_pauses.add_metric([pid], float(len(p.open_pauses)))
        if p.lock_held is not None:
            lock_held.add_metric([pid], 1.0 if p.lock_held else 0.0)
            held = (status.checked_at - p.lock_held_since).total_seconds() if p.lock_held_since else 0.0
            lock_age.add_metric([pid], max(0.0, held))
    out += [healthy, last_run, last_success, last_failed, streak, pending, pending_age, blocked,
            paused, open_pauses, lock_held, lock_age]
    return out


def make_registry(engine: Engine, *, now: Now = None, max_age_seconds: int | None = None) -> CollectorRegistry:
    """A private registry holding only the reconciliation collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReconCollector(engine, now=now, max_age_seconds=max_age_seconds))
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """(exposition body, content type); raises whatever the database read raised."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
