//! Tenant context: the guide's context functions, session versus
//! transaction-local context (flaw 1), no context means no rows, and a raw
//! `SET LOCAL` of the setting never widens what a session sees.

use tenantry_db::testing::TestDatabase;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::common::{count, create_tenant, exec, set_status, strings};
use crate::helpers::{
    admin, app, clear_context, create_resource, denied, expect_sqlstate, log_requests, logger,
    resource_names, set_context, uuids,
};

#[tokio::test]
async fn guide_context_functions_answer_by_their_names_in_a_plain_session() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;

    let row = app
        .query_one(
            "SELECT current_tenant_id(), current_user_id(), current_tenant_schema()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Uuid>>(0), None);
    assert_eq!(row.get::<_, Option<Uuid>>(1), None);
    assert_eq!(row.get::<_, Option<String>>(2), None);

    set_context(&app, a).await;
    let row = app
        .query_one(
            "SELECT current_tenant_id(), current_user_id(), current_tenant_schema()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Uuid>>(0), Some(a));
    assert_eq!(row.get::<_, Option<Uuid>>(1), None);
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("tenantry"));

    exec(&app, "SELECT setup_connection()").await;
    assert_eq!(
        strings(&app, "SELECT current_setting('search_path')").await,
        ["public, tenantry"]
    );

    // The acting member comes with the transaction-local setter.
    let u = Uuid::new_v4();
    exec(&app, "BEGIN").await;
    let schema: String = app
        .query_one("SELECT set_tenant_context_local($1, $2, NULL)", &[&a, &u])
        .await
        .unwrap()
        .get(0);
    assert_eq!(schema, "tenantry");
    let uid: Option<Uuid> = app
        .query_one("SELECT current_user_id()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(uid, Some(u));
    exec(&app, "COMMIT").await;
    let row = app
        .query_one("SELECT current_tenant_id(), current_user_id()", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<Uuid>>(0),
        Some(a),
        "the session context is back"
    );
    assert_eq!(
        row.get::<_, Option<Uuid>>(1),
        None,
        "the member ended with COMMIT"
    );

    // NULL clears; unknown and deleted tenants are refused.
    clear_context(&app).await;
    let none: Option<Uuid> = app
        .query_one("SELECT current_tenant_id()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(none, None);
    let unknown = Uuid::new_v4();
    expect_sqlstate(
        app.execute("SELECT set_tenant_context($1)", &[&unknown])
            .await,
        "TN404",
        "set_tenant_context(unknown)",
    );
    let gone = create_tenant(&admin, "gone", None).await;
    set_status(&admin, gone, "deleted").await;
    expect_sqlstate(
        app.execute("SELECT set_tenant_context($1)", &[&gone]).await,
        "TN403",
        "set_tenant_context(deleted)",
    );
}

// -----------------------------------------------------------------------------
// Flaw 1: session-level context sticks to the connection; SET LOCAL does not.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn session_context_stays_on_the_connection_while_local_context_ends_with_its_transaction() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    create_resource(&app, a, "doc").await;
    clear_context(&app).await;

    // The guide's session scope (documented as unsafe behind a pooler): the
    // next statement on this connection, whoever sends it, is still tenant a.
    set_context(&app, a).await;
    assert_eq!(resource_names(&app).await, ["doc"]);
    clear_context(&app).await;
    assert!(resource_names(&app).await.is_empty());

    // Transaction scope: gone after COMMIT ...
    exec(&app, "BEGIN").await;
    app.execute("SELECT set_tenant_context_local($1)", &[&a])
        .await
        .unwrap();
    assert_eq!(resource_names(&app).await, ["doc"]);
    exec(&app, "COMMIT").await;
    assert_eq!(count(&app, "SELECT count(*) FROM resources").await, 0);
    let row = app
        .query_one(
            "SELECT current_tenant_id(), current_tenant_schema(), cardinality(visible_tenant_ids())",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Uuid>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(row.get::<_, Option<i32>>(2), Some(0));

    // ... and after ROLLBACK, and after a failed transaction.
    exec(
        &app,
        &format!("BEGIN; SELECT set_tenant_context_local('{a}')"),
    )
    .await;
    exec(&app, "ROLLBACK").await;
    assert_eq!(count(&app, "SELECT count(*) FROM resources").await, 0);
    exec(
        &app,
        &format!("BEGIN; SELECT set_tenant_context_local('{a}')"),
    )
    .await;
    denied(&app, "SELECT 1/0", "22012").await;
    exec(&app, "COMMIT").await; // answered with ROLLBACK
    assert_eq!(count(&app, "SELECT count(*) FROM resources").await, 0);
}

const TENANT_TABLES: &[&str] = &[
    "tenants",
    "tenant_hierarchy",
    "resources",
    "shared_resources",
    "api_keys",
    "roles",
    "role_permissions",
    "tenant_members",
    "member_roles",
    "audit_log",
    "request_log",
    "tenant_resource_usage",
    "current_tenant_metrics()",
];

async fn visible_counts(c: &Client) -> Vec<(&'static str, i64)> {
    let mut v = Vec::new();
    for t in TENANT_TABLES {
        v.push((
            *t,
            count(c, &format!("SELECT count(*) FROM tenantry.{t}")).await,
        ));
    }
    v
}

#[tokio::test]
async fn a_connection_without_tenant_context_sees_no_row_of_any_tenant_table() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;
    // Something in every table, for tenant a.
    let r = create_resource(&app, a, "doc").await;
    app.execute("SELECT share_resource($1, $2)", &[&r, &b])
        .await
        .unwrap();
    exec(&app, "SELECT create_api_key('k')").await;
    let role: Uuid = app
        .query_one("SELECT create_tenant_role($1, 'editor')", &[&a])
        .await
        .unwrap()
        .get(0);
    app.execute(
        "SELECT assign_tenant_permission($1, 'resources.read')",
        &[&role],
    )
    .await
    .unwrap();
    let user: Uuid = app
        .query_one(
            "INSERT INTO tenant_members (email) VALUES ('m@example.com') RETURNING user_id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    app.execute(
        "SELECT tenantry.assign_member_role($1, $2)",
        &[&user, &role],
    )
    .await
    .unwrap();
    log_requests(&logger(&tdb).await, a, &[user]).await;
    exec(&admin, "SELECT refresh_tenant_metrics()").await;

    // Allowed: tenant a sees its rows in every table.
    for (t, n) in visible_counts(&app).await {
        assert!(n > 0, "tenant a should see its rows in {t}");
    }

    // Denied: a connection that never set a tenant, and this one once its
    // local context has ended, see nothing at all.
    let fresh = self::app(&tdb).await;
    for (t, n) in visible_counts(&fresh).await {
        assert_eq!(n, 0, "{t} without a tenant context");
    }
    clear_context(&app).await;
    exec(
        &app,
        &format!("BEGIN; SELECT set_tenant_context_local('{a}'); COMMIT"),
    )
    .await;
    for (t, n) in visible_counts(&app).await {
        assert_eq!(n, 0, "{t} after the local context ended");
    }
    // Nor do the narrow roles.
    for (role, rows) in [
        ("tenantry_app_own", "tenantry.resources"),
        ("tenantry_app_shared", "tenantry.resources_shared_with_me()"),
    ] {
        exec(&fresh, &format!("SET ROLE {role}")).await;
        assert_eq!(
            count(&fresh, &format!("SELECT count(*) FROM {rows}")).await,
            0,
            "{role}"
        );
    }
}

// -----------------------------------------------------------------------------
// The old settings, set raw, and the setting the context lives in.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn raw_settings_never_change_or_widen_the_context_and_the_context_setting_is_not_settable() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let root = create_tenant(&admin, "root", None).await;
    let child = create_tenant(&admin, "child", Some(root)).await;
    let other = create_tenant(&admin, "other", None).await;
    for (t, n) in [(root, "r"), (child, "c"), (other, "o")] {
        create_resource(&app, t, n).await;
    }
    clear_context(&app).await;

    // The context comes only from tenantry's setters: the settings earlier
    // versions read (app.current_tenant_id, app.visible_tenant_ids) are
    // plain text now, and the one the context lives in is not the app role's
    // to set, even in an operator's session.
    exec(&app, "BEGIN").await;
    app.execute("SELECT set_tenant_context_local($1)", &[&root])
        .await
        .unwrap();
    assert_eq!(resource_names(&app).await, ["c", "r"]);
    for raw in [
        format!("SET LOCAL app.current_tenant_id = '{other}'"),
        format!("SET LOCAL app.visible_tenant_ids = '{{{other},{root}}}'"),
        format!("SELECT set_config('app.current_tenant_id', '{child}', true)"),
    ] {
        exec(&app, &raw).await;
        assert_eq!(resource_names(&app).await, ["c", "r"], "{raw}");
    }
    assert_eq!(uuids(&app, "SELECT current_tenant_id()").await, [root]);
    exec(&app, "SAVEPOINT s").await;
    denied(
        &app,
        &format!(
            "SELECT set_config('backtrace_functions', 'tenantry_v1_{}_00000000000000000000000000000000,a,stenantry,v{}', true)",
            other.simple(),
            other.simple()
        ),
        "42501",
    )
    .await;
    exec(&app, "ROLLBACK TO SAVEPOINT s").await;
    denied(&app, "RESET backtrace_functions", "42501").await;
    exec(&app, "COMMIT").await;
    assert!(resource_names(&app).await.is_empty());

    // Raw settings alone, without the setter: no tenant at all.
    exec(&app, "BEGIN").await;
    exec(
        &app,
        &format!("SET LOCAL app.current_tenant_id = '{child}'"),
    )
    .await;
    exec(
        &app,
        &format!("SET LOCAL app.visible_tenant_ids = '{{{child},{root},{other}}}'"),
    )
    .await;
    assert!(resource_names(&app).await.is_empty());
    assert_eq!(
        uuids(&app, "SELECT unnest(visible_tenant_ids())").await,
        Vec::<Uuid>::new()
    );
    exec(&app, "COMMIT").await;
}

#[tokio::test]
async fn the_readme_walkthrough_of_the_sql_api_runs_as_written_in_psql() {
    let tdb = TestDatabase::new().await;
    let stdout = crate::helpers::run_readme_sql(&tdb, "Using the SQL API from psql").await;
    // What the comments in the README say: globex owns nothing, reads the
    // shared "plan" through resources_shared_with_me(), and cannot change it.
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"plan"), "{stdout}");
    assert!(lines.contains(&"UPDATE 0"), "{stdout}");
    assert_eq!(
        lines.iter().filter(|l| **l == "plan").count(),
        1,
        "{stdout}"
    );
}
