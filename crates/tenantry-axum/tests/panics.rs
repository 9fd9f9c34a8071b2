//! A team's handler that panics, served by `tenantry_axum::serve` under the layers the README's Rust path applies: answered 500 problem+json with the request's id, and recorded in the request log like any other request.

use axum::{routing::get, Router};
use tenantry_axum::{
    error::route_not_found, RequestIdLayer, ServeOptions, TenantCaller, Tenantry, TenantryConfig,
};
use tenantry_db::{testing::TestDatabase, NewKeyOptions, NewTenant, TenantContext};

async fn boom(caller: TenantCaller) -> &'static str {
    let _ = caller.tenant();
    panic!("a bug in the team's handler");
}

#[tokio::test]
async fn a_handler_that_panics_is_answered_500_with_its_request_id_and_leaves_a_request_log_row() {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let mut admin = db.admin("test").await.unwrap();
    let tenant = admin
        .create_tenant(&NewTenant {
            name: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .tenant_id;
    admin.commit().await.unwrap();
    let mut scope = db.tenant(TenantContext::new(tenant)).await.unwrap();
    let key = scope
        .create_api_key(&NewKeyOptions::default())
        .await
        .unwrap();
    scope.commit().await.unwrap();

    let (tenantry, _flusher) = Tenantry::start(db.clone(), &TenantryConfig::default());
    let router = Router::new()
        .route("/boom", get(boom))
        .route_layer(tenantry.layer())
        .fallback(route_not_found)
        .with_state(tenantry)
        .layer(RequestIdLayer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tenantry_axum::serve(
        listener,
        router,
        ServeOptions::default(),
        std::future::pending(),
    ));

    let answer = reqwest::Client::new()
        .get(format!("{base}/boom"))
        .bearer_auth(key.secret.expose())
        .header("X-Request-Id", "panic-1")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 500);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");
    assert_eq!(answer.headers()["x-request-id"], "panic-1");
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["code"], "internal_error");
    assert_eq!(body["request_id"], "panic-1", "{body}");
    assert!(
        !body.to_string().contains("a bug in the team's handler"),
        "the panic's message stays in the server's log: {body}"
    );

    let su = tdb.superuser_client().await;
    let mut rows = Vec::new();
    for _ in 0..50 {
        rows = su
            .query(
                "SELECT route || ' ' || status || ' ' || coalesce(request_id, '') FROM tenantry.request_log WHERE tenant_id = $1",
                &[tenant.as_uuid()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>();
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(rows, ["/boom 500 panic-1"]);
}
