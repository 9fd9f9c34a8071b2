//! The Rust path of README.md ("Use it for your own tables"), compiled by `cargo test`; `tests/readme.rs` checks that the README shows this file as it is.

use tenantry_axum::{
    error::{method_not_allowed, route_not_found, ApiError},
    extract::{Json, Path},
    RequestIdLayer, TenantCaller, Tenantry,
};
use tenantry_db::{
    tables::{adopt_table, AdoptOptions},
    tokio_postgres, Database, DatabaseConfig, FromRow, RowError, Timeouts,
};

tenantry_db::typed_id! {
    /// A project's id: a path segment only in the standard uuid form.
    pub struct ProjectId;
}

struct Project {
    name: String,
}

impl FromRow for Project {
    fn from_row(row: tokio_postgres::Row) -> Result<Self, RowError> {
        Ok(Self {
            name: row.try_get("name")?,
        })
    }
}

/// A handler: another tenant's project is 404, exactly like a missing one.
/// `caller.read` runs the read once more on a fresh transaction when the
/// database rolled the first back (a statement prepared before a migration
/// changed its table), so its closure is `Fn`: it captures what it reads by
/// copy or by reference (`let name = &name;` before it for a `String`).
async fn get_project(
    caller: TenantCaller,
    Path(id): Path<ProjectId>,
) -> Result<Json<String>, ApiError> {
    let project: Project = caller
        .read(|mut scope| async move {
            let project = scope
                .query_one("SELECT name FROM projects WHERE id = $1", &[&id])
                .await?;
            scope.commit().await?;
            Ok(project)
        })
        .await?;
    Ok(Json(project.name))
}

/// Start-up: adopt your tables as the role that runs your migrations (after
/// your CREATE TABLEs), connect as the server's login with the server's
/// database timeouts (a wait for a free connection is `acquire_timeout`'s:
/// 5 s by default, 2 s in `tenantry serve`), then route; the layer records every tenant request, the
/// fallbacks answer problem+json, and request ids (outermost) tie each answer
/// to its log row. `Tenantry::start` also runs the upkeep `tenantry serve`
/// runs (usage metrics refreshed, request-log partitions kept ahead) and
/// answers the request-log flusher's handle: await it after serving, once
/// the router (and every `Tenantry` in it) is dropped, or the last batch of
/// the request log is lost.
async fn app(
    migrations: &tokio_postgres::Client,
    server: DatabaseConfig,
) -> Result<(axum::Router, tokio::task::JoinHandle<()>), Box<dyn std::error::Error>> {
    adopt_table(migrations, "projects", &AdoptOptions::default(), |_| {}).await?;
    let db = Database::connect(&DatabaseConfig {
        timeouts: Timeouts::server(),
        ..server
    })?;
    // As `tenantry serve` does: a login that could reach past the policies,
    // or a table that breaks an isolation rule (say, granted to the app by
    // hand instead of adopted), is refused before any tenant is served.
    if let Some(problem) = db.login_role_check().await?.problem() {
        return Err(format!("refusing to serve: {problem}").into());
    }
    for p in db.table_problems().await? {
        if p.blocks_serving() {
            return Err(format!("refusing to serve: {p}").into());
        }
        eprintln!("warning: {p}");
    }
    let (tenantry, flusher) = Tenantry::start(db, &Default::default());
    let router = axum::Router::new()
        .route("/projects/{id}", axum::routing::get(get_project))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(tenantry.layer())
        .fallback(route_not_found)
        .with_state(tenantry)
        // No caching of answers, one Host, connections closed after a
        // refusal that left the body unread: as tenantry serve.
        .layer(axum::middleware::from_fn(
            tenantry_axum::serve::http_hygiene,
        ))
        .layer(RequestIdLayer);
    Ok((router, flusher))
}

fn main() {
    // Compiled, not run: examples/issue-tracker is a whole application.
    let _ = app;
}
