"""The deterministic client order id: ``{sub_tag}-{role}-{trade_key}[-{n}]``.

The trading system stamps every order it sends with such an id, so the pipeline can recover from an
exchange order alone which profile sent it (``sub_tag``), whether it opened or closed a slice
(``role``: ``e`` entry, ``x`` exit) and which slice (``trade_key``). Binance accepts at most 36
characters of ``[A-Za-z0-9_-]`` (and ``.:/`` which we never use).

The exact rule (a contract with the trading system; change it only together with it):

* ``sub_tag``: 2..8 characters of ``[a-z0-9]``.
* ``role``: ``e`` or ``x``.
* ``resend`` (optional): ``-{n}`` with ``n`` an integer 1..999 written without leading zeros; the
  first send has no suffix. Longest suffix: 4 characters (``-999``).
* ``trade_key(trade_id)``:
    - the trade id itself when it is 1..20 characters of ``[A-Za-z0-9_]`` (:data:`RAW_KEY_MAX`);
    - otherwise a digest of exactly 21 characters (:data:`DIGEST_LEN`): sha256 of the UTF-8 bytes of
      the trade id, read as a big-endian integer, written in base62 (alphabet ``0-9A-Za-z``) least
      significant digit first, the first 21 digits kept (~125 bits).
  A raw key is at most 20 characters and a digest exactly 21, so the two can never be confused, and
  neither ever contains ``-``: the re-send suffix stays unambiguous.
* Worst case: 8 (sub_tag) + 3 (``-x-``) + 21 (digest) + 4 (``-999``) = 36 characters.

A parsed id is *deterministic* when it has exactly this shape. Whether it names a real trade is a
question for :mod:`recon_pipeline.rules.attribution` (the key must match a slice of the profile).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon_pipeline.rules.keys import arrow as _arrow

MAX_LEN = 36
SUB_TAG_PATTERN = r"[a-z0-9]{2,8}"
RAW_KEY_MAX = 20
DIGEST_LEN = 21
MAX_RESEND = 999
ROLES = ("e", "x")

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUB_TAG_RE = re.compile(rf"^{SUB_TAG_PATTERN}$")
_RAW_KEY_RE = re.compile(rf"^[A-Za-z0-9_]{{1,{RAW_KEY_MAX}}}$")

#: The one regex of the format, with named groups (used by :func:`parse` and :func:`parse_series`).
CLIENT_ID_PATTERN = (
    rf"^(?P<sub_tag>{SUB_TAG_PATTERN})-(?P<role>[ex])-(?P<trade_key>[A-Za-z0-9_]{{1,{DIGEST_LEN}}})"
    r"(?:-(?P<resend>[1-9][0-9]{0,2}))?$"
)
_CLIENT_ID_RE = re.compile(CLIENT_ID_PATTERN)
#: The tag part of any client id: what comes before its first ``-`` (the ``sub_tag`` attribution test).
TAG_PREFIX_PATTERN = r"^(?P<tag_prefix>[^-]+)-"


@dataclass(frozen=True)
class ParsedClientId:
    sub_tag: str
    role: str
    trade_key: str
    resend: int | None


def is_valid_sub_tag(sub_tag: object) -> bool:
    return isinstance(sub_tag, str) and bool(_SUB_TAG_RE.match(sub_tag))


def _digest(trade_id: str) -> str:
    n = int.from_bytes(hashlib.sha256(trade_id.encode("utf-8")).digest(), "big")
    out = []
    for _ in range(DIGEST_LEN):
        n, r = divmod(n, 62)
        out.append(_BASE62[r])
    return "".join(out)


def trade_key(trade_id: str) -> str:
    """The stable key of ``trade_id`` inside a client id (see the module docstring for the rule)."""
    if not isinstance(trade_id, str) or trade_id == "":
        raise ValueError(f"trade_id must be a non-empty string, got {trade_id!r}")
    return trade_id if _RAW_KEY_RE.match(trade_id) else _digest(trade_id)


def is_raw_key_series(trade_ids: pd.Series) -> np.ndarray:
    """Per id: is it its own trade key (1..20 characters of ``[A-Za-z0-9_]``)? NA is not."""
    if trade_ids.dtype != "str":
        return np.array([isinstance(t, str) and bool(_RAW_KEY_RE.match(t)) for t in trade_ids.tolist()], bool)
    arr = _arrow(trade_ids)
    raw = _np_bool(pc.match_substring_regex(arr, _RAW_KEY_RE.pattern))
    # Python's ``$`` also matches before a final newline (RE2's does not): decide those ids in Python
    nl = _np_bool(pc.match_substring(arr, "\n"))
    if nl.any():
        raw[nl] = [bool(_RAW_KEY_RE.match(t)) for t in trade_ids[nl].tolist()]
    return raw


def trade_key_series(trade_ids: pd.Series) -> pd.Series:
    """:func:`trade_key` of each id (NA stays NA). Only ids that are not raw keys are hashed (per
    value, by nature); raw keys are recognised vectorised."""
    if trade_ids.dtype != "str":  # not the schema's dtype: the plain per-value path
        keys = [trade_key(t) if isinstance(t, str) and t else None for t in trade_ids.tolist()]
        return pd.Series(keys, index=trade_ids.index, dtype="str")
    s = trade_ids
    raw = is_raw_key_series(s)
    valid = s.notna().to_numpy(bool) & (s != "").to_numpy(bool)
    out = s.where(valid).rename(None)
    todo = valid & ~raw
    if todo.any():
        out[todo] = [_digest(t) for t in s[todo].tolist()]
    return out


def encode(sub_tag: str, role: str, trade_id: str, resend: int | None = None) -> str:
    """The deterministic client id of ``trade_id``'s ``role`` order; ``resend`` n>=1 for a re-send."""
    if not is_valid_sub_tag(sub_tag):
        raise ValueError(f"sub_tag must be 2..8 chars of [a-z0-9], got {sub_tag!r}")
    if role not in ROLES:
        raise ValueError(f"role must be 'e' or 'x', got {role!r}")
    out = f"{sub_tag}-{role}-{trade_key(trade_id)}"
    if resend is not None:
        if isinstance(resend, bool) or not isinstance(resend, int) or not 1 <= resend <= MAX_RESEND:
            raise ValueError(f"resend must be an integer 1..{MAX_RESEND} or None, got {resend!r}")
        out += f"-{resend}"
    assert len(out) <= MAX_LEN, out  # guaranteed by the length rule
    return out


def parse(client_id: object) -> ParsedClientId | None:
    """The parts of a deterministic client id, or None when ``client_id`` is not one."""
    if not isinstance(client_id, str) or len(client_id) > MAX_LEN:
        return None
    m = _CLIENT_ID_RE.match(client_id)
    if m is None:
        return None
    resend = m.group("resend")
    return ParsedClientId(m.group("sub_tag"), m.group("role"), m.group("trade_key"),
                          int(resend) if resend is not None else None)


def _as_str(s: pd.Series) -> pd.Series:
    return s if s.dtype == "str" else s.astype("str")


def _np_bool(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow result as numpy, null -> False."""
    return np.asarray(pc.fill_null(a, False).to_numpy(zero_copy_only=False), dtype=bool).copy()


def _str_series(a: pa.Array | pa.ChunkedArray, index: pd.Index) -> pd.Series:
    return pd.Series(a, dtype="str", index=index)


def _extract(s: pd.Series, pattern: str, names: tuple[str, ...]) -> dict[str, pd.Series]:
    """``s.str.extract(pattern)`` (anchored with ``^``; named groups ``names``) through Arrow's RE2.

    RE2 and Python agree on these patterns except for ``$`` before a final newline (Python matches
    there, RE2 only at the very end): values containing a newline are extracted with Python's ``re``.
    """
    arr = _arrow(s)
    res = pc.extract_regex(arr, pattern)
    out = {name: _str_series(pc.struct_field(res, [i]), s.index) for i, name in enumerate(names)}
    nl = _np_bool(pc.match_substring(arr, "\n"))
    if nl.any():
        rx = re.compile(pattern)
        ms = [rx.search(v) for v in s[nl].tolist()]
        for name in names:
            out[name][nl] = [m.group(name) if m is not None else None for m in ms]
    return out


_PARSE_GROUPS = ("sub_tag", "role", "trade_key", "resend")


def parse_series(client_ids: pd.Series) -> pd.DataFrame:
    """Vectorised :func:`parse`: columns sub_tag, role, trade_key (str, NA when not deterministic),
    resend (Int64, NA when absent) and is_deterministic (bool); same index as ``client_ids``."""
    s = _as_str(client_ids)
    parts = _extract(s, CLIENT_ID_PATTERN, _PARSE_GROUPS)
    matched = parts["sub_tag"].notna().to_numpy(bool)
    too_long = _np_bool(pc.greater(pc.utf8_length(_arrow(s)), MAX_LEN))
    ok = matched & ~too_long
    if (matched & too_long).any():  # the pattern cannot bound the length: drop the overlong matches
        parts = {name: col.where(ok) for name, col in parts.items()}
    out = pd.DataFrame(index=s.index)
    for col in ("sub_tag", "role", "trade_key"):
        out[col] = parts[col]
    # the group holds 1..999 or is empty (absent): Arrow's cast parses it without a Python round trip
    resend = _arrow(parts["resend"])
    resend = pc.if_else(pc.greater(pc.utf8_length(resend), 0), resend, pa.scalar(None, resend.type))
    out["resend"] = pd.Series(pd.Int64Dtype().__from_arrow__(pc.cast(resend, pa.int64())), index=s.index)
    out["is_deterministic"] = ok
    return out


def tag_prefix_series(client_ids: pd.Series) -> pd.Series:
    """What precedes the first ``-`` of each client id (NA when there is none).

    ``tag_prefix == sub_tag`` is the ``sub_tag`` attribution test: the id starts with the sub_tag
    *followed by* ``-``, so ``g12-...`` never matches ``g1`` (a bare ``startswith`` would).
    """
    return _extract(_as_str(client_ids), TAG_PREFIX_PATTERN, ("tag_prefix",))["tag_prefix"].rename("tag_prefix")
