-- =============================================================================
-- 0019 key verification without per-call planning
--
-- identity_permissions becomes a set-returning SQL function that the planner
-- inlines into key verification's one cached statement (it was a scalar
-- SECURITY DEFINER function, planned anew on every call). Its return type
-- changes, which CREATE OR REPLACE cannot do: the old one goes here and
-- repeatable/04_access.sql creates the new one (migrations/README.md, rule 2).
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DROP FUNCTION tenantry.identity_permissions(uuid, uuid, uuid);
