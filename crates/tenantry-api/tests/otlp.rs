//! Trace export over OTLP/HTTP (feature `otlp`, which this test binary always has): a stand-in collector on 127.0.0.1 receives the server's spans, and each request is a span named after its route template whose database flights are its children.

use std::sync::{Arc, Mutex};

use axum::{body::Bytes, extract::State, routing::post, Router};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value as AnyValue,
};
use prost::Message;
use serde_json::{json, Value};
use tenantry_api::{config::AdminToken, telemetry::otlp};
use tenantry_db::testing::TestDatabase;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};

#[path = "common/server.rs"]
mod server;
use server::{test_settings, Server};

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: Vec<(String, String)>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Collected {
    posts: usize,
    spans: Vec<Received>,
}

/// What an OTLP/HTTP collector does with traces, and no more: decode each
/// POST to /v1/traces (protobuf) and keep its spans.
async fn traces(State(collected): State<Arc<Mutex<Collected>>>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf trace export");
    let mut collected = collected.lock().unwrap();
    collected.posts += 1;
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .map(|kv| {
                        let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(AnyValue::StringValue(s)) => s.clone(),
                            Some(AnyValue::IntValue(i)) => i.to_string(),
                            Some(AnyValue::BoolValue(b)) => b.to_string(),
                            other => format!("{other:?}"),
                        };
                        (kv.key.clone(), value)
                    })
                    .collect();
                collected.spans.push(Received {
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes,
                });
            }
        }
    }
    ""
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_their_database_flights_reach_an_otlp_collector_as_parent_and_child_spans() {
    let collected = Arc::new(Mutex::new(Collected::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(collected.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (layer, exporter) = otlp::layer(&collector).expect("an exporter");
    tracing_subscriber::registry().with(layer).init();

    let db = TestDatabase::new().await;
    let admin = AdminToken::generate();
    let mut server = Server::start(&test_settings(), db.database(), &admin).await;
    let client = reqwest::Client::new();
    let admin_post = |url: String, body: Value| {
        let answer = client.post(url).bearer_auth(&admin).json(&body).send();
        async move { answer.await.unwrap().json::<Value>().await.unwrap() }
    };
    let tenant = admin_post(
        format!("{}/v1/tenants", server.base),
        json!({ "name": "traced" }),
    )
    .await;
    let tenant_id = tenant["tenant_id"].as_str().unwrap();
    let keys = format!("{}/v1/tenants/{tenant_id}/keys", server.base);
    let key = admin_post(keys, json!({})).await;
    let missing = uuid::Uuid::new_v4();
    let answer = client
        .get(format!("{}/v1/resources/{missing}", server.base))
        .bearer_auth(key["key"].as_str().unwrap())
        .header("X-Request-Id", "otlp-trace-1")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    server.stop().await;
    tokio::task::spawn_blocking(move || exporter.shutdown())
        .await
        .unwrap();

    let collected = collected.lock().unwrap();
    assert!(collected.posts > 0, "nothing was exported");
    let request = collected
        .spans
        .iter()
        .find(|s| s.attribute("request_id") == Some("otlp-trace-1"))
        .unwrap_or_else(|| panic!("no span of the request in {:#?}", collected.spans));
    assert_eq!(request.name, "GET /v1/resources/{id}");
    assert_eq!(request.attribute("http.route"), Some("/v1/resources/{id}"));
    assert_eq!(request.attribute("http.request.method"), Some("GET"));
    assert_eq!(request.attribute("http.response.status_code"), Some("404"));
    assert!(
        !request.name.contains(&missing.to_string()),
        "a span name holds an id"
    );
    let flights: Vec<&Received> = collected
        .spans
        .iter()
        .filter(|s| s.name == "db.flight" && s.parent_span_id == request.span_id)
        .collect();
    assert!(
        !flights.is_empty(),
        "no database flight under the request in {:#?}",
        collected.spans
    );
    for flight in flights {
        assert_eq!(flight.trace_id, request.trace_id);
        assert_eq!(flight.attribute("db.system.name"), Some("postgresql"));
    }
}
