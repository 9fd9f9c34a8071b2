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
-- name another value under the writer's DateStyle (field order, a zone or
-- month named by letters) or that no longer parses, a share whose row is
-- gone, and the second spelling of a row shared twice with one tenant are
-- revoked (audited as share.revoked: the owner shares again). Nothing is
-- changed where every key is the row's own spelling already.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DO $$
DECLARE
    s record;
    typ text;
    col name;
    spelled text;
    other text;
    row_text text;
    unclear boolean;
BEGIN
    PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
    PERFORM pg_catalog.set_config('IntervalStyle', 'postgres', true);
    PERFORM pg_catalog.set_config('bytea_output', 'hex', true);
    PERFORM pg_catalog.set_config('extra_float_digits', '1', true);
    FOR s IN
        SELECT x.tenant_id, x.table_id, x.row_id, x.shared_with
        FROM tenantry.shared_rows x
        ORDER BY x.table_id, x.tenant_id, x.shared_at, x.row_id
    LOOP
        typ := tenantry.row_key_type(s.table_id);
        col := tenantry.row_key_column(s.table_id);
        row_text := NULL;
        unclear := typ IS NULL OR col IS NULL;
        IF NOT unclear THEN
            BEGIN
                -- One value whichever field order the writer's DateStyle had.
                PERFORM pg_catalog.set_config('DateStyle', 'ISO, DMY', true);
                EXECUTE format('SELECT $1::%s::text', typ) INTO other USING s.row_id;
                PERFORM pg_catalog.set_config('DateStyle', 'ISO, YMD', true);
                EXECUTE format('SELECT $1::%s::text', typ) INTO spelled USING s.row_id;
                unclear := other IS DISTINCT FROM spelled;
                PERFORM pg_catalog.set_config('DateStyle', 'ISO, MDY', true);
                EXECUTE format('SELECT $1::%s::text', typ) INTO spelled USING s.row_id;
                unclear := unclear OR other IS DISTINCT FROM spelled
                    -- a zone or a month named by letters: what it meant was the writer's
                    OR (typ ~ '^(date|time)' AND s.row_id ~ '[A-Za-z]');
            EXCEPTION WHEN data_exception THEN
                unclear := true;
            END;
        END IF;
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
