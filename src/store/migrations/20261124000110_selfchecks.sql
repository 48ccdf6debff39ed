-- Self-check state: one row per tenant and check (`reauth:amocrm`, `stale:comagic`, ...).
-- `raised` says whether the ops chat was told about a problem that is not cleared yet; `seq`
-- numbers the raises, so the ledger keys of the messages (`selfcheck:T:CHECK:raised:SEQ`) are
-- deterministic and a restart neither repeats nor loses a message.
CREATE TABLE selfchecks (
    tenant TEXT NOT NULL,
    check_id TEXT NOT NULL,
    raised BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    detail TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, check_id)
);
