//! Migration runner: applies the versioned `migrations/NNNN_*.sql` in order and then, when any has changed, every repeatable definition of `migrations/repeatable/`, all in one transaction under an advisory lock; records checksums and refuses edited or unknown versioned migrations.
//!
//! Two kinds of SQL (rules in `migrations/README.md`):
//! - versioned migrations hold tables and data changes; append-only, each
//!   applied once, never edited once landed;
//! - repeatable definitions hold the one current definition of every function,
//!   view, trigger, policy and grant, one file per domain; when any file's
//!   checksum differs from the one recorded in `tenantry.schema_definitions`,
//!   all of them are applied again, in name order, after the versioned ones.

use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient};

/// One SQL migration embedded at build time from `migrations/NNNN_name.sql`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version number (the `NNNN` prefix).
    pub version: i32,
    /// Name (the file name after the prefix, without `.sql`).
    pub name: &'static str,
    /// The SQL text.
    pub sql: &'static str,
}

impl Migration {
    /// SHA-256 of the SQL text, as recorded in `tenantry.schema_migrations`.
    pub fn checksum(&self) -> Vec<u8> {
        sha256(self.sql)
    }
}

fn sha256(sql: &str) -> Vec<u8> {
    Sha256::digest(sql.as_bytes()).to_vec()
}

static MIGRATIONS: &[Migration] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Every migration this build knows, in version order.
pub fn migrations() -> &'static [Migration] {
    MIGRATIONS
}

/// One repeatable definition file embedded at build time from `migrations/repeatable/<name>`.
#[derive(Debug, Clone, Copy)]
pub struct Definition {
    /// File name, e.g. `03_resources.sql`; files apply in name order.
    pub name: &'static str,
    /// The SQL text.
    pub sql: &'static str,
}

impl Definition {
    /// SHA-256 of the SQL text, as recorded in `tenantry.schema_definitions`.
    pub fn checksum(&self) -> Vec<u8> {
        sha256(self.sql)
    }
}

static DEFINITIONS: &[Definition] = include!(concat!(env!("OUT_DIR"), "/definitions.rs"));

/// Every repeatable definition file this build knows, in the order they apply.
pub fn definitions() -> &'static [Definition] {
    DEFINITIONS
}

/// The schema this build migrates to: its newest migration and a digest of
/// its repeatable definitions, which tell apart two builds of one package
/// version (`tenantry --version`, the `tenantry_build_info` metric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSchema {
    /// The newest migration's version.
    pub newest: i32,
    /// The first four bytes of a SHA-256 over the definitions' checksums, in hex.
    pub definitions: String,
}

impl BuildSchema {
    /// This build's.
    pub fn this_build() -> &'static BuildSchema {
        static SCHEMA: std::sync::OnceLock<BuildSchema> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(|| {
            let mut digest = Sha256::new();
            for d in definitions() {
                digest.update(d.checksum());
            }
            BuildSchema {
                newest: migrations().last().map_or(0, |m| m.version),
                definitions: hex::encode(&digest.finalize()[..4]),
            }
        })
    }
}

impl std::fmt::Display for BuildSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "schema {:04}, definitions {}",
            self.newest, self.definitions
        )
    }
}

/// Why migrating (or checking the schema) failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A migration that was applied earlier no longer matches its file.
    #[error("migration {version} ({name}) was edited after it was applied (checksum differs); migrations are append-only: restore the file and put the change in a new migration")]
    Edited {
        /// Version of the edited migration.
        version: i32,
        /// Its name.
        name: String,
    },
    /// The database holds a migration this build does not know: it is newer than this binary.
    #[error("the database has migration {version} ({name}) which this build of tenantry does not know: the schema is newer than this binary; upgrade tenantry")]
    Unknown {
        /// Version found in the database.
        version: i32,
        /// Its recorded name.
        name: String,
    },
    /// Migrations are pending (reported by [`check`]).
    #[error(
        "the database schema is behind: {pending} migration(s) pending; run `tenantry migrate`"
    )]
    Pending {
        /// How many migrations are pending.
        pending: usize,
    },
    /// The versioned migrations are applied but the function, policy and grant
    /// definitions differ from this build's (reported by [`check`]).
    #[error(
        "the database's definitions ({names}) differ from this build's; run `tenantry migrate`"
    )]
    DefinitionsPending {
        /// The definition files that are new or changed, comma-separated.
        names: String,
    },
    /// The database's definitions are a newer version than this build's: an
    /// older binary would downgrade them.
    #[error("the database's definitions ({names}) are newer than this build's: the schema was migrated by a newer tenantry; upgrade tenantry")]
    DefinitionsNewer {
        /// The definition files whose current version is newer, comma-separated.
        names: String,
    },
    /// A repeatable definition file failed to apply.
    #[error("definitions {name} failed: {source}")]
    DefinitionFailed {
        /// The file name.
        name: String,
        /// The database error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database is a Citus cluster whose tenantry schema is distributed
    /// already, and this build would change it.
    #[error("this Citus database's tenantry schema is distributed already and {what} pending; upgrading a distributed schema is not supported yet (docs/scale-out.md): migrate a copy of the single-node database and distribute it again")]
    CitusUpgrade {
        /// What is pending.
        what: String,
    },
    /// Citus refused to distribute tenantry's tables after the first install.
    #[error(
        "the migrations applied on the Citus coordinator, but Citus refused to distribute them"
    )]
    Citus(#[from] crate::citus::DistributionError),
    /// The upgrade needed a lock that other sessions held through every one
    /// of its tries ([`UPGRADE_LOCK_TRIES`] of [`UPGRADE_LOCK_WAIT`] each);
    /// nothing was changed.
    #[error("the upgrade could not take the locks it needs in {tries} tries, each waiting at most {wait} for a lock (other sessions held them; nothing was changed): {holders}; end those transactions, or run `tenantry migrate` again when they are done")]
    LockedOut {
        /// How many times it tried.
        tries: u32,
        /// How long each try waited for each lock (`lock_timeout`'s form).
        wait: String,
        /// The oldest transactions of other sessions, as pg_stat_activity shows them.
        holders: String,
    },
    /// A migration's SQL failed.
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        /// Version of the failing migration.
        version: i32,
        /// Its name.
        name: String,
        /// The database error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A tenant-schema step failed in one tenant's schema (nothing of it was
    /// applied there; every other schema was migrated, except `others` that
    /// failed too).
    #[error("tenant schema {schema} (tenant {tenant}) failed its migration: {source}{}",
            if *.others > 0 { format!(" ({} other schema(s) failed too; every other schema was migrated)", .others) } else { String::new() })]
    TenantSchemaFailed {
        /// The tenant.
        tenant: uuid::Uuid,
        /// Its schema.
        schema: String,
        /// The database error.
        #[source]
        source: tokio_postgres::Error,
        /// How many other schemas failed in the same run.
        others: usize,
    },
    /// Talking to the database failed (the database's own words: SQLSTATE
    /// and message, said once, not again as a source).
    #[error("database error: {}", crate::error::describe(.0))]
    Database(tokio_postgres::Error),
    /// No connection could be had.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database was reached and refused the login's session: the context
    /// key is not this database's (or is retired), or the login may not act
    /// as the server, or its sessions are read-only. Said as the database
    /// said it, not as an outage.
    #[error("{0}")]
    Refused(String),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Database(e)
    }
}

/// A schema tenant whose schema has not run every tenant-schema step yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaBehind {
    /// The tenant.
    pub tenant_id: uuid::Uuid,
    /// Its schema.
    pub schema_name: String,
    /// The last step its schema ran.
    pub schema_version: i32,
    /// The latest step.
    pub latest: i32,
}

/// Schema tenants whose schema is behind the latest tenant-schema step
/// (`tenantry.tenant_schema_steps`), oldest first, at most `max`.
pub async fn tenant_schemas_behind(
    client: &Client,
    max: i32,
) -> Result<Vec<SchemaBehind>, MigrateError> {
    Ok(client
        .query(
            "SELECT tenant_id, schema_name, schema_version, latest FROM tenantry.tenant_schemas_behind($1)",
            &[&max],
        )
        .await?
        .iter()
        .map(|r| SchemaBehind {
            tenant_id: r.get(0),
            schema_name: r.get(1),
            schema_version: r.get(2),
            latest: r.get(3),
        })
        .collect())
}

/// Brings every schema tenant's schema to the latest tenant-schema step, one
/// schema per transaction (its steps and its new version together: a crash
/// leaves each schema at a version it fully ran, and running this again
/// finishes the rest without running anything twice). `progress(done,
/// total)` after each schema. Returns how many schemas it migrated. As an
/// operator (superuser or member of `tenantry_owner`).
///
/// A step waits at most [`SCHEMA_LOCK_WAIT`] for a table in use (a tenant's
/// long transaction on it): every query of that table queues behind a
/// waiting `ALTER TABLE`, so one tenant's long read would otherwise hold
/// back every other reader of the table for as long. That schema is tried
/// again after the others, up to [`SCHEMA_TRIES`] times; a step recorded
/// while a schema was being migrated (40001) is tried again the same way.
/// A schema that fails for good (its step fails on its rows, or its tables
/// stayed in use) does not hold back the others: they are all migrated, and
/// the first failure is the answer, counting the other schemas that failed
/// ([`MigrateError::TenantSchemaFailed`]).
pub async fn migrate_tenant_schemas(
    client: &mut Client,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, MigrateError> {
    const BATCH: i32 = 500;
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM tenantry.tenants
             WHERE (isolation = 'schema' OR moving_to = 'schema')
               AND coalesce(schema_version, 0) < tenantry.tenant_schema_latest()",
            &[],
        )
        .await?
        .get(0);
    let total = total as u64;
    let mut done = 0u64;
    let mut tries: std::collections::HashMap<uuid::Uuid, u32> = std::collections::HashMap::new();
    // Schemas that failed for good: the others go on, and the first failure
    // is the answer at the end, counting the rest.
    let mut first_failure: Option<(SchemaBehind, tokio_postgres::Error)> = None;
    let mut gave_up: std::collections::HashSet<uuid::Uuid> = std::collections::HashSet::new();
    loop {
        let max = BATCH.saturating_add(i32::try_from(gave_up.len()).unwrap_or(i32::MAX));
        let behind: Vec<SchemaBehind> = tenant_schemas_behind(client, max)
            .await?
            .into_iter()
            .filter(|s| !gave_up.contains(&s.tenant_id))
            .collect();
        if behind.is_empty() {
            return match first_failure {
                None => Ok(done),
                Some((schema, source)) => Err(MigrateError::TenantSchemaFailed {
                    tenant: schema.tenant_id,
                    schema: schema.schema_name,
                    source,
                    others: gave_up.len() - 1,
                }),
            };
        }
        let mut progressed = false;
        let mut retry_later = false;
        for schema in behind {
            let tx = client.transaction().await?;
            tx.batch_execute(&crate::database::set_local_lock_timeout(SCHEMA_LOCK_WAIT))
                .await?;
            match tx
                .execute(
                    "SELECT tenantry.migrate_tenant_schema($1)",
                    &[&schema.tenant_id],
                )
                .await
            {
                Ok(_) => {
                    tx.commit().await?;
                    done += 1;
                    progressed = true;
                    progress(done, total.max(done));
                }
                Err(source) => {
                    tx.rollback().await?;
                    let tried = tries.entry(schema.tenant_id).or_insert(0);
                    *tried += 1;
                    let again = matches!(
                        source.code(),
                        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_SERIALIZATION_FAILURE
                    );
                    if !again || *tried >= SCHEMA_TRIES {
                        gave_up.insert(schema.tenant_id);
                        first_failure.get_or_insert((schema, source));
                    } else {
                        retry_later = true;
                    }
                }
            }
        }
        if !progressed && retry_later {
            // Only schemas whose tables are in use are left: give their
            // transactions a moment.
            tokio::time::sleep(SCHEMA_LOCK_WAIT).await;
        }
    }
}

/// How long a tenant-schema step waits for a table in use before its schema
/// is tried again later ([`migrate_tenant_schemas`]).
pub const SCHEMA_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);

/// How many times [`migrate_tenant_schemas`] tries a schema whose tables are
/// in use before it gives up with that schema's error.
pub const SCHEMA_TRIES: u32 = 10;

/// How long one statement of an upgrade waits for a lock before the upgrade
/// backs off, when the migrating session sets no `lock_timeout` of its own:
/// every query of a table queues behind an `ALTER TABLE` waiting for it, so
/// one long transaction (a report, a `pg_dump`) would otherwise stop every
/// tenant's requests for as long as it runs (found by a rolling-upgrade
/// review: 50 s of no answers, some 503s). Traffic queued behind the
/// upgrade waits at most this long per lock the upgrade waits for.
pub const UPGRADE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(2000);

/// How many times [`migrate`] tries an upgrade that timed out on a lock
/// ([`UPGRADE_LOCK_WAIT`], or the session's own `lock_timeout`, per lock;
/// [`UPGRADE_LOCK_PAUSE`] apart) before it gives up with
/// [`MigrateError::LockedOut`].
pub const UPGRADE_LOCK_TRIES: u32 = 20;

/// The pause between two tries of an upgrade that timed out on a lock:
/// traffic queued behind it meanwhile runs.
pub const UPGRADE_LOCK_PAUSE: std::time::Duration = std::time::Duration::from_millis(1000);

/// Advisory lock key shared by every tenantry process migrating the same database.
const LOCK_KEY: i64 = 0x7465_6e61_6e74_7279; // "tenantry"

/// Applies every pending migration (and, when they changed, the repeatable
/// definitions) and returns the versioned migrations applied (empty when up to date).
///
/// Safe to run twice and from several processes at once: the work happens under a
/// session advisory lock, in one transaction, so an upgrade is all or nothing. The
/// connecting role must be a superuser whenever anything is pending (refused
/// before anything runs otherwise); with nothing pending a member of
/// `tenantry_owner` may run it.
pub async fn migrate(client: &mut Client) -> Result<Vec<Migration>, MigrateError> {
    migrate_until(client, None).await
}

/// Brings a database to the state an older build left it in: the versioned
/// migrations up to and including `version`, without the repeatable definitions,
/// exactly as the runner did before `migrations/repeatable/` existed (up to 0007).
/// Used by upgrade tests; `migrate` then upgrades such a database.
pub async fn migrate_to_version(
    client: &mut Client,
    version: i32,
) -> Result<Vec<Migration>, MigrateError> {
    migrate_until(client, Some(version)).await
}

/// The oldest PostgreSQL the schema runs on (`server_version_num` of 15.0).
const MIN_SERVER_VERSION_NUM: i32 = 150_000;

async fn migrate_until(
    client: &mut Client,
    until: Option<i32>,
) -> Result<Vec<Migration>, MigrateError> {
    // Said in tenantry's words: it answered PostgreSQL's "25006: cannot
    // execute CREATE SCHEMA in a read-only transaction" (found by an
    // operations review, against a standby).
    let (standby, read_only, version, version_num, icu, encoding): (bool, String, String, i32, bool, String) = client
        .query_one(
            "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('default_transaction_read_only'),
                    pg_catalog.current_setting('server_version'),
                    pg_catalog.current_setting('server_version_num')::int,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_collation WHERE collname = 'und-x-icu'),
                    pg_catalog.getdatabaseencoding()",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))?;
    // What the schema needs of the server, said before anything is tried
    // (a server built without ICU failed at migration 13 with "collation
    // und-x-icu does not exist", found running the suite on other builds).
    if version_num < MIN_SERVER_VERSION_NUM {
        return Err(MigrateError::Refused(format!(
            "tenantry needs PostgreSQL 15 or newer; this server is PostgreSQL {version}"
        )));
    }
    if !icu {
        return Err(MigrateError::Refused(format!(
            "tenantry needs a PostgreSQL built with ICU (it compares member emails in the ICU root collation \"und-x-icu\", which this server, PostgreSQL {version}, does not have): use a build with ICU (the Debian, Ubuntu, Red Hat, Homebrew and Docker packages and managed services have it)"
        )));
    }
    // The schema's text (names, descriptions, the ICU collation of emails)
    // is Unicode: a LATIN1 database failed at migration 36 on a character
    // it has no equivalent of, an SQL_ASCII one at 13 on the collation
    // (found by a DBA's review).
    if encoding != "UTF8" {
        return Err(MigrateError::Refused(format!(
            "tenantry needs a database in UTF8; this one is in {encoding}: create it with CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0 (and a UTF-8 locale, or LOCALE_PROVIDER icu)"
        )));
    }
    if standby || read_only == "on" {
        return Err(MigrateError::Refused(if standby {
            "the database is a standby (in recovery), which takes no writes: run tenantry migrate against the primary".into()
        } else {
            "the login's sessions are read-only (default_transaction_read_only = on, for the role, the database or the server): migrate as a role whose sessions may write, or reset the setting".into()
        }));
    }
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = migrate_locked(client, until).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn migrate_locked(
    client: &mut Client,
    until: Option<i32>,
) -> Result<Vec<Migration>, MigrateError> {
    // On Citus, the first install applies on the coordinator alone (DDL
    // propagation off for this session, the runner's bookkeeping included:
    // a schema Citus created on the workers now would belong to the
    // superuser) and is distributed afterwards (crate::citus); a distributed
    // schema is not changed in place.
    let citus = crate::citus::is_citus(client).await?;
    let distributed = citus && crate::citus::is_distributed(client).await?;
    if citus && !distributed {
        client
            .batch_execute("SET citus.enable_ddl_propagation = off")
            .await?;
    }
    // A lock wait of our own unless the session has one (a DATABASE_URL's
    // `options=-c lock_timeout=…`).
    let own_wait: String = client
        .query_one("SELECT current_setting('lock_timeout')", &[])
        .await?
        .get(0);
    let lock_wait = (own_wait == "0").then_some(UPGRADE_LOCK_WAIT);
    let wait = match lock_wait {
        Some(w) => format!("{}ms", w.as_millis()),
        None => own_wait,
    };
    let mut applied = apply_pending(client, until, distributed, lock_wait).await;
    // Applied again, in one loop: after a lock wait ran out (a long
    // transaction of another session held a table: the upgrade backs off so
    // that the queries queued behind it run), and after losing a race on
    // the cluster's shared catalogs. The advisory lock is per database, but
    // roles, their memberships and parameter grants are the cluster's: two
    // databases of one cluster (a Citus coordinator and its workers, tests,
    // a team's staging copies) installing at the same time collide there.
    // Either way the transaction rolled back whole; applying again finds
    // what the winner committed and skips it.
    let (mut lock_tries, mut race_tries) = (1, 0);
    loop {
        match &applied {
            Err(e) if timed_out_on_a_lock(e) => {
                let holders = lock_holders(client).await;
                if lock_tries >= UPGRADE_LOCK_TRIES {
                    applied = Err(MigrateError::LockedOut {
                        tries: lock_tries,
                        wait,
                        holders,
                    });
                    break;
                }
                tracing::warn!(
                    "the upgrade's wait for a lock other sessions hold ran out or deadlocked ({holders}); nothing was changed, trying again in {} ms ({lock_tries} of {UPGRADE_LOCK_TRIES})",
                    UPGRADE_LOCK_PAUSE.as_millis()
                );
                tokio::time::sleep(UPGRADE_LOCK_PAUSE).await;
                lock_tries += 1;
            }
            Err(e) if lost_cluster_catalog_race(e) && race_tries < CLUSTER_RACE_RETRIES => {
                tracing::info!(error = %e, "another database of this cluster created tenantry's roles at the same time; applying again");
                race_tries += 1;
            }
            _ => break,
        }
        applied = apply_pending(client, until, distributed, lock_wait).await;
    }
    if citus && !distributed {
        client
            .batch_execute("RESET citus.enable_ddl_propagation")
            .await?;
        if applied.is_ok() {
            crate::citus::install_forms(client).await?;
            crate::citus::prepare_workers(client).await?;
            let done = crate::citus::distribute(client).await?;
            crate::citus::grant_defaulted_columns(client).await?;
            crate::citus::restrict_shard_policies(client).await?;
            tracing::info!(
                reference = done.reference.len(),
                distributed = done.distributed.len(),
                functions = done.functions,
                local_functions = done.local_functions.len(),
                "distributed tenantry's schema on Citus"
            );
        }
    }
    let applied = applied?;
    if citus {
        // Every time: a worker added since the first install has none of it.
        crate::citus::harden_nodes(client).await?;
    }
    if citus && distributed {
        // Every time too: shards Citus made or moved since (a split, the
        // rebalancer's moves after a node was added) got the coordinator's
        // grants and its policies without AS RESTRICTIVE. Placements that
        // are right are left alone. Citus runs commands on placements for
        // a superuser only.
        let superuser: bool = client
            .query_one(
                "SELECT pg_catalog.current_setting('is_superuser') = 'on'",
                &[],
            )
            .await?
            .get(0);
        if superuser {
            crate::citus::grant_defaulted_columns(client).await?;
            crate::citus::restrict_shard_policies(client).await?;
        } else {
            tracing::warn!("not a superuser: the shards' grants and restrictive policies were not checked; after moving or splitting shards run tenantry migrate as a superuser (tenantry doctor names the tables whose shards lost their restrictive policies)");
        }
    }
    // The memberships tenantry's roles are made with (0001), put back
    // every time: one revoked by hand failed every request of its kind
    // (tenantry_app) or dropped every request-log row (tenantry_logger)
    // while `migrate` said "up to date" (an operations review). Granted
    // only when missing: the catalog is the cluster's, shared with other
    // databases migrating at the same time. The doctor names them (rule
    // server_roles).
    client.batch_execute(RESTORE_MEMBERSHIPS).await?;
    // Per-database grants that a template copy does not carry: the owner creates
    // the schemas of schema-isolated tenants.
    client
        .batch_execute(
            // Only by a role that may grant it (the database's owner, a
            // superuser): a member of tenantry_owner that migrates an
            // up-to-date database got PostgreSQL's "no privileges were
            // granted" warning (an upgrade review).
            "DO $$ BEGIN
                 IF pg_catalog.has_database_privilege(current_database(), 'CREATE WITH GRANT OPTION') THEN
                     EXECUTE format('GRANT CREATE ON DATABASE %I TO tenantry_owner', current_database());
                 END IF;
             END $$;",
        )
        .await?;
    Ok(applied)
}

/// Grants each of tenantry's role memberships that is missing (a member of
/// the first role, the second). The doctor's rule `server_roles`
/// (10_tables.sql) lists the same pairs; this list stands on its own since
/// it also runs where no definition is applied yet (`migrate_to_version`).
const RESTORE_MEMBERSHIPS: &str = "DO $memberships$
    DECLARE
        m record;
    BEGIN
        FOR m IN SELECT * FROM (VALUES ('tenantry_app', 'tenantry_server'),
                                       ('tenantry_admin', 'tenantry_server'),
                                       ('tenantry_logger', 'tenantry_server'),
                                       ('tenantry_app_own', 'tenantry_app'),
                                       ('tenantry_app_shared', 'tenantry_app')) v(role, member)
                 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members a
                                   WHERE a.roleid = pg_catalog.to_regrole(v.role)
                                     AND a.member = pg_catalog.to_regrole(v.member))
        LOOP
            EXECUTE pg_catalog.format('GRANT %I TO %I', m.role, m.member);
        END LOOP;
    END
$memberships$;";

/// The database's error under an upgrade's failure, if it has one.
fn database_error(e: &MigrateError) -> Option<&tokio_postgres::Error> {
    match e {
        MigrateError::Failed { source, .. } | MigrateError::DefinitionFailed { source, .. } => {
            Some(source)
        }
        MigrateError::Database(source) => Some(source),
        _ => None,
    }
}

/// Whether an upgrade failed because a statement's lock wait ran out (55P03),
/// or because PostgreSQL chose it as a deadlock's victim (40P01): its reset
/// takes the policies' tables in another order than the requests' own
/// transactions, and while a long transaction makes it wait and try again,
/// the two orders cross (an upgrade review: three of three upgrades beside
/// a 30 s report failed on a deadlock instead of trying again). Nothing was
/// applied either way: the try is rolled back whole.
fn timed_out_on_a_lock(e: &MigrateError) -> bool {
    matches!(
        database_error(e).and_then(tokio_postgres::Error::code),
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// The oldest open transactions of other sessions on this database (who
/// most likely holds what the upgrade waited for), for the operator.
async fn lock_holders(client: &Client) -> String {
    let rows = match client
        .query(
            "SELECT format('pid %s (%s, %s, in a transaction for %s s: %s)', pid,
                           coalesce(nullif(usename::text, ''), '?'), state,
                           round(extract(epoch FROM now() - xact_start)),
                           left(regexp_replace(query, '\\s+', ' ', 'g'), 120))
             FROM pg_catalog.pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND xact_start IS NOT NULL
             ORDER BY xact_start LIMIT 3",
            &[],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => return format!("the open transactions could not be listed: {e}"),
    };
    match rows.is_empty() {
        true => "no open transaction of another session is left now".to_owned(),
        false => rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// How many times a migration that lost a race on the cluster's shared
/// catalogs is applied again.
const CLUSTER_RACE_RETRIES: usize = 3;

/// Whether `e` is a collision with another database of the cluster writing
/// the same shared catalog row in a concurrent transaction: a role created
/// twice (23505 on `pg_authid`, `pg_auth_members` or `pg_parameter_acl`), or
/// a membership or grant updated twice ("tuple concurrently updated").
fn lost_cluster_catalog_race(e: &MigrateError) -> bool {
    let Some(db) = database_error(e).and_then(tokio_postgres::Error::as_db_error) else {
        return false;
    };
    let shared = |name: &str| {
        [
            "pg_authid",
            "pg_auth_members",
            "pg_parameter_acl",
            "pg_db_role_setting",
        ]
        .iter()
        .any(|c| name.starts_with(c))
    };
    (*db.code() == SqlState::UNIQUE_VIOLATION
        && (db.constraint().is_some_and(shared) || db.table().is_some_and(shared)))
        || (*db.code() == SqlState::INTERNAL_ERROR
            && db.message().starts_with("tuple concurrently"))
}

/// The versioned migrations after the recorded ones (up to `until`), then the
/// definitions when any changed, in one transaction; refused on a
/// distributed Citus schema when anything is pending.
async fn apply_pending(
    client: &mut Client,
    until: Option<i32>,
    distributed: bool,
    lock_wait: Option<std::time::Duration>,
) -> Result<Vec<Migration>, MigrateError> {
    // Everything, the bookkeeping table included, in one transaction: a run
    // that fails (a role that may not create tenantry's roles, an edited
    // file, a lock waited for in vain) leaves the database as it found it,
    // without an empty schema.
    let tx = client.transaction().await?;
    // A first install, before its schema is made (a role without CREATE on
    // the database was refused that in PostgreSQL's words).
    let installed: bool = tx
        .query_one(
            "SELECT to_regclass('tenantry.schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !installed {
        refuse_unless_superuser(&tx, "a first install").await?;
    }
    // The definitions' `DROP … IF EXISTS` and the like say NOTICE as they
    // go: some thirty lines in an application's log at INFO on every first
    // start (found by a review building a service on the library). Warnings
    // and errors still reach the caller.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    if let Some(wait) = lock_wait {
        tx.batch_execute(&crate::database::set_local_lock_timeout(wait))
            .await?;
    }
    tx.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS tenantry;
             CREATE TABLE IF NOT EXISTS tenantry.schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 checksum   bytea NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now(),
                 applied_by text NOT NULL DEFAULT session_user
             );
             COMMENT ON TABLE tenantry.schema_migrations IS
                 'Migrations applied by tenantry migrate, with the SHA-256 of each file. Append-only.';",
        )
        .await?;
    let pending: Vec<Migration> = pending_after_verify(&tx)
        .await?
        .into_iter()
        .filter(|m| until.is_none_or(|v| m.version <= v))
        .collect();
    // Refused before anything is applied, like an unknown versioned migration.
    let stale = stale_definitions(&tx).await?;
    if distributed && (!pending.is_empty() || !stale.is_empty()) {
        return Err(MigrateError::CitusUpgrade {
            what: format!(
                "{} migration(s) and {} definition file(s) are",
                pending.len(),
                stale.len()
            ),
        });
    }
    if !pending.is_empty() || (until.is_none() && !stale.is_empty()) {
        refuse_unless_superuser(
            &tx,
            &format!(
                "{} migration(s) and {} definition file(s) pending",
                pending.len(),
                if until.is_none() { stale.len() } else { 0 }
            ),
        )
        .await?;
    }
    for migration in &pending {
        // Each file sets its own role; none inherits the previous file's.
        tx.batch_execute("RESET ROLE").await?;
        tx.batch_execute(migration.sql)
            .await
            .map_err(|source| MigrateError::Failed {
                version: migration.version,
                name: migration.name.to_owned(),
                source,
            })?;
        tx.execute(
            "INSERT INTO tenantry.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &migration.checksum()],
        )
        .await?;
    }
    // Also after any versioned migration: one that rebuilt a table took its
    // policies and grants with it.
    if until.is_none() {
        if !stale.is_empty() || !pending.is_empty() {
            // 08_shared_state.sql closes the extensions' objects itself.
            apply_definitions(&tx).await?;
        } else {
            close_shared_extensions(&tx).await?;
        }
    }
    tx.commit().await?;
    Ok(pending)
}

/// Takes from PUBLIC, at every run by a superuser, the objects of an
/// extension installed since the definitions were applied that reach state
/// every tenant shares (`tenantry.close_shared_extension_objects()`,
/// 08_shared_state.sql): `tenantry migrate` after installing one closes it,
/// the definitions changed or not (found by a review: an up-to-date database
/// was left open, the doctor's rule `shared_state` the only fix). Another
/// role leaves them to the doctor's fix.
async fn close_shared_extensions(tx: &tokio_postgres::Transaction<'_>) -> Result<(), MigrateError> {
    let can: bool = tx
        .query_one(
            "SELECT pg_catalog.current_setting('is_superuser') = 'on'
                AND to_regprocedure('tenantry.close_shared_extension_objects()') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if can {
        tx.batch_execute("RESET ROLE; SELECT tenantry.close_shared_extension_objects()")
            .await?;
    }
    Ok(())
}

/// Refuses, before anything runs, an install or upgrade (`what` is pending)
/// by a role that is no superuser: it was PostgreSQL's refusal of whichever
/// statement came first, and a role given the roles and parameter grants
/// beforehand (a managed service's admin, which is no superuser) got through
/// with every REVOKE of 08_shared_state.sql a warning only, the built-ins
/// left to every tenant (found by a review of managed PostgreSQL services).
async fn refuse_unless_superuser(
    tx: &tokio_postgres::Transaction<'_>,
    what: &str,
) -> Result<(), MigrateError> {
    let (superuser, role): (bool, String) = tx
        .query_one(
            "SELECT pg_catalog.current_setting('is_superuser') = 'on', current_user::text",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))?;
    if superuser {
        return Ok(());
    }
    Err(MigrateError::Refused(format!(
        "installing or upgrading tenantry ({what}) creates its roles (one of them BYPASSRLS), \
         grants SET on parameters only a superuser may grant, and takes from PUBLIC built-ins \
         that tell tenants about each other, which only a superuser can: run it as a superuser \
         (the database URL names {role}, which may not); nothing was changed"
    )))
}

/// Applies every definition file in order and records their checksums, dropping
/// records of files this build no longer has.
async fn apply_definitions(tx: &tokio_postgres::Transaction<'_>) -> Result<(), MigrateError> {
    for definition in DEFINITIONS {
        tx.batch_execute("RESET ROLE").await?;
        tx.batch_execute(definition.sql).await.map_err(|source| {
            MigrateError::DefinitionFailed {
                name: definition.name.to_owned(),
                source,
            }
        })?;
    }
    tx.batch_execute("RESET ROLE").await?;
    let names: Vec<&str> = DEFINITIONS.iter().map(|d| d.name).collect();
    tx.execute(
        "DELETE FROM tenantry.schema_definitions WHERE NOT (name = ANY ($1))",
        &[&names],
    )
    .await?;
    for definition in DEFINITIONS {
        tx.execute(
            "INSERT INTO tenantry.schema_definitions (name, checksum) VALUES ($1, $2)
             ON CONFLICT (name, checksum) DO UPDATE
                 SET applied_at = clock_timestamp(), applied_by = session_user",
            &[&definition.name, &definition.checksum()],
        )
        .await?;
    }
    tracing::info!(
        files = DEFINITIONS.len(),
        "applied the repeatable definitions"
    );
    Ok(())
}

/// Names of the definition files whose current version in the database is not
/// this build's (all of them when nothing was recorded yet). Errors with
/// [`MigrateError::DefinitionsNewer`] when the database's current version of a
/// file is newer than this build's (this build's was applied before it).
async fn stale_definitions(client: &impl GenericClient) -> Result<Vec<&'static str>, MigrateError> {
    let exists = client
        .query_typed(
            "SELECT to_regclass('tenantry.schema_definitions') IS NOT NULL",
            &[],
        )
        .await?
        .first()
        .is_some_and(|r| r.get::<_, bool>(0));
    // (name, checksum, whether it is the latest applied version of that file)
    let recorded: Vec<(String, Vec<u8>, bool)> = if exists {
        client
            .query_typed(
                "SELECT name, checksum,
                        applied_at = max(applied_at) OVER (PARTITION BY name)
                 FROM tenantry.schema_definitions",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    } else {
        Vec::new()
    };
    let mut stale = Vec::new();
    let mut newer = Vec::new();
    for d in DEFINITIONS {
        let ours = d.checksum();
        let mine = recorded
            .iter()
            .find(|(name, sum, _)| name == d.name && *sum == ours);
        match mine {
            Some((_, _, true)) => {}
            Some((_, _, false)) => newer.push(d.name),
            None => stale.push(d.name),
        }
    }
    if !newer.is_empty() {
        return Err(MigrateError::DefinitionsNewer {
            names: newer.join(", "),
        });
    }
    Ok(stale)
}

/// Verifies recorded migrations against this build and returns the pending ones.
async fn pending_after_verify(client: &impl GenericClient) -> Result<Vec<Migration>, MigrateError> {
    // Unnamed statements (query_typed) throughout: these checks also run through
    // transaction-pooling poolers, which lose named prepared statements.
    let rows = client
        .query_typed(
            "SELECT version, name, checksum FROM tenantry.schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    let mut done = std::collections::HashSet::new();
    for row in rows {
        let version: i32 = row.get(0);
        let name: String = row.get(1);
        let checksum: Vec<u8> = row.get(2);
        match MIGRATIONS.iter().find(|m| m.version == version) {
            None => return Err(MigrateError::Unknown { version, name }),
            Some(m) if m.checksum() != checksum => {
                return Err(MigrateError::Edited { version, name })
            }
            Some(_) => {
                done.insert(version);
            }
        }
    }
    Ok(MIGRATIONS
        .iter()
        .filter(|m| !done.contains(&m.version))
        .copied()
        .collect())
}

/// Checks, without changing anything, that the database schema matches this build exactly.
///
/// Errors with [`MigrateError::Pending`] on an unmigrated or older schema,
/// [`MigrateError::DefinitionsPending`] when only the repeatable definitions
/// differ, and [`MigrateError::Unknown`] / [`MigrateError::Edited`] on a newer or
/// diverged one.
pub async fn check(client: &Client) -> Result<(), MigrateError> {
    let exists = client
        .query_typed(
            "SELECT to_regclass('tenantry.schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .first()
        .is_some_and(|r| r.get::<_, bool>(0));
    if !exists {
        return Err(MigrateError::Pending {
            pending: MIGRATIONS.len(),
        });
    }
    let pending = pending_after_verify(client).await?;
    if !pending.is_empty() {
        return Err(MigrateError::Pending {
            pending: pending.len(),
        });
    }
    let stale = stale_definitions(client).await?;
    if stale.is_empty() {
        Ok(())
    } else {
        Err(MigrateError::DefinitionsPending {
            names: stale.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_embedded_in_strictly_increasing_order() {
        let all = migrations();
        assert!(all.len() >= 6);
        assert!(all.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(all[0].version, 1);
    }

    #[test]
    fn every_migration_sets_the_owner_role_before_creating_objects() {
        for m in migrations() {
            assert!(
                m.sql.contains("SET LOCAL ROLE tenantry_owner;"),
                "migration {} does not",
                m.version
            );
        }
        for d in definitions() {
            assert!(
                d.sql.contains("SET LOCAL ROLE tenantry_owner;"),
                "definitions {} do not",
                d.name
            );
        }
    }

    #[test]
    fn definitions_start_with_the_reset_and_apply_in_name_order() {
        let names: Vec<&str> = definitions().iter().map(|d| d.name).collect();
        assert_eq!(names.first(), Some(&"00_reset.sql"));
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    }

    /// Rule 2 of migrations/README.md: after 0007, functions, views, triggers,
    /// policies and grants are defined only in the repeatable files.
    #[test]
    fn versioned_migrations_after_0007_define_no_functions_policies_or_grants() {
        for m in migrations().iter().filter(|m| m.version > 7) {
            let upper = m.sql.to_uppercase();
            for forbidden in [
                "CREATE FUNCTION",
                "CREATE OR REPLACE FUNCTION",
                "CREATE VIEW",
                "CREATE OR REPLACE VIEW",
                "CREATE TRIGGER",
                "CREATE OR REPLACE TRIGGER",
                "CREATE POLICY",
                "\nGRANT ",
            ] {
                assert!(
                    !upper.contains(forbidden),
                    "migration {} ({}) contains {forbidden:?}: put it in migrations/repeatable/",
                    m.version,
                    m.name
                );
            }
        }
    }
}
