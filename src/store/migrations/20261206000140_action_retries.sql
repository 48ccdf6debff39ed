-- Bounded retries of actions. `retry_at` (unix seconds) is the earliest time an action that
-- failed transiently (or panicked) is tried again, on a doubling backoff; `budget_from` is the
-- attempt count at which its current retry budget started (`dozor retry` moves it, so the
-- attempts made so far still count for crash reconciliation); `dead_report` is the ledger key
-- of the ops message that reported the action parked as `dead`.
ALTER TABLE actions ADD COLUMN retry_at BIGINT;
ALTER TABLE actions ADD COLUMN budget_from BIGINT NOT NULL DEFAULT 0;
ALTER TABLE actions ADD COLUMN dead_report TEXT;
CREATE INDEX actions_dead ON actions (tenant, state, dead_report);
