"""Order reconciliation (DESIGN 4.2): DB open orders vs the exchange's orders.

* A DB order of the running profile that is open in the DB (``NEW | OPEN | PARTIALLY_FILLED``) is
  looked up on the exchange by ``(account, exchange_order_id)``, and when that finds nothing (or the
  DB has no exchange id) by ``(account, client_order_id)``. When several exchange orders share the
  client id, an ``open`` one wins, then the most recently updated.
* Found and still ``open`` on the exchange: in sync, nothing to do (a partial fill on a live order
  is the trading system's to record).
* Found in a terminal state -> ``ORDER_MISSING_FROM_EXCHANGE`` finding and, by that state:
    - ``closed`` (filled): handler ``reconcileEntryFill`` / ``reconcileExitFill`` by the DB row's
      role -> an ``ENTRY_FILL`` / ``EXIT_FILL`` correction on the order row:
      ``{status: FILLED, filled_qty, avg_fill_price, exchange_order_id}``.
    - ``canceled`` / ``expired`` / ``rejected``: handler ``reconcileCancel`` -> ``CANCEL_ORDER``:
      ``{status: CANCELED, filled_qty, avg_fill_price, exchange_order_id}``. The order always ends
      CANCELED (DESIGN 4.2 says so, and the trading system's lifecycle handler has one cancel path);
      the exchange's own terminal status is kept in the evidence (``exchange_status``) and the
      finding's ``reason``. The partial filled qty and its average price are kept.
  Expected state of every order correction: ``{status, filled_qty}`` as the DB has them now.
  Order corrections never touch slices: the EXIT backfill writes a slice's exit from the fills.
* Not found on the exchange at all -> a ``NO_GO`` finding, reason ``ORDER_NOT_FOUND``, no correction.
* ``ORDER_MISSING_IN_DB``: an ``open`` exchange order on the account that no DB order (any profile,
  any status) knows by exchange id or client id. Reported only, never adopted or cancelled.
  Attributed like fills: if its client id ties it to the running profile (``client_order_id`` /
  ``sub_tag``) the finding carries that strength; if it ties it to another profile of the account it
  is left to that profile's run; otherwise it is account-level (attribution ``none``, reason
  ``ACCOUNT_LEVEL``) and every profile of the account reports it (``profile_id`` of a finding is
  always the running profile; aggregate across profiles by ``(account, exchange_order_id)``).
* Settle interval: a DB order created or updated within ``settings.order_settle_seconds`` of ``now``
  (exchange time), or whose exchange order was, is skipped: it may be in flight.

Order reconciliation compares *current* state (both sides as of the snapshot), so it runs the same
in live and historical windows; ``as_of`` and ``live`` are accepted for a uniform signature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recon_pipeline.rules.attribution import attribute_orders, isin_str
from recon_pipeline.rules.corrections import corrections_frame, findings_frame
from recon_pipeline.schemas import CORRECTIONS, FINDINGS, empty
from recon_pipeline.settings import ReconSettings

DB_OPEN_STATUSES = ("NEW", "OPEN", "PARTIALLY_FILLED")
CANCEL_STATUSES = ("canceled", "expired", "rejected")
HANDLERS = {"ENTRY": ("reconcileEntryFill", "ENTRY_FILL"), "EXIT": ("reconcileExitFill", "EXIT_FILL")}


@dataclass(frozen=True)
class OrderReconResult:
    findings: pd.DataFrame       # FINDINGS
    corrections: pd.DataFrame    # CORRECTIONS (ENTRY_FILL / EXIT_FILL / CANCEL_ORDER, target orders)
    matched: pd.DataFrame        # the running profile's open DB orders with their exchange match (debug/report)


def _settled(created: pd.Series, updated: pd.Series, cutoff: pd.Timestamp) -> pd.Series:
    """True where neither time is at or after ``cutoff`` (NaT counts as settled)."""
    recent = (created >= cutoff).fillna(False) | (updated >= cutoff).fillna(False)
    return ~recent.astype(bool)


def _candidates(ex: pd.DataFrame, col: str, wanted: pd.Series) -> pd.DataFrame:
    """The rows of ``ex`` whose ``col`` is one of ``wanted``: the only rows a merge on it can match, so
    sorting and de-duplicating them alone gives the same winners. None when no wanted id is there (a
    window without open DB orders no longer sorts every exchange order of the account for nothing)."""
    return ex.loc[isin_str(ex[col], wanted.dropna())]


def _match(db_open: pd.DataFrame, exchange_orders: pd.DataFrame) -> pd.DataFrame:
    exchange_orders_all = exchange_orders
    exchange_orders = _candidates(exchange_orders, "exchange_order_id", db_open["exchange_order_id"])
    ex = exchange_orders.rename(columns={c: f"ex_{c}" for c in exchange_orders.columns
                                         if c not in ("account",)})
    ex = ex.assign(_open_rank=(ex["ex_status"] != "open").astype(int))
    by_id = (ex.dropna(subset=["ex_exchange_order_id"])
             .sort_values(["_open_rank", "ex_updated_ts"], ascending=[True, False], kind="stable")
             .drop_duplicates(["account", "ex_exchange_order_id"]))
    m1 = db_open.merge(by_id, left_on=["account", "exchange_order_id"],
                       right_on=["account", "ex_exchange_order_id"], how="left")  # right side unique
    m1["matched_on"] = np.where(m1["ex_exchange_order_id"].notna(), "exchange_order_id", None)
    missing = m1["matched_on"].isna()
    if missing.any():
        cands = _candidates(exchange_orders_all, "client_order_id",
                            db_open.loc[missing.to_numpy(), "client_order_id"])
        ex = cands.rename(columns={c: f"ex_{c}" for c in cands.columns if c not in ("account",)})
        ex = ex.assign(_open_rank=(ex["ex_status"] != "open").astype(int))
        by_cid = (ex.dropna(subset=["ex_client_order_id"])
                  .sort_values(["_open_rank", "ex_updated_ts"], ascending=[True, False], kind="stable")
                  .drop_duplicates(["account", "ex_client_order_id"]))
        m2 = db_open.loc[missing.to_numpy()].merge(
            by_cid, left_on=["account", "client_order_id"], right_on=["account", "ex_client_order_id"],
            how="left")  # right side unique (drop_duplicates on the merge keys)
        m2["matched_on"] = np.where(m2["ex_exchange_order_id"].notna(), "client_order_id", None)
        m1 = pd.concat([m1.loc[~missing.to_numpy()], m2], ignore_index=True)
    return m1.drop(columns=["_open_rank"]).sort_values("order_id", kind="stable").reset_index(drop=True)


def reconcile_orders(db_orders: pd.DataFrame, exchange_orders: pd.DataFrame, profiles: pd.DataFrame,
                     slices: pd.DataFrame, *, settings: ReconSettings, profile_id: str,
                     window_start: pd.Timestamp, as_of: pd.Timestamp, now: pd.Timestamp,
                     live: bool) -> OrderReconResult:
    """Order reconciliation of ``profile_id`` against its account's exchange orders."""
    del as_of, live  # current state on both sides: see the module docstring
    account = profiles.loc[profiles["profile_id"] == profile_id, "account"]
    if account.empty:
        raise ValueError(f"profile {profile_id!r} is not in the profiles frame")
    account = account.iloc[0]
    cutoff = now - pd.Timedelta(seconds=settings.order_settle_seconds)
    ex = exchange_orders.loc[exchange_orders["account"] == account].reset_index(drop=True)
    db_acct = db_orders.loc[db_orders["account"] == account]

    # --- ORDER_MISSING_FROM_EXCHANGE ----------------------------------------------------------
    db_open = db_acct.loc[(db_acct["profile_id"] == profile_id) & db_acct["status"].isin(DB_OPEN_STATUSES)]
    db_open = db_open.loc[_settled(db_open["created_at"], db_open["updated_at"], cutoff)]
    m = _match(db_open.reset_index(drop=True), ex)
    m = m.loc[_settled(m["ex_created_ts"], m["ex_updated_ts"], cutoff)].reset_index(drop=True)

    not_found = m["matched_on"].isna()
    ex_status = m["ex_status"]
    filled = ~not_found & (ex_status == "closed").fillna(False)
    cancel = ~not_found & ex_status.isin(CANCEL_STATUSES).fillna(False)
    terminal = m.loc[filled | cancel].copy()
    terminal["kind_filled"] = (terminal["ex_status"] == "closed").to_numpy()

    findings_rows: list[dict] = []
    corr_rows: list[dict] = []
    for r in terminal.itertuples(index=False):
        if r.kind_filled:
            handler, action = HANDLERS.get(r.role, HANDLERS["ENTRY"] if r.side == "buy" else HANDLERS["EXIT"])
            new_status = "FILLED"
            what = "was filled"
        else:
            handler, action, new_status = "reconcileCancel", "CANCEL_ORDER", "CANCELED"
            what = f"ended {r.ex_status}"
        fq = float(r.ex_filled_qty) if pd.notna(r.ex_filled_qty) else 0.0
        px = float(r.ex_avg_fill_price) if pd.notna(r.ex_avg_fill_price) else None
        notional = fq * px if px is not None else 0.0
        new_state = {"status": new_status, "filled_qty": fq, "avg_fill_price": px,
                     "exchange_order_id": r.ex_exchange_order_id}
        evidence = {"handler": handler, "exchange_order_id": r.ex_exchange_order_id,
                    "client_order_id": r.ex_client_order_id, "exchange_status": r.ex_status,
                    "exchange_filled_qty": fq, "exchange_avg_fill_price": px,
                    "exchange_updated_ts": r.ex_updated_ts, "matched_on": r.matched_on}
        corr_rows.append({
            "action": action, "target_table": "orders", "target_id": r.order_id,
            "expected_state": {"status": r.status, "filled_qty": float(r.filled_qty)},
            "new_state": new_state, "evidence": evidence, "notional_usd": notional,
        })
        findings_rows.append({
            "kind": "ORDER_MISSING_FROM_EXCHANGE", "symbol": r.symbol, "trade_id": r.trade_id,
            "order_id": r.order_id, "exchange_order_id": r.ex_exchange_order_id,
            "client_order_id": r.client_order_id, "qty_db": float(r.filled_qty), "qty_exchange": fq,
            "notional_usd": notional, "reason": handler,
            "detail": (f"{r.role} order {r.order_id} is {r.status} in the DB but {what} on the exchange "
                       f"(filled {fq:g}); {handler} sets it {new_status}."),
        })
    for r in m.loc[not_found].itertuples(index=False):
        price = r.price if pd.notna(r.price) else r.avg_fill_price
        notional = float(r.qty) * float(price) if pd.notna(price) else float("nan")
        findings_rows.append({
            "kind": "NO_GO", "symbol": r.symbol, "trade_id": r.trade_id, "order_id": r.order_id,
            "exchange_order_id": r.exchange_order_id, "client_order_id": r.client_order_id,
            "qty_db": float(r.filled_qty), "qty_exchange": float("nan"), "notional_usd": notional,
            "reason": "ORDER_NOT_FOUND",
            "detail": (f"{r.role} order {r.order_id} is {r.status} in the DB but the exchange does not know "
                       f"it by id or client id; left for operator review."),
        })

    # --- ORDER_MISSING_IN_DB ---------------------------------------------------------------------
    ex_open = ex.loc[(ex["status"] == "open") & _settled(ex["created_ts"], ex["updated_ts"], cutoff)]
    known_ids = db_acct["exchange_order_id"].dropna()
    known_cids = db_acct["client_order_id"].dropna()
    unknown = ex_open.loc[~isin_str(ex_open["exchange_order_id"], known_ids)
                          & ~isin_str(ex_open["client_order_id"], known_cids)]
    if len(unknown):
        att = attribute_orders(unknown, profiles, db_orders, slices)
        mine = (att["profile_id"] == profile_id).fillna(False)
        account_level = att["profile_id"].isna()
        att = att.loc[mine | account_level].sort_values("exchange_order_id", kind="stable")
        for r in att.itertuples(index=False):
            ours = r.profile_id == profile_id
            remaining = float(r.qty) - (float(r.filled_qty) if pd.notna(r.filled_qty) else 0.0)
            px = r.price if pd.notna(r.price) else r.avg_fill_price
            notional = remaining * float(px) if pd.notna(px) else float("nan")
            owner = (f"carries this profile's sub_tag ({r.strength})" if ours
                     else "is tied to no profile of the account (account-level)")
            findings_rows.append({
                "kind": "ORDER_MISSING_IN_DB", "symbol": r.symbol, "trade_id": r.trade_id,
                "exchange_order_id": r.exchange_order_id, "client_order_id": r.client_order_id,
                "attribution": r.strength if ours else "none", "qty_db": 0.0, "qty_exchange": remaining,
                "notional_usd": notional, "reason": "OWN_PROFILE" if ours else "ACCOUNT_LEVEL",
                "detail": (f"open {r.side} order {r.exchange_order_id} ({r.client_order_id}) on the exchange "
                           f"is unknown to the DB and {owner}; reported only, never adopted or cancelled."),
            })

    consts = {"window_start": window_start, "profile_id": profile_id}
    findings = findings_frame(findings_rows, account=account, **consts) if findings_rows else empty(FINDINGS)
    corrections = corrections_frame(corr_rows, **consts) if corr_rows else empty(CORRECTIONS)
    return OrderReconResult(findings=findings, corrections=corrections, matched=m)
