//! Helpers the SQL API tests share: a psql session of a trusted operator (a
//! superuser, as in the README's walkthrough) switched to a tenant or admin
//! role with the guide's names on the search path, the expected SQLSTATE of a
//! failure, and small typed queries. Row-level security applies: it follows
//! the current role, not the login. What the server's own login may do is the
//! attack suite's (tests/attacks).

use std::fmt::Debug;

use serde_json::json;
use tenantry_db::testing::TestDatabase;
use tokio_postgres::{Client, Error};
use uuid::Uuid;

use crate::common::{describe, exec, strings};

/// An operator's session switched to `role`, with the guide's names on the search path.
async fn login(tdb: &TestDatabase, role: &str) -> Client {
    let c = tdb.superuser_client().await;
    exec(
        &c,
        &format!("SET ROLE {role}; SET search_path = tenantry, public"),
    )
    .await;
    c
}

pub async fn app(tdb: &TestDatabase) -> Client {
    login(tdb, "tenantry_app").await
}

/// An operator switched to tenantry_admin, with the session's administrative
/// context (changing tenants needs it; the server proves its own per transaction).
pub async fn admin(tdb: &TestDatabase) -> Client {
    let c = login(tdb, "tenantry_admin").await;
    exec(&c, "SELECT tenantry.set_admin_context('operator')").await;
    c
}

/// An operator's session appending request-log rows as `tenantry_logger`,
/// in the administrative context the logger needs (policy request_log_append).
pub async fn logger(tdb: &TestDatabase) -> Client {
    let c = admin(tdb).await;
    exec(&c, "SET ROLE tenantry_logger").await;
    c
}

/// The SQLSTATE of a failed call; panics when the call succeeded. Returns the message.
pub fn expect_sqlstate<T: Debug>(result: Result<T, Error>, code: &str, what: &str) -> String {
    match result {
        Ok(v) => panic!("{what}: expected SQLSTATE {code}, but it succeeded: {v:?}"),
        Err(e) => {
            let got = e.code().map(|c| c.code().to_owned());
            assert_eq!(
                got.as_deref(),
                Some(code),
                "{what}: expected SQLSTATE {code}, got {}",
                describe(&e)
            );
            e.as_db_error().unwrap().message().to_owned()
        }
    }
}

pub fn expect_sqlstate_any<T: Debug>(result: Result<T, Error>, codes: &[&str]) -> String {
    match result {
        Ok(v) => panic!("expected one of {codes:?}, but it succeeded: {v:?}"),
        Err(e) => {
            let got = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
            assert!(
                codes.contains(&got.as_str()),
                "expected {codes:?}, got {}",
                describe(&e)
            );
            got
        }
    }
}

/// Runs `sql` and expects it to fail with `code`.
pub async fn denied(c: &Client, sql: &str, code: &str) -> String {
    expect_sqlstate(c.batch_execute(sql).await, code, sql)
}

/// The guide's session-level `set_tenant_context(uuid)`.
pub async fn set_context(c: &Client, t: Uuid) {
    c.execute("SELECT set_tenant_context($1)", &[&t])
        .await
        .unwrap_or_else(|e| panic!("set_tenant_context({t}): {}", describe(&e)));
}

pub async fn clear_context(c: &Client) {
    exec(c, "SELECT tenantry.set_tenant_context(NULL)").await;
}

/// `create_resource` as tenant `t` (session context left set to `t`).
pub async fn create_resource(c: &Client, t: Uuid, name: &str) -> Uuid {
    set_context(c, t).await;
    c.query_one(
        "SELECT create_resource($1)",
        &[&json!({"name": name, "n": 1})],
    )
    .await
    .unwrap_or_else(|e| panic!("create_resource({name}): {}", describe(&e)))
    .get(0)
}

pub async fn uuids(c: &Client, sql: &str) -> Vec<Uuid> {
    let mut v: Vec<Uuid> = c
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    v.sort();
    v
}

pub fn sorted(mut v: Vec<Uuid>) -> Vec<Uuid> {
    v.sort();
    v
}

/// Resource names the session sees through `tenantry.resources`.
/// The names of every resource the context's tenant reads, sorted: its
/// subtree's from the table, and those shared with it through the fence
/// `resources_shared_with_me()` (the table's one policy covers the subtree).
pub async fn resource_names(c: &Client) -> Vec<String> {
    strings(
        c,
        "SELECT name FROM tenantry.resources
         UNION ALL SELECT name FROM tenantry.resources_shared_with_me() ORDER BY 1",
    )
    .await
}

pub async fn verified_tenant(c: &Client, key: &str) -> Option<String> {
    c.query_one("SELECT verify_api_key($1)->>'tenant_id'", &[&key])
        .await
        .unwrap()
        .get(0)
}

/// Appends request-log rows as the logger, all in the current hour.
pub async fn log_requests(logger: &Client, t: Uuid, users: &[Uuid]) {
    for u in users {
        logger
            .execute(
                "INSERT INTO tenantry.request_log (tenant_id, created_at, user_id, method, route, status)
                 VALUES ($1, date_trunc('hour', now()), $2, 'GET', '/resources', 200)",
                &[&t, u],
            )
            .await
            .unwrap_or_else(|e| panic!("logging a request: {}", describe(&e)));
    }
}

/// Runs the first `sql` block of the README's section `heading` through psql
/// as the superuser (an operator, as the README's reader is), failing on the
/// first error; returns psql's unaligned output.
pub async fn run_readme_sql(tdb: &TestDatabase, heading: &str) -> String {
    run_readme_sql_block(tdb, heading, 1).await
}

/// [`run_readme_sql`] for the `n`th `sql` block of the section (1: the first).
pub async fn run_readme_sql_block(tdb: &TestDatabase, heading: &str, n: usize) -> String {
    let sql = readme_sql_block(heading, n);
    let (stdout, stderr) = psql(tdb, &sql);
    // Nothing but the answers: no NOTICE a reader would wonder about (adopting
    // a table once said "trigger ... does not exist, skipping" twice).
    assert!(!stderr.contains("NOTICE"), "psql printed notices: {stderr}");
    stdout
}

/// The `n`th `sql` block (1: the first) of the README's section `heading`.
pub fn readme_sql_block(heading: &str, n: usize) -> String {
    let readme = include_str!("../../../../README.md");
    let section = readme
        .split(&format!("\n## {heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("README has the section {heading:?}"))
        .split("\n## ")
        .next()
        .unwrap();
    section
        .split("```sql\n")
        .nth(n)
        .unwrap_or_else(|| panic!("the section {heading:?} has sql block {n}"))
        .split("```")
        .next()
        .unwrap()
        .to_owned()
}

/// `sql` through psql as the superuser (an operator, as the README's reader
/// is), stopping at the first error, which fails the test: psql's unaligned
/// output and what it printed on stderr (notices and warnings).
pub fn psql(tdb: &TestDatabase, sql: &str) -> (String, String) {
    use std::io::Write;
    let psql = tenantry_embedded::PgBinaries::discover()
        .expect("PostgreSQL binaries")
        .bindir()
        .join("psql");
    let mut child = std::process::Command::new(psql)
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-f", "-", "-d"])
        .arg(tdb.superuser_url())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "psql failed: {stderr}\n{stdout}");
    (stdout, stderr)
}
