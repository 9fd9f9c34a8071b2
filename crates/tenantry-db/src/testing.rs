//! Test harness (feature `test-support`): one PostgreSQL per test process — the embedded cluster, or the server at `TENANTRY_TEST_DATABASE_URL` — and a freshly migrated database per test.

use std::sync::OnceLock;

use tokio_postgres::{Client, NoTls};

use crate::{
    embedded::{temp_data_dir, ClusterOptions, EmbeddedCluster},
    migrate, Database, DatabaseConfig, StatementMode,
};

/// Environment variable naming an existing server (as a superuser) to test against.
pub const TEST_DATABASE_URL_ENV: &str = "TENANTRY_TEST_DATABASE_URL";

struct Server {
    /// key=value connection parameters without dbname/user/password.
    base: String,
    superuser: String,
    password: Option<String>,
    template: String,
    /// Kept alive for the whole process; the postmaster dies with us.
    _cluster: Option<EmbeddedCluster>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Server {
    fn url(&self, db: &str, user: &str, password: Option<&str>) -> String {
        let mut s = format!("{} dbname={} user={}", self.base, quote(db), quote(user));
        if let Some(p) = password {
            s.push_str(&format!(" password={}", quote(p)));
        }
        s
    }

    fn superuser_url(&self, db: &str) -> String {
        self.url(db, &self.superuser, self.password.as_deref())
    }

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
        let (base, superuser, password, cluster) = match std::env::var(TEST_DATABASE_URL_ENV) {
            Ok(url) => {
                let cfg: tokio_postgres::Config = url
                    .parse()
                    .expect("TENANTRY_TEST_DATABASE_URL is not a valid connection string");
                let mut base = String::new();
                for host in cfg.get_hosts() {
                    match host {
                        tokio_postgres::config::Host::Tcp(h) => {
                            base.push_str(&format!("host={} ", quote(h)))
                        }
                        tokio_postgres::config::Host::Unix(p) => {
                            base.push_str(&format!("host={} ", quote(&p.display().to_string())))
                        }
                    }
                }
                if let Some(port) = cfg.get_ports().first() {
                    base.push_str(&format!("port={port}"));
                }
                let user = cfg.get_user().unwrap_or("postgres").to_owned();
                let password = cfg
                    .get_password()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                (base, user, password, None)
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
                ] {
                    options.extra_settings.push((k.into(), v.into()));
                }
                let cluster = EmbeddedCluster::start(options)
                    .unwrap_or_else(|e| panic!("embedded PostgreSQL for tests: {e}"));
                let base = format!(
                    "host={} port={}",
                    quote(&cluster.socket_dir().display().to_string()),
                    cluster.port()
                );
                (base, cluster.superuser().to_owned(), None, Some(cluster))
            }
        };
        let template = format!(
            "tenantry_tpl_{}_{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let mut server = Server {
            base,
            superuser,
            password,
            template: template.clone(),
            _cluster: cluster,
        };
        let admin = connect(&server.superuser_url("postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {template}"))
            .await
            .expect("creating the template database");
        {
            let mut client = connect(&server.superuser_url(&template)).await;
            migrate::migrate(&mut client)
                .await
                .expect("migrating the template database");
        }
        // A role password lets the server role log in over TCP on external servers.
        if server.password.is_some() {
            let pw = uuid::Uuid::new_v4().simple().to_string();
            admin
                .batch_execute(&format!("ALTER ROLE tenantry_server PASSWORD '{pw}'"))
                .await
                .unwrap();
            server.password = server.password.take();
            SERVER_PASSWORD.set(pw).ok();
        }
        server
    }
}

static SERVER_PASSWORD: OnceLock<String> = OnceLock::new();

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A freshly migrated database of its own, for one test.
pub struct TestDatabase {
    name: String,
}

impl TestDatabase {
    /// Creates the database (a copy of the migrated template, then `migrate` runs on it).
    pub async fn new() -> Self {
        let server = SERVER.get_or_init(Server::start);
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = connect(&server.superuser_url("postgres")).await;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE {}",
                server.template
            ))
            .await
            .expect("creating a test database");
        let mut client = connect(&server.superuser_url(&name)).await;
        let applied = migrate::migrate(&mut client)
            .await
            .expect("migrating a test database");
        assert!(
            applied.is_empty(),
            "the template should already be migrated"
        );
        Self { name }
    }

    fn server() -> &'static Server {
        SERVER.get().expect("server started")
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection string of a superuser (setup only: a superuser skips RLS).
    pub fn superuser_url(&self) -> String {
        Self::server().superuser_url(&self.name)
    }

    /// Connection string of the server's login role, `tenantry_server`.
    pub fn server_url(&self) -> String {
        Self::server().url(
            &self.name,
            "tenantry_server",
            SERVER_PASSWORD.get().map(String::as_str),
        )
    }

    /// A pool as `tenantry_server` in the given statement mode.
    pub fn database_with(&self, mode: StatementMode, max_connections: usize) -> Database {
        let mut config = DatabaseConfig::new(self.server_url());
        config.statement_mode = mode;
        config.max_connections = max_connections;
        Database::connect(&config).expect("pool")
    }

    /// A pool as `tenantry_server` (prepared statements, 4 connections).
    pub fn database(&self) -> Database {
        self.database_with(StatementMode::Prepared, 4)
    }

    /// A raw connection as a superuser.
    pub async fn superuser_client(&self) -> Client {
        connect(&self.superuser_url()).await
    }

    /// A raw connection as `tenantry_server`, the server's own login role (for attack tests).
    pub async fn server_client(&self) -> Client {
        connect(&self.server_url()).await
    }
}
