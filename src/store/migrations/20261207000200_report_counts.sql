-- Open tasks by deadline, with whose they are and what they are on: the reports count the
-- overdue tasks per manager, and find the deals that have a next step, from this index alone
-- (the rows lie scattered through the file; reading them cost a report most of its time).
CREATE INDEX tasks_open_due ON tasks (tenant, completed, deleted, deadline, responsible_id, entity_kind, entity_id);
