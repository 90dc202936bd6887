-- Local state.db, version 1: runs, jobs, steps, events and the cache index.
-- Times are Unix milliseconds. Statuses are lower-case words.

CREATE TABLE runs (
    id           TEXT PRIMARY KEY,          -- time-sortable ULID
    pipeline     TEXT NOT NULL,
    status       TEXT NOT NULL,             -- running | success | failed | cancelled
    profile      TEXT NOT NULL,
    project_dir  TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    error        TEXT
);
CREATE INDEX runs_by_start ON runs (started_at DESC, id DESC);
CREATE INDEX runs_by_pipeline ON runs (pipeline, started_at DESC);

CREATE TABLE jobs (
    run_id           TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    position         INTEGER NOT NULL,       -- order of definition
    needs            TEXT NOT NULL,          -- JSON array of job names
    status           TEXT NOT NULL,          -- pending | running | success | failed | skipped | cancelled | cached
    started_at       INTEGER,
    finished_at      INTEGER,
    cache_key        TEXT,
    cached_from_run  TEXT,                   -- provenance of a cache hit
    error            TEXT,
    PRIMARY KEY (run_id, name)
);

CREATE TABLE steps (
    run_id       TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    job          TEXT NOT NULL,
    idx          INTEGER NOT NULL,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,              -- pending | running | success | failed | skipped | cancelled
    exit_code    INTEGER,
    started_at   INTEGER,
    finished_at  INTEGER,
    PRIMARY KEY (run_id, job, idx)
);

-- The append-only history of a run; what a remote replica replays.
CREATE TABLE events (
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    ts      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    job     TEXT,
    data    TEXT NOT NULL,                   -- JSON object
    PRIMARY KEY (run_id, seq)
);

-- One manifest per cache key; the blobs live in SPARKWING_HOME/cas.
CREATE TABLE cache_entries (
    key          TEXT PRIMARY KEY,           -- SHA-256 of the job's inputs
    job          TEXT NOT NULL,
    pipeline     TEXT NOT NULL,
    run_id       TEXT NOT NULL,              -- the run that produced the outputs
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,                    -- NULL: no ttl
    manifest     TEXT NOT NULL               -- JSON: files with path, sha256, size, mode
);
