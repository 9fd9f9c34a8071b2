-- =============================================================================
-- Applied last: a record of who owns each of tenantry's own objects (the
-- schema, its tables, views, sequences, functions and procedures) and what
-- every role may do with them, as the files above made them, so that the
-- doctor (table_problems, rule own_grants, 10_tables.sql) names an owner or a
-- privilege changed since. A DBA's GRANT SELECT ON tenantry.context_keys TO
-- PUBLIC (or to a role the server's login can become, or the table handed to
-- that login) handed SQL injected into the app the context signing keys,
-- with which it forges any tenant's context; a REVOKE of tenantry's own
-- grants failed every request; and the doctor was silent on both (found by a
-- DBA's review). Partitions (request_log's days) are made as the server runs
-- and are not recorded.
--
-- Like own_policy_definitions() (15_own_policies.sql), the record is a
-- function generated here whose body lists it as data.
-- =============================================================================

SET LOCAL ROLE tenantry_owner;

/**
 * Every object of schema tenantry now (the schema itself, its relations but
 * partitions, their columns, its routines but the record below): how the
 * doctor names it, what GRANT and ALTER ... OWNER TO take for it, the column
 * (for a column's privileges), its owner (none for a column or an index),
 * its privileges as sorted grantee:privilege items (`*`: with grant
 * option), the owner's included (a default ACL as PostgreSQL reads it), and
 * for an index whether it is on a tenant-keyed table without leading with
 * tenant_id.
 */
CREATE OR REPLACE FUNCTION tenantry.current_own_privileges()
RETURNS TABLE (object text, grant_on text, alter_on text, column_name text, owner text, privileges text[],
               tenant_oracle boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH objects AS (
        SELECT 'schema tenantry' AS object, 'SCHEMA tenantry' AS grant_on, 'SCHEMA tenantry' AS alter_on,
               NULL::text AS column_name, n.nspowner AS owner,
               coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner)) AS acl,
               false AS tenant_oracle
        FROM pg_catalog.pg_namespace n
        WHERE n.nspname = 'tenantry'
        UNION ALL
        SELECT format('%s tenantry.%I', k.word, c.relname),
               format('%s tenantry.%I', CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.relname),
               format('%s tenantry.%I', pg_catalog.upper(k.word), c.relname),
               -- A sequence of a table's column has the table's owner
               -- (ALTER SEQUENCE ... OWNER TO refuses it): the table's row
               -- names an owner changed.
               NULL,
               CASE WHEN c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend dp
                                                     WHERE dp.classid = 'pg_catalog.pg_class'::regclass AND dp.objid = c.oid
                                                       AND dp.refclassid = 'pg_catalog.pg_class'::regclass
                                                       AND dp.deptype IN ('a', 'i'))
                    THEN NULL ELSE c.relowner END,
               coalesce(c.relacl, pg_catalog.acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner)),
               false
        FROM pg_catalog.pg_class c
        CROSS JOIN LATERAL (SELECT CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
                                                  WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table'
                                                  ELSE 'table' END) k(word)
        WHERE c.relnamespace = 'tenantry'::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND NOT c.relispartition
        UNION ALL
        -- Every index (partitions' aside), with no owner or privileges of its
        -- own, and whether it is on a table with a tenant_id column without
        -- leading with it: one such an operator added turns EXPLAIN ANALYZE
        -- into an oracle of other tenants' rows (found by a DBA's review);
        -- others an operator adds (with a tenant-schema step for the schema
        -- tenants' tables) are theirs to add.
        SELECT format('index tenantry.%I', c.relname), NULL, format('INDEX tenantry.%I', c.relname),
               NULL, NULL::oid, NULL::aclitem[],
               EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid = x.indrelid AND a.attname = 'tenant_id' AND NOT a.attisdropped
                         AND a.attnum <> x.indkey[0])
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_index x ON x.indexrelid = c.oid
        WHERE c.relnamespace = 'tenantry'::regnamespace
          AND c.relkind IN ('i', 'I') AND NOT c.relispartition
        UNION ALL
        -- Every column, with privileges of its own or none (a grant on one
        -- is as much a read of it as one on the table); no owner of its own.
        SELECT format('column %I of tenantry.%I', a.attname, c.relname),
               format('TABLE tenantry.%I', c.relname), NULL, a.attname::text, NULL::oid, a.attacl, false
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace = 'tenantry'::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
          AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL
        SELECT format('%s %s', CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END, p.oid::regprocedure),
               'ROUTINE ' || p.oid::regprocedure::text, 'ROUTINE ' || p.oid::regprocedure::text,
               NULL, p.proowner, coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner)), false
        FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'tenantry'::regnamespace
          AND p.proname <> 'own_privilege_definitions'
    )
    SELECT o.object, o.grant_on, o.alter_on, o.column_name, o.owner::regrole::text,
           ARRAY(SELECT format('%s:%s%s', CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END,
                               x.privilege_type, CASE WHEN x.is_grantable THEN '*' ELSE '' END)
                 FROM pg_catalog.aclexplode(o.acl) x
                 ORDER BY 1),
           o.tenant_oracle
    FROM objects o
$$;
COMMENT ON FUNCTION tenantry.current_own_privileges() IS 'Every object of schema tenantry as the catalog has it now (partitions aside): name, GRANT and ALTER targets, column, owner and privileges (grantee:privilege, * with grant option). What the doctor''s rule own_grants compares with own_privilege_definitions().';
GRANT EXECUTE ON FUNCTION tenantry.current_own_privileges() TO tenantry_admin, tenantry_server;

DO $own$
DECLARE
    recorded text;
BEGIN
    SELECT string_agg(format('(%L, %L, %L)', o.object, o.owner, o.privileges), E',\n' ORDER BY o.object)
      INTO recorded
    FROM tenantry.current_own_privileges() o;
    EXECUTE format($create$
CREATE OR REPLACE FUNCTION tenantry.own_privilege_definitions()
RETURNS TABLE (object text, owner text, privileges text[])
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $body$ SELECT v.object, v.owner, v.privileges::text[] FROM (VALUES %s) v(object, owner, privileges) WHERE v.object IS NOT NULL $body$
        $create$, coalesce(recorded, '(NULL::text, NULL::text, NULL::text)'));
END
$own$;
COMMENT ON FUNCTION tenantry.own_privilege_definitions() IS 'tenantry''s own objects (name, owner, privileges) as tenantry migrate last made them: generated by repeatable/16_own_privileges.sql each time the definitions are applied. The doctor names every owner and privilege of schema tenantry that differs (rule own_grants).';
GRANT EXECUTE ON FUNCTION tenantry.own_privilege_definitions() TO tenantry_admin, tenantry_server;
