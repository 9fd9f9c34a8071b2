-- =============================================================================
-- Offboarding: exporting a tenant (the read-only context an export reads
-- under), importing one (a new tenant row, then its rows, then what the
-- triggers would have derived), and purging one for good after the soft
-- delete's grace period. Purged ids are never given out again.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

-- -----------------------------------------------------------------------------
-- Purged tenants and the grace period: who reads what
-- -----------------------------------------------------------------------------

CREATE POLICY admin_reads_purged_tenants ON tenantry.purged_tenants
    FOR SELECT TO tenantry_admin
    USING (tenantry.admin_context());
COMMENT ON POLICY admin_reads_purged_tenants ON tenantry.purged_tenants IS 'Administrators read the record of every purge, with a proven administrative context only; only purge_tenant() (as the owner) writes it.';
GRANT SELECT ON tenantry.purged_tenants TO tenantry_admin;
GRANT SELECT ON tenantry.purge_policy TO tenantry_admin;

/** Refuses a tenant row whose id was purged: purged ids are never reused. */
CREATE OR REPLACE FUNCTION tenantry.tenants_not_purged()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Citus: checked once, on the coordinator's copy of the tenants reference
    -- table (on_citus_worker()).
    IF tenantry.on_citus_worker() THEN
        RETURN NEW;
    END IF;
    IF EXISTS (SELECT 1 FROM tenantry.purged_tenants p WHERE p.tenant_id = NEW.tenant_id) THEN
        RAISE EXCEPTION 'tenant id % was purged and is never given out again', NEW.tenant_id
            USING ERRCODE = 'TN409', HINT = 'tenant_id';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION tenantry.tenants_not_purged() IS 'Trigger: a new tenant row may not take the id of a purged tenant (TN409). import_tenant() checks the same itself, since imports run with row triggers off.';
CREATE OR REPLACE TRIGGER tenants_not_purged
    BEFORE INSERT ON tenantry.tenants
    FOR EACH ROW EXECUTE FUNCTION tenantry.tenants_not_purged();
COMMENT ON TRIGGER tenants_not_purged ON tenantry.tenants IS 'A new tenant row may not take the id of a purged tenant (TN409): purged ids are never given out again. Off during imports (row triggers off), which check the same in import_tenant().';

-- -----------------------------------------------------------------------------
-- Where a tenant's rows are
-- -----------------------------------------------------------------------------

/**
 * Every column through which a row belongs to (or points at) a tenant, in
 * the tables a purge empties: every tenantry table with a tenant_id column
 * (but tenants itself and the purge record), every column of a tenantry or
 * adopted table with a foreign key to tenants (shares made to it, the
 * hierarchy's closure), shared_with uuid columns (share bookkeeping), and
 * tenant_id of every adopted table. Found through the catalog, so a table
 * added later is purged without a change here.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_keyed_columns()
RETURNS TABLE (table_id regclass, schema_name name, table_name name, column_name name, partitioned boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT c.oid::regclass, n.nspname, c.relname, a.attname, c.relkind = 'p'
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND c.oid NOT IN ('tenantry.tenants'::regclass, 'tenantry.purged_tenants'::regclass)
      AND (
            (c.relnamespace = 'tenantry'::regnamespace
             AND ((a.attname = 'tenant_id' AND a.atttypid = 'uuid'::regtype)
                  OR (a.attname = 'shared_with' AND a.atttypid = 'uuid'::regtype)
                  OR EXISTS (SELECT 1 FROM pg_constraint k
                             WHERE k.conrelid = c.oid AND k.contype = 'f'
                               AND k.confrelid = 'tenantry.tenants'::regclass AND a.attnum = ANY (k.conkey))))
         OR (c.oid IN (SELECT tt.table_id FROM tenantry.tenant_tables tt) AND a.attname = 'tenant_id')
      )
    ORDER BY 1, 4
$$;
COMMENT ON FUNCTION tenantry.tenant_keyed_columns() IS 'Internal: every (table, its schema and name, column) through which rows belong to or point at a tenant, found through the catalog (tenantry tables with tenant_id, shared_with or a foreign key to tenants; adopted tables by tenant_id), for purge_tenant(). Not granted.';

/**
 * The foreign keys a purge would leave violated unless it checks them: every
 * foreign key (any schema) to tenantry.tenants or to a table purge_tenant()
 * deletes from, but those whose referencing rows the purge deletes anyway
 * (the referencing table is tenant-keyed and the key maps one of its keyed
 * columns onto each keyed column of the referenced table). Tables of schema
 * tenants are left out (they hold no foreign key, and one tenant's rows
 * only). For each, `probe` finds (`$1`: the tenant) a referencing row that
 * points at a row the purge deletes and that the purge would not delete.
 */
CREATE OR REPLACE FUNCTION tenantry.purge_foreign_keys()
RETURNS TABLE (constraint_name name, table_id regclass, referenced regclass, probe text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH keyed AS (
        SELECT k.table_id, array_agg(k.column_name) AS cols
        FROM tenantry.tenant_keyed_columns() k GROUP BY k.table_id
        UNION ALL
        SELECT 'tenantry.tenants'::regclass, ARRAY['tenant_id']::name[]
    ), fk AS (
        SELECT k.conname, k.conrelid, k.confrelid, rk.cols AS ref_keyed,
               coalesce(xk.cols, '{}') AS own_keyed,
               array_agg(xa.attname ORDER BY u.n) AS own_cols,
               array_agg(ra.attname ORDER BY u.n) AS ref_cols
        FROM pg_constraint k
        JOIN keyed rk ON rk.table_id = k.confrelid
        LEFT JOIN keyed xk ON xk.table_id = k.conrelid
        CROSS JOIN LATERAL unnest(k.conkey, k.confkey) WITH ORDINALITY AS u(own, ref, n)
        JOIN pg_attribute xa ON xa.attrelid = k.conrelid AND xa.attnum = u.own
        JOIN pg_attribute ra ON ra.attrelid = k.confrelid AND ra.attnum = u.ref
        WHERE k.contype = 'f' AND k.conparentid = 0
          AND k.connamespace NOT IN (SELECT s.oid FROM pg_namespace s
                                     JOIN tenantry.tenants t ON t.schema_name = s.nspname
                                     WHERE t.isolation = 'schema')
        GROUP BY k.oid, k.conname, k.conrelid, k.confrelid, rk.cols, xk.cols
    )
    SELECT fk.conname, fk.conrelid::regclass, fk.confrelid::regclass,
           -- ONLY on a plain table (a pooled one would reach every schema
           -- tenant's table); a partitioned one has no rows of its own.
           'SELECT true FROM ' || CASE WHEN xc.relkind = 'p' THEN '' ELSE 'ONLY ' END
           || format('%I.%I x JOIN ', xn.nspname, xc.relname)
           || CASE WHEN rc.relkind = 'p' THEN '' ELSE 'ONLY ' END
           || format('%I.%I t ON ', rn.nspname, rc.relname)
           || (SELECT string_agg(format('x.%I = t.%I', o, r), ' AND ')
               FROM unnest(fk.own_cols, fk.ref_cols) AS p(o, r))
           || ' WHERE (' || (SELECT string_agg(format('t.%I = $1', r), ' OR ') FROM unnest(fk.ref_keyed) r)
           || ') AND NOT coalesce('
           || coalesce((SELECT string_agg(format('x.%I = $1', o), ' OR ') FROM unnest(fk.own_keyed) o), 'false')
           || ', false) LIMIT 1'
    FROM fk
    JOIN pg_class xc ON xc.oid = fk.conrelid JOIN pg_namespace xn ON xn.oid = xc.relnamespace
    JOIN pg_class rc ON rc.oid = fk.confrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
    WHERE EXISTS (
        SELECT 1 FROM unnest(fk.ref_keyed) r
        WHERE NOT EXISTS (SELECT 1 FROM unnest(fk.own_cols, fk.ref_cols) AS p(o, rc2)
                          WHERE p.rc2 = r AND p.o = ANY (fk.own_keyed)))
    ORDER BY 2, 1
$$;
COMMENT ON FUNCTION tenantry.purge_foreign_keys() IS 'Internal: the foreign keys (any schema) to tenants or to a table purge_tenant() deletes from whose referencing rows the purge would not delete by itself, each with a probe query ($1: the tenant) for such a row; purge_tenant() refuses while one finds a row. Not granted.';

/**
 * The table holding a tenant's rows of one tenant table family: its schema's
 * table for a schema tenant (when the family has one), the pooled table
 * otherwise. Exports read it with ONLY, imports write into it: neither reads
 * the whole family (which locks every schema tenant's table).
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_home_table(tid uuid, template regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT format('%I.%I', t.schema_name, f.template_table)
         FROM tenantry.tenants t, tenantry.family_templates() f
         WHERE t.tenant_id = tenant_home_table.tid AND t.isolation = 'schema'
           AND f.template = tenant_home_table.template
           -- Not made yet (a tenant-schema step makes it): its rows are
           -- in the pooled table.
           AND pg_catalog.to_regclass(format('%I.%I', t.schema_name, f.template_table)) IS NOT NULL),
        tenant_home_table.template::text)
$$;
COMMENT ON FUNCTION tenantry.tenant_home_table(uuid, regclass) IS 'Internal: the table of a tenant''s rows of the family of `template` (its schema''s table for a schema tenant, once a tenant-schema step has made it; else the pooled table), for exports and imports. Not granted.';

-- -----------------------------------------------------------------------------
-- Export: a read-only context of one tenant, whatever its status
-- -----------------------------------------------------------------------------

/**
 * The context an export reads under, for operators (superuser or member of
 * tenantry_owner), for this transaction: the tenant alone (no descendants in
 * its visible set, so policies admit its own rows only), no permission
 * (authorize() refuses every write), whatever its status: a deleted tenant
 * in its grace period can be exported. The caller then switches to
 * tenantry_app, so row-level security decides what the export reads. Refused
 * while a tier move of the tenant is under way (its rows are in two places).
 * Returns the tenant's resources schema.
 */
CREATE OR REPLACE FUNCTION tenantry.export_context(tid uuid)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    problem text;
BEGIN
    PERFORM tenantry.require_operator('export_context');
    SELECT tn.isolation, tn.schema_name INTO t FROM tenantry.tenants tn WHERE tn.tenant_id = tid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404', HINT = 'tenant_id';
    END IF;
    IF EXISTS (SELECT 1 FROM tenantry.tier_moves m WHERE m.tenant_id = tid) THEN
        RAISE EXCEPTION 'tenant % is moving between tiers: finish or abort the move first', tid
            USING ERRCODE = 'TN409', HINT = 'tenant_id';
    END IF;
    -- A schema tenant's tables are read by their families' columns: they
    -- must have them all and no other, and no table of its may be missed.
    IF t.isolation = 'schema' THEN
        problem := tenantry.tenant_tables_unlike_families(tid);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'tenant % cannot be exported yet: %', tid, problem
                USING ERRCODE = 'TN409', HINT = 'tenant_id';
        END IF;
    END IF;
    PERFORM set_config('backtrace_functions',
        tenantry.context_value(tid, NULL, 'export', ARRAY[]::text[], NULL,
            ',s' || CASE WHEN t.isolation = 'schema' THEN t.schema_name ELSE 'tenantry' END
                 || ',v' || replace(tid::text, '-', '')),
        true);
    RETURN tenantry.current_tenant_schema();
END
$$;
COMMENT ON FUNCTION tenantry.export_context(uuid) IS 'Operators only (superuser or member of tenantry_owner): a transaction-local, read-only context of one tenant alone (no descendants, no permission), any status, for exports; the caller then reads as tenantry_app under RLS. TN404 unknown tenant, TN409 during a tier move or when a schema tenant''s tables differ from their families'' (tenant_tables_unlike_families). Not granted.';

/**
 * Records an export or an import in the tenant's own audit log, for
 * operators: tenant.exported once an archive of its rows is complete (the
 * tenant sees that its data left the database, when and by whom),
 * tenant.imported once an archive's rows are in (the rows before it came
 * from the archive, as it held them: its checksums are not signed). An audit
 * review found neither recorded anywhere. The actor is the operator's
 * (set_actor_local, or app.actor for the session; else the login). An id
 * that is gone (purged meanwhile) records nothing.
 */
CREATE OR REPLACE FUNCTION tenantry.audit_offboarding(tid uuid, action text, details jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.require_operator('audit_offboarding');
    IF action NOT IN ('tenant.exported', 'tenant.imported') THEN
        RAISE EXCEPTION 'audit_offboarding records tenant.exported or tenant.imported, not %', action
            USING ERRCODE = 'TN422', HINT = 'action';
    END IF;
    IF EXISTS (SELECT 1 FROM tenantry.tenants t WHERE t.tenant_id = tid) THEN
        PERFORM tenantry.write_audit(tid, action, 'tenant', tid::text, coalesce(details, '{}'));
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.audit_offboarding(uuid, text, jsonb) IS 'Operators only: records tenant.exported or tenant.imported (with the archive''s figures) in the tenant''s audit log; nothing for an id that is gone. Called by the exporter and the importer; not granted.';

-- -----------------------------------------------------------------------------
-- Import: the tenant row, then its rows (written by the caller), then what
-- the row triggers would have derived
-- -----------------------------------------------------------------------------

/**
 * Starts an import, for operators: creates tenant `tid` from an exported
 * tenant row (name, settings, status, timestamps, isolation; under its
 * parent when that parent is here and live and tid is the exported id, a
 * root otherwise: a copy under a new id keeps the exported row ids; a deleted
 * tenant comes back suspended) and turns row triggers off for the rest of
 * the transaction (session_replication_role = replica), so that imported
 * rows are written as they were: no audit row, counter or notification of
 * their own. TN409 when the id is taken or was purged. import_tenant_finish()
 * must follow in the same transaction.
 */
CREATE OR REPLACE FUNCTION tenantry.import_tenant(tid uuid, tenant jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent uuid := (tenant->>'parent_id')::uuid;
    status text := CASE WHEN tenant->>'status' = 'deleted' THEN 'suspended' ELSE coalesce(tenant->>'status', 'active') END;
BEGIN
    PERFORM tenantry.require_operator('import_tenant');
    IF tid IS NULL THEN
        RAISE EXCEPTION 'tenant id is required' USING ERRCODE = 'TN422', HINT = 'tenant_id';
    END IF;
    IF EXISTS (SELECT 1 FROM tenantry.purged_tenants p WHERE p.tenant_id = tid) THEN
        RAISE EXCEPTION 'tenant id % was purged and is never given out again: import it under a new id', tid
            USING ERRCODE = 'TN409', HINT = 'tenant_id';
    END IF;
    IF EXISTS (SELECT 1 FROM tenantry.tenants t WHERE t.tenant_id = tid) THEN
        RAISE EXCEPTION 'tenant % already exists: import it under a new id', tid
            USING ERRCODE = 'TN409', HINT = 'tenant_id';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tenantry.tenants t WHERE t.tenant_id = parent AND t.status <> 'deleted') THEN
        parent := NULL;
    END IF;
    -- A copy (imported under a new id) keeps the exported tenant's row
    -- ids: beside its original, or beside another copy of the same archive,
    -- under one parent, that parent read every id twice, and one write by
    -- id changed or deleted both tenants' rows (found by an outside review
    -- of import, and for copies made after the original's purge by a
    -- verification review). A copy is a root; the operator moves it under a
    -- parent (set_tenant_parent) knowing what else is there.
    -- (The exported id is the archive's: the library puts it in the row; a
    -- row without one is taken as the tenant's own.)
    IF parent IS NOT NULL AND tenant ? 'tenant_id' AND tid IS DISTINCT FROM (tenant->>'tenant_id')::uuid THEN
        RAISE NOTICE 'tenant % is imported as a root, not under %: a copy keeps the row ids of the tenant it copies; move it with set_tenant_parent', tid, parent;
        parent := NULL;
    END IF;
    PERFORM tenantry.validate_tenant_settings(tenant->'settings');
    IF tenant->>'isolation' = 'schema' THEN
        PERFORM tenantry.require_schema_tier();
    END IF;
    PERFORM set_config('session_replication_role', 'replica', true);
    INSERT INTO tenantry.tenants (tenant_id, name, created_at, updated_at, settings, status, parent_id, isolation, schema_version)
    VALUES (tid, tenantry.clean_name(tenant->>'name', 'name'),
            coalesce((tenant->>'created_at')::timestamptz, now()),
            coalesce((tenant->>'updated_at')::timestamptz, now()),
            coalesce(tenant->'settings', '{}'), status, parent,
            CASE WHEN tenant->>'isolation' = 'schema' THEN 'schema' ELSE 'shared' END,
            CASE WHEN tenant->>'isolation' = 'schema' THEN tenantry.tenant_schema_latest() END);
    INSERT INTO tenantry.tenant_hierarchy (parent_id, child_id, depth)
    SELECT tid, tid, 0
    UNION ALL
    SELECT h.parent_id, tid, h.depth + 1 FROM tenantry.tenant_hierarchy h WHERE h.child_id = parent;
    IF parent IS NOT NULL THEN
        PERFORM tenantry.count_below(parent, 1, 1);
        -- What tenants_invalidate_created does, with row triggers off: the
        -- parent's and every ancestor's cached context gain the tenant.
        PERFORM tenantry.notify_ancestors(tid);
    END IF;
    IF tenant->>'isolation' = 'schema' THEN
        PERFORM tenantry.make_schema_tenant(tid);
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.import_tenant(uuid, jsonb) IS 'Operators only: creates tenant tid from an exported tenant row (parent kept when it is here and live and tid is the exported id; a copy under a new id keeps the exported row ids and is a root; deleted comes back suspended) and turns row triggers off for the transaction; the caller writes the rows, then calls import_tenant_finish(). TN409 for a taken or purged id. Not granted.';

/**
 * The first foreign key that an import's rows of tenant `tid` break, as
 * text naming the table, the key and the row, or NULL. An import writes with
 * row triggers off (so that rows come back as they were), which also skips
 * the checks of foreign keys: every foreign key of every table the import
 * fills is checked here for the tenant's rows, whatever it references: a
 * table of the team's that is not adopted (which an adopted table may
 * reference with GRANT REFERENCES), tenantry's catalog of permissions,
 * tenantry.tenants (a column naming another tenant, which need not be in
 * this database), and the imported tables themselves (a tampered archive's
 * invoice naming a project it does not hold). PostgreSQL counts such a key
 * valid, and pg_dump's restore fails on it later (found by reviews adopting
 * a team's existing schema and of export). MATCH FULL keys refuse a
 * partly NULL key, MATCH SIMPLE ones take any key with a NULL. Rows of the
 * tenant in the pooled tables only: a schema tenant's tables carry no
 * foreign keys. The imported rows are read as tenantry_owner (which row
 * level security does not hold back), and so is the referenced table when
 * tenantry_owner may read it; else (a team's table it may only reference)
 * that table is read with the caller's rights (the operator may read it),
 * against the imported keys copied to a temporary table.
 */
CREATE OR REPLACE FUNCTION tenantry.import_broken_foreign_key(tid uuid)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fk record;
    broken text;
    caller text := pg_catalog.current_setting('role');
    own_rows text;
    matches text;
BEGIN
    FOR fk IN
        WITH keyed AS (SELECT DISTINCT k.table_id FROM tenantry.tenant_keyed_columns() k)
        SELECT k.conname, k.conrelid::regclass AS own, k.confrelid::regclass AS ref,
               k.confmatchtype, xc.relkind AS own_kind, rc.relkind AS ref_kind,
               pg_catalog.has_table_privilege('tenantry_owner', k.confrelid, 'SELECT') AS owner_reads,
               array_agg(xa.attname ORDER BY u.n) AS own_cols,
               array_agg(ra.attname ORDER BY u.n) AS ref_cols,
               -- What names the row: its primary key, then the key's columns.
               (SELECT array_agg(w.c ORDER BY w.n)
                FROM (SELECT c, min(n) AS n
                      FROM unnest(coalesce((SELECT array_agg(pa.attname ORDER BY pu.n)
                                            FROM pg_catalog.pg_constraint p
                                            CROSS JOIN LATERAL unnest(p.conkey) WITH ORDINALITY AS pu(att, n)
                                            JOIN pg_catalog.pg_attribute pa ON pa.attrelid = p.conrelid AND pa.attnum = pu.att
                                            WHERE p.conrelid = k.conrelid AND p.contype = 'p'), '{}')
                                   || array_agg(xa.attname ORDER BY u.n)) WITH ORDINALITY AS v(c, n)
                      GROUP BY c) w) AS shown_cols
        FROM pg_catalog.pg_constraint k
        JOIN pg_catalog.pg_class xc ON xc.oid = k.conrelid
        JOIN pg_catalog.pg_class rc ON rc.oid = k.confrelid
        CROSS JOIN LATERAL unnest(k.conkey, k.confkey) WITH ORDINALITY AS u(own, ref, n)
        JOIN pg_catalog.pg_attribute xa ON xa.attrelid = k.conrelid AND xa.attnum = u.own
        JOIN pg_catalog.pg_attribute ra ON ra.attrelid = k.confrelid AND ra.attnum = u.ref
        WHERE k.contype = 'f' AND k.conparentid = 0
          AND k.conrelid IN (SELECT table_id FROM keyed)
          AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute t
                      WHERE t.attrelid = k.conrelid AND t.attname = 'tenant_id' AND NOT t.attisdropped)
        GROUP BY k.oid, k.conname, k.conrelid, k.confrelid, k.confmatchtype, xc.relkind, rc.relkind
        ORDER BY 2, 1
    LOOP
        -- The tenant's rows of the referencing table that the key applies
        -- to, each as the text naming it (tenantry_row).
        own_rows := 'SELECT json_build_object('
             || (SELECT string_agg(format('%L, x.%I', c, c), ', ') FROM unnest(fk.shown_cols) c)
             || ')::text AS tenantry_row, '
             || (SELECT string_agg(format('x.%I', o), ', ') FROM unnest(fk.own_cols) o)
             || ' FROM ' || CASE WHEN fk.own_kind = 'p' THEN '' ELSE 'ONLY ' END || fk.own::text
             || format(' x WHERE x.tenant_id = %L AND (', tid)
             || (SELECT string_agg(format('x.%I IS NOT NULL', o),
                                   CASE WHEN fk.confmatchtype = 'f' THEN ' OR ' ELSE ' AND ' END)
                 FROM unnest(fk.own_cols) o)
             || ')';
        matches := 'SELECT 1 FROM ' || CASE WHEN fk.ref_kind = 'p' THEN '' ELSE 'ONLY ' END || fk.ref::text || ' r WHERE '
             || (SELECT string_agg(format('r.%I = x.%I', r, o), ' AND ') FROM unnest(fk.own_cols, fk.ref_cols) AS p(o, r));
        -- The imported rows as tenantry_owner: the adopted tables' row level
        -- security is forced, and a migration role that is a member of
        -- tenantry_owner (not a superuser) would read none of them (found by
        -- a review of this check).
        PERFORM pg_catalog.set_config('role', 'tenantry_owner', true);
        IF fk.owner_reads THEN
            EXECUTE 'SELECT x.tenantry_row FROM (' || own_rows || ') x WHERE NOT EXISTS (' || matches || ') LIMIT 1'
            INTO broken;
        ELSE
            BEGIN
                EXECUTE 'CREATE TEMP TABLE tenantry_import_keys ON COMMIT DROP AS ' || own_rows;
            EXCEPTION WHEN insufficient_privilege THEN
                -- A database that took TEMPORARY from PUBLIC (a hardening guide's advice).
                RAISE EXCEPTION 'cannot check the imported rows'' foreign key % to %: tenantry_owner may not create temporary tables in this database', fk.conname, fk.ref
                    USING ERRCODE = '42501',
                          HINT = format('GRANT TEMPORARY ON DATABASE %I TO tenantry_owner; then import again (nothing was imported).', current_database());
            END;
            -- The referenced table as the caller, who may read it
            -- (tenantry_owner may only reference a team's table).
            PERFORM pg_catalog.set_config('role', caller, true);
            EXECUTE 'SELECT x.tenantry_row FROM pg_temp.tenantry_import_keys x WHERE NOT EXISTS (' || matches || ') LIMIT 1'
            INTO broken;
            DROP TABLE pg_temp.tenantry_import_keys;
        END IF;
        PERFORM pg_catalog.set_config('role', caller, true);
        IF broken IS NOT NULL THEN
            RETURN format('row %s of %s names a row of %s that is not there (foreign key %I: (%s) references %s (%s))',
                          broken, fk.own, fk.ref, fk.conname, array_to_string(fk.own_cols, ', '),
                          fk.ref, array_to_string(fk.ref_cols, ', '));
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.import_broken_foreign_key(uuid) IS 'Internal: the first foreign key of the tables an import of tenant tid fills (to any table: a team''s table that is not adopted, the permissions catalog, tenantry.tenants, the imported tables themselves) that the imported rows break, naming the table, the key and the row (its primary key and the key''s columns), or NULL. Reads the imported rows as tenantry_owner, and the referenced table as tenantry_owner when it may read it, else with the caller''s rights against the keys copied to a temporary table (the operator may read a team''s table; tenantry_owner may only reference it): the importer calls it after import_tenant_finish and rolls back on a key. Not granted.';

/**
 * Ends an import: shares made to tenants that are not here (or deleted) are
 * dropped, as deleting a tenant revokes them; then what row triggers
 * maintain is derived from the imported rows (share targets, key lookup,
 * a person's tenants, limit and quota counters), and row triggers are on again.
 */
CREATE OR REPLACE FUNCTION tenantry.import_tenant_finish(tid uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    home record;
BEGIN
    PERFORM tenantry.require_operator('import_tenant_finish');
    DELETE FROM tenantry.shared_resources s
    WHERE s.tenant_id = tid
      AND NOT EXISTS (SELECT 1 FROM tenantry.tenants t WHERE t.tenant_id = s.shared_with AND t.status <> 'deleted');
    DELETE FROM tenantry.shared_rows s
    WHERE s.tenant_id = tid
      AND NOT EXISTS (SELECT 1 FROM tenantry.tenants t WHERE t.tenant_id = s.shared_with AND t.status <> 'deleted');
    SELECT n.nspname, c.relname INTO home FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = tenantry.tenant_home_table(tid, 'tenantry.resources')::regclass;
    EXECUTE format('UPDATE ONLY %I.%I r SET shared_with = ARRAY(
                        SELECT s.shared_with FROM tenantry.shared_resources s
                        WHERE s.tenant_id = r.tenant_id AND s.resource_id = r.id ORDER BY s.shared_at, s.shared_with)
                    WHERE r.tenant_id = $1 AND r.shared_with <> ''{}''',
                   home.nspname, home.relname)
    USING tid;
    INSERT INTO tenantry.resource_share_targets (shared_with, tenant_id, shares)
    SELECT s.shared_with, s.tenant_id, count(*) FROM tenantry.shared_resources s
    WHERE s.tenant_id = tid GROUP BY s.shared_with, s.tenant_id;
    INSERT INTO tenantry.api_key_lookup (tenant_id, key_id, prefix)
    SELECT k.tenant_id, k.key_id, k.prefix FROM tenantry.api_keys k WHERE k.tenant_id = tid;
    INSERT INTO tenantry.member_tenants (user_id, tenant_id)
    SELECT m.user_id, m.tenant_id FROM tenantry.tenant_members m WHERE m.tenant_id = tid;
    PERFORM tenantry.recount_limit_usage(tid);
    -- Its request log is dated in the past, in hours the usage roll-up has
    -- counted already.
    PERFORM tenantry.recount_tenant_metrics(tid);
    PERFORM tenantry.recount_quota_usage(tid);
    -- Servers may hold answers about this id from before (a member's "not a
    -- member", as the member triggers would have dropped): they drop them.
    PERFORM tenantry.notify_invalidation(tenantry.invalidation_payload('tenant', tid));
    PERFORM set_config('session_replication_role', 'origin', true);
END
$$;
COMMENT ON FUNCTION tenantry.import_tenant_finish(uuid) IS 'Operators only: ends an import (shares to absent tenants dropped; share targets, key lookup, member_tenants, counters and rolled-up usage hours derived from the imported rows; servers told to drop what they cached of the id; row triggers on again). Not granted.';

-- -----------------------------------------------------------------------------
-- Purge: every row, schema and share of a deleted tenant, after the grace period
-- -----------------------------------------------------------------------------

/**
 * Hard-deletes a tenant: allowed for an administrative context or an
 * operator, for a tenant deleted at least purge_policy.grace ago, without
 * child tenants (deleted ones too: purge them first) and no tier move under
 * way (TN409 otherwise, TN404 for an unknown or already purged id), and
 * while a table outside what it deletes still has rows pointing at the
 * tenant or its rows through a foreign key (purge_foreign_keys(); TN409
 * naming it: delete those rows or adopt the table). Removes every row of
 * every column tenant_keyed_columns() names, by that column (row locks,
 * and ROW EXCLUSIVE on those tables, which no query or write of others
 * waits for), then its schema (a schema tenant: ACCESS EXCLUSIVE on its
 * tables from then to commit, taken last and under a 100 ms lock_timeout,
 * so no query over a whole family waits long behind it: TN503, try again),
 * then the tenant row, with row triggers off (audit_log is append-only to
 * everyone else). Records the
 * purge in purged_tenants, so the id is never reused. Returns the counts.
 */
CREATE OR REPLACE FUNCTION tenantry.purge_tenant(tid uuid)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    f record;
    -- The default when an operator emptied the policy: without a row,
    -- `updated_at + NULL > now()` held nothing back (found by a review of
    -- the policies' audit).
    grace interval := coalesce((SELECT p.grace FROM tenantry.purge_policy p), interval '30 days');
    counts jsonb := '{}';
    n bigint;
    purged_at timestamptz;
    dropped text;
    dangling boolean;
    waited text;
BEGIN
    PERFORM tenantry.require_admin_context('purging tenants');
    SELECT tn.name, tn.status, tn.updated_at, tn.schema_name, tn.parent_id, tn.created_by_user INTO t
    FROM tenantry.tenants tn WHERE tn.tenant_id = tid FOR UPDATE;
    IF NOT FOUND THEN
        SELECT p.purged_at INTO purged_at FROM tenantry.purged_tenants p WHERE p.tenant_id = tid;
        IF FOUND THEN
            RAISE EXCEPTION 'tenant % not found: it was purged at %', tid, tenantry.rfc3339(purged_at) USING ERRCODE = 'TN404';
        END IF;
        RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404';
    END IF;
    IF t.status <> 'deleted' THEN
        -- (No grace period to name when the purge policy gives none: the
        -- message said "after the grace period of 00:00:00".)
        RAISE EXCEPTION 'tenant % is %: only a deleted tenant can be purged (delete it, then purge it%)',
            tid, t.status, CASE WHEN grace > interval '0' THEN ' after the grace period of ' || grace::text ELSE '' END
            USING ERRCODE = 'TN409';
    END IF;
    -- updated_at of a deleted tenant is when it was deleted: nothing changes it after.
    IF t.updated_at + grace > now() THEN
        RAISE EXCEPTION 'tenant % was deleted at %: it can be purged from % on (grace period %)',
            tid, tenantry.rfc3339(t.updated_at), tenantry.rfc3339(t.updated_at + grace), grace USING ERRCODE = 'TN409';
    END IF;
    IF EXISTS (SELECT 1 FROM tenantry.tenant_hierarchy h WHERE h.parent_id = tid AND h.depth > 0) THEN
        RAISE EXCEPTION 'tenant % still has child tenants (deleted ones too): purge them first', tid
            USING ERRCODE = 'TN409';
    END IF;
    IF EXISTS (SELECT 1 FROM tenantry.tier_moves m WHERE m.tenant_id = tid) THEN
        RAISE EXCEPTION 'tenant % has a tier move under way: abort it first', tid USING ERRCODE = 'TN409';
    END IF;
    -- Rows outside what the purge deletes that point at the tenant or its
    -- rows (an application's table with a foreign key to tenants, say): with
    -- row triggers off, deleting what they point at would leave them
    -- dangling. The operator deletes them, or adopts the table, first.
    FOR f IN SELECT * FROM tenantry.purge_foreign_keys() LOOP
        BEGIN
            EXECUTE f.probe INTO dangling USING tid;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'table % has a foreign key (%) to %, and tenantry cannot read it to check for rows of tenant %: grant SELECT on it to tenantry_owner, or adopt it',
                f.table_id, f.constraint_name, f.referenced, tid USING ERRCODE = 'TN409';
        END;
        IF dangling THEN
            RAISE EXCEPTION 'table % still has rows pointing at tenant % or its rows (foreign key % to %), which a purge would leave dangling: delete them, or adopt the table, then purge again',
                f.table_id, tid, f.constraint_name, f.referenced USING ERRCODE = 'TN409';
        END IF;
    END LOOP;
    PERFORM set_config('session_replication_role', 'replica', true);
    FOR f IN SELECT * FROM tenantry.tenant_keyed_columns() LOOP
        -- ONLY on a plain table: a pooled table's family would reach every
        -- schema tenant's table (and lock each); a partitioned one has no rows of its own.
        IF f.partitioned THEN
            EXECUTE format('DELETE FROM %I.%I WHERE %I = $1', f.schema_name, f.table_name, f.column_name)
            USING tid;
        ELSE
            EXECUTE format('DELETE FROM ONLY %I.%I WHERE %I = $1', f.schema_name, f.table_name, f.column_name)
            USING tid;
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            counts := counts || jsonb_build_object(
                f.table_id::text || CASE WHEN f.column_name = 'tenant_id' THEN '' ELSE '.' || f.column_name END, n);
        END IF;
    END LOOP;
    -- The schema last: DROP takes ACCESS EXCLUSIVE on its tables, which
    -- every query over a whole family (the pooled table and its schema
    -- tenants' tables) then waits for until commit. Taken now, it is held
    -- for the tenant row's delete and the purge record only, not for the
    -- deletes above; and only waited for 100 ms, so such queries do not
    -- queue behind it either (TN503, try again).
    IF EXISTS (SELECT 1 FROM pg_namespace s WHERE s.nspname = t.schema_name) THEN
        -- The rows that go with the schema count as deleted too, under the
        -- schema's own table names (nobody writes to a deleted tenant's
        -- tables: its keys, members and context are refused).
        FOR f IN SELECT c.relname FROM pg_class c
                 WHERE c.relnamespace = to_regnamespace(quote_ident(t.schema_name))
                   AND c.relkind = 'r' ORDER BY c.relname LOOP
            EXECUTE format('SELECT count(*) FROM ONLY %I.%I', t.schema_name, f.relname) INTO n;
            IF n > 0 THEN
                counts := counts || jsonb_build_object(format('%I.%I', t.schema_name, f.relname), n);
            END IF;
        END LOOP;
        -- As before the deletes: event triggers of the database see the drop.
        PERFORM set_config('session_replication_role', 'origin', true);
        waited := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', '100ms', true);
        BEGIN
            EXECUTE format('DROP SCHEMA %I CASCADE', t.schema_name);
        EXCEPTION WHEN lock_not_available THEN
            RAISE EXCEPTION 'tenant %''s schema is in use by a query over a whole table family: try again', tid
                USING ERRCODE = 'TN503';
        END;
        PERFORM set_config('lock_timeout', waited, true);
        PERFORM set_config('session_replication_role', 'replica', true);
        dropped := t.schema_name;
    END IF;
    -- Stored answers that carry the tenant (the operator's PATCH or
    -- creation, its parent's key creating it): a retry within their 24
    -- hours replayed its name and settings after the purge (found by a
    -- review of offboarding). Kept, without the answer: deleted, a retry of
    -- the creation made the tenant again (its verification); 410 Gone, no
    -- body, is replayed instead.
    UPDATE tenantry.operator_idempotency_keys k SET status = 410, body = NULL
     WHERE k.body IS NOT NULL AND position(convert_to(tid::text, 'UTF8') IN k.body) > 0;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        counts := counts || jsonb_build_object('tenantry.operator_idempotency_keys', n);
    END IF;
    -- A person's creation of it (POST /v1/me/tenants), likewise: only the
    -- person who created it holds such an answer (create_my_tenant stores
    -- the tenant it made under its maker's keys), found by the primary key.
    IF t.created_by_user IS NOT NULL THEN
        UPDATE tenantry.person_idempotency_keys k SET status = 410, body = NULL
         WHERE k.user_id = t.created_by_user
           AND k.body IS NOT NULL AND position(convert_to(tid::text, 'UTF8') IN k.body) > 0;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            counts := counts || jsonb_build_object('tenantry.person_idempotency_keys', n);
        END IF;
    END IF;
    IF t.parent_id IS NOT NULL THEN
        UPDATE tenantry.idempotency_keys k SET status = 410, body = NULL
         WHERE k.tenant_id = t.parent_id
           AND k.body IS NOT NULL AND position(convert_to(tid::text, 'UTF8') IN k.body) > 0;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            counts := counts || jsonb_build_object('tenantry.idempotency_keys', n);
        END IF;
    END IF;
    DELETE FROM tenantry.tenants tn WHERE tn.tenant_id = tid;
    PERFORM set_config('session_replication_role', 'origin', true);
    INSERT INTO tenantry.purged_tenants (tenant_id, name, deleted_at, purged_by, rows_deleted)
    VALUES (tid, t.name, t.updated_at, tenantry.current_actor(), counts)
    RETURNING purged_tenants.purged_at INTO purged_at;
    -- The planner's statistics (pg_statistic: most common values, histogram
    -- bounds) keep sampled values of the rows deleted here, names and emails
    -- among them, until each table is analyzed again, which autovacuum does
    -- not do for a few rows gone (found by an erasure review). Analyzed now,
    -- in this transaction: its own deletions are left out of the sample. A
    -- table whose lock another maintenance holds past a second is left to
    -- autovacuum, with a warning that names it. Not on Citus, whose ANALYZE
    -- of a distributed table runs outside a transaction block.
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        waited := current_setting('lock_timeout');
        -- The counts' keys are tables, or a table and a column: the table.
        -- And always resources, whose statistics over the tables that
        -- inherit it (a schema tenant's, dropped above, whose counts name
        -- a schema that is gone) are computed by ANALYZE of it alone (a
        -- verification review).
        FOR f IN SELECT DISTINCT to_regclass(format('%I.%I', p[1], p[2])) AS tbl
                   FROM jsonb_object_keys(counts || '{"tenantry.tenants": 1, "tenantry.resources": 1}') k,
                        LATERAL parse_ident(k) p LOOP
            CONTINUE WHEN f.tbl IS NULL;
            BEGIN
                PERFORM set_config('lock_timeout', '1s', true);
                EXECUTE format('ANALYZE %s', f.tbl);
            EXCEPTION WHEN lock_not_available THEN
                RAISE WARNING 'the statistics of % may still show values of the purged rows until it is analyzed again (ANALYZE %): its lock was held', f.tbl, f.tbl;
            END;
        END LOOP;
        PERFORM set_config('lock_timeout', waited, true);
    END IF;
    RETURN jsonb_build_object('tenant_id', tid, 'purged_at', purged_at, 'deleted_at', t.updated_at,
                              'schema_dropped', dropped, 'rows_deleted', counts);
END
$$;
COMMENT ON FUNCTION tenantry.purge_tenant(uuid) IS 'Admin (administrative context) or operator: hard-deletes a tenant deleted at least purge_policy.grace ago (no children, no move under way): its schema, every row of every tenant-keyed column (tenant_keyed_columns()), the answers stored for idempotent retries that carry its id (the operator''s, its parent''s, the person''s who created it: kept as 410 Gone without a body, so a retried creation does not make it again), its tenant row; records it (rows_deleted counts its schema''s rows too, under their schema-qualified table names) in purged_tenants so the id is never reused; analyzes the tables it deleted from, so that their planner statistics hold none of its values. Returns {tenant_id, purged_at, deleted_at, schema_dropped, rows_deleted}. TN404 unknown or purged, TN409 not deleted, in its grace period, with children, or while an unadopted table''s foreign key still points at its rows; TN503 when its schema is busy.';
GRANT EXECUTE ON FUNCTION tenantry.purge_tenant(uuid) TO tenantry_admin;
