//! The server's callers: tenant keys through `tenantry_axum`'s [`TenantCaller`] (one copy of the key check for the server and for applications), and here the admin token's [`AdminCaller`] and [`Caller`] for routes that take either. The only way a handler gets a scope.

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts};
use tenantry_axum::auth::bearer;
use tenantry_axum::idempotency::{PendingIdempotency, Reply, Written};
use tenantry_db::{
    AdminScope, Database, IdempotentRequest, Isolation, ScopeFuture, TenantContext, TenantId,
    TenantScope, TierMove,
};

pub use tenantry_axum::{KeyCache, RateLimits, TenantCaller};

use crate::{
    config::AdminToken,
    error::{ApiError, ProblemCode},
    state::AppState,
};

/// A request made with the admin token. The operator's requests are never
/// written to a tenant's request log: the tenant would see when the operator
/// looked, and pay for it in its usage. They are in the server's metrics.
pub struct AdminCaller {
    db: Database,
    tenantry: tenantry_axum::Tenantry,
    /// The request's `Idempotency-Key` (kept in the operator's namespace).
    idempotency: Option<Arc<PendingIdempotency>>,
}

/// Audit actor label of the admin token.
pub const ADMIN_ACTOR: &str = "admin";

impl AdminCaller {
    /// An administrative transaction (tenants, hierarchy, audit), audited as `admin`.
    pub async fn admin_scope(&self) -> Result<AdminScope, ApiError> {
        Ok(self.db.admin(ADMIN_ACTOR).await?)
    }

    /// A transaction inside one tenant, audited as `admin` (keys, usage of that tenant).
    pub async fn tenant_scope(&self, tenant: TenantId) -> Result<TenantScope, ApiError> {
        Ok(self
            .db
            .tenant(TenantContext::new(tenant).with_actor(ADMIN_ACTOR))
            .await?)
    }

    /// [`TenantCaller::write`] inside one tenant, audited as `admin`.
    pub async fn tenant_write<A: Sync + ?Sized, T>(
        &self,
        tenant: TenantId,
        args: &A,
        work: impl for<'s> FnMut(&'s mut TenantScope, &'s A) -> ScopeFuture<'s, T>,
    ) -> Result<T, ApiError> {
        let ctx = TenantContext::new(tenant).with_actor(ADMIN_ACTOR);
        Ok(self.db.in_tenant(&ctx, args, work).await?)
    }

    /// An administrative write (tenants, hierarchy), run again a few times
    /// when a concurrent transaction rolled it back ([`Database::in_admin`]).
    pub async fn admin_write<A: Sync + ?Sized, T>(
        &self,
        args: &A,
        work: impl for<'s> FnMut(&'s mut AdminScope, &'s A) -> ScopeFuture<'s, T>,
    ) -> Result<T, ApiError> {
        Ok(self.db.in_admin(ADMIN_ACTOR, args, work).await?)
    }

    /// [`AdminCaller::admin_write`] answering `reply` with its value, under
    /// the request's `Idempotency-Key` when it has one: the key (the
    /// operator's) is claimed and the response stored in the write's own
    /// transaction, and a retry of a committed request gets the stored
    /// response without writing again ([`Database::in_admin_idempotent`]).
    pub async fn admin_write_response<A: Sync + ?Sized, T: serde::Serialize>(
        &self,
        reply: Reply,
        args: &A,
        work: impl for<'s> FnMut(&'s mut AdminScope, &'s A) -> ScopeFuture<'s, T>,
    ) -> Result<Written<T>, ApiError> {
        let outcome = self
            .db
            .in_admin_idempotent(
                ADMIN_ACTOR,
                self.idempotency()?.as_ref(),
                args,
                work,
                |value| reply.stored(value),
            )
            .await?;
        Ok(reply.written(outcome))
    }

    /// [`AdminCaller::tenant_write`] answering `reply` with its value, under
    /// the request's `Idempotency-Key` (the operator's) when it has one.
    pub async fn tenant_write_response<A: Sync + ?Sized, T: serde::Serialize>(
        &self,
        tenant: TenantId,
        reply: Reply,
        args: &A,
        work: impl for<'s> FnMut(&'s mut TenantScope, &'s A) -> ScopeFuture<'s, T>,
    ) -> Result<Written<T>, ApiError> {
        let ctx = TenantContext::new(tenant).with_actor(ADMIN_ACTOR);
        let outcome = self
            .db
            .in_tenant_idempotent(&ctx, self.idempotency()?.as_ref(), args, work, |value| {
                reply.stored(value)
            })
            .await?;
        Ok(reply.written(outcome))
    }

    /// The request under its `Idempotency-Key`, in the operator's namespace
    /// (creating a tenant has no tenant to keep one for); its body as the
    /// handler read it, so only once the handler has.
    fn idempotency(&self) -> Result<Option<IdempotentRequest>, ApiError> {
        self.idempotency
            .as_deref()
            .map(|pending| pending.request().map(|r| r.for_operator()))
            .transpose()
    }

    /// Refuses a request sent with an `Idempotency-Key`: for a route whose
    /// work spans several transactions, which one key cannot cover.
    pub fn refuse_idempotency_key(&self) -> Result<(), ApiError> {
        match self.idempotency {
            None => Ok(()),
            Some(_) => Err(ApiError::new(
                ProblemCode::InvalidHeader,
                "this route runs in several transactions and does not take an Idempotency-Key",
            )
            .with_field("Idempotency-Key")),
        }
    }

    /// Moves a tenant to another tier online ([`Database::move_tenant`]),
    /// audited as `admin`.
    pub async fn move_tenant(
        &self,
        tenant: TenantId,
        to: Isolation,
        batch_rows: i32,
    ) -> Result<TierMove, ApiError> {
        Ok(self
            .db
            .move_tenant(ADMIN_ACTOR, tenant, to, batch_rows, |_| {})
            .await?)
    }

    /// The key cache, to drop entries after security changes.
    pub fn key_cache(&self) -> &KeyCache {
        self.tenantry.key_cache()
    }
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        if !state.admin_token.matches(token) {
            // A credential that works elsewhere (a tenant's key, a person's
            // token, an impersonation session) is told it is the wrong kind;
            // anything else gets the one 401 of every refused credential.
            return Err(match state.tenantry.valid_credential_kind(token).await? {
                Some(kind) => ApiError::new(
                    ProblemCode::WrongCredential,
                    format!("this route needs the admin token, not {kind}"),
                ),
                None => ApiError::invalid_token(),
            });
        }
        // The admin token acts in no tenant through X-Tenant-Id, but the
        // header is held to the form the API description declares for every
        // caller (a malformed or repeated one was served: found by an
        // outside check with schemathesis).
        tenantry_axum::people::named_tenant(parts)?;
        tenantry_axum::preconditions::UnmetPrecondition::refuse(parts)?;
        Ok(Self {
            db: state.db.clone(),
            tenantry: state.tenantry.clone(),
            idempotency: parts.extensions.get().cloned(),
        })
    }
}

/// Either credential, for routes both may call (`POST /v1/tenants`).
pub enum Caller {
    /// The admin token.
    Admin(Box<AdminCaller>),
    /// A tenant key.
    Tenant(TenantCaller),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let is_admin = bearer(parts).is_some_and(|t| state.admin_token.matches(t));
        if is_admin {
            Ok(Caller::Admin(Box::new(
                AdminCaller::from_request_parts(parts, state).await?,
            )))
        } else {
            Ok(Caller::Tenant(
                TenantCaller::from_request_parts(parts, state).await?,
            ))
        }
    }
}

/// Who may read `/metrics` besides the admin token: the holder of the
/// metrics token (`metrics_token`, a scraper's credential that opens nothing
/// else) and, with `metrics_public`, anyone, without the series that name
/// tenants.
pub struct MetricsAccess {
    token: Option<AdminToken>,
    public: bool,
}

impl MetricsAccess {
    /// Whether a request without `Authorization` reads the totals.
    pub fn is_public(&self) -> bool {
        self.public
    }

    /// From the settings' `metrics_token` and `metrics_public`.
    pub fn new(token: Option<&str>, public: bool) -> Self {
        Self {
            token: token.map(AdminToken::new),
            public,
        }
    }
}

/// A reader of `/metrics`: `true` for the admin or metrics token, which see
/// every series, `false` for a request without `Authorization` where
/// `metrics_public` lets anyone read the totals. Without it, such a request
/// is refused (401): the totals are every tenant's traffic by route, and with
/// few tenants that is one tenant's activity (an oracle review: anyone
/// watched a victim's key creations and shares one scrape apart). The tokens
/// are checked without the database, so the scraper still reads the pool's
/// and caches' state while it is down; another credential is told what it is
/// (403) or refused (401) as on the admin routes.
pub struct MetricsReader(pub bool);

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let access = &state.metrics;
        let every_series = if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            if !access.public {
                return Err(ApiError::new(
                    ProblemCode::Unauthorized,
                    "/metrics takes the admin token or the metrics token (metrics_token) as bearer; \
                     metrics_public = true lets anyone read its totals",
                ));
            }
            false
        } else {
            let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
            if !state.admin_token.matches(token)
                && !access.token.as_ref().is_some_and(|t| t.matches(token))
            {
                return Err(match state.tenantry.valid_credential_kind(token).await? {
                    Some(kind) => ApiError::new(
                        ProblemCode::WrongCredential,
                        format!("/metrics takes the admin token or the metrics token, not {kind}"),
                    ),
                    None => ApiError::invalid_token(),
                });
            }
            true
        };
        tenantry_axum::preconditions::UnmetPrecondition::refuse(parts)?;
        Ok(MetricsReader(every_series))
    }
}
