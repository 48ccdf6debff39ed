-- Open leads: the sync asks the CRM about them where a decided lead leaves the CRM's lead list
-- (amoCRM unsorted items), so it reads them by semantics rather than scanning every lead.
CREATE INDEX leads_open ON leads (tenant, semantics, deleted, created_at);
