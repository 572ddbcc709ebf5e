-- dynamcp initial schema (PostgreSQL 15 + pgvector). The design's four tables plus the credential
-- vault's table. Released migrations are never edited: add a new numbered file instead.
CREATE EXTENSION IF NOT EXISTS vector;

-- One conversation with the master agent. collected_credentials holds key NAMES only
-- ({"<server>": ["KEY", ...]}); the encrypted values live in `credentials`.
CREATE TABLE sessions (
    id                    UUID PRIMARY KEY,
    status                TEXT NOT NULL DEFAULT 'active',
    context               JSONB NOT NULL DEFAULT '{}',
    required_credentials  JSONB NOT NULL DEFAULT '[]',
    collected_credentials JSONB NOT NULL DEFAULT '{}',
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);

-- A created agent: a standard mcpServers config, the workflow and the model.
CREATE TABLE agents (
    id          UUID PRIMARY KEY,
    session_id  UUID NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    mcp_config  JSONB NOT NULL,
    workflow    TEXT NOT NULL,
    model       TEXT,
    status      TEXT NOT NULL DEFAULT 'created',
    metadata    JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX agents_session_idx ON agents(session_id);
CREATE INDEX agents_created_idx ON agents(created_at DESC, id);

-- Every turn of every session, in order. `seq` gives a total order even within one timestamp.
CREATE TABLE conversations (
    seq         BIGSERIAL PRIMARY KEY,
    id          UUID NOT NULL UNIQUE,
    session_id  UUID NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    agent_id    UUID REFERENCES agents(id) ON DELETE SET NULL,
    role        TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    message     TEXT NOT NULL,
    timestamp   TIMESTAMPTZ NOT NULL,
    metadata    JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX conversations_session_idx ON conversations(session_id, seq);

-- The catalog of MCP servers. The design keyed this table by a unique server_name; real catalogs
-- reuse names ("MCP Server" appears 82 times in ours), so the unique key is the stable catalog id
-- and server_name is the display name. The embedding is the default local model's (384 dims).
CREATE TABLE mcp_server_cache (
    id                      TEXT PRIMARY KEY,
    server_name             TEXT NOT NULL,
    description             TEXT NOT NULL DEFAULT '',
    tools                   JSONB NOT NULL DEFAULT '[]',
    credential_requirements JSONB NOT NULL DEFAULT '[]',
    embedding               vector(384),
    created_at              TIMESTAMPTZ NOT NULL,
    updated_at              TIMESTAMPTZ NOT NULL
);
CREATE INDEX mcp_server_cache_name_idx ON mcp_server_cache(server_name);
CREATE INDEX mcp_server_cache_embedding_idx ON mcp_server_cache
    USING hnsw (embedding vector_cosine_ops);

-- The design's similarity search: servers whose cosine similarity to the query exceeds the
-- threshold, best first.
CREATE FUNCTION match_mcp_servers(
    query_embedding vector(384),
    match_threshold double precision,
    match_count integer
)
RETURNS TABLE (
    id TEXT,
    server_name TEXT,
    description TEXT,
    tools JSONB,
    credential_requirements JSONB,
    similarity double precision
)
LANGUAGE sql STABLE
AS $$
    SELECT c.id, c.server_name, c.description, c.tools, c.credential_requirements,
           1 - (c.embedding <=> query_embedding) AS similarity
    FROM mcp_server_cache c
    WHERE c.embedding IS NOT NULL
      AND 1 - (c.embedding <=> query_embedding) > match_threshold
    ORDER BY c.embedding <=> query_embedding
    LIMIT match_count;
$$;

-- Encrypted credential values and files (envelope encryption: a per-record data key wrapped by the
-- master key). Bound to (session, server, key) by the cipher's associated data.
CREATE TABLE credentials (
    id             UUID PRIMARY KEY,
    session_id     UUID NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    server         TEXT NOT NULL,
    key            TEXT NOT NULL,
    kind           TEXT NOT NULL DEFAULT 'env' CHECK (kind IN ('env', 'file')),
    ciphertext     BYTEA NOT NULL,
    nonce          BYTEA NOT NULL,
    wrapped_key    BYTEA NOT NULL,
    key_nonce      BYTEA NOT NULL,
    master_key_id  TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (session_id, server, key)
);
