//! Attack suite through the HTTP API: another tenant's objects by id (404 byte-identical to a missing id once the id is scrubbed), smuggled tenant ids, lists, sharing, hierarchy, roles and keys (with a long key cache), usage and schema-isolated tenants. Every case checks afterwards that nothing changed.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{random_id, same_404, scrub, TenantKey, TestApp};

/// A member of the key's tenant; returns its user id.
async fn add_member(app: &TestApp, key: &str, email: &str) -> String {
    app.post("/v1/members", key, &json!({ "email": email }))
        .await
        .expect(201)["user_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A `tenantry_server` connection switched to `role` (setup that the API has no route for).
async fn db_as(app: &TestApp, role: &str) -> tokio_postgres::Client {
    let c = app.db.server_client().await;
    c.batch_execute(&format!("SET ROLE {role}")).await.unwrap();
    c
}

#[tokio::test]
async fn every_route_addressing_a_foreign_object_answers_the_missing_id_404() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    let c = app.tenant("c").await;
    let rb = app.create_resource(&b.key, "b-secret").await;
    app.post(
        &format!("/v1/resources/{rb}/shares"),
        &b.key,
        &json!({ "tenant_id": c.id }),
    )
    .await
    .expect(201);
    let b_role = app.create_role(&b.key, "b-role", &["resources.read"]).await;
    let b_user = add_member(&app, &b.key, "b@example.com").await;
    let (_, b_key_id) = app.create_key(&b.id, json!({})).await;
    let a_role = app.create_role(&a.key, "a-role", &["resources.read"]).await;
    let a_user = add_member(&app, &a.key, "a@example.com").await;

    let patch = json!({ "name": "pwned" });
    let share = json!({ "tenant_id": a.id });
    for (method, path, foreign, body) in [
        (Method::GET, "/v1/resources/{id}".to_owned(), &rb, None),
        (
            Method::PATCH,
            "/v1/resources/{id}".to_owned(),
            &rb,
            Some(&patch),
        ),
        (Method::DELETE, "/v1/resources/{id}".to_owned(), &rb, None),
        (
            Method::POST,
            "/v1/resources/{id}/shares".to_owned(),
            &rb,
            Some(&share),
        ),
        (
            Method::GET,
            "/v1/resources/{id}/shares".to_owned(),
            &rb,
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/resources/{{id}}/shares/{}", c.id),
            &rb,
            None,
        ),
        (
            Method::PUT,
            "/v1/roles/{id}/permissions/resources.read".to_owned(),
            &b_role,
            None,
        ),
        (
            Method::DELETE,
            "/v1/roles/{id}/permissions/resources.read".to_owned(),
            &b_role,
            None,
        ),
        (
            Method::PUT,
            format!("/v1/members/{a_user}/roles/{{id}}"),
            &b_role,
            None,
        ),
        (
            Method::PUT,
            format!("/v1/members/{{id}}/roles/{a_role}"),
            &b_user,
            None,
        ),
        (Method::DELETE, "/v1/keys/{id}".to_owned(), &b_key_id, None),
        (
            Method::POST,
            "/v1/keys/{id}/rotate".to_owned(),
            &b_key_id,
            None,
        ),
    ] {
        same_404(&app, &a.key, method, &path, foreign, body).await;
    }

    // Nothing of b's changed.
    let r = app.get(&format!("/v1/resources/{rb}"), &b.key).await;
    assert_eq!(r.expect(200)["name"], "b-secret");
    let shares = app
        .get(&format!("/v1/resources/{rb}/shares"), &b.key)
        .await
        .items();
    assert_eq!(shares.len(), 1);
    assert_eq!(shares[0]["tenant_id"], c.id.as_str());
    app.get("/v1/keys", &b.key).await.expect(200);
    let keys = app.get("/v1/keys", &b.key).await.items();
    assert!(keys.iter().all(|k| k["revoked_at"].is_null()), "{keys:?}");
    let roles = app.get("/v1/roles", &b.key).await.items();
    let role = roles
        .iter()
        .find(|r| r["role_id"] == b_role.as_str())
        .unwrap();
    assert_eq!(role["permissions"], json!(["resources.read"]));
    let members = app.get("/v1/members", &b.key).await.items();
    assert!(members.iter().all(|m| m["role_ids"] == json!([])));
}

#[tokio::test]
async fn a_parent_revoking_or_rotating_a_childs_key_gets_the_missing_key_404() {
    let app = TestApp::spawn().await;
    let parent = app.tenant("parent").await;
    let child = app.child_tenant("child", Some(&parent.id)).await;
    for (method, path) in [
        (Method::DELETE, "/v1/keys/{id}"),
        (Method::POST, "/v1/keys/{id}/rotate"),
    ] {
        same_404(&app, &parent.key, method, path, &child.key_id, None).await;
    }
    app.get("/v1/tenant", &child.key).await.expect(200);
}

#[tokio::test]
async fn list_routes_never_carry_a_row_of_another_tenant() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    let c = app.tenant("c").await;
    app.create_resource(&a.key, "a-doc").await;
    let rb = app.create_resource(&b.key, "b-secret").await;
    app.post(
        &format!("/v1/resources/{rb}/shares"),
        &b.key,
        &json!({ "tenant_id": c.id }),
    )
    .await
    .expect(201);
    app.create_role(&b.key, "b-role", &["resources.read"]).await;
    add_member(&app, &b.key, "b-member@example.com").await;
    app.child_tenant("b-child", Some(&b.id)).await;

    for path in [
        "/v1/resources?limit=1000",
        "/v1/resources?owner=self",
        "/v1/resources?owner=shared",
        "/v1/resources?owner=descendants",
        "/v1/resources?name_prefix=b",
        "/v1/members",
        "/v1/roles",
        "/v1/keys",
        "/v1/audit",
        "/v1/tenant",
        "/v1/tenant/children",
        "/v1/usage/resources",
        "/v1/usage/metrics",
    ] {
        let r = app.get(path, &a.key).await;
        r.expect(200);
        for secret in [
            b.id.as_str(),
            c.id.as_str(),
            rb.as_str(),
            "b-secret",
            "b-role",
            "b-member",
            "b-child",
        ] {
            assert!(
                !r.text.contains(secret),
                "{path} carried {secret}: {}",
                r.text
            );
        }
    }
    assert_eq!(app.resource_names(&a.key, "").await, ["a-doc"]);
}

#[tokio::test]
async fn a_tenant_id_smuggled_in_the_query_or_a_header_never_changes_the_tenant() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    app.create_resource(&a.key, "a-doc").await;
    app.create_resource(&b.key, "b-secret").await;
    for path in [
        "/v1/resources?tenant_id={b}",
        "/v1/resources?owner=self&tenant=%7Bb%7D",
        "/v1/keys?tenant_id={b}",
        "/v1/members?tenant_id={b}",
        "/v1/roles?tenant_id={b}",
        "/v1/audit?tenant_id={b}",
        "/v1/tenant/children?tenant_id={b}",
        "/v1/usage/metrics?tenant_id={b}",
    ] {
        app.get(&path.replace("{b}", &b.id), &a.key)
            .await
            .problem(400, "invalid_query");
    }
    for header in [
        "x-tenant-id",
        "x-tenantry-tenant",
        "tenant-id",
        "x-forwarded-user",
        "x-original-url",
    ] {
        let value = if header == "x-original-url" {
            format!("/v1/tenants/{}/usage", b.id)
        } else {
            b.id.clone()
        };
        let r = app
            .send_raw(
                app.client
                    .get(app.url("/v1/resources"))
                    .bearer_auth(&a.key)
                    .header(header, value),
            )
            .await;
        if header == "x-tenant-id" {
            // The header people use to name their tenant: with a key it must
            // name the key's own tenant, or the request is refused (never
            // served as b, nor silently as a).
            assert_eq!(r.problem(422, "validation_failed")["field"], "X-Tenant-Id");
            continue;
        }
        let items = r.items();
        assert_eq!(items.len(), 1, "{header}");
        assert_eq!(items[0]["name"], "a-doc", "{header}");
        let me = app
            .send_raw(
                app.client
                    .get(app.url("/v1/tenant"))
                    .bearer_auth(&a.key)
                    .header(header, b.id.as_str()),
            )
            .await;
        assert_eq!(me.expect(200)["tenant_id"], a.id.as_str(), "{header}");
    }
}

#[tokio::test]
async fn a_tenant_id_smuggled_in_a_path_reaches_only_admin_routes_which_refuse_tenant_keys() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    let rb = app.create_resource(&b.key, "b-secret").await;
    for (method, path) in [
        (Method::GET, "/v1/tenants/{b}"),
        (Method::PATCH, "/v1/tenants/{b}"),
        (Method::DELETE, "/v1/tenants/{b}"),
        (Method::POST, "/v1/tenants/{b}/suspend"),
        (Method::POST, "/v1/tenants/{b}/keys"),
        (Method::GET, "/v1/tenants/{b}/usage"),
        (Method::GET, "/v1/tenants/{b}/audit"),
        (Method::GET, "/v1/tenants"),
    ] {
        let body = json!({});
        let r = app
            .send(
                method.clone(),
                &path.replace("{b}", &b.id),
                Some(&a.key),
                matches!(method, Method::PATCH | Method::POST).then_some(&body),
            )
            .await;
        r.problem(403, "wrong_credential");
        assert!(!r.text.contains("b-secret"), "{path}");
    }
    for path in [
        format!("/v1/tenant/{}", b.id),
        format!("/v1/tenants/{}/resources/{rb}", b.id),
        format!("/v1/resources/{rb}/../{rb}"),
    ] {
        let r = app.get(&path, &a.key).await;
        assert!(
            r.status == 404 || r.status == 400,
            "{path}: {} {}",
            r.status,
            r.text
        );
        assert!(!r.text.contains("b-secret"), "{path}");
    }
    assert_eq!(
        app.get("/v1/tenant", &b.key).await.expect(200)["status"],
        "active"
    );
}

#[tokio::test]
async fn a_tenant_id_smuggled_in_any_body_is_refused_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    let ra = app.create_resource(&a.key, "a-doc").await;
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/keys".to_owned(),
            json!({ "tenant_id": b.id }),
        ),
        (
            Method::POST,
            "/v1/members".to_owned(),
            json!({ "email": "x@example.com", "tenant_id": b.id }),
        ),
        (
            Method::POST,
            "/v1/roles".to_owned(),
            json!({ "name": "x", "tenant_id": b.id }),
        ),
        (
            Method::PATCH,
            format!("/v1/resources/{ra}"),
            json!({ "name": "moved", "tenant_id": b.id }),
        ),
        (
            Method::POST,
            format!("/v1/resources/{ra}/shares"),
            json!({ "tenant_id": b.id, "owner_tenant_id": b.id }),
        ),
        (
            Method::POST,
            "/v1/resources".to_owned(),
            json!({ "name": "x", "data": {}, "owner_tenant_id": b.id }),
        ),
        (
            Method::POST,
            format!("/v1/keys/{}/rotate", a.key_id),
            json!({ "tenant_id": b.id }),
        ),
    ] {
        app.send(method, &path, Some(&a.key), Some(&body))
            .await
            .problem(400, "invalid_json");
    }
    // A child under another tenant: refused before any write.
    app.post(
        "/v1/tenants",
        &a.key,
        &json!({ "name": "cuckoo", "parent_id": b.id }),
    )
    .await
    .problem(403, "forbidden");
    // Inside data, a tenant_id is only data.
    let r = app
        .create_resource_with(
            &a.key,
            json!({ "name": "d", "data": { "tenant_id": b.id } }),
        )
        .await;
    assert_eq!(r["tenant_id"], a.id.as_str());
    assert_eq!(app.resource_names(&b.key, "").await, Vec::<String>::new());
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM tenantry.tenants WHERE parent_id = '{}'",
            b.id
        ))
        .await,
        0
    );
    assert_eq!(app.get("/v1/keys", &b.key).await.items().len(), 1);
    assert!(app.get("/v1/members", &b.key).await.items().is_empty());
    assert!(app.get("/v1/roles", &b.key).await.items().is_empty());
    assert!(app
        .get(&format!("/v1/resources/{ra}/shares"), &a.key)
        .await
        .items()
        .is_empty());
}

#[tokio::test]
async fn sharing_with_a_deleted_tenant_answers_exactly_like_a_missing_one() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let gone = app.tenant("gone").await;
    let ra = app.create_resource(&a.key, "a-doc").await;
    app.delete(&format!("/v1/tenants/{}", gone.id), &app.admin_token)
        .await
        .expect(204);
    let missing = random_id();
    let r1 = app
        .post(
            &format!("/v1/resources/{ra}/shares"),
            &a.key,
            &json!({ "tenant_id": gone.id }),
        )
        .await;
    let r2 = app
        .post(
            &format!("/v1/resources/{ra}/shares"),
            &a.key,
            &json!({ "tenant_id": missing }),
        )
        .await;
    r1.problem(404, "not_found");
    assert_eq!(
        scrub(&r1, &[&gone.id, &missing]),
        scrub(&r2, &[&gone.id, &missing])
    );
    assert!(app
        .get(&format!("/v1/resources/{ra}/shares"), &a.key)
        .await
        .items()
        .is_empty());
}

#[tokio::test]
async fn re_sharing_a_resource_one_only_received_answers_like_a_missing_resource() {
    let app = TestApp::spawn().await;
    let owner = app.tenant("owner").await;
    let target = app.tenant("target").await;
    let third = app.tenant("third").await;
    let id = app.create_resource(&owner.key, "doc").await;
    app.post(
        &format!("/v1/resources/{id}/shares"),
        &owner.key,
        &json!({ "tenant_id": target.id }),
    )
    .await
    .expect(201);
    let body = json!({ "tenant_id": third.id });
    same_404(
        &app,
        &target.key,
        Method::POST,
        "/v1/resources/{id}/shares",
        &id,
        Some(&body),
    )
    .await;
    same_404(
        &app,
        &target.key,
        Method::GET,
        "/v1/resources/{id}/shares",
        &id,
        None,
    )
    .await;
    // Revoking the share of another target: not its to revoke. (Its own
    // share it may decline: a_target_declines_a_share_it_does_not_want_…)
    same_404(
        &app,
        &target.key,
        Method::DELETE,
        &format!("/v1/resources/{{id}}/shares/{}", third.id),
        &id,
        None,
    )
    .await;
    same_404(
        &app,
        &target.key,
        Method::DELETE,
        "/v1/resources/{id}",
        &id,
        None,
    )
    .await;
    // Still shared with the target only, and the target still reads it.
    let shares = app
        .get(&format!("/v1/resources/{id}/shares"), &owner.key)
        .await
        .items();
    assert_eq!(shares.len(), 1);
    app.get(&format!("/v1/resources/{id}"), &target.key)
        .await
        .expect(200);
    app.get(&format!("/v1/resources/{id}"), &third.key)
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn a_share_revoked_while_the_target_pages_through_a_list_is_gone_from_the_next_page() {
    let app = TestApp::spawn().await;
    let owner = app.tenant("owner").await;
    let target = app.tenant("target").await;
    let first = app.create_resource(&owner.key, "first").await;
    let second = app.create_resource(&owner.key, "second").await;
    for id in [&first, &second] {
        app.post(
            &format!("/v1/resources/{id}/shares"),
            &owner.key,
            &json!({ "tenant_id": target.id }),
        )
        .await
        .expect(201);
    }
    // Newest first: "second" on page one.
    let page = app
        .get("/v1/resources?owner=shared&limit=1", &target.key)
        .await;
    let body = page.expect(200).clone();
    assert_eq!(body["items"][0]["name"], "second");
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    app.delete(
        &format!("/v1/resources/{first}/shares/{}", target.id),
        &owner.key,
    )
    .await
    .expect(204);
    let next = app
        .get(
            &format!("/v1/resources?owner=shared&limit=1&cursor={cursor}"),
            &target.key,
        )
        .await;
    assert!(next.items().is_empty(), "{}", next.text);
    app.get(&format!("/v1/resources/{first}"), &target.key)
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn a_child_reads_nothing_of_its_parent_and_a_sibling_nothing_of_its_sibling() {
    let app = TestApp::spawn().await;
    let parent = app.tenant("parent").await;
    let left = app.child_tenant("left", Some(&parent.id)).await;
    let right = app.child_tenant("right", Some(&parent.id)).await;
    let rp = app.create_resource(&parent.key, "parent-doc").await;
    let rl = app.create_resource(&left.key, "left-doc").await;
    for (reader, id) in [(&left, &rp), (&right, &rp), (&right, &rl)] {
        same_404(
            &app,
            &reader.key,
            Method::GET,
            "/v1/resources/{id}",
            id,
            None,
        )
        .await;
        let patch = json!({ "name": "pwned" });
        same_404(
            &app,
            &reader.key,
            Method::PATCH,
            "/v1/resources/{id}",
            id,
            Some(&patch),
        )
        .await;
    }
    assert_eq!(app.resource_names(&left.key, "").await, ["left-doc"]);
    assert!(app.resource_names(&right.key, "").await.is_empty());
    assert!(app
        .get("/v1/tenant/children", &left.key)
        .await
        .items()
        .is_empty());
    assert_eq!(
        app.resource_names(&parent.key, "").await,
        ["left-doc", "parent-doc"]
    );
}

#[tokio::test]
async fn depth_three_is_visible_downwards_and_detaching_revokes_the_parent_at_once() {
    // A long key cache: the parent's cached identity must not keep the subtree.
    let app = TestApp::spawn_with(|s| s.key_cache_ttl_ms = 3_600_000).await;
    let top = app.tenant("top").await;
    let d1 = app.child_tenant("d1", Some(&top.id)).await;
    let d2 = app.child_tenant("d2", Some(&d1.id)).await;
    let d3 = app.child_tenant("d3", Some(&d2.id)).await;
    let r3 = app.create_resource(&d3.key, "d3-doc").await;
    app.get(&format!("/v1/resources/{r3}"), &top.key)
        .await
        .expect(200);
    assert_eq!(
        app.resource_names(&top.key, "owner=descendants").await,
        ["d3-doc"]
    );
    same_404(
        &app,
        &d3.key,
        Method::GET,
        "/v1/resources/{id}",
        &app.create_resource(&top.key, "top-doc").await,
        None,
    )
    .await;

    // Detach d2 (and with it d3) from d1: top and d1 lose it with their next request.
    app.patch(
        &format!("/v1/tenants/{}", d2.id),
        &app.admin_token,
        &json!({ "parent_id": null }),
    )
    .await
    .expect(200);
    for ancestor in [&top, &d1] {
        same_404(
            &app,
            &ancestor.key,
            Method::GET,
            "/v1/resources/{id}",
            &r3,
            None,
        )
        .await;
        assert!(app
            .resource_names(&ancestor.key, "owner=descendants")
            .await
            .is_empty());
        let usage = app.get("/v1/usage/resources", &ancestor.key).await;
        assert!(!usage.text.contains(&d3.id), "{}", usage.text);
    }
    assert_eq!(app.resource_names(&d2.key, "").await, ["d3-doc"]);
}

#[tokio::test]
async fn a_cycle_at_depth_three_is_409_and_the_tree_stays_as_it_was() {
    let app = TestApp::spawn().await;
    let top = app.tenant("top").await;
    let d1 = app.child_tenant("d1", Some(&top.id)).await;
    let d2 = app.child_tenant("d2", Some(&d1.id)).await;
    let d3 = app.child_tenant("d3", Some(&d2.id)).await;
    app.patch(
        &format!("/v1/tenants/{}", top.id),
        &app.admin_token,
        &json!({ "parent_id": d3.id }),
    )
    .await
    .problem(409, "conflict");
    let t = app.admin_get(&format!("/v1/tenants/{}", top.id)).await;
    assert!(t.expect(200)["parent_id"].is_null());
    app.create_resource(&d3.key, "d3-doc").await;
    assert_eq!(app.resource_names(&top.key, "").await, ["d3-doc"]);
    assert!(app
        .resource_names(&d3.key, "owner=descendants")
        .await
        .is_empty());
}

#[tokio::test]
async fn a_role_bound_key_cannot_raise_its_own_role_or_mint_a_wider_key() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let role = app
        .create_role(
            &t.key,
            "limited",
            &["roles.write", "roles.read", "keys.write"],
        )
        .await;
    let (limited, _) = app.create_role_key(&t.key, &role).await;
    for p in [
        "resources.read",
        "members.write",
        "keys.read",
        "tenants.create",
    ] {
        app.put(&format!("/v1/roles/{role}/permissions/{p}"), &limited)
            .await
            .problem(403, "permission_denied");
    }
    let wide = app
        .create_role(&t.key, "wide", &["resources.read", "keys.read"])
        .await;
    app.post("/v1/keys", &limited, &json!({ "role_id": wide }))
        .await
        .problem(403, "permission_denied");
    app.post("/v1/keys", &limited, &json!({}))
        .await
        .problem(403, "permission_denied");
    // Its own role is unchanged and it still cannot read resources.
    let roles = app.get("/v1/roles", &limited).await.items();
    let mine = roles
        .iter()
        .find(|r| r["role_id"] == role.as_str())
        .unwrap();
    assert_eq!(
        mine["permissions"],
        json!(["keys.write", "roles.read", "roles.write"])
    );
    app.get("/v1/resources", &limited)
        .await
        .problem(403, "permission_denied");
    assert_eq!(app.get("/v1/keys", &t.key).await.items().len(), 2);
}

#[tokio::test]
async fn roles_named_like_builtins_grant_only_their_own_permissions() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let other = app.tenant("other").await;
    app.create_resource(&other.key, "other-doc").await;
    for name in [
        "tenantry_owner",
        "tenantry_admin",
        "admin",
        "owner",
        "postgres",
        "root",
    ] {
        let role = app.create_role(&t.key, name, &["tenant.read"]).await;
        let (key, _) = app.create_role_key(&t.key, &role).await;
        app.get("/v1/tenant", &key).await.expect(200);
        app.get("/v1/resources", &key)
            .await
            .problem(403, "permission_denied");
        app.get("/v1/tenants", &key)
            .await
            .problem(403, "wrong_credential");
    }
    let pg_roles = app
        .count("SELECT count(*) FROM pg_roles WHERE rolname IN ('admin', 'owner', 'root')")
        .await;
    assert_eq!(pg_roles, 0, "tenant roles are rows, never database roles");
}

#[tokio::test]
async fn a_cached_key_is_refused_once_its_expiry_passes_even_with_a_long_cache() {
    let app = TestApp::spawn_with(|s| s.key_cache_ttl_ms = 3_600_000).await;
    let t = app.tenant("t").await;
    // 5 s: its creation and first use must fall before it on a loaded machine.
    let expires = chrono::Utc::now() + chrono::Duration::seconds(5);
    let r = app
        .post(
            "/v1/keys",
            &t.key,
            &json!({ "expires_at": expires.to_rfc3339() }),
        )
        .await;
    let key = r.expect(201)["key"].as_str().unwrap().to_owned();
    app.get("/v1/tenant", &key).await.expect(200);
    // Wait (setup, not an assertion) until the expiry has passed.
    while chrono::Utc::now() <= expires + chrono::Duration::milliseconds(50) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let refused = app.get("/v1/tenant", &key).await;
    refused.problem(401, "unauthorized");
    let unknown = app
        .get(
            "/v1/tenant",
            &format!("tk_{}_{}", "0".repeat(12), "a".repeat(64)),
        )
        .await;
    assert_eq!(refused.text, unknown.text);
    // Its challenge says the token sent was refused (RFC 6750); a request
    // without one is asked for one.
    let challenge = |token: Option<String>| {
        let mut request = app.client.get(app.url("/v1/tenant"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.expect("request failed");
            assert_eq!(response.status(), 401);
            response.headers()[reqwest::header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(challenge(Some(key)).await, "Bearer error=\"invalid_token\"");
    assert_eq!(challenge(None).await, "Bearer");
    app.get("/v1/tenant", &t.key).await.expect(200);
}

#[tokio::test]
async fn suspending_or_deleting_a_tenant_refuses_its_cached_keys_at_once() {
    let app = TestApp::spawn_with(|s| s.key_cache_ttl_ms = 3_600_000).await;
    let t = app.tenant("t").await;
    let other = app.tenant("other").await;
    app.get("/v1/resources", &t.key).await.expect(200);
    app.admin_post(&format!("/v1/tenants/{}/suspend", t.id), &json!({}))
        .await
        .expect(200);
    for path in ["/v1/resources", "/v1/tenant", "/v1/keys"] {
        app.get(path, &t.key).await.problem(403, "tenant_suspended");
    }
    app.post("/v1/resources", &t.key, &json!({ "name": "x" }))
        .await
        .problem(403, "tenant_suspended");
    app.admin_post(&format!("/v1/tenants/{}/activate", t.id), &json!({}))
        .await
        .expect(200);
    app.get("/v1/resources", &t.key).await.expect(200);
    app.delete(&format!("/v1/tenants/{}", t.id), &app.admin_token)
        .await
        .expect(204);
    let gone = app.get("/v1/resources", &t.key).await;
    gone.problem(401, "unauthorized");
    let none = app.send(Method::GET, "/v1/resources", None, None).await;
    assert_eq!(
        gone.text, none.text,
        "a deleted tenant's key is just unknown"
    );
    app.get("/v1/resources", &other.key).await.expect(200);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM tenantry.resources WHERE tenant_id = '{}'",
            t.id
        ))
        .await,
        0
    );
}

#[tokio::test]
async fn usage_of_a_child_never_shows_its_parent_or_sibling() {
    let app = TestApp::spawn().await;
    let parent = app.tenant("parent").await;
    let left = app.child_tenant("left", Some(&parent.id)).await;
    let right = app.child_tenant("right", Some(&parent.id)).await;
    let all: [&TenantKey; 3] = [&parent, &left, &right];
    for t in all {
        app.create_resource(&t.key, "doc").await;
    }
    // Request-log rows for every tenant, written as the server's writer does
    // (its library call: on Citus through the owner's append, which a raw
    // INSERT as the logger is not), then a refresh (as the roles the server
    // uses).
    let db = app.db.database();
    let rows: Vec<tenantry_db::RequestLogEntry> = all
        .iter()
        .map(|t| {
            tenantry_db::RequestLogEntry::new(
                tenantry_db::TenantId::parse(&t.id).unwrap(),
                "GET",
                "/x",
                200,
                1.0,
            )
        })
        .collect();
    db.log_requests(&rows).await.unwrap();
    // As the server's scheduler refreshes them (a proven administrative context).
    let mut admin = db.admin("scheduler").await.unwrap();
    admin.refresh_metrics().await.unwrap();
    admin.commit().await.unwrap();
    for (t, expected) in [
        (&parent, vec![&parent.id, &left.id, &right.id]),
        (&left, vec![&left.id]),
        (&right, vec![&right.id]),
    ] {
        for path in ["/v1/usage/metrics", "/v1/usage/resources"] {
            let rows = app.get(path, &t.key).await;
            let mut seen: Vec<String> = rows
                .expect(200)
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["tenant_id"].as_str().unwrap().to_owned())
                .collect();
            seen.sort();
            seen.dedup();
            let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(seen, want, "{path} for {}", t.id);
        }
    }
}

#[tokio::test]
async fn a_schema_isolated_tenants_resource_is_a_missing_id_for_everyone_else() {
    if tenantry_db::testing::skip_schema_tier_on_citus(
        "a_schema_isolated_tenants_resource_is_a_missing_id_for_everyone_else",
    ) {
        return;
    }
    let app = TestApp::spawn().await;
    let silo_id = app
        .create_tenant_with(json!({ "name": "silo", "isolation": "schema" }))
        .await["tenant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (silo_key, _) = app.create_key(&silo_id, json!({})).await;
    let pooled = app.tenant("pooled").await;
    let other_silo_id = app
        .create_tenant_with(json!({ "name": "silo-2", "isolation": "schema" }))
        .await["tenant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (other_silo_key, _) = app.create_key(&other_silo_id, json!({})).await;
    let rs = app.create_resource(&silo_key, "silo-secret").await;
    let rp = app.create_resource(&pooled.key, "pooled-doc").await;
    for (key, foreign) in [(&pooled.key, &rs), (&other_silo_key, &rs), (&silo_key, &rp)] {
        same_404(&app, key, Method::GET, "/v1/resources/{id}", foreign, None).await;
        same_404(
            &app,
            key,
            Method::DELETE,
            "/v1/resources/{id}",
            foreign,
            None,
        )
        .await;
    }
    assert_eq!(app.resource_names(&silo_key, "").await, ["silo-secret"]);
    assert_eq!(app.resource_names(&pooled.key, "").await, ["pooled-doc"]);
    assert!(app.resource_names(&other_silo_key, "").await.is_empty());
    // The row lives in the silo's own schema.
    let schema = app.schema_of(&silo_id).await;
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM \"{schema}\".resources"))
            .await,
        1
    );
}

#[tokio::test]
async fn unauthenticated_system_routes_name_no_tenant_resource_or_key() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let id = app.create_resource(&t.key, "secret-name").await;
    app.get(&format!("/v1/resources/{id}"), &t.key)
        .await
        .expect(200);
    app.get(&format!("/v1/resources/{}", random_id()), &t.key)
        .await
        .problem(404, "not_found");
    app.get(&format!("/v1/nowhere/{id}"), &t.key)
        .await
        .problem(404, "route_not_found");
    let prefix = &t.key[3..15];
    for (path, status) in [
        ("/metrics", 401),
        ("/healthz", 200),
        ("/readyz", 200),
        ("/openapi.json", 200),
    ] {
        let r = app.send(Method::GET, path, None, None).await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
        for secret in [t.id.as_str(), id.as_str(), "secret-name", prefix, &t.key_id] {
            assert!(!r.text.contains(secret), "{path} names {secret}");
        }
    }
    // Metrics are labelled by route template, never by the path as sent.
    let metrics = app.admin_get("/metrics").await;
    assert!(
        metrics.text.contains("/v1/resources/{id}"),
        "{}",
        metrics.text
    );
}

/// Issue 10, finding 5: a key whose role holds only `keys.write` and
/// `roles.write` revoked the owner key (locking the owner out) and stripped
/// permissions from a more privileged role.
#[tokio::test]
async fn a_limited_key_cannot_revoke_the_owner_key_or_strip_a_stronger_role() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let limited = app
        .create_role(&t.key, "limited", &["keys.write", "roles.write"])
        .await;
    let strong = app
        .create_role(
            &t.key,
            "strong",
            &["keys.write", "roles.write", "resources.delete"],
        )
        .await;
    let (limited_key, _) = app.create_role_key(&t.key, &limited).await;
    let helper = app.create_role(&t.key, "helper", &["keys.write"]).await;
    let (_, helper_key_id) = app.create_role_key(&t.key, &helper).await;

    app.delete(&format!("/v1/keys/{}", t.key_id), &limited_key)
        .await
        .problem(403, "permission_denied");
    app.delete(
        &format!("/v1/roles/{strong}/permissions/resources.delete"),
        &limited_key,
    )
    .await
    .problem(403, "permission_denied");
    // The owner still works, and the strong role kept its permission.
    app.get("/v1/tenant", &t.key).await.expect(200);
    let roles = app.get("/v1/roles", &t.key).await.items();
    let strong_role = roles
        .iter()
        .find(|r| r["role_id"] == strong.as_str())
        .unwrap();
    assert_eq!(strong_role["permissions"].as_array().unwrap().len(), 3);

    // Within what it holds, the limited key may revoke and reduce.
    app.delete(&format!("/v1/keys/{helper_key_id}"), &limited_key)
        .await
        .expect(204);
    app.delete(
        &format!("/v1/roles/{helper}/permissions/keys.write"),
        &limited_key,
    )
    .await
    .expect(200);
}

/// Issue 10, finding 3: a parent shared its child's resource with itself;
/// after the child was detached, the parent still read it, later changes
/// included. Sharing with a tenant that already reads the resource through
/// the hierarchy is refused, so no share outlives the hierarchy it came from.
#[tokio::test]
async fn a_parent_cannot_keep_a_childs_resource_past_detaching_by_sharing_it_with_itself() {
    let app = TestApp::spawn().await;
    let parent = app.tenant("parent").await;
    let child = app.child_tenant("child", Some(&parent.id)).await;
    let doc = app.create_resource(&child.key, "child-doc").await;
    let share = |target: &str| json!({ "tenant_id": target });

    // Neither the parent (acting on its descendant's resource) nor the child
    // itself may share it with the parent, who reads it already.
    for key in [&parent.key, &child.key] {
        let r = app
            .post(
                &format!("/v1/resources/{doc}/shares"),
                key,
                &share(&parent.id),
            )
            .await;
        assert_eq!(r.problem(422, "validation_failed")["field"], "tenant_id");
    }
    // Detached: the parent loses the resource at once, and nothing was left behind.
    app.patch(
        &format!("/v1/tenants/{}", child.id),
        &app.admin_token,
        &json!({ "parent_id": null }),
    )
    .await
    .expect(200);
    same_404(
        &app,
        &parent.key,
        Method::GET,
        "/v1/resources/{id}",
        &doc,
        None,
    )
    .await;
    // An unrelated tenant can still be given a share by the owner.
    let other = app.tenant("other").await;
    app.post(
        &format!("/v1/resources/{doc}/shares"),
        &child.key,
        &share(&other.id),
    )
    .await
    .expect(201);
}

/// Issue 10, finding 2: audit ids came from one sequence shared by all
/// tenants, and the audit cursor carried them, so the gap between two of a
/// tenant's own events counted every other tenant's events in between.
#[tokio::test]
async fn audit_ids_and_cursors_say_nothing_about_other_tenants_events() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    app.create_role(&a.key, "first", &[]).await;
    for i in 0..5 {
        app.create_role(&b.key, &format!("b-{i}"), &["resources.read"])
            .await;
    }
    app.create_role(&a.key, "second", &[]).await;

    // Page through a's log one event at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit?limit=1&cursor={c}"),
            None => "/v1/audit?limit=1".to_owned(),
        };
        let page = app.get(&path, &a.key).await;
        let body = page.expect(200).clone();
        let item = &body["items"][0];
        assert!(item.get("audit_id").is_none(), "{item}");
        let event_id = item["event_id"].as_str().unwrap().to_owned();
        seen.push(event_id.clone());
        match body["next_cursor"].as_str() {
            Some(c) => {
                // The cursor holds the last row's own time and id, nothing else.
                let key = String::from_utf8(hex::decode(c).unwrap()).unwrap();
                let (at, id) = key.split_once('|').unwrap();
                assert_eq!(id, event_id);
                assert!(at.parse::<chrono::DateTime<chrono::Utc>>().is_ok(), "{key}");
                cursor = Some(c.to_owned());
            }
            None => break,
        }
    }
    let all = app.get("/v1/audit?limit=1000", &a.key).await.items();
    assert_eq!(seen.len(), all.len(), "paging lost or repeated events");
    assert!(seen.len() >= 3);

    // Through SQL, the shared sequence is out of reach of the tenant roles.
    let client = db_as(&app, "tenantry_app").await;
    let err = client
        .query("SELECT audit_id FROM tenantry.audit_log", &[])
        .await
        .expect_err("audit_id is not readable by tenantry_app");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
}
