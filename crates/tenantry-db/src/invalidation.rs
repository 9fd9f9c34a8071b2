//! Cache invalidation across server instances: a listener on a dedicated connection (`LISTEN tenantry_invalidate`) turns the notifications of the triggers in `migrations/repeatable/11_invalidation.sql` into typed [`Invalidation`]s on a broadcast channel; a lost connection is published as [`Invalidation::All`] and the listener reconnects with capped backoff. It owns no cache: caches [`subscribe`](Invalidations::subscribe).
//!
//! The listener needs a session of its own on PostgreSQL: LISTEN does not work
//! through a transaction-pooling pooler (pgbouncer in transaction mode hands the
//! server connection to other clients between transactions, and notifications
//! go with it). Behind such a pooler, point it at PostgreSQL directly
//! ([`ListenTo::Config`]; the server's `invalidation_url` setting). A probe
//! notification on a channel private to the connection, every 250 ms, proves
//! that notifications still arrive: without one for a second the listener
//! stops counting as listening (caches then trust their entries for at most
//! that second), and without one for [`ListenOptions::heartbeat`] the
//! connection is treated as lost.
//!
//! Payloads name ids by [`Tag`]s, never by the ids: any session may LISTEN
//! (PostgreSQL cannot revoke it), and must not learn other tenants' ids there.

use std::{
    fmt,
    marker::PhantomData,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::future::poll_fn;
use sha2::{Digest, Sha256};
use tokio::{
    sync::{broadcast, mpsc},
    task::JoinHandle,
    time::Instant,
};
use tokio_postgres::AsyncMessage;

use crate::{KeyId, TenantId};

/// The channel the triggers notify and the listener listens on.
pub const CHANNEL: &str = "tenantry_invalidate";

/// The `application_name` of the listener's connection (how operators, and
/// tests, find it in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "tenantry invalidation listener";

/// The least time between two `all`s published from the channel (any
/// session may send one; more within this time are published as one when it
/// is up).
const ALL_AT_MOST_EVERY: Duration = Duration::from_millis(250);

/// Events a subscriber may fall behind by before it is told [`Invalidation::All`].
const CAPACITY: usize = 1024;

/// An id kind that notifications can name: [`KeyId`] and [`TenantId`].
pub trait Tagged: sealed::Sealed + Copy {
    /// The payload prefix, e.g. `key`.
    const KIND: &'static str;
    /// The id's 16 bytes.
    fn id_bytes(&self) -> [u8; 16];
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::KeyId {}
    impl Sealed for crate::TenantId {}
}

impl Tagged for KeyId {
    const KIND: &'static str = "key";
    fn id_bytes(&self) -> [u8; 16] {
        *self.as_uuid().as_bytes()
    }
}

impl Tagged for TenantId {
    const KIND: &'static str = "tenant";
    fn id_bytes(&self) -> [u8; 16] {
        *self.as_uuid().as_bytes()
    }
}

/// What a notification says of an id: the first 16 bytes of SHA-256 of its 16
/// bytes (`tenantry.invalidation_payload` in SQL). Whoever knows the id
/// computes its tag; the tag alone names nobody.
pub struct Tag<T> {
    bytes: [u8; 16],
    kind: PhantomData<fn() -> T>,
}

impl<T: Tagged> Tag<T> {
    /// The tag of `id`.
    pub fn of(id: T) -> Self {
        let digest: [u8; 32] = Sha256::digest(id.id_bytes()).into();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self::from_bytes(bytes)
    }

    fn from_bytes(bytes: [u8; 16]) -> Self {
        Self {
            bytes,
            kind: PhantomData,
        }
    }

    /// From the 32 lower-case hex digits of a payload.
    fn parse(hex: &str) -> Option<Self> {
        if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(hex, &mut bytes).ok()?;
        Some(Self::from_bytes(bytes))
    }

    /// Its 16 bytes (a hash: evenly spread, as a cache's shard needs).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.bytes
    }

    /// Whether this is the tag of `id`.
    pub fn names(&self, id: T) -> bool {
        *self == Self::of(id)
    }
}

// By hand: derives would ask `T` for the same traits, and a tag is plain bytes.
impl<T> Clone for Tag<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Tag<T> {}
impl<T> PartialEq for Tag<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl<T> Eq for Tag<T> {}
impl<T> std::hash::Hash for Tag<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}
impl<T: Tagged> fmt::Debug for Tag<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Invalidation::payload_of(T::KIND, &self.bytes))
    }
}

/// What a cache must forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// One key changed or went (revoked, expiry changed, rotated, rebound, deleted).
    Key(Tag<KeyId>),
    /// Something a tenant's cached entries were built from changed: its status,
    /// settings, parent, subtree, roles' permissions or members' roles.
    Tenant(Tag<TenantId>),
    /// Everything: a change too wide to name, a subscriber that fell behind,
    /// or a listener connection lost or (re)established (notifications may have
    /// been missed meanwhile).
    All,
}

impl Invalidation {
    /// The invalidation for one key.
    pub fn key(id: KeyId) -> Self {
        Self::Key(Tag::of(id))
    }

    /// The invalidation for one tenant.
    pub fn tenant(id: TenantId) -> Self {
        Self::Tenant(Tag::of(id))
    }

    /// Reads a payload of channel [`CHANNEL`]. Anything not understood is
    /// [`Invalidation::All`]: a newer schema's payload, or one any session
    /// sent, only costs cache misses.
    pub fn parse(payload: &str) -> Self {
        match payload.split_once(':') {
            Some(("key", tag)) => Tag::parse(tag).map_or(Self::All, Self::Key),
            Some(("tenant", tag)) => Tag::parse(tag).map_or(Self::All, Self::Tenant),
            _ => Self::All,
        }
    }

    /// The payload the triggers send for this invalidation.
    pub fn payload(&self) -> String {
        match self {
            Self::Key(tag) => Self::payload_of(KeyId::KIND, &tag.bytes),
            Self::Tenant(tag) => Self::payload_of(TenantId::KIND, &tag.bytes),
            Self::All => "all".into(),
        }
    }

    fn payload_of(kind: &str, bytes: &[u8; 16]) -> String {
        format!("{kind}:{}", hex::encode(bytes))
    }
}

/// Where the listener connects.
#[derive(Clone, Default)]
pub enum ListenTo {
    /// Where the pool connects ([`crate::Database::connect_config`]): right
    /// for a direct connection to PostgreSQL, wrong behind a transaction pooler.
    #[default]
    Database,
    /// Somewhere else: PostgreSQL itself when the pool goes through pgbouncer.
    Config(Box<tokio_postgres::Config>),
    /// Somewhere else, as a connection string: its `sslmode` and
    /// `sslrootcert` apply as for the pool ([`crate::tls`]).
    Url(String),
    /// Nowhere: caches rely on their time to live alone.
    Off,
}

impl fmt::Debug for ListenTo {
    // The settings may hold a password: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenTo::Database => "Database",
            ListenTo::Config(_) => "Config(..)",
            ListenTo::Url(_) => "Url(..)",
            ListenTo::Off => "Off",
        })
    }
}

/// How the listener retries and checks its connection.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// First wait before reconnecting; it doubles after each failed attempt.
    pub backoff_min: Duration,
    /// Longest wait between two attempts.
    pub backoff_max: Duration,
    /// How long a probe notification (sent every 250 ms, one at a time) may
    /// take to come back before the connection counts as lost. (The listener
    /// stops counting as listening after a second without one, whatever
    /// this says.)
    pub heartbeat: Duration,
}

impl Default for ListenOptions {
    /// 100 ms doubling to 5 s; a connection lost after 5 s without a probe back.
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// How often the listener sends itself a notification to confirm that
/// notifications still arrive (the connection counts as lost only after
/// [`ListenOptions::heartbeat`] without one).
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// A listener counts as listening only while its last notification arrived
/// within this long: a connection cut silently (no reset, nothing arrives)
/// stops counting within it, not after the heartbeat's timeout, so a cache
/// whose time to live was raised stops trusting its entries past
/// `UNLISTENED_TTL` about a second after the cut (found by an operator's
/// review: revoked keys kept working for 6–9 s with a raised time to live).
const CONFIRMED_FOR: Duration = Duration::from_secs(1);

/// The listener's state, shared with the task and with caches.
#[derive(Default)]
struct State {
    listening: AtomicBool,
    sessions: AtomicU64,
    /// Why the last session ended or could not begin.
    last_error: std::sync::Mutex<Option<String>>,
    /// When a notification last arrived, in milliseconds since [`epoch`].
    confirmed_ms: AtomicU64,
}

/// The instant the process's listener times are counted from.
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

impl State {
    fn confirm(&self) {
        self.confirmed_ms
            .store(epoch().elapsed().as_millis() as u64, Ordering::Release);
    }

    /// Connected, listening, and heard from within [`CONFIRMED_FOR`].
    fn listening_now(&self) -> bool {
        self.listening.load(Ordering::Acquire)
            && epoch().elapsed().as_millis() as u64
                <= self.confirmed_ms.load(Ordering::Acquire) + CONFIRMED_FOR.as_millis() as u64
    }
}

/// The invalidation feed of one server process: a listener task and its
/// broadcast channel. Cheap to clone; the listener stops when the last clone
/// is dropped, and subscribers then receive `None`.
#[derive(Clone)]
pub struct Invalidations {
    inner: Arc<Inner>,
}

struct Inner {
    tx: broadcast::Sender<Invalidation>,
    state: Arc<State>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Invalidations {
    /// Starts listening with `config` (must be called inside a Tokio runtime).
    /// TLS as the connection string's `sslmode` would without verification
    /// (`prefer`, `require`: see [`crate::tls`]).
    pub fn listen(config: tokio_postgres::Config, options: ListenOptions) -> Self {
        let tls = crate::tls::connector(&crate::tls::TlsSettings::default())
            .expect("the default TLS settings need no file");
        Self::listen_with(config, tls, options)
    }

    /// [`Invalidations::listen`] with a TLS connector of one's own.
    pub fn listen_with(
        config: tokio_postgres::Config,
        tls: tokio_postgres_rustls::MakeRustlsConnect,
        options: ListenOptions,
    ) -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        let state = Arc::new(State::default());
        let task = tokio::spawn(run(config, tls, options, tx.clone(), state.clone()));
        Self {
            inner: Arc::new(Inner {
                tx,
                state,
                task: Some(task),
            }),
        }
    }

    /// The feed `to` asks for: a listener where `db`'s pool connects, one
    /// elsewhere, or none.
    pub fn start(db: &crate::Database, to: &ListenTo, options: ListenOptions) -> Self {
        match to {
            ListenTo::Database => Self::listen_with(
                db.connect_config().clone(),
                db.tls_connector().clone(),
                options,
            ),
            ListenTo::Config(config) => Self::listen((**config).clone(), options),
            ListenTo::Url(url) => {
                match crate::tls::parse(url)
                    .and_then(|(config, tls)| Ok((config, crate::tls::connector(&tls)?)))
                {
                    Ok((config, tls)) => Self::listen_with(config, tls, options),
                    Err(e) => {
                        // The settings check this before anything starts.
                        tracing::error!(error = %e, "invalidation listener: bad connection string; not listening");
                        Self::off()
                    }
                }
            }
            ListenTo::Off => Self::off(),
        }
    }

    /// No listener: nothing is ever published; caches rely on their time to live.
    pub fn off() -> Self {
        let (tx, _) = broadcast::channel(1);
        Self {
            inner: Arc::new(Inner {
                tx,
                state: Arc::new(State::default()),
                task: None,
            }),
        }
    }

    /// Whether there is a listener at all (not [`Invalidations::off`]).
    pub fn is_enabled(&self) -> bool {
        self.inner.task.is_some()
    }

    /// Whether the listener is connected and listening now. While it is not,
    /// changes made elsewhere may go unseen: a cache should trust its entries
    /// only briefly.
    pub fn is_listening(&self) -> bool {
        self.inner.state.listening_now()
    }

    /// Why the listener's last connection ended or could not be made, if it
    /// failed (for a boot check that names the cause).
    pub fn last_error(&self) -> Option<String> {
        self.inner
            .state
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A handle that answers [`Invalidations::is_listening`] without keeping
    /// the listener alive (for caches the listener's subscribers own).
    pub fn listening_flag(&self) -> ListeningFlag {
        ListeningFlag(self.inner.state.clone())
    }

    /// How many times the listener has started listening (1 once connected;
    /// each reconnection adds one).
    pub fn sessions(&self) -> u64 {
        self.inner.state.sessions.load(Ordering::Acquire)
    }

    /// A new subscriber: it receives every invalidation published from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.inner.tx.subscribe(),
        }
    }

    /// Publishes an invalidation to this process's subscribers only (a change
    /// made through this instance, before its notification comes back).
    pub fn publish(&self, invalidation: Invalidation) {
        let _ = self.inner.tx.send(invalidation);
    }
}

impl fmt::Debug for Invalidations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invalidations")
            .field("enabled", &self.is_enabled())
            .field("listening", &self.is_listening())
            .field("sessions", &self.sessions())
            .finish()
    }
}

/// Whether a listener is listening, readable without keeping it alive.
#[derive(Clone)]
pub struct ListeningFlag(Arc<State>);

impl ListeningFlag {
    /// Whether the listener is connected and listening now (heard from
    /// within the last second).
    pub fn get(&self) -> bool {
        self.0.listening_now()
    }
}

/// One subscriber's feed.
pub struct Subscription {
    rx: broadcast::Receiver<Invalidation>,
}

impl Subscription {
    /// The next invalidation; [`Invalidation::All`] when this subscriber fell
    /// behind (it missed some); `None` once the listener is gone.
    pub async fn recv(&mut self) -> Option<Invalidation> {
        match self.rx.recv().await {
            Ok(invalidation) => Some(invalidation),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Invalidation::All),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// The listener task: one session after another, forever.
async fn run(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    options: ListenOptions,
    tx: broadcast::Sender<Invalidation>,
    state: Arc<State>,
) {
    let mut backoff = options.backoff_min;
    loop {
        let outcome = session(&config, &tls, &options, &tx, &state).await;
        let was_listening = state.listening.swap(false, Ordering::AcqRel);
        // Whatever was missed while the connection was going down.
        let _ = tx.send(Invalidation::All);
        if was_listening {
            backoff = options.backoff_min;
        }
        // The database's own words ("28P01: password authentication
        // failed"), and whether it ever listened: a listener that never
        // connected logged "db error" and "connection lost" (found by an
        // operations review, which had misspelt invalidation_url's password).
        if let Err(e) = &outcome {
            *state.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
        }
        match outcome {
            Ok(()) => tracing::warn!("invalidation listener: connection closed; reconnecting"),
            Err(e) if was_listening => {
                tracing::warn!(error = %e, "invalidation listener: connection lost; reconnecting")
            }
            Err(e) => tracing::warn!(
                error = %e,
                "invalidation listener: cannot listen; trying again (until it does, other servers' changes reach this one only as its caches expire)"
            ),
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(options.backoff_max);
    }
}

/// Between half and all of `d`, so that many servers do not reconnect in step.
fn jittered(d: Duration) -> Duration {
    let r = uuid::Uuid::new_v4().as_u128() as u32;
    d.mul_f64(0.5 + f64::from(r) / f64::from(u32::MAX) / 2.0)
}

/// One connection: LISTEN, publish until it fails. `Ok` when the server closed it.
async fn session(
    config: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    options: &ListenOptions,
    tx: &broadcast::Sender<Invalidation>,
    state: &State,
) -> Result<(), String> {
    let mut config = config.clone();
    config.application_name(APPLICATION_NAME);
    let (client, mut connection) = tokio::time::timeout(
        options.heartbeat.max(Duration::from_secs(1)),
        config.connect(tls.clone()),
    )
    .await
    .map_err(|_| "connecting timed out".to_owned())?
    .map_err(|e| crate::error::describe(&e))?;
    // The connection is driven by a task of its own, which hands notifications
    // over and ends with the connection.
    let (notes, mut received) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if notes.send(n).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(crate::error::describe(&e)),
                None => return Ok(()),
            }
        }
    });
    let _abort_driver = AbortOnDrop(driver.abort_handle());
    let heartbeat_channel = format!("tenantry_heartbeat_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {heartbeat_channel}"))
        .await
        .map_err(|e| crate::error::describe(&e))?;
    state.confirm();
    state.listening.store(true, Ordering::Release);
    let before = state.sessions.fetch_add(1, Ordering::AcqRel);
    // Anything may have changed before LISTEN took effect.
    let _ = tx.send(Invalidation::All);
    if before == 0 {
        tracing::info!("invalidation listener: listening on {CHANNEL}");
    } else {
        // At the level of the loss it ends: the default filter showed the
        // loss and never the recovery (found by an operations review).
        tracing::warn!(
            "invalidation listener: listening again on {CHANNEL} (every cache was emptied)"
        );
    }

    let mut tick = tokio::time::interval(PROBE_EVERY.min(options.heartbeat));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut heartbeat_sent: Option<Instant> = None;
    // `all` from the channel: any session can send one (NOTIFY cannot be
    // revoked), and each empties every cache. At most one is published per
    // ALL_AT_MOST_EVERY; one arriving sooner is published when that time is
    // up (never dropped: every `all` is followed by a reset no earlier than it).
    let mut last_all: Option<Instant> = None;
    let mut all_pending = false;
    loop {
        let all_due = last_all.map_or_else(Instant::now, |t| t + ALL_AT_MOST_EVERY);
        tokio::select! {
            note = received.recv() => {
                let Some(note) = note else {
                    return driver.await.map_err(|e| e.to_string())?;
                };
                state.confirm();
                if note.channel() == CHANNEL {
                    match Invalidation::parse(note.payload()) {
                        Invalidation::All if last_all.is_some_and(|t| t.elapsed() < ALL_AT_MOST_EVERY) => {
                            all_pending = true;
                        }
                        Invalidation::All => {
                            last_all = Some(Instant::now());
                            let _ = tx.send(Invalidation::All);
                        }
                        named => {
                            let _ = tx.send(named);
                        }
                    }
                } else if note.channel() == heartbeat_channel {
                    heartbeat_sent = None;
                }
            }
            _ = tokio::time::sleep_until(all_due), if all_pending => {
                all_pending = false;
                last_all = Some(Instant::now());
                let _ = tx.send(Invalidation::All);
            }
            _ = tick.tick() => {
                // One probe in flight at a time; lost when it has been out
                // for the heartbeat's time (meanwhile the state stops
                // counting as listening once CONFIRMED_FOR has passed).
                match heartbeat_sent {
                    Some(sent) if sent.elapsed() >= options.heartbeat => {
                        return Err(format!("no heartbeat notification for {:?}", sent.elapsed()));
                    }
                    Some(_) => {}
                    None => {
                        tokio::time::timeout(options.heartbeat, client.batch_execute(&format!("NOTIFY {heartbeat_channel}")))
                            .await
                            .map_err(|_| "heartbeat timed out".to_owned())?
                            .map_err(|e| crate::error::describe(&e))?;
                        heartbeat_sent = Some(Instant::now());
                    }
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_tag_is_the_first_half_of_the_sha256_of_the_uuid_bytes_as_sql_computes_it() {
        // SELECT left(encode(sha256(uuid_send('6b39e4e3-…'::uuid)), 'hex'), 32)
        let key = KeyId::parse("6b39e4e3-84cd-4d21-88a9-cff7e14ca36c").unwrap();
        assert_eq!(
            Invalidation::key(key).payload(),
            "key:62baaf45b5ac4913cde1eb5b4a193e2f"
        );
        let tenant = TenantId::parse("6b39e4e3-84cd-4d21-88a9-cff7e14ca36c").unwrap();
        assert_eq!(
            Invalidation::tenant(tenant).payload(),
            "tenant:62baaf45b5ac4913cde1eb5b4a193e2f"
        );
    }

    #[test]
    fn payloads_parse_back_into_what_they_name() {
        let key = KeyId::from_uuid(uuid::Uuid::new_v4());
        let tenant = TenantId::from_uuid(uuid::Uuid::new_v4());
        for inv in [
            Invalidation::key(key),
            Invalidation::tenant(tenant),
            Invalidation::All,
        ] {
            assert_eq!(Invalidation::parse(&inv.payload()), inv);
        }
        let Invalidation::Key(tag) = Invalidation::parse(&Invalidation::key(key).payload()) else {
            panic!("not a key");
        };
        assert!(tag.names(key));
        assert!(!tag.names(KeyId::from_uuid(uuid::Uuid::new_v4())));
    }

    #[test]
    fn a_payload_not_understood_means_forget_everything() {
        for payload in [
            "",
            "all",
            "key:",
            "key:xyz",
            "key:62BAAF45B5AC4913CDE1EB5B4A193E2F",
            "key:62baaf45b5ac4913cde1eb5b4a193e2f00",
            "tenant:6b39e4e3-84cd-4d21-88a9-cff7e14ca36c",
            "role:62baaf45b5ac4913cde1eb5b4a193e2f",
        ] {
            assert_eq!(
                Invalidation::parse(payload),
                Invalidation::All,
                "{payload:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_to_forget_everything() {
        let feed = Invalidations::off();
        let mut slow = Subscription {
            rx: feed.inner.tx.subscribe(),
        };
        let key = KeyId::from_uuid(uuid::Uuid::new_v4());
        for _ in 0..3 {
            feed.publish(Invalidation::key(key));
        }
        // The `off` channel holds one event: the subscriber lagged.
        assert_eq!(slow.recv().await, Some(Invalidation::All));
        assert_eq!(slow.recv().await, Some(Invalidation::key(key)));
        drop(feed);
        assert_eq!(slow.recv().await, None);
    }

    #[tokio::test]
    async fn a_listener_that_cannot_connect_is_not_listening_and_keeps_trying() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config: tokio_postgres::Config = format!("postgres://nobody@127.0.0.1:{port}/none")
            .parse()
            .unwrap();
        let feed = Invalidations::listen(
            config,
            ListenOptions {
                backoff_min: Duration::from_millis(10),
                backoff_max: Duration::from_millis(20),
                heartbeat: Duration::from_secs(1),
            },
        );
        let mut sub = feed.subscribe();
        // Each failed attempt publishes All.
        for _ in 0..3 {
            assert_eq!(
                tokio::time::timeout(Duration::from_secs(5), sub.recv())
                    .await
                    .unwrap(),
                Some(Invalidation::All)
            );
        }
        assert!(feed.is_enabled() && !feed.is_listening());
        assert_eq!(feed.sessions(), 0);
    }
}
