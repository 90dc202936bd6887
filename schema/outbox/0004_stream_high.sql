-- outbox.db, version 4: each stream's high-water mark, the highest seq ever
-- enqueued on it. Enqueue drops entries at or below it inside the same
-- transaction, so an entry that was delivered (and deleted) can never be
-- queued again by a slower process that read the local store earlier.
CREATE TABLE stream_high (
    target  TEXT NOT NULL,
    stream  TEXT NOT NULL,
    high    INTEGER NOT NULL,
    PRIMARY KEY (target, stream)
) WITHOUT ROWID;
INSERT OR IGNORE INTO stream_high (target, stream, high)
    SELECT target, stream, MAX(seq) FROM entries GROUP BY target, stream;
