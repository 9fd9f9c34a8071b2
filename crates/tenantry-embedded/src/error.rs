//! Errors of the embedded cluster: one enum, every message saying what is wrong and how to fix it.

use std::{io, path::PathBuf};

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

    /// The binaries found are older than [`MIN_SUPPORTED_MAJOR`](crate::MIN_SUPPORTED_MAJOR).
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
pub(crate) fn io_context(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Io { context, source }
}
