//! API keys: parsing a presented key, its identity after verification, and key management (create, list, revoke, rotate, permissions) inside a tenant scope.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_postgres::{types::Type, Row};

use crate::{DbError, KeyId, RoleId, TenantId, TenantScope, TenantSettings, TenantStatus, UserId};

/// A key as presented by a client: `tk_<12 hex prefix>_<64 hex secret>`.
/// Parsing checks the shape only; [`crate::Database::verify_key`] checks it exists.
#[derive(Clone)]
pub struct ApiKeySecret {
    key: String,
}

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeySecret(tk_{}_…)", self.prefix())
    }
}

impl ApiKeySecret {
    /// Parses the key's shape; `None` for anything that cannot be a tenantry key.
    pub fn parse(key: &str) -> Option<Self> {
        let rest = key.strip_prefix("tk_")?;
        let (prefix, secret) = rest.split_once('_')?;
        let hex = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        (hex(prefix, 12) && hex(secret, 64)).then(|| Self {
            key: key.to_owned(),
        })
    }

    /// The public part shown in listings (`tk_<prefix>`).
    pub fn prefix(&self) -> &str {
        &self.key[3..15]
    }

    /// SHA-256 of the whole key: what the database stores.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.key.as_bytes()).into()
    }

    /// Constant-time comparison with another key's hash (for in-process caches).
    pub fn matches_hash(&self, hash: &[u8; 32]) -> bool {
        self.sha256().ct_eq(hash).into()
    }

    /// The key itself. Show it once, never log it.
    pub fn expose(&self) -> &str {
        &self.key
    }
}

/// Who a verified key acts as.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyIdentity {
    /// The key.
    pub key_id: KeyId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The tenant's status: callers refuse keys of tenants that are not active.
    pub tenant_status: TenantStatus,
    /// The member it is bound to, if any.
    pub user_id: Option<UserId>,
    /// The role it is bound to, if any.
    pub role_id: Option<RoleId>,
    /// Display prefix.
    pub prefix: String,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Permission names the key holds.
    pub permissions: Vec<String>,
    /// The tenant's settings (quotas, rate limits), as of verification.
    pub tenant_settings: TenantSettings,
    /// Source addresses (CIDR) the key may be used from; `null`: any.
    #[serde(default)]
    pub allowed_cidrs: Option<Vec<String>>,
    /// Bound to no role or member and limited by no scopes: the tenant's own
    /// key, holding every permission, those defined later included.
    #[serde(default)]
    pub unbound: bool,
}

impl KeyIdentity {
    /// Parses the JSON of `tenantry.verify_api_key_hash` once, status included.
    pub(crate) fn from_json(v: serde_json::Value) -> Result<Self, DbError> {
        crate::row::identity_from_json("key identity", v)
    }
}

/// A key as listed (never its secret or hash).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyInfo {
    /// The key.
    pub key_id: KeyId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Display prefix (`tk_<prefix>_…`).
    pub prefix: String,
    /// Free text.
    pub description: String,
    /// Bound member, if any.
    pub user_id: Option<UserId>,
    /// Bound role, if any.
    pub role_id: Option<RoleId>,
    /// Who created it (audit actor label).
    pub created_by: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last successful verification (recorded at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// The key this one replaced.
    pub rotated_from: Option<KeyId>,
    /// The key that replaced this one.
    pub rotated_to: Option<KeyId>,
    /// Permission names it is limited to (within its role's); `null`: no further limit.
    pub scopes: Option<Vec<String>>,
    /// Source addresses (CIDR) it may be used from; `null`: any.
    pub allowed_cidrs: Option<Vec<String>>,
}

const KEY_COLUMNS: &str =
    "key_id, tenant_id, prefix, description, user_id, role_id, created_by, created_at, \
                           expires_at, revoked_at, last_used_at, rotated_from, rotated_to, scopes, \
                           allowed_cidrs::text[]";

impl ApiKeyInfo {
    fn from_row(r: &Row) -> Self {
        Self {
            key_id: KeyId::from_uuid(r.get(0)),
            tenant_id: TenantId::from_uuid(r.get(1)),
            prefix: r.get(2),
            description: r.get(3),
            user_id: r.get::<_, Option<uuid::Uuid>>(4).map(UserId::from_uuid),
            role_id: r.get::<_, Option<uuid::Uuid>>(5).map(RoleId::from_uuid),
            created_by: r.get(6),
            created_at: r.get(7),
            expires_at: r.get(8),
            revoked_at: r.get(9),
            last_used_at: r.get(10),
            rotated_from: r.get::<_, Option<uuid::Uuid>>(11).map(KeyId::from_uuid),
            rotated_to: r.get::<_, Option<uuid::Uuid>>(12).map(KeyId::from_uuid),
            scopes: r.get(13),
            allowed_cidrs: r.get(14),
        }
    }
}

/// A key just created: the secret is available this once.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The key to hand to the client.
    pub secret: ApiKeySecret,
    /// Its stored description.
    pub info: ApiKeyInfo,
}

/// What a new key is bound to.
#[derive(Debug, Clone, Default)]
pub struct NewKeyOptions {
    /// Free text shown in listings.
    pub description: String,
    /// Bind to a member of the tenant.
    pub user_id: Option<UserId>,
    /// Bind to a role of the tenant (the key then has exactly that role's permissions).
    pub role_id: Option<RoleId>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Create it for this descendant instead of the scope's tenant.
    pub tenant_id: Option<TenantId>,
    /// Limit it to these permissions (each held by its role or member, and by the creator).
    pub scopes: Option<Vec<String>>,
    /// Limit it to these source addresses (CIDR, e.g. `203.0.113.0/24`).
    pub allowed_cidrs: Option<Vec<String>>,
}

/// The refusal of a key created or rotated beyond what the actor holds.
fn escalation() -> String {
    "the caller cannot create or rotate a key with permissions it does not hold".into()
}

impl TenantScope {
    /// Creates a key (for the scope's tenant, or a descendant) and returns its secret once.
    /// A restricted actor cannot create a key with permissions it does not hold:
    /// the refusal aborts the transaction, so the key is never committed.
    pub async fn create_api_key(&mut self, options: &NewKeyOptions) -> Result<NewApiKey, DbError> {
        // A key born expired is a mistake (a date in the wrong year, a
        // missing time zone), whichever door it came through.
        if options.expires_at.is_some_and(|e| e <= chrono::Utc::now()) {
            return Err(DbError::invalid(
                "expires_at",
                "expires_at must be in the future",
            ));
        }
        let mut meta = serde_json::Map::new();
        meta.insert("type".into(), "tenant_key".into());
        if let Some(t) = options.tenant_id {
            meta.insert("tenant_id".into(), t.to_string().into());
        }
        if let Some(u) = options.user_id {
            meta.insert("user_id".into(), u.to_string().into());
        }
        if let Some(r) = options.role_id {
            meta.insert("role_id".into(), r.to_string().into());
        }
        if let Some(e) = options.expires_at {
            meta.insert("expires_at".into(), e.to_rfc3339().into());
        }
        if let Some(s) = &options.scopes {
            meta.insert("scopes".into(), s.clone().into());
        }
        if let Some(c) = &options.allowed_cidrs {
            meta.insert("allowed_cidrs".into(), c.clone().into());
        }
        let meta = serde_json::Value::Object(meta);
        let rows = self
            .rows(
                "SELECT tenantry.create_api_key($1, $2)",
                &[&options.description, &meta],
                &[Type::TEXT, Type::JSONB],
            )
            .await?;
        let key: String = rows[0].get(0);
        let secret = ApiKeySecret::parse(&key)
            .ok_or_else(|| DbError::Internal("malformed key from database".into()))?;
        let prefix = secret.prefix().to_owned();
        // Read back as the owner that wrote it (new_api_key_info): on Citus a
        // transaction may not read, as tenantry_app, shards it changed as the owner.
        let sql = format!("SELECT {KEY_COLUMNS} FROM tenantry.new_api_key_info($1)");
        let rows = self.rows(&sql, &[&prefix], &[Type::TEXT]).await?;
        let info = rows
            .first()
            .map(ApiKeyInfo::from_row)
            .ok_or_else(|| DbError::Internal("new key not visible".into()))?;
        // What a new key holds follows from its binding (role, member's roles, or
        // everything): read it back from the database rather than repeat that rule.
        if let Err(denied) = self.ensure_holds_key(info.key_id, escalation).await {
            self.tx.abort();
            return Err(denied);
        }
        Ok(NewApiKey { secret, info })
    }

    /// Keys of the scope's tenant, newest first (including revoked and expired ones).
    pub async fn list_api_keys(&mut self) -> Result<Vec<ApiKeyInfo>, DbError> {
        self.api_keys_page(None, i64::MAX).await
    }

    /// A page of [`TenantScope::list_api_keys`]: at most `limit` keys after
    /// `after` (the creation time and id of the last key of the page before)
    /// in that order, newest first, ties by id. Read and sorted by the
    /// database, so a page costs the same however many keys were revoked
    /// before it (a list paged in the server read them all: 36 ms for one
    /// key of 561, found by a review as a hostile tenant).
    pub async fn api_keys_page(
        &mut self,
        after: Option<(DateTime<Utc>, KeyId)>,
        limit: i64,
    ) -> Result<Vec<ApiKeyInfo>, DbError> {
        Ok(self
            .keyset_rows(
                after.map(|(at, id)| (at, *id.as_uuid())),
                limit,
                ("created_at, key_id", "<"),
                |place| {
                    format!(
                        "SELECT {KEY_COLUMNS} FROM tenantry.api_keys
                         WHERE tenant_id = $1 {place}
                         ORDER BY created_at DESC, key_id DESC LIMIT $4"
                    )
                },
            )
            .await?
            .iter()
            .map(ApiKeyInfo::from_row)
            .collect())
    }

    /// One key of the scope's subtree.
    pub async fn get_api_key(&mut self, key_id: KeyId) -> Result<ApiKeyInfo, DbError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM tenantry.api_keys WHERE key_id = $1");
        let rows = self.rows(&sql, &[key_id.as_uuid()], &[Type::UUID]).await?;
        rows.first()
            .map(ApiKeyInfo::from_row)
            .ok_or_else(|| DbError::NotFound(format!("api key {key_id} not found")))
    }

    /// Revokes a key at once (idempotent). Not found for keys outside the subtree.
    /// A restricted actor cannot revoke a key with permissions it does not hold
    /// (a limited key locking the owner out).
    pub async fn revoke_api_key(&mut self, key_id: KeyId) -> Result<(), DbError> {
        self.ensure_holds_key(key_id, || {
            "the caller cannot revoke a key with permissions it does not hold".into()
        })
        .await?;
        self.rows(
            "SELECT tenantry.revoke_api_key($1)",
            &[key_id.as_uuid()],
            &[Type::UUID],
        )
        .await?;
        Ok(())
    }

    /// [`TenantScope::ensure_holds`] for every permission the key holds (looked up
    /// only for a restricted actor).
    async fn ensure_holds_key(
        &mut self,
        key_id: KeyId,
        refusal: impl FnOnce() -> String,
    ) -> Result<(), DbError> {
        if self.ctx.permissions.is_none() {
            return Ok(());
        }
        let held = self.key_permissions(key_id).await?;
        self.ensure_holds(held.iter().map(String::as_str), refusal)
    }

    /// Issues a successor key; the old one keeps working for `grace`, then expires.
    /// A restricted actor cannot rotate a key with permissions it does not hold.
    pub async fn rotate_api_key(
        &mut self,
        key_id: KeyId,
        grace: std::time::Duration,
    ) -> Result<NewApiKey, DbError> {
        self.ensure_holds_key(key_id, escalation).await?;
        let grace_secs = i64::try_from(grace.as_secs())
            .map_err(|_| DbError::invalid("grace", "grace period too long"))?;
        let grace_text = format!("{grace_secs} seconds");
        let rows = self
            .rows(
                "SELECT tenantry.rotate_api_key($1, $2::text::interval)",
                &[key_id.as_uuid(), &grace_text],
                &[Type::UUID, Type::TEXT],
            )
            .await?;
        let key: String = rows[0].get(0);
        let secret = ApiKeySecret::parse(&key)
            .ok_or_else(|| DbError::Internal("malformed key from database".into()))?;
        let prefix = secret.prefix().to_owned();
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM tenantry.new_api_key_info($1) WHERE rotated_from = $2"
        );
        let rows = self
            .rows(
                &sql,
                &[&prefix, key_id.as_uuid()],
                &[Type::TEXT, Type::UUID],
            )
            .await?;
        let info = rows
            .first()
            .map(ApiKeyInfo::from_row)
            .ok_or_else(|| DbError::Internal("rotated key not visible".into()))?;
        Ok(NewApiKey { secret, info })
    }

    /// Permission names a key of the subtree holds (its role's, its member's roles', or all when unbound).
    /// Not found for a key outside the subtree, exactly like a missing one.
    pub async fn key_permissions(&mut self, key_id: KeyId) -> Result<Vec<String>, DbError> {
        let rows = self
            .rows(
                "SELECT tenantry.key_permissions($1)",
                &[key_id.as_uuid()],
                &[Type::UUID],
            )
            .await?;
        // The SQL function answers NULL (not an error) for keys outside the subtree.
        rows.first()
            .and_then(|r| r.get::<_, Option<Vec<String>>>(0))
            .ok_or_else(|| DbError::NotFound(format!("api key {key_id} not found")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_key_parses_and_exposes_its_prefix() {
        let key = format!("tk_0123456789ab_{}", "f".repeat(64));
        let parsed = ApiKeySecret::parse(&key).unwrap();
        assert_eq!(parsed.prefix(), "0123456789ab");
        assert!(parsed.matches_hash(&parsed.sha256()));
        assert!(
            !format!("{parsed:?}").contains(&"f".repeat(64)),
            "debug output must not leak the secret"
        );
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in [
            "",
            "tk_",
            "tk_0123456789ab",
            &format!("tk_0123456789AB_{}", "f".repeat(64)),
            &format!("tk_0123456789ab_{}", "f".repeat(63)),
            &format!("xx_0123456789ab_{}", "f".repeat(64)),
            &format!("tk_0123456789ab_{}g", "f".repeat(63)),
        ] {
            assert!(ApiKeySecret::parse(bad).is_none(), "{bad:?} parsed");
        }
    }
}
