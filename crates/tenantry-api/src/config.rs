//! Server settings, layered in one place: defaults, then an optional TOML file, then environment variables (the CLI applies its flags last). Secrets are wrapped so they never print.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use tenantry_db::{ListenTo, StatementMode, Timeouts};

/// The database timeouts the server's settings default to (the library's
/// [`Timeouts::server`], which an application of its own may use too).
const SERVER_TIMEOUTS: Timeouts = Timeouts::server();

/// A default timeout in the settings' milliseconds (0: none).
fn millis(t: Option<Duration>) -> u64 {
    t.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The admin token's hash (tenant routes must tell it apart, so it lives with them).
pub use tenantry_axum::AdminToken;

/// A string that never appears in Debug output or logs.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Everything the server can be told. Field names are the TOML keys; each has a
/// `TENANTRY_<UPPER_NAME>` environment variable (and `DATABASE_URL`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Database of the server's login role; unset: the embedded cluster.
    pub database_url: Option<Secret>,
    /// Where the cache invalidation listener connects (`LISTEN
    /// tenantry_invalidate`); unset: the pool's own database. It needs a
    /// session of its own on PostgreSQL: behind a transaction-pooling pooler
    /// (pgbouncer, `statement_mode = "unnamed"`) set it to PostgreSQL itself.
    pub invalidation_url: Option<Secret>,
    /// Data directory (embedded cluster, admin token file).
    pub data_dir: PathBuf,
    /// Admin token; unset: generated once into `<data_dir>/admin.token`.
    pub admin_token: Option<Secret>,
    /// A bearer token that reads `/metrics` and nothing else (for Prometheus'
    /// `authorization` setting, so the scraper does not hold the admin token).
    /// Unset: `/metrics` takes the admin token only.
    pub metrics_token: Option<Secret>,
    /// Whether `/metrics` answers requests without an `Authorization` header
    /// (its totals, without the busiest tenants' series). Off (default): its
    /// counters are every tenant's traffic by route, which with few tenants
    /// is one tenant's activity, so they need the admin or metrics token.
    pub metrics_public: bool,
    /// The database's context key, `<id>:<hex>` (`tenantry context-key` prints
    /// it): how the server proves each transaction's tenant. Needed with
    /// `database_url`; the embedded cluster's is read from it.
    pub context_key: Option<Secret>,
    /// `prepared` (default) or `unnamed` (behind transaction-pooling poolers such as pgbouncer).
    pub statement_mode: String,
    /// Pool size.
    pub max_connections: usize,
    /// How many of the pool's connections one tenant's requests may hold at
    /// once (its next one waits for one of its own, then 503); 0: a quarter
    /// of `max_connections`, at least 2.
    pub max_connections_per_tenant: usize,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Seconds between refreshes of `tenant_metrics` (0: never).
    pub metrics_refresh_secs: u64,
    /// Whether each request gets a `request_log` row (usage metrics come from them).
    pub request_log: bool,
    /// Capacity of the request-log queue; when full, rows are dropped and counted.
    pub request_log_queue: usize,
    /// Most rows written per request-log batch.
    pub request_log_batch: usize,
    /// How many of the busiest tenants `/metrics` and `tenantry top` name (the rest are `other`).
    pub tenant_stats_top: usize,
    /// Length of a per-tenant stats period, in seconds.
    pub tenant_stats_period_secs: u64,
    /// How long a verified key is trusted without asking the database, in milliseconds.
    pub key_cache_ttl_ms: u64,
    /// How long shutdown waits for in-flight requests, in seconds.
    pub shutdown_grace_secs: u64,
    /// How long an HTTP client has to send a request's headers (on a new
    /// connection, or between requests on one kept alive), in milliseconds;
    /// then its connection is closed.
    pub http_header_timeout_ms: u64,
    /// How long a response may wait for its client to take its bytes (at
    /// least 64 KiB in that time since the socket last refused more), in
    /// milliseconds; then its connection is closed.
    pub http_send_timeout_ms: u64,
    /// How long a request's body may take to arrive once its headers have,
    /// in milliseconds; then it is answered 408 and its connection closed.
    pub http_body_timeout_ms: u64,
    /// HTTP connections open at once; more wait to be accepted.
    pub http_max_connections: usize,
    /// Most requests of one tenant in flight at once on this server, body
    /// and handler included (0: no limit); past it, 429 `rate_limited`.
    pub max_requests_in_flight_per_tenant: usize,
    /// Days of the request log kept (at least 2); 0: never dropped.
    pub request_log_keep_days: u32,
    /// Reverse proxies in front of the server (networks or addresses, such
    /// as `10.0.0.0/8` or `127.0.0.1`): for a request from one of them, the
    /// client whose address a key limited to addresses is checked against is
    /// the last address of `X-Forwarded-For` that is not one of them. Empty
    /// (default): the connection's peer, `X-Forwarded-For` ignored.
    pub trusted_proxies: Vec<String>,
    /// Origins of browser applications that may call the API from another
    /// origin (CORS), such as `https://app.example.com`, or `*` for any.
    /// Empty (default): the server sends no CORS headers, so a browser lets
    /// only pages of the server's own origin (the console) read its answers.
    pub cors_origins: Vec<String>,
    /// How long a request waits for a database connection before a 503, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// `statement_timeout` of the server's database sessions, in milliseconds
    /// (0: the role's or database's own): a statement running longer is
    /// cancelled and its request answered 503.
    pub statement_timeout_ms: u64,
    /// `lock_timeout` of the server's database sessions, in milliseconds
    /// (0: the role's or database's own): a request waiting longer for a
    /// lock is answered 503 and gives its connection back, so that a lock
    /// held on a shared table (SQL injected into an application) does not
    /// take the whole pool from every tenant's other requests.
    pub lock_timeout_ms: u64,
    /// `idle_in_transaction_session_timeout` of the server's sessions, in
    /// milliseconds (0: the role's or database's own): PostgreSQL ends a
    /// session whose transaction idles longer, releasing its locks (a server
    /// cut off mid-transaction never comes back to finish it).
    pub idle_in_transaction_timeout_ms: u64,
    /// How long the server waits for the database's reply to a flight of
    /// statements before giving the connection up and answering 503, in
    /// milliseconds (0: forever). Must exceed `statement_timeout_ms`.
    pub database_reply_timeout_ms: u64,
    /// `TCP_USER_TIMEOUT` of the server's database connections, in
    /// milliseconds (0: the operating system's, about 15 minutes on Linux).
    pub tcp_user_timeout_ms: u64,
    /// Seconds a database connection idles before TCP keepalive probes start
    /// (every 5 s, 3 unanswered drop it; 0: the operating system's, 2 hours on Linux).
    pub tcp_keepalive_idle_secs: u64,
    /// Base URL of an OpenTelemetry collector (OTLP/HTTP, e.g.
    /// `http://127.0.0.1:4318`) to export request and database spans to;
    /// needs a build with the cargo feature `otlp`. Unset: no export.
    pub otlp_endpoint: Option<String>,
    /// People signing in with the team's identity provider (`[jwt]` in the
    /// file: issuer, audience, jwks_url and/or hs256_secret, tenant_claim,
    /// leeway_secs, …; or `TENANTRY_JWT_ISSUER`, `TENANTRY_JWT_AUDIENCE`
    /// (comma-separated), `TENANTRY_JWT_JWKS_URL`, `TENANTRY_JWT_HS256_SECRET`,
    /// `TENANTRY_JWT_TENANT_CLAIM`, `TENANTRY_JWT_USER_CLAIM`,
    /// `TENANTRY_JWT_LEEWAY_SECS`, `TENANTRY_JWT_EMAIL_CLAIM`,
    /// `TENANTRY_JWT_EMAIL_VERIFIED_CLAIM`,
    /// `TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED_CLAIM`,
    /// `TENANTRY_JWT_JWKS_REFRESH_SECS`, `TENANTRY_JWT_JWKS_MIN_REFETCH_SECS`).
    /// Unset: API keys only.
    pub jwt: Option<tenantry_axum::jwt::JwtConfig>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            database_url: None,
            invalidation_url: None,
            data_dir: PathBuf::from(".tenantry"),
            admin_token: None,
            metrics_token: None,
            metrics_public: false,
            context_key: None,
            statement_mode: "prepared".into(),
            max_connections: 16,
            max_connections_per_tenant: 0,
            body_limit_bytes: 1024 * 1024,
            metrics_refresh_secs: 60,
            request_log: true,
            request_log_queue: 10_000,
            request_log_batch: 500,
            tenant_stats_top: 10,
            tenant_stats_period_secs: 60,
            key_cache_ttl_ms: 1_000,
            shutdown_grace_secs: 10,
            http_header_timeout_ms: 15_000,
            http_send_timeout_ms: 30_000,
            http_body_timeout_ms: 30_000,
            http_max_connections: 10_000,
            max_requests_in_flight_per_tenant: tenantry_axum::DEFAULT_REQUESTS_IN_FLIGHT_PER_TENANT,
            request_log_keep_days: tenantry_db::REQUEST_LOG_KEEP_DAYS,
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            acquire_timeout_ms: 2_000,
            statement_timeout_ms: millis(SERVER_TIMEOUTS.statement_timeout),
            lock_timeout_ms: millis(SERVER_TIMEOUTS.lock_timeout),
            idle_in_transaction_timeout_ms: millis(SERVER_TIMEOUTS.idle_in_transaction_timeout),
            database_reply_timeout_ms: millis(SERVER_TIMEOUTS.reply_timeout),
            tcp_user_timeout_ms: 10_000,
            tcp_keepalive_idle_secs: 10,
            otlp_endpoint: None,
            jwt: None,
        }
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or a variable holds an invalid value.
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Defaults, then the TOML file (if given), then environment variables.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, SettingsError> {
        let mut settings = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                    path: path.into(),
                    source,
                })?;
                from_toml(path, &text)?
            }
            None => Settings::default(),
        };
        settings.apply_env(|k| std::env::var(k).ok())?;
        tenantry_axum::jwt::JwtConfig::refuse_unknown_process_env()
            .map_err(SettingsError::Invalid)?;
        Ok(settings)
    }

    /// Applies environment variables (through `get`, for tests).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), SettingsError> {
        fn parse<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, SettingsError>
        where
            T::Err: fmt::Display,
        {
            v.parse()
                .map_err(|e| SettingsError::Invalid(format!("{name}={v:?}: {e}")))
        }
        if let Some(v) = get("TENANTRY_LISTEN") {
            self.listen = parse("TENANTRY_LISTEN", &v)?;
        }
        if let Some(v) = get("DATABASE_URL").filter(|v| !v.is_empty()) {
            self.database_url = Some(Secret::new(v));
        }
        if let Some(v) = get("TENANTRY_INVALIDATION_URL").filter(|v| !v.is_empty()) {
            self.invalidation_url = Some(Secret::new(v));
        }
        if let Some(v) = get("TENANTRY_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("TENANTRY_ADMIN_TOKEN").filter(|v| !v.is_empty()) {
            self.admin_token = Some(Secret::new(v));
        }
        if let Some(v) = get("TENANTRY_METRICS_TOKEN").filter(|v| !v.is_empty()) {
            self.metrics_token = Some(Secret::new(v));
        }
        if let Some(v) = get("TENANTRY_CONTEXT_KEY").filter(|v| !v.is_empty()) {
            self.context_key = Some(Secret::new(v));
        }
        if let Some(v) = get("TENANTRY_OTLP_ENDPOINT").filter(|v| !v.is_empty()) {
            self.otlp_endpoint = Some(v);
        }
        if let Some(v) = get("TENANTRY_STATEMENT_MODE") {
            self.statement_mode = v;
        }
        if let Some(v) = get("TENANTRY_TRUSTED_PROXIES") {
            self.trusted_proxies = comma_separated(&v);
        }
        if let Some(v) = get("TENANTRY_CORS_ORIGINS") {
            self.cors_origins = comma_separated(&v);
        }
        macro_rules! num {
            ($($var:literal => $field:ident),*) => {$(
                if let Some(v) = get($var) { self.$field = parse($var, &v)?; }
            )*};
        }
        // Each variable overrides its own key of the file's [jwt] section (the
        // issuer starts one when the file has none); the others keep theirs.
        tenantry_axum::jwt::JwtConfig::apply_env(&mut self.jwt, &get)
            .map_err(SettingsError::Invalid)?;
        num! {
            "TENANTRY_MAX_CONNECTIONS" => max_connections,
            "TENANTRY_MAX_CONNECTIONS_PER_TENANT" => max_connections_per_tenant,
            "TENANTRY_BODY_LIMIT_BYTES" => body_limit_bytes,
            "TENANTRY_METRICS_REFRESH_SECS" => metrics_refresh_secs,
            "TENANTRY_REQUEST_LOG" => request_log,
            "TENANTRY_METRICS_PUBLIC" => metrics_public,
            "TENANTRY_REQUEST_LOG_QUEUE" => request_log_queue,
            "TENANTRY_REQUEST_LOG_BATCH" => request_log_batch,
            "TENANTRY_TENANT_STATS_TOP" => tenant_stats_top,
            "TENANTRY_TENANT_STATS_PERIOD_SECS" => tenant_stats_period_secs,
            "TENANTRY_KEY_CACHE_TTL_MS" => key_cache_ttl_ms,
            "TENANTRY_SHUTDOWN_GRACE_SECS" => shutdown_grace_secs,
            "TENANTRY_HTTP_HEADER_TIMEOUT_MS" => http_header_timeout_ms,
            "TENANTRY_HTTP_SEND_TIMEOUT_MS" => http_send_timeout_ms,
            "TENANTRY_HTTP_BODY_TIMEOUT_MS" => http_body_timeout_ms,
            "TENANTRY_HTTP_MAX_CONNECTIONS" => http_max_connections,
            "TENANTRY_MAX_REQUESTS_IN_FLIGHT_PER_TENANT" => max_requests_in_flight_per_tenant,
            "TENANTRY_REQUEST_LOG_KEEP_DAYS" => request_log_keep_days,
            "TENANTRY_ACQUIRE_TIMEOUT_MS" => acquire_timeout_ms,
            "TENANTRY_STATEMENT_TIMEOUT_MS" => statement_timeout_ms,
            "TENANTRY_LOCK_TIMEOUT_MS" => lock_timeout_ms,
            "TENANTRY_IDLE_IN_TRANSACTION_TIMEOUT_MS" => idle_in_transaction_timeout_ms,
            "TENANTRY_DATABASE_REPLY_TIMEOUT_MS" => database_reply_timeout_ms,
            "TENANTRY_TCP_USER_TIMEOUT_MS" => tcp_user_timeout_ms,
            "TENANTRY_TCP_KEEPALIVE_IDLE_SECS" => tcp_keepalive_idle_secs
        }
        self.validate()
    }

    /// [`Settings::trusted_proxies`] as networks; an entry that is neither a
    /// network nor an address is refused, naming it (taken as nothing, a
    /// proxy meant to be trusted would not be, and keys limited to
    /// addresses would see the proxy as every client).
    pub fn trusted_proxies(&self) -> Result<std::sync::Arc<[ipnet::IpNet]>, SettingsError> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                tenantry_axum::auth::parse_network(p).ok_or_else(|| {
                    SettingsError::Invalid(format!(
                        "trusted_proxies (TENANTRY_TRUSTED_PROXIES): {p:?} is neither a network such \
                         as 10.0.0.0/8 nor an address"
                    ))
                })
            })
            .collect()
    }

    /// [`Settings::cors_origins`] checked: `*` alone, or origins as a
    /// browser sends them in `Origin` (`https://app.example.com`, a port
    /// when not the scheme's own), compared in lower case. A path, even a
    /// lone `/`, is refused by name: a browser never sends one, so such an
    /// entry would match no page.
    pub fn cors_origins(&self) -> Result<CorsOrigins, SettingsError> {
        let refuse = |o: &str, why: &str| {
            SettingsError::Invalid(format!(
                "cors_origins (TENANTRY_CORS_ORIGINS): {o:?} {why}; an origin is a scheme and a host, \
                 such as https://app.example.com or http://localhost:3000, or * alone for any"
            ))
        };
        if self.cors_origins.is_empty() {
            return Ok(CorsOrigins::None);
        }
        if self.cors_origins.iter().any(|o| o.trim() == "*") {
            return match self.cors_origins.len() {
                1 => Ok(CorsOrigins::Any),
                _ => Err(refuse("*", "stands alone")),
            };
        }
        self.cors_origins
            .iter()
            .map(|o| {
                let origin = o.trim().to_ascii_lowercase();
                let Some((scheme, host)) = origin.split_once("://") else {
                    return Err(refuse(o, "has no scheme"));
                };
                if scheme != "http" && scheme != "https" {
                    return Err(refuse(o, "is neither http:// nor https://"));
                }
                if host.is_empty() || host.contains(['/', '?', '#', '@', ' ', '*']) {
                    return Err(refuse(
                        o,
                        "is not a scheme and a host alone (no path, not even /, no wildcard)",
                    ));
                }
                // What a browser never sends, so that the entry would match
                // no page: its scheme's own port, a host's trailing dot, a
                // host not in its ASCII (punycode) form.
                let default_port = if scheme == "https" { ":443" } else { ":80" };
                if host.ends_with(default_port) {
                    return Err(refuse(o, "names its scheme's own port, which browsers leave out"));
                }
                if host.ends_with('.') || host.contains(".:") {
                    return Err(refuse(o, "ends its host with a dot"));
                }
                if !host.is_ascii() {
                    return Err(refuse(
                        o,
                        "has a host that is not ASCII: write it as browsers send it, in punycode (xn--…)",
                    ));
                }
                axum::http::HeaderValue::from_str(&origin)
                    .map_err(|_| refuse(o, "is not a header value"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(CorsOrigins::Listed)
    }

    /// Checks cross-field rules.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.statement_mode()?;
        self.context_key()?;
        self.invalidations()?;
        if self.invalidation_url.is_none()
            && self.database_url.is_some()
            && self.statement_mode()? == StatementMode::Unnamed
        {
            // Through a transaction pooler LISTEN lands on whichever backend
            // the pooler picks, and so may the listener's own heartbeat: the
            // listener would look healthy while other servers' revocations
            // never reach it, and revoked keys would be served until
            // key_cache_ttl_ms ran out.
            return Err(SettingsError::Invalid(
                "statement_mode = unnamed (a transaction pooler) needs invalidation_url: the cache \
                 invalidation listener holds a session of its own, which a pooler does not give; \
                 set invalidation_url (TENANTRY_INVALIDATION_URL) to PostgreSQL itself, or to \
                 database_url when no pooler is in between"
                    .into(),
            ));
        }
        if self.body_limit_bytes == 0 {
            return Err(SettingsError::Invalid(
                "body_limit_bytes (TENANTRY_BODY_LIMIT_BYTES) must be above 0: with 0 every write \
                 would be refused as too large"
                    .into(),
            ));
        }
        if self.http_header_timeout_ms == 0
            || self.http_send_timeout_ms == 0
            || self.http_body_timeout_ms == 0
            || self.http_max_connections == 0
        {
            return Err(SettingsError::Invalid(
                "http_header_timeout_ms, http_body_timeout_ms, http_send_timeout_ms and \
                 http_max_connections must be above 0: without deadlines, clients that send half \
                 a request or never read their answer keep their connections (and the request or \
                 the answer) for ever"
                    .into(),
            ));
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            return Err(SettingsError::Invalid(
                "admin_token (TENANTRY_ADMIN_TOKEN) is empty: leave it unset to have one generated, \
                 or set a long random secret (openssl rand -hex 32)"
                    .into(),
            ));
        }
        if let Some(t) = &self.metrics_token {
            if t.expose().trim().is_empty() {
                return Err(SettingsError::Invalid(
                    "metrics_token (TENANTRY_METRICS_TOKEN) is empty: leave it unset, or set a long \
                     random secret (openssl rand -hex 32)"
                        .into(),
                ));
            }
            if self
                .admin_token
                .as_ref()
                .is_some_and(|a| a.expose() == t.expose())
            {
                return Err(SettingsError::Invalid(
                    "metrics_token (TENANTRY_METRICS_TOKEN) is the admin token: give the scraper a \
                     secret of its own, which reads /metrics and nothing else"
                        .into(),
                ));
            }
        }
        if let Some(jwt) = &self.jwt {
            jwt.validate().map_err(SettingsError::Invalid)?;
        }
        self.trusted_proxies()?;
        self.cors_origins()?;
        // The operating system's limits (Linux: TCP_USER_TIMEOUT is an int
        // of milliseconds, TCP_KEEPIDLE at most 32767 s): beyond, every
        // connection failed with "Invalid argument", blamed on the database
        // (found by an operations review).
        if self.tcp_user_timeout_ms > i32::MAX as u64 {
            return Err(SettingsError::Invalid(format!(
                "tcp_user_timeout_ms (TENANTRY_TCP_USER_TIMEOUT_MS) must be at most {} (about 24 days)",
                i32::MAX
            )));
        }
        if self.tcp_keepalive_idle_secs > 32_767 {
            return Err(SettingsError::Invalid(
                "tcp_keepalive_idle_secs (TENANTRY_TCP_KEEPALIVE_IDLE_SECS) must be at most 32767 \
                 (the operating system's limit)"
                    .into(),
            ));
        }
        // Each top tenant is a few series in every scrape of /metrics.
        if self.tenant_stats_top > 1_000 {
            return Err(SettingsError::Invalid(
                "tenant_stats_top (TENANTRY_TENANT_STATS_TOP) must be at most 1000: each named \
                 tenant adds series to every scrape of /metrics"
                    .into(),
            ));
        }
        if self.tenant_stats_period_secs == 0 {
            return Err(SettingsError::Invalid(
                "tenant_stats_period_secs must be > 0".into(),
            ));
        }
        for (zero, name) in [
            (
                self.max_connections == 0,
                "max_connections (TENANTRY_MAX_CONNECTIONS)",
            ),
            (
                self.request_log_queue == 0,
                "request_log_queue (TENANTRY_REQUEST_LOG_QUEUE)",
            ),
            (
                self.request_log_batch == 0,
                "request_log_batch (TENANTRY_REQUEST_LOG_BATCH)",
            ),
        ] {
            if zero {
                return Err(SettingsError::Invalid(format!("{name} must be > 0")));
            }
        }
        if self.request_log_keep_days == 1 {
            return Err(SettingsError::Invalid(
                "request_log_keep_days (TENANTRY_REQUEST_LOG_KEEP_DAYS) must be at least 2 (today's and \
                 yesterday's partitions are written and read), or 0 to keep the log for good"
                    .into(),
            ));
        }
        // A share above the pool was taken as the whole pool without a word:
        // a mistake (a pool made smaller, say) the operator should hear of
        // (found by a review of the docs).
        if self.max_connections_per_tenant > self.max_connections {
            return Err(SettingsError::Invalid(format!(
                "max_connections_per_tenant (TENANTRY_MAX_CONNECTIONS_PER_TENANT, {}) is more than \
                 max_connections (TENANTRY_MAX_CONNECTIONS, {}): one tenant can hold the whole pool \
                 at most; set it to {} to allow that, or 0 for the default share (a quarter of the pool)",
                self.max_connections_per_tenant, self.max_connections, self.max_connections
            )));
        }
        if self.database_reply_timeout_ms != 0
            && self.statement_timeout_ms != 0
            && self.database_reply_timeout_ms <= self.statement_timeout_ms
        {
            // Otherwise the server gives up on statements PostgreSQL still runs.
            return Err(SettingsError::Invalid(format!(
                "database_reply_timeout_ms ({}) must exceed statement_timeout_ms ({}): \
                 PostgreSQL cancels a slow statement first, the reply timeout is for a \
                 database that cannot answer at all",
                self.database_reply_timeout_ms, self.statement_timeout_ms
            )));
        }
        Ok(())
    }

    /// What bounds the time a lost or stuck database holds a request (0: unset).
    pub fn timeouts(&self) -> Timeouts {
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        Timeouts {
            tcp_user_timeout: ms(self.tcp_user_timeout_ms),
            keepalive_idle: ms(self.tcp_keepalive_idle_secs.saturating_mul(1000)),
            statement_timeout: ms(self.statement_timeout_ms),
            lock_timeout: ms(self.lock_timeout_ms),
            idle_in_transaction_timeout: ms(self.idle_in_transaction_timeout_ms),
            reply_timeout: ms(self.database_reply_timeout_ms),
        }
    }

    /// The parsed statement mode.
    pub fn statement_mode(&self) -> Result<StatementMode, SettingsError> {
        self.statement_mode.parse().map_err(SettingsError::Invalid)
    }

    /// The parsed context key, if one is set.
    pub fn context_key(&self) -> Result<Option<tenantry_db::ContextKey>, SettingsError> {
        self.context_key
            .as_ref()
            .map(|k| {
                k.expose()
                    .parse()
                    .map_err(|e| SettingsError::Invalid(format!("context_key: {e}")))
            })
            .transpose()
    }

    /// Where the invalidation listener connects: `invalidation_url`, else
    /// where the pool does.
    pub fn invalidations(&self) -> Result<ListenTo, SettingsError> {
        match &self.invalidation_url {
            None => Ok(ListenTo::Database),
            // The URL may hold a password: the error names only the setting.
            Some(url) => tenantry_db::tls::parse(url.expose())
                .and_then(|(_, tls)| tenantry_db::tls::connector(&tls).map(|_| ()))
                .map(|()| ListenTo::Url(url.expose().to_owned()))
                .map_err(|e| SettingsError::Invalid(format!("invalid invalidation_url: {e}"))),
        }
    }

    /// Key cache lifetime.
    pub fn key_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.key_cache_ttl_ms)
    }
}

/// Which origins' pages a browser lets read the API's answers
/// ([`Settings::cors_origins`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers: the server's own origin only.
    None,
    /// Any origin (`*`).
    Any,
    /// These origins, as browsers send them.
    Listed(Vec<axum::http::HeaderValue>),
}

/// A settings file's text read as `T`. An error says the line, the column
/// and what is wrong, but never quotes the file: toml's own text shows the
/// line at fault, which held the database's password or the context key
/// (found by an operations review: a missing quote printed the URL whole).
pub fn from_toml<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    text: &str,
) -> Result<T, SettingsError> {
    toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .and_then(|span| text.get(..span.start))
            .map(|before| {
                let line = before.matches('\n').count() + 1;
                let start = before.rfind('\n').map_or(0, |n| n + 1);
                let column = before[start..].chars().count() + 1;
                format!(" at line {line}, column {column}")
            })
            .unwrap_or_default();
        SettingsError::Invalid(format!(
            "{}{at}: {}",
            path.display(),
            e.message().trim_end()
        ))
    })
}

/// A comma-separated variable's entries, trimmed, empty ones left out.
fn comma_separated(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_file_and_defaults() {
        let mut s: Settings =
            toml::from_str("listen = \"0.0.0.0:9000\"\nmax_connections = 3").unwrap();
        assert_eq!(s.max_connections, 3);
        s.apply_env(|k| (k == "TENANTRY_MAX_CONNECTIONS").then(|| "7".to_owned()))
            .unwrap();
        assert_eq!(s.max_connections, 7);
        assert_eq!(s.max_connections_per_tenant, 0, "the default share");
        s.apply_env(|k| (k == "TENANTRY_MAX_CONNECTIONS_PER_TENANT").then(|| "3".to_owned()))
            .unwrap();
        assert_eq!(s.max_connections_per_tenant, 3);
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.body_limit_bytes, 1024 * 1024);
    }

    /// An environment of `pairs` for [`Settings::apply_env`].
    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn an_email_is_trusted_only_when_verified_unless_the_file_or_the_environment_says_otherwise() {
        let file = "[jwt]\nissuer = \"https://file.example.test\"\naudience = [\"tenantry\"]\n\
                    hs256_secret = \"a shared secret of at least thirty-two bytes\"\n";
        let strict: Settings = toml::from_str(file).unwrap();
        let jwt = strict.jwt.as_ref().unwrap();
        assert_eq!(jwt.email_verified_claim, "email_verified");
        assert!(!jwt.trust_email_without_verified_claim, "strict by default");

        let mut s: Settings = toml::from_str(&format!(
            "{file}email_verified_claim = \"https://example.com/email_verified\"\n\
             trust_email_without_verified_claim = true\n"
        ))
        .unwrap();
        let jwt = s.jwt.as_ref().unwrap();
        assert_eq!(
            jwt.email_verified_claim,
            "https://example.com/email_verified"
        );
        assert!(jwt.trust_email_without_verified_claim);

        s.apply_env(env(&[
            ("TENANTRY_JWT_EMAIL_VERIFIED_CLAIM", "verified"),
            ("TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED_CLAIM", "false"),
        ]))
        .unwrap();
        let jwt = s.jwt.as_ref().unwrap();
        assert_eq!(jwt.email_verified_claim, "verified");
        assert!(!jwt.trust_email_without_verified_claim);
        assert!(s
            .apply_env(env(&[(
                "TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED_CLAIM",
                "yes please"
            )]))
            .is_err());
    }

    #[test]
    fn a_jwt_variable_overrides_its_own_key_of_the_files_jwt_section_and_no_other() {
        let file = "[jwt]\nissuer = \"https://file.example.test\"\naudience = [\"tenantry\"]\n\
                    hs256_secret = \"0123456789abcdef0123456789abcdef\"";
        let mut s: Settings = toml::from_str(file).unwrap();
        s.apply_env(env(&[("TENANTRY_JWT_ISSUER", "https://env.example.test")]))
            .unwrap();
        let jwt = s.jwt.as_ref().unwrap();
        assert_eq!(jwt.issuer, "https://env.example.test");
        assert_eq!(jwt.audience, ["tenantry"]);
        assert!(jwt.hs256_secret.is_some());

        let mut s: Settings = toml::from_str(file).unwrap();
        s.apply_env(env(&[("TENANTRY_JWT_AUDIENCE", "envaud, other")]))
            .unwrap();
        let jwt = s.jwt.as_ref().unwrap();
        assert_eq!(jwt.issuer, "https://file.example.test");
        assert_eq!(jwt.audience, ["envaud", "other"]);

        // Without a file, the issuer and audience variables make the section.
        let mut s = Settings::default();
        s.apply_env(env(&[
            ("TENANTRY_JWT_ISSUER", "https://env.example.test"),
            ("TENANTRY_JWT_AUDIENCE", "envaud"),
            (
                "TENANTRY_JWT_HS256_SECRET",
                "0123456789abcdef0123456789abcdef",
            ),
        ]))
        .unwrap();
        assert_eq!(s.jwt.as_ref().unwrap().audience, ["envaud"]);
        // An audience alone names no issuer: refused, not ignored (a
        // misspelt issuer variable would lock every person out silently).
        let mut s = Settings::default();
        let err = s
            .apply_env(env(&[("TENANTRY_JWT_AUDIENCE", "envaud")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TENANTRY_JWT_AUDIENCE is set but no issuer is"),
            "{err}"
        );
        assert!(s.jwt.is_none());
    }

    #[test]
    fn a_body_limit_of_zero_is_refused() {
        let mut s = Settings::default();
        let err = s
            .apply_env(|k| (k == "TENANTRY_BODY_LIMIT_BYTES").then(|| "0".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TENANTRY_BODY_LIMIT_BYTES"), "{err}");
        s.body_limit_bytes = 1;
        s.validate().unwrap();
    }

    #[test]
    fn values_beyond_what_the_operating_system_metrics_or_the_pool_take_are_refused_naming_the_setting(
    ) {
        for (var, value) in [
            ("TENANTRY_TCP_USER_TIMEOUT_MS", "99999999999"),
            ("TENANTRY_TCP_KEEPALIVE_IDLE_SECS", "99999999999"),
            ("TENANTRY_TENANT_STATS_TOP", "1000000"),
            ("TENANTRY_MAX_CONNECTIONS_PER_TENANT", "99"),
        ] {
            let err = Settings::default()
                .apply_env(|k| (k == var).then(|| value.to_owned()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{var}: {err}");
            assert!(!err.contains("  "), "{var}: {err}");
        }
        for (var, value) in [
            ("TENANTRY_TCP_USER_TIMEOUT_MS", "2147483647"),
            ("TENANTRY_TCP_KEEPALIVE_IDLE_SECS", "32767"),
            ("TENANTRY_TENANT_STATS_TOP", "1000"),
            ("TENANTRY_MAX_CONNECTIONS_PER_TENANT", "16"),
        ] {
            Settings::default()
                .apply_env(|k| (k == var).then(|| value.to_owned()))
                .unwrap_or_else(|e| panic!("{var}={value}: {e}"));
        }
    }

    #[test]
    fn a_settings_file_that_does_not_parse_is_said_by_line_and_column_without_quoting_its_secrets()
    {
        let path = std::path::Path::new("tenantry.toml");
        for (text, at) in [
            (
                "listen = \"127.0.0.1:8080\"\ndatabase_url = \"postgres://app:s3cret@db/app\n",
                "line 2",
            ),
            ("context_key = 1:s3cret\n", "line 1"),
            (
                "databse_url = \"postgres://app:s3cret@db/app\"\n",
                "databse_url",
            ),
        ] {
            let err = from_toml::<Settings>(path, text).unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "{err}");
            assert!(err.contains("tenantry.toml") && err.contains(at), "{err}");
        }
    }

    #[test]
    fn cors_origins_come_from_a_comma_separated_variable_and_an_entry_no_browser_sends_is_refused_by_name(
    ) {
        let from = |v: &str| {
            let v = v.to_owned();
            let mut s = Settings::default();
            s.apply_env(|k| (k == "TENANTRY_CORS_ORIGINS").then(|| v.clone()))
                .map(|()| s.cors_origins().unwrap())
        };
        assert_eq!(from("").unwrap(), CorsOrigins::None);
        assert_eq!(from(" * ").unwrap(), CorsOrigins::Any);
        assert_eq!(
            from("HTTPS://App.Example.com, http://localhost:3000,").unwrap(),
            CorsOrigins::Listed(vec![
                axum::http::HeaderValue::from_static("https://app.example.com"),
                axum::http::HeaderValue::from_static("http://localhost:3000"),
            ])
        );
        for (bad, why) in [
            ("https://app.example.com/", "no path"),
            ("app.example.com", "no scheme"),
            ("ftp://app.example.com", "neither http"),
            ("*, https://app.example.com", "stands alone"),
            ("https://*.example.com", "no path"),
            ("https://app.example.com:443", "own port"),
            ("http://localhost:80", "own port"),
            ("https://app.example.com.", "dot"),
            ("https://bücher.example", "punycode"),
        ] {
            let err = from(bad).unwrap_err().to_string();
            assert!(
                err.contains("TENANTRY_CORS_ORIGINS") && err.contains(why),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn trusted_proxies_come_from_the_file_or_a_comma_separated_variable_and_a_bad_one_is_refused_by_name(
    ) {
        let mut s = Settings::default();
        s.apply_env(|k| {
            (k == "TENANTRY_TRUSTED_PROXIES").then(|| "10.0.0.0/8, 127.0.0.1,".to_owned())
        })
        .unwrap();
        let nets = s.trusted_proxies().unwrap();
        assert_eq!(
            nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.0.0/8", "127.0.0.1/32"]
        );
        let file: Settings = toml::from_str("trusted_proxies = [\"fd00::/8\"]").unwrap();
        file.validate().unwrap();
        let err = Settings::default()
            .apply_env(|k| {
                (k == "TENANTRY_TRUSTED_PROXIES").then(|| "10.0.0.0/8,lb.internal".to_owned())
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TENANTRY_TRUSTED_PROXIES") && err.contains("lb.internal"),
            "{err}"
        );
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Settings>("lisen = \"x\"").is_err());
        let mut s = Settings::default();
        assert!(s
            .apply_env(|k| (k == "TENANTRY_STATEMENT_MODE").then(|| "bogus".to_owned()))
            .is_err());
    }

    #[test]
    fn the_invalidation_listener_connects_where_the_pool_does_unless_told_otherwise() {
        let mut s = Settings::default();
        assert!(matches!(s.invalidations(), Ok(ListenTo::Database)));
        s.apply_env(|k| {
            (k == "TENANTRY_INVALIDATION_URL").then(|| "postgres://direct@db:5432/t".to_owned())
        })
        .unwrap();
        assert!(matches!(s.invalidations(), Ok(ListenTo::Url(_))));
        let refused = Settings::default()
            .apply_env(|k| {
                (k == "TENANTRY_INVALIDATION_URL")
                    .then(|| "postgres://u:pw@h:notaport/x".to_owned())
            })
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("invalidation_url") && !refused.contains("pw"),
            "{refused}"
        );
    }

    #[test]
    fn a_pooled_statement_mode_needs_an_invalidation_url_and_an_admin_token_may_not_be_blank() {
        let pooled = |invalidation: Option<&str>| Settings {
            database_url: Some(Secret::new("postgres://tenantry_server@pgbouncer/app")),
            statement_mode: "unnamed".into(),
            invalidation_url: invalidation.map(Secret::new),
            ..Default::default()
        };
        let refused = pooled(None).validate().unwrap_err().to_string();
        assert!(refused.contains("needs invalidation_url"), "{refused}");
        pooled(Some("postgres://tenantry_server@db/app"))
            .validate()
            .unwrap();
        // The embedded cluster has no pooler in between.
        Settings {
            statement_mode: "unnamed".into(),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let blank = Settings {
            admin_token: Some(Secret::new("   ")),
            ..Default::default()
        };
        let refused = blank.validate().unwrap_err().to_string();
        assert!(refused.contains("admin_token"), "{refused}");
    }

    #[test]
    fn a_metrics_token_may_be_neither_blank_nor_the_admin_token_and_metrics_stay_private_by_default(
    ) {
        let mut s = Settings::default();
        assert!(!s.metrics_public && s.metrics_token.is_none());
        s.apply_env(|k| {
            (k == "TENANTRY_METRICS_TOKEN" || k == "TENANTRY_METRICS_PUBLIC").then(|| {
                if k == "TENANTRY_METRICS_PUBLIC" {
                    "true".to_owned()
                } else {
                    "tmet_scraper".to_owned()
                }
            })
        })
        .unwrap();
        assert!(s.metrics_public);
        assert_eq!(
            s.metrics_token.as_ref().map(Secret::expose),
            Some("tmet_scraper")
        );
        for (metrics, admin) in [("  ", None), ("same", Some("same"))] {
            let refused = Settings {
                metrics_token: Some(Secret::new(metrics)),
                admin_token: admin.map(Secret::new),
                ..Default::default()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(refused.contains("metrics_token"), "{refused}");
        }
    }

    #[test]
    fn database_timeouts_default_to_bounded_values_and_zero_unsets_them() {
        let s = Settings::default();
        let t = s.timeouts();
        assert_eq!(t.statement_timeout, Some(Duration::from_secs(30)));
        assert_eq!(t.lock_timeout, Some(Duration::from_secs(2)));
        assert_eq!(t.idle_in_transaction_timeout, Some(Duration::from_secs(15)));
        assert_eq!(t.reply_timeout, Some(Duration::from_secs(35)));
        assert_eq!(t.tcp_user_timeout, Some(Duration::from_secs(10)));
        assert_eq!(t.keepalive_idle, Some(Duration::from_secs(10)));
        let mut s = Settings::default();
        let unset = [
            "TENANTRY_STATEMENT_TIMEOUT_MS",
            "TENANTRY_LOCK_TIMEOUT_MS",
            "TENANTRY_IDLE_IN_TRANSACTION_TIMEOUT_MS",
            "TENANTRY_DATABASE_REPLY_TIMEOUT_MS",
            "TENANTRY_TCP_USER_TIMEOUT_MS",
        ];
        s.apply_env(|k| unset.contains(&k).then(|| "0".to_owned()))
            .unwrap();
        let t = s.timeouts();
        assert_eq!(
            (
                t.statement_timeout,
                t.lock_timeout,
                t.idle_in_transaction_timeout,
                t.reply_timeout,
                t.tcp_user_timeout
            ),
            (None, None, None, None, None)
        );
    }

    #[test]
    fn a_reply_timeout_not_above_the_statement_timeout_is_refused() {
        let refused = Settings::default()
            .apply_env(|k| (k == "TENANTRY_DATABASE_REPLY_TIMEOUT_MS").then(|| "30000".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("must exceed statement_timeout_ms"),
            "{refused}"
        );
        let mut s = Settings::default();
        s.apply_env(|k| {
            (k == "TENANTRY_DATABASE_REPLY_TIMEOUT_MS" || k == "TENANTRY_STATEMENT_TIMEOUT_MS")
                .then(|| if k.contains("REPLY") { "2000" } else { "1000" }.to_owned())
        })
        .unwrap();
        assert_eq!(s.timeouts().reply_timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_request_log_kept_one_day_is_refused_and_zero_keeps_it_for_good() {
        let with = |days: &'static str| {
            let mut s = Settings::default();
            s.apply_env(|k| (k == "TENANTRY_REQUEST_LOG_KEEP_DAYS").then(|| days.to_owned()))
                .map(|()| s)
        };
        let refused = with("1").unwrap_err().to_string();
        assert!(refused.contains("at least 2"), "{refused}");
        assert_eq!(with("0").unwrap().request_log_keep_days, 0);
        assert_eq!(with("90").unwrap().request_log_keep_days, 90);
        assert_eq!(Settings::default().request_log_keep_days, 35);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings {
            admin_token: Some(Secret::new("tadm_supersecret")),
            context_key: Some(Secret::new(format!("1:{}", "ab".repeat(32)))),
            invalidation_url: Some(Secret::new("postgres://u:supersecret@h/x")),
            ..Settings::default()
        };
        assert!(!format!("{s:?}").contains("supersecret"));
        assert!(!format!("{s:?}").contains("abab"));
        assert_eq!(s.context_key().unwrap().unwrap().id(), 1);
        let t = AdminToken::new("tadm_x");
        assert!(t.matches("tadm_x") && !t.matches("tadm_y"));
    }
}
