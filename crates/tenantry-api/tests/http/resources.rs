//! Resources: create, read, update, delete and list, each beside another
//! tenant's attempt; list filters, pagination and its bad inputs.

use serde_json::{json, Value};

use crate::helpers::{ids, random_id, TestApp};

/// `null` is no value a resource's name or payload can take: a client that
/// sends it (meaning to clear the field) is told so instead of getting 200
/// and an unchanged resource. Absent still means unchanged, and `{}` empties
/// the payload.
#[tokio::test]
async fn an_explicit_null_on_a_resource_patch_is_400_naming_the_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let id = app
        .create_resource_with(&t.key, json!({ "name": "keep", "data": { "q": 3 } }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/resources/{id}");
    for (body, field) in [
        (json!({ "name": null }), "name"),
        (json!({ "data": null }), "data"),
        (json!({ "name": "changed", "data": null }), "data"),
        (json!({ "name": null, "data": { "q": 4 } }), "name"),
    ] {
        let r = app.patch(&path, &t.key, &body).await;
        let problem = r.problem(400, "invalid_json");
        assert_eq!(problem["field"], field, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem}"
        );
    }
    let shown = app.get(&path, &t.key).await;
    assert_eq!(shown.expect(200)["name"], "keep", "{}", shown.text);
    assert_eq!(shown.body["data"], json!({ "q": 3 }));

    let r = app.patch(&path, &t.key, &json!({})).await;
    assert_eq!(r.expect(200)["name"], "keep", "absent fields stay");
    assert_eq!(r.body["data"], json!({ "q": 3 }));
    let r = app.patch(&path, &t.key, &json!({ "data": {} })).await;
    assert_eq!(r.expect(200)["data"], json!({}), "{{}} empties the payload");
    assert_eq!(r.body["name"], "keep");
}

#[tokio::test]
async fn a_tenant_creates_reads_updates_and_deletes_its_resource() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let created = app
        .create_resource_with(&t.key, json!({ "name": "report", "data": { "q": 3 } }))
        .await;
    assert_eq!(created["name"], "report");
    assert_eq!(created["data"], json!({ "q": 3 }));
    assert_eq!(created["tenant_id"], t.id.as_str());
    assert_eq!(created["access"], "own");
    let id = created["id"].as_str().unwrap().to_owned();

    let got = app.get(&format!("/v1/resources/{id}"), &t.key).await;
    assert_eq!(got.expect(200)["data"], json!({ "q": 3 }));

    let patched = app
        .patch(
            &format!("/v1/resources/{id}"),
            &t.key,
            &json!({ "data": { "q": 4 } }),
        )
        .await;
    let body = patched.expect(200);
    assert_eq!(body["name"], "report", "absent fields stay");
    assert_eq!(body["data"], json!({ "q": 4 }));

    let deleted = app.delete(&format!("/v1/resources/{id}"), &t.key).await;
    deleted.expect(204);
    app.get(&format!("/v1/resources/{id}"), &t.key)
        .await
        .problem(404, "not_found");
    app.delete(&format!("/v1/resources/{id}"), &t.key)
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn a_resource_without_data_gets_an_empty_object_and_non_object_data_is_422() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let created = app
        .create_resource_with(&t.key, json!({ "name": "bare" }))
        .await;
    assert_eq!(created["data"], json!({}));
    let r = app
        .post(
            "/v1/resources",
            &t.key,
            &json!({ "name": "arr", "data": [1, 2] }),
        )
        .await;
    assert_eq!(r.problem(422, "validation_failed")["field"], "data");
    assert_eq!(app.resource_names(&t.key, "").await, vec!["bare"]);
}

/// A payload's numbers come back as the client wrote them, whatever their
/// size or precision (they went through 64-bit floats before, and an id of
/// 20 digits came back rounded), on creation, reading, listing and change.
#[tokio::test]
async fn a_resources_numbers_come_back_exactly_as_written_whatever_their_size() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let data = r#"{"big": 123456789012345678901234567890, "id": 18446744073709551617, "pi": 3.14159265358979323846264338327950288, "tiny": 1e-400}"#;
    // PostgreSQL's jsonb writes numbers as numeric: 1e-400 in full.
    let stored = format!(
        r#"{{"id": 18446744073709551617, "pi": 3.14159265358979323846264338327950288, "big": 123456789012345678901234567890, "tiny": 0.{}1}}"#,
        "0".repeat(399)
    );
    let raw = |method: reqwest::Method, path: &str, body: String| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(&t.key)
            .header("content-type", "application/json")
            .body(body)
    };
    let created = app
        .send_raw(raw(
            reqwest::Method::POST,
            "/v1/resources",
            format!(r#"{{"name": "exact", "data": {data}}}"#),
        ))
        .await;
    created.expect(201);
    assert!(created.text.contains(&stored), "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/resources/{id}");
    let got = app.get(&path, &t.key).await;
    assert!(got.text.contains(&stored), "{}", got.text);
    let listed = app.get("/v1/resources", &t.key).await;
    assert!(listed.text.contains(&stored), "{}", listed.text);
    let changed = app
        .send_raw(raw(
            reqwest::Method::PATCH,
            &path,
            r#"{"data": {"n": -98765432109876543210.000000000000000000001}}"#.to_owned(),
        ))
        .await;
    changed.expect(200);
    assert!(
        changed
            .text
            .contains(r#"{"n": -98765432109876543210.000000000000000000001}"#),
        "{}",
        changed.text
    );
}

/// The 404 body without the id in its detail.
fn without_id(body: &Value, id: &str) -> Value {
    let mut b = body.clone();
    b["detail"] = json!(b["detail"].as_str().unwrap().replace(id, "<id>"));
    b
}

#[tokio::test]
async fn tenant_a_cannot_read_tenant_b_resource_by_id() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    let rb = app.create_resource(&b.key, "b-secret").await;
    // Allowed: the owner reads it.
    app.get(&format!("/v1/resources/{rb}"), &b.key)
        .await
        .expect(200);

    let foreign = app.get(&format!("/v1/resources/{rb}"), &a.key).await;
    foreign.problem(404, "not_found");
    let missing_id = random_id();
    let missing = app
        .get(&format!("/v1/resources/{missing_id}"), &a.key)
        .await;
    missing.problem(404, "not_found");
    for field in ["code", "status", "title", "type"] {
        assert_eq!(foreign.body[field], missing.body[field], "{field}");
    }
    assert_eq!(
        without_id(&foreign.body, &rb),
        without_id(&missing.body, &missing_id),
        "a foreign resource's 404 must look exactly like a missing one's"
    );
    assert!(!foreign.text.contains("b-secret"));
}

#[tokio::test]
async fn tenant_a_cannot_update_or_delete_tenant_b_resource_and_it_stays_unchanged() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    let rb = app.create_resource(&b.key, "b-own").await;

    let missing_id = random_id();
    let foreign_patch = app
        .patch(
            &format!("/v1/resources/{rb}"),
            &a.key,
            &json!({ "name": "pwned" }),
        )
        .await;
    foreign_patch.problem(404, "not_found");
    let missing_patch = app
        .patch(
            &format!("/v1/resources/{missing_id}"),
            &a.key,
            &json!({ "name": "pwned" }),
        )
        .await;
    assert_eq!(
        without_id(&foreign_patch.body, &rb),
        without_id(&missing_patch.body, &missing_id)
    );
    let foreign_delete = app.delete(&format!("/v1/resources/{rb}"), &a.key).await;
    foreign_delete.problem(404, "not_found");
    let missing_delete = app
        .delete(&format!("/v1/resources/{missing_id}"), &a.key)
        .await;
    assert_eq!(
        without_id(&foreign_delete.body, &rb),
        without_id(&missing_delete.body, &missing_id)
    );

    let still = app.get(&format!("/v1/resources/{rb}"), &b.key).await;
    assert_eq!(still.expect(200)["name"], "b-own");
    assert!(app.resource_names(&a.key, "").await.is_empty());
}

#[tokio::test]
async fn a_tenant_id_in_the_body_is_rejected_and_never_overrides_the_keys_tenant() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    let r = app
        .post(
            "/v1/resources",
            &a.key,
            &json!({ "name": "planted", "tenant_id": b.id }),
        )
        .await;
    let problem = r.problem(400, "invalid_json");
    assert!(
        problem["detail"].as_str().unwrap().contains("tenant_id"),
        "the detail should name the field: {problem}"
    );
    assert!(app.resource_names(&a.key, "").await.is_empty());
    assert!(app.resource_names(&b.key, "").await.is_empty());
    // A tenant_id in the query is refused as well.
    app.get(&format!("/v1/resources?tenant_id={}", b.id), &a.key)
        .await
        .problem(400, "invalid_query");
    // Allowed: the same body without it lands in the key's tenant.
    let created = app
        .create_resource_with(&a.key, json!({ "name": "mine" }))
        .await;
    assert_eq!(created["tenant_id"], a.id.as_str());
    assert!(app.resource_names(&b.key, "").await.is_empty());
}

#[tokio::test]
async fn listing_filters_by_owner_and_name_prefix() {
    let app = TestApp::spawn().await;
    let parent = app.tenant("parent").await;
    let child = app.child_tenant("child", Some(&parent.id)).await;
    let friend = app.tenant("friend").await;

    app.create_resource(&parent.key, "alpha-own").await;
    app.create_resource(&parent.key, "beta-own").await;
    app.create_resource(&child.key, "alpha-child").await;
    let shared = app.create_resource(&friend.key, "alpha-shared").await;
    app.create_resource(&friend.key, "friend-private").await;
    app.post(
        &format!("/v1/resources/{shared}/shares"),
        &friend.key,
        &json!({ "tenant_id": parent.id }),
    )
    .await
    .expect(201);

    assert_eq!(
        app.resource_names(&parent.key, "").await,
        vec!["alpha-child", "alpha-own", "alpha-shared", "beta-own"]
    );
    assert_eq!(
        app.resource_names(&parent.key, "owner=self").await,
        vec!["alpha-own", "beta-own"]
    );
    assert_eq!(
        app.resource_names(&parent.key, "owner=descendants").await,
        vec!["alpha-child"]
    );
    assert_eq!(
        app.resource_names(&parent.key, "owner=shared").await,
        vec!["alpha-shared"]
    );
    assert_eq!(
        app.resource_names(&parent.key, "name_prefix=alpha").await,
        vec!["alpha-child", "alpha-own", "alpha-shared"]
    );
    assert_eq!(
        app.resource_names(&parent.key, "owner=self&name_prefix=alpha")
            .await,
        vec!["alpha-own"]
    );
    // Prefixes are literal: LIKE wildcards match nothing.
    assert!(app
        .resource_names(&parent.key, "name_prefix=%25")
        .await
        .is_empty());
    assert!(app
        .resource_names(&parent.key, "name_prefix=_lpha")
        .await
        .is_empty());
    app.get("/v1/resources?owner=everyone", &parent.key)
        .await
        .problem(400, "invalid_query");

    let items = app
        .get("/v1/resources?limit=1000", &parent.key)
        .await
        .items();
    for item in &items {
        let expected = match item["name"].as_str().unwrap() {
            "alpha-child" => "descendant",
            "alpha-shared" => "shared",
            _ => "own",
        };
        assert_eq!(item["access"], expected, "{item}");
    }
}

#[tokio::test]
async fn listing_pages_with_a_cursor_until_exhausted() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let other = app.tenant("other").await;
    app.create_resource(&other.key, "not-mine").await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(app.create_resource(&t.key, &format!("r{i}")).await);
    }

    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/resources?limit=3&cursor={c}"),
            None => "/v1/resources?limit=3".to_owned(),
        };
        let body = app.get(&path, &t.key).await.expect(200).clone();
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(ids(items, "id"));
        pages += 1;
        assert!(pages <= 5, "pagination does not end");
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    // Newest first, each exactly once, none of the other tenant's.
    created.reverse();
    assert_eq!(seen, created);
}

#[tokio::test]
async fn listing_refuses_forged_cursors_and_out_of_range_limits() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    app.create_resource(&t.key, "r").await;
    for forged in ["zz", "not-a-cursor", "00", "deadbeef"] {
        let r = app
            .get(&format!("/v1/resources?cursor={forged}"), &t.key)
            .await;
        r.problem(400, "invalid_cursor");
    }
    let r = app.get("/v1/resources?limit=0", &t.key).await;
    assert_eq!(r.problem(422, "validation_failed")["field"], "limit");
    let r = app.get("/v1/resources?limit=100000", &t.key).await;
    assert_eq!(r.problem(422, "validation_failed")["field"], "limit");
    app.get("/v1/resources?limit=-1", &t.key)
        .await
        .problem(400, "invalid_query");
    app.get("/v1/resources?limit=abc", &t.key)
        .await
        .problem(400, "invalid_query");
    // Allowed bounds.
    assert_eq!(
        app.get("/v1/resources?limit=1", &t.key).await.items().len(),
        1
    );
    assert_eq!(
        app.get("/v1/resources?limit=1000", &t.key)
            .await
            .items()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_resource_key_lacking_resources_delete_cannot_delete() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let id = app.create_resource(&t.key, "keep").await;
    let role = app
        .create_role(&t.key, "writer", &["resources.read", "resources.write"])
        .await;
    let (writer, _) = app.create_role_key(&t.key, &role).await;
    app.patch(
        &format!("/v1/resources/{id}"),
        &writer,
        &json!({ "name": "kept" }),
    )
    .await
    .expect(200);
    app.delete(&format!("/v1/resources/{id}"), &writer)
        .await
        .problem(403, "permission_denied");
    app.get(&format!("/v1/resources/{id}"), &t.key)
        .await
        .expect(200);
}
