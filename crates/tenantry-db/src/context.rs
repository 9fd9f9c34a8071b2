//! Proving a tenant context to the database (docs/security.md, "The tenant context"): the context key (HMAC-SHA-256), the commit-reveal chain of each server connection, signed contexts for pooled connections, and the cache of tenants' context parts.

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::{invalidation::Tag, sweep::SweepSchedule, TenantId};

/// How long a signed context or a session opening stays valid: the server's
/// and the database's clocks must agree within it.
pub(crate) const SIGNED_LIFETIME: Duration = Duration::from_secs(60);

/// A key shared by the database (`tenantry.context_keys`, readable by the
/// owner role only) and the servers, with which a server proves the tenant
/// context of its transactions. Whoever holds it can act for any tenant:
/// keep it as secret as a superuser password.
#[derive(Clone, PartialEq, Eq)]
pub struct ContextKey {
    id: i32,
    secret: [u8; 32],
}

impl ContextKey {
    /// A key with its id in `tenantry.context_keys`.
    pub fn new(id: i32, secret: [u8; 32]) -> Self {
        Self { id, secret }
    }

    /// Its id in `tenantry.context_keys`.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The newest key of a database, read by a role that may (a superuser or
    /// the owner: `tenantry context-key`, the embedded cluster, the test
    /// harness); `None` before the migrations made one.
    pub async fn newest(
        client: &tokio_postgres::Client,
    ) -> Result<Option<Self>, tokio_postgres::Error> {
        let row = client
            .query_opt(
                "SELECT key_id, secret FROM tenantry.context_keys ORDER BY key_id DESC LIMIT 1",
                &[],
            )
            .await?;
        Ok(row.and_then(|row| {
            let secret: Vec<u8> = row.get(1);
            secret
                .try_into()
                .ok()
                .map(|secret| Self::new(row.get(0), secret))
        }))
    }

    /// The key as configured: `<id>:<64 hex digits>` (the form [`FromStr`] reads).
    pub fn expose(&self) -> String {
        format!("{}:{}", self.id, hex::encode(self.secret))
    }

    /// HMAC-SHA-256 of `message`, as `tenantry.context_mac` computes it (the
    /// messages are documented on the functions that check them).
    pub fn mac(&self, message: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes keys of any length");
        mac.update(message.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// What `tenantry.open_context_session` verifies: the opening of `pid`'s
    /// session, bound to its last draw `nonce` (`tenantry.context_session_nonce`).
    pub(crate) fn open_session(&self, pid: i32, nonce: i64, commitment: &[u8; 32]) -> OpenSession {
        let expires_at = expires_at();
        let mac = self.mac(&format!(
            "open|{pid}|{nonce}|{expires_at}|{}",
            hex::encode(commitment)
        ));
        OpenSession {
            pid,
            nonce,
            expires_at,
            commitment: commitment.to_vec(),
            key_id: self.id,
            mac,
        }
    }

    /// The signature `tenantry.enter_context_signed` verifies for these values.
    pub fn sign_context(&self, signed: &SignedContext) -> Vec<u8> {
        self.mac(&format!(
            "enter|{}|{}|{}|{}|{}|{}|{}|{}",
            signed.pid,
            signed.expires_at,
            signed
                .tenant
                .map(|t| t.as_uuid().to_string())
                .unwrap_or_default(),
            signed
                .user
                .map(|u| u.as_uuid().to_string())
                .unwrap_or_default(),
            hex::encode(signed.actor.as_deref().unwrap_or("")),
            signed
                .grants
                .as_ref()
                .map_or_else(|| "*".to_owned(), |g| g.join(" ")),
            hex::encode(signed.impersonator.as_deref().unwrap_or("")),
            signed.tenant_part.as_deref().unwrap_or("")
        ))
    }
}

impl fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A string that is not a context key (`<id>:<64 hex digits>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a context key is <id>:<64 hex digits> (`tenantry context-key` prints it)")]
pub struct MalformedContextKey;

impl FromStr for ContextKey {
    type Err = MalformedContextKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || MalformedContextKey;
        let (id, secret) = s.trim().split_once(':').ok_or_else(malformed)?;
        let id: i32 = id.parse().map_err(|_| malformed())?;
        let secret: [u8; 32] = hex::decode(secret)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(malformed)?;
        if id <= 0 {
            return Err(malformed());
        }
        Ok(Self::new(id, secret))
    }
}

/// Milliseconds since the Unix epoch at which a signature made now expires.
fn expires_at() -> i64 {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + SIGNED_LIFETIME;
    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
}

/// The arguments of `tenantry.open_context_session`.
pub(crate) struct OpenSession {
    pub pid: i32,
    pub nonce: i64,
    pub expires_at: i64,
    pub commitment: Vec<u8>,
    pub key_id: i32,
    pub mac: Vec<u8>,
}

/// The values `tenantry.enter_context_signed` checks, for programs that sign
/// their own contexts (and the library on pooled connections).
#[derive(Debug, Clone)]
pub struct SignedContext {
    /// The backend it is bound to; 0: any.
    pub pid: i32,
    /// Unix milliseconds after which the database refuses it (at most 7
    /// days ahead: a later expiry is refused as a unit mistake).
    pub expires_at: i64,
    /// The tenant; `None`: an administrative context (`tenantry.admin_context()`).
    pub tenant: Option<TenantId>,
    /// The acting member.
    pub user: Option<crate::UserId>,
    /// The audit actor label.
    pub actor: Option<String>,
    /// The caller's permissions (`tenantry.authorize`); `None`: all of them.
    pub grants: Option<Vec<String>>,
    /// Who acts as the member (an impersonation).
    pub impersonator: Option<String>,
    /// The tenant's part as the database gave it (`None`: the database looks it up).
    pub tenant_part: Option<String>,
}

impl SignedContext {
    /// A context for `tenant` on any backend, valid for a minute.
    pub fn new(tenant: TenantId) -> Self {
        Self {
            tenant: Some(tenant),
            ..Self::admin(None)
        }
    }

    /// An administrative context for `actor` on any backend, valid for a minute.
    pub fn admin(actor: Option<String>) -> Self {
        Self {
            pid: 0,
            expires_at: expires_at(),
            tenant: None,
            user: None,
            actor,
            grants: None,
            impersonator: None,
            tenant_part: None,
        }
    }
}

/// A server connection's commit-reveal chain. The database holds the
/// SHA-256 of `secret`; each transaction reveals it and commits to a fresh
/// one, which becomes the secret once that transaction commits. A secret is
/// revealed once: when the transaction that revealed it rolls back, the
/// database's commitment rolls back too but refuses that secret from then on
/// (its step counter does not roll back), so the session is opened afresh
/// before the connection's next transaction.
pub(crate) struct Chain {
    /// The backend the session is bound to.
    pid: i32,
    secret: [u8; 32],
    pending: Option<[u8; 32]>,
    /// A revealed secret was rolled back: the session must be opened again.
    reopen: bool,
}

impl Chain {
    /// A fresh chain for the backend `pid` and the commitment to open its session with.
    pub(crate) fn start(pid: i32) -> (Self, [u8; 32]) {
        let secret: [u8; 32] = rand::random();
        let commitment = Sha256::digest(secret).into();
        (
            Self {
                pid,
                secret,
                pending: None,
                reopen: false,
            },
            commitment,
        )
    }

    /// The backend the session is bound to.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// The secret to reveal in the next transaction and the commitment to its successor.
    pub(crate) fn next(&mut self) -> ([u8; 32], [u8; 32]) {
        let next: [u8; 32] = rand::random();
        self.pending = Some(next);
        (self.secret, Sha256::digest(next).into())
    }

    /// The transaction that revealed the secret committed.
    pub(crate) fn committed(&mut self) {
        if let Some(next) = self.pending.take() {
            self.secret = next;
        }
    }

    /// The transaction rolled back (or never ran): if it revealed the secret,
    /// the session must be opened again before the next one.
    pub(crate) fn rolled_back(&mut self) {
        if self.pending.take().is_some() {
            self.reopen = true;
        }
    }

    /// The session must be opened again (a revealed secret was rolled back).
    pub(crate) fn needs_reopening(&self) -> bool {
        self.reopen
    }
}

/// What every transaction of a [`crate::Database`] shares to prove its context
/// (and how long it waits for the database's reply).
pub(crate) struct Contexts {
    /// Signs pooled contexts (a pool is never built without it).
    pub(crate) key: ContextKey,
    pub(crate) parts: PartCache,
    /// [`crate::Timeouts::reply_timeout`].
    pub(crate) reply_timeout: Option<std::time::Duration>,
    /// The pool, for a transaction whose first connection an earlier
    /// transaction's SQL spoiled (it takes another).
    pub(crate) connections: Arc<crate::session::Connections>,
    /// How the pool reaches PostgreSQL: a cancel request goes the same way.
    pub(crate) tls: tokio_postgres_rustls::MakeRustlsConnect,
}

/// Tenants' context parts (schema and visible subtree) as the database last
/// gave them, for a short time, bounded in size. A change to tenants drops
/// only the parts it can have changed: those of the changed tenant and of
/// every tenant whose visible subtree holds it ([`PartCache::forget_around`],
/// this process's own changes), or the one a notification names by its tag
/// ([`PartCache::remove_tag`]: the database names every ancestor that is
/// concerned). One tenant's changes never empty the whole cache, which would
/// cost every other tenant's next transaction a round trip more.
pub(crate) struct PartCache {
    entries: Mutex<Parts>,
    /// Bumped by every removal: a part read from the database before a
    /// removal (in flight while it happened) is not cached after it.
    generation: AtomicU64,
    ttl: Duration,
    capacity: usize,
}

#[derive(Default)]
struct Parts {
    by_tenant: HashMap<TenantId, CachedPart>,
    /// The tenant of each entry's tag (notifications name tenants by tag).
    by_tag: HashMap<Tag<TenantId>, TenantId>,
    /// When expired entries are swept.
    sweep: SweepSchedule,
}

struct CachedPart {
    part: Arc<str>,
    at: Instant,
    tag: Tag<TenantId>,
}

impl Parts {
    fn remove(&mut self, tenant: TenantId) {
        if let Some(entry) = self.by_tenant.remove(&tenant) {
            self.by_tag.remove(&entry.tag);
        }
    }

    fn retain(&mut self, keep: impl Fn(&CachedPart) -> bool) {
        self.by_tenant.retain(|_, entry| keep(entry));
        let by_tenant = &self.by_tenant;
        self.by_tag
            .retain(|_, tenant| by_tenant.contains_key(tenant));
    }
}

/// Whether a context part's visible subtree names `hex` (a tenant's 32 hex
/// digits). Ids in it are 32 hex digits between commas, so a match is exact.
fn subtree_names(part: &str, hex: &str) -> bool {
    part.split_once(",v")
        .is_some_and(|(_, subtree)| subtree.contains(hex))
}

impl PartCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Parts::default()),
            generation: AtomicU64::new(0),
            ttl,
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation to pass to [`PartCache::put`] for a part about to be read.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn get(&self, tenant: TenantId) -> Option<Arc<str>> {
        self.lock()
            .by_tenant
            .get(&tenant)
            .filter(|entry| entry.at.elapsed() < self.ttl)
            .map(|entry| entry.part.clone())
    }

    /// How many tenants' parts are held (expired ones included until they are replaced or swept).
    pub(crate) fn len(&self) -> usize {
        self.lock().by_tenant.len()
    }

    /// Caches `part`, read from the database after [`PartCache::generation`]
    /// returned `generation`, unless something was removed since.
    pub(crate) fn put(&self, tenant: TenantId, part: &str, generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let tag = Tag::of(tenant);
        let mut entries = self.lock();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let len = entries.by_tenant.len();
        if entries.sweep.due_within(len, self.capacity) && !entries.by_tenant.contains_key(&tenant)
        {
            // Expired entries go once the cache has doubled since the last
            // sweep: kept until the capacity, they were tens of thousands
            // that every change's `forget_around` searched under the lock
            // (a soak review: child creations 5× slower on a server that had
            // seen 46,000 tenants, another tenant's reads 3 ms → 45–260 ms).
            // Bounded: everything goes if that is not enough.
            let ttl = self.ttl;
            entries.retain(|entry| entry.at.elapsed() < ttl);
            if entries.by_tenant.len() >= self.capacity {
                *entries = Parts::default();
            }
            let left = entries.by_tenant.len();
            entries.sweep.swept(left);
        }
        entries.by_tag.insert(tag, tenant);
        entries.by_tenant.insert(
            tenant,
            CachedPart {
                part: Arc::from(part),
                at: Instant::now(),
                tag,
            },
        );
    }

    /// Drops one tenant's part (its own change, which nobody else's part shows).
    pub(crate) fn remove(&self, tenant: TenantId) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(tenant);
    }

    /// Drops the part of the tenant a notification names by its tag.
    pub(crate) fn remove_tag(&self, tag: Tag<TenantId>) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(tenant) = entries.by_tag.get(&tag).copied() {
            entries.remove(tenant);
        }
    }

    /// Drops the parts a change to `tenant` (its status, place, isolation or
    /// tier, or a child made under it) can have changed: its own and those of
    /// every tenant whose visible subtree holds it, i.e. its ancestors.
    pub(crate) fn forget_around(&self, tenant: TenantId) {
        let hex = tenant.as_uuid().simple().to_string();
        let ttl = self.ttl;
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Expired entries too, while every entry is looked at anyway.
        entries.retain(|entry| entry.at.elapsed() < ttl && !subtree_names(&entry.part, &hex));
    }

    pub(crate) fn clear(&self) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        *entries = Parts::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::SWEEP_FROM;

    #[test]
    fn a_context_key_reads_back_what_it_exposes_and_refuses_malformed_ones() {
        let key = ContextKey::new(3, [7; 32]);
        assert_eq!(key.expose().parse::<ContextKey>().unwrap(), key);
        for bad in [
            "",
            "3",
            "3:zz",
            "0:0707",
            "x:07",
            &format!("-1:{}", hex::encode([7; 32])),
        ] {
            assert!(bad.parse::<ContextKey>().is_err(), "{bad}");
        }
        assert!(!format!("{key:?}").contains("0707"));
    }

    #[test]
    fn the_mac_is_hmac_sha_256_as_other_implementations_compute_it() {
        // Python: hmac.new(bytes([1] * 32), b"message", hashlib.sha256).hexdigest()
        let key = ContextKey::new(1, [1; 32]);
        assert_eq!(
            hex::encode(key.mac("message")),
            "74927dc608f1a5706dd0cb41ba56416718c7aa2f6cf4940c9e08745e05a56e08"
        );
    }

    #[test]
    fn a_chain_moves_on_when_the_revealing_transaction_commits_and_reopens_after_a_rollback() {
        let (mut chain, commitment) = Chain::start(42);
        assert_eq!(chain.pid(), 42);
        let (reveal, next) = chain.next();
        assert_eq!(<[u8; 32]>::from(Sha256::digest(reveal)), commitment);
        chain.committed();
        assert!(!chain.needs_reopening());
        let (after, _) = chain.next();
        assert_eq!(<[u8; 32]>::from(Sha256::digest(after)), next);
        // The database refuses a secret revealed in a rolled-back transaction.
        chain.rolled_back();
        assert!(chain.needs_reopening());
        // A transaction that revealed nothing leaves the chain as it was.
        let (mut quiet, _) = Chain::start(42);
        quiet.rolled_back();
        assert!(!quiet.needs_reopening());
    }

    #[test]
    fn the_part_cache_forgets_after_its_ttl_and_stays_bounded() {
        let cache = PartCache::new(Duration::from_millis(50), 2);
        let [a, b, c] = [1u128, 2, 3].map(|n| TenantId::from_uuid(uuid::Uuid::from_u128(n)));
        cache.put(a, ",stenantry,va", cache.generation());
        assert_eq!(cache.get(a).as_deref(), Some(",stenantry,va"));
        let before = cache.generation();
        cache.remove(a);
        cache.put(a, "stale", before);
        assert_eq!(cache.get(a), None, "read before the removal: not cached");
        cache.put(b, "b", cache.generation());
        cache.put(c, "c", cache.generation());
        assert!(cache.len() <= 2);
        let held = cache.len();
        assert_eq!(cache.lock().by_tag.len(), held);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(c), None);
    }

    #[test]
    fn expired_parts_are_swept_once_the_cache_has_doubled_and_by_any_change() {
        // Long enough that no stall of a loaded machine expires a part
        // between two statements here.
        let cache = PartCache::new(Duration::from_millis(500), 65_536);
        let tenant = |n: usize| TenantId::from_uuid(uuid::Uuid::from_u128(n as u128));
        for n in 0..SWEEP_FROM {
            cache.put(tenant(n), ",stenantry,v", cache.generation());
        }
        std::thread::sleep(Duration::from_millis(600));
        // The next new tenant finds the cache at its sweep: only it is left.
        cache.put(tenant(SWEEP_FROM), ",stenantry,v", cache.generation());
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.lock().by_tag.len(), 1);
        // A change looks at every entry: it drops the expired ones too.
        std::thread::sleep(Duration::from_millis(600));
        cache.put(tenant(0), ",stenantry,v", cache.generation());
        cache.forget_around(tenant(7));
        assert_eq!(cache.len(), 1, "the live part stays, the expired one goes");
        assert!(cache.get(tenant(0)).is_some());
    }

    #[test]
    fn a_change_to_one_tenant_drops_only_its_own_and_its_ancestors_parts() {
        let cache = PartCache::new(Duration::from_secs(60), 100);
        let [root, child, grandchild, stranger] =
            [1u128, 2, 3, 4].map(|n| TenantId::from_uuid(uuid::Uuid::from_u128(n)));
        let hex = |t: TenantId| t.as_uuid().simple().to_string();
        let part = |tenants: &[TenantId]| {
            let subtree: Vec<String> = tenants.iter().map(|&t| hex(t)).collect();
            format!(",stenantry,v{}", subtree.join(","))
        };
        let fill = || {
            cache.put(root, &part(&[root, child, grandchild]), cache.generation());
            cache.put(child, &part(&[child, grandchild]), cache.generation());
            cache.put(grandchild, &part(&[grandchild]), cache.generation());
            cache.put(stranger, &part(&[stranger]), cache.generation());
        };
        fill();
        // A child made under `child` (or `child` suspended, moved, deleted):
        // `child` and `root` see it, `grandchild` and the stranger do not.
        cache.forget_around(child);
        assert_eq!(cache.get(root), None);
        assert_eq!(cache.get(child), None);
        assert!(cache.get(grandchild).is_some());
        assert!(cache.get(stranger).is_some());
        // A schema name that happens to hold the id's digits is not the subtree.
        cache.put(
            root,
            &format!(",st_{},v{}", hex(stranger), hex(root)),
            cache.generation(),
        );
        cache.forget_around(stranger);
        assert!(cache.get(root).is_some());
        assert_eq!(cache.get(stranger), None);
        // A notification names one tenant by its tag: only that part goes.
        fill();
        cache.remove_tag(Tag::of(grandchild));
        assert_eq!(cache.get(grandchild), None);
        for kept in [root, child, stranger] {
            assert!(cache.get(kept).is_some());
        }
        cache.remove_tag(Tag::of(TenantId::from_uuid(uuid::Uuid::from_u128(9))));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.lock().by_tag.len(), 3);
    }
}
