-- =============================================================================
-- 0030 when a move back recorded its older transactions
--
-- Virtual transaction ids start again after a server restart, and a restart
-- ends every transaction a move back waits for (tier_move_wait,
-- repeatable/07_schemas.sql): the move records the server's start time next
-- to the ids, and a set recorded before the last restart counts as ended.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.tier_moves ADD COLUMN older_transactions_at timestamptz;
COMMENT ON COLUMN tenantry.tier_moves.older_transactions_at IS 'When older_transactions was recorded: the server''s start time (pg_postmaster_start_time()); a set recorded before a restart has ended with it.';
