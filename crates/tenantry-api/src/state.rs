//! What every request shares: the pool of the admin routes and probes, the admin token, and [`Tenantry`] (key cache, rate limiters, request log: what tenant routes share with any application built on `tenantry-axum`). Built once by [`crate::startup`]; read by extractors and handlers.

use std::sync::Arc;

use axum::extract::FromRef;
use tenantry_axum::Tenantry;
use tenantry_db::Database;

use crate::config::AdminToken;

/// Shared state of every request.
#[derive(Clone)]
pub struct AppState {
    pub(crate) db: Database,
    pub(crate) admin_token: Arc<AdminToken>,
    pub(crate) metrics: Arc<crate::auth::MetricsAccess>,
    pub(crate) tenantry: Tenantry,
    /// The last readiness check: when it began, and its answer
    /// ([`crate::routes::system::readyz`]).
    pub(crate) readiness: Arc<tokio::sync::Mutex<Option<Readiness>>>,
}

/// When a readiness check began, and its answer.
pub(crate) type Readiness = (
    std::time::Instant,
    Result<(), tenantry_axum::error::ApiError>,
);

impl FromRef<AppState> for Tenantry {
    fn from_ref(state: &AppState) -> Tenantry {
        state.tenantry.clone()
    }
}
