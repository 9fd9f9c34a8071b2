//! Idempotency keys through HTTP: a retry is answered with the first response and writes once; another request under a used key is 422; a malformed key is 400; requests racing on one key write once; keys expire after 24 hours (and the sweep deletes them); errors are not stored; secrets shown once are blanked in replays; a key is per tenant (attacked as the server's own login); the admin token refuses keys.

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{random_id, Resp, TestApp};

/// A response with its `Idempotent-Replayed` header.
pub(crate) struct Keyed {
    pub(crate) resp: Resp,
    pub(crate) replayed: bool,
}

/// Sends `method path` with `token`, the `Idempotency-Key` `key` and `body` (JSON) if any.
pub(crate) async fn keyed(
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
async fn a_created_resource_or_tenant_is_located_in_the_answer_and_in_its_replay() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let body = json!({ "name": "located" });
    let first = create(&app, &acme.key, "loc-1", &body).await;
    let id = first.resp.expect(201)["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/resources/{id}");
    assert_eq!(first.resp.location.as_deref(), Some(path.as_str()));
    let retry = create(&app, &acme.key, "loc-1", &body).await;
    assert!(retry.replayed);
    assert_eq!(retry.resp.location.as_deref(), Some(path.as_str()));
    // Where it says: the resource, as created.
    let read = app.get(&path, &acme.key).await;
    assert_eq!(read.expect(200), first.resp.expect(201));
    // Without a key too; a refused creation locates nothing.
    let plain = app.post("/v1/resources", &acme.key, &body).await;
    let other = plain.expect(201)["id"].as_str().unwrap();
    assert_eq!(plain.location, Some(format!("/v1/resources/{other}")));
    let refused = app
        .post("/v1/resources", &acme.key, &json!({ "name": "" }))
        .await;
    assert!(refused.status >= 400 && refused.location.is_none());

    // The operator's tenant, in the answer and its replay.
    let admin = app.admin_token.clone();
    let tenant = json!({ "name": "located-tenant" });
    let made = keyed(
        &app,
        Method::POST,
        "/v1/tenants",
        &admin,
        "t-loc",
        Some(&tenant),
    )
    .await;
    let tenant_id = made.resp.expect(201)["tenant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = format!("/v1/tenants/{tenant_id}");
    assert_eq!(made.resp.location.as_deref(), Some(at.as_str()));
    let again = keyed(
        &app,
        Method::POST,
        "/v1/tenants",
        &admin,
        "t-loc",
        Some(&tenant),
    )
    .await;
    assert!(again.replayed);
    assert_eq!(again.resp.location.as_deref(), Some(at.as_str()));
    app.get(&at, &admin).await.expect(200);
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

    // The sweep (what the server runs every few minutes) deletes only
    // expired keys: a tenant's, and a person's (migration 0066) likewise.
    su.execute(
        "UPDATE tenantry.idempotency_keys SET created_at = now() - interval '25 hours' \
         WHERE idempotency_key = 'day-1'",
        &[],
    )
    .await
    .unwrap();
    su.batch_execute(
        "INSERT INTO tenantry.person_idempotency_keys (user_id, idempotency_key, fingerprint, status, created_at)
         VALUES (gen_random_uuid(), 'old', sha256('a'), 201, now() - interval '25 hours'),
                (gen_random_uuid(), 'young', sha256('b'), 201, now() - interval '23 hours')",
    )
    .await
    .unwrap();
    let mut scope = app.db.database().admin("test").await.unwrap();
    assert_eq!(scope.expire_idempotency_keys(1000).await.unwrap(), 1);
    scope.commit().await.unwrap();
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tenantry.person_idempotency_keys WHERE idempotency_key = 'young'"
        )
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM tenantry.person_idempotency_keys")
            .await,
        1
    );
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
async fn the_admin_tokens_writes_replay_under_the_operators_own_keys() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token.clone();
    let body = json!({ "name": "acme" });
    let first = keyed(
        &app,
        Method::POST,
        "/v1/tenants",
        &admin,
        "t-1",
        Some(&body),
    )
    .await;
    let tenant = first.resp.expect(201)["tenant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let retry = keyed(
        &app,
        Method::POST,
        "/v1/tenants",
        &admin,
        "t-1",
        Some(&body),
    )
    .await;
    assert!(retry.replayed && !first.replayed);
    assert_eq!(retry.resp.expect(201)["tenant_id"], tenant.as_str());
    assert_eq!(
        app.count("SELECT count(*) FROM tenantry.tenants WHERE name = 'acme'")
            .await,
        1,
        "one tenant for two requests"
    );
    let other = keyed(
        &app,
        Method::POST,
        "/v1/tenants",
        &admin,
        "t-1",
        Some(&json!({ "name": "globex" })),
    )
    .await;
    assert_eq!(
        other.resp.problem(422, "validation_failed")["field"],
        "Idempotency-Key"
    );

    // Minting a tenant's key: once, and the replay does not show the secret.
    let path = format!("/v1/tenants/{tenant}/keys");
    let minted = keyed(&app, Method::POST, &path, &admin, "k-1", Some(&json!({}))).await;
    let secret = minted.resp.expect(201)["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tk_"));
    let again = keyed(&app, Method::POST, &path, &admin, "k-1", Some(&json!({}))).await;
    assert!(again.replayed);
    assert_eq!(again.resp.expect(201)["key"], "");
    // Byte for byte but the secret (the members kept their order).
    assert_eq!(
        again.resp.text,
        minted
            .resp
            .text
            .replacen(&format!("\"key\":\"{secret}\""), "\"key\":\"\"", 1)
    );
    assert_eq!(
        again.resp.body["key_info"]["key_id"],
        minted.resp.body["key_info"]["key_id"]
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM tenantry.api_keys WHERE tenant_id = '{tenant}'"
        ))
        .await,
        1
    );
    let stored: i64 = app
        .count(&format!(
            "SELECT count(*) FROM tenantry.operator_idempotency_keys WHERE strpos(convert_from(body, 'UTF8'), '{secret}') > 0"
        ))
        .await;
    assert_eq!(stored, 0, "the secret is stored nowhere");

    // Suspending twice under one key: one audit row, the same answer.
    let suspend = format!("/v1/tenants/{tenant}/suspend");
    keyed(&app, Method::POST, &suspend, &admin, "s-1", None)
        .await
        .resp
        .expect(200);
    let replay = keyed(&app, Method::POST, &suspend, &admin, "s-1", None).await;
    assert!(replay.replayed);
    assert_eq!(replay.resp.expect(200)["status"], "suspended");

    // The tier move spans many transactions: a key is refused, nothing moves.
    let moved = keyed(
        &app,
        Method::POST,
        &format!("/v1/tenants/{tenant}/move"),
        &admin,
        "m-1",
        Some(&json!({ "to": "schema" })),
    )
    .await;
    assert_eq!(
        moved.resp.problem(400, "invalid_header")["field"],
        "Idempotency-Key"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM tenantry.tenants WHERE tenant_id = '{tenant}' AND isolation = 'shared'"
        ))
        .await,
        1
    );

    // The operator's keys and a tenant's are apart: the same text is a
    // tenant's own fresh request.
    let globex = app.tenant("globex").await;
    let mine = create(&app, &globex.key, "t-1", &json!({ "name": "doc" })).await;
    mine.resp.expect(201);
    assert!(!mine.replayed);
}

#[tokio::test]
async fn the_servers_login_cannot_claim_or_read_the_operators_keys() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token.clone();
    keyed(
        &app,
        Method::POST,
        "/v1/tenants",
        &admin,
        "op-1",
        Some(&json!({ "name": "acme" })),
    )
    .await
    .resp
    .expect(201);
    let acme = app.tenant("globex").await;
    let server = app.db.server_client().await;
    // In a tenant's context, as a tenant key's transaction is: refused.
    server.batch_execute("SET ROLE tenantry_app").await.unwrap();
    tenantry_db::testing::begin_in_tenant(&server, acme.id.parse().unwrap()).await;
    let err = server
        .query(
            "SELECT * FROM tenantry.claim_operator_idempotency_key('op-1', sha256('x'))",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "TN403", "{err}");
    server.batch_execute("ROLLBACK").await.unwrap();
    // Without any context, as tenantry_admin: refused too.
    server
        .batch_execute("SET ROLE tenantry_admin")
        .await
        .unwrap();
    for sql in [
        "SELECT * FROM tenantry.claim_operator_idempotency_key('op-1', sha256('x'))",
        "SELECT tenantry.complete_operator_idempotency_key('op-1', 200::smallint, NULL)",
    ] {
        let err = server.query(sql, &[]).await.unwrap_err();
        assert_eq!(err.code().unwrap().code(), "TN403", "{sql}: {err}");
    }
    // And the table itself is granted to nobody.
    for role in ["tenantry_admin", "tenantry_app", "tenantry_logger"] {
        server
            .batch_execute(&format!("SET ROLE {role}"))
            .await
            .unwrap();
        let err = server
            .query("SELECT body FROM tenantry.operator_idempotency_keys", &[])
            .await
            .unwrap_err();
        assert_eq!(err.code().unwrap().code(), "42501", "{role}: {err}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM tenantry.operator_idempotency_keys WHERE status = 201")
            .await,
        1
    );
}

/// A person's keys (migration 0066) as SQL injected into the server's
/// login would go after them: the table is granted to none of its roles,
/// and the claim answers only a context proven for a person, which no
/// tenant context, no bare session and no setting it may write is.
#[tokio::test]
async fn the_servers_login_cannot_claim_or_read_a_persons_keys() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let su = app.db.superuser_client().await;
    su.batch_execute(
        "INSERT INTO tenantry.person_idempotency_keys (user_id, idempotency_key, fingerprint, status, body)
         VALUES ('00000000-0000-4000-8000-00000000a11c', 'signup-1', sha256('x'), 201, 'secret')",
    )
    .await
    .unwrap();
    let server = app.db.server_client().await;
    let claim = "SELECT * FROM tenantry.claim_person_idempotency_key('signup-1', sha256('x'))";
    let complete =
        "SELECT tenantry.complete_person_idempotency_key('signup-1', 201::smallint, NULL)";
    // In a tenant's context, as a key's or a member's transaction is.
    server.batch_execute("SET ROLE tenantry_app").await.unwrap();
    tenantry_db::testing::begin_in_tenant(&server, acme.id.parse().unwrap()).await;
    let err = server.query(claim, &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "TN403", "{err}");
    server.batch_execute("ROLLBACK").await.unwrap();
    // Without a context, as every role the login may become.
    for role in ["tenantry_app", "tenantry_admin", "tenantry_app_own"] {
        server
            .batch_execute(&format!("RESET ROLE; SET ROLE {role}"))
            .await
            .unwrap();
        for sql in [claim, complete] {
            let err = server.query(sql, &[]).await.unwrap_err();
            let code = err.code().unwrap().code().to_owned();
            assert!(code == "TN403" || code == "42501", "{role} {sql}: {err}");
        }
        let err = server
            .query("SELECT body FROM tenantry.person_idempotency_keys", &[])
            .await
            .unwrap_err();
        assert_eq!(err.code().unwrap().code(), "42501", "{role}: {err}");
        // The setting a person's context is read from is the superuser's.
        let err = server
            .batch_execute(
                "SET backtrace_functions = 'tenantry_user_v1_00000000000040008000000000000a11c'",
            )
            .await
            .unwrap_err();
        assert_eq!(err.code().unwrap().code(), "42501", "{role}: {err}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM tenantry.person_idempotency_keys WHERE body = 'secret'")
            .await,
        1
    );
}

#[tokio::test]
async fn another_caller_of_the_same_tenant_reusing_a_key_gets_422_not_the_first_callers_answer() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let (other_key, _) = app.create_key(&acme.id, json!({})).await;
    let body = json!({ "name": "mine" });
    create(&app, &acme.key, "shared", &body)
        .await
        .resp
        .expect(201);
    let other = create(&app, &other_key, "shared", &body).await;
    assert!(!other.replayed);
    assert_eq!(
        other.resp.problem(422, "validation_failed")["field"],
        "Idempotency-Key"
    );
    assert_eq!(resources_named(&app, "mine").await, 1);
}

#[tokio::test]
async fn a_child_tenant_created_under_a_key_is_created_once() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let body = json!({ "name": "acme-eu" });
    let create = || {
        keyed(
            &app,
            Method::POST,
            "/v1/tenants",
            &acme.key,
            "child-1",
            Some(&body),
        )
    };
    let first = create().await;
    first.resp.expect(201);
    let retry = create().await;
    assert!(retry.replayed);
    // The child as its creation's transaction read it, stored whole.
    assert_eq!(retry.resp.expect(201), &first.resp.body);
    assert_eq!(first.resp.body["parent_id"], acme.id.as_str());
    assert_eq!(
        app.count("SELECT count(*) FROM tenantry.tenants WHERE name = 'acme-eu'")
            .await,
        1
    );

    // A response stored by the previous version (the child's id alone) is
    // answered with the child as it is now.
    let su = app.db.superuser_client().await;
    su.execute(
        "UPDATE tenantry.idempotency_keys SET body = convert_to(to_jsonb($1::text)::text, 'UTF8')
          WHERE idempotency_key = 'child-1'",
        &[&first.resp.body["tenant_id"].as_str().unwrap()],
    )
    .await
    .unwrap();
    let legacy = create().await;
    assert!(legacy.replayed);
    assert_eq!(legacy.resp.expect(201), &first.resp.body);
}

#[tokio::test]
async fn stored_responses_count_against_the_storage_quota_until_they_expire() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let quota = json!({ "settings": { "max_storage_bytes": 2500 } });
    app.send_raw(
        app.client
            .patch(app.url(&format!("/v1/tenants/{}", acme.id)))
            .bearer_auth(&app.admin_token)
            .json(&quota),
    )
    .await
    .expect(200);
    let filler = "x".repeat(600);
    let body = |n: &str| json!({ "name": n, "data": { "f": filler } });
    // One keyed write: its resource (about 600 bytes) and its stored
    // response (about 800) both count.
    create(&app, &acme.key, "q-1", &body("one"))
        .await
        .resp
        .expect(201);
    let used_sql = format!(
        "SELECT storage_bytes FROM tenantry.tenant_quota_usage WHERE tenant_id = '{}'",
        acme.id
    );
    let after_one = app.count(&used_sql).await;
    assert!(after_one > 1200, "the stored response counts: {after_one}");
    // A second keyed write: its resource alone would fit, its stored
    // response crosses the quota: refused, and nothing of it stays.
    let refused = create(&app, &acme.key, "q-2", &body("two")).await;
    let problem = refused.resp.problem(409, "quota_exceeded");
    assert!(
        problem["detail"].as_str().unwrap().contains("idempotency"),
        "{problem}"
    );
    assert_eq!(resources_named(&app, "two").await, 0);
    assert_eq!(app.count(&used_sql).await, after_one);
    // Once the first key expires, its bytes are given back.
    let su = app.db.superuser_client().await;
    su.execute(
        "UPDATE tenantry.idempotency_keys SET created_at = now() - interval '25 hours'",
        &[],
    )
    .await
    .unwrap();
    let mut scope = app.db.database().admin("test").await.unwrap();
    assert_eq!(scope.expire_idempotency_keys(1000).await.unwrap(), 1);
    scope.commit().await.unwrap();
    assert!(app.count(&used_sql).await < 1000);
    create(&app, &acme.key, "q-3", &body("three"))
        .await
        .resp
        .expect(201);
}

/// Two `Idempotency-Key` headers are refused (400), and nothing is written.
#[tokio::test]
async fn two_idempotency_keys_on_one_request_are_refused_and_write_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant("t").await;
    let r = app
        .send_raw(
            app.client
                .post(app.url("/v1/resources"))
                .bearer_auth(&t.key)
                .header("idempotency-key", "first")
                .header("idempotency-key", "second")
                .json(&json!({"name": "twice-keyed"})),
        )
        .await;
    r.problem(400, "invalid_header");
    assert_eq!(resources_named(&app, "twice-keyed").await, 0);
}

/// A keyed write whose credential is wrong is refused at once, its body
/// unread: the server reads no body before the credential is checked
/// (before, a keyed write's body was read first, up to the size limit and
/// for up to 30 s, whatever credential came with it).
#[tokio::test]
async fn a_keyed_write_with_a_wrong_credential_is_refused_before_its_body_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let mut forged = acme.key.clone();
    let last = if forged.ends_with('a') { "b" } else { "a" };
    forged.replace_range(forged.len() - 1.., last);
    let address = app.base.trim_start_matches("http://").to_owned();
    for (path, credential) in [
        ("/v1/resources", forged.as_str()),
        ("/v1/tenants", "not-the-admin-token"),
        ("/v1/tenants", "tk_nothing"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        // 1,000 bytes announced, one sent: the rest never comes.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: tenantry\r\nAuthorization: Bearer {credential}\r\n\
             Idempotency-Key: k-1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
            .await
            .unwrap_or_else(|_| {
                panic!("{path} with {credential}: no answer while the body is missing")
            })
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM tenantry.idempotency_keys")
            .await,
        0
    );
}

/// SQL as the server's own login (an injection) locks the idempotency keys'
/// table: a keyed write waits at most its lock timeout and is answered 503
/// (retry later), not 409 "still being processed", which would tell the
/// client its own earlier request is in flight when none is. Once the lock
/// is gone, the same key writes.
#[tokio::test]
async fn a_keyed_write_blocked_by_a_table_lock_is_503_not_a_request_in_flight() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let server = app.db.server_client().await;
    server.batch_execute("SET ROLE tenantry_app").await.unwrap();
    tenantry_db::testing::begin_in_tenant(&server, globex.id.parse().unwrap()).await;
    server
        .batch_execute("LOCK TABLE tenantry.idempotency_keys IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let body = json!({ "name": "behind-a-lock" });
    let blocked = create(&app, &acme.key, "fresh-key", &body).await;
    blocked.resp.problem(503, "service_unavailable");
    server.batch_execute("ROLLBACK").await.unwrap();
    create(&app, &acme.key, "fresh-key", &body)
        .await
        .resp
        .expect(201);
    assert_eq!(resources_named(&app, "behind-a-lock").await, 1);
}

/// A keyed write still running (here waiting on a row another session
/// holds) answers a second request with its key 409 naming
/// `Idempotency-Key`, with a `Retry-After` (found by a failure review: the
/// 409 said "retry it later" without either); the first one goes on and is
/// replayed to the retry once it has ended.
#[tokio::test]
async fn a_request_whose_key_is_still_running_is_answered_409_naming_the_key_with_retry_after() {
    let app = TestApp::spawn().await;
    let acme = app.tenant("acme").await;
    let resource = app.create_resource(&acme.key, "plan").await;
    let holder = app.db.superuser_client().await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .execute(
            "SELECT 1 FROM tenantry.resources WHERE id = $1::text::uuid FOR UPDATE",
            &[&resource],
        )
        .await
        .unwrap();
    let path = format!("/v1/resources/{resource}");
    let first = {
        let (app, path, key) = (&app, path.clone(), acme.key.clone());
        async move {
            keyed(
                app,
                Method::PATCH,
                &path,
                &key,
                "rename-1",
                Some(&json!({ "name": "renamed" })),
            )
            .await
        }
    };
    let watcher = app.db.superuser_client().await;
    let second = async {
        // Once the first has claimed the key (its transaction's first
        // statement) and waits for the row: a fixed 300 ms let the second
        // claim it first on a loaded machine, and each then waited for the
        // other until the client's timeout.
        assert!(tenantry_db::testing::a_server_session_waits_for_a_lock(&watcher).await);
        let response = app
            .client
            .patch(app.url(&path))
            .bearer_auth(&acme.key)
            .header("Idempotency-Key", "rename-1")
            .json(&json!({ "name": "renamed" }))
            .send()
            .await
            .unwrap();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let resp = app.send_raw_response(response).await;
        holder.batch_execute("COMMIT").await.unwrap();
        (resp, retry_after)
    };
    let (first, (second, retry_after)) = tokio::join!(first, second);
    let problem = second.problem(409, "conflict");
    assert_eq!(problem["field"], "Idempotency-Key", "{problem}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    first.resp.expect(200);
    let again = keyed(
        &app,
        Method::PATCH,
        &path,
        &acme.key,
        "rename-1",
        Some(&json!({ "name": "renamed" })),
    )
    .await;
    assert!(again.replayed);
    again.resp.expect(200);
}

/// The operator's stored answer about a tenant (its creation, a PATCH, sent
/// with an `Idempotency-Key`) outlived the tenant's purge: a retry within its
/// 24 hours replayed the purged tenant's name and settings (found by a review
/// of offboarding); deleting the stored answer instead let a retried creation
/// make the tenant again (found by the review of that fix). The purge keeps
/// each such key with 410 Gone and no body, which retries are answered.
#[tokio::test]
async fn a_purged_tenants_data_is_not_replayed_from_the_operators_stored_answers_nor_made_again() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token.clone();
    let create =
        json!({ "name": "gone", "settings": { "metadata": { "owner": "jane@example.com" } } });
    let made = keyed(
        &app,
        Method::POST,
        "/v1/tenants",
        &admin,
        "c-gone",
        Some(&create),
    )
    .await;
    let id = made.resp.expect(201)["tenant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/tenants/{id}");
    let patch = json!({ "name": "gone too" });
    keyed(&app, Method::PATCH, &path, &admin, "p-gone", Some(&patch))
        .await
        .resp
        .expect(200);
    let again = keyed(&app, Method::PATCH, &path, &admin, "p-gone", Some(&patch)).await;
    assert!(again.replayed, "stored while the tenant exists");
    app.delete(&path, &admin).await.expect(204);
    let su = app.db.superuser_client().await;
    su.batch_execute("UPDATE tenantry.purge_policy SET grace = interval '0'")
        .await
        .unwrap();
    app.post(&format!("{path}/purge"), &admin, &json!({}))
        .await
        .expect(200);
    let tenants_before = app.admin_get("/v1/tenants").await.items().len();
    for (method, at, key, body) in [
        (Method::PATCH, path.as_str(), "p-gone", &patch),
        (Method::POST, "/v1/tenants", "c-gone", &create),
    ] {
        let after = keyed(&app, method.clone(), at, &admin, key, Some(body)).await;
        assert!(after.replayed, "{method} {at}: {}", after.resp.text);
        assert_eq!(after.resp.status, 410, "{method} {at}: {}", after.resp.text);
        assert!(after.resp.text.is_empty(), "{}", after.resp.text);
    }
    assert_eq!(
        app.admin_get("/v1/tenants").await.items().len(),
        tenants_before,
        "a retried creation makes no tenant"
    );

    // A child its parent's key made: the parent's stored answer likewise.
    let parent = app.tenant("parent").await;
    let kid = json!({ "name": "kid" });
    let made = keyed(
        &app,
        Method::POST,
        "/v1/tenants",
        &parent.key,
        "c-kid",
        Some(&kid),
    )
    .await;
    let kid_id = made.resp.expect(201)["tenant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.delete(&format!("/v1/tenants/{kid_id}"), &admin)
        .await
        .expect(204);
    app.post(&format!("/v1/tenants/{kid_id}/purge"), &admin, &json!({}))
        .await
        .expect(200);
    let after = keyed(
        &app,
        Method::POST,
        "/v1/tenants",
        &parent.key,
        "c-kid",
        Some(&kid),
    )
    .await;
    assert!(
        after.replayed && after.resp.status == 410,
        "{}",
        after.resp.text
    );
    assert!(app
        .get("/v1/tenant/children", &parent.key)
        .await
        .items()
        .is_empty());
}
