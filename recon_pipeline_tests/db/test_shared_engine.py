"""A backfill shares one engine (one pool) between its runs; outside one, every caller owns its engine."""

from __future__ import annotations

from recon_pipeline.db.engine import engine_for, shared_engine
from recon_pipeline.resources import TradingDatabase


def test_engine_for_hands_out_the_shared_engine_only_inside_the_block(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    other = f"sqlite:///{tmp_path / 'b.db'}"
    with shared_engine(url) as engine:
        assert engine_for(url) == (engine, False)
        assert TradingDatabase(url=url).engine is engine
        mine, owned = engine_for(other)  # another database: not shared
        assert owned and mine is not engine
        mine.dispose()
        with shared_engine(url) as inner:  # nested: the outer engine, not disposed by the inner block
            assert inner is engine
        assert engine_for(url) == (engine, False)
    later, owned = engine_for(url)
    assert owned and later is not engine
    later.dispose()


def test_the_block_disposes_its_engine(tmp_path, monkeypatch):
    disposed = []
    with shared_engine(f"sqlite:///{tmp_path / 'a.db'}") as engine:
        monkeypatch.setattr(engine, "dispose", lambda: disposed.append(engine))
    assert disposed == [engine]


def test_many_rows_in_one_call_are_written_in_pages_and_one_bad_row_fails_the_call(pg_engine, monkeypatch):
    """Postgres engines send a statement with many parameter sets in pages (psycopg2's execute_batch),
    not one round trip per row; the rows land as before, and a failing row still fails the whole
    call inside its transaction: nothing of it is written."""
    import psycopg2.extras
    import pytest
    import sqlalchemy as sa

    pages = []
    real = psycopg2.extras.execute_batch

    def spy(cur, sql, argslist, page_size=100):
        argslist = list(argslist)
        pages.append(len(argslist))
        return real(cur, sql, argslist, page_size=page_size)

    monkeypatch.setattr(psycopg2.extras, "execute_batch", spy)
    insert = sa.text("INSERT INTO recon_parity_streaks (trade_id, profile_id, streak, updated_at)"
                     " VALUES (:t, 'p', :n, now())")
    with pg_engine.begin() as conn:
        conn.execute(insert, [{"t": f"T{i}", "n": i} for i in range(250)])
    assert pages == [250]
    with pg_engine.connect() as conn:
        assert tuple(conn.execute(sa.text("SELECT count(*), sum(streak) FROM recon_parity_streaks")).one()) == (250, 31125)
    with pytest.raises(sa.exc.IntegrityError), pg_engine.begin() as conn:
        conn.execute(insert, [{"t": "U1", "n": 1}, {"t": "T7", "n": 1}, {"t": "U2", "n": 1}])  # T7 exists
    with pg_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM recon_parity_streaks WHERE trade_id LIKE 'U%'")).scalar() == 0
