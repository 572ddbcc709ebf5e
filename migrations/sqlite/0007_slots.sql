-- Slots of capped work (`run`: agent runs; `plan`: chat turns being planned), one row per slot
-- taken, by the service (`holder`, its lease) doing the work. Used on PostgreSQL, where replicas
-- share the caps (SQLite's single service counts in memory); the table exists on both so the two
-- backends keep one schema. A slot counts while it has not expired and its holder's lease is
-- live: a service that dies loses its slots with its lease.
CREATE TABLE slots (
    id          BLOB PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    holder      BLOB NOT NULL,
    subject     TEXT NOT NULL DEFAULT '',
    taken_at    TEXT NOT NULL,
    expires_at  TEXT NOT NULL
) STRICT;

CREATE INDEX slots_kind_idx ON slots(kind);
