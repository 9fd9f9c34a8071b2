//! Credentials: missing, malformed, unknown, forged, revoked and expired keys
//! get one and the same 401; each kind of credential is refused on the other
//! kind's routes with 403 wrong_credential.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{random_id, Resp, TestApp};

async fn get_with_header(app: &TestApp, path: &str, authorization: &str) -> Resp {
    app.send_raw(
        app.client
            .get(app.url(path))
            .header(reqwest::header::AUTHORIZATION, authorization),
    )
    .await
}

#[tokio::test]
async fn every_credential_failure_gets_the_same_401_body() {
    // A long cache lifetime: revocation and expiry must not wait for it.
    let app = TestApp::spawn_with(|s| s.key_cache_ttl_ms = 60_000).await;
    let t = app.tenant("t").await;
    // Allowed: the real key.
    app.get("/v1/resources", &t.key).await.expect(200);

    let reference = app.send(Method::GET, "/v1/resources", None, None).await;
    reference.problem(401, "unauthorized");

    let mut failures: Vec<(&str, Resp)> = Vec::new();
    failures.push(("garbage", app.get("/v1/resources", "garbage").await));
    failures.push((
        "basic scheme",
        get_with_header(&app, "/v1/resources", "Basic dXNlcjpwYXNz").await,
    ));
    failures.push((
        "empty bearer",
        get_with_header(&app, "/v1/resources", "Bearer ").await,
    ));
    failures.push((
        "uppercase hex",
        app.get("/v1/resources", &t.key.to_uppercase()).await,
    ));
    let unknown = format!("tk_{}_{}", "0".repeat(12), "a".repeat(64));
    failures.push(("unknown prefix", app.get("/v1/resources", &unknown).await));
    // The real prefix with another secret.
    let (head, secret) = t.key.rsplit_once('_').unwrap();
    let flipped: String = secret
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let forged = format!("{head}_{flipped}");
    failures.push(("wrong secret", app.get("/v1/resources", &forged).await));

    // A revoked key.
    let (revoked, revoked_id) = app.create_key(&t.id, json!({})).await;
    app.get("/v1/resources", &revoked).await.expect(200);
    app.delete(&format!("/v1/keys/{revoked_id}"), &t.key)
        .await
        .expect(204);
    failures.push(("revoked", app.get("/v1/resources", &revoked).await));

    // An expired key: valid for a moment, used once, then past its expiry.
    // (5 s: its creation and first use must fall before it on a loaded machine.)
    let expires = chrono::Utc::now() + chrono::Duration::seconds(5);
    let (expiring, _) = app
        .create_key(&t.id, json!({ "expires_at": expires.to_rfc3339() }))
        .await;
    app.get("/v1/resources", &expiring).await.expect(200);
    while chrono::Utc::now() <= expires + chrono::Duration::milliseconds(50) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    failures.push(("expired", app.get("/v1/resources", &expiring).await));

    for (what, r) in &failures {
        r.problem(401, "unauthorized");
        assert_eq!(r.body, reference.body, "{what}: 401 body differs");
    }
    // The forged secret did not disable the real key.
    app.get("/v1/resources", &t.key).await.expect(200);
}

#[tokio::test]
async fn admin_token_on_tenant_routes_gets_403_wrong_credential() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let rid = app.create_resource(&t.key, "r").await;
    let some = random_id();
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/tenant".into(), None),
        (Method::GET, "/v1/tenant/children".into(), None),
        (Method::GET, "/v1/resources".into(), None),
        (
            Method::POST,
            "/v1/resources".into(),
            Some(json!({ "name": "x" })),
        ),
        (Method::GET, format!("/v1/resources/{rid}"), None),
        (
            Method::PATCH,
            format!("/v1/resources/{rid}"),
            Some(json!({ "name": "y" })),
        ),
        (Method::DELETE, format!("/v1/resources/{rid}"), None),
        (Method::GET, format!("/v1/resources/{rid}/shares"), None),
        (Method::GET, "/v1/members".into(), None),
        (Method::GET, "/v1/roles".into(), None),
        (Method::GET, "/v1/permissions".into(), None),
        (Method::GET, "/v1/keys".into(), None),
        (Method::POST, "/v1/keys".into(), Some(json!({}))),
        (Method::DELETE, format!("/v1/keys/{some}"), None),
        (Method::GET, "/v1/audit".into(), None),
        (Method::GET, "/v1/usage/metrics".into(), None),
        (Method::GET, "/v1/usage/resources".into(), None),
    ];
    for (method, path, body) in routes {
        let r = app
            .send(method.clone(), &path, Some(&app.admin_token), body.as_ref())
            .await;
        r.problem(403, "wrong_credential");
    }
    // Nothing changed: the resource is still there.
    app.get(&format!("/v1/resources/{rid}"), &t.key)
        .await
        .expect(200);
}

#[tokio::test]
async fn tenant_key_on_admin_routes_gets_403_wrong_credential() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let id = &t.id;
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/tenants".into(), None),
        (Method::GET, format!("/v1/tenants/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/tenants/{id}"),
            Some(json!({ "name": "hijack" })),
        ),
        (Method::DELETE, format!("/v1/tenants/{id}"), None),
        (Method::POST, format!("/v1/tenants/{id}/suspend"), None),
        (Method::POST, format!("/v1/tenants/{id}/activate"), None),
        (
            Method::POST,
            format!("/v1/tenants/{id}/keys"),
            Some(json!({})),
        ),
        (Method::GET, format!("/v1/tenants/{id}/usage"), None),
        (Method::GET, format!("/v1/tenants/{id}/audit"), None),
    ];
    for (method, path, body) in routes {
        let r = app
            .send(method.clone(), &path, Some(&t.key), body.as_ref())
            .await;
        r.problem(403, "wrong_credential");
    }
    // Allowed beside it: the admin token on the same route; nothing changed.
    let shown = app.admin_get(&format!("/v1/tenants/{id}")).await;
    assert_eq!(shown.expect(200)["name"], "t");
    assert_eq!(shown.body["status"], "active");
    assert_eq!(app.get("/v1/keys", &t.key).await.items().len(), 1);
}

#[tokio::test]
async fn a_revoked_key_is_refused_immediately_on_the_same_instance() {
    let app = TestApp::spawn_with(|s| s.key_cache_ttl_ms = 60_000).await;
    let t = app.tenant("t").await;
    let (victim, victim_id) = app.create_key(&t.id, json!({})).await;
    // Cached by a successful request.
    app.get("/v1/tenant", &victim).await.expect(200);
    app.get("/v1/tenant", &victim).await.expect(200);

    app.delete(&format!("/v1/keys/{victim_id}"), &t.key)
        .await
        .expect(204);
    app.get("/v1/tenant", &victim)
        .await
        .problem(401, "unauthorized");
    // The revoking key still works.
    app.get("/v1/tenant", &t.key).await.expect(200);
}

#[tokio::test]
async fn another_instance_refuses_a_revoked_key_once_its_one_second_cache_entry_lapses() {
    let app = TestApp::spawn().await;
    let sibling = app.sibling().await;
    let t = app.tenant("t").await;
    let (victim, victim_id) = app.create_key(&t.id, json!({})).await;
    let on_sibling = |key: &str| {
        app.client
            .get(format!("{}/v1/tenant", sibling.base))
            .bearer_auth(key)
    };
    assert_eq!(app.send_raw(on_sibling(&victim)).await.status, 200);

    app.delete(&format!("/v1/keys/{victim_id}"), &t.key)
        .await
        .expect(204);
    // The revoking instance refuses at once; the other one within its cache lifetime (1 s).
    app.get("/v1/tenant", &victim)
        .await
        .problem(401, "unauthorized");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.send_raw(on_sibling(&victim))
        .await
        .problem(401, "unauthorized");
    assert_eq!(app.send_raw(on_sibling(&t.key)).await.status, 200);
    sibling.shutdown().await;
}

/// An integrator who mixes up credentials (a's key, b's id in `X-Tenant-Id`)
/// is told, instead of being served a's data as if it were b's; a tenant
/// that does not exist is answered the same way, so the header tells
/// nothing about which ids exist.
#[tokio::test]
async fn a_key_with_x_tenant_id_naming_another_tenant_is_refused_and_its_own_tenant_is_served() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let b = app.tenant("b").await;
    let with_header = |tenant: String| {
        let app = &app;
        let key = a.key.clone();
        async move {
            app.send_raw(
                app.client
                    .get(app.url("/v1/resources"))
                    .bearer_auth(key)
                    .header("X-Tenant-Id", tenant),
            )
            .await
        }
    };
    with_header(a.id.clone()).await.expect(200);
    let other = with_header(b.id.clone()).await;
    let body = other.problem(422, "validation_failed");
    assert_eq!(body["field"], "X-Tenant-Id", "{body}");
    let missing = with_header(random_id()).await;
    assert_eq!(missing.status, 422);
    assert_eq!(
        missing.text, other.text,
        "another tenant and no tenant alike"
    );
    // Not a tenant id at all: a malformed header, 400 as every other.
    assert_eq!(with_header("not-a-uuid".into()).await.status, 400);
    // A deleted tenant's key is unknown, whatever it is sent with.
    app.delete(&format!("/v1/tenants/{}", b.id), &app.admin_token)
        .await
        .expect(204);
    let deleted = app
        .send_raw(
            app.client
                .get(app.url("/v1/resources"))
                .bearer_auth(&b.key)
                .header("X-Tenant-Id", a.id.as_str()),
        )
        .await;
    deleted.problem(401, "unauthorized");
}

/// `X-Tenant-Id` sent twice is 400 `invalid_header` on every tenant route,
/// as the document declares for each (it said 422 and some routes declared
/// no 400 at all: found by an outside review).
#[tokio::test]
async fn x_tenant_id_sent_twice_is_a_400_every_tenant_route_declares() {
    let app = TestApp::spawn().await;
    let a = app.tenant("a").await;
    let doc = app.send(Method::GET, "/openapi.json", None, None).await;
    let doc: serde_json::Value = serde_json::from_str(&doc.text).unwrap();
    for path in [
        "/v1/tenant",
        "/v1/tables",
        "/v1/usage/resources",
        "/v1/resources",
    ] {
        let r = app
            .send_raw(
                app.client
                    .get(app.url(path))
                    .bearer_auth(&a.key)
                    .header("X-Tenant-Id", a.id.as_str())
                    .header("X-Tenant-Id", a.id.as_str()),
            )
            .await;
        assert_eq!(
            r.problem(400, "invalid_header")["field"],
            "X-Tenant-Id",
            "{path}"
        );
        let declared = &doc["paths"][path]["get"]["responses"]["400"]["description"];
        assert!(
            declared.as_str().is_some_and(
                |d| d.contains("is sent more than once") && d.contains("`X-Tenant-Id`")
            ),
            "{path}: {declared}"
        );
    }
}

/// Two `Authorization` headers, even two valid keys of different tenants,
/// name no one: 401, not whichever the server reads first.
#[tokio::test]
async fn two_authorization_headers_are_refused_like_a_missing_key() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant("a").await, app.tenant("b").await);
    let reference = app.send(Method::GET, "/v1/resources", None, None).await;
    for (first, second) in [(&a.key, &b.key), (&a.key, &a.key)] {
        let r = app
            .send_raw(
                app.client
                    .get(app.url("/v1/resources"))
                    .header(reqwest::header::AUTHORIZATION, format!("Bearer {first}"))
                    .header(reqwest::header::AUTHORIZATION, format!("Bearer {second}")),
            )
            .await;
        r.problem(401, "unauthorized");
        assert_eq!(r.body["detail"], reference.body["detail"]);
    }
}

/// A tenant's key whose cache entry has expired (every second by default) is
/// checked again in that tenant's share of the pool, once for all of the
/// tenant's requests that came with it meanwhile, and not in the lane that
/// every credential the server does not know shares: a flood of made-up keys
/// or of impersonation tokens filled that lane and answered another tenant's
/// requests 503 each time its key's entry expired (found by a review of noisy
/// neighbours). Here a check of a made-up key held by a lock fills that lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_cache_entry_expired_is_checked_in_its_tenants_share_not_behind_unknown_credentials(
) {
    let app = TestApp::spawn().await;
    let victim = app.tenant("victim").await;
    let mut config = app.db.database_config();
    config.max_connections = 6;
    config.max_connections_per_tenant = 1;
    config.acquire_timeout = Duration::from_millis(500);
    let db = tenantry_db::Database::connect(&config).unwrap();
    let server = app.sibling_on_with(db, |s| s.key_cache_ttl_ms = 100).await;
    let get = |key: String| {
        app.send_raw(
            app.client
                .get(format!("{}/v1/tenant", server.base))
                .bearer_auth(key),
        )
    };
    get(victim.key.clone()).await.expect(200);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let su = app.db.superuser_client().await;
    su.batch_execute("BEGIN; LOCK TABLE tenantry.api_keys IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let watcher = app.db.superuser_client().await;
    let made_up = format!("tk_{}_{}", "0".repeat(12), "ab".repeat(32));
    let (unknown, victims) = tokio::join!(get(made_up), async {
        assert_eq!(
            tenantry_db::testing::server_sessions_wait_for_a_lock(&watcher, 1)
                .await
                .len(),
            1,
            "the made-up key's check holds the lane of unknown credentials"
        );
        let victims = futures_util::future::join_all((0..3).map(|_| get(victim.key.clone())));
        let (victims, ()) = tokio::join!(victims, async {
            // (Bounded below the client's timeout, so that a failure says this.)
            let waiting = tokio::time::timeout(
                Duration::from_secs(10),
                tenantry_db::testing::server_sessions_wait_for_a_lock(&watcher, 2),
            )
            .await;
            assert!(
                waiting.is_ok_and(|pids| pids.len() == 2),
                "the victim's key is checked beside the made-up one"
            );
            // Longer than any wait for a turn: a request queued behind the
            // made-up key's turn, or behind its own tenant's one check, is
            // a 503 by now.
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            su.batch_execute("COMMIT").await.unwrap();
        });
        victims
    });
    for r in victims {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    unknown.problem(401, "unauthorized");
}

/// An impersonation token is checked in the database at every request; once
/// a check has found its session, the next ones wait in that session's
/// tenant's share of the pool, not in the lane that every credential the
/// server does not know shares (a review of noisy neighbours: a tenant's
/// own session token, sent in a flood, filled that lane for everyone). Here
/// a made-up key's check held by a lock fills that lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impersonation_token_once_checked_waits_in_its_tenants_share_not_behind_unknown_credentials(
) {
    let app = TestApp::spawn().await;
    let victim = app.tenant("victim").await;
    let member = app
        .post(
            "/v1/members",
            &victim.key,
            &json!({ "email": "support@victim.test" }),
        )
        .await;
    let user_id = member.expect(201)["user_id"].as_str().unwrap().to_owned();
    let started = app
        .post(
            "/v1/impersonations",
            &victim.key,
            &json!({ "user_id": user_id, "reason": "ticket 7", "valid_for_seconds": 600 }),
        )
        .await;
    let session = started.expect(201)["token"].as_str().unwrap().to_owned();
    let mut config = app.db.database_config();
    config.max_connections = 6;
    config.max_connections_per_tenant = 1;
    config.acquire_timeout = Duration::from_millis(500);
    let db = tenantry_db::Database::connect(&config).unwrap();
    let server = app.sibling_on(db).await;
    let get = |token: String| {
        app.send_raw(
            app.client
                .get(format!("{}/v1/tenant", server.base))
                .bearer_auth(token),
        )
    };
    get(session.clone()).await.expect(200);

    let su = app.db.superuser_client().await;
    // The keys' lookup table, which a key's check reads first and a
    // session's check never does.
    su.batch_execute("BEGIN; LOCK TABLE tenantry.api_key_lookup IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let watcher = app.db.superuser_client().await;
    let made_up = format!("tk_{}_{}", "0".repeat(12), "ab".repeat(32));
    let (unknown, ()) = tokio::join!(get(made_up), async {
        assert_eq!(
            tenantry_db::testing::server_sessions_wait_for_a_lock(&watcher, 1)
                .await
                .len(),
            1,
            "the made-up key's check holds the lane of unknown credentials"
        );
        // Longer than any wait for a turn: queued behind the made-up key's
        // turn, the session's request would be a 503.
        let r = get(session.clone()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        su.batch_execute("COMMIT").await.unwrap();
    });
    unknown.problem(401, "unauthorized");
}
