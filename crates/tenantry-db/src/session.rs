//! The pool's connections: in the prepared mode each one switches to `tenantry_app` once and opens its verified-context session (commit-reveal chain) when it connects, and again after a transaction that revealed the chain's secret rolled back or that ran SQL the library did not write (whose session state is reset first); a connection whose chain fell out of step with the database is closed instead of reused.

use std::{
    ops::Deref,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_postgres::ClientWrapper;

use crate::context::{Chain, ContextKey};

/// One pooled connection and its commit-reveal chain (`None`: the connection
/// is not the server's own, e.g. behind pgbouncer, and signs each context).
pub(crate) struct Conn {
    client: ClientWrapper,
    pub(crate) chain: Option<Chain>,
    /// Out of step with the database (a refused context, an unknown outcome): never reused.
    pub(crate) broken: bool,
    /// Its last transaction ran SQL the library did not write (`TenantScope::query`
    /// and its siblings): the next one checks the session first.
    pub(crate) ran_caller_sql: bool,
    /// The database is a Citus coordinator: transactions switch roles with
    /// `set_config('role', …, true)`, which Citus does not replay on its
    /// worker connections (a replayed `SET LOCAL ROLE` is refused there).
    pub(crate) citus: bool,
    /// `tenantry.session_settings()` when the connection was readied (the
    /// server's own connections): a transaction after caller SQL checks that
    /// the session still has them (`assert_clean_session`).
    pub(crate) settings: Option<String>,
    /// The pool's count of open connections, which this one leaves when dropped.
    open: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Deref for Conn {
    type Target = ClientWrapper;
    fn deref(&self) -> &ClientWrapper {
        &self.client
    }
}

/// What [`SessionError::Refused`] says: for a key the database does not
/// hold, that it may have been retired (an operator's stale
/// `TENANTRY_CONTEXT_KEY` after a rotation read like a wrong database: a
/// review of the docs).
fn refused_message(reason: &str) -> String {
    let hint = if reason == "unknown key" {
        "the context key was retired (after a rotation, use the new one) or is another database's: `tenantry context-key list` shows the live ones"
    } else {
        "is the context key this database's, and do the clocks agree within a minute?"
    };
    format!("the database refused the server's context session ({reason}): {hint}")
}

/// Why a connection could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The driver's error.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// The database refused to open the context session.
    #[error("{}", refused_message(.0))]
    Refused(String),
    /// The login's sessions start read-only, or the database is a standby:
    /// which, and the words to say.
    #[error("{1}")]
    ReadOnly(crate::database::WritesRefused, String),
    /// The login may not act as the server (not an inheriting member of
    /// `tenantry_server`).
    #[error("{0}")]
    NotServer(String),
}

/// Makes connections with deadpool-postgres and readies them for tenant work.
pub(crate) struct SessionManager {
    inner: deadpool_postgres::Manager,
    /// Set: connections are the server's own (prepared mode) and open a session.
    key: Option<ContextKey>,
    /// Connections made and not dropped yet (made ready or not).
    open: Arc<AtomicUsize>,
}

pub(crate) type Pool = managed::Pool<SessionManager>;

/// The pool behind a bound on connections in use: `max_connections`, less
/// the places withheld while the database has no connection slot left
/// (53300). deadpool's own `resize` could not narrow it: shrinking kept the
/// permits of connections in use, so callers went on opening connections the
/// database refused, in a loop without a pause, and growing again added
/// permits beyond the pool's size (found by an operations review,
/// 2026-12-05: the pool stayed at one connection, as its gauge said, after
/// the database had slots again).
pub(crate) struct Connections {
    pool: Pool,
    /// Connections made and not closed ([`SessionManager::open_connections`]).
    open: Arc<AtomicUsize>,
    max: usize,
    acquire_timeout: Option<std::time::Duration>,
    places: Arc<tokio::sync::Semaphore>,
    /// Places taken out while the database refused more connections. Taken
    /// and given back under this lock only, so that a narrowing and the
    /// return never cross (a rare path: a refusal, or 30 s after one).
    withheld: std::sync::Mutex<Withheld>,
    /// Callers waiting for a place (deadpool's own count stays near zero:
    /// it sees only those the gate let through).
    waiting: AtomicUsize,
    /// Connections the database refused for want of a slot (53300).
    refused: std::sync::atomic::AtomicU64,
}

/// One caller counted in [`Connections::waiting`] for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What [`Connections`] withholds, and whether a task will give it back.
#[derive(Default)]
struct Withheld {
    places: usize,
    returning: bool,
}

impl Connections {
    pub(crate) fn new(
        pool: Pool,
        open: Arc<AtomicUsize>,
        max: usize,
        acquire_timeout: Option<std::time::Duration>,
    ) -> Self {
        Self {
            pool,
            open,
            max,
            acquire_timeout,
            places: Arc::new(tokio::sync::Semaphore::new(max)),
            withheld: std::sync::Mutex::default(),
            waiting: AtomicUsize::new(0),
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Drops every connection's prepared statements after `error` when it
    /// is the refusal of one prepared before a migration changed its table
    /// ([`DbError::is_stale_statement`](crate::DbError)): the others the pool
    /// holds on that table would be refused alike, each on its next run. Each
    /// connection prepares what it runs again, once.
    pub(crate) fn forget_statements_after(&self, error: &crate::DbError) {
        if error.is_stale_statement() {
            tracing::info!(
                target: "tenantry::db",
                "a migration changed a table under prepared statements; every connection prepares its statements again"
            );
            self.pool.manager().inner.statement_caches.clear();
        }
    }

    /// How many connections the database refused for want of a slot.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// How many callers wait for a place.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn withheld(&self) -> std::sync::MutexGuard<'_, Withheld> {
        self.withheld.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many connections may be in use now.
    pub(crate) fn allowed(&self) -> usize {
        self.max - self.withheld().places
    }

    /// A connection of the pool. When the database has no slot left for
    /// another one (53300: the sum of every client's connections reached its
    /// `max_connections`), the bound narrows to the connections the pool has
    /// and the caller waits for one of them (up to the acquire timeout)
    /// instead of failing at once; the places withheld come back after
    /// [`crate::database::POOL_REGROW_AFTER`] (and narrow again if refused again).
    pub(crate) async fn get(self: &Arc<Self>) -> Result<Object, managed::PoolError<SessionError>> {
        let deadline = self
            .acquire_timeout
            .map(|t| tokio::time::Instant::now() + t);
        // Between refused tries without a connection of its own: doubling
        // from 20 ms to half a second (every 20 ms, a resilience review
        // counted 2,033 refused connections, each a backend forked and a
        // FATAL logged, for 53 requests in 10 s with the role's limit at 0).
        let mut pause = std::time::Duration::from_millis(20);
        loop {
            // Counted while waiting, uncounted however the wait ends (a
            // request given up drops this future in the middle of it).
            let waiting = Waiting::new(&self.waiting);
            let place = self.places.clone().acquire_owned();
            let place = match deadline {
                Some(d) => tokio::time::timeout_at(d, place).await.map_err(|_| ()),
                None => Ok(place.await),
            };
            drop(waiting);
            let place = place
                .map_err(|()| managed::PoolError::Timeout(managed::TimeoutType::Wait))?
                .map_err(|_| managed::PoolError::Closed)?;
            match self.pool.get().await {
                Ok(inner) => return Ok(Object::new(inner, place)),
                Err(managed::PoolError::Backend(SessionError::Db(e)))
                    if e.code() == Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS)
                        && deadline.is_none_or(|d| tokio::time::Instant::now() < d) =>
                {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    if !self.narrow(place) {
                        // None of its own yet (the database's other clients
                        // may free a slot), or narrowed already: a pause
                        // before the next try, which takes a connection
                        // returned meanwhile.
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(std::time::Duration::from_millis(500));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After a refusal: takes places out until no more callers than the
    /// connections the pool has may hold one, starting with the refused
    /// caller's own (given back, it went at once to a waiting caller, who was
    /// refused in turn, so the bound never narrowed: 502 refusals in the
    /// library test, against about 10). Whether it narrowed.
    fn narrow(self: &Arc<Self>, place: tokio::sync::OwnedSemaphorePermit) -> bool {
        // The connections made and not closed (creations still in flight
        // count in the pool's size, not here).
        let open = self.open.load(Ordering::Relaxed);
        let mut withheld = self.withheld();
        let allowed = self.max - withheld.places;
        if open == 0 || open >= allowed {
            return false;
        }
        place.forget();
        let taken = 1 + self.places.forget_permits(allowed - open - 1);
        if withheld.places == 0 {
            tracing::warn!(
                connections = open,
                max_connections = self.max,
                "the database has no connection slot left: the pool waits for its own connections"
            );
        }
        withheld.places += taken;
        if !withheld.returning {
            withheld.returning = true;
            let this = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(crate::database::POOL_REGROW_AFTER).await;
                let mut withheld = this.withheld();
                this.places.add_permits(withheld.places);
                *withheld = Withheld::default();
            });
        }
        true
    }
}

/// A connection of the pool, holding its place under the pool's gate
/// ([`crate::Database`]'s bound on connections in use, which narrows while
/// the database has no connection slot left) until it goes back.
pub(crate) struct Object {
    inner: managed::Object<SessionManager>,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl Object {
    pub(crate) fn new(
        inner: managed::Object<SessionManager>,
        place: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        Self {
            inner,
            _place: place,
        }
    }

    /// Takes the connection out of the pool for good (it is not reused);
    /// its place under the gate is free again.
    pub(crate) fn take(this: Self) -> Conn {
        managed::Object::take(this.inner)
    }
}

impl Deref for Object {
    type Target = managed::Object<SessionManager>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Object {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl SessionManager {
    pub(crate) fn new(inner: deadpool_postgres::Manager, key: Option<ContextKey>) -> Self {
        Self {
            inner,
            key,
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The count of connections open, shared with the connections.
    pub(crate) fn open_connections(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }
}

impl managed::Manager for SessionManager {
    type Type = Conn;
    type Error = SessionError;

    async fn create(&self) -> Result<Conn, SessionError> {
        let client = managed::Manager::create(&self.inner).await?;
        self.open.fetch_add(1, Ordering::Relaxed);
        // Counted from here: dropped with the error below, the count goes
        // down with it.
        let mut conn = Conn {
            client,
            chain: None,
            broken: false,
            ran_caller_sql: false,
            citus: false,
            settings: None,
            open: self.open.clone(),
        };
        let client = &conn.client;
        let (chain, citus, settings) = match &self.key {
            Some(key) => {
                let (chain, citus, settings) = open_session(client, key).await?;
                (Some(chain), citus, Some(settings))
            }
            None => (None, is_citus(client).await?, None),
        };
        conn.chain = chain;
        conn.citus = citus;
        conn.settings = settings;
        Ok(conn)
    }

    async fn recycle(&self, conn: &mut Conn, metrics: &Metrics) -> RecycleResult<SessionError> {
        if conn.broken {
            return Err(RecycleError::message(
                "the connection's context chain is out of step",
            ));
        }
        managed::Manager::recycle(&self.inner, &mut conn.client, metrics)
            .await
            .map_err(|e| match e {
                RecycleError::Message(m) => RecycleError::Message(m),
                RecycleError::Backend(e) => RecycleError::Backend(SessionError::Db(e)),
            })?;
        // SQL the library did not write ran in the connection's last
        // transaction: what it left in the session for good goes before
        // another tenant's transaction can see it. Found by an audit: a
        // cursor declared WITH HOLD was fetched by the next tenant, and a
        // session-level custom setting (`SET app.x`, set_config(…, false))
        // was read by it; listing every setting to find those costs about
        // 1 ms, a reset costs a round trip. RESET ALL also empties the
        // context session's commitment, so the session is opened again below
        // (the role stays: RESET ALL leaves it, and the next transaction
        // checks it with the other settings, assert_session_unchanged).
        let reset = conn.ran_caller_sql;
        let nonce = if reset {
            reset_session(&conn.client, conn.chain.is_some())
                .await
                .map_err(|e| RecycleError::Backend(SessionError::Db(e)))?
        } else {
            None
        };
        // A transaction that revealed the chain's secret rolled back: the
        // database refuses that secret from now on, so the session is opened
        // afresh (two round trips, after rollbacks only).
        if let (Some(chain), Some(key)) = (conn.chain.as_ref(), self.key.as_ref()) {
            if chain.needs_reopening() || reset {
                let pid = chain.pid();
                let nonce = match nonce {
                    Some(nonce) => nonce,
                    None => draw(&conn.client).await.map_err(SessionError::Db)?,
                };
                conn.chain = Some(open_chain(&conn.client, key, pid, nonce).await?);
            }
        }
        Ok(())
    }

    fn detach(&self, conn: &mut Conn) {
        managed::Manager::detach(&self.inner, &mut conn.client);
    }
}

/// Whether the database is a Citus coordinator (asked once per connection).
const IS_CITUS: &str = "SELECT pg_backend_pid(), EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')";

/// In the simple protocol: a connection without a context session may sit
/// behind pgbouncer in transaction mode, where a named prepared statement
/// would not outlive this transaction's server connection.
async fn is_citus(client: &ClientWrapper) -> Result<bool, tokio_postgres::Error> {
    let answer = client.simple_query(IS_CITUS).await?;
    Ok(answer.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(1) == Some("t"),
        _ => false,
    }))
}

/// Switches the session to `tenantry_app` for good (transactions needing
/// another role switch it transaction-locally) and opens its context
/// session. Also says whether the database is a Citus coordinator, and the
/// session's settings as the connection's transactions must find them.
async fn open_session(
    client: &ClientWrapper,
    key: &ContextKey,
) -> Result<(Chain, bool, String), SessionError> {
    // In this order on the wire: the draw and the settings are read as tenantry_app.
    let (row, role, nonce, settings) = futures_util::future::join4(
        client.query_one(IS_CITUS, &[]),
        client.batch_execute("SET ROLE tenantry_app"),
        draw(client),
        client.query_one("SELECT tenantry.session_settings()", &[]),
    )
    .await;
    let row = row?;
    role.map_err(not_server)?;
    let pid: i32 = row.get(0);
    let citus: bool = row.get(1);
    let settings: String = settings.map_err(not_server)?.get(0);
    let nonce = match nonce {
        Ok(nonce) => nonce,
        // The draw writes (nextval): sessions that start read-only, from a
        // default set for the login or the database (which the login may set
        // for itself, so SQL injected through an application can), or a
        // standby, cannot serve.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION) => {
            let standby = client
                .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
                .await
                .is_ok_and(|r| r.get::<_, bool>(0));
            // PostgreSQL's words: the driver's display says "db error" alone.
            let said = crate::error::describe(&e);
            let why = match standby {
                true => crate::database::WritesRefused::Standby,
                false => crate::database::WritesRefused::ReadOnlySessions,
            };
            // The usual cause of a standby: a URL naming it first (found by
            // a failover review: the advice was about role defaults).
            return Err(SessionError::ReadOnly(why, format!("{why} ({said})")));
        }
        Err(e) => return Err(SessionError::Db(e)),
    };
    let chain = open_chain(client, key, pid, nonce).await?;
    Ok((chain, citus, settings))
}

/// A session's set-up refused for want of a privilege: the login is not the
/// server's (it needs `tenantry_server`, inherited, which makes it a member
/// of `tenantry_app` and lets it use the schema). Said so, with the grant;
/// other errors as they are.
fn not_server(e: tokio_postgres::Error) -> SessionError {
    if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
        // The second half for the server's own login whose memberships were
        // revoked by hand (an operations review: told only to connect as
        // tenantry_server, it was doing so).
        SessionError::NotServer(format!(
            "the login cannot act as tenantry's server ({}): connect as tenantry_server, or as a login granted \
             it (GRANT tenantry_server TO <login>, a role that inherits: the default); tenantry_server must be \
             a member of tenantry_app, tenantry_admin and tenantry_logger (tenantry migrate grants them back, \
             tenantry doctor names what is missing)",
            crate::error::describe(&e)
        ))
    } else {
        SessionError::Db(e)
    }
}

/// Puts back what SQL the library did not write can leave in a session for
/// good: holdable cursors, every setting changed for the session (custom ones
/// such as `app.*` included), channels listened to. The role is left (RESET
/// ALL does not touch it): `tenantry.assert_session_unchanged` checks it. One
/// round trip; with a context session, it also draws the nonce its reopening
/// is bound to.
async fn reset_session(
    client: &ClientWrapper,
    draws: bool,
) -> Result<Option<i64>, tokio_postgres::Error> {
    // No advisory locks to release: the app roles cannot take any
    // (08_shared_state.sql revokes them).
    const RESET: &str = "CLOSE ALL; RESET ALL; UNLISTEN *";
    if !draws {
        client.batch_execute(RESET).await?;
        return Ok(None);
    }
    let answer = client
        .simple_query(&format!("{RESET}; SELECT tenantry.context_session_nonce()"))
        .await?;
    let nonce = answer.iter().rev().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
        _ => None,
    });
    Ok(nonce)
}

/// The session's draw that its opening is bound to (`tenantry.context_session_nonce`).
async fn draw(client: &ClientWrapper) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT tenantry.context_session_nonce()", &[])
        .await?
        .get(0))
}

/// Opens the context session of backend `pid`, whose last draw is `nonce`,
/// with a fresh chain.
async fn open_chain(
    client: &ClientWrapper,
    key: &ContextKey,
    pid: i32,
    nonce: i64,
) -> Result<Chain, SessionError> {
    let (chain, commitment) = Chain::start(pid);
    let open = key.open_session(pid, nonce, &commitment);
    let row = client
        .query_one(
            "SELECT tenantry.open_context_session($1, $2, $3, $4, $5, $6)",
            &[
                &open.pid,
                &open.nonce,
                &open.expires_at,
                &open.commitment,
                &open.key_id,
                &open.mac,
            ],
        )
        .await?;
    let answer: String = row.get(0);
    if answer != "ok" {
        return Err(SessionError::Refused(answer));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::SessionError;

    #[test]
    fn a_refused_unknown_key_is_said_to_be_perhaps_retired_and_other_refusals_keep_their_hint() {
        let unknown = SessionError::Refused("unknown key".into()).to_string();
        assert!(unknown.contains("(unknown key)"), "{unknown}");
        assert!(unknown.contains("retired"), "{unknown}");
        assert!(unknown.contains("tenantry context-key list"), "{unknown}");
        let bad = SessionError::Refused("bad signature".into()).to_string();
        assert!(bad.contains("is the context key this database's"), "{bad}");
        assert!(!bad.contains("retired"), "{bad}");
    }
}
