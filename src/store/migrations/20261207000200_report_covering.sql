-- Open tasks by deadline, with whose they are and what they are on: the reports count the
-- overdue tasks per manager, and find the deals that have a next step, from this index alone
-- (the rows lie scattered through the file; reading them cost a report most of its time).
CREATE INDEX tasks_open_due ON tasks (tenant, completed, deleted, deadline, responsible_id, entity_kind, entity_id);
-- The activities on leads of a report's window, with what the reaction time needs of them.
CREATE INDEX activities_lead_started ON activities (tenant, entity_kind, started_at, deleted, id, kind, direction, entity_id);
