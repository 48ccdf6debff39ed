-- Indexes the reports read by, so a report over a mirror of millions of deals reads only the
-- rows of its period (and counts the discipline state from indexes alone).
CREATE INDEX deals_open ON deals (tenant, semantics, responsible_id);
CREATE INDEX tasks_open ON tasks (tenant, completed, deadline);
CREATE INDEX tasks_entity_open ON tasks (tenant, entity_kind, entity_id, completed, deleted, deadline);
CREATE INDEX activities_kind_started ON activities (tenant, entity_kind, started_at);
