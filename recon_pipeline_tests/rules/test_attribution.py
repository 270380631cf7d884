import pandas as pd
import pytest

from recon_pipeline.rules import attribution as A
from recon_pipeline.rules import client_order_id as C
from recon_pipeline_tests.rules import frames as F

# p1 (g1) owns t1, p2 (g2) owns t2; p12 (g12) exists to prove g12-... is never g1's.
PROFILES = F.profiles([{"profile_id": "p1"}, {"profile_id": "p2"}, {"profile_id": "p12"}])
SLICES = F.slices([{"trade_id": "t1", "profile_id": "p1"}, {"trade_id": "t2", "profile_id": "p2"},
                   {"trade_id": "trade-with-dashes", "profile_id": "p1"}])


def attribute_one(client_id, db_order=None):
    eo = F.exchange_orders([{"exchange_order_id": "o1", "client_order_id": client_id}])
    fi = F.fills([{"exchange_order_id": "o1"}])
    dbo = F.db_orders([{"exchange_order_id": "o1", **db_order}] if db_order else [])
    out = A.attribute_fills(fi, eo, PROFILES, dbo, SLICES)
    assert len(out) == 1
    r = out.iloc[0]
    return tuple(None if pd.isna(r[c]) else r[c] for c in ("profile_id", "trade_id", "role", "strength")) + (
        bool(r["unknown_trade"]),)


@pytest.mark.parametrize(
    "client_id, db_order, expected",
    [
        (C.encode("g1", "x", "t1"), None, ("p1", "t1", "x", "client_order_id", False)),
        (C.encode("g1", "x", "t1", 3), None, ("p1", "t1", "x", "client_order_id", False)),
        (C.encode("g1", "e", "t1"), None, ("p1", "t1", "e", "client_order_id", False)),
        (C.encode("g1", "x", "trade-with-dashes"), None, ("p1", "trade-with-dashes", "x", "client_order_id", False)),
        (C.encode("g2", "x", "t2"), None, ("p2", "t2", "x", "client_order_id", False)),
        # a deterministic id of g1 naming p2's trade: p1 has no such trade -> unknown, never t2's evidence
        (C.encode("g1", "x", "t2"), None, ("p1", None, "x", "sub_tag", True)),
        (C.encode("g1", "x", "t999"), None, ("p1", None, "x", "sub_tag", True)),
        (C.encode("g12", "x", "t1"), None, ("p12", None, "x", "sub_tag", True)),  # never g1/p1 evidence
        ("g12-manual-7", None, ("p12", None, None, "sub_tag", False)),
        ("g1-manual-7", None, ("p1", None, None, "sub_tag", False)),
        ("g1manual", None, (None, None, None, "none", False)),
        ("zz-x-t1", None, (None, None, "x", "none", False)),                   # tag of no profile
        (None, None, (None, None, None, "none", False)),
        ("web-123", {"trade_id": "t2", "profile_id": "p2", "role": "EXIT"}, ("p2", "t2", "x", "trade_id_hint", False)),
        ("web-123", {"trade_id": "t1", "role": "ENTRY"}, ("p1", "t1", "e", "trade_id_hint", False)),
        ("web-123", {"trade_id": "gone", "role": "EXIT"}, ("p1", None, "x", "none", True)),
        ("g1-manual", {"trade_id": None, "role": "EXIT"}, ("p1", None, "x", "sub_tag", False)),
        # deterministic id wins over a conflicting hint
        (C.encode("g1", "x", "t1"), {"trade_id": "t2", "profile_id": "p2"}, ("p1", "t1", "x", "client_order_id", False)),
    ],
    ids=["coid-exit", "coid-resend", "coid-entry", "coid-digest", "coid-other-profile", "coid-foreign-trade",
         "coid-unknown-trade", "g12-not-g1", "g12-subtag", "g1-subtag", "bare-prefix", "unknown-tag", "no-client-id",
         "hint", "hint-entry", "hint-unknown-trade", "subtag-with-db-role", "coid-beats-hint"],
)
def test_attribution_table(client_id, db_order, expected):
    assert attribute_one(client_id, db_order) == expected


def test_fill_without_order_row_uses_db_hint():
    fi = F.fills([{"exchange_order_id": "o9"}])
    dbo = F.db_orders([{"exchange_order_id": "o9", "trade_id": "t1"}])
    out = A.attribute_fills(fi, F.exchange_orders([]), PROFILES, dbo, SLICES)
    assert out.loc[0, "strength"] == "trade_id_hint" and pd.isna(out.loc[0, "order_qty"])


def test_account_is_part_of_the_key():
    # the same sub_tag on another account belongs to another profile
    profiles = F.profiles([{"profile_id": "p1"}, {"profile_id": "p9", "sub_tag": "g1", "account": "other"}])
    eo = F.exchange_orders([{"exchange_order_id": "o1", "client_order_id": "g1-manual", "account": "other"}])
    fi = F.fills([{"exchange_order_id": "o1", "account": "other"}])
    out = A.attribute_fills(fi, eo, profiles, F.db_orders([]), SLICES)
    assert out.loc[0, "profile_id"] == "p9"


def test_duplicate_sub_tag_attributes_nothing():
    profiles = F.profiles([{"profile_id": "p1"}, {"profile_id": "p2", "sub_tag": "g1"}])
    eo = F.exchange_orders([{"exchange_order_id": "o1", "client_order_id": "g1-manual"}])
    out = A.attribute_fills(F.fills([{}]), eo, profiles, F.db_orders([]), SLICES)
    assert out.loc[0, "strength"] == "none"


def test_one_row_per_fill_and_order_columns():
    eo = F.exchange_orders([{"exchange_order_id": "o1", "client_order_id": "g1-x-t1", "qty": 3.0}])
    fi = F.fills([{"qty": 1.0}, {"qty": 2.0}])
    out = A.attribute_fills(fi, eo, PROFILES, F.db_orders([]), SLICES)
    assert out["fill_id"].tolist() == ["f1", "f2"]
    assert out["order_qty"].tolist() == [3.0, 3.0]
    assert set(A.ATTRIBUTION_COLUMNS) <= set(out.columns)


def test_attribute_orders():
    eo = F.exchange_orders([{"client_order_id": "g2-x-t2"}, {"client_order_id": "foreign"}])
    out = A.attribute_orders(eo, PROFILES, F.db_orders([]), SLICES)
    assert out["strength"].tolist() == ["client_order_id", "none"]
    assert len(out) == 2


def test_per_order_attribution_maps_back_to_every_fill_in_order():
    # fills of three orders interleaved, one with no order row, one with no exchange order id at all
    eo = F.exchange_orders([{"exchange_order_id": "o1", "client_order_id": C.encode("g1", "x", "t1"), "qty": 3.0},
                            {"exchange_order_id": "o2", "client_order_id": "g2-manual", "qty": 5.0}])
    fi = F.fills([{"exchange_order_id": "o2"}, {"exchange_order_id": "o1"}, {"exchange_order_id": "o9"},
                  {"exchange_order_id": "o1"}, {"exchange_order_id": None}, {"exchange_order_id": "o2"}])
    dbo = F.db_orders([{"exchange_order_id": "o9", "trade_id": "t2", "profile_id": "p2", "role": "EXIT"}])
    out = A.attribute_fills(fi, eo, PROFILES, dbo, SLICES)
    assert out["fill_id"].tolist() == fi["fill_id"].tolist()
    assert out["strength"].tolist() == ["sub_tag", "client_order_id", "trade_id_hint", "client_order_id", "none",
                                        "sub_tag"]
    assert [None if pd.isna(v) else v for v in out["trade_id"]] == [None, "t1", "t2", "t1", None, None]
    assert [None if pd.isna(v) else v for v in out["profile_id"]] == ["p2", "p1", "p2", "p1", None, "p2"]
    assert out["order_qty"].fillna(-1.0).tolist() == [5.0, 3.0, -1.0, 3.0, -1.0, 5.0]
    # same answer as attributing each fill's order on its own
    for i in range(len(fi)):
        one = A.attribute_fills(fi.iloc[[i]], eo, PROFILES, dbo, SLICES)
        pd.testing.assert_frame_equal(one, out.iloc[[i]].reset_index(drop=True))


def test_attribution_columns_are_str_dtype():
    eo = F.exchange_orders([{"exchange_order_id": "o1", "client_order_id": "g1-x-t1"}])
    out = A.attribute_fills(F.fills([{}]), eo, PROFILES, F.db_orders([]), SLICES)
    for col in ("tag_prefix", "sub_tag", "trade_key", "profile_id", "trade_id", "role", "strength", "named_trade",
                "db_order_id"):
        assert out[col].dtype == "str", col
    assert out["resend"].dtype == "Int64" and out["unknown_trade"].dtype == bool


@pytest.mark.parametrize("dtype", ["str", object])
def test_isin_and_lookup_str_match_pandas(dtype):
    s = pd.Series(["a", None, "b", "c", "a"], dtype=dtype)
    for values in (["a", "c"], ["b", None], [], [None]):
        v = pd.Series(values, dtype=dtype)
        assert A.isin_str(s, v).tolist() == s.isin(v).tolist()
        assert A.lookup_str(s, v).tolist() == pd.Index(v).get_indexer(s).tolist()
