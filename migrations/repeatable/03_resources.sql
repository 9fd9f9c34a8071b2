-- =============================================================================
-- Resources and cross-tenant sharing.
--
-- Policy shapes (docs/architecture.md, "Policies"): every arm compares an
-- indexed column with a value computed once per statement from settings; no
-- subquery anywhere. Sharing is carried on the row (shared_with uuid[], GIN)
-- and recorded in shared_resources, both written in one transaction.
--
-- Every role that reads a table directly reads it under ONE policy, and every
-- index of the table leads with the column that policy constrains (checked by
-- schema_rules.rs). Then the planner makes the policy an index condition of
-- any index it picks, and no scan touches a foreign row that EXPLAIN ANALYZE
-- could count ("Rows Removed by Filter", issue 10 finding 8). Rows shared with
-- a tenant are the exception that proves the rule: "owned by my subtree OR
-- shared with me" matches no single index, so shared rows are read through
-- resources_shared_with_me(), a fence no condition of the caller crosses.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE POLICY tenant_isolation ON tenantry.resources
    FOR ALL TO tenantry_app_own
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()))
    WITH CHECK (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY tenant_isolation ON tenantry.resources IS 'Guide policy tenant_isolation, hierarchy-aware: a tenant reads and writes its own resources and its descendants'' (transitively); never its parent''s or siblings''. No tenant set: nothing. The only policy on resources: rows shared with a tenant are read through resources_shared_with_me().';

-- What a tenant's caller may write: RESTRICTIVE policies, ANDed with the one
-- above, so a key or member without the permission cannot write even through
-- raw SQL as the app role (authorize() reads the verified context; no table).
CREATE POLICY resources_insert_needs_permission ON tenantry.resources
    AS RESTRICTIVE FOR INSERT TO tenantry_app_own
    WITH CHECK (tenantry.authorize('resources.write'));
COMMENT ON POLICY resources_insert_needs_permission ON tenantry.resources IS 'Creating a resource needs resources.write.';
CREATE POLICY resources_update_needs_permission ON tenantry.resources
    AS RESTRICTIVE FOR UPDATE TO tenantry_app_own
    USING (tenantry.authorize('resources.write'));
COMMENT ON POLICY resources_update_needs_permission ON tenantry.resources IS 'Changing a resource needs resources.write.';
CREATE POLICY resources_delete_needs_permission ON tenantry.resources
    AS RESTRICTIVE FOR DELETE TO tenantry_app_own
    USING (tenantry.authorize('resources.delete'));
COMMENT ON POLICY resources_delete_needs_permission ON tenantry.resources IS 'Deleting a resource needs resources.delete.';

-- Triggers, grants and the schema tenants' tables: at the end of this file.

/** Keeps database-maintained columns honest on update. */
CREATE OR REPLACE FUNCTION tenantry.resources_before_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.tenant_id <> OLD.tenant_id OR NEW.id <> OLD.id THEN
        RAISE EXCEPTION 'a resource cannot change tenant or id' USING ERRCODE = 'TN422', HINT = 'tenant_id';
    END IF;
    NEW.created_at := OLD.created_at;
    NEW.created_by := OLD.created_by;
    -- Sharing is not a modification of the resource itself.
    IF NEW.name IS DISTINCT FROM OLD.name OR NEW.data IS DISTINCT FROM OLD.data THEN
        NEW.updated_at := now();
    ELSE
        NEW.updated_at := OLD.updated_at;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION tenantry.resources_before_update() IS 'Trigger: resources keep their tenant, id, created_at and created_by; updated_at is set by the database.';

-- -----------------------------------------------------------------------------
-- shared_resources: who shared what with whom, and when.
-- -----------------------------------------------------------------------------

CREATE POLICY shares_of_my_resources ON tenantry.shared_resources
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY shares_of_my_resources ON tenantry.shared_resources IS 'Owners (and their ancestors) see the shares of their resources.';

-- No second policy for the targets of shares: OR'd with the first it would be
-- no index condition (see the head of this file). A target reads what was
-- shared with it through resources_shared_with_me().

-- Not shared_by_tenant: which ancestor made a share is not the owner's to
-- read (an export takes what tenantry_app reads; an imported share has no
-- maker, as one made before migration 0045).
GRANT SELECT (tenant_id, resource_id, shared_with, shared_by, shared_at) ON tenantry.shared_resources TO tenantry_app;

/** Audits share creation and revocation (including cascades from deleted resources). */
CREATE OR REPLACE FUNCTION tenantry.shared_resources_audit()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM tenantry.write_audit(NEW.tenant_id, 'share.created', 'resource', NEW.resource_id::text,
            jsonb_build_object('shared_with', NEW.shared_with, 'shared_by', NEW.shared_by));
    ELSIF OLD.shared_with = tenantry.current_tenant_id() THEN
        -- Declined by its target (decline_share).
        PERFORM tenantry.audit_share_declined(OLD.tenant_id, OLD.shared_with, 'resource', OLD.resource_id::text, '{}');
    ELSE
        PERFORM tenantry.write_audit(OLD.tenant_id, 'share.revoked', 'resource', OLD.resource_id::text,
            jsonb_build_object('shared_with', OLD.shared_with));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.shared_resources_audit() IS 'Trigger: audits shares made and revoked (in the owner''s log), and shares declined by their target (share.declined, in both logs; the owner''s names the target tenant as actor).';
CREATE OR REPLACE TRIGGER shared_resources_audit
    AFTER INSERT OR DELETE ON tenantry.shared_resources
    FOR EACH ROW EXECUTE FUNCTION tenantry.shared_resources_audit();

/** The schema of the resources table a tenant's new rows go to. */
CREATE OR REPLACE FUNCTION tenantry.resources_home(tid uuid)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL (plan kept per session): called on every resource write.
    RETURN (SELECT CASE WHEN t.isolation = 'schema' AND t.moving_to IS DISTINCT FROM 'shared'
                        THEN t.schema_name ELSE 'tenantry' END
            FROM tenantry.tenants t WHERE t.tenant_id = tid);
END
$$;
COMMENT ON FUNCTION tenantry.resources_home(uuid) IS 'Internal: the schema of the resources table a tenant''s new rows go to (its schema''s when schema-isolated; tenantry, the pooled table, otherwise and while it moves back to the shared tier); NULL for an unknown tenant. Not granted.';

/**
 * The relation to read or change one tenant's resources in: its own table
 * alone (ONLY), or, while it moves back to the shared tier and its rows are
 * in both its schema's table and the pooled one, the whole family. Ready to
 * be written into a statement as it is (quoted).
 */
CREATE OR REPLACE FUNCTION tenantry.resources_relation(tid uuid)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT CASE WHEN t.moving_to = 'shared' THEN 'tenantry.resources'
                        WHEN t.isolation = 'schema' THEN format('ONLY %I.resources', t.schema_name)
                        ELSE 'ONLY tenantry.resources' END
            FROM tenantry.tenants t WHERE t.tenant_id = tid);
END
$$;
COMMENT ON FUNCTION tenantry.resources_relation(uuid) IS 'Internal: the relation holding a tenant''s resources, quoted and ready for a statement: ONLY its own table, or tenantry.resources (the whole family) while it moves back to the shared tier and its rows are in two tables; NULL for an unknown tenant. Not granted.';

/**
 * Where tenants' resources are, grouped: for each relation (resources_relation)
 * the given tenants whose rows it holds.
 */
CREATE OR REPLACE FUNCTION tenantry.resources_relations(tenant_ids uuid[])
RETURNS TABLE (relation text, tenant_ids uuid[])
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT h.relation, array_agg(h.tid)
    FROM (SELECT tenantry.resources_relation(u.tid) AS relation, u.tid
          FROM unnest(resources_relations.tenant_ids) AS u(tid)) h
    WHERE h.relation IS NOT NULL
    GROUP BY h.relation
$$;
COMMENT ON FUNCTION tenantry.resources_relations(uuid[]) IS 'Internal: the given tenants grouped by the relation holding their resources (resources_relation: ONLY a tenant''s own table, the family while it moves back to the shared tier). Not granted.';

/** Trigger on shared_resources: keeps resource_share_targets (owners by target) in step. */
CREATE OR REPLACE FUNCTION tenantry.shared_resources_targets()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tenantry.resource_share_targets AS st (shared_with, tenant_id, shares)
        VALUES (NEW.shared_with, NEW.tenant_id, 1)
        ON CONFLICT (tenant_id, shared_with) DO UPDATE SET shares = st.shares + 1;
    ELSE
        UPDATE tenantry.resource_share_targets st SET shares = st.shares - 1
        WHERE st.shared_with = OLD.shared_with AND st.tenant_id = OLD.tenant_id AND st.shares > 1;
        IF NOT FOUND THEN
            DELETE FROM tenantry.resource_share_targets st
            WHERE st.shared_with = OLD.shared_with AND st.tenant_id = OLD.tenant_id;
        END IF;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.shared_resources_targets() IS 'Trigger: counts each share in resource_share_targets (target, owner), so resources_shared_with_me() reads only the tables of tenants that shared with the caller.';
CREATE OR REPLACE TRIGGER shared_resources_targets
    AFTER INSERT OR DELETE ON tenantry.shared_resources
    FOR EACH ROW EXECUTE FUNCTION tenantry.shared_resources_targets();

CREATE POLICY resource_share_targets_no_direct_access ON tenantry.resource_share_targets
    AS RESTRICTIVE FOR ALL TO PUBLIC
    USING (false) WITH CHECK (false);
COMMENT ON POLICY resource_share_targets_no_direct_access ON tenantry.resource_share_targets IS 'Nobody reads or writes it under RLS: the table is granted to no role (its index leads with the target); the owner''s trigger writes it and resources_shared_with_me() reads it.';

/**
 * A deleted tenant's shares end with it: nothing it shared stays readable by
 * others, and nothing stays shared with it. (Found by the model-based test:
 * the sharing policy looks only at shared_with, which deletion left in place.)
 * Revocations are audited by shared_resources' own trigger.
 */
CREATE OR REPLACE FUNCTION tenantry.tenants_revoke_shares_on_delete()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner record;
    -- No schema tier on Citus, and so no move to wait for.
    tiers boolean := to_regclass('pg_catalog.pg_dist_partition') IS NULL OR NOT tenantry.citus_distributed();
BEGIN
    -- Citus: once, from the coordinator's copy of the tenants reference table
    -- (a worker's copy of the row fires it too; on_citus_worker()).
    IF tenantry.on_citus_worker() THEN
        RETURN NULL;
    END IF;
    EXECUTE format('UPDATE %s SET shared_with = ''{}'' WHERE tenant_id = $1 AND shared_with <> ''{}''',
                   tenantry.resources_relation(NEW.tenant_id))
    USING NEW.tenant_id;
    DELETE FROM tenantry.shared_resources WHERE tenant_id = NEW.tenant_id;
    -- The shares made to it, owner by owner (resource_share_targets), each in
    -- the owner's own table. The owner's table is looked up here, not in the
    -- query over resource_share_targets: on Citus that query runs on the
    -- shards, where a function reading tenants cannot run.
    FOR owner IN
        SELECT st.tenant_id
        FROM tenantry.resource_share_targets st WHERE st.shared_with = NEW.tenant_id
    LOOP
        -- The owner's tier first, held as its own writers hold it
        -- (tenant_tier_lock): a batch of its move back to the shared tier
        -- moves its rows from one table to another, and an UPDATE that
        -- waited for a row the batch moved would skip it as deleted and
        -- never see its copy (the share's revocation lost). Taken here, the
        -- UPDATE below begins once such a batch committed, and sees its copies.
        IF tiers THEN
            PERFORM 1 FROM tenantry.tenants t WHERE t.tenant_id = owner.tenant_id FOR SHARE;
        END IF;
        DELETE FROM tenantry.shared_resources s WHERE s.tenant_id = owner.tenant_id AND s.shared_with = NEW.tenant_id;
        EXECUTE format('UPDATE %s SET shared_with = array_remove(shared_with, $2)
                        WHERE tenant_id = $1 AND shared_with @> ARRAY[$2]',
                       tenantry.resources_relation(owner.tenant_id))
        USING owner.tenant_id, NEW.tenant_id;
    END LOOP;
    -- Rows of adopted tables (10_tables.sql): what it shared, and what was shared with it.
    DELETE FROM tenantry.shared_rows s WHERE s.tenant_id = NEW.tenant_id;
    DELETE FROM tenantry.shared_rows s WHERE s.shared_with = NEW.tenant_id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenants_revoke_shares_on_delete() IS 'Trigger: when a tenant becomes deleted, revokes every share of its resources and of its rows of adopted tables, and every share made to it (holding each owner''s row FOR SHARE first, so that a batch of the owner''s move back to the shared tier cannot move a row from under the revocation).';
CREATE OR REPLACE TRIGGER tenants_revoke_shares_on_delete
    AFTER UPDATE OF status ON tenantry.tenants
    FOR EACH ROW WHEN (NEW.status = 'deleted' AND OLD.status IS DISTINCT FROM 'deleted')
    EXECUTE FUNCTION tenantry.tenants_revoke_shares_on_delete();

/**
 * Guide policy tenant_sharing, as a fence: the resources shared with the
 * current tenant (read only), newest first. A set-returning SECURITY DEFINER
 * function is planned apart from the caller's query, so none of the caller's
 * conditions reaches its scan: whatever the caller filters, sorts or sets
 * (enable_bitmapscan = off, ...), the rows any plan touches are rows shared
 * with the caller, and EXPLAIN ANALYZE counts nothing foreign. The optional
 * arguments are the listing's own filters, applied inside (one id; a LIKE
 * pattern on the name; a keyset position; a page size). shared_with is left
 * out: a target does not learn who else a resource is shared with. Nothing
 * without a tenant context.
 */
CREATE OR REPLACE FUNCTION tenantry.resources_shared_with_me(
    resource_id uuid DEFAULT NULL, name_like text DEFAULT NULL,
    after_created_at timestamptz DEFAULT NULL, after_id uuid DEFAULT NULL, max_rows bigint DEFAULT NULL)
RETURNS TABLE (id uuid, tenant_id uuid, name text, data jsonb, size_bytes bigint,
               created_at timestamptz, updated_at timestamptz, created_by uuid)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me uuid := tenantry.current_tenant_id();
    schemas text[];
    scans text;
BEGIN
    -- The tables of schema tenants that shared with me (resource_share_targets);
    -- the pooled table is read anyway (its GIN index finds nothing when no
    -- pooled tenant shared). Never the whole family: that would lock every
    -- schema tenant's table.
    schemas := ARRAY(
        SELECT DISTINCT t.schema_name
        FROM tenantry.resource_share_targets st
        JOIN tenantry.tenants t ON t.tenant_id = st.tenant_id
        WHERE st.shared_with = me AND t.isolation = 'schema'
        ORDER BY 1);
    IF cardinality(schemas) = 0 THEN
        RETURN QUERY
        SELECT r.id, r.tenant_id, r.name, r.data, r.size_bytes, r.created_at, r.updated_at, r.created_by
        FROM ONLY tenantry.resources r
        WHERE r.shared_with @> ARRAY[me]
          AND (resources_shared_with_me.resource_id IS NULL OR r.id = resources_shared_with_me.resource_id)
          AND (name_like IS NULL OR r.name LIKE name_like)
          AND (after_created_at IS NULL OR (r.created_at, r.id) < (after_created_at, after_id))
        ORDER BY r.created_at DESC, r.id DESC
        LIMIT max_rows;
        RETURN;
    END IF;
    SELECT string_agg(format(
        '(SELECT r.id, r.tenant_id, r.name, r.data, r.size_bytes, r.created_at, r.updated_at, r.created_by
          FROM ONLY %I.resources r
          WHERE r.shared_with @> ARRAY[$1]
            AND ($2::uuid IS NULL OR r.id = $2) AND ($3::text IS NULL OR r.name LIKE $3)
            AND ($4::timestamptz IS NULL OR (r.created_at, r.id) < ($4, $5))
          ORDER BY r.created_at DESC, r.id DESC LIMIT $6)', h), ' UNION ALL ')
    INTO scans
    FROM unnest('{tenantry}'::text[] || schemas) h;
    RETURN QUERY EXECUTE 'SELECT * FROM (' || scans || ') x ORDER BY x.created_at DESC, x.id DESC LIMIT $6'
    USING me, resources_shared_with_me.resource_id, name_like, after_created_at, after_id, max_rows;
END
$$;
COMMENT ON FUNCTION tenantry.resources_shared_with_me(uuid, text, timestamptz, uuid, bigint) IS 'Guide policy tenant_sharing as a fence: resources shared with the current tenant (read only), newest first, optionally one id, a name LIKE pattern, a keyset position (created_at, id) and a page size. No caller condition reaches its scan, so EXPLAIN ANALYZE shows nothing foreign.';
GRANT EXECUTE ON FUNCTION tenantry.resources_shared_with_me(uuid, text, timestamptz, uuid, bigint)
    TO tenantry_app, tenantry_app_shared;

/**
 * The newest resources of the current tenant's subtree (itself and its live
 * descendants, as verified with the context; without itself when
 * others_only), one index-ordered top-N per tenant, for a tenant with many
 * descendants. Under the policy, each per-tenant scan evaluated the policy's
 * subtree again, its array parsed per rescan, so a listing's work grew with
 * the square of the subtree (1,001 tenants of 3 rows: about 1.1 s against
 * 5 ms here; found by a contention audit, whose tenant held its connections
 * with such listings). A fence like resources_shared_with_me: the subtree is
 * read once from the context and every scan is of those tenants only, in the
 * table that holds each one's rows (resources_relations: never the whole
 * family). The filters and page size are the listing's own, applied inside.
 */
CREATE OR REPLACE FUNCTION tenantry.subtree_resources(
    others_only boolean DEFAULT false, name_like text DEFAULT NULL,
    after_created_at timestamptz DEFAULT NULL, after_id uuid DEFAULT NULL, max_rows bigint DEFAULT NULL)
RETURNS TABLE (id uuid, tenant_id uuid, name text, data jsonb, size_bytes bigint,
               created_at timestamptz, updated_at timestamptz, created_by uuid)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    visible uuid[] := tenantry.visible_tenant_ids();
    scans text;
BEGIN
    IF others_only THEN
        visible := visible[2:];
    END IF;
    SELECT string_agg(format(
        '(SELECT r.id, r.tenant_id, r.name, r.data, r.size_bytes, r.created_at, r.updated_at, r.created_by
          FROM unnest(%L::uuid[]) v(t)
          CROSS JOIN LATERAL (
              SELECT r.* FROM %s r
              WHERE r.tenant_id = v.t AND ($1::text IS NULL OR r.name LIKE $1)
                AND ($2::timestamptz IS NULL OR (r.created_at, r.id) < ($2, $3))
              ORDER BY r.created_at DESC, r.id DESC LIMIT $4) r)', g.tenant_ids, g.relation), ' UNION ALL ')
    INTO scans
    FROM tenantry.resources_relations(visible) g;
    IF scans IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE 'SELECT * FROM (' || scans || ') x ORDER BY x.created_at DESC, x.id DESC LIMIT $4'
    USING name_like, after_created_at, after_id, max_rows;
END
$$;
COMMENT ON FUNCTION tenantry.subtree_resources(boolean, text, timestamptz, uuid, bigint) IS 'The current tenant''s and its live descendants'' resources (without its own when others_only), newest first, optionally a name LIKE pattern, a keyset position (created_at, id) and a page size: one top-N per tenant of the verified subtree, read once (under the policy each scan parsed it again). A fence: no caller condition reaches its scans. Nothing without a tenant context.';
GRANT EXECUTE ON FUNCTION tenantry.subtree_resources(boolean, text, timestamptz, uuid, bigint)
    TO tenantry_app, tenantry_app_own;

-- -----------------------------------------------------------------------------
-- The guide's resource API
-- -----------------------------------------------------------------------------


/** The schema of the current tenant's own tables, as tenants says now (not as the context cached it). */
CREATE OR REPLACE FUNCTION tenantry.tenant_home_schema()
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL (plans kept per session): every resource creation asks.
    RETURN tenantry.resources_home(tenantry.current_tenant_id());
END
$$;
COMMENT ON FUNCTION tenantry.tenant_home_schema() IS 'The schema of the current tenant''s own tables (its tenants.schema_name when schema-isolated, tenantry otherwise), read from tenants: right even in a session whose context was set before the tenant moved. NULL without a tenant.';
GRANT EXECUTE ON FUNCTION tenantry.tenant_home_schema() TO tenantry_app, tenantry_app_own;

/**
 * Inserts a resource into the current tenant's own table, wherever it is,
 * and returns the row. Runs as the caller, so the policy decides.
 */
CREATE OR REPLACE FUNCTION tenantry.create_resource_row(tid uuid, name text, data jsonb)
RETURNS SETOF tenantry.resources
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    home text := tenantry.tenant_home_schema();
BEGIN
    IF home IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403',
            HINT = 'an operator calls set_tenant_context_local(tenant_id) in this transaction first; the server''s login proves a context through the library (enter_context), which the guide''s setters refuse it';
    END IF;
    RETURN QUERY EXECUTE format('INSERT INTO %I.resources (tenant_id, name, data) VALUES ($1, $2, $3) RETURNING *', home)
    USING tid, name, data;
END
$$;
COMMENT ON FUNCTION tenantry.create_resource_row(uuid, text, jsonb) IS 'Inserts a resource for tenant tid (the current tenant or, with hierarchy, a descendant: the policy decides) into the current tenant''s own table (pooled or its schema''s) and returns the row. Runs as the caller under RLS.';
GRANT EXECUTE ON FUNCTION tenantry.create_resource_row(uuid, text, jsonb) TO tenantry_app, tenantry_app_own;

/**
 * Guide: create_resource(data) -> id. Name from data->>'name'. Runs as the
 * caller, so RLS decides; the row goes to the tenant's own table (pooled, or
 * its schema's).
 */
CREATE OR REPLACE FUNCTION tenantry.create_resource(data jsonb)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rid uuid;
    tid uuid := tenantry.current_tenant_id();
BEGIN
    IF tid IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403',
            HINT = 'an operator calls set_tenant_context_local(tenant_id) in this transaction first; the server''s login proves a context through the library (enter_context), which the guide''s setters refuse it';
    END IF;
    IF data IS NULL OR jsonb_typeof(data) <> 'object' THEN
        RAISE EXCEPTION 'data must be a JSON object' USING ERRCODE = 'TN422', HINT = 'data';
    END IF;
    IF coalesce(length(data->>'name'), 0) NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'data.name must be a string of 1 to 1000 characters' USING ERRCODE = 'TN422', HINT = 'name';
    END IF;
    SELECT r.id INTO rid FROM tenantry.create_resource_row(tid, data->>'name', create_resource.data) r;
    RETURN rid;
END
$$;
COMMENT ON FUNCTION tenantry.create_resource(jsonb) IS 'Guide API: creates a resource for the current tenant (name from data->>''name'') in its own table and returns its id. Runs as the caller under RLS.';
GRANT EXECUTE ON FUNCTION tenantry.create_resource(jsonb) TO tenantry_app, tenantry_app_own;

/**
 * The owner of a resource the caller may share or unshare (its own or a
 * descendant's), locked until the end of the transaction so that share and
 * revocation of one resource queue. TN403 without a tenant context; TN404 for
 * a missing and a foreign resource alike.
 */
CREATE OR REPLACE FUNCTION tenantry.lock_shareable_resource(resource_id uuid)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner_id uuid;
    home record;
BEGIN
    IF tenantry.current_tenant_id() IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403';
    END IF;
    -- Each visible tenant's own table (pooled, or its schema's): the owner
    -- first, then its row locked by (owner, id). One tenant per locking
    -- statement: Citus refuses FOR UPDATE in a statement that reaches
    -- several shards, as a subtree's tenants may.
    FOR home IN SELECT * FROM tenantry.resources_relations(tenantry.visible_tenant_ids()) LOOP
        EXECUTE format('SELECT r.tenant_id FROM %s r WHERE r.id = $1 AND r.tenant_id = ANY ($2)', home.relation)
        USING lock_shareable_resource.resource_id, home.tenant_ids
        INTO owner_id;
        IF owner_id IS NOT NULL THEN
            -- NULL again when the row went meanwhile: not found.
            EXECUTE format('SELECT r.tenant_id FROM %s r WHERE r.id = $1 AND r.tenant_id = $2 FOR UPDATE', home.relation)
            USING lock_shareable_resource.resource_id, owner_id
            INTO owner_id;
            EXIT;
        END IF;
    END LOOP;
    IF owner_id IS NULL THEN
        RAISE EXCEPTION 'resource % not found', lock_shareable_resource.resource_id
            USING ERRCODE = 'TN404', HINT = 'resource_id';
    END IF;
    RETURN owner_id;
END
$$;
COMMENT ON FUNCTION tenantry.lock_shareable_resource(uuid) IS 'Internal: owner of a resource of the current tenant or a descendant, row-locked; TN404 for a missing or foreign one, TN403 without a context. Not granted.';

/**
 * Who a tenant may share with (resources, and rows of adopted tables): an
 * existing active tenant (a missing and a deleted one give the same TN404; a
 * suspended one TN409), not the owner, and, where ancestors read their
 * descendants' rows (through_hierarchy), not one of the owner's ancestors:
 * they read it already, and a share made through the hierarchy would outlive
 * it (detaching the owner would not end it).
 */
CREATE OR REPLACE FUNCTION tenantry.check_share_target(owner_id uuid, target_tenant_id uuid, what text, through_hierarchy boolean)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    target_status text;
BEGIN
    SELECT t.status INTO target_status FROM tenantry.tenants t WHERE t.tenant_id = target_tenant_id;
    IF target_status IS NULL OR target_status = 'deleted' THEN
        RAISE EXCEPTION 'target tenant % not found', target_tenant_id USING ERRCODE = 'TN404', HINT = 'tenant_id';
    ELSIF target_status <> 'active' THEN
        RAISE EXCEPTION 'target tenant % is not active', target_tenant_id USING ERRCODE = 'TN409', HINT = 'tenant_id';
    ELSIF target_tenant_id = owner_id THEN
        RAISE EXCEPTION 'a % cannot be shared with its owner', what USING ERRCODE = 'TN422', HINT = 'tenant_id';
    ELSIF through_hierarchy AND EXISTS (SELECT 1 FROM tenantry.tenant_hierarchy h
                                        WHERE h.parent_id = target_tenant_id AND h.child_id = owner_id) THEN
        RAISE EXCEPTION 'tenant % already reads this % through the hierarchy', target_tenant_id, what
            USING ERRCODE = 'TN422', HINT = 'tenant_id';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.check_share_target(uuid, uuid, text, boolean) IS 'Internal (share_resource, share_row): TN404 for a missing or deleted target alike, TN409 for one that is not active, TN422 for the owner itself or (through_hierarchy) one of its ancestors. Runs inside those SECURITY DEFINER functions, as the owner. Not granted.';

/**
 * Holds a tenant row a share names, its target's or the owner's of what is
 * shared, FOR KEY SHARE for the sharing transaction, and returns its status
 * as held. The target's is held before anything else is locked: the
 * target's deletion (which takes that row FOR UPDATE in
 * tenants_before_write, and whose trigger revokes every share made to it)
 * then waits for the share to commit and revokes it too, or the share waits
 * for the deletion and finds the target deleted (TN404). Read without the
 * lock, both committed and the share outlived its target (found by a
 * contention audit). The owner's the same way, its caller refusing a
 * deleted owner as a missing resource or row (TN404): without it, a parent
 * sharing a child's resource while the child was deleted, or the child
 * sharing its own, committed after the deletion had revoked the shares it
 * saw, and the target kept reading the deleted tenant's row (found by a
 * contention re-audit). KEY SHARE, the lock the share's foreign key takes
 * anyway, and not SHARE: every other change of a tenant's row (a tier move,
 * its settings, a suspension) locks it FOR NO KEY UPDATE, which does not
 * wait for it, so another tenant's open share holds back none of them (held
 * FOR SHARE, it held back the target's move: found by the tiers suite).
 * Waited for 100 ms at most (then 55P03: retried, or 503). Not on a Citus
 * cluster, where row locks on the tenants reference table lock its whole
 * shard (as in tenants_before_write; docs/scale-out.md): NULL there, and for
 * no such tenant.
 */
CREATE OR REPLACE FUNCTION tenantry.hold_share_tenant(tid uuid)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    waited text := current_setting('lock_timeout');
    held_status text;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL AND tenantry.citus_distributed() THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('lock_timeout', '100ms', true);
    SELECT t.status INTO held_status FROM tenantry.tenants t WHERE t.tenant_id = tid FOR KEY SHARE;
    PERFORM set_config('lock_timeout', waited, true);
    RETURN held_status;
END
$$;
COMMENT ON FUNCTION tenantry.hold_share_tenant(uuid) IS 'Internal (share_resource, share_row): holds a share''s target or owner tenant row FOR KEY SHARE, waiting 100 ms at most (55P03), so that its concurrent deletion (which takes the row FOR UPDATE) revokes the share or the share finds it deleted, while no other change of the row waits for it; returns the status held (NULL on a Citus cluster, where nothing is held, or for no such tenant). Not granted.';

/**
 * Whether the current tenant still reaches `owner_id` through the hierarchy
 * (it is the owner or one of its ancestors), read from the closure as it is
 * now, under the hierarchy lock shared (moves take it exclusively until they
 * commit): a share is made by a tenant that reaches the row, and a move that
 * commits after it revokes it (revoke_shares_past_hierarchy). The context's
 * subtree alone was fixed when the transaction (or the server's cache) took
 * it, so a former parent could share a detached child's row, or finish a
 * share the move did not see, and keep reading the child through the target
 * (found by a review). Not granted.
 */
CREATE OR REPLACE FUNCTION tenantry.share_maker_reaches(owner_id uuid)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Tried for 150 ms at most, never queued: a move holding the lock may
    -- wait for a row this share holds (its counters), which the deadlock
    -- detector would see only after a second, with every child creation
    -- queued behind. A move waiting in the lock's queue (100 ms turns,
    -- lock_hierarchy_for_move) refuses tries meanwhile, so the tries
    -- outlast one turn. 55P03 then: the server runs the share again, or
    -- answers 503.
    IF NOT tenantry.try_hierarchy_lock(true, 15) THEN
        RAISE EXCEPTION 'the tenant hierarchy is being changed; the share was not made'
            USING ERRCODE = '55P03', HINT = 'retry the share';
    END IF;
    RETURN EXISTS (SELECT 1 FROM tenantry.tenant_hierarchy h
                   WHERE h.parent_id = tenantry.current_tenant_id() AND h.child_id = owner_id);
END
$$;
COMMENT ON FUNCTION tenantry.share_maker_reaches(uuid) IS 'Internal (share_resource, share_row): whether the current tenant is the owner or, as the closure has it now, one of its ancestors, under the hierarchy lock shared (which moves take exclusively), tried for 150 ms, longer than a queued move''s turn (55P03 then). Not granted.';

/**
 * Guide: share_resource(resource_id, target_tenant_id). Fixed: the resource
 * must be visible-and-owned in the caller's subtree (a missing and a foreign
 * resource give the same error), the target must exist and be active, not the
 * owner or one of its ancestors (they read it through the hierarchy already,
 * and such a share would survive detaching the owner), and not already hold
 * the share; shared_by is the acting member.
 */
CREATE OR REPLACE FUNCTION tenantry.share_resource(resource_id uuid, target_tenant_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner_id uuid;
BEGIN
    -- As the API: the function runs as the owner, so the permission is
    -- checked here, not by the caller's policies (found by a review of the
    -- hierarchy: a member holding resources.read alone shared a resource
    -- into another tenant from SQL).
    IF tenantry.current_tenant_id() IS NOT NULL AND NOT tenantry.authorize('resources.share') THEN
        RAISE EXCEPTION 'sharing resources needs resources.share' USING ERRCODE = 'TN401';
    END IF;
    PERFORM tenantry.hold_share_tenant(target_tenant_id);
    owner_id := tenantry.lock_shareable_resource(share_resource.resource_id);
    IF tenantry.hold_share_tenant(owner_id) = 'deleted' OR NOT tenantry.share_maker_reaches(owner_id) THEN
        RAISE EXCEPTION 'resource % not found', share_resource.resource_id USING ERRCODE = 'TN404';
    END IF;
    PERFORM tenantry.check_share_target(owner_id, target_tenant_id, 'resource', true);
    INSERT INTO tenantry.shared_resources (tenant_id, resource_id, shared_with, shared_by, shared_by_tenant)
    VALUES (owner_id, share_resource.resource_id, target_tenant_id, tenantry.current_user_id(), tenantry.current_tenant_id())
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'resource % is already shared with tenant %', share_resource.resource_id, target_tenant_id
            USING ERRCODE = 'TN409', HINT = 'tenant_id';
    END IF;
    EXECUTE format('UPDATE %s r SET shared_with = array_append(r.shared_with, $3)
                    WHERE r.tenant_id = $1 AND r.id = $2', tenantry.resources_relation(owner_id))
    USING owner_id, share_resource.resource_id, target_tenant_id;
END
$$;
COMMENT ON FUNCTION tenantry.share_resource(uuid, uuid) IS 'Guide API: shares a resource of the current tenant (or a descendant) read-only with another active tenant; needs resources.share (TN401). TN404 for a missing or foreign resource alike, TN409 if already shared.';

/**
 * share_resource, answering with the share it made: read in the same
 * function, as the owner that wrote it. (Read afterwards as the caller, the
 * share is refused on Citus: a transaction may not read, as one role,
 * placements it changed as another.) The library and the server share
 * resources through it.
 */
CREATE OR REPLACE FUNCTION tenantry.share_resource_row(resource_id uuid, target_tenant_id uuid)
RETURNS SETOF tenantry.shared_resources
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.share_resource(share_resource_row.resource_id, target_tenant_id);
    RETURN QUERY
    SELECT s.* FROM tenantry.shared_resources s
    WHERE s.resource_id = share_resource_row.resource_id AND s.shared_with = target_tenant_id
      AND s.tenant_id = ANY (tenantry.visible_tenant_ids());
END
$$;
COMMENT ON FUNCTION tenantry.share_resource_row(uuid, uuid) IS 'share_resource, returning the share made (its owner, target, who shared it and when), read as the owner that wrote it (Citus refuses a read as the caller afterwards). Same errors as share_resource.';

/**
 * Ends the share of owner_id's resource with target_tenant_id, once the
 * caller holds the resource's row (FOR UPDATE): the share's record and the
 * target in the row's shared_with. TN404 when there is no such share.
 * unshare_resource (by the owner) and decline_share (by the target) end
 * shares through it.
 */
CREATE OR REPLACE FUNCTION tenantry.end_resource_share(owner_id uuid, resource_id uuid, target_tenant_id uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM tenantry.shared_resources s
    WHERE s.tenant_id = owner_id AND s.resource_id = end_resource_share.resource_id AND s.shared_with = target_tenant_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'resource % is not shared with tenant %', end_resource_share.resource_id, target_tenant_id
            USING ERRCODE = 'TN404', HINT = 'tenant_id';
    END IF;
    EXECUTE format('UPDATE %s r SET shared_with = array_remove(r.shared_with, $3)
                    WHERE r.tenant_id = $1 AND r.id = $2', tenantry.resources_relation(owner_id))
    USING owner_id, end_resource_share.resource_id, target_tenant_id;
END
$$;
COMMENT ON FUNCTION tenantry.end_resource_share(uuid, uuid, uuid) IS 'Internal (unshare_resource, decline_share): deletes a share of a resource whose row the caller holds and takes its target out of the row''s shared_with; TN404 when there is no such share. Not granted.';

/** Revokes a share; the target loses it in its next statement. */
CREATE OR REPLACE FUNCTION tenantry.unshare_resource(resource_id uuid, target_tenant_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tenantry.current_tenant_id() IS NOT NULL AND NOT tenantry.authorize('resources.share') THEN
        RAISE EXCEPTION 'revoking shares needs resources.share' USING ERRCODE = 'TN401';
    END IF;
    PERFORM tenantry.end_resource_share(tenantry.lock_shareable_resource(unshare_resource.resource_id),
                                        unshare_resource.resource_id, target_tenant_id);
END
$$;
COMMENT ON FUNCTION tenantry.unshare_resource(uuid, uuid) IS 'Revokes a share made by the current tenant (or a descendant); needs resources.share (TN401). TN404 when there is no such share.';

/**
 * The target of a share gives it up: a resource shared with the current
 * tenant is shared with it no more, as if its owner had revoked it. A tenant
 * cannot refuse what others share with it, so this is its way out of a share
 * it does not want (found by an outside review: a tenant shared a 10 MB
 * resource with another, whose every default listing then carried it, and
 * only the owner could end that). TN404 when no such share is made to the
 * current tenant, whoever owns the resource.
 */
CREATE OR REPLACE FUNCTION tenantry.decline_share(resource_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me uuid := tenantry.current_tenant_id();
    owner_id uuid;
BEGIN
    IF me IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403';
    END IF;
    -- As the API's DELETE of a share to the caller's own tenant.
    IF NOT tenantry.authorize('resources.write') THEN
        RAISE EXCEPTION 'declining a share needs resources.write' USING ERRCODE = 'TN401';
    END IF;
    SELECT s.tenant_id INTO owner_id FROM tenantry.shared_resources s
    WHERE s.resource_id = decline_share.resource_id AND s.shared_with = me;
    IF owner_id IS NOT NULL THEN
        -- The owner's row first, as a revocation takes it (lock_shareable_resource).
        EXECUTE format('SELECT 1 FROM %s r WHERE r.tenant_id = $1 AND r.id = $2 FOR UPDATE',
                       tenantry.resources_relation(owner_id))
        USING owner_id, decline_share.resource_id;
    END IF;
    -- Without a share to this tenant: the same TN404 as for a share gone meanwhile.
    PERFORM tenantry.end_resource_share(owner_id, decline_share.resource_id, me);
END
$$;
COMMENT ON FUNCTION tenantry.decline_share(uuid) IS 'The current tenant gives up a resource shared with it (as if its owner had revoked the share; audited in both tenants'' logs as share.declined). TN404 when no such share is made to it.';

GRANT EXECUTE ON FUNCTION
    tenantry.share_resource(uuid, uuid),
    tenantry.share_resource_row(uuid, uuid),
    tenantry.unshare_resource(uuid, uuid),
    tenantry.decline_share(uuid)
TO tenantry_app;

-- -----------------------------------------------------------------------------
-- Quotas: max_resources and max_storage_bytes from the tenant's settings,
-- enforced here for every writer (API, library, CLI, psql), race-free.
--
-- A tenant with a quota has a row in tenant_quota_usage holding its exact
-- count and bytes; a row trigger on resources moves it under that row's lock,
-- so concurrent writers of one tenant queue on it and the one that would cross
-- the limit fails (TN429).
-- Tenants without quotas keep no counter and never queue. Every write reads
-- its tenant's row FOR SHARE, so a settings change (which takes the row for
-- update) waits for writes in flight and counts what they wrote, and writes
-- after it see the new quota: the counter is exact from the moment a quota
-- exists. Writes as tenantry_admin (moves between isolation models) or by a
-- superuser session (bulk loads) are counted but never refused; which role
-- writes is decided by the role, never by a setting the writer could change
-- in the middle of its own statement.
-- -----------------------------------------------------------------------------

/** Recounts a tenant's quota usage from its rows: creates, refreshes or (without quotas) drops its counter. */
CREATE OR REPLACE FUNCTION tenantry.recount_quota_usage(tid uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s jsonb;
BEGIN
    SELECT settings INTO s FROM tenantry.tenants WHERE tenant_id = tid;
    IF s ? 'max_resources' OR s ? 'max_storage_bytes' THEN
        EXECUTE format('INSERT INTO tenantry.tenant_quota_usage AS u (tenant_id, resource_count, storage_bytes)
                        SELECT $1, count(*), coalesce(sum(r.size_bytes), 0)
                                   + (SELECT coalesce(sum(octet_length(k.body)), 0) FROM tenantry.idempotency_keys k WHERE k.tenant_id = $1)
                        FROM %s r WHERE r.tenant_id = $1
                        ON CONFLICT (tenant_id) DO UPDATE
                            SET resource_count = excluded.resource_count, storage_bytes = excluded.storage_bytes',
                       tenantry.resources_relation(tid))
        USING tid;
    ELSE
        DELETE FROM tenantry.tenant_quota_usage WHERE tenant_id = tid;
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.recount_quota_usage(uuid) IS 'Internal: recounts a tenant''s resources and bytes (its resources'' and the responses stored under its idempotency keys) into tenant_quota_usage when it has a quota, drops the counter otherwise. Not granted.';

/**
 * Row trigger on resources (on every schema tenant's table too, so writes
 * that name a tenant's own table directly count as well): moves the counter of the row's
 * tenant when it has a quota, and refuses the write (TN429, HINT naming the
 * setting) when a tenant role's write would exceed it.
 * Changes that shrink usage are always allowed; sharing (shared_with) does not
 * change a resource's size.
 */
CREATE OR REPLACE FUNCTION tenantry.resources_quota()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
    n bigint := CASE TG_OP WHEN 'INSERT' THEN 1 WHEN 'DELETE' THEN -1 ELSE 0 END;
    bytes bigint := CASE TG_OP WHEN 'INSERT' THEN NEW.size_bytes
                               WHEN 'DELETE' THEN -OLD.size_bytes
                               ELSE NEW.size_bytes - OLD.size_bytes END;
    s jsonb;
    used record;
BEGIN
    IF n = 0 AND bytes = 0 THEN
        RETURN NULL;
    END IF;
    SELECT settings INTO s FROM tenantry.tenants WHERE tenant_id = tid FOR SHARE;
    IF NOT (s ? 'max_resources' OR s ? 'max_storage_bytes') THEN
        RETURN NULL;
    END IF;
    UPDATE tenantry.tenant_quota_usage u
       SET resource_count = u.resource_count + n, storage_bytes = u.storage_bytes + bytes
     WHERE u.tenant_id = tid
    RETURNING u.resource_count, u.storage_bytes INTO used;
    IF NOT FOUND THEN
        -- A counter lost to manual maintenance: rebuild it (it includes this row).
        PERFORM tenantry.recount_quota_usage(tid);
        SELECT u.resource_count, u.storage_bytes INTO used FROM tenantry.tenant_quota_usage u WHERE u.tenant_id = tid;
    END IF;
    -- Who writes is the role the statement runs as (current_setting('role') is
    -- SET ROLE's, untouched by SECURITY DEFINER), never a setting the writer
    -- controls: an administrator moving a tenant between isolation models and a
    -- superuser session (bulk loads, maintenance) are counted, not refused.
    IF NOT tenantry.limits_refuse_writer() THEN
        RETURN NULL;
    END IF;
    IF n > 0 AND s ? 'max_resources' AND used.resource_count > (s->>'max_resources')::numeric THEN
        RAISE EXCEPTION 'this tenant may hold at most % resources', (s->>'max_resources')::numeric::bigint
            USING ERRCODE = 'TN429', HINT = 'settings.max_resources';
    END IF;
    IF bytes > 0 AND s ? 'max_storage_bytes' AND used.storage_bytes > (s->>'max_storage_bytes')::numeric THEN
        RAISE EXCEPTION 'this tenant may store at most % bytes', (s->>'max_storage_bytes')::numeric::bigint
            USING ERRCODE = 'TN429', HINT = 'settings.max_storage_bytes';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.resources_quota() IS 'Trigger: counts each row added to, changed in or removed from resources against its tenant''s quotas (max_resources, max_storage_bytes); TN429 when a write by a tenant role would exceed one (administrators and superusers are counted, not refused).';

/** Trigger on tenants: a quota that appears, changes or goes recounts (or drops) the tenant's counter. */
CREATE OR REPLACE FUNCTION tenantry.tenants_quota_settings()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Citus: once, from the coordinator's copy of the tenants reference table
    -- (a worker's copy of the row fires it too; on_citus_worker()).
    IF tenantry.on_citus_worker() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        -- A new tenant holds nothing yet (every tenant table's rows need
        -- their tenant's row), and a schema tenant's tables are made after
        -- its row is inserted: nothing to count, nowhere to count it.
        IF NEW.settings ? 'max_resources' OR NEW.settings ? 'max_storage_bytes' THEN
            INSERT INTO tenantry.tenant_quota_usage (tenant_id, resource_count, storage_bytes)
            VALUES (NEW.tenant_id, 0, 0);
        END IF;
    ELSIF (NEW.settings ? 'max_resources' OR NEW.settings ? 'max_storage_bytes')
          IS DISTINCT FROM (OLD.settings ? 'max_resources' OR OLD.settings ? 'max_storage_bytes') THEN
        PERFORM tenantry.recount_quota_usage(NEW.tenant_id);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenants_quota_settings() IS 'Trigger: a tenant created with quotas starts its tenant_quota_usage row at zero; when a tenant gains or loses its quotas, recounts (or drops) that row, under the tenant row''s lock.';
CREATE OR REPLACE TRIGGER tenants_quota_settings
    AFTER INSERT OR UPDATE OF settings ON tenantry.tenants
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenants_quota_settings();

CREATE POLICY quota_usage_read_own ON tenantry.tenant_quota_usage
    FOR SELECT TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY quota_usage_read_own ON tenantry.tenant_quota_usage IS 'A tenant reads its own quota counter; only the database writes it.';
GRANT SELECT ON tenantry.tenant_quota_usage TO tenantry_app;

-- -----------------------------------------------------------------------------
-- Tiers. A tenant's rows live in one table of each tenant table's family: the
-- pooled table (tenantry.resources, an adopted table) or, for a schema
-- tenant, its schema's table of the same name (07_schemas.sql: resources'
-- inherits tenantry.resources, an adopted table's stands alone). The server routes each statement to the tenant's own
-- table from the context part it caches; these triggers make a stale route
-- fail instead of writing in the wrong place, and record what a tenant writes
-- while it is being moved.
-- -----------------------------------------------------------------------------

/**
 * Statement trigger on every tenant table: before the statement touches a
 * row, takes the current tenant's row in tenants FOR SHARE, so a tier
 * move, which takes the tenant's row FOR NO KEY UPDATE (a cut-over, a batch of a
 * move back to the shared tier), waits for the writes in flight and holds
 * back new ones, always in the same order (tenant row first, then table
 * rows: no deadlock). FOR SHARE, not a weaker lock: the quota trigger takes
 * the row FOR SHARE after the row is written, and a writer strengthening its
 * lock behind a waiting move would deadlock.
 *
 * A statement that had to wait for a move (the tenant moves back to the
 * shared tier, or its tier or move changed while it waited) fails with 40001
 * (HINT tier_moved) once it has the row: its snapshot was taken before the
 * waiting began, so rows a move took out of a table meanwhile would be
 * skipped as deleted and the rows it put into another one would not be
 * seen, and the statement would silently miss them. Retrying runs it on a
 * fresh snapshot. A wait for anything else (a settings change, a member
 * added) is just a wait. (The server's transactions of a tenant moving back
 * take the row at their start, use_tenant_schema, and never wait here.) A
 * write addressed to a tenant schema's own resources table while that tenant
 * moves back fails the same way: its resources are in two tables, and only
 * the family names both. So does a write by a route cached before the
 * tenant's last move (context_route_matches), which would find none of the
 * rows the move took elsewhere.
 *
 * Rows of descendants written by an ancestor are locked by
 * tenant_row_home, row by row; an update or delete that may reach the rows
 * of descendants moving back to the shared tier holds them here, before any
 * row, like the tenant's own. Sessions
 * without a tenant context (owner, superuser) lock nothing here.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_tier_lock()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me uuid := tenantry.current_tenant_id();
    before record;
    after record;
    subtree text;
    descendants uuid[];
    moved_before bigint[];
    moved_after bigint[];
    held bigint;
BEGIN
    IF me IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT t.isolation, t.schema_name, t.moving_to INTO after FROM tenantry.tenants t WHERE t.tenant_id = me FOR SHARE SKIP LOCKED;
    IF NOT FOUND THEN
        -- Locked by another transaction (or no such tenant): wait for it. A
        -- move's lock fails the statement afterwards; another (a settings
        -- change, a member added, a tenant-schema migration) does not.
        SELECT t.isolation, t.moving_to INTO before FROM tenantry.tenants t WHERE t.tenant_id = me;
        SELECT t.isolation, t.schema_name, t.moving_to INTO after FROM tenantry.tenants t WHERE t.tenant_id = me FOR SHARE;
        IF FOUND AND (after.moving_to = 'shared'
                      OR (before.isolation, before.moving_to) IS DISTINCT FROM (after.isolation, after.moving_to)) THEN
            RAISE EXCEPTION 'tenant % changed tiers while this statement waited for it; retry the transaction', me
                USING ERRCODE = '40001', HINT = 'tier_moved';
        END IF;
    ELSIF after.moving_to = 'shared' AND TG_TABLE_NAME = 'resources' AND TG_TABLE_SCHEMA ~ '^tenant_[0-9a-f]{20}$' THEN
        RAISE EXCEPTION 'tenant % is moving to the shared tier: write its rows through the pooled table (%), which holds them all; retry the transaction', me, TG_TABLE_NAME
            USING ERRCODE = '40001', HINT = 'tier_moved';
    END IF;
    -- A route cached before a move committed, naming a table of the tier
    -- the tenant left (its rows are gone from it): an UPDATE or DELETE there
    -- would find none of them and report nothing done. Failed instead, and
    -- retried with a fresh part. (The row is held now: no move commits
    -- before this statement ends.) A statement on a table of its tier now
    -- (the guide's create_resource, which asks tenants where) goes on.
    IF FOUND AND NOT tenantry.context_route_matches(current_setting('backtrace_functions'),
                                                    after.isolation, after.schema_name)
       AND after.moving_to IS DISTINCT FROM 'shared'
       AND ((after.isolation = 'schema' AND TG_TABLE_SCHEMA <> after.schema_name)
            OR (after.isolation <> 'schema' AND TG_TABLE_SCHEMA ~ '^tenant_[0-9a-f]{20}$')) THEN
        RAISE EXCEPTION 'tenant % changed tiers since this transaction''s route was cached; retry the transaction', me
            USING ERRCODE = '40001', HINT = 'tier_moved',
                  DETAIL = 'a psql session whose tenant context was set before the move sets it again (set_tenant_context) to route its table names to the tenant''s tier';
    END IF;
    -- An ancestor (its context names descendants) may update or delete the
    -- rows of a descendant that is moving back to the shared tier, whose
    -- batches move them between two tables: it holds that tenant's row too,
    -- as the descendant's own writes do. (An INSERT reaches no existing row.
    -- Found through tenants_moving_idx, empty but for moves under way, and
    -- the context's subtree as text: no per-descendant lookup.) A statement
    -- that had to wait fails once a batch moved rows meanwhile.
    -- (NULL for an INSERT: the condition below is then not true.)
    subtree := CASE WHEN TG_OP <> 'INSERT' THEN split_part(current_setting('backtrace_functions'), ',v', 2) END;
    IF strpos(subtree, ',') > 0 THEN
        -- A moving tenant's state: how many rows its batches moved (-1
        -- before the first), -2 once it no longer moves back.
        SELECT array_agg(t.tenant_id ORDER BY t.tenant_id),
               array_agg(CASE WHEN t.moving_to = 'shared' THEN coalesce(mv.rows_moved, -1) ELSE -2 END
                         ORDER BY t.tenant_id)
          INTO descendants, moved_before
        FROM tenantry.tenants t LEFT JOIN tenantry.tier_moves mv ON mv.tenant_id = t.tenant_id
        WHERE t.moving_to = 'shared' AND t.tenant_id <> me
          AND strpos(subtree, replace(t.tenant_id::text, '-', '')) > 0;
        IF descendants IS NOT NULL THEN
            SELECT count(*) INTO held FROM (
                SELECT 1 FROM tenantry.tenants t WHERE t.tenant_id = ANY (descendants)
                ORDER BY t.tenant_id FOR SHARE SKIP LOCKED) l;
            IF held < cardinality(descendants) THEN
                PERFORM 1 FROM tenantry.tenants t WHERE t.tenant_id = ANY (descendants)
                ORDER BY t.tenant_id FOR SHARE;
                SELECT array_agg(CASE WHEN t.moving_to = 'shared' THEN coalesce(mv.rows_moved, -1) ELSE -2 END
                                 ORDER BY t.tenant_id)
                  INTO moved_after
                FROM tenantry.tenants t LEFT JOIN tenantry.tier_moves mv ON mv.tenant_id = t.tenant_id
                WHERE t.tenant_id = ANY (descendants);
                IF moved_after IS DISTINCT FROM moved_before THEN
                    RAISE EXCEPTION 'a descendant of tenant % changed tiers while this statement waited for it; retry the transaction', me
                        USING ERRCODE = '40001', HINT = 'tier_moved';
                END IF;
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_tier_lock() IS 'Trigger (BEFORE each write statement on a tenant table): takes the current tenant''s row FOR SHARE, so that a tier move''s cut-over or batch (FOR NO KEY UPDATE on the tenant''s row) waits for writes in flight and holds back new ones of that tenant only; 40001 (HINT tier_moved) when the statement had to wait for a move (its snapshot is older than the move) or writes a tenant schema''s own resources table while that tenant moves back to the shared tier, or names a table of the tier the tenant left by a route (its context part) cached before it changed tiers. An ancestor''s update or delete also holds its descendants that are moving back to the shared tier.';

/**
 * Row trigger on every tenant table: a row must be written in its tenant's
 * tier: in a table of its own schema (tenants.schema_name) when the tenant
 * is schema-isolated, in the pooled table otherwise; a resource in either
 * while it moves back to the shared tier. A write through a stale
 * route fails with 40001 (HINT tier_moved): the server forgets the tenant's
 * cached part and retries. Rows the caller may not write at all are left to
 * the policy, which refuses them without telling whether the tenant exists.
 * While the tenant moves, the row's key (column TG_ARGV[0]) is appended to
 * tier_move_changes: towards the schema tier for every write, towards the
 * shared tier for writes in its own tables of adopted families (not
 * resources, which move in place). The tier move itself writes with
 * session_replication_role = replica, which fires none of this.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_row_home()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    row_tenant uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
    me uuid := tenantry.current_tenant_id();
    t record;
    unseen boolean;
    family regclass;
    old_key text;
    new_key text;
BEGIN
    -- A tenant role's row of a tenant it cannot see, context or not: the
    -- policy refuses it, alike for every tenant, existing or not, so no
    -- error here may tell them apart. The write may still land: through a
    -- SECURITY DEFINER function of a role that bypasses row level security
    -- (a team's helper, or tenantry_owner's), whose role this trigger (a
    -- definer itself) cannot see. So it is held and recorded for a tier
    -- move like every other write (a refused write takes its record with
    -- it), and only the tier errors below are left out.
    unseen := NOT (row_tenant = ANY (coalesce(tenantry.visible_tenant_ids(), '{}'))) AND tenantry.limits_refuse_writer();
    IF row_tenant IS NOT DISTINCT FROM me THEN
        -- Locked by tenant_tier_lock, before any row.
        SELECT tn.isolation, tn.schema_name, tn.moving_to INTO t
        FROM tenantry.tenants tn WHERE tn.tenant_id = row_tenant;
    ELSE
        -- A descendant's row written by an ancestor, or a session without a
        -- tenant context. On a Citus cluster (the trigger fires on the
        -- shards: on the workers, and on a coordinator that holds some)
        -- there is no tier to keep: a cluster has no schema tenants and no
        -- moves (require_schema_tier), and a row lock on the tenants
        -- reference table taken from inside a shard's statement deadlocks
        -- with the coordinator's own transaction (deleting a tenant others
        -- share with revokes those shares, each in its owner's rows). The
        -- catalog check first: without Citus, no call.
        IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL
           AND (tenantry.on_citus_worker() OR tenantry.citus_distributed()) THEN
            RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
        END IF;
        SELECT tn.isolation, tn.schema_name, tn.moving_to INTO t
        FROM tenantry.tenants tn WHERE tn.tenant_id = row_tenant FOR SHARE;
    END IF;
    IF FOUND AND ((t.isolation = 'schema' AND TG_TABLE_SCHEMA <> t.schema_name
                   -- Moving back to the shared tier, its resources are in both
                   -- tables (tier_move_rows_back); every other family's rows stay
                   -- in its schema until the cut-over.
                   AND NOT (t.moving_to IS NOT DISTINCT FROM 'shared' AND TG_RELID = 'tenantry.resources'::regclass)
                   -- A table adopted after the tenant's schema was made: its
                   -- rows stay here until tenantry migrate gives the schema
                   -- its own table (add_tenant_schema_table moves them). And
                   -- a table that is no family (its name is another's):
                   -- every tenant's rows are here. So: its schema has a
                   -- table of this table's family (this one's, or this one
                   -- as another tenant's table of it).
                   -- (The name first: family_of reads tier_tables().)
                   AND to_regclass(format('%I.%I', t.schema_name, TG_TABLE_NAME)) IS NOT NULL
                   AND tenantry.family_of(to_regclass(format('%I.%I', t.schema_name, TG_TABLE_NAME)))
                       = coalesce(tenantry.family_of(TG_RELID), TG_RELID))
                  OR (t.isolation <> 'schema' AND TG_TABLE_SCHEMA ~ '^tenant_[0-9a-f]{20}$')
                  -- Another schema tenant's schema: never, whatever its own
                  -- schema holds (one behind a step has no table of this
                  -- family yet, and its rows belong in the pooled table).
                  OR (t.isolation = 'schema' AND TG_TABLE_SCHEMA <> t.schema_name
                      AND TG_TABLE_SCHEMA ~ '^tenant_[0-9a-f]{20}$'))
       AND NOT unseen THEN
        -- Another tenant's row (an ancestor writing a descendant's, or no
        -- tenant context): the writer's unqualified names go to its own
        -- tier's tables whatever it retries, so this is no stale route.
        -- (While it moves between tiers, the rows change tables and a
        -- retry after the cut-over may find them where it writes.)
        IF row_tenant IS DISTINCT FROM me AND t.moving_to IS NULL THEN
            RAISE EXCEPTION 'tenant %''s rows of % are kept in the table of its own tier (%), not in %.%: write them in that tenant''s own context',
                row_tenant, TG_TABLE_NAME, CASE WHEN t.isolation = 'schema' THEN 'its schema' ELSE 'the pooled table' END,
                TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'TN409';
        END IF;
        -- The tenant's own row, no move under way, and the transaction's
        -- route is the tenant's tier now (tenant_tier_lock checked it and
        -- holds the tier): no retry routes this statement elsewhere. It
        -- named the table past the route: qualified (public.invoices), or
        -- from a function with its own search_path, or a psql session
        -- without setup_connection(). Said once, not retried until the
        -- server gives up with 503 (found by a review adopting a messy
        -- schema: a team's trigger naming public.audit_log).
        IF row_tenant IS NOT DISTINCT FROM me AND t.moving_to IS NULL
           AND tenantry.context_route_matches(current_setting('backtrace_functions'), t.isolation, t.schema_name) THEN
            RAISE EXCEPTION 'tenant %''s rows of % are kept in %, not in %.%: the statement named that table past the tenant''s route',
                row_tenant, TG_TABLE_NAME, CASE WHEN t.isolation = 'schema' THEN 'its schema' ELSE 'the pooled table' END,
                TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'TN409',
                      DETAIL = 'A schema-qualified name, a function or trigger whose own search_path names the table, or a psql session that did not call SELECT tenantry.setup_connection() after setting its tenant context.',
                      HINT = 'Name tenant tables unqualified in statements run in a tenant context, and leave search_path out of functions that write them: the tenant''s route then finds its own table.';
        END IF;
        RAISE EXCEPTION 'tenant %''s rows of % are kept in %, not in %.%: if it just moved between tiers, retry the transaction (a psql session routes its unqualified table names to the tenant''s tables by calling SELECT tenantry.setup_connection() once after setting a tenant context; the setters move that route along when the tenant changes)',
            row_tenant, TG_TABLE_NAME, CASE WHEN t.isolation = 'schema' THEN 'its schema' ELSE 'the pooled table' END,
            TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = '40001', HINT = 'tier_moved';
    END IF;
    -- What the move copies again at its cut-over, keyed by the family's
    -- pooled table: towards the schema tier every write (in the pooled
    -- tables); towards the shared tier the writes in the tenant's own
    -- tables of adopted families, whose rows the cut-over copies before it
    -- takes the tenant's row (resources move in place, batch by batch:
    -- nothing to record).
    IF t.moving_to = 'schema' THEN
        family := TG_RELID;
    ELSIF t.moving_to = 'shared' AND TG_TABLE_SCHEMA = t.schema_name THEN
        family := tenantry.family_of(TG_RELID);
        IF family = 'tenantry.resources'::regclass THEN
            family := NULL;
        END IF;
    END IF;
    IF family IS NOT NULL THEN
        IF TG_OP <> 'INSERT' THEN
            old_key := to_jsonb(OLD) ->> TG_ARGV[0];
            INSERT INTO tenantry.tier_move_changes (tenant_id, table_id, row_key)
            VALUES (row_tenant, family, old_key);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            new_key := to_jsonb(NEW) ->> TG_ARGV[0];
            IF new_key IS DISTINCT FROM old_key THEN
                INSERT INTO tenantry.tier_move_changes (tenant_id, table_id, row_key)
                VALUES (row_tenant, family, new_key);
            END IF;
        END IF;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_row_home() IS 'Trigger (BEFORE each row written in a tenant table): refuses a row of a visible tenant written outside its tier (TN409 when the writer''s route is current and no move is under way: the statement named the table past the route; else 40001, HINT tier_moved: the writer''s route is stale, retry; both resources tables are its tier while it moves back to the shared one) and records the row''s key (column TG_ARGV[0]) in tier_move_changes while the tenant moves: towards the schema tier, every write; towards the shared tier, writes in its own tables of adopted families (the cut-over copies them again).';

/** A deleted resource takes its shares with it (what the foreign key did when resources was one table). */
CREATE OR REPLACE FUNCTION tenantry.resources_revoke_shares()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.shared_with <> '{}' THEN
        DELETE FROM tenantry.shared_resources s WHERE s.tenant_id = OLD.tenant_id AND s.resource_id = OLD.id;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.resources_revoke_shares() IS 'Trigger (AFTER DELETE on every resources table): revokes the deleted resource''s shares (audited by shared_resources'' trigger). Not fired by tier moves, which keep rows and shares.';

/**
 * A resource's data keeps its numbers as written, and PostgreSQL writes a
 * number out in full: 1e131071, eight bytes in, comes back as 131,072
 * digits. A few kilobytes of such numbers made a row of hundreds of
 * megabytes to read (and to share with another tenant, whose listing then
 * carried them), and 90 kB made the row's size overflow PostgreSQL's 1 GB
 * value limit (a 500): found by a concurrency review. A number whose
 * magnitude is 1e400 or more, or below 1e-400 and not zero, is refused
 * (every double, 1.8e308 to 4.9e-324, passes; one number writes out as at
 * most about 400 digits). Checked by the trigger's condition, in C, before
 * the row's size is computed: the function runs only to refuse. What is
 * stored is bounded too (resources_refuse_oversized).
 */
CREATE OR REPLACE FUNCTION tenantry.resources_refuse_huge_numbers()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'data holds a number too large or too small to store: magnitudes of at least 1e-400 and below 1e400 (and 0) are kept'
        USING ERRCODE = 'TN422', HINT = 'data';
END
$$;
COMMENT ON FUNCTION tenantry.resources_refuse_huge_numbers() IS 'Trigger (BEFORE INSERT or UPDATE OF data on every resources table, when data holds a number of magnitude 1e400 or more, or below 1e-400 and not zero): refuses it (TN422), since PostgreSQL writes numbers out in full (1e131071 is 131,072 digits read back).';

/**
 * A resource as stored (size_bytes: its name and its data as PostgreSQL
 * writes them out) is at most 16 MiB: with numbers written out in full, a
 * body within the API's limit could still store many times its size, which
 * every listing that includes it (another tenant's, through a share) would
 * carry. Checked by the trigger's condition once the size is computed.
 */
CREATE OR REPLACE FUNCTION tenantry.resources_refuse_oversized()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'a resource is at most 16 MiB as stored (its name and data written out): this one is % bytes', NEW.size_bytes
        USING ERRCODE = 'TN422', HINT = 'data';
END
$$;
COMMENT ON FUNCTION tenantry.resources_refuse_oversized() IS 'Trigger (AFTER INSERT or UPDATE OF name, data on every resources table, when size_bytes is over 16 MiB): refuses the row (TN422); PostgreSQL writes numbers out in full, so a small body can store much more.';

-- The pooled table's triggers; a schema tenant's table gets the same ones
-- (secure_tenant_copy, 07_schemas.sql, copies them).
CREATE OR REPLACE TRIGGER resources_before_update
    BEFORE UPDATE ON tenantry.resources
    FOR EACH ROW EXECUTE FUNCTION tenantry.resources_before_update();
CREATE OR REPLACE TRIGGER resources_refuse_huge_numbers
    BEFORE INSERT OR UPDATE OF data ON tenantry.resources
    FOR EACH ROW
    WHEN (pg_catalog.jsonb_path_exists(NEW.data,
          'strict $.** ? (@.type() == "number" && (@ >= 1e400 || @ <= -1e400 || (@ != 0 && @ < 1e-400 && @ > -1e-400)))'))
    EXECUTE FUNCTION tenantry.resources_refuse_huge_numbers();
CREATE OR REPLACE TRIGGER resources_refuse_oversized
    AFTER INSERT OR UPDATE OF name, data ON tenantry.resources
    FOR EACH ROW WHEN (NEW.size_bytes > 16777216)
    EXECUTE FUNCTION tenantry.resources_refuse_oversized();
CREATE OR REPLACE TRIGGER resources_quota
    AFTER INSERT OR DELETE OR UPDATE OF name, data ON tenantry.resources
    FOR EACH ROW EXECUTE FUNCTION tenantry.resources_quota();
CREATE OR REPLACE TRIGGER resources_revoke_shares
    AFTER DELETE ON tenantry.resources
    FOR EACH ROW EXECUTE FUNCTION tenantry.resources_revoke_shares();
CREATE OR REPLACE TRIGGER tenant_tier_lock
    BEFORE INSERT OR UPDATE OR DELETE ON tenantry.resources
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.tenant_tier_lock();
CREATE OR REPLACE TRIGGER tenant_row_home
    BEFORE INSERT OR UPDATE OR DELETE ON tenantry.resources
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenant_row_home('id');

-- Not to tenantry_app_shared: it reads shared rows through resources_shared_with_me().
GRANT SELECT ON tenantry.resources TO tenantry_app_own;
-- No INSERT on id: ids are generated by the database, so a tenant cannot plant
-- a row under an id it learned from another tenant.
GRANT INSERT (tenant_id, name, data), UPDATE (name, data), DELETE ON tenantry.resources TO tenantry_app_own;

