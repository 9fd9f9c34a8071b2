-- =============================================================================
-- Limits: how many children, descendants, API keys, roles, members and shares
-- a tenant may have. Settings with defaults, enforced by the database for
-- every writer (API, library, CLI, psql), race-free.
--
-- Each limit is a tenant setting (max_children, max_descendants, max_api_keys,
-- max_roles, max_members, max_shares); absent, the default of
-- tenantry.limit_defaults() applies, so every tenant is limited. An operator
-- raises or lowers them per tenant.
--
-- Every tenant has a row in tenant_limit_usage with its exact counts. A row
-- trigger moves the count under that row's lock, so concurrent creators of one
-- tenant queue on it and the one that would cross the limit fails (TN429, HINT
-- naming the setting). Only the counted tenant's row is locked (and, for a new
-- tenant, its ancestors' rows, root first): tenants of other trees never wait
-- on each other. Limits are read without locking the tenant row: a write that
-- races an operator lowering a limit may still pass the old one; every write
-- after the change sees the new one.
--
-- What counts:
-- - children: the parent's direct children that are not deleted;
-- - descendants: every tenant below, at any depth, that is not deleted, so a
--   subtree cannot grow without bound through its descendants (and its depth
--   is bounded with it);
-- - api_keys: keys neither revoked nor replaced by rotation (rotating at the
--   limit works: the successor replaces its predecessor); an expired key
--   counts until it is revoked;
-- - roles, members: rows; shares: shares of the tenant's resources and of its
--   rows of adopted tables (counted against the owner, whoever shares it).
-- Writes as tenantry_admin or by a superuser session are counted, never
-- refused; which role writes is decided by the role (current_setting('role'),
-- SET ROLE's, untouched by SECURITY DEFINER), never by a setting the writer
-- controls.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

/**
 * The default of every limit, applied when a tenant's settings do not name
 * it. Sized for a B2B tenant (an organisation with its teams, integrations and
 * people); an operator raises them for a larger customer.
 */
CREATE OR REPLACE FUNCTION tenantry.limit_defaults()
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
    -- No SET clause, every name qualified: inlined (and folded) by the planner.
    SELECT '{"max_children": 100, "max_descendants": 1000, "max_api_keys": 100,
             "max_roles": 100, "max_members": 1000, "max_shares": 1000,
             "child_creation_rate_per_second": 10}'::pg_catalog.jsonb
$$;
COMMENT ON FUNCTION tenantry.limit_defaults() IS 'The default of each limit (max_children 100, max_descendants 1000, max_api_keys 100, max_roles 100, max_members 1000, max_shares 1000) and of the child creation rate the API applies (child_creation_rate_per_second 10), in force when a tenant''s settings do not name them.';
GRANT EXECUTE ON FUNCTION tenantry.limit_defaults() TO tenantry_app, tenantry_admin;

/** The value of a numeric setting in force: the tenant's own, else the default of a limit; NULL: unlimited. */
CREATE OR REPLACE FUNCTION tenantry.setting_in_force(settings jsonb, key text)
RETURNS numeric
LANGUAGE sql IMMUTABLE
AS $$
    -- No SET clause, every name qualified: inlined by the planner.
    SELECT coalesce(settings OPERATOR(pg_catalog.->>) key,
                    tenantry.limit_defaults() OPERATOR(pg_catalog.->>) key)::pg_catalog.numeric
$$;
COMMENT ON FUNCTION tenantry.setting_in_force(jsonb, text) IS 'A numeric setting in force (limit, quota, rate): the tenant''s value, else the limit''s default; NULL means unlimited.';
GRANT EXECUTE ON FUNCTION tenantry.setting_in_force(jsonb, text) TO tenantry_app, tenantry_admin;

/**
 * A tenant may give its child at most what it has itself: for every numeric
 * setting the parent has in force (its limits always, its quotas and rate
 * limit when set), a value above the parent's is refused (TN403, HINT naming
 * the setting) and an absent one becomes the parent's when the default would
 * be more. Otherwise a tenant would escape its own limits through a child it
 * created with larger ones.
 */
CREATE OR REPLACE FUNCTION tenantry.settings_for_child(parent_settings jsonb, settings jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb := coalesce(settings, '{}');
    k text;
    ceiling numeric;
    derived boolean;
BEGIN
    PERFORM tenantry.validate_tenant_settings(result);
    FOREACH k IN ARRAY ARRAY['max_children', 'max_descendants', 'max_api_keys', 'max_roles', 'max_members',
                             'max_shares', 'max_resources', 'max_storage_bytes', 'rate_limit_per_second',
                             'rate_limit_burst', 'child_creation_rate_per_second'] LOOP
        ceiling := tenantry.setting_in_force(parent_settings, k);
        -- A rate limit without a burst has the burst the API applies: the
        -- rate, rounded up (a child given a larger one escaped its parent's
        -- limit: found by an outside review). Only checked when given: an
        -- absent burst is the child's own rate's, at most its parent's.
        derived := ceiling IS NULL AND k = 'rate_limit_burst' AND parent_settings ? 'rate_limit_per_second';
        IF derived THEN
            ceiling := greatest(ceil((parent_settings->>'rate_limit_per_second')::numeric), 1);
        END IF;
        CONTINUE WHEN ceiling IS NULL;
        IF result ? k THEN
            IF (result->>k)::numeric > ceiling THEN
                RAISE EXCEPTION 'a tenant cannot give its child a higher % (%) than its own (%)', k, result->>k, ceiling
                    USING ERRCODE = 'TN403', HINT = 'settings.' || k;
            END IF;
        ELSIF NOT derived AND coalesce(tenantry.setting_in_force(result, k) > ceiling, true) THEN
            result := result || jsonb_build_object(k, ceiling);
        END IF;
    END LOOP;
    RETURN result;
END
$$;
COMMENT ON FUNCTION tenantry.settings_for_child(jsonb, jsonb) IS 'Settings of a child a tenant creates: no numeric setting above the parent''s (TN403; a rate limit''s burst, when the parent sets none, above its rate rounded up), absent ones capped at the parent''s. Used by create_child_tenant.';
GRANT EXECUTE ON FUNCTION tenantry.settings_for_child(jsonb, jsonb) TO tenantry_app, tenantry_admin;

/** Recounts every count of a tenant from its rows into tenant_limit_usage. */
CREATE OR REPLACE FUNCTION tenantry.recount_limit_usage(tid uuid)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO tenantry.tenant_limit_usage AS u (tenant_id, children, descendants, api_keys, roles, members, shares)
    SELECT tid,
           (SELECT count(*) FROM tenantry.tenants c WHERE c.parent_id = tid AND c.status <> 'deleted'),
           (SELECT count(*) FROM tenantry.tenant_hierarchy h JOIN tenantry.tenants d ON d.tenant_id = h.child_id
             WHERE h.parent_id = tid AND h.depth > 0 AND d.status <> 'deleted'),
           (SELECT count(*) FROM tenantry.api_keys a
             WHERE a.tenant_id = tid AND a.revoked_at IS NULL AND a.rotated_to IS NULL),
           (SELECT count(*) FROM tenantry.roles r WHERE r.tenant_id = tid),
           (SELECT count(*) FROM tenantry.tenant_members m WHERE m.tenant_id = tid),
           (SELECT count(*) FROM tenantry.shared_resources s WHERE s.tenant_id = tid)
             + (SELECT count(*) FROM tenantry.shared_rows s WHERE s.tenant_id = tid)
    ON CONFLICT (tenant_id) DO UPDATE
        SET children = excluded.children, descendants = excluded.descendants, api_keys = excluded.api_keys,
            roles = excluded.roles, members = excluded.members, shares = excluded.shares;
$$;
COMMENT ON FUNCTION tenantry.recount_limit_usage(uuid) IS 'Internal (and maintenance): recounts a tenant''s children, descendants, keys, roles, members and shares into tenant_limit_usage. Not granted.';

/**
 * Moves the counts of the tenants above a new, moved or deleted tenant: every
 * ancestor's descendants by `descendants_delta` and the parent's children by
 * `children_delta`, locking the counter rows root first (every creator in a
 * tree takes them in that order, so they queue instead of deadlocking). When
 * a count grows past its limit and the writer is a tenant role: TN429.
 */
CREATE OR REPLACE FUNCTION tenantry.count_below(parent uuid, children_delta bigint, descendants_delta bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ancestor uuid;
    used record;
    lim numeric;
    refuse boolean := descendants_delta > 0 AND tenantry.limits_refuse_writer();
BEGIN
    IF descendants_delta = 0 AND children_delta = 0 THEN
        RETURN;
    END IF;
    FOR ancestor IN
        SELECT h.parent_id FROM tenantry.tenant_hierarchy h WHERE h.child_id = parent ORDER BY h.depth DESC
    LOOP
        UPDATE tenantry.tenant_limit_usage u
           SET descendants = greatest(u.descendants + descendants_delta, 0),
               children = greatest(u.children + CASE WHEN ancestor = parent THEN children_delta ELSE 0 END, 0)
         WHERE u.tenant_id = ancestor
        RETURNING u.children, u.descendants INTO used;
        IF NOT FOUND THEN
            -- A counter lost to manual maintenance: rebuild it (it includes this change).
            PERFORM tenantry.recount_limit_usage(ancestor);
            SELECT u.children, u.descendants INTO used FROM tenantry.tenant_limit_usage u WHERE u.tenant_id = ancestor;
        END IF;
        CONTINUE WHEN NOT refuse;
        IF ancestor = parent AND children_delta > 0 THEN
            lim := tenantry.setting_in_force((SELECT t.settings FROM tenantry.tenants t WHERE t.tenant_id = ancestor), 'max_children');
            IF used.children > lim THEN
                RAISE EXCEPTION 'tenant % may have at most % children', ancestor, lim::bigint
                    USING ERRCODE = 'TN429', HINT = 'settings.max_children';
            END IF;
        END IF;
        lim := tenantry.setting_in_force((SELECT t.settings FROM tenantry.tenants t WHERE t.tenant_id = ancestor), 'max_descendants');
        IF used.descendants > lim THEN
            IF ancestor = tenantry.current_tenant_id() OR ancestor = parent THEN
                RAISE EXCEPTION 'tenant % may have at most % tenants below it', ancestor, lim::bigint
                    USING ERRCODE = 'TN429', HINT = 'settings.max_descendants';
            END IF;
            -- An ancestor the writer cannot see: its limit, not its id.
            RAISE EXCEPTION 'a tenant above this one may have at most % tenants below it', lim::bigint
                USING ERRCODE = 'TN429', HINT = 'settings.max_descendants';
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantry.count_below(uuid, bigint, bigint) IS 'Internal: moves the children count of a parent and the descendants count of it and its ancestors (root first); TN429 past max_children or max_descendants for tenant roles. Not granted.';

/** Trigger on tenants: a new tenant gets its counter row and counts against the tenants above it; a move or a deletion moves those counts. */
CREATE OR REPLACE FUNCTION tenantry.tenants_limits()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_size bigint := 0;
    new_size bigint := 0;
BEGIN
    -- Citus: once, from the coordinator's copy of the tenants reference table
    -- (a worker's copy of the row fires it too; on_citus_worker()).
    IF tenantry.on_citus_worker() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tenantry.tenant_limit_usage (tenant_id) VALUES (NEW.tenant_id) ON CONFLICT DO NOTHING;
        IF NEW.parent_id IS NOT NULL AND NEW.status <> 'deleted' THEN
            PERFORM tenantry.count_below(NEW.parent_id, 1, 1);
        END IF;
        RETURN NULL;
    END IF;
    IF NEW.parent_id IS NOT DISTINCT FROM OLD.parent_id
       AND (NEW.status = 'deleted') = (OLD.status = 'deleted') THEN
        RETURN NULL;
    END IF;
    -- The tenant and the live tenants below it (a deleted tenant has none).
    IF OLD.status <> 'deleted' OR NEW.status <> 'deleted' THEN
        SELECT count(*) INTO new_size
        FROM tenantry.tenant_hierarchy h JOIN tenantry.tenants d ON d.tenant_id = h.child_id
        WHERE h.parent_id = NEW.tenant_id AND h.depth > 0 AND d.status <> 'deleted';
        old_size := CASE WHEN OLD.status <> 'deleted' THEN new_size + 1 ELSE 0 END;
        new_size := CASE WHEN NEW.status <> 'deleted' THEN new_size + 1 ELSE 0 END;
    END IF;
    IF OLD.parent_id IS NOT NULL THEN
        PERFORM tenantry.count_below(OLD.parent_id, CASE WHEN old_size > 0 THEN -1 ELSE 0 END, -old_size);
    END IF;
    IF NEW.parent_id IS NOT NULL THEN
        PERFORM tenantry.count_below(NEW.parent_id, CASE WHEN new_size > 0 THEN 1 ELSE 0 END, new_size);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenants_limits() IS 'Trigger: creates a new tenant''s limit counters and counts it against its parent (max_children) and every ancestor (max_descendants); re-parenting and deletion move those counts.';
CREATE OR REPLACE TRIGGER tenants_limits
    AFTER INSERT OR UPDATE OF parent_id, status ON tenantry.tenants
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenants_limits();

/**
 * Row trigger on api_keys, roles, tenant_members, shared_resources and shared_rows (its
 * argument names the counter): moves the count of the row's tenant and
 * refuses (TN429, HINT naming the setting) a tenant role's write that would
 * take it past the limit. Shrinking is always allowed. A key counts while it
 * is neither revoked nor rotated; the successor a rotation inserts is counted,
 * not refused (its predecessor stops counting in the same transaction).
 */
CREATE OR REPLACE FUNCTION tenantry.count_toward_limit()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    counter text := TG_ARGV[0];
    tid uuid;
    delta bigint := 0;
    used bigint;
    lim numeric;
    successor boolean := false;
BEGIN
    IF TG_OP = 'DELETE' THEN
        tid := OLD.tenant_id;
    ELSE
        tid := NEW.tenant_id;
    END IF;
    IF counter = 'api_keys' THEN
        IF TG_OP <> 'DELETE' AND NEW.revoked_at IS NULL AND NEW.rotated_to IS NULL THEN
            delta := 1;
        END IF;
        IF TG_OP <> 'INSERT' AND OLD.revoked_at IS NULL AND OLD.rotated_to IS NULL THEN
            delta := delta - 1;
        END IF;
        IF TG_OP = 'INSERT' THEN
            successor := NEW.rotated_from IS NOT NULL;
        END IF;
    ELSE
        delta := CASE TG_OP WHEN 'INSERT' THEN 1 WHEN 'DELETE' THEN -1 ELSE 0 END;
    END IF;
    IF delta = 0 THEN
        RETURN NULL;
    END IF;
    UPDATE tenantry.tenant_limit_usage u
       SET api_keys = greatest(u.api_keys + CASE WHEN counter = 'api_keys' THEN delta ELSE 0 END, 0),
           roles    = greatest(u.roles    + CASE WHEN counter = 'roles'    THEN delta ELSE 0 END, 0),
           members  = greatest(u.members  + CASE WHEN counter = 'members'  THEN delta ELSE 0 END, 0),
           shares   = greatest(u.shares   + CASE WHEN counter = 'shares'   THEN delta ELSE 0 END, 0)
     WHERE u.tenant_id = tid
    -- A searched CASE, not CASE counter WHEN ...: Citus sends this statement
    -- to the shard with counter bound, and deparsed the simple form wrongly
    -- (text = boolean).
    RETURNING CASE WHEN counter = 'api_keys' THEN u.api_keys WHEN counter = 'roles' THEN u.roles
                   WHEN counter = 'members' THEN u.members ELSE u.shares END
    INTO used;
    IF NOT FOUND THEN
        -- A counter lost to manual maintenance, or a tenant deleted under the
        -- statement: rebuild it (it includes this row).
        PERFORM tenantry.recount_limit_usage(tid);
        SELECT CASE counter WHEN 'api_keys' THEN u.api_keys WHEN 'roles' THEN u.roles
                            WHEN 'members' THEN u.members ELSE u.shares END
        INTO used FROM tenantry.tenant_limit_usage u WHERE u.tenant_id = tid;
    END IF;
    IF delta < 0 OR successor OR NOT tenantry.limits_refuse_writer() THEN
        RETURN NULL;
    END IF;
    lim := tenantry.setting_in_force((SELECT t.settings FROM tenantry.tenants t WHERE t.tenant_id = tid), 'max_' || counter);
    IF used > lim THEN
        RAISE EXCEPTION 'tenant % may have at most % %', tid, lim::bigint,
            CASE counter WHEN 'api_keys' THEN 'API keys' WHEN 'shares' THEN 'shares of its resources and rows' ELSE counter END
            USING ERRCODE = 'TN429', HINT = 'settings.max_' || counter;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.count_toward_limit() IS 'Trigger: counts keys (live ones), roles, members and shares against the owning tenant''s max_api_keys, max_roles, max_members, max_shares; TN429 when a tenant role''s write would exceed one (administrators and superusers are counted, not refused).';

CREATE OR REPLACE TRIGGER api_keys_limit
    AFTER INSERT OR DELETE OR UPDATE OF revoked_at, rotated_to ON tenantry.api_keys
    FOR EACH ROW EXECUTE FUNCTION tenantry.count_toward_limit('api_keys');
CREATE OR REPLACE TRIGGER roles_limit
    AFTER INSERT OR DELETE ON tenantry.roles
    FOR EACH ROW EXECUTE FUNCTION tenantry.count_toward_limit('roles');
CREATE OR REPLACE TRIGGER tenant_members_limit
    AFTER INSERT OR DELETE ON tenantry.tenant_members
    FOR EACH ROW EXECUTE FUNCTION tenantry.count_toward_limit('members');
CREATE OR REPLACE TRIGGER shared_resources_limit
    AFTER INSERT OR DELETE ON tenantry.shared_resources
    FOR EACH ROW EXECUTE FUNCTION tenantry.count_toward_limit('shares');
-- Shares of rows of adopted tables count toward the same max_shares.
CREATE OR REPLACE TRIGGER shared_rows_limit
    AFTER INSERT OR DELETE ON tenantry.shared_rows
    FOR EACH ROW EXECUTE FUNCTION tenantry.count_toward_limit('shares');

CREATE POLICY limit_usage_read_own ON tenantry.tenant_limit_usage
    FOR SELECT TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY limit_usage_read_own ON tenantry.tenant_limit_usage IS 'A tenant reads its own limit counters; only the database writes them.';
GRANT SELECT ON tenantry.tenant_limit_usage TO tenantry_app;
