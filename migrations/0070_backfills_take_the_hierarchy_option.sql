-- =============================================================================
-- 0070 A batched backfill takes the hierarchy option of the adoption after it
--
-- CALL tenantry.backfill_tenant_id(...) and its first step,
-- tenantry.backfill_prepare(...), now check before any row is touched what
-- adopt_table would refuse once the rows have their tenants
-- (refuse_before_adopting, repeatable/10_tables.sql); two of those rules
-- depend on the hierarchy option (a foreign key to a table adopted without
-- hierarchy, an index that only a table with hierarchy may not have), so
-- both take it as a last parameter, hierarchy boolean DEFAULT NULL (NULL:
-- adopt_table's default). A routine's parameters cannot change in place:
-- this drops the old signatures, which the repeatable files then define
-- again. Calls that name none of the new parameter keep working.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DROP PROCEDURE IF EXISTS tenantry.backfill_tenant_id(regclass, uuid, text, integer);
DROP FUNCTION IF EXISTS tenantry.backfill_prepare(regclass);
