-- This outbox's identity (issue 13): a random id made when the file is
-- created. A pack queued through an outbox that is gone (deleted, or set
-- aside as damaged) may never have been delivered; `state.db` remembers
-- which outbox carried each pack, and a save names such a pack only while
-- that same outbox says it has left.
CREATE TABLE identity (id TEXT NOT NULL);
INSERT INTO identity (id) VALUES (lower(hex(randomblob(16))));
