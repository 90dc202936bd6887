-- outbox.db, version 2: one row per stream that has entries, so a claim
-- looks at streams (few) instead of scanning entries (many).
CREATE TABLE streams (
    target  TEXT NOT NULL,
    stream  TEXT NOT NULL,
    PRIMARY KEY (target, stream)
);
INSERT OR IGNORE INTO streams (target, stream) SELECT DISTINCT target, stream FROM entries;
