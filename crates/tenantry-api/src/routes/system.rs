//! Operational routes outside `/v1`: liveness, readiness, Prometheus metrics.

use axum::{extract::State, http::header, response::IntoResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::MetricsReader,
    error::{responses, ApiError, ProblemCode},
    extract::Json,
    state::AppState,
};

/// Health answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

/// The process is alive.
///
/// Answers 200 while the process runs, without asking the database: the
/// liveness probe. Whether requests can be served (database, schema, context
/// key) is `/readyz`'s question.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers and takes writes, its schema is this
/// build's or newer, and this server's context key is live.
///
/// A standby, or a database whose sessions start read-only, is not ready
/// (every tenant request writes). A retired context key is not ready. A
/// rolling upgrade migrates first, and the servers of the previous release
/// keep serving (and stay ready) until they are replaced; a schema behind
/// this build, or one that diverged, is not ready.
#[utoipa::path(
    get, path = "/readyz", tag = "system",
    responses((status = 200, body = Health), (status = 503, body = crate::error::Problem, content_type = "application/problem+json")),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    // One check at a time; a probe that waited for one that began after it
    // arrived takes that check's answer, which is no older than the probe.
    // The probes' one connection under a flood of unauthenticated probes
    // answered many of them 503 on a healthy database (a verification
    // review: 1,500 at once); now a burst costs two checks.
    let arrived = std::time::Instant::now();
    let mut last = state.readiness.lock().await;
    let outcome = match &*last {
        Some((began, outcome)) if *began >= arrived => outcome.clone(),
        _ => {
            let began = std::time::Instant::now();
            let outcome = readiness(&state).await;
            *last = Some((began, outcome.clone()));
            outcome
        }
    };
    drop(last);
    outcome.map(|()| Json(Health { status: "ok" }))
}

/// What [`readyz`] finds: the database's answer, its schema, this server's
/// context key.
async fn readiness(state: &AppState) -> Result<(), ApiError> {
    // The round trip, and whether it reached a database that takes writes:
    // every tenant request writes (its context's draw, the request log).
    // Every answer that says "not ready" for a reason of its own is also a
    // warning in the log: probes' bodies are thrown away by kubelets and
    // load balancers, and the requests' 503s only said "database" (an
    // on-call review, with a retired context key).
    if let Some(why) = state.db.writes_refused().await? {
        tracing::warn!(reason = %why, "not ready: tenant requests cannot be served");
        return Err(ApiError::new(
            ProblemCode::ServiceUnavailable,
            format!("tenant requests cannot be served: {why}"),
        ));
    }
    match state.db.check_schema().await {
        Ok(()) => {}
        Err(
            e @ (tenantry_db::migrate::MigrateError::Unknown { .. }
            | tenantry_db::migrate::MigrateError::DefinitionsNewer { .. }),
        ) => {
            tracing::warn!("serving on a newer schema until this server is upgraded: {e}");
        }
        // The check could not run (a statement timeout behind a lock, the
        // database gone): said in the words every other route uses, the
        // database's own in the log (found by a failure review: the probe
        // answered "database error: 57014: canceling statement ...").
        Err(
            e @ (tenantry_db::migrate::MigrateError::Database(_)
            | tenantry_db::migrate::MigrateError::Unavailable(_)),
        ) => {
            tracing::warn!(error = %e, "readiness: the schema check did not run");
            return Err(ApiError::new(
                ProblemCode::ServiceUnavailable,
                "the database did not answer the schema check; retry later",
            ));
        }
        // A schema behind this build, or one that diverged: the operator's
        // to act on, said as it is.
        Err(e) => {
            tracing::warn!(reason = %e, "not ready: the database's schema");
            return Err(ApiError::new(
                ProblemCode::ServiceUnavailable,
                e.to_string(),
            ));
        }
    }
    // A retired context key: every request is refused, so the probe says so
    // at once (it waited for the pooled sessions to end: a review of the docs).
    if !state.db.context_key_live().await? {
        tracing::warn!(
            "not ready: this server's context key was retired; every tenant request is refused until it restarts with a live one"
        );
        return Err(ApiError::new(
            ProblemCode::ServiceUnavailable,
            "this server's context key was retired: start it with a live one (`tenantry context-key list`)",
        ));
    }
    Ok(())
}

/// Prometheus metrics of this server. The text exposition: requests by route
/// and status, latency histogram,
/// pool usage, request-log queue depth and drops, the key and context caches'
/// sizes, and the busiest tenants'
/// traffic (`tenantry_tenant_*`: the top `tenant_stats_top` tenants and
/// `other`, so the series stay bounded however many tenants are active).
/// Takes the admin token or the metrics token (`metrics_token`, which opens
/// nothing else) as bearer: scrape with `authorization: {credentials:
/// <token>}`. Where the operator set `metrics_public`, a request without
/// `Authorization` reads the totals, without the series that name tenants.
#[utoipa::path(
    get, path = "/metrics", tag = "system",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        responses::MetricsAuth,
    ),
    security(("metricsToken" = []), ("adminToken" = []))
)]
pub async fn metrics(
    State(state): State<AppState>,
    MetricsReader(operator): MetricsReader,
) -> impl IntoResponse {
    let pool = state.db.pool_status();
    metrics::gauge!("tenantry_db_pool_size").set(pool.size as f64);
    metrics::gauge!("tenantry_db_pool_available").set(pool.available as f64);
    metrics::gauge!("tenantry_db_pool_max").set(pool.max_size as f64);
    metrics::gauge!("tenantry_db_pool_waiting").set(pool.waiting as f64);
    metrics::counter!("tenantry_db_connections_refused_total").absolute(state.db.pool_refusals());
    metrics::gauge!("tenantry_request_log_queue_depth")
        .set(state.tenantry.request_log().depth() as f64);
    // Counters (they only grow), present from the first scrape: an alert on
    // the documented tenantry_request_log_dropped_total found no series
    // until a row was dropped (found by reviews; they were gauges too).
    metrics::counter!("tenantry_request_log_dropped_total")
        .absolute(state.tenantry.request_log().dropped());
    metrics::counter!("tenantry_request_log_written_total")
        .absolute(state.tenantry.request_log().written());
    // How much the caches hold: keys verified, tenants' context parts. A
    // cache that stays near empty under load means requests pay a database
    // round trip each (keys spread over more tenants than it holds, or
    // invalidations arriving faster than it fills).
    metrics::gauge!("tenantry_key_cache_entries").set(state.tenantry.key_cache().len() as f64);
    metrics::gauge!("tenantry_context_parts_cached").set(state.db.cached_context_parts() as f64);
    // Whether other servers' changes reach this one now: the listener's
    // recovery was an INFO line the default filter drops, and nothing else
    // said so (found by an operations review).
    let feed = state.tenantry.invalidations();
    if feed.is_enabled() {
        metrics::gauge!("tenantry_invalidation_listening").set(if feed.is_listening() {
            1.0
        } else {
            0.0
        });
        metrics::counter!("tenantry_invalidation_reconnects_total")
            .absolute(feed.sessions().saturating_sub(1));
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        if operator {
            crate::telemetry::prometheus().render()
                + &state
                    .tenantry
                    .request_log()
                    .tenant_stats()
                    .render_prometheus()
        } else {
            crate::telemetry::prometheus().render()
        },
    )
}
