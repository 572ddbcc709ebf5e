-- dynamcp initial schema (SQLite). The design's four tables plus the credential vault's table.
-- Ids are UUIDs stored as 16-byte BLOBs; timestamps are RFC 3339 TEXT in UTC; JSON is TEXT.
-- Released migrations are never edited: add a new numbered file instead.

-- One conversation with the master agent. collected_credentials holds key NAMES only
-- ({"<server>": ["KEY", ...]}); the encrypted values live in `credentials`.
CREATE TABLE sessions (
    id                    BLOB PRIMARY KEY NOT NULL,
    status                TEXT NOT NULL DEFAULT 'active',
    context               TEXT NOT NULL DEFAULT '{}',
    required_credentials  TEXT NOT NULL DEFAULT '[]',
    collected_credentials TEXT NOT NULL DEFAULT '{}',
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
) STRICT;

-- A created agent: a standard mcpServers config, the workflow and the model.
CREATE TABLE agents (
    id          BLOB PRIMARY KEY NOT NULL,
    session_id  BLOB NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    mcp_config  TEXT NOT NULL,
    workflow    TEXT NOT NULL,
    model       TEXT,
    status      TEXT NOT NULL DEFAULT 'created',
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;
CREATE INDEX agents_session_idx ON agents(session_id);
CREATE INDEX agents_created_idx ON agents(created_at DESC, id);

-- Every turn of every session, in order. `seq` gives a total order even within one timestamp.
CREATE TABLE conversations (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB NOT NULL UNIQUE,
    session_id  BLOB NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    agent_id    BLOB REFERENCES agents(id) ON DELETE SET NULL,
    role        TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    message     TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX conversations_session_idx ON conversations(session_id, seq);

-- The catalog of MCP servers. The design keyed this table by a unique server_name; real catalogs
-- reuse names ("MCP Server" appears 82 times in ours), so the unique key is the stable catalog id
-- and server_name is the display name.
CREATE TABLE mcp_server_cache (
    id                      TEXT PRIMARY KEY NOT NULL,
    server_name             TEXT NOT NULL,
    description             TEXT NOT NULL DEFAULT '',
    tools                   TEXT NOT NULL DEFAULT '[]',
    credential_requirements TEXT NOT NULL DEFAULT '[]',
    embedding               BLOB,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
) STRICT;
CREATE INDEX mcp_server_cache_name_idx ON mcp_server_cache(server_name);

-- Encrypted credential values and files (envelope encryption: a per-record data key wrapped by the
-- master key). Bound to (session, server, key) by the cipher's associated data.
CREATE TABLE credentials (
    id             BLOB PRIMARY KEY NOT NULL,
    session_id     BLOB NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    server         TEXT NOT NULL,
    key            TEXT NOT NULL,
    kind           TEXT NOT NULL DEFAULT 'env' CHECK (kind IN ('env', 'file')),
    ciphertext     BLOB NOT NULL,
    nonce          BLOB NOT NULL,
    wrapped_key    BLOB NOT NULL,
    key_nonce      BLOB NOT NULL,
    master_key_id  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (session_id, server, key)
) STRICT;
