-- The pipeline's own state (DESIGN section 9), prefixed recon_. JSON documents are stored as text so
-- the same DDL runs on Postgres and SQLite; they are canonical JSON written by the pipeline.

-- One row per (window, profile) evaluation, the latest attempt; health and the watchdog read it.
CREATE TABLE IF NOT EXISTS recon_runs (
    window_start      timestamptz NOT NULL,
    profile_id        text NOT NULL,
    run_id            text,
    status            text NOT NULL,          -- SUCCESS | FAILED | SKIPPED
    live              boolean NOT NULL DEFAULT false,
    evaluated_at      timestamptz,            -- exchange time of the snapshot ("now")
    finished_at       timestamptz NOT NULL,   -- wall clock, for "last run" in health
    parity_evaluated  boolean NOT NULL DEFAULT false,
    clean             boolean NOT NULL DEFAULT false,
    mismatch_count    integer NOT NULL DEFAULT 0,
    missing_from_exchange integer NOT NULL DEFAULT 0,
    missing_in_db     integer NOT NULL DEFAULT 0,
    no_go_count       integer NOT NULL DEFAULT 0,
    correction_count  integer NOT NULL DEFAULT 0,
    health            text NOT NULL DEFAULT '{}',
    error             text,
    PRIMARY KEY (window_start, profile_id)
);
CREATE INDEX IF NOT EXISTS recon_runs_profile_idx ON recon_runs (profile_id, window_start);

CREATE TABLE IF NOT EXISTS recon_findings (
    window_start      timestamptz NOT NULL,
    profile_id        text NOT NULL,
    seq               integer NOT NULL,
    account           text,
    kind              text NOT NULL,
    symbol            text,
    trade_id          text,
    order_id          text,
    exchange_order_id text,
    client_order_id   text,
    fill_ids          text,
    attribution       text,
    qty_db            numeric,
    qty_exchange      numeric,
    notional_usd      numeric,
    reason            text,
    detail            text,
    PRIMARY KEY (window_start, profile_id, seq)
);
CREATE INDEX IF NOT EXISTS recon_findings_kind_idx ON recon_findings (profile_id, kind);

CREATE TABLE IF NOT EXISTS recon_batches (
    batch_id       text PRIMARY KEY,
    window_start   timestamptz NOT NULL,
    profile_id     text NOT NULL,
    run_id         text,
    status         text NOT NULL CHECK (status IN ('PENDING', 'APPLIED', 'DRY_RUN', 'BLOCKED', 'EMPTY')),
    n_corrections  integer NOT NULL DEFAULT 0,
    validation     text NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL,
    applied_at     timestamptz,
    apply_run_id   text
);
CREATE INDEX IF NOT EXISTS recon_batches_pending_idx ON recon_batches (profile_id, status, window_start);

CREATE TABLE IF NOT EXISTS recon_corrections (
    batch_id        text NOT NULL,
    correction_id   text NOT NULL,
    window_start    timestamptz NOT NULL,
    profile_id      text NOT NULL,
    action          text NOT NULL,
    target_table    text NOT NULL,
    target_id       text NOT NULL,
    expected_state  text NOT NULL,
    new_state       text NOT NULL,
    evidence        text NOT NULL,
    attribution     text,
    notional_usd    numeric,
    status          text NOT NULL CHECK (status IN ('PENDING', 'APPLIED', 'STALE', 'DRY_RUN', 'BLOCKED')),
    applied_at      timestamptz,
    outcome         text,
    PRIMARY KEY (batch_id, correction_id)
);
-- Exactly once: a correction id can be APPLIED in one row only, whatever batch carried it.
CREATE UNIQUE INDEX IF NOT EXISTS recon_corrections_applied_once
    ON recon_corrections (correction_id) WHERE status = 'APPLIED';

-- The parity heartbeat's memory: consecutive ghost checks per slice.
CREATE TABLE IF NOT EXISTS recon_parity_streaks (
    trade_id          text PRIMARY KEY,
    profile_id        text NOT NULL,
    streak            integer NOT NULL,
    first_seen_window timestamptz,
    last_window_start timestamptz,
    updated_at        timestamptz NOT NULL
);

-- Lease lock for the embedded SQLite default (Postgres uses pg_advisory_xact_lock).
CREATE TABLE IF NOT EXISTS recon_locks (
    profile_id  text PRIMARY KEY,
    holder      text NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
