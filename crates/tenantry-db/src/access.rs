//! Members, roles and permissions inside a tenant scope: the global permission catalogue, tenant roles, permission assignment within the current tenant only, role assignment to members, and the rule that an actor cannot grant more than it holds.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{types::Type, Row};

use crate::{DbError, RoleId, TenantId, TenantScope, UserId};

/// Permission names a credential holds (e.g. a key's, from [`crate::KeyIdentity::permissions`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionSet(BTreeSet<String>);

impl PermissionSet {
    /// Whether `permission` is in the set.
    pub fn contains(&self, permission: &str) -> bool {
        self.0.contains(permission)
    }

    /// The names, in order: what the context carries for `tenantry.authorize`.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

impl<S: Into<String>> FromIterator<S> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self(iter.into_iter().map(Into::into).collect())
    }
}

/// A catalogue permission.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Permission {
    /// Name, e.g. `resources.read`.
    pub name: String,
    /// What it allows.
    pub description: String,
}

/// A member (user) of a tenant.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The user's id.
    pub user_id: UserId,
    /// Email, unique per tenant (case-insensitive).
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
    /// When the user joined the tenant.
    pub created_at: DateTime<Utc>,
    /// Roles assigned in this tenant.
    pub role_ids: Vec<RoleId>,
    /// Whether the member owns the tenant (holds every permission; one per tenant).
    pub is_owner: bool,
    /// Added by the tenant with the person's user id and not yet accepted by
    /// them: the person does not see the tenant or act in it until they
    /// accept an invitation naming them; never the owner meanwhile.
    pub pending: bool,
}

/// A tenant role with its permissions.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Role {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The role.
    pub role_id: RoleId,
    /// Name, unique per tenant.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Permission names.
    pub permissions: Vec<String>,
}

/// Input of a new member.
#[derive(Debug, Clone)]
pub struct NewMember {
    /// The person's global id (from the identity provider): the member is
    /// then pending until they accept an invitation naming them. Generated
    /// (a new id no person has, not pending) when absent.
    pub user_id: Option<UserId>,
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
}

const MEMBER_SELECT: &str = "SELECT m.tenant_id, m.user_id, m.email, m.display_name, m.created_at,
        coalesce(array_agg(mr.role_id ORDER BY mr.role_id) FILTER (WHERE mr.role_id IS NOT NULL), '{}'),
        m.is_owner, m.pending
    FROM tenantry.tenant_members m
    LEFT JOIN tenantry.member_roles mr ON mr.tenant_id = m.tenant_id AND mr.user_id = m.user_id";

const ROLE_SELECT: &str = "SELECT r.tenant_id, r.role_id, r.name, r.description, r.created_at,
        coalesce(array_agg(p.name ORDER BY p.name) FILTER (WHERE p.name IS NOT NULL), '{}')
    FROM tenantry.roles r
    LEFT JOIN tenantry.role_permissions rp ON rp.tenant_id = r.tenant_id AND rp.role_id = r.role_id
    LEFT JOIN tenantry.permissions p ON p.permission_id = rp.permission_id";

pub(crate) fn member(r: &Row) -> Member {
    Member {
        tenant_id: TenantId::from_uuid(r.get(0)),
        user_id: UserId::from_uuid(r.get(1)),
        email: r.get(2),
        display_name: r.get(3),
        created_at: r.get(4),
        role_ids: r
            .get::<_, Vec<uuid::Uuid>>(5)
            .into_iter()
            .map(RoleId::from_uuid)
            .collect(),
        is_owner: r.get(6),
        pending: r.get(7),
    }
}

fn role(r: &Row) -> Role {
    Role {
        tenant_id: TenantId::from_uuid(r.get(0)),
        role_id: RoleId::from_uuid(r.get(1)),
        name: r.get(2),
        description: r.get(3),
        created_at: r.get(4),
        permissions: r.get(5),
    }
}

impl TenantScope {
    /// The global permission catalogue.
    pub async fn permissions(&mut self) -> Result<Vec<Permission>, DbError> {
        let rows = self
            .rows(
                "SELECT name, description FROM tenantry.permissions ORDER BY permission_id",
                &[],
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Permission {
                name: r.get(0),
                description: r.get(1),
            })
            .collect())
    }

    /// Adds a member to the scope's tenant. A duplicate email is a conflict.
    /// Named by a user id ([`NewMember::user_id`]), the member is pending: a
    /// person joins a tenant only by accepting an invitation naming them, so
    /// no tenant can put someone among its members (or make them its owner)
    /// without their consent. Without one, the member gets a new id no
    /// person has (a record for roles and keys) and is not pending.
    pub async fn add_member(&mut self, new: &NewMember) -> Result<Member, DbError> {
        // Spaces around it go, as around a name; a control character (a line
        // break, a tab) stays and is refused below, as the schema's pattern
        // and an invitation refuse it (trimmed too, a line break after the
        // address was stored: a verification review).
        let email = new
            .email
            .trim_matches(|c: char| c.is_whitespace() && !c.is_control());
        // Characters, as the schema's maxLength and an invitation's check
        // count them (bytes refused a 202-character address of accented
        // letters that an invitation took: an outside fuzzing review).
        if email.chars().count() > 320 {
            return Err(DbError::invalid(
                "email",
                "email must be at most 320 characters",
            ));
        }
        // One @ between two parts without white space: an invitation's rule
        // (create_invitation) and the schema's pattern, where any @ passed.
        let form = email.split_once('@').is_some_and(|(name, domain)| {
            [name, domain].iter().all(|part| {
                !part.is_empty() && !part.contains(|c: char| c == '@' || c.is_whitespace())
            })
        });
        if !form {
            return Err(DbError::invalid(
                "email",
                "email must look like name@domain",
            ));
        }
        let pending = new.user_id.is_some();
        let named = new.user_id.map(|u| *u.as_uuid());
        let me = *self.tenant().as_uuid();
        // Without a user id the database draws one (tenant_members_consent,
        // 04_access.sql): a tenant role may not choose an active member's id.
        let rows = self
            .rows(
                "INSERT INTO tenantry.tenant_members (tenant_id, user_id, email, display_name, pending) VALUES ($1, $2, $3, $4, $5) RETURNING user_id",
                &[&me, &named, &email, &new.display_name, &pending],
                &[Type::UUID, Type::UUID, Type::TEXT, Type::TEXT, Type::BOOL],
            )
            .await
            .map_err(|e| match (e, named) {
                (DbError::Conflict(_), Some(user)) => {
                    DbError::conflict(format!("a member with email {email} or id {user} already exists"))
                }
                (DbError::Conflict(_), None) => {
                    DbError::conflict(format!("a member with email {email} already exists"))
                }
                (other, _) => other,
            })?;
        let user: uuid::Uuid = rows
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| DbError::Internal("INSERT ... RETURNING gave no row".into()))?;
        self.get_member(UserId::from_uuid(user)).await
    }

    /// One member of the scope's tenant.
    pub async fn get_member(&mut self, user: UserId) -> Result<Member, DbError> {
        let sql = format!("{MEMBER_SELECT} WHERE m.tenant_id = $1 AND m.user_id = $2 GROUP BY m.tenant_id, m.user_id");
        let me = *self.tenant().as_uuid();
        let rows = self
            .rows(&sql, &[&me, user.as_uuid()], &[Type::UUID, Type::UUID])
            .await?;
        rows.first()
            .map(member)
            .ok_or_else(|| DbError::NotFound(format!("member {user} not found")))
    }

    /// Members of the scope's tenant, in the order they became members.
    pub async fn list_members(&mut self) -> Result<Vec<Member>, DbError> {
        self.members_page(None, i64::MAX).await
    }

    /// A page of [`TenantScope::list_members`]: at most `limit` members
    /// after `after` (when the last one of the page before became a member,
    /// and who it is), read and aggregated by the database one page at a
    /// time (a page of one read and aggregated all 1,000 members: found by a
    /// review as a hostile tenant).
    pub async fn members_page(
        &mut self,
        after: Option<(DateTime<Utc>, UserId)>,
        limit: i64,
    ) -> Result<Vec<Member>, DbError> {
        Ok(self
            .keyset_rows(
                after.map(|(at, id)| (at, *id.as_uuid())),
                limit,
                ("m.created_at, m.user_id", ">"),
                |place| {
                    format!(
                        "{MEMBER_SELECT} WHERE m.tenant_id = $1 {place}
                         GROUP BY m.tenant_id, m.user_id ORDER BY m.created_at, m.user_id LIMIT $4"
                    )
                },
            )
            .await?
            .iter()
            .map(member)
            .collect())
    }

    /// Creates a role in the scope's tenant; a duplicate name is a conflict.
    pub async fn create_role(&mut self, name: &str, description: &str) -> Result<Role, DbError> {
        let me = *self.tenant().as_uuid();
        let rows = self
            .rows(
                "SELECT tenantry.create_tenant_role($1, $2)",
                &[&me, &name],
                &[Type::UUID, Type::TEXT],
            )
            .await?;
        let id = RoleId::from_uuid(rows[0].get(0));
        if !description.is_empty() {
            self.rows(
                "UPDATE tenantry.roles SET description = $2 WHERE tenant_id = $1 AND role_id = $3",
                &[&me, &description, id.as_uuid()],
                &[Type::UUID, Type::TEXT, Type::UUID],
            )
            .await?;
        }
        self.get_role(id).await
    }

    /// One role of the scope's tenant.
    pub async fn get_role(&mut self, id: RoleId) -> Result<Role, DbError> {
        let sql = format!("{ROLE_SELECT} WHERE r.tenant_id = $1 AND r.role_id = $2 GROUP BY r.tenant_id, r.role_id");
        let me = *self.tenant().as_uuid();
        let rows = self
            .rows(&sql, &[&me, id.as_uuid()], &[Type::UUID, Type::UUID])
            .await?;
        rows.first()
            .map(role)
            .ok_or_else(|| DbError::NotFound(format!("role {id} not found")))
    }

    /// Roles of the scope's tenant.
    pub async fn list_roles(&mut self) -> Result<Vec<Role>, DbError> {
        let sql = format!(
            "{ROLE_SELECT} WHERE r.tenant_id = $1 GROUP BY r.tenant_id, r.role_id ORDER BY r.name"
        );
        let me = *self.tenant().as_uuid();
        Ok(self
            .rows(&sql, &[&me], &[Type::UUID])
            .await?
            .iter()
            .map(role)
            .collect())
    }

    /// The rule of every grant: a restricted actor (see [`crate::TenantContext::permissions`])
    /// cannot give a key, role or member a permission it does not hold itself.
    /// Refusals are [`DbError::PermissionDenied`] with `refusal` as the message.
    pub(crate) fn ensure_holds<'a>(
        &self,
        wanted: impl IntoIterator<Item = &'a str>,
        refusal: impl FnOnce() -> String,
    ) -> Result<(), DbError> {
        match &self.ctx.permissions {
            Some(held) if !wanted.into_iter().all(|p| held.contains(p)) => {
                Err(DbError::PermissionDenied(refusal()))
            }
            _ => Ok(()),
        }
    }

    /// [`TenantScope::ensure_holds`] for every permission the role holds (looked
    /// up only for a restricted actor).
    async fn ensure_holds_role(
        &mut self,
        id: RoleId,
        refusal: impl FnOnce() -> String,
    ) -> Result<(), DbError> {
        if self.ctx.permissions.is_none() {
            return Ok(());
        }
        let role = self.get_role(id).await?;
        self.ensure_holds(role.permissions.iter().map(String::as_str), refusal)
    }

    /// Grants a catalogue permission to a role of the scope's tenant (idempotent).
    /// A restricted actor may only grant a permission it holds; an unknown
    /// permission is not found either way.
    pub async fn grant_permission(
        &mut self,
        id: RoleId,
        permission: &str,
    ) -> Result<Role, DbError> {
        if let Err(denied) = self.ensure_holds([permission], || {
            format!("the caller cannot grant {permission}, which it does not hold")
        }) {
            let known = self
                .permissions()
                .await?
                .iter()
                .any(|p| p.name == permission);
            return Err(if known {
                denied
            } else {
                DbError::NotFound(format!("permission {permission:?} not found"))
            });
        }
        self.rows(
            "SELECT tenantry.assign_tenant_permission($1, $2)",
            &[id.as_uuid(), &permission],
            &[Type::UUID, Type::TEXT],
        )
        .await?;
        self.get_role(id).await
    }

    /// Removes a permission from a role of the scope's tenant (idempotent).
    /// A restricted actor cannot reduce a role holding permissions it does not
    /// hold itself.
    pub async fn revoke_permission(
        &mut self,
        id: RoleId,
        permission: &str,
    ) -> Result<Role, DbError> {
        self.ensure_holds_role(id, || {
            "the caller cannot change a role with permissions it does not hold".into()
        })
        .await?;
        self.rows(
            "SELECT tenantry.revoke_tenant_permission($1, $2)",
            &[id.as_uuid(), &permission],
            &[Type::UUID, Type::TEXT],
        )
        .await?;
        self.get_role(id).await
    }

    /// Assigns a role to a member, both of the scope's tenant (idempotent).
    /// A restricted actor may only assign a role whose permissions it holds.
    pub async fn assign_role(&mut self, user: UserId, id: RoleId) -> Result<Member, DbError> {
        self.ensure_holds_role(id, || {
            "the caller cannot assign a role with permissions it does not hold".into()
        })
        .await?;
        self.rows(
            "SELECT tenantry.assign_member_role($1, $2)",
            &[user.as_uuid(), id.as_uuid()],
            &[Type::UUID, Type::UUID],
        )
        .await?;
        self.get_member(user).await
    }
}
