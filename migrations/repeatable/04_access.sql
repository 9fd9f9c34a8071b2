-- =============================================================================
-- Members, the permission catalogue, tenant roles and role assignments.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

-- -----------------------------------------------------------------------------
-- Who reads and writes what
--
-- Writes are policies per command (INSERT, UPDATE, DELETE), never FOR ALL: a
-- FOR ALL policy also applies to SELECT, where PostgreSQL ORs it with the read
-- policy, and an OR of two policies is no index condition. The planner then
-- filters the policy after an index scan on any other column, and EXPLAIN
-- ANALYZE counts the foreign rows it removed (issue 10, finding 8).
-- -----------------------------------------------------------------------------

CREATE POLICY members_read_subtree ON tenantry.tenant_members
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY members_read_subtree ON tenantry.tenant_members IS 'A tenant reads its own and its descendants'' members.';

CREATE POLICY members_insert_own ON tenantry.tenant_members
    FOR INSERT TO tenantry_app
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY members_insert_own ON tenantry.tenant_members IS 'A tenant adds, changes and removes only its own members (INSERT).';

CREATE POLICY members_update_own ON tenantry.tenant_members
    FOR UPDATE TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id())
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY members_update_own ON tenantry.tenant_members IS 'A tenant adds, changes and removes only its own members (UPDATE).';

CREATE POLICY members_delete_own ON tenantry.tenant_members
    FOR DELETE TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY members_delete_own ON tenantry.tenant_members IS 'A tenant adds, changes and removes only its own members (DELETE).';

GRANT SELECT, INSERT (tenant_id, user_id, email, display_name), UPDATE (email, display_name), DELETE
    ON tenantry.tenant_members TO tenantry_app;

GRANT SELECT ON tenantry.permissions TO tenantry_app, tenantry_admin;

CREATE POLICY roles_read_subtree ON tenantry.roles
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY roles_read_subtree ON tenantry.roles IS 'A tenant reads its own and its descendants'' roles.';

CREATE POLICY roles_insert_own ON tenantry.roles
    FOR INSERT TO tenantry_app
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY roles_insert_own ON tenantry.roles IS 'A tenant creates, renames and deletes only its own roles (INSERT).';

CREATE POLICY roles_update_own ON tenantry.roles
    FOR UPDATE TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id())
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY roles_update_own ON tenantry.roles IS 'A tenant creates, renames and deletes only its own roles (UPDATE).';

CREATE POLICY roles_delete_own ON tenantry.roles
    FOR DELETE TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY roles_delete_own ON tenantry.roles IS 'A tenant creates, renames and deletes only its own roles (DELETE).';

GRANT SELECT, INSERT (tenant_id, name, description), UPDATE (name, description), DELETE
    ON tenantry.roles TO tenantry_app;

CREATE POLICY role_permissions_read_subtree ON tenantry.role_permissions
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY role_permissions_read_subtree ON tenantry.role_permissions IS 'A tenant reads the permissions of its own and its descendants'' roles.';

CREATE POLICY role_permissions_insert_own ON tenantry.role_permissions
    FOR INSERT TO tenantry_app
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY role_permissions_insert_own ON tenantry.role_permissions IS 'Permissions are assigned only within the current tenant (INSERT).';

CREATE POLICY role_permissions_update_own ON tenantry.role_permissions
    FOR UPDATE TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id())
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY role_permissions_update_own ON tenantry.role_permissions IS 'Permissions are assigned only within the current tenant (UPDATE).';

CREATE POLICY role_permissions_delete_own ON tenantry.role_permissions
    FOR DELETE TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY role_permissions_delete_own ON tenantry.role_permissions IS 'Permissions are assigned only within the current tenant (DELETE).';

GRANT SELECT, INSERT, DELETE ON tenantry.role_permissions TO tenantry_app;

CREATE POLICY member_roles_read_subtree ON tenantry.member_roles
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY member_roles_read_subtree ON tenantry.member_roles IS 'A tenant reads role assignments in its subtree.';

CREATE POLICY member_roles_insert_own ON tenantry.member_roles
    FOR INSERT TO tenantry_app
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY member_roles_insert_own ON tenantry.member_roles IS 'Roles are assigned only within the current tenant (INSERT).';

CREATE POLICY member_roles_update_own ON tenantry.member_roles
    FOR UPDATE TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id())
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY member_roles_update_own ON tenantry.member_roles IS 'Roles are assigned only within the current tenant (UPDATE).';

CREATE POLICY member_roles_delete_own ON tenantry.member_roles
    FOR DELETE TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY member_roles_delete_own ON tenantry.member_roles IS 'Roles are assigned only within the current tenant (DELETE).';

GRANT SELECT, INSERT, DELETE ON tenantry.member_roles TO tenantry_app;

-- -----------------------------------------------------------------------------
-- Audit
-- -----------------------------------------------------------------------------

/** Stores role names and member emails and display names in one form (see clean_name). */
CREATE OR REPLACE FUNCTION tenantry.access_clean_names()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_TABLE_NAME = 'roles' THEN
        NEW.name := tenantry.clean_name(NEW.name, 'name');
    ELSE
        NEW.email := tenantry.clean_name(NEW.email, 'email');
        NEW.display_name := tenantry.clean_name(NEW.display_name, 'display_name');
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION tenantry.access_clean_names() IS 'Trigger: role names and member emails and display names in NFC without surrounding white space; control and invisible characters refused (TN422). Emails then compare case-insensitively in every script (unique index on lower(email) in the ICU root locale).';
CREATE OR REPLACE TRIGGER roles_clean_names BEFORE INSERT OR UPDATE OF name ON tenantry.roles
    FOR EACH ROW EXECUTE FUNCTION tenantry.access_clean_names();
CREATE OR REPLACE TRIGGER tenant_members_clean_names BEFORE INSERT OR UPDATE OF email, display_name ON tenantry.tenant_members
    FOR EACH ROW EXECUTE FUNCTION tenantry.access_clean_names();

/** Audits role, permission and role-assignment changes. */
CREATE OR REPLACE FUNCTION tenantry.access_audit()
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
CREATE OR REPLACE TRIGGER roles_audit AFTER INSERT OR UPDATE OR DELETE ON tenantry.roles
    FOR EACH ROW EXECUTE FUNCTION tenantry.access_audit();
CREATE OR REPLACE TRIGGER role_permissions_audit AFTER INSERT OR DELETE ON tenantry.role_permissions
    FOR EACH ROW EXECUTE FUNCTION tenantry.access_audit();
CREATE OR REPLACE TRIGGER member_roles_audit AFTER INSERT OR DELETE ON tenantry.member_roles
    FOR EACH ROW EXECUTE FUNCTION tenantry.access_audit();
CREATE OR REPLACE TRIGGER tenant_members_audit AFTER INSERT OR UPDATE OR DELETE ON tenantry.tenant_members
    FOR EACH ROW EXECUTE FUNCTION tenantry.access_audit();

-- -----------------------------------------------------------------------------
-- The guide's role API
-- -----------------------------------------------------------------------------

/**
 * Guide: create_tenant_role(tenant_id, role_name). Fixed: runs as the caller,
 * so RLS only lets a tenant create roles in itself (TN403 otherwise).
 */
CREATE OR REPLACE FUNCTION tenantry.create_tenant_role(tenant_id uuid, role_name text)
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
 * The catalogue id of `permission` for a change to a role of the current
 * tenant: TN404 when the role is not the tenant's (like a missing one) or the
 * permission is unknown. Runs as the caller, so RLS decides what "the
 * tenant's" means.
 */
CREATE OR REPLACE FUNCTION tenantry.role_permission_id(role_id uuid, permission text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pid integer;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM tenantry.roles r
        WHERE r.role_id = role_permission_id.role_id
          AND r.tenant_id = tenantry.current_tenant_id()
    ) THEN
        RAISE EXCEPTION 'role % not found', role_permission_id.role_id USING ERRCODE = 'TN404', HINT = 'role_id';
    END IF;
    SELECT p.permission_id INTO pid FROM tenantry.permissions p WHERE p.name = permission;
    IF pid IS NULL THEN
        RAISE EXCEPTION 'unknown permission "%"', permission USING ERRCODE = 'TN404', HINT = 'permission';
    END IF;
    RETURN pid;
END
$$;
COMMENT ON FUNCTION tenantry.role_permission_id(uuid, text) IS 'Internal: the permission id for a change to a role of the current tenant; TN404 for a role outside it or an unknown permission. Runs as the caller.';

/**
 * Guide: assign_tenant_permission(role_id, permission). The role must belong
 * to the current tenant (TN404 otherwise, like a missing one); unknown
 * permissions are TN404; assigning twice is a no-op.
 */
CREATE OR REPLACE FUNCTION tenantry.assign_tenant_permission(role_id uuid, permission text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO tenantry.role_permissions (tenant_id, role_id, permission_id)
    VALUES (tenantry.current_tenant_id(), assign_tenant_permission.role_id,
            tenantry.role_permission_id(assign_tenant_permission.role_id, permission))
    ON CONFLICT DO NOTHING
$$;
COMMENT ON FUNCTION tenantry.assign_tenant_permission(uuid, text) IS 'Guide API: grants a catalogue permission to a role of the current tenant. Idempotent.';

/** Removes a permission from a role of the current tenant; TN404 when the role is not the tenant's. */
CREATE OR REPLACE FUNCTION tenantry.revoke_tenant_permission(role_id uuid, permission text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Checked first: an unknown role or permission is TN404 even with nothing to remove.
    pid integer := tenantry.role_permission_id(revoke_tenant_permission.role_id, permission);
BEGIN
    DELETE FROM tenantry.role_permissions rp
    WHERE rp.tenant_id = tenantry.current_tenant_id()
      AND rp.role_id = revoke_tenant_permission.role_id
      AND rp.permission_id = pid;
END
$$;
COMMENT ON FUNCTION tenantry.revoke_tenant_permission(uuid, text) IS 'Removes a permission from a role of the current tenant. Idempotent.';

/** Assigns a role of the current tenant to one of its members. */
CREATE OR REPLACE FUNCTION tenantry.assign_member_role(user_id uuid, role_id uuid)
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
    tenantry.role_permission_id(uuid, text),
    tenantry.create_tenant_role(uuid, text),
    tenantry.assign_tenant_permission(uuid, text),
    tenantry.revoke_tenant_permission(uuid, text),
    tenantry.assign_member_role(uuid, uuid)
TO tenantry_app;

/**
 * Permission names of an identity: its role's if bound to a role, else its
 * member's roles', else all (an unbound owner key). A set-returning SQL
 * function without SECURITY DEFINER or SET, so the planner inlines it into
 * the caller's query (verify_api_key_hash, key_permissions) and the caller's
 * cached plan covers it: as a scalar SECURITY DEFINER function it was planned
 * anew on every call (~0.15 ms of a member-bound key's verification). One
 * branch per kind of identity; the planner drops the others as one-time
 * filters. Runs as its caller, which must read the tables (both callers are
 * the owner's). Unordered; the member branch names each permission once.
 */
CREATE OR REPLACE FUNCTION tenantry.identity_permissions(p_tenant_id uuid, p_user_id uuid, p_role_id uuid)
RETURNS TABLE (name text)
LANGUAGE sql STABLE
AS $$
    SELECT p.name
    FROM tenantry.permissions p
    WHERE p_role_id IS NULL AND p_user_id IS NULL
    UNION ALL
    SELECT p.name
    FROM tenantry.role_permissions rp
    JOIN tenantry.permissions p ON p.permission_id = rp.permission_id
    WHERE p_role_id IS NOT NULL AND rp.tenant_id = p_tenant_id AND rp.role_id = p_role_id
    UNION ALL
    SELECT p.name
    FROM tenantry.permissions p
    WHERE p_role_id IS NULL AND p_user_id IS NOT NULL
      AND p.permission_id IN (
          SELECT rp.permission_id
          FROM tenantry.member_roles mr
          JOIN tenantry.role_permissions rp ON rp.tenant_id = mr.tenant_id AND rp.role_id = mr.role_id
          WHERE mr.tenant_id = p_tenant_id AND mr.user_id = p_user_id)
$$;
COMMENT ON FUNCTION tenantry.identity_permissions(uuid, uuid, uuid) IS 'Internal: permission names of a key identity (role, else member roles, else all for an unbound owner key), inlined into its callers. Not granted.';
