-- =============================================================================
-- 0010 every index a tenant role can scan leads with the tenant column
--
-- Issue 10, finding 8: where a policy is a filter rather than an index
-- condition, EXPLAIN ANALYZE's "Rows Removed by Filter" counts the foreign
-- rows a scan touched: an existence test for any id, a tenant's row count, a
-- binary search over names and key prefixes. The planner makes a policy an
-- index condition of every index whose leading column it constrains, so the
-- indexes that lead with anything else go (the policies that were OR'd with
-- another are rewritten in repeatable/03_resources.sql and 04_access.sql):
--
-- * resources_id_idx (id): point reads use the primary key (tenant_id, id)
--   with the visible tenants; rows shared with a tenant are read through
--   resources_shared_with_me(), via the GIN index on shared_with.
-- * shared_resources_target_idx (shared_with, shared_at): shares made to a
--   deleted tenant are found through that same GIN index.
-- * tenants_parent_id_idx (parent_id): children are found through the
--   closure table, whose indexes lead with the columns its policy constrains.
-- * api_keys_prefix_idx (prefix): key verification looks the prefix up in
--   api_key_lookup, which no tenant role can read.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DROP INDEX tenantry.resources_id_idx;
DROP INDEX tenantry.shared_resources_target_idx;
DROP INDEX tenantry.tenants_parent_id_idx;

CREATE TABLE tenantry.api_key_lookup (
    tenant_id uuid NOT NULL,
    key_id    uuid NOT NULL,
    prefix    text NOT NULL,
    PRIMARY KEY (tenant_id, key_id),
    FOREIGN KEY (tenant_id, key_id) REFERENCES tenantry.api_keys (tenant_id, key_id) ON DELETE CASCADE
);
CREATE INDEX api_key_lookup_prefix_idx ON tenantry.api_key_lookup (prefix);
ALTER TABLE tenantry.api_key_lookup ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.api_key_lookup FORCE ROW LEVEL SECURITY;
COMMENT ON TABLE tenantry.api_key_lookup IS 'Directory of key prefixes for verification before any tenant is known (prefix -> tenant, key). Granted to no role: an index on the prefix in a table tenants read would let them probe other tenants'' keys.';

INSERT INTO tenantry.api_key_lookup (tenant_id, key_id, prefix)
SELECT tenant_id, key_id, prefix FROM tenantry.api_keys;

DROP INDEX tenantry.api_keys_prefix_idx;
