//! Request ids: a well-formed `X-Request-Id` is kept, anything else is replaced by one the server makes; either way it comes back in the response header, in every problem body and in the request-log row.

use reqwest::{Method, RequestBuilder};
use serde_json::json;

use crate::helpers::{assert_problem_shape, random_id, Resp, TestApp};

/// Sends `req`; returns the response's `X-Request-Id` (which a problem's
/// `request_id` matches: `Resp` checks it) and the response.
async fn send(app: &TestApp, req: RequestBuilder) -> (String, Resp) {
    let r = app.send_raw(req).await;
    (r.request_id.clone(), r)
}

#[tokio::test]
async fn a_well_formed_request_id_is_echoed_in_the_header_the_problem_and_the_request_log_row() {
    let mut app = TestApp::spawn_with(|s| s.request_log_batch = 10_000).await;
    let t = app.tenant("traced").await;
    let sent = "ticket-42.retry:1_a";
    let missing = random_id();
    let (echoed, r) = send(
        &app,
        app.client
            .get(app.url(&format!("/v1/resources/{missing}")))
            .bearer_auth(&t.key)
            .header("X-Request-Id", sent),
    )
    .await;
    r.problem(404, "not_found");
    assert_eq!(echoed, sent);

    let longest = "x".repeat(128);
    let (echoed, r) = send(
        &app,
        app.client
            .get(app.url("/v1/resources"))
            .bearer_auth(&t.key)
            .header("X-Request-Id", &longest),
    )
    .await;
    r.expect(200);
    assert_eq!(echoed, longest);
    app.shutdown().await;

    let client = app.db.superuser_client().await;
    let rows = client
        .query(
            "SELECT route, status, request_id FROM tenantry.request_log
             WHERE tenant_id = $1::text::uuid AND request_id IN ($2, $3) ORDER BY status",
            &[&t.id, &sent, &longest],
        )
        .await
        .unwrap();
    let got: Vec<(String, i16, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("/v1/resources".to_owned(), 200, longest.clone()),
            ("/v1/resources/{id}".to_owned(), 404, sent.to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_missing_or_malformed_request_id_is_replaced_by_a_uuid_the_server_makes() {
    let app = TestApp::spawn().await;
    let t = app.tenant("replaced").await;
    let mut seen = std::collections::HashSet::new();
    for sent in [
        None,
        Some("has space".to_owned()),
        Some("semi;colon".to_owned()),
        Some("x".repeat(129)),
        Some(String::new()),
    ] {
        let mut req = app.client.get(app.url("/v1/tenant")).bearer_auth(&t.key);
        if let Some(sent) = &sent {
            req = req.header("X-Request-Id", sent);
        }
        let (echoed, r) = send(&app, req).await;
        r.expect(200);
        assert!(
            uuid::Uuid::parse_str(&echoed).is_ok(),
            "{sent:?} gave {echoed:?}"
        );
        assert!(seen.insert(echoed), "a generated id was handed out twice");
    }
    // A problem carries the generated id too.
    let (echoed, r) = send(
        &app,
        app.client
            .get(app.url("/v1/tenant"))
            .header("X-Request-Id", "bad\tid"),
    )
    .await;
    r.problem(401, "unauthorized");
    assert_ne!(echoed, "bad\tid");
}

#[tokio::test]
async fn every_kind_of_problem_names_its_request_even_without_a_route_or_a_credential() {
    let app = TestApp::spawn_with(|s| s.body_limit_bytes = 1024).await;
    let t = app.tenant("problems").await;
    let cases: Vec<(RequestBuilder, u16, &str)> = vec![
        (
            app.client.get(app.url("/no/such/route")),
            404,
            "route_not_found",
        ),
        (
            app.client.request(Method::PUT, app.url("/v1/resources")),
            405,
            "method_not_allowed",
        ),
        (
            app.client.get(app.url("/v1/resources")),
            401,
            "unauthorized",
        ),
        (
            app.client.get(app.url("/v1/tenants")).bearer_auth(&t.key),
            403,
            "wrong_credential",
        ),
        (
            app.client
                .post(app.url("/v1/resources"))
                .bearer_auth(&t.key)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "invalid_json",
        ),
        (
            app.client
                .post(app.url("/v1/resources"))
                .bearer_auth(&t.key)
                .json(&json!({ "name": "x".repeat(2000) })),
            413,
            "body_too_large",
        ),
        (
            app.client
                .post(app.url("/v1/resources"))
                .bearer_auth(&t.key)
                .json(&json!({ "name": "arr", "data": [1, 2] })),
            422,
            "validation_failed",
        ),
    ];
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let sent = format!("case-{i}");
        let (echoed, r) = send(&app, req.header("X-Request-Id", &sent)).await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (status, Some(code)),
            "case {i}: {}",
            r.text
        );
        assert_problem_shape(&r);
        assert_eq!(echoed, sent, "case {i}");
    }
}
