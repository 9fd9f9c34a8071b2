-- =============================================================================
-- 0067 Pending invitations that may make an owner, worked out again
--
-- 0060 gave every invitation that existed `may_own = true` ("the behaviour
-- they were made under"), and that behaviour was the hole 0060 closed: an
-- invitation made before it by a key holding members.invite alone, into a
-- tenant without an owner, still made its person the owner once accepted
-- after the upgrade (found by a review upgrading a database of 2026-12-05).
-- Every invitation made before 0060 and still pending now says whether its
-- creator held every permission, as far as its creator can still be told:
--   - the admin token or the CLI (`admin`, `cli:…`): yes;
--   - a key (`key:<id>`): when it is the tenant's unbound, unscoped key;
--   - a member (`user:<id>`): when they own the tenant now;
--   - anything else: no. `db:<login>` is what any context that names no
--     actor records, a library context holding members.invite alone among
--     them, and a label set by SQL or a key or member since gone says
--     nothing either (a verification review found both kept at first).
-- An invitation refused for it answers its person 409 ("ask its operator"),
-- who can invite them again. Accepted and revoked invitations, and those
-- made since 0060 (whose may_own create_invitation set), are left as they
-- are.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

UPDATE tenantry.invitations i
   SET may_own = CASE
       WHEN i.created_by = 'admin' OR i.created_by LIKE 'cli:%' THEN true
       WHEN i.created_by ~ '^key:[0-9a-f-]{36}$' THEN EXISTS (
           SELECT 1 FROM tenantry.api_keys k
            WHERE k.tenant_id = i.tenant_id AND k.key_id::text = substr(i.created_by, 5)
              AND k.user_id IS NULL AND k.role_id IS NULL AND k.scopes IS NULL)
       WHEN i.created_by ~ '^user:[0-9a-f-]{36}$' THEN EXISTS (
           SELECT 1 FROM tenantry.tenant_members m
            WHERE m.tenant_id = i.tenant_id AND m.user_id::text = substr(i.created_by, 6)
              AND m.is_owner)
       ELSE false
   END
 WHERE i.may_own
   AND i.accepted_at IS NULL AND i.revoked_at IS NULL
   -- Made before 0060 (applied in an earlier upgrade, or in this one: its
   -- applied_at is then this transaction's start, after every row here).
   AND i.created_at < (SELECT m.applied_at FROM tenantry.schema_migrations m WHERE m.version = 60);
