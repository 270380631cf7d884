-- Least-privilege grants for the pipeline's database role (DESIGN section 5). NOT a numbered
-- migration (`recon-pipeline db upgrade` never runs it): an operator runs it, connected as the OWNER
-- of the tables, after the upgrade and again after every later upgrade (it is idempotent):
--
--   psql "$OWNER_URL" -v role=recon_pipeline -f sql/roles/least_privilege.sql
--   python -m recon_pipeline.db.roles --url "$OWNER_URL" --role recon_pipeline   (same statements)
--
-- The login role must exist first (CREATE ROLE recon_pipeline LOGIN; then \password recon_pipeline
-- in psql, so no password is ever written in a file or a statement log). The pipeline then connects
-- as that role (RECON_DATABASE_URL=postgresql://recon_pipeline:...@host/db); migrations stay with
-- the owner: the role has no CREATE on the schema and no DDL right on any table.
--
-- What the role gets, and why (every statement of recon_pipeline/apply/applier.py is covered):
--   * SELECT on the six trading tables (the DB half of every snapshot);
--   * UPDATE only on the columns corrections write: trade_history exit columns and status, orders
--     status/filled_qty/avg_fill_price, profiles.trading_paused, trading_pauses resumed_at/_by,
--     capital_ledger reserved_usd, positions qty/avg_entry_price (and each table's updated_at);
--   * INSERT on trading_pauses, capital_ledger and positions (rows the pipeline creates);
--   * SELECT, INSERT, UPDATE, DELETE on its own recon_ tables; SELECT on recon_schema_migrations;
--   * TEMPORARY on the database: the applier stages each step's corrections in a temporary table;
--   * nothing else: no DELETE, TRUNCATE, REFERENCES or TRIGGER on trading tables, no DDL.
-- Only :"role" (the -v variable) and :"DBNAME" (set by psql itself) are substituted.
\set ON_ERROR_STOP on

-- Start from nothing (table-level REVOKE also revokes the column-level grants of earlier runs).
REVOKE ALL ON profiles, orders, trade_history, positions, capital_ledger, trading_pauses FROM :"role";
REVOKE ALL ON recon_runs, recon_findings, recon_batches, recon_corrections, recon_parity_streaks, recon_locks,
    recon_schema_migrations FROM :"role";
REVOKE CREATE ON SCHEMA public FROM :"role";

GRANT USAGE ON SCHEMA public TO :"role";
GRANT TEMPORARY ON DATABASE :"DBNAME" TO :"role";

-- Trading tables: read everything, write only what a correction writes.
GRANT SELECT ON profiles, orders, trade_history, positions, capital_ledger, trading_pauses TO :"role";
GRANT UPDATE (status, exit_qty, exit_price, exit_time, exit_source, updated_at) ON trade_history TO :"role";
GRANT UPDATE (status, filled_qty, avg_fill_price, updated_at) ON orders TO :"role";
GRANT UPDATE (trading_paused) ON profiles TO :"role";
GRANT INSERT ON trading_pauses TO :"role";
GRANT UPDATE (resumed_at, resumed_by) ON trading_pauses TO :"role";
GRANT INSERT ON capital_ledger TO :"role";
GRANT UPDATE (reserved_usd, updated_at) ON capital_ledger TO :"role";
GRANT INSERT ON positions TO :"role";
GRANT UPDATE (qty, avg_entry_price, updated_at) ON positions TO :"role";

-- The pipeline's own tables.
GRANT SELECT, INSERT, UPDATE, DELETE ON recon_runs, recon_findings, recon_batches, recon_corrections,
    recon_parity_streaks, recon_locks TO :"role";
GRANT SELECT ON recon_schema_migrations TO :"role";
