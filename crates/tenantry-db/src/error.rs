//! The library's error type: what went wrong in terms a caller can act on (not found, conflict, quota exceeded, permission denied, forbidden, invalid, unavailable, contention).

use tokio_postgres::error::SqlState;

/// Errors of tenant-scoped and administrative operations.
///
/// A resource of another tenant is reported as [`DbError::NotFound`], exactly
/// like a missing one: the database gives no existence oracle, and neither do we.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The object does not exist or is not visible to the caller.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (duplicate, already
    /// revoked, cycle, ...). A row that would break a unique key or
    /// constraint names it ([`Conflict::constraint`]): tell your own keys
    /// apart by it (PostgreSQL's message does not name the key's columns
    /// under row level security).
    #[error("{0}")]
    Conflict(Conflict),
    /// A quota or limit would be exceeded (the tenant's, from its settings, or a
    /// person's sign-up limit); nothing was written.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The acting credential lacks a permission the operation needs: it cannot
    /// grant, assign or mint more than it holds itself.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller may not do this (no tenant context, tenant deleted, policy refused a write, ...).
    #[error("{0}")]
    Forbidden(String),
    /// The acting tenant is suspended (found so by the database, when it was
    /// suspended while the request ran): its data is kept, its requests refused.
    #[error("{0}")]
    TenantSuspended(String),
    /// The input is invalid; `field` names the offending field when known.
    #[error("{message}")]
    Invalid {
        /// The field at fault, e.g. `name` or `settings.max_resources`.
        field: Option<String>,
        /// What is wrong with it.
        message: String,
    },
    /// The database cannot be reached or is shutting down; retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The tenant's transactions already hold its share of the pool
    /// (`DatabaseConfig::max_connections_per_tenant`) and its next one waited
    /// in vain: this tenant's load, not the database's state; retrying later
    /// may succeed.
    #[error("tenant busy: {0}")]
    TenantBusy(String),
    /// The transaction collided with a concurrent one (deadlock, serialization
    /// failure, lock timeout, or a migration that changed a table after the
    /// connection had prepared a statement reading it) and was rolled back;
    /// running it again may succeed.
    #[error("transaction rolled back by a concurrent one: {0}")]
    Contention(String),
    /// Anything else: a bug or an unexpected database state. Details are for logs, not clients.
    #[error("internal database error: {0}")]
    Internal(String),
}

/// The words of a [`DbError::Conflict`], and the unique key or constraint a
/// row would have broken when that is the conflict.
///
/// ```no_run
/// # async fn demo(scope: &mut tenantry_db::TenantScope) -> Result<(), tenantry_db::DbError> {
/// use tenantry_db::DbError;
/// match scope.execute("INSERT INTO projects (name) VALUES ($1)", &[&"Apollo"]).await {
///     Err(DbError::Conflict(c)) if c.constraint() == Some("projects_tenant_id_name_key") => {
///         // 409 "a project of this name already exists"
///     }
///     other => { other?; }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    message: String,
    constraint: Option<String>,
    table: Option<String>,
    field: Option<String>,
}

impl Conflict {
    /// A conflict of the current state, in these words.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            constraint: None,
            table: None,
            field: None,
        }
    }

    /// What conflicts, in words for the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The unique or exclusion constraint (or unique index) the row would
    /// have broken, as the database names it (`projects_tenant_id_name_key`);
    /// `None` for a conflict of another kind. On a schema-isolated tenant the
    /// name is that of its own copy of the table, which PostgreSQL names by
    /// its default rules (`<table>_<columns>_key`, `<table>_pkey`) whatever
    /// the original's name, and on a partitioned table that of the partition's
    /// index: leave keys you match on to those default names, or match on
    /// [`Conflict::table`] as well. On a Citus cluster the name is the
    /// table's constraint's, not its shard's (`projects_pkey`, not
    /// `projects_pkey_102016`); there [`Conflict::table`] is `None` when the
    /// row was refused on a worker, whose error names no table. Citus
    /// shortens a name of 57 bytes or more with a hash before the shard's
    /// id: keep the names you match on shorter.
    pub fn constraint(&self) -> Option<&str> {
        self.constraint.as_deref()
    }

    /// The table of that constraint, without its schema (`projects`).
    pub fn table(&self) -> Option<&str> {
        self.table.as_deref()
    }

    /// The request's field the conflict is about, when tenantry names one
    /// (`Idempotency-Key`: a request with the same key is still running).
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::ops::Deref for Conflict {
    type Target = str;

    fn deref(&self) -> &str {
        &self.message
    }
}

impl From<String> for Conflict {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Conflict {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

impl From<Conflict> for String {
    fn from(conflict: Conflict) -> Self {
        conflict.message
    }
}

/// What a [`DbError::Contention`] says when a statement the connection had
/// prepared reads a table whose columns a migration changed since (`ALTER
/// TABLE … ADD COLUMN` under `SELECT *`: "cached plan must not change result
/// type"), or uses a type a migration dropped and made again ("cache lookup
/// failed for type"): PostgreSQL refuses such a statement on every later
/// run, so the pool forgets its prepared statements and the transaction's
/// next run prepares them again.
pub(crate) const STALE_STATEMENT: &str = "a table this transaction read changed (a migration) after the connection had prepared the statement; the statement is prepared again when the transaction runs again";

/// How a [`DbError::TenantBusy`] of the lane of credential checks the server
/// has not cached begins ([`BusyShare::Credentials`]).
pub(crate) const CREDENTIALS_BUSY: &str =
    "the checks of credentials the server has not cached hold connections,";

/// How a [`DbError::TenantBusy`] of a signed-in person's own lane begins
/// ([`BusyShare::Person`]).
pub(crate) const PERSON_BUSY: &str = "this person's requests outside a tenant hold connections,";

/// Whose share of the pool a [`DbError::TenantBusy`] found taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyShare {
    /// A tenant's (`DatabaseConfig::max_connections_per_tenant`).
    Tenant,
    /// The lane every credential the server has not cached is checked in.
    Credentials,
    /// A signed-in person's lane for their requests outside any tenant.
    Person,
}

impl DbError {
    /// Whose share of the pool a [`DbError::TenantBusy`] found taken (its
    /// answer can say who waits); `None` for any other error.
    pub fn busy_share(&self) -> Option<BusyShare> {
        match self {
            DbError::TenantBusy(m) if m.starts_with(CREDENTIALS_BUSY) => {
                Some(BusyShare::Credentials)
            }
            DbError::TenantBusy(m) if m.starts_with(PERSON_BUSY) => Some(BusyShare::Person),
            DbError::TenantBusy(_) => Some(BusyShare::Tenant),
            _ => None,
        }
    }

    /// Whether this is the refusal of a statement prepared before a
    /// migration changed what it returns ([`STALE_STATEMENT`]).
    pub(crate) fn is_stale_statement(&self) -> bool {
        matches!(self, DbError::Contention(m) if m.starts_with(STALE_STATEMENT))
    }

    /// A [`DbError::Conflict`] in these words.
    pub fn conflict(message: impl Into<String>) -> Self {
        DbError::Conflict(Conflict::new(message))
    }

    /// An [`DbError::Invalid`] for a named field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DbError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        classify(&err)
    }
}

/// The field limits the tables state as CHECK constraints, by constraint name:
/// the field a caller sent and what the limit is. The database is where the
/// limit holds (for the API, the CLI, the library and psql alike); this only
/// words its refusal.
const FIELD_LIMITS: &[(&str, &str, &str)] = &[
    (
        "roles_description_length",
        "description",
        "description must be at most 500 characters",
    ),
    (
        "api_keys_description_check",
        "description",
        "description must be at most 500 characters",
    ),
    (
        "tenant_members_display_name_check",
        "display_name",
        "display_name must be at most 200 characters",
    ),
    (
        "tenant_members_email_check",
        "email",
        "email must look like name@domain and be at most 320 characters",
    ),
    (
        "roles_name_check",
        "name",
        "role name must be 1 to 100 characters",
    ),
    (
        "tenants_name_check",
        "name",
        "name must be 1 to 200 characters",
    ),
    (
        "resources_name_check",
        "name",
        "name must be 1 to 1000 characters",
    ),
];

/// Whether a HINT is a field name (`name`, `settings.max_children`, an
/// unknown key as the caller spelt it: `settings.MaxResources`), as
/// tenantry's TN422 errors give one, rather than a sentence for a person
/// (which has spaces).
fn is_field_name(hint: &str) -> bool {
    !hint.is_empty() && hint.len() <= 200 && !hint.chars().any(char::is_whitespace)
}

/// The name in double quotes right after `lead` in `message`.
fn quoted_after<'a>(message: &'a str, lead: &str) -> Option<&'a str> {
    let rest = message.split_once(lead)?.1;
    rest.split_once('"').map(|(name, _)| name)
}

/// The field and words of one of tenantry's own CHECK constraints, by its
/// name, or by the name a Citus shard reports it under.
fn field_limit(constraint: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    let known = |name: &str| FIELD_LIMITS.iter().find(|(c, _, _)| *c == name);
    known(constraint).or_else(|| known(unsharded(constraint)?))
}

/// A table's or constraint's name as a Citus shard reports it
/// (`roles_name_check_102040`) without the shard's id: on the
/// cluster a refused description came back without its `field` (found
/// running the HTTP suite on Citus). `None` for a name without one.
fn unsharded(name: &str) -> Option<&str> {
    let (base, shard) = name.rsplit_once('_')?;
    (!base.is_empty() && shard.len() >= 6 && shard.bytes().all(|b| b.is_ascii_digit()))
        .then_some(base)
}

/// A table's and one of its constraints' names as an error gives them, read
/// from the message when the error carries no fields, without a Citus
/// shard's id. A shard's table and the constraints of it share the shard's
/// id (`projects_102016`, `projects_pkey_102016`), which tells a shard from
/// a table of that name; an error a coordinator relays from a worker
/// carries no fields at all (its CONTEXT says `while executing command on`),
/// so there the names read from its words lose a shard's id on their own
/// (a team's `409` on the cluster named `projects_pkey_102016`, and
/// [`Conflict::constraint`] was `None`). The third value says whether the
/// names were a shard's.
fn shard_names<'a>(
    table: Option<&'a str>,
    constraint: Option<&'a str>,
    relayed: bool,
) -> (Option<&'a str>, Option<&'a str>, bool) {
    let shard_id = |name: &'a str| unsharded(name).map(|base| &name[base.len()..]);
    let same_shard = table
        .and_then(shard_id)
        .is_some_and(|id| constraint.and_then(shard_id) == Some(id));
    if same_shard || relayed {
        let base = |name: &'a str| unsharded(name).unwrap_or(name);
        (table.map(base), constraint.map(base), true)
    } else {
        (table, constraint, false)
    }
}

/// The table a foreign-key refusal names (its field, or the name after
/// `lead` in its words), without a shard's id, and whether it was a shard's.
fn foreign_key_table<'a>(
    db: &'a tokio_postgres::error::DbError,
    message: &'a str,
    lead: &str,
) -> (Option<&'a str>, bool) {
    let (table, _, sharded) = shard_names(
        db.table().or_else(|| quoted_after(message, lead)),
        db.constraint()
            .or_else(|| quoted_after(message, "foreign key constraint \"")),
        relayed_by_citus(db),
    );
    (table, sharded)
}

/// Whether an error is a worker's, relayed by a Citus coordinator without
/// its fields.
fn relayed_by_citus(db: &tokio_postgres::error::DbError) -> bool {
    db.where_()
        .is_some_and(|w| w.contains("while executing command on "))
}

/// The column a CHECK constraint PostgreSQL named by its default rule is
/// about: `<table>_<column>_check`, with a number after it when the name was
/// taken (`invoices_amount_check1`). A CHECK over several columns is
/// `<table>_check` and names none. PostgreSQL reports no column for a CHECK violation,
/// so a team's `CHECK (amount > 0)` answered 422 naming no field. A
/// constraint named by hand names none either (its name says nothing sure).
fn checked_column<'a>(table: &str, constraint: &'a str) -> Option<&'a str> {
    let rest = constraint.strip_prefix(table)?.strip_prefix('_')?;
    let column = rest
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .strip_suffix("_check")?;
    (!column.is_empty()).then_some(column)
}

/// The columns of a key violation's DETAIL (`Key (tenant_id, name)=(…)
/// already exists.`), but `tenant_id`, which every tenant table's keys lead
/// with: `name`, or `a and b`. PostgreSQL's message names the constraint
/// instead, a name of the schema's that an API's client has no use for.
/// None when the detail is not in this form (another `lc_messages`).
fn key_columns(detail: &str) -> Option<String> {
    let columns = detail.strip_prefix("Key (")?.split(")=(").next()?;
    let named: Vec<&str> = columns
        .split(", ")
        .filter(|c| *c != "tenant_id" && !c.is_empty())
        .collect();
    (!named.is_empty() && named.len() < 8).then(|| named.join(" and "))
}

/// The referenced table of a foreign-key violation's DETAIL (`Key (…)=(…)
/// is not present in table "projects".`).
fn referenced_table(detail: &str) -> Option<&str> {
    detail
        .split_once("is not present in table \"")?
        .1
        .strip_suffix("\".")
}

/// A driver error in a person's words: the database's SQLSTATE and message
/// (`42501: permission denied for function f`), or the driver's own text
/// (its display repeats "db error" and then the cause, which error chains
/// print again).
pub fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => with_sources(err),
    }
}

/// An error and every error beneath it ("error connecting to server:
/// Connection refused (os error 111)"): the driver's own message alone does
/// not say why.
pub fn with_sources(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Maps a driver error to a [`DbError`] by SQLSTATE (tenantry's own `TNxxx` codes first).
pub(crate) fn classify(err: &tokio_postgres::Error) -> DbError {
    {
        let Some(db) = err.as_db_error() else {
            // Closed connections and socket errors ("error connecting to server",
            // "error communicating with the server": an io::Error underneath) mean the
            // database is out of reach, not a bug: 503, never 500.
            let io = std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>());
            // TLS that fails (a certificate refused, a handshake broken off)
            // leaves the database out of reach the same way.
            let text = err.to_string();
            if err.is_closed() || io || text.contains("connection") || text.contains("TLS") {
                return DbError::Unavailable(with_sources(err));
            }
            return DbError::Internal(with_sources(err));
        };
        let message = db.message().to_owned();
        // tenantry's TN422 errors name the field in their HINT; a hint that
        // is a sentence (advice for a person at psql) names none.
        let field = db.hint().filter(|h| is_field_name(h)).map(str::to_owned);
        match db.code().code() {
            "TN404" => DbError::NotFound(message),
            // A server connection whose session is no longer the server's own
            // (assert_clean_session): it is closed, the caller retries.
            "TN503" => DbError::Unavailable(message),
            // With its DETAIL, which says how to resolve it (a table to give
            // a key to): the CLI and the API showed only the message, so the
            // fix stayed in what psql alone prints (a schema review).
            "TN409" => DbError::Conflict(Conflict {
                field,
                ..Conflict::new(match db.detail() {
                    Some(detail) => format!("{}. {detail}", message.trim_end_matches('.')),
                    None => message,
                })
            }),
            "TN429" => DbError::QuotaExceeded(message),
            "TN403" if db.hint() == Some("tenant_suspended") => DbError::TenantSuspended(message),
            "TN403" => DbError::Forbidden(message),
            // The caller lacks a permission the operation needs (authorize()).
            "TN401" => DbError::PermissionDenied(message),
            "TN422" => DbError::Invalid { field, message },
            _ => match db.code() {
                // Under row level security PostgreSQL leaves the key's
                // columns and values out of DETAIL; the constraint's name
                // (in the message) is the schema's, no use to an API's client.
                c if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::EXCLUSION_VIOLATION => {
                    let relayed = relayed_by_citus(db);
                    let constraint = db.constraint().or_else(|| {
                        quoted_after(&message, "unique constraint \"")
                            .or_else(|| quoted_after(&message, "exclusion constraint \""))
                    });
                    let (table, constraint, sharded) = shard_names(db.table(), constraint, relayed);
                    DbError::Conflict(Conflict {
                        message: match (table, db.detail().and_then(key_columns)) {
                            (Some(table), Some(columns)) => {
                                format!("a row of {table} with this {columns} already exists")
                            }
                            (Some(table), None) => {
                                format!("a row of {table} with the same key already exists")
                            }
                            // A worker's error names no table: said without
                            // the shard's names.
                            (None, Some(columns)) if sharded => {
                                format!("a row with this {columns} already exists")
                            }
                            (None, None) if sharded => {
                                "a row with the same key already exists".into()
                            }
                            _ => message.clone(),
                        },
                        constraint: constraint.map(str::to_owned),
                        table: table.map(str::to_owned),
                        field: None,
                    })
                }
                // A statement the connection had prepared is gone (DEALLOCATE
                // by other SQL on it): the connection is closed, the caller retries.
                c if *c == SqlState::INVALID_SQL_STATEMENT_NAME => DbError::Unavailable(message),
                // A write an adopted table's write permission refused (its
                // write policy's check, tenantry.write_permission_refused in
                // 10_tables.sql, names the policy): the caller lacks a
                // permission, as for tenantry's own tables.
                c if *c == SqlState::INSUFFICIENT_PRIVILEGE
                    && message.contains("\"tenantry_write_permission_") =>
                {
                    DbError::PermissionDenied(message)
                }
                // tenantry's own function refused a parameter it keeps its
                // state in (tenantry_owner's GRANT SET ON PARAMETER revoked
                // after install; the doctor's rule parameter_grants): the
                // server is misconfigured, not the client refused. SQL of
                // the caller's own setting one stays a refusal.
                c if *c == SqlState::INSUFFICIENT_PRIVILEGE
                    && message.starts_with("permission denied to set parameter")
                    && db
                        .where_()
                        .is_some_and(|w| w.contains("PL/pgSQL function tenantry.")) =>
                {
                    tracing::error!(
                        error = %message,
                        "tenantry_owner may not set a parameter tenantry needs: run `tenantry doctor`"
                    );
                    DbError::Unavailable(message)
                }
                // PostgreSQL reports EACCES, EPERM and EROFS on its own files
                // as 42501 too ("could not open file \"base/…\": Read-only
                // file system"): storage trouble, not a refusal of the
                // caller (a resilience review: a filesystem remounted
                // read-only answered 403 with the data file's path).
                c if *c == SqlState::INSUFFICIENT_PRIVILEGE
                    && message.starts_with("could not ") =>
                {
                    tracing::error!(error = %message, "the database cannot use its own files");
                    DbError::Unavailable(message)
                }
                c if *c == SqlState::INSUFFICIENT_PRIVILEGE => DbError::Forbidden(message),
                // A row still referenced (ON DELETE RESTRICT / NO ACTION) is
                // a conflict with the rows that reference it; a reference to
                // a row that is not there (or is another tenant's) is not found.
                c if *c == SqlState::FOREIGN_KEY_VIOLATION
                    && message.starts_with("update or delete on table") =>
                {
                    let (referencing, _) = foreign_key_table(db, &message, "\" on table \"");
                    DbError::conflict(match referencing {
                        Some(referencing) => {
                            format!("the row is still named by rows of {referencing}")
                        }
                        None => message,
                    })
                }
                c if *c == SqlState::FOREIGN_KEY_VIOLATION => {
                    let (table, sharded) =
                        foreign_key_table(db, &message, "insert or update on table \"");
                    // The referenced table's shard has an id of its own.
                    let referenced =
                        db.detail()
                            .and_then(referenced_table)
                            .map(|r| match sharded {
                                true => unsharded(r).unwrap_or(r),
                                false => r,
                            });
                    DbError::NotFound(match (table, db.detail().and_then(key_columns), referenced) {
                        (Some(table), Some(columns), Some(referenced)) => format!(
                            "the row of {referenced} that this row of {table} names by its {columns} was not found"
                        ),
                        (Some(table), None, Some(referenced)) => format!(
                            "the row of {referenced} that this row of {table} names was not found"
                        ),
                        _ => message,
                    })
                }
                c if *c == SqlState::CHECK_VIOLATION => {
                    // Citus relays a shard's error without its table and
                    // constraint fields: then they are read from its words
                    // (English for the server's login, migration 0057).
                    let constraint = db
                        .constraint()
                        .or_else(|| quoted_after(&message, "check constraint \""));
                    let table = db
                        .table()
                        .or_else(|| quoted_after(&message, "for relation \""));
                    match constraint.and_then(field_limit) {
                        Some((_, field, limit)) => DbError::invalid(*field, *limit),
                        None => DbError::Invalid {
                            field: db
                                .column()
                                .or_else(|| checked_column(table?, constraint?))
                                .or_else(|| {
                                    checked_column(unsharded(table?)?, unsharded(constraint?)?)
                                })
                                .map(str::to_owned),
                            message: message.clone(),
                        },
                    }
                }
                // PostgreSQL's text cannot hold U+0000 ("invalid byte
                // sequence for encoding UTF8: 0x00", "unsupported Unicode
                // escape sequence" from jsonb): said in the caller's terms.
                c if (*c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                    || *c == SqlState::UNTRANSLATABLE_CHARACTER)
                    && (message.contains("0x00") || message.contains("Unicode escape")) =>
                {
                    DbError::Invalid {
                        field: db.column().map(str::to_owned),
                        message: "text may not contain the NUL character (\\u0000)".into(),
                    }
                }
                // A value beyond what PostgreSQL can hold (54000: a text over
                // 1 GB, an index row too wide; 54011/54023: too many columns
                // or arguments): the caller's input, not a fault of the
                // server's (found by a concurrency review: a row's size
                // overflowing gave a 500). Not 54001 (stack depth), which a
                // server's own recursion reaches.
                c if matches!(c.code(), "54000" | "54011" | "54023") => DbError::Invalid {
                    field: db.column().map(str::to_owned),
                    message: format!("a value is beyond what the database can store: {message}"),
                },
                c if *c == SqlState::NOT_NULL_VIOLATION || c.code().starts_with("22") => {
                    DbError::Invalid {
                        field: db.column().map(str::to_owned),
                        message,
                    }
                }
                c if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::LOCK_NOT_AVAILABLE =>
                {
                    DbError::Contention(message)
                }
                // A prepared statement whose columns a migration changed
                // (plancache.c; its routine's name, unlike the message, is
                // never translated): nothing of it ran, and it would be
                // refused on every run until prepared again.
                c if *c == SqlState::FEATURE_NOT_SUPPORTED
                    && db.routine() == Some("RevalidateCachedQuery") =>
                {
                    DbError::Contention(format!("{STALE_STATEMENT} ({message})"))
                }
                // A statement prepared with a type a migration dropped since
                // (an enum or domain re-created to change its values: the
                // new one has another oid), refused at its next Bind, before
                // anything of it ran; internal errors' words are never
                // translated (its context names the Bind's parameter). Not
                // from inside a function: a
                // PL/pgSQL function's variable of such a type fails on every
                // call in the sessions that ran it before, whatever the pool
                // prepares, and retrying it only emptied every connection's
                // statements (found by a verification review).
                c if *c == SqlState::INTERNAL_ERROR
                    && message.starts_with("cache lookup failed for type ")
                    && !db.where_().is_some_and(|w| {
                        w.lines().any(|l| {
                            l.starts_with("PL/pgSQL function") || l.starts_with("SQL function")
                        })
                    }) =>
                {
                    DbError::Contention(format!("{STALE_STATEMENT} ({message})"))
                }
                // A statement cancelled (statement_timeout, or an operator's
                // pg_cancel_backend) and a session ended for idling in its
                // transaction (idle_in_transaction_session_timeout): the
                // database could not serve in time, nothing was written.
                // So is a database that refuses the login (28: a rotated
                // password, pg_hba), is gone (3D000), is out of resources (53:
                // disk, memory, connection slots) or is read-only (25006: a
                // standby after a failover, or sessions defaulted read-only).
                // Also class 58, the database's system errors (a file it
                // lost or cannot read: I/O errors): trouble of the service,
                // said as such, not an internal error of the request.
                c if c.code().starts_with("08")
                    || c.code().starts_with("58")
                    || c.code().starts_with("57P")
                    || c.code().starts_with("28")
                    || c.code().starts_with("3D")
                    || c.code().starts_with("53")
                    || *c == SqlState::READ_ONLY_SQL_TRANSACTION
                    || *c == SqlState::QUERY_CANCELED
                    || *c == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT =>
                {
                    // Out of disk or memory, or the database's own files
                    // failing: an operator must act, and a WARN like a
                    // restart's would not page anyone (a resilience review:
                    // a full disk gave 222 of them and nothing more).
                    // (53300, out of connection slots, is load.)
                    if (c.code().starts_with("53") && *c != SqlState::TOO_MANY_CONNECTIONS)
                        || c.code().starts_with("58")
                    {
                        tracing::error!(
                            code = c.code(),
                            error = %message,
                            "the database is out of disk or memory or cannot use its own files: writes fail until an operator acts"
                        );
                    }
                    DbError::Unavailable(message)
                }
                _ => DbError::Internal(describe(err)),
            },
        }
    }
}

impl From<deadpool::managed::PoolError<crate::session::SessionError>> for DbError {
    fn from(err: deadpool::managed::PoolError<crate::session::SessionError>) -> Self {
        match err {
            deadpool::managed::PoolError::Backend(crate::session::SessionError::Db(e)) => e.into(),
            // The session's own words, without the pool's "Error occurred
            // while creating a new object".
            deadpool::managed::PoolError::Backend(refused) => {
                DbError::Unavailable(refused.to_string())
            }
            other => DbError::Unavailable(with_sources(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_constraint_named_by_default_names_its_column() {
        assert_eq!(
            checked_column("invoices", "invoices_amount_check"),
            Some("amount")
        );
        assert_eq!(
            checked_column("invoices", "invoices_due_on_check2"),
            Some("due_on")
        );
        assert_eq!(checked_column("invoices", "amount_positive"), None);
        assert_eq!(checked_column("invoices", "invoices_check"), None);
        assert_eq!(checked_column("invoices", "invoices__check"), None);
        assert_eq!(checked_column("notes", "invoices_amount_check"), None);
    }

    #[test]
    fn a_constraint_reported_by_a_citus_shard_is_known_by_its_own_name() {
        assert_eq!(
            field_limit("roles_name_check_102040").map(|f| f.1),
            Some("name")
        );
        assert_eq!(field_limit("roles_name_check").map(|f| f.1), Some("name"));
        assert_eq!(field_limit("roles_name_check_12"), None);
        assert_eq!(unsharded("invoices_102008"), Some("invoices"));
        assert_eq!(
            unsharded("invoices_amount_check_102009"),
            Some("invoices_amount_check")
        );
        assert_eq!(unsharded("invoices"), None);
        let relayed =
            "new row for relation \"roles_102597\" violates check constraint \"roles_name_check\"";
        assert_eq!(
            quoted_after(relayed, "check constraint \""),
            Some("roles_name_check")
        );
        assert_eq!(
            quoted_after(relayed, "for relation \""),
            Some("roles_102597")
        );
        assert_eq!(unsharded("_102008"), None);
        assert_eq!(
            checked_column(
                unsharded("invoices_102008").unwrap(),
                unsharded("invoices_amount_check_102009").unwrap()
            ),
            Some("amount")
        );
    }

    #[test]
    fn a_shards_table_and_constraint_lose_the_shards_id_together() {
        // Executed on the coordinator's own shard: the fields are the shard's.
        assert_eq!(
            shard_names(Some("projects_102016"), Some("projects_pkey_102016"), false),
            (Some("projects"), Some("projects_pkey"), true)
        );
        // A table whose name ends in digits, with a constraint of another
        // ending, is nobody's shard.
        assert_eq!(
            shard_names(Some("log_20261206"), Some("log_20261206_pkey"), false),
            (Some("log_20261206"), Some("log_20261206_pkey"), false)
        );
        assert_eq!(
            shard_names(Some("a_102016"), Some("b_102017"), false),
            (Some("a_102016"), Some("b_102017"), false)
        );
        // Relayed from a worker: only the message's names, each on its own.
        assert_eq!(
            shard_names(None, Some("projects_tenant_id_name_key_102041"), true),
            (None, Some("projects_tenant_id_name_key"), true)
        );
        assert_eq!(
            shard_names(
                Some("tasks_102048"),
                Some("tasks_project_fkey_102048"),
                true
            ),
            (Some("tasks"), Some("tasks_project_fkey"), true)
        );
        assert_eq!(
            shard_names(Some("projects"), Some("projects_pkey"), false),
            (Some("projects"), Some("projects_pkey"), false)
        );
        let relayed = "update or delete on table \"zz_proj_102016\" violates foreign key \
                       constraint \"zz_task_pname_fkey_102048\" on table \"zz_task_102048\"";
        assert_eq!(
            quoted_after(relayed, "\" on table \""),
            Some("zz_task_102048")
        );
    }

    #[test]
    fn key_violations_are_told_by_their_columns_without_tenant_id() {
        assert_eq!(
            key_columns("Key (tenant_id, name)=(6dd2…, Dup) already exists.").as_deref(),
            Some("name")
        );
        assert_eq!(
            key_columns(
                "Key (tenant_id, project_id)=(6dd2…, 9) is not present in table \"projects\"."
            )
            .as_deref(),
            Some("project_id")
        );
        assert_eq!(
            key_columns("Key (tenant_id, a, b)=(x, 1, 2) already exists.").as_deref(),
            Some("a and b")
        );
        assert_eq!(key_columns("Key (tenant_id)=(x) already exists."), None);
        assert_eq!(key_columns("Schlüssel (name)=(x) existiert bereits."), None);
        assert_eq!(
            referenced_table(
                "Key (tenant_id, project_id)=(6dd2…, 9) is not present in table \"projects\"."
            ),
            Some("projects")
        );
        assert_eq!(referenced_table("Key (a)=(1) already exists."), None);
    }
}
