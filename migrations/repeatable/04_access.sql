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

-- pending on INSERT only: the server adds a person named by id as pending
-- (0037); only their acceptance (accept_invitation, as the owner) clears it.
GRANT SELECT, INSERT (tenant_id, user_id, email, display_name, pending), UPDATE (email, display_name), DELETE
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
    -- Only a value written anew: one stored under an older rule (before a
    -- migration narrowed clean_name) is left as it is, so that the row's
    -- other changes go through (a verification review: a tenant named under
    -- the older rule could no longer be suspended, nor its key revoked).
    -- On Citus this fires on the shards, named roles_<shard id> (as in
    -- access_audit).
    IF regexp_replace(TG_TABLE_NAME, '_[0-9]+$', '') = 'roles' THEN
        IF TG_OP = 'INSERT' OR NEW.name IS DISTINCT FROM OLD.name THEN
            NEW.name := tenantry.clean_name(NEW.name, 'name');
        END IF;
    ELSE
        IF TG_OP = 'INSERT' OR NEW.email IS DISTINCT FROM OLD.email THEN
            NEW.email := tenantry.clean_name(NEW.email, 'email');
        END IF;
        IF TG_OP = 'INSERT' OR NEW.display_name IS DISTINCT FROM OLD.display_name THEN
            NEW.display_name := tenantry.clean_name(NEW.display_name, 'display_name');
        END IF;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION tenantry.access_clean_names() IS 'Trigger: role names and member emails and display names in NFC without surrounding white space; control and invisible characters refused (TN422). Emails then compare case-insensitively in every script (unique index on lower(email) in the ICU root locale).';
CREATE OR REPLACE TRIGGER roles_clean_names BEFORE INSERT OR UPDATE OF name ON tenantry.roles
    FOR EACH ROW EXECUTE FUNCTION tenantry.access_clean_names();
CREATE OR REPLACE TRIGGER tenant_members_clean_names BEFORE INSERT OR UPDATE OF email, display_name ON tenantry.tenant_members
    FOR EACH ROW EXECUTE FUNCTION tenantry.access_clean_names();

/**
 * Key and role descriptions read as what they are: no control or invisible
 * characters (tab and line breaks allowed; the joiners only where letters
 * join: tenantry.invisible_text). Checked when a description is inserted or
 * changed, never on another update of its row: one an older rule allowed
 * stays while its key is used, revoked or rotated (migration 0064; NOT VALID
 * constraints were checked again on every update).
 */
CREATE OR REPLACE FUNCTION tenantry.descriptions_visible()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (TG_OP = 'INSERT' OR NEW.description IS DISTINCT FROM OLD.description)
       AND tenantry.invisible_text(NEW.description, true) THEN
        RAISE EXCEPTION 'description must not contain control or invisible characters (bidirectional overrides, zero-width characters)'
            USING ERRCODE = 'TN422', HINT = 'description';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION tenantry.descriptions_visible() IS 'Trigger: a key''s or role''s description written anew holds no control or invisible characters (tenantry.invisible_text with line breaks allowed); TN422 naming description. Other updates of the row are not checked.';
CREATE OR REPLACE TRIGGER roles_descriptions_visible BEFORE INSERT OR UPDATE OF description ON tenantry.roles
    FOR EACH ROW EXECUTE FUNCTION tenantry.descriptions_visible();
CREATE OR REPLACE TRIGGER api_keys_descriptions_visible BEFORE INSERT OR UPDATE OF description ON tenantry.api_keys
    FOR EACH ROW EXECUTE FUNCTION tenantry.descriptions_visible();

/** Audits role, permission and role-assignment changes. */
CREATE OR REPLACE FUNCTION tenantry.access_audit()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    tbl text;
BEGIN
    r := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    -- The table it was made for: on Citus this fires on the shards, whose
    -- names carry the shard's id (roles_102040). No tenant table's own
    -- name ends in _<digits>.
    tbl := regexp_replace(TG_TABLE_NAME, '_[0-9]+$', '');
    IF tbl = 'roles' THEN
        PERFORM tenantry.write_audit(r.tenant_id,
            CASE TG_OP WHEN 'INSERT' THEN 'role.created' WHEN 'UPDATE' THEN 'role.updated' ELSE 'role.deleted' END,
            'role', r.role_id::text, jsonb_build_object('name', r.name));
    ELSIF tbl = 'role_permissions' THEN
        PERFORM tenantry.write_audit(r.tenant_id,
            CASE TG_OP WHEN 'INSERT' THEN 'permission.granted' ELSE 'permission.revoked' END,
            'role', r.role_id::text,
            jsonb_build_object('permission', (SELECT name FROM tenantry.permissions p WHERE p.permission_id = r.permission_id)));
    ELSIF tbl = 'member_roles' THEN
        PERFORM tenantry.write_audit(r.tenant_id,
            CASE TG_OP WHEN 'INSERT' THEN 'member.role_assigned' ELSE 'member.role_removed' END,
            'member', r.user_id::text, jsonb_build_object('role_id', r.role_id));
    ELSIF tbl = 'tenant_members' THEN
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
        RAISE EXCEPTION 'roles can only be created in the current tenant, the context''s: set it first: set_tenant_context_local(tenant_id) inside BEGIN ... COMMIT (outside a transaction block it lasts only its own statement), or set_tenant_context(tenant_id) for the session' USING ERRCODE = 'TN403', HINT = 'tenant_id';
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
    -- Without a context no role is the current tenant's: said as such, not
    -- as a missing role (found by a review following the guide from psql:
    -- create_tenant_role in one transaction, then assign_tenant_permission
    -- in the next read "role ... not found"). Names no tenant's role.
    IF tenantry.current_tenant_id() IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set: a role''s permissions are changed in its tenant''s context; set it first: set_tenant_context_local(tenant_id) inside BEGIN ... COMMIT (outside a transaction block it lasts only its own statement), or set_tenant_context(tenant_id) for the session'
              USING ERRCODE = 'TN403', HINT = 'role_id';
    END IF;
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
COMMENT ON FUNCTION tenantry.role_permission_id(uuid, text) IS 'Internal: the permission id for a change to a role of the current tenant; TN403 without a tenant context, TN404 for a role outside it or an unknown permission. Runs as the caller.';

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
    -- The tenant as a value, not a call in the statement: Citus refuses a
    -- distributed DELETE or UPDATE whose WHERE calls a STABLE function inside
    -- a CASE, COALESCE or NULLIF, which current_tenant_id() inlines to
    -- (docs/scale-out.md). Likewise in the functions below.
    tid uuid := tenantry.current_tenant_id();
BEGIN
    DELETE FROM tenantry.role_permissions rp
    WHERE rp.tenant_id = tid
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
 * Permission names of an identity, sorted: its role's if bound to a role,
 * else its member's roles' (all for the owner, none while pending), else all
 * (an unbound key); narrowed to
 * scopes when given. PL/pgSQL with one statement per kind of identity, each
 * planned once per session: a single SQL statement with a branch per kind
 * (the earlier form) made the executor set up all three branches on every
 * call, a third of a key verification's time. No SET clause and every name
 * qualified: its callers are the owner's functions, which pin search_path.
 * Runs as its caller, which must read the tables. Not granted.
 */
CREATE OR REPLACE FUNCTION tenantry.identity_permission_names(p_tenant_id uuid, p_user_id uuid, p_role_id uuid, p_scopes text[])
RETURNS text[]
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_owner boolean;
    v_pending boolean;
BEGIN
    IF p_role_id IS NULL AND p_user_id IS NULL THEN
        RETURN ARRAY(SELECT p.name FROM tenantry.permissions p
                     WHERE p_scopes IS NULL OR p.name OPERATOR(pg_catalog.=) ANY (p_scopes)
                     ORDER BY p.name);
    ELSIF p_role_id IS NOT NULL THEN
        RETURN ARRAY(SELECT p.name
                     FROM tenantry.role_permissions rp
                     JOIN tenantry.permissions p ON p.permission_id OPERATOR(pg_catalog.=) rp.permission_id
                     WHERE rp.tenant_id OPERATOR(pg_catalog.=) p_tenant_id AND rp.role_id OPERATOR(pg_catalog.=) p_role_id
                       AND (p_scopes IS NULL OR p.name OPERATOR(pg_catalog.=) ANY (p_scopes))
                     ORDER BY p.name);
    END IF;
    -- A key bound to the owner acts as the owner, who holds every permission
    -- (found by an audit: it held none, the owner having no roles); one
    -- bound to a member who has not accepted yet holds none (pending members
    -- do not act).
    SELECT m.is_owner, m.pending INTO v_owner, v_pending
    FROM tenantry.tenant_members m
    WHERE m.tenant_id OPERATOR(pg_catalog.=) p_tenant_id AND m.user_id OPERATOR(pg_catalog.=) p_user_id;
    IF v_pending THEN
        RETURN '{}'::text[];
    ELSIF v_owner THEN
        RETURN ARRAY(SELECT p.name FROM tenantry.permissions p
                     WHERE p_scopes IS NULL OR p.name OPERATOR(pg_catalog.=) ANY (p_scopes)
                     ORDER BY p.name);
    END IF;
    -- A member: each permission once, however many of its roles hold it.
    RETURN ARRAY(SELECT DISTINCT p.name
                 FROM tenantry.member_roles mr
                 JOIN tenantry.role_permissions rp
                   ON rp.tenant_id OPERATOR(pg_catalog.=) mr.tenant_id AND rp.role_id OPERATOR(pg_catalog.=) mr.role_id
                 JOIN tenantry.permissions p ON p.permission_id OPERATOR(pg_catalog.=) rp.permission_id
                 WHERE mr.tenant_id OPERATOR(pg_catalog.=) p_tenant_id AND mr.user_id OPERATOR(pg_catalog.=) p_user_id
                   AND (p_scopes IS NULL OR p.name OPERATOR(pg_catalog.=) ANY (p_scopes))
                 ORDER BY p.name);
END
$$;
COMMENT ON FUNCTION tenantry.identity_permission_names(uuid, uuid, uuid, text[]) IS 'Internal: sorted permission names of a key identity (role, else member roles: all for the owner, none for a pending member; else all for an unbound key), narrowed to scopes when not NULL; one planned statement per kind of identity. Not granted.';

/**
 * The same as a set (identity_permission_names without scopes), for callers
 * that join or filter it. Plain SQL without SECURITY DEFINER or SET, inlined
 * into its callers.
 */
CREATE OR REPLACE FUNCTION tenantry.identity_permissions(p_tenant_id uuid, p_user_id uuid, p_role_id uuid)
RETURNS TABLE (name text)
LANGUAGE sql STABLE
AS $$
    SELECT pg_catalog.unnest(tenantry.identity_permission_names(p_tenant_id, p_user_id, p_role_id, NULL))
$$;
COMMENT ON FUNCTION tenantry.identity_permissions(uuid, uuid, uuid) IS 'Internal: permission names of a key identity (role, else member roles, else all for an unbound owner key) as a set, inlined into its callers. Not granted.';

/**
 * Adds a permission to the catalogue, for the team's own tables (for example
 * invoices.approve, required by adopt_table(write_permission => ...) or by
 * the team's policies through authorize()). Operators only (a superuser or a
 * member of tenantry_owner), or an administrative context. Idempotent: an
 * existing name gets the new description. Returns its id.
 */
CREATE OR REPLACE FUNCTION tenantry.define_permission(name text, description text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pid integer;
BEGIN
    IF NOT (tenantry.operator_session() OR tenantry.admin_context()) THEN
        RAISE EXCEPTION 'define_permission is for operators and administrators' USING ERRCODE = '42501';
    END IF;
    IF name IS NULL OR name !~ '^[a-z_]+\.[a-z_]+$' OR length(name) > 100 THEN
        RAISE EXCEPTION 'a permission is named <area>.<action> in lower-case letters and _, e.g. invoices.approve'
            USING ERRCODE = 'TN422', HINT = 'name';
    END IF;
    IF description IS NULL OR length(btrim(description)) NOT BETWEEN 1 AND 500 THEN
        RAISE EXCEPTION 'a permission needs a description of 1 to 500 characters' USING ERRCODE = 'TN422', HINT = 'description';
    END IF;
    -- Ids come from the catalogue itself: one definer at a time.
    PERFORM pg_advisory_xact_lock(hashtext('tenantry.define_permission'));
    SELECT p.permission_id INTO pid FROM tenantry.permissions p WHERE p.name = define_permission.name;
    IF pid IS NOT NULL THEN
        UPDATE tenantry.permissions p SET description = btrim(define_permission.description)
        WHERE p.permission_id = pid AND p.description <> btrim(define_permission.description);
        -- Described anew: on the operator's record; the same again is no event.
        IF FOUND THEN
            PERFORM tenantry.write_operator_audit('permission.described', 'permission', define_permission.name,
                jsonb_build_object('description', btrim(define_permission.description)));
        END IF;
        RETURN pid;
    END IF;
    -- INSERT ... SELECT: Citus refuses a subquery in VALUES (found running
    -- the Citus suite: no permission could be defined there).
    INSERT INTO tenantry.permissions (permission_id, name, description)
    SELECT coalesce(max(p.permission_id), 0) + 1, define_permission.name, btrim(define_permission.description)
    FROM tenantry.permissions p
    RETURNING permission_id INTO pid;
    PERFORM tenantry.write_operator_audit('permission.defined', 'permission', define_permission.name,
        jsonb_build_object('description', btrim(define_permission.description)));
    RETURN pid;
END
$$;
COMMENT ON FUNCTION tenantry.define_permission(text, text) IS 'Adds (or re-describes) a permission of the catalogue for the team''s own tables, e.g. invoices.approve; operators and administrative contexts only. Returns its id.';
GRANT EXECUTE ON FUNCTION tenantry.define_permission(text, text) TO tenantry_app, tenantry_admin;

-- -----------------------------------------------------------------------------
-- People: owners, members' grants, the tenants of a signed-in person
-- -----------------------------------------------------------------------------

/**
 * Whether the caller holds the permission with this catalogue id. Reads the
 * catalogue (a small reference table) by its primary key, so it is for
 * row checks of role_permissions, not for tenant tables' policies (those use
 * authorize(name)).
 */
CREATE OR REPLACE FUNCTION tenantry.authorize_permission_id(pid integer)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL (plans kept per session): a write policy calls it per row.
    RETURN tenantry.authorize((SELECT p.name FROM tenantry.permissions p WHERE p.permission_id = pid));
END
$$;
COMMENT ON FUNCTION tenantry.authorize_permission_id(integer) IS 'Whether the current caller holds the catalogue permission with this id (authorize() of its name); role_permissions'' write policies use it so nobody grants or takes a permission they do not hold.';
GRANT EXECUTE ON FUNCTION tenantry.authorize_permission_id(integer) TO tenantry_app;

/** Whether the caller holds every permission (an owner, an unbound key, an operator). */
CREATE OR REPLACE FUNCTION tenantry.authorize_all()
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.left(pg_catalog.current_setting('backtrace_functions'), 12) = 'tenantry_v1_'
       AND pg_catalog.strpos(pg_catalog.current_setting('backtrace_functions'), ',pALL,') OPERATOR(pg_catalog.>) 0
$$;
COMMENT ON FUNCTION tenantry.authorize_all() IS 'Whether the current caller holds every permission: the tenant''s owner, a key bound to no role or member, an unrestricted server context or an operator. False without a tenant context.';
GRANT EXECUTE ON FUNCTION tenantry.authorize_all() TO tenantry_app, tenantry_app_own, tenantry_app_shared;

/**
 * What a member holds in a tenant, as context grants: NULL (everything) for
 * the owner, the permission names of the member's roles otherwise, empty for
 * a user who is not a member. Reads members and roles as its caller (the
 * owner's functions), granted to nobody.
 */
CREATE OR REPLACE FUNCTION tenantry.member_grants(tid uuid, uid uuid)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owner boolean;
BEGIN
    -- PL/pgSQL, whose plans last the session: an SQL function with a SET
    -- clause is parsed and planned again in every statement that calls it.
    -- The membership first, the permissions after in an expression that
    -- reads no table: on Citus a query of tenant_members is pushed to a
    -- shard, where identity_permission_names could not read the roles (no
    -- distributed query from a shard).
    SELECT m.is_owner INTO v_owner
    FROM tenantry.tenant_members m
    WHERE m.tenant_id = tid AND m.user_id = uid;
    IF NOT FOUND THEN
        RETURN '{}'::text[];
    ELSIF v_owner THEN
        RETURN NULL;
    END IF;
    RETURN tenantry.identity_permission_names(tid, uid, NULL, NULL);
END
$$;
COMMENT ON FUNCTION tenantry.member_grants(uuid, uuid) IS 'Internal: a member''s grants in a tenant for its context: NULL (all) for the owner, its roles'' permission names otherwise, empty for a non-member. Not granted.';

/**
 * The signed-in person's membership of one tenant, for the server to build
 * the tenant context of a person's request: NULL when the user is not a
 * member, is a pending one (added by the tenant with their id, not yet
 * accepted: 0037) or the tenant is deleted (the same answer as a missing
 * tenant).
 * Needs a user context (the server proves it with enter_context): the user
 * is the context's, never an argument, so other SQL on the server's login
 * cannot ask about anyone.
 */
CREATE OR REPLACE FUNCTION tenantry.member_identity(tid uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    -- PL/pgSQL (plans kept per session): a person's request needs it whenever
    -- the server's cache of the membership misses. At most one row: the
    -- membership's primary key. The permissions after it, in an expression
    -- that reads no table: on Citus the membership's query is pushed to a
    -- shard, where member_grants could not read the roles (no distributed
    -- query from a shard).
    SELECT t.tenant_id, t.status, t.settings, m.user_id, m.email, m.is_owner INTO r
    FROM tenantry.tenant_members m
    JOIN tenantry.tenants t ON t.tenant_id = m.tenant_id
    WHERE m.tenant_id = tid
      AND m.user_id = tenantry.current_user_id()
      AND NOT m.pending
      AND tenantry.current_tenant_id() IS NULL
      AND t.status <> 'deleted';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object(
        'tenant_id', r.tenant_id, 'tenant_status', r.status, 'tenant_settings', r.settings,
        'user_id', r.user_id, 'email', r.email, 'is_owner', r.is_owner,
        'permissions', CASE WHEN r.is_owner
                            THEN to_jsonb(ARRAY(SELECT p.name FROM tenantry.permissions p ORDER BY p.name))
                            ELSE to_jsonb(tenantry.member_grants(r.tenant_id, r.user_id)) END);
END
$$;
COMMENT ON FUNCTION tenantry.member_identity(uuid) IS 'In a user context: the signed-in person''s membership of a tenant (status, settings, owner, permissions: every one for the owner); NULL when not a member, still pending (added by the tenant, not yet accepted) or the tenant is deleted.';
GRANT EXECUTE ON FUNCTION tenantry.member_identity(uuid) TO tenantry_app;

/** The tenants the signed-in person is a member of (a user context), with their roles there. */
CREATE OR REPLACE FUNCTION tenantry.my_tenants()
RETURNS TABLE (tenant_id uuid, name text, status text, is_owner boolean, roles text[], joined_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.tenant_id, t.name, t.status, m.is_owner,
           ARRAY(SELECT r.name FROM tenantry.member_roles mr
                 JOIN tenantry.roles r ON r.tenant_id = mr.tenant_id AND r.role_id = mr.role_id
                 WHERE mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id ORDER BY r.name),
           m.created_at
    FROM tenantry.member_tenants mt
    JOIN tenantry.tenant_members m ON m.tenant_id = mt.tenant_id AND m.user_id = mt.user_id
    JOIN tenantry.tenants t ON t.tenant_id = m.tenant_id
    WHERE mt.user_id = tenantry.current_user_id()
      AND NOT m.pending
      AND tenantry.current_tenant_id() IS NULL
      AND t.status <> 'deleted'
    ORDER BY t.name, t.tenant_id
$$;
COMMENT ON FUNCTION tenantry.my_tenants() IS 'In a user context: the tenants the signed-in person is a member of (not deleted; not those where the membership is pending, added by the tenant and not yet accepted), with owner flag and role names. Empty in any other context.';
GRANT EXECUTE ON FUNCTION tenantry.my_tenants() TO tenantry_app;

/**
 * Whether a (cleaned) email is an address: one @ between two parts without
 * white space, at most 320 characters. White space spelt out: \s follows the
 * database's LC_CTYPE (ASCII only under C). The rule of invitations and of a
 * person's own tenant's first member.
 */
CREATE OR REPLACE FUNCTION tenantry.email_address(value text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT value ~ E'^[^@\\s\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+@[^@\\s\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+$'
           AND length(value) <= 320
$$;
COMMENT ON FUNCTION tenantry.email_address(text) IS 'Whether an email is an address: one @ between two parts without white space, at most 320 characters (create_invitation, create_my_tenant). Not granted.';

/**
 * A signed-in person creates a tenant of their own: a pooled root tenant
 * whose first member, and so owner, is the person, with the email their
 * identity provider verified, and the policy's settings (no children by
 * default). Only while the person has created fewer tenants (not deleted,
 * whoever owns them now) than signup_policy.tenants_per_person, which is 0, none, unless
 * an operator raised it: whether anyone who can sign in may create tenants
 * is the operator's decision, here in the database, so that no SQL run in a
 * person's transaction decides it instead. One creation of a person at a
 * time (an advisory lock on the person, never a table lock), so that two at
 * once cannot both pass the count. Returns the tenant as my_tenants() lists
 * it (one statement that writes and answers: on Citus, reading it back as
 * another role in the same transaction is refused).
 */
CREATE OR REPLACE FUNCTION tenantry.create_my_tenant(tenant_name text, email text)
RETURNS TABLE (tenant_id uuid, name text, status text, is_owner boolean, roles text[], joined_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    uid uuid := tenantry.current_user_id();
    allowed integer := (SELECT p.tenants_per_person FROM tenantry.signup_policy p);
    clean_email text := tenantry.clean_name(email, 'email');
    created bigint;
    tid uuid;
BEGIN
    IF uid IS NULL OR tenantry.current_tenant_id() IS NOT NULL THEN
        RAISE EXCEPTION 'creating a tenant of your own needs a signed-in person' USING ERRCODE = 'TN403';
    END IF;
    IF coalesce(allowed, 0) = 0 THEN
        RAISE EXCEPTION 'people do not create tenants here: the operator does (tenantry.signup_policy)' USING ERRCODE = 'TN403';
    END IF;
    -- Its first member's email: the one the person's provider verified.
    IF coalesce(clean_email, '') = '' THEN
        RAISE EXCEPTION 'creating a tenant needs the verified email of your sign-in' USING ERRCODE = 'TN422', HINT = 'email';
    ELSIF NOT coalesce(tenantry.email_address(clean_email), false) THEN
        -- Verified, but not an address (an outside review: told "needs the
        -- verified email", the team's developer looked at email_verified).
        RAISE EXCEPTION 'the email of your sign-in is not an email address tenantry takes (local@domain, at most 254 characters)'
            USING ERRCODE = 'TN422', HINT = 'email';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('tenantry.create_my_tenant ' || uid::text, 0));
    -- The tenants the person created and that are not deleted, whoever owns
    -- them now: counting what they owned let them leave each new tenant, or
    -- hand it to a member record of their own, and create another (0065).
    SELECT count(*) INTO created
    FROM tenantry.tenants t
    WHERE t.created_by_user = uid AND t.status <> 'deleted';
    IF created >= allowed THEN
        -- TN429, as every other limit (quota_exceeded over HTTP): a client
        -- telling limits apart by code missed this one as TN409 (found by
        -- an outside review).
        RAISE EXCEPTION 'you have created % tenants, the most a person may here (a deleted one no longer counts)', created
            USING ERRCODE = 'TN429', HINT = 'tenants_per_person';
    END IF;
    tid := tenantry.insert_tenant_by(tenant_name, NULL, 'shared',
                                     (SELECT p.settings FROM tenantry.signup_policy p), uid);
    -- Its first member takes no lock on the row just inserted
    -- (tenant_members_owner); on Citus the setting reaches the worker that
    -- holds the member's shard, where that trigger runs.
    IF tenantry.citus_distributed() THEN
        EXECUTE 'SET LOCAL citus.propagate_set_commands = ''local''';
    END IF;
    EXECUTE format('SET LOCAL tenantry.first_member_of = %L', tid);
    INSERT INTO tenantry.tenant_members (tenant_id, user_id, email) VALUES (tid, uid, clean_email);
    RETURN QUERY
        SELECT t.tenant_id, t.name, t.status, m.is_owner, ARRAY[]::text[], m.created_at
        FROM tenantry.tenants t JOIN tenantry.tenant_members m ON m.tenant_id = t.tenant_id
        WHERE t.tenant_id = tid AND m.user_id = uid;
EXCEPTION WHEN unique_violation THEN
    -- The email of another member: none yet in a new tenant, so only a
    -- race with the operator's own insert; said, not a 500.
    RAISE EXCEPTION 'another member of the tenant already has this email' USING ERRCODE = 'TN409', HINT = 'email';
END
$$;
COMMENT ON FUNCTION tenantry.create_my_tenant(text, text) IS 'In a user context: the signed-in person creates a pooled root tenant with signup_policy.settings and becomes its first member and owner, with their verified email. TN403 outside a user context or while signup_policy.tenants_per_person is 0 (the default); TN429 when they have created that many tenants (not deleted, whoever owns them now) already; TN422 for the name or an email that is no address. Returns the tenant as my_tenants() lists it.';
GRANT EXECUTE ON FUNCTION tenantry.create_my_tenant(text, text) TO tenantry_app;

-- -----------------------------------------------------------------------------
-- What a caller may write: permissions required by the write policies
--
-- RESTRICTIVE policies, ANDed with the tenant policies above: a tenant's
-- caller (a key, a member through its roles) writes members, roles and
-- assignments only when its verified context holds the permission
-- (authorize(), 01_context.sql), even through raw SQL as the app role.
-- -----------------------------------------------------------------------------

CREATE POLICY members_insert_needs_permission ON tenantry.tenant_members
    AS RESTRICTIVE FOR INSERT TO tenantry_app
    WITH CHECK (tenantry.authorize('members.write'));
COMMENT ON POLICY members_insert_needs_permission ON tenantry.tenant_members IS 'Adding a member needs members.write.';
CREATE POLICY members_update_needs_permission ON tenantry.tenant_members
    AS RESTRICTIVE FOR UPDATE TO tenantry_app
    USING (tenantry.authorize('members.write'));
COMMENT ON POLICY members_update_needs_permission ON tenantry.tenant_members IS 'Changing a member needs members.write.';
CREATE POLICY members_delete_needs_permission ON tenantry.tenant_members
    AS RESTRICTIVE FOR DELETE TO tenantry_app
    USING (tenantry.authorize('members.write'));
COMMENT ON POLICY members_delete_needs_permission ON tenantry.tenant_members IS 'Removing a member needs members.write.';

CREATE POLICY member_roles_insert_needs_permission ON tenantry.member_roles
    AS RESTRICTIVE FOR INSERT TO tenantry_app
    WITH CHECK (tenantry.authorize('members.write'));
COMMENT ON POLICY member_roles_insert_needs_permission ON tenantry.member_roles IS 'Assigning a role needs members.write.';
CREATE POLICY member_roles_delete_needs_permission ON tenantry.member_roles
    AS RESTRICTIVE FOR DELETE TO tenantry_app
    USING (tenantry.authorize('members.write'));
COMMENT ON POLICY member_roles_delete_needs_permission ON tenantry.member_roles IS 'Removing a role assignment needs members.write.';

CREATE POLICY roles_insert_needs_permission ON tenantry.roles
    AS RESTRICTIVE FOR INSERT TO tenantry_app
    WITH CHECK (tenantry.authorize('roles.write'));
COMMENT ON POLICY roles_insert_needs_permission ON tenantry.roles IS 'Creating a role needs roles.write.';
CREATE POLICY roles_update_needs_permission ON tenantry.roles
    AS RESTRICTIVE FOR UPDATE TO tenantry_app
    USING (tenantry.authorize('roles.write'));
COMMENT ON POLICY roles_update_needs_permission ON tenantry.roles IS 'Renaming a role needs roles.write.';
CREATE POLICY roles_delete_needs_permission ON tenantry.roles
    AS RESTRICTIVE FOR DELETE TO tenantry_app
    USING (tenantry.authorize('roles.write'));
COMMENT ON POLICY roles_delete_needs_permission ON tenantry.roles IS 'Deleting a role needs roles.write.';

CREATE POLICY role_permissions_insert_needs_permission ON tenantry.role_permissions
    AS RESTRICTIVE FOR INSERT TO tenantry_app
    WITH CHECK (tenantry.authorize('roles.write') AND tenantry.authorize_permission_id(permission_id));
COMMENT ON POLICY role_permissions_insert_needs_permission ON tenantry.role_permissions IS 'Granting a permission to a role needs roles.write and the permission itself: nobody grants more than they hold.';
CREATE POLICY role_permissions_delete_needs_permission ON tenantry.role_permissions
    AS RESTRICTIVE FOR DELETE TO tenantry_app
    USING (tenantry.authorize('roles.write') AND tenantry.authorize_permission_id(permission_id));
COMMENT ON POLICY role_permissions_delete_needs_permission ON tenantry.role_permissions IS 'Taking a permission from a role needs roles.write and the permission itself.';

CREATE POLICY member_tenants_no_direct_access ON tenantry.member_tenants
    AS RESTRICTIVE FOR ALL TO PUBLIC
    USING (false) WITH CHECK (false);
COMMENT ON POLICY member_tenants_no_direct_access ON tenantry.member_tenants IS 'Nobody reads or writes it under RLS: the table is granted to no role (it is looked up by user); the owner''s trigger writes it and my_tenants() reads it.';

/** Keeps member_tenants (user -> tenants) in step with tenant_members. */
CREATE OR REPLACE FUNCTION tenantry.member_tenants_follow()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tenantry.member_tenants (user_id, tenant_id) VALUES (NEW.user_id, NEW.tenant_id)
        ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM tenantry.member_tenants mt WHERE mt.user_id = OLD.user_id AND mt.tenant_id = OLD.tenant_id;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.member_tenants_follow() IS 'Trigger: files a member in member_tenants on insert and removes the entry on delete.';
CREATE OR REPLACE TRIGGER member_tenants_follow AFTER INSERT OR DELETE ON tenantry.tenant_members
    FOR EACH ROW EXECUTE FUNCTION tenantry.member_tenants_follow();

/**
 * Nobody is made an active member under an id a tenant chose (0038): that id
 * may be a person's (a UUID subject, or the UUIDv5 of issuer and subject), and
 * an active member with it is that person's membership. A tenant role names
 * a person only as a pending member (pending => true, accepted by them through
 * accept_invitation); an active member it adds gets an id drawn here, which no
 * person signs in as. Runs as the inserting role (SECURITY INVOKER) to know
 * who chose the id: the owner's functions (accept_invitation), imports and
 * superusers may name anyone. Fires before tenant_members_owner (triggers fire
 * in name order), which must see the final pending flag.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_members_consent()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.user_id IS NULL THEN
        -- Random, marked version 5: no token's subject maps to a version-5
        -- id (tenantry_axum::jwt::user_id_for derives those from subjects, and
        -- takes a subject as the id only when it is of another version), so
        -- no person can sign in as this member by writing its id as a subject.
        NEW.user_id := overlay(gen_random_uuid()::text PLACING '5' FROM 15 FOR 1)::uuid;
    ELSIF NEW.pending IS NOT TRUE AND NOT pg_has_role(current_user, 'tenantry_owner', 'USAGE') THEN
        RAISE EXCEPTION 'a member named by a user id is pending until that person accepts an invitation'
            USING ERRCODE = '42501',
                  HINT = 'insert it with pending => true and invite the person by user_id, or leave user_id out for a member no person signs in as';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_members_consent() IS 'Trigger: draws the id of a member inserted without one; refuses (42501) an active member whose user id a tenant role chose, since that id may be a person''s: such a member must be pending until the person accepts.';
CREATE OR REPLACE TRIGGER tenant_members_consent BEFORE INSERT ON tenantry.tenant_members
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenant_members_consent();

/** The first member of a tenant owns it; the owner is removed only as the last active member (transfer ownership first). */
CREATE OR REPLACE FUNCTION tenantry.tenant_members_owner()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- Serialises first members of one tenant on its row (not the table),
        -- but for the first member of a tenant this transaction has just
        -- created (create_my_tenant names it in tenantry.first_member_of):
        -- its insert holds the row already, and nobody else sees it yet.
        -- On Citus the lock, taken from the worker holding the member's
        -- shard, waited on the other nodes' copies of the row that the same
        -- transaction had inserted over other connections: a distributed
        -- deadlock (found running sign-up on a cluster). The setting skips
        -- no check: it only spares a lock nobody else can contend for.
        IF NEW.tenant_id::text IS DISTINCT FROM current_setting('tenantry.first_member_of', true) THEN
            PERFORM 1 FROM tenantry.tenants t WHERE t.tenant_id = NEW.tenant_id FOR NO KEY UPDATE;
        END IF;
        -- A pending member (not yet accepted) owns nothing: the first to
        -- accept does (accept_invitation).
        NEW.is_owner := NOT NEW.pending
                        AND NOT EXISTS (SELECT 1 FROM tenantry.tenant_members m
                                        WHERE m.tenant_id = NEW.tenant_id AND m.is_owner);
        -- Owning is every permission: a tenant's caller that does not hold
        -- them all adds no owner (found by a review of the hierarchy: a key
        -- holding members.invite alone made its own person the owner of a
        -- tenant that had none). Without a tenant context (an operator's
        -- session; accept_invitation, which checks the invitation itself)
        -- the first member owns it as before.
        IF NEW.is_owner AND tenantry.current_tenant_id() IS NOT NULL AND NOT tenantry.authorize_all() THEN
            RAISE EXCEPTION 'tenant % has no owner yet: its first member becomes its owner, which only a caller holding every permission may add', NEW.tenant_id
                USING ERRCODE = 'TN401', HINT = 'user_id';
        END IF;
        RETURN NEW;
    END IF;
    -- The last active member may go (the next one to join, or the first
    -- pending one to accept, owns the tenant); while other active members
    -- remain, one of them must own it first. Pending members do not count:
    -- ownership cannot be handed to them. The tenant's row, as on insert,
    -- serialises this with an acceptance that would otherwise see this
    -- owner, not yet deleted, and not take the ownership.
    IF OLD.is_owner THEN
        PERFORM 1 FROM tenantry.tenants t WHERE t.tenant_id = OLD.tenant_id FOR NO KEY UPDATE;
    END IF;
    IF OLD.is_owner AND EXISTS (SELECT 1 FROM tenantry.tenant_members m
                                WHERE m.tenant_id = OLD.tenant_id AND m.user_id <> OLD.user_id
                                  AND NOT m.pending) THEN
        RAISE EXCEPTION 'member % owns tenant %: transfer ownership first', OLD.user_id, OLD.tenant_id
            USING ERRCODE = 'TN409', HINT = 'user_id';
    END IF;
    RETURN OLD;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_members_owner() IS 'Trigger: the first member of a tenant becomes its owner (not a pending one: the first to accept then does); deleting the owner while other active members remain is refused (TN409: transfer ownership first); pending members do not hold the owner back.';
CREATE OR REPLACE TRIGGER tenant_members_owner BEFORE INSERT OR DELETE ON tenantry.tenant_members
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenant_members_owner();

/**
 * Makes another member of the current tenant its owner. Only the current
 * owner (or a caller holding everything: an unbound key, an operator) may;
 * the tenant always keeps exactly one owner. TN404 for a non-member.
 */
CREATE OR REPLACE FUNCTION tenantry.transfer_ownership(new_owner uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid := tenantry.current_tenant_id();
    not_accepted boolean;
    subtree uuid[];
BEGIN
    IF tid IS NULL OR NOT tenantry.authorize_all() THEN
        RAISE EXCEPTION 'only the tenant''s owner can transfer its ownership' USING ERRCODE = 'TN403';
    END IF;
    PERFORM 1 FROM tenantry.tenants t WHERE t.tenant_id = tid FOR NO KEY UPDATE;
    -- The caller's grants were read when its context was entered: a
    -- transfer committed since, which this one waited for (the owner sending
    -- two at once), made it a former owner. Checked again under the lock
    -- (found by a concurrency review: both were applied).
    IF tenantry.current_user_id() IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM tenantry.tenant_members m
                       WHERE m.tenant_id = tid AND m.user_id = tenantry.current_user_id() AND m.is_owner) THEN
        RAISE EXCEPTION 'only the tenant''s owner can transfer its ownership' USING ERRCODE = 'TN403';
    END IF;
    SELECT m.pending INTO not_accepted FROM tenantry.tenant_members m WHERE m.tenant_id = tid AND m.user_id = new_owner;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'member % not found', new_owner USING ERRCODE = 'TN404', HINT = 'user_id';
    ELSIF not_accepted THEN
        RAISE EXCEPTION 'member % has not accepted yet: nobody is made owner of a tenant they did not join', new_owner
            USING ERRCODE = 'TN409', HINT = 'user_id';
    END IF;
    UPDATE tenantry.tenant_members m SET is_owner = false WHERE m.tenant_id = tid AND m.is_owner AND m.user_id <> new_owner;
    UPDATE tenantry.tenant_members m SET is_owner = true WHERE m.tenant_id = tid AND m.user_id = new_owner AND NOT m.is_owner;
    -- The former owner's impersonations end for good (0053): refused from
    -- now on anyway, they would come back if the ownership did (found by a
    -- verification review), and would count toward the live sessions.
    -- (The subtree as a value: Citus routes an UPDATE by the tenant ids it
    -- is given, not by a subquery's.)
    subtree := ARRAY(SELECT h.child_id FROM tenantry.tenant_hierarchy h WHERE h.parent_id = tid);
    UPDATE tenantry.impersonations i SET ended_at = now()
    WHERE i.tenant_id = ANY (subtree)
      AND i.impersonator_tenant = tid AND i.impersonator_user <> new_owner AND i.ended_at IS NULL;
    PERFORM tenantry.write_audit(tid, 'member.ownership_transferred', 'member', new_owner::text, '{}');
END
$$;
COMMENT ON FUNCTION tenantry.transfer_ownership(uuid) IS 'Makes a member of the current tenant its owner (the previous owner stays a member). Only the owner or a caller holding every permission (TN403 otherwise); TN404 for a non-member.';
GRANT EXECUTE ON FUNCTION tenantry.transfer_ownership(uuid) TO tenantry_app;

/**
 * A member of the current tenant with its role ids, as the server returns it
 * after transfer_ownership changed it: read as the owner that wrote it (on
 * Citus a transaction may not read, as another role, the shards it changed
 * as the owner). The tenant is the context's own, within the members' read
 * policy (members_read_subtree).
 */
CREATE OR REPLACE FUNCTION tenantry.member_info(member_user_id uuid)
RETURNS TABLE (tenant_id uuid, user_id uuid, email text, display_name text, created_at timestamptz,
               role_ids uuid[], is_owner boolean, pending boolean)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.tenant_id, m.user_id, m.email, m.display_name, m.created_at,
           coalesce(array_agg(mr.role_id ORDER BY mr.role_id) FILTER (WHERE mr.role_id IS NOT NULL), '{}'),
           m.is_owner, m.pending
    FROM tenantry.tenant_members m
    LEFT JOIN tenantry.member_roles mr ON mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id
    WHERE m.tenant_id = tenantry.current_tenant_id() AND m.user_id = member_user_id
    GROUP BY m.tenant_id, m.user_id
$$;
COMMENT ON FUNCTION tenantry.member_info(uuid) IS 'A member of the current tenant with its role ids, read as the owner: what the server returns after transfer_ownership (on Citus a transaction may not read, as tenantry_app, shards it changed as the owner).';
GRANT EXECUTE ON FUNCTION tenantry.member_info(uuid) TO tenantry_app;

/**
 * Replaces the roles of a member of the current tenant. Needs members.write;
 * the caller must hold every permission of each role it adds or removes
 * (nobody grants or takes more than they hold). TN404 for a member or role
 * outside the tenant. Returns the member's role ids.
 */
CREATE OR REPLACE FUNCTION tenantry.set_member_roles(user_id uuid, role_ids uuid[])
RETURNS uuid[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid := tenantry.current_tenant_id();
    changed uuid;
BEGIN
    IF NOT tenantry.authorize('members.write') THEN
        RAISE EXCEPTION 'changing a member''s roles needs members.write' USING ERRCODE = 'TN401';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tenantry.tenant_members m WHERE m.tenant_id = tid AND m.user_id = set_member_roles.user_id) THEN
        RAISE EXCEPTION 'member % not found', set_member_roles.user_id USING ERRCODE = 'TN404', HINT = 'user_id';
    END IF;
    SELECT r INTO changed FROM unnest(coalesce(role_ids, '{}')) r
    WHERE NOT EXISTS (SELECT 1 FROM tenantry.roles x WHERE x.tenant_id = tid AND x.role_id = r) LIMIT 1;
    IF changed IS NOT NULL THEN
        RAISE EXCEPTION 'role % not found', changed USING ERRCODE = 'TN404', HINT = 'role_ids';
    END IF;
    -- Every role added or removed is checked against the caller's grants by
    -- the member_roles_within_grants trigger.
    DELETE FROM tenantry.member_roles mr
    WHERE mr.tenant_id = tid AND mr.user_id = set_member_roles.user_id AND NOT (mr.role_id = ANY (coalesce(role_ids, '{}')));
    INSERT INTO tenantry.member_roles (tenant_id, user_id, role_id)
    SELECT tid, set_member_roles.user_id, r FROM unnest(coalesce(role_ids, '{}')) r
    ON CONFLICT DO NOTHING;
    RETURN ARRAY(SELECT mr.role_id FROM tenantry.member_roles mr
                 WHERE mr.tenant_id = tid AND mr.user_id = set_member_roles.user_id ORDER BY mr.role_id);
END
$$;
COMMENT ON FUNCTION tenantry.set_member_roles(uuid, uuid[]) IS 'Replaces the roles of a member of the current tenant (members.write; TN401 when a role added or removed holds a permission the caller does not, from the member_roles_within_grants trigger; TN404 for a member or role outside the tenant). Runs as the caller: RLS applies. Returns the member''s role ids.';
GRANT EXECUTE ON FUNCTION tenantry.set_member_roles(uuid, uuid[]) TO tenantry_app;

/**
 * Whether a role of a tenant holds a permission the current caller does not
 * (authorize()): who may not assign, remove or invite to it. Runs as its
 * caller (RLS applies), so the app role may call it.
 */
CREATE OR REPLACE FUNCTION tenantry.role_beyond_grants(tid uuid, rid uuid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM tenantry.role_permissions rp JOIN tenantry.permissions p ON p.permission_id = rp.permission_id
                   WHERE rp.tenant_id = tid AND rp.role_id = rid AND NOT tenantry.authorize(p.name))
$$;
COMMENT ON FUNCTION tenantry.role_beyond_grants(uuid, uuid) IS 'Whether a role holds a permission the current caller does not (nobody assigns, removes or invites to more than they hold). Runs as its caller, under RLS: the member_roles trigger calls it as the tenant''s role.';
GRANT EXECUTE ON FUNCTION tenantry.role_beyond_grants(uuid, uuid) TO tenantry_app;

/**
 * Nobody assigns or removes a role holding a permission they do not hold:
 * checked on every row of member_roles a tenant's caller writes (raw SQL,
 * the guide's assign_member_role, set_member_roles). Runs as the caller;
 * tenantry's own functions (as the owner: accepting an invitation) are
 * checked where they decide.
 */
CREATE OR REPLACE FUNCTION tenantry.member_roles_within_grants()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    IF current_user <> 'tenantry_owner' AND tenantry.role_beyond_grants(r.tenant_id, r.role_id) THEN
        RAISE EXCEPTION 'role % holds permissions the caller does not: it cannot assign or remove it', r.role_id
            USING ERRCODE = 'TN401', HINT = 'role_id';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION tenantry.member_roles_within_grants() IS 'Trigger: refuses (TN401) a tenant caller assigning or removing a role with a permission it does not hold (authorize()).';
CREATE OR REPLACE TRIGGER member_roles_within_grants BEFORE INSERT OR DELETE ON tenantry.member_roles
    FOR EACH ROW EXECUTE FUNCTION tenantry.member_roles_within_grants();

/**
 * Nobody removes a member stronger than themselves: removing a member takes
 * away every role it holds, so the caller must hold every permission of
 * those roles (the owner: every permission), as for taking the roles away one
 * by one. Found by an audit: the member's role assignments went with it by
 * the foreign key's cascade, which runs as the table's owner and which the
 * member_roles trigger therefore does not check. Runs as the caller;
 * tenantry's own functions (as the owner) decide for themselves.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_members_within_grants()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Without a tenant context the app roles see no member (RLS): only an
    -- operator's session deletes then.
    IF current_user <> 'tenantry_owner' AND tenantry.current_tenant_id() IS NOT NULL
       AND NOT tenantry.authorize_all()
       AND (OLD.is_owner
            OR EXISTS (SELECT 1 FROM tenantry.member_roles mr
                       WHERE mr.tenant_id = OLD.tenant_id AND mr.user_id = OLD.user_id
                         AND tenantry.role_beyond_grants(mr.tenant_id, mr.role_id))) THEN
        RAISE EXCEPTION 'member % holds permissions the caller does not: it cannot remove them', OLD.user_id
            USING ERRCODE = 'TN401', HINT = 'user_id';
    END IF;
    RETURN OLD;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_members_within_grants() IS 'Trigger: refuses (TN401) a tenant caller removing a member that holds a permission the caller does not (through its roles, or as the owner).';
CREATE OR REPLACE TRIGGER tenant_members_within_grants BEFORE DELETE ON tenantry.tenant_members
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenant_members_within_grants();

/**
 * Nobody deletes a role holding a permission they do not hold: deleting it
 * takes its permissions from every member assigned it, which the caller may
 * not do one by one (role_permissions' and member_roles' checks). Found by a
 * review of the hierarchy: the deletion's cascade runs as the tables' owner,
 * which those checks leave alone, so a roles.write holder stripped a
 * stronger member's role. Runs as the caller; tenantry's own functions (as
 * the owner) decide for themselves.
 */
CREATE OR REPLACE FUNCTION tenantry.roles_within_grants()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_user <> 'tenantry_owner' AND tenantry.current_tenant_id() IS NOT NULL
       AND tenantry.role_beyond_grants(OLD.tenant_id, OLD.role_id) THEN
        RAISE EXCEPTION 'role % holds permissions the caller does not: it cannot delete it', OLD.role_id
            USING ERRCODE = 'TN401', HINT = 'role_id';
    END IF;
    RETURN OLD;
END
$$;
COMMENT ON FUNCTION tenantry.roles_within_grants() IS 'Trigger: refuses (TN401) a tenant caller deleting a role with a permission it does not hold (its members would lose it).';
CREATE OR REPLACE TRIGGER roles_within_grants BEFORE DELETE ON tenantry.roles
    FOR EACH ROW EXECUTE FUNCTION tenantry.roles_within_grants();

/** Removes a member of the current tenant (members.write, and every permission the member holds: TN401); the owner is refused while others remain (TN409), an unknown member is TN404. */
CREATE OR REPLACE FUNCTION tenantry.remove_member(user_id uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid := tenantry.current_tenant_id();
BEGIN
    IF NOT tenantry.authorize('members.write') THEN
        RAISE EXCEPTION 'removing a member needs members.write' USING ERRCODE = 'TN401';
    END IF;
    DELETE FROM tenantry.tenant_members m
    WHERE m.tenant_id = tid AND m.user_id = remove_member.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'member % not found', remove_member.user_id USING ERRCODE = 'TN404', HINT = 'user_id';
    END IF;
    -- Their pending invitations, and those of the keys that went with them,
    -- can no longer be accepted (0069): listed and audited as revoked.
    PERFORM tenantry.revoke_orphaned_invitations(tid, after_app_writes => true);
END
$$;
COMMENT ON FUNCTION tenantry.remove_member(uuid) IS 'Removes a member of the current tenant and its role assignments (members.write and every permission the member holds, else TN401; TN409 for the owner while other active members remain, TN404 for a non-member). Their keys bound to them stop working, and the pending invitations they or those keys made are revoked. Runs as the caller.';
GRANT EXECUTE ON FUNCTION tenantry.remove_member(uuid) TO tenantry_app;

-- -----------------------------------------------------------------------------
-- Invitations
-- -----------------------------------------------------------------------------

/**
 * A token that names its row: prefix, the tenant's and the row's ids (32 hex
 * digits each) and 64 random hex digits. Only its SHA-256 is stored; the ids
 * find the row without a global lookup. Invitations (tinv_) and
 * impersonation sessions (timp_).
 */
CREATE OR REPLACE FUNCTION tenantry.row_token(prefix text, tid uuid, id uuid)
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT prefix || replace(tid::text, '-', '') || replace(id::text, '-', '')
        || replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '')
$$;
COMMENT ON FUNCTION tenantry.row_token(text, uuid, uuid) IS 'Internal: a new token naming its tenant and row (prefix, two ids, 64 random hex digits) for invitations and impersonation sessions. Not granted.';

/** Whether `token` is the one whose SHA-256 is `stored` (compared as digests of digests: the timing tells nothing of the stored hash). */
CREATE OR REPLACE FUNCTION tenantry.row_token_matches(stored bytea, token text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(stored) = sha256(sha256(convert_to(token, 'UTF8')))
$$;
COMMENT ON FUNCTION tenantry.row_token_matches(bytea, text) IS 'Internal: whether a token hashes to the stored SHA-256, compared as digests of digests. Not granted.';

CREATE POLICY invitations_read_own ON tenantry.invitations
    FOR SELECT TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY invitations_read_own ON tenantry.invitations IS 'A tenant lists its own invitations (never their token hashes: column privileges); only the invitation functions write them.';
GRANT SELECT (tenant_id, invitation_id, email, user_id, role_id, created_by, created_at, expires_at,
              accepted_at, accepted_by, revoked_at)
    ON tenantry.invitations TO tenantry_app;

/**
 * Invites a person to the current tenant: by email or user id (at least
 * one), with a role of the tenant (or none), valid for `valid_for` (1 minute
 * to 30 days). Needs members.invite, and the caller must hold every
 * permission of the role. Returns the invitation and its token, shown once
 * (tinv_ + the tenant's and the invitation's ids + 64 random hex digits;
 * only its SHA-256 is kept). At most 1000 pending invitations per tenant.
 * It rests on the member or key that made it (0069): accepting it is
 * refused once they could no longer make it.
 */
CREATE OR REPLACE FUNCTION tenantry.create_invitation(
    email text DEFAULT NULL, user_id uuid DEFAULT NULL, role_id uuid DEFAULT NULL,
    valid_for interval DEFAULT interval '7 days',
    OUT invitation_id uuid, OUT token text, OUT expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid := tenantry.current_tenant_id();
    clean_email text := tenantry.clean_name(email, 'email');
    by_user uuid;
    by_key uuid;
BEGIN
    IF tid IS NULL OR NOT tenantry.authorize('members.invite') THEN
        RAISE EXCEPTION 'inviting members needs members.invite' USING ERRCODE = 'TN401';
    END IF;
    IF clean_email IS NULL AND user_id IS NULL THEN
        RAISE EXCEPTION 'an invitation names an email or a user id' USING ERRCODE = 'TN422', HINT = 'email';
    END IF;
    IF clean_email IS NOT NULL AND NOT tenantry.email_address(clean_email) THEN
        RAISE EXCEPTION 'email is not an email address' USING ERRCODE = 'TN422', HINT = 'email';
    END IF;
    IF valid_for IS NULL OR valid_for < interval '1 minute' OR valid_for > interval '30 days' THEN
        RAISE EXCEPTION 'an invitation is valid for 1 minute to 30 days' USING ERRCODE = 'TN422', HINT = 'valid_for';
    END IF;
    -- An email an active member already has (a member added without a
    -- person, or a person who has joined): nobody else can ever accept it,
    -- since a tenant's members have one email each (found by a review of
    -- people: the invitation stayed pending, each acceptance refused). A
    -- pending member's email stays invitable: accepted by that person.
    IF clean_email IS NOT NULL AND EXISTS (
           SELECT 1 FROM tenantry.tenant_members m
           WHERE m.tenant_id = tid AND NOT m.pending
             AND lower(m.email COLLATE "und-x-icu") = lower(normalize(clean_email, NFC) COLLATE "und-x-icu")) THEN
        RAISE EXCEPTION 'a member of the tenant already has this email: nobody else could accept the invitation'
            USING ERRCODE = 'TN409', HINT = 'email';
    END IF;
    IF role_id IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM tenantry.roles r WHERE r.tenant_id = tid AND r.role_id = create_invitation.role_id) THEN
            RAISE EXCEPTION 'role % not found', role_id USING ERRCODE = 'TN404', HINT = 'role_id';
        END IF;
        IF tenantry.role_beyond_grants(tid, create_invitation.role_id) THEN
            RAISE EXCEPTION 'role % holds permissions the caller does not: it cannot invite to it', role_id
                USING ERRCODE = 'TN401', HINT = 'role_id';
        END IF;
    END IF;
    IF (SELECT count(*) FROM tenantry.invitations i
        WHERE i.tenant_id = tid AND i.accepted_at IS NULL AND i.revoked_at IS NULL AND i.expires_at > now()) >= 1000 THEN
        RAISE EXCEPTION 'tenant % has 1000 pending invitations', tid USING ERRCODE = 'TN409', HINT = 'revoke some first';
    END IF;
    -- The first person to join a tenant that has no owner owns it: only a
    -- caller holding every permission hands that out (found by a review of
    -- the hierarchy: members.invite alone made its own person the owner).
    IF NOT tenantry.authorize_all()
       AND NOT EXISTS (SELECT 1 FROM tenantry.tenant_members m WHERE m.tenant_id = tid AND m.is_owner) THEN
        RAISE EXCEPTION 'tenant % has no owner yet: the first person to join owns it, so only a caller holding every permission (an unbound key, an operator) invites them', tid
            USING ERRCODE = 'TN401';
    END IF;
    -- The standing it is made on (0069), which accept_invitation asks about:
    -- the key that acts (a key acts in its own tenant's context), even one
    -- gone since the server checked it (a context opened from a cache
    -- just before the key was deleted with its member: it then stands for
    -- nothing); or the person acting in their own request, as the owner or
    -- with the permissions the server put in the context. Neither for the
    -- operator, the CLI, or a context a team's code set up with every
    -- permission for someone who does not own the tenant: that authority is
    -- the code's, not a member's or a key's that could end.
    IF tenantry.current_actor() ~ '^key:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        by_key := substr(tenantry.current_actor(), 5)::uuid;
    ELSIF tenantry.current_actor() = 'user:' || tenantry.current_user_id()::text THEN
        -- A restricted context is a member's own (the server narrows every
        -- member but the owner to their roles): theirs even when their row
        -- went in the instant since the server checked it, which then ends
        -- the invitation at once. One holding every permission is the
        -- owner's, or the team's code vouching for someone.
        IF NOT tenantry.authorize_all() OR EXISTS (
               SELECT 1 FROM tenantry.tenant_members m
               WHERE m.tenant_id = tid AND m.user_id = tenantry.current_user_id() AND m.is_owner) THEN
            by_user := tenantry.current_user_id();
        END IF;
    END IF;
    invitation_id := gen_random_uuid();
    token := tenantry.row_token('tinv_', tid, invitation_id);
    expires_at := now() + valid_for;
    INSERT INTO tenantry.invitations (tenant_id, invitation_id, email, user_id, role_id, token_hash, expires_at, may_own,
                                      maker_user, maker_key)
    VALUES (tid, invitation_id, clean_email, create_invitation.user_id, create_invitation.role_id,
            sha256(convert_to(token, 'UTF8')), create_invitation.expires_at, tenantry.authorize_all(),
            by_user, by_key);
END
$$;
COMMENT ON FUNCTION tenantry.create_invitation(text, uuid, uuid, interval) IS 'Invites a person (email or user id) to the current tenant with an optional role, valid 1 minute to 30 days (default 7 days); needs members.invite and every permission of the role. Returns the token once (only its SHA-256 is stored). At most 1000 pending per tenant; TN409 for an email an active member of the tenant already has (nobody else could accept it). Records the member or key it rests on (0069): accept_invitation refuses it once they could no longer make it.';
GRANT EXECUTE ON FUNCTION tenantry.create_invitation(text, uuid, uuid, interval) TO tenantry_app;

/** Revokes a pending invitation of the current tenant (members.invite); TN409 when it was accepted, TN404 when it is not the tenant's. Idempotent. */
CREATE OR REPLACE FUNCTION tenantry.revoke_invitation(invitation_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid := tenantry.current_tenant_id();
    -- now() as a value: Citus refuses it inside COALESCE in a distributed UPDATE.
    at timestamptz := now();
BEGIN
    IF tid IS NULL OR NOT tenantry.authorize('members.invite') THEN
        RAISE EXCEPTION 'revoking invitations needs members.invite' USING ERRCODE = 'TN401';
    END IF;
    -- An accepted invitation is spent: revoking it would say something
    -- happened while the person stays a member (an acceptance committed
    -- first is seen here: the UPDATE waits for its row and checks again).
    UPDATE tenantry.invitations i SET revoked_at = coalesce(i.revoked_at, at)
    WHERE i.tenant_id = tid AND i.invitation_id = revoke_invitation.invitation_id
      AND i.accepted_at IS NULL;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM tenantry.invitations i
                   WHERE i.tenant_id = tid AND i.invitation_id = revoke_invitation.invitation_id) THEN
            RAISE EXCEPTION 'invitation % was already accepted', revoke_invitation.invitation_id
                USING ERRCODE = 'TN409', HINT = 'remove the member instead';
        END IF;
        RAISE EXCEPTION 'invitation % not found', revoke_invitation.invitation_id USING ERRCODE = 'TN404', HINT = 'invitation_id';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.revoke_invitation(uuid) IS 'Revokes an invitation of the current tenant (members.invite). Idempotent for a revoked or expired one; TN409 for one already accepted (remove the member instead); TN404 for another tenant''s.';
GRANT EXECUTE ON FUNCTION tenantry.revoke_invitation(uuid) TO tenantry_app;

/**
 * An invitation's status: accepted, revoked, expired or pending. The one
 * definition, for the library's reads and the _row functions below. Plain
 * SQL, inlined into its callers.
 */
CREATE OR REPLACE FUNCTION tenantry.invitation_status(accepted_at timestamptz, revoked_at timestamptz, expires_at timestamptz)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN accepted_at IS NOT NULL THEN 'accepted' WHEN revoked_at IS NOT NULL THEN 'revoked'
                WHEN expires_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN 'expired' ELSE 'pending' END
$$;
COMMENT ON FUNCTION tenantry.invitation_status(timestamptz, timestamptz, timestamptz) IS 'An invitation''s status from its times: accepted, revoked, expired or pending.';
GRANT EXECUTE ON FUNCTION tenantry.invitation_status(timestamptz, timestamptz, timestamptz) TO tenantry_app;

/**
 * The invitation as its tenant sees it, with its status (the columns of
 * the library's reads of invitations). Internal: the _row functions below
 * read it as the owner that has just written the row (on Citus a read as
 * another role of rows the transaction changed is refused,
 * docs/scale-out.md). Not granted.
 */
CREATE OR REPLACE FUNCTION tenantry.invitation_answer(tid uuid, id uuid)
RETURNS TABLE (invitation_id uuid, tenant_id uuid, email text, user_id uuid, role_id uuid, created_by text,
               created_at timestamptz, expires_at timestamptz, accepted_at timestamptz, accepted_by uuid,
               revoked_at timestamptz, status text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.invitation_id, i.tenant_id, i.email, i.user_id, i.role_id, i.created_by,
           i.created_at, i.expires_at, i.accepted_at, i.accepted_by, i.revoked_at,
           tenantry.invitation_status(i.accepted_at, i.revoked_at, i.expires_at)
    FROM tenantry.invitations i
    WHERE i.tenant_id = tid AND i.invitation_id = id
$$;
COMMENT ON FUNCTION tenantry.invitation_answer(uuid, uuid) IS 'Internal: one invitation of a tenant with its status (pending, accepted, revoked, expired), as create_invitation_row and revoke_invitation_row answer it. Not granted.';

/**
 * create_invitation, answered with the whole invitation and its token (the
 * token only here): what the library and the server call, so the answer is
 * read by the role that wrote it, in one statement. (Its arguments are
 * named invitee_* because the answer's columns take the plain names.)
 */
CREATE OR REPLACE FUNCTION tenantry.create_invitation_row(
    invitee_email text DEFAULT NULL, invitee_user_id uuid DEFAULT NULL, invitee_role_id uuid DEFAULT NULL,
    valid_for interval DEFAULT interval '7 days')
RETURNS TABLE (invitation_id uuid, tenant_id uuid, email text, user_id uuid, role_id uuid, created_by text,
               created_at timestamptz, expires_at timestamptz, accepted_at timestamptz, accepted_by uuid,
               revoked_at timestamptz, status text, token text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    made record;
BEGIN
    SELECT c.invitation_id, c.token INTO made
    FROM tenantry.create_invitation(invitee_email, invitee_user_id, invitee_role_id, valid_for) c;
    RETURN QUERY SELECT a.*, made.token FROM tenantry.invitation_answer(tenantry.current_tenant_id(), made.invitation_id) a;
END
$$;
COMMENT ON FUNCTION tenantry.create_invitation_row(text, uuid, uuid, interval) IS 'create_invitation, answered with the whole invitation (status included) and its token, read by the role that wrote it (one statement; on Citus the only form that can read it back in the same transaction).';
GRANT EXECUTE ON FUNCTION tenantry.create_invitation_row(text, uuid, uuid, interval) TO tenantry_app;

/** revoke_invitation, answered with the invitation as it is now. */
CREATE OR REPLACE FUNCTION tenantry.revoke_invitation_row(id uuid)
RETURNS TABLE (invitation_id uuid, tenant_id uuid, email text, user_id uuid, role_id uuid, created_by text,
               created_at timestamptz, expires_at timestamptz, accepted_at timestamptz, accepted_by uuid,
               revoked_at timestamptz, status text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.revoke_invitation(id);
    RETURN QUERY SELECT a.* FROM tenantry.invitation_answer(tenantry.current_tenant_id(), id) a;
END
$$;
COMMENT ON FUNCTION tenantry.revoke_invitation_row(uuid) IS 'revoke_invitation, answered with the invitation as it is now, read by the role that wrote it (one statement; on Citus the only form that can read it back in the same transaction).';
GRANT EXECUTE ON FUNCTION tenantry.revoke_invitation_row(uuid) TO tenantry_app;

/**
 * The key an invitation made by `key_id` rests on (0069): the key itself
 * while it is neither revoked nor expired; once it has expired after a
 * rotation (rotated_to, and not revoked), its successor, and so on along
 * the rotations. NULL when there is none: a revoked key (a leaked key
 * revoked ends what it made, before or after its rotation), an expired one
 * never rotated, a deleted one. Runs as its caller (the owner's functions).
 * Not granted.
 */
CREATE OR REPLACE FUNCTION tenantry.invitation_key(tid uuid, key_id uuid)
RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k record;
    id uuid := key_id;
BEGIN
    FOR hop IN 1..100 LOOP
        SELECT a.revoked_at, a.expires_at, a.rotated_to INTO k
        FROM tenantry.api_keys a
        WHERE a.tenant_id = tid AND a.key_id = id;
        IF NOT FOUND OR k.revoked_at IS NOT NULL THEN
            RETURN NULL;
        ELSIF k.expires_at IS NULL OR k.expires_at > now() THEN
            RETURN id;
        ELSIF k.rotated_to IS NULL THEN
            RETURN NULL;
        END IF;
        id := k.rotated_to;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.invitation_key(uuid, uuid) IS 'Internal: the live key an invitation made by a key rests on: the key while neither revoked nor expired, else (expired after a rotation, not revoked) its successor along the rotations; NULL for a revoked, expired or deleted one (0069). Not granted.';

/**
 * Whether an invitation's maker could still make it (0069). `stands`: it
 * rests on no member or key (the operator's, the CLI's, a team's library
 * context holding every permission), or its maker is still an active member
 * of the tenant, or a key of it neither revoked nor expired (or, expired
 * after a rotation, its successor: invitation_key), holding members.invite
 * and every permission of the invited role. `holds_all`: the maker still
 * holds every permission, which alone lets an invitation make its person
 * the owner (0060). The key or the membership first, the permissions after
 * in statements of their own: on Citus a query of api_keys or
 * tenant_members is pushed to a shard, where the permission lookups could
 * not read the roles. Runs as its caller (accept_invitation, as the owner).
 * Not granted.
 */
CREATE OR REPLACE FUNCTION tenantry.invitation_standing(
    tid uuid, by_user uuid, by_key uuid, invited_role uuid, OUT stands boolean, OUT holds_all boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k record;
    live_key uuid;
    -- NULL: every permission, present and future.
    grants text[];
BEGIN
    IF by_key IS NOT NULL THEN
        live_key := tenantry.invitation_key(tid, by_key);
        SELECT a.user_id, a.role_id, a.scopes INTO k
        FROM tenantry.api_keys a
        WHERE a.tenant_id = tid AND a.key_id = live_key;
        IF NOT FOUND THEN
            stands := false;
            holds_all := false;
            RETURN;
        END IF;
        grants := tenantry.identity_permission_names(tid, k.user_id, k.role_id, k.scopes);
    ELSIF by_user IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM tenantry.tenant_members m
                       WHERE m.tenant_id = tid AND m.user_id = by_user AND NOT m.pending) THEN
            stands := false;
            holds_all := false;
            RETURN;
        END IF;
        grants := tenantry.member_grants(tid, by_user);
    END IF;
    holds_all := grants IS NULL
        OR NOT EXISTS (SELECT 1 FROM tenantry.permissions p WHERE NOT p.name = ANY (grants));
    stands := holds_all
        OR ('members.invite' = ANY (grants)
            AND NOT EXISTS (SELECT 1 FROM tenantry.role_permissions rp
                            JOIN tenantry.permissions p ON p.permission_id = rp.permission_id
                            WHERE rp.tenant_id = tid AND rp.role_id = invited_role
                              AND NOT p.name = ANY (grants)));
END
$$;
COMMENT ON FUNCTION tenantry.invitation_standing(uuid, uuid, uuid, uuid) IS 'Internal: whether an invitation''s maker (a member or a key of the tenant, 0069) could still make it (stands: active or unrevoked and unexpired, holding members.invite and every permission of the role; always for an invitation resting on neither) and still holds every permission (holds_all, which may_own needs). Not granted.';

/**
 * Revokes the pending invitations of a tenant of the caller's subtree whose
 * maker is gone (0069): a member no longer active, a key with no live
 * successor (invitation_key). Such an invitation can no longer be accepted
 * (invitation_standing); revoking it says so in the listing, frees its
 * place among the tenant's 1000 pending ones and leaves an audit row
 * (invitation.revoked). Called by remove_member and revoke_api_key; it
 * revokes nothing that could still be accepted, so a caller holding
 * members.write, members.invite or keys.write may call it. Returns how
 * many it revoked.
 * `after_app_writes`: the caller changed the tenant's rows as an app role
 * in this transaction (remove_member runs as its caller); on a Citus
 * cluster, whose placements one transaction may not touch as two roles, it
 * then revokes nothing (the invitations stay listed pending and are refused
 * all the same).
 */
CREATE OR REPLACE FUNCTION tenantry.revoke_orphaned_invitations(tid uuid, after_app_writes boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Values, not calls in the UPDATE: Citus refuses a distributed UPDATE
    -- with a non-immutable function where a value will do.
    at timestamptz := now();
    inv record;
    orphaned uuid[] := '{}';
    revoked integer;
BEGIN
    IF tid IS NULL OR NOT tid = ANY (tenantry.visible_tenant_ids())
       OR NOT (tenantry.authorize('members.write') OR tenantry.authorize('members.invite')
               OR tenantry.authorize('keys.write'))
       OR (after_app_writes AND to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL
           AND tenantry.citus_distributed()) THEN
        RETURN 0;
    END IF;
    -- Each maker in a statement of its own (on Citus each is pushed to the
    -- tenant's shards, where invitation_key could not read the keys), as
    -- invitation_standing asks: a member no longer active, no live key.
    FOR inv IN
        SELECT i.invitation_id, i.maker_user, i.maker_key
        FROM tenantry.invitations i
        WHERE i.tenant_id = tid AND i.accepted_at IS NULL AND i.revoked_at IS NULL AND i.expires_at > at
          AND (i.maker_user IS NOT NULL OR i.maker_key IS NOT NULL)
    LOOP
        IF (inv.maker_user IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM tenantry.tenant_members m
                            WHERE m.tenant_id = tid AND m.user_id = inv.maker_user AND NOT m.pending))
           OR (inv.maker_key IS NOT NULL AND tenantry.invitation_key(tid, inv.maker_key) IS NULL) THEN
            orphaned := orphaned || inv.invitation_id;
        END IF;
    END LOOP;
    UPDATE tenantry.invitations i SET revoked_at = at
    WHERE i.tenant_id = tid AND i.invitation_id = ANY (orphaned)
      AND i.accepted_at IS NULL AND i.revoked_at IS NULL;
    GET DIAGNOSTICS revoked = ROW_COUNT;
    RETURN revoked;
END
$$;
COMMENT ON FUNCTION tenantry.revoke_orphaned_invitations(uuid, boolean) IS 'Revokes (audited) the pending, unexpired invitations of a tenant of the caller''s subtree whose maker is gone: a member no longer active, no live key (invitation_key, 0069); they could no longer be accepted. Needs members.write, members.invite or keys.write. Called by remove_member (after_app_writes: nothing on a Citus cluster) and revoke_api_key. Returns how many.';
GRANT EXECUTE ON FUNCTION tenantry.revoke_orphaned_invitations(uuid, boolean) TO tenantry_app;

/**
 * Accepts an invitation as the signed-in person (a user context: the user is
 * the context's, proven by the server). The person becomes a member (the
 * first member of a tenant owns it) with the invitation's role; an existing
 * member just gains the role. `email` is the person's verified email (from
 * their token), required when the invitation names one, and the member's
 * email otherwise. An unknown, expired, revoked, already accepted or
 * someone else's invitation (other user id, other email), one whose maker
 * could no longer make it (0069), or a token for a tenant that is not
 * active, is refused with one answer: TN404. Returns the tenant.
 */
CREATE OR REPLACE FUNCTION tenantry.accept_invitation(token text, email text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid uuid := tenantry.current_user_id();
    tid uuid;
    iid uuid;
    inv record;
    clean_email text := tenantry.clean_name(email, 'email');
    known_email text;
    inserted bigint;
    has_owner boolean;
    was_owner boolean;
    standing record;
BEGIN
    IF uid IS NULL OR tenantry.current_tenant_id() IS NOT NULL THEN
        RAISE EXCEPTION 'accepting an invitation needs a signed-in person' USING ERRCODE = 'TN403';
    END IF;
    IF token IS NULL OR token !~ '^tinv_[0-9a-f]{128}$' THEN
        RAISE EXCEPTION 'invitation not found or no longer valid' USING ERRCODE = 'TN404', HINT = 'token';
    END IF;
    tid := substr(token, 6, 32)::uuid;
    iid := substr(token, 38, 32)::uuid;
    SELECT i.*, t.status AS tenant_status INTO inv
    FROM tenantry.invitations i JOIN tenantry.tenants t ON t.tenant_id = i.tenant_id
    WHERE i.tenant_id = tid AND i.invitation_id = iid
    FOR UPDATE OF i;
    -- The person who accepted it, accepting again (a retry whose answer was
    -- lost): the same answer, nothing written. Anyone else, or a person
    -- removed since, is refused below like any used invitation.
    IF FOUND AND tenantry.row_token_matches(inv.token_hash, token)
       AND inv.accepted_at IS NOT NULL AND inv.accepted_by = uid
       AND inv.tenant_status = 'active'
       AND EXISTS (SELECT 1 FROM tenantry.tenant_members m
                   WHERE m.tenant_id = tid AND m.user_id = uid AND NOT m.pending) THEN
        RETURN tid;
    END IF;
    IF NOT FOUND
       OR NOT tenantry.row_token_matches(inv.token_hash, token)
       OR inv.accepted_at IS NOT NULL OR inv.revoked_at IS NOT NULL OR inv.expires_at <= now()
       OR inv.tenant_status <> 'active'
       OR (inv.user_id IS NOT NULL AND inv.user_id <> uid)
       OR (inv.email IS NOT NULL AND (clean_email IS NULL
           OR lower(inv.email COLLATE "und-x-icu") <> lower(clean_email COLLATE "und-x-icu"))) THEN
        RAISE EXCEPTION 'invitation not found or no longer valid' USING ERRCODE = 'TN404', HINT = 'token';
    END IF;
    -- Its maker could no longer make it (0069: a member removed or holding
    -- less since, a key revoked or expired): refused like a revoked one.
    SELECT s.stands, s.holds_all INTO standing
    FROM tenantry.invitation_standing(tid, inv.maker_user, inv.maker_key, inv.role_id) s;
    IF NOT standing.stands THEN
        RAISE EXCEPTION 'invitation not found or no longer valid' USING ERRCODE = 'TN404', HINT = 'token';
    END IF;
    -- A person the tenant added already (pending) has an email on record:
    -- their token need not carry one (an access token often does not).
    -- (An invitation naming an email was refused above without a matching
    -- one.)
    known_email := coalesce(clean_email,
                            (SELECT m.email FROM tenantry.tenant_members m WHERE m.tenant_id = tid AND m.user_id = uid));
    IF known_email IS NULL THEN
        RAISE EXCEPTION 'accepting this invitation needs your email' USING ERRCODE = 'TN422', HINT = 'email';
    END IF;
    was_owner := EXISTS (SELECT 1 FROM tenantry.tenant_members m
                         WHERE m.tenant_id = tid AND m.user_id = uid AND m.is_owner);
    INSERT INTO tenantry.tenant_members (tenant_id, user_id, email)
    VALUES (tid, uid, known_email)
    ON CONFLICT (tenant_id, user_id) DO NOTHING;
    -- The email on record was the pending member's, removed meanwhile: a
    -- new member may not take an email nobody verified.
    GET DIAGNOSTICS inserted = ROW_COUNT;
    IF inserted > 0 AND clean_email IS NULL THEN
        RAISE EXCEPTION 'accepting this invitation needs your email' USING ERRCODE = 'TN422', HINT = 'email';
    END IF;
    -- Added by the tenant with this person's id (pending): accepting is their
    -- consent, and makes them the owner when the tenant has none. The
    -- insert above already holds the tenant's row (tenant_members_owner, a
    -- BEFORE INSERT trigger, fires before the conflict is found), which
    -- serialises owner checks; locking it again from here deadlocked on
    -- Citus with the lock the trigger took on a worker. The check is its own
    -- statement (no subquery in SET, which Citus refuses on a distributed
    -- table).
    IF EXISTS (SELECT 1 FROM tenantry.tenant_members m WHERE m.tenant_id = tid AND m.user_id = uid AND m.pending) THEN
        has_owner := EXISTS (SELECT 1 FROM tenantry.tenant_members o WHERE o.tenant_id = tid AND o.is_owner);
        -- The email the person verified becomes the member's (the tenant
        -- only guessed one when it added them: found by an outside review).
        UPDATE tenantry.tenant_members m
        SET pending = false, is_owner = NOT has_owner, email = coalesce(clean_email, m.email)
        WHERE m.tenant_id = tid AND m.user_id = uid;
    END IF;
    -- Joining made this person the owner (the tenant had none): only an
    -- invitation from a caller holding every permission, then and still
    -- (may_own, 0069), gives that; another, made while the tenant had an
    -- owner who left since, waits for an owner (the operator's transfer).
    IF NOT (inv.may_own AND standing.holds_all) AND NOT was_owner
       AND EXISTS (SELECT 1 FROM tenantry.tenant_members m
                   WHERE m.tenant_id = tid AND m.user_id = uid AND m.is_owner) THEN
        RAISE EXCEPTION 'tenant % has no owner: this invitation cannot make you its owner; ask its operator', tid
            USING ERRCODE = 'TN409', HINT = 'token';
    END IF;
    IF inv.role_id IS NOT NULL THEN
        INSERT INTO tenantry.member_roles (tenant_id, user_id, role_id) VALUES (tid, uid, inv.role_id)
        ON CONFLICT DO NOTHING;
    END IF;
    UPDATE tenantry.invitations i SET accepted_at = now(), accepted_by = uid
    WHERE i.tenant_id = tid AND i.invitation_id = iid;
    RETURN tid;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'another member of the tenant already has this email' USING ERRCODE = 'TN409', HINT = 'email';
END
$$;
COMMENT ON FUNCTION tenantry.accept_invitation(text, text) IS 'In a user context: accepts an invitation (one time), making the signed-in person a member with its role (a pending membership the tenant added with their id becomes theirs, with the email they verified, and its owner when the tenant has none); TN404 alike for unknown, expired, revoked, reused or someone else''s invitations and those whose maker could no longer make them (0069); the person who accepted it gets the same answer again while a member (a retry), nothing written. Returns the tenant.';
GRANT EXECUTE ON FUNCTION tenantry.accept_invitation(text, text) TO tenantry_app;

/**
 * Audits invitations created, revoked and accepted (never their tokens), and
 * a pending one deleted: deleting a role deletes the invitations that would
 * have given it (the foreign key cascades), which until then could be
 * accepted, so it is recorded as revoked with the reason (an audit review
 * found no row). A purge deletes with row triggers off.
 */
CREATE OR REPLACE FUNCTION tenantry.invitations_audit()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.accepted_at IS NULL AND OLD.revoked_at IS NULL AND OLD.expires_at > now() THEN
            PERFORM tenantry.write_audit(OLD.tenant_id, 'invitation.revoked', 'invitation', OLD.invitation_id::text,
                jsonb_build_object('email', OLD.email, 'user_id', OLD.user_id, 'role_id', OLD.role_id,
                                   'expires_at', OLD.expires_at, 'reason', 'role deleted', 'deleted', true));
        END IF;
        RETURN NULL;
    END IF;
    PERFORM tenantry.write_audit(NEW.tenant_id,
        CASE WHEN TG_OP = 'INSERT' THEN 'invitation.created'
             WHEN NEW.accepted_at IS NOT NULL AND OLD.accepted_at IS NULL THEN 'invitation.accepted'
             ELSE 'invitation.revoked' END,
        'invitation', NEW.invitation_id::text,
        jsonb_build_object('email', NEW.email, 'user_id', coalesce(NEW.accepted_by, NEW.user_id),
                           'role_id', NEW.role_id, 'expires_at', NEW.expires_at));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.invitations_audit() IS 'Trigger: audits invitations created, accepted and revoked, and a pending one deleted with its role (invitation.revoked with reason and deleted = true).';
CREATE OR REPLACE TRIGGER invitations_audit AFTER INSERT OR UPDATE OF accepted_at, revoked_at OR DELETE ON tenantry.invitations
    FOR EACH ROW EXECUTE FUNCTION tenantry.invitations_audit();

-- -----------------------------------------------------------------------------
-- Impersonation: an owner (or the operator) acts as a member for a bounded
-- time. The session's context names both (current_user_id() the member,
-- current_impersonator() who acts), so audit rows and request-log rows record
-- both. It holds the member's permissions minus every one that could widen
-- anyone's: no keys, no invitations, no role or member changes, and it cannot
-- impersonate further (impersonate needs every permission and no impersonator).
-- -----------------------------------------------------------------------------

CREATE POLICY impersonations_read_subtree ON tenantry.impersonations
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY impersonations_read_subtree ON tenantry.impersonations IS 'A tenant (and its ancestors) lists the impersonations of its members (never their token hashes: column privileges); only the impersonation functions write them.';
GRANT SELECT (tenant_id, impersonation_id, user_id, impersonator, reason, started_at, expires_at, ended_at)
    ON tenantry.impersonations TO tenantry_app;

/** What an impersonated session of a member holds: their grants (every permission for the owner) minus those that widen anyone's. */
CREATE OR REPLACE FUNCTION tenantry.impersonation_grants(tid uuid, uid uuid)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(SELECT g FROM unnest(coalesce(tenantry.member_grants(tid, uid),
                                               ARRAY(SELECT p.name FROM tenantry.permissions p))) g
                 WHERE g <> ALL (ARRAY['keys.write', 'members.write', 'members.invite', 'roles.write'])
                 ORDER BY g)
$$;
COMMENT ON FUNCTION tenantry.impersonation_grants(uuid, uuid) IS 'Internal: the grants of an impersonated member: theirs (all for the owner) without keys.write, members.write, members.invite and roles.write. Not granted.';

/** Checks who may impersonate `uid` in `tid`; returns the impersonator label. */
CREATE OR REPLACE FUNCTION tenantry.check_impersonation(tid uuid, uid uuid, valid_for interval, reason text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    status text;
BEGIN
    IF tenantry.current_impersonator() IS NOT NULL THEN
        RAISE EXCEPTION 'an impersonated session cannot impersonate' USING ERRCODE = 'TN403';
    END IF;
    IF NOT (tenantry.authorize_all() AND tid = ANY (tenantry.visible_tenant_ids())) AND NOT tenantry.operator_session() THEN
        RAISE EXCEPTION 'only a caller holding every permission in the tenant or an ancestor (its owner, an API key without restrictions) or an operator can impersonate its members'
            USING ERRCODE = 'TN403';
    END IF;
    IF valid_for IS NULL OR valid_for < interval '1 minute' OR valid_for > interval '8 hours' THEN
        RAISE EXCEPTION 'an impersonation lasts 1 minute to 8 hours' USING ERRCODE = 'TN422', HINT = 'valid_for';
    END IF;
    IF length(coalesce(reason, '')) > 500 THEN
        RAISE EXCEPTION 'reason must be at most 500 characters' USING ERRCODE = 'TN422', HINT = 'reason';
    END IF;
    -- Read by operators in a terminal (`tenantry impersonate list`) and the
    -- console: no escape sequences or bidirectional overrides (a review of
    -- hostile input rewrote an operator's terminal row with one). Only the
    -- owner writes the table, through here.
    IF tenantry.invisible_text(reason, true) THEN
        RAISE EXCEPTION 'reason must not contain control or invisible characters (escape sequences, bidirectional overrides, zero-width characters)'
            USING ERRCODE = 'TN422', HINT = 'reason';
    END IF;
    -- The caller sees this tenant (checked above): a tenant that is not
    -- active is named as such, not taken for a missing member.
    SELECT t.status INTO status FROM tenantry.tenants t WHERE t.tenant_id = tid;
    IF status IS DISTINCT FROM 'active' AND status IS NOT NULL THEN
        RAISE EXCEPTION 'tenant % is %: its members cannot be impersonated', tid, status
            USING ERRCODE = 'TN409', HINT = 'tenant_id';
    END IF;
    -- Not a pending member (0037): nobody acts as a person who has not joined.
    IF NOT EXISTS (SELECT 1 FROM tenantry.tenant_members m JOIN tenantry.tenants t ON t.tenant_id = m.tenant_id
                   WHERE m.tenant_id = tid AND m.user_id = uid AND NOT m.pending AND t.status = 'active') THEN
        RAISE EXCEPTION 'member % not found', uid USING ERRCODE = 'TN404', HINT = 'user_id';
    END IF;
    -- At most 100 live sessions per tenant (through the partial index of
    -- 0052): without a limit a red-team review started 99,414 in 2.5
    -- minutes, 75 MB a minute of sessions and audit rows.
    IF (SELECT count(*) FROM tenantry.impersonations i
        WHERE i.tenant_id = tid AND i.ended_at IS NULL AND i.expires_at > now()) >= 100 THEN
        RAISE EXCEPTION 'tenant % has 100 live impersonation sessions', tid
            USING ERRCODE = 'TN429', HINT = 'end some first (DELETE /v1/impersonations/{id}, or tenantry.end_impersonation)';
    END IF;
    RETURN CASE WHEN tenantry.current_tenant_id() IS NULL THEN 'db:' || session_user ELSE tenantry.current_actor() END;
END
$$;
COMMENT ON FUNCTION tenantry.check_impersonation(uuid, uuid, interval, text) IS 'Internal: TN403 unless the caller holds every permission in the member''s tenant or an ancestor (or is an operator) and is not impersonating; TN422 for a duration outside 1 minute to 8 hours; TN409 when the tenant is suspended or deleted; TN404 for a non-member; TN429 when the tenant holds 100 live sessions. Returns who impersonates. Not granted.';

/**
 * Starts an impersonation for the server: the caller (the owner of the
 * tenant or of an ancestor, a key holding every permission, the operator's
 * admin token through its tenant scope) gets a session token (timp_…, shown
 * once, stored hashed) with which requests act as the member until it
 * expires (1 minute to 8 hours, default 1 hour) or is ended.
 */
CREATE OR REPLACE FUNCTION tenantry.start_impersonation(
    user_id uuid, tenant_id uuid DEFAULT NULL, valid_for interval DEFAULT interval '1 hour', reason text DEFAULT '',
    OUT impersonation_id uuid, OUT token text, OUT expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid := coalesce(start_impersonation.tenant_id, tenantry.current_tenant_id());
    who text := tenantry.check_impersonation(tid, start_impersonation.user_id, valid_for, reason);
    reach record := tenantry.acting_key_reach();
    by_tenant uuid := tenantry.current_tenant_id();
    by_user uuid;
    by_key uuid;
BEGIN
    -- A key's limits hold for the session it starts (found by a review: a
    -- key bound to one address, expiring in ten minutes, started an
    -- eight-hour session usable from anywhere): no longer than the key,
    -- and none from a key bound to addresses (a session token has none).
    IF reach.acting AND reach.allowed_cidrs IS NOT NULL THEN
        RAISE EXCEPTION 'a key limited to addresses cannot start an impersonation: its session token would work from anywhere'
            USING ERRCODE = 'TN401';
    END IF;
    -- The standing the session rests on (0053), which verify_impersonation
    -- asks about at every use: the key that started it, and the person who
    -- owned the tenant whose context started it (found by a review: an owner
    -- removed, or a key revoked, at an offboarding kept their sessions).
    IF by_tenant IS NOT NULL THEN
        IF reach.acting THEN
            SELECT k.key_id INTO by_key FROM tenantry.api_keys k
            WHERE k.tenant_id = by_tenant AND k.key_id = substr(tenantry.current_actor(), 5)::uuid;
        END IF;
        SELECT m.user_id INTO by_user FROM tenantry.tenant_members m
        WHERE m.tenant_id = by_tenant AND m.user_id = tenantry.current_user_id() AND m.is_owner;
        IF by_key IS NULL AND by_user IS NULL THEN
            by_tenant := NULL;
        END IF;
    END IF;
    impersonation_id := gen_random_uuid();
    token := tenantry.row_token('timp_', tid, impersonation_id);
    expires_at := least(now() + valid_for, CASE WHEN reach.acting THEN reach.expires_at END);
    INSERT INTO tenantry.impersonations (tenant_id, impersonation_id, user_id, impersonator, reason, token_hash, expires_at,
                                         impersonator_tenant, impersonator_user, impersonator_key)
    VALUES (tid, impersonation_id, start_impersonation.user_id, who, coalesce(reason, ''),
            sha256(convert_to(token, 'UTF8')), start_impersonation.expires_at, by_tenant, by_user, by_key);
END
$$;
COMMENT ON FUNCTION tenantry.start_impersonation(uuid, uuid, interval, text) IS 'Starts acting as a member of the current tenant or a descendant (owner, all-permission key or operator; not while impersonating; a key limited to addresses: TN401; a key that expires: no later than it): returns the session token once. The session holds the member''s permissions minus keys.write, members.write, members.invite, roles.write; audited.';
GRANT EXECUTE ON FUNCTION tenantry.start_impersonation(uuid, uuid, interval, text) TO tenantry_app;

/**
 * An impersonation of the current subtree, as the server returns it after
 * start_impersonation made it (never its token hash). Read as the owner that
 * wrote it: on Citus a transaction may not read, as another role, the shards
 * it changed as the owner (starting one answered 500 there: found by running
 * the people tests on a cluster). The subtree condition is the sessions'
 * read policy (impersonations_read_subtree).
 */
CREATE OR REPLACE FUNCTION tenantry.new_impersonation_info(session_id uuid)
RETURNS TABLE (impersonation_id uuid, tenant_id uuid, user_id uuid, impersonator text, reason text,
               started_at timestamptz, expires_at timestamptz, ended_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.impersonation_id, i.tenant_id, i.user_id, i.impersonator, i.reason, i.started_at, i.expires_at, i.ended_at
    FROM tenantry.impersonations i
    WHERE i.impersonation_id = session_id
      AND i.tenant_id = ANY (tenantry.visible_tenant_ids())
$$;
COMMENT ON FUNCTION tenantry.new_impersonation_info(uuid) IS 'An impersonation of the current subtree (never its token hash), read as the owner that started or ended it: what the server returns after start_impersonation and end_impersonation.';
GRANT EXECUTE ON FUNCTION tenantry.new_impersonation_info(uuid) TO tenantry_app;

/**
 * The identity behind an impersonation token, for the server before any
 * tenant is known (the token is the secret, like a key): NULL for unknown,
 * ended or expired sessions, a removed member or a tenant that is not active,
 * and once the key or the owner that started it no longer could.
 */
CREATE OR REPLACE FUNCTION tenantry.verify_impersonation(token text)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
BEGIN
    IF token IS NULL OR token !~ '^timp_[0-9a-f]{128}$' THEN
        RETURN NULL;
    END IF;
    SELECT i.*, t.status AS tenant_status, t.settings AS tenant_settings INTO s
    FROM tenantry.impersonations i
    JOIN tenantry.tenants t ON t.tenant_id = i.tenant_id
    WHERE i.tenant_id = substr(token, 6, 32)::uuid AND i.impersonation_id = substr(token, 38, 32)::uuid
      AND tenantry.row_token_matches(i.token_hash, token)
      AND i.ended_at IS NULL AND i.expires_at > now();
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- The standing it was started on (0053): the key neither revoked nor
    -- expired (a rotation's grace included), the person still the owner of
    -- a tenant that is still active and this one or an ancestor of it.
    IF s.impersonator_key IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM tenantry.api_keys k
           WHERE k.tenant_id = s.impersonator_tenant AND k.key_id = s.impersonator_key
             AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())) THEN
        RETURN NULL;
    END IF;
    IF s.impersonator_user IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM tenantry.tenant_members m
           WHERE m.tenant_id = s.impersonator_tenant AND m.user_id = s.impersonator_user AND m.is_owner) THEN
        RETURN NULL;
    END IF;
    IF s.impersonator_tenant IS NOT NULL AND s.impersonator_tenant <> s.tenant_id AND (
           NOT EXISTS (SELECT 1 FROM tenantry.tenant_hierarchy h
                       WHERE h.child_id = s.tenant_id AND h.parent_id = s.impersonator_tenant)
           OR NOT EXISTS (SELECT 1 FROM tenantry.tenants t
                          WHERE t.tenant_id = s.impersonator_tenant AND t.status = 'active')) THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object(
        'impersonation_id', s.impersonation_id, 'tenant_id', s.tenant_id, 'user_id', s.user_id,
        'impersonator', s.impersonator, 'expires_at', s.expires_at,
        'tenant_status', s.tenant_status, 'tenant_settings', s.tenant_settings,
        'permissions', to_jsonb(tenantry.impersonation_grants(s.tenant_id, s.user_id)));
END
$$;
COMMENT ON FUNCTION tenantry.verify_impersonation(text) IS 'The session behind an impersonation token (tenant, member, impersonator, expiry, the permissions it holds); NULL for unknown, ended or expired ones, and once the standing it was started on is gone (the key that started it revoked or expired; the owner who did no longer owner of that tenant, or that tenant no longer active or an ancestor). Needs no context: the token is the secret.';
GRANT EXECUTE ON FUNCTION tenantry.verify_impersonation(text) TO tenantry_app;

/** Ends an impersonation of the current tenant or a descendant (the impersonated session itself, or a caller holding every permission). Idempotent. */
CREATE OR REPLACE FUNCTION tenantry.end_impersonation(impersonation_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Values, not calls in the UPDATE (Citus, as in revoke_invitation).
    at timestamptz := now();
    visible uuid[] := tenantry.visible_tenant_ids();
    who text := tenantry.current_impersonator();
    uid uuid := tenantry.current_user_id();
BEGIN
    IF tenantry.current_tenant_id() IS NULL
       OR NOT (tenantry.authorize_all() OR who IS NOT NULL) THEN
        RAISE EXCEPTION 'ending an impersonation needs every permission or the impersonated session' USING ERRCODE = 'TN403';
    END IF;
    -- An impersonated session ends its own impersonator's sessions of its
    -- member, never another's: it ended the operator's session of the same
    -- member, or another support agent's (found by a red-team review).
    UPDATE tenantry.impersonations i SET ended_at = coalesce(i.ended_at, at)
    WHERE i.impersonation_id = end_impersonation.impersonation_id
      AND i.tenant_id = ANY (visible)
      AND (who IS NULL OR (i.user_id = uid AND i.impersonator = who));
    IF NOT FOUND THEN
        RAISE EXCEPTION 'impersonation % not found', impersonation_id USING ERRCODE = 'TN404', HINT = 'impersonation_id';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.end_impersonation(uuid) IS 'Ends an impersonation at once (its token stops working): by a caller holding every permission in the tenant or an ancestor, or by an impersonated session of the same member and impersonator (itself, or that impersonator''s other sessions of the member). TN404 otherwise, like a missing one.';
GRANT EXECUTE ON FUNCTION tenantry.end_impersonation(uuid) TO tenantry_app;

/**
 * KeyHippo's login_as_user, for an operator in psql: this transaction acts as
 * the member (their permissions minus those that widen anyone's), recorded
 * as an impersonation by db:<login>; stop_impersonating() ends it (so does
 * the end of the transaction). Returns the impersonation id.
 */
CREATE OR REPLACE FUNCTION tenantry.impersonate(user_id uuid, tenant_id uuid, valid_for interval DEFAULT interval '1 hour', reason text DEFAULT '')
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who text;
    iid uuid := gen_random_uuid();
BEGIN
    PERFORM tenantry.require_operator('impersonate');
    who := tenantry.check_impersonation(impersonate.tenant_id, impersonate.user_id, valid_for, reason);
    INSERT INTO tenantry.impersonations (tenant_id, impersonation_id, user_id, impersonator, reason, token_hash, expires_at)
    VALUES (impersonate.tenant_id, iid, impersonate.user_id, who, coalesce(reason, ''),
            sha256(convert_to(gen_random_uuid()::text, 'UTF8')), now() + valid_for);
    PERFORM set_config('backtrace_functions',
                       tenantry.context_value(impersonate.tenant_id, impersonate.user_id, 'user:' || impersonate.user_id,
                                              tenantry.impersonation_grants(impersonate.tenant_id, impersonate.user_id),
                                              who, NULL),
                       true);
    RETURN iid;
END
$$;
COMMENT ON FUNCTION tenantry.impersonate(uuid, uuid, interval, text) IS 'KeyHippo login_as_user for operators in psql (superuser or member of tenantry_owner): this transaction acts as the member (minus keys.write, members.write, members.invite, roles.write), audited with the operator as impersonator. Returns the impersonation id; stop_impersonating() ends it.';
GRANT EXECUTE ON FUNCTION tenantry.impersonate(uuid, uuid, interval, text) TO tenantry_app;

/** KeyHippo's logout: ends the impersonation this transaction acts under and clears its context. */
CREATE OR REPLACE FUNCTION tenantry.stop_impersonating()
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid := tenantry.current_tenant_id();
    uid uuid := tenantry.current_user_id();
    who text := tenantry.current_impersonator();
BEGIN
    IF who IS NULL THEN
        RAISE EXCEPTION 'this transaction is not impersonating anyone' USING ERRCODE = 'TN409';
    END IF;
    UPDATE tenantry.impersonations i SET ended_at = now()
    WHERE i.tenant_id = tid AND i.user_id = uid
      AND i.impersonator = who AND i.ended_at IS NULL;
    PERFORM set_config('backtrace_functions', '', true);
END
$$;
COMMENT ON FUNCTION tenantry.stop_impersonating() IS 'KeyHippo logout: ends the impersonation this transaction acts under (its open sessions by the same impersonator for the member) and clears the context.';
GRANT EXECUTE ON FUNCTION tenantry.stop_impersonating() TO tenantry_app;

/** Audits impersonations started and ended. */
CREATE OR REPLACE FUNCTION tenantry.impersonations_audit()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- Removing the member removes its sessions (the foreign key
        -- cascades): one still open ends here, and says so.
        IF OLD.ended_at IS NULL AND OLD.expires_at > now() THEN
            PERFORM tenantry.write_audit(OLD.tenant_id, 'impersonation.ended', 'member', OLD.user_id::text,
                jsonb_build_object('impersonation_id', OLD.impersonation_id, 'impersonator', OLD.impersonator,
                                   'reason', OLD.reason, 'expires_at', OLD.expires_at, 'ended_by', 'member removed'));
        END IF;
        RETURN NULL;
    END IF;
    -- Ending an ended session again changes nothing and records nothing.
    IF TG_OP = 'UPDATE' AND OLD.ended_at IS NOT NULL THEN
        RETURN NULL;
    END IF;
    PERFORM tenantry.write_audit(NEW.tenant_id,
        CASE WHEN TG_OP = 'INSERT' THEN 'impersonation.started' ELSE 'impersonation.ended' END,
        'member', NEW.user_id::text,
        jsonb_build_object('impersonation_id', NEW.impersonation_id, 'impersonator', NEW.impersonator,
                           'reason', NEW.reason, 'expires_at', NEW.expires_at));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.impersonations_audit() IS 'Trigger: audits impersonations started and ended (who, as whom, why, until when), once each: ending an ended one records nothing; a session still open when its member is removed (the rows cascade) is audited as ended.';
CREATE OR REPLACE TRIGGER impersonations_audit AFTER INSERT OR UPDATE OF ended_at OR DELETE ON tenantry.impersonations
    FOR EACH ROW EXECUTE FUNCTION tenantry.impersonations_audit();
