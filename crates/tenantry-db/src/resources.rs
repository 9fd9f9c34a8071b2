//! Resources and sharing inside a tenant scope: create, read, update, delete, list with keyset pagination and filters; share, list shares, revoke.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{types::Type, Row};

use crate::{
    scope::{Route, Visibility},
    DbError, JsonText, ResourceId, TenantId, TenantScope, UserId,
};

/// A resource as the caller may see it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resource {
    /// Its id.
    pub id: ResourceId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Name (1–1000 characters).
    pub name: String,
    /// JSON payload, as PostgreSQL's `jsonb` stores it: numbers keep their
    /// exact value (not rounded to a double: a JavaScript client's
    /// `JSON.parse` may round them), while their spelling, the keys' order
    /// and the spacing are `jsonb`'s own, and of a key given twice the last
    /// value is kept.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: JsonText,
    /// Size of name and data in bytes, maintained by the database.
    pub size_bytes: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change of name or data, maintained by the database.
    pub updated_at: DateTime<Utc>,
    /// The member who created it, if known.
    pub created_by: Option<UserId>,
    /// How the caller reaches it.
    pub access: Access,
}

/// How the caller reaches a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Owned by the caller's tenant.
    Own,
    /// Owned by a descendant of the caller's tenant.
    Descendant,
    /// Shared with the caller's tenant (read only).
    Shared,
}

/// Which resources a listing covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerFilter {
    /// Everything the caller may read: own, descendants', shared with it.
    #[default]
    All,
    /// The caller's own tenant only.
    Own,
    /// Descendants' resources only.
    Descendants,
    /// Resources shared with the caller only.
    Shared,
}

/// Position in a newest-first listing; opaque to API clients (see [`ResourceCursor::encode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceCursor {
    created_at: DateTime<Utc>,
    id: ResourceId,
}

impl ResourceCursor {
    /// Opaque token: hex of `<micros>:<uuid>`.
    pub fn encode(&self) -> String {
        hex::encode(format!(
            "{}:{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }

    /// Parses a token made by [`ResourceCursor::encode`]; `None` for anything else.
    pub fn decode(token: &str) -> Option<Self> {
        if token.len() > 200 {
            return None;
        }
        let raw = String::from_utf8(hex::decode(token).ok()?).ok()?;
        let (micros, id) = raw.split_once(':')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        // A time no row can have, as no cursor made of one does: it was
        // answered 422 with PostgreSQL's own "timestamp out of range"
        // (found by a red-team review).
        if !within_calendar(&created_at) {
            return None;
        }
        Some(Self {
            created_at,
            id: ResourceId::parse(id).ok()?,
        })
    }
}

/// Whether `at` falls in the years 1 to 9999: what a row's time can be.
/// PostgreSQL's timestamptz ends (or nears its end) outside them, and RFC
/// 3339 parsers refuse what lies beyond; a time a client sends outside them
/// is refused as such, not passed on for the database's own 422.
pub fn within_calendar(at: &DateTime<Utc>) -> bool {
    (1..=9999).contains(&chrono::Datelike::year(at))
}

/// Filters and page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ResourceQuery {
    /// Which owners.
    pub owner: OwnerFilter,
    /// Only names starting with this (exact, case-sensitive).
    pub name_prefix: Option<String>,
    /// Page size, clamped to 1..=1000. A page also ends once its items'
    /// names and data reach [`PAGE_BYTES`] (it holds one item at least):
    /// follow [`ResourcePage::next`] until it is `None`, not until a page is
    /// short.
    pub limit: i64,
    /// Continue after this position.
    pub after: Option<ResourceCursor>,
}

/// A page of resources.
#[derive(Debug, Clone)]
pub struct ResourcePage {
    /// The resources, newest first.
    pub items: Vec<Resource>,
    /// Where the next page starts, if there may be one.
    pub next: Option<ResourceCursor>,
}

/// Input of a new resource.
#[derive(Debug, Clone)]
pub struct NewResource {
    /// Name (1–1000 characters).
    pub name: String,
    /// JSON object payload (`serde_json::json!({…}).into()`, or
    /// [`JsonText::parse`] to keep numbers of any size exactly).
    pub data: JsonText,
}

/// A change to a resource; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct ResourceUpdate {
    /// New name.
    pub name: Option<String>,
    /// Replacement payload (a JSON object).
    pub data: Option<JsonText>,
}

/// A share of a resource with another tenant.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Share {
    /// The shared resource.
    pub resource_id: ResourceId,
    /// Its owner.
    pub owner_tenant_id: TenantId,
    /// The tenant it is shared with.
    pub tenant_id: TenantId,
    /// The member who shared it, if known.
    pub shared_by: Option<UserId>,
    /// When.
    pub shared_at: DateTime<Utc>,
}

/// The columns [`resource`] reads, in its order (a macro, so that the point
/// reads' statements below are `&'static str`s built with `concat!`).
macro_rules! resource_columns {
    () => {
        "id, tenant_id, name, data, size_bytes, created_at, updated_at, created_by"
    };
}
const RESOURCE_COLUMNS: &str = resource_columns!();

/// The columns [`share`] reads, in its order (a macro, for `concat!`).
macro_rules! share_columns {
    () => {
        "resource_id, tenant_id, shared_with, shared_by, shared_at"
    };
}

fn resource(r: &Row, me: TenantId) -> Resource {
    let tenant_id = TenantId::from_uuid(r.get(1));
    // Rows of other tenants reach us only through the hierarchy or a share; a
    // row of a descendant that is also shared with us counts as a descendant's.
    let is_descendant: bool = r.get(8);
    Resource {
        id: ResourceId::from_uuid(r.get(0)),
        tenant_id,
        name: r.get(2),
        data: r.get(3),
        size_bytes: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
        created_by: r.get::<_, Option<uuid::Uuid>>(7).map(UserId::from_uuid),
        access: if tenant_id == me {
            Access::Own
        } else if is_descendant {
            Access::Descendant
        } else {
            Access::Shared
        },
    }
}

/// A point read: the caller's subtree first (the primary key, with the policy
/// as its index condition), then, only when that found nothing, the rows
/// shared with the caller (through the fence `resources_shared_with_me`: a
/// policy "subtree OR shared" would be no index condition, issue 10 finding 8).
/// The caller's own table is named by the transaction's route
/// (docs/architecture.md, "Tiers").
fn get_resource_sql(route: Route) -> &'static str {
    match route {
        Route::Family => GET_RESOURCE_FAMILY,
        Route::Pooled => GET_RESOURCE_POOLED,
        Route::Schema => GET_RESOURCE_SCHEMA,
    }
}

macro_rules! get_resource {
    ($table:literal) => {
        concat!(
            "(",
            own_resource!($table),
            ")\n UNION ALL\n (",
            shared_resource!(),
            ")\n LIMIT 1"
        )
    };
}
/// [`get_resource_sql`] on Citus, in two statements: the caller's subtree
/// first, naming its tenants (`$2`, the transaction's visible subtree, which
/// the policy checks too) so that Citus sends it to their shards alone; then,
/// only when that found nothing, [`GET_SHARED_RESOURCE`]. (In one statement
/// Citus sends the shared part to the shard too, where it cannot run.)
pub(crate) fn get_resource_routed_sql(route: Route) -> String {
    format!(
        "SELECT {RESOURCE_COLUMNS}, true FROM {} WHERE id = $1 AND tenant_id = ANY ($2::uuid[])",
        route.resources()
    )
}

/// The listing of the caller's subtree on Citus (`$6` the subtree, `$2`..`$5`
/// the filters and page size of [`TenantScope::list_resources`]; `which` a
/// further condition): one top N per shard of those tenants, which the
/// coordinator merges. Citus cannot push the single-node per-tenant LATERAL
/// down to the shards.
pub(crate) fn resource_listing_sql(table: &str, which: &str) -> String {
    format!(
        "SELECT {RESOURCE_COLUMNS}, true FROM {table}
         WHERE tenant_id = ANY ($6::uuid[]) AND {which} AND {LIST_FILTERS} {LIST_ORDER}"
    )
}

/// A listing's filters ($2 name prefix, $3/$4 keyset position) and page ($5).
const LIST_FILTERS: &str = "($2::text IS NULL OR name LIKE $2)
               AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))";
const LIST_ORDER: &str = "ORDER BY created_at DESC, id DESC LIMIT $5";

/// A page of a listing holds items while the names and data before them
/// (`size_bytes`) come to less than this, and always at least one: a page of
/// 1,000 resources of a megabyte was a gigabyte in the server's memory, held
/// for as long as its client did not read it (found by an outside review).
/// A shorter page says where the next one starts, as any page does.
pub const PAGE_BYTES: i64 = 4 * 1024 * 1024;

/// A listing part cut to [`PAGE_BYTES`] in the database, plus one row
/// beyond the cut so the merge knows there is more: a row is read while the
/// rows before the one before it hold less than that (by `size_bytes`, a
/// stored column). Rows past the cut are never sent; a part over a table is
/// not even detoasted past it, while the fences (PL/pgSQL functions) have
/// read their `limit + 1` rows before the cut.
fn within_page_bytes(part: &str) -> String {
    format!(
        "SELECT w.* FROM (SELECT p.*, coalesce(sum(p.size_bytes) OVER (ORDER BY p.created_at DESC, p.id DESC
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 2 PRECEDING), 0) AS bytes_before_previous
                          FROM ({part}) p) w
         WHERE w.bytes_before_previous < {PAGE_BYTES} ORDER BY w.created_at DESC, w.id DESC"
    )
}

/// How many of `items` (newest first) make a page of at most `limit` items
/// within [`PAGE_BYTES`]: items are taken while those before them hold less.
fn page_len(items: &[Resource], limit: usize) -> usize {
    let mut before = 0i64;
    let mut n = 0;
    for r in items.iter().take(limit) {
        if n > 0 && before >= PAGE_BYTES {
            break;
        }
        before += r.size_bytes;
        n += 1;
    }
    n
}

/// Above this many visible tenants a listing of the subtree reads it through
/// `tenantry.subtree_resources` (03_resources.sql), which reads the subtree
/// from the context once: in the statement below each per-tenant scan
/// evaluates the policy's subtree again (its array parsed per rescan, so the
/// work grows with the square of the subtree: 1,001 tenants of 3 rows took
/// about 1.1 s). Below it the statement's plan, prepared once, costs less
/// than the function's planning per call.
const PER_TENANT_LISTING_MAX: usize = 64;

/// The resource `$1` if it is shared with the caller (the second step of a
/// point read that found nothing of the caller's own).
macro_rules! shared_resource {
    () => {
        concat!(
            "SELECT ",
            resource_columns!(),
            ", tenant_id = ANY (tenantry.visible_tenant_ids())
  FROM tenantry.resources_shared_with_me($1)"
        )
    };
}
const GET_SHARED_RESOURCE: &str = shared_resource!();

/// The caller's own or a descendant's resource `$1` in the route's table (the
/// first step of [`TenantScope::get_resource_and_commit`]).
fn own_resource_sql(route: Route) -> &'static str {
    match route {
        Route::Family => OWN_RESOURCE_FAMILY,
        Route::Pooled => OWN_RESOURCE_POOLED,
        Route::Schema => OWN_RESOURCE_SCHEMA,
    }
}

macro_rules! own_resource {
    ($table:literal) => {
        concat!(
            "SELECT ",
            resource_columns!(),
            ", true FROM ",
            $table,
            " WHERE id = $1"
        )
    };
}
const OWN_RESOURCE_FAMILY: &str = own_resource!("tenantry.resources");
const OWN_RESOURCE_POOLED: &str = own_resource!("ONLY tenantry.resources");
const OWN_RESOURCE_SCHEMA: &str = own_resource!("resources");

const GET_RESOURCE_FAMILY: &str = get_resource!("tenantry.resources");
const GET_RESOURCE_POOLED: &str = get_resource!("ONLY tenantry.resources");
const GET_RESOURCE_SCHEMA: &str = get_resource!("resources");

fn validate(name: Option<&str>, data: Option<&JsonText>) -> Result<(), DbError> {
    if let Some(name) = name {
        let len = name.chars().count();
        if !(1..=1000).contains(&len) {
            return Err(DbError::invalid(
                "name",
                "name must be 1 to 1000 characters",
            ));
        }
    }
    if let Some(data) = data {
        if !data.is_object() {
            return Err(DbError::invalid("data", "data must be a JSON object"));
        }
        // (The rest of the range, 1e400 to 1e131071, is refused by the
        // database's trigger, whose message begins with the same words.)
        if data.holds_unstorable_number() {
            return Err(DbError::invalid(
                "data",
                "data holds a number too large or too small to store: magnitudes of at least 1e-400 and below 1e400 (and 0, with at most 16383 digits after the point) are kept",
            ));
        }
    }
    Ok(())
}

impl TenantScope {
    /// Creates a resource owned by the scope's tenant.
    pub async fn create_resource(&mut self, new: &NewResource) -> Result<Resource, DbError> {
        validate(Some(&new.name), Some(&new.data))?;
        let me = self.tenant();
        let sql = match self.tx.route().await? {
            // Not yet known where the tenant's rows live: the database puts
            // the row in the tenant's own table.
            Route::Family => format!(
                "SELECT {RESOURCE_COLUMNS}, true FROM tenantry.create_resource_row($1, $2, $3)"
            ),
            route => format!(
                "INSERT INTO {} (tenant_id, name, data) VALUES ($1, $2, $3)
                 RETURNING {RESOURCE_COLUMNS}, true",
                route.resources_insert()
            ),
        };
        let rows = self
            .rows_as(
                Visibility::Owned,
                &sql,
                &[me.as_uuid(), &new.name, &new.data],
                &[Type::UUID, Type::TEXT, Type::JSONB],
            )
            .await?;
        Ok(resource(&rows[0], me))
    }

    /// A resource the caller may read (own, descendant's or shared). Another
    /// tenant's resource is not found, exactly like a missing one.
    pub async fn get_resource(&mut self, id: ResourceId) -> Result<Resource, DbError> {
        let me = self.tenant();
        let rows = match self.shard_tenants().await? {
            None => {
                self.by_id_in_any_tier(
                    Visibility::All,
                    |route| get_resource_sql(route).into(),
                    &[id.as_uuid()],
                    &[Type::UUID],
                )
                .await?
            }
            Some(tenants) => {
                let route = self.tx.route().await?;
                let rows = self
                    .rows(
                        &get_resource_routed_sql(route),
                        &[id.as_uuid(), &tenants],
                        &[Type::UUID, Type::UUID_ARRAY],
                    )
                    .await?;
                if rows.is_empty() {
                    self.rows(GET_SHARED_RESOURCE, &[id.as_uuid()], &[Type::UUID])
                        .await?
                } else {
                    rows
                }
            }
        };
        rows.first()
            .map(|r| resource(r, me))
            .ok_or_else(|| not_found(id))
    }

    /// Like [`TenantScope::get_resource`], and ends the transaction in the same
    /// round trip (BEGIN, context, SELECT and COMMIT travel together).
    ///
    /// The caller's own subtree is read first, alone (`own_resource_sql`);
    /// only when that finds nothing does a second transaction on the same
    /// connection look among the rows shared with the caller. Reading both in
    /// one statement costs every read the fallback's set-up (12–20 % of the
    /// statement, docs/benchmarks.md), while a missing or shared id costs one
    /// round trip more this way. Another tenant's id still answers exactly like
    /// a missing one: both take the two steps.
    pub async fn get_resource_and_commit(mut self, id: ResourceId) -> Result<Resource, DbError> {
        if self.tx.citus() {
            // Two statements on Citus (get_resource_routed_sql).
            let found = self.get_resource(id).await?;
            self.commit().await?;
            return Ok(found);
        }
        let me = self.tenant();
        let route = self.tx.route().await?;
        let part = self.tx.pinned();
        let mut rows = self
            .tx
            .query_and_commit(crate::scope::Stmt {
                sql: own_resource_sql(route),
                params: &[id.as_uuid()],
                types: &[Type::UUID],
            })
            .await?;
        if rows.is_empty() {
            self.tx.begin_again(&self.ctx)?;
            let shared = crate::scope::Stmt {
                sql: GET_SHARED_RESOURCE,
                params: &[id.as_uuid()],
                types: &[Type::UUID],
            };
            if route == Route::Family {
                // The whole family: wherever the tenant's rows are.
                rows = self.tx.query_and_commit(shared).await?;
            } else {
                // Asked after the read, so with a later snapshot: when the
                // route still holds, the first step saw the tenant's rows
                // where they were.
                let mut out = self
                    .tx
                    .query_many(
                        &[
                            (Visibility::All, shared),
                            (Visibility::All, crate::scope::ROUTE_CURRENT),
                        ],
                        true,
                    )
                    .await?;
                // The answer is about this transaction's part: it speaks
                // for the first step's route only when both pinned the same
                // (the cache may have dropped or renewed it in between).
                if !crate::scope::route_current(&out[1]) || self.tx.pinned() != part {
                    // A move's cut-over committed after the route was
                    // cached (another server moved the tenant, or this one
                    // had not heard yet): read again by a fresh part.
                    self.tx.forget_tenant_part(me);
                    self.tx.begin_again(&self.ctx)?;
                    let found = self.get_resource(id).await?;
                    self.commit().await?;
                    return Ok(found);
                }
                rows = out.swap_remove(0);
            }
        }
        rows.first()
            .map(|r| resource(r, me))
            .ok_or_else(|| not_found(id))
    }

    /// Changes a resource of the caller or a descendant. Shared resources are
    /// read only: for the target they are not found.
    pub async fn update_resource(
        &mut self,
        id: ResourceId,
        update: &ResourceUpdate,
    ) -> Result<Resource, DbError> {
        validate(update.name.as_deref(), update.data.as_ref())?;
        let me = self.tenant();
        let tenants = self.shard_tenants().await?;
        // On Citus the subtree parameter also stands in for
        // visible_tenant_ids() in RETURNING, where Citus refuses a STABLE function.
        let (shards, visible, params) = if tenants.is_some() {
            (" AND tenant_id = ANY ($4::uuid[])", "$4::uuid[]", 4)
        } else {
            ("", "tenantry.visible_tenant_ids()", 3)
        };
        let rows = self
            .by_id_in_any_tier(
                Visibility::Owned,
                |route| {
                    format!(
                        "UPDATE {} SET name = coalesce($2, name), data = coalesce($3, data)
                         WHERE id = $1{shards} RETURNING {RESOURCE_COLUMNS}, tenant_id = ANY ({visible})",
                        route.resources()
                    )
                    .into()
                },
                &[
                    id.as_uuid() as &(dyn tokio_postgres::types::ToSql + Sync),
                    &update.name,
                    &update.data,
                    &tenants,
                ][..params],
                &[Type::UUID, Type::TEXT, Type::JSONB, Type::UUID_ARRAY][..params],
            )
            .await?;
        rows.first()
            .map(|r| resource(r, me))
            .ok_or_else(|| not_found(id))
    }

    /// Deletes a resource of the caller or a descendant (its shares go with it).
    pub async fn delete_resource(&mut self, id: ResourceId) -> Result<(), DbError> {
        let tenants = self.shard_tenants().await?;
        let (shards, params) = if tenants.is_some() {
            (" AND tenant_id = ANY ($2::uuid[])", 2)
        } else {
            ("", 1)
        };
        let rows = self
            .by_id_in_any_tier(
                Visibility::Owned,
                |route| {
                    format!(
                        "DELETE FROM {} WHERE id = $1{shards} RETURNING id",
                        route.resources()
                    )
                    .into()
                },
                &[
                    id.as_uuid() as &(dyn tokio_postgres::types::ToSql + Sync),
                    &tenants,
                ][..params],
                &[Type::UUID, Type::UUID_ARRAY][..params],
            )
            .await?;
        if rows.is_empty() {
            return Err(not_found(id));
        }
        Ok(())
    }

    /// On Citus, the tenants a statement by id may touch: the transaction's
    /// visible subtree (from its context part, which the policy checks too).
    /// Named next to the policy, they let Citus send the statement to their
    /// shards alone instead of every shard. `None` on a single node, where
    /// the policy's index condition does the same.
    async fn shard_tenants(&mut self) -> Result<Option<Vec<uuid::Uuid>>, DbError> {
        if !self.tx.citus() {
            return Ok(None);
        }
        self.tx.route().await?;
        Ok(self.tx.visible_tenants())
    }

    /// Runs a statement on one resource by id in the transaction's route and,
    /// when that route is the tenant's own table and found nothing, once more
    /// where the rows are now: on the tenant's tables elsewhere when it moved,
    /// over the whole family when a descendant the part lists moved to its
    /// schema (`context_route_current`). A cut-over committed since the route
    /// was cached, and a row that exists must not answer "not found".
    async fn by_id_in_any_tier(
        &mut self,
        visibility: Visibility,
        sql: impl Fn(Route) -> std::borrow::Cow<'static, str>,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        types: &[Type],
    ) -> Result<Vec<Row>, DbError> {
        let route = self.tx.route().await?;
        let rows = self.rows_as(visibility, &sql(route), params, types).await?;
        if !rows.is_empty() || route == Route::Family {
            return Ok(rows);
        }
        // Only when the tenant's tables are elsewhere now (one key lookup),
        // not for every missing id: the family is every schema tenant's table.
        // A pooled route also asks about the descendants its part lists (a
        // schema tenant with descendants reads the family already).
        let now = self
            .rows(
                if route == Route::Pooled {
                    "SELECT tenantry.tenant_home_schema(), tenantry.context_route_current()"
                } else {
                    "SELECT tenantry.tenant_home_schema(), true"
                },
                &[],
                &[],
            )
            .await?;
        let home: Option<String> = now.first().and_then(|r| r.get(0));
        let still_home = match route {
            Route::Pooled => home.as_deref() == Some("tenantry"),
            _ => home.as_deref() != Some("tenantry"),
        };
        if still_home {
            if now.first().and_then(|r| r.get(1)).unwrap_or(true) {
                return Ok(rows);
            }
            // A descendant's rows left the pooled table: the whole family.
            self.tx.forget_tenant_part(self.tenant());
            return self
                .rows_as(visibility, &sql(Route::Family), params, types)
                .await;
        }
        // Where the tenant's rows are now, for this statement (and the next
        // transaction: its part is read afresh). Not the whole family, which
        // would lock every schema tenant's table.
        self.tx.forget_tenant_part(self.tenant());
        let route = match home.as_deref() {
            Some("tenantry") => Route::Pooled,
            Some(schema) => {
                self.tx.use_tenant_schema(schema).await?;
                Route::Schema
            }
            None => return Ok(rows),
        };
        self.rows_as(visibility, &sql(route), params, types).await
    }

    /// Lists resources newest first with keyset pagination.
    pub async fn list_resources(&mut self, query: &ResourceQuery) -> Result<ResourcePage, DbError> {
        // Stale (a move committed since the route was cached): the
        // transaction's route is pinned, so the caller's unit runs again.
        self.list(query, false)
            .await?
            .ok_or_else(crate::scope::tiers_changed)
    }

    /// Like [`TenantScope::list_resources`], and ends the (read-only) transaction
    /// in the same round trip.
    pub async fn list_resources_and_commit(
        mut self,
        query: &ResourceQuery,
    ) -> Result<ResourcePage, DbError> {
        if let Some(page) = self.list(query, true).await? {
            return Ok(page);
        }
        // Read by a stale route and committed: once more, by a fresh part.
        self.tx.begin_again(&self.ctx)?;
        self.list(query, true)
            .await?
            .ok_or_else(crate::scope::tiers_changed)
    }

    /// Each part of a listing runs under the narrowest policies that cover it,
    /// so the planner never ORs policy arms (docs/architecture.md, "Policies"):
    /// the caller's and descendants' rows as `tenantry_app_own`, one
    /// index-ordered top-N per visible tenant, merged; rows shared with the
    /// caller as `tenantry_app_shared`, through `resources_shared_with_me`
    /// (GIN index). Both travel in one flight and are merged here.
    ///
    /// `None` when the route cached with the tenant's part was stale (a tier
    /// move committed since, `context_route_current`): the part is forgotten, and
    /// what was read may have missed the tenant's rows.
    async fn list(
        &mut self,
        query: &ResourceQuery,
        commit: bool,
    ) -> Result<Option<ResourcePage>, DbError> {
        let me = self.tenant();
        let route = self.tx.route().await?;
        let table = route.resources();
        let limit = query.limit.clamp(1, 1000);
        let (after_ts, after_id) = match query.after {
            Some(c) => (Some(c.created_at), Some(*c.id.as_uuid())),
            None => (None, None),
        };
        // Escape LIKE metacharacters: the prefix is matched literally.
        let prefix = query.name_prefix.as_ref().map(|p| {
            let escaped = p
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("{escaped}%")
        });
        const FILTERS: &str = LIST_FILTERS;
        const ORDER: &str = LIST_ORDER;
        // On Citus the per-tenant LATERAL cannot be pushed down to the
        // shards; there one top-N per shard of the subtree (named as $6, the
        // subtree the policy checks too, so that Citus skips the other
        // shards), merged by the coordinator.
        let subtree = self.shard_tenants().await?;
        let citus = subtree.is_some();
        let wide = self
            .tx
            .visible_count()
            .is_some_and(|n| n > PER_TENANT_LISTING_MAX);
        let per_visible_tenant = |others_only: bool| {
            if wide && !citus {
                format!(
                    "SELECT {RESOURCE_COLUMNS}, true
                     FROM tenantry.subtree_resources({others_only}, $2, $3, $4, $5) {ORDER}"
                )
            } else if citus {
                let which = if others_only {
                    "tenant_id <> $1"
                } else {
                    "true"
                };
                resource_listing_sql(table, which)
            } else {
                let which = if others_only { "v.t <> $1" } else { "true" };
                format!(
                    "SELECT {RESOURCE_COLUMNS}, true
                     FROM unnest(tenantry.visible_tenant_ids()) v(t),
                          LATERAL (SELECT {RESOURCE_COLUMNS} FROM {table} r
                                   WHERE r.tenant_id = v.t AND {FILTERS} {ORDER}) x
                     WHERE {which} {ORDER}"
                )
            }
        };
        // The last column says "reached through the hierarchy"; where a part
        // knows it, it is a constant: computing it per row re-reads the settings.
        let own = format!(
            "SELECT {RESOURCE_COLUMNS}, true FROM {table}
             WHERE tenant_id = $1 AND {FILTERS} {ORDER}"
        );
        // Shared rows come through the fence resources_shared_with_me(), which
        // applies the filters and the page size inside (no condition of ours
        // may reach its scan). Shared rows that are also in the caller's
        // subtree come back from both parts; the merge keeps the subtree's
        // copy. (Filtering them out in SQL would re-parse the subtree setting
        // for every row.)
        const SHARED_ROWS: &str = "tenantry.resources_shared_with_me(NULL, $2, $3, $4, $5)";
        let shared_any = format!("SELECT {RESOURCE_COLUMNS}, false FROM {SHARED_ROWS} {ORDER}");
        // Shared rows may belong to a descendant: the flag is computed, against
        // the subtree read once per statement (an InitPlan), not once per row.
        let shared = |which: &str| {
            format!(
                "SELECT {RESOURCE_COLUMNS}, tenant_id = ANY ((SELECT tenantry.visible_tenant_ids())::uuid[])
                 FROM {SHARED_ROWS} WHERE {which} {ORDER}"
            )
        };
        let mut parts: Vec<(Visibility, String)> = Vec::with_capacity(2);
        match query.owner {
            OwnerFilter::Own => parts.push((Visibility::Owned, own)),
            OwnerFilter::Descendants => parts.push((Visibility::Owned, per_visible_tenant(true))),
            OwnerFilter::Shared => {
                parts.push((Visibility::SharedWithMe, shared("tenant_id <> $1")))
            }
            OwnerFilter::All => {
                parts.push((Visibility::Owned, per_visible_tenant(false)));
                parts.push((Visibility::SharedWithMe, shared_any));
            }
        }
        // Six on Citus (the subtree; the parts that do not name it leave it unused).
        let count = if citus { 6 } else { 5 };
        let all_params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            me.as_uuid(),
            &prefix,
            &after_ts,
            &after_id,
            &(limit + 1),
            &subtree,
        ];
        let params = &all_params[..count];
        let types = &[
            Type::UUID,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::UUID,
            Type::INT8,
            Type::UUID_ARRAY,
        ][..count];
        // Each part cut to a page's bytes in the database (on Citus the
        // merge below alone cuts: a window over a distributed top-N would be
        // planned on the coordinator).
        if !citus {
            for (_, sql) in parts.iter_mut() {
                *sql = within_page_bytes(sql);
            }
        }
        let mut stmts: Vec<(Visibility, crate::scope::Stmt<'_>)> = parts
            .iter()
            .map(|(v, sql)| (*v, crate::scope::Stmt { sql, params, types }))
            .collect();
        // The tenant's own table by a cached route: asked after the reads
        // whether that route still holds (the whole family needs no asking,
        // nor the shared rows' and a wide subtree's fences, which find each
        // owner's table themselves; Citus has no schema tier).
        let by_route = match query.owner {
            OwnerFilter::Own => true,
            OwnerFilter::Shared => false,
            OwnerFilter::Descendants | OwnerFilter::All => !wide,
        };
        let check_route = !citus && route != Route::Family && by_route;
        if check_route {
            stmts.push((Visibility::All, crate::scope::ROUTE_CURRENT));
        }
        let mut results = self.tx.query_many(&stmts, commit).await?;
        if check_route && !crate::scope::route_current(&results.pop().unwrap_or_default()) {
            self.tx.forget_tenant_part(me);
            return Ok(None);
        }
        let mut items: Vec<Resource> = results.iter().flatten().map(|r| resource(r, me)).collect();
        if results.len() > 1 {
            // Each part is a correct top-N of its own rows, so the top N of their
            // union is among them: sort, then drop the second copy of a row that
            // both parts returned (the subtree's copy sorts first: same key, and
            // it came first, and the sort is stable).
            items.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
            items.dedup_by_key(|r| r.id);
        }
        let n = page_len(&items, limit as usize);
        let next = if items.len() > n {
            items.truncate(n);
            items.last().map(|r| ResourceCursor {
                created_at: r.created_at,
                id: r.id,
            })
        } else {
            None
        };
        Ok(Some(ResourcePage { items, next }))
    }

    /// Shares a resource of the caller (or a descendant) with another active tenant, read only.
    pub async fn share_resource(
        &mut self,
        id: ResourceId,
        with: TenantId,
    ) -> Result<Share, DbError> {
        // One statement that answers with the share (read by the function
        // that wrote it: on Citus a read as this role afterwards is refused).
        let rows = self
            .rows(
                concat!(
                    "SELECT ",
                    share_columns!(),
                    " FROM tenantry.share_resource_row($1, $2)"
                ),
                &[id.as_uuid(), with.as_uuid()],
                &[Type::UUID, Type::UUID],
            )
            .await?;
        rows.first()
            .map(share)
            .ok_or_else(|| DbError::Internal("new share not visible".into()))
    }

    /// Shares of a resource the caller owns (or a descendant owns). Not found otherwise.
    pub async fn list_shares(&mut self, id: ResourceId) -> Result<Vec<Share>, DbError> {
        // Existence and ownership first, so a foreign id answers not found.
        let owned = self
            .by_id_in_any_tier(
                Visibility::Owned,
                |route| format!("SELECT 1 FROM {} WHERE id = $1", route.resources()).into(),
                &[id.as_uuid()],
                &[Type::UUID],
            )
            .await?;
        if owned.is_empty() {
            return Err(not_found(id));
        }
        let rows = self
            .rows(
                concat!(
                    "SELECT ",
                    share_columns!(),
                    " FROM tenantry.shared_resources
                     WHERE resource_id = $1 AND tenant_id = ANY (tenantry.visible_tenant_ids()) ORDER BY shared_at, shared_with"
                ),
                &[id.as_uuid()],
                &[Type::UUID],
            )
            .await?;
        Ok(rows.iter().map(share).collect())
    }

    /// Every share of the resources the caller's tenant and its descendants
    /// own (what they shared, with whom, by whom), newest first: one read
    /// where listing each resource's shares took a request per resource.
    pub async fn list_outgoing_shares(&mut self) -> Result<Vec<Share>, DbError> {
        let rows = self
            .rows(
                concat!(
                    "SELECT ",
                    share_columns!(),
                    " FROM tenantry.shared_resources
                     WHERE tenant_id = ANY (tenantry.visible_tenant_ids())
                     ORDER BY shared_at DESC, resource_id, shared_with"
                ),
                &[],
                &[],
            )
            .await?;
        Ok(rows.iter().map(share).collect())
    }

    /// Revokes a share; the target loses access with its next statement.
    pub async fn unshare_resource(
        &mut self,
        id: ResourceId,
        with: TenantId,
    ) -> Result<(), DbError> {
        self.rows(
            "SELECT tenantry.unshare_resource($1, $2)",
            &[id.as_uuid(), with.as_uuid()],
            &[Type::UUID, Type::UUID],
        )
        .await?;
        Ok(())
    }

    /// Gives up a resource another tenant shared with this one
    /// (`tenantry.decline_share`): it is shared with this tenant no more, as
    /// if its owner had revoked the share. [`DbError::NotFound`] when no such
    /// share is made to this tenant.
    pub async fn decline_share(&mut self, id: ResourceId) -> Result<(), DbError> {
        self.rows(
            "SELECT tenantry.decline_share($1)",
            &[id.as_uuid()],
            &[Type::UUID],
        )
        .await?;
        Ok(())
    }
}

fn share(r: &Row) -> Share {
    Share {
        resource_id: ResourceId::from_uuid(r.get(0)),
        owner_tenant_id: TenantId::from_uuid(r.get(1)),
        tenant_id: TenantId::from_uuid(r.get(2)),
        shared_by: r.get::<_, Option<uuid::Uuid>>(3).map(UserId::from_uuid),
        shared_at: r.get(4),
    }
}

fn not_found(id: ResourceId) -> DbError {
    DbError::NotFound(format!("resource {id} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_forgeries_are_rejected() {
        let c = ResourceCursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: ResourceId::parse("6b39e4e3-84cd-4d21-88a9-cff7e14ca36c").unwrap(),
        };
        assert_eq!(ResourceCursor::decode(&c.encode()), Some(c));
        for forged in [
            "",
            "zz",
            "00",
            &hex::encode("1:not-a-uuid"),
            &hex::encode("x:6b39e4e3-84cd-4d21-88a9-cff7e14ca36c"),
            // Times no timestamptz holds (PostgreSQL answered 422 with its
            // own "timestamp out of range").
            &hex::encode("-8000000000000000000:00000000-0000-0000-0000-000000000000"),
            &hex::encode("253402300800000000:00000000-0000-0000-0000-000000000000"),
        ] {
            assert_eq!(ResourceCursor::decode(forged), None, "{forged}");
        }
    }
}
