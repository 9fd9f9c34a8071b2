//! Authentication of a tenant's request, exactly as tenantry's server does it: the `Authorization: Bearer` credential (an API key checked through the in-process key cache, or a person's JWT and their membership of the tenant the request names: [`crate::people`]), the suspended tenant's answer, the tenant's rate limit and its request-log slot, then [`TenantCaller`], the only way a handler gets a [`TenantScope`]. Also the admin token's hash, so a tenant route can tell it apart. The admin routes themselves are the API's.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRef, FromRequestParts},
    http::request::Parts,
};
use governor::{clock::Clock as _, DefaultDirectRateLimiter, Quota};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tenantry_db::{
    invalidation::{ListeningFlag, Tag},
    sweep::SweepSchedule,
    ApiKeySecret, Database, ImpersonationIdentity, Invalidation, Invalidations, KeyId, KeyIdentity,
    MemberIdentity, ResourceId, ScopeFuture, TenantContext, TenantId, TenantScope, TenantSettings,
    TenantStatus, UserId,
};

use crate::{
    error::{ApiError, ProblemCode},
    idempotency::{Reply, Written},
    jwt::VerifiedToken,
    people::{looks_like_jwt, named_tenant, not_a_member, requested_tenant, MemberCache},
    request_log::LogSlot,
    tagged::TaggedCache,
    Tenantry,
};

/// The admin token, kept only as its SHA-256 and compared in constant time.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    /// From the token text.
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
    /// Whether `presented` is the token.
    pub fn matches(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        h.ct_eq(&self.0).into()
    }
    /// A new random token: `tadm_` and 64 hex digits.
    pub fn generate() -> String {
        let bytes: [u8; 32] = rand::random();
        format!("tadm_{}", hex::encode(bytes))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// Cache of verified keys by prefix. Entries hold the key's hash and are
/// compared in constant time. They live `ttl`, and are dropped at once when a
/// key, role or tenant changes through this instance, and within
/// milliseconds when it changes through any other one ([`KeyCache::apply`],
/// fed by the database's invalidation feed). While that feed is enabled but
/// not listening, entries are trusted for at most [`UNLISTENED_TTL`].
pub struct KeyCache {
    /// By prefix, under the key's and its tenant's tags.
    entries: TaggedCache<Arc<str>, CachedKey>,
    /// Checks in the database under way, by the SHA-256 of their secret:
    /// requests with a secret being checked wait for that check's answer
    /// instead of each sending their own (a tenant's many requests in flight
    /// when its key's entry expires, or a flood of one made-up key).
    checking: Mutex<HashMap<[u8; 32], Arc<Check>>>,
}

/// One check of a secret in the database, its answer shared by every
/// request that came with that secret while it ran.
type Check = tokio::sync::OnceCell<Result<Option<Arc<KeyIdentity>>, ApiError>>;

/// Takes a secret's check out of [`KeyCache::checking`] when its last
/// request is done with it, answered or cancelled.
struct Checking<'a> {
    cache: &'a KeyCache,
    hash: [u8; 32],
    /// Taken (and dropped) under the map's lock when the request is done.
    check: Option<Arc<Check>>,
}

impl Checking<'_> {
    fn check(&self) -> &Check {
        self.check.as_ref().expect("held until dropped")
    }
}

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        let mut checking = self
            .cache
            .checking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(check) = self.check.take() else {
            return;
        };
        // Only this check's entry, once it has an answer (later requests then
        // read the cache or check again) or no request is left waiting for it
        // (the map's reference and this one). This reference goes while the
        // lock is held, so that two requests let go of one check at once
        // cannot each count the other's and both leave it in the map (found
        // by a review of the change).
        if checking
            .get(&self.hash)
            .is_some_and(|c| Arc::ptr_eq(c, &check))
            && (check.initialized() || Arc::strong_count(&check) <= 2)
        {
            checking.remove(&self.hash);
        }
        drop(check);
    }
}

/// Longest life of a cache entry while the invalidation listener is down
/// (changes made elsewhere then go unseen): the server's default `ttl`.
pub const UNLISTENED_TTL: Duration = Duration::from_secs(1);

/// Most keys kept at once (about 0.6 KiB each with the indexes by tenant
/// and key, about 0.14 KiB of it: some 50 MB at most); past it,
/// expired entries go first, then everything. A server with a million
/// tenants' keys in use re-verifies the ones it dropped.
pub const KEY_CACHE_CAPACITY: usize = 80_000;

struct CachedKey {
    hash: [u8; 32],
    identity: Arc<KeyIdentity>,
}

impl KeyCache {
    /// An empty cache whose entries live `ttl`, told of nothing but this
    /// instance's own changes.
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: TaggedCache::new(KEY_CACHE_CAPACITY, ttl, None),
            checking: Mutex::default(),
        }
    }

    /// An empty cache whose entries live `ttl` while `invalidations` listens,
    /// at most [`UNLISTENED_TTL`] while it does not. Feed it with
    /// [`KeyCache::apply`] ([`crate::Tenantry::start`] does).
    pub fn with_invalidations(ttl: Duration, invalidations: &Invalidations) -> Self {
        Self {
            entries: TaggedCache::new(KEY_CACHE_CAPACITY, ttl, listening(invalidations)),
            checking: Mutex::default(),
        }
    }

    fn get(&self, secret: &ApiKeySecret) -> Option<Arc<KeyIdentity>> {
        self.entries.get(secret.prefix(), |key| {
            let unexpired = key
                .identity
                .expires_at
                .is_none_or(|e| e > chrono::Utc::now());
            (unexpired && secret.matches_hash(&key.hash)).then(|| key.identity.clone())
        })
    }

    pub(crate) async fn verify(
        &self,
        db: &Database,
        secret: &ApiKeySecret,
    ) -> Result<Option<Arc<KeyIdentity>>, ApiError> {
        if let Some(hit) = self.get(secret) {
            return Ok(Some(hit));
        }
        self.join(secret.sha256())
            .check()
            .get_or_init(|| self.check(db, secret))
            .await
            .clone()
    }

    /// A request's hold on the check of the secret whose SHA-256 is
    /// `hash`: the one under way, or a new one.
    fn join(&self, hash: [u8; 32]) -> Checking<'_> {
        let check = self
            .checking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(hash)
            .or_default()
            .clone();
        Checking {
            cache: self,
            hash,
            check: Some(check),
        }
    }

    /// Checks `secret` in the database and keeps what it finds.
    async fn check(
        &self,
        db: &Database,
        secret: &ApiKeySecret,
    ) -> Result<Option<Arc<KeyIdentity>>, ApiError> {
        // A check that ended just before this one began kept its answer.
        if let Some(hit) = self.get(secret) {
            return Ok(Some(hit));
        }
        // The tenant this very secret belonged to when last checked, if the
        // cache still holds that entry: its check waits in that tenant's
        // share of the pool (a hint for where to wait, nothing more).
        let last_tenant = self.entries.get_any_age(secret.prefix(), |key| {
            secret
                .matches_hash(&key.hash)
                .then_some(key.identity.tenant_id)
        });
        let ticket = self.entries.ticket();
        match db.verify_key_known_to(secret.expose(), last_tenant).await? {
            Some(identity) => {
                let identity = Arc::new(identity);
                // Kept unless a removal of this key or its tenant came while
                // it was read (it may have been about what was read): then
                // this request is answered with it, and the next reads again.
                self.entries.insert(
                    ticket,
                    secret.prefix().into(),
                    CachedKey {
                        hash: secret.sha256(),
                        identity: identity.clone(),
                    },
                    Tag::of(identity.tenant_id),
                    Some(Tag::of(identity.key_id)),
                );
                Ok(Some(identity))
            }
            None => {
                // Only forget an entry that belongs to this very key: a forged
                // secret with a real prefix must not evict the real key.
                self.entries
                    .remove_if(secret.prefix(), |key| secret.matches_hash(&key.hash));
                Ok(None)
            }
        }
    }

    /// Forgets one key (revoked or rotated here).
    pub fn forget_key(&self, key: KeyId) {
        self.apply(Invalidation::key(key));
    }

    /// Forgets every key of a tenant (status, roles or permissions changed here).
    pub fn forget_tenant(&self, tenant: TenantId) {
        self.apply(Invalidation::tenant(tenant));
    }

    /// Forgets what `invalidation` names: one key; every key of a tenant (its
    /// status, settings, place in the hierarchy, roles' permissions or
    /// members' roles changed, and any key of it may hold other permissions
    /// now: a tenant's keys are few, and finding the affected ones would take
    /// the database's knowledge of who holds which role); or everything. In
    /// time proportional to the entries dropped, whatever the cache holds.
    pub fn apply(&self, invalidation: Invalidation) {
        self.entries.apply(invalidation);
        // A request that comes after the change checks afresh: joining a
        // check begun before it, it was answered with what the database said
        // before the change (a key revoked here a moment ago accepted: found
        // by a review of the change). Requests already waiting on such a
        // check are answered by it, as its own request is.
        self.checking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// How many keys are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where each impersonation token's check waits: the tenant its session
/// acted in when it was last checked. Such tokens are checked in the
/// database at every request (never cached, so that ending a session takes
/// effect at once); waiting in the lane every unknown credential shares, a
/// tenant's own session token, sent in a flood, filled that lane for every
/// tenant (found by a review of noisy neighbours). A hint of where to wait,
/// never of the answer; forgotten when a check finds nothing.
pub(crate) struct ImpersonationLanes {
    by_token: Mutex<HashMap<[u8; 32], TenantId>>,
}

/// Most tokens remembered; past it the map starts again empty.
const IMPERSONATION_LANES_CAPACITY: usize = 100_000;

impl ImpersonationLanes {
    pub(crate) fn new() -> Self {
        Self {
            by_token: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], TenantId>> {
        self.by_token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session behind `token`, checked in the share of the tenant it
    /// last acted in (else in the lane of unknown credentials).
    pub(crate) async fn verify(
        &self,
        db: &Database,
        token: &str,
    ) -> Result<Option<ImpersonationIdentity>, tenantry_db::DbError> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let last_tenant = self.lock().get(&hash).copied();
        let session = db.verify_impersonation_known_to(token, last_tenant).await?;
        let mut by_token = self.lock();
        match &session {
            Some(session) => {
                if by_token.len() >= IMPERSONATION_LANES_CAPACITY && !by_token.contains_key(&hash) {
                    by_token.clear();
                }
                by_token.insert(hash, session.tenant_id);
            }
            None => {
                by_token.remove(&hash);
            }
        }
        Ok(session)
    }
}

/// The flag a cache reads to trust its entries for less while the
/// invalidation listener is down; `None` when no listener is enabled.
pub(crate) fn listening(invalidations: &Invalidations) -> Option<ListeningFlag> {
    invalidations
        .is_enabled()
        .then(|| invalidations.listening_flag())
}

/// Per-tenant rate limiters built from the tenant's settings: one for every
/// request (`rate_limit_per_second`), one for creating children
/// (`child_creation_rate_per_second`).
#[derive(Default)]
pub struct RateLimits {
    requests: Mutex<Limiters>,
    child_creations: Mutex<Limiters>,
}

/// A rate as a person reads it: `2.5`, and `1e-300` rather than a 0 followed
/// by 300 digits (found by a new user's review).
fn rate_text(rate: f64) -> String {
    if (1e-3..1e15).contains(&rate) {
        rate.to_string()
    } else {
        format!("{rate:e}")
    }
}

impl RateLimits {
    /// Err(429) when the tenant's `rate_limit_per_second` (burst `rate_limit_burst`) is exhausted.
    pub(crate) fn check(
        &self,
        tenant: TenantId,
        settings: &TenantSettings,
    ) -> Result<(), ApiError> {
        let Some(rate) = settings.rate_limit_per_second() else {
            return Ok(());
        };
        // The rate is > 0 and finite (parsed); the default burst is the rate, rounded up.
        let burst = settings
            .rate_limit_burst()
            .unwrap_or_else(|| rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
        take(&self.requests, tenant, rate, burst).map_err(|wait| {
            ApiError::rate_limited(
                format!(
                    "this tenant may make {} requests per second (burst {burst})",
                    rate_text(rate)
                ),
                wait,
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
        take(&self.child_creations, tenant, rate, burst).map_err(|wait| {
            ApiError::rate_limited(
                format!(
                    "this tenant may create {} child tenants per second (burst {burst})",
                    rate_text(rate)
                ),
                wait,
            )
            .with_field("settings.child_creation_rate_per_second")
        })
    }

    /// How many tenants' limiters are held (requests, child creations).
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let count = |limiters: &Mutex<Limiters>| {
            limiters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .by_tenant
                .len()
        };
        (count(&self.requests), count(&self.child_creations))
    }
}

/// One kind of limiter for every tenant that used it lately. A limiter left
/// alone long enough to refill its whole burst is as good as a new one, so a
/// sweep drops those once the map has doubled since the last: without it,
/// every tenant ever served kept its limiters for the process's life.
#[derive(Default)]
struct Limiters {
    by_tenant: HashMap<TenantId, Limiter>,
    sweep: SweepSchedule,
}

struct Limiter {
    /// The (rate bits, burst) it was built from.
    signature: (u64, u32),
    limiter: Arc<DefaultDirectRateLimiter>,
    /// When a cell was last asked for.
    used: Instant,
    /// How long an emptied limiter takes to be full again.
    refill: Duration,
}

/// Takes one cell from the tenant's limiter in `limiters`, (re)built when its
/// rate or burst changed; refused, how long until a cell is free.
fn take(
    limiters: &Mutex<Limiters>,
    tenant: TenantId,
    rate: f64,
    burst: u32,
) -> Result<(), Duration> {
    let signature = (rate.to_bits(), burst);
    let now = Instant::now();
    let limiter = {
        // A panic elsewhere must not turn every later rate-limited request into one.
        let mut limiters = limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !limiters.by_tenant.contains_key(&tenant) && limiters.sweep.due(limiters.by_tenant.len())
        {
            limiters
                .by_tenant
                .retain(|_, held| now.saturating_duration_since(held.used) < held.refill);
            let left = limiters.by_tenant.len();
            limiters.sweep.swept(left);
        }
        let held = limiters
            .by_tenant
            .entry(tenant)
            .or_insert_with(|| Limiter::new(signature, rate, burst, now));
        if held.signature != signature {
            *held = Limiter::new(signature, rate, burst, now);
        }
        held.used = now;
        held.limiter.clone()
    };
    limiter
        .check()
        .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
}

impl Limiter {
    fn new(signature: (u64, u32), rate: f64, burst: u32, now: Instant) -> Self {
        let (limiter, refill) = limiter(rate, burst);
        Self {
            signature,
            limiter: Arc::new(limiter),
            used: now,
            refill,
        }
    }
}

/// Longest period between two requests of a rate limit: any slower rate (settings
/// accept every positive number) means one request per ten years.
const MAX_PERIOD: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A limiter of `rate` cells per second and `burst` at once, and how long it
/// takes to refill its whole burst.
fn limiter(rate: f64, burst: u32) -> (DefaultDirectRateLimiter, Duration) {
    // governor keeps period × burst in u64 nanoseconds: bound both so that no
    // setting can panic or overflow it (a tiny rate once panicked here).
    let period = Duration::try_from_secs_f64(1.0 / rate)
        .unwrap_or(MAX_PERIOD)
        .clamp(Duration::from_nanos(1), MAX_PERIOD);
    let period_nanos = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
    let max_burst = u32::try_from(u64::MAX / 4 / period_nanos).unwrap_or(u32::MAX);
    let burst = NonZeroU32::new(burst.clamp(1, max_burst.max(1))).expect("burst >= 1");
    let quota = Quota::with_period(period)
        .expect("non-zero period")
        .allow_burst(burst);
    (
        DefaultDirectRateLimiter::direct(quota),
        period.saturating_mul(burst.get()),
    )
}

/// The token of an `Authorization: Bearer <token>` header, if any. Two or
/// more `Authorization` headers name no one: which one counts would be the
/// server's guess (and a proxy's may differ).
pub fn bearer(parts: &Parts) -> Option<&str> {
    let mut values = parts
        .headers
        .get_all(axum::http::header::AUTHORIZATION)
        .iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Who a tenant request comes from.
#[derive(Clone)]
enum Credential {
    /// A tenant API key.
    Key(Arc<KeyIdentity>),
    /// A person signed in with the identity provider, member of the tenant.
    Member {
        token: Arc<VerifiedToken>,
        member: Arc<MemberIdentity>,
    },
    /// An impersonation session: someone acting as a member.
    Impersonation(Arc<ImpersonationIdentity>),
}

/// A key's allowed source: a network (`203.0.113.0/24`) or a single address
/// (`127.0.0.1`, `::1`), as keys are created with and PostgreSQL prints them.
pub fn parse_network(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .ok()
}

/// Whether `addr` is inside one of `cidrs` (an entry that does not parse
/// matches nothing). Both sides compare as IPv4 where they are IPv4-mapped
/// IPv6: a client is unmapped, and so is a network within `::ffff:0:0/96`
/// (`::ffff:127.0.0.1` was accepted for a key and then matched no client,
/// found by a new user's review).
fn source_allowed(cidrs: &[String], addr: std::net::IpAddr) -> bool {
    let addr = crate::serve::unmapped(addr);
    cidrs
        .iter()
        .any(|c| parse_network(c).is_some_and(|net| unmapped_network(net).contains(&addr)))
}

/// An IPv4-mapped IPv6 network (`::ffff:203.0.113.0/120`) as the IPv4 one
/// it stands for (`203.0.113.0/24`); any other network as it is.
fn unmapped_network(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .network()
            .to_ipv4_mapped()
            .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
            .map_or(net, ipnet::IpNet::V4),
        other => other,
    }
}

/// A request made with a tenant API key, or by a person who is a member of
/// the tenant the request names: acts as that tenant (and member).
pub struct TenantCaller {
    db: Database,
    credential: Credential,
    slot: Option<LogSlot>,
    keys: Arc<KeyCache>,
    members: Arc<MemberCache>,
    limits: Arc<RateLimits>,
    /// The request's `Idempotency-Key` and fingerprint ([`crate::idempotency::middleware`]).
    idempotency: Option<Arc<crate::idempotency::PendingIdempotency>>,
    /// The request's turn among its tenant's requests in flight, held until
    /// the handler is done with the caller.
    _in_flight: Option<Box<tenantry_db::turns::Turn>>,
}

impl TenantCaller {
    /// Takes the request's turn among its tenant's requests in flight
    /// (`in_flight`: none without a cap); Err(429) while they are all taken.
    fn take_in_flight_turn(
        &mut self,
        in_flight: Option<&Arc<tenantry_db::turns::TenantTurns>>,
    ) -> Result<(), ApiError> {
        let Some(in_flight) = in_flight else {
            return Ok(());
        };
        if let Some(turn) = in_flight.try_take(self.tenant()) {
            // Under the request log's layer, the turn lasts until the answer
            // is sent (LogSlot::hold_turn); without it, until the handler is
            // done with the caller.
            match &self.slot {
                Some(slot) => slot.hold_turn(turn),
                None => self._in_flight = Some(Box::new(turn)),
            }
            return Ok(());
        }
        Err(ApiError::rate_limited(
            format!(
                "this tenant has {} requests in flight, the most this server takes of one tenant at \
                 once (max_requests_in_flight_per_tenant); send the next when one is answered",
                in_flight.per_tenant()
            ),
            Duration::from_secs(1),
        ))
    }

    /// The caller's tenant. Nothing in a request body, query or path overrides it.
    pub fn tenant(&self) -> TenantId {
        match &self.credential {
            Credential::Key(k) => k.tenant_id,
            Credential::Member { member, .. } => member.tenant_id,
            Credential::Impersonation(s) => s.tenant_id,
        }
    }

    /// The acting member: a person's, or the one a key is bound to.
    pub fn user(&self) -> Option<UserId> {
        match &self.credential {
            Credential::Key(k) => k.user_id,
            Credential::Member { member, .. } => Some(member.user_id),
            Credential::Impersonation(s) => Some(s.user_id),
        }
    }

    /// Who acts as the member, when the request comes from an impersonation session.
    pub fn impersonation(&self) -> Option<&ImpersonationIdentity> {
        match &self.credential {
            Credential::Impersonation(s) => Some(s),
            _ => None,
        }
    }

    fn settings(&self) -> &TenantSettings {
        match &self.credential {
            Credential::Key(k) => &k.tenant_settings,
            Credential::Member { member, .. } => &member.tenant_settings,
            Credential::Impersonation(s) => &s.tenant_settings,
        }
    }

    /// Err(429 `rate_limited`, with Retry-After) when the tenant creates
    /// children faster than its `child_creation_rate_per_second`.
    pub fn check_child_creation(&self) -> Result<(), ApiError> {
        self.limits
            .check_child_creation(self.tenant(), self.settings())
    }

    /// The key's identity, when the caller is a key.
    pub fn key(&self) -> Option<&KeyIdentity> {
        match &self.credential {
            Credential::Key(k) => Some(k),
            _ => None,
        }
    }

    /// The person's membership and verified token, when the caller is a person.
    pub fn member(&self) -> Option<(&MemberIdentity, &VerifiedToken)> {
        match &self.credential {
            Credential::Member { member, token } => Some((member, token)),
            _ => None,
        }
    }

    /// Permission names the caller holds.
    pub fn permissions(&self) -> &[String] {
        match &self.credential {
            Credential::Key(k) => &k.permissions,
            Credential::Member { member, .. } => &member.permissions,
            Credential::Impersonation(s) => &s.permissions,
        }
    }

    /// 403 unless the caller holds `permission`. The tenant's own key holds
    /// every permission defined: one it lacks is defined nowhere, which is
    /// the application's mistake (a name the routes require that no
    /// migration of yours gave `tenantry.define_permission`): 503, and an
    /// error log that says so, where a 403 blamed the key (found by a review
    /// of the Rust path).
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if self.permissions().iter().any(|p| p == permission) {
            Ok(())
        } else if matches!(&self.credential, Credential::Key(k) if k.unbound) {
            tracing::error!(
                permission,
                "a route requires a permission no migration defined: SELECT tenantry.define_permission(name, description) in your migrations (or the route names it wrongly)"
            );
            Err(ApiError::misconfigured())
        } else {
            Err(ApiError::new(
                ProblemCode::PermissionDenied,
                match &self.credential {
                    Credential::Key(_) => format!("this key lacks the permission {permission}"),
                    Credential::Member { .. } => {
                        format!("your roles in this tenant lack the permission {permission}")
                    }
                    Credential::Impersonation(_) => format!(
                        "an impersonation session does not hold the permission {permission}"
                    ),
                },
            ))
        }
    }

    /// Who makes this request, as idempotency keys tell callers apart: the
    /// key, the member, or the member and who impersonates them.
    fn caller_label(&self) -> String {
        match &self.credential {
            Credential::Key(k) => format!("key:{}", k.key_id),
            Credential::Member { member, .. } => format!("user:{}", member.user_id),
            Credential::Impersonation(s) => {
                format!("user:{} impersonated by {}", s.user_id, s.impersonator)
            }
        }
    }

    /// The tenant context of this request, restricted to what the caller holds.
    fn context(&self) -> TenantContext {
        // The caller's permissions travel with the scope: the library refuses
        // to grant, assign or mint more than it holds, and the database's
        // write policies check them (tenantry.authorize).
        match &self.credential {
            // The tenant's own (unbound) key holds every permission, present
            // and future, as the owner does; any other holds its list.
            Credential::Key(k) if k.unbound => TenantContext::new(k.tenant_id)
                .with_user(k.user_id)
                .with_actor(format!("key:{}", k.key_id)),
            Credential::Key(k) => TenantContext::new(k.tenant_id)
                .with_user(k.user_id)
                .with_actor(format!("key:{}", k.key_id))
                .with_permissions(k.permissions.iter().cloned().collect()),
            Credential::Member { member, .. } => {
                let ctx = TenantContext::new(member.tenant_id)
                    .with_user(Some(member.user_id))
                    .with_actor(format!("user:{}", member.user_id));
                // The owner holds every permission, present and future.
                if member.is_owner {
                    ctx
                } else {
                    ctx.with_permissions(member.permissions.iter().cloned().collect())
                }
            }
            Credential::Impersonation(s) => TenantContext::new(s.tenant_id)
                .with_user(Some(s.user_id))
                .with_actor(format!("user:{}", s.user_id))
                .with_impersonator(s.impersonator.clone())
                .with_permissions(s.permissions.iter().cloned().collect()),
        }
    }

    /// Opens the tenant-scoped transaction for this request (reads).
    pub async fn scope(&self) -> Result<TenantScope, ApiError> {
        Ok(self.db.tenant(self.context()).await?)
    }

    /// Runs a read on a scope of its own (a read that commits it, such as
    /// `get_resource_and_commit`), and once more on a fresh scope when the
    /// database refused the first as contention: typically a route cached
    /// before the tenant changed tiers, refused before anything was read,
    /// which the retry takes afresh. Answers 503 only when both were
    /// refused. For reads: `read` may run twice.
    pub async fn read<T, Fut>(&self, read: impl Fn(TenantScope) -> Fut) -> Result<T, ApiError>
    where
        Fut: std::future::Future<Output = Result<T, tenantry_db::DbError>>,
    {
        match read(self.scope().await?).await {
            Err(tenantry_db::DbError::Contention(_)) => Ok(read(self.scope().await?).await?),
            other => Ok(other?),
        }
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

    /// [`TenantCaller::write`] answering `reply` with its value: under the
    /// request's `Idempotency-Key`, the key is claimed and the response stored
    /// in the write's own transaction, and a retry of a committed request is
    /// answered with the stored response without writing again
    /// ([`tenantry_db::Database::in_tenant_idempotent`]).
    pub async fn write_response<A: Sync + ?Sized, T: serde::Serialize>(
        &self,
        reply: Reply,
        args: &A,
        work: impl for<'s> FnMut(&'s mut TenantScope, &'s A) -> ScopeFuture<'s, T>,
    ) -> Result<Written<T>, ApiError> {
        let request = self
            .idempotency
            .as_deref()
            .map(|pending| pending.request().map(|r| r.by(&self.caller_label())))
            .transpose()?;
        let outcome = self
            .db
            .in_tenant_idempotent(&self.context(), request.as_ref(), args, work, |value| {
                reply.stored(value)
            })
            .await?;
        Ok(reply.written(outcome))
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

    /// The membership cache, to drop a tenant's entries after changes to its members.
    pub fn member_cache(&self) -> &MemberCache {
        &self.members
    }

    /// Drops everything this server holds of `tenant` after a change made
    /// through it (its keys, its members' memberships, its cached context
    /// part), at once: other servers hear of it through the invalidation
    /// feed, and an app that listens to none would otherwise keep serving
    /// the old state for its caches' life.
    pub fn forget_tenant(&self, tenant: TenantId) {
        forget_everywhere(&self.db, &self.keys, &self.members, tenant);
    }
}

/// [`TenantCaller::forget_tenant`] and [`crate::Tenantry::forget_tenant`].
pub(crate) fn forget_everywhere(
    db: &Database,
    keys: &KeyCache,
    members: &MemberCache,
    tenant: TenantId,
) {
    keys.forget_tenant(tenant);
    members.forget_tenant(tenant);
    db.forget_tenant_contexts(Some(tenant));
}

impl<S> FromRequestParts<S> for TenantCaller
where
    Tenantry: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tenantry = Tenantry::from_ref(state);
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        if tenantry
            .admin_token
            .as_ref()
            .is_some_and(|admin| admin.matches(token))
        {
            return Err(ApiError::new(
                ProblemCode::WrongCredential,
                "this route acts in a tenant: it needs a tenant API key, a person's token or an impersonation token, not the admin token",
            ));
        }
        let mut elsewhere = false;
        let (credential, status) = if let Some(secret) = ApiKeySecret::parse(token) {
            let identity = tenantry
                .keys
                .verify(&tenantry.db, &secret)
                .await?
                .ok_or_else(ApiError::invalid_token)?;
            // Checked once the request is logged under the key (below): a key
            // used from elsewhere is the tenant's to see in its request log.
            if let Some(cidrs) = &identity.allowed_cidrs {
                // The client tenantry_axum::serve tells (behind a trusted
                // proxy, whom it forwarded for), else the peer.
                let source = crate::serve::ClientAddr::of_request(&parts.extensions).0;
                // Without the client's address (an app served without connect
                // info, a trusted proxy that did not say) a key limited to
                // addresses is refused: fail closed.
                elsewhere = !source.is_some_and(|ip| source_allowed(cidrs, ip));
            }
            let status = identity.tenant_status;
            (Credential::Key(identity), status)
        } else if token.starts_with("timp_") {
            let session = tenantry
                .impersonations
                .verify(&tenantry.db, token)
                .await?
                .ok_or_else(ApiError::invalid_token)?;
            let status = session.tenant_status;
            (Credential::Impersonation(Arc::new(session)), status)
        } else if let (Some(verifier), true) = (tenantry.jwt.as_ref(), looks_like_jwt(token)) {
            let token = tenantry.tokens.verify(verifier, token).await?;
            let tenant = requested_tenant(parts, &token)?;
            let member = tenantry
                .members
                .get(&tenantry.db, token.user_id, tenant)
                .await?
                .ok_or_else(|| not_a_member(tenant))?;
            let status = member.tenant_status;
            (Credential::Member { token, member }, status)
        } else {
            return Err(ApiError::invalid_token());
        };
        let mut caller = Self {
            db: tenantry.db,
            credential,
            slot: parts.extensions.get::<LogSlot>().cloned(),
            keys: tenantry.keys,
            members: tenantry.members,
            limits: tenantry.limits,
            idempotency: parts.extensions.get().cloned(),
            _in_flight: None,
        };
        // A deleted tenant's credential is answered as no credential at
        // all, and logged as such; a suspended one's refusal is the tenant's
        // request, logged under it (an operator finds it by its request id).
        if status == TenantStatus::Deleted {
            return Err(ApiError::invalid_token());
        }
        if let Some(slot) = &caller.slot {
            slot.set_caller(
                caller.tenant(),
                caller.user(),
                caller.key().map(|k| k.key_id),
                caller
                    .impersonation()
                    .map(|s| Arc::from(s.impersonator.as_str())),
            );
        }
        if elsewhere {
            return Err(ApiError::new(
                ProblemCode::Forbidden,
                "this key may not be used from this address",
            ));
        }
        if status == TenantStatus::Suspended {
            return Err(ApiError::new(
                ProblemCode::TenantSuspended,
                format!("tenant {} is suspended", caller.tenant()),
            ));
        }
        let admitted = caller
            .take_in_flight_turn(tenantry.in_flight.as_ref())
            .and_then(|()| caller.limits.check(caller.tenant(), caller.settings()));
        if let Err(refused) = admitted {
            if let Some(slot) = &caller.slot {
                slot.set_rate_limited();
            }
            return Err(refused);
        }
        // After the tenant's status (a deleted tenant's key stays a 401,
        // whatever it is sent with) and its rate limit.
        // A key or an impersonation acts in its own tenant: a request that
        // names another in X-Tenant-Id was meant for other credentials, and
        // serving it from this tenant would answer the wrong tenant's data.
        let own = match &caller.credential {
            Credential::Key(identity) => Some(identity.tenant_id),
            Credential::Impersonation(session) => Some(session.tenant_id),
            Credential::Member { .. } => None,
        };
        if let Some(own) = own {
            if named_tenant(parts)?.is_some_and(|named| named != own) {
                return Err(ApiError::invalid(
                    "X-Tenant-Id",
                    "X-Tenant-Id names a tenant this credential does not act in: an API key or an \
                     impersonation acts in its own tenant only; leave the header out or name that tenant",
                ));
            }
        }
        // Last: a precondition counts only for a request that would
        // otherwise have been served.
        crate::preconditions::UnmetPrecondition::refuse(parts)?;
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry_db::sweep::SWEEP_FROM;

    #[test]
    fn a_rate_is_written_as_a_person_reads_it() {
        assert_eq!(rate_text(10.0), "10");
        assert_eq!(rate_text(2.5), "2.5");
        assert_eq!(rate_text(1e-300), "1e-300");
        assert_eq!(rate_text(1e300), "1e300");
    }

    #[test]
    fn a_key_limited_to_an_ipv4_mapped_address_admits_that_ipv4_client_and_no_other() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let mapped = ["::ffff:127.0.0.1".to_owned()];
        assert!(source_allowed(&mapped, ip("127.0.0.1")));
        assert!(source_allowed(&mapped, ip("::ffff:127.0.0.1")));
        assert!(!source_allowed(&mapped, ip("127.0.0.2")));
        let net = ["::ffff:203.0.113.0/120".to_owned()];
        assert!(source_allowed(&net, ip("203.0.113.77")));
        assert!(!source_allowed(&net, ip("203.0.114.1")));
        // A plain IPv6 network is not read as IPv4.
        assert!(!source_allowed(&["::/0".to_owned()], ip("10.0.0.1")));
        assert!(source_allowed(&["::/0".to_owned()], ip("2001:db8::1")));
        assert!(source_allowed(
            &["10.0.0.0/8".to_owned()],
            ip("::ffff:10.1.2.3")
        ));
    }

    fn tenant(n: u128) -> TenantId {
        TenantId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn settings(value: serde_json::Value) -> TenantSettings {
        TenantSettings::parse(&value).expect("valid settings")
    }

    #[test]
    fn two_requests_letting_go_of_one_unanswered_check_at_once_leave_no_entry() {
        let cache = KeyCache::new(Duration::from_secs(1));
        // Both hold the check of one secret, then let go at the same moment,
        // many times over (the race left about one entry in 15,000).
        let barrier = std::sync::Barrier::new(2);
        let request = || {
            for n in 0..100_000u32 {
                let mut hash = [0; 32];
                hash[..4].copy_from_slice(&n.to_le_bytes());
                let held = cache.join(hash);
                barrier.wait();
                drop(held);
                barrier.wait();
            }
        };
        std::thread::scope(|s| {
            s.spawn(request);
            request();
        });
        assert!(cache.checking.lock().unwrap().is_empty());
    }

    #[test]
    fn a_change_makes_later_requests_check_afresh_instead_of_joining_an_earlier_check() {
        let cache = KeyCache::new(Duration::from_secs(1));
        let hash = [7; 32];
        let before = cache.join(hash);
        cache.forget_key(tenantry_db::KeyId::from_uuid(uuid::Uuid::from_u128(1)));
        let after = cache.join(hash);
        assert!(!Arc::ptr_eq(
            before.check.as_ref().unwrap(),
            after.check.as_ref().unwrap()
        ));
        drop((before, after));
        assert!(cache.checking.lock().unwrap().is_empty());
    }

    #[test]
    fn limiters_of_tenants_gone_quiet_are_swept_once_the_map_has_doubled() {
        let limits = RateLimits::default();
        // A burst of one cell refills within a microsecond.
        let fast =
            settings(serde_json::json!({"rate_limit_per_second": 1000000, "rate_limit_burst": 1}));
        for n in 0..SWEEP_FROM as u128 {
            limits.check(tenant(n), &fast).expect("first request");
        }
        assert_eq!(limits.held().0, SWEEP_FROM);
        std::thread::sleep(Duration::from_millis(20));
        for n in 0..(3 * SWEEP_FROM) as u128 {
            limits
                .check(tenant(1_000_000 + n), &fast)
                .expect("first request");
        }
        // Every sweep dropped all but the tenants of the last few milliseconds:
        // the map never held the four thousand tenants served.
        let (held, _) = limits.held();
        assert!(held <= 2 * SWEEP_FROM, "{held} limiters held");
    }

    #[test]
    fn a_throttled_tenants_limiter_survives_a_sweep_and_keeps_refusing() {
        let limits = RateLimits::default();
        let slow =
            settings(serde_json::json!({"rate_limit_per_second": 0.01, "rate_limit_burst": 1}));
        let throttled = tenant(u128::MAX);
        limits.check(throttled, &slow).expect("its one cell");
        assert!(limits.check(throttled, &slow).is_err());
        let fast =
            settings(serde_json::json!({"rate_limit_per_second": 1000000, "rate_limit_burst": 1}));
        for n in 0..(3 * SWEEP_FROM) as u128 {
            limits.check(tenant(n), &fast).expect("first request");
        }
        assert!(
            limits.check(throttled, &slow).is_err(),
            "a sweep handed the throttled tenant a full limiter"
        );
        // The child-creation limiters are a map of their own.
        assert_eq!(limits.held().1, 0);
    }
}
