-- Dense search in PostgreSQL through pgvector: server vectors live in mcp_server_cache.embedding
-- (0001), tool vectors here, both with HNSW indexes. vector_sync records which model and which
-- texts the stored vectors came from, so an unchanged catalog is not rewritten at start.
CREATE TABLE mcp_tool_embeddings (
    server_id TEXT NOT NULL REFERENCES mcp_server_cache(id) ON DELETE CASCADE,
    tool      INTEGER NOT NULL,
    embedding vector(384) NOT NULL,
    PRIMARY KEY (server_id, tool)
);
CREATE INDEX mcp_tool_embeddings_embedding_idx ON mcp_tool_embeddings
    USING hnsw (embedding vector_cosine_ops);

CREATE TABLE vector_sync (
    name       TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    digest     TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- The tool-level counterpart of match_mcp_servers: the tools nearest the query, best first.
CREATE FUNCTION match_mcp_tools(query_embedding vector(384), match_count integer)
RETURNS TABLE (server_id TEXT, tool INTEGER, similarity double precision)
LANGUAGE sql STABLE
AS $$
    SELECT t.server_id, t.tool, 1 - (t.embedding <=> query_embedding) AS similarity
    FROM mcp_tool_embeddings t
    ORDER BY t.embedding <=> query_embedding
    LIMIT match_count;
$$;
