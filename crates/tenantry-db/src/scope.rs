//! Tenant-scoped and admin transactions: the only way this library reaches tenant data. Owns pipelining of BEGIN, `SET LOCAL ROLE` and the context with the first statement, commit, and rollback on drop.

use std::{future::Future, pin::Pin};

use deadpool_postgres::Object;
use futures_util::future::join_all;
use tokio_postgres::{
    types::{ToSql, Type},
    Row, Statement,
};

use crate::{DbError, PermissionSet, StatementMode, TenantId, UserId};

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
}

impl TenantContext {
    /// A context for `tenant` with no member and the default actor.
    pub fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            user: None,
            actor: None,
            permissions: None,
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
    fn set_role(self) -> &'static str {
        match self {
            Visibility::All => "SET LOCAL ROLE tenantry_app",
            Visibility::Owned => "SET LOCAL ROLE tenantry_app_own",
            Visibility::SharedWithMe => "SET LOCAL ROLE tenantry_app_shared",
        }
    }
}

/// The database's half of a tenant context (0007): checks the tenant, sets its
/// subtree and schema where needed. The tenant, user and actor travel before
/// it as literal `SET LOCAL` statements (see [`context_statements`]).
const COMPLETE_TENANT_CONTEXT: &str = "SELECT tenantry.complete_tenant_context_local()";
const SET_ACTOR: &str = "SELECT tenantry.set_actor_local($1)";

enum Setup {
    Tenant(TenantContext),
    Admin(String),
    /// No tenant: key verification as `tenantry_app`.
    Anonymous,
    /// Appending request-log rows as `tenantry_logger`.
    Logger,
}

type Step<'a> = Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

/// A statement to send: SQL, parameters and their types (types are required
/// so that the unnamed-statement mode can send it without a prepare round trip).
pub(crate) struct Sql<'a> {
    pub sql: &'a str,
    pub params: &'a [&'a (dyn ToSql + Sync)],
    pub types: &'a [Type],
}

/// The transaction machinery shared by [`TenantScope`] and [`AdminScope`].
pub(crate) struct Tx {
    client: Option<Object>,
    mode: StatementMode,
    /// Set until the first statement: BEGIN and the context travel with it.
    setup: Option<Setup>,
    /// A statement failed: the transaction is aborted and must not report a commit.
    failed: bool,
    finished: bool,
}

impl Tx {
    fn new(client: Object, mode: StatementMode, setup: Setup) -> Self {
        Self {
            client: Some(client),
            mode,
            setup: Some(setup),
            failed: false,
            finished: false,
        }
    }

    pub(crate) fn anonymous(client: Object, mode: StatementMode) -> Self {
        Self::new(client, mode, Setup::Anonymous)
    }

    pub(crate) fn logger(client: Object, mode: StatementMode) -> Self {
        Self::new(client, mode, Setup::Logger)
    }

    /// Sends, in one flight: the pending setup (if this is the first statement),
    /// an optional role switch, the statement itself, the switch back, and COMMIT
    /// when `commit` is set. Every step writes its message on its first poll and
    /// `join_all` polls in order, so the server receives them in this order.
    async fn flight(
        &mut self,
        visibility: Option<Visibility>,
        stmt: Sql<'_>,
        commit: bool,
    ) -> Result<Vec<Row>, DbError> {
        let mut rows = self
            .flight_many(&[(visibility.unwrap_or(Visibility::All), stmt)], commit)
            .await?;
        Ok(rows.swap_remove(0))
    }

    /// Like [`Tx::flight`] for several statements, each under its own set of
    /// policies: the role switches travel in the same flight, and the role is
    /// `tenantry_app` again after the last statement. Returns each statement's rows.
    async fn flight_many(
        &mut self,
        stmts: &[(Visibility, Sql<'_>)],
        commit: bool,
    ) -> Result<Vec<Vec<Row>>, DbError> {
        if self.finished {
            return Err(DbError::Internal("transaction already finished".into()));
        }
        if self.failed {
            return Err(DbError::Internal(
                "transaction aborted by an earlier error".into(),
            ));
        }
        let setup = self.setup.take();
        let mode = self.mode;
        let client = self.client.as_ref().expect("client present until finished");

        // Prepared mode: make sure every statement is prepared before the flight,
        // so no Parse round trip can reorder the pipeline. Usually cache hits.
        let (ctx_sql, ctx_types): (Option<&str>, &[Type]) = match &setup {
            Some(Setup::Tenant(_)) => (Some(COMPLETE_TENANT_CONTEXT), &[]),
            Some(Setup::Admin(_)) => (Some(SET_ACTOR), &[Type::TEXT]),
            _ => (None, &[]),
        };
        let prepared: Result<_, tokio_postgres::Error> = async {
            Ok(match mode {
                StatementMode::Prepared => {
                    let ctx = match ctx_sql {
                        Some(sql) => Some(client.prepare_typed_cached(sql, ctx_types).await?),
                        None => None,
                    };
                    let mut main = Vec::with_capacity(stmts.len());
                    for (_, stmt) in stmts {
                        main.push(Some(
                            client.prepare_typed_cached(stmt.sql, stmt.types).await?,
                        ));
                    }
                    (ctx, main)
                }
                StatementMode::Unnamed => (None, vec![None; stmts.len()]),
            })
        }
        .await;
        let (ctx_prepared, main_prepared) = match prepared {
            Ok(p) => p,
            Err(e) => {
                // The setup was consumed: this transaction must never report a commit.
                self.failed = true;
                return Err(DbError::from(e));
            }
        };

        let actor: Option<String> = match &setup {
            Some(Setup::Admin(a)) => Some(a.clone()),
            _ => None,
        };
        let ctx_params: Vec<&(dyn ToSql + Sync)> = match &setup {
            Some(Setup::Admin(_)) => vec![&actor],
            _ => Vec::new(),
        };

        let mut steps: Vec<Step<'_>> = Vec::with_capacity(5 + 2 * stmts.len());
        if let Some(setup) = &setup {
            steps.push(simple(client, "BEGIN"));
            steps.push(simple(
                client,
                match setup {
                    Setup::Admin(_) => "SET LOCAL ROLE tenantry_admin",
                    Setup::Logger => "SET LOCAL ROLE tenantry_logger",
                    Setup::Tenant(_) | Setup::Anonymous => "SET LOCAL ROLE tenantry_app",
                },
            ));
            if let Setup::Tenant(c) = setup {
                for sql in context_statements(c) {
                    steps.push(simple_owned(client, sql));
                }
            }
            if let Some(sql) = ctx_sql {
                steps.push(typed(
                    client,
                    mode,
                    ctx_prepared.as_ref(),
                    sql,
                    &ctx_params,
                    ctx_types,
                ));
            }
        }
        let mut role = Visibility::All;
        let mut indexes = Vec::with_capacity(stmts.len());
        for ((visibility, stmt), prepared) in stmts.iter().zip(&main_prepared) {
            if *visibility != role {
                steps.push(simple(client, visibility.set_role()));
                role = *visibility;
            }
            indexes.push(steps.len());
            steps.push(typed(
                client,
                mode,
                prepared.as_ref(),
                stmt.sql,
                stmt.params,
                stmt.types,
            ));
        }
        if role != Visibility::All {
            steps.push(simple(client, Visibility::All.set_role()));
        }
        if commit {
            steps.push(simple(client, "COMMIT"));
        }

        let mut results = join_all(steps).await;
        if commit {
            self.finished = true;
        }
        if let Some(err) = results.iter_mut().find_map(|r| r.as_ref().err()) {
            self.failed = true;
            return Err(crate::error::classify(err));
        }
        Ok(indexes
            .into_iter()
            .map(|i| std::mem::replace(&mut results[i], Ok(Vec::new())).unwrap_or_default())
            .collect())
    }

    pub(crate) async fn query(&mut self, stmt: Sql<'_>) -> Result<Vec<Row>, DbError> {
        self.flight(None, stmt, false).await
    }

    pub(crate) async fn query_as(
        &mut self,
        visibility: Visibility,
        stmt: Sql<'_>,
    ) -> Result<Vec<Row>, DbError> {
        self.flight(Some(visibility), stmt, false).await
    }

    /// Several statements, each under its own policies, in one flight.
    pub(crate) async fn query_many(
        &mut self,
        stmts: &[(Visibility, Sql<'_>)],
        commit: bool,
    ) -> Result<Vec<Vec<Row>>, DbError> {
        self.flight_many(stmts, commit).await
    }

    /// Runs the statement and commits in the same flight.
    pub(crate) async fn query_and_commit(&mut self, stmt: Sql<'_>) -> Result<Vec<Row>, DbError> {
        self.flight(None, stmt, true).await
    }

    /// Marks the transaction aborted: it rolls back and can never report a commit.
    pub(crate) fn abort(&mut self) {
        self.failed = true;
    }

    pub(crate) async fn commit(mut self) -> Result<(), DbError> {
        if self.failed {
            return Err(DbError::Internal(
                "transaction aborted by an earlier error; nothing was committed".into(),
            ));
        }
        if self.setup.is_some() {
            // Nothing was ever sent: there is nothing to commit.
            self.finished = true;
            return Ok(());
        }
        self.finished = true;
        let client = self.client.as_ref().expect("client present");
        client.batch_execute("COMMIT").await.map_err(DbError::from)
    }

    pub(crate) async fn rollback(mut self) -> Result<(), DbError> {
        self.finished = true;
        if self.setup.is_some() {
            return Ok(());
        }
        let client = self.client.as_ref().expect("client present");
        client
            .batch_execute("ROLLBACK")
            .await
            .map_err(DbError::from)
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.finished || self.setup.is_some() {
            return;
        }
        // Dropped mid-transaction (early return, error, cancelled request): roll
        // back before the connection goes back to the pool; if that is not
        // possible, the connection is detached and closed instead.
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

fn simple<'a>(client: &'a Object, sql: &'static str) -> Step<'a> {
    Box::pin(async move { client.batch_execute(sql).await.map(|()| Vec::new()) })
}

fn simple_owned(client: &Object, sql: String) -> Step<'_> {
    Box::pin(async move { client.batch_execute(&sql).await.map(|()| Vec::new()) })
}

/// The values of a tenant context the server knows itself, as literal
/// `SET LOCAL` statements, one per setting (Citus propagates only `SET LOCAL`,
/// and only as its own statement). Always all three, so nothing left in the
/// session can be inherited.
fn context_statements(c: &TenantContext) -> [String; 3] {
    [
        format!("SET LOCAL app.current_tenant_id = '{}'", c.tenant.as_uuid()),
        format!(
            "SET LOCAL app.current_user_id = '{}'",
            c.user.map(|u| u.as_uuid().to_string()).unwrap_or_default()
        ),
        format!(
            "SET LOCAL app.actor = {}",
            string_literal(c.actor.as_deref().unwrap_or(""))
        ),
    ]
}

/// A SQL string literal that means `value` whatever `standard_conforming_strings`
/// is: an escape string with backslashes and quotes doubled. NUL cannot be sent
/// in text and is dropped.
fn string_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn typed<'a>(
    client: &'a Object,
    mode: StatementMode,
    prepared: Option<&'a Statement>,
    sql: &'a str,
    params: &'a [&'a (dyn ToSql + Sync)],
    types: &'a [Type],
) -> Step<'a> {
    match (mode, prepared) {
        (StatementMode::Prepared, Some(stmt)) => Box::pin(client.query(stmt, params)),
        _ => Box::pin(async move {
            let typed: Vec<(&(dyn ToSql + Sync), Type)> =
                params.iter().copied().zip(types.iter().cloned()).collect();
            client.query_typed(sql, &typed).await
        }),
    }
}

/// A transaction acting for one tenant: `SET LOCAL ROLE tenantry_app` and the
/// tenant context are sent with its first statement, so every statement in it
/// is subject to the tenant's row-level security. It cannot be built without a
/// [`TenantContext`]; dropped without [`TenantScope::commit`], it rolls back.
pub struct TenantScope {
    pub(crate) tx: Tx,
    pub(crate) ctx: TenantContext,
}

impl TenantScope {
    pub(crate) fn new(client: Object, mode: StatementMode, ctx: TenantContext) -> Self {
        Self {
            tx: Tx::new(client, mode, Setup::Tenant(ctx.clone())),
            ctx,
        }
    }

    /// The tenant this transaction acts for.
    pub fn tenant(&self) -> TenantId {
        self.ctx.tenant
    }

    /// The acting member, if any.
    pub fn user(&self) -> Option<UserId> {
        self.ctx.user
    }

    /// Runs any SQL inside the tenant's transaction, as `tenantry_app`, under RLS.
    /// For applications' own tables; every parameter's type must be given.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        types: &[Type],
    ) -> Result<Vec<Row>, DbError> {
        self.tx.query(Sql { sql, params, types }).await
    }

    /// Like [`TenantScope::query`], under a narrower set of policies.
    pub async fn query_as(
        &mut self,
        visibility: Visibility,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        types: &[Type],
    ) -> Result<Vec<Row>, DbError> {
        self.tx
            .query_as(visibility, Sql { sql, params, types })
            .await
    }

    /// Commits. Errors if any statement failed (nothing is committed then).
    pub async fn commit(self) -> Result<(), DbError> {
        self.tx.commit().await
    }

    /// Rolls back explicitly (dropping the scope does the same, asynchronously).
    pub async fn rollback(self) -> Result<(), DbError> {
        self.tx.rollback().await
    }
}

/// A transaction as `tenantry_admin`: tenants, hierarchy, audit, maintenance.
/// It cannot read tenant resources; to act inside a tenant, an administrator
/// opens a [`TenantScope`] with an `admin` actor.
pub struct AdminScope {
    pub(crate) tx: Tx,
}

impl AdminScope {
    pub(crate) fn new(client: Object, mode: StatementMode, actor: String) -> Self {
        Self {
            tx: Tx::new(client, mode, Setup::Admin(actor)),
        }
    }

    /// Commits. Errors if any statement failed.
    pub async fn commit(self) -> Result<(), DbError> {
        self.tx.commit().await
    }
}
