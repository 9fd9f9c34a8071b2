//! People in tenants: a signed-in person's memberships and tenants ([`Database::member_identity`], [`Database::my_tenants`]), accepting an invitation, impersonation sessions (started and ended in a tenant scope, verified by their token), and inside a tenant scope inviting, listing and revoking invitations, replacing a member's roles, removing a member and handing ownership over. The rules (who may, nobody grants more than they hold, one owner) live in the database (04_access.sql); this module calls them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::{types::Type, Row};

use crate::{
    idempotency::{self, Idempotent, IdempotentRequest, StoredResponse},
    row::identity_from_json,
    scope::{Stmt, Tx},
    Database, DbError, ImpersonationId, InvitationId, Member, RoleId, TenantId, TenantScope,
    TenantSettings, TenantStatus, UserId,
};

/// What a signed-in person holds in one tenant, as the database says.
#[derive(Debug, Clone, Deserialize)]
pub struct MemberIdentity {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its status: callers refuse people of tenants that are not active.
    pub tenant_status: TenantStatus,
    /// Its settings (rate limits, quotas).
    pub tenant_settings: TenantSettings,
    /// The person.
    pub user_id: UserId,
    /// Their email in this tenant.
    pub email: String,
    /// Whether they own the tenant (and so hold every permission).
    pub is_owner: bool,
    /// Permission names they hold through their roles (every one for the owner).
    pub permissions: Vec<String>,
}

/// A tenant the signed-in person belongs to.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MyTenant {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its name.
    pub name: String,
    /// `active` or `suspended`.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::TenantStatus))]
    pub status: String,
    /// Whether the person owns it.
    pub is_owner: bool,
    /// Names of the roles the person holds there.
    pub roles: Vec<String>,
    /// When the person joined it.
    pub joined_at: DateTime<Utc>,
}

/// An invitation to a tenant (never its token).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invitation {
    /// The invitation.
    pub invitation_id: InvitationId,
    /// The tenant it invites to.
    pub tenant_id: TenantId,
    /// The email it is for, if it names one.
    pub email: Option<String>,
    /// The user it is for, if it names one.
    pub user_id: Option<UserId>,
    /// The role the new member gets, if any.
    pub role_id: Option<RoleId>,
    /// Who created it (`key:<id>`, `user:<id>`, …).
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Until when it can be accepted.
    pub expires_at: DateTime<Utc>,
    /// When it was accepted, if it was.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Who accepted it.
    pub accepted_by: Option<UserId>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// `pending`, `accepted`, `revoked` or `expired`.
    #[cfg_attr(feature = "openapi", schema(schema_with = invitation_status_schema))]
    pub status: String,
}

/// An invitation's status in the API description: the four values
/// `tenantry.invitation_status` gives, as an enumeration clients can type.
#[cfg(feature = "openapi")]
fn invitation_status_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["pending", "accepted", "revoked", "expired"]))
        .description(Some("`pending`, `accepted`, `revoked` or `expired`."))
        .build()
}

/// Input of a new invitation: an email or a user id (or both), a role.
#[derive(Debug, Clone, Default)]
pub struct NewInvitation {
    /// The invitee's email (then only a person with that verified email accepts it).
    pub email: Option<String>,
    /// The invitee's user id (then only that person accepts it).
    pub user_id: Option<UserId>,
    /// The role the new member gets.
    pub role_id: Option<RoleId>,
    /// How long it can be accepted (1 minute to 30 days; `None`: 7 days).
    pub valid_for: Option<Duration>,
}

/// A new invitation and its token, which is shown this once.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedInvitation {
    /// The invitation.
    #[serde(flatten)]
    pub invitation: Invitation,
    /// The token to hand to the invitee (`tinv_…`); only its SHA-256 is stored.
    pub token: String,
}

/// What an impersonation token acts as, as the database says.
#[derive(Debug, Clone, Deserialize)]
pub struct ImpersonationIdentity {
    /// The session.
    pub impersonation_id: ImpersonationId,
    /// The member's tenant.
    pub tenant_id: TenantId,
    /// The member acted as.
    pub user_id: UserId,
    /// Who acts (`admin`, `user:<owner>`, `key:<id>`, `db:<login>`).
    pub impersonator: String,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
    /// The tenant's status.
    pub tenant_status: TenantStatus,
    /// The tenant's settings.
    pub tenant_settings: TenantSettings,
    /// What the session holds: the member's permissions minus those that
    /// widen anyone's (keys, invitations, roles and members).
    pub permissions: Vec<String>,
}

/// An impersonation session (never its token).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Impersonation {
    /// The session.
    pub impersonation_id: ImpersonationId,
    /// The member's tenant.
    pub tenant_id: TenantId,
    /// The member acted as.
    pub user_id: UserId,
    /// Who acts.
    pub impersonator: String,
    /// Why (free text, audited).
    pub reason: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// When it was ended, if it was.
    pub ended_at: Option<DateTime<Utc>>,
}

/// A new impersonation session and its token, shown this once.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedImpersonation {
    /// The session.
    #[serde(flatten)]
    pub impersonation: Impersonation,
    /// The bearer token that acts as the member (`timp_…`); only its SHA-256 is stored.
    pub token: String,
}

const IMPERSONATION_SELECT: &str =
    "SELECT i.impersonation_id, i.tenant_id, i.user_id, i.impersonator, i.reason,
        i.started_at, i.expires_at, i.ended_at
    FROM tenantry.impersonations i";

fn impersonation(r: &Row) -> Impersonation {
    Impersonation {
        impersonation_id: ImpersonationId::from_uuid(r.get(0)),
        tenant_id: TenantId::from_uuid(r.get(1)),
        user_id: UserId::from_uuid(r.get(2)),
        impersonator: r.get(3),
        reason: r.get(4),
        started_at: r.get(5),
        expires_at: r.get(6),
        ended_at: r.get(7),
    }
}

const INVITATION_SELECT: &str =
    "SELECT i.invitation_id, i.tenant_id, i.email, i.user_id, i.role_id, i.created_by,
        i.created_at, i.expires_at, i.accepted_at, i.accepted_by, i.revoked_at,
        tenantry.invitation_status(i.accepted_at, i.revoked_at, i.expires_at)
    FROM tenantry.invitations i";

fn invitation(r: &Row) -> Invitation {
    Invitation {
        invitation_id: InvitationId::from_uuid(r.get(0)),
        tenant_id: TenantId::from_uuid(r.get(1)),
        email: r.get(2),
        user_id: r.get::<_, Option<uuid::Uuid>>(3).map(UserId::from_uuid),
        role_id: r.get::<_, Option<uuid::Uuid>>(4).map(RoleId::from_uuid),
        created_by: r.get(5),
        created_at: r.get(6),
        expires_at: r.get(7),
        accepted_at: r.get(8),
        accepted_by: r.get::<_, Option<uuid::Uuid>>(9).map(UserId::from_uuid),
        revoked_at: r.get(10),
        status: r.get(11),
    }
}

impl Database {
    /// What `user` holds in `tenant`: `None` when they are not a member or
    /// the tenant is deleted. Runs in a context that names the user (proven
    /// like every context), so the database answers only about that person.
    pub async fn member_identity(
        &self,
        user: UserId,
        tenant: TenantId,
    ) -> Result<Option<MemberIdentity>, DbError> {
        let (_turn, mut tx) = self.user_tx(user).await?;
        let rows = tx
            .query_and_commit(Stmt {
                sql: "SELECT tenantry.member_identity($1)",
                params: &[tenant.as_uuid()],
                types: &[Type::UUID],
            })
            .await?;
        let value: Option<serde_json::Value> = rows.first().and_then(|r| r.get(0));
        value
            .map(|v| identity_from_json("member identity", v))
            .transpose()
    }

    /// The tenants `user` is a member of (not deleted), by name.
    pub async fn my_tenants(&self, user: UserId) -> Result<Vec<MyTenant>, DbError> {
        let (_turn, mut tx) = self.user_tx(user).await?;
        let rows = tx
            .query_and_commit(Stmt {
                sql: "SELECT tenant_id, name, status, is_owner, roles, joined_at FROM tenantry.my_tenants()",
                params: &[],
                types: &[],
            })
            .await?;
        Ok(rows.iter().map(my_tenant).collect())
    }

    /// `user` creates a tenant of their own: a pooled root tenant named
    /// `name` whose first member, and so owner, they are, with `email` (the
    /// one their identity provider verified). Only while they have created
    /// fewer tenants (not deleted, whoever owns them now) than the
    /// operator's `tenantry.signup_policy` allows (none by default:
    /// [`DbError::Forbidden`]); at that many, [`DbError::QuotaExceeded`].
    pub async fn create_my_tenant(
        &self,
        user: UserId,
        name: &str,
        email: &str,
    ) -> Result<MyTenant, DbError> {
        let (_turn, mut tx) = self.user_tx(user).await?;
        let rows = tx
            .query_and_commit(Stmt {
                sql: CREATE_MY_TENANT,
                params: &[&name, &email],
                types: &[Type::TEXT, Type::TEXT],
            })
            .await?;
        first_my_tenant(&rows)
    }

    /// [`Database::create_my_tenant`] under an optional idempotency key, kept
    /// in `user`'s own namespace ([`IdempotentRequest::for_person`]): in one
    /// transaction, claims the key (a committed request with it answers
    /// [`Idempotent::Replayed`] without creating anything), creates the
    /// tenant, stores what `respond` makes of it and commits. So a retry
    /// after a lost answer gets the first answer back instead of a second
    /// tenant. The same key with another request is [`DbError::Invalid`]
    /// (field `Idempotency-Key`); while the first request runs,
    /// [`DbError::Conflict`].
    pub async fn create_my_tenant_idempotent(
        &self,
        user: UserId,
        name: &str,
        email: &str,
        request: Option<&IdempotentRequest>,
        respond: impl Fn(&MyTenant) -> Result<StoredResponse, DbError>,
    ) -> Result<Idempotent<MyTenant>, DbError> {
        let Some(request) = request else {
            return self
                .create_my_tenant(user, name, email)
                .await
                .map(Idempotent::Fresh);
        };
        let request = request.for_person(user);
        let (_turn, mut tx) = self.user_tx(user).await?;
        if let Some(stored) = idempotency::claim(&mut tx, &request).await? {
            tx.commit().await?;
            return Ok(Idempotent::Replayed(stored));
        }
        let rows = tx
            .rows(Stmt {
                sql: CREATE_MY_TENANT,
                params: &[&name, &email],
                types: &[Type::TEXT, Type::TEXT],
            })
            .await?;
        let tenant = first_my_tenant(&rows)?;
        idempotency::store_and_commit(&mut tx, &request, &respond(&tenant)?).await?;
        Ok(Idempotent::Fresh(tenant))
    }

    /// Accepts an invitation as `user`, whose verified email is `email`: they
    /// become a member of its tenant with its role. Unknown, expired, revoked,
    /// used and someone else's invitations are all [`DbError::NotFound`].
    pub async fn accept_invitation(
        &self,
        user: UserId,
        token: &str,
        email: Option<&str>,
    ) -> Result<TenantId, DbError> {
        let (_turn, mut tx) = self.user_tx(user).await?;
        let rows = tx
            .query_and_commit(Stmt {
                sql: "SELECT tenantry.accept_invitation($1, $2)",
                params: &[&token, &email],
                types: &[Type::TEXT, Type::TEXT],
            })
            .await?;
        rows.first()
            .map(|r| TenantId::from_uuid(r.get(0)))
            .ok_or_else(|| DbError::Internal("accept_invitation returned no row".into()))
    }

    /// The session behind an impersonation token: `None` for unknown,
    /// ended or expired sessions and removed members. Needs no context: the
    /// token is the secret (only its SHA-256 is stored).
    pub async fn verify_impersonation(
        &self,
        token: &str,
    ) -> Result<Option<ImpersonationIdentity>, DbError> {
        self.verify_impersonation_known_to(token, None).await
    }

    /// [`Database::verify_impersonation`] of a token last known to act in
    /// `last_tenant`: the check waits in that tenant's share of the pool,
    /// not in the lane every credential the server does not know shares
    /// (as [`Database::verify_key_known_to`]: a tenant's own session tokens,
    /// checked at every request, filled that lane for everyone). What the
    /// check answers does not depend on `last_tenant`.
    pub async fn verify_impersonation_known_to(
        &self,
        token: &str,
        last_tenant: Option<TenantId>,
    ) -> Result<Option<ImpersonationIdentity>, DbError> {
        let _turn = self.credential_turn(last_tenant).await?;
        let client = self.connection().await?;
        let mut tx = Tx::anonymous(client, self.statement_mode(), self.contexts());
        let rows = tx
            .query_and_commit(Stmt {
                sql: "SELECT tenantry.verify_impersonation($1)",
                params: &[&token],
                types: &[Type::TEXT],
            })
            .await?;
        let value: Option<serde_json::Value> = rows.first().and_then(|r| r.get(0));
        value
            .map(|v| identity_from_json("impersonation identity", v))
            .transpose()
    }

    /// A transaction in `user`'s context, and the turn of that person's lane
    /// ([`Database::lane_turn`]), to be held while it runs.
    async fn user_tx(&self, user: UserId) -> Result<(crate::turns::Turn, Tx), DbError> {
        let turn = self.lane_turn(*user.as_uuid()).await?;
        let client = self.connection().await?;
        Ok((
            turn,
            Tx::user(client, self.statement_mode(), self.contexts(), user),
        ))
    }
}

impl TenantScope {
    /// Invites a person to the scope's tenant; the token is in the answer only.
    /// Needs `members.invite` and every permission of the role (the database
    /// checks both: [`DbError::Forbidden`] otherwise).
    pub async fn create_invitation(
        &mut self,
        new: &NewInvitation,
    ) -> Result<IssuedInvitation, DbError> {
        let valid_for = new.valid_for.unwrap_or(Duration::from_secs(7 * 24 * 3600));
        let seconds = i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX);
        // One statement that writes and answers: on Citus, reading the new
        // row back as this role after the owner's function wrote it is refused.
        let rows = self
            .rows(
                "SELECT * FROM tenantry.create_invitation_row($1, $2, $3, make_interval(secs => $4::bigint))",
                &[
                    &new.email,
                    &new.user_id.map(|u| *u.as_uuid()),
                    &new.role_id.map(|r| *r.as_uuid()),
                    &seconds,
                ],
                &[Type::TEXT, Type::UUID, Type::UUID, Type::INT8],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| DbError::Internal("create_invitation_row returned no row".into()))?;
        Ok(IssuedInvitation {
            invitation: invitation(row),
            token: row.get(12),
        })
    }

    /// One invitation of the scope's tenant.
    pub async fn get_invitation(&mut self, id: InvitationId) -> Result<Invitation, DbError> {
        let sql = format!("{INVITATION_SELECT} WHERE i.tenant_id = $1 AND i.invitation_id = $2");
        let me = *self.tenant().as_uuid();
        self.rows(&sql, &[&me, id.as_uuid()], &[Type::UUID, Type::UUID])
            .await?
            .first()
            .map(invitation)
            .ok_or_else(|| DbError::NotFound(format!("invitation {id} not found")))
    }

    /// The scope's tenant's invitations, newest first.
    pub async fn list_invitations(&mut self) -> Result<Vec<Invitation>, DbError> {
        self.invitations_page(None, i64::MAX).await
    }

    /// A page of [`TenantScope::list_invitations`]: at most `limit`
    /// invitations after `after` (the creation time and id of the last one
    /// of the page before), newest first, ties by id, read by the database
    /// one page at a time (accepted, revoked and expired ones stay listed).
    pub async fn invitations_page(
        &mut self,
        after: Option<(DateTime<Utc>, InvitationId)>,
        limit: i64,
    ) -> Result<Vec<Invitation>, DbError> {
        Ok(self
            .keyset_rows(
                after.map(|(at, id)| (at, *id.as_uuid())),
                limit,
                ("i.created_at, i.invitation_id", "<"),
                |place| {
                    format!(
                        "{INVITATION_SELECT} WHERE i.tenant_id = $1 {place}
                         ORDER BY i.created_at DESC, i.invitation_id DESC LIMIT $4"
                    )
                },
            )
            .await?
            .iter()
            .map(invitation)
            .collect())
    }

    /// Revokes an invitation of the scope's tenant (`members.invite`). Idempotent.
    pub async fn revoke_invitation(&mut self, id: InvitationId) -> Result<Invitation, DbError> {
        // Written and answered in one statement, as create_invitation.
        self.rows(
            "SELECT * FROM tenantry.revoke_invitation_row($1)",
            &[id.as_uuid()],
            &[Type::UUID],
        )
        .await?
        .first()
        .map(invitation)
        .ok_or_else(|| DbError::NotFound(format!("invitation {id} not found")))
    }

    /// Replaces a member's roles (`members.write`; every role added or
    /// removed must hold only permissions the caller holds).
    pub async fn set_member_roles(
        &mut self,
        user: UserId,
        roles: &[RoleId],
    ) -> Result<Member, DbError> {
        let ids: Vec<uuid::Uuid> = roles.iter().map(|r| *r.as_uuid()).collect();
        self.rows(
            "SELECT tenantry.set_member_roles($1, $2)",
            &[user.as_uuid(), &ids],
            &[Type::UUID, Type::UUID_ARRAY],
        )
        .await?;
        self.get_member(user).await
    }

    /// Removes a member (`members.write`); the owner cannot be removed while
    /// other active members remain ([`DbError::Conflict`]: transfer
    /// ownership first; pending members do not count).
    pub async fn remove_member(&mut self, user: UserId) -> Result<(), DbError> {
        self.rows(
            "SELECT tenantry.remove_member($1)",
            &[user.as_uuid()],
            &[Type::UUID],
        )
        .await
        .map(drop)
    }

    /// Makes another member the owner; only the owner (or a caller holding
    /// every permission) may. Returns the new owner.
    pub async fn transfer_ownership(&mut self, user: UserId) -> Result<Member, DbError> {
        self.rows(
            "SELECT tenantry.transfer_ownership($1)",
            &[user.as_uuid()],
            &[Type::UUID],
        )
        .await?;
        // Read back as the owner that wrote it (member_info): on Citus a
        // transaction may not read, as tenantry_app, shards it changed as
        // the owner (transfer_ownership answered 500 there).
        self.rows(
            "SELECT * FROM tenantry.member_info($1)",
            &[user.as_uuid()],
            &[Type::UUID],
        )
        .await?
        .first()
        .map(crate::access::member)
        .ok_or_else(|| DbError::NotFound(format!("member {user} not found")))
    }

    /// Starts acting as `user`, a member of the scope's tenant or of a
    /// descendant (`tenant`): only a caller holding every permission there
    /// (the owner, an unbound key, the operator) and not impersonating. The
    /// token is in the answer only.
    pub async fn start_impersonation(
        &mut self,
        user: UserId,
        tenant: Option<TenantId>,
        valid_for: Duration,
        reason: &str,
    ) -> Result<IssuedImpersonation, DbError> {
        let seconds = i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX);
        let rows = self
            .rows(
                "SELECT impersonation_id, token FROM tenantry.start_impersonation($1, $2, make_interval(secs => $3::bigint), $4)",
                &[user.as_uuid(), &tenant.map(|t| *t.as_uuid()), &seconds, &reason],
                &[Type::UUID, Type::UUID, Type::INT8, Type::TEXT],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| DbError::Internal("start_impersonation returned no row".into()))?;
        let id = ImpersonationId::from_uuid(row.get(0));
        let token: String = row.get(1);
        let impersonation = self
            .impersonation_as_owner(id)
            .await?
            .ok_or_else(|| DbError::Internal(format!("impersonation {id} not read back")))?;
        Ok(IssuedImpersonation {
            impersonation,
            token,
        })
    }

    /// One impersonation of the scope's subtree.
    pub async fn get_impersonation(
        &mut self,
        id: ImpersonationId,
    ) -> Result<Impersonation, DbError> {
        let sql = format!("{IMPERSONATION_SELECT} WHERE i.impersonation_id = $1");
        self.rows(&sql, &[id.as_uuid()], &[Type::UUID])
            .await?
            .first()
            .map(impersonation)
            .ok_or_else(|| DbError::NotFound(format!("impersonation {id} not found")))
    }

    /// Impersonations of the scope's tenant and its descendants, newest first.
    pub async fn list_impersonations(&mut self) -> Result<Vec<Impersonation>, DbError> {
        self.impersonations_page(None, None, i64::MAX).await
    }

    /// A page of [`TenantScope::list_impersonations`] (only `tenant`'s
    /// sessions when named): at most `limit` after `after` (the start and id
    /// of the last session of the page before), newest first, ties by id.
    /// Read and sorted by the database: the list paged in the server read
    /// every session ever started, ended ones included (a page of one took
    /// 1 s after 99,414 sessions, and sixteen at once took 300 MB; found by
    /// a red-team review).
    pub async fn impersonations_page(
        &mut self,
        tenant: Option<TenantId>,
        after: Option<(DateTime<Utc>, ImpersonationId)>,
        limit: i64,
    ) -> Result<Vec<Impersonation>, DbError> {
        let tenant = tenant.map(|t| *t.as_uuid());
        let (at, id) = after.map(|(at, id)| (at, *id.as_uuid())).unzip();
        let sql = format!(
            "{IMPERSONATION_SELECT}
             WHERE ($1::uuid IS NULL OR i.tenant_id = $1)
               AND ($2::timestamptz IS NULL OR (i.started_at, i.impersonation_id) < ($2, $3))
             ORDER BY i.started_at DESC, i.impersonation_id DESC LIMIT $4"
        );
        Ok(self
            .rows(
                &sql,
                &[&tenant, &at, &id, &limit],
                &[Type::UUID, Type::TIMESTAMPTZ, Type::UUID, Type::INT8],
            )
            .await?
            .iter()
            .map(impersonation)
            .collect())
    }

    /// Ends an impersonation at once (its token stops working).
    pub async fn end_impersonation(
        &mut self,
        id: ImpersonationId,
    ) -> Result<Impersonation, DbError> {
        self.rows(
            "SELECT tenantry.end_impersonation($1)",
            &[id.as_uuid()],
            &[Type::UUID],
        )
        .await?;
        self.impersonation_as_owner(id)
            .await?
            .ok_or_else(|| DbError::NotFound(format!("impersonation {id} not found")))
    }

    /// An impersonation of the scope's subtree read back as the owner that
    /// started or ended it (`new_impersonation_info`): on Citus a
    /// transaction may not read, as tenantry_app, shards it changed as the
    /// owner (starting and ending a session answered 500 there).
    async fn impersonation_as_owner(
        &mut self,
        id: ImpersonationId,
    ) -> Result<Option<Impersonation>, DbError> {
        Ok(self
            .rows(
                "SELECT * FROM tenantry.new_impersonation_info($1)",
                &[id.as_uuid()],
                &[Type::UUID],
            )
            .await?
            .first()
            .map(impersonation))
    }
}

/// A row of `tenantry.my_tenants()` (or `create_my_tenant`).
fn my_tenant(r: &tokio_postgres::Row) -> MyTenant {
    MyTenant {
        tenant_id: TenantId::from_uuid(r.get(0)),
        name: r.get(1),
        status: r.get(2),
        is_owner: r.get(3),
        roles: r.get(4),
        joined_at: r.get(5),
    }
}

/// Creates a person's own tenant and answers it as `my_tenants()` lists it
/// (`$1` the name, `$2` the email).
const CREATE_MY_TENANT: &str = "SELECT tenant_id, name, status, is_owner, roles, joined_at
                                FROM tenantry.create_my_tenant($1, $2)";

/// The tenant `create_my_tenant` answered.
fn first_my_tenant(rows: &[Row]) -> Result<MyTenant, DbError> {
    rows.first()
        .map(my_tenant)
        .ok_or_else(|| DbError::Internal("create_my_tenant returned no row".into()))
}
