-- =============================================================================
-- 0052 The indexes a page of impersonation sessions is read through, and the
--      count of a tenant's live sessions
--
-- GET /v1/impersonations read every session of the caller's subtree, ended
-- ones included, and paged them in the server, and POST had no limit: a
-- red-team review started 99,414 sessions in 2.5 minutes (75 MB a minute of
-- sessions and audit rows), after which a page of one took 1 s and sixteen
-- listings at once took the server from 215 to 515 MB while another tenant's
-- reads slowed twentyfold. Pages are now read by the database in the order
-- (started_at, impersonation_id), LIMIT the page's size, and a tenant holds
-- at most 100 live sessions (repeatable code); both indexes lead with
-- tenant_id, the column the table's policy constrains (0010).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE INDEX impersonations_tenant_started_idx
    ON tenantry.impersonations (tenant_id, started_at DESC, impersonation_id DESC);
CREATE INDEX impersonations_tenant_live_idx
    ON tenantry.impersonations (tenant_id, expires_at) WHERE ended_at IS NULL;
