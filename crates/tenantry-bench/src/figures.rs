//! The benchmark run: database and data set, the server children, then every figure measured next to its baseline (interleaved runs, medians), printed and written as JSON.

mod keys;
mod offboarding;
mod people;
mod scale;
mod tables;
mod tiers;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context};
use futures_util::future::join_all;
use tenantry_db::{
    conninfo, provision, Database, DatabaseConfig, NewKeyOptions, NewTenant, ServerLogin,
    SignedContext, TenantContext, TenantId,
};
use tenantry_embedded::{temp_data_dir, ClusterOptions, EmbeddedCluster, PgBinaries};
use tokio_postgres::{Client, NoTls};

use crate::{
    dataset::{self, BenchTenant, Sizes},
    handwritten,
    load::{pgbench_scripts, wrk_script, Pgbench, Target, Tools, Wrk},
    report::{print_line, Figure, Goal, RatioKind, Report},
    server::ServerChild,
    Options,
};

/// Columns the server selects for a resource (crates/tenantry-db/src/resources.rs).
const COLUMNS: &str = "id, tenant_id, name, data, size_bytes, created_at, updated_at, created_by";

/// Drops a database of the benchmark's cluster other than the data set's
/// (a scratch or comparison database), if it is there.
pub(super) async fn drop_database(su: &Client, name: &str) -> anyhow::Result<()> {
    su.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

/// Where the benchmark database lives and how to reach it.
struct BenchDb {
    /// The superuser's libpq string (pgbench, and our own connections).
    superuser: String,
    /// The superuser's settings (another database of the same cluster).
    superuser_config: tokio_postgres::Config,
    /// The server role's libpq string (pgbench, the server children).
    server: String,
    /// The server role's settings (the library's pool).
    server_config: tokio_postgres::Config,
    context_key: tenantry_db::ContextKey,
    bindir: Option<PathBuf>,
    _cluster: Option<EmbeddedCluster>,
    temp_dir: Option<PathBuf>,
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Some(mut c) = self._cluster.take() {
            let _ = c.stop();
        }
        if let Some(d) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

const DATABASE: &str = "tenantry_bench";

/// Connections of each server child's pool (the hand-written one's too).
const SERVER_POOL: usize = 16;

async fn connect(conninfo: &str) -> anyhow::Result<Client> {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .with_context(|| format!("connecting to {conninfo}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

impl BenchDb {
    /// The library's configuration for the server login on `dbname` (the
    /// data set's database when `None`) with context key `key`. Write
    /// figures measure tenantry, not this disk's flush rate: commits are not
    /// waited on the WAL flush (synchronous_commit = off), on both sides.
    fn library_config(
        &self,
        dbname: Option<&str>,
        key: &tenantry_db::ContextKey,
    ) -> DatabaseConfig {
        let mut server = self.server_config.clone();
        if let Some(dbname) = dbname {
            server.dbname(dbname);
        }
        server.options("-c synchronous_commit=off");
        DatabaseConfig::from_config(server).with_context_key(key.clone())
    }

    /// A migrated database of its own in the benchmark's cluster, made
    /// afresh (a failed run may have left one), for figures that must not
    /// change the data set; [`drop_database`] removes it.
    async fn scratch_database(
        &self,
        su: &Client,
        name: &str,
    ) -> anyhow::Result<tenantry_db::Provisioned> {
        drop_database(su, name).await?;
        provision(&self.superuser_config, name, ServerLogin::Trust)
            .await
            .with_context(|| format!("preparing the database {name}"))
    }

    async fn open(opts: &Options) -> anyhow::Result<Self> {
        let bindir = PgBinaries::discover().ok().map(|b| b.bindir().to_owned());
        let (superuser, database, login, cluster, temp_dir) = match &opts.database_url {
            Some(url) => {
                let config: tokio_postgres::Config = url.parse().context("parsing DATABASE_URL")?;
                let su = connect(url).await?;
                let superuser: bool = su
                    .query_one(
                        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                        &[],
                    )
                    .await?
                    .get(0);
                if !superuser {
                    bail!("DATABASE_URL must name a superuser: the benchmark migrates, loads data as a BYPASSRLS baseline, and lets tenantry_server log in");
                }
                let database = config.get_dbname().unwrap_or("postgres").to_owned();
                // The server role logs in with a password made for this run.
                (config, database, ServerLogin::NewPassword, None, None)
            }
            None => {
                let (dir, temp) = match &opts.data_dir {
                    Some(d) => (d.clone(), None),
                    None => {
                        let d = temp_data_dir("tenantry-bench")?;
                        (d.clone(), Some(d))
                    }
                };
                let mut options = ClusterOptions::new(&dir);
                options.extra_settings = vec![
                    ("shared_buffers".into(), "512MB".into()),
                    ("max_connections".into(), "200".into()),
                ];
                let cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(options))
                    .await?
                    .context("starting the embedded cluster")?;
                let superuser = cluster.superuser_config(DATABASE);
                let login = ServerLogin::Trust;
                (superuser, DATABASE.to_owned(), login, Some(cluster), temp)
            }
        };
        let provisioned = provision(&superuser, &database, login)
            .await
            .context("preparing the benchmark database")?;
        Ok(Self {
            superuser: conninfo(&provisioned.superuser),
            superuser_config: provisioned.superuser.clone(),
            server: conninfo(&provisioned.server),
            server_config: provisioned.server,
            context_key: provisioned.context_key,
            bindir,
            _cluster: cluster,
            temp_dir,
        })
    }
}

/// Everything a figure needs.
struct Ctx {
    opts: Options,
    tools: Tools,
    db: BenchDb,
    work: PathBuf,
    figures: Vec<Figure>,
    /// `DATABASE_URL` names a Citus coordinator: only the figures that run
    /// on a cluster, in their cluster form ([`citus_rls_point`]).
    citus: bool,
}

impl Ctx {
    fn wanted(&self, name: &str) -> bool {
        self.opts.only.is_empty() || self.opts.only.iter().any(|o| name.contains(o.as_str()))
    }

    fn push(&mut self, f: Figure) {
        print_line(&f);
        self.figures.push(f);
    }

    fn pgbench(
        &self,
        conninfo: &str,
        scripts: &[PathBuf],
        pgoptions: Option<&str>,
    ) -> anyhow::Result<f64> {
        self.pgbench_with(conninfo, scripts, pgoptions)
            .run(&self.tools)
    }

    /// A pgbench run with this benchmark's clients and duration.
    fn pgbench_with<'a>(
        &self,
        conninfo: &'a str,
        scripts: &'a [PathBuf],
        pgoptions: Option<&'a str>,
    ) -> Pgbench<'a> {
        Pgbench {
            conninfo,
            scripts,
            clients: self.opts.clients,
            seconds: self.opts.seconds,
            pgoptions,
        }
    }

    fn wrk(&self, url: &str, script: &Path) -> anyhow::Result<f64> {
        Wrk {
            url,
            script,
            connections: self.opts.clients,
            seconds: self.opts.seconds,
        }
        .run(&self.tools)
    }

    fn scripts(&self, name: &str, bodies: &[String]) -> anyhow::Result<Vec<PathBuf>> {
        pgbench_scripts(&self.work, name, bodies)
    }
}

/// A tenant's key for the API.
struct Keyed {
    tenant: BenchTenant,
    key: String,
    key_id: String,
}

/// A count in figure names: in units of `unit` with `suffix` when it is a
/// whole number of them (`1m`, `100k`), else in full.
fn count_label(n: i64, unit: i64, suffix: char) -> String {
    if n % unit == 0 {
        format!("{}{suffix}", n / unit)
    } else {
        n.to_string()
    }
}

fn uuid_array(ids: &[uuid::Uuid]) -> String {
    let inner: Vec<String> = ids.iter().map(|u| u.to_string()).collect();
    format!("'{{{}}}'::uuid[]", inner.join(","))
}

/// Startup options of an operator's session (the superuser) in `role` with
/// `t`'s context: what the policies see, however the context was proven.
fn pgoptions(role: &str, t: &BenchTenant) -> String {
    format!("-c role={role} -c backtrace_functions={}", t.context)
}

/// The whole run.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let sizes = Sizes {
        tenants: opts.tenants.unwrap_or(1000).max(10),
        resources: opts.resources.unwrap_or(1000).max(10),
        request_log_rows: opts.request_log_rows.max(1),
    };
    println!(
        "tenantry-bench: {cores} cores; {} tenants x {} resources, {} request-log rows; {} clients, {} x {} s per figure",
        sizes.tenants, sizes.resources, sizes.request_log_rows, opts.clients, opts.runs, opts.seconds
    );
    let db = BenchDb::open(&opts).await?;
    let tools = Tools::find(db.bindir.as_deref())?;
    let mut su = connect(&db.superuser).await?;
    let version: String = su.query_one("SHOW server_version", &[]).await?.get(0);
    let started = Instant::now();
    if dataset::ensure(&mut su, sizes, opts.smoke).await? {
        println!(
            "data set loaded in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("data set already loaded");
    }
    let work = std::env::temp_dir().join(format!("tenantry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut ctx = Ctx {
        opts: opts.clone(),
        tools,
        db,
        work: work.clone(),
        figures: Vec::new(),
        citus: tenantry_db::citus::is_citus(&su).await?,
    };
    let result = measure(&mut ctx, &su, sizes).await;
    let _ = std::fs::remove_dir_all(&work);
    result?;

    let report = Report {
        date: chrono::Utc::now().to_rfc3339(),
        cores,
        postgres: version,
        parameters: serde_json::json!({
            "sizes": sizes,
            "clients": opts.clients,
            "seconds": opts.seconds,
            "runs": opts.runs,
            "smoke": opts.smoke,
        }),
        figures: std::mem::take(&mut ctx.figures),
    };
    report.write(&opts.out)?;
    println!("\n{}", report.markdown());
    println!("results written to {}", opts.out.display());
    Ok(())
}

async fn measure(ctx: &mut Ctx, su: &Client, sizes: Sizes) -> anyhow::Result<()> {
    let n = sizes.tenants;
    // Up to 100 tenants of every position in their trees (pgbench takes <= 128 scripts).
    let indexes: Vec<i32> = if n <= 100 {
        (0..n).collect()
    } else {
        (0..100).map(|k| (k * 10 + k % 10) % n).collect()
    };
    let tenants = dataset::tenants(su, &indexes, 10).await?;
    let leaf = dataset::tenants(su, &[4], 10).await?.remove(0);
    let root = dataset::tenants(su, &[0], 10).await?.remove(0);

    let mut config = ctx.db.library_config(None, &ctx.db.context_key);
    config.max_connections = ctx.opts.clients;
    let lib = Database::connect(&config)?;
    let mut keyed = Vec::with_capacity(tenants.len());
    for t in tenants {
        let mut scope = lib
            .tenant(TenantContext::new(TenantId::from_uuid(t.id)).with_actor("bench"))
            .await?;
        let key = scope
            .create_api_key(&NewKeyOptions {
                description: "benchmark".into(),
                ..Default::default()
            })
            .await?;
        scope.commit().await?;
        keyed.push(Keyed {
            tenant: t,
            key: key.secret.expose().to_owned(),
            key_id: key.info.key_id.to_string(),
        });
    }

    let admin_token = format!("tadm_bench_{}", uuid::Uuid::new_v4().simple());
    let wants_api = [
        "api_point_read",
        "api_vs_same_txn",
        "api_vs_handwritten",
        "api_list",
        "request_log_overhead",
        "server_rss_mb",
    ]
    .iter()
    .any(|n| ctx.wanted(n));
    if wants_api {
        api_figures(ctx, su, &keyed, &admin_token).await?;
    }
    if ctx.citus {
        // A tenant context lasts one transaction on a cluster, and Citus
        // refuses what the other figures' loaders do (docs/scale-out.md).
        return citus_rls_point(ctx, &leaf);
    }
    scale::scale_figures(ctx, su, sizes, &admin_token).await?;
    rls_figures(ctx, &leaf, &root)?;
    library_figures(ctx, &lib, su, &leaf).await?;
    tables::table_figures(ctx, su, &leaf).await?;
    keys::key_figures(ctx, su, &leaf).await?;
    people::people_figures(ctx, su, &keyed, &leaf, &admin_token).await?;
    tiers::tier_figures(ctx, su, &lib, &keyed, &leaf, &admin_token).await?;
    offboarding::offboarding_figures(ctx, su).await?;
    Ok(())
}

/// Figures 1, 2, 5 and 8: the API under wrk next to pgbench, and next to
/// the hand-written server under the same wrk load.
async fn api_figures(
    ctx: &mut Ctx,
    su: &Client,
    keyed: &[Keyed],
    admin_token: &str,
) -> anyhow::Result<()> {
    let clients = ctx.opts.clients;
    let logged = ServerChild::start(
        &ctx.db.server,
        &ctx.db.context_key,
        admin_token,
        true,
        SERVER_POOL,
    )?;
    let unlogged = ServerChild::start(
        &ctx.db.server,
        &ctx.db.context_key,
        admin_token,
        false,
        SERVER_POOL,
    )?;
    let handwritten = if ctx.wanted("api_vs_handwritten") {
        let login = handwritten::prepare(su, &ctx.db.server_config).await?;
        let server = handwritten::start(&conninfo(&login), SERVER_POOL)?;
        let (a, b) = (&keyed[0].tenant, &keyed[keyed.len() - 1].tenant);
        handwritten::check_isolation(&server, a.id, a.resources[0], b.id).await?;
        Some(server)
    } else {
        None
    };
    let idle_rss = logged.memory_mb()?.0;

    let point_lua = wrk_script(&ctx.work, "point", "GET", &point_targets(keyed))?;
    let list_targets: Vec<Target> = keyed
        .iter()
        .map(|k| Target {
            key: k.key.clone(),
            tenant: k.tenant.id,
            path: "/v1/resources?limit=50".to_owned(),
        })
        .collect();
    let list_lua = wrk_script(&ctx.work, "list", "GET", &list_targets)?;

    let bare: Vec<String> = keyed
        .iter()
        .map(|k| {
            format!(
                "SELECT {COLUMNS} FROM ONLY tenantry.resources WHERE tenant_id = '{}' AND id = '{}';\n",
                k.tenant.id, k.tenant.resources[0]
            )
        })
        .collect();
    let bare = ctx.scripts("bare-pk", &bare)?;
    // The transaction the server runs for GET /v1/resources/{id}
    // (crates/tenantry-db/src/scope.rs and resources.rs), with the context
    // signed (the server's own connections reveal a chain secret instead,
    // which a script cannot; grants NULL: a tenant key holds every
    // permission). The session is tenantry_app from its start, as the
    // server's are. The actor label is `key-<id>` instead of `key:<id>`:
    // pgbench reads `:name` as a variable.
    // Ten of the tenants, not every one: pgbench -M prepared keeps each
    // script's statements prepared in every session, and
    // enter_context_signed's check for statements prepared by SQL reads
    // them all (pg_prepared_statements), 22 µs per call with 100 of them:
    // with a script per tenant (4,000 statements a session) the baseline
    // measured that check, not the server's transaction (docs/benchmarks.md,
    // stop 55). The data set is in shared buffers either way (512 MB).
    let step = (keyed.len() / 10).max(1);
    let same: Vec<String> = keyed
        .iter()
        .step_by(step)
        .map(|k| {
            format!(
                "BEGIN;\n{}\
                 SELECT {COLUMNS}, true FROM ONLY tenantry.resources WHERE id = '{}';\nCOMMIT;\n",
                signed_context_statement(ctx, &k.tenant, &format!("key-{}", k.key_id)),
                k.tenant.resources[0]
            )
        })
        .collect();
    let same = ctx.scripts("same-txn", &same)?;
    let list_base: Vec<String> = keyed.iter().map(|k| best_list_sql(&k.tenant)).collect();
    let list_base = ctx.scripts("list-base", &list_base)?;

    // Warm up caches and pools.
    let warm = Wrk {
        url: &logged.url,
        script: &point_lua,
        connections: clients,
        seconds: 1,
    };
    warm.run(&ctx.tools)?;
    Wrk {
        url: &unlogged.url,
        ..warm.clone()
    }
    .run(&ctx.tools)?;
    if let Some(h) = &handwritten {
        Wrk {
            url: &h.url,
            ..warm.clone()
        }
        .run(&ctx.tools)?;
    }
    Wrk {
        url: &logged.url,
        script: &list_lua,
        ..warm.clone()
    }
    .run(&ctx.tools)?;

    let (mut api, mut api_nolog, mut pk, mut txn, mut list, mut listb, mut hand) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..ctx.opts.runs {
        api.push(ctx.wrk(&logged.url, &point_lua)?);
        if let Some(h) = &handwritten {
            hand.push(ctx.wrk(&h.url, &point_lua)?);
        }
        pk.push(ctx.pgbench(&ctx.db.superuser, &bare, None)?);
        txn.push(ctx.pgbench(&ctx.db.server, &same, Some("-c role=tenantry_app"))?);
        api_nolog.push(ctx.wrk(&unlogged.url, &point_lua)?);
        if ctx.wanted("api_list") {
            list.push(ctx.wrk(&logged.url, &list_lua)?);
            listb.push(ctx.pgbench(&ctx.db.superuser, &list_base, None)?);
        }
    }
    let peak_rss = logged.memory_mb()?.1;
    ctx.push(Figure::new(
        "api_point_read",
        "req/s",
        "GET /v1/resources/{id}, random tenants' keys (wrk)",
        api.clone(),
        Some((
            "pgbench -M prepared: bare primary-key SELECT (superuser)",
            pk,
        )),
        RatioKind::ValueOverBaseline,
        Some(Goal::RatioAtLeast(0.8)),
    ));
    if !hand.is_empty() {
        ctx.push(Figure::new(
            "api_vs_handwritten",
            "req/s",
            "GET /v1/resources/{id} (wrk), as api_point_read",
            api.clone(),
            Some((
                "the same requests to a hand-written axum + tokio-postgres server: tenant from a header, BEGIN, set_config, SELECT, COMMIT pipelined, the guide's policy on a copy of the rows",
                hand,
            )),
            RatioKind::ValueOverBaseline,
            Some(Goal::RatioAtLeast(1.0)),
        ));
    }
    ctx.push(Figure::new(
        "api_vs_same_txn",
        "req/s",
        "GET /v1/resources/{id} (wrk)",
        api.clone(),
        Some(("pgbench -M prepared: the server's transaction with a signed context (BEGIN, enter_context_signed, SELECT, COMMIT)", txn)),
        RatioKind::ValueOverBaseline,
        Some(Goal::RatioAtLeast(1.5)),
    ));
    if !list.is_empty() {
        ctx.push(Figure::new(
            "api_list",
            "req/s",
            "GET /v1/resources?limit=50 (wrk)",
            list,
            Some((
                "pgbench -M prepared: the same newest-50 page with explicit WHERE (superuser)",
                listb,
            )),
            RatioKind::ValueOverBaseline,
            None,
        ));
    }
    ctx.push(Figure::new(
        "request_log_overhead",
        "req/s",
        "GET /v1/resources/{id} with request logging",
        api,
        Some((
            "the same without request logging (request_log = false)",
            api_nolog,
        )),
        RatioKind::ValueOverBaseline,
        Some(Goal::RatioAtLeast(0.95)),
    ));
    ctx.push(rss_figure(
        "server_rss_mb",
        "server peak resident memory (VmHWM) through the API figures",
        peak_rss,
        idle_rss,
    ));
    Ok(())
}

/// `api_point_read`'s requests: each keyed tenant's first resources, by its key.
fn point_targets(keyed: &[Keyed]) -> Vec<Target> {
    keyed
        .iter()
        .flat_map(|k| {
            k.tenant.resources.iter().map(|r| Target {
                key: k.key.clone(),
                tenant: k.tenant.id,
                path: format!("/v1/resources/{r}"),
            })
        })
        .collect()
}

/// A server's peak memory under a load, next to its idle memory.
fn rss_figure(name: &str, what: &str, peak_rss: f64, idle_rss: f64) -> Figure {
    Figure::new(
        name,
        "MiB",
        what,
        vec![peak_rss],
        Some((
            "server resident memory when idle, before load",
            vec![idle_rss],
        )),
        RatioKind::ValueOverBaseline,
        Some(Goal::ValueAtMost(64.0)),
    )
}

/// The fastest explicit-WHERE form of "newest 50 the tenant may read": per
/// visible tenant an index-ordered top 51 of the pooled table (the data set's
/// tenants are pooled), plus the rows shared with it from either tier.
fn best_list_sql(t: &BenchTenant) -> String {
    let vis = uuid_array(&t.visible);
    format!(
        "SELECT * FROM (\
           SELECT x.* FROM unnest({vis}) v(t), LATERAL (\
             SELECT {COLUMNS} FROM ONLY tenantry.resources r WHERE r.tenant_id = v.t \
             ORDER BY created_at DESC, id DESC LIMIT 51) x \
           UNION ALL \
           (SELECT {COLUMNS} FROM tenantry.resources WHERE shared_with @> ARRAY['{id}']::uuid[] \
              AND NOT tenant_id = ANY ({vis}) ORDER BY created_at DESC, id DESC LIMIT 51)\
         ) u ORDER BY created_at DESC, id DESC LIMIT 51;\n",
        id = t.id
    )
}

/// What the server sends for a newest-50 page of everything a pooled tenant
/// with a pooled subtree may read (crates/tenantry-db/src/resources.rs,
/// `list`, its own part on `ONLY tenantry.resources`): two statements under the two
/// narrow roles, pipelined in one flight as the server does (session-level
/// `SET ROLE` here: pgbench runs no BEGIN around a pipeline), back to
/// `tenantry_app` at the end.
fn server_list_sql() -> String {
    let filters = "AND (NULL::text IS NULL) AND (NULL::timestamptz IS NULL)";
    let order = "ORDER BY created_at DESC, id DESC LIMIT 51";
    format!(
        "\\startpipeline\n\
         SET ROLE tenantry_app_own;\n\
         SELECT {COLUMNS}, true FROM unnest(tenantry.visible_tenant_ids()) v(t), LATERAL (\
           SELECT {COLUMNS} FROM ONLY tenantry.resources r WHERE r.tenant_id = v.t {filters} {order}) x \
         WHERE true {order};\n\
         SET ROLE tenantry_app_shared;\n\
         SELECT {COLUMNS}, false FROM tenantry.resources_shared_with_me(NULL, NULL, NULL, NULL, 51) {order};\n\
         SET ROLE tenantry_app;\n\
         \\endpipeline\n"
    )
}

/// `rls_point`'s scripts, one per resource of `leaf` (a pooled tenant with a
/// pooled subtree): the statement the server sends for its point read
/// (resources.rs, `OWN_RESOURCE_POOLED`: `ONLY tenantry.resources`, so schema
/// tenants' tables are never planned; the rows shared with the caller are
/// read in a second transaction only when this finds nothing), and the
/// baseline on the same table with an explicit WHERE.
fn rls_point_scripts(leaf: &BenchTenant) -> (Vec<String>, Vec<String>) {
    let rls = leaf
        .resources
        .iter()
        .map(|r| format!("SELECT {COLUMNS}, true FROM ONLY tenantry.resources WHERE id = '{r}';\n"))
        .collect();
    let base = leaf
        .resources
        .iter()
        .map(|r| {
            format!(
                "SELECT {COLUMNS}, tenant_id = ANY ({}) FROM ONLY tenantry.resources WHERE tenant_id = '{}' AND id = '{r}';\n",
                uuid_array(&leaf.visible),
                leaf.id
            )
        })
        .collect();
    (rls, base)
}

/// The statement that proves `tenant`'s context the way the server does on
/// connections it does not hold for itself (`enter_context_signed`, the
/// tenant's cached part, a day's validity; grants NULL: a tenant key holds
/// every permission). The server's own connections reveal a chain secret
/// instead, which a script cannot. `actor` must not contain `:` (pgbench
/// reads `:name` as a variable).
fn signed_context_statement(ctx: &Ctx, tenant: &BenchTenant, actor: &str) -> String {
    let mut signed = SignedContext::new(TenantId::from_uuid(tenant.id));
    signed.expires_at += 24 * 3_600_000;
    signed.actor = Some(actor.to_owned());
    signed.tenant_part = Some(tenant.context_part.clone());
    let mac = ctx.db.context_key.sign_context(&signed);
    format!(
        "SELECT tenantry.enter_context_signed(0, {}, '{}', NULL, '{actor}', NULL, NULL, '{}', {}, '\\x{}');\n",
        signed.expires_at,
        tenant.id,
        tenant.context_part,
        ctx.db.context_key.id(),
        hex::encode(mac),
    )
}

/// `rls_point` on a Citus coordinator, in the form a point read takes there:
/// a transaction whose context is proven for that transaction as the server
/// proves it ([`signed_context_statement`], which also carries it to the
/// workers) and
/// whose SELECT names the tenant's subtree next to the policy, so that Citus
/// sends it to one shard (the server's `get_resource_routed_sql`). The
/// baseline is what a team writes by hand on Citus: a transaction that sets
/// the guide's `app.current_tenant_id` and reads with an explicit `WHERE
/// tenant_id`, as the owner role (no policy).
fn citus_rls_point(ctx: &mut Ctx, leaf: &BenchTenant) -> anyhow::Result<()> {
    if !ctx.wanted("rls_point") {
        return Ok(());
    }
    let vis = uuid_array(&leaf.visible);
    let rls: Vec<String> = leaf
        .resources
        .iter()
        .map(|r| {
            format!(
                "BEGIN;\n{}\
                 SELECT {COLUMNS}, true FROM ONLY tenantry.resources WHERE id = '{r}' AND tenant_id = ANY ({vis});\n\
                 COMMIT;\n",
                signed_context_statement(ctx, leaf, "bench")
            )
        })
        .collect();
    let base: Vec<String> = leaf
        .resources
        .iter()
        .map(|r| {
            format!(
                "BEGIN;\nSELECT set_config('app.current_tenant_id', '{t}', true);\n\
                 SELECT {COLUMNS}, true FROM ONLY tenantry.resources WHERE tenant_id = '{t}' AND id = '{r}';\n\
                 COMMIT;\n",
                t = leaf.id
            )
        })
        .collect();
    let rls = ctx.scripts("citus-rls-point", &rls)?;
    let base = ctx.scripts("citus-rls-point-base", &base)?;
    let options = "-c role=tenantry_app";
    let (mut r, mut b) = (vec![], vec![]);
    for _ in 0..ctx.opts.runs {
        r.push(ctx.pgbench(&ctx.db.superuser, &rls, Some(options))?);
        b.push(ctx.pgbench(&ctx.db.superuser, &base, Some(BASELINE_ROLE))?);
    }
    ctx.push(Figure::new(
        "rls_point",
        "tps",
        "on a Citus cluster: a tenant's point read by id through RLS (tenantry_app), context proven per transaction as the server does (enter_context_signed), routed to one shard",
        r,
        Some((
            "the same transaction with the guide's set_config and an explicit WHERE tenant_id, as the owner role",
            b,
        )),
        RatioKind::BaselineOverValue,
        Some(Goal::RatioAtMost(1.10)),
    ));
    Ok(())
}

/// One RLS figure: name, what it measures, the tenant, the role, the RLS
/// scripts, the baseline scripts, the goal.
type RlsSpec<'a> = (
    &'a str,
    &'a str,
    &'a BenchTenant,
    &'a str,
    Vec<String>,
    Vec<String>,
    Goal,
);

/// Figures 3 and 4: the same queries through RLS (context as session settings,
/// the role the server uses) and with an explicit WHERE as the owner role (BYPASSRLS).
fn rls_figures(ctx: &mut Ctx, leaf: &BenchTenant, root: &BenchTenant) -> anyhow::Result<()> {
    let mut specs: Vec<RlsSpec<'_>> = Vec::new();
    let (point_rls, point_base) = rls_point_scripts(leaf);
    specs.push((
        "rls_point",
        "tenant point read by id through RLS (tenantry_app)",
        leaf,
        "tenantry_app",
        point_rls,
        point_base,
        Goal::RatioAtMost(1.10),
    ));
    let order = "ORDER BY created_at DESC, id DESC LIMIT 51";
    specs.push((
        "rls_list",
        "tenant's own newest 50 through RLS (tenantry_app_own, as GET /v1/resources?owner=own)",
        leaf,
        "tenantry_app_own",
        vec![format!(
            "SELECT {COLUMNS}, true FROM ONLY tenantry.resources WHERE tenant_id = '{}' {order};\n",
            leaf.id
        )],
        vec![format!(
            "SELECT {COLUMNS}, true FROM ONLY tenantry.resources WHERE tenant_id = '{}' {order};\n",
            leaf.id
        )],
        Goal::RatioAtMost(1.10),
    ));
    specs.push((
        "rls_shared_with_me",
        "newest 50 shared with a tenant through resources_shared_with_me() (tenantry_app_shared, ?owner=shared)",
        root,
        "tenantry_app_shared",
        vec![format!(
            "SELECT {COLUMNS}, tenant_id = ANY ((SELECT tenantry.visible_tenant_ids())::uuid[]) FROM tenantry.resources_shared_with_me(NULL, NULL, NULL, NULL, 51) WHERE tenant_id <> '{}' {order};\n",
            root.id
        )],
        vec![format!(
            "SELECT {COLUMNS}, tenant_id = ANY ({vis}) FROM tenantry.resources WHERE shared_with @> ARRAY['{id}']::uuid[] AND tenant_id <> '{id}' {order};\n",
            vis = uuid_array(&root.visible),
            id = root.id
        )],
        Goal::RatioAtMost(1.5),
    ));
    specs.push((
        "rls_hierarchy_sharing",
        "newest 50 of everything a tenant with descendants and inbound shares may read, through RLS (tenantry_app)",
        root,
        "tenantry_app",
        vec![server_list_sql()],
        vec![best_list_sql(root)],
        Goal::RatioAtMost(1.5),
    ));
    for spec in specs {
        rls_figure(ctx, spec)?;
    }
    Ok(())
}

/// Who runs the baselines of the RLS figures: the owner role, which bypasses
/// row level security but, unlike a superuser, goes through the same
/// privilege checks as the app roles, so the ratio is the policies' cost
/// alone. (Until issue 17 the baseline ran as the superuser, which also
/// skipped those checks: about 7 % of a point read.)
const BASELINE_ROLE: &str = "-c role=tenantry_owner";

/// One RLS figure: the RLS scripts as `role` with `tenant`'s context next to
/// the baseline scripts as the owner role (a warm-up, then interleaved runs).
fn rls_figure(ctx: &mut Ctx, spec: RlsSpec<'_>) -> anyhow::Result<()> {
    let (name, what, tenant, role, rls, base, goal) = spec;
    if !ctx.wanted(name) {
        return Ok(());
    }
    let rls = ctx.scripts(&format!("{name}-rls"), &rls)?;
    let base = ctx.scripts(&format!("{name}-base"), &base)?;
    let options = pgoptions(role, tenant);
    Pgbench {
        seconds: 1,
        ..ctx.pgbench_with(&ctx.db.superuser, &rls, Some(&options))
    }
    .run(&ctx.tools)?;
    let (mut r, mut b) = (vec![], vec![]);
    for _ in 0..ctx.opts.runs {
        r.push(ctx.pgbench(&ctx.db.superuser, &rls, Some(&options))?);
        b.push(ctx.pgbench(&ctx.db.superuser, &base, Some(BASELINE_ROLE))?);
    }
    ctx.push(Figure::new(
        name,
        "tps",
        what,
        r,
        Some((
            "the same query with an explicit WHERE tenant_id, as the owner role (BYPASSRLS: no policy, the same privilege checks)",
            b,
        )),
        RatioKind::BaselineOverValue,
        Some(goal),
    ));
    Ok(())
}

/// Database of its own for `tenant_create_per_s`: the thousands of tenants it
/// creates per run would otherwise stay in the data set (tenants are never
/// hard-deleted), and every later figure on a reused data directory would
/// measure a database that is no longer the documented one.
const CREATE_DATABASE: &str = "tenantry_bench_create";

/// `tenant_create_per_s`: pooled tenants created through the library next
/// to plain INSERTs, both in a database made for it and dropped afterwards.
async fn tenant_create_figure(ctx: &mut Ctx, su: &Client) -> anyhow::Result<()> {
    let made = ctx.db.scratch_database(su, CREATE_DATABASE).await?;
    let mut config = ctx
        .db
        .library_config(Some(CREATE_DATABASE), &made.context_key);
    config.max_connections = ctx.opts.clients;
    let lib = Database::connect(&config)?;
    let made_su = conninfo(&made.superuser);
    let result = tenant_create_runs(ctx, &lib, &made_su).await;
    drop(lib);
    drop_database(su, CREATE_DATABASE).await?;
    result
}

async fn tenant_create_runs(ctx: &mut Ctx, lib: &Database, superuser: &str) -> anyhow::Result<()> {
    let count = if ctx.opts.smoke { 50 } else { 4000 };
    let clients = ctx.opts.clients;
    let (mut lib_rate, mut raw_rate) = (Vec::new(), Vec::new());
    connect(superuser)
        .await?
        .batch_execute(
            "CREATE TABLE plain_tenants (
                tenant_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
                settings jsonb NOT NULL DEFAULT '{}', status text NOT NULL DEFAULT 'active',
                parent_id uuid, isolation text NOT NULL DEFAULT 'shared')",
        )
        .await?;
    for run in 0..ctx.opts.runs {
        let t0 = Instant::now();
        let tasks = (0..clients).map(|c| {
            let lib = lib.clone();
            async move {
                for i in 0..count / clients {
                    let mut admin = lib.admin("bench").await?;
                    admin
                        .create_tenant(&NewTenant {
                            name: format!("created {run}-{c}-{i}"),
                            ..Default::default()
                        })
                        .await?;
                    admin.commit().await?;
                }
                anyhow::Ok(())
            }
        });
        for r in join_all(tasks).await {
            r?;
        }
        lib_rate.push((count / clients * clients) as f64 / t0.elapsed().as_secs_f64());
        let t1 = Instant::now();
        let tasks = (0..clients).map(|c| async move {
            let client = connect(superuser).await?;
            client.batch_execute("SET synchronous_commit = off").await?;
            let stmt = client
                .prepare("INSERT INTO plain_tenants (name) VALUES ($1) RETURNING tenant_id")
                .await?;
            for i in 0..count / clients {
                client
                    .query_one(&stmt, &[&format!("plain {run}-{c}-{i}")])
                    .await?;
            }
            anyhow::Ok(())
        });
        for r in join_all(tasks).await {
            r?;
        }
        raw_rate.push((count / clients * clients) as f64 / t1.elapsed().as_secs_f64());
    }
    ctx.push(Figure::new(
        "tenant_create_per_s",
        "tenants/s",
        &format!("pooled tenants created through the library (AdminScope::create_tenant), {clients} tasks, synchronous_commit off, in a database of their own (dropped afterwards)"),
        lib_rate,
        Some(("plain INSERT of the same columns into a table without triggers, same tasks", raw_rate)),
        RatioKind::ValueOverBaseline,
        Some(Goal::ValueAtLeast(2000.0)),
    ));
    Ok(())
}

/// Figures 6, 7 and 9: metrics reads, creation rates and key functions, timed here.
async fn library_figures(
    ctx: &mut Ctx,
    lib: &Database,
    su: &Client,
    leaf: &BenchTenant,
) -> anyhow::Result<()> {
    let reads = if ctx.opts.smoke { 20 } else { 300 };
    if ctx.wanted("metrics_read_ms") {
        let tenant = TenantId::from_uuid(leaf.id);
        let (mut lib_ms, mut raw_ms) = (Vec::new(), Vec::new());
        let raw = su
            .prepare(
                "SELECT tenant_id, hour, request_count, unique_users, resources_accessed, tenant_id <> $1
                 FROM tenantry.tenant_metrics_now WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 ORDER BY hour, tenant_id",
            )
            .await?;
        let mut rows_seen = 0;
        for _ in 0..reads {
            let to = chrono::Utc::now();
            let from = to - chrono::Duration::days(30);
            let t0 = Instant::now();
            let mut scope = lib.tenant(TenantContext::new(tenant)).await?;
            let rows = scope.metrics(Some(from), Some(to)).await?;
            scope.commit().await?;
            lib_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            rows_seen = rows.len();
            let t1 = Instant::now();
            let raw_rows = su.query(&raw, &[&leaf.id, &from, &to]).await?;
            raw_ms.push(t1.elapsed().as_secs_f64() * 1e3);
            if raw_rows.len() != rows.len() {
                bail!(
                    "metrics: the library returned {} rows, the raw query {}",
                    rows.len(),
                    raw_rows.len()
                );
            }
        }
        if rows_seen == 0 {
            bail!("metrics: no hourly rows for the tenant: the data set has no request log");
        }
        ctx.push(Figure::new(
            "metrics_read_ms",
            "ms",
            &format!("30 days of hourly metrics of one tenant ({rows_seen} rows) through the library, median of {reads}"),
            lib_ms,
            Some(("the same rows read from tenant_metrics_now (the live usage the library reads, migration 0058) by a superuser, one connection", raw_ms)),
            RatioKind::ValueOverBaseline,
            Some(Goal::ValueAtMost(10.0)),
        ));
    }

    if ctx.wanted("tenant_create_per_s") {
        tenant_create_figure(ctx, su).await?;
    }

    if ctx.wanted("key_create_per_s") {
        // The bench tenant makes thousands of keys: its operator gives it room
        // (max_api_keys defaults to 100).
        su.execute(
            "UPDATE tenantry.tenants SET settings = settings || '{\"max_api_keys\": 1000000}' WHERE tenant_id = $1",
            &[&leaf.id],
        )
        .await?;
        // An operator's session in the tenant (the server's login cannot set a
        // session context): the functions run as tenantry_app all the same.
        let client = connect(&ctx.db.superuser).await?;
        client
            .batch_execute(&format!(
                "SET synchronous_commit = off; SET ROLE tenantry_app; SELECT tenantry.set_tenant_context('{}')",
                leaf.id
            ))
            .await?;
        let creates = if ctx.opts.smoke { 100 } else { 5_000 };
        let create = client
            .prepare("SELECT tenantry.create_api_key('bench', '{}')")
            .await?;
        let mut rate = Vec::new();
        for _ in 0..ctx.opts.runs {
            let t0 = Instant::now();
            for _ in 0..creates {
                client.query_one(&create, &[]).await?;
            }
            rate.push(creates as f64 / t0.elapsed().as_secs_f64());
        }
        ctx.push(Figure::new(
            "key_create_per_s",
            "keys/s",
            "SQL create_api_key on one connection, each call its own transaction, synchronous_commit off",
            rate,
            Some((
                "KeyHippo's published 1,250 keys/s: not measured here",
                vec![1250.0],
            )),
            RatioKind::ValueOverBaseline,
            Some(Goal::ValueAtLeast(1250.0)),
        ));
    }
    Ok(())
}
