//! API keys of the caller's tenant: list, create (shown once), revoke, rotate with a grace period. A key can never mint or rotate a key with permissions it does not hold itself (enforced by the library through the scope).

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenantry_axum::idempotency::{Reply, Written};
use tenantry_db::{
    ApiKeyInfo, DbError, KeyId, NewApiKey, NewKeyOptions, RoleId, TenantId, TenantScope, UserId,
};
use utoipa::ToSchema;

use super::{keyset, keyset_page, Page, PageQuery};
use crate::{
    auth::TenantCaller,
    error::{responses, ApiError, Problem},
    extract::{Json, Path, Query},
};

/// A new key.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"description": "acme backend"}))]
pub struct NewKeyBody {
    /// Free text shown in listings (≤ 500 characters).
    #[schema(max_length = 500, pattern = "{description}")]
    pub description: Option<String>,
    /// Bind to a role of the tenant: the key has exactly that role's permissions.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub role_id: Option<RoleId>,
    /// Bind to a member: the key acts as that member (and has the member's roles'
    /// permissions when no role is given).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub user_id: Option<UserId>,
    /// When the key stops working. A key made by a key that expires expires
    /// no later (left out: when that key does).
    #[serde(default, deserialize_with = "super::date_time")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Limit the key to these permissions (a subset of what its role, member
    /// or tenant gives; each one held by the caller too).
    #[schema(max_items = 100)]
    pub scopes: Option<Vec<String>>,
    /// Limit the key to these source addresses (CIDR such as `203.0.113.0/24`,
    /// with no bits set past the prefix, or single addresses); requests from
    /// elsewhere are refused (403). A key made by a key limited to addresses
    /// is limited to addresses within them (left out: the same ones).
    #[schema(min_items = 1, max_items = 100)]
    pub allowed_cidrs: Option<Vec<String>>,
}

impl NewKeyBody {
    /// The library's options, validated.
    pub fn options(&self) -> Result<NewKeyOptions, ApiError> {
        let description = self.description.clone().unwrap_or_default();
        super::calendar_time("expires_at", self.expires_at)?;
        if self.expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(ApiError::invalid(
                "expires_at",
                "expires_at must be in the future",
            ));
        }
        if let Some(scopes) = &self.scopes {
            if scopes.len() > 100 {
                return Err(ApiError::invalid(
                    "scopes",
                    "scopes are at most 100 permission names such as resources.read",
                ));
            }
            // Which one, and what a name looks like (a new user's review:
            // `["nope"]` was told of the count).
            if let Some(bad) = scopes.iter().find(|s| {
                let mut parts = s.split('.');
                let ok = |p: Option<&str>| {
                    p.is_some_and(|p| {
                        !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
                };
                !(ok(parts.next()) && ok(parts.next()) && parts.next().is_none())
            }) {
                let shown: String = bad.chars().take(64).collect();
                return Err(ApiError::invalid(
                    "scopes",
                    format!(
                        "{shown:?} is no permission name: a name is two lowercase words joined by a dot, such as resources.read"
                    ),
                ));
            }
        }
        if let Some(cidrs) = &self.allowed_cidrs {
            if cidrs.is_empty()
                || cidrs.len() > 100
                || cidrs
                    .iter()
                    .any(|c| tenantry_axum::auth::parse_network(c).is_none())
            {
                return Err(ApiError::invalid(
                    "allowed_cidrs",
                    "allowed_cidrs is 1 to 100 addresses or networks such as 203.0.113.0/24",
                ));
            }
            // PostgreSQL's cidr (and every firewall) refuses a network with
            // address bits set past its prefix: say which, and how to write it.
            if let Some((given, net)) = cidrs.iter().find_map(|c| {
                tenantry_axum::auth::parse_network(c)
                    .filter(|n| n.trunc() != *n)
                    .map(|n| (c, n.trunc()))
            }) {
                return Err(ApiError::invalid(
                    "allowed_cidrs",
                    format!("{given} has address bits set past its prefix: write {net}"),
                ));
            }
        }
        Ok(NewKeyOptions {
            description,
            user_id: self.user_id,
            role_id: self.role_id,
            expires_at: self.expires_at,
            tenant_id: None,
            scopes: self.scopes.clone(),
            allowed_cidrs: self.allowed_cidrs.clone(),
        })
    }
}

/// A key just created: `key` is shown this once; store it now.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewKeyResponse {
    /// The key (`tk_<prefix>_<secret>`). It is not stored and cannot be shown again.
    pub key: String,
    /// The key's stored description.
    pub key_info: ApiKeyInfo,
}

impl From<NewApiKey> for NewKeyResponse {
    fn from(k: NewApiKey) -> Self {
        Self {
            key: k.secret.expose().to_owned(),
            key_info: k.info,
        }
    }
}

/// Rotation options.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Seconds the old key keeps working (default 86400; 0 ends it at once; at most 30 days).
    #[schema(maximum = 2592000)]
    #[serde(default, deserialize_with = "super::whole_number")]
    pub grace_seconds: Option<u64>,
}

const MAX_GRACE: u64 = 30 * 24 * 3600;

impl RotateBody {
    /// How long the old key keeps working: one day unless given, at most 30 days.
    pub fn grace(&self) -> Result<Duration, ApiError> {
        let grace = self.grace_seconds.unwrap_or(24 * 3600);
        if grace > MAX_GRACE {
            return Err(ApiError::invalid(
                "grace_seconds",
                format!("grace_seconds must be at most {MAX_GRACE}"),
            ));
        }
        Ok(Duration::from_secs(grace))
    }
}

/// A new key's answer: the key is shown once and stored nowhere, so a replay
/// under the same `Idempotency-Key` answers `key: ""` (the key exists: revoke
/// it by `key_info.key_id` if its first answer was lost).
pub const SHOWN_ONCE: Reply = Reply::new(StatusCode::CREATED).hiding("key");

/// Not found unless `key_id` is a key of `tenant` itself (a descendant's key
/// is not found here), worded like the library's not-found for a missing key:
/// no oracle.
pub(crate) async fn own_key(
    scope: &mut TenantScope,
    key_id: KeyId,
    tenant: TenantId,
) -> Result<(), DbError> {
    let key = scope.get_api_key(key_id).await?;
    if key.tenant_id == tenant {
        Ok(())
    } else {
        Err(DbError::NotFound(format!("api key {key_id} not found")))
    }
}

/// Keys of the caller's tenant, newest first (`keys.read`).
///
/// Revoked, expired and rotated keys are listed too, with their role, member,
/// scopes, expiry and addresses. Secrets are never listed: a key's secret is
/// in the answer that created it only. A descendant's keys are not here.
#[utoipa::path(
    get, path = "/v1/keys", tag = "keys", params(PageQuery),
    responses(
        (status = 200, body = Page<ApiKeyInfo>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn list_keys(
    caller: TenantCaller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<ApiKeyInfo>>, ApiError> {
    caller.require("keys.read")?;
    let window = keyset(&q)?;
    let mut scope = caller.scope().await?;
    let keys = scope
        .api_keys_page(window.after().copied(), window.fetch())
        .await?;
    scope.commit().await?;
    Ok(Json(keyset_page(&window, keys, |k| {
        (k.created_at, k.key_id)
    })))
}

/// Create a key for the caller's tenant (`keys.write`); shown once.
///
/// The secret is in `key` in this answer only (a replay under the same
/// Idempotency-Key answers it empty); it is stored as a hash. A key never
/// reaches further than the caller: its role, member, scopes, expiry and
/// addresses are bounded by the caller's own, and a permission the caller lacks
/// is refused (403).
#[utoipa::path(
    post, path = "/v1/keys", tag = "keys", request_body = NewKeyBody,
    responses(
        (status = 201, body = NewKeyResponse),
        (status = 404, description = "Role or member not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Limit reached (`quota_exceeded`: max_api_keys)", body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::JsonBody,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn create_key(
    caller: TenantCaller,
    Json(body): Json<NewKeyBody>,
) -> Result<Written<NewKeyResponse>, ApiError> {
    caller.require("keys.write")?;
    let options = body.options()?;
    caller
        .write_response(SHOWN_ONCE, &options, |scope, options| {
            Box::pin(async move { Ok(scope.create_api_key(options).await?.into()) })
        })
        .await
}

/// Revoke a key of the caller's tenant (`keys.write`); it is refused at once.
///
/// Idempotent: revoking a revoked key answers 204 again. A descendant's key, or
/// any other tenant's, is 404 here, like a missing one; a caller cannot revoke
/// a key holding permissions it does not hold itself (403).
#[utoipa::path(
    delete, path = "/v1/keys/{key_id}", tag = "keys",
    params(("key_id" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn revoke_key(
    caller: TenantCaller,
    Path(key_id): Path<KeyId>,
) -> Result<Written<()>, ApiError> {
    caller.require("keys.write")?;
    let tenant = caller.tenant();
    let revoked = caller
        .write_response(Reply::new(StatusCode::NO_CONTENT), &(), |scope, ()| {
            Box::pin(async move {
                // Only keys of the caller's own tenant: a descendant's key is not found here.
                own_key(scope, key_id, tenant).await?;
                scope.revoke_api_key(key_id).await
            })
        })
        .await?;
    caller.key_cache().forget_key(key_id);
    Ok(revoked)
}

/// Rotate a key (`keys.write`). A successor key is shown once, with the old
/// one's role, scopes, expiry and addresses; the old one keeps working for the
/// grace period, then expires. A key rotates only keys that reach no further
/// than itself (expire no later, admit no address outside its own): 403
/// `permission_denied` otherwise.
#[utoipa::path(
    post, path = "/v1/keys/{key_id}/rotate", tag = "keys", request_body(content = Option<RotateBody>),
    params(("key_id" = String, Path, format = Uuid)),
    responses(
        (status = 201, body = NewKeyResponse),
        (status = 409, description = "Revoked, expired or already rotated", body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::JsonBody,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn rotate_key(
    caller: TenantCaller,
    Path(key_id): Path<KeyId>,
    body: crate::extract::OptionalJson<RotateBody>,
) -> Result<Written<NewKeyResponse>, ApiError> {
    caller.require("keys.write")?;
    let grace = body.0.unwrap_or_default().grace()?;
    let tenant = caller.tenant();
    let new = caller
        .write_response(SHOWN_ONCE, &(), |scope, ()| {
            Box::pin(async move {
                own_key(scope, key_id, tenant).await?;
                let new = scope.rotate_api_key(key_id, grace).await?;
                Ok(new.into())
            })
        })
        .await?;
    caller.key_cache().forget_key(key_id);
    Ok(new)
}
