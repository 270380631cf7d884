"""The markdown previews an analyst sees on each materialization: exact cells, whatever the dtypes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recon_pipeline import schemas
from recon_pipeline.assets.metadata import _cell, markdown_table


def _reference(df: pd.DataFrame, columns=None, limit: int = 10) -> str:
    """The preview as first written: row tuples of the selected head (slow, obviously right)."""
    if df is None or df.empty:
        return "_no rows_"
    cols = [c for c in (columns or list(df.columns)) if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.head(limit)[cols].itertuples(index=False, name=None):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    if len(df) > limit:
        lines.append(f"\n_{len(df) - limit:,} more rows_")
    return "\n".join(lines)


MIXED = pd.DataFrame({
    "id": pd.array(["a|1", None, "long " * 20], dtype="str"),
    "arrow": pd.array(["x", None, "z"], dtype=pd.ArrowDtype(__import__("pyarrow").string())),
    "qty": [1.5, np.nan, 1e-9],
    "count": pd.array([1, None, 3], dtype="Int64"),
    "n": np.array([1, 2, 3], dtype=np.int64),
    "flag": [True, False, True],
    "ts": pd.to_datetime(["2026-11-23T00:00:01Z", None, "2026-11-23T10:00:00Z"], utc=True),
    "obj": ["multi\nline", 7, None],
})

CASES = {
    "mixed dtypes, nulls of each kind": (MIXED, None, 10),
    "a column subset, in the caller's order, unknown names dropped": (MIXED, ["ts", "nope", "id"], 10),
    "more rows than the limit": (pd.concat([MIXED] * 5, ignore_index=True), None, 4),
    "no columns left": (MIXED, ["nope"], 10),
    "empty frame": (MIXED.iloc[:0], None, 10),
    "a schema's empty frame": (schemas.empty(schemas.EXCHANGE_FILLS), None, 10),
    "a non-default index": (MIXED.set_axis([10, 5, 7]), None, 2),
}


@pytest.mark.parametrize("df, columns, limit", CASES.values(), ids=CASES.keys())
def test_preview_equals_the_row_by_row_reference(df, columns, limit):
    assert markdown_table(df, columns, limit) == _reference(df, columns, limit)


def test_cells_escape_pipes_drop_newlines_and_shorten():
    table = markdown_table(MIXED, ["id", "obj"])
    assert "a\\|1" in table and "multi line" in table and "long long" in table and "..." in table
