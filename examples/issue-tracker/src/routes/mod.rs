//! The tracker's routes, one module per table, and what they share: a read or a write of one row or a list, each in its own tenant transaction opened by [`TenantCaller`]. Every handler first requires its permission (`tracker.read` for a `GET`, `tracker.write` otherwise: [`crate::permissions`]), so a caller without it gets `403 permission_denied` whatever the ids. Handlers never hold a pool; a row of another tenant is `404 not_found` exactly like a missing one, because the scope never returns it.

use tenantry_axum::{ApiError, TenantCaller};
use tenantry_db::FromRow;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

pub mod comments;
pub mod issues;
pub mod projects;

/// Most rows a list returns (the example has no pagination).
const LIST_LIMIT: i64 = 1000;

type Params<'a> = [&'a (dyn ToSql + Sync)];

/// At most one row, in a read transaction; none is `404 <what> not found`.
async fn read_one<T: FromRow>(
    caller: &TenantCaller,
    what: &str,
    sql: &str,
    params: &Params<'_>,
) -> Result<T, ApiError> {
    let mut scope = caller.scope().await?;
    let row = scope.query_opt(sql, params).await?;
    scope.commit().await?;
    row.ok_or_else(|| ApiError::not_found(what))
}

/// The rows `list` returns for a parent row that `parent` finds by `id`;
/// `404 <what> not found` when the parent is not visible.
async fn read_children<T: FromRow>(
    caller: &TenantCaller,
    what: &str,
    parent: &str,
    list: &str,
    id: &(dyn tokio_postgres::types::ToSql + Sync),
) -> Result<Vec<T>, ApiError> {
    let mut scope = caller.scope().await?;
    let found: Option<(Uuid,)> = scope.query_opt(parent, &[id]).await?;
    if found.is_none() {
        return Err(ApiError::not_found(what));
    }
    let rows = scope.query(list, &[id, &LIST_LIMIT]).await?;
    scope.commit().await?;
    Ok(rows)
}

/// A write that returns at most one row, committed (and run again when a
/// concurrent transaction rolled it back); none is `404 <what> not found`.
async fn write_one<T: FromRow + Send>(
    caller: &TenantCaller,
    what: &str,
    sql: &'static str,
    params: &Params<'_>,
) -> Result<T, ApiError> {
    caller
        .write(params, |scope, params| {
            Box::pin(async move { scope.query_opt::<T>(sql, params).await })
        })
        .await?
        .ok_or_else(|| ApiError::not_found(what))
}

/// A text field of 1 to `max` characters, or `422` naming it.
fn text<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str, ApiError> {
    match value.chars().count() {
        n if (1..=max).contains(&n) => Ok(value),
        _ => Err(ApiError::invalid(
            field,
            format!("{field} must be 1 to {max} characters"),
        )),
    }
}

/// An optional text field, checked like [`text`] when present.
fn optional_text<'a>(
    field: &str,
    value: &'a Option<String>,
    max: usize,
) -> Result<Option<&'a str>, ApiError> {
    value.as_deref().map(|v| text(field, v, max)).transpose()
}
