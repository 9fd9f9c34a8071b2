-- =============================================================================
-- 0029 a move back waits for older transactions; ancestors hold a moving
-- descendant
--
-- A move back to the shared tier splits a tenant's resources between two
-- tables batch by batch, and its transactions read them through the family
-- once they see the move (repeatable/07_schemas.sql). A transaction that
-- began before the move and still ran when the first batch moved rows read
-- its schema's table alone and could miss them; the first batch now waits
-- until every transaction open when the move's batches began has ended
-- (tier_move_wait), as CREATE INDEX CONCURRENTLY waits for older snapshots.
-- tier_moves.older_transactions holds those transactions.
--
-- An ancestor's write to a descendant that is moving back now holds that
-- descendant's row like the descendant's own writes do (tenant_tier_lock,
-- repeatable/03_resources.sql), found through a partial index of the tenants
-- being moved, which is empty but for moves under way.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.tier_moves ADD COLUMN older_transactions text[];
COMMENT ON COLUMN tenantry.tier_moves.older_transactions IS 'Towards the shared tier: the virtual transaction ids open in this database when the move''s batches were about to begin (tier_move_wait), which the first batch waits for; empty once they have all ended; NULL until captured.';

CREATE INDEX tenants_moving_idx ON tenantry.tenants (tenant_id) WHERE moving_to IS NOT NULL;
COMMENT ON INDEX tenantry.tenants_moving_idx IS 'The tenants being moved between tiers (empty but for moves under way): a write of an ancestor finds its moving descendants without probing its whole subtree (tenant_tier_lock).';
