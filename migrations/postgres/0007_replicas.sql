-- Facts about the whole database that every process on it must agree on, by name:
-- `vault.writing_key`: the id (a fingerprint) of the master key new credentials are sealed with,
-- recorded by the first service to start. A service whose keyring cannot open what that key seals,
-- or whose own writing key the others cannot open, refuses to start before it stores anything:
-- every replica on one database needs the same ENCRYPTION_KEY.
CREATE TABLE facts (
    name        TEXT PRIMARY KEY NOT NULL,
    value       TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- Rate budgets shared by the replicas on this database: per key (`tenant:<name>` or `ip:<addr>`),
-- the theoretical arrival time of its next request, in microseconds since the Unix epoch. One
-- upsert per request decides (a generic cell-rate algorithm), so a tenant's budget holds however
-- many replicas its requests reach.
CREATE TABLE rate_budgets (
    key     TEXT PRIMARY KEY NOT NULL,
    tat_us  BIGINT NOT NULL
);
