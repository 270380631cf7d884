"""The least-privilege database role of DESIGN section 5, applied from Python.

``sql/roles/least_privilege.sql`` is the one source of the grants; an operator runs it with psql
(``psql "$OWNER_URL" -v role=recon_pipeline -f sql/roles/least_privilege.sql``) or with this module
(``python -m recon_pipeline.db.roles --url "$OWNER_URL" --role recon_pipeline``), connected as the
owner of the tables. Both substitute only ``:"role"`` and ``:"DBNAME"``, always as quoted
identifiers (the role name is never pasted into SQL unquoted), and skip psql meta-commands.

Migrations (``recon-pipeline db upgrade``) are run by the owner, never by this role.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recon_pipeline.db.engine import make_engine, redacted
from recon_pipeline.db.migrate import SQL_DIR, statements

SCRIPT = SQL_DIR / "roles" / "least_privilege.sql"
_VARIABLE = re.compile(r':"(role|DBNAME)"')
_ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def _check_role(role: str) -> str:
    if not _ROLE_NAME.match(role or ""):
        raise ValueError(f"role name {role!r}: expected 1-63 characters of letters, digits, '_' or '$', "
                         "not starting with a digit")
    return role


def render(engine: Engine, role: str, script: Path = SCRIPT) -> list[str]:
    """The script's statements with ``:"role"`` and ``:"DBNAME"`` replaced by quoted identifiers."""
    _check_role(role)
    if engine.dialect.name != "postgresql":
        raise ValueError("database roles exist on Postgres only (the embedded SQLite default has none)")
    quote = engine.dialect.identifier_preparer.quote_identifier
    values = {"role": quote(role), "DBNAME": quote(engine.url.database or "")}
    lines = [line for line in script.read_text().splitlines() if not line.lstrip().startswith("\\")]
    return [_VARIABLE.sub(lambda m: values[m.group(1)], stmt) for stmt in statements("\n".join(lines))]


def role_exists(engine: Engine, role: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first())


def create_login_role(engine: Engine, role: str) -> bool:
    """``CREATE ROLE <role> LOGIN`` (no password: set one with psql's ``\\password``). False if it exists."""
    _check_role(role)
    if role_exists(engine, role):
        return False
    quoted = engine.dialect.identifier_preparer.quote_identifier(role)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {quoted} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT"))
    return True


def grant_least_privilege(engine: Engine, role: str) -> list[str]:
    """Apply the script for ``role`` in one transaction (as the tables' owner); returns the statements."""
    stmts = render(engine, role)
    with engine.begin() as conn:
        for stmt in stmts:
            conn.execute(sa.text(stmt))
    return stmts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recon_pipeline.db.roles",
        description="Grant the pipeline's least-privilege role its rights (run as the owner of the tables).")
    parser.add_argument("--url", required=True, help="owner's SQLAlchemy/Postgres URL of the trading database")
    parser.add_argument("--role", required=True, help="the pipeline's login role")
    parser.add_argument("--create", action="store_true", help="create the login role first if it is missing")
    parser.add_argument("--print", dest="print_only", action="store_true", help="print the statements only")
    args = parser.parse_args(argv)
    engine = make_engine(args.url)
    try:
        if args.print_only:
            print(";\n".join(render(engine, args.role)) + ";")
            return 0
        if args.create and create_login_role(engine, args.role):
            print(f"created login role {args.role} (set its password with psql: \\password {args.role})")
        grant_least_privilege(engine, args.role)
        print(f"granted least privilege to {args.role} on {redacted(engine.url)}")
        return 0
    except (ValueError, sa.exc.SQLAlchemyError) as exc:
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()


if __name__ == "__main__":  # pragma: no cover - the operator's entry point
    sys.exit(main())
