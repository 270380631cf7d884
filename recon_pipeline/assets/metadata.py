"""What an analyst sees in the Dagster UI: row counts, column schemas, markdown previews.

Kept apart from the assets so every asset describes its frames the same way.
"""

from __future__ import annotations

import math

import pandas as pd
from dagster import AssetKey, MetadataValue, TableColumn, TableSchema

_TYPE_NAMES = {"str": "string", "float64": "float", "int64": "int", "bool": "bool",
               "datetime64[ns, UTC]": "timestamp (UTC)"}


def column_schema(schema, descriptions: dict[str, str] | None = None) -> TableSchema:
    descriptions = descriptions or {}
    return TableSchema(columns=[
        TableColumn(name=col, type=_TYPE_NAMES.get(dtype, dtype), description=descriptions.get(col))
        for col, dtype in schema.items()
    ])


def _cell(value) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:,.8g}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def markdown_table(df: pd.DataFrame, columns: list[str] | None = None, limit: int = 10) -> str:
    """A GitHub-flavoured markdown table of the first ``limit`` rows (empty frames say so)."""
    if df is None or df.empty:
        return "_no rows_"
    cols = [c for c in (columns or list(df.columns)) if c in df.columns]
    # Column by column: a window shows ~20 previews, and taking rows as a frame (head, column
    # selection, itertuples) cost ten times as much as the cells themselves.
    head = df.iloc[:limit]
    values = [head[c].tolist() for c in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in (zip(*values, strict=True) if values else [()] * len(head)):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    if len(df) > limit:
        lines.append(f"\n_{len(df) - limit:,} more rows_")
    return "\n".join(lines)


def frame_metadata(df: pd.DataFrame, *, preview_columns: list[str] | None = None) -> dict:
    """What each materialization of a frame shows: its row count and a preview. The column schema is
    the asset's definition metadata (the UI's Columns tab): it never changes between runs, so it is not
    repeated in every event stored (about 2 KB each)."""
    return {
        "dagster/row_count": MetadataValue.int(len(df)),
        "preview": MetadataValue.md(markdown_table(df, preview_columns)),
    }


def asset_keys(*names: str) -> set[AssetKey]:
    """The keys of the named assets (a multi-asset's ``internal_asset_deps``: what the UI draws as lineage)."""
    return {AssetKey(name) for name in names}
