-- Which text each stored vector was computed from (the embedding cache's hash of the text), so a
-- changed catalog rewrites only the vectors whose text changed, in place: HNSW indexes stay, and
-- searches on other replicas go on meanwhile. NULL: unknown (written before this column), which
-- counts as changed.
ALTER TABLE mcp_server_cache ADD COLUMN embedding_hash TEXT;
ALTER TABLE mcp_tool_embeddings ADD COLUMN embedding_hash TEXT;
