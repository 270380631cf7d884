"""Joins on string keys through integer codes, for the rules' large frames.

A pandas merge on ``str`` columns hashes the key strings of both frames again for every merge and
gathers every column of both sides into the result. The rules join a million fills to their orders,
and those orders to DB rows, profiles and slices; most gathered columns are never read. Here a key
column is hashed once, over all the frames of a join together (:func:`codes`), the joins are array
lookups on the resulting integers (:func:`lookup`), and strings are gathered only for the columns and
rows that need them (:func:`take_str`, :func:`pick_str`).

Missing values get a code of their own, so NA matches NA, as in a pandas merge.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_LIMIT = 2**62


def codes(*parts: pd.Series) -> list[np.ndarray]:
    """One numbering (int64, from 0) of the values of all ``parts``; the codes of each part."""
    lengths = [len(p) for p in parts]
    allc, _ = pd.factorize(pd.concat([p.reset_index(drop=True) for p in parts], ignore_index=True),
                           use_na_sentinel=False)
    return np.split(allc.astype(np.int64, copy=False), np.cumsum(lengths)[:-1])


def key_codes(*frames: list[pd.Series]) -> list[np.ndarray]:
    """Codes of multi-column keys: ``frames[i]`` is the list of key columns of frame ``i`` (the same
    number of columns in each); equal key tuples get equal codes, across all frames."""
    out: list[np.ndarray] | None = None
    for col in range(len(frames[0])):
        cs = codes(*(f[col] for f in frames))
        width = max((int(c.max()) + 1 for c in cs if len(c)), default=1)
        if out is None:
            out = cs
            continue
        top = max((int(c.max()) + 1 for c in out if len(c)), default=1)
        if top * width >= _LIMIT:  # renumber densely before combining (many wide columns)
            out = [c.astype(np.int64) for c in codes(*(pd.Series(c) for c in out))]
        out = [o * width + c for o, c in zip(out, cs, strict=True)]
    return out if out is not None else [np.zeros(len(f[0]) if f else 0, np.int64) for f in frames]


def lookup(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Position in ``right`` of each code of ``left`` (the first one when repeated), -1 when absent
    or when the left code is negative (no key)."""
    first = ~pd.Series(right).duplicated().to_numpy()
    pos = np.flatnonzero(first)
    idx = pd.Index(right[first]).get_indexer(left)
    out = np.where(idx >= 0, pos[np.maximum(idx, 0)] if len(pos) else -1, -1)
    out[left < 0] = -1
    return out.astype(np.int64, copy=False)


def at(values: np.ndarray, pos: np.ndarray, missing) -> np.ndarray:
    """``values[pos]``, ``missing`` where ``pos`` is -1 (also when ``values`` is empty)."""
    if len(values) == 0:
        return np.full(len(pos), missing, dtype=np.result_type(values.dtype, np.min_scalar_type(missing)))
    return np.where(pos >= 0, values[np.maximum(pos, 0)], missing)


def arrow(s: pd.Series) -> pa.Array | pa.ChunkedArray:
    """The Arrow array behind a ``str`` Series (zero copy for the pyarrow-backed default)."""
    a = s.array
    if isinstance(a, pd.arrays.ArrowStringArray):
        return a.__arrow_array__()
    return pa.array(a.to_numpy(object) if hasattr(a, "to_numpy") else a, type=pa.large_string(),
                    from_pandas=True)


def _flat(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    return a.cast(pa.large_string()) if a.type != pa.large_string() else a


def _indices(pos: np.ndarray) -> pa.Array:
    return pa.array(pos, type=pa.int64(), mask=pos < 0)


def take_str(values: pd.Series, pos: np.ndarray) -> pd.Series:
    """``values`` at positions ``pos`` as a ``str`` Series (NA where ``pos`` is -1): one Arrow take."""
    src = _flat(arrow(values.astype("str") if values.dtype != "str" else values))
    return pd.Series(pc.take(src, _indices(pos)), dtype="str")


def take_few(values: pd.Series, pos: np.ndarray) -> pd.Series:
    """:func:`take_str` for a column of few distinct values (a side, a status): the gather runs on
    integer codes and the strings are read from the small set of distinct values, so the cost does
    not depend on where ``pos`` points (a random gather of long string columns does)."""
    c, uniques = pd.factorize(values)
    return take_str(pd.Series(uniques, dtype="str"), at(c.astype(np.int64), pos, -1))


def pick_str(n: int, choices: list[tuple[np.ndarray, pd.Series, np.ndarray]]) -> pd.Series:
    """Per row, the value of the first choice ``(mask, values, pos)`` whose mask is true:
    ``values[pos]`` (NA where pos is -1); NA where no mask is. One Arrow take over all the sources
    (a first-true-wins ``where`` chain without intermediate string columns)."""
    idx = np.full(n, -1, np.int64)
    todo = np.ones(n, bool)
    sources, offset = [], 0
    for mask, values, pos in choices:
        take = todo & mask
        idx[take] = np.where(pos[take] >= 0, pos[take] + offset, -1)
        todo &= ~mask
        src = _flat(arrow(values.astype("str") if values.dtype != "str" else values))
        sources.append(src)
        offset += len(src)
    src = pa.concat_arrays(sources) if sources else pa.array([], pa.large_string())
    return pd.Series(pc.take(src, _indices(idx)), dtype="str")
