-- =============================================================================
-- 0045 Which tenant made each share
--
-- A parent may share a descendant's resource or row with another tenant.
-- Detached (or moved under another parent), the descendant's data stayed
-- readable through such a share by whichever tenant the former parent had
-- named, one it may control (its other child, say): the parent kept reading
-- the data of a tenant that was no longer its own. Each share now records
-- the tenant whose context made it, and a re-parenting revokes the shares of
-- the moved subtree's rows made by a tenant that no longer reads them
-- through the hierarchy (repeatable/02_tenants.sql,
-- revoke_shares_past_hierarchy). Shares made before record none and are
-- taken as the owner's own (kept).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.shared_resources ADD COLUMN shared_by_tenant uuid;
COMMENT ON COLUMN tenantry.shared_resources.shared_by_tenant IS 'The tenant whose context made the share (the owner or one of its ancestors; NULL for shares made before migration 0045, taken as the owner''s): re-parenting the owner revokes a share whose maker no longer reads the resource through the hierarchy.';
ALTER TABLE tenantry.shared_rows ADD COLUMN shared_by_tenant uuid;
COMMENT ON COLUMN tenantry.shared_rows.shared_by_tenant IS 'The tenant whose context made the share (the owner or one of its ancestors; NULL for shares made before migration 0045, taken as the owner''s): re-parenting the owner revokes a share whose maker no longer reads the row through the hierarchy.';
