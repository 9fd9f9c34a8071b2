-- =============================================================================
-- 0028 moving a tenant back to the shared tier online
--
-- A move from the schema tier to the shared one used to move every row at the
-- cut-over, under the tenant's row lock (866 ms for 100k rows). It now moves
-- the resources in batches while the tenant keeps working, each batch a short
-- transaction that deletes them from the tenant's table and inserts them into
-- the pooled one, so that every reader sees each row exactly once
-- (repeatable/07_schemas.sql, tier_move_rows_back); adopted tables' rows,
-- whose unique and foreign keys hold within one table, still move at the
-- cut-over. tier_moves counts what the batches moved. The functions that read
-- one tenant's resources take the relation to read from resources_relation(),
-- which names the whole family while the tenant is split between two tables;
-- visible_resources_home and resources_homes give way to
-- visible_resources_relation and resources_relations.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.tier_moves ADD COLUMN rows_moved bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN tenantry.tier_moves.rows_moved IS 'Rows a move to the shared tier has moved so far, batch by batch (tier_move_rows_back); the cut-over adds what is left.';
COMMENT ON COLUMN tenantry.tenants.moving_to IS 'The tier a tenant is being moved to (tier_move_start .. tier_move_finish); NULL when no move is under way. Towards schema, every write of the tenant''s rows is recorded in tier_move_changes; towards shared, its resources are split between its schema''s table and the pooled one (its transactions read them through the family) and its other rows stay in its schema until the cut-over.';

DROP FUNCTION IF EXISTS tenantry.visible_resources_home(uuid);
DROP FUNCTION IF EXISTS tenantry.resources_homes(uuid[]);
