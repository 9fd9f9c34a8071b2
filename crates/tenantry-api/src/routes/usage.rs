//! Usage: of the caller's tenant, hourly `tenant_metrics` with storage samples (own and descendants', flagged), `tenant_resource_usage`, requests per API key from the request log and its rows in the adopted tables; for the operator, the tenants ranked over up to 30 days.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tenantry_db::{
    AdoptedTableUsage, KeyUsage, MetricsRow, ResourceUsage, TopTenant, UsageRanking,
};
use utoipa::IntoParams;

use crate::{
    auth::{AdminCaller, TenantCaller},
    error::{responses, ApiError},
    extract::{Json, Query},
};

/// Time window of the metrics.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// From this hour (inclusive, RFC 3339; hours are UTC's, and a time
    /// inside an hour takes that whole hour).
    #[serde(default, deserialize_with = "super::date_time")]
    pub from: Option<DateTime<Utc>>,
    /// Until this time (exclusive, RFC 3339): the hours that start before
    /// it, so a time inside an hour takes that whole hour.
    #[serde(default, deserialize_with = "super::date_time")]
    pub to: Option<DateTime<Utc>>,
}

/// Hourly usage of the caller's tenant and its descendants (`usage.read`):
/// requests, distinct members and keys, 4xx and 5xx answers, p95 latency, and
/// storage. Request columns are refreshed by the server every
/// `metrics_refresh_secs`; storage is sampled at the first refresh of each hour.
#[utoipa::path(
    get, path = "/v1/usage/metrics", tag = "usage", params(MetricsQuery), operation_id = "usage_metrics",
    responses(
        (status = 200, body = Vec<MetricsRow>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn metrics(
    caller: TenantCaller,
    Query(q): Query<MetricsQuery>,
) -> Result<Json<Vec<MetricsRow>>, ApiError> {
    caller.require("usage.read")?;
    super::time_window(("from", q.from), ("to", q.to))?;
    // Rows are hours (UTC): a `from` inside an hour takes that whole hour,
    // as a `to` inside one does (rows are compared by the hour they start:
    // a from of 10:30 left out the hour holding 10:30 to 10:59, found by a
    // review of time-based behaviour).
    // (By whole seconds: chrono's duration_trunc counts nanoseconds, which
    // end in 2262, and refused later years the calendar check allows.)
    let from = q.from.map(|t| {
        let secs = t.timestamp();
        DateTime::from_timestamp(secs - secs.rem_euclid(3600), 0).unwrap_or(t)
    });
    let mut scope = caller.scope().await?;
    let rows = scope.metrics(from, q.to).await?;
    scope.commit().await?;
    Ok(Json(rows))
}

/// Resource count, storage and last change of the caller's tenant and its descendants (`usage.read`).
///
/// One row per tenant of the subtree, the caller's own first, counted when
/// asked.
#[utoipa::path(
    get, path = "/v1/usage/resources", tag = "usage", operation_id = "usage_resources",
    responses((status = 200, body = Vec<ResourceUsage>), responses::TenantAuth),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn resources(caller: TenantCaller) -> Result<Json<Vec<ResourceUsage>>, ApiError> {
    caller.require("usage.read")?;
    let mut scope = caller.scope().await?;
    let rows = scope.resource_usage().await?;
    scope.commit().await?;
    Ok(Json(rows))
}

/// The period of `/v1/usage/keys`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyUsageQuery {
    /// Hours back from now, 1 to 720 (the request log keeps 30 days); default 24.
    #[param(minimum = 1, maximum = 720)]
    pub hours: Option<u32>,
}

/// Requests per API key of the caller's tenant over the last hours, most active first (`usage.read`).
///
/// `hours` is 1 to 720 (default 24). Each key of the tenant that made a request
/// in the period, with its count, how many were answered with a status of 400
/// or more, and its last request; keys without a request in the period are left
/// out.
#[utoipa::path(
    get, path = "/v1/usage/keys", tag = "usage", params(KeyUsageQuery), operation_id = "usage_keys",
    responses(
        (status = 200, body = Vec<KeyUsage>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn keys(
    caller: TenantCaller,
    Query(q): Query<KeyUsageQuery>,
) -> Result<Json<Vec<KeyUsage>>, ApiError> {
    caller.require("usage.read")?;
    let hours = q.hours.unwrap_or(24);
    if !(1..=720).contains(&hours) {
        return Err(ApiError::invalid(
            "hours",
            "hours must be between 1 and 720",
        ));
    }
    let since = Utc::now() - chrono::Duration::hours(i64::from(hours));
    let mut scope = caller.scope().await?;
    let rows = scope.key_usage(since).await?;
    scope.commit().await?;
    Ok(Json(rows))
}

/// The ranking of `/v1/usage/top`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// Days back from the current hour, 1 to 30 (default 30).
    #[param(minimum = 1, maximum = 30)]
    pub days: Option<u32>,
    /// How many tenants, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// What to rank by (default `requests`).
    pub by: Option<UsageRanking>,
}

/// The operator's noisy neighbours (admin). The tenants with the most requests,
/// errors, the highest p95 latency or the most storage over the last days,
/// from the hourly metrics and storage samples.
#[utoipa::path(
    get, path = "/v1/usage/top", tag = "usage", params(TopQuery), operation_id = "usage_top_tenants",
    responses(
        (status = 200, body = Vec<TopTenant>),
        responses::AdminAuth,
        responses::Params,
    ),
    security(("adminToken" = []))
)]
pub async fn top(
    admin: AdminCaller,
    Query(q): Query<TopQuery>,
) -> Result<Json<Vec<TopTenant>>, ApiError> {
    let days = q.days.unwrap_or(30);
    if !(1..=30).contains(&days) {
        return Err(ApiError::invalid("days", "days must be between 1 and 30"));
    }
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 100",
        ));
    }
    let mut scope = admin.admin_scope().await?;
    let rows = scope
        .usage_top(days as i32, q.by.unwrap_or_default(), limit as i32)
        .await?;
    scope.commit().await?;
    Ok(Json(rows))
}

/// The caller's rows in each adopted table (`usage.read`). The adopted tables
/// with the caller's tenant's own row count in each
/// (`usage.read`), counted in its context under its policies, by each
/// table's tenant_id index: the cost grows with the tenant's own rows.
#[utoipa::path(
    get, path = "/v1/tables", tag = "usage", operation_id = "usage_tables",
    responses((status = 200, body = Vec<AdoptedTableUsage>), responses::TenantAuth),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn tables(caller: TenantCaller) -> Result<Json<Vec<AdoptedTableUsage>>, ApiError> {
    caller.require("usage.read")?;
    let mut scope = caller.scope().await?;
    let rows = scope.adopted_tables().await?;
    scope.commit().await?;
    Ok(Json(rows))
}
