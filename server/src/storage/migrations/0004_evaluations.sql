-- Cohort server schema, version 3: federated evaluations and their record-level charges.

-- One row per evaluation of a model version. `opening` and `result` are the service's JSON
-- (participants and plan at opening; the report or abort reason at closing).
CREATE TABLE evaluations (
    federation    TEXT NOT NULL REFERENCES federations (id),
    number        INTEGER NOT NULL CHECK (number >= 1),
    model_version INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('in_progress', 'completed', 'aborted')),
    opening       TEXT NOT NULL,
    result        TEXT,
    opened_at     INTEGER NOT NULL,
    closed_at     INTEGER,
    PRIMARY KEY (federation, number),
    FOREIGN KEY (federation, model_version) REFERENCES model_versions (federation, version)
) STRICT;
CREATE UNIQUE INDEX one_evaluation_in_flight ON evaluations (federation)
    WHERE state = 'in_progress';

-- Append-only: the Skellam release each asked site was charged, written with its account.
CREATE TABLE evaluation_charges (
    id             INTEGER PRIMARY KEY,
    federation     TEXT NOT NULL,
    evaluation     INTEGER NOT NULL,
    client         TEXT NOT NULL,
    l1_sensitivity REAL NOT NULL CHECK (l1_sensitivity > 0),
    l2_sensitivity REAL NOT NULL CHECK (l2_sensitivity > 0),
    variance       REAL NOT NULL CHECK (variance > 0),
    epsilon_after  REAL NOT NULL,
    delta          REAL NOT NULL,
    recorded_at    INTEGER NOT NULL,
    UNIQUE (federation, evaluation, client),
    FOREIGN KEY (federation, evaluation) REFERENCES evaluations (federation, number),
    FOREIGN KEY (federation, client) REFERENCES clients (federation, id)
) STRICT;
CREATE TRIGGER evaluation_charges_no_update BEFORE UPDATE ON evaluation_charges
    BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER evaluation_charges_no_delete BEFORE DELETE ON evaluation_charges
    BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
