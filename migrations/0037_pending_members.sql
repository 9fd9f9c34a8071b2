-- =============================================================================
-- 0037 A person joins a tenant only by accepting
--
-- POST /v1/members with a user id made that person a member at once (and the
-- owner of a tenant without one): any tenant holding members.write could put
-- anyone whose id it knew or computed (an Auth0 or Clerk id is UUIDv5 of
-- issuer and subject) into its tenant, listed among their tenants and acting
-- there with their token, without their consent (found by a new user's
-- review, 2026-12-02). Such a member is now pending: a record the tenant can
-- give roles and bind keys to, which the person does not see and cannot act
-- through until they accept an invitation naming them
-- (repeatable/04_access.sql: member_identity, my_tenants, accept_invitation).
-- Members of earlier builds and those added by SQL stay as they were
-- (pending defaults to false: adding the column rewrites nothing).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.tenant_members ADD COLUMN pending boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN tenantry.tenant_members.pending IS 'Added by the tenant with the person''s user id and not yet accepted by them: the person neither sees the tenant nor acts in it until they accept an invitation naming them (accept_invitation), and a pending member is never the owner. The tenant''s keys may still be bound to it.';
