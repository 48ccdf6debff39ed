-- dozor schema, portable between SQLite and PostgreSQL: only TEXT, BIGINT, DOUBLE PRECISION and
-- BOOLEAN columns, natural primary keys, times as UTC unix seconds.
-- Mirror tables keep a few columns to query on plus `data`, the whole normalised record as JSON.

CREATE TABLE users (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    extension TEXT,
    active BOOLEAN NOT NULL,
    data TEXT NOT NULL,
    synced_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE stages (
    tenant TEXT NOT NULL,
    pipeline_id TEXT NOT NULL,
    id TEXT NOT NULL,
    pipeline_name TEXT NOT NULL,
    name TEXT NOT NULL,
    sort BIGINT NOT NULL,
    semantics TEXT NOT NULL,
    synced_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, pipeline_id, id)
);

CREATE TABLE leads (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    status_id TEXT NOT NULL,
    semantics TEXT NOT NULL,
    responsible_id TEXT,
    source TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    closed_at BIGINT,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX leads_created ON leads (tenant, created_at);

CREATE TABLE deals (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    pipeline_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    semantics TEXT NOT NULL,
    amount DOUBLE PRECISION NOT NULL,
    responsible_id TEXT,
    contact_id TEXT,
    company_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    closed_at BIGINT,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX deals_closed ON deals (tenant, closed_at);
CREATE INDEX deals_created ON deals (tenant, created_at);

CREATE TABLE contacts (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    responsible_id TEXT,
    company_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE companies (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    responsible_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE tasks (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    responsible_id TEXT,
    deadline BIGINT,
    completed BOOLEAN NOT NULL,
    entity_kind TEXT,
    entity_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX tasks_entity ON tasks (tenant, entity_kind, entity_id);

CREATE TABLE activities (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    direction TEXT,
    entity_kind TEXT,
    entity_id TEXT,
    responsible_id TEXT,
    external_id TEXT,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX activities_entity ON activities (tenant, entity_kind, entity_id);
CREATE INDEX activities_external ON activities (tenant, external_id);

-- Phone numbers (E.164) of leads, contacts and companies, for matching callers.
CREATE TABLE phones (
    tenant TEXT NOT NULL,
    e164 TEXT NOT NULL,
    entity_kind TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    PRIMARY KEY (tenant, e164, entity_kind, entity_id)
);
CREATE INDEX phones_entity ON phones (tenant, entity_kind, entity_id);

-- Telephony call sessions, deduplicated by the provider's call id.
CREATE TABLE calls (
    tenant TEXT NOT NULL,
    provider TEXT NOT NULL,
    id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    direction TEXT NOT NULL,
    answered BOOLEAN NOT NULL,
    talk_s BIGINT NOT NULL,
    client_e164 TEXT,
    employee_id TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant, provider, id)
);
CREATE INDEX calls_started ON calls (tenant, started_at);
CREATE INDEX calls_phone ON calls (tenant, client_e164);

-- Where each incremental read stands (JSON of crm::Cursor or a telephony window).
CREATE TABLE sync_cursors (
    tenant TEXT NOT NULL,
    source TEXT NOT NULL,
    entity TEXT NOT NULL,
    cursor TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, source, entity)
);

-- One row per sync cycle and source, for health and reports.
CREATE TABLE sync_runs (
    id TEXT NOT NULL PRIMARY KEY,
    tenant TEXT NOT NULL,
    source TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    ok BOOLEAN NOT NULL,
    items BIGINT NOT NULL,
    error TEXT
);
CREATE INDEX sync_runs_tenant ON sync_runs (tenant, source, started_at);

-- OAuth tokens: replaced atomically on every refresh, before the new access token is used.
CREATE TABLE tokens (
    tenant TEXT NOT NULL,
    system TEXT NOT NULL,
    data TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, system)
);

-- The action ledger: one row per deterministic action key.
-- state: intent -> done | failed | unknown (outcome lost in a crash, reconciled by marker)
--        shadow (evaluated in shadow mode, never executed)
CREATE TABLE actions (
    key TEXT NOT NULL PRIMARY KEY,
    tenant TEXT NOT NULL,
    rule TEXT NOT NULL,
    kind TEXT NOT NULL,
    entity_kind TEXT,
    entity_id TEXT,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX actions_tenant_state ON actions (tenant, state);
CREATE INDEX actions_created ON actions (tenant, created_at);

-- What dozor did and saw, for `dozor audit` and reports.
CREATE TABLE audit_log (
    id TEXT NOT NULL PRIMARY KEY,
    tenant TEXT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (tenant, at);
