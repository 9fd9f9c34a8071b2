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
--   maker_user  the person who made it in their own request (the owner, or
--               a member with the permissions the server put in the
--               context): it stands while they are an active member holding
--               members.invite and every permission of its role;
--   maker_key   the key of the tenant that made it: it stands while the key
--               is neither revoked nor expired and holds members.invite and
--               every permission of its role.
--
-- An invitation that may make its person the tenant's owner (may_own, 0060)
-- does so only while its maker still holds every permission.
--
-- A key that expires after a rotation hands its invitations on to its
-- successor (invitation_key), so that a routine rotation does not end them;
-- a revoked key ends them, rotated or not.
--
-- NULL where the authority was not a member's or a key's (the operator's
-- token, the CLI, a context a team's own code set up with the library with
-- every permission for someone who does not own the tenant). Pending
-- invitations made before this migration get the standing their
-- created_by names where it can be told:
--   - a key (`key:<id>`): always; a key revoked, expired (never rotated) or
--     deleted since (with its member) ends its invitations here;
--   - a person (`user:<id>`) who is still an active member. One who is no
--     member any more cannot be told from a library context's user, so
--     those are left as they were (docs/people.md lists them, to revoke).
-- Not readable by the app roles (no column privilege). Nullable without a
-- default: adding them rewrites nothing.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.invitations
    ADD COLUMN maker_user uuid,
    ADD COLUMN maker_key uuid;
COMMENT ON COLUMN tenantry.invitations.maker_user IS 'The person who made the invitation in their own request (the owner, or a member with restricted permissions): it can be accepted only while they are an active member holding members.invite and every permission of its role. NULL otherwise.';
COMMENT ON COLUMN tenantry.invitations.maker_key IS 'The key of the tenant that made the invitation: it can be accepted only while that key (or, once it expired after a rotation, its successor) is neither revoked nor expired and holds members.invite and every permission of its role. NULL otherwise.';

UPDATE tenantry.invitations i
   SET maker_key = substr(i.created_by, 5)::uuid
 WHERE i.accepted_at IS NULL AND i.revoked_at IS NULL
   AND i.created_by ~ '^key:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';

-- Compared as text: the cast of created_by is never tried on another row.
UPDATE tenantry.invitations i
   SET maker_user = m.user_id
  FROM tenantry.tenant_members m
 WHERE i.accepted_at IS NULL AND i.revoked_at IS NULL
   AND i.created_by LIKE 'user:%'
   AND m.tenant_id = i.tenant_id AND m.user_id::text = substr(i.created_by, 6) AND NOT m.pending;
