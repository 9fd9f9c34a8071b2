-- =============================================================================
-- Usage: request log (partitioned by day), tenant_metrics, resource usage.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE POLICY request_log_own ON tenantry.request_log
    FOR ALL TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id())
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY request_log_own ON tenantry.request_log IS 'A tenant reads and appends only its own request-log rows.';

CREATE POLICY request_log_append ON tenantry.request_log
    FOR INSERT TO tenantry_logger
    WITH CHECK (true);
COMMENT ON POLICY request_log_append ON tenantry.request_log IS 'The logger appends rows for any tenant (batched by the server) and reads none.';

GRANT SELECT, INSERT ON tenantry.request_log TO tenantry_app;
GRANT INSERT ON tenantry.request_log TO tenantry_logger;

/**
 * Partitions of request_log carry the parent's tenant policy too. Nobody is
 * granted a partition (rows are reached through request_log), so this changes
 * no access; it keeps "RLS enabled, no policy" (deny-all by accident) out of
 * the schema, so a grant added by mistake would still be tenant-scoped.
 * Idempotent.
 */
CREATE OR REPLACE FUNCTION tenantry.secure_request_log_partition(part text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('ALTER TABLE tenantry.%I ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('ALTER TABLE tenantry.%I FORCE ROW LEVEL SECURITY', part);
    EXECUTE format('DROP POLICY IF EXISTS request_log_own ON tenantry.%I', part);
    EXECUTE format('CREATE POLICY request_log_own ON tenantry.%I FOR ALL TO tenantry_app '
                   'USING (tenant_id = tenantry.current_tenant_id()) '
                   'WITH CHECK (tenant_id = tenantry.current_tenant_id())', part);
    EXECUTE format('COMMENT ON POLICY request_log_own ON tenantry.%I IS %L', part,
                   'As on request_log: a tenant''s own request-log rows only.');
END
$$;
COMMENT ON FUNCTION tenantry.secure_request_log_partition(text) IS 'Internal: RLS (forced) and the tenant policy of request_log on one of its partitions. Not granted.';

/** Creates the daily partitions of request_log from yesterday to days_ahead days from now. */
CREATE OR REPLACE FUNCTION tenantry.ensure_request_log_partitions(days_ahead integer DEFAULT 7)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d date;
    part text;
    created integer := 0;
BEGIN
    FOR d IN SELECT generate_series(current_date - 1, current_date + greatest(days_ahead, 0), interval '1 day')::date LOOP
        part := 'request_log_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(format('tenantry.%I', part)) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE tenantry.%I PARTITION OF tenantry.request_log FOR VALUES FROM (%L) TO (%L)',
                               part, d::timestamptz, (d + 1)::timestamptz);
                PERFORM tenantry.secure_request_log_partition(part);
                EXECUTE format('COMMENT ON TABLE tenantry.%I IS %L', part, 'request_log rows of ' || d);
                created := created + 1;
            EXCEPTION WHEN check_violation THEN
                -- Rows for that day already sit in the default partition; they stay there.
                RAISE NOTICE 'request_log partition for % skipped: the default partition holds its rows', d;
            END;
        END IF;
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION tenantry.ensure_request_log_partitions(integer) IS 'Creates missing daily request_log partitions (yesterday .. today + days_ahead). The server calls it periodically.';

/** Drops daily request_log partitions that end before now() - keep. */
CREATE OR REPLACE FUNCTION tenantry.drop_request_log_partitions(keep interval DEFAULT interval '35 days')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'tenantry.request_log'::regclass AND c.relname ~ '^request_log_[0-9]{8}$'
          AND to_date(substr(c.relname, 13), 'YYYYMMDD') + 1 < (now() - keep)::date
    LOOP
        EXECUTE format('DROP TABLE tenantry.%I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;
COMMENT ON FUNCTION tenantry.drop_request_log_partitions(interval) IS 'Retention: drops daily request_log partitions older than keep (default 35 days).';

-- The partitions that exist (the reset before these files dropped their policies).
DO $partitions$
DECLARE
    part text;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'tenantry.request_log'::regclass
    LOOP
        PERFORM tenantry.secure_request_log_partition(part);
    END LOOP;
END
$partitions$;

GRANT EXECUTE ON FUNCTION
    tenantry.ensure_request_log_partitions(integer),
    tenantry.drop_request_log_partitions(interval)
TO tenantry_admin;

-- -----------------------------------------------------------------------------
-- tenant_metrics (guide): materialized, owned by tenantry_owner (BYPASSRLS, so
-- a refresh sees every tenant). Never granted to tenant roles: read through
-- current_tenant_metrics() which filters to the caller's subtree.
-- -----------------------------------------------------------------------------

/** Refreshes tenant_metrics concurrently (readers are not blocked). */
CREATE OR REPLACE FUNCTION tenantry.refresh_tenant_metrics()
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY tenantry.tenant_metrics;
END
$$;
COMMENT ON FUNCTION tenantry.refresh_tenant_metrics() IS 'Refreshes tenant_metrics concurrently as its owner (sees every tenant). Scheduled by the server.';
GRANT EXECUTE ON FUNCTION tenantry.refresh_tenant_metrics() TO tenantry_admin;

/**
 * The caller's rows of tenant_metrics: its own tenant and its descendants
 * (is_descendant marks the latter), optionally bounded by hour.
 */
CREATE OR REPLACE FUNCTION tenantry.current_tenant_metrics(from_hour timestamptz DEFAULT NULL, to_hour timestamptz DEFAULT NULL)
RETURNS TABLE (tenant_id uuid, hour timestamptz, request_count bigint, unique_users bigint,
               resources_accessed bigint, is_descendant boolean)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.tenant_id, m.hour, m.request_count, m.unique_users, m.resources_accessed,
           m.tenant_id <> tenantry.current_tenant_id()
    FROM tenantry.tenant_metrics m
    WHERE m.tenant_id = ANY (tenantry.visible_tenant_ids())
      AND (from_hour IS NULL OR m.hour >= from_hour)
      AND (to_hour IS NULL OR m.hour < to_hour)
    ORDER BY m.hour, m.tenant_id
$$;
COMMENT ON FUNCTION tenantry.current_tenant_metrics(timestamptz, timestamptz) IS 'Per-tenant read of tenant_metrics: rows of the current tenant and its descendants only. Empty without a tenant context.';
GRANT EXECUTE ON FUNCTION tenantry.current_tenant_metrics(timestamptz, timestamptz) TO tenantry_app;

-- -----------------------------------------------------------------------------
-- tenant_resource_usage (guide): security_invoker, so the caller's RLS applies
-- to both tenants and resources; a tenant sees itself and its descendants.
-- -----------------------------------------------------------------------------

-- security_barrier too: a caller's own predicates on the view are applied after
-- its rows are filtered, never pushed below (only leakproof ones, such as uuid
-- equality on tenant_id, still reach the index).
/** The schema of a visible tenant's resources table; NULL for any other tenant (no tier oracle). */
CREATE OR REPLACE FUNCTION tenantry.visible_resources_home(tid uuid)
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tenantry.resources_home(tid) WHERE tid = ANY (tenantry.visible_tenant_ids())
$$;
COMMENT ON FUNCTION tenantry.visible_resources_home(uuid) IS 'The schema of the resources table holding a tenant''s rows (tenantry: the pooled table), for the current tenant and its descendants only; NULL for every other tenant, existing or not.';
GRANT EXECUTE ON FUNCTION tenantry.visible_resources_home(uuid) TO tenantry_app;

/**
 * A visible tenant's resource count, bytes and last change, read from its
 * own table only (never the whole family), as the caller: its policy applies.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_resource_totals(
    tid uuid, OUT total_resources bigint, OUT storage_used bigint, OUT last_modified timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    home text := tenantry.visible_resources_home(tid);
BEGIN
    total_resources := 0;
    storage_used := 0;
    IF home IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format('SELECT count(*), coalesce(sum(r.size_bytes), 0)::bigint, max(r.updated_at)
                    FROM ONLY %I.resources r WHERE r.tenant_id = $1', home)
    USING tid
    INTO total_resources, storage_used, last_modified;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_resource_totals(uuid) IS 'Resource count, bytes and last change of the current tenant or a descendant, from its own table, under the caller''s policy; zeros for any other tenant. Used by tenant_resource_usage.';
GRANT EXECUTE ON FUNCTION tenantry.tenant_resource_totals(uuid) TO tenantry_app;

-- Each tenant's totals from its own table: a join with tenantry.resources would
-- read (and lock) every schema tenant's table.
CREATE OR REPLACE VIEW tenantry.tenant_resource_usage WITH (security_invoker = true, security_barrier = true) AS
SELECT
    t.tenant_id,
    t.name AS tenant_name,
    u.total_resources,
    u.storage_used,
    u.last_modified
FROM tenantry.tenants t
CROSS JOIN LATERAL tenantry.tenant_resource_totals(t.tenant_id) u;
COMMENT ON VIEW tenantry.tenant_resource_usage IS 'Guide view: resource count, storage and last modification per tenant. security_invoker: the caller''s RLS applies, so no other tenant''s rows ever appear.';
GRANT SELECT ON tenantry.tenant_resource_usage TO tenantry_app;
