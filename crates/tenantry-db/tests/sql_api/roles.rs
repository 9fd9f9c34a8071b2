//! Roles and permissions: the guide's role functions act inside the current
//! tenant only.

use tenantry_db::testing::TestDatabase;
use uuid::Uuid;

use crate::common::{count, create_tenant, strings};
use crate::helpers::{admin, app, expect_sqlstate, set_context};
use tokio_postgres::Client;

/// Tenants a and b, each with a role made through the guide's function (b's
/// `viewer`, a's `editor`), and the app connection left in a's context:
/// (app, a, b, a's role, b's role).
async fn two_tenants_with_a_role_each(tdb: &TestDatabase) -> (Client, Uuid, Uuid, Uuid, Uuid) {
    let admin = admin(tdb).await;
    let app = app(tdb).await;
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
    (app, a, b, role, b_role)
}

#[tokio::test]
async fn guide_role_functions_answer_by_their_names_inside_the_current_tenant_only() {
    let tdb = TestDatabase::new().await;
    let (app, a, b, role, b_role) = two_tenants_with_a_role_each(&tdb).await;
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
    // Without a context: said as such (it read "role … not found"), alike
    // for every role, so it tells no tenant's role from a missing one.
    let outside = crate::helpers::app(&tdb).await;
    for (r, what) in [
        (role, "own"),
        (b_role, "another's"),
        (Uuid::new_v4(), "missing"),
    ] {
        let refused = outside
            .execute(
                "SELECT assign_tenant_permission($1, 'resources.write')",
                &[&r],
            )
            .await
            .expect_err(what);
        let e = refused.as_db_error().expect("a database error");
        assert_eq!(e.code().code(), "TN403", "{what}");
        assert!(
            e.message().starts_with("no tenant context is set")
                && e.message().contains("set_tenant_context_local"),
            "{what}: {}",
            e.message()
        );
    }

    set_context(&app, b).await;
    assert_eq!(strings(&app, "SELECT name FROM roles").await, ["viewer"]);
    assert_eq!(
        count(&app, "SELECT count(*) FROM role_permissions").await,
        0
    );
}

#[tokio::test]
async fn the_guides_insert_into_role_permissions_fills_the_current_tenant_and_stays_inside_it() {
    let tdb = TestDatabase::new().await;
    let (app, a, _, role, b_role) = two_tenants_with_a_role_each(&tdb).await;
    // The guide's statement (inside its assign_tenant_permission), as written:
    // no tenant_id column named.
    app.execute(
        "INSERT INTO role_permissions (role_id, permission_id)
         SELECT $1, permission_id FROM permissions WHERE name = 'resources.read'",
        &[&role],
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM role_permissions WHERE role_id = '{role}' AND tenant_id = '{a}'")
        )
        .await,
        1
    );
    // Another tenant's role: the default names the current tenant, and the
    // row pairs it with b's role, which the key refuses (as a missing role).
    expect_sqlstate(
        app.execute(
            "INSERT INTO role_permissions (role_id, permission_id)
             SELECT $1, permission_id FROM permissions WHERE name = 'resources.read'",
            &[&b_role],
        )
        .await,
        "23503",
        "a permission on another tenant's role",
    );
}
