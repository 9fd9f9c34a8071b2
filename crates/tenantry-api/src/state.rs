//! What every request shares: the pool, the admin token, the key cache, rate limiters and the request log. Built once by [`crate::startup`]; read by extractors and handlers.

use std::sync::Arc;

use tenantry_db::Database;

use crate::{
    auth::{KeyCache, RateLimits},
    config::AdminToken,
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
