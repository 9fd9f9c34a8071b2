//! SQL API tests: the guide's functions called by their names from a plain SQL session as the server's login role (`tenantry_server`, then `SET ROLE`), and one attack per flaw of design.md "What the seed gets wrong", each denied case beside the allowed one.

use std::fmt::Debug;

use serde_json::{json, Value};
use tenantry_db::testing::TestDatabase;
use tokio_postgres::{Client, Error};
use uuid::Uuid;

mod common;
use common::{count, create_silo, create_tenant, describe, exec, set_status, strings};

// -----------------------------------------------------------------------------
// Helpers: a psql-like session as tenantry_server.
// -----------------------------------------------------------------------------

/// `tenantry_server` switched to `role`, with the guide's names on the search path.
async fn login(tdb: &TestDatabase, role: &str) -> Client {
    let c = tdb.server_client().await;
    exec(
        &c,
        &format!("SET ROLE {role}; SET search_path = tenantry, public"),
    )
    .await;
    c
}

async fn app(tdb: &TestDatabase) -> Client {
    login(tdb, "tenantry_app").await
}

async fn admin(tdb: &TestDatabase) -> Client {
    login(tdb, "tenantry_admin").await
}

async fn logger(tdb: &TestDatabase) -> Client {
    login(tdb, "tenantry_logger").await
}

/// The SQLSTATE of a failed call; panics when the call succeeded. Returns the message.
fn expect_sqlstate<T: Debug>(result: Result<T, Error>, code: &str, what: &str) -> String {
    match result {
        Ok(v) => panic!("{what}: expected SQLSTATE {code}, but it succeeded: {v:?}"),
        Err(e) => {
            let got = e.code().map(|c| c.code().to_owned());
            assert_eq!(
                got.as_deref(),
                Some(code),
                "{what}: expected SQLSTATE {code}, got {}",
                describe(&e)
            );
            e.as_db_error().unwrap().message().to_owned()
        }
    }
}

/// Runs `sql` and expects it to fail with `code`.
async fn denied(c: &Client, sql: &str, code: &str) -> String {
    expect_sqlstate(c.batch_execute(sql).await, code, sql)
}

/// The guide's session-level `set_tenant_context(uuid)`.
async fn set_context(c: &Client, t: Uuid) {
    c.execute("SELECT set_tenant_context($1)", &[&t])
        .await
        .unwrap_or_else(|e| panic!("set_tenant_context({t}): {}", describe(&e)));
}

async fn clear_context(c: &Client) {
    exec(c, "SELECT tenantry.set_tenant_context(NULL)").await;
}

/// `create_resource` as tenant `t` (session context left set to `t`).
async fn create_resource(c: &Client, t: Uuid, name: &str) -> Uuid {
    set_context(c, t).await;
    c.query_one(
        "SELECT create_resource($1)",
        &[&json!({"name": name, "n": 1})],
    )
    .await
    .unwrap_or_else(|e| panic!("create_resource({name}): {}", describe(&e)))
    .get(0)
}

async fn truth(c: &Client, sql: &str) -> bool {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

async fn uuids(c: &Client, sql: &str) -> Vec<Uuid> {
    let mut v: Vec<Uuid> = c
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<Uuid>) -> Vec<Uuid> {
    v.sort();
    v
}

/// Resource names the session sees through `tenantry.resources`.
async fn resource_names(c: &Client) -> Vec<String> {
    strings(c, "SELECT name FROM tenantry.resources").await
}

fn schema_of(t: Uuid) -> String {
    format!("tenant_{}", t.simple())
}

/// Tenant id a key validates to (NULL when refused).
async fn validated_tenant(c: &Client, key: &str) -> Option<String> {
    c.query_one("SELECT validate_tenant_key($1)->>'tenant_id'", &[&key])
        .await
        .unwrap()
        .get(0)
}

async fn verified_tenant(c: &Client, key: &str) -> Option<String> {
    c.query_one("SELECT verify_api_key($1)->>'tenant_id'", &[&key])
        .await
        .unwrap()
        .get(0)
}

/// Appends request-log rows as the logger, all in the current hour.
async fn log_requests(logger: &Client, t: Uuid, users: &[Uuid]) {
    for u in users {
        logger
            .execute(
                "INSERT INTO tenantry.request_log (tenant_id, created_at, user_id, method, route, status)
                 VALUES ($1, date_trunc('hour', now()), $2, 'GET', '/resources', 200)",
                &[&t, u],
            )
            .await
            .unwrap_or_else(|e| panic!("logging a request: {}", describe(&e)));
    }
}

// -----------------------------------------------------------------------------
// 1. The guide's SQL API, by its names.
// -----------------------------------------------------------------------------

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
        ["tenantry, public"]
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

#[tokio::test]
async fn guide_resource_and_sharing_functions_answer_by_their_names() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;

    // No context: nothing can be created.
    expect_sqlstate(
        app.query_one("SELECT create_resource($1)", &[&json!({"name": "x"})])
            .await,
        "TN403",
        "create_resource without a tenant",
    );

    set_context(&app, a).await;
    let rid: Uuid = app
        .query_one(
            "SELECT create_resource($1)",
            &[&json!({"name": "doc", "k": 1})],
        )
        .await
        .unwrap()
        .get(0);
    let row = app
        .query_one(
            "SELECT tenant_id, name, data, size_bytes FROM resources WHERE id = $1",
            &[&rid],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Uuid>(0), a);
    assert_eq!(row.get::<_, String>(1), "doc");
    assert_eq!(row.get::<_, Value>(2), json!({"name": "doc", "k": 1}));
    assert!(row.get::<_, i64>(3) > 0);
    for bad in [json!([1, 2]), json!({"k": 1}), json!({"name": ""})] {
        expect_sqlstate(
            app.query_one("SELECT create_resource($1)", &[&bad]).await,
            "TN422",
            "create_resource(bad data)",
        );
    }

    app.execute("SELECT share_resource($1, $2)", &[&rid, &b])
        .await
        .unwrap();
    set_context(&app, b).await;
    assert_eq!(resource_names(&app).await, ["doc"]);

    set_context(&app, a).await;
    app.execute("SELECT unshare_resource($1, $2)", &[&rid, &b])
        .await
        .unwrap();
    expect_sqlstate(
        app.execute("SELECT unshare_resource($1, $2)", &[&rid, &b])
            .await,
        "TN404",
        "unshare_resource twice",
    );
    set_context(&app, b).await;
    assert!(resource_names(&app).await.is_empty());
}

#[tokio::test]
async fn guide_key_functions_answer_by_their_names() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    set_context(&app, a).await;

    let k1: String = app
        .query_one(
            "SELECT create_api_key($1, $2)",
            &[&"ci", &json!({"env": "prod"})],
        )
        .await
        .unwrap()
        .get(0);
    assert!(k1.starts_with("tk_") && k1.len() == 80, "{k1}");
    let id = app
        .query_one("SELECT verify_api_key($1)", &[&k1])
        .await
        .unwrap()
        .get::<_, Option<Value>>(0)
        .expect("a fresh key verifies");
    assert_eq!(id["tenant_id"], json!(a.to_string()));
    assert_eq!(id["metadata"]["env"], json!("prod"));
    let k1_id: Uuid = id["key_id"].as_str().unwrap().parse().unwrap();

    let k2: String = app
        .query_one("SELECT create_tenant_api_key($1, $2)", &[&a, &"tenant key"])
        .await
        .unwrap()
        .get(0);
    let v = app
        .query_one("SELECT validate_tenant_key($1)", &[&k2])
        .await
        .unwrap()
        .get::<_, Option<Value>>(0)
        .expect("a tenant key validates");
    assert_eq!(v["tenant_id"], json!(a.to_string()));
    assert_eq!(v["type"], json!("tenant_key"));

    // Rotation: both keys work during the grace period; a key rotates once.
    let k3: String = app
        .query_one("SELECT rotate_api_key($1, interval '1 hour')", &[&k1_id])
        .await
        .unwrap()
        .get(0);
    assert_ne!(k3, k1);
    assert_eq!(verified_tenant(&app, &k1).await, Some(a.to_string()));
    assert_eq!(verified_tenant(&app, &k3).await, Some(a.to_string()));
    expect_sqlstate(
        app.query_one("SELECT rotate_api_key($1, interval '1 hour')", &[&k1_id])
            .await,
        "TN409",
        "rotating a key twice",
    );

    // Revocation is immediate and idempotent.
    let k3_id: Uuid = app
        .query_one("SELECT (verify_api_key($1)->>'key_id')::uuid", &[&k3])
        .await
        .unwrap()
        .get(0);
    app.execute("SELECT revoke_api_key($1)", &[&k3_id])
        .await
        .unwrap();
    assert_eq!(verified_tenant(&app, &k3).await, None);
    app.execute("SELECT revoke_api_key($1)", &[&k3_id])
        .await
        .unwrap();
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(count(&app, "SELECT count(*) FROM api_keys").await, 3);

    // A grace of zero ends the old key at once.
    let k2_id: Uuid = v["key_id"].as_str().unwrap().parse().unwrap();
    let k4: String = app
        .query_one("SELECT rotate_api_key($1, interval '0')", &[&k2_id])
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(verified_tenant(&app, &k2).await, None);
    assert_eq!(verified_tenant(&app, &k4).await, Some(a.to_string()));
}

#[tokio::test]
async fn guide_role_functions_answer_by_their_names_inside_the_current_tenant_only() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;

    set_context(&app, b).await;
    let b_role: Uuid = app
        .query_one("SELECT create_tenant_role($1, 'viewer')", &[&b])
        .await
        .unwrap()
        .get(0);

    set_context(&app, a).await;
    let role: Uuid = app
        .query_one("SELECT create_tenant_role($1, 'editor')", &[&a])
        .await
        .unwrap()
        .get(0);
    for _ in 0..2 {
        app.execute(
            "SELECT assign_tenant_permission($1, 'resources.write')",
            &[&role],
        )
        .await
        .unwrap();
    }
    let perms = app
        .query(
            "SELECT p.name FROM role_permissions rp JOIN permissions p USING (permission_id)
             WHERE rp.role_id = $1",
            &[&role],
        )
        .await
        .unwrap();
    assert_eq!(perms.len(), 1);
    assert_eq!(perms[0].get::<_, String>(0), "resources.write");
    assert_eq!(strings(&app, "SELECT name FROM roles").await, ["editor"]);

    expect_sqlstate(
        app.query_one("SELECT create_tenant_role($1, 'intruder')", &[&b])
            .await,
        "TN403",
        "create_tenant_role in another tenant",
    );
    expect_sqlstate(
        app.query_one("SELECT create_tenant_role($1, 'editor')", &[&a])
            .await,
        "TN409",
        "duplicate role name",
    );
    expect_sqlstate(
        app.execute(
            "SELECT assign_tenant_permission($1, 'resources.write')",
            &[&b_role],
        )
        .await,
        "TN404",
        "assign_tenant_permission on another tenant's role",
    );
    expect_sqlstate(
        app.execute(
            "SELECT assign_tenant_permission($1, 'root.everything')",
            &[&role],
        )
        .await,
        "TN404",
        "assign_tenant_permission of an unknown permission",
    );

    set_context(&app, b).await;
    assert_eq!(strings(&app, "SELECT name FROM roles").await, ["viewer"]);
    assert_eq!(
        count(&app, "SELECT count(*) FROM role_permissions").await,
        0
    );
}

#[tokio::test]
async fn guide_usage_names_answer_and_tenant_metrics_itself_is_not_readable() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    create_resource(&app, a, "doc").await;
    log_requests(&logger(&tdb).await, a, &[Uuid::new_v4()]).await;
    exec(&admin, "SELECT refresh_tenant_metrics()").await;

    set_context(&app, a).await;
    let row = app
        .query_one(
            "SELECT tenant_id, tenant_name, total_resources, storage_used > 0 FROM tenant_resource_usage",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Uuid>(0), a);
    assert_eq!(row.get::<_, String>(1), "a");
    assert_eq!(row.get::<_, i64>(2), 1);
    assert!(row.get::<_, bool>(3));
    let m = app
        .query(
            "SELECT tenant_id, request_count FROM current_tenant_metrics()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].get::<_, Uuid>(0), a);
    assert_eq!(m[0].get::<_, i64>(1), 1);
    denied(&app, "SELECT * FROM tenant_metrics", "42501").await;
}

#[tokio::test]
async fn create_tenant_schema_by_its_name_moves_the_tenant_into_its_own_schema() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let t = create_tenant(&admin, "silo", None).await;
    create_resource(&app, t, "kept").await;

    denied(
        &app,
        &format!("SELECT create_tenant_schema('{t}')"),
        "42501",
    )
    .await;
    for _ in 0..2 {
        // Idempotent.
        admin
            .execute("SELECT create_tenant_schema($1)", &[&t])
            .await
            .unwrap();
    }
    let schema = schema_of(t);
    assert_eq!(
        strings(
            &admin,
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'"
        )
        .await,
        std::slice::from_ref(&schema)
    );
    set_context(&app, t).await;
    assert_eq!(
        strings(
            &app,
            "SELECT name || '@' || tableoid::regclass::text FROM resources"
        )
        .await,
        [format!("kept@{schema}.resources")]
    );
    let current: Option<String> = app
        .query_one("SELECT current_tenant_schema()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(current, Some(schema));
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
    for role in ["tenantry_app_own", "tenantry_app_shared"] {
        exec(&fresh, &format!("SET ROLE {role}")).await;
        assert_eq!(
            count(&fresh, "SELECT count(*) FROM tenantry.resources").await,
            0,
            "{role}"
        );
    }
}

// -----------------------------------------------------------------------------
// Flaw 2: owners and superusers bypass RLS.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn the_server_login_role_cannot_own_switch_off_or_bypass_row_level_security() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;
    create_resource(&app, a, "a-doc").await;
    create_resource(&app, b, "b-secret").await;

    let server = tdb.server_client().await;
    // Catalogue facts: no login-reachable role is superuser, has BYPASSRLS or owns anything.
    let rows = server
        .query(
            "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls, r.rolcanlogin,
                    (SELECT count(*) FROM pg_class WHERE relowner = r.oid)
                  + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)
                  + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)
                  + (SELECT count(*) FROM pg_type WHERE typowner = r.oid),
                    pg_has_role('tenantry_server', r.oid, 'MEMBER')
             FROM pg_roles r WHERE r.rolname LIKE 'tenantry\\_%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 7);
    for row in &rows {
        let name: String = row.get(0);
        let (sup, bypass, login, owned, reachable): (bool, bool, bool, i64, bool) =
            (row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
        assert!(!sup, "{name} is superuser");
        if name == "tenantry_owner" {
            // The owner bypasses RLS, so nobody may reach it.
            assert!(bypass && owned > 0 && !login && !reachable, "{name}");
        } else {
            assert!(!bypass, "{name} has BYPASSRLS");
            assert_eq!(owned, 0, "{name} owns objects");
            assert!(reachable, "{name} should be reachable from tenantry_server");
            assert_eq!(login, name == "tenantry_server", "{name} LOGIN");
        }
    }
    // Every tenantry table has RLS enabled and forced, except the global catalogues.
    assert_eq!(
        strings(
            &server,
            "SELECT relname::text FROM pg_class
             WHERE relnamespace = 'tenantry'::regnamespace AND relkind IN ('r', 'p')
               AND NOT (relrowsecurity AND relforcerowsecurity)"
        )
        .await,
        ["permissions", "schema_migrations"]
    );

    // Attacks, as the login role itself and as every role it can become.
    let attacks = [
        "ALTER TABLE tenantry.resources DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE tenantry.resources NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE tenantry.resources_pooled DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE tenantry.tenants NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON tenantry.resources",
        "ALTER POLICY tenant_isolation ON tenantry.resources USING (true)",
        "CREATE POLICY open_door ON tenantry.resources USING (true)",
        "ALTER TABLE tenantry.resources OWNER TO tenantry_server",
        "SET ROLE tenantry_owner",
        "SET SESSION AUTHORIZATION tenantry_owner",
        "ALTER ROLE tenantry_server BYPASSRLS",
        "ALTER ROLE tenantry_app BYPASSRLS",
        "GRANT tenantry_owner TO tenantry_server",
        "CREATE FUNCTION tenantry.peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM tenantry.resources'",
        "CREATE SCHEMA attacker",
        "SELECT count(*) FROM tenantry.resources_pooled",
        "TRUNCATE tenantry.resources",
        "DROP TABLE tenantry.resources",
    ];
    for role in [
        None,
        Some("tenantry_app"),
        Some("tenantry_app_own"),
        Some("tenantry_app_shared"),
        Some("tenantry_admin"),
        Some("tenantry_logger"),
    ] {
        exec(
            &server,
            &match role {
                Some(r) => format!("SET ROLE {r}"),
                None => "RESET ROLE".into(),
            },
        )
        .await;
        for sql in attacks {
            expect_sqlstate(
                server.batch_execute(sql).await,
                "42501",
                &format!("{sql} as {role:?}"),
            );
        }
    }

    // The login role alone can do nothing (NOINHERIT): no table, no function.
    exec(&server, "RESET ROLE").await;
    denied(&server, "SELECT count(*) FROM tenantry.resources", "42501").await;
    denied(&server, "SELECT count(*) FROM tenantry.tenants", "42501").await;
    denied(
        &server,
        &format!("SELECT tenantry.set_tenant_context('{a}')"),
        "42501",
    )
    .await;
    // Administrators cannot read resources at all.
    denied(&admin, "SELECT count(*) FROM tenantry.resources", "42501").await;

    // row_security = off makes a query that RLS would filter fail instead of
    // bypassing the policies.
    set_context(&app, a).await;
    assert_eq!(resource_names(&app).await, ["a-doc"]);
    exec(&app, "SET row_security = off").await;
    denied(&app, "SELECT count(*) FROM tenantry.resources", "42501").await;
    exec(&app, "RESET row_security").await;
    assert_eq!(resource_names(&app).await, ["a-doc"]);

    // Everything is still in place.
    let su = tdb.superuser_client().await;
    assert_eq!(
        count(&su, "SELECT count(*) FROM tenantry.resources").await,
        2
    );
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM pg_policy WHERE polrelid = 'tenantry.resources'::regclass"
        )
        .await,
        2
    );
}

// -----------------------------------------------------------------------------
// Flaw 3: tenant_resource_usage as an owner-rights view.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn tenant_resource_usage_shows_a_tenant_only_itself_and_its_descendants() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let child = create_tenant(&admin, "a-child", Some(a)).await;
    let b = create_tenant(&admin, "b", None).await;
    create_resource(&app, a, "a1").await;
    create_resource(&app, child, "c1").await;
    let b1 = create_resource(&app, b, "b1").await;
    create_resource(&app, b, "b2").await;
    // A resource of b shared with a still counts for b only.
    app.execute("SELECT share_resource($1, $2)", &[&b1, &a])
        .await
        .unwrap();

    async fn usage(app: &Client) -> Vec<(Uuid, i64)> {
        let mut v: Vec<(Uuid, i64)> = app
            .query(
                "SELECT tenant_id, total_resources FROM tenant_resource_usage",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        v.sort();
        v
    }
    set_context(&app, a).await;
    assert_eq!(usage(&app).await, {
        let mut v = vec![(a, 1), (child, 1)];
        v.sort();
        v
    });
    set_context(&app, child).await;
    assert_eq!(usage(&app).await, [(child, 1)]);
    set_context(&app, b).await;
    assert_eq!(usage(&app).await, [(b, 2)]);
    clear_context(&app).await;
    assert!(usage(&app).await.is_empty());

    // The rows exist (a view with owner rights would show all three).
    let su = tdb.superuser_client().await;
    assert_eq!(
        count(&su, "SELECT count(*) FROM tenantry.tenant_resource_usage").await,
        3
    );
    assert_eq!(
        strings(
            &su,
            "SELECT unnest(reloptions) FROM pg_class WHERE oid = 'tenantry.tenant_resource_usage'::regclass"
        )
        .await,
        ["security_invoker=true"]
    );
}

// -----------------------------------------------------------------------------
// Flaw 4: the materialized view tenant_metrics has no RLS.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn tenant_metrics_is_unreadable_by_tenant_roles_and_current_tenant_metrics_shows_only_the_callers_subtree(
) {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let logger = logger(&tdb).await;
    let root = create_tenant(&admin, "root", None).await;
    let child = create_tenant(&admin, "child", Some(root)).await;
    let other = create_tenant(&admin, "other", None).await;
    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
    log_requests(&logger, root, &[u1, u1, u2]).await;
    log_requests(&logger, child, &[u1, u2]).await;
    log_requests(&logger, other, &[u1, u1, u1, u1]).await;
    exec(&admin, "SELECT refresh_tenant_metrics()").await;

    let server = tdb.server_client().await;
    exec(&server, "SET search_path = tenantry, public").await;
    for role in [
        None,
        Some("tenantry_app"),
        Some("tenantry_app_own"),
        Some("tenantry_app_shared"),
        Some("tenantry_logger"),
    ] {
        exec(
            &server,
            &match role {
                Some(r) => format!("SET ROLE {r}"),
                None => "RESET ROLE".into(),
            },
        )
        .await;
        if role == Some("tenantry_app") {
            // A tenant context does not open it either.
            set_context(&server, root).await;
        }
        for sql in [
            "SELECT * FROM tenantry.tenant_metrics",
            "SELECT count(*) FROM tenantry.tenant_metrics",
            "TABLE tenantry.tenant_metrics",
        ] {
            expect_sqlstate(
                server.batch_execute(sql).await,
                "42501",
                &format!("{sql} as {role:?}"),
            );
        }
    }

    async fn metrics(app: &Client) -> Vec<(Uuid, i64, i64, bool)> {
        let mut v: Vec<(Uuid, i64, i64, bool)> = app
            .query(
                "SELECT tenant_id, sum(request_count)::bigint, max(unique_users), bool_and(is_descendant)
                 FROM current_tenant_metrics() GROUP BY tenant_id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        v.sort();
        v
    }
    set_context(&app, root).await;
    let mut expected = vec![(root, 3, 2, false), (child, 2, 2, true)];
    expected.sort();
    assert_eq!(metrics(&app).await, expected);
    set_context(&app, child).await;
    assert_eq!(metrics(&app).await, [(child, 2, 2, false)]);
    set_context(&app, other).await;
    assert_eq!(metrics(&app).await, [(other, 4, 1, false)]);
    clear_context(&app).await;
    assert!(metrics(&app).await.is_empty());

    // The request log itself: the logger appends and reads nothing; a tenant
    // reads and appends only its own rows.
    denied(
        &logger,
        "SELECT count(*) FROM tenantry.request_log",
        "42501",
    )
    .await;
    set_context(&app, root).await;
    assert_eq!(count(&app, "SELECT count(*) FROM request_log").await, 3);
    app.execute(
        "INSERT INTO request_log (tenant_id, route, status) VALUES ($1, '/x', 200)",
        &[&root],
    )
    .await
    .unwrap();
    expect_sqlstate(
        app.execute(
            "INSERT INTO request_log (tenant_id, route, status) VALUES ($1, '/x', 200)",
            &[&other],
        )
        .await,
        "42501",
        "logging a request for another tenant",
    );
}

// -----------------------------------------------------------------------------
// Flaw 5: the refresh must see every tenant and be run by someone entitled.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn refresh_tenant_metrics_runs_as_admin_sees_every_tenant_and_is_refused_to_tenant_roles() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let logger = logger(&tdb).await;
    let t1 = create_tenant(&admin, "t1", None).await;
    let t2 = create_tenant(&admin, "t2", None).await;
    let t3 = create_tenant(&admin, "t3", Some(t1)).await;
    log_requests(&logger, t1, &[Uuid::new_v4()]).await;
    log_requests(&logger, t2, &[Uuid::new_v4(), Uuid::new_v4()]).await;
    log_requests(&logger, t3, &[Uuid::new_v4(); 3]).await;

    let su = tdb.superuser_client().await;
    async fn totals(su: &Client) -> Vec<(Uuid, i64)> {
        let mut v: Vec<(Uuid, i64)> = su
            .query(
                "SELECT tenant_id, sum(request_count)::bigint FROM tenantry.tenant_metrics GROUP BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        v.sort();
        v
    }
    assert!(totals(&su).await.is_empty(), "nothing before a refresh");

    // Tenant roles may not refresh.
    set_context(&app, t1).await;
    denied(&app, "SELECT tenantry.refresh_tenant_metrics()", "42501").await;
    denied(
        &app,
        "REFRESH MATERIALIZED VIEW tenantry.tenant_metrics",
        "42501",
    )
    .await;
    denied(
        &admin,
        "REFRESH MATERIALIZED VIEW tenantry.tenant_metrics",
        "42501",
    )
    .await;
    assert!(totals(&su).await.is_empty());

    // The admin refreshes; a tenant id left on its session changes nothing:
    // the view is computed as its BYPASSRLS owner and holds every tenant.
    exec(&admin, &format!("SET app.current_tenant_id = '{t1}'")).await;
    exec(&admin, "SELECT refresh_tenant_metrics()").await;
    let mut expected = vec![(t1, 1), (t2, 2), (t3, 3)];
    expected.sort();
    assert_eq!(totals(&su).await, expected);

    // Concurrent refresh of a populated view picks up new rows.
    log_requests(&logger, t2, &[Uuid::new_v4()]).await;
    exec(
        &admin,
        "RESET app.current_tenant_id; SELECT refresh_tenant_metrics()",
    )
    .await;
    let mut expected = vec![(t1, 1), (t2, 3), (t3, 3)];
    expected.sort();
    assert_eq!(totals(&su).await, expected);
}

// -----------------------------------------------------------------------------
// Flaw 6: hierarchy only one level deep, self omitted, cycles possible.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn hierarchy_is_transitive_includes_the_tenant_itself_never_goes_upwards_and_rejects_cycles()
{
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let root = create_tenant(&admin, "root", None).await;
    let child = create_tenant(&admin, "child", Some(root)).await;
    let grandchild = create_tenant(&admin, "grandchild", Some(child)).await;
    let sibling = create_tenant(&admin, "sibling", Some(root)).await;
    for (t, n) in [(root, "r"), (child, "c"), (grandchild, "g"), (sibling, "s")] {
        create_resource(&app, t, n).await;
    }

    set_context(&app, root).await;
    assert_eq!(resource_names(&app).await, ["c", "g", "r", "s"]);
    assert_eq!(
        uuids(&app, "SELECT tenant_id FROM tenants").await,
        sorted(vec![root, child, grandchild, sibling])
    );
    set_context(&app, child).await;
    assert_eq!(resource_names(&app).await, ["c", "g"]);
    assert_eq!(
        uuids(&app, "SELECT tenant_id FROM tenants").await,
        sorted(vec![child, grandchild])
    );
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM tenant_hierarchy WHERE parent_id = '{root}'")
        )
        .await,
        0
    );
    set_context(&app, grandchild).await;
    assert_eq!(resource_names(&app).await, ["g"]);
    assert_eq!(
        uuids(&app, "SELECT tenant_id FROM tenants").await,
        [grandchild]
    );

    // Cycles and self-parenting are rejected; a tenant cannot re-parent itself.
    let move_sql = "UPDATE tenantry.tenants SET parent_id = $1 WHERE tenant_id = $2";
    expect_sqlstate(
        admin.execute(move_sql, &[&grandchild, &root]).await,
        "TN409",
        "root under its grandchild",
    );
    expect_sqlstate(
        admin.execute(move_sql, &[&child, &root]).await,
        "TN409",
        "root under its child",
    );
    expect_sqlstate(
        admin.execute(move_sql, &[&root, &root]).await,
        "TN422",
        "root under itself",
    );
    let unknown = Uuid::new_v4();
    expect_sqlstate(
        admin.execute(move_sql, &[&unknown, &child]).await,
        "TN404",
        "child under an unknown tenant",
    );
    set_context(&app, child).await;
    expect_sqlstate(
        app.execute(move_sql, &[&child, &sibling]).await,
        "42501",
        "a tenant adopting its sibling",
    );

    // An allowed move: sibling under grandchild. The closure follows.
    admin
        .execute(move_sql, &[&grandchild, &sibling])
        .await
        .unwrap();
    set_context(&app, child).await;
    assert_eq!(resource_names(&app).await, ["c", "g", "s"]);
    set_context(&app, sibling).await;
    assert_eq!(resource_names(&app).await, ["s"]);
    set_context(&app, root).await;
    assert_eq!(resource_names(&app).await, ["c", "g", "r", "s"]);
    // And the cycle the move made newly possible is rejected too.
    expect_sqlstate(
        admin.execute(move_sql, &[&sibling, &child]).await,
        "TN409",
        "child under its new great-grandchild",
    );
}

#[tokio::test]
async fn a_cycle_built_by_one_multi_row_update_is_rejected_and_changes_nothing() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let x = create_tenant(&admin, "x", None).await;
    let y = create_tenant(&admin, "y", None).await;
    let z = create_tenant(&admin, "z", None).await;
    // Each row's BEFORE trigger checks the closure as it was before the
    // statement (the closure is maintained by AFTER triggers), so a ring
    // written in one statement is caught when the closure is extended, and
    // reported with the same code as any other cycle.
    let swap = "UPDATE tenantry.tenants
                SET parent_id = CASE tenant_id WHEN $1 THEN $2 ELSE $1 END
                WHERE tenant_id IN ($1, $2)";
    expect_sqlstate_any(admin.execute(swap, &[&x, &y]).await, &["TN409"]);
    let ring = "UPDATE tenantry.tenants
                SET parent_id = CASE tenant_id WHEN $1 THEN $2 WHEN $2 THEN $3 ELSE $1 END
                WHERE tenant_id IN ($1, $2, $3)";
    expect_sqlstate_any(admin.execute(ring, &[&x, &y, &z]).await, &["TN409"]);
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM tenants WHERE parent_id IS NOT NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM tenant_hierarchy WHERE depth > 0"
        )
        .await,
        0
    );
    // The same moves one at a time: the last one closes the ring and is refused.
    let move_sql = "UPDATE tenantry.tenants SET parent_id = $1 WHERE tenant_id = $2";
    admin.execute(move_sql, &[&y, &x]).await.unwrap();
    admin.execute(move_sql, &[&z, &y]).await.unwrap();
    expect_sqlstate(
        admin.execute(move_sql, &[&x, &z]).await,
        "TN409",
        "closing the ring",
    );
}

// -----------------------------------------------------------------------------
// Flaw 7: share_resource and shared_resources.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn share_resource_records_the_member_checks_its_target_and_shares_cannot_be_forged() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;
    let c = create_tenant(&admin, "c", None).await;
    let d = create_tenant(&admin, "d", None).await;
    let e = create_tenant(&admin, "e", None).await;
    let suspended = create_tenant(&admin, "suspended", None).await;
    let gone = create_tenant(&admin, "gone", None).await;
    set_status(&admin, suspended, "suspended").await;
    set_status(&admin, gone, "deleted").await;
    let ra = create_resource(&app, a, "a-doc").await;
    let rb = create_resource(&app, b, "b-doc").await;
    let rd = create_resource(&app, d, "d-doc").await;
    app.execute("SELECT share_resource($1, $2)", &[&rd, &e])
        .await
        .unwrap();
    clear_context(&app).await;

    // Allowed: shared_by is the acting member of the transaction.
    let member = Uuid::new_v4();
    exec(&app, "BEGIN").await;
    app.execute(
        "SELECT set_tenant_context_local($1, $2, NULL)",
        &[&a, &member],
    )
    .await
    .unwrap();
    app.execute("SELECT share_resource($1, $2)", &[&ra, &b])
        .await
        .unwrap();
    exec(&app, "COMMIT").await;
    set_context(&app, a).await;
    let row = app
        .query_one(
            "SELECT shared_by, shared_with FROM shared_resources WHERE resource_id = $1",
            &[&ra],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Uuid>>(0), Some(member));
    assert_eq!(row.get::<_, Uuid>(1), b);
    set_context(&app, b).await;
    assert_eq!(resource_names(&app).await, ["a-doc", "b-doc"]);

    // Denied: bad targets, duplicates, foreign or missing resources.
    set_context(&app, a).await;
    let share = "SELECT share_resource($1, $2)";
    let unknown = Uuid::new_v4();
    expect_sqlstate(
        app.execute(share, &[&ra, &unknown]).await,
        "TN404",
        "unknown target",
    );
    expect_sqlstate(
        app.execute(share, &[&ra, &gone]).await,
        "TN404",
        "deleted target",
    );
    expect_sqlstate(
        app.execute(share, &[&ra, &suspended]).await,
        "TN409",
        "suspended target",
    );
    expect_sqlstate(
        app.execute(share, &[&ra, &b]).await,
        "TN409",
        "duplicate share",
    );
    expect_sqlstate(
        app.execute(share, &[&ra, &a]).await,
        "TN422",
        "share with oneself",
    );
    let foreign = expect_sqlstate(
        app.execute(share, &[&rb, &c]).await,
        "TN404",
        "foreign resource",
    );
    let missing_id = Uuid::new_v4();
    let missing = expect_sqlstate(
        app.execute(share, &[&missing_id, &c]).await,
        "TN404",
        "missing resource",
    );
    assert_eq!(
        foreign.replace(&rb.to_string(), "<id>"),
        missing.replace(&missing_id.to_string(), "<id>"),
        "a foreign resource must look exactly like a missing one"
    );

    // shared_resources cannot be written directly.
    denied(
        &app,
        &format!(
            "INSERT INTO shared_resources (tenant_id, resource_id, shared_with) VALUES ('{a}', '{ra}', '{c}')"
        ),
        "42501",
    )
    .await;
    denied(
        &app,
        &format!("UPDATE shared_resources SET shared_with = '{c}'"),
        "42501",
    )
    .await;
    denied(&app, "DELETE FROM shared_resources", "42501").await;
    // Nor the shared_with column that the read policy trusts.
    denied(
        &app,
        &format!("UPDATE resources SET shared_with = ARRAY['{c}'::uuid] WHERE id = '{ra}'"),
        "42501",
    )
    .await;
    denied(
        &app,
        &format!("INSERT INTO resources (name, shared_with) VALUES ('x', ARRAY['{c}'::uuid])"),
        "42501",
    )
    .await;

    // Each tenant sees only the shares it made or received.
    let share_count = "SELECT count(*) FROM shared_resources";
    set_context(&app, a).await;
    assert_eq!(count(&app, share_count).await, 1);
    set_context(&app, b).await;
    assert_eq!(count(&app, share_count).await, 1);
    set_context(&app, c).await;
    assert_eq!(count(&app, share_count).await, 0);
    assert!(resource_names(&app).await.is_empty());
    set_context(&app, e).await;
    assert_eq!(count(&app, share_count).await, 1);
    assert_eq!(resource_names(&app).await, ["d-doc"]);

    // The target reads, but cannot change, delete, re-share or unshare.
    set_context(&app, b).await;
    let n = app
        .execute("UPDATE resources SET name = 'pwned' WHERE id = $1", &[&ra])
        .await
        .unwrap();
    assert_eq!(n, 0);
    let n = app
        .execute("DELETE FROM resources WHERE id = $1", &[&ra])
        .await
        .unwrap();
    assert_eq!(n, 0);
    expect_sqlstate(
        app.execute(share, &[&ra, &c]).await,
        "TN404",
        "re-share by the target",
    );
    expect_sqlstate(
        app.execute("SELECT unshare_resource($1, $2)", &[&ra, &b])
            .await,
        "TN404",
        "unshare by the target",
    );
    // The owner's row is untouched.
    set_context(&app, a).await;
    let row = app
        .query_one(
            "SELECT name, shared_with FROM resources WHERE id = $1",
            &[&ra],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "a-doc");
    assert_eq!(row.get::<_, Vec<Uuid>>(1), [b]);

    // Revocation is immediate.
    app.execute("SELECT unshare_resource($1, $2)", &[&ra, &b])
        .await
        .unwrap();
    set_context(&app, b).await;
    assert_eq!(resource_names(&app).await, ["b-doc"]);
}

// -----------------------------------------------------------------------------
// Flaw 8: validate_tenant_key needed the context before knowing the tenant.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn validate_tenant_key_identifies_the_tenant_without_context_and_refuses_foreign_revoked_and_suspended_keys(
) {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;
    let s = create_tenant(&admin, "s", None).await;
    let mut keys = Vec::new();
    for t in [a, b, s] {
        set_context(&app, t).await;
        let k: String = app
            .query_one("SELECT create_tenant_api_key($1, 'key')", &[&t])
            .await
            .unwrap()
            .get(0);
        keys.push(k);
    }
    let (ka, kb, ks) = (keys[0].clone(), keys[1].clone(), keys[2].clone());

    // No context: the key names its tenant.
    clear_context(&app).await;
    assert_eq!(validated_tenant(&app, &ka).await, Some(a.to_string()));
    assert_eq!(validated_tenant(&app, &kb).await, Some(b.to_string()));
    let ctx: Option<Uuid> = app
        .query_one("SELECT current_tenant_id()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ctx, None, "validation sets no context");

    // With a context: own key yes, another tenant's key no.
    set_context(&app, a).await;
    assert_eq!(validated_tenant(&app, &ka).await, Some(a.to_string()));
    assert_eq!(validated_tenant(&app, &kb).await, None);
    set_context(&app, b).await;
    assert_eq!(validated_tenant(&app, &ka).await, None);

    // Forged and tampered keys.
    clear_context(&app).await;
    let mut tampered = kb.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let other_prefix = format!("tk_{}{}", "0".repeat(12), &kb[15..]);
    for bad in [tampered.as_str(), other_prefix.as_str(), "garbage", ""] {
        assert_eq!(validated_tenant(&app, bad).await, None, "{bad}");
        assert_eq!(verified_tenant(&app, bad).await, None, "{bad}");
    }

    // Suspended tenant: verify reports it, validate refuses it.
    set_status(&admin, s, "suspended").await;
    assert_eq!(validated_tenant(&app, &ks).await, None);
    let status: Option<String> = app
        .query_one("SELECT verify_api_key($1)->>'tenant_status'", &[&ks])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status.as_deref(), Some("suspended"));

    // Another tenant's key can be neither created, revoked nor rotated.
    let kb_id: Uuid = app
        .query_one("SELECT (verify_api_key($1)->>'key_id')::uuid", &[&kb])
        .await
        .unwrap()
        .get(0);
    set_context(&app, a).await;
    expect_sqlstate(
        app.query_one("SELECT create_tenant_api_key($1, 'x')", &[&b])
            .await,
        "TN404",
        "key for another tenant",
    );
    expect_sqlstate(
        app.execute("SELECT revoke_api_key($1)", &[&kb_id]).await,
        "TN404",
        "revoking another tenant's key",
    );
    expect_sqlstate(
        app.query_one("SELECT rotate_api_key($1, interval '1 hour')", &[&kb_id])
            .await,
        "TN404",
        "rotating another tenant's key",
    );
    assert_eq!(
        validated_tenant(&app, &kb).await,
        None,
        "foreign under context a"
    );
    clear_context(&app).await;
    assert_eq!(validated_tenant(&app, &kb).await, Some(b.to_string()));

    // Revoked: refused at once.
    set_context(&app, a).await;
    let ka_id: Uuid = app
        .query_one("SELECT key_id FROM api_keys", &[])
        .await
        .unwrap()
        .get(0);
    app.execute("SELECT revoke_api_key($1)", &[&ka_id])
        .await
        .unwrap();
    clear_context(&app).await;
    assert_eq!(validated_tenant(&app, &ka).await, None);
    assert_eq!(verified_tenant(&app, &ka).await, None);

    // The hash is not readable; the key table is not writable.
    set_context(&app, a).await;
    assert_eq!(count(&app, "SELECT count(prefix) FROM api_keys").await, 1);
    for sql in [
        "SELECT key_hash FROM api_keys",
        "SELECT * FROM api_keys",
        "SELECT k FROM api_keys k",
        "SELECT count(*) FROM api_keys WHERE key_hash IS NOT NULL",
        "UPDATE api_keys SET revoked_at = NULL",
        "DELETE FROM api_keys",
        "INSERT INTO api_keys (prefix, key_hash) VALUES ('000000000000', sha256('x'))",
    ] {
        denied(&app, sql, "42501").await;
    }

    // Only the SHA-256 is stored.
    let su = tdb.superuser_client().await;
    let secret = &kb[16..];
    let leaked: i64 = su
        .query_one(
            "SELECT count(*) FROM tenantry.api_keys k WHERE strpos(row_to_json(k)::text, $1) > 0",
            &[&secret],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);
    let hashed: i64 = su
        .query_one(
            "SELECT count(*) FROM tenantry.api_keys WHERE key_hash = sha256(convert_to($1, 'UTF8'))",
            &[&kb],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hashed, 1);
}

// -----------------------------------------------------------------------------
// Flaw 9: SECURITY DEFINER without a pinned search_path; %s for identifiers.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn every_security_definer_function_pins_a_safe_search_path() {
    let tdb = TestDatabase::new().await;
    let server = tdb.server_client().await;
    let rows = server
        .query(
            "SELECT p.oid::regprocedure::text, coalesce(p.proconfig, '{}')
             FROM pg_proc p
             WHERE p.prosecdef AND p.pronamespace = 'tenantry'::regnamespace",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 20, "only {} definer functions?", rows.len());
    for row in &rows {
        let name: String = row.get(0);
        let config: Vec<String> = row.get(1);
        let path = config
            .iter()
            .find_map(|c| c.strip_prefix("search_path="))
            .unwrap_or_else(|| panic!("{name} has no pinned search_path: {config:?}"));
        let parts: Vec<&str> = path.split(',').map(str::trim).collect();
        assert!(
            parts
                .iter()
                .all(|p| ["pg_catalog", "pg_temp", "tenantry"].contains(p)),
            "{name}: {path}"
        );
        // pg_temp must be named, and last: otherwise it is searched first.
        assert_eq!(parts.last(), Some(&"pg_temp"), "{name}: {path}");
    }

    // Dynamic SQL quotes identifiers (%I), never splices them with %s, and no
    // function switches the session's identity.
    let offenders = strings(
        &server,
        "SELECT p.oid::regprocedure::text FROM pg_proc p
         WHERE p.pronamespace = 'tenantry'::regnamespace
           AND (p.prosrc ~* '(schema|table|on|into|from|join|tenant_)\\s*%s'
                OR p.prosrc ~* 'session\\s+authorization')",
    )
    .await;
    assert!(offenders.is_empty(), "{offenders:?}");
    let quoting = strings(
        &server,
        "SELECT p.proname::text FROM pg_proc p
         WHERE p.pronamespace = 'tenantry'::regnamespace AND p.prosrc LIKE '%\\%I%'",
    )
    .await;
    assert!(
        quoting.contains(&"set_tenant_isolation".to_owned()),
        "{quoting:?}"
    );
}

#[tokio::test]
async fn objects_shadowing_builtins_on_the_callers_search_path_do_not_change_what_definer_functions_do(
) {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;
    let c = create_tenant(&admin, "c", None).await;
    let ra = create_resource(&app, a, "a-doc").await;
    let rb = create_resource(&app, b, "b-doc").await;
    let kb: String = app
        .query_one("SELECT create_api_key('b key')", &[])
        .await
        .unwrap()
        .get(0);
    set_context(&app, a).await;
    let ka: String = app
        .query_one("SELECT create_api_key('a key')", &[])
        .await
        .unwrap()
        .get(0);
    let ka_id: Uuid = app
        .query_one("SELECT key_id FROM api_keys", &[])
        .await
        .unwrap()
        .get(0);
    log_requests(&logger(&tdb).await, a, &[Uuid::new_v4()]).await;
    log_requests(&logger(&tdb).await, b, &[Uuid::new_v4()]).await;
    exec(&admin, "SELECT refresh_tenant_metrics()").await;

    // A hostile schema that everyone can use: a frozen clock, a sha256 that
    // turns any input into the hash of a's real key, uuid operators that call
    // everything equal, and a fake tenants table.
    let fake = Uuid::new_v4();
    let su = tdb.superuser_client().await;
    exec(
        &su,
        &format!(
            "CREATE SCHEMA evil;
             CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql
                 AS $$ SELECT timestamptz '2000-01-01 00:00:00+00' $$;
             CREATE FUNCTION evil.sha256(bytea) RETURNS bytea LANGUAGE sql
                 AS $$ SELECT pg_catalog.sha256(pg_catalog.convert_to('{ka}', 'UTF8')) $$;
             CREATE FUNCTION evil.uuid_eq(uuid, uuid) RETURNS boolean LANGUAGE sql AS 'SELECT true';
             CREATE FUNCTION evil.uuid_ne(uuid, uuid) RETURNS boolean LANGUAGE sql AS 'SELECT false';
             CREATE OPERATOR evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = evil.uuid_eq);
             CREATE OPERATOR evil.<> (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = evil.uuid_ne);
             CREATE TABLE evil.tenants AS
                 SELECT '{fake}'::uuid AS tenant_id, 'fake'::text AS name, 'active'::text AS status,
                        'shared'::text AS isolation, NULL::uuid AS parent_id;
             GRANT USAGE ON SCHEMA evil TO PUBLIC;
             GRANT SELECT ON evil.tenants TO PUBLIC;
             -- Control: a definer function without a pinned search_path, as the guide wrote them.
             CREATE SCHEMA probe;
             CREATE FUNCTION probe.unpinned_now() RETURNS timestamptz LANGUAGE plpgsql SECURITY DEFINER
                 AS $$ BEGIN RETURN now(); END $$;
             GRANT USAGE ON SCHEMA probe TO PUBLIC;"
        ),
    )
    .await;

    let forged = format!("{}{}", &ka[..16], "0".repeat(64));
    let evil_path = "SET search_path = evil, pg_catalog, tenantry, public";
    exec(&app, evil_path).await;
    exec(&admin, evil_path).await;

    // The shadows are live for whoever resolves names with this path ...
    let row = app
        .query_one(
            "SELECT now() < '2001-01-01',
                    '00000000-0000-0000-0000-000000000001'::uuid = '00000000-0000-0000-0000-000000000002'::uuid,
                    sha256(convert_to($1, 'UTF8')) = pg_catalog.sha256(pg_catalog.convert_to($2, 'UTF8')),
                    probe.unpinned_now() < '2001-01-01',
                    (SELECT count(*) FROM tenants WHERE name = 'fake')",
            &[&forged, &ka],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "evil.now() shadows now()");
    assert!(row.get::<_, bool>(1), "evil.= shadows uuid equality");
    assert!(row.get::<_, bool>(2), "evil.sha256 shadows sha256");
    assert!(
        row.get::<_, bool>(3),
        "an unpinned definer function is fooled"
    );
    assert_eq!(row.get::<_, i64>(4), 1, "evil.tenants shadows tenants");

    // ... but not inside tenantry's functions.
    expect_sqlstate(
        app.execute("SELECT set_tenant_context($1)", &[&fake]).await,
        "TN404",
        "context for a tenant that exists only in evil.tenants",
    );
    set_context(&app, a).await;
    let visible: String = app
        .query_one("SELECT current_setting('app.visible_tenant_ids')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(visible, format!("{{{a}}}"));
    let verified: Option<Value> = app
        .query_one("SELECT verify_api_key($1)", &[&forged])
        .await
        .unwrap()
        .get(0);
    assert_eq!(verified, None, "a forged key must not verify");
    let validated: Option<Value> = app
        .query_one("SELECT validate_tenant_key($1)", &[&forged])
        .await
        .unwrap()
        .get(0);
    assert_eq!(validated, None);
    let foreign: Option<Value> = app
        .query_one("SELECT validate_tenant_key($1)", &[&kb])
        .await
        .unwrap()
        .get(0);
    assert_eq!(foreign, None, "b's key under a's context");
    expect_sqlstate(
        app.execute("SELECT share_resource($1, $2)", &[&rb, &c])
            .await,
        "TN404",
        "sharing b's resource from a",
    );
    expect_sqlstate(
        app.execute("SELECT share_resource($1, $2)", &[&ra, &fake])
            .await,
        "TN404",
        "sharing with a tenant that exists only in evil.tenants",
    );
    let metric_tenants: Vec<Uuid> = app
        .query("SELECT tenant_id FROM current_tenant_metrics()", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(metric_tenants, [a]);
    app.execute("SELECT revoke_api_key($1)", &[&ka_id])
        .await
        .unwrap();
    admin
        // Compared as text: evil.= would make a uuid comparison match every row.
        .execute(
            "UPDATE tenantry.tenants SET name = 'b2' WHERE tenant_id::text = $1",
            &[&b.to_string()],
        )
        .await
        .unwrap();
    let silo = create_silo(&admin, "silo").await;

    // Checked with a clean search path.
    assert!(
        truth(&su, "SELECT bool_and(revoked_at > now() - interval '1 hour') FROM tenantry.api_keys WHERE revoked_at IS NOT NULL").await,
        "revoked_at comes from the real clock"
    );
    assert!(
        truth(&su, "SELECT bool_and(updated_at > now() - interval '1 hour') FROM tenantry.tenants WHERE name = 'b2'").await,
        "the tenants trigger uses the real clock"
    );
    assert_eq!(
        count(&su, "SELECT count(*) FROM tenantry.shared_resources").await,
        0
    );
    let schemas = strings(
        &su,
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'",
    )
    .await;
    assert_eq!(schemas, [schema_of(silo)]);
    exec(&app, "SET search_path = tenantry, public").await;
    assert_eq!(verified_tenant(&app, &ka).await, None, "a's key is revoked");
    assert_eq!(verified_tenant(&app, &kb).await, Some(b.to_string()));
}

#[tokio::test]
async fn tenant_schemas_are_named_tenant_hex_owned_by_the_owner_and_forced_under_rls() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let silo = create_silo(&admin, "silo").await;
    let pooled = create_tenant(&admin, "pooled", None).await;
    admin
        .execute("SELECT create_tenant_schema($1)", &[&pooled])
        .await
        .unwrap();
    let server = tdb.server_client().await;
    let rows = server
        .query(
            "SELECT n.nspname::text, n.nspowner::regrole::text, c.relowner::regrole::text,
                    c.relrowsecurity, c.relforcerowsecurity,
                    (SELECT count(*) FROM pg_inherits i
                     WHERE i.inhrelid = c.oid AND i.inhparent = 'tenantry.resources'::regclass)
             FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'resources'
             WHERE n.nspname NOT IN ('tenantry') ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let mut expected = vec![schema_of(silo), schema_of(pooled)];
    expected.sort();
    assert_eq!(
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>(),
        expected
    );
    for r in &rows {
        let name: String = r.get(0);
        assert!(
            name.len() == 39
                && name.starts_with("tenant_")
                && name[7..]
                    .chars()
                    .all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase()),
            "{name}"
        );
        assert_eq!(r.get::<_, String>(1), "tenantry_owner");
        assert_eq!(r.get::<_, String>(2), "tenantry_owner");
        assert!(
            r.get::<_, bool>(3) && r.get::<_, bool>(4),
            "{name}: RLS forced"
        );
        assert_eq!(
            r.get::<_, i64>(5),
            1,
            "{name}: a partition of tenantry.resources"
        );
    }
}

// -----------------------------------------------------------------------------
// Flaw 10: setup_connection.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn setup_connection_routes_to_the_tenant_schema_without_changing_the_session_identity() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let silo = create_silo(&admin, "silo").await;
    let pooled = create_tenant(&admin, "pooled", None).await;
    create_resource(&app, silo, "in-silo").await;
    create_resource(&app, pooled, "in-pool").await;

    async fn identity(c: &Client) -> (String, String) {
        let r = c
            .query_one("SELECT session_user::text, current_user::text", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    }
    let who = ("tenantry_server".to_owned(), "tenantry_app".to_owned());

    // Without a tenant: refused, nothing changed.
    clear_context(&app).await;
    denied(&app, "SELECT setup_connection()", "TN403").await;
    assert_eq!(
        strings(&app, "SELECT current_setting('search_path')").await,
        ["tenantry, public"]
    );

    // A schema-isolated tenant: its schema first, identifiers quoted.
    set_context(&app, silo).await;
    exec(&app, "SELECT setup_connection()").await;
    assert_eq!(identity(&app).await, who);
    let expected_path: String = app
        .query_one(
            "SELECT quote_ident($1) || ', tenantry, public'",
            &[&schema_of(silo)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        strings(&app, "SELECT current_setting('search_path')").await,
        [expected_path]
    );
    assert_eq!(
        strings(&app, "SELECT current_schema()::text").await,
        [schema_of(silo)]
    );
    // Unqualified names reach the tenant's own table; the context survives.
    assert_eq!(
        strings(
            &app,
            "SELECT name || '@' || tableoid::regclass::text FROM resources"
        )
        .await,
        ["in-silo@resources"]
    );
    let ctx: Option<Uuid> = app
        .query_one("SELECT tenantry.current_tenant_id()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ctx, Some(silo));

    // A pooled tenant: back to the shared tables.
    set_context(&app, pooled).await;
    exec(&app, "SELECT setup_connection()").await;
    assert_eq!(identity(&app).await, who);
    assert_eq!(
        strings(&app, "SELECT current_setting('search_path')").await,
        ["tenantry, public"]
    );
    assert_eq!(resource_names(&app).await, ["in-pool"]);
}

// -----------------------------------------------------------------------------
// Audit log: append-only, each tenant reads its own.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn audit_log_is_append_only_and_each_tenant_reads_only_its_own_rows() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;
    for t in [a, b] {
        set_context(&app, t).await;
        app.execute("SELECT create_tenant_role($1, 'editor')", &[&t])
            .await
            .unwrap();
        exec(&app, "SELECT create_api_key('k')").await;
    }

    for (t, name) in [(a, "a"), (b, "b")] {
        set_context(&app, t).await;
        assert_eq!(
            uuids(&app, "SELECT DISTINCT tenant_id FROM audit_log").await,
            [t],
            "{name} reads only its own audit rows"
        );
        let actions = strings(&app, "SELECT action FROM audit_log").await;
        for expected in ["key.created", "role.created", "tenant.created"] {
            assert!(
                actions.contains(&expected.to_owned()),
                "{name}: {actions:?}"
            );
        }
    }
    assert_eq!(
        uuids(&admin, "SELECT DISTINCT tenant_id FROM audit_log").await,
        sorted(vec![a, b]),
        "administrators read every tenant's audit rows"
    );

    set_context(&app, a).await;
    let before = count(&admin, "SELECT count(*) FROM audit_log").await;
    for c in [&app, &admin] {
        denied(
            c,
            "UPDATE tenantry.audit_log SET action = 'forged'",
            "42501",
        )
        .await;
        denied(c, "DELETE FROM tenantry.audit_log", "42501").await;
        denied(c, "TRUNCATE tenantry.audit_log", "42501").await;
        denied(
            c,
            &format!(
                "INSERT INTO tenantry.audit_log (tenant_id, actor, action, target_type)
                 VALUES ('{b}', 'admin', 'forged', 'tenant')"
            ),
            "42501",
        )
        .await;
        denied(
            c,
            &format!("SELECT tenantry.write_audit('{b}', 'forged', 'tenant', NULL)"),
            "42501",
        )
        .await;
    }
    // Even the owning role cannot rewrite history (the superuser is used only
    // to become that role, which no login role can).
    let su = tdb.superuser_client().await;
    exec(&su, "SET ROLE tenantry_owner").await;
    denied(
        &su,
        "UPDATE tenantry.audit_log SET action = 'forged'",
        "TN403",
    )
    .await;
    denied(&su, "DELETE FROM tenantry.audit_log", "TN403").await;
    denied(&su, "TRUNCATE tenantry.audit_log", "TN403").await;
    assert_eq!(
        count(&admin, "SELECT count(*) FROM audit_log").await,
        before
    );
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM audit_log WHERE action = 'forged'"
        )
        .await,
        0
    );
}

// -----------------------------------------------------------------------------
// Schema per tenant: another tenant cannot reach a tenant's own table.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn a_tenant_schema_table_is_unreachable_from_another_tenants_context() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let s1 = create_silo(&admin, "silo-1").await;
    let s2 = create_silo(&admin, "silo-2").await;
    let p = create_tenant(&admin, "pooled", None).await;
    let r1 = create_resource(&app, s1, "s1-secret").await;
    create_resource(&app, s2, "s2-doc").await;
    let table = format!("\"{}\".resources", schema_of(s1));

    set_context(&app, s1).await;
    assert_eq!(
        strings(&app, &format!("SELECT name FROM {table}")).await,
        ["s1-secret"]
    );
    for (t, name) in [(s2, "another silo"), (p, "a pooled tenant")] {
        set_context(&app, t).await;
        assert_eq!(
            count(&app, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{name}"
        );
        assert_eq!(
            count(
                &app,
                &format!("SELECT count(*) FROM tenantry.resources WHERE tenant_id = '{s1}'")
            )
            .await,
            0,
            "{name} through tenantry.resources"
        );
        let n = app
            .execute(&format!("UPDATE {table} SET name = 'pwned'"), &[])
            .await
            .unwrap();
        assert_eq!(n, 0, "{name} updates");
        let n = app
            .execute(&format!("DELETE FROM {table}"), &[])
            .await
            .unwrap();
        assert_eq!(n, 0, "{name} deletes");
        // Planting a row: refused by the policy (or the partition constraint).
        for owner in [s1, t] {
            expect_sqlstate_any(
                app.batch_execute(&format!(
                    "INSERT INTO {table} (tenant_id, name) VALUES ('{owner}', 'planted')"
                ))
                .await,
                &["42501", "23514"],
            );
        }
        denied(
            &app,
            &format!("ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"),
            "42501",
        )
        .await;
        denied(
            &app,
            &format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"),
            "42501",
        )
        .await;
        denied(
            &app,
            &format!("DROP SCHEMA \"{}\" CASCADE", schema_of(s1)),
            "42501",
        )
        .await;
    }
    clear_context(&app).await;
    assert_eq!(
        count(&app, &format!("SELECT count(*) FROM {table}")).await,
        0
    );
    let server = tdb.server_client().await;
    denied(&server, &format!("SELECT count(*) FROM {table}"), "42501").await;

    set_context(&app, s1).await;
    let row = app
        .query_one(&format!("SELECT name FROM {table} WHERE id = $1"), &[&r1])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "s1-secret");
    assert_eq!(
        count(&app, &format!("SELECT count(*) FROM {table}")).await,
        1,
        "nothing planted"
    );
}

fn expect_sqlstate_any<T: Debug>(result: Result<T, Error>, codes: &[&str]) -> String {
    match result {
        Ok(v) => panic!("expected one of {codes:?}, but it succeeded: {v:?}"),
        Err(e) => {
            let got = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
            assert!(
                codes.contains(&got.as_str()),
                "expected {codes:?}, got {}",
                describe(&e)
            );
            got
        }
    }
}

// -----------------------------------------------------------------------------
// The transaction-local setting, set raw.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn a_raw_set_local_of_the_tenant_id_never_widens_visibility_beyond_that_tenant() {
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

    // The application role is trusted to choose the tenant (that is the
    // design: tenantry_app may set app.current_tenant_id to any tenant). What
    // it must not get is more than one tenant's subtree: the visible list
    // computed by the setter is honoured only while its first element is the
    // current tenant.
    exec(&app, "BEGIN").await;
    app.execute("SELECT set_tenant_context_local($1)", &[&root])
        .await
        .unwrap();
    assert_eq!(resource_names(&app).await, ["c", "r"]);
    exec(
        &app,
        &format!("SET LOCAL app.current_tenant_id = '{other}'"),
    )
    .await;
    assert_eq!(
        resource_names(&app).await,
        ["o"],
        "root's subtree must not follow"
    );
    assert_eq!(uuids(&app, "SELECT tenant_id FROM tenants").await, [other]);
    assert_eq!(
        uuids(&app, "SELECT unnest(visible_tenant_ids())").await,
        [other]
    );
    exec(
        &app,
        &format!("SET LOCAL app.current_tenant_id = '{child}'"),
    )
    .await;
    assert_eq!(
        resource_names(&app).await,
        ["c"],
        "not root's, though in root's list"
    );
    exec(&app, "COMMIT").await;
    assert!(resource_names(&app).await.is_empty());

    // Raw, without the setter: one tenant, and a list naming another tenant
    // first is ignored.
    exec(&app, "BEGIN").await;
    exec(
        &app,
        &format!("SET LOCAL app.current_tenant_id = '{child}'"),
    )
    .await;
    assert_eq!(resource_names(&app).await, ["c"]);
    exec(
        &app,
        &format!("SET LOCAL app.visible_tenant_ids = '{{{root},{child},{other}}}'"),
    )
    .await;
    assert_eq!(resource_names(&app).await, ["c"]);
    exec(&app, "COMMIT").await;
    assert!(resource_names(&app).await.is_empty());
}

// -----------------------------------------------------------------------------
// Flaw 5, the other half: definer functions stay narrow.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn security_definer_functions_are_executable_only_by_the_roles_they_serve() {
    let tdb = TestDatabase::new().await;
    let server = tdb.server_client().await;
    async fn executable_by(c: &Client, role: &str) -> Vec<String> {
        let mut v: Vec<String> = c
            .query(
                "SELECT p.proname::text FROM pg_proc p
                 WHERE p.prosecdef AND p.pronamespace = 'tenantry'::regnamespace
                   AND has_function_privilege($1::name, p.oid, 'EXECUTE')",
                &[&role],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        v.sort();
        v
    }
    assert_eq!(
        executable_by(&server, "tenantry_app").await,
        [
            "complete_tenant_context_local",
            "create_api_key",
            "create_child_tenant",
            "current_tenant_metrics",
            "key_permissions",
            "revoke_api_key",
            "rotate_api_key",
            "set_tenant_context",
            "set_tenant_context_local",
            "share_resource",
            "unshare_resource",
            "verify_api_key_hash",
        ]
    );
    assert_eq!(
        executable_by(&server, "tenantry_admin").await,
        [
            "create_tenant",
            "drop_request_log_partitions",
            "ensure_request_log_partitions",
            "refresh_tenant_metrics",
            "set_tenant_isolation",
        ]
    );
    for role in [
        "tenantry_server",
        "tenantry_logger",
        "tenantry_app_own",
        "tenantry_app_shared",
        "public",
    ] {
        assert!(
            executable_by(&server, role).await.is_empty(),
            "{role} can execute definer functions"
        );
    }

    // And calling the internal ones as the app fails.
    let admin = admin(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let app = app(&tdb).await;
    set_context(&app, a).await;
    for sql in [
        format!("SELECT tenantry.write_audit('{a}', 'x', 'y', NULL)"),
        format!("SELECT tenantry.tenant_context_values('{a}')"),
        format!("SELECT tenantry.issue_api_key('{a}', 'd', '{{}}', NULL, NULL, NULL, NULL)"),
        format!("SELECT tenantry.secure_tenant_partition('{a}')"),
        format!("SELECT tenantry.set_tenant_isolation('{a}', 'schema')"),
        "SELECT tenantry.create_tenant('x')".to_owned(),
        "SELECT tenantry.ensure_request_log_partitions(1)".to_owned(),
        "SELECT tenantry.drop_request_log_partitions('0')".to_owned(),
    ] {
        denied(&app, &sql, "42501").await;
    }
}
