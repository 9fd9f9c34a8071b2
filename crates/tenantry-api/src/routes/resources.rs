//! Resources and their shares: create, list (own, descendants', shared with me; name prefix), read, update, delete; share read-only with another tenant, list and revoke shares. Quotas from the tenant's settings apply to creation and updates.

use axum::http::StatusCode;
use serde::Deserialize;
use tenantry_db::{
    JsonText, NewResource, OwnerFilter, Resource, ResourceCursor, ResourceId, ResourceQuery,
    ResourceUpdate, Share, TenantId,
};
use utoipa::{IntoParams, ToSchema};

use super::{page_by_key, Page, PageQuery};
use tenantry_axum::idempotency::{Reply, Written};

use crate::{
    auth::TenantCaller,
    error::{responses, ApiError, Problem},
    extract::{Json, Path, Query},
};

/// A new resource.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "plan", "data": {"q": 3}}))]
pub struct NewResourceBody {
    /// Name, 1–1000 characters, any but U+0000 (which PostgreSQL's text cannot hold).
    #[schema(min_length = 1, max_length = 1000, pattern = r"^[^\u0000]*$")]
    pub name: String,
    /// Payload: a JSON object (default `{}`), stored as `jsonb`: numbers
    /// of magnitude at least 1e-400 and below 1e400 (and 0; 422 beyond), of
    /// any precision, come back with their exact value (in `jsonb`'s
    /// spelling: `1E2` as `100`), and of a key given twice the last value
    /// is kept.
    #[schema(value_type = Option<Object>)]
    pub data: Option<JsonText>,
}

/// A change to a resource; absent fields stay as they are. Neither takes
/// `null` (400 `invalid_json`): `{}` as `data` empties the payload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "plan-v2"}))]
pub struct ResourcePatch {
    /// New name, 1–1000 characters, any but U+0000.
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(
        value_type = String,
        required = false,
        min_length = 1,
        max_length = 1000,
        pattern = r"^[^\u0000]*$"
    )]
    pub name: Option<Option<String>>,
    /// Replacement payload (a JSON object, kept exactly as for creation).
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Object, required = false)]
    pub data: Option<Option<JsonText>>,
}

/// A share to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"tenant_id": "0b4f7bb2-6c1e-4f57-9d2a-6f3c5e1a2b7d"}))]
pub struct NewShareBody {
    /// The tenant to share with (read only).
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
}

/// Which resources a listing covers.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// The caller's own resources.
    #[serde(rename = "self")]
    Own,
    /// Resources shared with the caller.
    Shared,
    /// Resources of the caller's descendants.
    Descendants,
}

/// Filters and page of the resource listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResourceListQuery {
    /// Page size, 1–1000 (default 50). A page also ends once the names and
    /// data of its items reach 4 MiB (it always holds one item at least):
    /// follow `next_cursor` until it is `null`, not until a page is short.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`; empty or absent: the first page.
    /// The next page starts at the cursor's place in the order (newest
    /// first), whatever was created or removed since.
    pub cursor: Option<String>,
    /// `self`, `shared` or `descendants`; absent: everything the caller may read.
    #[param(inline)]
    pub owner: Option<Owner>,
    /// Only names starting with this text (literal, case-sensitive).
    #[param(max_length = 1000)]
    pub name_prefix: Option<String>,
}

/// Create a resource owned by the caller's tenant (`resources.write`).
///
/// `data` is any JSON object (default `{}`). The answer's `Location` is where
/// the resource is read. A tenant at its `max_resources` or
/// `max_storage_bytes` limit is refused with 409 `quota_exceeded`, and nothing
/// is written.
#[utoipa::path(
    post, path = "/v1/resources", tag = "resources", request_body = NewResourceBody,
    responses(
        (status = 201, body = Resource, headers(("Location" = String, description = "Where the new resource is read: `/v1/resources/{id}`"))),
        (status = 409, description = "Quota exceeded", body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::JsonBody,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn create_resource(
    caller: TenantCaller,
    Json(body): Json<NewResourceBody>,
) -> Result<Written<Resource>, ApiError> {
    caller.require("resources.write")?;
    let new = NewResource {
        name: body.name,
        data: body.data.unwrap_or_default(),
    };
    // Quotas are the database's: an insert past one fails with quota_exceeded.
    let created = caller
        .write_response(
            Reply::new(StatusCode::CREATED).located("/v1/resources/", "id"),
            &new,
            |scope, new| Box::pin(scope.create_resource(new)),
        )
        .await?;
    if let Some(resource) = created.fresh() {
        caller.note_resource(resource.id);
    }
    Ok(created)
}

/// Resources the caller may read, newest first (`resources.read`).
///
/// The tenant's own resources, its descendants' and those other tenants shared
/// with it; `owner` narrows to one of the three, `name_prefix` to names
/// starting with a text. Follow `next_cursor` until it is `null`: a page may be
/// short before the end.
#[utoipa::path(
    get, path = "/v1/resources", tag = "resources", params(ResourceListQuery),
    responses(
        (status = 200, body = Page<Resource>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn list_resources(
    caller: TenantCaller,
    Query(q): Query<ResourceListQuery>,
) -> Result<Json<Page<Resource>>, ApiError> {
    caller.require("resources.read")?;
    let limit = PageQuery {
        limit: q.limit,
        cursor: None,
    }
    .limit()?;
    let after = match super::given_cursor(&q.cursor) {
        Some(c) => Some(ResourceCursor::decode(c).ok_or_else(super::invalid_cursor)?),
        None => None,
    };
    if q.name_prefix
        .as_ref()
        .is_some_and(|p| p.chars().count() > 1000)
    {
        return Err(ApiError::invalid(
            "name_prefix",
            "name_prefix must be at most 1000 characters",
        ));
    }
    let owner = match q.owner {
        None => OwnerFilter::All,
        Some(Owner::Own) => OwnerFilter::Own,
        Some(Owner::Shared) => OwnerFilter::Shared,
        Some(Owner::Descendants) => OwnerFilter::Descendants,
    };
    // Read only: the listing and COMMIT travel in one round trip.
    let query = ResourceQuery {
        owner,
        name_prefix: q.name_prefix,
        limit: i64::from(limit),
        after,
    };
    let page = caller
        .read(|scope| scope.list_resources_and_commit(&query))
        .await?;
    Ok(Json(Page {
        items: page.items,
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// One resource (`resources.read`). Another tenant's resource answers 404, like a missing one.
#[utoipa::path(
    get, path = "/v1/resources/{id}", tag = "resources",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = Resource),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn get_resource(
    caller: TenantCaller,
    Path(id): Path<ResourceId>,
) -> Result<Json<Resource>, ApiError> {
    caller.require("resources.read")?;
    caller.note_resource(id);
    Ok(Json(
        caller
            .read(|scope| scope.get_resource_and_commit(id))
            .await?,
    ))
}

/// Change a resource of the caller or a descendant (`resources.write`). Shared resources are read only (404).
#[utoipa::path(
    patch, path = "/v1/resources/{id}", tag = "resources", request_body = ResourcePatch,
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = Resource),
        (status = 409, description = "Quota exceeded", body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::JsonBody,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn patch_resource(
    caller: TenantCaller,
    Path(id): Path<ResourceId>,
    Json(patch): Json<ResourcePatch>,
) -> Result<Written<Resource>, ApiError> {
    caller.require("resources.write")?;
    caller.note_resource(id);
    let update = ResourceUpdate {
        name: super::not_null("name", patch.name)?,
        data: super::not_null("data", patch.data)?,
    };
    caller
        .write_response(Reply::new(StatusCode::OK), &update, |scope, update| {
            Box::pin(scope.update_resource(id, update))
        })
        .await
}

/// Delete a resource of the caller or a descendant (`resources.delete`); its shares go with it.
///
/// Another tenant's resource answers 404, like a missing one; so does a
/// resource only shared with the caller, which it may decline instead (`DELETE
/// /v1/resources/{id}/shares/{tenant_id}` with its own tenant's id).
#[utoipa::path(
    delete, path = "/v1/resources/{id}", tag = "resources",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn delete_resource(
    caller: TenantCaller,
    Path(id): Path<ResourceId>,
) -> Result<Written<()>, ApiError> {
    caller.require("resources.delete")?;
    caller.note_resource(id);
    caller
        .write_response(Reply::new(StatusCode::NO_CONTENT), &(), |scope, ()| {
            Box::pin(scope.delete_resource(id))
        })
        .await
}

/// Share a resource read-only with another active tenant (`resources.share`).
/// Only the owner (or an ancestor) can share; a share's target cannot re-share.
#[utoipa::path(
    post, path = "/v1/resources/{id}/shares", tag = "resources", request_body = NewShareBody,
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 201, body = Share),
        (status = 404, description = "Resource or target tenant not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already shared, target not active, or limit reached (`quota_exceeded`: max_shares)", body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::JsonBody,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn share_resource(
    caller: TenantCaller,
    Path(id): Path<ResourceId>,
    Json(body): Json<NewShareBody>,
) -> Result<Written<Share>, ApiError> {
    caller.require("resources.share")?;
    caller.note_resource(id);
    caller
        .write_response(Reply::new(StatusCode::CREATED), &(), |scope, ()| {
            Box::pin(scope.share_resource(id, body.tenant_id))
        })
        .await
}

/// Shares of a resource the caller owns (`resources.read`).
///
/// The tenants it is shared with (read-only), who shared it and when. A
/// resource only shared with the caller, or another tenant's, answers 404, like
/// a missing one.
#[utoipa::path(
    get, path = "/v1/resources/{id}/shares", tag = "resources", params(("id" = String, Path, format = Uuid), PageQuery),
    responses(
        (status = 200, body = Page<Share>),
        responses::TenantAuth,
        responses::Params,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn list_shares(
    caller: TenantCaller,
    Path(id): Path<ResourceId>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Share>>, ApiError> {
    caller.require("resources.read")?;
    caller.note_resource(id);
    let mut scope = caller.scope().await?;
    let shares = scope.list_shares(id).await?;
    scope.commit().await?;
    Ok(Json(page_by_key(shares, |s| s.tenant_id.to_string(), &q)?))
}

/// List the shares the caller's tenant made. Shares of every resource the
/// caller's tenant and its descendants own
/// (`resources.read`), newest first: what was shared with whom, in one
/// request instead of one per resource.
#[utoipa::path(
    get, path = "/v1/shares", tag = "resources", params(PageQuery),
    responses(
        (status = 200, body = Page<Share>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn list_outgoing_shares(
    caller: TenantCaller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Share>>, ApiError> {
    caller.require("resources.read")?;
    let mut scope = caller.scope().await?;
    let shares = scope.list_outgoing_shares().await?;
    scope.commit().await?;
    Ok(Json(page_by_key(
        shares,
        |s| format!("{}/{}", s.resource_id, s.tenant_id),
        &q,
    )?))
}

/// Revoke a share (`resources.share`); the target loses access at once. With
/// the caller's own tenant as `tenant_id`, the target gives up a resource
/// shared with it (`resources.write`): a tenant cannot refuse what others
/// share with it, and this takes a share it does not want out of its
/// listings, as a revocation would.
#[utoipa::path(
    delete, path = "/v1/resources/{id}/shares/{tenant_id}", tag = "resources",
    params(("id" = String, Path, format = Uuid), ("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Revoked (or declined by its target)"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn unshare_resource(
    caller: TenantCaller,
    Path((id, tenant)): Path<(ResourceId, TenantId)>,
) -> Result<Written<()>, ApiError> {
    caller.note_resource(id);
    if tenant == caller.tenant() {
        // No tenant shares with itself: a share to the caller's tenant is
        // another tenant's resource, which the caller declines.
        caller.require("resources.write")?;
        return caller
            .write_response(Reply::new(StatusCode::NO_CONTENT), &(), |scope, ()| {
                Box::pin(scope.decline_share(id))
            })
            .await;
    }
    caller.require("resources.share")?;
    caller
        .write_response(Reply::new(StatusCode::NO_CONTENT), &(), |scope, ()| {
            Box::pin(scope.unshare_resource(id, tenant))
        })
        .await
}
