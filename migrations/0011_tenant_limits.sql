-- =============================================================================
-- 0011 tenant limits: counters for the children, descendants, API keys, roles,
-- members and shares of every tenant
--
-- Issue 10, finding 1: a tenant could create children, keys, roles, members
-- and shares without end. Each is now limited by a tenant setting with a
-- default (max_children, max_descendants, max_api_keys, max_roles,
-- max_members, max_shares; repeatable/09_limits.sql), counted exactly here so
-- that the check is one row update, not a count of rows.
--
-- Every tenant has a row (limits have defaults, so every tenant is limited),
-- written by the triggers of 09_limits.sql and filled here for the tenants
-- that exist. What counts is the same as tenantry.recount_limit_usage():
-- - children: direct children not deleted; descendants: the whole subtree
--   below the tenant, deleted tenants excluded;
-- - api_keys: keys neither revoked nor replaced by rotation;
-- - roles, members: rows; shares: shares of the tenant's resources.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.tenant_limit_usage (
    tenant_id   uuid PRIMARY KEY REFERENCES tenantry.tenants (tenant_id),
    children    bigint NOT NULL DEFAULT 0 CHECK (children >= 0),
    descendants bigint NOT NULL DEFAULT 0 CHECK (descendants >= 0),
    api_keys    bigint NOT NULL DEFAULT 0 CHECK (api_keys >= 0),
    roles       bigint NOT NULL DEFAULT 0 CHECK (roles >= 0),
    members     bigint NOT NULL DEFAULT 0 CHECK (members >= 0),
    shares      bigint NOT NULL DEFAULT 0 CHECK (shares >= 0)
);
COMMENT ON TABLE tenantry.tenant_limit_usage IS 'Exact counts behind each tenant''s limits (max_children, max_descendants, max_api_keys, max_roles, max_members, max_shares), one row per tenant, kept by row triggers (09_limits.sql); the row lock serialises one tenant''s creators so a limit cannot be raced past, and locks no other tenant''s rows.';
ALTER TABLE tenantry.tenant_limit_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.tenant_limit_usage FORCE ROW LEVEL SECURITY;

-- No write may slip between these counts and the triggers that keep them
-- (created later in the same migration run, which is one transaction).
LOCK TABLE tenantry.tenants, tenantry.tenant_hierarchy, tenantry.api_keys, tenantry.roles,
           tenantry.tenant_members, tenantry.shared_resources IN SHARE MODE;
INSERT INTO tenantry.tenant_limit_usage (tenant_id, children, descendants, api_keys, roles, members, shares)
SELECT t.tenant_id,
       (SELECT count(*) FROM tenantry.tenants c WHERE c.parent_id = t.tenant_id AND c.status <> 'deleted'),
       (SELECT count(*) FROM tenantry.tenant_hierarchy h JOIN tenantry.tenants d ON d.tenant_id = h.child_id
         WHERE h.parent_id = t.tenant_id AND h.depth > 0 AND d.status <> 'deleted'),
       (SELECT count(*) FROM tenantry.api_keys a
         WHERE a.tenant_id = t.tenant_id AND a.revoked_at IS NULL AND a.rotated_to IS NULL),
       (SELECT count(*) FROM tenantry.roles r WHERE r.tenant_id = t.tenant_id),
       (SELECT count(*) FROM tenantry.tenant_members m WHERE m.tenant_id = t.tenant_id),
       (SELECT count(*) FROM tenantry.shared_resources s WHERE s.tenant_id = t.tenant_id)
FROM tenantry.tenants t;
