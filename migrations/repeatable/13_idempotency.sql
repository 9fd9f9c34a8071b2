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

GRANT SELECT, INSERT, UPDATE, DELETE ON tenantry.idempotency_keys TO tenantry_app;

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
COMMENT ON FUNCTION tenantry.claim_idempotency_key(text, bytea) IS 'Claims an Idempotency-Key for the current tenant''s transaction (no row), or returns the committed response stored under it and whether it was for the same request; TN409 while another transaction holds it uncommitted for more than 200 ms.';
GRANT EXECUTE ON FUNCTION tenantry.claim_idempotency_key(text, bytea) TO tenantry_app;

/**
 * Deletes up to `batch` idempotency keys older than 24 hours, of any tenant,
 * and returns how many. Row locks only (never a table lock): each tenant's
 * oldest keys are found through idempotency_keys_expiry_idx. The server
 * calls it periodically until it returns less than `batch`.
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
    )
    SELECT count(*)::integer FROM deleted
$$;
COMMENT ON FUNCTION tenantry.expire_idempotency_keys(integer) IS 'Deletes up to batch idempotency keys older than 24 hours (any tenant) and returns how many; row locks only. Operators (tenantry_admin): the server runs it periodically.';
GRANT EXECUTE ON FUNCTION tenantry.expire_idempotency_keys(integer) TO tenantry_admin;
