-- =============================================================================
-- 0066 A signed-in person's idempotency keys
--
-- POST /v1/me/tenants (a person creating a tenant of their own, 0063) took
-- no Idempotency-Key: a retry after a lost answer made a second tenant,
-- counted against the person's number. The person has no tenant yet to keep
-- the key for, so a person's keys live in their own namespace, as the
-- operator's do (0027): this table, reached only through the owner's
-- functions in repeatable/13_idempotency.sql, which check that the
-- transaction is a proven user context (a signed-in person, no tenant).
-- Same rules as the tenants' and the operator's keys: claimed and answered
-- in the write's own transaction, replayed for 24 hours, then deleted by
-- tenantry.expire_idempotency_keys().
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.person_idempotency_keys (
    user_id         uuid NOT NULL,
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint     bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    status          smallint CHECK (status BETWEEN 200 AND 499),
    body            bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idempotency_key)
);
COMMENT ON TABLE tenantry.person_idempotency_keys IS 'Idempotency-Key of a write a signed-in person made before any tenant (creating a tenant of their own), the SHA-256 of its request (method, path, body, person) and the response it got, written in the write''s own transaction; replayed to a retry of the same request for 24 hours, then deleted by expire_idempotency_keys(). The person''s namespace, reached only through claim_person_idempotency_key and complete_person_idempotency_key.';
COMMENT ON COLUMN tenantry.person_idempotency_keys.user_id IS 'The signed-in person (the user id of their identity provider''s token) whose key it is.';
COMMENT ON COLUMN tenantry.person_idempotency_keys.status IS 'HTTP status of the stored response; NULL only inside the transaction that claimed the key.';
COMMENT ON COLUMN tenantry.person_idempotency_keys.body IS 'The response body exactly as sent; 410 and no body once the tenant it names was purged.';
ALTER TABLE tenantry.person_idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.person_idempotency_keys FORCE ROW LEVEL SECURITY;

CREATE INDEX person_idempotency_keys_expiry_idx ON tenantry.person_idempotency_keys (created_at);
COMMENT ON INDEX tenantry.person_idempotency_keys_expiry_idx IS 'The expiry sweep takes the oldest keys by it.';
