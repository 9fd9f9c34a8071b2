-- =============================================================================
-- 0054 Request-log batches written once, whatever the connection does
--
-- The server writes request-log rows in batches and retries a batch while
-- the database is unavailable. A connection lost after its COMMIT was sent
-- leaves the batch in doubt: it may have committed, and the retry wrote it
-- again (found by a resilience review: a standby that never answered made
-- a committed batch's connection drop, and usage counted its requests
-- twice). Each batch now claims a random id in this table in the same
-- statement that appends its rows (tenantry.claim_request_log_batch,
-- repeatable code): a retry of a batch that committed claims nothing and
-- appends nothing. Claims older than an hour are deleted by
-- ensure_request_log_partitions (the server retries a batch for a minute).
-- Not tenant data: no tenant_id, no row level security, no grant; only the
-- owner's functions use it.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.request_log_batches (
    batch_id   uuid PRIMARY KEY,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenantry.request_log_batches IS 'Ids of the request-log batches the server wrote in the last hour (claim_request_log_batch), so that a batch retried after its commit was in doubt is not written twice. No tenant data; no grant.';
