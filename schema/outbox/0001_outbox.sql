-- outbox.db, version 1: the durable replay queue.
-- Times are Unix milliseconds.

-- One row per write still to be delivered to a remote. Acked rows are deleted.
CREATE TABLE entries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    target          TEXT NOT NULL,      -- "kind:fingerprint", never a secret
    stream          TEXT NOT NULL,      -- one run's state, one job's log, one cache key
    seq             INTEGER NOT NULL,   -- order inside (target, stream)
    op              TEXT NOT NULL,      -- what to do with the payload
    subject         TEXT NOT NULL,      -- what it is about (run, run/job, sha, key)
    payload         BLOB,               -- small payloads inline
    payload_path    TEXT,               -- large ones by reference to an immutable local file
    payload_offset  INTEGER NOT NULL DEFAULT 0,
    size            INTEGER NOT NULL,   -- payload bytes
    attempts        INTEGER NOT NULL DEFAULT 0,
    backoff_ms      INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    error_class     TEXT,               -- transient | auth | permanent
    quarantined     INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    UNIQUE (target, stream, seq)
);
CREATE INDEX entries_ready ON entries (target, quarantined, next_attempt_at);

-- A stream being replayed is leased by one worker at a time.
CREATE TABLE leases (
    target      TEXT NOT NULL,
    stream      TEXT NOT NULL,
    owner       TEXT NOT NULL,          -- "host:pid:nonce"
    owner_host  TEXT NOT NULL,
    owner_pid   INTEGER NOT NULL,
    until       INTEGER NOT NULL,
    PRIMARY KEY (target, stream)
);

-- How far each local source has been enqueued (the recovery watermarks).
CREATE TABLE marks (
    target  TEXT NOT NULL,
    name    TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    offset  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (target, name)
);

-- What the sync actors last learned about each target.
CREATE TABLE targets (
    target              TEXT PRIMARY KEY,
    state               TEXT NOT NULL,      -- online | offline | auth_failed
    since               INTEGER NOT NULL,
    last_success_at     INTEGER,
    last_error          TEXT,
    last_error_class    TEXT,
    delivered_entries   INTEGER NOT NULL DEFAULT 0,
    delivered_bytes     INTEGER NOT NULL DEFAULT 0,
    rate_bytes_per_s    REAL,               -- smoothed delivery rate
    rate_entries_per_s  REAL
);
