//! The tracker's two permissions, `tracker.read` and `tracker.write`: defined in tenantry's permission catalogue at start-up, granted to tenant roles like tenantry's own, checked by every handler (a clean `403 permission_denied`) and, for writes, by the database itself (the tables' `write_permission`).
//!
//! Who holds them: a tenant's own (unbound) API key and a tenant's owner hold
//! every permission, these included; a key bound to a role, and a member, hold
//! what their roles were granted (`tenantry role grant <tenant> <role>
//! tracker.read`). A key bound to a role granted neither gets 403 everywhere.

use anyhow::Context;

/// Reading projects, issues and comments (every `GET`).
pub const READ: &str = "tracker.read";

/// Creating, changing and deleting them (every `POST`, `PATCH` and `DELETE`); the tables are
/// adopted with it as their `write_permission`, so PostgreSQL refuses a
/// write without it whatever the handler does.
pub const WRITE: &str = "tracker.write";

/// The permissions with their catalogue descriptions.
const CATALOGUE: [(&str, &str); 2] = [
    (READ, "Issue tracker: read projects, issues and comments"),
    (
        WRITE,
        "Issue tracker: create, change and delete projects, issues and comments",
    ),
];

/// Adds both to `tenantry.permissions` (idempotent: a defined permission
/// keeps its id), as the role that runs migrations.
pub async fn define(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    for (name, description) in CATALOGUE {
        client
            .execute(
                "SELECT tenantry.define_permission($1, $2)",
                &[&name, &description],
            )
            .await
            .with_context(|| format!("defining the permission {name}"))?;
    }
    Ok(())
}
