//! Helpers shared by the SQL test suites (`sql_api/`, `attacks/`): plain statements on a client, with the database error spelled out when one fails, and tenant setup through the admin role.

use tokio_postgres::{Client, Error};
use uuid::Uuid;

/// SQLSTATE and message of a database error (the driver's text otherwise).
pub fn describe(e: &Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// The server's login as itself (`None`) and every role it may `SET ROLE` to:
/// what an attacker holding its connection can be.
pub const SERVER_ROLES: [Option<&str>; 6] = [
    None,
    Some("tenantry_app"),
    Some("tenantry_app_own"),
    Some("tenantry_app_shared"),
    Some("tenantry_admin"),
    Some("tenantry_logger"),
];

/// Runs `sql` (one or more statements); panics with the database error.
pub async fn exec(c: &Client, sql: &str) {
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
}

/// The single `bigint` a query answers.
pub async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

/// The first column of every row, sorted.
pub async fn strings(c: &Client, sql: &str) -> Vec<String> {
    let mut v: Vec<String> = c
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    v.sort();
    v
}

/// `tenantry.create_tenant(name, parent)` as the admin role; returns the id.
pub async fn create_tenant(admin: &Client, name: &str, parent: Option<Uuid>) -> Uuid {
    create_tenant_in(admin, name, parent, "shared").await
}

/// A schema-isolated tenant, created as the admin role.
pub async fn create_silo(admin: &Client, name: &str) -> Uuid {
    create_tenant_in(admin, name, None, "schema").await
}

/// `tenantry.create_tenant(name, parent, isolation)` as the admin role; returns the id.
pub async fn create_tenant_in(
    admin: &Client,
    name: &str,
    parent: Option<Uuid>,
    isolation: &str,
) -> Uuid {
    admin
        .query_one(
            "SELECT tenantry.create_tenant($1::text, $2::uuid, $3::text)",
            &[&name, &parent, &isolation],
        )
        .await
        .unwrap_or_else(|e| panic!("create_tenant({name}, {isolation}): {}", describe(&e)))
        .get(0)
}

/// Sets a tenant's status (admin role).
pub async fn set_status(admin: &Client, t: Uuid, status: &str) {
    admin
        .execute(
            "UPDATE tenantry.tenants SET status = $1 WHERE tenant_id = $2",
            &[&status, &t],
        )
        .await
        .unwrap_or_else(|e| panic!("status {status}: {}", describe(&e)));
}

/// The schema a tenant's resources live in while it is schema-isolated
/// (`tenants.schema_name`: random, never derived from its id); read through a
/// role that sees every tenant (the admin role or a superuser).
pub async fn schema_of(c: &Client, t: Uuid) -> String {
    c.query_one(
        "SELECT schema_name FROM tenantry.tenants WHERE tenant_id = $1",
        &[&t],
    )
    .await
    .unwrap_or_else(|e| panic!("schema of {t}: {}", describe(&e)))
    .get(0)
}
