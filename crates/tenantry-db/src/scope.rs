//! Tenant-scoped and admin transactions: the only way this library reaches tenant data. Owns pipelining of BEGIN, the role and the proven context (`context`) with the first statement, the statement modes, typed access to any table ([`TenantScope::query`] and its siblings), commit, and rollback on drop. Mapping rows to types is `row`'s.

use std::{future::Future, pin::Pin, sync::Arc};

use futures_util::{
    future::{join, join_all, maybe_done, MaybeDone},
    TryStreamExt,
};
use tokio_postgres::{
    types::{ToSql, Type},
    Row, RowStream, Statement,
};
use tracing::Instrument;

use crate::{
    context::{Contexts, SignedContext},
    session::Object,
    DbError, FromRow, PermissionSet, Sql, StatementMode, TenantId, UserId,
};

/// Who is acting, and for which tenant. The only input that opens a [`TenantScope`].
#[derive(Debug, Clone)]
pub struct TenantContext {
    /// The tenant whose data (and descendants' data) the transaction may reach.
    pub tenant: TenantId,
    /// The acting member, if any (recorded as `created_by`, `shared_by`).
    pub user: Option<UserId>,
    /// Audit label of the actor, e.g. `key:<id>` or `admin`; defaults to the member or the login.
    pub actor: Option<String>,
    /// What the acting credential holds; `None`: unrestricted (an operator, the
    /// CLI, the admin token). A restricted actor cannot give a key, role or
    /// member more than this (see [`PermissionSet`]).
    pub permissions: Option<PermissionSet>,
    /// Who acts as the member (an impersonation: `admin`, `user:<owner>`),
    /// recorded with every audit row (`tenantry.current_impersonator()`).
    pub impersonator: Option<String>,
}

impl TenantContext {
    /// A context for `tenant` with no member and the default actor.
    pub fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            user: None,
            actor: None,
            permissions: None,
            impersonator: None,
        }
    }

    /// Sets the acting member.
    pub fn with_user(mut self, user: Option<UserId>) -> Self {
        self.user = user;
        self
    }

    /// Sets the audit actor label.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Records that `impersonator` acts as the member.
    pub fn with_impersonator(mut self, impersonator: impl Into<String>) -> Self {
        self.impersonator = Some(impersonator.into());
        self
    }

    /// Restricts the actor to what its credential holds (e.g. a key's permissions).
    pub fn with_permissions(mut self, permissions: PermissionSet) -> Self {
        self.permissions = Some(permissions);
        self
    }
}

/// Which policies a statement runs under. `All` is the guide's semantics
/// (own, descendants' and shared rows); the narrow roles let the planner use
/// one index instead of OR-ing policy arms (docs/architecture.md, "Policies").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Own, descendants' and shared-with-me rows (`tenantry_app`).
    All,
    /// Own and descendants' rows only (`tenantry_app_own`).
    Owned,
    /// Rows shared with the current tenant only, read only (`tenantry_app_shared`).
    SharedWithMe,
}

impl Visibility {
    fn set_role(self, citus: bool) -> &'static str {
        match self {
            Visibility::All => LocalRole::App.set(citus),
            Visibility::Owned => LocalRole::AppOwn.set(citus),
            Visibility::SharedWithMe => LocalRole::AppShared.set(citus),
        }
    }
}

/// A role a transaction switches to for its own length.
#[derive(Debug, Clone, Copy)]
enum LocalRole {
    App,
    AppOwn,
    AppShared,
    Admin,
    Logger,
}

impl LocalRole {
    /// The statement that switches to it: `SET LOCAL ROLE`, or on Citus
    /// `set_config('role', …, true)`, the same switch that Citus does not
    /// replay on its worker connections. (Once a transaction's context is
    /// carried to the workers, Citus replays its SET LOCAL statements there,
    /// and a replayed SET LOCAL ROLE is refused: the worker connection is
    /// that role already.)
    fn set(self, citus: bool) -> &'static str {
        match (self, citus) {
            (LocalRole::App, false) => "SET LOCAL ROLE tenantry_app",
            (LocalRole::AppOwn, false) => "SET LOCAL ROLE tenantry_app_own",
            (LocalRole::AppShared, false) => "SET LOCAL ROLE tenantry_app_shared",
            (LocalRole::Admin, false) => "SET LOCAL ROLE tenantry_admin",
            (LocalRole::Logger, false) => "SET LOCAL ROLE tenantry_logger",
            (LocalRole::App, true) => "SELECT pg_catalog.set_config('role', 'tenantry_app', true)",
            (LocalRole::AppOwn, true) => {
                "SELECT pg_catalog.set_config('role', 'tenantry_app_own', true)"
            }
            (LocalRole::AppShared, true) => {
                "SELECT pg_catalog.set_config('role', 'tenantry_app_shared', true)"
            }
            (LocalRole::Admin, true) => {
                "SELECT pg_catalog.set_config('role', 'tenantry_admin', true)"
            }
            (LocalRole::Logger, true) => {
                "SELECT pg_catalog.set_config('role', 'tenantry_logger', true)"
            }
        }
    }
}

/// A server connection's context: reveal the chain's secret, commit to the next (01_context.sql).
const ENTER_CONTEXT: &str = "SELECT tenantry.enter_context($1, $2, $3, $4, $5, $6, $7, $8)";
const ENTER_CONTEXT_TYPES: &[Type] = &[
    Type::BYTEA,
    Type::BYTEA,
    Type::UUID,
    Type::UUID,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::TEXT,
    Type::TEXT,
];
/// A pooled connection's context: signed with the context key.
const ENTER_CONTEXT_SIGNED: &str =
    "SELECT tenantry.enter_context_signed($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
const ENTER_CONTEXT_SIGNED_TYPES: &[Type] = &[
    Type::INT4,
    Type::INT8,
    Type::UUID,
    Type::UUID,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::BYTEA,
];

/// A schema tenant's transaction puts its schema first on the search path
/// (07_schemas.sql, `use_tenant_schema`): unqualified names of tenant tables
/// then name the tenant's own tables.
const USE_TENANT_SCHEMA: &str = "SELECT tenantry.use_tenant_schema($1)";

/// Which table of a tenant table family a transaction's statements name
/// (docs/architecture.md, "Tiers"), from the tenant's cached context part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The part is not known yet, or a descendant's rows are outside the
    /// tenant's own tables: the pooled table with every schema tenant's
    /// table that inherits it.
    Family,
    /// A pooled tenant whose descendants are pooled: the pooled table alone.
    Pooled,
    /// A schema tenant without descendants: its own tables, by unqualified
    /// name under the search path the setup puts first.
    Schema,
}

impl Route {
    /// The resources table to read, change or delete from.
    pub(crate) fn resources(self) -> &'static str {
        match self {
            Route::Family => "tenantry.resources",
            Route::Pooled => "ONLY tenantry.resources",
            Route::Schema => "resources",
        }
    }

    /// The resources table to insert into: the tenant's own. Unknown
    /// ([`Route::Family`]): the pooled one, where a schema tenant's row is
    /// refused (`tenant_row_home`), so callers let the database choose then.
    pub(crate) fn resources_insert(self) -> &'static str {
        match self {
            Route::Family | Route::Pooled => "tenantry.resources",
            Route::Schema => "resources",
        }
    }

    /// The route a part (`,s<schema>[,m],v...`) gives, and the schema to put
    /// first on the search path: a schema tenant's, whatever the route, so
    /// that unqualified names of tenant tables always name its own tables
    /// (the pooled table, qualified, reads the whole family).
    fn of_part(part: Option<&str>) -> (Route, Option<String>) {
        let Some(part) = part else {
            return (Route::Family, None);
        };
        let schema = part
            .strip_prefix(",s")
            .and_then(|rest| rest.split(',').next())
            .unwrap_or("");
        let own_schema = (!schema.is_empty() && schema != "tenantry").then(|| schema.to_owned());
        let route = if schema.is_empty() || part.contains(",m,") {
            Route::Family
        } else if own_schema.is_none() {
            Route::Pooled
        } else {
            Route::Schema
        };
        (route, own_schema)
    }
}

/// The values of a transaction's context statement, owned for the length of its flight.
enum ContextArgs {
    Enter {
        reveal: Vec<u8>,
        next: Vec<u8>,
        tenant: Option<uuid::Uuid>,
        user: Option<uuid::Uuid>,
        actor: Option<String>,
        grants: Option<Vec<String>>,
        impersonator: Option<String>,
        part: Option<String>,
    },
    Signed {
        signed: SignedContext,
        tenant: Option<uuid::Uuid>,
        user: Option<uuid::Uuid>,
        key_id: i32,
        mac: Vec<u8>,
    },
}

impl ContextArgs {
    fn statement(&self) -> (&'static str, &'static [Type], Vec<&(dyn ToSql + Sync)>) {
        match self {
            ContextArgs::Enter {
                reveal,
                next,
                tenant,
                user,
                actor,
                grants,
                impersonator,
                part,
            } => (
                ENTER_CONTEXT,
                ENTER_CONTEXT_TYPES,
                vec![
                    reveal,
                    next,
                    tenant,
                    user,
                    actor,
                    grants,
                    impersonator,
                    part,
                ],
            ),
            ContextArgs::Signed {
                signed,
                tenant,
                user,
                key_id,
                mac,
            } => (
                ENTER_CONTEXT_SIGNED,
                ENTER_CONTEXT_SIGNED_TYPES,
                vec![
                    &signed.pid,
                    &signed.expires_at,
                    tenant,
                    user,
                    &signed.actor,
                    &signed.grants,
                    &signed.impersonator,
                    &signed.tenant_part,
                    key_id,
                    mac,
                ],
            ),
        }
    }
}

enum Setup {
    Tenant(TenantContext),
    Admin(String),
    /// A signed-in person before any tenant (`tenantry_user_v1_`): their
    /// memberships, accepting an invitation.
    User(UserId),
    /// No tenant: key verification as `tenantry_app`.
    Anonymous,
    /// Appending request-log rows as `tenantry_logger`, in the
    /// administrative context of [`REQUEST_LOG_ACTOR`].
    Logger,
}

/// The actor of the request-log writer's administrative context.
const REQUEST_LOG_ACTOR: &str = "request_log";

/// What one step of a flight returns: its rows, and how many rows the command
/// affected (from its completion tag; `None` for simple-query steps).
#[derive(Default)]
pub(crate) struct Out {
    pub rows: Vec<Row>,
    pub affected: Option<u64>,
    /// A simple query's last value (the session check's answer).
    pub text: Option<String>,
}

type Step<'a> = Pin<Box<dyn Future<Output = Result<Out, tokio_postgres::Error>> + Send + 'a>>;
type Prepare<'a> =
    Pin<Box<dyn Future<Output = Result<Statement, tokio_postgres::Error>> + Send + 'a>>;

/// A statement to send: SQL, parameters and the types of its parameters.
/// `types` may be shorter than `params` or empty: the server infers the rest.
/// With every type given, the unnamed mode sends it in the flight itself.
pub(crate) struct Stmt<'a> {
    pub sql: &'a str,
    pub params: &'a [&'a (dyn ToSql + Sync)],
    pub types: &'a [Type],
}

impl Stmt<'_> {
    /// Unnamed mode: whether the server must name the parameter types first.
    fn needs_describe(&self) -> bool {
        self.types.len() != self.params.len()
    }
}

/// The transaction machinery shared by [`TenantScope`] and [`AdminScope`].
pub(crate) struct Tx {
    client: Option<Object>,
    mode: StatementMode,
    contexts: Arc<Contexts>,
    /// Set until the first statement: BEGIN and the context travel with it.
    setup: Option<Setup>,
    /// A statement failed: the transaction is aborted and must not report a commit.
    failed: bool,
    finished: bool,
    /// Committing changes these tenants: the cached context parts that can
    /// show them (their own, their ancestors') are dropped then.
    changes_tenants: Vec<TenantId>,
    /// A flight is on the wire: dropped now (a cancelled request), what the
    /// database did with it is unknown, and so is the chain's state.
    in_flight: bool,
    /// The connection's previous transaction ran caller SQL: this one checks
    /// that the session holds no statement prepared by SQL and has the
    /// settings it was opened with, before its context.
    check_session: bool,
    /// That check refused the session: the connection is closed.
    session_refused: bool,
    /// The first flight failed for what an earlier transaction left on the
    /// connection (its session changed or its context chain lost): its block
    /// was aborted from its first statements, nothing of it ran.
    spoiled_before: bool,
    /// That flight's setup, kept to send again on another connection.
    refused_setup: Option<Setup>,
    /// That check passed, answering the session's settings as they are now.
    session_checked: Option<String>,
    /// This transaction ran caller SQL, which may have ended it (COMMIT,
    /// ROLLBACK): its commit checks that it is still the one begun.
    runs_caller_sql: bool,
    /// The isolation level its BEGIN asks for.
    isolation: IsolationLevel,
    /// The tenant's context part as cached when the transaction first needed
    /// it (its route, or its first flight): one value for the whole
    /// transaction. `None` until then.
    pinned_part: Option<Option<Arc<str>>>,
    /// The pinned part came from the cache (it may be stale), not from this
    /// transaction's own context statement.
    part_from_cache: bool,
    /// The part this transaction's own context statement answered, sent
    /// because none was cached: the database's, as of this transaction.
    /// Its route is pinned from it, not from the cache, which may have
    /// dropped it again meanwhile (a child's creation announced: found by a
    /// concurrency review, where a parent's listing then took the
    /// per-tenant form for thousands of children and ran for 30 s).
    own_part: Option<Arc<str>>,
    /// The tenant of a tenant transaction (whose cached part a `tier_moved`
    /// refusal drops, whichever flight or the commit meets it).
    tenant: Option<TenantId>,
    /// How long this transaction waits for a reply, when not the pool's
    /// [`crate::Timeouts::reply_timeout`] ([`Tx::wait_for_replies`]).
    reply_timeout: Option<std::time::Duration>,
}

impl Tx {
    fn new(client: Object, mode: StatementMode, contexts: Arc<Contexts>, setup: Setup) -> Self {
        // Copied, not taken: the flag stays on the connection until a
        // transaction's check has passed (a scope that sends nothing checks nothing).
        let check_session = client.ran_caller_sql;
        let tenant = match &setup {
            Setup::Tenant(ctx) => Some(ctx.tenant),
            _ => None,
        };
        Self {
            tenant,
            check_session,
            session_refused: false,
            spoiled_before: false,
            refused_setup: None,
            session_checked: None,
            runs_caller_sql: false,
            isolation: IsolationLevel::ReadCommitted,
            client: Some(client),
            mode,
            contexts,
            setup: Some(setup),
            failed: false,
            finished: false,
            changes_tenants: Vec::new(),
            in_flight: false,
            pinned_part: None,
            part_from_cache: false,
            own_part: None,
            reply_timeout: None,
        }
    }

    /// How long this transaction waits for each reply of the database.
    fn reply_timeout(&self) -> Option<std::time::Duration> {
        self.reply_timeout.or(self.contexts.reply_timeout)
    }

    /// Waits for the database's replies up to `limit` in this transaction,
    /// instead of the pool's reply timeout: for the upkeep's own long
    /// statements, which lift their statement timeout to match.
    pub(crate) fn wait_for_replies(&mut self, limit: std::time::Duration) {
        self.reply_timeout = Some(limit);
    }

    pub(crate) fn anonymous(client: Object, mode: StatementMode, contexts: Arc<Contexts>) -> Self {
        Self::new(client, mode, contexts, Setup::Anonymous)
    }

    pub(crate) fn logger(client: Object, mode: StatementMode, contexts: Arc<Contexts>) -> Self {
        Self::new(client, mode, contexts, Setup::Logger)
    }

    /// A signed-in person's transaction before any tenant: the context names
    /// the user only (`tenantry.member_identity`, `my_tenants`, `accept_invitation`).
    pub(crate) fn user(
        client: Object,
        mode: StatementMode,
        contexts: Arc<Contexts>,
        user: UserId,
    ) -> Self {
        Self::new(client, mode, contexts, Setup::User(user))
    }

    /// After a commit: a second transaction on the same connection with the
    /// same tenant context (proven afresh with its first statement, as every
    /// transaction's is).
    pub(crate) fn begin_again(&mut self, ctx: &TenantContext) -> Result<(), DbError> {
        if !self.finished || self.failed || self.client.is_none() {
            return Err(DbError::Internal(
                "only a committed transaction is begun again".into(),
            ));
        }
        let client = self.client.as_mut().expect("client present");
        self.check_session = client.ran_caller_sql;
        self.setup = Some(Setup::Tenant(ctx.clone()));
        self.runs_caller_sql = false;
        self.isolation = IsolationLevel::ReadCommitted;
        self.finished = false;
        self.pinned_part = None;
        self.part_from_cache = false;
        self.own_part = None;
        self.tenant = Some(ctx.tenant);
        Ok(())
    }

    /// This transaction changes `tenant` (its status, place in the hierarchy,
    /// isolation or tier, or makes a child under it): once it commits, no
    /// context part cached before it that can show the change (the tenant's
    /// own, its ancestors') is used again. Other tenants' parts stay.
    pub(crate) fn changes_tenant(&mut self, tenant: TenantId) {
        // Each drop scans the cache: once per tenant, however often named.
        if !self.changes_tenants.contains(&tenant) {
            self.changes_tenants.push(tenant);
        }
    }

    /// The chain's outcome for this transaction, once known: committed or rolled back.
    fn settle(&mut self, committed: bool) {
        if let Some(chain) = self.client.as_mut().and_then(|c| c.chain.as_mut()) {
            if committed {
                chain.committed();
            } else {
                chain.rolled_back();
            }
        }
        if committed {
            for tenant in std::mem::take(&mut self.changes_tenants) {
                self.contexts.parts.forget_around(tenant);
            }
        }
    }

    /// This transaction leaves session state a server connection must not
    /// carry into a tenant's transaction (REFRESH ... CONCURRENTLY makes a
    /// temporary table, and enter_context refuses a session with one): the
    /// connection is closed when it returns to the pool.
    pub(crate) fn retire_connection(&mut self) {
        self.break_connection();
    }

    /// This transaction runs SQL the library did not write: the connection's
    /// next transaction checks its session first.
    pub(crate) fn runs_caller_sql(&mut self) {
        self.runs_caller_sql = true;
        if let Some(client) = self.client.as_mut() {
            client.ran_caller_sql = true;
        }
    }

    /// The visible subtree (the tenant first) of the transaction's context
    /// part, once its route is known; `None` before.
    pub(crate) fn visible_tenants(&self) -> Option<Vec<uuid::Uuid>> {
        self.visible_subtree()?
            .split(',')
            .map(|t| uuid::Uuid::parse_str(t).ok())
            .collect()
    }

    /// How many tenants the visible subtree holds (the tenant included), once
    /// the route is known; `None` before.
    pub(crate) fn visible_count(&self) -> Option<usize> {
        Some(self.visible_subtree()?.split(',').count())
    }

    /// The visible subtree of the pinned context part (`,v<ids>`), once the
    /// route is known.
    fn visible_subtree(&self) -> Option<&str> {
        let part = self.pinned_part.as_ref()?.as_deref()?;
        Some(part.split_once(",v")?.1)
    }

    /// Whether the database is a Citus coordinator (statements that Citus
    /// cannot push down to the shards take another shape there).
    pub(crate) fn citus(&self) -> bool {
        self.client.as_ref().is_some_and(|c| c.citus)
    }

    /// The connection's state is unknown (a lost reply): it must not be reused.
    fn break_connection(&mut self) {
        if let Some(client) = self.client.as_mut() {
            client.broken = true;
        }
    }

    /// The tenant's cached context part, read once per transaction (before
    /// its first flight; `tenant` is the transaction's).
    fn pinned_part(&mut self, tenant: Option<TenantId>) -> Option<Arc<str>> {
        if self.pinned_part.is_none() {
            let cached = tenant.and_then(|t| self.contexts.parts.get(t));
            self.part_from_cache = cached.is_some();
            self.pinned_part = Some(cached);
        }
        self.pinned()
    }

    /// The context part this transaction pinned (from the cache or its own
    /// context statement), if any yet.
    pub(crate) fn pinned(&self) -> Option<Arc<str>> {
        self.pinned_part.clone().flatten()
    }

    /// After a statement by the transaction's route found nothing: whether
    /// that route still holds ([`ROUTE_CURRENT`], asked now, with a later
    /// snapshot than the statement's). A stale one is forgotten and answered
    /// [`tiers_changed`] (retryable): the statement may have missed the
    /// tenant's rows, which a fresh route finds. Nothing is asked for a
    /// schema tenant's route, or on Citus, which has no schema tier.
    pub(crate) async fn check_route(&mut self) -> Result<(), DbError> {
        let Some(tenant) = self.tenant else {
            return Ok(());
        };
        // A schema tenant's own route was checked when it was set
        // (use_tenant_schema), and a move back waits for this transaction;
        // a pooled one's (with ",m" too: the team's tables stand alone, and
        // their names lead to the pooled ones) is asked.
        if self.citus() || Route::of_part(self.pinned().as_deref()).1.is_some() {
            return Ok(());
        }
        let rows = self.flight(None, ROUTE_CURRENT, false).await?.rows;
        if route_current(&rows) {
            return Ok(());
        }
        self.forget_tenant_part(tenant);
        Err(tiers_changed())
    }

    /// Drops a tenant's cached part: its next transaction reads it afresh
    /// (this one keeps the route it has).
    pub(crate) fn forget_tenant_part(&self, tenant: TenantId) {
        self.contexts.parts.remove(tenant);
    }

    /// Which table of each tenant table family this transaction names.
    ///
    /// A tenant whose part is not cached has its transaction's context sent
    /// first, alone (one round trip more, once per tenant and cache
    /// lifetime): reading the whole family instead would lock every schema
    /// tenant's table. Then, for a schema tenant, its schema goes first on
    /// the search path.
    pub(crate) async fn route(&mut self) -> Result<Route, DbError> {
        let tenant = match &self.setup {
            Some(Setup::Tenant(ctx)) => Some(ctx.tenant),
            _ => None,
        };
        if let (Some(tenant), None) = (tenant, self.pinned_part(tenant)) {
            self.flight_many(&[], false).await?;
            self.pinned_part = Some(
                self.own_part
                    .clone()
                    .or_else(|| self.contexts.parts.get(tenant)),
            );
            if let (_, Some(schema)) = Route::of_part(self.pinned().as_deref()) {
                self.use_tenant_schema(&schema).await?;
            }
        }
        Ok(Route::of_part(self.pinned().as_deref()).0)
    }

    /// Puts a schema tenant's schema first on this transaction's search path
    /// (`use_tenant_schema`): unqualified names of tenant tables name its own.
    pub(crate) async fn use_tenant_schema(&mut self, schema: &str) -> Result<(), DbError> {
        self.rows(Stmt {
            sql: USE_TENANT_SCHEMA,
            params: &[&schema],
            types: &[Type::TEXT],
        })
        .await
        .map(drop)
    }

    /// The context statement's values for `setup`, or why there can be none.
    /// Tenant, administrative and request-log transactions prove their
    /// context; key verification runs without one.
    fn context_args(&mut self, setup: &Setup) -> Result<Option<ContextArgs>, DbError> {
        let (tenant, user, actor, grants, impersonator) = match setup {
            Setup::Tenant(ctx) => (
                Some(ctx.tenant),
                ctx.user,
                ctx.actor.clone(),
                ctx.permissions.as_ref().map(PermissionSet::names),
                ctx.impersonator.clone(),
            ),
            Setup::Admin(actor) => (None, None, Some(actor.clone()), None, None),
            // The logger appends in a proven administrative context only
            // (policy request_log_append): the server's login may assume the
            // role, and SQL injected into a tenant's transaction with it.
            Setup::Logger => (None, None, Some(REQUEST_LOG_ACTOR.to_owned()), None, None),
            Setup::User(user) => (None, Some(*user), None, None, None),
            Setup::Anonymous => return Ok(None),
        };
        let part = self.pinned_part(tenant).map(|p| p.to_string());
        let client = self.client.as_mut().expect("client present until finished");
        if let Some(chain) = client.chain.as_mut() {
            let (reveal, next) = chain.next();
            return Ok(Some(ContextArgs::Enter {
                reveal: reveal.to_vec(),
                next: next.to_vec(),
                tenant: tenant.map(|t| *t.as_uuid()),
                user: user.map(|u| *u.as_uuid()),
                actor,
                grants,
                impersonator,
                part,
            }));
        }
        let key = &self.contexts.key;
        let mut signed = SignedContext::admin(actor);
        signed.tenant = tenant;
        signed.user = user;
        signed.grants = grants;
        signed.impersonator = impersonator;
        signed.tenant_part = part;
        let mac = key.sign_context(&signed);
        Ok(Some(ContextArgs::Signed {
            tenant: tenant.map(|t| *t.as_uuid()),
            user: user.map(|u| *u.as_uuid()),
            key_id: key.id(),
            mac,
            signed,
        }))
    }

    /// Sends, in one flight: the pending setup (if this is the first statement),
    /// an optional role switch, the statement itself, the switch back, and COMMIT
    /// when `commit` is set. Every step writes its message on its first poll and
    /// `join_all` polls in order, so the server receives them in this order.
    async fn flight(
        &mut self,
        visibility: Option<Visibility>,
        stmt: Stmt<'_>,
        commit: bool,
    ) -> Result<Out, DbError> {
        let mut outs = self
            .flight_many(&[(visibility.unwrap_or(Visibility::All), stmt)], commit)
            .await?;
        Ok(outs.swap_remove(0))
    }

    /// Like [`Tx::flight`] for several statements, each under its own set of
    /// policies: the role switches travel in the same flight, and the role is
    /// `tenantry_app` again after the last statement. Returns each statement's rows.
    ///
    /// Unnamed mode, a statement without all its parameter types: the server
    /// names them first. Such a statement is prepared inside the transaction
    /// (in the same flight as BEGIN and the context when it is the first),
    /// run, and closed before the transaction ends, so a transaction-pooling
    /// pgbouncer keeps it on one server connection and nothing outlives the
    /// transaction: one round trip more than a fully typed statement.
    async fn flight_many(
        &mut self,
        stmts: &[(Visibility, Stmt<'_>)],
        commit: bool,
    ) -> Result<Vec<Out>, DbError> {
        if self.finished {
            return Err(DbError::Internal("transaction already finished".into()));
        }
        if self.failed {
            return Err(DbError::Internal(
                "transaction aborted by an earlier error".into(),
            ));
        }
        let mut attempt = 1;
        loop {
            let setup = self.setup.take();
            let first = setup.is_some();
            let result = self.flight_once(setup, stmts, commit).await;
            // The connection was spoiled before this transaction: SQL an
            // earlier one ran on it (another tenant's, often) changed its
            // session or lost its context chain. Nothing of this transaction
            // ran, so its first flight goes again on another connection
            // instead of failing a caller who did nothing wrong.
            if first && self.spoiled_before && attempt < FIRST_FLIGHT_ATTEMPTS {
                if let Some(setup) = self.fresh_connection(result.as_ref().err()).await {
                    self.setup = Some(setup);
                    attempt += 1;
                    continue;
                }
            }
            return result;
        }
    }

    /// After a first flight refused for what an earlier transaction left on
    /// its connection: that connection is closed, another taken from the
    /// pool, and the transaction starts afresh on it. Returns the setup to
    /// send again, or `None` when no connection could be had (the refusal
    /// stands).
    async fn fresh_connection(&mut self, refused: Option<&DbError>) -> Option<Setup> {
        let setup = self.refused_setup.take()?;
        // Back to the pool first, broken: a pool of one must not wait for it.
        drop(self.client.take());
        match self.contexts.connections.get().await {
            Ok(client) => {
                tracing::info!(
                    target: "tenantry::db",
                    reason = %refused.map(ToString::to_string).unwrap_or_default(),
                    "a connection spoiled by an earlier transaction was closed; the transaction runs on another"
                );
                self.check_session = client.ran_caller_sql;
                let mut client = client;
                // This transaction's own SQL runs on it now: the next one
                // there checks the session (as on the first connection).
                client.ran_caller_sql |= self.runs_caller_sql;
                self.client = Some(client);
                self.failed = false;
                self.session_refused = false;
                self.spoiled_before = false;
                Some(setup)
            }
            Err(_) => None,
        }
    }

    /// One attempt of [`Tx::flight_many`] with `setup` (`Some` for the
    /// transaction's first flight).
    async fn flight_once(
        &mut self,
        setup: Option<Setup>,
        stmts: &[(Visibility, Stmt<'_>)],
        commit: bool,
    ) -> Result<Vec<Out>, DbError> {
        let args = match &setup {
            Some(setup) => match self.context_args(setup) {
                Ok(args) => args,
                Err(e) => {
                    // Nothing was sent; the scope cannot be used.
                    self.finished = true;
                    return Err(e);
                }
            },
            None => None,
        };
        self.in_flight = true;
        let limit = self.reply_timeout();
        let span = tracing::info_span!(
            target: "tenantry::db",
            "db.flight",
            db.system.name = "postgresql",
            db.statements = stmts.len(),
            db.commit = commit,
        );
        let result = crate::database::within(
            limit,
            self.send(setup.as_ref(), args.as_ref(), stmts, commit),
        )
        .instrument(span)
        .await;
        self.in_flight = false;
        if let Some(settings) = self.session_checked.take() {
            // The session is as the library left it: the connection needs no
            // check until SQL the library did not write runs on it again (this
            // transaction's own, if it runs any), and the settings it has now
            // (after a configuration reload, new values) are the ones to keep.
            self.check_session = false;
            let runs_caller_sql = self.runs_caller_sql;
            if let Some(client) = self.client.as_mut() {
                client.ran_caller_sql = runs_caller_sql;
                if !settings.is_empty() {
                    client.settings = Some(settings);
                }
            }
        }
        if let Err(e) = &result {
            self.failed = true;
            self.contexts.connections.forget_statements_after(e);
            if matches!(e, DbError::Unavailable(_)) || self.session_refused {
                self.break_connection();
            }
            // An error in a transaction block aborts it: the chain's commitment
            // rolls back with it.
            self.settle(false);
            if self.spoiled_before {
                self.refused_setup = setup;
            }
        }
        result
    }

    async fn send(
        &mut self,
        setup: Option<&Setup>,
        args: Option<&ContextArgs>,
        stmts: &[(Visibility, Stmt<'_>)],
        commit: bool,
    ) -> Result<Vec<Out>, DbError> {
        let mode = self.mode;
        let tenant = match setup {
            Some(Setup::Tenant(ctx)) => Some(ctx.tenant),
            _ => None,
        };
        let proves_context = args.is_some();
        let part_sent = matches!(
            args,
            Some(ContextArgs::Enter { part: Some(_), .. })
                | Some(ContextArgs::Signed {
                    signed: SignedContext {
                        tenant_part: Some(_),
                        ..
                    },
                    ..
                })
        );
        let contexts = self.contexts.clone();
        // A refusal of a stale route drops the part the transaction pinned
        // from the cache, in this flight or a later one.
        let routed_tenant = self.tenant;
        let generation = contexts.parts.generation();
        // The route came from a cached part and names the tenant's schema
        // (see flight_error).
        let schema_routed = setup.is_some()
            && self.part_from_cache
            && Route::of_part(self.pinned().as_deref()).1.is_some();
        // A schema tenant's tables come first on its transaction's search path.
        let tenant_schema = match (setup, proves_context) {
            (Some(Setup::Tenant(_)), true) => Route::of_part(self.pinned().as_deref()).1,
            _ => None,
        };
        let client = self.client.as_ref().expect("client present until finished");
        // The server's own connections are tenantry_app for the whole session.
        let session_role = client.chain.is_some();

        let ctx_statement = args.map(ContextArgs::statement);
        let ctx = ctx_statement
            .as_ref()
            .map(|(sql, types, params)| Stmt { sql, params, types });

        // The context statement is the library's own: prepared (and cached)
        // before the flight.
        let ctx_prepared = match (mode, &ctx) {
            (StatementMode::Prepared, Some(c)) => {
                Some(client.prepare_typed_cached(c.sql, c.types).await?)
            }
            _ => None,
        };
        let schema_params: [&(dyn ToSql + Sync); 1] = [&tenant_schema];
        let use_schema = tenant_schema.as_ref().map(|_| Stmt {
            sql: USE_TENANT_SCHEMA,
            params: &schema_params,
            types: &[Type::TEXT],
        });
        let use_schema_prepared = match (mode, &use_schema) {
            (StatementMode::Prepared, Some(u)) => {
                Some(client.prepare_typed_cached(u.sql, u.types).await?)
            }
            _ => None,
        };

        // The setup goes out first: each step writes its message when first polled.
        let mut setup_steps: Vec<MaybeDone<Step<'_>>> = Vec::new();
        let mut ctx_index = None;
        // Step 0 checks the session (after caller SQL on this connection),
        // or, on a connection shared through a pooler, that it holds no
        // temporary relations or types ahead of a transaction that proves
        // no context (enter_context_signed refuses them for the others).
        let checks_temp = !session_role && matches!(setup, Some(Setup::Anonymous));
        let checks_session = setup.is_some() && (session_role && self.check_session || checks_temp);
        if let Some(setup) = setup {
            ctx_index = push_setup(
                &mut setup_steps,
                client,
                mode,
                setup,
                checks_session && !checks_temp,
                checks_temp,
                session_role,
                self.isolation,
                ctx.as_ref(),
                ctx_prepared.as_ref(),
            );
            if let Some(use_schema) = &use_schema {
                setup_steps.push(maybe_done(run(
                    client,
                    use_schema_prepared.as_ref(),
                    use_schema,
                )));
            }
        }
        for step in &mut setup_steps {
            let _ = futures_util::poll!(step);
        }
        // A schema tenant's transaction, its schema first on the search
        // path, keeps none of its statements prepared: a kept statement's
        // unqualified names would lead to that schema's tables here and to
        // the shared ones in the next transaction on the connection, which
        // PostgreSQL plans again at every such switch, and refuses while a
        // migration spreads and the two differ in shape (every switch then
        // a 503 and the pool's statements forgotten: found by a review of
        // live schema changes).
        let stmt_mode = if Route::of_part(self.pinned().as_deref()).1.is_some() {
            StatementMode::Unnamed
        } else {
            mode
        };
        // Then the statements' Parse, inside the transaction (so the caller's
        // role resolves its names): in the prepared mode from the
        // connection's cache, where a hit is ready at once and sends nothing;
        // in the unnamed mode for statements whose types the server must name.
        let mut prepares: Vec<Option<MaybeDone<Prepare<'_>>>> = stmts
            .iter()
            .map(|(_, stmt)| {
                let prepare: Option<Prepare<'_>> = match stmt_mode {
                    StatementMode::Prepared => {
                        Some(Box::pin(client.prepare_typed_cached(stmt.sql, stmt.types)))
                    }
                    StatementMode::Unnamed if stmt.needs_describe() => {
                        Some(Box::pin(client.prepare_typed(stmt.sql, stmt.types)))
                    }
                    StatementMode::Unnamed => None,
                };
                prepare.map(maybe_done)
            })
            .collect();
        for prepare in prepares.iter_mut().flatten() {
            let _ = futures_util::poll!(prepare);
        }
        let described = stmt_mode == StatementMode::Unnamed
            && stmts.iter().any(|(_, stmt)| stmt.needs_describe());
        let waiting = prepares
            .iter()
            .flatten()
            .any(|p| matches!(p, MaybeDone::Future(_)));
        // Results of steps already answered (the setup, when a Parse had to
        // be waited for), in the order they were sent.
        let mut results: Vec<Result<Out, tokio_postgres::Error>> = Vec::new();
        if waiting {
            // A Parse went out: its answer (and the setup's) come back before
            // the statements can be sent.
            join(
                join_all(setup_steps.iter_mut()),
                join_all(prepares.iter_mut().flatten()),
            )
            .await;
            results = setup_steps
                .drain(..)
                .map(|mut step| {
                    Pin::new(&mut step)
                        .take_output()
                        .unwrap_or_else(|| Ok(Out::default()))
                })
                .collect();
        }
        let mut prepare_error = None;
        let main_prepared: Vec<Option<Statement>> = prepares
            .iter_mut()
            .map(|p| {
                p.as_mut()
                    .and_then(|p| Pin::new(p).take_output())
                    .and_then(|result| match result {
                        Ok(statement) => Some(statement),
                        Err(e) => {
                            prepare_error.get_or_insert(e);
                            None
                        }
                    })
            })
            .collect();
        if let Some(refused) = session_refused(&results, checks_session) {
            self.session_refused = true;
            // An outage is no spoiled session: not retried on another connection.
            self.spoiled_before = matches!(refused, DbError::Contention(_));
            return Err(refused);
        }
        if let Some(lost) = session_lost(&results, ctx_index.filter(|_| proves_context)) {
            self.spoiled_before = true;
            return Err(lost);
        }
        if let Some(i) = results.iter().position(Result::is_err) {
            let err = results.swap_remove(i).err().expect("an error");
            return Err(flight_error(&err, routed_tenant, schema_routed, &contexts));
        }
        if let Some(err) = prepare_error {
            return Err(crate::error::classify(&err));
        }

        let already = results.len();
        let mut steps: Vec<MaybeDone<Step<'_>>> = setup_steps;
        let mut role = Visibility::All;
        let mut indexes = Vec::with_capacity(stmts.len());
        for ((visibility, stmt), prepared) in stmts.iter().zip(&main_prepared) {
            if *visibility != role {
                steps.push(maybe_done(simple(
                    client,
                    visibility.set_role(client.citus),
                )));
                role = *visibility;
            }
            indexes.push(already + steps.len());
            steps.push(maybe_done(run(client, prepared.as_ref(), stmt)));
        }
        if role != Visibility::All {
            steps.push(maybe_done(simple(
                client,
                Visibility::All.set_role(client.citus),
            )));
        }
        // Statements prepared in the transaction are closed before COMMIT.
        let commit_in_flight = commit && !described;
        if commit_in_flight {
            steps.push(maybe_done(simple(client, "COMMIT")));
        }

        join_all(steps.iter_mut()).await;
        results.extend(steps.iter_mut().map(|step| {
            Pin::new(step)
                .take_output()
                .unwrap_or_else(|| Ok(Out::default()))
        }));
        drop(steps);
        drop(prepares);
        // Closes the statements prepared in the transaction (their Close goes
        // out now, ahead of anything sent later on this connection).
        drop(main_prepared);
        if let Some(refused) = session_refused(&results, checks_session) {
            self.session_refused = true;
            // An outage is no spoiled session: not retried on another connection.
            self.spoiled_before = matches!(refused, DbError::Contention(_));
            return Err(refused);
        }
        if checks_session {
            if let Some(Ok(out)) = results.first() {
                self.session_checked = Some(out.text.clone().unwrap_or_default());
            }
        }
        if let Some(lost) = session_lost(&results, ctx_index.filter(|_| proves_context)) {
            self.spoiled_before = true;
            return Err(lost);
        }
        // The context statement's answer: the tenant's part, or NULL when the
        // database refused the proof (this connection is then out of step).
        if let Some(Some(Ok(out))) = ctx_index.filter(|_| proves_context).map(|i| results.get(i)) {
            let part: Option<String> = out.rows.first().and_then(|r| r.get(0));
            match part {
                Some(part) => {
                    if let (Some(tenant), false) = (tenant, part_sent) {
                        contexts.parts.put(tenant, &part, generation);
                        self.own_part = Some(Arc::from(part));
                    }
                }
                None => {
                    // Not resent: a refused context does not abort the
                    // transaction, so the flight's statements after it ran
                    // (without a context), and its cause (a retired key, a
                    // wrong one) would refuse every connection alike.
                    return Err(DbError::Unavailable(
                        "the database refused this connection's tenant context; the connection is closed, retry"
                            .into(),
                    ));
                }
            }
        }
        if let Some(i) = results.iter().position(Result::is_err) {
            let err = results.swap_remove(i).err().expect("an error");
            return Err(flight_error(&err, routed_tenant, schema_routed, &contexts));
        }
        if commit_in_flight {
            self.finished = true;
            self.settle(true);
        } else if commit {
            self.finished = true;
            let client = self.client.as_ref().expect("client present");
            // (Still in flight for Drop: flight_many clears it after this.)
            if let Err(e) = client.batch_execute("COMMIT").await {
                self.break_connection();
                return Err(e.into());
            }
            self.settle(true);
        }
        Ok(indexes
            .into_iter()
            .map(|i| std::mem::replace(&mut results[i], Ok(Out::default())).unwrap_or_default())
            .collect())
    }

    pub(crate) async fn rows(&mut self, stmt: Stmt<'_>) -> Result<Vec<Row>, DbError> {
        Ok(self.flight(None, stmt, false).await?.rows)
    }

    pub(crate) async fn rows_as(
        &mut self,
        visibility: Visibility,
        stmt: Stmt<'_>,
    ) -> Result<Vec<Row>, DbError> {
        Ok(self.flight(Some(visibility), stmt, false).await?.rows)
    }

    /// Several statements, each under its own policies, in one flight.
    pub(crate) async fn query_many(
        &mut self,
        stmts: &[(Visibility, Stmt<'_>)],
        commit: bool,
    ) -> Result<Vec<Vec<Row>>, DbError> {
        Ok(self
            .flight_many(stmts, commit)
            .await?
            .into_iter()
            .map(|out| out.rows)
            .collect())
    }

    /// Runs the statement and commits in the same flight.
    pub(crate) async fn query_and_commit(&mut self, stmt: Stmt<'_>) -> Result<Vec<Row>, DbError> {
        Ok(self.flight(None, stmt, true).await?.rows)
    }

    /// Marks the transaction aborted: it rolls back and can never report a commit.
    pub(crate) fn abort(&mut self) {
        self.failed = true;
    }

    pub(crate) async fn commit(mut self) -> Result<(), DbError> {
        if self.failed {
            return Err(DbError::Internal(if self.runs_caller_sql {
                // SQL of the caller's may have ended the transaction with a
                // COMMIT of its own before the error: that part stays.
                "transaction aborted by an earlier error; nothing more was committed (what a \
                 COMMIT in your own SQL committed before it stays)"
                    .into()
            } else {
                "transaction aborted by an earlier error; nothing was committed".into()
            }));
        }
        if self.setup.is_some() {
            // Nothing was ever sent: there is nothing to commit.
            self.finished = true;
            return Ok(());
        }
        self.finished = true;
        let client = self.client.as_ref().expect("client present");
        self.in_flight = true;
        // After caller SQL: still the transaction begun, with its context
        // (SQL that ran COMMIT or ROLLBACK ended it; what followed ran
        // outside it), or no commit is reported.
        let sql = if self.runs_caller_sql {
            "SELECT tenantry.assert_transaction_intact(); COMMIT"
        } else {
            "COMMIT"
        };
        let tenant = self.tenant;
        let contexts = self.contexts.clone();
        let committed = crate::database::within(self.reply_timeout(), async {
            match client.batch_execute(sql).await {
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::NO_ACTIVE_SQL_TRANSACTION) => {
                    Err(DbError::Internal(format!(
                        "{}: nothing after that SQL was in the transaction; run BEGIN, COMMIT and ROLLBACK only through the scope",
                        crate::error::describe(&e)
                    )))
                }
                // assert_transaction_intact: the tenant changed tiers since
                // its route was cached (not committed; retried by a fresh part).
                Err(e) if e.as_db_error().and_then(|d| d.hint()) == Some("tier_moved") => {
                    Err(flight_error(&e, tenant, false, &contexts))
                }
                other => Ok(other?),
            }
        })
        .instrument(tracing::info_span!(target: "tenantry::db", "db.commit"))
        .await;
        self.in_flight = false;
        match committed {
            Ok(()) => {
                self.settle(true);
                Ok(())
            }
            Err(e @ DbError::Contention(_)) => {
                // The database's own report that it did not commit (a
                // stale route refused before COMMIT ran, or a serialization
                // failure at COMMIT): the connection is ended cleanly and kept.
                let rolled_back = crate::database::within(self.reply_timeout(), async {
                    Ok(client.batch_execute("ROLLBACK").await?)
                })
                .await;
                match rolled_back {
                    Ok(()) => self.settle(false),
                    Err(_) => self.break_connection(),
                }
                Err(e)
            }
            Err(e) => {
                // Whether it committed is unknown: so is the chain's state.
                self.break_connection();
                Err(e)
            }
        }
    }

    pub(crate) async fn rollback(mut self) -> Result<(), DbError> {
        self.finished = true;
        if self.setup.is_some() {
            return Ok(());
        }
        self.settle(false);
        // No connection: a first flight refused on a spoiled one found no
        // other (nothing of the transaction ran anywhere).
        let Some(client) = self.client.as_ref() else {
            return Ok(());
        };
        self.in_flight = true;
        let result = crate::database::within(self.reply_timeout(), async {
            Ok(client.batch_execute("ROLLBACK").await?)
        })
        .await;
        self.in_flight = false;
        if result.is_err() {
            self.break_connection();
        }
        result
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.in_flight {
            // Cancelled mid-flight: whether its COMMIT (and the chain's next
            // commitment) took effect is unknown. The connection is closed,
            // and the statement it waited for cancelled as psql's Ctrl-C
            // does: PostgreSQL ran it on, holding its session, its locks and
            // a connection slot outside the pool's bound, until it ended
            // (found by a review: 20 cancelled pg_sleep(10) on a pool of 2
            // kept 20 backends busy).
            // The connection stays open until the cancel has gone out:
            // behind pgbouncer a client that disconnects first has its
            // cancel key forgotten, and the cancel then reaches no one
            // (found by a verification review). Bounded, so that a
            // database out of reach holds no task for long.
            if let Some(client) = self.client.take() {
                let cancel = client.cancel_token();
                let tls = self.contexts.tls.clone();
                let limit = self
                    .contexts
                    .reply_timeout
                    .unwrap_or(std::time::Duration::from_secs(10));
                let detached = Object::take(client);
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        match tokio::time::timeout(limit, cancel.cancel_query(tls)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "cancelling an abandoned statement failed")
                            }
                            Err(_) => tracing::debug!("cancelling an abandoned statement timed out"),
                        }
                        drop(detached);
                    });
                }
            }
            return;
        }
        if self.finished || self.setup.is_some() {
            return;
        }
        // Dropped mid-transaction (early return, error, cancelled request): roll
        // back before the connection goes back to the pool; if that is not
        // possible, the connection is detached and closed instead.
        self.settle(false);
        let Some(client) = self.client.take() else {
            return;
        };
        if client.broken {
            // Nothing more goes over it (it may be waiting for a lost reply).
            drop(Object::take(client));
            return;
        }
        let limit = self.reply_timeout();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let rolled_back = crate::database::within(limit, async {
                        Ok(client.batch_execute("ROLLBACK").await?)
                    })
                    .await;
                    if rolled_back.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

/// Whether the route cached with the tenant's part still leads to its rows
/// (`context_route_current`, 01_context.sql). Sent after a read by the route
/// that may have found nothing because of a move, in the same transaction:
/// its snapshot is later than the read's, so `true` means the read was right.
pub(crate) const ROUTE_CURRENT: Stmt<'static> = Stmt {
    sql: "SELECT tenantry.context_route_current()",
    params: &[],
    types: &[],
};

/// The answer of [`ROUTE_CURRENT`] (true when it sent none).
pub(crate) fn route_current(rows: &[Row]) -> bool {
    rows.first().is_none_or(|r| r.get::<_, bool>(0))
}

/// A read by a route cached before the tenant changed tiers (found again
/// stale by a fresh part: another move committed in between). Retryable:
/// the work runs again by a fresh route.
pub(crate) fn tiers_changed() -> DbError {
    DbError::Contention(
        "the tenant changed tiers while its rows were read; retry the transaction".into(),
    )
}

/// A flight's error, after what it says about a route cached before the
/// tenant changed tiers: the part is forgotten so that the retry reads it
/// afresh. `tier_moved` (tenant_row_home, tenant_tier_lock, use_tenant_schema,
/// assert_transaction_intact), whichever flight met it (a part this
/// transaction read itself may have gone stale since, too); a table of the tenant's schema that is
/// gone (a move back to the shared tier dropped it while the statement
/// waited for it) under a cached part's route, which is then retried like
/// any contention (with a fresh part, a missing table is the statement's own
/// error).
fn flight_error(
    err: &tokio_postgres::Error,
    tenant: Option<TenantId>,
    schema_routed: bool,
    contexts: &Contexts,
) -> DbError {
    if let (Some(tenant), Some(db)) = (tenant, err.as_db_error()) {
        if db.hint() == Some("tier_moved") {
            contexts.parts.remove(tenant);
        }
        if schema_routed && *db.code() == tokio_postgres::error::SqlState::UNDEFINED_TABLE {
            contexts.parts.remove(tenant);
            return DbError::Contention(format!(
                "the tenant's tables moved while this transaction ran ({}); retry",
                db.message()
            ));
        }
    }
    crate::error::classify(err)
}

/// The context statement (at `ctx`) failed because the session's draws are
/// gone (DISCARD SEQUENCES, run by SQL the library did not write): the
/// connection's chain cannot go on, so it is closed and the caller retries.
fn session_lost(
    results: &[Result<Out, tokio_postgres::Error>],
    ctx: Option<usize>,
) -> Option<DbError> {
    match results.get(ctx?) {
        Some(Err(e))
            if e.code()
                == Some(&tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) =>
        {
            Some(DbError::Unavailable(
                "this connection's context session was discarded; the connection is closed, retry"
                    .into(),
            ))
        }
        _ => None,
    }
}

/// The session check (step 0, on a connection whose last transaction ran
/// caller SQL) refused the session: that SQL left statements prepared or
/// settings changed for the session. Nothing of this transaction ran (its
/// block is aborted from the first statement): the connection is closed and
/// the transaction runs again on another, like one that collided.
fn session_refused(
    results: &[Result<Out, tokio_postgres::Error>],
    checks_session: bool,
) -> Option<DbError> {
    match results.first() {
        // The database (or a pooler in front of it) failing, not the
        // session: an outage, as anywhere else (a pgbouncer whose server
        // login failed was reported as a collision: found by an operator's
        // review). The connection is closed all the same.
        Some(Err(e)) if checks_session && matches!(crate::error::classify(e), DbError::Unavailable(_)) => {
            Some(crate::error::classify(e))
        }
        Some(Err(e)) if checks_session && e.as_db_error().is_some() => {
            Some(DbError::Contention(format!(
                "SQL an earlier transaction ran on this connection changed its session ({}); the connection is closed, retry",
                crate::error::describe(e)
            )))
        }
        _ => None,
    }
}

/// How many connections a transaction's first flight tries when the ones it
/// gets were spoiled by earlier transactions' SQL ([`Tx::flight_many`]).
const FIRST_FLIGHT_ATTEMPTS: u32 = 4;

/// BEGIN, the role and the context of a transaction's first flight. Returns
/// the index of the context statement among the steps, if there is one.
#[allow(clippy::too_many_arguments)]
fn push_setup<'a>(
    steps: &mut Vec<MaybeDone<Step<'a>>>,
    client: &'a Object,
    mode: StatementMode,
    setup: &'a Setup,
    check_session: bool,
    check_temp: bool,
    session_role: bool,
    isolation: IsolationLevel,
    ctx: Option<&'a Stmt<'a>>,
    ctx_prepared: Option<&'a Statement>,
) -> Option<usize> {
    // A connection whose last transaction ran caller SQL is checked first,
    // in the session's own role (tenantry_app) before any switch, and before
    // the context: a statement that SQL replaced must not run for this
    // transaction (docs/security.md, "Weaknesses found and fixed").
    let begin = isolation.begin();
    steps.push(maybe_done(
        match (check_session, client.settings.as_deref()) {
            // An MD5 in hex: nothing to quote.
            (true, Some(settings)) => simple_answer(
                client,
                format!("{begin}; SELECT tenantry.assert_session_unchanged('{settings}')"),
            ),
            // (Every connection that holds a session has its settings: kept
            // for safety, the older check of prepared statements only.)
            (true, None) => simple_answer(
                client,
                format!("{begin}; SELECT tenantry.assert_clean_session()"),
            ),
            (false, _) if check_temp => simple_answer(
                client,
                format!("{begin}; SELECT tenantry.assert_no_temp_objects()"),
            ),
            (false, _) => simple(client, begin),
        },
    ));
    let role = match setup {
        Setup::Admin(_) => Some(LocalRole::Admin),
        Setup::Logger => Some(LocalRole::Logger),
        // The server's own connections are tenantry_app already.
        Setup::Tenant(_) | Setup::User(_) | Setup::Anonymous if session_role => None,
        Setup::Tenant(_) | Setup::User(_) | Setup::Anonymous => Some(LocalRole::App),
    };
    if let Some(role) = role {
        steps.push(maybe_done(simple(client, role.set(client.citus))));
    }
    ctx.map(|ctx| {
        debug_assert!(mode == StatementMode::Unnamed || ctx_prepared.is_some());
        steps.push(maybe_done(run(client, ctx_prepared, ctx)));
        steps.len() - 1
    })
}

fn simple<'a>(client: &'a Object, sql: &'static str) -> Step<'a> {
    Box::pin(async move { client.batch_execute(sql).await.map(|()| Out::default()) })
}

/// A simple query whose last row's first value is its answer ([`Out::text`]).
fn simple_answer(client: &Object, sql: String) -> Step<'_> {
    Box::pin(async move {
        let messages = client.simple_query(&sql).await?;
        let text = messages.iter().rev().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        });
        Ok(Out {
            text,
            ..Out::default()
        })
    })
}

/// Runs one statement: prepared (named) when `prepared` is given, otherwise
/// unnamed with its parameter types in the same flight.
fn run<'a>(client: &'a Object, prepared: Option<&'a Statement>, stmt: &'a Stmt<'a>) -> Step<'a> {
    Box::pin(async move {
        let params = stmt.params.iter().copied();
        let stream = match prepared {
            Some(statement) => client.query_raw(statement, params).await?,
            None => {
                client
                    .query_typed_raw(stmt.sql, params.zip(stmt.types.iter().cloned()))
                    .await?
            }
        };
        collect(stream).await
    })
}

async fn collect(stream: RowStream) -> Result<Out, tokio_postgres::Error> {
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    while let Some(row) = stream.try_next().await? {
        rows.push(row);
    }
    Ok(Out {
        rows,
        affected: stream.rows_affected(),
        text: None,
    })
}

/// The isolation level of a [`TenantScope`]'s transaction
/// ([`TenantScope::set_isolation`]). PostgreSQL's default, READ COMMITTED,
/// unless asked otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Each statement sees what was committed when it began. A
    /// read-modify-write over two statements can lose a concurrent update:
    /// write `SET n = n + 1`, lock with `SELECT … FOR UPDATE`, or ask for
    /// [`IsolationLevel::Serializable`].
    #[default]
    ReadCommitted,
    /// The whole transaction sees one snapshot; a concurrent update of a row
    /// it updates fails it with a serialization failure (retried by
    /// [`crate::Database::in_tenant`]).
    RepeatableRead,
    /// As if transactions ran one after another; any conflict fails one of
    /// them with a serialization failure (retried by
    /// [`crate::Database::in_tenant`]).
    Serializable,
}

impl IsolationLevel {
    fn begin(self) -> &'static str {
        match self {
            IsolationLevel::ReadCommitted => "BEGIN",
            IsolationLevel::RepeatableRead => "BEGIN ISOLATION LEVEL REPEATABLE READ",
            IsolationLevel::Serializable => "BEGIN ISOLATION LEVEL SERIALIZABLE",
        }
    }
}

/// A transaction acting for one tenant: `SET LOCAL ROLE tenantry_app` and the
/// tenant context are sent with its first statement, so every statement in it
/// is subject to the tenant's row-level security. It cannot be built without a
/// [`TenantContext`]; dropped without [`TenantScope::commit`], it rolls back.
pub struct TenantScope {
    pub(crate) tx: Tx,
    pub(crate) ctx: TenantContext,
    /// The tenant's turn (its share of the pool), held until the scope ends.
    _turn: Option<crate::turns::Turn>,
}

impl TenantScope {
    pub(crate) fn new(
        client: Object,
        mode: StatementMode,
        contexts: Arc<Contexts>,
        ctx: TenantContext,
    ) -> Self {
        Self {
            tx: Tx::new(client, mode, contexts, Setup::Tenant(ctx.clone())),
            ctx,
            _turn: None,
        }
    }

    /// The scope holds `turn` for as long as it lives.
    pub(crate) fn with_turn(mut self, turn: crate::turns::Turn) -> Self {
        self._turn = Some(turn);
        self
    }

    /// The tenant this transaction acts for.
    pub fn tenant(&self) -> TenantId {
        self.ctx.tenant
    }

    /// The acting member, if any.
    pub fn user(&self) -> Option<UserId> {
        self.ctx.user
    }

    /// Rows of a statement of the library itself, every parameter typed.
    pub(crate) async fn rows(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        types: &[Type],
    ) -> Result<Vec<Row>, DbError> {
        self.tx.rows(Stmt { sql, params, types }).await
    }

    /// Rows of a keyset page of a list: `sql` gets the condition naming the
    /// place the page starts after, `AND (<columns>) <op> ($2, $3)`, or
    /// nothing on the first page, and binds the scope's tenant as `$1`, that place as
    /// `$2` and `$3` (bound and unused on the first page) and `limit` as
    /// `$4`. Two statements rather than one with `$2 IS NULL OR …`: the place
    /// is then an index condition of the list's index, and a later page
    /// starts there instead of filtering its way from the list's start.
    pub(crate) async fn keyset_rows(
        &mut self,
        after: Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>,
        limit: i64,
        (columns, op): (&str, &str),
        sql: impl FnOnce(&str) -> String,
    ) -> Result<Vec<Row>, DbError> {
        let owner = self.tenant();
        let (at, id) = after.unzip();
        let place = match after {
            Some(_) => format!("AND ({columns}) {op} ($2, $3)"),
            None => String::new(),
        };
        self.rows(
            &sql(&place),
            &[owner.as_uuid(), &at, &id, &limit],
            &[Type::UUID, Type::TIMESTAMPTZ, Type::UUID, Type::INT8],
        )
        .await
    }

    /// [`TenantScope::rows`] under a narrower set of policies.
    pub(crate) async fn rows_as(
        &mut self,
        visibility: Visibility,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        types: &[Type],
    ) -> Result<Vec<Row>, DbError> {
        self.tx
            .rows_as(visibility, Stmt { sql, params, types })
            .await
    }

    /// Runs a statement on any table in the tenant's transaction, as
    /// `tenantry_app` under row-level security, and maps every row to `T`
    /// (a tuple of column types, [`Row`], or a type of yours: see [`FromRow`]).
    ///
    /// `sql` is a `&str` or a [`Sql`] naming parameter types: in the prepared
    /// mode the server infers them (the statement is prepared once per
    /// connection and cached); in the unnamed mode (pgbouncer) a statement
    /// with every type named travels in one flight, and one without costs one
    /// more round trip (see [`Sql`]).
    ///
    /// ```no_run
    /// # async fn demo(scope: &mut tenantry_db::TenantScope) -> Result<(), tenantry_db::DbError> {
    /// let open: Vec<(uuid::Uuid, String)> = scope
    ///     .query("SELECT id, title FROM issues WHERE state = $1 ORDER BY id", &[&"open"])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn query<'q, T: FromRow>(
        &mut self,
        sql: impl Into<Sql<'q>>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<T>, DbError> {
        self.under(Visibility::All).query(sql, params).await
    }

    /// The one row of a statement. No row is [`DbError::NotFound`] with the same
    /// words whatever was asked for, so another tenant's id fails exactly like
    /// a missing one; more than one row is [`DbError::Conflict`] (409: under
    /// the hierarchy a descendant's row can carry the parent's id).
    pub async fn query_one<'q, T: FromRow>(
        &mut self,
        sql: impl Into<Sql<'q>>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<T, DbError> {
        self.under(Visibility::All).query_one(sql, params).await
    }

    /// At most one row: `None` when there is none (another tenant's row
    /// included); more than one is a [`DbError::Conflict`] (409 through
    /// `tenantry-axum`): with the hierarchy on, a descendant may hold a row
    /// with the same id as the caller's.
    pub async fn query_opt<'q, T: FromRow>(
        &mut self,
        sql: impl Into<Sql<'q>>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<T>, DbError> {
        self.under(Visibility::All).query_opt(sql, params).await
    }

    /// Runs a statement and returns how many rows it inserted, updated or
    /// deleted (rows of other tenants are never counted: the policies hide them).
    pub async fn execute<'q>(
        &mut self,
        sql: impl Into<Sql<'q>>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, DbError> {
        self.under(Visibility::All).execute(sql, params).await
    }

    /// The same methods under a narrower set of policies: [`Visibility::Owned`]
    /// to read or write only the tenant's own and descendants' rows,
    /// [`Visibility::SharedWithMe`] for rows shared with it.
    pub fn under(&mut self, visibility: Visibility) -> Under<'_> {
        Under {
            scope: self,
            visibility,
        }
    }

    /// The transaction's isolation level, before its first statement (the
    /// transaction begins with it; later, [`DbError::Internal`]). SQL that
    /// runs `SET TRANSACTION` itself cannot: the library's own statements
    /// come first.
    ///
    /// ```no_run
    /// # async fn demo(db: &tenantry_db::Database, ctx: &tenantry_db::TenantContext) -> Result<(), tenantry_db::DbError> {
    /// use tenantry_db::IsolationLevel;
    /// db.in_tenant(ctx, &(), |scope, ()| {
    ///     Box::pin(async move {
    ///         scope.set_isolation(IsolationLevel::Serializable)?;
    ///         let (n,): (i32,) = scope.query_one("SELECT counter FROM tallies WHERE id = 1", &[]).await?;
    ///         scope.execute("UPDATE tallies SET counter = $1 WHERE id = 1", &[&(n + 1)]).await
    ///     })
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub fn set_isolation(&mut self, isolation: IsolationLevel) -> Result<(), DbError> {
        if self.tx.setup.is_none() {
            return Err(DbError::Internal(
                "the isolation level is set before the transaction's first statement".into(),
            ));
        }
        self.tx.isolation = isolation;
        Ok(())
    }

    /// Commits. Errors if any statement failed (nothing is committed then),
    /// or if SQL it ran ended the transaction itself (`COMMIT`, `ROLLBACK`).
    /// After your own SQL the commit also checks that the tenant did not
    /// change tiers since the transaction's route was cached (another
    /// server moved it): its reads by table names could have missed rows,
    /// so it fails as [`DbError::Contention`] and [`crate::Database::in_tenant`]
    /// runs the work again by a fresh route. Commit read-only work too, so
    /// that what it read is checked.
    pub async fn commit(self) -> Result<(), DbError> {
        self.tx.commit().await
    }

    /// Rolls back explicitly (dropping the scope does the same, asynchronously).
    pub async fn rollback(self) -> Result<(), DbError> {
        self.tx.rollback().await
    }
}

/// A [`TenantScope`] under one [`Visibility`] (see [`TenantScope::under`]).
pub struct Under<'s> {
    scope: &'s mut TenantScope,
    visibility: Visibility,
}

impl Under<'_> {
    async fn out(&mut self, sql: Sql<'_>, params: &[&(dyn ToSql + Sync)]) -> Result<Out, DbError> {
        // Unqualified names of tenant tables resolve to the tenant's own.
        self.scope.tx.route().await?;
        self.scope.tx.runs_caller_sql();
        let stmt = Stmt {
            sql: sql.text,
            params,
            types: sql.types,
        };
        self.scope
            .tx
            .flight(Some(self.visibility), stmt, false)
            .await
    }

    /// [`TenantScope::query`] under this visibility.
    pub async fn query<'q, T: FromRow>(
        &mut self,
        sql: impl Into<Sql<'q>>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<T>, DbError> {
        let rows = self.out(sql.into(), params).await?.rows;
        rows.into_iter().map(crate::row::read).collect()
    }

    /// [`TenantScope::query_one`] under this visibility.
    pub async fn query_one<'q, T: FromRow>(
        &mut self,
        sql: impl Into<Sql<'q>>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<T, DbError> {
        self.query_opt(sql, params)
            .await?
            .ok_or_else(|| DbError::NotFound("no row matched".into()))
    }

    /// [`TenantScope::query_opt`] under this visibility.
    pub async fn query_opt<'q, T: FromRow>(
        &mut self,
        sql: impl Into<Sql<'q>>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<T>, DbError> {
        let mut rows = self.out(sql.into(), params).await?.rows;
        if rows.is_empty() {
            // Not "not found" when the route is stale (a move elsewhere).
            self.scope.tx.check_route().await?;
        }
        if rows.len() > 1 {
            // Usually the hierarchy: a tenant reads its descendants' rows
            // too, and a key such as an id is unique per tenant only (a child
            // may hold a row with the same id). The caller's request is
            // ambiguous, not the server broken.
            return Err(DbError::conflict(format!(
                "{} rows matched where one was expected: ids are unique per tenant, and a tenant also reads its \
                 descendants' rows; name the tenant (tenant_id = tenantry.current_tenant_id() for its own row)",
                rows.len()
            )));
        }
        rows.pop().map(crate::row::read).transpose()
    }

    /// [`TenantScope::execute`] under this visibility.
    pub async fn execute<'q>(
        &mut self,
        sql: impl Into<Sql<'q>>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, DbError> {
        Ok(self.out(sql.into(), params).await?.affected.unwrap_or(0))
    }
}

/// A transaction as `tenantry_admin`: tenants, hierarchy, audit, maintenance.
/// It cannot read tenant resources; to act inside a tenant, an administrator
/// opens a [`TenantScope`] with an `admin` actor.
pub struct AdminScope {
    pub(crate) tx: Tx,
}

impl AdminScope {
    pub(crate) fn new(
        client: Object,
        mode: StatementMode,
        contexts: Arc<Contexts>,
        actor: String,
    ) -> Self {
        Self {
            tx: Tx::new(client, mode, contexts, Setup::Admin(actor)),
        }
    }

    /// Commits. Errors if any statement failed.
    pub async fn commit(self) -> Result<(), DbError> {
        self.tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn a_part_routes_pooled_schema_and_mixed_subtrees_and_unknown_parts_to_the_family() {
        assert_eq!(Route::of_part(None), (Route::Family, None));
        assert_eq!(
            Route::of_part(Some(",stenantry,vaa")),
            (Route::Pooled, None)
        );
        assert_eq!(
            Route::of_part(Some(",stenantry,m,vaa,bb")),
            (Route::Family, None)
        );
        assert_eq!(
            Route::of_part(Some(",stenant_0123456789abcdef0123,vaa")),
            (Route::Schema, Some("tenant_0123456789abcdef0123".into()))
        );
        assert_eq!(
            Route::of_part(Some(",stenant_0123456789abcdef0123,m,vaa,bb")),
            (Route::Family, Some("tenant_0123456789abcdef0123".into()))
        );
        assert_eq!(Route::of_part(Some("garbage")), (Route::Family, None));
    }
}
