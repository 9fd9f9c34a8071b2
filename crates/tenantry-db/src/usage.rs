//! Usage and audit: the request log (batched appends), hourly `tenant_metrics` with storage samples, the operator's top tenants, `tenant_resource_usage`, adopted tables' row counts, and the audit log as a tenant or an administrator sees it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::{types::Type, Row};

use crate::{
    scope::{Stmt, Tx},
    AdminScope, AuditEventId, Database, DbError, ResourceId, TenantId, TenantScope, UserId,
};

/// One API request, as logged.
#[derive(Debug, Clone)]
pub struct RequestLogEntry {
    /// The caller's tenant.
    pub tenant_id: TenantId,
    /// When the request arrived.
    pub created_at: DateTime<Utc>,
    /// The acting member, if any.
    pub user_id: Option<UserId>,
    /// The resource the request addressed, if any.
    pub resource_id: Option<ResourceId>,
    /// HTTP method.
    pub method: String,
    /// Route template, e.g. `/v1/resources/{id}`.
    pub route: String,
    /// HTTP status.
    pub status: i16,
    /// Handling time in milliseconds.
    pub latency_ms: f64,
    /// The API key that made it, if a key did.
    pub key_id: Option<crate::KeyId>,
    /// Who acted as the member (an impersonation), if anyone.
    pub impersonator: Option<String>,
    /// The request's id (`X-Request-Id`), 1 to 128 characters; longer ones are refused by the table.
    pub request_id: Option<String>,
}

impl RequestLogEntry {
    /// A request of `tenant_id` answered now, with no member, resource,
    /// key, impersonator or request id (set the fields to add them).
    pub fn new(
        tenant_id: TenantId,
        method: &str,
        route: &str,
        status: i16,
        latency_ms: f64,
    ) -> Self {
        Self {
            tenant_id,
            created_at: Utc::now(),
            user_id: None,
            resource_id: None,
            method: method.to_owned(),
            route: route.to_owned(),
            status,
            latency_ms,
            key_id: None,
            impersonator: None,
            request_id: None,
        }
    }
}

/// Requests one key of the tenant made, for `/v1/usage/keys`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyUsage {
    /// The key.
    pub key_id: crate::KeyId,
    /// Requests it made in the period.
    pub request_count: i64,
    /// Of which answered with a status of 400 or more.
    pub error_count: i64,
    /// Its last request in the period.
    pub last_request_at: DateTime<Utc>,
}

/// One hour of a tenant's usage: `tenant_metrics` (requests) and
/// `storage_samples` (storage); a row exists when either has one.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsRow {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Start of the hour.
    pub hour: DateTime<Utc>,
    /// Requests in that hour.
    pub request_count: i64,
    /// Distinct members.
    pub unique_users: i64,
    /// Distinct resources addressed.
    pub resources_accessed: i64,
    /// The row belongs to a descendant of the caller.
    pub is_descendant: bool,
    /// Distinct API keys that made requests.
    pub unique_keys: i64,
    /// Requests answered 400–499.
    pub client_errors: i64,
    /// Requests answered 500 or more.
    pub server_errors: i64,
    /// 95th percentile of the handling time, in milliseconds; absent in an hour without requests.
    pub p95_latency_ms: Option<f64>,
    /// Resources the tenant held when the hour was sampled; absent when it was not.
    pub storage_resources: Option<i64>,
    /// Bytes of those resources; absent when the hour was not sampled.
    pub storage_bytes: Option<i64>,
}

/// What the usage ranking (`GET /v1/usage/top`, `AdminScope::usage_top`) ranks tenants by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum UsageRanking {
    /// Most requests.
    #[default]
    Requests,
    /// Most answers of 400 or more.
    Errors,
    /// Highest p95 latency (hourly p95s weighted by their requests).
    P95,
    /// Most bytes at the latest storage sample.
    Storage,
}

impl UsageRanking {
    fn as_sql(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Errors => "errors",
            Self::P95 => "p95",
            Self::Storage => "storage",
        }
    }
}

/// One tenant of the operator's ranking over a period.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopTenant {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its name.
    pub name: String,
    /// Its status (`active`, `suspended`, `deleted`).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::TenantStatus))]
    pub status: String,
    /// Requests in the period.
    pub request_count: i64,
    /// Of which answered 400–499.
    pub client_errors: i64,
    /// Of which answered 500 or more.
    pub server_errors: i64,
    /// Errors (4xx and 5xx) per request, 0 to 1; absent without requests.
    pub error_rate: Option<f64>,
    /// The hourly p95 latencies (ms) averaged, each hour weighted by its requests; absent without requests.
    pub p95_latency_ms: Option<f64>,
    /// Resources at the latest storage sample of the period; absent when none was taken.
    pub storage_resources: Option<i64>,
    /// Bytes at the latest storage sample of the period; absent when none was taken.
    pub storage_bytes: Option<i64>,
}

/// One adopted table with the tenant's own rows in it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdoptedTableUsage {
    /// The table as PostgreSQL names it (schema-qualified, quoted where needed).
    pub table: String,
    /// Ancestors reach their descendants' rows too.
    pub hierarchy: bool,
    /// Rows may be shared read-only with other tenants.
    pub sharing: bool,
    /// The permission writes need (beyond the tenant policy), if any.
    pub write_permission: Option<String>,
    /// When it was adopted.
    pub adopted_at: DateTime<Utc>,
    /// The tenant's own rows in it (not its descendants'), counted under its policies.
    pub row_count: i64,
}

/// One row of `tenant_resource_usage`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceUsage {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its name.
    pub tenant_name: String,
    /// How many resources it owns.
    pub total_resources: i64,
    /// Bytes of name and data.
    pub storage_used: i64,
    /// Latest change to any of them.
    pub last_modified: Option<DateTime<Utc>>,
}

/// One audit-log row.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// The event's id (random: it orders nothing, least of all across tenants).
    pub event_id: AuditEventId,
    /// The tenant it concerns.
    pub tenant_id: TenantId,
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// Who: `key:<id>`, `user:<id>`, `admin` (the admin token), `cli:<operator>`
    /// (the CLI: `TENANTRY_ACTOR`, else system user and host), `db:<login>` (SQL
    /// without a label), `tenant:<id>` (another tenant that declined a share),
    /// or the label an operator's SQL set (`set_actor_local`).
    pub actor: String,
    /// What, e.g. `key.revoked`.
    pub action: String,
    /// Kind of object.
    pub target_type: String,
    /// Its id.
    pub target_id: Option<String>,
    /// Details.
    pub details: serde_json::Value,
    /// Who acted as the actor (an impersonation: `admin`, `user:<owner>`), if anyone.
    pub impersonator: Option<String>,
}

/// One row of the operator's audit log: what operators and administrators
/// did to every tenant at once (`tenantry.operator_audit_log`).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OperatorAuditEntry {
    /// The event's id (random).
    pub event_id: AuditEventId,
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// Who: `cli:<operator>` (the CLI: `TENANTRY_ACTOR`, else system user
    /// and host), `admin` (the admin token), `db:<login>` (SQL without a
    /// label), or the label an operator's SQL set (`set_actor_local`).
    pub actor: String,
    /// What: `table.adopted`, `table.options_changed`, `table.altered`,
    /// `table.backfilled`, `table.released`, `permission.defined`, `permission.described`,
    /// `context_key.added`, `context_key.retired`, `audit_log.expired`,
    /// `policy.changed`.
    pub action: String,
    /// Kind of object: `table`, `permission`, `context_key`, `audit_log`,
    /// `policy`.
    pub target_type: String,
    /// Its name or id (a table as `schema.table`).
    pub target_id: Option<String>,
    /// Details: the options, the change, the rows expired.
    pub details: serde_json::Value,
}

/// Filters of an audit listing (newest first).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this action.
    pub action: Option<String>,
    /// From this time (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Until this time (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// Rows after this one in newest-first order: its time and event id (pagination).
    pub after: Option<(DateTime<Utc>, AuditEventId)>,
    /// Rows to read, clamped to 1..=1001: a page of at most 1,000 and one
    /// row more, which tells whether a next page exists.
    pub limit: i64,
}

const AUDIT_SQL: &str = "SELECT event_id, tenant_id, occurred_at, actor, action, target_type, target_id, details,
        impersonator
    FROM tenantry.audit_log
    WHERE tenant_id = $1 AND ($2::text IS NULL OR action = $2)
      AND ($3::timestamptz IS NULL OR occurred_at >= $3) AND ($4::timestamptz IS NULL OR occurred_at < $4)
      AND ($5::timestamptz IS NULL OR (occurred_at, event_id) < ($5, $6))
    ORDER BY occurred_at DESC, event_id DESC LIMIT $7";
const AUDIT_TYPES: &[Type] = &[
    Type::UUID,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::UUID,
    Type::INT8,
];

/// The operator's audit log's page: [`AUDIT_SQL`]'s filters without a tenant
/// (`$1` is unused, so that both take the same parameters).
const OPERATOR_AUDIT_SQL: &str = "SELECT event_id, occurred_at, actor, action, target_type, target_id, details
    FROM tenantry.operator_audit_log
    WHERE $1::uuid IS NULL AND ($2::text IS NULL OR action = $2)
      AND ($3::timestamptz IS NULL OR occurred_at >= $3) AND ($4::timestamptz IS NULL OR occurred_at < $4)
      AND ($5::timestamptz IS NULL OR (occurred_at, event_id) < ($5, $6))
    ORDER BY occurred_at DESC, event_id DESC LIMIT $7";

impl AuditQuery {
    /// One page of `tenant`'s audit log (or, with `None` and
    /// [`OPERATOR_AUDIT_SQL`], the operator's), through either kind of
    /// scope's transaction.
    async fn rows(
        &self,
        tx: &mut Tx,
        sql: &'static str,
        tenant: Option<&uuid::Uuid>,
    ) -> Result<Vec<Row>, DbError> {
        // 1,001: the API asks for a page of 1,000 and one more row, and with
        // 1,000 it answered the largest page as the last (found by a
        // concurrency review: an auditor paging by 1,000 missed every
        // older event).
        let limit = self.limit.clamp(1, 1001);
        let (after_time, after_id) = self
            .after
            .map_or((None, None), |(at, id)| (Some(at), Some(*id.as_uuid())));
        tx.rows(Stmt {
            sql,
            params: &[
                &tenant,
                &self.action,
                &self.since,
                &self.until,
                &after_time,
                &after_id,
                &limit,
            ],
            types: AUDIT_TYPES,
        })
        .await
    }

    /// One page of `tenant`'s audit log, through either kind of scope's transaction.
    async fn page(&self, tx: &mut Tx, tenant: &uuid::Uuid) -> Result<Vec<AuditEntry>, DbError> {
        let rows = self.rows(tx, AUDIT_SQL, Some(tenant)).await?;
        Ok(rows.iter().map(audit).collect())
    }
}

fn audit(r: &Row) -> AuditEntry {
    AuditEntry {
        event_id: AuditEventId::from_uuid(r.get(0)),
        tenant_id: TenantId::from_uuid(r.get(1)),
        occurred_at: r.get(2),
        actor: r.get(3),
        action: r.get(4),
        target_type: r.get(5),
        target_id: r.get(6),
        details: r.get(7),
        impersonator: r.get(8),
    }
}

impl TenantScope {
    /// The scope's tenant's audit log (a tenant reads only its own rows).
    pub async fn audit_log(&mut self, q: &AuditQuery) -> Result<Vec<AuditEntry>, DbError> {
        let me = *self.tenant().as_uuid();
        q.page(&mut self.tx, &me).await
    }

    /// Hourly metrics of the scope's tenant and its descendants (flagged), within [from, to).
    pub async fn metrics(
        &mut self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<MetricsRow>, DbError> {
        let rows = self
            .rows(
                "SELECT tenant_id, hour, request_count, unique_users, resources_accessed, is_descendant,
                        unique_keys, client_errors, server_errors, p95_latency_ms, storage_resources, storage_bytes
                 FROM tenantry.current_tenant_metrics($1, $2)",
                &[&from, &to],
                &[Type::TIMESTAMPTZ, Type::TIMESTAMPTZ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| MetricsRow {
                tenant_id: TenantId::from_uuid(r.get(0)),
                hour: r.get(1),
                request_count: r.get(2),
                unique_users: r.get(3),
                resources_accessed: r.get(4),
                is_descendant: r.get(5),
                unique_keys: r.get(6),
                client_errors: r.get(7),
                server_errors: r.get(8),
                p95_latency_ms: r.get(9),
                storage_resources: r.get(10),
                storage_bytes: r.get(11),
            })
            .collect())
    }

    /// The adopted tables with the scope's tenant's own row count in each,
    /// counted under its policies in the one table holding its rows (by the
    /// tenant_id index: the cost grows with its rows only).
    pub async fn adopted_tables(&mut self) -> Result<Vec<AdoptedTableUsage>, DbError> {
        let rows = self
            .rows(
                "SELECT table_name, hierarchy, sharing, write_permission, adopted_at, row_count
                 FROM tenantry.current_tenant_tables()",
                &[],
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AdoptedTableUsage {
                table: r.get(0),
                hierarchy: r.get(1),
                sharing: r.get(2),
                write_permission: r.get(3),
                adopted_at: r.get(4),
                row_count: r.get(5),
            })
            .collect())
    }

    /// Requests per API key of the scope's tenant since `since` (the request
    /// log keeps 30 days), most active first.
    pub async fn key_usage(&mut self, since: DateTime<Utc>) -> Result<Vec<KeyUsage>, DbError> {
        let me = *self.tenant().as_uuid();
        let rows = self
            .rows(
                // Counted first, then each key looked up by its primary
                // key: as a semi-join of the log's rows with the tenant's
                // keys, a generic plan over stale statistics chose a nested
                // loop that compared every row with every key (55 million
                // comparisons for a tenant of 5,000 keys, past the statement
                // timeout: found by a soak review).
                "SELECT u.key_id, u.requests, u.errors, u.last_at
                 FROM (SELECT l.key_id, count(*) AS requests,
                              count(*) FILTER (WHERE l.status >= 400) AS errors,
                              max(l.created_at) AS last_at
                       FROM tenantry.request_log l
                       WHERE l.tenant_id = $1 AND l.created_at >= $2 AND l.key_id IS NOT NULL
                       GROUP BY l.key_id) u
                 -- The tenant's own keys only: rows naming others (a
                 -- tenant's own inserts may) would make the answer as long
                 -- as they are many.
                 WHERE EXISTS (SELECT 1 FROM tenantry.api_keys k
                               WHERE k.tenant_id = $1 AND k.key_id = u.key_id)
                 ORDER BY u.requests DESC, u.key_id",
                &[&me, &since],
                &[Type::UUID, Type::TIMESTAMPTZ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| KeyUsage {
                key_id: crate::KeyId::from_uuid(r.get(0)),
                request_count: r.get(1),
                error_count: r.get(2),
                last_request_at: r.get(3),
            })
            .collect())
    }

    /// `tenant_resource_usage` rows the caller may see: itself and its descendants.
    pub async fn resource_usage(&mut self) -> Result<Vec<ResourceUsage>, DbError> {
        let rows = self
            .rows(
                "SELECT tenant_id, tenant_name, total_resources, storage_used, last_modified
                 FROM tenantry.tenant_resource_usage ORDER BY tenant_id = tenantry.current_tenant_id() DESC, tenant_name, tenant_id",
                &[],
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ResourceUsage {
                tenant_id: TenantId::from_uuid(r.get(0)),
                tenant_name: r.get(1),
                total_resources: r.get(2),
                storage_used: r.get(3),
                last_modified: r.get(4),
            })
            .collect())
    }
}

impl AdminScope {
    /// Any tenant's audit log.
    pub async fn audit_log(
        &mut self,
        tenant: TenantId,
        q: &AuditQuery,
    ) -> Result<Vec<AuditEntry>, DbError> {
        q.page(&mut self.tx, tenant.as_uuid()).await
    }

    /// The operator's audit log (`tenantry.operator_audit_log`): tables
    /// adopted, changed, altered and released, permissions defined, context
    /// keys added and retired, audit rows expired; newest first.
    pub async fn operator_audit_log(
        &mut self,
        q: &AuditQuery,
    ) -> Result<Vec<OperatorAuditEntry>, DbError> {
        let rows = q.rows(&mut self.tx, OPERATOR_AUDIT_SQL, None).await?;
        Ok(rows
            .iter()
            .map(|r| OperatorAuditEntry {
                event_id: AuditEventId::from_uuid(r.get(0)),
                occurred_at: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                target_type: r.get(4),
                target_id: r.get(5),
                details: r.get(6),
            })
            .collect())
    }

    /// The `limit` (1..=100) tenants ranked highest by `by` over the last
    /// `days` (1..=30) days, from the hourly metrics and storage samples.
    pub async fn usage_top(
        &mut self,
        days: i32,
        by: UsageRanking,
        limit: i32,
    ) -> Result<Vec<TopTenant>, DbError> {
        let rows = self
            .tx
            .rows(Stmt {
                sql: "SELECT tenant_id, name, status, request_count, client_errors, server_errors,
                             p95_latency_ms, storage_resources, storage_bytes
                      FROM tenantry.usage_top($1, $2, $3)",
                params: &[&days, &by.as_sql(), &limit],
                types: &[Type::INT4, Type::TEXT, Type::INT4],
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let request_count: i64 = r.get(3);
                let client_errors: i64 = r.get(4);
                let server_errors: i64 = r.get(5);
                TopTenant {
                    tenant_id: TenantId::from_uuid(r.get(0)),
                    name: r.get(1),
                    status: r.get(2),
                    request_count,
                    client_errors,
                    server_errors,
                    error_rate: (request_count > 0)
                        .then(|| (client_errors + server_errors) as f64 / request_count as f64),
                    p95_latency_ms: r.get(6),
                    storage_resources: r.get(7),
                    storage_bytes: r.get(8),
                }
            })
            .collect())
    }
}

impl Database {
    /// Appends request-log rows in one multi-row insert as `tenantry_logger`.
    pub async fn log_requests(&self, entries: &[RequestLogEntry]) -> Result<u64, DbError> {
        self.log_request_batch(entries, uuid::Uuid::new_v4()).await
    }

    /// [`Database::log_requests`] for a batch that may be retried: `batch`,
    /// the same at every try, is claimed in the statement that appends the
    /// rows (`tenantry.claim_request_log_batch`, migration 0054), so a try
    /// after one whose commit was in doubt (its connection lost once COMMIT
    /// was sent) appends nothing if that one committed. Answers how many
    /// rows the log holds of the batch: all of them, either way.
    pub async fn log_request_batch(
        &self,
        entries: &[RequestLogEntry],
        batch: uuid::Uuid,
    ) -> Result<u64, DbError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let tenants: Vec<uuid::Uuid> = entries.iter().map(|e| *e.tenant_id.as_uuid()).collect();
        let times: Vec<DateTime<Utc>> = entries.iter().map(|e| e.created_at).collect();
        let users: Vec<Option<uuid::Uuid>> = entries
            .iter()
            .map(|e| e.user_id.map(|u| *u.as_uuid()))
            .collect();
        let resources: Vec<Option<uuid::Uuid>> = entries
            .iter()
            .map(|e| e.resource_id.map(|r| *r.as_uuid()))
            .collect();
        let methods: Vec<&str> = entries.iter().map(|e| e.method.as_str()).collect();
        let routes: Vec<&str> = entries.iter().map(|e| e.route.as_str()).collect();
        let statuses: Vec<i16> = entries.iter().map(|e| e.status).collect();
        let latencies: Vec<f64> = entries.iter().map(|e| e.latency_ms).collect();
        let keys: Vec<Option<uuid::Uuid>> = entries
            .iter()
            .map(|e| e.key_id.map(|k| *k.as_uuid()))
            .collect();
        let impersonators: Vec<Option<&str>> =
            entries.iter().map(|e| e.impersonator.as_deref()).collect();
        let request_ids: Vec<Option<&str>> =
            entries.iter().map(|e| e.request_id.as_deref()).collect();
        let mut tx = Tx::logger(
            self.connection().await?,
            self.statement_mode(),
            self.contexts(),
        );
        // On Citus the same insert runs as the owner (append_request_log):
        // Citus copies INSERT ... SELECT into the shards, which RLS refuses.
        let sql = if tx.citus() {
            "SELECT tenantry.append_request_log($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
              WHERE (SELECT tenantry.claim_request_log_batch($12))"
        } else {
            // Dated within what the table takes from the logger (policy
            // request_log_dated_now): a server clock ahead of the database's,
            // or entries held through a long outage, must not cost the whole
            // batch (one refused row fails the statement). A made-up method
            // or a team's route longer than the table takes (migration 0047)
            // is cut for the same reason.
            "INSERT INTO tenantry.request_log (tenant_id, created_at, user_id, resource_id, method, route, status, latency_ms,
                                                    key_id, impersonator, request_id)
                  SELECT u.t, LEAST(GREATEST(u.at, now() - interval '29 days'), now()), u.u, u.r, left(u.m, 32), left(u.ro, 1000),
                         u.s, u.l, u.k, u.i, u.q
                    FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::int2[],
                                $8::float8[], $9::uuid[], $10::text[], $11::text[]) AS u (t, at, u, r, m, ro, s, l, k, i, q)
                   -- Claimed once per statement (an init plan), false when
                   -- this batch was written already.
                   WHERE (SELECT tenantry.claim_request_log_batch($12))"
        };
        tx.query_and_commit(Stmt {
            sql,
            params: &[
                &tenants,
                &times,
                &users,
                &resources,
                &methods,
                &routes,
                &statuses,
                &latencies,
                &keys,
                &impersonators,
                &request_ids,
                &batch,
            ],
            types: &[
                Type::UUID_ARRAY,
                Type::TIMESTAMPTZ_ARRAY,
                Type::UUID_ARRAY,
                Type::UUID_ARRAY,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::INT2_ARRAY,
                Type::FLOAT8_ARRAY,
                Type::UUID_ARRAY,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::UUID,
            ],
        })
        .await?;
        Ok(entries.len() as u64)
    }
}
