//! Resources and sharing: the guide's resource and sharing functions, and
//! `share_resource` / `shared_resources` (flaw 7).

use serde_json::{json, Value};
use tenantry_db::testing::TestDatabase;
use uuid::Uuid;

use crate::common::{count, create_tenant, exec, set_status};
use crate::helpers::{
    admin, app, clear_context, create_resource, denied, expect_sqlstate, expect_sqlstate_any,
    resource_names, set_context,
};

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

    // Allowed: shared_by is the acting member of the transaction (its
    // owner: sharing needs resources.share, which the owner holds).
    set_context(&app, a).await;
    let member: Uuid = app
        .query_one(
            "INSERT INTO tenant_members (email) VALUES ('owner@a.test') RETURNING user_id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    clear_context(&app).await;
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

    // Each tenant sees only the shares it made (the share records of its
    // resources); what was shared with it, it reads through the fence
    // resources_shared_with_me(). (A second policy for targets would be OR'd
    // with the owners' one: no index condition, issue 10 finding 8.)
    let share_count = "SELECT count(*) FROM shared_resources";
    set_context(&app, a).await;
    assert_eq!(count(&app, share_count).await, 1);
    set_context(&app, b).await;
    assert_eq!(count(&app, share_count).await, 0);
    assert_eq!(resource_names(&app).await, ["a-doc", "b-doc"]);
    set_context(&app, c).await;
    assert_eq!(count(&app, share_count).await, 0);
    assert!(resource_names(&app).await.is_empty());
    set_context(&app, e).await;
    assert_eq!(count(&app, share_count).await, 0);
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

/// Found by a contention audit: a share made while its target tenant was
/// being deleted outlived the deletion (the deletion's trigger had revoked
/// the shares it saw; the share read the target as active, uncommitted
/// deletion and all). The share now holds the target's row first: it waits
/// for the deletion and is refused as for any deleted tenant.
#[tokio::test]
async fn a_share_made_while_its_target_is_deleted_is_revoked_with_it_or_refused() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let owner = create_tenant(&admin, "owner", None).await;
    let target = create_tenant(&admin, "target", None).await;
    let doc = create_resource(&app, owner, "doc").await;

    exec(&admin, "BEGIN").await;
    set_status(&admin, target, "deleted").await;
    let sharing = tokio::spawn(async move {
        let shared = app
            .execute("SELECT share_resource($1, $2)", &[&doc, &target])
            .await;
        (app, shared)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    exec(&admin, "COMMIT").await;
    let (_app, shared) = sharing.await.unwrap();
    // Refused either way: it waited 100 ms at most for the deletion (55P03,
    // which the server retries, then finds the target deleted: 404).
    expect_sqlstate_any(shared, &["TN404", "55P03"]);
    let su = tdb.superuser_client().await;
    assert_eq!(
        count(
            &su,
            &format!(
                "SELECT count(*) FROM tenantry.shared_resources WHERE shared_with = '{target}'"
            )
        )
        .await,
        0,
        "no share outlives its target"
    );
}

/// The other order of the race above: a share still open when its target is
/// deleted. The share holds the target's row FOR KEY SHARE; the deletion
/// takes it FOR UPDATE, waits for the share to commit, and its trigger then
/// revokes that share with the others (the resource's `shared_with` too).
#[tokio::test]
async fn a_target_deleted_while_a_share_with_it_is_open_waits_for_it_and_revokes_it() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let owner = create_tenant(&admin, "owner", None).await;
    let target = create_tenant(&admin, "target", None).await;
    let doc = create_resource(&app, owner, "doc").await;

    exec(&app, "BEGIN").await;
    app.execute("SELECT share_resource($1, $2)", &[&doc, &target])
        .await
        .unwrap();
    let deleting = tokio::spawn(async move {
        set_status(&admin, target, "deleted").await;
    });
    // (Seen waiting: a fixed 300 ms then "not finished" passed as well when
    // the deletion had not begun.)
    let watcher = tdb.superuser_client().await;
    assert!(
        tenantry_db::testing::a_session_waits_for_a_lock(&watcher).await,
        "the deletion waits for the open share"
    );
    assert!(!deleting.is_finished());
    exec(&app, "COMMIT").await;
    deleting.await.unwrap();
    let su = tdb.superuser_client().await;
    assert_eq!(
        count(
            &su,
            &format!(
                "SELECT count(*) FROM tenantry.shared_resources WHERE shared_with = '{target}'"
            )
        )
        .await,
        0,
        "no share outlives its target"
    );
    assert_eq!(
        count(
            &su,
            &format!(
                "SELECT count(*) FROM tenantry.resources WHERE id = '{doc}' AND shared_with <> '{{}}'"
            )
        )
        .await,
        0,
        "the resource is shared with nobody"
    );
}

/// The owner's side of the same race (found by a contention re-audit): a
/// parent sharing its child's resource while the child is deleted. The
/// share holds the owner's row FOR KEY SHARE too: a deletion already under
/// way refuses it (the owner is as missing as its resource, or the share
/// waited its 100 ms), and a share already open is waited for and revoked
/// by the deletion. Either way the target reads nothing of the deleted
/// tenant.
#[tokio::test]
async fn a_share_of_a_resource_whose_owner_is_deleted_meanwhile_is_refused_or_revoked() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let parent = create_tenant(&admin, "parent", None).await;
    let child = create_tenant(&admin, "child", Some(parent)).await;
    let other_child = create_tenant(&admin, "other-child", Some(parent)).await;
    let target = create_tenant(&admin, "target", None).await;
    let app = app(&tdb).await;
    let doc = create_resource(&app, child, "doc").await;
    let other_doc = create_resource(&app, other_child, "other-doc").await;
    let su = tdb.superuser_client().await;
    let shares_of = |owner: Uuid| {
        let su = &su;
        async move {
            count(
                su,
                &format!(
                    "SELECT (SELECT count(*) FROM tenantry.shared_resources WHERE tenant_id = '{owner}')
                          + (SELECT count(*) FROM tenantry.resources WHERE tenant_id = '{owner}' AND shared_with <> '{{}}')"
                ),
            )
            .await
        }
    };

    // The deletion first: the parent's share waits for it, then is refused.
    set_context(&app, parent).await;
    exec(&admin, "BEGIN").await;
    set_status(&admin, child, "deleted").await;
    let sharing = tokio::spawn(async move {
        let shared = app
            .execute("SELECT share_resource($1, $2)", &[&doc, &target])
            .await;
        (app, shared)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    exec(&admin, "COMMIT").await;
    let (app, shared) = sharing.await.unwrap();
    expect_sqlstate_any(shared, &["TN404", "55P03"]);
    assert_eq!(shares_of(child).await, 0, "no share of a deleted owner");

    // The share first, still open: the deletion waits for it and revokes it.
    exec(&app, "BEGIN").await;
    app.execute("SELECT share_resource($1, $2)", &[&other_doc, &target])
        .await
        .unwrap();
    let deleting = tokio::spawn(async move {
        set_status(&admin, other_child, "deleted").await;
    });
    // (Seen waiting: a fixed 300 ms then "not finished" passed as well when
    // the deletion had not begun.)
    let watcher = tdb.superuser_client().await;
    assert!(
        tenantry_db::testing::a_session_waits_for_a_lock(&watcher).await,
        "the deletion waits for the open share"
    );
    assert!(!deleting.is_finished());
    exec(&app, "COMMIT").await;
    deleting.await.unwrap();
    assert_eq!(shares_of(other_child).await, 0, "revoked with its owner");
}
