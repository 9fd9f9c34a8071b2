-- =============================================================================
-- Schema-per-tenant ("silo") isolation and moves between tiers.
--
-- A schema tenant's rows live in tables of its own schema (tenants.
-- schema_name: tenant_ and random hex, naming nothing about the tenant), one
-- per tenant table family, named as the family's pooled table. Its table of
-- tenantry.resources INHERITs it (tenantry names ONLY tenantry.resources
-- where it must, and a query on it reaches every tenant's resources under
-- the one policy); its tables of the team's adopted tables stand alone
-- (family_of, family_copies): a team's statement on its table would
-- otherwise plan and lock every schema tenant's table of it (0036).
-- Creating one takes no lock any other tenant waits for (SHARE UPDATE
-- EXCLUSIVE on tenantry.resources, which readers and writers do not
-- conflict with) and touches no row; the server routes a tenant's
-- statements to its own tables (docs/architecture.md, "Tiers").
--
-- Moving a tenant between tiers (tier_move_start, _copy, _catch_up, _finish;
-- set_tenant_isolation does all four in one transaction, CALL
-- tenantry.move_tenant commits between them), while the tenant keeps
-- working. Towards the schema tier the rows are copied in batches into the
-- tenant's new tables, which no query sees yet (tenant_row_home records every
-- key it writes meanwhile); then the cut-over takes the tenant's row in
-- tenants FOR NO KEY UPDATE (its writers wait, nobody else does: its own
-- transactions hold the row FOR SHARE, which this waits for, while another
-- tenant sharing with it holds FOR KEY SHARE through a foreign key, which
-- must not hold a move back for as long as it likes), copies what
-- changed, and switches the tier. Towards the shared tier the rows move in
-- batches, each a short transaction under the tenant's row lock that deletes
-- them from its tables and inserts them into the pooled ones: every reader
-- sees each row once, in one table or the other, and the tenant's own
-- transactions read the whole family meanwhile (tenant_context_part, ,h);
-- the cut-over moves what is left and switches the tier. Bulk copies run with session_replication_role =
-- replica: no row trigger (quota, audit, shares, tier checks) fires for rows
-- that only change place.
-- =============================================================================

-- The owner's functions copy rows without firing row triggers. Granted once
-- per cluster, like backtrace_functions (01_context.sql).
RESET ROLE;
DO $grant$
BEGIN
    IF NOT has_parameter_privilege('tenantry_owner', 'session_replication_role', 'SET') THEN
        GRANT SET ON PARAMETER session_replication_role TO tenantry_owner;
    END IF;
END
$grant$;
SET LOCAL ROLE tenantry_owner;

-- The move's bookkeeping is the owner's alone: no role reads or writes it
-- (the tier_move_* functions do, as the owner).
CREATE POLICY tier_moves_no_direct_access ON tenantry.tier_moves AS RESTRICTIVE FOR ALL TO PUBLIC USING (false) WITH CHECK (false);
COMMENT ON POLICY tier_moves_no_direct_access ON tenantry.tier_moves IS 'No role reads or writes moves directly: only the owner''s tier_move_* functions (the table is granted to none).';
CREATE POLICY tier_move_changes_no_direct_access ON tenantry.tier_move_changes AS RESTRICTIVE FOR ALL TO PUBLIC USING (false) WITH CHECK (false);
COMMENT ON POLICY tier_move_changes_no_direct_access ON tenantry.tier_move_changes IS 'No role reads or writes recorded writes directly: tenant_row_home appends, the tier move consumes (both as the owner; the table is granted to none).';

/**
 * The tenant table families, one row each: the pooled table, its schema and
 * name (a tenant schema's table of it has that name), and the key column a
 * move copies by. What every family lookup needs; tier_tables() adds what a
 * copy of rows needs.
 */
CREATE OR REPLACE FUNCTION tenantry.family_templates()
RETURNS TABLE (template regclass, template_schema name, template_table name, key_column name)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL, for its cached plan: moves, schema creations and the
    -- triggers of schema tenants' tables call this. Driven by tenant_tables
    -- (few rows), each key looked up by its table (pg_constraint grows with
    -- every tenant schema). resources by to_regclass(), not a regclass
    -- constant: a plan depends on the tables its constants name, and every
    -- schema tenant's table that joins resources would make it be planned
    -- again (issue 13).
    RETURN QUERY
    SELECT pg_catalog.to_regclass('tenantry.resources'), 'tenantry'::name, 'resources'::name, 'id'::name
    UNION ALL
    -- The team's adopted tables that can have a table per schema tenant:
    -- plain tables whose primary key is (tenant_id, one column), by which a
    -- move copies. The others keep every tenant's rows, schema tenants' too,
    -- in the pooled table. Plain joins: a creation's catalog changes make
    -- it planned again, and with subqueries a call cost 0.97 ms there
    -- against 0.16 ms (docs/benchmarks.md).
    SELECT k.table_id, k.nspname, k.relname, k.key_column
    FROM (SELECT tt.table_id, n.nspname, c.relname, a.attname AS key_column,
                 -- A tenant schema's table is named as its family's pooled
                 -- table: of adopted tables with one name (public.invoices,
                 -- billing.invoices), the first adopted is the family, and
                 -- none named resources (tenantry's) is one. (Ties broken by
                 -- schema name: oids change in a dump and restore.)
                 row_number() OVER (PARTITION BY c.relname ORDER BY tt.adopted_at, n.nspname)
                 + (c.relname = 'resources')::int AS name_rank
          FROM tenantry.tenant_tables tt
          JOIN pg_class c ON c.oid = tt.table_id AND c.relkind = 'r'
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_constraint k ON k.conrelid = tt.table_id AND k.contype = 'p' AND cardinality(k.conkey) = 2
          JOIN pg_attribute t ON t.attrelid = tt.table_id AND t.attnum = k.conkey[1] AND t.attname = 'tenant_id'
          JOIN pg_attribute a ON a.attrelid = tt.table_id AND a.attnum = k.conkey[2]) k
    WHERE k.name_rank <= 1;
END
$$;
COMMENT ON FUNCTION tenantry.family_templates() IS 'Internal: the tenant table families a tenant schema holds a table of, named as theirs: resources and every adopted plain table with a primary key (tenant_id, column), the first adopted of those with one name and none named resources (template: the pooled table, with its schema and name; its key column). Granted to the roles that run the doctor (it reads tenant_tables and the catalogs, as they may).';
GRANT EXECUTE ON FUNCTION tenantry.family_templates() TO tenantry_admin, tenantry_server;

/** Which tables a tenant schema holds: every tenant table family, with the key column a move copies by, its type and the columns a copy writes. */
CREATE OR REPLACE FUNCTION tenantry.tier_tables()
RETURNS TABLE (template regclass, template_schema name, template_table name,
               key_column name, key_type text, columns text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT f.template, f.template_schema, f.template_table, f.key_column,
           (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
            WHERE a.attrelid = f.template AND a.attname = f.key_column),
           (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
            WHERE a.attrelid = f.template AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '')
    FROM tenantry.family_templates() f;
END
$$;
COMMENT ON FUNCTION tenantry.tier_tables() IS 'Internal: the tenant table families (family_templates()) with what a copy of their rows needs: the key column''s type and the columns a copy writes (all but generated ones). Not granted.';

/**
 * The family a schema tenant's own table is of: the pooled table of
 * family_templates() with its name, for a table in a tenant schema; NULL for any
 * other table. (Only the tables of tenantry.resources inherit their family;
 * the others are found by name.)
 */
CREATE OR REPLACE FUNCTION tenantry.family_of(tbl regclass)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f.template
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN tenantry.family_templates() f ON f.template_table = c.relname
    WHERE c.oid = tbl AND n.nspname ~ '^tenant_[0-9a-f]{20}$'
$$;
COMMENT ON FUNCTION tenantry.family_of(regclass) IS 'Internal: the tenant table family (its pooled table) a table in a tenant schema is of, by name; NULL for any other table. Not granted.';

/**
 * Every schema tenant's (and spare or half-built schema's) table of every
 * family, with the family's pooled table: what the doctor compares with its
 * family. By name, through pg_class's index on it.
 */
CREATE OR REPLACE FUNCTION tenantry.family_copies()
RETURNS TABLE (copy regclass, template regclass)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid::regclass, f.template
    FROM tenantry.family_templates() f
    JOIN pg_catalog.pg_class c ON c.relname = f.template_table AND c.relkind = 'r'
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname ~ '^tenant_[0-9a-f]{20}$'
$$;
COMMENT ON FUNCTION tenantry.family_copies() IS 'Internal: every table of a tenant table family in a tenant schema, with its family''s pooled table (family_of, for all of them at once). Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.family_copies() TO tenantry_admin, tenantry_server;

/**
 * Tables in tenant schemas named as an adopted table of the team's when no
 * family of that name exists: the team's table lost its primary key
 * (tenant_id, one column) after schema tenants got tables of it, so
 * tenantry no longer compares, moves or exports those tables (adopted: the
 * team's tables of that name; key_column: the schema tenant's table's own
 * key after tenant_id, to restore).
 */
CREATE OR REPLACE FUNCTION tenantry.orphan_copies()
RETURNS TABLE (copy regclass, adopted regclass, key_column name)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- One row per table: of adopted tables with one name, the first adopted
    -- (as family_templates ranks them).
    SELECT DISTINCT ON (c.oid) c.oid::regclass, tt.table_id::regclass,
           (SELECT a.attname FROM pg_catalog.pg_constraint k
              JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[2]
             WHERE k.conrelid = c.oid AND k.contype = 'p' AND cardinality(k.conkey) = 2)
    FROM tenantry.tenant_tables tt
    JOIN pg_catalog.pg_class t ON t.oid = tt.table_id AND t.relkind = 'r' AND t.relname <> 'resources'
    JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
    JOIN pg_catalog.pg_class c ON c.relname = t.relname AND c.relkind = 'r' AND c.oid <> t.oid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname ~ '^tenant_[0-9a-f]{20}$'
      AND NOT EXISTS (SELECT 1 FROM tenantry.family_templates() f WHERE f.template_table = t.relname)
    ORDER BY c.oid, tt.adopted_at, tn.nspname
$$;
COMMENT ON FUNCTION tenantry.orphan_copies() IS 'Internal: tables in tenant schemas named as an adopted table when no tenant table family has that name any more (the team''s table lost its primary key (tenant_id, column)): tenantry no longer checks, moves or exports them (doctor rule copy_family; release_table refuses). adopted: the team''s table; key_column: the key after tenant_id to restore. Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.orphan_copies() TO tenantry_admin, tenantry_server;

/**
 * The first table of schema `s` that holds a row (skipping the tables of
 * tenant table families when `skip_families`), or NULL. A tenant schema is
 * dropped only when it holds nothing that would be lost. Run as the owner
 * (BYPASSRLS), from the definer functions that drop or read tenant schemas.
 */
CREATE OR REPLACE FUNCTION tenantry.first_table_with_rows(s name, skip_families boolean)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
    held boolean;
BEGIN
    FOR rel IN
        SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        -- Partitions too: one whose parent is elsewhere goes with the schema.
        WHERE n.nspname = s AND c.relkind IN ('r', 'p')
        ORDER BY c.relname
    LOOP
        CONTINUE WHEN skip_families AND tenantry.family_of(rel) IS NOT NULL;
        -- One the owner may not read is not known to be empty.
        IF NOT pg_catalog.has_table_privilege(rel, 'SELECT') THEN
            RETURN rel;
        END IF;
        EXECUTE format('SELECT EXISTS (SELECT FROM %s)', rel) INTO held;
        IF held THEN
            RETURN rel;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.first_table_with_rows(name, boolean) IS 'Internal: the first table of a schema that holds a row, or that the caller may not read (those of tenant table families skipped when asked), or NULL; tenant schemas are dropped only when it finds none. Not granted.';

/** How first_table_with_rows' finding is told: it holds rows, or it may. */
CREATE OR REPLACE FUNCTION tenantry.rows_held(rel regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_catalog.has_table_privilege(rel, 'SELECT') THEN 'holds rows'
                ELSE format('may hold rows (%s may not read it)', current_user) END
$$;
COMMENT ON FUNCTION tenantry.rows_held(regclass) IS 'Internal: "holds rows", or "may hold rows" for a table the caller may not read (first_table_with_rows'' findings, in messages). Not granted.';

/**
 * Refuses (TN409) when the schema a tenant left behind by a move to the
 * shared tier still holds a row outside its families' tables: those were
 * emptied at the cut-over, under the tenant's lock, and take no row since
 * (tenant_row_home refuses a pooled tenant's row there), so they are not
 * read again (after a large tenant's move they are full of dead rows); a
 * row in another table was put there by hand or through a family that is
 * gone, and dropping the schema would lose it.
 */
CREATE OR REPLACE FUNCTION tenantry.refuse_dropping_rows(tid uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    held regclass := tenantry.first_table_with_rows(
        (SELECT t.schema_name FROM tenantry.tenants t WHERE t.tenant_id = tid), true);
BEGIN
    IF held IS NOT NULL THEN
        RAISE EXCEPTION 'the schema tenant % left behind is not dropped: % still %', tid, held, tenantry.rows_held(held)
            USING ERRCODE = 'TN409', HINT = 'Move those rows into the tenant''s tables or drop that table yourself, then run the move or its cleanup again.';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.refuse_dropping_rows(uuid) IS 'Internal (tier_move_cleanup, tier_move_start): TN409 when the schema a tenant left behind still holds a row outside its families'' tables (emptied at the cut-over), which dropping it would lose. Not granted.';

/**
 * Drops schema `s` with its tables when that takes no wait: under a 100 ms
 * lock_timeout, since every query reading the whole resources family (which
 * a left tenant table of resources may still join), and every user of a
 * table a foreign key of its tables points to, would queue behind a drop
 * waiting for a table in use. False, nothing dropped, when it would have
 * had to wait. Run as the owner (tier_move_start, tier_move_cleanup,
 * tier_move_abort).
 */
CREATE OR REPLACE FUNCTION tenantry.drop_schema_without_waiting(s text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lock_wait text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', '100ms', true);
    BEGIN
        EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', s);
    EXCEPTION WHEN lock_not_available THEN
        PERFORM set_config('lock_timeout', lock_wait, true);
        RETURN false;
    END;
    PERFORM set_config('lock_timeout', lock_wait, true);
    RETURN true;
END
$$;
COMMENT ON FUNCTION tenantry.drop_schema_without_waiting(text) IS 'Internal: drops a tenant schema (CASCADE) under a 100 ms lock_timeout, so that nobody queues behind the drop; false, nothing dropped, when a table of it is in use. Not granted.';

/**
 * Why a schema tenant's tables cannot be read as their families' pooled
 * tables, which a move back to the shared tier and an export do: the first
 * column one lacks or has beyond its family's pooled table (a tenant-schema
 * step not run in its schema yet, or a change made without one), a table
 * named as an adopted table that is no family any more (its key was
 * dropped: the tenant's route still writes there, and a move would leave
 * those rows behind), or another table that holds rows. NULL when nothing
 * does.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_tables_unlike_families(tid uuid)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s name := (SELECT t.schema_name FROM tenantry.tenants t WHERE t.tenant_id = tid);
    problem text;
    stray regclass;
BEGIN
    SELECT format('%s %s column %I of %s (a tenant-schema step has not run in its schema: run tenantry migrate; '
                  'or the column was changed without one: tenantry doctor, rule copy_columns, names the fix)',
                  x.copy, CASE WHEN x.lacking THEN 'lacks' ELSE 'has a' END, x.attname,
                  CASE WHEN x.lacking THEN x.template::text ELSE 'which ' || x.template::text || ' has none' END)
      INTO problem
    FROM (SELECT f.template, c.oid::regclass AS copy, a.attname, true AS lacking
          FROM tenantry.family_templates() f
          JOIN pg_catalog.pg_namespace n ON n.nspname = s
          JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = f.template_table
          JOIN pg_catalog.pg_attribute a ON a.attrelid = f.template AND a.attnum > 0 AND NOT a.attisdropped
          WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute o
                            WHERE o.attrelid = c.oid AND o.attname = a.attname AND NOT o.attisdropped)
          UNION ALL
          SELECT f.template, c.oid::regclass, a.attname, false
          FROM tenantry.family_templates() f
          JOIN pg_catalog.pg_namespace n ON n.nspname = s
          JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = f.template_table
          JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute o
                            WHERE o.attrelid = f.template AND o.attname = a.attname AND NOT o.attisdropped)) x
    ORDER BY x.copy::text, x.attname LIMIT 1;
    IF problem IS NOT NULL OR s IS NULL THEN
        RETURN problem;
    END IF;
    SELECT format('%s belongs to no tenant table family: %s, the team''s table of its name, has no primary key '
                  '(tenant_id, %s) any more (tenantry doctor, rule copy_family, names the fix)',
                  o.copy, o.adopted, coalesce(quote_ident(o.key_column), 'column'))
      INTO problem
    FROM tenantry.orphan_copies() o
    JOIN pg_catalog.pg_class c ON c.oid = o.copy
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s
    ORDER BY o.copy::text LIMIT 1;
    IF problem IS NOT NULL THEN
        RETURN problem;
    END IF;
    stray := tenantry.first_table_with_rows(s, true);
    IF stray IS NOT NULL THEN
        RETURN format('%s %s but belongs to no tenant table family, and they would be left behind',
                      stray, tenantry.rows_held(stray));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_tables_unlike_families(uuid) IS 'Internal: why a schema tenant''s tables cannot be copied or exported by their families'' columns (a column lacking or extra: a tenant-schema step not run yet, or a change made without one; a table of a family that is gone; another table holding rows), or NULL. A move back to the shared tier and an export refuse with it (TN409). Not granted.';

/**
 * Refuses (TN409, naming the column and what to do) a move whose tenant's
 * schema tables cannot be copied by their families' columns: before it
 * starts back to the shared tier, and before every batch and the cut-over
 * in either direction, since the team's table can change shape while a
 * move is under way (a plain ALTER TABLE, or alter_tenant_table whose step
 * has not run in the tenant's schema yet). The copy failed with 42703 at
 * every try before, and a move back could not even be aborted (found by an
 * outside review). Towards the schema tier the half-built tables can also
 * be given up: aborting and starting again copies them afresh.
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_refuse_unlike(tid uuid, target text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text;
BEGIN
    -- No move under way: the caller answers that (tier_move_finish's TN404,
    -- which a mover racing another takes for "finished").
    IF target IS NULL THEN
        RETURN;
    END IF;
    problem := tenantry.tenant_tables_unlike_families(tid);
    IF problem IS NULL THEN
        RETURN;
    ELSIF target = 'shared' THEN
        RAISE EXCEPTION 'tenant % cannot move back to the shared tier yet: %', tid, problem
            USING ERRCODE = 'TN409', HINT = 'isolation';
    ELSE
        RAISE EXCEPTION 'tenant % cannot go on moving to the schema tier: % (then run the move again: it resumes); or abort the move (tenantry tenant move --abort, or SELECT tenantry.tier_move_abort(...)) and start it again, which copies its tables afresh', tid, problem
            USING ERRCODE = 'TN409', HINT = 'isolation';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.tier_move_refuse_unlike(uuid, text) IS 'Internal: TN409, naming the column and the way on, when the moving tenant''s schema tables differ from their families'' pooled tables (tenant_tables_unlike_families): a move back refuses to start, and no batch or cut-over of a move in either direction copies by columns one side lacks. Not granted.';

/**
 * The sequences of a table's serial and identity columns. PL/pgSQL for its
 * cached plan, generic: a SQL function with a SET clause is planned again at
 * every call (twice per schema tenant's creation).
 */
CREATE OR REPLACE FUNCTION tenantry.owned_sequences(tbl regclass)
RETURNS SETOF regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- One plan for every table: PostgreSQL's choice of a plan per argument
-- planned it again at every call.
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
    SELECT d.objid::regclass
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
    WHERE d.classid = 'pg_catalog.pg_class'::regclass
      AND d.refclassid = 'pg_catalog.pg_class'::regclass
      AND d.refobjid = tbl AND d.deptype IN ('a', 'i');
END
$$;
COMMENT ON FUNCTION tenantry.owned_sequences(regclass) IS 'Internal: the sequences of a table''s serial and identity columns (secure_tenant_table and secure_tenant_copy grant their use, release_table takes it back; here, before secure_tenant_copy, which upgrades run from this file). Not granted.';

/**
 * The sequences of a table's serial columns only: their defaults call
 * nextval() with the inserting role's rights, so the app roles need USAGE on
 * them. An identity column's sequence needs no grant (PostgreSQL advances it
 * for an insert without checking), and USAGE would let any tenant read
 * every tenant's count of inserts (pg_sequences.last_value) and advance it.
 */
CREATE OR REPLACE FUNCTION tenantry.serial_sequences(tbl regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.objid::regclass
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
    WHERE d.classid = 'pg_catalog.pg_class'::regclass
      AND d.refclassid = 'pg_catalog.pg_class'::regclass
      AND d.refobjid = tbl AND d.deptype = 'a'
$$;
COMMENT ON FUNCTION tenantry.serial_sequences(regclass) IS 'Internal: the sequences of a table''s serial columns, whose defaults call nextval() with the inserting role''s rights (secure_tenant_table and secure_tenant_copy grant the app their use; identity columns'' sequences need none and get none). Not granted.';

/**
 * A schema tenant's table of one tenant table family (the pooled table is
 * its template; only resources' inherit it): forced RLS and exactly the template's
 * policies, triggers and grants (table and column privileges), so that the
 * copy guarantees what the template does; foreign keys to other families
 * point at the same schema's tables. Idempotent.
 */
CREATE OR REPLACE FUNCTION tenantry.secure_tenant_copy(template regclass, copy regclass)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    copy_schema text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = copy);
    pol record;
    trg record;
    acl record;
    fk record;
    seq regclass;
BEGIN
    -- The strongest lock first, as ENABLE ROW LEVEL SECURITY took it when it
    -- came first: re-securing a table in use (the doctor's fix) would else
    -- hold a weaker lock and deadlock with a transaction that read the table
    -- and then writes it. A table made in this transaction: held already.
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', copy);
    FOR trg IN
        SELECT pg_get_triggerdef(t.oid) AS def FROM pg_trigger t
        WHERE t.tgrelid = template AND NOT t.tgisinternal
    LOOP
        EXECUTE replace(replace(trg.def, 'CREATE TRIGGER ', 'CREATE OR REPLACE TRIGGER '),
                        format(' ON %s ', template), format(' ON %s ', copy));
    END LOOP;
    -- A table made by LIKE has no privileges but its owner's (NULL ACLs):
    -- nothing to revoke then.
    IF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = copy AND c.relacl IS NOT NULL)
       OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = copy AND a.attacl IS NOT NULL) THEN
        EXECUTE format('REVOKE ALL ON TABLE %s FROM PUBLIC, tenantry_app, tenantry_app_own, tenantry_app_shared, '
                       'tenantry_admin, tenantry_logger, tenantry_server', copy);
        -- And from whoever else holds a grant on it (one the template no
        -- longer has, or one made on the copy itself): those below are all.
        FOR acl IN
            SELECT DISTINCT a.grantee
            FROM pg_class c, aclexplode(c.relacl) a
            WHERE c.oid = copy AND a.grantee <> 0 AND a.grantee <> c.relowner
            UNION
            SELECT DISTINCT a.grantee
            FROM pg_attribute at, aclexplode(at.attacl) a
            WHERE at.attrelid = copy AND at.attacl IS NOT NULL AND a.grantee <> 0
              AND a.grantee <> (SELECT c.relowner FROM pg_class c WHERE c.oid = copy)
        LOOP
            EXECUTE format('REVOKE ALL ON TABLE %s FROM %s', copy, acl.grantee::regrole);
        END LOOP;
    END IF;
    -- One GRANT per grantee (each is a catalog update of the table).
    FOR acl IN
        SELECT a.grantee, string_agg(a.privilege_type, ', ') AS privilege_type
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = template AND a.grantee <> c.relowner
        GROUP BY a.grantee
    LOOP
        EXECUTE format('GRANT %s ON %s TO %s', acl.privilege_type, copy,
                       CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END);
    END LOOP;
    -- Column privileges, one GRANT per privilege and grantee.
    FOR acl IN
        SELECT a.grantee, a.privilege_type, string_agg(quote_ident(at.attname), ', ' ORDER BY at.attnum) AS columns
        FROM pg_attribute at, aclexplode(at.attacl) a
        WHERE at.attrelid = template AND at.attacl IS NOT NULL
          AND a.grantee <> (SELECT c.relowner FROM pg_class c WHERE c.oid = template)
          -- A column the copy gets from a tenant-schema step not run yet:
          -- granted when the step has run (migrate_tenant_schema secures
          -- the schema again).
          AND EXISTS (SELECT 1 FROM pg_attribute ca
                      WHERE ca.attrelid = copy AND ca.attname = at.attname AND NOT ca.attisdropped)
        GROUP BY a.grantee, a.privilege_type
    LOOP
        EXECUTE format('GRANT %s (%s) ON %s TO %s', acl.privilege_type, acl.columns, copy,
                       CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END);
    END LOOP;
    -- Identity columns got sequences of the copy's own: the app inserts
    -- through them without a grant (USAGE would show it every tenant's
    -- count of inserts and let it advance them); a serial column's
    -- default calls nextval() with the caller's rights.
    FOR seq IN
        SELECT * FROM tenantry.owned_sequences(copy)
    LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM PUBLIC, tenantry_app_own', seq);
    END LOOP;
    FOR seq IN
        SELECT * FROM tenantry.serial_sequences(copy)
    LOOP
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO tenantry_app_own', seq);
    END LOOP;
    -- Foreign keys between families: to the same schema's table. The key to
    -- tenants is left out (adding it would lock tenants against writes;
    -- tenant_row_home checks the tenant); others are kept as they are.
    FOR fk IN
        SELECT k.conname, pg_get_constraintdef(k.oid) AS def, k.confrelid::regclass AS target,
               (SELECT c.relname FROM pg_class c WHERE c.oid = k.confrelid) AS target_table
        FROM pg_constraint k
        WHERE k.conrelid = template AND k.contype = 'f' AND k.confrelid <> 'tenantry.tenants'::regclass
    LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = copy AND k.conname = fk.conname);
        IF EXISTS (SELECT 1 FROM tenantry.family_templates() f WHERE f.template = fk.target) THEN
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', copy, fk.conname,
                           replace(fk.def, format('REFERENCES %s(', fk.target),
                                   format('REFERENCES %I.%I(', copy_schema, fk.target_table)));
        ELSE
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', copy, fk.conname, fk.def);
        END IF;
    END LOOP;
    -- Identity columns draw from the template's sequence (a sequence of the
    -- copy's own would hand out keys the tenant already holds once its rows
    -- move between tiers).
    FOR acl IN
        SELECT a.attname, pg_get_serial_sequence(format('%s', template), a.attname) AS seq
        FROM pg_attribute a
        WHERE a.attrelid = template AND a.attidentity <> '' AND NOT a.attisdropped
          AND EXISTS (SELECT 1 FROM pg_attribute ca
                      WHERE ca.attrelid = copy AND ca.attname = a.attname AND NOT ca.attisdropped)
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT nextval(%L::regclass)', copy, acl.attname, acl.seq);
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO tenantry_app_own', acl.seq);
    END LOOP;
    EXECUTE format('COMMENT ON TABLE %s IS %L', copy,
                   format('A schema-isolated tenant''s rows of %s (its family''s pooled table: same policies, triggers and grants).', template));
    -- Last: every command on a table created in this transaction rebuilds
    -- its relation cache entry at once, policies parsed again each time
    -- (issue 13). One ALTER TABLE for both (one rebuild).
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', copy);
    FOR pol IN SELECT p.polname FROM pg_policy p WHERE p.polrelid = copy LOOP
        EXECUTE format('DROP POLICY %I ON %s', pol.polname, copy);
    END LOOP;
    FOR pol IN
        SELECT p.polname, p.polpermissive,
               CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                             WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS cmd,
               (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::regrole::text END, ', ')
                FROM unnest(p.polroles) r) AS roles,
               pg_get_expr(p.polqual, p.polrelid) AS qual,
               pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr,
               -- pg_description itself: obj_description() is a SQL function
               -- planned at every call (0.4 ms of a creation).
               (SELECT d.description FROM pg_description d
                WHERE d.objoid = p.oid AND d.classoid = 'pg_catalog.pg_policy'::regclass AND d.objsubid = 0) AS comment
        FROM pg_policy p WHERE p.polrelid = template
    LOOP
        EXECUTE format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s', pol.polname, copy,
                       CASE WHEN pol.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END, pol.cmd, pol.roles,
                       CASE WHEN pol.qual IS NULL THEN '' ELSE ' USING (' || pol.qual || ')' END,
                       CASE WHEN pol.check_expr IS NULL THEN '' ELSE ' WITH CHECK (' || pol.check_expr || ')' END);
        EXECUTE format('COMMENT ON POLICY %I ON %s IS %L', pol.polname, copy,
                       coalesce(pol.comment, 'As on its family''s pooled table.'));
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantry.secure_tenant_copy(regclass, regclass) IS 'Internal: a schema tenant''s table of one family made like its template (its family''s pooled table, which only resources'' tables inherit): forced RLS, the template''s policies, triggers and grants (table and column), identity sequences usable by the app, foreign keys to other families pointing at the same schema''s tables. Idempotent. Not granted.';

/**
 * A tenant schema's own comment and USAGE grants (naming no tenant), each
 * written only when missing: a GRANT rewrites the schema's catalog row even
 * when it changes nothing, and any change to a schema makes every session of
 * the cluster drop every cached plan (issue 13).
 */
CREATE OR REPLACE FUNCTION tenantry.secure_tenant_namespace(s text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    note constant text := 'Schema of a schema-isolated tenant (tenantry.tenants.schema_name says whose).';
BEGIN
    -- pg_description itself: obj_description() is a SQL function planned
    -- at every call.
    IF (SELECT d.description FROM pg_description d
        WHERE d.objoid = to_regnamespace(s) AND d.classoid = 'pg_catalog.pg_namespace'::regclass
          AND d.objsubid = 0) IS DISTINCT FROM note THEN
        EXECUTE format('COMMENT ON SCHEMA %I IS %L', s, note);
    END IF;
    IF NOT coalesce((SELECT bool_and(aclcontains(n.nspacl, makeaclitem(r::regrole, n.nspowner, 'USAGE', false)))
                     FROM pg_namespace n, unnest('{tenantry_app,tenantry_app_own,tenantry_app_shared}'::text[]) r
                     WHERE n.nspname = s), false) THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO tenantry_app, tenantry_app_own, tenantry_app_shared', s);
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.secure_tenant_namespace(text) IS 'Internal: a tenant schema''s comment and the app roles'' USAGE on it, each written only when missing. Idempotent. Not granted.';

/**
 * A new tenant schema name: tenant_ and 20 random hex digits, never derived
 * from the tenant (as tenants.schema_name's default). Inlined where it is
 * called, as that default was (no SET clause, every name qualified): a SQL
 * function with a SET clause is planned at every call, and every tenant's
 * creation calls this one.
 */
CREATE OR REPLACE FUNCTION tenantry.new_tenant_schema_name()
RETURNS text
LANGUAGE sql VOLATILE
AS $$
    SELECT 'tenant_' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.encode(
        pg_catalog.sha256(pg_catalog.uuid_send(pg_catalog.gen_random_uuid())), 'hex'), 20)
$$;
COMMENT ON FUNCTION tenantry.new_tenant_schema_name() IS 'Internal: a random tenant schema name (tenant_ and 20 hex digits), as the default of tenants.schema_name. Not granted.';

/**
 * A schema for a new schema tenant: a spare made ahead, empty, taken here
 * (SKIP LOCKED: concurrent creations take different ones); when none is
 * left, a batch of 32 is made, secured and recorded in the caller's
 * transaction, and one of them returned. Making a schema makes every session
 * of the database drop every cached plan (the creating one plans each of its
 * statements again, the server's connections their prepared statements):
 * once per batch instead of once per tenant (issue 13). A spare names no
 * tenant, holds nothing and is owned by tenantry_owner; the app roles' USAGE
 * on it gives them nothing to use.
 *
 * - A spare that is not empty or not the owner's (an operator put something
 *   in it) is left where it is and dropped from the list, never given to a
 *   tenant: its objects would sit first on the tenant's search_path, and a
 *   clash with a table to make would fail every creation that took it.
 * - Concurrent creations that find no spare make one batch, not one each:
 *   the second waits for the first's batch (an advisory lock held to the end
 *   of its transaction) and takes from it.
 * - Outside read committed (a database whose default_transaction_isolation
 *   is repeatable read or serializable) a spare taken by a creation that
 *   committed after this transaction's snapshot would fail it with 40001:
 *   there the tenant gets a schema of its own, made as before.
 */
CREATE OR REPLACE FUNCTION tenantry.take_spare_tenant_schema()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    taken text;
    made text;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN tenantry.new_tenant_schema_name();
    END IF;
    FOR attempt IN 1 .. 2 LOOP
        LOOP
            DELETE FROM tenantry.spare_tenant_schemas s
            WHERE s.schema_name = (SELECT x.schema_name FROM tenantry.spare_tenant_schemas x
                                   LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING s.schema_name INTO taken;
            EXIT WHEN taken IS NULL;
            -- Usable: gone (build_tenant_tables makes it again), or the
            -- owner's with nothing in it (every object in a schema depends
            -- on it).
            IF NOT EXISTS (
                SELECT 1 FROM pg_namespace n
                WHERE n.nspname = taken
                  AND (n.nspowner <> 'tenantry_owner'::regrole
                       OR EXISTS (SELECT 1 FROM pg_depend d
                                  WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = n.oid))) THEN
                RETURN taken;
            END IF;
            RAISE WARNING 'spare tenant schema % is not empty or not tenantry_owner''s: left as it is, not given to a tenant', taken;
        END LOOP;
        EXIT WHEN attempt = 2;
        -- None left: wait for a creation making a batch now, then look again.
        PERFORM pg_advisory_xact_lock(hashtext('tenantry.spare_tenant_schemas'));
    END LOOP;
    FOR i IN 1 .. 32 LOOP
        made := tenantry.new_tenant_schema_name();
        EXECUTE format('CREATE SCHEMA %I AUTHORIZATION tenantry_owner', made);
        PERFORM tenantry.secure_tenant_namespace(made);
        IF i = 1 THEN
            taken := made;
        ELSE
            INSERT INTO tenantry.spare_tenant_schemas (schema_name) VALUES (made);
        END IF;
    END LOOP;
    RETURN taken;
END
$$;
COMMENT ON FUNCTION tenantry.take_spare_tenant_schema() IS 'Internal (insert_tenant, as the owner): the name of an empty schema of tenantry_owner for a new schema tenant, taken from tenantry.spare_tenant_schemas (one that is not empty or not the owner''s is dropped from the list, with a warning); makes a batch of 32 when none is left (concurrent creations wait for one batch), so that creations change no schema, which resets every session''s cached plans. Outside read committed: a new name, the schema made by build_tenant_tables. Not granted.';

/** Policies, triggers, grants and comments (naming no tenant) on a tenant's schema and its tables. */
CREATE OR REPLACE FUNCTION tenantry.secure_tenant_schema(tid uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s text := (SELECT t.schema_name FROM tenantry.tenants t WHERE t.tenant_id = tid);
    f record;
BEGIN
    -- Each table looked up by its name (pg_class's unique index on name and
    -- schema): a join of pg_class on s::regnamespace was planned as a
    -- sequential scan of pg_class casting s on every row, and pg_class grows
    -- by about 7 rows with every tenant schema (issue 13: 15 ms of each
    -- creation with 4,000 schema tenants).
    PERFORM tenantry.secure_tenant_namespace(s);
    FOR f IN
        SELECT tt.template, to_regclass(format('%I.%I', s, tt.template_table)) AS copy
        FROM tenantry.family_templates() tt
    LOOP
        CONTINUE WHEN f.copy IS NULL;
        PERFORM tenantry.secure_tenant_copy(f.template, f.copy);
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantry.secure_tenant_schema(uuid) IS 'Internal: the tenant schema''s comment and USAGE grants, and each of its tables secured like its template (secure_tenant_copy). Idempotent. Not granted.';

/**
 * A tenant's schema and its tables, empty and secured; with join_families
 * its table of resources also joins (inherits) tenantry.resources. tier_tables()
 * is read once: creating a schema invalidates every cached plan of every
 * session, so each query here is planned again at every creation (issue 13).
 */
CREATE OR REPLACE FUNCTION tenantry.build_tenant_tables(tid uuid, join_families boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s text := (SELECT t.schema_name FROM tenantry.tenants t WHERE t.tenant_id = tid);
    f record;
    templates regclass[] := '{}';
    copies regclass[] := '{}';
    template_schemas name[] := '{}';
    template_tables name[] := '{}';
BEGIN
    -- A new schema tenant's schema exists already, a spare made ahead
    -- (take_spare_tenant_schema); a move to the schema tier makes the
    -- tenant's. Right after the schema: changing a schema resets every
    -- cached plan of the session, so both changes come before anything
    -- below is planned.
    IF to_regnamespace(s) IS NULL THEN
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION tenantry_owner', s);
    END IF;
    PERFORM tenantry.secure_tenant_namespace(s);
    -- The first schema tenant: a team's table renamed or moved since its
    -- adoption, harmless while no schema tenant had a table of it, is
    -- recorded under its name now, which its schema tenants' tables take
    -- (rule renamed compares the two). The doctor named it renamed once the
    -- first copy had the new name, and its fix, the team's table renamed
    -- back, left that tenant's statements reaching the team's table (found
    -- by a review of live schema changes).
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relname = 'resources' AND n.nspname ~ '^tenant_[0-9a-f]{20}$' AND n.nspname <> s) THEN
        UPDATE tenantry.tenant_tables r SET adopted_as = format('%I.%I', n.nspname, c.relname)
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = r.table_id AND r.adopted_as IS DISTINCT FROM format('%I.%I', n.nspname, c.relname);
    END IF;
    FOR f IN SELECT * FROM tenantry.family_templates() LOOP
        -- Defaults, CHECK constraints, generated columns, indexes (all led by
        -- tenant_id), storage; not the foreign key to tenants (adding one
        -- would lock tenants against writes: tenant_row_home checks the tenant).
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I.%I (LIKE %I.%I INCLUDING ALL EXCLUDING IDENTITY)',
                       s, f.template_table, f.template_schema, f.template_table);
        templates := templates || f.template;
        copies := copies || format('%I.%I', s, f.template_table)::regclass;
        template_schemas := template_schemas || f.template_schema;
        template_tables := template_tables || f.template_table;
    END LOOP;
    FOR i IN 1 .. cardinality(copies) LOOP
        PERFORM tenantry.secure_tenant_copy(templates[i], copies[i]);
    END LOOP;
    IF join_families THEN
        FOR i IN 1 .. cardinality(copies) LOOP
            -- resources only: the team's tables stand alone (0036).
            -- SHARE UPDATE EXCLUSIVE on the pooled table: no reader or writer waits.
            IF template_schemas[i] = 'tenantry' AND template_tables[i] = 'resources' THEN
                EXECUTE format('ALTER TABLE %I.%I INHERIT %I.%I', s, template_tables[i], template_schemas[i], template_tables[i]);
            END IF;
        END LOOP;
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.build_tenant_tables(uuid, boolean) IS 'Internal: creates the tenant''s schema and one empty table per tenant table family (LIKE the pooled table, without its foreign key), secured, and with join_families its table of resources inheriting tenantry.resources (the tables of adopted families stand alone). Not granted.';

/** A tenant's schema and its tables, empty, standalone (not yet inheriting): the destination of a move to the schema tier. */
CREATE OR REPLACE FUNCTION tenantry.create_tenant_tables(tid uuid)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tenantry.build_tenant_tables(tid, false)
$$;
COMMENT ON FUNCTION tenantry.create_tenant_tables(uuid) IS 'Internal: creates the tenant''s schema and one empty table per tenant table family (LIKE the pooled table, without its foreign key), secured (build_tenant_tables). Not granted.';

/**
 * A tenant created in the schema tier: it holds no row yet, so its tables
 * are made and join their families at once (no copy, no move bookkeeping).
 * Its row was inserted with isolation 'schema' and the latest schema
 * version, read before the tables are copied from the pooled ones as they
 * are now. A migration that commits in between (its change to a pooled
 * table and its tenant schema step in one transaction) may or may not be in
 * the copy: 40001 then, and the creation runs again, instead of a schema
 * marked at a version it does not have.
 */
CREATE OR REPLACE FUNCTION tenantry.make_schema_tenant(tid uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.build_tenant_tables(tid, true);
    IF (SELECT t.schema_version FROM tenantry.tenants t WHERE t.tenant_id = tid)
       IS DISTINCT FROM tenantry.tenant_schema_latest() THEN
        RAISE EXCEPTION 'a tenant schema step was added while the schema of tenant % was being made; nothing was created, create it again', tid
            USING ERRCODE = '40001';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.make_schema_tenant(uuid) IS 'Internal (insert_tenant, import_tenant, after require_schema_tier): gives a tenant inserted in the schema tier (isolation schema, the latest schema version), which holds no row yet, its schema''s tables, joined to their families at once; 40001 when a tenant schema step was added meanwhile (the copy may or may not have it). Not granted.';

/**
 * The schema tier needs tables that inherit the pooled ones, which Citus does
 * not distribute: on a Citus coordinator a tenant goes to shards of its own
 * instead (docs/scale-out.md, "A large tenant on shards of its own").
 */
CREATE OR REPLACE FUNCTION tenantry.require_schema_tier()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    families regclass[];
    other regclass;
    key_name name;
    referencing regclass;
    referenced regclass;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'citus') THEN
        RAISE EXCEPTION 'schema tenants are not available on a Citus cluster'
            USING ERRCODE = 'TN409', HINT = 'isolation',
                  DETAIL = 'give a large tenant shards of its own instead (tenantry tenant isolate, docs/scale-out.md)';
    END IF;
    -- The adopted tables that are not families, each by its own foreign keys
    -- (an index lookup; tier_breaking_references(), which the doctor runs,
    -- looks at every table of the database, too slow for every creation).
    families := tenantry.table_families();
    FOR other IN
        SELECT r.table_id FROM tenantry.tenant_tables r WHERE r.table_id <> ALL (families)
    LOOP
        SELECT c.conname, c.conrelid::regclass, c.confrelid::regclass
        INTO key_name, referencing, referenced
        FROM pg_catalog.pg_constraint c
        WHERE c.conrelid = other AND c.contype = 'f' AND c.confrelid = ANY (families)
        LIMIT 1;
        EXIT WHEN FOUND;
    END LOOP;
    IF key_name IS NOT NULL THEN
        RAISE EXCEPTION 'a tenant cannot have a schema of its own while foreign key % of % references %: a schema tenant keeps its rows of % in its own schema, and its rows of % in %, where the key cannot see them',
            key_name, referencing, referenced, referenced, referencing, referencing
            USING ERRCODE = 'TN409', HINT = 'isolation',
                  DETAIL = format('Give %s a primary key (tenant_id, <one column>), so that schema tenants get a table of it too, and adopt it again; or drop the foreign key (docs/tiers.md, "Your own tables in schema tenants").', referencing);
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.require_schema_tier() IS 'Internal: TN409 on a Citus coordinator, where tenants cannot get a schema of their own (Citus does not distribute inherited tables), and while a foreign key into a tenant table family comes from an adopted table that is not one (the doctor''s tier_breaking_references looks at every table); creating a schema tenant and a move to the schema tier call it. Not granted.';

/** The administrative gate of every tier change. */
CREATE OR REPLACE FUNCTION tenantry.require_tier_admin()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.require_admin_context('moving tenants between tiers');
END
$$;
COMMENT ON FUNCTION tenantry.require_tier_admin() IS 'Internal: 42501 unless the transaction has a proven administrative context or the session is a trusted operator''s. Not granted.';

/**
 * Step 1 of a move: marks the tenant as moving to target and, towards the
 * schema tier, creates its tables (empty, not yet inheriting). Takes the
 * tenant's row FOR NO KEY UPDATE, so every write of the tenant from now on is
 * recorded. Returns 'started', 'resumed' (a move to target was under way),
 * or 'done' (the tenant is in that tier already).
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_start(tid uuid, target text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    latest integer;
BEGIN
    PERFORM tenantry.require_tier_admin();
    IF target IS NULL OR target NOT IN ('shared', 'schema') THEN
        RAISE EXCEPTION 'isolation must be "shared" or "schema"' USING ERRCODE = 'TN422', HINT = 'isolation';
    END IF;
    IF target = 'schema' THEN
        PERFORM tenantry.require_schema_tier();
    END IF;
    -- A move under way: its row first, then the tenant's (tier_move_cutover).
    PERFORM 1 FROM tenantry.tier_moves mv WHERE mv.tenant_id = tid FOR UPDATE;
    SELECT tn.isolation, tn.moving_to, tn.status INTO t
    FROM tenantry.tenants tn WHERE tn.tenant_id = tid FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404', HINT = 'tenant_id';
    ELSIF t.status = 'deleted' THEN
        -- As every other change of a deleted tenant answers (tenants_before_write):
        -- it is there, and can no longer change (found by a contention review).
        RAISE EXCEPTION 'tenant % is deleted', tid USING ERRCODE = 'TN409';
    ELSIF t.moving_to = target THEN
        RETURN 'resumed';
    ELSIF t.moving_to IS NOT NULL THEN
        RAISE EXCEPTION 'tenant % is being moved to the % tier; finish or abort that move first', tid, t.moving_to
            USING ERRCODE = 'TN409', HINT = 'isolation';
    ELSIF t.isolation = target THEN
        RETURN 'done';
    END IF;
    -- Back to the shared tier, its rows are copied by the pooled tables'
    -- columns: its tables must have them all and no other (a tenant-schema
    -- step may not have run in its schema yet), and no table holding rows
    -- may be left behind when its schema goes.
    IF target = 'shared' THEN
        PERFORM tenantry.tier_move_refuse_unlike(tid, target);
    END IF;
    IF target = 'schema' THEN
        -- Empty tables left by an earlier move to the shared tier still sit
        -- in their families: copying into them would show rows twice.
        -- Nothing else in it holds rows (tier_move_cleanup refuses to drop
        -- a schema that does).
        -- Under a 100 ms lock_timeout, as tier_move_cleanup: its table of
        -- resources may still be read with the whole family, and every such
        -- query (and the tenant's writes, whose row this holds) would queue
        -- behind the drop.
        IF EXISTS (SELECT 1 FROM pg_namespace n JOIN tenantry.tenants tn ON tn.schema_name = n.nspname
                   WHERE tn.tenant_id = tid) THEN
            PERFORM tenantry.refuse_dropping_rows(tid);
            IF NOT tenantry.drop_schema_without_waiting((SELECT tn.schema_name FROM tenantry.tenants tn WHERE tn.tenant_id = tid)) THEN
                RAISE EXCEPTION 'the schema tenant % left by an earlier move is still in use; nothing changed, try the move again', tid
                    USING ERRCODE = '55P03', HINT = 'a query reading the whole tenantry.resources family holds its old table';
            END IF;
        END IF;
        -- Its new tables are copied from the pooled ones as they are now: every
        -- tenant-schema step so far must be in, none recorded meanwhile.
        latest := tenantry.tenant_schema_latest();
        PERFORM tenantry.create_tenant_tables(tid);
        IF tenantry.tenant_schema_latest() <> latest THEN
            RAISE EXCEPTION 'a tenant schema step was added while the schema of tenant % was being made; nothing changed, start the move again', tid
                USING ERRCODE = '40001';
        END IF;
    END IF;
    INSERT INTO tenantry.tier_moves (tenant_id, target) VALUES (tid, target);
    UPDATE tenantry.tenants
       SET moving_to = target,
           schema_version = CASE WHEN target = 'schema' THEN latest ELSE schema_version END
     WHERE tenant_id = tid;
    RETURN 'started';
END
$$;
COMMENT ON FUNCTION tenantry.tier_move_start(uuid, text) IS 'Admin, tier move step 1: marks the tenant as moving (its writes are recorded from now on) and, towards schema, creates its empty tables. Returns started, resumed or done. TN404 unknown tenant, TN409 deleted tenant or another move under way; towards shared, a table of its schema whose columns differ from its family''s pooled table (a tenant-schema step not run yet, or a change made without one), a table of a family that is gone (its team table lost its key) or another table holding rows (tenant_tables_unlike_families); towards schema, a schema left by an earlier move that still holds rows outside its families'' tables. 55P03 (nothing changed, try again) when that schema is still in use; 40001 when a tenant-schema step was recorded while its tables were made. TN422 bad tier.';

/**
 * Before the first batch of a move back to the shared tier: waits (up to
 * one second per call) for every transaction that was open in this database
 * when the batches were about to begin, and returns how many of them are
 * still open (0: the batches may begin; call again otherwise, in a new
 * transaction). Such a transaction may have routed the tenant to its
 * schema's tables before the move began, and would miss the rows a batch
 * moves out of them; transactions that begin later see the move and read
 * through the family. The first call records those transactions (their
 * virtual transaction ids, from pg_locks) in tier_moves, so that later calls
 * wait for the same ones and a busy database cannot keep the move waiting
 * forever; it is CREATE INDEX CONCURRENTLY's wait for older snapshots.
 * Towards the schema tier rows are copied, not moved, and nothing waits.
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_wait(tid uuid)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m record;
    older text[];
    open_now integer;
BEGIN
    PERFORM tenantry.require_tier_admin();
    SELECT mv.target, mv.older_transactions, mv.older_transactions_at INTO m
    FROM tenantry.tier_moves mv WHERE mv.tenant_id = tid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant % is not being moved', tid USING ERRCODE = 'TN404', HINT = 'tenant_id';
    ELSIF m.target <> 'shared' OR m.older_transactions = '{}'
          -- Recorded before the server last started: they all ended with it.
          OR (m.older_transactions IS NOT NULL AND m.older_transactions_at IS DISTINCT FROM pg_postmaster_start_time()) THEN
        RETURN 0;
    END IF;
    -- A transaction that has written (the move's start, or anything else)
    -- would record the transactions open before its own commit, missing the
    -- ones that begin until then and route the tenant the old way.
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'tier_move_wait runs in a transaction of its own, after the move''s start committed'
            USING ERRCODE = '55000', HINT = 'COMMIT, then call tenantry.tier_move_wait(tenant) until it returns 0';
    END IF;
    older := m.older_transactions;
    IF older IS NULL THEN
        -- The client sessions of this database but this one (autovacuum
        -- workers and other background processes have no user).
        older := coalesce((
            SELECT array_agg(l.virtualxid)
            FROM pg_catalog.pg_locks l
            JOIN pg_catalog.pg_stat_get_activity(NULL) a ON a.pid = l.pid
            WHERE l.locktype = 'virtualxid' AND l.mode = 'ExclusiveLock'
              AND l.pid <> pg_backend_pid() AND a.usesysid IS NOT NULL
              AND a.datid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())), '{}');
    END IF;
    FOR attempt IN 1..100 LOOP
        SELECT count(*) INTO open_now FROM pg_catalog.pg_locks l
        WHERE l.locktype = 'virtualxid' AND l.mode = 'ExclusiveLock' AND l.virtualxid = ANY (older);
        EXIT WHEN open_now = 0;
        PERFORM pg_sleep(0.01);
    END LOOP;
    UPDATE tenantry.tier_moves mv
       SET older_transactions = CASE WHEN open_now = 0 THEN '{}' ELSE older END,
           older_transactions_at = pg_postmaster_start_time()
     WHERE mv.tenant_id = tid;
    RETURN open_now;
END
$$;
COMMENT ON FUNCTION tenantry.tier_move_wait(uuid) IS 'Admin, tier move step 1b (towards the shared tier; repeat until it returns 0, each call its own transaction): waits up to 1 s for the transactions that were open in this database when the first call ran (recorded in tier_moves.older_transactions) and returns how many are still open. Towards the schema tier: 0. TN404 when the tenant is not being moved; TN409 towards the shared tier when a table of its schema outside its families took rows during the move (nothing changed).';

/**
 * Refuses (55000) to move rows of a tenant moving back to the shared tier
 * until tier_move_wait found every older transaction ended; waits up to a
 * second for those it recorded. Never records them itself: a refused step
 * rolls back, and a record made there would be lost with it. Nothing to
 * check for a move to the schema tier (or no move: the step reports that).
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_require_older_ended(tid uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m record;
BEGIN
    SELECT mv.target, mv.older_transactions INTO m FROM tenantry.tier_moves mv WHERE mv.tenant_id = tid;
    IF NOT FOUND OR m.target <> 'shared' THEN
        RETURN;
    END IF;
    IF m.older_transactions IS NULL OR tenantry.tier_move_wait(tid) > 0 THEN
        RAISE EXCEPTION 'transactions older than the move of tenant % to the shared tier may still be open', tid
            USING ERRCODE = '55000', HINT = 'call tenantry.tier_move_wait(tenant) until it returns 0, each call in its own transaction (CALL tenantry.move_tenant and tenantry tenant move do)';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.tier_move_require_older_ended(uuid) IS 'Internal (tier_move_copy and tier_move_finish, as the owner): towards the shared tier, 55000 until tier_move_wait has recorded the transactions older than the move and they have ended. Not granted.';

/**
 * The tables a moving tenant's rows go from and to. Towards the schema tier
 * rows are copied online into its (standalone) tables; towards the shared
 * tier they move in place, batch by batch (tier_move_rows_back), so the
 * family never holds a row twice.
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_tables(tid uuid)
RETURNS TABLE (template regclass, template_schema name, template_table name,
               source_schema name, destination_schema name,
               key_column name, key_type text, columns text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f.template, f.template_schema, f.template_table,
           CASE WHEN m.target = 'schema' THEN f.template_schema ELSE t.schema_name::name END,
           CASE WHEN m.target = 'schema' THEN t.schema_name::name ELSE f.template_schema END,
           f.key_column, f.key_type, f.columns
    FROM tenantry.tier_moves m
    JOIN tenantry.tenants t ON t.tenant_id = m.tenant_id
    CROSS JOIN tenantry.tier_tables() f
    WHERE m.tenant_id = tid
      -- A family adopted after the tenant's schema was made, with no table
      -- there yet (a tenant-schema step makes it): its rows stay in the
      -- pooled table, whichever way the tenant moves.
      AND to_regclass(format('%I.%I', t.schema_name, f.template_table)) IS NOT NULL
$$;
COMMENT ON FUNCTION tenantry.tier_move_tables(uuid) IS 'Internal: for a tenant being moved, each family''s pooled table (template) that its schema has a table of (a family adopted since keeps its rows pooled until a tenant-schema step makes that table), the schema its rows come from and go to (the template''s, or the tenant''s own; the table name is the template''s in both), key and columns. Not granted.';

/** Copies up to max_rows more not yet copied rows of a tenant moving to the schema tier, in key order; returns how many. */
CREATE OR REPLACE FUNCTION tenantry.tier_move_copy_rows(tid uuid, max_rows bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    progress jsonb;
    f record;
    last_key text;
    n bigint;
    total bigint := 0;
BEGIN
    SELECT m.copied INTO progress FROM tenantry.tier_moves m WHERE m.tenant_id = tid AND m.target = 'schema' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    FOR f IN SELECT * FROM tenantry.tier_move_tables(tid) LOOP
        CONTINUE WHEN progress -> f.template::text = 'true'::jsonb OR total >= max_rows;
        EXECUTE format(
            'WITH batch AS (SELECT %4$s FROM ONLY %1$I.%3$I WHERE tenant_id = $1 AND ($2::text IS NULL OR %5$I > $2::%6$s)
                            ORDER BY %5$I LIMIT $3),
                  copied AS (INSERT INTO %2$I.%3$I (%4$s) OVERRIDING SYSTEM VALUE SELECT %4$s FROM batch ON CONFLICT DO NOTHING)
             SELECT (SELECT b.%5$I::text FROM batch b ORDER BY b.%5$I DESC LIMIT 1), count(*) FROM batch',
            f.source_schema, f.destination_schema, f.template_table, f.columns, f.key_column, f.key_type)
        USING tid, progress ->> f.template::text, max_rows - total
        INTO last_key, n;
        progress := progress || jsonb_build_object(f.template::text,
            CASE WHEN n < max_rows - total THEN 'true'::jsonb ELSE to_jsonb(last_key) END);
        total := total + n;
    END LOOP;
    UPDATE tenantry.tier_moves m SET copied = progress WHERE m.tenant_id = tid;
    RETURN total;
END
$$;
COMMENT ON FUNCTION tenantry.tier_move_copy_rows(uuid, bigint) IS 'Internal (tier_move_copy, tier_move_finish, run as the owner with row triggers off): copies up to max_rows more rows of a tenant moving to the schema tier, after the last key copied of each table, into its schema tables; records how far it got in tier_moves.copied. Not granted.';

/**
 * Copies again the rows behind up to max_changes recorded writes of a moving
 * tenant, from its old tier's table to its new one (towards the shared tier:
 * its adopted families' rows, which the cut-over copied before it took the
 * tenant's row); returns how many records it consumed.
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_apply_changes(tid uuid, max_changes bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    taken jsonb;
    consumed bigint;
    f record;
    keys text[];
BEGIN
    -- Only records this snapshot sees: a write still in flight has its
    -- record consumed by a later round, which copies what it wrote.
    WITH gone AS (
        DELETE FROM tenantry.tier_move_changes c
        WHERE c.tenant_id = tid AND c.change_id IN (
            SELECT c2.change_id FROM tenantry.tier_move_changes c2
            WHERE c2.tenant_id = tid ORDER BY c2.change_id LIMIT max_changes)
        RETURNING c.table_id, c.row_key),
    per_table AS (
        SELECT g.table_id::text AS tbl, jsonb_agg(DISTINCT g.row_key) AS row_keys, count(*) AS n
        FROM gone g GROUP BY g.table_id)
    SELECT coalesce(jsonb_object_agg(p.tbl, p.row_keys), '{}'), coalesce(sum(p.n), 0)
    INTO taken, consumed FROM per_table p;
    IF consumed = 0 THEN
        RETURN 0;
    END IF;
    FOR f IN SELECT * FROM tenantry.tier_move_tables(tid) LOOP
        keys := ARRAY(SELECT jsonb_array_elements_text(taken -> f.template::text));
        CONTINUE WHEN cardinality(keys) = 0;
        EXECUTE format('DELETE FROM ONLY %1$I.%2$I WHERE tenant_id = $1 AND %3$I = ANY ($2::%4$s[])',
                       f.destination_schema, f.template_table, f.key_column, f.key_type)
        USING tid, keys;
        EXECUTE format('INSERT INTO %2$I.%3$I (%4$s) OVERRIDING SYSTEM VALUE SELECT %4$s FROM ONLY %1$I.%3$I WHERE tenant_id = $1 AND %5$I = ANY ($2::%6$s[])',
                       f.source_schema, f.destination_schema, f.template_table, f.columns, f.key_column, f.key_type)
        USING tid, keys;
    END LOOP;
    RETURN consumed;
END
$$;
COMMENT ON FUNCTION tenantry.tier_move_apply_changes(uuid, bigint) IS 'Internal (tier_move_catch_up, tier_move_finish, run as the owner with row triggers off): consumes up to max_changes recorded writes of a moving tenant and copies those rows again from its old tier''s tables into its new tier''s (rows deleted meanwhile go). Not granted.';

/**
 * Moves up to max_rows more rows of a tenant moving to the shared tier from
 * its schema's tables into the pooled ones, in one statement per table that
 * deletes them there and inserts them here, so that every snapshot sees each
 * row once. Takes the tenant's row FOR NO KEY UPDATE first: the tenant's
 * transactions in flight end before (each holds the row FOR SHARE from its
 * start or first write), new ones wait for this one, nobody else does.
 * Resources only: the cut-over copies the adopted families' rows.
 * Returns how many rows moved (0: none left).
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_rows_back(tid uuid, max_rows bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f record;
    n bigint;
    total bigint := 0;
BEGIN
    -- The move's row first, then the tenant's (tier_move_cutover).
    PERFORM 1 FROM tenantry.tier_moves mv WHERE mv.tenant_id = tid FOR UPDATE;
    PERFORM 1 FROM tenantry.tenants t WHERE t.tenant_id = tid FOR NO KEY UPDATE;
    -- In batches, resources only: its keys are the database's own and no
    -- foreign key joins it to another family, so its rows can be split
    -- between two tables. An adopted table's unique keys and foreign keys
    -- hold within one table (its pooled one, or the tenant's copy, whose
    -- keys point at the same schema's tables): its rows stay in the
    -- tenant's schema until the cut-over (tier_move_cutover) copies them,
    -- unseen until it commits, before it takes the tenant's row.
    FOR f IN SELECT * FROM tenantry.tier_move_tables(tid) m WHERE m.template = 'tenantry.resources'::regclass LOOP
        EXIT WHEN total >= max_rows;
        EXECUTE format(
            'WITH batch AS (SELECT %5$I AS k FROM ONLY %1$I.%3$I WHERE tenant_id = $1 LIMIT $2),
                  gone AS (DELETE FROM ONLY %1$I.%3$I r USING batch b WHERE r.tenant_id = $1 AND r.%5$I = b.k RETURNING r.*)
             INSERT INTO %2$I.%3$I (%4$s) OVERRIDING SYSTEM VALUE SELECT %4$s FROM gone',
            f.source_schema, f.destination_schema, f.template_table, f.columns, f.key_column)
        USING tid, max_rows - total;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    UPDATE tenantry.tier_moves m SET rows_moved = m.rows_moved + total WHERE m.tenant_id = tid;
    RETURN total;
END
$$;
COMMENT ON FUNCTION tenantry.tier_move_rows_back(uuid, bigint) IS 'Internal (tier_move_copy and tier_move_finish towards the shared tier, run as the owner with row triggers off): under the tenant''s row lock, moves up to max_rows more of its resources from its schema''s table into the pooled one (deleted there and inserted here in one statement); counts them in tier_moves.rows_moved. Adopted families'' rows move at the cut-over (tier_move_cutover). Not granted.';

/**
 * One batch of a move under way, as the owner with row triggers off: the
 * next rows in key order (catch_up false) or the rows behind recorded writes
 * (catch_up true); towards the shared tier, the next rows moved in place.
 * TN404 when the tenant is not being moved.
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_batch(tid uuid, max_rows bigint, catch_up boolean)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
    target text;
    replication text := current_setting('session_replication_role');
BEGIN
    PERFORM tenantry.require_tier_admin();
    SELECT m.target INTO target FROM tenantry.tier_moves m WHERE m.tenant_id = tid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant % is not being moved', tid USING ERRCODE = 'TN404', HINT = 'tenant_id';
    END IF;
    IF NOT catch_up THEN
        PERFORM tenantry.tier_move_require_older_ended(tid);
    END IF;
    PERFORM tenantry.tier_move_refuse_unlike(tid, target);
    PERFORM set_config('session_replication_role', 'replica', true);
    IF target = 'shared' THEN
        -- Resources move in place; the adopted rows' recorded writes wait
        -- for the cut-over, which copies those rows first.
        IF catch_up THEN
            n := 0;
        ELSE
            n := tenantry.tier_move_rows_back(tid, greatest(max_rows, 1));
            -- Under the tenant's row (held to the end of this transaction)
            -- no write of its rows is in flight: what was recorded so far
            -- is committed, and the cut-over's copy, later, has it.
            DELETE FROM tenantry.tier_move_changes c WHERE c.tenant_id = tid;
        END IF;
    ELSIF catch_up THEN
        BEGIN
            n := tenantry.tier_move_apply_changes(tid, greatest(max_rows, 1));
        EXCEPTION WHEN unique_violation OR exclusion_violation THEN
            -- A row copied again can meet, on a second unique key or an
            -- exclusion constraint, the stale copy of a row whose own record
            -- is in a later batch (or still in flight): the cut-over applies
            -- every record at once, with no write in flight.
            n := 0;
        END;
    ELSE
        n := tenantry.tier_move_copy_rows(tid, greatest(max_rows, 1));
    END IF;
    PERFORM set_config('session_replication_role', replication, true);
    RETURN n;
END
$$;
COMMENT ON FUNCTION tenantry.tier_move_batch(uuid, bigint, boolean) IS 'Internal (tier_move_copy, tier_move_catch_up, which run it as the owner): one batch of a move under way, with row triggers off. Not granted.';

/**
 * Step 2 (repeat until 0): copies up to max_rows more of the tenant's rows,
 * in key order, into its schema tables, in a short transaction: only the
 * rows read are touched, and the tenant keeps writing. Towards the shared
 * tier, moves up to max_rows more rows into the pooled tables, holding back
 * the tenant's own transactions for the batch only. Returns how many rows
 * were copied or moved (0: all done).
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_copy(tid uuid, max_rows integer DEFAULT 10000)
RETURNS bigint
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenantry.tier_move_batch(tid, max_rows, false) $$;
COMMENT ON FUNCTION tenantry.tier_move_copy(uuid, integer) IS 'Admin, tier move step 2 (repeat until it returns 0): copies up to max_rows more rows of the moving tenant, in key order, into its schema tables while it keeps writing; towards the shared tier, moves up to max_rows more rows into the pooled tables, each batch under the tenant''s row lock (its transactions wait for the batch, nobody else does). TN404 when the tenant is not being moved. TN409 (nothing changed) when the tenant''s schema tables and your tables differ in their columns (a tenant-schema step not run yet, or a change made without one: tier_move_refuse_unlike names the column and the way on).';

/**
 * Step 3 (repeat while it returns max_changes): copies again the rows the
 * tenant wrote since they were copied, so that little is left for the
 * cut-over. Returns how many recorded writes it consumed.
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_catch_up(tid uuid, max_changes integer DEFAULT 10000)
RETURNS bigint
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenantry.tier_move_batch(tid, max_changes, true) $$;
COMMENT ON FUNCTION tenantry.tier_move_catch_up(uuid, integer) IS 'Admin, tier move step 3 (repeat while it returns max_changes): copies again the rows the moving tenant wrote since they were copied; returns how many recorded writes it consumed (0 as well when a batch meets a stale copy on a unique key: the cut-over applies them all at once; towards the shared tier always 0: the cut-over copies the adopted rows). TN404 when the tenant is not being moved. TN409 (nothing changed) when the tenant''s schema tables and your tables differ in their columns (a tenant-schema step not run yet, or a change made without one: tier_move_refuse_unlike names the column and the way on).';

/**
 * Step 4, the cut-over: takes the tenant's row FOR NO KEY UPDATE (the tenant's
 * writers wait until this transaction ends; nobody else does), copies what
 * is left and what changed, takes the rows out of the old tier and switches
 * the tenant's tier (audited, and announced to every server through the
 * invalidation trigger). Returns the tier, the rows moved by the whole move
 * and under the lock (cutover_rows), and how long the tenant's writes were
 * held back (cutover_ms, up to the end of this function). Towards the
 * shared tier, refuses (55000) until tier_move_wait has returned 0.
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_finish(tid uuid)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.require_tier_admin();
    PERFORM tenantry.tier_move_require_older_ended(tid);
    PERFORM tenantry.tier_move_refuse_unlike(tid, (SELECT m.target FROM tenantry.tier_moves m WHERE m.tenant_id = tid));
    RETURN tenantry.tier_move_cutover(tid);
END
$$;

/**
 * The cut-over itself (tier_move_finish once its checks passed, and
 * set_tenant_isolation, which moves a tenant in one transaction).
 *
 * Towards the shared tier, the rows of adopted families (whose unique and
 * foreign keys hold within one table, so they cannot be split between two
 * like resources) are copied into the pooled tables first, before the
 * tenant's row is taken: the copies are this transaction's own, seen by
 * nobody until it commits, while the tenant keeps writing its schema's
 * tables (each write recorded by tenant_row_home). Under the lock, what
 * was recorded is copied again and the schema's rows are deleted, which
 * costs a sixth of copying them. The wait for the tenant's row after the
 * copy is bounded (5 s in all, then 55P03 and nothing changed): the copies
 * hold the pooled tables. Read committed only (25001 otherwise). Every
 * function that locks both a move's row and the tenant's row takes the
 * move's first (tier_move_start, the batches, tier_move_abort,
 * migrate_tenant_schema), so that none waits for this one while holding
 * what it waits for.
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_cutover(tid uuid)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s text;
    m record;
    f record;
    locked_at timestamptz;
    n bigint;
    moved bigint := 0;
    at_cutover bigint := 0;
    replication text := current_setting('session_replication_role');
    lock_wait text := current_setting('lock_timeout');
    deadline timestamptz;
    stray regclass;
BEGIN
    PERFORM tenantry.require_tier_admin();
    -- Each statement must see what committed before it: the records of
    -- writes that committed while this waited, and their rows. A snapshot
    -- kept for the transaction would copy neither.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'a tier move''s cut-over runs at the read committed isolation level, not %', current_setting('transaction_isolation')
            USING ERRCODE = '25001', HINT = 'run it in a transaction begun with BEGIN ISOLATION LEVEL READ COMMITTED (the database''s default_transaction_isolation is not read committed)';
    END IF;
    SELECT * INTO m FROM tenantry.tier_moves mv WHERE mv.tenant_id = tid FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant % is not being moved', tid USING ERRCODE = 'TN404', HINT = 'tenant_id';
    END IF;
    PERFORM set_config('session_replication_role', 'replica', true);
    IF m.target = 'shared' THEN
        -- Every write recorded so far committed before the copy's snapshot
        -- (the copy has it); those in flight are recorded but not yet seen,
        -- and stay for the catch-up below.
        DELETE FROM tenantry.tier_move_changes c WHERE c.tenant_id = tid;
        FOR f IN SELECT * FROM tenantry.tier_move_tables(tid) mt WHERE mt.template <> 'tenantry.resources'::regclass LOOP
            EXECUTE format('INSERT INTO %2$I.%3$I (%4$s) OVERRIDING SYSTEM VALUE SELECT %4$s FROM ONLY %1$I.%3$I WHERE tenant_id = $1',
                           f.source_schema, f.destination_schema, f.template_table, f.columns)
            USING tid;
        END LOOP;
        -- The copies hold the pooled tables (ROW EXCLUSIVE): a team's
        -- ALTER TABLE or plain CREATE INDEX on one of them would wait for
        -- this transaction, and every other tenant's writes behind it, for
        -- as long as the tenant's own transactions keep this one waiting.
        -- Not longer than 5 s in all (the tenant's transactions that begin
        -- meanwhile share its row with those before them, and would keep a
        -- single wait going): short tries against one deadline, then 55P03
        -- and nothing changed; the caller runs the cut-over again.
        deadline := clock_timestamp() + interval '5 s';
        PERFORM set_config('lock_timeout', '100ms', true);
        LOOP
            BEGIN
                SELECT t.schema_name INTO s FROM tenantry.tenants t WHERE t.tenant_id = tid FOR NO KEY UPDATE;
                EXIT;
            EXCEPTION WHEN lock_not_available THEN
                IF clock_timestamp() >= deadline THEN
                    RAISE EXCEPTION 'the transactions of tenant % kept its cut-over waiting for 5 s; nothing changed, run the cut-over again', tid
                        USING ERRCODE = '55P03', HINT = 'the tenant''s own transactions (a report, an idle psql session, or a steady stream of overlapping ones) hold its row; tenantry tenant move, CALL tenantry.move_tenant and tier_move_finish resume the move';
                END IF;
            END;
        END LOOP;
        PERFORM set_config('lock_timeout', lock_wait, true);
    ELSE
        SELECT t.schema_name INTO s FROM tenantry.tenants t WHERE t.tenant_id = tid FOR NO KEY UPDATE;
    END IF;
    locked_at := clock_timestamp();
    IF m.target = 'schema' THEN
        -- Every record at once: no write is in flight, so the rows copied
        -- again and the copies left agree on every unique key.
        at_cutover := tenantry.tier_move_copy_rows(tid, 9223372036854775807)
                      + tenantry.tier_move_apply_changes(tid, 9223372036854775807);
        FOR f IN SELECT * FROM tenantry.tier_move_tables(tid) LOOP
            EXECUTE format('DELETE FROM ONLY %I.%I WHERE tenant_id = $1', f.source_schema, f.template_table) USING tid;
            GET DIAGNOSTICS n = ROW_COUNT;
            moved := moved + n;
            -- resources only: the team's tables stand alone (0036).
            -- SHARE UPDATE EXCLUSIVE on the pooled table: no reader or writer waits.
            IF f.template_schema = 'tenantry' AND f.template_table = 'resources' THEN
                EXECUTE format('ALTER TABLE %I.%I INHERIT %I.%I',
                               f.destination_schema, f.template_table, f.template_schema, f.template_table);
            END IF;
        END LOOP;
    ELSE
        -- Under the tenant's lock, again: no table of its schema outside its
        -- families took a row while the move ran (its route still led
        -- there), or the rows would stay behind.
        stray := tenantry.first_table_with_rows(s, true);
        IF stray IS NOT NULL THEN
            RAISE EXCEPTION 'tenant % cannot move back to the shared tier: % % but belongs to no tenant table family, and they would be left behind; nothing changed', tid, stray, tenantry.rows_held(stray)
                USING ERRCODE = 'TN409', HINT = 'isolation';
        END IF;
        -- The resources the batches left (none when tier_move_copy ran to
        -- 0), the adopted rows written since the copy above, and the
        -- copied rows out of the tenant's tables. Rows only: detaching or
        -- dropping the tenant's tables would wait for (and hold back) every
        -- query that reads the whole family; the empty tables go in
        -- tier_move_cleanup().
        at_cutover := tenantry.tier_move_rows_back(tid, 9223372036854775807);
        moved := m.rows_moved + at_cutover;
        at_cutover := at_cutover + tenantry.tier_move_apply_changes(tid, 9223372036854775807);
        FOR f IN SELECT * FROM tenantry.tier_move_tables(tid) mt WHERE mt.template <> 'tenantry.resources'::regclass LOOP
            EXECUTE format('DELETE FROM ONLY %I.%I WHERE tenant_id = $1', f.source_schema, f.template_table) USING tid;
            GET DIAGNOSTICS n = ROW_COUNT;
            moved := moved + n;
        END LOOP;
    END IF;
    PERFORM set_config('session_replication_role', replication, true);
    DELETE FROM tenantry.tier_move_changes c WHERE c.tenant_id = tid;
    DELETE FROM tenantry.tier_moves mv WHERE mv.tenant_id = tid;
    UPDATE tenantry.tenants
       SET isolation = m.target, moving_to = NULL,
           schema_version = CASE WHEN m.target = 'schema' THEN schema_version END
     WHERE tenant_id = tid;
    RETURN jsonb_build_object('isolation', m.target, 'rows_moved', moved, 'cutover_rows', at_cutover,
        'cutover_ms', round((extract(epoch FROM clock_timestamp() - locked_at) * 1000)::numeric, 3));
END
$$;
COMMENT ON FUNCTION tenantry.tier_move_cutover(uuid) IS 'Internal (tier_move_finish, set_tenant_isolation, as the owner): the cut-over of a move under way. Not granted.';
COMMENT ON FUNCTION tenantry.tier_move_finish(uuid) IS 'Admin, tier move step 4 (cut-over): under the tenant''s row lock (its writers wait; nobody else does) copies the rest and what changed, removes the rows from the old tier, switches tenants.isolation (audited, servers notified); towards the shared tier, adopted tables'' rows are copied before the lock, unseen until the commit, and the lock is given up after 5 s (55P03, nothing changed: run it again). Read committed only (25001). Returns {isolation, rows_moved (the whole move), cutover_rows (rows moved under the lock and recorded writes copied again), cutover_ms}. TN404 when the tenant is not being moved. TN409 (nothing changed) when the tenant''s schema tables and your tables differ in their columns (a tenant-schema step not run yet, or a change made without one: tier_move_refuse_unlike names the column and the way on).';

/**
 * Drops what a tenant that moved to the shared tier left of its schema (its
 * tables, empty since the cut-over), when that takes no wait: the schema
 * is dropped under a 100 ms lock_timeout, so a query reading the whole
 * family is never held back behind it for longer. Returns true when nothing is left
 * (false: try again later; the empty tables hide nothing meanwhile).
 */
CREATE OR REPLACE FUNCTION tenantry.tier_move_cleanup(tid uuid)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
BEGIN
    PERFORM tenantry.require_tier_admin();
    SELECT tn.isolation, tn.moving_to, tn.schema_name INTO t FROM tenantry.tenants tn WHERE tn.tenant_id = tid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404', HINT = 'tenant_id';
    ELSIF t.isolation = 'schema' OR t.moving_to IS NOT NULL
          OR NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = t.schema_name) THEN
        RETURN t.isolation = 'shared' AND t.moving_to IS NULL;
    END IF;
    PERFORM tenantry.refuse_dropping_rows(tid);
    RETURN tenantry.drop_schema_without_waiting(t.schema_name);
END
$$;
COMMENT ON FUNCTION tenantry.tier_move_cleanup(uuid) IS 'Admin: drops the empty tables (and schema) a tenant that moved to the shared tier left behind, when that needs no wait (lock_timeout 100 ms: a query reading the whole family is never held back); false when it has to be tried again; TN409, nothing dropped, while a table of that schema outside its families holds a row.';

/** Gives up a move: the tenant stays where it was, with every row; its new schema (towards schema) is dropped, the rows moved back (towards shared) return. */
CREATE OR REPLACE FUNCTION tenantry.tier_move_abort(tid uuid)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s text;
    m record;
    f record;
    moved boolean;
    replication text := current_setting('session_replication_role');
BEGIN
    PERFORM tenantry.require_tier_admin();
    -- The move's row first, then the tenant's (tier_move_cutover).
    SELECT * INTO m FROM tenantry.tier_moves mv WHERE mv.tenant_id = tid FOR UPDATE;
    SELECT t.schema_name INTO s FROM tenantry.tenants t WHERE t.tenant_id = tid FOR NO KEY UPDATE;
    IF s IS NULL THEN
        RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404', HINT = 'tenant_id';
    ELSIF m.tenant_id IS NULL THEN
        RETURN 'none';
    END IF;
    IF m.target = 'schema' THEN
        -- The half-built schema goes, if that takes no wait (100 ms, as in
        -- tier_move_cleanup: a drop waiting for a table in use would hold
        -- back every query queued behind it, and the tables its foreign keys
        -- point to). Else its copied rows go, and the empty schema is left
        -- for tier_move_cleanup or the next move.
        IF NOT tenantry.drop_schema_without_waiting(s) THEN
            FOR f IN SELECT * FROM tenantry.tier_move_tables(tid) LOOP
                EXECUTE format('DELETE FROM ONLY %I.%I WHERE tenant_id = $1', f.destination_schema, f.template_table) USING tid;
            END LOOP;
        END IF;
    ELSE
        -- The rows the batches moved, and those the tenant wrote meanwhile,
        -- go back to its schema's tables (under its row lock, like a cut-over).
        PERFORM set_config('session_replication_role', 'replica', true);
        FOR f IN SELECT * FROM tenantry.tier_move_tables(tid) LOOP
            -- Only tables that hold moved rows (resources: adopted
            -- families' rows move at the cut-over): a family whose team
            -- table changed shape meanwhile is left alone, so the abort
            -- still works (it failed on the columns before: found by an
            -- outside review).
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM ONLY %I.%I WHERE tenant_id = $1)', f.destination_schema, f.template_table)
            USING tid INTO moved;
            CONTINUE WHEN NOT moved;
            EXECUTE format('WITH gone AS (DELETE FROM ONLY %2$I.%3$I WHERE tenant_id = $1 RETURNING %4$s)
                            INSERT INTO %1$I.%3$I (%4$s) OVERRIDING SYSTEM VALUE SELECT %4$s FROM gone',
                           f.source_schema, f.destination_schema, f.template_table, f.columns)
            USING tid;
        END LOOP;
        PERFORM set_config('session_replication_role', replication, true);
    END IF;
    DELETE FROM tenantry.tier_move_changes c WHERE c.tenant_id = tid;
    DELETE FROM tenantry.tier_moves mv WHERE mv.tenant_id = tid;
    UPDATE tenantry.tenants
       SET moving_to = NULL, schema_version = CASE WHEN isolation = 'schema' THEN schema_version END
     WHERE tenant_id = tid;
    RETURN 'aborted';
END
$$;
COMMENT ON FUNCTION tenantry.tier_move_abort(uuid) IS 'Admin: abandons a tier move under way; the tenant keeps its tier and every row (a half-built tenant schema is dropped; rows a move back to the shared tier had moved, and those written meanwhile, return to its schema''s tables under its row lock). Returns aborted, or none when no move was under way.';

/** How many rows a tenant holds in its tenant tables (for a move's progress). */
CREATE OR REPLACE FUNCTION tenantry.tenant_row_count(tid uuid)
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f record;
    n bigint;
    own regclass;
    total bigint := 0;
BEGIN
    PERFORM tenantry.require_tier_admin();
    FOR f IN SELECT * FROM tenantry.family_templates() LOOP
        -- The pooled table alone and the tenant's own table (a move's
        -- destination counts from the cut-over): never the whole family of
        -- resources, which every schema tenant's table of it joins.
        EXECUTE format('SELECT count(*) FROM ONLY %I.%I WHERE tenant_id = $1', f.template_schema, f.template_table)
        USING tid INTO n;
        total := total + n;
        -- (A table a tenant-schema step has not made yet holds nothing.)
        own := (SELECT to_regclass(format('%I.%I', t.schema_name, f.template_table))
                FROM tenantry.tenants t WHERE t.tenant_id = tid AND t.isolation = 'schema');
        IF own IS NOT NULL THEN
            EXECUTE format('SELECT count(*) FROM ONLY %s WHERE tenant_id = $1', own) USING tid INTO n;
            total := total + n;
        END IF;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_row_count(uuid) IS 'Admin: how many rows a tenant holds in all its tenant tables, wherever they are (a tier move''s progress total).';

GRANT EXECUTE ON FUNCTION
    tenantry.tier_move_start(uuid, text),
    tenantry.tier_move_wait(uuid),
    tenantry.tier_move_copy(uuid, integer),
    tenantry.tier_move_catch_up(uuid, integer),
    tenantry.tier_move_finish(uuid),
    tenantry.tier_move_abort(uuid),
    tenantry.tier_move_cleanup(uuid),
    tenantry.tenant_row_count(uuid)
TO tenantry_admin;

/**
 * Moves a tenant between tiers in one transaction (the guide's function):
 * start, copy and cut-over together, so the tenant's writes wait for all of
 * it; nobody else's do. Online moves: CALL tenantry.move_tenant(...) or
 * `tenantry tenant move`.
 */
CREATE OR REPLACE FUNCTION tenantry.set_tenant_isolation(tid uuid, model text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tenantry.tier_move_start(tid, model) <> 'done' THEN
        -- In one transaction: nothing to wait for between the steps.
        PERFORM tenantry.tier_move_cutover(tid);
        PERFORM tenantry.tier_move_cleanup(tid);
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.set_tenant_isolation(uuid, text) IS 'Admin: moves a tenant between pooled (shared) and schema isolation in one transaction, holding back only that tenant''s writes; loses nothing (rows, shares, timestamps). For large tenants use the online move (move_tenant, tier_move_*).';
GRANT EXECUTE ON FUNCTION tenantry.set_tenant_isolation(uuid, text) TO tenantry_admin;

/**
 * The online move, from psql: CALL tenantry.move_tenant(tid, 'schema').
 * Commits after each step (so call it outside a transaction block): the
 * tenant keeps reading and writing until the cut-over, which holds back its
 * writes only. Resumes a move that was interrupted.
 */
CREATE OR REPLACE PROCEDURE tenantry.move_tenant(tid uuid, target text, batch_rows integer DEFAULT 10000)
LANGUAGE plpgsql
AS $$
BEGIN
    IF tenantry.tier_move_start(tid, target) = 'done' THEN
        RETURN;
    END IF;
    COMMIT;
    WHILE tenantry.tier_move_wait(tid) > 0 LOOP
        COMMIT;
    END LOOP;
    COMMIT;
    WHILE tenantry.tier_move_copy(tid, batch_rows) > 0 LOOP
        COMMIT;
    END LOOP;
    COMMIT;
    WHILE tenantry.tier_move_catch_up(tid, batch_rows) >= batch_rows LOOP
        COMMIT;
    END LOOP;
    COMMIT;
    PERFORM tenantry.tier_move_finish(tid);
    COMMIT;
    FOR attempt IN 1..20 LOOP
        EXIT WHEN tenantry.tier_move_cleanup(tid);
        COMMIT;
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
COMMENT ON PROCEDURE tenantry.move_tenant(uuid, text, integer) IS 'Admin: the online tier move from psql (CALL, outside a transaction block): start, wait for older transactions (towards the shared tier), copy in batches, catch up, cut over, committing between steps; resumes an interrupted move. Runs with the caller''s rights: the steps check for an administrative context.';
GRANT EXECUTE ON PROCEDURE tenantry.move_tenant(uuid, text, integer) TO tenantry_admin;

/**
 * Guide: create_tenant_schema(tid). Fixed: identifiers via %I, owned by
 * tenantry_owner, RLS forced on the new tables, rows already held by the
 * tenant moved in (nothing lost); idempotent.
 */
CREATE OR REPLACE FUNCTION tenantry.create_tenant_schema(tid uuid)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenantry.set_tenant_isolation(tid, 'schema') $$;
COMMENT ON FUNCTION tenantry.create_tenant_schema(uuid) IS 'Guide API: gives a tenant its own schema (tenants.schema_name) with its resources table (same shape and guarantees) and switches it to schema isolation.';
GRANT EXECUTE ON FUNCTION tenantry.create_tenant_schema(uuid) TO tenantry_admin;

/**
 * Checks that a schema tenant's route is still its route, for use_tenant_schema:
 * the current tenant is schema-isolated in that schema (or pooled, for
 * tenantry: current_tenant_schema()), and its context part says whether it
 * is moving back to the shared tier (,h) exactly when it is (then either of
 * its two schemas will do).
 * Else the server's cached part is stale (the tenant changed tiers, or began
 * or ended a move back): 40001, HINT tier_moved, and the server retries with
 * a fresh part. While it moves back, takes the tenant's row FOR SHARE for the
 * rest of the transaction (waiting for a batch of the move in flight), so
 * that no batch moves its rows between the transaction's statements. (Its
 * schema still goes first on the search path: the tenant's rows of adopted
 * tables stay there until the cut-over; its resources, split between two
 * tables, are read through the family, tenantry.resources, by name.)
 * Without a tenant context, only checks that the schema exists.
 */
CREATE OR REPLACE FUNCTION tenantry.check_tenant_route(schema_name text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me uuid := tenantry.current_tenant_id();
    holding boolean := strpos(current_setting('backtrace_functions'), ',h,v') > 0;
    t record;
BEGIN
    IF me IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = check_tenant_route.schema_name) THEN
            RAISE EXCEPTION 'tenant schema % is gone (the tenant changed tiers); retry the transaction', schema_name
                USING ERRCODE = '40001', HINT = 'tier_moved';
        END IF;
        RETURN;
    END IF;
    SELECT tn.isolation, tn.schema_name, tn.moving_to INTO t FROM tenantry.tenants tn WHERE tn.tenant_id = me;
    -- The schemas that are this tenant's route now: both while it moves
    -- back, else its own (schema tier) or tenantry (pooled).
    IF NOT FOUND OR (t.moving_to IS NOT DISTINCT FROM 'shared') <> holding
       OR NOT coalesce(check_tenant_route.schema_name = ANY (
              CASE WHEN holding THEN ARRAY[t.schema_name, 'tenantry']
                   WHEN t.isolation = 'schema' THEN ARRAY[t.schema_name]
                   ELSE ARRAY['tenantry'] END), false) THEN
        RAISE EXCEPTION 'the route to tenant schema % is stale (the tenant changed tiers); retry the transaction', schema_name
            USING ERRCODE = '40001', HINT = 'tier_moved';
    END IF;
    IF holding THEN
        SELECT tn.moving_to INTO t.moving_to FROM tenantry.tenants tn WHERE tn.tenant_id = me FOR SHARE;
        -- The latest version, once a batch or the cut-over in flight ended.
        IF t.moving_to IS DISTINCT FROM 'shared' THEN
            RAISE EXCEPTION 'tenant % changed tiers while this transaction waited for it; retry the transaction', me
                USING ERRCODE = '40001', HINT = 'tier_moved';
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.check_tenant_route(text) IS 'Internal (use_tenant_schema): 40001 (HINT tier_moved) when the current tenant is no longer schema-isolated in that schema or its context part is stale about a move back to the shared tier; during such a move, holds the tenant''s row FOR SHARE for the transaction.';
GRANT EXECUTE ON FUNCTION tenantry.check_tenant_route(text) TO tenantry_app;

/**
 * Puts a schema tenant's schema first on this transaction's search path, so
 * that unqualified names of tenant tables name the tenant's own tables (the
 * server's route for a schema tenant), once check_tenant_route found the
 * route current (stale: 40001, HINT tier_moved, and the server retries with
 * a fresh part). While the tenant moves back to the shared tier, the
 * transaction also holds the tenant's tier (check_tenant_route). Routing is
 * not isolation: the policies on every table decide what any route reads.
 */
-- No SET search_path clause: it would undo the search path this function
-- exists to set. SECURITY INVOKER, every name qualified.
CREATE OR REPLACE FUNCTION tenantry.use_tenant_schema(schema_name text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM tenantry.check_tenant_route(schema_name);
    PERFORM pg_catalog.set_config('search_path',
        pg_catalog.quote_ident(schema_name) OPERATOR(pg_catalog.||) ', '
        OPERATOR(pg_catalog.||) pg_catalog.current_setting('search_path'), true);
END
$$;
COMMENT ON FUNCTION tenantry.use_tenant_schema(text) IS 'Server route of a schema tenant: puts its schema first on this transaction''s search path (while it moves back to the shared tier, it also holds the tenant''s tier for the transaction); 40001 (HINT tier_moved) when the route is stale.';
GRANT EXECUTE ON FUNCTION tenantry.use_tenant_schema(text) TO tenantry_app;

/**
 * The search_path that routes a tenant's unqualified names: its schema
 * first for a schema tenant, else the pooled tables ('tenantry', or NULL for
 * no tenant). Inlined SQL, every name qualified.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_search_path(tenant_schema text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    -- public before tenantry: a table of the team's named like one of
    -- tenantry's (roles, invitations, resources) is the team's, as the
    -- guide's path (the tenant's schema, public) has it; tenantry's
    -- functions and tables keep their unqualified names otherwise.
    SELECT CASE WHEN tenant_schema IS NULL OR tenant_schema OPERATOR(pg_catalog.=) 'tenantry' THEN 'public, tenantry'
                ELSE pg_catalog.quote_ident(tenant_schema) OPERATOR(pg_catalog.||) ', public, tenantry' END
$$;
COMMENT ON FUNCTION tenantry.tenant_search_path(text) IS 'The search_path setup_connection() sets for a tenant''s schema: the schema, public, tenantry; public, tenantry for the pooled tables (tenantry) or no tenant (NULL). public before tenantry, so that a table of the team''s named like one of tenantry''s is the team''s.';
GRANT EXECUTE ON FUNCTION tenantry.tenant_search_path(text) TO tenantry_app;

/**
 * Guide: setup_connection(). Fixed: current_tenant_schema() exists, the
 * schema name is quoted, and no SET SESSION AUTHORIZATION. Puts the current
 * tenant's schema (if schema-isolated) first on the session search_path.
 * Session scope: same pooler caveat as set_tenant_context (whose later calls
 * move the route along: follow_tenant_route).
 */
-- No SET search_path clause here: it would undo the search_path this
-- function exists to set. SECURITY INVOKER, every name schema-qualified.
CREATE OR REPLACE FUNCTION tenantry.setup_connection()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF tenantry.current_tenant_id() IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403',
            HINT = 'an operator calls set_tenant_context(tenant_id) first; the server''s login proves a context through the library (enter_context), which the guide''s setters refuse it';
    END IF;
    PERFORM pg_catalog.set_config('search_path', tenantry.tenant_search_path(tenantry.current_tenant_schema()), false);
    -- The setters route again while the session keeps a route of ours.
    PERFORM pg_catalog.set_config('tenantry.follow_route', 'on', false);
END
$$;
COMMENT ON FUNCTION tenantry.setup_connection() IS 'Guide API: sets the session search_path to the current tenant''s schema (if schema-isolated), public, tenantry (schemas of the caller''s own are not kept, as in the guide: add them after). Session scope: unsafe behind transaction pooling; set_tenant_context and set_tenant_context_local move the route along when they change tenant.';
GRANT EXECUTE ON FUNCTION tenantry.setup_connection() TO tenantry_app;

/**
 * Called by set_tenant_context (for the session) and set_tenant_context_local
 * (for the transaction) once they changed the context: in a session that
 * setup_connection() routed (tenantry.follow_route), a search_path that is
 * still one of its routes (a tenant schema first, or the pooled tables'
 * 'public, tenantry') is routed again, to the current tenant's. Any other
 * search_path is left alone. SECURITY INVOKER without a SET clause (it
 * changes the caller's search_path), every name qualified.
 */
CREATE OR REPLACE FUNCTION tenantry.follow_tenant_route(local boolean)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    path text := pg_catalog.current_setting('search_path');
BEGIN
    IF pg_catalog.current_setting('tenantry.follow_route', true) OPERATOR(pg_catalog.=) 'on'
       AND (path OPERATOR(pg_catalog.=) tenantry.tenant_search_path(NULL)
            OR path OPERATOR(pg_catalog.=) tenantry.tenant_search_path(pg_catalog.btrim(pg_catalog.split_part(path, ',', 1), ' "'))
               AND pg_catalog.btrim(pg_catalog.split_part(path, ',', 1), ' "') OPERATOR(pg_catalog.~) '^tenant_[0-9a-f]{20}$') THEN
        PERFORM pg_catalog.set_config('search_path', tenantry.tenant_search_path(tenantry.current_tenant_schema()), local);
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.follow_tenant_route(boolean) IS 'Internal, after set_tenant_context (local false) and set_tenant_context_local (local true): in a session setup_connection() routed, a search_path that is still one of its routes is routed to the current tenant''s (for the session, or for the transaction); any other search_path is left alone.';
GRANT EXECUTE ON FUNCTION tenantry.follow_tenant_route(boolean) TO tenantry_app;


-- -----------------------------------------------------------------------------
-- Tenant-schema migrations (tenant_schema_steps, tenants.schema_version).
-- -----------------------------------------------------------------------------

CREATE POLICY tenant_schema_steps_no_direct_access ON tenantry.tenant_schema_steps
    AS RESTRICTIVE FOR ALL TO PUBLIC USING (false) WITH CHECK (false);
COMMENT ON POLICY tenant_schema_steps_no_direct_access ON tenantry.tenant_schema_steps IS 'No role reads or writes the steps directly: operators add them through add_tenant_schema_step(), schemas run them through migrate_tenant_schema() (both as the owner; the table is granted to none).';

/**
 * The latest tenant-schema version (0: no step recorded). PL/pgSQL for its
 * cached plan: a SQL function with a SET clause is planned again at every
 * call (twice per schema tenant's creation).
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_schema_latest()
RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN coalesce((SELECT max(s.version) FROM tenantry.tenant_schema_steps s), 0);
END
$$;
COMMENT ON FUNCTION tenantry.tenant_schema_latest() IS 'The latest tenant_schema_steps version, 0 when none. Not granted.';

/**
 * Records a step every tenant schema applies (run it from the migration that
 * makes the same change to the pooled table): SQL run in each tenant's
 * schema, first on the search path, by `tenantry migrate`. Operators only
 * (superuser or member of tenantry_owner). Returns the new version.
 */
CREATE OR REPLACE FUNCTION tenantry.add_tenant_schema_step(description text, statement text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v integer;
BEGIN
    IF NOT tenantry.operator_session() THEN
        RAISE EXCEPTION 'only an operator (superuser or member of tenantry_owner) records tenant-schema steps'
            USING ERRCODE = '42501';
    END IF;
    IF coalesce(length(trim(statement)), 0) = 0 THEN
        RAISE EXCEPTION 'the step has no statement' USING ERRCODE = 'TN422', HINT = 'statement';
    END IF;
    IF coalesce(length(description), 0) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'description must be 1 to 200 characters' USING ERRCODE = 'TN422', HINT = 'description';
    END IF;
    -- One writer at a time: versions follow one another.
    LOCK TABLE tenantry.tenant_schema_steps IN EXCLUSIVE MODE;
    v := tenantry.tenant_schema_latest() + 1;
    INSERT INTO tenantry.tenant_schema_steps (version, description, statement)
    VALUES (v, add_tenant_schema_step.description, add_tenant_schema_step.statement);
    RETURN v;
END
$$;
COMMENT ON FUNCTION tenantry.add_tenant_schema_step(text, text) IS 'Operators: records SQL every tenant schema runs (its schema first on the search path), as the next version; tenantry migrate applies it schema by schema. Returns the version. 42501 for anyone but a superuser or member of tenantry_owner.';

/**
 * Applies the pending steps to one schema tenant's schema, in this
 * transaction, and records its new version: all or nothing, never twice.
 * Returns how many steps ran.
 */
CREATE OR REPLACE FUNCTION tenantry.migrate_tenant_schema(tid uuid)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    step record;
    ran integer := 0;
BEGIN
    PERFORM tenantry.require_tier_admin();
    -- The tenant's row: no move or second migration of it meanwhile. A move
    -- under way first (its row, then the tenant's: tier_move_cutover holds
    -- the move's while it reads the schema's tables, which a step alters).
    PERFORM 1 FROM tenantry.tier_moves mv WHERE mv.tenant_id = tid FOR UPDATE;
    SELECT tn.schema_name, tn.schema_version, tn.isolation, tn.moving_to INTO t
    FROM tenantry.tenants tn WHERE tn.tenant_id = tid FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant % not found', tid USING ERRCODE = 'TN404', HINT = 'tenant_id';
    -- A tenant moving to the schema tier has its schema's tables already:
    -- a step recorded meanwhile reaches them, or its copy could not go on.
    ELSIF t.isolation <> 'schema' AND t.moving_to IS DISTINCT FROM 'schema' THEN
        RETURN 0;
    END IF;
    FOR step IN
        SELECT s.version, s.statement FROM tenantry.tenant_schema_steps s
        WHERE s.version > coalesce(t.schema_version, 0) ORDER BY s.version
    LOOP
        PERFORM set_config('search_path', format('%I, pg_catalog, pg_temp', t.schema_name), true);
        EXECUTE step.statement;
        ran := ran + 1;
        UPDATE tenantry.tenants SET schema_version = step.version WHERE tenant_id = tid;
    END LOOP;
    -- A table made by a step above is like its pooled table as it is now;
    -- a step recorded after this loop began (a concurrent alter_tenant_table)
    -- is in it already and would run again next time: try again instead.
    IF coalesce(current_setting('tenantry.tables_made_by_steps', true), '') <> ''
       AND tenantry.tenant_schema_latest() > (SELECT tn.schema_version FROM tenantry.tenants tn WHERE tn.tenant_id = tid) THEN
        RAISE EXCEPTION 'a tenant-schema step was recorded while the schema of tenant % was being migrated; nothing was applied, run tenantry migrate again', tid
            USING ERRCODE = '40001';
    END IF;
    -- Its tables are like their templates again (triggers and column
    -- grants on columns a step has just added: tenantry's definitions skip
    -- schemas behind the latest version, below).
    IF ran > 0 THEN
        PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM tenantry.secure_tenant_schema(tid);
    END IF;
    RETURN ran;
END
$$;
COMMENT ON FUNCTION tenantry.migrate_tenant_schema(uuid) IS 'Admin: runs the tenant_schema_steps the tenant''s schema has not run yet (its schema first on the search path), in the caller''s transaction, and records its version; for a schema tenant or one moving to the schema tier (its new tables), 0 for a pooled tenant. TN404 unknown tenant; 40001 when a step was recorded while a step of this run made a table.';

/**
 * Changes the shape of an adopted table and records the same change as a
 * tenant-schema step, in one call from the team's migration: schema
 * tenants' tables of it stand alone (they do not inherit it), so a column
 * reaches them through `tenantry migrate`. `change` is what follows
 * `ALTER TABLE <table>` (ADD COLUMN, DROP COLUMN, ALTER COLUMN, RENAME
 * COLUMN, ADD CONSTRAINT … CHECK …), run with the caller's rights; the
 * step runs with pg_catalog alone on the search path (alter_tenant_copy),
 * so a table family's change runs here with pg_catalog alone on it, and one
 * naming a type, function or table of yours without its schema is refused
 * (TN422). Taken in tries of 50 ms of waiting for its lock (in_lock_tries).
 * Returns the step's version; NULL for a table that is
 * no table family (no primary key (tenant_id, one column)), of which no
 * schema tenant has a table.
 */
CREATE OR REPLACE FUNCTION tenantry.alter_tenant_table(tbl regclass, change text)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    -- Before the change: whether schema tenants have tables of it.
    family boolean := tbl = ANY (tenantry.table_families());
    -- What it must not change (a schema tenant's table must not copy it),
    -- read before and after: its name and schema, owner, row level
    -- security and inheritance.
    kept constant text := 'SELECT pg_catalog.concat_ws(''|'', c.relname, c.relnamespace, c.relowner, c.relrowsecurity, '
                          'c.relforcerowsecurity, (SELECT pg_catalog.count(*) FROM pg_catalog.pg_inherits i '
                          'WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)) FROM pg_catalog.pg_class c WHERE c.oid = $1';
    before text;
    after text;
    -- The doctor's findings on the table before the change, and those the
    -- change adds: a change may not break a rule adopt_table enforces (a
    -- unique key without tenant_id tells tenants which values others hold).
    problems_before text[];
    added text;
    -- The operator's search path, put back after the change ran without it.
    operator_path text;
    -- The tenant-schema step that carries the change to schema tenants.
    step integer;
    qualified text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tenantry.tenant_tables r WHERE r.table_id = tbl) THEN
        RAISE EXCEPTION '% is not an adopted table', tbl USING ERRCODE = 'TN404';
    END IF;
    IF coalesce(btrim(change), '') = '' THEN
        RAISE EXCEPTION 'say what to change: alter_tenant_table(%, ''ADD COLUMN due_at date'')', tbl
            USING ERRCODE = 'TN422';
    END IF;
    -- What a schema tenant's table must not copy: its name and schema are
    -- its family's, its owner and row level security tenantry's.
    IF change ~* '^\s*(rename\s+to|set\s+schema|owner\s+to|(enable|disable|force|no\s+force)\s+row\s+level\s+security|(no\s+)?inherit|attach|detach)\M' THEN
        RAISE EXCEPTION 'alter_tenant_table changes the shape of %, not its name, schema, owner, row level security or inheritance: %', tbl, change
            USING ERRCODE = 'TN422', HINT = 'columns, defaults and CHECK constraints; run other changes with ALTER TABLE, except a rename or a move to another schema, which schema tenants'' tables of it would not follow (docs/tiers.md)';
    END IF;
    -- Schema tenants' tables of it that its family left (its key was
    -- dropped): a step would not reach them; the key comes back first.
    IF EXISTS (SELECT 1 FROM tenantry.orphan_copies() o WHERE o.adopted = tbl) THEN
        RAISE EXCEPTION 'schema tenants hold tables of % that belong to no tenant table family (its primary key is no longer (tenant_id, one column)): restore the key first', tbl
            USING ERRCODE = 'TN409', HINT = 'tenantry doctor (rule copy_family) names the statement that restores it';
    END IF;
    IF pg_catalog.strpos(change, ';') > 0 THEN
        RAISE EXCEPTION 'alter_tenant_table takes one change, without ";": %', change
            USING ERRCODE = 'TN422', HINT = 'call it once per statement (several subcommands of one ALTER TABLE, separated by commas, are one change)';
    END IF;
    -- The doctor's findings before the change are read before its lock is
    -- asked for: tenants' transactions on the table wait for the change and
    -- the check after it, not for this one too.
    problems_before := ARRAY(SELECT pg_catalog.concat_ws('|', p.table_name, p.rule, p.problem)
                             FROM tenantry.table_problems(tbl) p);
    EXECUTE kept USING tbl INTO before;
    -- In tries of 50 ms of waiting for its lock: a change queued behind a
    -- long transaction on the table held every tenant's statements on it
    -- behind itself for as long (13.6 s in a review of live schema
    -- changes); a change that has its lock runs as long as it needs.
    -- A table family's change runs as its step will in every schema
    -- (alter_tenant_copy), with pg_catalog alone on the search path: a name
    -- the operator's search path found here (a type in public) failed
    -- there, in every schema, and held every later step back (found by a
    -- review of live schema changes). Refused here instead, nothing changed.
    IF family THEN
        operator_path := pg_catalog.current_setting('search_path');
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    END IF;
    BEGIN
        PERFORM tenantry.in_lock_tries(ARRAY[pg_catalog.format('ALTER TABLE %s %s', tbl, change)], tbl::text);
    EXCEPTION WHEN undefined_object OR undefined_function OR undefined_table THEN
        IF NOT family THEN
            RAISE;
        END IF;
        RAISE EXCEPTION 'alter_tenant_table: the change to % failed (%), as it would on schema tenants'' tables of it: %', tbl, SQLERRM, change
            USING ERRCODE = 'TN422',
                  HINT = 'the change runs with pg_catalog alone on the search path, as it will on each schema tenant''s table: name your own types, functions and tables with their schema, as in ADD COLUMN triage public.priority';
    END;
    IF family THEN
        PERFORM pg_catalog.set_config('search_path', operator_path, true);
    END IF;
    EXECUTE kept USING tbl INTO after;
    IF after IS DISTINCT FROM before THEN
        RAISE EXCEPTION 'alter_tenant_table changes the shape of %, not its name, schema, owner, row level security or inheritance: %', tbl, change
            USING ERRCODE = 'TN422', HINT = 'columns, defaults and CHECK constraints; run other changes with ALTER TABLE, except a rename or a move to another schema, which schema tenants'' tables of it would not follow (docs/tiers.md)';
    END IF;
    -- Without the doctor's fixes: they name what this change made, which
    -- the refusal takes back (found by an outside review).
    SELECT pg_catalog.string_agg(pg_catalog.format('%s [%s]: %s', p.table_name, p.rule, p.problem), E'\n')
      INTO added
      FROM tenantry.table_problems(tbl) p
     WHERE pg_catalog.concat_ws('|', p.table_name, p.rule, p.problem) <> ALL (problems_before);
    IF added IS NOT NULL THEN
        -- The rules in the message too: some migration tools print nothing else.
        RAISE EXCEPTION 'alter_tenant_table: this change to % breaks the rules of tenant tables (nothing was changed): %: %', tbl, change,
                        pg_catalog.replace(added, E'\n', '; ')
            USING ERRCODE = 'TN422', DETAIL = added,
                  HINT = 'write the change so that it keeps the rule each line names: a key or an index leads with tenant_id, as in ADD UNIQUE (tenant_id, <columns>); findings the doctor had before the change do not count';
    END IF;
    -- Its schema-qualified name, whatever the operator's search path.
    qualified := (SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
                  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = tbl);
    IF NOT family THEN
        PERFORM tenantry.write_operator_audit('table.altered', 'table', qualified,
            pg_catalog.jsonb_build_object('change', change));
        RETURN NULL;
    END IF;
    -- Nor may the change end the family: every schema tenant's table of it
    -- would be left without one (the same change, run as a step, drops
    -- their keys too).
    IF EXISTS (SELECT 1 FROM tenantry.orphan_copies() o WHERE o.adopted = tbl) THEN
        RAISE EXCEPTION 'this change would end % as a tenant table family (its primary key must stay (tenant_id, one column)) while schema tenants have tables of it: %', tbl, change
            USING ERRCODE = 'TN422', HINT = 'change the key in one statement (DROP CONSTRAINT ..., ADD PRIMARY KEY (tenant_id, ...)), or move the schema tenants to the shared tier first';
    END IF;
    step := tenantry.add_tenant_schema_step(
        left(pg_catalog.format('%s: %s', tbl, change), 200),
        pg_catalog.format('SELECT tenantry.alter_tenant_copy(%L::regclass, %L, current_schema())', qualified, change));
    PERFORM tenantry.write_operator_audit('table.altered', 'table', qualified,
        pg_catalog.jsonb_build_object('change', change, 'tenant_schema_step', step));
    RETURN step;
END
$$;
COMMENT ON FUNCTION tenantry.alter_tenant_table(regclass, text) IS 'Changes an adopted table (ALTER TABLE tbl <change>) and records the same change as a tenant-schema step for schema tenants'' tables of it, which tenantry migrate applies schema by schema: SELECT tenantry.alter_tenant_table(''invoices'', ''ADD COLUMN due_at date''). Returns the step''s version (NULL when the table is not a table family: no primary key (tenant_id, one column), so no schema tenant has a table of it). Runs with the caller''s rights (an operator: a superuser or a member of tenantry_owner). TN404 for a table that is not adopted; TN422 for a change that breaks a rule of tenant tables (as tenantry.table_problems finds them: a key or index not led by tenant_id, ...) or would end its family (its primary key (tenant_id, column)); TN409 while schema tenants hold tables of it that its family left.';

/**
 * The schema tenants' tables the doctor compares with their family's pooled
 * table (copy_column_drift, copy_constraint_drift): those of schema tenants
 * and of tenants moving to the schema tier, whose schema ran every
 * tenant-schema step (one behind is named as such, and its tables differ
 * until tenantry migrate runs it).
 */
CREATE OR REPLACE FUNCTION tenantry.compared_copies()
RETURNS TABLE (copy regclass, template regclass)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f.copy, f.template
    FROM tenantry.family_copies() f
    JOIN pg_catalog.pg_class c ON c.oid = f.copy
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN tenantry.tenants t ON t.schema_name = n.nspname
    -- Tenants moving either way too: their moves copy by these columns
    -- (tier_move_refuse_unlike points here).
    WHERE (t.isolation = 'schema' OR t.moving_to = 'schema')
      AND coalesce(t.schema_version, 0) >= tenantry.tenant_schema_latest()
$$;
COMMENT ON FUNCTION tenantry.compared_copies() IS 'Internal: the schema tenants'' tables the doctor''s copy rules compare with their family''s pooled table (schema tenants and tenants moving to the schema tier, at the latest tenant-schema version). Not granted.';
REVOKE ALL ON FUNCTION tenantry.compared_copies() FROM PUBLIC;

/**
 * Schema tenants' tables whose columns differ from their family's pooled
 * table (by name: type, collation, NOT NULL, default or generation, present
 * or not), in schemas that have run every tenant-schema step: a shape change
 * made on the team's table without a step (alter_tenant_table records one).
 * A schema behind the latest version is the doctor's finding already.
 *
 * Each fix keeps the schema tenant's rows as the change kept the pooled
 * tenants' (found by an outside review, which pasted the fixes as printed):
 * a column missing on one side and another on the other, in the same place,
 * is a rename (retyped too when the types differ: the next run names the
 * type) and is renamed (dropping and adding it lost every value; the other
 * reading is printed beside it); a column added comes with its default (or
 * generation) and NOT NULL in one statement, so the rows there get the value
 * the pooled rows got; a NOT NULL whose column has a default fills the NULLs
 * with it in the same ALTER TABLE (a rewrite, which row level security does
 * not filter, so an operator who is no superuser fills them too); a default
 * that differs is set again; a generation dropped there is dropped here
 * (DROP EXPRESSION keeps the values), one added or changed there makes the
 * column again (its values are derived).
 */
CREATE OR REPLACE FUNCTION tenantry.copy_column_drift()
RETURNS TABLE (copy regclass, template regclass, problem text, fix text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH copies AS (
        SELECT f.copy, f.template FROM tenantry.compared_copies() f
    ), attrs AS (
        SELECT a.attrelid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
               a.attnotnull,
               CASE WHEN a.attcollation <> ty.typcollation
                    THEN (SELECT format(' COLLATE %I.%I', cn.nspname, co.collname)
                          FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                          WHERE co.oid = a.attcollation) ELSE '' END AS collation,
               -- The column's value when a row does not give one: its
               -- default, its generation, or (an identity column of the
               -- template) the sequence a schema tenant's table draws from
               -- (secure_tenant_copy); '' for none.
               CASE WHEN a.attidentity <> ''
                    THEN format(' DEFAULT nextval(%L::regclass)', pg_catalog.pg_get_serial_sequence(a.attrelid::regclass::text, a.attname))
                    -- Stored, or (PostgreSQL 18) virtual.
                    WHEN a.attgenerated <> ''
                    THEN format(' GENERATED ALWAYS AS (%s) %s', pg_catalog.pg_get_expr(d.adbin, d.adrelid),
                                CASE a.attgenerated WHEN 'v' THEN 'VIRTUAL' ELSE 'STORED' END)
                    WHEN d.adbin IS NOT NULL
                    THEN format(' DEFAULT %s', pg_catalog.pg_get_expr(d.adbin, d.adrelid))
                    ELSE '' END AS value_clause,
               a.attidentity <> '' AS identity,
               a.attgenerated <> '' AS generated,
               a.attgenerated = 'v' AS virtual,
               pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS default_expr,
               pg_catalog.row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum) AS place
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
        LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid IN (SELECT s.copy FROM copies s UNION SELECT s.template FROM copies s)
          AND a.attnum > 0 AND NOT a.attisdropped
    ), cols AS (
        -- With the column's whole definition, as ADD COLUMN takes it.
        SELECT x.*, format('%I %s%s%s%s', x.attname, x.type, x.collation, x.value_clause,
                           CASE WHEN x.attnotnull THEN ' NOT NULL' ELSE '' END) AS definition
        FROM attrs x
    ), pairs AS (
        SELECT s.copy, s.template, h, w
        FROM copies s
        CROSS JOIN LATERAL (
            SELECT h, w
            FROM (SELECT c FROM cols c WHERE c.attrelid = s.copy) hh(h)
            FULL JOIN (SELECT c FROM cols c WHERE c.attrelid = s.template) ww(w) ON (w).attname = (h).attname
        ) j
    ), renamed AS (
        -- A column of the copy alone and one of the template alone, in the
        -- same place.
        SELECT p.copy, p.template, p.h, q.w
        FROM pairs p
        JOIN pairs q ON q.copy = p.copy AND (q.h).attname IS NULL AND (p.w).attname IS NULL
                    AND (q.w).place = (p.h).place
    ), findings AS (
        SELECT r.copy, r.template, 1 AS step, (r.h).attname AS col,
               format('has column %I where %s has %I, in the same place: renamed%s there without a step',
                      (r.h).attname, r.template, (r.w).attname,
                      CASE WHEN (r.h).type <> (r.w).type THEN format(' (and made %s)', (r.w).type) ELSE '' END) AS problem,
               format('ALTER TABLE %s RENAME COLUMN %I TO %I; -- had %2$I been dropped and %3$I added instead: ALTER TABLE %1$s DROP COLUMN %2$I, ADD COLUMN %4$s',
                      r.copy, (r.h).attname, (r.w).attname, (r.w).definition) AS fix
        FROM renamed r
        UNION ALL
        SELECT p.copy, p.template, 2, coalesce((p.h).attname, (p.w).attname),
               CASE WHEN (p.h).attname IS NULL
                    THEN format('has no column %I, which %s has (%s)', (p.w).attname, p.template, (p.w).definition)
                    ELSE format('has column %I, which %s has not', (p.h).attname, p.template) END,
               CASE WHEN (p.h).attname IS NULL
                    THEN format('ALTER TABLE %s ADD COLUMN %s', p.copy, (p.w).definition)
                    ELSE format('ALTER TABLE %s DROP COLUMN %I', p.copy, (p.h).attname) END
        FROM pairs p
        WHERE ((p.h).attname IS NULL OR (p.w).attname IS NULL)
          AND NOT EXISTS (SELECT 1 FROM renamed r
                          WHERE r.copy = p.copy AND ((r.h).attname = (p.h).attname OR (r.w).attname = (p.w).attname))
        UNION ALL
        -- Present on both sides: type and collation, then the generation,
        -- the default, NOT NULL.
        SELECT p.copy, p.template, 3, (p.w).attname,
               format('column %I is %s%s, on %s %s%s', (p.w).attname, (p.h).type, (p.h).collation, p.template, (p.w).type, (p.w).collation),
               format('ALTER TABLE %s ALTER COLUMN %I TYPE %s%s', p.copy, (p.w).attname, (p.w).type, (p.w).collation)
        FROM pairs p
        WHERE (p.h).attname IS NOT NULL AND (p.w).attname IS NOT NULL
          AND ((p.h).type, (p.h).collation) IS DISTINCT FROM ((p.w).type, (p.w).collation)
        UNION ALL
        SELECT p.copy, p.template, 4, (p.w).attname,
               format('column %I is %s, on %s %s', (p.w).attname,
                      CASE WHEN (p.h).generated THEN format('generated as %s%s', (p.h).default_expr,
                                                             CASE WHEN (p.h).virtual THEN ' (virtual)' ELSE '' END)
                           ELSE 'not generated' END, p.template,
                      CASE WHEN (p.w).generated THEN format('generated as %s%s', (p.w).default_expr,
                                                             CASE WHEN (p.w).virtual THEN ' (virtual)' ELSE '' END)
                           ELSE 'not generated' END),
               CASE WHEN NOT (p.w).generated AND NOT (p.h).virtual
                    -- Dropped there: the pooled rows kept their values.
                    -- (A virtual column has none to keep, and PostgreSQL 18
                    -- drops no virtual column's expression: made again.)
                    THEN format('ALTER TABLE %s ALTER COLUMN %I DROP EXPRESSION', p.copy, (p.w).attname)
                    ELSE format('ALTER TABLE %s DROP COLUMN %I, ADD COLUMN %s', p.copy, (p.w).attname, (p.w).definition) END
        FROM pairs p
        WHERE (p.h).attname IS NOT NULL AND (p.w).attname IS NOT NULL
          AND ((p.h).generated OR (p.w).generated)
          -- The expression, and whether stored or virtual.
          AND ((p.h).generated, (p.h).value_clause) IS DISTINCT FROM ((p.w).generated, (p.w).value_clause)
        UNION ALL
        SELECT p.copy, p.template, 5, (p.w).attname,
               format('column %I has %s, on %s %s', (p.w).attname,
                      coalesce('default ' || (p.h).default_expr, 'no default'), p.template,
                      coalesce('default ' || (p.w).default_expr, 'no default')),
               CASE WHEN (p.w).default_expr IS NULL
                    THEN format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', p.copy, (p.w).attname)
                    ELSE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s', p.copy, (p.w).attname, (p.w).default_expr) END
        FROM pairs p
        WHERE (p.h).attname IS NOT NULL AND (p.w).attname IS NOT NULL
          AND NOT (p.h).generated AND NOT (p.w).generated AND NOT (p.w).identity
          AND (p.h).default_expr IS DISTINCT FROM (p.w).default_expr
        UNION ALL
        SELECT p.copy, p.template, 6, (p.w).attname,
               format('column %I is %s, on %s %s', (p.w).attname,
                      CASE WHEN (p.h).attnotnull THEN 'NOT NULL' ELSE 'nullable' END, p.template,
                      CASE WHEN (p.w).attnotnull THEN 'NOT NULL' ELSE 'nullable' END),
               CASE WHEN NOT (p.w).attnotnull
                    THEN format('ALTER TABLE %s ALTER COLUMN %I DROP NOT NULL', p.copy, (p.w).attname)
                    -- The pooled rows took the default when the column
                    -- came; the schema's rows without a value take it now.
                    WHEN (p.w).default_expr IS NOT NULL AND NOT (p.w).generated
                    THEN format('ALTER TABLE %1$s ALTER COLUMN %2$I TYPE %3$s%4$s USING coalesce(%2$I, %5$s), ALTER COLUMN %2$I SET NOT NULL',
                                p.copy, (p.w).attname, (p.w).type, (p.w).collation, (p.w).default_expr)
                    ELSE format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', p.copy, (p.w).attname) END
        FROM pairs p
        WHERE (p.h).attname IS NOT NULL AND (p.w).attname IS NOT NULL
          AND (p.h).attnotnull IS DISTINCT FROM (p.w).attnotnull
    )
    SELECT f.copy, f.template, f.problem,
           f.fix || '; -- and make shape changes with tenantry.alter_tenant_table(), which records them for every schema'
    FROM findings f
    ORDER BY f.copy::text, f.step, f.col
$$;
COMMENT ON FUNCTION tenantry.copy_column_drift() IS 'Internal (the doctor''s rule copy_columns, for tenantry doctor: the server''s login runs no definer function, and a column is no isolation rule its boot check must hold): schema tenants'' tables, in schemas at the latest tenant-schema version, whose columns differ from their family''s pooled table (type, collation, NOT NULL, default or generation, present or not; a column of each side alone with the same type and place is a rename), with the SQL that fixes each and keeps the rows'' values as the change kept the pooled ones. Granted to tenantry_admin (and the owner''s members, who run tenantry doctor).';
GRANT EXECUTE ON FUNCTION tenantry.copy_column_drift() TO tenantry_admin;

/**
 * The doctor's rule copy_constraints: a schema tenant's table stands alone,
 * so an index, a UNIQUE or EXCLUDE constraint or a CHECK the team's
 * migration added to (or dropped from) its table without a tenant-schema
 * step is missing (or left over) in the schema. A missing UNIQUE lets the
 * schema tenant hold rows the team's table refuses, and its move back to the
 * shared tier then fails at the cut-over (found by a review of migration
 * tools). Indexes are compared by what follows the table in their
 * definition (method, keys, INCLUDE, storage, predicate), constraints by
 * their definition; names may differ (a schema's copy was made with LIKE).
 * Foreign keys are not compared (a schema's point at its own tables).
 */
CREATE OR REPLACE FUNCTION tenantry.copy_constraint_drift()
RETURNS TABLE (copy regclass, template regclass, problem text, fix text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH copies AS (
        SELECT f.copy, f.template FROM tenantry.compared_copies() f
    ), rels AS (
        SELECT s.copy AS rel FROM copies s UNION SELECT s.template FROM copies s
    ), idx AS (
        -- Each index with its shape: its definition after "ON <table> ".
        -- A constraint's own definition joins its index's shape: what the
        -- index does not say (DEFERRABLE, an exclusion's operators) counts.
        SELECT i.indrelid AS rel, ic.relname AS name, k.conname, k.contype,
               pg_catalog.pg_get_constraintdef(k.oid) AS condef,
               CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END
               || CASE WHEN starts_with(d.def, d.prefix) THEN substr(d.def, length(d.prefix) + 1)
                       ELSE substr(d.def, strpos(d.def, ' USING ') + 1) END
               || coalesce(' (constraint: ' || pg_catalog.pg_get_constraintdef(k.oid) || ')', '') AS shape
        FROM pg_catalog.pg_index i
        JOIN rels r ON r.rel = i.indrelid
        JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_catalog.pg_class tc ON tc.oid = i.indrelid
        JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
        LEFT JOIN pg_catalog.pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                                            AND k.contype IN ('p', 'u', 'x')
        CROSS JOIN LATERAL (
            SELECT pg_catalog.pg_get_indexdef(i.indexrelid) AS def,
                   format('CREATE %sINDEX %s ON %s.%s ', CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END,
                          quote_ident(ic.relname), quote_ident(tn.nspname), quote_ident(tc.relname)) AS prefix
        ) d
    ), things AS (
        -- Indexes (with the constraint they back, if any) and CHECK
        -- constraints, each with what it is compared by. A CHECK without NOT
        -- VALID (a copy made later validates it on no rows); the fix adds it
        -- as the team's table has it (given).
        SELECT i.rel, i.name, i.conname, i.condef, i.condef AS given, i.shape FROM idx i
        UNION ALL
        SELECT k.conrelid, NULL, k.conname, pg_catalog.pg_get_constraintdef(k.oid),
               pg_catalog.pg_get_constraintdef(k.oid),
               regexp_replace(pg_catalog.pg_get_constraintdef(k.oid), ' NOT VALID$', '')
        FROM pg_catalog.pg_constraint k
        JOIN rels r ON r.rel = k.conrelid
        WHERE k.contype = 'c'
    ), findings AS (
        -- On the team's table, not on the schema's.
        SELECT s.copy, s.template, w.shape AS what,
               CASE WHEN w.conname IS NOT NULL
                    THEN format('has no %s, which %s has (constraint %I)', w.condef, s.template, w.conname)
                    ELSE format('has no index %s, which %s has (%I)', w.shape, s.template, w.name) END AS problem,
               CASE WHEN w.conname IS NOT NULL
                    THEN format('ALTER TABLE %s ADD %s; -- and make such changes with tenantry.alter_tenant_table(), which records them for every schema',
                                s.copy, w.given)
                    ELSE format('CREATE %sINDEX ON %s %s; -- and record an index made on %s as a tenant-schema step (tenantry.add_tenant_schema_step) in the same migration',
                                CASE WHEN w.shape LIKE 'UNIQUE %' THEN 'UNIQUE ' ELSE '' END, s.copy,
                                regexp_replace(w.shape, '^UNIQUE ', ''), s.template) END AS fix
        FROM copies s
        JOIN things w ON w.rel = s.template
        WHERE NOT EXISTS (SELECT 1 FROM things h WHERE h.rel = s.copy AND h.shape = w.shape)
        UNION ALL
        -- On the schema's table, not on the team's any more.
        SELECT s.copy, s.template, h.shape,
               CASE WHEN h.conname IS NOT NULL
                    THEN format('has %s (constraint %I), which %s has not', h.condef, h.conname, s.template)
                    ELSE format('has index %I (%s), which %s has not', h.name, h.shape, s.template) END,
               CASE WHEN h.conname IS NOT NULL
                    THEN format('ALTER TABLE %s DROP CONSTRAINT %I; -- and make such changes with tenantry.alter_tenant_table(), which records them for every schema',
                                s.copy, h.conname)
                    ELSE format('DROP INDEX %s; -- and record dropping an index of %s as a tenant-schema step (tenantry.add_tenant_schema_step) in the same migration',
                                (SELECT format('%I.%I', n.nspname, h.name) FROM pg_catalog.pg_class c
                                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = s.copy),
                                s.template) END
        FROM copies s
        JOIN things h ON h.rel = s.copy
        WHERE NOT EXISTS (SELECT 1 FROM things w WHERE w.rel = s.template AND w.shape = h.shape)
    )
    SELECT f.copy, f.template, f.problem, f.fix
    FROM findings f
    ORDER BY f.copy::text, f.what
$$;
COMMENT ON FUNCTION tenantry.copy_constraint_drift() IS 'Internal (the doctor''s rule copy_constraints, for tenantry doctor, like copy_column_drift): schema tenants'' tables, in schemas at the latest tenant-schema version, whose indexes, UNIQUE, EXCLUDE or CHECK constraints differ from their family''s pooled table (indexes by method, keys and predicate; constraints by definition; names aside; foreign keys not compared), with the SQL that fixes each. A UNIQUE the schema''s table lacks lets its tenant hold rows the pooled table refuses, and its move back fails at the cut-over. Granted to tenantry_admin (and the owner''s members, who run tenantry doctor).';
GRANT EXECUTE ON FUNCTION tenantry.copy_constraint_drift() TO tenantry_admin;

/** Schema tenants whose schema is behind the latest version, oldest first. */
CREATE OR REPLACE FUNCTION tenantry.tenant_schemas_behind(max_rows integer DEFAULT 1000)
RETURNS TABLE (tenant_id uuid, schema_name text, schema_version integer, latest integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.require_tier_admin();
    RETURN QUERY
    SELECT t.tenant_id, t.schema_name, coalesce(t.schema_version, 0), tenantry.tenant_schema_latest()
    FROM tenantry.tenants t
    WHERE (t.isolation = 'schema' OR t.moving_to = 'schema')
      AND coalesce(t.schema_version, 0) < tenantry.tenant_schema_latest()
    ORDER BY coalesce(t.schema_version, 0), t.tenant_id
    LIMIT max_rows;
END
$$;
COMMENT ON FUNCTION tenantry.tenant_schemas_behind(integer) IS 'Admin: schema tenants (and tenants moving to the schema tier) whose schema has not run every tenant_schema_steps version yet (what tenantry migrate will bring up to date and tenantry doctor reports), oldest first.';

GRANT EXECUTE ON FUNCTION
    tenantry.migrate_tenant_schema(uuid),
    tenantry.tenant_schemas_behind(integer)
TO tenantry_admin;

/**
 * The tenant-schema step alter_tenant_table records: the same change on the
 * schema tenant's table of the family of `template`, in `tenant_schema`
 * (current_schema() where the step runs). Nothing when the schema has no
 * table of that family (one adopted, or become a family, after the schema
 * was made: its table comes from add_tenant_schema_table, made like the
 * pooled table with the change in it), or when that table was made by a step
 * of this same transaction (add_tenant_schema_table, like the pooled table
 * as it was then, with every recorded change in it).
 */
CREATE OR REPLACE FUNCTION tenantry.alter_tenant_copy(template regclass, change text, tenant_schema text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    copy regclass := to_regclass(format('%I.%I', tenant_schema,
                                        (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = template)));
BEGIN
    IF copy IS NULL OR tenantry.family_of(copy) IS DISTINCT FROM template
       OR format('%s.%s', tenant_schema, template::oid)
          = ANY (string_to_array(current_setting('tenantry.tables_made_by_steps', true), ',')) THEN
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE %s %s', copy, change);
END
$$;
COMMENT ON FUNCTION tenantry.alter_tenant_copy(regclass, text, text) IS 'Internal tenant-schema step (alter_tenant_table records it; tenantry migrate runs it in each schema): ALTER TABLE on the schema''s table of the family, unless the schema has none or a step of this transaction made it like the pooled table as it is now (add_tenant_schema_table), which has the change already. Not granted.';

/**
 * A tenant-schema step (recorded by adopt_table, run with the tenant's
 * schema first on the search path: current_schema()): gives the schema
 * tenant whose schema that is its own table of a family adopted
 * after its schema was made, secured like the template, and moves the rows
 * the tenant wrote in the pooled table meanwhile into it. Idempotent.
 */
CREATE OR REPLACE FUNCTION tenantry.add_tenant_schema_table(template regclass, tenant_schema text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s text := tenant_schema;
    tid uuid;
    settled boolean;
    f record;
    copy regclass;
    replication text := current_setting('session_replication_role');
BEGIN
    -- A schema tenant, or one moving to the schema tier (its table is made
    -- empty: the move copies its rows, which it still reads pooled).
    SELECT t.tenant_id, t.isolation = 'schema' INTO tid, settled FROM tenantry.tenants t
    WHERE t.schema_name = s AND (t.isolation = 'schema' OR t.moving_to = 'schema');
    IF tid IS NULL THEN
        RAISE EXCEPTION 'add_tenant_schema_table runs as a tenant-schema step (tenantry migrate), in a schema tenant''s schema'
            USING ERRCODE = 'TN422';
    END IF;
    SELECT * INTO f FROM tenantry.tier_tables() tt WHERE tt.template = add_tenant_schema_table.template;
    IF NOT FOUND THEN
        RETURN;  -- released since, or no longer a family: nothing to hold
    END IF;
    IF to_regclass(format('%I.%I', s, f.template_table)) IS NULL THEN
        EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING ALL EXCLUDING IDENTITY)',
                       s, f.template_table, f.template_schema, f.template_table);
        -- Made like the pooled table as it is now, which every change
        -- alter_tenant_table recorded so far is in: this transaction's
        -- later steps of the family (alter_tenant_copy) are in it already.
        PERFORM set_config('tenantry.tables_made_by_steps',
                           concat_ws(',', nullif(current_setting('tenantry.tables_made_by_steps', true), ''),
                                     format('%s.%s', s, template::oid)), true);
    END IF;
    copy := format('%I.%I', s, f.template_table)::regclass;
    PERFORM tenantry.secure_tenant_copy(template, copy);
    IF NOT settled THEN
        RETURN;
    END IF;
    PERFORM set_config('session_replication_role', 'replica', true);
    EXECUTE format('WITH gone AS (DELETE FROM ONLY %I.%I WHERE tenant_id = $1 RETURNING %s)
                    INSERT INTO %I.%I (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM gone',
                   f.template_schema, f.template_table, f.columns, s, f.template_table, f.columns, f.columns)
    USING tid;
    PERFORM set_config('session_replication_role', replication, true);
    -- Statements other sessions prepared under this tenant's search path
    -- before its table existed name the pooled table, which its rows just
    -- left: a plan is made again, and the name resolved again, only when a
    -- table it reads changes (a new table earlier in the path is no such
    -- change), so those statements kept reading nothing until their
    -- connections closed (found by an outside review). Granting again what
    -- the app role holds changes nothing but the pooled table's catalog row,
    -- which makes every plan reading it be made again, taking no lock.
    -- One at a time: two GRANTs on one table from concurrent transactions
    -- fail ("tuple concurrently updated"; found by a review), and two
    -- migrations, or an adoption and a migration, run steps side by side.
    IF pg_catalog.has_table_privilege('tenantry_app_own', template, 'SELECT') THEN
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('tenantry.regrant ' OPERATOR(pg_catalog.||) template::text));
        EXECUTE format('GRANT SELECT ON %s TO tenantry_app_own', template);
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.add_tenant_schema_table(regclass, text) IS 'Internal tenant-schema step (adopt_table records it when schema tenants exist; tenantry migrate runs it in each schema): the schema tenant''s own table of a newly adopted family, secured like the template, with the rows it wrote in the pooled table meanwhile moved in. Idempotent. Not granted.';

/**
 * The tenant-schema step adopt_table records (since migration 0051): the
 * schema tenant's table of the adopted table named table_name, resolved
 * when the step runs. A table dropped since the step was recorded has
 * nothing to hold: the step does nothing, where a regclass literal failed in
 * every schema tenant and held every later step back.
 */
CREATE OR REPLACE FUNCTION tenantry.add_adopted_table_copy(table_name text, tenant_schema text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    template regclass := to_regclass(table_name);
BEGIN
    IF template IS NOT NULL THEN
        PERFORM tenantry.add_tenant_schema_table(template, tenant_schema);
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.add_adopted_table_copy(text, text) IS 'Internal tenant-schema step (adopt_table records it when schema tenants exist; tenantry migrate runs it in each schema): add_tenant_schema_table for the table of that name, nothing when no table has it any more (dropped since). Runs with the caller''s rights (migrate_tenant_schema''s, the owner''s). Not granted.';

-- Tenant schemas made before these definitions are brought to the current
-- ones at the end of 10_tables.sql, once adopted tables (their templates) are too.
