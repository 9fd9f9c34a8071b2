//! Schema-per-tenant: a tenant schema is unreachable from another tenant, and
//! hostile names never reach schema or role identifiers.

use uuid::Uuid;

use crate::common::{count, create_silo, exec, schema_of, strings};
use crate::helpers::{
    app, begin_as, commit, create_resource, create_role, fails, names_seen_by, rollback, world,
};

#[tokio::test]
async fn a_tenant_schema_is_unreachable_by_quoted_name_or_search_path_from_another_tenant() {
    let w = world().await;
    let silo = create_silo(&w.admin, "silo").await;
    let rs = create_resource(&w.app, silo, "silo-secret").await;
    let schema = schema_of(&w.admin, silo).await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for sql in [
        format!("SELECT count(*) FROM \"{schema}\".resources"),
        format!("SELECT count(*) FROM \"{schema}\".\"resources\" WHERE id = '{rs}'"),
        format!("SELECT count(*) FROM {schema}.resources"),
        format!("SELECT count(*) FROM tenantry.resources WHERE tenant_id = '{silo}'"),
    ] {
        assert_eq!(count(&w.app, &sql).await, 0, "{sql}");
    }
    exec(
        &w.app,
        &format!("SET LOCAL search_path = \"{schema}\", tenantry"),
    )
    .await;
    assert_eq!(count(&w.app, "SELECT count(*) FROM resources").await, 0);
    for sql in [
        format!("UPDATE \"{schema}\".resources SET name = 'pwned'"),
        format!("DELETE FROM \"{schema}\".resources"),
    ] {
        assert_eq!(w.app.execute(&sql, &[]).await.unwrap(), 0, "{sql}");
    }
    let (code, _, _) = fails(
        &w.app,
        &format!(
            "INSERT INTO \"{schema}\".resources (tenant_id, name) VALUES ('{silo}', 'planted')"
        ),
    )
    .await;
    assert!(code == "42501" || code == "23514", "{code}");
    rollback(&w.app).await;
    assert_eq!(names_seen_by(&w.app, silo).await, ["silo-secret"]);
}

#[tokio::test]
async fn names_with_quotes_and_semicolons_never_reach_schema_or_role_identifiers() {
    let w = world().await;
    let evil = "x\"; DROP SCHEMA tenantry CASCADE; --' \\";
    let silo: Uuid = w
        .admin
        .query_one(
            "SELECT tenantry.create_tenant($1::text, NULL, 'schema')",
            &[&evil],
        )
        .await
        .unwrap()
        .get(0);
    let schemas = strings(
        &w.app,
        // Tenant schemas holding a table (spares, made ahead for creations, are empty).
        "SELECT nspname::text FROM pg_namespace n WHERE (nspname LIKE 'tenant\\_%' AND EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid)) OR nspname LIKE '%DROP%'",
    )
    .await;
    assert_eq!(schemas, [schema_of(&w.admin, silo).await]);
    // And every other tenant schema is an empty spare made ahead.
    let strays = strings(
        &w.tdb.superuser_client().await,
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'
           AND nspname <> ALL (SELECT schema_name FROM tenantry.tenants WHERE isolation = 'schema')
           AND nspname <> ALL (SELECT schema_name FROM tenantry.spare_tenant_schemas)",
    )
    .await;
    assert!(strays.is_empty(), "{strays:?}");
    let role = create_role(&w.app, silo, evil).await;
    create_resource(&w.app, silo, evil).await;
    assert_eq!(names_seen_by(&w.app, silo).await, [evil.to_owned()]);
    begin_as(&w.app, silo).await;
    let schema: String = w
        .app
        .query_one("SELECT tenantry.current_tenant_schema()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(schema, schema_of(&w.admin, silo).await);
    let name: String = w
        .app
        .query_one(
            "SELECT name FROM tenantry.roles WHERE role_id = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, evil);
    commit(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
}

/// Issue 10, finding 9: what a tenant reads in the catalog about a schema
/// tenant. Every role reads the catalog, so the attacker lists everything it
/// can and looks for the victim's id, name, row count and write counts.
#[tokio::test]
async fn the_catalog_tells_another_tenant_nothing_of_a_schema_tenant_but_its_tables_reltuples() {
    let w = world().await;
    let name = "victim-silo-q7";
    let silo = create_silo(&w.admin, name).await;
    // 5 inserts, 2 updates, 1 delete: 4 rows; from a session that then ends,
    // so its statistics are flushed.
    {
        let victim = app(&w.tdb).await;
        for i in 0..5 {
            create_resource(&victim, silo, &format!("doc-{i}")).await;
        }
        begin_as(&victim, silo).await;
        exec(
            &victim,
            "UPDATE tenantry.resources SET name = name || '!' WHERE name IN ('doc-0', 'doc-1');
             DELETE FROM tenantry.resources WHERE name = 'doc-4'",
        )
        .await;
        commit(&victim).await;
    }
    let su = w.tdb.superuser_client().await;
    let schema = schema_of(&w.admin, silo).await;
    let partition = format!("{schema}.resources");
    // As autovacuum would: planner statistics and counters exist (setup,
    // checked as superuser; statistics arrive once the session has ended).
    exec(&su, &format!("ANALYZE {partition}")).await;
    let mut counters: (i64, i64, i64, i64) = (0, 0, 0, 0);
    for _ in 0..100 {
        let r = su
            .query_one(
                "SELECT n_tup_ins, n_tup_upd, n_tup_del, n_live_tup FROM pg_stat_user_tables
                 WHERE relid = $1::text::regclass",
                &[&partition],
            )
            .await
            .unwrap();
        counters = (r.get(0), r.get(1), r.get(2), r.get(3));
        if counters == (5, 2, 1, 4) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(counters, (5, 2, 1, 4), "the statistics exist");

    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    // Refused: every source of row and write counts and of sizes.
    let refused = [
        "SELECT n_live_tup, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables".to_owned(),
        "SELECT n_live_tup, n_tup_ins FROM pg_stat_all_tables".to_owned(),
        "SELECT heap_blks_read FROM pg_statio_user_tables".to_owned(),
        "SELECT idx_scan FROM pg_stat_user_indexes".to_owned(),
        "SELECT n_tup_ins FROM pg_stat_xact_user_tables".to_owned(),
        "SELECT xact_commit FROM pg_stat_database".to_owned(),
        "SELECT calls FROM pg_stat_user_functions".to_owned(),
        format!("SELECT pg_stat_get_live_tuples('{partition}'::regclass)"),
        format!("SELECT pg_stat_get_tuples_inserted('{partition}'::regclass)"),
        format!("SELECT pg_stat_get_tuples_updated('{partition}'::regclass)"),
        format!("SELECT pg_stat_get_tuples_deleted('{partition}'::regclass)"),
        format!("SELECT pg_stat_get_numscans('{partition}'::regclass)"),
        format!("SELECT pg_relation_size('{partition}')"),
        format!("SELECT pg_total_relation_size('{partition}')"),
        format!("SELECT pg_table_size('{partition}')"),
        format!("SELECT pg_indexes_size('{partition}')"),
    ];
    for sql in &refused {
        let (code, message, _) = fails(&w.app, &format!("ROLLBACK TO SAVEPOINT s; {sql}")).await;
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    exec(&w.app, "ROLLBACK TO SAVEPOINT s").await;

    // Readable: everything the catalog says about names, definitions and
    // comments, outside PostgreSQL's own schemas.
    let user = "NOT IN ('pg_catalog', 'information_schema', 'pg_toast')";
    let readable = [
        ("schema", format!("SELECT nspname || ' ' || coalesce(obj_description(oid, 'pg_namespace'), '') FROM pg_namespace WHERE nspname {user}")),
        ("relation", format!("SELECT c.oid::regclass::text || ' ' || coalesce(obj_description(c.oid, 'pg_class'), '') || ' ' || coalesce(c.reloptions::text, '') FROM pg_class c WHERE c.relnamespace::regnamespace::text {user}")),
        ("column", format!("SELECT c.oid::regclass::text || '.' || a.attname || ' ' || coalesce(col_description(c.oid, a.attnum), '') FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace::regnamespace::text {user}")),
        ("constraint", format!("SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace::regnamespace::text {user}")),
        ("index", format!("SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace::regnamespace::text {user}")),
        ("policy", "SELECT polname || ' ' || coalesce(pg_get_expr(polqual, polrelid), '') || ' ' || coalesce(pg_get_expr(polwithcheck, polrelid), '') FROM pg_policy".to_owned()),
        ("trigger", format!("SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace::regnamespace::text {user}")),
        ("function", format!("SELECT p.oid::regprocedure::text || ' ' || p.prosrc FROM pg_proc p WHERE p.pronamespace::regnamespace::text {user}")),
        ("comment", "SELECT description FROM pg_description UNION ALL SELECT description FROM pg_shdescription".to_owned()),
        ("role", "SELECT rolname FROM pg_roles".to_owned()),
        ("inheritance", "SELECT inhrelid::regclass::text || ' ' || inhparent::regclass::text FROM pg_inherits".to_owned()),
        ("partition tree", "SELECT relid::text || ' ' || coalesce(parentrelid::text, '') FROM pg_partition_tree('tenantry.resources')".to_owned()),
        ("partition bound", "SELECT c.oid::regclass::text || ' ' || pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relispartition".to_owned()),
        ("partition constraint", "SELECT c.oid::regclass::text || ' ' || pg_get_partition_constraintdef(c.oid) FROM pg_class c WHERE c.relispartition AND c.relkind = 'r'".to_owned()),
    ];
    let mut facts: Vec<(&str, String)> = Vec::new();
    for (label, sql) in &readable {
        let sql = format!("SELECT coalesce(f::text, '') FROM ({sql}) AS q (f)");
        for value in strings(&w.app, &sql).await {
            facts.push((label, value));
        }
    }
    // The residue of row counts: the planner's estimate, as VACUUM or ANALYZE
    // last left it, for every table (a schema tenant's partition is one).
    let reltuples: f32 = w
        .app
        .query_one(
            "SELECT c.reltuples FROM pg_class c WHERE c.oid = $1::text::regclass",
            &[&partition],
        )
        .await
        .unwrap()
        .get(0);
    rollback(&w.app).await;

    assert!(facts.len() > 300, "the attacker read {} facts", facts.len());
    let name_seen: Vec<_> = facts.iter().filter(|(_, v)| v.contains(name)).collect();
    assert!(name_seen.is_empty(), "{name_seen:#?}");
    let forms = [silo.to_string(), silo.simple().to_string()];
    let mut id_seen: Vec<&str> = facts
        .iter()
        .filter(|(_, v)| forms.iter().any(|f| v.contains(f.as_str())))
        .map(|(label, _)| *label)
        .collect();
    id_seen.sort();
    // A schema tenant's tables inherit the pooled ones: no partition bound
    // (which was the tenant's id) is left to name it.
    assert!(id_seen.is_empty(), "the id is in: {id_seen:?}");
    assert_eq!(reltuples, 4.0, "reltuples is the one count left");
}

#[tokio::test]
async fn tenant_roles_cannot_name_the_schema_name_column_whose_index_would_be_an_oracle() {
    let w = world().await;
    let silo = create_silo(&w.admin, "silo").await;
    let name = schema_of(&w.tdb.superuser_client().await, silo).await;
    begin_as(&w.app, w.a).await;
    // Its unique index does not lead with tenant_id: a tenant role that could
    // name the column could count other tenants' rows with EXPLAIN ANALYZE.
    for sql in [
        format!("SELECT tenant_id FROM tenantry.tenants WHERE schema_name = '{name}'"),
        format!("EXPLAIN (ANALYZE) SELECT 1 FROM tenantry.tenants WHERE schema_name = '{name}'"),
        "SELECT * FROM tenantry.tenants".to_owned(),
    ] {
        let (code, _, _) = fails(&w.app, &format!("SAVEPOINT p; {sql}")).await;
        assert_eq!(code, "42501", "{sql}");
        exec(&w.app, "ROLLBACK TO SAVEPOINT p").await;
    }
    // Its own schema it learns from its context.
    assert_eq!(
        strings(&w.app, "SELECT tenantry.current_tenant_schema()").await,
        ["tenantry"]
    );
    rollback(&w.app).await;
}
