-- The audit log (SPEC section 7): every scan accepted and finished, every batch committed,
-- every dead letter replayed, every admin action and every maintenance run, one row each,
-- written in the same transaction as the change it records. Append-only: nothing updates or
-- deletes a row; the archiver drops a whole month once it is archived and verified.
--
-- Partitioned by range of occurred_at, one partition per calendar month in audit.timezone,
-- created ahead of time by the engine's upkeep (ingest_audit_month_partition below). There is
-- no default partition: it would block a non-blocking detach and silently swallow rows that a
-- missing month should make loud.
CREATE TABLE audit_log (
    tenant_id   uuid        NOT NULL, -- the nil UUID for cluster-wide events
    occurred_at timestamptz NOT NULL,
    event_id    uuid        NOT NULL, -- UUIDv7
    actor       text        NOT NULL, -- a key id, 'bootstrap' or 'engine'; never a secret
    action      text        NOT NULL, -- a fixed snake_case vocabulary
    subject     text        NOT NULL, -- scan id, key id, tenant id, dead letter id, month
    details     jsonb       NOT NULL DEFAULT '{}', -- counts, before and after; never record contents
    summary     text        NOT NULL,
    summary_vi  text        NOT NULL,
    -- Every key starts with tenant_id (a tenant's entries, newest first, by keyset).
    PRIMARY KEY (tenant_id, occurred_at, event_id)
) PARTITION BY RANGE (occurred_at);

-- An admin reading every tenant's entries, newest first.
CREATE INDEX audit_log_by_time ON audit_log (occurred_at, event_id);

-- Creates the partition of the month starting on `month_start` (a first of the month), its
-- bounds midnights in `time_zone`, unless a partition of that name exists. Returns whether it
-- created one. Callers serialise on an advisory lock and set a lock_timeout.
CREATE FUNCTION ingest_audit_month_partition(month_start date, time_zone text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    partition_name text := format('audit_log_y%sm%s',
        to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
BEGIN
    IF to_regclass(partition_name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF audit_log FOR VALUES FROM (%L) TO (%L)',
        partition_name,
        (month_start::timestamp AT TIME ZONE time_zone),
        ((month_start + interval '1 month')::timestamp AT TIME ZONE time_zone));
    RETURN true;
END;
$$;

-- What the archiver wrote: one verified Parquet file per archived month. Never archived itself.
CREATE TABLE audit_archives (
    month             date        PRIMARY KEY, -- the month's first day in audit.timezone
    path              text        NOT NULL,
    rows              bigint      NOT NULL,
    bytes             bigint      NOT NULL,
    sha256            text        NOT NULL,
    first_occurred_at timestamptz,
    last_occurred_at  timestamptz,
    archived_at       timestamptz NOT NULL DEFAULT now()
);

-- The admin_audit rows move into the log, history intact: each month they fall in gets its
-- partition (in the default time zone; the upkeep keeps a partition that already exists).
SELECT ingest_audit_month_partition(month_start, 'Asia/Ho_Chi_Minh')
FROM (SELECT DISTINCT date_trunc('month', at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date AS month_start
      FROM admin_audit) AS months;

INSERT INTO audit_log (tenant_id, occurred_at, event_id, actor, action, subject, details, summary, summary_vi)
SELECT coalesce(target_tenant_id, '00000000-0000-0000-0000-000000000000'),
       at,
       -- A UUIDv7 from the row's time (48 bits of milliseconds) and its id, so the order holds.
       (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0')
        || '7' || lpad(to_hex(audit_id % 4096), 3, '0')
        || '8' || lpad(to_hex(audit_id), 15, '0'))::uuid,
       CASE WHEN actor LIKE 'key:%' THEN substr(actor, 5) ELSE 'bootstrap' END,
       CASE action
           WHEN 'tenant.create' THEN 'tenant_created'
           WHEN 'tenant.limits' THEN 'limits_changed'
           WHEN 'tenant.pause' THEN 'tenant_paused'
           WHEN 'tenant.resume' THEN 'tenant_resumed'
           WHEN 'key.mint' THEN 'key_minted'
           WHEN 'key.revoke' THEN 'key_revoked'
           WHEN 'dead_letter.replay' THEN
               CASE WHEN (after ->> 'replayed')::boolean THEN 'dead_letter_replayed'
                    ELSE 'dead_letter_replay_failed' END
           ELSE replace(action, '.', '_')
       END,
       target,
       jsonb_strip_nulls(jsonb_build_object('before', before, 'after', after)),
       'admin action ' || action || ' on ' || target,
       'thao tác quản trị ' || action || ' trên ' || target
FROM admin_audit;

DROP TABLE admin_audit;
