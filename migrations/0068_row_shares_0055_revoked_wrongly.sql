-- =============================================================================
-- 0068 Row shares 0055 revoked wrongly, given back in the same upgrade
--
-- 0055 read each shared row's key under the three ISO field orders and
-- revoked the share when any one of them failed to read it, taking a key
-- that one order cannot read for one whose meaning is unclear. A key
-- written under another DateStyle (`SQL, MDY`'s 12/25/2026, German's
-- 25.12.2026) is read by one order only, and names one day: its recipient
-- read the row, and the upgrade took it away (found by a review upgrading a
-- database of 2026-12-05). 0055 is applied and cannot change; this, when it
-- runs in the same upgrade as 0055 (every pending migration runs in one
-- transaction, and a migration's applied_at is that transaction's start),
-- shares again each row 0055 revoked in it whose key the orders that read it
-- all read as one value, with letters only where the row's own spelling has
-- them (0055's rule), when the row is there, the table still shares, both
-- tenants are live and the share is not there already under the row's
-- spelling, and only where its owner alone can have made it (the table
-- without hierarchy, or the owner a root): the tenant that made a share is
-- not in the audit row 0055 left, and one an ancestor made, given back as
-- the owner's, would outlive the hierarchy that let the ancestor make it
-- (found by a verification review); those stay revoked. The member who
-- made it and when come from its share.created audit row where there is
-- one. Audited share.created. A database upgraded past 0055 before
-- this release keeps what it has: docs/operations.md (Upgrading) gives the
-- query that lists what 0055 revoked there.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

DO $$
DECLARE
    a record;
    tbl regclass;
    typ text;
    send text;
    col name;
    ds text;
    ist text;
    bin bytea;
    first_bin bytea;
    unclear boolean;
    row_text text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tenantry.schema_migrations m
                   WHERE m.version = 55 AND m.applied_at = pg_catalog.now()) THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
    PERFORM pg_catalog.set_config('bytea_output', 'hex', true);
    PERFORM pg_catalog.set_config('extra_float_digits', '1', true);
    PERFORM pg_catalog.set_config('lc_monetary', 'C', true);
    FOR a IN
        SELECT l.tenant_id, l.target_id AS row_id, l.details->>'table' AS table_name,
               (l.details->>'shared_with')::uuid AS shared_with
        FROM tenantry.audit_log l
        WHERE l.action = 'share.revoked' AND l.target_type = 'row'
          AND l.occurred_at >= pg_catalog.now() AND l.details ? 'shared_with'
        ORDER BY l.occurred_at, l.audit_id
    LOOP
        tbl := pg_catalog.to_regclass(a.table_name);
        CONTINUE WHEN tbl IS NULL OR a.row_id IS NULL
            OR NOT EXISTS (SELECT 1 FROM tenantry.tenant_tables t WHERE t.table_id = tbl AND t.sharing)
            -- Made by its owner for sure: no ancestor could read the row.
            OR NOT EXISTS (SELECT 1 FROM tenantry.tenant_tables t, tenantry.tenants o
                           WHERE t.table_id = tbl AND o.tenant_id = a.tenant_id
                             AND (NOT t.hierarchy OR o.parent_id IS NULL))
            OR NOT EXISTS (SELECT 1 FROM tenantry.tenants t WHERE t.tenant_id = a.tenant_id AND t.status <> 'deleted')
            OR NOT EXISTS (SELECT 1 FROM tenantry.tenants t WHERE t.tenant_id = a.shared_with AND t.status <> 'deleted');
        typ := tenantry.row_key_type(tbl);
        col := tenantry.row_key_column(tbl);
        send := (SELECT ty.typsend::regproc::text
                 FROM pg_catalog.pg_attribute at JOIN pg_catalog.pg_type ty ON ty.oid = at.atttypid
                 WHERE at.attrelid = tbl AND at.attname = col);
        CONTINUE WHEN typ IS NULL OR col IS NULL OR send IS NULL;
        -- The value each field order and interval style that reads the key
        -- gives (in the type's binary form, which no setting changes); one
        -- that cannot read it cannot have written it.
        first_bin := NULL;
        unclear := false;
        FOREACH ds IN ARRAY ARRAY['ISO, MDY', 'ISO, DMY', 'ISO, YMD'] LOOP
            FOREACH ist IN ARRAY ARRAY['postgres', 'sql_standard', 'iso_8601'] LOOP
                PERFORM pg_catalog.set_config('DateStyle', ds, true);
                PERFORM pg_catalog.set_config('IntervalStyle', ist, true);
                BEGIN
                    EXECUTE format('SELECT %s($1::%s)', send, typ) INTO bin USING a.row_id;
                EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
                    CONTINUE;
                END;
                IF first_bin IS NULL THEN
                    first_bin := bin;
                ELSIF bin IS DISTINCT FROM first_bin THEN
                    unclear := true;
                END IF;
            END LOOP;
        END LOOP;
        PERFORM pg_catalog.set_config('DateStyle', 'ISO, MDY', true);
        PERFORM pg_catalog.set_config('IntervalStyle', 'postgres', true);
        CONTINUE WHEN first_bin IS NULL OR unclear;
        -- The row itself, spelling its own key as the sharing functions do.
        EXECUTE format('SELECT t.%1$I::text FROM %2$s t WHERE t.tenant_id = $1 AND %3$s(t.%1$I) = $2 LIMIT 1',
                       col, tenantry.family_source(tbl, ARRAY[a.tenant_id]), send)
            INTO row_text USING a.tenant_id, first_bin;
        CONTINUE WHEN row_text IS NULL
            -- A zone or a month named by letters where the one spelling has
            -- none: what the abbreviation meant was the writer's (0055's rule).
            OR (a.row_id ~ '[A-Za-z]' AND row_text !~ '[A-Za-z]')
            OR EXISTS (SELECT 1 FROM tenantry.shared_rows o
                       WHERE o.tenant_id = a.tenant_id AND o.table_id = tbl
                         AND o.row_id = row_text AND o.shared_with = a.shared_with);
        BEGIN
            -- Who made it and when, as its creation was audited.
            INSERT INTO tenantry.shared_rows (tenant_id, table_id, row_id, shared_with, shared_by_tenant, shared_by, shared_at)
            SELECT a.tenant_id, tbl, row_text, a.shared_with, a.tenant_id, made.shared_by, coalesce(made.occurred_at, pg_catalog.now())
            FROM (SELECT NULL) one
            LEFT JOIN LATERAL (
                SELECT (c.details->>'shared_by')::uuid AS shared_by, c.occurred_at
                FROM tenantry.audit_log c
                WHERE c.tenant_id = a.tenant_id AND c.action = 'share.created' AND c.target_type = 'row'
                  AND c.target_id = a.row_id AND c.details->>'shared_with' = a.shared_with::text
                  AND c.details->>'table' = a.table_name AND c.occurred_at < pg_catalog.now()
                ORDER BY c.occurred_at DESC LIMIT 1) made ON true;
        EXCEPTION WHEN OTHERS THEN
            -- A limit or a rule of today refuses it: it stays revoked, as
            -- 0055 left it and audited it.
            RAISE NOTICE 'the share of % row % with % stays revoked: %', tbl, row_text, a.shared_with, SQLERRM;
        END;
    END LOOP;
END
$$;
