-- =============================================================================
-- 0027 the operator's idempotency keys
--
-- The admin token's writes (creating, changing, suspending, deleting and
-- purging tenants, minting a tenant's key) take an `Idempotency-Key` too, as
-- tenants' writes do (0024). They have no tenant to keep it for (creating a
-- tenant has none yet), so the operator's keys live in their own namespace:
-- this table, reached only through the owner's functions in
-- repeatable/13_idempotency.sql, which check that the transaction acts for
-- the operator. Same rules: claimed and answered in the write's own
-- transaction, replayed for 24 hours, then deleted by
-- tenantry.expire_idempotency_keys().
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.operator_idempotency_keys (
    idempotency_key text PRIMARY KEY CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint     bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    status          smallint CHECK (status BETWEEN 200 AND 499),
    body            bytea,
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenantry.operator_idempotency_keys IS 'Idempotency-Key of a write the operator (the admin token) made, the SHA-256 of its request (method, path, body) and the response it got, written in the write''s own transaction; replayed to a retry of the same request for 24 hours, then deleted by expire_idempotency_keys(). No tenant''s data: the operator''s namespace, reached only through claim_operator_idempotency_key and complete_operator_idempotency_key.';
COMMENT ON COLUMN tenantry.operator_idempotency_keys.status IS 'HTTP status of the stored response; NULL only inside the transaction that claimed the key.';
COMMENT ON COLUMN tenantry.operator_idempotency_keys.body IS 'The response body exactly as sent (NULL: none, as for 204); secrets shown once (API keys) are blanked before it is stored.';
ALTER TABLE tenantry.operator_idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.operator_idempotency_keys FORCE ROW LEVEL SECURITY;

CREATE INDEX operator_idempotency_keys_expiry_idx ON tenantry.operator_idempotency_keys (created_at);

-- A tenant's keys no longer reference tenants: the foreign key's check
-- (FOR KEY SHARE on the tenant's row) waited behind a tier move holding that
-- row, and the claim's 200 ms lock_timeout, meant for a key another request
-- holds, answered such a wait with 409 "still being processed". The key's
-- tenant comes from the verified context, and purge deletes its keys by
-- tenant_id like every tenant-keyed table's rows.
ALTER TABLE tenantry.idempotency_keys DROP CONSTRAINT idempotency_keys_tenant_id_fkey;
COMMENT ON INDEX tenantry.idempotency_keys_expiry_idx IS 'The expiry sweep takes each tenant''s oldest keys by it (led by tenant_id like every index of a tenant table).';
