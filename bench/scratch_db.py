"""Scratch Postgres databases of the benchmarks: created migrated, filled by COPY, dropped at the end.

The server is ``RECON_BENCH_PG_URL`` (default the machine's ``postgres@127.0.0.1:5432/test``, whose
role may create databases).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable

import pandas as pd
import psycopg2
import sqlalchemy as sa

ADMIN = os.environ.get("RECON_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def url_of(name: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def drop(name: str) -> None:
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def create(name: str, fill: Callable[[object], None]) -> str:
    """A fresh database ``name`` (dropped first if it exists), migrated with ``recon-pipeline db upgrade``'s
    code, then ``fill(cursor)`` on a psycopg2 cursor, committed and analysed. Returns its URL."""
    from recon_pipeline.db.engine import make_engine
    from recon_pipeline.db.migrate import upgrade

    drop(name)
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = url_of(name)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    with psycopg2.connect(url.replace("+psycopg2", "")) as conn, conn.cursor() as cur:
        fill(cur)
        cur.execute("ANALYZE")
    return url


def copy_frame(cur, table: str, df: pd.DataFrame) -> None:
    """COPY the rows of ``df`` into ``table`` (its columns named by the frame's; NaN/None as NULL)."""
    buf = io.StringIO()
    df.to_csv(buf, index=False, header=False, na_rep="\\N", quoting=csv.QUOTE_MINIMAL)
    buf.seek(0)
    cur.copy_expert(f"COPY {table} ({', '.join(df.columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buf)


def copy_csv_file(cur, table: str, path) -> None:
    """COPY a CSV file with a header line naming the columns into ``table``."""
    with open(path) as fh:
        header = fh.readline().strip()
        cur.copy_expert(f"COPY {table} ({header}) FROM STDIN WITH (FORMAT csv)", fh)
