"""``recon-pipeline db upgrade``: apply the numbered files of ``sql/`` once each, in order.

Each file runs in its own transaction and is recorded in ``recon_schema_migrations`` with a checksum,
so a second upgrade executes nothing. Every statement is ``IF NOT EXISTS``: pointed at a production
database whose trading tables already exist, the upgrade creates only the pipeline's ``recon_``
tables and leaves the trading system's tables as they are (003 only adds read indexes to two of them).

A file whose first line is ``-- dialect: <name>`` (``postgresql``, ``sqlite``) holds statements only
that database understands (a GiST index): on another dialect its statements are skipped, and it is
recorded all the same, so both backends agree on which versions they have.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
_MIGRATION = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_DIALECT = re.compile(r"^--\s*dialect:\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def dialect(self) -> str | None:
        """The only dialect the file's statements are for (``-- dialect:`` first line), or None for all."""
        match = _DIALECT.match(self.sql.split("\n", 1)[0].strip())
        return match.group(1) if match else None

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


def migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    found = []
    for path in sorted(sql_dir.iterdir()):
        match = _MIGRATION.match(path.name)
        if match:
            found.append(Migration(match.group(1), path.name, path.read_text()))
    if not found:
        raise FileNotFoundError(f"no numbered migrations in {sql_dir}")
    return found


def statements(sql: str) -> list[str]:
    """Split a migration into statements (our files have no ';' inside literals)."""
    without_comments = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [stmt.strip() for stmt in without_comments.split(";") if stmt.strip()]


def upgrade(engine: Engine, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when already up to date)."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE IF NOT EXISTS recon_schema_migrations ("
            " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL)"
        ))
        done = {row.version: row.checksum for row in conn.execute(
            sa.text("SELECT version, checksum FROM recon_schema_migrations"))}
    applied = []
    for mig in migrations(sql_dir):
        if mig.version in done:
            continue
        with engine.begin() as conn:
            runs_here = mig.dialect in (None, engine.dialect.name)
            for stmt in statements(mig.sql) if runs_here else []:
                conn.execute(sa.text(stmt))
            conn.execute(
                sa.text("INSERT INTO recon_schema_migrations (version, name, checksum, applied_at)"
                        " VALUES (:v, :n, :c, :t)"),
                {"v": mig.version, "n": mig.name, "c": mig.checksum, "t": datetime.now(UTC)},
            )
        applied.append(mig.name)
    return applied
