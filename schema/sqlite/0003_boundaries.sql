-- state.db, version 3: the boundaries of what a remote receives, recorded
-- once in the local store so every delivery (a retry, another process, a
-- rebuilt outbox.db) writes the same objects with the same bytes.

-- A run's events are published in segments: events first_seq..=last_seq
-- form the object runs/<run>/events/<first_seq>.ndjson. Segments are
-- closed under the write lock, cover each event exactly once and never
-- change afterwards.
CREATE TABLE event_segments (
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    PRIMARY KEY (run_id, first_seq)
);

-- A job's log is published in chunks: bytes offset..offset+len of
-- runs/<run>/<job>.log form the object <run>/<job>/<seq>.log. Chunks are
-- consecutive from seq 0 and offset 0 and never change afterwards.
CREATE TABLE log_chunks (
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    job     TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    offset  INTEGER NOT NULL,
    len     INTEGER NOT NULL,
    PRIMARY KEY (run_id, job, seq)
);
