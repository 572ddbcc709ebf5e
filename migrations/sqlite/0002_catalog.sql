-- Catalog import: the full record of each server with its content hash (unchanged records are
-- skipped on re-import), credential instructions keyed by server slug (the design's credinfo),
-- and an embedding cache keyed by model and the hash of the embedded text.
ALTER TABLE mcp_server_cache ADD COLUMN record TEXT NOT NULL DEFAULT '{}';
ALTER TABLE mcp_server_cache ADD COLUMN content_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE mcp_server_cache ADD COLUMN origin TEXT NOT NULL DEFAULT '';

CREATE TABLE credential_instructions (
    server      TEXT NOT NULL,
    key         TEXT NOT NULL,
    description TEXT NOT NULL,
    steps       TEXT NOT NULL,
    required    INTEGER,
    secret      INTEGER,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (server, key)
) STRICT;

CREATE TABLE embedding_cache (
    model      TEXT NOT NULL,
    text_hash  TEXT NOT NULL,
    vector     BLOB NOT NULL,
    PRIMARY KEY (model, text_hash)
) STRICT;
