-- =============================================================================
-- 0008 repeatable definitions, quota counters, field limits, dead code
--
-- From here on the current definition of every function, view, trigger,
-- policy and grant lives in migrations/repeatable/ (one file per domain,
-- re-applied when it changes; rules in migrations/README.md). Versioned
-- migrations like this one hold tables and data changes only.
--
-- 1. schema_definitions: which versions of the repeatable files were applied.
-- 2. tenant_quota_usage: exact per-tenant counters for tenants with quotas,
--    so max_resources / max_storage_bytes are enforced by the database
--    (03_resources.sql) instead of by one HTTP handler; filled here.
-- 3. roles.description: at most 500 characters, like key descriptions (it was
--    only checked by the HTTP API).
-- 4. constant_time_equal() is gone: key verification compares digests since
--    0007, and nothing calls it. tenant_context_values() gives way to
--    tenant_context_row() (01_context.sql), which the planner can inline.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.schema_definitions (
    name       text NOT NULL,
    checksum   bytea NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_by text NOT NULL DEFAULT session_user,
    PRIMARY KEY (name, checksum)
);
COMMENT ON TABLE tenantry.schema_definitions IS 'Every version (SHA-256) of each repeatable definition file (migrations/repeatable/*.sql) that tenantry migrate applied, and when: the latest per file is the current one. A build whose file is an older version than the current one is refused (a downgrade); one with a version never applied re-applies them all.';

CREATE TABLE tenantry.tenant_quota_usage (
    tenant_id      uuid PRIMARY KEY REFERENCES tenantry.tenants (tenant_id),
    resource_count bigint NOT NULL CHECK (resource_count >= 0),
    storage_bytes  bigint NOT NULL CHECK (storage_bytes >= 0)
);
COMMENT ON TABLE tenantry.tenant_quota_usage IS 'Exact resource count and bytes of each tenant that has a quota (max_resources or max_storage_bytes), kept by statement triggers on resources; its row lock serialises that tenant''s writers so a quota cannot be raced past. No row: no quota.';
ALTER TABLE tenantry.tenant_quota_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.tenant_quota_usage FORCE ROW LEVEL SECURITY;

-- No write may slip between this count and the triggers that keep it (they are
-- created later in the same migration run, which is one transaction).
LOCK TABLE tenantry.resources IN SHARE MODE;
INSERT INTO tenantry.tenant_quota_usage (tenant_id, resource_count, storage_bytes)
SELECT t.tenant_id, count(r.id), coalesce(sum(r.size_bytes), 0)
FROM tenantry.tenants t
LEFT JOIN tenantry.resources r ON r.tenant_id = t.tenant_id
WHERE t.settings ? 'max_resources' OR t.settings ? 'max_storage_bytes'
GROUP BY t.tenant_id;

-- Rows written over SQL before the limit are kept: then the constraint holds
-- for new writes (NOT VALID) until someone shortens them and validates it.
DO $limit$
BEGIN
    IF EXISTS (SELECT 1 FROM tenantry.roles WHERE length(description) > 500) THEN
        RAISE NOTICE 'roles with descriptions over 500 characters are kept; the limit applies to new writes (VALIDATE CONSTRAINT roles_description_length once they are shortened)';
        ALTER TABLE tenantry.roles
            ADD CONSTRAINT roles_description_length CHECK (length(description) <= 500) NOT VALID;
    ELSE
        ALTER TABLE tenantry.roles
            ADD CONSTRAINT roles_description_length CHECK (length(description) <= 500);
    END IF;
END
$limit$;

DROP FUNCTION tenantry.constant_time_equal(bytea, bytea);
DROP FUNCTION tenantry.tenant_context_values(uuid);
