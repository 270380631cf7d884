"""Snapshot validation (DESIGN 4.1, 6): structure fails the run, bad rows are excluded and reported.

Every snapshot frame passes two gates before a rule sees it:

1. **Structure** (Great Expectations, :func:`check_structure`): the columns are exactly the schema's,
   each with the schema's dtype, and the frame's key is non-null and unique. A failure means the
   snapshot cannot be trusted at all: :class:`SnapshotStructureError` names the frame, the failed
   expectations and examples, the snapshot asset reports a failed blocking asset check and the run
   fails before any batch is stored. Columns and dtypes are checked on a derived "facts" frame (one
   row per column: cheap, and the examples name the column, e.g. ``qty:str``); keys on the key
   columns only (GE hashes every column of a batch, so a narrow frame keeps a 1e6-row check near
   half a second).
2. **Rows** (:func:`validate_exchange_snapshot`, :func:`validate_db_snapshot`): vectorised masks,
   first matching reason wins. A bad row is excluded from the frame the rules see and becomes one
   ``BAD_ROW`` finding (``reason`` = the code below, ``detail`` a sentence naming the row and value,
   ids filled so an operator can find it; ``notional_usd`` NaN). The rest of the window is still
   reconciled.

Structural (fail the run) versus row-level (exclude, ``BAD_ROW``):

======================  ==================================================  ==========================================
frame                   structural (run fails)                              row-level reason codes (row excluded)
======================  ==================================================  ==========================================
every frame             missing / extra column, wrong dtype                 -
exchange_fills          null account / symbol / fill_id                     DUPLICATE_FILL_CONFLICT (same id, other
                        (key uniqueness is row-level: a paged API may       contents: every copy; identical copies are
                        serve a fill twice)                                 only deduplicated), UNKNOWN_SYMBOL (not in
                                                                            the clean markets), ORDER_EXCLUDED (its
                                                                            exchange order is a bad row), NULL_ORDER_ID,
                                                                            BAD_SIDE, NON_FINITE_QTY, NON_POSITIVE_QTY,
                                                                            NON_FINITE_PRICE, NON_POSITIVE_PRICE,
                                                                            BAD_FEE (infinite cost, or a cost without
                                                                            currency), NULL_TIMESTAMP, BEFORE_EPOCH
                                                                            (< 2010-01-01), FUTURE_TIMESTAMP (after the
                                                                            exchange's now), OUT_OF_SPAN (outside
                                                                            [fills_since, as_of])
exchange_orders         null / duplicate (account, symbol, exchange id)     UNKNOWN_SYMBOL, BAD_SIDE, BAD_STATUS,
                                                                            BAD_CLIENT_ORDER_ID, NON_FINITE_QTY,
                                                                            NON_POSITIVE_QTY, NON_FINITE_FILLED,
                                                                            NEGATIVE_FILLED, FILLED_EXCEEDS_QTY,
                                                                            NON_POSITIVE_PRICE (price or average,
                                                                            NaN allowed: market / unfilled),
                                                                            NULL_TIMESTAMP, BEFORE_EPOCH,
                                                                            FUTURE_TIMESTAMP (created after now)
exchange_positions      null / duplicate (account, market_type,             BAD_MARKET_TYPE, BAD_POSITION_SIDE,
                        instrument, position_side)                          UNKNOWN_SYMBOL (swap instrument not in the
                                                                            clean markets), NON_FINITE_QTY,
                                                                            SIDE_SIGN_MISMATCH (long < 0, short > 0),
                                                                            NEGATIVE_BALANCE (spot)
exchange_markets        null / duplicate (account, symbol)                  BAD_MARKET_TYPE, NULL_BASE,
                                                                            NON_POSITIVE_PRECISION, NON_POSITIVE_
                                                                            CONTRACT_SIZE, NON_POSITIVE_PRICE (mark;
                                                                            NaN allowed: "not evaluated")
db_trade_history        null / duplicate trade_id                           NULL_SYMBOL, BAD_SIDE, BAD_STATUS,
                                                                            NON_FINITE_QTY / NON_POSITIVE_QTY
                                                                            (entry_qty), NEGATIVE_EXIT_QTY (NaN or
                                                                            < 0), EXIT_EXCEEDS_ENTRY (beyond 1e-9
                                                                            relative), NON_POSITIVE_PRICE (entry),
                                                                            NULL_ENTRY_TIME, BEFORE_EPOCH (entry),
                                                                            BAD_EXIT_SOURCE, BAD_CLIENT_ORDER_ID
db_orders               null / duplicate order_id                           NULL_SYMBOL, BAD_SIDE, BAD_ROLE,
                                                                            BAD_STATUS, BAD_CLIENT_ORDER_ID,
                                                                            NON_FINITE_QTY, NON_POSITIVE_QTY,
                                                                            NON_FINITE_FILLED, NEGATIVE_FILLED,
                                                                            FILLED_EXCEEDS_QTY, NON_POSITIVE_PRICE,
                                                                            NULL_TIMESTAMP
db_positions            null / duplicate (profile_id, symbol)               NON_FINITE_QTY, NON_POSITIVE_PRICE
                                                                            (avg entry < 0)
======================  ==================================================  ==========================================

Decisions:

* **BAD_CLIENT_ORDER_ID** (empty, over 36 characters, or outside Binance's ``[.A-Za-z0-9:/_-]``) excludes
  the whole order, not just its client id: a value Binance would never have accepted means the row is
  corrupt, and the client id is the strongest attribution evidence (it also says entry or exit role).
  Keeping the order with "no client id" would turn its fills into untied activity that the relaxed
  attribution flags could use as exit evidence; excluding it is never acted on. Its fills are excluded
  too (``ORDER_EXCLUDED``), and a DB open order pointing at it ends NO_GO ``ORDER_NOT_FOUND``.
* **Times against "now"** are checked on the exchange frames only: the DB snapshot is taken before the
  exchange clock is read and the local clock is never used (DESIGN 3). A DB entry time in the future
  only makes the grace gate stricter (its exit fills become ``STALE_FILL``).
* **Account-level**: both snapshots cover the profile's whole account, so every profile of the account
  reports the account's bad rows (like ``UNATTRIBUTED``); the detail names the owning profile.
* **Parity stays conservative** (:class:`ParityTaint`): excluding an exchange fill could make a slice
  look like a ghost, excluding a DB slice changes the account's net. So every OPEN slice on an
  instrument (swap: symbol; spot: base asset, as parity nets) with a bad exchange fill / order / market
  row or a bad DB slice row is added to ``no_go_trade_ids`` (a ghost is QUARANTINEd, never closed at
  mark). A bad *position* row is the exchange truth parity compares against: its instrument is made
  "not evaluated" (streaks neither count nor reset, the check is not clean). A bad row whose symbol is
  null taints the whole account.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recon_pipeline import schemas
from recon_pipeline.validation.gx_runner import ExpectationOutcome, SuiteResult, run_suite

EPOCH_FLOOR = pd.Timestamp("2010-01-01", tz="UTC")  # no crypto exchange fill or order predates it
CLIENT_ID_MAX = 36
# Binance accepts client ids of 1..36 characters of [.A-Za-z0-9:/_-]; the deterministic ids the trading
# system sends are a stricter subset, but an order placed elsewhere (web UI, another bot) may use the rest.
CLIENT_ID_PATTERN = r"^[.A-Za-z0-9:/_-]+$"
QTY_REL = 1e-9  # relative float noise allowed when comparing quantities
ALL = "*"       # taint instrument meaning "every instrument of the account"


# --- structure -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameSpec:
    name: str
    schema: schemas.Schema
    keys: tuple[str, ...]
    unique: bool = True  # False: duplicates are a row-level matter (exchange fills)

    @property
    def dtype_facts(self) -> list[str]:
        return [f"{c}:{t}" for c, t in self.schema.items()]


FRAME_SPECS: dict[str, FrameSpec] = {s.name: s for s in (
    FrameSpec("exchange_fills", schemas.EXCHANGE_FILLS, ("account", "symbol", "fill_id"), unique=False),
    FrameSpec("exchange_orders", schemas.EXCHANGE_ORDERS, ("account", "symbol", "exchange_order_id")),
    FrameSpec("exchange_positions", schemas.EXCHANGE_POSITIONS,
              ("account", "market_type", "instrument", "position_side")),
    FrameSpec("exchange_markets", schemas.EXCHANGE_MARKETS, ("account", "symbol")),
    FrameSpec("db_trade_history", schemas.TRADE_HISTORY, ("trade_id",)),
    FrameSpec("db_orders", schemas.DB_ORDERS, ("order_id",)),
    FrameSpec("db_positions", schemas.DB_POSITIONS, ("profile_id", "symbol")),
)}


class SnapshotStructureError(ValueError):
    """A snapshot frame failed its structural suite: the run must fail, nothing is reconciled."""

    def __init__(self, results: Sequence[SuiteResult]):
        self.results = [r for r in results if not r.success]
        parts = []
        for res in self.results:
            fails = "; ".join(
                f"{o.expectation}({o.column or ''}) failed on {o.unexpected_count} rows, e.g. {o.examples[:3]}"
                for o in res.failures)
            parts.append(f"{res.suite}: {fails}")
        super().__init__("snapshot structure check failed, the snapshot cannot be trusted: " + " | ".join(parts))


def _dtype_name(series: pd.Series) -> str:
    dtype = series.dtype
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return schemas.STR
    return str(dtype)


def _column_facts(df: pd.DataFrame, spec: FrameSpec) -> dict[str, list[str | None]]:
    cols = list(spec.schema) + [c for c in df.columns if c not in spec.schema]
    present = [c in df.columns for c in cols]
    in_schema = [c in spec.schema for c in cols]
    return {
        "missing_column": [None if p else c for c, p in zip(cols, present, strict=True)],
        "extra_column": [None if s else c for c, s in zip(cols, in_schema, strict=True)],
        "column_dtype": [f"{c}:{_dtype_name(df[c])}" if p and s else None
                         for c, p, s in zip(cols, present, in_schema, strict=True)],
        "schema_dtype": [f"{c}:{spec.schema[c]}" if p and s else None
                         for c, p, s in zip(cols, present, in_schema, strict=True)],
    }


def structure_facts(df: pd.DataFrame, spec: FrameSpec) -> pd.DataFrame:
    """One row per column of the schema or the frame: what is missing, extra, or of another dtype."""
    facts = _column_facts(df, spec)
    return pd.DataFrame({k: pd.Series(facts[k], dtype="str") for k in ("missing_column", "extra_column", "column_dtype")})


def _facts_suite(spec: FrameSpec) -> Callable:
    def build(gx):
        E = gx.expectations
        return [
            E.ExpectColumnValuesToBeNull(column="missing_column"),
            E.ExpectColumnValuesToBeNull(column="extra_column"),
            E.ExpectColumnValuesToBeInSet(column="column_dtype", value_set=spec.dtype_facts),
        ]
    return build


def _keys_suite(spec: FrameSpec) -> Callable:
    def build(gx):
        E = gx.expectations
        out = [E.ExpectColumnValuesToNotBeNull(column=k) for k in spec.keys]
        if spec.unique:
            out.append(E.ExpectCompoundColumnsToBeUnique(column_list=list(spec.keys)) if len(spec.keys) > 1
                       else E.ExpectColumnValuesToBeUnique(column=spec.keys[0]))
        return out
    return build


def check_structure(name: str, df: pd.DataFrame) -> SuiteResult:
    """Run the structural suite of snapshot frame ``name`` (a key of FRAME_SPECS)."""
    spec = FRAME_SPECS[name]
    facts = run_suite(f"{name}_columns", structure_facts(df, spec), _facts_suite(spec))
    outcomes = list(facts.outcomes)
    if all(k in df.columns for k in spec.keys):
        keys = run_suite(f"{name}_keys", df[list(spec.keys)], _keys_suite(spec))
        outcomes += keys.outcomes
    else:
        outcomes.append(ExpectationOutcome("expect_column_values_to_not_be_null", ",".join(spec.keys), False, 0, [],
                                           "key columns missing"))
    return SuiteResult(f"{name}_structure", all(o.success for o in outcomes), outcomes)


def _combined_frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The facts and keys of several frames as one frame (fact values prefixed by the frame's name).

    Fact rows carry ``key`` 0 and no ``unique_key``, and next to each column's ``column_dtype`` the
    ``schema_dtype`` it must equal; key rows carry no facts. ``key`` is a code per distinct key,
    offset per frame (null where a key column is null); ``unique_key`` is the same code for frames
    whose key must be unique, null otherwise (GE's map expectations skip nulls)."""
    facts: dict[str, list[np.ndarray]] = {"missing_column": [], "extra_column": [], "column_dtype": [],
                                          "schema_dtype": []}
    keys: list[np.ndarray] = []
    unique_keys: list[np.ndarray] = []
    offset = 0
    for name, df in frames.items():
        spec = FRAME_SPECS[name]
        frame_facts = _column_facts(df, spec)
        for col, parts in facts.items():
            parts.append(np.array([None if v is None else f"{name}.{v}" for v in frame_facts[col]], dtype=object))
        n_facts = len(frame_facts["column_dtype"])
        keys.append(np.zeros(n_facts))
        unique_keys.append(np.full(n_facts, np.nan))
        if not all(k in df.columns for k in spec.keys) or df.empty:
            continue  # a missing key column is already a failed fact
        codes = _key_codes(df, spec.keys) + offset + 1  # NaN where a key column is null
        offset += len(df) + 1
        for parts in facts.values():
            parts.append(np.full(len(df), None, dtype=object))
        keys.append(codes)
        unique_keys.append(codes if spec.unique else np.full(len(df), np.nan))
    # object columns: converting 1e4s of mostly-null values to Arrow strings cost as much as the GE run
    frame = pd.DataFrame({col: pd.Series(np.concatenate(parts), dtype=object) for col, parts in facts.items()})
    frame["key"] = _nullable_int(np.concatenate(keys))
    frame["unique_key"] = _nullable_int(np.concatenate(unique_keys))
    return frame


def _key_codes(df: pd.DataFrame, keys: tuple[str, ...]) -> np.ndarray:
    """A code per distinct key of ``df`` (float, NaN where a key column is null)."""
    combined = np.zeros(len(df), dtype=np.int64)
    null = np.zeros(len(df), dtype=bool)
    for column in keys:  # mixed-radix code of the columns' codes, re-factorized so it cannot overflow
        codes, uniques = pd.factorize(df[column], use_na_sentinel=True)
        null |= codes < 0
        combined, _ = pd.factorize(combined * (len(uniques) + 1) + codes + 1)
    return np.where(null, np.nan, combined.astype("float64"))


def _nullable_int(values: np.ndarray) -> pd.arrays.IntegerArray:
    missing = np.isnan(values)
    return pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), missing)


def _combined_suite(gx) -> list:
    E = gx.expectations
    return [
        E.ExpectColumnValuesToBeNull(column="missing_column"),
        E.ExpectColumnValuesToBeNull(column="extra_column"),
        # each column's dtype equals its schema's: the per-frame suites' "dtype fact in the schema's
        # set", without a value set of every frame's columns (GE copies it for each metric it plans)
        E.ExpectColumnPairValuesToBeEqual(column_A="column_dtype", column_B="schema_dtype",
                                          ignore_row_if="either_value_is_missing"),
        E.ExpectColumnValuesToNotBeNull(column="key"),
        E.ExpectColumnValuesToBeUnique(column="unique_key"),
    ]


def check_structures(frames: dict[str, pd.DataFrame]) -> dict[str, SuiteResult]:
    """:func:`check_structure` of every frame, in one suite run instead of two per frame.

    A Great Expectations run costs about 50 ms whatever the data (its metric graph is built per
    run), and the snapshot assets check seven frames every hour of every profile: the same
    expectations run once on the frames' facts and keys put together. Only when that combined run
    fails is each frame checked on its own, so a failure names its frame, expectation and examples
    exactly as :func:`check_structure` does.
    """
    if not frames:
        return {}
    result = run_suite("+".join(frames) + "_structure", _combined_frame(frames), _combined_suite, verdict_only=True)
    if result.success:
        return {n: SuiteResult(f"{n}_structure", True, result.outcomes) for n in frames}
    return {n: check_structure(n, df) for n, df in frames.items()}


def require_structure(frames: dict[str, pd.DataFrame]) -> dict[str, SuiteResult]:
    """Check every frame; raise :class:`SnapshotStructureError` naming all that failed."""
    results = check_structures(frames)
    if not all(r.success for r in results.values()):
        raise SnapshotStructureError(list(results.values()))
    return results


# --- row rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    reason: str
    mask: Callable[[pd.DataFrame], pd.Series]
    what: str            # the phrase of the detail sentence
    column: str | None   # whose value the detail shows


def _s(series: pd.Series) -> pd.Series:
    """Strings for a detail sentence: nulls shown as <null>."""
    return series.astype(object).where(series.notna(), "<null>").astype(str)


def _finite(series: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(series.to_numpy(dtype=float)), index=series.index)


def _not_in(series: pd.Series, allowed: Sequence[str]) -> pd.Series:
    return ~series.isin(list(allowed)).fillna(False).astype(bool)


def _bad_client_id(series: pd.Series, *, allow_null: bool) -> pd.Series:
    s = series.astype("str")
    ok = s.str.fullmatch(CLIENT_ID_PATTERN).fillna(False).astype(bool) & (s.str.len() <= CLIENT_ID_MAX).fillna(False)
    return ~ok & (s.notna() | (not allow_null))


def _gt(a: pd.Series, b: pd.Series) -> pd.Series:
    """a > b beyond float noise (relative QTY_REL)."""
    return (a > b + b.abs() * QTY_REL + 1e-12).fillna(False).astype(bool)


def _apply_rules(df: pd.DataFrame, rules: Sequence[Rule]) -> pd.Series:
    """The first matching reason of each row ('' when the row is good)."""
    if df.empty:
        return pd.Series([], dtype=object, index=df.index)
    masks = [_bool_mask(r.mask(df), df.index) for r in rules]
    return pd.Series(np.select(masks, [r.reason for r in rules], default=""), index=df.index)


def _bool_mask(mask: pd.Series, index: pd.Index) -> np.ndarray:
    """A rule's mask as plain booleans on ``index`` (a missing row or a null verdict is False). Most
    masks are already numpy booleans on the frame's own index: they are taken as they are (a frame has
    ~20 rules, and realigning and filling each cost more than computing it)."""
    if mask.dtype == bool and mask.index.equals(index):  # equals is an identity check first
        return mask.to_numpy()
    return mask.reindex(index).fillna(False).to_numpy(dtype=bool)


def _details(bad: pd.DataFrame, reasons: pd.Series, rules: Sequence[Rule], ident: pd.Series) -> pd.Series:
    out = pd.Series("", index=bad.index, dtype=object)
    for rule in rules:
        sel = reasons == rule.reason
        if not sel.any():
            continue
        value = "" if rule.column is None else " (" + rule.column + "=" + _s(bad.loc[sel, rule.column]) + ")"
        out.loc[sel] = ident.loc[sel] + ": " + rule.what + value + f" [{rule.reason}]; row excluded"
    return out


def _num(series: pd.Series) -> pd.Series:
    """Quantities for a finding: non-finite values are left out (the detail shows them)."""
    return series.where(_finite(series))


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityTaint:
    """(account, instrument) keys where parity must stay conservative this run; instrument '*' = all."""

    no_go: frozenset[tuple[str, str]] = frozenset()
    not_evaluated: frozenset[tuple[str, str]] = frozenset()

    def __or__(self, other: ParityTaint) -> ParityTaint:
        return ParityTaint(self.no_go | other.no_go, self.not_evaluated | other.not_evaluated)


@dataclass(frozen=True)
class BadRows:
    """The BAD_ROW findings of one snapshot, with counts for the UI and the parity taint."""

    findings: pd.DataFrame                      # FINDINGS, kind BAD_ROW
    rows_in: dict[str, int] = field(default_factory=dict)
    rows_excluded: dict[str, int] = field(default_factory=dict)
    duplicates_dropped: dict[str, int] = field(default_factory=dict)
    excluded_by_reason: dict[str, dict[str, int]] = field(default_factory=dict)  # frame -> reason -> rows
    taint: ParityTaint = field(default_factory=ParityTaint)

    def by_reason(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.findings["reason"].value_counts().sort_index().items()}


def _reason_counts(**findings: pd.DataFrame) -> dict[str, dict[str, int]]:
    return {name: {str(k): int(v) for k, v in f["reason"].value_counts().sort_index().items()}
            for name, f in findings.items()}


def instrument_of(symbol: pd.Series) -> pd.Series:
    """Parity's instrument of a unified symbol: swap (``B/Q:S``) the symbol, spot the base asset."""
    s = symbol.astype("str")
    swap = s.str.contains(":", regex=False).fillna(False).astype(bool)
    base = s.str.replace(r"/.*$", "", regex=True)
    return s.where(swap, base).where(s.notna(), ALL)


def _taint_keys(account: pd.Series, instrument: pd.Series, default_account: str) -> frozenset[tuple[str, str]]:
    acc = account.astype("str").where(account.notna(), default_account)
    inst = instrument.astype("str").where(instrument.notna(), ALL)
    return frozenset(zip(acc.tolist(), inst.tolist(), strict=True))


def _findings(bad: pd.DataFrame, reasons: pd.Series, rules: Sequence[Rule], ident: pd.Series, cols: dict,
              **constants) -> pd.DataFrame:
    from recon_pipeline.rules.corrections import findings_frame

    if bad.empty:
        return schemas.empty(schemas.FINDINGS)
    rows = pd.DataFrame({k: (v(bad) if callable(v) else v) for k, v in cols.items()}, index=bad.index)
    rows["kind"] = "BAD_ROW"
    rows["reason"] = reasons
    rows["detail"] = _details(bad, reasons, rules, ident)
    rows["notional_usd"] = np.nan
    return findings_frame(rows.reset_index(drop=True), **constants)


def _split(df: pd.DataFrame, rules: Sequence[Rule], ident: Callable[[pd.DataFrame], pd.Series], cols: dict,
           **constants) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(clean frame, bad rows, BAD_ROW findings)."""
    reasons = _apply_rules(df, rules)
    is_bad = reasons != ""
    if not is_bad.any():
        return df.reset_index(drop=True), df.iloc[:0], schemas.empty(schemas.FINDINGS)
    bad = df.loc[is_bad]
    findings = _findings(bad, reasons[is_bad], rules, ident(bad), cols, **constants)
    return df.loc[~is_bad].reset_index(drop=True), bad, findings


def _ts_rules(col: str, label: str, *, now: pd.Timestamp | None = None, null_reason: str = "NULL_TIMESTAMP",
              future_col: str | None = None) -> list[Rule]:
    rules = [
        Rule(null_reason, lambda d: d[col].isna(), f"{label} is null", col),
        Rule("BEFORE_EPOCH", lambda d: d[col] < EPOCH_FLOOR, f"{label} is before {EPOCH_FLOOR.date()}", col),
    ]
    if now is not None:
        rules.append(Rule("FUTURE_TIMESTAMP", lambda d: d[future_col or col] > now,
                          f"{label} is after the exchange's now {now.isoformat()}", future_col or col))
    return rules


def _qty_rules(col: str, label: str) -> list[Rule]:
    return [
        Rule("NON_FINITE_QTY", lambda d: ~_finite(d[col]), f"{label} is not a finite number", col),
        Rule("NON_POSITIVE_QTY", lambda d: d[col] <= 0, f"{label} is not positive", col),
    ]


def _filled_rules(label: str) -> list[Rule]:
    return [
        Rule("NON_FINITE_FILLED", lambda d: ~_finite(d["filled_qty"]), "filled qty is not a finite number",
             "filled_qty"),
        Rule("NEGATIVE_FILLED", lambda d: d["filled_qty"] < 0, "filled qty is negative", "filled_qty"),
        Rule("FILLED_EXCEEDS_QTY", lambda d: _gt(d["filled_qty"], d["qty"]),
             f"filled qty exceeds the {label} qty", "filled_qty"),
    ]


def _price_rule(col: str, label: str, *, allow_nan: bool) -> list[Rule]:
    def bad(d):
        v = d[col]
        nonfinite = ~_finite(v) & (v.notna() if allow_nan else True)
        return nonfinite | (v <= 0)
    return [Rule("NON_POSITIVE_PRICE", bad, f"{label} is not a positive finite price", col)]


# --- exchange side -------------------------------------------------------------------------------


def _market_rules() -> list[Rule]:
    def prec_bad(d):
        return (~_finite(d["amount_precision"]) | (d["amount_precision"] <= 0)
                | ~_finite(d["price_precision"]) | (d["price_precision"] <= 0))
    return [
        Rule("BAD_MARKET_TYPE", lambda d: _not_in(d["market_type"], ("spot", "swap")), "market type is unknown",
             "market_type"),
        Rule("NULL_BASE", lambda d: d["base"].isna() | d["quote"].isna(), "base or quote asset is null", "base"),
        Rule("NON_POSITIVE_PRECISION", prec_bad, "amount or price precision is not a positive number",
             "amount_precision"),
        Rule("NON_POSITIVE_CONTRACT_SIZE", lambda d: ~_finite(d["contract_size"]) | (d["contract_size"] <= 0),
             "contract size is not a positive number", "contract_size"),
        *_price_rule("mark_price", "mark price", allow_nan=True),
    ]


def _order_rules(known: set, now: pd.Timestamp) -> list[Rule]:
    return [
        Rule("UNKNOWN_SYMBOL", lambda d: _not_in(d["symbol"], known), "symbol is not among the account's markets",
             "symbol"),
        Rule("BAD_SIDE", lambda d: _not_in(d["side"], ("buy", "sell")), "side is not buy/sell", "side"),
        Rule("BAD_STATUS", lambda d: _not_in(d["status"], ("open", "closed", "canceled", "expired", "rejected")),
             "status is not a ccxt order status", "status"),
        Rule("BAD_CLIENT_ORDER_ID", lambda d: _bad_client_id(d["client_order_id"], allow_null=True),
             f"client order id is empty, longer than {CLIENT_ID_MAX} or outside [.A-Za-z0-9:/_-]", "client_order_id"),
        *_qty_rules("qty", "order qty"),
        *_filled_rules("order"),
        *_price_rule("price", "price", allow_nan=True),
        *_price_rule("avg_fill_price", "average fill price", allow_nan=True),
        *_ts_rules("created_ts", "created time", now=now),
        Rule("NULL_TIMESTAMP", lambda d: d["updated_ts"].isna(), "update time is null", "updated_ts"),
    ]


def _fill_rules(known: set, bad_orders: frozenset, now: pd.Timestamp, since: pd.Timestamp,
                as_of: pd.Timestamp) -> list[Rule]:
    def order_excluded(d):
        out = pd.Series(False, index=d.index)
        if not bad_orders:
            return out
        cand = d["exchange_order_id"].isin({o for _, _, o in bad_orders}).fillna(False).to_numpy(dtype=bool)
        if not cand.any():
            return out
        sub = d.loc[cand]
        out.loc[cand] = [k in bad_orders for k in zip(sub["account"], sub["symbol"], sub["exchange_order_id"],
                                                      strict=True)]
        return out

    def fee_bad(d):
        cost = d["fee_cost"]
        return (cost.notna() & ~_finite(cost)) | (cost.notna() & d["fee_currency"].isna())

    return [
        Rule("DUPLICATE_FILL_CONFLICT", lambda d: d["_conflict"],
             "the exchange served this fill id more than once with different contents (every copy excluded)",
             "qty"),
        Rule("UNKNOWN_SYMBOL", lambda d: _not_in(d["symbol"], known), "symbol is not among the account's markets",
             "symbol"),
        Rule("NULL_ORDER_ID", lambda d: d["exchange_order_id"].isna(), "the fill names no exchange order",
             "exchange_order_id"),
        Rule("ORDER_EXCLUDED", order_excluded, "its exchange order is a bad row and was excluded",
             "exchange_order_id"),
        Rule("BAD_SIDE", lambda d: _not_in(d["side"], ("buy", "sell")), "side is not buy/sell", "side"),
        *_qty_rules("qty", "qty"),
        Rule("NON_FINITE_PRICE", lambda d: ~_finite(d["price"]), "price is not a finite number", "price"),
        Rule("NON_POSITIVE_PRICE", lambda d: d["price"] <= 0, "price is not positive", "price"),
        Rule("BAD_FEE", fee_bad, "fee cost is infinite or has no currency", "fee_cost"),
        *_ts_rules("ts", "time", now=now),
        Rule("OUT_OF_SPAN", lambda d: (d["ts"] < since) | (d["ts"] > as_of),
             f"time is outside the snapshot span [{since.isoformat()}, {as_of.isoformat()}]", "ts"),
    ]


def _position_rules(known_swap: set) -> list[Rule]:
    def unknown(d):
        return (d["market_type"] == "swap") & _not_in(d["instrument"], known_swap)

    def sign_bad(d):
        return ((d["position_side"] == "long") & (d["qty"] < 0)) | ((d["position_side"] == "short") & (d["qty"] > 0))

    return [
        Rule("BAD_MARKET_TYPE", lambda d: _not_in(d["market_type"], ("spot", "swap")), "market type is unknown",
             "market_type"),
        Rule("BAD_POSITION_SIDE", lambda d: _not_in(d["position_side"], ("long", "short", "both"))
             | ((d["market_type"] == "spot") & (d["position_side"] != "both")),
             "position side is not long/short/both (spot: both)", "position_side"),
        Rule("UNKNOWN_SYMBOL", unknown, "swap instrument is not among the account's markets", "instrument"),
        Rule("NON_FINITE_QTY", lambda d: ~_finite(d["qty"]), "qty is not a finite number", "qty"),
        Rule("SIDE_SIGN_MISMATCH", sign_bad, "qty sign contradicts the position side", "qty"),
        Rule("NEGATIVE_BALANCE", lambda d: (d["market_type"] == "spot") & (d["qty"] < 0), "spot balance is negative",
             "qty"),
    ]


@dataclass(frozen=True)
class ExchangeSnapshot:
    fills: pd.DataFrame
    orders: pd.DataFrame
    positions: pd.DataFrame
    markets: pd.DataFrame
    bad_rows: BadRows


def _dedup_fills(fills: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Identical copies dropped (a fill served twice); conflicting copies flagged ``_conflict``.

    Only rows whose fill id repeats are compared in full, so a clean frame costs one pass over one column."""
    key = list(FRAME_SPECS["exchange_fills"].keys)
    suspects = fills["fill_id"].duplicated(keep=False).to_numpy()
    if not suspects.any():
        return fills.assign(_conflict=False), 0
    sub = fills.loc[suspects]
    identical = sub.duplicated(keep="first")
    deduped = fills.drop(index=sub.index[identical.to_numpy()]).reset_index(drop=True)
    conflict = np.zeros(len(deduped), dtype=bool)
    rest = deduped["fill_id"].duplicated(keep=False).to_numpy()
    if rest.any():
        conflict[rest] = deduped.loc[rest].duplicated(key, keep=False).to_numpy()
    return deduped.assign(_conflict=conflict), int(identical.sum())


def validate_exchange_snapshot(fills: pd.DataFrame, orders: pd.DataFrame, positions: pd.DataFrame,
                               markets: pd.DataFrame, *, account: str, now: pd.Timestamp,
                               fills_since: pd.Timestamp, as_of: pd.Timestamp, window_start: pd.Timestamp,
                               profile_id: str) -> ExchangeSnapshot:
    """Row rules of the exchange frames (structure already checked): clean frames + BAD_ROW findings."""
    const = {"window_start": window_start, "profile_id": profile_id}
    m_rules = _market_rules()
    clean_markets, bad_m, f_m = _split(
        markets, m_rules, lambda d: "exchange market " + _s(d["symbol"]),
        {"account": lambda d: d["account"], "symbol": lambda d: d["symbol"]}, **const)
    known = set(clean_markets["symbol"].dropna())
    known_swap = set(clean_markets.loc[clean_markets["market_type"] == "swap", "symbol"])

    o_rules = _order_rules(known, now)
    clean_orders, bad_o, f_o = _split(
        orders, o_rules,
        lambda d: "exchange order " + _s(d["exchange_order_id"]) + " (" + _s(d["symbol"]) + ", client id "
        + _s(d["client_order_id"]) + ")",
        {"account": lambda d: d["account"], "symbol": lambda d: d["symbol"],
         "exchange_order_id": lambda d: d["exchange_order_id"], "client_order_id": lambda d: d["client_order_id"],
         "qty_exchange": lambda d: _num(d["qty"])}, **const)
    bad_order_keys = frozenset(zip(bad_o["account"], bad_o["symbol"], bad_o["exchange_order_id"], strict=True))

    deduped, dropped = _dedup_fills(fills)
    f_rules = _fill_rules(known, bad_order_keys, now, fills_since, as_of)
    clean_fills, bad_f, f_f = _split(
        deduped, f_rules,
        lambda d: "exchange fill " + _s(d["fill_id"]) + " of order " + _s(d["exchange_order_id"]) + " ("
        + _s(d["symbol"]) + " " + _s(d["side"]) + " " + _s(d["qty"]) + " @ " + _s(d["price"]) + ")",
        {"account": lambda d: d["account"], "symbol": lambda d: d["symbol"],
         "exchange_order_id": lambda d: d["exchange_order_id"], "fill_ids": lambda d: d["fill_id"],
         "qty_exchange": lambda d: _num(d["qty"])}, **const)
    clean_fills = clean_fills.drop(columns="_conflict")

    p_rules = _position_rules(known_swap)
    clean_positions, bad_p, f_p = _split(
        positions, p_rules,
        lambda d: "exchange " + _s(d["market_type"]) + " position " + _s(d["instrument"]) + " "
        + _s(d["position_side"]),
        {"account": lambda d: d["account"], "symbol": lambda d: d["instrument"],
         "qty_exchange": lambda d: _num(d["qty"])}, **const)

    no_go = (_taint_keys(bad_m["account"], instrument_of(bad_m["symbol"]), account)
             | _taint_keys(bad_o["account"], instrument_of(bad_o["symbol"]), account)
             | _taint_keys(bad_f["account"], instrument_of(bad_f["symbol"]), account))
    not_eval = _taint_keys(bad_p["account"], bad_p["instrument"], account)
    from recon_pipeline.rules.corrections import concat

    bad_rows = BadRows(
        findings=concat([f_m, f_o, f_f, f_p], schemas.FINDINGS),
        rows_in={"exchange_fills": len(fills), "exchange_orders": len(orders),
                 "exchange_positions": len(positions), "exchange_markets": len(markets)},
        rows_excluded={"exchange_fills": len(bad_f), "exchange_orders": len(bad_o),
                       "exchange_positions": len(bad_p), "exchange_markets": len(bad_m)},
        duplicates_dropped={"exchange_fills": dropped},
        excluded_by_reason=_reason_counts(exchange_fills=f_f, exchange_orders=f_o, exchange_positions=f_p,
                                          exchange_markets=f_m),
        taint=ParityTaint(no_go=no_go, not_evaluated=not_eval),
    )
    return ExchangeSnapshot(clean_fills, clean_orders, clean_positions, clean_markets, bad_rows)


# --- database side -------------------------------------------------------------------------------


def _slice_rules() -> list[Rule]:
    return [
        Rule("NULL_SYMBOL", lambda d: d["symbol"].isna() | d["profile_id"].isna(), "symbol or profile is null",
             "symbol"),
        Rule("BAD_SIDE", lambda d: _not_in(d["side"], ("long", "short")), "side is not long/short", "side"),
        Rule("BAD_STATUS", lambda d: _not_in(d["status"], ("OPEN", "CLOSED", "QUARANTINED")),
             "status is not OPEN/CLOSED/QUARANTINED", "status"),
        *_qty_rules("entry_qty", "entry qty"),
        Rule("NEGATIVE_EXIT_QTY", lambda d: ~_finite(d["exit_qty"]) | (d["exit_qty"] < 0),
             "exit qty is negative or not a finite number", "exit_qty"),
        Rule("EXIT_EXCEEDS_ENTRY", lambda d: _gt(d["exit_qty"], d["entry_qty"]), "exit qty exceeds entry qty",
             "exit_qty"),
        *_price_rule("entry_price", "entry price", allow_nan=False),
        *_ts_rules("entry_time", "entry time", null_reason="NULL_ENTRY_TIME"),
        Rule("BAD_EXIT_SOURCE", lambda d: d["exit_source"].notna()
             & _not_in(d["exit_source"], ("exchange", "backfill", "parity_synthetic")),
             "exit source is not exchange/backfill/parity_synthetic", "exit_source"),
        Rule("BAD_CLIENT_ORDER_ID", lambda d: _bad_client_id(d["entry_client_order_id"], allow_null=True),
             f"entry client order id is empty, longer than {CLIENT_ID_MAX} or outside [.A-Za-z0-9:/_-]",
             "entry_client_order_id"),
    ]


def _db_order_rules() -> list[Rule]:
    return [
        Rule("NULL_SYMBOL", lambda d: d["symbol"].isna() | d["profile_id"].isna(), "symbol or profile is null",
             "symbol"),
        Rule("BAD_SIDE", lambda d: _not_in(d["side"], ("buy", "sell")), "side is not buy/sell", "side"),
        Rule("BAD_ROLE", lambda d: _not_in(d["role"], ("ENTRY", "EXIT")), "role is not ENTRY/EXIT", "role"),
        Rule("BAD_STATUS", lambda d: _not_in(d["status"], ("NEW", "OPEN", "PARTIALLY_FILLED", "FILLED", "CANCELED",
                                                            "REJECTED", "EXPIRED")),
             "status is not a DB order status", "status"),
        Rule("BAD_CLIENT_ORDER_ID", lambda d: _bad_client_id(d["client_order_id"], allow_null=False),
             f"client order id is null, empty, longer than {CLIENT_ID_MAX} or outside [.A-Za-z0-9:/_-]",
             "client_order_id"),
        *_qty_rules("qty", "order qty"),
        *_filled_rules("order"),
        *_price_rule("price", "price", allow_nan=True),
        *_price_rule("avg_fill_price", "average fill price", allow_nan=True),
        Rule("NULL_TIMESTAMP", lambda d: d["created_at"].isna() | d["updated_at"].isna(),
             "created or updated time is null", "created_at"),
    ]


def _db_position_rules() -> list[Rule]:
    return [
        Rule("NON_FINITE_QTY", lambda d: ~_finite(d["qty"]), "qty is not a finite number", "qty"),
        Rule("NON_POSITIVE_PRICE", lambda d: d["avg_entry_price"].notna()
             & (~_finite(d["avg_entry_price"]) | (d["avg_entry_price"] < 0)),
             "average entry price is negative or infinite", "avg_entry_price"),
    ]


@dataclass(frozen=True)
class DbSnapshot:
    slices: pd.DataFrame
    orders: pd.DataFrame
    positions: pd.DataFrame
    bad_rows: BadRows


def validate_db_snapshot(slices: pd.DataFrame, orders: pd.DataFrame, positions: pd.DataFrame, *, account: str,
                         window_start: pd.Timestamp, profile_id: str) -> DbSnapshot:
    """Row rules of the DB frames (structure already checked): clean frames + BAD_ROW findings."""
    const = {"window_start": window_start, "profile_id": profile_id, "account": account}
    s_rules = _slice_rules()
    clean_slices, bad_s, f_s = _split(
        slices, s_rules,
        lambda d: "trade_history slice " + _s(d["trade_id"]) + " of profile " + _s(d["profile_id"]) + " ("
        + _s(d["symbol"]) + " " + _s(d["side"]) + " " + _s(d["status"]) + ")",
        {"symbol": lambda d: d["symbol"], "trade_id": lambda d: d["trade_id"],
         "client_order_id": lambda d: d["entry_client_order_id"], "qty_db": lambda d: _num(d["entry_qty"])},
        **const)
    o_rules = _db_order_rules()
    clean_orders, bad_o, f_o = _split(
        orders, o_rules,
        lambda d: "orders row " + _s(d["order_id"]) + " of profile " + _s(d["profile_id"]) + " (" + _s(d["symbol"])
        + " " + _s(d["role"]) + ", exchange id " + _s(d["exchange_order_id"]) + ")",
        {"symbol": lambda d: d["symbol"], "trade_id": lambda d: d["trade_id"], "order_id": lambda d: d["order_id"],
         "exchange_order_id": lambda d: d["exchange_order_id"], "client_order_id": lambda d: d["client_order_id"],
         "qty_db": lambda d: _num(d["qty"])}, **const)
    p_rules = _db_position_rules()
    clean_positions, bad_p, f_p = _split(
        positions, p_rules,
        lambda d: "positions row " + _s(d["profile_id"]) + "|" + _s(d["symbol"]),
        {"symbol": lambda d: d["symbol"], "qty_db": lambda d: _num(d["qty"])}, **const)
    from recon_pipeline.rules.corrections import concat

    bad_rows = BadRows(
        findings=concat([f_s, f_o, f_p], schemas.FINDINGS),
        rows_in={"db_trade_history": len(slices), "db_orders": len(orders), "db_positions": len(positions)},
        rows_excluded={"db_trade_history": len(bad_s), "db_orders": len(bad_o), "db_positions": len(bad_p)},
        excluded_by_reason=_reason_counts(db_trade_history=f_s, db_orders=f_o, db_positions=f_p),
        taint=ParityTaint(no_go=_taint_keys(bad_s["account"], instrument_of(bad_s["symbol"]), account)),
    )
    return DbSnapshot(clean_slices, clean_orders, clean_positions, bad_rows)


# --- parity wiring -------------------------------------------------------------------------------


def parity_no_go_trade_ids(slices: pd.DataFrame, taint: ParityTaint) -> frozenset[str]:
    """Trade ids of the OPEN slices on a no-go instrument (quarantined, never closed at mark, if ghosts)."""
    if not taint.no_go or slices.empty:
        return frozenset()
    open_ = slices.loc[slices["status"] == "OPEN"]
    inst = instrument_of(open_["symbol"])
    acc = open_["account"].astype("str")
    hit = pd.Series(list(zip(acc, inst, strict=True)), index=open_.index).isin(taint.no_go)
    hit |= pd.Series(list(zip(acc, [ALL] * len(acc), strict=True)), index=open_.index).isin(taint.no_go)
    return frozenset(open_.loc[hit, "trade_id"].astype(str).tolist())


def markets_for_parity(markets: pd.DataFrame, taint: ParityTaint) -> pd.DataFrame:
    """Markets with the mark price blanked on not-evaluated instruments (parity then says "not evaluated")."""
    if not taint.not_evaluated or markets.empty:
        return markets
    inst = markets["symbol"].astype("str").where(markets["market_type"] == "swap", markets["base"].astype("str"))
    acc = markets["account"].astype("str")
    hit = (pd.Series(list(zip(acc, inst, strict=True)), index=markets.index).isin(taint.not_evaluated)
           | pd.Series(list(zip(acc, [ALL] * len(acc), strict=True)), index=markets.index).isin(taint.not_evaluated))
    out = markets.copy()
    out.loc[hit, "mark_price"] = np.nan
    return out
