"""The pipeline runs as the least-privilege role of DESIGN section 5, and that role can do nothing else.

The role is created by ``sql/roles/least_privilege.sql`` (through ``recon_pipeline.db.roles``, which
runs exactly that file) on the test's own database; roles are cluster-wide, so its name is unique
and it is dropped at teardown.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest
import sqlalchemy as sa

from recon_pipeline.db import roles
from recon_pipeline.db.engine import make_engine
from recon_pipeline.db.migrate import SQL_DIR, upgrade
from recon_pipeline.observability.server import HEALTH_PATH, HealthServer
from recon_pipeline_tests.reliability.conftest import PROFILE, FaultWorld, assert_same_as_reference

pytestmark = pytest.mark.slow

REFUSED = [
    ("delete", "DELETE FROM orders", "permission denied for table orders"),
    ("delete-slices", "DELETE FROM trade_history WHERE status = 'OPEN'", "permission denied for table trade_history"),
    ("truncate", "TRUNCATE positions", "permission denied for table positions"),
    ("drop", "DROP TABLE orders", "must be owner of table orders"),
    ("alter", "ALTER TABLE trade_history ADD COLUMN evil integer", "must be owner of table trade_history"),
    ("create", "CREATE TABLE evil (x integer)", "permission denied for schema public"),
    ("update-other-column", "UPDATE orders SET qty = 0", "permission denied for table orders"),
    ("update-entry", "UPDATE trade_history SET entry_qty = 0", "permission denied for table trade_history"),
    ("insert-order", "INSERT INTO orders (order_id, profile_id, symbol, side, role, qty, status, client_order_id,"
                     " created_at, updated_at) VALUES ('x', 'alpha', 'BTC/USDT', 'buy', 'ENTRY', 1, 'NEW', 'x',"
                     " now(), now())", "permission denied for table orders"),
    ("insert-slice", "INSERT INTO trade_history (trade_id, profile_id, symbol, side, status, entry_qty, entry_price,"
                     " entry_time, updated_at) VALUES ('x', 'alpha', 'BTC/USDT', 'long', 'OPEN', 1, 1, now(), now())",
     "permission denied for table trade_history"),
    ("migration-ledger", "INSERT INTO recon_schema_migrations VALUES ('999', 'x', 'x', now())",
     "permission denied for table recon_schema_migrations"),
]


@pytest.fixture
def lp_role(world):
    role = f"recon_lp_{uuid.uuid4().hex[:10]}"
    assert roles.create_login_role(world.engine, role)
    roles.grant_least_privilege(world.engine, role)
    roles.grant_least_privilege(world.engine, role)  # idempotent: run again after every upgrade
    yield role
    with world.engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"), {"r": role})
        conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
        conn.execute(sa.text(f'DROP ROLE "{role}"'))
        conn.commit()


@pytest.fixture
def lp_world(world, lp_role):
    url = sa.engine.make_url(world.url).set(username=lp_role, password=None).render_as_string(hide_password=False)
    engine = make_engine(url)
    yield FaultWorld(url, engine, world.server, world.instance)
    engine.dispose()


def test_reconcile_and_apply_of_the_demo_as_the_least_privilege_role(lp_world, reference):
    with lp_world.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_user")).scalar() == sa.engine.make_url(lp_world.url).username
        assert not conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()

    for profile in (PROFILE, "alpha", "beta"):  # every correction action of the demo, every write path
        outcome = lp_world.reconcile(profile, apply=True)
        assert outcome.success, outcome.error
        assert outcome.batch["status"] == "APPLIED", outcome.batch
        if profile == PROFILE:
            assert_same_as_reference(lp_world, reference)
    corrections = lp_world.table("recon_corrections")
    assert set(corrections["status"]) == {"APPLIED"}
    assert set(corrections["action"]) >= {"BACKFILL_EXIT", "SYNTHETIC_EXIT", "QUARANTINE", "ENTRY_FILL", "EXIT_FILL",
                                          "CANCEL_ORDER", "PAUSE_TRADING", "RESERVATION_UPDATE", "POSITION_UPDATE"}

    with HealthServer(lp_world.engine) as health:  # health reads everything it needs as the role
        with urllib.request.urlopen(health.url + HEALTH_PATH, timeout=10) as response:
            assert response.status == 200
        request = urllib.request.Request(health.url + HEALTH_PATH, method="POST", data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_the_role_cannot_delete_alter_or_write_other_columns(lp_world, case):
    _, sql, message = case
    counts_before = {t: lp_world.count(t) for t in ("orders", "trade_history", "positions")}
    with lp_world.engine.connect() as conn:
        with pytest.raises(sa.exc.ProgrammingError, match=message):
            conn.execute(sa.text(sql))
        conn.rollback()
    assert {t: lp_world.count(t) for t in counts_before} == counts_before


def test_migrations_are_run_by_the_owner_not_by_the_role(lp_world, world, tmp_path):
    """An up-to-date ``db upgrade`` is a no-op for anyone; a pending one fails for the role."""
    for path in SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "999_reliability_probe.sql").write_text("CREATE TABLE IF NOT EXISTS recon_probe (x integer);\n")
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied for schema public"):
        upgrade(lp_world.engine, sql_dir=tmp_path)
    assert upgrade(world.engine, sql_dir=tmp_path) == ["999_reliability_probe.sql"]  # the owner can


def test_role_names_are_identifiers_never_sql(world):
    for bad in ("x; DROP TABLE orders", 'a"b', "", "1abc", "x" * 64):
        with pytest.raises(ValueError):
            roles.render(world.engine, bad)
    stmts = roles.render(world.engine, "recon_pipeline")
    assert all(':"' not in s for s in stmts) and any('TO "recon_pipeline"' in s for s in stmts)
    assert any(f'ON DATABASE "{world.database}"' in s for s in stmts)


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql not installed")
def test_the_script_runs_under_psql_too(world):
    role = f"recon_lp_{uuid.uuid4().hex[:10]}"
    roles.create_login_role(world.engine, role)
    try:
        done = subprocess.run(["psql", world.url.replace("postgresql+psycopg2://", "postgresql://"), "-v", f"role={role}",
                               "-q", "-f", str(roles.SCRIPT)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        with world.engine.connect() as conn:
            granted = conn.execute(sa.text(
                "SELECT privilege_type FROM information_schema.column_privileges WHERE grantee = :r"
                " AND table_name = 'orders' ORDER BY 1"), {"r": role}).scalars().all()
        assert set(granted) == {"SELECT", "UPDATE"}  # SELECT on every column, UPDATE on four
    finally:
        with world.engine.connect() as conn:
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE "{role}"'))
            conn.commit()
