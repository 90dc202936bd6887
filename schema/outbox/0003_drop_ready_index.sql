-- outbox.db, version 3: claims find ready streams through `streams`; the
-- (target, quarantined, next_attempt_at) index only cost an extra b-tree
-- update per enqueue and per delivered entry.
DROP INDEX IF EXISTS entries_ready;
