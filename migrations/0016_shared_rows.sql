-- =============================================================================
-- 0016 sharing rows of adopted tables
--
-- adopt_table(..., sharing => true) lets a tenant share single rows of one of
-- the team's own tables read-only with another tenant, as share_resource()
-- does for resources (repeatable/10_tables.sql: share_row, unshare_row, the
-- fence rows_shared_with_me). The option is recorded in tenant_tables, and the
-- shares in one registry for every adopted table, shared_rows, keyed by the
-- owning tenant first (Citus: tenant_id in every key).
--
-- A tenant role never reads shared_rows directly: the target's lookup needs an
-- index that leads with the target (shared_with), and an index a tenant role
-- can scan must lead with the column of its one policy (issue 10, finding 8).
-- Owners list their shares through shares_of_my_rows(), targets read the rows
-- through rows_shared_with_me(): both fences, as the owner.
--
-- adopt_table gains a parameter, so its old signature goes here and the
-- repeatable file creates the new one (migrations/README.md, rule 2); the same
-- for secure_tenant_table, which now also knows the sharing option (IF EXISTS:
-- on a fresh database the definitions come after the versioned migrations).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.tenant_tables ADD COLUMN sharing boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN tenantry.tenant_tables.sharing IS 'Rows may be shared read-only with other tenants (tenantry.share_row); targets read them through tenantry.rows_shared_with_me().';

CREATE TABLE tenantry.shared_rows (
    tenant_id   uuid NOT NULL REFERENCES tenantry.tenants (tenant_id),
    table_id    regclass NOT NULL REFERENCES tenantry.tenant_tables (table_id) ON DELETE CASCADE,
    row_id      text NOT NULL,
    shared_with uuid NOT NULL REFERENCES tenantry.tenants (tenant_id),
    shared_by   uuid,
    shared_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, table_id, row_id, shared_with),
    CONSTRAINT shared_rows_not_with_owner CHECK (shared_with <> tenant_id)
);
-- The target's lookup (rows_shared_with_me, and revoking what was shared with
-- a deleted tenant). No tenant role can scan it: the table is granted to none.
CREATE INDEX shared_rows_target_idx ON tenantry.shared_rows (shared_with, table_id, tenant_id, row_id);
ALTER TABLE tenantry.shared_rows ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.shared_rows FORCE ROW LEVEL SECURITY;
COMMENT ON TABLE tenantry.shared_rows IS 'Record of shares of rows of adopted tables (adopt_table(sharing => true)): owner tenant (tenant_id), table, row (the text of its key column after tenant_id), target tenant, who shared it and when. Written only by share_row / unshare_row and the triggers that revoke shares; granted to no role (owners read it through shares_of_my_rows(), targets read the rows through rows_shared_with_me()).';

DROP FUNCTION IF EXISTS tenantry.adopt_table(regclass, boolean, uuid, text);
DROP FUNCTION IF EXISTS tenantry.secure_tenant_table(regclass, boolean);
