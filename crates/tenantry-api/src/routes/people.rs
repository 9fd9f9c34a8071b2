//! People: a signed-in person's tenants and accepting an invitation (a bearer JWT of the identity provider, no tenant yet), and inside a tenant inviting members, listing and revoking invitations, replacing a member's roles, removing members and handing ownership over. The database enforces who may (04_access.sql); handlers check the permission first for a clear 403.

use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tenantry_axum::{
    idempotency::{Reply, Written},
    Person,
};
use tenantry_db::{
    DbError, Impersonation, ImpersonationId, Invitation, InvitationId, IssuedImpersonation,
    IssuedInvitation, Member, MyTenant, NewInvitation, RoleId, TenantId, TenantScope, UserId,
};
use utoipa::{IntoParams, ToSchema};

use super::{keyset, keyset_page, page_by_key, Page, PageQuery};
use crate::{
    auth::{Caller, TenantCaller},
    error::{responses, ApiError, Problem},
    extract::{Json, Path, Query},
};

/// The tenants the signed-in person is a member of (a person's token; no tenant needed).
///
/// Active and suspended tenants where the person is an active member, with
/// their roles and whether they own it; pending memberships (an invitation not
/// yet accepted) are not listed. Send one of these ids as `X-Tenant-Id` to act
/// in that tenant.
#[utoipa::path(
    get, path = "/v1/me/tenants", tag = "people", params(PageQuery),
    responses(
        (status = 200, body = Page<MyTenant>),
        responses::PersonAuth,
        responses::Params,
    ),
    security(("person" = []))
)]
pub async fn my_tenants(
    person: Person,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<MyTenant>>, ApiError> {
    let tenants = person.my_tenants().await?;
    Ok(Json(page_by_key(tenants, |t| t.tenant_id.to_string(), &q)?))
}

/// A tenant of the signed-in person's own.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Alice's workspace"}))]
pub struct NewOwnTenantBody {
    /// Display name, 1–200 characters, not only spaces; no control or invisible
    /// characters, no Latin letter directly next to a Cyrillic or Greek one.
    #[schema(min_length = 1, max_length = 200, pattern = "{name}")]
    pub name: String,
}

/// Create a tenant of your own (a person's token; no tenant needed).
///
/// A pooled root tenant whose first member, and so owner, is the signed-in
/// person, with the email their identity provider verified: a team's
/// sign-up ("create your workspace") without its backend holding the admin
/// token. The operator decides whether people may (`tenantry.signup_policy`:
/// how many tenants a person may create, 0 by default; those deleted since
/// no longer count, those handed to another owner still do): 403 while
/// they may not, 409 `quota_exceeded` once the person has created as many. Send the new id as
/// `X-Tenant-Id` to act in it, with every permission. Send an
/// `Idempotency-Key` to retry safely: a retry after a lost answer gets the
/// first answer back (`Idempotent-Replayed: true`) instead of a second
/// tenant; the key is this person's, whoever else uses the same text.
#[utoipa::path(
    post, path = "/v1/me/tenants", tag = "people", request_body = NewOwnTenantBody,
    responses(
        (status = 201, body = MyTenant),
        (status = 409, description = "`quota_exceeded`: the person has created as many tenants (not deleted) as a person may", body = Problem, content_type = "application/problem+json"),
        responses::PersonAuth,
        responses::JsonBody,
    ),
    security(("person" = []))
)]
pub async fn create_my_tenant(
    person: Person,
    Json(body): Json<NewOwnTenantBody>,
) -> Result<Written<MyTenant>, ApiError> {
    person.create_tenant(&body.name).await
}

/// An invitation token to accept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    /// The token the invitation was created with (`tinv_…`).
    #[schema(max_length = 200)]
    pub token: String,
}

/// The tenant an accepted invitation made the person a member of.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The tenant; name it in `X-Tenant-Id` to act in it.
    pub tenant_id: TenantId,
}

/// Accept an invitation as the signed-in person (a person's token). The
/// invitation's email, if it names one, must be the token's verified email
/// (`email_verified: true`); its user, if it names one, the token's user. A
/// token whose email the provider has not verified accepts nothing. Unknown,
/// expired, revoked, already used and someone else's invitations, those whose
/// maker could no longer make them (the member who made it removed or holding
/// less than it hands out, the key that made it revoked or expired), and a
/// token with an unverified email, all answer the same 404.
#[utoipa::path(
    post, path = "/v1/invitations/accept", tag = "people", request_body = AcceptBody,
    responses(
        (status = 200, body = Accepted),
        (status = 409, description = "Another member of the tenant has this email", body = Problem, content_type = "application/problem+json"),
        responses::PersonAuth,
        responses::JsonBody,
        responses::NotFound,
    ),
    security(("person" = []))
)]
pub async fn accept_invitation(
    person: Person,
    Json(body): Json<AcceptBody>,
) -> Result<Json<Accepted>, ApiError> {
    // The email becomes the member's: an unverified one is refused there.
    let tenant_id = person.accept_invitation(&body.token).await?;
    Ok(Json(Accepted { tenant_id }))
}

/// A new invitation: an email, a user id, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "bob@acme.test"}))]
pub struct NewInvitationBody {
    /// Only a person whose token carries this verified email can accept it
    /// (the form of a member's email: no control or invisible characters, no
    /// Latin letter directly next to a Cyrillic or Greek one).
    #[schema(max_length = 320, pattern = "{email}")]
    pub email: Option<String>,
    /// Only this user can accept it.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub user_id: Option<UserId>,
    /// The role the new member gets; the caller must hold all its permissions.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub role_id: Option<RoleId>,
    /// How long it can be accepted, in seconds: 60 to 2592000 (30 days); default 7 days.
    #[schema(minimum = 60, maximum = 2592000)]
    #[serde(default, deserialize_with = "super::whole_number")]
    pub valid_for_seconds: Option<u64>,
}

/// Invite a person to the caller's tenant (`members.invite`). The token is in
/// this answer only; hand it to the invitee, who accepts it signed in.
#[utoipa::path(
    post, path = "/v1/invitations", tag = "people", request_body = NewInvitationBody,
    responses(
        (status = 201, body = IssuedInvitation),
        (status = 409, description = "1000 invitations pending, or an active member already has the email", body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::JsonBody,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn create_invitation(
    caller: TenantCaller,
    Json(body): Json<NewInvitationBody>,
) -> Result<Written<IssuedInvitation>, ApiError> {
    caller.require("members.invite")?;
    if let Some(s) = body.valid_for_seconds {
        if !(60..=2_592_000).contains(&s) {
            return Err(ApiError::invalid(
                "valid_for_seconds",
                "an invitation is valid for 60 seconds to 30 days",
            ));
        }
    }
    let new = NewInvitation {
        email: body.email,
        user_id: body.user_id,
        role_id: body.role_id,
        valid_for: body.valid_for_seconds.map(Duration::from_secs),
    };
    // The token is shown once: a replay answers `token: ""`.
    let reply = Reply::new(StatusCode::CREATED).hiding("token");
    caller
        .write_response(reply, &new, |scope, new| {
            Box::pin(scope.create_invitation(new))
        })
        .await
}

/// The caller's tenant's invitations, newest first (`members.read`).
///
/// Pending, accepted, revoked and expired invitations alike, with who created
/// each and when it was accepted. Tokens are never listed: an invitation's
/// token is in the answer that created it only.
#[utoipa::path(
    get, path = "/v1/invitations", tag = "people", params(PageQuery),
    responses(
        (status = 200, body = Page<Invitation>),
        responses::TenantAuth,
        responses::Params,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn list_invitations(
    caller: TenantCaller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<Invitation>>, ApiError> {
    caller.require("members.read")?;
    let window = keyset(&q)?;
    let mut scope = caller.scope().await?;
    let invitations = scope
        .invitations_page(window.after().copied(), window.fetch())
        .await?;
    scope.commit().await?;
    Ok(Json(keyset_page(&window, invitations, |i| {
        (i.created_at, i.invitation_id)
    })))
}

/// Revoke an invitation of the caller's tenant (`members.invite`);
/// idempotent. An invitation already accepted is spent: 409 (remove the
/// member instead).
#[utoipa::path(
    delete, path = "/v1/invitations/{invitation_id}", tag = "people",
    params(("invitation_id" = String, Path, format = Uuid)),
    responses(
        (status = 400, description = "Malformed path parameter", body = Problem, content_type = "application/problem+json"),
        (status = 200, body = Invitation),
        (status = 409, description = "The invitation was already accepted", body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn revoke_invitation(
    caller: TenantCaller,
    Path(id): Path<InvitationId>,
) -> Result<Written<Invitation>, ApiError> {
    caller.require("members.invite")?;
    caller
        .write_response(Reply::new(StatusCode::OK), &id, |scope, id| {
            Box::pin(scope.revoke_invitation(*id))
        })
        .await
}

/// A member's new set of roles.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRolesBody {
    /// Every role the member holds afterwards (roles of the caller's tenant).
    #[schema(value_type = Vec<uuid::Uuid>, max_items = 100)]
    pub role_ids: Vec<RoleId>,
}

/// Replace a member's roles (`members.write`). Every role added or removed
/// must hold only permissions the caller holds.
#[utoipa::path(
    put, path = "/v1/members/{user_id}/roles", tag = "access", request_body = MemberRolesBody,
    params(("user_id" = String, Path, format = Uuid)),
    responses(
        (status = 400, description = "Malformed path parameter", body = Problem, content_type = "application/problem+json"),
        (status = 200, body = Member),
        responses::TenantAuth,
        responses::JsonBody,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn set_member_roles(
    caller: TenantCaller,
    Path(user): Path<UserId>,
    Json(body): Json<MemberRolesBody>,
) -> Result<Written<Member>, ApiError> {
    caller.require("members.write")?;
    if body.role_ids.len() > 100 {
        return Err(ApiError::invalid("role_ids", "at most 100 roles"));
    }
    let args = (user, body.role_ids);
    let member = caller
        .write_response(Reply::new(StatusCode::OK), &args, |scope, (user, roles)| {
            Box::pin(scope.set_member_roles(*user, roles))
        })
        .await?;
    caller.member_cache().forget_tenant(caller.tenant());
    Ok(member)
}

/// Remove a member of the caller's tenant (`members.write`). The owner cannot
/// be removed while other active members remain (409: transfer ownership
/// first; pending members do not count). Their tokens stop acting in
/// the tenant at once on this server, within milliseconds on others.
#[utoipa::path(
    delete, path = "/v1/members/{user_id}", tag = "access",
    params(("user_id" = String, Path, format = Uuid)),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Malformed path parameter", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The member owns the tenant", body = Problem, content_type = "application/problem+json"),
        responses::TenantAuth,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn remove_member(
    caller: TenantCaller,
    Path(user): Path<UserId>,
) -> Result<Written<()>, ApiError> {
    caller.require("members.write")?;
    let removed = caller
        .write_response(Reply::new(StatusCode::NO_CONTENT), &user, |scope, user| {
            Box::pin(scope.remove_member(*user))
        })
        .await?;
    caller.member_cache().forget_tenant(caller.tenant());
    // The member's keys went with them: refused from now on by this server,
    // not only once the database's invalidation reaches its cache.
    caller.forget_tenant(caller.tenant());
    Ok(removed)
}

/// Make another member the owner of the caller's tenant. Only the owner (or a
/// key holding every permission) may; the previous owner stays a member.
#[utoipa::path(
    post, path = "/v1/members/{user_id}/ownership", tag = "access",
    params(("user_id" = String, Path, format = Uuid)),
    responses(
        (status = 400, description = "Malformed path parameter", body = Problem, content_type = "application/problem+json"),
        (status = 200, body = Member),
        responses::TenantAuth,
        responses::NotFound,
    ),
    security(("apiKey" = []), ("person" = []))
)]
pub async fn transfer_ownership(
    caller: TenantCaller,
    Path(user): Path<UserId>,
) -> Result<Written<Member>, ApiError> {
    let member = caller
        .write_response(Reply::new(StatusCode::OK), &user, |scope, user| {
            Box::pin(scope.transfer_ownership(*user))
        })
        .await?;
    caller.member_cache().forget_tenant(caller.tenant());
    Ok(member)
}

/// A new impersonation session.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewImpersonationBody {
    /// The member to act as.
    #[schema(value_type = String, format = Uuid)]
    pub user_id: UserId,
    /// The member's tenant: the caller's own (default) or a descendant; required with the admin token.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub tenant_id: Option<TenantId>,
    /// How long, in seconds: 60 to 28800 (8 hours); default 3600.
    #[schema(minimum = 60, maximum = 28800)]
    #[serde(default, deserialize_with = "super::whole_number")]
    pub valid_for_seconds: Option<u64>,
    /// Why (audited, ≤ 500 characters; no control or invisible characters:
    /// tab and line breaks are allowed).
    #[schema(max_length = 500, pattern = "{reason}")]
    pub reason: Option<String>,
}

/// Act as a member for a bounded time (support). The admin token may for any
/// tenant's member; a tenant's caller holding every permission (its owner, an
/// unbound key) for a member of its tenant or a descendant. The token in the
/// answer (shown once) acts as the member with their permissions minus
/// keys.write, members.write, members.invite and roles.write, and cannot
/// impersonate further; every request and audit row names both.
#[utoipa::path(
    post, path = "/v1/impersonations", tag = "people", request_body = NewImpersonationBody,
    responses(
        (status = 201, body = IssuedImpersonation),
        (status = 409, description = "The tenant is not active (`conflict`), or holds 100 live sessions (`quota_exceeded`)", body = Problem, content_type = "application/problem+json"),
        responses::AnyAuth,
        responses::JsonBody,
        responses::NotFound,
    ),
    security(("adminToken" = []), ("apiKey" = []), ("person" = []))
)]
pub async fn start_impersonation(
    caller: Caller,
    Json(body): Json<NewImpersonationBody>,
) -> Result<Written<IssuedImpersonation>, ApiError> {
    let seconds = body.valid_for_seconds.unwrap_or(3600);
    if !(60..=28_800).contains(&seconds) {
        return Err(ApiError::invalid(
            "valid_for_seconds",
            "an impersonation lasts 60 seconds to 8 hours",
        ));
    }
    let reason = body.reason.unwrap_or_default();
    if reason.chars().count() > 500 {
        return Err(ApiError::invalid(
            "reason",
            "reason must be at most 500 characters",
        ));
    }
    let args = (
        body.user_id,
        body.tenant_id,
        Duration::from_secs(seconds),
        reason,
    );
    // The token is shown once: a replay answers `token: ""`.
    let reply = Reply::new(StatusCode::CREATED).hiding("token");
    match caller {
        Caller::Admin(admin) => {
            let tenant = body.tenant_id.ok_or_else(|| {
                ApiError::invalid("tenant_id", "the admin token names the member's tenant")
            })?;
            admin
                .tenant_write_response(
                    tenant,
                    reply,
                    &args,
                    |scope, (user, _, valid_for, reason)| {
                        Box::pin(scope.start_impersonation(*user, None, *valid_for, reason))
                    },
                )
                .await
        }
        Caller::Tenant(caller) => {
            caller
                .write_response(reply, &args, |scope, (user, tenant, valid_for, reason)| {
                    Box::pin(scope.start_impersonation(*user, *tenant, *valid_for, reason))
                })
                .await
        }
    }
}

/// Which impersonation sessions to list, a page at a time.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImpersonationListQuery {
    /// Only the sessions of this tenant (of its members). Required with the
    /// admin token; a tenant's caller lists its own tenant's and its
    /// descendants' sessions without it.
    #[param(value_type = Option<String>, format = Uuid)]
    pub tenant_id: Option<TenantId>,
    /// Page size, 1–1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor` (see the other lists' `cursor`).
    pub cursor: Option<String>,
}

/// The tenant of the impersonation session to end.
// No `deny_unknown_fields`: this route took no query before and ignored
// whatever a tenant's caller sent; it still does.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImpersonationTenantQuery {
    /// The session's tenant (a session of any other is not found). Required
    /// with the admin token; optional for a tenant's caller.
    #[param(value_type = Option<String>, format = Uuid)]
    pub tenant_id: Option<TenantId>,
}

/// The tenant the admin token acts in on an impersonation route: the one it
/// names, as `POST /v1/impersonations` takes it in its body. The operator's
/// database role reads sessions only inside a tenant's context, so there is
/// no listing or ending "everywhere".
fn admin_tenant(tenant: Option<TenantId>) -> Result<TenantId, ApiError> {
    tenant.ok_or_else(|| {
        ApiError::invalid(
            "tenant_id",
            "the admin token names the tenant of the sessions (query parameter tenant_id)",
        )
    })
}

/// List impersonation sessions, newest first. Never their tokens: of the caller's
/// tenant and its descendants (`members.read`), or only those of the tenant
/// named by `tenant_id`, which the admin token must name.
#[utoipa::path(
    get, path = "/v1/impersonations", tag = "people", params(ImpersonationListQuery),
    responses(
        (status = 200, body = Page<Impersonation>),
        (status = 400, description = "Invalid query parameter, or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid parameter value (`field` names it), or `tenant_id` missing with the admin token (`validation_failed`, field `tenant_id`)", body = Problem, content_type = "application/problem+json"),
        responses::AnyAuth,
        responses::NotFound,
    ),
    security(("adminToken" = []), ("apiKey" = []), ("person" = []))
)]
pub async fn list_impersonations(
    caller: Caller,
    Query(q): Query<ImpersonationListQuery>,
) -> Result<Json<Page<Impersonation>>, ApiError> {
    let window = keyset::<ImpersonationId>(&PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    })?;
    let after = window.after().copied();
    let sessions = match caller {
        Caller::Admin(admin) => {
            let tenant = admin_tenant(q.tenant_id)?;
            let mut scope = admin.tenant_scope(tenant).await?;
            let sessions = scope
                .impersonations_page(Some(tenant), after, window.fetch())
                .await?;
            scope.commit().await?;
            sessions
        }
        Caller::Tenant(caller) => {
            caller.require("members.read")?;
            let mut scope = caller.scope().await?;
            // A tenant outside the caller's subtree simply has none it may see.
            let sessions = scope
                .impersonations_page(q.tenant_id, after, window.fetch())
                .await?;
            scope.commit().await?;
            sessions
        }
    };
    Ok(Json(keyset_page(&window, sessions, |s| {
        (s.started_at, s.impersonation_id)
    })))
}

/// Ends session `id`, when `tenant` is given only if it is that tenant's:
/// a session of any other answers as a missing one.
async fn end_session(
    scope: &mut TenantScope,
    id: ImpersonationId,
    tenant: Option<TenantId>,
) -> Result<Impersonation, DbError> {
    if let Some(tenant) = tenant {
        if scope.get_impersonation(id).await?.tenant_id != tenant {
            return Err(DbError::NotFound(format!("impersonation {id} not found")));
        }
    }
    scope.end_impersonation(id).await
}

/// End an impersonation session at once. By a caller holding every permission
/// in its tenant or an ancestor, by the session itself, or by the admin token
/// naming the session's tenant in `tenant_id` (audited as `admin`). Ending an
/// ended session answers it again; a session the caller may not see, or of
/// another tenant than `tenant_id`, is not found.
#[utoipa::path(
    delete, path = "/v1/impersonations/{impersonation_id}", tag = "people",
    params(("impersonation_id" = String, Path, format = Uuid), ImpersonationTenantQuery),
    responses(
        (status = 400, description = "Malformed path or query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`tenant_id` missing with the admin token (`validation_failed`, field `tenant_id`)", body = Problem, content_type = "application/problem+json"),
        (status = 200, body = Impersonation),
        responses::AnyAuth,
        responses::NotFound,
    ),
    security(("adminToken" = []), ("apiKey" = []), ("person" = []))
)]
pub async fn end_impersonation(
    caller: Caller,
    Path(id): Path<ImpersonationId>,
    Query(q): Query<ImpersonationTenantQuery>,
) -> Result<Written<Impersonation>, ApiError> {
    let reply = Reply::new(StatusCode::OK);
    match caller {
        Caller::Admin(admin) => {
            let tenant = admin_tenant(q.tenant_id)?;
            admin
                .tenant_write_response(tenant, reply, &id, |scope, id| {
                    Box::pin(end_session(scope, *id, Some(tenant)))
                })
                .await
        }
        Caller::Tenant(caller) => {
            caller
                .write_response(reply, &id, |scope, id| {
                    Box::pin(end_session(scope, *id, q.tenant_id))
                })
                .await
        }
    }
}
