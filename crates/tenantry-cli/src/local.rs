//! The embedded cluster as the CLI uses it: start it (or find it already running) in a data directory, provision the `tenantry` database in it, stop it on signals.

use std::path::Path;

use anyhow::Context;
use tenantry_db::{conninfo, provision, Provisioned, ServerLogin};
use tenantry_embedded::{ClusterOptions, EmbeddedCluster, EmbeddedError};
use tokio_postgres::Config;

/// The data directory when none is given.
pub const DEFAULT_DATA_DIR: &str = ".tenantry";

/// `/var/tmp/tenantry-<hash>`: a stable home for the cluster of an unreachable default directory.
fn fallback_dir(data_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    use sha2::Digest;
    let absolute = std::path::absolute(data_dir).context("resolving the data directory")?;
    let digest = sha2::Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    let short: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(std::path::PathBuf::from(format!(
        "/var/tmp/tenantry-{short}"
    )))
}

/// The database tenantry uses inside the embedded cluster.
pub const DATABASE: &str = "tenantry";

/// A running embedded cluster, ours (stopped on drop) or another process's,
/// with the `tenantry` database created and migrated.
pub struct LocalCluster {
    provisioned: Provisioned,
    cluster: Option<EmbeddedCluster>,
}

impl LocalCluster {
    /// Starts the cluster in `data_dir` (creating it on first use), or attaches to
    /// the one another tenantry process already runs there; creates and migrates the database.
    ///
    /// As root, the cluster runs as the `postgres` system user. When the
    /// *default* directory (`.tenantry` in a checkout under `/root`, say) is not
    /// reachable by that user, the cluster lives in `/var/tmp/tenantry-<hash of
    /// the directory>` instead (the same place every time, said on stderr); the
    /// admin token stays in the default directory. An explicit directory is
    /// never replaced: it is refused with the reason.
    pub async fn open(data_dir: &Path, tcp: Option<(String, u16)>) -> anyhow::Result<Self> {
        match Self::open_in(data_dir, tcp.clone()).await {
            Err(e)
                if data_dir == Path::new(DEFAULT_DATA_DIR)
                    && matches!(
                        e.downcast_ref::<EmbeddedError>(),
                        Some(EmbeddedError::DirectoryUnreachable { .. })
                    ) =>
            {
                let alternative = fallback_dir(data_dir)?;
                eprintln!(
                    "note: {e}
note: using {} for the embedded cluster instead (set TENANTRY_DATA_DIR to choose)",
                    alternative.display()
                );
                Self::open_in(&alternative, tcp).await
            }
            other => other,
        }
    }

    async fn open_in(data_dir: &Path, tcp: Option<(String, u16)>) -> anyhow::Result<Self> {
        let mut options = ClusterOptions::new(data_dir);
        options.tcp = tcp;
        // Blocking is fine here: start-up, before serving anything.
        let (superuser, cluster) = match EmbeddedCluster::start(options) {
            Ok(cluster) => (cluster.superuser_config(DATABASE), Some(cluster)),
            Err(EmbeddedError::AlreadyRunning { .. }) => {
                let dir = std::path::absolute(data_dir).context("resolving the data directory")?;
                let mut superuser = Config::new();
                superuser
                    .host_path(&dir)
                    .port(running_port(&dir).unwrap_or(5432))
                    .user("postgres");
                (superuser, None)
            }
            Err(e) => return Err(e.into()),
        };
        // The unix socket trusts local logins: the server role needs no password.
        let provisioned = provision(&superuser, DATABASE, ServerLogin::Trust)
            .await
            .context("preparing the database in the embedded cluster")?;
        Ok(Self {
            provisioned,
            cluster,
        })
    }

    /// Where the cluster lives (its base directory), when this process started it.
    pub fn location(&self) -> Option<&Path> {
        self.cluster.as_ref().map(|c| c.data_dir())
    }

    /// Whether this process started (and will stop) the cluster.
    pub fn owns_process(&self) -> bool {
        self.cluster.is_some()
    }

    /// libpq connection string of the superuser to the `tenantry` database.
    pub fn superuser_url(&self) -> String {
        conninfo(&self.provisioned.superuser)
    }

    /// Connection settings of the server's login role to the `tenantry` database.
    pub fn server_config(&self) -> Config {
        self.provisioned.server.clone()
    }

    /// Migrations applied when the cluster was opened.
    pub fn applied(&self) -> &[tenantry_db::migrate::Migration] {
        &self.provisioned.applied
    }

    /// TCP connection string (with password) when TCP was requested.
    pub fn tcp_url(&self) -> Option<String> {
        self.cluster
            .as_ref()
            .and_then(|c| c.tcp_superuser_config(DATABASE))
            .map(|c| conninfo(&c))
    }
}

/// A plain connection (its driver task spawned) to `config`.
async fn connect(config: &Config, what: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to the database to {what}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::error!("database connection: {e}");
        }
    });
    Ok(client)
}

/// Applies pending migrations through `url` (a role that may create roles).
pub async fn migrate_url(url: &str) -> anyhow::Result<Vec<tenantry_db::migrate::Migration>> {
    let config: Config = url.parse().context("DATABASE_URL")?;
    let mut client = connect(&config, "migrate").await?;
    Ok(tenantry_db::migrate::migrate(&mut client).await?)
}

/// A connection of the migration role for `target`: DATABASE_URL as given (the
/// role that runs your migrations), or the embedded cluster's superuser.
pub async fn migration_client(
    target: &crate::Target,
    what: &str,
) -> anyhow::Result<(tokio_postgres::Client, Option<LocalCluster>)> {
    match target.database_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => {
            let config: Config = url.parse().context("DATABASE_URL")?;
            Ok((connect(&config, what).await?, None))
        }
        None => {
            let local = LocalCluster::open(&target.data_dir, None).await?;
            let client = connect(&local.provisioned.superuser, what).await?;
            Ok((client, Some(local)))
        }
    }
}

/// A pool for `target`: its URL as given, or the embedded cluster (migrated)
/// as `tenantry_server`; `tune` sets the pool's size and modes.
pub async fn database(
    target: &crate::Target,
    tune: impl Fn(tenantry_db::DatabaseConfig) -> tenantry_db::DatabaseConfig,
) -> anyhow::Result<(tenantry_db::Database, Option<LocalCluster>)> {
    use tenantry_db::{Database, DatabaseConfig};
    match target.database_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => Ok((Database::connect(&tune(DatabaseConfig::new(url)))?, None)),
        None => {
            let local = LocalCluster::open(&target.data_dir, None).await?;
            let db = Database::connect(&tune(DatabaseConfig::from_config(local.server_config())))?;
            Ok((db, Some(local)))
        }
    }
}

/// The port of a cluster another process runs in `dir` (line 4 of postmaster.pid).
fn running_port(dir: &Path) -> Option<u16> {
    let pid_file = std::fs::read_to_string(dir.join("pgdata/postmaster.pid")).ok()?;
    pid_file.lines().nth(3)?.trim().parse().ok()
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
