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
from recon_pipeline.rules import keys as K

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
    codes = pd.Categorical(strength, categories=STRENGTH_ORDER).codes.astype("int64")
    codes[codes < 0] = len(STRENGTH_ORDER) - 1  # NA and unknown strengths
    return pd.Series(codes, index=strength.index, name=strength.name)


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
    return tags.drop_duplicates(["account", "sub_tag"], keep=False).reset_index(drop=True)


_DB_COLUMNS = ["account", "exchange_order_id", "order_id", "profile_id", "trade_id", "role"]


def _db_rows(db_orders: pd.DataFrame) -> pd.DataFrame:
    """The DB orders that carry an exchange order id (the only ones a hint can come from)."""
    return db_orders.loc[db_orders["exchange_order_id"].notna(), _DB_COLUMNS].reset_index(drop=True)


def _db_winners(db: pd.DataFrame, key: np.ndarray) -> np.ndarray:
    """``key`` (the code of each :func:`_db_rows` row's (account, exchange_order_id)) with every row
    but the hint of its key set to -2: the hint is the row with the smallest ``order_id``
    (stable; missing ids last), so :func:`keys.lookup` finds exactly the hint."""
    dup = pd.Series(key).duplicated(keep=False).to_numpy()
    if not dup.any():
        return key
    rows = db.loc[dup, ["order_id"]].assign(_key=key[dup]).sort_values("order_id", kind="stable")
    winners = rows.index[~rows["_key"].duplicated().to_numpy()].to_numpy()
    out = np.where(dup, -2, key)
    out[winners] = key[winners]
    return out


def _named_slices(slices: pd.DataFrame, keys: pd.Series, hints: pd.Series) -> pd.DataFrame:
    """The rows of ``slices`` that trade keys ``keys`` or DB hint ids ``hints`` can name: every row
    of an id equal to one of them (a raw key is the id itself), and, when a key has a digest's
    length, every row whose id is not a raw key (its key is a digest). Attribution on these rows
    equals attribution on all: a raw key never equals a digest, so no other row can match a key,
    own a hinted trade, or share a key with a matching slice."""
    names = pd.concat([keys.dropna(), hints.dropna()], ignore_index=True).astype("str")
    hit = isin_str(slices["trade_id"].astype("str"), names)
    if (keys.str.len() == coid.DIGEST_LEN).any():
        hit |= ~coid.is_raw_key_series(slices["trade_id"])
    return slices.loc[hit]


_STRENGTHS = pd.Series(["none", "sub_tag", "trade_id_hint", "client_order_id"], dtype="str")
_DB_ROLES = pd.Series(["e", "x"], dtype="str")


def _attribute_keys(cid: pd.Series, acct: np.ndarray, tags: pd.DataFrame, tag_acct: np.ndarray,
                    db: pd.DataFrame, db_pos: np.ndarray, slices: pd.DataFrame) -> pd.DataFrame:
    """Attribution columns for orders given by client id ``cid``, account code ``acct`` (numbered
    together with ``tag_acct``, the codes of ``tags["account"]``) and ``db_pos``, the position of the
    order's DB hint row in ``db`` (:func:`_db_rows`, -1 for none). One row per order, by position.

    Every join is a lookup on integer codes; each string column of the result is one gather from
    the frame it comes from (first-true-wins choices through :func:`keys.pick_str`)."""
    n = len(cid)
    cid = cid.reset_index(drop=True)
    parsed = coid.parse_series(cid)
    det = parsed["is_deterministic"].to_numpy(bool)
    everyone = np.ones(n, bool)
    rows = np.arange(n)
    # a deterministic id's tag prefix is its sub_tag: the regex runs only on the other ids
    other = np.flatnonzero(~det)
    prefix = K.pick_str(n, [(det, parsed["sub_tag"], rows),
                            (~det, coid.tag_prefix_series(cid.take(other)), np.cumsum(~det) - 1)])

    pre_k, pre_t = K.codes(prefix, tags["sub_tag"])
    width = int(max(pre_k.max(initial=-1), pre_t.max(initial=-1))) + 1
    tag_pos = K.lookup(acct * width + pre_k, tag_acct * width + pre_t)
    has_tag = tag_pos >= 0

    # every trade id string compared below, numbered once: the keys the client ids name, the slices'
    # trade ids and keys (a raw key is the id itself: only the digests are extra), the DB hints' ids
    db_trade = db["trade_id"].notna().to_numpy(bool)
    has_db_trade = K.at(db_trade, db_pos, False)
    used = np.sort(pd.unique(db_pos[has_db_trade]))   # the DB rows that hint a trade
    if 8 * n < len(slices):  # a few orders (the order rule's): only the slices they can name matter
        slices = _named_slices(slices, parsed["trade_key"], db["trade_id"].take(used))
    tid = slices["trade_id"]
    slice_key = coid.trade_key_series(tid)
    digest = np.flatnonzero(~(slice_key == tid).to_numpy(bool))
    key_c, tid_c, digest_c, db_c = K.codes(parsed["trade_key"], tid, slice_key.take(digest),
                                           db["trade_id"].take(used))
    slice_key_c = tid_c.copy()
    slice_key_c[digest] = digest_c
    width = int(max(key_c.max(initial=-1), tid_c.max(initial=-1), digest_c.max(initial=-1))) + 1
    # the owner of a trade id: its first slice row with both the id and a profile
    valid = np.flatnonzero((tid.notna() & slices["profile_id"].notna()).to_numpy(bool))
    owners = valid[~pd.Series(tid_c[valid]).duplicated().to_numpy()]

    # (tag profile, trade key) -> the profile's slice with that key (keys shared by two slices: none)
    prof_t, prof_s = K.codes(tags["profile_id"], slices["profile_id"].take(owners))
    right = prof_s * width + slice_key_c[owners]
    right[pd.Series(right).duplicated(keep=False).to_numpy()] = -2
    coid_pos = K.at(owners, K.lookup(np.where(has_tag, K.at(prof_t, tag_pos, -1) * width + key_c, -1), right), -1)

    # the DB hint: its trade's owner slice
    hint_pos = np.full(n, -1, np.int64)
    hint_c = np.full(n, -1, np.int64)
    if len(used):
        hint_c[has_db_trade] = db_c[np.searchsorted(used, db_pos[has_db_trade])]
        hint_pos[has_db_trade] = K.at(owners, K.lookup(hint_c[has_db_trade], tid_c[owners]), -1)

    is_coid = det & has_tag & (coid_pos >= 0)
    unknown_det = det & has_tag & ~is_coid
    rest = ~is_coid & ~unknown_det
    is_hint = rest & has_db_trade & (hint_pos >= 0)
    unknown_hint = rest & has_db_trade & ~is_hint
    is_tag = has_tag & ~is_coid & ~is_hint

    strength = np.zeros(n, np.int64)
    strength[is_tag] = 1
    strength[is_hint] = 2
    strength[is_coid] = 3
    role_code = np.select([(db["role"] == "ENTRY").to_numpy(bool), (db["role"] == "EXIT").to_numpy(bool)],
                          [0, 1], -1).astype(np.int64)
    db_role_pos = K.at(role_code, db_pos, -1)
    parsed_role = parsed["role"]

    conflict = is_coid & has_db_trade & (K.at(tid_c, coid_pos, -1) != hint_c)

    return pd.DataFrame({
        "tag_prefix": prefix.array,
        "sub_tag": parsed["sub_tag"].array,
        "trade_key": parsed["trade_key"].array,
        "resend": parsed["resend"].astype("Int64").array,
        "is_deterministic": det,
        "profile_id": K.pick_str(n, [(is_coid | is_tag, tags["profile_id"], tag_pos),
                                     (is_hint, slices["profile_id"], hint_pos),
                                     (unknown_hint, db["profile_id"], db_pos)]).array,
        "trade_id": K.pick_str(n, [(is_coid, tid, coid_pos),
                                   (is_hint, db["trade_id"], db_pos)]).array,
        "role": K.pick_str(n, [(is_hint, _DB_ROLES, db_role_pos), (det & has_tag, parsed_role, rows),
                               (db_role_pos >= 0, _DB_ROLES, db_role_pos), (everyone, parsed_role, rows)]).array,
        "strength": K.take_str(_STRENGTHS, strength).array,
        "unknown_trade": unknown_det | unknown_hint,
        "named_trade": K.pick_str(n, [(unknown_det, parsed["trade_key"], rows),
                                      (unknown_hint, db["trade_id"], db_pos)]).array,
        "db_order_id": K.take_str(db["order_id"], db_pos).array,
        "hint_conflict": conflict,
    })


def attribute_orders(exchange_orders: pd.DataFrame, profiles: pd.DataFrame, db_orders: pd.DataFrame,
                     slices: pd.DataFrame) -> pd.DataFrame:
    """``exchange_orders`` (EXCHANGE_ORDERS) plus :data:`ATTRIBUTION_COLUMNS`, one row per order."""
    eo = exchange_orders.reset_index(drop=True)
    tags, db = _profile_tags(profiles), _db_rows(db_orders)
    acct, tag_acct = K.codes(eo["account"], tags["account"])
    key_o, key_d = K.key_codes([eo["account"], eo["exchange_order_id"]],
                               [db["account"], db["exchange_order_id"]])
    db_pos = K.lookup(key_o, _db_winners(db, key_d))
    attr = _attribute_keys(eo["client_order_id"], acct, tags, tag_acct, db, db_pos, slices)
    return pd.concat([eo.drop(columns=[c for c in ATTRIBUTION_COLUMNS if c in eo.columns]), attr], axis=1)


_ORDER_COLUMNS = {"client_order_id": "client_order_id", "qty": "order_qty", "side": "order_side",
                  "status": "order_status"}


def attribute_fills(fills: pd.DataFrame, exchange_orders: pd.DataFrame, profiles: pd.DataFrame,
                    db_orders: pd.DataFrame, slices: pd.DataFrame) -> pd.DataFrame:
    """One row per fill (EXCHANGE_FILLS columns) plus its order's ``client_order_id``, ``order_qty``
    (the order's total qty, NaN when the order is unknown), ``order_side``, ``order_status`` and
    :data:`ATTRIBUTION_COLUMNS`. A fill whose order is missing from ``exchange_orders`` can still be
    attributed by the DB hint; when ``exchange_orders`` repeats an order, its last row counts.

    Every column added depends only on the fill's ``(account, exchange_order_id)``: the key strings
    are hashed once (fills, exchange orders and DB orders together), the distinct keys of the fills
    are attributed once, and the result is gathered back onto the fills by position."""
    f = fills.reset_index(drop=True)
    eo = exchange_orders.reset_index(drop=True)
    tags, db = _profile_tags(profiles), _db_rows(db_orders)
    acc_f, acc_e, acc_d, acc_t = K.codes(f["account"], eo["account"], db["account"], tags["account"])
    id_f, id_e, id_d = K.codes(f["exchange_order_id"], eo["exchange_order_id"], db["exchange_order_id"])
    width = int(max(id_f.max(initial=-1), id_e.max(initial=-1), id_d.max(initial=-1))) + 1
    order, keys = pd.factorize(acc_f * width + id_f)       # fill -> its distinct order key
    rep = np.zeros(len(keys), np.int64)
    rep[order] = np.arange(len(f))                         # any fill of the key: same account
    key_e = acc_e * width + id_e
    last = len(eo) - 1 - K.lookup(keys, key_e[::-1]) if len(eo) else np.full(len(keys), -1)
    eo_pos = np.where(last < len(eo), last, -1)            # -1 - (-1) + len - 1 = len: not found
    db_pos = K.lookup(keys, _db_winners(db, acc_d * width + id_d))

    cid = K.take_str(eo["client_order_id"], eo_pos)
    per_order = pd.DataFrame({
        "client_order_id": cid.array,
        "order_qty": K.at(eo["qty"].to_numpy("float64"), eo_pos, np.nan),
        "order_side": K.take_few(eo["side"], eo_pos).array,
        "order_status": K.take_few(eo["status"], eo_pos).array,
    })
    attr = _attribute_keys(cid, acc_f[rep], tags, acc_t, db, db_pos, slices)
    added = pd.concat([per_order, attr], axis=1).take(order).reset_index(drop=True)
    return pd.concat([f, added], axis=1)
