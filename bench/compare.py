"""Finding and correction keys, so implementations can be compared as sets."""

from __future__ import annotations

import json
import math

import pandas as pd


def _r(x) -> str | None:
    if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)):
        return None
    return f"{float(x):.6g}"


def _s(x):
    return None if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)) else str(x)


def finding_keys(findings: pd.DataFrame) -> set:
    """(kind, reason, symbol, trade_id, order_id, exchange_order_id) of every finding."""
    cols = ["kind", "reason", "symbol", "trade_id", "order_id", "exchange_order_id"]
    return {tuple(_s(v) for v in row) for row in findings[cols].astype(object).itertuples(index=False, name=None)}


def correction_keys(corrections: pd.DataFrame) -> set:
    """(action, target_id, new status, new qty, new price) of every correction (6 significant digits)."""
    out = set()
    for action, target, new in corrections[["action", "target_id", "new_state"]].itertuples(index=False, name=None):
        n = json.loads(new)
        qty = n.get("exit_qty", n.get("filled_qty"))
        price = n.get("exit_price", n.get("avg_fill_price"))
        out.add((action, target, n.get("status"), _r(qty), _r(price)))
    return out


def diff(name_a: str, a: set, name_b: str, b: set, limit: int = 15) -> str:
    """Empty when equal, else a readable diff of the two key sets."""
    if a == b:
        return ""
    lines = []
    for label, only in ((f"only in {name_a}", sorted(a - b, key=str)), (f"only in {name_b}", sorted(b - a, key=str))):
        if only:
            lines.append(f"  {label}: {len(only)}")
            lines.extend(f"    {k}" for k in only[:limit])
    return "\n".join(lines)
