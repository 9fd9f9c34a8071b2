//! Tenants and their hierarchy: administrative operations (create, list, rename, settings, status, parent, isolation) and what a tenant sees of itself and its children.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::{
    types::{Json, Type},
    Row,
};

use crate::{scope::Stmt, AdminScope, DbError, TenantId, TenantScope, TenantSettings};

/// How many days of the request log the server's upkeep keeps: the 30 days
/// the usage routes read (`hours` up to 720), and a few more.
pub const REQUEST_LOG_KEEP_DAYS: u32 = 35;

/// Lifecycle of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// Normal operation.
    Active,
    /// Keys refused, data kept; can be re-activated.
    Suspended,
    /// Terminal; data kept for audit, nothing can act as it.
    Deleted,
}

impl TenantStatus {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, DbError> {
        match s {
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            "deleted" => Ok(Self::Deleted),
            other => Err(DbError::Internal(format!("unknown tenant status {other}"))),
        }
    }
}

/// Isolation model of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Pooled tables under row-level security.
    #[default]
    Shared,
    /// Its own schema `tenant_<random hex>`, with its own table of each tenant
    /// table family (its `resources` inheriting `tenantry.resources`, its
    /// tables of adopted tables standing alone), still under RLS.
    Schema,
}

impl Isolation {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Schema => "schema",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, DbError> {
        match s {
            "shared" => Ok(Self::Shared),
            "schema" => Ok(Self::Schema),
            other => Err(DbError::Internal(format!("unknown isolation {other}"))),
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tenant {
    /// Its id.
    pub tenant_id: TenantId,
    /// Display name.
    pub name: String,
    /// Lifecycle status.
    pub status: TenantStatus,
    /// Parent tenant, if any.
    pub parent_id: Option<TenantId>,
    /// Isolation model.
    pub isolation: Isolation,
    /// Validated settings (quotas, rate limits, metadata).
    pub settings: TenantSettings,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

const TENANT_COLUMNS: &str =
    "tenant_id, name, status, parent_id, isolation, settings, created_at, updated_at";

impl Tenant {
    fn from_row(r: &Row) -> Result<Self, DbError> {
        Ok(Self {
            tenant_id: TenantId::from_uuid(r.get(0)),
            name: r.get(1),
            status: TenantStatus::parse(r.get(2))?,
            parent_id: r.get::<_, Option<uuid::Uuid>>(3).map(TenantId::from_uuid),
            isolation: Isolation::parse(r.get(4))?,
            settings: settings(r, 5)?,
            created_at: r.get(6),
            updated_at: r.get(7),
        })
    }
}

/// Input for a new tenant.
#[derive(Debug, Clone, Default)]
pub struct NewTenant {
    /// Display name (1–200 characters).
    pub name: String,
    /// Parent, for a child tenant.
    pub parent_id: Option<TenantId>,
    /// Isolation model.
    pub isolation: Isolation,
    /// Settings (none: `{}`).
    pub settings: Option<TenantSettings>,
}

/// A change to a tenant; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct TenantUpdate {
    /// New name.
    pub name: Option<String>,
    /// Replacement settings.
    pub settings: Option<TenantSettings>,
}

/// The settings column, parsed (the database validated it on write).
fn settings(r: &Row, idx: usize) -> Result<TenantSettings, DbError> {
    r.try_get::<_, Json<TenantSettings>>(idx)
        .map(|Json(s)| s)
        .map_err(|e| DbError::Internal(format!("tenant settings: {e}")))
}

fn tenants(rows: &[Row]) -> Result<Vec<Tenant>, DbError> {
    rows.iter().map(Tenant::from_row).collect()
}

fn one(rows: &[Row], id: TenantId) -> Result<Tenant, DbError> {
    rows.first()
        .map(Tenant::from_row)
        .unwrap_or_else(|| Err(DbError::NotFound(format!("tenant {id} not found"))))
}

impl AdminScope {
    async fn q(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        types: &[Type],
    ) -> Result<Vec<Row>, DbError> {
        self.tx.rows(Stmt { sql, params, types }).await
    }

    /// Creates a tenant (root or child; schema isolation creates its schema).
    pub async fn create_tenant(&mut self, new: &NewTenant) -> Result<Tenant, DbError> {
        if let Some(parent) = new.parent_id {
            // The parent and its ancestors see the child in their subtree.
            self.tx.changes_tenant(parent);
        }
        let parent = new.parent_id.map(|p| *p.as_uuid());
        let settings = Json(new.settings.clone().unwrap_or_default());
        let rows = self
            .q(
                "SELECT tenantry.create_tenant($1, $2, $3, $4)",
                &[&new.name, &parent, &new.isolation.as_str(), &settings],
                &[Type::TEXT, Type::UUID, Type::TEXT, Type::JSONB],
            )
            .await?;
        let id = TenantId::from_uuid(rows[0].get(0));
        self.get_tenant(id).await
    }

    /// One tenant, any status.
    pub async fn get_tenant(&mut self, id: TenantId) -> Result<Tenant, DbError> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenantry.tenants WHERE tenant_id = $1");
        let rows = self.q(&sql, &[id.as_uuid()], &[Type::UUID]).await?;
        one(&rows, id)
    }

    /// Tenants in id order after `after`, at most `limit`.
    pub async fn list_tenants(
        &mut self,
        after: Option<TenantId>,
        limit: i64,
    ) -> Result<Vec<Tenant>, DbError> {
        let after = after.map(|a| *a.as_uuid());
        let sql = format!(
            "SELECT {TENANT_COLUMNS} FROM tenantry.tenants WHERE ($1::uuid IS NULL OR tenant_id > $1) ORDER BY tenant_id LIMIT $2"
        );
        tenants(
            &self
                .q(&sql, &[&after, &limit], &[Type::UUID, Type::INT8])
                .await?,
        )
    }

    /// Renames and/or replaces settings.
    pub async fn update_tenant(
        &mut self,
        id: TenantId,
        update: &TenantUpdate,
    ) -> Result<Tenant, DbError> {
        let sql = format!(
            "UPDATE tenantry.tenants SET name = coalesce($2, name), settings = coalesce($3, settings)
             WHERE tenant_id = $1 RETURNING {TENANT_COLUMNS}"
        );
        let rows = self
            .q(
                &sql,
                &[
                    id.as_uuid(),
                    &update.name,
                    &update.settings.as_ref().map(Json),
                ],
                &[Type::UUID, Type::TEXT, Type::JSONB],
            )
            .await?;
        one(&rows, id)
    }

    /// Moves through the lifecycle (deleted is terminal; a tenant with live children cannot be deleted).
    pub async fn set_status(
        &mut self,
        id: TenantId,
        status: TenantStatus,
    ) -> Result<Tenant, DbError> {
        self.tx.changes_tenant(id);
        if status == TenantStatus::Deleted && !self.tx.citus() {
            // The row FOR UPDATE before the UPDATE: the deletion waits for the
            // open shares that hold it FOR KEY SHARE (03_resources.sql) while
            // holding nothing yet. The UPDATE's trigger takes that lock too
            // (for SQL that updates the row directly), and taken there, after
            // the UPDATE had locked the row, it deadlocked with a tenant
            // sharing its own resource, whose write then wanted the row FOR
            // SHARE (found by a contention re-audit). Not on Citus, where a
            // row lock on the tenants reference table locks its whole shard.
            self.q(
                "SELECT 1 FROM tenantry.tenants WHERE tenant_id = $1 FOR UPDATE",
                &[id.as_uuid()],
                &[Type::UUID],
            )
            .await?;
        }
        let sql = format!("UPDATE tenantry.tenants SET status = $2 WHERE tenant_id = $1 RETURNING {TENANT_COLUMNS}");
        let rows = self
            .q(
                &sql,
                &[id.as_uuid(), &status.as_str()],
                &[Type::UUID, Type::TEXT],
            )
            .await?;
        one(&rows, id)
    }

    /// Re-parents a tenant (`None` makes it a root). Cycles are refused with a conflict.
    pub async fn set_parent(
        &mut self,
        id: TenantId,
        parent: Option<TenantId>,
    ) -> Result<Tenant, DbError> {
        // Its old ancestors lose it (found by their subtrees now), the new ones gain it.
        self.tx.changes_tenant(id);
        if let Some(parent) = parent {
            self.tx.changes_tenant(parent);
        }
        let parent = parent.map(|p| *p.as_uuid());
        // Through the owner's function: the update and the closure rows its
        // trigger rewrites are then written by one role (on Citus, two roles
        // met as a distributed deadlock).
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenantry.set_tenant_parent($1, $2)");
        let rows = self
            .q(&sql, &[id.as_uuid(), &parent], &[Type::UUID, Type::UUID])
            .await?;
        one(&rows, id)
    }

    /// Moves a tenant between isolation models, keeping all of its data.
    pub async fn set_isolation(
        &mut self,
        id: TenantId,
        isolation: Isolation,
    ) -> Result<Tenant, DbError> {
        self.tx.changes_tenant(id);
        self.q(
            "SELECT tenantry.set_tenant_isolation($1, $2)",
            &[id.as_uuid(), &isolation.as_str()],
            &[Type::UUID, Type::TEXT],
        )
        .await?;
        self.get_tenant(id).await
    }

    /// Brings the usage up to date now: rolls up the hours that ended and
    /// refreshes the guide's `tenant_metrics` materialized view
    /// (concurrently); `tenantry.refresh_tenant_metrics()`.
    pub async fn refresh_metrics(&mut self) -> Result<(), DbError> {
        self.refresh_metrics_within(None, None).await
    }

    /// [`AdminScope::refresh_metrics`], each lock it needs waited for at
    /// most `lock_wait` (`lock_timeout` for the rest of the transaction;
    /// past it the refresh fails with [`DbError::Contention`]; `None`: as
    /// long as the statement timeout allows, whatever the pool's
    /// `lock_timeout`): a
    /// scheduler's refresh gives up and is tried at its next run, where it
    /// waited for as long as another session held the request log, the
    /// usage view or a tenant's table, on a pool without a
    /// `statement_timeout`, and held up the work after it.
    pub async fn refresh_metrics_waiting(
        &mut self,
        lock_wait: Option<Duration>,
    ) -> Result<(), DbError> {
        self.refresh_metrics_within(lock_wait, None).await
    }

    /// [`AdminScope::refresh_metrics_waiting`] that may run for
    /// `time_limit` (its `statement_timeout`, and how long the library waits
    /// for its reply), instead of the pool's timeouts: the first refresh
    /// after migration 0058 counts 30 days of the request log, and a copy of
    /// 30 days is refreshed each time, which outgrew the server's 30 s on a
    /// busy log (a soak review: 41 s at 3.25 million rows), and usage then
    /// stayed stale for good.
    pub async fn refresh_metrics_within(
        &mut self,
        lock_wait: Option<Duration>,
        time_limit: Option<Duration>,
    ) -> Result<(), DbError> {
        self.upkeep_statement(
            "SELECT tenantry.refresh_tenant_metrics()",
            lock_wait,
            time_limit,
        )
        .await?;
        Ok(())
    }

    /// The server's periodic usage upkeep (`tenantry.usage_upkeep()`), with
    /// the bounds of [`AdminScope::refresh_metrics_within`]: the hours that
    /// ended are rolled up, and the guide's `tenant_metrics` copy is
    /// refreshed only when one was (about once an hour; tenantry's own reads
    /// of usage are live). Returns how many hours it rolled up.
    pub async fn usage_upkeep_within(
        &mut self,
        lock_wait: Option<Duration>,
        time_limit: Option<Duration>,
    ) -> Result<i32, DbError> {
        let rows = self
            .upkeep_statement("SELECT tenantry.usage_upkeep()", lock_wait, time_limit)
            .await?;
        Ok(rows.first().map_or(0, |r| r.get(0)))
    }

    /// `sql` on a connection of its own that is not reused, each lock
    /// waited for at most `lock_wait` and the statement allowed `time_limit`.
    async fn upkeep_statement(
        &mut self,
        sql: &str,
        lock_wait: Option<Duration>,
        time_limit: Option<Duration>,
    ) -> Result<Vec<tokio_postgres::Row>, DbError> {
        self.tx.retire_connection();
        match lock_wait {
            Some(wait) => self.set_local_millis("lock_timeout", wait).await?,
            None => self.wait_for_locks().await?,
        }
        if let Some(limit) = time_limit {
            self.set_local_millis("statement_timeout", limit).await?;
            self.tx.wait_for_replies(limit + Duration::from_secs(5));
        }
        self.q(sql, &[], &[]).await
    }

    /// Lets the rest of the transaction wait for locks as long as its
    /// statement timeout allows, over the pool's `lock_timeout`
    /// ([`crate::Timeouts::lock_timeout`]): for the steps that wait on
    /// purpose (an explicit metrics refresh waits for the upkeep's turn, a
    /// tier move's steps for the tenant's own transactions), which that
    /// bound, meant for requests, failed after 2 s (found by a review of
    /// the bound).
    pub(crate) async fn wait_for_locks(&mut self) -> Result<(), DbError> {
        self.q("SELECT set_config('lock_timeout', '0', true)", &[], &[])
            .await?;
        Ok(())
    }

    /// Sets the time setting `name` (`lock_timeout`, `statement_timeout`)
    /// to `value` for the rest of the transaction.
    async fn set_local_millis(&mut self, name: &str, value: Duration) -> Result<(), DbError> {
        self.q(
            "SELECT set_config($1, $2, true)",
            &[&name, &crate::database::millis_setting(value)],
            &[Type::TEXT, Type::TEXT],
        )
        .await?;
        Ok(())
    }

    /// Creates the request-log partitions of the coming days; returns how many were created.
    pub async fn ensure_request_log_partitions(&mut self, days_ahead: i32) -> Result<i32, DbError> {
        let rows = self
            .q(
                "SELECT tenantry.ensure_request_log_partitions($1)",
                &[&days_ahead],
                &[Type::INT4],
            )
            .await?;
        Ok(rows[0].get(0))
    }

    /// Retention of the request log: drops its daily partitions older than
    /// `keep_days` (at least 2; [`REQUEST_LOG_KEEP_DAYS`] is what the usage
    /// routes promise and a little more) and the default partition's rows
    /// as old; returns how many partitions were dropped. Dropping a
    /// partition locks the whole log: with `lock_wait`, it waits at most
    /// that long for the lock (then [`DbError::Contention`], nothing
    /// dropped), so that no tenant's usage read queues behind it for long.
    pub async fn drop_request_log_partitions_waiting(
        &mut self,
        keep_days: u32,
        lock_wait: Option<Duration>,
    ) -> Result<i32, DbError> {
        let keep_days = i32::try_from(keep_days).unwrap_or(i32::MAX);
        if let Some(wait) = lock_wait {
            self.set_local_millis("lock_timeout", wait).await?;
        }
        let rows = self
            .q(
                "SELECT tenantry.drop_request_log_partitions(make_interval(days => $1))",
                &[&keep_days],
                &[Type::INT4],
            )
            .await?;
        Ok(rows[0].get(0))
    }

    /// How many of today and tomorrow have no request-log partition of
    /// their own (0 to 2): their rows land in the default partition, which
    /// retention empties row by row and which a later partition of that day
    /// cannot take over. `ensure_request_log_partitions` leaves a day it
    /// could not lock with only a NOTICE; this is what the server reports.
    pub async fn request_log_days_without_partition(&mut self) -> Result<i32, DbError> {
        let rows = self
            .q(
                "SELECT count(*)::int FROM generate_series(current_date, current_date + 1, interval '1 day') AS d(day) \
                 WHERE to_regclass(format('tenantry.%I', 'request_log_' || to_char(d.day, 'YYYYMMDD'))) IS NULL",
                &[],
                &[],
            )
            .await?;
        Ok(rows[0].get(0))
    }
}

impl TenantScope {
    /// The scope's own tenant.
    pub async fn current_tenant(&mut self) -> Result<Tenant, DbError> {
        let id = self.tenant();
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenantry.tenants WHERE tenant_id = $1");
        let rows = self.rows(&sql, &[id.as_uuid()], &[Type::UUID]).await?;
        one(&rows, id)
    }

    /// A tenant of the scope's subtree (itself or a descendant); not found otherwise.
    pub async fn get_tenant(&mut self, id: TenantId) -> Result<Tenant, DbError> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenantry.tenants WHERE tenant_id = $1");
        let rows = self.rows(&sql, &[id.as_uuid()], &[Type::UUID]).await?;
        one(&rows, id)
    }

    /// Direct children of the scope's tenant, oldest first.
    pub async fn children(&mut self) -> Result<Vec<Tenant>, DbError> {
        self.children_page(None, i64::MAX).await
    }

    /// A page of [`TenantScope::children`]: at most `limit` children after
    /// `after` (the creation time and id of the last one of the page
    /// before), read by the database one page at a time.
    pub async fn children_page(
        &mut self,
        after: Option<(DateTime<Utc>, TenantId)>,
        limit: i64,
    ) -> Result<Vec<Tenant>, DbError> {
        tenants(
            &self
                .keyset_rows(
                    after.map(|(at, t)| (at, *t.as_uuid())),
                    limit,
                    ("created_at, tenant_id", ">"),
                    |place| {
                        format!(
                            "SELECT {TENANT_COLUMNS} FROM tenantry.tenants
                             WHERE parent_id = $1 {place}
                             ORDER BY created_at, tenant_id LIMIT $4"
                        )
                    },
                )
                .await?,
        )
    }

    /// A live direct child of the scope's tenant, including one this
    /// transaction created ([`Self::get_tenant`] sees it from the next
    /// transaction on); not found for any other tenant or a deleted child.
    pub async fn child(&mut self, id: TenantId) -> Result<Tenant, DbError> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenantry.child_tenant($1)");
        let rows = self.rows(&sql, &[id.as_uuid()], &[Type::UUID]).await?;
        one(&rows, id)
    }

    /// All descendants (transitively), nearest first.
    pub async fn descendants(&mut self) -> Result<Vec<(Tenant, i32)>, DbError> {
        let sql = "SELECT t.tenant_id, t.name, t.status, t.parent_id, t.isolation, t.settings, t.created_at, t.updated_at, h.depth
                   FROM tenantry.tenant_hierarchy h JOIN tenantry.tenants t ON t.tenant_id = h.child_id
                   WHERE h.parent_id = $1 AND h.depth > 0 ORDER BY h.depth, t.tenant_id";
        let id = *self.tenant().as_uuid();
        self.rows(sql, &[&id], &[Type::UUID])
            .await?
            .iter()
            .map(|r| Ok((Tenant::from_row(r)?, r.get(8))))
            .collect()
    }

    /// Creates a child of the scope's tenant. It is visible to this tenant
    /// from its next transaction, and at once through [`Self::child`].
    pub async fn create_child_tenant(
        &mut self,
        name: &str,
        isolation: Isolation,
        settings: Option<&TenantSettings>,
    ) -> Result<TenantId, DbError> {
        let me = self.tenant();
        self.tx.changes_tenant(me);
        let settings = Json(settings.cloned().unwrap_or_default());
        let rows = self
            .rows(
                "SELECT tenantry.create_child_tenant($1, $2, $3)",
                &[&name, &settings, &isolation.as_str()],
                &[Type::TEXT, Type::JSONB, Type::TEXT],
            )
            .await?;
        Ok(TenantId::from_uuid(rows[0].get(0)))
    }
}
