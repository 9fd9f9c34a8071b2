-- =============================================================================
-- 0055 Shares of rows keyed by the row's own spelling of its key
--
-- A shared row of an adopted table is named in shared_rows by its key as
-- text, which the sharing functions made from the caller's text under the
-- caller's settings: a timestamptz key under another TimeZone, a bytea under
-- another bytea_output, a numeric 1.0 for row 1.00 had other spellings than
-- the row's, so a share outlived its row (the delete's trigger looked for the
-- row's spelling) and passed to the next row of an equal key, its owner could
-- not revoke it, and a date written 01/02/2026 under DMY was read as the
-- second of January under MDY: a row never shared (found by outside
-- reviews). The functions now pin those settings and record the row's own
-- spelling (repeatable/10_tables.sql). This brings every share recorded
-- before to it, and never moves one to another row: a key whose text could
-- name another value under the writer's DateStyle or IntervalStyle (a field
-- order, a zone or month named by letters) or that no longer reads as its
-- type, a share whose row is gone, and the second spelling of a row shared
-- twice with one tenant are revoked (audited as share.revoked: the owner
-- shares again). A share that had already passed to a later row of an
-- equal key cannot be told from one that did not, and stays with it.
-- Nothing is changed where every key is the row's own spelling already.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DO $$
DECLARE
    s record;
    typ text;
    send text;
    col name;
    ds text;
    ist text;
    bin bytea;
    first_bin bytea;
    spelled text;
    row_text text;
    unclear boolean;
BEGIN
    PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
    PERFORM pg_catalog.set_config('bytea_output', 'hex', true);
    PERFORM pg_catalog.set_config('extra_float_digits', '1', true);
    PERFORM pg_catalog.set_config('lc_monetary', 'C', true);
    FOR s IN
        SELECT x.tenant_id, x.table_id, x.row_id, x.shared_with
        FROM tenantry.shared_rows x
        ORDER BY x.table_id, x.tenant_id, x.shared_at, x.row_id
    LOOP
        typ := tenantry.row_key_type(s.table_id);
        col := tenantry.row_key_column(s.table_id);
        send := (SELECT ty.typsend::regproc::text
                 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
                 WHERE a.attrelid = s.table_id AND a.attname = col);
        row_text := NULL;
        unclear := typ IS NULL OR col IS NULL OR send IS NULL;
        IF NOT unclear THEN
            BEGIN
                -- One value (compared in the type's binary form, which no
                -- setting changes) whichever field order the writer's
                -- DateStyle and whichever IntervalStyle it had.
                first_bin := NULL;
                FOREACH ds IN ARRAY ARRAY['ISO, MDY', 'ISO, DMY', 'ISO, YMD'] LOOP
                    FOREACH ist IN ARRAY ARRAY['postgres', 'sql_standard', 'iso_8601'] LOOP
                        PERFORM pg_catalog.set_config('DateStyle', ds, true);
                        PERFORM pg_catalog.set_config('IntervalStyle', ist, true);
                        EXECUTE format('SELECT %s($1::%s)', send, typ) INTO bin USING s.row_id;
                        IF first_bin IS NULL THEN
                            first_bin := bin;
                        ELSIF bin IS DISTINCT FROM first_bin THEN
                            unclear := true;
                        END IF;
                    END LOOP;
                END LOOP;
                PERFORM pg_catalog.set_config('DateStyle', 'ISO, MDY', true);
                PERFORM pg_catalog.set_config('IntervalStyle', 'postgres', true);
                EXECUTE format('SELECT $1::%s::text', typ) INTO spelled USING s.row_id;
                -- A zone or a month named by letters where the one spelling
                -- has none: what the abbreviation meant was the writer's.
                unclear := unclear OR (s.row_id ~ '[A-Za-z]' AND spelled !~ '[A-Za-z]');
            EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
                unclear := true;
            END;
        END IF;
        PERFORM pg_catalog.set_config('DateStyle', 'ISO, MDY', true);
        PERFORM pg_catalog.set_config('IntervalStyle', 'postgres', true);
        IF NOT unclear THEN
            -- The row itself, where the owner's rows are (its schema's table
            -- for a schema tenant), spelling its own key.
            EXECUTE format('SELECT t.%1$I::text FROM %2$s t WHERE t.tenant_id = $1 AND t.%1$I = $2::%3$s LIMIT 1',
                           col, tenantry.family_source(s.table_id, ARRAY[s.tenant_id]), typ)
                INTO row_text USING s.tenant_id, s.row_id;
        END IF;
        IF row_text IS NULL
           OR (row_text <> s.row_id
               AND EXISTS (SELECT 1 FROM tenantry.shared_rows o
                           WHERE o.tenant_id = s.tenant_id AND o.table_id = s.table_id
                             AND o.shared_with = s.shared_with AND o.row_id = row_text)) THEN
            DELETE FROM tenantry.shared_rows x
            WHERE x.tenant_id = s.tenant_id AND x.table_id = s.table_id
              AND x.row_id = s.row_id AND x.shared_with = s.shared_with;
        ELSIF row_text <> s.row_id THEN
            UPDATE tenantry.shared_rows x SET row_id = row_text
            WHERE x.tenant_id = s.tenant_id AND x.table_id = s.table_id
              AND x.row_id = s.row_id AND x.shared_with = s.shared_with;
        END IF;
    END LOOP;
END
$$;
