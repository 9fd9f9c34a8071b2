//! tenantry-db: multi-tenancy enforced by PostgreSQL.
//!
//! The database is the enforcement point: row-level security (forced) on every
//! tenant table, least-privilege roles, and the SQL API of the multi-tenant
//! guide made safe (see `migrations/`). This crate adds:
//!
//! - [`migrate`]: the migration runner;
//! - [`provision`](mod@provision): create and migrate a database as a superuser, and hand back
//!   the connection settings of the superuser and of the server's login role
//!   (a private PostgreSQL to run it on is the `tenantry-embedded` crate);
//! - [`Database`]: the pool, and the only doors to data: [`TenantScope`] (a
//!   transaction acting for one tenant, its context proven to the database in the
//!   same flight as its first statement: see [`ContextKey`]) and [`AdminScope`], and
//!   [`Database::in_tenant`], which runs a unit of work in a fresh scope and
//!   retries it a bounded number of times when a concurrent transaction
//!   rolled it back ([`RetryPolicy`]);
//! - domain operations on those scopes: tenants (with typed [`TenantSettings`]),
//!   resources and sharing, members, roles and permissions, API keys, usage and audit;
//! - `local` (feature `embedded`): the embedded default, a private PostgreSQL
//!   started in a data directory with the `tenantry` database provisioned;
//! - [`context_keys`]: rotating the keys with which servers prove tenant
//!   contexts (add, list, retire), for operators;
//! - [`invalidation`]: the feed that tells every server process what to drop
//!   from its caches when a key, tenant, role or permission changes anywhere
//!   (LISTEN/NOTIFY on a dedicated connection);
//! - [`idempotency`]: idempotency keys of tenant writes, claimed and answered
//!   in the write's own transaction ([`Database::in_tenant_idempotent`]);
//! - [`offboard`]: a tenant's export (a checked archive of every row it owns),
//!   its import under a new or the same id, and its purge after the grace period;
//! - [`tables`]: the team's own tables made tenant tables (adopt, release, the doctor),
//!   and typed access to them in a scope: [`TenantScope::query`], `query_one`,
//!   `query_opt` and `execute`, rows read through [`FromRow`], statements as [`Sql`].
//!
//! ```no_run
//! # async fn demo(db: tenantry_db::Database, tenant: tenantry_db::TenantId) -> Result<(), tenantry_db::DbError> {
//! use tenantry_db::{NewResource, TenantContext};
//! let mut scope = db.tenant(TenantContext::new(tenant)).await?;
//! let created = scope
//!     .create_resource(&NewResource { name: "report".into(), data: serde_json::json!({"q": 3}).into() })
//!     .await?;
//! scope.commit().await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod access;
pub mod citus;
mod context;
pub mod context_keys;
mod database;
mod error;
pub mod idempotency;
mod ids;
pub mod invalidation;
mod json;
mod keys;
#[cfg(feature = "embedded")]
pub mod local;
pub mod migrate;
pub mod offboard;
mod people;
pub mod provision;
mod resources;
mod retry;
mod row;
mod scope;
mod session;
mod settings;
pub mod sweep;
pub mod tables;
mod tenants;
#[cfg(feature = "test-support")]
pub mod testing;
mod tiers;
pub mod tls;
pub mod turns;
mod usage;

pub use access::{Member, NewMember, Permission, PermissionSet, Role};
pub use context::{ContextKey, MalformedContextKey, SignedContext};
pub use context_keys::{ContextKeyError, ContextKeyInfo};
pub use database::{
    ConnectTo, Database, DatabaseConfig, LoginRoleCheck, PowerfulRole, StatementMode, Timeouts,
    WritesRefused,
};
pub use error::{with_sources, BusyShare, Conflict, DbError};
pub use idempotency::{IdempotencyKey, Idempotent, IdempotentRequest, StoredResponse};
#[doc(hidden)]
pub use ids::__private;
pub use ids::{
    AuditEventId, ImpersonationId, InvitationId, KeyId, ParseIdError, ResourceId, RoleId, TenantId,
    UserId,
};
pub use invalidation::{Invalidation, Invalidations, ListenOptions, ListenTo, Subscription};
pub use json::JsonText;
pub use keys::{ApiKeyInfo, ApiKeySecret, KeyIdentity, NewApiKey, NewKeyOptions};
pub use offboard::PurgedTenant;
pub use people::{
    Impersonation, ImpersonationIdentity, Invitation, IssuedImpersonation, IssuedInvitation,
    MemberIdentity, MyTenant, NewInvitation,
};
pub use provision::{conninfo, provision, ProvisionError, Provisioned, ServerLogin};
pub use resources::{
    within_calendar, Access, NewResource, OwnerFilter, Resource, ResourceCursor, ResourcePage,
    ResourceQuery, ResourceUpdate, Share, PAGE_BYTES,
};
pub use retry::{RetryPolicy, ScopeFuture};
pub use row::{FromRow, RowError, Sql};
pub use scope::{AdminScope, IsolationLevel, TenantContext, TenantScope, Under, Visibility};
pub use settings::{Limit, TenantSettings, DEFAULT_CHILD_CREATION_RATE};
pub use tables::{
    AdoptOptions, ExistingRows, ProblemSeverity, TableError, TableProblem, TenantTable,
};
pub use tenants::{
    Isolation, NewTenant, Tenant, TenantStatus, TenantUpdate, REQUEST_LOG_KEEP_DAYS,
};
pub use tiers::{MoveProgress, TierMove};
/// The driver tenantry speaks to PostgreSQL with: `Row`, `ToSql`, `types::Type` and the rest, at the version the library was built against (no second dependency to keep in step).
pub use tokio_postgres;
pub use usage::{
    AdoptedTableUsage, AuditEntry, AuditQuery, KeyUsage, MetricsRow, OperatorAuditEntry,
    RequestLogEntry, ResourceUsage, TopTenant, UsageRanking,
};
