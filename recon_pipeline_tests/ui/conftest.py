"""A real Dagster webserver over a real materialized partition, and a real headless Chromium to look at it.

- ``chromium_executable``: Debian's ``/usr/bin/chromium`` (or ``RECON_CHROMIUM``). Missing, the test is
  skipped on a developer machine and fails under ``CI=true``: CI must never pass by skipping the browser.
- ``dagster_home``: a temporary DAGSTER_HOME (telemetry and the first-visit newsletter dialog off).
- ``ui_world``: the demo trading rows seeded into this test's Postgres DB and the loopback exchange
  started (as ``demo_world``), with a persistent Dagster instance in ``dagster_home``.
- ``dagster_webserver``: ``python -m dagster_webserver -w workspace.yaml`` on a free port, started (not
  yet waited for) so it loads its code location while the test materializes; ``.wait_ready()`` polls
  GraphQL ``workspaceOrError`` until the location is LOADED. Killed with its process group at teardown.
- ``browser``: headless Chromium through Playwright, with the flags this machine needs; closed at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from recon_pipeline.db.seed import seed_file
from recon_pipeline.demo.run import SCENARIO, TRADING_DB
from recon_pipeline_tests.integration.conftest import World

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google on this closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
READY_TIMEOUT_S = 60.0
WORKSPACE_QUERY = """{ workspaceOrError { __typename
  ... on Workspace { locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } }
  ... on PythonError { message } } }"""


def pytest_configure(config):
    config.addinivalue_line("markers", "ui: drives a real browser against the Dagster webserver")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _missing(reason: str):
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the UI test must run in CI, not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    explicit = os.environ.get("RECON_CHROMIUM")
    for candidate in [explicit] if explicit else CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    where = f"RECON_CHROMIUM={explicit!r}" if explicit else "chromium on PATH or /usr/bin/chromium"
    _missing(f"no Chromium: {where} not found (apt-get install chromium)")
    raise AssertionError("unreachable")


@pytest.fixture
def browser(chromium_executable):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as pw:
        # Playwright gives every launch a fresh temporary --user-data-dir and removes it on close.
        chromium = pw.chromium.launch(executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def dagster_home(tmp_path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    # nux: the "Join the Dagster community" dialog a fresh instance shows over every page on first visit.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    return home


@pytest.fixture
def ui_world(pg_engine, pg_url, emulator, exchange_env, dagster_home, monkeypatch):
    """``demo_world`` with its Dagster instance in ``dagster_home``, where the webserver will look."""
    from dagster import DagsterInstance

    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("RECON_DATABASE_URL", pg_url)
    seed_file(pg_engine, TRADING_DB)
    server = emulator(SCENARIO)
    exchange_env(server)
    instance = DagsterInstance.from_config(str(dagster_home))
    instance.get_runs(limit=1)  # create the SQLite storages before the webserver opens them too
    try:
        yield World(pg_url, pg_engine, server, instance)
    finally:
        instance.dispose()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(url: str, query: str, timeout: float = 5.0) -> dict:
    request = urllib.request.Request(url + "/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Webserver:
    """``python -m dagster_webserver`` in its own session (so teardown reaches its code server too)."""

    env: dict
    log_path: Path
    process: subprocess.Popen | None = None
    port: int = 0
    ready_after_s: float | None = None
    started_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Webserver:
        self.port = free_port()
        self.started_at = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(self.port),
                 "-w", "workspace.yaml"],
                cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        return self

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, port_retries: int = 3) -> None:
        """Poll ``workspaceOrError`` until every code location is LOADED; fail on a load error.

        A free port can be taken by another process (another xdist worker) before the webserver binds
        it: then the webserver exits at once, and it is started again on a new port.
        """
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if port_retries > 0 and "address already in use" in self.log_tail().lower():
                    port_retries -= 1
                    self.start()
                    continue
                raise RuntimeError(f"dagster-webserver exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                data = _graphql(self.url, WORKSPACE_QUERY)["data"]["workspaceOrError"]
            except (urllib.error.URLError, OSError, KeyError, TypeError, ValueError) as exc:
                last = repr(exc)
            else:
                entries = data.get("locationEntries") or []
                errors = [e["locationOrLoadError"]["message"] for e in entries
                          if (e.get("locationOrLoadError") or {}).get("__typename") == "PythonError"]
                if data.get("__typename") == "PythonError" or errors:
                    raise RuntimeError(f"code location failed to load: {data.get('message') or errors}")
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    self.ready_after_s = time.monotonic() - self.started_at
                    return
                last = json.dumps(data)
            time.sleep(0.25)
        raise TimeoutError(f"webserver not ready after {timeout:.0f} s ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the leader's pid is the group id
        if self.process.poll() is None:
            try:
                os.killpg(pgid, signal.SIGTERM)
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                self.process.wait(timeout=5)
            except ProcessLookupError:
                pass
        try:  # a code server that outlived the webserver still carries the group id
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def dagster_webserver(ui_world, dagster_home, tmp_path):
    """The webserver over ``dagster_home``, launched but not awaited: call ``wait_ready()``."""
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "RECON_DATABASE_URL": ui_world.url,
           "PYTHONUNBUFFERED": "1"}
    server = Webserver(env, tmp_path / "webserver.log")
    try:
        yield server.start()
    finally:
        server.stop()
