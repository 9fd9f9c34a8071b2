//! The embedded default (feature `embedded`): start a private PostgreSQL in a data directory, or attach to the one another tenantry process runs there, and provision the `tenantry` database in it. What `tenantry serve` and any application built on tenantry start with when no database URL is given.

use std::path::Path;

use tenantry_embedded::{ClusterOptions, EmbeddedCluster, EmbeddedError, DEFAULT_PORT};
use tokio_postgres::Config;

use crate::{conninfo, provision, ProvisionError, Provisioned, ServerLogin};

/// Why the embedded database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The cluster could not start (binaries, directory, ...).
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// The `tenantry` database could not be created or migrated.
    #[error("preparing the database in the embedded cluster: {0}")]
    Provision(#[from] ProvisionError),
    /// The data directory could not be resolved.
    #[error("resolving the data directory: {0}")]
    Directory(#[from] std::io::Error),
    /// The server stopped and cannot be started again here (see
    /// [`LocalCluster::keep_running`]).
    #[error("{0}")]
    Stopped(String),
}

/// The data directory when none is given.
pub const DEFAULT_DATA_DIR: &str = ".tenantry";

/// `/var/tmp/tenantry-<hash>`: a stable home for the cluster of an unreachable default directory.
fn fallback_dir(data_dir: &Path) -> Result<std::path::PathBuf, LocalError> {
    use sha2::Digest;
    let absolute = std::path::absolute(data_dir)?;
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
    /// Where the cluster lives (after any fallback) and how it was started:
    /// what [`LocalCluster::keep_running`] starts it with again.
    data_dir: std::path::PathBuf,
    tcp: Option<(String, u16)>,
    /// While this process uses a server another one started: that process
    /// waits for it before stopping the server ([`EmbeddedCluster::attach`]).
    attached: Option<tenantry_embedded::Attached>,
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
    pub async fn open(data_dir: &Path, tcp: Option<(String, u16)>) -> Result<Self, LocalError> {
        match Self::open_in(data_dir, tcp.clone()).await {
            Err(e @ LocalError::Embedded(EmbeddedError::DirectoryUnreachable { .. }))
                if data_dir == Path::new(DEFAULT_DATA_DIR) =>
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

    /// Whether `data_dir` holds an embedded cluster (made by an earlier
    /// [`LocalCluster::open`]: for the default directory, also where `open`
    /// would have put it instead), so that a command that only reads or
    /// changes what is there can refuse to make an empty one.
    pub fn exists(data_dir: &Path) -> bool {
        EmbeddedCluster::exists(data_dir)
            || (data_dir == Path::new(DEFAULT_DATA_DIR)
                && fallback_dir(data_dir).is_ok_and(|d| EmbeddedCluster::exists(&d)))
    }

    async fn open_in(data_dir: &Path, tcp: Option<(String, u16)>) -> Result<Self, LocalError> {
        let mut options = ClusterOptions::new(data_dir);
        options.tcp = tcp.clone();
        // Blocking is fine here: start-up, before serving anything.
        let (superuser, cluster, attached) = match EmbeddedCluster::start(options) {
            Ok(cluster) => (cluster.superuser_config(DATABASE), Some(cluster), None),
            Err(EmbeddedError::AlreadyRunning { .. }) => {
                let dir = std::path::absolute(data_dir)?;
                // Without the mark (a lock file this user cannot open) the
                // work goes on, as before there was one.
                let attached = EmbeddedCluster::attach(&dir)
                    .map_err(|e| tracing::warn!("{e}: the process that started the embedded PostgreSQL will not wait for this one"))
                    .ok();
                // The server may have been stopping while this process
                // waited to attach: then start it (once).
                if EmbeddedCluster::running(&dir).is_none() {
                    drop(attached);
                    return Box::pin(Self::open_in(data_dir, tcp)).await;
                }
                let mut superuser = Config::new();
                superuser
                    .host_path(&dir)
                    .port(running_port(&dir).unwrap_or(DEFAULT_PORT))
                    .user("postgres");
                (superuser, None, attached)
            }
            Err(e) => return Err(e.into()),
        };
        // The unix socket trusts local logins: the server role needs no password.
        let provisioned = provision(&superuser, DATABASE, ServerLogin::Trust).await?;
        crate::provision::close_other_databases(&provisioned.superuser, DATABASE).await?;
        Ok(Self {
            provisioned,
            cluster,
            data_dir: std::path::absolute(data_dir)?,
            tcp,
            attached,
        })
    }

    /// Keeps the embedded server up while this process uses it. Blocking:
    /// call it now and then (`tenantry serve` does every second, off the
    /// async runtime). When the server this process started has exited on
    /// its own (a crash, a kill), it is started again (PostgreSQL recovers
    /// from its log); when the server another process started is gone (that
    /// process stopped and took it along), this process starts it and from
    /// then on owns it. The pool reconnects by itself. Returns what happened
    /// when it did something: `None` while the server runs.
    pub fn keep_running(&mut self) -> Result<Option<String>, LocalError> {
        let why = match self.cluster.as_mut() {
            Some(cluster) => match cluster.exited() {
                Some(status) => format!("the embedded PostgreSQL exited on its own ({status})"),
                None => return Ok(None),
            },
            None if EmbeddedCluster::running(&self.data_dir).is_some() => return Ok(None),
            None => "the embedded PostgreSQL that another process started has stopped".to_owned(),
        };
        // Only on the port the pool connects to (the socket's name carries
        // it): the port of the server this process started, or of the one
        // it attached to; the default one when neither asked for TCP.
        let port = self
            .provisioned
            .superuser
            .get_ports()
            .first()
            .copied()
            .unwrap_or(DEFAULT_PORT);
        let mut options = ClusterOptions::new(&self.data_dir);
        options.tcp = match &self.tcp {
            Some((listen, _)) => Some((listen.clone(), port)),
            None if port == DEFAULT_PORT => None,
            None => {
                return Err(LocalError::Stopped(format!(
                    "{why}: it listened on port {port}, which this process cannot start it on \
                     (start the process that ran it, or this one, again)"
                )))
            }
        };
        match EmbeddedCluster::start(options) {
            Ok(cluster) => {
                let pid = cluster.pid().unwrap_or_default();
                self.cluster = Some(cluster);
                // Its own server now: nothing to wait for on its own behalf.
                self.attached = None;
                Ok(Some(format!(
                    "{why}; this process started it again (pid {pid})"
                )))
            }
            // Another process was quicker: use its server.
            Err(EmbeddedError::AlreadyRunning { pid, .. }) => {
                self.cluster = None;
                Ok(Some(format!(
                    "{why}; another process started it again (pid {pid})"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Where the cluster lives (its base directory, after any fallback to
    /// `/var/tmp`), whichever process started it.
    pub fn location(&self) -> &Path {
        &self.data_dir
    }

    /// Whether this process started (and will stop) the cluster.
    pub fn owns_process(&self) -> bool {
        self.cluster.is_some()
    }

    /// libpq connection string of the superuser to the `tenantry` database.
    pub fn superuser_url(&self) -> String {
        conninfo(&self.provisioned.superuser)
    }

    /// Connection settings of the superuser to the `tenantry` database (the
    /// migration role: adopting tables, an application's own migrations).
    pub fn superuser_config(&self) -> Config {
        self.provisioned.superuser.clone()
    }

    /// Connection settings of the server's login role to the `tenantry` database.
    pub fn server_config(&self) -> Config {
        self.provisioned.server.clone()
    }

    /// The database's context key (the server's pool proves tenant contexts with it).
    pub fn context_key(&self) -> &crate::ContextKey {
        &self.provisioned.context_key
    }

    /// The pool settings of the server's login role, context key included:
    /// what an application built on tenantry connects with.
    pub fn database_config(&self) -> crate::DatabaseConfig {
        crate::DatabaseConfig::from_config(self.server_config())
            .with_context_key(self.context_key().clone())
    }

    /// Migrations applied when the cluster was opened.
    pub fn applied(&self) -> &[crate::migrate::Migration] {
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

/// The port of a cluster another process runs in `dir` (line 4 of postmaster.pid).
fn running_port(dir: &Path) -> Option<u16> {
    let pid_file = std::fs::read_to_string(dir.join("pgdata/postmaster.pid")).ok()?;
    pid_file.lines().nth(3)?.trim().parse().ok()
}

/// A [`LocalCluster`] watched in the background while this process uses it,
/// as `tenantry serve` does: [`LocalCluster::keep_running`] every second, off
/// the async runtime, so that the embedded server is started again when it
/// exits on its own or when the process that started it stops. Made by
/// [`LocalCluster::keep_running_in_background`]; [`KeptRunning::stop`] ends
/// it (and stops the server this process runs).
pub struct KeptRunning {
    task: tokio::task::JoinHandle<Option<String>>,
    local: std::sync::Arc<std::sync::Mutex<LocalCluster>>,
    lost: Option<tokio::sync::oneshot::Receiver<String>>,
}

impl LocalCluster {
    /// Watches this cluster in the background (a tokio task; call it inside a
    /// runtime). A server that keeps dying is not started for ever: five
    /// starts within five minutes, or one that fails, and
    /// [`KeptRunning::lost`] says why.
    pub fn keep_running_in_background(mut self) -> KeptRunning {
        use std::time::Duration;
        // A watched process starts the server again when the one that
        // started it stops: that one need not wait for it.
        self.attached = None;
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<String>();
        let local = std::sync::Arc::new(std::sync::Mutex::new(self));
        let held = local.clone();
        let task = tokio::spawn(async move {
            let mut starts: Vec<tokio::time::Instant> = Vec::new();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let local = local.clone();
                let checked = tokio::task::spawn_blocking(move || {
                    local
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .keep_running()
                })
                .await;
                let why = match checked {
                    Ok(Ok(None)) => continue,
                    Ok(Ok(Some(what))) => {
                        tracing::warn!("{what}");
                        let now = tokio::time::Instant::now();
                        starts.retain(|t| now.duration_since(*t) < Duration::from_secs(300));
                        starts.push(now);
                        if starts.len() < 5 {
                            continue;
                        }
                        format!(
                            "the embedded PostgreSQL stopped {} times within five minutes; see its log",
                            starts.len()
                        )
                    }
                    Ok(Err(e)) => {
                        format!(
                            "the embedded PostgreSQL stopped and could not be started again: {e}"
                        )
                    }
                    // The check panicked.
                    Err(e) => format!("the embedded PostgreSQL could not be checked: {e}"),
                };
                let _ = lost_tx.send(why.clone());
                return Some(why);
            }
        });
        KeptRunning {
            task,
            local: held,
            lost: Some(lost_rx),
        }
    }
}

impl KeptRunning {
    /// A future that resolves, with why, when the embedded server is lost
    /// for good, and never otherwise (select it against the shutdown
    /// signal). The first call gets it; later ones never resolve.
    pub fn lost(&mut self) -> impl std::future::Future<Output = String> + Send + 'static {
        let lost = self.lost.take();
        async move {
            match lost {
                Some(lost) => match lost.await {
                    Ok(why) => why,
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        }
    }

    /// `shutdown`, or the loss of `watcher`'s server for good (logged as an
    /// error), whichever comes first: the signal to hand a server's
    /// graceful shutdown. Without a watcher (a database URL), `shutdown`.
    pub fn or_lost(
        watcher: Option<&mut KeptRunning>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let lost = watcher.map(KeptRunning::lost);
        async move {
            let lost = async move {
                match lost {
                    Some(lost) => lost.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown => {}
                why = lost => tracing::error!("{why}: stopping"),
            }
        }
    }

    /// Stops watching, and stops the server this process started (once a
    /// check under way has ended, at most 90 s; else it stops with this
    /// process). Says why the server was lost, if it was.
    pub async fn stop(self) -> Option<String> {
        use std::time::Duration;
        self.task.abort();
        let lost = self.task.await.ok().flatten();
        let mut local = self.local;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            match std::sync::Arc::try_unwrap(local) {
                Ok(last) => {
                    drop(last);
                    break;
                }
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    local = shared;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // Its postgres stops with this process (the parent-death signal).
                Err(_) => break,
            }
        }
        lost
    }
}
