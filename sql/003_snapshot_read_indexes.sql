-- dialect: postgresql
-- Indexes the hourly snapshot reads need to stay index scans as the trading tables grow
-- (recon_pipeline/db/read.py; docs/performance.md "Backfill throughput"). Without them each read of
-- a window is a sequential scan of the whole table: 0.3-0.4 s per read at 840k orders / 420k slices,
-- paid twice per window, against 2-20 ms with them. Postgres only (a partial index and a GiST range
-- index); the embedded SQLite demo database is small. On a production database whose trading tables
-- belong to the trading system, the owner runs this upgrade (as every migration); the indexes change
-- no column, row or constraint.

-- DB open orders (status IN ...) OR'ed with orders updated in the window: a BitmapOr of this partial
-- index and orders_updated_at_idx.
CREATE INDEX IF NOT EXISTS orders_open_status_idx ON orders (status)
    WHERE status IN ('NEW', 'OPEN', 'PARTIALLY_FILLED');

-- OPEN slices, and slices alive during the fills span: [entry_time, max(entry_time, exit_time)]
-- overlaps [since, upper] (read_trade_history states the same predicate in this form).
CREATE INDEX IF NOT EXISTS trade_history_open_idx ON trade_history (status) WHERE status = 'OPEN';
CREATE INDEX IF NOT EXISTS trade_history_alive_idx ON trade_history
    USING gist (tstzrange(entry_time, greatest(entry_time, exit_time), '[]'));
