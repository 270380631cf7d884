"""Run a Great Expectations suite against an in-memory DataFrame, offline and quietly.

GE 1.x keeps a process-global context and imports in about 4 s, so it is imported lazily, on the
first validation, and one ephemeral context is reused for the life of the process, as is each suite
(its asset, batch definition and suite are built on the suite's first run). Suites are plain
lists of expectation objects built by the callers; this module only runs them and turns the result
into something a report can show: which expectation failed, how many rows, and examples.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

_lock = threading.Lock()
_state: dict = {}


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int
    examples: list
    detail: str = ""


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    success: bool
    outcomes: list[ExpectationOutcome] = field(default_factory=list)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def describe(self) -> str:
        if self.success:
            return f"{self.suite}: all {len(self.outcomes)} expectations passed"
        return f"{self.suite}: " + "; ".join(
            f"{o.expectation}({o.column or ''}) failed on {o.unexpected_count} rows, e.g. {o.examples[:3]}"
            for o in self.failures)

    def as_dict(self) -> dict:
        return {"suite": self.suite, "success": self.success,
                "failures": [{"expectation": o.expectation, "column": o.column, "unexpected_count": o.unexpected_count,
                              "examples": [str(e) for e in o.examples[:5]], "detail": o.detail}
                             for o in self.failures],
                "evaluated": len(self.outcomes)}


def _context():
    with _lock:
        if "context" not in _state:
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            source = context.data_sources.add_pandas("recon_frames")
            _state.update(gx=gx, context=context, source=source)
        return _state


def _fingerprint(expectations: Sequence) -> str:
    return json.dumps([e.configuration.to_json_dict() for e in expectations], sort_keys=True, default=str)


def _definition(state: dict, name: str, expectations: list):
    """(batch definition, suite) of suite ``name``: built on first use, then reused (same expectations)."""
    gx, context, source = state["gx"], state["context"], state["source"]
    cache = state.setdefault("definitions", {})
    key = (name, _fingerprint(expectations))
    if key not in cache:
        uid = uuid.uuid4().hex[:8]
        asset = source.add_dataframe_asset(f"{name}_{uid}")
        batch_def = asset.add_batch_definition_whole_dataframe(f"{name}_{uid}_batch")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_{uid}", expectations=expectations))
        cache[key] = batch_def, suite
    return cache[key]


def _decode(value, decode: Mapping[str, Sequence], column: str | None):
    """An example value with integer-coded columns turned back into the values they code."""
    if isinstance(value, dict):
        return {k: _decode(v, decode, k) for k, v in value.items()}
    if column in decode:  # a null stays the null a string column shows (NaN)
        return float("nan") if pd.isna(value) else decode[column][int(value)]
    return value


def run_suite(name: str, df: pd.DataFrame, build: Callable[[object], Sequence],
              decode: Mapping[str, Sequence] | None = None, *, verdict_only: bool = False) -> SuiteResult:
    """Validate ``df`` with the expectations ``build(gx)`` returns (``gx`` is the imported module).

    The suite is built once per process and name (and rebuilt only if its expectations change).
    ``decode`` maps a column given to GE as integer codes (cheap to hash and compare) to the values the
    codes stand for, so failure examples show the real values. ``verdict_only``: GE's BOOLEAN_ONLY
    result format (same verdicts, no counts or examples, about half the cost of a run): for the combined
    runs whose failure is followed by detailed runs anyway.
    """
    state = _context()
    with _lock:
        from great_expectations.validator.v1_validator import Validator

        batch_def, suite = _definition(state, name, list(build(state["gx"])))
        result_format = ({"result_format": "BOOLEAN_ONLY"} if verdict_only
                         else {"result_format": "SUMMARY", "partial_unexpected_count": 5})
        # What ``ValidationDefinition.run`` does, less its two bookkeeping steps: checking that the
        # definition is still the one saved in the context, and saving the result into the context's
        # in-memory results store, which nothing reads and which would grow by one result per suite and
        # window for the life of the process. ~15 ms of a backfill window.
        result = Validator(batch_definition=batch_def, batch_parameters={"dataframe": df},
                           result_format=result_format).validate_expectation_suite(suite)
    outcomes = []
    for res in result.results:
        cfg = res.expectation_config
        info = res.result or {}
        exc = res.exception_info or {}
        if exc and not any(k in exc for k in ("raised_exception",)):  # keyed by metric id
            exc = next(iter(exc.values()), {}) if isinstance(next(iter(exc.values()), None), dict) else exc
        detail = exc.get("exception_message") or "" if isinstance(exc, dict) and exc.get("raised_exception") else ""
        outcomes.append(ExpectationOutcome(
            expectation=cfg.type, column=cfg.kwargs.get("column") or ",".join(cfg.kwargs.get("column_list", []) or []),
            success=bool(res.success), unexpected_count=int(info.get("unexpected_count") or 0),
            examples=[_decode(v, decode or {}, cfg.kwargs.get("column"))
                      for v in list(info.get("partial_unexpected_list") or [])[:5]], detail=detail))
    return SuiteResult(name, bool(result.success), outcomes)
