-- The compliance summary reads each tenant's activity count per category from this table
-- instead of counting the tenant's activities: three rows at most, however many activities the
-- tenant has and however busy the writers are (counting took 33 ms at the median and 101 ms at
-- p95 with writers saturated, and about 0.5 to 1 s for a 3-million-row tenant; see
-- docs/READ_PATH.md). The counts move in the same transaction as the activities they count:
-- every chunk write and every dead-letter replay adds what it copied, so a count is exact at
-- every commit.
--
-- Every instance writing to this database must maintain the counts: run no instance older than
-- this migration against it once it has applied.
CREATE TABLE activity_counts (
    tenant_id     uuid   NOT NULL,
    pdpl_category text   NOT NULL,
    activities    bigint NOT NULL CHECK (activities >= 0),
    PRIMARY KEY (tenant_id, pdpl_category)
);

-- The activities already written, counted while nothing else writes them.
LOCK TABLE processing_activities IN SHARE MODE;
INSERT INTO activity_counts (tenant_id, pdpl_category, activities)
    SELECT tenant_id, pdpl_category, count(*) FROM processing_activities GROUP BY 1, 2;

-- Read like the activities: by ingest_reader, one tenant per transaction (see V3).
GRANT SELECT ON activity_counts TO ingest_reader;
ALTER TABLE activity_counts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON activity_counts
    FOR SELECT TO ingest_reader
    USING (tenant_id = ingest_current_tenant());

-- V4's index served only the summary's count, and every COPY of the writers maintained it.
-- Its autovacuum setting kept the visibility map fresh for that index-only scan; nothing needs
-- that any more, so the table is vacuumed at PostgreSQL's default pace again.
DROP INDEX IF EXISTS processing_activities_tenant_category;
ALTER TABLE processing_activities RESET (autovacuum_vacuum_insert_scale_factor);
