-- Where a cache entry came from (issue 10): 'local' (a run on this machine
-- produced it), 'remote' (imported from a remote without a signature check)
-- or 'signed:<key id>' (imported after its signature verified with that
-- key). Only 'local' entries are published again; with a signing key, only
-- 'local' and that key's 'signed:' entries are hits.
-- Rows from before this migration are 'unknown': used as hits as before
-- without a signing key, but neither trusted under one nor published again.
ALTER TABLE cache_entries ADD COLUMN origin TEXT NOT NULL DEFAULT 'unknown';
