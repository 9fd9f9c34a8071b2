//! Authentication and authorization: the `Authorization: Bearer` extractors (tenant key, admin token), the in-process key cache, per-tenant rate limits, and permission checks. The only way a handler gets a tenant scope.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use axum::{extract::FromRequestParts, http::request::Parts};
use governor::{DefaultDirectRateLimiter, Quota};
use tenantry_db::{
    AdminScope, ApiKeySecret, Database, KeyId, KeyIdentity, ResourceId, ScopeFuture, TenantContext,
    TenantId, TenantScope, TenantSettings, TenantStatus,
};

use crate::{
    error::{ApiError, ProblemCode},
    request_log::LogSlot,
    state::AppState,
};

/// Cache of verified keys by prefix. Entries hold the key's hash and are
/// compared in constant time; they live `ttl` and are dropped at once when a
/// key, role or tenant changes through this instance.
pub struct KeyCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, CachedKey>>,
}

struct CachedKey {
    hash: [u8; 32],
    identity: Arc<KeyIdentity>,
    fetched: Instant,
}

impl KeyCache {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    fn get(&self, secret: &ApiKeySecret) -> Option<Arc<KeyIdentity>> {
        let entries = self.entries.read().expect("key cache lock");
        let entry = entries.get(secret.prefix())?;
        let fresh = entry.fetched.elapsed() < self.ttl;
        let unexpired = entry
            .identity
            .expires_at
            .is_none_or(|e| e > chrono::Utc::now());
        (fresh && unexpired && secret.matches_hash(&entry.hash)).then(|| entry.identity.clone())
    }

    async fn verify(
        &self,
        db: &Database,
        secret: &ApiKeySecret,
    ) -> Result<Option<Arc<KeyIdentity>>, ApiError> {
        if let Some(hit) = self.get(secret) {
            return Ok(Some(hit));
        }
        let verified = db.verify_key(secret.expose()).await?;
        let mut entries = self.entries.write().expect("key cache lock");
        match verified {
            Some(identity) => {
                let identity = Arc::new(identity);
                entries.insert(
                    secret.prefix().to_owned(),
                    CachedKey {
                        hash: secret.sha256(),
                        identity: identity.clone(),
                        fetched: Instant::now(),
                    },
                );
                Ok(Some(identity))
            }
            None => {
                // Only forget an entry that belongs to this very key: a forged
                // secret with a real prefix must not evict the real key.
                if entries
                    .get(secret.prefix())
                    .is_some_and(|e| secret.matches_hash(&e.hash))
                {
                    entries.remove(secret.prefix());
                }
                Ok(None)
            }
        }
    }

    /// Forgets one key (revoked or rotated here).
    pub fn forget_key(&self, key: KeyId) {
        self.entries
            .write()
            .expect("key cache lock")
            .retain(|_, e| e.identity.key_id != key);
    }

    /// Forgets every key of a tenant (status, roles or permissions changed here).
    pub fn forget_tenant(&self, tenant: TenantId) {
        self.entries
            .write()
            .expect("key cache lock")
            .retain(|_, e| e.identity.tenant_id != tenant);
    }
}

/// A limiter and the (rate bits, burst) it was built from.
type TenantLimiter = ((u64, u32), Arc<DefaultDirectRateLimiter>);

/// Per-tenant rate limiters built from the tenant's settings: one for every
/// request (`rate_limit_per_second`), one for creating children
/// (`child_creation_rate_per_second`).
#[derive(Default)]
pub struct RateLimits {
    requests: Mutex<HashMap<TenantId, TenantLimiter>>,
    child_creations: Mutex<HashMap<TenantId, TenantLimiter>>,
}

impl RateLimits {
    /// Err(429) when the tenant's `rate_limit_per_second` (burst `rate_limit_burst`) is exhausted.
    fn check(&self, tenant: TenantId, settings: &TenantSettings) -> Result<(), ApiError> {
        let Some(rate) = settings.rate_limit_per_second() else {
            return Ok(());
        };
        // The rate is > 0 and finite (parsed); the default burst is the rate, rounded up.
        let burst = settings
            .rate_limit_burst()
            .unwrap_or_else(|| rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
        take(&self.requests, tenant, rate, burst).map_err(|_| {
            ApiError::new(
                ProblemCode::RateLimited,
                format!("this tenant may make {rate} requests per second (burst {burst})"),
            )
        })
    }

    /// Err(429) when the tenant created children faster than its
    /// `child_creation_rate_per_second` (default 10, burst twice the rate).
    fn check_child_creation(
        &self,
        tenant: TenantId,
        settings: &TenantSettings,
    ) -> Result<(), ApiError> {
        let rate = settings.child_creation_rate_per_second();
        let burst = (2.0 * rate).ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        take(&self.child_creations, tenant, rate, burst).map_err(|_| {
            ApiError::new(
                ProblemCode::RateLimited,
                format!("this tenant may create {rate} child tenants per second (burst {burst})"),
            )
            .with_field("settings.child_creation_rate_per_second")
        })
    }
}

/// Takes one cell from the tenant's limiter in `limiters`, (re)built when its
/// rate or burst changed.
fn take(
    limiters: &Mutex<HashMap<TenantId, TenantLimiter>>,
    tenant: TenantId,
    rate: f64,
    burst: u32,
) -> Result<(), ()> {
    let signature = (rate.to_bits(), burst);
    let limiter = {
        // A panic elsewhere must not turn every later rate-limited request into one.
        let mut limiters = limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = limiters
            .entry(tenant)
            .or_insert_with(|| (signature, Arc::new(limiter(rate, burst))));
        if entry.0 != signature {
            *entry = (signature, Arc::new(limiter(rate, burst)));
        }
        entry.1.clone()
    };
    limiter.check().map_err(|_| ())
}

/// Longest period between two requests of a rate limit: any slower rate (settings
/// accept every positive number) means one request per ten years.
const MAX_PERIOD: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn limiter(rate: f64, burst: u32) -> DefaultDirectRateLimiter {
    // governor keeps period × burst in u64 nanoseconds: bound both so that no
    // setting can panic or overflow it (a tiny rate once panicked here).
    let period = Duration::try_from_secs_f64(1.0 / rate)
        .unwrap_or(MAX_PERIOD)
        .clamp(Duration::from_nanos(1), MAX_PERIOD);
    let period_nanos = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
    let max_burst = u32::try_from(u64::MAX / 4 / period_nanos).unwrap_or(u32::MAX);
    let quota = Quota::with_period(period)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(burst.clamp(1, max_burst.max(1))).expect("burst >= 1"));
    DefaultDirectRateLimiter::direct(quota)
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A request made with a tenant API key: acts as the key's tenant (and member).
pub struct TenantCaller {
    db: Database,
    identity: Arc<KeyIdentity>,
    slot: Option<LogSlot>,
    keys: Arc<KeyCache>,
    limits: Arc<RateLimits>,
}

impl TenantCaller {
    /// The caller's tenant. Nothing in a request body, query or path overrides it.
    pub fn tenant(&self) -> TenantId {
        self.identity.tenant_id
    }

    /// Err(429 `rate_limited`, with Retry-After) when the tenant creates
    /// children faster than its `child_creation_rate_per_second`.
    pub fn check_child_creation(&self) -> Result<(), ApiError> {
        self.limits
            .check_child_creation(self.identity.tenant_id, &self.identity.tenant_settings)
    }

    /// The key's identity.
    pub fn identity(&self) -> &KeyIdentity {
        &self.identity
    }

    /// 403 unless the key holds `permission`.
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if self.identity.permissions.iter().any(|p| p == permission) {
            Ok(())
        } else {
            Err(ApiError::new(
                ProblemCode::PermissionDenied,
                format!("this key lacks the permission {permission}"),
            ))
        }
    }

    /// The tenant context of this request, restricted to what the key holds.
    fn context(&self) -> TenantContext {
        // The key's permissions travel with the scope: the library refuses to
        // grant, assign or mint more than the key holds.
        TenantContext::new(self.tenant())
            .with_user(self.identity.user_id)
            .with_actor(format!("key:{}", self.identity.key_id))
            .with_permissions(self.identity.permissions.iter().cloned().collect())
    }

    /// Opens the tenant-scoped transaction for this request (reads).
    pub async fn scope(&self) -> Result<TenantScope, ApiError> {
        Ok(self.db.tenant(self.context()).await?)
    }

    /// Runs a write in a fresh tenant-scoped transaction and commits it; a
    /// collision with a concurrent transaction (deadlock, serialization
    /// failure) is run again a few times before it answers 503
    /// ([`Database::in_tenant`]). `work` may run more than once.
    pub async fn write<A: Sync + ?Sized, T>(
        &self,
        args: &A,
        work: impl for<'s> FnMut(&'s mut TenantScope, &'s A) -> ScopeFuture<'s, T>,
    ) -> Result<T, ApiError> {
        Ok(self.db.in_tenant(&self.context(), args, work).await?)
    }

    /// Records the resource this request addressed, for the request log.
    pub fn note_resource(&self, id: ResourceId) {
        if let Some(slot) = &self.slot {
            slot.set_resource(id);
        }
    }

    /// The key cache, to drop entries after security changes.
    pub fn key_cache(&self) -> &KeyCache {
        &self.keys
    }
}

impl FromRequestParts<AppState> for TenantCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        if state.admin_token.matches(token) {
            return Err(ApiError::new(
                ProblemCode::WrongCredential,
                "this route needs a tenant API key, not the admin token",
            ));
        }
        let secret = ApiKeySecret::parse(token).ok_or_else(ApiError::unauthorized)?;
        let identity = state
            .keys
            .verify(&state.db, &secret)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        match identity.tenant_status {
            TenantStatus::Active => {}
            TenantStatus::Suspended => {
                return Err(ApiError::new(
                    ProblemCode::TenantSuspended,
                    format!("tenant {} is suspended", identity.tenant_id),
                ));
            }
            TenantStatus::Deleted => return Err(ApiError::unauthorized()),
        }
        let slot = parts.extensions.get::<LogSlot>().cloned();
        if let Some(slot) = &slot {
            slot.set_caller(identity.tenant_id, identity.user_id);
        }
        state
            .limits
            .check(identity.tenant_id, &identity.tenant_settings)?;
        Ok(Self {
            db: state.db.clone(),
            identity,
            slot,
            keys: state.keys.clone(),
            limits: state.limits.clone(),
        })
    }
}

/// A request made with the admin token. The operator's requests are never
/// written to a tenant's request log: the tenant would see when the operator
/// looked, and pay for it in its usage. They are in the server's metrics.
pub struct AdminCaller {
    db: Database,
    keys: Arc<KeyCache>,
}

/// Audit actor label of the admin token.
pub const ADMIN_ACTOR: &str = "admin";

impl AdminCaller {
    /// An administrative transaction (tenants, hierarchy, audit), audited as `admin`.
    pub async fn admin_scope(&self) -> Result<AdminScope, ApiError> {
        Ok(self.db.admin(ADMIN_ACTOR).await?)
    }

    /// A transaction inside one tenant, audited as `admin` (keys, usage of that tenant).
    pub async fn tenant_scope(&self, tenant: TenantId) -> Result<TenantScope, ApiError> {
        Ok(self
            .db
            .tenant(TenantContext::new(tenant).with_actor(ADMIN_ACTOR))
            .await?)
    }

    /// [`TenantCaller::write`] inside one tenant, audited as `admin`.
    pub async fn tenant_write<A: Sync + ?Sized, T>(
        &self,
        tenant: TenantId,
        args: &A,
        work: impl for<'s> FnMut(&'s mut TenantScope, &'s A) -> ScopeFuture<'s, T>,
    ) -> Result<T, ApiError> {
        let ctx = TenantContext::new(tenant).with_actor(ADMIN_ACTOR);
        Ok(self.db.in_tenant(&ctx, args, work).await?)
    }

    /// An administrative write (tenants, hierarchy), run again a few times
    /// when a concurrent transaction rolled it back ([`Database::in_admin`]).
    pub async fn admin_write<A: Sync + ?Sized, T>(
        &self,
        args: &A,
        work: impl for<'s> FnMut(&'s mut AdminScope, &'s A) -> ScopeFuture<'s, T>,
    ) -> Result<T, ApiError> {
        Ok(self.db.in_admin(ADMIN_ACTOR, args, work).await?)
    }

    /// The key cache, to drop entries after security changes.
    pub fn key_cache(&self) -> &KeyCache {
        &self.keys
    }
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        if !state.admin_token.matches(token) {
            if ApiKeySecret::parse(token).is_some() {
                return Err(ApiError::new(
                    ProblemCode::WrongCredential,
                    "this route needs the admin token, not a tenant API key",
                ));
            }
            return Err(ApiError::unauthorized());
        }
        Ok(Self {
            db: state.db.clone(),
            keys: state.keys.clone(),
        })
    }
}

/// Either credential, for routes both may call (`POST /v1/tenants`).
pub enum Caller {
    /// The admin token.
    Admin(AdminCaller),
    /// A tenant key.
    Tenant(TenantCaller),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let is_admin = bearer(parts).is_some_and(|t| state.admin_token.matches(t));
        if is_admin {
            Ok(Caller::Admin(
                AdminCaller::from_request_parts(parts, state).await?,
            ))
        } else {
            Ok(Caller::Tenant(
                TenantCaller::from_request_parts(parts, state).await?,
            ))
        }
    }
}
