-- Indexes the reports read by, so a report over a mirror of millions of deals reads only the
-- rows of its period and counts the discipline state from indexes alone (covering indexes: the
-- counts never touch the rows themselves, which hold the whole record as JSON).
-- Open deals per manager and stage, and their ids for the next-step check.
CREATE INDEX deals_open ON deals (tenant, semantics, deleted, responsible_id, id, pipeline_id, stage_id, amount);
-- Won deals of a span of months, with their client and amount (ABC/XYZ).
CREATE INDEX deals_won ON deals (tenant, semantics, closed_at, deleted, amount, company_id, contact_id, id);
CREATE INDEX tasks_open ON tasks (tenant, completed, deadline);
CREATE INDEX tasks_entity_open ON tasks (tenant, entity_kind, entity_id, completed, deleted, deadline);
CREATE INDEX activities_kind_started ON activities (tenant, entity_kind, started_at);
