-- Tenants and API keys. Every session belongs to a tenant; its agents, conversation, credentials,
-- files and runs belong to it through the session (agents carry the tenant too, for listing).
-- The empty tenant '' is the open service's (no API keys configured): rows written before this
-- migration belong to it.
ALTER TABLE sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
CREATE INDEX agents_tenant_created_idx ON agents(tenant, created_at DESC, id);

-- API keys: only a SHA-256 hash of each key is kept (keys are 256 random bits, so a plain hash is
-- enough); the key itself is printed once, when it is created.
CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    tenant      TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    label       TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_tenant_idx ON api_keys(tenant);
