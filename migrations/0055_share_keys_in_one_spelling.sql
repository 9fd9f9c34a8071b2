-- =============================================================================
-- 0055 Shares of rows keyed by one spelling of their key
--
-- A shared row of an adopted table is named in shared_rows by its key as
-- text, which the sharing functions made under the caller's settings: a
-- timestamptz key under another TimeZone, a date under another DateStyle, a
-- bytea under another bytea_output had other spellings, so a share outlived
-- its row (the delete's trigger looked for another spelling), its owner
-- could not revoke it, and a date written 01/02/2026 under MDY was read as
-- the first of February under DMY: a row never shared (found by an outside
-- review). The functions now pin those settings (repeatable/10_tables.sql);
-- this rewrites every key recorded before in the same spelling, read under
-- the settings PostgreSQL starts with (DateStyle ISO, MDY). A row shared
-- twice with one tenant under two spellings keeps its first share.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DO $$
DECLARE
    tbl regclass;
    typ text;
BEGIN
    PERFORM pg_catalog.set_config('DateStyle', 'ISO, MDY', true);
    PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
    PERFORM pg_catalog.set_config('IntervalStyle', 'postgres', true);
    PERFORM pg_catalog.set_config('bytea_output', 'hex', true);
    PERFORM pg_catalog.set_config('extra_float_digits', '1', true);
    FOR tbl IN SELECT DISTINCT s.table_id FROM tenantry.shared_rows s LOOP
        typ := tenantry.row_key_type(tbl);
        CONTINUE WHEN typ IS NULL;
        EXECUTE format(
            'DELETE FROM tenantry.shared_rows s
             USING (SELECT x.tenant_id, x.row_id, x.shared_with,
                           row_number() OVER (PARTITION BY x.tenant_id, x.row_id::%1$s, x.shared_with
                                              ORDER BY x.shared_at, x.row_id) AS n
                    FROM tenantry.shared_rows x WHERE x.table_id = $1) d
             WHERE s.table_id = $1 AND s.tenant_id = d.tenant_id AND s.row_id = d.row_id
               AND s.shared_with = d.shared_with AND d.n > 1', typ) USING tbl;
        EXECUTE format(
            'UPDATE tenantry.shared_rows s SET row_id = s.row_id::%1$s::text
             WHERE s.table_id = $1 AND s.row_id IS DISTINCT FROM s.row_id::%1$s::text', typ) USING tbl;
    END LOOP;
END
$$;
