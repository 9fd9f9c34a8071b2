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
            // One request every 4 s: three requests fall within it however
            // loaded the machine (at 1 a second they had to come within one).
            "settings": { "rate_limit_per_second": 0.25, "rate_limit_burst": 2 }
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
    tokio::time::sleep(Duration::from_millis(4200)).await;
    app.get("/v1/tenant", &key).await.expect(200);
}

/// Requests refused by the rate limit write no request-log row: a client
/// that ignores 429 wrote one per refusal, and could fill the disk every
/// tenant shares (found by a contention review). They are still counted in
/// the tenant's traffic figures.
#[tokio::test]
async fn requests_refused_by_the_rate_limit_write_no_request_log_row() {
    let mut app = TestApp::spawn_with(|s| s.request_log_batch = 10_000).await;
    let limited = app
        .create_tenant_with(json!({
            "name": "limited",
            "settings": { "rate_limit_per_second": 0.01, "rate_limit_burst": 2 }
        }))
        .await;
    let id = limited["tenant_id"].as_str().unwrap().to_owned();
    let (key, _) = app.create_key(&id, json!({})).await;
    let mut refused = 0;
    for _ in 0..20 {
        let r = app.get("/v1/tenant", &key).await;
        if r.status == 429 {
            refused += 1;
        }
    }
    assert_eq!(refused, 18);
    app.shutdown().await;
    let rows: Vec<i16> = app
        .db
        .superuser_client()
        .await
        .query(
            "SELECT status FROM tenantry.request_log WHERE tenant_id = $1::text::uuid AND route = '/v1/tenant'",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, [200, 200]);
}

#[tokio::test]
async fn a_slow_rate_limits_429_says_in_retry_after_how_long_the_limiter_really_makes_it_wait() {
    let app = TestApp::spawn().await;
    let t = app.tenant("slow").await;
    // One request per 100 seconds.
    app.patch(
        &format!("/v1/tenants/{}", t.id),
        &app.admin_token,
        &json!({ "settings": { "rate_limit_per_second": 0.01, "rate_limit_burst": 1 } }),
    )
    .await
    .expect(200);
    app.get("/v1/tenant", &t.key).await.expect(200);
    let response = reqwest::Client::new()
        .get(app.url("/v1/tenant"))
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(
        (90..=100).contains(&retry_after),
        "Retry-After {retry_after}: the limiter lets the next request through in about 100 s"
    );
    app.send_raw_response(response)
        .await
        .problem(429, "rate_limited");
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

#[tokio::test]
async fn each_limit_reached_answers_409_quota_exceeded_and_writes_nothing() {
    let app = TestApp::spawn().await;
    // The owner key is one of the tenant's two keys.
    let small = app
        .create_tenant_with(json!({
            "name": "small",
            "settings": { "max_children": 1, "max_api_keys": 2, "max_roles": 1, "max_members": 1, "max_shares": 1 }
        }))
        .await;
    let id = small["tenant_id"].as_str().unwrap().to_owned();
    let (key, _) = app.create_key(&id, json!({})).await;
    let other = app.tenant("other").await;
    let count = |table: &str, column: &str| {
        format!("SELECT count(*) FROM tenantry.{table} WHERE {column} = '{id}'")
    };

    app.post("/v1/tenants", &key, &json!({ "name": "c1" }))
        .await
        .expect(201);
    let r = app
        .post("/v1/tenants", &key, &json!({ "name": "c2" }))
        .await;
    let body = r.problem(409, "quota_exceeded");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("at most 1 children"),
        "{body}"
    );
    assert_eq!(app.count(&count("tenants", "parent_id")).await, 1);

    app.post("/v1/keys", &key, &json!({})).await.expect(201);
    app.post("/v1/keys", &key, &json!({}))
        .await
        .problem(409, "quota_exceeded");
    // The operator's key creation acts inside the tenant: the limit holds for it too.
    app.admin_post(&format!("/v1/tenants/{id}/keys"), &json!({}))
        .await
        .problem(409, "quota_exceeded");
    assert_eq!(app.count(&count("api_keys", "tenant_id")).await, 2);

    app.post("/v1/roles", &key, &json!({ "name": "r1" }))
        .await
        .expect(201);
    app.post("/v1/roles", &key, &json!({ "name": "r2" }))
        .await
        .problem(409, "quota_exceeded");
    assert_eq!(app.count(&count("roles", "tenant_id")).await, 1);

    app.post("/v1/members", &key, &json!({ "email": "a@example.com" }))
        .await
        .expect(201);
    app.post("/v1/members", &key, &json!({ "email": "b@example.com" }))
        .await
        .problem(409, "quota_exceeded");
    assert_eq!(app.count(&count("tenant_members", "tenant_id")).await, 1);

    let (r1, r2) = (
        app.create_resource(&key, "r1").await,
        app.create_resource(&key, "r2").await,
    );
    let share = json!({ "tenant_id": other.id });
    app.post(&format!("/v1/resources/{r1}/shares"), &key, &share)
        .await
        .expect(201);
    app.post(&format!("/v1/resources/{r2}/shares"), &key, &share)
        .await
        .problem(409, "quota_exceeded");
    assert_eq!(app.count(&count("shared_resources", "tenant_id")).await, 1);
    assert_eq!(
        app.get("/v1/resources?owner=shared", &other.key)
            .await
            .items()
            .len(),
        1
    );

    // An operator raises a limit: room at once.
    app.patch(
        &format!("/v1/tenants/{id}"),
        &app.admin_token,
        &json!({ "settings": { "max_roles": 2 } }),
    )
    .await
    .expect(200);
    app.post("/v1/roles", &key, &json!({ "name": "r2" }))
        .await
        .expect(201);
}

#[tokio::test]
async fn a_tenant_key_cannot_give_a_child_more_than_its_own_tenant_has() {
    let app = TestApp::spawn().await;
    let parent = app
        .create_tenant_with(json!({ "name": "parent", "settings": { "max_members": 5 } }))
        .await;
    let id = parent["tenant_id"].as_str().unwrap().to_owned();
    let (key, _) = app.create_key(&id, json!({})).await;
    let r = app
        .post(
            "/v1/tenants",
            &key,
            &json!({ "name": "greedy", "settings": { "max_members": 6 } }),
        )
        .await;
    r.problem(403, "forbidden");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM tenantry.tenants WHERE parent_id = '{id}'"
        ))
        .await,
        0
    );
    let child = app
        .post("/v1/tenants", &key, &json!({ "name": "modest" }))
        .await
        .expect(201)
        .clone();
    assert_eq!(child["settings"]["max_members"], 5, "{child}");
}

#[tokio::test]
async fn creating_children_faster_than_the_child_creation_rate_is_429_with_retry_after_and_writes_nothing(
) {
    let app = TestApp::spawn().await;
    let parent = app
        .create_tenant_with(json!({
            "name": "parent",
            "settings": { "child_creation_rate_per_second": 1 }
        }))
        .await;
    let id = parent["tenant_id"].as_str().unwrap().to_owned();
    let (key, _) = app.create_key(&id, json!({})).await;
    let other = app.tenant("other").await;
    // Burst of twice the rate, then 429 with Retry-After; nothing written.
    // Three at once (the key checked and cached first): one after the other,
    // on a loaded machine a creation can take longer than the second in which
    // all three had to come.
    app.get("/v1/tenant", &key).await.expect(200);
    let client = reqwest::Client::new();
    let create = |n: usize| {
        client
            .post(app.url("/v1/tenants"))
            .bearer_auth(&key)
            .json(&json!({ "name": format!("c{n}") }))
            .send()
    };
    let mut answers = futures_util::future::join_all((0..3).map(create)).await;
    answers.sort_by_key(|a| a.as_ref().map(|r| r.status().as_u16()).unwrap_or(0));
    let statuses: Vec<u16> = answers
        .iter()
        .map(|a| a.as_ref().unwrap().status().as_u16())
        .collect();
    assert_eq!(statuses, [201, 201, 429]);
    let response = answers.pop().unwrap().unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let r = app.send_raw_response(response).await;
    assert_eq!(r.body["code"], "rate_limited", "{}", r.text);
    assert_eq!(
        r.body["field"], "settings.child_creation_rate_per_second",
        "{}",
        r.text
    );
    let children = format!("SELECT count(*) FROM tenantry.tenants WHERE parent_id = '{id}'");
    assert_eq!(app.count(&children).await, 2);
    // Other requests of the tenant, and other tenants' creations, go on.
    app.get("/v1/tenant", &key).await.expect(200);
    app.post("/v1/tenants", &other.key, &json!({ "name": "o" }))
        .await
        .expect(201);
    // A child gets at most its parent's rate.
    app.post(
        "/v1/tenants",
        &other.key,
        &json!({ "name": "fast", "settings": { "child_creation_rate_per_second": 1000 } }),
    )
    .await
    .problem(403, "forbidden");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.post("/v1/tenants", &key, &json!({ "name": "c3" }))
        .await
        .expect(201);
    // Not a number > 0: refused.
    app.admin_post(
        "/v1/tenants",
        &json!({ "name": "x", "settings": { "child_creation_rate_per_second": 0 } }),
    )
    .await
    .problem(422, "validation_failed");
}

#[tokio::test]
async fn metadata_past_16_kib_is_refused_for_a_child_and_by_the_operator_and_an_older_large_one_does_not_block_other_changes(
) {
    let app = TestApp::spawn().await;
    let parent = app.tenant("parent").await;
    // 16 KiB of JSON text, and one byte more.
    let fits = json!({ "v": "x".repeat(16384 - 9) });
    assert_eq!(
        fits.to_string().len() + 1,
        16384,
        "jsonb writes `{{\"v\": \"…\"}}`"
    );
    let over = json!({ "v": "x".repeat(16384 - 8) });
    let refused = app
        .post(
            "/v1/tenants",
            &parent.key,
            &json!({ "name": "hoarder", "settings": { "metadata": over } }),
        )
        .await;
    assert_eq!(
        refused.problem(422, "validation_failed")["field"],
        "settings.metadata"
    );
    let children = format!(
        "SELECT count(*) FROM tenantry.tenants WHERE parent_id = '{}'",
        parent.id
    );
    assert_eq!(app.count(&children).await, 0, "nothing created");
    let child = app
        .post(
            "/v1/tenants",
            &parent.key,
            &json!({ "name": "modest", "settings": { "metadata": fits } }),
        )
        .await
        .expect(201)
        .clone();
    let child_id = child["tenant_id"].as_str().unwrap();
    // The operator is held to it too, and the refusal changes nothing.
    let path = format!("/v1/tenants/{child_id}");
    let patched = app
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(&app.admin_token),
            Some(&json!({ "settings": { "metadata": over } })),
        )
        .await;
    assert_eq!(
        patched.problem(422, "validation_failed")["field"],
        "settings.metadata"
    );
    assert_eq!(
        app.admin_get(&path).await.expect(200)["settings"]["metadata"],
        fits
    );

    // Metadata stored larger before the bound (written here past the
    // trigger, as a superuser restoring rows would) stays, and the tenant's
    // other changes go on; writing the metadata again is held to the bound.
    let client = app.db.superuser_client().await;
    client
        .batch_execute(&format!(
            "SET session_replication_role = replica;
             UPDATE tenantry.tenants SET settings = jsonb_set(settings, '{{metadata}}', '{over}')
              WHERE tenant_id = '{child_id}';
             RESET session_replication_role;"
        ))
        .await
        .unwrap();
    app.send(
        reqwest::Method::PATCH,
        &path,
        Some(&app.admin_token),
        Some(&json!({ "name": "renamed" })),
    )
    .await
    .expect(200);
    app.admin_post(&format!("{path}/suspend"), &json!({}))
        .await
        .expect(200);
    let rewritten = app
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(&app.admin_token),
            Some(&json!({ "settings": { "metadata": { "more": over } } })),
        )
        .await;
    assert_eq!(
        rewritten.problem(422, "validation_failed")["field"],
        "settings.metadata"
    );
}

/// One tenant's requests in flight on a server are bounded
/// (`max_requests_in_flight_per_tenant`): past it the tenant's next request
/// is answered 429 at once, while another tenant is served and the tenant's
/// own requests in flight finish. Without it a tenant's thousand connections
/// each held a body of up to the size limit in the server's memory (a review
/// of noisy neighbours: 306 MB to 1.2 GB). Two writes held by a lock on
/// their row fill the bound here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_requests_in_flight_gets_429_while_another_tenant_is_served() {
    let app = TestApp::spawn_with(|s| s.max_requests_in_flight_per_tenant = 2).await;
    let busy = app.tenant("busy").await;
    let other = app.tenant("other").await;
    let doc = app.create_resource(&busy.key, "doc").await;
    let su = app.db.superuser_client().await;
    su.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM tenantry.resources WHERE id = '{doc}' FOR UPDATE"
    ))
    .await
    .unwrap();
    let watcher = app.db.superuser_client().await;
    let path = format!("/v1/resources/{doc}");
    let (one, two) = (json!({ "name": "one" }), json!({ "name": "two" }));
    let (held, ()) = tokio::join!(
        futures_util::future::join_all([
            app.patch(&path, &busy.key, &one),
            app.patch(&path, &busy.key, &two)
        ]),
        async {
            assert_eq!(
                tenantry_db::testing::server_sessions_wait_for_a_lock(&watcher, 2)
                    .await
                    .len(),
                2,
                "both writes wait for the row"
            );
            let response = app
                .client
                .get(app.url("/v1/tenant"))
                .bearer_auth(&busy.key)
                .send()
                .await
                .unwrap();
            assert_eq!(response.headers()["retry-after"], "1");
            in_flight_refused(&app.send_raw_response(response).await);
            app.get("/v1/tenant", &other.key).await.expect(200);
            su.batch_execute("COMMIT").await.unwrap();
        }
    );
    for r in held {
        r.expect(200);
    }
    // Answered, they free their turns.
    app.get("/v1/tenant", &busy.key).await.expect(200);
}

/// `r` is the 429 of a tenant past `max_requests_in_flight_per_tenant`.
#[track_caller]
fn in_flight_refused(r: &crate::helpers::Resp) {
    let p = r.problem(429, "rate_limited");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("max_requests_in_flight_per_tenant"),
        "{p}"
    );
}

/// A request keeps its turn among its tenant's requests in flight until its
/// answer is sent: a tenant reading big answers slowly on many connections
/// held them all in the server's memory, each out of its turns once its
/// handler returned (a review of noisy neighbours: 495 slow reads of one
/// tenant's pages took the server from 50 MB to 1.4 GB). Here two answers
/// of 15 MB that their clients do not read fill a bound of two: the
/// tenant's next request is 429, another tenant is served, and the turns
/// come back when those clients hang up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_tenant_does_not_read_keep_their_turns_until_sent_or_dropped() {
    let app = TestApp::spawn_with(|s| s.max_requests_in_flight_per_tenant = 2).await;
    let busy = app.tenant("busy").await;
    let other = app.tenant("other").await;
    let big = app.create_resource(&busy.key, "big").await;
    app.db
        .superuser_client()
        .await
        .batch_execute(&format!(
            "UPDATE tenantry.resources SET data = jsonb_build_object('s', repeat('x', 15000000))
             WHERE id = '{big}'"
        ))
        .await
        .unwrap();
    let addr = app
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse::<std::net::SocketAddr>()
        .unwrap();
    let mut unread = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let request = format!(
            "GET /v1/resources/{big} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\r\n",
            busy.key
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        // The answer has begun: its handler is done.
        let mut head = [0u8; 12];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut head)
            .await
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        unread.push(stream);
    }
    in_flight_refused(&app.get("/v1/tenant", &busy.key).await);
    app.get("/v1/tenant", &other.key).await.expect(200);
    drop(unread);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = app.get("/v1/tenant", &busy.key).await;
        if r.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the turns did not come back: {}",
            r.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
