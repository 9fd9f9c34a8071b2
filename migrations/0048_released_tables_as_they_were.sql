-- =============================================================================
-- 0048 Released tables as they were before their adoption
--
-- release_table switched row level security off and left tenant_id NOT NULL:
-- a table that had RLS of its own (a restrictive policy adoption keeps)
-- came back with its policies attached but no longer enforced, so a role
-- that read none of its rows before the adoption read all of them after the
-- release; a tenant_id column that adoption added made the application of
-- before fail its inserts; and the grants adoption takes away (PUBLIC's)
-- did not come back (found by a review adopting a team's existing schema).
-- adopt_table now records, when it first adopts a table, what release_table
-- gives back.
--
-- Tables adopted before this migration have no record of it (NULL): their
-- release keeps row level security on where policies of the team's own
-- remain, and changes nothing else it did not change before.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.tenant_tables
    ADD COLUMN previous_row_security boolean,
    ADD COLUMN previous_force_row_security boolean,
    ADD COLUMN previous_tenant_id_not_null boolean,
    ADD COLUMN previous_acl aclitem[];
COMMENT ON COLUMN tenantry.tenant_tables.previous_row_security IS 'Whether row level security was enabled on the table before its adoption (release_table enables it again); NULL for tables adopted before 0048.';
COMMENT ON COLUMN tenantry.tenant_tables.previous_force_row_security IS 'Whether row level security was forced on the table before its adoption (release_table forces it again); NULL for tables adopted before 0048.';
COMMENT ON COLUMN tenantry.tenant_tables.previous_tenant_id_not_null IS 'Whether the table had a tenant_id column NOT NULL before its adoption: false when adoption added the column or made it NOT NULL (release_table allows NULL again unless a key includes it); NULL for tables adopted before 0048.';
COMMENT ON COLUMN tenantry.tenant_tables.previous_acl IS 'The table''s privileges before its adoption: release_table grants again those of roles other than tenantry''s (PUBLIC''s, which adoption revokes, among them); NULL for tables adopted before 0048.';
