-- The operators' regional summary (SPEC section 3, GET /analytics/regional-summary): per region
-- (north, central, south, or unassigned) the tenants, and their activities per category.
--
-- Reads run as ingest_reader, whom row-level security confines to one tenant per transaction;
-- this summary spans every tenant but returns only counts, never a row of tenant data. So it is
-- a SECURITY DEFINER function owned by the tables' owner (to whom the policies do not apply),
-- granted to the reader, with a fixed search_path. It reads activity_counts (three rows per
-- tenant at most), never processing_activities.
CREATE FUNCTION ingest_regional_summary()
RETURNS TABLE (region text, tenants bigint, pdpl_category text, activities bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    WITH regions AS (
        SELECT coalesce(t.region, 'unassigned') AS region, count(*) AS tenants
        FROM tenants t GROUP BY 1
    ), counted AS (
        SELECT coalesce(t.region, 'unassigned') AS region, c.pdpl_category, sum(c.activities)::bigint AS activities
        FROM activity_counts c JOIN tenants t USING (tenant_id)
        GROUP BY 1, 2
    )
    SELECT r.region, r.tenants, c.pdpl_category, coalesce(c.activities, 0)
    FROM regions r LEFT JOIN counted c USING (region)
$$;

REVOKE ALL ON FUNCTION ingest_regional_summary() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ingest_regional_summary() TO ingest_reader;
