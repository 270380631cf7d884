"""The scaling tests need the machine's Redis (Celery broker) besides Postgres: fail loudly without it."""

from __future__ import annotations

import socket

import pytest

from recon_pipeline.executors import DEFAULT_BROKER


def _redis_answers(host: str = "127.0.0.1", port: int = 6379, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_broker() -> str:
    if not _redis_answers():
        pytest.fail("Redis is not answering on 127.0.0.1:6379 (the Celery broker); start it: redis-server "
                    "--daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no")
    return DEFAULT_BROKER
