//! tenantry-axum: what an application needs to serve its own tables with tenantry's guarantees.
//!
//! A request flows auth → tenant scope → SQL → response, as in tenantry's own
//! server, which is built on this crate:
//!
//! - [`TenantCaller`] (in [`auth`]), the extractor: the request's API key
//!   checked exactly as the server checks it (key cache, suspended tenant,
//!   per-tenant rate limit, request-log slot); it hands the handler a
//!   [`TenantScope`](tenantry_db::TenantScope) and never a pool;
//! - [`Person`] (in [`people`]), the extractor of routes for a person signed
//!   in with your identity provider but in no tenant yet; [`TenantCaller`]
//!   takes their token too, with `X-Tenant-Id` naming the tenant
//!   ([`Tenantry::with_jwt`], [`jwt::JwtVerifier`]);
//! - [`RequestLogLayer`] (in [`request_log`]), the tower layer that records
//!   every tenant request (log line, metrics and `tenantry.request_log`), and
//!   [`RequestIdLayer`], outermost, which gives each request its id;
//! - [`error::ApiError`]: every failure as `application/problem+json` with a
//!   stable code; another tenant's row is `404 not_found` like a missing one;
//! - [`extract`]: `Json`, `Path` and `Query` whose rejections are problem+json;
//! - [`idempotency`]: the `Idempotency-Key` middleware and the responses of
//!   writes that a retry gets replayed ([`TenantCaller::write_response`]);
//! - [`Tenantry`]: the state they share, built once at start-up.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tenantry_axum::{
//!     error::{method_not_allowed, route_not_found, ApiError},
//!     extract::{Json, Path},
//!     RequestIdLayer, TenantCaller, Tenantry,
//! };
//!
//! // Another tenant's project is 404, exactly like a missing one; `read`
//! // runs once more on a fresh transaction when the first was refused as
//! // contention (its closure is `Fn`: capture by copy or by reference).
//! async fn project_name(caller: TenantCaller, Path(id): Path<uuid::Uuid>) -> Result<Json<String>, ApiError> {
//!     let (name,): (String,) = caller
//!         .read(|mut scope| async move {
//!             let row = scope
//!                 .query_one("SELECT name FROM projects WHERE id = $1", &[&id])
//!                 .await?;
//!             scope.commit().await?;
//!             Ok(row)
//!         })
//!         .await?;
//!     Ok(Json(name))
//! }
//!
//! # async fn demo(db: tenantry_db::Database) {
//! let (tenantry, flusher) = Tenantry::start(db, &Default::default());
//! let app: Router = Router::new()
//!     .route("/projects/{id}", get(project_name))
//!     .method_not_allowed_fallback(method_not_allowed)
//!     .route_layer(tenantry.layer())
//!     // Unknown routes and methods answer problem+json too.
//!     .fallback(route_not_found)
//!     .with_state(tenantry)
//!     // No caching of answers, one Host, connections closed after a
//!     // refusal that left the body unread (serve::http_hygiene).
//!     .layer(axum::middleware::from_fn(tenantry_axum::serve::http_hygiene))
//!     .layer(RequestIdLayer);
//! // Serve `app` (tenantry_axum::serve), drop it, then await `flusher`: the
//! // request log's last batch is written then.
//! # drop(app);
//! # let _ = flusher.await;
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::{sync::Arc, time::Duration};

use tenantry_db::{Database, Invalidations, ListenOptions, ListenTo};
use tokio::task::JoinHandle;

use crate::{jwt::JwtVerifier, people::TokenCache};

pub mod auth;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod jwt;
pub mod log;
pub mod page;
pub mod people;
pub mod preconditions;
pub mod request_log;
pub mod serve;
mod tagged;
pub mod tenant_stats;

pub use auth::{AdminToken, KeyCache, RateLimits, TenantCaller};
pub use error::{ApiError, Code, ProblemCode};
pub use people::{MemberCache, Person};
pub use request_log::{RequestId, RequestIdLayer, RequestLog, RequestLogLayer};
pub use serve::{serve, ClientAddr, ServeOptions};
pub use tenant_stats::{TenantStats, TenantStatsConfig};

/// How [`Tenantry::start`] sets up authentication and the request log.
#[derive(Debug, Clone)]
pub struct TenantryConfig {
    /// How long a verified key is trusted without asking the database, while
    /// the invalidation listener listens (at most [`auth::UNLISTENED_TTL`]
    /// while it does not).
    pub key_cache_ttl: Duration,
    /// Where the invalidation listener connects (default: where the pool
    /// does; behind a transaction pooler such as pgbouncer, PostgreSQL itself,
    /// since LISTEN needs a session of its own).
    pub invalidations: ListenTo,
    /// Whether each tenant request gets a `request_log` row (usage comes from them).
    pub request_log: bool,
    /// Capacity of the request-log queue; when full, rows are dropped and counted.
    pub request_log_queue: usize,
    /// Most rows written per request-log batch.
    pub request_log_batch: usize,
    /// How many tenants the per-tenant traffic stats name (`/metrics`, `tenantry top`).
    pub tenant_stats: TenantStatsConfig,
    /// How often the upkeep runs (`None`: never, for a process that leaves
    /// it to another): refreshes the usage metrics that `GET /v1/usage`,
    /// `tenantry usage` and `tenantry.tenant_metrics` read from the request
    /// log, and keeps a week of request-log partitions ahead (checked at
    /// every run, each in a transaction of its own that waits at most 100 ms
    /// for the log's lock), at its first run and every sixtieth the log's
    /// retention ([`TenantryConfig::request_log_keep_days`], with the same
    /// lock wait), and every tenth run the doctor's rules
    /// (`tenantry_table_problems`). Every process that serves tenants may run it.
    pub upkeep_every: Option<Duration>,
    /// How many days of the request log the upkeep keeps (at least 2):
    /// older days' partitions are dropped at its first run and every
    /// sixtieth after it; `None`: never (the log then grows until an operator
    /// drops partitions). Default [`tenantry_db::REQUEST_LOG_KEEP_DAYS`],
    /// the 30 days the usage routes read and a few more.
    pub request_log_keep_days: Option<u32>,
    /// Most requests of one tenant in flight at once, from its authentication
    /// until its answer has been sent or its connection closed (under
    /// [`crate::request_log::RequestLogLayer`]; without it, until its handler
    /// returns), the request's body read included (0: no limit). Counted
    /// per process, for every credential of the tenant together (its keys,
    /// its members, its impersonations). Past it,
    /// 429 `rate_limited`: without it, a tenant's hundreds of connections
    /// each held a body of up to the size limit in memory (a review of noisy
    /// neighbours: 1,000 slow bodies of 1 MiB took the server from 306 MB to
    /// 1.2 GB), and flooded the CPU every tenant shares.
    pub max_requests_in_flight_per_tenant: usize,
}

/// [`TenantryConfig::max_requests_in_flight_per_tenant`] by default: far
/// above what a tenant's share of the pool serves at once (4 transactions of
/// a few milliseconds each), and 64 MiB of bodies at the default size limit.
pub const DEFAULT_REQUESTS_IN_FLIGHT_PER_TENANT: usize = 64;

impl Default for TenantryConfig {
    /// The server's defaults: keys trusted for 1 s, invalidations listened
    /// for where the pool connects, request log on, a queue of 10 000 rows
    /// written 500 at a time, upkeep every minute.
    fn default() -> Self {
        Self {
            key_cache_ttl: Duration::from_secs(1),
            invalidations: ListenTo::Database,
            request_log: true,
            request_log_queue: 10_000,
            request_log_batch: 500,
            tenant_stats: TenantStatsConfig::default(),
            upkeep_every: Some(Duration::from_secs(60)),
            max_requests_in_flight_per_tenant: DEFAULT_REQUESTS_IN_FLIGHT_PER_TENANT,
            request_log_keep_days: Some(tenantry_db::REQUEST_LOG_KEEP_DAYS),
        }
    }
}

/// What every tenant request shares: the pool (reached only through
/// [`TenantCaller`]), the key cache and the invalidation feed that keeps it
/// current, the rate limiters and the request log.
/// Cheap to clone; an application's state holds one and implements
/// `FromRef<AppState> for Tenantry` (or uses it as its state directly).
#[derive(Clone)]
pub struct Tenantry {
    pub(crate) db: Database,
    pub(crate) keys: Arc<KeyCache>,
    pub(crate) invalidations: Invalidations,
    pub(crate) limits: Arc<RateLimits>,
    /// Each tenant's requests in flight ([`TenantryConfig::max_requests_in_flight_per_tenant`]).
    pub(crate) in_flight: Option<Arc<tenantry_db::turns::TenantTurns>>,
    pub(crate) log: RequestLog,
    pub(crate) admin_token: Option<Arc<AdminToken>>,
    pub(crate) jwt: Option<JwtVerifier>,
    pub(crate) tokens: Arc<TokenCache>,
    pub(crate) members: Arc<MemberCache>,
    /// Where each impersonation token's check waits.
    pub(crate) impersonations: Arc<auth::ImpersonationLanes>,
    /// Dropped with the last clone: the expiry sweep of idempotency keys ends.
    /// Dropped with the last clone: the idempotency sweep and the upkeep end.
    _stop: Arc<tokio::sync::watch::Sender<()>>,
}

impl Tenantry {
    /// Builds the shared state and starts the request-log flusher, the
    /// invalidation listener, the task that applies its feed to the key
    /// cache, the expiry of idempotency keys older than 24 hours
    /// ([`idempotency::SWEEP_INTERVAL`]) and the upkeep
    /// ([`TenantryConfig::upkeep_every`]). The flusher's task (returned) ends once every clone of the state
    /// is dropped and the queue is written; the listener, its follower and the
    /// expiry end with the last clone.
    pub fn start(db: Database, config: &TenantryConfig) -> (Self, JoinHandle<()>) {
        let (mut log, flusher) = RequestLog::start(
            db.clone(),
            config.request_log_queue,
            config.request_log_batch,
        );
        if !config.request_log {
            log = log.disabled();
        }
        let log = log.with_tenant_stats(TenantStats::new(config.tenant_stats));
        let invalidations =
            Invalidations::start(&db, &config.invalidations, ListenOptions::default());
        let keys = Arc::new(KeyCache::with_invalidations(
            config.key_cache_ttl,
            &invalidations,
        ));
        let members = Arc::new(MemberCache::with_invalidations(
            config.key_cache_ttl,
            &invalidations,
        ));
        let mut feed = invalidations.subscribe();
        let follower = keys.clone();
        let member_follower = members.clone();
        let contexts = db.clone();
        tokio::spawn(async move {
            while let Some(invalidation) = feed.recv().await {
                // Tenants' context parts (subtree, schema): the tenant an
                // event names (its ancestors have events of their own).
                contexts.apply_invalidation(invalidation);
                member_follower.apply(invalidation);
                follower.apply(invalidation);
            }
        });
        let (stop, stopped) = tokio::sync::watch::channel(());
        tokio::spawn(idempotency::sweep(db.clone(), stopped.clone()));
        if let Some(every) = config.upkeep_every {
            tokio::spawn(request_log::upkeep(
                db.clone(),
                every,
                config.request_log_keep_days,
                stopped,
            ));
        }
        let tenantry = Self {
            _stop: Arc::new(stop),
            db,
            keys,
            invalidations,
            limits: Arc::new(RateLimits::default()),
            in_flight: (config.max_requests_in_flight_per_tenant > 0).then(|| {
                tenantry_db::turns::TenantTurns::new(config.max_requests_in_flight_per_tenant)
            }),
            log,
            admin_token: None,
            jwt: None,
            tokens: Arc::new(TokenCache::new()),
            members,
            impersonations: Arc::new(auth::ImpersonationLanes::new()),
        };
        (tenantry, flusher)
    }

    /// Names the operator's admin token: a tenant route that receives it
    /// answers `403 wrong_credential` instead of `401`.
    pub fn with_admin_token(mut self, token: AdminToken) -> Self {
        self.admin_token = Some(Arc::new(token));
        self
    }

    /// Lets people sign in with bearer JWTs of the team's identity provider
    /// (next to API keys): [`TenantCaller`] then also accepts a member's
    /// token for the tenant its request names, and [`Person`] extracts them.
    pub fn with_jwt(mut self, verifier: JwtVerifier) -> Self {
        self.jwt = Some(verifier);
        // Tokens verified by another verifier (another audience or issuer,
        // on a clone of this state) are no token of this one's.
        self.tokens = Arc::new(TokenCache::new());
        self
    }

    /// The membership cache, to drop a tenant's entries after changes to its members.
    pub fn member_cache(&self) -> &MemberCache {
        &self.members
    }

    /// The admin token, if one was named.
    pub fn admin_token(&self) -> Option<&AdminToken> {
        self.admin_token.as_deref()
    }

    /// The layer that records every request of the routes it wraps.
    pub fn layer(&self) -> RequestLogLayer {
        RequestLogLayer {
            log: self.log.clone(),
        }
    }

    /// The key cache, to drop entries after security changes.
    pub fn key_cache(&self) -> &KeyCache {
        &self.keys
    }

    /// Drops everything this server holds of `tenant` (its keys, its
    /// members' memberships, its cached context part) after a change made
    /// through it: a suspension, deletion, move or re-parenting, a role or
    /// permission change. At once here; other servers hear of it through
    /// the invalidation feed.
    pub fn forget_tenant(&self, tenant: tenantry_db::TenantId) {
        auth::forget_everywhere(&self.db, &self.keys, &self.members, tenant);
    }

    /// The invalidation feed: [`Invalidations::subscribe`] to keep a cache of
    /// one's own current across server instances.
    pub fn invalidations(&self) -> &Invalidations {
        &self.invalidations
    }

    /// The request log (queue depth, rows written and dropped).
    pub fn request_log(&self) -> &RequestLog {
        &self.log
    }
}

/// Resolves on Ctrl-C, SIGTERM or SIGHUP: for `axum::serve(..).with_graceful_shutdown`.
/// SIGHUP (the terminal that started the server closed; there is no
/// reload) stops it as gracefully as SIGTERM: it killed the process at once,
/// requests in flight cut off and the request log's queue lost (found by an
/// operations review).
/// The handlers are installed when this is called, not when the future is
/// first polled: a server that starts answering on another worker thread
/// before its shutdown future is polled (a loaded machine) would otherwise
/// die of a SIGTERM sent meanwhile instead of shutting down cleanly. Call it
/// before binding. Must be called within a Tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    // Not under `nohup` (SIGHUP ignored when the process started): a handler
    // would undo what it asked for, and a server or an export started so
    // would stop at logout (found by a review of this change).
    let mut hangup =
        (!hangup_ignored()).then(|| signal(SignalKind::hangup()).expect("SIGHUP handler"));
    async move {
        let hung_up = async {
            match hangup.as_mut() {
                Some(hangup) => {
                    hangup.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        // Said when it arrives: the drain that follows may take the whole
        // grace period, and nothing said why the server had stopped taking
        // connections (an on-call review).
        tokio::select! {
            _ = interrupt.recv() => {
                tracing::info!(target: "tenantry::serve", "SIGINT: stopping; requests in flight may finish");
            }
            _ = term.recv() => {
                tracing::info!(target: "tenantry::serve", "SIGTERM: stopping; requests in flight may finish");
            }
            () = hung_up => {
                tracing::warn!("SIGHUP: stopping as for SIGTERM (tenantry reloads nothing; restart it to change its settings)");
            }
        }
    }
}

/// Whether SIGHUP's disposition is "ignore" (as `nohup` leaves it), read
/// from the kernel's mask of ignored signals (`SigIgn` in
/// `/proc/self/status`, SIGHUP its lowest bit); elsewhere, not ignored.
fn hangup_ignored() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|ignored| ignored & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two routers of one service, each with its own verifier (another
    /// audience or issuer) on clones of one state: a token verified for one
    /// is never taken from a cache the other reads.
    #[tokio::test]
    async fn each_jwt_verifier_gets_a_token_cache_of_its_own() {
        let db = tenantry_db::testing::unreachable_database();
        let (tenantry, _flusher) = Tenantry::start(
            db,
            &TenantryConfig {
                invalidations: ListenTo::Off,
                request_log: false,
                ..Default::default()
            },
        );
        let idp = jwt::testing::IdentityProvider::start().await;
        let public = tenantry
            .clone()
            .with_jwt(JwtVerifier::new(idp.config()).unwrap());
        let mut internal = idp.config();
        internal.audience = vec!["internal".into()];
        let internal = tenantry.with_jwt(JwtVerifier::new(internal).unwrap());
        assert!(!Arc::ptr_eq(&public.tokens, &internal.tokens));
    }
}
