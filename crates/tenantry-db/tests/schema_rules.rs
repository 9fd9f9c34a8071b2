//! Schema rules: invariants that must hold for every object of the tenantry schema (and of every schema-isolated tenant's `tenant_<hex>` schema), checked through the catalog so that a new table, function, view or policy cannot quietly break them.
//!
//! Each test states one rule, collects every violation and fails listing them
//! all. The database holds one schema-isolated tenant, so the objects created
//! at run time for such tenants are checked too.

use tenantry_db::testing::TestDatabase;
use tokio_postgres::Client;

/// SQL condition on `n` (a `pg_namespace` row): the tenantry schema or a schema-isolated tenant's schema.
/// (Not `LIKE 'tenant_%'`: `_` is a wildcard there and would match `tenantry` itself.)
const IN_SCOPE: &str = "(n.nspname = 'tenantry' OR n.nspname ~ '^tenant_[0-9a-f]{20}$')";

/// Roles that act for tenants (directly or through the server's login).
const TENANT_ROLES: &str =
    "'tenantry_app', 'tenantry_app_own', 'tenantry_app_shared', 'tenantry_server'";

/// Every role the migrations create except the owner.
const NON_OWNER_ROLES: &str = "'tenantry_app', 'tenantry_app_own', 'tenantry_app_shared', \
                               'tenantry_admin', 'tenantry_logger', 'tenantry_server'";

/// Global tables that become Citus reference tables (docs/architecture.md,
/// "Scale-out on Citus"): the tenants, the permission catalogue and the hierarchy closure.
/// Distributed tables may reference them on any column.
const REFERENCE_TABLES: &str =
    "'tenantry.tenants', 'tenantry.permissions', 'tenantry.tenant_hierarchy'";

/// A fresh migrated database holding one schema-isolated tenant, and a superuser connection to read its catalog.
async fn catalog() -> (TestDatabase, Client) {
    let db = TestDatabase::new().await;
    let client = db.superuser_client().await;
    client
        .batch_execute(
            "SET ROLE tenantry_admin;
             SELECT tenantry.create_tenant('silo', NULL, 'schema');
             RESET ROLE;",
        )
        .await
        .expect("creating a schema-isolated tenant");
    let silos: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_namespace n WHERE n.nspname ~ '^tenant_[0-9a-f]{20}$'
               AND n.nspname NOT IN (SELECT schema_name FROM tenantry.spare_tenant_schemas)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(silos, 1, "the schema-isolated tenant should have a schema");
    (db, client)
}

/// Runs a query whose rows are violations (one text column each).
async fn violations(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("rule query failed: {e:?}\n{sql}"))
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect()
}

/// Fails listing every violation of `rule`.
fn assert_no_violations(rule: &str, mut found: Vec<String>) {
    found.sort();
    found.dedup();
    assert!(
        found.is_empty(),
        "{rule}: {} violation(s):\n  - {}",
        found.len(),
        found.join("\n  - ")
    );
}

#[tokio::test]
async fn every_table_with_a_tenant_id_has_row_level_security_enabled_forced_and_a_policy() {
    let (_db, client) = catalog().await;
    let checked: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
                 WHERE c.relkind IN ('r', 'p') AND {IN_SCOPE}"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(checked >= 10, "only {checked} tables with tenant_id found");

    // A partition may rely on the policies of a partitioned ancestor (they apply
    // to rows reached through it), but must still force RLS itself so that it is
    // closed when addressed directly.
    let found = violations(
        &client,
        &format!(
            "WITH t AS (
                 SELECT c.oid::regclass::text AS name,
                        array_remove(ARRAY[
                            CASE WHEN NOT c.relrowsecurity THEN 'RLS not enabled' END,
                            CASE WHEN NOT c.relforcerowsecurity THEN 'RLS not forced' END,
                            CASE WHEN NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
                                  AND NOT (c.relispartition AND EXISTS (
                                      SELECT 1 FROM pg_partition_ancestors(c.oid) anc(relid)
                                      JOIN pg_policy p ON p.polrelid = anc.relid
                                      WHERE anc.relid <> c.oid))
                                 THEN 'no policy (neither its own nor a partitioned ancestor''s)' END
                        ], NULL) AS problems
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
                 WHERE c.relkind IN ('r', 'p') AND {IN_SCOPE}
             )
             SELECT name || ': ' || array_to_string(problems, ', ') FROM t WHERE cardinality(problems) > 0"
        ),
    )
    .await;
    assert_no_violations(
        "tables with tenant_id without forced RLS and a policy",
        found,
    );
}

#[tokio::test]
async fn partitions_reached_through_their_parent_grant_nothing_to_tenantry_roles_or_public() {
    let (_db, client) = catalog().await;
    let partitions: Vec<String> = violations(
        &client,
        "SELECT c.oid::regclass::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relispartition AND n.nspname = 'tenantry'",
    )
    .await;
    assert!(
        partitions
            .iter()
            .any(|p| p == "tenantry.request_log_default"),
        "tenantry.request_log_default not found among the partitions {partitions:?}"
    );
    assert!(
        partitions
            .iter()
            .any(|p| p.starts_with("tenantry.request_log_2")),
        "no daily request_log partition among {partitions:?}"
    );

    let found = violations(
        &client,
        &format!(
            "WITH grantees AS (
                 SELECT oid, rolname FROM pg_roles WHERE rolname IN ({NON_OWNER_ROLES})
                 UNION ALL SELECT 0, 'PUBLIC'
             )
             SELECT c.oid::regclass::text || ': ' || a.privilege_type || ' granted to ' || g.rolname
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             CROSS JOIN LATERAL aclexplode(c.relacl) a
             JOIN grantees g ON g.oid = a.grantee
             WHERE c.relispartition AND n.nspname = 'tenantry'
             UNION ALL
             SELECT c.oid::regclass::text || '.' || quote_ident(att.attname) || ': column '
                    || a.privilege_type || ' granted to ' || g.rolname
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute att ON att.attrelid = c.oid AND att.attacl IS NOT NULL
             CROSS JOIN LATERAL aclexplode(att.attacl) a
             JOIN grantees g ON g.oid = a.grantee
             WHERE c.relispartition AND n.nspname = 'tenantry'"
        ),
    )
    .await;
    assert_no_violations("partitions of tenantry tables with direct grants", found);
}

#[tokio::test]
async fn the_tenant_hierarchy_has_row_level_security_enabled_forced_and_a_policy() {
    let (_db, client) = catalog().await;
    let found = violations(
        &client,
        "SELECT 'tenantry.tenant_hierarchy: ' || concat_ws(', ',
                    CASE WHEN NOT c.relrowsecurity THEN 'RLS not enabled' END,
                    CASE WHEN NOT c.relforcerowsecurity THEN 'RLS not forced' END,
                    CASE WHEN NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) THEN 'no policy' END)
         FROM pg_class c
         WHERE c.oid = 'tenantry.tenant_hierarchy'::regclass
           AND NOT (c.relrowsecurity AND c.relforcerowsecurity
                    AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))",
    )
    .await;
    assert_no_violations("tenant_hierarchy without forced RLS", found);
}

#[tokio::test]
async fn every_security_definer_function_pins_its_search_path_and_is_not_executable_by_public() {
    let (_db, client) = catalog().await;
    let definers: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_proc p WHERE p.prosecdef AND p.pronamespace = 'tenantry'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        definers >= 10,
        "only {definers} SECURITY DEFINER functions found"
    );

    // Every SECURITY DEFINER function of the database, not only tenantry's.
    // A NULL proacl means the default privileges, which include EXECUTE for PUBLIC.
    let found = violations(
        &client,
        "WITH f AS (
             SELECT p.oid::regprocedure::text AS name,
                    array_remove(ARRAY[
                        CASE WHEN NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) s WHERE s LIKE 'search_path=%')
                             THEN 'search_path not pinned (no SET search_path)' END,
                        CASE WHEN EXISTS (SELECT 1 FROM unnest(p.proconfig) s
                                          WHERE s LIKE 'search_path=%' AND (s ~* '\\mpublic\\M' OR s LIKE '%$user%'))
                             THEN 'search_path includes a schema others can write (public or $user)' END,
                        CASE WHEN EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                                          WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
                             THEN 'executable by PUBLIC' END
                    ], NULL) AS problems
             FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
         )
         SELECT name || ': ' || array_to_string(problems, ', ') FROM f WHERE cardinality(problems) > 0",
    )
    .await;
    assert_no_violations("SECURITY DEFINER functions", found);
}

#[tokio::test]
async fn no_function_in_the_tenantry_schema_is_executable_by_public() {
    let (_db, client) = catalog().await;
    let found = violations(
        &client,
        "SELECT p.oid::regprocedure::text || ': executable by PUBLIC'
         FROM pg_proc p
         WHERE p.pronamespace = 'tenantry'::regnamespace
           AND EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                       WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')",
    )
    .await;
    assert_no_violations("functions executable by PUBLIC", found);
}

#[tokio::test]
async fn every_table_view_function_and_policy_has_a_comment() {
    let (_db, client) = catalog().await;
    let found = violations(
        &client,
        &format!(
            "SELECT CASE c.relkind WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view ' ELSE 'table ' END
                    || c.oid::regclass::text || ': no comment'
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {IN_SCOPE}
               AND coalesce(btrim(obj_description(c.oid, 'pg_class')), '') = ''
             UNION ALL
             SELECT 'function ' || p.oid::regprocedure::text || ': no comment'
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE {IN_SCOPE} AND coalesce(btrim(obj_description(p.oid, 'pg_proc')), '') = ''
             UNION ALL
             SELECT 'policy ' || quote_ident(pol.polname) || ' on ' || c.oid::regclass::text || ': no comment'
             FROM pg_policy pol
             JOIN pg_class c ON c.oid = pol.polrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {IN_SCOPE} AND coalesce(btrim(obj_description(pol.oid, 'pg_policy')), '') = ''
             UNION ALL
             SELECT 'schema ' || quote_ident(n.nspname) || ': no comment'
             FROM pg_namespace n
             WHERE {IN_SCOPE} AND coalesce(btrim(obj_description(n.oid, 'pg_namespace')), '') = ''"
        ),
    )
    .await;
    assert_no_violations("objects without COMMENT ON", found);
}

#[tokio::test]
async fn every_object_of_the_tenantry_schemas_is_owned_by_tenantry_owner() {
    let (_db, client) = catalog().await;
    let found = violations(
        &client,
        &format!(
            "SELECT 'schema ' || quote_ident(n.nspname) || ': owned by ' || pg_get_userbyid(n.nspowner)
             FROM pg_namespace n
             WHERE {IN_SCOPE} AND pg_get_userbyid(n.nspowner) <> 'tenantry_owner'
             UNION ALL
             SELECT CASE c.relkind WHEN 'r' THEN 'table ' WHEN 'p' THEN 'partitioned table '
                                   WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view '
                                   WHEN 'S' THEN 'sequence ' WHEN 'i' THEN 'index '
                                   WHEN 'I' THEN 'partitioned index ' ELSE 'relation ' END
                    || c.oid::regclass::text || ': owned by ' || pg_get_userbyid(c.relowner)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {IN_SCOPE} AND pg_get_userbyid(c.relowner) <> 'tenantry_owner'
             UNION ALL
             SELECT 'function ' || p.oid::regprocedure::text || ': owned by ' || pg_get_userbyid(p.proowner)
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE {IN_SCOPE} AND pg_get_userbyid(p.proowner) <> 'tenantry_owner'
             UNION ALL
             SELECT 'type ' || t.oid::regtype::text || ': owned by ' || pg_get_userbyid(t.typowner)
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE {IN_SCOPE} AND pg_get_userbyid(t.typowner) <> 'tenantry_owner'"
        ),
    )
    .await;
    assert_no_violations("objects not owned by tenantry_owner", found);
}

#[tokio::test]
async fn every_view_runs_with_the_rights_of_its_caller() {
    let (_db, client) = catalog().await;
    let found = violations(
        &client,
        &format!(
            "SELECT 'view ' || c.oid::regclass::text || ': not security_invoker (runs as its owner, bypassing the caller''s RLS)'
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'v' AND {IN_SCOPE}
               AND NOT EXISTS (SELECT 1 FROM unnest(c.reloptions) o
                               WHERE lower(o) ~ '^security_invoker=(true|on|yes|1)$')"
        ),
    )
    .await;
    assert_no_violations("views running as their owner", found);
}

#[tokio::test]
async fn tenant_facing_roles_cannot_read_tenant_metrics_or_any_tenant_data_without_row_level_security(
) {
    let (_db, client) = catalog().await;
    let found = violations(
        &client,
        &format!(
            "WITH unprotected AS (
                 -- Materialized views cannot have RLS at all; tables must force it.
                 SELECT c.oid FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE {IN_SCOPE}
                   AND (c.oid = 'tenantry.tenant_metrics'::regclass
                        OR (c.relkind IN ('r', 'p', 'm', 'f')
                            AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
                            AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                                        AND a.attname = 'tenant_id' AND NOT a.attisdropped)))
             )
             SELECT r.rolname || ' can SELECT ' || u.oid::regclass::text
                    || CASE WHEN has_table_privilege(r.oid, u.oid, 'SELECT') THEN '' ELSE ' (some columns)' END
             FROM unprotected u CROSS JOIN pg_roles r
             WHERE r.rolname IN ({TENANT_ROLES})
               AND (has_table_privilege(r.oid, u.oid, 'SELECT') OR has_any_column_privilege(r.oid, u.oid, 'SELECT'))"
        ),
    )
    .await;
    assert_no_violations("tenant data readable without RLS", found);
}

/// Reference tables are replicated whole (Citus), so their unique keys need
/// no tenant_id (tenants.schema_name is unique across all tenants).
#[tokio::test]
async fn every_primary_key_and_unique_index_of_a_tenant_table_leads_with_tenant_id() {
    let (_db, client) = catalog().await;
    let found = violations(
        &client,
        &format!(
            "SELECT c.oid::regclass::text || ': ' || CASE WHEN i.indisprimary THEN 'primary key ' ELSE 'unique index ' END
                    || i.indexrelid::regclass::text
                    || CASE WHEN a.attnum = ANY (i.indkey::int2[]) THEN ' includes tenant_id but does not lead with it'
                            ELSE ' does not include tenant_id' END
                    || ' (' || pg_get_indexdef(i.indexrelid) || ')'
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
             WHERE i.indisunique AND c.relkind IN ('r', 'p') AND {IN_SCOPE}
               AND c.oid::regclass::text NOT IN ({REFERENCE_TABLES})
               AND i.indkey[0] <> a.attnum"
        ),
    )
    .await;
    assert_no_violations("unique keys that do not lead with tenant_id", found);
}

/// Issue 10, finding 8. The planner makes a policy an index condition of every
/// index whose leading column it constrains; on any other index it filters
/// the policy after the scan, and EXPLAIN ANALYZE counts the foreign rows it
/// removed. So, for every tenant role and every table (or partition) it can
/// read: (1) it reads under at most one permissive policy (two are OR'd, and
/// an OR is no index condition), and (2) every index of the table, and of each
/// of its partitions, leads with a column that policy constrains — unless no
/// operator of any of its columns is leakproof, so that only a policy (never a
/// condition of the caller) could use it (GIN on `shared_with`), or the role
/// may read none of its columns, so that no condition of its can name them
/// (`tenants.schema_name`). No allowlist.
#[tokio::test]
async fn every_index_a_tenant_role_can_scan_leads_with_a_column_of_that_roles_one_policy() {
    let (_db, client) = catalog().await;
    let found = violations(
        &client,
        &format!(
            "WITH readable AS (
                 SELECT c.oid AS tab, r.oid AS rol, r.rolname
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 CROSS JOIN pg_roles r
                 WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity AND {IN_SCOPE}
                   AND r.rolname IN ('tenantry_app', 'tenantry_app_own', 'tenantry_app_shared')
                   AND (has_table_privilege(r.oid, c.oid, 'SELECT')
                        OR has_any_column_privilege(r.oid, c.oid, 'SELECT'))
             ),
             policies AS (
                 SELECT rd.tab, rd.rol, rd.rolname, array_agg(p.oid) AS pols, count(*) AS n
                 FROM readable rd
                 JOIN pg_policy p ON p.polrelid = rd.tab AND p.polpermissive AND p.polcmd IN ('r', '*')
                  AND (p.polroles = '{{0}}'
                       OR EXISTS (SELECT 1 FROM unnest(p.polroles) pr WHERE pg_has_role(rd.rol, pr, 'USAGE')))
                 GROUP BY 1, 2, 3
             ),
             -- Columns (by name: partitions may number them differently) the one policy constrains.
             constrained AS (
                 SELECT po.tab, po.rol, array_agg(DISTINCT a.attname) AS cols
                 FROM policies po
                 JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = po.pols[1]
                                 AND d.refclassid = 'pg_class'::regclass AND d.refobjid = po.tab
                 JOIN pg_attribute a ON a.attrelid = po.tab AND a.attnum = d.refobjsubid
                 WHERE po.n = 1
                 GROUP BY 1, 2
             ),
             indexes AS (
                 SELECT po.tab, po.rol, po.rolname, i.indexrelid, i.indrelid, i.indkey, i.indclass, co.cols
                 FROM policies po
                 JOIN constrained co ON co.tab = po.tab AND co.rol = po.rol
                 CROSS JOIN LATERAL (SELECT relid FROM pg_partition_tree(po.tab)
                                     UNION SELECT po.tab) part(relid)
                 JOIN pg_index i ON i.indrelid = part.relid
             )
             SELECT rolname || ' reads ' || tab::regclass::text || ' under ' || n
                    || ' permissive policies, OR''d: no index can take them as its condition'
             FROM policies WHERE n > 1
             UNION ALL
             SELECT x.rolname || ' can scan ' || x.indexrelid::regclass::text || ' of '
                    || x.indrelid::regclass::text || ', which does not lead with a column its policy on '
                    || x.tab::regclass::text || ' constrains (' || array_to_string(x.cols, ', ') || '): '
                    || pg_get_indexdef(x.indexrelid)
             FROM indexes x
             LEFT JOIN pg_attribute lead ON lead.attrelid = x.indrelid AND lead.attnum = x.indkey[0]
             WHERE NOT (lead.attname IS NOT NULL AND lead.attname = ANY (x.cols))
               -- A query of the role can name one of the index's columns (an
               -- index over columns it may not read never serves its conditions).
               AND EXISTS (
                   SELECT 1 FROM unnest(x.indkey::int2[]) k(attnum)
                   JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                   WHERE has_column_privilege(x.rol, x.indrelid, a.attnum, 'SELECT'))
               AND EXISTS (
                   SELECT 1
                   FROM unnest(x.indclass::oid[]) oc(opclass)
                   JOIN pg_opclass opc ON opc.oid = oc.opclass
                   JOIN pg_amop ao ON ao.amopfamily = opc.opcfamily
                   JOIN pg_operator o ON o.oid = ao.amopopr
                   JOIN pg_proc f ON f.oid = o.oprcode
                   WHERE f.proleakproof)"
        ),
    )
    .await;
    assert_no_violations(
        "indexes a tenant role scans with its policy as a filter, not an index condition",
        found,
    );
}

#[tokio::test]
async fn every_foreign_key_between_tenant_tables_pairs_tenant_id_with_tenant_id() {
    let (_db, client) = catalog().await;
    let checked: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_constraint con
                 JOIN pg_class c ON c.oid = con.conrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE con.contype = 'f' AND {IN_SCOPE}
                   AND con.confrelid::regclass::text NOT IN ({REFERENCE_TABLES})"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        checked >= 4,
        "only {checked} foreign keys between distributed tables"
    );

    // Between distributed tables, tenant_id must sit in the same position on
    // both sides (Citus co-location). A reference table may be referenced on any
    // column, but must itself reference nothing distributed.
    let found = violations(
        &client,
        &format!(
            "WITH fk AS (
                 SELECT con.oid, con.conname, con.conrelid, con.confrelid, con.conkey, con.confkey,
                        (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = con.conrelid
                         AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS from_tenant,
                        (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = con.confrelid
                         AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS to_tenant,
                        con.conrelid::regclass::text IN ({REFERENCE_TABLES}) AS from_reference,
                        con.confrelid::regclass::text IN ({REFERENCE_TABLES}) AS to_reference
                 FROM pg_constraint con
                 JOIN pg_class c ON c.oid = con.conrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE con.contype = 'f' AND {IN_SCOPE}
             )
             SELECT conname || ' (' || conrelid::regclass::text || ' -> ' || confrelid::regclass::text || '): '
                    || pg_get_constraintdef(fk.oid)
                    || ' does not pair tenant_id with tenant_id'
             FROM fk
             WHERE from_tenant IS NOT NULL AND to_tenant IS NOT NULL AND NOT to_reference
               AND NOT EXISTS (SELECT 1 FROM unnest(conkey, confkey) u(k, fk)
                               WHERE u.k = from_tenant AND u.fk = to_tenant)
             UNION ALL
             SELECT conname || ' (' || conrelid::regclass::text || ' -> ' || confrelid::regclass::text
                    || '): a reference table references a distributed table'
             FROM fk
             WHERE from_reference AND NOT to_reference"
        ),
    )
    .await;
    assert_no_violations("foreign keys that break co-location", found);
}

#[tokio::test]
async fn no_policy_expression_contains_a_subquery() {
    let (_db, client) = catalog().await;
    let found = violations(
        &client,
        &format!(
            "WITH p AS (
                 SELECT pol.polname, pol.polrelid, 'USING' AS clause, pol.polqual AS expr
                 FROM pg_policy pol WHERE pol.polqual IS NOT NULL
                 UNION ALL
                 SELECT pol.polname, pol.polrelid, 'WITH CHECK', pol.polwithcheck
                 FROM pg_policy pol WHERE pol.polwithcheck IS NOT NULL
             )
             SELECT 'policy ' || quote_ident(p.polname) || ' on ' || p.polrelid::regclass::text || ' ' || p.clause
                    || ' has a subquery: ' || pg_get_expr(p.expr, p.polrelid)
             FROM p
             JOIN pg_class c ON c.oid = p.polrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {IN_SCOPE}
               AND (pg_get_expr(p.expr, p.polrelid) ~* '\\mselect\\M' OR p.expr::text LIKE '%{{SUBLINK%')"
        ),
    )
    .await;
    assert_no_violations("policies with subqueries (refused by Citus)", found);
}

#[tokio::test]
async fn policies_call_only_stable_or_immutable_functions() {
    let (_db, client) = catalog().await;
    // Function calls (FuncExpr :funcid) and operators (:opfuncid) in the stored
    // expression trees of every policy.
    let calls = format!(
        "WITH p AS (
             SELECT pol.polname, pol.polrelid,
                    coalesce(pol.polqual::text, '') || ' ' || coalesce(pol.polwithcheck::text, '') AS tree
             FROM pg_policy pol
             JOIN pg_class c ON c.oid = pol.polrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {IN_SCOPE}
         )
         SELECT DISTINCT p.polname, p.polrelid, m[1]::oid AS funcid
         FROM p CROSS JOIN LATERAL regexp_matches(p.tree, ':(?:op)?funcid (\\d+)', 'g') m
         WHERE m[1] <> '0'"
    );
    let called = violations(
        &client,
        &format!("WITH calls AS ({calls}) SELECT DISTINCT funcid::regprocedure::text FROM calls"),
    )
    .await;
    assert!(
        called.iter().any(|f| f == "tenantry.visible_tenant_ids()"),
        "parsing the policies' expression trees found no call of visible_tenant_ids(): {called:?}"
    );

    let found = violations(
        &client,
        &format!(
            "WITH calls AS ({calls})
             SELECT 'policy ' || quote_ident(calls.polname) || ' on ' || calls.polrelid::regclass::text
                    || ' calls ' || coalesce(pr.oid::regprocedure::text, 'unknown function ' || calls.funcid)
                    || ', which is ' || CASE pr.provolatile WHEN 'v' THEN 'VOLATILE' ELSE 'missing' END
             FROM calls LEFT JOIN pg_proc pr ON pr.oid = calls.funcid
             WHERE pr.oid IS NULL OR pr.provolatile NOT IN ('s', 'i')"
        ),
    )
    .await;
    assert_no_violations("policies calling volatile functions", found);
}

#[tokio::test]
async fn tenantry_roles_have_exactly_the_attributes_and_ownership_their_jobs_need() {
    let (_db, client) = catalog().await;
    let missing = violations(
        &client,
        &format!(
            "SELECT r FROM unnest(ARRAY['tenantry_owner', {NON_OWNER_ROLES}]) r
             WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)"
        ),
    )
    .await;
    assert_no_violations("roles missing", missing);

    // Ownership across every database of the cluster (pg_shdepend is shared).
    let found = violations(
        &client,
        &format!(
            "WITH expected(rolname, login, inherit_required, bypassrls) AS (VALUES
                 ('tenantry_owner', false, NULL::boolean, true),
                 ('tenantry_app', false, NULL, false),
                 ('tenantry_app_own', false, NULL, false),
                 ('tenantry_app_shared', false, NULL, false),
                 ('tenantry_admin', false, NULL, false),
                 ('tenantry_logger', false, NULL, false),
                 ('tenantry_server', true, false, false)
             )
             SELECT r.rolname || ': ' || concat_ws(', ',
                        CASE WHEN r.rolcanlogin <> e.login
                             THEN CASE WHEN e.login THEN 'cannot log in' ELSE 'can log in' END END,
                        CASE WHEN e.inherit_required IS NOT NULL AND r.rolinherit <> e.inherit_required
                             THEN CASE WHEN r.rolinherit THEN 'INHERIT' ELSE 'NOINHERIT' END END,
                        CASE WHEN r.rolbypassrls <> e.bypassrls
                             THEN CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' ELSE 'lacks BYPASSRLS' END END,
                        CASE WHEN r.rolsuper THEN 'superuser' END)
             FROM pg_roles r JOIN expected e USING (rolname)
             WHERE r.rolcanlogin <> e.login
                OR (e.inherit_required IS NOT NULL AND r.rolinherit <> e.inherit_required)
                OR r.rolbypassrls <> e.bypassrls
                OR r.rolsuper
             UNION ALL
             SELECT r.rolname || ' owns ' || coalesce(
                        CASE WHEN d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                             THEN pg_describe_object(d.classid, d.objid, d.objsubid) END,
                        d.classid::regclass::text || ' ' || d.objid || ' in database '
                            || coalesce((SELECT datname FROM pg_database WHERE oid = d.dbid), 'shared'))
             FROM pg_shdepend d
             JOIN pg_roles r ON r.oid = d.refobjid AND d.refclassid = 'pg_authid'::regclass
             WHERE d.deptype = 'o' AND r.rolname IN ({NON_OWNER_ROLES})"
        ),
    )
    .await;
    assert_no_violations("role attributes and ownership", found);
}

/// `(kind, name)` of every function, view, trigger and policy the repeatable
/// definition files create (`kind`: function, view, trigger, policy).
fn defined_in_repeatable_files() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for d in tenantry_db::migrate::definitions() {
        // Statement by statement (dollar-quoted bodies hold no line starting with CREATE).
        for statement in d.sql.split("\nCREATE ").skip(1) {
            let words: Vec<&str> = statement.split_whitespace().collect();
            let name_after = |prefix: &[&str]| -> Option<String> {
                (words.len() > prefix.len() && words[..prefix.len()] == *prefix).then(|| {
                    words[prefix.len()]
                        .split('(')
                        .next()
                        .unwrap_or("")
                        .to_owned()
                })
            };
            // The relation a trigger or policy is on: the word after the first ON.
            let on = || {
                words
                    .iter()
                    .skip_while(|w| **w != "ON")
                    .nth(1)
                    .copied()
                    .unwrap_or("?")
            };
            if let Some(name) = name_after(&["OR", "REPLACE", "FUNCTION"])
                .or_else(|| name_after(&["OR", "REPLACE", "PROCEDURE"]))
            {
                // Procedures are pg_proc rows too: "function" here.
                found.push(("function".into(), name));
            } else if let Some(name) = name_after(&["OR", "REPLACE", "VIEW"]) {
                found.push(("view".into(), name));
            } else if let Some(name) = name_after(&["OR", "REPLACE", "TRIGGER"]) {
                found.push(("trigger".into(), format!("{}.{name}", on())));
            } else if let Some(name) = name_after(&["POLICY"]) {
                found.push(("policy".into(), format!("{}.{name}", on())));
            }
        }
    }
    found
}

#[tokio::test]
async fn every_function_view_trigger_and_policy_has_its_one_definition_in_a_repeatable_file() {
    let (_db, client) = catalog().await;
    let in_catalog = violations(
        &client,
        "SELECT 'function ' || 'tenantry.' || p.proname FROM pg_proc p
          WHERE p.pronamespace = 'tenantry'::regnamespace
         UNION ALL
         SELECT 'view ' || 'tenantry.' || c.relname FROM pg_class c
          WHERE c.relnamespace = 'tenantry'::regnamespace AND c.relkind = 'v'
         UNION ALL
         SELECT 'trigger ' || 'tenantry.' || c.relname || '.' || t.tgname
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
          WHERE c.relnamespace = 'tenantry'::regnamespace AND NOT t.tgisinternal AND t.tgparentid = 0
         UNION ALL
         SELECT 'policy ' || 'tenantry.' || c.relname || '.' || p.polname
           FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
          WHERE c.relnamespace = 'tenantry'::regnamespace
            -- Partitions take their parent's policies from one function each
            -- (secure_request_log_partition in 06_usage.sql, secure_resources_partition
            -- in 03_resources.sql): request_log's daily ones come and go.
            AND NOT EXISTS (SELECT 1 FROM pg_inherits i
                            WHERE i.inhrelid = c.oid
                              AND i.inhparent IN ('tenantry.request_log'::regclass, 'tenantry.resources'::regclass))",
    )
    .await;
    let defined: Vec<String> = defined_in_repeatable_files()
        .into_iter()
        .map(|(kind, name)| format!("{kind} {name}"))
        .collect();
    let mut problems: Vec<String> = in_catalog
        .iter()
        .filter(|object| !defined.contains(object))
        .map(|object| format!("{object}: not defined in migrations/repeatable/"))
        .collect();
    for object in &defined {
        let times = defined.iter().filter(|o| *o == object).count();
        if times > 1 {
            problems.push(format!("{object}: defined {times} times"));
        }
        if !in_catalog.contains(object) {
            problems.push(format!("{object}: defined but not in the catalog"));
        }
    }
    problems.dedup();
    assert!(
        defined.len() > 80,
        "parsed only {} definitions",
        defined.len()
    );
    assert_no_violations(
        "one definition per object, in migrations/repeatable/",
        problems,
    );
}
