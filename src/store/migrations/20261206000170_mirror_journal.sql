-- What changed in the mirror since the rules last looked, so a cycle evaluates what changed and
-- what fell due instead of the whole mirror.
--
-- Every transaction that writes mirror rows takes the tenant's next sequence number and notes,
-- under it, each record it touched and the records whose rules read it (a task's deal, a
-- contact's company, a record's phone numbers, before and after the write).
CREATE TABLE mirror_seq (
    tenant TEXT NOT NULL PRIMARY KEY,
    seq BIGINT NOT NULL
);
CREATE TABLE mirror_journal (
    tenant TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL
);
CREATE INDEX mirror_journal_seq ON mirror_journal (tenant, seq);

-- Where each rule's last complete evaluation stood: the journal position it had seen, the
-- clock it ran at, and a digest of the settings it ran with (changed settings mean a full look).
CREATE TABLE rule_marks (
    tenant TEXT NOT NULL,
    rule TEXT NOT NULL,
    seq BIGINT NOT NULL,
    evaluated_at BIGINT NOT NULL,
    settings TEXT NOT NULL,
    PRIMARY KEY (tenant, rule)
);

-- Rules find a client's deals, a rule's unsettled actions and tasks falling due by index.
CREATE INDEX deals_contact ON deals (tenant, contact_id);
CREATE INDEX deals_company ON deals (tenant, company_id);
CREATE INDEX contacts_company ON contacts (tenant, company_id);
CREATE INDEX actions_rule_state ON actions (tenant, rule, state);

-- The lead a deal was made from, as a column: "a lead without a deal" is then an index look-up.
-- Rows written before this column existed are filled in once by the store on open
-- (`store_upgrades` remembers it), from the record each row keeps.
ALTER TABLE deals ADD COLUMN lead_id TEXT;
CREATE INDEX deals_lead ON deals (tenant, lead_id);
CREATE TABLE store_upgrades (
    name TEXT NOT NULL PRIMARY KEY,
    done_at BIGINT NOT NULL
);
