-- The engine's first schema. Every table keeps tenant_id in its primary key so the tables can be
-- distributed by tenant (SPEC section 8).

CREATE TABLE tenants (
    tenant_id            uuid        PRIMARY KEY,
    name                 text        NOT NULL DEFAULT '',
    region               text        CHECK (region IN ('north', 'central', 'south')),
    records_per_second   bigint      NOT NULL CHECK (records_per_second > 0),
    burst                bigint      NOT NULL CHECK (burst > 0),
    max_backlog_records  bigint      NOT NULL CHECK (max_backlog_records > 0),
    paused               boolean     NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored only as a hash of the secret; scope is 'admin', 'service' or 'tenant'.
CREATE TABLE api_keys (
    key_id      uuid        PRIMARY KEY,
    secret_hash bytea       NOT NULL UNIQUE,
    scope       text        NOT NULL CHECK (scope IN ('admin', 'service', 'tenant')),
    tenant_id   uuid        REFERENCES tenants (tenant_id),
    name        text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CHECK ((scope = 'tenant') = (tenant_id IS NOT NULL))
);

CREATE TABLE scans (
    tenant_id          uuid        NOT NULL REFERENCES tenants (tenant_id),
    scan_id            uuid        NOT NULL,
    status             text        NOT NULL CHECK (status IN
                           ('pending', 'processing', 'completed', 'completed_with_errors', 'failed')),
    priority           smallint    NOT NULL,
    records_total      integer     NOT NULL,
    records_processed  integer     NOT NULL DEFAULT 0,
    records_failed     integer     NOT NULL DEFAULT 0,
    -- The first 100 per-record errors: [{index, field, error, error_vi}].
    errors             jsonb       NOT NULL DEFAULT '[]',
    idempotency_key    text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    completed_at       timestamptz,
    PRIMARY KEY (tenant_id, scan_id),
    CHECK (records_processed + records_failed <= records_total)
);
CREATE UNIQUE INDEX scans_idempotency_key ON scans (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX scans_by_tenant_recent ON scans (tenant_id, created_at DESC);

-- Durable staging of accepted work. A row is one chunk of valid records, already encoded as
-- PostgreSQL binary COPY tuples. A chunk exists here exactly until the transaction that copies
-- it into processing_activities deletes it, so claiming and applying are one atomic step and
-- any engine instance can take over another's chunks.
CREATE TABLE staged_chunks (
    tenant_id     uuid        NOT NULL REFERENCES tenants (tenant_id),
    chunk_id      bigint      GENERATED ALWAYS AS IDENTITY,
    scan_id       uuid        NOT NULL,
    priority      smallint    NOT NULL,
    record_count  integer     NOT NULL CHECK (record_count > 0),
    payload       bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, chunk_id),
    FOREIGN KEY (tenant_id, scan_id) REFERENCES scans (tenant_id, scan_id)
);
-- The payload is already compact binary: skip TOAST compression, which would cost CPU twice.
ALTER TABLE staged_chunks ALTER COLUMN payload SET STORAGE EXTERNAL;

CREATE TABLE processing_activities (
    id                uuid        NOT NULL,
    tenant_id         uuid        NOT NULL,
    scan_id           uuid,
    record_index      integer     NOT NULL,
    activity_name     text        NOT NULL,
    pdpl_category     text        NOT NULL,
    data_fields       text[]      NOT NULL,
    purpose           text,
    legal_basis       text,
    retention_period  text,
    data_recipients   text[],
    created_at        timestamptz NOT NULL,
    -- UUIDv7 ids grow with time, so this index is appended to, and it serves keyset paging.
    PRIMARY KEY (tenant_id, id)
);

-- Records a permanent database error refused, with that error, for inspection and replay.
CREATE TABLE dead_letters (
    tenant_id     uuid        NOT NULL,
    dead_letter_id bigint     GENERATED ALWAYS AS IDENTITY,
    scan_id       uuid,
    record_index  integer     NOT NULL,
    payload       bytea       NOT NULL,
    error         text        NOT NULL,
    attempts      integer     NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    replayed_at   timestamptz,
    PRIMARY KEY (tenant_id, dead_letter_id)
);
