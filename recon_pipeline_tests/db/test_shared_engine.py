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
