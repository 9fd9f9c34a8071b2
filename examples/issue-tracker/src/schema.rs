//! The tracker's own schema: its migration (plain SQL, idempotent) and the adoption of its tables by tenantry, run at start-up as the migration role. Never through the server's pool.

use anyhow::Context;
use tenantry_db::tables::{adopt_table, AdoptOptions};
use tokio_postgres::Config;

/// The tables, in the order they are adopted (a table before those that refer to it).
pub const TABLES: [&str; 3] = ["projects", "issues", "comments"];

const MIGRATION: &str = include_str!("../migrations/0001_tables.sql");

/// The database's context key, read as the migration role: the server's pool
/// proves each tenant transaction with it.
pub async fn context_key(migration: &Config) -> anyhow::Result<tenantry_db::ContextKey> {
    let (client, connection) = migration
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting as the migration role")?;
    let driver = tokio::spawn(connection);
    let key = tenantry_db::ContextKey::newest(&client)
        .await
        .context("reading the context key")?
        .context("the database has no context key: run `tenantry migrate`")?;
    drop(client);
    let _ = driver.await;
    Ok(key)
}

/// Creates the tables if needed and adopts them (both idempotent), as the
/// role that runs migrations (`migration`: a superuser, or the tables'
/// owner that is a member of `tenantry_owner`).
pub async fn migrate(migration: &Config) -> anyhow::Result<()> {
    let (client, connection) = migration
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting as the migration role")?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(MIGRATION)
        .await
        .context("running migrations/0001_tables.sql")?;
    for table in TABLES {
        adopt_table(&client, table, &AdoptOptions::default(), |_| {})
            .await
            .with_context(|| format!("adopting {table}"))?;
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}
