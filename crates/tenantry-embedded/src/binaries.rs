//! Finding PostgreSQL server binaries (`initdb`, `postgres`) and reading their version; nothing here starts a server.

use std::env;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tracing::debug;

use crate::EmbeddedError;

/// Environment variable naming a directory that holds `initdb` and `postgres`.
/// When set (and non-empty), [`PgBinaries::discover`] uses it and nothing else.
pub const PG_BINDIR_ENV: &str = "TENANTRY_PG_BINDIR";

/// Oldest PostgreSQL major version tenantry supports.
pub const MIN_SUPPORTED_MAJOR: u32 = 15;

/// Where Debian/Ubuntu install versioned server binaries (`<root>/<major>/bin`).
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";

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
pub(crate) fn parse_pg_version_file(text: &str) -> Option<u32> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
