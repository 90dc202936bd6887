-- When a cache entry was last stored or restored on this machine (issue 13),
-- for least-recently-used eviction under the local cache's size limit.
-- NULL (rows from before this migration): its created_at stands in.
ALTER TABLE cache_entries ADD COLUMN last_used_at INTEGER;
CREATE INDEX cache_entries_last_used ON cache_entries (COALESCE(last_used_at, created_at));
