-- =============================================================================
-- Idempotency keys (table tenantry.idempotency_keys, migration 0024).
--
-- A tenant's write with an Idempotency-Key runs, in one transaction:
--   1. claim_idempotency_key(key, fingerprint)  inserts the key's row (no
--      response yet) or, when a committed row is there, returns it: the
--      server then replays its response (same fingerprint) or refuses the
--      request (another one: 422). A row another transaction inserted and has
--      not committed yet is waited for at most 200 ms (lock_timeout), then
--      the claim fails with TN409: the same request is still in flight.
--   2. the write itself;
--   3. UPDATE of the row with the response, sent with COMMIT.
-- So the key and the write commit together or not at all: a reply lost after
-- COMMIT leaves a row that the retry finds.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE POLICY idempotency_keys_own ON tenantry.idempotency_keys
    FOR ALL TO tenantry_app
    USING (tenant_id = tenantry.current_tenant_id())
    WITH CHECK (tenant_id = tenantry.current_tenant_id());
COMMENT ON POLICY idempotency_keys_own ON tenantry.idempotency_keys IS 'A tenant claims, reads and completes only its own idempotency keys: another tenant''s key of the same text is another row it never sees.';

-- A tenant role inserts a claim (no response, created now) and completes it
-- with its response: columns granted accordingly, so SQL as tenantry_app can
-- neither store a response the quota does not count nor date a row in the
-- past or the future (found by a red-team review).
GRANT SELECT, DELETE ON tenantry.idempotency_keys TO tenantry_app;
GRANT INSERT (tenant_id, idempotency_key, fingerprint) ON tenantry.idempotency_keys TO tenantry_app;
GRANT UPDATE (status, body) ON tenantry.idempotency_keys TO tenantry_app;

/**
 * Claims an idempotency key for the current tenant's transaction. No row
 * returned: the key is the caller's now (its row commits with the caller's
 * write). One row: the key was used by a committed request; its stored
 * response, and whether that request had the same fingerprint. An expired
 * row (24 hours) is replaced. Runs as its caller, under the table's policy.
 */
CREATE OR REPLACE FUNCTION tenantry.claim_idempotency_key(idempotency_key text, fingerprint bytea)
RETURNS TABLE (status smallint, body bytea, same_request boolean)
LANGUAGE plpgsql
SET lock_timeout = '200ms'
AS $$
DECLARE
    tid uuid := tenantry.current_tenant_id();
    claimed integer;
BEGIN
    IF tid IS NULL THEN
        RAISE EXCEPTION 'no tenant context' USING ERRCODE = 'TN403';
    END IF;
    BEGIN
        DELETE FROM tenantry.idempotency_keys k
         WHERE k.tenant_id = tid AND k.idempotency_key = claim_idempotency_key.idempotency_key
           AND k.created_at <= now() - interval '24 hours';
        INSERT INTO tenantry.idempotency_keys (tenant_id, idempotency_key, fingerprint)
        VALUES (tid, claim_idempotency_key.idempotency_key, claim_idempotency_key.fingerprint)
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING;
        GET DIAGNOSTICS claimed = ROW_COUNT;
    EXCEPTION WHEN lock_not_available THEN
        -- The wait was for the key's row (the same request still in flight:
        -- 409), or for the table, which another session locked (nothing to
        -- do with this key: 55P03, answered 503 and retried later). The lock
        -- every insert takes anyway, asked for without waiting, tells them
        -- apart.
        BEGIN
            LOCK TABLE tenantry.idempotency_keys IN ROW EXCLUSIVE MODE NOWAIT;
        EXCEPTION WHEN lock_not_available THEN
            RAISE EXCEPTION 'the idempotency keys are locked by another session; retry later'
                USING ERRCODE = '55P03';
        END;
        RAISE EXCEPTION 'a request with this Idempotency-Key is still being processed; retry it later'
            USING ERRCODE = 'TN409', HINT = 'Idempotency-Key';
    END;
    IF claimed = 1 THEN
        RETURN;
    END IF;
    -- A new statement: its snapshot sees the row the conflict waited for.
    RETURN QUERY
        SELECT k.status, k.body, k.fingerprint = claim_idempotency_key.fingerprint
          FROM tenantry.idempotency_keys k
         WHERE k.tenant_id = tid AND k.idempotency_key = claim_idempotency_key.idempotency_key;
END
$$;
COMMENT ON FUNCTION tenantry.claim_idempotency_key(text, bytea) IS 'Claims an Idempotency-Key for the current tenant''s transaction (no row), or returns the committed response stored under it and whether it was for the same request; TN409 while another transaction holds it uncommitted for more than 200 ms; 55P03 (retry) when the table itself is locked.';
GRANT EXECUTE ON FUNCTION tenantry.claim_idempotency_key(text, bytea) TO tenantry_app;

-- The operator's keys (migration 0027): no role reads or writes them
-- directly; the two functions below, as the owner, for a transaction that
-- acts for the operator.
CREATE POLICY operator_idempotency_keys_no_direct_access ON tenantry.operator_idempotency_keys
    AS RESTRICTIVE FOR ALL TO PUBLIC USING (false) WITH CHECK (false);
COMMENT ON POLICY operator_idempotency_keys_no_direct_access ON tenantry.operator_idempotency_keys IS 'No role reads or writes the operator''s idempotency keys directly: claim_operator_idempotency_key and complete_operator_idempotency_key do, as the owner, for a transaction acting for the operator (the table is granted to none).';

/**
 * Whether this transaction acts for the operator: a verified administrative
 * context, or a verified tenant context whose actor is the admin token's
 * (`admin`: the server's admin routes that work inside one tenant, such as
 * minting its key). Contexts are proven with the context key, which the
 * server's login cannot read, so SQL cannot claim to be the operator.
 */
CREATE OR REPLACE FUNCTION tenantry.acts_for_operator()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tenantry.admin_context()
        OR (left(current_setting('backtrace_functions'), 12) = 'tenantry_v1_'
            AND tenantry.current_actor() = 'admin')
$$;
COMMENT ON FUNCTION tenantry.acts_for_operator() IS 'Internal: true when the transaction''s verified context is administrative, or a tenant context acting as the admin token (actor admin). Not granted.';

/**
 * claim_idempotency_key for the operator's writes: the key in the operator's
 * namespace (operator_idempotency_keys), whatever tenant the transaction acts
 * in. TN403 unless the transaction acts for the operator.
 */
CREATE OR REPLACE FUNCTION tenantry.claim_operator_idempotency_key(idempotency_key text, fingerprint bytea)
RETURNS TABLE (status smallint, body bytea, same_request boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '200ms'
AS $$
DECLARE
    claimed integer;
BEGIN
    IF NOT tenantry.acts_for_operator() THEN
        RAISE EXCEPTION 'only the operator''s transactions keep operator idempotency keys' USING ERRCODE = 'TN403';
    END IF;
    BEGIN
        DELETE FROM tenantry.operator_idempotency_keys k
         WHERE k.idempotency_key = claim_operator_idempotency_key.idempotency_key
           AND k.created_at <= now() - interval '24 hours';
        INSERT INTO tenantry.operator_idempotency_keys (idempotency_key, fingerprint)
        VALUES (claim_operator_idempotency_key.idempotency_key, claim_operator_idempotency_key.fingerprint)
        ON CONFLICT ON CONSTRAINT operator_idempotency_keys_pkey DO NOTHING;
        GET DIAGNOSTICS claimed = ROW_COUNT;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'a request with this Idempotency-Key is still being processed; retry it later'
            USING ERRCODE = 'TN409', HINT = 'Idempotency-Key';
    END;
    IF claimed = 1 THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT k.status, k.body, k.fingerprint = claim_operator_idempotency_key.fingerprint
          FROM tenantry.operator_idempotency_keys k
         WHERE k.idempotency_key = claim_operator_idempotency_key.idempotency_key;
END
$$;
COMMENT ON FUNCTION tenantry.claim_operator_idempotency_key(text, bytea) IS 'Claims an Idempotency-Key in the operator''s namespace for a transaction acting for the operator (no row), or returns the committed response stored under it and whether it was for the same request; TN409 while another transaction holds it uncommitted for more than 200 ms; TN403 for anyone but the operator.';
GRANT EXECUTE ON FUNCTION tenantry.claim_operator_idempotency_key(text, bytea) TO tenantry_admin, tenantry_app;

/** Stores the response under the operator's key this transaction claimed (sent with COMMIT). */
CREATE OR REPLACE FUNCTION tenantry.complete_operator_idempotency_key(idempotency_key text, status smallint, body bytea)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT tenantry.acts_for_operator() THEN
        RAISE EXCEPTION 'only the operator''s transactions keep operator idempotency keys' USING ERRCODE = 'TN403';
    END IF;
    UPDATE tenantry.operator_idempotency_keys k
       SET status = complete_operator_idempotency_key.status, body = complete_operator_idempotency_key.body
     WHERE k.idempotency_key = complete_operator_idempotency_key.idempotency_key AND k.status IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the operator''s idempotency key this write claimed is not there to complete'
            USING ERRCODE = 'XX000';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.complete_operator_idempotency_key(text, smallint, bytea) IS 'Stores the response of the operator''s write under the key its transaction claimed (only a key still without a response); TN403 for anyone but the operator.';
GRANT EXECUTE ON FUNCTION tenantry.complete_operator_idempotency_key(text, smallint, bytea) TO tenantry_admin, tenantry_app;

-- A person's keys (migration 0066): no role reads or writes them directly;
-- the two functions below, as the owner, for a proven user context (a
-- signed-in person acting before any tenant: creating a tenant of their own).
CREATE POLICY person_idempotency_keys_no_direct_access ON tenantry.person_idempotency_keys
    AS RESTRICTIVE FOR ALL TO PUBLIC USING (false) WITH CHECK (false);
COMMENT ON POLICY person_idempotency_keys_no_direct_access ON tenantry.person_idempotency_keys IS 'No role reads or writes a person''s idempotency keys directly: claim_person_idempotency_key and complete_person_idempotency_key do, as the owner, in the namespace of the person the proven user context names (the table is granted to none).';

/**
 * The signed-in person of a proven user context (no tenant): the namespace
 * of their idempotency keys. TN403 for any other transaction, so SQL cannot
 * claim or read keys in a person's name without a context proven for them.
 */
CREATE OR REPLACE FUNCTION tenantry.idempotency_person()
RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid uuid := tenantry.current_user_id();
BEGIN
    IF uid IS NULL OR tenantry.current_tenant_id() IS NOT NULL THEN
        RAISE EXCEPTION 'only a signed-in person''s transactions keep a person''s idempotency keys' USING ERRCODE = 'TN403';
    END IF;
    RETURN uid;
END
$$;
COMMENT ON FUNCTION tenantry.idempotency_person() IS 'Internal: the person of the proven user context (no tenant), whose namespace a person''s idempotency key is kept in; TN403 outside one. Not granted.';

/**
 * claim_idempotency_key for a signed-in person's writes before any tenant:
 * the key in the person's namespace (person_idempotency_keys). No row: the
 * key is this transaction's; one row: the stored response of a committed
 * request with it, and whether it was the same request.
 */
CREATE OR REPLACE FUNCTION tenantry.claim_person_idempotency_key(idempotency_key text, fingerprint bytea)
RETURNS TABLE (status smallint, body bytea, same_request boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '200ms'
AS $$
DECLARE
    uid uuid := tenantry.idempotency_person();
    claimed integer;
BEGIN
    BEGIN
        DELETE FROM tenantry.person_idempotency_keys k
         WHERE k.user_id = uid AND k.idempotency_key = claim_person_idempotency_key.idempotency_key
           AND k.created_at <= now() - interval '24 hours';
        INSERT INTO tenantry.person_idempotency_keys (user_id, idempotency_key, fingerprint)
        VALUES (uid, claim_person_idempotency_key.idempotency_key, claim_person_idempotency_key.fingerprint)
        ON CONFLICT ON CONSTRAINT person_idempotency_keys_pkey DO NOTHING;
        GET DIAGNOSTICS claimed = ROW_COUNT;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'a request with this Idempotency-Key is still being processed; retry it later'
            USING ERRCODE = 'TN409', HINT = 'Idempotency-Key';
    END;
    IF claimed = 1 THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT k.status, k.body, k.fingerprint = claim_person_idempotency_key.fingerprint
          FROM tenantry.person_idempotency_keys k
         WHERE k.user_id = uid AND k.idempotency_key = claim_person_idempotency_key.idempotency_key;
END
$$;
COMMENT ON FUNCTION tenantry.claim_person_idempotency_key(text, bytea) IS 'Claims an Idempotency-Key in the signed-in person''s namespace for a proven user context (no row), or returns the committed response stored under it and whether it was for the same request; TN409 while another transaction holds it uncommitted for more than 200 ms; TN403 outside a user context.';
GRANT EXECUTE ON FUNCTION tenantry.claim_person_idempotency_key(text, bytea) TO tenantry_app;

/** Stores the response under the person's key this transaction claimed (sent with COMMIT). */
CREATE OR REPLACE FUNCTION tenantry.complete_person_idempotency_key(idempotency_key text, status smallint, body bytea)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uid uuid := tenantry.idempotency_person();
BEGIN
    UPDATE tenantry.person_idempotency_keys k
       SET status = complete_person_idempotency_key.status, body = complete_person_idempotency_key.body
     WHERE k.user_id = uid AND k.idempotency_key = complete_person_idempotency_key.idempotency_key
       AND k.status IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the person''s idempotency key this write claimed is not there to complete'
            USING ERRCODE = 'XX000';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.complete_person_idempotency_key(text, smallint, bytea) IS 'Stores the response of a signed-in person''s write under the key its transaction claimed (only a key still without a response); TN403 outside a user context.';
GRANT EXECUTE ON FUNCTION tenantry.complete_person_idempotency_key(text, smallint, bytea) TO tenantry_app;

/**
 * Stores the response of the current tenant's write under the key its
 * transaction claimed (sent with COMMIT). Raises unless it stored it, so a
 * write whose key was not claimed in this transaction's tenant (its work
 * changed the context) commits nothing rather than a key without a response.
 * Runs as its caller, under the table's policy.
 */
CREATE OR REPLACE FUNCTION tenantry.complete_idempotency_key(idempotency_key text, status smallint, body bytea)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    -- A value, not a call in the UPDATE: Citus refuses a STABLE function
    -- inside the NULLIF current_tenant_id() inlines to (docs/scale-out.md).
    tid uuid := tenantry.current_tenant_id();
BEGIN
    UPDATE tenantry.idempotency_keys k
       SET status = complete_idempotency_key.status, body = complete_idempotency_key.body
     WHERE k.tenant_id = tid
       AND k.idempotency_key = complete_idempotency_key.idempotency_key AND k.status IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the idempotency key this write claimed is not the current tenant''s to complete'
            USING ERRCODE = 'XX000';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.complete_idempotency_key(text, smallint, bytea) IS 'Stores the response of the current tenant''s write under the key its transaction claimed; raises (nothing commits) unless it did.';
GRANT EXECUTE ON FUNCTION tenantry.complete_idempotency_key(text, smallint, bytea) TO tenantry_app;

/**
 * Row trigger on idempotency_keys: the responses stored under a tenant's keys
 * count against its max_storage_bytes for the 24 hours they are kept, as
 * resources do (tenant_quota_usage, 03_resources.sql): a keyed write whose
 * stored response would cross the quota is refused (TN429) and writes
 * nothing; expiry gives the bytes back. Without the count a tenant could fill
 * the shared disk with responses no quota sees.
 */
CREATE OR REPLACE FUNCTION tenantry.idempotency_keys_quota()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
    bytes bigint := CASE TG_OP WHEN 'DELETE' THEN -coalesce(octet_length(OLD.body), 0)
                               ELSE coalesce(octet_length(NEW.body), 0) - coalesce(octet_length(OLD.body), 0) END;
    s jsonb;
    used bigint;
BEGIN
    IF bytes = 0 THEN
        RETURN NULL;
    END IF;
    -- Read first without a lock: a tenant without a quota (most) has
    -- nothing to count, and on Citus a row lock on the tenants reference
    -- table taken here, on another connection of the same transaction than
    -- the write's, met the write's own locks as a distributed deadlock.
    SELECT settings INTO s FROM tenantry.tenants WHERE tenant_id = tid;
    IF NOT (s ? 'max_resources' OR s ? 'max_storage_bytes') THEN
        RETURN NULL;
    END IF;
    SELECT settings INTO s FROM tenantry.tenants WHERE tenant_id = tid FOR SHARE;
    IF NOT (s ? 'max_resources' OR s ? 'max_storage_bytes') THEN
        RETURN NULL;
    END IF;
    -- Never below zero: a count that went wrong must not make the expiry
    -- sweep, which runs for every tenant, fail on this tenant's rows.
    UPDATE tenantry.tenant_quota_usage u SET storage_bytes = greatest(u.storage_bytes + bytes, 0)
     WHERE u.tenant_id = tid
    RETURNING u.storage_bytes INTO used;
    IF NOT FOUND THEN
        PERFORM tenantry.recount_quota_usage(tid);
        SELECT u.storage_bytes INTO used FROM tenantry.tenant_quota_usage u WHERE u.tenant_id = tid;
    END IF;
    IF bytes > 0 AND tenantry.limits_refuse_writer() AND s ? 'max_storage_bytes'
       AND used > (s->>'max_storage_bytes')::numeric THEN
        RAISE EXCEPTION 'this tenant may store at most % bytes (responses kept for its idempotency keys count for 24 hours)',
            (s->>'max_storage_bytes')::numeric::bigint
            USING ERRCODE = 'TN429', HINT = 'settings.max_storage_bytes';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.idempotency_keys_quota() IS 'Trigger: counts the responses stored under a tenant''s idempotency keys against its max_storage_bytes while they are kept; TN429 when storing one would exceed it (a tenant role''s write), bytes given back on expiry. Not granted.';

CREATE OR REPLACE TRIGGER idempotency_keys_quota
    AFTER INSERT OR UPDATE OF body OR DELETE ON tenantry.idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION tenantry.idempotency_keys_quota();
COMMENT ON TRIGGER idempotency_keys_quota ON tenantry.idempotency_keys IS 'Stored responses count against the tenant''s storage quota while kept (idempotency_keys_quota).';

/**
 * Deletes up to `batch` idempotency keys older than 24 hours, of any tenant
 * (and up to `batch` of the operator's and of people's), and returns how
 * many. Row locks only (never a table lock): each tenant's oldest keys are
 * found through idempotency_keys_expiry_idx. The server calls it
 * periodically until it returns less than `batch`.
 */
CREATE OR REPLACE FUNCTION tenantry.expire_idempotency_keys(batch integer DEFAULT 1000)
RETURNS integer
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH expired AS (
        SELECT e.tenant_id, e.idempotency_key
          FROM tenantry.tenants t
         CROSS JOIN LATERAL (
               SELECT k.tenant_id, k.idempotency_key
                 FROM tenantry.idempotency_keys k
                WHERE k.tenant_id = t.tenant_id
                  AND k.created_at <= pg_catalog.now() - interval '24 hours'
                ORDER BY k.created_at
                LIMIT greatest(batch, 0)) e
         LIMIT greatest(batch, 0)
    ), deleted AS (
        DELETE FROM tenantry.idempotency_keys k
         USING expired x
         WHERE k.tenant_id = x.tenant_id AND k.idempotency_key = x.idempotency_key
           AND k.created_at <= pg_catalog.now() - interval '24 hours'
        RETURNING 1
    ), person_expired AS (
        SELECT p.user_id, p.idempotency_key
          FROM tenantry.person_idempotency_keys p
         WHERE p.created_at <= pg_catalog.now() - interval '24 hours'
         ORDER BY p.created_at
         LIMIT greatest(batch, 0)
    ), person_deleted AS (
        DELETE FROM tenantry.person_idempotency_keys p
         USING person_expired x
         WHERE p.user_id = x.user_id AND p.idempotency_key = x.idempotency_key
           AND p.created_at <= pg_catalog.now() - interval '24 hours'
        RETURNING 1
    ), operator_expired AS (
        SELECT o.idempotency_key
          FROM tenantry.operator_idempotency_keys o
         WHERE o.created_at <= pg_catalog.now() - interval '24 hours'
         ORDER BY o.created_at
         LIMIT greatest(batch, 0)
    ), operator_deleted AS (
        DELETE FROM tenantry.operator_idempotency_keys o
         USING operator_expired x
         WHERE o.idempotency_key = x.idempotency_key
           AND o.created_at <= pg_catalog.now() - interval '24 hours'
        RETURNING 1
    )
    SELECT greatest((SELECT count(*) FROM deleted), (SELECT count(*) FROM operator_deleted),
                    (SELECT count(*) FROM person_deleted))::integer
$$;
COMMENT ON FUNCTION tenantry.expire_idempotency_keys(integer) IS 'Deletes up to batch idempotency keys older than 24 hours (any tenant''s, and up to batch of the operator''s and of people''s) and returns the largest of the three counts; row locks only. Operators (tenantry_admin): the server runs it periodically.';
GRANT EXECUTE ON FUNCTION tenantry.expire_idempotency_keys(integer) TO tenantry_admin;
