"""make_exchange: credentials and URL from the environment, strict bodies, bounded retries, no leaks."""

from __future__ import annotations

import ccxt
import pytest

from recon_pipeline.exchange.client import StrictBinance, is_retryable, make_exchange
from recon_pipeline.settings import SettingsError
from recon_pipeline_tests.fixtures.emulator import make_scenario

ENV = {"RECON_EXCHANGE_SUB_1_API_KEY": "key-abc", "RECON_EXCHANGE_SUB_1_SECRET": "secret-xyz-123"}


def test_credentials_url_and_options_from_the_environment():
    ex = make_exchange("sub-1", {**ENV, "RECON_EXCHANGE_SUB_1_URL": "http://127.0.0.1:8765/"})
    assert isinstance(ex, StrictBinance) and isinstance(ex, ccxt.binance)
    assert (ex.apiKey, ex.secret, ex.timeout, ex.enableRateLimit) == ("key-abc", "secret-xyz-123", 10_000, True)
    assert ex.urls["api"]["public"] == "http://127.0.0.1:8765/api/v3"
    assert ex.urls["api"]["fapiPrivateV3"] == "http://127.0.0.1:8765/fapi/v3"
    assert all(u.startswith("http://127.0.0.1:8765/") for u in ex.urls["api"].values())
    assert ex.options["fetchMarkets"]["types"] == ["spot", "linear"]
    assert ex.options["fetchCurrencies"] is False and ex.options["fetchMargins"] is False
    assert make_exchange("sub-1", ENV, enable_rate_limit=False).enableRateLimit is False
    assert make_exchange("sub-1", ENV).urls["api"]["public"] == "https://api.binance.com/api/v3"


@pytest.mark.parametrize("missing", ["RECON_EXCHANGE_SUB_1_API_KEY", "RECON_EXCHANGE_SUB_1_SECRET"])
def test_missing_credentials_name_the_variable(missing):
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(SettingsError, match=missing):
        make_exchange("sub-1", env)


@pytest.mark.parametrize(("raw", "argument", "expected"), [
    (None, True, True), (None, False, False), ("false", True, False), ("off", True, False),
    ("true", False, True), (" 1 ", False, True), ("", False, False),
])
def test_rate_limit_per_account_from_the_environment(raw, argument, expected):
    env = ENV if raw is None else {**ENV, "RECON_EXCHANGE_SUB_1_RATE_LIMIT": raw}
    assert make_exchange("sub-1", env, enable_rate_limit=argument).enableRateLimit is expected


def test_a_bad_rate_limit_value_names_the_variable():
    with pytest.raises(SettingsError, match="RECON_EXCHANGE_SUB_1_RATE_LIMIT='sometimes' is not a boolean"):
        make_exchange("sub-1", {**ENV, "RECON_EXCHANGE_SUB_1_RATE_LIMIT": "sometimes"})


@pytest.mark.parametrize("url", ["127.0.0.1:8765", "ftp://h:1", "http://h:1/api", "http://:80", "http://h:99999"])
def test_a_bad_url_names_the_variable(url):
    with pytest.raises(SettingsError, match="RECON_EXCHANGE_SUB_1_URL"):
        make_exchange("sub-1", {**ENV, "RECON_EXCHANGE_SUB_1_URL": url})


def test_repr_and_str_hide_credentials():
    ex = make_exchange("sub-1", ENV)
    for text in (repr(ex), str(ex)):
        assert "secret-xyz-123" not in text and "key-abc" not in text and "sub-1" in text


def test_retry_policy():
    assert all(is_retryable(e("x")) for e in (ccxt.DDoSProtection, ccxt.ExchangeNotAvailable, ccxt.RequestTimeout,
                                                ccxt.NetworkError, ccxt.OperationFailed))
    assert not any(is_retryable(e("x")) for e in (ccxt.BadResponse, ccxt.AuthenticationError, ccxt.OrderNotFound,
                                                    ccxt.BadRequest, ccxt.ExchangeError, ValueError))


def test_non_json_200_is_a_bad_response_and_not_retried(emulator, emulated_exchange):
    server = emulator(make_scenario(faults=[{"path": "/api/v3/time", "mode": "malformed"}]))
    ex = emulated_exchange(server)
    with pytest.raises(ccxt.BadResponse, match="non-JSON"):
        ex.fetch_time()
    assert len(server.requests_to("/api/v3/time")) == 1


def test_retries_are_bounded(emulator, emulated_exchange):
    server = emulator(make_scenario(faults=[{"path": "/api/v3/time", "mode": "http_503"}]))
    ex = emulated_exchange(server, max_retries=4)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        ex.fetch_time()
    assert len(server.requests_to("/api/v3/time")) == 5


def test_fault_after_n_then_k_times(emulator, emulated_exchange):
    server = emulator(make_scenario(faults=[{"path": "/api/v3/time", "mode": "http_429", "after": 2, "times": 2}]))
    ex = emulated_exchange(server, max_retries=0)
    outcomes = []
    for _ in range(5):
        try:
            ex.fetch_time()
            outcomes.append("ok")
        except ccxt.DDoSProtection:
            outcomes.append("429")
    assert outcomes == ["ok", "ok", "429", "429", "ok"]
