//! Idempotency keys through HTTP: a retry is answered with the first response and writes once; another request under a used key is 422; a malformed key is 400; requests racing on one key write once; keys expire after 24 hours (and the sweep deletes them); errors are not stored; secrets shown once are blanked in replays; a key is per tenant (attacked as the server's own login); the admin token refuses keys.

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{random_id, Resp, TestApp};

/// A response with its `Idempotent-Replayed` header.
struct Keyed {
    resp: Resp,
    replayed: bool,
}

/// Sends `method path` with `token`, the `Idempotency-Key` `key` and `body` (JSON) if any.
async fn keyed(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    key: &str,
    body: Option<&Value>,
) -> Keyed {
    let mut req = app
        .client
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", key);
    if let Some(b) = body {
        req = req.json(b);
    }
    let response = req.send().await.expect("request failed");
    let replayed = match response.headers().get("idempotent-replayed") {
        None => false,
        Some(v) => {
            assert_eq!(v, "true", "Idempotent-Replayed is true when present");
            true
        }
    };
    Keyed {
        resp: app.send_raw_response(response).await,
        replayed,
    }
}

/// `POST /v1/resources` with `body` under `key`.
async fn create(app: &TestApp, token: &str, key: &str, body: &Value) -> Keyed {
    keyed(app, Method::POST, "/v1/resources", token, key, Some(body)).await
}

async fn resources_named(app: &TestApp, name: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM tenantry.resources WHERE name = '{name}'"
    ))
    .await
}

#[tokio::test]
async fn a_retry_with_the_same_key_replays_the_first_response_and_writes_once() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let body = json!({ "name": "invoice-1", "data": { "total": 3 } });
    let first = create(&app, &acme.key, "order-1", &body).await;
    first.resp.expect(201);
    assert!(!first.replayed);
    let retry = create(&app, &acme.key, "order-1", &body).await;
    retry.resp.expect(201);
    assert!(retry.replayed, "the retry is marked as a replay");
    assert_eq!(
        retry.resp.text, first.resp.text,
        "byte for byte the first body"
    );
    assert_eq!(retry.resp.content_type, "application/json");
    assert_eq!(resources_named(&app, "invoice-1").await, 1);

    // Without a key, the same request writes again: keys are what make retries safe.
    app.post("/v1/resources", &acme.key, &body)
        .await
        .expect(201);
    assert_eq!(resources_named(&app, "invoice-1").await, 2);

    // A 204 is replayed as a 204, and the resource is deleted once.
    let id = first.resp.body["id"].as_str().unwrap();
    let path = format!("/v1/resources/{id}");
    let deleted = keyed(&app, Method::DELETE, &path, &acme.key, "delete-1", None).await;
    assert_eq!(deleted.resp.status, 204, "{}", deleted.resp.text);
    let again = keyed(&app, Method::DELETE, &path, &acme.key, "delete-1", None).await;
    assert_eq!(
        again.resp.status, 204,
        "not the 404 a second delete would give"
    );
    assert!(again.replayed);
    assert_eq!(again.resp.text, "");
}

#[tokio::test]
async fn replayed_request_with_other_body_or_path_is_422_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let one = json!({ "name": "first" });
    create(&app, &acme.key, "k-1", &one).await.resp.expect(201);
    let other = json!({ "name": "second" });
    let r = create(&app, &acme.key, "k-1", &other).await;
    let problem = r.resp.problem(422, "validation_failed");
    assert_eq!(problem["field"], "Idempotency-Key");
    assert!(!r.replayed);
    let r = keyed(
        &app,
        Method::POST,
        "/v1/roles",
        &acme.key,
        "k-1",
        Some(&one),
    )
    .await;
    r.resp.problem(422, "validation_failed");
    assert_eq!(resources_named(&app, "second").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM tenantry.roles WHERE name = 'first'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_malformed_key_is_400_invalid_header_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let body = json!({ "name": "never" });
    for bad in ["", "two words", &"k".repeat(256), "caf\u{e9}"] {
        let r = app
            .send_raw(
                app.client
                    .post(app.url("/v1/resources"))
                    .bearer_auth(&acme.key)
                    .header("Idempotency-Key", bad)
                    .json(&body),
            )
            .await;
        assert_eq!(
            r.problem(400, "invalid_header")["field"],
            "Idempotency-Key",
            "{bad:?}"
        );
    }
    let longest = "k".repeat(255);
    create(&app, &acme.key, &longest, &json!({ "name": "ok" }))
        .await
        .resp
        .expect(201);
    assert_eq!(resources_named(&app, "never").await, 0);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_write_once() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let body = json!({ "name": "raced", "data": { "n": 1 } });
    let answers = join_all((0..8).map(|_| create(&app, &acme.key, "race", &body))).await;
    let created: Vec<&Keyed> = answers.iter().filter(|a| a.resp.status == 201).collect();
    assert!(!created.is_empty(), "no request succeeded");
    assert!(
        created.iter().all(|a| a.resp.text == created[0].resp.text),
        "every 201 carries the one resource"
    );
    assert_eq!(
        created.iter().filter(|a| !a.replayed).count(),
        1,
        "one request wrote"
    );
    for a in answers.iter().filter(|a| a.resp.status != 201) {
        assert_eq!(a.resp.problem(409, "conflict")["field"], "Idempotency-Key");
    }
    assert_eq!(resources_named(&app, "raced").await, 1);
}

#[tokio::test]
async fn a_key_older_than_24_hours_runs_again_and_the_sweep_deletes_expired_keys_only() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let body = json!({ "name": "daily" });
    let first = create(&app, &acme.key, "day-1", &body).await;
    first.resp.expect(201);
    create(&app, &acme.key, "day-2", &body)
        .await
        .resp
        .expect(201);
    let su = app.db.superuser_client().await;
    su.execute(
        "UPDATE tenantry.idempotency_keys SET created_at = now() - interval '23 hours 59 minutes' \
         WHERE idempotency_key = 'day-2'",
        &[],
    )
    .await
    .unwrap();
    su.execute(
        "UPDATE tenantry.idempotency_keys SET created_at = now() - interval '24 hours 1 second' \
         WHERE idempotency_key = 'day-1'",
        &[],
    )
    .await
    .unwrap();
    let late = create(&app, &acme.key, "day-1", &body).await;
    late.resp.expect(201);
    assert!(!late.replayed, "an expired key is free again");
    assert_ne!(late.resp.body["id"], first.resp.body["id"]);
    let within = create(&app, &acme.key, "day-2", &body).await;
    assert!(within.replayed, "a key younger than 24 hours still replays");
    assert_eq!(resources_named(&app, "daily").await, 3);

    // The sweep (what the server runs every few minutes) deletes only expired keys.
    su.execute(
        "UPDATE tenantry.idempotency_keys SET created_at = now() - interval '25 hours' \
         WHERE idempotency_key = 'day-1'",
        &[],
    )
    .await
    .unwrap();
    let mut scope = app.db.database().admin("test").await.unwrap();
    assert_eq!(scope.expire_idempotency_keys(1000).await.unwrap(), 1);
    scope.commit().await.unwrap();
    let left: Vec<String> = su
        .query(
            "SELECT idempotency_key FROM tenantry.idempotency_keys ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["day-2"]);
}

#[tokio::test]
async fn errors_are_not_stored_so_a_retry_after_the_cause_is_fixed_succeeds() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let resource = app.create_resource(&acme.key, "plan").await;
    let path = format!("/v1/resources/{resource}/shares");
    let share = json!({ "tenant_id": globex.id });
    app.admin_post(&format!("/v1/tenants/{}/suspend", globex.id), &json!({}))
        .await
        .expect(200);
    let refused = keyed(
        &app,
        Method::POST,
        &path,
        &acme.key,
        "share-1",
        Some(&share),
    )
    .await;
    refused.resp.problem(409, "conflict");
    assert_eq!(
        app.count("SELECT count(*) FROM tenantry.idempotency_keys")
            .await,
        0
    );
    app.admin_post(&format!("/v1/tenants/{}/activate", globex.id), &json!({}))
        .await
        .expect(200);
    let shared = keyed(
        &app,
        Method::POST,
        &path,
        &acme.key,
        "share-1",
        Some(&share),
    )
    .await;
    shared.resp.expect(201);
    assert!(!shared.replayed);
    let missing = format!("/v1/resources/{}", random_id());
    keyed(&app, Method::DELETE, &missing, &acme.key, "gone", None)
        .await
        .resp
        .problem(404, "not_found");
    assert_eq!(
        app.count("SELECT count(*) FROM tenantry.idempotency_keys")
            .await,
        1
    );
}

#[tokio::test]
async fn a_replayed_key_creation_blanks_the_secret_and_mints_one_key() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let body = json!({ "description": "backend" });
    let first = keyed(
        &app,
        Method::POST,
        "/v1/keys",
        &acme.key,
        "mint-1",
        Some(&body),
    )
    .await;
    let secret = first.resp.expect(201)["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tk_"));
    let retry = keyed(
        &app,
        Method::POST,
        "/v1/keys",
        &acme.key,
        "mint-1",
        Some(&body),
    )
    .await;
    assert!(retry.replayed);
    assert_eq!(
        retry.resp.expect(201)["key"],
        "",
        "the secret is stored nowhere"
    );
    assert_eq!(retry.resp.body["key_info"], first.resp.body["key_info"]);
    let stored = app
        .count(&format!(
            "SELECT count(*) FROM tenantry.idempotency_keys \
             WHERE position(convert_to('{secret}', 'UTF8') IN body) > 0"
        ))
        .await;
    assert_eq!(stored, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM tenantry.api_keys WHERE description = 'backend'")
            .await,
        1
    );
    // The key works: it is the one minted.
    app.get("/v1/resources", &secret).await.expect(200);
}

#[tokio::test]
async fn another_tenant_replaying_a_key_gets_its_own_fresh_processing() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let body = json!({ "name": "same-request" });
    let a = create(&app, &acme.key, "shared-key", &body).await;
    a.resp.expect(201);
    let b = create(&app, &globex.key, "shared-key", &body).await;
    b.resp.expect(201);
    assert!(!b.replayed, "globex never gets acme's response");
    assert_ne!(b.resp.body["id"], a.resp.body["id"]);
    assert_eq!(b.resp.body["tenant_id"], globex.id.as_str());
    // Another body under acme's key text is globex's own key: no 422 either.
    let c = create(&app, &globex.key, "acme-only", &body).await;
    c.resp.expect(201);

    // As the server's own login in globex's context: acme's row is invisible,
    // and claiming acme's key text claims globex's own key.
    let server = app.db.server_client().await;
    server.batch_execute("SET ROLE tenantry_app").await.unwrap();
    tenantry_db::testing::begin_in_tenant(&server, globex.id.parse().unwrap()).await;
    let acme_id: uuid::Uuid = acme.id.parse().unwrap();
    let seen: i64 = server
        .query_one(
            "SELECT count(*) FROM tenantry.idempotency_keys WHERE tenant_id = $1",
            &[&acme_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    let rows = server
        .query(
            "SELECT status, body FROM tenantry.claim_idempotency_key('shared-key', sha256('other'))",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "globex's own key only");
    let body: Vec<u8> = rows[0].get(1);
    assert_eq!(
        body,
        b.resp.text.as_bytes(),
        "globex's own stored response, never acme's"
    );
    let updated = server
        .execute(
            "UPDATE tenantry.idempotency_keys SET body = 'x' WHERE tenant_id = $1",
            &[&acme_id],
        )
        .await
        .unwrap();
    assert_eq!(updated, 0, "acme's rows cannot be changed either");
    server.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(resources_named(&app, "same-request").await, 3);
}

#[tokio::test]
async fn the_admin_token_refuses_an_idempotency_key() {
    let app = TestApp::spawn().await;
    let r = app
        .send_raw(
            app.client
                .post(app.url("/v1/tenants"))
                .bearer_auth(&app.admin_token)
                .header("Idempotency-Key", "t-1")
                .json(&json!({ "name": "acme" })),
        )
        .await;
    assert_eq!(r.problem(400, "invalid_header")["field"], "Idempotency-Key");
    assert_eq!(app.count("SELECT count(*) FROM tenantry.tenants").await, 0);
}

#[tokio::test]
async fn a_child_tenant_created_under_a_key_is_created_once() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let body = json!({ "name": "acme-eu" });
    let first = keyed(
        &app,
        Method::POST,
        "/v1/tenants",
        &acme.key,
        "child-1",
        Some(&body),
    )
    .await;
    first.resp.expect(201);
    let retry = keyed(
        &app,
        Method::POST,
        "/v1/tenants",
        &acme.key,
        "child-1",
        Some(&body),
    )
    .await;
    assert!(retry.replayed);
    assert_eq!(
        retry.resp.expect(201)["tenant_id"],
        first.resp.body["tenant_id"]
    );
    assert_eq!(
        app.count("SELECT count(*) FROM tenantry.tenants WHERE name = 'acme-eu'")
            .await,
        1
    );
}
