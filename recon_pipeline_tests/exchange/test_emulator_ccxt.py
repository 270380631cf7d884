"""Real, unmodified ccxt against the emulator: every endpoint parses into the unified structures with
the scenario's values, auth is enforced, and the scenario clock is "now"."""

from __future__ import annotations

import ccxt
import pytest

from recon_pipeline.exchange.scenario import parse_timestamp
from recon_pipeline_tests.fixtures.emulator import make_account, make_order, make_scenario, make_trade

T0 = parse_timestamp("2026-11-30T09:00:00Z")
CLOCK = parse_timestamp("2026-11-30T10:05:00Z")
SPOT, SWAP = "BTC/USDT", "BTC/USDT:USDT"


def _scenario():
    return make_scenario(
        orders=[
            make_order(11, T0, client_order_id="ab-e-t1", status="closed", amount=0.5, filled=0.5,
                       average=60000.0, last_update=T0 + 60_000),
            make_order(12, T0 + 1_800_000, symbol=SWAP, client_order_id="ab-x-t1", side="sell", amount=0.5,
                       price=61000.0, filled=0.2, average=61000.0),
            make_order(13, T0 + 2_000_000, symbol=SWAP, client_order_id="cd-e-t9", type="market", price=None,
                       status="canceled", last_update=T0 + 2_000_500),
        ],
        trades=[
            make_trade(101, 11, T0 + 60_000, amount=0.5, price=60000.0, fee=0.0005, fee_currency="BTC"),
            make_trade(201, 12, T0 + 1_860_000, symbol=SWAP, side="sell", amount=0.2, price=61000.0, fee=1.2),
            make_trade(202, 12, CLOCK + 1, symbol=SWAP, side="sell", amount=0.3, price=61000.0),  # after "now"
        ],
        positions=[
            {"symbol": SWAP, "contracts": 0.2, "side": "short", "entryPrice": 61000.0, "hedged": True},
            {"symbol": SWAP, "contracts": 1.5, "side": "long", "entryPrice": 59000.0, "hedged": True},
        ],
        balances={"BTC": {"free": 0.5, "used": 0.1}, "USDT": {"free": 100.0, "used": 5.0}},
    )


@pytest.fixture
def ex_server(emulator, emulated_exchange):
    server = emulator(_scenario())
    return emulated_exchange(server), server


def test_markets_precision_and_contract_size(ex_server):
    ex, _ = ex_server
    markets = ex.load_markets()
    assert set(markets) == {SPOT, SWAP}
    assert markets[SPOT]["id"] == markets[SWAP]["id"] == "BTCUSDT"
    assert markets[SPOT]["precision"]["amount"] == 0.00001 and markets[SPOT]["precision"]["price"] == 0.01
    assert markets[SWAP]["type"] == "swap" and markets[SWAP]["linear"] and markets[SWAP]["contractSize"] == 1.0
    assert markets[SWAP]["precision"]["amount"] == 0.001


def test_server_time_is_the_scenario_clock(ex_server):
    ex, server = ex_server
    assert ex.fetch_time() == CLOCK
    server.set_clock("2026-12-01T00:00:00Z")
    assert ex.fetch_time() == parse_timestamp("2026-12-01T00:00:00Z")


def test_my_trades_spot_and_swap(ex_server):
    ex, _ = ex_server
    spot = ex.fetch_my_trades(SPOT, T0, 1000, {"until": CLOCK})
    assert [(t["id"], t["order"], t["side"], t["amount"], t["price"], t["fee"]["cost"], t["fee"]["currency"])
            for t in spot] == [("101", "11", "buy", 0.5, 60000.0, 0.0005, "BTC")]
    swap = ex.fetch_my_trades(SWAP, T0, 1000, {"until": CLOCK})
    assert [(t["id"], t["symbol"], t["side"], t["amount"]) for t in swap] == [("201", SWAP, "sell", 0.2)]


def test_fills_after_the_clock_are_invisible_until_the_clock_moves(ex_server):
    ex, server = ex_server
    assert len(ex.fetch_my_trades(SWAP, T0, 1000, {"until": CLOCK + 10})) == 1
    server.set_clock(CLOCK + 1)
    assert [t["id"] for t in ex.fetch_my_trades(SWAP, T0, 1000, {"until": CLOCK + 10})] == ["201", "202"]


def test_orders_open_orders_and_order_by_id(ex_server):
    ex, _ = ex_server
    spot = ex.fetch_orders(SPOT, T0, 1000, {"until": CLOCK})
    assert [(o["id"], o["clientOrderId"], o["status"], o["filled"], o["average"]) for o in spot] == [
        ("11", "ab-e-t1", "closed", 0.5, 60000.0)]
    swap = {o["id"]: o for o in ex.fetch_orders(SWAP, T0, 1000, {"until": CLOCK})}
    assert swap["12"]["status"] == "open" and swap["12"]["filled"] == 0.2 and swap["12"]["symbol"] == SWAP
    assert swap["13"]["status"] == "canceled" and swap["13"]["type"] == "market"
    assert swap["13"]["lastUpdateTimestamp"] == T0 + 2_000_500
    assert [o["id"] for o in ex.fetch_open_orders(SWAP)] == ["12"]
    assert ex.fetch_open_orders(SPOT) == []
    assert ex.fetch_order("11", SPOT)["clientOrderId"] == "ab-e-t1"
    assert ex.fetch_order(None, SWAP, {"origClientOrderId": "cd-e-t9"})["id"] == "13"
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("999", SPOT)


def test_an_order_updated_after_the_clock_is_shown_as_it_was(emulator, emulated_exchange):
    late = make_order(5, T0, status="closed", amount=1.0, filled=1.0, average=60000.0, last_update=CLOCK + 60_000)
    trades = [make_trade(1, 5, T0 + 1000, amount=0.4), make_trade(2, 5, CLOCK + 60_000, amount=0.6)]
    ex = emulated_exchange(emulator(make_scenario(orders=[late], trades=trades)))
    order = ex.fetch_order("5", SPOT)
    assert (order["status"], order["filled"]) == ("open", 0.4)


def test_positions_hedge_and_one_way(emulator, emulated_exchange):
    ex = emulated_exchange(emulator(_scenario()))
    got = sorted((p["symbol"], p["side"], p["contracts"], p["info"]["positionSide"], p["hedged"], p["entryPrice"])
                 for p in ex.fetch_positions([SWAP]))
    assert got == [(SWAP, "long", 1.5, "LONG", True, 59000.0), (SWAP, "short", 0.2, "SHORT", True, 61000.0)]
    one_way = make_scenario(positions=[{"symbol": SWAP, "contracts": 0.7, "side": "short", "entryPrice": 60000.0}])
    ex2 = emulated_exchange(emulator(one_way))
    [pos] = ex2.fetch_positions()
    assert (pos["side"], pos["contracts"], pos["info"]["positionSide"], pos["hedged"]) == ("short", 0.7, "BOTH", False)


def test_flat_account_has_no_positions(emulator, emulated_exchange):
    ex = emulated_exchange(emulator(make_scenario()))
    assert ex.fetch_positions() == []  # the emulator sends a flat BOTH row; ccxt drops it like Binance's


def test_balance_and_mark_prices(ex_server):
    ex, _ = ex_server
    balance = ex.fetch_balance()
    assert (balance["BTC"]["free"], balance["BTC"]["used"], balance["BTC"]["total"]) == (0.5, 0.1, 0.6)
    assert balance["total"]["USDT"] == 105.0
    assert ex.fetch_mark_prices([SWAP])[SWAP]["markPrice"] == 61010.0
    assert ex.fetch_last_prices([SPOT])[SPOT]["price"] == 61000.0


def test_wrong_secret_and_wrong_key_are_rejected(emulator, emulated_exchange, monkeypatch):
    server = emulator(_scenario())
    ex = emulated_exchange(server)
    ex.load_markets()
    ex.secret = "not-the-secret"
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        ex.fetch_balance()
    ex2 = emulated_exchange(server)
    ex2.apiKey = "unknown-key"
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        ex2.fetch_my_trades(SPOT, T0, 10, {"until": CLOCK})


def test_one_server_tells_accounts_apart_by_key(emulator, emulated_exchange):
    accounts = {
        "main": make_account("main", trades=[make_trade(1, 1, T0)]),
        "sub-2": make_account("sub-2", trades=[make_trade(1, 9, T0), make_trade(2, 9, T0 + 1)]),
    }
    server = emulator(make_scenario(accounts))
    assert len(emulated_exchange(server, "main").fetch_my_trades(SPOT, T0, 10, {"until": CLOCK})) == 1
    assert len(emulated_exchange(server, "sub-2").fetch_my_trades(SPOT, T0, 10, {"until": CLOCK})) == 2
    assert {a for a, _m, p, _q in server.request_log if p == "/api/v3/myTrades"} == {"main", "sub-2"}
    assert all("signature" not in params for *_, params in server.request_log)


def test_binance_window_limits_are_enforced(ex_server):
    ex, _ = ex_server
    day = 24 * 3_600_000
    with pytest.raises(ccxt.BadRequest, match="-1127"):
        ex.fetch_my_trades(SPOT, T0 - day - 1, 10, {"until": T0})
    assert ex.fetch_my_trades(SWAP, T0 - 6 * day, 10, {"until": T0}) == []
    with pytest.raises(ccxt.BadRequest, match="-1127"):
        ex.fetch_my_trades(SWAP, T0 - 7 * day - 1, 10, {"until": T0})
    with pytest.raises(ccxt.BadRequest, match="-1128"):
        ex.fetch_my_trades(SPOT, T0, 10, {"fromId": 1})


def test_replacing_the_scenario(ex_server):
    ex, server = ex_server
    server.load(make_scenario(trades=[make_trade(1, 1, T0), make_trade(2, 1, T0 + 5)]))
    assert [t["id"] for t in ex.fetch_my_trades(SPOT, T0, 10, {"until": CLOCK})] == ["1", "2"]


def test_serve_forever_serves_a_scenario_file_with_a_clock_override(tmp_path, monkeypatch):
    """The ``recon-pipeline emulator`` entry point: one process, every account, ``--clock`` wins."""
    import json
    import subprocess
    import sys

    from recon_pipeline.exchange.client import make_exchange

    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(make_scenario(trades=[make_trade(1, 1, T0)])))
    code = ("import sys; from recon_pipeline.exchange.emulator import serve_forever; "
            "serve_forever(sys.argv[1], 0, '2026-12-01T00:00:00Z')")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        account = json.loads(path.read_text())["accounts"]["main"]
        env = {"RECON_EXCHANGE_MAIN_API_KEY": account["apiKey"], "RECON_EXCHANGE_MAIN_SECRET": account["secret"],
               "RECON_EXCHANGE_MAIN_URL": url}
        ex = make_exchange("main", env, enable_rate_limit=False, timeout_ms=2000)
        assert ex.fetch_time() == parse_timestamp("2026-12-01T00:00:00Z")
        assert len(ex.fetch_my_trades(SPOT, T0, 10, {"until": T0 + 1000})) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=5)
