//! Tenant settings that limit: rate limits (429) and quotas (409).

use std::time::Duration;

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_rate_limited_tenant_gets_429_on_the_third_quick_request() {
    let app = TestApp::spawn().await;
    let limited = app
        .create_tenant_with(json!({
            "name": "limited",
            "settings": { "rate_limit_per_second": 1, "rate_limit_burst": 2 }
        }))
        .await;
    let id = limited["tenant_id"].as_str().unwrap().to_owned();
    let (key, _) = app.create_key(&id, json!({})).await;
    let free = app.tenant("free").await;

    app.get("/v1/tenant", &key).await.expect(200);
    app.get("/v1/tenant", &key).await.expect(200);
    let r = app.get("/v1/tenant", &key).await;
    r.problem(429, "rate_limited");

    // Another tenant is not limited.
    for _ in 0..5 {
        app.get("/v1/tenant", &free.key).await.expect(200);
    }
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.get("/v1/tenant", &key).await.expect(200);
}

#[tokio::test]
async fn a_tenant_at_its_resource_quota_gets_409_and_no_extra_row() {
    let app = TestApp::spawn().await;
    let quota = app
        .create_tenant_with(json!({ "name": "small", "settings": { "max_resources": 2 } }))
        .await;
    let id = quota["tenant_id"].as_str().unwrap().to_owned();
    let (key, _) = app.create_key(&id, json!({})).await;

    let first = app.create_resource(&key, "one").await;
    app.create_resource(&key, "two").await;
    let r = app
        .post("/v1/resources", &key, &json!({ "name": "three" }))
        .await;
    r.problem(409, "quota_exceeded");
    let sql = format!("SELECT count(*) FROM tenantry.resources WHERE tenant_id = '{id}'");
    assert_eq!(app.count(&sql).await, 2);
    assert_eq!(app.resource_names(&key, "").await, vec!["one", "two"]);

    // Allowed again once there is room.
    app.delete(&format!("/v1/resources/{first}"), &key)
        .await
        .expect(204);
    app.create_resource(&key, "three").await;
    assert_eq!(app.count(&sql).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_cannot_exceed_the_resource_quota() {
    let app = TestApp::spawn().await;
    // The race is timing-dependent: several rounds, each on a fresh tenant
    // holding one resource under max_resources 2.
    let mut overruns = Vec::new();
    for round in 0..10 {
        let quota = app
            .create_tenant_with(json!({
                "name": format!("racy-{round}"),
                "settings": { "max_resources": 2 }
            }))
            .await;
        let id = quota["tenant_id"].as_str().unwrap().to_owned();
        let (key, _) = app.create_key(&id, json!({})).await;
        app.create_resource(&key, "first").await;

        // Warm up one connection per racer, so the creates arrive together.
        let warm = (0..16).map(|_| app.get("/v1/tenant", &key));
        for r in futures_util::future::join_all(warm).await {
            r.expect(200);
        }
        let attempts = (0..16).map(|i| {
            let body = json!({ "name": format!("racer-{i}") });
            let key = key.clone();
            let app = &app;
            async move { app.post("/v1/resources", &key, &body).await }
        });
        let results = futures_util::future::join_all(attempts).await;
        let created = results.iter().filter(|r| r.status == 201).count();
        for r in results.iter().filter(|r| r.status != 201) {
            r.problem(409, "quota_exceeded");
        }
        let sql = format!("SELECT count(*) FROM tenantry.resources WHERE tenant_id = '{id}'");
        let rows = app.count(&sql).await;
        if (created, rows) != (1, 2) {
            overruns.push(format!(
                "round {round}: {created} concurrent creates succeeded, {rows} rows"
            ));
        }
    }
    assert!(
        overruns.is_empty(),
        "max_resources 2 with one resource: exactly one concurrent create may succeed:\n{}",
        overruns.join("\n")
    );
}

#[tokio::test]
async fn a_lowered_quota_applies_at_once() {
    let app = TestApp::spawn_with(|s| s.key_cache_ttl_ms = 60_000).await;
    let t = app.tenant("t").await;
    app.create_resource(&t.key, "one").await;
    app.patch(
        &format!("/v1/tenants/{}", t.id),
        &app.admin_token,
        &json!({ "settings": { "max_resources": 1 } }),
    )
    .await
    .expect(200);
    app.post("/v1/resources", &t.key, &json!({ "name": "two" }))
        .await
        .problem(409, "quota_exceeded");
    assert_eq!(app.resource_names(&t.key, "").await, vec!["one"]);
}

#[tokio::test]
async fn a_storage_quota_refuses_creates_and_updates_that_would_exceed_it() {
    let app = TestApp::spawn().await;
    let t = app
        .create_tenant_with(json!({ "name": "tiny", "settings": { "max_storage_bytes": 300 } }))
        .await;
    let id = t["tenant_id"].as_str().unwrap().to_owned();
    let (key, _) = app.create_key(&id, json!({})).await;
    let small = app.create_resource(&key, "small").await;
    app.post(
        "/v1/resources",
        &key,
        &json!({ "name": "big", "data": { "blob": "x".repeat(500) } }),
    )
    .await
    .problem(409, "quota_exceeded");
    app.patch(
        &format!("/v1/resources/{small}"),
        &key,
        &json!({ "data": { "blob": "x".repeat(500) } }),
    )
    .await
    .problem(409, "quota_exceeded");
    let r = app.get(&format!("/v1/resources/{small}"), &key).await;
    assert_eq!(r.expect(200)["data"], json!({ "n": "small" }));
    assert_eq!(app.resource_names(&key, "").await, vec!["small"]);
}
