-- =============================================================================
-- 0014 the registry of adopted tables
--
-- A team's own tables (invoices, projects, ...) become tenant tables through
-- tenantry.adopt_table() (repeatable/10_tables.sql), which records each one
-- here with its options. The doctor (tenantry.table_problems()) and the
-- definitions step re-check and re-secure every table listed.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

CREATE TABLE tenantry.tenant_tables (
    table_id        regclass PRIMARY KEY,
    hierarchy       boolean NOT NULL,
    previous_owner  name NOT NULL,
    adopted_at      timestamptz NOT NULL DEFAULT now(),
    adopted_by      name NOT NULL DEFAULT session_user
);
COMMENT ON TABLE tenantry.tenant_tables IS 'Tables adopted by tenantry.adopt_table(): each is a tenant table (tenant_id, forced RLS, the policies of its options, owned by tenantry_owner). hierarchy: ancestors read and write their descendants'' rows; previous_owner gets the table back on release_table().';
