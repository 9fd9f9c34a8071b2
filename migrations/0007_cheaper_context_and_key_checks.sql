-- =============================================================================
-- 0007 cheaper hot paths, same contracts
--
-- visible_tenant_ids(): policies evaluate it per row wherever it is not an
-- index condition; it now parses the subtree setting once instead of twice.
-- verify_api_key_hash(): one lookup instead of a loop, and digests of the
-- hashes compared instead of a per-byte SQL loop (measured: 0.43 -> 0.21 ms
-- per call on the benchmark data set).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

/**
 * Same contract as 0001's version, parsing the subtree setting once instead
 * of twice: the "first element is the current tenant" check compares text.
 * Policies evaluate this per row wherever it is not an index condition, and
 * parsing a uuid[] costs microseconds per element.
 */
CREATE OR REPLACE FUNCTION tenantry.visible_tenant_ids()
RETURNS uuid[]
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN tenantry.current_tenant_id() IS NOT NULL
         AND left(current_setting('app.visible_tenant_ids', true), 38)
             IN ('{' || tenantry.current_tenant_id()::text || ',', '{' || tenantry.current_tenant_id()::text || '}')
        THEN current_setting('app.visible_tenant_ids', true)::uuid[]
        ELSE array_remove(ARRAY[tenantry.current_tenant_id()], NULL)
    END
$$;
COMMENT ON FUNCTION tenantry.visible_tenant_ids() IS 'The current tenant and its descendants (transitively), as computed by set_tenant_context; honoured only when its first element is the current tenant; empty when no tenant is set.';

/**
 * Verifies a key given as its prefix and SHA-256. Same contract as 0004's
 * version, at a fraction of the cost: one statement finds the key, and the
 * hash comparison is done on digests of the hashes (a mismatch's timing then
 * tells nothing about the stored hash), instead of a byte-by-byte loop.
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
           a.prefix, a.last_used_at, t.status AS tenant_status, t.settings AS tenant_settings
      INTO k
      FROM tenantry.api_keys a JOIN tenantry.tenants t ON t.tenant_id = a.tenant_id
     WHERE a.prefix = key_prefix
       AND octet_length(a.key_hash) = octet_length(verify_api_key_hash.key_hash)
       AND sha256(a.key_hash) = sha256(verify_api_key_hash.key_hash)
       AND a.revoked_at IS NULL
       AND (a.expires_at IS NULL OR a.expires_at > now());
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' THEN
        UPDATE tenantry.api_keys SET last_used_at = now()
        WHERE tenant_id = k.tenant_id AND api_keys.key_id = k.key_id;
    END IF;
    RETURN jsonb_build_object(
        'key_id', k.key_id, 'tenant_id', k.tenant_id, 'tenant_status', k.tenant_status,
        'tenant_settings', k.tenant_settings,
        'permissions', to_jsonb(CASE WHEN k.user_id IS NULL AND k.role_id IS NULL
                                     THEN (SELECT coalesce(array_agg(p.name ORDER BY p.name), '{}')
                                           FROM tenantry.permissions p)
                                     ELSE tenantry.identity_permissions(k.tenant_id, k.user_id, k.role_id) END),
        'user_id', k.user_id, 'role_id', k.role_id, 'description', k.description,
        'metadata', k.metadata, 'expires_at', k.expires_at, 'prefix', k.prefix,
        'type', coalesce(k.metadata->>'type', 'tenant_key'));
END
$$;
COMMENT ON FUNCTION tenantry.verify_api_key_hash(text, bytea) IS 'Verifies a key by prefix and SHA-256 before any tenant is known (one lookup; hashes compared as digests of digests, so timing reveals nothing about the stored hash); NULL for unknown, revoked or expired keys.';

/**
 * The server's transaction-local context, in two halves. The server sends the
 * values it knows itself as literal SET LOCAL statements (tenant, user, actor:
 * each its own statement, so Citus propagates them), then calls this function,
 * which checks the tenant and writes only what needs the database: the visible
 * subtree (only for a tenant with live descendants; otherwise the setting is
 * emptied, and visible_tenant_ids() then means the tenant alone) and the schema
 * (only for a schema-isolated tenant). Usually nothing is EXECUTEd: each
 * EXECUTEd SET LOCAL costs a parse, and set_tenant_context_local made four.
 * Values left in the session are overwritten, never inherited.
 */
CREATE FUNCTION tenantry.complete_tenant_context_local()
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid := tenantry.current_tenant_id();
    t_status text;
    t_isolation text;
    visible uuid[];
    wanted text;
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
    wanted := CASE WHEN cardinality(visible) > 1 THEN visible::text ELSE '' END;
    IF coalesce(current_setting('app.visible_tenant_ids', true), '') <> wanted THEN
        EXECUTE format('SET LOCAL app.visible_tenant_ids = %L', wanted);
    END IF;
    schema_name := CASE WHEN t_isolation = 'schema' THEN 'tenant_' || replace(tid::text, '-', '') ELSE 'tenantry' END;
    IF coalesce(nullif(current_setting('app.current_tenant_schema', true), ''), 'tenantry') <> schema_name THEN
        EXECUTE format('SET LOCAL app.current_tenant_schema = %L', schema_name);
    END IF;
    RETURN schema_name;
END
$$;
COMMENT ON FUNCTION tenantry.complete_tenant_context_local() IS 'Server half of the transaction-local context: after SET LOCAL app.current_tenant_id (and user, actor), checks the tenant (TN404 missing, TN403 deleted) and sets its visible subtree and schema only where they differ. Returns the schema. Safe behind poolers.';
GRANT EXECUTE ON FUNCTION tenantry.complete_tenant_context_local() TO tenantry_app;

/**
 * The guide-facing setter keeps its signature and behaviour, and now shares
 * the tenant check and subtree with the server's path: it sets the values it
 * was given, then completes the context like the server does.
 */
CREATE OR REPLACE FUNCTION tenantry.set_tenant_context_local(tid uuid, uid uuid DEFAULT NULL, actor text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tid IS NULL THEN
        RAISE EXCEPTION 'tenant id is required' USING ERRCODE = 'TN422', HINT = 'tenant_id';
    END IF;
    EXECUTE format('SET LOCAL app.current_tenant_id = %L', tid);
    IF coalesce(current_setting('app.current_user_id', true), '') IS DISTINCT FROM coalesce(uid::text, '') THEN
        EXECUTE format('SET LOCAL app.current_user_id = %L', coalesce(uid::text, ''));
    END IF;
    IF coalesce(current_setting('app.actor', true), '') IS DISTINCT FROM coalesce(actor, '') THEN
        EXECUTE format('SET LOCAL app.actor = %L', coalesce(actor, ''));
    END IF;
    RETURN tenantry.complete_tenant_context_local();
END
$$;

/**
 * A deleted tenant's shares end with it: nothing it shared stays readable by
 * others, and nothing stays shared with it. (Found by the model-based test:
 * the sharing policy looks only at shared_with, which deletion left in place.)
 * Revocations are audited by shared_resources' own trigger.
 */
CREATE FUNCTION tenantry.tenants_revoke_shares_on_delete()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE tenantry.resources SET shared_with = '{}'
    WHERE tenant_id = NEW.tenant_id AND shared_with <> '{}';
    DELETE FROM tenantry.shared_resources WHERE tenant_id = NEW.tenant_id;
    UPDATE tenantry.resources SET shared_with = array_remove(shared_with, NEW.tenant_id)
    WHERE shared_with @> ARRAY[NEW.tenant_id];
    DELETE FROM tenantry.shared_resources WHERE shared_with = NEW.tenant_id;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenants_revoke_shares_on_delete() IS 'Trigger: when a tenant becomes deleted, revokes every share of its resources and every share made to it.';
CREATE TRIGGER tenants_revoke_shares_on_delete
    AFTER UPDATE OF status ON tenantry.tenants
    FOR EACH ROW WHEN (NEW.status = 'deleted' AND OLD.status IS DISTINCT FROM 'deleted')
    EXECUTE FUNCTION tenantry.tenants_revoke_shares_on_delete();
