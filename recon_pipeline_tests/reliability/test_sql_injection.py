"""SQL-injection strings in profile ids, trade/order ids, symbols and client order ids are plain data.

Rows carrying them are put in the trading tables and in the emulator's scenario, a reconcile + apply
of the injected profile runs through the real job, and:

- every statement the pipeline sends to the test database is captured (SQLAlchemy
  ``before_cursor_execute``): none contains any of the strings (they travel only as bound
  parameters), while the parameters do carry them;
- the strings come back verbatim in recon_runs / recon_findings / recon_corrections and in the
  corrected rows; every table still exists and no trading row disappeared.
"""

from __future__ import annotations

import copy
import json

import pytest
import sqlalchemy as sa

from recon_pipeline.db.seed import seed
from recon_pipeline.demo.run import SCENARIO
from recon_pipeline_tests.integration.conftest import TRADING_TABLES
from recon_pipeline_tests.reliability.conftest import ACCOUNT, RECON_TABLES

pytestmark = pytest.mark.slow

PROFILE = "x'; DROP TABLE orders; --"
TRADE = "T'); DELETE FROM trade_history; --"
ORDER = "O' OR '1'='1"
CLIENT_ID = "' OR '1'='1"
FOREIGN_CLIENT_ID = "x'; DROP TABLE orders; --\"; DROP TABLE positions; --"
SYMBOL = "BTC/USDT'; DROP TABLE positions; --"
INJECTED = (PROFILE, TRADE, ORDER, CLIENT_ID, FOREIGN_CLIENT_ID, SYMBOL)
FRAGMENTS = ("DROP TABLE orders", "DROP TABLE positions", "DELETE FROM trade_history", "OR '1'='1", "'; --")
SWAP = "BTC/USDT:USDT"

TRADING_ROWS = {
    "profiles": [{"profile_id": PROFILE, "exchange": "binance", "account": ACCOUNT, "market_type": "swap",
                  "sub_tag": "inj", "allocated_capital_usd": 1000, "trading_paused": False}],
    "trade_history": [
        {"trade_id": TRADE, "profile_id": PROFILE, "symbol": SWAP, "side": "long", "status": "OPEN",
         "entry_qty": 0.001, "entry_price": 60000, "entry_time": "2026-11-30T09:30:00Z",
         "entry_client_order_id": None, "exit_qty": 0, "updated_at": "2026-11-30T09:30:01Z"},
        {"trade_id": TRADE + "2", "profile_id": PROFILE, "symbol": SYMBOL, "side": "long", "status": "OPEN",
         "entry_qty": 1, "entry_price": 10, "entry_time": "2026-11-30T09:31:00Z",
         "entry_client_order_id": None, "exit_qty": 0, "updated_at": "2026-11-30T09:31:01Z"},
    ],
    "orders": [{"order_id": ORDER, "profile_id": PROFILE, "trade_id": TRADE, "symbol": SWAP, "side": "buy",
                "role": "ENTRY", "order_type": "limit", "qty": 0.001, "price": 55000, "filled_qty": 0,
                "avg_fill_price": None, "status": "OPEN", "exchange_order_id": "8801", "client_order_id": "inj-e-Tinj1",
                "created_at": "2026-11-30T09:10:00Z", "updated_at": "2026-11-30T09:10:00Z"},
               # a client order id that is an injection string (the snapshot validator may refuse it as a
               # BAD_ROW; either way it must come back verbatim, as data)
               {"order_id": ORDER + "2", "profile_id": PROFILE, "trade_id": None, "symbol": SWAP, "side": "buy",
                "role": "ENTRY", "order_type": "limit", "qty": 0.001, "price": 54000, "filled_qty": 0,
                "avg_fill_price": None, "status": "CANCELED", "exchange_order_id": "8803", "client_order_id": CLIENT_ID,
                "created_at": "2026-11-30T09:11:00Z", "updated_at": "2026-11-30T09:12:00Z"}],
    "positions": [{"profile_id": PROFILE, "symbol": SWAP, "qty": 5, "avg_entry_price": 1,
                   "updated_at": "2026-11-30T09:00:00Z"}],
    "capital_ledger": [{"profile_id": PROFILE, "reserved_usd": 12345, "updated_at": "2026-11-30T09:00:00Z"}],
}
EXCHANGE_ORDERS = [
    {"id": "8801", "clientOrderId": "inj-e-Tinj1", "symbol": SWAP, "side": "buy", "type": "limit", "amount": 0.001,
     "price": 55000, "filled": 0, "status": "canceled", "timestamp": "2026-11-30T09:10:00Z",
     "lastUpdateTimestamp": "2026-11-30T09:20:00Z"},
    {"id": "8802", "clientOrderId": FOREIGN_CLIENT_ID, "symbol": SWAP, "side": "buy", "type": "limit",
     "amount": 0.001, "price": 50000, "filled": 0, "status": "open", "timestamp": "2026-11-30T09:40:00Z",
     "lastUpdateTimestamp": "2026-11-30T09:40:00Z"},
]


@pytest.fixture
def captured(world):
    """Every (statement, parameters) the pipeline sends to the test database."""
    seen: list[tuple[str, object]] = []
    database = world.database

    def listen(conn, _cursor, statement, parameters, _context, _executemany):
        if conn.engine.url.database == database:
            seen.append((statement, parameters))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", listen)
    yield seen
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", listen)


def _values(frame, columns) -> set:
    return {v for c in columns if c in frame for v in frame[c].dropna()}


def test_injection_strings_are_handled_as_plain_data(world, request):
    seed(world.engine, TRADING_ROWS)
    scenario = copy.deepcopy(json.loads(SCENARIO.read_text()))
    scenario["accounts"][ACCOUNT]["orders"] += EXCHANGE_ORDERS
    world.server.load(scenario)
    counts = {t: world.count(t) for t in TRADING_TABLES}
    statements = request.getfixturevalue("captured")

    outcome = world.reconcile(PROFILE, apply=True)

    assert outcome.success, outcome.error
    assert outcome.batch["status"] == "APPLIED", outcome.batch
    # Every statement the pipeline sent is free of the strings; they travelled as parameters only.
    assert len(statements) > 20
    bad = [s for s, _ in statements if any(f in s for f in FRAGMENTS) or any(i in s for i in INJECTED)]
    assert bad == []
    params = repr([p for _, p in statements])
    assert all(repr(value)[1:-1] in params for value in (PROFILE, ORDER, TRADE))

    # Tables intact: all exist, no trading row lost.
    with world.engine.connect() as conn:
        for table in (*TRADING_TABLES, *RECON_TABLES):
            assert conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": table}).scalar() is not None, table
    for table, before in counts.items():
        assert world.count(table) >= before, table

    # The strings come back verbatim, as data.
    run = world.rows("SELECT profile_id, status FROM recon_runs WHERE profile_id = :p", p=PROFILE)
    assert run == [{"profile_id": PROFILE, "status": "SUCCESS"}]
    findings = world.table("recon_findings")
    mine = findings[findings["profile_id"] == PROFILE]
    found = _values(mine, ["trade_id", "order_id", "client_order_id", "symbol"])
    assert {FOREIGN_CLIENT_ID, SYMBOL} <= found, sorted(found)
    corrections = world.table("recon_corrections")
    applied = corrections[(corrections["profile_id"] == PROFILE) & (corrections["status"] == "APPLIED")]
    targets = dict(zip(applied["action"], applied["target_id"], strict=False))
    assert targets.get("CANCEL_ORDER") == ORDER
    assert targets.get("RESERVATION_UPDATE") == PROFILE
    assert f"{PROFILE}|{SWAP}" in set(applied["target_id"])

    order = world.rows("SELECT status FROM orders WHERE order_id = :o", o=ORDER)
    assert order == [{"status": "CANCELED"}]
    position = world.rows("SELECT qty FROM positions WHERE profile_id = :p AND symbol = :s", p=PROFILE, s=SWAP)
    assert float(position[0]["qty"]) != 5.0
    ledger = world.rows("SELECT reserved_usd FROM capital_ledger WHERE profile_id = :p", p=PROFILE)
    assert float(ledger[0]["reserved_usd"]) != 12345.0
