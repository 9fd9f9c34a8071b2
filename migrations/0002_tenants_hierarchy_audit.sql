-- =============================================================================
-- 0002 tenants, hierarchy (transitive closure), audit log, context setters
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

-- -----------------------------------------------------------------------------
-- Settings: a closed set of keys, validated by the database.
-- -----------------------------------------------------------------------------

/**
 * Raises TN422 naming the offending key when settings hold an unknown key or a
 * value of the wrong type; returns true otherwise. Known keys:
 * max_resources, max_storage_bytes (integers >= 0), rate_limit_per_second
 * (number > 0), rate_limit_burst (integer >= 1), metadata (object, free-form).
 */
CREATE FUNCTION tenantry.validate_tenant_settings(settings jsonb)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    IF settings IS NULL THEN
        RETURN true;
    END IF;
    IF jsonb_typeof(settings) <> 'object' THEN
        RAISE EXCEPTION 'settings must be a JSON object' USING ERRCODE = 'TN422', HINT = 'settings';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(settings) LOOP
        CASE k
        WHEN 'max_resources', 'max_storage_bytes' THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric < 0 OR v::numeric <> trunc(v::numeric) THEN
                RAISE EXCEPTION 'settings.% must be an integer >= 0', k USING ERRCODE = 'TN422', HINT = 'settings.' || k;
            END IF;
        WHEN 'rate_limit_burst' THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric < 1 OR v::numeric <> trunc(v::numeric) THEN
                RAISE EXCEPTION 'settings.% must be an integer >= 1', k USING ERRCODE = 'TN422', HINT = 'settings.' || k;
            END IF;
        WHEN 'rate_limit_per_second' THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric <= 0 THEN
                RAISE EXCEPTION 'settings.% must be a number > 0', k USING ERRCODE = 'TN422', HINT = 'settings.' || k;
            END IF;
        WHEN 'metadata' THEN
            IF jsonb_typeof(v) <> 'object' THEN
                RAISE EXCEPTION 'settings.metadata must be a JSON object' USING ERRCODE = 'TN422', HINT = 'settings.metadata';
            END IF;
        ELSE
            RAISE EXCEPTION 'unknown settings key "%"', k
                USING ERRCODE = 'TN422', HINT = 'settings.' || k,
                      DETAIL = 'known keys: max_resources, max_storage_bytes, rate_limit_per_second, rate_limit_burst, metadata';
        END CASE;
    END LOOP;
    RETURN true;
END
$$;
COMMENT ON FUNCTION tenantry.validate_tenant_settings(jsonb) IS 'Validates tenants.settings: raises TN422 naming the bad key, returns true otherwise.';
GRANT EXECUTE ON FUNCTION tenantry.validate_tenant_settings(jsonb) TO tenantry_app, tenantry_admin;

-- -----------------------------------------------------------------------------
-- Tenants
-- -----------------------------------------------------------------------------

CREATE TABLE tenantry.tenants (
    tenant_id  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    settings   jsonb NOT NULL DEFAULT '{}' CHECK (tenantry.validate_tenant_settings(settings)),
    status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    parent_id  uuid REFERENCES tenantry.tenants (tenant_id),
    isolation  text NOT NULL DEFAULT 'shared' CHECK (isolation IN ('shared', 'schema')),
    CONSTRAINT tenants_not_own_parent CHECK (parent_id IS DISTINCT FROM tenant_id)
);
CREATE INDEX tenants_parent_id_idx ON tenantry.tenants (parent_id);
COMMENT ON TABLE tenantry.tenants IS 'A customer of the SaaS. Status lifecycle active <-> suspended -> deleted (terminal, data kept). isolation: shared (pooled tables under RLS) or schema (own schema tenant_<hex>). A global (reference) table.';
COMMENT ON COLUMN tenantry.tenants.settings IS 'Validated settings: quotas (max_resources, max_storage_bytes), rate limits (rate_limit_per_second, rate_limit_burst), metadata.';

ALTER TABLE tenantry.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.tenants FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_self_and_descendants ON tenantry.tenants
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY tenant_self_and_descendants ON tenantry.tenants IS 'A tenant reads its own row and its descendants'' rows, never its parent''s or siblings''.';

CREATE POLICY admin_all_tenants ON tenantry.tenants
    FOR ALL TO tenantry_admin
    USING (true) WITH CHECK (true);
COMMENT ON POLICY admin_all_tenants ON tenantry.tenants IS 'Administrators manage every tenant (they still cannot read resources).';

GRANT SELECT ON tenantry.tenants TO tenantry_app, tenantry_admin;
GRANT UPDATE (name, settings, status, parent_id) ON tenantry.tenants TO tenantry_admin;

-- -----------------------------------------------------------------------------
-- Hierarchy: transitive closure, maintained by triggers on tenants.
-- Column names follow the guide: parent_id is any ancestor (or the tenant
-- itself at depth 0), child_id any descendant.
-- -----------------------------------------------------------------------------

CREATE TABLE tenantry.tenant_hierarchy (
    parent_id uuid NOT NULL REFERENCES tenantry.tenants (tenant_id),
    child_id  uuid NOT NULL REFERENCES tenantry.tenants (tenant_id),
    depth     integer NOT NULL CHECK (depth >= 0),
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX tenant_hierarchy_child_idx ON tenantry.tenant_hierarchy (child_id, depth);
COMMENT ON TABLE tenantry.tenant_hierarchy IS 'Transitive closure of tenants.parent_id: one row per (ancestor, descendant) including (t, t, 0). Maintained by the database; cycles rejected.';

ALTER TABLE tenantry.tenant_hierarchy ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.tenant_hierarchy FORCE ROW LEVEL SECURITY;
CREATE POLICY hierarchy_within_subtree ON tenantry.tenant_hierarchy
    FOR SELECT TO tenantry_app
    USING (child_id = ANY (tenantry.visible_tenant_ids()) AND parent_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY hierarchy_within_subtree ON tenantry.tenant_hierarchy IS 'A tenant sees the closure rows inside its own subtree only.';
CREATE POLICY admin_whole_hierarchy ON tenantry.tenant_hierarchy
    FOR SELECT TO tenantry_admin USING (true);
COMMENT ON POLICY admin_whole_hierarchy ON tenantry.tenant_hierarchy IS 'Administrators read the whole hierarchy.';
GRANT SELECT ON tenantry.tenant_hierarchy TO tenantry_app, tenantry_admin;

-- -----------------------------------------------------------------------------
-- Audit log: append-only, written by the database.
-- -----------------------------------------------------------------------------

CREATE TABLE tenantry.audit_log (
    tenant_id   uuid NOT NULL REFERENCES tenantry.tenants (tenant_id),
    audit_id    bigint GENERATED ALWAYS AS IDENTITY,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    action      text NOT NULL,
    target_type text NOT NULL,
    target_id   text,
    details     jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, audit_id)
);
CREATE INDEX audit_log_tenant_time_idx ON tenantry.audit_log (tenant_id, occurred_at DESC, audit_id DESC);
COMMENT ON TABLE tenantry.audit_log IS 'Append-only record of security-relevant changes (keys, roles, permissions, shares, tenants), written by triggers. Never updated or deleted.';

ALTER TABLE tenantry.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_own_tenant ON tenantry.audit_log
    FOR SELECT TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY audit_own_tenant ON tenantry.audit_log IS 'A tenant reads only its own audit rows.';
CREATE POLICY admin_all_audit ON tenantry.audit_log
    FOR SELECT TO tenantry_admin USING (true);
COMMENT ON POLICY admin_all_audit ON tenantry.audit_log IS 'Administrators read every tenant''s audit rows.';
GRANT SELECT ON tenantry.audit_log TO tenantry_app, tenantry_admin;

/** Refuses UPDATE and DELETE on audit_log for everyone, the owner included. */
CREATE FUNCTION tenantry.audit_log_is_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'TN403';
END
$$;
COMMENT ON FUNCTION tenantry.audit_log_is_append_only() IS 'Trigger: audit_log rows can be neither updated nor deleted.';
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON tenantry.audit_log
    FOR EACH ROW EXECUTE FUNCTION tenantry.audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON tenantry.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.audit_log_is_append_only();

/** Appends one audit row; the actor comes from the transaction context. */
CREATE FUNCTION tenantry.write_audit(
    p_tenant_id uuid, p_action text, p_target_type text, p_target_id text, p_details jsonb DEFAULT '{}')
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO tenantry.audit_log (tenant_id, actor, action, target_type, target_id, details)
    VALUES (p_tenant_id, tenantry.current_actor(), p_action, p_target_type, p_target_id, coalesce(p_details, '{}'));
$$;
COMMENT ON FUNCTION tenantry.write_audit(uuid, text, text, text, jsonb) IS 'Internal: appends an audit row as the owner. Called by audit triggers only; not granted to anyone.';

-- -----------------------------------------------------------------------------
-- Tenant triggers: lifecycle, hierarchy closure, audit.
-- -----------------------------------------------------------------------------

/** Checks a tenant row before it is written: lifecycle, parent and cycles. */
CREATE FUNCTION tenantry.tenants_before_write()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent_status text;
BEGIN
    NEW.name := btrim(NEW.name);
    IF TG_OP = 'UPDATE' THEN
        IF OLD.status = 'deleted' THEN
            RAISE EXCEPTION 'tenant % is deleted', OLD.tenant_id USING ERRCODE = 'TN409';
        END IF;
        IF NEW.tenant_id <> OLD.tenant_id THEN
            RAISE EXCEPTION 'tenant_id cannot change' USING ERRCODE = 'TN422', HINT = 'tenant_id';
        END IF;
        NEW.created_at := OLD.created_at;
        NEW.updated_at := now();
        IF NEW.status = 'deleted' AND OLD.status <> 'deleted' AND EXISTS (
            SELECT 1 FROM tenantry.tenants c WHERE c.parent_id = NEW.tenant_id AND c.status <> 'deleted'
        ) THEN
            RAISE EXCEPTION 'tenant % still has children that are not deleted', NEW.tenant_id
                USING ERRCODE = 'TN409', HINT = 'delete or move its children first';
        END IF;
    END IF;
    IF NEW.parent_id IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.parent_id IS DISTINCT FROM OLD.parent_id) THEN
        -- Serialise re-parenting so two concurrent moves cannot build a cycle.
        PERFORM pg_advisory_xact_lock(hashtext('tenantry.tenant_hierarchy'));
        SELECT status INTO parent_status FROM tenantry.tenants WHERE tenant_id = NEW.parent_id;
        IF parent_status IS NULL OR parent_status = 'deleted' THEN
            RAISE EXCEPTION 'parent tenant % not found', NEW.parent_id USING ERRCODE = 'TN404', HINT = 'parent_id';
        END IF;
        IF NEW.parent_id = NEW.tenant_id THEN
            RAISE EXCEPTION 'a tenant cannot be its own parent' USING ERRCODE = 'TN422', HINT = 'parent_id';
        END IF;
        IF TG_OP = 'UPDATE' AND EXISTS (
            SELECT 1 FROM tenantry.tenant_hierarchy
            WHERE parent_id = NEW.tenant_id AND child_id = NEW.parent_id
        ) THEN
            RAISE EXCEPTION 'moving tenant % under % would create a cycle', NEW.tenant_id, NEW.parent_id
                USING ERRCODE = 'TN409', HINT = 'parent_id';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION tenantry.tenants_before_write() IS 'Trigger: enforces the status lifecycle, an existing live parent, and rejects self-parenting and cycles.';

/** Maintains tenant_hierarchy and writes the tenant audit rows. */
CREATE FUNCTION tenantry.tenants_after_write()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tenantry.tenant_hierarchy (parent_id, child_id, depth)
        SELECT NEW.tenant_id, NEW.tenant_id, 0
        UNION ALL
        SELECT h.parent_id, NEW.tenant_id, h.depth + 1
        FROM tenantry.tenant_hierarchy h
        WHERE h.child_id = NEW.parent_id;
        PERFORM tenantry.write_audit(NEW.tenant_id, 'tenant.created', 'tenant', NEW.tenant_id::text,
            jsonb_build_object('name', NEW.name, 'parent_id', NEW.parent_id, 'isolation', NEW.isolation));
        IF NEW.parent_id IS NOT NULL THEN
            PERFORM tenantry.write_audit(NEW.parent_id, 'tenant.child_created', 'tenant', NEW.tenant_id::text,
                jsonb_build_object('name', NEW.name));
        END IF;
        RETURN NULL;
    END IF;

    IF NEW.parent_id IS DISTINCT FROM OLD.parent_id THEN
        -- Detach the subtree from its old ancestors ...
        DELETE FROM tenantry.tenant_hierarchy h
        USING tenantry.tenant_hierarchy sub, tenantry.tenant_hierarchy anc
        WHERE sub.parent_id = NEW.tenant_id
          AND anc.child_id = NEW.tenant_id AND anc.depth > 0
          AND h.parent_id = anc.parent_id AND h.child_id = sub.child_id;
        -- ... and attach it under the new parent's ancestors. A duplicate closure
        -- row means one statement moved several tenants into a loop (the BEFORE
        -- check sees the closure as it was when the statement started).
        BEGIN
            INSERT INTO tenantry.tenant_hierarchy (parent_id, child_id, depth)
            SELECT anc.parent_id, sub.child_id, anc.depth + sub.depth + 1
            FROM tenantry.tenant_hierarchy anc, tenantry.tenant_hierarchy sub
            WHERE anc.child_id = NEW.parent_id AND sub.parent_id = NEW.tenant_id;
        EXCEPTION WHEN unique_violation THEN
            RAISE EXCEPTION 'moving tenant % under % would create a cycle', NEW.tenant_id, NEW.parent_id
                USING ERRCODE = 'TN409', HINT = 'parent_id';
        END;
        PERFORM tenantry.write_audit(NEW.tenant_id, 'tenant.reparented', 'tenant', NEW.tenant_id::text,
            jsonb_build_object('from', OLD.parent_id, 'to', NEW.parent_id));
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM tenantry.write_audit(NEW.tenant_id,
            CASE NEW.status WHEN 'active' THEN 'tenant.activated'
                            WHEN 'suspended' THEN 'tenant.suspended'
                            ELSE 'tenant.deleted' END,
            'tenant', NEW.tenant_id::text, jsonb_build_object('from', OLD.status, 'to', NEW.status));
    END IF;
    IF NEW.name IS DISTINCT FROM OLD.name THEN
        PERFORM tenantry.write_audit(NEW.tenant_id, 'tenant.renamed', 'tenant', NEW.tenant_id::text,
            jsonb_build_object('from', OLD.name, 'to', NEW.name));
    END IF;
    IF NEW.settings IS DISTINCT FROM OLD.settings THEN
        PERFORM tenantry.write_audit(NEW.tenant_id, 'tenant.settings_changed', 'tenant', NEW.tenant_id::text,
            jsonb_build_object('from', OLD.settings, 'to', NEW.settings));
    END IF;
    IF NEW.isolation IS DISTINCT FROM OLD.isolation THEN
        PERFORM tenantry.write_audit(NEW.tenant_id, 'tenant.isolation_changed', 'tenant', NEW.tenant_id::text,
            jsonb_build_object('from', OLD.isolation, 'to', NEW.isolation));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenants_after_write() IS 'Trigger: maintains the tenant_hierarchy closure on insert and re-parenting, and audits tenant changes.';

CREATE TRIGGER tenants_before_write
    BEFORE INSERT OR UPDATE ON tenantry.tenants
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenants_before_write();
CREATE TRIGGER tenants_after_write
    AFTER INSERT OR UPDATE ON tenantry.tenants
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenants_after_write();

/** Refuses hard deletes: a tenant is deleted by setting its status. */
CREATE FUNCTION tenantry.tenants_no_hard_delete()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'tenants are deleted by setting status = ''deleted''; rows are kept' USING ERRCODE = 'TN409';
END
$$;
COMMENT ON FUNCTION tenantry.tenants_no_hard_delete() IS 'Trigger: tenants are soft-deleted (status deleted) so that audit and usage history stay intact.';
CREATE TRIGGER tenants_no_hard_delete
    BEFORE DELETE ON tenantry.tenants
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenants_no_hard_delete();

-- -----------------------------------------------------------------------------
-- Context setters. They read the closure (as the owner: no tenant is set yet)
-- and store the tenant, its visible subtree, its schema, user and actor.
-- -----------------------------------------------------------------------------

/** Tenant, visible subtree (self first) and schema for a context; raises for unknown or deleted tenants. */
CREATE FUNCTION tenantry.tenant_context_values(tid uuid, OUT visible uuid[], OUT schema_name text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t_status text;
    t_isolation text;
BEGIN
    SELECT status, isolation INTO t_status, t_isolation FROM tenantry.tenants WHERE tenant_id = tid;
    IF t_status IS NULL THEN
        RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404';
    ELSIF t_status = 'deleted' THEN
        RAISE EXCEPTION 'tenant % is deleted', tid USING ERRCODE = 'TN403';
    END IF;
    SELECT array_agg(h.child_id ORDER BY h.depth, h.child_id) INTO visible
    FROM tenantry.tenant_hierarchy h
    JOIN tenantry.tenants t ON t.tenant_id = h.child_id
    WHERE h.parent_id = tid AND t.status <> 'deleted';
    schema_name := CASE WHEN t_isolation = 'schema' THEN 'tenant_' || replace(tid::text, '-', '') ELSE 'tenantry' END;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_context_values(uuid) IS 'Internal: the visible subtree (self first) and resource schema of a tenant, for the context setters.';

/**
 * The guide's set_tenant_context: SESSION scope. Unsafe behind a connection
 * pooler (the next borrower of the connection inherits it); use
 * set_tenant_context_local inside a transaction instead. NULL clears.
 */
CREATE FUNCTION tenantry.set_tenant_context(tid uuid)
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
    ctx := tenantry.tenant_context_values(tid);
    PERFORM set_config('app.current_tenant_id', tid::text, false),
            set_config('app.visible_tenant_ids', ctx.visible::text, false),
            set_config('app.current_tenant_schema', ctx.schema_name, false);
END
$$;
COMMENT ON FUNCTION tenantry.set_tenant_context(uuid) IS 'Guide API, session scope: sets the tenant for the rest of the session (NULL clears). UNSAFE behind a transaction-pooling pooler; servers use set_tenant_context_local.';

/**
 * Transaction-local context: SET LOCAL (executed, so Citus propagates it) of
 * the tenant, its visible subtree, its schema, and optionally the acting user
 * and actor label. Returns the tenant's resource schema.
 */
CREATE FUNCTION tenantry.set_tenant_context_local(tid uuid, uid uuid DEFAULT NULL, actor text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t_status text;
    t_isolation text;
    visible uuid[];
    schema_name text;
BEGIN
    IF tid IS NULL THEN
        RAISE EXCEPTION 'tenant id is required' USING ERRCODE = 'TN422', HINT = 'tenant_id';
    END IF;
    SELECT t.status, t.isolation,
           ARRAY(SELECT h.child_id FROM tenantry.tenant_hierarchy h JOIN tenantry.tenants c ON c.tenant_id = h.child_id
                 WHERE h.parent_id = tid AND c.status <> 'deleted' ORDER BY h.depth, h.child_id)
      INTO t_status, t_isolation, visible
    FROM tenantry.tenants t WHERE t.tenant_id = tid;
    IF t_status IS NULL THEN
        RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404';
    ELSIF t_status = 'deleted' THEN
        RAISE EXCEPTION 'tenant % is deleted', tid USING ERRCODE = 'TN403';
    END IF;
    schema_name := CASE WHEN t_isolation = 'schema' THEN 'tenant_' || replace(tid::text, '-', '') ELSE 'tenantry' END;
    EXECUTE format('SET LOCAL app.current_tenant_id = %L', tid);
    EXECUTE format('SET LOCAL app.visible_tenant_ids = %L', visible);
    -- One lookup for status, isolation and subtree; the optional settings are only
    -- written when they differ (each EXECUTE costs a parse): still SET LOCAL, so
    -- a value left by an earlier transaction is overwritten, never inherited.
    IF current_setting('app.current_tenant_schema', true) IS DISTINCT FROM schema_name THEN
        EXECUTE format('SET LOCAL app.current_tenant_schema = %L', schema_name);
    END IF;
    IF coalesce(current_setting('app.current_user_id', true), '') IS DISTINCT FROM coalesce(uid::text, '') THEN
        EXECUTE format('SET LOCAL app.current_user_id = %L', coalesce(uid::text, ''));
    END IF;
    IF coalesce(current_setting('app.actor', true), '') IS DISTINCT FROM coalesce(actor, '') THEN
        EXECUTE format('SET LOCAL app.actor = %L', coalesce(actor, ''));
    END IF;
    RETURN schema_name;
END
$$;
COMMENT ON FUNCTION tenantry.set_tenant_context_local(uuid, uuid, text) IS 'Transaction-local tenant context (SET LOCAL, Citus-safe): tenant, visible subtree, schema, user, actor. Returns the tenant''s resource schema. Safe behind poolers.';

GRANT EXECUTE ON FUNCTION
    tenantry.set_tenant_context(uuid),
    tenantry.set_tenant_context_local(uuid, uuid, text)
TO tenantry_app;

/** Labels the actor of this transaction for the audit log (SET LOCAL, Citus-safe). */
CREATE FUNCTION tenantry.set_actor_local(actor text)
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

-- -----------------------------------------------------------------------------
-- Creating tenants
-- -----------------------------------------------------------------------------

/** Administrators create tenants (root or child, any isolation). */
CREATE FUNCTION tenantry.create_tenant(
    name text, parent_id uuid DEFAULT NULL, isolation text DEFAULT 'shared', settings jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid;
BEGIN
    IF isolation IS NULL OR isolation NOT IN ('shared', 'schema') THEN
        RAISE EXCEPTION 'isolation must be "shared" or "schema"' USING ERRCODE = 'TN422', HINT = 'isolation';
    END IF;
    IF name IS NULL OR length(btrim(name)) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'name must be 1 to 200 characters' USING ERRCODE = 'TN422', HINT = 'name';
    END IF;
    INSERT INTO tenantry.tenants (name, parent_id, isolation, settings)
    VALUES (name, parent_id, 'shared', coalesce(settings, '{}'))
    RETURNING tenants.tenant_id INTO tid;
    IF isolation = 'schema' THEN
        PERFORM tenantry.set_tenant_isolation(tid, 'schema');
    END IF;
    RETURN tid;
END
$$;
COMMENT ON FUNCTION tenantry.create_tenant(text, uuid, text, jsonb) IS 'Admin: creates a tenant (optionally under a parent, optionally schema-isolated) and returns its id.';

/** A tenant creates a child of itself. */
CREATE FUNCTION tenantry.create_child_tenant(name text, settings jsonb DEFAULT '{}', isolation text DEFAULT 'shared')
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me uuid := tenantry.current_tenant_id();
BEGIN
    IF me IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403';
    END IF;
    IF (SELECT status FROM tenantry.tenants WHERE tenant_id = me) IS DISTINCT FROM 'active' THEN
        RAISE EXCEPTION 'tenant % is not active', me USING ERRCODE = 'TN403';
    END IF;
    RETURN tenantry.create_tenant(name, me, isolation, settings);
END
$$;
COMMENT ON FUNCTION tenantry.create_child_tenant(text, jsonb, text) IS 'Creates a child of the current tenant and returns its id. The new child becomes visible to the parent in its next transaction.';

GRANT EXECUTE ON FUNCTION tenantry.create_tenant(text, uuid, text, jsonb) TO tenantry_admin;
GRANT EXECUTE ON FUNCTION tenantry.create_child_tenant(text, jsonb, text) TO tenantry_app;
