//! Roles, permissions and members: a role-bound key has exactly its role's
//! permissions; no key can grant or mint more than it holds.

use serde_json::json;

use crate::helpers::{ids, random_id, TestApp};

const CATALOGUE: [&str; 15] = [
    "tenant.read",
    "tenants.create",
    "resources.read",
    "resources.write",
    "resources.delete",
    "resources.share",
    "members.read",
    "members.write",
    "members.invite",
    "roles.read",
    "roles.write",
    "keys.read",
    "keys.write",
    "audit.read",
    "usage.read",
];

#[tokio::test]
async fn a_key_bound_to_a_read_only_role_reads_resources_but_cannot_create_them() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let id = app.create_resource(&t.key, "doc").await;
    let role = app.create_role(&t.key, "reader", &["resources.read"]).await;
    let (reader, _) = app.create_role_key(&t.key, &role).await;

    app.get(&format!("/v1/resources/{id}"), &reader)
        .await
        .expect(200);
    assert_eq!(app.resource_names(&reader, "").await, vec!["doc"]);
    let r = app
        .post("/v1/resources", &reader, &json!({ "name": "nope" }))
        .await;
    let problem = r.problem(403, "permission_denied");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("resources.write"));
    // RFC 6750 §3.1: a valid bearer credential lacking what the route needs.
    let raw = app
        .client
        .post(app.url("/v1/resources"))
        .bearer_auth(&reader)
        .json(&json!({ "name": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 403);
    assert_eq!(
        raw.headers()[reqwest::header::WWW_AUTHENTICATE],
        "Bearer error=\"insufficient_scope\""
    );
    app.get("/v1/keys", &reader)
        .await
        .problem(403, "permission_denied");
    assert_eq!(app.resource_names(&t.key, "").await, vec!["doc"]);
}

#[tokio::test]
async fn a_key_bound_to_a_role_lacking_keys_write_cannot_create_keys() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let role = app
        .create_role(&t.key, "lister", &["keys.read", "resources.read"])
        .await;
    let (lister, _) = app.create_role_key(&t.key, &role).await;
    app.post("/v1/keys", &lister, &json!({ "role_id": role }))
        .await
        .problem(403, "permission_denied");
    // It can list keys (keys.read): still only the two.
    assert_eq!(app.get("/v1/keys", &lister).await.items().len(), 2);
}

#[tokio::test]
async fn a_restricted_key_cannot_mint_an_unbound_key_with_more_permissions() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let role = app
        .create_role(
            &t.key,
            "key-admin",
            &["keys.read", "keys.write", "resources.read"],
        )
        .await;
    let (restricted, _) = app.create_role_key(&t.key, &role).await;

    // Denied: an unbound key would hold every permission, resources.delete included.
    app.post("/v1/keys", &restricted, &json!({}))
        .await
        .problem(403, "permission_denied");
    // Denied: a role with more than it holds.
    let bigger = app
        .create_role(&t.key, "bigger", &["resources.read", "resources.delete"])
        .await;
    app.post("/v1/keys", &restricted, &json!({ "role_id": bigger }))
        .await
        .problem(403, "permission_denied");
    assert_eq!(
        app.get("/v1/keys", &t.key).await.items().len(),
        2,
        "no key may be left behind by a refused request"
    );
    // Allowed: a key bound to its own role.
    let r = app
        .post("/v1/keys", &restricted, &json!({ "role_id": role }))
        .await;
    let new_key = r.expect(201)["key"].as_str().unwrap().to_owned();
    app.get("/v1/resources", &new_key).await.expect(200);
    app.post("/v1/resources", &new_key, &json!({ "name": "x" }))
        .await
        .problem(403, "permission_denied");
}

#[tokio::test]
async fn a_restricted_key_cannot_grant_a_permission_it_does_not_hold() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let role = app
        .create_role(&t.key, "role-admin", &["roles.read", "roles.write"])
        .await;
    let (restricted, _) = app.create_role_key(&t.key, &role).await;
    let target = app.create_role(&t.key, "target", &[]).await;
    app.put(
        &format!("/v1/roles/{target}/permissions/resources.delete"),
        &restricted,
    )
    .await
    .problem(403, "permission_denied");
    // Allowed: a permission it holds.
    let r = app
        .put(
            &format!("/v1/roles/{target}/permissions/roles.read"),
            &restricted,
        )
        .await;
    assert_eq!(r.expect(200)["permissions"], json!(["roles.read"]));
}

#[tokio::test]
async fn granting_and_revoking_permissions_changes_a_bound_keys_access() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let role = app.create_role(&t.key, "grows", &["resources.read"]).await;
    let (key, _) = app.create_role_key(&t.key, &role).await;
    app.post("/v1/resources", &key, &json!({ "name": "a" }))
        .await
        .problem(403, "permission_denied");

    let r = app
        .put(
            &format!("/v1/roles/{role}/permissions/resources.write"),
            &t.key,
        )
        .await;
    assert_eq!(
        r.expect(200)["permissions"],
        json!(["resources.read", "resources.write"])
    );
    // Idempotent.
    app.put(
        &format!("/v1/roles/{role}/permissions/resources.write"),
        &t.key,
    )
    .await
    .expect(200);
    app.post("/v1/resources", &key, &json!({ "name": "a" }))
        .await
        .expect(201);

    let r = app
        .delete(
            &format!("/v1/roles/{role}/permissions/resources.write"),
            &t.key,
        )
        .await;
    assert_eq!(r.expect(200)["permissions"], json!(["resources.read"]));
    app.post("/v1/resources", &key, &json!({ "name": "b" }))
        .await
        .problem(403, "permission_denied");
}

#[tokio::test]
async fn granting_an_unknown_permission_is_404() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let role = app.create_role(&t.key, "r", &[]).await;
    app.put(&format!("/v1/roles/{role}/permissions/bogus.perm"), &t.key)
        .await
        .problem(404, "not_found");
    app.delete(&format!("/v1/roles/{role}/permissions/bogus.perm"), &t.key)
        .await
        .problem(404, "not_found");
    let roles = app.get("/v1/roles", &t.key).await.items();
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0]["permissions"], json!([]));
}

#[tokio::test]
async fn another_tenants_role_id_is_404() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    let b_role = app.create_role(&b.key, "b-role", &["resources.read"]).await;

    let foreign = app
        .put(
            &format!("/v1/roles/{b_role}/permissions/resources.write"),
            &a.key,
        )
        .await;
    foreign.problem(404, "not_found");
    let missing = app
        .put(
            &format!("/v1/roles/{}/permissions/resources.write", random_id()),
            &a.key,
        )
        .await;
    missing.problem(404, "not_found");
    assert_eq!(foreign.body["title"], missing.body["title"]);
    app.delete(
        &format!("/v1/roles/{b_role}/permissions/resources.read"),
        &a.key,
    )
    .await
    .problem(404, "not_found");
    app.post("/v1/keys", &a.key, &json!({ "role_id": b_role }))
        .await
        .problem(404, "not_found");
    let member = app.add_member(&a.key, "m@a.example").await;
    app.put(&format!("/v1/members/{member}/roles/{b_role}"), &a.key)
        .await
        .problem(404, "not_found");

    // b's role is unchanged and a lists none of it.
    let roles = app.get("/v1/roles", &b.key).await.items();
    assert_eq!(roles[0]["permissions"], json!(["resources.read"]));
    assert!(app.get("/v1/roles", &a.key).await.items().is_empty());
}

#[tokio::test]
async fn roles_are_listed_and_a_duplicate_role_name_is_409() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let other = app.tenant("other").await;
    app.create_role(&other.key, "editors", &[]).await;
    let r = app
        .post(
            "/v1/roles",
            &t.key,
            &json!({ "name": "editors", "description": "edit things" }),
        )
        .await;
    let role = r.expect(201).clone();
    assert_eq!(role["description"], "edit things");
    assert_eq!(role["tenant_id"], t.id.as_str());
    app.post("/v1/roles", &t.key, &json!({ "name": "editors" }))
        .await
        .problem(409, "conflict");
    let roles = app.get("/v1/roles", &t.key).await.items();
    assert_eq!(ids(&roles, "name"), vec!["editors"]);
    app.post("/v1/roles", &t.key, &json!({ "name": "" }))
        .await
        .problem(422, "validation_failed");
}

#[tokio::test]
async fn the_permission_catalogue_is_listed_and_needs_roles_read() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let items = app.get("/v1/permissions?limit=1000", &t.key).await.items();
    let mut names = ids(&items, "name");
    names.sort();
    let mut expected: Vec<String> = CATALOGUE.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(items.iter().all(|p| p["description"].is_string()));

    let role = app.create_role(&t.key, "reader", &["resources.read"]).await;
    let (reader, _) = app.create_role_key(&t.key, &role).await;
    app.get("/v1/permissions", &reader)
        .await
        .problem(403, "permission_denied");
}

#[tokio::test]
async fn members_are_added_listed_and_assigned_roles_and_a_duplicate_email_is_409() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let other = app.tenant("other").await;
    let r = app
        .post(
            "/v1/members",
            &t.key,
            &json!({ "email": "ada@example.com", "display_name": "Ada" }),
        )
        .await;
    let member = r.expect(201).clone();
    assert_eq!(member["email"], "ada@example.com");
    assert_eq!(member["tenant_id"], t.id.as_str());
    let user = member["user_id"].as_str().unwrap().to_owned();

    app.post(
        "/v1/members",
        &t.key,
        &json!({ "email": "ada@example.com" }),
    )
    .await
    .problem(409, "conflict");
    // The same email in another tenant is fine.
    app.post(
        "/v1/members",
        &other.key,
        &json!({ "email": "ada@example.com" }),
    )
    .await
    .expect(201);

    let members = app.get("/v1/members", &t.key).await.items();
    assert_eq!(ids(&members, "user_id"), vec![user.clone()]);

    let role = app.create_role(&t.key, "reader", &["resources.read"]).await;
    let r = app
        .put(&format!("/v1/members/{user}/roles/{role}"), &t.key)
        .await;
    assert_eq!(r.expect(200)["role_ids"], json!([role]));
    let members = app.get("/v1/members", &t.key).await.items();
    assert_eq!(members[0]["role_ids"], json!([role]));

    // Another tenant cannot assign roles to this member.
    let other_role = app.create_role(&other.key, "r", &[]).await;
    app.put(
        &format!("/v1/members/{user}/roles/{other_role}"),
        &other.key,
    )
    .await
    .problem(404, "not_found");

    // A member-bound key has the member's roles' permissions; Ada, the first
    // member, owns the tenant, and a key acting as her holds every permission
    // (it held none: found by an audit).
    let bob = app.add_member(&t.key, "bob@example.com").await;
    app.put(&format!("/v1/members/{bob}/roles/{role}"), &t.key)
        .await
        .expect(200);
    let (member_key, _) = app.create_key(&t.id, json!({ "user_id": bob })).await;
    app.get("/v1/resources", &member_key).await.expect(200);
    app.post("/v1/resources", &member_key, &json!({ "name": "x" }))
        .await
        .problem(403, "permission_denied");
    let (owner_key, _) = app.create_key(&t.id, json!({ "user_id": user })).await;
    let made = app
        .post("/v1/resources", &owner_key, &json!({ "name": "by ada" }))
        .await;
    assert_eq!(made.expect(201)["created_by"], user.as_str());
}

/// An email's 320 are characters, as the schema's `maxLength` and an
/// invitation count them: an address of accented letters under 320
/// characters but over 320 bytes was refused as "must look like
/// name@domain" (an outside fuzzing review).
#[tokio::test]
async fn a_members_email_is_measured_in_characters_as_the_schema_says() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let accented = format!("z@{}", "é".repeat(200));
    assert!(accented.len() > 320 && accented.chars().count() <= 320);
    app.post("/v1/members", &t.key, &json!({ "email": accented }))
        .await
        .expect(201);
    let long = format!("z@{}", "e".repeat(319));
    let r = app
        .post("/v1/members", &t.key, &json!({ "email": long }))
        .await;
    let problem = r.problem(422, "validation_failed");
    assert_eq!(problem["field"], "email");
    assert!(
        problem["detail"].as_str().unwrap().contains("320"),
        "{problem}"
    );
}

/// Removing a member ends what they hold: their keys (here a revoked one
/// and a live one) go with them, the live one is refused at once, and the
/// removal is not refused because keys name the member.
#[tokio::test]
async fn removing_a_member_who_holds_keys_removes_their_keys_and_the_member() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    // The first member owns the tenant (and a key acting as them holds everything).
    let owner = app.add_member(&t.key, "owner@example.com").await;
    let user = app.add_member(&t.key, "leaver@example.com").await;
    let (old_key, old_id) = app.create_key(&t.id, json!({ "user_id": user })).await;
    app.delete(&format!("/v1/keys/{old_id}"), &t.key)
        .await
        .expect(204);
    app.get("/v1/resources", &old_key)
        .await
        .problem(401, "unauthorized");
    let (live_key, _) = app.create_key(&t.id, json!({ "user_id": user })).await;
    // Recognised (the member holds no role yet, so: authenticated, not allowed).
    app.get("/v1/tenant", &live_key)
        .await
        .problem(403, "permission_denied");

    app.delete(&format!("/v1/members/{user}"), &t.key)
        .await
        .expect(204);
    app.get("/v1/tenant", &live_key)
        .await
        .problem(401, "unauthorized");
    assert_eq!(
        ids(&app.get("/v1/members", &t.key).await.items(), "user_id"),
        vec![owner]
    );
    let keys = app.get("/v1/keys", &t.key).await.items();
    assert!(
        keys.iter().all(|k| k["user_id"].is_null()),
        "no key names the removed member: {keys:?}"
    );
    app.delete(&format!("/v1/members/{user}"), &t.key)
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn a_key_without_members_write_cannot_add_members() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let role = app.create_role(&t.key, "viewer", &["members.read"]).await;
    let (viewer, _) = app.create_role_key(&t.key, &role).await;
    app.post("/v1/members", &viewer, &json!({ "email": "x@example.com" }))
        .await
        .problem(403, "permission_denied");
    assert!(app.get("/v1/members", &viewer).await.items().is_empty());
}

#[tokio::test]
async fn a_restricted_key_cannot_assign_a_role_with_permissions_it_lacks() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let hr = app
        .create_role(&t.key, "hr", &["members.read", "members.write"])
        .await;
    let (hr_key, _) = app.create_role_key(&t.key, &hr).await;
    let admin_role = app
        .create_role(&t.key, "admin", &["members.write", "keys.write"])
        .await;
    // The tenant's first member, its owner, comes from a caller holding
    // every permission (a_restricted_key_makes_nobody_the_owner_of_a_tenant_without_one).
    app.add_member(&t.key, "owner@example.com").await;
    let user = app.add_member(&hr_key, "e@example.com").await;
    app.put(&format!("/v1/members/{user}/roles/{admin_role}"), &hr_key)
        .await
        .problem(403, "permission_denied");
    // Allowed: a role within what it holds.
    let r = app
        .put(&format!("/v1/members/{user}/roles/{hr}"), &hr_key)
        .await;
    assert_eq!(r.expect(200)["role_ids"], json!([hr]));
}

/// A key holding members.write or members.invite but not every permission
/// cannot give a tenant without an owner its first member, who would own it,
/// by adding or by inviting (found by a review of the hierarchy: an
/// invitation to its own person made them the owner, who minted an unbound
/// key); once the tenant has an owner it adds and invites plain members.
#[tokio::test]
async fn a_restricted_key_makes_nobody_the_owner_of_a_tenant_without_one() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let hr = app
        .create_role(
            &t.key,
            "hr",
            &["members.read", "members.write", "members.invite"],
        )
        .await;
    let (hr_key, _) = app.create_role_key(&t.key, &hr).await;
    let refused = app
        .post(
            "/v1/members",
            &hr_key,
            &json!({ "email": "mallory@evil.test" }),
        )
        .await;
    let detail = refused.problem(403, "permission_denied")["detail"].clone();
    assert!(
        detail.as_str().unwrap_or("").contains("no owner yet"),
        "{detail}"
    );
    app.post(
        "/v1/invitations",
        &hr_key,
        &json!({ "email": "mallory@evil.test" }),
    )
    .await
    .problem(403, "permission_denied");
    assert!(app.get("/v1/members", &t.key).await.items().is_empty());
    assert!(app.get("/v1/invitations", &t.key).await.items().is_empty());
    app.add_member(&t.key, "owner@example.com").await;
    app.add_member(&hr_key, "e@example.com").await;
    app.post(
        "/v1/invitations",
        &hr_key,
        &json!({ "email": "f@example.com" }),
    )
    .await
    .expect(201);
}

/// One page of `GET /v1/members?{query}`: the members' ids and the next cursor.
async fn member_page(app: &TestApp, key: &str, query: &str) -> (Vec<String>, Option<String>) {
    let page = app
        .get(&format!("/v1/members?{query}"), key)
        .await
        .expect(200)
        .clone();
    let ids = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap().to_owned())
        .collect();
    (ids, page["next_cursor"].as_str().map(str::to_owned))
}

/// A client pages through members while the last one it saw is removed: the
/// next page starts after it, with nothing skipped and nothing repeated, and
/// so it does with the member after it removed too (members are paged by
/// their place in the list, not by the items around it).
#[tokio::test]
async fn paging_members_goes_on_after_the_last_member_seen_is_removed() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    for i in 0..5 {
        app.post(
            "/v1/members",
            &t.key,
            &json!({ "email": format!("m{i}@example.com") }),
        )
        .await
        .expect(201);
    }
    let (seen, cursor) = member_page(&app, &t.key, "limit=2").await;
    let cursor = cursor.unwrap();
    app.delete(&format!("/v1/members/{}", seen[1]), &t.key)
        .await
        .expect(204);
    let (next, _) = member_page(&app, &t.key, &format!("limit=2&cursor={cursor}")).await;
    let (all, _) = member_page(&app, &t.key, "limit=100").await;
    // The page after the removed member: the two that followed it.
    let at = all.iter().position(|u| *u == seen[0]).unwrap();
    assert_eq!(next, all[at + 1..at + 3].to_vec());
    assert!(!next.contains(&seen[1]));
    // The member the cursor ended on and the one after it both removed: the
    // page starts where they were. (The first member owns the tenant and stays.)
    let (page, c) = member_page(&app, &t.key, "limit=2").await;
    let c = c.unwrap();
    let (all, _) = member_page(&app, &t.key, "limit=100").await;
    let at = all.iter().position(|u| *u == page[1]).unwrap();
    for gone in [&all[at], &all[at + 1]] {
        app.delete(&format!("/v1/members/{gone}"), &t.key)
            .await
            .expect(204);
    }
    let (next, _) = member_page(&app, &t.key, &format!("limit=2&cursor={c}")).await;
    assert_eq!(
        next,
        all[at + 2..].iter().take(2).cloned().collect::<Vec<_>>()
    );
}
