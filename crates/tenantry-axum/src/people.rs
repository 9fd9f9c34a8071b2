//! People signing in with the team's identity provider: bearer JWTs verified through [`crate::jwt`] (and cached by their SHA-256 until they expire), the tenant a person's request names (`X-Tenant-Id`, or the token's tenant claim) and their membership of it, cached like keys and dropped by the same invalidations; [`Person`], the extractor of the routes that need a signed-in person but no tenant.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{request::Parts, StatusCode},
};
use chrono::Utc;
use sha2::{Digest, Sha256};
use tenantry_db::{
    invalidation::Tag, ApiKeySecret, Database, Invalidation, Invalidations, MemberIdentity,
    MyTenant, TenantId, TenantStatus, UserId,
};

use crate::{
    auth::{bearer, listening},
    error::{ApiError, ProblemCode},
    idempotency::{PendingIdempotency, Reply, Written},
    jwt::{JwtError, JwtVerifier, VerifiedToken},
    tagged::TaggedCache,
    Tenantry,
};

/// The header a person's request names its tenant with.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// Most tokens and memberships kept at once; past it, expired entries go
/// first, then everything.
pub const PEOPLE_CACHE_CAPACITY: usize = 100_000;

/// The longest a verified token is trusted without checking its signature
/// again (never past its own `exp`).
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(60);

/// Whether a bearer credential is shaped like a JWT (three base64url parts),
/// not like a tenantry key or the admin token.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("ey")
}

/// Verified tokens by the SHA-256 of their text: a person's requests pay for
/// one signature check a minute, not one each.
pub(crate) struct TokenCache {
    /// By SHA-256 of the token: the verified token and when it was verified.
    entries: RwLock<HashMap<[u8; 32], CachedToken>>,
}

type CachedToken = (Arc<VerifiedToken>, Instant);

impl TokenCache {
    pub(crate) fn new() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) async fn verify(
        &self,
        verifier: &JwtVerifier,
        token: &str,
    ) -> Result<Arc<VerifiedToken>, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Utc::now();
        if let Some((verified, at)) = self.entries.read().expect("token cache lock").get(&key) {
            if at.elapsed() < TOKEN_CACHE_TTL && verified.expires_at > now {
                return Ok(verified.clone());
            }
        }
        let verified = Arc::new(
            verifier
                .verify(token)
                .await
                .map_err(|e| token_error(e, verifier.config().jwks_min_refetch_secs))?,
        );
        let mut entries = self.entries.write().expect("token cache lock");
        if entries.len() >= PEOPLE_CACHE_CAPACITY {
            entries.retain(|_, (v, at)| at.elapsed() < TOKEN_CACHE_TTL && v.expires_at > now);
            if entries.len() >= PEOPLE_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (verified.clone(), Instant::now()));
        Ok(verified)
    }
}

/// Every refused token gets the same answer; why goes to the log only. An
/// identity provider that cannot be reached is the one exception (503), whose
/// `Retry-After` is the time before the keys are fetched again
/// (`jwks_min_refetch_secs`: an earlier retry would get the same answer).
fn token_error(e: JwtError, refetch_secs: u64) -> ApiError {
    if e.is_unavailable() {
        tracing::warn!(error = %e, "identity provider keys unavailable");
        return ApiError::new(
            ProblemCode::IdentityProviderUnavailable,
            "the identity provider's keys cannot be fetched; retry later",
        )
        .with_retry_after(refetch_secs);
    }
    tracing::debug!(reason = %e, "bearer token refused");
    ApiError::invalid_token()
}

/// People's memberships by (user, tenant), as the database last gave them:
/// dropped when the tenant's members, roles or status change (here at once,
/// elsewhere within milliseconds through the invalidation feed; while that
/// feed is down, trusted for at most [`crate::auth::UNLISTENED_TTL`]). A removed member's
/// still-valid token is refused once the entry is gone.
pub struct MemberCache {
    /// `None`: not a member (or no such tenant), as the database said.
    entries: TaggedCache<(UserId, TenantId), Option<Arc<MemberIdentity>>>,
}

impl MemberCache {
    /// An empty cache whose entries live `ttl` while `invalidations` listens.
    pub fn with_invalidations(ttl: Duration, invalidations: &Invalidations) -> Self {
        Self {
            entries: TaggedCache::new(PEOPLE_CACHE_CAPACITY, ttl, listening(invalidations)),
        }
    }

    /// The membership of `user` in `tenant` (`None`: not a member, or no such tenant).
    pub(crate) async fn get(
        &self,
        db: &Database,
        user: UserId,
        tenant: TenantId,
    ) -> Result<Option<Arc<MemberIdentity>>, ApiError> {
        if let Some(hit) = self
            .entries
            .get(&(user, tenant), |identity| Some(identity.clone()))
        {
            return Ok(hit);
        }
        let ticket = self.entries.ticket();
        let identity = db.member_identity(user, tenant).await?.map(Arc::new);
        self.entries.insert(
            ticket,
            (user, tenant),
            identity.clone(),
            Tag::of(tenant),
            None,
        );
        Ok(identity)
    }

    /// Forgets what `invalidation` names (a tenant's members, or everything).
    pub fn apply(&self, invalidation: Invalidation) {
        if !matches!(invalidation, Invalidation::Key(_)) {
            self.entries.apply(invalidation);
        }
    }

    /// Forgets every membership of a tenant (changed through this instance).
    pub fn forget_tenant(&self, tenant: TenantId) {
        self.apply(Invalidation::tenant(tenant));
    }
}

/// The tenant a person's request names: the `X-Tenant-Id` header, else the
/// token's tenant claim; both present and different is 422 naming the
/// header (decided before any lookup, so it tells nothing about either
/// tenant: a member was told their own tenant was "not found").
pub(crate) fn requested_tenant(parts: &Parts, token: &VerifiedToken) -> Result<TenantId, ApiError> {
    match (named_tenant(parts)?, token.tenant) {
        (Some(h), Some(c)) if h != c => Err(ApiError::new(
            ProblemCode::ValidationFailed,
            "X-Tenant-Id names another tenant than the token's tenant claim: send the same tenant, \
             or leave the header out",
        )
        .with_field("X-Tenant-Id")),
        (Some(t), _) | (None, Some(t)) => Ok(t),
        (None, None) => Err(ApiError::new(
            ProblemCode::ValidationFailed,
            "name the tenant this request acts in: the X-Tenant-Id header",
        )
        .with_field("X-Tenant-Id")),
    }
}

/// The tenant the `X-Tenant-Id` header names, if it is there; 400
/// `invalid_header` when it is not a tenant id, as for every other malformed
/// header (it was 422 `validation_failed`, which a well-formed id that
/// conflicts with the credential's tenant answers: a new user's review), and
/// when it is sent more than once (which one counts would be a guess, as for
/// `Authorization` and `Idempotency-Key`).
pub fn named_tenant(parts: &Parts) -> Result<Option<TenantId>, ApiError> {
    if parts.headers.get_all(TENANT_HEADER).iter().count() > 1 {
        return Err(ApiError::new(
            ProblemCode::InvalidHeader,
            "send X-Tenant-Id once: which of several tenants counts would be a guess",
        )
        .with_field("X-Tenant-Id"));
    }
    parts
        .headers
        .get(TENANT_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| TenantId::parse(s.trim()).ok())
                .ok_or_else(|| {
                    ApiError::new(
                        ProblemCode::InvalidHeader,
                        "X-Tenant-Id must be a tenant id (a UUID)",
                    )
                    .with_field("X-Tenant-Id")
                })
        })
        .transpose()
}

/// The answer for a tenant the person is not a member of: the same as for
/// a tenant that does not exist.
pub(crate) fn not_a_member(tenant: TenantId) -> ApiError {
    ApiError::new(ProblemCode::NotFound, format!("tenant {tenant} not found"))
}

/// A request made by a signed-in person (a bearer JWT of the configured
/// identity provider), before any tenant: their tenants, accepting an
/// invitation. Any other bearer is refused with the one `401` of every
/// refused credential, except a credential valid elsewhere (an API key, an
/// impersonation token, the admin token): `403 wrong_credential`.
///
/// It answers for this person only and hands out no database: a handler
/// cannot open a tenant's scope through it (a person reaches a tenant's data
/// through the tenant extractor, which checks the membership first).
///
/// ```compile_fail
/// fn reaches_the_pool(person: &tenantry_axum::Person) {
///     let _ = person.db();
/// }
/// ```
pub struct Person {
    db: Database,
    token: Arc<VerifiedToken>,
    members: Arc<MemberCache>,
    /// The request's `Idempotency-Key` and fingerprint ([`crate::idempotency::middleware`]).
    idempotency: Option<Arc<PendingIdempotency>>,
    /// The tenant `X-Tenant-Id` names, if the request sent one: a person's
    /// route acts in no tenant, and [`Person::create_tenant`] refuses one.
    named_tenant: Option<TenantId>,
}

impl Person {
    /// The person's user id.
    pub fn user(&self) -> UserId {
        self.token.user_id
    }

    /// Their email, when the token carries one the provider verified
    /// ([`VerifiedToken::email_verified`]).
    pub fn email(&self) -> Option<&str> {
        self.token
            .email
            .as_deref()
            .filter(|_| self.token.email_verified)
    }

    /// The verified token.
    pub fn token(&self) -> &VerifiedToken {
        &self.token
    }

    /// The tenants this person is a member of (not deleted), by name: what
    /// [`Database::my_tenants`] answers for this person and nobody else.
    pub async fn my_tenants(&self) -> Result<Vec<MyTenant>, ApiError> {
        Ok(self.db.my_tenants(self.user()).await?)
    }

    /// What this person holds in `tenant` (`None`: not a member, or no such
    /// tenant), as [`Database::member_identity`] answers for this person.
    pub async fn membership(&self, tenant: TenantId) -> Result<Option<MemberIdentity>, ApiError> {
        Ok(self.db.member_identity(self.user(), tenant).await?)
    }

    /// Accepts an invitation as this person with the email their provider
    /// verified: they become a member of its tenant, whose id is returned,
    /// and this server's cached "not a member" of it is dropped. A token
    /// whose email the provider did not verify is refused like an unknown,
    /// expired, revoked, used or someone else's invitation (404): anyone
    /// could otherwise claim an invitation made out to an address they typed.
    pub async fn accept_invitation(&self, token: &str) -> Result<TenantId, ApiError> {
        // (No invitation is made out to an address holding a NUL, which
        // the database refuses with no field named.)
        if self.token.email.is_some() && !self.token.email_verified
            || self.email().is_some_and(|e| e.contains('\0'))
        {
            return Err(invitation_refused());
        }
        let tenant = self
            .db
            .accept_invitation(self.user(), token, self.email())
            .await?;
        self.members.forget_tenant(tenant);
        Ok(tenant)
    }

    /// Creates a tenant of this person's own, which they own, with the
    /// email their provider verified ([`Database::create_my_tenant`]),
    /// answered `201 Created`: 403 while the operator lets no person create
    /// tenants (`tenantry.signup_policy`), 409 once they have created as many
    /// as it allows, 422 (field `email`) for a token without a verified
    /// email. Under the request's `Idempotency-Key`
    /// ([`crate::idempotency::middleware`]) the key is kept in this person's
    /// own namespace: a retry of a committed request is answered with its
    /// stored response (`Idempotent-Replayed: true`) and makes no second
    /// tenant ([`Database::create_my_tenant_idempotent`]).
    pub async fn create_tenant(&self, name: &str) -> Result<Written<MyTenant>, ApiError> {
        // A root tenant of the person's own, whatever the request names: a
        // client meaning a child of the tenant it named made a root tenant
        // that counted against the person's limit (a review of people).
        if let Some(tenant) = self.named_tenant {
            return Err(ApiError::invalid(
                "X-Tenant-Id",
                format!(
                    "creating a tenant of your own makes a root tenant and acts in no tenant: send no \
                     X-Tenant-Id (it named {tenant}; a tenant's children are made by its operator)"
                ),
            ));
        }
        let Some(email) = self.email() else {
            return Err(ApiError::invalid(
                "email",
                "creating a tenant needs a token with the email your identity provider verified (email_verified: true)",
            ));
        };
        if email.contains('\0') {
            // The database's refusal of a NUL names no field (an outside
            // review); the sign-in's email is the one at fault.
            return Err(ApiError::invalid(
                "email",
                "the email of your sign-in is not an email address tenantry takes (it holds a NUL character)",
            ));
        }
        let request = self
            .idempotency
            .as_deref()
            .map(PendingIdempotency::request)
            .transpose()?;
        let reply = Reply::new(StatusCode::CREATED);
        let outcome = self
            .db
            .create_my_tenant_idempotent(self.user(), name, email, request.as_ref(), |tenant| {
                reply.stored(tenant)
            })
            .await?;
        Ok(reply.written(outcome))
    }

    // No accessor to the `Database`: with it, a handler of a person who is
    // a member of nothing could open any tenant's scope (`db.tenant(..)`).
    // A person reaches a tenant's data through the tenant extractor, which
    // checks the membership first.
}

/// The answer the database gives every refused invitation (TN404), for one
/// refused before the database is asked: nobody tells them apart.
fn invitation_refused() -> ApiError {
    ApiError::new(
        ProblemCode::NotFound,
        "invitation not found or no longer valid",
    )
}

impl<S> FromRequestParts<S> for Person
where
    Tenantry: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tenantry = Tenantry::from_ref(state);
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        if let (Some(verifier), true) = (tenantry.jwt.as_ref(), looks_like_jwt(token)) {
            let token = tenantry.tokens.verify(verifier, token).await?;
            crate::preconditions::UnmetPrecondition::refuse(parts)?;
            // A malformed X-Tenant-Id is refused as on every route (it was
            // ignored here: a review of people); a tenant id is harmless to
            // reading a person's tenants or accepting an invitation (a
            // client that sends its current tenant on every request).
            let named_tenant = named_tenant(parts)?;
            return Ok(Self {
                db: tenantry.db,
                token,
                members: tenantry.members,
                idempotency: parts.extensions.get().cloned(),
                named_tenant,
            });
        }
        // Only a credential that works elsewhere is told it is the wrong
        // kind; anything else is refused like every other bad token.
        let Some(kind) = tenantry.valid_credential_kind(token).await? else {
            return Err(ApiError::invalid_token());
        };
        Err(ApiError::new(
            ProblemCode::WrongCredential,
            if tenantry.jwt.is_some() {
                format!("this route needs a person's token from the identity provider, not {kind}")
            } else {
                format!("this route is for people signed in with the identity provider, and none is configured ({kind} cannot use it)")
            },
        ))
    }
}

impl Tenantry {
    /// Which credential `token` is, when it is a valid one of any kind: `the
    /// admin token`, `a person's token`, `an API key` or `an impersonation
    /// session` (a key's or session's tenant not deleted). `None` for
    /// anything else (junk, forged, revoked, expired). A route that needs
    /// another kind tells a valid credential `403 wrong_credential` and
    /// refuses the rest with the one `401` every bad credential gets, so it
    /// confirms nothing about a credential that does not work anywhere.
    pub async fn valid_credential_kind(
        &self,
        token: &str,
    ) -> Result<Option<&'static str>, ApiError> {
        if self
            .admin_token
            .as_ref()
            .is_some_and(|admin| admin.matches(token))
        {
            return Ok(Some("the admin token"));
        }
        if let (Some(verifier), true) = (self.jwt.as_ref(), looks_like_jwt(token)) {
            // Refused for the token's own reasons (a bad signature, an
            // expired token): not shown to be valid. An identity provider out
            // of reach leaves it unknown: 503, as on the person's own routes,
            // not a 401 that would sign a valid person out (found by a
            // review of people's tokens).
            return match self.tokens.verify(verifier, token).await {
                Ok(_) => Ok(Some("a person's token")),
                Err(e) if e.code() == ProblemCode::IdentityProviderUnavailable => Err(e),
                Err(_) => Ok(None),
            };
        }
        if let Some(secret) = ApiKeySecret::parse(token) {
            let key = self.keys.verify(&self.db, &secret).await?;
            return Ok(key
                .filter(|k| k.tenant_status != TenantStatus::Deleted)
                .map(|_| "an API key"));
        }
        if token.starts_with("timp_") {
            let session = self.impersonations.verify(&self.db, token).await?;
            return Ok(session
                .filter(|s| s.tenant_status != TenantStatus::Deleted)
                .map(|_| "an impersonation session"));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `X-Tenant-Id` twice is refused, whatever the two say.
    #[test]
    fn a_repeated_tenant_header_is_refused() {
        let id = TenantId::from_uuid(uuid::Uuid::new_v4());
        let (parts, ()) = axum::http::Request::builder()
            .header(TENANT_HEADER, id.to_string())
            .header(TENANT_HEADER, id.to_string())
            .body(())
            .unwrap()
            .into_parts();
        let err = named_tenant(&parts).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        let (parts, ()) = axum::http::Request::builder()
            .header(TENANT_HEADER, id.to_string())
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(named_tenant(&parts).unwrap(), Some(id));
    }
}
