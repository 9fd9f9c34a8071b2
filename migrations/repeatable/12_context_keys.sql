-- =============================================================================
-- Context keys: adding, listing and retiring the keys with which servers
-- prove a tenant context (table tenantry.context_keys, migration 0017;
-- docs/security.md, "The tenant context").
--
-- Rotation, as an operator runs it (`tenantry context-key rotate|list|retire`):
--   1. add_context_key()        a new random key; the old ones keep verifying.
--   2. roll the servers         each restarted with the new key
--                               (TENANTRY_CONTEXT_KEY); servers still on the
--                               old key keep working meanwhile.
--   3. retire_context_key(old)  the old key stops verifying at once: contexts
--                               signed with it are refused (NULL, no rows), and
--                               so are the open sessions of connections that
--                               opened with it (enter_context checks the key of
--                               the session, 01_context.sql). A server still on
--                               it answers 503 and cannot open new sessions.
--
-- Operators only: the functions run as their caller (SECURITY INVOKER), and
-- only the owner role (and a superuser) may touch context_keys; EXECUTE is
-- granted to no role, so the server's login and the app roles get 42501
-- before anything runs.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

/**
 * Adds a context key of 32 random bytes, made as migration 0017 made the
 * first one (two version-4 UUIDs: 244 random bits; the built-in generator, as
 * pgcrypto is not always installed), with its HMAC pads. Its id comes from
 * tenantry.context_key_ids, past every id given before (a retired key's id is
 * never given again), so it is the newest: `tenantry context-key` and
 * servers that read the key themselves pick it up at their next start.
 */
CREATE OR REPLACE FUNCTION tenantry.add_context_key()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    secret bytea := decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');
    block bytea := secret || decode(repeat('00', 32), 'hex');
    inner_pad bytea := block;
    outer_pad bytea := block;
    new_id integer;
BEGIN
    -- Two rotations at once get two ids (EXCLUSIVE lets verification read on).
    LOCK TABLE tenantry.context_keys IN EXCLUSIVE MODE;
    FOR i IN 0..63 LOOP
        inner_pad := set_byte(inner_pad, i, get_byte(block, i) # 54);   -- 0x36
        outer_pad := set_byte(outer_pad, i, get_byte(block, i) # 92);   -- 0x5c
    END LOOP;
    -- From a sequence that only goes up: a retired key's id is never given
    -- again (a session opened with it ends when no key of its id exists).
    -- Past any key added without it (a restored copy).
    SELECT greatest(nextval('tenantry.context_key_ids')::integer, coalesce(max(k.key_id), 0) + 1)
    INTO new_id FROM tenantry.context_keys k;
    PERFORM setval('tenantry.context_key_ids', new_id);
    INSERT INTO tenantry.context_keys (key_id, secret, inner_pad, outer_pad)
    VALUES (new_id, secret, inner_pad, outer_pad);
    PERFORM tenantry.write_operator_audit('context_key.added', 'context_key', new_id::text);
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION tenantry.add_context_key() IS 'Operators (owner role or superuser): adds a random context key and returns its id, the newest; older keys keep verifying until retired. Granted to no role.';

/** The context keys by id, without their secrets. */
CREATE OR REPLACE FUNCTION tenantry.list_context_keys()
RETURNS TABLE (key_id integer, created_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.key_id, k.created_at FROM tenantry.context_keys k ORDER BY k.key_id
$$;
COMMENT ON FUNCTION tenantry.list_context_keys() IS 'Operators (owner role or superuser): id and creation time of every context key, oldest first; never the secrets. Granted to no role.';

/**
 * Whether a context key is live (not retired), for a server's readiness
 * probe: a server whose key was retired answers every request 503, yet its
 * pooled sessions still answered a plain round trip, so it reported ready
 * until they ended (a review of the docs: 57 s of 200s). Says only whether
 * that id is a live key's (ids are never reused: 0040), never a secret.
 */
CREATE OR REPLACE FUNCTION tenantry.context_key_live(key_id integer)
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM tenantry.context_keys k WHERE k.key_id = context_key_live.key_id);
END
$$;
COMMENT ON FUNCTION tenantry.context_key_live(integer) IS 'Server readiness: whether the context key of that id is live (not retired). Nothing else of the keys. Granted to tenantry_app.';
GRANT EXECUTE ON FUNCTION tenantry.context_key_live(integer) TO tenantry_app;

/**
 * Retires (deletes) a context key: from the commit on, contexts signed with
 * it and sessions opened with it are refused (no rows, the server answers
 * 503). TN404 for an unknown id; TN409 for the last key left, without which no
 * server could prove any context (add one first).
 */
CREATE OR REPLACE FUNCTION tenantry.retire_context_key(retired integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Two retirements at once cannot both pass the last-key check.
    LOCK TABLE tenantry.context_keys IN EXCLUSIVE MODE;
    IF NOT EXISTS (SELECT 1 FROM tenantry.context_keys k WHERE k.key_id = retired) THEN
        RAISE EXCEPTION 'context key % not found', retired USING ERRCODE = 'TN404';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tenantry.context_keys k WHERE k.key_id <> retired) THEN
        RAISE EXCEPTION 'context key % is the last one; add a key and move the servers to it first', retired
            USING ERRCODE = 'TN409';
    END IF;
    DELETE FROM tenantry.context_keys k WHERE k.key_id = retired;
    PERFORM tenantry.write_operator_audit('context_key.retired', 'context_key', retired::text);
END
$$;
COMMENT ON FUNCTION tenantry.retire_context_key(integer) IS 'Operators (owner role or superuser): deletes a context key; contexts and sessions proven with it are refused from the commit on. TN404 unknown id, TN409 the last key. Granted to no role.';
