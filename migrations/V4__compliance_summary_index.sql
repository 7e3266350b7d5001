-- The compliance summary counts a tenant's activities per category. With only the primary key,
-- that count reads every heap page holding one of the tenant's rows: at ten million rows it read
-- most of the table and took 2 to 5 seconds, for a small tenant as for a large one. With this
-- index it is an index-only scan of a small index (70 MB at ten million rows, thanks to B-tree
-- deduplication). See docs/READ_PATH.md for the plans.
--
-- The cost: every COPY of the writers maintains one more index, which made a bulk COPY about
-- 12 to 42 percent slower in the same measurements.
--
-- IF NOT EXISTS: migrations run inside a transaction, where CREATE INDEX CONCURRENTLY is refused,
-- and a plain build holds off writes to the table while it runs (about 16 s per ten million rows
-- there). On a large live table, build it first without blocking writes, under the same name:
--     CREATE INDEX CONCURRENTLY processing_activities_tenant_category
--         ON processing_activities (tenant_id, pdpl_category);
CREATE INDEX IF NOT EXISTS processing_activities_tenant_category
    ON processing_activities (tenant_id, pdpl_category);

-- An index-only scan reads the heap for every page not yet marked all-visible, and only VACUUM
-- marks pages. By default autovacuum visits an insert-only table after it grew by 20 percent (two
-- million rows at ten million), so the summary would slow down between visits (300,000 rows
-- written after a VACUUM cost 1.9 million heap fetches there). At 1 percent, autovacuum keeps
-- the visibility map close behind the writers; each visit only reads pages not yet all-visible.
ALTER TABLE processing_activities SET (autovacuum_vacuum_insert_scale_factor = 0.01);
