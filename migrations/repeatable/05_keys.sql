-- =============================================================================
-- API keys (KeyHippo-style lifecycle). The key is shown once; only its SHA-256
-- is stored. Format: tk_<12 hex prefix>_<64 hex secret>. The prefix finds the
-- row before any tenant is known; the hash decides.
--
-- The prefix is looked up in api_key_lookup, which no tenant role can read:
-- an index of api_keys leading with the prefix would let a tenant's query on
-- a prefix scan foreign keys and EXPLAIN ANALYZE count them (issue 10,
-- finding 8). Every index of api_keys itself leads with tenant_id.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE POLICY api_keys_read_subtree ON tenantry.api_keys
    FOR SELECT TO tenantry_app
    USING (tenant_id = ANY (tenantry.visible_tenant_ids()));
COMMENT ON POLICY api_keys_read_subtree ON tenantry.api_keys IS 'A tenant lists the keys of itself and its descendants (never their hashes: column privileges).';
GRANT SELECT (tenant_id, key_id, prefix, description, metadata, user_id, role_id, created_by, created_at,
              expires_at, revoked_at, last_used_at, rotated_from, rotated_to, scopes, allowed_cidrs)
    ON tenantry.api_keys TO tenantry_app;

CREATE POLICY api_key_lookup_no_tenant_reads ON tenantry.api_key_lookup
    AS RESTRICTIVE FOR ALL TO PUBLIC
    USING (false) WITH CHECK (false);
COMMENT ON POLICY api_key_lookup_no_tenant_reads ON tenantry.api_key_lookup IS 'Nobody reads or writes the prefix directory under RLS; it is granted to no role and read only by key verification (SECURITY DEFINER, as the owner).';

/** Files a new key's prefix in api_key_lookup, the directory key verification reads. */
CREATE OR REPLACE FUNCTION tenantry.api_keys_file_prefix()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO tenantry.api_key_lookup (tenant_id, key_id, prefix) VALUES (NEW.tenant_id, NEW.key_id, NEW.prefix);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.api_keys_file_prefix() IS 'Trigger: files each new key''s prefix in api_key_lookup (keys never change prefix; deleting a key removes its entry by cascade).';
CREATE OR REPLACE TRIGGER api_keys_file_prefix AFTER INSERT ON tenantry.api_keys
    FOR EACH ROW EXECUTE FUNCTION tenantry.api_keys_file_prefix();

/**
 * Audits key creation, rotation and revocation, and a usable key deleted:
 * removing a member deletes the keys bound to it (the foreign key cascades,
 * migration 0031), and such a key, until then usable, is recorded as revoked
 * with the reason (an audit review found its last word was key.created). A
 * purge deletes with row triggers off, so its keys write nothing.
 */
CREATE OR REPLACE FUNCTION tenantry.api_keys_audit()
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
                               'user_id', NEW.user_id, 'role_id', NEW.role_id,
                               'scopes', NEW.scopes, 'allowed_cidrs', NEW.allowed_cidrs));
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.revoked_at IS NULL AND (OLD.expires_at IS NULL OR OLD.expires_at > now()) THEN
            PERFORM tenantry.write_audit(OLD.tenant_id, 'key.revoked', 'api_key', OLD.key_id::text,
                jsonb_build_object('prefix', OLD.prefix, 'user_id', OLD.user_id,
                                   'reason', CASE WHEN OLD.user_id IS NOT NULL THEN 'member removed' ELSE 'deleted' END,
                                   'deleted', true));
        END IF;
    ELSIF NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
        PERFORM tenantry.write_audit(NEW.tenant_id, 'key.revoked', 'api_key', NEW.key_id::text,
            jsonb_build_object('prefix', NEW.prefix, 'revoked_at', NEW.revoked_at));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.api_keys_audit() IS 'Trigger: audits keys created and rotated (with their scopes and allowed addresses), revoked (with when), and a key deleted while still usable, neither revoked nor expired (its member removed: key.revoked with reason and deleted = true).';
CREATE OR REPLACE TRIGGER api_keys_audit AFTER INSERT OR UPDATE OF revoked_at OR DELETE ON tenantry.api_keys
    FOR EACH ROW EXECUTE FUNCTION tenantry.api_keys_audit();

/** Inserts a key for a tenant and returns (key_id, key). Internal; callers check rights. */
CREATE OR REPLACE FUNCTION tenantry.issue_api_key(
    p_tenant_id uuid, p_description text, p_metadata jsonb, p_user_id uuid, p_role_id uuid,
    p_expires_at timestamptz, p_rotated_from uuid, p_scopes text[], p_allowed_cidrs cidr[],
    OUT key_id uuid, OUT api_key text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_prefix text := substr(replace(gen_random_uuid()::text, '-', ''), 1, 12);
BEGIN
    api_key := 'tk_' || key_prefix || '_'
        || replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '');
    INSERT INTO tenantry.api_keys (tenant_id, prefix, key_hash, description, metadata, user_id, role_id,
                                   expires_at, rotated_from, scopes, allowed_cidrs)
    VALUES (p_tenant_id, key_prefix, sha256(convert_to(api_key, 'UTF8')), coalesce(p_description, ''),
            coalesce(p_metadata, '{}'), p_user_id, p_role_id, p_expires_at, p_rotated_from, p_scopes, p_allowed_cidrs)
    RETURNING api_keys.key_id INTO issue_api_key.key_id;
EXCEPTION
    WHEN foreign_key_violation THEN
        RAISE EXCEPTION 'user_id or role_id does not belong to tenant %', p_tenant_id
            USING ERRCODE = 'TN404', HINT = 'role_id';
END
$$;
COMMENT ON FUNCTION tenantry.issue_api_key(uuid, text, jsonb, uuid, uuid, timestamptz, uuid, text[], cidr[]) IS 'Internal: generates a key, stores its SHA-256, returns id and key. Not granted.';

/**
 * Refuses (TN401: the caller lacks a permission) a key the caller may not mint: without keys.write, or one
 * holding a permission the caller does not (its role's, its member's, or
 * every permission for an unbound key, narrowed by its scopes). Unknown
 * scopes are TN422.
 */
CREATE OR REPLACE FUNCTION tenantry.require_key_within_grants(tid uuid, uid uuid, rid uuid, scopes text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    beyond text;
    not_accepted boolean;
BEGIN
    IF NOT tenantry.authorize('keys.write') THEN
        RAISE EXCEPTION 'creating, rotating and revoking keys needs keys.write' USING ERRCODE = 'TN401';
    END IF;
    -- A key bound to a member acts as that member (created_by, the
    -- policies' current_user_id()). Found by an audit: anyone holding
    -- keys.write minted a key acting as another member, the owner included,
    -- or as a person who never accepted, with no time limit or reason. A
    -- member binds keys to themselves; acting as someone else takes what
    -- impersonating takes: every permission (the owner, an unbound key, an
    -- operator), and it is never someone who has not accepted.
    IF uid IS NOT NULL THEN
        SELECT m.pending INTO not_accepted
        FROM tenantry.tenant_members m WHERE m.tenant_id = tid AND m.user_id = uid;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'member % not found', uid USING ERRCODE = 'TN404', HINT = 'user_id';
        END IF;
        IF uid IS DISTINCT FROM tenantry.current_user_id() AND NOT tenantry.authorize_all() THEN
            RAISE EXCEPTION 'a key acting as another member needs every permission, as impersonating does (the owner, a key bound to no role or member, an operator); a member binds keys to themselves'
                USING ERRCODE = 'TN401', HINT = 'user_id';
        END IF;
        IF not_accepted THEN
            RAISE EXCEPTION 'member % has not accepted an invitation yet: no key acts as them', uid
                USING ERRCODE = 'TN409', HINT = 'user_id';
        END IF;
    END IF;
    SELECT s INTO beyond FROM unnest(scopes) s
    WHERE NOT EXISTS (SELECT 1 FROM tenantry.permissions p WHERE p.name = s) LIMIT 1;
    IF beyond IS NOT NULL THEN
        RAISE EXCEPTION 'unknown permission "%" in scopes', beyond USING ERRCODE = 'TN422', HINT = 'scopes';
    END IF;
    SELECT ip.name INTO beyond FROM tenantry.identity_permissions(tid, uid, rid) ip
    WHERE (scopes IS NULL OR ip.name = ANY (scopes)) AND NOT tenantry.authorize(ip.name) LIMIT 1;
    IF beyond IS NOT NULL THEN
        RAISE EXCEPTION 'the key cannot be given the permission %, which the caller does not hold', beyond
            USING ERRCODE = 'TN401', HINT = 'scopes';
    END IF;
    -- An unbound, unscoped key also holds every permission defined later.
    IF uid IS NULL AND rid IS NULL AND scopes IS NULL AND NOT tenantry.authorize_all() THEN
        RAISE EXCEPTION 'only a caller holding every permission can create a key without role, member or scopes'
            USING ERRCODE = 'TN401', HINT = 'scopes';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.require_key_within_grants(uuid, uuid, uuid, text[]) IS 'Internal: TN401 (the caller lacks a permission) unless the caller holds keys.write and every permission the key would hold (an unbound unscoped key: every permission), and, for a key bound to a member other than the caller, every permission; TN404 for a member not of the tenant, TN409 for one who has not accepted; TN422 for unknown scopes. Not granted.';

/**
 * The expiry and addresses of the key acting in this transaction (its
 * context's actor names a key by its id: key:<uuid>); acting false for any
 * other actor (a member, an operator, a library caller's own label).
 * create_api_key, rotate_api_key and start_impersonation keep what a key makes within them.
 */
CREATE OR REPLACE FUNCTION tenantry.acting_key_reach(OUT acting boolean, OUT expires_at timestamptz, OUT allowed_cidrs cidr[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    acting := tenantry.current_actor() ~ '^key:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
    IF acting THEN
        -- A key acts in its own tenant's context: the key by (tenant, key).
        SELECT k.expires_at, k.allowed_cidrs INTO acting_key_reach.expires_at, acting_key_reach.allowed_cidrs
          FROM tenantry.api_keys k
         WHERE k.tenant_id = tenantry.current_tenant_id() AND k.key_id = substr(tenantry.current_actor(), 5)::uuid;
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.acting_key_reach() IS 'Internal: whether a key acts in this transaction (its context''s actor is key:<uuid>), with its expiry and allowed addresses, which the keys it creates or rotates and the impersonations it starts stay within. Not granted.';

/**
 * A key's allowed network as it is kept and compared: an IPv4-mapped IPv6
 * one (::ffff:203.0.113.0/120) as the IPv4 network it stands for
 * (203.0.113.0/24), the way the server sees its clients; any other as it
 * is. Kept the other way, `::ffff:0:0/96` lay within a creator's `::/0`
 * (which admits no IPv4 client) and admitted every IPv4 client (found by a
 * review).
 */
CREATE OR REPLACE FUNCTION tenantry.unmapped_cidr(c cidr)
RETURNS cidr
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN family(c) = 6 AND masklen(c) >= 96 AND c <<= '::ffff:0:0/96'::cidr
                THEN (substr(host(c), 8) || '/' || (masklen(c) - 96))::cidr
                ELSE c END
$$;
COMMENT ON FUNCTION tenantry.unmapped_cidr(cidr) IS 'Internal (create_api_key, rotate_api_key): an IPv4-mapped IPv6 network as the IPv4 network it stands for; any other network as it is. Not granted.';
REVOKE ALL ON FUNCTION tenantry.unmapped_cidr(cidr) FROM PUBLIC;

/**
 * KeyHippo API: create_api_key(description, metadata) -> key (shown once).
 * metadata may name tenant_id (default: the current tenant), user_id,
 * role_id, expires_at, scopes (permission names the key is limited to) and
 * allowed_cidrs (source addresses). The tenant must be the current tenant or
 * one of its descendants; the caller needs keys.write and every permission
 * the key will hold (nobody mints more than they hold).
 */
CREATE OR REPLACE FUNCTION tenantry.create_api_key(description text, metadata jsonb DEFAULT '{}')
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    meta jsonb := coalesce(metadata, '{}');
    tid uuid;
    issued record;
    key_scopes text[];
    key_cidrs cidr[];
    prior text;
    unusable text;
    creator record;
BEGIN
    IF jsonb_typeof(meta) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'TN422', HINT = 'metadata';
    END IF;
    IF length(description) > 500 THEN
        RAISE EXCEPTION 'description must be at most 500 characters' USING ERRCODE = 'TN422', HINT = 'description';
    END IF;
    BEGIN
        tid := coalesce((meta->>'tenant_id')::uuid, tenantry.current_tenant_id());
        IF tenantry.current_tenant_id() IS NULL THEN
            IF tid IS NULL OR NOT tenantry.operator_session() THEN
                RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403',
                    HINT = 'an operator names the tenant (create_tenant_api_key(tenant_id, description), or metadata.tenant_id) or calls set_tenant_context(tenant_id) first; the server''s login proves a context through the library';
            END IF;
            -- An operator in psql names the tenant, as the guide's
            -- create_tenant_api_key(tenant_id, description) does: this call
            -- acts in that tenant's context (TN404/TN403 for an unknown or
            -- deleted tenant), which it gives back below.
            prior := current_setting('backtrace_functions');
            PERFORM set_config('backtrace_functions', tenantry.context_value(tid, NULL, 'operator:' || session_user, NULL, NULL, NULL), true);
        END IF;
        IF tid IS NULL OR NOT (tid = ANY (tenantry.visible_tenant_ids())) THEN
            RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404', HINT = 'tenant_id';
        END IF;
        IF meta ? 'scopes' AND jsonb_typeof(meta->'scopes') <> 'array'
           OR meta ? 'allowed_cidrs' AND jsonb_typeof(meta->'allowed_cidrs') <> 'array' THEN
            RAISE EXCEPTION 'scopes and allowed_cidrs are arrays of strings' USING ERRCODE = 'TN422', HINT = 'metadata';
        END IF;
        key_scopes := CASE WHEN meta ? 'scopes' THEN ARRAY(SELECT jsonb_array_elements_text(meta->'scopes')) END;
        key_cidrs := CASE WHEN meta ? 'allowed_cidrs'
                          THEN ARRAY(SELECT tenantry.unmapped_cidr(c::cidr) FROM jsonb_array_elements_text(meta->'allowed_cidrs') c) END;
        PERFORM tenantry.require_key_within_grants(tid, (meta->>'user_id')::uuid, (meta->>'role_id')::uuid, key_scopes);
        -- A key that makes keys gives them no more reach than its own: no
        -- later expiry, no address outside its own (found by an HTTP
        -- review: a key bound to one address and expiring in ten minutes
        -- made keys for any address, for good). Left out, they are its own.
        creator := tenantry.acting_key_reach();
        IF creator.acting THEN
            IF creator.expires_at IS NOT NULL THEN
                IF meta->>'expires_at' IS NULL THEN
                    meta := meta || jsonb_build_object('expires_at', creator.expires_at);
                ELSIF (meta->>'expires_at')::timestamptz > creator.expires_at THEN
                    RAISE EXCEPTION 'expires_at must not be later than the creating key''s own expiry (%)', tenantry.rfc3339(creator.expires_at)
                        USING ERRCODE = 'TN422', HINT = 'expires_at';
                END IF;
            END IF;
            IF creator.allowed_cidrs IS NOT NULL THEN
                IF key_cidrs IS NULL THEN
                    key_cidrs := creator.allowed_cidrs;
                ELSIF EXISTS (SELECT 1 FROM unnest(key_cidrs) c
                              WHERE NOT c <<= ANY (ARRAY(SELECT tenantry.unmapped_cidr(o) FROM unnest(creator.allowed_cidrs) o))) THEN
                    RAISE EXCEPTION 'allowed_cidrs must lie within the creating key''s own (%)', array_to_string(creator.allowed_cidrs, ', ')
                        USING ERRCODE = 'TN422', HINT = 'allowed_cidrs';
                END IF;
            END IF;
        END IF;
        -- Scopes narrow what a bound key's role or member gives: one it
        -- does not give would never be used (found by a client's audit: the
        -- key was made, and then refused everything). Not checked again at
        -- rotation: the role may have changed since.
        IF key_scopes IS NOT NULL AND (meta ? 'user_id' OR meta ? 'role_id') THEN
            SELECT s INTO unusable FROM unnest(key_scopes) s
            WHERE NOT EXISTS (SELECT 1 FROM tenantry.identity_permissions(tid, (meta->>'user_id')::uuid, (meta->>'role_id')::uuid) ip
                              WHERE ip.name = s)
            LIMIT 1;
            IF unusable IS NOT NULL THEN
                RAISE EXCEPTION 'scope % is not a permission the key''s role or member holds: the key could never use it', unusable
                    USING ERRCODE = 'TN422', HINT = 'scopes';
            END IF;
        END IF;
        issued := tenantry.issue_api_key(
            tid, description, meta - 'tenant_id' - 'user_id' - 'role_id' - 'expires_at' - 'scopes' - 'allowed_cidrs',
            (meta->>'user_id')::uuid, (meta->>'role_id')::uuid, (meta->>'expires_at')::timestamptz, NULL,
            key_scopes, key_cidrs);
        IF prior IS NOT NULL THEN
            PERFORM set_config('backtrace_functions', prior, true);
        END IF;
    EXCEPTION WHEN invalid_text_representation OR invalid_datetime_format OR datetime_field_overflow THEN
        RAISE EXCEPTION 'metadata holds an invalid tenant_id, user_id, role_id, expires_at or allowed_cidrs: %', SQLERRM
            USING ERRCODE = 'TN422', HINT = 'metadata';
    END;
    RETURN issued.api_key;
END
$$;
COMMENT ON FUNCTION tenantry.create_api_key(text, jsonb) IS 'KeyHippo API: creates a key for the current tenant (or a descendant named in metadata.tenant_id; metadata may also name user_id, role_id, expires_at, scopes, allowed_cidrs) and returns it once. Needs keys.write and every permission the key will hold (TN401); made by a key, it expires no later and admits no address outside that key''s (its own when left out; TN422 otherwise). Without a tenant context: TN403, except for an operator (superuser or member of tenantry_owner) naming metadata.tenant_id, for whom the call acts in that tenant''s context.';

/**
 * The newest key of the current subtree with this prefix, as the server
 * returns it after create_api_key or rotate_api_key made it (never its hash).
 * Read as the owner that wrote it: on Citus a transaction may not read, as
 * another role, the shards it changed as the owner. The subtree condition is
 * the keys' read policy (api_keys_read_subtree).
 */
CREATE OR REPLACE FUNCTION tenantry.new_api_key_info(key_prefix text)
RETURNS TABLE (key_id uuid, tenant_id uuid, prefix text, description text, user_id uuid, role_id uuid,
               created_by text, created_at timestamptz, expires_at timestamptz, revoked_at timestamptz,
               last_used_at timestamptz, rotated_from uuid, rotated_to uuid, scopes text[], allowed_cidrs text[])
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.key_id, a.tenant_id, a.prefix, a.description, a.user_id, a.role_id, a.created_by, a.created_at,
           a.expires_at, a.revoked_at, a.last_used_at, a.rotated_from, a.rotated_to, a.scopes, a.allowed_cidrs::text[]
    FROM tenantry.api_keys a
    WHERE a.prefix = key_prefix AND a.tenant_id = ANY (tenantry.visible_tenant_ids())
    ORDER BY a.created_at DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION tenantry.new_api_key_info(text) IS 'The newest key of the current subtree with this prefix (never its hash), read as the owner that created it: what the server returns after creating or rotating a key.';

/** Guide: create_tenant_api_key(tenant_id, description) -> key. */
CREATE OR REPLACE FUNCTION tenantry.create_tenant_api_key(tenant_id uuid, description text)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tenantry.create_api_key(description,
        jsonb_build_object('tenant_id', tenant_id, 'type', 'tenant_key'))
$$;
COMMENT ON FUNCTION tenantry.create_tenant_api_key(uuid, text) IS 'Guide API: creates a tenant key (metadata type tenant_key) for the current tenant or a descendant; an operator without a tenant context names any tenant (create_api_key).';

/**
 * Verifies a key given as its prefix and SHA-256 (the server never sends the
 * key itself). Returns the key's identity as jsonb, NULL when unknown, revoked
 * or expired. One statement finds the key; the hashes are compared as digests
 * of the hashes, so a mismatch's timing tells nothing about the stored hash.
 * Only a found key pays for its identity: the permissions are one more
 * statement, the one of identity_permission_names for that kind of identity,
 * and PL/pgSQL keeps every plan for the session (nothing is planned per call).
 *
 * No plan_cache_mode setting: every statement here has one plan whatever the
 * key, which PL/pgSQL keeps as generic after five calls, and each pinned
 * setting costs a save and restore per call (measured: 2%).
 *
 * Records last use at most once a minute per key (the UPDATE runs only when
 * the recorded time is older), so last_used_at is at most a minute behind,
 * and never waits for a lock on the key's row (skipped then).
 */
CREATE OR REPLACE FUNCTION tenantry.verify_api_key_hash(key_prefix text, key_hash bytea)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k record;
BEGIN
    SELECT a.key_id, a.tenant_id, a.user_id, a.role_id, a.description, a.metadata, a.expires_at,
           a.prefix, a.last_used_at, a.scopes, a.allowed_cidrs, t.status AS tenant_status, t.settings AS tenant_settings
      INTO k
      FROM tenantry.api_key_lookup l
      -- OFFSET 0 keeps the key's own lookup: by both columns of its primary
      -- key. Flattened, the planner may reach api_keys through the tenant
      -- alone and hash every key of the tenant.
      CROSS JOIN LATERAL (
          SELECT * FROM tenantry.api_keys ak
          WHERE ak.tenant_id = l.tenant_id AND ak.key_id = l.key_id
          OFFSET 0) a
      JOIN tenantry.tenants t ON t.tenant_id = l.tenant_id
     WHERE l.prefix = key_prefix
       AND octet_length(a.key_hash) = octet_length(verify_api_key_hash.key_hash)
       AND sha256(a.key_hash) = sha256(verify_api_key_hash.key_hash)
       AND a.revoked_at IS NULL
       AND (a.expires_at IS NULL OR a.expires_at > now());
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- Only when the key's row is free: a session holding it (a DBA's
    -- SELECT … FOR UPDATE, a long transaction that changed the key) made
    -- every verification of that key wait for it, up to the statement
    -- timeout, in the key-check lane every tenant's verifications share,
    -- so that one tenant's key held the others' requests (found by a
    -- review of database failures). The time is recorded by the next
    -- verification that finds the row free.
    IF (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')
       AND EXISTS (SELECT FROM tenantry.api_keys f
                    WHERE f.tenant_id = k.tenant_id AND f.key_id = k.key_id
                      FOR NO KEY UPDATE SKIP LOCKED) THEN
        UPDATE tenantry.api_keys SET last_used_at = now()
        WHERE tenant_id = k.tenant_id AND api_keys.key_id = k.key_id;
        -- A usage timestamp is not worth a disk flush per verification: this
        -- transaction's commit does not wait for it (a crash loses at most
        -- the last moments of last_used_at, never a key or a revocation).
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    RETURN jsonb_build_object(
        'key_id', k.key_id, 'tenant_id', k.tenant_id, 'tenant_status', k.tenant_status,
        'tenant_settings', k.tenant_settings,
        'permissions', to_jsonb(tenantry.identity_permission_names(k.tenant_id, k.user_id, k.role_id, k.scopes)),
        'allowed_cidrs', to_jsonb(k.allowed_cidrs::text[]),
        'unbound', k.user_id IS NULL AND k.role_id IS NULL AND k.scopes IS NULL,
        'user_id', k.user_id, 'role_id', k.role_id, 'description', k.description,
        'metadata', k.metadata, 'expires_at', k.expires_at, 'prefix', k.prefix,
        'type', coalesce(k.metadata->>'type', 'tenant_key'));
END
$$;
COMMENT ON FUNCTION tenantry.verify_api_key_hash(text, bytea) IS 'Verifies a key by prefix and SHA-256 before any tenant is known (one lookup; hashes compared as digests of digests, so timing reveals nothing about the stored hash); NULL for unknown, revoked or expired keys. Records last use at most once a minute per key.';

/**
 * KeyHippo API: verify_api_key(key) -> identity jsonb, or NULL. Plain SQL
 * without SECURITY DEFINER or SET, so the planner inlines it into the
 * caller's query and only verify_api_key_hash is called; every name in it
 * is schema-qualified, so the caller's search_path cannot redirect it.
 */
CREATE OR REPLACE FUNCTION tenantry.verify_api_key(key text)
RETURNS jsonb
LANGUAGE sql
AS $$
    SELECT CASE WHEN key OPERATOR(pg_catalog.~) '^tk_[0-9a-f]{12}_[0-9a-f]{64}$'
                THEN tenantry.verify_api_key_hash(pg_catalog.substr(key, 4, 12),
                                                  pg_catalog.sha256(pg_catalog.convert_to(key, 'UTF8')))
           END
$$;
COMMENT ON FUNCTION tenantry.verify_api_key(text) IS 'KeyHippo API: the identity of a valid key (tenant_id, key_id, user_id, role_id, ...), NULL otherwise. Needs no tenant context; inlined into the caller''s query.';

/**
 * Guide: validate_tenant_key(key). Fixed: the key identifies its tenant (no
 * context needed). With a context set, a key of another tenant gives NULL.
 * Keys of tenants that are not active give NULL.
 */
CREATE OR REPLACE FUNCTION tenantry.validate_tenant_key(key text)
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
CREATE OR REPLACE FUNCTION tenantry.revoke_api_key(key_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Values, not calls in the UPDATE: Citus refuses a distributed UPDATE
    -- with a non-immutable function inside COALESCE (docs/scale-out.md).
    at timestamptz := now();
    visible uuid[] := tenantry.visible_tenant_ids();
    key_tenant uuid;
BEGIN
    IF NOT tenantry.authorize('keys.write') THEN
        RAISE EXCEPTION 'creating, rotating and revoking keys needs keys.write' USING ERRCODE = 'TN401';
    END IF;
    UPDATE tenantry.api_keys a SET revoked_at = coalesce(a.revoked_at, at)
    WHERE a.key_id = revoke_api_key.key_id
      AND a.tenant_id = ANY (visible)
    RETURNING a.tenant_id INTO key_tenant;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'api key % not found', revoke_api_key.key_id USING ERRCODE = 'TN404', HINT = 'key_id';
    END IF;
    -- The invitations it made and nobody accepted can no longer be (0069):
    -- listed and audited as revoked.
    PERFORM tenantry.revoke_orphaned_invitations(key_tenant);
    -- The impersonations the key started end with it (0053; refused from now
    -- on anyway): not listed or counted as live any more.
    UPDATE tenantry.impersonations i SET ended_at = at
    WHERE i.tenant_id = ANY (visible) AND i.impersonator_key = revoke_api_key.key_id AND i.ended_at IS NULL;
END
$$;
COMMENT ON FUNCTION tenantry.revoke_api_key(uuid) IS 'KeyHippo API: revokes a key at once, and the pending invitations it made. Idempotent; TN404 for a key outside the caller''s subtree.';

/**
 * KeyHippo API: rotate_api_key(key_id, grace) -> new key (shown once). The new
 * key inherits tenant, member, role, description and metadata; the old key
 * keeps working until now() + grace, then expires.
 */
CREATE OR REPLACE FUNCTION tenantry.rotate_api_key(key_id uuid, grace interval DEFAULT interval '24 hours')
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old record;
    issued record;
    creator record;
BEGIN
    IF grace IS NULL OR grace < interval '0' THEN
        RAISE EXCEPTION 'grace period must be >= 0' USING ERRCODE = 'TN422', HINT = 'grace';
    END IF;
    -- The key's tenant, then the key locked by (tenant, key): Citus refuses
    -- FOR UPDATE in a statement that reaches several shards.
    SELECT * INTO old FROM tenantry.api_keys a
    WHERE a.key_id = rotate_api_key.key_id
      AND a.tenant_id = ANY (tenantry.visible_tenant_ids());
    IF FOUND THEN
        SELECT * INTO old FROM tenantry.api_keys a
        WHERE a.key_id = rotate_api_key.key_id AND a.tenant_id = old.tenant_id
        FOR UPDATE;
    END IF;
    IF old IS NULL THEN
        RAISE EXCEPTION 'api key % not found', rotate_api_key.key_id USING ERRCODE = 'TN404', HINT = 'key_id';
    END IF;
    IF old.revoked_at IS NOT NULL OR (old.expires_at IS NOT NULL AND old.expires_at <= now()) THEN
        RAISE EXCEPTION 'api key % is revoked or expired', rotate_api_key.key_id USING ERRCODE = 'TN409', HINT = 'key_id';
    END IF;
    IF old.rotated_to IS NOT NULL THEN
        RAISE EXCEPTION 'api key % was already rotated', rotate_api_key.key_id USING ERRCODE = 'TN409', HINT = 'key_id';
    END IF;
    PERFORM tenantry.require_key_within_grants(old.tenant_id, old.user_id, old.role_id, old.scopes);
    -- A successor keeps the old key's expiry and addresses: a key rotates
    -- only keys that reach no further than itself, or rotating a key
    -- without limits would hand it one (as creating one did: an HTTP review).
    creator := tenantry.acting_key_reach();
    IF creator.acting
       AND ((creator.expires_at IS NOT NULL AND (old.expires_at IS NULL OR old.expires_at > creator.expires_at))
            OR (creator.allowed_cidrs IS NOT NULL
                AND (old.allowed_cidrs IS NULL
                     OR EXISTS (SELECT 1 FROM unnest(old.allowed_cidrs) c
                                WHERE NOT tenantry.unmapped_cidr(c)
                                          <<= ANY (ARRAY(SELECT tenantry.unmapped_cidr(o) FROM unnest(creator.allowed_cidrs) o)))))) THEN
        RAISE EXCEPTION 'api key % outlives or reaches further than the key rotating it (its expiry or addresses): its successor would too', rotate_api_key.key_id
            USING ERRCODE = 'TN401';
    END IF;
    issued := tenantry.issue_api_key(old.tenant_id, old.description, old.metadata, old.user_id, old.role_id,
                                     old.expires_at, old.key_id, old.scopes, old.allowed_cidrs);
    UPDATE tenantry.api_keys a
    SET rotated_to = issued.key_id,
        expires_at = least(coalesce(a.expires_at, 'infinity'), now() + grace)
    WHERE a.tenant_id = old.tenant_id AND a.key_id = old.key_id;
    RETURN issued.api_key;
END
$$;
COMMENT ON FUNCTION tenantry.rotate_api_key(uuid, interval) IS 'KeyHippo API: issues a successor key with the old one''s role, scopes, expiry and addresses, on which the old key''s invitations rest once it has expired (invitation_key); the old key expires after the grace period (default 24 hours). Rotated by a key: TN401 unless the old key expires no later and admits no address outside that key''s.';

/** The permission names a key of the caller's subtree holds. */
CREATE OR REPLACE FUNCTION tenantry.key_permissions(key_id uuid)
RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k record;
BEGIN
    -- PL/pgSQL (plans kept per session), not SQL with a SET clause, which is
    -- planned again at every call. LIMIT 1 keeps the SQL form's first row
    -- (key ids are unique, so there is at most one). The key first, its
    -- permissions after, in a statement of their own: on Citus a query of
    -- api_keys is pushed to a shard, where identity_permission_names could
    -- not read the permissions (no distributed query from a shard).
    SELECT a.tenant_id, a.user_id, a.role_id, a.scopes INTO k
    FROM tenantry.api_keys a
    WHERE a.key_id = key_permissions.key_id
      AND a.tenant_id = ANY (tenantry.visible_tenant_ids())
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN tenantry.identity_permission_names(k.tenant_id, k.user_id, k.role_id, k.scopes);
END
$$;
COMMENT ON FUNCTION tenantry.key_permissions(uuid) IS 'Permissions of a key of the current subtree, narrowed by its scopes: its role''s if bound to a role, else its member''s roles'', else every permission (tenant owner key). NULL for keys outside the subtree.';

GRANT EXECUTE ON FUNCTION
    tenantry.create_api_key(text, jsonb),
    tenantry.create_tenant_api_key(uuid, text),
    tenantry.verify_api_key_hash(text, bytea),
    tenantry.verify_api_key(text),
    tenantry.validate_tenant_key(text),
    tenantry.revoke_api_key(uuid),
    tenantry.rotate_api_key(uuid, interval),
    tenantry.key_permissions(uuid),
    tenantry.new_api_key_info(text)
TO tenantry_app;
