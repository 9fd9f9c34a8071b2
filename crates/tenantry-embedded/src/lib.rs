//! tenantry-embedded: a private PostgreSQL cluster started from the installed
//! server binaries, owned by this process and stopped with it.
//!
//! Layout of a cluster's base directory ([`ClusterOptions::data_dir`]):
//!
//! ```text
//! <data_dir>/                  mode 0700; owned by `postgres` when we run as root
//!     pgdata/                  the cluster (initdb -D)
//!     postgres.log             server (and initdb) output, appended
//!     superuser.password       password of the `postgres` role (0600), for TCP logins
//!     .s.PGSQL.<port>          the unix socket (`-k <data_dir>`)
//!     start.lock               held while a process starts the server
//!     attached.lock            held shared by processes using a server another one started
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
//! `tokio::task::spawn_blocking`. This crate knows nothing of tenantry's
//! schema: creating and migrating a database is `tenantry_db::provision`.
//!
//! Modules: [`binaries`] finds the server binaries; `cluster` runs the
//! cluster; `datadir` prepares its base directory; `os` holds identity,
//! signals and the launcher thread (the crate's only `unsafe`: `pre_exec`);
//! `tempdir` makes throwaway data directories; `error` says what went wrong.
#![deny(missing_docs)]

pub mod binaries;
mod cluster;
mod datadir;
mod error;
mod os;
mod tempdir;

pub use binaries::{PgBinaries, MIN_SUPPORTED_MAJOR, PG_BINDIR_ENV};
pub use cluster::{Attached, ClusterOptions, EmbeddedCluster, ATTACHED_WAIT, DEFAULT_PORT};
pub use error::EmbeddedError;
pub use tempdir::temp_data_dir;
