//! tenantry-api: the HTTP API over tenant-scoped transactions.
//!
//! A request flows auth → tenant scope → SQL → response: the [`auth`]
//! extractors turn a bearer token into a [`auth::TenantCaller`] or
//! [`auth::AdminCaller`], the only holders of a way into the database;
//! [`routes`] hold one module per area; [`error`] maps everything to
//! `application/problem+json`. [`Application::build`] wires it up from
//! [`config::Settings`] and a [`tenantry_db::Database`], and can bind port 0
//! so tests run the real server.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod request_log;
pub mod routes;
pub mod telemetry;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{extract::DefaultBodyLimit, middleware, Router};
use tenantry_db::Database;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    auth::{KeyCache, RateLimits},
    config::{AdminToken, Settings},
    error::ApiError,
    request_log::RequestLog,
};

/// Shared state of every request.
#[derive(Clone)]
pub struct AppState {
    pub(crate) db: Database,
    pub(crate) admin_token: Arc<AdminToken>,
    pub(crate) keys: Arc<KeyCache>,
    pub(crate) limits: Arc<RateLimits>,
    pub(crate) log: RequestLog,
}

/// The whole router: `/v1` API, system routes, OpenAPI and docs, problem+json fallbacks.
pub fn router(state: AppState, body_limit: usize) -> Router {
    let (api, openapi) = openapi::api_router().split_for_parts();
    let api = api
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            telemetry::observe,
        ))
        .with_state(state);
    api.merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(|| async { ApiError::new("route_not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        // A bug that panics answers 500 problem+json instead of dropping the connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                axum::response::IntoResponse::into_response(ApiError::new(
                    "internal_error",
                    "internal error",
                ))
            },
        ))
}

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    log: RequestLog,
    log_task: JoinHandle<()>,
    maintenance: JoinHandle<()>,
    grace: Duration,
}

impl Application {
    /// Binds `settings.listen` (port 0: any free port) and prepares the router
    /// and background tasks (request-log flusher, metrics refresh).
    pub async fn build(
        settings: &Settings,
        db: Database,
        admin_token: &str,
    ) -> std::io::Result<Self> {
        let (mut log, log_task) = RequestLog::start(
            db.clone(),
            settings.request_log_queue,
            settings.request_log_batch,
        );
        if !settings.request_log {
            log = log.disabled();
        }
        let state = AppState {
            db: db.clone(),
            admin_token: Arc::new(AdminToken::new(admin_token)),
            keys: Arc::new(KeyCache::new(settings.key_cache_ttl())),
            limits: Arc::new(RateLimits::default()),
            log: log.clone(),
        };
        telemetry::prometheus();
        let router = router(state, settings.body_limit_bytes);
        let listener = TcpListener::bind(settings.listen).await?;
        let maintenance = tokio::spawn(maintenance(db, settings.metrics_refresh_secs));
        Ok(Self {
            listener,
            router,
            log,
            log_task,
            maintenance,
            grace: Duration::from_secs(settings.shutdown_grace_secs),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` resolves; then stops accepting, gives in-flight
    /// requests the grace period, and flushes the request log.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        });
        let mut server = tokio::spawn(async move { server.await });
        tokio::select! {
            result = &mut server => {
                result.map_err(std::io::Error::other)??;
            }
            () = shutdown => {
                let _ = stop_tx.send(());
                match tokio::time::timeout(self.grace, &mut server).await {
                    Ok(result) => result.map_err(std::io::Error::other)??,
                    Err(_) => {
                        tracing::warn!("in-flight requests did not finish within the grace period");
                        server.abort();
                    }
                }
            }
        }
        self.maintenance.abort();
        // The router (and every sender clone in it) is gone: the flusher drains and ends.
        drop(self.log);
        if tokio::time::timeout(Duration::from_secs(30), self.log_task)
            .await
            .is_err()
        {
            tracing::error!("request log could not be flushed within 30 s");
        }
        Ok(())
    }
}

/// Periodic work: refresh `tenant_metrics`, keep request-log partitions ahead.
async fn maintenance(db: Database, refresh_secs: u64) {
    if refresh_secs == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(refresh_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut runs: u64 = 0;
    loop {
        tick.tick().await;
        let result = async {
            let mut scope = db.admin("scheduler").await?;
            if runs % 60 == 0 {
                scope.ensure_request_log_partitions(7).await?;
            }
            scope.refresh_metrics().await?;
            scope.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "metrics refresh failed");
        }
        runs += 1;
    }
}
