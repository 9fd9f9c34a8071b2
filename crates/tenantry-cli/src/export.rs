//! `tenant export`, `tenant import` and `tenant purge`: offboarding a tenant. Export and import run on the operator's connection (DATABASE_URL of the migration role, or the embedded cluster's superuser) through `tenantry_db::offboard`; purge goes through the library's admin scope, like `tenant delete`.

use std::{io::Write, path::Path};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tenantry_db::{
    offboard::{self, Progress},
    Database, DbError, TenantId,
};

use crate::{
    local,
    output::{json, outln},
    Target,
};

/// A progress bar on stderr (drawn only when stderr is a terminal).
fn bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} rows ({per_sec})")
            .expect("a valid template"),
    );
    bar.set_message(what.to_owned());
    bar
}

fn on_progress(bar: &ProgressBar) -> impl FnMut(Progress) + '_ {
    move |p| match p {
        Progress::Total(n) => bar.set_length(n),
        Progress::Rows(n) => bar.inc(n),
    }
}

/// `tenant export <id> [--out FILE|-]`.
pub async fn export(
    target: &Target,
    as_json: bool,
    tenant: TenantId,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let path = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| format!("tenant-{tenant}.tar.gz").into());
    if path != Path::new("-") {
        writable_archive_path(&path)?;
    }
    let (mut client, _cluster) = local::migration_client(target, "export a tenant").await?;
    let bar = bar("exporting");
    let manifest = if path == Path::new("-") {
        let stdout = std::io::BufWriter::new(std::io::stdout());
        offboard::export_tenant(&mut client, tenant, stdout, on_progress(&bar)).await
    } else {
        // Written beside its destination, renamed once complete: a failed
        // export never leaves a file that looks like an archive.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // The handlers (serve's own) in place before the file exists: a
        // signal from then on ends the export below, never the process.
        let interrupted = local::wait_for_shutdown_signal();
        let partial = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a file in {}", dir.display()))?;
        let writer = std::io::BufWriter::new(partial.as_file().try_clone()?);
        // Ctrl-C (or SIGTERM) ends the export here, so that the partial
        // file, which holds the tenant's rows, is removed with `partial`
        // instead of staying behind when the process is killed mid-write.
        let manifest = tokio::select! {
            m = offboard::export_tenant(&mut client, tenant, writer, on_progress(&bar)) => m,
            () = interrupted => {
                bar.finish_and_clear();
                drop(partial);
                anyhow::bail!("interrupted: nothing was written to {}", path.display());
            }
        };
        if manifest.is_ok() {
            partial.as_file().sync_all()?;
            // A refused rename hands the file back: removed here, since
            // the error ends the process before anything else drops it (a
            // directory given as --out left the tenant's rows behind in a
            // hidden file: found by an operations review).
            partial.persist(&path).map_err(|e| {
                let error = e.error;
                drop(e.file);
                anyhow::Error::new(error).context(format!("writing {}", path.display()))
            })?;
        }
        manifest
    };
    bar.finish_and_clear();
    let manifest = manifest?;
    if path == Path::new("-") {
        std::io::stdout().flush()?;
        // Standard output holds the archive: the report, when asked for,
        // goes to standard error (it was dropped).
        if as_json {
            eprintln!(
                "{}",
                serde_json::json!({ "archive": "-", "manifest": manifest })
            );
        }
        return Ok(());
    }
    if as_json {
        return json(&serde_json::json!({ "archive": path, "manifest": manifest }));
    }
    let rows: u64 = manifest.tables.iter().map(|t| t.rows).sum();
    outln!(
        "exported tenant {tenant}: {rows} rows in {} tables to {}",
        manifest.tables.len(),
        path.display()
    );
    Ok(())
}

/// Refuses, before anything is read, an archive path that is anything but a
/// regular file or a new name: the archive is written beside it and renamed
/// over it, which would replace a device (`/dev/null`), a pipe or a link
/// with a file of the tenant's rows, or fail at the end for a directory.
fn writable_archive_path(path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => anyhow::bail!(
            "{} is {}, not a regular file: give the path of a new (or old) archive file, or `--out -` \
             to write the archive to standard output (a pipe)",
            path.display(),
            if m.is_dir() {
                "a directory"
            } else if m.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "a device, pipe or socket"
            }
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("checking {}", path.display()))),
    }
}

/// `tenant import <archive> [--as <id>]`.
pub async fn import(
    target: &Target,
    as_json: bool,
    archive: &Path,
    as_id: Option<TenantId>,
) -> anyhow::Result<()> {
    std::fs::metadata(archive).with_context(|| format!("reading {}", archive.display()))?;
    let (mut client, _cluster) = local::migration_client(target, "import a tenant").await?;
    // Into a database at this build's schema (or newer) only: an archive
    // carries this build's columns, and one the database does not have yet
    // was skipped without a word (found by an upgrade review).
    if let Err(
        e @ (tenantry_db::migrate::MigrateError::Pending { .. }
        | tenantry_db::migrate::MigrateError::DefinitionsPending { .. }),
    ) = tenantry_db::migrate::check(&client).await
    {
        anyhow::bail!("{e}\n(run `tenantry migrate` with this build first; nothing was imported)");
    }
    let bar = bar("importing");
    let imported = offboard::import_tenant(&mut client, archive, as_id, on_progress(&bar)).await;
    bar.finish_and_clear();
    let imported = imported?;
    if as_json {
        return json(&imported);
    }
    let rows: u64 = imported.rows.values().sum();
    outln!(
        "imported tenant {} (exported as {}): {rows} rows",
        imported.tenant_id,
        imported.source_tenant_id
    );
    Ok(())
}

/// `tenantry tenant purge --due`: every deleted tenant whose grace period
/// is over, children first, each in a transaction of its own; a refused one
/// is skipped with its reason (a child not yet due keeps its parent), and
/// the metrics are refreshed once at the end.
pub async fn purge_due(db: &Database, actor: &str, as_json: bool) -> anyhow::Result<()> {
    let due = {
        let mut scope = db.admin(actor).await?;
        let due = scope.tenants_due_for_purge().await?;
        scope.commit().await?;
        due
    };
    let mut purged = Vec::new();
    let mut skipped = Vec::new();
    for tenant in due {
        match purge_one(db, actor, tenant).await {
            Ok(done) => {
                if !as_json {
                    let rows: i64 = done.rows_deleted.values().sum();
                    outln!("purged tenant {tenant}: {rows} rows");
                }
                purged.push(done);
            }
            // What the database refused for this tenant (still has a child,
            // a move under way, another purge got there first); an outage
            // ends the run.
            Err(e @ (DbError::Conflict(_) | DbError::NotFound(_))) => {
                if !as_json {
                    outln!("skipped tenant {tenant}: {e}");
                }
                skipped.push(serde_json::json!({ "tenant_id": tenant, "reason": e.to_string() }));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !purged.is_empty() {
        refresh_after_purge(db, actor).await?;
    }
    if as_json {
        return json(&serde_json::json!({ "purged": purged, "skipped": skipped }));
    }
    outln!(
        "{} tenants purged, {} skipped; their ids are never given out again",
        purged.len(),
        skipped.len()
    );
    Ok(())
}

/// `tenant purge <id>`: the hard delete, then a refresh of the usage metrics
/// (they still count the purged tenant's requests until refreshed).
pub async fn purge(
    db: &Database,
    actor: &str,
    as_json: bool,
    tenant: TenantId,
) -> anyhow::Result<()> {
    let purged = purge_one(db, actor, tenant).await?;
    refresh_after_purge(db, actor).await?;
    if as_json {
        return json(&purged);
    }
    let rows: i64 = purged.rows_deleted.values().sum();
    outln!(
        "purged tenant {tenant}: {rows} rows{}; its id is never given out again",
        purged
            .schema_dropped
            .as_deref()
            .map(|s| format!(" and schema {s}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// One tenant's purge, in an administrative transaction of its own.
async fn purge_one(
    db: &Database,
    actor: &str,
    tenant: TenantId,
) -> Result<offboard::PurgedTenant, DbError> {
    db.in_admin(actor, &tenant, |scope, tenant| {
        Box::pin(scope.purge_tenant(*tenant))
    })
    .await
}

/// The usage metrics, which count purged tenants' requests until refreshed.
async fn refresh_after_purge(db: &Database, actor: &str) -> anyhow::Result<()> {
    let mut scope = db.admin(actor).await?;
    scope.refresh_metrics().await?;
    scope.commit().await?;
    Ok(())
}
