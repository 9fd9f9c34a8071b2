//! Figures for the team's own tables: RLS point reads and lists on an adopted copy of the data set (`bench.invoices`, one row per resource), and adopting a table that already holds every row (`adopt_1m_rows_s`) while another session keeps writing to it.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tenantry_db::{tables, AdoptOptions, ExistingRows};
use tokio_postgres::Client;

use super::{connect, uuid_array, Ctx};
use crate::{
    dataset::BenchTenant,
    report::{Figure, Goal, RatioKind},
};

const INVOICE_COLUMNS: &str = "tenant_id, id, number, amount, created_at";

/// `bench.invoices`: an adopted table with one row per resource, made once per data set.
pub(super) async fn ensure_invoices(su: &Client) -> anyhow::Result<()> {
    let exists: bool = su
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM tenantry.tenant_tables WHERE table_id::text IN ('bench.invoices', 'invoices'))",
            &[],
        )
        .await?
        .get(0);
    if exists {
        return Ok(());
    }
    su.batch_execute(
        "DROP TABLE IF EXISTS bench.invoices;
         CREATE TABLE bench.invoices (
             tenant_id  uuid NOT NULL,
             id         uuid NOT NULL,
             number     bigint NOT NULL,
             amount     numeric(12, 2) NOT NULL,
             created_at timestamptz NOT NULL,
             PRIMARY KEY (tenant_id, id));
         INSERT INTO bench.invoices
             SELECT tenant_id, id, row_number() OVER (), (abs(hashtext(id::text)) % 100000) / 100.0, created_at
             FROM tenantry.resources;
         CREATE INDEX invoices_tenant_newest_idx ON bench.invoices (tenant_id, created_at DESC, id DESC);
         ANALYZE bench.invoices;
         SELECT tenantry.adopt_table('bench.invoices');",
    )
    .await?;
    Ok(())
}

/// `adopted_rls_point`, `adopted_rls_list`, `adopt_1m_rows_s` and the longest
/// write wait during the adoption.
pub(super) async fn table_figures(
    ctx: &mut Ctx,
    su: &Client,
    leaf: &BenchTenant,
) -> anyhow::Result<()> {
    if ctx.wanted("adopted_rls_point") || ctx.wanted("adopted_rls_list") {
        ensure_invoices(su).await?;
        rls_figures(ctx, leaf)?;
    }
    if ctx.wanted("adopt_1m_rows_s") {
        adopt_figures(ctx, su).await?;
    }
    Ok(())
}

/// `adopted_rls_point`'s scripts, one per invoice of `leaf`: a point read by
/// id as a team writes it (the table named without `ONLY`: for a pooled
/// tenant, the pooled table and every schema tenant's table inheriting it),
/// through RLS; and the baseline with an explicit WHERE.
pub(super) fn adopted_point_scripts(leaf: &BenchTenant) -> (Vec<String>, Vec<String>) {
    let rls = leaf
        .resources
        .iter()
        .map(|r| format!("SELECT {INVOICE_COLUMNS} FROM bench.invoices WHERE id = '{r}';\n"))
        .collect();
    let base = leaf
        .resources
        .iter()
        .map(|r| {
            format!(
                "SELECT {INVOICE_COLUMNS} FROM bench.invoices WHERE tenant_id = ANY ({}) AND id = '{r}';\n",
                uuid_array(&leaf.visible)
            )
        })
        .collect();
    (rls, base)
}

fn rls_figures(ctx: &mut Ctx, leaf: &BenchTenant) -> anyhow::Result<()> {
    let order = "ORDER BY created_at DESC, id DESC LIMIT 51";
    let (point_rls, point_base) = adopted_point_scripts(leaf);
    let specs: [super::RlsSpec<'_>; 2] = [
        (
            "adopted_rls_point",
            "point read by id on an adopted table of the team's (bench.invoices, 1 row per resource) through RLS (tenantry_app)",
            leaf,
            "tenantry_app",
            point_rls,
            point_base,
            Goal::RatioAtMost(1.10),
        ),
        (
            "adopted_rls_list",
            "a tenant's newest 50 rows of an adopted table through RLS (tenantry_app_own)",
            leaf,
            "tenantry_app_own",
            vec![format!(
                "SELECT {INVOICE_COLUMNS} FROM bench.invoices WHERE tenant_id = '{}' {order};\n",
                leaf.id
            )],
            vec![format!(
                "SELECT {INVOICE_COLUMNS} FROM bench.invoices WHERE tenant_id = '{}' {order};\n",
                leaf.id
            )],
            Goal::RatioAtMost(1.10),
        ),
    ];
    for spec in specs {
        super::rls_figure(ctx, spec)?;
    }
    Ok(())
}

/// Adopts a copy of every resource row (1M in the full data set) whose tenant
/// comes from a column, the way a team moves an existing table under tenantry:
/// `tenant_id` was added (nullable) by an earlier migration and the application
/// already writes it, the old rows still lack it. Another session inserts rows
/// all along; its slowest insert is compared with its slowest before adoption.
async fn adopt_figures(ctx: &mut Ctx, su: &Client) -> anyhow::Result<()> {
    su.batch_execute(
        "DO $$ BEGIN
             IF EXISTS (SELECT 1 FROM tenantry.tenant_tables WHERE table_id::text IN ('bench.adopt_me', 'adopt_me')) THEN
                 PERFORM tenantry.release_table('bench.adopt_me');
             END IF;
         END $$;
         DROP TABLE IF EXISTS bench.adopt_me;
         CREATE TABLE bench.adopt_me (owner uuid NOT NULL, tenant_id uuid, note text);
         INSERT INTO bench.adopt_me (owner, note) SELECT tenant_id, name FROM tenantry.resources;
         ANALYZE bench.adopt_me;",
    )
    .await?;
    let (rows, tenant): (i64, uuid::Uuid) = {
        let row = su
            .query_one(
                "SELECT (SELECT count(*) FROM bench.adopt_me), (SELECT owner FROM bench.adopt_me LIMIT 1)",
                &[],
            )
            .await?;
        (row.get(0), row.get(1))
    };

    let writer = connect(&ctx.db.superuser).await?;
    let quiet = insert_for(&writer, tenant, Duration::from_secs(2)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                worst = worst.max(insert_for(&writer, tenant, Duration::from_millis(200)).await?);
            }
            anyhow::Ok(worst)
        })
    };
    let adopter = connect(&ctx.db.superuser).await?;
    let started = Instant::now();
    let adopted = tables::adopt_table(
        &adopter,
        "bench.adopt_me",
        &AdoptOptions {
            existing_rows: ExistingRows::Expression("owner".into()),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let worst = busy.await??;
    adopted?;
    ctx.push(Figure::new(
        "adopt_1m_rows_s",
        "s",
        &format!("adopting a table of {rows} rows whose tenant comes from a column (batched backfill, validation, index built concurrently, adopt_table)"),
        vec![seconds],
        None,
        RatioKind::ValueOverBaseline,
        None,
    ));
    ctx.push(Figure::new(
        "adopt_longest_write_wait_ms",
        "ms",
        "another session's slowest single-row INSERT into the table while it was adopted",
        vec![worst.as_secs_f64() * 1000.0],
        Some((
            "the same writer's slowest INSERT before adoption",
            vec![quiet.as_secs_f64() * 1000.0],
        )),
        RatioKind::ValueOverBaseline,
        None,
    ));
    Ok(())
}

/// Single-row INSERTs naming their tenant, for `span`; returns the slowest.
async fn insert_for(c: &Client, tenant: uuid::Uuid, span: Duration) -> anyhow::Result<Duration> {
    let insert = c
        .prepare("INSERT INTO bench.adopt_me (owner, tenant_id, note) VALUES ($1, $1, 'live')")
        .await?;
    let until = Instant::now() + span;
    let mut worst = Duration::ZERO;
    while Instant::now() < until {
        let t = Instant::now();
        c.execute(&insert, &[&tenant]).await?;
        worst = worst.max(t.elapsed());
    }
    Ok(worst)
}
