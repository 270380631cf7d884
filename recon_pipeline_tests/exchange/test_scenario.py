"""The scenario loader: pasted ccxt output loads; every defect is a ScenarioError naming its field."""

from __future__ import annotations

import json

import pytest

from recon_pipeline.exchange.scenario import ScenarioError, load_scenario
from recon_pipeline_tests.fixtures.emulator import make_order, make_scenario, make_trade


def test_loads_ccxt_output_with_extra_fields_and_iso_or_ms_timestamps(tmp_path):
    trade = make_trade(7, 3, "2026-11-30T09:00:00.123Z")
    trade.update({"info": {"id": 7, "qty": "0.01"}, "datetime": "2026-11-30T09:00:00.123Z", "cost": 600.0,
                  "takerOrMaker": "maker", "fees": []})
    order = make_order(3, 1796029200000, client_order_id="ab-e-t1", status="closed", filled=0.01, average=60000.0)
    order.update({"info": {"orderId": 3}, "datetime": "x", "remaining": 0, "trades": []})
    path = tmp_path / "s.json"
    path.write_text(json.dumps(make_scenario(trades=[trade], orders=[order], clock=1796033100000)))
    scenario = load_scenario(path)
    account = scenario.accounts["main"]
    assert scenario.clock_ms == 1796033100000
    assert account.trades[0].timestamp == 1796029200123 and account.trades[0].taker_or_maker == "maker"
    assert account.orders[0].client_order_id == "ab-e-t1" and account.orders[0].timestamp == 1796029200000
    assert account.markets["BTC/USDT:USDT"].market_id == "BTCUSDT" == account.markets["BTC/USDT"].market_id


def test_secret_is_not_in_the_account_repr():
    account = load_scenario(make_scenario()).accounts["main"]
    assert account.secret not in repr(account)


def test_not_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ScenarioError, match=r"broken\.json.*not JSON"):
        load_scenario(path)


def test_missing_clock():
    data = make_scenario()
    del data["clock"]
    with pytest.raises(ScenarioError, match="clock"):
        load_scenario(data)


@pytest.mark.parametrize("field", ["apiKey", "secret"])
def test_account_without_credentials_names_account_and_field(field):
    data = make_scenario()
    del data["accounts"]["main"][field]
    with pytest.raises(ScenarioError, match=rf"accounts\.main.*'{field}'"):
        load_scenario(data)


def test_trade_symbol_must_be_a_market_of_the_account():
    data = make_scenario(trades=[make_trade(1, 1, 1796029200000, symbol="ETH/USDT")])
    with pytest.raises(ScenarioError, match=r"accounts\.main\.trades\[0\].*ETH/USDT"):
        load_scenario(data)


def test_bad_timestamp_names_the_field():
    data = make_scenario(orders=[make_order(1, "yesterday-ish")])
    with pytest.raises(ScenarioError, match=r"orders\[0\].*'timestamp'.*yesterday-ish"):
        load_scenario(data)


def test_bad_clock():
    with pytest.raises(ScenarioError, match="clock"):
        load_scenario(make_scenario(clock="30/11/2026"))


def test_ids_must_be_integers_like_binance():
    with pytest.raises(ScenarioError, match=r"trades\[0\].*'id'"):
        load_scenario(make_scenario(trades=[make_trade("abc", 1, 1796029200000)]))


def test_trade_ids_must_increase_with_time():
    trades = [make_trade(1, 1, 1796029200001), make_trade(2, 1, 1796029200000)]
    with pytest.raises(ScenarioError, match="increase with time"):
        load_scenario(make_scenario(trades=trades))


def test_unknown_fault_mode_and_unknown_fault_account():
    with pytest.raises(ScenarioError, match=r"faults\[0\].*'mode'"):
        load_scenario(make_scenario(faults=[{"path": "/api/v3/myTrades", "mode": "explode"}]))
    with pytest.raises(ScenarioError, match=r"faults\[0\].*'ghost'"):
        load_scenario(make_scenario(faults=[{"account": "ghost", "path": "/api/v3/myTrades", "mode": "reset"}]))


def test_duplicate_api_key_across_accounts():
    from recon_pipeline_tests.fixtures.emulator import make_account

    data = make_scenario({"a": make_account("a", api_key="same"), "b": make_account("b", api_key="same")})
    with pytest.raises(ScenarioError, match=r"accounts\.b.*apiKey"):
        load_scenario(data)
