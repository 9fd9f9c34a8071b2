-- =============================================================================
-- Tenant context: who the current transaction (or session) acts for.
--
-- Read side: inlinable STABLE SQL functions over one setting, so a policy
-- that compares an indexed column with them becomes an index condition and
-- stays distributable on Citus (no table access, no subquery;
-- docs/architecture.md). Write side: only tenantry's SECURITY DEFINER
-- functions can write that setting, and only for a caller that proves its
-- context: a server by revealing the secret it committed to (enter_context),
-- or by a signature with a context key (enter_context_signed); an operator by
-- being a superuser or a member of tenantry_owner (set_tenant_context).
-- docs/security.md, "The tenant context", has the threat model.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

GRANT USAGE ON SCHEMA tenantry TO tenantry_app, tenantry_app_own, tenantry_app_shared, tenantry_admin, tenantry_logger;
-- The server prepares statements before its transaction switches role; name
-- lookup needs USAGE. Privileges on tables and functions are checked when a
-- statement executes, i.e. as the role set with SET LOCAL ROLE.
GRANT USAGE ON SCHEMA tenantry TO tenantry_server;

-- -----------------------------------------------------------------------------
-- Where the context lives
--
-- The verified context is kept in the setting backtrace_functions. Policies
-- must be able to read the context cheaply (an inlinable function over a
-- setting, evaluated once per index scan), and nothing but tenantry's own
-- SECURITY DEFINER functions may write it. PostgreSQL has no setting an
-- extension-free schema can declare with that property: placeholders such
-- as app.* are settable by every role, and PostgreSQL 15's GRANT SET ON
-- PARAMETER only binds parameters the server defines. backtrace_functions is
-- one of those (superuser-only, PGC_SUSET), readable by every role, and it
-- accepts exactly the characters the context needs (letters, digits, _ and
-- commas). Its own meaning, "print a backtrace when an error is raised in
-- one of these C functions", is inert for values that name no C function:
-- every value tenantry writes starts with "tenantry_".
--
-- Values:
--   tenantry_v1_<tenant>_<user>,a<actor>[,i<impersonator>],p<grants>,s<schema>[,m],v<tenant>,<descendant>,...
--       (the policies read only what follows ",v", which no other value has)
--       a tenant context (uuids as 32 hex digits; user 32 zeros when none;
--       actor as hex of its UTF-8 bytes; impersonator, when someone acts
--       as the member, the same way; grants: ALL, or the caller's
--       permission names between spaces, "." written "0" (names hold no
--       digit), read by authorize(); schema of the tenant's resources;
--       ,m when a descendant's rows are outside the tenant's own tables;
--       the visible subtree, self first). Transaction-local for the server.
--   tenantry_user_v1_<user>
--       a person signed in, before any tenant (current_user_id() only: no
--       tenant, no rows under any policy): what my_tenants(),
--       member_identity() and accept_invitation() need. Transaction-local.
--   tenantry_admin_v1_<actor>
--       an administrative context (actor as hex): what tenantry_admin needs
--       to change tenants (admin_context()). Transaction-local.
--   tenantry_c_<64 hex>_<key id>_<draw>
--       session value of a server connection between transactions: the
--       commitment (SHA-256) of the secret its next transaction must reveal,
--       the context key the session was opened with (retiring that key
--       ends the session: 12_context_keys.sql), and the session's draw from
--       tenantry.context_steps that made it (a rollback restores an older
--       value but not the older draw, so that value's secret is refused).
--   '' (default)   no context: policies see no tenant, so no rows.
--
-- The migrating superuser lets the owner role (and so its SECURITY DEFINER
-- functions) set it; no login or app role may set, reset or RESET ALL it to
-- anything but its default.
-- -----------------------------------------------------------------------------

-- Granted once per cluster (the grant is cluster-wide: databases migrating at
-- the same time would otherwise update the same catalog row).
RESET ROLE;
DO $grant$
BEGIN
    IF NOT has_parameter_privilege('tenantry_owner', 'backtrace_functions', 'SET') THEN
        GRANT SET ON PARAMETER backtrace_functions TO tenantry_owner;
    END IF;
END
$grant$;
SET LOCAL ROLE tenantry_owner;

-- -----------------------------------------------------------------------------
-- Read side: inlinable STABLE SQL over the setting (no table, no subquery).
-- -----------------------------------------------------------------------------

/**
 * The tenant of the current transaction or session; NULL when none is set
 * (or when the setting holds anything but a tenant context). The first
 * element of the visible subtree, which only a tenant context has (",v" is
 * its marker; no other value tenantry writes contains it): one read of the
 * setting, the cheapest form a policy can evaluate.
 */
CREATE OR REPLACE FUNCTION tenantry.current_tenant_id()
RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT nullif(pg_catalog.left(pg_catalog.split_part(pg_catalog.current_setting('backtrace_functions'), ',v', 2), 32), '')::uuid
$$;
COMMENT ON FUNCTION tenantry.current_tenant_id() IS 'The current tenant (from the verified context, see enter_context), NULL when none. Policies compare tenant_id with it; no tenant means no rows.';

/**
 * The current tenant followed by its live descendants, as verified with the
 * context; empty when no tenant is set. Parsed from the setting on each call
 * (policies call it once per index scan, where it is an index condition).
 * Every function in the inlined body is set up twice per execution (index
 * condition and its recheck) and, for the app roles, permission-checked each
 * time: format() adds both braces in one call where two || took two
 * (callgrind, docs/benchmarks.md: 2,000 of the policy's 27,000 instructions
 * per point read).
 */
CREATE OR REPLACE FUNCTION tenantry.visible_tenant_ids()
RETURNS uuid[]
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.format('{%s}', pg_catalog.split_part(pg_catalog.current_setting('backtrace_functions'), ',v', 2))::uuid[]
$$;
COMMENT ON FUNCTION tenantry.visible_tenant_ids() IS 'The current tenant and its live descendants (self first), as verified with the context; empty when no tenant is set.';

/** The member (user) acting in this transaction, if the context names one. */
CREATE OR REPLACE FUNCTION tenantry.current_user_id()
RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- Cast once, after the CASE: Citus evaluates the branches of an inlined
    -- CASE eagerly on the coordinator (column defaults of an INSERT), and the
    -- branch not taken must not fail.
    SELECT (CASE WHEN pg_catalog.left(pg_catalog.current_setting('backtrace_functions'), 12) = 'tenantry_v1_'
                  AND pg_catalog.substr(pg_catalog.current_setting('backtrace_functions'), 46, 32) <> '00000000000000000000000000000000'
                 THEN pg_catalog.substr(pg_catalog.current_setting('backtrace_functions'), 46, 32)
                 WHEN pg_catalog.left(pg_catalog.current_setting('backtrace_functions'), 17) = 'tenantry_user_v1_'
                 THEN pg_catalog.substr(pg_catalog.current_setting('backtrace_functions'), 18, 32)
            END)::uuid
$$;
COMMENT ON FUNCTION tenantry.current_user_id() IS 'The acting member named by the verified context (or the signed-in person of a user context), NULL when none. Recorded as created_by / shared_by.';

/**
 * Whether the caller of this transaction holds `permission`: the permission
 * set its verified context carries (a key's role, a member's roles, ALL for
 * an owner, an unrestricted server context or an operator). False without a
 * tenant context. Inlinable SQL over the setting, no table and no subquery:
 * usable in policies (also on Citus) and cheap enough for every row.
 */
CREATE OR REPLACE FUNCTION tenantry.authorize(permission text)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.left(pg_catalog.current_setting('backtrace_functions'), 12) = 'tenantry_v1_'
       AND pg_catalog.strpos(permission, '.') OPERATOR(pg_catalog.>) 0
       AND pg_catalog.strpos(permission, ' ') = 0
       AND (pg_catalog.strpos(pg_catalog.current_setting('backtrace_functions'), ',pALL,') OPERATOR(pg_catalog.>) 0
            OR pg_catalog.strpos(pg_catalog.current_setting('backtrace_functions'),
                                 ' ' OPERATOR(pg_catalog.||) pg_catalog.translate(permission, '.', '0') OPERATOR(pg_catalog.||) ' ')
               OPERATOR(pg_catalog.>) 0)
$$;
COMMENT ON FUNCTION tenantry.authorize(text) IS 'KeyHippo API: whether the current caller (key or member, through its roles; an owner, an operator or an unrestricted server context holds all) holds the permission. False without a tenant context. Reads the verified context only, so policies may call it (no subquery, Citus-safe).';

/**
 * Who acts, for the audit log. In a tenant context: the actor the context
 * names, else its member, else the database login. Without one (operator
 * and administrative work): the label set with set_actor_local, else the login.
 */
CREATE OR REPLACE FUNCTION tenantry.current_actor()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- The actor named by a tenant or administrative context, decoded once
    -- outside the CASE that picks its hex: Citus evaluates the branches of an
    -- inlined CASE eagerly on the coordinator, and decoding the branch not
    -- taken would fail.
    SELECT coalesce(
        nullif(pg_catalog.convert_from(pg_catalog.decode(CASE
            WHEN pg_catalog.left(pg_catalog.current_setting('backtrace_functions'), 12) = 'tenantry_v1_'
            THEN pg_catalog.split_part(pg_catalog.split_part(pg_catalog.current_setting('backtrace_functions'), ',a', 2), ',', 1)
            WHEN pg_catalog.left(pg_catalog.current_setting('backtrace_functions'), 18) = 'tenantry_admin_v1_'
            THEN pg_catalog.substr(pg_catalog.current_setting('backtrace_functions'), 19)
            ELSE '' END, 'hex'), 'UTF8'), ''),
        CASE
            WHEN pg_catalog.left(pg_catalog.current_setting('backtrace_functions'), 12) = 'tenantry_v1_'
            THEN coalesce('user:' || tenantry.current_user_id()::text, 'db:' || session_user)
            WHEN pg_catalog.left(pg_catalog.current_setting('backtrace_functions'), 17) = 'tenantry_user_v1_'
            THEN 'user:' || tenantry.current_user_id()::text
            WHEN pg_catalog.left(pg_catalog.current_setting('backtrace_functions'), 18) = 'tenantry_admin_v1_'
            THEN 'admin'
            ELSE coalesce(nullif(pg_catalog.current_setting('app.actor', true), ''), 'db:' || session_user)
        END)
$$;
COMMENT ON FUNCTION tenantry.current_actor() IS 'Actor recorded in audit_log: in a tenant context the actor it names (e.g. key:<id>, admin), else user:<current_user_id>, else db:<session user>; without one, app.actor (set_actor_local) or db:<session user>.';

/** Who acts as the member in this transaction (an impersonation), NULL otherwise. */
CREATE OR REPLACE FUNCTION tenantry.current_impersonator()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.left(pg_catalog.current_setting('backtrace_functions'), 12) = 'tenantry_v1_'
                 AND pg_catalog.strpos(pg_catalog.current_setting('backtrace_functions'), ',i') OPERATOR(pg_catalog.>) 0
                THEN pg_catalog.convert_from(pg_catalog.decode(
                     pg_catalog.split_part(pg_catalog.split_part(pg_catalog.current_setting('backtrace_functions'), ',i', 2), ',', 1),
                     'hex'), 'UTF8')
           END
$$;
COMMENT ON FUNCTION tenantry.current_impersonator() IS 'Who is acting as the member in this transaction (e.g. admin, user:<owner id>), from the verified context; NULL when nobody impersonates. Recorded in audit_log.impersonator.';

/** The schema holding the current tenant's resources ("tenantry" for pooled tenants). */
CREATE OR REPLACE FUNCTION tenantry.current_tenant_schema()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.left(pg_catalog.current_setting('backtrace_functions'), 12) OPERATOR(pg_catalog.<>) 'tenantry_v1_'
                THEN NULL
                -- Moving back to the shared tier: new rows go to the pooled
                -- tables, and the family holds them all.
                WHEN pg_catalog.strpos(pg_catalog.current_setting('backtrace_functions'), ',h,v') OPERATOR(pg_catalog.>) 0
                THEN 'tenantry'
                ELSE pg_catalog.split_part(pg_catalog.split_part(pg_catalog.current_setting('backtrace_functions'), ',s', 2), ',', 1)
           END
$$;
COMMENT ON FUNCTION tenantry.current_tenant_schema() IS 'Schema of the current tenant''s resources: its tenants.schema_name (tenant_<random hex>) for schema-isolated tenants, tenantry otherwise and while it moves back to the shared tier; NULL without a tenant.';

/**
 * Whether this transaction's administrative work was proven: a verified
 * administrative context (enter_context without a tenant, or an operator's
 * set_admin_context). tenantry_admin needs it to change tenants: the
 * server's login may SET ROLE tenantry_admin, and re-parenting another tenant
 * under one's own would widen its subtree. (The functions that create or
 * re-isolate tenants also accept an operator's session.)
 */
CREATE OR REPLACE FUNCTION tenantry.admin_context()
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.left(pg_catalog.current_setting('backtrace_functions'), 18) = 'tenantry_admin_v1_'
$$;
COMMENT ON FUNCTION tenantry.admin_context() IS 'True when this transaction''s administrative work is proven (a verified administrative context). The admin policy that changes tenants requires it.';

GRANT EXECUTE ON FUNCTION
    tenantry.admin_context(),
    tenantry.current_tenant_id(),
    tenantry.visible_tenant_ids(),
    tenantry.current_user_id(),
    tenantry.current_actor(),
    tenantry.current_tenant_schema(),
    tenantry.current_impersonator(),
    tenantry.authorize(text)
TO tenantry_app, tenantry_app_own, tenantry_app_shared, tenantry_admin, tenantry_logger;

-- -----------------------------------------------------------------------------
-- Write side
-- -----------------------------------------------------------------------------

/**
 * A tenant and its live descendants, self first, then by depth: the one
 * definition of "subtree" every context setter uses. Reads the closure
 * table, so it is called from SECURITY DEFINER setters (as the owner); it is
 * granted to nobody. A set-returning SQL function without SET clauses, so the
 * planner inlines it into the caller's query.
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
COMMENT ON FUNCTION tenantry.tenant_subtree(uuid) IS 'Internal: a tenant and its live descendants (self first, by depth), as the context stores them. Not granted.';

/**
 * What a context needs to know of a tenant, in one lookup: its status, its
 * visible subtree and its resources schema; no row for an unknown tenant.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_context_row(tid uuid)
RETURNS TABLE (status text, visible uuid[], schema_name text, mixed boolean)
LANGUAGE sql STABLE
AS $$
    SELECT t.status,
           ARRAY(SELECT s.tenant_id FROM tenantry.tenant_subtree(t.tenant_id) s),
           CASE WHEN t.isolation = 'schema' THEN t.schema_name ELSE 'tenantry' END,
           -- A descendant whose rows are not in the tenant's own tables: a
           -- schema tenant's any descendant (each has its own tables), a
           -- pooled tenant's schema descendants.
           EXISTS (SELECT 1 FROM tenantry.tenant_subtree(t.tenant_id) s
                   JOIN tenantry.tenants d ON d.tenant_id = s.tenant_id
                   WHERE d.tenant_id <> t.tenant_id AND (t.isolation = 'schema' OR d.isolation = 'schema'))
    FROM tenantry.tenants t
    WHERE t.tenant_id = tid
$$;
COMMENT ON FUNCTION tenantry.tenant_context_row(uuid) IS 'Internal: status, visible subtree (self first), resources schema of a tenant and whether a descendant''s rows are outside its own tables (mixed), for the context setters; no row when the tenant does not exist. Not granted.';

/**
 * The tenant's part of a context value: ",s<schema>[,m][,h],v<self>,<descendant>,...";
 * ",m" when a descendant's rows are outside the tenant's own tables (the
 * server then reads the whole table family instead of the tenant's own table),
 * ",m,h" while the tenant moves back to the shared tier (its own rows are in
 * both tables: it reads the family and holds its tier, use_tenant_schema).
 * Raises TN422 without a tenant, TN404 for an unknown tenant and TN403 for a
 * deleted one. Servers cache it (it changes only with the hierarchy, the
 * tenant's status or its isolation) and send it back with enter_context.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_context_part(tid uuid)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ctx record;
    moving_back boolean;
BEGIN
    IF tid IS NULL THEN
        RAISE EXCEPTION 'tenant id is required' USING ERRCODE = 'TN422', HINT = 'tenant_id';
    END IF;
    SELECT c.status, c.visible, c.schema_name, c.mixed INTO ctx FROM tenantry.tenant_context_row(tid) c;
    IF ctx.status IS NULL THEN
        RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404';
    ELSIF ctx.status = 'deleted' THEN
        RAISE EXCEPTION 'tenant % is deleted', tid USING ERRCODE = 'TN403';
    END IF;
    -- Moving back to the shared tier: its rows are in both tables until the
    -- cut-over, so it reads the whole family (,m) and holds its tier for the
    -- transaction (,h: use_tenant_schema).
    moving_back := coalesce((SELECT t.moving_to = 'shared' FROM tenantry.tenants t WHERE t.tenant_id = tid), false);
    RETURN ',s' || ctx.schema_name || CASE WHEN ctx.mixed OR moving_back THEN ',m' ELSE '' END
        || CASE WHEN moving_back THEN ',h' ELSE '' END || ',v'
        || array_to_string(ARRAY(SELECT replace(v::text, '-', '') FROM unnest(ctx.visible) v), ',');
END
$$;
COMMENT ON FUNCTION tenantry.tenant_context_part(uuid) IS 'Internal: the tenant''s part of a context value (schema, whether it reads the whole family, whether it is moving back to the shared tier, visible subtree); TN422/TN404/TN403 for no, unknown and deleted tenants. Not granted.';

/**
 * The grants part of a context value: ' a0b c0d ' for the grants that are
 * permission names (the '.' written as '0'), in order; '  ' when none is.
 * A loop, not a sub-select, so context_value has no sub-query and stays
 * inlinable: PostgreSQL never inlines an SQL function with one, and then
 * parses and plans its body again in every statement that calls it (about
 * 70 µs, the largest part of each request's database time before). No SET
 * clause (its callers pin search_path; a SET would cost a configuration
 * save and restore per call), every name qualified; granted to nobody.
 */
CREATE OR REPLACE FUNCTION tenantry.context_grants(grants text[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    g text;
    kept text[] := '{}';
BEGIN
    FOREACH g IN ARRAY grants LOOP
        IF g OPERATOR(pg_catalog.~) '^[a-z_]+\.[a-z_]+$' THEN
            kept := kept OPERATOR(pg_catalog.||) g;
        END IF;
    END LOOP;
    RETURN pg_catalog.translate(' ' OPERATOR(pg_catalog.||) pg_catalog.array_to_string(kept, ' ') OPERATOR(pg_catalog.||) ' ', '.', '0');
END
$$;
COMMENT ON FUNCTION tenantry.context_grants(text[]) IS 'Internal: the grants part of a context value (the permission names among grants, ''.'' written as ''0'', space-separated and space-enclosed). Not granted.';

/**
 * A whole context value: tenant, user, actor, the caller's grants (NULL:
 * all), who impersonates the member (if anyone) and the tenant's part (computed when NULL). The one place the format
 * is written. Without a tenant: a user context when a user is named, else an
 * administrative context. Grants that are not permission names are left out.
 * Plain SQL without SET clauses or sub-queries, every name qualified, so it
 * is inlined into its callers (which are the owner's SECURITY DEFINER
 * functions; it is granted to nobody): the test
 * the_context_functions_of_every_request_are_inlined_by_the_planner
 * (crates/tenantry-db/tests/plans.rs) keeps it so.
 */
CREATE OR REPLACE FUNCTION tenantry.context_value(tid uuid, uid uuid, actor text, grants text[], impersonator text, tenant_part text)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN tid IS NULL AND uid IS NOT NULL
        THEN 'tenantry_user_v1_' OPERATOR(pg_catalog.||) pg_catalog.replace(uid::text, '-', '')
        WHEN tid IS NULL
        THEN 'tenantry_admin_v1_' OPERATOR(pg_catalog.||) pg_catalog.encode(pg_catalog.convert_to(coalesce(actor, ''), 'UTF8'), 'hex')
        ELSE 'tenantry_v1_' OPERATOR(pg_catalog.||) pg_catalog.replace(tid::text, '-', '') OPERATOR(pg_catalog.||) '_'
        OPERATOR(pg_catalog.||) coalesce(pg_catalog.replace(uid::text, '-', ''), '00000000000000000000000000000000')
        OPERATOR(pg_catalog.||) ',a' OPERATOR(pg_catalog.||) pg_catalog.encode(pg_catalog.convert_to(coalesce(actor, ''), 'UTF8'), 'hex')
        OPERATOR(pg_catalog.||) CASE WHEN impersonator IS NULL THEN '' ELSE
            ',i' OPERATOR(pg_catalog.||) pg_catalog.encode(pg_catalog.convert_to(impersonator, 'UTF8'), 'hex') END
        OPERATOR(pg_catalog.||) ',p' OPERATOR(pg_catalog.||) CASE WHEN grants IS NULL THEN 'ALL' ELSE
            tenantry.context_grants(grants) END
        OPERATOR(pg_catalog.||) coalesce(tenant_part, tenantry.tenant_context_part(tid))
        END
$$;
COMMENT ON FUNCTION tenantry.context_value(uuid, uuid, text, text[], text, text) IS 'Internal: the context value for tenant, user, actor, grants (NULL: all) and impersonator with the tenant''s part (looked up when NULL); without a tenant, a user context when a user is named, else an administrative context for the actor. Not granted.';

/**
 * The part of a context both enter functions set, once its proof checked out:
 * '' without a tenant (administrative or user context), the server's cached part when
 * it names the tenant first, else the tenant's part looked up; NULL (refused)
 * when the connection is not in the role such a transaction runs as (other
 * SQL left it in another one) or the cached part is another tenant's.
 * An administrative context is tenantry_admin's, except the request-log
 * writer's (actor request_log), which is tenantry_logger's (policy
 * request_log_append): the logger takes no other actor, so a context entered
 * for appending log rows is never a tenantry_admin one, and tenantry_admin
 * never the writer's.
 * Plain SQL, inlined into its callers; granted to nobody.
 */
CREATE OR REPLACE FUNCTION tenantry.checked_context_part(tid uuid, uid uuid, actor text, tenant_part text)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN tid IS NULL AND uid IS NULL
        THEN CASE WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.=)
                       CASE WHEN COALESCE(actor, '') OPERATOR(pg_catalog.=) 'request_log'
                            THEN 'tenantry_logger' ELSE 'tenantry_admin' END
                  THEN '' END
        WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.<>) 'tenantry_app' THEN NULL
        WHEN tid IS NULL THEN ''
        WHEN tenant_part IS NULL THEN tenantry.tenant_context_part(tid)
        WHEN pg_catalog.strpos(tenant_part, ',v' OPERATOR(pg_catalog.||) pg_catalog.replace(tid::text, '-', '')) OPERATOR(pg_catalog.>) 0
        THEN tenant_part
    END
$$;
COMMENT ON FUNCTION tenantry.checked_context_part(uuid, uuid, text, text) IS 'Internal: the context part enter_context and enter_context_signed set (empty for an administrative or user context), or NULL when the connection is in the wrong role (for an administrative context tenantry_admin, or tenantry_logger for the request-log writer''s, actor request_log, and for no other actor; tenantry_app otherwise) or a cached part is another tenant''s. Not granted.';

/**
 * Whether a context value's route (the schema of the tenant's own tables in
 * its part, ",s<schema>") still says where the tenant's rows are, given its
 * tenants row now. False once a tier move's cut-over committed after the
 * server cached the part: a statement that read the tenant's own table by
 * that route found none of its rows, or only some. (A move back to the
 * shared tier that began since does not make it false: its batches wait for
 * the transactions older than them, tier_move_wait, and a transaction that
 * begins with the part of before the move is refused by use_tenant_schema.
 * Two cut-overs within a cache's lifetime, there and back, make it true
 * again: the caches' lifetime and the servers' notices bound that.) Plain
 * SQL, inlined into its callers; granted to nobody.
 */
CREATE OR REPLACE FUNCTION tenantry.context_route_matches(ctx text, isolation text, schema_name text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT pg_catalog.split_part(pg_catalog.split_part(ctx, ',s', 2), ',', 1)
               OPERATOR(pg_catalog.=) CASE WHEN isolation OPERATOR(pg_catalog.=) 'schema' THEN schema_name ELSE 'tenantry' END
$$;
COMMENT ON FUNCTION tenantry.context_route_matches(text, text, text) IS 'Internal: whether a tenant context value''s route (its part''s schema) agrees with the tenant''s isolation and schema now. Not granted.';

/**
 * Whether the route the server cached for the current tenant still leads to
 * its rows and its descendants' (context_route_matches against its tenants
 * row as of this statement; for a part over the tenant's own tables alone,
 * no ",m", that none of the descendants it lists has moved to the schema
 * tier since). The server asks after a read by a cached route, later in the
 * same transaction (so with a later snapshot than the read's): true means
 * the read saw the rows where they were; false that a move's cut-over may
 * have taken them elsewhere first, and the server reads again with a fresh
 * part. True without a tenant context.
 */
CREATE OR REPLACE FUNCTION tenantry.context_route_current()
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me uuid := tenantry.current_tenant_id();
    ctx text;
    visible uuid[];
BEGIN
    -- PL/pgSQL (plan kept per session): asked after every listing.
    IF me IS NULL THEN
        RETURN true;
    END IF;
    ctx := current_setting('backtrace_functions');
    IF NOT coalesce((SELECT tenantry.context_route_matches(ctx, t.isolation, t.schema_name)
                     FROM tenantry.tenants t WHERE t.tenant_id = me), true) THEN
        RETURN false;
    END IF;
    -- Without ",m" the part reads the tenant's own table (a schema tenant
    -- with descendants always has it): a descendant moved to its schema since
    -- took its rows out of that table. The part's own list, self first, so a
    -- tenant without descendants pays one comparison.
    IF strpos(split_part(ctx, ',v', 1), ',m') = 0 THEN
        visible := tenantry.visible_tenant_ids();
        IF cardinality(visible) > 1 THEN
            RETURN NOT EXISTS (SELECT 1 FROM tenantry.tenants d
                               WHERE d.tenant_id = ANY (visible[2:]) AND d.isolation = 'schema');
        END IF;
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION tenantry.context_route_current() IS 'Server connections: whether the current tenant''s cached route (its context part''s schema, and for a part over its own tables alone that no descendant it lists is schema-isolated) still agrees with the tenants table; false once a tier move''s cut-over committed since the part was cached (the server then reads again with a fresh part). True without a tenant context. Reveals nothing of another tenant.';
GRANT EXECUTE ON FUNCTION tenantry.context_route_current() TO tenantry_app, tenantry_app_own, tenantry_app_shared;

/** The HMAC-SHA-256 of msg under context key key_id; NULL for an unknown key. */
CREATE OR REPLACE FUNCTION tenantry.context_mac(key_id integer, msg text)
RETURNS bytea
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mac bytea;
BEGIN
    SELECT sha256(k.outer_pad || sha256(k.inner_pad || convert_to(msg, 'UTF8'))) INTO mac
    FROM tenantry.context_keys k
    WHERE k.key_id = context_mac.key_id;
    RETURN mac;
END
$$;
COMMENT ON FUNCTION tenantry.context_mac(integer, text) IS 'Internal: HMAC-SHA-256 (RFC 2104) of a message under a context key, as the server computes it; NULL for an unknown key. Not granted.';

/**
 * The draw a server connection's context session is opened with: the next
 * value of tenantry.context_steps, which becomes this session's currval().
 * The server signs it into open_context_session, which accepts it only while
 * it is still the session's last draw: an opening cannot be replayed (any
 * later draw, by enter_context or another call of this function, has moved
 * currval() past it, and no rollback moves it back).
 */
CREATE OR REPLACE FUNCTION tenantry.context_session_nonce()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SECURITY DEFINER
AS $$
BEGIN
    -- PL/pgSQL: its body is not resolved when it is created, so Citus can
    -- create it on workers, which have no context_steps (never called there).
    RETURN nextval('tenantry.context_steps');
END
$$;
COMMENT ON FUNCTION tenantry.context_session_nonce() IS 'Server connections: the draw (from tenantry.context_steps) that the next open_context_session of this session must be signed over; each call ends the session''s current chain (enter_context wants the draw its session value records).';
GRANT EXECUTE ON FUNCTION tenantry.context_session_nonce() TO tenantry_app;

/**
 * Opens a server connection's context session: the server proves, with a
 * context key, that it chose the commitment (SHA-256 of a secret only it
 * holds), bound to this backend, to this session's last draw (nonce, from
 * context_session_nonce) and valid until expires_at (Unix ms). From then on
 * each transaction's enter_context reveals the current secret and commits to
 * the next one. Answers ok, or why not (unknown key, bad signature, other
 * backend, expired, stale: the nonce is not the session's last draw); nothing
 * is set then. The server opens again after every rolled-back transaction
 * that revealed a secret.
 */
CREATE OR REPLACE FUNCTION tenantry.open_context_session(pid integer, nonce bigint, expires_at bigint, commitment bytea, key_id integer, mac bytea)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SECURITY DEFINER
AS $$
DECLARE
    expected bytea := tenantry.context_mac(key_id, 'open|' || pid || '|' || nonce || '|' || expires_at || '|' || encode(commitment, 'hex'));
    last_draw bigint;
BEGIN
    IF expected IS NULL THEN
        RETURN 'unknown key';
    ELSIF mac IS NULL OR expected <> mac THEN
        RETURN 'bad signature';
    ELSIF pid IS DISTINCT FROM pg_backend_pid() THEN
        RETURN 'other backend';
    ELSIF expires_at <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint THEN
        RETURN 'expired';
    ELSIF length(commitment) <> 32 THEN
        RETURN 'bad signature';
    END IF;
    BEGIN
        last_draw := currval('tenantry.context_steps');
    EXCEPTION WHEN object_not_in_prerequisite_state THEN
        -- No draw in this session (none yet, or DISCARD SEQUENCES since).
        RETURN 'stale';
    END;
    IF nonce IS DISTINCT FROM last_draw THEN
        RETURN 'stale';
    END IF;
    PERFORM set_config('backtrace_functions', 'tenantry_c_' || encode(commitment, 'hex') || '_' || key_id || '_' || nonce, false);
    RETURN 'ok';
END
$$;
COMMENT ON FUNCTION tenantry.open_context_session(integer, bigint, bigint, bytea, integer, bytea) IS 'Server connections: starts the commit-reveal chain of this backend with a commitment signed by a context key (HMAC over open|pid|nonce|expires_at|commitment hex), bound to the session''s last draw (context_session_nonce), so that no opening can be replayed. Returns ok or the reason for refusing; a refusal sets nothing.';
GRANT EXECUTE ON FUNCTION tenantry.open_context_session(integer, bigint, bigint, bytea, integer, bytea) TO tenantry_app;

/**
 * The server's transaction context, one call per transaction on a connection
 * whose session it opened: reveals the secret whose SHA-256 is the current
 * commitment, commits to the next one, and sets tenant, user, actor, the
 * caller's grants (NULL: all; authorize() reads them), the impersonator
 * (when someone acts as the member) and the tenant's part
 * (looked up when NULL) for this transaction only (without a tenant: a user
 * context when a user is named, else an administrative context for the
 * actor, see admin_context(); its part is ''). Returns the
 * tenant's part, which the server caches; NULL when the reveal does not match
 * (a forged, replayed or second call) or the key the session was opened with
 * has been retired: nothing is set then, and the transaction sees no tenant.
 *
 * Each accepted call draws from tenantry.context_steps and records the draw
 * beside the next commitment; a reveal is accepted only while the session's
 * last draw (currval, which no rollback undoes) is the one recorded beside its
 * commitment. A rolled-back transaction rolls the commitment back but not the
 * draw, so the secret it revealed is never accepted again: the server opens
 * the session afresh instead (open_context_session).
 */
CREATE OR REPLACE FUNCTION tenantry.enter_context(reveal bytea, next_commitment bytea, tid uuid, uid uuid, actor text, grants text[], impersonator text, tenant_part text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SECURITY DEFINER
AS $$
DECLARE
    session text := current_setting('backtrace_functions');
    part text;
    -- set_config's answers, unused: an assignment is evaluated as a simple
    -- expression, where PERFORM runs the executor (measured with callgrind:
    -- 17,000 instructions fewer per call, about 4 %).
    done text;
BEGIN
    IF reveal IS NULL OR length(next_commitment) IS DISTINCT FROM 32
       OR left(session, 76) <> 'tenantry_c_' || encode(sha256(reveal), 'hex') || '_'
       -- A server session never makes temporary objects: one that has was
       -- used by other SQL, whose temporary tables would shadow the team's
       -- unqualified table names in this tenant's statements.
       OR pg_my_temp_schema() <> 0
       -- Only open_context_session and this function write a value that
       -- matched above: tenantry_c_<commitment>_<key id>_<draw>. A draw other
       -- than the session's last: the reveal was made before, in a
       -- transaction that rolled back after its draw (or this session drew
       -- since). OR stops at the first true argument, so currval runs only
       -- for a matching reveal; it raises 55000 when the session has no draw
       -- at all (DISCARD SEQUENCES), and the server closes the connection.
       OR split_part(session, '_', 5) IS DISTINCT FROM currval('tenantry.context_steps')::text THEN
        RETURN NULL;
    END IF;
    -- The key the session was opened with was retired (12_context_keys.sql):
    -- the session ends with it.
    IF NOT EXISTS (SELECT 1 FROM tenantry.context_keys k WHERE k.key_id = split_part(session, '_', 4)::integer) THEN
        RETURN NULL;
    END IF;
    part := tenantry.checked_context_part(tid, uid, actor, tenant_part);
    IF part IS NULL THEN
        RETURN NULL;
    END IF;
    done := set_config('backtrace_functions', 'tenantry_c_' || encode(next_commitment, 'hex') || '_' || split_part(session, '_', 4) || '_' || nextval('tenantry.context_steps'), false);
    done := set_config('backtrace_functions', tenantry.context_value(tid, uid, actor, grants, impersonator, part), true);
    RETURN part;
END
$$;
COMMENT ON FUNCTION tenantry.enter_context(bytea, bytea, uuid, uuid, text, text[], text, text) IS 'Server connections: this transaction''s tenant (or user, or administrative) context with the caller''s grants, proven by revealing the secret committed to by the previous transaction (or open_context_session). Returns the tenant''s part (schema, subtree) for the server''s cache; NULL, with nothing set, when the reveal does not match, was made before (the session drew from context_steps since: a rolled-back transaction revealed it) or the session''s context key was retired.';
GRANT EXECUTE ON FUNCTION tenantry.enter_context(bytea, bytea, uuid, uuid, text, text[], text, text) TO tenantry_app, tenantry_admin, tenantry_logger;

/**
 * Whether this session holds temporary tables, views, sequences or types.
 * PostgreSQL looks up relation and type names in the session's temporary
 * schema before every other schema unless search_path lists pg_temp: a
 * temporary domain named uuid, whose CHECK calls a function, would run that
 * function inside the next transaction on the connection, which may be
 * another tenant's (every `::uuid` of an inlined policy function or of the
 * library's statements). Through pg_depend's index on the referenced object
 * (pg_class and pg_type have none on the namespace alone, and a scan of
 * them on every transaction would grow with the schema tenants); an empty
 * temporary schema, which a REFRESH ... CONCURRENTLY through a pooler leaves
 * behind for good, does not count.
 */
CREATE OR REPLACE FUNCTION tenantry.session_holds_temp_objects()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL, for its cached plan (an SQL function with a SET clause is
    -- planned again at every call); the lookup runs only in a session that
    -- ever made a temporary object.
    IF pg_my_temp_schema() = 0 THEN
        RETURN false;
    END IF;
    RETURN EXISTS (SELECT 1 FROM pg_depend d
                   WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = pg_my_temp_schema()
                     AND d.classid IN ('pg_class'::regclass, 'pg_type'::regclass));
END
$$;
COMMENT ON FUNCTION tenantry.session_holds_temp_objects() IS 'Internal: whether this session holds temporary relations or types, whose names PostgreSQL looks up before every schema (pg_temp unlisted): such a session takes no tenant context and runs no request log batch.';
GRANT EXECUTE ON FUNCTION tenantry.session_holds_temp_objects() TO tenantry_app, tenantry_app_own, tenantry_app_shared,
    tenantry_admin, tenantry_logger, tenantry_server;

/**
 * Refuses (55000) a session holding temporary relations or types
 * (session_holds_temp_objects): the library sends it ahead of transactions
 * that prove no context (request log batches, key verification) on
 * connections shared through a pooler, and closes the connection when it
 * raises.
 */
CREATE OR REPLACE FUNCTION tenantry.assert_no_temp_objects()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tenantry.session_holds_temp_objects() THEN
        RAISE EXCEPTION 'this session holds temporary tables or types, which could stand in for the names of another tenant''s transaction; it is closed'
            USING ERRCODE = '55000', HINT = 'close the connection; DISCARD TEMP clears the session';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.assert_no_temp_objects() IS 'Server connections behind a pooler: 55000 when the session holds temporary relations or types (session_holds_temp_objects); the library then closes the connection and runs the transaction again on another.';
GRANT EXECUTE ON FUNCTION tenantry.assert_no_temp_objects() TO tenantry_app, tenantry_app_own, tenantry_app_shared,
    tenantry_admin, tenantry_logger, tenantry_server;

/**
 * Refuses (TN503) a server connection that holds statements prepared by SQL
 * (PREPARE), which the server never makes: SQL the application ran through
 * the library on this connection earlier could have replaced one of the
 * server's cached statements under its name, to run in the next tenant's
 * context. The library calls it before enter_context on a connection whose
 * previous transaction ran SQL it did not write itself, and closes the
 * connection when it raises; it reads only this session's statements.
 */
CREATE OR REPLACE FUNCTION tenantry.assert_clean_session()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements p WHERE p.from_sql) THEN
        RAISE EXCEPTION 'this connection holds statements prepared by SQL; it is closed'
            USING ERRCODE = 'TN503';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.assert_clean_session() IS 'Server connections: TN503 when the session holds statements prepared by SQL (PREPARE), which could stand in for the server''s own under their names; the library then closes the connection. Superseded by assert_session_unchanged(text), which also checks the session''s settings; kept for servers of the previous version during an upgrade.';
-- Granted to every role the server's login can be in when SQL switched it
-- (SET ROLE, RESET ROLE): the check then refuses with TN503, never with a
-- permission error that would reach another tenant's request as a 403.
GRANT EXECUTE ON FUNCTION tenantry.assert_clean_session() TO tenantry_app, tenantry_app_own, tenantry_app_shared,
    tenantry_admin, tenantry_logger, tenantry_server;

/**
 * The session settings a server connection must carry unchanged from one
 * transaction to the next: which tables unqualified names reach
 * (search_path), whether a commit is durable (synchronous_commit), the
 * defaults every transaction takes (isolation, read only), the role, row
 * security, timeouts, how values are written and read (encoding, dates,
 * numbers, bytes, NULL comparisons), and the planner's and executor's main
 * knobs. SQL an application runs through the library can change any of
 * them for the rest of the session (SET without LOCAL, set_config(…,
 * false)); the next tenant's transaction on the connection would run with
 * them.
 */
CREATE OR REPLACE FUNCTION tenantry.session_setting_names()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ARRAY['role', 'search_path', 'synchronous_commit', 'default_transaction_isolation', 'default_transaction_read_only', 'default_transaction_deferrable',
        'row_security', 'statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout', 'idle_session_timeout', 'client_encoding',
        'standard_conforming_strings', 'DateStyle', 'IntervalStyle', 'TimeZone', 'extra_float_digits', 'bytea_output',
        'transform_null_equals', 'array_nulls', 'xmloption', 'lc_monetary', 'lc_numeric', 'lc_time',
        'default_text_search_config', 'check_function_bodies', 'default_tablespace', 'temp_tablespaces', 'work_mem', 'hash_mem_multiplier',
        'plan_cache_mode', 'jit', 'enable_seqscan', 'enable_indexscan', 'enable_bitmapscan', 'enable_indexonlyscan',
        'enable_nestloop', 'enable_hashjoin', 'enable_mergejoin', 'enable_sort', 'enable_hashagg', 'random_page_cost',
        'seq_page_cost', 'cpu_tuple_cost', 'max_parallel_workers_per_gather', 'from_collapse_limit', 'join_collapse_limit', 'geqo',
        'cursor_tuple_fraction']::text[]
$$;
COMMENT ON FUNCTION tenantry.session_setting_names() IS 'Server connections: the settings (and role) that must not change between two transactions of a connection, which session_settings() hashes and assert_session_unchanged() checks.';
GRANT EXECUTE ON FUNCTION tenantry.session_setting_names() TO tenantry_app, tenantry_app_own, tenantry_app_shared,
    tenantry_admin, tenantry_logger, tenantry_server;

/**
 * An MD5 of the current values of session_setting_names() and of the current
 * and session users. Its body names each setting (generated here from
 * session_setting_names()): an SQL function over unnest() is planned on
 * every call (0.28 ms), the generated expression costs 0.03 ms. No SET
 * search_path: the session's own is one of them (every name is
 * schema-qualified instead).
 */
DO $gen$
BEGIN
    EXECUTE pg_catalog.format($create$
CREATE OR REPLACE FUNCTION tenantry.session_settings()
RETURNS text
LANGUAGE sql STABLE
AS $body$
    SELECT pg_catalog.md5(pg_catalog.concat_ws(E'\n', current_user, session_user, %s))
$body$
    $create$, (SELECT pg_catalog.string_agg(pg_catalog.format('pg_catalog.current_setting(%L)', n), ', ' ORDER BY i)
               FROM pg_catalog.unnest(tenantry.session_setting_names()) WITH ORDINALITY u(n, i)));
END
$gen$;
COMMENT ON FUNCTION tenantry.session_settings() IS 'Server connections: an MD5 of the settings in session_setting_names() and of the current and session users (its body is generated from that list). The library records it when it opens a connection and hands it to assert_session_unchanged() after a transaction that ran SQL it did not write.';
GRANT EXECUTE ON FUNCTION tenantry.session_settings() TO tenantry_app, tenantry_app_own, tenantry_app_shared,
    tenantry_admin, tenantry_logger, tenantry_server;

/**
 * assert_clean_session() and more: also TN503 when SQL run on the connection
 * in an earlier transaction changed its role or one of
 * session_setting_names() for the session (a search_path naming another
 * tenant's schema answered the next tenant's reads with no rows and put its
 * inserts there; synchronous_commit = off made its commits non-durable; a
 * role switch failed its requests). Fast when nothing changed: the MD5
 * equals `expected`, what session_settings() said when the library opened
 * the connection (or after its last reload). When it differs, the settings
 * are read with their sources (pg_settings, about 1 ms): a configuration
 * reload (ALTER SYSTEM, postgresql.conf) changes values whose source is not
 * the session, and is no reason to refuse. Returns the current MD5, which
 * the library keeps for the next check.
 */
CREATE OR REPLACE FUNCTION tenantry.assert_session_unchanged(expected text)
RETURNS text
LANGUAGE plpgsql
-- No SET search_path: the session's own is one of the settings it checks
-- (every name below is schema-qualified instead).
AS $$
DECLARE
    current text := tenantry.session_settings();
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements p WHERE p.from_sql) THEN
        RAISE EXCEPTION 'this connection holds statements prepared by SQL; it is closed'
            USING ERRCODE = 'TN503';
    END IF;
    -- A cursor declared WITH HOLD outlives its transaction: the next
    -- tenant's transaction could FETCH the rows it selected (found by an
    -- audit). The library closes them before reusing the connection
    -- (session.rs); any still open here was left by other means.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_cursors c WHERE c.is_holdable) THEN
        RAISE EXCEPTION 'SQL run on this connection left a cursor open (WITH HOLD); it is closed'
            USING ERRCODE = 'TN503';
    END IF;
    -- Temporary tables or types made by that SQL (session_holds_temp_objects).
    IF tenantry.session_holds_temp_objects() THEN
        RAISE EXCEPTION 'SQL run on this connection made temporary tables or types; it is closed'
            USING ERRCODE = 'TN503';
    END IF;
    IF current OPERATOR(pg_catalog.=) expected THEN
        RETURN current;
    END IF;
    -- The server's connections act as tenantry_app between transactions
    -- (set once, for the session); any other value was set by SQL.
    IF pg_catalog.current_setting('role') OPERATOR(pg_catalog.<>) 'tenantry_app'
       OR current_user::text OPERATOR(pg_catalog.<>) 'tenantry_app'
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_settings s
                  WHERE s.source OPERATOR(pg_catalog.=) 'session'
                    AND s.name OPERATOR(pg_catalog.<>) 'role'
                    AND s.name OPERATOR(pg_catalog.=) ANY (tenantry.session_setting_names())) THEN
        RAISE EXCEPTION 'SQL run on this connection changed its session settings or role; it is closed'
            USING ERRCODE = 'TN503';
    END IF;
    RETURN current;
END
$$;
COMMENT ON FUNCTION tenantry.assert_session_unchanged(text) IS 'Server connections: TN503 when the session holds statements prepared by SQL (PREPARE), cursors declared WITH HOLD or temporary tables or types, or when SQL changed its role or one of session_setting_names() for the session; a difference from expected that a configuration reload made is accepted. Returns session_settings(), which the library keeps for the next check. The library closes a refused connection and runs the transaction again on another.';
GRANT EXECUTE ON FUNCTION tenantry.assert_session_unchanged(text) TO tenantry_app, tenantry_app_own, tenantry_app_shared,
    tenantry_admin, tenantry_logger, tenantry_server;

/**
 * Raises 25P01 when the calling transaction carries no tenant context any
 * more: SQL the application ran through the library ended the transaction
 * the library began (COMMIT, ROLLBACK), and what followed ran outside it.
 * The library sends it ahead of its COMMIT after such SQL, so that the
 * commit is not reported for work that was not in it.
 */
CREATE OR REPLACE FUNCTION tenantry.assert_transaction_intact()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tenantry.current_tenant_id() IS NULL THEN
        RAISE EXCEPTION 'the transaction ended before its commit: SQL it ran committed or rolled it back'
            USING ERRCODE = '25P01',
                  HINT = 'Run BEGIN, COMMIT and ROLLBACK only through the scope (commit(), rollback()).';
    END IF;
    -- Its statements named the tenant's tables by the route cached with its
    -- part: when a tier move committed since, a read by that route may have
    -- missed rows (a write would have failed: tenant_tier_lock). Not
    -- committed, and retried with a fresh part. (Asked as the roles the
    -- library's statements run as; SQL that left another role is no
    -- reason to fail the commit. Nested: EXECUTE is checked when an
    -- expression is first run, whether or not the call is reached.)
    IF current_user IN ('tenantry_app', 'tenantry_app_own', 'tenantry_app_shared') THEN
        IF NOT tenantry.context_route_current() THEN
            RAISE EXCEPTION 'tenant % changed tiers while this transaction ran; retry the transaction', tenantry.current_tenant_id()
                USING ERRCODE = '40001', HINT = 'tier_moved';
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.assert_transaction_intact() IS 'Server connections: 25P01 when the transaction has no tenant context any more (SQL it ran ended the transaction the library began); 40001 (HINT tier_moved) when the tenant changed tiers since its route was cached (a read may have missed rows; retried with a fresh part). The library sends it ahead of COMMIT after SQL it did not write.';
GRANT EXECUTE ON FUNCTION tenantry.assert_transaction_intact() TO tenantry_app, tenantry_app_own, tenantry_app_shared,
    tenantry_admin, tenantry_logger, tenantry_server;

/**
 * A transaction context signed with a context key: for connections the
 * server does not hold for itself (a transaction-pooling pgbouncer) and for
 * other programs that hold the key. The HMAC covers
 * enter|pid|expires_at|tenant|user|actor hex|grants|impersonator hex|tenant part
 * (grants: * for all, else the names joined with spaces); pid 0 means any
 * backend. Returns the tenant's part, or NULL (nothing set) for an unknown
 * key, a bad signature, another backend, an expired context or one expiring
 * more than 7 days ahead.
 */
CREATE OR REPLACE FUNCTION tenantry.enter_context_signed(pid integer, expires_at bigint, tid uuid, uid uuid, actor text, grants text[], impersonator text, tenant_part text, key_id integer, mac bytea)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SECURITY DEFINER
AS $$
DECLARE
    expected bytea := tenantry.context_mac(key_id,
        'enter|' || pid || '|' || expires_at || '|' || coalesce(tid::text, '') || '|' || coalesce(uid::text, '')
        || '|' || encode(convert_to(coalesce(actor, ''), 'UTF8'), 'hex')
        || '|' || coalesce(array_to_string(grants, ' '), '*')
        || '|' || encode(convert_to(coalesce(impersonator, ''), 'UTF8'), 'hex') || '|' || coalesce(tenant_part, ''));
    part text;
    done text;  -- set_config's answer, unused (an assignment is a simple expression)
    planted text;
BEGIN
    -- An expiry more than a week ahead is a unit mistake (microseconds for
    -- milliseconds: a signature valid for ever), never a lifetime a signer
    -- means: refused like an expired one (found by a review of a Python
    -- service signing its own contexts).
    IF expected IS NULL OR mac IS NULL OR expected <> mac
       OR (pid <> 0 AND pid <> pg_backend_pid())
       OR expires_at <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint
       OR expires_at > (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 7 * 86400000 THEN
        RETURN NULL;
    END IF;
    -- A session holding statements prepared by SQL: a client that names its
    -- own prepared statements (psycopg's _pg3_<n>, after five runs of a
    -- query) would run a statement SQL replaced under that name
    -- (DEALLOCATE, PREPARE) in the next tenant's transaction on this
    -- connection, behind a pooler too, and read that tenant's rows into a
    -- setting the SQL reads back later (found by the same review). An error,
    -- like temporary objects below, and the statements are removed at once
    -- (a DEALLOCATE is not undone by this transaction's rollback): behind a
    -- pooler the backend serves the next transaction again instead of
    -- refusing every tenant's that lands on it. (A client whose own
    -- statement to call this function SQL replaced is beyond any check
    -- here: README, "Signing contexts from another language".)
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements p WHERE p.from_sql) THEN
        FOR planted IN SELECT p.name FROM pg_catalog.pg_prepared_statements p WHERE p.from_sql LOOP
            EXECUTE format('DEALLOCATE %I', planted);
        END LOOP;
        RAISE EXCEPTION 'this session held statements prepared by SQL (PREPARE), which could stand in for the client''s own prepared statements in another tenant''s transaction; they are removed, and this transaction takes no tenant context'
            USING ERRCODE = '55000', HINT = 'run the transaction again';
    END IF;
    -- A session holding temporary tables or views: behind a transaction
    -- pooler one backend serves every tenant in turn, and a temporary
    -- relation left by SQL run in one tenant's transaction would shadow the
    -- team's unqualified table names in the next tenant's (its writes landing
    -- where that SQL reads them back). An error, not NULL: the statements
    -- sent after this one in the same flight fail with it, so no caller that
    -- overlooks a NULL writes into such a table (the library closes the
    -- connection on 55000). enter_context refuses any temporary schema; here
    -- only relations and types count, since a REFRESH ... CONCURRENTLY
    -- through the pooler leaves the schema behind, empty, for good.
    -- Types too: a temporary domain named uuid would run its CHECK's
    -- function in this transaction (session_holds_temp_objects).
    IF tenantry.session_holds_temp_objects() THEN
        RAISE EXCEPTION 'this session holds temporary tables or types, which could stand in for the team''s tables or types in another tenant''s transaction; it takes no tenant context'
            USING ERRCODE = '55000', HINT = 'close the connection; DISCARD TEMP clears the session';
    END IF;
    part := tenantry.checked_context_part(tid, uid, actor, tenant_part);
    IF part IS NULL THEN
        RETURN NULL;
    END IF;
    done := set_config('backtrace_functions', tenantry.context_value(tid, uid, actor, grants, impersonator, part), true);
    RETURN part;
END
$$;
COMMENT ON FUNCTION tenantry.enter_context_signed(integer, bigint, uuid, uuid, text, text[], text, text, integer, bytea) IS 'This transaction''s tenant (or user, or administrative) context, signed with a context key (HMAC over enter|pid|expires_at|tenant|user|actor hex|grants (* for all)|impersonator hex|tenant part; pid 0: any backend). For pooled connections and programs holding the key. Returns the tenant''s part; NULL, with nothing set, when refused (a bad or expired signature, an expiry more than 7 days ahead, another backend). 55000 in a session holding temporary tables or types, which could shadow the team''s table names or the types of the statements, or statements prepared by SQL, which could stand in for the client''s own (those are removed). Signing from another language: README, "Signing contexts from another language".';
GRANT EXECUTE ON FUNCTION tenantry.enter_context_signed(integer, bigint, uuid, uuid, text, text[], text, text, integer, bytea) TO tenantry_app, tenantry_admin, tenantry_logger;

/**
 * Whether this session belongs to a trusted operator: its login is a
 * superuser or a member of tenantry_owner. The server's login is neither,
 * and no role it may SET ROLE to is either.
 */
CREATE OR REPLACE FUNCTION tenantry.operator_session()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user), false)
        OR pg_catalog.pg_has_role(session_user, 'tenantry_owner', 'MEMBER')
$$;
COMMENT ON FUNCTION tenantry.operator_session() IS 'Internal: the session''s login is a superuser or a member of tenantry_owner (a trusted operator in psql). Not granted.';

/** Raises 42501 naming `setter` unless this session is a trusted operator's. */
CREATE OR REPLACE FUNCTION tenantry.require_operator(setter text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT tenantry.operator_session() THEN
        RAISE EXCEPTION '% is for operators (a superuser or a member of tenantry_owner); % must prove its context with enter_context', setter, session_user
            USING ERRCODE = '42501';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.require_operator(text) IS 'Internal: refuses (42501) the operator-only setters to every login but a superuser or a member of tenantry_owner. Not granted.';

/**
 * What the operators' setters write: a tenant context for the session or for
 * this transaction, with the member's grants when a user is named.
 * SECURITY DEFINER because the context lives in a setting only the owner may
 * set; refused (42501) for every login but a superuser or a member of
 * tenantry_owner, so the server's login and every role it can assume cannot
 * mint a context with it.
 */
CREATE OR REPLACE FUNCTION tenantry.write_operator_context(tid uuid, uid uuid, actor text, session boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.require_operator(CASE WHEN session THEN 'set_tenant_context' ELSE 'set_tenant_context_local' END);
    -- Citus carries a transaction-local context to the worker nodes, never
    -- a session's: there the policies would see no tenant and read nothing,
    -- which looks like an empty tenant.
    IF session AND tid IS NOT NULL AND tenantry.citus_distributed() THEN
        RAISE EXCEPTION 'on a Citus cluster a tenant context lasts one transaction: a session''s does not reach the worker nodes'
            USING ERRCODE = '0A000',
                  HINT = format('BEGIN; SELECT tenantry.set_tenant_context_local(%L); ... COMMIT;', tid);
    END IF;
    -- Each set_config with a literal scope: on Citus the transaction-local
    -- one is followed by citus_carry_context() (citus.sql rewrites every
    -- set_config('backtrace_functions', ..., true); of these functions).
    IF session THEN
        PERFORM set_config('backtrace_functions',
                           CASE WHEN tid IS NULL THEN ''
                                ELSE tenantry.context_value(tid, NULL, NULL, NULL, NULL, NULL) END,
                           false);
    ELSE
        PERFORM set_config('backtrace_functions', tenantry.context_value(tid, uid, actor, CASE WHEN uid IS NOT NULL THEN tenantry.member_grants(tid, uid) END, NULL, NULL), true);
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.write_operator_context(uuid, uuid, text, boolean) IS 'Internal, behind set_tenant_context and set_tenant_context_local: writes an operator''s tenant context (tenant, visible subtree, schema, user with the member''s grants, actor) for the session or this transaction; NULL clears a session''s. Operators only (superuser or member of tenantry_owner, 42501 otherwise); 0A000 for a session''s context on a Citus coordinator.';

/**
 * The guide's set_tenant_context: SESSION scope, for a trusted operator in
 * psql (a superuser or a member of tenantry_owner, typically followed by
 * SET ROLE tenantry_app). Refused (42501) for every other login, the server's
 * included: servers prove their context with enter_context. NULL clears.
 * When setup_connection() routed the session to a tenant schema, the route
 * follows the new tenant (follow_tenant_route): the old tenant's tables would
 * otherwise answer the new tenant's unqualified names with no rows.
 * SECURITY INVOKER, every name qualified, no SET clause: it changes the
 * caller's search_path.
 */
CREATE OR REPLACE FUNCTION tenantry.set_tenant_context(tid uuid)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM tenantry.write_operator_context(tid, NULL, NULL, true);
    PERFORM tenantry.follow_tenant_route(false);
END
$$;
COMMENT ON FUNCTION tenantry.set_tenant_context(uuid) IS 'Guide API, session scope, operators only (superuser or member of tenantry_owner): sets the tenant for the rest of the session (NULL clears), and moves a search_path that setup_connection() routed to a tenant schema to the new tenant''s route. Refused for the server''s login and every role it can assume, and on a Citus coordinator (0A000: a session''s context does not reach the workers). UNSAFE behind a transaction-pooling pooler; use set_tenant_context_local.';

/**
 * Transaction-local context for a trusted operator in psql: tenant, user and
 * actor, checked like set_tenant_context. With a user, the context holds what
 * that member holds in the tenant (authorize()); without one, everything.
 * A search_path that setup_connection() routed to a tenant schema follows
 * the tenant for this transaction. Returns the tenant's resources schema.
 */
CREATE OR REPLACE FUNCTION tenantry.set_tenant_context_local(tid uuid, uid uuid DEFAULT NULL, actor text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM tenantry.write_operator_context(tid, uid, actor, false);
    PERFORM tenantry.follow_tenant_route(true);
    RETURN tenantry.current_tenant_schema();
END
$$;
COMMENT ON FUNCTION tenantry.set_tenant_context_local(uuid, uuid, text) IS 'Transaction-local tenant context (tenant, visible subtree, schema, user, actor) for operators (superuser or member of tenantry_owner); refused for the server''s login and every role it can assume. A search_path that setup_connection() routed to a tenant schema follows the tenant for the transaction. Returns the tenant''s resources schema. Safe behind poolers.';

GRANT EXECUTE ON FUNCTION
    tenantry.set_tenant_context(uuid),
    tenantry.set_tenant_context_local(uuid, uuid, text),
    tenantry.write_operator_context(uuid, uuid, text, boolean)
TO tenantry_app;

/**
 * An administrative context (what tenantry_admin needs to change tenants),
 * for an operator in psql who switched to tenantry_admin: for the session, or
 * for this transaction. Refused (42501) for every login but a superuser or a
 * member of tenantry_owner.
 */
CREATE OR REPLACE FUNCTION tenantry.set_admin_context(actor text DEFAULT NULL, local boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.require_operator('set_admin_context');
    IF NOT coalesce(local, false) AND tenantry.citus_distributed() THEN
        RAISE EXCEPTION 'on a Citus cluster an administrative context lasts one transaction: a session''s does not reach the worker nodes'
            USING ERRCODE = '0A000',
                  HINT = 'BEGIN; SELECT tenantry.set_admin_context(actor => ''...'', local => true); ... COMMIT;';
    END IF;
    -- A literal scope each (see write_operator_context): on Citus the local one carries to the workers.
    IF coalesce(local, false) THEN
        PERFORM set_config('backtrace_functions', tenantry.context_value(NULL, NULL, actor, NULL, NULL, NULL), true);
    ELSE
        PERFORM set_config('backtrace_functions', tenantry.context_value(NULL, NULL, actor, NULL, NULL, NULL), false);
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.set_admin_context(text, boolean) IS 'Administrative context (admin_context()) for the session, or this transaction with local => true, for operators (superuser or member of tenantry_owner) switched to tenantry_admin; refused for the server''s login and every role it can assume; on a Citus coordinator only with local => true (0A000).';
GRANT EXECUTE ON FUNCTION tenantry.set_admin_context(text, boolean) TO tenantry_admin;

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
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL (plan kept per session): called on every tenant write, where
    -- an SQL function with a SET clause would be parsed and planned each time.
    RETURN NOT (current_setting('role') = 'tenantry_admin'
                OR (current_setting('role') = 'none'
                    AND coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user), false)));
END
$$;
COMMENT ON FUNCTION tenantry.limits_refuse_writer() IS 'Internal (quotas in 03_resources.sql, limits in 09_limits.sql): false for writes as tenantry_admin or by a superuser session (counted, not refused), true for every tenant role. Not granted.';
