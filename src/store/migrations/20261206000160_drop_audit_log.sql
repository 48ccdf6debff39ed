-- The action ledger (`actions`) is the audit trail: every side effect dozor proposed or made,
-- with its rule, entity, mode, attempts, outcome and times, is a row there, and `dozor audit`
-- reads it. `audit_log` was never written or read; the same statements hold for SQLite and
-- PostgreSQL.
DROP INDEX IF EXISTS audit_log_at;
DROP TABLE IF EXISTS audit_log;
