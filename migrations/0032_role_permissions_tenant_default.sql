-- =============================================================================
-- 0032 role_permissions' tenant defaults to the current tenant
--
-- roles' and resources' tenant_id default to tenantry.current_tenant_id();
-- role_permissions' had no default, so the guide's INSERT INTO
-- role_permissions (role_id, permission_id) failed in a tenant's context. It
-- has the same default now (the policies still decide what may be written).
-- (The record of tenantry's own policies that the doctor compares with is
-- made by repeatable/15_own_policies.sql, with no table of its own.)
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.role_permissions ALTER COLUMN tenant_id SET DEFAULT tenantry.current_tenant_id();
