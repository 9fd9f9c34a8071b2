//! The audit logs: the caller's tenant's rows (tenant key), any tenant's rows and the operator's log (admin), newest first, filtered by action and time.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tenantry_db::{AuditEntry, AuditEventId, AuditQuery, OperatorAuditEntry, TenantId};
use utoipa::IntoParams;

use super::{decode_cursor, encode_cursor, invalid_cursor, Page, PageQuery};
use crate::{
    auth::{AdminCaller, TenantCaller},
    error::{responses, ApiError},
    extract::{Json, Path, Query},
};

/// Filters of an audit listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditListQuery {
    /// Page size, 1–1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`; empty or absent: the first page.
    /// The next page starts at the cursor's place (newest first), whatever
    /// was recorded since.
    pub cursor: Option<String>,
    /// Only this action, e.g. `key.revoked`.
    pub action: Option<String>,
    /// From this time (inclusive, RFC 3339).
    #[serde(default, deserialize_with = "super::date_time")]
    pub since: Option<DateTime<Utc>>,
    /// Until this time (exclusive, RFC 3339).
    #[serde(default, deserialize_with = "super::date_time")]
    pub until: Option<DateTime<Utc>>,
}

impl AuditListQuery {
    fn to_query(&self) -> Result<(AuditQuery, u32), ApiError> {
        let limit = PageQuery {
            limit: self.limit,
            cursor: None,
        }
        .limit()?;
        super::time_window(("since", self.since), ("until", self.until))?;
        let after = match super::given_cursor(&self.cursor) {
            Some(c) => {
                let key = decode_cursor(c)?;
                let (at, id) = key.split_once('|').ok_or_else(invalid_cursor)?;
                let at = DateTime::parse_from_rfc3339(at)
                    .map_err(|_| invalid_cursor())?
                    .with_timezone(&Utc);
                let id = AuditEventId::parse(id).map_err(|_| invalid_cursor())?;
                Some((at, id))
            }
            None => None,
        };
        Ok((
            AuditQuery {
                action: self.action.clone(),
                since: self.since,
                until: self.until,
                after,
                limit: i64::from(limit) + 1,
            },
            limit,
        ))
    }
}

/// What a page's cursor is made of: an entry's time and event id.
trait Event {
    fn place(&self) -> (DateTime<Utc>, AuditEventId);
}

impl Event for AuditEntry {
    fn place(&self) -> (DateTime<Utc>, AuditEventId) {
        (self.occurred_at, self.event_id)
    }
}

impl Event for OperatorAuditEntry {
    fn place(&self) -> (DateTime<Utc>, AuditEventId) {
        (self.occurred_at, self.event_id)
    }
}

fn page<E: Event>(mut items: Vec<E>, limit: u32) -> Page<E> {
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        // The last row's own time and id: a cursor says nothing its page did not.
        items.last().map(|e| {
            let (at, id) = e.place();
            encode_cursor(&format!(
                "{}|{}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                id
            ))
        })
    } else {
        None
    };
    Page { items, next_cursor }
}

/// The caller's tenant's audit log, newest first (`audit.read`).
///
/// Each entry names who acted (`actor`: a key, a member, `admin`, a database
/// login; `impersonator` when someone acted as them), the action, its target
/// and details. Only the tenant's own entries: a descendant's are in the
/// descendant's log. Filter by `action` and a time window; follow `next_cursor`
/// for older entries.
#[utoipa::path(
    get, path = "/v1/audit", operation_id = "list_audit_events", tag = "audit", params(AuditListQuery),
    responses(
        (status = 200, body = Page<AuditEntry>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn tenant_audit(
    caller: TenantCaller,
    Query(q): Query<AuditListQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    caller.require("audit.read")?;
    let (query, limit) = q.to_query()?;
    let mut scope = caller.scope().await?;
    let items = scope.audit_log(&query).await?;
    scope.commit().await?;
    Ok(Json(page(items, limit)))
}

/// Any tenant's audit log, newest first (admin).
///
/// The same entries and filters as the tenant's own `GET /v1/audit`, for a
/// tenant of any status until it is purged; an unknown or purged id is 404.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant_id}/audit", operation_id = "list_tenant_audit_events", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid), AuditListQuery),
    responses(
        (status = 200, body = Page<AuditEntry>),
        responses::AdminAuth,
        responses::Params,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn admin_audit(
    admin: AdminCaller,
    Path(tenant): Path<TenantId>,
    Query(q): Query<AuditListQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let (query, limit) = q.to_query()?;
    let mut scope = admin.admin_scope().await?;
    scope.get_tenant(tenant).await?;
    let items = scope.audit_log(tenant, &query).await?;
    scope.commit().await?;
    Ok(Json(page(items, limit)))
}

/// The operator's audit log, newest first (admin).
///
/// What operators and administrators did to every tenant at once, which no
/// tenant's own log holds: tables adopted (`table.adopted`), their options
/// changed (`table.options_changed`), changed by `alter_tenant_table`
/// (`table.altered`), their existing rows given a tenant
/// (`table.backfilled`) and released (`table.released`); permissions defined
/// (`permission.defined`, `permission.described`); context keys added and
/// retired (`context_key.added`, `context_key.retired`); audit rows expired
/// (`audit_log.expired`); the sign-up and purge policies changed
/// (`policy.changed`). Each entry names who acted (`actor`). The same
/// filters and cursor as the tenants' logs.
#[utoipa::path(
    get, path = "/v1/operator/audit", operation_id = "list_operator_audit_events", tag = "audit",
    params(AuditListQuery),
    responses(
        (status = 200, body = Page<OperatorAuditEntry>),
        responses::AdminAuth,
        responses::Params,
    ),
    security(("adminToken" = []))
)]
pub async fn operator_audit(
    admin: AdminCaller,
    Query(q): Query<AuditListQuery>,
) -> Result<Json<Page<OperatorAuditEntry>>, ApiError> {
    let (query, limit) = q.to_query()?;
    let mut scope = admin.admin_scope().await?;
    let items = scope.operator_audit_log(&query).await?;
    scope.commit().await?;
    Ok(Json(page(items, limit)))
}
