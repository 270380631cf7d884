"""The trading database connection: Postgres in production and tests, an embedded SQLite file for the demo.

SQLAlchemy 2.1 maps a bare ``postgresql://`` URL to psycopg 3, which this project does not ship;
URLs are normalised to ``postgresql+psycopg2://`` so an operator can paste the URL their other tools
use. The password never leaves this module in clear: :func:`redacted` is what logs and metadata show.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url


def normalise_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def redacted(url: str | URL) -> str:
    """The URL with its password hidden, for logs, metadata and error messages."""
    return (url if isinstance(url, URL) else make_url(url)).render_as_string(hide_password=True)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str) -> Engine:
    parsed = normalise_url(url)
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    connect_args = {"application_name": os.environ.get("RECON_DB_APPLICATION_NAME", "recon_pipeline")}
    # A statement run with many parameter sets (a window's findings, corrections, outcomes: tens of
    # rows, below the COPY threshold) goes to the server in pages of statements (psycopg2's
    # execute_batch), not in one round trip per row. Any failing statement still fails the call.
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args,
                            executemany_mode="values_plus_batch")


_shared: dict[str, Engine] = {}


@contextmanager
def shared_engine(url: str) -> Iterator[Engine]:
    """One engine (one connection pool) for ``url`` while inside; :func:`engine_for` hands it out.

    A backfill runs hundreds of windows in one process; an engine per run (the runner's and the
    ``trading_db`` resource's) meant new connections and SQLAlchemy's first-connect queries twice a
    window. Nested use for the same URL reuses the outer engine; the outermost disposes it.
    """
    if url in _shared:
        yield _shared[url]
        return
    engine = _shared[url] = make_engine(url)
    try:
        yield engine
    finally:
        del _shared[url]
        engine.dispose()


def engine_for(url: str) -> tuple[Engine, bool]:
    """The shared engine of ``url`` if one is open (owned by its ``shared_engine`` block), else a new
    one the caller owns (and disposes): ``(engine, owned)``."""
    if url in _shared:
        return _shared[url], False
    return make_engine(url), True
