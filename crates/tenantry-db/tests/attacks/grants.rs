//! Grants past what a caller holds, attacked as the server's login: a key or member holding some permissions calls tenantry's SECURITY DEFINER functions (sharing, child tenants, invitations) and deletes roles through raw SQL, where the API's own checks are not in the way (found by a review of the hierarchy, 2026-12-06).

use tokio_postgres::Client;
use uuid::Uuid;

use crate::{
    common::{count, create_tenant, exec},
    helpers::{
        add_member, app, begin_as, begin_person, begin_with_grants, commit, create_resource,
        create_role, denied, grant, rollback, share,
    },
};

/// A role of `t` holding `permissions`.
async fn role_with(c: &Client, t: Uuid, name: &str, permissions: &[&str]) -> Uuid {
    let role = create_role(c, t, name).await;
    grant(c, t, role, permissions).await;
    role
}

async fn owners(su: &Client, t: Uuid) -> i64 {
    count(
        su,
        &format!(
            "SELECT count(*) FROM tenantry.tenant_members WHERE tenant_id = '{t}' AND is_owner"
        ),
    )
    .await
}

#[tokio::test]
async fn a_caller_without_every_permission_makes_nobody_the_owner_of_a_tenant_that_has_none() {
    let tdb = tenantry_db::testing::TestDatabase::new().await;
    let (c, su) = (app(&tdb).await, tdb.superuser_client().await);
    // A tenant the operator made: no member, so no owner yet.
    let t = create_tenant(&su, "ownerless", None).await;

    // A key holding members.invite alone invites nobody into it: the first
    // to join would own it.
    begin_with_grants(&c, t, None, &["members.invite"]).await;
    let message = denied(
        &c,
        "SELECT tenantry.create_invitation('mallory@evil.test')",
        "TN401",
    )
    .await;
    assert!(message.contains("has no owner yet"), "{message}");
    rollback(&c).await;
    // Nor does a key holding members.write add an active member, the owner-to-be,
    // even naming the tenant as one it has just created (the setting
    // create_my_tenant makes, which spares a lock and skips no check).
    for spare_the_lock in [false, true] {
        begin_with_grants(&c, t, None, &["members.write", "members.invite"]).await;
        if spare_the_lock {
            exec(&c, &format!("SET LOCAL tenantry.first_member_of = '{t}'")).await;
        }
        denied(
            &c,
            "INSERT INTO tenantry.tenant_members (email) VALUES ('mallory@evil.test')",
            "TN401",
        )
        .await;
        rollback(&c).await;
    }
    assert_eq!(owners(&su, t).await, 0);
    assert_eq!(
        count(
            &su,
            &format!("SELECT count(*) FROM tenantry.invitations WHERE tenant_id = '{t}'")
        )
        .await,
        0
    );

    // An invitation made by such a key while the tenant had an owner makes
    // nobody the owner once that owner has left.
    let owner = add_member(&c, t, "owner@acme.test").await;
    assert_eq!(owners(&su, t).await, 1);
    begin_with_grants(&c, t, None, &["members.invite"]).await;
    let token: String = c
        .query_one(
            "SELECT token FROM tenantry.create_invitation('mallory@evil.test')",
            &[],
        )
        .await
        .expect("an owner is there: a plain member is invited")
        .get(0);
    commit(&c).await;
    begin_as(&c, t).await;
    exec(&c, &format!("SELECT tenantry.remove_member('{owner}')")).await;
    commit(&c).await;
    assert_eq!(owners(&su, t).await, 0);
    let mallory = Uuid::new_v4();
    begin_person(&c, mallory).await;
    let message = denied(
        &c,
        &format!("SELECT tenantry.accept_invitation('{token}', 'mallory@evil.test')"),
        "TN409",
    )
    .await;
    assert!(message.contains("cannot make you its owner"), "{message}");
    rollback(&c).await;
    assert_eq!(
        count(
            &su,
            &format!("SELECT count(*) FROM tenantry.tenant_members WHERE tenant_id = '{t}'")
        )
        .await,
        0
    );

    // The operator's (every permission) invitation still makes the first owner.
    begin_as(&c, t).await;
    let token: String = c
        .query_one(
            "SELECT token FROM tenantry.create_invitation('alice@acme.test')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    commit(&c).await;
    let alice = Uuid::new_v4();
    begin_person(&c, alice).await;
    exec(
        &c,
        &format!("SELECT tenantry.accept_invitation('{token}', 'alice@acme.test')"),
    )
    .await;
    commit(&c).await;
    assert_eq!(
        count(&su, &format!("SELECT count(*) FROM tenantry.tenant_members WHERE tenant_id = '{t}' AND is_owner AND user_id = '{alice}'")).await,
        1
    );
}

#[tokio::test]
async fn sharing_and_child_creation_from_sql_need_the_permissions_the_api_checks() {
    let tdb = tenantry_db::testing::TestDatabase::new().await;
    let (c, su) = (app(&tdb).await, tdb.superuser_client().await);
    let acme = create_tenant(&su, "acme", None).await;
    let globex = create_tenant(&su, "globex", None).await;
    let doc = create_resource(&c, acme, "secret-plan").await;
    let _owner = add_member(&c, acme, "owner@acme.test").await;
    let reader = add_member(&c, acme, "bob@acme.test").await;

    // resources.read alone: no share, no revocation, no child.
    for sql in [
        format!("SELECT tenantry.share_resource('{doc}', '{globex}')"),
        format!("SELECT * FROM tenantry.share_resource_row('{doc}', '{globex}')"),
        "SELECT tenantry.create_child_tenant('made-by-bob')".to_owned(),
    ] {
        begin_with_grants(&c, acme, Some(reader), &["resources.read"]).await;
        denied(&c, &sql, "TN401").await;
        rollback(&c).await;
    }
    assert_eq!(
        count(&su, "SELECT count(*) FROM tenantry.shared_resources").await,
        0
    );
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM tenantry.tenants WHERE name = 'made-by-bob'"
        )
        .await,
        0
    );
    share(&c, acme, doc, globex).await;
    begin_with_grants(
        &c,
        acme,
        Some(reader),
        &["resources.read", "resources.write"],
    )
    .await;
    denied(
        &c,
        &format!("SELECT tenantry.unshare_resource('{doc}', '{globex}')"),
        "TN401",
    )
    .await;
    rollback(&c).await;
    // The target declines only with resources.write, as through the API.
    begin_with_grants(&c, globex, None, &["resources.read"]).await;
    denied(
        &c,
        &format!("SELECT tenantry.decline_share('{doc}')"),
        "TN401",
    )
    .await;
    rollback(&c).await;
    assert_eq!(
        count(&su, "SELECT count(*) FROM tenantry.shared_resources").await,
        1
    );
    // With the permissions, each works.
    begin_with_grants(&c, acme, Some(reader), &["resources.share"]).await;
    exec(
        &c,
        &format!("SELECT tenantry.unshare_resource('{doc}', '{globex}')"),
    )
    .await;
    exec(
        &c,
        &format!("SELECT tenantry.share_resource('{doc}', '{globex}')"),
    )
    .await;
    commit(&c).await;
    begin_with_grants(&c, acme, Some(reader), &["tenants.create"]).await;
    exec(
        &c,
        "SELECT tenantry.create_child_tenant('made-by-bob-allowed')",
    )
    .await;
    commit(&c).await;

    // Rows of an adopted table with sharing: the same permission.
    if crate::helpers::skip_adopted_sharing_on_citus(
        "sharing_and_child_creation_from_sql_need_the_permissions_the_api_checks, its rows of an adopted table",
    ) {
        return;
    }
    exec(
        &su,
        "CREATE TABLE public.notes (tenant_id uuid NOT NULL DEFAULT tenantry.current_tenant_id(),
                                    id int NOT NULL, body text, PRIMARY KEY (tenant_id, id));
         SELECT tenantry.adopt_table('public.notes', sharing => true);",
    )
    .await;
    begin_as(&c, acme).await;
    exec(
        &c,
        "INSERT INTO public.notes (id, body) VALUES (1, 'private')",
    )
    .await;
    commit(&c).await;
    begin_with_grants(&c, acme, Some(reader), &["resources.read"]).await;
    denied(
        &c,
        &format!("SELECT tenantry.share_row('public.notes', '1', '{globex}')"),
        "TN401",
    )
    .await;
    rollback(&c).await;
    assert_eq!(
        count(&su, "SELECT count(*) FROM tenantry.shared_rows").await,
        0
    );
    begin_as(&c, acme).await;
    exec(
        &c,
        &format!("SELECT tenantry.share_row('public.notes', '1', '{globex}')"),
    )
    .await;
    commit(&c).await;
    begin_with_grants(&c, acme, Some(reader), &["resources.read"]).await;
    denied(
        &c,
        &format!("SELECT tenantry.unshare_row('public.notes', '1', '{globex}')"),
        "TN401",
    )
    .await;
    rollback(&c).await;
    assert_eq!(
        count(&su, "SELECT count(*) FROM tenantry.shared_rows").await,
        1
    );
}

#[tokio::test]
async fn a_roles_write_holder_cannot_delete_a_role_holding_permissions_it_lacks() {
    let tdb = tenantry_db::testing::TestDatabase::new().await;
    let (c, su) = (app(&tdb).await, tdb.superuser_client().await);
    let t = create_tenant(&su, "acme", None).await;
    let _owner = add_member(&c, t, "owner@acme.test").await;
    let dave = add_member(&c, t, "dave@acme.test").await;
    let dev = role_with(&c, t, "dev", &["keys.write", "resources.read"]).await;
    begin_as(&c, t).await;
    exec(
        &c,
        &format!("SELECT tenantry.set_member_roles('{dave}', ARRAY['{dev}'::uuid])"),
    )
    .await;
    commit(&c).await;

    begin_with_grants(&c, t, None, &["roles.read", "roles.write"]).await;
    let message = denied(
        &c,
        &format!("DELETE FROM tenantry.roles WHERE role_id = '{dev}'"),
        "TN401",
    )
    .await;
    assert!(message.contains("cannot delete it"), "{message}");
    rollback(&c).await;
    assert_eq!(
        count(
            &su,
            &format!("SELECT count(*) FROM tenantry.member_roles WHERE role_id = '{dev}'")
        )
        .await,
        1,
        "dave keeps the role"
    );
    // Holding what the role holds, the same caller deletes it.
    begin_with_grants(
        &c,
        t,
        None,
        &["roles.write", "keys.write", "resources.read"],
    )
    .await;
    exec(
        &c,
        &format!("DELETE FROM tenantry.roles WHERE role_id = '{dev}'"),
    )
    .await;
    commit(&c).await;
    assert_eq!(
        count(
            &su,
            &format!("SELECT count(*) FROM tenantry.roles WHERE role_id = '{dev}'")
        )
        .await,
        0
    );
}
