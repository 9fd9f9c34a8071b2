//! Browser pages of other origins (CORS, `cors_origins`): a listed origin's preflight is answered before any credential is asked for and its page reads every answer, refusals included; any other origin, and every origin when none is listed, gets no CORS header.

use crate::helpers::TestApp;

const APP: &str = "https://app.example.com";

/// A preflight of `method` to `path` from `origin`, asking to send the
/// headers a page calling the API sends.
async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type,idempotency-key,if-match,x-tenant-id",
        )
        .send()
        .await
        .unwrap()
}

/// `GET /v1/tenant` with `key`, sent by a page of `origin`.
async fn tenant_from(app: &TestApp, origin: &str, key: &str) -> reqwest::Response {
    app.client
        .get(app.url("/v1/tenant"))
        .header("Origin", origin)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_page_of_a_listed_origin_has_its_preflight_answered_and_reads_every_answer_refusals_included(
) {
    let app = TestApp::spawn_with(|s| s.cors_origins = vec![APP.into()]).await;
    let acme = app.tenant("acme").await;

    // The preflight needs no credential (a browser sends none with it).
    let pre = preflight(&app, "/v1/resources", APP, "POST").await;
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(header(&pre, "access-control-allow-origin"), Some(APP));
    let methods = header(&pre, "access-control-allow-methods")
        .unwrap()
        .to_ascii_lowercase();
    for m in ["get", "post", "put", "patch", "delete"] {
        assert!(methods.contains(m), "{methods}");
    }
    let allowed = header(&pre, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "authorization",
        "content-type",
        "idempotency-key",
        "if-match",
        "if-none-match",
        "if-unmodified-since",
        "x-tenant-id",
    ] {
        assert!(allowed.contains(h), "{allowed}");
    }
    assert!(header(&pre, "access-control-max-age").is_some());
    // Credentials travel in Authorization, never in cookies.
    assert_eq!(header(&pre, "access-control-allow-credentials"), None);

    // The call itself: its answer, and the headers a page needs, readable.
    let created = app
        .client
        .post(app.url("/v1/resources"))
        .header("Origin", APP)
        .bearer_auth(&acme.key)
        .json(&serde_json::json!({ "name": "from a browser" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(header(&created, "access-control-allow-origin"), Some(APP));
    let exposed = header(&created, "access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "location",
        "x-request-id",
        "retry-after",
        "www-authenticate",
        "idempotent-replayed",
    ] {
        assert!(exposed.contains(h), "{exposed}");
    }
    assert!(header(&created, "vary").is_some_and(|v| v.to_ascii_lowercase().contains("origin")));

    // A refusal is readable too: the page can tell a bad key from a network error.
    let refused = tenant_from(&app, APP, "tk_not_a_key").await;
    assert_eq!(refused.status(), 401);
    assert_eq!(header(&refused, "access-control-allow-origin"), Some(APP));
    assert_eq!(
        header(&refused, "content-type"),
        Some("application/problem+json")
    );

    // Another origin's page gets nothing that lets the browser hand it the answer.
    let other = preflight(&app, "/v1/resources", "https://evil.example", "POST").await;
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    let read = tenant_from(&app, "https://evil.example", &acme.key).await;
    assert_eq!(read.status(), 200);
    assert_eq!(header(&read, "access-control-allow-origin"), None);
    // An origin differing from the listed one only by its port is another.
    let port = preflight(&app, "/v1/tenant", "https://app.example.com:8443", "GET").await;
    assert_eq!(header(&port, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn any_origin_when_the_list_is_a_star_and_none_when_it_is_empty() {
    let any = TestApp::spawn_with(|s| s.cors_origins = vec!["*".into()]).await;
    let pre = preflight(&any, "/v1/tenant", "http://localhost:3000", "GET").await;
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(header(&pre, "access-control-allow-origin"), Some("*"));

    let none = TestApp::spawn().await;
    let acme = none.tenant("acme").await;
    let pre = preflight(&none, "/v1/resources", APP, "POST").await;
    assert_eq!(pre.status(), 405);
    assert_eq!(header(&pre, "access-control-allow-origin"), None);
    let read = tenant_from(&none, APP, &acme.key).await;
    assert_eq!(read.status(), 200);
    assert_eq!(header(&read, "access-control-allow-origin"), None);
}
