//! Comments on an issue: add one, list an issue's, read one, delete one.

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
    create_one, delete_one, page_sql, read_children, read_one, text, Listed, Page, PageQuery,
};
use crate::{
    ids::{CommentId, IssueId},
    permissions,
};

/// A comment as clients see it.
#[derive(Debug, Serialize)]
pub struct Comment {
    /// Its id.
    pub id: CommentId,
    /// The issue it is on.
    pub issue_id: IssueId,
    /// 1 to 10 000 characters.
    pub body: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

impl Listed for Comment {
    fn position(&self) -> (DateTime<Utc>, uuid::Uuid) {
        (self.created_at, self.id.into())
    }
}

impl FromRow for Comment {
    fn from_row(row: Row) -> Result<Self, RowError> {
        Ok(Self {
            id: row.try_get("id")?,
            issue_id: row.try_get("issue_id")?,
            body: row.try_get("body")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A new comment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    /// 1 to 10 000 characters.
    pub body: String,
}

/// `POST /issues/{id}/comments`: the issue must be the tenant's (else 404).
pub async fn create(
    caller: TenantCaller,
    Path(issue): Path<IssueId>,
    Json(new): Json<NewComment>,
) -> Result<Written<Comment>, ApiError> {
    caller.require(permissions::WRITE)?;
    let body = text("body", &new.body, 10_000)?;
    // The comment is the issue's tenant's (see issues::create).
    let sql = "INSERT INTO comments (tenant_id, issue_id, body)
               SELECT tenant_id, id, $2 FROM issues WHERE id = $1
               RETURNING id, issue_id, body, created_at";
    create_one(&caller, "issue", "/comments/", sql, &[&issue, &body]).await
}

/// `GET /issues/{id}/comments?limit=&cursor=`: a page of them, oldest first.
pub async fn list(
    caller: TenantCaller,
    Path(issue): Path<IssueId>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Page<Comment>>, ApiError> {
    caller.require(permissions::READ)?;
    let list = format!(
        "SELECT id, issue_id, body, created_at FROM comments WHERE issue_id = $1 AND {}",
        page_sql(2)
    );
    let comments = read_children(
        &caller,
        "issue",
        "SELECT id FROM issues WHERE id = $1",
        &list,
        &issue,
        &query,
    )
    .await?;
    Ok(Json(comments))
}

/// `GET /comments/{id}`
pub async fn get(
    caller: TenantCaller,
    Path(id): Path<CommentId>,
) -> Result<Json<Comment>, ApiError> {
    caller.require(permissions::READ)?;
    let sql = "SELECT id, issue_id, body, created_at FROM comments WHERE id = $1";
    Ok(Json(read_one(&caller, "comment", sql, &[&id]).await?))
}

/// `DELETE /comments/{id}`
pub async fn delete(
    caller: TenantCaller,
    Path(id): Path<CommentId>,
) -> Result<Written<()>, ApiError> {
    caller.require(permissions::WRITE)?;
    let sql = "DELETE FROM comments WHERE id = $1";
    delete_one(&caller, "comment", sql, &[&id]).await
}
