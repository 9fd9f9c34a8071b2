//! Members, roles and permissions of the caller's tenant: list and add members, create roles, grant and revoke catalogue permissions, assign roles. A key can only grant what it holds (the library enforces it: the scope carries the key's permissions).

use axum::http::StatusCode;
use serde::Deserialize;
use tenantry_axum::idempotency::{Reply, Written};
use tenantry_db::{Member, NewMember, Permission, Role, RoleId, UserId};
use utoipa::ToSchema;

use super::{keyset, keyset_page, page_by_key, Page, PageQuery};
use crate::{
    auth::TenantCaller,
    error::{responses, ApiError, Problem},
    extract::{Json, Path, Query},
};

/// A new member.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "bob@acme.test"}))]
pub struct NewMemberBody {
    /// The person's global id (from your identity provider): the member is then
    /// `pending` (the person neither sees nor acts in the tenant) until they
    /// accept an invitation naming them. Generated when absent (a member
    /// record for roles and keys that no person signs in as).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub user_id: Option<UserId>,
    /// Email, unique within the tenant (case-insensitive after Unicode NFC), at most
    /// 320 characters; no control or invisible characters, and no Latin letter
    /// directly next to a Cyrillic or Greek one (look-alikes).
    #[schema(max_length = 320, pattern = "{email}")]
    pub email: String,
    /// Display name (≤ 200 characters; no control or invisible characters, no Latin
    /// letter directly next to a Cyrillic or Greek one).
    #[schema(max_length = 200, pattern = "{display_name}")]
    pub display_name: Option<String>,
}

/// A new role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "viewer"}))]
pub struct NewRoleBody {
    /// Name, unique within the tenant after Unicode NFC and trimming, 1–100
    /// characters, not only white space; no control or invisible characters, no
    /// Latin letter directly next to a Cyrillic or Greek one (look-alikes).
    #[schema(min_length = 1, max_length = 100, pattern = "{name}")]
    pub name: String,
    /// Free text (≤ 500 characters).
    #[schema(max_length = 500, pattern = "{description}")]
    pub description: Option<String>,
}

/// Members of the caller's tenant (`members.read`).
///
/// Active and pending members (a pending one waits for the person to accept an
/// invitation), each with their roles and whether they own the tenant, oldest
/// first.
#[utoipa::path(
    get, path = "/v1/members", tag = "access", params(PageQuery),
    responses(
        (status = 200, body = Page<Member>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn list_members(
    caller: TenantCaller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Member>>, ApiError> {
    caller.require("members.read")?;
    let window = keyset(&q)?;
    let mut scope = caller.scope().await?;
    let members = scope
        .members_page(window.after().copied(), window.fetch())
        .await?;
    scope.commit().await?;
    Ok(Json(keyset_page(&window, members, |m| {
        (m.created_at, m.user_id)
    })))
}

/// Add a member to the caller's tenant (`members.write`). A member named by
/// `user_id` is pending until that person accepts an invitation naming them
/// (`POST /v1/invitations` with the same `user_id`): no tenant makes someone a
/// member, or its owner, without their consent.
#[utoipa::path(
    post, path = "/v1/members", tag = "access", request_body = NewMemberBody,
    responses(
        (status = 201, body = Member),
        (status = 409, description = "Email or user already a member, or limit reached (`quota_exceeded`: max_members)", body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::JsonBody,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn add_member(
    caller: TenantCaller,
    Json(body): Json<NewMemberBody>,
) -> Result<Written<Member>, ApiError> {
    caller.require("members.write")?;
    let new = NewMember {
        user_id: body.user_id,
        email: body.email,
        display_name: body.display_name,
    };
    caller
        .write_response(Reply::new(StatusCode::CREATED), &new, |scope, new| {
            Box::pin(scope.add_member(new))
        })
        .await
}

/// Assign a role to a member, both of the caller's tenant (`members.write`). A
/// key can only assign a role whose permissions it holds.
#[utoipa::path(
    put, path = "/v1/members/{user_id}/roles/{role_id}", tag = "access",
    params(("user_id" = String, Path, format = Uuid), ("role_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = Member),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn assign_role(
    caller: TenantCaller,
    Path((user, role)): Path<(UserId, RoleId)>,
) -> Result<Written<Member>, ApiError> {
    caller.require("members.write")?;
    let member = caller
        .write_response(Reply::new(StatusCode::OK), &(), |scope, ()| {
            Box::pin(scope.assign_role(user, role))
        })
        .await?;
    caller.forget_tenant(caller.tenant());
    Ok(member)
}

/// Roles of the caller's tenant with their permissions (`roles.read`).
///
/// Each role with its description and the catalogue permissions granted to it,
/// in role id order.
#[utoipa::path(
    get, path = "/v1/roles", tag = "access", params(PageQuery),
    responses(
        (status = 200, body = Page<Role>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn list_roles(
    caller: TenantCaller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Role>>, ApiError> {
    caller.require("roles.read")?;
    let mut scope = caller.scope().await?;
    let roles = scope.list_roles().await?;
    scope.commit().await?;
    Ok(Json(page_by_key(roles, |r| r.role_id.to_string(), &q)?))
}

/// Create a role in the caller's tenant (`roles.write`).
///
/// The role starts without permissions: grant them one by one with `PUT
/// /v1/roles/{role_id}/permissions/{permission}`, then assign the role to
/// members or bind keys to it. Role names are unique within a tenant (409
/// otherwise).
#[utoipa::path(
    post, path = "/v1/roles", tag = "access", request_body = NewRoleBody,
    responses(
        (status = 201, body = Role),
        (status = 409, description = "Name taken, or limit reached (`quota_exceeded`: max_roles)", body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::JsonBody,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn create_role(
    caller: TenantCaller,
    Json(body): Json<NewRoleBody>,
) -> Result<Written<Role>, ApiError> {
    caller.require("roles.write")?;
    let description = body.description.unwrap_or_default();
    caller
        .write_response(
            Reply::new(StatusCode::CREATED),
            &(body.name, description),
            |scope, (name, description)| Box::pin(scope.create_role(name, description)),
        )
        .await
}

/// Grant a catalogue permission to a role of the caller's tenant (`roles.write`;
/// the key must hold the permission itself).
///
/// Idempotent: granting a permission the role holds answers the role
/// unchanged. Members and keys holding the role get it at once (other
/// servers on the database within a second).
#[utoipa::path(
    put, path = "/v1/roles/{role_id}/permissions/{permission}", tag = "access",
    params(("role_id" = String, Path, format = Uuid), ("permission" = String, Path, example = "resources.read")),
    responses(
        (status = 200, body = Role),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Role or permission not found", body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn grant_permission(
    caller: TenantCaller,
    Path((role, permission)): Path<(RoleId, String)>,
) -> Result<Written<Role>, ApiError> {
    caller.require("roles.write")?;
    let r = caller
        .write_response(
            Reply::new(StatusCode::OK),
            permission.as_str(),
            |scope, permission| Box::pin(scope.grant_permission(role, permission)),
        )
        .await?;
    caller.forget_tenant(caller.tenant());
    Ok(r)
}

/// Remove a permission from a role of the caller's tenant (`roles.write`).
///
/// Idempotent: removing a permission the role lacks answers the role
/// unchanged. Members and keys holding the role lose it at once (other
/// servers on the database within a second).
#[utoipa::path(
    delete, path = "/v1/roles/{role_id}/permissions/{permission}", tag = "access",
    params(("role_id" = String, Path, format = Uuid), ("permission" = String, Path, example = "resources.read")),
    responses(
        (status = 200, body = Role),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Role or permission not found", body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn revoke_permission(
    caller: TenantCaller,
    Path((role, permission)): Path<(RoleId, String)>,
) -> Result<Written<Role>, ApiError> {
    caller.require("roles.write")?;
    let r = caller
        .write_response(
            Reply::new(StatusCode::OK),
            permission.as_str(),
            |scope, permission| Box::pin(scope.revoke_permission(role, permission)),
        )
        .await?;
    caller.forget_tenant(caller.tenant());
    Ok(r)
}

/// The global permission catalogue (`roles.read`).
///
/// Every permission a role, key or member can hold, with what it allows: the
/// same catalogue for every tenant, in name order.
#[utoipa::path(
    get, path = "/v1/permissions", tag = "access", params(PageQuery),
    responses(
        (status = 200, body = Page<Permission>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn list_permissions(
    caller: TenantCaller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Permission>>, ApiError> {
    caller.require("roles.read")?;
    let mut scope = caller.scope().await?;
    let perms = scope.permissions().await?;
    scope.commit().await?;
    Ok(Json(page_by_key(perms, |p| p.name.clone(), &q)?))
}
