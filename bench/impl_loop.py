"""Reference (a): the rules as a hand-written per-row Python loop over dicts.

This is how a reconciliation loop in a trading service is usually written: rows as dicts (times as
integer nanoseconds, as ccxt gives integer milliseconds), dict indexes, one pass per rule. It mirrors
the package's semantics under the default flags (strong attribution required, heuristics off): the
bench checks that it produces the same finding and correction keys as the package. Building the
dicts from the frames (:func:`to_records`) is not part of the timed rules.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

import pandas as pd

from bench.generate import NOW, RUNNING_PROFILE, WINDOW_END, WINDOW_START, Dataset, settings
from recon_pipeline.rules import client_order_id as coid

_DET = re.compile(coid.CLIENT_ID_PATTERN)
REL = 1e-9
OPEN_DB = ("NEW", "OPEN", "PARTIALLY_FILLED")


def to_records(ds: Dataset) -> dict[str, list[dict]]:
    """Frames -> lists of dicts; missing values None, times int ns."""
    out = {}
    for name in Dataset.FRAMES:
        df = getattr(ds, name)
        cols = {}
        for c in df.columns:
            s = df[c]
            if str(s.dtype).startswith("datetime64"):
                v = s.astype("int64").tolist()
                na = s.isna().tolist()
                cols[c] = [None if m else x for x, m in zip(v, na, strict=True)]
            else:
                cols[c] = [None if (x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA) else x
                           for x in s.astype(object).tolist()]
        names = list(cols)
        out[name] = [dict(zip(names, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]
    return out


def _attribute(acct, eoid, cid, ctx):
    """(profile, trade, strength, role, unknown) of an exchange order key."""
    det = None
    if cid is not None and len(cid) <= coid.MAX_LEN:
        det = _DET.match(cid)
    prefix = None
    if cid is not None:
        i = cid.find("-")
        if i > 0:
            prefix = cid[:i]
    tag_profile = ctx["tags"].get((acct, prefix)) if prefix is not None else None
    coid_trade = None
    if det and tag_profile is not None:
        coid_trade = ctx["slice_keys"].get((tag_profile, det.group("trade_key")))
    db = ctx["db_by_eoid"].get((acct, eoid)) if eoid is not None else None
    db_trade = db["trade_id"] if db else None
    db_role = {"ENTRY": "e", "EXIT": "x"}.get(db["role"]) if db else None
    hint_profile = ctx["slice_owner"].get(db_trade) if db_trade is not None else None
    has_tag = tag_profile is not None
    is_coid = bool(det) and has_tag and coid_trade is not None
    unknown_det = bool(det) and has_tag and not is_coid
    rest = not is_coid and not unknown_det
    is_hint = rest and db_trade is not None and hint_profile is not None
    unknown_hint = rest and db_trade is not None and not is_hint
    is_tag = has_tag and not is_coid and not is_hint
    if is_coid:
        strength = "client_order_id"
    elif is_hint:
        strength = "trade_id_hint"
    elif is_tag:
        strength = "sub_tag"
    else:
        strength = "none"
    if is_coid or is_tag:
        profile = tag_profile
    elif is_hint:
        profile = hint_profile
    elif unknown_hint:
        profile = db["profile_id"]
    else:
        profile = None
    trade = coid_trade if is_coid else (db_trade if is_hint else None)
    parsed_role = det.group("role") if det else None
    if det and has_tag:
        role = parsed_role
    elif db_role is not None:
        role = db_role
    else:
        role = parsed_role
    if is_hint:
        role = db_role
    return profile, trade, strength, role, unknown_det or unknown_hint


def _context(r, account):
    tag_count = defaultdict(list)
    for p in r["profiles"]:
        if p["account"] is not None and p["sub_tag"] is not None:
            tag_count[(p["account"], p["sub_tag"])].append(p["profile_id"])
    tags = {k: v[0] for k, v in tag_count.items() if len(v) == 1}
    owner = {}
    for s in r["slices"]:
        if s["trade_id"] is not None and s["profile_id"] is not None and s["trade_id"] not in owner:
            owner[s["trade_id"]] = s["profile_id"]
    keys = defaultdict(list)
    for t, p in owner.items():
        keys[(p, coid.trade_key(t))].append(t)
    slice_keys = {k: v[0] for k, v in keys.items() if len(v) == 1}
    db_by_eoid = {}
    for o in sorted((o for o in r["db_orders"] if o["exchange_order_id"] is not None), key=lambda o: o["order_id"]):
        db_by_eoid.setdefault((o["account"], o["exchange_order_id"]), o)
    return {"tags": tags, "slice_owner": owner, "slice_keys": slice_keys, "db_by_eoid": db_by_eoid}


def run(r: dict[str, list[dict]], profile_id: str = RUNNING_PROFILE) -> tuple[set, set]:
    """Finding keys and correction keys of the live partition (see bench.compare)."""
    s = settings()
    grace = int(s.backfill_grace_minutes * 60e9)
    now = NOW.value
    ws, we = WINDOW_START.value, WINDOW_END.value
    account = next(p["account"] for p in r["profiles"] if p["profile_id"] == profile_id)
    my_tag = next(p["sub_tag"] for p in r["profiles"] if p["profile_id"] == profile_id)
    ctx = _context(r, account)
    findings: set = set()
    corrections: set = set()

    # ---------------- order reconciliation ----------------
    cutoff = now - int(s.order_settle_seconds * 1e9)

    def settled(a, b):
        return not ((a is not None and a >= cutoff) or (b is not None and b >= cutoff))

    ex = [o for o in r["exchange_orders"] if o["account"] == account]
    ranked = sorted(ex, key=lambda o: (o["status"] != "open", -(o["updated_ts"] or -(2 ** 62))))
    by_id, by_cid = {}, {}
    for o in ranked:
        if o["exchange_order_id"] is not None:
            by_id.setdefault(o["exchange_order_id"], o)
        if o["client_order_id"] is not None:
            by_cid.setdefault(o["client_order_id"], o)
    db_acct = [o for o in r["db_orders"] if o["account"] == account]
    for o in db_acct:
        if o["profile_id"] != profile_id or o["status"] not in OPEN_DB or not settled(o["created_at"], o["updated_at"]):
            continue
        m = by_id.get(o["exchange_order_id"]) if o["exchange_order_id"] is not None else None
        if m is None and o["client_order_id"] is not None:
            m = by_cid.get(o["client_order_id"])
        if m is not None and not settled(m["created_ts"], m["updated_ts"]):
            continue
        if m is None:
            findings.add(("NO_GO", "ORDER_NOT_FOUND", o["symbol"], o["trade_id"], o["order_id"], o["exchange_order_id"]))
            continue
        fq = m["filled_qty"] if m["filled_qty"] is not None else 0.0
        px = m["avg_fill_price"]
        if m["status"] == "closed":
            role = o["role"] if o["role"] in ("ENTRY", "EXIT") else ("ENTRY" if o["side"] == "buy" else "EXIT")
            handler, action, new_status = ({"ENTRY": ("reconcileEntryFill", "ENTRY_FILL"),
                                            "EXIT": ("reconcileExitFill", "EXIT_FILL")}[role] + ("FILLED",))
        elif m["status"] in ("canceled", "expired", "rejected"):
            handler, action, new_status = "reconcileCancel", "CANCEL_ORDER", "CANCELED"
        else:
            continue
        findings.add(("ORDER_MISSING_FROM_EXCHANGE", handler, o["symbol"], o["trade_id"], o["order_id"],
                      m["exchange_order_id"]))
        corrections.add((action, o["order_id"], new_status, _r(fq), _r(px)))
    known_ids = {o["exchange_order_id"] for o in db_acct if o["exchange_order_id"] is not None}
    known_cids = {o["client_order_id"] for o in db_acct if o["client_order_id"] is not None}
    for o in ex:
        if o["status"] != "open" or not settled(o["created_ts"], o["updated_ts"]):
            continue
        if o["exchange_order_id"] in known_ids or (o["client_order_id"] is not None and o["client_order_id"] in known_cids):
            continue
        prof, trade, strength, _role, _unk = _attribute(o["account"], o["exchange_order_id"], o["client_order_id"], ctx)
        if prof == profile_id:
            findings.add(("ORDER_MISSING_IN_DB", "OWN_PROFILE", o["symbol"], trade, None, o["exchange_order_id"]))
        elif prof is None:
            findings.add(("ORDER_MISSING_IN_DB", "ACCOUNT_LEVEL", o["symbol"], trade, None, o["exchange_order_id"]))

    # ---------------- EXIT backfill ----------------
    u_of = {}
    for m in r["markets"]:
        if m["account"] == account and m["symbol"] not in u_of:
            u_of[m["symbol"]] = m["amount_precision"]
    my_sl = {}
    my_open_by_group = defaultdict(list)      # (symbol, side) -> [slice]
    for sl in r["slices"]:
        if sl["account"] != account:
            continue
        if sl["profile_id"] == profile_id:
            my_sl[sl["trade_id"]] = sl
            if sl["status"] == "OPEN":
                my_open_by_group[(sl["symbol"], sl["side"])].append(sl)
    for group in my_open_by_group.values():
        group.sort(key=lambda x: x["trade_id"])
    eo_of = {}
    for o in r["exchange_orders"]:
        eo_of[(o["account"], o["exchange_order_id"])] = o   # keep="last"
    attr_cache = {}
    orders = {}   # exchange_order_id -> aggregated order of usable/unknown fills
    no_go = defaultdict(set)
    evidence = defaultdict(list)

    def agg(eoid, f, kind, extra):
        o = orders.get((kind, eoid))
        if o is None:
            o = orders[(kind, eoid)] = {"eoid": eoid, "symbol": f["symbol"], "side": f["side"], "kind": kind,
                                        "first": f["ts"], "last": f["ts"], "fids": [], **extra}
        o["first"] = min(o["first"], f["ts"])
        o["last"] = max(o["last"], f["ts"])
        o["fids"].append(f["fill_id"])

    for f in r["fills"]:
        if f["account"] != account or f["ts"] > now:
            continue
        key = (f["account"], f["exchange_order_id"])
        a = attr_cache.get(key)
        if a is None:
            o = eo_of.get(key)
            a = attr_cache[key] = _attribute(f["account"], f["exchange_order_id"], o["client_order_id"] if o else None, ctx)
        prof, trade, strength, role, unknown = a
        mine = prof == profile_id
        untied = prof is None
        exit_for = {"sell": "long", "buy": "short"}.get(f["side"])
        if mine and unknown:
            agg(f["exchange_order_id"], f, "unknown", {"role": role, "exit_for": exit_for})
        if role == "e" or unknown or not (mine or untied):
            continue
        in_window = ws <= f["ts"] < we
        if f["symbol"] not in u_of:
            if mine or in_window:
                agg(f["exchange_order_id"], f, "bad_symbol", {})
            continue
        if mine and strength in ("client_order_id", "trade_id_hint"):
            evidence[trade].append((f, strength, exit_for))
        elif mine and strength == "sub_tag":
            agg(f["exchange_order_id"], f, "tagged", {"exit_for": exit_for})
            orders[("tagged", f["exchange_order_id"])].setdefault("rows", []).append(f)
        elif untied:
            agg(f["exchange_order_id"], f, "free", {"exit_for": exit_for})

    for (kind, eoid), o in orders.items():
        cands = my_open_by_group.get((o["symbol"], o.get("exit_for")), [])
        if kind == "unknown":
            findings.add(("NO_GO", "UNKNOWN_TRADE", o["symbol"], None, None, eoid))
            if o.get("role") != "e":
                for c in cands:
                    no_go[c["trade_id"]].add("UNKNOWN_TRADE")
        elif kind == "bad_symbol":
            findings.add(("NO_GO", "UNKNOWN_SYMBOL", o["symbol"], None, None, eoid))
        elif kind == "tagged":
            if len(cands) == 1:
                for f in o["rows"]:
                    evidence[cands[0]["trade_id"]].append((f, "sub_tag", o["exit_for"]))
            elif len(cands) >= 2:
                findings.add(("NO_GO", "AMBIGUOUS", o["symbol"], None, None, eoid))
                for c in cands:
                    no_go[c["trade_id"]].add("AMBIGUOUS")
        elif kind == "free":
            has_cand = bool(cands) and o["last"] >= min(c["entry_time"] for c in cands) - grace
            if has_cand:
                one = cands[0]["trade_id"] if len(cands) == 1 else None
                findings.add(("NO_GO", "NO_ATTRIBUTION", o["symbol"], one, None, eoid))
            elif o["last"] >= ws and o["first"] < we:
                findings.add(("UNATTRIBUTED", "ACCOUNT_LEVEL", o["symbol"], None, None, eoid))

    ok_ev = {}
    for tid, rows in evidence.items():
        sl = my_sl.get(tid)
        if sl is None:
            continue
        contra, stale, ok = [], [], []
        for f, _strength, exit_for in rows:
            if sl["symbol"] != f["symbol"] or sl["side"] != exit_for:
                contra.append(f)
            elif f["ts"] < sl["entry_time"] - grace:
                stale.append(f)
            else:
                ok.append(f)
        if contra:
            findings.add(("NO_GO", "AMBIGUOUS", contra[0]["symbol"], tid, None,
                          ",".join(sorted({f["exchange_order_id"] for f in contra}))))
            no_go[tid].add("AMBIGUOUS")
        if stale and sl["status"] == "OPEN":
            findings.add(("NO_GO", "STALE_FILL", stale[0]["symbol"], tid, None,
                          ",".join(sorted({f["exchange_order_id"] for f in stale}))))
            no_go[tid].add("STALE_FILL")
        if ok:
            ok_ev[tid] = ok
    after = {}
    for tid, sl in my_sl.items():
        u = u_of.get(sl["symbol"])
        if u is None:
            continue
        ok = ok_ev.get(tid, ())
        total = sum(f["qty"] for f in ok)
        eoids = ",".join(sorted({f["exchange_order_id"] for f in ok})) or None
        exit0 = sl["exit_qty"] or 0.0
        if sl["status"] == "OPEN":
            if total > sl["entry_qty"] + u * (1 + REL):
                findings.add(("NO_GO", "OVER_FILL", sl["symbol"], tid, None, eoids))
                no_go[tid].add("OVER_FILL")
            elif total > exit0 + u * (0.5 + REL):
                vwap = sum(f["qty"] * f["price"] for f in ok) / total
                status = "CLOSED" if sl["entry_qty"] - total <= u * (1 + REL) else "OPEN"
                corrections.add(("BACKFILL_EXIT", tid, status, _r(total), _r(vwap)))
                findings.add(("MISSING_EXIT", "PARTIAL_EXIT" if status == "OPEN" else "EXIT", sl["symbol"], tid,
                              None, eoids))
                after[tid] = (status, total)
            elif exit0 > total + u * (0.5 + REL):
                findings.add(("NO_GO", "DB_AHEAD", sl["symbol"], tid, None, eoids))
        elif sl["status"] == "CLOSED" and ok:
            if abs(total - exit0) > u * (0.5 + REL) or sl["exit_source"] == "parity_synthetic":
                findings.add(("NO_GO", "LATE_FILL", sl["symbol"], tid, None, eoids))

    # ---------------- parity ----------------
    no_go_ids = {t for t, reasons in no_go.items()
                 if reasons & {"OVER_FILL", "AMBIGUOUS", "STALE_FILL", "UNKNOWN_TRADE"}}
    _parity(r, account, profile_id, my_tag, after, no_go_ids, findings, corrections, s)
    return findings, corrections


def _r(x) -> str | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.6g}"


def _parity(r, account, profile_id, my_tag, after, no_go_ids, findings, corrections, s):
    dust_usd = float(s.parity_dust_usd)
    n_conf = int(s.parity_confirmations)
    ws = WINDOW_START.value
    mk = {}
    for m in r["markets"]:
        if m["account"] == account:
            mk[m["symbol"]] = m
    for p in r["positions"]:
        if p["account"] == account and p["position_side"] in ("long", "short"):
            raise NotImplementedError("hedge-mode positions are not generated by the bench")
    keys = {}   # (mtype, instrument) -> dict

    def key(mt, inst):
        k = keys.get((mt, inst))
        if k is None:
            k = keys[(mt, inst)] = {"db": 0.0, "n": 0, "n_mine": 0, "ex": 0.0, "marks": [], "precs": [],
                                    "mark_missing": False, "prec_missing": False}
        return k

    open_slices = []
    for sl in r["slices"]:
        if sl["account"] != account:
            continue
        status, exit_qty = sl["status"], sl["exit_qty"]
        if sl["trade_id"] in after and sl["profile_id"] == profile_id:
            status, exit_qty = after[sl["trade_id"]]
        if status != "OPEN":
            continue
        m = mk.get(sl["symbol"])
        mt = m["market_type"] if m else ("swap" if ":" in sl["symbol"] else "spot")
        base = m["base"] if m else sl["symbol"].split("/")[0]
        prec = m["amount_precision"] if m else None
        mark = m["mark_price"] if m else None
        remaining = sl["entry_qty"] - (exit_qty or 0.0)
        dust = prec is not None and abs(remaining) < max(prec, 1e-12) * (1 - REL)
        inst = base if mt == "spot" else sl["symbol"]
        rec = {"sl": sl, "mt": mt, "inst": inst, "remaining": remaining, "dust": dust, "mark": mark,
               "spot_short": mt == "spot" and sl["side"] == "short"}
        open_slices.append(rec)
        if rec["spot_short"]:
            if sl["profile_id"] == profile_id:
                findings.add(("NO_GO", "SPOT_SHORT", sl["symbol"], sl["trade_id"], None, None))
            continue
        k = key(mt, inst)
        k["db"] += 0.0 if dust else (remaining if sl["side"] == "long" else -remaining)
        k["n"] += 1
        k["n_mine"] += sl["profile_id"] == profile_id
        if mark is None:
            k["mark_missing"] = True
        else:
            k["marks"].append(mark)
        if prec is None:
            k["prec_missing"] = True
        else:
            k["precs"].append(prec)
    for p in r["positions"]:
        if p["account"] != account:
            continue
        if p["market_type"] == "swap" or (p["market_type"], p["instrument"]) in keys:
            key(p["market_type"], p["instrument"])["ex"] += p["qty"]
    for sym, m in mk.items():   # swap markets with no slice: their own mark and precision
        if m["market_type"] == "swap" and ("swap", sym) in keys and keys[("swap", sym)]["n"] == 0:
            k = keys[("swap", sym)]
            k["marks"] = [] if m["mark_price"] is None else [m["mark_price"]]
            k["mark_missing"] = m["mark_price"] is None
            k["precs"] = [] if m["amount_precision"] is None else [m["amount_precision"]]
            k["prec_missing"] = m["amount_precision"] is None
    verdict = {}
    for (mt, inst), k in keys.items():
        evaluated = bool(k["marks"]) and bool(k["precs"]) and not k["mark_missing"] and not k["prec_missing"]
        if not evaluated:
            verdict[(mt, inst)] = (False, False)
            continue
        mark = sum(k["marks"]) / len(k["marks"])
        prec = max(max(k["precs"]), 1e-12)

        def zero(q, prec=prec, mark=mark):
            return abs(q) < prec * (1 - REL) or abs(q) * mark < dust_usd
        diff = abs(k["ex"] - k["db"])
        ghost_key = zero(k["ex"]) and not zero(k["db"])
        mismatch = not zero(k["ex"]) and diff >= prec * (1 - REL)
        verdict[(mt, inst)] = (True, ghost_key)
        if mismatch and (k["n_mine"] > 0 or k["n"] == 0):
            findings.add(("QTY_MISMATCH", "QTY_MISMATCH", inst, None, None, None))
            findings.add(("NO_GO", "QTY_MISMATCH", inst, None, None, None))
    streaks = {st["trade_id"]: st for st in r["streaks"] if st["profile_id"] == profile_id}
    for rec in open_slices:
        sl = rec["sl"]
        if rec["spot_short"] or sl["profile_id"] != profile_id:
            continue
        evaluated, ghost_key = verdict.get((rec["mt"], rec["inst"]), (False, False))
        if not evaluated:
            continue
        ghost = ghost_key and not rec["dust"]
        st = streaks.get(sl["trade_id"])
        prior = st["streak"] if st else 0
        last = st["last_window_start"] if st else None
        older = last is not None and last > ws
        same = last is not None and last == ws
        streak = prior + 1 if ghost and not older and not same else (0 if not ghost and not older else prior)
        if ghost:
            findings.add(("GHOST_SLICE", f"streak={streak}/{n_conf}", sl["symbol"], sl["trade_id"], None, None))
        if ghost and not older and streak >= n_conf:
            cid = sl["entry_client_order_id"]
            attributed = cid is not None and cid.split("-", 1)[0] == my_tag and "-" in cid
            exit_qty = sl["exit_qty"] or 0.0
            if sl["trade_id"] in no_go_ids or (s.parity_require_subtag and not attributed):
                corrections.add(("QUARANTINE", sl["trade_id"], "QUARANTINED", None, None))
            else:
                mark = rec["mark"]
                price = ((exit_qty * sl["exit_price"] + (sl["entry_qty"] - exit_qty) * mark) / sl["entry_qty"]
                         if exit_qty > 0 and sl["exit_price"] is not None and sl["entry_qty"] > 0 else mark)
                corrections.add(("SYNTHETIC_EXIT", sl["trade_id"], "CLOSED", _r(sl["entry_qty"]), _r(price)))
