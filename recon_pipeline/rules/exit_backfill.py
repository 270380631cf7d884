"""EXIT backfill (DESIGN 4.3): OPEN slices whose exit happened on the exchange.

For every fill of the profile's account up to ``as_of`` the two questions of DESIGN section 3 are
answered, per exchange order (all fills of one order go the same way):

1. *May it be used for this profile?* Attribution from :mod:`.attribution`. A fill tied to another
   profile is that profile's run's business and ignored here. An entry-role (``e``) order's fills are
   never exit evidence. A fill naming an unknown trade is NO_GO ``UNKNOWN_TRADE`` and never evidence.
   An untied fill (strength ``none``) is usable only with ``backfill_require_strong=False``.
2. *Which slice does it close?* ``client_order_id`` / ``trade_id_hint`` name it. A ``sub_tag`` fill
   closes the profile's slice when exactly one OPEN slice of the profile has the fill's symbol and
   the side it exits (sell exits ``long``, buy exits ``short``). Otherwise, only with
   ``backfill_allow_heuristic``: ``single_open_trade`` (exactly one OPEN slice on the account, symbol
   and side across all profiles) then ``qty_unique`` (exactly one candidate whose remaining qty equals
   the exit order's total qty once both are rounded to the amount precision; candidates are the profile's
   OPEN slices for a ``sub_tag`` fill, every profile's for an untied one). A unique candidate of
   another profile is left to that profile's run (no finding here).

Evidence of a slice = its assigned fills that pass the grace gate (a fill earlier than
``entry_time - backfill_grace_minutes`` is NO_GO ``STALE_FILL``, whatever its strength). With ``u``
the market's amount precision:

* OPEN, total > entry_qty + u: NO_GO ``OVER_FILL``, the slice untouched.
* OPEN, total > exit_qty + u/2: ``BACKFILL_EXIT`` (+ a ``MISSING_EXIT`` finding): exit_qty = total,
  exit_price = qty-weighted average, exit_time = last fill, exit_source ``backfill``, ``exit_fees`` a
  dict currency -> summed fee; status CLOSED when entry_qty - total <= u (within one unit,
  inclusive), else OPEN (partial exit).
* OPEN, |total - exit_qty| <= u/2: nothing (re-runs and overlapping windows change nothing).
* OPEN, exit_qty > total + u/2: NO_GO ``DB_AHEAD`` (live run only).
* CLOSED with evidence whose total differs from exit_qty by more than u/2, or any evidence at all on
  a ``parity_synthetic`` exit: NO_GO ``LATE_FILL`` (live run only; never reopened).
* QUARANTINED slices are never touched and not judged.

NO_GO rows for fills that could not be assigned:

* ``AMBIGUOUS``: several candidates of the profile remain (every run, while the fill is in the span).
  An explicit (``client_order_id``/``trade_id_hint``) exit fill whose symbol or side contradicts the
  named slice is ``AMBIGUOUS`` too.
* ``NO_ATTRIBUTION``: an untied fill that could exit an OPEN slice of the profile (same symbol, exit
  side, not before that slice's entry - grace) but may not be used or could not be assigned.
* ``UNKNOWN_SYMBOL``: a fill of the profile (or untied, in the window) on a symbol missing from the
  markets frame.
* ``UNATTRIBUTED`` (kind, not NO_GO): untied account activity not used and not tied to any candidate,
  reported once, by the run of the window it happened in (``[window_start, window_start +
  window_length)``); account-level, so every profile of the account reports it.
* A ``sub_tag`` fill with no OPEN candidate of the profile is not exit-looking and yields nothing.

``no_go_trade_ids`` (for parity's quarantine rule) holds the slices with OVER_FILL, AMBIGUOUS (every
candidate), STALE_FILL or UNKNOWN_TRADE exit evidence (the profile's OPEN slices on the symbol and
side an unknown-trade exit fill would close).

Correction evidence never includes ``now`` or ``as_of``: the same fills give the same id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon_pipeline.rules import keys as K
from recon_pipeline.rules import state_after
from recon_pipeline.rules.attribution import (
    STRENGTH_ORDER,
    attribute_fills,
    isin_str,
    lookup_str,
    strength_rank,
)
from recon_pipeline.rules.corrections import canonical_json_str_keys, corrections_frame, findings_frame
from recon_pipeline.schemas import CORRECTIONS, FINDINGS, empty
from recon_pipeline.settings import ReconSettings

QUARANTINE_REASONS = ("OVER_FILL", "AMBIGUOUS", "STALE_FILL", "UNKNOWN_TRADE")
EXPLICIT = ("client_order_id", "trade_id_hint")
_REL = 1e-9  # relative float slack on precision comparisons


@dataclass(frozen=True)
class ExitBackfillResult:
    findings: pd.DataFrame          # FINDINGS
    corrections: pd.DataFrame       # CORRECTIONS, action BACKFILL_EXIT only
    evidence: pd.DataFrame          # fills accepted as exit evidence: fill columns + trade_id, assigned_strength
    attributed: pd.DataFrame        # every account fill up to as_of with attribution columns
    no_go_evidence: pd.DataFrame    # trade_id, reason: slices with NO_GO exit evidence (QUARANTINE_REASONS)
    no_go_trade_ids: frozenset[str] = field(default_factory=frozenset)


def _exit_side(fill_side: pd.Series) -> pd.Series:
    """The slice side a fill of this side would exit: sell -> long, buy -> short (NA otherwise)."""
    side = fill_side.astype("str")
    code = np.select([(side == "sell").to_numpy(bool), (side == "buy").to_numpy(bool)], [0, 1], -1)
    return K.take_str(_EXIT_SIDES, code).set_axis(side.index)


_EXIT_SIDES = pd.Series(["long", "short"], dtype="str")


#: The columns of a :func:`_by_order` frame that the order findings read (fields and details).
_FINDING_READS = ("symbol", "side", "exchange_order_id", "client_order_id", "named_trade", "strength", "qty",
                  "notional", "candidates", "acct_n", "one")


class _OrderFills:
    """The fill ids of each order of a :func:`_by_order` frame, joined only for the rows asked for
    (the orders that become findings: a few % of them)."""

    def __init__(self, fill_ids: pd.Series, group: np.ndarray) -> None:
        self._fill_ids = fill_ids  # sorted by (exchange_order_id, fill_id)
        self._group = group        # the order's row label in the _by_order frame, per fill

    def joined(self, rows: pd.DataFrame) -> list[str]:
        """``",".join`` of the fill ids of each order of ``rows`` (labels of the _by_order frame)."""
        labels = rows.index.to_numpy()
        hit = np.isin(self._group, labels)
        lists: dict[int, list[str]] = {}
        for g, fid in zip(self._group[hit].tolist(), self._fill_ids.to_numpy()[hit].tolist(), strict=True):
            lists.setdefault(g, []).append(fid)
        return [",".join(lists[g]) for g in labels.tolist()]


def _by_order(f: pd.DataFrame) -> tuple[pd.DataFrame, _OrderFills]:
    """One row per exchange order of the fills in ``f`` (deterministic order), and its fill ids."""
    f = f.assign(notional=f["qty"] * f["price"])
    f = f.take(_sort_order(f, ["exchange_order_id", "fill_id"]))
    g = f.groupby("exchange_order_id", dropna=False, sort=True)
    out = g.agg(symbol=("symbol", "first"), side=("side", "first"), exit_for=("exit_for", "first"),
                qty=("qty", "sum"), notional=("notional", "sum"), order_qty=("order_qty", "first"),
                client_order_id=("client_order_id", "first"), strength=("strength", "first"),
                profile_id=("profile_id", "first"), named_trade=("named_trade", "first"),
                role=("role", "first"), first_ts=("ts", "min"), last_ts=("ts", "max"), u=("u", "first"))
    out["order_qty"] = out["order_qty"].fillna(out["qty"])
    # rows are sorted by fill_id within the order; group numbers follow the sorted keys (NA last)
    return out.reset_index(), _OrderFills(f["fill_id"], g.ngroup().to_numpy())


class _Pool:
    """OPEN slices of one scope (the profile's, or the account's), sorted by trade id once and
    grouped by (symbol, side) once: the candidate questions below ask it for every order."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame.take(_sort_order(frame, ["trade_id"])).reset_index(drop=True)
        self._groups: dict[bool, pd.DataFrame] = {}
        self._lists: dict[tuple, list[str]] | None = None

    def groups(self, by_qty: bool) -> pd.DataFrame:
        """Per (symbol, side[, units]): n, first trade id and owner, earliest entry."""
        if by_qty not in self._groups:
            p, keys = self.frame, ["symbol", "side"]
            if by_qty:
                p = p.assign(units=np.rint(p["remaining"] / p["u"]))
                keys = keys + ["units"]
            self._groups[by_qty] = p.groupby(keys, dropna=True).agg(
                n=("trade_id", "size"), trade=("trade_id", "first"), owner=("profile_id", "first"),
                min_entry=("entry_time", "min"))
        return self._groups[by_qty]

    def id_lists(self) -> dict[tuple, list[str]]:
        """The sorted trade ids of each (symbol, side) (groups with a missing key left out)."""
        if self._lists is None:
            p = self.frame.loc[(self.frame["symbol"].notna() & self.frame["side"].notna()).to_numpy(bool)]
            group = K.key_codes([p["symbol"], p["side"]])[0]
            rows = np.argsort(group, kind="stable")  # by group, trade id order kept within each
            starts = np.flatnonzero(np.r_[True, group[rows][1:] != group[rows][:-1]]) if len(rows) else rows
            ids = p["trade_id"].to_numpy(object)[rows].tolist()
            heads = rows[starts]
            keys = zip(p["symbol"].take(heads).tolist(), p["side"].take(heads).tolist(), strict=True)
            bounds = [*starts.tolist(), len(rows)]
            self._lists = {k: ids[b:e] for k, b, e in zip(keys, bounds[:-1], bounds[1:], strict=True)}
        return self._lists


def _candidates(orders: pd.DataFrame, pool: _Pool, prefix: str, by_qty: bool = False) -> pd.DataFrame:
    """Per order (aligned by position): ``{prefix}_n`` OPEN slices of ``pool`` on its symbol and exit
    side, ``{prefix}_trade`` / ``{prefix}_owner`` (meaningful when n == 1) and ``{prefix}_min_entry``.

    With ``by_qty`` only slices whose remaining qty equals the order qty once both are rounded to the
    amount precision count (qty_unique). Keyed many-to-one on (symbol, side[, qty units]): no
    order x slice cross product."""
    keys = ["symbol", "side"]
    o = orders[["symbol", "exit_for", "order_qty", "u"]].rename(columns={"exit_for": "side"})
    if by_qty:
        o = o.assign(units=np.rint(o["order_qty"] / o["u"]))
        keys = keys + ["units"]
    out = o[keys].merge(pool.groups(by_qty), left_on=keys, right_index=True, how="left")
    out = out.drop(columns=keys).reset_index(drop=True)
    out["n"] = out["n"].fillna(0).astype("int64")
    return out.rename(columns={c: f"{prefix}_{c}" for c in out.columns})


def _group_slices(orders: pd.DataFrame, pool: _Pool) -> pd.DataFrame:
    """trade_id of every slice of ``pool`` on a (symbol, exit side) of one of ``orders``."""
    groups = orders[["symbol", "exit_for"]].drop_duplicates().rename(columns={"exit_for": "side"})
    return pool.frame.merge(groups, on=["symbol", "side"])[["trade_id", "symbol", "side"]]


def _id_lists(orders: pd.DataFrame, pool: _Pool) -> pd.Series:
    """Per order (aligned by position): the sorted trade ids of ``pool`` on its symbol and exit side."""
    lists = pool.id_lists()
    keys = zip(orders["symbol"].tolist(), orders["exit_for"].tolist(), strict=True)
    return pd.Series([lists.get(k, []) for k in keys], index=orders.index, dtype=object)


def _lists_by_trade(rows: pd.DataFrame, cols: tuple[str, ...]) -> tuple[dict[str, list], ...]:
    """Per trade id of ``rows`` (NA skipped), the values of each column in ``cols``, in row order."""
    out: tuple[dict[str, list], ...] = tuple({} for _ in cols)
    trades = rows["trade_id"].tolist()
    for d, col in zip(out, cols, strict=True):
        for t, v in zip(trades, rows[col].tolist(), strict=True):
            if isinstance(t, str):
                d.setdefault(t, []).append(v)
    return out


def _sort_order(df: pd.DataFrame, by: list[str]) -> np.ndarray:
    """Positions that sort ``df`` by the columns ``by`` ascending, missing values last, stable: what
    ``sort_values(by, kind="stable")`` does, through Arrow's multi-key sort (pandas factorises and
    sorts every string key column separately)."""
    table = pa.table({c: pa.array(df[c].array) if df[c].dtype != "str" else K.arrow(df[c]) for c in by})
    keys = [(c, "ascending", "at_end") for c in by]
    return pc.sort_indices(table, sort_keys=keys).to_numpy()


def _present(values: list) -> list:
    """The values that are not missing (``Series.dropna`` of a ``str`` column)."""
    return [v for v in values if isinstance(v, str)]


def _fmt_ids(ids: list[str], k: int = 5) -> str:
    return ", ".join(ids[:k]) + (f" (+{len(ids) - k} more)" if len(ids) > k else "")


def backfill_exits(slices: pd.DataFrame, fills: pd.DataFrame, exchange_orders: pd.DataFrame,
                   db_orders: pd.DataFrame, profiles: pd.DataFrame, markets: pd.DataFrame, *,
                   settings: ReconSettings, profile_id: str, window_start: pd.Timestamp,
                   as_of: pd.Timestamp, now: pd.Timestamp, live: bool,
                   window_length: pd.Timedelta = pd.Timedelta(hours=1)) -> ExitBackfillResult:
    """The EXIT backfill of ``profile_id`` (see the module docstring for every rule)."""
    del now  # as_of bounds the evidence; now is only the snapshot time (== as_of in the live run)
    prof = profiles.loc[profiles["profile_id"] == profile_id]
    if prof.empty:
        raise ValueError(f"profile {profile_id!r} is not in the profiles frame")
    account = prof["account"].iloc[0]
    grace = pd.Timedelta(minutes=settings.backfill_grace_minutes)
    window_end = window_start + window_length

    mk = markets.loc[markets["account"] == account, ["symbol", "amount_precision"]].drop_duplicates("symbol")
    sl = slices.loc[(slices["account"] == account).to_numpy(bool)].reset_index(drop=True)
    sl["u"] = K.at(mk["amount_precision"].to_numpy("float64"), lookup_str(sl["symbol"], mk["symbol"]), np.nan)
    sl["remaining"] = sl["entry_qty"] - sl["exit_qty"].fillna(0.0)
    acct_open = sl.loc[sl["status"] == "OPEN"]
    my_open = _Pool(acct_open.loc[(acct_open["profile_id"] == profile_id).to_numpy(bool)])
    acct_open = _Pool(acct_open)

    f = fills.loc[(fills["account"] == account) & (fills["ts"] <= as_of)]
    att = attribute_fills(f, exchange_orders, profiles, db_orders, slices)
    att["exit_for"] = _exit_side(att["side"])
    mk_pos = lookup_str(att["symbol"], mk["symbol"])  # position of the fill's market in mk, -1 if none
    att["known_symbol"] = mk_pos >= 0
    att["u"] = np.where(mk_pos >= 0, mk["amount_precision"].to_numpy("float64")[np.maximum(mk_pos, 0)]
                        if len(mk) else np.nan, np.nan)
    att["in_window"] = ((att["ts"] >= window_start) & (att["ts"] < window_end)).to_numpy(bool)

    mine = (att["profile_id"] == profile_id).fillna(False).to_numpy(bool)
    untied = att["profile_id"].isna().to_numpy(bool)
    entry_role = (att["role"] == "e").fillna(False).to_numpy(bool)
    unknown_trade = att["unknown_trade"].to_numpy(bool)
    known_symbol = att["known_symbol"].to_numpy(bool)

    findings: list[dict] = []
    no_go: list[pd.DataFrame] = []

    def order_findings(rows: pd.DataFrame, fill_ids: _OrderFills, reason: str, detail, kind: str = "NO_GO",
                       trade_col: str | None = None, attribution: str | None = None) -> None:
        # only the columns a finding reads: itertuples converts every value of every column
        rows = rows[[c for c in _FINDING_READS if c in rows.columns]].assign(fill_ids=fill_ids.joined(rows))
        for r in rows.itertuples(index=False):
            findings.append({
                "kind": kind, "reason": reason, "symbol": r.symbol,
                "trade_id": getattr(r, trade_col) if trade_col else None,
                "exchange_order_id": r.exchange_order_id, "client_order_id": r.client_order_id,
                "fill_ids": r.fill_ids, "attribution": attribution or r.strength, "qty_db": float("nan"),
                "qty_exchange": r.qty, "notional_usd": r.notional, "detail": detail(r),
            })

    # --- fills that can never be evidence ------------------------------------------------------
    unk = att.loc[mine & unknown_trade]
    if len(unk):
        uo, uo_ids = _by_order(unk)
        order_findings(uo, uo_ids, "UNKNOWN_TRADE", lambda r: (
            f"{r.side} fills of order {r.exchange_order_id} carry this profile's client id "
            f"{r.client_order_id} naming trade {r.named_trade}, which the DB does not have; "
            "never used as evidence for another slice."))
        exits = uo.loc[(uo["role"] != "e").fillna(True)]
        no_go.append(_group_slices(exits, my_open)[["trade_id"]].assign(reason="UNKNOWN_TRADE"))

    live_rows = ~entry_role & ~unknown_trade & (mine | untied)
    bad_sym = att.loc[live_rows & ~known_symbol & (mine | att["in_window"].to_numpy(bool))]
    if len(bad_sym):
        order_findings(*_by_order(bad_sym), "UNKNOWN_SYMBOL", lambda r: (
            f"{r.side} fills of order {r.exchange_order_id} are on {r.symbol}, which is not in the "
            "exchange's markets; not reconciled."))
    # only the columns the assignment and the evidence read (fewer columns to filter, sort and merge)
    keep = list(dict.fromkeys([*fills.columns, "client_order_id", "order_qty", "strength", "profile_id",
                               "trade_id", "role", "named_trade", "exit_for", "u"]))
    usable = att.loc[live_rows & known_symbol, keep]

    # --- question 2: which slice ---------------------------------------------------------------
    is_mine = (usable["profile_id"] == profile_id).fillna(False)
    explicit = usable.loc[is_mine & usable["strength"].isin(EXPLICIT)].assign(
        assigned_strength=lambda d: d["strength"])
    tagged = usable.loc[is_mine & (usable["strength"] == "sub_tag")]
    free = usable.loc[usable["profile_id"].isna()]

    assigned_parts = [explicit]
    allow_h = settings.backfill_allow_heuristic

    if len(tagged):
        to, to_ids = _by_order(tagged)
        to = pd.concat([to, _candidates(to, my_open, "mine"), _candidates(to, my_open, "q", by_qty=True)], axis=1)
        pick = np.select(
            [to["mine_n"] == 1, (to["mine_n"] >= 2) & allow_h & (to["q_n"] == 1)],
            [to["mine_trade"], to["q_trade"]], None)
        how = np.select([to["mine_n"] == 1, (to["mine_n"] >= 2) & allow_h & (to["q_n"] == 1)],
                        ["sub_tag", "qty_unique"], "")
        to["pick"], to["how"] = pick, how
        amb = to.loc[to["pick"].isna() & (to["mine_n"] >= 2)].copy()
        if len(amb):
            amb["candidates"] = _id_lists(amb, my_open)
            order_findings(amb, to_ids, "AMBIGUOUS", lambda r: (
                f"{r.side} fills of order {r.exchange_order_id} carry this profile's sub_tag but "
                f"{len(r.candidates)} OPEN slices could be closed by them ({_fmt_ids(r.candidates)}); "
                "left for operator review."))
            no_go.append(_group_slices(amb, my_open)[["trade_id"]].assign(reason="AMBIGUOUS"))
        got = to.loc[to["pick"].notna(), ["exchange_order_id", "pick", "how"]]
        assigned_parts.append(tagged.merge(got, on="exchange_order_id").drop(columns=["trade_id"])
                              .rename(columns={"pick": "trade_id", "how": "assigned_strength"}))

    if len(free):
        fo, fo_ids = _by_order(free)
        fo = pd.concat([fo, _candidates(fo, my_open, "mine"), _candidates(fo, acct_open, "acct"),
                        _candidates(fo, acct_open, "q", by_qty=True)], axis=1)
        use = (not settings.backfill_require_strong) and allow_h
        single = use & (fo["acct_n"] == 1)
        qty_u = use & ~single & (fo["q_n"] == 1)
        owner = np.where(single, fo["acct_owner"], np.where(qty_u, fo["q_owner"], None))
        trade = np.where(single, fo["acct_trade"], np.where(qty_u, fo["q_trade"], None))
        fo["pick_owner"], fo["pick"] = owner, trade
        fo["how"] = np.where(single, "single_open_trade", np.where(qty_u, "qty_unique", ""))
        picked = fo["pick"].notna()
        left_alone = picked & (fo["pick_owner"] != profile_id)
        got = fo.loc[picked & ~left_alone, ["exchange_order_id", "pick", "how"]]
        assigned_parts.append(free.merge(got, on="exchange_order_id").drop(columns=["trade_id"])
                              .rename(columns={"pick": "trade_id", "how": "assigned_strength"}))
        rest = fo.loc[~picked].copy()
        # an untied fill looks like an exit of this profile when it could close one of its OPEN slices
        # and is not older than the earliest of them (minus the grace)
        has_cand = ((rest["mine_n"] >= 1) & (rest["last_ts"] >= rest["mine_min_entry"] - grace)).fillna(False)
        ambiguous = use & has_cand & (rest["acct_n"] >= 2)
        amb = rest.loc[ambiguous].assign(candidates=lambda d: _id_lists(d, my_open))
        if len(amb):
            order_findings(amb, fo_ids, "AMBIGUOUS", lambda r: (
                f"untied {r.side} fills of order {r.exchange_order_id} match {r.acct_n} OPEN slices on the "
                f"account, {len(r.candidates)} of this profile ({_fmt_ids(r.candidates)}); no heuristic "
                "picks one."), attribution="none")
            no_go.append(_group_slices(amb, my_open)[["trade_id"]].assign(reason="AMBIGUOUS"))
        noatt = rest.loc[has_cand & ~ambiguous].assign(candidates=lambda d: _id_lists(d, my_open))
        if len(noatt):
            noatt["one"] = np.where(noatt["mine_n"] == 1, noatt["mine_trade"], None)
            why = ("strong attribution is required" if settings.backfill_require_strong
                   else "heuristic matching is off")
            order_findings(noatt, fo_ids, "NO_ATTRIBUTION", lambda r: (
                f"untied {r.side} fills of order {r.exchange_order_id} could be the exit of "
                f"{_fmt_ids(r.candidates)} but nothing ties them to this profile and {why}."),
                attribution="none", trade_col="one")
        unatt = rest.loc[~has_cand]
        unatt = unatt.loc[(unatt["last_ts"] >= window_start) & (unatt["first_ts"] < window_end)]
        if len(unatt):
            order_findings(unatt, fo_ids, "ACCOUNT_LEVEL", lambda r: (
                f"{r.side} fills of order {r.exchange_order_id} ({r.client_order_id}) on {r.symbol} are tied "
                "to no profile of the account and were not used."), kind="UNATTRIBUTED", attribution="none")

    # --- evidence per slice ----------------------------------------------------------------------
    assigned = pd.concat([p for p in assigned_parts if len(p)], ignore_index=True) if any(
        len(p) for p in assigned_parts) else explicit.iloc[0:0]
    my_sl = sl.loc[sl["profile_id"] == profile_id]
    a = assigned.merge(my_sl[["trade_id", "symbol", "side", "status", "entry_time"]].rename(
        columns={"symbol": "sl_symbol", "side": "sl_side", "status": "sl_status"}), on="trade_id", how="inner")
    mismatch = ((a["sl_symbol"] != a["symbol"]) | (a["sl_side"] != a["exit_for"])).fillna(True)
    stale = ~mismatch & (a["ts"] < a["entry_time"] - grace).fillna(False)
    ok = ~mismatch & ~stale

    def slice_findings(rows: pd.DataFrame, reason: str, detail) -> None:
        per = rows.sort_values(["trade_id", "fill_id"]).assign(notional=rows["qty"] * rows["price"])
        per["rank"] = strength_rank(per["assigned_strength"])
        agg = per.groupby("trade_id").agg(
            symbol=("symbol", "first"), qty=("qty", "sum"), notional=("notional", "sum"), rank=("rank", "max"),
        ).reset_index()
        fids, eoids = _lists_by_trade(per, ("fill_id", "exchange_order_id"))
        agg["fill_ids"] = [",".join(sorted(fids[t])) for t in agg["trade_id"].tolist()]
        agg["exchange_order_id"] = [",".join(sorted(set(_present(eoids[t])))) for t in agg["trade_id"].tolist()]
        for r in agg.itertuples(index=False):
            findings.append({
                "kind": "NO_GO", "reason": reason, "symbol": r.symbol, "trade_id": r.trade_id,
                "exchange_order_id": r.exchange_order_id or None, "fill_ids": r.fill_ids,
                "attribution": STRENGTH_ORDER[r.rank], "qty_exchange": r.qty, "notional_usd": r.notional,
                "detail": detail(r),
            })
        no_go.append(agg[["trade_id"]].assign(reason=reason))

    contra = a.loc[mismatch]
    if len(contra):
        slice_findings(contra, "AMBIGUOUS", lambda r: (
            f"fills {r.fill_ids} name slice {r.trade_id} but their symbol or side cannot exit it; "
            "left for operator review."))
    stale_rows = a.loc[stale & (a["sl_status"] == "OPEN")]
    if len(stale_rows):
        slice_findings(stale_rows, "STALE_FILL", lambda r: (
            f"fills {r.fill_ids} predate slice {r.trade_id}'s entry by more than the "
            f"{settings.backfill_grace_minutes:g}-minute grace; rejected as stale evidence."))

    # the evidence: only the columns read below and returned, sorted once (one gather of its rows)
    evidence_cols = list(dict.fromkeys([*fills.columns, "trade_id", "assigned_strength"]))
    rows = np.flatnonzero(ok.to_numpy(bool))
    rows = rows[_sort_order(a[["trade_id", "ts", "fill_id"]].take(rows), ["trade_id", "ts", "fill_id"])]
    ev = a[list(dict.fromkeys([*evidence_cols, "client_order_id"]))].take(rows).reset_index(drop=True)
    ev["notional"] = ev["qty"] * ev["price"]
    ev["rank"] = strength_rank(ev["assigned_strength"])
    agg = ev.groupby("trade_id").agg(
        total=("qty", "sum"), notional=("notional", "sum"), last_ts=("ts", "max"), rank=("rank", "max"),
    )

    j = my_sl.merge(agg, left_on="trade_id", right_index=True, how="left")
    j["has_ev"] = j["total"].notna()
    j["total"] = j["total"].fillna(0.0)
    j["exit_qty0"] = j["exit_qty"].fillna(0.0)
    u = j["u"]
    is_open = (j["status"] == "OPEN").to_numpy(bool)
    over = is_open & (j["total"] > j["entry_qty"] + u * (1 + _REL)).fillna(False).to_numpy(bool)
    ahead_of_db = (j["total"] > j["exit_qty0"] + u * (0.5 + _REL)).fillna(False).to_numpy(bool)
    db_ahead = (j["exit_qty0"] > j["total"] + u * (0.5 + _REL)).fillna(False).to_numpy(bool)
    backfill = is_open & ~over & ahead_of_db
    closes = ((j["entry_qty"] - j["total"]) <= u * (1 + _REL)).fillna(False).to_numpy(bool)
    differs = ((j["total"] - j["exit_qty0"]).abs() > u * (0.5 + _REL)).fillna(False).to_numpy(bool)
    synthetic = (j["exit_source"] == "parity_synthetic").fillna(False).to_numpy(bool)
    late = live & (j["status"] == "CLOSED").to_numpy(bool) & j["has_ev"].to_numpy(bool) & (differs | synthetic)
    ahead = live & is_open & ~over & db_ahead

    # id lists and fees only for the slices that become a correction or a finding
    need = j.loc[(backfill | over | ahead | late) & j["has_ev"].to_numpy(bool), "trade_id"]
    ev_need = ev.loc[isin_str(ev["trade_id"], need)]
    fid_l, eoid_l, cid_l, str_l = _lists_by_trade(
        ev_need, ("fill_id", "exchange_order_id", "client_order_id", "assigned_strength"))
    lists = {t: (sorted(fid_l[t]), sorted(set(_present(eoid_l[t]))), sorted(set(_present(cid_l[t]))),
                 sorted(set(str_l[t]))) for t in fid_l}

    def with_lists(rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` of ``j`` with their id lists (NaN for a slice without evidence)."""
        ts = rows["trade_id"].tolist()
        return rows.assign(**{col: [lists[t][i] if t in lists else np.nan for t in ts]
                              for i, col in enumerate(("fill_ids", "eoids", "cids", "strengths"))})
    fees = (ev_need.dropna(subset=["fee_cost", "fee_currency"]).groupby(["trade_id", "fee_currency"])["fee_cost"]
            .sum().reset_index())
    fee_map: dict[str, dict[str, float]] = {}
    for t, cur, cost in fees.itertuples(index=False):
        fee_map.setdefault(t, {})[cur] = float(cost)

    corr_rows: list[dict] = []
    for r in with_lists(j.loc[backfill]).assign(closes=closes[backfill]).itertuples(index=False):
        vwap = r.notional / r.total
        status = "CLOSED" if r.closes else "OPEN"
        fees_r = dict(sorted(fee_map.get(r.trade_id, {}).items()))
        strength = STRENGTH_ORDER[int(r.rank)]
        new_state = {"status": status, "exit_qty": float(r.total), "exit_price": vwap,
                     "exit_time": r.last_ts, "exit_source": "backfill", "exit_fees": fees_r}
        evidence = {"fill_ids": r.fill_ids, "attribution": strength, "strengths": r.strengths,
                    "exchange_order_ids": r.eoids, "client_order_ids": r.cids, "total_qty": float(r.total),
                    "vwap": vwap, "last_fill_ts": r.last_ts, "fees": fees_r, "entry_qty": float(r.entry_qty),
                    "db_exit_qty": float(r.exit_qty0), "amount_precision": float(r.u)}
        drift = (r.total - r.exit_qty0) * vwap
        # the documents have str keys only: serialised here by json's encoder in one pass
        corr_rows.append({"action": "BACKFILL_EXIT", "target_table": "trade_history", "target_id": r.trade_id,
                          "expected_state": canonical_json_str_keys({"status": r.status,
                                                                     "exit_qty": float(r.exit_qty0)}),
                          "new_state": canonical_json_str_keys(new_state),
                          "evidence": canonical_json_str_keys(evidence), "attribution": strength,
                          "notional_usd": drift})
        findings.append({
            "kind": "MISSING_EXIT", "reason": "PARTIAL_EXIT" if status == "OPEN" else "EXIT",
            "symbol": r.symbol, "trade_id": r.trade_id, "exchange_order_id": ",".join(r.eoids) or None,
            "client_order_id": ",".join(r.cids) or None,
            "fill_ids": ",".join(r.fill_ids), "attribution": strength, "qty_db": float(r.exit_qty0),
            "qty_exchange": float(r.total), "notional_usd": drift,
            "detail": (f"slice {r.trade_id} exited {r.total:g} of {r.entry_qty:g} on the exchange "
                       f"(DB says {r.exit_qty0:g}); BACKFILL_EXIT at VWAP {vwap:g} leaves it {status}."),
        })

    def judged(mask: np.ndarray, reason: str, detail) -> None:
        if not mask.any():
            return
        rows = with_lists(j.loc[mask])
        for r in rows.itertuples(index=False):
            fids = ",".join(r.fill_ids) if isinstance(r.fill_ids, list) else None
            price = (r.notional / r.total) if r.total else (r.exit_price if pd.notna(r.exit_price)
                                                           else r.entry_price)
            findings.append({
                "kind": "NO_GO", "reason": reason, "symbol": r.symbol, "trade_id": r.trade_id,
                "exchange_order_id": ",".join(r.eoids) if isinstance(r.eoids, list) and r.eoids else None,
                "fill_ids": fids, "attribution": STRENGTH_ORDER[int(r.rank)] if pd.notna(r.rank) else None,
                "qty_db": float(r.exit_qty0), "qty_exchange": float(r.total),
                "notional_usd": abs(r.total - r.exit_qty0) * price, "detail": detail(r),
            })
        if reason in QUARANTINE_REASONS and len(rows):
            no_go.append(rows[["trade_id"]].assign(reason=reason))

    judged(over, "OVER_FILL", lambda r: (
        f"attributed exit fills of slice {r.trade_id} total {r.total:g}, above its entry qty {r.entry_qty:g}; "
        "the slice is not touched."))
    judged(ahead, "DB_AHEAD", lambda r: (
        f"the DB records {r.exit_qty0:g} exited for slice {r.trade_id} but attributed exchange fills total "
        f"only {r.total:g}."))
    judged(late, "LATE_FILL", lambda r: (
        f"CLOSED slice {r.trade_id} ({r.exit_source}) has attributed exit fills totalling {r.total:g} against "
        f"a recorded exit of {r.exit_qty0:g}; it is never reopened."))

    consts = {"window_start": window_start, "profile_id": profile_id}
    fdf = findings_frame(findings, account=account, **consts) if findings else empty(FINDINGS)
    if len(fdf):
        fdf = fdf.sort_values(["kind", "reason", "trade_id", "exchange_order_id", "fill_ids"],
                              kind="stable", na_position="last").reset_index(drop=True)
    cdf = corrections_frame(corr_rows, **consts) if corr_rows else empty(CORRECTIONS)
    ng = (pd.concat(no_go, ignore_index=True).dropna().drop_duplicates().sort_values(["trade_id", "reason"])
          .reset_index(drop=True) if no_go else pd.DataFrame({"trade_id": [], "reason": []}))
    ng = ng.astype({"trade_id": "str", "reason": "str"})
    return ExitBackfillResult(
        findings=fdf, corrections=cdf, evidence=ev[evidence_cols] if len(ev) else ev.reindex(
            columns=evidence_cols),
        attributed=att, no_go_evidence=ng,
        no_go_trade_ids=frozenset(ng.loc[ng["reason"].isin(QUARANTINE_REASONS), "trade_id"].tolist()),
    )


def slices_after(slices: pd.DataFrame, corrections: pd.DataFrame) -> pd.DataFrame:
    """``slices`` as the BACKFILL_EXIT corrections of ``corrections`` leave them (other actions ignored)."""
    return state_after.slices_after(slices, corrections, actions=("BACKFILL_EXIT",))
