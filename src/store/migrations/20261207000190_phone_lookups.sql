-- The CRM's last answer about a phone number the mirror did not know (Bitrix24
-- `crm.duplicate.findbycomm`, amoCRM contacts `query`), so a later cycle reuses it instead of
-- asking again. `found` lists the records as JSON `[["contact","275"], ...]`, `[]` for "not in
-- the CRM". A cache only: losing a row costs one request.
CREATE TABLE phone_lookups (
    tenant TEXT NOT NULL,
    phone TEXT NOT NULL,
    found TEXT NOT NULL,
    asked_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, phone)
);
