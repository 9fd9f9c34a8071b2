-- =============================================================================
-- 0044 The name each adopted table was adopted under
--
-- Schema tenants' tables of an adopted table are found by its name, and the
-- tenant-schema steps recorded for it name it. A table renamed or moved to
-- another schema afterwards (a plain ALTER TABLE ... RENAME) left them behind
-- without a word: a schema tenant's rows split between its old table and the
-- team's renamed one, and `tenantry migrate` failed on the steps. The doctor
-- compares the name recorded here with the table's (rule renamed,
-- repeatable/10_tables.sql). Tables adopted before are recorded under the
-- name they have now.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

ALTER TABLE tenantry.tenant_tables ADD COLUMN adopted_as text;
COMMENT ON COLUMN tenantry.tenant_tables.adopted_as IS 'The table''s schema-qualified name when it was last adopted (adopt_table records it): schema tenants'' tables of it and its tenant-schema steps use that name; the doctor names a table renamed or moved since (rule renamed).';

-- One row at a time with its name as a constant: on a Citus coordinator the
-- registry is a reference table, and an UPDATE joining the catalogs is not
-- one Citus plans.
DO $names$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT t.table_id, pg_catalog.format('%I.%I', n.nspname, c.relname) AS name
        FROM tenantry.tenant_tables t
        JOIN pg_catalog.pg_class c ON c.oid = t.table_id::oid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LOOP
        UPDATE tenantry.tenant_tables SET adopted_as = r.name WHERE table_id = r.table_id;
    END LOOP;
END
$names$;
