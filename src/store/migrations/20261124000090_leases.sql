-- Scale-out: several `dozor run` instances share one PostgreSQL database. Each tenant is held by
-- one instance through a lease row with an expiry; a holder renews it while it works and another
-- instance takes it over once it has expired. `epoch` grows with every change of holder.
CREATE TABLE leases (
    tenant TEXT NOT NULL PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Live instances (heartbeats), so each one can take a fair share of the tenants.
CREATE TABLE instances (
    id TEXT NOT NULL PRIMARY KEY,
    seen_at BIGINT NOT NULL,
    started_at BIGINT NOT NULL
);
