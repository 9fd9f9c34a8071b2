//! The connection pool and the doors out of it: tenant scopes, admin scopes (retried on contention by `retry`), key verification, health and role checks. No other public path reaches the database.

use std::{str::FromStr, sync::Arc, time::Duration};

use deadpool::managed::PoolError;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use tokio_postgres::types::Type;

use crate::{
    context::{ContextKey, Contexts, PartCache},
    error::classify,
    keys::{ApiKeySecret, KeyIdentity},
    migrate::MigrateError,
    retry::RetryPolicy,
    scope::{Stmt, Tx},
    session::{Object, Pool, SessionError, SessionManager},
    AdminScope, DbError, TenantContext, TenantId, TenantScope,
};

/// How statements travel to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatementMode {
    /// Named prepared statements, cached per connection (fastest; direct connections).
    #[default]
    Prepared,
    /// Unnamed statements only (`Parse`/`Bind`/`Execute` in one flight): works through
    /// transaction-pooling poolers such as pgbouncer, which lose named statements.
    Unnamed,
}

impl FromStr for StatementMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prepared" => Ok(Self::Prepared),
            "unnamed" => Ok(Self::Unnamed),
            other => Err(format!(
                "unknown statement mode {other:?}: expected \"prepared\" or \"unnamed\""
            )),
        }
    }
}

/// Where the pool connects, as the server's login role (e.g. `tenantry_server`).
#[derive(Clone)]
pub enum ConnectTo {
    /// A libpq connection string or URL as a user gave it; parsed by [`Database::connect`].
    Url(String),
    /// Settings already built (e.g. by [`crate::provision()`]).
    Config(Box<tokio_postgres::Config>),
}

impl std::fmt::Debug for ConnectTo {
    // A URL may hold a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectTo::Url(_) => f.write_str("Url(..)"),
            ConnectTo::Config(config) => f.debug_tuple("Config").field(config).finish(),
        }
    }
}

/// What [`Database::connect`] needs.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Where to connect.
    pub connect_to: ConnectTo,
    /// Maximum pooled connections.
    pub max_connections: usize,
    /// How many of them one tenant's transactions may hold at once: the
    /// tenant's next transaction waits for one of its own to end (up to
    /// `acquire_timeout`, then [`DbError::TenantBusy`]), so that one
    /// tenant's slow work never takes every connection from the others.
    /// 0 (the default): a quarter of `max_connections`, at least 2 (4 of
    /// the default 16); `max_connections` or more: no share.
    pub max_connections_per_tenant: usize,
    /// Statement mode (see [`StatementMode`]).
    pub statement_mode: StatementMode,
    /// How long a caller waits for a free connection, and for a new one to open,
    /// before getting [`DbError::Unavailable`].
    pub acquire_timeout: Duration,
    /// How [`Database::in_tenant`] and [`Database::in_admin`] retry a
    /// transaction a concurrent one rolled back.
    pub retry: RetryPolicy,
    /// The key that proves tenant contexts to the database (`tenantry
    /// context-key` prints it; the embedded cluster and the test harness
    /// read it themselves). Required: [`Database::connect`] refuses a
    /// configuration without it, since no transaction could prove its context.
    pub context_key: Option<ContextKey>,
    /// How long a tenant's context part (its schema and visible subtree) is
    /// reused before the database is asked again; changes made through this
    /// pool drop it at once, the server's invalidations within a second.
    pub context_cache_ttl: Duration,
    /// What bounds the time a lost or stuck database can hold a caller (see [`Timeouts`]).
    pub timeouts: Timeouts,
}

/// What bounds the time a lost, cut off or stuck database can hold a caller:
/// TCP settings of every connection the pool (and the invalidation listener)
/// opens, PostgreSQL's own timeouts for those sessions, and how long a caller
/// waits for the database's reply before the connection is given up.
///
/// `None` leaves a setting to the operating system or to the role's and
/// database's defaults. TCP settings apply to TCP connections only (not to
/// unix sockets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `TCP_USER_TIMEOUT`: how long sent data may stay unacknowledged before
    /// the kernel drops the connection (Linux otherwise retransmits for about
    /// 15 minutes).
    pub tcp_user_timeout: Option<Duration>,
    /// Idle time before TCP keepalive probes start, on a connection with
    /// nothing in flight; probes then go every [`Timeouts::KEEPALIVE_INTERVAL`],
    /// and [`Timeouts::KEEPALIVE_RETRIES`] unanswered ones drop it. `None`:
    /// the operating system's (2 hours on Linux).
    pub keepalive_idle: Option<Duration>,
    /// `statement_timeout` of the pool's sessions: PostgreSQL cancels a
    /// statement running longer (the caller gets [`DbError::Unavailable`]).
    /// `None` leaves the role's or the database's default; `Some(ZERO)`
    /// lifts it (no limit).
    pub statement_timeout: Option<Duration>,
    /// `lock_timeout` of the pool's sessions: a statement waiting longer for
    /// a lock is cancelled (the caller gets [`DbError::Contention`], which
    /// [`Database::in_tenant`] and [`Database::in_admin`] try up to four
    /// times in all), and its connection goes back to the pool. Without it, SQL holding a lock
    /// on a shared table (injected into an application as its login) held
    /// every request waiting on that table for the whole statement
    /// timeout, until the waits took every pooled connection and every
    /// tenant's requests on every route answered 503. The library's own
    /// steps that wait on purpose set their own.
    pub lock_timeout: Option<Duration>,
    /// `idle_in_transaction_session_timeout` of the pool's sessions:
    /// PostgreSQL ends a session whose transaction stays idle longer (its
    /// locks go with it), e.g. one whose client was cut off mid-transaction.
    pub idle_in_transaction_timeout: Option<Duration>,
    /// How long a caller waits for the reply to one flight of statements (and
    /// for a commit, a rollback, a ping) before the connection is closed and
    /// the caller gets [`DbError::Unavailable`]. Keep it above
    /// `statement_timeout`, so that PostgreSQL cancels a slow statement first
    /// and this only fires when the database cannot answer at all.
    pub reply_timeout: Option<Duration>,
}

impl Timeouts {
    /// Time between two unanswered keepalive probes.
    pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
    /// Unanswered keepalive probes before the connection is dropped.
    pub const KEEPALIVE_RETRIES: u32 = 3;

    /// The library's defaults: TCP settings that find a dead peer within
    /// seconds (`tcp_user_timeout` 10 s, keepalives after 10 s idle), and no
    /// statement, idle or reply limits ([`Timeouts::server`] has the
    /// server's; a long migration or report may need none).
    pub const fn tcp_only() -> Self {
        Self {
            tcp_user_timeout: Some(Duration::from_secs(10)),
            keepalive_idle: Some(Duration::from_secs(10)),
            statement_timeout: None,
            lock_timeout: None,
            idle_in_transaction_timeout: None,
            reply_timeout: None,
        }
    }

    /// What `tenantry serve` runs with by default, for an application of
    /// its own: [`Timeouts::tcp_only`]'s TCP settings, statements cancelled
    /// after 30 s, a lock waited for at most 2 s, a transaction left idle
    /// ended after 15 s (its locks go with it), and a caller waiting at most
    /// 35 s for a reply.
    pub const fn server() -> Self {
        Self {
            statement_timeout: Some(Duration::from_secs(30)),
            lock_timeout: Some(Duration::from_secs(2)),
            idle_in_transaction_timeout: Some(Duration::from_secs(15)),
            reply_timeout: Some(Duration::from_secs(35)),
            ..Self::tcp_only()
        }
    }

    /// Applies the TCP settings and the session timeouts to `pg` (the
    /// timeouts travel in the startup packet's `options`, after any options
    /// `pg` already has, so they win over them and over the role's defaults).
    fn apply(&self, pg: &mut tokio_postgres::Config) {
        if let Some(t) = self.tcp_user_timeout {
            pg.tcp_user_timeout(t);
        }
        if let Some(idle) = self.keepalive_idle {
            pg.keepalives(true)
                .keepalives_idle(idle)
                .keepalives_interval(Self::KEEPALIVE_INTERVAL)
                .keepalives_retries(Self::KEEPALIVE_RETRIES);
        }
        let mut options: Vec<String> = pg.get_options().map(str::to_owned).into_iter().collect();
        if let Some(t) = self.statement_timeout {
            options.push(format!("-c statement_timeout={}", t.as_millis()));
        }
        if let Some(t) = self.lock_timeout {
            options.push(format!("-c lock_timeout={}", t.as_millis()));
        }
        if let Some(t) = self.idle_in_transaction_timeout {
            options.push(format!(
                "-c idle_in_transaction_session_timeout={}",
                t.as_millis()
            ));
        }
        if !options.is_empty() {
            pg.options(options.join(" "));
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::tcp_only()
    }
}

/// Waits for `work` at most `limit`; past it, the database is
/// [`DbError::Unavailable`] (the caller must not reuse the connection: a
/// reply may still be on its way).
pub(crate) async fn within<T>(
    limit: Option<Duration>,
    work: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    match limit {
        None => work.await,
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(DbError::Unavailable(format!(
                "no reply from the database within {} ms",
                limit.as_millis()
            )))
        }),
    }
}

impl DatabaseConfig {
    /// Defaults: 16 connections, prepared statements, 5 s acquire timeout,
    /// the default [`RetryPolicy`], no context key, context parts cached 2 s,
    /// [`Timeouts::tcp_only`].
    pub fn new(url: impl Into<String>) -> Self {
        Self::to(ConnectTo::Url(url.into()))
    }

    /// The same defaults, connecting with settings already built.
    pub fn from_config(config: tokio_postgres::Config) -> Self {
        Self::to(ConnectTo::Config(Box::new(config)))
    }

    fn to(connect_to: ConnectTo) -> Self {
        Self {
            connect_to,
            max_connections: 16,
            max_connections_per_tenant: 0,
            statement_mode: StatementMode::Prepared,
            acquire_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            context_key: None,
            context_cache_ttl: Duration::from_secs(2),
            timeouts: Timeouts::default(),
        }
    }

    /// What [`DatabaseConfig::max_connections_per_tenant`] comes to: 0 is
    /// the default share, a quarter of the pool (at least 2), never more
    /// than the pool.
    pub fn per_tenant_share(&self) -> usize {
        let pool = self.max_connections.max(1);
        match self.max_connections_per_tenant {
            0 => (pool / 4).max(2).min(pool),
            n => n.min(pool),
        }
    }

    /// The same, proving tenant contexts with `key`.
    pub fn with_context_key(mut self, key: ContextKey) -> Self {
        self.context_key = Some(key);
        self
    }
}

/// Most tenants' context parts kept at once (about 10 MB at most).
const CONTEXT_CACHE_CAPACITY: usize = 65_536;

/// How long a pool that stopped growing (the database had no connection slot
/// left) keeps to the connections it has before it may open more again.
pub(crate) const POOL_REGROW_AFTER: Duration = Duration::from_secs(30);

/// A pool of connections of the server's login role. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    /// What the pool connects with, for connections of their own (the invalidation listener).
    pg: std::sync::Arc<tokio_postgres::Config>,
    /// The TLS connector the pool connects with (the connection string's `sslmode`).
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    mode: StatementMode,
    retry: RetryPolicy,
    contexts: Arc<Contexts>,
    /// How long [`Database::connection`] may wait (None: no bound).
    acquire_timeout: Option<Duration>,
    /// Each tenant's share of the pool ([`DatabaseConfig::max_connections_per_tenant`]).
    turns: Arc<crate::turns::TenantTurns>,
    /// The pool behind its bound on connections in use.
    connections: Arc<crate::session::Connections>,
    /// The readiness probes' own connection (one, opened when first asked):
    /// a pool whose every connection tenants' slow requests hold is busy,
    /// not unready (found by an on-call review: /readyz answered 503 and
    /// every replica left the load balancer at once).
    probes: Arc<crate::session::Connections>,
}

/// The server login role's attributes that matter for isolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRoleCheck {
    /// The role name.
    pub role: String,
    /// It is a superuser (skips RLS entirely).
    pub superuser: bool,
    /// It has BYPASSRLS.
    pub bypass_rls: bool,
    /// Objects it owns in schema `tenantry` and in tenant schemas, the schemas
    /// themselves included (owners can disable RLS).
    pub owned_objects: i64,
    /// Roles it is a member of, directly or through other roles, that would
    /// lift row-level security after a `SET ROLE` (injected SQL can run one).
    pub powerful_roles: Vec<PowerfulRole>,
    /// The session's `lc_messages`: the language of PostgreSQL's messages,
    /// some of which the library tells errors apart by
    /// ([`LoginRoleCheck::messages_translated`]).
    pub lc_messages: String,
}

/// A role the login can become that would lift row-level security.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerfulRole {
    /// The role name.
    pub role: String,
    /// It is a superuser.
    pub superuser: bool,
    /// It has BYPASSRLS.
    pub bypass_rls: bool,
    /// Objects it owns in schema `tenantry` and in tenant schemas.
    pub owned_objects: i64,
    /// The roles holding the membership in it that the login reaches (the
    /// login itself, or a role it is a member of): revoking it from each of
    /// them is the fix. Empty for an implicit membership (`pg_database_owner`).
    pub granted_to: Vec<String>,
}

impl PowerfulRole {
    fn why(&self) -> String {
        let mut why = Vec::new();
        if self.superuser {
            why.push("is a superuser".to_owned());
        }
        if self.bypass_rls {
            why.push("has BYPASSRLS".to_owned());
        }
        if self.owned_objects > 0 {
            why.push(format!("owns {} tenantry object(s)", self.owned_objects));
        }
        if why.is_empty() {
            // tenantry_owner by name, on a database where it owns nothing yet.
            why.push("is tenantry_owner".to_owned());
        }
        why.join(" and ")
    }
}

impl LoginRoleCheck {
    /// Whether PostgreSQL's messages reach this login translated: some
    /// errors are told apart only by their English words (a row still
    /// referenced on delete, [`DbError::Conflict`](crate::DbError::Conflict), from a reference to a
    /// missing row, [`DbError::NotFound`](crate::DbError::NotFound); a privilege the role lacks from a
    /// refusal of the caller), so that a translated message gets a wrong
    /// variant. Migration 0057 gives `tenantry_server` untranslated ones; a
    /// login of the team's own needs `ALTER ROLE <login> SET lc_messages =
    /// 'C'` by a superuser.
    pub fn messages_translated(&self) -> bool {
        let lang = self.lc_messages.to_ascii_lowercase();
        !(lang.is_empty()
            || lang == "c"
            || lang.starts_with("c.")
            || lang == "posix"
            || lang.starts_with("en"))
    }

    /// Why this role must not serve tenant traffic, or `None` when it is fit.
    pub fn problem(&self) -> Option<String> {
        if self.superuser {
            Some(format!("database role {} is a superuser: row-level security would not apply; connect as tenantry_server", self.role))
        } else if self.bypass_rls {
            Some(format!("database role {} has BYPASSRLS: row-level security would not apply; connect as tenantry_server", self.role))
        } else if self.owned_objects > 0 {
            Some(format!("database role {} owns {} tenantry object(s): an owner can disable row-level security; connect as tenantry_server", self.role, self.owned_objects))
        } else if let Some(powerful) = self.powerful_roles.first() {
            let fix = if powerful.granted_to.is_empty() {
                format!("end {}'s membership in {}", self.role, powerful.role)
            } else {
                powerful
                    .granted_to
                    .iter()
                    .map(|member| format!("REVOKE {} FROM {member};", powerful.role))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let others = match self.powerful_roles.len() {
                1 => String::new(),
                n => format!(" ({} more such role(s) to revoke)", n - 1),
            };
            Some(format!(
                "database role {} can become {}, which {}: after SET ROLE, row-level security would not apply; {fix}{others}",
                self.role,
                powerful.role,
                powerful.why()
            ))
        } else {
            None
        }
    }
}

impl Database {
    /// Builds the pool. No connection is opened until first use.
    ///
    /// Refused ([`DbError::Invalid`], field `context_key`) without
    /// [`DatabaseConfig::context_key`]: every tenant and admin transaction
    /// proves its context with it, so a pool without one could serve nothing.
    pub fn connect(config: &DatabaseConfig) -> Result<Self, DbError> {
        let Some(context_key) = config.context_key.clone() else {
            return Err(DbError::invalid(
                "context_key",
                "no context key: tenant and admin transactions prove their context to the \
                 database with it (DatabaseConfig::with_context_key; `tenantry context-key` \
                 prints it, ContextKey::newest reads it as a superuser)",
            ));
        };
        let (mut pg, tls) = match &config.connect_to {
            ConnectTo::Url(url) => crate::tls::parse(url).map_err(|e| {
                DbError::invalid("database_url", format!("invalid database URL: {e}"))
            })?,
            ConnectTo::Config(pg) => ((**pg).clone(), crate::tls::TlsSettings::default()),
        };
        let tls = crate::tls::connector(&tls).map_err(|e| DbError::invalid("database_url", e))?;
        config.timeouts.apply(&mut pg);
        // The server's own connections (prepared mode) open a context session
        // when they connect; behind a pooler each transaction signs its context.
        let session_key = match config.statement_mode {
            StatementMode::Prepared => Some(context_key.clone()),
            StatementMode::Unnamed => None,
        };
        let acquire_timeout = (!config.acquire_timeout.is_zero()).then_some(config.acquire_timeout);
        // A pool of `max` such connections behind its bound on those in use.
        let sessions =
            |max: usize, what: &str| -> Result<(Pool, Arc<crate::session::Connections>), DbError> {
                let manager = Manager::from_config(
                    pg.clone(),
                    tls.clone(),
                    ManagerConfig {
                        recycling_method: RecyclingMethod::Fast,
                    },
                );
                let sessions = SessionManager::new(manager, session_key.clone());
                let open = sessions.open_connections();
                let pool = Pool::builder(sessions)
                    .max_size(max)
                    // 0: no bound (as the other timeouts, "left to the database").
                    .wait_timeout(acquire_timeout)
                    .create_timeout(acquire_timeout)
                    .recycle_timeout(acquire_timeout)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(|e| DbError::Internal(format!("building {what}: {e}")))?;
                let connections = Arc::new(crate::session::Connections::new(
                    pool.clone(),
                    open,
                    max,
                    acquire_timeout,
                ));
                Ok((pool, connections))
            };
        let (pool, connections) = sessions(config.max_connections.max(1), "the pool")?;
        let (_, probes) = sessions(1, "the probes' pool")?;
        Ok(Self {
            pool: pool.clone(),
            pg: pg.into(),
            tls: tls.clone(),
            mode: config.statement_mode,
            retry: config.retry,
            acquire_timeout,
            turns: crate::turns::TenantTurns::new(config.per_tenant_share()),
            connections: connections.clone(),
            probes,
            contexts: Arc::new(Contexts {
                key: context_key,
                parts: PartCache::new(config.context_cache_ttl, CONTEXT_CACHE_CAPACITY),
                reply_timeout: config.timeouts.reply_timeout,
                connections,
                tls,
            }),
        })
    }

    /// A connection of the pool ([`crate::session::Connections::get`]).
    pub(crate) async fn connection(&self) -> Result<Object, PoolError<SessionError>> {
        self.connections.get().await
    }

    pub(crate) fn contexts(&self) -> Arc<Contexts> {
        self.contexts.clone()
    }

    /// Forgets the cached context part of `tenant` (all of them for `None`):
    /// the next transaction for it asks the database. For changes made
    /// outside this library's own tenant functions; what another process
    /// announced goes through [`Database::apply_invalidation`].
    pub fn forget_tenant_contexts(&self, tenant: Option<TenantId>) {
        match tenant {
            Some(tenant) => self.contexts.parts.remove(tenant),
            None => self.contexts.parts.clear(),
        }
    }

    /// Drops the cached context parts an invalidation another process sent
    /// can concern: the one tenant a tenant event names (the database sends
    /// one for each ancestor whose subtree changed), every part for `all`,
    /// none for a key. Other tenants' parts stay, so one tenant's changes
    /// cost nobody else a round trip.
    pub fn apply_invalidation(&self, invalidation: crate::Invalidation) {
        match invalidation {
            crate::Invalidation::Key(_) => {}
            crate::Invalidation::Tenant(tag) => self.contexts.parts.remove_tag(tag),
            crate::Invalidation::All => self.contexts.parts.clear(),
        }
    }

    /// How many tenants' context parts this process holds (for metrics and tests).
    pub fn cached_context_parts(&self) -> usize {
        self.contexts.parts.len()
    }

    /// How [`Database::in_tenant`] retries.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The statement mode in use.
    pub fn statement_mode(&self) -> StatementMode {
        self.mode
    }

    /// Opens a transaction acting for `ctx.tenant`. Nothing is sent until its
    /// first statement, which carries BEGIN, the role and the context with it.
    /// Waits for the tenant's turn first when its transactions hold its
    /// share of the pool already ([`DatabaseConfig::max_connections_per_tenant`]).
    pub async fn tenant(&self, ctx: TenantContext) -> Result<TenantScope, DbError> {
        let turn = self.turns.take(ctx.tenant, self.acquire_timeout).await?;
        let client = self.connection().await?;
        Ok(TenantScope::new(client, self.mode, self.contexts(), ctx).with_turn(turn))
    }

    /// A turn in a lane of work that acts for no tenant yet, with one
    /// tenant's share of the pool: checking a credential the server has not
    /// cached (every unknown key and impersonation token shares the lane
    /// the nil uuid), or a signed-in person's own lookups (a lane per
    /// person). Without it a flood of made-up keys, or one person's
    /// requests outside any tenant, took every connection and slowed every
    /// tenant twentyfold to a thousandfold (found by a red-team review);
    /// now it waits its turn (then [`DbError::TenantBusy`], a 503) while
    /// tenants' transactions take the rest of the pool.
    pub(crate) async fn lane_turn(&self, lane: uuid::Uuid) -> Result<crate::turns::Turn, DbError> {
        self.turns
            .take(TenantId::from_uuid(lane), self.acquire_timeout)
            .await
            .map_err(|e| match e {
                // Said as what waits: the lane is no tenant's (its 503 said
                // "too many of this tenant's requests" to tenants that had
                // three in flight: found by a review of database failures).
                DbError::TenantBusy(_) => DbError::TenantBusy(format!(
                    "{} the most one tenant may hold at once (DatabaseConfig::max_connections_per_tenant), \
                     and this one waited {} ms",
                    if lane.is_nil() {
                        crate::error::CREDENTIALS_BUSY
                    } else {
                        crate::error::PERSON_BUSY
                    },
                    self.acquire_timeout.unwrap_or_default().as_millis()
                )),
                other => other,
            })
    }

    /// The turn of a credential's check: in the share of the tenant it was
    /// last known to act in, else in the lane of credentials the server
    /// does not know ([`Database::lane_turn`]).
    pub(crate) async fn credential_turn(
        &self,
        last_tenant: Option<TenantId>,
    ) -> Result<crate::turns::Turn, DbError> {
        match last_tenant {
            Some(tenant) => self.turns.take(tenant, self.acquire_timeout).await,
            None => self.lane_turn(uuid::Uuid::nil()).await,
        }
    }

    /// Opens an administrative transaction; `actor` labels its audit rows.
    pub async fn admin(&self, actor: impl Into<String>) -> Result<AdminScope, DbError> {
        let client = self.connection().await?;
        Ok(AdminScope::new(
            client,
            self.mode,
            self.contexts(),
            actor.into(),
        ))
    }

    /// Verifies an API key: `None` for malformed, unknown, revoked and expired keys alike.
    ///
    /// Only the prefix and SHA-256 of the key leave the process; the database
    /// compares hashes in constant time and records the last use.
    pub async fn verify_key(&self, key: &str) -> Result<Option<KeyIdentity>, DbError> {
        self.verify_key_known_to(key, None).await
    }

    /// [`Database::verify_key`] for a key last known (by a cache whose entry
    /// of the very same secret expired) to be `last_tenant`'s: the check
    /// waits in that tenant's share of the pool, not in the lane that every
    /// credential the server does not know shares, which anyone can fill
    /// with made-up keys (found by a review of noisy neighbours: a tenant's
    /// key whose cache entry expired each second then waited behind them).
    /// What the check answers does not depend on `last_tenant`.
    pub async fn verify_key_known_to(
        &self,
        key: &str,
        last_tenant: Option<TenantId>,
    ) -> Result<Option<KeyIdentity>, DbError> {
        let Some(secret) = ApiKeySecret::parse(key) else {
            return Ok(None);
        };
        let _turn = self.credential_turn(last_tenant).await?;
        let client = self.connection().await?;
        let prefix = secret.prefix().to_owned();
        let hash = secret.sha256().to_vec();
        let stmt = Stmt {
            sql: "SELECT tenantry.verify_api_key_hash($1, $2)",
            params: &[&prefix, &hash],
            types: &[Type::TEXT, Type::BYTEA],
        };
        // On the server's own connection (its session tenantry_app, its
        // statements its own: no SQL of a caller ran on it since it was
        // checked) the function is one statement in a transaction of its
        // own, without BEGIN and COMMIT around it: a third of the statements
        // of a key the server has not cached (docs/benchmarks.md, "What a key
        // the server has not cached costs"). Elsewhere (behind pgbouncer,
        // after caller SQL, on Citus) the checked transaction as before.
        let rows = if self.mode == StatementMode::Prepared
            && client.chain.is_some()
            && !client.ran_caller_sql
            && !client.citus
        {
            let prepared = client.prepare_typed_cached(stmt.sql, stmt.types).await?;
            client.query(&prepared, stmt.params).await?
        } else {
            let mut tx = Tx::anonymous(client, self.mode, self.contexts());
            tx.query_and_commit(stmt).await?
        };
        let value: Option<serde_json::Value> = rows.first().and_then(|r| r.get(0));
        value.map(KeyIdentity::from_json).transpose()
    }

    /// How far the database's clock is ahead of this process's (negative:
    /// behind), measured against the middle of one round trip. The database
    /// checks what expires (keys, impersonations, context sessions signed
    /// with an expiry) by its clock, this process what a client sends
    /// (`expires_at` in the future, people's tokens' `exp`): `tenantry
    /// serve` refuses to start when they disagree by more than a minute.
    pub async fn clock_skew(&self) -> Result<chrono::TimeDelta, DbError> {
        let client = self.connection().await?;
        let sent = chrono::Utc::now();
        // Unnamed: this boot check also runs through pgbouncer.
        let rows = client
            .query_typed(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8",
                &[],
            )
            .await?;
        let received = chrono::Utc::now();
        let micros: i64 = rows
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| DbError::Internal("no clock reading".into()))?;
        let middle = sent + (received - sent) / 2;
        Ok(chrono::TimeDelta::microseconds(micros)
            - chrono::TimeDelta::microseconds(middle.timestamp_micros()))
    }

    /// Reports the attributes of the login role this pool connects as.
    pub async fn login_role_check(&self) -> Result<LoginRoleCheck, DbError> {
        let client = self.connection().await?;
        // An unnamed statement: this boot check also runs through pgbouncer.
        // The login reads no tenantry table here (it may not): tenant schemas
        // are found by their name's form, the one tenants.schema_name allows.
        let rows = client
            .query_typed(
                "WITH watched AS (
                    SELECT oid, nspowner FROM pg_namespace
                     WHERE nspname = 'tenantry' OR nspname ~ '^tenant_[0-9a-f]{20}$'
                 ), owned AS (
                    SELECT owner, count(*) AS n FROM (
                        SELECT c.relowner FROM pg_class c JOIN watched w ON w.oid = c.relnamespace
                        UNION ALL
                        SELECT p.proowner FROM pg_proc p JOIN watched w ON w.oid = p.pronamespace
                        UNION ALL
                        SELECT nspowner FROM watched
                    ) o (owner) GROUP BY owner
                 ), login AS (
                    SELECT r.oid, r.rolname, r.rolsuper, r.rolbypassrls, coalesce(o.n, 0) AS owned
                      FROM pg_roles r LEFT JOIN owned o ON o.owner = r.oid
                     WHERE r.rolname = session_user
                 )
                 SELECT l.rolname::text, l.rolsuper, l.rolbypassrls, l.owned,
                        p.rolname::text, p.rolsuper, p.rolbypassrls, p.owned, p.granted_to,
                        pg_catalog.current_setting('lc_messages')
                   FROM login l
                   LEFT JOIN LATERAL (
                    SELECT d.rolname, d.rolsuper, d.rolbypassrls, coalesce(o.n, 0) AS owned,
                           ARRAY(SELECT m.rolname::text FROM pg_auth_members a
                                   JOIN pg_roles m ON m.oid = a.member
                                  WHERE a.roleid = d.oid AND pg_has_role(l.oid, a.member, 'MEMBER')
                                  ORDER BY m.oid <> l.oid, 1) AS granted_to
                      FROM pg_roles d LEFT JOIN owned o ON o.owner = d.oid
                     WHERE d.oid <> l.oid AND pg_has_role(l.oid, d.oid, 'MEMBER')
                       AND (d.rolsuper OR d.rolbypassrls OR d.rolname = 'tenantry_owner' OR o.n > 0)
                  ) p ON true
                  ORDER BY p.rolname = 'tenantry_owner' DESC, p.rolname",
                &[],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| DbError::Internal("the login role is not in pg_roles".into()))?;
        let powerful_roles = rows
            .iter()
            .filter_map(|row| {
                Some(PowerfulRole {
                    role: row.get::<_, Option<String>>(4)?,
                    superuser: row.get(5),
                    bypass_rls: row.get(6),
                    owned_objects: row.get(7),
                    granted_to: row.get(8),
                })
            })
            .collect();
        Ok(LoginRoleCheck {
            role: row.get(0),
            superuser: row.get(1),
            bypass_rls: row.get(2),
            owned_objects: row.get(3),
            powerful_roles,
            lc_messages: row.get(9),
        })
    }

    /// Round trip to the database (readiness probes), within the reply timeout.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.probe("SELECT 1").await.map(drop)
    }

    /// Why the database takes no writes, if it does not, within the reply
    /// timeout: a standby (in recovery), or sessions that start read-only
    /// (`default_transaction_read_only`, as a reload of the primary's
    /// settings turns it on for the sessions already open). Tenant requests
    /// then all fail, so readiness says so (found by a failover review:
    /// `/readyz` answered 200 from a server on a read-only database).
    pub async fn writes_refused(&self) -> Result<Option<WritesRefused>, DbError> {
        let sql = "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN 'standby' \
                   WHEN pg_catalog.current_setting('transaction_read_only')::bool THEN 'read-only' \
                   ELSE '' END";
        // A connection the pool opens now is refused at its context
        // session's draw already, saying why (the default, prepared mode);
        // one opened before the database turned read-only answers the query.
        let client = match self.probes.get().await {
            Err(PoolError::Backend(SessionError::ReadOnly(why, _))) => return Ok(Some(why)),
            connection => connection?,
        };
        Ok(match self.probe_on(client, sql).await?.as_deref() {
            Some("standby") => Some(WritesRefused::Standby),
            Some("read-only") => Some(WritesRefused::ReadOnlySessions),
            _ => None,
        })
    }

    /// Whether this server's context key is live (not retired), within the
    /// reply timeout: once it was retired every transaction is refused, and
    /// readiness says so at once (`tenantry.context_key_live`).
    pub async fn context_key_live(&self) -> Result<bool, DbError> {
        // The key's id is this process's own integer: nothing to quote. As
        // the app role, in a transaction of its own: behind a pooler
        // (statement mode unnamed) the login itself holds no role, and
        // EXECUTE is the app role's (found by an operations review: /readyz
        // answered 503 behind pgbouncer, always); `set_config`, not `SET
        // LOCAL ROLE`, which Citus workers refuse.
        let sql = format!(
            "BEGIN; SELECT pg_catalog.set_config('role', 'tenantry_app', true); \
             SELECT tenantry.context_key_live({}); COMMIT",
            self.contexts.key.id()
        );
        Ok(self.probe(&sql).await?.as_deref() == Some("t"))
    }

    /// One simple query of a readiness probe on a pooled connection, within
    /// the reply timeout: the first value of the last row it answers. A
    /// connection whose reply did not come in time is never reused (it may
    /// still arrive).
    async fn probe(&self, sql: &str) -> Result<Option<String>, DbError> {
        self.probe_on(self.probes.get().await?, sql).await
    }

    /// [`Database::probe`] on a connection taken already.
    async fn probe_on(&self, client: Object, sql: &str) -> Result<Option<String>, DbError> {
        let answered = within(self.contexts.reply_timeout, async {
            let messages = client.simple_query(sql).await?;
            Ok(messages.iter().rev().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            }))
        })
        .await;
        if answered.is_err() {
            drop(Object::take(client));
        }
        answered
    }

    /// Checks that the schema matches this build (see [`crate::migrate::check`]).
    /// A database out of reach is [`MigrateError::Unavailable`], never a count of pending migrations.
    pub async fn check_schema(&self) -> Result<(), MigrateError> {
        let client = self.probes.get().await.map_err(|e| match e {
            PoolError::Backend(SessionError::Db(e))
                if !matches!(classify(&e), DbError::Unavailable(_)) =>
            {
                MigrateError::Database(e)
            }
            // The database's own words ("database … does not exist", "password
            // authentication failed"), not only the pool's "db error".
            PoolError::Backend(SessionError::Db(e)) => {
                MigrateError::Unavailable(crate::error::describe(&e))
            }
            // Reached, and refused: not an outage.
            PoolError::Backend(refused) => MigrateError::Refused(refused.to_string()),
            other => MigrateError::Unavailable(crate::error::with_sources(&other)),
        })?;
        let checked = as_login(&client, crate::migrate::check(&client));
        match self.contexts.reply_timeout {
            None => checked.await?,
            Some(limit) => match tokio::time::timeout(limit, checked).await {
                Ok(checked) => checked?,
                Err(_) => {
                    drop(Object::take(client));
                    Err(MigrateError::Unavailable(format!(
                        "no reply from the database within {} ms",
                        limit.as_millis()
                    )))
                }
            },
        }
    }

    /// The doctor's findings on adopted tables ([`crate::tables::table_problems`]),
    /// as the server's login; the server refuses to start on any that
    /// [`crate::TableProblem::blocks_serving`].
    pub async fn table_problems(&self) -> Result<Vec<crate::TableProblem>, DbError> {
        self.table_problems_waiting(None).await
    }

    /// [`Database::table_problems`], each lock the check needs waited for at
    /// most `lock_wait` (`None`: as long as the statement timeout allows,
    /// whatever the pool's `lock_timeout`; the doctor reads policies and indexes, which waits
    /// for a session holding a table exclusively): a check run again while
    /// serving gives up and is tried later, where it held up the work after
    /// it for as long as such a session kept its lock when the pool's
    /// sessions have no `statement_timeout`.
    pub async fn table_problems_waiting(
        &self,
        lock_wait: Option<Duration>,
    ) -> Result<Vec<crate::TableProblem>, DbError> {
        let client = self.connection().await?;
        let problems = as_login(&client, async {
            match lock_wait {
                Some(wait) => client.batch_execute(&set_local_lock_timeout(wait)).await?,
                // As long as the statement timeout allows, over the pool's
                // lock_timeout (meant for requests): serve's check at start
                // failed after 2 s behind a migration's lock (found by a
                // review of that bound).
                None => client.batch_execute("SET LOCAL lock_timeout = 0").await?,
            }
            crate::tables::table_problem_rows(&client).await
        })
        .await?;
        // Told apart as every statement's errors are: a lock waited for
        // past its bound is contention, a cancelled statement the database's
        // unavailability (a review of the lock timeout saw serve exit on
        // "internal database error").
        problems.map_err(DbError::from)
    }

    /// How many connections the database refused this pool for want of a
    /// connection slot (53300), since it was built: each such refusal
    /// narrows the pool to the connections it has for a while.
    pub fn pool_refusals(&self) -> u64 {
        self.connections.refused()
    }

    /// Pool size and idle connections, for metrics.
    pub fn pool_status(&self) -> deadpool_postgres::Status {
        let mut status = self.pool.status();
        // Narrowed while the database has no connection slot left.
        status.max_size = self.connections.allowed();
        // Those waiting at the gate (deadpool sees only those it let through).
        status.waiting += self.connections.waiting();
        status
    }

    /// The settings the pool connects with, for a connection of one's own
    /// outside the pool (the invalidation listener, [`crate::Invalidations`]).
    pub fn connect_config(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    /// The TLS connector the pool connects with (see [`crate::tls`]).
    pub fn tls_connector(&self) -> &tokio_postgres_rustls::MakeRustlsConnect {
        &self.tls
    }
}

/// `wait` as a value of a time setting such as `lock_timeout` or
/// `statement_timeout` (`<n>ms`), at least 1 ms: 0 would mean no limit at all.
pub(crate) fn millis_setting(wait: Duration) -> String {
    format!("{}ms", wait.as_millis().max(1))
}

/// The statement that bounds each lock wait of the rest of the transaction
/// by `wait` ([`millis_setting`]).
pub(crate) fn set_local_lock_timeout(wait: Duration) -> String {
    format!("SET LOCAL lock_timeout = '{}'", millis_setting(wait))
}

/// Runs `work` (statements on `client`) in a transaction as the login itself:
/// the server's own connections are `tenantry_app` for the whole session,
/// and the boot checks read what only the login (and administrators) may.
async fn as_login<T>(
    client: &tokio_postgres::Client,
    work: impl std::future::Future<Output = T>,
) -> Result<T, tokio_postgres::Error> {
    client.batch_execute("BEGIN; SET LOCAL ROLE NONE").await?;
    let out = work.await;
    client.batch_execute("COMMIT").await?;
    Ok(out)
}

/// Why a database takes no writes ([`Database::writes_refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritesRefused {
    /// A standby, in recovery.
    Standby,
    /// A primary whose sessions start read-only (`default_transaction_read_only`).
    ReadOnlySessions,
}

impl std::fmt::Display for WritesRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WritesRefused::Standby => {
                "the database is a standby (in recovery), which takes no writes: with several \
                 hosts in DATABASE_URL, add target_session_attrs=read-write so that the primary \
                 is chosen"
            }
            WritesRefused::ReadOnlySessions => {
                "the server's sessions start read-only (default_transaction_read_only is on): \
                 on a primary, a superuser undoes a default with ALTER ROLE <login> RESET \
                 default_transaction_read_only (or ALTER DATABASE … RESET; SELECT * FROM \
                 pg_db_role_setting lists them), or one of the whole cluster with ALTER SYSTEM \
                 RESET default_transaction_read_only and SELECT pg_reload_conf() (SHOW \
                 default_transaction_read_only says which is in force)"
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_schema_check_against_a_closed_port_reports_the_database_unavailable() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut config = DatabaseConfig::new(format!("postgres://nobody@127.0.0.1:{port}/none"))
            .with_context_key(ContextKey::new(1, [7; 32]));
        config.acquire_timeout = Duration::from_secs(2);
        let db = Database::connect(&config).unwrap();
        let err = db.check_schema().await.unwrap_err();
        assert!(matches!(err, MigrateError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().starts_with("database unavailable"), "{err}");
    }

    #[test]
    fn a_pool_without_a_context_key_is_refused_when_it_is_built_not_on_every_request() {
        let config = DatabaseConfig::new("postgres://nobody@127.0.0.1:1/none");
        let Err(err) = Database::connect(&config) else {
            panic!("a pool without a context key was built");
        };
        assert!(
            matches!(&err, DbError::Invalid { field: Some(f), .. } if f == "context_key"),
            "{err:?}"
        );
        assert!(err.to_string().contains("with_context_key"), "{err}");
    }
}
