-- =============================================================================
-- 0036 Schema tenants' tables of adopted tables stand alone
--
-- A schema tenant's table of an adopted table family inherited the team's
-- table (0020). PostgreSQL reads a table together with every table that
-- inherits it, so each statement of a pooled tenant on the team's table
-- (`SELECT … FROM invoices`) planned, locked and scanned every schema
-- tenant's table of it: with 1,000 schema tenants a point read ran at 28.6
-- against 64,805 statements per second, with 4,000 it failed (53200, out of
-- shared memory: the lock table). docs/benchmarks.md, 2026-12-02.
--
-- They stand alone now: tenantry's functions reach them by name (the
-- tenant's schema and the team's table name: repeatable/07_schemas.sql,
-- family_copies), shape changes reach them as tenant-schema steps
-- (docs/tiers.md, "Changing a tenant table's shape"). tenantry.resources
-- keeps its inheriting tables: every statement on it is tenantry's own and
-- names ONLY where it must.
--
-- NO INHERIT locks each copy, and the team's table only weakly (no reader
-- or writer waits). The inherited columns and constraints stay, as the
-- copy's own.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DO $detach$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT i.inhrelid::regclass AS copy, i.inhparent::regclass AS template
        FROM pg_catalog.pg_inherits i
        JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        JOIN tenantry.tenant_tables tt ON tt.table_id = i.inhparent
        WHERE n.nspname ~ '^tenant_[0-9a-f]{20}$'
        ORDER BY i.inhrelid
    LOOP
        EXECUTE format('ALTER TABLE %s NO INHERIT %s', r.copy, r.template);
    END LOOP;
END
$detach$;
