//! Figures of the schema tier (issue 13, `--schema-tenants [N]`): N schema tenants created one after another next to as many pooled ones; one creation's cost with the data set's pooled rows next to a database of 1,000 (interleaved); another tenant's longest write during the creations and during a tenant's online move to its schema and back, next to the same writer's longest write with nothing else running; the move next to a plain copy of its rows; pooled tenants' point reads with the schema tenants present next to the same reads without them. Everything made here is moved back, deleted or dropped at the end (and by the next run, if this one was interrupted).

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use tenantry_db::{Database, Isolation, NewResource, NewTenant, TenantContext, TenantId};
use tokio_postgres::Client;

use super::{connect, pgoptions, point_targets, rls_point_scripts, Ctx, Keyed, SERVER_POOL};
use crate::{
    dataset::{self, BenchTenant, Sizes},
    load::{wrk_script, Pgbench, Wrk},
    report::{median, Figure, Goal, RatioKind},
    server::ServerChild,
};

/// Names of the tenants made here: what the clean-up finds, also after an
/// interrupted run.
const SCHEMA_PREFIX: &str = "bench schema tenant ";
const POOLED_PREFIX: &str = "bench pooled tenant ";
const MOVER_NAME: &str = "bench mover";
/// Name of the resources the concurrent writers insert (deleted at the end).
const LIVE_WRITE: &str = "bench live write";
/// The data set's tenant (by index) whose writes are watched: pooled, and
/// none of the tenants the other figures read.
const WRITER_INDEX: i32 = 7;

/// A database of the same cluster with about 1,000 pooled rows, made for
/// `schema_tenant_create_ms` and dropped after it.
const SMALL_DATABASE: &str = "tenantry_bench_1k";
const SMALL_SIZES: Sizes = Sizes {
    tenants: 10,
    resources: 100,
    request_log_rows: 1_000,
};

/// Rows per step of an online move (`tier_move_copy`, `tier_move_catch_up`:
/// the SQL functions' default).
const MOVE_BATCH: i32 = 10_000;
/// Pause between a watched writer's inserts: it leaves the two cores to the
/// operation under test and still catches any lock held longer than this.
const WRITER_PAUSE: Duration = Duration::from_millis(5);
/// The longest quiet window a writer's baseline is taken over.
const MAX_QUIET: Duration = Duration::from_secs(60);

/// The figures' names at this run's sizes.
struct Names {
    schema_tenants: String,
    create_ms: &'static str,
    create_max_ms: &'static str,
    wait_create: &'static str,
    wait_move: &'static str,
    move_to: String,
    move_back: String,
    cutover: &'static str,
    cutover_back: &'static str,
    cutover_back_adopted: &'static str,
    api: String,
    rls: String,
    adopted_rls: String,
}

impl Names {
    fn new(count: u32, move_rows: i64) -> Self {
        let rows = rows_label(move_rows);
        Self {
            schema_tenants: format!("schema_tenants_{count}_s"),
            create_ms: "schema_tenant_create_ms",
            create_max_ms: "schema_tenant_create_max_ms",
            wait_create: "other_tenant_write_wait_max_ms_create",
            wait_move: "other_tenant_write_wait_max_ms_move",
            move_to: format!("tier_move_{rows}_rows_s"),
            move_back: format!("tier_move_back_{rows}_rows_s"),
            cutover: "tier_move_cutover_ms",
            cutover_back: "tier_move_back_cutover_ms",
            cutover_back_adopted: "tier_move_back_adopted_cutover_ms",
            api: format!("api_point_read_{count}_schema_tenants"),
            rls: format!("rls_point_{count}_schema_tenants"),
            adopted_rls: format!("adopted_rls_point_{count}_schema_tenants"),
        }
    }
}

/// `100k` for 100,000, else the number: figure names say the move's size.
fn rows_label(rows: i64) -> String {
    super::count_label(rows, 1000, 'k')
}

/// Every figure of this module, when `--schema-tenants` is given.
pub(super) async fn tier_figures(
    ctx: &mut Ctx,
    su: &Client,
    lib: &Database,
    keyed: &[Keyed],
    leaf: &BenchTenant,
    admin_token: &str,
) -> anyhow::Result<()> {
    let Some(count) = ctx.opts.schema_tenant_count() else {
        return Ok(());
    };
    let move_rows: i64 = if ctx.opts.smoke { 1_000 } else { 100_000 };
    let names = Names::new(count, move_rows);
    let adopted_reads = ctx.wanted(&names.adopted_rls);
    let reads = ctx.wanted(&names.api) || ctx.wanted(&names.rls) || adopted_reads;
    let create_ms = ctx.wanted(names.create_ms) || ctx.wanted(names.create_max_ms);
    let create = reads || ctx.wanted(&names.schema_tenants) || ctx.wanted(names.wait_create);
    let moves = [
        &names.move_to,
        &names.move_back,
        names.cutover,
        names.cutover_back,
        names.cutover_back_adopted,
        names.wait_move,
    ]
    .iter()
    .any(|n| ctx.wanted(n));
    if !(create || create_ms || moves) {
        return Ok(());
    }
    let writer = dataset::tenants(su, &[WRITER_INDEX], 1).await?.remove(0).id;
    let removed = clean_up(su, writer).await?;
    if removed > 0 {
        println!("removed {removed} tenants an earlier run left behind");
    }

    let mut presence = None;
    // The tenants made here are removed whatever happened.
    let measured = async {
        // Creation cost first, on a quiet database: after the moves the
        // data set's database is still vacuuming and checkpointing the rows
        // they wrote, and the server child of the reads runs there, none of
        // which the 1k-row database it is compared with has (measured: a
        // ratio of 1.45-1.53 after them, 1.01 alone). Its schema tenants go
        // before the moves.
        settle(su).await?;
        if create_ms {
            create_ms_figures(ctx, su, &names).await?;
            clean_up(su, writer).await?;
            settle(su).await?;
        }
        // Moves next, with the data set's pooled rows and no schema tenant
        // yet: they are figures of the move itself.
        if moves {
            move_figures(ctx, su, lib, writer, move_rows, &names).await?;
            settle(su).await?;
        }
        if ctx.wanted(names.cutover_back_adopted) {
            adopted_move_back_figure(ctx, su, lib, move_rows, names.cutover_back_adopted).await?;
            settle(su).await?;
        }
        if reads {
            if adopted_reads {
                // Before the schema tenants: each gets a table of it too.
                super::tables::ensure_invoices(su).await?;
            }
            let p = presence.insert(Presence::start(
                ctx,
                keyed,
                leaf,
                admin_token,
                adopted_reads,
            )?);
            p.measure(ctx, false)?;
        }
        if create {
            create_figures(ctx, lib, writer, count, &names).await?;
        }
        if let Some(p) = &mut presence {
            p.measure(ctx, true)?;
        }
        anyhow::Ok(())
    }
    .await;
    let t = Instant::now();
    let removed = clean_up(su, writer).await?;
    settle(su).await?;
    println!(
        "moved back and deleted the {removed} tenants made here in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    measured?;
    if let Some(mut p) = presence {
        p.measure(ctx, false)?;
        p.push(ctx, count, &names);
    }
    Ok(())
}

/// Lets the database settle before a figure: the catalog rows of the schema
/// tenants an earlier figure (or run) made and removed, and the rows the
/// moves wrote and deleted, are vacuumed, and a checkpoint writes them out,
/// so that a figure does not pay for the cleaning up of the one before it.
/// (It does not make consecutive runs equal: docs/benchmarks.md.)
async fn settle(su: &Client) -> anyhow::Result<()> {
    // One statement each: VACUUM runs outside a transaction block.
    su.batch_execute(
        "VACUUM (ANALYZE) pg_catalog.pg_class, pg_catalog.pg_attribute, pg_catalog.pg_type,
             pg_catalog.pg_depend, pg_catalog.pg_shdepend, pg_catalog.pg_index, pg_catalog.pg_constraint,
             pg_catalog.pg_namespace, pg_catalog.pg_trigger, pg_catalog.pg_policy, pg_catalog.pg_inherits,
             pg_catalog.pg_description, pg_catalog.pg_attrdef, pg_catalog.pg_init_privs,
             tenantry.resources, tenantry.tenants, tenantry.tenant_hierarchy, tenantry.audit_log",
    )
    .await?;
    su.batch_execute("CHECKPOINT").await?;
    Ok(())
}

/// Moves the schema tenants made here back to the shared tier (their
/// schemas are dropped), deletes the rows the figures wrote and marks every
/// tenant made here deleted. Returns how many tenants it deleted.
async fn clean_up(su: &Client, writer: uuid::Uuid) -> anyhow::Result<u64> {
    let mine = "(name LIKE $1 || '%' OR name LIKE $2 || '%' OR name LIKE $3 || '%') AND status <> 'deleted'";
    let names: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&SCHEMA_PREFIX, &POOLED_PREFIX, &MOVER_NAME];
    su.execute(
        &format!("SELECT tenantry.tier_move_abort(tenant_id) FROM tenantry.tenants WHERE moving_to IS NOT NULL AND {mine}"),
        &names,
    )
    .await
    .context("aborting a move an earlier run left")?;
    let schema_tenants = su
        .query(
            &format!(
                "SELECT tenant_id FROM tenantry.tenants WHERE isolation = 'schema' AND {mine}"
            ),
            &names,
        )
        .await?;
    // One transaction each, as an operator would: each drops one schema.
    let dropped = !schema_tenants.is_empty();
    for row in schema_tenants {
        let id: uuid::Uuid = row.get(0);
        su.execute("SELECT tenantry.set_tenant_isolation($1, 'shared')", &[&id])
            .await
            .with_context(|| format!("moving schema tenant {id} back"))?;
    }
    if dropped {
        // Thousands of dropped tables leave dead catalog rows that would slow
        // the next creations (schema_tenant_create_ms compares with a fresh
        // database): gone before anything is measured.
        su.batch_execute(
            "VACUUM (ANALYZE) pg_catalog.pg_class, pg_catalog.pg_attribute, pg_catalog.pg_type,
                 pg_catalog.pg_depend, pg_catalog.pg_namespace, pg_catalog.pg_constraint,
                 pg_catalog.pg_index, pg_catalog.pg_trigger, pg_catalog.pg_policy,
                 pg_catalog.pg_description, pg_catalog.pg_inherits, pg_catalog.pg_attrdef,
                 pg_catalog.pg_statistic, pg_catalog.pg_shdepend, pg_catalog.pg_init_privs",
        )
        .await?;
    }
    su.execute(
        &format!("DELETE FROM ONLY tenantry.resources WHERE tenant_id IN (SELECT tenant_id FROM tenantry.tenants WHERE {mine})"),
        &names,
    )
    .await?;
    su.execute(
        "DELETE FROM ONLY tenantry.resources WHERE tenant_id = $1 AND name = $2",
        &[&writer, &LIVE_WRITE],
    )
    .await?;
    if su
        .query_one("SELECT to_regclass('bench.invoices') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0)
    {
        su.execute(
            &format!("DELETE FROM ONLY bench.invoices WHERE tenant_id IN (SELECT tenant_id FROM tenantry.tenants WHERE {mine})"),
            &names,
        )
        .await?;
    }
    let deleted = su
        .execute(
            &format!("UPDATE tenantry.tenants SET status = 'deleted' WHERE {mine}"),
            &names,
        )
        .await?;
    Ok(deleted)
}

/// Creates a tenant through the library as an operator's tool does (an
/// administrative transaction of its own); returns its id and how long the
/// whole call took.
async fn create_tenant(
    lib: &Database,
    name: String,
    isolation: Isolation,
) -> anyhow::Result<(TenantId, Duration)> {
    let started = Instant::now();
    let mut admin = lib.admin("bench").await?;
    let tenant = admin
        .create_tenant(&NewTenant {
            name,
            isolation,
            ..Default::default()
        })
        .await?;
    admin.commit().await?;
    Ok((tenant.tenant_id, started.elapsed()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `schema_tenant_create_ms` and its max: schema tenants created one at a
/// time, alternately in the data set's database and in a fresh database of
/// the same cluster holding 1,000 pooled rows, so both see the same machine.
async fn create_ms_figures(ctx: &mut Ctx, su: &Client, names: &Names) -> anyhow::Result<()> {
    let small = ctx.db.scratch_database(su, SMALL_DATABASE).await?;
    let mut small_su = connect(&tenantry_db::conninfo(&small.superuser)).await?;
    dataset::ensure(&mut small_su, SMALL_SIZES, true).await?;
    // Like for like: a schema tenant gets a table of every tenant table
    // family (resources and each adopted table keyed by tenant), so the 1k-row
    // database adopts the same tables the data set's database has (earlier
    // figures adopt them); only the row count differs.
    let families = su
        .query("SELECT template::text FROM tenantry.tier_tables()", &[])
        .await?;
    for family in families.iter().map(|r| r.get::<_, String>(0)) {
        match family.as_str() {
            "tenantry.resources" => {}
            "bench.invoices" => super::tables::ensure_invoices(&small_su).await?,
            "bench.writes_checked" | "bench.writes_unchecked" => {
                super::people::ensure_write_tables(&small_su).await?
            }
            other => bail!(
                "the data set's database has a tenant table family {other} the 1k-row database \
                 cannot reproduce: schema_tenant_create_ms would not compare like with like"
            ),
        }
    }
    let small_lib = Database::connect(
        &ctx.db
            .library_config(Some(SMALL_DATABASE), &small.context_key),
    )?;
    // A library of its own for the data set's database too, so that both
    // sides create through new connections: a connection that served other
    // work before holds more cached plans, and every DDL statement walks
    // them all (docs/benchmarks.md: `CREATE TABLE … LIKE` 3.9 ms with none,
    // 9.6 ms with 1,000), which is not what this figure compares.
    let lib = &Database::connect(&ctx.db.library_config(None, &ctx.db.context_key))?;
    let count_sql = "SELECT count(*) FROM ONLY tenantry.resources";
    let small_rows: i64 = small_su.query_one(count_sql, &[]).await?.get(0);
    let big_rows: i64 = su.query_one(count_sql, &[]).await?.get(0);

    let samples = if ctx.opts.smoke { 5 } else { 200 };
    let (mut big, mut little) = (Vec::new(), Vec::new());
    // One of each first, unmeasured: connections and caches.
    create_tenant(
        &small_lib,
        format!("{SCHEMA_PREFIX}warm-up"),
        Isolation::Schema,
    )
    .await?;
    create_tenant(lib, format!("{SCHEMA_PREFIX}warm-up"), Isolation::Schema).await?;
    for i in 0..samples {
        let name = format!("{SCHEMA_PREFIX}sample {i}");
        little.push(ms(create_tenant(
            &small_lib,
            name.clone(),
            Isolation::Schema,
        )
        .await?
        .1));
        big.push(ms(create_tenant(lib, name, Isolation::Schema).await?.1));
    }
    drop(small_lib);
    drop(small_su);
    super::drop_database(su, SMALL_DATABASE).await?;

    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let what = |stat: &str| {
        format!("{stat} of {samples} schema tenants created one after another through the library (AdminScope::create_tenant, Isolation::Schema), {big_rows} pooled rows")
    };
    let base = |stat: &str| {
        format!("{stat} of as many created the same way with {small_rows} pooled rows (a fresh database of the same cluster), alternating with the figure's")
    };
    ctx.push(Figure::new(
        names.create_ms,
        "ms",
        &what("p50"),
        big.clone(),
        Some((&base("p50"), little.clone())),
        RatioKind::ValueOverBaseline,
        Some(Goal::RatioAtMost(1.2)),
    ));
    ctx.push(Figure::new(
        names.create_max_ms,
        "ms",
        &what("the longest"),
        vec![max(&big)],
        Some((&base("the longest"), vec![max(&little)])),
        RatioKind::ValueOverBaseline,
        Some(Goal::RatioAtMost(1.5)),
    ));
    Ok(())
}

/// `schema_tenants_<n>_s` next to as many pooled tenants created the same
/// way, and another tenant's longest write during the schema tenants'
/// creation next to its longest in as long a quiet time right after.
async fn create_figures(
    ctx: &mut Ctx,
    lib: &Database,
    writer: uuid::Uuid,
    count: u32,
    names: &Names,
) -> anyhow::Result<()> {
    let started = Instant::now();
    for i in 0..count {
        create_tenant(lib, format!("{POOLED_PREFIX}{i}"), Isolation::Shared).await?;
    }
    let pooled_s = started.elapsed().as_secs_f64();

    let watch = Writer::start(lib, writer, false);
    // The writer's first write opens its connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bar = indicatif::ProgressBar::new(count.into());
    if ctx.opts.smoke {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    for i in 0..count {
        create_tenant(lib, format!("{SCHEMA_PREFIX}{i}"), Isolation::Schema).await?;
        bar.inc(1);
    }
    let took = started.elapsed();
    bar.finish_and_clear();
    let quiet_from = Instant::now();
    let quiet = took.min(MAX_QUIET);
    tokio::time::sleep(quiet).await;
    let writes = watch.stop().await?.writes;

    ctx.push(Figure::new(
        &names.schema_tenants,
        "s",
        &format!("{count} schema tenants created one after another through the library (AdminScope::create_tenant, Isolation::Schema; an administrative transaction each), another tenant writing"),
        vec![took.as_secs_f64()],
        Some((
            &format!("{count} pooled tenants created the same way, just before"),
            vec![pooled_s],
        )),
        RatioKind::ValueOverBaseline,
        (count == 4000).then_some(Goal::ValueAtMost(60.0)),
    ));
    ctx.push(write_wait_figure(
        names.wait_create,
        &format!("while {count} schema tenants were created"),
        &writes,
        (started, took),
        (quiet_from, quiet),
    )?);
    Ok(())
}

/// Another tenant's longest write during an operation next to its longest in
/// a quiet window right after it (as long as the operation, at most a minute).
fn write_wait_figure(
    name: &str,
    during: &str,
    writes: &[Write],
    busy: (Instant, Duration),
    quiet: (Instant, Duration),
) -> anyhow::Result<Figure> {
    let (busy_max, busy_n) = longest(writes, busy.0, busy.1);
    let (quiet_max, quiet_n) = longest(writes, quiet.0, quiet.1);
    if busy_n == 0 || quiet_n == 0 {
        bail!("{name}: the writer wrote nothing in a window ({busy_n} during, {quiet_n} quiet)");
    }
    Ok(Figure::new(
        name,
        "ms",
        &format!("another pooled tenant's longest single-row INSERT (a library transaction each, {} ms apart) {during} ({busy_n} writes over {:.1} s)", WRITER_PAUSE.as_millis(), busy.1.as_secs_f64()),
        vec![ms(busy_max)],
        Some((
            &format!("the same writer's longest INSERT in the {:.1} s right after, nothing else running ({quiet_n} writes)", quiet.1.as_secs_f64()),
            vec![ms(quiet_max)],
        )),
        RatioKind::ValueOverBaseline,
        Some(Goal::ValueAtMost(50.0)),
    ))
}

/// `tier_move_<rows>_rows_s` there and back, the cut-over, and another
/// tenant's longest write during the moves: a tenant holding `rows`
/// resources moved to its schema and back (`Database::move_tenant`) while it
/// and another tenant keep writing, `--runs` times; the baseline copies the
/// same rows with one INSERT ... SELECT into a table of the same shape.
async fn move_figures(
    ctx: &mut Ctx,
    su: &Client,
    lib: &Database,
    writer: uuid::Uuid,
    rows: i64,
    names: &Names,
) -> anyhow::Result<()> {
    let (mover, _) = create_tenant(lib, MOVER_NAME.into(), Isolation::Shared).await?;
    let mover_id = *mover.as_uuid();
    su.execute(
        "INSERT INTO tenantry.resources (tenant_id, name, data)
         SELECT $1, 'moved ' || j, jsonb_build_object('n', j, 'tags', jsonb_build_array('a', 'b'))
         FROM generate_series(1, $2::int8) j",
        &[&mover_id, &rows],
    )
    .await
    .context("loading the tenant to move")?;
    su.batch_execute("ANALYZE tenantry.resources").await?;

    let copy_s = copy_baseline(ctx, su, "tenantry.resources", mover_id, rows).await?;

    let other = Writer::start(lib, writer, false);
    // The moving tenant's own writes may be refused around a cut-over (not
    // acknowledged: the check below still holds); they are counted and shown.
    let own = Writer::start(lib, mover_id, true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut to_s, mut back_s) = (Vec::new(), Vec::new());
    let (mut to_cutover, mut back_cutover) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..ctx.opts.runs {
        for (target, times, cutover_ms) in [
            (Isolation::Schema, &mut to_s, &mut to_cutover),
            (Isolation::Shared, &mut back_s, &mut back_cutover),
        ] {
            let t = Instant::now();
            let moved = lib
                .move_tenant("bench", mover, target, MOVE_BATCH, |_| {})
                .await
                .with_context(|| format!("moving the tenant to the {} tier", target.as_str()))?;
            times.push(t.elapsed().as_secs_f64());
            cutover_ms.push(moved.cutover_ms);
            if moved.isolation != target {
                bail!(
                    "the move ended in the {:?} tier, not {target:?}",
                    moved.isolation
                );
            }
        }
    }
    let took = started.elapsed();
    let own_writes = own.stop().await?;
    let quiet_from = Instant::now();
    let quiet = took.min(MAX_QUIET);
    tokio::time::sleep(quiet).await;
    let other_writes = other.stop().await?.writes;

    // Every acknowledged write of the moving tenant is there, exactly once.
    let row = su
        .query_one(
            "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE name = $2)
             FROM tenantry.resources WHERE tenant_id = $1",
            &[&mover_id, &LIVE_WRITE],
        )
        .await?;
    let (total, distinct, live): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let acked = own_writes.writes.len() as i64;
    if total != rows + acked || distinct != total || live != acked {
        bail!("after the moves the tenant holds {total} rows ({distinct} distinct, {live} written during the moves); expected {rows} + {acked} acknowledged writes");
    }
    let (own_max, _) = longest(&own_writes.writes, started, took);
    println!(
        "moves: the moving tenant's {acked} acknowledged writes during them are all there once; its longest write waited {:.1} ms; cut-overs {to_cutover:?} ms there, {back_cutover:?} ms back",
        ms(own_max)
    );
    let refused = own_writes.errors.len();
    if refused > 0 {
        let mut kinds = own_writes.errors.clone();
        kinds.sort();
        kinds.dedup();
        println!("moves: {refused} of the moving tenant's writes were refused: {kinds:?}");
    }

    let baseline = format!(
        "the same {rows} rows copied by one INSERT ... SELECT into a table LIKE tenantry.resources INCLUDING ALL (superuser, synchronous_commit off)"
    );
    let what = |to: &str| {
        format!("a tenant holding {rows} resources moved online to the {to} tier (Database::move_tenant, batches of {MOVE_BATCH}), it and another tenant writing meanwhile")
    };
    for (name, to, runs) in [
        (&names.move_to, "schema", to_s),
        (&names.move_back, "shared", back_s),
    ] {
        ctx.push(Figure::new(
            name,
            "s",
            &what(to),
            runs,
            Some((&baseline, copy_s.clone())),
            RatioKind::ValueOverBaseline,
            None,
        ));
    }
    for (name, to, runs) in [
        (names.cutover, "schema", to_cutover),
        (names.cutover_back, "shared", back_cutover),
    ] {
        ctx.push(Figure::new(
            name,
            "ms",
            &format!("the cut-over's hold on the moving tenant's writes, to the {to} tier (cutover_ms of tier_move_finish; the tenant's own longest acknowledged write during the moves: {:.1} ms; {refused} of its writes refused)", ms(own_max)),
            runs,
            Some((&format!("{baseline}: how long an offline move would hold them"), copy_s.iter().map(|s| s * 1e3).collect())),
            RatioKind::ValueOverBaseline,
            None,
        ));
    }
    ctx.push(write_wait_figure(
        names.wait_move,
        &format!(
            "while a tenant of {rows} rows was moved to its schema and back {} times",
            ctx.opts.runs
        ),
        &other_writes,
        (started, took),
        (quiet_from, quiet),
    )?);
    Ok(())
}

/// A move's baseline, in seconds per run: `tenant`'s `rows` rows of the
/// tenant table family `template` copied by one statement into a table of
/// the same shape (indexes included), as a move's destination is made;
/// superuser, synchronous_commit off.
async fn copy_baseline(
    ctx: &Ctx,
    su: &Client,
    template: &str,
    tenant: uuid::Uuid,
    rows: i64,
) -> anyhow::Result<Vec<f64>> {
    let columns: String = su
        .query_one(
            "SELECT columns FROM tenantry.tier_tables() WHERE template = $1::text::regclass",
            &[&template],
        )
        .await?
        .get(0);
    su.batch_execute(&format!(
        "DROP TABLE IF EXISTS bench.move_copy;
         CREATE TABLE bench.move_copy (LIKE {template} INCLUDING ALL)"
    ))
    .await?;
    let copy = format!(
        "INSERT INTO bench.move_copy ({columns}) SELECT {columns} FROM ONLY {template} WHERE tenant_id = $1"
    );
    let copier = connect(&ctx.db.superuser).await?;
    copier.batch_execute("SET synchronous_commit = off").await?;
    let mut copy_s = Vec::new();
    for _ in 0..ctx.opts.runs {
        copier.batch_execute("TRUNCATE bench.move_copy").await?;
        let t = Instant::now();
        let n = copier.execute(&copy, &[&tenant]).await?;
        copy_s.push(t.elapsed().as_secs_f64());
        if n != rows as u64 {
            bail!("the baseline copied {n} rows of {template}, not {rows}");
        }
    }
    su.batch_execute("DROP TABLE bench.move_copy").await?;
    Ok(copy_s)
}

/// `tier_move_back_adopted_cutover_ms`: a tenant holding `rows` rows of an
/// adopted table (`bench.invoices`) and no resources moved to its schema and
/// back (`Database::move_tenant`), `--runs` times; what the move back's
/// cut-over held its writes for, next to one INSERT ... SELECT of the same
/// rows (what the cut-over held while it moved them under its lock).
async fn adopted_move_back_figure(
    ctx: &mut Ctx,
    su: &Client,
    lib: &Database,
    rows: i64,
    name: &str,
) -> anyhow::Result<()> {
    super::tables::ensure_invoices(su).await?;
    let (mover, _) =
        create_tenant(lib, format!("{MOVER_NAME} of invoices"), Isolation::Shared).await?;
    let mover_id = *mover.as_uuid();
    su.execute(
        "INSERT INTO bench.invoices (tenant_id, id, number, amount, created_at)
         SELECT $1, gen_random_uuid(), j, j % 1000, now() - j * interval '1 second'
         FROM generate_series(1, $2::int8) j",
        &[&mover_id, &rows],
    )
    .await
    .context("loading the invoices of the tenant to move")?;
    su.batch_execute("ANALYZE bench.invoices").await?;
    let copy_ms: Vec<f64> = copy_baseline(ctx, su, "bench.invoices", mover_id, rows)
        .await?
        .iter()
        .map(|s| s * 1e3)
        .collect();

    let mut cutover_ms = Vec::new();
    for _ in 0..ctx.opts.runs {
        for target in [Isolation::Schema, Isolation::Shared] {
            let moved = lib
                .move_tenant("bench", mover, target, MOVE_BATCH, |_| {})
                .await
                .with_context(|| {
                    format!(
                        "moving the invoices' tenant to the {} tier",
                        target.as_str()
                    )
                })?;
            if target == Isolation::Shared {
                cutover_ms.push(moved.cutover_ms);
            }
        }
    }
    let held: i64 = su
        .query_one(
            "SELECT count(*) FROM ONLY bench.invoices WHERE tenant_id = $1",
            &[&mover_id],
        )
        .await?
        .get(0);
    if held != rows {
        bail!("after the moves the pooled invoices table holds {held} of the tenant's {rows} rows");
    }
    su.execute(
        "DELETE FROM ONLY bench.invoices WHERE tenant_id = $1",
        &[&mover_id],
    )
    .await?;
    ctx.push(Figure::new(
        name,
        "ms",
        &format!("the move back's cut-over (cutover_ms of tier_move_finish) for a tenant holding {rows} rows of an adopted table (bench.invoices), moved to its schema and back"),
        cutover_ms,
        Some((
            &format!("the same {rows} rows copied by one INSERT ... SELECT into a table LIKE bench.invoices INCLUDING ALL: what the cut-over held before the copy moved ahead of its lock"),
            copy_ms,
        )),
        RatioKind::ValueOverBaseline,
        None,
    ));
    Ok(())
}

/// One write of a watched writer: when it began and how long it took.
#[derive(Debug, Clone, Copy)]
struct Write {
    at: Instant,
    took: Duration,
}

/// What a writer did: its acknowledged writes, and the errors it was
/// answered with (writes not acknowledged; only a writer told to bear them).
struct Writes {
    writes: Vec<Write>,
    errors: Vec<String>,
}

/// A tenant writing through the library in a loop: single-row INSERTs of
/// resources (`create_resource`, each its own transaction, retried as the
/// library retries), until stopped. An error fails the benchmark, unless
/// the writer bears errors (it then notes it and writes on).
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<Writes>>,
}

impl Writer {
    fn start(lib: &Database, tenant: uuid::Uuid, bear_errors: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (lib, stop) = (lib.clone(), stop.clone());
            async move {
                let ctx =
                    TenantContext::new(TenantId::from_uuid(tenant)).with_actor("bench-writer");
                let new = NewResource {
                    name: LIVE_WRITE.into(),
                    data: serde_json::json!({}).into(),
                };
                let mut done = Writes {
                    writes: Vec::new(),
                    errors: Vec::new(),
                };
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    match lib
                        .in_tenant(&ctx, &new, |scope, new| {
                            Box::pin(scope.create_resource(new))
                        })
                        .await
                    {
                        Ok(_) => done.writes.push(Write {
                            at,
                            took: at.elapsed(),
                        }),
                        Err(e) if bear_errors => done.errors.push(e.to_string()),
                        Err(e) => {
                            return Err(anyhow::Error::new(e)
                                .context(format!("a write of tenant {tenant} during the figure")))
                        }
                    }
                    tokio::time::sleep(WRITER_PAUSE).await;
                }
                Ok(done)
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> anyhow::Result<Writes> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

/// The longest of the writes under way at some time in `[from, from + span]`,
/// and how many there were.
fn longest(writes: &[Write], from: Instant, span: Duration) -> (Duration, usize) {
    let to = from + span;
    writes
        .iter()
        .filter(|w| w.at <= to && w.at + w.took >= from)
        .fold((Duration::ZERO, 0), |(max, n), w| (max.max(w.took), n + 1))
}

/// Pooled tenants' point reads, through the API and through RLS, measured
/// without the schema tenants, with them, and without them again.
struct Presence {
    server: ServerChild,
    lua: PathBuf,
    rls: Vec<PathBuf>,
    /// `adopted_rls_point`'s RLS scripts, when that figure is wanted.
    adopted: Option<Vec<PathBuf>>,
    options: String,
    /// Runs without the schema tenants (index 0) and with them (1).
    api: [Vec<f64>; 2],
    sql: [Vec<f64>; 2],
    adopted_sql: [Vec<f64>; 2],
    /// How the reads failed with the schema tenants present, if they did: a
    /// result of the figure, reported as such (without them, a failure ends
    /// the run, as everywhere else).
    api_failed: Option<String>,
    sql_failed: Option<String>,
    adopted_failed: Option<String>,
}

impl Presence {
    fn start(
        ctx: &Ctx,
        keyed: &[Keyed],
        leaf: &BenchTenant,
        admin_token: &str,
        adopted: bool,
    ) -> anyhow::Result<Self> {
        let server = ServerChild::start(
            &ctx.db.server,
            &ctx.db.context_key,
            admin_token,
            true,
            SERVER_POOL,
        )?;
        let lua = wrk_script(&ctx.work, "tier-point", "GET", &point_targets(keyed))?;
        let rls = ctx.scripts("tier-rls-point", &rls_point_scripts(leaf).0)?;
        let adopted = if adopted {
            let scripts = super::tables::adopted_point_scripts(leaf).0;
            Some(ctx.scripts("tier-adopted-rls-point", &scripts)?)
        } else {
            None
        };
        Ok(Self {
            server,
            lua,
            rls,
            adopted,
            options: pgoptions("tenantry_app", leaf),
            api: Default::default(),
            sql: Default::default(),
            adopted_sql: Default::default(),
            api_failed: None,
            sql_failed: None,
            adopted_failed: None,
        })
    }

    /// A warm-up (not in smoke mode), then `--runs` interleaved runs of each.
    fn measure(&mut self, ctx: &Ctx, with_schema_tenants: bool) -> anyhow::Result<()> {
        let pgbench = ctx.pgbench_with(&ctx.db.superuser, &self.rls, Some(&self.options));
        let wrk = Wrk {
            url: &self.server.url,
            script: &self.lua,
            connections: ctx.opts.clients,
            seconds: ctx.opts.seconds,
        };
        let i = usize::from(with_schema_tenants);
        let record =
            |values: &mut Vec<f64>, failed: &mut Option<String>, run: anyhow::Result<f64>| {
                match run {
                    Ok(v) => values.push(v),
                    Err(e) if with_schema_tenants => {
                        let e = format!("{e:#}");
                        println!("with the schema tenants present: {e}");
                        // The database's error when there is one (a tool's
                        // exit status alone says nothing).
                        let why = e
                            .lines()
                            .find(|l| l.contains("ERROR:"))
                            .or_else(|| e.lines().next())
                            .unwrap_or_default();
                        failed.get_or_insert(why.trim().to_owned());
                    }
                    Err(e) => return Err(e),
                }
                Ok(())
            };
        if !ctx.opts.smoke {
            record(
                &mut Vec::new(),
                &mut self.api_failed,
                Wrk {
                    seconds: 1,
                    ..wrk.clone()
                }
                .run(&ctx.tools),
            )?;
            record(
                &mut Vec::new(),
                &mut self.sql_failed,
                Pgbench {
                    seconds: 1,
                    ..pgbench.clone()
                }
                .run(&ctx.tools),
            )?;
        }
        let adopted = self
            .adopted
            .as_ref()
            .map(|scripts| ctx.pgbench_with(&ctx.db.superuser, scripts, Some(&self.options)));
        if let (Some(adopted), false) = (&adopted, ctx.opts.smoke) {
            record(
                &mut Vec::new(),
                &mut self.adopted_failed,
                Pgbench {
                    seconds: 1,
                    ..adopted.clone()
                }
                .run(&ctx.tools),
            )?;
        }
        for _ in 0..ctx.opts.runs {
            if self.sql_failed.is_none() {
                let run = pgbench.run(&ctx.tools);
                record(&mut self.sql[i], &mut self.sql_failed, run)?;
            }
            if let (Some(adopted), None) = (&adopted, &self.adopted_failed) {
                let run = adopted.run(&ctx.tools);
                record(&mut self.adopted_sql[i], &mut self.adopted_failed, run)?;
            }
            if self.api_failed.is_none() {
                record(&mut self.api[i], &mut self.api_failed, wrk.run(&ctx.tools))?;
                if self.api_failed.is_some() {
                    // The server's statements still running hold their locks:
                    // the next pgbench run must not pay for them.
                    wait_for_idle_server(&ctx.db.superuser)?;
                }
            }
        }
        Ok(())
    }

    fn push(self, ctx: &mut Ctx, count: u32, names: &Names) {
        let runs = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let note = |v: &[f64]| {
            format!(
                "without them, before they were created and after they were removed (median {:.0} of {})",
                median(v),
                runs(v)
            )
        };
        // A failure with the schema tenants present is 0 (errors never count
        // as throughput), with its cause.
        let failed = |runs: Vec<f64>, why: Option<String>| match why {
            Some(why) => (vec![0.0], format!(": FAILED ({why})")),
            None => (runs, String::new()),
        };
        let adopted = self.adopted.is_some();
        let [api_without, api_with] = self.api;
        let [sql_without, sql_with] = self.sql;
        let [adopted_without, adopted_with] = self.adopted_sql;
        let (adopted_with, adopted_failed) = failed(adopted_with, self.adopted_failed);
        let adopted_note = note(&adopted_without);
        let (api_with, api_failed) = failed(api_with, self.api_failed);
        let (sql_with, sql_failed) = failed(sql_with, self.sql_failed);
        let api_note = note(&api_without);
        let sql_note = note(&sql_without);
        ctx.push(Figure::new(
            &names.api,
            "req/s",
            &format!("api_point_read (GET /v1/resources/{{id}}, pooled tenants' keys, wrk) with {count} schema tenants present{api_failed}"),
            api_with,
            Some((&format!("the same requests to the same server {api_note}"), api_without)),
            RatioKind::ValueOverBaseline,
            Some(Goal::RatioAtLeast(0.9)),
        ));
        ctx.push(Figure::new(
            &names.rls,
            "tps",
            &format!("rls_point (a pooled tenant's point read through RLS, ONLY tenantry.resources, pgbench) with {count} schema tenants present{sql_failed}"),
            sql_with,
            Some((&format!("the same script {sql_note}"), sql_without)),
            RatioKind::ValueOverBaseline,
            Some(Goal::RatioAtLeast(0.9)),
        ));
        if adopted {
            ctx.push(Figure::new(
                &names.adopted_rls,
                "tps",
                &format!("adopted_rls_point (a pooled tenant's point read by id on an adopted table, bench.invoices, named as a team writes it, without ONLY (before migration 0036 every schema tenant's table of it inherited it); through RLS, pgbench) with {count} schema tenants present{adopted_failed}"),
                adopted_with,
                Some((&format!("the same script {adopted_note}"), adopted_without)),
                RatioKind::ValueOverBaseline,
                Some(Goal::RatioAtLeast(0.9)),
            ));
        }
    }
}

/// Waits (at most a minute) until no statement of the server's login runs.
fn wait_for_idle_server(superuser: &str) -> anyhow::Result<()> {
    let superuser = superuser.to_owned();
    let wait = async move {
        let su = connect(&superuser).await?;
        for _ in 0..600 {
            let busy: i64 = su
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'tenantry_server' AND state = 'active'",
                    &[],
                )
                .await?
                .get(0);
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    };
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(wait))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{longest, rows_label, Write};

    #[test]
    fn figure_names_say_thousands_of_rows_as_k() {
        assert_eq!(rows_label(100_000), "100k");
        assert_eq!(rows_label(1_000), "1k");
        assert_eq!(rows_label(1_500), "1500");
    }

    #[test]
    fn a_window_counts_every_write_under_way_in_it_and_no_other() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let w = |at: u64, took: u64| Write {
            at: t0 + ms(at),
            took: ms(took),
        };
        // Began before the window and ended in it; inside; began in it and
        // ended after; before; after.
        let writes = [w(0, 15), w(20, 3), w(28, 40), w(0, 5), w(40, 100)];
        assert_eq!(longest(&writes, t0 + ms(10), ms(20)), (ms(40), 3));
        assert_eq!(longest(&writes, t0 + ms(200), ms(20)), (ms(0), 0));
    }
}
