//! Usage of the caller's tenant: hourly `tenant_metrics` (own and descendants', flagged), `tenant_resource_usage`, and requests per API key from the request log.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tenantry_db::{KeyUsage, MetricsRow, ResourceUsage};
use utoipa::IntoParams;

use crate::{
    auth::TenantCaller,
    error::{responses, ApiError},
    extract::{Json, Query},
};

/// Time window of the metrics.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// From this hour (inclusive, RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Until this hour (exclusive, RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

/// Hourly request metrics of the caller's tenant and its descendants (`usage.read`).
/// Rows are refreshed by the server every `metrics_refresh_secs`.
#[utoipa::path(
    get, path = "/v1/usage/metrics", tag = "usage", params(MetricsQuery),
    responses(
        (status = 200, body = Vec<MetricsRow>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("bearer" = []), ("person" = []))
)]
pub async fn metrics(
    caller: TenantCaller,
    Query(q): Query<MetricsQuery>,
) -> Result<Json<Vec<MetricsRow>>, ApiError> {
    caller.require("usage.read")?;
    if let (Some(from), Some(to)) = (q.from, q.to) {
        if from > to {
            return Err(ApiError::invalid("from", "from must not be after to"));
        }
    }
    let mut scope = caller.scope().await?;
    let rows = scope.metrics(q.from, q.to).await?;
    scope.commit().await?;
    Ok(Json(rows))
}

/// Resource count, storage and last change of the caller's tenant and its descendants (`usage.read`).
#[utoipa::path(
    get, path = "/v1/usage/resources", tag = "usage",
    responses((status = 200, body = Vec<ResourceUsage>), responses::TenantAuth),
    security(("bearer" = []), ("person" = []))
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
#[utoipa::path(
    get, path = "/v1/usage/keys", tag = "usage", params(KeyUsageQuery),
    responses(
        (status = 200, body = Vec<KeyUsage>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("bearer" = []), ("person" = []))
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
