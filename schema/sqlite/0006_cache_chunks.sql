-- Where a cache target holds each chunk of plain bytes (issue 13): a pack
-- object, the zstd frame inside it and the chunk's place in the frame. A
-- save names these instead of uploading the bytes again. Rows come from
-- manifests this machine restored (`via` NULL: seen on the remote) and
-- from its own saves (`via`: the identity of the outbox that carries the
-- pack; usable once that outbox no longer holds the pack). A restore that
-- finds a pack missing forgets that pack's rows.
CREATE TABLE cache_chunks (
    target TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    pack TEXT NOT NULL,
    frame_at INTEGER NOT NULL,
    frame_len INTEGER NOT NULL,
    skip INTEGER NOT NULL,
    size INTEGER NOT NULL,
    via TEXT,
    PRIMARY KEY (target, sha256)
);
CREATE INDEX cache_chunks_pack ON cache_chunks (target, pack);
