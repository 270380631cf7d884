"""A row rule's mask, taken as plain booleans: the fast path agrees with realign-and-fill on every shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recon_pipeline.validation.snapshots import _bool_mask

INDEX = pd.RangeIndex(4)

CASES = {
    "numpy booleans on the frame's index": pd.Series([True, False, True, False]),
    "the same index object": pd.Series([False, True, False, True], index=INDEX),
    "an equal index of another type": pd.Series([True, True, False, False], index=pd.Index([0, 1, 2, 3])),
    "nullable booleans with a null": pd.Series(pd.array([True, None, False, True], dtype="boolean")),
    "arrow booleans with a null": pd.Series(pd.array([None, True, False, None], dtype=pd.ArrowDtype(pa.bool_()))),
    "a mask of some rows only": pd.Series([True, True], index=[3, 1]),
    "rows in another order": pd.Series([True, False, False, False], index=[3, 2, 1, 0]),
    "an object column of booleans and None": pd.Series([True, None, False, True], dtype=object),
}


@pytest.mark.parametrize("mask", CASES.values(), ids=CASES.keys())
def test_bool_mask_equals_realign_and_fill(mask):
    want = mask.reindex(INDEX).fillna(False).to_numpy(dtype=bool)
    got = _bool_mask(mask, INDEX)
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, want)
