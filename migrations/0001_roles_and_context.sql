-- =============================================================================
-- 0001 roles, schema and tenant context
--
-- Who may do what is decided here, once:
--   tenantry_owner       NOLOGIN BYPASSRLS. Owns every object. Nobody logs in
--                        as it; SECURITY DEFINER functions run as it and carry
--                        their own narrow checks (design.md, flaw 5).
--   tenantry_app         NOLOGIN. All tenant-scoped work. Owns nothing, no
--                        BYPASSRLS. Member of the two narrow roles below, so it
--                        carries every resource policy (the guide's semantics).
--   tenantry_app_own     resources of the current tenant and its descendants.
--   tenantry_app_shared  resources shared with the current tenant (read only).
--                        The server switches to one of these for list queries
--                        so the planner sees one policy arm, not an OR of two.
--   tenantry_admin       NOLOGIN. Cross-tenant administration (tenants, audit)
--                        through narrow grants; it cannot read resources.
--   tenantry_logger      NOLOGIN. Appends request-log rows, nothing else.
--   tenantry_server      LOGIN NOINHERIT. The HTTP server's login: it has no
--                        rights of its own and must SET LOCAL ROLE per transaction.
-- =============================================================================

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantry_owner') THEN
        CREATE ROLE tenantry_owner NOLOGIN BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantry_app_own') THEN
        CREATE ROLE tenantry_app_own NOLOGIN NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantry_app_shared') THEN
        CREATE ROLE tenantry_app_shared NOLOGIN NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantry_app') THEN
        CREATE ROLE tenantry_app NOLOGIN NOBYPASSRLS INHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantry_admin') THEN
        CREATE ROLE tenantry_admin NOLOGIN NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantry_logger') THEN
        CREATE ROLE tenantry_logger NOLOGIN NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantry_server') THEN
        CREATE ROLE tenantry_server LOGIN NOINHERIT NOBYPASSRLS;
    END IF;
END
$roles$;

GRANT tenantry_app_own, tenantry_app_shared TO tenantry_app;
GRANT tenantry_app, tenantry_admin, tenantry_logger TO tenantry_server;

COMMENT ON ROLE tenantry_owner IS 'Owns every tenantry object; BYPASSRLS so SECURITY DEFINER functions that must look across tenants work. Never granted to a login role.';
COMMENT ON ROLE tenantry_app IS 'Tenant-scoped work (psql users, the server). Carries every policy on resources. Owns nothing, no BYPASSRLS.';
COMMENT ON ROLE tenantry_app_own IS 'Narrow role: resources of the current tenant and its descendants only (fast list queries).';
COMMENT ON ROLE tenantry_app_shared IS 'Narrow role: resources shared with the current tenant, read only (fast "shared with me" queries).';
COMMENT ON ROLE tenantry_admin IS 'Cross-tenant administration: tenants, audit, metrics refresh. Cannot read tenant resources.';
COMMENT ON ROLE tenantry_logger IS 'Appends request-log rows for any tenant; cannot read anything.';
COMMENT ON ROLE tenantry_server IS 'Login role of the tenantry server. NOINHERIT: it must SET LOCAL ROLE to one of its granted roles in every transaction.';

CREATE SCHEMA IF NOT EXISTS tenantry;
ALTER SCHEMA tenantry OWNER TO tenantry_owner;
COMMENT ON SCHEMA tenantry IS 'tenantry: multi-tenancy enforced by PostgreSQL (tenants, RLS, sharing, keys, roles, usage).';
REVOKE ALL ON SCHEMA tenantry FROM PUBLIC;
GRANT USAGE ON SCHEMA tenantry TO tenantry_app, tenantry_app_own, tenantry_app_shared, tenantry_admin, tenantry_logger;
-- The server prepares statements before its transaction switches role; name
-- lookup needs USAGE. Privileges on tables and functions are checked when a
-- statement executes, i.e. as the role set with SET LOCAL ROLE.
GRANT USAGE ON SCHEMA tenantry TO tenantry_server;

-- The bookkeeping table of the migration runner predates this migration; hand it
-- over, and let the server read it (it refuses to serve a schema it does not match).
DO $bookkeeping$
BEGIN
    IF to_regclass('tenantry.schema_migrations') IS NOT NULL THEN
        ALTER TABLE tenantry.schema_migrations OWNER TO tenantry_owner;
        GRANT SELECT ON tenantry.schema_migrations TO tenantry_server, tenantry_admin;
    END IF;
END
$bookkeeping$;

-- From here on every object is created by, and owned by, tenantry_owner.
SET LOCAL ROLE tenantry_owner;

-- New functions are not executable by PUBLIC unless granted one by one.
ALTER DEFAULT PRIVILEGES FOR ROLE tenantry_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- -----------------------------------------------------------------------------
-- Tenant context: read side. Inlinable STABLE SQL over settings, so a policy
-- that compares an indexed column with them becomes an index condition and
-- stays distributable on Citus (no table access, no subquery).
-- -----------------------------------------------------------------------------

/**
 * The tenant of the current transaction or session; NULL when none is set.
 * nullif(..., '') because a transaction-local setting reads back as '' after
 * its transaction ends (design.md).
 */
CREATE FUNCTION tenantry.current_tenant_id()
RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid $$;
COMMENT ON FUNCTION tenantry.current_tenant_id() IS 'The current tenant (setting app.current_tenant_id), NULL when unset. Policies compare tenant_id with it; no tenant means no rows.';

/**
 * The current tenant followed by its live descendants. The list is computed
 * once when the context is set; it is only honoured when its first element is
 * the current tenant, so setting app.current_tenant_id alone can never widen
 * what a session sees beyond that one tenant.
 */
CREATE FUNCTION tenantry.visible_tenant_ids()
RETURNS uuid[]
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN (nullif(current_setting('app.visible_tenant_ids', true), '')::uuid[])[1]
             = tenantry.current_tenant_id()
        THEN nullif(current_setting('app.visible_tenant_ids', true), '')::uuid[]
        ELSE array_remove(ARRAY[tenantry.current_tenant_id()], NULL)
    END
$$;
COMMENT ON FUNCTION tenantry.visible_tenant_ids() IS 'The current tenant and its descendants (transitively), as computed by set_tenant_context; empty when no tenant is set.';

/** The member (user) acting in this transaction, if the caller said so. */
CREATE FUNCTION tenantry.current_user_id()
RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.current_user_id', true), '')::uuid $$;
COMMENT ON FUNCTION tenantry.current_user_id() IS 'The acting member (setting app.current_user_id), NULL when unset. Recorded as created_by / shared_by.';

/** Who acts, for the audit log: the caller's label, else the member, else the database login. */
CREATE FUNCTION tenantry.current_actor()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce(
        nullif(current_setting('app.actor', true), ''),
        'user:' || tenantry.current_user_id()::text,
        'db:' || session_user
    )
$$;
COMMENT ON FUNCTION tenantry.current_actor() IS 'Actor recorded in audit_log: app.actor when set (e.g. key:<id>, admin), else user:<current_user_id>, else db:<session user>.';

/** The schema holding the current tenant's resources ("tenantry" for pooled tenants). */
CREATE FUNCTION tenantry.current_tenant_schema()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN tenantry.current_tenant_id() IS NULL THEN NULL
                ELSE coalesce(nullif(current_setting('app.current_tenant_schema', true), ''), 'tenantry')
           END
$$;
COMMENT ON FUNCTION tenantry.current_tenant_schema() IS 'Schema of the current tenant''s resources: tenant_<hex> for schema-isolated tenants, tenantry otherwise; NULL without a tenant.';

GRANT EXECUTE ON FUNCTION
    tenantry.current_tenant_id(),
    tenantry.visible_tenant_ids(),
    tenantry.current_user_id(),
    tenantry.current_actor(),
    tenantry.current_tenant_schema()
TO tenantry_app, tenantry_app_own, tenantry_app_shared, tenantry_admin, tenantry_logger;

-- Error codes raised by tenantry functions (stable; mapped by the Rust library):
--   TN403 forbidden   TN404 not found   TN409 conflict   TN422 invalid input
