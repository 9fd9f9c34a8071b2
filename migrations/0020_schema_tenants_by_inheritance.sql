-- =============================================================================
-- 0020 schema tenants without partitions: O(1) creation, online moves
--
-- A schema tenant's resources were a LIST partition of tenantry.resources,
-- next to a DEFAULT partition holding every pooled tenant. Attaching one
-- scanned the whole DEFAULT partition under an ACCESS EXCLUSIVE lock (every
-- pooled tenant waited), moving rows meant lifting the shares' foreign key,
-- and every partition added made every unpruned plan wider.
--
-- Now tenantry.resources is a plain table holding the pooled tenants' rows,
-- and a schema tenant's <schema_name>.resources is a table of its own that
-- INHERITs it (repeatable/07_schemas.sql):
--   * creating one takes SHARE UPDATE EXCLUSIVE on tenantry.resources (no
--     reader or writer waits) and touches no row;
--   * the server reads and writes a tenant's own table directly (ONLY
--     tenantry.resources for pooled tenants, the tenant's schema for schema
--     tenants), so other tenants' plans never see schema tables;
--   * a query on tenantry.resources itself (the guide's functions, an
--     ancestor whose subtree spans both tiers) still sees every tenant's rows
--     under the same policy, as it did through the partitions.
-- Shares can no longer be a foreign key to tenantry.resources (a key does not
-- cover inheritance children): a row trigger on every resources table revokes
-- a deleted resource's shares (repeatable/03_resources.sql).
--
-- Moving a tenant between tiers copies its rows in batches while it keeps
-- writing (tier_moves, tier_move_changes), then cuts over under a lock on the
-- tenant's row only (tenants.moving_to).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.tenants
    ADD COLUMN moving_to text CONSTRAINT tenants_moving_to_check CHECK (moving_to IN ('shared', 'schema'));
COMMENT ON COLUMN tenantry.tenants.moving_to IS 'The tier a tenant is being moved to (tier_move_start .. tier_move_finish); NULL when no move is under way. While set, every write of the tenant''s rows is recorded in tier_move_changes.';

CREATE TABLE tenantry.tier_moves (
    tenant_id   uuid PRIMARY KEY REFERENCES tenantry.tenants (tenant_id),
    target      text NOT NULL CHECK (target IN ('shared', 'schema')),
    copied      jsonb NOT NULL DEFAULT '{}',
    started_at  timestamptz NOT NULL DEFAULT now(),
    started_by  name NOT NULL DEFAULT session_user
);
ALTER TABLE tenantry.tier_moves ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.tier_moves FORCE ROW LEVEL SECURITY;
COMMENT ON TABLE tenantry.tier_moves IS 'Moves between tiers under way: target tier and, per table, the last key copied (copied: {"<table>": "<key>" | true when done}). Written by the tier_move_* functions only; a row left by an interrupted move lets the next call resume it.';

CREATE TABLE tenantry.tier_move_changes (
    tenant_id   uuid NOT NULL,
    change_id   bigint GENERATED ALWAYS AS IDENTITY,
    table_id    regclass NOT NULL,
    row_key     text NOT NULL,
    PRIMARY KEY (tenant_id, change_id)
);
ALTER TABLE tenantry.tier_move_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.tier_move_changes FORCE ROW LEVEL SECURITY;
COMMENT ON TABLE tenantry.tier_move_changes IS 'Keys of rows a moving tenant wrote in its old tier, one entry per write, appended by the tenant_row_home trigger and consumed (deleted) by the tier move when it copies those rows again. Granted to no role.';

-- resources: from a partitioned table to a plain one that schema tenants'
-- tables inherit.
ALTER TABLE tenantry.shared_resources DROP CONSTRAINT shared_resources_tenant_id_resource_id_fkey;

DO $detach$
DECLARE
    s text;
BEGIN
    FOR s IN SELECT schema_name FROM tenantry.tenants WHERE isolation = 'schema' ORDER BY tenant_id LOOP
        EXECUTE format('ALTER TABLE tenantry.resources DETACH PARTITION %I.resources', s);
    END LOOP;
END
$detach$;
ALTER TABLE tenantry.resources DETACH PARTITION tenantry.resources_pooled;
-- CASCADE: the usage view reads it; repeatable/06_usage.sql makes it again.
DROP TABLE tenantry.resources CASCADE;

ALTER TABLE tenantry.resources_pooled RENAME TO resources;
ALTER INDEX tenantry.resources_pooled_pkey RENAME TO resources_pkey;
ALTER INDEX tenantry.resources_pooled_shared_with_idx RENAME TO resources_shared_with_idx;
ALTER INDEX tenantry.resources_pooled_tenant_id_created_at_id_idx RENAME TO resources_tenant_newest_idx;
ALTER INDEX tenantry.resources_pooled_tenant_id_name_idx RENAME TO resources_tenant_name_idx;
COMMENT ON TABLE tenantry.resources IS 'Tenant-owned resources: the pooled tenants'' rows, and through inheritance every schema tenant''s <schema_name>.resources (ONLY tenantry.resources is the pooled tier). size_bytes, created_at, updated_at and created_by are maintained by the database; shared_with mirrors shared_resources for the sharing fence''s speed.';
COMMENT ON COLUMN tenantry.resources.shared_with IS 'Tenants this resource is shared with (read only). Written only by share_resource / unshare_resource.';

-- The schema tenants' former partitions: their own tables, inheriting the
-- pooled one. The foreign key to tenants goes (a new table would take a lock
-- on tenants to add one; the tenant_row_home trigger checks the tenant).
DO $inherit$
DECLARE
    s text;
BEGIN
    -- An array, not a loop over tenants: dropping the foreign key alters
    -- tenants, which an open loop over it would still be reading.
    FOREACH s IN ARRAY ARRAY(SELECT schema_name FROM tenantry.tenants WHERE isolation = 'schema' ORDER BY tenant_id) LOOP
        EXECUTE format('ALTER TABLE %I.resources DROP CONSTRAINT IF EXISTS resources_tenant_id_fkey', s);
        EXECUTE format('ALTER TABLE %I.resources INHERIT tenantry.resources', s);
    END LOOP;
END
$inherit$;

-- Replaced by secure_tenant_schema() and secure_resources_table() (repeatable/07_schemas.sql, 03_resources.sql). IF EXISTS: on a fresh database the definitions come after this file.
DROP FUNCTION IF EXISTS tenantry.secure_tenant_partition(uuid);
DROP FUNCTION IF EXISTS tenantry.secure_resources_partition(text, text);
-- Returns whether the subtree spans both tiers now (repeatable/01_context.sql).
DROP FUNCTION IF EXISTS tenantry.tenant_context_row(uuid);

-- Who shared resources with whom, by target: rows shared with a tenant may
-- live in any tenant's table now, and resources_shared_with_me() must read
-- only the tables of the tenants that shared with it (a query on the whole
-- family would lock every schema tenant's table). Kept by a trigger on
-- shared_resources; granted to no role (an index led by the target in a
-- table a tenant role scans would be an EXPLAIN ANALYZE oracle, issue 10
-- finding 8).
CREATE TABLE tenantry.resource_share_targets (
    shared_with uuid NOT NULL,
    tenant_id   uuid NOT NULL,
    shares      integer NOT NULL CHECK (shares > 0),
    PRIMARY KEY (tenant_id, shared_with)
);
CREATE INDEX resource_share_targets_target_idx ON tenantry.resource_share_targets (shared_with, tenant_id);
ALTER TABLE tenantry.resource_share_targets ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.resource_share_targets FORCE ROW LEVEL SECURITY;
COMMENT ON TABLE tenantry.resource_share_targets IS 'How many resources each owner (tenant_id) shares with each target (shared_with), kept by the shared_resources_targets trigger; read by resources_shared_with_me() to find the tables holding rows shared with a tenant. Granted to no role.';
INSERT INTO tenantry.resource_share_targets (shared_with, tenant_id, shares)
SELECT shared_with, tenant_id, count(*) FROM tenantry.shared_resources GROUP BY 1, 2;

-- Tenant-schema migrations: a change every schema tenant's tables need that
-- inheritance does not carry (an index, a trigger, storage settings; columns
-- and CHECK constraints added to a pooled table reach its schema tables by
-- themselves) is recorded as a step and applied schema by schema by
-- `tenantry migrate`, each schema in its own transaction with its version.
CREATE TABLE tenantry.tenant_schema_steps (
    version     integer PRIMARY KEY CHECK (version > 0),
    description text NOT NULL CHECK (length(description) BETWEEN 1 AND 200),
    statement   text NOT NULL CHECK (length(statement) > 0),
    added_at    timestamptz NOT NULL DEFAULT now(),
    added_by    name NOT NULL DEFAULT session_user
);
ALTER TABLE tenantry.tenant_schema_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantry.tenant_schema_steps FORCE ROW LEVEL SECURITY;
COMMENT ON TABLE tenantry.tenant_schema_steps IS 'Steps every tenant schema applies in version order (add_tenant_schema_step, then tenantry migrate): SQL run with the tenant''s schema first on the search path, so unqualified names are its own tables. Written by operators only (add_tenant_schema_step); granted to no role.';

ALTER TABLE tenantry.tenants ADD COLUMN schema_version integer;
UPDATE tenantry.tenants SET schema_version = 0 WHERE isolation = 'schema';
COMMENT ON COLUMN tenantry.tenants.schema_version IS 'The last tenant_schema_steps version applied to the tenant''s schema (0: none; a new schema starts at the latest, its tables copied from the pooled ones). NULL while the tenant is pooled.';
