//! A real Citus cluster for tests (such as `scripts/citus.sh start` runs): a fresh database on every node with the nodes registered, migrated and distributed by tenantry, and connections to its coordinator as an operator or as the server's login. Tests skip loudly when `TENANTRY_CITUS_URL` is unset.

use tokio_postgres::{Client, Config, NoTls};

use crate::{ContextKey, Database, DatabaseConfig};

/// The coordinator's maintenance database, or `None` after a loud notice.
pub fn citus_url(rerun: &str) -> Option<String> {
    match std::env::var("TENANTRY_CITUS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Straight to the process's stderr: the test harness captures
            // eprintln! of passing tests, and this must be seen.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: the Citus tests did not run: TENANTRY_CITUS_URL is not set.\n\
                 *** Build and start a cluster with scripts/citus.sh (docs/scale-out.md), then\n\
                 *** TENANTRY_CITUS_URL=$(scripts/citus.sh url) {rerun}\n"
            );
            None
        }
    }
}

async fn connect(config: &Config) -> Client {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .expect("connecting to a Citus node");
    tokio::spawn(connection);
    client
}

/// Held while a test database registers the cluster's nodes.
static REGISTERING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh database on every node of the cluster, with Citus and the nodes
/// registered in it; dropped again by [`ClusterDb::drop_all`].
pub struct ClusterDb {
    name: String,
    coordinator: Config,
    nodes: Vec<Config>,
}

impl ClusterDb {
    /// `tag` tells apart the databases of tests running at once.
    pub async fn create(url: &str, tag: &str) -> Self {
        let admin: Config = url
            .parse()
            .expect("TENANTRY_CITUS_URL is a connection string");
        let maintenance = connect(&admin).await;
        let name = format!("tenantry_citus_{}_{tag}", std::process::id());
        let rows = maintenance
            .query(
                "SELECT nodename, nodeport, groupid FROM pg_dist_node WHERE isactive ORDER BY groupid",
                &[],
            )
            .await
            .expect("pg_dist_node of the maintenance database (did scripts/citus.sh start run?)");
        let mut nodes = Vec::new();
        let mut coordinator_node = None;
        for row in &rows {
            let host: String = row.get(0);
            let port: i32 = row.get(1);
            let group: i32 = row.get(2);
            let mut config = Config::new();
            config
                .user(admin.get_user().unwrap_or("postgres"))
                .dbname("postgres")
                .host(&host)
                .port(port as u16);
            if let Some(password) = admin.get_password() {
                config.password(password);
            }
            if group == 0 {
                coordinator_node = Some((host, port));
            }
            nodes.push(config);
        }
        let (coordinator_host, coordinator_port) = coordinator_node
            .expect("the coordinator is in pg_dist_node (citus_set_coordinator_host)");
        assert!(nodes.len() >= 3, "a coordinator and at least two workers");
        for node in &nodes {
            let client = connect(node).await;
            for sql in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ] {
                client
                    .batch_execute(&sql)
                    .await
                    .expect("creating the test database on a node");
            }
            let mut db = node.clone();
            db.dbname(&name);
            connect(&db)
                .await
                .batch_execute("CREATE EXTENSION citus")
                .await
                .expect("CREATE EXTENSION citus");
        }
        let mut coordinator = nodes[0].clone();
        coordinator.dbname(&name);
        let client = connect(&coordinator).await;
        // One registration at a time: adding a node copies the roles and
        // other cluster-wide objects to it, and two databases doing so at
        // once collide on the workers ("failure on connection marked as
        // essential").
        let _one_at_a_time = REGISTERING.lock().await;
        client
            .execute(
                "SELECT citus_set_coordinator_host($1, $2)",
                &[&coordinator_host, &coordinator_port],
            )
            .await
            .unwrap();
        for row in rows.iter().filter(|r| r.get::<_, i32>(2) != 0) {
            let host: String = row.get(0);
            let port: i32 = row.get(1);
            client
                .execute("SELECT citus_add_node($1, $2)", &[&host, &port])
                .await
                .unwrap();
        }
        Self {
            name,
            coordinator,
            nodes,
        }
    }

    /// The coordinator's connection settings (the superuser of
    /// `TENANTRY_CITUS_URL`, this database), for other programs.
    pub fn coordinator_config(&self) -> Config {
        self.coordinator.clone()
    }

    /// The coordinator as the superuser of `TENANTRY_CITUS_URL`.
    pub async fn client(&self) -> Client {
        connect(&self.coordinator).await
    }

    /// The coordinator's connection settings as the server's login role
    /// (`tenantry_server`), this database.
    pub fn server_config(&self) -> Config {
        let mut config = self.coordinator.clone();
        config.user("tenantry_server");
        config
    }

    /// The coordinator as the server's login role (`tenantry_server`),
    /// switched to `tenantry_app` for the session as the server's
    /// connections are.
    pub async fn server_client(&self) -> Client {
        let client = connect(&self.server_config()).await;
        client.batch_execute("SET ROLE tenantry_app").await.unwrap();
        client
    }

    /// The coordinator as the server connects to it: `tenantry_server` with
    /// the database's newest context key.
    pub async fn server_database(&self, key: ContextKey) -> Database {
        Database::connect(&DatabaseConfig::from_config(self.server_config()).with_context_key(key))
            .unwrap()
    }

    /// Drops the database on every node.
    pub async fn drop_all(self) {
        for node in &self.nodes {
            let client = connect(node).await;
            let _ = client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
        }
    }
}

/// A freshly migrated (and so distributed) cluster database, its superuser
/// client and its newest context key.
pub async fn migrated(url: &str, tag: &str) -> (ClusterDb, Client, ContextKey) {
    let db = ClusterDb::create(url, tag).await;
    let mut client = db.client().await;
    crate::migrate::migrate(&mut client)
        .await
        .expect("the migrations apply and are distributed");
    let row = client
        .query_one(
            "SELECT key_id, secret FROM tenantry.context_keys ORDER BY key_id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let secret: Vec<u8> = row.get(1);
    let key = ContextKey::new(row.get(0), secret.try_into().unwrap());
    (db, client, key)
}
