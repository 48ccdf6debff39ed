-- Webhook deliveries seen, for deduplicating repeated pushes (Telegram retries, amoCRM and
-- CoMagic re-sends) and for telling when a source stopped pushing.
-- `hash` is a digest of source, event, entity and the event's own time.
CREATE TABLE webhook_deliveries (
    hash TEXT NOT NULL PRIMARY KEY,
    tenant TEXT NOT NULL,
    source TEXT NOT NULL,
    event TEXT NOT NULL,
    entity TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (tenant, source, received_at);
