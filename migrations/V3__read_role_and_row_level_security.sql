-- The read side's role and row-level security (SPEC section 5: tenant data is isolated twice).
--
-- Dashboard reads run on their own pool, whose connections log in as the engine's user and then
-- `SET ROLE ingest_reader`. That role may only SELECT, and only the rows of the tenant the
-- reading transaction names with `SELECT set_config('app.tenant_id', $1, true)`: a transaction
-- that names none, or names something that is not a UUID, sees no row at all.
--
-- The writers keep connecting as the tables' owner, which row-level security does not apply to
-- (no FORCE ROW LEVEL SECURITY below): PostgreSQL refuses `COPY FROM` into a table whose
-- row-level security applies to the copying role, and the writers' tenant_id comes only from the
-- request, never from a row they read.

-- Roles belong to the cluster, not the database, and several databases share one cluster (every
-- test database, or an operator's staging and production): create the role only if it is
-- missing, and tolerate another database's migration creating it at the same instant.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ingest_reader') THEN
        CREATE ROLE ingest_reader NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN
        NULL;
END
$$;

-- The read pool logs in as the user that runs these migrations (the engine's user) and switches
-- to the reader role; membership is what lets it. Granting a membership twice is a no-op.
GRANT ingest_reader TO CURRENT_USER;

GRANT USAGE ON SCHEMA public TO ingest_reader;
GRANT SELECT ON processing_activities, scans TO ingest_reader;

-- The tenant the current transaction reads for, or NULL when none is set or the setting is not a
-- UUID in canonical form (never an error: a malformed setting must hide rows, not fail reads).
-- STABLE and written in SQL so the planner inlines it and compares `tenant_id = <value>` as an
-- index condition on the (tenant_id, ...) indexes, evaluated once per scan.
CREATE FUNCTION ingest_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN current_setting('app.tenant_id', true)
             ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
        THEN current_setting('app.tenant_id', true)::uuid
    END
$$;
GRANT EXECUTE ON FUNCTION ingest_current_tenant() TO ingest_reader;

ALTER TABLE processing_activities ENABLE ROW LEVEL SECURITY;
ALTER TABLE scans ENABLE ROW LEVEL SECURITY;

-- Policies are permissive and exist only for the reader role: any other non-owner role that
-- might be granted access later sees nothing until it gets its own policy.
CREATE POLICY tenant_isolation ON processing_activities
    FOR SELECT TO ingest_reader
    USING (tenant_id = ingest_current_tenant());
CREATE POLICY tenant_isolation ON scans
    FOR SELECT TO ingest_reader
    USING (tenant_id = ingest_current_tenant());
