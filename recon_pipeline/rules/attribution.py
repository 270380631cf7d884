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


def _profile_tags(profiles: pd.DataFrame) -> pd.DataFrame:
    tags = profiles[["account", "sub_tag", "profile_id"]].dropna(subset=["account", "sub_tag"])
    return tags.drop_duplicates(["account", "sub_tag"], keep=False)


def _slice_keys(slices: pd.DataFrame) -> pd.DataFrame:
    sl = slices[["trade_id", "profile_id"]].dropna().drop_duplicates("trade_id")
    sl = sl.assign(trade_key=coid.trade_key_series(sl["trade_id"]))
    return sl.drop_duplicates(["profile_id", "trade_key"], keep=False)


def _attribute_keys(keys: pd.DataFrame, profiles: pd.DataFrame, db_orders: pd.DataFrame,
                    slices: pd.DataFrame) -> pd.DataFrame:
    """Attribution columns for rows of (account, exchange_order_id, client_order_id), by position."""
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

    strength = np.select([is_coid, is_hint, is_tag], ["client_order_id", "trade_id_hint", "sub_tag"], "none")
    profile = np.select(
        [is_coid | is_tag, is_hint, unknown_hint],
        [base["tag_profile"].to_numpy(object), base["hint_profile"].to_numpy(object),
         base["db_profile_id"].to_numpy(object)],
        None)
    trade = np.select([is_coid, is_hint],
                      [base["coid_trade_id"].to_numpy(object), base["db_trade_id"].to_numpy(object)], None)
    named = np.select([unknown_det, unknown_hint],
                      [parsed["trade_key"].to_numpy(object), base["db_trade_id"].to_numpy(object)], None)
    db_role = base["db_role"].map(_ROLE_FROM_DB)
    parsed_role = parsed["role"].to_numpy(object)
    role = np.where(det & has_tag, parsed_role, np.where(db_role.notna(), db_role.to_numpy(object), parsed_role))
    role = np.where(is_hint, db_role.to_numpy(object), role)

    out = pd.DataFrame({
        "tag_prefix": prefix.to_numpy(object),
        "sub_tag": parsed["sub_tag"].to_numpy(object),
        "trade_key": parsed["trade_key"].to_numpy(object),
        "resend": parsed["resend"].to_numpy(),
        "is_deterministic": det,
        "profile_id": profile,
        "trade_id": trade,
        "role": role,
        "strength": strength,
        "unknown_trade": unknown,
        "named_trade": named,
        "db_order_id": base["db_order_id"].to_numpy(object),
        "hint_conflict": is_coid & has_db_trade & (base["db_trade_id"] != base["coid_trade_id"]).fillna(False)
        .to_numpy(bool),
    })
    for col in ("tag_prefix", "sub_tag", "trade_key", "profile_id", "trade_id", "role", "strength",
                "named_trade", "db_order_id"):
        out[col] = pd.Series(out[col].to_numpy(object), dtype="object").where(out[col].notna()).astype("str")
    out["resend"] = out["resend"].astype("Int64")
    return out


def attribute_orders(exchange_orders: pd.DataFrame, profiles: pd.DataFrame, db_orders: pd.DataFrame,
                     slices: pd.DataFrame) -> pd.DataFrame:
    """``exchange_orders`` (EXCHANGE_ORDERS) plus :data:`ATTRIBUTION_COLUMNS`, one row per order."""
    eo = exchange_orders.reset_index(drop=True)
    attr = _attribute_keys(eo, profiles, db_orders, slices)
    return pd.concat([eo.drop(columns=[c for c in ATTRIBUTION_COLUMNS if c in eo.columns]), attr], axis=1)


def attribute_fills(fills: pd.DataFrame, exchange_orders: pd.DataFrame, profiles: pd.DataFrame,
                    db_orders: pd.DataFrame, slices: pd.DataFrame) -> pd.DataFrame:
    """One row per fill (EXCHANGE_FILLS columns) plus its order's ``client_order_id``, ``order_qty``
    (the order's total qty, NaN when the order is unknown), ``order_side``, ``order_status`` and
    :data:`ATTRIBUTION_COLUMNS`. A fill whose order is missing from ``exchange_orders`` can still be
    attributed by the DB hint."""
    eo = (exchange_orders[["account", "exchange_order_id", "client_order_id", "qty", "side", "status"]]
          .rename(columns={"qty": "order_qty", "side": "order_side", "status": "order_status"})
          .drop_duplicates(["account", "exchange_order_id"], keep="last"))
    f = fills.reset_index(drop=True).merge(eo, on=["account", "exchange_order_id"], how="left",
                                           validate="many_to_one")
    attr = _attribute_keys(f, profiles, db_orders, slices)
    return pd.concat([f, attr], axis=1)
