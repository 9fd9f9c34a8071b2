//! Tenants: administration with the admin token (create, list, show, change, suspend, activate, delete, purge, move between tiers; a tenant's keys, roles, members, adopted tables and usage) and what a tenant key sees of its own tenant and children.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use tenantry_axum::idempotency::{Reply, Written, IDEMPOTENT_REPLAYED};
use tenantry_db::{
    AdoptedTableUsage, ApiKeyInfo, DbError, Isolation, KeyId, Member, NewTenant, PurgedTenant,
    Role, Tenant, TenantId, TenantSettings, TenantStatus, TenantUpdate, TierMove,
};
use utoipa::ToSchema;

use super::{
    decode_cursor, invalid_cursor,
    keys::{own_key, NewKeyBody, NewKeyResponse, RotateBody},
    keyset, keyset_page, page_by_key, Page, PageQuery,
};
use crate::{
    auth::{AdminCaller, Caller, TenantCaller},
    error::{responses, ApiError, Problem, ProblemCode},
    extract::{Json, OptionalJson, Path, Query},
    state::AppState,
};

/// A new tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "acme"}))]
pub struct NewTenantBody {
    /// Display name, 1–200 characters, not only spaces; no control or invisible
    /// characters, no Latin letter directly next to a Cyrillic or Greek one.
    #[schema(min_length = 1, max_length = 200, pattern = "{name}")]
    pub name: String,
    /// Parent tenant (admin only; a tenant key always creates a child of its own tenant).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent_id: Option<TenantId>,
    /// `shared` (default: pooled tables under RLS) or `schema` (own schema;
    /// admin only: a tenant key asking for it gets 403).
    pub isolation: Option<Isolation>,
    /// Settings: quotas (max_resources, max_storage_bytes), limits with defaults
    /// (max_children, max_descendants, max_api_keys, max_roles, max_members,
    /// max_shares), rate_limit_per_second, rate_limit_burst, metadata. A tenant
    /// key cannot give its child more than its own tenant has (403); limits it
    /// leaves out are capped at its own.
    // Raw until `settings` parses it: a bad value is then 422 naming
    // `settings.<key>`, not 400; and its text, so that `metadata` is kept as
    // written (numbers of any size or precision).
    #[schema(value_type = Option<TenantSettings>)]
    pub settings: Option<Box<serde_json::value::RawValue>>,
}

/// Parses a body's settings once; 422 `validation_failed` naming `settings.<key>` when invalid.
fn settings(raw: Option<&serde_json::value::RawValue>) -> Result<Option<TenantSettings>, ApiError> {
    Ok(raw
        .map(|raw| TenantSettings::parse_text(raw.get()))
        .transpose()?)
}

/// A change to a tenant; absent fields stay as they are. Only `parent_id`
/// takes `null`; the others refuse it (400 `invalid_json`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "acme-eu", "settings": {"max_resources": 10000}}))]
pub struct TenantPatch {
    /// New name, 1–200 characters, not only spaces; no control or invisible
    /// characters, no Latin letter directly next to a Cyrillic or Greek one.
    #[schema(
        value_type = String,
        required = false,
        min_length = 1,
        max_length = 200,
        pattern = "{name}"
    )]
    #[serde(default, deserialize_with = "super::double_option")]
    pub name: Option<Option<String>>,
    /// Replacement settings (validated; unknown keys refused).
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = TenantSettings, required = false)]
    pub settings: Option<Option<Box<serde_json::value::RawValue>>>,
    /// New parent; `null` makes the tenant a root. The tenant itself is refused (422,
    /// field `parent_id`); one of its descendants, which would make a cycle, 409.
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent_id: Option<Option<TenantId>>,
    /// Move to another isolation model (keeps all data).
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Isolation, required = false)]
    pub isolation: Option<Option<Isolation>>,
}

fn path_tenant(id: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(id).map_err(|_| {
        ApiError::new(
            ProblemCode::InvalidPath,
            format!("{id:?} is not a tenant id (uuid)"),
        )
        .with_field("tenant_id")
    })
}

/// Create a tenant. With the admin token: any tenant (root or child). With a
/// tenant key holding `tenants.create`: a child of the key's tenant.
#[utoipa::path(
    post, path = "/v1/tenants", tag = "tenants", request_body = NewTenantBody,
    responses(
        (status = 201, body = Tenant, headers(("Location" = String, description = "Where the new tenant is read: `/v1/tenants/{tenant_id}` with the admin token, `/v1/tenant/children/{tenant_id}` with a tenant's key or a person's token"))),
        (status = 404, description = "Parent not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Limit reached (`quota_exceeded`: max_children or max_descendants)", body = Problem, content_type = "application/problem+json"),
        responses::AnyAuth,
        responses::JsonBody,
    ),
    security(("adminToken" = []), ("apiKey" = []), ("person" = []))
)]
pub async fn create_tenant(
    caller: Caller,
    Json(body): Json<NewTenantBody>,
) -> Result<Response, ApiError> {
    let isolation = body.isolation.unwrap_or_default();
    match caller {
        Caller::Admin(admin) => {
            let new = NewTenant {
                name: body.name,
                parent_id: body.parent_id,
                isolation,
                settings: settings(body.settings.as_deref())?,
            };
            // Under an Idempotency-Key, the operator's: a retry answers the
            // stored response (the tenant as created) without a second tenant.
            Ok(admin
                .admin_write_response(
                    Reply::new(StatusCode::CREATED).located("/v1/tenants/", "tenant_id"),
                    &new,
                    |scope, new| Box::pin(scope.create_tenant(new)),
                )
                .await?
                .into_response())
        }
        Caller::Tenant(caller) => {
            caller.require("tenants.create")?;
            caller.check_child_creation()?;
            if body.parent_id.is_some_and(|p| p != caller.tenant()) {
                return Err(ApiError::new(
                    ProblemCode::Forbidden,
                    "a child can only be created under the tenant this request acts in",
                )
                .with_field("parent_id"));
            }
            let new = (body.name, settings(body.settings.as_deref())?);
            // The child is read back in its creation's transaction
            // (`child`, which sees it before the parent's context does): the
            // answer cannot fail after the child was committed. Under an
            // Idempotency-Key the child as created is stored, and a retry
            // answers it.
            let created = caller
                .write_response(
                    Reply::new(StatusCode::CREATED).located("/v1/tenant/children/", "tenant_id"),
                    &new,
                    |scope, (name, settings)| {
                        Box::pin(async move {
                            let id = scope
                                .create_child_tenant(name, isolation, settings.as_ref())
                                .await?;
                            scope.child(id).await
                        })
                    },
                )
                .await?;
            // Stored by a server of the previous version: the child's id
            // alone, read again as it is now.
            let legacy = match &created {
                Written::Replayed { stored, .. } => stored
                    .body
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<TenantId>(b).ok()),
                Written::Fresh { .. } => None,
            };
            let Some(id) = legacy else {
                return Ok(created.into_response());
            };
            let mut scope = caller.scope().await?;
            let tenant = scope.get_tenant(id).await?;
            scope.commit().await?;
            let mut response = (StatusCode::CREATED, Json(tenant)).into_response();
            response.headers_mut().insert(
                IDEMPOTENT_REPLAYED,
                axum::http::HeaderValue::from_static("true"),
            );
            Ok(response)
        }
    }
}

/// List all tenants (admin), in id order.
///
/// Every tenant, root or child, whatever its status (active, suspended, or
/// deleted until purged); follow `next_cursor` for the next page.
#[utoipa::path(
    get, path = "/v1/tenants", tag = "tenants", params(PageQuery),
    responses(
        (status = 200, body = Page<Tenant>),
        responses::AdminAuth,
        responses::Params,
    ),
    security(("adminToken" = []))
)]
pub async fn list_tenants(
    admin: AdminCaller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Tenant>>, ApiError> {
    let limit = q.limit()?;
    let after = match super::given_cursor(&q.cursor) {
        Some(c) => Some(TenantId::parse(&decode_cursor(c)?).map_err(|_| invalid_cursor())?),
        None => None,
    };
    let mut scope = admin.admin_scope().await?;
    let mut items = scope.list_tenants(after, i64::from(limit) + 1).await?;
    scope.commit().await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items
            .last()
            .map(|t| super::encode_cursor(&t.tenant_id.to_string()))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// Show any tenant (admin).
///
/// A tenant of any status until it is purged; an unknown or purged id is 404.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant_id}", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = Tenant),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn get_tenant(
    admin: AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    let id = path_tenant(&id)?;
    let mut scope = admin.admin_scope().await?;
    let t = scope.get_tenant(id).await?;
    scope.commit().await?;
    Ok(Json(t))
}

/// Change a tenant's name, settings, parent or isolation model (admin).
///
/// Only the fields sent change, in one transaction. `parent_id` re-parents the
/// tenant with its subtree (a cycle is 409); `isolation` moves it to the other
/// tier in the same transaction, holding back its writes meanwhile: large
/// tenants move online with `POST /v1/tenants/{tenant_id}/move`.
#[utoipa::path(
    patch, path = "/v1/tenants/{tenant_id}", tag = "tenants", request_body = TenantPatch,
    params(("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = Tenant),
        (status = 409, description = "Cycle or deleted tenant", body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::JsonBody,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn patch_tenant(
    State(state): State<AppState>,
    admin: AdminCaller,
    Path(id): Path<String>,
    Json(patch): Json<TenantPatch>,
) -> Result<Written<Tenant>, ApiError> {
    let id = path_tenant(&id)?;
    let name = super::not_null("name", patch.name)?;
    let raw_settings = super::not_null("settings", patch.settings)?;
    let isolation = super::not_null("isolation", patch.isolation)?;
    let update = TenantUpdate {
        name,
        settings: settings(raw_settings.as_deref())?,
    };
    let changes = (update, patch.parent_id, isolation);
    let tenant = admin
        .admin_write_response(
            Reply::new(StatusCode::OK),
            &changes,
            |scope, (update, parent, isolation)| {
                Box::pin(async move {
                    let mut tenant = scope.get_tenant(id).await?;
                    if update.name.is_some() || update.settings.is_some() {
                        tenant = scope.update_tenant(id, update).await?;
                    }
                    if let Some(parent) = parent {
                        tenant = scope.set_parent(id, *parent).await?;
                    }
                    if let Some(isolation) = isolation {
                        tenant = scope.set_isolation(id, *isolation).await?;
                    }
                    Ok(tenant)
                })
            },
        )
        .await?;
    state.tenantry.forget_tenant(id);
    Ok(tenant)
}

async fn set_status(
    state: &AppState,
    admin: AdminCaller,
    id: &str,
    status: TenantStatus,
    reply: Reply,
) -> Result<Written<Tenant>, ApiError> {
    let id = path_tenant(id)?;
    let t = admin
        .admin_write_response(reply, &(), |scope, ()| {
            Box::pin(scope.set_status(id, status))
        })
        .await?;
    state.tenantry.forget_tenant(id);
    Ok(t)
}

/// Delete a tenant (admin): its status becomes `deleted` (terminal); data and audit are kept, keys stop working.
///
/// Its keys and its members' tokens are refused at once, and the shares it gave
/// and received are revoked. A tenant with live children is refused (409):
/// delete them first. Its rows stay until it is purged (`POST
/// /v1/tenants/{tenant_id}/purge` once its grace period is over, or `tenantry
/// tenant purge`); a deleted tenant cannot be activated again.
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant_id}", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already deleted, or has live children", body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn delete_tenant(
    State(state): State<AppState>,
    admin: AdminCaller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_status(
        &state,
        admin,
        &id,
        TenantStatus::Deleted,
        Reply::new(StatusCode::NO_CONTENT),
    )
    .await
}

/// Purge a deleted tenant for good (admin). Once its grace period is over
/// (`tenantry.purge_policy`, 30 days by default), every row, its schema and
/// every share of it are removed for good, in one transaction; the purge is
/// recorded in `tenantry.purged_tenants` and the id is never given out again.
/// Export it first (`tenantry tenant export`) to keep a copy. The purge runs
/// under the server's statement timeout: a tenant too large to purge within
/// it gets 503 every time (nothing purged); purge it with `tenantry tenant
/// purge`, which has no such limit.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant_id}/purge", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "Purged: what was removed", body = PurgedTenant),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not deleted, still in its grace period, has child tenants or a tier move under way", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Nothing purged: its schema was in use by a query over a whole table family (try again), or the purge did not finish within the server's statement timeout (a very large tenant: purge it with `tenantry tenant purge`)", body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn purge_tenant(
    State(state): State<AppState>,
    admin: AdminCaller,
    Path(id): Path<String>,
) -> Result<Written<PurgedTenant>, ApiError> {
    let id = path_tenant(&id)?;
    // The database's own words when it could not purge: the operator is
    // told whether to wait (the schema in use) or to use the CLI (the
    // statement timeout); the API's usual 503 keeps them to the log.
    let said: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let purged = admin
        .admin_write_response(Reply::new(StatusCode::OK), &said, |scope, said| {
            Box::pin(async move {
                let purged = scope.purge_tenant(id).await;
                if let Err(DbError::Unavailable(why)) = &purged {
                    *said.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                }
                purged
            })
        })
        .await
        .map_err(|e| {
            // A tenant's share of the pool or a collision keep their words
            // (and count); an outage and a statement timeout get the purge's.
            if !matches!(
                e.unavailable_cause(),
                Some("database" | "statement_timeout")
            ) {
                return e;
            }
            // Not met in the purge itself (the commit, the connection):
            // the API's usual words.
            let (why, known) = match said.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(why) => (why, true),
                None => (e.problem().detail.clone(), false),
            };
            let mut detail = format!("the purge was rolled back, nothing was purged: {why}");
            // The server's statement timeout bounds every request; the CLI's
            // sessions have none. Said, since retrying alone cannot help a
            // tenant too large to purge in time.
            if !known
                || why.contains("statement timeout")
                || why.starts_with("no reply from the database")
            {
                detail.push_str(&format!(
                    "; a tenant too large to purge within the server's statement timeout is purged \
                     with `tenantry tenant purge {id}`, which has no such limit"
                ));
            }
            e.with_detail(detail)
        })?;
    state.tenantry.forget_tenant(id);
    // The hourly metrics still count its requests until refreshed; the purge
    // itself is committed either way, and the periodic refresh catches up.
    let refreshed = async {
        let mut scope = admin.admin_scope().await?;
        scope.refresh_metrics().await?;
        scope.commit().await?;
        Ok::<_, ApiError>(())
    };
    if refreshed.await.is_err() {
        tracing::warn!(tenant = %id, "refreshing the metrics after a purge failed; the periodic refresh will");
    }
    Ok(purged)
}

/// Suspend a tenant (admin): its keys get 403 on every tenant route; data is kept.
///
/// Its members' tokens get 403 `tenant_suspended` in it too; the admin routes
/// still reach it. `POST /v1/tenants/{tenant_id}/activate` undoes it.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant_id}/suspend", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = Tenant),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn suspend_tenant(
    State(state): State<AppState>,
    admin: AdminCaller,
    Path(id): Path<String>,
) -> Result<Written<Tenant>, ApiError> {
    set_status(
        &state,
        admin,
        &id,
        TenantStatus::Suspended,
        Reply::new(StatusCode::OK),
    )
    .await
}

/// Where to move a tenant, and in what batches.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierMoveRequest {
    /// The tier to move to: `schema` (its own schema) or `shared` (the pooled tables).
    pub to: Isolation,
    /// Rows copied per transaction (default 10,000).
    #[schema(minimum = 1, maximum = 100000)]
    #[serde(default, deserialize_with = "super::whole_number")]
    pub batch_rows: Option<u64>,
}

/// Move a tenant to the other tier online (admin): its rows are copied in
/// batches while it keeps working, then a short cut-over holds back its own
/// writes only. Answers when the move is done; a move interrupted (server
/// stopped, connection lost) resumes when asked again, or is given up with
/// `DELETE /v1/tenants/{tenant_id}/move`.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant_id}/move", tag = "tenants", request_body = TierMoveRequest,
    params(("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = TierMove),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another move of this tenant is under way, this one was given up (DELETE .../move) while it ran, or the tenant is deleted", body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::JsonBody,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn move_tenant(
    State(state): State<AppState>,
    admin: AdminCaller,
    Path(id): Path<String>,
    Json(body): Json<TierMoveRequest>,
) -> Result<Json<TierMove>, ApiError> {
    let id = path_tenant(&id)?;
    admin.refuse_idempotency_key()?;
    let batch = body.batch_rows.unwrap_or(10_000);
    if !(1..=100_000).contains(&batch) {
        return Err(ApiError::invalid(
            "batch_rows",
            "batch_rows must be 1 to 100000",
        ));
    }
    let moved = admin.move_tenant(id, body.to, batch as i32).await?;
    state.tenantry.forget_tenant(id);
    Ok(Json(moved))
}

/// Give up a tenant's move under way (admin): it stays in its tier with every row.
///
/// A tenant with no move under way is 404. The move can be asked for again
/// later (`POST /v1/tenants/{tenant_id}/move`).
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant_id}/move", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "The move was given up"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn abort_tenant_move(
    admin: AdminCaller,
    Path(id): Path<String>,
) -> Result<Written<()>, ApiError> {
    let id = path_tenant(&id)?;
    admin
        .admin_write_response(Reply::new(StatusCode::NO_CONTENT), &(), |scope, ()| {
            Box::pin(async move {
                if scope.tier_move_abort(id).await? {
                    Ok(())
                } else {
                    Err(DbError::NotFound(format!(
                        "tenant {id} has no move under way"
                    )))
                }
            })
        })
        .await
}

/// Re-activate a suspended tenant (admin).
///
/// Its keys and members work again at once. A deleted tenant stays deleted
/// (409).
#[utoipa::path(
    post, path = "/v1/tenants/{tenant_id}/activate", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = Tenant),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn activate_tenant(
    State(state): State<AppState>,
    admin: AdminCaller,
    Path(id): Path<String>,
) -> Result<Written<Tenant>, ApiError> {
    set_status(
        &state,
        admin,
        &id,
        TenantStatus::Active,
        Reply::new(StatusCode::OK),
    )
    .await
}

/// Create a key for a tenant (admin). The key is in the response once and never again.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant_id}/keys", tag = "tenants", request_body = NewKeyBody,
    params(("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 201, body = NewKeyResponse),
        (status = 409, description = "Limit reached (`quota_exceeded`: max_api_keys)", body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::JsonBody,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn create_tenant_key(
    admin: AdminCaller,
    Path(id): Path<String>,
    Json(body): Json<NewKeyBody>,
) -> Result<Written<NewKeyResponse>, ApiError> {
    let id = path_tenant(&id)?;
    admin
        .tenant_write_response(
            id,
            super::keys::SHOWN_ONCE,
            &body.options()?,
            |scope, options| {
                Box::pin(async move { Ok(scope.create_api_key(options).await?.into()) })
            },
        )
        .await
}

fn path_key(id: &str) -> Result<KeyId, ApiError> {
    KeyId::parse(id).map_err(|_| {
        ApiError::new(
            ProblemCode::InvalidPath,
            format!("{id:?} is not a key id (uuid)"),
        )
        .with_field("key_id")
    })
}

/// A tenant's API keys (admin), newest first, revoked and expired ones
/// included. Secrets are never listed. A descendant's keys are listed under
/// the descendant.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant_id}/keys", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid), PageQuery),
    responses(
        (status = 200, body = Page<ApiKeyInfo>),
        responses::AdminAuth,
        responses::Params,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn list_tenant_keys(
    admin: AdminCaller,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<ApiKeyInfo>>, ApiError> {
    let id = path_tenant(&id)?;
    let window = keyset(&q)?;
    // The scope's tenant's keys only (api_keys_page reads them by its id).
    let mut scope = admin.tenant_scope(id).await?;
    let keys = scope
        .api_keys_page(window.after().copied(), window.fetch())
        .await?;
    scope.commit().await?;
    Ok(Json(keyset_page(&window, keys, |k| {
        (k.created_at, k.key_id)
    })))
}

/// Revoke one of a tenant's keys (admin), audited as `admin`; it is refused at
/// once. A key of another tenant is not found.
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant_id}/keys/{key_id}", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid), ("key_id" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn revoke_tenant_key(
    admin: AdminCaller,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Written<()>, ApiError> {
    let id = path_tenant(&id)?;
    let key_id = path_key(&key_id)?;
    let revoked = admin
        .tenant_write_response(id, Reply::new(StatusCode::NO_CONTENT), &(), |scope, ()| {
            Box::pin(async move {
                own_key(scope, key_id, id).await?;
                scope.revoke_api_key(key_id).await
            })
        })
        .await?;
    admin.key_cache().forget_key(key_id);
    Ok(revoked)
}

/// Rotate one of a tenant's keys (admin), audited as `admin`: the successor is
/// shown once; the old key keeps working for the grace period, then expires.
///
/// The successor has the old key's role, member, scopes, expiry and
/// addresses. A revoked, expired or already rotated key is 409; a key of
/// another tenant is 404.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant_id}/keys/{key_id}/rotate", tag = "tenants",
    request_body(content = Option<RotateBody>),
    params(("tenant_id" = String, Path, format = Uuid), ("key_id" = String, Path, format = Uuid)),
    responses(
        (status = 201, body = NewKeyResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Revoked, expired or already rotated", body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::JsonBody,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn rotate_tenant_key(
    admin: AdminCaller,
    Path((id, key_id)): Path<(String, String)>,
    body: OptionalJson<RotateBody>,
) -> Result<Written<NewKeyResponse>, ApiError> {
    let id = path_tenant(&id)?;
    let key_id = path_key(&key_id)?;
    let grace = body.0.unwrap_or_default().grace()?;
    let new = admin
        .tenant_write_response(id, super::keys::SHOWN_ONCE, &(), |scope, ()| {
            Box::pin(async move {
                own_key(scope, key_id, id).await?;
                Ok(scope.rotate_api_key(key_id, grace).await?.into())
            })
        })
        .await?;
    admin.key_cache().forget_key(key_id);
    Ok(new)
}

/// A tenant's roles with their permissions (admin).
///
/// As the tenant's own `GET /v1/roles` lists them, in role id order.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant_id}/roles", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid), PageQuery),
    responses(
        (status = 200, body = Page<Role>),
        responses::AdminAuth,
        responses::Params,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn list_tenant_roles(
    admin: AdminCaller,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Role>>, ApiError> {
    let id = path_tenant(&id)?;
    let mut scope = admin.tenant_scope(id).await?;
    let roles = scope.list_roles().await?;
    scope.commit().await?;
    Ok(Json(page_by_key(roles, |r| r.role_id.to_string(), &q)?))
}

/// A tenant's members with their roles (admin).
///
/// Active and pending members, oldest first, as the tenant's own `GET
/// /v1/members` lists them.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant_id}/members", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid), PageQuery),
    responses(
        (status = 200, body = Page<Member>),
        responses::AdminAuth,
        responses::Params,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn list_tenant_members(
    admin: AdminCaller,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Member>>, ApiError> {
    let id = path_tenant(&id)?;
    let window = keyset(&q)?;
    let mut scope = admin.tenant_scope(id).await?;
    let members = scope
        .members_page(window.after().copied(), window.fetch())
        .await?;
    scope.commit().await?;
    Ok(Json(keyset_page(&window, members, |m| {
        (m.created_at, m.user_id)
    })))
}

/// A tenant's rows in each adopted table (admin). The adopted tables with a
/// tenant's own row count in each: counted
/// in the tenant's context under its policies, by each table's tenant_id
/// index (the cost grows with that tenant's rows).
#[utoipa::path(
    get, path = "/v1/tenants/{tenant_id}/tables", operation_id = "list_tenant_tables", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = Vec<AdoptedTableUsage>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn tenant_tables(
    admin: AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Vec<AdoptedTableUsage>>, ApiError> {
    let id = path_tenant(&id)?;
    let mut scope = admin.tenant_scope(id).await?;
    let tables = scope.adopted_tables().await?;
    scope.commit().await?;
    Ok(Json(tables))
}

/// Usage of a tenant and its descendants.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantUsage {
    /// `tenant_resource_usage` rows (the tenant and its descendants).
    pub resources: Vec<tenantry_db::ResourceUsage>,
    /// Hourly rows of the last 30 days: `tenant_metrics` (requests, errors,
    /// p95 latency) and `storage_samples` (storage).
    pub metrics: Vec<tenantry_db::MetricsRow>,
}

/// Usage of any tenant (admin): resource usage and hourly metrics with storage.
///
/// What `GET /v1/usage/resources` and `GET /v1/usage/metrics` answer the
/// tenant, in one answer: its own figures and its descendants' (flagged).
#[utoipa::path(
    get, path = "/v1/tenants/{tenant_id}/usage", operation_id = "get_tenant_usage", tag = "tenants",
    params(("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = TenantUsage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        responses::AdminAuth,
        responses::NotFound,
    ),
    security(("adminToken" = []))
)]
pub async fn tenant_usage(
    admin: AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<TenantUsage>, ApiError> {
    let id = path_tenant(&id)?;
    let mut scope = admin.tenant_scope(id).await?;
    let resources = scope.resource_usage().await?;
    let metrics = scope.metrics(None, None).await?;
    scope.commit().await?;
    Ok(Json(TenantUsage { resources, metrics }))
}

/// The key's own tenant (`tenant.read`).
///
/// The tenant the request acts in (a key's own, or the `X-Tenant-Id` a person's
/// token names), with its status, parent, settings and isolation model.
#[utoipa::path(
    get, path = "/v1/tenant", tag = "tenant",
    responses(
        (status = 200, body = Tenant),
        responses::TenantAuth,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn current_tenant(caller: TenantCaller) -> Result<Json<Tenant>, ApiError> {
    caller.require("tenant.read")?;
    let mut scope = caller.scope().await?;
    let t = scope.current_tenant().await?;
    scope.commit().await?;
    Ok(Json(t))
}

/// One direct child of the key's tenant (`tenant.read`): where a child a
/// tenant key created is read (its `Location`). Any other tenant, a
/// grandchild included, answers as a missing id.
#[utoipa::path(
    get, path = "/v1/tenant/children/{tenant_id}", tag = "tenant", operation_id = "get_child",
    params(("tenant_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = Tenant),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn child(caller: TenantCaller, Path(id): Path<String>) -> Result<Json<Tenant>, ApiError> {
    caller.require("tenant.read")?;
    let id = path_tenant(&id)?;
    let mut scope = caller.scope().await?;
    let t = scope.child(id).await?;
    scope.commit().await?;
    Ok(Json(t))
}

/// Direct children of the key's tenant (`tenant.read`).
///
/// Oldest first, whatever their status; a grandchild is listed under its own
/// parent.
#[utoipa::path(
    get, path = "/v1/tenant/children", tag = "tenant", params(PageQuery), operation_id = "list_children",
    responses(
        (status = 200, body = Page<Tenant>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn children(
    caller: TenantCaller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Tenant>>, ApiError> {
    caller.require("tenant.read")?;
    let window = keyset(&q)?;
    let mut scope = caller.scope().await?;
    let children = scope
        .children_page(window.after().copied(), window.fetch())
        .await?;
    scope.commit().await?;
    Ok(Json(keyset_page(&window, children, |t| {
        (t.created_at, t.tenant_id)
    })))
}
