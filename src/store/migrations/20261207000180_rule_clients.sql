-- What the client rules (no activity, dormant) last computed about each client, per rule, so a
-- cycle finds the clients whose state changed by the clock through an index instead of
-- rebuilding every client:
--   revenue, class  the client's lifetime revenue and ABC class (a class depends on every
--                   client's revenue; it is recomputed when some revenue changes);
--   class_at        when the class last changed (the clients whose class changed since a rule's
--                   last look are looked at again, even after a crash in between);
--   idle_at         after this moment the client is idle (no activity) by the rule's numbers;
--   dormant_at      after this moment it is dormant (no open deal, no order); NULL: never by
--                   the clock alone.
-- The client is `company:ID` or `contact:ID` (a contact without a company).
CREATE TABLE rule_clients (
    tenant TEXT NOT NULL,
    rule TEXT NOT NULL,
    client TEXT NOT NULL,
    revenue DOUBLE PRECISION NOT NULL DEFAULT 0,
    class TEXT NOT NULL DEFAULT 'C',
    class_at BIGINT,
    idle_at BIGINT,
    dormant_at BIGINT,
    PRIMARY KEY (tenant, rule, client)
);
CREATE INDEX rule_clients_idle ON rule_clients (tenant, rule, idle_at);
CREATE INDEX rule_clients_dormant ON rule_clients (tenant, rule, dormant_at);
CREATE INDEX rule_clients_class_at ON rule_clients (tenant, rule, class_at);
CREATE INDEX rule_clients_revenue ON rule_clients (tenant, rule, revenue);

-- A client's hand-overs in the ledger by index; the tasks to announce and the messages to
-- deliver again by kind, state and age, whatever the size of the ledger.
CREATE INDEX actions_entity ON actions (tenant, entity_kind, entity_id);
CREATE INDEX actions_kind ON actions (tenant, kind, state, created_at);
