//! Schema-per-tenant: a tenant schema is unreachable from another tenant, and
//! hostile names never reach schema or role identifiers.

use uuid::Uuid;

use crate::common::{count, create_silo, exec, schema_of, strings};
use crate::helpers::{
    begin_as, commit, create_resource, create_role, fails, names_seen_by, rollback, world,
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
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\\_%' OR nspname LIKE '%DROP%'",
    )
    .await;
    assert_eq!(schemas, [schema_of(&w.admin, silo).await]);
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
