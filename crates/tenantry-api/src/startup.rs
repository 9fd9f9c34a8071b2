//! Building and running the server: the router with its fallbacks and layers, the bound [`Application`] with graceful shutdown (the upkeep runs in `tenantry_axum::Tenantry`, as in any application built on it).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{extract::DefaultBodyLimit, Router};
use tenantry_axum::{RequestIdLayer, TenantStatsConfig, Tenantry, TenantryConfig};
use tenantry_db::Database;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    config::{AdminToken, CorsOrigins, Settings},
    error::{ApiError, ProblemCode},
    openapi,
    state::AppState,
    telemetry,
};

/// The whole router: `/v1` API, system routes, OpenAPI and docs, the console, problem+json fallbacks.
/// Every request gets an id ([`RequestIdLayer`], outermost) and one log line
/// (the request log's layer, on every route and on the fallback).
///
/// Once `stopping` turns true (the shutdown grace period is over), every
/// request still running is cancelled and answered 503 `shutting_down`:
/// its transaction rolls back unless its COMMIT was already on its way.
///
/// `cors` names the origins whose pages may call the API from a browser:
/// their preflights are answered before any credential is asked for, and
/// every answer (refusals included) carries the headers that let the page
/// read it.
pub fn router(
    state: AppState,
    body_limit: usize,
    stopping: tokio::sync::watch::Receiver<bool>,
    cors: CorsOrigins,
) -> Router {
    let (api, mut openapi) = openapi::api_router().split_for_parts();
    if state.metrics.is_public() {
        openapi::offer_metrics_without_credential(&mut openapi);
    }
    let without_query = std::sync::Arc::new(openapi::operations_without_query(&openapi));
    let public = std::sync::Arc::new(openapi::public_operations(&openapi));
    let log = state.tenantry.layer();
    let hard_stop = axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let mut stopping = stopping.clone();
            async move {
                let stopped = async {
                    if stopping.wait_for(|stop| *stop).await.is_err() {
                        // The application is gone: nothing will ask again.
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    response = next.run(request) => response,
                    () = stopped => axum::response::IntoResponse::into_response(ApiError::new(
                        ProblemCode::ShuttingDown,
                        "the server stopped before this request finished; nothing of it was committed unless it was already committing",
                    )),
                }
            }
        },
    );
    let api = api.with_state(state);
    let unmatched = tower::Layer::layer(
        &log,
        axum::handler::HandlerWithoutStateExt::into_service(tenantry_axum::error::route_not_found),
    );
    let docs = axum::Router::from(
        utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi),
    )
    .layer(axum::middleware::map_response(crate::console::docs_headers));
    let router = api
        .merge(docs)
        .merge(crate::console::router())
        .method_not_allowed_fallback(tenantry_axum::error::method_not_allowed)
        // Inside the request log's layer: these refusals are logged and
        // counted like any answer (they were not: found by a review behind
        // nginx); inside http_hygiene, as they leave the body unread.
        .route_layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                refuse_declared_oversize(body_limit, request, next)
            },
        ))
        .route_layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                answer_unmet_precondition_without_credential(public.clone(), request, next)
            },
        ))
        .route_layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                refuse_unknown_query(without_query.clone(), request, next)
            },
        ))
        .route_layer(hard_stop)
        .route_layer(log)
        .fallback_service(unmatched)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(
            tenantry_axum::serve::http_hygiene,
        ))
        // A bug that panics answers 500 problem+json instead of dropping the connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            tenantry_axum::error::panicked,
        ));
    match cors_layer(cors) {
        Some(cors) => router.layer(cors),
        None => router,
    }
    .layer(RequestIdLayer)
}

/// The CORS layer for [`Settings::cors_origins`]: what a browser page may
/// send (the credentials go in `Authorization`, never in cookies, so none are
/// allowed) and which answer headers it may read; a preflight is valid for
/// ten minutes.
fn cors_layer(origins: CorsOrigins) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origin = match origins {
        CorsOrigins::None => return None,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::Listed(origins) => AllowOrigin::list(origins),
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                header::IF_UNMODIFIED_SINCE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("x-tenant-id"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                header::LOCATION,
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("idempotent-replayed"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The operation of the API description a request was routed to: its
/// method (HEAD as the GET it answers like) and path template.
fn operation_of(request: &axum::extract::Request) -> Option<(axum::http::Method, String)> {
    let route = request.extensions().get::<axum::extract::MatchedPath>()?;
    let method = match request.method() {
        &axum::http::Method::HEAD => axum::http::Method::GET,
        other => other.clone(),
    };
    Some((method, route.as_str().to_owned()))
}

/// Answers 400 `invalid_query` to a request with a query on a route that
/// takes none ([`openapi::operations_without_query`]); routes that take
/// parameters refuse unknown ones in their extractor.
async fn refuse_unknown_query(
    without_query: std::sync::Arc<std::collections::HashSet<(axum::http::Method, String)>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // Empty pairs (`?&`) name nothing, as the listings' parser reads them.
    let name = request.uri().query().and_then(|q| {
        q.split('&')
            .map(|pair| pair.split('=').next().unwrap_or_default())
            .find(|name| !name.is_empty())
    });
    if let (Some(name), Some(operation)) = (name, operation_of(&request)) {
        if without_query.contains(&operation) {
            let shown: String = name.chars().take(64).collect();
            return axum::response::IntoResponse::into_response(
                ApiError::new(
                    ProblemCode::InvalidQuery,
                    format!("this route takes no query parameters (got {shown:?})"),
                )
                .with_field(shown),
            );
        }
    }
    next.run(request).await
}

/// Answers 413 at once to a request whose `Content-Length` is over the body
/// limit. Otherwise the body was read up to the limit first: a client
/// announcing 100 MB waited, or sent a megabyte (after `Expect:
/// 100-continue` too), before being told. The connection then closes
/// ([`tenantry_axum::serve::http_hygiene`]), the rest of the body unread.
async fn refuse_declared_oversize(
    limit: usize,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return axum::response::IntoResponse::into_response(ApiError::new(
            ProblemCode::BodyTooLarge,
            format!("request body exceeds the size limit of {limit} bytes"),
        ));
    }
    next.run(request).await
}

/// Answers 412 at once to a precondition that cannot hold
/// ([`tenantry_axum::preconditions`], found by the HTTP hygiene layer) on a
/// route that takes no credential; on the others the credential's extractor
/// answers it once the credential was accepted (a revoked key with
/// `If-Match` is 401, as without it). Every credential extractor checks it
/// (`every_operation_refuses_a_precondition_that_cannot_hold_after_its_credential`).
async fn answer_unmet_precondition_without_credential(
    public: std::sync::Arc<std::collections::HashSet<(axum::http::Method, String)>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(unmet) = request
        .extensions()
        .get::<tenantry_axum::preconditions::UnmetPrecondition>()
    {
        let credentialed = operation_of(&request).is_some_and(|op| !public.contains(&op));
        if !credentialed {
            return axum::response::IntoResponse::into_response(unmet.answer());
        }
    }
    next.run(request).await
}

/// After the grace period: how long cancelled requests get to answer and
/// their connections to close before the server task is aborted.
const HARD_STOP_WAIT: Duration = Duration::from_secs(2);

/// How long `build` waits for the invalidation listener of an
/// `invalidation_url` to listen before refusing to start.
const INVALIDATION_BOOT_WAIT: Duration = Duration::from_secs(5);

/// How long the request log gets to write what it holds at the end.
const LOG_FLUSH_WAIT: Duration = Duration::from_secs(10);

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    tenantry: Tenantry,
    log_task: JoinHandle<()>,
    grace: Duration,
    /// Header deadline and connection cap of the HTTP server.
    serve: tenantry_axum::ServeOptions,
    /// Turned true when the grace period is over: the router cancels what still runs.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Application {
    /// Binds `settings.listen` (port 0: any free port) and prepares the router
    /// and background tasks (request-log flusher, metrics refresh).
    pub async fn build(
        settings: &Settings,
        db: Database,
        admin_token: &str,
    ) -> std::io::Result<Self> {
        // First: a busy address is refused before any background task starts
        // (they would only fail noisily as the process exits).
        let listener = TcpListener::bind(settings.listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("binding the listen address {}: {e}", settings.listen),
            )
        })?;
        let invalidations = settings.invalidations().map_err(std::io::Error::other)?;
        if admin_token.len() < 24 {
            tracing::warn!(
                "the admin token is {} characters long: anyone who guesses it is the operator; \
                 use a long random secret (openssl rand -hex 32)",
                admin_token.len()
            );
        }
        if settings.metrics_refresh_secs == 0 {
            // Said: it was silent, and usage went stale without a word
            // (found by an operations review).
            tracing::warn!(
                "metrics_refresh_secs = 0: this server never counts the hours of usage, samples storage, makes request-log partitions ahead \
                 nor checks the doctor's rules while it serves (tenantry_table_problems); another server must, or usage reads grow slower and storage figures go stale"
            );
        }
        let config = TenantryConfig {
            key_cache_ttl: settings.key_cache_ttl(),
            invalidations,
            request_log: settings.request_log,
            request_log_queue: settings.request_log_queue,
            request_log_batch: settings.request_log_batch,
            tenant_stats: TenantStatsConfig::new(
                settings.tenant_stats_top,
                Duration::from_secs(settings.tenant_stats_period_secs),
            ),
            upkeep_every: (settings.metrics_refresh_secs > 0)
                .then(|| Duration::from_secs(settings.metrics_refresh_secs)),
            max_requests_in_flight_per_tenant: settings.max_requests_in_flight_per_tenant,
            request_log_keep_days: (settings.request_log_keep_days > 0)
                .then_some(settings.request_log_keep_days),
        };
        let (tenantry, log_task) = Tenantry::start(db.clone(), &config);
        // A listener of its own (invalidation_url) is checked like the
        // database itself: with a wrong password it ran without hearing
        // other servers' changes, its log saying "db error" (found by an
        // operations review).
        if settings.invalidation_url.is_some() {
            let feed = tenantry.invalidations();
            let deadline = tokio::time::Instant::now() + INVALIDATION_BOOT_WAIT;
            while !feed.is_listening() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !feed.is_listening() {
                log_task.abort();
                return Err(std::io::Error::other(format!(
                    "invalidation_url (TENANTRY_INVALIDATION_URL): the invalidation listener could not listen there within {} s{}",
                    INVALIDATION_BOOT_WAIT.as_secs(),
                    feed.last_error().map(|e| format!(": {e}")).unwrap_or_default()
                )));
            }
        }
        let mut tenantry = tenantry.with_admin_token(AdminToken::new(admin_token));
        if let Some(jwt) = &settings.jwt {
            let verifier =
                tenantry_axum::jwt::JwtVerifier::new(jwt.clone()).map_err(std::io::Error::other)?;
            // Said at start, and the keys fetched at once: a wrong or
            // unreachable JWKS is seen in the log before a person's request
            // meets it (found by a review: nothing said people's tokens were on).
            tracing::info!(
                target: "tenantry::startup",
                issuer = %jwt.issuer,
                audience = %jwt.audience.join(","),
                jwks_url = %jwt.jwks_url.as_deref().map_or("-".into(), tenantry_axum::jwt::shown_jwks_url),
                hs256 = jwt.hs256_secret.is_some(),
                "people's tokens accepted"
            );
            let prefetch = verifier.clone();
            tokio::spawn(async move {
                match prefetch.prefetch_keys().await {
                    Ok(Some(keys)) => {
                        tracing::info!(target: "tenantry::startup", keys, "identity provider's keys fetched")
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "identity provider's keys cannot be fetched: people's tokens are answered 503 until they can")
                    }
                }
            });
            tenantry = tenantry.with_jwt(verifier);
        }
        let state = AppState {
            db: db.clone(),
            admin_token: Arc::new(AdminToken::new(admin_token)),
            metrics: Arc::new(crate::auth::MetricsAccess::new(
                settings.metrics_token.as_ref().map(|t| t.expose()),
                settings.metrics_public,
            )),
            tenantry: tenantry.clone(),
            readiness: Arc::default(),
        };
        telemetry::prometheus();
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
        let cors = settings
            .cors_origins()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let router = router(state, settings.body_limit_bytes, stopping_rx, cors);
        Ok(Self {
            listener,
            router,
            tenantry,
            log_task,
            grace: Duration::from_secs(settings.shutdown_grace_secs),
            serve: tenantry_axum::ServeOptions {
                header_read_timeout: Duration::from_millis(settings.http_header_timeout_ms),
                max_connections: settings.http_max_connections,
                send_timeout: Duration::from_millis(settings.http_send_timeout_ms),
                body_read_timeout: Duration::from_millis(settings.http_body_timeout_ms),
                trusted_proxies: settings.trusted_proxies().map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
                })?,
            },
            stopping,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` resolves; then stops accepting, gives in-flight
    /// requests the grace period, and flushes the request log. An error when
    /// the log could not be flushed in time (its queued rows are lost).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // The peer's address reaches the extractors (keys limited to source
        // addresses); headers have a deadline, connections a cap.
        let server = tenantry_axum::serve(self.listener, self.router, self.serve, async move {
            let _ = stop_rx.await;
        });
        let mut server = tokio::spawn(server);
        tokio::select! {
            result = &mut server => {
                result.map_err(std::io::Error::other)??;
            }
            () = shutdown => {
                let _ = stop_tx.send(());
                match tokio::time::timeout(self.grace, &mut server).await {
                    Ok(result) => result.map_err(std::io::Error::other)??,
                    Err(_) => {
                        // Cancel what still runs (each answered 503): the
                        // connections then close, and with them the last
                        // handles on the request log.
                        tracing::warn!(
                            "in-flight requests did not finish within the grace period; cancelling them"
                        );
                        let _ = self.stopping.send(true);
                        if tokio::time::timeout(HARD_STOP_WAIT, &mut server).await.is_err() {
                            server.abort();
                        }
                    }
                }
            }
        }
        // The router (and every sender clone in it) is gone: the flusher drains and ends.
        drop(self.tenantry);
        if tokio::time::timeout(LOG_FLUSH_WAIT, self.log_task)
            .await
            .is_err()
        {
            // The database did not take the last batches in time (it is
            // down or frozen): what is still queued ends with the process,
            // and is not in tenantry_request_log_dropped_total.
            tracing::error!(
                "request log could not be flushed within {} s: the rows still queued are lost with this process",
                LOG_FLUSH_WAIT.as_secs()
            );
            // Not a clean stop (a resilience review: `serve` then said "shut
            // down cleanly" and exited 0): usage and audit rows are gone.
            return Err(std::io::Error::other(format!(
                "stopped, but the request log could not be flushed within {} s: the rows still queued were lost",
                LOG_FLUSH_WAIT.as_secs()
            )));
        }
        Ok(())
    }
}
