"""Who owns an exchange fill or order: fills -> exchange orders -> DB (DESIGN section 3).

Binance fills carry no client order id; a fill links to its exchange order by
``exchange_order_id`` and the order carries the client id. Attribution is therefore decided per
exchange order and inherited by its fills. Strengths assigned here, strongest first:

* ``client_order_id``: the client id is a deterministic id whose sub_tag is a profile's on the
  fill's account *and* whose trade_key is the key of one of that profile's slices.
* ``trade_id_hint``: the DB ``orders`` row with this exchange order id (same account) names a
  trade that is in the slices frame.
* ``sub_tag``: the client id starts with ``{sub_tag}-`` of a profile on the account (the part before
  the first ``-`` equals the sub_tag, so ``g12-...`` is never ``g1``'s) and it is not a deterministic
  id naming a trade.
* ``none``: nothing ties the order to a profile.

The heuristic strengths (``single_open_trade``, ``qty_unique``) are assigned by
:mod:`recon_pipeline.rules.exit_backfill`, never here.

``unknown_trade`` marks an order that names a trade the DB does not have: a deterministic id of a
profile's sub_tag whose key matches none of that profile's slices, or a DB order row whose
``trade_id`` is not in the slices frame. Such an order is never evidence for any slice (NO_GO
``UNKNOWN_TRADE``); it keeps the profile that the sub_tag (or the DB row) names, strength ``sub_tag``
when the tag matches and ``none`` otherwise, and ``trade_id`` NA (the named key or id is in
``named_trade``). A deterministic id beats a conflicting DB hint (``hint_conflict`` is set).

Snapshot contract: the slices frame must hold every slice a fill in the fetched span can name (OPEN
slices, and CLOSED ones whose exit falls in the span), else the exits of older closed trades read
as UNKNOWN_TRADE.

Duplicate ``(account, sub_tag)`` rows in ``profiles`` (a configuration error: sub_tags are unique
per account) attribute nothing to either profile.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon_pipeline.rules import client_order_id as coid

STRENGTH_ORDER = ("client_order_id", "trade_id_hint", "sub_tag", "single_open_trade", "qty_unique", "none")
STRONG = ("client_order_id", "trade_id_hint", "sub_tag")
_ROLE_FROM_DB = {"ENTRY": "e", "EXIT": "x"}

#: Columns added to the fills (or orders) frame by this module.
ATTRIBUTION_COLUMNS = (
    "tag_prefix", "sub_tag", "trade_key", "resend", "is_deterministic",
    "profile_id", "trade_id", "role", "strength", "unknown_trade", "named_trade",
    "db_order_id", "hint_conflict",
)


def strength_rank(strength: pd.Series) -> pd.Series:
    """0 for ``client_order_id`` .. 5 for ``none`` (NA counts as ``none``)."""
    ranks = {s: i for i, s in enumerate(STRENGTH_ORDER)}
    return strength.map(ranks).fillna(len(STRENGTH_ORDER) - 1).astype("int64")


def isin_str(s: pd.Series, values: pd.Series) -> np.ndarray:
    """``s.isin(values)`` for ``str`` columns through Arrow's hash set (pandas 3.1's ``str`` isin
    walks the values in Python)."""
    if s.dtype != "str" or values.dtype != "str":
        return s.isin(values).to_numpy(bool)
    value_set = pa.array(values.array).unique() if len(values) else pa.array([], type=pa.large_string())
    arr = s.array.__arrow_array__() if isinstance(s.array, pd.arrays.ArrowStringArray) else pa.array(s.array)
    out = pc.is_in(arr, value_set=value_set.cast(arr.type), skip_nulls=False)
    return np.asarray(pc.fill_null(out, False).to_numpy(zero_copy_only=False), dtype=bool)


def lookup_str(s: pd.Series, values: pd.Series) -> np.ndarray:
    """Position in ``values`` (unique) of each element of ``s``, -1 when absent; a missing value
    finds a missing value, as ``isin`` and ``map`` do. Arrow hash lookup for ``str`` columns."""
    if s.dtype != "str" or values.dtype != "str":
        return pd.Index(values).get_indexer(s)
    arr = s.array.__arrow_array__() if isinstance(s.array, pd.arrays.ArrowStringArray) else pa.array(s.array)
    vals = pa.array(values.array) if len(values) else pa.array([], type=pa.large_string())
    out = pc.index_in(arr, value_set=vals.cast(arr.type), skip_nulls=False)
    return np.asarray(pc.fill_null(out, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _profile_tags(profiles: pd.DataFrame) -> pd.DataFrame:
    tags = profiles[["account", "sub_tag", "profile_id"]].dropna(subset=["account", "sub_tag"])
    return tags.drop_duplicates(["account", "sub_tag"], keep=False)


def _slice_keys(slices: pd.DataFrame) -> pd.DataFrame:
    sl = slices[["trade_id", "profile_id"]].dropna().drop_duplicates("trade_id")
    sl = sl.assign(trade_key=coid.trade_key_series(sl["trade_id"]))
    return sl.drop_duplicates(["profile_id", "trade_key"], keep=False)


def _attribute_keys(keys: pd.DataFrame, profiles: pd.DataFrame, db_orders: pd.DataFrame,
                    slices: pd.DataFrame) -> pd.DataFrame:
    """Attribution columns for rows of (account, exchange_order_id, client_order_id), by position.

    Vectorised on ``str`` columns end to end (no object round trips): the choices below are
    ``Series.where`` chains equivalent to a first-true-wins ``np.select``."""
    n = len(keys)
    k = keys[["account", "exchange_order_id", "client_order_id"]].reset_index(drop=True)
    parsed = coid.parse_series(k["client_order_id"])
    prefix = coid.tag_prefix_series(k["client_order_id"])

    tags = _profile_tags(profiles).rename(columns={"sub_tag": "tag_prefix", "profile_id": "tag_profile"})
    base = pd.DataFrame({"account": k["account"], "tag_prefix": prefix, "trade_key": parsed["trade_key"],
                         "exchange_order_id": k["exchange_order_id"]})
    base = base.merge(tags, on=["account", "tag_prefix"], how="left")

    sk = _slice_keys(slices).rename(columns={"profile_id": "tag_profile", "trade_id": "coid_trade_id"})
    base = base.merge(sk, on=["tag_profile", "trade_key"], how="left")

    db = db_orders.loc[db_orders["exchange_order_id"].notna(),
                       ["account", "exchange_order_id", "order_id", "profile_id", "trade_id", "role"]]
    db = db.sort_values("order_id", kind="stable").drop_duplicates(["account", "exchange_order_id"])
    db = db.rename(columns={"order_id": "db_order_id", "profile_id": "db_profile_id",
                            "trade_id": "db_trade_id", "role": "db_role"})
    base = base.merge(db, on=["account", "exchange_order_id"], how="left")
    slice_owner = (slices[["trade_id", "profile_id"]].dropna().drop_duplicates("trade_id")
                   .rename(columns={"trade_id": "db_trade_id", "profile_id": "hint_profile"}))
    base = base.merge(slice_owner, on="db_trade_id", how="left")
    assert len(base) == n

    def s(col: str) -> pd.Series:
        return base[col].astype("str")

    det = parsed["is_deterministic"].to_numpy(bool)
    has_tag = base["tag_profile"].notna().to_numpy(bool)
    has_db_trade = base["db_trade_id"].notna().to_numpy(bool)
    is_coid = det & has_tag & base["coid_trade_id"].notna().to_numpy(bool)
    unknown_det = det & has_tag & ~is_coid
    rest = ~is_coid & ~unknown_det
    is_hint = rest & has_db_trade & base["hint_profile"].notna().to_numpy(bool)
    unknown_hint = rest & has_db_trade & ~is_hint
    unknown = unknown_det | unknown_hint
    is_tag = has_tag & ~is_coid & ~is_hint

    strength = np.full(n, "none", dtype=object)
    strength[is_tag] = "sub_tag"
    strength[is_hint] = "trade_id_hint"
    strength[is_coid] = "client_order_id"
    profile = s("tag_profile").where(is_coid | is_tag, s("hint_profile").where(
        is_hint, s("db_profile_id").where(unknown_hint)))
    trade = s("coid_trade_id").where(is_coid, s("db_trade_id").where(is_hint))
    named = parsed["trade_key"].where(unknown_det, s("db_trade_id").where(unknown_hint))
    db_role = s("db_role").map(_ROLE_FROM_DB).astype("str")
    parsed_role = parsed["role"]
    role = parsed_role.where(det & has_tag, db_role.where(db_role.notna(), parsed_role))
    role = db_role.where(is_hint, role)

    out = pd.DataFrame({
        "tag_prefix": prefix.array,
        "sub_tag": parsed["sub_tag"].array,
        "trade_key": parsed["trade_key"].array,
        "resend": parsed["resend"].array,
        "is_deterministic": det,
        "profile_id": profile.array,
        "trade_id": trade.array,
        "role": role.array,
        "strength": pd.array(strength, dtype="str"),
        "unknown_trade": unknown,
        "named_trade": named.array,
        "db_order_id": s("db_order_id").array,
        "hint_conflict": is_coid & has_db_trade & (base["db_trade_id"] != base["coid_trade_id"]).fillna(False)
        .to_numpy(bool),
    })
    for col in ("tag_prefix", "sub_tag", "trade_key", "profile_id", "trade_id", "role", "strength",
                "named_trade", "db_order_id"):
        if out[col].dtype != "str":
            out[col] = out[col].astype("str")
    out["resend"] = out["resend"].astype("Int64")
    return out


def attribute_orders(exchange_orders: pd.DataFrame, profiles: pd.DataFrame, db_orders: pd.DataFrame,
                     slices: pd.DataFrame) -> pd.DataFrame:
    """``exchange_orders`` (EXCHANGE_ORDERS) plus :data:`ATTRIBUTION_COLUMNS`, one row per order."""
    eo = exchange_orders.reset_index(drop=True)
    attr = _attribute_keys(eo, profiles, db_orders, slices)
    return pd.concat([eo.drop(columns=[c for c in ATTRIBUTION_COLUMNS if c in eo.columns]), attr], axis=1)


def _order_codes(f: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Codes of the distinct ``(account, exchange_order_id)`` keys of ``f`` (NA is a key like any
    other, as in a merge) and those keys, one row per code, in order of first appearance."""
    acc_codes, acc_uniq = pd.factorize(f["account"], use_na_sentinel=False)
    eo_codes, eo_uniq = pd.factorize(f["exchange_order_id"], use_na_sentinel=False)
    width = max(len(eo_uniq), 1)
    codes, pairs = pd.factorize(acc_codes.astype("int64") * width + eo_codes)
    keys = pd.DataFrame({
        "account": pd.Series(acc_uniq.take(pairs // width), dtype=f["account"].dtype),
        "exchange_order_id": pd.Series(eo_uniq.take(pairs % width), dtype=f["exchange_order_id"].dtype),
    })
    return codes, keys


def attribute_fills(fills: pd.DataFrame, exchange_orders: pd.DataFrame, profiles: pd.DataFrame,
                    db_orders: pd.DataFrame, slices: pd.DataFrame) -> pd.DataFrame:
    """One row per fill (EXCHANGE_FILLS columns) plus its order's ``client_order_id``, ``order_qty``
    (the order's total qty, NaN when the order is unknown), ``order_side``, ``order_status`` and
    :data:`ATTRIBUTION_COLUMNS`. A fill whose order is missing from ``exchange_orders`` can still be
    attributed by the DB hint.

    Every column added depends only on the fill's ``(account, exchange_order_id)``: the distinct
    keys are attributed once and the result is gathered back onto the fills by position."""
    eo = (exchange_orders[["account", "exchange_order_id", "client_order_id", "qty", "side", "status"]]
          .rename(columns={"qty": "order_qty", "side": "order_side", "status": "order_status"})
          .drop_duplicates(["account", "exchange_order_id"], keep="last"))
    f = fills.reset_index(drop=True)
    codes, keys = _order_codes(f)
    per_order = keys.merge(eo, on=["account", "exchange_order_id"], how="left")
    assert len(per_order) == len(keys)
    attr = _attribute_keys(per_order, profiles, db_orders, slices)
    added = pd.concat([per_order.drop(columns=["account", "exchange_order_id"]), attr], axis=1)
    added = added.take(codes).reset_index(drop=True)
    return pd.concat([f, added], axis=1)
