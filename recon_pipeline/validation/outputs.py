"""Output suites: the gate between a computed batch and the trading tables (DESIGN sections 5-6).

A batch is stored BLOCKED, never applied, when any of these fails:

* corrections: ids present and unique; actions known; no target with two corrections of one action;
  every slice-closing correction carries an attribution the flags allow (strong only by default,
  heuristics only when enabled, ``sub_tag`` for a synthetic exit when the sub-tag gate is on);
  an expected state on every non-derived correction; notional finite, non-negative and equal to
  qty x price of the change it makes.
* findings: kinds known, NO_GO rows carry a known reason, notional finite and non-negative.

Row-wise facts that need JSON (expected state, new state, evidence) are derived into plain columns
first, so each rule is one GE expectation on a column.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recon_pipeline import schemas
from recon_pipeline.settings import ReconSettings
from recon_pipeline.validation.gx_runner import SuiteResult, run_suite

STRONG = ("client_order_id", "trade_id_hint", "sub_tag")
HEURISTIC = ("single_open_trade", "qty_unique")
DERIVED = ("RESERVATION_UPDATE", "POSITION_UPDATE")
NOTIONAL_RTOL = 1e-6


def allowed_backfill_strengths(settings: ReconSettings) -> tuple[str, ...]:
    allowed = STRONG + (HEURISTIC if settings.backfill_allow_heuristic else ())
    return allowed + (("none",) if not settings.backfill_require_strong else ())


def _expected_notional(action: str, expected: dict, new: dict, evidence: dict) -> float:
    if action == "BACKFILL_EXIT":
        return (float(new.get("exit_qty") or 0) - float(expected.get("exit_qty") or 0)) * float(new.get("exit_price") or 0)
    if action in ("SYNTHETIC_EXIT", "QUARANTINE") and "remaining_qty" in evidence and "mark_price" in evidence:
        return float(evidence["remaining_qty"]) * float(evidence["mark_price"])
    return math.nan


# The numbers the checks read from each JSON column (every other key is parsed, for validity, and dropped).
_JSON_FIELDS = {
    "expected_state": ("exit_qty",),
    "new_state": ("exit_qty", "exit_price"),
    "evidence": ("remaining_qty", "mark_price"),
}


def _json_numbers(values: pd.Series, fields: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """``fields`` of every JSON object of ``values``, parsed at once by pyarrow: per field (float64 values with
    NaN where absent or null, absent-or-null mask).

    ``None`` when the column is not one JSON object per line as canonical JSON writes it (a null, a
    value not wrapped in braces, a newline inside a value, a field that is not a number, a document that
    does not parse, or more values than rows): the caller then parses row by row, as ``json.loads`` does.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    n = len(values)
    if n == 0:
        return {f: (np.zeros(0), np.zeros(0, dtype=bool)) for f in fields}
    arr = pa.array(values, type=pa.large_string(), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        return None
    # Every line must be one object: pyarrow splits on newlines (and crashes on a document that is a bare null).
    if not pc.all(pc.and_(pc.starts_with(arr, "{"), pc.ends_with(arr, "}"))).as_py():
        return None
    lines = pc.binary_join_element_wise(arr, pa.scalar("", pa.large_string()), pa.scalar("\n", pa.large_string()))
    bufs = lines.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[lines.offset:lines.offset + n + 1]
    data = bufs[2][int(offsets[0]):int(offsets[-1])]
    raw = data.to_pybytes()
    if raw.count(b"\n") != n or b"\r" in raw:  # a line break inside a value: lines would not be rows
        return None
    schema = pa.schema([(f, pa.float64()) for f in fields])
    try:
        table = pj.read_json(pa.BufferReader(raw), read_options=pj.ReadOptions(block_size=1 << 24),
                             parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore",
                                                           newlines_in_values=False))
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows != n:  # two documents in one value ('{..}{..}' or '{..} null')
        return None
    out = {}
    for f in fields:
        col = table.column(f)
        out[f] = (pc.fill_null(col, np.nan).to_numpy().astype(float, copy=False),
                  col.is_null().to_numpy(zero_copy_only=False).astype(bool, copy=False))
    return out


def _empty_object(values: pd.Series) -> np.ndarray:
    """True where the (valid, brace-wrapped) JSON object has no key: ``{}`` with blanks at most."""
    return values.str.fullmatch(r"\{[ \t]*\}").fillna(False).to_numpy(dtype=bool)


def _row_facts_python(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(expected_state_present, expected notional) by ``json.loads`` per row: the exact reference."""
    expected = [json.loads(v) for v in df["expected_state"]]
    new = [json.loads(v) for v in df["new_state"]]
    evidence = [json.loads(v) for v in df["evidence"]]
    present = np.array([a in DERIVED or bool(e) for a, e in zip(df["action"], expected, strict=True)], dtype=bool)
    want = np.array([_expected_notional(a, e, n, v) for a, e, n, v in
                     zip(df["action"], expected, new, evidence, strict=True)], dtype=float)
    return present, want


def _row_facts(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(expected_state_present, expected notional), vectorised; same values (and errors) as the reference.

    Each JSON column is parsed once, in C, keeping only the numbers the checks need. A column that is not
    plain one-object-per-value JSON (never the case for ``canonical_json`` output) takes the per-row path.
    """
    parsed = {col: _json_numbers(df[col], fields) for col, fields in _JSON_FIELDS.items()}
    if any(v is None for v in parsed.values()):
        return _row_facts_python(df)
    exp, new, ev = parsed["expected_state"], parsed["new_state"], parsed["evidence"]
    action = df["action"]
    present = action.isin(DERIVED).fillna(False).to_numpy(dtype=bool) | ~_empty_object(df["expected_state"])

    def num0(field: tuple[np.ndarray, np.ndarray]) -> np.ndarray:  # float(x or 0): absent / null -> 0, NaN stays
        values, null = field
        return np.where(null, 0.0, values)

    want = np.full(len(df), np.nan)
    backfill = action.eq("BACKFILL_EXIT").fillna(False).to_numpy(dtype=bool)
    want[backfill] = ((num0(new["exit_qty"]) - num0(exp["exit_qty"])) * num0(new["exit_price"]))[backfill]
    parity = action.isin(("SYNTHETIC_EXIT", "QUARANTINE")).fillna(False).to_numpy(dtype=bool)
    rq, mp = ev["remaining_qty"][0], ev["mark_price"][0]
    known = parity & ~np.isnan(rq) & ~np.isnan(mp)
    want[known] = rq[known] * mp[known]
    # A parity row missing one of them (absent: no notional to check; null: float(None) raises) or holding
    # a NaN: the per-row reference decides, on those rows only.
    odd = np.flatnonzero(parity & ~known)
    for i in odd:
        want[i] = _expected_notional(action.iat[i], {}, {}, json.loads(df["evidence"].iat[i]))
    return present, want


def correction_checks(corrections: pd.DataFrame, settings: ReconSettings, *, narrow: bool = False) -> pd.DataFrame:
    """The corrections plus one boolean column per row-level rule.

    ``narrow``: only the columns the corrections suite reads (ids, action, target and the three facts):
    Great Expectations copies and hashes every column of the frame it validates.
    """
    keep = ["correction_id", "action", "target_id"]
    df = corrections[keep].copy() if narrow else corrections.copy()
    backfill_ok = corrections["attribution"].isin(allowed_backfill_strengths(settings))
    synthetic_ok = corrections["attribution"].eq("sub_tag") | (not settings.parity_require_subtag)
    action = corrections["action"]
    df["attribution_allowed"] = np.where(
        action.eq("BACKFILL_EXIT"), backfill_ok,
        np.where(action.eq("SYNTHETIC_EXIT"), synthetic_ok, True)).astype(bool)
    present, want = _row_facts(corrections)
    df["expected_state_present"] = present
    have = corrections["notional_usd"].to_numpy(dtype=float)
    consistent = np.isnan(want) | np.isclose(have, want, rtol=NOTIONAL_RTOL, atol=1e-9)
    finite = np.isnan(have) | (np.isfinite(have) & (have >= -1e-12))
    df["notional_consistent"] = consistent & finite
    return df


def finding_checks(findings: pd.DataFrame) -> pd.DataFrame:
    """The columns the findings suite reads, with the derived ``no_go_reason_known`` (infinite notional -> -1)."""
    return pd.DataFrame({
        "kind": findings["kind"],
        "no_go_reason_known": (~findings["kind"].eq("NO_GO")) | findings["reason"].isin(schemas.NO_GO_REASONS),
        "notional_usd": findings["notional_usd"].replace([np.inf, -np.inf], -1.0),
    }, index=findings.index)


@dataclass(frozen=True)
class OutputValidation:
    corrections: SuiteResult
    findings: SuiteResult

    @property
    def success(self) -> bool:
        return self.corrections.success and self.findings.success

    def as_dict(self) -> dict:
        return {"success": self.success, "corrections": self.corrections.as_dict(),
                "findings": self.findings.as_dict()}

    def describe(self) -> str:
        return " | ".join(r.describe() for r in (self.corrections, self.findings) if not r.success) or "passed"

    def markdown(self) -> str:
        lines = ["| suite | expectation | column | ok | failing rows | examples |", "|---|---|---|---|---|---|"]
        for res in (self.corrections, self.findings):
            for o in res.outcomes:
                lines.append(f"| {res.suite} | {o.expectation} | {o.column or ''} | {'yes' if o.success else '**NO**'} "
                             f"| {o.unexpected_count} | {', '.join(map(str, o.examples[:3]))} |")
        return "\n".join(lines)


def _correction_suite(gx):
    E = gx.expectations
    return [
        E.ExpectColumnValuesToNotBeNull(column="correction_id"),
        E.ExpectColumnValuesToBeUnique(column="correction_id"),
        E.ExpectColumnValuesToBeInSet(column="action", value_set=list(schemas.CORRECTION_ACTIONS)),
        E.ExpectCompoundColumnsToBeUnique(column_list=["action", "target_id"]),
        E.ExpectColumnValuesToBeInSet(column="attribution_allowed", value_set=[True]),
        E.ExpectColumnValuesToBeInSet(column="expected_state_present", value_set=[True]),
        E.ExpectColumnValuesToBeInSet(column="notional_consistent", value_set=[True]),
    ]


def _finding_suite(gx):
    E = gx.expectations
    return [
        E.ExpectColumnValuesToBeInSet(column="kind", value_set=list(schemas.FINDING_KINDS)),
        E.ExpectColumnValuesToBeInSet(column="no_go_reason_known", value_set=[True]),
        E.ExpectColumnValuesToBeBetween(column="notional_usd", min_value=0, mostly=1.0),
    ]


def _both_suites(gx):
    return _correction_suite(gx) + _finding_suite(gx)


def _combined_checks(checked: pd.DataFrame, fchecked: pd.DataFrame) -> pd.DataFrame:
    """Both check frames as one (their columns are disjoint). GE's column-map expectations skip nulls,
    so each suite's expectations see only its own rows; the one that does not skip them (ids not null)
    gets distinct negative codes on the findings' rows, which no correction id can equal."""
    filler = pd.DataFrame({"correction_id": pd.array(-np.arange(1, len(fchecked) + 1), dtype="Int64")})
    combined = pd.concat([checked.reset_index(drop=True),
                          pd.concat([filler, fchecked.reset_index(drop=True)], axis=1)], ignore_index=True)
    for col in ("attribution_allowed", "expected_state_present", "notional_consistent", "no_go_reason_known"):
        combined[col] = combined[col].astype("boolean")
    return combined


def validate_outputs(findings: pd.DataFrame, corrections: pd.DataFrame, settings: ReconSettings) -> OutputValidation:
    """Both output suites. They run as one GE run (a run costs ~40 ms whatever the rows, every hour of
    every profile); only when it fails does each suite run on its own, so a BLOCKED batch names its
    suite, expectation, failing rows and examples exactly as before."""
    checked = correction_checks(corrections, settings, narrow=True)
    decode = {}
    for col in ("correction_id", "target_id"):  # GE compares and hashes integer codes, examples show the ids
        checked[col], decode[col] = _coded(checked[col])
    fchecked = finding_checks(findings)
    both = run_suite("corrective_batch+mismatch_report", _combined_checks(checked, fchecked), _both_suites,
                     verdict_only=True)
    if both.success:
        own = set(checked.columns) | {"action,target_id"}
        return OutputValidation(
            corrections=SuiteResult("corrective_batch", True, [o for o in both.outcomes if o.column in own]),
            findings=SuiteResult("mismatch_report", True, [o for o in both.outcomes if o.column not in own]))
    return OutputValidation(
        corrections=run_suite("corrective_batch", checked, _correction_suite, decode=decode),
        findings=run_suite("mismatch_report", fchecked, _finding_suite),
    )


def _coded(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """``values`` as nullable integer codes (equal values, equal codes; null stays null) and the decoding."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    coded = pd.Series(pd.arrays.IntegerArray(codes.astype(np.int64), codes < 0), index=values.index)
    return coded, np.asarray(uniques, dtype=object)
