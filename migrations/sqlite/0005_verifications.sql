-- Server verifications: a chosen server installed at a pinned version and started once with no
-- credentials, its live tools listed (see src/catalog/verified.rs). One row per server, launch and
-- version ('' when no version is known); `detail` is the whole verification as the catalog module
-- wrote it.
CREATE TABLE server_verifications (
    server_id   TEXT NOT NULL,
    launch      TEXT NOT NULL,
    version     TEXT NOT NULL DEFAULT '',
    verdict     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    checked_at  TEXT NOT NULL,
    PRIMARY KEY (server_id, launch, version)
) STRICT;
