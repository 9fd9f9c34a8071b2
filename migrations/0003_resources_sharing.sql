-- =============================================================================
-- 0003 resources and cross-tenant sharing
--
-- Policy shapes follow design.md "Scale-out on Citus": every arm compares an
-- indexed column with a value computed once per statement from settings; no
-- subquery anywhere. Sharing is carried on the row (shared_with uuid[], GIN)
-- and recorded in shared_resources, both written in one transaction.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.resources (
    tenant_id   uuid NOT NULL DEFAULT tenantry.current_tenant_id() REFERENCES tenantry.tenants (tenant_id),
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 1000),
    data        jsonb NOT NULL DEFAULT '{}',
    size_bytes  bigint GENERATED ALWAYS AS (octet_length(name) + octet_length(data::text)) STORED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    created_by  uuid DEFAULT tenantry.current_user_id(),
    shared_with uuid[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, id)
) PARTITION BY LIST (tenant_id);
CREATE INDEX resources_tenant_newest_idx ON tenantry.resources (tenant_id, created_at DESC, id DESC);
CREATE INDEX resources_tenant_name_idx ON tenantry.resources (tenant_id, name text_pattern_ops);
CREATE INDEX resources_id_idx ON tenantry.resources (id);
CREATE INDEX resources_shared_with_idx ON tenantry.resources USING gin (shared_with);
COMMENT ON TABLE tenantry.resources IS 'Tenant-owned resources, partitioned by tenant: pooled tenants in the default partition, schema-isolated tenants in their own schema. size_bytes, created_at, updated_at and created_by are maintained by the database; shared_with mirrors shared_resources for policy speed.';
-- Pooled tenants share the default partition; a schema-isolated tenant gets its
-- own partition tenant_<hex>.resources (0006), so one API serves both models.
CREATE TABLE tenantry.resources_pooled PARTITION OF tenantry.resources DEFAULT;
COMMENT ON TABLE tenantry.resources_pooled IS 'Default partition of resources: every pooled tenant''s rows. Reached only through tenantry.resources (no grants, RLS forced).';
ALTER TABLE tenantry.resources_pooled ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.resources_pooled FORCE ROW LEVEL SECURITY;

COMMENT ON COLUMN tenantry.resources.shared_with IS 'Tenants this resource is shared with (read only). Written only by share_resource / unshare_resource.';

ALTER TABLE tenantry.resources ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.resources FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON tenantry.resources
    FOR ALL TO tenantry_app_own
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()))
    WITH CHECK (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY tenant_isolation ON tenantry.resources IS 'Guide policy tenant_isolation, hierarchy-aware: a tenant reads and writes its own resources and its descendants'' (transitively); never its parent''s or siblings''. No tenant set: nothing.';

CREATE POLICY tenant_sharing ON tenantry.resources
    FOR SELECT TO tenantry_app_shared
    USING (shared_with @> ARRAY[tenantry.current_tenant_id()]);
COMMENT ON POLICY tenant_sharing ON tenantry.resources IS 'Guide policy tenant_sharing: a tenant reads (only reads) resources shared with it.';

GRANT SELECT ON tenantry.resources TO tenantry_app_own, tenantry_app_shared;
GRANT INSERT (tenant_id, id, name, data), UPDATE (name, data), DELETE ON tenantry.resources TO tenantry_app_own;

/** Keeps database-maintained columns honest on update. */
CREATE FUNCTION tenantry.resources_before_update()
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
CREATE TRIGGER resources_before_update
    BEFORE UPDATE ON tenantry.resources
    FOR EACH ROW EXECUTE FUNCTION tenantry.resources_before_update();

-- -----------------------------------------------------------------------------
-- shared_resources: who shared what with whom, and when.
-- -----------------------------------------------------------------------------

CREATE TABLE tenantry.shared_resources (
    tenant_id   uuid NOT NULL,
    resource_id uuid NOT NULL,
    shared_with uuid NOT NULL REFERENCES tenantry.tenants (tenant_id),
    shared_by   uuid,
    shared_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, resource_id, shared_with),
    CONSTRAINT shared_resources_tenant_id_resource_id_fkey
        FOREIGN KEY (tenant_id, resource_id) REFERENCES tenantry.resources (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT shared_resources_not_with_owner CHECK (shared_with <> tenant_id)
);
CREATE INDEX shared_resources_target_idx ON tenantry.shared_resources (shared_with, shared_at DESC);
COMMENT ON TABLE tenantry.shared_resources IS 'Record of shares: owner tenant (tenant_id), resource, target tenant, who shared it and when. One row per resource and target. Written only by share_resource / unshare_resource.';

ALTER TABLE tenantry.shared_resources ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.shared_resources FORCE ROW LEVEL SECURITY;
CREATE POLICY shares_of_my_resources ON tenantry.shared_resources
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY shares_of_my_resources ON tenantry.shared_resources IS 'Owners (and their ancestors) see the shares of their resources.';
CREATE POLICY shares_with_me ON tenantry.shared_resources
    FOR SELECT TO tenantry_app
    USING (shared_with = tenantry.current_tenant_id());
COMMENT ON POLICY shares_with_me ON tenantry.shared_resources IS 'A target tenant sees the shares made to it.';
GRANT SELECT ON tenantry.shared_resources TO tenantry_app;

/** Audits share creation and revocation (including cascades from deleted resources). */
CREATE FUNCTION tenantry.shared_resources_audit()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM tenantry.write_audit(NEW.tenant_id, 'share.created', 'resource', NEW.resource_id::text,
            jsonb_build_object('shared_with', NEW.shared_with, 'shared_by', NEW.shared_by));
    ELSE
        PERFORM tenantry.write_audit(OLD.tenant_id, 'share.revoked', 'resource', OLD.resource_id::text,
            jsonb_build_object('shared_with', OLD.shared_with));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.shared_resources_audit() IS 'Trigger: audits shares made and revoked.';
CREATE TRIGGER shared_resources_audit
    AFTER INSERT OR DELETE ON tenantry.shared_resources
    FOR EACH ROW EXECUTE FUNCTION tenantry.shared_resources_audit();

-- -----------------------------------------------------------------------------
-- The guide's resource API
-- -----------------------------------------------------------------------------

/**
 * Guide: create_resource(data) -> id. Name from data->>'name'. Runs as the
 * caller, so RLS decides; the partition (pooled or the tenant's own schema)
 * follows from the tenant.
 */
CREATE FUNCTION tenantry.create_resource(data jsonb)
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
            HINT = 'call set_tenant_context_local(tenant_id) in this transaction first';
    END IF;
    IF data IS NULL OR jsonb_typeof(data) <> 'object' THEN
        RAISE EXCEPTION 'data must be a JSON object' USING ERRCODE = 'TN422', HINT = 'data';
    END IF;
    IF coalesce(length(data->>'name'), 0) NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'data.name must be a string of 1 to 1000 characters' USING ERRCODE = 'TN422', HINT = 'name';
    END IF;
    INSERT INTO tenantry.resources (tenant_id, name, data)
    VALUES (tid, data->>'name', create_resource.data)
    RETURNING id INTO rid;
    RETURN rid;
END
$$;
COMMENT ON FUNCTION tenantry.create_resource(jsonb) IS 'Guide API: creates a resource for the current tenant (name from data->>''name'') and returns its id. Runs as the caller under RLS.';
GRANT EXECUTE ON FUNCTION tenantry.create_resource(jsonb) TO tenantry_app, tenantry_app_own;

/**
 * Guide: share_resource(resource_id, target_tenant_id). Fixed: the resource
 * must be visible-and-owned in the caller's subtree (a missing and a foreign
 * resource give the same error), the target must exist and be active, not the
 * owner, and not already hold the share; shared_by is the acting member.
 */
CREATE FUNCTION tenantry.share_resource(resource_id uuid, target_tenant_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner_id uuid;
    target_status text;
BEGIN
    IF tenantry.current_tenant_id() IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403';
    END IF;
    SELECT r.tenant_id INTO owner_id
    FROM tenantry.resources r
    WHERE r.id = share_resource.resource_id
      AND r.tenant_id = ANY (tenantry.visible_tenant_ids())
    FOR UPDATE;
    IF owner_id IS NULL THEN
        RAISE EXCEPTION 'resource % not found', share_resource.resource_id USING ERRCODE = 'TN404', HINT = 'resource_id';
    END IF;
    SELECT status INTO target_status FROM tenantry.tenants WHERE tenant_id = target_tenant_id;
    IF target_status IS NULL OR target_status = 'deleted' THEN
        RAISE EXCEPTION 'target tenant % not found', target_tenant_id USING ERRCODE = 'TN404', HINT = 'tenant_id';
    ELSIF target_status <> 'active' THEN
        RAISE EXCEPTION 'target tenant % is not active', target_tenant_id USING ERRCODE = 'TN409', HINT = 'tenant_id';
    ELSIF target_tenant_id = owner_id THEN
        RAISE EXCEPTION 'a resource cannot be shared with its owner' USING ERRCODE = 'TN422', HINT = 'tenant_id';
    END IF;
    INSERT INTO tenantry.shared_resources (tenant_id, resource_id, shared_with, shared_by)
    VALUES (owner_id, share_resource.resource_id, target_tenant_id, tenantry.current_user_id())
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'resource % is already shared with tenant %', share_resource.resource_id, target_tenant_id
            USING ERRCODE = 'TN409', HINT = 'tenant_id';
    END IF;
    UPDATE tenantry.resources r
    SET shared_with = array_append(r.shared_with, target_tenant_id)
    WHERE r.tenant_id = owner_id AND r.id = share_resource.resource_id;
END
$$;
COMMENT ON FUNCTION tenantry.share_resource(uuid, uuid) IS 'Guide API: shares a resource of the current tenant (or a descendant) read-only with another active tenant. TN404 for a missing or foreign resource alike, TN409 if already shared.';

/** Revokes a share; the target loses it in its next statement. */
CREATE FUNCTION tenantry.unshare_resource(resource_id uuid, target_tenant_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner_id uuid;
BEGIN
    IF tenantry.current_tenant_id() IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403';
    END IF;
    SELECT r.tenant_id INTO owner_id
    FROM tenantry.resources r
    WHERE r.id = unshare_resource.resource_id
      AND r.tenant_id = ANY (tenantry.visible_tenant_ids())
    FOR UPDATE;
    IF owner_id IS NULL THEN
        RAISE EXCEPTION 'resource % not found', unshare_resource.resource_id USING ERRCODE = 'TN404', HINT = 'resource_id';
    END IF;
    DELETE FROM tenantry.shared_resources s
    WHERE s.tenant_id = owner_id AND s.resource_id = unshare_resource.resource_id AND s.shared_with = target_tenant_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'resource % is not shared with tenant %', unshare_resource.resource_id, target_tenant_id
            USING ERRCODE = 'TN404', HINT = 'tenant_id';
    END IF;
    UPDATE tenantry.resources r
    SET shared_with = array_remove(r.shared_with, target_tenant_id)
    WHERE r.tenant_id = owner_id AND r.id = unshare_resource.resource_id;
END
$$;
COMMENT ON FUNCTION tenantry.unshare_resource(uuid, uuid) IS 'Revokes a share made by the current tenant (or a descendant). TN404 when there is no such share.';

GRANT EXECUTE ON FUNCTION
    tenantry.share_resource(uuid, uuid),
    tenantry.unshare_resource(uuid, uuid)
TO tenantry_app;
