//! Limits (`max_children`, `max_descendants`, `max_api_keys`, `max_roles`, `max_members`, `max_shares` in a tenant's settings, with defaults): enforced by the database for the tenant roles, whatever door they use, refused with TN429 naming the setting, nothing written by a refused statement; operators are counted, not refused; counts stay exact through moves and deletions; creating children takes no lock another tenant waits on.

use serde_json::{json, Value};
use tenantry_db::{testing::TestDatabase, Limit};
use tokio_postgres::{Client, Error};
use uuid::Uuid;

use crate::{
    common::{count, create_tenant, describe, exec, set_status},
    helpers::{admin, app, create_resource, set_context},
};

/// A root tenant with `settings`, created as the admin role.
async fn tenant_with(admin: &Client, name: &str, settings: Value) -> Uuid {
    admin
        .query_one(
            "SELECT tenantry.create_tenant($1::text, NULL, 'shared', $2::jsonb)",
            &[&name, &settings],
        )
        .await
        .unwrap_or_else(|e| panic!("create_tenant({name}): {}", describe(&e)))
        .get(0)
}

/// The message of a refusal with TN429 whose HINT names `setting`.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, Error>, setting: &str) -> String {
    let e = match result {
        Ok(v) => panic!("expected TN429 for {setting}, but it succeeded: {v:?}"),
        Err(e) => e,
    };
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("{setting}: not a database error: {e}"));
    assert_eq!(db.code().code(), "TN429", "{setting}: {}", describe(&e));
    assert_eq!(
        db.hint(),
        Some(format!("settings.{setting}").as_str()),
        "{}",
        describe(&e)
    );
    db.message().to_owned()
}

/// A child of the current tenant (`create_child_tenant`).
async fn child(app: &Client, name: &str) -> Result<Uuid, Error> {
    app.query_one("SELECT tenantry.create_child_tenant($1)", &[&name])
        .await
        .map(|r| r.get(0))
}

async fn key(app: &Client) -> Result<String, Error> {
    app.query_one("SELECT tenantry.create_api_key('k')", &[])
        .await
        .map(|r| r.get(0))
}

#[tokio::test]
async fn each_limit_refuses_the_tenant_roles_write_past_it_and_writes_nothing() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let t = tenant_with(
        &admin,
        "small",
        json!({"max_children": 1, "max_api_keys": 1, "max_roles": 1, "max_members": 1, "max_shares": 1}),
    )
    .await;
    let other = create_tenant(&admin, "other", None).await;
    let (r1, r2) = (
        create_resource(&app, t, "r1").await,
        create_resource(&app, t, "r2").await,
    );
    set_context(&app, t).await;

    child(&app, "first").await.unwrap();
    let message = refused(child(&app, "second").await, "max_children");
    assert!(message.contains("at most 1 children"), "{message}");
    assert_eq!(
        count(
            &admin,
            &format!("SELECT count(*) FROM tenantry.tenants WHERE parent_id = '{t}'")
        )
        .await,
        1
    );

    let first_key = key(&app).await.unwrap();
    let message = refused(key(&app).await, "max_api_keys");
    assert!(message.contains("at most 1 API keys"), "{message}");
    assert_eq!(
        count(&app, "SELECT count(*) FROM tenantry.api_keys").await,
        1
    );

    // The tables a tenant writes directly hold the limit too, not only the functions.
    exec(&app, "INSERT INTO tenantry.roles (name) VALUES ('one')").await;
    refused(
        app.batch_execute("INSERT INTO tenantry.roles (name) VALUES ('two')")
            .await,
        "max_roles",
    );
    refused(
        app.query_one("SELECT tenantry.create_tenant_role($1, 'three')", &[&t])
            .await,
        "max_roles",
    );
    assert_eq!(count(&app, "SELECT count(*) FROM tenantry.roles").await, 1);

    exec(
        &app,
        "INSERT INTO tenantry.tenant_members (email) VALUES ('a@example.com')",
    )
    .await;
    refused(
        app.batch_execute("INSERT INTO tenantry.tenant_members (email) VALUES ('b@example.com')")
            .await,
        "max_members",
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM tenantry.tenant_members").await,
        1
    );

    app.execute("SELECT tenantry.share_resource($1, $2)", &[&r1, &other])
        .await
        .unwrap();
    refused(
        app.execute("SELECT tenantry.share_resource($1, $2)", &[&r2, &other])
            .await,
        "max_shares",
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM tenantry.shared_resources WHERE tenant_id = tenantry.current_tenant_id()").await,
        1
    );

    // Room again once something goes: a revoked key, a deleted role, member
    // or resource (its share goes with it).
    let first_key_id: Uuid = app
        .query_one("SELECT key_id FROM tenantry.api_keys", &[])
        .await
        .unwrap()
        .get(0);
    // Rotating at the limit works: the successor replaces its predecessor.
    app.execute("SELECT tenantry.rotate_api_key($1)", &[&first_key_id])
        .await
        .unwrap();
    refused(key(&app).await, "max_api_keys");
    exec(
        &app,
        "SELECT tenantry.revoke_api_key(key_id) FROM tenantry.api_keys WHERE rotated_to IS NULL",
    )
    .await;
    key(&app).await.unwrap();
    exec(&app, "DELETE FROM tenantry.roles").await;
    exec(&app, "INSERT INTO tenantry.roles (name) VALUES ('two')").await;
    exec(&app, "DELETE FROM tenantry.tenant_members").await;
    exec(
        &app,
        "INSERT INTO tenantry.tenant_members (email) VALUES ('b@example.com')",
    )
    .await;
    app.execute("DELETE FROM tenantry.resources WHERE id = $1", &[&r1])
        .await
        .unwrap();
    app.execute("SELECT tenantry.share_resource($1, $2)", &[&r2, &other])
        .await
        .unwrap();
    drop(first_key);
}

#[tokio::test]
async fn a_subtree_cannot_grow_past_its_roots_max_descendants_through_its_descendants() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let root = tenant_with(&admin, "root", json!({"max_descendants": 3})).await;
    set_context(&app, root).await;
    let c = child(&app, "c").await.unwrap();
    set_context(&app, c).await;
    let g = child(&app, "g").await.unwrap();
    set_context(&app, g).await;
    child(&app, "gg").await.unwrap();

    // Each level is within its own max_children; the root's subtree is full.
    for at in [g, c] {
        set_context(&app, at).await;
        let message = refused(child(&app, "one too many").await, "max_descendants");
        assert!(
            message.contains("a tenant above this one may have at most 3 tenants below it"),
            "{message}"
        );
        assert!(!message.contains(&root.to_string()), "{message}");
    }
    set_context(&app, root).await;
    let message = refused(child(&app, "one too many").await, "max_descendants");
    assert!(message.contains("at most 3 tenants below it"), "{message}");
    assert_eq!(
        count(
            &admin,
            &format!("SELECT count(*) FROM tenantry.tenant_hierarchy WHERE parent_id = '{root}' AND depth > 0")
        )
        .await,
        3
    );

    // A deleted tenant makes room.
    let gg: Uuid = admin
        .query_one(
            "SELECT tenant_id FROM tenantry.tenants WHERE parent_id = $1",
            &[&g],
        )
        .await
        .unwrap()
        .get(0);
    set_status(&admin, gg, "deleted").await;
    set_context(&app, c).await;
    child(&app, "room again").await.unwrap();
}

#[tokio::test]
async fn a_tenant_cannot_give_its_child_more_than_it_has() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let t = tenant_with(
        &admin,
        "parent",
        json!({"max_api_keys": 2, "max_resources": 10, "rate_limit_per_second": 5}),
    )
    .await;
    set_context(&app, t).await;
    for (key, value) in [
        ("max_api_keys", json!(3)),
        ("max_resources", json!(11)),
        ("rate_limit_per_second", json!(5.5)),
        // No burst set: the parent's is its rate (5), rounded up.
        ("rate_limit_burst", json!(6)),
        ("max_children", json!(101)),
    ] {
        let e = app
            .query_one(
                "SELECT tenantry.create_child_tenant('greedy', $1)",
                &[&json!({ key: value })],
            )
            .await
            .unwrap_err();
        let db = e.as_db_error().expect("a database error");
        assert_eq!(db.code().code(), "TN403", "{key}: {}", describe(&e));
        assert_eq!(db.hint(), Some(format!("settings.{key}").as_str()));
    }
    assert_eq!(
        count(&app, "SELECT count(*) FROM tenantry.tenants").await,
        1
    );

    // Left out, a setting the parent holds below the default is capped at the parent's.
    let c: Uuid = app
        .query_one(
            "SELECT tenantry.create_child_tenant('modest', '{\"max_api_keys\": 1}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let settings: Value = admin
        .query_one(
            "SELECT settings FROM tenantry.tenants WHERE tenant_id = $1",
            &[&c],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        settings,
        json!({"max_api_keys": 1, "max_resources": 10, "rate_limit_per_second": 5})
    );
}

#[tokio::test]
async fn operators_are_counted_but_never_refused() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let t = tenant_with(&admin, "capped", json!({"max_children": 1})).await;
    create_tenant(&admin, "a", Some(t)).await;
    create_tenant(&admin, "b", Some(t)).await;
    set_context(&app, t).await;
    refused(child(&app, "c").await, "max_children");
    assert_eq!(
        count(
            &app,
            "SELECT children FROM tenantry.tenant_limit_usage WHERE tenant_id = tenantry.current_tenant_id()"
        )
        .await,
        2
    );
    // A superuser session (bulk loads, maintenance) is not refused either.
    let su = tdb.superuser_client().await;
    su.execute(
        "INSERT INTO tenantry.roles (tenant_id, name) VALUES ($1, 'r1'), ($1, 'r2')",
        &[&t],
    )
    .await
    .unwrap();
    exec(
        &admin,
        &format!(
            "UPDATE tenantry.tenants SET settings = '{{\"max_roles\": 1}}' WHERE tenant_id = '{t}'"
        ),
    )
    .await;
    refused(
        app.batch_execute("INSERT INTO tenantry.roles (name) VALUES ('r3')")
            .await,
        "max_roles",
    );
}

/// Counter rows that differ from a count of the rows themselves.
async fn drifted(su: &Client) -> Vec<String> {
    su.query(
        "SELECT u.tenant_id::text || ' ' || row(u.*)::text || ' <> ' || row(c.*)::text
         FROM tenantry.tenant_limit_usage u
         JOIN LATERAL (
             SELECT u.tenant_id,
                    (SELECT count(*) FROM tenantry.tenants x WHERE x.parent_id = u.tenant_id AND x.status <> 'deleted'),
                    (SELECT count(*) FROM tenantry.tenant_hierarchy h JOIN tenantry.tenants d ON d.tenant_id = h.child_id
                      WHERE h.parent_id = u.tenant_id AND h.depth > 0 AND d.status <> 'deleted'),
                    (SELECT count(*) FROM tenantry.api_keys a
                      WHERE a.tenant_id = u.tenant_id AND a.revoked_at IS NULL AND a.rotated_to IS NULL),
                    (SELECT count(*) FROM tenantry.roles r WHERE r.tenant_id = u.tenant_id),
                    (SELECT count(*) FROM tenantry.tenant_members m WHERE m.tenant_id = u.tenant_id),
                    (SELECT count(*) FROM tenantry.shared_resources s WHERE s.tenant_id = u.tenant_id)
         ) c(tenant_id, children, descendants, api_keys, roles, members, shares) ON true
         WHERE row(u.*) IS DISTINCT FROM row(c.*)",
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("drift: {}", describe(&e)))
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn the_counts_stay_exact_through_moves_deletions_and_every_tenant_has_them() {
    let tdb = TestDatabase::new().await;
    let (app, admin, su) = (
        app(&tdb).await,
        admin(&tdb).await,
        tdb.superuser_client().await,
    );
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;
    set_context(&app, a).await;
    let a1 = child(&app, "a1").await.unwrap();
    set_context(&app, a1).await;
    let a11 = child(&app, "a11").await.unwrap();
    child(&app, "a12").await.unwrap();
    set_context(&app, a11).await;
    child(&app, "a111").await.unwrap();
    key(&app).await.unwrap();
    set_context(&app, b).await;
    child(&app, "b1").await.unwrap();
    assert_eq!(drifted(&su).await, Vec::<String>::new());

    // Move a1's subtree under b, then a11 back under a; delete a leaf.
    exec(
        &admin,
        &format!("UPDATE tenantry.tenants SET parent_id = '{b}' WHERE tenant_id = '{a1}'"),
    )
    .await;
    assert_eq!(drifted(&su).await, Vec::<String>::new());
    exec(
        &admin,
        &format!("UPDATE tenantry.tenants SET parent_id = '{a}' WHERE tenant_id = '{a11}'"),
    )
    .await;
    assert_eq!(drifted(&su).await, Vec::<String>::new());
    exec(
        &admin,
        &format!("UPDATE tenantry.tenants SET status = 'deleted' WHERE parent_id = '{a11}'"),
    )
    .await;
    exec(
        &admin,
        &format!("UPDATE tenantry.tenants SET parent_id = NULL WHERE tenant_id = '{a11}'"),
    )
    .await;
    assert_eq!(drifted(&su).await, Vec::<String>::new());
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM tenantry.tenants t
             WHERE NOT EXISTS (SELECT 1 FROM tenantry.tenant_limit_usage u WHERE u.tenant_id = t.tenant_id)"
        )
        .await,
        0
    );
    // A tenant reads its own counters, and no other tenant's.
    set_context(&app, a).await;
    assert_eq!(
        count(&app, "SELECT count(*) FROM tenantry.tenant_limit_usage").await,
        1
    );
}

#[tokio::test]
async fn the_databases_limit_defaults_are_the_ones_the_library_documents() {
    let tdb = TestDatabase::new().await;
    let app = app(&tdb).await;
    let defaults: Value = app
        .query_one("SELECT tenantry.limit_defaults()", &[])
        .await
        .unwrap()
        .get(0);
    let mut expected: serde_json::Map<String, Value> = Limit::ALL
        .iter()
        .map(|l| (l.key().to_owned(), json!(l.default_value())))
        .collect();
    expected.insert(
        "child_creation_rate_per_second".into(),
        json!(tenantry_db::DEFAULT_CHILD_CREATION_RATE as u64),
    );
    assert_eq!(defaults, Value::Object(expected));
}

#[tokio::test]
async fn a_tenant_creating_children_takes_no_lock_another_tenants_creation_waits_on() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let (x, y) = (
        create_tenant(&admin, "x", None).await,
        create_tenant(&admin, "y", None).await,
    );
    let (holder, other) = (app(&tdb).await, app(&tdb).await);
    set_context(&holder, x).await;
    set_context(&other, y).await;
    // x's creation stays open (as a slow request would hold it) ...
    exec(&holder, "BEGIN").await;
    child(&holder, "held open").await.unwrap();
    // ... and y's goes through, keys and roles included: a wait on x's
    // creation would last until its COMMIT below, so the lock timeout turns
    // it into an error (a bound on the elapsed time as well failed on a
    // loaded machine, and said nothing more).
    exec(&other, "SET lock_timeout = '10s'").await;
    child(&other, "not waiting").await.unwrap();
    key(&other).await.unwrap();
    exec(&other, "INSERT INTO tenantry.roles (name) VALUES ('r')").await;
    exec(&holder, "COMMIT").await;
}

#[tokio::test]
async fn the_guides_insert_of_a_tenant_with_null_settings_stores_no_settings_and_defaults_apply() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let id = uuid::Uuid::new_v4();
    // The guide's columns, as its tenants table has them (settings nullable),
    // then settings given and cleared the same way.
    for (sql, expected) in [
        (
            "INSERT INTO tenantry.tenants (tenant_id, name, settings, status) VALUES ($1, 'acme', NULL, 'active')",
            json!({}),
        ),
        (
            "UPDATE tenantry.tenants SET settings = '{\"max_children\": 1}' WHERE tenant_id = $1",
            json!({"max_children": 1}),
        ),
        (
            "UPDATE tenantry.tenants SET settings = NULL WHERE tenant_id = $1",
            json!({}),
        ),
    ] {
        su.execute(sql, &[&id]).await.unwrap();
        let settings: Value = su
            .query_one(
                "SELECT settings FROM tenantry.tenants WHERE tenant_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(settings, expected, "{sql}");
    }
}

/// `create_child_tenant`'s isolation left NULL is its default, a pooled
/// child: it was refused as if a schema tenant had been asked for (a
/// review of the psql path). A schema tenant is still the operator's, and a
/// word that names no isolation is refused as such.
#[tokio::test]
async fn a_child_created_with_no_isolation_named_is_pooled_and_only_shared_or_schema_are_words() {
    let tdb = TestDatabase::new().await;
    let (app, admin) = (app(&tdb).await, admin(&tdb).await);
    let parent = create_tenant(&admin, "parent", None).await;
    set_context(&app, parent).await;
    let kid: Uuid = app
        .query_one(
            "SELECT tenantry.create_child_tenant('kid', '{}', NULL)",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)))
        .get(0);
    for (isolation, code) in [("schema", "TN403"), ("bogus", "TN422")] {
        let e = app
            .query_one(
                "SELECT tenantry.create_child_tenant('other', '{}', $1)",
                &[&isolation],
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.as_db_error().map(|d| d.code().code()),
            Some(code),
            "{isolation}: {}",
            describe(&e)
        );
    }
    assert_eq!(
        count(
            &admin,
            &format!("SELECT count(*) FROM tenantry.tenants WHERE parent_id = '{parent}' AND isolation = 'shared' AND tenant_id = '{kid}'")
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &admin,
            &format!("SELECT count(*) FROM tenantry.tenants WHERE parent_id = '{parent}'")
        )
        .await,
        1
    );
}
