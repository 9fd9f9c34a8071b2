-- =============================================================================
-- 0060 Invitations that may make an owner
--
-- The first person to join a tenant that has no owner becomes its owner, and
-- an owner holds every permission. An invitation checked only that its
-- creator held members.invite and the invitation's role, so a key holding
-- members.invite alone invited its own person into a tenant created by the
-- operator (no member yet) and made them its owner, who then minted an
-- unbound key (found by a review of the hierarchy). An invitation now records
-- whether its creator held every permission (may_own); accepting one that
-- does not into a tenant without an owner is refused, and creating one for
-- such a tenant without every permission too (04_access.sql).
--
-- Invitations made before keep the behaviour they were made under (true).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.invitations ADD COLUMN may_own boolean NOT NULL DEFAULT true;
ALTER TABLE tenantry.invitations ALTER COLUMN may_own SET DEFAULT false;
COMMENT ON COLUMN tenantry.invitations.may_own IS 'Whether accepting it may make the person the tenant''s owner (the tenant having none): its creator held every permission. Set by create_invitation.';
