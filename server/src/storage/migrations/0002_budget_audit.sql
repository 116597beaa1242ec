-- Cohort server schema, version 2: the audit trail of budget operations, and spend that no
-- statement can erase.

-- Append-only: one line per admin operation on a client's budget or enrolment.
CREATE TABLE budget_audit (
    id            INTEGER PRIMARY KEY,
    federation    TEXT NOT NULL,
    client        TEXT NOT NULL,
    action        TEXT NOT NULL CHECK (action IN ('set_budget', 'raise_budget', 'revoke')),
    actor         TEXT NOT NULL CHECK (length(actor) >= 1),
    at            INTEGER NOT NULL,
    old_epsilon   REAL NOT NULL CHECK (old_epsilon >= 0),
    old_delta     REAL NOT NULL,
    new_epsilon   REAL NOT NULL CHECK (new_epsilon >= 0),
    new_delta     REAL NOT NULL,
    spent_epsilon REAL NOT NULL CHECK (spent_epsilon >= 0),
    reason        TEXT,
    FOREIGN KEY (federation, client) REFERENCES clients (federation, id)
) STRICT;
CREATE INDEX budget_audit_by_client ON budget_audit (federation, client, id);
CREATE TRIGGER budget_audit_no_update BEFORE UPDATE ON budget_audit
    BEGIN SELECT RAISE(ABORT, 'the budget audit log is append-only'); END;
CREATE TRIGGER budget_audit_no_delete BEFORE DELETE ON budget_audit
    BEGIN SELECT RAISE(ABORT, 'the budget audit log is append-only'); END;

-- Spent privacy is never refunded: an account row cannot be deleted, and its ε cannot go
-- down at the same δ (composition only ever adds).
CREATE TRIGGER client_accounts_no_delete BEFORE DELETE ON client_accounts
    BEGIN SELECT RAISE(ABORT, 'privacy accounts cannot be deleted: spent epsilon is never erased'); END;
CREATE TRIGGER client_accounts_no_refund BEFORE UPDATE ON client_accounts
    WHEN NEW.delta = OLD.delta AND NEW.epsilon < OLD.epsilon
    BEGIN SELECT RAISE(ABORT, 'spent epsilon cannot decrease'); END;
CREATE TRIGGER federation_accounts_no_delete BEFORE DELETE ON federation_accounts
    BEGIN SELECT RAISE(ABORT, 'privacy accounts cannot be deleted: spent epsilon is never erased'); END;
