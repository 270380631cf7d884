-- Trading tables (DESIGN section 9). In production they already exist in the trading system's
-- Postgres (Supabase) and belong to it: IF NOT EXISTS leaves them untouched. For tests and the demo
-- the pipeline creates them. Column names are the public contract. Portable DDL: the same file runs
-- on Postgres and on the embedded SQLite default.

CREATE TABLE IF NOT EXISTS profiles (
    profile_id            text PRIMARY KEY,
    exchange              text NOT NULL,
    account               text NOT NULL,
    market_type           text NOT NULL CHECK (market_type IN ('spot', 'swap')),
    sub_tag               text,
    allocated_capital_usd numeric NOT NULL DEFAULT 0,
    trading_paused        boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS orders (
    order_id          text PRIMARY KEY,
    profile_id        text NOT NULL,
    trade_id          text,
    symbol            text NOT NULL,
    side              text NOT NULL CHECK (side IN ('buy', 'sell')),
    role              text NOT NULL CHECK (role IN ('ENTRY', 'EXIT')),
    order_type        text NOT NULL DEFAULT 'limit',
    qty               numeric NOT NULL,
    price             numeric,
    filled_qty        numeric NOT NULL DEFAULT 0,
    avg_fill_price    numeric,
    status            text NOT NULL CHECK (status IN ('NEW', 'OPEN', 'PARTIALLY_FILLED', 'FILLED',
                                                      'CANCELED', 'REJECTED', 'EXPIRED')),
    exchange_order_id text,
    client_order_id   text NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_profile_status_idx ON orders (profile_id, status);
CREATE INDEX IF NOT EXISTS orders_exchange_order_id_idx ON orders (exchange_order_id);
CREATE INDEX IF NOT EXISTS orders_updated_at_idx ON orders (updated_at);

CREATE TABLE IF NOT EXISTS trade_history (
    trade_id              text PRIMARY KEY,
    profile_id            text NOT NULL,
    symbol                text NOT NULL,
    side                  text NOT NULL CHECK (side IN ('long', 'short')),
    status                text NOT NULL CHECK (status IN ('OPEN', 'CLOSED', 'QUARANTINED')),
    entry_qty             numeric NOT NULL,
    entry_price           numeric NOT NULL,
    entry_time            timestamptz NOT NULL,
    entry_client_order_id text,
    exit_qty              numeric NOT NULL DEFAULT 0,
    exit_price            numeric,
    exit_time             timestamptz,
    exit_source           text CHECK (exit_source IS NULL OR exit_source IN ('exchange', 'backfill', 'parity_synthetic')),
    updated_at            timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS trade_history_profile_status_idx ON trade_history (profile_id, status);
CREATE INDEX IF NOT EXISTS trade_history_updated_at_idx ON trade_history (updated_at);

CREATE TABLE IF NOT EXISTS positions (
    profile_id      text NOT NULL,
    symbol          text NOT NULL,
    qty             numeric NOT NULL,
    avg_entry_price numeric,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (profile_id, symbol)
);

CREATE TABLE IF NOT EXISTS capital_ledger (
    profile_id   text PRIMARY KEY,
    reserved_usd numeric NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS trading_pauses (
    pause_id   text PRIMARY KEY,
    profile_id text NOT NULL,
    source     text NOT NULL,
    reason     text,
    paused_at  timestamptz NOT NULL,
    resumed_at timestamptz,
    resumed_by text
);
CREATE INDEX IF NOT EXISTS trading_pauses_profile_idx ON trading_pauses (profile_id, resumed_at);
