//! Sharing: targets that do not exist, are suspended or are the owner; what a
//! share target can do with what it was given; revoking and duplicate shares.
//! Each attack runs across tiers (owner and target in either), and the
//! third tenants it makes sit in the tier `a` is not in.

use uuid::Uuid;

use crate::common::{count, exec, set_status, strings};
use crate::helpers::{
    across_tiers, app, begin_as, commit, denied, names_seen_by, rollback, same_failure, share,
    unshare, World, READABLE_NAMES,
};

across_tiers!(
    sharing_with_a_missing_or_deleted_tenant_gives_the_same_not_found,
    sharing_with_a_suspended_tenant_or_the_owner_itself_is_refused,
    a_share_target_cannot_reshare_change_delete_or_unshare_what_it_was_given,
    revoking_a_share_hides_the_resource_from_the_next_statement_of_an_open_reader,
    a_duplicate_share_is_refused_and_leaves_one_record,
);

async fn sharing_with_a_missing_or_deleted_tenant_gives_the_same_not_found(w: World) {
    let gone = w.tenant("gone", None, w.tiers.0.other()).await;
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

async fn sharing_with_a_suspended_tenant_or_the_owner_itself_is_refused(w: World) {
    let asleep = w.tenant("asleep", None, w.tiers.0.other()).await;
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

async fn a_share_target_cannot_reshare_change_delete_or_unshare_what_it_was_given(w: World) {
    let c = w.tenant("c", None, w.tiers.0.other()).await;
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
    for table in w.resource_tables().await {
        let n = w
            .app
            .execute(
                &format!("UPDATE {table} SET name = 'pwned' WHERE id = $1"),
                &[&w.rb],
            )
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
        let n = w
            .app
            .execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&w.rb])
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
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

async fn revoking_a_share_hides_the_resource_from_the_next_statement_of_an_open_reader(w: World) {
    share(&w.app, w.b, w.rb, w.a).await;
    let reader = app(&w.tdb).await;
    begin_as(&reader, w.a).await;
    assert_eq!(
        strings(&reader, READABLE_NAMES).await,
        ["a-doc", "b-secret"]
    );
    // The owner revokes while the reader's transaction is still open.
    unshare(&w.app, w.b, w.rb, w.a).await;
    assert_eq!(
        strings(&reader, READABLE_NAMES).await,
        ["a-doc"],
        "the reader's next statement no longer sees it"
    );
    assert_eq!(
        count(
            &reader,
            &format!(
                "SELECT count(*) FROM tenantry.resources_shared_with_me('{}')",
                w.rb
            )
        )
        .await,
        0
    );
    commit(&reader).await;
}

async fn a_duplicate_share_is_refused_and_leaves_one_record(w: World) {
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
