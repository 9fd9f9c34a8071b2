//! Quotas (`max_resources`, `max_storage_bytes` in a tenant's settings): enforced by the database for every writer of `resources`, counted exactly, refused with TN429 and the setting's name, nothing written by a refused statement.

use serde_json::json;
use tenantry_db::testing::TestDatabase;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::{
    common::{count, describe, exec, schema_of},
    helpers::{admin, app, create_resource, denied, expect_sqlstate, set_context},
};

/// A tenant with `settings`, created as the admin role.
async fn tenant_with(
    admin: &Client,
    name: &str,
    isolation: &str,
    settings: serde_json::Value,
) -> Uuid {
    admin
        .query_one(
            "SELECT tenantry.create_tenant($1::text, NULL, $2::text, $3::jsonb)",
            &[&name, &isolation, &settings],
        )
        .await
        .unwrap_or_else(|e| panic!("create_tenant({name}): {}", describe(&e)))
        .get(0)
}

#[tokio::test]
async fn a_tenant_at_its_resource_quota_cannot_create_another_and_the_refused_row_is_not_written() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let t = tenant_with(&admin, "capped", "shared", json!({"max_resources": 2})).await;
    create_resource(&app, t, "one").await;
    create_resource(&app, t, "two").await;

    let message = expect_sqlstate(
        app.query_one("SELECT create_resource($1)", &[&json!({"name": "three"})])
            .await,
        "TN429",
        "third resource",
    );
    assert!(message.contains("at most 2 resources"), "{message}");
    assert_eq!(count(&app, "SELECT count(*) FROM resources").await, 2);
    // A plain INSERT is refused the same way: the rule is below every API.
    let message = denied(
        &app,
        &format!("INSERT INTO resources (tenant_id, name) VALUES ('{t}', 'x')"),
        "TN429",
    )
    .await;
    assert!(message.contains("at most 2"), "{message}");

    // Deleting makes room again; the counter follows deletes.
    exec(&app, "DELETE FROM resources WHERE name = 'one'").await;
    create_resource(&app, t, "three").await;
    assert_eq!(own_usage(&app).await.0, 2);
}

/// (resources, bytes) of the current tenant as the database counts them for its quota.
async fn own_usage(app: &Client) -> (i64, i64) {
    let row = app
        .query_one(
            "SELECT resource_count, storage_bytes FROM tenantry.tenant_quota_usage
             WHERE tenant_id = tenantry.current_tenant_id()",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("quota usage: {}", describe(&e)));
    (row.get(0), row.get(1))
}

/// The same, recomputed from the rows.
async fn counted(app: &Client) -> (i64, i64) {
    let row = app
        .query_one(
            "SELECT count(*), coalesce(sum(size_bytes), 0)::bigint FROM tenantry.resources
             WHERE tenant_id = tenantry.current_tenant_id()",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_storage_quota_refuses_an_update_that_grows_past_it_but_allows_one_that_shrinks() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let t = tenant_with(&admin, "small", "shared", json!({"max_storage_bytes": 200})).await;
    let id = create_resource(&app, t, "doc").await;
    assert_eq!(own_usage(&app).await, counted(&app).await);

    let big = json!({"blob": "x".repeat(300)});
    let message = expect_sqlstate(
        app.execute("UPDATE resources SET data = $1 WHERE id = $2", &[&big, &id])
            .await,
        "TN429",
        "growing update",
    );
    assert!(message.contains("at most 200 bytes"), "{message}");
    app.execute("UPDATE resources SET data = '{}' WHERE id = $1", &[&id])
        .await
        .unwrap_or_else(|e| panic!("shrinking update: {}", describe(&e)));
    assert_eq!(own_usage(&app).await, counted(&app).await);
}

#[tokio::test]
async fn a_quota_set_later_counts_the_rows_already_there_and_removing_it_lifts_the_limit() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let t = tenant_with(&admin, "grows", "shared", json!({})).await;
    for name in ["a", "b", "c"] {
        create_resource(&app, t, name).await;
    }
    exec(
        &admin,
        &format!("UPDATE tenantry.tenants SET settings = '{{\"max_resources\": 3}}' WHERE tenant_id = '{t}'"),
    )
    .await;
    set_context(&app, t).await;
    assert_eq!(own_usage(&app).await, counted(&app).await);
    assert_eq!(own_usage(&app).await.0, 3);
    denied(&app, "SELECT create_resource('{\"name\": \"d\"}')", "TN429").await;

    exec(
        &admin,
        &format!("UPDATE tenantry.tenants SET settings = '{{}}' WHERE tenant_id = '{t}'"),
    )
    .await;
    create_resource(&app, t, "d").await;
    assert_eq!(
        count(&app, "SELECT count(*) FROM tenantry.tenant_quota_usage").await,
        0,
        "no quota, no counter"
    );
}

#[tokio::test]
async fn direct_writes_into_a_schema_tenants_partition_are_counted_and_refused_at_the_quota() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let t = tenant_with(&admin, "silo", "schema", json!({"max_resources": 1})).await;
    set_context(&app, t).await;
    let partition = format!("{}.resources", schema_of(&admin, t).await);
    exec(
        &app,
        &format!("INSERT INTO {partition} (tenant_id, name) VALUES ('{t}', 'first')"),
    )
    .await;
    denied(
        &app,
        &format!("INSERT INTO {partition} (tenant_id, name) VALUES ('{t}', 'second')"),
        "TN429",
    )
    .await;
    // Through the parent table, the same counter.
    denied(
        &app,
        "SELECT create_resource('{\"name\": \"third\"}')",
        "TN429",
    )
    .await;
    assert_eq!(own_usage(&app).await, (1, counted(&app).await.1));
}

#[tokio::test]
async fn moving_a_tenant_between_isolation_models_keeps_its_quota_count_exact() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let t = tenant_with(&admin, "mover", "shared", json!({"max_resources": 3})).await;
    for name in ["a", "b", "c"] {
        create_resource(&app, t, name).await;
    }
    exec(
        &admin,
        &format!("SELECT tenantry.set_tenant_isolation('{t}', 'schema')"),
    )
    .await;
    set_context(&app, t).await;
    assert_eq!(own_usage(&app).await, counted(&app).await);
    assert_eq!(own_usage(&app).await.0, 3);
    exec(
        &admin,
        &format!("SELECT tenantry.set_tenant_isolation('{t}', 'shared')"),
    )
    .await;
    assert_eq!(own_usage(&app).await, counted(&app).await);
    denied(&app, "SELECT create_resource('{\"name\": \"d\"}')", "TN429").await;
}

#[tokio::test]
async fn a_tenant_cannot_write_its_quota_counter_and_reads_no_other_tenants() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let a = tenant_with(&admin, "a", "shared", json!({"max_resources": 5})).await;
    let b = tenant_with(&admin, "b", "shared", json!({"max_resources": 5})).await;
    create_resource(&app, b, "b-doc").await;
    set_context(&app, a).await;
    assert_eq!(
        count(&app, "SELECT count(*) FROM tenantry.tenant_quota_usage").await,
        1
    );
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM tenantry.tenant_quota_usage WHERE tenant_id = '{b}'")
        )
        .await,
        0
    );
    for sql in [
        "UPDATE tenantry.tenant_quota_usage SET resource_count = 0".to_owned(),
        format!("INSERT INTO tenantry.tenant_quota_usage VALUES ('{a}', 0, 0)"),
        "DELETE FROM tenantry.tenant_quota_usage".to_owned(),
    ] {
        denied(&app, &sql, "42501").await;
    }
}

/// Found by review: the quota exemption once read the tenant context, which a
/// statement can clear after its rows pass RLS and before its row triggers run.
#[tokio::test]
async fn clearing_the_context_in_the_middle_of_a_statement_does_not_escape_the_quota() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let t = tenant_with(&admin, "sly", "shared", json!({"max_resources": 2})).await;
    set_context(&app, t).await;
    for clear in [
        "set_config('app.current_tenant_id', '', true)",
        "set_config('app.current_tenant_id', '', false)",
    ] {
        let message = denied(
            &app,
            &format!(
                "WITH ins AS (INSERT INTO tenantry.resources (tenant_id, name)
                              SELECT '{t}', 'r' || g FROM generate_series(1, 5) g RETURNING id)
                 SELECT {clear} FROM (SELECT count(*) FROM ins) c"
            ),
            "TN429",
        )
        .await;
        assert!(message.contains("at most 2 resources"), "{message}");
        set_context(&app, t).await;
        assert_eq!(counted(&app).await.0, 0, "nothing of the statement stayed");
    }
}

/// The owner's quota applies, whoever writes: a parent editing its child's
/// resource is held to the child's quota, not its own.
#[tokio::test]
async fn a_parent_editing_a_childs_resource_is_held_to_the_childs_quota() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let parent = tenant_with(&admin, "parent", "shared", json!({})).await;
    let child: Uuid = admin
        .query_one(
            "SELECT tenantry.create_tenant('child', $1, 'shared', '{\"max_storage_bytes\": 300}')",
            &[&parent],
        )
        .await
        .unwrap()
        .get(0);
    let doc = create_resource(&app, child, "doc").await;
    set_context(&app, parent).await;
    let big = json!({ "blob": "x".repeat(50_000) });
    let message = expect_sqlstate(
        app.execute(
            "UPDATE resources SET data = $1 WHERE id = $2",
            &[&big, &doc],
        )
        .await,
        "TN429",
        "parent growing the child's resource",
    );
    assert!(message.contains("at most 300 bytes"), "{message}");
    // The child can still edit its own data.
    set_context(&app, child).await;
    app.execute(
        "UPDATE resources SET data = '{\"v\": 2}' WHERE id = $1",
        &[&doc],
    )
    .await
    .unwrap_or_else(|e| panic!("the child's own edit: {}", describe(&e)));
    assert_eq!(own_usage(&app).await, counted(&app).await);
}
