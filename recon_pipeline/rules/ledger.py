"""Capital ledger: reserved capital and DB positions recomputed on the batch's end state (DESIGN 4.6).

Pure pandas: no I/O, no dagster. :func:`evaluate_ledger` takes the profile's slices and orders *as
the batch will leave them* and compares:

* ``capital_ledger.reserved_usd`` with: sum over OPEN slices of remaining qty x entry price, plus sum
  over open ENTRY orders (NEW | OPEN | PARTIALLY_FILLED) of (qty - filled_qty) x price. Exit orders
  are ignored (they sell what a slice already reserves).
* each ``positions`` row of (profile, symbol) with the signed remaining qty (long +, short -) of its
  OPEN slices.

Both are *derived* corrections (DESIGN 5): the applier recomputes them inside the transaction after
the other corrections, so ``expected_state`` is ``{}`` and ``new_state`` carries the value computed
here, for display.

Decisions where DESIGN is silent (also in the lead's docs):

* **Tolerances**: reserved capital differs when ``|computed - recorded| > 0.01`` USD (one cent; a
  numeric column rounded to cents must not flap). Positions differ when
  ``|computed - recorded| > 1e-9 + 1e-9 x |computed|`` (far below any exchange's amount step, above
  float noise of a sum of slices).
* A remaining qty below zero (exit_qty > entry_qty, which the EXIT backfill never writes) counts as 0;
  an order with filled_qty > qty reserves 0. An open ENTRY order without a limit price (a market
  order) is priced at its avg_fill_price, else reserves 0 and is counted in ``unpriced_entry_orders``.
* A missing ledger row is created when the computed reservation is not zero; a missing positions
  row likewise; a positions row of a symbol with no OPEN slice is set to 0 if it is not already 0;
  zero rows are never created.
* ``avg_entry_price`` in a POSITION_UPDATE's new state: remaining-qty-weighted entry price of the
  OPEN slices (null when the position is zero), for display.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recon_pipeline.rules.corrections import corrections_frame, findings_frame
from recon_pipeline.rules.parity import safe_merge, utc
from recon_pipeline.schemas import CORRECTIONS, FINDINGS, empty

RESERVATION_TOLERANCE_USD = 0.01
POSITION_ATOL = 1e-9
POSITION_RTOL = 1e-9
OPEN_ORDER_STATUSES = ("NEW", "OPEN", "PARTIALLY_FILLED")


@dataclass(frozen=True)
class LedgerResult:
    """``findings`` (RESERVATION_MISMATCH / POSITION_MISMATCH), ``corrections``
    (RESERVATION_UPDATE / POSITION_UPDATE), ``summary``."""

    findings: pd.DataFrame
    corrections: pd.DataFrame
    summary: dict[str, Any]


def evaluate_ledger(
    slices_after: pd.DataFrame,
    db_orders_after: pd.DataFrame,
    ledger: pd.DataFrame,
    db_positions: pd.DataFrame,
    *,
    profile_id: str,
    window_start: Any,
) -> LedgerResult:
    """Reserved capital and positions rows of ``profile_id`` vs its slices and orders after the batch.

    ``slices_after``: TRADE_HISTORY, ``db_orders_after``: DB_ORDERS (both as the batch leaves them),
    ``ledger``: CAPITAL_LEDGER, ``db_positions``: DB_POSITIONS (rows of other profiles are ignored).

    Summary keys: reserved_usd (computed), reserved_slices_usd, reserved_orders_usd,
    recorded_reserved_usd (NaN when no row), reservation_mismatch, position_mismatches,
    unpriced_entry_orders.
    """
    window_start = utc(window_start)
    sl = slices_after.loc[(slices_after["profile_id"] == profile_id) & (slices_after["status"] == "OPEN")]
    remaining = (sl["entry_qty"] - sl["exit_qty"].fillna(0.0)).clip(lower=0.0)
    reserved_slices = float((remaining * sl["entry_price"]).fillna(0.0).sum())

    od = db_orders_after.loc[(db_orders_after["profile_id"] == profile_id)
                             & (db_orders_after["role"] == "ENTRY")
                             & db_orders_after["status"].isin(OPEN_ORDER_STATUSES)]
    open_qty = (od["qty"] - od["filled_qty"].fillna(0.0)).clip(lower=0.0)
    price = od["price"].fillna(od["avg_fill_price"])
    unpriced = int((price.isna() & (open_qty > 0)).sum())
    reserved_orders = float((open_qty * price).fillna(0.0).sum())
    reserved = reserved_slices + reserved_orders

    lg = ledger.loc[ledger["profile_id"] == profile_id]
    recorded = float(lg["reserved_usd"].iloc[-1]) if len(lg) else np.nan
    has_row = bool(len(lg)) and not np.isnan(recorded)
    reservation_mismatch = (abs(reserved - recorded) > RESERVATION_TOLERANCE_USD if has_row
                            else abs(reserved) > RESERVATION_TOLERANCE_USD)

    findings: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    if reservation_mismatch:
        rec_txt = f"{recorded:.2f}" if has_row else "no row"
        findings.append({
            "kind": "RESERVATION_MISMATCH", "notional_usd": abs(reserved - (recorded if has_row else 0.0)),
            "reason": "reserved_usd",
            "detail": (f"capital_ledger.reserved_usd is {rec_txt}; the state the batch leaves reserves "
                       f"{reserved:.2f} USD ({reserved_slices:.2f} in OPEN slices + {reserved_orders:.2f} "
                       "in open ENTRY orders)"),
        })
        rows.append({
            "action": "RESERVATION_UPDATE", "target_table": "capital_ledger", "target_id": profile_id,
            "expected_state": {},
            "new_state": {"reserved_usd": reserved, "derived": True, "create": not has_row},
            "evidence": {"recorded_reserved_usd": recorded if has_row else None,
                         "reserved_slices_usd": reserved_slices, "reserved_orders_usd": reserved_orders,
                         "open_slices": int(len(sl)), "open_entry_orders": int(len(od))},
            "notional_usd": abs(reserved - (recorded if has_row else 0.0)),
        })

    # --- positions: per symbol, signed remaining qty of OPEN slices -------------------------------
    signed = np.where(sl["side"] == "long", 1.0, -1.0) * remaining
    comp = pd.DataFrame({"symbol": sl["symbol"], "qty": signed, "w": remaining,
                         "wp": remaining * sl["entry_price"]})
    comp = comp.groupby("symbol", as_index=False).agg(qty=("qty", "sum"), w=("w", "sum"), wp=("wp", "sum"))
    dbp = db_positions.loc[db_positions["profile_id"] == profile_id, ["symbol", "qty"]]
    dbp = dbp.drop_duplicates("symbol", keep="last").rename(columns={"qty": "db_qty"})
    cmp_ = safe_merge(comp, dbp, on="symbol", how="outer", indicator=True)
    cmp_["qty"] = cmp_["qty"].fillna(0.0)
    has_pos_row = (cmp_["_merge"] != "left_only") & cmp_["db_qty"].notna()
    cur = cmp_["db_qty"].fillna(0.0)
    tol = POSITION_ATOL + POSITION_RTOL * cmp_["qty"].abs()
    differs = (cmp_["qty"] - cur).abs() > tol
    # no row and nothing to hold: nothing to create
    cmp_["mismatch"] = differs & (has_pos_row | (cmp_["qty"].abs() > tol))
    cmp_["avg_entry_price"] = np.where((cmp_["w"] > 0) & (cmp_["qty"].abs() > tol),
                                       cmp_["wp"] / cmp_["w"].where(cmp_["w"] > 0), np.nan)
    bad = cmp_.loc[cmp_["mismatch"]].sort_values("symbol")
    for rec, has in zip(bad.to_dict("records"), has_pos_row.loc[bad.index].tolist(), strict=True):
        db_txt = f"{rec['db_qty']:g}" if has else "no row"
        findings.append({
            "kind": "POSITION_MISMATCH", "symbol": rec["symbol"],
            "qty_db": rec["db_qty"] if has else np.nan, "qty_exchange": rec["qty"],
            "reason": "positions.qty",
            "detail": (f"positions.qty of {rec['symbol']} is {db_txt}; the OPEN slices the batch leaves "
                       f"net {rec['qty']:g} (qty_exchange holds that slice-derived value)"),
        })
        rows.append({
            "action": "POSITION_UPDATE", "target_table": "positions",
            "target_id": f"{profile_id}|{rec['symbol']}", "expected_state": {},
            "new_state": {"qty": rec["qty"], "avg_entry_price": rec["avg_entry_price"], "derived": True,
                          "create": not has},
            "evidence": {"recorded_qty": rec["db_qty"] if has else None, "symbol": rec["symbol"]},
        })

    corrections = (corrections_frame(rows, window_start=window_start, profile_id=profile_id)
                   if rows else empty(CORRECTIONS))
    account = sl["account"].iloc[0] if len(sl) and "account" in sl.columns else None
    findings_df = (findings_frame(findings, window_start=window_start, profile_id=profile_id, account=account)
                   if findings else empty(FINDINGS))
    summary = {
        "reserved_usd": reserved,
        "reserved_slices_usd": reserved_slices,
        "reserved_orders_usd": reserved_orders,
        "recorded_reserved_usd": recorded,
        "reservation_mismatch": bool(reservation_mismatch),
        "position_mismatches": int(len(bad)),
        "unpriced_entry_orders": unpriced,
    }
    return LedgerResult(findings_df, corrections, summary)
