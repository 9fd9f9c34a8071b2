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

/// The busiest tenants on this server (admin). Requests, errors and p95 latency
/// of the busiest tenants on this server, in
/// the current and the last period, with their rows and storage; the rest
/// summed as `other` (admin). Counted in memory per server process, like the
/// `tenantry_tenant_*` series of `/metrics`.
#[utoipa::path(
    get, path = "/v1/stats/tenants", operation_id = "list_tenant_stats", tag = "tenants",
    responses(
        (status = 200, body = TenantStatsReport),
        responses::AdminAuth,
    ),
    security(("adminToken" = []))
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

/// Resources and bytes of one tenant (its own, not its subtree's: a large
/// subtree must not slow the operator's view), `None` when it is gone or
/// cannot be read now (one tenant's trouble never breaks the report).
async fn storage(admin: &AdminCaller, id: TenantId) -> Result<Option<(i64, i64)>, ApiError> {
    let totals = async {
        let mut scope = admin.tenant_scope(id).await?;
        let totals: (i64, i64) = scope
            .query_one(
                "SELECT total_resources, storage_used FROM tenantry.tenant_resource_totals($1)",
                &[id.as_uuid()],
            )
            .await?;
        scope.commit().await?;
        Ok::<_, ApiError>(totals)
    };
    match totals.await {
        Ok(totals) => Ok(Some(totals)),
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(tenant = %id, error = ?e, "tenant stats: its storage could not be read");
            }
            Ok(None)
        }
    }
}
