"""Reference (b): the same rules as DuckDB SQL over the same frames.

The frames are registered (zero copy where DuckDB can scan Arrow-backed columns); every rule is SQL.
The one exception is the documented base62 digest of long trade ids (``client_order_id.trade_key``),
a Python scalar function applied only to the ids that are not raw keys (about 1 %). Semantics are
the package's under the default flags (strong attribution required, heuristics off), checked against
it by the bench. Results come back as key sets (see bench.compare).
"""

from __future__ import annotations

import duckdb

from bench.compare import _r
from bench.generate import NOW, RUNNING_PROFILE, WINDOW_END, WINDOW_START, Dataset, settings
from recon_pipeline.rules import client_order_id as coid

REL = 1e-9


def connect(threads: int = 2) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"threads": threads})
    con.create_function("trade_digest", coid.trade_key, ["VARCHAR"], "VARCHAR", side_effects=False)
    return con


def _ts(t) -> str:
    return f"TIMESTAMPTZ '{t.isoformat()}'"


def run(ds: Dataset, con: duckdb.DuckDBPyConnection | None = None,
        profile_id: str = RUNNING_PROFILE) -> tuple[set, set]:
    own = con is None
    con = con or connect()
    s = settings()
    for name in Dataset.FRAMES:
        con.register(name, getattr(ds, name))
    prof = ds.profiles.loc[ds.profiles["profile_id"] == profile_id].iloc[0]
    P = {"pid": f"'{profile_id}'", "acct": f"'{prof['account']}'", "tag": f"'{prof['sub_tag']}'",
         "now": _ts(NOW), "ws": _ts(WINDOW_START), "we": _ts(WINDOW_END),
         "grace": f"INTERVAL '{int(s.backfill_grace_minutes * 60_000_000)} microseconds'",
         "cutoff": _ts(NOW - __import__("pandas").Timedelta(seconds=s.order_settle_seconds)),
         "pat": "'" + coid.CLIENT_ID_PATTERN + "'", "rel": repr(REL), "dust": repr(float(s.parity_dust_usd)),
         "nconf": str(int(s.parity_confirmations)), "req_tag": "true" if s.parity_require_subtag else "false"}

    def q(sql: str):
        return con.execute(sql.format(**P))

    # ---- attribution context ---------------------------------------------------------------------
    q("""CREATE OR REPLACE TEMP TABLE tags AS SELECT account, sub_tag, any_value(profile_id) AS tag_profile
         FROM profiles WHERE account IS NOT NULL AND sub_tag IS NOT NULL GROUP BY ALL HAVING count(*) = 1""")
    q("""CREATE OR REPLACE TEMP TABLE owner AS SELECT trade_id, first(profile_id) AS owner FROM slices
         WHERE trade_id IS NOT NULL AND profile_id IS NOT NULL GROUP BY trade_id""")
    q("""CREATE OR REPLACE TEMP TABLE skeys AS
         WITH k AS (SELECT trade_id, owner, trade_id AS trade_key FROM owner
                    WHERE regexp_full_match(trade_id, '[A-Za-z0-9_]{{1,20}}')
                    UNION ALL
                    SELECT trade_id, owner, trade_digest(trade_id) FROM
                      (SELECT * FROM owner WHERE NOT regexp_full_match(trade_id, '[A-Za-z0-9_]{{1,20}}')))
         SELECT owner, trade_key, any_value(trade_id) AS coid_trade FROM k GROUP BY ALL HAVING count(*) = 1""")
    q("""CREATE OR REPLACE TEMP TABLE dbe AS SELECT account, exchange_order_id, order_id, profile_id AS db_profile,
           trade_id AS db_trade, CASE role WHEN 'ENTRY' THEN 'e' WHEN 'EXIT' THEN 'x' END AS db_role
         FROM db_orders WHERE exchange_order_id IS NOT NULL
         QUALIFY row_number() OVER (PARTITION BY account, exchange_order_id ORDER BY order_id) = 1""")

    def attribute(keys: str, out: str) -> None:
        """keys: a table of (account, exchange_order_id, cid) -> out with profile, trade, strength, role, unknown."""
        q(f"""CREATE OR REPLACE TEMP TABLE {out} AS
        WITH p AS (
          SELECT k.*, (cid IS NOT NULL AND length(cid) <= 36 AND regexp_matches(cid, {{pat}})) AS det,
                 CASE WHEN strpos(cid, '-') > 1 THEN substr(cid, 1, strpos(cid, '-') - 1) END AS prefix
          FROM {keys} k),
        p2 AS (SELECT p.*, CASE WHEN det THEN regexp_extract(cid, {{pat}}, 3) END AS tkey,
                      CASE WHEN det THEN regexp_extract(cid, {{pat}}, 2) END AS prole FROM p),
        j AS (
          SELECT p2.*, t.tag_profile, sk.coid_trade, d.db_trade, d.db_role, d.db_profile, o.owner AS hint_profile
          FROM p2 LEFT JOIN tags t ON t.account = p2.account AND t.sub_tag = p2.prefix
          LEFT JOIN skeys sk ON sk.owner = t.tag_profile AND sk.trade_key = p2.tkey
          LEFT JOIN dbe d ON d.account = p2.account AND d.exchange_order_id = p2.exchange_order_id
          LEFT JOIN owner o ON o.trade_id = d.db_trade),
        f AS (
          SELECT j.*, det AND tag_profile IS NOT NULL AND coid_trade IS NOT NULL AS is_coid,
                 det AND tag_profile IS NOT NULL AND coid_trade IS NULL AS unknown_det FROM j),
        g AS (
          SELECT f.*, NOT is_coid AND NOT unknown_det AND db_trade IS NOT NULL AND hint_profile IS NOT NULL AS is_hint,
                 NOT is_coid AND NOT unknown_det AND db_trade IS NOT NULL AND hint_profile IS NULL AS unknown_hint
          FROM f)
        SELECT account, exchange_order_id, cid,
          CASE WHEN is_coid OR (tag_profile IS NOT NULL AND NOT is_hint) THEN tag_profile
               WHEN is_hint THEN hint_profile WHEN unknown_hint THEN db_profile END AS profile,
          CASE WHEN is_coid THEN coid_trade WHEN is_hint THEN db_trade END AS trade,
          CASE WHEN is_coid THEN 'client_order_id' WHEN is_hint THEN 'trade_id_hint'
               WHEN tag_profile IS NOT NULL THEN 'sub_tag' ELSE 'none' END AS strength,
          CASE WHEN is_hint THEN db_role WHEN det AND tag_profile IS NOT NULL THEN prole
               ELSE coalesce(db_role, prole) END AS role,
          unknown_det OR unknown_hint AS unknown
        FROM g""")

    findings: set = set()
    corrections: set = set()

    def add_findings(sql: str) -> None:
        findings.update(tuple(r) for r in q(sql).fetchall())

    # ---- order reconciliation ---------------------------------------------------------------------
    q("""CREATE OR REPLACE TEMP TABLE ex AS SELECT * FROM exchange_orders WHERE account = {acct}""")
    q("""CREATE OR REPLACE TEMP TABLE ex_ranked AS SELECT *, row_number() OVER (ORDER BY status <> 'open',
           updated_ts DESC NULLS LAST) AS rk FROM ex""")
    q("""CREATE OR REPLACE TEMP TABLE om AS
         WITH dbo AS (SELECT * FROM db_orders WHERE account = {acct} AND profile_id = {pid}
                        AND status IN ('NEW', 'OPEN', 'PARTIALLY_FILLED')
                        AND NOT (coalesce(created_at >= {cutoff}, false) OR coalesce(updated_at >= {cutoff}, false))),
         byid AS (SELECT * FROM ex_ranked WHERE exchange_order_id IS NOT NULL
                  QUALIFY row_number() OVER (PARTITION BY exchange_order_id ORDER BY rk) = 1),
         bycid AS (SELECT * FROM ex_ranked WHERE client_order_id IS NOT NULL
                  QUALIFY row_number() OVER (PARTITION BY client_order_id ORDER BY rk) = 1)
         SELECT d.*, coalesce(a.exchange_order_id, b.exchange_order_id) AS m_eoid,
                CASE WHEN a.exchange_order_id IS NOT NULL THEN a.status ELSE b.status END AS m_status,
                CASE WHEN a.exchange_order_id IS NOT NULL THEN a.filled_qty ELSE b.filled_qty END AS m_filled,
                CASE WHEN a.exchange_order_id IS NOT NULL THEN a.avg_fill_price ELSE b.avg_fill_price END AS m_px,
                CASE WHEN a.exchange_order_id IS NOT NULL THEN a.created_ts ELSE b.created_ts END AS m_created,
                CASE WHEN a.exchange_order_id IS NOT NULL THEN a.updated_ts ELSE b.updated_ts END AS m_updated
         FROM dbo d LEFT JOIN byid a ON a.exchange_order_id = d.exchange_order_id
         LEFT JOIN bycid b ON a.exchange_order_id IS NULL AND b.client_order_id = d.client_order_id""")
    q("""DELETE FROM om WHERE coalesce(m_created >= {cutoff}, false) OR coalesce(m_updated >= {cutoff}, false)""")
    add_findings("""SELECT 'NO_GO', 'ORDER_NOT_FOUND', symbol, trade_id, order_id, exchange_order_id FROM om
                    WHERE m_eoid IS NULL""")
    add_findings("""SELECT 'ORDER_MISSING_FROM_EXCHANGE',
                      CASE WHEN m_status = 'closed' THEN CASE WHEN coalesce(role, CASE WHEN side = 'buy' THEN 'ENTRY'
                           ELSE 'EXIT' END) = 'EXIT' THEN 'reconcileExitFill' ELSE 'reconcileEntryFill' END
                           ELSE 'reconcileCancel' END, symbol, trade_id, order_id, m_eoid
                    FROM om WHERE m_status IN ('closed', 'canceled', 'expired', 'rejected')""")
    for action, target, status, qty, px in q(
            """SELECT CASE WHEN m_status = 'closed' THEN CASE WHEN coalesce(role, CASE WHEN side = 'buy'
                          THEN 'ENTRY' ELSE 'EXIT' END) = 'EXIT' THEN 'EXIT_FILL' ELSE 'ENTRY_FILL' END
                          ELSE 'CANCEL_ORDER' END, order_id,
                      CASE WHEN m_status = 'closed' THEN 'FILLED' ELSE 'CANCELED' END, coalesce(m_filled, 0.0), m_px
               FROM om WHERE m_status IN ('closed', 'canceled', 'expired', 'rejected')""").fetchall():
        corrections.add((action, target, status, _r(qty), _r(px)))
    q("""CREATE OR REPLACE TEMP TABLE unk_keys AS
         SELECT e.account, e.exchange_order_id, e.client_order_id AS cid, e.symbol FROM ex e
         WHERE e.status = 'open' AND NOT (coalesce(e.created_ts >= {cutoff}, false) OR coalesce(e.updated_ts >= {cutoff}, false))
           AND e.exchange_order_id NOT IN (SELECT exchange_order_id FROM db_orders
                                           WHERE account = {acct} AND exchange_order_id IS NOT NULL)
           AND (e.client_order_id IS NULL OR e.client_order_id NOT IN
                (SELECT client_order_id FROM db_orders WHERE account = {acct} AND client_order_id IS NOT NULL))""")
    attribute("unk_keys", "unk_att")
    add_findings("""SELECT 'ORDER_MISSING_IN_DB', CASE WHEN a.profile = {pid} THEN 'OWN_PROFILE' ELSE 'ACCOUNT_LEVEL' END,
                      k.symbol, a.trade, NULL, a.exchange_order_id
                    FROM unk_att a JOIN unk_keys k USING (account, exchange_order_id)
                    WHERE a.profile = {pid} OR a.profile IS NULL""")

    # ---- EXIT backfill ----------------------------------------------------------------------------
    q("""CREATE OR REPLACE TEMP TABLE mk AS SELECT * FROM markets WHERE account = {acct}""")
    q("""CREATE OR REPLACE TEMP TABLE fkeys AS
         SELECT DISTINCT f.account, f.exchange_order_id, e.client_order_id AS cid
         FROM fills f LEFT JOIN exchange_orders e USING (account, exchange_order_id)
         WHERE f.account = {acct} AND f.ts <= {now}""")
    attribute("fkeys", "fatt")
    q("""CREATE OR REPLACE TEMP TABLE att AS
         SELECT f.*, a.profile, a.trade, a.strength, a.role, a.unknown,
                CASE f.side WHEN 'sell' THEN 'long' WHEN 'buy' THEN 'short' END AS exit_for,
                f.symbol IN (SELECT symbol FROM mk) AS known,
                f.ts >= {ws} AND f.ts < {we} AS in_window
         FROM fills f JOIN fatt a USING (account, exchange_order_id) WHERE f.account = {acct} AND f.ts <= {now}""")
    q("""CREATE OR REPLACE TEMP TABLE my_open AS SELECT * FROM slices
         WHERE account = {acct} AND profile_id = {pid} AND status = 'OPEN'""")
    q("""CREATE OR REPLACE TEMP TABLE grp AS SELECT symbol, side, count(*) AS n, min(trade_id) AS first_trade,
           min(entry_time) AS min_entry FROM my_open GROUP BY ALL""")
    q("""CREATE OR REPLACE TEMP TABLE no_go (trade_id VARCHAR, reason VARCHAR)""")
    # unknown trades
    q("""CREATE OR REPLACE TEMP TABLE unk_o AS SELECT exchange_order_id, first(symbol) AS symbol,
           first(exit_for) AS exit_for, first(role) AS role FROM att WHERE profile = {pid} AND unknown GROUP BY 1""")
    add_findings("SELECT 'NO_GO', 'UNKNOWN_TRADE', symbol, NULL, NULL, exchange_order_id FROM unk_o")
    q("""INSERT INTO no_go SELECT DISTINCT m.trade_id, 'UNKNOWN_TRADE' FROM unk_o u
         JOIN my_open m ON m.symbol = u.symbol AND m.side = u.exit_for WHERE u.role IS DISTINCT FROM 'e'""")
    q("""CREATE OR REPLACE TEMP TABLE live AS SELECT * FROM att
         WHERE role IS DISTINCT FROM 'e' AND NOT unknown AND (profile = {pid} OR profile IS NULL)""")
    add_findings("""SELECT 'NO_GO', 'UNKNOWN_SYMBOL', first(symbol), NULL, NULL, exchange_order_id FROM live
                    WHERE NOT known AND (profile = {pid} OR in_window) GROUP BY exchange_order_id""")
    # sub_tag fills: unique candidate or AMBIGUOUS
    q("""CREATE OR REPLACE TEMP TABLE tag_o AS
         SELECT o.*, g.n, g.first_trade FROM (SELECT exchange_order_id, first(symbol) AS symbol,
                first(exit_for) AS exit_for FROM live WHERE known AND profile = {pid} AND strength = 'sub_tag'
                GROUP BY 1) o
         LEFT JOIN grp g ON g.symbol = o.symbol AND g.side = o.exit_for""")
    add_findings("SELECT 'NO_GO', 'AMBIGUOUS', symbol, NULL, NULL, exchange_order_id FROM tag_o WHERE n >= 2")
    q("""INSERT INTO no_go SELECT DISTINCT m.trade_id, 'AMBIGUOUS' FROM tag_o t
         JOIN my_open m ON m.symbol = t.symbol AND m.side = t.exit_for WHERE t.n >= 2""")
    # untied fills: NO_ATTRIBUTION or UNATTRIBUTED (heuristics off)
    add_findings("""
        WITH o AS (SELECT exchange_order_id, first(symbol) AS symbol, first(exit_for) AS exit_for,
                          min(ts) AS first_ts, max(ts) AS last_ts FROM live WHERE known AND profile IS NULL GROUP BY 1),
        c AS (SELECT o.*, g.n, g.first_trade, coalesce(g.n >= 1 AND o.last_ts >= g.min_entry - {grace}, false) AS has_cand
              FROM o LEFT JOIN grp g ON g.symbol = o.symbol AND g.side = o.exit_for)
        SELECT 'NO_GO', 'NO_ATTRIBUTION', symbol, CASE WHEN n = 1 THEN first_trade END, NULL, exchange_order_id
        FROM c WHERE has_cand
        UNION ALL
        SELECT 'UNATTRIBUTED', 'ACCOUNT_LEVEL', symbol, NULL, NULL, exchange_order_id FROM c
        WHERE NOT has_cand AND last_ts >= {ws} AND first_ts < {we}""")
    # evidence per slice
    q("""CREATE OR REPLACE TEMP TABLE ev AS
         WITH assigned AS (
           SELECT * REPLACE (trade AS trade) FROM live
           WHERE known AND profile = {pid} AND strength IN ('client_order_id', 'trade_id_hint')
           UNION ALL
           SELECT l.* REPLACE (t.first_trade AS trade) FROM live l JOIN tag_o t USING (exchange_order_id)
           WHERE l.known AND l.profile = {pid} AND l.strength = 'sub_tag' AND t.n = 1)
         SELECT a.*, s.symbol AS sl_symbol, s.side AS sl_side, s.status AS sl_status, s.entry_time,
                (s.symbol IS DISTINCT FROM a.symbol OR s.side IS DISTINCT FROM a.exit_for) AS contra,
                coalesce(a.ts < s.entry_time - {grace}, false) AS stale
         FROM assigned a JOIN slices s ON s.trade_id = a.trade AND s.account = {acct} AND s.profile_id = {pid}""")
    add_findings("""SELECT 'NO_GO', 'AMBIGUOUS', arg_min(symbol, fill_id), trade, NULL,
                      string_agg(DISTINCT exchange_order_id, ',' ORDER BY exchange_order_id)
                    FROM ev WHERE contra GROUP BY trade""")
    q("INSERT INTO no_go SELECT DISTINCT trade, 'AMBIGUOUS' FROM ev WHERE contra")
    add_findings("""SELECT 'NO_GO', 'STALE_FILL', arg_min(symbol, fill_id), trade, NULL,
                      string_agg(DISTINCT exchange_order_id, ',' ORDER BY exchange_order_id)
                    FROM ev WHERE NOT contra AND stale AND sl_status = 'OPEN' GROUP BY trade""")
    q("INSERT INTO no_go SELECT DISTINCT trade, 'STALE_FILL' FROM ev WHERE NOT contra AND stale AND sl_status = 'OPEN'")
    q("""CREATE OR REPLACE TEMP TABLE judged AS
         WITH agg AS (SELECT trade, sum(qty) AS total, sum(qty * price) AS notional,
                             string_agg(DISTINCT exchange_order_id, ',' ORDER BY exchange_order_id) AS eoids
                      FROM ev WHERE NOT contra AND NOT stale GROUP BY trade),
         j AS (SELECT s.*, m.amount_precision AS u, coalesce(a.total, 0.0) AS total, a.notional, a.eoids,
                      a.total IS NOT NULL AS has_ev, coalesce(s.exit_qty, 0.0) AS exit0
               FROM slices s LEFT JOIN agg a ON a.trade = s.trade_id
               LEFT JOIN (SELECT DISTINCT ON (symbol) symbol, amount_precision FROM mk) m ON m.symbol = s.symbol
               WHERE s.account = {acct} AND s.profile_id = {pid})
         SELECT *, status = 'OPEN' AND coalesce(total > entry_qty + u * (1 + {rel}), false) AS over,
                coalesce(total > exit0 + u * (0.5 + {rel}), false) AS ahead_of_db,
                coalesce(exit0 > total + u * (0.5 + {rel}), false) AS db_ahead,
                coalesce(entry_qty - total <= u * (1 + {rel}), false) AS closes,
                coalesce(abs(total - exit0) > u * (0.5 + {rel}), false) AS differs
         FROM j""")
    add_findings("""SELECT 'NO_GO', 'OVER_FILL', symbol, trade_id, NULL, eoids FROM judged WHERE over
                    UNION ALL
                    SELECT 'NO_GO', 'DB_AHEAD', symbol, trade_id, NULL, eoids FROM judged
                    WHERE status = 'OPEN' AND NOT over AND db_ahead
                    UNION ALL
                    SELECT 'NO_GO', 'LATE_FILL', symbol, trade_id, NULL, eoids FROM judged
                    WHERE status = 'CLOSED' AND has_ev AND (differs OR exit_source = 'parity_synthetic')
                    UNION ALL
                    SELECT 'MISSING_EXIT', CASE WHEN closes THEN 'EXIT' ELSE 'PARTIAL_EXIT' END, symbol, trade_id,
                           NULL, eoids FROM judged WHERE status = 'OPEN' AND NOT over AND ahead_of_db""")
    q("INSERT INTO no_go SELECT trade_id, 'OVER_FILL' FROM judged WHERE over")
    q("""CREATE OR REPLACE TEMP TABLE backfill AS SELECT trade_id, CASE WHEN closes THEN 'CLOSED' ELSE 'OPEN' END AS
           new_status, total, notional / total AS vwap FROM judged WHERE status = 'OPEN' AND NOT over AND ahead_of_db""")
    for target, status, qty, px in q("SELECT trade_id, new_status, total, vwap FROM backfill").fetchall():
        corrections.add(("BACKFILL_EXIT", target, status, _r(qty), _r(px)))

    # ---- parity -------------------------------------------------------------------------------------
    n_hedge = q("""SELECT count(*) FROM positions WHERE account = {acct} AND position_side IN ('long', 'short')""").fetchone()[0]
    if n_hedge:
        raise NotImplementedError("hedge-mode positions are not generated by the bench")
    q("""CREATE OR REPLACE TEMP TABLE psl AS
         WITH a AS (SELECT s.* REPLACE (CASE WHEN b.trade_id IS NOT NULL THEN b.new_status ELSE s.status END AS status,
                                        CASE WHEN b.trade_id IS NOT NULL THEN b.total ELSE s.exit_qty END AS exit_qty)
                    FROM slices s LEFT JOIN backfill b ON b.trade_id = s.trade_id WHERE s.account = {acct}),
         b AS (SELECT a.*, coalesce(m.market_type, CASE WHEN contains(a.symbol, ':') THEN 'swap' ELSE 'spot' END) AS mt,
                      coalesce(m.base, split_part(a.symbol, '/', 1)) AS base, m.amount_precision AS prec,
                      m.mark_price AS mark, a.entry_qty - coalesce(a.exit_qty, 0.0) AS remaining
               FROM a LEFT JOIN (SELECT DISTINCT ON (symbol) * FROM mk) m ON m.symbol = a.symbol WHERE a.status = 'OPEN')
         SELECT *, coalesce(abs(remaining) < greatest(prec, 1e-12) * (1 - {rel}), false) AS dust,
                mt = 'spot' AND side = 'short' AS spot_short, CASE WHEN mt = 'spot' THEN base ELSE symbol END AS inst
         FROM b""")
    add_findings("""SELECT 'NO_GO', 'SPOT_SHORT', symbol, trade_id, NULL, NULL FROM psl
                    WHERE spot_short AND profile_id = {pid}""")
    q("""CREATE OR REPLACE TEMP TABLE pkeys AS
         WITH d AS (SELECT mt, inst, sum(CASE WHEN dust THEN 0.0 WHEN side = 'long' THEN remaining ELSE -remaining END) AS db,
                           count(*) AS n, count(*) FILTER (WHERE profile_id = {pid}) AS n_mine,
                           avg(mark) AS mark, max(prec) AS prec, bool_or(mark IS NULL) AS mark_missing,
                           bool_or(prec IS NULL) AS prec_missing
                    FROM psl WHERE NOT spot_short GROUP BY ALL),
         e AS (SELECT market_type AS mt, instrument AS inst, sum(CASE position_side WHEN 'long' THEN abs(qty)
                 WHEN 'short' THEN -abs(qty) ELSE qty END) AS ex FROM positions WHERE account = {acct} GROUP BY ALL),
         k AS (SELECT coalesce(d.mt, e.mt) AS mt, coalesce(d.inst, e.inst) AS inst, coalesce(d.db, 0.0) AS db,
                      coalesce(d.n, 0) AS n, coalesce(d.n_mine, 0) AS n_mine, coalesce(e.ex, 0.0) AS ex,
                      d.mt IS NOT NULL AS from_slices, d.mark, d.prec, d.mark_missing, d.prec_missing
               FROM d FULL OUTER JOIN e ON d.mt = e.mt AND d.inst = e.inst),
         k2 AS (SELECT k.mt, k.inst, k.db, k.n, k.n_mine, k.ex,
                       CASE WHEN from_slices THEN k.mark ELSE m.mark_price END AS mark,
                       CASE WHEN from_slices THEN k.prec ELSE m.amount_precision END AS prec,
                       CASE WHEN from_slices THEN k.mark_missing ELSE m.mark_price IS NULL END AS mark_missing,
                       CASE WHEN from_slices THEN k.prec_missing ELSE m.amount_precision IS NULL END AS prec_missing
                FROM k LEFT JOIN (SELECT * FROM mk WHERE market_type = 'swap') m
                  ON NOT k.from_slices AND k.mt = 'swap' AND m.symbol = k.inst
                WHERE k.mt = 'swap' OR k.n > 0),
         k3 AS (SELECT *, coalesce(mark IS NOT NULL AND prec IS NOT NULL AND NOT mark_missing AND NOT prec_missing, false)
                  AS evaluated, greatest(prec, 1e-12) AS p FROM k2)
         SELECT *, evaluated AND (abs(ex) < p * (1 - {rel}) OR abs(ex) * mark < {dust})
                   AND NOT (abs(db) < p * (1 - {rel}) OR abs(db) * mark < {dust}) AS ghost_key,
                   evaluated AND NOT (abs(ex) < p * (1 - {rel}) OR abs(ex) * mark < {dust})
                   AND abs(ex - db) >= p * (1 - {rel}) AS mismatch
         FROM k3""")
    add_findings("""SELECT kind, 'QTY_MISMATCH', inst, NULL, NULL, NULL FROM pkeys,
                      (VALUES ('QTY_MISMATCH'), ('NO_GO')) v(kind) WHERE mismatch AND (n_mine > 0 OR n = 0)""")
    q("""CREATE OR REPLACE TEMP TABLE pv AS
         WITH st AS (SELECT * FROM streaks WHERE profile_id = {pid}),
         v AS (SELECT s.*, k.ghost_key AND NOT s.dust AS ghost, coalesce(st.streak, 0) AS prior,
                      coalesce(st.last_window_start > {ws}, false) AS older,
                      coalesce(st.last_window_start = {ws}, false) AS same
               FROM psl s JOIN pkeys k ON k.mt = s.mt AND k.inst = s.inst
               LEFT JOIN st ON st.trade_id = s.trade_id
               WHERE s.profile_id = {pid} AND NOT s.spot_short AND k.evaluated)
         SELECT *, CASE WHEN ghost AND NOT older AND NOT same THEN prior + 1
                        WHEN NOT ghost AND NOT older THEN 0 ELSE prior END AS streak FROM v""")
    add_findings("""SELECT 'GHOST_SLICE', 'streak=' || streak || '/' || {nconf}, symbol, trade_id, NULL, NULL
                    FROM pv WHERE ghost""")
    for action, target, status, qty, px in q("""
        SELECT CASE WHEN q THEN 'QUARANTINE' ELSE 'SYNTHETIC_EXIT' END, trade_id,
               CASE WHEN q THEN 'QUARANTINED' ELSE 'CLOSED' END, CASE WHEN q THEN NULL ELSE entry_qty END,
               CASE WHEN q THEN NULL WHEN coalesce(exit_qty, 0) > 0 AND exit_price IS NOT NULL AND entry_qty > 0
                    THEN (exit_qty * exit_price + (entry_qty - exit_qty) * mark) / entry_qty ELSE mark END
        FROM (SELECT *, trade_id IN (SELECT trade_id FROM no_go
                                     WHERE reason IN ('OVER_FILL', 'AMBIGUOUS', 'STALE_FILL', 'UNKNOWN_TRADE'))
                        OR ({req_tag} AND NOT coalesce(split_part(entry_client_order_id, '-', 1) = {tag}
                                                       AND contains(entry_client_order_id, '-'), false)) AS q
              FROM pv WHERE ghost AND NOT older AND streak >= {nconf})""").fetchall():
        corrections.add((action, target, status, _r(qty), _r(px)))
    for name in Dataset.FRAMES:
        con.unregister(name)
    if own:
        con.close()
    return findings, corrections
