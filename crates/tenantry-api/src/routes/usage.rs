//! Usage of the caller's tenant: hourly `tenant_metrics` (own and descendants', flagged) and `tenant_resource_usage`.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tenantry_db::{MetricsRow, ResourceUsage};
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
