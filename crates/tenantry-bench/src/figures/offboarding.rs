//! Offboarding figures (issue 17): a tenant of 100,000 resources (1,000 with `--smoke`) exported to a gzip'd archive (`tenant_export_100k_s`, next to a gzip'd COPY of the same rows), imported under a new id (`tenant_import_100k_s`, next to a COPY of those rows into a table of the same shape and indexes), and the imported tenant purged (`tenant_purge_100k_s`, next to a DELETE of the same rows from that copy). Everything made here is purged or dropped at the end, and by the next run if this one was interrupted.

use std::{io::Write, time::Instant};

use anyhow::Context;
use futures_util::{pin_mut, SinkExt, TryStreamExt};
use tenantry_db::{offboard, TenantId};
use tokio_postgres::Client;

use super::{connect, Ctx};
use crate::report::{Figure, RatioKind};

/// Name of the exported tenant, and of every tenant imported from it.
const SOURCE_NAME: &str = "bench offboard tenant";
/// The COPY baselines' table (dropped at the end).
const COPY_TABLE: &str = "bench.offboard_copy";

/// Deletes and purges every imported copy an earlier run left (not the
/// source), and drops the baselines' table; the grace period is 0 meanwhile.
async fn clean_up(su: &Client, source: Option<uuid::Uuid>) -> anyhow::Result<()> {
    let left = su
        .query(
            "SELECT tenant_id, status FROM tenantry.tenants WHERE name = $1 AND tenant_id IS DISTINCT FROM $2",
            &[&SOURCE_NAME, &source],
        )
        .await?;
    for row in left {
        let id: uuid::Uuid = row.get(0);
        let status: String = row.get(1);
        if status != "deleted" {
            su.execute(
                "UPDATE tenantry.tenants SET status = 'deleted' WHERE tenant_id = $1",
                &[&id],
            )
            .await?;
        }
        su.execute("SELECT tenantry.purge_tenant($1)", &[&id])
            .await?;
    }
    su.batch_execute(&format!("DROP TABLE IF EXISTS {COPY_TABLE}"))
        .await?;
    Ok(())
}

/// The source tenant with `rows` resources, made once per data set.
async fn source_tenant(su: &Client, rows: i64) -> anyhow::Result<uuid::Uuid> {
    let existing = su
        .query_opt(
            "SELECT t.tenant_id FROM tenantry.tenants t
              WHERE t.name = $1 AND t.status = 'active'
                AND (SELECT count(*) FROM ONLY tenantry.resources r WHERE r.tenant_id = t.tenant_id) = $2
              ORDER BY t.created_at LIMIT 1",
            &[&SOURCE_NAME, &rows],
        )
        .await?;
    if let Some(row) = existing {
        return Ok(row.get(0));
    }
    su.execute(
        "UPDATE tenantry.tenants SET status = 'deleted' WHERE name = $1 AND status <> 'deleted'",
        &[&SOURCE_NAME],
    )
    .await?;
    let id: uuid::Uuid = su
        .query_one("SELECT tenantry.create_tenant($1)", &[&SOURCE_NAME])
        .await?
        .get(0);
    su.execute(
        "INSERT INTO tenantry.resources (tenant_id, name, data)
         SELECT $1, 'offboard-' || i, jsonb_build_object('i', i, 'text', repeat(md5(i::text), 4))
         FROM generate_series(1, $2::bigint) i",
        &[&id, &rows],
    )
    .await?;
    su.batch_execute("ANALYZE tenantry.resources").await?;
    Ok(id)
}

/// `tenant_export_*_s`, `tenant_import_*_s`, `tenant_purge_*_s`.
pub(super) async fn offboarding_figures(ctx: &mut Ctx, su: &Client) -> anyhow::Result<()> {
    let rows: i64 = if ctx.opts.smoke { 1_000 } else { 100_000 };
    let label = super::count_label(rows, 1000, 'k');
    let export_name = format!("tenant_export_{label}_s");
    let import_name = format!("tenant_import_{label}_s");
    let purge_name = format!("tenant_purge_{label}_s");
    if ![&export_name, &import_name, &purge_name]
        .iter()
        .any(|n| ctx.wanted(n))
    {
        return Ok(());
    }
    let source = source_tenant(su, rows).await?;
    // Copies are purged as soon as they are made: no grace period while this runs.
    let grace: String = su
        .query_one("SELECT grace::text FROM tenantry.purge_policy", &[])
        .await?
        .get(0);
    su.batch_execute("UPDATE tenantry.purge_policy SET grace = interval '0'")
        .await?;
    clean_up(su, Some(source)).await?;
    let measured = measure(
        ctx,
        su,
        source,
        rows,
        [&export_name, &import_name, &purge_name],
    )
    .await;
    clean_up(su, Some(source)).await?;
    su.execute(
        "UPDATE tenantry.purge_policy SET grace = $1::text::interval",
        &[&grace],
    )
    .await?;
    measured
}

async fn measure(
    ctx: &mut Ctx,
    su: &Client,
    source: uuid::Uuid,
    rows: i64,
    [export_name, import_name, purge_name]: [&String; 3],
) -> anyhow::Result<()> {
    let runs = if ctx.opts.smoke { 1 } else { 3 };
    let archive = ctx.work.join("offboard.tar.gz");
    let copy_file = ctx.work.join("offboard.copy.gz");
    let mut operator = connect(&ctx.db.superuser).await?;
    let (mut export, mut import, mut purge) = (Vec::new(), Vec::new(), Vec::new());
    let (mut copy_out, mut copy_in, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    su.batch_execute(&format!(
        "DROP TABLE IF EXISTS {COPY_TABLE};
         CREATE TABLE {COPY_TABLE} (LIKE tenantry.resources INCLUDING DEFAULTS INCLUDING INDEXES)"
    ))
    .await?;
    for _ in 0..runs {
        // Export, next to a gzip'd COPY of the same rows (interleaved).
        let t = Instant::now();
        let file = std::io::BufWriter::new(std::fs::File::create(&archive)?);
        let manifest =
            offboard::export_tenant(&mut operator, TenantId::from_uuid(source), file, |_| {})
                .await
                .context("exporting the bench tenant")?;
        export.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(
            manifest
                .tables
                .iter()
                .any(|e| e.table == "tenantry.resources" && e.rows == rows as u64),
            "the archive lacks the tenant's {rows} resources"
        );

        let t = Instant::now();
        let mut out = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(std::fs::File::create(&copy_file)?),
            flate2::Compression::default(),
        );
        let stream = su
            .copy_out(&format!(
                "COPY (SELECT * FROM ONLY tenantry.resources WHERE tenant_id = '{source}' ORDER BY id) TO STDOUT"
            ))
            .await?;
        pin_mut!(stream);
        while let Some(chunk) = stream.try_next().await? {
            out.write_all(&chunk)?;
        }
        out.finish()?.flush()?;
        copy_out.push(t.elapsed().as_secs_f64());

        // Import under a new id, next to a COPY of the same rows into a table of the same shape.
        let new = TenantId::from_uuid(uuid::Uuid::new_v4());
        let t = Instant::now();
        offboard::import_tenant(&mut operator, &archive, Some(new), |_| {})
            .await
            .context("importing the bench archive")?;
        import.push(t.elapsed().as_secs_f64());
        if import.len() == 1 {
            // The round trip restores an identical tenant: exported again, the
            // imported one gives the same tables, row counts and checksums,
            // but for its audit log, which ends with one row more: the import.
            let again = ctx.work.join("offboard.again.tar.gz");
            let file = std::io::BufWriter::new(std::fs::File::create(&again)?);
            let copy = offboard::export_tenant(&mut operator, new, file, |_| {})
                .await
                .context("exporting the imported tenant")?;
            std::fs::remove_file(&again)?;
            let log_apart = |tables: &[offboard::TableEntry], imports: u64| {
                tables
                    .iter()
                    .map(|t| {
                        if t.table == "tenantry.audit_log" {
                            (
                                t.table.clone(),
                                t.rows.saturating_sub(imports),
                                String::new(),
                            )
                        } else {
                            (t.table.clone(), t.rows, t.sha256.clone())
                        }
                    })
                    .collect::<Vec<_>>()
            };
            anyhow::ensure!(
                log_apart(&copy.tables, 1) == log_apart(&manifest.tables, 0),
                "the imported tenant differs from the exported one:\n{:?}\n{:?}",
                manifest.tables,
                copy.tables
            );
        }

        su.batch_execute(&format!("TRUNCATE {COPY_TABLE}")).await?;
        let t = Instant::now();
        let sink = su
            .copy_in::<_, bytes::Bytes>(&format!("COPY {COPY_TABLE} FROM STDIN"))
            .await?;
        pin_mut!(sink);
        let mut reader =
            flate2::read::GzDecoder::new(std::io::BufReader::new(std::fs::File::open(&copy_file)?));
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf)?;
            if n == 0 {
                break;
            }
            sink.send(bytes::Bytes::copy_from_slice(&buf[..n])).await?;
        }
        let copied = sink.as_mut().finish().await?;
        copy_in.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(copied == rows as u64, "COPY wrote {copied} rows");

        // Purge of the imported tenant, next to a DELETE of the same rows from the copy.
        su.execute(
            "UPDATE tenantry.tenants SET status = 'deleted' WHERE tenant_id = $1",
            &[new.as_uuid()],
        )
        .await?;
        let t = Instant::now();
        su.execute("SELECT tenantry.purge_tenant($1)", &[new.as_uuid()])
            .await?;
        purge.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        su.execute(
            &format!("DELETE FROM {COPY_TABLE} WHERE tenant_id = $1"),
            &[&source],
        )
        .await?;
        delete.push(t.elapsed().as_secs_f64());
    }
    let n = super::count_label(rows, 1000, 'k');
    ctx.push(Figure::new(
        export_name,
        "s",
        &format!("tenantry tenant export of a tenant of {n} resources (one snapshot, every table, NDJSON in a gzip'd tar, checksums)"),
        export,
        Some(("COPY of its resources rows to a gzip'd file", copy_out)),
        RatioKind::ValueOverBaseline,
        None,
    ));
    ctx.push(Figure::new(
        import_name,
        "s",
        "tenantry tenant import of that archive under a new id (checked, one transaction, counters derived)",
        import,
        Some(("COPY of the same rows from a gzip'd file into a table of the same shape and indexes", copy_in)),
        RatioKind::ValueOverBaseline,
        None,
    ));
    ctx.push(Figure::new(
        purge_name,
        "s",
        &format!("purge_tenant of the imported tenant ({n} resources, every tenant-keyed table)"),
        purge,
        Some((
            "DELETE of the same rows from that table by tenant_id",
            delete,
        )),
        RatioKind::ValueOverBaseline,
        None,
    ));
    Ok(())
}
