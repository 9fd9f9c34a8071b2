//! Attack suite through raw SQL: every door of issue 5 tried as the server's login role (`tenantry_server`, then `SET ROLE tenantry_app`), never as a superuser; each case states what the attacker gets (nothing) and that the answer carries no existence oracle.

use serde_json::json;
use tenantry_db::testing::TestDatabase;
use tokio_postgres::{Client, Error};
use uuid::Uuid;

mod common;
use common::{count, create_silo, create_tenant, describe, exec, set_status, strings};

// -----------------------------------------------------------------------------
// Helpers: sessions as tenantry_server, switched to a granted role.
// -----------------------------------------------------------------------------

async fn login(tdb: &TestDatabase, role: &str) -> Client {
    let c = tdb.server_client().await;
    exec(&c, &format!("SET ROLE {role}")).await;
    c
}

/// The attacker: `tenantry_server` switched to `tenantry_app`.
async fn app(tdb: &TestDatabase) -> Client {
    login(tdb, "tenantry_app").await
}

/// Setup through the administrative role (still not a superuser).
async fn admin(tdb: &TestDatabase) -> Client {
    login(tdb, "tenantry_admin").await
}

/// (SQLSTATE, message, detail) of a statement that must fail.
async fn fails(c: &Client, sql: &str) -> (String, String, String) {
    match c.batch_execute(sql).await {
        Ok(()) => panic!("{sql}: expected an error, but it succeeded"),
        Err(e) => {
            let d = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{sql}: not a database error: {e}"));
            (
                d.code().code().to_owned(),
                d.message().to_owned(),
                d.detail().unwrap_or("").to_owned(),
            )
        }
    }
}

/// Like [`fails`], and the SQLSTATE must be `code`.
async fn denied(c: &Client, sql: &str, code: &str) -> String {
    let (got, message, _) = fails(c, sql).await;
    assert_eq!(got, code, "{sql}: expected {code}, got {got}: {message}");
    message
}

/// Replaces each of `ids` by `<id>`, so that answers about two ids compare.
fn scrub(text: &str, ids: &[Uuid]) -> String {
    ids.iter()
        .fold(text.to_owned(), |t, id| t.replace(&id.to_string(), "<id>"))
}

/// Runs `sql_for(foreign)` and `sql_for(missing)`: both must fail with the same
/// SQLSTATE, message and detail once the ids are scrubbed. Returns the SQLSTATE.
async fn same_failure(
    c: &Client,
    foreign: Uuid,
    missing: Uuid,
    sql_for: impl Fn(Uuid) -> String,
) -> String {
    let a = fails(c, &sql_for(foreign)).await;
    let b = fails(c, &sql_for(missing)).await;
    let ids = [foreign, missing];
    assert_eq!(
        (a.0.clone(), scrub(&a.1, &ids), scrub(&a.2, &ids)),
        (b.0, scrub(&b.1, &ids), scrub(&b.2, &ids)),
        "a foreign id and a missing id must fail alike"
    );
    a.0
}

async fn set_parent(admin: &Client, t: Uuid, parent: Option<Uuid>) -> Result<u64, Error> {
    admin
        .execute(
            "UPDATE tenantry.tenants SET parent_id = $1 WHERE tenant_id = $2",
            &[&parent, &t],
        )
        .await
}

/// Opens a transaction with the server's transaction-local context for `t`.
async fn begin_as(c: &Client, t: Uuid) {
    exec(
        c,
        &format!("BEGIN; SELECT tenantry.set_tenant_context_local('{t}')"),
    )
    .await;
}

async fn commit(c: &Client) {
    exec(c, "COMMIT").await;
}

async fn rollback(c: &Client) {
    exec(c, "ROLLBACK").await;
}

/// A resource of `t`, created in its own transaction; returns its id.
async fn create_resource(c: &Client, t: Uuid, name: &str) -> Uuid {
    begin_as(c, t).await;
    let id = c
        .query_one(
            "SELECT tenantry.create_resource($1)",
            &[&json!({ "name": name })],
        )
        .await
        .unwrap_or_else(|e| panic!("create_resource({name}): {}", describe(&e)))
        .get(0);
    commit(c).await;
    id
}

/// Resource names `t` reads in one transaction.
async fn names_seen_by(c: &Client, t: Uuid) -> Vec<String> {
    begin_as(c, t).await;
    let v = strings(c, "SELECT name FROM tenantry.resources").await;
    commit(c).await;
    v
}

async fn share(c: &Client, owner: Uuid, resource: Uuid, target: Uuid) {
    begin_as(c, owner).await;
    exec(
        c,
        &format!("SELECT tenantry.share_resource('{resource}', '{target}')"),
    )
    .await;
    commit(c).await;
}

/// Two unrelated tenants, each with one resource, and the attacker's session.
struct World {
    tdb: TestDatabase,
    admin: Client,
    app: Client,
    a: Uuid,
    b: Uuid,
    ra: Uuid,
    rb: Uuid,
}

async fn world() -> World {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "tenant-a", None).await;
    let b = create_tenant(&admin, "tenant-b", None).await;
    let ra = create_resource(&app, a, "a-doc").await;
    let rb = create_resource(&app, b, "b-secret").await;
    World {
        tdb,
        admin,
        app,
        a,
        b,
        ra,
        rb,
    }
}

/// A role of `t` with the given name; returns its id.
async fn create_role(c: &Client, t: Uuid, name: &str) -> Uuid {
    begin_as(c, t).await;
    let id = c
        .query_one(
            "SELECT tenantry.create_tenant_role($1::uuid, $2::text)",
            &[&t, &name],
        )
        .await
        .unwrap_or_else(|e| panic!("create_tenant_role({name}): {}", describe(&e)))
        .get(0);
    commit(c).await;
    id
}

/// A member of `t`; returns its user id.
async fn add_member(c: &Client, t: Uuid, email: &str) -> Uuid {
    begin_as(c, t).await;
    let id = c
        .query_one(
            "INSERT INTO tenantry.tenant_members (email) VALUES ($1) RETURNING user_id",
            &[&email],
        )
        .await
        .unwrap_or_else(|e| panic!("member {email}: {}", describe(&e)))
        .get(0);
    commit(c).await;
    id
}

/// An API key of `t` (unbound) with optional extra metadata; returns the key.
async fn create_key(c: &Client, t: Uuid, metadata: serde_json::Value) -> String {
    begin_as(c, t).await;
    let key = c
        .query_one(
            "SELECT tenantry.create_api_key('attack', $1::jsonb)",
            &[&metadata],
        )
        .await
        .unwrap_or_else(|e| panic!("create_api_key: {}", describe(&e)))
        .get(0);
    commit(c).await;
    key
}

async fn key_id_of(c: &Client, t: Uuid, key: &str) -> Uuid {
    begin_as(c, t).await;
    let id = c
        .query_one(
            "SELECT key_id FROM tenantry.api_keys WHERE prefix = substr($1, 4, 12)",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    commit(c).await;
    id
}

/// `verify_api_key(key)->>'tenant_id'` without any context.
async fn verified_tenant(c: &Client, key: &str) -> Option<String> {
    c.query_one("SELECT tenantry.verify_api_key($1)->>'tenant_id'", &[&key])
        .await
        .unwrap()
        .get(0)
}

async fn validated_tenant(c: &Client, key: &str) -> Option<String> {
    c.query_one(
        "SELECT tenantry.validate_tenant_key($1)->>'tenant_id'",
        &[&key],
    )
    .await
    .unwrap()
    .get(0)
}

// -----------------------------------------------------------------------------
// Object access
// -----------------------------------------------------------------------------

#[tokio::test]
async fn a_foreign_resource_id_selects_zero_rows_exactly_like_a_missing_id() {
    let w = world().await;
    let missing = Uuid::new_v4();
    begin_as(&w.app, w.a).await;
    for id in [w.rb, missing] {
        let rows = w
            .app
            .query("SELECT * FROM tenantry.resources WHERE id = $1", &[&id])
            .await
            .unwrap();
        assert!(rows.is_empty(), "{id}: {} rows", rows.len());
        let rows = w
            .app
            .query(
                "SELECT * FROM tenantry.resources WHERE tenant_id = $1 AND id = $2",
                &[&w.b, &id],
            )
            .await
            .unwrap();
        assert!(rows.is_empty());
    }
    // Its own row is there, so the query itself works.
    assert_eq!(
        count(
            &w.app,
            &format!(
                "SELECT count(*) FROM tenantry.resources WHERE id = '{}'",
                w.ra
            )
        )
        .await,
        1
    );
    commit(&w.app).await;
}

#[tokio::test]
async fn update_and_delete_of_a_foreign_resource_change_zero_rows_and_leave_it_intact() {
    let w = world().await;
    let missing = Uuid::new_v4();
    begin_as(&w.app, w.a).await;
    for id in [w.rb, missing] {
        let n = w
            .app
            .execute(
                "UPDATE tenantry.resources SET name = 'pwned', data = '{\"x\":1}' WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(n, 0, "update of {id}");
        let n = w
            .app
            .execute("DELETE FROM tenantry.resources WHERE id = $1", &[&id])
            .await
            .unwrap();
        assert_eq!(n, 0, "delete of {id}");
    }
    // A blanket update or delete touches only the caller's own row.
    let n = w
        .app
        .execute("UPDATE tenantry.resources SET name = name", &[])
        .await
        .unwrap();
    assert_eq!(n, 1);
    commit(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

#[tokio::test]
async fn sharing_or_unsharing_a_foreign_resource_fails_with_the_same_error_as_a_missing_one() {
    let w = world().await;
    let c = create_tenant(&w.admin, "tenant-c", None).await;
    let missing = Uuid::new_v4();
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for f in ["share_resource", "unshare_resource"] {
        let code = same_failure(&w.app, w.rb, missing, |id| {
            format!("ROLLBACK TO SAVEPOINT s; SELECT tenantry.{f}('{id}', '{c}')")
        })
        .await;
        assert_eq!(code, "TN404", "{f}");
    }
    rollback(&w.app).await;
    begin_as(&w.app, c).await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        0,
        "nothing of b's reached c"
    );
    commit(&w.app).await;
}

/// Every table and view a tenant role can read, with the column naming the owning tenant.
const TENANT_RELATIONS: &[(&str, &str)] = &[
    ("tenantry.resources", "tenant_id"),
    ("tenantry.shared_resources", "tenant_id"),
    ("tenantry.tenants", "tenant_id"),
    ("tenantry.tenant_hierarchy", "child_id"),
    ("tenantry.tenant_members", "tenant_id"),
    ("tenantry.roles", "tenant_id"),
    ("tenantry.role_permissions", "tenant_id"),
    ("tenantry.member_roles", "tenant_id"),
    ("tenantry.api_keys", "tenant_id"),
    ("tenantry.audit_log", "tenant_id"),
    ("tenantry.request_log", "tenant_id"),
    ("tenantry.tenant_resource_usage", "tenant_id"),
    ("tenantry.current_tenant_metrics()", "tenant_id"),
];

#[tokio::test]
async fn no_tenant_table_view_or_function_yields_a_row_of_another_tenant() {
    let w = world().await;
    // Give b a row in every table.
    let member = add_member(&w.app, w.b, "b@example.com").await;
    let role = create_role(&w.app, w.b, "b-role").await;
    begin_as(&w.app, w.b).await;
    exec(
        &w.app,
        &format!(
            "SELECT tenantry.assign_tenant_permission('{role}', 'resources.read');
             SELECT tenantry.assign_member_role('{member}', '{role}');
             INSERT INTO tenantry.request_log (tenant_id, route, status) VALUES ('{}', '/x', 200);",
            w.b
        ),
    )
    .await;
    commit(&w.app).await;
    create_key(&w.app, w.b, json!({})).await;
    share(&w.app, w.b, w.rb, create_tenant(&w.admin, "c", None).await).await;
    exec(&w.admin, "SELECT tenantry.refresh_tenant_metrics()").await;

    // Every relation holds b's rows (checked as b) and none of them reaches a.
    for (relation, column) in TENANT_RELATIONS {
        let sql = format!("SELECT count(*) FROM {relation} WHERE {column} = '{}'", w.b);
        begin_as(&w.app, w.b).await;
        let own = count(&w.app, &sql).await;
        commit(&w.app).await;
        assert!(own > 0, "{relation}: b should see its own rows");
        begin_as(&w.app, w.a).await;
        assert_eq!(
            count(&w.app, &sql).await,
            0,
            "{relation} leaked b's rows to a"
        );
        let all = format!(
            "SELECT count(*) FROM {relation} WHERE {column} IS DISTINCT FROM '{}'",
            w.a
        );
        assert_eq!(
            count(&w.app, &all).await,
            0,
            "{relation}: a sees only itself"
        );
        commit(&w.app).await;
    }
}

// -----------------------------------------------------------------------------
// Writes
// -----------------------------------------------------------------------------

#[tokio::test]
async fn inserting_a_resource_for_another_tenant_fails_alike_for_an_existing_and_a_missing_tenant()
{
    let w = world().await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    let code = same_failure(&w.app, w.b, Uuid::new_v4(), |t| {
        format!(
            "ROLLBACK TO SAVEPOINT s; INSERT INTO tenantry.resources (tenant_id, name) VALUES ('{t}', 'planted')"
        )
    })
    .await;
    assert_eq!(
        code, "42501",
        "row-level security refuses before any foreign-key check"
    );
    rollback(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

#[tokio::test]
async fn moving_a_resource_to_another_tenant_by_update_is_refused_for_any_target() {
    let w = world().await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    let code = same_failure(&w.app, w.b, Uuid::new_v4(), |t| {
        format!(
            "ROLLBACK TO SAVEPOINT s; UPDATE tenantry.resources SET tenant_id = '{t}' WHERE id = '{}'",
            w.ra
        )
    })
    .await;
    assert_eq!(code, "42501", "tenant_id is not an updatable column");
    // Moving by delete and re-insert keeps the row in the caller's tenant.
    exec(&w.app, "ROLLBACK TO SAVEPOINT s").await;
    denied(
        &w.app,
        &format!(
            "WITH gone AS (DELETE FROM tenantry.resources WHERE id = '{}' RETURNING name)
             INSERT INTO tenantry.resources (tenant_id, name) SELECT '{}', name FROM gone",
            w.ra, w.b
        ),
        "42501",
    )
    .await;
    rollback(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

#[tokio::test]
async fn insert_on_conflict_with_a_foreign_resource_id_is_refused_before_any_conflict_check() {
    let w = world().await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for owner in [w.a, w.b] {
        let code = same_failure(&w.app, w.rb, Uuid::new_v4(), |id| {
            format!(
                "ROLLBACK TO SAVEPOINT s;
                 INSERT INTO tenantry.resources (tenant_id, id, name) VALUES ('{owner}', '{id}', 'x')
                 ON CONFLICT (tenant_id, id) DO UPDATE SET name = 'pwned'"
            )
        })
        .await;
        assert_eq!(
            code, "42501",
            "ids are generated by the database, never chosen"
        );
        let code = same_failure(&w.app, w.rb, Uuid::new_v4(), |id| {
            format!(
                "ROLLBACK TO SAVEPOINT s;
                 INSERT INTO tenantry.resources (tenant_id, id, name) VALUES ('{owner}', '{id}', 'x')
                 ON CONFLICT DO NOTHING"
            )
        })
        .await;
        assert_eq!(code, "42501");
    }
    rollback(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

#[tokio::test]
async fn insert_on_conflict_against_a_foreign_unique_role_name_is_refused_without_an_oracle() {
    let w = world().await;
    create_role(&w.app, w.b, "b-admins").await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    // The same statement for a name b has and a name nobody has: same answer.
    let mut answers = Vec::new();
    for name in ["b-admins", "no-such-role"] {
        answers.push(
            fails(
                &w.app,
                &format!(
                    "ROLLBACK TO SAVEPOINT s;
                     INSERT INTO tenantry.roles (tenant_id, name) VALUES ('{}', '{name}')
                     ON CONFLICT (tenant_id, name) DO UPDATE SET description = 'pwned'",
                    w.b
                ),
            )
            .await,
        );
    }
    assert_eq!(answers[0].0, "42501");
    assert_eq!(answers[0], answers[1]);
    rollback(&w.app).await;
    begin_as(&w.app, w.b).await;
    assert_eq!(
        strings(&w.app, "SELECT description FROM tenantry.roles").await,
        [""]
    );
    commit(&w.app).await;
}

#[tokio::test]
async fn a_foreign_key_to_another_tenants_role_or_member_fails_exactly_like_a_missing_one() {
    let w = world().await;
    let my_member = add_member(&w.app, w.a, "a@example.com").await;
    let my_role = create_role(&w.app, w.a, "a-role").await;
    let b_member = add_member(&w.app, w.b, "b@example.com").await;
    let b_role = create_role(&w.app, w.b, "b-role").await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    let code = same_failure(&w.app, b_role, Uuid::new_v4(), |role| {
        format!(
            "ROLLBACK TO SAVEPOINT s;
             INSERT INTO tenantry.member_roles (tenant_id, user_id, role_id) VALUES ('{}', '{my_member}', '{role}')",
            w.a
        )
    })
    .await;
    assert_eq!(code, "23503");
    let code = same_failure(&w.app, b_member, Uuid::new_v4(), |user| {
        format!(
            "ROLLBACK TO SAVEPOINT s;
             INSERT INTO tenantry.member_roles (tenant_id, user_id, role_id) VALUES ('{}', '{user}', '{my_role}')",
            w.a
        )
    })
    .await;
    assert_eq!(code, "23503");
    // Through the functions: the same not-found for a foreign and a missing id.
    for sql in [
        "SELECT tenantry.assign_member_role('{my_member}', '{id}')",
        "SELECT tenantry.assign_tenant_permission('{id}', 'resources.read')",
        "SELECT tenantry.create_api_key('k', jsonb_build_object('role_id', '{id}'::uuid))",
    ] {
        let sql = sql.replace("{my_member}", &my_member.to_string());
        let code = same_failure(&w.app, b_role, Uuid::new_v4(), |id| {
            format!(
                "ROLLBACK TO SAVEPOINT s; {}",
                sql.replace("{id}", &id.to_string())
            )
        })
        .await;
        assert_eq!(code, "TN404", "{sql}");
    }
    let code = same_failure(&w.app, b_member, Uuid::new_v4(), |id| {
        format!(
            "ROLLBACK TO SAVEPOINT s; SELECT tenantry.create_api_key('k', jsonb_build_object('user_id', '{id}'::uuid))"
        )
    })
    .await;
    assert_eq!(code, "TN404");
    rollback(&w.app).await;
    begin_as(&w.app, w.b).await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.role_permissions").await,
        0
    );
    commit(&w.app).await;
}

#[tokio::test]
async fn unique_names_and_emails_are_per_tenant_so_probing_for_foreign_ones_learns_nothing() {
    let w = world().await;
    create_role(&w.app, w.b, "finance").await;
    add_member(&w.app, w.b, "ceo@b.example").await;
    // a creates the very same names: accepted, as for names nobody uses.
    create_role(&w.app, w.a, "finance").await;
    create_role(&w.app, w.a, "never-used").await;
    add_member(&w.app, w.a, "ceo@b.example").await;
    add_member(&w.app, w.a, "nobody@b.example").await;
    // Only a's own duplicates conflict.
    begin_as(&w.app, w.a).await;
    let (code, _, _) = fails(
        &w.app,
        &format!("SELECT tenantry.create_tenant_role('{}', 'finance')", w.a),
    )
    .await;
    assert_eq!(code, "TN409");
    rollback(&w.app).await;
    begin_as(&w.app, w.a).await;
    let (code, _, detail) = fails(
        &w.app,
        "INSERT INTO tenantry.tenant_members (email) VALUES ('CEO@b.example')",
    )
    .await;
    assert_eq!(code, "23505");
    assert!(
        !detail.contains(&w.b.to_string()),
        "a conflict names no other tenant: {detail}"
    );
    rollback(&w.app).await;
}

#[tokio::test]
async fn request_log_audit_and_database_maintained_columns_cannot_be_forged() {
    let w = world().await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    let code = same_failure(&w.app, w.b, Uuid::new_v4(), |t| {
        format!(
            "ROLLBACK TO SAVEPOINT s;
             INSERT INTO tenantry.request_log (tenant_id, route, status) VALUES ('{t}', '/forged', 200)"
        )
    })
    .await;
    assert_eq!(code, "42501");
    for sql in [
        format!(
            "INSERT INTO tenantry.audit_log (tenant_id, action) VALUES ('{}', 'x')",
            w.b
        ),
        format!("UPDATE tenantry.resources SET shared_with = '{{{}}}'", w.b),
        format!(
            "INSERT INTO tenantry.resources (tenant_id, name, created_by) VALUES ('{}', 'n', '{}')",
            w.a,
            Uuid::new_v4()
        ),
        format!(
            "INSERT INTO tenantry.shared_resources (tenant_id, resource_id, shared_with) VALUES ('{}', '{}', '{}')",
            w.b, w.rb, w.a
        ),
        format!(
            "UPDATE tenantry.api_keys SET revoked_at = NULL WHERE tenant_id = '{}'",
            w.a
        ),
    ] {
        denied(&w.app, &format!("ROLLBACK TO SAVEPOINT s; {sql}"), "42501").await;
    }
    rollback(&w.app).await;
    begin_as(&w.app, w.b).await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.request_log").await,
        0
    );
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.shared_resources").await,
        0
    );
    commit(&w.app).await;
}

// -----------------------------------------------------------------------------
// Context
// -----------------------------------------------------------------------------

#[tokio::test]
async fn without_context_reads_return_zero_rows_without_error_and_writes_are_refused() {
    let w = world().await;
    for (relation, _) in TENANT_RELATIONS {
        assert_eq!(
            count(&w.app, &format!("SELECT count(*) FROM {relation}")).await,
            0,
            "{relation}"
        );
    }
    denied(
        &w.app,
        "SELECT tenantry.create_resource('{\"name\":\"x\"}')",
        "TN403",
    )
    .await;
    denied(
        &w.app,
        "INSERT INTO tenantry.resources (name) VALUES ('no tenant')",
        "42501",
    )
    .await;
    denied(
        &w.app,
        &format!("SELECT tenantry.share_resource('{}', '{}')", w.rb, w.a),
        "TN403",
    )
    .await;
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
}

#[tokio::test]
async fn an_empty_tenant_setting_sees_nothing_and_a_malformed_one_fails_closed() {
    let w = world().await;
    exec(&w.app, "BEGIN; SET LOCAL app.current_tenant_id = ''").await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        0
    );
    commit(&w.app).await;
    for bad in [
        "not-a-uuid",
        " ",
        "00000000-0000-0000-0000-00000000000g",
        "' OR true --",
    ] {
        exec(&w.app, "BEGIN").await;
        w.app
            .execute(
                "SELECT set_config('app.current_tenant_id', $1, true)",
                &[&bad],
            )
            .await
            .unwrap();
        let r = w
            .app
            .query("SELECT name FROM tenantry.resources", &[])
            .await;
        match r {
            Ok(rows) => assert!(rows.is_empty(), "{bad:?} gave {} rows", rows.len()),
            Err(e) => assert_eq!(
                e.code().map(|c| c.code()),
                Some("22P02"),
                "{bad:?}: {}",
                describe(&e)
            ),
        }
        rollback(&w.app).await;
    }
    // A forged visible list with a malformed element fails closed as well.
    exec(
        &w.app,
        &format!(
            "BEGIN; SET LOCAL app.current_tenant_id = '{}'; SET LOCAL app.visible_tenant_ids = '{{{},garbage}}'",
            w.a, w.a
        ),
    )
    .await;
    let (code, _, _) = fails(&w.app, "SELECT count(*) FROM tenantry.resources").await;
    assert_eq!(code, "22P02");
    rollback(&w.app).await;
}

#[tokio::test]
async fn set_tenant_context_local_refuses_null_unknown_and_deleted_tenants() {
    let w = world().await;
    let gone = create_tenant(&w.admin, "gone", None).await;
    create_resource(&w.app, gone, "gone-doc").await;
    set_status(&w.admin, gone, "deleted").await;
    for (tid, code) in [
        ("NULL".to_owned(), "TN422"),
        (format!("'{}'", Uuid::new_v4()), "TN404"),
        (format!("'{gone}'"), "TN403"),
    ] {
        exec(&w.app, "BEGIN").await;
        denied(
            &w.app,
            &format!("SELECT tenantry.set_tenant_context_local({tid})"),
            code,
        )
        .await;
        rollback(&w.app).await;
        if tid != "NULL" {
            // The session-scope setter refuses them alike.
            denied(
                &w.app,
                &format!("SELECT tenantry.set_tenant_context({tid})"),
                code,
            )
            .await;
        }
    }
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        0,
        "no context was left behind"
    );
}

#[tokio::test]
async fn a_session_context_left_on_a_pooled_connection_is_replaced_by_the_next_local_context() {
    let w = world().await;
    let user = Uuid::new_v4();
    // A previous borrower left b's session context, a member id and a forged list.
    exec(
        &w.app,
        &format!(
            "SELECT tenantry.set_tenant_context('{}');
             SELECT set_config('app.current_user_id', '{user}', false);
             SELECT set_config('app.actor', 'user:forged', false);",
            w.b
        ),
    )
    .await;
    assert_eq!(
        strings(&w.app, "SELECT name FROM tenantry.resources").await,
        ["b-secret"],
        "the session context is live (the documented pooler hazard)"
    );
    // The server's next transaction on this connection: a's context only.
    begin_as(&w.app, w.a).await;
    assert_eq!(
        strings(&w.app, "SELECT name FROM tenantry.resources").await,
        ["a-doc"]
    );
    let row = w
        .app
        .query_one(
            "SELECT tenantry.current_user_id(), tenantry.current_actor(), tenantry.visible_tenant_ids()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Uuid>>(0), None, "no inherited member");
    assert!(
        !row.get::<_, String>(1).contains("forged"),
        "no inherited actor"
    );
    assert_eq!(row.get::<_, Vec<Uuid>>(2), [w.a]);
    let id: Uuid = w
        .app
        .query_one("SELECT tenantry.create_resource('{\"name\":\"new\"}')", &[])
        .await
        .unwrap()
        .get(0);
    let created_by: Option<Uuid> = w
        .app
        .query_one(
            "SELECT created_by FROM tenantry.resources WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created_by, None);
    commit(&w.app).await;
    // Clearing the session context (what a pool's reset should do) leaves nothing.
    exec(&w.app, "SELECT tenantry.set_tenant_context(NULL)").await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        0
    );
}

#[tokio::test]
async fn reset_all_and_discard_all_leave_no_tenant_context_and_no_tenant_role() {
    let w = world().await;
    exec(
        &w.app,
        &format!("SELECT tenantry.set_tenant_context('{}')", w.a),
    )
    .await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        1
    );
    // RESET ALL drops the context (the role is not a RESET ALL setting: it stays tenantry_app).
    exec(&w.app, "RESET ALL").await;
    assert_eq!(
        strings(&w.app, "SELECT current_user::text").await,
        ["tenantry_app"]
    );
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        0
    );
    // Inside a transaction: RESET ALL drops the local context too.
    begin_as(&w.app, w.a).await;
    exec(
        &w.app,
        "SET LOCAL ROLE tenantry_app; RESET ALL; SET LOCAL ROLE tenantry_app",
    )
    .await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        0
    );
    commit(&w.app).await;
    // DISCARD ALL drops the context and the role: back to the bare login, which reads nothing.
    exec(
        &w.app,
        &format!("SELECT tenantry.set_tenant_context('{}')", w.b),
    )
    .await;
    exec(&w.app, "DISCARD ALL").await;
    assert_eq!(
        strings(&w.app, "SELECT current_user::text").await,
        ["tenantry_server"]
    );
    denied(&w.app, "SELECT count(*) FROM tenantry.resources", "42501").await;
    exec(&w.app, "SET ROLE tenantry_app").await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        0
    );
    // And it cannot run inside a transaction at all.
    begin_as(&w.app, w.a).await;
    denied(&w.app, "DISCARD ALL", "25001").await;
    rollback(&w.app).await;
}

#[tokio::test]
async fn set_role_from_tenantry_app_to_the_owner_a_superuser_or_a_builtin_role_is_refused() {
    let w = world().await;
    let superuser: String = w
        .tdb
        .superuser_client()
        .await
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    for role in [
        "tenantry_owner".to_owned(),
        format!("\"{superuser}\""),
        "pg_read_all_data".to_owned(),
        "pg_write_all_data".to_owned(),
        "pg_execute_server_program".to_owned(),
        "pg_read_server_files".to_owned(),
        "pg_signal_backend".to_owned(),
    ] {
        denied(&w.app, &format!("SET ROLE {role}"), "42501").await;
        exec(&w.app, "BEGIN").await;
        denied(&w.app, &format!("SET LOCAL ROLE {role}"), "42501").await;
        rollback(&w.app).await;
    }
    denied(
        &w.app,
        &format!("SET SESSION AUTHORIZATION \"{superuser}\""),
        "42501",
    )
    .await;
    for sql in [
        "ALTER ROLE tenantry_app BYPASSRLS",
        "ALTER ROLE tenantry_server SUPERUSER",
        "GRANT tenantry_owner TO tenantry_app",
        "CREATE ROLE sneaky LOGIN",
        "ALTER TABLE tenantry.resources NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE tenantry.resources_pooled DISABLE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON tenantry.resources",
    ] {
        let (code, message, _) = fails(&w.app, sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    // Still tenantry_app, still one tenant at a time.
    assert_eq!(
        strings(&w.app, "SELECT current_user::text").await,
        ["tenantry_app"]
    );
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
}

#[tokio::test]
async fn switching_to_the_other_granted_roles_never_reaches_a_resource() {
    let w = world().await;
    for role in ["tenantry_admin", "tenantry_logger", "tenantry_server"] {
        let c = w.tdb.server_client().await;
        if role != "tenantry_server" {
            exec(&c, &format!("SET ROLE {role}")).await;
        }
        exec(
            &c,
            &format!(
                "SELECT set_config('app.current_tenant_id', '{}', false)",
                w.b
            ),
        )
        .await;
        for relation in [
            "tenantry.resources",
            "tenantry.resources_pooled",
            "tenantry.tenant_metrics",
            "tenantry.api_keys",
        ] {
            let (code, message, _) = fails(&c, &format!("SELECT * FROM {relation} LIMIT 1")).await;
            assert_eq!(code, "42501", "{role} on {relation}: {message}");
        }
    }
}

#[tokio::test]
async fn definer_functions_refuse_keys_and_tenants_outside_the_callers_subtree_alike() {
    let w = world().await;
    let key_b = create_key(&w.app, w.b, json!({})).await;
    let key_b_id = key_id_of(&w.app, w.b, &key_b).await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for f in [
        "SELECT tenantry.revoke_api_key('{id}')",
        "SELECT tenantry.rotate_api_key('{id}', interval '0')",
        "SELECT tenantry.create_api_key('k', jsonb_build_object('tenant_id', '{id}'::uuid))",
        "SELECT tenantry.create_tenant_api_key('{id}', 'k')",
        "SELECT tenantry.create_tenant_role('{id}', 'r')",
    ] {
        let foreign = if f.contains("tenant") { w.b } else { key_b_id };
        let code = same_failure(&w.app, foreign, Uuid::new_v4(), |id| {
            format!(
                "ROLLBACK TO SAVEPOINT s; {}",
                f.replace("{id}", &id.to_string())
            )
        })
        .await;
        assert!(code == "TN404" || code == "TN403", "{f}: {code}");
    }
    exec(&w.app, "ROLLBACK TO SAVEPOINT s").await;
    let perms: Option<Vec<String>> = w
        .app
        .query_one("SELECT tenantry.key_permissions($1)", &[&key_b_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(perms, None);
    let metrics = count(
        &w.app,
        &format!(
            "SELECT count(*) FROM tenantry.current_tenant_metrics('-infinity', 'infinity') WHERE tenant_id = '{}'",
            w.b
        ),
    )
    .await;
    assert_eq!(metrics, 0);
    rollback(&w.app).await;
    assert_eq!(
        verified_tenant(&w.app, &key_b).await,
        Some(w.b.to_string()),
        "b's key still works"
    );
}

#[tokio::test]
async fn internal_definer_and_admin_functions_are_not_executable_by_tenantry_app() {
    let w = world().await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for sql in [
        format!("SELECT * FROM tenantry.tenant_context_values('{}')", w.b),
        format!(
            "SELECT * FROM tenantry.issue_api_key('{}', 'x', '{{}}', NULL, NULL, NULL, NULL)",
            w.b
        ),
        format!(
            "SELECT tenantry.identity_permissions('{}', NULL, NULL)",
            w.b
        ),
        format!("SELECT tenantry.set_tenant_isolation('{}', 'schema')", w.b),
        format!("SELECT tenantry.create_tenant_schema('{}')", w.b),
        format!("SELECT tenantry.secure_tenant_partition('{}')", w.b),
        format!("SELECT tenantry.create_tenant('evil', '{}')", w.b),
        "SELECT tenantry.refresh_tenant_metrics()".to_owned(),
        "SELECT tenantry.ensure_request_log_partitions(1)".to_owned(),
        "SELECT tenantry.drop_request_log_partitions(interval '0')".to_owned(),
        format!(
            "SELECT tenantry.write_audit('{}', 'x', 'y', 'z', '{{}}')",
            w.b
        ),
    ] {
        let (code, message, _) = fails(&w.app, &format!("ROLLBACK TO SAVEPOINT s; {sql}")).await;
        assert!(
            code == "42501" || code == "42883",
            "{sql}: expected a refusal, got {code}: {message}"
        );
    }
    rollback(&w.app).await;
    let su = w.tdb.superuser_client().await;
    let isolation: String = su
        .query_one(
            "SELECT isolation FROM tenantry.tenants WHERE tenant_id = $1",
            &[&w.b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(isolation, "shared");
}

#[tokio::test]
async fn injection_strings_in_function_arguments_are_stored_as_data() {
    let w = world().await;
    let evil = "x'; SET LOCAL app.current_tenant_id = 'B'; --\"; DROP TABLE tenantry.resources; --";
    let evil = evil.replace('B', &w.b.to_string());
    exec(&w.app, "BEGIN").await;
    w.app
        .execute(
            "SELECT tenantry.set_tenant_context_local($1, NULL, $2)",
            &[&w.a, &evil],
        )
        .await
        .unwrap();
    assert_eq!(
        strings(&w.app, "SELECT tenantry.current_tenant_id()::text").await,
        [w.a.to_string()]
    );
    assert_eq!(
        strings(&w.app, "SELECT tenantry.current_actor()").await,
        std::slice::from_ref(&evil)
    );
    w.app
        .execute("SELECT tenantry.set_actor_local($1)", &[&evil])
        .await
        .unwrap();
    let id: Uuid = w
        .app
        .query_one(
            "SELECT tenantry.create_resource(jsonb_build_object('name', $1::text))",
            &[&evil],
        )
        .await
        .unwrap()
        .get(0);
    let child: Uuid = w
        .app
        .query_one("SELECT tenantry.create_child_tenant($1)", &[&evil])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        strings(&w.app, "SELECT tenantry.current_tenant_id()::text").await,
        [w.a.to_string()]
    );
    commit(&w.app).await;
    begin_as(&w.app, w.a).await;
    let row = w
        .app
        .query_one(
            "SELECT r.name, t.name FROM tenantry.resources r, tenantry.tenants t WHERE r.id = $1 AND t.tenant_id = $2",
            &[&id, &child],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), evil);
    assert_eq!(row.get::<_, String>(1), evil);
    commit(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

#[tokio::test]
async fn pg_temp_objects_shadowing_tenantry_names_change_nothing() {
    let w = world().await;
    // The attacker plants look-alikes where an unpinned search_path would find them.
    exec(
        &w.app,
        &format!(
            "CREATE FUNCTION pg_temp.current_tenant_id() RETURNS uuid LANGUAGE sql AS $$ SELECT '{b}'::uuid $$;
             CREATE FUNCTION pg_temp.visible_tenant_ids() RETURNS uuid[] LANGUAGE sql AS $$ SELECT ARRAY['{b}'::uuid] $$;
             CREATE TEMP TABLE resources (tenant_id uuid, id uuid, name text, shared_with uuid[]);
             INSERT INTO pg_temp.resources VALUES ('{a}', '{rb}', 'fake', '{{}}');
             CREATE TEMP TABLE tenants (tenant_id uuid, status text, isolation text);
             INSERT INTO pg_temp.tenants VALUES ('{b}', 'active', 'shared');
             CREATE TEMP TABLE tenant_hierarchy (parent_id uuid, child_id uuid, depth int);
             INSERT INTO pg_temp.tenant_hierarchy VALUES ('{a}', '{b}', 1);
             SET search_path = pg_temp, tenantry, public, pg_catalog;",
            a = w.a,
            b = w.b,
            rb = w.rb
        ),
    )
    .await;
    let c = create_tenant(&w.admin, "c", None).await;
    begin_as(&w.app, w.a).await;
    // Unqualified calls never resolve to pg_temp functions.
    assert_eq!(
        strings(&w.app, "SELECT current_tenant_id()::text").await,
        [w.a.to_string()]
    );
    assert_eq!(
        strings(&w.app, "SELECT unnest(visible_tenant_ids())::text").await,
        [w.a.to_string()]
    );
    assert_eq!(
        strings(&w.app, "SELECT name FROM tenantry.resources").await,
        ["a-doc"]
    );
    // The definer functions read the real tables, not the planted ones.
    exec(&w.app, "SAVEPOINT s").await;
    denied(
        &w.app,
        &format!("SELECT tenantry.share_resource('{}', '{c}')", w.rb),
        "TN404",
    )
    .await;
    rollback(&w.app).await;
    // setup_connection (invoker, search_path-setting) with the planted objects.
    exec(
        &w.app,
        &format!("SELECT tenantry.set_tenant_context('{}')", w.a),
    )
    .await;
    exec(&w.app, "SELECT tenantry.setup_connection()").await;
    assert_eq!(
        strings(&w.app, "SELECT unnest(tenantry.visible_tenant_ids())::text").await,
        [w.a.to_string()]
    );
    assert_eq!(
        strings(&w.app, "SELECT name FROM tenantry.resources").await,
        ["a-doc"]
    );
    exec(&w.app, "SELECT tenantry.set_tenant_context(NULL)").await;
    assert_eq!(names_seen_by(&w.app, c).await, Vec::<String>::new());
}

#[tokio::test]
async fn tenantry_app_cannot_plant_objects_in_public_tenantry_or_tenant_schemas() {
    let w = world().await;
    let silo = create_silo(&w.admin, "silo").await;
    let silo_schema = format!("tenant_{}", silo.simple());
    for sql in [
        "CREATE TABLE public.resources (id uuid)".to_owned(),
        "CREATE FUNCTION public.current_tenant_id() RETURNS uuid LANGUAGE sql AS $$ SELECT NULL::uuid $$"
            .to_owned(),
        "CREATE VIEW public.tenants AS SELECT 1".to_owned(),
        "CREATE TABLE tenantry.evil (id uuid)".to_owned(),
        "CREATE FUNCTION tenantry.evil() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$".to_owned(),
        format!("CREATE TABLE \"{silo_schema}\".evil (id uuid)"),
        "CREATE SCHEMA evil".to_owned(),
        "CREATE OR REPLACE FUNCTION tenantry.current_tenant_id() RETURNS uuid LANGUAGE sql AS $$ SELECT NULL::uuid $$"
            .to_owned(),
        "ALTER FUNCTION tenantry.visible_tenant_ids() OWNER TO tenantry_app".to_owned(),
    ] {
        let (code, message, _) = fails(&w.app, &sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
    }
}

// -----------------------------------------------------------------------------
// Sharing
// -----------------------------------------------------------------------------

#[tokio::test]
async fn sharing_with_a_missing_or_deleted_tenant_gives_the_same_not_found() {
    let w = world().await;
    let gone = create_tenant(&w.admin, "gone", None).await;
    set_status(&w.admin, gone, "deleted").await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    let code = same_failure(&w.app, gone, Uuid::new_v4(), |t| {
        format!(
            "ROLLBACK TO SAVEPOINT s; SELECT tenantry.share_resource('{}', '{t}')",
            w.ra
        )
    })
    .await;
    assert_eq!(code, "TN404");
    rollback(&w.app).await;
    begin_as(&w.app, w.a).await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.shared_resources").await,
        0
    );
    commit(&w.app).await;
}

#[tokio::test]
async fn sharing_with_a_suspended_tenant_or_the_owner_itself_is_refused() {
    let w = world().await;
    let asleep = create_tenant(&w.admin, "asleep", None).await;
    set_status(&w.admin, asleep, "suspended").await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    denied(
        &w.app,
        &format!("SELECT tenantry.share_resource('{}', '{asleep}')", w.ra),
        "TN409",
    )
    .await;
    exec(&w.app, "ROLLBACK TO SAVEPOINT s").await;
    denied(
        &w.app,
        &format!("SELECT tenantry.share_resource('{}', '{}')", w.ra, w.a),
        "TN422",
    )
    .await;
    exec(&w.app, "ROLLBACK TO SAVEPOINT s").await;
    denied(
        &w.app,
        &format!("SELECT tenantry.share_resource('{}', NULL)", w.ra),
        "TN404",
    )
    .await;
    rollback(&w.app).await;
    assert_eq!(names_seen_by(&w.app, asleep).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_share_target_cannot_reshare_change_delete_or_unshare_what_it_was_given() {
    let w = world().await;
    let c = create_tenant(&w.admin, "c", None).await;
    share(&w.app, w.b, w.rb, w.a).await;
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc", "b-secret"]);
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    denied(
        &w.app,
        &format!("SELECT tenantry.share_resource('{}', '{c}')", w.rb),
        "TN404",
    )
    .await;
    exec(&w.app, "ROLLBACK TO SAVEPOINT s").await;
    denied(
        &w.app,
        &format!("SELECT tenantry.unshare_resource('{}', '{}')", w.rb, w.a),
        "TN404",
    )
    .await;
    exec(&w.app, "ROLLBACK TO SAVEPOINT s").await;
    let n = w
        .app
        .execute(
            "UPDATE tenantry.resources SET name = 'pwned' WHERE id = $1",
            &[&w.rb],
        )
        .await
        .unwrap();
    assert_eq!(n, 0);
    let n = w
        .app
        .execute("DELETE FROM tenantry.resources WHERE id = $1", &[&w.rb])
        .await
        .unwrap();
    assert_eq!(n, 0);
    let n = w
        .app
        .execute(
            "DELETE FROM tenantry.shared_resources WHERE resource_id = $1",
            &[&w.rb],
        )
        .await;
    assert!(n.is_err(), "the share record is not the target's to delete");
    rollback(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
    assert_eq!(names_seen_by(&w.app, c).await, Vec::<String>::new());
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc", "b-secret"]);
}

#[tokio::test]
async fn revoking_a_share_hides_the_resource_from_the_next_statement_of_an_open_reader() {
    let w = world().await;
    share(&w.app, w.b, w.rb, w.a).await;
    let reader = app(&w.tdb).await;
    begin_as(&reader, w.a).await;
    assert_eq!(
        strings(&reader, "SELECT name FROM tenantry.resources").await,
        ["a-doc", "b-secret"]
    );
    // The owner revokes while the reader's transaction is still open.
    begin_as(&w.app, w.b).await;
    exec(
        &w.app,
        &format!("SELECT tenantry.unshare_resource('{}', '{}')", w.rb, w.a),
    )
    .await;
    commit(&w.app).await;
    assert_eq!(
        strings(&reader, "SELECT name FROM tenantry.resources").await,
        ["a-doc"],
        "the reader's next statement no longer sees it"
    );
    assert_eq!(
        count(
            &reader,
            &format!(
                "SELECT count(*) FROM tenantry.resources WHERE id = '{}'",
                w.rb
            )
        )
        .await,
        0
    );
    commit(&reader).await;
}

#[tokio::test]
async fn a_duplicate_share_is_refused_and_leaves_one_record() {
    let w = world().await;
    share(&w.app, w.a, w.ra, w.b).await;
    begin_as(&w.app, w.a).await;
    denied(
        &w.app,
        &format!("SELECT tenantry.share_resource('{}', '{}')", w.ra, w.b),
        "TN409",
    )
    .await;
    rollback(&w.app).await;
    begin_as(&w.app, w.a).await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.shared_resources").await,
        1
    );
    let shared_with: Vec<Uuid> = w
        .app
        .query_one(
            "SELECT shared_with FROM tenantry.resources WHERE id = $1",
            &[&w.ra],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shared_with, [w.b]);
    commit(&w.app).await;
}

// -----------------------------------------------------------------------------
// Hierarchy
// -----------------------------------------------------------------------------

#[tokio::test]
async fn a_child_never_reads_its_parent_and_a_sibling_never_reads_its_sibling() {
    let w = world().await;
    let left = create_tenant(&w.admin, "left", Some(w.a)).await;
    let right = create_tenant(&w.admin, "right", Some(w.a)).await;
    let rl = create_resource(&w.app, left, "left-doc").await;
    create_resource(&w.app, right, "right-doc").await;
    assert_eq!(
        names_seen_by(&w.app, w.a).await,
        ["a-doc", "left-doc", "right-doc"]
    );
    assert_eq!(names_seen_by(&w.app, left).await, ["left-doc"]);
    assert_eq!(names_seen_by(&w.app, right).await, ["right-doc"]);
    begin_as(&w.app, right).await;
    for sql in [
        format!(
            "SELECT count(*) FROM tenantry.tenants WHERE tenant_id IN ('{}', '{left}')",
            w.a
        ),
        format!(
            "SELECT count(*) FROM tenantry.tenant_hierarchy WHERE parent_id = '{}'",
            w.a
        ),
        format!(
            "SELECT count(*) FROM tenantry.resources WHERE id IN ('{}', '{rl}')",
            w.ra
        ),
    ] {
        assert_eq!(count(&w.app, &sql).await, 0, "{sql}");
    }
    let n = w
        .app
        .execute(
            "UPDATE tenantry.resources SET name = 'pwned' WHERE id = ANY($1)",
            &[&vec![w.ra, rl]],
        )
        .await
        .unwrap();
    assert_eq!(n, 0);
    commit(&w.app).await;
    assert_eq!(names_seen_by(&w.app, left).await, ["left-doc"]);
}

#[tokio::test]
async fn a_great_grandparent_reads_depth_three_and_nothing_reads_upwards() {
    let w = world().await;
    let t1 = create_tenant(&w.admin, "d1", Some(w.a)).await;
    let t2 = create_tenant(&w.admin, "d2", Some(t1)).await;
    let t3 = create_tenant(&w.admin, "d3", Some(t2)).await;
    for (t, n) in [(t1, "d1-doc"), (t2, "d2-doc"), (t3, "d3-doc")] {
        create_resource(&w.app, t, n).await;
    }
    assert_eq!(
        names_seen_by(&w.app, w.a).await,
        ["a-doc", "d1-doc", "d2-doc", "d3-doc"]
    );
    assert_eq!(names_seen_by(&w.app, t2).await, ["d2-doc", "d3-doc"]);
    assert_eq!(names_seen_by(&w.app, t3).await, ["d3-doc"]);
    begin_as(&w.app, w.a).await;
    let depth: i32 = w
        .app
        .query_one(
            "SELECT depth FROM tenantry.tenant_hierarchy WHERE parent_id = $1 AND child_id = $2",
            &[&w.a, &t3],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(depth, 3);
    commit(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

#[tokio::test]
async fn reparenting_into_a_cycle_is_refused_at_any_depth_and_changes_nothing() {
    let w = world().await;
    let t1 = create_tenant(&w.admin, "d1", Some(w.a)).await;
    let t2 = create_tenant(&w.admin, "d2", Some(t1)).await;
    let t3 = create_tenant(&w.admin, "d3", Some(t2)).await;
    for (t, parent) in [(w.a, t3), (w.a, t1), (t1, t3), (t3, t3)] {
        exec(&w.admin, "BEGIN").await;
        let e = set_parent(&w.admin, t, Some(parent))
            .await
            .expect_err("a cycle must be refused");
        let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
        assert!(
            ["TN409", "TN422", "23514"].contains(&code.as_str()),
            "{t} under {parent}: {}",
            describe(&e)
        );
        rollback(&w.admin).await;
    }
    // The tenant role cannot re-parent at all.
    begin_as(&w.app, w.a).await;
    denied(
        &w.app,
        &format!(
            "UPDATE tenantry.tenants SET parent_id = '{t3}' WHERE tenant_id = '{}'",
            w.a
        ),
        "42501",
    )
    .await;
    rollback(&w.app).await;
    assert_eq!(names_seen_by(&w.app, t3).await, Vec::<String>::new());
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
}

#[tokio::test]
async fn detaching_a_child_hides_it_from_the_parents_next_transaction() {
    let w = world().await;
    let child = create_tenant(&w.admin, "child", Some(w.a)).await;
    let grandchild = create_tenant(&w.admin, "grandchild", Some(child)).await;
    create_resource(&w.app, child, "child-doc").await;
    create_resource(&w.app, grandchild, "grandchild-doc").await;
    assert_eq!(
        names_seen_by(&w.app, w.a).await,
        ["a-doc", "child-doc", "grandchild-doc"]
    );
    set_parent(&w.admin, child, None).await.unwrap();
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
    begin_as(&w.app, w.a).await;
    assert_eq!(
        count(
            &w.app,
            &format!(
                "SELECT count(*) FROM tenantry.tenants WHERE tenant_id IN ('{child}', '{grandchild}')"
            )
        )
        .await,
        0
    );
    commit(&w.app).await;
    // Re-attached elsewhere: the new parent sees it, the old one still does not.
    set_parent(&w.admin, child, Some(w.b)).await.unwrap();
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
    assert_eq!(
        names_seen_by(&w.app, w.b).await,
        ["b-secret", "child-doc", "grandchild-doc"]
    );
}

// -----------------------------------------------------------------------------
// Roles and keys
// -----------------------------------------------------------------------------

#[tokio::test]
async fn a_tenant_cannot_create_roles_or_grant_permissions_in_another_tenant() {
    let w = world().await;
    let b_role = create_role(&w.app, w.b, "b-role").await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for sql in [
        format!("SELECT tenantry.create_tenant_role('{}', 'evil')", w.b),
        format!(
            "INSERT INTO tenantry.roles (tenant_id, name) VALUES ('{}', 'evil')",
            w.b
        ),
        format!(
            "INSERT INTO tenantry.role_permissions (tenant_id, role_id, permission_id) VALUES ('{}', '{b_role}', 12)",
            w.b
        ),
        format!("SELECT tenantry.assign_tenant_permission('{b_role}', 'keys.write')"),
        format!("SELECT tenantry.revoke_tenant_permission('{b_role}', 'keys.write')"),
        "UPDATE tenantry.permissions SET name = 'resources.read' WHERE permission_id = 12".to_owned(),
        "INSERT INTO tenantry.permissions VALUES (99, 'god.mode', 'x')".to_owned(),
    ] {
        let (code, message, _) =
            fails(&w.app, &format!("ROLLBACK TO SAVEPOINT s; {sql}")).await;
        assert!(
            ["TN403", "TN404", "42501"].contains(&code.as_str()),
            "{sql}: {code} {message}"
        );
    }
    rollback(&w.app).await;
    begin_as(&w.app, w.b).await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.role_permissions").await,
        0
    );
    assert_eq!(
        strings(&w.app, "SELECT name FROM tenantry.roles").await,
        ["b-role"]
    );
    commit(&w.app).await;
}

#[tokio::test]
async fn a_role_named_like_a_builtin_is_only_a_tenant_row_and_grants_nothing() {
    let w = world().await;
    let roles_before = count(&w.app, "SELECT count(*) FROM pg_roles").await;
    let mut ids = Vec::new();
    for name in [
        "tenantry_owner",
        "tenantry_admin",
        "postgres",
        "admin",
        "owner",
        "pg_read_all_data",
    ] {
        ids.push(create_role(&w.app, w.a, name).await);
    }
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM pg_roles").await,
        roles_before,
        "no database role was created"
    );
    denied(&w.app, "SET ROLE tenantry_owner", "42501").await;
    // A key bound to such a role holds exactly the role's (empty) permissions.
    for role in ids {
        let key = create_key(&w.app, w.a, json!({ "role_id": role })).await;
        let perms: serde_json::Value = w
            .app
            .query_one("SELECT tenantry.verify_api_key($1)->'permissions'", &[&key])
            .await
            .unwrap()
            .get(0);
        assert_eq!(perms, json!([]), "role {role}");
    }
}

#[tokio::test]
async fn revoked_expired_deleted_and_suspended_tenants_keys_are_refused() {
    let w = world().await;
    let revoked = create_key(&w.app, w.a, json!({})).await;
    let revoked_id = key_id_of(&w.app, w.a, &revoked).await;
    begin_as(&w.app, w.a).await;
    exec(
        &w.app,
        &format!("SELECT tenantry.revoke_api_key('{revoked_id}')"),
    )
    .await;
    commit(&w.app).await;
    let expired = create_key(&w.app, w.a, json!({ "expires_at": "2000-01-01T00:00:00Z" })).await;
    let asleep = create_tenant(&w.admin, "asleep", None).await;
    let asleep_key = create_key(&w.app, asleep, json!({})).await;
    set_status(&w.admin, asleep, "suspended").await;
    let gone = create_tenant(&w.admin, "gone", None).await;
    let gone_key = create_key(&w.app, gone, json!({})).await;
    set_status(&w.admin, gone, "deleted").await;
    for key in [&revoked, &expired] {
        assert_eq!(verified_tenant(&w.app, key).await, None);
        assert_eq!(validated_tenant(&w.app, key).await, None);
    }
    for key in [&asleep_key, &gone_key] {
        assert_eq!(validated_tenant(&w.app, key).await, None);
        // verify_api_key names the status so that the server can refuse it.
        let status: Option<String> = w
            .app
            .query_one(
                "SELECT tenantry.verify_api_key($1)->>'tenant_status'",
                &[key],
            )
            .await
            .unwrap()
            .get(0);
        assert_ne!(status.as_deref(), Some("active"));
    }
    // A deleted tenant's context cannot be opened even with its id.
    exec(&w.app, "BEGIN").await;
    denied(
        &w.app,
        &format!("SELECT tenantry.set_tenant_context_local('{gone}')"),
        "TN403",
    )
    .await;
    rollback(&w.app).await;
}

#[tokio::test]
async fn a_wrong_secret_and_an_unknown_prefix_both_verify_to_null() {
    let w = world().await;
    let key = create_key(&w.app, w.a, json!({})).await;
    let (head, secret) = key.split_at(16);
    let flipped: String = secret
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    for forged in [
        format!("{head}{flipped}"),
        format!("tk_000000000000_{secret}"),
        format!("{}X", &key[..key.len() - 1]),
        key.to_uppercase(),
        format!("{key} "),
        String::new(),
        "tk_' OR '1'='1".to_owned(),
    ] {
        assert_eq!(verified_tenant(&w.app, &forged).await, None, "{forged:?}");
        assert_eq!(validated_tenant(&w.app, &forged).await, None, "{forged:?}");
    }
    let hash_probe: Option<serde_json::Value> = w
        .app
        .query_one(
            "SELECT tenantry.verify_api_key_hash(substr($1, 4, 12), '\\x00'::bytea)",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hash_probe, None);
    assert_eq!(verified_tenant(&w.app, &key).await, Some(w.a.to_string()));
}

// -----------------------------------------------------------------------------
// Usage
// -----------------------------------------------------------------------------

#[tokio::test]
async fn usage_functions_and_views_show_a_child_neither_its_parent_nor_its_sibling() {
    let w = world().await;
    let left = create_tenant(&w.admin, "left", Some(w.a)).await;
    let right = create_tenant(&w.admin, "right", Some(w.a)).await;
    create_resource(&w.app, right, "right-doc").await;
    for t in [w.a, left, right, w.b] {
        begin_as(&w.app, t).await;
        exec(
            &w.app,
            &format!("INSERT INTO tenantry.request_log (tenant_id, route, status) VALUES ('{t}', '/r', 200)"),
        )
        .await;
        commit(&w.app).await;
    }
    exec(&w.admin, "SELECT tenantry.refresh_tenant_metrics()").await;
    for (t, expected) in [
        (w.a, vec![w.a, left, right]),
        (left, vec![left]),
        (right, vec![right]),
    ] {
        let mut expected: Vec<String> = expected.iter().map(Uuid::to_string).collect();
        expected.sort();
        begin_as(&w.app, t).await;
        for sql in [
            "SELECT DISTINCT tenant_id::text FROM tenantry.current_tenant_metrics()",
            "SELECT tenant_id::text FROM tenantry.tenant_resource_usage",
        ] {
            assert_eq!(strings(&w.app, sql).await, expected, "{t}: {sql}");
        }
        assert_eq!(
            strings(
                &w.app,
                "SELECT DISTINCT tenant_id::text FROM tenantry.request_log"
            )
            .await,
            [t.to_string()]
        );
        commit(&w.app).await;
    }
}

#[tokio::test]
async fn the_metrics_view_and_table_partitions_are_unreadable_by_tenantry_app() {
    let w = world().await;
    let silo = create_silo(&w.admin, "silo").await;
    create_resource(&w.app, silo, "silo-doc").await;
    exec(&w.admin, "SELECT tenantry.refresh_tenant_metrics()").await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for relation in [
        "tenantry.tenant_metrics",
        "tenantry.resources_pooled",
        "tenantry.request_log_default",
        "tenantry.schema_migrations",
    ] {
        let (code, message, _) = fails(
            &w.app,
            &format!("ROLLBACK TO SAVEPOINT s; SELECT count(*) FROM {relation}"),
        )
        .await;
        assert_eq!(code, "42501", "{relation}: {message}");
    }
    denied(
        &w.app,
        "ROLLBACK TO SAVEPOINT s; REFRESH MATERIALIZED VIEW tenantry.tenant_metrics",
        "42501",
    )
    .await;
    rollback(&w.app).await;
}

// -----------------------------------------------------------------------------
// Schema-per-tenant
// -----------------------------------------------------------------------------

#[tokio::test]
async fn a_tenant_schema_is_unreachable_by_quoted_name_or_search_path_from_another_tenant() {
    let w = world().await;
    let silo = create_silo(&w.admin, "silo").await;
    let rs = create_resource(&w.app, silo, "silo-secret").await;
    let schema = format!("tenant_{}", silo.simple());
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
    assert_eq!(schemas, [format!("tenant_{}", silo.simple())]);
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
    assert_eq!(schema, format!("tenant_{}", silo.simple()));
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

// -----------------------------------------------------------------------------
// Side channels of a raw SQL session
// -----------------------------------------------------------------------------

#[tokio::test]
async fn a_leaky_function_in_a_where_clause_never_sees_a_foreign_row() {
    let w = world().await;
    // The classic leaky-view attack: a volatile function that records (or
    // raises on) every row it is shown, placed in the attacker's own WHERE.
    exec(
        &w.app,
        "CREATE TEMP TABLE seen (name text);
         CREATE FUNCTION pg_temp.peek(n text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
         BEGIN INSERT INTO pg_temp.seen VALUES (n); RETURN true; END $$;",
    )
    .await;
    begin_as(&w.app, w.a).await;
    assert_eq!(
        count(
            &w.app,
            "SELECT count(*) FROM tenantry.resources WHERE pg_temp.peek(name)"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &w.app,
            "SELECT count(*) FROM tenantry.resources WHERE CASE WHEN name = 'b-secret' THEN 1 / (length(name) - 8) ELSE 1 END = 1"
        )
        .await,
        1,
        "a division by zero on b's row would have raised"
    );
    let n = w
        .app
        .execute(
            "UPDATE tenantry.resources SET name = name WHERE pg_temp.peek(name || '@update')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    commit(&w.app).await;
    assert_eq!(
        strings(&w.app, "SELECT name FROM pg_temp.seen").await,
        ["a-doc", "a-doc@update"]
    );
}

#[tokio::test]
async fn copy_reads_only_the_contexts_rows_and_copy_from_is_refused() {
    let w = world().await;
    begin_as(&w.app, w.a).await;
    // Server-side programs and files are a superuser's (or pg_execute_server_program's).
    let (code, message, _) = fails(
        &w.app,
        "COPY tenantry.resources (tenant_id, name) FROM PROGRAM 'true'",
    )
    .await;
    assert_eq!(code, "42501", "{message}");
    rollback(&w.app).await;
    let copy = w
        .app
        .copy_out("COPY tenantry.resources (name) TO STDOUT")
        .await;
    // Without a context COPY TO yields nothing at all.
    let bytes = collect_copy(copy.unwrap()).await;
    assert!(bytes.is_empty(), "{}", String::from_utf8_lossy(&bytes));
    begin_as(&w.app, w.a).await;
    // COPY of the table itself runs the policies (over the parent only: nothing
    // here); COPY of a query returns exactly what a SELECT does.
    let copy = w
        .app
        .copy_out("COPY tenantry.resources (name) TO STDOUT")
        .await
        .unwrap();
    let table = collect_copy(copy).await;
    assert!(!String::from_utf8_lossy(&table).contains("b-secret"));
    let copy = w
        .app
        .copy_out("COPY (SELECT name FROM tenantry.resources) TO STDOUT")
        .await
        .unwrap();
    assert_eq!(collect_copy(copy).await, b"a-doc\n");
    let copy = w
        .app
        .copy_out("COPY (SELECT name FROM tenantry.resources WHERE tenant_id <> tenantry.current_tenant_id()) TO STDOUT")
        .await
        .unwrap();
    assert!(collect_copy(copy).await.is_empty());
    commit(&w.app).await;
    // COPY FROM on its own connection (a refused COPY leaves the driver's state unusable).
    let copier = app(&w.tdb).await;
    begin_as(&copier, w.a).await;
    let sink = copier
        .copy_in::<_, &'static [u8]>("COPY tenantry.resources (tenant_id, name) FROM STDIN")
        .await;
    let Err(e) = sink else {
        panic!("COPY FROM into a table under RLS must be refused");
    };
    assert!(
        ["0A000", "42501"].contains(&e.code().map(|c| c.code()).unwrap_or("")),
        "{}",
        describe(&e)
    );
    drop(copier);
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

async fn collect_copy(stream: tokio_postgres::CopyOutStream) -> Vec<u8> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test]
async fn planner_statistics_and_other_sessions_queries_are_hidden_from_tenantry_app() {
    let w = world().await;
    // Statistics exist (gathered by the superuser, as autovacuum would).
    w.tdb
        .superuser_client()
        .await
        .batch_execute("ANALYZE tenantry.resources, tenantry.resources_pooled")
        .await
        .unwrap();
    begin_as(&w.app, w.a).await;
    for relation in ["resources", "resources_pooled", "tenants", "api_keys"] {
        let sql = format!(
            "SELECT count(*) FROM pg_stats WHERE schemaname = 'tenantry' AND tablename = '{relation}'"
        );
        assert_eq!(count(&w.app, &sql).await, 0, "{relation}");
    }
    commit(&w.app).await;
    // Another server session, idle in b's transaction after a literal query.
    let other = app(&w.tdb).await;
    begin_as(&other, w.b).await;
    exec(&other, "SELECT 'b-secret-literal' AS x").await;
    assert_eq!(
        count(
            &w.app,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%b-secret-literal%' AND pid <> pg_backend_pid()"
        )
        .await,
        0
    );
    commit(&other).await;
}
