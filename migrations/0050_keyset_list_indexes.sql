-- =============================================================================
-- 0050 The indexes a page of keys, members and invitations is read through
--
-- The API reads these lists a page at a time, by their place in the order
-- (created_at, id) after the last row of the page before, LIMIT the page's
-- size (repeatable code; found by a review as a hostile tenant: a page of one
-- read every key the tenant ever made). Without an index in that order the
-- database still read and sorted all of a tenant's rows for each page, and
-- for a tenant with a wide subtree evaluated the policy's subtree on each of
-- them (a verification review measured keys?limit=1 at 300 ms for 1,400
-- keys). Each index leads with tenant_id, the column the tables' policies
-- constrain (0010: a scan never touches another tenant's rows).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE INDEX api_keys_tenant_created_idx ON tenantry.api_keys (tenant_id, created_at DESC, key_id DESC);
CREATE INDEX tenant_members_tenant_created_idx ON tenantry.tenant_members (tenant_id, created_at, user_id);
CREATE INDEX invitations_tenant_created_idx ON tenantry.invitations (tenant_id, created_at DESC, invitation_id DESC);
