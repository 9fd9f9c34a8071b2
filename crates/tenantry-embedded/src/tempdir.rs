//! Throwaway data directories for tests and benchmarks: created by `tempfile`, named after their owner's pid, and cleaned up once that process is gone.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::{env, process};

use tracing::debug;

use crate::os::pid_alive;

/// Creates a fresh, empty directory `<temp_dir>/<prefix>-<pid>-<random>` (mode
/// 0700) that is kept after use, first removing older `<prefix>-<pid>-<suffix>`
/// directories whose process is gone, so repeated test runs do not fill /tmp.
pub fn temp_data_dir(prefix: &str) -> io::Result<PathBuf> {
    if prefix.is_empty() || prefix.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("temp_data_dir prefix {prefix:?} must be non-empty and contain no '/'"),
        ));
    }
    let tmp = env::temp_dir();
    remove_stale_dirs(&tmp, prefix);
    // The owner's pid is in the name: a later run removes the directory once
    // this process is gone, even if it was killed before cleaning up.
    let owned_prefix = format!("{prefix}-{}-", process::id());
    let dir = tempfile::Builder::new()
        .prefix(&owned_prefix)
        .permissions(Permissions::from_mode(0o700))
        .tempdir_in(&tmp)?;
    Ok(dir.keep())
}

/// Owner pid recorded in a `<prefix>-<pid>-<suffix>` directory name (the
/// suffix alphanumeric: random letters and digits, or nanoseconds in
/// directories made by older versions).
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (pid, suffix) = rest.split_once('-')?;
    let all_digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    let alphanumeric = !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_alphanumeric());
    if !all_digits || !alphanumeric {
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    use super::*;

    #[test]
    fn parses_temp_dir_names() {
        assert_eq!(owner_pid("tt-123-456", "tt"), Some(123));
        assert_eq!(owner_pid("tt-123-aZ09xy", "tt"), Some(123));
        assert_eq!(owner_pid("tt-x-123-456", "tt"), None);
        assert_eq!(owner_pid("tt-123", "tt"), None);
        assert_eq!(owner_pid("ttt-123-456", "tt"), None);
        assert_eq!(owner_pid("tt-123-45.a", "tt"), None);
        assert_eq!(owner_pid("tt-123-", "tt"), None);
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
        assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
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
