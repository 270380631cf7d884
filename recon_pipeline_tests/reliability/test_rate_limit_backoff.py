"""The client's answer to rate limiting (fix made with this suite, recon_pipeline/exchange/client.py).

- HTTP 429 is retried after the answer's ``Retry-After`` when that is longer than the back-off;
  a ``Retry-After`` longer than the back-off cap (10 s) fails the request at once: one snapshot does
  not sleep for minutes, the next scheduled run tries again.
- HTTP 418 (Binance's IP ban for ignoring 429s) is never retried: asking again extends the ban.
"""

from __future__ import annotations

import types

import ccxt
import pytest

from recon_pipeline.exchange import client
from recon_pipeline_tests.fixtures.emulator import make_scenario

pytestmark = pytest.mark.slow


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(client, "time", types.SimpleNamespace(sleep=slept.append))
    return slept


def test_429_waits_for_retry_after(emulator, emulated_exchange, sleeps):
    server = emulator(make_scenario())
    ex = emulated_exchange(server, retry_backoff_s=0.01)
    server.add_fault(path="/api/v3/time", mode="http_429", times=1)  # the emulator sends Retry-After: 1
    assert ex.fetch_time() > 0
    assert sleeps == [1.0]
    assert len(server.requests_to("/api/v3/time")) == 2


def test_418_ip_ban_is_not_retried(emulator, emulated_exchange, sleeps):
    server = emulator(make_scenario())
    ex = emulated_exchange(server, retry_backoff_s=0.01)
    server.add_fault(path="/api/v3/time", mode="http_418", times=1)
    with pytest.raises(ccxt.DDoSProtection, match="418"):
        ex.fetch_time()
    assert sleeps == [] and len(server.requests_to("/api/v3/time")) == 1


def test_a_retry_after_beyond_the_cap_fails_at_once(emulator, emulated_exchange, sleeps, monkeypatch):
    server = emulator(make_scenario())
    ex = emulated_exchange(server, retry_backoff_s=0.01)
    monkeypatch.setattr(client, "_retry_after", lambda _headers: 120.0)
    server.add_fault(path="/api/v3/time", mode="http_429", times=1)
    with pytest.raises(ccxt.DDoSProtection, match="429"):
        ex.fetch_time()
    assert sleeps == [] and len(server.requests_to("/api/v3/time")) == 1


def test_other_transient_faults_keep_the_doubling_back_off(emulator, emulated_exchange, sleeps):
    server = emulator(make_scenario())
    ex = emulated_exchange(server, retry_backoff_s=0.01)
    server.add_fault(path="/api/v3/time", mode="http_503", times=3)
    assert ex.fetch_time() > 0
    assert sleeps == [0.01, 0.02, 0.04]


@pytest.mark.parametrize("headers,expected", [
    ({"Retry-After": "2"}, 2.0), ({"retry-after": "0.5"}, 0.5), ({"Retry-After": "soon"}, None), ({}, None),
    (None, None), ({"Retry-After": "-3"}, 0.0),
])
def test_retry_after_parsing(headers, expected):
    assert client._retry_after(headers) == expected
