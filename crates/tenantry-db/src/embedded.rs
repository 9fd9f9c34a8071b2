//! Embedded PostgreSQL: finds server binaries, creates and starts a private cluster, stops it with its owner.
//!
//! Layout of a cluster's base directory (`ClusterOptions::data_dir`):
//!
//! ```text
//! <data_dir>/                  mode 0700; owned by `postgres` when we run as root
//!     pgdata/                  the cluster (initdb -D)
//!     postgres.log             server (and initdb) output, appended
//!     superuser.password       password of the `postgres` role (0600), for TCP logins
//!     .s.PGSQL.<port>          the unix socket (`-k <data_dir>`)
//! ```
//!
//! The server listens on the unix socket only, unless TCP is asked for.
//!
//! `initdb` and `postgres` refuse to run as root. When the effective uid is 0,
//! the base directory is handed to the `postgres` system user and both programs
//! run as that user; every parent directory must be enterable by it (checked
//! up front). Without root everything runs as the current user.
//!
//! The postmaster dies with its owner: it is spawned with
//! `PR_SET_PDEATHSIG = SIGINT` (fast shutdown) from a dedicated launcher thread
//! that lives as long as the process, so it outlives the (possibly
//! short-lived) thread that called [`EmbeddedCluster::start`] and is shut down
//! even when this process is SIGKILLed.
//!
//! All functions here block; from async code call them via
//! `tokio::task::spawn_blocking`.

// Unsafe code is allowed in this module only, because std has no safe API for
// what it needs from the OS:
// - `prctl(PR_SET_PDEATHSIG)` and `getppid` inside `CommandExt::pre_exec`, to
//   tie the server's life to ours (pre_exec itself is an unsafe fn);
// - `getpwnam_r`, to look up the `postgres` system user when running as root;
// - `geteuid`, to know whether we run as root;
// - `kill`, to send SIGINT (fast shutdown) to the postmaster and probe pids.
// Every unsafe block is minimal and carries a SAFETY comment.
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{env, fmt, process, ptr, thread};

use tracing::{debug, info, warn};

/// Environment variable naming a directory that holds `initdb` and `postgres`.
/// When set (and non-empty), [`PgBinaries::discover`] uses it and nothing else.
pub const PG_BINDIR_ENV: &str = "TENANTRY_PG_BINDIR";

/// Oldest PostgreSQL major version tenantry supports.
pub const MIN_SUPPORTED_MAJOR: u32 = 15;

/// Name of the cluster's superuser role, and of the system user that runs the
/// server when tenantry runs as root.
const SUPERUSER: &str = "postgres";
/// Port used for the unix socket name when no TCP port is configured. The
/// socket lives in a private directory, so this never clashes with another server.
const DEFAULT_PORT: u16 = 5432;
const PGDATA_DIR: &str = "pgdata";
const LOG_FILE: &str = "postgres.log";
const PASSWORD_FILE: &str = "superuser.password";
/// Where Debian/Ubuntu install versioned server binaries (`<root>/<major>/bin`).
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";
/// PostgreSQL's limit on a unix socket path (sizeof(sun_path) - 1).
const MAX_SOCKET_PATH: usize = 107;
const POLL_INTERVAL: Duration = Duration::from_millis(10);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a postmaster that failed to become ready gets after SIGQUIT.
const ABORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of the server log quoted in errors.
const LOG_TAIL_LINES: usize = 30;

/// Everything that can go wrong finding binaries or running the embedded
/// cluster. Every message says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No directory holding executable `initdb` and `postgres` was found.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found; looked in: {}; \
         install PostgreSQL >= 15 server binaries (Debian: apt-get install postgresql-15) \
         or set TENANTRY_PG_BINDIR to the directory that contains them",
        .looked_in.join("; ")
    )]
    BinariesNotFound {
        /// Where we looked, each with the reason it did not qualify.
        looked_in: Vec<String>,
    },

    /// The binaries found are older than [`MIN_SUPPORTED_MAJOR`].
    #[error(
        "the PostgreSQL server binaries in {} are version {version}, but tenantry needs \
         PostgreSQL >= 15; install a newer server (Debian: apt-get install postgresql-15) \
         or set TENANTRY_PG_BINDIR to the bin directory of PostgreSQL 15 or later",
        .bindir.display()
    )]
    UnsupportedVersion {
        /// Directory holding the binaries.
        bindir: PathBuf,
        /// Their major version.
        major: u32,
        /// Their full version, as printed by `postgres --version`.
        version: String,
    },

    /// Running as root, but the `postgres` system user cannot reach the data directory.
    #[error(
        "data directory {} is not reachable by the `postgres` system user (which runs the \
         server when tenantry runs as root): {reason}; choose a directory whose parents that \
         user can enter (e.g. under /tmp) or set TENANTRY_DATA_DIR",
        .path.display()
    )]
    DirectoryUnreachable {
        /// The data directory.
        path: PathBuf,
        /// Which parent blocks access, and why.
        reason: String,
    },

    /// The data directory cannot be used (not a directory, shared, wrong owner, ...).
    #[error("data directory {} cannot be used: {reason}", .path.display())]
    InvalidDataDirectory {
        /// The offending directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The unix socket path would exceed PostgreSQL's limit.
    #[error(
        "the unix socket path {} is {len} bytes long, but PostgreSQL allows at most 107; \
         choose a data directory with a shorter path (or set TENANTRY_DATA_DIR)",
        .path.display()
    )]
    SocketPathTooLong {
        /// The socket path that would be used.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },

    /// Running as root, and there is no `postgres` system user to run the server as.
    #[error(
        "running as root, but there is no `postgres` system user to run the server as \
         (PostgreSQL refuses to run as root); create one (Debian: adduser --system --group \
         --home /var/lib/postgresql postgres, or install postgresql-15) or run tenantry as \
         an unprivileged user"
    )]
    NoServerUser,

    /// The existing cluster was created by another major version than the binaries.
    #[error(
        "the cluster in {} was created by PostgreSQL {cluster_major}, but the server binaries \
         are PostgreSQL {binaries_major}; point TENANTRY_DATA_DIR at another directory, set \
         TENANTRY_PG_BINDIR to PostgreSQL {cluster_major} binaries, or upgrade the cluster \
         with pg_upgrade",
        .path.display()
    )]
    VersionMismatch {
        /// The cluster directory (`<data_dir>/pgdata`).
        path: PathBuf,
        /// Major version recorded in `PG_VERSION`.
        cluster_major: u32,
        /// Major version of the binaries.
        binaries_major: u32,
    },

    /// A postmaster is already running on this cluster.
    #[error(
        "a PostgreSQL server (pid {pid}) is already running on the cluster in {}; stop it \
         first (kill -INT {pid}) or use another data directory (TENANTRY_DATA_DIR)",
        .path.display()
    )]
    AlreadyRunning {
        /// Pid from `postmaster.pid`.
        pid: u32,
        /// The cluster directory.
        path: PathBuf,
    },

    /// `initdb` failed.
    #[error(
        "initdb failed to create a cluster in {} ({status}); its output ends with:\n{output}\n\
         fix the problem reported above and retry (remove {} first if it was left behind)",
        .path.display(),
        .path.display()
    )]
    InitdbFailed {
        /// The cluster directory.
        path: PathBuf,
        /// How initdb exited.
        status: String,
        /// The tail of initdb's output.
        output: String,
    },

    /// The postmaster exited during startup or did not become ready in time.
    #[error(
        "PostgreSQL did not start: {reason}; the server log {} ends with:\n{log_tail}\n\
         fix the problem reported in the log and retry",
        .log_path.display()
    )]
    StartFailed {
        /// What happened.
        reason: String,
        /// The full server log.
        log_path: PathBuf,
        /// Its last lines (from this start attempt).
        log_tail: String,
    },

    /// An I/O operation failed; `context` says which and what to check.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing, and what to check.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Builds a `map_err` adaptor wrapping an `io::Error` with context.
fn io_context(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Io { context, source }
}

// ---------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------

/// A directory holding usable PostgreSQL server binaries (`initdb`, `postgres`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    bindir: PathBuf,
    major: u32,
    version: String,
}

impl PgBinaries {
    /// Finds server binaries.
    ///
    /// If `TENANTRY_PG_BINDIR` is set, only that directory is considered.
    /// Otherwise the candidates are, in order: the directory of the first real
    /// `postgres` executable on `PATH` (symlinks resolved, wrapper scripts such
    /// as Debian's `pg_wrapper` skipped), `pg_config --bindir`, and
    /// `/usr/lib/postgresql/<major>/bin` (newest first). Among the candidates
    /// holding both `initdb` and `postgres`, the newest major version wins;
    /// on a tie the earlier candidate (so `PATH`) wins.
    pub fn discover() -> Result<Self, EmbeddedError> {
        if let Some(dir) = env::var_os(PG_BINDIR_ENV).filter(|v| !v.is_empty()) {
            let dir = PathBuf::from(dir);
            return match probe_dir(&dir) {
                Ok(found) => found.check_supported(),
                Err(why) => Err(EmbeddedError::BinariesNotFound {
                    looked_in: vec![format!("{PG_BINDIR_ENV}={}: {why}", dir.display())],
                }),
            };
        }

        let mut looked_in = Vec::new();
        let mut candidates = Vec::new();
        candidates.extend(postgres_on_path(&mut looked_in));
        candidates.extend(pg_config_bindir(&mut looked_in));
        candidates.extend(versioned_bindirs(Path::new(VERSIONED_ROOT), &mut looked_in));

        let mut seen: Vec<PathBuf> = Vec::new();
        let mut best: Option<PgBinaries> = None;
        for dir in candidates {
            let key = fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            match probe_dir(&dir) {
                Ok(found) => {
                    debug!(bindir = %found.bindir.display(), version = %found.version, "found PostgreSQL binaries");
                    match &best {
                        Some(b) if b.major >= found.major => {}
                        _ => best = Some(found),
                    }
                }
                Err(why) => looked_in.push(format!("{}: {why}", dir.display())),
            }
        }
        match best {
            Some(found) => found.check_supported(),
            None => Err(EmbeddedError::BinariesNotFound { looked_in }),
        }
    }

    /// Uses the binaries in `dir`, which must hold executable `initdb` and
    /// `postgres` of PostgreSQL 15 or later.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<Self, EmbeddedError> {
        let dir = dir.into();
        match probe_dir(&dir) {
            Ok(found) => found.check_supported(),
            Err(why) => Err(EmbeddedError::BinariesNotFound {
                looked_in: vec![format!("{}: {why}", dir.display())],
            }),
        }
    }

    /// The directory holding the binaries (absolute, symlinks resolved).
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The major version (e.g. 15).
    pub fn major(&self) -> u32 {
        self.major
    }

    /// The full version as printed by `postgres --version` (e.g. "15.18").
    pub fn version(&self) -> &str {
        &self.version
    }

    fn check_supported(self) -> Result<Self, EmbeddedError> {
        if self.major < MIN_SUPPORTED_MAJOR {
            return Err(EmbeddedError::UnsupportedVersion {
                bindir: self.bindir,
                major: self.major,
                version: self.version,
            });
        }
        Ok(self)
    }
}

/// Checks that `dir` holds executable `initdb` and `postgres` and reads the version.
fn probe_dir(dir: &Path) -> Result<PgBinaries, String> {
    let dir = fs::canonicalize(dir).map_err(|e| format!("not accessible ({e})"))?;
    if !dir.is_dir() {
        return Err("not a directory".into());
    }
    for tool in ["initdb", "postgres"] {
        if !is_executable(&dir.join(tool)) {
            return Err(format!("no executable `{tool}`"));
        }
    }
    // `postgres --version` is answered before the server's refuse-to-run-as-root check.
    let out = Command::new(dir.join("postgres"))
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run `postgres --version` ({e})"))?;
    if !out.status.success() {
        return Err(format!("`postgres --version` failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (major, version) = parse_version(&text)
        .ok_or_else(|| format!("unrecognised `postgres --version` output {:?}", text.trim()))?;
    Ok(PgBinaries {
        bindir: dir,
        major,
        version,
    })
}

/// Parses `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` into (15, "15.18").
fn parse_version(text: &str) -> Option<(u32, String)> {
    let rest = text
        .split_once("(PostgreSQL)")
        .map_or(text, |(_, rest)| rest);
    let token = rest
        .split_whitespace()
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits: String = token.chars().take_while(char::is_ascii_digit).collect();
    Some((digits.parse().ok()?, token.to_string()))
}

/// Parses a `PG_VERSION` file's content ("15", or "9.6" for old clusters).
fn parse_pg_version_file(text: &str) -> Option<u32> {
    let digits: String = text
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// True if the file starts with `#!` (a wrapper script, not the server itself).
fn is_script(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"#!"
}

/// Directory of the first real `postgres` executable on `PATH`.
fn postgres_on_path(notes: &mut Vec<String>) -> Option<PathBuf> {
    let Some(path) = env::var_os("PATH") else {
        notes.push("PATH: not set".into());
        return None;
    };
    for dir in env::split_paths(&path) {
        let exe = dir.join("postgres");
        if !is_executable(&exe) {
            continue;
        }
        let Ok(real) = fs::canonicalize(&exe) else {
            continue;
        };
        if is_script(&real) {
            notes.push(format!(
                "{}: wrapper script {}, skipped",
                exe.display(),
                real.display()
            ));
            continue;
        }
        if let Some(parent) = real.parent() {
            return Some(parent.to_path_buf());
        }
    }
    notes.push("PATH: no `postgres` executable".into());
    None
}

/// Output of `pg_config --bindir`, if pg_config is on PATH.
fn pg_config_bindir(notes: &mut Vec<String>) -> Option<PathBuf> {
    let out = match Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            notes.push(format!("pg_config --bindir: could not run ({e})"));
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || text.is_empty() {
        notes.push(format!("pg_config --bindir: failed ({})", out.status));
        return None;
    }
    Some(PathBuf::from(text))
}

/// `<root>/<major>/bin` directories, newest major first.
fn versioned_bindirs(root: &Path, notes: &mut Vec<String>) -> Vec<PathBuf> {
    let mut majors: Vec<u32> = fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    majors.sort_unstable_by(|a, b| b.cmp(a));
    if majors.is_empty() {
        notes.push(format!("{}/*/bin: none", root.display()));
    }
    majors
        .into_iter()
        .map(|m| root.join(m.to_string()).join("bin"))
        .collect()
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

/// How to run an [`EmbeddedCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Base directory (e.g. `./.tenantry`); created if missing. The cluster
    /// lives in `<data_dir>/pgdata`, the unix socket in `<data_dir>` itself.
    pub data_dir: PathBuf,
    /// `(listen_addresses, port)` when TCP is wanted; `None` = unix socket only.
    /// Port 0 picks a free port.
    pub tcp: Option<(String, u16)>,
    /// Binaries to use; `None` runs [`PgBinaries::discover`].
    pub binaries: Option<PgBinaries>,
    /// Extra server settings, passed as `-c name=value` (e.g. `fsync=off` in tests).
    pub extra_settings: Vec<(String, String)>,
}

impl ClusterOptions {
    /// Options for a unix-socket-only cluster in `data_dir`, with discovered binaries.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ClusterOptions {
            data_dir: data_dir.into(),
            tcp: None,
            binaries: None,
            extra_settings: Vec::new(),
        }
    }
}

/// A running private PostgreSQL server. Stopped by [`EmbeddedCluster::stop`],
/// on drop, and (via the parent-death signal) when this process dies.
pub struct EmbeddedCluster {
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    tcp_host: Option<String>,
    password: String,
    major: u32,
    created: bool,
    child: Option<Child>,
}

impl fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("data_dir", &self.data_dir)
            .field("port", &self.port)
            .field("tcp_host", &self.tcp_host)
            .field("major", &self.major)
            .field("created", &self.created)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

/// The system user the server runs as when we are root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    uid: u32,
    gid: u32,
}

impl EmbeddedCluster {
    /// Blocking. Creates the cluster (initdb) if `<data_dir>/pgdata` does not
    /// exist, else reuses it; starts postgres and waits until it accepts
    /// connections (`postmaster.pid` says "ready"; at most 60 s).
    pub fn start(options: ClusterOptions) -> Result<Self, EmbeddedError> {
        let ClusterOptions {
            data_dir,
            tcp,
            binaries,
            extra_settings,
        } = options;
        let binaries = match binaries {
            Some(b) => b,
            None => PgBinaries::discover()?,
        };
        let run_as = server_identity()?;
        let data_dir = prepare_base_dir(&data_dir, run_as)?;
        let pgdata = data_dir.join(PGDATA_DIR);
        let log_path = data_dir.join(LOG_FILE);
        let password_path = data_dir.join(PASSWORD_FILE);

        let (port, tcp_host, listen) = resolve_tcp(tcp.as_ref())?;
        check_socket_path(&data_dir, port)?;

        let exists = inspect_pgdata(&pgdata, binaries.major)?;
        fix_ownership(&data_dir, &pgdata, run_as)?;
        let log = open_log(&log_path, run_as)?;
        if !exists {
            init_cluster(
                &binaries,
                &data_dir,
                &pgdata,
                &password_path,
                &log,
                &log_path,
                run_as,
            )?;
        }
        let password = read_password(&password_path)?;

        let log_offset = log_marker(&log, &log_path, "starting postgres")?;
        let mut cmd = Command::new(binaries.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(&pgdata)
            .arg("-k")
            .arg(guc_list_item(&data_dir))
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg(format!("listen_addresses={listen}"))
            .arg("-c")
            .arg("unix_socket_permissions=0700");
        for (name, value) in &extra_settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        let clone_log = |what: &str| {
            log.try_clone().map_err(io_context(format!(
                "could not duplicate the handle of {} for {what}",
                log_path.display()
            )))
        };
        cmd.current_dir(&data_dir)
            .stdin(Stdio::null())
            .stdout(clone_log("stdout")?)
            .stderr(clone_log("stderr")?)
            // Own process group: a Ctrl-C sent to our terminal's foreground
            // group does not reach the server; we stop it ourselves.
            .process_group(0);
        apply_identity(&mut cmd, &data_dir, run_as);
        tie_to_parent(&mut cmd);

        let started = Instant::now();
        let mut child = spawn_on_launcher(cmd).map_err(io_context(format!(
            "could not start {}; check that it is executable",
            binaries.bindir.join("postgres").display()
        )))?;
        wait_ready(&mut child, &pgdata, &log_path, log_offset)?;
        info!(
            pid = child.id(),
            port,
            data_dir = %data_dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "started postgres pid {}",
            child.id()
        );

        Ok(EmbeddedCluster {
            data_dir,
            log_path,
            port,
            tcp_host,
            password,
            major: binaries.major,
            created: !exists,
            child: Some(child),
        })
    }

    /// Absolute path of the directory holding the unix socket (the base directory).
    pub fn socket_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Port number: the TCP port if configured, else 5432 (the unix socket is
    /// `<socket_dir>/.s.PGSQL.<port>`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser role: "postgres".
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password (needed over TCP only; the unix socket uses
    /// trust auth). Empty if `superuser.password` was missing on reuse.
    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// libpq key=value connection string over the unix socket, as superuser.
    pub fn connection_string(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            conninfo_quote(&self.data_dir.to_string_lossy()),
            self.port,
            conninfo_quote(SUPERUSER),
            conninfo_quote(dbname)
        )
    }

    /// libpq key=value connection string over TCP with the superuser password,
    /// if TCP was configured.
    pub fn tcp_connection_string(&self, dbname: &str) -> Option<String> {
        let host = self.tcp_host.as_ref()?;
        Some(format!(
            "host={} port={} user={} password={} dbname={}",
            conninfo_quote(host),
            self.port,
            conninfo_quote(SUPERUSER),
            conninfo_quote(&self.password),
            conninfo_quote(dbname)
        ))
    }

    /// The base directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log (`<data_dir>/postgres.log`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Major version of the running server.
    pub fn major(&self) -> u32 {
        self.major
    }

    /// True if this start created the cluster (ran initdb), false if it reused one.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Pid of the postmaster while it runs (None after [`stop`](Self::stop)).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fast shutdown (SIGINT to the postmaster); waits up to 30 s for it to
    /// exit, then SIGKILLs it. Idempotent.
    pub fn stop(&mut self) -> Result<(), EmbeddedError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        shutdown(&mut child, libc::SIGINT, STOP_TIMEOUT).map_err(io_context(format!(
            "could not stop postgres (pid {pid}); check with `ps` and stop it with kill -INT {pid}"
        )))?;
        info!(pid, data_dir = %self.data_dir.display(), "stopped postgres pid {pid}");
        Ok(())
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            warn!("{e}");
        }
    }
}

/// `Some(postgres user)` when we run as root, `None` otherwise.
fn server_identity() -> Result<Option<Identity>, EmbeddedError> {
    if effective_uid() != 0 {
        return Ok(None);
    }
    match lookup_user(SUPERUSER) {
        Ok(Some(id)) => Ok(Some(id)),
        Ok(None) => Err(EmbeddedError::NoServerUser),
        Err(source) => Err(EmbeddedError::Io {
            context: "could not look up the `postgres` system user; check /etc/passwd and \
                      the NSS configuration"
                .into(),
            source,
        }),
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Looks up a user's uid and primary gid (thread-safe `getpwnam_r`).
fn lookup_user(name: &str) -> io::Result<Option<Identity>> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name contains NUL"))?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        let mut pwd = MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `cname` is NUL-terminated,
        // `pwd` is writable storage for one `passwd`, `buf` is writable for
        // `buf.len()` bytes and `result` is a writable pointer. getpwnam_r is
        // thread-safe and writes only into these.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                pwd.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc == libc::ENOENT || rc == libc::ESRCH || (rc == 0 && result.is_null()) {
            return Ok(None);
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: rc == 0 and result is non-null, so getpwnam_r filled `*pwd`
        // (result points to it). We copy out two integers only, never the
        // string pointers into `buf`.
        let pwd = unsafe { pwd.assume_init_ref() };
        return Ok(Some(Identity {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        }));
    }
}

/// Creates the base directory, makes it absolute, checks it and (as root)
/// hands it to the server user. Returns the canonical path.
fn prepare_base_dir(requested: &Path, run_as: Option<Identity>) -> Result<PathBuf, EmbeddedError> {
    let absolute = std::path::absolute(requested).map_err(io_context(format!(
        "could not make data directory {} absolute; check that the current directory exists",
        requested.display()
    )))?;
    if let Some(id) = run_as {
        // Check the part of the path that already exists before creating
        // anything, so a bad choice (e.g. under /root) leaves nothing behind.
        if !absolute.exists() {
            if let Some(existing) = absolute.ancestors().find(|p| p.exists()) {
                if let Ok(existing) = fs::canonicalize(existing) {
                    check_reachable(&absolute, &existing, id)?;
                }
            }
        }
    }
    fs::create_dir_all(&absolute).map_err(io_context(format!(
        "could not create data directory {}; check that its parent is writable, or set \
         TENANTRY_DATA_DIR",
        absolute.display()
    )))?;
    let dir = fs::canonicalize(&absolute).map_err(io_context(format!(
        "could not resolve data directory {}",
        absolute.display()
    )))?;
    let meta = fs::metadata(&dir).map_err(io_context(format!(
        "could not inspect data directory {}",
        dir.display()
    )))?;
    if !meta.is_dir() {
        return Err(EmbeddedError::InvalidDataDirectory {
            path: dir,
            reason: "it is not a directory; choose another path (TENANTRY_DATA_DIR)".into(),
        });
    }
    // Must come before any chown/chmod below.
    check_not_shared(&dir, &meta)?;

    match run_as {
        Some(id) => {
            if let Some(parent) = dir.parent() {
                check_reachable(&dir, parent, id)?;
            }
            std::os::unix::fs::chown(&dir, Some(id.uid), Some(id.gid)).map_err(io_context(
                format!(
                    "could not give data directory {} to the `postgres` user",
                    dir.display()
                ),
            ))?;
        }
        None => {
            let me = effective_uid();
            if meta.uid() != me {
                return Err(EmbeddedError::InvalidDataDirectory {
                    path: dir,
                    reason: format!(
                        "it is owned by uid {}, not by the current user (uid {me}); run tenantry \
                         as its owner, or choose another directory (TENANTRY_DATA_DIR)",
                        meta.uid()
                    ),
                });
            }
        }
    }
    if meta.mode() & 0o7777 != 0o700 {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_context(
            format!(
                "could not set mode 0700 on data directory {}",
                dir.display()
            ),
        ))?;
    }
    Ok(dir)
}

/// Refuses the filesystem root and sticky-bit directories such as /tmp: we
/// would chown/chmod them.
fn check_not_shared(dir: &Path, meta: &fs::Metadata) -> Result<(), EmbeddedError> {
    if dir.parent().is_none() || meta.mode() & 0o1000 != 0 {
        return Err(EmbeddedError::InvalidDataDirectory {
            path: dir.to_path_buf(),
            reason: format!(
                "it is a shared directory (the filesystem root or a sticky-bit directory like \
                 /tmp) whose owner and mode tenantry would change; use a dedicated \
                 subdirectory such as {}",
                dir.join("tenantry").display()
            ),
        });
    }
    Ok(())
}

/// `from` and every directory above it must be enterable (search permission)
/// by `id`; errors name the data directory `dir`.
///
/// Only the uid and primary gid count: when `CommandExt::uid` is set without
/// explicit groups, std calls `setgroups(0, NULL)` in the child, dropping all
/// supplementary groups (verified by a test below).
fn check_reachable(dir: &Path, from: &Path, id: Identity) -> Result<(), EmbeddedError> {
    for parent in from.ancestors() {
        let meta = fs::metadata(parent).map_err(io_context(format!(
            "could not inspect {} (a parent of the data directory)",
            parent.display()
        )))?;
        if !searchable_by(&meta, id) {
            return Err(EmbeddedError::DirectoryUnreachable {
                path: dir.to_path_buf(),
                reason: format!(
                    "parent {} is mode {:04o} (owner uid {}, group gid {}), which the `postgres` \
                     user (uid {}, gid {}) cannot enter (or allow it: chmod o+x {})",
                    parent.display(),
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid(),
                    id.uid,
                    id.gid,
                    parent.display()
                ),
            });
        }
    }
    Ok(())
}

/// Unix search-permission check as the kernel does it (owner, else group, else other).
fn searchable_by(meta: &fs::Metadata, id: Identity) -> bool {
    let mode = meta.mode();
    let bits = if meta.uid() == id.uid {
        mode >> 6
    } else if meta.gid() == id.gid {
        mode >> 3
    } else {
        mode
    };
    bits & 0o1 != 0
}

/// Port, client host for TCP, and `listen_addresses`.
fn resolve_tcp(
    tcp: Option<&(String, u16)>,
) -> Result<(u16, Option<String>, String), EmbeddedError> {
    let Some((listen, port)) = tcp else {
        return Ok((DEFAULT_PORT, None, String::new()));
    };
    let host = client_host(listen);
    let port = if *port == 0 {
        TcpListener::bind((host.as_str(), 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(io_context(format!(
                "could not find a free TCP port on {host}; check the listen address or pass \
                 an explicit port"
            )))?
    } else {
        *port
    };
    Ok((port, Some(host), listen.clone()))
}

/// The address a client should connect to for a `listen_addresses` value.
fn client_host(listen: &str) -> String {
    let first = listen
        .split(',')
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or("*");
    match first {
        "*" | "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        other => other,
    }
    .to_string()
}

fn check_socket_path(dir: &Path, port: u16) -> Result<(), EmbeddedError> {
    let path = dir.join(format!(".s.PGSQL.{port}"));
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(EmbeddedError::SocketPathTooLong { path, len });
    }
    Ok(())
}

/// Quotes a path for a GUC list (`unix_socket_directories`) if needed.
fn guc_list_item(path: &Path) -> OsString {
    let bytes = path.as_os_str().as_bytes();
    if !bytes
        .iter()
        .any(|b| matches!(b, b',' | b'"') || b.is_ascii_whitespace())
    {
        return path.as_os_str().to_os_string();
    }
    let mut quoted = Vec::with_capacity(bytes.len() + 2);
    quoted.push(b'"');
    for &b in bytes {
        if b == b'"' {
            quoted.push(b'"');
        }
        quoted.push(b);
    }
    quoted.push(b'"');
    OsString::from_vec(quoted)
}

/// Quotes a libpq conninfo value: empty values and values containing
/// whitespace, `'` or `\` are single-quoted with `'` and `\` escaped.
pub fn conninfo_quote(value: &str) -> String {
    if !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Returns whether a cluster exists in `pgdata`, after checking it can be started.
fn inspect_pgdata(pgdata: &Path, binaries_major: u32) -> Result<bool, EmbeddedError> {
    let meta = match fs::metadata(pgdata) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(io_context(format!(
                "could not inspect {}",
                pgdata.display()
            ))(e));
        }
    };
    if !meta.is_dir() {
        return Err(EmbeddedError::InvalidDataDirectory {
            path: pgdata.to_path_buf(),
            reason: "it is not a directory; remove it or choose another data directory".into(),
        });
    }
    let version_file = pgdata.join("PG_VERSION");
    let version_text = match fs::read_to_string(&version_file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let empty = fs::read_dir(pgdata)
                .map_err(io_context(format!("could not list {}", pgdata.display())))?
                .next()
                .is_none();
            if empty {
                return Ok(false); // initdb accepts an existing empty directory
            }
            return Err(EmbeddedError::InvalidDataDirectory {
                path: pgdata.to_path_buf(),
                reason: "it exists but holds no PostgreSQL cluster (no PG_VERSION; an earlier \
                         initdb may have been interrupted); remove it to create a new cluster, \
                         or choose another data directory"
                    .into(),
            });
        }
        Err(e) => {
            return Err(io_context(format!(
                "could not read {}",
                version_file.display()
            ))(e));
        }
    };
    let cluster_major = parse_pg_version_file(&version_text).ok_or_else(|| {
        EmbeddedError::InvalidDataDirectory {
            path: pgdata.to_path_buf(),
            reason: format!(
                "its PG_VERSION file holds {:?}, not a version; the cluster is damaged: remove \
                 it or choose another data directory",
                version_text.trim()
            ),
        }
    })?;
    if cluster_major != binaries_major {
        return Err(EmbeddedError::VersionMismatch {
            path: pgdata.to_path_buf(),
            cluster_major,
            binaries_major,
        });
    }
    // A stale postmaster.pid is left alone: postgres handles it itself.
    if let Some(pid) = running_postmaster(pgdata) {
        return Err(EmbeddedError::AlreadyRunning {
            pid,
            path: pgdata.to_path_buf(),
        });
    }
    Ok(true)
}

/// Pid from `postmaster.pid` if that process is alive and is a postgres.
fn running_postmaster(pgdata: &Path) -> Option<u32> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    // A standalone backend writes its pid negated.
    let pid = text
        .lines()
        .next()?
        .trim()
        .parse::<i64>()
        .ok()?
        .unsigned_abs();
    let pid = u32::try_from(pid).ok()?;
    if !pid_alive(pid) {
        return None;
    }
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline
            .windows(b"postgres".len())
            .any(|w| w == b"postgres")
            .then_some(pid),
        Err(_) => Some(pid), // cannot tell: assume it is
    }
}

/// True if a process with this pid exists (even if we may not signal it).
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions; signal 0 only checks
    // existence, and pid > 0 addresses exactly one process (never a group).
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Sends `signal` to one process; a process that is already gone is not an error.
fn signal_pid(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"))?;
    // SAFETY: kill has no memory-safety preconditions; pid > 0 addresses
    // exactly one process (never a process group or every process).
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// As root: make sure the server user owns the cluster and our files in the
/// base directory. Otherwise: check the cluster is ours.
fn fix_ownership(
    data_dir: &Path,
    pgdata: &Path,
    run_as: Option<Identity>,
) -> Result<(), EmbeddedError> {
    let pgdata_meta = fs::symlink_metadata(pgdata).ok();
    match run_as {
        Some(id) => {
            if let Some(meta) = pgdata_meta {
                if meta.uid() != id.uid || meta.gid() != id.gid {
                    chown_tree(pgdata, id).map_err(io_context(format!(
                        "could not give {} to the `postgres` user",
                        pgdata.display()
                    )))?;
                }
            }
            for name in [PASSWORD_FILE, LOG_FILE] {
                let path = data_dir.join(name);
                if path.exists() {
                    std::os::unix::fs::chown(&path, Some(id.uid), Some(id.gid)).map_err(
                        io_context(format!(
                            "could not give {} to the `postgres` user",
                            path.display()
                        )),
                    )?;
                }
            }
        }
        None => {
            let me = effective_uid();
            if let Some(meta) = pgdata_meta {
                if meta.uid() != me {
                    return Err(EmbeddedError::InvalidDataDirectory {
                        path: pgdata.to_path_buf(),
                        reason: format!(
                            "the cluster is owned by uid {}, not by the current user (uid {me}); \
                             run tenantry as that user (or as root, which runs the server as \
                             `postgres`), or choose another data directory",
                            meta.uid()
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// `chown -R` without following symlinks.
fn chown_tree(path: &Path, id: Identity) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    std::os::unix::fs::lchown(path, Some(id.uid), Some(id.gid))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), id)?;
        }
    }
    Ok(())
}

fn open_log(path: &Path, run_as: Option<Identity>) -> Result<File, EmbeddedError> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(io_context(format!(
            "could not open the server log {}; check the data directory's permissions",
            path.display()
        )))?;
    if let Some(id) = run_as {
        std::os::unix::fs::chown(path, Some(id.uid), Some(id.gid)).map_err(io_context(format!(
            "could not give {} to the `postgres` user",
            path.display()
        )))?;
    }
    Ok(file)
}

/// Appends a marker line and returns the log length after it (where the
/// output of what follows starts).
fn log_marker(mut log: &File, log_path: &Path, what: &str) -> Result<u64, EmbeddedError> {
    let context = || {
        format!(
            "could not write to the server log {}; check free disk space",
            log_path.display()
        )
    };
    writeln!(log, "---- tenantry: {what} (pid {}) ----", process::id())
        .map_err(|e| io_context(context())(e))?;
    log.metadata()
        .map(|m| m.len())
        .map_err(|e| io_context(context())(e))
}

/// The last lines of `path` written after `offset`.
fn read_tail(path: &Path, offset: u64) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(offset.max(len.saturating_sub(MAX_BYTES))))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            if tail.trim().is_empty() {
                "(nothing was written)".into()
            } else {
                tail
            }
        }
        Err(e) => format!("(could not read it: {e})"),
    }
}

/// 32 hex characters from /dev/urandom.
fn generate_password() -> Result<String, EmbeddedError> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_context(
            "could not read /dev/urandom to generate a password",
        ))?;
    Ok(hex::encode(bytes))
}

/// Writes a 0600 file (owned by the server user when root).
fn write_private_file(
    path: &Path,
    contents: &[u8],
    run_as: Option<Identity>,
) -> Result<(), EmbeddedError> {
    let context = || format!("could not write {}; check free disk space", path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_context(context())(e))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(contents))
        .and_then(|()| file.sync_all())
        .map_err(|e| io_context(context())(e))?;
    if let Some(id) = run_as {
        std::os::unix::fs::chown(path, Some(id.uid), Some(id.gid))
            .map_err(|e| io_context(context())(e))?;
    }
    Ok(())
}

fn read_password(path: &Path) -> Result<String, EmbeddedError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            warn!(
                path = %path.display(),
                "no superuser password file; TCP password logins as `postgres` will not work"
            );
            Ok(String::new())
        }
        Err(e) => Err(io_context(format!("could not read {}", path.display()))(e)),
    }
}

/// Runs initdb into `pgdata` and records the generated superuser password.
fn init_cluster(
    binaries: &PgBinaries,
    data_dir: &Path,
    pgdata: &Path,
    password_path: &Path,
    log: &File,
    log_path: &Path,
    run_as: Option<Identity>,
) -> Result<(), EmbeddedError> {
    let password = generate_password()?;
    let pwfile = data_dir.join(format!(".initdb-pwfile-{}", process::id()));
    write_private_file(&pwfile, format!("{password}\n").as_bytes(), run_as)?;

    let offset = log_marker(log, log_path, "running initdb")?;
    let mut pwfile_arg = OsString::from("--pwfile=");
    pwfile_arg.push(&pwfile);
    let clone_log = || {
        log.try_clone().map_err(io_context(format!(
            "could not duplicate the handle of {}",
            log_path.display()
        )))
    };
    let mut cmd = Command::new(binaries.bindir.join("initdb"));
    cmd.arg("-D")
        .arg(pgdata)
        .args(["-U", SUPERUSER])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(pwfile_arg)
        .args(["-E", "UTF8", "--no-locale"])
        .current_dir(data_dir)
        .stdin(Stdio::null())
        .stdout(clone_log()?)
        .stderr(clone_log()?);
    apply_identity(&mut cmd, data_dir, run_as);

    let started = Instant::now();
    let status = cmd.status();
    let _ = fs::remove_file(&pwfile);
    let status = status.map_err(io_context(format!(
        "could not run {}; check that it is executable",
        binaries.bindir.join("initdb").display()
    )))?;
    if !status.success() {
        return Err(EmbeddedError::InitdbFailed {
            path: pgdata.to_path_buf(),
            status: status.to_string(),
            output: read_tail(log_path, offset),
        });
    }

    // Write-then-rename so a crash never leaves a truncated password file.
    let tmp = password_path.with_extension("password.tmp");
    write_private_file(&tmp, format!("{password}\n").as_bytes(), run_as)?;
    fs::rename(&tmp, password_path).map_err(io_context(format!(
        "could not create {}",
        password_path.display()
    )))?;
    info!(
        pgdata = %pgdata.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "initialised cluster"
    );
    Ok(())
}

/// As root: run the child as the server user.
fn apply_identity(cmd: &mut Command, data_dir: &Path, run_as: Option<Identity>) {
    if let Some(id) = run_as {
        // std sets these in the child after fork: setgroups(0) (dropping
        // supplementary groups), setgid, setuid -- all before pre_exec hooks.
        cmd.uid(id.uid).gid(id.gid).env("HOME", data_dir);
    }
}

/// Makes the kernel send SIGINT (fast shutdown) to the child when the thread
/// that spawned it exits -- see [`spawn_on_launcher`] for why that thread lives
/// as long as the process.
///
/// Ordering: std's child-side code runs setgroups/setgid/setuid *before* the
/// pre_exec hooks (verified by `pre_exec_runs_after_privileges_are_dropped`).
/// That matters because changing credentials clears PR_SET_PDEATHSIG; exec of
/// a non-setuid binary keeps it.
fn tie_to_parent(cmd: &mut Command) {
    // SAFETY: getpid has no preconditions and cannot fail.
    let parent = unsafe { libc::getpid() };
    let hook = move || -> io::Result<()> {
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of the calling
        // (child) process; it is an async-signal-safe syscall.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGINT as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        // If we died between fork and prctl, the signal was missed: give up.
        // SAFETY: getppid has no preconditions and cannot fail.
        if unsafe { libc::getppid() } != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec and only makes
    // async-signal-safe syscalls (prctl, getppid); it does not allocate (both
    // error values are plain OS error codes) or take locks.
    unsafe {
        cmd.pre_exec(hook);
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Sender to the launcher thread; see [`spawn_on_launcher`].
static LAUNCHER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

fn launcher() -> io::Result<&'static mpsc::Sender<Job>> {
    if let Some(sender) = LAUNCHER.get() {
        return Ok(sender);
    }
    let (sender, receiver) = mpsc::channel::<Job>();
    thread::Builder::new()
        .name("tenantry-pg-launcher".into())
        .spawn(move || {
            // Runs until every sender is gone, i.e. for the life of the process
            // (the static one is never dropped). A panicking job must not end
            // the thread: that would SIGINT every server it spawned.
            for job in receiver {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })?;
    // If another thread won the race, our sender is dropped here and our
    // launcher thread, which spawned nothing, exits.
    let _ = LAUNCHER.set(sender);
    LAUNCHER
        .get()
        .ok_or_else(|| io::Error::other("postgres launcher thread not initialised"))
}

/// Spawns `cmd` on the launcher thread.
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not
/// when the process does. Callers (tests especially) may be short-lived
/// threads, so the server is forked from one thread that never exits.
fn spawn_on_launcher(mut cmd: Command) -> io::Result<Child> {
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = reply_tx.send(cmd.spawn());
    });
    launcher()?
        .send(job)
        .map_err(|_| io::Error::other("the postgres launcher thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the postgres launcher thread did not answer"))?
}

/// Polls until `postmaster.pid` names our child and says "ready".
fn wait_ready(
    child: &mut Child,
    pgdata: &Path,
    log_path: &Path,
    log_offset: u64,
) -> Result<(), EmbeddedError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let pid = child.id().to_string();
    let pid_file = pgdata.join("postmaster.pid");
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(EmbeddedError::StartFailed {
                    reason: format!("postgres exited during startup ({status})"),
                    log_path: log_path.to_path_buf(),
                    log_tail: read_tail(log_path, log_offset),
                });
            }
            Ok(None) => {}
            Err(e) => {
                let _ = shutdown(child, libc::SIGQUIT, ABORT_TIMEOUT);
                return Err(io_context("could not watch the starting postgres")(e));
            }
        }
        if let Ok(text) = fs::read_to_string(&pid_file) {
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            if lines.first() == Some(&pid.as_str()) && lines.get(7) == Some(&"ready") {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            let _ = shutdown(child, libc::SIGQUIT, ABORT_TIMEOUT);
            return Err(EmbeddedError::StartFailed {
                reason: format!(
                    "postgres did not accept connections within {} s (the machine may be \
                     overloaded)",
                    READY_TIMEOUT.as_secs()
                ),
                log_path: log_path.to_path_buf(),
                log_tail: read_tail(log_path, log_offset),
            });
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Sends `signal`, waits up to `grace` for the child to exit, then SIGKILLs
/// it; always reaps it.
fn shutdown(child: &mut Child, signal: libc::c_int, grace: Duration) -> io::Result<()> {
    // While the child is unreaped its pid cannot be reused, so signalling it
    // after try_wait() returned None is safe.
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    signal_pid(child.id(), signal)?;
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        thread::sleep(POLL_INTERVAL);
    }
    warn!(
        pid = child.id(),
        "postgres did not exit within {} s; killing it",
        grace.as_secs()
    );
    if let Err(e) = child.kill() {
        if e.kind() != io::ErrorKind::InvalidInput {
            return Err(e);
        }
    }
    child.wait().map(drop)
}

// ---------------------------------------------------------------------------
// Temporary data directories
// ---------------------------------------------------------------------------

/// Creates a fresh, empty directory `<temp_dir>/<prefix>-<pid>-<nanos>` (mode
/// 0700), first removing older `<prefix>-<pid>-<nanos>` directories whose
/// process is gone, so repeated test runs do not fill /tmp.
pub fn temp_data_dir(prefix: &str) -> io::Result<PathBuf> {
    if prefix.is_empty() || prefix.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("temp_data_dir prefix {prefix:?} must be non-empty and contain no '/'"),
        ));
    }
    let tmp = env::temp_dir();
    remove_stale_dirs(&tmp, prefix);
    let pid = process::id();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for attempt in 0..1000u128 {
        let path = tmp.join(format!("{prefix}-{pid}-{}", nanos + attempt));
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "could not create a unique directory {prefix}-{pid}-* in {}",
            tmp.display()
        ),
    ))
}

/// Owner pid recorded in a `<prefix>-<pid>-<nanos>` directory name.
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (pid, nanos) = rest.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(pid) || !all_digits(nanos) {
        return None;
    }
    pid.parse().ok()
}

fn remove_stale_dirs(tmp: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let me = process::id();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| owner_pid(n, prefix)) else {
            continue;
        };
        if pid == me || pid_alive(pid) {
            continue;
        }
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => debug!(path = %entry.path().display(), "removed stale directory"),
                Err(e) => {
                    debug!(path = %entry.path().display(), "could not remove stale directory: {e}")
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        effective_uid() == 0
    }

    /// Options for a throwaway cluster: no fsync, small footprint.
    fn test_options(dir: &Path) -> ClusterOptions {
        let mut options = ClusterOptions::new(dir);
        options.extra_settings = vec![
            ("fsync".into(), "off".into()),
            ("synchronous_commit".into(), "off".into()),
            ("full_page_writes".into(), "off".into()),
            ("shared_buffers".into(), "16MB".into()),
        ];
        options
    }

    fn psql(conninfo: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-q", "-d", conninfo, "-c", "select 1"])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .map_err(|e| format!("could not run psql: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some((15, "15.18".into()))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 17beta1"),
            Some((17, "17beta1".into()))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 9.6.24"),
            Some((9, "9.6.24".into()))
        );
        assert_eq!(parse_version("garbage"), None);
        assert_eq!(parse_pg_version_file("15\n"), Some(15));
        assert_eq!(parse_pg_version_file("9.6\n"), Some(9));
        assert_eq!(parse_pg_version_file("x"), None);
    }

    #[test]
    fn quotes_conninfo_values() {
        assert_eq!(conninfo_quote("tenantry"), "tenantry");
        assert_eq!(conninfo_quote(""), "''");
        assert_eq!(conninfo_quote("a b"), "'a b'");
        assert_eq!(conninfo_quote(r"it's\"), r"'it\'s\\'");
        assert_eq!(guc_list_item(Path::new("/tmp/x")), OsString::from("/tmp/x"));
        assert_eq!(
            guc_list_item(Path::new("/tmp/a,\"b")),
            OsString::from("\"/tmp/a,\"\"b\"")
        );
        assert_eq!(client_host("*"), "127.0.0.1");
        assert_eq!(client_host("localhost, 10.0.0.1"), "localhost");
    }

    #[test]
    fn parses_temp_dir_names() {
        assert_eq!(owner_pid("tt-123-456", "tt"), Some(123));
        assert_eq!(owner_pid("tt-x-123-456", "tt"), None);
        assert_eq!(owner_pid("tt-123", "tt"), None);
        assert_eq!(owner_pid("ttt-123-456", "tt"), None);
        assert_eq!(owner_pid("tt-123-45a", "tt"), None);
    }

    #[test]
    fn discover_finds_supported_binaries() {
        let found = PgBinaries::discover().expect("discover");
        assert!(found.major() >= 15, "{found:?}");
        assert!(found.bindir().join("initdb").exists());
        assert!(found.bindir().is_absolute());
    }

    #[test]
    fn from_dir_rejects_bogus_dir() {
        let err = PgBinaries::from_dir("/nonexistent/tenantry/bin").unwrap_err();
        assert!(
            matches!(err, EmbeddedError::BinariesNotFound { .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/tenantry/bin"), "{msg}");
        assert!(msg.contains("TENANTRY_PG_BINDIR"), "{msg}");

        // A directory that exists but holds no server binaries.
        let err = PgBinaries::from_dir("/usr/bin").unwrap_err();
        assert!(
            matches!(err, EmbeddedError::BinariesNotFound { .. }),
            "{err}"
        );
    }

    #[test]
    fn start_stop_restart() {
        let dir = temp_data_dir("tenantry-emb-cycle").unwrap();
        let mut cluster = EmbeddedCluster::start(test_options(&dir)).expect("first start");
        assert!(cluster.created());
        assert!(cluster.major() >= 15);
        assert_eq!(cluster.port(), 5432);
        assert_eq!(cluster.superuser(), "postgres");
        assert_eq!(cluster.socket_dir(), fs::canonicalize(&dir).unwrap());
        let socket = cluster.socket_dir().join(".s.PGSQL.5432");
        assert!(socket.exists(), "no socket at {}", socket.display());
        assert_eq!(psql(&cluster.connection_string("postgres")), Ok("1".into()));
        assert!(cluster.tcp_connection_string("postgres").is_none());

        let password = cluster.superuser_password().to_string();
        assert_eq!(password.len(), 32);
        assert!(password.bytes().all(|b| b.is_ascii_hexdigit()));
        let pw_meta = fs::metadata(dir.join(PASSWORD_FILE)).unwrap();
        assert_eq!(pw_meta.mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(&dir).unwrap().mode() & 0o777,
            0o700,
            "base dir mode"
        );
        assert!(
            !fs::read_dir(&dir).unwrap().filter_map(Result::ok).any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with(".initdb-pwfile")),
            "temporary pwfile left behind"
        );

        // A second server on the same cluster is refused while the first runs.
        let pid = cluster.pid().unwrap();
        match EmbeddedCluster::start(test_options(&dir)) {
            Err(EmbeddedError::AlreadyRunning { pid: p, .. }) => assert_eq!(p, pid),
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }

        cluster.stop().expect("stop");
        assert!(cluster.pid().is_none());
        assert!(!socket.exists(), "socket still there after stop");
        assert!(!pid_alive(pid), "postmaster {pid} still alive after stop");
        cluster.stop().expect("second stop is a no-op");

        let mut again = EmbeddedCluster::start(test_options(&dir)).expect("restart");
        assert!(!again.created(), "restart must reuse the cluster");
        assert_eq!(again.superuser_password(), password);
        assert_eq!(psql(&again.connection_string("postgres")), Ok("1".into()));
        again.stop().expect("stop again");
        drop(again);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn tcp_with_password() {
        let dir = temp_data_dir("tenantry-emb-tcp").unwrap();
        let mut options = test_options(&dir);
        options.tcp = Some(("127.0.0.1".into(), 0));
        let cluster = EmbeddedCluster::start(options).expect("start");
        assert_ne!(cluster.port(), 0);
        assert!(cluster
            .socket_dir()
            .join(format!(".s.PGSQL.{}", cluster.port()))
            .exists());
        let tcp = cluster.tcp_connection_string("postgres").unwrap();
        assert!(tcp.contains("host=127.0.0.1"), "{tcp}");
        assert_eq!(psql(&tcp), Ok("1".into()));
        // The password is really checked over TCP.
        let wrong = tcp.replace(cluster.superuser_password(), "wrong");
        assert!(psql(&wrong).is_err());
        drop(cluster);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn cluster_outlives_the_thread_that_started_it() {
        let dir = temp_data_dir("tenantry-emb-thread").unwrap();
        let options = test_options(&dir);
        let cluster = thread::spawn(move || EmbeddedCluster::start(options))
            .join()
            .unwrap()
            .expect("start");
        // If the server had been forked by the (now finished) thread, its
        // parent-death signal would have stopped it by now.
        thread::sleep(Duration::from_millis(500));
        let pid = cluster.pid().unwrap();
        assert!(pid_alive(pid));
        assert_eq!(psql(&cluster.connection_string("postgres")), Ok("1".into()));
        drop(cluster);
        assert!(!pid_alive(pid));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn version_mismatch_is_reported() {
        let dir = temp_data_dir("tenantry-emb-mismatch").unwrap();
        fs::create_dir(dir.join(PGDATA_DIR)).unwrap();
        fs::write(dir.join(PGDATA_DIR).join("PG_VERSION"), "14\n").unwrap();
        let err = EmbeddedCluster::start(test_options(&dir)).unwrap_err();
        match &err {
            EmbeddedError::VersionMismatch {
                cluster_major,
                binaries_major,
                ..
            } => {
                assert_eq!(*cluster_major, 14);
                assert!(*binaries_major >= 15);
            }
            other => panic!("expected VersionMismatch, got {other:?}"),
        }
        assert!(err.to_string().contains("pg_upgrade"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn non_cluster_pgdata_is_reported() {
        let dir = temp_data_dir("tenantry-emb-junk").unwrap();
        fs::create_dir(dir.join(PGDATA_DIR)).unwrap();
        fs::write(dir.join(PGDATA_DIR).join("junk"), "x").unwrap();
        let err = EmbeddedCluster::start(test_options(&dir)).unwrap_err();
        assert!(
            matches!(err, EmbeddedError::InvalidDataDirectory { .. }),
            "{err:?}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreachable_directory_is_reported() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let outer = temp_data_dir("tenantry-emb-0700").unwrap();
        fs::set_permissions(&outer, fs::Permissions::from_mode(0o700)).unwrap();
        let data_dir = outer.join("sub");
        let err = EmbeddedCluster::start(test_options(&data_dir)).unwrap_err();
        match &err {
            EmbeddedError::DirectoryUnreachable { path, reason } => {
                assert_eq!(path, &data_dir);
                assert!(reason.contains(&*outer.to_string_lossy()), "{reason}");
            }
            other => panic!("expected DirectoryUnreachable, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("TENANTRY_DATA_DIR"), "{msg}");
        assert!(
            !data_dir.exists(),
            "a refused data directory must not be created"
        );

        // Same when the data directory already exists.
        fs::create_dir(&data_dir).unwrap();
        let err = EmbeddedCluster::start(test_options(&data_dir)).unwrap_err();
        assert!(
            matches!(err, EmbeddedError::DirectoryUnreachable { .. }),
            "{err:?}"
        );
        let _ = fs::remove_dir_all(&outer);
    }

    #[test]
    fn shared_directories_are_refused() {
        let tmp = Path::new("/tmp");
        let meta = fs::metadata(tmp).unwrap();
        assert!(check_not_shared(tmp, &meta).is_err());
        let root = Path::new("/");
        assert!(check_not_shared(root, &fs::metadata(root).unwrap()).is_err());
        let dir = temp_data_dir("tenantry-emb-shared").unwrap();
        assert!(check_not_shared(&dir, &fs::metadata(&dir).unwrap()).is_ok());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn socket_path_length_is_checked() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(100)));
        assert!(matches!(
            check_socket_path(&long, 5432),
            Err(EmbeddedError::SocketPathTooLong { .. })
        ));
        assert!(check_socket_path(Path::new("/tmp/short"), 5432).is_ok());
    }

    /// The claim `tie_to_parent` relies on: std drops privileges (and all
    /// supplementary groups) in the child before running pre_exec hooks.
    #[test]
    fn pre_exec_runs_after_privileges_are_dropped() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let id = lookup_user("postgres").unwrap().expect("postgres user");
        let mut cmd = Command::new("/bin/true");
        cmd.uid(id.uid).gid(id.gid);
        let hook = move || -> io::Result<()> {
            // SAFETY: plain getters without preconditions; getgroups(0, NULL)
            // only returns the count.
            let (uid, euid, gid, groups) = unsafe {
                (
                    libc::getuid(),
                    libc::geteuid(),
                    libc::getgid(),
                    libc::getgroups(0, ptr::null_mut()),
                )
            };
            if uid == id.uid && euid == id.uid && gid == id.gid && groups == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::EPERM))
            }
        };
        // SAFETY: the hook only calls async-signal-safe getters.
        unsafe {
            cmd.pre_exec(hook);
        }
        let status = cmd
            .status()
            .expect("pre_exec saw root credentials: ordering assumption broken");
        assert!(status.success());
    }

    #[test]
    fn temp_data_dir_removes_stale_dirs() {
        // A pid that certainly belonged to a process that is gone now.
        let mut child = Command::new("/bin/true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let prefix = "tenantry-emb-stale";
        let stale = env::temp_dir().join(format!("{prefix}-{dead}-1"));
        fs::create_dir_all(stale.join("inner")).unwrap();
        let unrelated = env::temp_dir().join(format!("{prefix}-notapid-1"));
        fs::create_dir_all(&unrelated).unwrap();

        let fresh = temp_data_dir(prefix).unwrap();
        assert!(fresh.is_dir());
        assert_eq!(
            owner_pid(&fresh.file_name().unwrap().to_string_lossy(), prefix),
            Some(process::id())
        );
        if !pid_alive(dead) {
            assert!(!stale.exists(), "stale dir {} not removed", stale.display());
        }
        assert!(unrelated.exists());
        let second = temp_data_dir(prefix).unwrap();
        assert_ne!(fresh, second);
        assert!(fresh.exists(), "our own live dirs are kept");
        for d in [&fresh, &second, &unrelated, &stale] {
            let _ = fs::remove_dir_all(d);
        }
    }
}
