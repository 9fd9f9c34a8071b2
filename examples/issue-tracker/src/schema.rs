//! The tracker's own schema: its migration (plain SQL, idempotent), its permissions, and the adoption of its tables by tenantry (writes need `tracker.write`), run at start-up as the migration role. Never through the server's pool.

use anyhow::Context;
use tenantry_db::tables::{adopt_table, AdoptOptions};

use crate::permissions;
use tokio_postgres::Config;

/// The tables, in the order they are adopted (a table before those that refer to it).
pub const TABLES: [&str; 3] = ["projects", "issues", "comments"];

const MIGRATION: &str = include_str!("../migrations/0001_tables.sql");

/// The database's context key, read as the migration role: the server's pool
/// proves each tenant transaction with it.
pub async fn context_key(migration: &Config) -> anyhow::Result<tenantry_db::ContextKey> {
    let (client, connection) = migration
        .connect(tenantry_db::tls::connector(&Default::default()).map_err(anyhow::Error::msg)?)
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

/// Every column the tracker's statements name, per table.
const COLUMNS: [(&str, &[&str]); 3] = [
    ("projects", &["tenant_id", "id", "name", "created_at"]),
    (
        "issues",
        &[
            "tenant_id",
            "id",
            "project_id",
            "title",
            "state",
            "created_at",
        ],
    ),
    (
        "comments",
        &["tenant_id", "id", "issue_id", "body", "created_at"],
    ),
];

/// Refuses to start on tables of the same names that are not the tracker's
/// (`CREATE TABLE IF NOT EXISTS` keeps a table someone else made), naming
/// the table and what it lacks, instead of answering 500 to every request.
/// A table not there yet is the migration's to make.
async fn check_shapes(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    for (table, columns) in COLUMNS {
        let columns: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
        let missing: Vec<String> = client
            .query(
                "SELECT c FROM unnest($2::text[]) WITH ORDINALITY AS u(c, n)
                  WHERE to_regclass($1) IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                                     WHERE a.attrelid = to_regclass($1) AND a.attname = c
                                       AND a.attnum > 0 AND NOT a.attisdropped)
                  ORDER BY n",
                &[&table, &columns],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "table {table} in this database is not the issue tracker's (it has no column {}): \
                 another application made a table of that name here. Run the tracker on a \
                 database of its own (TENANTRY_DATA_DIR=.tenantry-tracker for the embedded \
                 default, with the same variable for the tenantry CLI) or drop that table",
                missing.join(", ")
            );
        }
    }
    Ok(())
}

/// Checks that tenantry's own schema is there and current (the tracker
/// migrates only its own tables), creates the tracker's tables and
/// permissions if needed and adopts the tables with `tracker.write` as their
/// write permission (all idempotent), as the role that runs migrations
/// (`migration`: a superuser, or the tables' owner that is a member of
/// `tenantry_owner`).
pub async fn migrate(migration: &Config) -> anyhow::Result<()> {
    let (client, connection) = migration
        .connect(tenantry_db::tls::connector(&Default::default()).map_err(anyhow::Error::msg)?)
        .await
        .context("connecting as the migration role")?;
    let driver = tokio::spawn(connection);
    if let Err(e) = tenantry_db::migrate::check(&client).await {
        anyhow::bail!(
            "{e}\n(the tracker does not migrate tenantry's own schema in a database it did not \
             start: run `DATABASE_URL=<superuser url> cargo run -p tenantry-cli -- migrate` first)"
        );
    }
    // Before the migration too: its references to a table someone else
    // made failed first, with PostgreSQL's words about a missing column and
    // not this (found by a review of the docs).
    check_shapes(&client).await?;
    client
        .batch_execute(MIGRATION)
        .await
        .context("running migrations/0001_tables.sql")?;
    check_shapes(&client).await?;
    permissions::define(&client).await?;
    let options = AdoptOptions {
        write_permission: Some(permissions::WRITE.into()),
        ..AdoptOptions::default()
    };
    for table in TABLES {
        adopt_table(&client, table, &options, |_| {})
            .await
            .with_context(|| format!("adopting {table}"))?;
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}
