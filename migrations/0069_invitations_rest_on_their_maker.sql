-- =============================================================================
-- 0069 Who an invitation's authority came from, so that it ends with it
--
-- An invitation was checked once, when it was made: its maker held
-- members.invite and every permission of the role it hands out. It then
-- stayed good for up to 30 days whatever became of its maker, so a member
-- about to be removed could invite a second address of their own with their
-- role and join again after the removal, and a key revoked at an offboarding
-- left its invitations usable. As 0053 did for impersonation sessions, an
-- invitation now records the standing it was made on, and accept_invitation
-- (repeatable code) refuses it, like a revoked one, once its maker could no
-- longer make it:
--
--   maker_user  a member of the tenant who made it in their own context (a
--               person's request): it stands while they are an active member
--               holding members.invite and every permission of its role;
--   maker_key   a key of the tenant that made it: it stands while the key is
--               neither revoked nor expired (a rotation's grace included) and
--               holds members.invite and every permission of its role.
--
-- An invitation that may make its person the tenant's owner (may_own, 0060)
-- does so only while its maker still holds every permission.
--
-- NULL where the authority was not a member's or a key's (the operator's
-- token, the CLI, a context a team's own code set up with the library for a
-- user who is not a member). Pending invitations made before this migration
-- get the standing their created_by names where it can still be told: a key
-- of the tenant (revoked or not: a revoked key's invitations end here), or a
-- person who is still an active member. A person who is no member any more
-- cannot be told from a library context's user, so those are left as they
-- were (revoke them by hand: docs/people.md). Not readable by the app roles
-- (no column privilege). Nullable without a default: adding them rewrites
-- nothing.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.invitations
    ADD COLUMN maker_user uuid,
    ADD COLUMN maker_key uuid;
COMMENT ON COLUMN tenantry.invitations.maker_user IS 'The active member of the tenant who made the invitation in their own context: it can be accepted only while they are an active member holding members.invite and every permission of its role. NULL otherwise.';
COMMENT ON COLUMN tenantry.invitations.maker_key IS 'The key of the tenant that made the invitation: it can be accepted only while the key is neither revoked nor expired and holds members.invite and every permission of its role. NULL otherwise.';

UPDATE tenantry.invitations i
   SET maker_key = k.key_id
  FROM tenantry.api_keys k
 WHERE i.accepted_at IS NULL AND i.revoked_at IS NULL
   AND i.created_by ~ '^key:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
   AND k.tenant_id = i.tenant_id AND k.key_id = substr(i.created_by, 5)::uuid;

UPDATE tenantry.invitations i
   SET maker_user = m.user_id
  FROM tenantry.tenant_members m
 WHERE i.accepted_at IS NULL AND i.revoked_at IS NULL
   AND i.created_by ~ '^user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
   AND m.tenant_id = i.tenant_id AND m.user_id = substr(i.created_by, 6)::uuid AND NOT m.pending;
