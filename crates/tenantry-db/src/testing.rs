//! Test harness (feature `test-support`): one PostgreSQL per test process — the embedded cluster, or the server at `TENANTRY_TEST_DATABASE_URL`, or a Citus cluster at `TENANTRY_TEST_CITUS_URL` — and a freshly migrated database per test.

use std::sync::OnceLock;

pub mod certificates;
pub mod citus;

use tenantry_embedded::{temp_data_dir, ClusterOptions, EmbeddedCluster};
use tokio_postgres::{Client, Config, NoTls};

use crate::{
    migrate,
    provision::{conninfo, provision, with_dbname as on, ServerLogin},
    ContextKey, Database, DatabaseConfig, StatementMode,
};

/// Environment variable naming an existing server (as a superuser) to test against.
pub const TEST_DATABASE_URL_ENV: &str = "TENANTRY_TEST_DATABASE_URL";

/// Environment variable naming a Citus coordinator (as a superuser, its
/// maintenance database; `scripts/citus.sh url`): every [`TestDatabase`] of
/// the process is then a database of its own on the cluster, migrated and
/// distributed, so a whole test suite (the HTTP attack suite, say) runs
/// against a server whose database is the coordinator. Slower: about a
/// second and a half per test for the database alone. The databases stay on
/// the cluster only as long as the test (a cluster's nodes run out of
/// connection slots for databases left behind).
pub const TEST_CITUS_URL_ENV: &str = "TENANTRY_TEST_CITUS_URL";

struct Server {
    /// The superuser, connected to the migrated template database.
    superuser: Config,
    /// The server's login role, connected to the template database.
    server: Config,
    template: String,
    /// The template's context key: every test database is a copy, so it is theirs too.
    context_key: ContextKey,
    /// Kept alive for the whole process; the postmaster dies with us.
    _cluster: Option<EmbeddedCluster>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

impl Server {
    fn start() -> Server {
        // Runs once per process, on a thread of its own (tests run on many runtimes).
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(Server::start_async())
        })
        .join()
        .expect("test database server failed to start")
    }

    async fn start_async() -> Server {
        let (superuser, login, cluster) = match std::env::var(TEST_DATABASE_URL_ENV) {
            Ok(url) => {
                let mut superuser: Config = url
                    .parse()
                    .expect("TENANTRY_TEST_DATABASE_URL is not a valid connection string");
                if superuser.get_user().is_none() {
                    superuser.user("postgres");
                }
                // A role password lets the server role log in over TCP on external servers.
                let login = match superuser.get_password() {
                    Some(_) => ServerLogin::NewPassword,
                    None => ServerLogin::Trust,
                };
                (superuser, login, None)
            }
            Err(_) => {
                let dir =
                    temp_data_dir("tenantry-test").expect("creating a temporary data directory");
                let mut options = ClusterOptions::new(dir);
                for (k, v) in [
                    ("fsync", "off"),
                    ("synchronous_commit", "off"),
                    ("full_page_writes", "off"),
                    ("max_connections", "400"),
                    // PREPARE TRANSACTION works (as on Citus): the doctor's
                    // rule prepared_transactions is tested against it.
                    ("max_prepared_transactions", "10"),
                ] {
                    options.extra_settings.push((k.into(), v.into()));
                }
                let cluster = EmbeddedCluster::start(options)
                    .unwrap_or_else(|e| panic!("embedded PostgreSQL for tests: {e}"));
                let superuser = cluster.superuser_config("postgres");
                (superuser, ServerLogin::Trust, Some(cluster))
            }
        };
        let template = format!(
            "tenantry_tpl_{}_{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let provisioned = provision(&superuser, &template, login)
            .await
            .unwrap_or_else(|e| panic!("provisioning the template database: {e}: {e:?}"));
        Server {
            superuser: provisioned.superuser,
            server: provisioned.server,
            template,
            context_key: provisioned.context_key,
            _cluster: cluster,
        }
    }
}

/// A pool whose database never answers (a loopback port nothing listens
/// on, with a key of its own), for tests of what a server does while its
/// database is away; it starts no cluster.
pub fn unreachable_database() -> Database {
    Database::connect(
        &DatabaseConfig::new("postgres://nobody@127.0.0.1:1/nothing")
            .with_context_key(ContextKey::new(1, [7; 32])),
    )
    .expect("a pool is made without connecting")
}

/// The context key of every test database (they are copies of one template;
/// on a Citus cluster, [`TestDatabase::new`] installs the process's own key
/// in each database it makes, so that the suites' helpers sign there too).
pub fn context_key() -> &'static ContextKey {
    if on_citus() {
        return cluster_context_key();
    }
    &SERVER.get_or_init(Server::start).context_key
}

/// The id of [`cluster_context_key`] in each cluster test database: past the
/// key its migration made, so it is the newest and the server signs with it.
const CLUSTER_CONTEXT_KEY_ID: i32 = 100;

/// The random context key every test database of this process has on a
/// Citus cluster (each is migrated on its own, and `migrate` draws a key of
/// its own for each).
fn cluster_context_key() -> &'static ContextKey {
    &cluster_context_secret().0
}

/// [`cluster_context_key`] with its secret, which a [`ContextKey`] keeps to itself.
fn cluster_context_secret() -> &'static (ContextKey, [u8; 32]) {
    static KEY: OnceLock<(ContextKey, [u8; 32])> = OnceLock::new();
    KEY.get_or_init(|| {
        let secret: [u8; 32] = rand::random();
        (ContextKey::new(CLUSTER_CONTEXT_KEY_ID, secret), secret)
    })
}

/// Adds [`cluster_context_key`] to a cluster test database as its newest key,
/// with the HMAC blocks `tenantry.add_context_key` keeps (RFC 2104: the secret
/// padded to 64 bytes, XOR 0x36 and 0x5c).
async fn install_cluster_context_key(superuser: &Client) {
    let (key, secret) = cluster_context_secret();
    let pad = |byte: u8| -> Vec<u8> {
        (0..64)
            .map(|i| secret.get(i).copied().unwrap_or(0) ^ byte)
            .collect()
    };
    superuser
        .execute(
            "INSERT INTO tenantry.context_keys (key_id, secret, inner_pad, outer_pad) VALUES ($1, $2, $3, $4)",
            &[&key.id(), &secret.as_slice(), &pad(0x36), &pad(0x5c)],
        )
        .await
        .expect("installing the process's context key in a cluster test database");
    superuser
        .execute(
            "SELECT setval('tenantry.context_key_ids', $1::bigint)",
            &[&i64::from(key.id())],
        )
        .await
        .expect("moving the context key ids past the process's key");
    // The key the migration drew is never used: without it the database
    // holds one key, as a test database copied from the template does.
    superuser
        .execute(
            "DELETE FROM tenantry.context_keys WHERE key_id <> $1",
            &[&key.id()],
        )
        .await
        .expect("dropping the migration's own context key");
}

/// On a raw connection whose current role is `tenantry_app`: opens a
/// transaction and enters `tenant`'s context the way the server does on a
/// pooled connection (`enter_context_signed`, signed with the test key, any
/// backend). Panics when the database refuses it.
pub async fn begin_in_tenant(client: &Client, tenant: uuid::Uuid) {
    client.batch_execute("BEGIN").await.expect("BEGIN");
    let signed = crate::SignedContext::new(crate::TenantId::from_uuid(tenant));
    let part = enter_signed(client, &signed)
        .await
        .unwrap_or_else(|e| panic!("entering tenant {tenant}: {e:?}"));
    assert!(
        part.is_some(),
        "the database refused a signed context for {tenant}"
    );
}

/// Waits (up to 30 s, polling every 10 ms) until a session of the server's
/// login in `watcher`'s database waits for a lock; whether one did. A
/// condition, not a timing: tests hold a lock open and need the other side
/// queued behind it before they let go. (5 s was the bound: a loaded CI
/// machine can take longer to bring a request to its first statement.)
pub async fn a_server_session_waits_for_a_lock(watcher: &Client) -> bool {
    !server_sessions_wait_for_a_lock(watcher, 1).await.is_empty()
}

/// Like [`a_server_session_waits_for_a_lock`] until `count` sessions of the
/// server's login wait for a lock: their backends' pids, in order (fewer
/// when they did not all wait within 30 s).
pub async fn server_sessions_wait_for_a_lock(watcher: &Client, count: usize) -> Vec<i32> {
    sessions_wait(watcher, Some("tenantry_server"), "", Wait::Lock, count).await
}

/// Like [`a_server_session_waits_for_a_lock`] for a session of any login
/// (an operator's, a superuser's).
pub async fn a_session_waits_for_a_lock(watcher: &Client) -> bool {
    !sessions_wait(watcher, None, "", Wait::Lock, 1)
        .await
        .is_empty()
}

/// Like [`a_session_waits_for_a_lock`] for a session whose statement
/// contains `statement` (a background task's, say, told apart by the
/// function it calls).
pub async fn a_session_waits_for_a_lock_in(watcher: &Client, statement: &str) -> bool {
    !sessions_wait(watcher, None, statement, Wait::Lock, 1)
        .await
        .is_empty()
}

/// Like [`a_session_waits_for_a_lock_in`] for a session sleeping in
/// `pg_sleep` instead: a statement that tries for a lock again and again
/// without queueing (a move's hierarchy lock) sleeps between two tries.
pub async fn a_session_sleeps_in(watcher: &Client, statement: &str) -> bool {
    !sessions_wait(watcher, None, statement, Wait::Sleep, 1)
        .await
        .is_empty()
}

/// What a session in [`sessions_wait`] waits for.
enum Wait {
    /// A heavyweight lock (`wait_event_type = 'Lock'`).
    Lock,
    /// `pg_sleep` (`wait_event = 'PgSleep'`).
    Sleep,
}

/// The pids of the sessions in `watcher`'s database that wait as said
/// (of `login`, running a statement that contains `statement`), once there
/// are `count` of them, polling every 10 ms for up to 30 s; what was seen
/// last when there never were.
async fn sessions_wait(
    watcher: &Client,
    login: Option<&str>,
    statement: &str,
    wait: Wait,
    count: usize,
) -> Vec<i32> {
    let (event_type, event) = match wait {
        Wait::Lock => (Some("Lock"), None),
        Wait::Sleep => (None, Some("PgSleep")),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: Vec<i32> = watcher
            .query(
                "SELECT pid FROM pg_stat_activity
                  WHERE datname = current_database()
                    AND ($3::text IS NULL OR wait_event_type = $3)
                    AND ($4::text IS NULL OR wait_event = $4)
                    AND ($1::text IS NULL OR usename = $1) AND strpos(query, $2) > 0
                  ORDER BY pid",
                &[&login, &statement, &event_type, &event],
            )
            .await
            .expect("reading pg_stat_activity")
            .iter()
            .map(|r| r.get(0))
            .collect();
        if waiting.len() >= count || std::time::Instant::now() >= deadline {
            return waiting;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Calls `tenantry.tier_move_wait(tenant)` on `client` (an operator's
/// session, each call its own transaction) until no transaction older than
/// the tenant's move back is open, as the move's drivers do.
pub async fn older_transactions_ended(client: &Client, tenant: uuid::Uuid) {
    loop {
        let open: i32 = client
            .query_one("SELECT tenantry.tier_move_wait($1)", &[&tenant])
            .await
            .expect("tier_move_wait")
            .get(0);
        if open == 0 {
            return;
        }
    }
}

/// `enter_context_signed` with `signed`, signed with the test databases'
/// context key (what the server does on pooled connections): the tenant's
/// part, or `None` when refused.
pub async fn enter_signed(
    client: &Client,
    signed: &crate::SignedContext,
) -> Result<Option<String>, tokio_postgres::Error> {
    enter_signed_with(client, context_key(), signed).await
}

/// [`enter_signed`] with another database's context `key` (a Citus cluster's).
pub async fn enter_signed_with(
    client: &Client,
    key: &ContextKey,
    signed: &crate::SignedContext,
) -> Result<Option<String>, tokio_postgres::Error> {
    let mac = key.sign_context(signed);
    Ok(client
        .query_one(
            "SELECT tenantry.enter_context_signed($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &signed.pid,
                &signed.expires_at,
                &signed.tenant.map(|t| *t.as_uuid()),
                &signed.user.map(|u| *u.as_uuid()),
                &signed.actor,
                &signed.grants,
                &signed.impersonator,
                &signed.tenant_part,
                &key.id(),
                &mac,
            ],
        )
        .await?
        .get(0))
}

async fn connect(config: &Config) -> Client {
    let (client, conn) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", conninfo(config)));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Whether this process's test databases are on a Citus cluster
/// ([`TEST_CITUS_URL_ENV`]): tests of what a cluster refuses by design (the
/// schema tier) skip themselves, loudly.
pub fn on_citus() -> bool {
    citus_test_url().is_some()
}

/// Whether `test` (or the part of it about to run) should stop here because
/// a Citus cluster refuses what it exercises by design (`why`, which
/// tests/citus.rs proves): it says so loudly on the process's stderr.
pub fn skip_on_citus(test: &str, why: &str) -> bool {
    if !on_citus() {
        return false;
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "*** SKIPPED on Citus: {test}: {why} (tests/citus.rs)"
    );
    true
}

/// [`skip_on_citus`] for the schema tier, which a cluster refuses.
pub fn skip_schema_tier_on_citus(test: &str) -> bool {
    skip_on_citus(test, "a cluster refuses schema tenants")
}

/// The coordinator named by [`TEST_CITUS_URL_ENV`], when it names one.
fn citus_test_url() -> Option<String> {
    std::env::var(TEST_CITUS_URL_ENV)
        .ok()
        .filter(|u| !u.is_empty())
}

/// A freshly migrated database of its own, for one test.
pub struct TestDatabase {
    name: String,
    superuser: Config,
    server: Config,
    context_key: ContextKey,
    /// On a Citus cluster: the database's copies on every node, dropped with
    /// this (a cluster's nodes run out of connection slots for the
    /// maintenance daemons of databases left behind).
    cluster: Option<citus::ClusterDb>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            // Its own thread and runtime: drop may run inside a test's runtime.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(cluster.drop_all()))
            })
            .join();
        }
    }
}

impl TestDatabase {
    /// Creates the database (a copy of the migrated template, then `migrate`
    /// runs on it; on a Citus cluster, see [`TEST_CITUS_URL_ENV`], a new
    /// database distributed by `migrate`).
    pub async fn new() -> Self {
        if let Some(url) = citus_test_url() {
            return Self::on_cluster(&url).await;
        }
        let server = SERVER.get_or_init(Server::start);
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = connect(&on(&server.superuser, "postgres")).await;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE {}",
                server.template
            ))
            .await
            .expect("creating a test database");
        let mut client = connect(&on(&server.superuser, &name)).await;
        let applied = migrate::migrate(&mut client)
            .await
            .expect("migrating a test database");
        assert!(
            applied.is_empty(),
            "the template should already be migrated"
        );
        Self {
            superuser: on(&server.superuser, &name),
            server: on(&server.server, &name),
            context_key: server.context_key.clone(),
            name,
            cluster: None,
        }
    }

    async fn on_cluster(url: &str) -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let (db, client, _) = citus::migrated(url, &tag[..16]).await;
        install_cluster_context_key(&client).await;
        let context_key = cluster_context_key().clone();
        let superuser = db.coordinator_config();
        Self {
            name: superuser.get_dbname().unwrap_or_default().to_owned(),
            server: db.server_config(),
            superuser,
            context_key,
            cluster: Some(db),
        }
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection settings of a superuser (setup only: a superuser skips RLS).
    pub fn superuser_config(&self) -> Config {
        self.superuser.clone()
    }

    /// Connection settings of the server's login role, `tenantry_server`.
    pub fn server_config(&self) -> Config {
        self.server.clone()
    }

    /// Connection string of a superuser (for other programs; see [`conninfo`]).
    pub fn superuser_url(&self) -> String {
        conninfo(&self.superuser_config())
    }

    /// Connection string of the server's login role (for other programs; see [`conninfo`]).
    pub fn server_url(&self) -> String {
        conninfo(&self.server_config())
    }

    /// The database's context key (what the server holds to prove tenant contexts).
    pub fn context_key(&self) -> &ContextKey {
        &self.context_key
    }

    /// Pool settings as `tenantry_server`, context key included.
    pub fn database_config(&self) -> DatabaseConfig {
        DatabaseConfig::from_config(self.server_config()).with_context_key(self.context_key.clone())
    }

    /// A pool as `tenantry_server` in the given statement mode.
    ///
    /// One tenant's transactions may hold all of them (no per-tenant share):
    /// the concurrency tests hold that many of one tenant open at once.
    pub fn database_with(&self, mode: StatementMode, max_connections: usize) -> Database {
        let mut config = self.database_config();
        config.statement_mode = mode;
        config.max_connections = max_connections;
        config.max_connections_per_tenant = max_connections;
        Database::connect(&config).expect("pool")
    }

    /// A pool as `tenantry_server` (prepared statements, 4 connections).
    pub fn database(&self) -> Database {
        self.database_with(StatementMode::Prepared, 4)
    }

    /// A raw connection as a superuser.
    pub async fn superuser_client(&self) -> Client {
        connect(&self.superuser_config()).await
    }

    /// A login role of its own (`<prefix>_<random>`, INHERIT, the server
    /// login's password, so that the cluster's authentication takes it),
    /// made a member of `member_of`: a team's migration role, or a login set
    /// up like the server's. Roles are the cluster's: the caller drops it.
    /// Returns its name and its connection settings.
    pub async fn login_role(&self, prefix: &str, member_of: &[&str]) -> (String, Config) {
        let login = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut config = self.server_config();
        let password = match config.get_password() {
            Some(p) => format!(
                " PASSWORD '{}'",
                String::from_utf8(p.to_vec())
                    .expect("a UTF-8 password")
                    .replace('\'', "''")
            ),
            None => String::new(),
        };
        let grants: String = member_of
            .iter()
            .map(|role| format!(" GRANT {role} TO {login};"))
            .collect();
        self.superuser_client()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {login} LOGIN INHERIT{password};{grants}"
            ))
            .await
            .expect("creating a login role");
        config.user(&login);
        (login, config)
    }

    /// Terminates, as a superuser, the connections of every invalidation
    /// listener on this database; returns how many there were.
    pub async fn kill_invalidation_listeners(&self) -> i64 {
        self.superuser_client()
            .await
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE application_name = $1 AND datname = current_database()",
                &[&crate::invalidation::APPLICATION_NAME],
            )
            .await
            .expect("terminating the invalidation listeners")
            .get(0)
    }

    /// A raw connection as `tenantry_server`, the server's own login role (for attack tests).
    pub async fn server_client(&self) -> Client {
        connect(&self.server_config()).await
    }

    /// A new empty database of this test's cluster (no tenantry schema)
    /// owned by `owner`: its name. The caller drops it with
    /// [`TestDatabase::drop_scratch`].
    pub async fn scratch_database(&self, owner: &str) -> String {
        let name = format!("scratch_{}", uuid::Uuid::new_v4().simple());
        self.superuser_client()
            .await
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {owner}"))
            .await
            .expect("creating a scratch database");
        name
    }

    /// Whether the scratch database `name` holds a `tenantry` schema.
    pub async fn has_tenantry_schema(&self, name: &str) -> bool {
        let mut config = self.superuser_config();
        config.dbname(name);
        connect(&config)
            .await
            .query_one("SELECT to_regnamespace('tenantry') IS NOT NULL", &[])
            .await
            .expect("reading the scratch database's schemas")
            .get(0)
    }

    /// Drops the scratch database `name`, then the login role `login` that owned it.
    pub async fn drop_scratch(&self, name: &str, login: &str) {
        let su = self.superuser_client().await;
        su.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .await
            .expect("dropping the scratch database");
        su.batch_execute(&format!("DROP ROLE {login}"))
            .await
            .expect("dropping its owner");
    }
}
