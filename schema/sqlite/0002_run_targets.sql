-- state.db, version 2: which remote targets a run replicates to (NULL: none).
ALTER TABLE runs ADD COLUMN state_target TEXT;
ALTER TABLE runs ADD COLUMN logs_target TEXT;
ALTER TABLE runs ADD COLUMN cache_target TEXT;
