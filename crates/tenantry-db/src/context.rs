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

use crate::TenantId;

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
    /// Unix milliseconds after which the database refuses it.
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
    /// Signs sessions and pooled contexts; `None`: tenant transactions are refused.
    pub(crate) key: Option<ContextKey>,
    pub(crate) parts: PartCache,
    /// [`crate::Timeouts::reply_timeout`].
    pub(crate) reply_timeout: Option<std::time::Duration>,
}

/// Tenants' context parts (schema and visible subtree) as the database last
/// gave them, for a short time, bounded in size. Dropped on every change this
/// process makes to tenants, and by the server on invalidations.
pub(crate) struct PartCache {
    entries: Mutex<HashMap<TenantId, (Arc<str>, Instant)>>,
    /// Bumped by every removal: a part read from the database before a
    /// removal (in flight while it happened) is not cached after it.
    generation: AtomicU64,
    ttl: Duration,
    capacity: usize,
}

impl PartCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            ttl,
            capacity,
        }
    }

    /// The generation to pass to [`PartCache::put`] for a part about to be read.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn get(&self, tenant: TenantId) -> Option<Arc<str>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&tenant)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(part, _)| part.clone())
    }

    /// Caches `part`, read from the database after [`PartCache::generation`]
    /// returned `generation`, unless something was removed since.
    pub(crate) fn put(&self, tenant: TenantId, part: &str, generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(&tenant) {
            // Bounded: expired entries go first, everything if that is not enough.
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(tenant, (Arc::from(part), Instant::now()));
    }

    pub(crate) fn remove(&self, tenant: TenantId) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(&tenant);
    }

    pub(crate) fn clear(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(cache.entries.lock().unwrap().len() <= 2);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(c), None);
    }
}
