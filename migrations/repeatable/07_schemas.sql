-- =============================================================================
-- Schema-per-tenant ("silo") isolation and connection setup.
--
-- A schema-isolated tenant's resources live in <schema_name>.resources, a
-- partition of tenantry.resources for that tenant alone: physically separate,
-- yet the same API, policies, sharing and usage views serve both models.
-- Moving a tenant between models moves its rows in one transaction.
--
-- The catalog is readable by every role, so nothing a tenant schema is made
-- of carries the tenant's id or name: the schema is tenants.schema_name
-- (tenant_ and random hex), its table, indexes and constraints have fixed
-- names, and the comments say nothing of whose they are. The one exception is
-- the partition bound, FOR VALUES IN ('<tenant id>'): a LIST partition needs
-- it (docs/security.md, known limits).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

/** Policies and grants for direct access to a tenant partition (psql users with setup_connection). */
CREATE OR REPLACE FUNCTION tenantry.secure_tenant_partition(tid uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s text := (SELECT t.schema_name FROM tenantry.tenants t WHERE t.tenant_id = tid);
BEGIN
    PERFORM tenantry.secure_resources_partition(s, 'resources');
    EXECUTE format('COMMENT ON SCHEMA %I IS %L', s,
                   'Schema of a schema-isolated tenant (tenantry.tenants.schema_name says whose).');
    EXECUTE format('COMMENT ON TABLE %I.resources IS %L', s,
                   'Resources of a schema-isolated tenant (a partition of tenantry.resources).');
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO tenantry_app, tenantry_app_own, tenantry_app_shared', s);
    EXECUTE format('GRANT SELECT ON %I.resources TO tenantry_app_own, tenantry_app_shared', s);
    EXECUTE format('GRANT INSERT (tenant_id, name, data), UPDATE (name, data), DELETE ON %I.resources TO tenantry_app_own', s);
END
$$;
COMMENT ON FUNCTION tenantry.secure_tenant_partition(uuid) IS 'Internal: RLS (forced), policies, grants and comments (naming no tenant) on a tenant''s own schema and resources partition.';

/**
 * Moves a tenant between isolation models, keeping every row, share and
 * timestamp. 'schema': creates the tenant's schema (tenants.schema_name) and
 * its resources partition and moves the rows there; 'shared': moves them back
 * and drops the schema.
 */
CREATE OR REPLACE FUNCTION tenantry.set_tenant_isolation(tid uuid, model text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s text;
    current_model text;
    cols text := 'tenant_id, id, name, data, created_at, updated_at, created_by, shared_with';
BEGIN
    IF NOT (tenantry.admin_context() OR tenantry.operator_session()) THEN
        RAISE EXCEPTION 'moving tenants between isolation models needs a proven administrative context' USING ERRCODE = '42501';
    END IF;
    IF model IS NULL OR model NOT IN ('shared', 'schema') THEN
        RAISE EXCEPTION 'isolation must be "shared" or "schema"' USING ERRCODE = 'TN422', HINT = 'isolation';
    END IF;
    SELECT t.isolation, t.schema_name INTO current_model, s
    FROM tenantry.tenants t WHERE t.tenant_id = tid AND t.status <> 'deleted' FOR UPDATE;
    IF current_model IS NULL THEN
        RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404', HINT = 'tenant_id';
    END IF;
    IF current_model = model THEN
        RETURN;
    END IF;

    -- Rows leave one partition and enter another; the share records must not
    -- cascade away meanwhile, so their foreign key is lifted for the move and
    -- validated again before commit.
    LOCK TABLE tenantry.resources, tenantry.shared_resources IN SHARE ROW EXCLUSIVE MODE;
    ALTER TABLE tenantry.shared_resources DROP CONSTRAINT shared_resources_tenant_id_resource_id_fkey;

    IF model = 'schema' THEN
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION tenantry_owner', s);
        EXECUTE format('CREATE TABLE %I.resources (LIKE tenantry.resources INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS)', s);
        -- Lets ATTACH PARTITION skip scanning the new table; dropped once it
        -- is attached, as its definition names the tenant.
        EXECUTE format('ALTER TABLE %I.resources ADD CONSTRAINT resources_tenant CHECK (tenant_id = %L::uuid)', s, tid);
        EXECUTE format('INSERT INTO %I.resources (%s) SELECT %s FROM tenantry.resources_pooled WHERE tenant_id = $1', s, cols, cols)
            USING tid;
        DELETE FROM tenantry.resources_pooled WHERE tenant_id = tid;
        EXECUTE format('ALTER TABLE tenantry.resources ATTACH PARTITION %I.resources FOR VALUES IN (%L)', s, tid);
        EXECUTE format('ALTER TABLE %I.resources DROP CONSTRAINT resources_tenant', s);
        PERFORM tenantry.secure_tenant_partition(tid);
    ELSE
        EXECUTE format('ALTER TABLE tenantry.resources DETACH PARTITION %I.resources', s);
        EXECUTE format('INSERT INTO tenantry.resources (%s) SELECT %s FROM %I.resources', cols, cols, s);
        EXECUTE format('DROP SCHEMA %I CASCADE', s);
    END IF;

    ALTER TABLE tenantry.shared_resources
        ADD CONSTRAINT shared_resources_tenant_id_resource_id_fkey
        FOREIGN KEY (tenant_id, resource_id) REFERENCES tenantry.resources (tenant_id, id) ON DELETE CASCADE;
    UPDATE tenantry.tenants SET isolation = model WHERE tenant_id = tid;
    -- The move copied rows past the quota trigger (into a table not yet attached,
    -- out of one detached): count the tenant again.
    PERFORM tenantry.recount_quota_usage(tid);
END
$$;
COMMENT ON FUNCTION tenantry.set_tenant_isolation(uuid, text) IS 'Admin: moves a tenant between pooled (shared) and schema isolation in one transaction; loses nothing (rows, shares, timestamps).';
GRANT EXECUTE ON FUNCTION tenantry.set_tenant_isolation(uuid, text) TO tenantry_admin;

/**
 * Guide: create_tenant_schema(tid). Fixed: identifiers via %I, owned by
 * tenantry_owner, RLS forced on the new table, rows already held by the
 * tenant moved in (nothing lost); idempotent.
 */
CREATE OR REPLACE FUNCTION tenantry.create_tenant_schema(tid uuid)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenantry.set_tenant_isolation(tid, 'schema') $$;
COMMENT ON FUNCTION tenantry.create_tenant_schema(uuid) IS 'Guide API: gives a tenant its own schema (tenants.schema_name) with its resources table (same shape and guarantees) and switches it to schema isolation.';
GRANT EXECUTE ON FUNCTION tenantry.create_tenant_schema(uuid) TO tenantry_admin;

/**
 * Guide: setup_connection(). Fixed: current_tenant_schema() exists, the
 * schema name is quoted, and no SET SESSION AUTHORIZATION. Puts the current
 * tenant's schema (if schema-isolated) first on the session search_path.
 * Session scope: same pooler caveat as set_tenant_context.
 */
-- No SET search_path clause here: it would undo the search_path this
-- function exists to set. SECURITY INVOKER, every name schema-qualified.
CREATE OR REPLACE FUNCTION tenantry.setup_connection()
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    s text := tenantry.current_tenant_schema();
BEGIN
    IF tenantry.current_tenant_id() IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403',
            HINT = 'call set_tenant_context(tenant_id) first';
    END IF;
    PERFORM set_config('search_path',
        CASE WHEN s = 'tenantry' THEN 'tenantry, public'
             ELSE quote_ident(s) || ', tenantry, public' END,
        false);
END
$$;
COMMENT ON FUNCTION tenantry.setup_connection() IS 'Guide API: sets the session search_path to the current tenant''s schema (if schema-isolated), tenantry, public. Session scope: unsafe behind transaction pooling.';
GRANT EXECUTE ON FUNCTION tenantry.setup_connection() TO tenantry_app;

-- Schemas of tenants that were schema-isolated before these definitions:
-- brought to the current policies, grants and comments (the function is
-- idempotent).
DO $partitions$
DECLARE
    tid uuid;
BEGIN
    FOR tid IN SELECT tenant_id FROM tenantry.tenants WHERE isolation = 'schema' ORDER BY tenant_id LOOP
        PERFORM tenantry.secure_tenant_partition(tid);
    END LOOP;
END
$partitions$;
