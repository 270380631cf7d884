import math

import numpy as np
import pandas as pd
import pytest

from recon_pipeline.rules import attribution as A
from recon_pipeline.rules import client_order_id as C
from recon_pipeline.rules import keys as K
from recon_pipeline.rules.corrections import canonical_json, canonical_json_str_keys
from recon_pipeline.rules.exit_backfill import _sort_order
from recon_pipeline_tests.rules import frames as F


def s(values):
    return pd.Series(values, dtype="str")


def test_codes_number_equal_values_alike_across_parts_and_na_matches_na():
    a, b = K.codes(s(["x", None, "y"]), s(["y", "z", None]))
    assert a[0] != a[2] and a[2] == b[0] and a[1] == b[2] and b[1] not in a


def test_key_codes_and_lookup_behave_like_a_left_merge_on_a_unique_right():
    left = pd.DataFrame({"acc": s(["A", "A", "B", None]), "id": s(["1", "2", "1", "1"])})
    right = pd.DataFrame({"acc": s(["B", "A", "A", None]), "id": s(["1", "2", "2", "1"]), "v": [10, 20, 30, 40]})
    lc, rc = K.key_codes([left["acc"], left["id"]], [right["acc"], right["id"]])
    pos = K.lookup(lc, rc)
    assert pos.tolist() == [-1, 1, 0, 3]  # the first of repeated right keys; NA matches NA
    assert K.lookup(np.array([-1, 0]), np.array([0])).tolist() == [-1, 0]  # negative: no key
    assert K.lookup(np.array([0, 1]), np.array([], dtype=np.int64)).tolist() == [-1, -1]


def test_take_and_pick_str():
    v = s(["a", None, "c"])
    assert K.take_str(v, np.array([2, -1, 1, 0])).tolist()[::3] == ["c", "a"]
    assert K.take_str(v, np.array([2, -1, 1, 0])).isna().tolist() == [False, True, True, False]
    assert K.take_few(s(["buy", "sell", "buy"]), np.array([1, -1, 2])).tolist()[::2] == ["sell", "buy"]
    out = K.pick_str(3, [(np.array([True, False, False]), s(["p"]), np.array([0, 0, 0])),
                         (np.array([True, True, False]), s(["q", "r"]), np.array([0, 1, 0]))])
    assert out.tolist()[:2] == ["p", "r"] and pd.isna(out.iloc[2])  # first true wins; none true -> NA
    assert K.at(np.array([], np.int64), np.array([-1, -1]), -1).tolist() == [-1, -1]


def test_sort_order_matches_a_stable_pandas_sort_with_missing_values_last():
    df = pd.DataFrame({"t": s(["b", "a", None, "a", "b", "a"]),
                       "ts": pd.to_datetime(["2026-01-02", None, "2026-01-01", "2026-01-01", "2026-01-02",
                                             "2026-01-01"], utc=True),
                       "f": s(["2", "1", "0", None, "1", "3"])})
    expected = df.sort_values(["t", "ts", "f"], kind="stable").index.to_numpy()
    assert _sort_order(df, ["t", "ts", "f"]).tolist() == expected.tolist()


@pytest.mark.parametrize("doc", [
    {"b": 1, "a": [1.5, "x", None, True], "c": {"z": 0.1, "y": pd.Timestamp("2026-01-01T09:00Z")}},
    {"q": float("nan"), "r": [math.inf, np.float64(2.5)], "s": np.int64(3)},
    {"t": pd.NaT, "u": (1, 2), "v": np.bool_(True), "w": "é"},
])
def test_canonical_json_str_keys_equals_canonical_json(doc):
    assert canonical_json_str_keys(doc) == canonical_json(doc)


def test_is_raw_key_series():
    ids = s(["t1", "trade-with-dashes", None, "", "a" * 21, "ok\n"])
    assert C.is_raw_key_series(ids).tolist() == [True, False, False, False, False, True]


def test_attribute_orders_with_few_orders_and_many_slices():
    # more than 8 slices per order: attribution reads only the slices the orders can name
    profiles = F.profiles([{"profile_id": "p1"}, {"profile_id": "p2"}])
    slices = F.slices([{"trade_id": "t1", "profile_id": "p1"}, {"trade_id": "t2", "profile_id": "p2"},
                       {"trade_id": "trade-with-dashes", "profile_id": "p1"}]
                      + [{"trade_id": f"x{i}", "profile_id": "p1"} for i in range(40)])
    eo = F.exchange_orders([
        {"exchange_order_id": "o1", "client_order_id": C.encode("g1", "x", "trade-with-dashes")},
        {"exchange_order_id": "o2", "client_order_id": C.encode("g1", "x", "t1")},
        {"exchange_order_id": "o3", "client_order_id": "web-1"},
        {"exchange_order_id": "o4", "client_order_id": C.encode("g1", "x", "t2")},
    ])
    dbo = F.db_orders([{"exchange_order_id": "o3", "trade_id": "t2", "profile_id": "p2", "role": "EXIT"}])
    out = A.attribute_orders(eo, profiles, dbo, slices)
    got = [[None if pd.isna(v) else v for v in row]
           for row in out[["profile_id", "trade_id", "strength", "unknown_trade"]].to_numpy().tolist()]
    assert got == [["p1", "trade-with-dashes", "client_order_id", False], ["p1", "t1", "client_order_id", False],
                   ["p2", "t2", "trade_id_hint", False], ["p1", None, "sub_tag", True]]


def test_db_hint_is_the_row_with_the_smallest_order_id():
    profiles = F.profiles([{"profile_id": "p1"}, {"profile_id": "p2"}])
    slices = F.slices([{"trade_id": "t1", "profile_id": "p1"}, {"trade_id": "t2", "profile_id": "p2"}])
    dbo = F.db_orders([{"order_id": "d9", "exchange_order_id": "o1", "trade_id": "t1", "profile_id": "p1"},
                       {"order_id": "d2", "exchange_order_id": "o1", "trade_id": "t2", "profile_id": "p2"}])
    eo = F.exchange_orders([{"exchange_order_id": "o1", "client_order_id": "web-1"}])
    out = A.attribute_fills(F.fills([{"exchange_order_id": "o1"}]), eo, profiles, dbo, slices)
    assert out[["profile_id", "trade_id", "db_order_id", "strength"]].iloc[0].tolist() == [
        "p2", "t2", "d2", "trade_id_hint"]
