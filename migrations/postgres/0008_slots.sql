-- Slots of capped work (`run`: agent runs; `plan`: chat turns being planned), one row per slot
-- taken, by the replica (`holder`, its service lease) doing the work: the caps hold across every
-- replica on this database. A slot is taken under a transaction-scoped advisory lock per kind, so
-- two replicas never both take the last one. It counts while it has not expired and its holder's
-- lease is live: a replica that dies loses its slots with its lease.
CREATE TABLE slots (
    id          UUID PRIMARY KEY,
    kind        TEXT NOT NULL,
    holder      UUID NOT NULL,
    subject     TEXT NOT NULL DEFAULT '',
    taken_at    TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX slots_kind_idx ON slots(kind);
