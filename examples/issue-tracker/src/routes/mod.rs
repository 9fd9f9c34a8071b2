//! The tracker's routes, one module per table, and what they share: a read, a write or a delete of one row, or a list, each in its own tenant transaction opened by [`TenantCaller`]. Every handler first requires its permission (`tracker.read` for a `GET`, `tracker.write` otherwise: [`crate::permissions`]), so a caller without it gets `403 permission_denied` whatever the ids. Handlers never hold a pool; a row of another tenant is `404 not_found` exactly like a missing one, because the scope never returns it.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use tenantry_axum::{
    idempotency::{Reply, Written},
    ApiError, ProblemCode, TenantCaller,
};
use tenantry_db::{DbError, FromRow};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

pub mod comments;
pub mod issues;
pub mod projects;

/// Rows of a page when the client names no `limit`, and the most it may.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// `?limit=&cursor=` of a list (1 to 200 rows, default 50) and its page,
/// oldest first: tenantry-axum's, the cursor carrying the last row's
/// creation time and id, so rows made or removed meanwhile never shift a page.
pub use tenantry_axum::page::{Page, PageQuery};

/// Where a list's rows sit in its order: `(created_at, id)`.
type Position = (DateTime<Utc>, Uuid);

/// A row that a list pages over: where it sits in the list.
trait Listed {
    fn position(&self) -> Position;
}

/// The condition and order of a page, for a list whose own parameters come
/// first: `$n` and `$n+1` the cursor's position (NULL on the first page: the
/// comparison then starts before every row), `$n+2` the limit (plus one).
/// Not `$n IS NULL OR ...`: a generic plan then filters its way from the
/// list's start (100,000 rows passed over for a page deep in a list, 43 ms
/// against 0.2 ms), where the comparison stays a condition of the index.
fn page_sql(first_param: usize) -> String {
    let (at, id, limit) = (first_param, first_param + 1, first_param + 2);
    format!(
        "(created_at, id) > (coalesce(${at}::timestamptz, '-infinity'), \
                             coalesce(${id}::uuid, '00000000-0000-0000-0000-000000000000')) \
         ORDER BY created_at, id LIMIT ${limit}"
    )
}

type Params<'a> = [&'a (dyn ToSql + Sync)];

/// At most one row, in a read transaction; none is `404 <what> not found`.
/// Reads go through `caller.read`, which runs them once more on a fresh
/// transaction when the database rolled the first back (a statement
/// prepared before your migration changed its table, a tenant's tier
/// move): the client never sees that `503`.
async fn read_one<T: FromRow>(
    caller: &TenantCaller,
    what: &str,
    sql: &str,
    params: &Params<'_>,
) -> Result<T, ApiError> {
    let row = caller
        .read(|mut scope| async move {
            let row = scope.query_opt(sql, params).await?;
            scope.commit().await?;
            Ok(row)
        })
        .await?;
    row.ok_or_else(|| ApiError::not_found(what))
}

/// A page of the rows `list` (its `$1` the parent's id, then [`page_sql`]'s)
/// returns for a parent row that `parent` finds by `id`; `404 <what> not
/// found` when the parent is not visible.
async fn read_children<T: FromRow + Listed>(
    caller: &TenantCaller,
    what: &str,
    parent: &str,
    list: &str,
    id: &(dyn tokio_postgres::types::ToSql + Sync),
    query: &PageQuery,
) -> Result<Page<T>, ApiError> {
    let window = query.window::<Position>(DEFAULT_LIMIT, MAX_LIMIT)?;
    let (after_at, after_id) = window.after().copied().unzip();
    let fetch = window.fetch();
    let rows = caller
        .read(|mut scope| async move {
            let found: Option<(Uuid,)> = scope.query_opt(parent, &[id]).await?;
            if found.is_none() {
                return Ok(None);
            }
            let rows = scope
                .query(list, &[id, &after_at, &after_id, &fetch])
                .await?;
            scope.commit().await?;
            Ok(Some(rows))
        })
        .await?
        .ok_or_else(|| ApiError::not_found(what))?;
    Ok(window.page(rows, T::position))
}

/// A page of the rows `list` (its parameters [`page_sql`]'s alone) returns.
async fn read_page<T: FromRow + Listed>(
    caller: &TenantCaller,
    list: &str,
    query: &PageQuery,
) -> Result<Page<T>, ApiError> {
    let window = query.window::<Position>(DEFAULT_LIMIT, MAX_LIMIT)?;
    let (after_at, after_id) = window.after().copied().unzip();
    let fetch = window.fetch();
    let rows = caller
        .read(|mut scope| async move {
            let rows = scope.query(list, &[&after_at, &after_id, &fetch]).await?;
            scope.commit().await?;
            Ok(rows)
        })
        .await?;
    Ok(window.page(rows, T::position))
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
        .await
        .map_err(|e| in_routes_words(e, what))?
        .ok_or_else(|| ApiError::not_found(what))
}

/// An insert that returns the row it made, answered `201` with it: under
/// the request's `Idempotency-Key` the response is stored in the insert's own
/// transaction, and a retry with the key is answered with it (byte for byte,
/// `Idempotent-Replayed: true`) without inserting again. No row (the parent
/// row it names is not the tenant's) is `404 <what> not found`.
async fn create_one<T: FromRow + serde::Serialize + Send>(
    caller: &TenantCaller,
    what: &str,
    location: &'static str,
    sql: &'static str,
    params: &Params<'_>,
) -> Result<Written<T>, ApiError> {
    // `Location: <location><the new row's id>`, on replays too.
    let reply = Reply::new(StatusCode::CREATED).located(location, "id");
    caller
        .write_response(reply, params, |scope, params| {
            Box::pin(async move {
                scope
                    .query_opt::<T>(sql, params)
                    .await?
                    .ok_or_else(|| DbError::NotFound(String::new()))
            })
        })
        .await
        .map_err(|e| in_routes_words(e, what))
}

/// A `DELETE` of the one row `sql` names, answered `204` (`404 <what> not
/// found` when it deletes nothing: missing, or another tenant's); the rows
/// that name it go with it (`ON DELETE CASCADE`, which pairs `tenant_id`, so
/// only the same tenant's). Under `Idempotency-Key` a retry is answered with
/// the first `204`, not with a `404` for the row already gone.
async fn delete_one(
    caller: &TenantCaller,
    what: &str,
    sql: &'static str,
    params: &Params<'_>,
) -> Result<Written<()>, ApiError> {
    caller
        .write_response(
            Reply::new(StatusCode::NO_CONTENT),
            params,
            |scope, params| {
                Box::pin(async move {
                    match scope.execute(sql, params).await? {
                        0 => Err(DbError::NotFound(String::new())),
                        _ => Ok(()),
                    }
                })
            },
        )
        .await
        .map_err(|e| in_routes_words(e, what))
}

/// A row a write names that is not there is the row the route names not
/// being there (a parent's row of a child tenant the key pairs wrongly
/// included): `404 <what> not found`, as for a missing id.
fn in_routes_words(e: ApiError, what: &str) -> ApiError {
    match e.code() {
        ProblemCode::NotFound => ApiError::not_found(what),
        _ => e,
    }
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
