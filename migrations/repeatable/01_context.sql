-- =============================================================================
-- Tenant context: who the current transaction (or session) acts for.
--
-- Read side: inlinable STABLE SQL functions over settings, so a policy that
-- compares an indexed column with them becomes an index condition and stays
-- distributable on Citus (no table access, no subquery; docs/architecture.md).
-- Write side: the setters check the tenant as the owner (no tenant is set yet),
-- then store tenant, visible subtree, schema, user and actor.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

GRANT USAGE ON SCHEMA tenantry TO tenantry_app, tenantry_app_own, tenantry_app_shared, tenantry_admin, tenantry_logger;
-- The server prepares statements before its transaction switches role; name
-- lookup needs USAGE. Privileges on tables and functions are checked when a
-- statement executes, i.e. as the role set with SET LOCAL ROLE.
GRANT USAGE ON SCHEMA tenantry TO tenantry_server;

-- -----------------------------------------------------------------------------
-- Read side
-- -----------------------------------------------------------------------------

/**
 * The tenant of the current transaction or session; NULL when none is set.
 * nullif(..., '') because a transaction-local setting reads back as '' (not
 * NULL) for the rest of the session once its transaction has ended.
 */
CREATE OR REPLACE FUNCTION tenantry.current_tenant_id()
RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid $$;
COMMENT ON FUNCTION tenantry.current_tenant_id() IS 'The current tenant (setting app.current_tenant_id), NULL when unset. Policies compare tenant_id with it; no tenant means no rows.';

/**
 * The current tenant followed by its live descendants. The list is computed
 * once when the context is set; it is only honoured when its first element is
 * the current tenant, so setting app.current_tenant_id alone can never widen
 * what a session sees beyond that one tenant. The setting is parsed once: the
 * "first element" check compares text (policies evaluate this per row wherever
 * it is not an index condition, and parsing a uuid[] costs microseconds per
 * element).
 */
CREATE OR REPLACE FUNCTION tenantry.visible_tenant_ids()
RETURNS uuid[]
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN tenantry.current_tenant_id() IS NOT NULL
         AND left(current_setting('app.visible_tenant_ids', true), 38)
             IN ('{' || tenantry.current_tenant_id()::text || ',', '{' || tenantry.current_tenant_id()::text || '}')
        THEN current_setting('app.visible_tenant_ids', true)::uuid[]
        ELSE array_remove(ARRAY[tenantry.current_tenant_id()], NULL)
    END
$$;
COMMENT ON FUNCTION tenantry.visible_tenant_ids() IS 'The current tenant and its descendants (transitively), as computed by set_tenant_context; honoured only when its first element is the current tenant; empty when no tenant is set.';

/** The member (user) acting in this transaction, if the caller said so. */
CREATE OR REPLACE FUNCTION tenantry.current_user_id()
RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.current_user_id', true), '')::uuid $$;
COMMENT ON FUNCTION tenantry.current_user_id() IS 'The acting member (setting app.current_user_id), NULL when unset. Recorded as created_by / shared_by.';

/** Who acts, for the audit log: the caller's label, else the member, else the database login. */
CREATE OR REPLACE FUNCTION tenantry.current_actor()
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
CREATE OR REPLACE FUNCTION tenantry.current_tenant_schema()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN tenantry.current_tenant_id() IS NULL THEN NULL
                ELSE coalesce(nullif(current_setting('app.current_tenant_schema', true), ''), 'tenantry')
           END
$$;
COMMENT ON FUNCTION tenantry.current_tenant_schema() IS 'Schema of the current tenant''s resources: its tenants.schema_name (tenant_<random hex>) for schema-isolated tenants, tenantry otherwise; NULL without a tenant.';

GRANT EXECUTE ON FUNCTION
    tenantry.current_tenant_id(),
    tenantry.visible_tenant_ids(),
    tenantry.current_user_id(),
    tenantry.current_actor(),
    tenantry.current_tenant_schema()
TO tenantry_app, tenantry_app_own, tenantry_app_shared, tenantry_admin, tenantry_logger;

-- -----------------------------------------------------------------------------
-- Write side
-- -----------------------------------------------------------------------------

/**
 * A tenant and its live descendants, self first, then by depth: the one
 * definition of "subtree" every context setter uses. Reads the closure
 * table, so it is called from SECURITY DEFINER setters (as the owner); it is
 * granted to nobody. A set-returning SQL function without SET clauses, so the
 * planner inlines it into the caller's query (a scalar function with a
 * sub-select would be planned anew on every call).
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_subtree(tid uuid)
RETURNS TABLE (tenant_id uuid)
LANGUAGE sql STABLE
AS $$
    SELECT h.child_id
    FROM tenantry.tenant_hierarchy h
    JOIN tenantry.tenants c ON c.tenant_id = h.child_id
    WHERE h.parent_id = tid AND c.status <> 'deleted'
    ORDER BY h.depth, h.child_id
$$;
COMMENT ON FUNCTION tenantry.tenant_subtree(uuid) IS 'Internal: a tenant and its live descendants (self first, by depth), as the context setters store them in app.visible_tenant_ids. Not granted.';

/**
 * What a context needs to know of a tenant, in one lookup: its status, its
 * visible subtree and its resources schema; no row for an unknown tenant.
 * Inlined like tenant_subtree; the setters raise for unknown (TN404) and
 * deleted (TN403) tenants themselves, as a function call per request would
 * cost more than the check.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_context_row(tid uuid)
RETURNS TABLE (status text, visible uuid[], schema_name text)
LANGUAGE sql STABLE
AS $$
    SELECT t.status,
           ARRAY(SELECT s.tenant_id FROM tenantry.tenant_subtree(t.tenant_id) s),
           CASE WHEN t.isolation = 'schema' THEN t.schema_name ELSE 'tenantry' END
    FROM tenantry.tenants t
    WHERE t.tenant_id = tid
$$;
COMMENT ON FUNCTION tenantry.tenant_context_row(uuid) IS 'Internal: status, visible subtree (self first) and resources schema of a tenant, for the context setters; no row when the tenant does not exist. Not granted.';

/**
 * The guide's set_tenant_context: SESSION scope. Unsafe behind a connection
 * pooler (the next borrower of the connection inherits it); use
 * set_tenant_context_local inside a transaction instead. NULL clears.
 */
CREATE OR REPLACE FUNCTION tenantry.set_tenant_context(tid uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ctx record;
BEGIN
    IF tid IS NULL THEN
        PERFORM set_config('app.current_tenant_id', '', false),
                set_config('app.visible_tenant_ids', '', false),
                set_config('app.current_tenant_schema', '', false);
        RETURN;
    END IF;
    SELECT c.status, c.visible, c.schema_name INTO ctx FROM tenantry.tenant_context_row(tid) c;
    IF ctx.status IS NULL THEN
        RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404';
    ELSIF ctx.status = 'deleted' THEN
        RAISE EXCEPTION 'tenant % is deleted', tid USING ERRCODE = 'TN403';
    END IF;
    PERFORM set_config('app.current_tenant_id', tid::text, false),
            set_config('app.visible_tenant_ids', ctx.visible::text, false),
            set_config('app.current_tenant_schema', ctx.schema_name, false);
END
$$;
COMMENT ON FUNCTION tenantry.set_tenant_context(uuid) IS 'Guide API, session scope: sets the tenant for the rest of the session (NULL clears). UNSAFE behind a transaction-pooling pooler; servers use set_tenant_context_local.';

/**
 * The server's transaction-local context, in two halves. The server sends the
 * values it knows itself as literal SET LOCAL statements (tenant, user, actor:
 * each its own statement, so Citus propagates them), then calls this function,
 * which checks the tenant and writes only what needs the database: the visible
 * subtree (only for a tenant with live descendants; otherwise the setting is
 * emptied, and visible_tenant_ids() then means the tenant alone) and the schema
 * (only for a schema-isolated tenant). Usually nothing is EXECUTEd: each
 * EXECUTEd SET LOCAL costs a parse. Values left in the session are
 * overwritten, never inherited.
 */
CREATE OR REPLACE FUNCTION tenantry.complete_tenant_context_local()
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid := tenantry.current_tenant_id();
    ctx record;
    wanted text;
BEGIN
    IF tid IS NULL THEN
        RAISE EXCEPTION 'tenant id is required' USING ERRCODE = 'TN422', HINT = 'tenant_id';
    END IF;
    SELECT c.status, c.visible, c.schema_name INTO ctx FROM tenantry.tenant_context_row(tid) c;
    IF ctx.status IS NULL THEN
        RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404';
    ELSIF ctx.status = 'deleted' THEN
        RAISE EXCEPTION 'tenant % is deleted', tid USING ERRCODE = 'TN403';
    END IF;
    wanted := CASE WHEN cardinality(ctx.visible) > 1 THEN ctx.visible::text ELSE '' END;
    IF coalesce(current_setting('app.visible_tenant_ids', true), '') <> wanted THEN
        EXECUTE format('SET LOCAL app.visible_tenant_ids = %L', wanted);
    END IF;
    IF coalesce(nullif(current_setting('app.current_tenant_schema', true), ''), 'tenantry') <> ctx.schema_name THEN
        EXECUTE format('SET LOCAL app.current_tenant_schema = %L', ctx.schema_name);
    END IF;
    RETURN ctx.schema_name;
END
$$;
COMMENT ON FUNCTION tenantry.complete_tenant_context_local() IS 'Server half of the transaction-local context: after SET LOCAL app.current_tenant_id (and user, actor), checks the tenant (TN404 missing, TN403 deleted) and sets its visible subtree and schema only where they differ. Returns the schema. Safe behind poolers.';

/**
 * Transaction-local context for psql users and other drivers, in one call:
 * sets the tenant, user and actor it was given, then completes the context
 * exactly as the server does.
 */
CREATE OR REPLACE FUNCTION tenantry.set_tenant_context_local(tid uuid, uid uuid DEFAULT NULL, actor text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tid IS NULL THEN
        RAISE EXCEPTION 'tenant id is required' USING ERRCODE = 'TN422', HINT = 'tenant_id';
    END IF;
    EXECUTE format('SET LOCAL app.current_tenant_id = %L', tid);
    IF coalesce(current_setting('app.current_user_id', true), '') IS DISTINCT FROM coalesce(uid::text, '') THEN
        EXECUTE format('SET LOCAL app.current_user_id = %L', coalesce(uid::text, ''));
    END IF;
    IF coalesce(current_setting('app.actor', true), '') IS DISTINCT FROM coalesce(actor, '') THEN
        EXECUTE format('SET LOCAL app.actor = %L', coalesce(actor, ''));
    END IF;
    RETURN tenantry.complete_tenant_context_local();
END
$$;
COMMENT ON FUNCTION tenantry.set_tenant_context_local(uuid, uuid, text) IS 'Transaction-local tenant context (SET LOCAL, Citus-safe): tenant, visible subtree, schema, user, actor. Returns the tenant''s resource schema. Safe behind poolers.';

GRANT EXECUTE ON FUNCTION
    tenantry.set_tenant_context(uuid),
    tenantry.set_tenant_context_local(uuid, uuid, text),
    tenantry.complete_tenant_context_local()
TO tenantry_app;

/** Labels the actor of this transaction for the audit log (SET LOCAL, Citus-safe). */
CREATE OR REPLACE FUNCTION tenantry.set_actor_local(actor text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('SET LOCAL app.actor = %L', coalesce(actor, ''));
END
$$;
COMMENT ON FUNCTION tenantry.set_actor_local(text) IS 'Sets the audit actor label (e.g. admin) for the current transaction.';
GRANT EXECUTE ON FUNCTION tenantry.set_actor_local(text) TO tenantry_app, tenantry_admin;

/** Whether limits refuse this statement's writes: not for tenantry_admin, nor a superuser session. */
CREATE OR REPLACE FUNCTION tenantry.limits_refuse_writer()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT NOT (current_setting('role') = 'tenantry_admin'
                OR (current_setting('role') = 'none'
                    AND coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user), false)))
$$;
COMMENT ON FUNCTION tenantry.limits_refuse_writer() IS 'Internal (quotas in 03_resources.sql, limits in 09_limits.sql): false for writes as tenantry_admin or by a superuser session (counted, not refused), true for every tenant role. Not granted.';
