//! Migration runner: applies `migrations/*.sql` in version order under an advisory lock, records each with a checksum, and refuses edited or unknown migrations.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

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
        Sha256::digest(self.sql.as_bytes()).to_vec()
    }
}

static MIGRATIONS: &[Migration] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Every migration this build knows, in version order.
pub fn migrations() -> &'static [Migration] {
    MIGRATIONS
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
    /// Talking to the database failed.
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// No connection could be had.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

/// Advisory lock key shared by every tenantry process migrating the same database.
const LOCK_KEY: i64 = 0x7465_6e61_6e74_7279; // "tenantry"

/// Applies every pending migration and returns the ones applied (empty when up to date).
///
/// Safe to run twice and from several processes at once: the work happens under a
/// session advisory lock, each migration in its own transaction. The connecting role
/// must be able to create roles and BYPASSRLS roles (a superuser, typically).
pub async fn migrate(client: &mut Client) -> Result<Vec<Migration>, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = migrate_locked(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn migrate_locked(client: &mut Client) -> Result<Vec<Migration>, MigrateError> {
    client
        .batch_execute(
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
    let pending = pending_after_verify(client).await?;
    let mut applied = Vec::new();
    for migration in pending {
        let tx = client.transaction().await?;
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
        tx.commit().await?;
        applied.push(migration);
    }
    // Per-database grants that a template copy does not carry: the owner creates
    // the schemas of schema-isolated tenants.
    client
        .batch_execute(
            "DO $$ BEGIN
                 EXECUTE format('GRANT CREATE ON DATABASE %I TO tenantry_owner', current_database());
             END $$;",
        )
        .await?;
    Ok(applied)
}

/// Verifies recorded migrations against this build and returns the pending ones.
async fn pending_after_verify(client: &Client) -> Result<Vec<Migration>, MigrateError> {
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
/// Errors with [`MigrateError::Pending`] on an unmigrated or older schema and
/// [`MigrateError::Unknown`] / [`MigrateError::Edited`] on a newer or diverged one.
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
    if pending.is_empty() {
        Ok(())
    } else {
        Err(MigrateError::Pending {
            pending: pending.len(),
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
    }
}
