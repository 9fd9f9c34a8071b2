-- =============================================================================
-- 0043 One function holds a share's tenants
--
-- hold_share_target(uuid) and hold_share_owner(uuid, text), which share_resource
-- and share_row called to hold the target's and the owner's tenants rows
-- FOR KEY SHARE (0042's race), repeated each other's Citus guard and
-- lock_timeout; both are now hold_share_tenant(uuid), which returns the
-- status it held (repeatable/03_resources.sql). The repeatable files define
-- the new one; this drops the old ones, which nothing calls any more.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DROP FUNCTION IF EXISTS tenantry.hold_share_target(uuid);
DROP FUNCTION IF EXISTS tenantry.hold_share_owner(uuid, text);
