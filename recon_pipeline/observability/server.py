"""``recon-pipeline health --serve``: ``/internal/health`` (JSON) and ``/metrics`` (Prometheus).

A stdlib :class:`ThreadingHTTPServer` (daemon threads, Nagle off). Every request reads the database
afresh, so the answers survive restarts and never go stale in memory. GET and HEAD only: any other
method is 405 with ``Allow: GET, HEAD``; an unknown path is 404. When the database cannot be read the
answer is 503 with a JSON error built from the exception's type and first line, with the URL shown
through :func:`~recon_pipeline.db.engine.redacted` and the password scrubbed from the text, so the
server stays up through a database outage and never leaks the password.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine

from recon_pipeline.db.engine import make_engine, redacted
from recon_pipeline.observability.metrics import make_registry, render
from recon_pipeline.observability.status import Now, health_report, max_age_from_env

log = logging.getLogger(__name__)

HEALTH_PATH = "/internal/health"
METRICS_PATH = "/metrics"
ALLOW = "GET, HEAD"


def safe_error(exc: BaseException, engine: Engine) -> dict:
    """A JSON-able description of a database error that cannot carry the password."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    detail = lines[0] if lines else ""
    password = engine.url.password
    if password:
        detail = detail.replace(str(password), "***")
    return {"error": "database unavailable", "type": type(exc).__name__, "detail": detail[:500],
            "database": redacted(engine.url)}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "recon-pipeline-health"
    disable_nagle_algorithm = True

    def __getattr__(self, name: str):
        # Any method without a do_<METHOD> of its own (POST, PUT, DELETE, PATCH, OPTIONS, ...) is 405.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _method_not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, _json({"error": "method not allowed", "allow": ALLOW}),
                   "application/json", head=False, extra={"Allow": ALLOW})

    def _answer(self, head: bool) -> None:
        path = urlsplit(self.path).path
        if path not in (HEALTH_PATH, METRICS_PATH):
            self._send(HTTPStatus.NOT_FOUND, _json({"error": "not found", "paths": [HEALTH_PATH, METRICS_PATH]}),
                       "application/json", head=head)
            return
        app = self.server
        try:
            if path == HEALTH_PATH:
                body, ctype = _json(health_report(app.engine, now=app.now, max_age_seconds=app.max_age_seconds)), \
                    "application/json"
            else:
                body, ctype = render(app.registry)
        except Exception as exc:  # noqa: BLE001 - any read failure is a 503, the server stays up
            log.warning("health read failed: %s", safe_error(exc, app.engine))
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, _json(safe_error(exc, app.engine)),
                       "application/json", head=head, extra={"Retry-After": "30"})
            return
        self._send(HTTPStatus.OK, body, ctype, head=head)

    def _send(self, code: HTTPStatus, body: bytes, ctype: str, *, head: bool, extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.address_string(), format % args)


def _json(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n").encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, engine: Engine, now: Now, max_age_seconds: int | None):
        self.engine = engine
        self.now = now
        self.max_age_seconds = max_age_seconds
        self.registry = make_registry(engine, now=now, max_age_seconds=max_age_seconds)
        super().__init__(address, _Handler)


class HealthServer:
    """The health/metrics HTTP server; ``port=0`` picks a free port (see :attr:`url`).

    ``now`` (a datetime or a zero-argument callable) replaces the wall clock for staleness, for tests.
    """

    def __init__(self, engine: Engine, host: str = "127.0.0.1", port: int = 0, now: Now = None,
                 max_age_seconds: int | None = None):
        self.engine = engine
        self.max_age_seconds = max_age_from_env() if max_age_seconds is None else int(max_age_seconds)
        self._server = _Server((host, port), engine, now, self.max_age_seconds)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        if self._thread is None:
            # a short poll interval so stop() returns quickly (tests start and stop many servers)
            self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                            name="recon-health", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_on_sigterm() -> None:
    """SIGTERM (what a supervisor or Kubernetes sends) stops the server like Ctrl-C does.

    An explicit handler also overrides an inherited "ignore SIGTERM" disposition, which a parent
    process may have set and which would otherwise make the server unstoppable except by SIGKILL.
    """
    def _interrupt(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)


def serve_forever(url: str, host: str = "127.0.0.1", port: int = 8787, *,
                  max_age_seconds: int | None = None) -> None:
    """Serve until interrupted (the CLI's ``health --serve``)."""
    engine = make_engine(url)
    server = HealthServer(engine, host, port, max_age_seconds=max_age_seconds)
    stop_on_sigterm()
    print(f"recon-pipeline health: serving {server.url}{HEALTH_PATH} and {server.url}{METRICS_PATH} "
          f"(database {redacted(url)})", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        engine.dispose()
