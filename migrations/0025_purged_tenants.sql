-- =============================================================================
-- 0025 offboarding: purged tenants and the purge grace period
--
-- A purged tenant's rows are gone (tenantry.purge_tenant, repeatable/
-- 14_offboarding.sql); what stays is one row here, so that its id is never
-- given to a tenant again (create, import) and the operator can tell who
-- purged what, when.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.purged_tenants (
    tenant_id    uuid PRIMARY KEY,
    name         text NOT NULL,
    deleted_at   timestamptz NOT NULL,
    purged_at    timestamptz NOT NULL DEFAULT now(),
    purged_by    text NOT NULL,
    rows_deleted jsonb NOT NULL DEFAULT '{}'
);
ALTER TABLE tenantry.purged_tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.purged_tenants FORCE ROW LEVEL SECURITY;
COMMENT ON TABLE tenantry.purged_tenants IS 'The operator''s audit record of hard deletes, and the ids never given out again: one row per purged tenant (its last name, when it was soft-deleted and purged, by whom, how many rows of each table went). Written only by purge_tenant(); read by administrators.';

CREATE TABLE tenantry.purge_policy (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    grace     interval NOT NULL DEFAULT interval '30 days' CHECK (grace >= interval '0')
);
INSERT INTO tenantry.purge_policy DEFAULT VALUES;
COMMENT ON TABLE tenantry.purge_policy IS 'One row: how long a soft-deleted tenant is kept (restorable by an operator, exportable) before purge_tenant() may remove it. Operators change it with UPDATE as the migration role; no server role may.';
