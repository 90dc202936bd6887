-- Where a cache entry came from (issue 10): 'local' (a run on this machine
-- produced it), 'remote' (imported from a remote without a signature check)
-- or 'signed:<key id>' (imported after its signature verified with that
-- key). Only local entries are published again; with a signing key, an
-- entry imported without that key's signature is not a hit.
-- Rows from before this migration are 'unknown' (treated as before).
ALTER TABLE cache_entries ADD COLUMN origin TEXT NOT NULL DEFAULT 'unknown';
