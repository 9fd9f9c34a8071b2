//! Projects: create, list, read, rename, delete (with their issues and comments).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenantry_axum::{
    extract::{Json, Path, Query},
    idempotency::Written,
    ApiError, ProblemCode, TenantCaller,
};
use tenantry_db::{FromRow, RowError};
use tokio_postgres::Row;

use super::{
    create_one, delete_one, optional_text, page_sql, read_one, read_page, text, write_one, Listed,
    Page, PageQuery,
};
use crate::{ids::ProjectId, permissions};

/// A project as clients see it.
#[derive(Debug, Serialize)]
pub struct Project {
    /// Its id.
    pub id: ProjectId,
    /// Its name, unique in the tenant.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl Listed for Project {
    fn position(&self) -> (DateTime<Utc>, uuid::Uuid) {
        (self.created_at, self.id.into())
    }
}

impl FromRow for Project {
    fn from_row(row: Row) -> Result<Self, RowError> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A new project.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    /// 1 to 200 characters.
    pub name: String,
}

/// A change to a project; absent fields stay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectPatch {
    /// 1 to 200 characters.
    pub name: Option<String>,
}

const NAME_MAX: usize = 200;

/// `POST /projects`
pub async fn create(
    caller: TenantCaller,
    Json(new): Json<NewProject>,
) -> Result<Written<Project>, ApiError> {
    caller.require(permissions::WRITE)?;
    let name = text("name", &new.name, NAME_MAX)?;
    let sql = "INSERT INTO projects (name) VALUES ($1) RETURNING id, name, created_at";
    create_one(&caller, "project", "/projects/", sql, &[&name])
        .await
        .map_err(name_taken)
}

/// A taken name (the table's `UNIQUE (tenant_id, name)`, by its constraint's
/// name) names the field; other conflicts keep their words (under the
/// hierarchy, two rows with one id: a child's and the caller's).
fn name_taken(e: ApiError) -> ApiError {
    match e.constraint() {
        Some("projects_tenant_id_name_key") => ApiError::new(
            ProblemCode::Conflict,
            "a project of this name already exists",
        )
        .with_field("name"),
        _ => e,
    }
}

/// `GET /projects?limit=&cursor=`: a page of the tenant's projects, oldest first.
pub async fn list(
    caller: TenantCaller,
    Query(query): Query<PageQuery>,
) -> Result<Json<Page<Project>>, ApiError> {
    caller.require(permissions::READ)?;
    let sql = format!(
        "SELECT id, name, created_at FROM projects WHERE {}",
        page_sql(1)
    );
    Ok(Json(read_page(&caller, &sql, &query).await?))
}

/// `GET /projects/{id}`
pub async fn get(
    caller: TenantCaller,
    Path(id): Path<ProjectId>,
) -> Result<Json<Project>, ApiError> {
    caller.require(permissions::READ)?;
    let sql = "SELECT id, name, created_at FROM projects WHERE id = $1";
    Ok(Json(read_one(&caller, "project", sql, &[&id]).await?))
}

/// `PATCH /projects/{id}`
pub async fn update(
    caller: TenantCaller,
    Path(id): Path<ProjectId>,
    Json(patch): Json<ProjectPatch>,
) -> Result<Json<Project>, ApiError> {
    caller.require(permissions::WRITE)?;
    let name = optional_text("name", &patch.name, NAME_MAX)?;
    let sql = "UPDATE projects SET name = coalesce($2, name) WHERE id = $1
               RETURNING id, name, created_at";
    Ok(Json(
        write_one(&caller, "project", sql, &[&id, &name])
            .await
            .map_err(name_taken)?,
    ))
}

/// `DELETE /projects/{id}`: the project, its issues and their comments.
pub async fn delete(
    caller: TenantCaller,
    Path(id): Path<ProjectId>,
) -> Result<Written<()>, ApiError> {
    caller.require(permissions::WRITE)?;
    let sql = "DELETE FROM projects WHERE id = $1";
    delete_one(&caller, "project", sql, &[&id]).await
}
