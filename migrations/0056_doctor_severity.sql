-- =============================================================================
-- 0056 The doctor's findings with their severity
--
-- tenantry.table_problems() returns a fifth column, severity (critical, error
-- or warning: whether serve refuses to start on the finding, whatever its
-- flags or unless --allow-table-problems, or serves with a warning), decided
-- once in SQL for the CLI, the server and psql (repeatable/10_tables.sql; the
-- findings themselves are tenantry.table_findings()). A function's result
-- columns cannot change in place: this drops the old one, which the
-- repeatable files then define again.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DROP FUNCTION IF EXISTS tenantry.table_problems(regclass);
