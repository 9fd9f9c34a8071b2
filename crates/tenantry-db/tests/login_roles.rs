//! The doctor's `login_roles`, `schema_owner` and `parameter_grants` rules: a login acting for tenants that can become one of PostgreSQL's built-in roles reaching past tenantry's grants (pg_read_all_data, pg_monitor, the database's owner, …), a role with CREATEROLE or REPLICATION, the owner of an adopted table's schema, or a role that may set the parameter the tenant context lives in is a finding, proven by the attack each one opens.
//!
//! A test binary of its own: memberships in built-in roles are the cluster's,
//! and every other binary's tests expect `table_problems()` to find nothing.
//! Every role a test makes is dropped when it ends, passed or failed
//! ([`Roles`]): on a shared server (`TENANTRY_TEST_DATABASE_URL`) a login left
//! behind would fail the doctor of every later test.

use serde_json::json;
use tenantry_db::{
    tables, testing::TestDatabase, Database, DbError, NewResource, NewTenant, TableProblem,
    TenantContext, TenantId,
};
use tokio_postgres::{Client, Config, NoTls};

/// Held shared by every test, and alone by the one that revokes a grant of
/// `tenantry_owner` (parameter grants are the cluster's, and without it no
/// context is entered in any database of it).
static CLUSTER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn connect(config: &Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("connecting");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Roles a test made, dropped (with what they own, the database included)
/// when the test ends, whether it passed or panicked.
struct Roles {
    superuser: Config,
    names: Vec<String>,
}

impl Roles {
    fn new(tdb: &TestDatabase) -> Self {
        Roles {
            superuser: tdb.superuser_config(),
            names: Vec::new(),
        }
    }

    /// A login set up like the server's (`login_role`), also a member of `also`.
    async fn login(&mut self, tdb: &TestDatabase, also: &[&str]) -> (String, Config) {
        let member_of: Vec<&str> = ["tenantry_server"]
            .into_iter()
            .chain(also.iter().copied())
            .collect();
        let (login, config) = tdb.login_role("svc", &member_of).await;
        self.names.push(login.clone());
        (login, config)
    }

    /// A NOLOGIN role of the team's.
    async fn team_role(&mut self, su: &Client, prefix: &str) -> String {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        su.batch_execute(&format!("CREATE ROLE {name} NOLOGIN"))
            .await
            .unwrap();
        self.names.push(name.clone());
        name
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let superuser = self.superuser.clone();
        let names = std::mem::take(&mut self.names);
        // Drop cannot await: a runtime of its own on a thread of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(async {
                    let su = connect(&superuser).await;
                    for name in names.iter().rev() {
                        let _ = su
                            .batch_execute(&format!(
                                "REASSIGN OWNED BY {name} TO CURRENT_USER; DROP OWNED BY {name}; DROP ROLE {name}"
                            ))
                            .await;
                    }
                })
        })
        .join();
    }
}

/// The `login_roles` findings about `login`, as the doctor reports them.
async fn findings(su: &Client, login: &str) -> Vec<TableProblem> {
    tables::table_problems(su)
        .await
        .expect("the doctor's rules")
        .into_iter()
        .filter(|p| p.is_cluster_problem() && p.table == format!("role {login}"))
        .collect()
}

/// Whether the server's own login finds a problem that `matches`: its boot
/// check runs the same rules as the doctor.
async fn boot_check_finds(tdb: &TestDatabase, matches: impl Fn(&TableProblem) -> bool) -> bool {
    tdb.database()
        .table_problems()
        .await
        .unwrap()
        .iter()
        .any(matches)
}

/// Runs every finding's fix, as the superuser an operator would be.
async fn apply(su: &Client, found: &[TableProblem]) {
    for p in found {
        su.batch_execute(&p.fix)
            .await
            .unwrap_or_else(|e| panic!("the fix of {p}: {e}"));
    }
}

/// Runs `sql` as `c` and checks that PostgreSQL refuses it for want of a
/// privilege (42501): the attack after its fix.
async fn refused(c: &Client, sql: &str, after: &str) {
    match c.batch_execute(sql).await {
        Ok(()) => panic!("{after}: {sql} succeeded"),
        Err(e) => assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{after}: {e}"),
    }
}

async fn server_version(su: &Client) -> i32 {
    su.query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_login_acting_for_tenants_in_pg_read_all_data_reads_the_context_signing_keys_and_the_doctor_names_the_revoke(
) {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let mut roles = Roles::new(&tdb);
    let su = tdb.superuser_client().await;
    // The server's own role may not read the signing keys: the control.
    let server = tdb.server_client().await;
    refused(
        &server,
        "SELECT secret FROM tenantry.context_keys",
        "tenantry_server read the context keys",
    )
    .await;
    assert!(findings(&su, "tenantry_server").await.is_empty());

    // A login set up like the server's that an operator also gave
    // pg_read_all_data (a reporting or backup habit).
    let (login, config) = roles.login(&tdb, &["pg_read_all_data"]).await;
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
    assert!(
        found[0]
            .fix
            .starts_with(&format!("REVOKE pg_read_all_data FROM {login}"))
            && found[0].fix.ends_with(" CASCADE;"),
        "{}",
        found[0]
    );
    // The server's login sees it too (its boot check runs the same rules).
    assert!(
        boot_check_finds(&tdb, |p| p.is_cluster_problem()
            && p.table == format!("role {login}"))
        .await
    );

    apply(&su, &found).await;
    assert!(findings(&su, &login).await.is_empty());
    let attacker = connect(&config).await;
    refused(
        &attacker,
        "SELECT secret FROM tenantry.context_keys",
        "read after the revoke",
    )
    .await;
}

/// From PostgreSQL 16 a role holds a membership once per grantor, and a
/// plain REVOKE ends only the current user's; a grant made onwards with
/// ADMIN OPTION makes a plain REVOKE fail. The fix ends them all (on 15,
/// where one grant per member is kept, the same statements do).
#[tokio::test]
async fn a_membership_granted_by_several_roles_and_passed_on_is_ended_by_the_fix() {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let mut roles = Roles::new(&tdb);
    let su = tdb.superuser_client().await;
    let granter = roles.team_role(&su, "granter").await;
    let onward = roles.team_role(&su, "onward").await;
    let (login, config) = roles.login(&tdb, &[]).await;
    su.batch_execute(&format!(
        "GRANT pg_read_all_data TO {granter} WITH ADMIN OPTION;
         SET ROLE {granter}; GRANT pg_read_all_data TO {login} WITH ADMIN OPTION; RESET ROLE;
         GRANT pg_read_all_data TO {login};"
    ))
    .await
    .unwrap();
    // The login passes it on with its ADMIN OPTION.
    let attacker = connect(&config).await;
    attacker
        .batch_execute(&format!("GRANT pg_read_all_data TO {onward}"))
        .await
        .unwrap();
    let grants: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_auth_members WHERE roleid = 'pg_read_all_data'::regrole AND member = $1::text::regrole",
            &[&login],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        grants,
        if server_version(&su).await >= 160000 {
            2
        } else {
            1
        }
    );

    let found = findings(&su, &login).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    apply(&su, &found).await;
    assert!(findings(&su, &login).await.is_empty());
    refused(
        &connect(&config).await,
        "SELECT secret FROM tenantry.context_keys",
        "read after the fix",
    )
    .await;
}

#[tokio::test]
async fn pg_monitor_given_through_a_team_role_is_one_finding_whose_fix_revokes_it_from_that_role() {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let mut roles = Roles::new(&tdb);
    let su = tdb.superuser_client().await;
    let team_role = roles.team_role(&su, "monitoring").await;
    su.batch_execute(&format!("GRANT pg_monitor TO {team_role}"))
        .await
        .unwrap();
    let (login, config) = roles.login(&tdb, &[&team_role]).await;
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
    assert!(
        found[0]
            .fix
            .starts_with(&format!("REVOKE pg_monitor FROM {team_role}")),
        "{}",
        found[0]
    );
    apply(&su, &found).await;
    assert!(findings(&su, &login).await.is_empty());
}

#[tokio::test]
async fn a_login_acting_for_tenants_that_owns_the_database_could_lock_every_tenant_out_and_is_a_finding(
) {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let mut roles = Roles::new(&tdb);
    let su = tdb.superuser_client().await;
    let (login, config) = roles.login(&tdb, &[]).await;
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
    apply(&su, &found).await;
    assert!(findings(&su, &login).await.is_empty());
}

/// CREATEROLE on PostgreSQL 15 grants any role but a superuser, tenantry's
/// owner among them; REPLICATION decodes every change where wal_level is
/// logical. Attributes are not inherited: a role holding one lends it
/// after SET ROLE, so the role the login can become is named.
#[tokio::test]
async fn a_login_acting_for_tenants_that_can_become_a_role_with_createrole_or_replication_is_a_finding(
) {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let mut roles = Roles::new(&tdb);
    let su = tdb.superuser_client().await;
    let team_role = roles.team_role(&su, "ops").await;
    su.batch_execute(&format!("ALTER ROLE {team_role} CREATEROLE REPLICATION"))
        .await
        .unwrap();
    let (login, config) = roles.login(&tdb, &[&team_role]).await;

    let version = server_version(&su).await;
    // From PostgreSQL 16 CREATEROLE grants only roles held WITH ADMIN
    // OPTION: no finding there.
    let attributes: &[&str] = if version < 160000 {
        &["CREATEROLE", "REPLICATION"]
    } else {
        &["REPLICATION"]
    };
    let found = findings(&su, &login).await;
    assert_eq!(found.len(), attributes.len(), "{found:#?}");
    for (p, attr) in found.iter().zip(attributes) {
        assert!(
            p.problem
                .contains(&format!("{team_role}, which has {attr}")),
            "{p}"
        );
        assert_eq!(p.fix, format!("ALTER ROLE {team_role} NO{attr};"));
    }
    // The attack on PostgreSQL 15: the login makes itself an operator.
    let attacker = connect(&config).await;
    let escalation = attacker
        .batch_execute(&format!(
            "SET ROLE {team_role}; GRANT tenantry_owner TO {login}; RESET ROLE"
        ))
        .await;
    if version < 160000 {
        escalation.expect("CREATEROLE grants tenantry_owner on PostgreSQL 15");
        su.batch_execute(&format!("REVOKE tenantry_owner FROM {login}"))
            .await
            .unwrap();
    } else {
        let e = escalation.expect_err("PostgreSQL 16 needs ADMIN OPTION on tenantry_owner");
        assert_eq!(e.code().unwrap().code(), "42501", "{e}");
    }
    apply(&su, &found).await;
    assert!(findings(&su, &login).await.is_empty());
}

#[tokio::test]
async fn an_operator_login_is_not_judged_as_acting_for_tenants() {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let mut roles = Roles::new(&tdb);
    let su = tdb.superuser_client().await;
    // A migration role: a member of tenantry_owner, not of the app roles.
    let (login, _) = tdb
        .login_role("migrator", &["tenantry_owner", "pg_read_all_data"])
        .await;
    roles.names.push(login.clone());
    assert!(findings(&su, &login).await.is_empty());
    // A login granted only a narrow app role acts for tenants all the same.
    let (narrow, _) = tdb
        .login_role("narrow", &["tenantry_app_own", "pg_read_all_data"])
        .await;
    roles.names.push(narrow.clone());
    assert_eq!(findings(&su, &narrow).await.len(), 1);
}

/// PostgreSQL 17 and later only (pg_maintain is new there; on older
/// versions the test checks that the role is absent and stops).
#[tokio::test]
async fn pg_maintain_lets_a_login_lock_every_tenants_table_and_is_a_finding() {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let mut roles = Roles::new(&tdb);
    let su = tdb.superuser_client().await;
    let exists: bool = su
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_maintain')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(exists, server_version(&su).await >= 170000);
    if !exists {
        return;
    }
    let (login, config) = roles.login(&tdb, &["pg_maintain"]).await;
    // What it opens: a lock on the table every tenant's resources are in.
    let attacker = connect(&config).await;
    attacker
        .batch_execute("BEGIN; LOCK TABLE tenantry.resources IN ACCESS EXCLUSIVE MODE; ROLLBACK")
        .await
        .expect("pg_maintain locks tenantry's tables");
    let found = findings(&su, &login).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].problem.contains("pg_maintain"), "{}", found[0]);
    apply(&su, &found).await;
    refused(
        &attacker,
        "BEGIN; LOCK TABLE tenantry.resources IN ACCESS EXCLUSIVE MODE; ROLLBACK",
        "locked after the revoke",
    )
    .await;
    assert!(findings(&su, &login).await.is_empty());
}

/// A schema's owner may DROP every table in it: a team whose service login
/// also runs its migrations owns its schema, and SQL injected into the app
/// then drops every tenant's rows. adopt_table refuses such a table; the
/// doctor names one whose schema changed hands after its adoption.
#[tokio::test]
async fn an_adopted_tables_schema_owned_by_a_role_acting_for_tenants_is_refused_and_named() {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let mut roles = Roles::new(&tdb);
    let su = tdb.superuser_client().await;
    let team_role = roles.team_role(&su, "team").await;
    let (_login, config) = roles.login(&tdb, &[&team_role]).await;
    su.batch_execute(&format!(
        "CREATE SCHEMA app AUTHORIZATION {team_role};
         CREATE TABLE app.notes (tenant_id uuid NOT NULL, id bigint NOT NULL, body text,
                                 PRIMARY KEY (tenant_id, id));"
    ))
    .await
    .unwrap();
    let adoption = su
        .batch_execute("SELECT tenantry.adopt_table('app.notes')")
        .await
        .expect_err("adopted in a schema a login acting for tenants owns");
    let db_error = adoption.as_db_error().unwrap();
    assert_eq!(db_error.code().code(), "TN422", "{db_error:?}");
    assert!(
        db_error.message().contains("[schema_owner]"),
        "{}",
        db_error.message()
    );
    let adopted: i64 = su
        .query_one(
            "SELECT count(*) FROM tenantry.tenant_tables WHERE table_id = 'app.notes'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(adopted, 0, "nothing changed");

    // Adopted while the schema was the migration role's, then handed over.
    su.batch_execute(&format!(
        "ALTER SCHEMA app OWNER TO CURRENT_USER;
         SELECT tenantry.adopt_table('app.notes');
         ALTER SCHEMA app OWNER TO {team_role};"
    ))
    .await
    .unwrap();
    let attacker = connect(&config).await;
    attacker
        .batch_execute("BEGIN; DROP TABLE app.notes; ROLLBACK")
        .await
        .expect("the schema's owner drops the adopted table");
    let found: Vec<TableProblem> = tables::table_problems(&su)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.rule == "schema_owner")
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].table, "app.notes");
    assert!(
        found[0]
            .fix
            .starts_with("ALTER SCHEMA app OWNER TO <your migration role>;"),
        "{}",
        found[0]
    );
    su.batch_execute("ALTER SCHEMA app OWNER TO CURRENT_USER")
        .await
        .unwrap();
    refused(
        &attacker,
        "BEGIN; DROP TABLE app.notes; ROLLBACK",
        "dropped after the fix",
    )
    .await;
    attacker.batch_execute("ROLLBACK").await.ok();
    assert!(tables::table_problems(&su)
        .await
        .unwrap()
        .iter()
        .all(|p| p.rule != "schema_owner"));
}

/// CREATE on a schema on the search path (public keeps it for PUBLIC in a
/// database made before PostgreSQL 15) lets SQL injected into the app plant
/// a function that an operator's unqualified call, or another tenant's
/// request, runs; CREATE on the database a schema named like an app role,
/// which `"$user"` puts first. Privileges of this database: no test beside
/// it is touched.
#[tokio::test]
async fn a_login_acting_for_tenants_that_may_create_in_a_schema_or_the_database_plants_objects_and_is_a_finding(
) {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let server = tdb.server_client().await;
    let plant = "CREATE FUNCTION public.set_tenant_context_local(t uuid) RETURNS text \
                 LANGUAGE sql AS 'SELECT NULL::text'";

    su.batch_execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        .await
        .unwrap();
    server
        .batch_execute(plant)
        .await
        .expect("planted in public");
    server
        .batch_execute("DROP FUNCTION public.set_tenant_context_local(uuid)")
        .await
        .unwrap();
    let found = findings(&su, "tenantry_server").await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0]
            .problem
            .contains("in schema public (through PUBLIC)"),
        "{}",
        found[0]
    );
    assert!(
        found[0].fix.starts_with(
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT CREATE ON SCHEMA public TO tenantry_owner;"
        ),
        "{}",
        found[0]
    );
    apply(&su, &found).await;
    refused(&server, plant, "planted after the fix").await;

    su.batch_execute(&format!(
        "GRANT CREATE ON DATABASE {} TO tenantry_server",
        tdb.name()
    ))
    .await
    .unwrap();
    server
        .batch_execute("CREATE SCHEMA tenantry_app; DROP SCHEMA tenantry_app")
        .await
        .expect("a schema named like the app role");
    let found = findings(&su, "tenantry_server").await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0]
            .problem
            .contains("in this database (a schema of its own) (through tenantry_server)"),
        "{}",
        found[0]
    );
    assert_eq!(
        found[0].fix,
        format!(
            "REVOKE CREATE ON DATABASE {} FROM tenantry_server;",
            tdb.name()
        )
    );
    apply(&su, &found).await;
    refused(
        &server,
        "CREATE SCHEMA tenantry_app",
        "a schema made after the fix",
    )
    .await;
    assert!(findings(&su, "tenantry_server").await.is_empty());
}

/// A prepared transaction keeps its locks with no session and no timeout
/// (PREPARE TRANSACTION works where max_prepared_transactions is above 0,
/// as Citus needs): SQL injected into the app holds every tenant's writes
/// back that way until an operator ends it. The doctor names one older than
/// ten seconds with the ROLLBACK PREPARED that ends it.
#[tokio::test]
async fn a_prepared_transaction_of_the_app_role_holding_a_lock_is_named_by_the_doctor_and_its_fix_ends_it(
) {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let enabled: String = su
        .query_one("SHOW max_prepared_transactions", &[])
        .await
        .unwrap()
        .get(0);
    if enabled == "0" {
        // A shared server (TENANTRY_TEST_DATABASE_URL) without them.
        return;
    }
    let gid = format!("innocent_{}", uuid::Uuid::new_v4().simple());
    let attacker = tdb.server_client().await;
    attacker
        .batch_execute(&format!(
            "BEGIN; SET LOCAL ROLE tenantry_app;
             LOCK TABLE tenantry.resources IN EXCLUSIVE MODE;
             PREPARE TRANSACTION '{gid}'"
        ))
        .await
        .expect("prepared with a lock");
    drop(attacker);
    // Every tenant's writes wait behind it, with no session to end.
    let victim = tdb.server_client().await;
    let blocked = victim
        .batch_execute(
            "BEGIN; SET LOCAL lock_timeout = '200ms'; SET LOCAL ROLE tenantry_app;
             UPDATE tenantry.resources SET name = name WHERE false",
        )
        .await
        .expect_err("a write past the prepared lock");
    assert_eq!(blocked.code().unwrap().code(), "55P03", "{blocked}");
    victim.batch_execute("ROLLBACK").await.unwrap();

    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let found: Vec<TableProblem> = tables::table_problems(&su)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.rule == "prepared_transactions")
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].table, "role tenantry_app");
    assert_eq!(found[0].fix, format!("ROLLBACK PREPARED '{gid}';"));
    apply(&su, &found).await;
    victim
        .batch_execute(
            "BEGIN; SET LOCAL lock_timeout = '200ms'; SET LOCAL ROLE tenantry_app;
             UPDATE tenantry.resources SET name = name WHERE false; COMMIT",
        )
        .await
        .expect("writes go on once it is rolled back");
    assert!(tables::table_problems(&su)
        .await
        .unwrap()
        .iter()
        .all(|p| p.rule != "prepared_transactions"));
}

/// PostgreSQL 16 grants a role made by a CREATEROLE role to its maker WITH
/// ADMIN OPTION but neither INHERIT nor SET: the maker cannot use it, so a
/// DBA's login that made the service login does not act for tenants (and
/// before 16 the maker is no member at all).
#[tokio::test]
async fn a_dba_login_that_made_the_service_login_is_not_judged_as_acting_for_tenants() {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let mut roles = Roles::new(&tdb);
    let su = tdb.superuser_client().await;
    let (dba, config) = tdb.login_role("dba", &[]).await;
    roles.names.push(dba.clone());
    su.batch_execute(&format!("ALTER ROLE {dba} CREATEROLE REPLICATION"))
        .await
        .unwrap();
    let service = format!("service_{}", uuid::Uuid::new_v4().simple());
    connect(&config)
        .await
        .batch_execute(&format!("CREATE ROLE {service} LOGIN"))
        .await
        .unwrap();
    roles.names.push(service.clone());
    su.batch_execute(&format!("GRANT tenantry_server TO {service}"))
        .await
        .unwrap();
    if server_version(&su).await >= 160000 {
        let member: bool = su
            .query_one(
                "SELECT pg_has_role($1::text::name, $2::text::name, 'MEMBER')",
                &[&dba, &service],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            member,
            "PostgreSQL 16 made the DBA a member of what it made"
        );
    }
    assert!(findings(&su, &dba).await.is_empty());
    assert!(findings(&su, &service).await.is_empty());
}

/// A tenant of its own with one resource, made through the library.
async fn tenant_with_resource(db: &Database) -> (TenantId, tenantry_db::ResourceId) {
    let mut admin = db.admin("parameter-test").await.unwrap();
    let t = admin
        .create_tenant(&NewTenant {
            name: "victim".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .tenant_id;
    admin.commit().await.unwrap();
    let mut scope = db.tenant(TenantContext::new(t)).await.unwrap();
    let r = scope
        .create_resource(&NewResource {
            name: "victim-doc".into(),
            data: json!({"secret": 1}).into(),
        })
        .await
        .unwrap()
        .id;
    scope.commit().await.unwrap();
    (t, r)
}

/// The `parameter_grants` findings about `parameter`.
async fn parameter_findings(su: &Client, parameter: &str) -> Vec<TableProblem> {
    tables::table_problems(su)
        .await
        .expect("the doctor's rules")
        .into_iter()
        .filter(|p| p.rule == "parameter_grants" && p.table == format!("parameter {parameter}"))
        .collect()
}

/// What tenantry_app reads of tenantry.resources on `c` with the session's
/// context as it stands (a forged one, when the attack worked).
async fn names_read_as_app(c: &Client) -> Vec<String> {
    c.batch_execute("SET ROLE tenantry_app").await.unwrap();
    let names = c
        .query("SELECT name FROM tenantry.resources", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    c.batch_execute("RESET ROLE").await.unwrap();
    names
}

/// A forged context value: what the policies read after ",v" is the tenant.
fn forged(t: TenantId) -> String {
    format!("tenantry_v1_forged,v{}", t.as_uuid().simple())
}

#[tokio::test]
async fn a_role_the_server_login_can_become_with_set_on_the_context_parameter_forges_any_tenants_context_and_is_a_finding(
) {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let mut roles = Roles::new(&tdb);
    let su = tdb.superuser_client().await;
    let (victim, _) = tenant_with_resource(&tdb.database()).await;
    assert!(parameter_findings(&su, "backtrace_functions")
        .await
        .is_empty());

    // A team role given SET on the parameter (a DBA turning backtraces on
    // for a debugging session), granted to a login set up like the server's.
    let ops = roles.team_role(&su, "ops").await;
    su.batch_execute(&format!(
        "GRANT SET ON PARAMETER backtrace_functions TO {ops}"
    ))
    .await
    .unwrap();
    let (login, config) = roles.login(&tdb, &[&ops]).await;
    let attacker = connect(&config).await;
    let forge = format!(
        "SET ROLE {ops}; SET backtrace_functions = '{}'; RESET ROLE",
        forged(victim)
    );
    attacker.batch_execute(&forge).await.unwrap();
    assert_eq!(
        names_read_as_app(&attacker).await,
        ["victim-doc"],
        "the forged context reads the victim's rows"
    );

    let found = parameter_findings(&su, "backtrace_functions").await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].is_cluster_problem()
            && found[0].problem.contains(&ops)
            && found[0].fix == format!("REVOKE SET ON PARAMETER backtrace_functions FROM {ops};"),
        "{}",
        found[0]
    );
    // The server's login sees it too (its boot check runs the same rules).
    assert!(boot_check_finds(&tdb, |p| p.rule == "parameter_grants").await);

    apply(&su, &found).await;
    assert!(parameter_findings(&su, "backtrace_functions")
        .await
        .is_empty());
    let attacker = connect(&config).await;
    refused(&attacker, &forge, "forged after the revoke").await;
    assert!(findings(&su, &login).await.is_empty());
}

#[tokio::test]
async fn defaults_of_tenantrys_parameters_in_a_roles_or_the_databases_settings_are_findings_whose_fixes_reset_them(
) {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let mut roles = Roles::new(&tdb);
    let su = tdb.superuser_client().await;
    let (victim, _) = tenant_with_resource(&tdb.database()).await;
    let (login, config) = roles.login(&tdb, &[]).await;

    // A superuser's ALTER ROLE ... SET: every session of the login starts
    // in the victim's context without proving it.
    su.batch_execute(&format!(
        "ALTER ROLE {login} SET backtrace_functions = '{}'",
        forged(victim)
    ))
    .await
    .unwrap();
    // And a database default that turns triggers and foreign keys off.
    su.batch_execute(&format!(
        "ALTER DATABASE {} SET session_replication_role = replica",
        tdb.name()
    ))
    .await
    .unwrap();
    let session = connect(&config).await;
    assert_eq!(names_read_as_app(&session).await, ["victim-doc"]);

    let context = parameter_findings(&su, "backtrace_functions").await;
    assert_eq!(context.len(), 1, "{context:#?}");
    assert!(
        context[0].problem.contains(&format!("role {login}"))
            && context[0].fix == format!("ALTER ROLE {login} RESET backtrace_functions;"),
        "{}",
        context[0]
    );
    let replication = parameter_findings(&su, "session_replication_role").await;
    assert_eq!(replication.len(), 1, "{replication:#?}");
    assert!(
        replication[0]
            .problem
            .contains("triggers and foreign keys are off")
            && replication[0].fix
                == format!(
                    "ALTER DATABASE {} RESET session_replication_role;",
                    tdb.name()
                ),
        "{}",
        replication[0]
    );

    apply(&su, &context).await;
    apply(&su, &replication).await;
    assert!(parameter_findings(&su, "backtrace_functions")
        .await
        .is_empty());
    assert!(parameter_findings(&su, "session_replication_role")
        .await
        .is_empty());
    let session = connect(&config).await;
    assert!(names_read_as_app(&session).await.is_empty());
    let replication: String = session
        .query_one("SELECT current_setting('session_replication_role')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(replication, "origin");
}

/// Runs `sql` as the superuser when dropped, passed or failed: what a test
/// changed of the cluster (a grant of tenantry_owner's, an attribute of
/// tenantry_app) comes back for every other test of it.
struct RestoreOnDrop {
    superuser: Config,
    sql: &'static str,
}

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        let (superuser, sql) = (self.superuser.clone(), self.sql);
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(async {
                    connect(&superuser)
                        .await
                        .batch_execute(sql)
                        .await
                        .expect("the cluster restored")
                })
        })
        .join();
    }
}

#[tokio::test]
async fn without_its_grant_on_the_context_parameter_the_owner_enters_no_context_the_server_answers_unavailable_and_the_doctor_names_the_grant(
) {
    if std::env::var_os("TENANTRY_TEST_DATABASE_URL").is_some() {
        // The revoke is the cluster's: every other test binary on a shared
        // server would fail while it lasts.
        eprintln!("skipped on a shared server (TENANTRY_TEST_DATABASE_URL)");
        return;
    }
    let _alone = CLUSTER.write().await;
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let db = tdb.database();
    let (t, r) = tenant_with_resource(&db).await;
    let read = |db: Database| async move {
        let scope = db.tenant(TenantContext::new(t)).await?;
        Ok::<_, DbError>(scope.get_resource_and_commit(r).await?.name)
    };
    assert_eq!(read(db.clone()).await.unwrap(), "victim-doc");

    // Refused in a transaction first: the doctor's finding and its fix,
    // seen before anything is committed.
    su.batch_execute("BEGIN; REVOKE SET ON PARAMETER backtrace_functions FROM tenantry_owner")
        .await
        .unwrap();
    let found = parameter_findings(&su, "backtrace_functions").await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].is_cluster_problem()
            && found[0]
                .problem
                .contains("every request of the server fails")
            && found[0]
                .fix
                .starts_with("GRANT SET ON PARAMETER backtrace_functions TO tenantry_owner;"),
        "{}",
        found[0]
    );
    apply(&su, &found).await;
    assert!(parameter_findings(&su, "backtrace_functions")
        .await
        .is_empty());
    su.batch_execute("ROLLBACK").await.unwrap();

    // Committed: on the connection the pool holds (its session opened
    // before) and on a new pool's, every transaction is refused as the
    // server's outage (503), not as the client's fault (it was 403).
    let _restore = RestoreOnDrop {
        superuser: tdb.superuser_config(),
        sql: "GRANT SET ON PARAMETER backtrace_functions TO tenantry_owner",
    };
    su.batch_execute("REVOKE SET ON PARAMETER backtrace_functions FROM tenantry_owner")
        .await
        .unwrap();
    for (which, db) in [("open", db.clone()), ("new", tdb.database())] {
        let refused = read(db).await;
        assert!(
            matches!(refused, Err(DbError::Unavailable(_))),
            "{which} connection: {refused:?}"
        );
    }
    let refused = db.tenant(TenantContext::new(t)).await.map(|_| ());
    assert!(
        matches!(refused, Err(DbError::Unavailable(_))),
        "{refused:?}"
    );
    let found = parameter_findings(&su, "backtrace_functions").await;
    assert_eq!(found.len(), 1, "{found:#?}");
    apply(&su, &found).await;
    assert_eq!(read(tdb.database()).await.unwrap(), "victim-doc");
    // The caller's own SQL setting the parameter stays the client's
    // refusal (403): only tenantry's own functions' refusal is an outage.
    let mut scope = db
        .tenant(TenantContext::new(t))
        .await
        .expect("a context after the grant");
    let own_sql = scope
        .query::<(String,)>("SELECT set_config('backtrace_functions', 'x', true)", &[])
        .await;
    assert!(matches!(own_sql, Err(DbError::Forbidden(_))), "{own_sql:?}");
}

/// The `own_grants` findings, as (object, fix).
async fn own_grants(su: &Client) -> Vec<(String, String)> {
    tables::table_problems(su)
        .await
        .expect("the doctor's rules")
        .into_iter()
        .filter(|p| p.rule == "own_grants")
        .map(|p| (p.table, p.fix))
        .collect()
}

/// tenantry's own objects changed by hand (a DBA's review: the doctor
/// checked only their policies): a grant on the context signing keys, which
/// the app role then reads; a grant of tenantry's revoked; a table handed to
/// another owner; an index and a function planted in schema tenantry; the
/// owner role's CREATE on the database lost. Each is named, and the fixes,
/// run top to bottom, put everything back as migrate made it.
#[tokio::test]
async fn own_grants_names_every_owner_and_privilege_of_tenantrys_objects_changed_since_migrate() {
    let _cluster = CLUSTER.read().await;
    let tdb = TestDatabase::new().await;
    let mut roles = Roles::new(&tdb);
    let su = tdb.superuser_client().await;
    assert_eq!(own_grants(&su).await, []);
    let team = roles.team_role(&su, "reporting").await;
    su.batch_execute(&format!(
        "GRANT SELECT ON tenantry.context_keys TO PUBLIC;
         REVOKE SELECT ON tenantry.roles FROM tenantry_app;
         ALTER TABLE tenantry.audit_log OWNER TO {team};
         CREATE INDEX resources_by_name ON tenantry.resources (name);
         CREATE INDEX resources_tenant_by_name ON tenantry.resources (tenant_id, name);
         CREATE FUNCTION tenantry.planted() RETURNS int LANGUAGE sql AS 'SELECT 1';
         REVOKE CREATE ON DATABASE {db} FROM tenantry_owner;",
        db = tdb.name()
    ))
    .await
    .unwrap();
    let attack = "SET ROLE tenantry_app; SELECT secret FROM tenantry.context_keys";
    let server = tdb.server_client().await;
    server.batch_execute(attack).await.expect("the keys read");
    server.batch_execute("RESET ROLE").await.unwrap();

    let found = own_grants(&su).await;
    let named =
        |object: &str, fix: &str| found.iter().any(|(o, f)| o == object && f.starts_with(fix));
    assert!(
        named(
            "table tenantry.context_keys",
            "REVOKE SELECT ON TABLE tenantry.context_keys FROM PUBLIC;"
        ),
        "{found:#?}"
    );
    assert!(
        named(
            "table tenantry.roles",
            "GRANT SELECT ON TABLE tenantry.roles TO tenantry_app;"
        ),
        "{found:#?}"
    );
    assert!(
        named(
            "table tenantry.audit_log",
            "ALTER TABLE tenantry.audit_log OWNER TO tenantry_owner;"
        ),
        "{found:#?}"
    );
    assert!(
        named(
            "index tenantry.resources_by_name",
            "DROP INDEX CONCURRENTLY tenantry.resources_by_name;"
        ),
        "{found:#?}"
    );
    assert!(
        named(
            "function tenantry.planted()",
            "ALTER ROUTINE tenantry.planted() SET SCHEMA public;"
        ),
        "{found:#?}"
    );
    // An operator's index led by tenant_id is theirs to add (tenant-schema
    // steps bring one to the schema tenants' tables).
    assert!(
        !found
            .iter()
            .any(|(o, _)| o.contains("resources_tenant_by_name")),
        "{found:#?}"
    );
    assert!(
        named(
            &format!("database {}", tdb.name()),
            &format!("GRANT CREATE ON DATABASE {} TO tenantry_owner;", tdb.name())
        ),
        "{found:#?}"
    );
    // The server's login sees them too (its boot check refuses them).
    assert!(boot_check_finds(&tdb, |p| p.rule == "own_grants" && p.blocks_serving()).await);

    for (_, fix) in &found {
        su.batch_execute(fix)
            .await
            .unwrap_or_else(|e| panic!("{fix}: {e}"));
    }
    su.batch_execute("DROP FUNCTION public.planted()")
        .await
        .unwrap();
    assert_eq!(own_grants(&su).await, []);
    refused(&server, attack, "after the fixes").await;
}

/// `ALTER ROLE tenantry_app BYPASSRLS` (a DBA's review): every request of
/// the server acts as that role, so row level security stopped applying to
/// any of them, and the doctor was silent. Named with its fix, which the
/// attack then fails against.
#[tokio::test]
async fn bypassrls_on_a_role_every_request_acts_as_is_a_finding_whose_fix_restores_isolation() {
    if std::env::var_os("TENANTRY_TEST_DATABASE_URL").is_some() {
        eprintln!("skipped on a shared server (TENANTRY_TEST_DATABASE_URL)");
        return;
    }
    let _alone = CLUSTER.write().await;
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let (_victim, _) = tenant_with_resource(&tdb.database()).await;
    let _restore = RestoreOnDrop {
        superuser: tdb.superuser_config(),
        sql: "ALTER ROLE tenantry_app NOBYPASSRLS",
    };
    su.batch_execute("ALTER ROLE tenantry_app BYPASSRLS")
        .await
        .unwrap();
    // No context at all, and every tenant's rows.
    let server = tdb.server_client().await;
    assert_eq!(names_read_as_app(&server).await, ["victim-doc"]);

    let found: Vec<TableProblem> = tables::table_problems(&su)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.table == "role tenantry_app")
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].is_cluster_problem() && found[0].fix == "ALTER ROLE tenantry_app NOBYPASSRLS;",
        "{}",
        found[0]
    );
    apply(&su, &found).await;
    let server = tdb.server_client().await;
    assert!(names_read_as_app(&server).await.is_empty());
}

/// The `server_roles` findings.
async fn server_roles(su: &Client) -> Vec<TableProblem> {
    tables::table_problems(su)
        .await
        .expect("the doctor's rules")
        .into_iter()
        .filter(|p| p.rule == "server_roles")
        .collect()
}

/// A membership of tenantry's roles revoked by hand (an operations review:
/// without tenantry_logger the server dropped every request-log row and
/// answered 200; without tenantry_app every request 503) is a critical
/// finding whose fix grants it back, and `migrate` puts it back even when
/// nothing else is pending.
#[tokio::test]
async fn a_membership_of_tenantrys_roles_revoked_by_hand_is_named_by_the_doctor_and_put_back_by_migrate(
) {
    if std::env::var_os("TENANTRY_TEST_DATABASE_URL").is_some() {
        // Memberships are the cluster's: every other test binary on a
        // shared server would fail while one is revoked.
        eprintln!("skipped on a shared server (TENANTRY_TEST_DATABASE_URL)");
        return;
    }
    let _alone = CLUSTER.write().await;
    let tdb = TestDatabase::new().await;
    let mut su = tdb.superuser_client().await;
    assert_eq!(server_roles(&su).await, []);

    // In a transaction: the findings and their fixes.
    su.batch_execute(
        "BEGIN; REVOKE tenantry_logger FROM tenantry_server; REVOKE tenantry_app_shared FROM tenantry_app",
    )
    .await
    .unwrap();
    let found = server_roles(&su).await;
    let mut fixes: Vec<&str> = found.iter().map(|p| p.fix.as_str()).collect();
    fixes.sort_unstable();
    assert_eq!(
        fixes,
        [
            "GRANT tenantry_app_shared TO tenantry_app; -- or run tenantry migrate",
            "GRANT tenantry_logger TO tenantry_server; -- or run tenantry migrate",
        ],
        "{found:#?}"
    );
    assert!(found.iter().all(TableProblem::is_cluster_problem));
    assert!(
        found
            .iter()
            .any(|p| p.problem.contains("writes no request-log row")),
        "{found:#?}"
    );
    apply(&su, &found).await;
    assert_eq!(server_roles(&su).await, []);
    su.batch_execute("ROLLBACK").await.unwrap();

    // Committed: migrate, with nothing pending, grants it back.
    let _restore = RestoreOnDrop {
        superuser: tdb.superuser_config(),
        sql: "GRANT tenantry_logger TO tenantry_server",
    };
    su.batch_execute("REVOKE tenantry_logger FROM tenantry_server")
        .await
        .unwrap();
    assert_eq!(server_roles(&su).await.len(), 1);
    let applied = tenantry_db::migrate::migrate(&mut su).await.unwrap();
    assert!(applied.is_empty(), "{applied:?}");
    assert_eq!(server_roles(&su).await, []);
}
