//! The baseline of `api_vs_handwritten`: what a team writes by hand for a tenant's point read, an axum + tokio-postgres server over a copy of the benchmark's resources (`bench.handwritten_resources`, row-level security with the guide's one-setting policy, read as a login role that is not the owner). It trusts the tenant named in `X-Tenant-Id` (no key, no tenant status, no rate limit, no request log) and sends `BEGIN`, `set_config`, the `SELECT` and `COMMIT` in one pipelined flight. It is not tenantry and shares no code with it.

use anyhow::Context;
use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use chrono::{DateTime, Utc};
use clap::Args;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{types::ToSql, Client, Config, NoTls};
use uuid::Uuid;

use crate::server::{shutdown, ServerChild};

/// The login role the hand-written server connects as: no superuser, no
/// BYPASSRLS, not the table's owner, so the policy applies.
pub const ROLE: &str = "tenantry_bench_handwritten";

/// The copy of `tenantry.resources` it reads.
const TABLE: &str = "bench.handwritten_resources";

/// Version of the table's definition in `bench.meta` (a change rebuilds it).
const VERSION: &str = "v1";

/// The copy of the rows, its policy and the role; made once per data set
/// (the figures never write resources, so the copy stays equal). Sets a new
/// password on the role and returns the role's connection settings (the
/// password is ignored where the cluster trusts local logins).
pub async fn prepare(su: &Client, server: &Config) -> anyhow::Result<Config> {
    let have: Option<String> = su
        .query_opt("SELECT v FROM bench.meta WHERE k = 'handwritten'", &[])
        .await?
        .map(|r| r.get(0));
    let password = Uuid::new_v4().simple().to_string();
    su.batch_execute(&format!(
        "DO $$ BEGIN
             CREATE ROLE {ROLE} LOGIN NOSUPERUSER NOBYPASSRLS;
         EXCEPTION WHEN duplicate_object THEN NULL;
         END $$;
         ALTER ROLE {ROLE} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}';
         COMMENT ON ROLE {ROLE} IS 'tenantry-bench: the hand-written baseline server''s login (reads bench.handwritten_resources through its policy).';"
    ))
    .await
    .context("creating the hand-written server's role")?;
    if have.as_deref() != Some(VERSION) {
        // Same rows and the same indexes as tenantry.resources (LIKE …
        // INCLUDING ALL copies the parent's index definitions); the policy is
        // the guide's: one setting, compared with the column.
        su.batch_execute(&format!(
            "DROP TABLE IF EXISTS {TABLE};
             CREATE TABLE {TABLE} (LIKE tenantry.resources INCLUDING ALL);
             INSERT INTO {TABLE} (tenant_id, id, name, data, created_at, updated_at, created_by, shared_with)
                 SELECT tenant_id, id, name, data, created_at, updated_at, created_by, shared_with
                 FROM tenantry.resources;
             ALTER TABLE {TABLE} ENABLE ROW LEVEL SECURITY;
             ALTER TABLE {TABLE} FORCE ROW LEVEL SECURITY;
             CREATE POLICY tenant_isolation ON {TABLE}
                 USING (tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid);
             COMMENT ON TABLE {TABLE} IS 'tenantry-bench: a copy of tenantry.resources for the hand-written baseline server (same rows, same indexes, the guide''s policy).';
             COMMENT ON POLICY tenant_isolation ON {TABLE} IS 'The guide''s policy: rows of the tenant named in app.current_tenant_id.';"
        ))
        .await
        .context("copying the resources for the hand-written server")?;
        // As the loader does for tenantry.resources (VACUUM runs alone).
        su.batch_execute(&format!("VACUUM (ANALYZE) {TABLE}"))
            .await?;
        su.execute(
            "INSERT INTO bench.meta (k, v) VALUES ('handwritten', $1)
             ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            &[&VERSION],
        )
        .await?;
    }
    su.batch_execute(&format!(
        "GRANT USAGE ON SCHEMA bench TO {ROLE}; GRANT SELECT ON {TABLE} TO {ROLE};"
    ))
    .await?;
    let mut login = server.clone();
    login.user(ROLE).password(password);
    Ok(login)
}

/// Starts the hand-written server as a child process (`serve-handwritten`).
pub fn start(database_url: &str, max_connections: usize) -> anyhow::Result<ServerChild> {
    let max_connections = max_connections.to_string();
    ServerChild::spawn(
        &[
            "serve-handwritten",
            "--database-url",
            database_url,
            "--max-connections",
            &max_connections,
        ],
        &[],
    )
}

/// Refuses to measure a baseline that does not isolate: the tenant's own
/// resource must be served (200), another tenant's must not be found (404),
/// a request without a tenant must be refused (401). A baseline that skipped
/// the policy would be cheaper than the one the figure promises.
pub async fn check_isolation(
    server: &ServerChild,
    tenant: Uuid,
    resource: Uuid,
    other_tenant: Uuid,
) -> anyhow::Result<()> {
    let path = format!("/v1/resources/{resource}");
    for (who, want) in [(Some(tenant), 200), (Some(other_tenant), 404), (None, 401)] {
        let got = get_status(&server.url, &path, who).await?;
        anyhow::ensure!(
            got == want,
            "the hand-written baseline answered {got} instead of {want} to {path} for tenant {who:?}: it does not isolate tenants"
        );
    }
    Ok(())
}

/// One HTTP/1.1 GET, closing the connection; the response's status code.
async fn get_status(url: &str, path: &str, tenant: Option<Uuid>) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.strip_prefix("http://").context("an http:// URL")?;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let header = tenant
        .map(|t| format!("X-Tenant-Id: {t}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{header}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let head = String::from_utf8_lossy(&response);
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no HTTP status in {head:?}"))
}

/// Options of the hidden `serve-handwritten` subcommand.
#[derive(Debug, Args)]
pub struct ChildArgs {
    /// Connection string of [`ROLE`].
    #[arg(long)]
    pub database_url: String,
    /// Pool size (tenantry's server child uses the same).
    #[arg(long, default_value_t = 16)]
    pub max_connections: usize,
}

const SET_TENANT: &str = "SELECT set_config('app.current_tenant_id', $1, true)";
const SELECT: &str =
    "SELECT id, tenant_id, name, data, size_bytes, created_at, updated_at, created_by
                      FROM bench.handwritten_resources WHERE id = $1";

/// Serves `GET /v1/resources/{id}` until stdin closes or SIGTERM.
pub async fn child_main(args: ChildArgs) -> anyhow::Result<()> {
    let config: Config = args
        .database_url
        .parse()
        .context("parsing --database-url")?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(args.max_connections.max(1))
        .runtime(Runtime::Tokio1)
        .build()?;
    // Fail at start rather than on the first request.
    drop(pool.get().await.context("connecting")?);
    let app = Router::new()
        .route("/v1/resources/{id}", get(read))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn read(State(pool): State<Pool>, headers: HeaderMap, Path(id): Path<Uuid>) -> Response {
    let Some(tenant) = headers
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match point_read(&pool, tenant, id).await {
        Ok(Some(body)) => Json(body).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            eprintln!("handwritten: {e:#}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The four statements in one flight: tokio-postgres sends each request when
/// its future is first polled, and `join!` polls them in order before
/// waiting on any answer.
async fn point_read(
    pool: &Pool,
    tenant: Uuid,
    id: Uuid,
) -> anyhow::Result<Option<serde_json::Value>> {
    let client = pool.get().await?;
    let set = client.prepare_cached(SET_TENANT).await?;
    let select = client.prepare_cached(SELECT).await?;
    let tenant = tenant.to_string();
    let (set_params, select_params): (&[&(dyn ToSql + Sync)], &[&(dyn ToSql + Sync)]) =
        (&[&tenant], &[&id]);
    let (begin, set, row, commit) = tokio::join!(
        client.batch_execute("BEGIN"),
        client.query_one(&set, set_params),
        client.query_opt(&select, select_params),
        client.batch_execute("COMMIT"),
    );
    begin?;
    set?;
    commit?;
    Ok(row?.map(|r| {
        serde_json::json!({
            "id": r.get::<_, Uuid>(0),
            "tenant_id": r.get::<_, Uuid>(1),
            "name": r.get::<_, String>(2),
            "data": r.get::<_, serde_json::Value>(3),
            "size_bytes": r.get::<_, i64>(4),
            "created_at": r.get::<_, DateTime<Utc>>(5),
            "updated_at": r.get::<_, DateTime<Utc>>(6),
            "created_by": r.get::<_, Option<Uuid>>(7),
            "access": "own",
        })
    }))
}
