-- =============================================================================
-- 0034 The move back's cut-over copies adopted tables' rows before its lock
--
-- Moving a tenant back to the shared tier moved its adopted tables' rows
-- under its row lock (about 0.7 s per 100k rows during which its writes
-- waited): their unique and foreign keys hold within one table, so they
-- cannot be split between two like resources. The cut-over now copies them
-- into the pooled tables before it takes the tenant's row (the copies are its
-- transaction's own, unseen until it commits), while tenant_row_home records
-- the tenant's writes to them; under the lock it copies those again and
-- deletes the schema's rows (repeatable/07_schemas.sql, tier_move_cutover).
-- tier_move_rows_back therefore moves resources only and loses its
-- every_family argument.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DROP FUNCTION IF EXISTS tenantry.tier_move_rows_back(uuid, bigint, boolean);
