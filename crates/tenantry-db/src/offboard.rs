//! Offboarding a tenant: its export (every row it owns, NDJSON per table plus a manifest of row counts and SHA-256 checksums, in a gzip'd tar, read from one snapshot under row-level security), the import of such an archive under a new or the same id (checked first, then written in one transaction), and its purge after the soft delete's grace period. Export and import run on an operator's connection (the migration role); the purge also through the server's pool ([`AdminScope::purge_tenant`]). The SQL side is `migrations/repeatable/14_offboarding.sql`.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Seek, SeekFrom, Write},
    path::Path,
};

use chrono::{DateTime, Utc};
use futures_util::{pin_mut, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::{types::Type, Client, IsolationLevel, Transaction};

use crate::{scope::Stmt, AdminScope, DbError, TenantId};

/// The archive format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Name of the manifest inside an archive (its last entry).
pub const MANIFEST: &str = "manifest.json";

/// Rows sent to the database per INSERT on import, at most.
const IMPORT_BATCH_ROWS: usize = 1_000;

/// Bytes of lines sent to the database per INSERT on import: a batch ends
/// at the line that reaches it (or at [`IMPORT_BATCH_ROWS`]), so that wide
/// rows do not add up to a parameter PostgreSQL refuses (1 GB).
const IMPORT_BATCH_BYTES: usize = 16 << 20;

/// The longest line (one row) an archive may hold, in bytes, and the
/// longest an export writes: a line is one value PostgreSQL computed (the
/// row's `row_to_json` text), and none of its values is longer than 1 GB,
/// so every row PostgreSQL holds fits (16 MiB refused rows that export
/// wrote with exit 0: 8 M backslashes became a 32 MB line, a 9 MB bytea an
/// 18 MB one; found by an outside review). 64 bytes short of 1 GiB: the
/// line alone in its batch, with its brackets, must still be a value
/// PostgreSQL takes. A crafted archive still cannot make the importer hold
/// an endless line, and an export refuses, naming the table and row, a
/// line longer than this.
pub const MAX_LINE_BYTES: usize = (1 << 30) - 64;

/// What an archive holds: written last, checked first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Archive format ([`FORMAT_VERSION`]).
    pub format: u32,
    /// The tenant exported.
    pub tenant_id: TenantId,
    /// The newest versioned migration of the exporting database.
    pub schema_version: i32,
    /// When the snapshot was taken.
    pub exported_at: DateTime<Utc>,
    /// One entry per table, in the order they are in the archive (and imported).
    pub tables: Vec<TableEntry>,
}

/// One table of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// The table, schema-qualified (`tenantry.resources`, `public.invoices`).
    pub table: String,
    /// Its file in the archive (`tables/<table>.ndjson`).
    pub file: String,
    /// The columns of each row (tenant_id is never one: the archive is one tenant's).
    pub columns: Vec<String>,
    /// The columns written as their text (`json`, `jsonb`, arrays and
    /// domains of them): a JSON `null` stays apart from SQL NULL, and a
    /// `json` value keeps its text. Absent in archives of older builds,
    /// which wrote them as JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_columns: Vec<String>,
    /// The type of each of `columns`, in their order, as `format_type`
    /// writes it (`numeric(12,6)`, `character varying(20)`): an import into
    /// an adopted table refuses a column whose type here may not hold every
    /// value of the archive's. Absent in archives of older builds, whose
    /// types are not compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Number of rows (lines).
    pub rows: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
}

/// Why an export or import did not happen. Nothing was written to the database in any case.
#[derive(Debug, thiserror::Error)]
pub enum OffboardError {
    /// The database refused or failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// Reading or writing the archive failed.
    #[error("reading or writing the archive")]
    Io(#[from] std::io::Error),
    /// The archive is not one this build can import; nothing was written.
    #[error("refusing the archive: {0}")]
    Refused(String),
}

impl From<tokio_postgres::Error> for OffboardError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e.into())
    }
}

/// Progress of an export or import, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Rows to go through in all.
    Total(u64),
    /// This many more rows done.
    Rows(u64),
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    /// The tenant as imported.
    pub tenant_id: TenantId,
    /// The tenant the archive was exported from.
    pub source_tenant_id: TenantId,
    /// Rows written, per table.
    pub rows: BTreeMap<String, u64>,
}

/// What a purge removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurgedTenant {
    /// The tenant purged; the id is never given out again.
    pub tenant_id: TenantId,
    /// When it was purged.
    pub purged_at: DateTime<Utc>,
    /// When it had been (soft) deleted.
    pub deleted_at: DateTime<Utc>,
    /// Its schema, dropped with its tables (a schema tenant).
    pub schema_dropped: Option<String>,
    /// Rows deleted per table (`table` or `table.column` when the rows
    /// pointed at it through another column, e.g. shares made to it); a
    /// schema tenant's rows that went with its schema under their own
    /// schema-qualified table names.
    pub rows_deleted: BTreeMap<String, i64>,
}

impl AdminScope {
    /// Deleted tenants whose grace period is over (`tenantry.purge_policy`),
    /// deepest in the hierarchy first (a tenant's children are purged before
    /// it), then in the order they were deleted: what
    /// [`AdminScope::purge_tenant`] takes, one by one.
    pub async fn tenants_due_for_purge(&mut self) -> Result<Vec<TenantId>, DbError> {
        let rows = self
            .tx
            .rows(Stmt {
                sql: "SELECT t.tenant_id FROM tenantry.tenants t
                      WHERE t.status = 'deleted'
                        AND t.updated_at + (SELECT p.grace FROM tenantry.purge_policy p) <= now()
                      ORDER BY (SELECT max(h.depth) FROM tenantry.tenant_hierarchy h
                                WHERE h.child_id = t.tenant_id) DESC NULLS LAST,
                               t.updated_at, t.tenant_id",
                params: &[],
                types: &[],
            })
            .await?;
        Ok(rows.iter().map(|r| TenantId::from_uuid(r.get(0))).collect())
    }

    /// Hard-deletes a tenant deleted at least the grace period ago
    /// (`tenantry.purge_policy`, 30 days unless an operator changed it):
    /// every row, schema and share of it. A conflict while it is not deleted,
    /// still in its grace period or has child tenants; not found for an
    /// unknown or already purged id.
    pub async fn purge_tenant(&mut self, id: TenantId) -> Result<PurgedTenant, DbError> {
        self.tx.changes_tenant(id);
        let rows = self
            .tx
            .rows(Stmt {
                sql: "SELECT tenantry.purge_tenant($1)",
                params: &[id.as_uuid()],
                types: &[Type::UUID],
            })
            .await?;
        let value: serde_json::Value = rows[0].get(0);
        serde_json::from_value(value)
            .map_err(|e| DbError::Internal(format!("purge_tenant's answer: {e}")))
    }
}

/// How one table is read for an export and written on import.
struct Plan {
    entry: TableEntry,
    /// The query that yields the table's rows: each row's tenant_id, then
    /// the row as JSON text (`$1`: the tenant).
    select: String,
    /// The count of those rows (`$1`: the tenant), by a query of its own:
    /// the export refuses to write a table whose rows read are not as many.
    count: String,
}

/// The export's query of one table: `inner` yields `tenant_id` and the
/// table's `columns` (one row per exported row, filtered on `$1`); each
/// row comes out as its tenant_id, checked again by the exporter, and the
/// JSON text of the columns alone, in the order of `order` (columns) or,
/// without one, of that text (byte order).
fn select_rows(inner: &str, columns: &[String], order: Option<&[String]>) -> String {
    let of_y = |columns: &[String]| {
        columns
            .iter()
            .map(|c| format!("y.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fields = of_y(columns);
    let order = order.map_or_else(|| "row_to_json(x.*)::text COLLATE \"C\"".to_owned(), of_y);
    format!(
        "SELECT y.tenant_id, row_to_json(x.*)::text FROM ({inner}) y, LATERAL (SELECT {fields}) x ORDER BY {order}"
    )
}

/// Tenantry's own tables an export holds, in archive (and import) order,
/// each with its sort key. The tenant row comes first; what triggers derive
/// (closure, counters, lookups) is not exported but derived again on import.
const OWN_TABLES: &[&str] = &[
    "tenantry.tenants",
    "tenantry.roles",
    "tenantry.role_permissions",
    "tenantry.tenant_members",
    "tenantry.member_roles",
    "tenantry.api_keys",
    "tenantry.invitations",
    "tenantry.impersonations",
    "tenantry.resources",
    "tenantry.shared_resources",
];

/// Exported after the adopted tables (they may point at their rows).
const TRAILING_TABLES: &[&str] = &[
    "tenantry.shared_rows",
    "tenantry.audit_log",
    "tenantry.request_log",
];

/// The columns of `table` the tenant role may read (tenant_id aside), in
/// table order: what a tenant may see of its own rows is what it takes
/// away. Key hashes, token hashes and the shared audit sequence are not.
async fn readable_columns(tx: &Transaction<'_>, table: &str) -> Result<Vec<String>, OffboardError> {
    let rows = tx
        .query(
            "SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
                AND a.attname <> 'tenant_id'
                AND has_column_privilege('tenantry_app', a.attrelid, a.attnum, 'SELECT')
              ORDER BY a.attnum",
            &[&table],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The type of each of `columns` of `table` (`format_type`), in their order.
async fn column_types(
    tx: &Transaction<'_>,
    table: &str,
    columns: &[String],
) -> Result<Vec<String>, OffboardError> {
    let rows = tx
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
              WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table],
        )
        .await?;
    let types: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(columns
        .iter()
        .map(|c| types.get(c).cloned().unwrap_or_default())
        .collect())
}

/// Whether a column of type `here` holds every value of one of type
/// `archived` as it was (types as `format_type` writes them): the same
/// type; the type without its modifier (`numeric(12,6)` into `numeric`,
/// `character varying(20)` into `text`); a modifier at least as wide
/// (`numeric(12,6)` into `numeric(20,6)`, `character varying(20)` into
/// `character varying(40)`); a wider integer or float; an integer into
/// `numeric`. Arrays by their elements. Anything else may round, cut or
/// refuse a value, and an import refuses it.
fn type_holds(archived: &str, here: &str) -> bool {
    if archived == here {
        return true;
    }
    if let (Some(a), Some(h)) = (archived.strip_suffix("[]"), here.strip_suffix("[]")) {
        return type_holds(a, h);
    }
    // "numeric(12,6)" -> ("numeric", Some([12, 6])); "timestamp(3) with time zone" too.
    fn split(t: &str) -> (String, Option<Vec<i64>>) {
        match (t.find('('), t.find(')')) {
            (Some(open), Some(close)) if open < close => {
                let args = t[open + 1..close]
                    .split(',')
                    .map(|n| n.trim().parse().ok())
                    .collect::<Option<Vec<i64>>>();
                (format!("{}{}", &t[..open], &t[close + 1..]), args)
            }
            _ => (t.to_owned(), None),
        }
    }
    let ((a, a_mod), (h, h_mod)) = (split(archived), split(here));
    let texts = ["text", "character varying"];
    match (a_mod, h_mod) {
        // Same type, no modifier here: unconstrained.
        (_, None) if a == h => true,
        (Some(am), Some(hm)) if a == h => match (a.as_str(), am.as_slice(), hm.as_slice()) {
            ("numeric", [ap, as_], [hp, hs]) => hs >= as_ && hp - hs >= ap - as_,
            ("numeric", [ap], [hp, hs]) => hp - hs >= *ap,
            ("character varying" | "bit varying", [an], [hn]) => hn >= an,
            _ => false,
        },
        _ => {
            matches!(
                (a.as_str(), h.as_str()),
                ("smallint", "integer" | "bigint" | "numeric")
                    | ("integer", "bigint" | "numeric")
                    | ("bigint", "numeric")
                    | ("real", "double precision")
            ) || (texts.contains(&h.as_str())
                && here == h
                && (texts.contains(&a.as_str()) || a == "character"))
        }
    }
}

/// The primary key's columns after tenant_id, when the export reads them
/// all: a stable row order. None otherwise: rows are then ordered by their
/// JSON text (every column, and a `json` or `point` column has no ordering
/// of its own).
async fn sort_columns(
    tx: &Transaction<'_>,
    table: &str,
    columns: &[String],
) -> Result<Option<Vec<String>>, OffboardError> {
    let rows = tx
        .query(
            "SELECT a.attname::text FROM pg_constraint k
               JOIN LATERAL unnest(k.conkey) WITH ORDINALITY u(attnum, n) ON true
               JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
              WHERE k.conrelid = $1::text::regclass AND k.contype = 'p' AND a.attname <> 'tenant_id'
              ORDER BY u.n",
            &[&table],
        )
        .await?;
    let key: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok((!key.is_empty() && key.iter().all(|k| columns.contains(k))).then_some(key))
}

/// The table holding `tenant`'s rows of `table`'s family (`tenantry.tenant_home_table`).
async fn home_table(
    tx: &Transaction<'_>,
    tenant: TenantId,
    table: &str,
) -> Result<String, OffboardError> {
    Ok(tx
        .query_one(
            "SELECT tenantry.tenant_home_table($1, $2::text::regclass)",
            &[tenant.as_uuid(), &table],
        )
        .await?
        .get(0))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Those of `columns` whose values are JSON (`json`, `jsonb`, an array or a
/// domain of either): written as their text, or a JSON `null` in them would
/// come back as SQL NULL.
async fn json_columns(
    tx: &Transaction<'_>,
    table: &str,
    columns: &[String],
) -> Result<Vec<String>, OffboardError> {
    let rows = tx
        .query(
            "SELECT a.attname::text FROM pg_attribute a
               JOIN pg_type t ON t.oid = a.atttypid
               LEFT JOIN pg_type b ON b.oid = t.typbasetype
              WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
                AND ARRAY['json'::regtype, 'jsonb'::regtype]::oid[]
                    && ARRAY[t.oid, t.typelem, b.oid, b.typelem]
              ORDER BY a.attnum",
            &[&table],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|c| columns.contains(c))
        .collect())
}

/// The select list of `columns`, those in `text_columns` as their text.
fn select_list(columns: &[String], text_columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| {
            if text_columns.contains(c) {
                format!("{0}::text AS {0}", quote_ident(c))
            } else {
                quote_ident(c)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn idents(columns: &[String]) -> String {
    select_list(columns, &[])
}

fn file_name(table: &str) -> String {
    format!("tables/{table}.ndjson")
}

/// The plan of every table of the export, made as the operator (before the
/// transaction switches to the tenant role): homes, columns, orders.
async fn plan(tx: &Transaction<'_>, tenant: TenantId) -> Result<Vec<Plan>, OffboardError> {
    // A table dropped without release_table leaves its oid in the registry:
    // say so and what to run, not "relation 18327 does not exist" (found by
    // an operator's audit).
    let dropped: Vec<String> = tx
        .query(
            "SELECT r.table_id::oid::text FROM tenantry.tenant_tables r
              WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = r.table_id) ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !dropped.is_empty() {
        return Err(OffboardError::Refused(format!(
            "adopted table(s) with oid {} were dropped without tenantry.release_table: `tenantry doctor` \
             names the fix (removing them from tenantry.tenant_tables); export again after it",
            dropped.join(", ")
        )));
    }
    let adopted: Vec<String> = tx
        .query(
            "SELECT table_id::regclass::text FROM tenantry.tenant_tables ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Adopted tables by their qualified name, whatever the search path.
    let mut qualified = Vec::with_capacity(adopted.len());
    for t in &adopted {
        let row = tx
            .query_one(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::text::regclass",
                &[t],
            )
            .await?;
        qualified.push(row.get::<_, String>(0));
    }
    let tables = OWN_TABLES
        .iter()
        .map(|s| s.to_string())
        .chain(qualified)
        .chain(TRAILING_TABLES.iter().map(|s| s.to_string()));
    let mut plans = Vec::new();
    for table in tables {
        let home: String = home_table(tx, tenant, &table).await?;
        let partitioned: bool = tx
            .query_one(
                "SELECT relkind = 'p' FROM pg_class WHERE oid = $1::text::regclass",
                &[&table],
            )
            .await?
            .get(0);
        let only = if partitioned { "" } else { "ONLY " };
        let (columns, text_columns, select, count) = match table.as_str() {
            "tenantry.tenants" => {
                // As JSON: tenantry.import_tenant reads this row.
                let columns = readable_columns(tx, &table).await?;
                let text_columns = Vec::new();
                let select = select_rows(
                    &format!(
                        "SELECT tenant_id, {} FROM ONLY tenantry.tenants WHERE tenant_id = $1",
                        idents(&columns)
                    ),
                    &columns,
                    None,
                );
                let count =
                    "SELECT count(*) FROM ONLY tenantry.tenants WHERE tenant_id = $1".to_owned();
                (columns, text_columns, select, count)
            }
            // Permissions by name: their ids are each database's own.
            "tenantry.role_permissions" => (
                vec!["role_id".into(), "permission".into()],
                Vec::new(),
                select_rows(
                    "SELECT rp.tenant_id, rp.role_id, p.name AS permission FROM ONLY tenantry.role_permissions rp
                      JOIN tenantry.permissions p ON p.permission_id = rp.permission_id
                     WHERE rp.tenant_id = $1",
                    &["role_id".into(), "permission".into()],
                    Some(&["role_id".into(), "permission".into()]),
                ),
                "SELECT count(*) FROM ONLY tenantry.role_permissions WHERE tenant_id = $1".to_owned(),
            ),
            // Granted to no tenant role: read through the owners' own function.
            "tenantry.shared_rows" => (
                vec![
                    "table_id".into(),
                    "row_id".into(),
                    "shared_with".into(),
                    "shared_by".into(),
                    "shared_at".into(),
                ],
                Vec::new(),
                select_rows(
                    "SELECT s.tenant_id, s.table_name AS table_id, s.row_id, s.shared_with, s.shared_by, s.shared_at
                      FROM tenantry.shares_of_my_rows() s WHERE s.tenant_id = $1",
                    &[
                        "table_id".into(),
                        "row_id".into(),
                        "shared_with".into(),
                        "shared_by".into(),
                        "shared_at".into(),
                    ],
                    Some(&["table_id".into(), "row_id".into(), "shared_with".into()]),
                ),
                "SELECT count(*) FROM tenantry.shares_of_my_rows() s WHERE s.tenant_id = $1"
                    .to_owned(),
            ),
            _ => {
                let columns = readable_columns(tx, &table).await?;
                let text_columns = json_columns(tx, &table, &columns).await?;
                let list = select_list(&columns, &text_columns);
                let inner = if list.is_empty() {
                    format!("SELECT tenant_id FROM {only}{home} WHERE tenant_id = $1")
                } else {
                    format!("SELECT tenant_id, {list} FROM {only}{home} WHERE tenant_id = $1")
                };
                let order = sort_columns(tx, &table, &columns).await?;
                let select = select_rows(&inner, &columns, order.as_deref());
                let count = format!("SELECT count(*) FROM {only}{home} WHERE tenant_id = $1");
                (columns, text_columns, select, count)
            }
        };
        // Permissions by name and shares of rows are not the tables' columns.
        let types = if matches!(
            table.as_str(),
            "tenantry.role_permissions" | "tenantry.shared_rows"
        ) {
            Vec::new()
        } else {
            column_types(tx, &table, &columns).await?
        };
        plans.push(Plan {
            entry: TableEntry {
                file: file_name(&table),
                table,
                columns,
                text_columns,
                types,
                rows: 0,
                sha256: String::new(),
            },
            select,
            count,
        });
    }
    Ok(plans)
}

/// Exports every row `tenant` owns into `out` (a gzip'd tar: one NDJSON file
/// per table, then [`MANIFEST`]), from one REPEATABLE READ, READ ONLY
/// snapshot on `client`, an operator's connection (a superuser or a member
/// of `tenantry_owner`). The rows are read as `tenantry_owner`, which
/// bypasses row-level security (with `row_security` off, so that a policy
/// that would apply is an error, never a silent filter): a team's own
/// policies for the app roles (a restrictive one calling authorize(), which
/// the export's context holds no permission for) cannot leave rows out.
/// Every query names the tenant, and every row read is checked to be the
/// tenant's before it is written; each table's rows are counted by a query
/// of their own and must be as many as were read. Rows are
/// streamed from the database into a temporary file per table (a tar entry
/// states its size first) while they are hashed and counted: memory does
/// not grow with the tenant's size (disk does: every table is spooled, into
/// one temporary file, before the transaction ends and the archive is
/// written, so that a slow reader of `out` holds no snapshot open).
pub async fn export_tenant<W: Write>(
    client: &mut Client,
    tenant: TenantId,
    out: W,
    mut progress: impl FnMut(Progress),
) -> Result<Manifest, OffboardError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // One spelling of times and numbers, whatever the server's defaults:
    // the same rows give the same bytes, so the same checksums.
    tx.batch_execute("SET LOCAL TimeZone = 'UTC'; SET LOCAL extra_float_digits = 1; SET LOCAL DateStyle = 'ISO'; SET LOCAL IntervalStyle = 'iso_8601'; SET LOCAL bytea_output = 'hex'")
        .await?;
    let schema_version: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM tenantry.schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let exported_at: DateTime<Utc> = tx.query_one("SELECT now()", &[]).await?.get(0);
    tx.execute("SELECT tenantry.export_context($1)", &[tenant.as_uuid()])
        .await?;
    let mut plans = plan(&tx, tenant).await?;
    // Read as the owner (BYPASSRLS), not as tenantry_app under row-level
    // security: a team's restrictive SELECT policy for the app roles (say
    // USING (tenantry.authorize('notes.read')), or archived = false) hid its
    // rows from the export, which wrote a smaller table with exit 0 and a
    // manifest counted through the same filter (found by an outside
    // review). row_security = off turns any policy that would still apply
    // into an error. What keeps other tenants' rows out is each query's
    // tenant condition, and the check of every row's tenant_id below.
    tx.batch_execute("SET LOCAL ROLE tenantry_owner; SET LOCAL row_security = off")
        .await?;

    let mut counts = Vec::with_capacity(plans.len());
    for p in &plans {
        let n: i64 = tx.query_one(&p.count, &[tenant.as_uuid()]).await?.get(0);
        counts.push(n.max(0) as u64);
    }
    progress(Progress::Total(counts.iter().sum()));

    // Every table spooled before anything is written out, and the snapshot
    // released before the archive is: a reader that stalls (a pipe nobody
    // reads) held the transaction open, idle, for as long as it stalled,
    // and with it every tenant's vacuum horizon (found by a review of
    // abandoned work).
    // One file for every table, each at its offset (a file per table held
    // one descriptor per table open at once).
    let mut spool = tempfile::tempfile()?;
    let mut spooled = Vec::with_capacity(plans.len());
    for (p, counted) in plans.iter_mut().zip(counts) {
        let start = spool.seek(SeekFrom::End(0))?;
        let mut hasher = Sha256::new();
        let mut rows = 0u64;
        {
            let mut w = std::io::BufWriter::new(&mut spool);
            // A row PostgreSQL cannot write out as one JSON value (over 1 GB)
            // fails here: say which table and row, not only the database's words.
            let failed = |rows: u64, e: tokio_postgres::Error| {
                OffboardError::Refused(format!(
                    "table {}: reading row {} failed ({}); nothing was exported",
                    p.entry.table,
                    rows + 1,
                    DbError::from(e)
                ))
            };
            let stream = tx
                .query_raw(&p.select, std::iter::once(tenant.as_uuid()))
                .await
                .map_err(|e| failed(0, e))?;
            pin_mut!(stream);
            let mut pending = 0u64;
            while let Some(row) = stream.try_next().await.map_err(|e| failed(rows, e))? {
                let owner: uuid::Uuid = row.get(0);
                if owner != *tenant.as_uuid() {
                    return Err(OffboardError::Refused(format!(
                        "table {}: a row of tenant {owner} was read for tenant {tenant}; nothing was exported",
                        p.entry.table
                    )));
                }
                let line: &str = row.get(1);
                if line.len() > MAX_LINE_BYTES {
                    // Never written: the import could not read it back.
                    let start = line
                        .char_indices()
                        .nth(120)
                        .map_or(line, |(i, _)| &line[..i]);
                    return Err(OffboardError::Refused(format!(
                        "table {}: row {} ({start}…) is {} bytes as JSON, more than the {MAX_LINE_BYTES} an import reads; nothing was exported",
                        p.entry.table,
                        rows + 1,
                        line.len()
                    )));
                }
                w.write_all(line.as_bytes())?;
                w.write_all(b"\n")?;
                hasher.update(line.as_bytes());
                hasher.update(b"\n");
                rows += 1;
                pending += 1;
                if pending == 1_000 {
                    progress(Progress::Rows(pending));
                    pending = 0;
                }
            }
            progress(Progress::Rows(pending));
            w.flush()?;
        }
        if rows != counted {
            return Err(OffboardError::Refused(format!(
                "table {}: {rows} rows were read for the archive but the tenant has {counted}; nothing was exported",
                p.entry.table
            )));
        }
        p.entry.rows = rows;
        p.entry.sha256 = hex::encode(hasher.finalize());
        let end = spool.seek(SeekFrom::End(0))?;
        spooled.push((start, end - start));
    }
    tx.commit().await?;

    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut archive = tar::Builder::new(gz);
    for (p, (start, size)) in plans.iter().zip(spooled) {
        spool.seek(SeekFrom::Start(start))?;
        append(
            &mut archive,
            &p.entry.file,
            size,
            exported_at,
            &mut (&mut spool).take(size),
        )?;
    }

    let manifest = Manifest {
        format: FORMAT_VERSION,
        tenant_id: tenant,
        schema_version,
        exported_at,
        tables: plans.into_iter().map(|p| p.entry).collect(),
    };
    let bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| OffboardError::Refused(format!("writing the manifest: {e}")))?;
    append(
        &mut archive,
        MANIFEST,
        bytes.len() as u64,
        exported_at,
        &mut bytes.as_slice(),
    )?;
    archive.into_inner()?.finish()?.flush()?;
    // The tenant's own log says its rows left the database (who, when, how
    // many): the archive is complete, whatever becomes of it now.
    let rows: u64 = manifest.tables.iter().map(|t| t.rows).sum();
    client
        .execute(
            "SELECT tenantry.audit_offboarding($1, 'tenant.exported', $2)",
            &[
                tenant.as_uuid(),
                &serde_json::json!({
                    "exported_at": manifest.exported_at,
                    "schema_version": manifest.schema_version,
                    "tables": manifest.tables.len(),
                    "rows": rows,
                }),
            ],
        )
        .await?;
    Ok(manifest)
}

fn append<W: Write>(
    archive: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    at: DateTime<Utc>,
    data: &mut impl Read,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(at.timestamp().max(0) as u64);
    header.set_entry_type(tar::EntryType::Regular);
    archive.append_data(&mut header, path, data)
}

fn open_archive(
    path: &Path,
) -> Result<tar::Archive<flate2::read::GzDecoder<std::fs::File>>, OffboardError> {
    let file = std::fs::File::open(path)?;
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(file)))
}

fn corrupt(e: impl std::fmt::Display) -> OffboardError {
    OffboardError::Refused(format!("the archive is corrupt: {e}"))
}

/// The lines of one file of an archive, each at most [`MAX_LINE_BYTES`],
/// hashed and counted as they are read: every read of the archive is held to
/// the manifest, since the file may change between two reads.
struct Lines<R> {
    reader: BufReader<R>,
    /// The longest line taken ([`MAX_LINE_BYTES`]).
    max: usize,
    file: String,
    hasher: Sha256,
    rows: u64,
    buf: Vec<u8>,
}

impl<R: Read> Lines<R> {
    fn new(file: &str, reader: R) -> Self {
        Self::with_max(file, reader, MAX_LINE_BYTES)
    }

    fn with_max(file: &str, reader: R, max: usize) -> Self {
        Self {
            reader: BufReader::new(reader),
            max,
            file: file.to_owned(),
            hasher: Sha256::new(),
            rows: 0,
            buf: Vec::new(),
        }
    }

    /// The next line, without its newline; `None` at the end of the file.
    fn next_line(&mut self) -> Result<Option<&[u8]>, OffboardError> {
        self.buf.clear();
        // One byte more than a line may hold, its newline included: a line
        // that long and still not ended is refused before it grows further.
        let n = (&mut self.reader)
            .take(self.max as u64 + 1)
            .read_until(b'\n', &mut self.buf)
            .map_err(corrupt)?;
        if n == 0 {
            return Ok(None);
        }
        if self.buf.len() > self.max && self.buf.last() != Some(&b'\n') {
            let table = self
                .file
                .strip_prefix("tables/")
                .and_then(|f| f.strip_suffix(".ndjson"))
                .unwrap_or(&self.file);
            return Err(OffboardError::Refused(format!(
                "table {table}: a row ({}) is longer than {} bytes, more than PostgreSQL holds in one value, so more than any export writes",
                self.file, self.max
            )));
        }
        self.hasher.update(&self.buf);
        self.rows += 1;
        let line = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        Ok(Some(line.strip_suffix(b"\r").unwrap_or(line)))
    }

    /// The next line as text.
    fn next_text(&mut self) -> Result<Option<String>, OffboardError> {
        match self.next_line()? {
            None => Ok(None),
            Some(line) => String::from_utf8(line.to_vec())
                .map(Some)
                .map_err(|e| corrupt(format!("{}: {e}", self.file))),
        }
    }

    /// Row count and SHA-256 (lowercase hex) of what was read.
    fn finish(self) -> (u64, String) {
        (self.rows, hex::encode(self.hasher.finalize()))
    }

    /// Refuses the archive when what was read is not what the manifest says
    /// (the file changed after [`verify_archive`] checked it).
    fn check(self, entry: &TableEntry) -> Result<(), OffboardError> {
        let file = self.file.clone();
        let (rows, sum) = self.finish();
        if rows != entry.rows || sum != entry.sha256 {
            return Err(corrupt(format!(
                "{file} no longer matches the manifest ({rows} rows, SHA-256 {sum}): it changed after it was checked"
            )));
        }
        Ok(())
    }
}

/// Reads the archive at `path` once and checks it against its manifest:
/// format version, a schema no newer than this build's, every table's file
/// present once with its row count and SHA-256, nothing else. Any
/// difference refuses it ([`OffboardError::Refused`]).
pub fn verify_archive(path: &Path) -> Result<Manifest, OffboardError> {
    let mut archive = open_archive(path)?;
    let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut manifest: Option<Vec<u8>> = None;
    for entry in archive.entries().map_err(corrupt)? {
        let entry = entry.map_err(corrupt)?;
        let name = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        if name == MANIFEST {
            let mut bytes = Vec::new();
            // A manifest of a few hundred bytes per table: bounded.
            entry
                .take(16 << 20)
                .read_to_end(&mut bytes)
                .map_err(corrupt)?;
            manifest = Some(bytes);
            continue;
        }
        let mut lines = Lines::new(&name, entry);
        while lines.next_line()?.is_some() {}
        if seen.insert(name.clone(), lines.finish()).is_some() {
            return Err(corrupt(format!("{name} is in it twice")));
        }
    }
    let manifest: Manifest =
        serde_json::from_slice(&manifest.ok_or_else(|| corrupt(format!("it has no {MANIFEST}")))?)
            .map_err(|e| corrupt(format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT_VERSION {
        return Err(OffboardError::Refused(format!(
            "archive format {} is not this build's ({FORMAT_VERSION})",
            manifest.format
        )));
    }
    let ours = crate::migrate::migrations()
        .last()
        .map(|m| m.version)
        .unwrap_or(0);
    if manifest.schema_version > ours {
        return Err(OffboardError::Refused(format!(
            "the archive comes from a newer tenantry schema (migration {}; this build knows up to {ours}): import it with a newer build",
            manifest.schema_version
        )));
    }
    for t in &manifest.tables {
        match seen.remove(&t.file) {
            None => return Err(corrupt(format!("{} is missing", t.file))),
            Some((rows, sum)) if rows != t.rows || sum != t.sha256 => {
                return Err(corrupt(format!(
                    "{} does not match the manifest ({rows} rows, SHA-256 {sum}; the manifest says {} rows, {})",
                    t.file, t.rows, t.sha256
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = seen.keys().next() {
        return Err(corrupt(format!("{extra} is not in the manifest")));
    }
    if manifest.tables.first().map(|t| t.table.as_str()) != Some("tenantry.tenants")
        || manifest.tables.first().map(|t| t.rows) != Some(1)
    {
        return Err(corrupt("its first table is not the one tenant row"));
    }
    Ok(manifest)
}

/// How rows of one table are written on import (`$1`: a JSON array of rows, `$2`: the tenant).
async fn insert_sql(
    tx: &Transaction<'_>,
    tenant: TenantId,
    entry: &TableEntry,
) -> Result<String, OffboardError> {
    match entry.table.as_str() {
        "tenantry.role_permissions" => {
            return Ok("INSERT INTO tenantry.role_permissions (tenant_id, role_id, permission_id)
                       SELECT $2, x.role_id, p.permission_id
                       FROM json_to_recordset($1::json) x(role_id uuid, permission text)
                       JOIN tenantry.permissions p ON p.name = x.permission"
                .into())
        }
        "tenantry.shared_rows" => {
            return Ok("INSERT INTO tenantry.shared_rows (tenant_id, table_id, row_id, shared_with, shared_by, shared_at)
                       SELECT $2, x.table_id::regclass, x.row_id, x.shared_with, x.shared_by, x.shared_at
                       FROM json_to_recordset($1::json) x(table_id text, row_id text, shared_with uuid, shared_by uuid, shared_at timestamptz)"
                .into())
        }
        _ => {}
    }
    // The target's columns: what it may write (not generated), and the
    // secrets an archive never holds (a key's or token's hash), which get a
    // random digest: the key or token can never be presented again.
    let rows = tx
        .query(
            "SELECT a.attname::text, a.attgenerated <> '', a.attnotnull AND NOT a.atthasdef AND a.atttypid = 'bytea'::regtype,
                    format_type(a.atttypid, a.atttypmod)
               FROM pg_attribute a
              WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&entry.table],
        )
        .await?;
    let mut targets = vec!["tenant_id".to_owned()];
    let mut values = vec!["$2".to_owned()];
    // The record each line is read into: the archive's columns with this
    // table's types, those written as text as text.
    let mut record = Vec::new();
    for r in &rows {
        let (name, ty): (String, String) = (r.get(0), r.get(3));
        if name != "tenant_id" && entry.columns.contains(&name) {
            let ty = if entry.text_columns.contains(&name) {
                "text"
            } else {
                &ty
            };
            record.push(format!("{} {ty}", quote_ident(&name)));
        }
    }
    for r in &rows {
        let (name, generated, secret): (String, bool, bool) = (r.get(0), r.get(1), r.get(2));
        if name == "tenant_id" || generated {
            continue;
        }
        if entry.text_columns.contains(&name) && entry.columns.contains(&name) {
            // Its text, cast to the column's type (JSON null and SQL NULL
            // apart, a json value's text as it was).
            let ty: String = r.get(3);
            values.push(format!("x.{}::{ty}", quote_ident(&name)));
        } else if dead_on_import(&entry.table) == Some(name.as_str())
            && entry.columns.contains(&name)
        {
            // Its hash was never exported: it comes back revoked (a session
            // ended), so that a list does not show as usable what can never
            // be presented (found by an operator's audit; an impersonation
            // session listed live by an erasure review). An accepted
            // invitation stays accepted.
            values.push(if entry.table == "tenantry.invitations" {
                "CASE WHEN x.accepted_at IS NULL THEN coalesce(x.revoked_at, now()) ELSE x.revoked_at END".into()
            } else {
                format!("coalesce(x.{}, now())", quote_ident(&name))
            });
        } else if entry.columns.contains(&name) {
            values.push(format!("x.{}", quote_ident(&name)));
        } else if secret {
            values.push(
                "sha256(convert_to(gen_random_uuid()::text || clock_timestamp()::text, 'UTF8'))"
                    .into(),
            );
        } else {
            continue;
        }
        targets.push(quote_ident(&name));
    }
    let home = home_table(tx, tenant, &entry.table).await?;
    let record = if record.is_empty() {
        String::new()
    } else {
        format!(", LATERAL json_to_record(e) AS x({})", record.join(", "))
    };
    Ok(format!(
        // OVERRIDING SYSTEM VALUE: an identity column GENERATED ALWAYS takes
        // the archived value (the ids rows refer to each other by), and
        // the import moves its sequence past them afterwards (sequence_moves).
        // json, not jsonb: a jsonb value holds at most 256 MB (a batch, or
        // one wide row, was refused), a json one is text up to 1 GB. The
        // columns written as text are read as text (a domain's check would
        // see their text as a JSON string), then cast.
        "INSERT INTO {home} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM json_array_elements($1::json) e{record}",
        targets.join(", "),
        values.join(", "),
    ))
}

/// The column that ends a row of `table` whose secret's hash an archive
/// never carries (API keys, invitations, impersonation sessions): imported,
/// they can never be presented, so they come back ended.
fn dead_on_import(table: &str) -> Option<&'static str> {
    match table {
        "tenantry.api_keys" | "tenantry.invitations" => Some("revoked_at"),
        "tenantry.impersonations" => Some("ended_at"),
        _ => None,
    }
}

/// The moves of the sequence of every identity or serial column of `table`
/// past the values the import wrote into it for `tenant` (sequence, value;
/// the import makes them last, before it commits), so that the rows the
/// tenant writes next do not draw an id it already holds (an archive
/// restored into another database, whose sequences start afresh). Never
/// moves one back.
///
/// Such a sequence is shared: every tenant's new rows of the table (and of
/// its schema tenants' tables) draw from it. A tampered archive's id of
/// 9223372036854775807 moved it to its end, and every tenant's INSERT then
/// failed (`nextval: reached maximum value of sequence`; found by an
/// outside review). So an import that would move one to within
/// [`SEQUENCE_HEADROOM_PERCENT`] % of its range's end is refused, naming the
/// table, column, value and sequence: a real tenant's ids that high mean the
/// sequence is nearly spent for everyone anyway (an `integer` column still
/// keeps 21 million ids, a `bigint` one 92 quadrillion), and nothing is
/// written.
async fn sequence_moves(
    tx: &Transaction<'_>,
    tenant: TenantId,
    table: &str,
) -> Result<Vec<(String, i64)>, OffboardError> {
    let columns = tx
        .query(
            "SELECT a.attname::text, pg_get_serial_sequence($1, a.attname)
               FROM pg_attribute a
              WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
                AND pg_get_serial_sequence($1, a.attname) IS NOT NULL",
            &[&table],
        )
        .await?;
    // Where the import wrote them: a schema tenant's own table draws from
    // the pooled table's sequence too.
    let home: String = home_table(tx, tenant, table).await?;
    let mut moves = Vec::new();
    for c in &columns {
        let (column, sequence): (String, String) = (c.get(0), c.get(1));
        let row = tx
            .query_one(
                &format!(
                    "SELECT x.m, x.m > coalesce(pg_sequence_last_value($1::text::regclass), 0),
                            s.seqincrement > 0 AND s.seqmax::numeric - x.m < (s.seqmax::numeric - s.seqmin) * $3::int / 100,
                            s.seqmax
                       FROM (SELECT max({})::bigint AS m FROM {home} WHERE tenant_id = $2) x,
                            pg_sequence s
                      WHERE s.seqrelid = $1::text::regclass",
                    quote_ident(&column)
                ),
                &[&sequence, tenant.as_uuid(), &SEQUENCE_HEADROOM_PERCENT],
            )
            .await?;
        let (max, past, cramped): (Option<i64>, Option<bool>, Option<bool>) =
            (row.get(0), row.get(1), row.get(2));
        let Some(max) = max.filter(|_| past == Some(true)) else {
            continue;
        };
        if cramped == Some(true) {
            let end: i64 = row.get(3);
            return Err(OffboardError::Refused(format!(
                "table {table}: the archive's largest {column} is {max}, and moving sequence {sequence} past it would leave less than {SEQUENCE_HEADROOM_PERCENT}% of its range (it ends at {end}) to every tenant's new rows of the table; nothing was imported: check the archive (a real tenant's ids that high mean the sequence is nearly spent), or give those rows lower ids"
            )));
        }
        moves.push((sequence, max));
    }
    Ok(moves)
}

/// How much of a shared sequence's range an import must leave free after
/// moving it past the imported ids ([`sequence_moves`]), in percent.
const SEQUENCE_HEADROOM_PERCENT: i32 = 1;

/// Refuses an archive whose tables this database does not have as they were:
/// an adopted table missing or with other columns, a permission it does not define.
async fn check_target(
    tx: &Transaction<'_>,
    path: &Path,
    manifest: &Manifest,
) -> Result<(), OffboardError> {
    for t in &manifest.tables {
        // A name that is no table's name (an export writes schema.table) is
        // the archive's fault, said as such rather than as an internal error
        // (found by an outside review of import). parse_ident refuses its
        // syntax (22023) on every version, to_regclass is asked only of two
        // parts (from PostgreSQL 16 on it answers NULL for bad syntax, and it
        // raises on more parts than a table name has).
        let row = match tx
            .query_one(
                "SELECT pg_catalog.cardinality(pg_catalog.parse_ident($1)) = 2 AS named,
                        CASE WHEN pg_catalog.cardinality(pg_catalog.parse_ident($1)) = 2
                             THEN to_regclass($1)::oid END AS rel",
                &[&t.table],
            )
            .await
        {
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE) =>
            {
                None
            }
            other => Some(other?),
        };
        let Some(rel) = row
            .filter(|r| r.get::<_, bool>("named"))
            .map(|r| r.get::<_, Option<u32>>("rel"))
        else {
            return Err(OffboardError::Refused(format!(
                "the manifest names {:?}, which is no table's name: the archive was changed or is not tenantry's",
                t.table
            )));
        };
        let adopted: bool = match rel {
            Some(oid) => tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM tenantry.tenant_tables WHERE table_id::oid = $1)",
                    &[&oid],
                )
                .await?
                .get(0),
            None => false,
        };
        let exists = rel.is_some();
        let own =
            OWN_TABLES.contains(&t.table.as_str()) || TRAILING_TABLES.contains(&t.table.as_str());
        if !own && t.table.starts_with("tenantry.") && !adopted {
            return Err(OffboardError::Refused(format!(
                "the manifest names {}, a table of tenantry's that no export holds: the archive was changed or is not tenantry's",
                t.table
            )));
        }
        let missing = if !exists {
            "is not in this database: create and adopt it (same columns)"
        } else if !own && !adopted {
            "is not adopted in this database: adopt it (tenantry table adopt)"
        } else {
            ""
        };
        if !missing.is_empty() {
            return Err(OffboardError::Refused(format!(
                "table {} {missing} before importing",
                t.table
            )));
        }
        if !matches!(
            t.table.as_str(),
            "tenantry.role_permissions" | "tenantry.shared_rows"
        ) {
            let here = readable_columns(tx, &t.table).await?;
            // An archive of an older build lacks the columns added since
            // (tenant_members.pending, migration 0037): those take their
            // defaults. A column of the archive that is not here, or one here
            // that an insert cannot leave out, refuses the import.
            let added: Vec<&String> = here.iter().filter(|c| !t.columns.contains(c)).collect();
            // Columns of this table the archive lacks that an insert cannot
            // leave out (no default, NOT NULL).
            let unfillable: Vec<String> = if added.is_empty() {
                Vec::new()
            } else {
                tx.query_one(
                    "SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
                       FROM pg_attribute a
                      WHERE a.attrelid = $1::text::regclass AND a.attname = ANY ($2::text[])
                        AND NOT (a.atthasdef OR NOT a.attnotnull OR a.attidentity <> '' OR a.attgenerated <> '')",
                    &[&t.table, &added],
                )
                .await?
                .get(0)
            };
            let gone: Vec<&str> = t
                .columns
                .iter()
                .filter(|c| !here.contains(c))
                .map(|c| c.as_str())
                .collect();
            if !gone.is_empty() || !unfillable.is_empty() {
                // What to do about it, not only what differs (found by an
                // outside review): the archive is read as it was written.
                let mut ways = Vec::new();
                if !gone.is_empty() {
                    ways.push(format!(
                        "the archive's {} must be columns of {} to import it: add them back (or rename them back) for the import, import, then change the table again",
                        gone.join(", "),
                        t.table
                    ));
                }
                if !unfillable.is_empty() {
                    ways.push(format!(
                        "{} of {} must take a default (or allow NULL): the archive has no values for them",
                        unfillable.join(", "),
                        t.table
                    ));
                }
                return Err(OffboardError::Refused(format!(
                    "table {} has other columns here ({}) than in the archive ({}): {}",
                    t.table,
                    here.join(", "),
                    t.columns.join(", "),
                    ways.join("; ")
                )));
            }
            // The types of an adopted table's columns (tenantry's own are
            // its migrations' to keep importable): after ALTER COLUMN budget
            // TYPE numeric(30,2) here, 12345678901234.123456 was imported as
            // .12 without a word (found by an outside review).
            if !own && t.types.len() == t.columns.len() {
                let types = column_types(tx, &t.table, &t.columns).await?;
                let narrower: Vec<String> = t
                    .columns
                    .iter()
                    .zip(t.types.iter().zip(&types))
                    .filter(|(_, (archived, here))| !type_holds(archived, here))
                    .map(|(c, (archived, here))| {
                        format!(
                            "{} is {here} here and {archived} in the archive (ALTER TABLE {} ALTER COLUMN {} TYPE {archived})",
                            quote_ident(c),
                            t.table,
                            quote_ident(c)
                        )
                    })
                    .collect();
                if !narrower.is_empty() {
                    return Err(OffboardError::Refused(format!(
                        "table {}: {}; such a column may not hold every value of the archive (a value would be rounded, cut or refused): change it back for the import, import, then change the table again",
                        t.table,
                        narrower.join("; ")
                    )));
                }
            }
        }
    }
    // Permissions by name: every one a role held must be defined here.
    if let Some(entry) = manifest
        .tables
        .iter()
        .find(|t| t.table == "tenantry.role_permissions")
    {
        let mut names = std::collections::BTreeSet::new();
        for_each_batch(path, entry, |batch| {
            for line in batch {
                let v: serde_json::Value = serde_json::from_str(line).map_err(corrupt)?;
                if let Some(p) = v.get("permission").and_then(|p| p.as_str()) {
                    names.insert(p.to_owned());
                }
            }
            Ok(())
        })?;
        let names: Vec<String> = names.into_iter().collect();
        let missing: Vec<String> = tx
            .query(
                "SELECT n FROM unnest($1::text[]) n WHERE NOT EXISTS (SELECT 1 FROM tenantry.permissions p WHERE p.name = n) ORDER BY 1",
                &[&names],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !missing.is_empty() {
            return Err(OffboardError::Refused(format!(
                "permission(s) {} are not defined in this database (tenantry.define_permission)",
                missing.join(", ")
            )));
        }
    }
    Ok(())
}

/// Calls `each` with the lines of `entry`'s file, [`IMPORT_BATCH_ROWS`] at a
/// time, then refuses the archive if the file no longer matches the manifest.
fn for_each_batch(
    path: &Path,
    entry: &TableEntry,
    mut each: impl FnMut(&[String]) -> Result<(), OffboardError>,
) -> Result<(), OffboardError> {
    let mut archive = open_archive(path)?;
    for e in archive.entries().map_err(corrupt)? {
        let e = e.map_err(corrupt)?;
        if e.path().map_err(corrupt)?.to_string_lossy() != entry.file {
            continue;
        }
        let mut lines = Lines::new(&entry.file, e);
        let mut batch = Vec::with_capacity(IMPORT_BATCH_ROWS);
        let mut bytes = 0;
        while let Some(line) = lines.next_text()? {
            bytes += line.len();
            batch.push(line);
            if batch.len() == IMPORT_BATCH_ROWS || bytes >= IMPORT_BATCH_BYTES {
                each(&batch)?;
                batch.clear();
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            each(&batch)?;
        }
        return lines.check(entry);
    }
    Err(corrupt(format!("{} is missing", entry.file)))
}

/// Imports the archive at `path` as tenant `as_id` (default: the id it was
/// exported from), on an operator's connection: the archive is checked
/// against its manifest first ([`verify_archive`]), then everything is
/// written in one transaction: the tenant (`tenantry.import_tenant`), its
/// rows table by table, what triggers derive (`tenantry.import_tenant_finish`).
/// Every file is hashed again while it is imported: one that changed since
/// the check rolls the import back.
/// Refused, with nothing written, for a corrupt or foreign archive, an id
/// that exists or was purged, a missing adopted table or one with other
/// columns.
pub async fn import_tenant(
    client: &mut Client,
    path: &Path,
    as_id: Option<TenantId>,
    mut progress: impl FnMut(Progress),
) -> Result<Imported, OffboardError> {
    let manifest = verify_archive(path)?;
    let tenant = as_id.unwrap_or(manifest.tenant_id);
    progress(Progress::Total(
        manifest.tables.iter().map(|t| t.rows).sum(),
    ));
    let tx = client.transaction().await?;
    // As the owner of the tables written (row-level security does not stand
    // in an import's way): a superuser, or a migration role that is a member
    // of tenantry_owner, alike.
    tx.batch_execute("SET LOCAL TimeZone = 'UTC'; SET LOCAL ROLE tenantry_owner")
        .await?;
    check_target(&tx, path, &manifest).await?;

    let mut tenant_row = None;
    for_each_batch(path, &manifest.tables[0], |lines| {
        tenant_row = Some(serde_json::from_str::<serde_json::Value>(&lines[0]).map_err(corrupt)?);
        Ok(())
    })?;
    let mut tenant_row = tenant_row.ok_or_else(|| corrupt("no tenant row"))?;
    // The exported id (the row holds none: it is the manifest's), by which
    // import_tenant tells a copy beside its original from a tenant restored.
    if let Some(row) = tenant_row.as_object_mut() {
        row.insert(
            "tenant_id".to_owned(),
            serde_json::Value::String(manifest.tenant_id.to_string()),
        );
    }
    tx.execute(
        "SELECT tenantry.import_tenant($1, $2)",
        &[tenant.as_uuid(), &tenant_row],
    )
    .await?;
    progress(Progress::Rows(1));

    let mut rows = BTreeMap::from([("tenantry.tenants".to_owned(), 1)]);
    let mut chunks = read_chunks(path.to_owned(), manifest.tables.clone());
    let mut current: Option<(&TableEntry, tokio_postgres::Statement)> = None;
    let mut complete = false;
    while let Some(chunk) = chunks.recv().await {
        match chunk? {
            Chunk::Done => complete = true,
            Chunk::Table(file) => {
                current = None;
                let Some(entry) = manifest.tables[1..].iter().find(|t| t.file == file) else {
                    continue;
                };
                let sql = insert_sql(&tx, tenant, entry).await?;
                let statement = tx.prepare_typed(&sql, &[Type::TEXT, Type::UUID]).await?;
                rows.insert(entry.table.clone(), 0);
                current = Some((entry, statement));
            }
            Chunk::Lines(json, n) => {
                let Some((entry, statement)) = &current else {
                    continue;
                };
                tx.execute(statement, &[&json, tenant.as_uuid()]).await?;
                *rows.entry(entry.table.clone()).or_default() += n;
                progress(Progress::Rows(n));
            }
        }
    }
    if !complete {
        // The reader stopped without saying every file matched: roll back.
        return Err(corrupt("reading it stopped before its end"));
    }
    // Every sequence's move is checked for every table first, and made
    // last, once nothing can refuse the import: setval is never rolled
    // back, and a refused import moved shared sequences all the same (found
    // by a verification review).
    let mut moves = Vec::new();
    for table in rows.keys() {
        moves.extend(sequence_moves(&tx, tenant, table).await?);
    }
    tx.execute(
        "SELECT tenantry.import_tenant_finish($1)",
        &[tenant.as_uuid()],
    )
    .await?;
    // Row triggers are off for the import, foreign keys' checks with them:
    // every key of every table filled is checked here, once the finish has
    // dropped the shares made to tenants that are not here, as the operator
    // (who may read a team's table the import does not fill). A tampered
    // archive's invoice naming no project, or a row naming a tenant this
    // database does not hold, was imported as it was, and pg_restore of the
    // database failed on it later (found by an outside review).
    tx.batch_execute("RESET ROLE").await?;
    let broken: Option<String> = tx
        .query_one(
            "SELECT tenantry.import_broken_foreign_key($1)",
            &[tenant.as_uuid()],
        )
        .await?
        .get(0);
    if let Some(broken) = broken {
        return Err(OffboardError::Refused(format!(
            "{broken}; nothing was imported: every row must name rows that are there (when it names a table the import does not fill, give that table those rows first, with tenant {tenant}'s id when the key includes tenant_id), then import again"
        )));
    }
    // The imported log's last word: what came before is the archive's.
    tx.execute(
        "SELECT tenantry.audit_offboarding($1, 'tenant.imported', $2)",
        &[
            tenant.as_uuid(),
            &serde_json::json!({
                "source_tenant_id": manifest.tenant_id,
                "exported_at": manifest.exported_at,
                "schema_version": manifest.schema_version,
                "rows": rows.values().sum::<u64>(),
            }),
        ],
    )
    .await?;
    tx.batch_execute("SET LOCAL ROLE tenantry_owner").await?;
    for (sequence, max) in &moves {
        tx.execute("SELECT setval($1::text::regclass, $2)", &[sequence, max])
            .await?;
    }
    tx.commit().await?;
    Ok(Imported {
        tenant_id: tenant,
        source_tenant_id: manifest.tenant_id,
        rows,
    })
}

/// What the archive reader hands the importer, in archive order.
enum Chunk {
    /// The next table's file begins.
    Table(String),
    /// Up to [`IMPORT_BATCH_ROWS`] lines of it (and about
    /// [`IMPORT_BATCH_BYTES`]) as one JSON array, and how many.
    Lines(String, u64),
    /// Every file of the manifest was read once and matched it.
    Done,
}

/// Reads the archive on a thread of its own (tar and gzip are blocking),
/// handing over a few batches at a time: memory stays bounded whatever the
/// archive's size, and the database is written while the next batch is read.
/// Each file is hashed and counted again on the way and must match `tables`
/// (the manifest [`verify_archive`] checked), each read once, none missing;
/// then [`Chunk::Done`]. Otherwise an error ends the stream.
fn read_chunks(
    path: std::path::PathBuf,
    tables: Vec<TableEntry>,
) -> tokio::sync::mpsc::Receiver<Result<Chunk, OffboardError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    std::thread::spawn(move || {
        let send = |c: Result<Chunk, OffboardError>| tx.blocking_send(c).is_ok();
        let run = || -> Result<(), OffboardError> {
            let mut archive = open_archive(&path)?;
            let mut read = std::collections::BTreeSet::new();
            for e in archive.entries().map_err(corrupt)? {
                let e = e.map_err(corrupt)?;
                let name = e.path().map_err(corrupt)?.to_string_lossy().into_owned();
                if name == MANIFEST {
                    continue;
                }
                let Some(entry) = tables.iter().find(|t| t.file == name) else {
                    return Err(corrupt(format!(
                        "{name} is not in the manifest: the archive changed after it was checked"
                    )));
                };
                if !read.insert(name.clone()) {
                    return Err(corrupt(format!("{name} is in it twice")));
                }
                if !send(Ok(Chunk::Table(name.clone()))) {
                    return Ok(());
                }
                let mut lines = Lines::new(&name, e);
                // The batch is written as the JSON array the INSERT takes,
                // line by line: a line is held once (not again to join them).
                let mut batch = String::new();
                let mut n = 0u64;
                while let Some(line) = lines.next_line()? {
                    let line =
                        std::str::from_utf8(line).map_err(|e| corrupt(format!("{name}: {e}")))?;
                    batch.push(if n == 0 { '[' } else { ',' });
                    batch.push_str(line);
                    n += 1;
                    if n as usize == IMPORT_BATCH_ROWS || batch.len() >= IMPORT_BATCH_BYTES {
                        batch.push(']');
                        if !send(Ok(Chunk::Lines(std::mem::take(&mut batch), n))) {
                            return Ok(());
                        }
                        n = 0;
                    }
                }
                if n > 0 {
                    batch.push(']');
                    if !send(Ok(Chunk::Lines(batch, n))) {
                        return Ok(());
                    }
                }
                lines.check(entry)?;
            }
            if let Some(missing) = tables.iter().find(|t| !read.contains(&t.file)) {
                return Err(corrupt(format!(
                    "{} is missing: the archive changed after it was checked",
                    missing.file
                )));
            }
            send(Ok(Chunk::Done));
            Ok(())
        };
        if let Err(e) = run() {
            send(Err(e));
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line longer than the cap is refused naming its table before it is
    /// held whole; one at the cap is read (the cap itself is 1 GiB less 64
    /// bytes, too long for a test, so a small one stands for it).
    #[test]
    fn a_line_longer_than_the_cap_is_refused_naming_its_table_and_one_at_the_cap_is_read() {
        let text = format!("{}\n{}\n", "a".repeat(11), "b".repeat(12));
        let mut lines = Lines::with_max("tables/public.notes.ndjson", text.as_bytes(), 11);
        assert_eq!(lines.next_line().unwrap(), Some(&b"aaaaaaaaaaa"[..]));
        let Err(OffboardError::Refused(e)) = lines.next_line() else {
            panic!("a line over the cap was read")
        };
        assert!(
            e.contains("table public.notes") && e.contains("longer than 11 bytes"),
            "{e}"
        );
    }

    /// A column type holds the archive's values when it is the same, wider
    /// or without the archive's modifier; a narrower one is refused.
    #[test]
    fn a_column_type_holds_the_archives_values_only_when_it_is_as_wide() {
        for (archived, here) in [
            ("numeric", "numeric"),
            ("numeric(12,6)", "numeric"),
            ("numeric(12,6)", "numeric(20,6)"),
            ("character varying(20)", "text"),
            ("character varying(20)", "character varying(40)"),
            ("character varying(20)", "character varying"),
            ("integer", "bigint"),
            ("smallint", "numeric"),
            ("real", "double precision"),
            ("timestamp(3) with time zone", "timestamp with time zone"),
            ("numeric(10,2)[]", "numeric[]"),
            ("text", "character varying"),
        ] {
            assert!(type_holds(archived, here), "{archived} into {here}");
        }
        for (archived, here) in [
            ("numeric", "numeric(30,2)"),
            ("numeric(12,6)", "numeric(20,2)"),
            ("numeric(12,2)", "numeric(11,2)"),
            ("character varying(40)", "character varying(20)"),
            ("text", "character varying(20)"),
            ("bigint", "integer"),
            ("double precision", "real"),
            ("numeric", "bigint"),
            ("jsonb", "json"),
            ("timestamp with time zone", "timestamp(0) with time zone"),
            ("numeric[]", "numeric(30,2)[]"),
        ] {
            assert!(!type_holds(archived, here), "{archived} into {here}");
        }
    }
}
