-- =============================================================================
-- Invalidation of the servers' caches through the database.
--
-- Every `tenantry serve` process keeps verified keys (and, later, tenant
-- contexts) in memory. When something they were built from changes, the
-- triggers below send a notification on channel `tenantry_invalidate`; every
-- server LISTENs on a dedicated connection (crates/tenantry-db/src/
-- invalidation.rs) and drops what it names. NOTIFY is transactional: the
-- notification leaves at commit, never for a rolled-back change, and after the
-- change is visible to every new snapshot.
--
-- Payloads: `key:<tag>`, `tenant:<tag>` or `all`. A tag is the first 16 bytes
-- (32 hex digits) of the SHA-256 of the id's 16 bytes, never the id itself:
-- LISTEN cannot be revoked (08_shared_state.sql), so any session may listen,
-- and a plain id would hand every tenant the ids of other tenants and of their
-- keys. A tag names nothing to whoever does not already know the id; the
-- server, which does, computes the same tag (`InvalidationTag` in Rust).
--
-- What notifies (and what does not, on purpose):
--   api_keys          revocation, expiry (a rotation's end is its expiry),
--                     rotation, binding, metadata or hash changed, deletion:
--                     `key:`. Not creation (nobody has cached a new key) and
--                     not `last_used_at` (written by verification itself).
--   tenants           status, settings, parent or isolation changed:
--                     `tenant:` for the tenant; for status, parent and
--                     isolation also for every ancestor (a deleted or moved
--                     tenant leaves or enters their visible subtree); for a
--                     move also for every descendant. A child's creation
--                     (or import, import_tenant): `tenant:` for every ancestor, whose
--                     visible subtree gained it. Not a root tenant's
--                     creation: nobody has cached anything of a new tenant,
--                     and a trigger called on every creation cost 7% of
--                     creating one (the WHEN clause skips roots uncalled).
--   tenant_hierarchy  closure rows removed (a subtree moved away): `tenant:`
--                     for both ends, so the old ancestors learn it. Rows
--                     added notify nothing here: only a creation or a
--                     move adds them, and the tenants triggers name the
--                     new ancestors.
--   role_permissions, member_roles
--                     any row written: `tenant:` of its tenant (keys of the
--                     tenant may hold other permissions now).
--   permissions       any change: `all` (owner keys hold every permission).
--   TRUNCATE of any of these tables: `all`.
--
-- Cost: a notifying transaction takes PostgreSQL's notification-queue lock at
-- commit, which serialises the commits of notifying transactions (not of
-- others). Only the changes above notify: administrative ones, a tenant's
-- own keys, roles and members (bounded by its rate_limit_per_second, which
-- has no default), and its children, whose creation its
-- child_creation_rate_per_second bounds (10 a second by default); reads,
-- resource writes, key verification and the creation of root tenants never
-- do. SQL on a tenant role can NOTIFY at will (the statement cannot be
-- taken from a role): docs/security.md, "Availability through the SQL door".
--
-- The trigger functions are SECURITY DEFINER (owned by tenantry_owner, search
-- path pinned) so that a later hardening that takes pg_notify from PUBLIC does
-- not break the writes of the tenant roles; none is granted to anyone.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

/** The tag of an id in a notification payload: a prefix, a colon, 32 hex digits. */
CREATE OR REPLACE FUNCTION tenantry.invalidation_payload(kind text, id uuid)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT kind || ':' || left(encode(sha256(uuid_send(id)), 'hex'), 32)
$$;
COMMENT ON FUNCTION tenantry.invalidation_payload(text, uuid) IS 'Internal: the payload `<kind>:<tag>` naming a key or tenant on channel tenantry_invalidate; the tag is the first 16 bytes of SHA-256 of the uuid''s bytes, so listeners learn no id they did not know. Not granted.';

/**
 * Whether this backend runs on a Citus worker node (a shard's trigger fires
 * there): false without Citus and on the coordinator.
 */
CREATE OR REPLACE FUNCTION tenantry.on_citus_worker()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    node_group integer;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_local_group') IS NULL THEN
        RETURN false;
    END IF;
    -- Dynamic: the table exists only where Citus is installed.
    EXECUTE 'SELECT groupid FROM pg_catalog.pg_dist_local_group' INTO node_group;
    RETURN coalesce(node_group, 0) <> 0;
END
$$;
COMMENT ON FUNCTION tenantry.on_citus_worker() IS 'Internal: true on a Citus worker node (where shards'' triggers fire), false on the coordinator and without Citus. Not granted.';

/**
 * The time a write of this transaction records (updated_at): now(), except
 * on Citus, where a reference table's row is written on every node and each
 * node's now() is its own transaction's start. There it is the stamp of the
 * distributed transaction id, which the coordinator and its worker
 * transactions share, so every copy records the same time.
 */
CREATE OR REPLACE FUNCTION tenantry.write_time()
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stamp timestamptz;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_local_group') IS NULL THEN
        RETURN now();
    END IF;
    -- Dynamic: the function exists only where Citus is installed.
    EXECUTE 'SELECT transaction_stamp FROM pg_catalog.get_current_transaction_id() WHERE transaction_number <> 0'
        INTO stamp;
    RETURN coalesce(stamp, now());
END
$$;
COMMENT ON FUNCTION tenantry.write_time() IS 'Internal: now(), or on Citus the stamp of the distributed transaction (the same on every node), for times written into every copy of a reference table. Not granted.';

/**
 * Whether the cluster's notification queue is more than half full. NOTIFY
 * and LISTEN belong to every role: a session that listens and never reads
 * (a long query) holds the queue's tail while any session fills it, and
 * once it is full every notifying commit fails ("too many notifications in
 * the NOTIFY queue"), a tenant's key revocation and an operator's suspension
 * among them (found by a DBA's review). Past half, tenantry's changes commit
 * without notifying: servers then learn them within their caches' time to
 * live (one second for keys by default), as on a Citus worker; PostgreSQL
 * logs which backend holds the queue back.
 */
CREATE OR REPLACE FUNCTION tenantry.notify_queue_filling()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    queue_used double precision := pg_notification_queue_usage();
BEGIN
    IF queue_used > 0.5 THEN
        RAISE LOG 'tenantry: the notification queue is % %% full; a change commits without notifying tenantry_invalidate (servers learn it within their cache lifetime)',
            round((queue_used * 100)::numeric, 1);
        RETURN true;
    END IF;
    RETURN false;
END
$$;
COMMENT ON FUNCTION tenantry.notify_queue_filling() IS 'Internal: whether the notification queue is more than half full, in which case tenantry''s changes commit without notifying (a listener that never reads, with NOTIFY open to every role, would otherwise make every notifying commit fail once it is full: revocations, suspensions); logged. Not granted.';
REVOKE EXECUTE ON FUNCTION tenantry.notify_queue_filling() FROM PUBLIC;

/**
 * Sends one payload on tenantry_invalidate, except on a Citus worker: a
 * notification there reaches no server (they listen on the coordinator) and
 * Citus cannot PREPARE a transaction that notified. On Citus, only the
 * coordinator's copies of the reference tables (tenants, the hierarchy, the
 * permission catalogue) notify; servers fall back to their short cache
 * lifetime for keys and roles (docs/scale-out.md).
 */
CREATE OR REPLACE FUNCTION tenantry.notify_invalidation(payload text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT tenantry.on_citus_worker() AND NOT tenantry.notify_queue_filling() THEN
        PERFORM pg_notify('tenantry_invalidate', payload);
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.notify_invalidation(text) IS 'Internal: pg_notify on tenantry_invalidate, skipped on a Citus worker (no server listens there; Citus cannot prepare a transaction that notified). Not granted.';

/** Sends `key:<tag>` for the key whose row changed or went. */
CREATE OR REPLACE FUNCTION tenantry.api_keys_invalidate()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.notify_invalidation(tenantry.invalidation_payload('key', OLD.key_id));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.api_keys_invalidate() IS 'Trigger: notifies tenantry_invalidate with key:<tag> when a key is revoked, expires sooner or later, is rotated, rebound or deleted. Not granted.';

CREATE OR REPLACE TRIGGER api_keys_invalidate
    AFTER UPDATE OF revoked_at, expires_at, rotated_to, user_id, role_id, metadata, description,
                    key_hash, prefix, tenant_id, key_id
    ON tenantry.api_keys
    FOR EACH ROW
    WHEN ((OLD.revoked_at, OLD.expires_at, OLD.rotated_to, OLD.user_id, OLD.role_id, OLD.metadata,
           OLD.description, OLD.key_hash, OLD.prefix, OLD.tenant_id, OLD.key_id)
          IS DISTINCT FROM
          (NEW.revoked_at, NEW.expires_at, NEW.rotated_to, NEW.user_id, NEW.role_id, NEW.metadata,
           NEW.description, NEW.key_hash, NEW.prefix, NEW.tenant_id, NEW.key_id))
    EXECUTE FUNCTION tenantry.api_keys_invalidate();
COMMENT ON TRIGGER api_keys_invalidate ON tenantry.api_keys IS 'Servers drop a cached key when anything of it but last_used_at changes (the WHEN keeps verification''s own last-use writes silent).';

CREATE OR REPLACE TRIGGER api_keys_invalidate_deleted
    AFTER DELETE ON tenantry.api_keys
    FOR EACH ROW EXECUTE FUNCTION tenantry.api_keys_invalidate();
COMMENT ON TRIGGER api_keys_invalidate_deleted ON tenantry.api_keys IS 'Servers drop a cached key whose row is deleted.';

/** Sends `tenant:<tag>` for a changed tenant, for its ancestors when its status, parent or isolation changed, and for its descendants when it moved. */
CREATE OR REPLACE FUNCTION tenantry.tenants_invalidate()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.notify_invalidation(tenantry.invalidation_payload('tenant', NEW.tenant_id));
    -- The closure rows are current here (tenants_after_write ran first).
    IF (OLD.status, OLD.parent_id, OLD.isolation) IS DISTINCT FROM (NEW.status, NEW.parent_id, NEW.isolation) THEN
        -- Ancestors (after a move, the new ones) see the tenant in their
        -- subtree, a deleted one they do not.
        PERFORM tenantry.notify_invalidation(tenantry.invalidation_payload('tenant', h.parent_id))
        FROM tenantry.tenant_hierarchy h
        WHERE h.child_id = NEW.tenant_id AND h.depth > 0;
    END IF;
    IF OLD.parent_id IS DISTINCT FROM NEW.parent_id THEN
        -- Descendants have other ancestors now. (The old ancestors: the
        -- closure rows the move removed, tenant_hierarchy_invalidate_removed.)
        PERFORM tenantry.notify_invalidation(tenantry.invalidation_payload('tenant', h.child_id))
        FROM tenantry.tenant_hierarchy h
        WHERE h.parent_id = NEW.tenant_id AND h.depth > 0;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenants_invalidate() IS 'Trigger: notifies tenantry_invalidate with tenant:<tag> for a tenant whose status, settings, parent, isolation or tier move changed, for its ancestors when its status, parent or isolation did, and for its descendants when it moved. Not granted.';

CREATE OR REPLACE TRIGGER tenants_invalidate
    AFTER UPDATE OF status, settings, parent_id, isolation, moving_to ON tenantry.tenants
    FOR EACH ROW
    WHEN ((OLD.status, OLD.settings, OLD.parent_id, OLD.isolation, OLD.moving_to)
          IS DISTINCT FROM (NEW.status, NEW.settings, NEW.parent_id, NEW.isolation, NEW.moving_to))
    EXECUTE FUNCTION tenantry.tenants_invalidate();
COMMENT ON TRIGGER tenants_invalidate ON tenantry.tenants IS 'Servers drop what they cached of a tenant (its keys, its context) when its status, settings, parent, isolation or tier move (moving back, its context reads both tables) change; fires after tenants_after_write (name order), so the closure is already updated.';

/**
 * Sends `tenant:<tag>` for every ancestor of tenant `tid` (their visible
 * subtree holds it): a new child's creation and an import under a parent,
 * which runs with row triggers off. Nothing on a Citus worker, where no
 * server listens (the closure is not read there either).
 */
CREATE OR REPLACE FUNCTION tenantry.notify_ancestors(tid uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tenantry.on_citus_worker() OR tenantry.notify_queue_filling() THEN
        RETURN;
    END IF;
    PERFORM pg_notify('tenantry_invalidate', tenantry.invalidation_payload('tenant', h.parent_id))
    FROM tenantry.tenant_hierarchy h
    WHERE h.child_id = tid AND h.depth > 0;
END
$$;
COMMENT ON FUNCTION tenantry.notify_ancestors(uuid) IS 'Internal: notifies tenantry_invalidate with tenant:<tag> for every ancestor of the tenant (a new child, an import under a parent); nothing on a Citus worker. Not granted.';

/**
 * Sends `tenant:<tag>` for every ancestor of a new child tenant: their
 * visible subtree gained it. A root tenant's creation notifies nobody (the
 * trigger's WHEN skips it without a call): nobody has cached anything of it.
 */
CREATE OR REPLACE FUNCTION tenantry.tenants_invalidate_created()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The closure rows are current here (tenants_after_write ran first).
    PERFORM tenantry.notify_ancestors(NEW.tenant_id);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenants_invalidate_created() IS 'Trigger: notifies tenantry_invalidate with tenant:<tag> for every ancestor of a new child tenant, whose visible subtree gained it (notify_ancestors). Not granted.';

CREATE OR REPLACE TRIGGER tenants_invalidate_created
    AFTER INSERT ON tenantry.tenants
    FOR EACH ROW
    WHEN (NEW.parent_id IS NOT NULL)
    EXECUTE FUNCTION tenantry.tenants_invalidate_created();
COMMENT ON TRIGGER tenants_invalidate_created ON tenantry.tenants IS 'Servers drop the cached context parts of a new child''s ancestors, so that they see it at once; fires after tenants_after_write (name order), so the closure is already updated. Root tenants skip it.';

/** Sends `tenant:<tag>` for both ends of every closure row a move removed. */
CREATE OR REPLACE FUNCTION tenantry.tenant_hierarchy_invalidate_removed()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.notify_invalidation(tenantry.invalidation_payload('tenant', t.id))
    FROM (SELECT parent_id AS id FROM removed UNION SELECT child_id FROM removed) t;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_hierarchy_invalidate_removed() IS 'Trigger: notifies tenantry_invalidate with tenant:<tag> for every ancestor that lost a descendant and every descendant that lost an ancestor. Not granted.';

CREATE OR REPLACE TRIGGER tenant_hierarchy_invalidate_removed
    AFTER DELETE ON tenantry.tenant_hierarchy
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.tenant_hierarchy_invalidate_removed();
COMMENT ON TRIGGER tenant_hierarchy_invalidate_removed ON tenantry.tenant_hierarchy IS 'Servers drop what they cached of the tenants on both ends of removed closure rows (a subtree moved away).';

/** Sends `tenant:<tag>` for the tenant of a written row (both tenants if an update moved it). */
CREATE OR REPLACE FUNCTION tenantry.tenant_row_invalidate()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM tenantry.notify_invalidation(tenantry.invalidation_payload('tenant', OLD.tenant_id));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM tenantry.notify_invalidation(tenantry.invalidation_payload('tenant', NEW.tenant_id));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_row_invalidate() IS 'Trigger: notifies tenantry_invalidate with tenant:<tag> for the tenant of a permission grant or role assignment that changed (identical payloads in one transaction are sent once). Not granted.';

CREATE OR REPLACE TRIGGER role_permissions_invalidate
    AFTER INSERT OR UPDATE OR DELETE ON tenantry.role_permissions
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenant_row_invalidate();
COMMENT ON TRIGGER role_permissions_invalidate ON tenantry.role_permissions IS 'Servers drop the cached keys of a tenant whose roles gained or lost a permission (deleting a role cascades here).';

CREATE OR REPLACE TRIGGER member_roles_invalidate
    AFTER INSERT OR UPDATE OR DELETE ON tenantry.member_roles
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenant_row_invalidate();
COMMENT ON TRIGGER member_roles_invalidate ON tenantry.member_roles IS 'Servers drop the cached keys of a tenant whose members gained or lost a role (deleting a member or role cascades here).';

/** Sends `all`: every server empties its caches. */
CREATE OR REPLACE FUNCTION tenantry.invalidate_all()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.notify_invalidation('all');
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.invalidate_all() IS 'Trigger: notifies tenantry_invalidate with all (a change too wide to name: the permission catalogue, a TRUNCATE). Not granted.';

CREATE OR REPLACE TRIGGER permissions_invalidate
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenantry.permissions
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.invalidate_all();
COMMENT ON TRIGGER permissions_invalidate ON tenantry.permissions IS 'Servers empty their caches when the permission catalogue changes (an unbound key holds every permission).';

CREATE OR REPLACE TRIGGER api_keys_invalidate_truncated
    AFTER TRUNCATE ON tenantry.api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.invalidate_all();
COMMENT ON TRIGGER api_keys_invalidate_truncated ON tenantry.api_keys IS 'Servers empty their caches when the keys are truncated.';

CREATE OR REPLACE TRIGGER tenants_invalidate_truncated
    AFTER TRUNCATE ON tenantry.tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.invalidate_all();
COMMENT ON TRIGGER tenants_invalidate_truncated ON tenantry.tenants IS 'Servers empty their caches when the tenants are truncated.';

CREATE OR REPLACE TRIGGER tenant_hierarchy_invalidate_truncated
    AFTER TRUNCATE ON tenantry.tenant_hierarchy
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.invalidate_all();
COMMENT ON TRIGGER tenant_hierarchy_invalidate_truncated ON tenantry.tenant_hierarchy IS 'Servers empty their caches when the closure is truncated.';

CREATE OR REPLACE TRIGGER role_permissions_invalidate_truncated
    AFTER TRUNCATE ON tenantry.role_permissions
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.invalidate_all();
COMMENT ON TRIGGER role_permissions_invalidate_truncated ON tenantry.role_permissions IS 'Servers empty their caches when every permission grant is truncated.';

CREATE OR REPLACE TRIGGER member_roles_invalidate_truncated
    AFTER TRUNCATE ON tenantry.member_roles
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.invalidate_all();
COMMENT ON TRIGGER member_roles_invalidate_truncated ON tenantry.member_roles IS 'Servers empty their caches when every role assignment is truncated.';

CREATE OR REPLACE TRIGGER tenant_members_invalidate
    AFTER INSERT OR UPDATE OF is_owner, pending OR DELETE ON tenantry.tenant_members
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenant_row_invalidate();
COMMENT ON TRIGGER tenant_members_invalidate ON tenantry.tenant_members IS 'Servers drop what they cached of a tenant''s members (a removed member''s sign-ins, an owner who handed over, a newcomer once refused) when a member joins, accepts, is removed or ownership moves.';

CREATE OR REPLACE TRIGGER tenant_members_invalidate_truncated
    AFTER TRUNCATE ON tenantry.tenant_members
    FOR EACH STATEMENT EXECUTE FUNCTION tenantry.invalidate_all();
COMMENT ON TRIGGER tenant_members_invalidate_truncated ON tenantry.tenant_members IS 'Servers empty their caches when every member is truncated.';
