//! issue-tracker: an application built on tenantry. Its own tables (`projects`, `issues`, `comments`: [`schema`]) are adopted by tenantry at start-up; its own axum routes ([`routes`]) take a [`tenantry_axum::TenantCaller`] (an API key, or a person's token naming the tenant in `X-Tenant-Id`), so every statement runs in the caller's tenant under row-level security, another tenant's row answers exactly like a missing one, and reads need `tracker.read`, writes `tracker.write` ([`permissions`]).
//!
//! [`Application::build`] wires it up from [`Settings`] and can bind port 0,
//! so the tests run the real server; `main` reads the environment ([`config`])
//! and opens the embedded database when `DATABASE_URL` is unset.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::{future::Future, net::SocketAddr};

use anyhow::Context;
use axum::{
    routing::{get, post},
    Router,
};
use tenantry_axum::{
    error::{method_not_allowed, route_not_found},
    jwt::{JwtConfig, JwtVerifier},
    RequestIdLayer, Tenantry, TenantryConfig,
};
use tenantry_db::{Database, DatabaseConfig, Timeouts};
use tokio::{net::TcpListener, task::JoinHandle};

pub mod config;
pub mod ids;
pub mod permissions;
pub mod routes;
pub mod schema;

/// What the tracker needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The role that runs migrations and adopts tables (a superuser, or a member of `tenantry_owner`).
    pub migration: tokio_postgres::Config,
    /// The server's login role, `tenantry_server`: the pool every request uses.
    pub server: tokio_postgres::Config,
    /// People's sign-in tokens ([`config::jwt_from_env`]: the `TENANTRY_JWT_*`
    /// variables of `tenantry serve`); `None`: API keys only.
    pub jwt: Option<JwtConfig>,
}

/// The routes, over the shared [`Tenantry`] state: each tenant request is
/// recorded by the request log's layer, and every response (fallbacks
/// included) carries the request's `X-Request-Id`, which problem bodies repeat
/// as `request_id` ([`RequestIdLayer`], outermost).
pub fn router(tenantry: Tenantry) -> Router {
    use routes::{comments, issues, projects};
    Router::new()
        .route("/projects", post(projects::create).get(projects::list))
        .route(
            "/projects/{id}",
            get(projects::get)
                .patch(projects::update)
                .delete(projects::delete),
        )
        .route(
            "/projects/{id}/issues",
            post(issues::create).get(issues::list),
        )
        .route(
            "/issues/{id}",
            get(issues::get)
                .patch(issues::update)
                .delete(issues::delete),
        )
        .route(
            "/issues/{id}/comments",
            post(comments::create).get(comments::list),
        )
        .route(
            "/comments/{id}",
            get(comments::get).delete(comments::delete),
        )
        .method_not_allowed_fallback(method_not_allowed)
        // A write sent with `Idempotency-Key` is answered once: a retry gets
        // the first response (create_one stores it with the row).
        .route_layer(axum::middleware::from_fn(
            tenantry_axum::idempotency::middleware,
        ))
        .route_layer(tenantry.layer())
        .fallback(route_not_found)
        .with_state(tenantry)
        // What tenantry serve does to every request: no caching of answers,
        // one Host, no body in a coding it would misread, and a connection
        // closed after a refusal that left the body unread.
        .layer(axum::middleware::from_fn(
            tenantry_axum::serve::http_hygiene,
        ))
        .layer(RequestIdLayer)
}

/// The tracker, migrated, bound and ready to serve.
pub struct Application {
    listener: TcpListener,
    router: Router,
    tenantry: Tenantry,
    flusher: JoinHandle<()>,
}

impl Application {
    /// Migrates and adopts the tracker's tables, checks the server's role and
    /// every adopted table (as `tenantry serve` does), accepts people's tokens
    /// when `settings.jwt` says whose, and binds `settings.listen`.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        schema::migrate(&settings.migration).await?;
        let key = schema::context_key(&settings.migration).await?;
        // The server's timeouts: a slow statement is cancelled (503), a
        // transaction left idle ends, a silent database is given up.
        let db = Database::connect(&DatabaseConfig {
            timeouts: Timeouts::server(),
            ..DatabaseConfig::from_config(settings.server.clone()).with_context_key(key)
        })?;
        if let Some(problem) = db.login_role_check().await?.problem() {
            anyhow::bail!("refusing to serve tenant traffic: {problem}");
        }
        let problems = db.table_problems().await?;
        if let Some(p) = problems.iter().find(|p| p.blocks_serving()) {
            anyhow::bail!("refusing to serve tenant traffic: {p}");
        }
        for p in &problems {
            tracing::warn!("adopted table breaks a rule that isolation does not need: {p}");
        }
        let verifier = settings
            .jwt
            .clone()
            .map(JwtVerifier::new)
            .transpose()
            .context("TENANTRY_JWT_*")?;
        let (mut tenantry, flusher) = Tenantry::start(db, &TenantryConfig::default());
        if let Some(verifier) = verifier {
            tenantry = tenantry.with_jwt(verifier);
        }
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        Ok(Self {
            listener,
            router: router(tenantry.clone()),
            tenantry,
            flusher,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` resolves, then writes what is left of the request log.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // The peer's address lets keys limited to source addresses be
        // checked; slow clients get a deadline for their headers.
        tenantry_axum::serve(
            self.listener,
            self.router,
            tenantry_axum::ServeOptions::default(),
            shutdown,
        )
        .await?;
        drop(self.tenantry);
        let _ = self.flusher.await;
        Ok(())
    }
}
