//! Observability of the HTTP layer: the middleware that times every request, counts it by route and status, and hands it to the request log; and the Prometheus recorder behind `/metrics`.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tenantry_db::RequestLogEntry;

use crate::{request_log::LogSlot, state::AppState};

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    RECORDER.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("tenantry_http_request_duration_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            )
            .expect("valid buckets")
            .install_recorder()
            .expect("no other metrics recorder is installed")
    })
}

/// Route middleware: metrics for every matched route; a request-log row for
/// every `/v1` request that could be attributed to a tenant.
pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let arrived = chrono::Utc::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_owned();
    let slot = LogSlot::default();
    request.extensions_mut().insert(slot.clone());

    let response = next.run(request).await;

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics::counter!("tenantry_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("tenantry_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(elapsed.as_secs_f64());
    if route.starts_with("/v1") {
        if let (Some(tenant_id), user_id, resource_id) = slot.fields() {
            state.log.record(RequestLogEntry {
                tenant_id,
                created_at: arrived,
                user_id,
                resource_id,
                method,
                route,
                status: status as i16,
                latency_ms: elapsed.as_secs_f64() * 1000.0,
            });
        }
    }
    response
}
