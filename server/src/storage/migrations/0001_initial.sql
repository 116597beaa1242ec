-- Cohort server schema, version 1. Times are Unix milliseconds; JSON columns are validated
-- by the server on read. STRICT tables make SQLite check column types.

CREATE TABLE federations (
    id          TEXT PRIMARY KEY,
    model_spec  TEXT NOT NULL,
    config      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('active', 'stopped')),
    stop_reason TEXT,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE clients (
    federation     TEXT NOT NULL REFERENCES federations (id),
    id             TEXT NOT NULL,
    fingerprint    TEXT,
    enrolment      TEXT NOT NULL CHECK (enrolment IN ('invited', 'enrolled')),
    token_sha256   TEXT,
    revoked        INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    last_seen      INTEGER,
    budget_epsilon REAL NOT NULL CHECK (budget_epsilon >= 0),
    budget_delta   REAL NOT NULL CHECK (budget_delta >= 0 AND budget_delta < 1),
    sample_count   INTEGER CHECK (sample_count >= 0),
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (federation, id),
    UNIQUE (federation, fingerprint)
) STRICT;
CREATE UNIQUE INDEX clients_by_token ON clients (federation, token_sha256)
    WHERE token_sha256 IS NOT NULL;

CREATE TABLE model_versions (
    federation     TEXT NOT NULL REFERENCES federations (id),
    version        INTEGER NOT NULL CHECK (version >= 0),
    weights_sha256 TEXT NOT NULL,
    weights_size   INTEGER NOT NULL,
    state_sha256   TEXT,
    state_size     INTEGER,
    round          INTEGER,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (federation, version)
) STRICT;

CREATE TABLE rounds (
    federation     TEXT NOT NULL REFERENCES federations (id),
    number         INTEGER NOT NULL CHECK (number >= 1),
    base_version   INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('in_progress', 'completed', 'aborted')),
    stage          TEXT,
    result_version INTEGER,
    abort_reason   TEXT,
    metrics        TEXT NOT NULL DEFAULT '{}',
    opened_at      INTEGER NOT NULL,
    closed_at      INTEGER,
    PRIMARY KEY (federation, number),
    FOREIGN KEY (federation, base_version) REFERENCES model_versions (federation, version)
) STRICT;
-- At most one round in flight per federation, enforced by the database itself.
CREATE UNIQUE INDEX one_round_in_flight ON rounds (federation) WHERE state = 'in_progress';

CREATE TABLE round_participants (
    federation TEXT NOT NULL,
    round      INTEGER NOT NULL,
    client     TEXT NOT NULL,
    PRIMARY KEY (federation, round, client),
    FOREIGN KEY (federation, round) REFERENCES rounds (federation, number),
    FOREIGN KEY (federation, client) REFERENCES clients (federation, id)
) STRICT;

-- Composable accountant state (record-level, per client).
CREATE TABLE client_accounts (
    federation TEXT NOT NULL,
    client     TEXT NOT NULL,
    accountant TEXT NOT NULL,
    epsilon    REAL NOT NULL,
    delta      REAL NOT NULL,
    revision   INTEGER NOT NULL CHECK (revision >= 1),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (federation, client),
    FOREIGN KEY (federation, client) REFERENCES clients (federation, id)
) STRICT;

-- Composable accountant state (client-level, per federation).
CREATE TABLE federation_accounts (
    federation TEXT PRIMARY KEY REFERENCES federations (id),
    accountant TEXT NOT NULL,
    epsilon    REAL NOT NULL,
    delta      REAL NOT NULL,
    revision   INTEGER NOT NULL CHECK (revision >= 1),
    updated_at INTEGER NOT NULL
) STRICT;

-- Append-only: one line per (round, subject); client NULL means the federation itself.
CREATE TABLE ledger_entries (
    id               INTEGER PRIMARY KEY,
    federation       TEXT NOT NULL,
    round            INTEGER NOT NULL,
    client           TEXT,
    sample_rate      REAL NOT NULL CHECK (sample_rate > 0 AND sample_rate <= 1),
    noise_multiplier REAL NOT NULL CHECK (noise_multiplier > 0),
    steps            INTEGER NOT NULL CHECK (steps >= 1),
    sample_count     INTEGER,
    epsilon_after    REAL NOT NULL,
    delta            REAL NOT NULL,
    recorded_at      INTEGER NOT NULL,
    FOREIGN KEY (federation, round) REFERENCES rounds (federation, number)
) STRICT;
CREATE UNIQUE INDEX ledger_once ON ledger_entries (federation, round, coalesce(client, ''));
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
    BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
    BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
