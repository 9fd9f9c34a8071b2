//! The cluster's base directory: creating it, checking that it is not shared and that the server user can reach it, and giving it (and the files in it) to that user when we run as root.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::cluster::{LOG_FILE, PASSWORD_FILE, SUPERUSER};
use crate::error::io_context;
use crate::os::{effective_uid, lookup_user, Identity};
use crate::EmbeddedError;

/// `Some(postgres user)` when we run as root, `None` otherwise.
pub(crate) fn server_identity() -> Result<Option<Identity>, EmbeddedError> {
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

/// Creates the base directory, makes it absolute, checks it and (as root)
/// hands it to the server user. Returns the canonical path.
pub(crate) fn prepare_base_dir(
    requested: &Path,
    run_as: Option<Identity>,
) -> Result<PathBuf, EmbeddedError> {
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

/// As root: make sure the server user owns the cluster and our files in the
/// base directory. Otherwise: check the cluster is ours.
pub(crate) fn fix_ownership(
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

pub(crate) fn open_log(path: &Path, run_as: Option<Identity>) -> Result<File, EmbeddedError> {
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

/// Writes a 0600 file (owned by the server user when root).
pub(crate) fn write_private_file(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_data_dir;

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
}
