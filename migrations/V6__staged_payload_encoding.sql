-- Staged payloads may be lz4-compressed COPY tuples (smaller staging writes and WAL); the
-- encoding is recorded per chunk so chunks staged before this change still apply.
ALTER TABLE staged_chunks ADD COLUMN payload_encoding text NOT NULL DEFAULT 'copy-binary'
    CHECK (payload_encoding IN ('copy-binary', 'lz4-copy-binary'));
