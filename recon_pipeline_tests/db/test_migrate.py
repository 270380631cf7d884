"""db upgrade creates every table of the contract, on Postgres and SQLite, and a second run is a no-op."""

import pandas as pd
import pytest
import sqlalchemy as sa

from recon_pipeline.db.engine import make_engine
from recon_pipeline.db.migrate import upgrade
from recon_pipeline.db.seed import TABLE_COLUMNS

CONTRACT_TABLES = {"profiles", "orders", "trade_history", "positions", "capital_ledger", "trading_pauses",
                   "recon_runs", "recon_findings", "recon_batches", "recon_corrections",
                   "recon_parity_streaks", "recon_locks", "recon_schema_migrations"}


def _schema_fingerprint(engine) -> dict:
    insp = sa.inspect(engine)
    return {t: sorted((c["name"], str(c["type"])) for c in insp.get_columns(t)) for t in insp.get_table_names()}


@pytest.fixture(params=["postgres", "sqlite"])
def fresh_engine(request, tmp_path):
    if request.param == "postgres":
        url = request.getfixturevalue("empty_pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'trading.db'}"
    engine = make_engine(url)
    yield engine
    engine.dispose()


def test_upgrade_creates_contract_tables_and_is_idempotent(fresh_engine):
    first = upgrade(fresh_engine)
    assert first == ["001_trading_tables.sql", "002_recon_tables.sql", "003_snapshot_read_indexes.sql"]
    before = _schema_fingerprint(fresh_engine)
    assert CONTRACT_TABLES <= set(before)
    with fresh_engine.connect() as conn:
        applied_before = pd.read_sql("SELECT * FROM recon_schema_migrations ORDER BY version", conn)

    assert upgrade(fresh_engine) == []

    assert _schema_fingerprint(fresh_engine) == before
    with fresh_engine.connect() as conn:
        applied_after = pd.read_sql("SELECT * FROM recon_schema_migrations ORDER BY version", conn)
    pd.testing.assert_frame_equal(applied_before, applied_after)


def test_contract_columns_exist(fresh_engine):
    upgrade(fresh_engine)
    insp = sa.inspect(fresh_engine)
    for table, cols in TABLE_COLUMNS.items():
        have = {c["name"] for c in insp.get_columns(table)}
        assert set(cols) <= have, (table, set(cols) - have)


def test_upgrade_leaves_existing_trading_tables_alone(empty_pg_url):
    """Production: the trading tables exist (with rows) before the pipeline's first upgrade."""
    engine = make_engine(empty_pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE profiles (profile_id text primary key, exchange text, account text,"
                             " market_type text, sub_tag text, allocated_capital_usd numeric,"
                             " trading_paused boolean, extra_col text)"))
        conn.execute(sa.text("INSERT INTO profiles VALUES ('p1','binance','a','spot','p1',100,false,'keep')"))
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT profile_id, extra_col FROM profiles")).fetchall()
    assert rows == [("p1", "keep")]
    engine.dispose()
