-- =============================================================================
-- 0004 members, roles, permissions, API keys
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

-- -----------------------------------------------------------------------------
-- Members
-- -----------------------------------------------------------------------------

CREATE TABLE tenantry.tenant_members (
    tenant_id    uuid NOT NULL REFERENCES tenantry.tenants (tenant_id),
    user_id      uuid NOT NULL DEFAULT gen_random_uuid(),
    email        text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 320),
    display_name text CHECK (length(display_name) <= 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE UNIQUE INDEX tenant_members_email_idx ON tenantry.tenant_members (tenant_id, lower(email));
COMMENT ON TABLE tenantry.tenant_members IS 'Users who belong to a tenant. user_id is the user''s global identity (e.g. from the identity provider); one email per tenant.';

ALTER TABLE tenantry.tenant_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.tenant_members FORCE ROW LEVEL SECURITY;
CREATE POLICY members_read_subtree ON tenantry.tenant_members
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY members_read_subtree ON tenantry.tenant_members IS 'A tenant reads its own and its descendants'' members.';
CREATE POLICY members_write_own ON tenantry.tenant_members
    FOR ALL TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id())
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY members_write_own ON tenantry.tenant_members IS 'A tenant adds, changes and removes only its own members.';
GRANT SELECT, INSERT (tenant_id, user_id, email, display_name), UPDATE (email, display_name), DELETE
    ON tenantry.tenant_members TO tenantry_app;
ALTER TABLE tenantry.tenant_members ALTER COLUMN tenant_id SET DEFAULT tenantry.current_tenant_id();

-- -----------------------------------------------------------------------------
-- Permissions (global catalogue) and tenant roles
-- -----------------------------------------------------------------------------

CREATE TABLE tenantry.permissions (
    permission_id integer PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[a-z_]+\.[a-z_]+$'),
    description   text NOT NULL
);
COMMENT ON TABLE tenantry.permissions IS 'Global catalogue of permissions (a reference table). Every API route names the one it needs.';
INSERT INTO tenantry.permissions (permission_id, name, description) VALUES
    (1,  'tenant.read',       'Read the tenant and its children'),
    (2,  'tenants.create',    'Create child tenants'),
    (3,  'resources.read',    'Read and list resources'),
    (4,  'resources.write',   'Create and update resources'),
    (5,  'resources.delete',  'Delete resources'),
    (6,  'resources.share',   'Share resources with other tenants and revoke shares'),
    (7,  'members.read',      'List members'),
    (8,  'members.write',     'Add members and assign roles'),
    (9,  'roles.read',        'List roles and permissions'),
    (10, 'roles.write',       'Create roles and change their permissions'),
    (11, 'keys.read',         'List API keys'),
    (12, 'keys.write',        'Create, rotate and revoke API keys'),
    (13, 'audit.read',        'Read the audit log'),
    (14, 'usage.read',        'Read usage metrics');
GRANT SELECT ON tenantry.permissions TO tenantry_app, tenantry_admin;

CREATE TABLE tenantry.roles (
    tenant_id   uuid NOT NULL DEFAULT tenantry.current_tenant_id() REFERENCES tenantry.tenants (tenant_id),
    role_id     uuid NOT NULL DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 100),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, role_id),
    CONSTRAINT roles_name_per_tenant UNIQUE (tenant_id, name)
);
COMMENT ON TABLE tenantry.roles IS 'Tenant-specific roles: named sets of permissions, unique by name within a tenant.';

ALTER TABLE tenantry.roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.roles FORCE ROW LEVEL SECURITY;
CREATE POLICY roles_read_subtree ON tenantry.roles
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY roles_read_subtree ON tenantry.roles IS 'A tenant reads its own and its descendants'' roles.';
CREATE POLICY roles_write_own ON tenantry.roles
    FOR ALL TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id())
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY roles_write_own ON tenantry.roles IS 'A tenant creates, renames and deletes only its own roles.';
GRANT SELECT, INSERT (tenant_id, name, description), UPDATE (name, description), DELETE
    ON tenantry.roles TO tenantry_app;

CREATE TABLE tenantry.role_permissions (
    tenant_id     uuid NOT NULL,
    role_id       uuid NOT NULL,
    permission_id integer NOT NULL REFERENCES tenantry.permissions (permission_id),
    PRIMARY KEY (tenant_id, role_id, permission_id),
    FOREIGN KEY (tenant_id, role_id) REFERENCES tenantry.roles (tenant_id, role_id) ON DELETE CASCADE
);
COMMENT ON TABLE tenantry.role_permissions IS 'Permissions granted to a tenant role.';
ALTER TABLE tenantry.role_permissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.role_permissions FORCE ROW LEVEL SECURITY;
CREATE POLICY role_permissions_read_subtree ON tenantry.role_permissions
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY role_permissions_read_subtree ON tenantry.role_permissions IS 'A tenant reads the permissions of its own and its descendants'' roles.';
CREATE POLICY role_permissions_write_own ON tenantry.role_permissions
    FOR ALL TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id())
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY role_permissions_write_own ON tenantry.role_permissions IS 'Permissions are assigned only within the current tenant.';
GRANT SELECT, INSERT, DELETE ON tenantry.role_permissions TO tenantry_app;

CREATE TABLE tenantry.member_roles (
    tenant_id uuid NOT NULL,
    user_id   uuid NOT NULL,
    role_id   uuid NOT NULL,
    PRIMARY KEY (tenant_id, user_id, role_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES tenantry.tenant_members (tenant_id, user_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, role_id) REFERENCES tenantry.roles (tenant_id, role_id) ON DELETE CASCADE
);
COMMENT ON TABLE tenantry.member_roles IS 'Roles assigned to members, within one tenant.';
ALTER TABLE tenantry.member_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.member_roles FORCE ROW LEVEL SECURITY;
CREATE POLICY member_roles_read_subtree ON tenantry.member_roles
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY member_roles_read_subtree ON tenantry.member_roles IS 'A tenant reads role assignments in its subtree.';
CREATE POLICY member_roles_write_own ON tenantry.member_roles
    FOR ALL TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id())
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY member_roles_write_own ON tenantry.member_roles IS 'Roles are assigned only within the current tenant.';
GRANT SELECT, INSERT, DELETE ON tenantry.member_roles TO tenantry_app;

/** Audits role, permission and role-assignment changes. */
CREATE FUNCTION tenantry.access_audit()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    r := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    IF TG_TABLE_NAME = 'roles' THEN
        PERFORM tenantry.write_audit(r.tenant_id,
            CASE TG_OP WHEN 'INSERT' THEN 'role.created' WHEN 'UPDATE' THEN 'role.updated' ELSE 'role.deleted' END,
            'role', r.role_id::text, jsonb_build_object('name', r.name));
    ELSIF TG_TABLE_NAME = 'role_permissions' THEN
        PERFORM tenantry.write_audit(r.tenant_id,
            CASE TG_OP WHEN 'INSERT' THEN 'permission.granted' ELSE 'permission.revoked' END,
            'role', r.role_id::text,
            jsonb_build_object('permission', (SELECT name FROM tenantry.permissions p WHERE p.permission_id = r.permission_id)));
    ELSIF TG_TABLE_NAME = 'member_roles' THEN
        PERFORM tenantry.write_audit(r.tenant_id,
            CASE TG_OP WHEN 'INSERT' THEN 'member.role_assigned' ELSE 'member.role_removed' END,
            'member', r.user_id::text, jsonb_build_object('role_id', r.role_id));
    ELSIF TG_TABLE_NAME = 'tenant_members' THEN
        PERFORM tenantry.write_audit(r.tenant_id,
            CASE TG_OP WHEN 'INSERT' THEN 'member.added' WHEN 'UPDATE' THEN 'member.updated' ELSE 'member.removed' END,
            'member', r.user_id::text, jsonb_build_object('email', r.email));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.access_audit() IS 'Trigger: audits changes to members, roles, role permissions and role assignments.';
CREATE TRIGGER roles_audit AFTER INSERT OR UPDATE OR DELETE ON tenantry.roles
    FOR EACH ROW EXECUTE FUNCTION tenantry.access_audit();
CREATE TRIGGER role_permissions_audit AFTER INSERT OR DELETE ON tenantry.role_permissions
    FOR EACH ROW EXECUTE FUNCTION tenantry.access_audit();
CREATE TRIGGER member_roles_audit AFTER INSERT OR DELETE ON tenantry.member_roles
    FOR EACH ROW EXECUTE FUNCTION tenantry.access_audit();
CREATE TRIGGER tenant_members_audit AFTER INSERT OR UPDATE OR DELETE ON tenantry.tenant_members
    FOR EACH ROW EXECUTE FUNCTION tenantry.access_audit();

/**
 * Guide: create_tenant_role(tenant_id, role_name). Fixed: runs as the caller,
 * so RLS only lets a tenant create roles in itself (TN403 otherwise).
 */
CREATE FUNCTION tenantry.create_tenant_role(tenant_id uuid, role_name text)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rid uuid;
BEGIN
    IF create_tenant_role.tenant_id IS DISTINCT FROM tenantry.current_tenant_id() THEN
        RAISE EXCEPTION 'roles can only be created in the current tenant' USING ERRCODE = 'TN403', HINT = 'tenant_id';
    END IF;
    IF role_name IS NULL OR length(btrim(role_name)) NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'role name must be 1 to 100 characters' USING ERRCODE = 'TN422', HINT = 'name';
    END IF;
    INSERT INTO tenantry.roles (tenant_id, name)
    VALUES (create_tenant_role.tenant_id, btrim(role_name))
    RETURNING role_id INTO rid;
    RETURN rid;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'a role named "%" already exists', btrim(role_name) USING ERRCODE = 'TN409', HINT = 'name';
END
$$;
COMMENT ON FUNCTION tenantry.create_tenant_role(uuid, text) IS 'Guide API: creates a role in the current tenant (TN403 for any other tenant, TN409 for a duplicate name) and returns its id.';

/**
 * Guide: assign_tenant_permission(role_id, permission). The role must belong
 * to the current tenant (TN404 otherwise, like a missing one); unknown
 * permissions are TN404; assigning twice is a no-op.
 */
CREATE FUNCTION tenantry.assign_tenant_permission(role_id uuid, permission text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pid integer;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM tenantry.roles r
        WHERE r.role_id = assign_tenant_permission.role_id
          AND r.tenant_id = tenantry.current_tenant_id()
    ) THEN
        RAISE EXCEPTION 'role % not found', assign_tenant_permission.role_id USING ERRCODE = 'TN404', HINT = 'role_id';
    END IF;
    SELECT p.permission_id INTO pid FROM tenantry.permissions p WHERE p.name = permission;
    IF pid IS NULL THEN
        RAISE EXCEPTION 'unknown permission "%"', permission USING ERRCODE = 'TN404', HINT = 'permission';
    END IF;
    INSERT INTO tenantry.role_permissions (tenant_id, role_id, permission_id)
    VALUES (tenantry.current_tenant_id(), assign_tenant_permission.role_id, pid)
    ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION tenantry.assign_tenant_permission(uuid, text) IS 'Guide API: grants a catalogue permission to a role of the current tenant. Idempotent.';

/** Removes a permission from a role of the current tenant; TN404 when the role is not the tenant's. */
CREATE FUNCTION tenantry.revoke_tenant_permission(role_id uuid, permission text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM tenantry.roles r
        WHERE r.role_id = revoke_tenant_permission.role_id
          AND r.tenant_id = tenantry.current_tenant_id()
    ) THEN
        RAISE EXCEPTION 'role % not found', revoke_tenant_permission.role_id USING ERRCODE = 'TN404', HINT = 'role_id';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tenantry.permissions p WHERE p.name = permission) THEN
        RAISE EXCEPTION 'unknown permission "%"', permission USING ERRCODE = 'TN404', HINT = 'permission';
    END IF;
    DELETE FROM tenantry.role_permissions rp
    USING tenantry.permissions p
    WHERE rp.tenant_id = tenantry.current_tenant_id()
      AND rp.role_id = revoke_tenant_permission.role_id
      AND rp.permission_id = p.permission_id AND p.name = permission;
END
$$;
COMMENT ON FUNCTION tenantry.revoke_tenant_permission(uuid, text) IS 'Removes a permission from a role of the current tenant. Idempotent.';

/** Assigns a role of the current tenant to one of its members. */
CREATE FUNCTION tenantry.assign_member_role(user_id uuid, role_id uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tenantry.tenant_members m
                   WHERE m.tenant_id = tenantry.current_tenant_id() AND m.user_id = assign_member_role.user_id) THEN
        RAISE EXCEPTION 'member % not found', assign_member_role.user_id USING ERRCODE = 'TN404', HINT = 'user_id';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tenantry.roles r
                   WHERE r.tenant_id = tenantry.current_tenant_id() AND r.role_id = assign_member_role.role_id) THEN
        RAISE EXCEPTION 'role % not found', assign_member_role.role_id USING ERRCODE = 'TN404', HINT = 'role_id';
    END IF;
    INSERT INTO tenantry.member_roles (tenant_id, user_id, role_id)
    VALUES (tenantry.current_tenant_id(), assign_member_role.user_id, assign_member_role.role_id)
    ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION tenantry.assign_member_role(uuid, uuid) IS 'Assigns a role of the current tenant to one of its members (TN404 for either outside the tenant). Idempotent.';

GRANT EXECUTE ON FUNCTION
    tenantry.create_tenant_role(uuid, text),
    tenantry.assign_tenant_permission(uuid, text),
    tenantry.revoke_tenant_permission(uuid, text),
    tenantry.assign_member_role(uuid, uuid)
TO tenantry_app;

-- -----------------------------------------------------------------------------
-- API keys (KeyHippo-style lifecycle). The key is shown once; only its SHA-256
-- is stored. Format: tk_<12 hex prefix>_<64 hex secret>. The prefix finds the
-- row before any tenant is known; the hash is compared in constant time.
-- -----------------------------------------------------------------------------

CREATE TABLE tenantry.api_keys (
    tenant_id    uuid NOT NULL REFERENCES tenantry.tenants (tenant_id),
    key_id       uuid NOT NULL DEFAULT gen_random_uuid(),
    prefix       text NOT NULL CHECK (prefix ~ '^[0-9a-f]{12}$'),
    key_hash     bytea NOT NULL CHECK (octet_length(key_hash) = 32),
    description  text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    metadata     jsonb NOT NULL DEFAULT '{}',
    user_id      uuid,
    role_id      uuid,
    created_by   text NOT NULL DEFAULT tenantry.current_actor(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    rotated_from uuid,
    rotated_to   uuid,
    PRIMARY KEY (tenant_id, key_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES tenantry.tenant_members (tenant_id, user_id),
    FOREIGN KEY (tenant_id, role_id) REFERENCES tenantry.roles (tenant_id, role_id)
);
CREATE INDEX api_keys_prefix_idx ON tenantry.api_keys (prefix);
COMMENT ON TABLE tenantry.api_keys IS 'API keys: hash only, display prefix, optional member and role binding, expiry, revocation, last use, rotation links.';
COMMENT ON COLUMN tenantry.api_keys.key_hash IS 'SHA-256 of the whole key. The key itself is never stored.';

ALTER TABLE tenantry.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY api_keys_read_subtree ON tenantry.api_keys
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY api_keys_read_subtree ON tenantry.api_keys IS 'A tenant lists the keys of itself and its descendants (never their hashes: column privileges).';
GRANT SELECT (tenant_id, key_id, prefix, description, metadata, user_id, role_id, created_by, created_at,
              expires_at, revoked_at, last_used_at, rotated_from, rotated_to)
    ON tenantry.api_keys TO tenantry_app;

/** Audits key creation, rotation and revocation. */
CREATE FUNCTION tenantry.api_keys_audit()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM tenantry.write_audit(NEW.tenant_id,
            CASE WHEN NEW.rotated_from IS NULL THEN 'key.created' ELSE 'key.rotated' END,
            'api_key', NEW.key_id::text,
            jsonb_build_object('prefix', NEW.prefix, 'description', NEW.description,
                               'rotated_from', NEW.rotated_from, 'expires_at', NEW.expires_at,
                               'user_id', NEW.user_id, 'role_id', NEW.role_id));
    ELSIF NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
        PERFORM tenantry.write_audit(NEW.tenant_id, 'key.revoked', 'api_key', NEW.key_id::text,
            jsonb_build_object('prefix', NEW.prefix));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.api_keys_audit() IS 'Trigger: audits keys created, rotated and revoked.';
CREATE TRIGGER api_keys_audit AFTER INSERT OR UPDATE OF revoked_at ON tenantry.api_keys
    FOR EACH ROW EXECUTE FUNCTION tenantry.api_keys_audit();

/** Compares two byte strings in time that depends only on their lengths. */
CREATE FUNCTION tenantry.constant_time_equal(a bytea, b bytea)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT octet_length(a) = octet_length(b)
       AND (SELECT bit_or(get_byte(a, i) # get_byte(b, i)) = 0
            FROM generate_series(0, octet_length(a) - 1) AS i)
$$;
COMMENT ON FUNCTION tenantry.constant_time_equal(bytea, bytea) IS 'Internal: compares every byte (no early exit) so key checks do not leak timing.';

/** Inserts a key for a tenant and returns (key_id, key). Internal; callers check rights. */
CREATE FUNCTION tenantry.issue_api_key(
    p_tenant_id uuid, p_description text, p_metadata jsonb, p_user_id uuid, p_role_id uuid,
    p_expires_at timestamptz, p_rotated_from uuid, OUT key_id uuid, OUT api_key text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_prefix text := substr(replace(gen_random_uuid()::text, '-', ''), 1, 12);
BEGIN
    api_key := 'tk_' || key_prefix || '_'
        || replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '');
    INSERT INTO tenantry.api_keys (tenant_id, prefix, key_hash, description, metadata, user_id, role_id,
                                   expires_at, rotated_from)
    VALUES (p_tenant_id, key_prefix, sha256(convert_to(api_key, 'UTF8')), coalesce(p_description, ''),
            coalesce(p_metadata, '{}'), p_user_id, p_role_id, p_expires_at, p_rotated_from)
    RETURNING api_keys.key_id INTO issue_api_key.key_id;
EXCEPTION
    WHEN foreign_key_violation THEN
        RAISE EXCEPTION 'user_id or role_id does not belong to tenant %', p_tenant_id
            USING ERRCODE = 'TN404', HINT = 'role_id';
END
$$;
COMMENT ON FUNCTION tenantry.issue_api_key(uuid, text, jsonb, uuid, uuid, timestamptz, uuid) IS 'Internal: generates a key, stores its SHA-256, returns id and key. Not granted.';

/**
 * KeyHippo API: create_api_key(description, metadata) -> key (shown once).
 * metadata may name tenant_id (default: the current tenant), user_id,
 * role_id, expires_at. The tenant must be the current tenant or one of its
 * descendants.
 */
CREATE FUNCTION tenantry.create_api_key(description text, metadata jsonb DEFAULT '{}')
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    meta jsonb := coalesce(metadata, '{}');
    tid uuid;
    issued record;
BEGIN
    IF jsonb_typeof(meta) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'TN422', HINT = 'metadata';
    END IF;
    IF length(description) > 500 THEN
        RAISE EXCEPTION 'description must be at most 500 characters' USING ERRCODE = 'TN422', HINT = 'description';
    END IF;
    BEGIN
        tid := coalesce((meta->>'tenant_id')::uuid, tenantry.current_tenant_id());
        IF tid IS NULL OR NOT (tid = ANY (tenantry.visible_tenant_ids())) THEN
            RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404', HINT = 'tenant_id';
        END IF;
        issued := tenantry.issue_api_key(
            tid, description, meta - 'tenant_id' - 'user_id' - 'role_id' - 'expires_at',
            (meta->>'user_id')::uuid, (meta->>'role_id')::uuid, (meta->>'expires_at')::timestamptz, NULL);
    EXCEPTION WHEN invalid_text_representation OR invalid_datetime_format OR datetime_field_overflow THEN
        RAISE EXCEPTION 'metadata holds an invalid tenant_id, user_id, role_id or expires_at: %', SQLERRM
            USING ERRCODE = 'TN422', HINT = 'metadata';
    END;
    RETURN issued.api_key;
END
$$;
COMMENT ON FUNCTION tenantry.create_api_key(text, jsonb) IS 'KeyHippo API: creates a key for the current tenant (or a descendant named in metadata.tenant_id) and returns it once.';

/** Guide: create_tenant_api_key(tenant_id, description) -> key. */
CREATE FUNCTION tenantry.create_tenant_api_key(tenant_id uuid, description text)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tenantry.create_api_key(description,
        jsonb_build_object('tenant_id', tenant_id, 'type', 'tenant_key'))
$$;
COMMENT ON FUNCTION tenantry.create_tenant_api_key(uuid, text) IS 'Guide API: creates a tenant key (metadata type tenant_key) for the current tenant or a descendant.';

/**
 * Verifies a key given as its prefix and SHA-256 (the server never sends the
 * key itself). Returns the key's identity as jsonb, NULL when unknown,
 * revoked or expired. Records last use at most once a minute.
 */
CREATE FUNCTION tenantry.verify_api_key_hash(key_prefix text, key_hash bytea)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k record;
BEGIN
    FOR k IN
        SELECT a.*, t.status AS tenant_status, t.settings AS tenant_settings
        FROM tenantry.api_keys a JOIN tenantry.tenants t USING (tenant_id)
        WHERE a.prefix = key_prefix
    LOOP
        IF tenantry.constant_time_equal(k.key_hash, verify_api_key_hash.key_hash)
           AND k.revoked_at IS NULL
           AND (k.expires_at IS NULL OR k.expires_at > now()) THEN
            IF k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' THEN
                UPDATE tenantry.api_keys SET last_used_at = now()
                WHERE tenant_id = k.tenant_id AND api_keys.key_id = k.key_id;
            END IF;
            RETURN jsonb_build_object(
                'key_id', k.key_id, 'tenant_id', k.tenant_id, 'tenant_status', k.tenant_status,
                'tenant_settings', k.tenant_settings,
                'permissions', to_jsonb(tenantry.identity_permissions(k.tenant_id, k.user_id, k.role_id)),
                'user_id', k.user_id, 'role_id', k.role_id, 'description', k.description,
                'metadata', k.metadata, 'expires_at', k.expires_at, 'prefix', k.prefix,
                'type', coalesce(k.metadata->>'type', 'tenant_key'));
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.verify_api_key_hash(text, bytea) IS 'Verifies a key by prefix and SHA-256 (constant-time compare) before any tenant is known; NULL for unknown, revoked or expired keys.';

/** KeyHippo API: verify_api_key(key) -> identity jsonb, or NULL. */
CREATE FUNCTION tenantry.verify_api_key(key text)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN key ~ '^tk_[0-9a-f]{12}_[0-9a-f]{64}$'
                THEN tenantry.verify_api_key_hash(substr(key, 4, 12), sha256(convert_to(key, 'UTF8')))
           END
$$;
COMMENT ON FUNCTION tenantry.verify_api_key(text) IS 'KeyHippo API: the identity of a valid key (tenant_id, key_id, user_id, role_id, ...), NULL otherwise. Needs no tenant context.';

/**
 * Guide: validate_tenant_key(key). Fixed: the key identifies its tenant (no
 * context needed). With a context set, a key of another tenant gives NULL.
 * Keys of tenants that are not active give NULL.
 */
CREATE FUNCTION tenantry.validate_tenant_key(key text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_data jsonb := tenantry.verify_api_key(key);
BEGIN
    IF key_data IS NULL OR key_data->>'tenant_status' <> 'active' THEN
        RETURN NULL;
    END IF;
    IF tenantry.current_tenant_id() IS NOT NULL
       AND (key_data->>'tenant_id')::uuid <> tenantry.current_tenant_id() THEN
        RETURN NULL;
    END IF;
    RETURN key_data;
END
$$;
COMMENT ON FUNCTION tenantry.validate_tenant_key(text) IS 'Guide API: identity of a valid key of an active tenant; NULL if invalid, or if a tenant context is set and the key belongs to another tenant.';

/** KeyHippo API: revokes a key of the current tenant or a descendant (TN404 otherwise). */
CREATE FUNCTION tenantry.revoke_api_key(key_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE tenantry.api_keys a SET revoked_at = coalesce(a.revoked_at, now())
    WHERE a.key_id = revoke_api_key.key_id
      AND a.tenant_id = ANY (tenantry.visible_tenant_ids());
    IF NOT FOUND THEN
        RAISE EXCEPTION 'api key % not found', revoke_api_key.key_id USING ERRCODE = 'TN404', HINT = 'key_id';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.revoke_api_key(uuid) IS 'KeyHippo API: revokes a key at once. Idempotent; TN404 for a key outside the caller''s subtree.';

/**
 * KeyHippo API: rotate_api_key(key_id, grace) -> new key (shown once). The new
 * key inherits tenant, member, role, description and metadata; the old key
 * keeps working until now() + grace, then expires.
 */
CREATE FUNCTION tenantry.rotate_api_key(key_id uuid, grace interval DEFAULT interval '24 hours')
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old record;
    issued record;
BEGIN
    IF grace IS NULL OR grace < interval '0' THEN
        RAISE EXCEPTION 'grace period must be >= 0' USING ERRCODE = 'TN422', HINT = 'grace';
    END IF;
    SELECT * INTO old FROM tenantry.api_keys a
    WHERE a.key_id = rotate_api_key.key_id
      AND a.tenant_id = ANY (tenantry.visible_tenant_ids())
    FOR UPDATE;
    IF old IS NULL THEN
        RAISE EXCEPTION 'api key % not found', rotate_api_key.key_id USING ERRCODE = 'TN404', HINT = 'key_id';
    END IF;
    IF old.revoked_at IS NOT NULL OR (old.expires_at IS NOT NULL AND old.expires_at <= now()) THEN
        RAISE EXCEPTION 'api key % is revoked or expired', rotate_api_key.key_id USING ERRCODE = 'TN409', HINT = 'key_id';
    END IF;
    IF old.rotated_to IS NOT NULL THEN
        RAISE EXCEPTION 'api key % was already rotated', rotate_api_key.key_id USING ERRCODE = 'TN409', HINT = 'key_id';
    END IF;
    issued := tenantry.issue_api_key(old.tenant_id, old.description, old.metadata, old.user_id, old.role_id,
                                     old.expires_at, old.key_id);
    UPDATE tenantry.api_keys a
    SET rotated_to = issued.key_id,
        expires_at = least(coalesce(a.expires_at, 'infinity'), now() + grace)
    WHERE a.tenant_id = old.tenant_id AND a.key_id = old.key_id;
    RETURN issued.api_key;
END
$$;
COMMENT ON FUNCTION tenantry.rotate_api_key(uuid, interval) IS 'KeyHippo API: issues a successor key; the old key expires after the grace period (default 24 hours).';

/** Permission names of an identity: its role's if bound to a role, else its member's roles', else all. */
CREATE FUNCTION tenantry.identity_permissions(p_tenant_id uuid, p_user_id uuid, p_role_id uuid)
RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(p.name ORDER BY p.name), '{}')
    FROM tenantry.permissions p
    WHERE (p_role_id IS NULL AND p_user_id IS NULL)
       OR EXISTS (SELECT 1 FROM tenantry.role_permissions rp
                  WHERE rp.tenant_id = p_tenant_id AND rp.permission_id = p.permission_id
                    AND (rp.role_id = p_role_id
                         OR (p_role_id IS NULL AND rp.role_id IN (
                                SELECT mr.role_id FROM tenantry.member_roles mr
                                WHERE mr.tenant_id = p_tenant_id AND mr.user_id = p_user_id))))
$$;
COMMENT ON FUNCTION tenantry.identity_permissions(uuid, uuid, uuid) IS 'Internal: permissions of a key identity (role, else member roles, else all for an unbound owner key). Not granted.';

/** The permission names a key of the caller's subtree holds. */
CREATE FUNCTION tenantry.key_permissions(key_id uuid)
RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tenantry.identity_permissions(a.tenant_id, a.user_id, a.role_id)
    FROM tenantry.api_keys a
    WHERE a.key_id = key_permissions.key_id
      AND a.tenant_id = ANY (tenantry.visible_tenant_ids())
$$;
COMMENT ON FUNCTION tenantry.key_permissions(uuid) IS 'Permissions of a key of the current subtree: its role''s if bound to a role, else its member''s roles'', else every permission (tenant owner key). NULL for keys outside the subtree.';

GRANT EXECUTE ON FUNCTION
    tenantry.create_api_key(text, jsonb),
    tenantry.create_tenant_api_key(uuid, text),
    tenantry.verify_api_key_hash(text, bytea),
    tenantry.verify_api_key(text),
    tenantry.validate_tenant_key(text),
    tenantry.revoke_api_key(uuid),
    tenantry.rotate_api_key(uuid, interval),
    tenantry.key_permissions(uuid)
TO tenantry_app;
