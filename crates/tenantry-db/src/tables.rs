//! Adopted tables: a team's own tables made tenant tables (`tenantry.adopt_table`, with a batched backfill of rows that have no tenant yet), released, listed, and checked by the doctor (`tenantry.table_problems`).
//!
//! Adopting and releasing change a table's owner and policies, so they run on a
//! connection of the team's migration role (a superuser, or the table's owner
//! that is a member of `tenantry_owner`), never through the server's pool. The
//! doctor is also on [`Database::table_problems`](crate::Database::table_problems)
//! for the server's boot check.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{types::Type, Client, Row};

use crate::TenantId;

/// One adopted table, as `tenantry.tenant_tables` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantTable {
    /// The table, schema-qualified when it is not on the caller's search path;
    /// one dropped since its adoption: `<name as adopted> (dropped, oid <oid>)`.
    pub table: String,
    /// Ancestors reach their descendants' rows too.
    pub hierarchy: bool,
    /// Tenants may share rows read-only with other tenants (`tenantry.share_row`).
    pub sharing: bool,
    /// The permission a caller needs to insert, update or delete rows
    /// (`tenantry.authorize`); `null`: any caller acting for the tenant may.
    pub write_permission: Option<String>,
    /// Who owned the table before; `release_table` gives it back to them.
    pub previous_owner: String,
    /// When it was first adopted.
    pub adopted_at: DateTime<Utc>,
    /// The session user that adopted it.
    pub adopted_by: String,
}

impl TenantTable {
    fn from_row(row: &Row) -> Self {
        Self {
            table: row.get(0),
            hierarchy: row.get(1),
            sharing: row.get(2),
            previous_owner: row.get(3),
            adopted_at: row.get(4),
            adopted_by: row.get(5),
            write_permission: row.get(6),
        }
    }
}

/// A dropped table's oid prints as a bare number: its name as adopted, and
/// that it was dropped, instead (found by a review: `tenantry table list`
/// showed `18323`).
const TABLE_COLUMNS: &str =
    "CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = table_id::oid) THEN table_id::text
          ELSE format('%s (dropped, oid %s)', coalesce(adopted_as, '?'), table_id::oid) END,
     hierarchy, sharing, previous_owner::text, adopted_at, adopted_by::text, write_permission";

/// A rule an adopted table breaks, with the SQL that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableProblem {
    /// The table (or partition) concerned.
    pub table: String,
    /// The rule's short name: `rls`, `owner`, `policies`, `grants`, `indexes`, …
    pub rule: String,
    /// What is wrong.
    pub problem: String,
    /// SQL that fixes it.
    pub fix: String,
    /// How much it matters: whether `tenantry serve` starts over it.
    pub severity: ProblemSeverity,
}

/// How much a finding of the doctor matters, as `tenantry.table_problems()`
/// decides it (`repeatable/10_tables.sql`: one list for the server, the CLI
/// and psql).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemSeverity {
    /// About the cluster's roles and parameters or tenantry's own objects
    /// (rules `login_roles`, `parameter_grants`, `own_grants`): `serve`
    /// refuses to start, whatever its flags.
    Critical,
    /// An isolation rule of a table: `serve` refuses to start unless
    /// `--allow-table-problems`.
    Error,
    /// Breaks no isolation of the server's (a dropped adopted table, a
    /// `tenant_id` default gone, a policy of the team's the doctor cannot
    /// judge, …): served, with a warning.
    Warning,
}

impl ProblemSeverity {
    /// The database's word for it; an unknown word (a newer database's) or
    /// none (a database before migration 0056) is an [`ProblemSeverity::Error`]:
    /// refused rather than passed.
    fn from_sql(word: &str) -> Self {
        match word {
            "critical" => ProblemSeverity::Critical,
            "warning" => ProblemSeverity::Warning,
            _ => ProblemSeverity::Error,
        }
    }
}

impl TableProblem {
    /// A row of `tenantry.table_problems` (table_name, rule, problem, fix, severity).
    fn from_row(r: &Row) -> Self {
        TableProblem {
            table: r.get(0),
            rule: r.get(1),
            problem: r.get(2),
            fix: r.get(3),
            severity: ProblemSeverity::from_sql(r.get::<_, Option<&str>>(4).unwrap_or("error")),
        }
    }

    /// Whether the server refuses to start on it (unless
    /// `--allow-table-problems` for an [`ProblemSeverity::Error`]): every finding
    /// but a [`ProblemSeverity::Warning`]. The server warns instead (an outside
    /// review: a routine `DROP TABLE` of an adopted table stopped every
    /// restart).
    pub fn blocks_serving(&self) -> bool {
        self.severity != ProblemSeverity::Warning
    }

    /// Whether it is about the cluster's roles and parameters, or tenantry's
    /// own objects, rather than a table of the team's
    /// ([`ProblemSeverity::Critical`]): rule `login_roles` (a login acting for
    /// tenants can become one of PostgreSQL's built-in roles that reach past
    /// tenantry's grants, such as `pg_read_all_data`, or one of tenantry's
    /// roles has BYPASSRLS), rule `parameter_grants` (a role such a login can
    /// become may set the parameter the tenant context lives in, or
    /// `tenantry_owner` may not) and rule `own_grants` (an owner or a
    /// privilege of tenantry's own objects changed since migrate, such as a
    /// grant on the context signing keys) and rule `server_roles` (a
    /// membership tenantry's roles are made with was revoked, such as
    /// `tenantry_server`'s of `tenantry_logger`). `tenantry serve` refuses to start
    /// on one whatever its flags.
    pub fn is_cluster_problem(&self) -> bool {
        self.severity == ProblemSeverity::Critical
    }
}

/// `<table> [<rule>]: <problem>` and, on the next line, `    fix: <SQL>`, as
/// `tenantry doctor` prints it and `tenantry serve` refuses with it.
impl std::fmt::Display for TableProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}]: {}\n    fix: {}",
            self.table, self.rule, self.problem, self.fix
        )
    }
}

/// Who owns rows that are already in the table without a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExistingRows {
    /// The table must have no such rows (adoption is refused otherwise).
    Refuse,
    /// All of them belong to this tenant.
    Tenant(TenantId),
    /// An SQL expression over the row's columns that yields the tenant id, e.g.
    /// `(SELECT tenant FROM accounts a WHERE a.id = account_id)`.
    Expression(String),
}

/// How to adopt a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptOptions {
    /// Ancestors reach their descendants' rows. `None` (the default) keeps
    /// what an adopted table has; a table not adopted yet gets `true`.
    pub hierarchy: Option<bool>,
    /// Tenants may share single rows read-only with other tenants
    /// (`tenantry.share_row`, read through `tenantry.rows_shared_with_me`);
    /// the table needs a primary key `(tenant_id, <one column>)`. `None`
    /// (the default) keeps what an adopted table has; a table not adopted
    /// yet gets `false`. `Some(false)` on a table that shares revokes every
    /// share.
    pub sharing: Option<bool>,
    /// The permission (defined with `tenantry.define_permission`) a caller
    /// needs to insert, update or delete rows: a key's role or a member's
    /// roles must grant it. `None` (the default) keeps what an adopted table
    /// has (a table not adopted yet: none needed); `Some("")` removes it.
    pub write_permission: Option<String>,
    /// Rows already in the table without a tenant.
    pub existing_rows: ExistingRows,
    /// Pages per committed batch of the backfill (default 1000, about 8 MB).
    pub pages_per_batch: u32,
}

impl Default for AdoptOptions {
    fn default() -> Self {
        Self {
            hierarchy: None,
            sharing: None,
            write_permission: None,
            existing_rows: ExistingRows::Refuse,
            pages_per_batch: 1000,
        }
    }
}

/// Where a batched backfill is; passed to the caller's progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackfillProgress {
    /// Pages done, of all leaf tables.
    pub pages_done: u64,
    /// Pages in all leaf tables when the backfill started.
    pub pages_total: u64,
    /// Rows given a tenant so far.
    pub rows: u64,
}

/// Why adopting, releasing or checking tables failed: the database's refusal
/// with its rule (message), the problems found (detail) and the fix (hint).
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The database refused; nothing was changed by the refused step.
    #[error("{message}{}{}", detail.as_deref().map(|d| format!("\n{d}")).unwrap_or_default(), hint.as_deref().map(|h| format!("\nhint: {h}")).unwrap_or_default())]
    Refused {
        /// SQLSTATE (`TN422` for a rule, `TN403` for a caller who may not, …).
        code: String,
        /// The rule that was broken.
        message: String,
        /// The problems found, one per line, when there are several.
        detail: Option<String>,
        /// The SQL that fixes it, when there is one.
        hint: Option<String>,
    },
    /// The connection failed.
    #[error("database: {0}")]
    Database(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for TableError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => TableError::Refused {
                code: db.code().code().to_owned(),
                message: db.message().to_owned(),
                detail: db.detail().map(str::to_owned),
                hint: db.hint().map(str::to_owned).or_else(|| {
                    // A table named as SQL would not find it (found by a
                    // review: `Invoices`, `app.Line Items`).
                    matches!(db.code().code(), "42P01" | "42602").then(|| {
                        "name the table as SQL does: with its schema when it is not on the search path (app.invoices), in double quotes when it has capitals, spaces or other characters (app.\"Line Items\"; from a shell: 'app.\"Line Items\"')".to_owned()
                    })
                }),
            },
            None => TableError::Database(e),
        }
    }
}

/// Adopts several tables with the same options in one transaction
/// (`tenantry.adopt_tables`), the rules between them checked once all are:
/// how tables linked by a foreign key switch their hierarchy option
/// together (one at a time, each is refused for the other). Their rows must
/// have their tenants already: a backfill is [`adopt_table`]'s, table by
/// table (refused here, TN422, before anything changes).
pub async fn adopt_tables(
    client: &Client,
    tables: &[&str],
    options: &AdoptOptions,
) -> Result<Vec<TenantTable>, TableError> {
    if !matches!(options.existing_rows, ExistingRows::Refuse) {
        return Err(TableError::Refused {
            code: "TN422".to_owned(),
            message: "adopt_tables gives existing rows no tenant".to_owned(),
            detail: None,
            hint: Some(
                "adopt each table whose rows need a tenant alone first (adopt_table)".to_owned(),
            ),
        });
    }
    let rows = client
        .query(
            &format!(
                "SELECT {TABLE_COLUMNS} FROM tenantry.adopt_tables($1::text[]::regclass[], hierarchy => $2, sharing => $3, write_permission => $4)"
            ),
            &[&tables, &options.hierarchy, &options.sharing, &options.write_permission],
        )
        .await?;
    Ok(rows.iter().map(TenantTable::from_row).collect())
}

/// Adopts `table` (a name as SQL would resolve it, e.g. `invoices` or
/// `app.invoices`). Rows without a tenant are given one in committed batches
/// first (see [`ExistingRows`]), so the adoption itself only takes a short lock;
/// `progress` hears about each batch.
pub async fn adopt_table(
    client: &Client,
    table: &str,
    options: &AdoptOptions,
    mut progress: impl FnMut(BackfillProgress),
) -> Result<TenantTable, TableError> {
    let (tenant, expression) = match &options.existing_rows {
        ExistingRows::Refuse => (None, None),
        ExistingRows::Tenant(t) => (Some(*t.as_uuid()), None),
        ExistingRows::Expression(e) => (None, Some(e.as_str())),
    };
    let backfilling = tenant.is_some() || expression.is_some();
    let before = TableBefore::read(client, table).await;
    // What adopt_table would refuse at its end, found before the steps below
    // change anything (a new user's review: a refusal left the tenant key,
    // or a backfilled tenant_id, behind). Not for a table adopted already:
    // no step below runs for it before adopt_table, which is one
    // transaction, and a table in use takes no lock for a check. A backfill's
    // first step checks it itself (`tenantry.backfill_prepare`).
    if !backfilling && before.as_ref().is_some_and(|b| !b.adopted) {
        refuse_before_changing(client, table, options).await?;
    }
    // Whether the key to tenants was validated here, before adopt_table:
    // its refusal then takes the key back.
    let key_validated_first = if backfilling {
        // Refusals that depend on the options come before anything changes.
        client
            .execute(
                "SELECT tenantry.check_adopt_options($1::text::regclass, $2, $3)",
                &[&table, &options.sharing, &options.write_permission],
            )
            .await?;
        backfill(
            client,
            table,
            tenant,
            expression,
            options.pages_per_batch,
            options.hierarchy,
            &mut progress,
        )
        .await?;
        false
    } else {
        validate_tenant_key_first(client, table, options).await?
    };
    let row = match client
        .query_one(
            &format!(
                "SELECT {TABLE_COLUMNS} FROM tenantry.adopt_table($1::text::regclass, hierarchy => $2, sharing => $3, write_permission => $4)"
            ),
            &[&table, &options.hierarchy, &options.sharing, &options.write_permission],
        )
        .await
    {
        Ok(row) => row,
        Err(e) => {
            let e = TableError::from(e);
            // A rule refused what the check above did not foresee: the key
            // to tenants validated just before goes again, and the table
            // goes back to its owner (a backfill's rows keep their tenants).
            // Not for a collision or a lost connection, which a retry
            // finishes.
            let refused = matches!(&e, TableError::Refused { code, .. } if code == "TN422");
            if let Some(before) = before.filter(|b| refused && !b.adopted && key_validated_first) {
                before.give_back(client, table).await?;
            }
            return Err(e);
        }
    };
    // (A migration role that is no superuser validates the key to tenants
    // as tenantry_owner, which gives the table back to its owner after:
    // adopt_table records that owner for release_table.)
    Ok(TenantTable::from_row(&row))
}

/// What a table was before [`adopt_table`] began: its name as SQL quotes
/// it, whether it is adopted, its owner, whether it had tenantry's key to
/// tenants.
struct TableBefore {
    quoted: String,
    adopted: bool,
    owner: String,
    had_key: bool,
}

impl TableBefore {
    /// `None` for what this cannot read (no such table, a role that may not
    /// adopt): that is `tenantry.adopt_table`'s to refuse, in its words.
    async fn read(client: &Client, table: &str) -> Option<Self> {
        let row = client
            .query_opt(
                "SELECT c.oid::regclass::text,
                        EXISTS (SELECT 1 FROM tenantry.tenant_tables r WHERE r.table_id = c.oid),
                        c.relowner::regrole::text,
                        EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                                 WHERE k.conrelid = c.oid AND k.conname = 'tenantry_tenant_id_fkey')
                   FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1::text)",
                &[&table],
            )
            .await
            .ok()??;
        Some(TableBefore {
            quoted: row.get(0),
            adopted: row.get(1),
            owner: row.get(2),
            had_key: row.get(3),
        })
    }

    /// Takes back the key to tenants this run added and gives the table
    /// back to its owner (a migration role that is no superuser handed it
    /// to tenantry_owner to validate the key). The schema's USAGE grant to
    /// tenantry_owner, which the key also needed, stays.
    async fn give_back(&self, client: &Client, table: &str) -> Result<(), TableError> {
        // The owner first, while the key's comment still names it; then its
        // constraints go IF EXISTS; a table already with its owner is left
        // as it is by ALTER ... OWNER TO.
        take_back_preparation(client, table, self.had_key).await?;
        client
            .batch_execute(&format!(
                "ALTER TABLE {} OWNER TO {}",
                self.quoted, self.owner
            ))
            .await?;
        Ok(())
    }
}

/// What `tenantry.adopt_table` would refuse at its end, found before
/// [`adopt_table`]'s preparing steps (a validated key to tenants, a batched
/// backfill) change anything, in the doctor's words
/// (`tenantry.refuse_before_adopting`: the table as adoption would leave it,
/// tried in a subtransaction that is rolled back).
async fn refuse_before_changing(
    client: &Client,
    table: &str,
    options: &AdoptOptions,
) -> Result<(), TableError> {
    // Its own refusals first, in its words (a view, an unlogged table, ...).
    client
        .execute(
            "SELECT tenantry.check_adoptable($1::text::regclass)",
            &[&table],
        )
        .await?;
    client
        .execute(
            "SELECT tenantry.refuse_before_adopting($1::text::regclass, $2)",
            &[&table, &options.hierarchy],
        )
        .await?;
    Ok(())
}

/// A plain table that already names its tenants (`tenant_id uuid`), not
/// adopted yet and without a validated key to `tenantry.tenants`: the key is
/// added NOT VALID and validated in transactions of their own first, as a
/// backfill does, so that adopt_table's transaction takes no lock on
/// `tenantry.tenants` while it reads the whole table (which held back every
/// tenant's creation for as long). Returns whether it did this; a refusal
/// leaves the table as it was.
async fn validate_tenant_key_first(
    client: &Client,
    table: &str,
    options: &AdoptOptions,
) -> Result<bool, TableError> {
    // Anything this check cannot read (no such table, a role that may not
    // adopt) is adopt_table's to refuse, in its words.
    let Ok(Some(row)) = client
        .query_opt(
            "SELECT c.relowner::regrole::text,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                             WHERE k.conrelid = c.oid AND k.conname = 'tenantry_tenant_id_fkey')
               FROM pg_catalog.pg_class c
              WHERE c.oid = pg_catalog.to_regclass($1::text) AND c.relkind = 'r'
                AND NOT EXISTS (SELECT 1 FROM tenantry.tenant_tables r WHERE r.table_id = c.oid)
                AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
                               AND a.atttypid = 'uuid'::regtype)
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                                 WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.convalidated
                                   AND k.confrelid = 'tenantry.tenants'::regclass)",
            &[&table],
        )
        .await
    else {
        return Ok(false);
    };
    let had_key: bool = row.get(1);
    // Refusals first: nothing changes for a table adopt_table would refuse.
    client
        .execute(
            "SELECT tenantry.check_adopt_options($1::text::regclass, $2, $3)",
            &[&table, &options.sharing, &options.write_permission],
        )
        .await?;
    client
        .execute(
            "SELECT tenantry.check_adoptable($1::text::regclass)",
            &[&table],
        )
        .await?;
    client
        .execute(
            "SELECT tenantry.ensure_tenant_fk($1::text::regclass, false)",
            &[&table],
        )
        .await?;
    // (A caller that is no superuser validates as tenantry_owner, the
    // table's owner from here: handed over in a transaction of its own, so
    // that the validation's scan holds no lock that stops reads and writes.)
    let validated = match client
        .execute(
            "SELECT tenantry.hand_over_for_validation($1::text::regclass)",
            &[&table],
        )
        .await
    {
        Ok(_) => {
            client
                .execute(
                    "SELECT tenantry.ensure_tenant_fk($1::text::regclass, true)",
                    &[&table],
                )
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = validated {
        take_back_preparation(client, table, had_key).await?;
        return Err(e.into());
    }
    Ok(true)
}

/// Takes back what preparing an adoption did to a table before a refusal:
/// the table goes back to the owner `hand_over_for_validation` took it from
/// (while its key's comment still names that owner), then the key to
/// tenants goes when this run added it.
async fn take_back_preparation(
    client: &Client,
    table: &str,
    had_key: bool,
) -> Result<(), TableError> {
    client
        .execute(
            "SELECT tenantry.give_back_handover($1::text::regclass)",
            &[&table],
        )
        .await?;
    if !had_key {
        undo_backfill_prepare(client, table, true).await?;
    }
    Ok(())
}

/// Takes back what step 1 of a backfill added (the constraints, and
/// tenant_id when it was not there before), before any row was given a tenant.
async fn undo_backfill_prepare(
    client: &Client,
    table: &str,
    had_tenant_column: bool,
) -> Result<(), TableError> {
    client
        .execute(
            "SELECT tenantry.backfill_undo_prepare($1::text::regclass, $2)",
            &[&table, &!had_tenant_column],
        )
        .await?;
    Ok(())
}

async fn backfill(
    client: &Client,
    table: &str,
    tenant: Option<uuid::Uuid>,
    expression: Option<&str>,
    pages_per_batch: u32,
    hierarchy: Option<bool>,
    progress: &mut impl FnMut(BackfillProgress),
) -> Result<(), TableError> {
    // Whether tenant_id is there before step 1 adds it: a tenant that does
    // not exist is found by the first batch, and undoing step 1 then leaves
    // the table as it was.
    // A backfill resumed after an earlier run keeps what that run made.
    let before = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                             WHERE a.attrelid = $1::text::regclass AND a.attname = 'tenant_id' AND NOT a.attisdropped),
                    EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                             WHERE k.conrelid = $1::text::regclass AND k.conname = 'tenantry_tenant_id_not_null')",
            &[&table],
        )
        .await?;
    let (had_tenant_column, prepared_before): (bool, bool) = (before.get(0), before.get(1));
    // Step 1: refusals first, then tenant_id and its NOT VALID constraints.
    let leaves: Vec<(String, i64)> = client
        .query(
            "SELECT leaf::text, pages FROM tenantry.backfill_prepare($1::text::regclass, $2)",
            &[&table, &hierarchy],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut state = BackfillProgress {
        pages_done: 0,
        pages_total: leaves.iter().map(|(_, p)| p.unsigned_abs()).sum(),
        rows: 0,
    };
    progress(state);
    // Step 2: one short transaction per batch of pages.
    let batch = i64::from(pages_per_batch.max(1));
    let statement = client
        .prepare_typed(
            "SELECT tenantry.backfill_tenant_id_pages($1::text::regclass, $2, $3, $4, $5)",
            &[Type::TEXT, Type::INT8, Type::INT4, Type::UUID, Type::TEXT],
        )
        .await?;
    for (leaf, pages) in &leaves {
        let mut first = 0i64;
        while first < *pages {
            let rows: i64 = match client
                .query_one(
                    &statement,
                    &[leaf, &first, &(batch as i32), &tenant, &expression],
                )
                .await
            {
                Ok(row) => row.get(0),
                Err(e) => {
                    let refused = TableError::from(e);
                    // Any refused batch of a run that made step 1 takes it
                    // back (`tenantry.backfill_refused`: its constraints would
                    // stop the team's application from writing); the rows
                    // given a tenant keep it, and running again resumes.
                    if let (
                        false,
                        TableError::Refused {
                            code,
                            message,
                            hint,
                            ..
                        },
                    ) = (prepared_before, &refused)
                    {
                        let hint: String = client
                            .query_one(
                                "SELECT tenantry.backfill_refused($1::text::regclass, $2, $3, $4, $5)",
                                &[
                                    &table,
                                    &!had_tenant_column,
                                    &tenant.is_some(),
                                    &i64::try_from(state.rows).unwrap_or(i64::MAX),
                                    hint,
                                ],
                            )
                            .await?
                            .get(0);
                        return Err(TableError::Refused {
                            code: code.clone(),
                            message: message.clone(),
                            detail: None,
                            hint: Some(hint),
                        });
                    }
                    return Err(refused);
                }
            };
            let step = batch.min(pages - first);
            first += batch;
            state.pages_done += step.unsigned_abs();
            state.rows += rows.unsigned_abs();
            progress(state);
        }
    }
    // Step 3: validate without blocking writes; an index for the policy built
    // concurrently (not possible on a partitioned table: adopt_table builds it).
    // A caller that is no superuser validates as tenantry_owner, which must
    // own the table: handed over first, in a transaction of its own, so that
    // the validation's scan holds no lock that stops reads and writes.
    client
        .execute(
            "SELECT tenantry.hand_over_for_validation($1::text::regclass)",
            &[&table],
        )
        .await?;
    client
        .execute(
            "SELECT tenantry.backfill_validate($1::text::regclass)",
            &[&table],
        )
        .await?;
    // On the operator's record: whose the rows became.
    client
        .execute(
            "SELECT tenantry.audit_backfill($1::text::regclass, $2, $3, $4)",
            &[
                &table,
                &tenant,
                &expression,
                &i64::try_from(state.rows).unwrap_or(i64::MAX),
            ],
        )
        .await?;
    let index_needed: Option<String> = client
        .query_one(
            "SELECT CASE WHEN c.relkind = 'r' AND NOT EXISTS (
                        SELECT 1 FROM pg_index i JOIN pg_attribute a
                          ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                         WHERE i.indrelid = c.oid AND a.attname = 'tenant_id')
                    THEN c.oid::regclass::text END
               FROM pg_class c WHERE c.oid = $1::text::regclass",
            &[&table],
        )
        .await?
        .get(0);
    if let Some(quoted) = index_needed {
        client
            .batch_execute(&format!(
                "CREATE INDEX CONCURRENTLY ON {quoted} (tenant_id)"
            ))
            .await?;
    }
    Ok(())
}

/// Releases an adopted table: tenantry's policy, trigger and grants go, RLS is
/// switched off and the previous owner gets it back; the rows and their
/// `tenant_id` stay.
pub async fn release_table(client: &Client, table: &str) -> Result<(), TableError> {
    client
        .execute(
            "SELECT tenantry.release_table($1::text::regclass)",
            &[&table],
        )
        .await?;
    Ok(())
}

/// [`release_table`] for several tables in one transaction of its own (call
/// it outside one of yours: it sends BEGIN and COMMIT), all or none: a
/// table another of them references goes after it, whatever the order given
/// (release_table refuses a table an adopted one still references; found by
/// a review: a chain took one command per table, in order). Tables whose
/// keys reference each other in a cycle are refused: drop one of the keys
/// first.
pub async fn release_tables(client: &Client, tables: &[String]) -> Result<(), TableError> {
    client.batch_execute("BEGIN").await?;
    let released = release_in_turn(client, tables).await;
    match released {
        Ok(()) => client.batch_execute("COMMIT").await?,
        Err(_) => client.batch_execute("ROLLBACK").await?,
    }
    released
}

async fn release_in_turn(client: &Client, tables: &[String]) -> Result<(), TableError> {
    let mut left: Vec<&String> = tables.iter().collect();
    while !left.is_empty() {
        let mut referenced = Vec::new();
        let mut refusal = None;
        for table in &left {
            client.batch_execute("SAVEPOINT release").await?;
            match release_table(client, table).await {
                Ok(()) => client.batch_execute("RELEASE SAVEPOINT release").await?,
                Err(e @ TableError::Refused { .. }) if is_referenced(&e) => {
                    client
                        .batch_execute("ROLLBACK TO SAVEPOINT release")
                        .await?;
                    referenced.push(*table);
                    refusal = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        if referenced.len() == left.len() {
            // Referenced by tables not among these: release_table's refusal.
            return Err(refusal.expect("a refusal for each table left"));
        }
        left = referenced;
    }
    Ok(())
}

/// release_table's refusal of a table an adopted table still references.
fn is_referenced(e: &TableError) -> bool {
    matches!(e, TableError::Refused { code, message, .. }
        if code == "TN409" && message.contains("adopted tables reference it"))
}

/// Changes an adopted table's shape (`ALTER TABLE <table> <change>`, with
/// the caller's rights) and records the same change as a tenant-schema step
/// for every schema tenant's table of it (`tenantry.alter_tenant_table`), in
/// one transaction. Returns the step's version, `None` when no schema
/// tenant's table of it exists to change; the step reaches the schemas
/// through [`crate::migrate::migrate_tenant_schemas`] (`tenantry migrate`).
/// As an operator (superuser or member of `tenantry_owner`).
pub async fn alter_tenant_table(
    client: &Client,
    table: &str,
    change: &str,
) -> Result<Option<i32>, TableError> {
    Ok(client
        .query_one(
            "SELECT tenantry.alter_tenant_table($1::text::regclass, $2)",
            &[&table, &change],
        )
        .await?
        .get(0))
}

/// Every adopted table, by name.
pub async fn tenant_tables(client: &Client) -> Result<Vec<TenantTable>, TableError> {
    Ok(client
        .query(
            &format!("SELECT {TABLE_COLUMNS} FROM tenantry.tenant_tables ORDER BY table_id::text"),
            &[],
        )
        .await?
        .iter()
        .map(TenantTable::from_row)
        .collect())
}

/// Serial columns of adopted tables whose sequence the app roles may use
/// (`tenantry.shared_sequences()`): every tenant can read how many rows all
/// tenants inserted and advance the sequence. No rule the doctor fails on,
/// but adoption said so only in a NOTICE, which migration tools do not show
/// (found by a review of migration tools): `tenantry doctor` prints each as a
/// note, rule `shared_sequence`, with the statements that make the column an
/// identity column.
pub async fn shared_sequences(client: &Client) -> Result<Vec<TableProblem>, TableError> {
    Ok(client
        .query(
            "SELECT table_name, column_name, sequence_name, fix FROM tenantry.shared_sequences()",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let (table, column, sequence): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            TableProblem {
                problem: format!(
                    "column {column:?} numbers its rows from {sequence}, which every tenant shares: \
                     any tenant can read how many rows all tenants inserted (pg_sequences.last_value) \
                     and advance it"
                ),
                fix: r.get(3),
                table,
                rule: "shared_sequence".into(),
                // (a note of the doctor's, not a finding)
                severity: ProblemSeverity::Warning,
            }
        })
        .collect())
}

/// The doctor: every rule an adopted table breaks, with its fix. Empty: all is well.
pub async fn table_problems(client: &Client) -> Result<Vec<TableProblem>, TableError> {
    Ok(table_problem_rows(client).await?)
}

/// [`table_problems`] with the database's error as it came, for callers
/// that tell errors apart as [`crate::DbError`] does.
pub(crate) async fn table_problem_rows(
    client: &Client,
) -> Result<Vec<TableProblem>, tokio_postgres::Error> {
    Ok(client
        .query_typed(
            // (severity read by name through the row's JSON: a database
            // before migration 0056 has no such column, and its doctor
            // still answers, each finding an error)
            "SELECT p.table_name, p.rule, p.problem, p.fix, to_jsonb(p) ->> 'severity'
               FROM tenantry.table_problems() p",
            &[],
        )
        .await?
        .iter()
        .map(TableProblem::from_row)
        .collect())
}
