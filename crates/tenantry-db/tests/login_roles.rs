//! The doctor's `login_roles` rule: a login acting for tenants that can become one of PostgreSQL's built-in roles reaching past tenantry's grants (pg_read_all_data, pg_monitor, the database's owner, …) is a finding, proven by the attack each one opens.
//!
//! A test binary of its own: memberships in built-in roles are the cluster's,
//! and every other binary's tests expect `table_problems()` to find nothing.

use tenantry_db::{tables, testing::TestDatabase, TableProblem};
use tokio_postgres::{Client, Config, NoTls};

async fn connect(config: &Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("connecting");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The `login_roles` findings about `login`, as the doctor reports them.
async fn findings(su: &Client, login: &str) -> Vec<TableProblem> {
    tables::table_problems(su)
        .await
        .expect("the doctor's rules")
        .into_iter()
        .filter(|p| p.is_login_role() && p.table == format!("role {login}"))
        .collect()
}

#[tokio::test]
async fn a_login_acting_for_tenants_in_pg_read_all_data_reads_the_context_signing_keys_and_the_doctor_names_the_revoke(
) {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    // The server's own role may not read the signing keys: the control.
    let server = tdb.server_client().await;
    let denied = server
        .query("SELECT secret FROM tenantry.context_keys", &[])
        .await
        .expect_err("tenantry_server read the context keys");
    assert_eq!(denied.code().unwrap().code(), "42501", "{denied}");
    assert!(findings(&su, "tenantry_server").await.is_empty());

    // A login set up like the server's that an operator also gave
    // pg_read_all_data (a reporting or backup habit).
    let (login, config) = tdb
        .login_role("svc", &["tenantry_server", "pg_read_all_data"])
        .await;
    let attacker = connect(&config).await;
    let stolen = attacker
        .query("SELECT secret FROM tenantry.context_keys", &[])
        .await
        .expect("pg_read_all_data reads every table");
    assert!(!stolen.is_empty(), "the signing keys were read");

    let found = findings(&su, &login).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].problem.contains("pg_read_all_data")
            && found[0].problem.contains("tenantry.context_keys"),
        "{}",
        found[0]
    );
    assert_eq!(
        found[0].fix,
        format!("REVOKE pg_read_all_data FROM {login};")
    );
    // The server's login sees it too (its boot check runs the same rules).
    assert!(tdb
        .database()
        .table_problems()
        .await
        .unwrap()
        .iter()
        .any(|p| p.is_login_role() && p.table == format!("role {login}")));

    su.batch_execute(&found[0].fix).await.unwrap();
    assert!(findings(&su, &login).await.is_empty());
    let attacker = connect(&config).await;
    let denied = attacker
        .query("SELECT secret FROM tenantry.context_keys", &[])
        .await
        .expect_err("read after the revoke");
    assert_eq!(denied.code().unwrap().code(), "42501", "{denied}");
    drop(attacker);
    su.batch_execute(&format!("DROP ROLE {login}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn pg_monitor_given_through_a_team_role_is_one_finding_whose_fix_revokes_it_from_that_role() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let team_role = format!("monitoring_{}", uuid::Uuid::new_v4().simple());
    su.batch_execute(&format!(
        "CREATE ROLE {team_role} NOLOGIN; GRANT pg_monitor TO {team_role}"
    ))
    .await
    .unwrap();
    let (login, config) = tdb
        .login_role("svc", &["tenantry_server", &team_role])
        .await;
    // What it opens: another session's query text, which tenantry's roles
    // see as "<insufficient privilege>".
    let other = tdb.server_client().await;
    let marker = format!("another tenants query {}", uuid::Uuid::new_v4().simple());
    other
        .batch_execute(&format!("SELECT '{marker}'"))
        .await
        .unwrap();
    let watcher = connect(&config).await;
    let seen: i64 = watcher
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
            &[&marker],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1, "pg_monitor reads other sessions' queries");

    // pg_monitor, not each of its parts (pg_read_all_stats, ...): revoking
    // pg_monitor from the team's role ends them all.
    let found = findings(&su, &login).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].problem.contains("pg_monitor"), "{}", found[0]);
    assert_eq!(found[0].fix, format!("REVOKE pg_monitor FROM {team_role};"));
    su.batch_execute(&found[0].fix).await.unwrap();
    assert!(findings(&su, &login).await.is_empty());
    drop(watcher);
    su.batch_execute(&format!("DROP ROLE {login}; DROP ROLE {team_role}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_login_acting_for_tenants_that_owns_the_database_could_lock_every_tenant_out_and_is_a_finding(
) {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let (login, config) = tdb.login_role("svc", &["tenantry_server"]).await;
    su.batch_execute(&format!("ALTER DATABASE {} OWNER TO {login}", tdb.name()))
        .await
        .unwrap();
    // What it opens: the owner sets what every new session of every tenant
    // starts with (here harmlessly; a connection limit of 0 refuses them all).
    let owner = connect(&config).await;
    owner
        .batch_execute(&format!(
            "ALTER DATABASE {} SET statement_timeout = '1ms'; ALTER DATABASE {} RESET statement_timeout",
            tdb.name(),
            tdb.name()
        ))
        .await
        .expect("the owner alters the database");
    drop(owner);

    let found = findings(&su, &login).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].problem.contains("pg_database_owner")
            && found[0]
                .problem
                .contains(&format!("owns database {}", tdb.name())),
        "{}",
        found[0]
    );
    assert_eq!(
        found[0].fix,
        format!("ALTER DATABASE {} OWNER TO tenantry_owner;", tdb.name())
    );
    su.batch_execute(&found[0].fix).await.unwrap();
    assert!(findings(&su, &login).await.is_empty());
    su.batch_execute(&format!("DROP ROLE {login}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_operator_login_is_not_judged_as_acting_for_tenants() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    // A migration role: a member of tenantry_owner, not of the app roles.
    let (login, _) = tdb
        .login_role("migrator", &["tenantry_owner", "pg_read_all_data"])
        .await;
    assert!(findings(&su, &login).await.is_empty());
    su.batch_execute(&format!("DROP ROLE {login}"))
        .await
        .unwrap();
}

/// PostgreSQL 17 and later only (pg_maintain is new there; on older
/// versions the test checks that the role is absent and stops).
#[tokio::test]
async fn pg_maintain_lets_a_login_lock_every_tenants_table_and_is_a_finding() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let version: i32 = su
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    let exists: bool = su
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_maintain')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(exists, version >= 170000);
    if !exists {
        return;
    }
    let (login, config) = tdb
        .login_role("svc", &["tenantry_server", "pg_maintain"])
        .await;
    // What it opens: a lock on the table every tenant's resources are in.
    let attacker = connect(&config).await;
    attacker
        .batch_execute("BEGIN; LOCK TABLE tenantry.resources IN ACCESS EXCLUSIVE MODE; ROLLBACK")
        .await
        .expect("pg_maintain locks tenantry's tables");
    let found = findings(&su, &login).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].problem.contains("pg_maintain"), "{}", found[0]);
    su.batch_execute(&found[0].fix).await.unwrap();
    let denied = attacker
        .batch_execute("BEGIN; LOCK TABLE tenantry.resources IN ACCESS EXCLUSIVE MODE; ROLLBACK")
        .await
        .expect_err("locked after the revoke");
    assert_eq!(denied.code().unwrap().code(), "42501", "{denied}");
    assert!(findings(&su, &login).await.is_empty());
    drop(attacker);
    su.batch_execute(&format!("DROP ROLE {login}"))
        .await
        .unwrap();
}
