//! The operator's live view of the busiest tenants (`GET /v1/stats/tenants`, what `tenantry top` shows): this server's per-tenant traffic table next to each named tenant's rows and storage.

use axum::extract::State;
use serde::Serialize;
use tenantry_axum::tenant_stats::{PeriodCounts, TenantTraffic};
use tenantry_db::TenantId;
use utoipa::ToSchema;

use crate::{
    auth::AdminCaller,
    error::{responses, ApiError},
    extract::Json,
    state::AppState,
};

/// One of the busiest tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantStatsRow {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The period under way.
    pub current: PeriodCounts,
    /// The last complete period.
    pub last: PeriodCounts,
    /// Its resources (absent when it no longer exists).
    pub resources: Option<i64>,
    /// Bytes of its resources' names and data (absent when it no longer exists).
    pub storage_bytes: Option<i64>,
}

/// The busiest tenants of this server and the rest.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantStatsReport {
    /// Length of a period in seconds (`tenant_stats_period_secs`).
    pub period_secs: f64,
    /// Seconds elapsed in the current period.
    pub current_elapsed_secs: f64,
    /// Tenants tracked in the table.
    pub tracked: usize,
    /// The busiest tenants (`tenant_stats_top` at most), busiest first.
    pub tenants: Vec<TenantStatsRow>,
    /// Every other tenant's traffic summed (`tenant_id` absent).
    pub other: TenantTraffic,
}

/// Requests, errors and p95 latency of the busiest tenants on this server, in
/// the current and the last period, with their rows and storage; the rest
/// summed as `other` (admin). Counted in memory per server process, like the
/// `tenantry_tenant_*` series of `/metrics`.
#[utoipa::path(
    get, path = "/v1/stats/tenants", tag = "tenants",
    responses(
        (status = 200, body = TenantStatsReport),
        responses::AdminAuth,
    ),
    security(("bearer" = []))
)]
pub async fn tenant_stats(
    admin: AdminCaller,
    State(state): State<AppState>,
) -> Result<Json<TenantStatsReport>, ApiError> {
    let snap = state.tenantry.request_log().tenant_stats().snapshot();
    let mut tenants = Vec::with_capacity(snap.tenants.len());
    for t in snap.tenants {
        let Some(id) = t.tenant_id else { continue };
        let usage = storage(&admin, id).await?;
        tenants.push(TenantStatsRow {
            tenant_id: id,
            current: t.current,
            last: t.last,
            resources: usage.map(|u| u.0),
            storage_bytes: usage.map(|u| u.1),
        });
    }
    Ok(Json(TenantStatsReport {
        period_secs: snap.period_secs,
        current_elapsed_secs: snap.current_elapsed_secs,
        tracked: snap.tracked,
        tenants,
        other: snap.other,
    }))
}

/// Resources and bytes of one tenant, `None` when it is gone.
async fn storage(admin: &AdminCaller, id: TenantId) -> Result<Option<(i64, i64)>, ApiError> {
    let mut scope = match admin.tenant_scope(id).await {
        Ok(scope) => scope,
        Err(e) if e.status().is_client_error() => return Ok(None),
        Err(e) => return Err(e),
    };
    let rows = scope.resource_usage().await?;
    scope.commit().await?;
    Ok(rows
        .into_iter()
        .find(|r| r.tenant_id == id)
        .map(|r| (r.total_resources, r.storage_used)))
}
