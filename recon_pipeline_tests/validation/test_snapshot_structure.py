"""Structural suites of the snapshot frames (Great Expectations): a failure names frame, expectation, examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recon_pipeline.validation import snapshots as V
from recon_pipeline_tests.rules import frames as F

GOOD = {
    "exchange_fills": lambda: F.fills([{"fill_id": "1"}, {"fill_id": "1", "symbol": "ETH/USDT"}]),
    "exchange_orders": lambda: F.exchange_orders([{"exchange_order_id": "o1"}, {"exchange_order_id": "o2"}]),
    "exchange_positions": lambda: F.exchange_positions([{"instrument": "BTC"}, {"instrument": "ETH"}]),
    "exchange_markets": F.default_markets,
    "db_trade_history": lambda: F.slices([{"trade_id": "t1"}, {"trade_id": "t2"}]),
    "db_orders": lambda: F.db_orders([{"order_id": "d1"}, {"order_id": "d2"}]),
    "db_positions": lambda: F.db_positions([{"symbol": "BTC/USDT"}, {"symbol": "ETH/USDT"}]),
}


@pytest.mark.parametrize("name", list(GOOD))
def test_a_well_formed_frame_passes(name):
    result = V.check_structure(name, GOOD[name]())
    assert result.success, result.describe()
    empty = V.check_structure(name, GOOD[name]().iloc[:0])
    assert empty.success, empty.describe()


def _fail(name: str, df: pd.DataFrame) -> V.SnapshotStructureError:
    with pytest.raises(V.SnapshotStructureError) as info:
        V.require_structure({name: df})
    return info.value


@pytest.mark.parametrize(("name", "column"), [
    pytest.param("exchange_fills", "qty", id="fills-missing-qty"),
    pytest.param("db_trade_history", "entry_time", id="slices-missing-entry-time"),
])
def test_missing_column_is_named(name, column):
    error = _fail(name, GOOD[name]().drop(columns=[column]))
    assert f"{name}_structure" in str(error)
    assert "expect_column_values_to_be_null(missing_column)" in str(error) and f"'{column}'" in str(error)


def test_extra_column_is_named():
    error = _fail("db_orders", GOOD["db_orders"]().assign(surprise=1))
    assert "expect_column_values_to_be_null(extra_column)" in str(error) and "'surprise'" in str(error)


@pytest.mark.parametrize(("name", "column", "cast", "fact"), [
    pytest.param("exchange_fills", "qty", "str", "qty:str", id="qty-as-string"),
    pytest.param("exchange_orders", "created_ts", "str", "created_ts:str", id="time-as-string"),
    pytest.param("db_positions", "qty", object, "qty:object", id="qty-as-object"),
    pytest.param("exchange_markets", "symbol", object, "symbol:object", id="symbol-as-object"),
])
def test_wrong_dtype_is_named(name, column, cast, fact):
    df = GOOD[name]()
    df[column] = df[column].astype(cast)
    error = _fail(name, df)
    assert "expect_column_values_to_be_in_set(column_dtype)" in str(error) and fact in str(error)


@pytest.mark.parametrize("name", [n for n in GOOD if n != "exchange_fills"])
def test_duplicate_key_fails(name):
    df = GOOD[name]()
    error = _fail(name, pd.concat([df, df.iloc[:1]], ignore_index=True))
    spec = V.FRAME_SPECS[name]
    expectation = "expect_compound_columns_to_be_unique" if len(spec.keys) > 1 else "expect_column_values_to_be_unique"
    assert f"{name}_structure: {expectation}" in str(error)
    outcome = error.results[0].failures[0]
    assert outcome.unexpected_count == 2 and outcome.examples


def test_duplicate_fill_ids_are_not_structural():
    df = GOOD["exchange_fills"]()
    assert V.check_structure("exchange_fills", pd.concat([df, df], ignore_index=True)).success


@pytest.mark.parametrize(("name", "column"), [
    pytest.param("exchange_fills", "fill_id", id="fill-without-id"),
    pytest.param("exchange_orders", "exchange_order_id", id="order-without-id"),
    pytest.param("db_trade_history", "trade_id", id="slice-without-id"),
])
def test_null_key_fails(name, column):
    df = GOOD[name]()
    df.loc[0, column] = None
    error = _fail(name, df)
    assert f"expect_column_values_to_not_be_null({column}) failed on 1 rows" in str(error)


def test_every_failing_frame_is_reported_at_once():
    frames = {"db_orders": GOOD["db_orders"]().drop(columns=["qty"]),
              "db_positions": pd.concat([GOOD["db_positions"]()] * 2, ignore_index=True),
              "db_trade_history": GOOD["db_trade_history"]()}
    error = _fail_all(frames)
    assert [r.suite for r in error.results] == ["db_orders_structure", "db_positions_structure"]


def _fail_all(frames):
    with pytest.raises(V.SnapshotStructureError) as info:
        V.require_structure(frames)
    return info.value


def test_all_frames_pass_together_in_one_combined_run():
    """Keys of different frames never collide (codes are offset per frame); duplicated fills stay legal."""
    frames = {name: make() for name, make in GOOD.items()}
    frames["exchange_fills"] = pd.concat([frames["exchange_fills"]] * 2, ignore_index=True)
    results = V.check_structures(frames)
    assert list(results) == list(GOOD) and all(r.success for r in results.values())
    assert all(r.suite == f"{name}_structure" for name, r in results.items())
    assert all(r.success for r in V.check_structures({n: GOOD[n]().iloc[:0] for n in GOOD}).values())


@pytest.mark.parametrize("broken", list(GOOD))
def test_a_combined_run_names_only_the_broken_frame(broken):
    frames = {name: make() for name, make in GOOD.items()}
    frames[broken] = frames[broken].assign(surprise=1)
    results = V.check_structures(frames)
    assert [n for n, r in results.items() if not r.success] == [broken]
    assert "'surprise'" in results[broken].describe()


def _drop_column(df):
    return df.drop(columns=[df.columns[0]])


def _wrong_dtype(df):
    col = next(c for c in df.columns if str(df[c].dtype) == "float64")
    return df.assign(**{col: df[col].astype(str)})


def _duplicate_key(df):
    return pd.concat([df, df.iloc[[0]]], ignore_index=True)


def _null_key(name):
    def apply(df):
        df = df.copy()
        df.loc[0, V.FRAME_SPECS[name].keys[0]] = None
        return df
    return apply


@pytest.mark.parametrize("name, breaks", [
    *[(n, _drop_column) for n in ("db_trade_history", "exchange_orders")],
    *[(n, _wrong_dtype) for n in ("db_orders", "exchange_fills")],
    *[(n, _duplicate_key) for n in ("db_trade_history", "exchange_markets")],
    *[(n, _null_key(n)) for n in ("db_orders", "exchange_fills")],
])
def test_the_verdict_only_combined_run_fails_on_every_structural_fault(monkeypatch, name, breaks):
    """The combined run takes GE's BOOLEAN_ONLY format (verdicts only); any fault must still fail it, so
    the per-frame runs that name the fault happen."""
    frames = {n: make() for n, make in GOOD.items()}
    frames[name] = breaks(frames[name])
    detailed = []
    real = V.check_structure
    monkeypatch.setattr(V, "check_structure", lambda n, df: detailed.append(n) or real(n, df))
    results = V.check_structures(frames)
    assert detailed == list(GOOD)  # the combined verdict failed: every frame checked on its own
    assert [n for n, r in results.items() if not r.success] == [name]


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", "ab", None]), st.sampled_from(["x", "bx", "", None]),
                               st.integers(0, 3)), max_size=30),
       width=st.integers(1, 3))
def test_key_codes_partition_rows_as_a_groupby_does(rows, width):
    """The combined run's key codes (factorized per column, combined) equal keys exactly where the key
    columns are equal, and are null exactly where a key column is null (groupby ``ngroup`` semantics)."""
    df = pd.DataFrame(rows, columns=["k1", "k2", "k3"]).astype({"k1": "str", "k2": "str", "k3": "int64"})
    keys = ("k1", "k2", "k3")[:width]
    ours = V._key_codes(df, keys)
    theirs = df.groupby(list(keys), sort=False, dropna=True).ngroup().to_numpy("float64") if len(df) else ours
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    seen = ~np.isnan(ours)
    pairs = pd.DataFrame({"ours": ours[seen], "theirs": theirs[seen]}).drop_duplicates()
    assert pairs["ours"].is_unique and pairs["theirs"].is_unique  # a one-to-one map between the codings


@pytest.mark.parametrize("other", ["ETH/USDT", "BTC/USDT:USDT"])
def test_compound_keys_differing_in_one_column_are_not_duplicates(other):
    frames = {name: make() for name, make in GOOD.items()}
    orders = frames["exchange_orders"]
    frames["exchange_orders"] = pd.concat([orders, orders.iloc[[0]].assign(symbol=other)], ignore_index=True)
    assert frames["exchange_orders"]["symbol"].iloc[0] != other
    assert all(r.success for r in V.check_structures(frames).values())
