//! The request log: one row per tenant request with its route template and
//! status, all flushed by a graceful shutdown.

use serde_json::json;

use crate::helpers::{random_id, TestApp};

#[tokio::test]
async fn a_graceful_shutdown_flushes_one_request_log_row_per_tenant_request() {
    let mut app = TestApp::spawn_with(|s| s.request_log_batch = 10_000).await;
    let t = app.tenant("logged").await;
    let other = app.tenant("other").await;

    let id = app.create_resource(&t.key, "r").await;
    let missing = random_id();
    app.get(&format!("/v1/resources/{id}"), &t.key)
        .await
        .expect(200);
    app.get(&format!("/v1/resources/{missing}"), &t.key)
        .await
        .expect(404);
    app.patch(
        &format!("/v1/resources/{id}"),
        &t.key,
        &json!({ "name": "s" }),
    )
    .await
    .expect(200);
    app.get("/v1/resources", &t.key).await.expect(200);
    app.get("/v1/tenant", &t.key).await.expect(200);
    // Unattributable: no tenant row for an unknown key.
    let unknown = format!("tk_{}_{}", "0".repeat(12), "a".repeat(64));
    app.get("/v1/tenant", &unknown).await.expect(401);
    // The last one right before shutdown.
    app.delete(&format!("/v1/resources/{id}"), &t.key)
        .await
        .expect(204);
    app.shutdown().await;

    let client = app.db.superuser_client().await;
    let rows = client
        .query(
            &format!(
                "SELECT method, route, status, resource_id::text FROM tenantry.request_log
                 WHERE tenant_id = '{}' AND route NOT LIKE '/v1/tenants/%'",
                t.id
            ),
            &[],
        )
        .await
        .unwrap();
    let mut got: Vec<(String, String, i16, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    got.sort();
    let some = |s: &str| Some(s.to_owned());
    let mut expected: Vec<(String, String, i16, Option<String>)> = vec![
        ("POST".into(), "/v1/resources".into(), 201, some(&id)),
        ("GET".into(), "/v1/resources/{id}".into(), 200, some(&id)),
        (
            "GET".into(),
            "/v1/resources/{id}".into(),
            404,
            some(&missing),
        ),
        ("PATCH".into(), "/v1/resources/{id}".into(), 200, some(&id)),
        ("GET".into(), "/v1/resources".into(), 200, None),
        ("GET".into(), "/v1/tenant".into(), 200, None),
        ("DELETE".into(), "/v1/resources/{id}".into(), 204, some(&id)),
    ];
    expected.sort();
    assert_eq!(got, expected);

    // The operator's key creation for the tenant is not the tenant's request:
    // it is not in the tenant's log (or usage).
    let admin_rows = client
        .query_one(
            &format!(
                "SELECT count(*) FROM tenantry.request_log
                 WHERE tenant_id = '{}' AND route = '/v1/tenants/{{tenant_id}}/keys' AND status = 201",
                t.id
            ),
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(admin_rows, 0);
    // Nothing was attributed to the other tenant but its own key creation.
    let other_rows = client
        .query_one(
            &format!(
                "SELECT count(*) FROM tenantry.request_log WHERE tenant_id = '{}' AND route NOT LIKE '/v1/tenants/%'",
                other.id
            ),
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(other_rows, 0);
    let latency_ok = client
        .query_one(
            &format!(
                "SELECT bool_and(latency_ms >= 0) FROM tenantry.request_log WHERE tenant_id = '{}'",
                t.id
            ),
            &[],
        )
        .await
        .unwrap()
        .get::<_, Option<bool>>(0);
    assert_eq!(latency_ok, Some(true));
}

#[tokio::test]
async fn a_member_bound_keys_requests_are_logged_with_its_member() {
    let mut app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    // The first member owns the tenant (and a key acting as them holds everything).
    app.add_member(&t.key, "owner@example.com").await;
    let user = app.add_member(&t.key, "m@example.com").await;
    let (member_key, _) = app.create_key(&t.id, json!({ "user_id": user })).await;
    // The member has no roles: refused, but still logged.
    app.get("/v1/resources", &member_key)
        .await
        .problem(403, "permission_denied");
    app.shutdown().await;
    let client = app.db.superuser_client().await;
    let rows = client
        .query(
            &format!(
                "SELECT route, status FROM tenantry.request_log
                 WHERE tenant_id = '{}' AND user_id = '{user}'",
                t.id
            ),
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, i16)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![("/v1/resources".to_owned(), 403)]);
}

/// Issue 10, finding 7: the operator's requests about a tenant were written to
/// that tenant's request log, so the tenant saw when the operator looked (in
/// its usage metrics) and paid for it.
#[tokio::test]
async fn operator_requests_about_a_tenant_are_not_in_its_request_log() {
    let mut app = TestApp::spawn_with(|s| s.request_log_batch = 10_000).await;
    let t = app.tenant("watched").await;
    app.get("/v1/tenant", &t.key).await.expect(200);
    for path in [
        format!("/v1/tenants/{}", t.id),
        format!("/v1/tenants/{}/audit", t.id),
        format!("/v1/tenants/{}/usage", t.id),
    ] {
        app.admin_get(&path).await.expect(200);
    }
    app.admin_post(&format!("/v1/tenants/{}/suspend", t.id), &json!({}))
        .await
        .expect(200);
    app.shutdown().await;

    let client = app.db.superuser_client().await;
    let routes: Vec<String> = client
        .query(
            "SELECT route FROM tenantry.request_log WHERE tenant_id = $1::text::uuid ORDER BY route",
            &[&t.id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Only the tenant's own request (tenant creation and its key were the operator's too).
    assert_eq!(routes, ["/v1/tenant"]);
}

/// A suspended tenant's refused request is the tenant's: logged under it,
/// so that an operator finds it by the request id the client quotes (the
/// row was not written, found by a new user's audit of docs/operations.md).
/// A deleted tenant's key is answered and logged as no credential at all.
#[tokio::test]
async fn a_suspended_tenants_refused_request_is_in_its_request_log_under_its_request_id() {
    let mut app = TestApp::spawn().await;
    let t = app.tenant("paused").await;
    let gone = app.tenant("gone").await;
    app.admin_post(&format!("/v1/tenants/{}/suspend", t.id), &json!({}))
        .await
        .expect(200);
    app.delete(&format!("/v1/tenants/{}", gone.id), &app.admin_token)
        .await
        .expect(204);
    for (key, id) in [(&t.key, "ticket-4711"), (&gone.key, "ticket-4712")] {
        let refused = app
            .send_raw(
                app.client
                    .get(app.url("/v1/tenant"))
                    .bearer_auth(key)
                    .header("X-Request-Id", id),
            )
            .await;
        assert!(matches!(refused.status, 401 | 403), "{}", refused.text);
    }
    app.shutdown().await;
    let client = app.db.superuser_client().await;
    let rows = client
        .query(
            "SELECT request_id, tenant_id::text, status FROM tenantry.request_log
              WHERE request_id IN ('ticket-4711', 'ticket-4712') ORDER BY request_id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, i16)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got, vec![("ticket-4711".to_owned(), t.id.clone(), 403)]);
}
