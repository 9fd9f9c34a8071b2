//! The cluster's life: options, initdb on first use, starting `postgres` and waiting until it is ready, connection settings, and stopping it (on request, on drop, or when we die).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{fmt, thread};

use rustix::process::Signal;
use tracing::{info, warn};

use crate::binaries::parse_pg_version_file;
use crate::datadir::{
    fix_ownership, open_log, prepare_base_dir, server_identity, write_private_file,
};
use crate::error::io_context;
use crate::os::{
    apply_identity, pid_alive, signal_pid, spawn_on_launcher, tie_to_parent, Identity,
};
use crate::{EmbeddedError, PgBinaries};

/// Name of the cluster's superuser role, and of the system user that runs the
/// server when tenantry runs as root.
pub(crate) const SUPERUSER: &str = "postgres";
/// Port used for the unix socket name when no TCP port is configured. The
/// socket lives in a private directory, so this never clashes with another server.
pub const DEFAULT_PORT: u16 = 5432;
const PGDATA_DIR: &str = "pgdata";
pub(crate) const LOG_FILE: &str = "postgres.log";
pub(crate) const PASSWORD_FILE: &str = "superuser.password";
/// PostgreSQL's limit on a unix socket path (sizeof(sun_path) - 1).
const MAX_SOCKET_PATH: usize = 107;
const POLL_INTERVAL: Duration = Duration::from_millis(10);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a postmaster that failed to become ready gets after SIGQUIT.
const ABORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of the server log quoted in errors.
const LOG_TAIL_LINES: usize = 30;

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
        // One start at a time per directory, until the server is ready: a
        // second process waits, then finds the first one's server running
        // (AlreadyRunning). Two starting at once left one of them failing on
        // postgres's own lock file (found by a new user's review).
        let _starting = lock_start(&data_dir)?;
        let pgdata = data_dir.join(PGDATA_DIR);
        let log_path = data_dir.join(LOG_FILE);
        let password_path = data_dir.join(PASSWORD_FILE);

        let (port, tcp_host, listen) = resolve_tcp(tcp.as_ref())?;
        check_socket_path(&data_dir, port)?;

        let exists = inspect_pgdata(&pgdata, binaries.major())?;
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
        let mut cmd = Command::new(binaries.bindir().join("postgres"));
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
            // GNU gettext prefers LANGUAGE to the locale PostgreSQL sets from
            // lc_messages: a LANGUAGE in the environment would translate the
            // messages of sessions whose lc_messages says otherwise.
            .env_remove("LANGUAGE")
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
            binaries.bindir().join("postgres").display()
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
            major: binaries.major(),
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

    /// Connection settings of the superuser over the unix socket (trust
    /// authentication: no password) to database `dbname`.
    pub fn superuser_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.data_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(dbname);
        config
    }

    /// Connection settings of the superuser over TCP, with its password, to
    /// database `dbname`, if TCP was configured.
    pub fn tcp_superuser_config(&self, dbname: &str) -> Option<tokio_postgres::Config> {
        let host = self.tcp_host.as_ref()?;
        let mut config = tokio_postgres::Config::new();
        config
            .host(host)
            .port(self.port)
            .user(SUPERUSER)
            .password(&self.password)
            .dbname(dbname);
        Some(config)
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

    /// Non-blocking: the postmaster's exit status once it has exited on its
    /// own (a crash, a kill, an operator's `pg_ctl stop`); `None` while it
    /// runs and after [`stop`](Self::stop). Once it has answered, the
    /// cluster counts as stopped. Logs nothing: the caller says what it does
    /// about it.
    pub fn exited(&mut self) -> Option<process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// The pid of the postgres server running on the cluster in `data_dir`
    /// (a base directory as in [`ClusterOptions::data_dir`]), whichever
    /// process started it; `None` when none runs.
    pub fn running(data_dir: &Path) -> Option<u32> {
        running_postmaster(&data_dir.join(PGDATA_DIR))
    }

    /// Whether `data_dir` (a base directory as in [`ClusterOptions::data_dir`])
    /// holds a cluster that [`EmbeddedCluster::start`] would start rather
    /// than create.
    pub fn exists(data_dir: &Path) -> bool {
        data_dir.join(PGDATA_DIR).join("PG_VERSION").is_file()
    }

    /// Marks this process as using the cluster another process started in
    /// `data_dir` (a base directory as in [`ClusterOptions::data_dir`]) until
    /// the guard drops: that process's [`EmbeddedCluster::stop`] waits for it
    /// (at most [`ATTACHED_WAIT`]). For work that must not lose the server
    /// half-way (a one-off command); a long-running user that starts the
    /// server again when it goes (`tenantry serve`) needs none.
    pub fn attach(data_dir: &Path) -> Result<Attached, EmbeddedError> {
        let path = data_dir.join(ATTACHED_LOCK);
        let file = open_lock_file(&path)?;
        flock(&file, rustix::fs::FlockOperation::LockShared)
            .map_err(io_context(format!("could not lock {}", path.display())))?;
        Ok(Attached { _file: file })
    }

    /// Fast shutdown (SIGINT to the postmaster); waits up to 30 s for it to
    /// exit, then SIGKILLs it. Idempotent. First waits, at most
    /// [`ATTACHED_WAIT`], for the other processes [attached](Attached) to
    /// the cluster to let go of it: a one-off command that found the server
    /// running is not cut off mid-way because the process that started it
    /// ended first.
    pub fn stop(&mut self) -> Result<(), EmbeddedError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        // Held through the shutdown: a process attaching meanwhile waits for
        // it, then finds the server gone (and starts it).
        let _no_one_attached = match child.try_wait().ok().flatten() {
            None => wait_for_attached(&self.data_dir, ATTACHED_WAIT),
            Some(_) => None,
        };
        shutdown(&mut child, Signal::INT, STOP_TIMEOUT).map_err(io_context(format!(
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

/// Takes `<data_dir>/start.lock` (created if missing) exclusively, waiting
/// for a start under way in another process; released when the file closes.
fn lock_start(data_dir: &Path) -> Result<File, EmbeddedError> {
    let path = data_dir.join("start.lock");
    let file = open_lock_file(&path)?;
    flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(io_context(format!("could not lock {}", path.display())))?;
    Ok(file)
}

/// `flock(2)` on `file`, its error as an `io::Error`.
fn flock(file: &File, operation: rustix::fs::FlockOperation) -> io::Result<()> {
    rustix::fs::flock(file, operation).map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))
}

/// A lock file, created if missing. Read-only once it exists (flock needs
/// no more): a later run as another user (root first, then the postgres
/// user) can still open it.
fn open_lock_file(path: &Path) -> Result<File, EmbeddedError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            // Readable by every user that runs tenantry here, whatever the
            // umask (root's 077 left a file the postgres user could not open).
            .mode(0o644)
            .open(path)
            .and_then(|f| {
                fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
                Ok(f)
            }),
        other => other,
    }
    .map_err(io_context(format!("could not open {}", path.display())))
}

/// The file other processes hold shared while they use a cluster they did
/// not start ([`EmbeddedCluster::attach`]).
const ATTACHED_LOCK: &str = "attached.lock";

/// Longest [`EmbeddedCluster::stop`] waits for attached processes.
pub const ATTACHED_WAIT: Duration = Duration::from_secs(60);

/// A process's hold on a cluster another process started; released on drop.
#[derive(Debug)]
pub struct Attached {
    _file: File,
}

/// Waits until no process is attached to the cluster in `data_dir` (its
/// exclusive lock can be taken), at most `limit`; says so once when it
/// waits. The lock, held until the file drops, when it was taken.
fn wait_for_attached(data_dir: &Path, limit: Duration) -> Option<File> {
    // Nobody ever attached when the file is missing (or unreadable: then
    // nobody could attach either).
    let file = File::open(data_dir.join(ATTACHED_LOCK)).ok()?;
    let deadline = Instant::now() + limit;
    let mut said = false;
    loop {
        match flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Some(file),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            warn!(
                data_dir = %data_dir.display(),
                "another process still uses the embedded PostgreSQL after {} s; stopping it anyway",
                limit.as_secs()
            );
            return None;
        }
        if !said {
            info!(
                data_dir = %data_dir.display(),
                "waiting (at most {} s) for another tenantry process using the embedded PostgreSQL to finish",
                limit.as_secs()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// 32 hex characters from the operating system's random source.
fn generate_password() -> Result<String, EmbeddedError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        io_context("could not get random bytes from the operating system to generate a password")(
            e.into(),
        )
    })?;
    Ok(hex::encode(bytes))
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
    let mut cmd = Command::new(binaries.bindir().join("initdb"));
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
        binaries.bindir().join("initdb").display()
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
                let _ = shutdown(child, Signal::QUIT, ABORT_TIMEOUT);
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
            let _ = shutdown(child, Signal::QUIT, ABORT_TIMEOUT);
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
fn shutdown(child: &mut Child, signal: Signal, grace: Duration) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use tokio_postgres::config::Host;

    use super::*;
    use crate::os::effective_uid;
    use crate::temp_data_dir;

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

    /// Why starting a cluster in `dir` failed (it must fail).
    fn start_error(dir: &Path) -> EmbeddedError {
        EmbeddedCluster::start(test_options(dir)).unwrap_err()
    }

    /// Starting a cluster in `dir` must fail with an error `expected` accepts.
    fn start_fails_with(dir: &Path, expected: fn(&EmbeddedError) -> bool) {
        let err = start_error(dir);
        assert!(expected(&err), "{err:?}");
    }

    /// A fresh data directory whose `pgdata` holds one file (and no cluster).
    fn data_dir_with_pgdata_file(prefix: &str, name: &str, contents: &str) -> PathBuf {
        let dir = temp_data_dir(prefix).unwrap();
        fs::create_dir(dir.join(PGDATA_DIR)).unwrap();
        fs::write(dir.join(PGDATA_DIR).join(name), contents).unwrap();
        dir
    }

    /// Runs `select 1` through psql with the settings of `config` (as
    /// separate arguments and PGPASSWORD: nothing to quote).
    fn psql(config: &tokio_postgres::Config) -> Result<String, String> {
        let mut cmd = Command::new("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-c", "select 1"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD");
        match config.get_hosts().first() {
            Some(Host::Tcp(host)) => cmd.arg("-h").arg(host),
            Some(Host::Unix(dir)) => cmd.arg("-h").arg(dir),
            None => &mut cmd,
        };
        if let Some(port) = config.get_ports().first() {
            cmd.arg("-p").arg(port.to_string());
        }
        if let Some(user) = config.get_user() {
            cmd.arg("-U").arg(user);
        }
        if let Some(dbname) = config.get_dbname() {
            cmd.arg("-d").arg(dbname);
        }
        if let Some(password) = config.get_password() {
            cmd.env("PGPASSWORD", String::from_utf8_lossy(password).into_owned());
        }
        let out = cmd
            .output()
            .map_err(|e| format!("could not run psql: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    #[test]
    fn quotes_socket_dirs_and_picks_client_hosts() {
        assert_eq!(guc_list_item(Path::new("/tmp/x")), OsString::from("/tmp/x"));
        assert_eq!(
            guc_list_item(Path::new("/tmp/a,\"b")),
            OsString::from("\"/tmp/a,\"\"b\"")
        );
        assert_eq!(client_host("*"), "127.0.0.1");
        assert_eq!(client_host("localhost, 10.0.0.1"), "localhost");
    }

    /// Found by a new user's review: two processes starting the cluster at
    /// once both saw none running, and one failed on postgres's lock file.
    /// Under the start lock one starts it and the others find it running,
    /// every time; the exit of a postgres killed under us is seen.
    #[test]
    fn starts_at_the_same_moment_give_one_server_and_find_it_running_and_its_death_is_seen() {
        let dir = temp_data_dir("tenantry-emb-race").unwrap();
        drop(EmbeddedCluster::start(test_options(&dir)).expect("create the cluster"));
        for round in 0..3 {
            let results: Vec<Result<EmbeddedCluster, EmbeddedError>> = thread::scope(|s| {
                let starts: Vec<_> = (0..3)
                    .map(|_| s.spawn(|| EmbeddedCluster::start(test_options(&dir))))
                    .collect();
                starts.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let mut started = Vec::new();
            for result in results {
                match result {
                    Ok(cluster) => started.push(cluster),
                    Err(EmbeddedError::AlreadyRunning { .. }) => {}
                    Err(e) => panic!("round {round}: a start failed: {e}"),
                }
            }
            assert_eq!(started.len(), 1, "round {round}: one server");
            let mut cluster = started.pop().unwrap();
            let pid = cluster.pid().unwrap();
            assert_eq!(EmbeddedCluster::running(&dir), Some(pid));
            assert!(cluster.exited().is_none());
            signal_pid(pid, Signal::KILL).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Some(status) = cluster.exited() {
                    break status;
                }
                assert!(Instant::now() < deadline, "the kill was not seen");
                thread::sleep(Duration::from_millis(50));
            };
            assert!(!status.success());
            assert!(
                cluster.pid().is_none(),
                "an exited cluster counts as stopped"
            );
            assert_eq!(EmbeddedCluster::running(&dir), None);
        }
    }

    /// Found by two `tenantry migrate` runs on a new data directory: the
    /// one that started the server finished first and stopped it under the
    /// other. Stopping waits for the processes attached to it, and for
    /// nothing once they let go.
    #[test]
    fn stopping_waits_for_a_process_attached_to_the_cluster_to_let_go() {
        let dir = temp_data_dir("tenantry-emb-attached").unwrap();
        let mut cluster = EmbeddedCluster::start(test_options(&dir)).expect("start");
        let pid = cluster.pid().unwrap();
        let attached = EmbeddedCluster::attach(&dir).expect("attach");
        let (let_go, stopped) = thread::scope(|s| {
            let stopping = s.spawn(|| {
                cluster.stop().expect("stop");
                Instant::now()
            });
            thread::sleep(Duration::from_millis(800));
            // Still serving while the other process uses it.
            assert_eq!(EmbeddedCluster::running(&dir), Some(pid));
            let let_go = Instant::now();
            drop(attached);
            (let_go, stopping.join().unwrap())
        });
        assert!(stopped >= let_go, "it stopped before the other let go");
        assert!(
            stopped.duration_since(let_go) < ATTACHED_WAIT,
            "it waited for the limit, not for the other"
        );
        assert_eq!(EmbeddedCluster::running(&dir), None);

        // Nobody attached: no wait.
        let mut cluster = EmbeddedCluster::start(test_options(&dir)).expect("restart");
        let at = Instant::now();
        cluster.stop().expect("stop");
        assert!(at.elapsed() < Duration::from_secs(10), "{:?}", at.elapsed());
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
        assert_eq!(psql(&cluster.superuser_config("postgres")), Ok("1".into()));
        assert!(cluster.tcp_superuser_config("postgres").is_none());

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
        assert_eq!(psql(&again.superuser_config("postgres")), Ok("1".into()));
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
        let tcp = cluster.tcp_superuser_config("postgres").unwrap();
        assert_eq!(tcp.get_hosts(), [Host::Tcp("127.0.0.1".into())]);
        assert_eq!(psql(&tcp), Ok("1".into()));
        // The password is really checked over TCP.
        let mut wrong = tcp.clone();
        wrong.password("wrong");
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
        assert_eq!(psql(&cluster.superuser_config("postgres")), Ok("1".into()));
        drop(cluster);
        assert!(!pid_alive(pid));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn version_mismatch_is_reported() {
        let dir = data_dir_with_pgdata_file("tenantry-emb-mismatch", "PG_VERSION", "14\n");
        let err = start_error(&dir);
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
        let dir = data_dir_with_pgdata_file("tenantry-emb-junk", "junk", "x");
        start_fails_with(&dir, |e| {
            matches!(e, EmbeddedError::InvalidDataDirectory { .. })
        });
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
        let err = start_error(&data_dir);
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
        start_fails_with(&data_dir, |e| {
            matches!(e, EmbeddedError::DirectoryUnreachable { .. })
        });
        let _ = fs::remove_dir_all(&outer);
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
}
