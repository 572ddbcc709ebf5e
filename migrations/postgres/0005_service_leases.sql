-- Vault key rotation with a running service.
--
-- Each running `serve` (or `mcp`) holds a lease row and renews it every few seconds: who it is
-- (pid, host), where its master keys come from ('file': the data dir's keyring, reloaded at every
-- renewal; 'env': ENCRYPTION_KEY and ENCRYPTION_KEY_PREVIOUS, fixed for the process's life), the
-- key id it seals new credentials with, and every key id it can open. `dynamcp vault rotate`
-- re-wraps credentials under a key only once every live holder reports that key as readable, so a
-- running service never meets a row it cannot open. A row whose expires_at has passed belongs to
-- a process that is gone. `renewals` counts reports, so the CLI can tell a fresh report from a
-- stale one without comparing clocks.
CREATE TABLE service_leases (
    holder            UUID PRIMARY KEY,
    pid               BIGINT NOT NULL,
    host              TEXT NOT NULL,
    key_source        TEXT NOT NULL CHECK (key_source IN ('file', 'env')),
    writing_key_id    TEXT NOT NULL DEFAULT '',
    readable_key_ids  TEXT NOT NULL DEFAULT '',
    renewals          BIGINT NOT NULL DEFAULT 0,
    started_at        TIMESTAMPTZ NOT NULL,
    renewed_at        TIMESTAMPTZ NOT NULL,
    expires_at        TIMESTAMPTZ NOT NULL
);

-- Rotation finds the rows still under an older key, and `vault status` counts rows per key.
CREATE INDEX credentials_master_key_idx ON credentials(master_key_id);
