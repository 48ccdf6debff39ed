-- Indexes the reports read by, so a report over a mirror of millions of deals reads only the
-- rows of its period and counts the discipline state from indexes alone. They are covering
-- indexes: the rows hold the whole record as JSON and lie scattered through the file, so a
-- report that reads only index pages is many times faster than one that visits the rows.
-- Deals created or closed in a window, with the columns the figures use (replacing the plain
-- time indexes of the first schema; lookups by time alone use them as before).
DROP INDEX deals_created;
DROP INDEX deals_closed;
CREATE INDEX deals_created ON deals (tenant, created_at, deleted, id, pipeline_id, stage_id, semantics, amount, responsible_id, contact_id, company_id, closed_at);
CREATE INDEX deals_closed ON deals (tenant, closed_at, deleted, semantics, id, pipeline_id, stage_id, amount, responsible_id, contact_id, company_id, created_at);
-- Open deals per manager and stage, and their ids for the next-step check.
CREATE INDEX deals_open ON deals (tenant, semantics, deleted, responsible_id, id, pipeline_id, stage_id, amount);
CREATE INDEX tasks_open ON tasks (tenant, completed, deadline);
CREATE INDEX tasks_entity_open ON tasks (tenant, entity_kind, entity_id, completed, deleted, deadline);
CREATE INDEX activities_kind_started ON activities (tenant, entity_kind, started_at);
