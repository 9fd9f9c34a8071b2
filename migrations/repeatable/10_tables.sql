-- =============================================================================
-- Your own tables as tenant tables: adopt_table, release_table, the doctor.
--
-- adopt_table() makes an ordinary table of the application's (invoices,
-- projects, ...) a tenant table with the guarantees tenantry's own tables
-- have: a tenant_id column bound to tenantry.tenants, RLS enabled and FORCE'd,
-- the tenant_isolation policy for tenantry_app_own (own rows, and descendants'
-- rows when hierarchy is on), the grants the app roles need and no others,
-- indexes that lead with tenant_id (so EXPLAIN ANALYZE never counts another
-- tenant's rows), rows that can never move to another tenant, ownership by
-- tenantry_owner, and an entry in tenantry.tenant_tables. Everything happens in
-- the caller's transaction: a refusal changes nothing.
--
-- With sharing, a tenant shares single rows read-only with another tenant
-- (share_row, unshare_row), recorded in tenantry.shared_rows, audited and
-- counted against max_shares like shares of resources. The table keeps its one
-- policy: a target reads what was shared with it through the fence
-- rows_shared_with_me(NULL::the_table), as resources_shared_with_me() does.
--
-- table_problems() is the doctor: the rules every adopted table must still
-- satisfy, each problem with the SQL that fixes it. adopt_table() ends by
-- asking it, the server asks it at boot, `tenantry doctor` prints it.
--
-- The caller runs the team's own migrations: the table's owner, able to hand
-- the table to tenantry_owner (a member of it), or a superuser. The functions
-- run with the caller's rights (SECURITY INVOKER) except the internal
-- secure_tenant_table(), which only touches tables tenantry_owner owns.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

GRANT SELECT ON tenantry.tenant_tables TO tenantry_admin, tenantry_server;

/** Rows of an adopted table keep their tenant. */
CREATE OR REPLACE FUNCTION tenantry.keep_tenant_id()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
        RAISE EXCEPTION 'a row of %.% cannot move to another tenant', quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME)
            USING ERRCODE = 'TN422', HINT = 'tenant_id';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION tenantry.keep_tenant_id() IS 'Trigger on every adopted table: an UPDATE may not change tenant_id (TN422), not even within the caller''s own subtree: neither by its SET list (BEFORE UPDATE OF tenant_id) nor by a trigger of the team''s that sets it (AFTER UPDATE, when the row as written has another tenant_id).';

/** The policy predicate of an adopted table, as PostgreSQL prints it back. */
CREATE OR REPLACE FUNCTION tenantry.tenant_table_predicate(hierarchy boolean)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN hierarchy
        THEN '(tenant_id = ANY (tenantry.visible_tenant_ids()))'
        ELSE '(tenant_id = tenantry.current_tenant_id())'
    END
$$;
COMMENT ON FUNCTION tenantry.tenant_table_predicate(boolean) IS 'Internal: the USING and WITH CHECK expression of an adopted table''s tenant_isolation policy; with hierarchy a tenant also reaches its descendants'' rows. Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.tenant_table_predicate(boolean) TO tenantry_admin, tenantry_server;

/** Whether a view runs with its caller's rights and policies (security_invoker). */
CREATE OR REPLACE FUNCTION tenantry.view_runs_as_invoker(view_id regclass)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class v, pg_catalog.pg_options_to_table(v.reloptions) opt
                   WHERE v.oid = view_id AND opt.option_name = 'security_invoker'
                     AND lower(opt.option_value) IN ('true', 'on', '1', 'yes'))
$$;
COMMENT ON FUNCTION tenantry.view_runs_as_invoker(regclass) IS 'Internal: whether a view is security_invoker (reads with its caller''s rights and policies), as adopt_table''s refusal and the doctor both ask. Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.view_runs_as_invoker(regclass) TO tenantry_admin, tenantry_server;

/** A table and, when it is partitioned, every partition below it. */
CREATE OR REPLACE FUNCTION tenantry.table_and_partitions(tbl regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tbl
    UNION
    SELECT p.relid FROM pg_catalog.pg_partition_tree(tbl) p
$$;
COMMENT ON FUNCTION tenantry.table_and_partitions(regclass) IS 'Internal: the table itself and every partition below it (pg_partition_tree lists nothing for a table that is not partitioned).';
GRANT EXECUTE ON FUNCTION tenantry.table_and_partitions(regclass) TO tenantry_admin, tenantry_server;

/**
 * How the doctor reads a function body that PostgreSQL keeps as a string
 * (PL/pgSQL, SQL without BEGIN ATOMIC, any procedural language): a name
 * appears as a word, not inside a longer identifier, in any case; a name
 * spelt with Unicode escapes (U&"t\0061sks") matches no word, so a body
 * holding one may name anything. A name built at run time stays unseen.
 */
CREATE OR REPLACE FUNCTION tenantry.body_names(body text, word text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT body ~* ('(^|[^[:alnum:]_$])'
                    || regexp_replace(word, '([^[:alnum:]_])', '\\\1', 'g')
                    || '($|[^[:alnum:]_$])')
$$;
COMMENT ON FUNCTION tenantry.body_names(text, text) IS 'Internal: whether a function body names a word (an identifier as written, not part of a longer one, in any case), as the doctor''s rules functions and cascade_triggers search bodies. Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.body_names(text, text) TO tenantry_admin, tenantry_server;

CREATE OR REPLACE FUNCTION tenantry.body_escapes_names(body text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT body ~* '(^|[^[:alnum:]_$])u&"'
$$;
COMMENT ON FUNCTION tenantry.body_escapes_names(text) IS 'Internal: whether a function body spells an identifier with Unicode escapes (U&"..."), which no word search finds: the doctor then counts it as naming any table. Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.body_escapes_names(text) TO tenantry_admin, tenantry_server;

/**
 * The column that names a row within its tenant: the one after tenant_id in a
 * primary key (tenant_id, column). Shares name rows by it. NULL: the table has
 * no such key, and its rows cannot be shared.
 */
CREATE OR REPLACE FUNCTION tenantry.row_key_column(tbl regclass)
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.attname
    FROM pg_catalog.pg_constraint k
    JOIN pg_catalog.pg_attribute t ON t.attrelid = k.conrelid AND t.attnum = k.conkey[1]
    JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[2]
    WHERE k.conrelid = tbl AND k.contype = 'p' AND cardinality(k.conkey) = 2 AND t.attname = 'tenant_id'
$$;
COMMENT ON FUNCTION tenantry.row_key_column(regclass) IS 'Internal: the key column of a table whose primary key is (tenant_id, column), which names a shared row; NULL otherwise. Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.row_key_column(regclass) TO tenantry_admin, tenantry_server;

/**
 * The tenant table families (those tier_tables() describes): resources and
 * every adopted plain table with a primary key (tenant_id, one column).
 * Each table looked up by its oid: the catalogs grow with every schema
 * tenant's tables, and a schema tenant's creation calls this
 * (require_schema_tier). PL/pgSQL for its cached plan (a SQL function with a
 * SET clause is planned again at every call), and resources by to_regclass():
 * a plan depends on the tables its constants name, and every schema tenant's
 * table that joins resources would make it be planned again (issue 13).
 */
CREATE OR REPLACE FUNCTION tenantry.table_families()
RETURNS regclass[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- family_templates() says which: one definition of a family.
    RETURN pg_catalog.to_regclass('tenantry.resources') || ARRAY(
        SELECT f.template FROM tenantry.family_templates() f
        WHERE f.template <> pg_catalog.to_regclass('tenantry.resources')
        ORDER BY f.template);
END
$$;
COMMENT ON FUNCTION tenantry.table_families() IS 'Internal: the tenant table families, resources and every adopted plain table keyed (tenant_id, one column), which schema tenants hold a table of (tier_tables() describes them). Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.table_families() TO tenantry_admin, tenantry_server;

/**
 * Foreign keys into a tenant table family (tier_tables(): a schema tenant
 * keeps its rows of it in its own schema's table) from a table that is not
 * one, so keeps every tenant's rows, schema tenants' too, in one table: the
 * key looks only at the pooled table, where a schema tenant's rows are not.
 * tenantry's own tables are tenantry's to keep right.
 */
CREATE OR REPLACE FUNCTION tenantry.tier_breaking_references()
RETURNS TABLE (referencing regclass, constraint_name name, referenced regclass)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    families regclass[];
    family regclass;
    dependents oid[];
BEGIN
    families := tenantry.table_families();
    -- Family by family, through pg_depend's index on the referenced object:
    -- pg_constraint and pg_depend grow with every schema tenant's tables, and
    -- a schema tenant's creation calls this.
    FOREACH family IN ARRAY families LOOP
        -- Two steps, so that each is an index lookup whatever the catalogs'
        -- statistics say (one join was planned as a scan of pg_constraint).
        -- (classid as an expression: its own index lists every constraint's
        -- dependencies, which a BitmapAnd with it would read.)
        SELECT array_agg(d.objid) INTO dependents FROM pg_catalog.pg_depend d
        WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = family
          AND d.classid::int8 = 'pg_catalog.pg_constraint'::regclass::oid::int8;
        RETURN QUERY
        SELECT DISTINCT k.conrelid::regclass, k.conname, k.confrelid::regclass
        FROM pg_catalog.pg_constraint k
        JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE k.oid = ANY (dependents) AND k.contype = 'f' AND k.confrelid = family
          AND k.conrelid <> ALL (families)
          AND n.nspname <> 'tenantry'
          -- Schema tenants' schemas, by their names (the doctor's callers do
          -- not read tenants).
          AND n.nspname !~ '^tenant_[0-9a-f]{20}$'
        ORDER BY 1, 2;
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantry.tier_breaking_references() IS 'Internal: foreign keys into a tenant table family from a table that is not one (it keeps schema tenants'' rows in one table, where the key cannot see their rows of the family, which are in their schemas): schema tenants cannot be made while one exists (require_schema_tier), and the doctor names them when schema tenants exist (rule tiers). Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.tier_breaking_references() TO tenantry_admin, tenantry_server;

/**
 * The adopted table a table stands for: a schema tenant's own table of a
 * family (what an unqualified name means in that tenant's routed session)
 * stands for the adopted table of its family, so that a team's SQL names
 * the same table in either tier; any other table stands for itself.
 */
CREATE OR REPLACE FUNCTION tenantry.adopted_table_of(tbl regclass)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT r.table_id
                     FROM tenantry.tenant_tables r
                     JOIN pg_catalog.pg_class c ON c.oid = tbl
                     JOIN tenantry.tenants t ON t.schema_name = c.relnamespace::regnamespace::text
                     WHERE r.table_id = tenantry.family_of(tbl)),
                    tbl)
$$;
COMMENT ON FUNCTION tenantry.adopted_table_of(regclass) IS 'Internal: the adopted table of the family a schema tenant''s own table is of (share_row, unshare_row, decline_row_share and rows_shared_with_me take either); any other table itself. Not granted.';

/**
 * Drops trigger `name` of `tbl` when it is there. DROP TRIGGER IF EXISTS
 * would do the same, with a NOTICE in the psql session of everyone who
 * adopts or releases a table ("trigger ... does not exist, skipping").
 */
CREATE OR REPLACE FUNCTION tenantry.drop_trigger_if_any(tbl regclass, name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = tbl AND t.tgname = name) THEN
        EXECUTE format('DROP TRIGGER %I ON %s', name, tbl);
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.drop_trigger_if_any(regclass, text) IS 'Internal (adopt_table, release_table, as the owner): drops a trigger of a table when it exists, quietly. Not granted.';

/** The type of a table's row key column, as SQL writes it in a cast. */
CREATE OR REPLACE FUNCTION tenantry.row_key_type(tbl regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.format_type(a.atttypid, a.atttypmod)
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = tenantry.row_key_column(tbl)
$$;
COMMENT ON FUNCTION tenantry.row_key_type(regclass) IS 'Internal: the type of row_key_column(tbl), for casts in dynamic SQL. Not granted.';

/**
 * Trigger on an adopted table with sharing: a row that is deleted, or whose
 * key changes, takes its shares with it (audited as revoked), so that a share
 * never passes to a later row under the same key. Partitions and schema
 * tenants' tables fire it too, for the adopted table (their ancestor, or
 * their family's).
 */
CREATE OR REPLACE FUNCTION tenantry.shared_rows_follow()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- A row's key is made text and read back here: under the caller's settings
-- one key had several spellings (time zones, date and byte styles) and one
-- spelling several keys (01/02/2026 under MDY and DMY), so a share outlived
-- its row, could not be revoked, or named another row (found by an outside
-- review). Pinned, every spelling is the one migration 0055 left.
SET DateStyle = 'ISO, MDY'
SET TimeZone = 'UTC'
SET IntervalStyle = 'postgres'
SET bytea_output = 'hex'
SET extra_float_digits = 1
SET lc_monetary = 'C'
AS $$
DECLARE
    tbl regclass;
    old_key text;
    new_key text;
BEGIN
    -- The adopted table itself, a partition of it, or a schema tenant's table
    -- of its family (found by name: only in a tenant schema).
    SELECT r.table_id INTO tbl
    FROM tenantry.tenant_tables r
    WHERE r.table_id::oid IN (SELECT TG_RELID UNION ALL SELECT a.relid FROM pg_catalog.pg_partition_ancestors(TG_RELID) a);
    IF tbl IS NULL AND TG_TABLE_SCHEMA ~ '^tenant_[0-9a-f]{20}$' THEN
        SELECT r.table_id INTO tbl FROM tenantry.tenant_tables r WHERE r.table_id = tenantry.family_of(TG_RELID);
    END IF;
    IF tbl IS NULL THEN
        RETURN NULL;
    END IF;
    -- Both keys in one statement, the key column looked up once (NEW is NULL
    -- for a DELETE, and so is its key).
    EXECUTE format('SELECT ($1).%1$I::text, ($2).%1$I::text', tenantry.row_key_column(tbl))
        INTO old_key, new_key USING OLD, NEW;
    IF TG_OP = 'UPDATE' AND new_key IS NOT DISTINCT FROM old_key THEN
        RETURN NULL;
    END IF;
    -- By value, not spelling: a share recorded before its spelling was the
    -- row's own (migration 0055) still goes with its row. A recorded key
    -- that no longer reads as the type (an enum label renamed, a domain's
    -- new CHECK) never fails the owner's write: then by spelling alone
    -- (found by a verification review).
    BEGIN
        EXECUTE format('DELETE FROM tenantry.shared_rows s
                        WHERE s.tenant_id = $1 AND s.table_id = $2 AND (s.row_id = $3 OR s.row_id::%s = $3::%1$s)',
                       tenantry.row_key_type(tbl))
            USING OLD.tenant_id, tbl, old_key;
    EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
        DELETE FROM tenantry.shared_rows s
        WHERE s.tenant_id = OLD.tenant_id AND s.table_id = tbl AND s.row_id = old_key;
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.shared_rows_follow() IS 'Trigger on adopted tables with sharing: revokes the shares of a row that is deleted or whose key changes (the row''s own tenant''s shares only).';

/** Trigger on an adopted table with sharing: TRUNCATE revokes every share of its rows. */
CREATE OR REPLACE FUNCTION tenantry.shared_rows_truncated()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    family regclass;
BEGIN
    -- A schema tenant's table: its tenant's shares of rows of the family only.
    family := tenantry.family_of(TG_RELID);
    IF family IS NOT NULL THEN
        DELETE FROM tenantry.shared_rows s
        WHERE s.table_id = family
          AND s.tenant_id = (SELECT t.tenant_id FROM tenantry.tenants t WHERE t.schema_name = TG_TABLE_SCHEMA);
    ELSE
        -- The team's table: the shares of the rows it held (a schema
        -- tenant's rows of a family are in its own table, not truncated).
        DELETE FROM tenantry.shared_rows s
        WHERE s.table_id = TG_RELID::regclass
          AND NOT EXISTS (SELECT 1 FROM tenantry.tenants t
                          WHERE t.tenant_id = s.tenant_id AND t.isolation = 'schema'
                            AND tenantry.family_of(to_regclass(format('%I.%I', t.schema_name, TG_TABLE_NAME))) = TG_RELID);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.shared_rows_truncated() IS 'Trigger on adopted tables with sharing: TRUNCATE (by the table''s owner; tenant roles have no TRUNCATE) revokes the shares of all its rows.';

/** Revokes every share of one adopted table's rows (audited): sharing switched off, or the table released. */
CREATE OR REPLACE FUNCTION tenantry.revoke_table_shares(tbl regclass)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM tenantry.shared_rows s WHERE s.table_id = tbl;
$$;
/**
 * Revokes the shares of a table's rows that a tenant made of a descendant's
 * row (the maker is not the owner): once the table's hierarchy is off, no
 * ancestor reaches those rows, and a share it made would go on handing them
 * (later changes included) to a tenant it chose, past the option that took
 * them from it; the maker could not even revoke it (found by an outside
 * review). Audited as share.revoked. Shares made before migration 0045
 * record no maker and stay, as on re-parenting.
 */
CREATE OR REPLACE FUNCTION tenantry.revoke_ancestor_table_shares(tbl regclass)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM tenantry.shared_rows s WHERE s.table_id = tbl AND s.shared_by_tenant <> s.tenant_id;
$$;
COMMENT ON FUNCTION tenantry.revoke_ancestor_table_shares(regclass) IS 'Internal (adopt_table switching hierarchy off, whose caller may manage the table): revokes the shares of the table''s rows made by an ancestor of their owner. Not granted.';

COMMENT ON FUNCTION tenantry.revoke_table_shares(regclass) IS 'Internal (adopt_table with sharing off, release_table, which check their caller may manage the table): revokes every share of the table''s rows. Not granted.';

/** The names of the write-permission policies an adopted table gets, with their commands. */
CREATE OR REPLACE FUNCTION tenantry.write_permission_policies()
RETURNS TABLE (polname name, command text, polcmd "char")
LANGUAGE sql IMMUTABLE
AS $$
    VALUES ('tenantry_write_permission_insert'::name, 'INSERT', 'a'::"char"),
           ('tenantry_write_permission_update'::name, 'UPDATE', 'w'::"char"),
           ('tenantry_write_permission_delete'::name, 'DELETE', 'd'::"char")
$$;
COMMENT ON FUNCTION tenantry.write_permission_policies() IS 'Internal: the policies (name, command) through which an adopted table with a write_permission is written: each permits its command on the tenant''s rows with that permission (tenant_write_predicate), tenant_isolation then reads only. Granted to the roles that run the doctor (table_problems runs with the caller''s rights).';
GRANT EXECUTE ON FUNCTION tenantry.write_permission_policies() TO tenantry_admin, tenantry_server;

/** The expression of a write-permission policy, as pg_get_expr prints it. */
CREATE OR REPLACE FUNCTION tenantry.write_permission_predicate(permission text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT pg_catalog.format('tenantry.authorize(%L::text)', permission)
$$;
COMMENT ON FUNCTION tenantry.write_permission_predicate(text) IS 'Internal: the policy expression requiring a permission (tenantry.authorize(''<name>''::text)). Granted to the roles that run the doctor, like tenant_table_predicate.';
GRANT EXECUTE ON FUNCTION tenantry.write_permission_predicate(text) TO tenantry_admin, tenantry_server;

/**
 * Raises what PostgreSQL raises for a row a policy refuses (42501, naming
 * the policy), saying which permission the caller lacks. A write policy's
 * WITH CHECK calls it when tenantry.authorize() said no, so that a write
 * refused for the permission is told apart from a row of another tenant
 * (which fails the policy's first condition, before it), as it was when the
 * permission was a restrictive policy of its own. `tenant` is the row's
 * tenant_id, unused: a call of constants alone is one Citus evaluates on
 * the coordinator before the statement runs (measured: it raised for every
 * insert), and a column keeps it on the row.
 */
CREATE OR REPLACE FUNCTION tenantry.write_permission_refused(permission text, policy text, tenant uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'new row violates row-level security policy "%"', policy
        USING ERRCODE = '42501',
              DETAIL = 'Writing it needs the permission ' || permission || ', which the caller does not hold.';
END
$$;
COMMENT ON FUNCTION tenantry.write_permission_refused(text, text, uuid) IS 'Internal: raises 42501 (new row violates row-level security policy "<policy>", the missing permission in DETAIL); the WITH CHECK of an adopted table''s write policies calls it for a row of the tenant''s when tenantry.authorize() refused the permission (tenant: the row''s tenant_id, which keeps Citus from calling it on the coordinator).';
GRANT EXECUTE ON FUNCTION tenantry.write_permission_refused(text, text, uuid)
TO tenantry_app, tenantry_app_own, tenantry_app_shared, tenantry_admin, tenantry_logger;

/**
 * The expression of a write policy of an adopted table with a write
 * permission, as pg_get_expr prints it: the tenant's rows (as
 * tenant_isolation reads them) and the permission, in one permissive
 * policy; for its WITH CHECK (policy named), a refusal of the permission
 * raises (write_permission_refused). Not a restrictive policy beside
 * tenant_isolation for all commands: Citus copies a distributed table's
 * policies to its shards without AS RESTRICTIVE, so on a table adopted on a
 * cluster the permission was one more permissive policy, OR'd with the
 * tenant's, and a member holding it wrote every tenant's rows on the shards
 * (docs/scale-out.md).
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_write_predicate(hierarchy boolean, permission text, policy text DEFAULT NULL)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT '(' || tenantry.tenant_table_predicate(hierarchy) || ' AND '
           || CASE WHEN policy IS NULL THEN tenantry.write_permission_predicate(permission)
                   ELSE pg_catalog.format('(%s OR tenantry.write_permission_refused(%L::text, %L::text, tenant_id))',
                                          tenantry.write_permission_predicate(permission), permission, policy) END
           || ')'
$$;
COMMENT ON FUNCTION tenantry.tenant_write_predicate(boolean, text, text) IS 'Internal: the expression of an adopted table''s write policies with a write permission (the tenant''s rows and tenantry.authorize(''<name>''); with the policy''s name, for WITH CHECK, a refused permission raising through write_permission_refused), as pg_get_expr prints it. Granted to the roles that run the doctor, like tenant_table_predicate.';
GRANT EXECUTE ON FUNCTION tenantry.tenant_write_predicate(boolean, text, text) TO tenantry_admin, tenantry_server;

/**
 * The triggers an adopted table has, each as pg_get_triggerdef prints it
 * (the doctor compares them so: timing, events, columns, level, condition
 * and function): the one that keeps rows in their tenant; on a plain table
 * keyed (tenant_id, column), the schema tier's two (07_schemas.sql: a stale
 * route writes nowhere, a moving tenant's writes are recorded); with sharing
 * and that key, the two that revoke the shares of deleted rows. Names are
 * qualified (search_path pinned to pg_catalog).
 */
CREATE OR REPLACE FUNCTION tenantry.adopted_table_triggers(tbl regclass, sharing boolean)
RETURNS TABLE (tgname name, definition text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.tgname, e.definition
    FROM (SELECT tenantry.row_key_column(tbl) AS key,
                 (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = tbl) AS relkind) k
    CROSS JOIN LATERAL (VALUES
        (1, 'tenantry_keep_tenant_id'::name,
         format('CREATE TRIGGER tenantry_keep_tenant_id BEFORE UPDATE OF tenant_id ON %s FOR EACH ROW EXECUTE FUNCTION tenantry.keep_tenant_id()', tbl),
         true),
        -- A BEFORE trigger of the team's that sets tenant_id (a "stamp the
        -- current tenant" trigger) changes the row after the SET list was
        -- read, and may fire after the one above: this one sees the row as
        -- written. Its condition is checked without a call, so an update
        -- that leaves tenant_id alone pays nothing.
        (6, 'tenantry_keep_tenant_id_written'::name,
         format('CREATE TRIGGER tenantry_keep_tenant_id_written AFTER UPDATE ON %s FOR EACH ROW WHEN ((old.tenant_id IS DISTINCT FROM new.tenant_id)) EXECUTE FUNCTION tenantry.keep_tenant_id()', tbl),
         true),
        (2, 'tenant_tier_lock',
         format('CREATE TRIGGER tenant_tier_lock BEFORE INSERT OR DELETE OR UPDATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION tenantry.tenant_tier_lock()', tbl),
         k.relkind = 'r' AND k.key IS NOT NULL),
        (3, 'tenant_row_home',
         format('CREATE TRIGGER tenant_row_home BEFORE INSERT OR DELETE OR UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION tenantry.tenant_row_home(%L)', tbl, k.key),
         k.relkind = 'r' AND k.key IS NOT NULL),
        (4, 'tenantry_shared_rows_follow',
         format('CREATE TRIGGER tenantry_shared_rows_follow AFTER DELETE OR UPDATE OF %I ON %s FOR EACH ROW EXECUTE FUNCTION tenantry.shared_rows_follow()', coalesce(k.key, '-'), tbl),
         sharing AND k.key IS NOT NULL),
        (5, 'tenantry_shared_rows_truncated',
         format('CREATE TRIGGER tenantry_shared_rows_truncated AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION tenantry.shared_rows_truncated()', tbl),
         sharing AND k.key IS NOT NULL)
    ) e(n, tgname, definition, wanted)
    WHERE e.wanted
    ORDER BY e.n
$$;
COMMENT ON FUNCTION tenantry.adopted_table_triggers(regclass, boolean) IS 'Internal: the triggers an adopted table (with or without sharing) must have, by name with their definitions as pg_get_triggerdef prints them; secure_tenant_table makes them, the doctor (table_problems) compares them. Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.adopted_table_triggers(regclass, boolean) TO tenantry_admin, tenantry_server;

/**
 * Whether a default of another table than tbl draws from the sequence seq
 * (a schema tenant's table of tbl, whose identity column's default is
 * nextval() of tbl's sequence: secure_tenant_copy): the app then needs
 * USAGE on it.
 */
CREATE OR REPLACE FUNCTION tenantry.drawn_by_another_table(seq regclass, tbl regclass)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                   JOIN pg_catalog.pg_attrdef ad ON ad.oid = d.objid
                   WHERE d.classid = 'pg_catalog.pg_attrdef'::regclass
                     AND d.refclassid = 'pg_catalog.pg_class'::regclass
                     AND d.refobjid = seq AND ad.adrelid <> tbl)
$$;
COMMENT ON FUNCTION tenantry.drawn_by_another_table(regclass, regclass) IS 'Internal: whether a default of a table other than tbl (a schema tenant''s table of it) draws from the sequence seq, so that the app needs USAGE on it; secure_tenant_table keeps that grant, the doctor does not name it. Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.drawn_by_another_table(regclass, regclass) TO tenantry_admin, tenantry_server;

/**
 * Forced RLS, the tenant_isolation policy, the write-permission policies
 * (when write_permission is set), the no-move trigger and exactly the grants
 * the app roles need, on an adopted table and every partition of it.
 * Partitions are reached through their parent only: they grant nothing.
 */
CREATE OR REPLACE FUNCTION tenantry.secure_tenant_table(tbl regclass, hierarchy boolean, sharing boolean, write_permission text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    predicate text := tenantry.tenant_table_predicate(hierarchy);
    part regclass;
    seq regclass;
    wp record;
    trg record;
BEGIN
    IF (SELECT relowner FROM pg_catalog.pg_class WHERE oid = tbl) <> 'tenantry_owner'::regrole THEN
        RAISE EXCEPTION '% is not owned by tenantry_owner', tbl USING ERRCODE = 'TN403';
    END IF;
    FOR part IN SELECT * FROM tenantry.table_and_partitions(tbl) LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', part);
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', part);
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = part AND p.polname = 'tenant_isolation') THEN
            EXECUTE format('DROP POLICY tenant_isolation ON %s', part);
        END IF;
        -- With a write permission, tenant_isolation reads and each write
        -- policy writes the tenant's rows with the permission: permissive
        -- policies all (tenant_write_predicate says why not restrictive).
        IF write_permission IS NULL THEN
            EXECUTE format('CREATE POLICY tenant_isolation ON %s FOR ALL TO tenantry_app_own USING %s WITH CHECK %s',
                           part, predicate, predicate);
        ELSE
            EXECUTE format('CREATE POLICY tenant_isolation ON %s FOR SELECT TO tenantry_app_own USING %s',
                           part, predicate);
        END IF;
        EXECUTE format('COMMENT ON POLICY tenant_isolation ON %s IS %L', part,
                       format('tenantry: a tenant %s its own rows%s; no tenant set: nothing.%s',
                              CASE WHEN write_permission IS NULL THEN 'reads and writes' ELSE 'reads' END,
                              CASE WHEN hierarchy THEN ' and its descendants'' rows' ELSE ' only' END,
                              CASE WHEN write_permission IS NOT NULL
                                   THEN ' Writes go through the write-permission policies.' ELSE '' END));
        FOR wp IN SELECT * FROM tenantry.write_permission_policies() LOOP
            IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = part AND p.polname = wp.polname) THEN
                EXECUTE format('DROP POLICY %I ON %s', wp.polname, part);
            END IF;
            IF write_permission IS NOT NULL THEN
                EXECUTE format('CREATE POLICY %I ON %s FOR %s TO tenantry_app_own%s%s',
                               wp.polname, part, wp.command,
                               CASE WHEN wp.command <> 'INSERT'
                                    THEN ' USING ' || tenantry.tenant_write_predicate(hierarchy, write_permission) ELSE '' END,
                               CASE WHEN wp.command <> 'DELETE'
                                    THEN ' WITH CHECK ' || tenantry.tenant_write_predicate(hierarchy, write_permission, wp.polname) ELSE '' END);
                EXECUTE format('COMMENT ON POLICY %I ON %s IS %L', wp.polname, part,
                               format('tenantry: %s of the tenant''s rows (as tenant_isolation reads them), with the permission %s (tenantry.authorize).', wp.command, write_permission));
            END IF;
        END LOOP;
        EXECUTE format('REVOKE ALL ON TABLE %s FROM PUBLIC, tenantry_app, tenantry_app_own, tenantry_app_shared, '
                       'tenantry_admin, tenantry_logger, tenantry_server', part);
    END LOOP;
    -- The triggers an adopted table needs (adopted_table_triggers), made as
    -- the doctor expects them; those its options no longer call for go.
    FOR trg IN SELECT * FROM tenantry.adopted_table_triggers(tbl, sharing) LOOP
        EXECUTE replace(trg.definition, 'CREATE TRIGGER ', 'CREATE OR REPLACE TRIGGER ');
    END LOOP;
    FOR trg IN
        SELECT n.tgname FROM (VALUES ('tenant_tier_lock'::name), ('tenant_row_home'),
                                     ('tenantry_shared_rows_follow'), ('tenantry_shared_rows_truncated')) n(tgname)
        WHERE n.tgname NOT IN (SELECT e.tgname FROM tenantry.adopted_table_triggers(tbl, sharing) e)
    LOOP
        PERFORM tenantry.drop_trigger_if_any(tbl, trg.tgname);
    END LOOP;
    -- Without its key (the doctor reports it) no trigger can name the row,
    -- and without sharing no row is shared.
    IF NOT (sharing AND tenantry.row_key_column(tbl) IS NOT NULL) THEN
        -- On Citus, a table not distributed yet has no shares, and the
        -- workers, which hold the shares, could not even name it.
        IF NOT (tenantry.citus_distributed() AND NOT tenantry.citus_table(tbl)) THEN
            PERFORM tenantry.revoke_table_shares(tbl);
        END IF;
    END IF;
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO tenantry_app_own', tbl);
    -- Serial columns: inserts call nextval() with the caller's rights.
    -- Identity columns' sequences are advanced without a check, so they get
    -- no grant (found by an outside review: USAGE showed any tenant every
    -- tenant's count of inserts, pg_sequences.last_value, and let it advance
    -- them, an int4 one to its end, for every tenant); taken back from
    -- tables adopted before.
    -- Schema tenants' tables of it draw from its identity sequences through
    -- a default (secure_tenant_copy), which does need USAGE: kept while one
    -- does (found by a review of this change: adopting again broke their
    -- inserts).
    FOR seq IN
        SELECT * FROM tenantry.owned_sequences(tbl)
    LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM PUBLIC', seq);
        IF NOT tenantry.drawn_by_another_table(seq, tbl) THEN
            EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM tenantry_app_own', seq);
        END IF;
    END LOOP;
    FOR seq IN
        SELECT * FROM tenantry.serial_sequences(tbl)
    LOOP
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO tenantry_app_own', seq);
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantry.secure_tenant_table(regclass, boolean, boolean, text) IS 'Internal: forced RLS, the tenant_isolation policy, the write-permission policies, the keep_tenant_id trigger, with sharing the triggers that revoke the shares of deleted rows, and the app roles'' grants on an adopted table (owned by tenantry_owner) and its partitions. Idempotent. Not granted.';

/**
 * Whether PUBLIC holds a privilege (NULL: any) on a relation, on the whole
 * of it or on any of its columns (a column grant reads or writes as much of
 * a view as the columns hold).
 */
CREATE OR REPLACE FUNCTION tenantry.granted_to_public(rel oid, privilege text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) acl
                   WHERE c.oid = rel AND acl.grantee = 0
                     AND (privilege IS NULL OR acl.privilege_type = privilege))
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a, pg_catalog.aclexplode(a.attacl) acl
                   WHERE a.attrelid = rel AND a.attacl IS NOT NULL AND NOT a.attisdropped AND acl.grantee = 0
                     AND (privilege IS NULL OR acl.privilege_type = privilege))
$$;
/**
 * Which of the roles were granted a privilege (NULL: any) on a relation by
 * name, on the whole of it or on one of its columns.
 */
CREATE OR REPLACE FUNCTION tenantry.granted_by_name(rel oid, privilege text, roles text[])
RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT DISTINCT acl.grantee::regrole::text
    FROM (SELECT c.relacl AS acl FROM pg_catalog.pg_class c WHERE c.oid = rel
          UNION ALL
          SELECT a.attacl FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = rel AND a.attacl IS NOT NULL AND NOT a.attisdropped) x
    CROSS JOIN LATERAL pg_catalog.aclexplode(x.acl) acl
    WHERE acl.grantee <> 0 AND acl.grantee::regrole::text = ANY (roles)
      AND (privilege IS NULL OR acl.privilege_type = privilege)
$$;
COMMENT ON FUNCTION tenantry.granted_by_name(oid, text, text[]) IS 'Internal (the doctor): the roles among roles granted the privilege (NULL: any) on the relation or one of its columns by name. Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.granted_by_name(oid, text, text[]) TO tenantry_admin, tenantry_server;

COMMENT ON FUNCTION tenantry.granted_to_public(oid, text) IS 'Internal (the doctor): whether PUBLIC holds the privilege (NULL: any) on the relation or on one of its columns. Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.granted_to_public(oid, text) TO tenantry_admin, tenantry_server;

/**
 * The adopted tables linked to `tbl` by foreign keys between adopted
 * tables, either way and at any distance, `tbl` included: what must switch
 * the hierarchy option together (the doctor's fix for rule hierarchy).
 */
CREATE OR REPLACE FUNCTION tenantry.linked_tenant_tables(tbl regclass)
RETURNS regclass[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE edges AS (
        SELECT k.conrelid AS a, k.confrelid AS b
        FROM pg_catalog.pg_constraint k
        WHERE k.contype = 'f' AND k.conrelid <> k.confrelid
          AND k.conrelid IN (SELECT r.table_id FROM tenantry.tenant_tables r)
          AND k.confrelid IN (SELECT r.table_id FROM tenantry.tenant_tables r)
    ), linked(rel) AS (
        SELECT tbl::oid
        UNION
        SELECT CASE WHEN e.a = l.rel THEN e.b ELSE e.a END
        FROM linked l JOIN edges e ON l.rel IN (e.a, e.b)
    )
    SELECT array_agg(l.rel::regclass ORDER BY l.rel::regclass::text) FROM linked l
$$;
COMMENT ON FUNCTION tenantry.linked_tenant_tables(regclass) IS 'The adopted tables linked to one by foreign keys between adopted tables, either way and at any distance, itself included: the tables that switch the hierarchy option together (the doctor''s fix for rule hierarchy). Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.linked_tenant_tables(regclass) TO tenantry_admin, tenantry_server;

/** The adopt_table call that adopts a table with these options, as the doctor's fixes print it. */
CREATE OR REPLACE FUNCTION tenantry.adopt_statement(table_name text, hierarchy boolean, sharing boolean, write_permission text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('SELECT tenantry.adopt_table(%L, hierarchy => %s, sharing => %s%s);',
                  table_name, hierarchy::text, sharing::text,
                  CASE WHEN write_permission IS NOT NULL
                       THEN format(', write_permission => %L', write_permission) ELSE '' END)
$$;
COMMENT ON FUNCTION tenantry.adopt_statement(text, boolean, boolean, text) IS 'The adopt_table call, with every option written out, that the doctor''s fixes print to adopt a table (again) as it was adopted. Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.adopt_statement(text, boolean, boolean, text) TO tenantry_admin, tenantry_server;

/**
 * tenantry's own tenant table family named like tbl (tenantry.resources),
 * or NULL: a schema tenant's table of it holds the name in the tenant's
 * schema, first on its search path, so that tbl's name, unqualified, names
 * that table in the tenant's statements. (Two adopted tables of one name
 * in two schemas are allowed: the first adopted is the family, and the
 * second, named qualified, keeps every tenant's rows.)
 */
CREATE OR REPLACE FUNCTION tenantry.family_name_clash(tbl regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f::text FROM unnest(tenantry.table_families()) WITH ORDINALITY AS x(f, i)
    JOIN pg_catalog.pg_class c ON c.oid = x.f
    WHERE c.relname = (SELECT t.relname FROM pg_catalog.pg_class t WHERE t.oid = tbl)
      AND x.f <> tbl
      AND c.relnamespace = 'tenantry'::regnamespace
    ORDER BY x.i
    LIMIT 1
$$;
COMMENT ON FUNCTION tenantry.family_name_clash(regclass) IS 'Internal: tenantry''s own tenant table family (tenantry.resources) named like the table, whose schema tenants'' tables hold that name in their schemas, first on their search path; NULL when none. adopt_table refuses such a table, the doctor names one adopted before (rule name). Granted to the roles that run the doctor.';
REVOKE ALL ON FUNCTION tenantry.family_name_clash(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantry.family_name_clash(regclass) TO tenantry_admin, tenantry_server;

/**
 * Serial columns of adopted tables whose sequence the app roles may use (an
 * insert's default calls nextval() as the inserting role, so adoption grants
 * it): every tenant can read how many rows all tenants inserted
 * (pg_sequences.last_value) and advance the sequence. No rule the doctor
 * fails on (the team chose the column; the rows stay isolated), but adoption
 * said it only in a NOTICE, which migration tools do not show (found by a
 * review of migration tools): tenantry doctor prints each as a note. The fix
 * makes the column an identity column in one transaction, continuing from
 * the old sequence, with the schema tenants' tables of it drawing from the
 * new one (a recipe that dropped the sequence failed while they used it).
 */
CREATE OR REPLACE FUNCTION tenantry.shared_sequences()
RETURNS TABLE (table_name text, column_name text, sequence_name text, fix text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT x.tbl, x.col, x.seq,
           CASE WHEN x.identity AND NOT x.drawn THEN
           -- Granted by hand (GRANT ... ON ALL SEQUENCES): an identity
           -- column needs no grant (found by a review: the note said only
           -- other keys end it).
           format('REVOKE ALL ON SEQUENCE %s FROM PUBLIC, tenantry_app, tenantry_app_own, tenantry_app_shared; -- granted by hand: inserts draw from an identity column''s sequence without it', x.seq)
           WHEN x.identity THEN
           -- An identity column's sequence is granted only while schema
           -- tenants' tables of it draw from it through a default, which
           -- needs the grant: nothing but other keys ends that (found by a
           -- review: the serial fix left it so, and the note went silent).
           '-- none while schema tenants'' tables of it draw from its sequence (their default needs the grant): key its rows by uuid to end it'
           ELSE
           -- Renamed and let go of (pg_get_serial_sequence would name it
           -- still), then dropped once nothing draws from it.
           format('BEGIN; ALTER SEQUENCE %3$s RENAME TO %4$I; ALTER SEQUENCE %5$s OWNED BY NONE; '
                  'ALTER TABLE %1$s ALTER COLUMN %2$I DROP DEFAULT; '
                  'ALTER TABLE %1$s ALTER COLUMN %2$I ADD GENERATED BY DEFAULT AS IDENTITY; '
                  'SET LOCAL ROLE tenantry_owner; '
                  'SELECT setval(pg_get_serial_sequence(%6$L, %7$L), greatest((SELECT last_value FROM %5$s), (SELECT max(%2$I) FROM %1$s))); '
                  'DO $d$ DECLARE s text := pg_get_serial_sequence(%6$L, %7$L); c regclass; BEGIN '
                  'FOR c IN SELECT f.copy FROM tenantry.family_copies() f WHERE f.template = %6$L::regclass LOOP '
                  'EXECUTE format(''ALTER TABLE %%s ALTER COLUMN %%I SET DEFAULT nextval(%%L::regclass)'', c, %7$L, s); '
                  'EXECUTE format(''GRANT USAGE ON SEQUENCE %%s TO tenantry_app_own'', s); END LOOP; END $d$; '
                  'RESET ROLE; DROP SEQUENCE %5$s; SELECT tenantry.adopt_table(%6$L); COMMIT; '
                  '-- as the role that adopted the table; or key its rows by uuid',
                  x.tbl, x.col, x.seq, x.old_name, x.old, x.tbl, x.col) END
    FROM (
        SELECT format('%I.%I', cn.nspname, c.relname) AS tbl, a.attname::text AS col,
               format('%I.%I', qn.nspname, q.relname) AS seq,
               left(q.relname, 56) || '_serial' AS old_name,
               format('%I.%I', qn.nspname, left(q.relname, 56) || '_serial') AS old,
               d.deptype = 'i' AS identity,
               tenantry.drawn_by_another_table(q.oid::regclass, c.oid::regclass) AS drawn
        FROM tenantry.tenant_tables t
        JOIN pg_catalog.pg_class c ON c.oid = t.table_id
        JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
        JOIN pg_catalog.pg_depend d ON d.refobjid = c.oid AND d.deptype IN ('a', 'i')
             AND d.classid = 'pg_catalog.pg_class'::regclass
             AND d.refclassid = 'pg_catalog.pg_class'::regclass
        JOIN pg_catalog.pg_class q ON q.oid = d.objid AND q.relkind = 'S'
        JOIN pg_catalog.pg_namespace qn ON qn.oid = q.relnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
        -- Guarded: the planner may test rows of other kinds first.
        WHERE CASE WHEN q.relkind = 'S'
                   THEN pg_catalog.has_sequence_privilege('tenantry_app', q.oid, 'USAGE') END
    ) x
    ORDER BY 1, 2
$$;
COMMENT ON FUNCTION tenantry.shared_sequences() IS 'Notes of tenantry doctor: serial and identity columns of adopted tables whose sequence the app roles may use, so that any tenant can read how many rows all tenants inserted and advance it; for a serial column, the statements (one transaction, as the role that adopted the table) that make it an identity column continuing from the old sequence, the schema tenants'' tables of it drawing from the new one; for an identity column (granted while schema tenants'' tables draw from it), that only other keys end it. Not granted (the owner''s members run it).';
REVOKE EXECUTE ON FUNCTION tenantry.shared_sequences() FROM PUBLIC;

/**
 * Whether role `member` can use what role `target` may: by inheritance, or
 * after SET ROLE (SQL injected into an app runs one). From PostgreSQL 16 a
 * membership may grant neither (WITH INHERIT FALSE, SET FALSE: a role made
 * by a CREATEROLE role is granted to it that way), which pg_has_role's
 * MEMBER still counts (found by a review of rule login_roles: such a login
 * was judged as acting for tenants).
 */
CREATE OR REPLACE FUNCTION tenantry.can_become(member oid, target oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 160000
                THEN pg_catalog.pg_has_role(member, target, 'USAGE') OR pg_catalog.pg_has_role(member, target, 'SET')
                ELSE pg_catalog.pg_has_role(member, target, 'MEMBER') END
$$;
COMMENT ON FUNCTION tenantry.can_become(oid, oid) IS 'The doctor''s reach of a role: whether member uses target''s privileges by inheritance or may SET ROLE to it (PostgreSQL 16''s memberships that grant neither do not count; before 16 any membership does).';
REVOKE EXECUTE ON FUNCTION tenantry.can_become(oid, oid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantry.can_become(oid, oid) TO tenantry_admin, tenantry_server;

/**
 * The doctor's findings: every rule an adopted table (or, with tbl, that one
 * table) must satisfy and does not, with the SQL that fixes it, in the order
 * the fixes run. table_problems (below) is what callers read: the same rows
 * with how much each one matters.
 */
CREATE OR REPLACE FUNCTION tenantry.table_findings(tbl regclass DEFAULT NULL)
RETURNS TABLE (table_name text, rule text, problem text, fix text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    part record;
    pol record;
    readopt text;
    tenant_col smallint;
    -- tenantry's roles that act for tenants or for the server.
    acting_roles text[] := ARRAY['tenantry_app', 'tenantry_app_own', 'tenantry_app_shared',
                                 'tenantry_admin', 'tenantry_logger', 'tenantry_server'];
    -- Problems whose fix is adopting the table again, as (table, rule,
    -- problem, fix) quadruples: returned after the others, so that the fixes
    -- run top to bottom work (adopt_table refuses while another rule is
    -- broken, and repairs everything these name).
    later text[] := '{}';
    -- The logins that act for tenants: members of tenantry's app roles
    -- (the narrow ones too), admin or logger role. Logins that are operators (members of tenantry_owner,
    -- superusers, BYPASSRLS) are not such logins: the boot check refuses
    -- them as the server's.
    acting_logins oid[];
    -- Every role such a login can become with SET ROLE (SQL injected into
    -- the app runs one), tenantry's among them: a grant to any of them
    -- reaches tenant rows as surely as a grant to tenantry_app.
    granted_roles text[];
    -- Who may read a view, call a function, ...: tenantry's roles that may,
    -- and the other granted_roles that were granted it by name (not those
    -- that hold it through PUBLIC or as members of tenantry's roles: named
    -- as those).
    other_roles text[];
    left_behind bigint;
    -- The table, its partitions, and the views and materialized views that
    -- hand its rows on to what reads them with a bypassing owner's rights.
    reach oid[];
    reach_via oid[];
    -- Those of reach that hand on every tenant's rows (reach_via not NULL).
    leaky oid[];
    renamed_col name;
    sharded boolean;
    -- Roles whose rights bypass row level security, read once here: on a
    -- Citus coordinator a statement that joins pg_roles and also reads a
    -- reference table (the registry) is planned by Citus, which checks
    -- pg_authid under the view with the caller's rights (permission
    -- denied for the server's login: found running the doctor as it on a
    -- cluster).
    bypassing oid[] := ARRAY(SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolsuper OR o.rolbypassrls);
    -- The tables under tenantry's guard (adopted ones with their partitions,
    -- tenantry's own under row level security), read once apart for the
    -- same reason: rule cascade_triggers searches functions for them.
    guarded oid[] := ARRAY(
        SELECT r.p FROM tenantry.tenant_tables tt
        CROSS JOIN LATERAL tenantry.table_and_partitions(tt.table_id) r(p)
        UNION
        SELECT o.oid FROM pg_catalog.pg_class o
        WHERE o.relnamespace = 'tenantry'::regnamespace AND o.relkind IN ('r', 'p') AND o.relrowsecurity);
BEGIN
    acting_logins := ARRAY(
        SELECT l.oid FROM pg_catalog.pg_roles l
        WHERE l.rolcanlogin AND NOT l.rolsuper AND NOT l.rolbypassrls
          AND NOT tenantry.can_become(l.oid, 'tenantry_owner'::regrole)
          AND (tenantry.can_become(l.oid, 'tenantry_app'::regrole)
               OR tenantry.can_become(l.oid, 'tenantry_app_own'::regrole)
               OR tenantry.can_become(l.oid, 'tenantry_app_shared'::regrole)
               OR tenantry.can_become(l.oid, 'tenantry_admin'::regrole)
               OR tenantry.can_become(l.oid, 'tenantry_logger'::regrole))
        ORDER BY l.rolname);
    granted_roles := ARRAY(
        SELECT DISTINCT r.oid::regrole::text
        FROM pg_catalog.pg_roles r
        WHERE r.rolname::text = ANY (acting_roles)
           OR EXISTS (SELECT 1 FROM unnest(acting_logins) l(oid)
                      WHERE tenantry.can_become(l.oid, r.oid))
        ORDER BY 1);
    other_roles := ARRAY(SELECT g.name FROM unnest(granted_roles) g(name) WHERE g.name <> ALL (acting_roles));
    FOR t IN
        SELECT r.table_id, r.hierarchy, r.sharing, r.write_permission, c.oid IS NOT NULL AS present,
               r.adopted_as, pg_catalog.parse_ident(r.adopted_as) AS adopted_parts,
               n.nspname, c.relname
        FROM tenantry.tenant_tables r
        LEFT JOIN pg_catalog.pg_class c ON c.oid = r.table_id::oid
        LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE tbl IS NULL OR r.table_id = tbl
        ORDER BY r.table_id::text
    LOOP
        table_name := coalesce(t.adopted_as, t.table_id::text);
        IF NOT t.present THEN
            rule := 'exists';
            problem := format('adopted table %s (oid %s) no longer exists', coalesce(t.adopted_as, '?'), t.table_id::oid);
            -- Schema tenants' tables of it outlive it (a table adopted
            -- later under its name would take them): release_table drops
            -- them with its record, or says which still hold rows.
            left_behind := (SELECT count(*) FROM tenantry.leftover_tables(t.adopted_parts[2]));
            IF left_behind > 0 THEN
                problem := problem || format('; %s schema tenant table(s) of it remain', left_behind);
            END IF;
            -- Its options go with its record: when a table has its name
            -- again (dropped and made anew), adopted with them; else they
            -- are named for when it is (found by an outside review: adopted
            -- again with the defaults, a table without hierarchy gained it
            -- and lost its write permission).
            fix := format('SELECT tenantry.release_table(%s);', t.table_id::oid);
            IF t.adopted_as IS NOT NULL THEN
                fix := fix || CASE
                    WHEN to_regclass(t.adopted_as) IN (SELECT r.table_id FROM tenantry.tenant_tables r)
                    THEN ''  -- adopted again already
                    WHEN to_regclass(t.adopted_as) IS NOT NULL
                    THEN ' ' || tenantry.adopt_statement(t.adopted_as, t.hierarchy, t.sharing, t.write_permission)
                         || ' -- the table of its name now, made anew, adopted with the options it had (leave this out if it is another table that must not be a tenant table)'
                    ELSE ' -- if you make it again: ' || tenantry.adopt_statement(t.adopted_as, t.hierarchy, t.sharing, t.write_permission)
                    END;
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;
        table_name := t.table_id::text;
        -- Renamed, or moved to another schema, since its adoption: schema
        -- tenants' tables of it are found by its name and the tenant-schema
        -- steps recorded for it name it, so they are left behind (found by
        -- an outside review: a schema tenant's rows split between its old
        -- table and the team's renamed one, and tenantry migrate failed).
        -- Harmless while no schema tenant exists (every one has a table of
        -- resources in its schema; the catalog says so to every role that
        -- runs the doctor): adopting it again then records the new name.
        IF t.adopted_as IS DISTINCT FROM format('%I.%I', t.nspname, t.relname) AND t.adopted_as IS NOT NULL
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                       WHERE c.relname = 'resources' AND n.nspname ~ '^tenant_[0-9a-f]{20}$') THEN
            rule := 'renamed';
            problem := format('was adopted as %s and renamed or moved since, which tenantry does not follow: schema tenants'' tables of it are found by that name, and the tenant-schema steps recorded for it name it',
                              t.adopted_as);
            fix := concat_ws(' ',
                CASE WHEN t.adopted_parts[1] <> t.nspname
                     THEN format('ALTER TABLE %s SET SCHEMA %I;', t.table_id, t.adopted_parts[1]) END,
                CASE WHEN t.adopted_parts[2] <> t.relname
                     THEN format('ALTER TABLE %I.%I RENAME TO %I;', t.adopted_parts[1], t.relname, t.adopted_parts[2]) END);
            RETURN NEXT;
        END IF;
        -- Named like tenantry's own tenant table (adopted before adopt_table
        -- refused it, or renamed since): see adopt_table. Released, renamed
        -- and adopted again under the new name with its options.
        IF t.table_id <> pg_catalog.to_regclass('tenantry.resources') THEN
            readopt := tenantry.family_name_clash(t.table_id);
            IF readopt IS NOT NULL THEN
                rule := 'name';
                problem := format('is named like the tenant table %s, and a schema tenant keeps its table of that one under the name in its own schema, first on its search path: its statements naming %I reach that table, not this one',
                                  readopt, t.relname);
                fix := format('SELECT tenantry.release_table(%L); ALTER TABLE %s RENAME TO %I; %s -- rename it in the statements that name it too',
                              t.table_id::text, t.table_id, t.relname || '_' || t.nspname,
                              tenantry.adopt_statement(format('%I.%I', t.nspname, t.relname || '_' || t.nspname),
                                                       t.hierarchy, t.sharing, t.write_permission));
                RETURN NEXT;
            END IF;
        END IF;
        -- Adopted with sharing on a Citus cluster (before adopt_table refused
        -- it there, check_adopt_options): shares name the table by an object
        -- id the shards' nodes do not share, so they reach nobody. Fixed by
        -- adopting it again without sharing, which is also how every other
        -- fix below adopts it again.
        -- Read from Citus's catalog here, as the rule on restrictive
        -- policies below does: the doctor runs with its caller's rights, and
        -- tenantry.citus_distributed() is granted to no role.
        sharded := false;
        IF t.sharing AND to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
            EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition d
                                    WHERE d.logicalrelid = $1 AND d.partmethod = ''h'')'
                INTO sharded USING t.table_id;
        END IF;
        IF sharded THEN
            rule := 'citus_sharing';
            problem := 'is adopted with sharing on a Citus cluster, where a share names its table by an object id that differs on every node: no tenant reads a row shared with it';
            fix := tenantry.adopt_statement(t.table_id::text, t.hierarchy, false, t.write_permission);
            RETURN NEXT;
            readopt := fix;
        ELSE
            readopt := tenantry.adopt_statement(t.table_id::text, t.hierarchy, t.sharing, t.write_permission);
        END IF;

        SELECT a.attnum INTO tenant_col
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = t.table_id AND a.attname = 'tenant_id' AND NOT a.attisdropped
          AND a.atttypid = 'uuid'::regtype AND a.attnotnull;
        IF tenant_col IS NULL THEN
            rule := 'tenant_id';
            -- Renamed: tenantry's policy follows the column, every other
            -- rule (and the server) names tenant_id, and their fixes would
            -- drop keys and adopt nothing (found by an outside review).
            renamed_col := (
                SELECT a.attname
                FROM pg_catalog.pg_policy tp
                JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_policy'::regclass AND d.objid = tp.oid
                     AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = t.table_id AND d.refobjsubid > 0
                JOIN pg_catalog.pg_attribute a ON a.attrelid = t.table_id AND a.attnum = d.refobjsubid
                WHERE tp.polrelid = t.table_id AND tp.polname = 'tenant_isolation'
                  AND a.atttypid = 'uuid'::regtype AND NOT a.attisdropped
                  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute x
                                  WHERE x.attrelid = t.table_id AND x.attname = 'tenant_id' AND NOT x.attisdropped)
                ORDER BY a.attnum LIMIT 1);
            IF renamed_col IS NOT NULL THEN
                problem := format('has no tenant_id column: it was renamed to %I (tenantry''s policy follows it; its other rules, the server and schema tenants name tenant_id, and are checked once it has its name again)',
                                  renamed_col);
                fix := format('ALTER TABLE %s RENAME COLUMN %I TO tenant_id;', t.table_id, renamed_col);
                RETURN NEXT;
                CONTINUE;
            END IF;
            problem := 'has no tenant_id uuid NOT NULL column';
            fix := format('ALTER TABLE %s ALTER COLUMN tenant_id SET NOT NULL;', t.table_id);
            RETURN NEXT;
        END IF;
        -- The default that gives a row its caller's tenant, dropped (what an
        -- ORM's schema sync does when its model has none): every insert
        -- that leaves tenant_id out fails, refused by the policy (42501) as
        -- if the caller lacked a permission (found by a review adopting a
        -- team's existing schema).
        IF tenant_col IS NOT NULL AND pg_catalog.pg_get_expr(
               (SELECT d.adbin FROM pg_catalog.pg_attrdef d WHERE d.adrelid = t.table_id AND d.adnum = tenant_col),
               t.table_id) IS DISTINCT FROM 'tenantry.current_tenant_id()' THEN
            rule := 'tenant_default';
            problem := 'tenant_id''s default is not tenantry.current_tenant_id(): inserts that leave it out fail (42501, refused by the policy) instead of taking the caller''s tenant';
            fix := format('ALTER TABLE %s ALTER COLUMN tenant_id SET DEFAULT tenantry.current_tenant_id();', t.table_id);
            RETURN NEXT;
        END IF;

        -- A serial column added after adoption draws from a sequence that
        -- adopting never granted: every insert that leaves it out fails
        -- (found by an outside review: an outage the doctor did not name).
        -- Adopting again grants it (and the shared-sequence note then says
        -- how to make it an identity column).
        RETURN QUERY
            SELECT t.table_id::text, 'sequence_usage'::text,
                   format('column %I draws from sequence %s, which tenantry''s app roles may not use: every insert that leaves the column out fails (permission denied for sequence)',
                          a.attname, q.oid::regclass),
                   readopt || ' -- adopting again grants it'
            FROM pg_catalog.pg_depend d
            JOIN pg_catalog.pg_class q ON q.oid = d.objid AND q.relkind = 'S'
            JOIN pg_catalog.pg_attribute a ON a.attrelid = t.table_id AND a.attnum = d.refobjsubid
            WHERE d.classid = 'pg_catalog.pg_class'::regclass
              AND d.refclassid = 'pg_catalog.pg_class'::regclass
              AND d.refobjid = t.table_id AND d.deptype = 'a'
              -- Guarded: the planner may test rows of other kinds first.
              AND NOT CASE WHEN q.relkind = 'S'
                           THEN pg_catalog.has_sequence_privilege('tenantry_app_own', q.oid, 'USAGE') END
            ORDER BY 3;
        -- PostgreSQL applies restrictive policies before the permissive
        -- ones (a security level of their own), so a team's restrictive
        -- condition runs on every tenant's rows before tenantry's policy
        -- has left out other tenants': a function in it that is not
        -- leakproof and may fail on a value (a cast through text, numeric
        -- input) puts another tenant's value in the error (found by an
        -- outside review: invalid input syntax for type numeric:
        -- "ACME-SECRET-PLAN"). tenantry's own (tenantry.authorize(...))
        -- read no column. A warning: the doctor cannot tell a function
        -- that fails from one that never does.
        RETURN QUERY
            SELECT t.table_id::text, 'restrictive_policy'::text,
                   format('restrictive policy %I on %s runs on every tenant''s rows before tenantry''s policy (PostgreSQL applies restrictive policies first) and applies to their columns %s, not leakproof: an error it raises on another tenant''s value (a failed cast: invalid input syntax ...) shows that value to the tenant reading',
                          rp.polname, rp.polrelid::regclass, fns.names),
                   format('-- keep its condition to leakproof comparisons, which cannot fail (=, <, <> on the column''s own type), or tenantry.authorize(...); or drop it and filter in your queries: DROP POLICY %I ON %s;',
                          rp.polname, rp.polrelid::regclass)
            FROM tenantry.table_and_partitions(t.table_id) tp(p)
            JOIN pg_catalog.pg_policy rp ON rp.polrelid = tp.p AND NOT rp.polpermissive AND rp.polqual IS NOT NULL
            CROSS JOIN LATERAL (
                SELECT string_agg(x.name, ', ' ORDER BY x.name) AS names
                FROM (SELECT DISTINCT f.oid::regprocedure::text AS name
                      FROM regexp_matches(rp.polqual::text, ':(?:funcid|opfuncid) ([0-9]+)', 'g') m
                      JOIN pg_catalog.pg_proc f ON f.oid = m[1]::oid
                      -- (tenantry's own, authorize(...), take no row's value)
                      WHERE NOT f.proleakproof AND f.pronamespace <> 'tenantry'::regnamespace
                      UNION
                      SELECT 'a cast through text' WHERE rp.polqual::text ~ '\{COERCEVIAIO ') x) fns
            WHERE rp.polqual::text ~ '\{VAR ' AND fns.names IS NOT NULL
            ORDER BY 3;

        IF NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_constraint k
            WHERE k.conrelid = t.table_id AND k.contype = 'f' AND k.convalidated
              AND k.confrelid = 'tenantry.tenants'::regclass
              AND k.conkey = ARRAY[tenant_col]
        ) THEN
            rule := 'tenant_fk';
            problem := 'tenant_id does not reference tenantry.tenants (validated)';
            later := later || ARRAY[table_name, rule, problem, readopt];
        END IF;

        IF EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = t.table_id) THEN
            rule := 'standalone';
            problem := 'has become a partition or inheritance child of another table';
            fix := format('ALTER TABLE %s NO INHERIT or DETACH PARTITION, or release_table() it and adopt its parent', t.table_id);
            RETURN NEXT;
        END IF;
        -- An inheritance child (not a partition: those are checked below as
        -- parts of it) is read with the table, under its policies, but is
        -- a table of its own without them: rows written there directly, for
        -- any tenant, show up as that tenant's. Schema tenants' tables of
        -- resources are children by design (07_schemas.sql), and checked
        -- with them.
        -- (Schema tenants' tables of an adopted table stand alone since
        -- 0036: one that inherits it is named too.)
        RETURN QUERY
            SELECT i.inhrelid::regclass::text, 'children'::text,
                   format('inherits from %s without being a partition or a schema tenant''s table: it has no row level security of its own, and its rows are read as %s''s',
                          i.inhparent::regclass, i.inhparent::regclass),
                   format('ALTER TABLE %s NO INHERIT %s;', i.inhrelid::regclass, i.inhparent::regclass)
            FROM pg_catalog.pg_inherits i
            JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE i.inhparent IN (SELECT p.p FROM tenantry.table_and_partitions(t.table_id) p(p))
              AND NOT c.relispartition
            ORDER BY 1;

        FOR part IN
            SELECT p.p AS rel, c.relrowsecurity, c.relforcerowsecurity, c.relowner, c.relacl, c.relpersistence
            FROM tenantry.table_and_partitions(t.table_id) p(p)
            JOIN pg_catalog.pg_class c ON c.oid = p.p
        LOOP
            -- As adopt_table refuses it: a crash would lose acknowledged rows.
            IF part.relpersistence = 'u' THEN
                table_name := part.rel::text; rule := 'unlogged';
                problem := 'is unlogged, so a crash would lose acknowledged rows';
                fix := format('ALTER TABLE %s SET LOGGED;', part.rel);
                RETURN NEXT;
            END IF;
            IF NOT part.relrowsecurity OR NOT part.relforcerowsecurity THEN
                table_name := part.rel::text; rule := 'rls';
                problem := 'row level security is not enabled and forced';
                fix := format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY; ALTER TABLE %s FORCE ROW LEVEL SECURITY;', part.rel, part.rel);
                RETURN NEXT;
            END IF;
            IF part.relowner <> 'tenantry_owner'::regrole THEN
                table_name := part.rel::text; rule := 'owner';
                problem := format('is owned by %s, not tenantry_owner', part.relowner::regrole);
                fix := format('ALTER TABLE %s OWNER TO tenantry_owner;', part.rel);
                RETURN NEXT;
            END IF;
            -- Exactly tenantry's permissive policies for tenantry_app_own,
            -- as adopt_table made them: tenant_isolation for every command,
            -- or with a write permission for reads, and a policy for each
            -- write with the permission. Restrictive policies of the team's
            -- own only narrow what tenants reach: they stay.
            FOR pol IN
                SELECT p.polname,
                       p.polname = 'tenant_isolation'
                           OR p.polname IN (SELECT w.polname FROM tenantry.write_permission_policies() w) AS ours,
                       format('%s %s for %s',
                              CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END,
                              CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                            WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                              (SELECT string_agg(CASE WHEN r.oid = 0 THEN 'PUBLIC' ELSE r.oid::regrole::text END, ', ')
                               FROM unnest(p.polroles) r(oid))) AS what
                FROM pg_catalog.pg_policy p
                WHERE p.polrelid = part.rel
                  AND (p.polpermissive OR p.polname = 'tenant_isolation'
                       OR p.polname IN (SELECT w.polname FROM tenantry.write_permission_policies() w))
                  AND NOT (p.polname = 'tenant_isolation' AND p.polpermissive
                           AND p.polcmd = CASE WHEN t.write_permission IS NULL THEN '*' ELSE 'r' END
                           AND p.polroles = ARRAY['tenantry_app_own'::regrole::oid]
                           AND pg_catalog.pg_get_expr(p.polqual, p.polrelid) = tenantry.tenant_table_predicate(t.hierarchy)
                           AND pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
                               IS NOT DISTINCT FROM CASE WHEN t.write_permission IS NULL THEN tenantry.tenant_table_predicate(t.hierarchy) END)
                  AND NOT (t.write_permission IS NOT NULL AND p.polpermissive
                           AND p.polroles = ARRAY['tenantry_app_own'::regrole::oid]
                           AND EXISTS (SELECT 1 FROM tenantry.write_permission_policies() w
                                       WHERE w.polname = p.polname AND w.polcmd = p.polcmd)
                           AND pg_catalog.pg_get_expr(p.polqual, p.polrelid)
                               IS NOT DISTINCT FROM CASE WHEN p.polcmd <> 'a' THEN tenantry.tenant_write_predicate(t.hierarchy, t.write_permission) END
                           AND pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
                               IS NOT DISTINCT FROM CASE WHEN p.polcmd <> 'd' THEN tenantry.tenant_write_predicate(t.hierarchy, t.write_permission, p.polname) END)
                ORDER BY p.polname
            LOOP
                table_name := part.rel::text; rule := 'policies';
                IF pol.ours THEN
                    -- tenantry's own, changed: adopting again remakes it.
                    later := later || ARRAY[table_name, rule,
                                            format('tenantry''s policy %I was changed (%s)', pol.polname, pol.what), readopt];
                ELSE
                    problem := format('policy %I is not tenantry''s (%s)', pol.polname, pol.what);
                    fix := format('DROP POLICY %I ON %s;', pol.polname, part.rel);
                    RETURN NEXT;
                END IF;
            END LOOP;
            IF t.write_permission IS NOT NULL AND (
                SELECT count(*) FROM pg_catalog.pg_policy p JOIN tenantry.write_permission_policies() w ON w.polname = p.polname
                WHERE p.polrelid = part.rel) < 3 THEN
                table_name := part.rel::text; rule := 'policies';
                problem := format('the policies requiring %s for writes are missing', t.write_permission);
                later := later || ARRAY[table_name, rule, problem, readopt];
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = part.rel AND p.polname = 'tenant_isolation') THEN
                table_name := part.rel::text; rule := 'policies';
                problem := 'the tenant_isolation policy is missing';
                later := later || ARRAY[table_name, rule, problem, readopt];
            END IF;
            -- On Citus a distributed table's shards get its policies without
            -- AS RESTRICTIVE (Citus 13): a restrictive policy of the team's,
            -- made before or after adoption, is one more permissive policy
            -- there, OR'd with tenantry's (docs/scale-out.md).
            IF part.rel = t.table_id AND to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
                FOR pol IN EXECUTE
                    'SELECT p.polname FROM pg_catalog.pg_policy p
                     WHERE p.polrelid = $1 AND NOT p.polpermissive
                       AND EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition d
                                   WHERE d.logicalrelid = $1 AND d.partmethod = ''h'')
                     ORDER BY p.polname' USING part.rel
                LOOP
                    table_name := part.rel::text; rule := 'policies';
                    problem := format('restrictive policy %I is a permissive one on the table''s Citus shards (Citus copies policies without AS RESTRICTIVE): a tenant reaches every tenant''s rows that its condition matches', pol.polname);
                    fix := format('DROP POLICY %I ON %s; -- and keep its condition in your queries or in a trigger', pol.polname, part.rel);
                    RETURN NEXT;
                END LOOP;
            END IF;
            -- Privileges: none for PUBLIC anywhere; on the table itself exactly
            -- SELECT, INSERT, UPDATE, DELETE for tenantry_app_own among tenantry's roles.
            RETURN QUERY
                SELECT part.rel::text, 'grants'::text,
                       format('grants %s to %s', acl.privilege_type,
                              CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END),
                       format('REVOKE %s ON %s FROM %s;', acl.privilege_type, part.rel,
                              CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END)
                FROM pg_catalog.aclexplode(part.relacl) acl
                WHERE acl.grantee <> part.relowner
                  AND (acl.grantee = 0
                       OR (acl.grantee::regrole::text = ANY (granted_roles)
                           -- Row level security governs what other roles
                           -- read and write (no policy of theirs: nothing);
                           -- it cannot govern these: TRUNCATE, TRIGGER,
                           -- REFERENCES, and from PostgreSQL 17 on MAINTAIN
                           -- (CLUSTER, VACUUM FULL, REINDEX: the table
                           -- rewritten under a lock on every tenant's rows).
                           AND (acl.grantee::regrole::text = ANY (acting_roles)
                                OR acl.privilege_type IN ('TRUNCATE', 'TRIGGER', 'REFERENCES', 'MAINTAIN'))
                           AND NOT (part.rel = t.table_id AND acl.grantee = 'tenantry_app_own'::regrole::oid
                                    AND acl.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE'))));
            RETURN QUERY
                SELECT part.rel::text, 'grants'::text,
                       format('grants %s on column %I to %s', acl.privilege_type, a.attname,
                              CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END),
                       format('REVOKE %s (%I) ON %s FROM %s;', acl.privilege_type, a.attname, part.rel,
                              CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END)
                FROM pg_catalog.pg_attribute a, pg_catalog.aclexplode(a.attacl) acl
                WHERE a.attrelid = part.rel AND a.attacl IS NOT NULL
                  AND (acl.grantee = 0 OR acl.grantee::regrole::text = ANY (acting_roles)
                       OR (acl.grantee::regrole::text = ANY (granted_roles) AND acl.privilege_type = 'REFERENCES'));
            -- An identity column's sequence needs no grant: USAGE or SELECT
            -- shows every tenant's count of inserts (last_value), USAGE or
            -- UPDATE lets a tenant advance it for every tenant. (Serial
            -- columns' sequences need USAGE: adopt_table says so.)
            RETURN QUERY
                SELECT part.rel::text, 'grants'::text,
                       format('grants %s on %s, the sequence of its identity column %I, to %s: inserts need no grant, and it shows every tenant''s count of inserts and lets a tenant advance it',
                              acl.privilege_type, sq.oid::regclass, a.attname,
                              CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END),
                       format('REVOKE %s ON SEQUENCE %s FROM %s;', acl.privilege_type, sq.oid::regclass,
                              CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END)
                FROM pg_catalog.pg_depend d
                JOIN pg_catalog.pg_class sq ON sq.oid = d.objid AND sq.relkind = 'S'
                JOIN pg_catalog.pg_attribute a ON a.attrelid = part.rel AND a.attnum = d.refobjsubid
                CROSS JOIN LATERAL pg_catalog.aclexplode(sq.relacl) acl
                WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
                  AND d.refobjid = part.rel AND d.deptype = 'i'
                  AND acl.grantee <> sq.relowner
                  AND (acl.grantee = 0 OR acl.grantee::regrole::text = ANY (granted_roles))
                  -- Unless a schema tenant's table of it draws from it
                  -- through a default, which needs USAGE.
                  AND NOT (acl.privilege_type = 'USAGE' AND acl.grantee = 'tenantry_app_own'::regrole
                           AND tenantry.drawn_by_another_table(sq.oid::regclass, part.rel));
            -- Every index leads with tenant_id: an index scan then never touches
            -- another tenant's rows, so EXPLAIN ANALYZE cannot count them.
            RETURN QUERY
                SELECT part.rel::text, 'indexes'::text,
                       format('index %s does not lead with tenant_id: a scan of it would read other tenants'' rows before the policy drops them, and EXPLAIN ANALYZE''s row counts would tell a tenant they exist%s', i.indexrelid::regclass,
                              -- (found by a review: the refusal itself is the plainer oracle)
                              CASE WHEN i.indisunique THEN '; and, unique across tenants, it refuses a tenant''s row (23505) for a value another tenant holds, which tells it so' ELSE '' END),
                       -- An index that backs a constraint goes with the constraint.
                       coalesce((SELECT format('ALTER TABLE %s DROP CONSTRAINT %I; -- and add it again with tenant_id first',
                                               part.rel, k.conname)
                                 FROM pg_catalog.pg_constraint k
                                 WHERE k.conrelid = part.rel AND k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x')
                                 LIMIT 1),
                                -- What "tenant_id first" takes for the index's
                                -- method (found by an audit: as given, GIN and
                                -- hash refused it). Foreign keys that use it go
                                -- first (DROP INDEX failed on them: found by an
                                -- outside review); their own fix adds them
                                -- again on tenant_id.
                                format('%sDROP INDEX %s; -- and create it again with tenant_id first%s',
                                       (SELECT string_agg(format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I; ', fk.conrelid::regclass, fk.conname),
                                                          '' ORDER BY fk.conrelid::regclass::text, fk.conname)
                                          FROM pg_catalog.pg_constraint fk
                                         WHERE fk.contype = 'f' AND fk.conindid = i.indexrelid AND fk.conparentid = 0),
                                       i.indexrelid::regclass,
                                       CASE (SELECT am.amname FROM pg_catalog.pg_class ic JOIN pg_catalog.pg_am am ON am.oid = ic.relam
                                             WHERE ic.oid = i.indexrelid)
                                            WHEN 'btree' THEN ''
                                            WHEN 'brin' THEN ' as a btree index (a BRIN index reads other tenants'' block ranges)'
                                            WHEN 'gin' THEN ' (a GIN index takes a uuid column with CREATE EXTENSION btree_gin, on a table adopted with hierarchy => false; with hierarchy, btree indexes only)'
                                            WHEN 'gist' THEN ' (a GiST index takes a uuid column with CREATE EXTENSION btree_gist, on a table adopted with hierarchy => false; with hierarchy, btree indexes only)'
                                            ELSE ' (this method cannot: make it a btree index on (tenant_id, ...))'
                                       END))
                FROM pg_catalog.pg_index i
                WHERE i.indrelid = part.rel
                  AND (i.indkey[0] = 0 OR (SELECT a.attname FROM pg_catalog.pg_attribute a
                                          WHERE a.attrelid = part.rel AND a.attnum = i.indkey[0]) <> 'tenant_id');
            -- Led by tenant_id is not enough for every index method (found
            -- by an outside review, 2026-12-05). With hierarchy the policy is
            -- tenant_id = ANY (visible_tenant_ids()), which only a method
            -- that searches arrays (btree) takes as an index condition: a
            -- GiST or GIN index on (tenant_id, room) took a tenant's
            -- room = '...' alone (a leakproof operator), read every tenant's
            -- rows of that room, and the policy then dropped them, counted by
            -- EXPLAIN ANALYZE. A BRIN index reads whole block ranges chosen
            -- by summaries of every tenant's values, whatever the policy.
            RETURN QUERY
                SELECT part.rel::text, 'indexes'::text,
                       CASE WHEN am.amname = 'brin'
                           THEN format('BRIN index %s reads block ranges chosen by summaries of every tenant''s values: other tenants'' rows are read before the policy drops them, and EXPLAIN ANALYZE''s row counts would tell a tenant about them',
                                       i.indexrelid::regclass)
                           ELSE format('%s index %s cannot take the policy''s tenant_id = ANY (tenantry.visible_tenant_ids()) (hierarchy) as an index condition: a tenant''s own condition on its columns (tenant_id > ..., room = ...) reads other tenants'' rows before the policy drops them, and EXPLAIN ANALYZE''s row counts would tell a tenant they exist',
                                       upper(am.amname), i.indexrelid::regclass)
                       END,
                       CASE WHEN am.amname = 'brin'
                           THEN format('DROP INDEX %s; -- and index the same columns with a btree index led by tenant_id: CREATE INDEX ON %s (tenant_id, ...);',
                                       i.indexrelid::regclass, part.rel)
                           -- A tenant's own rows only: its policy's tenant_id =
                           -- current_tenant_id() is a condition any method
                           -- with an operator class for uuid takes.
                           ELSE format('SELECT tenantry.adopt_table(%L, hierarchy => false); -- its tenants then reach their own rows only (a parent not its children''s); or keep hierarchy and %s',
                                       t.table_id::text,
                                       coalesce((SELECT format('ALTER TABLE %s DROP CONSTRAINT %I;', part.rel, k.conname)
                                                   FROM pg_catalog.pg_constraint k
                                                  WHERE k.conrelid = part.rel AND k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x')
                                                  LIMIT 1),
                                                format('DROP INDEX %s;', i.indexrelid::regclass)))
                       END
                FROM pg_catalog.pg_index i
                JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                JOIN pg_catalog.pg_am am ON am.oid = ic.relam
                WHERE i.indrelid = part.rel
                  -- Led by another column: the rule above names it.
                  AND i.indkey[0] <> 0
                  AND (SELECT a.attname FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid = part.rel AND a.attnum = i.indkey[0]) = 'tenant_id'
                  -- With hierarchy, btree only: any other method scans by
                  -- a tenant's condition on tenant_id itself (tenant_id >
                  -- '0…', uuid's operators are leakproof) with the policy
                  -- left as a filter, so even GiST (tenant_id) alone or an
                  -- exclusion over a range counted every other tenant's rows
                  -- (found by the review that checked the first version of
                  -- this rule, which looked at the later columns only).
                  AND (am.amname = 'brin'
                       OR (t.hierarchy
                           AND NOT coalesce(pg_catalog.pg_index_column_has_property(i.indexrelid, 1, 'search_array'), false)));
            -- An exclusion constraint compares tenant_id with = only: with
            -- <> (or any other operator) a row conflicts with other tenants'
            -- rows, and the refusal tells a tenant what they hold.
            RETURN QUERY
                SELECT part.rel::text, 'exclusion'::text,
                       format('exclusion constraint %I compares tenant_id with %s, so a row conflicts with other tenants'' rows',
                              k.conname, x.op::regoperator),
                       format('ALTER TABLE %s DROP CONSTRAINT %I; -- and add it again with tenant_id WITH =',
                              part.rel, k.conname)
                FROM pg_catalog.pg_constraint k
                CROSS JOIN LATERAL unnest(k.conkey, k.conexclop) AS x(att, op)
                JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.att
                WHERE k.conrelid = part.rel AND k.contype = 'x' AND a.attname = 'tenant_id'
                  AND x.op <> 'pg_catalog.=(uuid,uuid)'::regoperator;
        END LOOP;
        table_name := t.table_id::text;

        IF NOT pg_catalog.has_schema_privilege('tenantry_app_own',
                (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = t.table_id), 'USAGE')
           OR NOT pg_catalog.has_schema_privilege('tenantry_owner',
                (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = t.table_id), 'USAGE') THEN
            rule := 'schema_usage';
            problem := 'tenantry_owner and tenantry_app_own must be able to use the table''s schema';
            fix := format('GRANT USAGE ON SCHEMA %I TO tenantry_owner, tenantry_app_own;',
                          (SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                           WHERE c.oid = t.table_id));
            RETURN NEXT;
        END IF;

        -- Its schema owned by a role that a login acting for tenants can
        -- become: a schema's owner may DROP every table in it, so SQL
        -- injected into the app drops every tenant's rows (found by the
        -- review of rule login_roles; a team whose service login also runs
        -- its migrations owns its schema).
        SELECT format('its schema %I is owned by %s, a role that a login acting for tenants can become: a schema''s owner may DROP the table, and every tenant''s rows with it',
                      n.nspname, n.nspowner::regrole),
               CASE WHEN n.nspowner = 'pg_database_owner'::regrole
                    THEN format('ALTER DATABASE %I OWNER TO tenantry_owner;', pg_catalog.current_database())
                    ELSE format('ALTER SCHEMA %I OWNER TO <your migration role>; -- one that no login acting for tenants can become', n.nspname) END
          INTO problem, fix
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = t.table_id AND n.nspowner::regrole::text = ANY (granted_roles);
        IF FOUND THEN
            rule := 'schema_owner';
            RETURN NEXT;
        END IF;

        -- tenantry's triggers, each enabled (not only in replica mode) and
        -- as adopted_table_triggers defines it: a condition, another level,
        -- timing or column list would let rows move between tenants or a
        -- deleted row's shares pass to a later row with its key.
        FOR pol IN
            SELECT CASE WHEN e.tgname IN ('tenantry_keep_tenant_id', 'tenantry_keep_tenant_id_written') THEN 'keep_tenant'
                        WHEN e.tgname IN ('tenant_tier_lock', 'tenant_row_home') THEN 'tier_triggers'
                        ELSE 'sharing_triggers' END AS rule
            FROM tenantry.adopted_table_triggers(t.table_id, t.sharing) e
            WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                              WHERE g.tgrelid = t.table_id AND g.tgname = e.tgname
                                AND g.tgenabled IN ('O', 'A')
                                AND pg_catalog.pg_get_triggerdef(g.oid) = e.definition)
            GROUP BY 1 ORDER BY 1
        LOOP
            later := later || ARRAY[table_name, pol.rule, CASE pol.rule
                WHEN 'keep_tenant' THEN 'the trigger that keeps rows in their tenant is missing, disabled or changed'
                WHEN 'tier_triggers' THEN 'the triggers that keep a stale route from writing in the wrong tier are missing, disabled or changed'
                ELSE 'the triggers that revoke the shares of deleted rows are missing, disabled or changed' END, readopt];
        END LOOP;

        -- Sharing names rows by the key after tenant_id.
        IF t.sharing AND tenantry.row_key_column(t.table_id) IS NULL THEN
            rule := 'sharing_key';
            problem := 'rows are shared, but the primary key is not (tenant_id, <one column>)';
            fix := format('ALTER TABLE %s ADD PRIMARY KEY (tenant_id, <column>); -- or SELECT tenantry.adopt_table(%L, hierarchy => %s, sharing => false);',
                          t.table_id, t.table_id::text, t.hierarchy::text);
            RETURN NEXT;
        END IF;

        -- Foreign keys between tenant tables pair tenant_id with tenant_id, so
        -- a row can only point at rows of its own tenant.
        RETURN QUERY
            SELECT t.table_id::text, 'foreign_keys'::text,
                   format('foreign key %I to %s does not pair tenant_id with tenant_id', k.conname, k.confrelid::regclass),
                   -- IF EXISTS: named under both tables, and dropped first
                   -- by the fix of an index it uses (run top to bottom, the
                   -- second copy failed: found by an outside review).
                   format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I; -- and add it again on (tenant_id, ...) REFERENCES %s (tenant_id, ...)',
                          k.conrelid::regclass, k.conname, k.confrelid::regclass)
            FROM pg_catalog.pg_constraint k
            WHERE k.contype = 'f'
              AND (k.conrelid = t.table_id OR k.confrelid = t.table_id)
              AND k.confrelid <> 'tenantry.tenants'::regclass
              AND (k.confrelid IN (SELECT r.table_id FROM tenantry.tenant_tables r)
                   OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                              WHERE a.attrelid = k.confrelid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
              AND (k.conrelid IN (SELECT r.table_id FROM tenantry.tenant_tables r)
                   OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                              WHERE a.attrelid = k.conrelid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
              AND NOT EXISTS (
                  SELECT 1 FROM unnest(k.conkey, k.confkey) AS pair(src, dst)
                  WHERE (SELECT a.attname FROM pg_catalog.pg_attribute a WHERE a.attrelid = k.conrelid AND a.attnum = pair.src) = 'tenant_id'
                    AND (SELECT a.attname FROM pg_catalog.pg_attribute a WHERE a.attrelid = k.confrelid AND a.attnum = pair.dst) = 'tenant_id');
        -- A foreign key whose action would clear or reset tenant_id (ON
        -- DELETE SET NULL or SET DEFAULT without a column list that leaves
        -- it out, ON UPDATE SET NULL or SET DEFAULT): a row cannot change
        -- tenant, so every delete (update) the action reaches would fail
        -- (found by an outside review). PostgreSQL 15 takes a column list
        -- for ON DELETE only.
        RETURN QUERY
            SELECT t.table_id::text, 'foreign_key_actions'::text,
                   format('foreign key %I would set tenant_id by its action (%s), and a row cannot change tenant: the deletes and updates it reaches would fail',
                          k.conname,
                          concat_ws(', ',
                                    CASE WHEN act.on_update THEN 'ON UPDATE ' || CASE k.confupdtype WHEN 'n' THEN 'SET NULL' ELSE 'SET DEFAULT' END END,
                                    CASE WHEN act.on_delete THEN 'ON DELETE ' || CASE k.confdeltype WHEN 'n' THEN 'SET NULL' ELSE 'SET DEFAULT' END END)),
                   format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s;',
                          k.conrelid::regclass, k.conname, k.conname,
                          CASE WHEN act.on_delete
                               -- The ON DELETE action names the key's other
                               -- columns (none: no action); an ON DELETE
                               -- that leaves tenant_id alone stays as it is.
                               THEN regexp_replace(act.without_update,
                                                   ' ON DELETE SET (NULL|DEFAULT)( \((?:[^)"]|"(?:[^"]|"")*")*\))?',
                                                   coalesce(' ON DELETE SET \1 (' ||
                                                            (SELECT string_agg(replace(quote_ident(a.attname), '\', '\\'), ', ' ORDER BY c.ord)
                                                             FROM unnest(k.conkey) WITH ORDINALITY c(attnum, ord)
                                                             JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = c.attnum
                                                             WHERE a.attname <> 'tenant_id') || ')', ''))
                               ELSE act.without_update
                          END)
            FROM pg_catalog.pg_constraint k
            JOIN pg_catalog.pg_attribute tid
              ON tid.attrelid = k.conrelid AND tid.attname = 'tenant_id' AND NOT tid.attisdropped
            -- Which of its actions set tenant_id, and its definition without
            -- an ON UPDATE that does (PostgreSQL 15 takes no column list there).
            CROSS JOIN LATERAL (
                SELECT k.confupdtype IN ('n', 'd') AS on_update,
                       k.confdeltype IN ('n', 'd')
                           AND (k.confdelsetcols IS NULL OR cardinality(k.confdelsetcols) = 0
                                OR tid.attnum = ANY (k.confdelsetcols)) AS on_delete,
                       regexp_replace(pg_catalog.pg_get_constraintdef(k.oid), ' ON UPDATE SET (NULL|DEFAULT)', '') AS without_update
            ) act
            WHERE k.contype = 'f' AND k.conrelid = t.table_id
              AND tid.attnum = ANY (k.conkey)
              AND (act.on_update OR act.on_delete)
            ORDER BY k.conname;
        -- A foreign key's action (ON DELETE CASCADE, SET NULL or SET
        -- DEFAULT; ON UPDATE CASCADE, ...) deletes or updates this table's
        -- rows as the table's owner with row level security off, as
        -- PostgreSQL's referential actions always do. A BEFORE trigger of
        -- the team's that the action fires runs inside that statement with
        -- those rights, and its queries of tenant tables see and change
        -- every tenant's rows: a SECURITY INVOKER trigger logging a deleted
        -- task read another tenant's project through a project's cascade,
        -- and one keeping a count decremented another tenant's (found by an
        -- outside review). An AFTER trigger runs once the writer's statement
        -- ends, with the writer's rights and policies. Named when its
        -- function's body names an adopted table (or its partitions) as a
        -- word, or may (a name spelt with Unicode escapes); a name built at
        -- run time or read through another function stays unseen, as for
        -- rule functions; tenantry's own tables under row level security
        -- count too. A SECURITY DEFINER function runs as its owner but keeps
        -- the action's exemption of owners from forced row level security:
        -- counted when that owner has the table owner's privileges (the
        -- README's migration role is a member of tenantry_owner) or bypasses
        -- row level security (found by a review of this rule). A trigger on
        -- columns fires only when the action sets one of them (the key's),
        -- and a disabled one never.
        RETURN QUERY
            SELECT t.table_id::text, 'cascade_triggers'::text,
                   format('trigger %I on %s runs before the rows that foreign key %I''s action %s, as %s without row level security (a referential action runs as the table''s owner), and its function %s names %s',
                          tg.tgname, tg.tgrelid::regclass, act.conname, act.verb, c.relowner::regrole,
                          f.oid::regprocedure,
                          CASE WHEN tenantry.body_escapes_names(f.prosrc) THEN 'a table spelt with Unicode escapes, which may be any adopted table'
                               ELSE named.names END),
                   format('DROP TRIGGER %I ON %s; -- then create it again AFTER the same events (it then runs with the rights and policies of the role that wrote), or give foreign key %I NO ACTION and delete or update those rows in your code',
                          tg.tgname, tg.tgrelid::regclass, act.conname)
            FROM pg_catalog.pg_trigger tg
            JOIN pg_catalog.pg_proc f ON f.oid = tg.tgfoid
            JOIN pg_catalog.pg_class c ON c.oid = tg.tgrelid
            -- The first key (by name) whose action fires it: ON DELETE
            -- CASCADE deletes, the other actions update.
            CROSS JOIN LATERAL (
                SELECT k.conname,
                       CASE WHEN tg.tgtype & 8 <> 0 AND k.confdeltype = 'c' THEN 'deletes' ELSE 'updates' END AS verb
                FROM pg_catalog.pg_constraint k
                WHERE k.contype = 'f'
                  AND k.conrelid IN (SELECT p.p FROM tenantry.table_and_partitions(t.table_id) p(p))
                  AND ((tg.tgtype & 8 <> 0 AND k.confdeltype = 'c')
                       OR (tg.tgtype & 16 <> 0 AND (k.confdeltype IN ('n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))
                           -- (an empty int2vector is a zero-length array: cardinality 0)
                           AND (pg_catalog.cardinality(tg.tgattr::int2[]) = 0
                                OR tg.tgattr::int2[] && k.conkey)))
                ORDER BY k.conname
                LIMIT 1) act
            CROSS JOIN LATERAL (
                SELECT string_agg(DISTINCT rc.oid::regclass::text, ', ') AS names
                FROM unnest(guarded) r(p)
                JOIN pg_catalog.pg_class rc ON rc.oid = r.p
                WHERE tenantry.body_escapes_names(f.prosrc)
                   OR tenantry.body_names(f.prosrc, rc.relname)) named
            WHERE tg.tgrelid IN (SELECT p.p FROM tenantry.table_and_partitions(t.table_id) p(p))
              AND NOT tg.tgisinternal
              AND tg.tgparentid = 0
              AND tg.tgtype & 2 <> 0
              AND tg.tgenabled <> 'D'
              AND f.pronamespace <> 'tenantry'::regnamespace
              AND (NOT f.prosecdef
                   OR pg_catalog.pg_has_role(f.proowner, c.relowner, 'USAGE')
                   OR f.proowner = ANY (bypassing))
              AND f.prolang NOT IN (SELECT l.oid FROM pg_catalog.pg_language l WHERE l.lanname IN ('c', 'internal'))
              AND named.names IS NOT NULL
            ORDER BY 3;
        -- A foreign key from a table whose tenants reach their descendants'
        -- rows (hierarchy) to one whose tenants do not: a parent may write a
        -- row naming its child's tenant there, and the key's refusal (or its
        -- acceptance) tells it whether the child's row exists, which it
        -- cannot read (found by a new user's review). The other way round,
        -- a parent deleting or changing its child's row of the referenced
        -- table is refused by the key when the child has rows of the
        -- referencing table, which the parent cannot read (or its action
        -- reaches them: found by an audit as the server's login).
        RETURN QUERY
            SELECT t.table_id::text, 'hierarchy'::text,
                   CASE WHEN src.hierarchy THEN
                       format('foreign key %I from %s, whose tenants reach their descendants'' rows, to %s, whose tenants do not: its refusals tell a parent which of its descendants'' rows of %s exist',
                              k.conname, k.conrelid::regclass, k.confrelid::regclass, k.confrelid::regclass)
                   ELSE
                       format('foreign key %I from %s, whose tenants do not reach their descendants'' rows, to %s, whose tenants do: a parent deleting or changing a descendant''s row of %s learns from the key (or changes, by its action) the descendant''s rows of %s, which it cannot read',
                              k.conname, k.conrelid::regclass, k.confrelid::regclass, k.confrelid::regclass, k.conrelid::regclass)
                   END,
                   -- Every table linked to this one by foreign keys takes
                   -- its option in one call (one at a time, each was refused
                   -- for the other; a pair at a time, for the next link:
                   -- both found by outside reviews).
                   format('SELECT tenantry.adopt_tables(ARRAY[%s]::regclass[], hierarchy => %s); -- tables linked by foreign keys must reach the same rows (or hierarchy => %s for all)',
                          (SELECT string_agg(pg_catalog.quote_literal(l.rel::text), ', ' ORDER BY l.rel::text)
                             FROM unnest(tenantry.linked_tenant_tables(t.table_id)) l(rel)),
                          t.hierarchy::text, (NOT t.hierarchy)::text)
            FROM pg_catalog.pg_constraint k
            JOIN tenantry.tenant_tables src ON src.table_id = k.conrelid
            JOIN tenantry.tenant_tables dst ON dst.table_id = k.confrelid
            WHERE k.contype = 'f'
              -- Under the referencing table; under the referenced one too
              -- when only it is asked about (adopt_table's check).
              AND (k.conrelid = t.table_id OR (tbl IS NOT NULL AND k.confrelid = t.table_id))
              AND src.hierarchy <> dst.hierarchy
            ORDER BY 3;
        -- A foreign key into it from a table that is not a tenant table (no
        -- tenant_id, so the rule above cannot pair it): whoever may write
        -- that table learns, from the key's refusal, whether another
        -- tenant's row exists.
        RETURN QUERY
            SELECT k.conrelid::regclass::text, 'foreign_keys'::text,
                   format('foreign key %I references %s from a table that is not a tenant table, which %s may write: its refusals tell whether another tenant''s row exists',
                          k.conname, t.table_id, w.names),
                   format('ALTER TABLE %s DROP CONSTRAINT %I; -- or give %s a tenant_id, adopt it and pair tenant_id in the key',
                          k.conrelid::regclass, k.conname, k.conrelid::regclass)
            FROM pg_catalog.pg_constraint k
            CROSS JOIN LATERAL (
                SELECT string_agg(rn.name, ', ' ORDER BY rn.name) AS names
                FROM (SELECT rn.name FROM unnest(acting_roles) rn(name)
                      WHERE pg_catalog.has_table_privilege(rn.name, k.conrelid, 'INSERT, UPDATE')
                         OR pg_catalog.has_any_column_privilege(rn.name, k.conrelid, 'INSERT, UPDATE')
                      UNION
                      SELECT tenantry.granted_by_name(k.conrelid, 'INSERT', other_roles)
                      UNION
                      SELECT tenantry.granted_by_name(k.conrelid, 'UPDATE', other_roles)) rn) w
            WHERE k.contype = 'f'
              AND k.confrelid IN (SELECT p.p FROM tenantry.table_and_partitions(t.table_id) p(p))
              AND k.conrelid NOT IN (SELECT r.table_id FROM tenantry.tenant_tables r)
              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                              WHERE a.attrelid = k.conrelid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
              AND (w.names IS NOT NULL OR tenantry.granted_to_public(k.conrelid, 'INSERT')
                   OR tenantry.granted_to_public(k.conrelid, 'UPDATE'))
            ORDER BY 1, 3;
        -- What reads the table's rows whole: the table and its partitions,
        -- and, through views, every view or materialized view that hands
        -- them on to what reads it with an owner's rights that bypass row
        -- level security: one that runs with its caller's rights
        -- (security_invoker), or whose own owner bypasses row level security
        -- (found by an outside review: a materialized view over a
        -- security_invoker view over the table, and a definer function
        -- reading it through such a view, passed the doctor).
        -- A view or materialized view that hands every tenant's rows on
        -- (its owner bypasses row level security, or it reads one that
        -- does) passes them whole to whatever reads it, whoever owns that
        -- and however it runs: reach_via names, for each, the first
        -- relation on its way that bypassed row level security, NULL while
        -- every step applies its reader's (found by an outside review: a
        -- view of the migration role over an owner's view, granted to the
        -- app, read every tenant's rows unnamed).
        SELECT coalesce(array_agg(x.rel ORDER BY x.rel), '{}'), coalesce(array_agg(x.via ORDER BY x.rel), '{}')
        INTO reach, reach_via
        FROM (
            WITH RECURSIVE r(rel, via) AS (
                SELECT p.p::oid, NULL::oid FROM tenantry.table_and_partitions(t.table_id) p(p)
              UNION
                SELECT v.oid,
                       coalesce(r.via, CASE WHEN (o.rolsuper OR o.rolbypassrls)
                                             AND NOT (v.relkind = 'v' AND tenantry.view_runs_as_invoker(v.oid))
                                            THEN v.oid END)
                FROM r
                JOIN pg_catalog.pg_depend d ON d.refobjid = r.rel
                     AND d.classid = 'pg_catalog.pg_rewrite'::regclass
                     AND d.refclassid = 'pg_catalog.pg_class'::regclass
                JOIN pg_catalog.pg_rewrite rw ON rw.oid = d.objid
                JOIN pg_catalog.pg_class v ON v.oid = rw.ev_class AND v.relkind IN ('v', 'm') AND v.oid <> r.rel
                JOIN pg_catalog.pg_roles o ON o.oid = v.relowner
                WHERE r.via IS NOT NULL
                   OR (v.relkind = 'v' AND tenantry.view_runs_as_invoker(v.oid))
                   OR o.rolsuper OR o.rolbypassrls)
            SELECT r.rel, min(r.via) AS via FROM r GROUP BY r.rel) x;
        leaky := ARRAY(SELECT x.rel FROM unnest(reach, reach_via) x(rel, via) WHERE x.via IS NOT NULL);
        -- A SECURITY DEFINER function of an owner that bypasses row level
        -- security reads the table with those rights whoever calls it, as a
        -- view does. Found when PostgreSQL records that it uses the table (a
        -- BEGIN ATOMIC body), or when its body, a string PostgreSQL keeps
        -- without knowing what it reads (PL/pgSQL, SQL, any procedural
        -- language), names the table or one of its partitions as a word: a
        -- name built at run time (EXECUTE format(...)) stays unseen.
        -- So does one of any owner that reads a view or materialized view
        -- handing on every tenant's rows (found by a verification review: a
        -- definer function of a role without BYPASSRLS over an owner's view).
        RETURN QUERY
            SELECT t.table_id::text, 'functions'::text,
                   CASE WHEN o.rolsuper OR o.rolbypassrls
                        THEN format('function %s runs with the rights of %s, which bypasses row level security, %s, and %s may call it',
                                    f.oid::regprocedure, f.proowner::regrole,
                                    CASE WHEN f.prosqlbody IS NULL THEN 'names it in its body' ELSE 'reads or writes it' END,
                                    callers.names)
                        ELSE format('function %s runs with the rights of %s and reads %s, which hands on every tenant''s rows, and %s may call it',
                                    f.oid::regprocedure, f.proowner::regrole,
                                    (SELECT string_agg(u::regclass::text, ', ' ORDER BY u::regclass::text)
                                     FROM unnest(used.named) u WHERE u = ANY (leaky)),
                                    callers.names) END,
                   format('ALTER FUNCTION %s SECURITY INVOKER;', f.oid::regprocedure)
            FROM pg_catalog.pg_proc f
            JOIN pg_catalog.pg_roles o ON o.oid = f.proowner
            -- What of the table's reach it names: recorded by PostgreSQL (a
            -- BEGIN ATOMIC body), or a word of its body, a string PostgreSQL
            -- keeps without knowing what it reads (PL/pgSQL, SQL, any
            -- procedural language): a name built at run time stays unseen.
            -- Once per function: whether its body is a string to search (not
            -- recorded by PostgreSQL, not C), and the schema first on its
            -- pinned search path (public without one).
            CROSS JOIN LATERAL (
                SELECT f.prosqlbody IS NULL
                       AND f.prolang NOT IN (SELECT l.oid FROM pg_catalog.pg_language l WHERE l.lanname IN ('c', 'internal'))
                       AS searchable,
                       coalesce((SELECT btrim(split_part(substr(cfg, 13), ',', 1), ' "')
                                 FROM unnest(f.proconfig) cfg WHERE cfg LIKE 'search_path=%'), 'public') AS first_schema,
                       -- A name spelt with Unicode escapes (U&"t\0061sks")
                       -- matches no word search: such a body may name any
                       -- table (found by a review of the psql path).
                       f.prosqlbody IS NULL AND tenantry.body_escapes_names(f.prosrc) AS escaped) fb
            CROSS JOIN LATERAL (
                SELECT array_agg(c.oid) AS rels,
                       -- Named surely enough to charge an owner without
                       -- BYPASSRLS with it: recorded, qualified, or bare in
                       -- the schema first on its pinned search path (a
                       -- verification review: a function over public.invoices
                       -- was charged with ops.invoices).
                       array_agg(c.oid) FILTER (
                           WHERE c.recorded
                              OR f.prosrc ~* ('"?' || regexp_replace(c.nspname, '([^[:alnum:]_])', '\\\1', 'g')
                                              || '"?[[:space:]]*\.[[:space:]]*"?'
                                              || regexp_replace(c.relname, '([^[:alnum:]_])', '\\\1', 'g')
                                              || '($|[^[:alnum:]_$])')
                              OR c.nspname = fb.first_schema
                              OR fb.escaped) AS named
                FROM (SELECT c.oid, c.relname, n.nspname,
                             c.oid IN (SELECT d.refobjid FROM pg_catalog.pg_depend d
                                       WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = f.oid
                                         AND d.refclassid = 'pg_catalog.pg_class'::regclass) AS recorded
                      FROM pg_catalog.pg_class c
                      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = ANY (reach)) c
                WHERE c.recorded
                   OR (fb.searchable AND fb.escaped)
                   OR (fb.searchable
                       AND tenantry.body_names(f.prosrc, c.relname))) used
            CROSS JOIN LATERAL (
                SELECT string_agg(r.name, ', ' ORDER BY r.name <> 'PUBLIC', r.name) AS names
                FROM (SELECT 'PUBLIC'::text AS name
                      WHERE f.proacl IS NULL
                         OR EXISTS (SELECT 1 FROM pg_catalog.aclexplode(f.proacl) acl WHERE acl.grantee = 0)
                      UNION ALL
                      SELECT rn.name FROM unnest(acting_roles) rn(name)
                      WHERE pg_catalog.has_function_privilege(rn.name, f.oid, 'EXECUTE')
                      UNION ALL
                      SELECT acl.grantee::regrole::text FROM pg_catalog.aclexplode(f.proacl) acl
                      WHERE acl.grantee <> 0 AND acl.grantee::regrole::text = ANY (other_roles)
                      -- A trigger's function runs for whoever writes the
                      -- table (or, on a partition, the partitioned table),
                      -- whatever EXECUTE says (found by reviews: one owned by
                      -- tenantry_owner, EXECUTE revoked from PUBLIC, copied
                      -- another tenant's rows on insert).
                      UNION ALL
                      SELECT format('%s (writing %s)', rn.name, tg.tgrelid::regclass)
                      FROM pg_catalog.pg_trigger tg, unnest(acting_roles) rn(name)
                      WHERE tg.tgfoid = f.oid
                        AND EXISTS (SELECT 1
                                    FROM (SELECT tg.tgrelid AS relid
                                          UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tg.tgrelid) a) w
                                    WHERE pg_catalog.has_table_privilege(rn.name, w.relid, 'INSERT, UPDATE, DELETE, TRUNCATE')
                                       OR pg_catalog.has_any_column_privilege(rn.name, w.relid, 'INSERT, UPDATE'))) r) callers
            WHERE f.prosecdef
              AND f.pronamespace <> 'tenantry'::regnamespace
              AND used.rels IS NOT NULL
              AND (o.rolsuper OR o.rolbypassrls OR used.named && leaky)
              AND callers.names IS NOT NULL
            ORDER BY 3;
        -- A view reads with its owner's rights unless it is security_invoker,
        -- and a materialized view holds what its owner read: over a tenant
        -- table, with an owner that bypasses row level security, either
        -- hands every tenant's rows to whoever may read it.
        RETURN QUERY
            SELECT t.table_id::text, 'views'::text,
                   CASE WHEN dep.via = v.oid
                        THEN format('%s %s reads it with the rights of %s, which bypasses row level security, and %s may read it',
                                    CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END,
                                    v.oid::regclass, v.relowner::regrole, readers.names)
                        ELSE format('%s %s reads it through %s %s, which hands on every tenant''s rows (it reads them with the rights of %s, which bypasses row level security), and %s may read it',
                                    CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END, v.oid::regclass,
                                    CASE b.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END, dep.via::regclass,
                                    b.relowner::regrole, readers.names) END,
                   CASE WHEN dep.via = v.oid AND v.relkind = 'v'
                        THEN format('ALTER VIEW %s SET (security_invoker = true);', v.oid::regclass)
                        WHEN dep.via = v.oid
                        THEN format('REVOKE ALL ON %s FROM %s; -- a materialized view has no row level security: keep tenant rows out of it',
                                    v.oid::regclass, readers.names)
                        WHEN b.relkind = 'v'
                        THEN format('ALTER VIEW %s SET (security_invoker = true); -- the view it reads; or REVOKE ALL ON %s FROM %s;',
                                    dep.via::regclass, v.oid::regclass, readers.names)
                        ELSE format('REVOKE ALL ON %s FROM %s; -- it reads materialized view %s, which holds every tenant''s rows',
                                    v.oid::regclass, readers.names, dep.via::regclass) END
            FROM unnest(reach, reach_via) dep(ev_class, via)
            JOIN pg_catalog.pg_class v ON v.oid = dep.ev_class AND v.relkind IN ('v', 'm')
            JOIN pg_catalog.pg_class b ON b.oid = dep.via
            CROSS JOIN LATERAL (
                SELECT string_agg(r.name, ', ' ORDER BY r.name <> 'PUBLIC', r.name) AS names
                FROM (SELECT 'PUBLIC'::text AS name
                      WHERE tenantry.granted_to_public(v.oid, 'SELECT')
                      UNION ALL
                      -- any column of it is enough
                      SELECT rn.name FROM unnest(acting_roles) rn(name)
                      WHERE pg_catalog.has_any_column_privilege(rn.name, v.oid, 'SELECT')
                      UNION ALL
                      SELECT tenantry.granted_by_name(v.oid, 'SELECT', other_roles)) r) readers
            WHERE readers.names IS NOT NULL
            ORDER BY v.oid::regclass::text;
        -- A view is bound to the tables it names when it is made: over a
        -- table family of the team's (its schema tenants' tables stand
        -- alone, unlike tenantry.resources's, which inherit) it reads the
        -- pooled table alone, so a schema tenant sees none of its own rows
        -- through it (found by a review adopting a realistic schema). A
        -- warning, once a tenant schema holds tables.
        IF t.table_id <> 'tenantry.resources'::regclass
           AND EXISTS (SELECT 1 FROM tenantry.family_templates() f WHERE f.template = t.table_id)
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid
                       WHERE n.nspname ~ '^tenant_[0-9a-f]{20}$') THEN
            RETURN QUERY
                SELECT t.table_id::text, 'tier_views'::text,
                       format('%s %s reads %s alone: a schema tenant keeps its rows of it in its own schema''s table, so it sees none of them through it',
                              CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END,
                              v.oid::regclass, t.table_id::regclass),
                       format('-- read %s by its unqualified name in your code (or in a SQL function without a search_path of its own), which each tenant''s search path routes to its tier, instead of through %s (docs/tiers.md, "Your own tables in schema tenants")',
                              (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = t.table_id), v.oid::regclass)
                FROM (SELECT DISTINCT rw.ev_class
                      FROM pg_catalog.pg_depend d
                      JOIN pg_catalog.pg_rewrite rw ON rw.oid = d.objid
                      WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass
                        AND d.refclassid = 'pg_catalog.pg_class'::regclass
                        AND d.refobjid = t.table_id
                        AND rw.ev_class <> t.table_id) dep
                JOIN pg_catalog.pg_class v ON v.oid = dep.ev_class AND v.relkind IN ('v', 'm')
                ORDER BY v.oid::regclass::text;
        END IF;
        -- The tcn extension's trigger sends every change's key (tenant_id
        -- among its columns here) to whoever LISTENs on its channel: any
        -- tenant, as LISTEN cannot be revoked (found by a DBA's review).
        RETURN QUERY
            SELECT t.table_id::text, 'notify_trigger'::text,
                   format('trigger %I on %s sends every row''s key, its tenant_id among them, to any session that LISTENs on its channel, every tenant''s',
                          tg.tgname, tg.tgrelid::regclass),
                   format('DROP TRIGGER %I ON %s; -- notify with ids alone, which a listener reads in its tenant''s context',
                          tg.tgname, tg.tgrelid::regclass)
            FROM pg_catalog.pg_trigger tg
            JOIN pg_catalog.pg_proc f ON f.oid = tg.tgfoid
            WHERE tg.tgrelid IN (SELECT p.p FROM tenantry.table_and_partitions(t.table_id) p(p))
              AND f.proname = 'triggered_change_notification'
            ORDER BY 3;
        -- A rule's actions run with the rights of its table's owner: on the
        -- adopted table (owned by tenantry_owner, BYPASSRLS), or on a table
        -- whose owner bypasses row level security and that reads or writes
        -- it, they reach every tenant's rows whenever a role acting for a
        -- tenant sets the rule off.
        RETURN QUERY
            SELECT t.table_id::text, 'rules'::text,
                   format('rule %I on %s runs its actions with the rights of %s, which bypasses row level security',
                          rw.rulename, rw.ev_class::regclass, c.relowner::regrole),
                   format('DROP RULE %I ON %s; -- a trigger runs with its caller''s rights and policies instead (an AFTER trigger where a foreign key''s action may fire it: rule cascade_triggers)',
                          rw.rulename, rw.ev_class::regclass)
            FROM pg_catalog.pg_rewrite rw
            JOIN pg_catalog.pg_class c ON c.oid = rw.ev_class AND c.relowner = ANY (bypassing)
            WHERE rw.rulename <> '_RETURN'
              AND (rw.ev_class IN (SELECT p.p FROM tenantry.table_and_partitions(t.table_id) p(p))
                   -- (one on another adopted table is named under that one)
                   OR (rw.oid IN (SELECT d.objid FROM pg_catalog.pg_depend d
                                  WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass
                                    AND d.refclassid = 'pg_catalog.pg_class'::regclass
                                    AND d.refobjid IN (SELECT p.p FROM tenantry.table_and_partitions(t.table_id) p(p)))
                       AND NOT EXISTS (SELECT 1 FROM tenantry.tenant_tables r, tenantry.table_and_partitions(r.table_id) rp(p)
                                       WHERE rp.p = rw.ev_class)))
              AND (tenantry.granted_to_public(c.oid, NULL)
                   OR EXISTS (SELECT 1 FROM unnest(acting_roles) rn(name)
                              WHERE pg_catalog.has_table_privilege(rn.name, c.oid, 'SELECT, INSERT, UPDATE, DELETE')
                                 OR pg_catalog.has_any_column_privilege(rn.name, c.oid, 'SELECT, INSERT, UPDATE'))
                   OR EXISTS (SELECT tenantry.granted_by_name(c.oid, NULL, other_roles)))
            ORDER BY rw.ev_class::regclass::text, rw.rulename;
        -- A schema tenant's table of this one (a plain table keyed (tenant_id,
        -- column)) is made by tenantry_owner with the same foreign keys: to a
        -- table that is not a tenant table, the owner needs REFERENCES on it,
        -- or creating schema tenants and tenantry migrate fail.
        IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.table_id) = 'r'
           AND tenantry.row_key_column(t.table_id) IS NOT NULL THEN
            RETURN QUERY
                SELECT t.table_id::text, 'references'::text,
                       format('foreign key %I references %s, which tenantry_owner may not reference: schema tenants'' tables of %s cannot be made',
                              k.conname, k.confrelid::regclass, t.table_id),
                       -- A referenced table with a tenant_id column is a
                       -- tenant table not adopted yet: adopting it is the
                       -- fix (found by an audit: the grant made the error go
                       -- away and left it a plain table); REFERENCES is for
                       -- a lookup table every tenant may know.
                       CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                         WHERE a.attrelid = k.confrelid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
                            THEN format('SELECT tenantry.adopt_table(%L); -- %s has tenant_id: adopt it first, then %s',
                                        k.confrelid::regclass::text, k.confrelid::regclass, t.table_id)
                            ELSE concat(CASE WHEN NOT pg_catalog.has_schema_privilege('tenantry_owner', c.relnamespace, 'USAGE')
                                             THEN format('GRANT USAGE ON SCHEMA %s TO tenantry_owner; ', c.relnamespace::regnamespace) END,
                                        format('GRANT REFERENCES ON %s TO tenantry_owner; -- a lookup table every tenant may know', k.confrelid::regclass))
                       END
                FROM pg_catalog.pg_constraint k
                JOIN pg_catalog.pg_class c ON c.oid = k.confrelid
                WHERE k.conrelid = t.table_id AND k.contype = 'f'
                  AND k.confrelid NOT IN (SELECT r.table_id FROM tenantry.tenant_tables r)
                  AND k.confrelid <> 'tenantry.tenants'::regclass
                  AND (NOT pg_catalog.has_schema_privilege('tenantry_owner', c.relnamespace, 'USAGE')
                       OR EXISTS (SELECT 1 FROM unnest(k.confkey) fk(att)
                                  WHERE NOT pg_catalog.has_column_privilege('tenantry_owner', k.confrelid, fk.att, 'REFERENCES')))
                ORDER BY k.conname;
        END IF;
        -- A schema tenant keeps its rows of a table family (a plain table
        -- keyed (tenant_id, column)) in its own schema: a foreign key into the
        -- family from a table that is not one looks only at the pooled table.
        -- Named under the referencing table (and under the referenced one when
        -- only it is asked about, as adopt_table does, or the other is not
        -- adopted); once schema tenants exist, which cannot be made meanwhile
        -- (require_schema_tier).
        -- (A tenant schema holding a table: spare schemas, made ahead for
        -- creations, are empty.)
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid
                   WHERE n.nspname ~ '^tenant_[0-9a-f]{20}$') THEN
            RETURN QUERY
                SELECT b.referencing::text, 'tiers'::text,
                       format('foreign key %I references %s, whose rows each schema tenant keeps in its own schema''s table, while %s keeps every tenant''s rows in one table: the key cannot see a schema tenant''s rows',
                              b.constraint_name, b.referenced, b.referencing),
                       CASE WHEN b.candidate AND NOT b.adopted
                            -- A table adopted before under this name, dropped
                            -- and made anew, with the options it had.
                            THEN coalesce((SELECT tenantry.adopt_statement(r.adopted_as, r.hierarchy, r.sharing, r.write_permission)
                                           FROM tenantry.tenant_tables r
                                           WHERE r.adopted_as = format('%I.%I', (SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = b.referencing),
                                                                       (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = b.referencing))
                                             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = r.table_id::oid)
                                           ORDER BY r.adopted_at DESC LIMIT 1),
                                          format('SELECT tenantry.adopt_table(%L);', b.referencing::text))
                                 || ' -- it has the primary key (tenant_id, <one column>) a table family needs: adopted, schema tenants get a table of it too'
                            ELSE format('Give %s a primary key (tenant_id, <one column>) and adopt it again, so that schema tenants get a table of it too; or ALTER TABLE %s DROP CONSTRAINT %I;',
                                        b.referencing, b.referencing, b.constraint_name) END
                FROM (SELECT r.*,
                             r.referencing IN (SELECT a.table_id FROM tenantry.tenant_tables a) AS adopted,
                             (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = r.referencing) = 'r'
                                 AND tenantry.row_key_column(r.referencing) IS NOT NULL AS candidate
                      FROM tenantry.tier_breaking_references() r) b
                WHERE b.referencing = t.table_id
                   OR (b.referenced = t.table_id
                       AND (tbl IS NOT NULL OR NOT b.adopted)
                       -- Adopting the referenced table first, then the one
                       -- that references it (the order of their foreign
                       -- key): the doctor names the second until it is adopted.
                       AND NOT (tbl IS NOT NULL AND NOT b.adopted AND b.candidate));
        END IF;
    END LOOP;
    RETURN QUERY
        SELECT later[i], later[i + 1], later[i + 2], later[i + 3]
        FROM generate_series(1, coalesce(array_length(later, 1), 0), 4) i;
    -- tenantry's own tables (resources among them): every policy as the
    -- definitions made it (15_own_policies.sql), no other.
    IF tbl IS NULL THEN
        -- A table of the team's that a role acting for tenants may use but
        -- tenantry does not guard (rule unadopted): a tenant_id column or a
        -- key to tenantry.tenants says it holds tenants' rows, and with row
        -- level security off every tenant's request reaches all of them; a
        -- permissive policy reading a setting (the guide's
        -- current_setting('app.current_tenant_id')) is one that SQL injected
        -- into the app sets to any tenant. Adopting it is the fix. Found by
        -- a review as a user of the guide: the doctor looked at adopted
        -- tables only.
        RETURN QUERY
        WITH candidates AS (
            SELECT c.oid, c.relrowsecurity,
                   ARRAY(SELECT g.name FROM unnest(granted_roles) g(name)
                         WHERE pg_catalog.has_any_column_privilege(g.name::regrole::oid, c.oid, 'SELECT, INSERT, UPDATE')
                            OR pg_catalog.has_table_privilege(g.name::regrole::oid, c.oid, 'DELETE, TRUNCATE')
                         ORDER BY 1) AS roles,
                   -- Named as granted: PUBLIC, or the roles granted it by
                   -- name (not every role that holds it as a member of one).
                   ARRAY(SELECT DISTINCT CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END
                         FROM (SELECT c.relacl AS acl
                               UNION ALL
                               SELECT a.attacl FROM pg_catalog.pg_attribute a
                               WHERE a.attrelid = c.oid AND a.attacl IS NOT NULL) x,
                              pg_catalog.aclexplode(x.acl) acl
                         WHERE acl.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
                           AND (acl.grantee = 0 OR acl.grantee::regrole::text = ANY (granted_roles))
                         ORDER BY 1) AS granted,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                           WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped)
                   OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                              WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.confrelid = 'tenantry.tenants'::regclass) AS tenant_keyed,
                   (SELECT string_agg(xp.polname::text, ', ' ORDER BY xp.polname)
                    FROM pg_catalog.pg_policy xp WHERE xp.polrelid = c.oid AND xp.polpermissive) AS permissive,
                   -- tenantry's own (for tenantry_app_own), not one of the
                   -- team's that took the guide's name (a verification review)
                   EXISTS (SELECT 1 FROM pg_catalog.pg_policy xp
                           WHERE xp.polrelid = c.oid AND xp.polname = 'tenant_isolation'
                             AND xp.polroles = ARRAY['tenantry_app_own'::regrole::oid]) AS has_isolation
            FROM pg_catalog.pg_class c
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenantry')
              AND n.nspname !~ '^(pg_toast|pg_temp_|pg_toast_temp_|tenant_[0-9a-f]{20}$)'
              AND c.oid NOT IN (SELECT r.table_id FROM tenantry.tenant_tables r)
              -- An adopted table's inheritance child is rule children's.
              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i
                              WHERE i.inhrelid = c.oid
                                AND i.inhparent IN (SELECT r.table_id FROM tenantry.tenant_tables r))
        ), policies AS (
            SELECT p.polrelid, p.polname,
                   concat_ws(' / ', pg_catalog.pg_get_expr(p.polqual, p.polrelid),
                             pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)) AS expr
            FROM pg_catalog.pg_policy p
            WHERE p.polpermissive AND p.polrelid IN (SELECT oid FROM candidates)
        )
        SELECT c.oid::regclass::text,
               -- Policies of the team's own (no tenant_isolation of
               -- tenantry's) may be right, such as global rows with no
               -- tenant beside each tenant's: a warning (a verification
               -- review: a safe schema stopped serve). tenantry's own
               -- policy outside the registry (a detached partition, a
               -- restore without tenant_tables) is adopting it left undone.
               CASE WHEN k.unguarded THEN 'unguarded' ELSE 'unadopted' END::text,
               CASE WHEN p.polname IS NOT NULL
                    THEN format('policy %I reads a setting that any role may set (%s), and %s may use the table: SQL running as one of them sets it to any tenant and reaches that tenant''s rows',
                                p.polname, p.expr, array_to_string(coalesce(nullif(c.granted, '{}'), c.roles), ', '))
                    WHEN NOT c.relrowsecurity
                    THEN format('it holds tenants'' rows (a tenant_id column or a key to tenantry.tenants) and %s may use it, but row level security is off and tenantry does not guard it: every tenant''s request reaches every tenant''s rows',
                                array_to_string(coalesce(nullif(c.granted, '{}'), c.roles), ', '))
                    ELSE format('it holds tenants'' rows (a tenant_id column or a key to tenantry.tenants) and %s may use it, but tenantry does not guard it (not an adopted table: a partition detached from one, a table restored without tenantry''s record of it, or policies made by hand): no rule checks what its policies (%s) let each tenant reach',
                                array_to_string(coalesce(nullif(c.granted, '{}'), c.roles), ', '), c.permissive) END,
               CASE WHEN tenantry.family_name_clash(c.oid) IS NULL
                    THEN concat(CASE WHEN k.unguarded
                                     THEN '-- check its policies yourself, or (once every row has a tenant) adopt it: ' END,
                                CASE WHEN p.polname IS NOT NULL THEN format('DROP POLICY %I ON %s; ', p.polname, c.oid::regclass) END,
                                -- adopt_table replaces a tenant_isolation policy; others of its own it refuses
                                CASE WHEN p.polname IS NULL AND c.relrowsecurity
                                     THEN (SELECT string_agg(format('DROP POLICY %I ON %s; ', x.polname, c.oid::regclass), '' ORDER BY x.polname)
                                           FROM pg_catalog.pg_policy x
                                           WHERE x.polrelid = c.oid AND x.polpermissive AND x.polname <> 'tenant_isolation'
                                             AND x.polname NOT IN (SELECT w.polname FROM tenantry.write_permission_policies() w)) END,
                                format('SELECT tenantry.adopt_table(%L);', c.oid::regclass::text),
                                ' -- or revoke what tenantry''s roles hold on it')
                    -- Named like tenantry's own tenant table: adopt_table
                    -- refuses it under that name (found by an outside
                    -- review: the fix given was always refused).
                    ELSE format('REVOKE ALL ON %s FROM %s; -- or rename it (adopt_table refuses a table named like %s) and adopt it',
                                c.oid::regclass, array_to_string(coalesce(nullif(c.granted, '{}'), c.roles), ', '),
                                tenantry.family_name_clash(c.oid)) END
        FROM candidates c
        LEFT JOIN policies p ON p.polrelid = c.oid AND p.expr ~* '\mcurrent_setting\s*\('
        CROSS JOIN LATERAL (
            SELECT p.polname IS NULL AND c.relrowsecurity AND NOT c.has_isolation AS unguarded) k
        WHERE cardinality(c.roles) > 0
          -- (row level security on and no permissive policy: nothing reached)
          AND (p.polname IS NOT NULL OR (c.tenant_keyed AND (NOT c.relrowsecurity OR c.permissive IS NOT NULL)))
        ORDER BY 1, 3;
        -- PostgreSQL's built-in roles whose privileges reach past every
        -- grant and policy tenantry makes, and the role attributes that do
        -- (rule login_roles): a login acting for tenants that can become
        -- such a role hands that reach to SQL injected into the app.
        -- pg_read_all_data reads tenantry.context_keys, which no policy
        -- guards (only privileges: the owner reads it), and with its signing
        -- key any tenant's context is forged; CREATEROLE on PostgreSQL 15
        -- grants itself tenantry_owner; REPLICATION decodes every change;
        -- the others run programs or read files as the server, lock or
        -- cancel what every tenant runs, or read other sessions' queries.
        -- Found by a review of the server's login: only superusers,
        -- BYPASSRLS and owners were refused.
        RETURN QUERY
        SELECT 'role ' || pg_catalog.quote_ident(l.rolname), 'login_roles'::text,
               format('login %I acts for tenants and can become %s, which %s',
                      l.rolname, b.name,
                      CASE WHEN b.name = 'pg_database_owner'
                           THEN format('owns database %I (%s): %s', pg_catalog.current_database(),
                                       (SELECT d.datdba::regrole::text FROM pg_catalog.pg_database d
                                        WHERE d.datname = pg_catalog.current_database()), b.reach)
                           ELSE b.reach END),
               CASE WHEN b.name = 'pg_database_owner'
                    THEN format('ALTER DATABASE %I OWNER TO tenantry_owner;', pg_catalog.current_database())
                    -- One REVOKE per grant: from PostgreSQL 16 a role holds
                    -- a membership once per grantor and a plain REVOKE ends
                    -- only the current user's; CASCADE ends the grants made
                    -- onwards with its ADMIN OPTION (found by the review of
                    -- the rule). PostgreSQL 15 holds one grant per member
                    -- (its grantor may be a role dropped since).
                    ELSE (SELECT string_agg(format('REVOKE %I FROM %I%s CASCADE;', b.name, h.member,
                                                   CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 160000
                                                        THEN format(' GRANTED BY %I', h.grantor) END),
                                            ' ' ORDER BY h.member, h.grantor)
                          FROM unnest(holders.members, holders.grantors) h(member, grantor)) END
        FROM unnest(acting_logins) x(oid)
        JOIN pg_catalog.pg_roles l ON l.oid = x.oid
        CROSS JOIN (VALUES
            ('pg_read_all_data', 'reads every table, tenantry.context_keys among them: with its signing key any tenant''s context is forged'),
            ('pg_write_all_data', 'writes every table, tenantry.context_keys among them: with a signing key of its own any tenant''s context is forged'),
            ('pg_read_server_files', 'reads the database server''s files: its configuration, and its logs with other tenants'' statements and errors'),
            ('pg_write_server_files', 'writes the database server''s files, its configuration among them'),
            ('pg_execute_server_program', 'runs programs on the database server as its operating system user (COPY ... PROGRAM)'),
            ('pg_maintain', 'may LOCK, VACUUM FULL, CLUSTER and REINDEX every table: a lock that holds every tenant back'),
            ('pg_signal_backend', 'cancels and ends other sessions: other tenants'' requests and other servers'' connections'),
            ('pg_signal_autovacuum_worker', 'cancels and ends autovacuum on every table'),
            ('pg_monitor', 'reads other sessions'' queries, every table''s statistics and the lock, size and WAL functions tenantry takes from PUBLIC'),
            ('pg_read_all_stats', 'reads every table''s statistics and, from any other database of the cluster it may connect to, every session''s query (this database''s included)'),
            ('pg_read_all_settings', 'reads every setting, those hidden from other roles included (primary_conninfo may hold a replication password)'),
            ('pg_stat_scan_tables', 'runs monitoring functions that scan whole tables of every tenant under locks that hold back schema changes'),
            ('pg_checkpoint', 'forces checkpoints: bursts of writes every tenant waits behind'),
            ('pg_use_reserved_connections', 'takes the connection slots reserved for operators'),
            ('pg_create_subscription', 'may subscribe this database to another server''s publications (with CREATE on the database)'),
            ('pg_database_owner', 'may ALTER DATABASE (every new session''s settings, the connection limit, for every tenant) and, owning schema public (PostgreSQL 15''s default), DROP every table in it')
        ) b(name, reach)
        JOIN pg_catalog.pg_roles r ON r.rolname = b.name
        -- The grants of the membership to roles the login reaches (itself,
        -- or a role granted to it): revoking each is the fix. A built-in
        -- role reached only through another (pg_read_all_stats through
        -- pg_monitor) is that one's finding.
        CROSS JOIN LATERAL (
            SELECT array_agg(m.rolname::text ORDER BY m.rolname, g.rolname) AS members,
                   array_agg(g.rolname::text ORDER BY m.rolname, g.rolname) AS grantors
            FROM pg_catalog.pg_auth_members a
            JOIN pg_catalog.pg_roles m ON m.oid = a.member
            LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantor
            WHERE a.roleid = r.oid AND m.oid >= 16384
              AND tenantry.can_become(l.oid, m.oid)
        ) holders
        WHERE tenantry.can_become(l.oid, r.oid)
          AND (b.name = 'pg_database_owner' OR holders.members IS NOT NULL)
        UNION ALL
        -- Attributes are not inherited: a role that has one lends it to a
        -- login after SET ROLE, the login itself included.
        SELECT 'role ' || pg_catalog.quote_ident(l.rolname), 'login_roles'::text,
               format('login %I acts for tenants and can become %I, which has %s: %s',
                      l.rolname, r.rolname, a.attr, a.reach),
               format('ALTER ROLE %I NO%s;', r.rolname, a.attr)
        FROM unnest(acting_logins) x(oid)
        JOIN pg_catalog.pg_roles l ON l.oid = x.oid
        JOIN pg_catalog.pg_roles r ON tenantry.can_become(l.oid, r.oid)
        CROSS JOIN LATERAL (VALUES
            -- PostgreSQL 16 lets CREATEROLE grant only roles it holds with ADMIN OPTION.
            (r.rolcreaterole AND pg_catalog.current_setting('server_version_num')::int < 160000,
             'CREATEROLE', 'it grants itself any role but a superuser, tenantry_owner among them, and so every tenant''s rows'),
            (r.rolreplication, 'REPLICATION', 'with wal_level logical it decodes every change to every table, every tenant''s rows and tenantry.context_keys among them'),
            -- tenantry's own roles are named below, once each.
            (r.rolbypassrls AND r.rolname::text <> ALL (acting_roles), 'BYPASSRLS', 'row level security does not apply to it: after SET ROLE every tenant reads every tenant''s rows'),
            (r.rolsuper AND r.rolname::text <> ALL (acting_roles), 'SUPERUSER', 'after SET ROLE nothing bounds it')
        ) a(held, attr, reach)
        WHERE a.held
        UNION ALL
        -- tenantry's own roles with an attribute that voids row level
        -- security (a DBA's ALTER ROLE tenantry_app BYPASSRLS: the running
        -- server answered every tenant's request with every tenant's rows,
        -- and the doctor was silent; found by a DBA's review). The login
        -- tenantry_server is one of them: a superuser or BYPASSRLS login is
        -- an operator, no login acting for tenants, so the rules above pass
        -- it by.
        SELECT 'role ' || pg_catalog.quote_ident(r.rolname), 'login_roles'::text,
               format('%I, %s, has %s: %s', r.rolname,
                      CASE WHEN r.rolname = 'tenantry_server' THEN 'the server''s login'
                           ELSE 'a role every request of the server acts as' END,
                      a.attr, a.reach),
               format('ALTER ROLE %I NO%s;', r.rolname, a.attr)
        FROM pg_catalog.pg_roles r
        CROSS JOIN LATERAL (VALUES
            (r.rolbypassrls, 'BYPASSRLS', 'row level security does not apply to it, and every tenant reads every tenant''s rows through it'),
            (r.rolsuper, 'SUPERUSER', 'nothing bounds it, and SQL injected into the app reads every tenant''s rows and the context signing keys')
        ) a(held, attr, reach)
        WHERE r.rolname::text = ANY (acting_roles) AND a.held
        UNION ALL
        -- CREATE in a schema or on the database (a schema of its own), for
        -- a role the login can become or PUBLIC: a function or table planted
        -- on the search path (public before tenantry, as the guide sets it;
        -- a schema named like an app role, which "$user" puts first) runs
        -- in another tenant's context, or as an operator who calls it
        -- unqualified, and captured the context signing key (found by a
        -- DBA's review: databases made before PostgreSQL 15 keep CREATE on
        -- public for PUBLIC, and GRANT ALL ON DATABASE gives CREATE).
        SELECT 'role ' || pg_catalog.quote_ident(l.rolname), 'login_roles'::text,
               format('login %I acts for tenants and can create objects %s (through %s): a function or table planted there runs in another tenant''s context, or with the rights of an operator who calls it unqualified',
                      l.rolname, c.place, array_to_string(c.grantees || c.owner_role, ', ')),
               concat_ws(' ',
                         CASE WHEN cardinality(c.grantees) > 0
                              THEN format('REVOKE CREATE ON %s FROM %s;', c.target, array_to_string(c.grantees, ', '))
                                   -- Taken from PUBLIC, given back to who makes tables
                                   -- there (a migration role that is no superuser
                                   -- created through PUBLIC's grant).
                                   || CASE WHEN c.public_schema
                                           THEN format(' GRANT CREATE ON %s TO tenantry_owner;', c.target)
                                           ELSE '' END END,
                         CASE WHEN c.owner_role IS NOT NULL
                              THEN format('ALTER %s OWNER TO <your migration role>; -- one that no login acting for tenants can become', c.target) END)
               || CASE WHEN c.public_schema
                       THEN ' -- and GRANT CREATE there to the roles that run your migrations' ELSE '' END
        FROM unnest(acting_logins) x(oid)
        JOIN pg_catalog.pg_roles l ON l.oid = x.oid
        CROSS JOIN LATERAL (
            SELECT o.place, o.target,
                   ARRAY(SELECT DISTINCT CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.rolname) END
                         FROM pg_catalog.aclexplode(o.acl) acl
                         LEFT JOIN pg_catalog.pg_roles g ON g.oid = acl.grantee
                         WHERE acl.privilege_type = 'CREATE' AND acl.grantee <> o.owner
                           AND (acl.grantee = 0 OR tenantry.can_become(l.oid, acl.grantee))
                         ORDER BY 1) AS grantees,
                   -- A schema's owner creates in it. The database's owner,
                   -- and public's (pg_database_owner), are the finding of
                   -- pg_database_owner above.
                   CASE WHEN o.is_schema AND o.owner <> 'pg_database_owner'::regrole
                             AND tenantry.can_become(l.oid, o.owner)
                        THEN o.owner::regrole::text END AS owner_role,
                   o.is_schema AND EXISTS (SELECT 1 FROM pg_catalog.aclexplode(o.acl) acl
                                           WHERE acl.grantee = 0 AND acl.privilege_type = 'CREATE') AS public_schema
            FROM (SELECT format('in schema %I', n.nspname), format('SCHEMA %I', n.nspname), n.nspacl, n.nspowner, true
                  FROM pg_catalog.pg_namespace n
                  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
                  UNION ALL
                  SELECT 'in this database (a schema of its own)', format('DATABASE %I', d.datname), d.datacl, d.datdba, false
                  FROM pg_catalog.pg_database d
                  WHERE d.datname = pg_catalog.current_database()
            ) o(place, target, acl, owner, is_schema)
        ) c
        WHERE cardinality(c.grantees) > 0 OR c.owner_role IS NOT NULL
        ORDER BY 1, 3;
        -- A prepared transaction of a role acting for tenants (PREPARE
        -- TRANSACTION needs max_prepared_transactions above 0, which Citus
        -- sets): it keeps its locks with no session, through restarts, and
        -- no timeout ends it; SQL injected into the app held a lock on
        -- tenantry.resources that way and stalled every tenant (found by a
        -- DBA's review). Citus's own (citus_...) end in its recovery. Read
        -- where the caller may (the doctor's superuser; pg_prepared_xacts is
        -- taken from PUBLIC).
        IF pg_catalog.has_table_privilege('pg_catalog.pg_prepared_xacts', 'SELECT') THEN
            RETURN QUERY
            SELECT format('role %s', x.owner), 'prepared_transactions'::text,
                   format('prepared transaction %L of %s (a role acting for tenants) has kept its locks since %s with no session, and no timeout ends it',
                          x.gid, x.owner, x.prepared),
                   format('ROLLBACK PREPARED %L;', x.gid)
            FROM pg_catalog.pg_prepared_xacts x
            WHERE x.database = pg_catalog.current_database()
              AND pg_catalog.quote_ident(x.owner) = ANY (granted_roles)
              AND x.gid NOT LIKE 'citus\_%'
              AND x.prepared < pg_catalog.now() - interval '10 seconds'
            ORDER BY 1, 3;
        END IF;
        -- An extension installed since migrate ran whose objects PUBLIC may
        -- use and that read or reach state every tenant shares (rule
        -- shared_state; 08_shared_state.sql takes them from PUBLIC when
        -- migrate applies it; found by a DBA's review: pg_prewarm measured a
        -- schema tenant's table and evicted every tenant's cache, pgrowlocks
        -- showed other tenants' locked rows).
        RETURN QUERY
        SELECT format('extension %I', o.extension), 'shared_state'::text,
               format('%s of its objects are open to every role, every tenant''s among them: %s (%s)',
                      count(*), min(o.reach), string_agg(o.privilege, ', ' ORDER BY o.privilege)),
               string_agg(format('REVOKE %s FROM PUBLIC;', o.privilege)
                          || CASE WHEN o.monitoring THEN format(' GRANT %s TO pg_monitor;', o.privilege) ELSE '' END,
                          ' ' ORDER BY o.privilege)
               || ' -- as a superuser, or run tenantry migrate; then GRANT what roles of your own use to them'
        FROM tenantry.shared_extension_objects() o
        GROUP BY o.extension
        ORDER BY 1;
        -- The memberships tenantry's roles are made with (0001): the
        -- server's login becomes tenantry_app, tenantry_admin and
        -- tenantry_logger, and tenantry_app the narrow roles of listings.
        -- One revoked by hand failed every request of its kind with 503,
        -- or dropped every request-log row while the server answered 200,
        -- and the doctor said nothing (found by an operations review).
        -- tenantry migrate grants them back.
        RETURN QUERY
        SELECT format('role %s', m.member), 'server_roles'::text,
               format('%s is not a member of %s: %s', m.member, m.role, m.needed),
               format('GRANT %s TO %s; -- or run tenantry migrate', m.role, m.member)
        FROM (VALUES ('tenantry_app', 'tenantry_server', 'the server serves no tenant''s request (each answers 503)'),
                     ('tenantry_admin', 'tenantry_server', 'the server creates and changes no tenant'),
                     ('tenantry_logger', 'tenantry_server', 'the server writes no request-log row, so usage and metrics stop'),
                     ('tenantry_app_own', 'tenantry_app', 'listings of a tenant''s own rows fail'),
                     ('tenantry_app_shared', 'tenantry_app', 'listings of rows shared with a tenant fail')) m(role, member, needed)
        WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members a
                          WHERE a.roleid = pg_catalog.to_regrole(m.role)
                            AND a.member = pg_catalog.to_regrole(m.member));
        -- The parameters tenantry keeps its state in (rule parameter_grants):
        -- backtrace_functions holds the verified tenant context, which only
        -- tenantry_owner's functions may write (01_context.sql), and
        -- session_replication_role, which the tier moves set as the owner,
        -- turns triggers and foreign keys off. PUBLIC or a role an acting
        -- login can become holding SET or ALTER SYSTEM on one sets any
        -- tenant's context, or writes rows past the checks that keep them
        -- with their tenant; a default of one in a role's or this database's
        -- settings starts sessions that way; the owner without its grant
        -- fails every request (and was answered 403, as if a client's fault).
        RETURN QUERY
        SELECT format('parameter %s', p.name), 'parameter_grants'::text,
               format('tenantry_owner may not set %s, %s', p.name, p.needed),
               format('GRANT SET ON PARAMETER %s TO tenantry_owner; -- as a superuser', p.name)
        FROM (VALUES ('backtrace_functions', 'where tenantry keeps the verified tenant context: every request of the server fails'),
                     ('session_replication_role', 'which the moves of tenants between tiers set: every move fails')) p(name, needed)
        WHERE NOT pg_catalog.has_parameter_privilege('tenantry_owner', p.name, 'SET')
        UNION ALL
        SELECT format('parameter %s', a.parname), 'parameter_grants'::text,
               format('%s may %s %s, which %s', g.name, pg_catalog.lower(x.privilege_type), a.parname,
                      CASE a.parname
                           WHEN 'backtrace_functions' THEN 'holds the verified tenant context: SQL running as it (injected into the app) sets any tenant''s context and reads that tenant''s rows'
                           ELSE 'turns triggers and foreign keys off: rows written that way skip the checks that keep them with their tenant' END),
               format('REVOKE %s ON PARAMETER %s FROM %s;', x.privilege_type, a.parname, g.name)
        FROM pg_catalog.pg_parameter_acl a
        CROSS JOIN LATERAL pg_catalog.aclexplode(a.paracl) x
        CROSS JOIN LATERAL (SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END) g(name)
        WHERE a.parname IN ('backtrace_functions', 'session_replication_role')
          AND (x.grantee = 0 OR g.name = ANY (granted_roles))
        UNION ALL
        SELECT format('parameter %s', s.name), 'parameter_grants'::text,
               format('%s sets %s = %L for every new session%s: %s',
                      CASE WHEN d.setrole = 0 AND d.setdatabase = 0 THEN 'ALTER ROLE ALL'
                           WHEN d.setrole = 0 THEN format('database %I', pg_catalog.current_database())
                           ELSE format('role %s', d.setrole::regrole) END,
                      s.name, s.value,
                      CASE WHEN d.setrole <> 0 AND d.setdatabase <> 0 THEN ' in this database' ELSE '' END,
                      CASE s.name
                           WHEN 'backtrace_functions' THEN 'tenantry''s verified tenant context lives there, and such a session holds whatever context that value names without proving it'
                           ELSE 'triggers and foreign keys are off in such a session, the checks that keep rows with their tenant among them' END),
               CASE WHEN d.setrole = 0 AND d.setdatabase = 0 THEN format('ALTER ROLE ALL RESET %s;', s.name)
                    WHEN d.setrole = 0 THEN format('ALTER DATABASE %I RESET %s;', pg_catalog.current_database(), s.name)
                    WHEN d.setdatabase = 0 THEN format('ALTER ROLE %s RESET %s;', d.setrole::regrole, s.name)
                    ELSE format('ALTER ROLE %s IN DATABASE %I RESET %s;', d.setrole::regrole, pg_catalog.current_database(), s.name) END
        FROM pg_catalog.pg_db_role_setting d
        CROSS JOIN LATERAL unnest(d.setconfig) c(item)
        CROSS JOIN LATERAL (SELECT pg_catalog.split_part(c.item, '=', 1),
                                   pg_catalog.substr(c.item, pg_catalog.strpos(c.item, '=') + 1)) s(name, value)
        WHERE d.setdatabase IN (0, (SELECT o.oid FROM pg_catalog.pg_database o WHERE o.datname = pg_catalog.current_database()))
          AND s.name IN ('backtrace_functions', 'session_replication_role')
          -- Every role's, or a role acting for tenants (or one such a login
          -- can become, which SET ROLE does not reset it for).
          AND (d.setrole = 0 OR d.setrole::regrole::text = ANY (granted_roles) OR d.setrole = ANY (acting_logins))
        ORDER BY 1, 3;
        -- A function or procedure of another schema named like one of
        -- tenantry's that the roles acting for tenants may call (rule
        -- shadowed_function): the guide's definitions pasted as written make
        -- public.set_tenant_context, public.current_tenant_id (reading a
        -- setting any role sets), public.setup_connection (SET SESSION
        -- AUTHORIZATION DEFAULT: a psql session of the app role became the
        -- superuser) and more, and on the guide's search path (public,
        -- tenantry) each is called instead of tenantry's; the doctor was
        -- silent once the guide's policies were dropped (found by a review as
        -- a new user). An extension's own functions are the extension's.
        -- Not a reason to refuse serving (the server calls tenantry's by
        -- their qualified names): served with a warning.
        RETURN QUERY
        SELECT format('function %s', o.oid::regprocedure), 'shadowed_function'::text,
               format('%s is named like tenantry.%I, which it stands in for wherever %I comes before tenantry on the search path (the guide''s: public, tenantry) and the arguments fit it as well: psql sessions and SQL of yours that call %I unqualified run it instead of tenantry''s',
                      o.oid::regprocedure, o.proname, n.nspname, o.proname),
               format('DROP ROUTINE %s; -- or rename it (the guide''s own definitions are unsafe as written; tenantry''s replace them)',
                      o.oid::regprocedure)
        FROM pg_catalog.pg_proc o
        JOIN pg_catalog.pg_namespace n ON n.oid = o.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenantry')
          AND n.nspname !~ '^(pg_toast|pg_temp_|pg_toast_temp_|tenant_[0-9a-f]{20}$)'
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                          WHERE e.classid = 'pg_catalog.pg_proc'::regclass AND e.objid = o.oid AND e.deptype = 'e')
          AND EXISTS (SELECT 1 FROM pg_catalog.pg_proc tp
                      WHERE tp.pronamespace = 'tenantry'::regnamespace AND tp.proname = o.proname
                        AND EXISTS (SELECT 1 FROM unnest(acting_roles) r(name)
                                    WHERE r.name <> 'tenantry_server'
                                      AND pg_catalog.has_function_privilege(r.name, tp.oid, 'EXECUTE')))
        ORDER BY 1;
        -- Row level security enabled and forced on every one of them that has
        -- policies (a partition under its parent's name), and on every table
        -- of a schema tenant: a policy is nothing while it is off.
        RETURN QUERY
        SELECT c.oid::regclass::text, 'rls'::text,
               'row level security is not enabled and forced'::text,
               format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY; ALTER TABLE %s FORCE ROW LEVEL SECURITY;',
                      c.oid::regclass, c.oid::regclass)
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
          AND ((n.nspname = 'tenantry'
                AND coalesce((SELECT pc.relname FROM pg_catalog.pg_inherits i
                              JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent
                              WHERE i.inhrelid = c.oid AND c.relispartition), c.relname)::text
                    IN (SELECT o.table_name FROM tenantry.own_policy_definitions() o))
               OR n.nspname ~ '^tenant_[0-9a-f]{20}$')
        ORDER BY 1;
        RETURN QUERY
        SELECT 'tenantry.' || coalesce(n.table_name, o.table_name), 'own_policies'::text,
               CASE WHEN o.policy IS NULL
                    THEN format('policy %s is not one of tenantry''s, and every query on the table ORs it in: %s',
                                n.policy, n.definition)
                    WHEN n.policy IS NULL
                    THEN format('tenantry''s policy %s is gone (%s)', o.policy, o.definition)
                    ELSE format('tenantry''s policy %s was changed to: %s (tenantry''s: %s)',
                                n.policy, n.definition, o.definition) END,
               CASE WHEN o.policy IS NULL
                    THEN format('DROP POLICY %I ON tenantry.%I;', n.policy, n.table_name)
                    ELSE 'DELETE FROM tenantry.schema_definitions; -- then run tenantry migrate: it applies every definition again' END
        FROM tenantry.current_own_policies() n
        FULL JOIN tenantry.own_policy_definitions() o ON o.table_name = n.table_name AND o.policy = n.policy
        WHERE n.definition IS DISTINCT FROM o.definition
        ORDER BY 1, 3;
        -- Owners and privileges of tenantry's own objects against the
        -- record migrate made of them (rule own_grants, 16_own_privileges.sql):
        -- a grant on tenantry.context_keys hands out the context signing
        -- keys, a table's owner reads and changes it past every policy, and
        -- a grant of tenantry's revoked fails requests (found by a DBA's
        -- review: the doctor checked only policies there). An owner changed
        -- is named alone (ALTER ... OWNER TO moves the owner's privileges
        -- with it); the privileges are compared once it is right again.
        RETURN QUERY
        WITH paired AS (
            SELECT coalesce(n.object, o.object) AS object, n.grant_on, n.alter_on, n.column_name, n.tenant_oracle,
                   n.owner AS now_owner, o.owner AS made_owner,
                   coalesce(n.privileges, '{}') AS now_privileges, coalesce(o.privileges, '{}') AS made_privileges,
                   n.object IS NOT NULL AS present, o.object IS NOT NULL AS recorded
            FROM tenantry.current_own_privileges() n
            FULL JOIN tenantry.own_privilege_definitions() o ON o.object = n.object
        ), judged AS (
            SELECT p.*,
                   CASE WHEN NOT p.present AND p.object NOT LIKE 'index %' THEN 'gone'
                        -- An index of an operator's is named only when it
                        -- does not lead with tenant_id on a tenant-keyed table.
                        WHEN NOT p.present OR (NOT p.recorded AND p.object LIKE 'index %' AND NOT p.tenant_oracle) THEN 'fine'
                        WHEN NOT p.recorded THEN 'foreign'
                        WHEN p.column_name IS NULL AND p.now_owner IS DISTINCT FROM p.made_owner THEN 'owner'
                        ELSE 'privileges' END AS finding,
                   ARRAY(SELECT x FROM unnest(p.now_privileges) x EXCEPT SELECT y FROM unnest(p.made_privileges) y ORDER BY 1) AS extra,
                   ARRAY(SELECT y FROM unnest(p.made_privileges) y EXCEPT SELECT x FROM unnest(p.now_privileges) x ORDER BY 1) AS missing
            FROM paired p
        )
        SELECT j.object, 'own_grants'::text,
               CASE j.finding
                    WHEN 'gone' THEN format('tenantry''s %s is gone', j.object)
                    WHEN 'foreign' THEN CASE WHEN j.object LIKE 'index %'
                                             THEN format('%s is not led by tenant_id: a scan of it reads other tenants'' rows before the policy filters them, and EXPLAIN ANALYZE counts them (an oracle of their existence)', j.object)
                                             ELSE format('%s is not one of tenantry''s: schema tenantry holds only what tenantry migrate makes, and whoever may create there plants what tenantry''s unqualified names reach', j.object) END
                    WHEN 'owner' THEN format('%s is owned by %s, not %s: its owner reads and changes it past every policy and grant, and grants it to whom it likes',
                                             j.object, j.now_owner, j.made_owner)
                    ELSE concat_ws('; ',
                                   CASE WHEN cardinality(j.extra) > 0
                                        THEN format('%s grants %s beyond what tenantry''s definitions grant%s', j.object,
                                                    array_to_string(j.extra, ', '),
                                                    CASE WHEN j.object LIKE '% tenantry.context_keys'
                                                         THEN ' (the context signing keys: with one, any tenant''s context is forged)' ELSE '' END) END,
                                   CASE WHEN cardinality(j.missing) > 0
                                        THEN format('%s lacks %s that tenantry''s definitions grant: the requests that need it fail',
                                                    j.object, array_to_string(j.missing, ', ')) END) END,
               CASE j.finding
                    WHEN 'gone' THEN 'DELETE FROM tenantry.schema_definitions; -- then run tenantry migrate as a superuser: it applies every definition again'
                    WHEN 'foreign' THEN CASE WHEN j.column_name IS NOT NULL
                                             THEN format('ALTER %s DROP COLUMN %I; -- columns of yours belong in tables of yours', j.grant_on, j.column_name)
                                             WHEN j.object LIKE 'index %'
                                             THEN format('DROP %s CONCURRENTLY %s; -- indexes of yours belong on tables of yours', split_part(j.alter_on, ' ', 1), split_part(j.alter_on, ' ', 2))
                                             ELSE format('ALTER %s SET SCHEMA public; -- or drop it: objects of yours belong in schemas of yours', j.alter_on) END
                    WHEN 'owner' THEN format('ALTER %s OWNER TO %s;', j.alter_on, j.made_owner)
                    ELSE (SELECT string_agg(q.statement, ' ' ORDER BY q.ord, q.statement)
                          FROM (SELECT 1 AS ord,
                                       format('REVOKE %s%s ON %s FROM %s;', split_part(rtrim(x, '*'), ':', 2),
                                              CASE WHEN j.column_name IS NOT NULL THEN format(' (%I)', j.column_name) ELSE '' END,
                                              j.grant_on, split_part(x, ':', 1)) AS statement
                                FROM unnest(j.extra) x
                                UNION ALL
                                SELECT 2,
                                       format('GRANT %s%s ON %s TO %s%s;', split_part(rtrim(y, '*'), ':', 2),
                                              CASE WHEN j.column_name IS NOT NULL THEN format(' (%I)', j.column_name) ELSE '' END,
                                              j.grant_on, split_part(y, ':', 1),
                                              CASE WHEN y LIKE '%*' THEN ' WITH GRANT OPTION' ELSE '' END)
                                FROM unnest(j.missing) y) q) END
        FROM judged j
        WHERE j.finding IN ('gone', 'foreign', 'owner')
           OR (j.finding = 'privileges' AND (cardinality(j.extra) > 0 OR cardinality(j.missing) > 0))
        UNION ALL
        -- The database's own grant to the owner role, which pg_dump does not
        -- carry (a restore into a database made beforehand lost it: schema
        -- tenants' creations failed 403 while the doctor was silent; found
        -- by a DBA's review).
        SELECT format('database %I', pg_catalog.current_database()), 'own_grants'::text,
               format('tenantry_owner may not create schemas in database %I: creating a schema tenant fails (a restore into a database made beforehand loses this grant: pg_dump does not carry it)',
                      pg_catalog.current_database()),
               format('GRANT CREATE ON DATABASE %I TO tenantry_owner;', pg_catalog.current_database())
        WHERE NOT pg_catalog.has_database_privilege('tenantry_owner', pg_catalog.current_database(), 'CREATE')
        ORDER BY 1, 3;
        -- Every schema tenant's table has exactly the policies and the table
        -- privileges of its family's pooled table (secure_tenant_copy made
        -- it so): a policy added or loosened on one of them, or a grant, lets
        -- other tenants read that schema tenant's rows through it.
        -- Compared as stored first (one catalog read each, without the
        -- positions in the SQL that made them): printing a policy's
        -- expressions (pg_get_expr) opens its table, which with thousands of
        -- schema tenants costs seconds and leaves every table's cache entry
        -- in the backend. Only policies that differ are printed (a template
        -- with dropped columns numbers its columns otherwise, and is
        -- compared as printed).
        RETURN QUERY
        WITH copies AS (
            SELECT f.copy::oid AS copy, f.template::oid AS template, c.relacl
            FROM tenantry.family_copies() f
            JOIN pg_catalog.pg_class c ON c.oid = f.copy
        ), policies AS (
            -- Each policy of the copies and their templates once (a
            -- template's, not once per copy).
            SELECT p.polrelid AS rel, p.oid AS pol, p.polname,
                   pg_catalog.regexp_replace(concat_ws(' ', p.polpermissive, p.polcmd, p.polroles::text,
                                                       p.polqual::text, p.polwithcheck::text),
                                             ' :location -?[0-9]+', '', 'g') AS raw
            FROM pg_catalog.pg_policy p
            WHERE p.polrelid IN (SELECT s.copy FROM copies s UNION SELECT s.template FROM copies s)
        ), have AS (
            SELECT s.copy, s.template, p.pol, p.polname, p.raw
            FROM copies s JOIN policies p ON p.rel = s.copy
        ), expected AS (
            SELECT s.copy, s.template, p.pol, p.polname, p.raw
            FROM copies s JOIN policies p ON p.rel = s.template
        ), differing AS (
            SELECT coalesce(h.copy, e.copy) AS copy, coalesce(h.template, e.template) AS template,
                   h.polname AS have_name, e.polname AS expected_name,
                   CASE WHEN h.pol IS NOT NULL THEN tenantry.policy_definition(h.pol) END AS have_definition,
                   CASE WHEN e.pol IS NOT NULL THEN tenantry.policy_definition(e.pol) END AS expected_definition
            FROM have h
            FULL JOIN expected e ON e.copy = h.copy AND e.polname = h.polname
            WHERE h.raw IS DISTINCT FROM e.raw
        )
        SELECT d.copy::regclass::text, 'copy_policies'::text,
               CASE WHEN d.expected_name IS NULL
                    THEN format('policy %I is not on %s, whose table this is, and every query on it ORs it in: %s',
                                d.have_name, d.template::regclass, d.have_definition)
                    WHEN d.have_name IS NULL
                    THEN format('policy %I of %s is missing', d.expected_name, d.template::regclass)
                    ELSE format('policy %I was changed to: %s (on %s: %s)',
                                d.have_name, d.have_definition, d.template::regclass, d.expected_definition) END,
               format('SELECT tenantry.secure_tenant_copy(%L, %L); -- as a superuser: makes it like %s again',
                      d.template::regclass::text, d.copy::regclass::text, d.template::regclass)
        FROM differing d
        WHERE d.have_definition IS DISTINCT FROM d.expected_definition
        UNION ALL
        SELECT s.copy::regclass::text, 'copy_grants'::text,
               format('grants %s to %s, which %s does not',
                      acl.privilege_type, CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END,
                      s.template::regclass),
               format('SELECT tenantry.secure_tenant_copy(%L, %L); -- as a superuser: makes it like %s again',
                      s.template::regclass::text, s.copy::regclass::text, s.template::regclass)
        FROM copies s
        CROSS JOIN LATERAL pg_catalog.aclexplode(s.relacl) acl
        WHERE acl.grantee <> (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = s.copy)
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class tc, pg_catalog.aclexplode(tc.relacl) ta
                          WHERE tc.oid = s.template AND ta.grantee = acl.grantee
                            AND ta.privilege_type = acl.privilege_type)
        UNION ALL
        -- Column privileges the same way (by column name: a template with
        -- dropped columns numbers its columns otherwise).
        SELECT s.copy::regclass::text, 'copy_grants'::text,
               format('grants %s on column %I to %s, which %s does not',
                      acl.privilege_type, a.attname,
                      CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE acl.grantee::regrole::text END,
                      s.template::regclass),
               format('SELECT tenantry.secure_tenant_copy(%L, %L); -- as a superuser: makes it like %s again',
                      s.template::regclass::text, s.copy::regclass::text, s.template::regclass)
        FROM copies s
        JOIN pg_catalog.pg_attribute a ON a.attrelid = s.copy AND a.attacl IS NOT NULL
        CROSS JOIN LATERAL pg_catalog.aclexplode(a.attacl) acl
        WHERE acl.grantee <> (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = s.copy)
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute ta, pg_catalog.aclexplode(ta.attacl) tacl
                          WHERE ta.attrelid = s.template AND ta.attname = a.attname AND ta.attacl IS NOT NULL
                            AND tacl.grantee = acl.grantee AND tacl.privilege_type = acl.privilege_type)
        ORDER BY 1, 3;
        -- A schema tenant's table whose family is gone (the team's table of
        -- its name lost its primary key (tenant_id, column)): the rules above
        -- no longer compare it, and moves and exports no longer reach it.
        RETURN QUERY
        SELECT o.copy::text, 'copy_family'::text,
               format('named as adopted table %s, which has no primary key (tenant_id, one column) any more: tenantry no longer checks this schema tenant''s table against it, and refuses to move or export the tenant',
                      o.adopted),
               -- The index first, without holding back the team's table
               -- (CONCURRENTLY: its own statement, outside a transaction
               -- block), then the key on it in a moment; a key the team put
               -- in its place goes in the same statement.
               format('CREATE UNIQUE INDEX CONCURRENTLY %1$I ON %2$s (tenant_id, %3$s); ALTER TABLE %2$s %4$sADD PRIMARY KEY USING INDEX %1$I;',
                      left(k.relname, 50) || '_tenant_pkey', o.adopted,
                      coalesce(quote_ident(o.key_column), '<its key column>'),
                      coalesce((SELECT format('DROP CONSTRAINT %I, ', pk.conname) FROM pg_catalog.pg_constraint pk
                                WHERE pk.conrelid = o.adopted AND pk.contype = 'p'), ''))
        FROM tenantry.orphan_copies() o
        JOIN pg_catalog.pg_class k ON k.oid = o.adopted
        ORDER BY 1;
        -- Columns: a schema tenant's table stands alone, so a column the
        -- team's migration changed without a tenant-schema step is missing
        -- (or left over) in its schema, and that tenant's queries fail.
        -- tenantry doctor's (an operator's); not the server's boot check,
        -- which runs no definer function and checks isolation rules.
        IF pg_catalog.has_function_privilege('tenantry.copy_column_drift()', 'EXECUTE') THEN
            -- Only the copies of a template with no problem of its own: its
            -- fix (a default set again, an index dropped) changes what the
            -- copies must be, and a copy's fix worked out before it undid it
            -- when the fixes ran top to bottom (found by a review as a new
            -- user: the tenant_default fix, then the copies' DROP DEFAULT).
            -- Named once the template is sound.
            RETURN QUERY
            WITH drift AS MATERIALIZED (
                SELECT d.copy, d.template, d.problem, d.fix FROM tenantry.copy_column_drift() d
            ), unsound AS MATERIALIZED (
                SELECT dt.template FROM (SELECT DISTINCT d.template FROM drift d) dt
                WHERE EXISTS (SELECT 1 FROM tenantry.table_findings(dt.template))
            )
            SELECT d.copy::text, 'copy_columns'::text, d.problem, d.fix
            FROM drift d
            WHERE d.template NOT IN (SELECT u.template FROM unsound u);
        END IF;
        -- Indexes and constraints the same way (a missing UNIQUE lets the
        -- schema tenant hold rows the team's table refuses).
        IF pg_catalog.has_function_privilege('tenantry.copy_constraint_drift()', 'EXECUTE') THEN
            RETURN QUERY
            WITH drift AS MATERIALIZED (
                SELECT d.copy, d.template, d.problem, d.fix FROM tenantry.copy_constraint_drift() d
            ), unsound AS MATERIALIZED (
                SELECT dt.template FROM (SELECT DISTINCT d.template FROM drift d) dt
                WHERE EXISTS (SELECT 1 FROM tenantry.table_findings(dt.template))
            )
            SELECT d.copy::text, 'copy_constraints'::text, d.problem, d.fix
            FROM drift d
            WHERE d.template NOT IN (SELECT u.template FROM unsound u);
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.table_findings(regclass) IS 'Internal: the doctor''s findings (table, rule, problem, fix) in the order their fixes run; tenantry.table_problems returns them with their severity. Runs with the caller''s rights.';
REVOKE EXECUTE ON FUNCTION tenantry.table_findings(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantry.table_findings(regclass) TO tenantry_admin, tenantry_server;

/**
 * Whether adopting a table refuses on a finding of this rule: every rule but
 * two of the doctor's warnings, a sequence the app may not use (adopting
 * grants it; a backfill checks before it does) and a restrictive policy of
 * the team's that may or may not fail on a value. One list for adopt_table,
 * adopt_tables and the Rust library's check before a batched backfill.
 */
CREATE OR REPLACE FUNCTION tenantry.adoption_refuses(rule text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT rule NOT IN ('sequence_usage', 'restrictive_policy', 'tier_views') $$;
COMMENT ON FUNCTION tenantry.adoption_refuses(text) IS 'Internal: whether adopt_table and adopt_tables refuse a table on a finding of the doctor''s rule (every rule but the warnings sequence_usage, which adopting repairs, restrictive_policy and tier_views).';
REVOKE EXECUTE ON FUNCTION tenantry.adoption_refuses(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantry.adoption_refuses(text) TO tenantry_admin, tenantry_server;

/**
 * The doctor, as tenantry doctor, serve's boot check and a psql session read
 * it: each finding with its severity, decided here once for every reader (it
 * was a list in the server's code and another in the CLI's before; a psql
 * user could not tell a warning from a refusal).
 *   critical  about the cluster's roles and parameters or tenantry's own
 *             objects: serve refuses to start, whatever its flags;
 *   error     an isolation rule of a table: serve refuses to start unless
 *             --allow-table-problems;
 *   warning   breaks no isolation of the server's: served, with a warning
 *             (tenant_default: a dropped tenant_id default fails inserts
 *             that leave it out, which an ORM's schema sync can do on every
 *             deployment; shadowed_function: misleads unqualified calls of
 *             psql sessions and of your SQL, never the server's, which
 *             qualifies its own; exists: an adopted table was dropped, which
 *             leaves no row to reach; references: a foreign key that only
 *             keeps schema tenants' tables from being made; sequence_usage:
 *             a default drawing from a sequence the app may not use fails
 *             inserts; unguarded: a tenant-keyed table with policies of the
 *             team's own, which the doctor cannot judge; restrictive_policy:
 *             a team's restrictive policy that may fail on another tenant's
 *             value, which the doctor cannot tell from one that never fails).
 */
CREATE OR REPLACE FUNCTION tenantry.table_problems(tbl regclass DEFAULT NULL)
RETURNS TABLE (table_name text, rule text, problem text, fix text, severity text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f.table_name, f.rule, f.problem, f.fix,
           CASE WHEN f.rule IN ('login_roles', 'server_roles', 'parameter_grants', 'own_grants') THEN 'critical'
                WHEN f.rule IN ('tenant_default', 'shadowed_function', 'exists', 'references',
                                'sequence_usage', 'unguarded', 'restrictive_policy', 'tier_views',
                                'citus_sharing') THEN 'warning'
                ELSE 'error'
           END
    FROM tenantry.table_findings(tbl) WITH ORDINALITY f
    ORDER BY f.ordinality
$$;
COMMENT ON FUNCTION tenantry.table_problems(regclass) IS 'The doctor: each rule an adopted table (all, or the one given) breaks, with the SQL that fixes it: tenant_id uuid NOT NULL referencing tenantry.tenants with the default tenantry.current_tenant_id() (rule tenant_default), not a child table, RLS enabled and forced, owned by tenantry_owner, no permissive policy but tenantry''s (restrictive ones of the team''s stay), no grants to PUBLIC and only the app grants, USAGE on its schema for the app, its schema owned by no role that a login acting for tenants can become (rule schema_owner: a schema''s owner drops the table), no trigger of the tcn extension (rule notify_trigger: every change''s key to every listener), every index led by tenant_id, and by a method that takes the policy''s condition before any other (with hierarchy, btree only; never BRIN), the keep_tenant_id triggers (by the SET list, and on the row as written), with sharing a primary key (tenant_id, column) and the triggers that revoke a deleted row''s shares, and no sharing at all on a distributed Citus coordinator, where shares reach nobody (rule citus_sharing, a warning), foreign keys between tenant tables pairing tenant_id, not renamed or moved to another schema since its adoption once schema tenants exist (rule renamed), not named like tenantry''s own tenant table (resources), whose schema tenants'' tables hold the name in their schemas (rule name), no foreign key action that would set tenant_id (ON DELETE SET NULL or SET DEFAULT without a column list leaving it out, ON UPDATE SET NULL or SET DEFAULT; rule foreign_key_actions), no BEFORE trigger of the team''s that a foreign key''s action fires (it runs as the table''s owner without row level security) whose function names an adopted table (rule cascade_triggers), once schema tenants exist no foreign key into a table family from a table that is not one (rule tiers), no view over it that runs with the rights of an owner bypassing row level security (not security_invoker) and no materialized view of it readable by PUBLIC or tenantry''s roles, once schema tenants exist no view or materialized view over a table family of the team''s, which reads the pooled table alone (rule tier_views, a warning). Without a table, also no table of the team''s that a role acting for tenants may use while tenantry does not guard it: one holding tenants'' rows (tenant_id, or a key to tenantry.tenants) with row level security off, or with a permissive policy reading a setting any role may set, such as the guide''s app.current_tenant_id (rule unadopted); row level security enabled and forced on tenantry''s own tables that have policies and on every schema tenant''s table (rule rls), every policy on tenantry''s own tables that was added, changed or dropped since tenantry migrate made them (rule own_policies), and every schema tenant''s table with the policies and grants of its family''s pooled table (copy_policies, copy_grants), no schema tenant''s table left without its family because the team''s table lost its primary key (copy_family), no login acting for tenants (a member of tenantry''s app roles, tenantry_admin or tenantry_logger that is no operator) that can become one of PostgreSQL''s built-in roles reaching past tenantry''s grants (pg_read_all_data, pg_write_all_data, the server file and program roles, pg_maintain, pg_signal_backend, pg_monitor and its parts, pg_checkpoint, the database''s owner, ...) or a role with CREATEROLE or REPLICATION, or that may create objects in a schema or a schema in the database (rule login_roles), tenantry_server a member of tenantry_app, tenantry_admin and tenantry_logger, and tenantry_app of tenantry_app_own and tenantry_app_shared (rule server_roles), for a caller that may read pg_prepared_xacts no prepared transaction of a role acting for tenants older than ten seconds (rule prepared_transactions), no object of an extension that reads or reaches shared state (pg_stat_statements, pg_prewarm, pgrowlocks, old_snapshot, dblink) that PUBLIC may use (rule shared_state), tenantry_owner may set backtrace_functions and session_replication_role and neither PUBLIC nor a role such a login can become may, nor does a role''s or the database''s setting give them a default (rule parameter_grants), no function or procedure of another schema named like one of tenantry''s that its roles may call (rule shadowed_function), and, in a schema at the latest tenant-schema version, for a pooled table with no problem of its own, its columns (copy_columns), indexes and UNIQUE, EXCLUDE and CHECK constraints (copy_constraints). Each row''s severity: critical (the cluster''s roles and parameters, tenantry''s own objects: serve refuses whatever its flags), error (serve refuses unless --allow-table-problems) or warning (served with a warning). No rows: all is well.';
REVOKE EXECUTE ON FUNCTION tenantry.table_problems(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantry.table_problems(regclass) TO tenantry_admin, tenantry_server;

/**
 * Runs statements that take locks (LOCK TABLE, ALTER TABLE), all of them in
 * each try, in tries of at most 50 ms of waiting for a lock (lock_timeout)
 * 0.2 s apart: a lock request that waits queues every later one behind it,
 * so tenants' transactions on those tables never wait behind such a request
 * for longer than a try. A try that waited too long is rolled back whole;
 * TN503 naming `what` after 30 s of tries. The statements are the callers'
 * own (schema-qualified regclass names, or an operator's change to an
 * adopted table), run with the caller's rights and search path.
 */
CREATE OR REPLACE FUNCTION tenantry.in_lock_tries(statements text[], what text)
RETURNS void
LANGUAGE plpgsql
-- No search_path of its own: an operator's change (alter_tenant_table) names
-- its types and tables as the operator's search path finds them.
AS $$
DECLARE
    previous text := pg_catalog.current_setting('lock_timeout');
    started timestamptz := pg_catalog.clock_timestamp();
    statement text;
BEGIN
    LOOP
        BEGIN
            PERFORM pg_catalog.set_config('lock_timeout', '50ms', true);
            FOREACH statement IN ARRAY statements LOOP
                EXECUTE statement;
            END LOOP;
            PERFORM pg_catalog.set_config('lock_timeout', previous, true);
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM pg_catalog.set_config('lock_timeout', previous, true);
            IF pg_catalog.clock_timestamp() - started > interval '30 seconds' THEN
                RAISE EXCEPTION '% stayed busy for 30 s: try again when the long transactions on them have ended', what
                    USING ERRCODE = 'TN503',
                    HINT = 'SELECT pid, xact_start, query FROM pg_stat_activity WHERE xact_start < now() - interval ''30 seconds'' shows them.';
            END IF;
            PERFORM pg_catalog.pg_sleep(0.2);
        END;
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantry.in_lock_tries(text[], text) IS 'Internal (adopting, altering, backfilling and releasing tables): runs statements that take locks in tries of at most 50 ms of waiting for them, so that tenants'' transactions never queue behind the request for longer; TN503 naming what after 30 s. Not granted.';
REVOKE ALL ON FUNCTION tenantry.in_lock_tries(text[], text) FROM PUBLIC;

/**
 * The locks adding (dropping) the foreign key from a table to
 * tenantry.tenants takes: ACCESS EXCLUSIVE on the table, and SHARE ROW
 * EXCLUSIVE (ACCESS EXCLUSIVE) on tenants, which every tenant's transactions
 * would queue behind while it waits. Taken together and first in the
 * transaction, in tries of at most 50 ms each, for up to 30 s: nobody waits
 * for it longer than a try, and, holding nothing else yet, it cannot be one
 * side of a deadlock PostgreSQL would not see. TN503 when they could not be had.
 */
CREATE OR REPLACE FUNCTION tenantry.lock_for_tenant_key(tbl regclass, dropping boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.in_lock_tries(
        ARRAY[format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', tbl),
              format('LOCK TABLE tenantry.tenants IN %s MODE',
                     CASE WHEN dropping THEN 'ACCESS EXCLUSIVE' ELSE 'SHARE ROW EXCLUSIVE' END)],
        format('%s and tenantry.tenants', tbl));
END
$$;
COMMENT ON FUNCTION tenantry.lock_for_tenant_key(regclass, boolean) IS 'Internal (adopting, backfilling and releasing tables): the locks adding or dropping a table''s foreign key to tenantry.tenants takes, both at once, in tries of at most 50 ms (in_lock_tries), so that tenants'' transactions never queue behind them for longer; TN503 after 30 s. Not granted.';

/**
 * At the start of a transaction that adds a table's key to tenants when it
 * has none (adopt_table, backfill_prepare): lock_for_tenant_key's locks, if
 * the key is missing. On a Citus coordinator the key comes with distribution,
 * where ensure_tenant_fk takes them.
 */
CREATE OR REPLACE FUNCTION tenantry.lock_for_missing_tenant_key(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT tenantry.citus_distributed() AND NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_constraint k
        WHERE k.conrelid = tbl AND k.contype = 'f' AND k.confrelid = 'tenantry.tenants'::regclass
    ) THEN
        PERFORM tenantry.lock_for_tenant_key(tbl, false);
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.lock_for_missing_tenant_key(regclass) IS 'Internal (adopt_table, backfill_prepare): lock_for_tenant_key(tbl, false) when the table has no key to tenantry.tenants yet (outside Citus, where distribution adds it). Not granted.';

/**
 * The table and its partitions handed to tenantry_owner, and USAGE on its
 * schema for tenantry_owner and tenantry_app_own, which reach the table only
 * through it: what adopt_table does to them, and refuse_before_adopting
 * tries. Run with the caller's rights.
 */
CREATE OR REPLACE FUNCTION tenantry.hand_to_owner_role(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part regclass;
BEGIN
    IF NOT pg_catalog.has_schema_privilege('tenantry_app_own',
            (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE')
       OR NOT pg_catalog.has_schema_privilege('tenantry_owner',
            (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %s TO tenantry_owner, tenantry_app_own',
                       (SELECT c.relnamespace::regnamespace FROM pg_catalog.pg_class c WHERE c.oid = tbl));
    END IF;
    FOR part IN SELECT p.p FROM tenantry.table_and_partitions(tbl) p(p) LOOP
        IF (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = part) <> 'tenantry_owner'::regrole THEN
            EXECUTE format('ALTER TABLE %s OWNER TO tenantry_owner', part);
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantry.hand_to_owner_role(regclass) IS 'Internal (adopt_table, refuse_before_adopting): hands the table and its partitions to tenantry_owner and grants tenantry_owner and tenantry_app_own USAGE on its schema when they lack it. Runs with the caller''s rights. Not granted.';
REVOKE ALL ON FUNCTION tenantry.hand_to_owner_role(regclass) FROM PUBLIC;

/**
 * Whether the role running the statement (current_user) skips row level
 * security: a superuser or a role with BYPASSRLS. Such a caller validates a
 * key to tenants and reads schema tenants' tables as itself; any other runs
 * those steps as tenantry_owner.
 */
CREATE OR REPLACE FUNCTION tenantry.caller_bypasses_rls()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
$$;
COMMENT ON FUNCTION tenantry.caller_bypasses_rls() IS 'Internal (ensure_tenant_fk, hand_over_for_validation, release_table): true when current_user is a superuser or has BYPASSRLS. Not granted.';
REVOKE ALL ON FUNCTION tenantry.caller_bypasses_rls() FROM PUBLIC;

/**
 * The key of tbl's tenant_id to tenantry.tenants (a validated one first),
 * NULL when it has none: the constraint ensure_tenant_fk validates and
 * hand_over_for_validation writes the owner of before into.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_key_of(tbl regclass)
RETURNS oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.oid FROM pg_catalog.pg_constraint k
    JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attname = 'tenant_id'
    WHERE k.conrelid = tbl AND k.contype = 'f' AND k.confrelid = 'tenantry.tenants'::regclass
      AND k.conkey = ARRAY[a.attnum]
    ORDER BY k.convalidated DESC LIMIT 1
$$;
COMMENT ON FUNCTION tenantry.tenant_key_of(regclass) IS 'Internal (ensure_tenant_fk, hand_over_for_validation): the oid of tbl''s foreign key from tenant_id to tenantry.tenants, a validated one first; NULL when there is none. Not granted.';
REVOKE ALL ON FUNCTION tenantry.tenant_key_of(regclass) FROM PUBLIC;

/**
 * The keys of tbl to tenants whose comment says which owner
 * hand_over_for_validation took the table from (NULL for a role that no
 * longer exists): read by adopt_table, which records that owner, and by
 * give_back_handover.
 */
CREATE OR REPLACE FUNCTION tenantry.handed_over_from(tbl regclass)
RETURNS TABLE (conname name, owner regrole)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.conname, pg_catalog.to_regrole(substring(pg_catalog.obj_description(k.oid, 'pg_constraint')
                                                      FROM '^tenantry: owned by (.+) before its adoption$'))
    FROM pg_catalog.pg_constraint k
    WHERE k.conrelid = tbl AND k.contype = 'f' AND k.confrelid = 'tenantry.tenants'::regclass
      AND pg_catalog.obj_description(k.oid, 'pg_constraint') LIKE 'tenantry: owned by %'
$$;
COMMENT ON FUNCTION tenantry.handed_over_from(regclass) IS 'Internal (adopt_table, give_back_handover): the keys of a table to tenants whose comment names the owner hand_over_for_validation took the table from, with that role (NULL when it no longer exists). Not granted.';
REVOKE ALL ON FUNCTION tenantry.handed_over_from(regclass) FROM PUBLIC;

/**
 * Before a caller that is no superuser validates tbl's key to tenants (as
 * tenantry_owner, which bypasses tenants' forced policies: ensure_tenant_fk),
 * the table goes to tenantry_owner, as adopt_table gives it anyway, and
 * tenantry_owner gets USAGE on its schema. The owner it had is written in
 * the comment of its key to tenants, from which adopt_table records it as
 * the owner release_table gives the table back to (a batched backfill
 * handed the table over before its adoption, and the adoption recorded
 * tenantry_owner: found by a review). The owner change waits for its lock
 * in tries (in_lock_tries). Nothing for a superuser or a role that bypasses
 * row level security, or a table tenantry_owner owns.
 */
CREATE OR REPLACE FUNCTION tenantry.hand_over_for_validation(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner_before regrole := (SELECT c.relowner::regrole FROM pg_catalog.pg_class c WHERE c.oid = tbl);
    key_oid oid := tenantry.tenant_key_of(tbl);
BEGIN
    -- Nothing to validate without a key (on a distributed Citus
    -- coordinator adopt_table adds it once the table is distributed) or
    -- with a validated one; a partitioned table's key is validated when it
    -- is added, never here.
    IF tenantry.caller_bypasses_rls()
       OR key_oid IS NULL
       OR (SELECT k.convalidated FROM pg_catalog.pg_constraint k WHERE k.oid = key_oid)
       OR (SELECT c.relkind = 'p' FROM pg_catalog.pg_class c WHERE c.oid = tbl) THEN
        RETURN;
    END IF;
    IF owner_before <> 'tenantry_owner'::regrole THEN
        IF pg_catalog.obj_description(key_oid, 'pg_constraint') IS NULL THEN
            EXECUTE format('COMMENT ON CONSTRAINT %I ON %s IS %L',
                           (SELECT k.conname FROM pg_catalog.pg_constraint k WHERE k.oid = key_oid), tbl,
                           format('tenantry: owned by %s before its adoption', owner_before));
        END IF;
        PERFORM tenantry.in_lock_tries(ARRAY[format('ALTER TABLE %s OWNER TO tenantry_owner', tbl)],
                                       format('handing %s to tenantry_owner', tbl));
    END IF;
    IF NOT pg_catalog.has_schema_privilege('tenantry_owner',
            (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %s TO tenantry_owner',
                       (SELECT c.relnamespace::regnamespace FROM pg_catalog.pg_class c WHERE c.oid = tbl));
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.hand_over_for_validation(regclass) IS 'Internal (ensure_tenant_fk, the batched backfill before its step 3, the library''s adopt_table): for a caller that is no superuser, hands tbl to tenantry_owner (waiting for the lock in tries), recording the owner it had in the comment of its key to tenants, which adopt_table reads into previous_owner, and grants tenantry_owner USAGE on its schema. Not granted.';
REVOKE ALL ON FUNCTION tenantry.hand_over_for_validation(regclass) FROM PUBLIC;

/**
 * Takes back hand_over_for_validation when the adoption it was for is
 * refused before adopt_table (the library's adopt_table): the table goes
 * back to the owner written in its key's comment, which is cleared. Nothing
 * for an adopted table, or one with no such comment.
 */
CREATE OR REPLACE FUNCTION tenantry.give_back_handover(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    handed record;
BEGIN
    IF EXISTS (SELECT 1 FROM tenantry.tenant_tables r WHERE r.table_id = tbl) THEN
        RETURN;
    END IF;
    FOR handed IN SELECT * FROM tenantry.handed_over_from(tbl) LOOP
        EXECUTE format('COMMENT ON CONSTRAINT %I ON %s IS NULL', handed.conname, tbl);
        IF handed.owner IS NOT NULL
           AND (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = tbl) = 'tenantry_owner'::regrole THEN
            PERFORM tenantry.in_lock_tries(ARRAY[format('ALTER TABLE %s OWNER TO %s', tbl, handed.owner)],
                                           format('giving %s back to %s', tbl, handed.owner));
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantry.give_back_handover(regclass) IS 'Internal (the library''s adopt_table, refused after it handed the table over): gives a table not adopted back to the owner hand_over_for_validation recorded in the comment of its key to tenants, and clears that comment. Not granted.';
REVOKE ALL ON FUNCTION tenantry.give_back_handover(regclass) FROM PUBLIC;

/**
 * tenant_id's foreign key to tenantry.tenants: added NOT VALID when missing
 * (validated at once on a partitioned table, which cannot hold a NOT VALID
 * one before PostgreSQL 18), then, with `validate`, validated under a lock
 * that lets reads and writes of the table go on. A row naming no tenant is
 * TN422. adopt_table() and the batched backfill's steps 1 and 3 share it.
 */
CREATE OR REPLACE FUNCTION tenantry.ensure_tenant_fk(tbl regclass, validate boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fk name := (SELECT k.conname FROM pg_catalog.pg_constraint k WHERE k.oid = tenantry.tenant_key_of(tbl));
    caller_role text;
    missing_tenant text;
BEGIN
    -- On a distributed Citus coordinator the key waits until adopt_table has
    -- distributed the table: a key from a table Citus does not know to the
    -- reference table tenants is checked against the coordinator's empty
    -- shell of it, or turns the table into a Citus-local one.
    IF fk IS NULL AND tenantry.citus_distributed() AND NOT tenantry.citus_table(tbl) THEN
        RETURN;
    END IF;
    IF fk IS NULL THEN
        IF (SELECT c.relkind = 'p' FROM pg_catalog.pg_class c WHERE c.oid = tbl) THEN
            IF validate THEN
                PERFORM tenantry.lock_for_tenant_key(tbl, false);
                EXECUTE format('ALTER TABLE %s ADD CONSTRAINT tenantry_tenant_id_fkey FOREIGN KEY (tenant_id) '
                               'REFERENCES tenantry.tenants (tenant_id)', tbl);
            END IF;
            RETURN;
        END IF;
        fk := 'tenantry_tenant_id_fkey';
        PERFORM tenantry.lock_for_tenant_key(tbl, false);
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (tenant_id) '
                       'REFERENCES tenantry.tenants (tenant_id) NOT VALID', tbl, fk);
    END IF;
    IF validate AND NOT (SELECT k.convalidated FROM pg_catalog.pg_constraint k
                         WHERE k.conrelid = tbl AND k.conname = fk) THEN
        -- PostgreSQL checks the existing rows with one query as the caller
        -- when it owns both tables, under the caller's row level security:
        -- a migration role that is a member of tenantry_owner (not a
        -- superuser) sees no tenant through tenants' forced policies, and
        -- every row would be refused. As tenantry_owner, which bypasses them,
        -- as the table's owner (hand_over_for_validation: a batched backfill
        -- hands it over in a transaction of its own first, so that the
        -- validation's scan holds no lock that stops reads and writes), and
        -- back to the caller's role.
        IF NOT tenantry.caller_bypasses_rls() THEN
            PERFORM tenantry.hand_over_for_validation(tbl);
            caller_role := pg_catalog.current_setting('role');
            PERFORM pg_catalog.set_config('role', 'tenantry_owner', true);
        END IF;
        EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', tbl, fk);
        IF caller_role IS NOT NULL THEN
            PERFORM pg_catalog.set_config('role', caller_role, true);
        END IF;
    END IF;
EXCEPTION WHEN foreign_key_violation THEN
    -- Which tenant (found by a review: the message named none).
    GET STACKED DIAGNOSTICS missing_tenant = PG_EXCEPTION_DETAIL;
    RAISE EXCEPTION 'cannot adopt %: some rows name a tenant that does not exist (%)', tbl,
                    coalesce(substring(missing_tenant FROM '\(tenant_id\)=\(([^)]*)\)'), 'see tenantry.tenants')
        USING ERRCODE = 'TN422',
        HINT = 'Create that tenant first, or give those rows an existing tenant (existing_rows_tenant names one: tenantry tenant list); nothing was changed.';
END
$$;
COMMENT ON FUNCTION tenantry.ensure_tenant_fk(regclass, boolean) IS 'Internal: adds tenant_id''s foreign key to tenantry.tenants NOT VALID when missing (validated at once on a partitioned table) and, with validate, validates it; TN422 when a row names a tenant that does not exist. Used by adopt_table and the batched backfill.';

/**
 * What a schema tenant's table copies from its pooled table besides the
 * columns (secure_tenant_copy, 07_schemas.sql): policies, triggers, table and
 * column privileges, foreign keys. adopt_table records a tenant-schema step
 * only when this, the options or the set of schema tenants lacking the table
 * changed, so that a migration adopting again on every run costs nothing.
 */
CREATE OR REPLACE FUNCTION tenantry.tenant_copy_shape(tbl regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT concat_ws(E'\n',
        (SELECT string_agg(concat_ws(' ', p.polname, p.polpermissive, p.polcmd, p.polroles::text,
                                     pg_catalog.pg_get_expr(p.polqual, p.polrelid),
                                     pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)), E'\n' ORDER BY p.polname)
         FROM pg_catalog.pg_policy p WHERE p.polrelid = tbl),
        (SELECT string_agg(pg_catalog.pg_get_triggerdef(g.oid) || ' ' || g.tgenabled::text, E'\n' ORDER BY g.tgname)
         FROM pg_catalog.pg_trigger g WHERE g.tgrelid = tbl AND NOT g.tgisinternal),
        (SELECT c.relacl::text FROM pg_catalog.pg_class c WHERE c.oid = tbl),
        (SELECT string_agg(a.attname || ' ' || a.attacl::text, E'\n' ORDER BY a.attnum)
         FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attacl IS NOT NULL),
        (SELECT string_agg(k.conname || ' ' || pg_catalog.pg_get_constraintdef(k.oid), E'\n' ORDER BY k.conname)
         FROM pg_catalog.pg_constraint k WHERE k.conrelid = tbl AND k.contype = 'f'))
$$;
COMMENT ON FUNCTION tenantry.tenant_copy_shape(regclass) IS 'Internal: what a schema tenant''s table copies from its pooled table (policies, triggers, privileges, foreign keys) as text; adopt_table compares it before and after to decide whether schema tenants need a step. Not granted.';

/**
 * Refuses (TN422/TN403, naming the rule) a table that can never be a tenant
 * table, or that the caller may not adopt. Changes nothing. adopt_table()
 * starts with it; a batched backfill runs it before touching any row.
 */
CREATE OR REPLACE FUNCTION tenantry.check_adoptable(tbl regclass)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel record;
    coltype oid;
    own_policies text;
    -- The refusals a table can have several of at once (not what it is, nor
    -- who may adopt it): all of them, each with its fix, in one error, so
    -- that a team fixes its table in one round instead of one per rule
    -- (found by a review adopting a team's schema).
    problems text[] := '{}';
    fixes text[] := '{}';
BEGIN
    SELECT c.oid, c.relkind, c.relpersistence, c.relispartition, c.relowner, n.nspname
      INTO rel
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = tbl;

    -- What can never be a tenant table.
    IF rel.relkind = 'v' AND tenantry.view_runs_as_invoker(tbl) THEN
        RAISE EXCEPTION 'cannot adopt %: it is a view', tbl USING ERRCODE = 'TN422',
            HINT = 'It runs with its caller''s rights already: adopt the tables it reads, and it shows each tenant its own rows.';
    ELSIF rel.relkind = 'v' THEN
        RAISE EXCEPTION 'cannot adopt %: it is a view', tbl USING ERRCODE = 'TN422',
            HINT = format('Adopt the tables it reads and make the view run with its caller''s rights and policies: ALTER VIEW %s SET (security_invoker = true);', tbl);
    ELSIF rel.relkind = 'm' THEN
        RAISE EXCEPTION 'cannot adopt %: it is a materialized view, which holds what its owner read and has no row level security', tbl
            USING ERRCODE = 'TN422',
            HINT = format('Adopt the tables it is made from and keep it out of tenants'' reach (REVOKE ALL ON %s FROM PUBLIC); read through a security_invoker view instead.', tbl);
    ELSIF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'cannot adopt %: only ordinary and partitioned tables can be tenant tables', tbl USING ERRCODE = 'TN422';
    END IF;
    IF rel.relpersistence = 't' THEN
        RAISE EXCEPTION 'cannot adopt %: it is a temporary table', tbl USING ERRCODE = 'TN422';
    ELSIF rel.relpersistence = 'u' THEN
        problems := problems || 'it is unlogged, so a crash would lose acknowledged rows'::text;
        fixes := fixes || format('ALTER TABLE %s SET LOGGED;', tbl);
    END IF;
    IF rel.nspname IN ('tenantry', 'pg_catalog', 'information_schema') OR rel.nspname LIKE 'pg\_toast%' THEN
        RAISE EXCEPTION 'cannot adopt %: it belongs to schema %', tbl, rel.nspname USING ERRCODE = 'TN422';
    END IF;
    IF rel.relispartition THEN
        RAISE EXCEPTION 'cannot adopt %: it is a partition of %; adopt the parent, which covers its partitions',
            tbl, (SELECT string_agg(i.inhparent::regclass::text, ', ') FROM pg_catalog.pg_inherits i WHERE i.inhrelid = tbl)
            USING ERRCODE = 'TN422';
    ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = tbl) THEN
        -- Table inheritance (not a partition): its parent, whose reads
        -- include this table's rows, cannot be adopted either.
        RAISE EXCEPTION 'cannot adopt %: it inherits from %, and tenantry covers partitions, not table inheritance',
            tbl, (SELECT string_agg(i.inhparent::regclass::text, ', ') FROM pg_catalog.pg_inherits i WHERE i.inhrelid = tbl)
            USING ERRCODE = 'TN422',
            HINT = 'Use declarative partitioning (PARTITION BY on the parent, PARTITION OF for each child) and adopt the parent.';
    END IF;
    IF rel.relkind = 'r' AND EXISTS (
        SELECT 1 FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = tbl
          -- Schema tenants' tables of an adopted table are tenantry's own.
          -- (By the schema's name: a migration role that is no superuser
          -- sees no row of tenantry.tenants.)
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n
                          WHERE n.oid = c.relnamespace AND n.nspname ~ '^tenant_[0-9a-f]{20}$')) THEN
        RAISE EXCEPTION 'cannot adopt %: other tables inherit from it, and they would not be covered', tbl USING ERRCODE = 'TN422',
            HINT = 'Use declarative partitioning (PARTITION BY) instead of table inheritance.';
    END IF;
    IF rel.relowner <> 'tenantry_owner'::regrole
       AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = rel.relowner)
       AND pg_catalog.pg_has_role(rel.relowner, 'tenantry_app_own', 'MEMBER') THEN
        problems := problems || format('it is owned by %s, a role that acts for tenants (the server''s login or an app role), which could switch its row level security off',
                                       rel.relowner::regrole);
        fixes := fixes || CASE WHEN rel.relowner = current_user::regrole
                        -- The migration role itself: it owns what it creates.
                        THEN format('Your migration role must not act for tenants: as a superuser, REVOKE %s FROM %s; and run tenant steps (SET ROLE tenantry_app) as another role.',
                                    (SELECT string_agg(g.rolname::text, ', ' ORDER BY g.rolname)
                                     FROM pg_catalog.pg_auth_members a JOIN pg_catalog.pg_roles g ON g.oid = a.roleid
                                     WHERE a.member = rel.relowner AND pg_catalog.pg_has_role(g.oid, 'tenantry_app_own', 'MEMBER')),
                                    rel.relowner::regrole)
                        ELSE format('Create tables with your migration role, not the server''s: ALTER TABLE %s OWNER TO <your migration role>;', tbl) END;
    END IF;
    IF rel.relowner <> 'tenantry_owner'::regrole THEN
        -- PostgreSQL lets a role that is not a superuser give a table to a
        -- new owner only when that owner may create in the table's schema
        -- (PostgreSQL 15 no longer lets every role create in public).
        IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
           AND NOT pg_catalog.has_schema_privilege('tenantry_owner', rel.nspname, 'CREATE') THEN
            problems := problems || format('tenantry_owner, who will own it, may not create in schema %s, and only a superuser can hand it a table there',
                                           rel.nspname);
            fixes := fixes || format('In your migration, before adopting (as the schema''s owner): GRANT CREATE ON SCHEMA %I TO tenantry_owner;', rel.nspname);
        END IF;
    END IF;
    -- Permissive policies of its own would widen what tenants reach
    -- (permissive policies are OR'd). Restrictive ones (AND'd) only narrow
    -- it: a team's own condition, such as tenantry.authorize('x.read'), stays.
    own_policies := (
        SELECT string_agg(DISTINCT pol.polname, ', ' ORDER BY pol.polname)
        FROM tenantry.table_and_partitions(tbl) p(p)
        JOIN pg_catalog.pg_policy pol ON pol.polrelid = p.p
        -- (tenant_isolation is made anew by adopting: adopted already, a
        -- partition detached from an adopted table, a table restored
        -- without tenantry's record of it, or the guide's)
        WHERE pol.polpermissive
          AND pol.polname <> 'tenant_isolation'
          -- (nor the write policies, made anew too)
          AND pol.polname NOT IN (SELECT w.polname FROM tenantry.write_permission_policies() w));
    IF own_policies IS NOT NULL THEN
        problems := problems || format('it has permissive row level security policies of its own (%s), which would widen what tenants reach',
                                       own_policies);
        fixes := fixes || 'Drop them (DROP POLICY ... ON ...), or make them AS RESTRICTIVE, which can only narrow what tenantry''s policy lets a tenant reach.'::text;
    END IF;
    -- On a Citus coordinator the table is (or becomes) distributed, and
    -- Citus 13 copies its policies to the shards without AS RESTRICTIVE:
    -- there a restrictive policy of the team's is one more permissive one,
    -- OR'd with tenantry's, and a tenant reaches every tenant's rows that
    -- its condition matches (docs/scale-out.md).
    IF tenantry.citus_distributed() THEN
        own_policies := (
            SELECT string_agg(DISTINCT pol.polname, ', ' ORDER BY pol.polname)
            FROM pg_catalog.pg_policy pol
            WHERE pol.polrelid = tbl AND NOT pol.polpermissive);
        IF own_policies IS NOT NULL THEN
            problems := problems || format('on this Citus cluster its restrictive row level security policies (%s) would be copied to its shards as permissive ones (Citus leaves out AS RESTRICTIVE), which would widen what tenants reach',
                                           own_policies);
            fixes := fixes || 'Drop them (DROP POLICY ... ON ...) and keep their conditions in your queries or in a trigger; write permissions are adopt_table''s write_permission.'::text;
        END IF;
    END IF;


    -- The tenant column: uuid when present; when missing, no key may need it.
    SELECT a.atttypid INTO coltype
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = 'tenant_id' AND NOT a.attisdropped;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = tbl AND i.indisunique) THEN
            problems := problems || 'it has a primary key or unique constraint and no tenant_id column to lead it'::text;
            fixes := fixes || format('Give it the column and lead every key with it first, in your migration: ALTER TABLE %1$s ADD COLUMN tenant_id uuid; UPDATE %1$s SET tenant_id = ''<tenant uuid>''; (or an expression over the row''s columns) %2$s then adopt it. Foreign keys to those keys go first and come back on (tenant_id, ...).',
                              tbl,
                              -- Each key by its name and columns (found by a
                              -- review: the hint said <pkey>).
                              -- (A unique index that backs no constraint: made again.)
                              (SELECT string_agg(CASE WHEN k.conname IS NOT NULL
                                                      THEN format('ALTER TABLE %s DROP CONSTRAINT %I, ADD %s (tenant_id, %s);', tbl, k.conname,
                                                                  CASE k.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END, cols.list)
                                                      ELSE format('DROP INDEX %s; CREATE UNIQUE INDEX ON %s (tenant_id, %s);',
                                                                  i.indexrelid::regclass, tbl, cols.list) END,
                                                 ' ' ORDER BY k.contype NULLS LAST, i.indexrelid::regclass::text)
                                 FROM pg_catalog.pg_index i
                                 LEFT JOIN pg_catalog.pg_constraint k
                                   ON k.conrelid = tbl AND k.conindid = i.indexrelid AND k.contype IN ('p', 'u')
                                 CROSS JOIN LATERAL (
                                     SELECT string_agg(CASE WHEN u.attnum = 0 THEN '<expression>' ELSE quote_ident(a.attname) END,
                                                       ', ' ORDER BY u.n) AS list
                                       FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS u(attnum, n)
                                       LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = tbl AND a.attnum = u.attnum) cols
                                WHERE i.indrelid = tbl AND i.indisunique));
        END IF;
    ELSIF coltype <> 'uuid'::regtype THEN
        problems := problems || format('its tenant_id column is %s, not uuid', coltype::regtype);
        fixes := fixes || format('ALTER TABLE %s ALTER COLUMN tenant_id TYPE uuid USING tenant_id::uuid;', tbl);
    ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = tbl AND a.attname = 'tenant_id' AND NOT a.attisdropped
                    AND (a.attgenerated <> '' OR a.attidentity <> '')) THEN
        problems := problems || 'its tenant_id column is generated, and a tenant table''s rows take their tenant from the context'::text;
        fixes := fixes || format('ALTER TABLE %s ALTER COLUMN tenant_id DROP EXPRESSION;', tbl);
    END IF;

    -- The table's own problems first: an owner that acts for tenants is
    -- fixed by changing the owner (or the migration role), not by adopting
    -- as that owner or by granting it tenantry_owner, which the refusals
    -- below would say (found by a review of this aggregation).
    IF cardinality(problems) = 0 AND rel.relowner <> 'tenantry_owner'::regrole THEN
        IF NOT pg_catalog.pg_has_role(current_user, rel.relowner, 'USAGE') THEN
            RAISE EXCEPTION 'cannot adopt %: only its owner, %, or a superuser can adopt it', tbl, rel.relowner::regrole
                USING ERRCODE = 'TN403';
        END IF;
        IF NOT pg_catalog.pg_has_role(current_user, 'tenantry_owner', 'USAGE') THEN
            RAISE EXCEPTION 'cannot adopt %: % cannot hand tables to tenantry_owner', tbl, current_user USING ERRCODE = 'TN403',
                HINT = 'Adopt tables as a superuser, or GRANT tenantry_owner TO your migration role.';
        END IF;
    END IF;
    IF cardinality(problems) = 1 THEN
        RAISE EXCEPTION 'cannot adopt %: %', tbl, problems[1] USING ERRCODE = 'TN422', HINT = fixes[1];
    ELSIF cardinality(problems) > 1 THEN
        RAISE EXCEPTION 'cannot adopt %: % (and % more; DETAIL lists them all, HINT their fixes)', tbl, problems[1], cardinality(problems) - 1
            USING ERRCODE = 'TN422',
            DETAIL = (SELECT string_agg(format('%s. %s', u.n, u.problem), E'\n' ORDER BY u.n)
                      FROM unnest(problems) WITH ORDINALITY AS u(problem, n)),
            HINT = (SELECT string_agg(format('%s. %s', u.n, u.fix), E'\n' ORDER BY u.n)
                    FROM unnest(fixes) WITH ORDINALITY AS u(fix, n));
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.check_adoptable(regclass) IS 'Refuses, naming the rule (every rule a table breaks at once, where it can break several) and changing nothing, what adopt_table() can never adopt: views (use security_invoker), materialized views, foreign, temporary and unlogged tables, tenantry''s own tables, partitions and inheritance children (adopt the parent), inheritance parents, tables owned by a role that acts for tenants, tables with permissive policies of their own (restrictive ones only narrow and stay), a tenant_id that is not uuid or is generated, keys without tenant_id; and callers who cannot hand the table to tenantry_owner (not its owner, not a member of tenantry_owner, or, unless a superuser, in a schema where tenantry_owner may not create).';

/** Whether this is a Citus coordinator on which tenantry's tenant tables are distributed. */
CREATE OR REPLACE FUNCTION tenantry.citus_distributed()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    distributed boolean;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL OR tenantry.on_citus_worker() THEN
        RETURN false;
    END IF;
    -- Dynamic: the table exists only where Citus is installed.
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = ''tenantry.resources''::regclass)'
        INTO distributed;
    RETURN distributed;
END
$$;
COMMENT ON FUNCTION tenantry.citus_distributed() IS 'Internal: true on a Citus coordinator whose tenant tables are distributed (adopt_table then distributes the tables it adopts), false elsewhere. Not granted.';

/**
 * create_distributed_table and create_reference_table copy a table's rows
 * into its shards and leave them in the coordinator's own file of the
 * table, unseen but on disk, where a tenant's purge never reaches them
 * (found by a review of the cluster). Truncates that file (Citus's
 * truncate_local_data_after_distributing_table: replication off, the shards
 * keep theirs) when it holds anything. Its TRUNCATE cascades to the tables
 * that reference tbl, so nothing is done while a table Citus does not know
 * references any Citus table (Citus itself refuses keys from a plain table
 * to a distributed one): a NOTICE names it. adopt_table and migrate's
 * distribution (crates/tenantry-db/src/citus.rs) call it.
 */
CREATE OR REPLACE FUNCTION tenantry.citus_drop_local_copy(tbl regclass)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    plain text;
    replication_role text;
BEGIN
    -- (A partitioned table's rows are its partitions'; its TRUNCATE takes them.)
    IF NOT tenantry.citus_table(tbl)
       OR NOT EXISTS (SELECT 1 FROM tenantry.table_and_partitions(tbl) p(p)
                      WHERE pg_catalog.pg_relation_size(p.p) > 0) THEN
        RETURN false;
    END IF;
    -- Dynamic: pg_dist_partition exists only where Citus is installed.
    EXECUTE 'SELECT min(k.conrelid::regclass::text) FROM pg_catalog.pg_constraint k
              WHERE k.contype = ''f''
                AND k.confrelid IN (SELECT p.logicalrelid FROM pg_catalog.pg_dist_partition p)
                AND k.conrelid NOT IN (SELECT p.logicalrelid FROM pg_catalog.pg_dist_partition p)'
       INTO plain;
    IF plain IS NOT NULL THEN
        RAISE NOTICE 'the rows % held before its distribution stay in the coordinator''s own file of it: % is no Citus table and references one; distribute it, then SELECT tenantry.citus_drop_local_copy(%L)', tbl, plain, tbl::text;
        RETURN false;
    END IF;
    -- Its TRUNCATE fires the TRUNCATE triggers of the tables it reaches,
    -- which would act on the shards' rows (the triggers that end a table's
    -- shares, a team's own): none fire for a copy nobody reads.
    replication_role := pg_catalog.current_setting('session_replication_role');
    PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);
    EXECUTE 'SELECT truncate_local_data_after_distributing_table($1)' USING tbl;
    PERFORM pg_catalog.set_config('session_replication_role', replication_role, true);
    RETURN true;
END
$$;
COMMENT ON FUNCTION tenantry.citus_drop_local_copy(regclass) IS 'Internal (adopt_table, migrate''s distribution on Citus): truncates the rows a distributed or reference table left in the coordinator''s own file of it when it was distributed (truncate_local_data_after_distributing_table), unless a table Citus does not know references a Citus table (a NOTICE names it). True when it truncated. Not granted.';
REVOKE ALL ON FUNCTION tenantry.citus_drop_local_copy(regclass) FROM PUBLIC;

/** Whether Citus knows tbl (distributed, reference or Citus-local); false without Citus. */
CREATE OR REPLACE FUNCTION tenantry.citus_table(tbl regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    known boolean;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;
    END IF;
    -- Dynamic: the table exists only where Citus is installed.
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)' INTO known USING tbl;
    RETURN known;
END
$$;
COMMENT ON FUNCTION tenantry.citus_table(regclass) IS 'Internal: whether Citus has tbl in its metadata (adopt_table distributes a table only once). Not granted.';


/**
 * The schema tenants' own tables of an adopted table, secured like it at
 * once (adopt_table calls it when the table's policies changed: hierarchy,
 * sharing, write permission). A policy tightened on the pooled table must
 * not wait for tenantry migrate in the tables schema tenants read and write
 * through their search path. Whatever the schema's tenant-schema version:
 * the change before this one in the same migration (another table's, or
 * the first of one adopt_tables call) recorded a step that puts every
 * schema a version behind, and a filter on the latest version left this
 * table's copies with their old policies (found by a review). One that
 * cannot be secured yet (its schema lacks a column the template's grants
 * or triggers name, which a pending step adds) is left to tenantry
 * migrate. None when more than tenantry.secure_schemas_inline_max (default
 * 500) would be: locking that many tables in one transaction runs out of
 * lock table (53200). Returns how many tables were left to tenantry migrate.
 */
CREATE OR REPLACE FUNCTION tenantry.secure_copies_now(tbl regclass)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    inline_max integer := coalesce(nullif(current_setting('tenantry.secure_schemas_inline_max', true), '')::integer, 500);
    copies integer;
    ready regclass[];
    c regclass;
    secured integer := 0;
BEGIN
    SELECT count(*) INTO copies FROM tenantry.family_copies() f WHERE f.template = tbl;
    SELECT array_agg(f.copy ORDER BY f.copy) INTO ready
    FROM tenantry.family_copies() f
    JOIN pg_catalog.pg_class k ON k.oid = f.copy
    JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace
    JOIN tenantry.tenants t ON t.schema_name = n.nspname
    WHERE f.template = tbl;
    IF ready IS NULL OR cardinality(ready) > inline_max THEN
        RETURN copies;
    END IF;
    FOREACH c IN ARRAY ready LOOP
        -- One that cannot be secured like the template now (it lacks a
        -- column the template's grants name, say) is left to tenantry
        -- migrate, like those behind, rather than refusing the adoption.
        BEGIN
            PERFORM tenantry.secure_tenant_copy(tbl, c);
            secured := secured + 1;
        -- (undefined_table: a foreign key to a table of the family whose
        -- schema tenant's copy a pending step makes, a review found.)
        EXCEPTION WHEN undefined_column OR undefined_object OR undefined_table OR invalid_foreign_key
                       OR dependent_objects_still_exist THEN
            NULL;
        END;
    END LOOP;
    RETURN copies - secured;
END
$$;
COMMENT ON FUNCTION tenantry.secure_copies_now(regclass) IS 'Internal: secures the schema tenants'' tables of an adopted table like it, in this transaction, when its policies changed (adopt_table), whatever their schemas'' tenant-schema version (one that cannot be secured yet, lacking a column a pending step adds, is left), unless more than tenantry.secure_schemas_inline_max (default 500); returns how many are left to tenantry migrate. Not granted.';

/**
 * Guide step one, made safe: makes one of the application's tables a tenant
 * table. Idempotent (run it again to change hierarchy or to repair what the
 * doctor reports). Rows already in the table need an owner: a tenant id, or an
 * SQL expression over the row's columns that yields one.
 */
CREATE OR REPLACE FUNCTION tenantry.adopt_table(
    tbl regclass,
    hierarchy boolean DEFAULT NULL,
    sharing boolean DEFAULT NULL,
    existing_rows_tenant uuid DEFAULT NULL,
    existing_rows_tenant_expression text DEFAULT NULL,
    write_permission text DEFAULT NULL)
RETURNS tenantry.tenant_tables
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel record;
    col record;
    handed record;
    owner_before name;
    expression_owners uuid[];
    missing bigint;
    problems text;
    broken text;
    result tenantry.tenant_tables;
    prior tenantry.tenant_tables;
    shape_before text;
    left_behind integer;
    adopted_name text;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'adopt_table needs a table' USING ERRCODE = 'TN422';
    END IF;
    -- One adoption or release of a table at a time: two application
    -- instances starting together each adopt their tables, and both found
    -- no record, both made one, and one failed on the registry's key (found
    -- by a review of the example app). The second now waits, then finds the
    -- first's record and changes nothing. (The key, 'tnad' in ASCII above
    -- the table's oid, is release_table's too; the one-bigint form is the
    -- one a migration role that is not a superuser may call: 08_shared_state.sql.)
    PERFORM pg_catalog.pg_advisory_xact_lock((1953390948::bigint << 32) + tbl::oid::bigint);
    shape_before := tenantry.tenant_copy_shape(tbl);
    -- An option left out keeps what the table was adopted with (a table not
    -- adopted yet: hierarchy on, sharing and a write permission off), so
    -- that adopting again, as a migration file may on every run, never
    -- widens who reads the rows or ends their shares; only an option given
    -- changes it ('' for no write permission).
    SELECT r.* INTO prior FROM tenantry.tenant_tables r WHERE r.table_id = tbl;
    hierarchy := coalesce(hierarchy, prior.hierarchy, true);
    sharing := coalesce(sharing, prior.sharing, false);
    write_permission := CASE WHEN write_permission IS NULL THEN prior.write_permission
                             ELSE nullif(write_permission, '') END;
    IF existing_rows_tenant IS NOT NULL AND existing_rows_tenant_expression IS NOT NULL THEN
        RAISE EXCEPTION 'give existing_rows_tenant or existing_rows_tenant_expression, not both' USING ERRCODE = 'TN422';
    END IF;
    PERFORM tenantry.check_adopt_options(tbl, sharing, write_permission);
    PERFORM tenantry.check_adoptable(tbl);
    -- Named like tenantry's own tenant table (resources): a schema tenant
    -- keeps its table of it under that name in its own schema, first on
    -- its search path, so its statements naming this table would reach
    -- that one
    -- (found by a review from psql: a team's own resources rows landed in
    -- tenantry's). A table adopted before this check is named by the
    -- doctor instead (rule name), so that adopting it again stays a no-op.
    IF prior.table_id IS NULL THEN
        adopted_name := tenantry.family_name_clash(tbl);
        IF adopted_name IS NOT NULL THEN
            RAISE EXCEPTION 'cannot adopt %: % is a tenant table of the same name, and a schema tenant keeps its table of that one under the name in its own schema, first on its search path: its statements naming % would reach that table',
                tbl, adopted_name, (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = tbl)
                USING ERRCODE = 'TN409',
                HINT = (SELECT format('Rename it (ALTER TABLE %I.%I RENAME TO %I, and in the statements that name it), then adopt it.',
                                      n.nspname, c.relname, c.relname || '_' || n.nspname)
                        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.oid = tbl);
        END IF;
        adopted_name := NULL;
    END IF;
    -- Schema tenants' tables named as this one, kept from a dropped adopted
    -- table of that name: its tenant-schema step would take them as its
    -- own, rows and all (and whatever shape they have).
    IF prior.table_id IS NULL THEN
        SELECT string_agg(l.rel::text, ', ') INTO problems
          FROM tenantry.leftover_tables((SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = tbl)) l(rel);
        IF problems IS NOT NULL THEN
            SELECT r.table_id::oid::bigint INTO missing FROM tenantry.tenant_tables r
             WHERE (pg_catalog.parse_ident(r.adopted_as))[2] = (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = tbl)
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = r.table_id)
             LIMIT 1;
            RAISE EXCEPTION 'cannot adopt %: schema tenants keep tables of that name from an adopted table that was dropped: %', tbl, problems
                USING ERRCODE = 'TN409',
                HINT = CASE WHEN missing IS NOT NULL
                            THEN format('SELECT tenantry.release_table(%s); forgets the dropped table and drops them (or says which still hold rows).', missing)
                            ELSE format('DROP TABLE %s CASCADE; discards them with any rows they hold.', problems) END;
        END IF;
    END IF;
    -- The key to tenants is added below when missing: its locks first.
    PERFORM tenantry.lock_for_missing_tenant_key(tbl);
    -- What release_table gives back (recorded at the first adoption below):
    -- the owner, row level security and the privileges as they are now.
    SELECT c.relkind, c.relowner, c.relrowsecurity, c.relforcerowsecurity, c.relacl
      INTO rel FROM pg_catalog.pg_class c WHERE c.oid = tbl;

    -- The tenant column.
    SELECT a.attnum, a.atttypid, a.attnotnull INTO col
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = 'tenant_id' AND NOT a.attisdropped;
    IF NOT FOUND THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN tenant_id uuid', tbl);
    END IF;
    -- Only when it differs: Citus refuses any change of a distributed
    -- table's distribution column, and adopting again must work there.
    IF pg_catalog.pg_get_expr((SELECT d.adbin FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_attribute a
                                 ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                               WHERE d.adrelid = tbl AND a.attname = 'tenant_id'), tbl)
       IS DISTINCT FROM 'tenantry.current_tenant_id()' THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN tenant_id SET DEFAULT tenantry.current_tenant_id()', tbl);
    END IF;

    -- Rows without a tenant get the one the caller names. A batched backfill
    -- (backfill_tenant_id) leaves a validated CHECK instead: no scan then, and
    -- SET NOT NULL below relies on that check rather than scanning.
    IF col.attnotnull OR EXISTS (
        SELECT 1 FROM pg_catalog.pg_constraint k
        WHERE k.conrelid = tbl AND k.conname = 'tenantry_tenant_id_not_null' AND k.convalidated
    ) THEN
        missing := 0;
    ELSE
        EXECUTE format('SELECT count(*) FROM %s WHERE tenant_id IS NULL', tbl) INTO missing;
    END IF;
    IF missing > 0 THEN
        IF existing_rows_tenant IS NOT NULL THEN
            PERFORM tenantry.refuse_deleted_owners(tbl, ARRAY[existing_rows_tenant], NULL);
            EXECUTE format('UPDATE %s SET tenant_id = $1 WHERE tenant_id IS NULL', tbl) USING existing_rows_tenant;
        ELSIF existing_rows_tenant_expression IS NOT NULL THEN
            EXECUTE format('WITH u AS (UPDATE %s SET tenant_id = (%s)::uuid WHERE tenant_id IS NULL RETURNING tenant_id) '
                           'SELECT array_agg(DISTINCT u.tenant_id) FROM u', tbl, existing_rows_tenant_expression)
                INTO expression_owners;
            PERFORM tenantry.refuse_deleted_owners(tbl, expression_owners, existing_rows_tenant_expression);
            EXECUTE format('SELECT count(*) FROM %s WHERE tenant_id IS NULL', tbl) INTO missing;
            IF missing > 0 THEN
                RAISE EXCEPTION 'cannot adopt %: existing_rows_tenant_expression gave no tenant for % %', tbl, missing,
                                CASE WHEN missing = 1 THEN 'row' ELSE 'rows' END
                    USING ERRCODE = 'TN422',
                          HINT = format('Find them: SELECT * FROM %s WHERE (%s) IS NULL; give them a tenant (or delete them), then adopt again. Nothing was changed.',
                                        tbl, existing_rows_tenant_expression);
            END IF;
        ELSE
            RAISE EXCEPTION 'cannot adopt %: % rows have no tenant', tbl, missing USING ERRCODE = 'TN422',
                HINT = 'Say who owns them: existing_rows_tenant => the owning tenant''s id, or existing_rows_tenant_expression => an SQL expression over the row''s columns that gives its tenant''s id (tenantry table adopt: --existing-rows-tenant, --existing-rows-tenant-expression).';
        END IF;
    END IF;
    IF NOT coalesce(col.attnotnull, false) THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN tenant_id SET NOT NULL', tbl);
    END IF;
    -- Changes only where something changes (here and below): on Citus,
    -- adopting a distributed table again must leave every change to the
    -- owner's functions, or two roles' connections to the workers wait on
    -- each other.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = tbl AND k.conname = 'tenantry_tenant_id_not_null') THEN
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT tenantry_tenant_id_not_null', tbl);
    END IF;

    IF tenantry.citus_distributed() THEN
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    -- On Citus, a table not distributed yet gets it once it is (below).
    PERFORM tenantry.ensure_tenant_fk(tbl, true);

    -- The policy is an index condition only where an index leads with tenant_id.
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
          ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = tbl AND a.attname = 'tenant_id'
    ) THEN
        EXECUTE format('CREATE INDEX ON %s (tenant_id)', tbl);
    END IF;

    -- The owner role and the app roles reach the table only through its
    -- schema; the table and its partitions go to the owner role.
    PERFORM tenantry.hand_to_owner_role(tbl);
    PERFORM tenantry.secure_tenant_table(tbl, hierarchy, sharing, write_permission);
    -- On a Citus coordinator whose tenant tables are distributed, the table
    -- joins them now, sharded by tenant_id and colocated with resources
    -- (docs/scale-out.md), its policies, triggers and keys copied to every
    -- shard: after the last change to its tenant_id column (Citus refuses
    -- those on a distributed table) and after the owner's changes above
    -- (Citus would send those over the owner's own connections, which cannot
    -- see shards made in this transaction over the caller's), before its
    -- row in the registry, which every node resolves.
    IF tenantry.citus_distributed() AND NOT tenantry.citus_table(tbl) THEN
        -- The rows it holds are copied into the shards: its triggers ran when
        -- they were written and must not run again for them.
        EXECUTE format('ALTER TABLE %s DISABLE TRIGGER USER', tbl);
        EXECUTE 'SELECT create_distributed_table($1, ''tenant_id'', colocate_with => ''tenantry.resources'')'
            USING tbl;
        PERFORM tenantry.citus_drop_local_copy(tbl);
        EXECUTE format('ALTER TABLE %s ENABLE TRIGGER USER', tbl);
        PERFORM tenantry.ensure_tenant_fk(tbl, true);
    END IF;
    SELECT r.* INTO result FROM tenantry.tenant_tables r WHERE r.table_id = tbl;
    IF NOT FOUND THEN
        -- A table handed to tenantry_owner before (to validate its key to
        -- tenants: hand_over_for_validation) goes back to the owner written
        -- in its key's comment, which is cleared.
        owner_before := rel.relowner::regrole::name;
        FOR handed IN SELECT * FROM tenantry.handed_over_from(tbl) LOOP
            IF rel.relowner = 'tenantry_owner'::regrole AND handed.owner IS NOT NULL THEN
                owner_before := handed.owner::name;
            END IF;
            EXECUTE format('COMMENT ON CONSTRAINT %I ON %s IS NULL', handed.conname, tbl);
        END LOOP;
        INSERT INTO tenantry.tenant_tables (table_id, hierarchy, sharing, previous_owner, write_permission,
                                            previous_row_security, previous_force_row_security,
                                            previous_tenant_id_not_null, previous_acl)
        VALUES (tbl, hierarchy, sharing, owner_before, adopt_table.write_permission,
                rel.relrowsecurity, rel.relforcerowsecurity, coalesce(col.attnotnull, false), rel.relacl);
        -- Said, not silent (found by a review: a reporting role read no rows
        -- after the adoption, with its grant still listed): PUBLIC's
        -- privileges are gone, and roles of the team's keep theirs but no
        -- policy lets them reach a row.
        SELECT string_agg(DISTINCT g.grantee_name, ', ') INTO problems
          FROM tenantry.team_grants(rel.relacl, rel.relowner) g;
        IF problems IS NOT NULL THEN
            RAISE NOTICE '% is a tenant table now: % read and write none of its rows (PUBLIC''s privileges are revoked, other roles keep theirs but no policy lets them reach a row); its rows are reached in a tenant''s context, as tenantry_app. release_table gives the roles theirs back (and names PUBLIC''s).',
                tbl, problems;
        END IF;
        problems := NULL;
        -- Serial columns need the app's USAGE on their sequences, which
        -- shows every tenant's count of inserts and lets a tenant advance
        -- them: said once, at the first adoption, with the way out.
        SELECT string_agg(format('%s (%s)', s::text, a.attname), ', ' ORDER BY s::text) INTO problems
          FROM tenantry.serial_sequences(tbl) s
          JOIN pg_catalog.pg_depend d ON d.objid = s::oid AND d.deptype = 'a' AND d.refobjid = tbl
          JOIN pg_catalog.pg_attribute a ON a.attrelid = tbl AND a.attnum = d.refobjsubid;
        IF problems IS NOT NULL THEN
            RAISE NOTICE '% numbers its rows from sequences shared by every tenant: %; the app roles may use them, so any tenant can read how many rows all tenants inserted (pg_sequences.last_value) and advance them (a serial or smallserial column to its last value, which stops every tenant''s inserts)', tbl, problems
                USING HINT = 'SELECT fix FROM tenantry.shared_sequences() prints, for each, the statements (one transaction, as the role that adopted the table) that make it an identity column, which inserts advance without that grant; tenantry doctor prints them as notes. Or key rows by uuid.';
        END IF;
        problems := NULL;
    ELSE
        IF result.sharing AND NOT sharing THEN
            -- Sharing switched off: every share ends now (audited), none waits to come back.
            PERFORM tenantry.revoke_table_shares(tbl);
        ELSIF result.hierarchy AND NOT hierarchy
              AND NOT (tenantry.citus_distributed() AND NOT tenantry.citus_table(tbl)) THEN
            -- Hierarchy switched off: the shares ancestors made of their
            -- descendants' rows end with the reach they came from.
            PERFORM tenantry.revoke_ancestor_table_shares(tbl);
        END IF;
        UPDATE tenantry.tenant_tables r SET hierarchy = adopt_table.hierarchy, sharing = adopt_table.sharing,
                                            write_permission = adopt_table.write_permission
        WHERE r.table_id = tbl;
    END IF;
    -- A policy changed: the schema tenants' tables of it that exist get it
    -- now (a write permission added held there only after tenantry migrate),
    -- before the step below makes every schema a version behind.
    IF prior.table_id IS NOT NULL
       AND (prior.hierarchy, prior.sharing, prior.write_permission)
           IS DISTINCT FROM (adopt_table.hierarchy, adopt_table.sharing, adopt_table.write_permission) THEN
        left_behind := tenantry.secure_copies_now(tbl);
        IF left_behind > 0 THEN
            RAISE WARNING '% schema tenant table(s) of % keep their previous policies until tenantry migrate secures them', left_behind, tbl
                USING HINT = 'Run tenantry migrate now (tenantry table adopt does).';
        END IF;
    END IF;
    -- Schema tenants get a table of their own of it (or its new policies),
    -- schema by schema: a step tenantry migrate runs (07_schemas.sql). Until
    -- then their rows of it stay here.
    IF EXISTS (SELECT 1 FROM tenantry.family_templates() f WHERE f.template = tbl)
       -- Schema tenants found by their schemas' names (the doctor's way):
       -- tenantry.tenants shows a migration role that is no superuser, which
       -- this function runs as, no tenant at all (row level security).
       -- Spare schemas, made ahead for creations, hold no table.
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid
                   WHERE n.nspname ~ '^tenant_[0-9a-f]{20}$')
       -- Only when something a schema tenant's table copies changed, or a
       -- schema tenant lacks its table: adopting again as before is free.
       AND (prior.table_id IS NULL
            OR (prior.hierarchy, prior.sharing, prior.write_permission)
               IS DISTINCT FROM (adopt_table.hierarchy, adopt_table.sharing, adopt_table.write_permission)
            OR shape_before IS DISTINCT FROM tenantry.tenant_copy_shape(tbl)
            OR EXISTS (SELECT 1 FROM pg_catalog.pg_namespace s
                       WHERE s.nspname ~ '^tenant_[0-9a-f]{20}$'
                         AND EXISTS (SELECT 1 FROM pg_catalog.pg_class o WHERE o.relnamespace = s.oid)
                         AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                                         WHERE c.relnamespace = s.oid
                                           AND c.relname = (SELECT a.relname FROM pg_catalog.pg_class a WHERE a.oid = tbl)))) THEN
        PERFORM tenantry.add_tenant_schema_step(
            left(format('tables of adopted %s', tbl), 200),
            -- By name (tenantry.add_adopted_table_copy): a table dropped
            -- before the step runs makes it do nothing, where a regclass
            -- literal failed and held every later step back (0051).
            format('SELECT tenantry.add_adopted_table_copy(%L, current_schema())', tbl::text));
    END IF;

    -- (adopt_tables checks the rules between the tables it adopts together
    -- once all of them are: one at a time, linked tables could never switch
    -- their hierarchy option.)
    -- The rules broken go in the message itself, the fixes in DETAIL: some
    -- migration tools print the message alone (dbmate; found by a review of
    -- migration tools). One reading of the doctor for both.
    SELECT string_agg(format('%s [%s]: %s (fix: %s)', p.table_name, p.rule, p.problem, p.fix), E'\n'),
           string_agg(format('%s [%s]: %s', p.table_name, p.rule, p.problem), '; ')
      INTO problems, broken FROM tenantry.table_problems(tbl) p
     WHERE NOT (p.rule = 'hierarchy' AND coalesce(current_setting('tenantry.adopting_together', true), '') = 'on')
       AND tenantry.adoption_refuses(p.rule);
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'cannot adopt %: it breaks the rules of tenant tables: %', tbl, broken
              USING ERRCODE = 'TN422', DETAIL = problems, HINT = 'Nothing was changed: each problem''s fix is in DETAIL.';
    END IF;
    -- The name it is adopted under (rule renamed compares it), once the
    -- rules hold: a rename that left schema tenants' tables behind was refused above.
    adopted_name := (SELECT format('%I.%I', n.nspname, c.relname)
                     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.oid = tbl);
    UPDATE tenantry.tenant_tables r SET adopted_as = adopted_name
    WHERE r.table_id = tbl AND r.adopted_as IS DISTINCT FROM adopted_name;
    SELECT r.* INTO result FROM tenantry.tenant_tables r WHERE r.table_id = tbl;
    -- On the operator's record when it changed what tenants' rows are under:
    -- adopting again as before (a migration file run on every start) is no
    -- event.
    IF prior.table_id IS NULL THEN
        PERFORM tenantry.write_operator_audit('table.adopted', 'table', adopted_name,
            jsonb_build_object('hierarchy', result.hierarchy, 'sharing', result.sharing,
                               'write_permission', result.write_permission,
                               'existing_rows_tenant', existing_rows_tenant,
                               'existing_rows_tenant_expression', existing_rows_tenant_expression));
    ELSIF (prior.hierarchy, prior.sharing, prior.write_permission)
          IS DISTINCT FROM (result.hierarchy, result.sharing, result.write_permission) THEN
        PERFORM tenantry.write_operator_audit('table.options_changed', 'table', adopted_name,
            jsonb_build_object('hierarchy', result.hierarchy, 'sharing', result.sharing,
                               'write_permission', result.write_permission,
                               'before', jsonb_build_object('hierarchy', prior.hierarchy, 'sharing', prior.sharing,
                                                            'write_permission', prior.write_permission)));
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION tenantry.adopt_table(regclass, boolean, boolean, uuid, text, text) IS 'Makes one of your tables a tenant table: tenant_id uuid NOT NULL DEFAULT current_tenant_id() referencing tenantry.tenants (added when missing; existing rows get existing_rows_tenant or existing_rows_tenant_expression), RLS enabled and forced, the tenant_isolation policy (with hierarchy: descendants'' rows too), with write_permission tenant_isolation for reads only and a permissive policy per write over the tenant''s rows and that permission (tenant_write_predicate: inserts, updates and deletes need it; tenantry.authorize; define your own with define_permission), with sharing rows a tenant may share read-only (share_row; the table needs a primary key (tenant_id, column); switching it off revokes every share); an option left out (NULL) keeps what the table was adopted with (new tables: hierarchy true, sharing false, no write permission; '''' removes a write permission), grants for tenantry_app_own (and USAGE on its schema), an index led by tenant_id, rows that cannot change tenant, owner tenantry_owner, recorded in tenantry.tenant_tables. Refuses (TN422, nothing changed) views, temporary/unlogged tables, partitions, tables with permissive policies of their own (restrictive ones stay, but on a distributed Citus coordinator, whose shards would get them as permissive ones, they are refused too), keys or indexes not led by tenant_id (with hierarchy any index but btree, which scans before the policy; BRIN indexes), foreign keys to another tenant table without tenant_id or between a table with hierarchy and one without; TN409 while schema tenants keep tables of its name from a dropped adopted table (release_table of that one drops them), and TN409 for sharing on a distributed Citus coordinator (a share names its table by an object id that differs on every node). Idempotent. Runs with the caller''s rights: the table''s owner who is a member of tenantry_owner, or a superuser.';

/**
 * The refusals of adopt_table that depend on its options (sharing needs a
 * primary key (tenant_id, one column); a write permission must exist), with
 * the options as adopt_table resolves them (NULL: as adopted before, else
 * the defaults). A batched backfill checks them first, so that a refusal
 * comes before the table is changed.
 */
CREATE OR REPLACE FUNCTION tenantry.check_adopt_options(tbl regclass, sharing boolean, write_permission text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prior tenantry.tenant_tables;
    pkey text;
BEGIN
    SELECT r.* INTO prior FROM tenantry.tenant_tables r WHERE r.table_id = tbl;
    sharing := coalesce(sharing, prior.sharing, false);
    write_permission := CASE WHEN write_permission IS NULL THEN prior.write_permission
                             ELSE nullif(write_permission, '') END;
    IF write_permission IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tenantry.permissions p WHERE p.name = write_permission) THEN
        RAISE EXCEPTION 'cannot adopt %: unknown permission "%"', tbl, write_permission USING ERRCODE = 'TN422',
            HINT = format('Define it first: SELECT tenantry.define_permission(%L, ''<what it allows>'');', write_permission);
    END IF;
    -- On a Citus cluster a share would name its table by the coordinator's
    -- object id, which the shards' nodes give other tables: the target never
    -- read the row (found by running the attack suite on a cluster). Refused
    -- until shares name tables in a form every node reads alike.
    IF sharing AND tenantry.citus_distributed() THEN
        RAISE EXCEPTION 'cannot share rows of %: sharing rows of adopted tables is not available on a Citus cluster', tbl
            USING ERRCODE = 'TN409',
            DETAIL = 'A share names its table by object id, which differs on every node of the cluster: the tenant it was shared with would read nothing.',
            HINT = format('Adopt it with sharing => false: SELECT tenantry.adopt_table(%L, sharing => false); tenantry.resources shares rows on a cluster.', tbl::text);
    END IF;
    IF sharing AND tenantry.row_key_column(tbl) IS NULL THEN
        -- The fix depends on what the table has: the tenant column or not, a
        -- primary key (to replace) or none.
        SELECT format('DROP CONSTRAINT %I, ', c.conname) INTO pkey
        FROM pg_catalog.pg_constraint c WHERE c.conrelid = tbl AND c.contype = 'p';
        RAISE EXCEPTION 'cannot share rows of %: a share names a row by its primary key, which must be (tenant_id, <one column>)', tbl
            USING ERRCODE = 'TN422',
            HINT = CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_partitioned_table pt
                                     JOIN pg_catalog.pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = ANY (pt.partattrs::int2[])
                                     WHERE pt.partrelid = tbl AND a.attname <> 'tenant_id')
                   -- A partitioned table's keys include its partition
                   -- columns: the key above would be refused (found by an
                   -- outside review).
                   THEN format('Its keys must include its partition columns (%s), so it can have no key (tenant_id, <one column>) that names a row: partition it by tenant_id, or adopt it with sharing => false.',
                               (SELECT string_agg(a.attname::text, ', ' ORDER BY a.attnum)
                                  FROM pg_catalog.pg_partitioned_table pt
                                  JOIN pg_catalog.pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = ANY (pt.partattrs::int2[])
                                 WHERE pt.partrelid = tbl))
                   WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                     WHERE a.attrelid = tbl AND a.attname = 'tenant_id' AND NOT a.attisdropped)
                   THEN format('Make it so in your migration: ALTER TABLE %1$s %2$sADD PRIMARY KEY (tenant_id, <key column>); or adopt it with sharing => false.',
                               tbl, coalesce(pkey, ''))
                   ELSE format('Give it the column and such a key first, in your migration: ALTER TABLE %1$s ADD COLUMN tenant_id uuid; UPDATE %1$s SET tenant_id = ''<tenant uuid>''; (or an expression over the row''s columns) ALTER TABLE %1$s %2$sADD PRIMARY KEY (tenant_id, <key column>); then adopt it; or adopt it with sharing => false.',
                               tbl, coalesce(pkey, ''))
                   END;
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.check_adopt_options(regclass, boolean, text) IS 'Internal: TN422 when adopt_table would refuse its options (sharing without a primary key (tenant_id, one column), an unknown write permission), TN409 for sharing on a distributed Citus coordinator, resolved as adopt_table resolves them; checked by adopt_table and, before it changes anything, by a batched backfill. Not granted.';

/**
 * adopt_table for several tables at once, with the same options, the rules
 * between them checked once all are adopted: tables linked by foreign keys
 * change their hierarchy option together (one at a time, each would be
 * refused while the other still has the old one).
 */
CREATE OR REPLACE FUNCTION tenantry.adopt_tables(tables regclass[], hierarchy boolean DEFAULT NULL,
                                                 sharing boolean DEFAULT NULL, write_permission text DEFAULT NULL)
RETURNS SETOF tenantry.tenant_tables
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tbl regclass;
    problems text;
BEGIN
    IF coalesce(cardinality(tables), 0) = 0 THEN
        RAISE EXCEPTION 'adopt_tables needs at least one table' USING ERRCODE = 'TN422';
    END IF;
    PERFORM pg_catalog.set_config('tenantry.adopting_together', 'on', true);
    FOREACH tbl IN ARRAY tables LOOP
        PERFORM tenantry.adopt_table(tbl, hierarchy => adopt_tables.hierarchy, sharing => adopt_tables.sharing,
                                     write_permission => adopt_tables.write_permission);
    END LOOP;
    PERFORM pg_catalog.set_config('tenantry.adopting_together', '', true);
    SELECT string_agg(format('%s [%s]: %s (fix: %s)', p.table_name, p.rule, p.problem, p.fix), E'\n')
      INTO problems
      FROM unnest(tables) u(t) CROSS JOIN LATERAL tenantry.table_problems(u.t) p
     -- (as adopt_table's own check: adopt_tables refused a team's
     -- restrictive policy that adopt_table took)
     WHERE tenantry.adoption_refuses(p.rule);
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'cannot adopt %: they break the rules of tenant tables', tables USING ERRCODE = 'TN422', DETAIL = problems;
    END IF;
    RETURN QUERY SELECT r.* FROM tenantry.tenant_tables r WHERE r.table_id = ANY (tables) ORDER BY r.table_id::text;
END
$$;
COMMENT ON FUNCTION tenantry.adopt_tables(regclass[], boolean, boolean, text) IS 'adopt_table for several tables with the same options in one call, the rules between them (a foreign key between a table with hierarchy and one without) checked once all are adopted: SELECT tenantry.adopt_tables(ARRAY[''boards'', ''cards'']::regclass[], hierarchy => false) switches linked tables together. TN422 naming every problem, nothing changed. Runs with the caller''s rights, like adopt_table.';

/**
 * What adopt_table would refuse at its end, found before a batched backfill
 * (CALL backfill_tenant_id, tenantry table adopt) or the validation of the
 * key to tenants changes the table: the doctor's rules on the table as
 * adoption would leave it (a tenant_id column, tenantry_owner as its owner,
 * its policies, triggers and grants, which decide rules such as `rules`, and
 * its registry row with the hierarchy asked for; NULL: adopt_table's
 * default), tried in a subtransaction that is rolled back. The rules adopt_table repairs itself
 * are left out. TN422 naming each broken rule, the fixes in DETAIL, as
 * adopt_table's own refusal. Nothing for a table adopted already (adopt_table
 * changes it in one transaction), nor on a distributed Citus coordinator,
 * where the registry cannot name a table before it is distributed. Runs
 * with the caller's rights after check_adoptable(), which refuses a caller
 * who could not adopt the table.
 */
CREATE OR REPLACE FUNCTION tenantry.refuse_before_adopting(tbl regclass, hierarchy boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    findings jsonb;
    problems text;
    broken text;
BEGIN
    IF EXISTS (SELECT 1 FROM tenantry.tenant_tables r WHERE r.table_id = tbl) THEN
        RETURN;
    END IF;
    -- Not on a distributed Citus coordinator: the registry is a reference
    -- table, whose every node resolves the table's name, and the table
    -- exists on the workers only once adopt_table has distributed it (the
    -- library's dry run failed there with "relation ... does not exist").
    -- adopt_table's own check at its end is the one there.
    IF tenantry.citus_distributed() AND NOT tenantry.citus_table(tbl) THEN
        RETURN;
    END IF;
    BEGIN
        -- Every change below takes the table's ACCESS EXCLUSIVE lock (on a
        -- table in use, one that waited would queue every query behind it):
        -- taken first, for the table and its partitions, in tries.
        PERFORM tenantry.in_lock_tries(
            ARRAY(SELECT format('LOCK TABLE ONLY %s IN ACCESS EXCLUSIVE MODE', p.p)
                  FROM tenantry.table_and_partitions(tbl) p(p)),
            format('checking %s before adopting it', tbl));
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid = tbl AND a.attname = 'tenant_id' AND NOT a.attisdropped) THEN
            EXECUTE format('ALTER TABLE %s ADD COLUMN tenant_id uuid', tbl);
        END IF;
        -- Its owner, its schema's USAGE, policies, triggers and the app's
        -- grants, as adopt_table gives them, with which rules such as
        -- `rules` (a rule's actions, run with the owner's rights, that a
        -- role acting for tenants sets off) judge it.
        PERFORM tenantry.hand_to_owner_role(tbl);
        PERFORM tenantry.secure_tenant_table(tbl, coalesce(refuse_before_adopting.hierarchy, true), false, NULL);
        INSERT INTO tenantry.tenant_tables (table_id, hierarchy, sharing, previous_owner)
        VALUES (tbl, coalesce(refuse_before_adopting.hierarchy, true), false, current_user);
        SELECT jsonb_agg(pg_catalog.to_jsonb(p)) INTO findings
        FROM tenantry.table_problems(tbl) p
        WHERE p.rule <> ALL (ARRAY['exists', 'tenant_id', 'tenant_default', 'tenant_fk', 'rls', 'owner',
                                   'policies', 'grants', 'schema_usage', 'keep_tenant', 'tier_triggers',
                                   'sharing_triggers', 'sharing_key'])
          AND tenantry.adoption_refuses(p.rule);
        RAISE EXCEPTION 'only a check' USING ERRCODE = 'TNDRY';
    EXCEPTION WHEN SQLSTATE 'TNDRY' THEN
        NULL;  -- every change above is rolled back
    END;
    -- A fix that begins by releasing the table (rule name) begins after it
    -- here: the table is not adopted yet, and release_table refuses it
    -- (found by a review of the CLI).
    SELECT string_agg(format('%s [%s]: %s (fix: %s)', f.table_name, f.rule, f.problem,
                             regexp_replace(f.fix, '^SELECT tenantry\.release_table\([^;]*\); ', '')), E'\n'),
           string_agg(format('%s [%s]: %s', f.table_name, f.rule, f.problem), '; ')
      INTO problems, broken
      FROM jsonb_to_recordset(coalesce(findings, '[]')) f(table_name text, rule text, problem text, fix text);
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'cannot adopt %: it breaks the rules of tenant tables: %', tbl, broken
              USING ERRCODE = 'TN422', DETAIL = problems, HINT = 'Nothing was changed: fix these, then adopt again.';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.refuse_before_adopting(regclass, boolean) IS 'Internal (backfill_prepare, the library''s adopt_table before its backfill or the key''s validation): TN422, naming each rule and its fix, when adopt_table would refuse the table at its end (the doctor''s rules on the table with a tenant_id, owned by tenantry_owner, secured and registered with the hierarchy given, tried in a subtransaction rolled back; the rules adoption repairs left out), so that nothing is changed first. Nothing for an adopted table, nor on a distributed Citus coordinator (the registry names a table on every node only once adopt_table has distributed it). Not granted.';
REVOKE ALL ON FUNCTION tenantry.refuse_before_adopting(regclass, boolean) FROM PUBLIC;

/**
 * Batched backfill, step 1 of 3, for a table that already holds many rows:
 * checks that the table can be adopted, adds tenant_id when missing, and
 * constraints that every new row must already satisfy (NOT VALID: existing
 * rows are checked in step 3, without blocking writes). One short transaction.
 */
CREATE OR REPLACE FUNCTION tenantry.backfill_prepare(tbl regclass, hierarchy boolean DEFAULT NULL)
RETURNS TABLE (leaf regclass, pages bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.check_adoptable(tbl);
    -- What adopt_table would refuse at the end, with the hierarchy option
    -- it will be adopted with, before any row is touched (found by a review:
    -- a backfill ran, and the adoption after it was refused for an index,
    -- with the table changed).
    PERFORM tenantry.refuse_before_adopting(tbl, backfill_prepare.hierarchy);
    -- The key to tenants is added below when missing: its locks first.
    PERFORM tenantry.lock_for_missing_tenant_key(tbl);
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid = tbl AND a.attname = 'tenant_id' AND NOT a.attisdropped) THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN tenant_id uuid', tbl);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                   WHERE k.conrelid = tbl AND k.conname = 'tenantry_tenant_id_not_null') THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT tenantry_tenant_id_not_null CHECK (tenant_id IS NOT NULL) NOT VALID', tbl);
    END IF;
    PERFORM tenantry.ensure_tenant_fk(tbl, false);
    RETURN QUERY
        SELECT p.p, pg_catalog.pg_relation_size(p.p) / pg_catalog.current_setting('block_size')::bigint + 1
        FROM tenantry.table_and_partitions(tbl) p(p)
        JOIN pg_catalog.pg_class c ON c.oid = p.p AND c.relkind = 'r';
END
$$;
COMMENT ON FUNCTION tenantry.backfill_prepare(regclass, boolean) IS 'Batched backfill, step 1: check_adoptable() and refuse_before_adopting() (TN422 for what adopt_table with that hierarchy option, NULL: its default, would refuse after the backfill), tenant_id added when missing, CHECK (tenant_id IS NOT NULL) and the tenant foreign key added NOT VALID (new rows must name a tenant from now on). Returns each leaf table and its page count for step 2.';

/**
 * Takes back step 1 of a batched backfill before any row was given a tenant
 * (the tenant named does not exist): its two constraints, and tenant_id when
 * step 1 added it and no row holds one. Run by the library as the caller.
 */
CREATE OR REPLACE FUNCTION tenantry.backfill_undo_prepare(tbl regclass, drop_column boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    held boolean;
BEGIN
    IF EXISTS (SELECT 1 FROM tenantry.tenant_tables r WHERE r.table_id = tbl) THEN
        RAISE EXCEPTION '% is adopted: release_table() gives it back', tbl USING ERRCODE = 'TN409';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = tbl AND k.conname = 'tenantry_tenant_id_fkey') THEN
        PERFORM tenantry.lock_for_tenant_key(tbl, true);
    END IF;
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS tenantry_tenant_id_not_null, DROP CONSTRAINT IF EXISTS tenantry_tenant_id_fkey', tbl);
    IF drop_column THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE tenant_id IS NOT NULL)', tbl) INTO held;
        IF NOT held THEN
            EXECUTE format('ALTER TABLE %s DROP COLUMN IF EXISTS tenant_id', tbl);
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.backfill_undo_prepare(regclass, boolean) IS 'Batched backfill: takes back step 1 (its constraints; tenant_id too when drop_column and no row holds one) when the first batch finds that the tenant named does not exist, so the refusal changes nothing. TN409 for an adopted table. Not granted.';

/**
 * A batched backfill whose batch was refused, in a run that made step 1's
 * constraints: takes them back (backfill_undo_prepare), since they would
 * stop the team's application from writing rows without a tenant until the
 * data is fixed (found by an outside review), and returns the hint to raise
 * with: the refusal's advice on finding the rows (without its way back,
 * just taken) and what became of the table. Rows given a tenant keep it;
 * running again resumes. Both backfills call it: CALL backfill_tenant_id and
 * the library's (tenantry table adopt).
 */
CREATE OR REPLACE FUNCTION tenantry.backfill_refused(tbl regclass, drop_column boolean, one_tenant boolean,
                                                     rows_given bigint, advice text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    find text := nullif(split_part(coalesce(advice, ''), ' Or give the table back', 1), '') || ' ';
BEGIN
    PERFORM tenantry.backfill_undo_prepare(tbl, drop_column);
    -- The column this run added is gone again: the query that finds the
    -- rows cannot name it (found by a review adopting a team's schema).
    IF drop_column THEN
        find := replace(find, ' WHERE tenant_id IS NULL AND ', ' WHERE ');
    END IF;
    RETURN CASE
        -- Only for the refusal it is about: a trigger of the team's that
        -- failed on the backfill's UPDATE is no missing tenant.
        WHEN one_tenant AND advice LIKE 'Name an existing tenant%'
        THEN 'Name an existing tenant (tenantry tenant list); the table was left as it was.'
        WHEN one_tenant
        THEN 'The table was left as it was.'
        WHEN rows_given = 0
        THEN concat(find, 'The table was left as it was; run again once the expression gives every row a tenant.')
        ELSE concat(find, format('The constraints this run added were taken back, so your application writes as before; the %s rows given a tenant so far keep it, and running again resumes.', rows_given))
    END;
END
$$;
COMMENT ON FUNCTION tenantry.backfill_refused(regclass, boolean, boolean, bigint, text) IS 'Batched backfill: after a refused batch of a run that made step 1, takes it back (backfill_undo_prepare) and returns the hint to raise with (the refusal''s advice on finding the rows, and that the rows given a tenant keep it and a new run resumes). Used by CALL backfill_tenant_id and the library. Not granted.';

/**
 * Refuses (TN422) giving a table's existing rows to a deleted tenant: the
 * purge of that tenant (tenantry tenant purge --due, once its grace period
 * is over) deletes every row of every adopted table that names it, so rows
 * given to it at adoption were lost with it (found by a new operator's
 * review: a deleted tenant was accepted where a missing one was refused).
 * Reads the tenants as the owner: a migration role that is no superuser sees
 * none through their forced policies.
 */
CREATE OR REPLACE FUNCTION tenantry.refuse_deleted_owners(tbl regclass, owners uuid[], tenant_expression text)
RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    gone uuid := (SELECT t.tenant_id FROM tenantry.tenants t
                  WHERE t.tenant_id = ANY (owners) AND t.status = 'deleted' LIMIT 1);
BEGIN
    IF gone IS NOT NULL THEN
        RAISE EXCEPTION 'tenant % is deleted: the rows of % cannot be given to it (its purge would delete them)', gone, tbl
            USING ERRCODE = 'TN422',
                  HINT = CASE WHEN tenant_expression IS NULL
                      THEN 'Name a live tenant (tenantry tenant list: deletion is final); nothing of these rows was written.'
                      ELSE format('Find the rows: SELECT * FROM %s WHERE tenant_id IS NULL AND (%s)::uuid = %L (as a superuser); give them a live tenant, then run it again; nothing of these rows was written.',
                                  tbl, tenant_expression, gone) END;
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.refuse_deleted_owners(regclass, uuid[], text) IS 'Internal (adopt_table''s existing rows, backfill_tenant_id_pages): TN422 when any of the tenants the existing rows of a table are given to is deleted, whose purge would delete them. Not granted.';
REVOKE ALL ON FUNCTION tenantry.refuse_deleted_owners(regclass, uuid[], text) FROM PUBLIC;

/** Batched backfill, step 2 (repeat): one range of pages of one leaf table. */
CREATE OR REPLACE FUNCTION tenantry.backfill_tenant_id_pages(
    leaf regclass, first_page bigint, page_count integer, tenant uuid, tenant_expression text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    updated bigint;
    owners uuid[];
BEGIN
    IF (tenant IS NULL) = (tenant_expression IS NULL) THEN
        RAISE EXCEPTION 'give the tenant of the existing rows, or an expression for it: one of the two' USING ERRCODE = 'TN422';
    END IF;
    BEGIN
        EXECUTE format('WITH u AS (UPDATE %s SET tenant_id = %s WHERE ctid >= $1 AND ctid < $2 AND tenant_id IS NULL '
                       'RETURNING tenant_id) SELECT count(*), array_agg(DISTINCT u.tenant_id) FROM u', leaf,
                       CASE WHEN tenant IS NOT NULL THEN '$3' ELSE format('(%s)::uuid', tenant_expression) END)
            INTO updated, owners
            USING format('(%s,0)', first_page)::tid, format('(%s,0)', first_page + page_count)::tid, tenant;
        -- A deleted tenant: its purge would delete these rows.
        PERFORM tenantry.refuse_deleted_owners(leaf, owners, tenant_expression);
    EXCEPTION WHEN check_violation OR not_null_violation THEN
        -- tenantry_tenant_id_not_null (backfill_prepare): the expression gave
        -- NULL for a row of these pages. Nothing of this batch was written.
        RAISE EXCEPTION 'the tenant expression gave no tenant for a row of % (pages % to %)', leaf, first_page, first_page + page_count - 1
            USING ERRCODE = 'TN422',
                  HINT = format('Find the rows: SELECT * FROM %s WHERE tenant_id IS NULL AND (%s) IS NULL; give them a tenant (or delete them), then run the backfill again: it resumes. Or give the table back as it was: ALTER TABLE %s DROP CONSTRAINT tenantry_tenant_id_not_null, DROP CONSTRAINT IF EXISTS tenantry_tenant_id_fkey; and, if the adoption added tenant_id (the rows given a tenant so far keep theirs until then), ALTER TABLE %1$s DROP COLUMN tenant_id;',
                               leaf, coalesce(tenant_expression, 'NULL'), leaf);
    WHEN foreign_key_violation THEN
        -- tenantry_tenant_id_fkey: no such tenant. Nothing of this batch was written.
        RAISE EXCEPTION '%', CASE WHEN tenant IS NOT NULL
                THEN format('tenant %s does not exist: the rows of %s cannot be given to it', tenant, leaf)
                ELSE format('the tenant expression gave the id of no tenant for a row of %s (pages %s to %s)', leaf, first_page, first_page + page_count - 1) END
            USING ERRCODE = 'TN422',
                  HINT = CASE WHEN tenant IS NOT NULL
                      THEN format('Name an existing tenant (tenantry tenant list). Or give the table back as it was: ALTER TABLE %s DROP CONSTRAINT tenantry_tenant_id_not_null, DROP CONSTRAINT IF EXISTS tenantry_tenant_id_fkey; and, if the adoption added tenant_id (the rows given a tenant so far keep theirs until then), ALTER TABLE %1$s DROP COLUMN tenant_id;', leaf)
                      ELSE format('Find the rows: SELECT * FROM %s WHERE tenant_id IS NULL AND NOT EXISTS (SELECT 1 FROM tenantry.tenants t WHERE t.tenant_id = (%s)::uuid) (as a superuser); fix them, then run the backfill again: it resumes. Or give the table back as it was: ALTER TABLE %s DROP CONSTRAINT tenantry_tenant_id_not_null, DROP CONSTRAINT IF EXISTS tenantry_tenant_id_fkey; and, if the adoption added tenant_id (the rows given a tenant so far keep theirs until then), ALTER TABLE %1$s DROP COLUMN tenant_id;',
                                  leaf, tenant_expression, leaf) END;
    END;
    RETURN updated;
END
$$;
COMMENT ON FUNCTION tenantry.backfill_tenant_id_pages(regclass, bigint, integer, uuid, text) IS 'Batched backfill, step 2: gives the rows of pages [first_page, first_page + page_count) of one leaf table that have no tenant_id the given tenant (or the expression''s value); returns how many. Each call is its own short transaction: only those rows are locked.';

/** Batched backfill, step 3: checks the existing rows without blocking writes. */
CREATE OR REPLACE FUNCTION tenantry.backfill_validate(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    missing bigint;
BEGIN
    BEGIN
        EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT tenantry_tenant_id_not_null', tbl);
    EXCEPTION WHEN check_violation THEN
        EXECUTE format('SELECT count(*) FROM %s WHERE tenant_id IS NULL', tbl) INTO missing;
        RAISE EXCEPTION 'cannot adopt %: % rows still have no tenant', tbl, missing USING ERRCODE = 'TN422',
            HINT = 'The expression gave NULL for them, or they were written before step 1: run the backfill again.';
    END;
    PERFORM tenantry.ensure_tenant_fk(tbl, true);
END
$$;
COMMENT ON FUNCTION tenantry.backfill_validate(regclass) IS 'Batched backfill, step 3: validates CHECK (tenant_id IS NOT NULL) and the tenant foreign key, which lock the table only against schema changes (reads and writes go on). adopt_table() then needs no scan.';

/**
 * Records a finished backfill in the operator's audit log
 * (`table.backfilled`): which tenant, or which expression, the table's
 * existing rows got, and how many rows. The adoption after it names no
 * tenant (it finds none missing), so without this row the log said nothing
 * of whose the rows became (found by a verification review).
 */
CREATE OR REPLACE FUNCTION tenantry.audit_backfill(tbl regclass, tenant uuid, tenant_expression text, backfilled bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tenantry.write_operator_audit('table.backfilled', 'table',
        (SELECT format('%I.%I', n.nspname, c.relname)
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = tbl),
        jsonb_build_object('existing_rows_tenant', tenant, 'existing_rows_tenant_expression', tenant_expression,
                           'rows', backfilled));
END
$$;
COMMENT ON FUNCTION tenantry.audit_backfill(regclass, uuid, text, bigint) IS 'Operators (backfill_tenant_id, tenantry table adopt): records a finished backfill (tenant or expression, rows) in the operator''s audit log as table.backfilled. Granted to no role.';

/**
 * The three steps of a batched backfill, for psql: each batch commits, so no
 * lock is held for long. Call it outside a transaction block, then run
 * adopt_table(). (tenantry table adopt does the same with a progress bar.)
 */
CREATE OR REPLACE PROCEDURE tenantry.backfill_tenant_id(
    tbl regclass, tenant uuid DEFAULT NULL, tenant_expression text DEFAULT NULL, pages_per_batch integer DEFAULT 1000,
    hierarchy boolean DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    plan record;
    first_page bigint;
    total bigint := 0;
    had_column boolean := EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                                  WHERE a.attrelid = tbl AND a.attname = 'tenant_id' AND NOT a.attisdropped);
    -- A backfill resumed after an earlier run keeps what that run made.
    prepared_before boolean := EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                                       WHERE k.conrelid = tbl AND k.conname = 'tenantry_tenant_id_not_null');
    refused text;
    refused_code text;
    refused_hint text;
BEGIN
    FOR plan IN SELECT * FROM tenantry.backfill_prepare(tbl, backfill_tenant_id.hierarchy) LOOP
        COMMIT;
        first_page := 0;
        WHILE first_page < plan.pages LOOP
            BEGIN
                total := total + tenantry.backfill_tenant_id_pages(plan.leaf, first_page, pages_per_batch, tenant, tenant_expression);
            EXCEPTION WHEN OTHERS THEN
                -- A batch refused (no tenant, or one that does not exist,
                -- for a row; a value the expression cannot make a uuid):
                -- step 1's constraints, which make every new row name a
                -- tenant, would stop the team's application from writing
                -- until the data is fixed (found by an outside review). This
                -- run made them, so it takes them back; the rows given a
                -- tenant keep it, and running again resumes.
                IF prepared_before THEN
                    RAISE;
                END IF;
                GET STACKED DIAGNOSTICS refused = MESSAGE_TEXT, refused_code = RETURNED_SQLSTATE,
                                        refused_hint = PG_EXCEPTION_HINT;
            END;
            IF refused IS NOT NULL THEN
                refused_hint := tenantry.backfill_refused(tbl, NOT had_column, tenant IS NOT NULL, total, refused_hint);
                COMMIT;
                RAISE EXCEPTION '%', refused USING ERRCODE = refused_code, HINT = refused_hint;
            END IF;
            COMMIT;
            first_page := first_page + pages_per_batch;
        END LOOP;
        RAISE NOTICE 'backfilled % (% pages): % rows so far', plan.leaf, plan.pages, total;
    END LOOP;
    COMMIT;
    -- A caller that is no superuser validates as tenantry_owner, which must
    -- own the table: handed over in a transaction of its own, so that the
    -- validation's scan below holds no lock that stops reads and writes.
    PERFORM tenantry.hand_over_for_validation(tbl);
    COMMIT;
    PERFORM tenantry.backfill_validate(tbl);
    PERFORM tenantry.audit_backfill(tbl, tenant, tenant_expression, total);
END
$$;
COMMENT ON PROCEDURE tenantry.backfill_tenant_id(regclass, uuid, text, integer, boolean) IS 'A large table''s existing rows get their tenant in batches that each commit (CALL it outside a transaction block): backfill_prepare (which first refuses, changing nothing, what adopt_table with the hierarchy option given would refuse), backfill_tenant_id_pages per batch, hand_over_for_validation and backfill_validate. Then SELECT adopt_table(...) takes only a short lock.';

/**
 * Tables in tenant schemas named `table_name` while no adopted table has
 * that name: what schema tenants kept of an adopted table of that name that
 * was dropped (each holds its schema tenant's rows of it, if any). Not while
 * an adopted table of that name exists: they are (or may become) its
 * tables, a family's or one that lost its key (copy_family).
 */
CREATE OR REPLACE FUNCTION tenantry.leftover_tables(table_name name)
RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid::regclass FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname = leftover_tables.table_name AND c.relkind IN ('r', 'p')
      AND n.nspname ~ '^tenant_[0-9a-f]{20}$'
      AND NOT EXISTS (SELECT 1 FROM tenantry.tenant_tables r JOIN pg_catalog.pg_class a ON a.oid = r.table_id
                      WHERE a.relname = leftover_tables.table_name)
    ORDER BY n.nspname
$$;
COMMENT ON FUNCTION tenantry.leftover_tables(name) IS 'Internal (the doctor''s rule exists, adopt_table, release_table of a dropped adopted table): the tables in tenant schemas with that name while no adopted table has it, left behind by a dropped adopted table of that name. Granted to the roles that run the doctor.';
GRANT EXECUTE ON FUNCTION tenantry.leftover_tables(name) TO tenantry_admin, tenantry_server;

/**
 * leftover_tables(table_name), each locked and whether it holds a row, for
 * release_table of a dropped table. Whether each holds a row is read as the
 * owner (BYPASSRLS): the migration role calling release_table would see none
 * under the tables' policies.
 */
CREATE OR REPLACE FUNCTION tenantry.tables_left_behind(table_name name)
RETURNS TABLE (copy regclass, holds_rows boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
BEGIN
    FOR rel IN SELECT * FROM tenantry.leftover_tables(tables_left_behind.table_name)
    LOOP
        copy := rel;
        -- Held until the caller's transaction ends, before it is read: a
        -- schema tenant's insert in flight (the tables keep their grants)
        -- is then either seen here or waits for the drop to fail it,
        -- never dropped unseen (found by a review).
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', rel);
        EXECUTE format('SELECT EXISTS (SELECT FROM %s)', rel) INTO holds_rows;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantry.tables_left_behind(name) IS 'Internal (release_table of a dropped adopted table): leftover_tables(name), each locked (ACCESS EXCLUSIVE, until the caller''s transaction ends) and whether it holds a row (read as the owner). Not granted.';

/**
 * The privileges an ACL gives roles of the team's: PUBLIC and every role
 * that still exists, but the owner `owner` and tenantry's own roles; one row
 * per privilege and grantee (with grant option when any grant had it), the
 * grantee's oid (0: PUBLIC) and its name as GRANT takes it. adopt_table
 * names them (they reach no row once the table is adopted) and
 * release_table grants them again (or names PUBLIC's).
 */
CREATE OR REPLACE FUNCTION tenantry.team_grants(acl aclitem[], owner oid)
RETURNS TABLE (privilege_type text, grantee oid, grantee_name text, is_grantable boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.privilege_type, a.grantee,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
           bool_or(a.is_grantable)
      FROM pg_catalog.aclexplode(acl) a
     WHERE a.grantee <> owner
       AND (a.grantee = 0 OR EXISTS (
            SELECT 1 FROM pg_catalog.pg_roles r
             WHERE r.oid = a.grantee
               AND r.rolname NOT IN ('tenantry_owner', 'tenantry_app', 'tenantry_app_own', 'tenantry_app_shared',
                                     'tenantry_admin', 'tenantry_logger', 'tenantry_server')))
     GROUP BY a.privilege_type, a.grantee
     ORDER BY 3, 1
$$;
COMMENT ON FUNCTION tenantry.team_grants(aclitem[], oid) IS 'Internal: the privileges an ACL gives PUBLIC and the team''s existing roles (not the owner, not tenantry''s roles), per privilege and grantee with its name as GRANT takes it; what adopt_table names and release_table gives back. Not granted.';

/** Undoes adopt_table: the table is the application's again, without RLS. */
CREATE OR REPLACE FUNCTION tenantry.release_table(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- Its DROP ... IF EXISTS of what an option never made would each print a
-- notice ("policy ... does not exist, skipping") that says nothing to the
-- caller.
SET client_min_messages = warning
AS $$
DECLARE
    entry tenantry.tenant_tables;
    back_to regrole;
    part regclass;
    wp record;
    seq regclass;
    held text;
    left_behind regclass[];
    -- Schema tenants' tables of it, emptied of rows or refused.
    copies regclass[];
    has_rows boolean;
    caller_role text;
BEGIN
    -- Behind an adoption of the table in progress (adopt_table's lock).
    PERFORM pg_catalog.pg_advisory_xact_lock((1953390948::bigint << 32) + tbl::oid::bigint);
    SELECT r.* INTO entry FROM tenantry.tenant_tables r WHERE r.table_id = tbl FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not an adopted table', tbl USING ERRCODE = 'TN404';
    END IF;
    -- Dropped (the doctor's rule exists): its record goes, and the schema
    -- tenants' tables of it with it, found by the name it was adopted under,
    -- unless one still holds rows: those are dropped only when the caller
    -- says so. Left alone, a table adopted later under that name would take
    -- them, rows and all.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = tbl) THEN
        IF NOT pg_catalog.pg_has_role(current_user, 'tenantry_owner', 'USAGE') THEN
            RAISE EXCEPTION 'cannot release %: % is not a member of tenantry_owner', coalesce(entry.adopted_as, tbl::text), current_user
                USING ERRCODE = 'TN403';
        END IF;
        SELECT string_agg(l.copy::text, ', ') FILTER (WHERE l.holds_rows), array_agg(l.copy)
          INTO held, left_behind
          FROM tenantry.tables_left_behind((pg_catalog.parse_ident(entry.adopted_as))[2]) l;
        IF held IS NOT NULL THEN
            RAISE EXCEPTION 'cannot release % (dropped): schema tenants'' tables of it still hold their rows: %', entry.adopted_as, held
                USING ERRCODE = 'TN409',
                HINT = format('DROP TABLE %s CASCADE; discards them (the table they belonged to is gone), then run this again.', held);
        END IF;
        FOREACH part IN ARRAY coalesce(left_behind, '{}') LOOP
            EXECUTE format('DROP TABLE %s CASCADE', part);
        END LOOP;
        DELETE FROM tenantry.tenant_tables r WHERE r.table_id = tbl;
        PERFORM tenantry.write_operator_audit('table.released', 'table', entry.adopted_as,
            jsonb_build_object('dropped', true));
        RETURN;
    END IF;
    -- The role that owned it before may be gone (dropped once it owned
    -- nothing): the caller takes it, and is told.
    -- Recorded as regrole prints it: quoted when the name needs it.
    back_to := pg_catalog.to_regrole(entry.previous_owner);
    IF back_to IS NULL THEN
        RAISE WARNING 'the role % that owned % before its adoption no longer exists: % takes it', entry.previous_owner, tbl, current_user;
        back_to := current_user::regrole;
    END IF;
    IF NOT pg_catalog.pg_has_role(current_user, 'tenantry_owner', 'USAGE')
       OR NOT pg_catalog.pg_has_role(current_user, back_to::oid, 'USAGE') THEN
        RAISE EXCEPTION 'cannot release %: % cannot hand it back to %', tbl, current_user, back_to
            USING ERRCODE = 'TN403';
    END IF;
    -- An adopted table whose foreign key reaches this one would point at a
    -- table without isolation: its inserts would learn whether another
    -- tenant's row exists (the doctor's rule references, and the server's
    -- boot check, then refuse it). Released first, or its key dropped.
    SELECT string_agg(format('%s (%I)', k.conrelid::regclass, k.conname), ', ' ORDER BY k.conrelid::regclass::text, k.conname)
      INTO held
      FROM pg_catalog.pg_constraint k
     WHERE k.contype = 'f' AND k.confrelid = tbl AND k.conrelid <> tbl
       AND k.conrelid IN (SELECT r.table_id FROM tenantry.tenant_tables r);
    IF held IS NOT NULL THEN
        RAISE EXCEPTION 'cannot release %: adopted tables reference it: %', tbl, held
            USING ERRCODE = 'TN409',
            HINT = 'Release those tables first, or drop their foreign keys to it.';
    END IF;
    -- Schema tenants' tables of it that hold no row go with the adoption
    -- (refused while any existed: one schema tenant made every release wait
    -- for a move of every schema tenant; found by a review as a new user),
    -- each locked first, in tries that hold no tenant back, so that no row
    -- arrives between the look and the drop. One that holds rows would be
    -- left behind: refused. (Also when the table lost the primary key that
    -- made it a family: those tables are compared no more.)
    SELECT array_agg(f.copy ORDER BY f.copy::text) INTO copies
      FROM tenantry.family_copies() f WHERE f.template = tbl;
    IF copies IS NOT NULL THEN
        PERFORM tenantry.in_lock_tries(
            ARRAY(SELECT format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', c) FROM unnest(copies) c(c)),
            format('the schema tenants'' tables of %s', tbl));
        -- Read as tenantry_owner, which bypasses row level security: under
        -- the caller's rights the copies' forced policies showed a
        -- migration role (a member of tenantry_owner, as the README
        -- advises) no row without a tenant context, and a schema tenant's
        -- rows were dropped with its table (an outside review).
        IF NOT tenantry.caller_bypasses_rls() THEN
            caller_role := pg_catalog.current_setting('role');
            PERFORM pg_catalog.set_config('role', 'tenantry_owner', true);
        END IF;
        FOREACH part IN ARRAY copies LOOP
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', part) INTO STRICT has_rows;
            IF has_rows THEN
                RAISE EXCEPTION 'cannot release %: schema tenants hold their rows of it in tables of their own (% among them)', tbl, part
                    USING ERRCODE = 'TN409',
                    HINT = 'Move those tenants to the shared tier first (tenantry tenant move <id> --to shared).';
            END IF;
        END LOOP;
        IF caller_role IS NOT NULL THEN
            PERFORM pg_catalog.set_config('role', caller_role, true);
        END IF;
        FOREACH part IN ARRAY copies LOOP
            EXECUTE format('DROP TABLE %s', part);
        END LOOP;
    END IF;
    IF EXISTS (SELECT 1 FROM tenantry.orphan_copies() o WHERE o.adopted = tbl) THEN
        RAISE EXCEPTION 'cannot release %: schema tenants hold their rows of it in tables of their own', tbl
            USING ERRCODE = 'TN409',
            HINT = 'Move those tenants to the shared tier first (tenantry tenant move <id> --to shared).';
    END IF;
    -- On Citus, undoing the adoption would change the table's shards both
    -- as the owner (shares, policies) and as the caller (ownership), and
    -- Citus refuses one transaction that touches the same shards as two
    -- roles (docs/scale-out.md).
    IF tenantry.citus_distributed() THEN
        RAISE EXCEPTION 'cannot release %: on Citus an adopted table stays a tenant table', tbl
            USING ERRCODE = 'TN409',
            HINT = 'Its rows stay isolated; to give the table back, copy its rows to a new table and drop this one.';
    END IF;
    -- Dropping the key to tenants (last, below) locks tenants against every
    -- tenant's reads: that lock and this table's, first and together.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = tbl AND k.conname = 'tenantry_tenant_id_fkey') THEN
        PERFORM tenantry.lock_for_tenant_key(tbl, true);
    END IF;
    PERFORM tenantry.drop_trigger_if_any(tbl, 'tenant_tier_lock');
    PERFORM tenantry.drop_trigger_if_any(tbl, 'tenant_row_home');
    PERFORM tenantry.drop_trigger_if_any(tbl, 'tenantry_keep_tenant_id');
    PERFORM tenantry.drop_trigger_if_any(tbl, 'tenantry_keep_tenant_id_written');
    PERFORM tenantry.drop_trigger_if_any(tbl, 'tenantry_shared_rows_follow');
    PERFORM tenantry.drop_trigger_if_any(tbl, 'tenantry_shared_rows_truncated');
    EXECUTE format('ALTER TABLE %s ALTER COLUMN tenant_id DROP DEFAULT', tbl);
    FOR part IN SELECT * FROM tenantry.table_and_partitions(tbl) LOOP
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', part);
        FOR wp IN SELECT * FROM tenantry.write_permission_policies() LOOP
            EXECUTE format('DROP POLICY IF EXISTS %I ON %s', wp.polname, part);
        END LOOP;
        -- Row level security as it was before the adoption (found by a
        -- review: switched off, it stopped enforcing the team's own
        -- restrictive policies, and a role that read none of the rows read
        -- them all). Unrecorded (adopted before 0048), and on partitions:
        -- on while policies of the team's own remain.
        IF coalesce(CASE WHEN part = tbl THEN entry.previous_force_row_security END, false) THEN
            NULL;
        ELSE
            EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', part);
        END IF;
        IF NOT coalesce(CASE WHEN part = tbl THEN entry.previous_row_security END,
                        EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = part)) THEN
            EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', part);
        END IF;
        EXECUTE format('REVOKE ALL ON TABLE %s FROM tenantry_app, tenantry_app_own, tenantry_app_shared, '
                       'tenantry_admin, tenantry_logger, tenantry_server', part);
        EXECUTE format('ALTER TABLE %s OWNER TO %s', part, back_to);
    END LOOP;
    -- The privileges adoption took from roles of the team's, granted again
    -- by the owner it had. Not those of PUBLIC or of a role the server's
    -- login may become: the table now holds every tenant's rows, and with
    -- them SQL injected into any tenant's transaction would read them all
    -- (found by a review of this change); they are named, for the team to
    -- grant if it means to.
    FOR wp IN
        SELECT g.privilege_type, g.grantee, g.grantee_name, g.is_grantable,
               g.grantee = 0 OR pg_catalog.pg_has_role('tenantry_server', g.grantee, 'MEMBER') AS reaches_tenants
          FROM tenantry.team_grants(entry.previous_acl, back_to::oid) g
    LOOP
        IF wp.reaches_tenants THEN
            RAISE WARNING 'not granted again on %: % to % (the table holds every tenant''s rows, and tenantry''s roles, which SQL of any tenant''s transaction runs as, would reach them through it): GRANT % ON TABLE % TO %;',
                tbl, wp.privilege_type, wp.grantee_name, wp.privilege_type, tbl, wp.grantee_name;
        ELSE
            EXECUTE format('GRANT %s ON TABLE %s TO %s%s', wp.privilege_type, tbl, wp.grantee_name,
                           CASE WHEN wp.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END IF;
    END LOOP;
    -- A tenant_id that adoption added, or made NOT NULL, takes NULL again,
    -- so that the application of before inserts again (unless a key of the
    -- table includes it now).
    IF entry.previous_tenant_id_not_null IS FALSE AND NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
          ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = tbl AND (i.indisprimary OR i.indisreplident) AND a.attname = 'tenant_id') THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN tenant_id DROP NOT NULL', tbl);
    END IF;
    -- The serial columns' sequences (secure_tenant_table granted their use).
    FOR seq IN
        SELECT * FROM tenantry.owned_sequences(tbl)
    LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM tenantry_app, tenantry_app_own, tenantry_app_shared, '
                       'tenantry_admin, tenantry_logger, tenantry_server', seq);
    END LOOP;
    DELETE FROM tenantry.tenant_tables r WHERE r.table_id = tbl;
    -- Last: dropping the key drops its trigger on tenants (locked above).
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = tbl AND k.conname = 'tenantry_tenant_id_fkey') THEN
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT tenantry_tenant_id_fkey', tbl);
    END IF;
    PERFORM tenantry.write_operator_audit('table.released', 'table', tbl::text,
        jsonb_build_object('dropped', false, 'owner', entry.previous_owner));
END
$$;
COMMENT ON FUNCTION tenantry.release_table(regclass) IS 'Undoes adopt_table: revokes every share of its rows, drops tenantry''s policies, triggers and tenant foreign key, puts row level security back as it was before the adoption (enabled, forced; for tables adopted before migration 0048: on while policies of the team''s own remain), revokes the app roles'' grants (on its sequences too), gives the table back to its previous owner (to the caller, with a warning, when that role no longer exists) and grants again the privileges the team''s roles had on the table before the adoption (those of PUBLIC and of roles the server''s login may become are named in a warning, not granted: the table holds every tenant''s rows). The tenant_id column, its rows and indexes stay; it takes NULL again when adoption added it or made it NOT NULL, unless the primary key or the replica identity includes it. TN404 for a table that is not adopted; TN409 while schema tenants hold tables of it (also when it lost the primary key that made it a family). TN409 while another adopted table''s foreign key references it. Of a table dropped since its adoption (the doctor''s rule exists; pass its oid), it forgets the record and drops the schema tenants'' tables of it, or, TN409, names those that still hold rows.';

-- -----------------------------------------------------------------------------
-- Sharing rows of adopted tables (adopt_table(sharing => true)): the guide's
-- sharing, as for resources. A target reads but never writes (the table's one
-- policy does not let it near the row; it reads through the fence below);
-- revoking ends access with the next statement; a deleted tenant's shares, and
-- the shares made to it, end (tenants_revoke_shares_on_delete); a deleted row
-- takes its shares with it (shared_rows_follow). Shares are audited and count
-- toward max_shares (09_limits.sql).
-- -----------------------------------------------------------------------------

CREATE POLICY shared_rows_no_direct_access ON tenantry.shared_rows
    AS RESTRICTIVE FOR ALL TO PUBLIC
    USING (false) WITH CHECK (false);
COMMENT ON POLICY shared_rows_no_direct_access ON tenantry.shared_rows IS 'Nobody reads or writes the shares of rows under RLS: the table is granted to no role (its target index would let a tenant role probe other tenants'' shares); share_row, unshare_row, shares_of_my_rows and rows_shared_with_me reach it as the owner.';

/** Audits shares of rows made and revoked (by unshare_row, a deleted row or tenant, sharing switched off). */
CREATE OR REPLACE FUNCTION tenantry.shared_rows_audit()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM tenantry.write_audit(NEW.tenant_id, 'share.created', 'row', NEW.row_id,
            jsonb_build_object('table', NEW.table_id::text, 'shared_with', NEW.shared_with, 'shared_by', NEW.shared_by));
    ELSIF OLD.shared_with = tenantry.current_tenant_id() THEN
        -- Declined by its target (decline_row_share).
        PERFORM tenantry.audit_share_declined(OLD.tenant_id, OLD.shared_with, 'row', OLD.row_id,
            jsonb_build_object('table', OLD.table_id::text));
    ELSE
        PERFORM tenantry.write_audit(OLD.tenant_id, 'share.revoked', 'row', OLD.row_id,
            jsonb_build_object('table', OLD.table_id::text, 'shared_with', OLD.shared_with));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION tenantry.shared_rows_audit() IS 'Trigger: audits shares of rows of adopted tables made and revoked (target_type row, target_id the row key, details.table), and declined by their target (share.declined, in both logs; the owner''s names the target tenant as actor).';
CREATE OR REPLACE TRIGGER shared_rows_audit
    AFTER INSERT OR DELETE ON tenantry.shared_rows
    FOR EACH ROW EXECUTE FUNCTION tenantry.shared_rows_audit();

/**
 * The tables the rows of adopted table `rel` that belong to `owners` can be
 * in, as FROM items: for a family, the team's table (with any child of its
 * own, read under its policy; no schema tenant's table inherits it), and the family's
 * table in the schema of each schema tenant among `owners` (one whose table
 * of it is not made yet, by a tenant-schema step, keeps its rows in the
 * team's table). Another table keeps every tenant's rows: itself.
 */
CREATE OR REPLACE FUNCTION tenantry.family_tables(rel regclass, owners uuid[])
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF rel <> ALL (tenantry.table_families()) THEN
        RETURN ARRAY[rel::text];
    END IF;
    -- The team's table with whatever inherits it (no schema tenant's table
    -- does: 0036), read under its policy; resources' own alone.
    RETURN ARRAY[CASE WHEN rel = pg_catalog.to_regclass('tenantry.resources') THEN 'ONLY ' ELSE '' END || rel::text]
        || ARRAY(SELECT 'ONLY ' || x.copy::text
                 FROM (SELECT DISTINCT to_regclass(format('%I.%I', t.schema_name, rc.relname)) AS copy
                       FROM tenantry.tenants t, pg_class rc
                       WHERE t.tenant_id = ANY (owners) AND t.isolation = 'schema' AND rc.oid = rel) x
                 WHERE x.copy IS NOT NULL
                 ORDER BY x.copy::text);
END
$$;
COMMENT ON FUNCTION tenantry.family_tables(regclass, uuid[]) IS 'Internal (rows_shared_with_me, lock_shareable_row, as the owner): the tables, as FROM items, that rows of an adopted table owned by the given tenants can be in, never every schema tenant''s table of the family: the team''s table (with any child of its own, under its policy; resources'' alone), and those schema tenants'' tables of it; another table itself. Not granted.';

/**
 * family_tables() as one FROM item: a UNION ALL of each table under the
 * adopted table's columns, by name (a schema tenant's table may number them
 * otherwise). A schema tenant's table behind a tenant-schema step (a column
 * not added yet, or of another type) reads as NULL or cast for it, so one
 * lagging schema never fails another tenant's read. What
 * rows_shared_with_me and subtree_source read.
 */
CREATE OR REPLACE FUNCTION tenantry.family_source(rel regclass, owners uuid[])
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '(' || string_agg(format('SELECT %s FROM %s', c.cols, f.item), ' UNION ALL ' ORDER BY f.n) || ')'
    FROM unnest(tenantry.family_tables(rel, owners)) WITH ORDINALITY f(item, n)
    CROSS JOIN LATERAL (
        SELECT string_agg(CASE WHEN h.atttypid IS NULL
                               THEN format('NULL::%s AS %I', format_type(a.atttypid, a.atttypmod), a.attname)
                               WHEN (h.atttypid, h.atttypmod) IS DISTINCT FROM (a.atttypid, a.atttypmod)
                               THEN format('%I::%s AS %I', a.attname, format_type(a.atttypid, a.atttypmod), a.attname)
                               ELSE format('%I', a.attname) END,
                          ', ' ORDER BY a.attnum) AS cols
        FROM pg_catalog.pg_attribute a
        LEFT JOIN pg_catalog.pg_attribute h
               ON h.attrelid = regexp_replace(f.item, '^ONLY ', '')::regclass
              AND h.attname = a.attname AND h.attnum > 0 AND NOT h.attisdropped
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped) c
$$;
COMMENT ON FUNCTION tenantry.family_source(regclass, uuid[]) IS 'Internal (rows_shared_with_me, subtree_source, as the owner): family_tables(rel, owners) as one FROM item, each table under rel''s columns by name (NULL, or cast, for a column a lagging schema tenant''s table lacks or types otherwise). Not granted.';

/**
 * The owner of a row the caller may share or unshare, row-locked until the end
 * of the transaction (share and revocation of one row queue), and the row's key
 * as shares record it. The caller reaches the row as the table's policy lets
 * it: its own rows, and its descendants' when the table has hierarchy. TN403
 * without a tenant context; TN422 for a table that is not adopted with
 * sharing; TN404 for a missing, a foreign and a malformed row id alike.
 */
CREATE OR REPLACE FUNCTION tenantry.lock_shareable_row(tbl regclass, row_id text, OUT owner_id uuid, OUT row_key text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Keys read and spelled with the settings pinned (see shared_rows_follow).
SET DateStyle = 'ISO, MDY'
SET TimeZone = 'UTC'
SET IntervalStyle = 'postgres'
SET bytea_output = 'hex'
SET extra_float_digits = 1
SET lc_monetary = 'C'
AS $$
DECLARE
    entry tenantry.tenant_tables;
    reach uuid[];
    item text;
    key_column name;
    key_type text;
    holder uuid;
    owners uuid[] := '{}';
    homes text[] := '{}';
    pick integer;
BEGIN
    IF tenantry.current_tenant_id() IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403';
    END IF;
    key_column := tenantry.row_key_column(tbl);
    SELECT r.* INTO entry FROM tenantry.tenant_tables r WHERE r.table_id = tbl AND r.sharing;
    IF NOT FOUND OR key_column IS NULL THEN
        RAISE EXCEPTION 'the rows of % cannot be shared', tbl USING ERRCODE = 'TN422',
            HINT = 'The table''s migration adopts it with sharing => true.';
    END IF;
    key_type := tenantry.row_key_type(tbl);
    BEGIN
        EXECUTE format('SELECT $1::%s::text', key_type) INTO row_key USING row_id;
    EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
        row_key := NULL;  -- no row has such a key: answered as not found below
    END;
    IF row_key IS NOT NULL THEN
        reach := CASE WHEN entry.hierarchy THEN tenantry.visible_tenant_ids()
                      ELSE ARRAY[tenantry.current_tenant_id()] END;
        -- Table by table (family_tables: not the whole family), every
        -- tenant of the reach with a row of this key, then the row locked
        -- by (owner, key): Citus refuses FOR UPDATE in a statement that
        -- reaches several shards.
        FOREACH item IN ARRAY tenantry.family_tables(tbl, reach) LOOP
            FOR holder IN EXECUTE format('SELECT t.tenant_id FROM %s t WHERE t.%I = $1::%s AND t.tenant_id = ANY ($2)',
                                        item, key_column, key_type)
                USING row_key, reach
            LOOP
                owners := owners || holder;
                homes := homes || item;
            END LOOP;
        END LOOP;
        -- Keys are unique per tenant only ((tenant_id, id)): with the
        -- hierarchy, the caller's own row and its descendants' rows may
        -- share one. The caller's own is meant; a key only descendants hold
        -- names their row when one holds it, and is refused when several
        -- do (an outside review: a parent's share_row of its row 1 shared
        -- its child's row 1, whichever came first).
        pick := array_position(owners, tenantry.current_tenant_id());
        IF pick IS NULL AND cardinality(owners) > 1 THEN
            RAISE EXCEPTION 'rows of % of your descendants have the key % in %', cardinality(owners), lock_shareable_row.row_id, tbl
                USING ERRCODE = 'TN409', HINT = 'row_id',
                      DETAIL = 'Share or unshare it in the context of the tenant whose row it is.';
        ELSIF pick IS NULL AND cardinality(owners) = 1 THEN
            pick := 1;
        END IF;
        IF pick IS NOT NULL THEN
            -- The key as the row itself spells it: a caller's 1.0 is row
            -- 1.00 (numeric), 'abc' row 'ABC' (a case-insensitive
            -- collation), and the share must name what the row's
            -- deletion looks for (found by a verification review: a
            -- deleted row's share passed to the next row of an equal key).
            EXECUTE format('SELECT t.tenant_id, t.%2$I::text FROM %1$s t WHERE t.%2$I = $1::%3$s AND t.tenant_id = $2 FOR UPDATE',
                           homes[pick], key_column, key_type)
                INTO owner_id, row_key
                USING row_key, owners[pick];
        END IF;
    END IF;
    IF owner_id IS NULL THEN
        RAISE EXCEPTION 'row % of % not found', lock_shareable_row.row_id, tbl USING ERRCODE = 'TN404', HINT = 'row_id';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.lock_shareable_row(regclass, text) IS 'Internal: owner and key of a row of an adopted table with sharing that the current tenant reaches under the table''s policy, row-locked: its own row of that key, else the one descendant''s holding it (TN409 when several descendants do); TN404 for a missing, foreign or malformed id alike, TN422 for a table without sharing, TN403 without a context. Not granted.';

/**
 * share_resource for a row of an adopted table with sharing: shares the row
 * (its key after tenant_id, as text) read-only with another active tenant.
 * The same answers as share_resource: TN404 for a missing and a foreign row
 * alike, and for a missing and a deleted target alike; TN409 for a suspended
 * target or an existing share; TN422 for the owner or, with hierarchy, one of
 * its ancestors; TN429 past max_shares. Audited.
 */
CREATE OR REPLACE FUNCTION tenantry.share_row(tbl regclass, row_id text, target_tenant_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_row record;
BEGIN
    -- As share_resource: the permission to share is resources.share, checked
    -- here since the function runs as the owner (found by a review of the
    -- hierarchy: a member without it shared rows from SQL).
    IF tenantry.current_tenant_id() IS NOT NULL AND NOT tenantry.authorize('resources.share') THEN
        RAISE EXCEPTION 'sharing rows needs resources.share' USING ERRCODE = 'TN401';
    END IF;
    tbl := tenantry.adopted_table_of(tbl);
    PERFORM tenantry.hold_share_tenant(target_tenant_id);
    SELECT * INTO found_row FROM tenantry.lock_shareable_row(tbl, share_row.row_id);
    IF tenantry.hold_share_tenant(found_row.owner_id) = 'deleted' OR NOT tenantry.share_maker_reaches(found_row.owner_id) THEN
        RAISE EXCEPTION 'row % of % not found', share_row.row_id, tbl USING ERRCODE = 'TN404';
    END IF;
    PERFORM tenantry.check_share_target(found_row.owner_id, target_tenant_id, 'row',
                                        (SELECT r.hierarchy FROM tenantry.tenant_tables r WHERE r.table_id = tbl));
    INSERT INTO tenantry.shared_rows (tenant_id, table_id, row_id, shared_with, shared_by, shared_by_tenant)
    VALUES (found_row.owner_id, tbl, found_row.row_key, target_tenant_id, tenantry.current_user_id(), tenantry.current_tenant_id())
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'row % of % is already shared with tenant %', share_row.row_id, tbl, target_tenant_id
            USING ERRCODE = 'TN409', HINT = 'tenant_id';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.share_row(regclass, text, uuid) IS 'Shares a row (by its key after tenant_id) of an adopted table with sharing, read-only, with another active tenant; needs resources.share (TN401); the row must be the current tenant''s (or, with hierarchy, a descendant''s). TN404 for a missing or foreign row alike and for a missing or deleted target alike, TN409 if already shared, TN429 past max_shares. Audited.';
GRANT EXECUTE ON FUNCTION tenantry.share_row(regclass, text, uuid) TO tenantry_app;

/** Revokes a share of a row; the target loses it in its next statement. Audited. */
CREATE OR REPLACE FUNCTION tenantry.unshare_row(tbl regclass, row_id text, target_tenant_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_row record;
BEGIN
    IF tenantry.current_tenant_id() IS NOT NULL AND NOT tenantry.authorize('resources.share') THEN
        RAISE EXCEPTION 'revoking shares needs resources.share' USING ERRCODE = 'TN401';
    END IF;
    tbl := tenantry.adopted_table_of(tbl);
    SELECT * INTO found_row FROM tenantry.lock_shareable_row(tbl, unshare_row.row_id);
    DELETE FROM tenantry.shared_rows s
    WHERE s.tenant_id = found_row.owner_id AND s.table_id = tbl AND s.row_id = found_row.row_key
      AND s.shared_with = target_tenant_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'row % of % is not shared with tenant %', unshare_row.row_id, tbl, target_tenant_id
            USING ERRCODE = 'TN404', HINT = 'tenant_id';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.unshare_row(regclass, text, uuid) IS 'Revokes a share of a row made by the current tenant (or, with hierarchy, a descendant); needs resources.share (TN401). TN404 for a missing or foreign row and when there is no such share. Audited.';
GRANT EXECUTE ON FUNCTION tenantry.unshare_row(regclass, text, uuid) TO tenantry_app;

/**
 * The target of a row's share gives it up (decline_share for rows): a row of
 * an adopted table shared with the current tenant is shared with it no
 * more, as if its owner had revoked the share. The key is read as the
 * table's key type writes it ('01' is row 1), as share_row reads it. TN404
 * when no such share is made to the current tenant, whoever owns the row.
 */
CREATE OR REPLACE FUNCTION tenantry.decline_row_share(tbl regclass, row_id text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Keys read and spelled with the settings pinned (see shared_rows_follow).
SET DateStyle = 'ISO, MDY'
SET TimeZone = 'UTC'
SET IntervalStyle = 'postgres'
SET bytea_output = 'hex'
SET extra_float_digits = 1
SET lc_monetary = 'C'
AS $$
DECLARE
    me uuid := tenantry.current_tenant_id();
    key_type text;
    row_key text;
    declined bigint;
    needs text;
BEGIN
    IF me IS NULL THEN
        RAISE EXCEPTION 'no tenant context is set' USING ERRCODE = 'TN403';
    END IF;
    tbl := tenantry.adopted_table_of(tbl);
    -- As decline_share needs resources.write: the table's write permission,
    -- when it has one (the function runs as the owner: checked here).
    SELECT r.write_permission INTO needs FROM tenantry.tenant_tables r WHERE r.table_id = tbl;
    IF needs IS NOT NULL AND NOT tenantry.authorize(needs) THEN
        RAISE EXCEPTION 'declining a share of a row of % needs %', tbl, needs USING ERRCODE = 'TN401';
    END IF;
    key_type := tenantry.row_key_type(tbl);
    IF key_type IS NOT NULL THEN
        BEGIN
            EXECUTE format('SELECT $1::%s::text', key_type) INTO row_key USING decline_row_share.row_id;
        EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
            -- Not a value of the type (any more: an enum label renamed): the
            -- share recorded under that spelling, if any, is declined by it.
            row_key := decline_row_share.row_id;
        END;
    END IF;
    -- By value (a caller's 1.0 declines the share of row 1.00).
    IF row_key IS NOT NULL THEN
        BEGIN
            EXECUTE format('DELETE FROM tenantry.shared_rows s
                            WHERE s.table_id = $1 AND s.shared_with = $2 AND s.row_id::%s = $3::%1$s', key_type)
                USING tbl, me, row_key;
            GET DIAGNOSTICS declined = ROW_COUNT;
        EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
            -- (a recorded key that no longer reads as the type: by spelling)
            DELETE FROM tenantry.shared_rows s
            WHERE s.table_id = tbl AND s.shared_with = me AND s.row_id = row_key;
            GET DIAGNOSTICS declined = ROW_COUNT;
        END;
    END IF;
    IF coalesce(declined, 0) = 0 THEN
        RAISE EXCEPTION 'row % of % is not shared with tenant %', decline_row_share.row_id, tbl, me
            USING ERRCODE = 'TN404', HINT = 'row_id';
    END IF;
END
$$;
COMMENT ON FUNCTION tenantry.decline_row_share(regclass, text) IS 'The current tenant gives up a row of an adopted table shared with it (as if its owner had revoked the share; audited in both tenants'' logs as share.declined); needs the table''s write permission when it has one (TN401). TN404 when no such share is made to it.';
GRANT EXECUTE ON FUNCTION tenantry.decline_row_share(regclass, text) TO tenantry_app;

/**
 * The shares of the rows the current tenant reaches (its own, and with
 * hierarchy its descendants'), of one adopted table or all: the owner's view of
 * shared_rows, as the shares_of_my_resources policy gives it for resources.
 */
CREATE OR REPLACE FUNCTION tenantry.shares_of_my_rows(tbl regclass DEFAULT NULL)
RETURNS TABLE (table_name text, row_id text, tenant_id uuid, shared_with uuid, shared_by uuid, shared_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.table_id::text, s.row_id, s.tenant_id, s.shared_with, s.shared_by, s.shared_at
    FROM tenantry.tenant_tables r
    JOIN tenantry.shared_rows s
      ON s.table_id = r.table_id
     AND s.tenant_id = ANY (CASE WHEN r.hierarchy THEN tenantry.visible_tenant_ids()
                                 ELSE ARRAY[tenantry.current_tenant_id()] END)
    WHERE (shares_of_my_rows.tbl IS NULL OR r.table_id = shares_of_my_rows.tbl)
    ORDER BY 1, s.tenant_id, s.row_id, s.shared_with
$$;
COMMENT ON FUNCTION tenantry.shares_of_my_rows(regclass) IS 'The shares of rows of adopted tables that the current tenant reaches (its own; with hierarchy, its descendants'' too): table, row key, owner, target, who and when. Nothing without a tenant context.';
GRANT EXECUTE ON FUNCTION tenantry.shares_of_my_rows(regclass) TO tenantry_app;

/**
 * The guide's tenant_sharing policy for an adopted table, as a fence: the rows
 * of the table whose type `tbl` is (pass NULL::the_table) shared with the
 * current tenant, read only, optionally one row by its key. A set-returning
 * SECURITY DEFINER function is planned apart from the caller's query, so no
 * condition of the caller reaches its scan: the rows any plan touches are rows
 * shared with the caller, and EXPLAIN ANALYZE counts nothing foreign. Nothing
 * without a tenant context; TN422 for a table without sharing.
 */
CREATE OR REPLACE FUNCTION tenantry.rows_shared_with_me(tbl anyelement, row_id text DEFAULT NULL)
RETURNS SETOF anyelement
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Keys read and spelled with the settings pinned (see shared_rows_follow).
SET DateStyle = 'ISO, MDY'
SET TimeZone = 'UTC'
SET IntervalStyle = 'postgres'
SET bytea_output = 'hex'
SET extra_float_digits = 1
SET lc_monetary = 'C'
AS $$
DECLARE
    rel regclass := tenantry.adopted_table_of((SELECT NULLIF(t.typrelid, 0)::regclass FROM pg_catalog.pg_type t
                                               WHERE t.oid = pg_catalog.pg_typeof(tbl)));
    key text;
    source text;
BEGIN
    IF rel IS NULL OR tenantry.row_key_column(rel) IS NULL
       OR NOT EXISTS (SELECT 1 FROM tenantry.tenant_tables r WHERE r.table_id = rel AND r.sharing) THEN
        RAISE EXCEPTION 'the rows of % are not shared: pass NULL::<an adopted table with sharing>', pg_catalog.pg_typeof(tbl)
            USING ERRCODE = 'TN422';
    END IF;
    IF tenantry.current_tenant_id() IS NULL THEN
        RETURN;
    END IF;
    IF rows_shared_with_me.row_id IS NOT NULL THEN
        BEGIN
            EXECUTE format('SELECT $1::%s::text', tenantry.row_key_type(rel)) INTO key USING rows_shared_with_me.row_id;
        EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN
            RETURN;  -- no row has such a key
        END;
    END IF;
    -- The tables the shared rows can be in (family_tables: never a whole
    -- table family, whose every schema tenant's table a read would lock).
    source := tenantry.family_source(rel, ARRAY(
        SELECT DISTINCT s.tenant_id FROM tenantry.shared_rows s
        WHERE s.shared_with = tenantry.current_tenant_id() AND s.table_id = rel));
    RETURN QUERY EXECUTE format(
        'SELECT t.* FROM tenantry.shared_rows s JOIN %s t ON t.tenant_id = s.tenant_id AND t.%I = s.row_id::%s '
        'WHERE s.shared_with = $1 AND s.table_id = $2 AND ($3::text IS NULL OR s.row_id::%3$s = $3::%3$s) '
        'ORDER BY s.tenant_id, s.row_id',
        source, tenantry.row_key_column(rel), tenantry.row_key_type(rel))
    USING tenantry.current_tenant_id(), rel, key;
END
$$;
COMMENT ON FUNCTION tenantry.rows_shared_with_me(anyelement, text) IS 'Guide policy tenant_sharing for adopted tables, as a fence: SELECT * FROM tenantry.rows_shared_with_me(NULL::invoices) returns the rows of invoices shared with the current tenant (read only), optionally only the row with the given key. No caller condition reaches its scan, so EXPLAIN ANALYZE shows nothing foreign. TN422 for a table without sharing.';
GRANT EXECUTE ON FUNCTION tenantry.rows_shared_with_me(anyelement, text) TO tenantry_app, tenantry_app_shared;

/**
 * The FROM item subtree_rows reads: each table the rows of adopted table
 * `typ` of the current tenant and its descendants can be in (family_tables:
 * the team's table alone and the schema tenants' tables among them, never
 * the whole family), under `typ`'s columns. NULL without a tenant context.
 */
CREATE OR REPLACE FUNCTION tenantry.subtree_source(typ regtype)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass := tenantry.adopted_table_of((SELECT NULLIF(t.typrelid, 0)::regclass FROM pg_catalog.pg_type t
                                               WHERE t.oid = typ));
BEGIN
    -- No context, no answer (not even whether the table is adopted).
    IF tenantry.current_tenant_id() IS NULL THEN
        RETURN NULL;
    END IF;
    IF rel IS NULL OR NOT EXISTS (SELECT 1 FROM tenantry.tenant_tables r WHERE r.table_id = rel) THEN
        RAISE EXCEPTION '% is not an adopted table: pass NULL::<an adopted table>', typ
            USING ERRCODE = 'TN422';
    END IF;
    RETURN tenantry.family_source(rel, tenantry.visible_tenant_ids());
END
$$;
COMMENT ON FUNCTION tenantry.subtree_source(regtype) IS 'Internal (subtree_rows): the tables, as one FROM item under the adopted table''s columns, that the current tenant''s and its descendants'' rows of it can be in, whichever their tier: the team''s table alone and those schema tenants'' own tables. NULL without a tenant context (before anything else is looked at); TN422 for a type that is not an adopted table''s.';
GRANT EXECUTE ON FUNCTION tenantry.subtree_source(regtype) TO tenantry_app;

/**
 * Hierarchy across tiers for adopted tables: every row of an adopted table
 * that the current tenant's policy lets it read, its own and its
 * descendants', from the team's table and from the schema tenants' tables
 * of its descendants. A statement on the table's name reads one table (the
 * tenant's own tier's); SELECT * FROM tenantry.subtree_rows(NULL::invoices)
 * reads them all. Runs as the caller: each table's policy decides.
 */
CREATE OR REPLACE FUNCTION tenantry.subtree_rows(tbl anyelement)
RETURNS SETOF anyelement
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    source text := tenantry.subtree_source(pg_catalog.pg_typeof(tbl));
BEGIN
    IF source IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE 'SELECT * FROM ' || source || ' t';
END
$$;
COMMENT ON FUNCTION tenantry.subtree_rows(anyelement) IS 'Hierarchy across tiers for adopted tables: SELECT * FROM tenantry.subtree_rows(NULL::invoices) returns every row of invoices the current tenant may read (its own and its descendants''), wherever each is: the team''s table and the tables of the schema tenants among its descendants (a statement on the table''s name reads the tenant''s own tier''s table only). Runs as the caller, under each table''s policy. Empty without a tenant context; TN422 for a table that is not adopted.';
GRANT EXECUTE ON FUNCTION tenantry.subtree_rows(anyelement) TO tenantry_app;

-- Tables adopted under older definitions get the current ones.
SELECT tenantry.secure_tenant_table(r.table_id, r.hierarchy, r.sharing, r.write_permission)
FROM tenantry.tenant_tables r
JOIN pg_catalog.pg_class c ON c.oid = r.table_id::oid;

-- Tenant schemas made before these definitions: brought to the current
-- policies, triggers, grants and comments (the function is idempotent), here
-- after the adopted tables above, whose triggers their tables copy (in
-- 07_schemas.sql, before them, a trigger added to adopted tables reached
-- schema tenants' tables only at the next upgrade: found by a review). In
-- this transaction for a few hundred schema tenants; with more, securing
-- them here would lock each of their tables at once and run out of lock
-- table (53200, measured with 1,400 schema tenants and two tenant tables:
-- about five locks per table), so a tenant-schema step is recorded instead
-- and tenantry migrate secures them schema by schema, one transaction each,
-- resumably (migrate_tenant_schema secures a schema after its steps; the
-- doctor lists the schemas behind). The setting
-- tenantry.secure_schemas_inline_max (default 500) moves the threshold.
DO $schemas$
DECLARE
    tid uuid;
    inline_max integer := coalesce(nullif(current_setting('tenantry.secure_schemas_inline_max', true), '')::integer, 500);
BEGIN
    IF (SELECT count(*) FROM tenantry.tenants WHERE isolation = 'schema') > inline_max THEN
        PERFORM tenantry.add_tenant_schema_step('tables secured as their templates are now (tenantry definitions)', 'SELECT 1');
        RETURN;
    END IF;
    -- Those behind the latest tenant-schema version may lack a column that
    -- a trigger or grant of their template names: migrate_tenant_schema
    -- secures each once it has run its steps.
    FOR tid IN SELECT tenant_id FROM tenantry.tenants
               WHERE isolation = 'schema' AND coalesce(schema_version, 0) >= tenantry.tenant_schema_latest()
               ORDER BY tenant_id LOOP
        PERFORM tenantry.secure_tenant_schema(tid);
    END LOOP;
END
$schemas$;
