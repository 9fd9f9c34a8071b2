//! Issues of a project: open one, list a project's, read, retitle, close or reopen, delete (with its comments).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenantry_axum::{
    extract::{Json, Path, Query},
    idempotency::Written,
    ApiError, TenantCaller,
};
use tenantry_db::{FromRow, RowError};
use tokio_postgres::Row;

use super::{
    create_one, delete_one, optional_text, page_sql, read_children, read_one, text, write_one,
    Listed, Page, PageQuery,
};
use crate::{
    ids::{IssueId, ProjectId},
    permissions,
};

/// Open or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssueState {
    /// Work to do.
    Open,
    /// Done or dropped.
    Closed,
}

impl IssueState {
    fn as_str(self) -> &'static str {
        match self {
            IssueState::Open => "open",
            IssueState::Closed => "closed",
        }
    }
}

/// An issue as clients see it.
#[derive(Debug, Serialize)]
pub struct Issue {
    /// Its id.
    pub id: IssueId,
    /// Its project.
    pub project_id: ProjectId,
    /// 1 to 200 characters.
    pub title: String,
    /// Open or closed.
    pub state: IssueState,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
}

impl Listed for Issue {
    fn position(&self) -> (DateTime<Utc>, uuid::Uuid) {
        (self.created_at, self.id.into())
    }
}

impl FromRow for Issue {
    fn from_row(row: Row) -> Result<Self, RowError> {
        let state: String = row.try_get("state")?;
        Ok(Self {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            title: row.try_get("title")?,
            // The table's CHECK allows these two only; anything else is a
            // schema this build does not know, never read as open.
            state: match state.as_str() {
                "open" => IssueState::Open,
                "closed" => IssueState::Closed,
                other => return Err(format!("issue state {other:?} is not open or closed").into()),
            },
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A new issue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIssue {
    /// 1 to 200 characters.
    pub title: String,
}

/// A change to an issue; absent fields stay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuePatch {
    /// 1 to 200 characters.
    pub title: Option<String>,
    /// `open` or `closed`.
    pub state: Option<IssueState>,
}

const TITLE_MAX: usize = 200;
const COLUMNS: &str = "id, project_id, title, state, created_at";

/// `POST /projects/{id}/issues`: the project must be the tenant's (else 404).
pub async fn create(
    caller: TenantCaller,
    Path(project): Path<ProjectId>,
    Json(new): Json<NewIssue>,
) -> Result<Written<Issue>, ApiError> {
    caller.require(permissions::WRITE)?;
    let title = text("title", &new.title, TITLE_MAX)?;
    // The project is looked up under the tenant's policies: another tenant's
    // is not there. The issue is the project's tenant's: a parent tenant
    // opening one in its child's project (it reads and changes the child's
    // rows) files it there, as the tenant-paired foreign key wants.
    let sql = "INSERT INTO issues (tenant_id, project_id, title)
               SELECT tenant_id, id, $2 FROM projects WHERE id = $1
               RETURNING id, project_id, title, state, created_at";
    create_one(&caller, "project", "/issues/", sql, &[&project, &title]).await
}

/// `GET /projects/{id}/issues?limit=&cursor=`: a page of them, oldest first.
pub async fn list(
    caller: TenantCaller,
    Path(project): Path<ProjectId>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Page<Issue>>, ApiError> {
    caller.require(permissions::READ)?;
    let list = format!(
        "SELECT {COLUMNS} FROM issues WHERE project_id = $1 AND {}",
        page_sql(2)
    );
    let issues = read_children(
        &caller,
        "project",
        "SELECT id FROM projects WHERE id = $1",
        &list,
        &project,
        &query,
    )
    .await?;
    Ok(Json(issues))
}

/// `GET /issues/{id}`
pub async fn get(caller: TenantCaller, Path(id): Path<IssueId>) -> Result<Json<Issue>, ApiError> {
    caller.require(permissions::READ)?;
    let sql = format!("SELECT {COLUMNS} FROM issues WHERE id = $1");
    Ok(Json(read_one(&caller, "issue", &sql, &[&id]).await?))
}

/// `PATCH /issues/{id}`: retitle, close, reopen.
pub async fn update(
    caller: TenantCaller,
    Path(id): Path<IssueId>,
    Json(patch): Json<IssuePatch>,
) -> Result<Json<Issue>, ApiError> {
    caller.require(permissions::WRITE)?;
    let title = optional_text("title", &patch.title, TITLE_MAX)?;
    let state = patch.state.map(IssueState::as_str);
    let sql = "UPDATE issues SET title = coalesce($2, title), state = coalesce($3, state)
               WHERE id = $1 RETURNING id, project_id, title, state, created_at";
    Ok(Json(
        write_one(&caller, "issue", sql, &[&id, &title, &state]).await?,
    ))
}

/// `DELETE /issues/{id}`: the issue and its comments.
pub async fn delete(
    caller: TenantCaller,
    Path(id): Path<IssueId>,
) -> Result<Written<()>, ApiError> {
    caller.require(permissions::WRITE)?;
    let sql = "DELETE FROM issues WHERE id = $1";
    delete_one(&caller, "issue", sql, &[&id]).await
}
