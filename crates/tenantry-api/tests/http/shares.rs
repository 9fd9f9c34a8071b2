//! Sharing: the owner shares read-only; the target reads but cannot change,
//! delete or re-share; revoking takes effect at once.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{ids, random_id, same_404, TestApp};

#[tokio::test]
async fn a_share_target_reads_the_resource_but_cannot_change_delete_or_reshare_it() {
    let app = TestApp::spawn().await;
    let owner = app.tenant("owner").await;
    let target = app.tenant("target").await;
    let third = app.tenant("third").await;
    let id = app.create_resource(&owner.key, "doc").await;

    // Before the share: the target gets 404.
    app.get(&format!("/v1/resources/{id}"), &target.key)
        .await
        .problem(404, "not_found");

    let share = app
        .post(
            &format!("/v1/resources/{id}/shares"),
            &owner.key,
            &json!({ "tenant_id": target.id }),
        )
        .await;
    let body = share.expect(201);
    assert_eq!(body["resource_id"], id.as_str());
    assert_eq!(body["tenant_id"], target.id.as_str());
    assert_eq!(body["owner_tenant_id"], owner.id.as_str());

    let read = app.get(&format!("/v1/resources/{id}"), &target.key).await;
    let body = read.expect(200);
    assert_eq!(body["name"], "doc");
    assert_eq!(body["access"], "shared");
    assert_eq!(
        app.resource_names(&target.key, "owner=shared").await,
        vec!["doc"]
    );
    assert!(app
        .resource_names(&target.key, "owner=self")
        .await
        .is_empty());
    // A third tenant still sees nothing.
    app.get(&format!("/v1/resources/{id}"), &third.key)
        .await
        .problem(404, "not_found");

    app.patch(
        &format!("/v1/resources/{id}"),
        &target.key,
        &json!({ "name": "changed" }),
    )
    .await
    .problem(404, "not_found");
    app.delete(&format!("/v1/resources/{id}"), &target.key)
        .await
        .problem(404, "not_found");
    app.post(
        &format!("/v1/resources/{id}/shares"),
        &target.key,
        &json!({ "tenant_id": third.id }),
    )
    .await
    .problem(404, "not_found");
    app.get(&format!("/v1/resources/{id}/shares"), &target.key)
        .await
        .problem(404, "not_found");
    // Nor revoke a share for another tenant (its own it may decline).
    app.delete(
        &format!("/v1/resources/{id}/shares/{}", third.id),
        &target.key,
    )
    .await
    .problem(404, "not_found");

    // Unchanged, still shared with the target only.
    let body = app.get(&format!("/v1/resources/{id}"), &owner.key).await;
    assert_eq!(body.expect(200)["name"], "doc");
    app.get(&format!("/v1/resources/{id}"), &third.key)
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn a_duplicate_share_is_409_and_shares_are_listed() {
    let app = TestApp::spawn().await;
    let owner = app.tenant("owner").await;
    let t1 = app.tenant("t1").await;
    let t2 = app.tenant("t2").await;
    let id = app.create_resource(&owner.key, "doc").await;
    for t in [&t1, &t2] {
        app.post(
            &format!("/v1/resources/{id}/shares"),
            &owner.key,
            &json!({ "tenant_id": t.id }),
        )
        .await
        .expect(201);
    }
    app.post(
        &format!("/v1/resources/{id}/shares"),
        &owner.key,
        &json!({ "tenant_id": t1.id }),
    )
    .await
    .problem(409, "conflict");

    let items = app
        .get(&format!("/v1/resources/{id}/shares"), &owner.key)
        .await
        .items();
    let mut listed = ids(&items, "tenant_id");
    listed.sort();
    let mut expected = vec![t1.id.clone(), t2.id.clone()];
    expected.sort();
    assert_eq!(listed, expected);

    // Paged one by one.
    let first = app
        .get(&format!("/v1/resources/{id}/shares?limit=1"), &owner.key)
        .await;
    let body = first.expect(200).clone();
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    let cursor = body["next_cursor"].as_str().expect("a next cursor");
    let second = app
        .get(
            &format!("/v1/resources/{id}/shares?limit=1&cursor={cursor}"),
            &owner.key,
        )
        .await;
    let body2 = second.expect(200);
    assert_eq!(body2["items"].as_array().unwrap().len(), 1);
    assert_ne!(
        body2["items"][0]["tenant_id"],
        body["items"][0]["tenant_id"]
    );
    assert!(body2["next_cursor"].is_null());
}

#[tokio::test]
async fn sharing_with_a_missing_tenant_or_the_owner_itself_is_refused() {
    let app = TestApp::spawn().await;
    let owner = app.tenant("owner").await;
    let id = app.create_resource(&owner.key, "doc").await;
    app.post(
        &format!("/v1/resources/{id}/shares"),
        &owner.key,
        &json!({ "tenant_id": random_id() }),
    )
    .await
    .problem(404, "not_found");
    app.post(
        &format!("/v1/resources/{id}/shares"),
        &owner.key,
        &json!({ "tenant_id": owner.id }),
    )
    .await
    .problem(422, "validation_failed");
    app.post(
        &format!("/v1/resources/{}/shares", random_id()),
        &owner.key,
        &json!({ "tenant_id": owner.id }),
    )
    .await
    .problem(404, "not_found");
    assert!(app
        .get(&format!("/v1/resources/{id}/shares"), &owner.key)
        .await
        .items()
        .is_empty());
}

#[tokio::test]
async fn revoking_a_share_removes_the_targets_access_at_once() {
    let app = TestApp::spawn().await;
    let owner = app.tenant("owner").await;
    let target = app.tenant("target").await;
    let id = app.create_resource(&owner.key, "doc").await;
    app.post(
        &format!("/v1/resources/{id}/shares"),
        &owner.key,
        &json!({ "tenant_id": target.id }),
    )
    .await
    .expect(201);
    app.get(&format!("/v1/resources/{id}"), &target.key)
        .await
        .expect(200);

    let r = app
        .delete(
            &format!("/v1/resources/{id}/shares/{}", target.id),
            &owner.key,
        )
        .await;
    r.expect(204);
    app.get(&format!("/v1/resources/{id}"), &target.key)
        .await
        .problem(404, "not_found");
    assert!(app
        .resource_names(&target.key, "owner=shared")
        .await
        .is_empty());
    assert!(app
        .get(&format!("/v1/resources/{id}/shares"), &owner.key)
        .await
        .items()
        .is_empty());
    // The owner keeps it.
    app.get(&format!("/v1/resources/{id}"), &owner.key)
        .await
        .expect(200);
}

#[tokio::test]
async fn a_key_without_resources_share_cannot_share() {
    let app = TestApp::spawn().await;
    let owner = app.tenant("owner").await;
    let target = app.tenant("target").await;
    let id = app.create_resource(&owner.key, "doc").await;
    let role = app
        .create_role(&owner.key, "reader", &["resources.read"])
        .await;
    let (reader, _) = app.create_role_key(&owner.key, &role).await;
    app.post(
        &format!("/v1/resources/{id}/shares"),
        &reader,
        &json!({ "tenant_id": target.id }),
    )
    .await
    .problem(403, "permission_denied");
    app.get(&format!("/v1/resources/{id}"), &target.key)
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn sharing_with_a_suspended_tenant_is_409() {
    let app = TestApp::spawn().await;
    let owner = app.tenant("owner").await;
    let sleepy = app.tenant("sleepy").await;
    let id = app.create_resource(&owner.key, "doc").await;
    app.admin_post(&format!("/v1/tenants/{}/suspend", sleepy.id), &json!({}))
        .await
        .expect(200);
    app.post(
        &format!("/v1/resources/{id}/shares"),
        &owner.key,
        &json!({ "tenant_id": sleepy.id }),
    )
    .await
    .problem(409, "conflict");
    assert!(app
        .get(&format!("/v1/resources/{id}/shares"), &owner.key)
        .await
        .items()
        .is_empty());
}

#[tokio::test]
async fn deleting_a_shared_resource_removes_it_from_the_target() {
    let app = TestApp::spawn().await;
    let owner = app.tenant("owner").await;
    let target = app.tenant("target").await;
    let id = app.create_resource(&owner.key, "doc").await;
    app.post(
        &format!("/v1/resources/{id}/shares"),
        &owner.key,
        &json!({ "tenant_id": target.id }),
    )
    .await
    .expect(201);
    app.delete(&format!("/v1/resources/{id}"), &owner.key)
        .await
        .expect(204);
    app.get(&format!("/v1/resources/{id}"), &target.key)
        .await
        .problem(404, "not_found");
    assert!(app.resource_names(&target.key, "").await.is_empty());
}

#[tokio::test]
async fn a_target_declines_a_share_it_does_not_want_and_no_one_else_can_decline_it_for_it() {
    let app = TestApp::spawn().await;
    let owner = app.tenant("owner").await;
    let target = app.tenant("target").await;
    let third = app.tenant("third").await;
    let id = app.create_resource(&owner.key, "unwanted").await;
    app.post(
        &format!("/v1/resources/{id}/shares"),
        &owner.key,
        &json!({ "tenant_id": target.id }),
    )
    .await
    .expect(201);
    assert_eq!(app.resource_names(&target.key, "").await, vec!["unwanted"]);
    let shares =
        format!("SELECT count(*) FROM tenantry.shared_resources WHERE resource_id = '{id}'");

    // A third tenant cannot decline it for the target (not its share, nor
    // one made to it): answered like a resource that does not exist.
    for whose in [&target.id, &third.id] {
        same_404(
            &app,
            &third.key,
            Method::DELETE,
            &format!("/v1/resources/{{id}}/shares/{whose}"),
            &id,
            None,
        )
        .await;
    }
    // A key of the target that may only read cannot decline either.
    let reader = app
        .create_role(&target.key, "reader", &["resources.read"])
        .await;
    let (reader_key, _) = app.create_role_key(&target.key, &reader).await;
    app.delete(
        &format!("/v1/resources/{id}/shares/{}", target.id),
        &reader_key,
    )
    .await
    .problem(403, "permission_denied");
    assert_eq!(app.count(&shares).await, 1, "still shared");

    // The target declines: gone from its listings and from the owner's shares.
    app.delete(
        &format!("/v1/resources/{id}/shares/{}", target.id),
        &target.key,
    )
    .await
    .expect(204);
    assert!(app.resource_names(&target.key, "").await.is_empty());
    app.get(&format!("/v1/resources/{id}"), &target.key)
        .await
        .problem(404, "not_found");
    assert!(ids(
        &app.get(&format!("/v1/resources/{id}/shares"), &owner.key)
            .await
            .items(),
        "tenant_id"
    )
    .is_empty());
    assert_eq!(app.count(&shares).await, 0);
    assert_eq!(
        app.count(&format!(
            "SELECT cardinality(shared_with)::bigint FROM tenantry.resources WHERE id = '{id}'"
        ))
        .await,
        0
    );
    // Once: a second decline finds nothing.
    app.delete(
        &format!("/v1/resources/{id}/shares/{}", target.id),
        &target.key,
    )
    .await
    .problem(404, "not_found");
    // The owner's log names the target tenant, not its key; the target's
    // names its key; the owner may share again.
    let owner_log = app
        .get("/v1/audit?action=share.declined", &owner.key)
        .await
        .items();
    assert_eq!(owner_log.len(), 1, "{owner_log:?}");
    assert_eq!(owner_log[0]["actor"], format!("tenant:{}", target.id));
    let target_log = app
        .get("/v1/audit?action=share.declined", &target.key)
        .await
        .items();
    assert_eq!(target_log.len(), 1, "{target_log:?}");
    assert_eq!(target_log[0]["actor"], format!("key:{}", target.key_id));
    assert_eq!(target_log[0]["details"]["owner"], owner.id.as_str());
    app.post(
        &format!("/v1/resources/{id}/shares"),
        &owner.key,
        &json!({ "tenant_id": target.id }),
    )
    .await
    .expect(201);
}
