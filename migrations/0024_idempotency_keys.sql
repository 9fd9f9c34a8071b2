-- =============================================================================
-- 0024 idempotency keys
--
-- A write sent with an `Idempotency-Key` header records its key, a
-- fingerprint of the request (method, path, body) and the response it got,
-- in the same transaction as the write itself: a retry of a request whose
-- COMMIT went through (even when its answer was lost) finds the row and is
-- answered with the stored response instead of writing again. Rows expire
-- after 24 hours; tenantry.expire_idempotency_keys() deletes them in batches
-- (repeatable/13_idempotency.sql).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.idempotency_keys (
    tenant_id       uuid NOT NULL REFERENCES tenantry.tenants (tenant_id),
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint     bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    status          smallint CHECK (status BETWEEN 200 AND 499),
    body            bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idempotency_key)
);
COMMENT ON TABLE tenantry.idempotency_keys IS 'Idempotency-Key of a tenant''s write, the SHA-256 of its request (method, path, body) and the response it got (status, body), written in the write''s own transaction; replayed to a retry of the same request for 24 hours, then deleted by expire_idempotency_keys().';
COMMENT ON COLUMN tenantry.idempotency_keys.status IS 'HTTP status of the stored response; NULL only inside the transaction that claimed the key (a committed row always has one).';
COMMENT ON COLUMN tenantry.idempotency_keys.body IS 'The response body exactly as sent (NULL: none, as for 204); secrets shown once (API keys, tokens) are blanked before it is stored.';
ALTER TABLE tenantry.idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.idempotency_keys FORCE ROW LEVEL SECURITY;

-- The expiry sweep walks tenants and takes each one's oldest keys by this
-- index: led by tenant_id like every index of a tenant table.
CREATE INDEX idempotency_keys_expiry_idx ON tenantry.idempotency_keys (tenant_id, created_at);
