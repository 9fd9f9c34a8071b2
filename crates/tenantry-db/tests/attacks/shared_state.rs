//! Built-ins that read or keep state of the whole server (issue 10, finding
//! 10): which of them the tenant roles may still call, and why; advisory
//! locks; sequences; and that psql's `\d` commands still work for them.

use std::process::Command;

use crate::common::{exec, strings};
use crate::helpers::{begin_as, fails, rollback, world};

/// Groups of `pg_catalog` functions that read or keep shared state, each a
/// regular expression over the function's signature.
const CATEGORIES: &[(&str, &str)] = &[
    ("large objects", r"^(lo_\w+|loread|lowrite)\("),
    ("advisory locks", r"advisory"),
    (
        "notifications",
        r"^pg_(notify|listening_channels|notification_queue_usage)\(",
    ),
    (
        "sequences",
        r"^(nextval|currval|setval|lastval|pg_sequence_last_value|pg_sequence_parameters)\(",
    ),
    ("statistics", r"^pg_stat_"),
    (
        "other sessions",
        r"^pg_(lock_status|blocking_pids|safe_snapshot_blocking_pids|isolation_test_session_is_blocked|prepared_xact|get_multixact_members|cancel_backend|terminate_backend|backend_pid)\(",
    ),
    (
        "transactions",
        r"^(txid_current\w*\(|txid_status\(|pg_current_xact_id\w*\(|pg_current_snapshot\(|pg_xact_status\(|pg_last_committed_xact\(|pg_xact_commit_timestamp\w*\(|age\(xid\)|mxid_age\()",
    ),
    (
        "WAL and control data",
        r"^pg_(current_wal\w*|last_wal\w*|last_xact_replay_timestamp|control_\w+|is_in_recovery|available_wal_summaries|get_wal_summarizer_state|wal_summary_contents)\(",
    ),
    (
        "sizes and files",
        r"^pg_(database_size|tablespace_size|relation_size|total_relation_size|table_size|indexes_size|relation_filenode|relation_filepath|filenode_relation)\(",
    ),
    (
        "partitions",
        r"^pg_(partition_tree|partition_ancestors|partition_root|get_partition_constraintdef)\(",
    ),
    (
        "server files",
        r"^pg_(ls_\w+|read_\w+|stat_file|rotate_logfile\w*)\(",
    ),
    (
        "session settings",
        r"^(current_setting|set_config|pg_show_all_settings)\(",
    ),
];

/// What stays executable for the tenant roles in those groups, and why.
const REMAINING: &[(&str, &str, &str)] = &[
    ("notifications", "pg_listening_channels()", "the caller's own LISTENs"),
    ("notifications", "pg_notification_queue_usage()", "a fraction of the queue; tenantry sends no notifications, and the NOTIFY statement fills it anyway"),
    ("notifications", "pg_notify(text,text)", "the NOTIFY and LISTEN statements cannot be revoked, so this would hide nothing; tenantry sends no notifications, so only sessions that agree to talk use a channel"),
    ("sequences", "currval(regclass)", "each checks the privileges of the sequence it is given, and the tenant roles hold none (no_sequence_is_usable_by_the_tenant_roles)"),
    ("sequences", "lastval()", "the caller's own last nextval"),
    ("sequences", "nextval(regclass)", "checks the sequence's privileges"),
    ("sequences", "pg_sequence_last_value(regclass)", "checks the sequence's privileges"),
    ("sequences", "pg_sequence_parameters(oid)", "checks the sequence's privileges"),
    ("sequences", "setval(regclass,bigint)", "checks the sequence's privileges"),
    ("sequences", "setval(regclass,bigint,boolean)", "checks the sequence's privileges"),
    ("other sessions", "pg_backend_pid()", "the caller's own backend"),
    ("other sessions", "pg_cancel_backend(integer)", "checks that the caller has the target session's login role; tenantry_app is nobody's login"),
    ("other sessions", "pg_terminate_backend(integer,bigint)", "as pg_cancel_backend"),
    ("WAL and control data", "pg_is_in_recovery()", "drivers ask it to find a writable server (target_session_attrs); it says only whether this is a standby"),
    ("sizes and files", "pg_filenode_relation(oid,oid)", "maps pg_class.relfilenode, which every role reads, back to a relation"),
    ("sizes and files", "pg_relation_filenode(regclass)", "pg_class.relfilenode, readable anyway"),
    ("sizes and files", "pg_relation_filepath(regclass)", "derived from pg_class.relfilenode and the database oid, readable anyway"),
    ("partitions", "pg_get_partition_constraintdef(oid)", "pg_class.relpartbound and pg_inherits say the same, and psql's \\d needs pg_inherits"),
    ("partitions", "pg_partition_ancestors(regclass)", "as pg_get_partition_constraintdef"),
    ("partitions", "pg_partition_root(regclass)", "as pg_get_partition_constraintdef"),
    ("partitions", "pg_partition_tree(regclass)", "as pg_get_partition_constraintdef"),
    ("session settings", "current_setting(text)", "the caller's own session; no session reads another's"),
    ("session settings", "current_setting(text,boolean)", "the caller's own session"),
    ("session settings", "pg_show_all_settings()", "the caller's own session (pg_settings)"),
    ("session settings", "set_config(text,text,boolean)", "the caller's own session"),
];

/// `category signature` of every function in [`CATEGORIES`] that `role` may execute.
async fn executable(c: &tokio_postgres::Client, role: &str) -> Vec<String> {
    let names: Vec<&str> = CATEGORIES.iter().map(|(n, _)| *n).collect();
    let patterns: Vec<&str> = CATEGORIES.iter().map(|(_, p)| *p).collect();
    let rows = c
        .query(
            "SELECT DISTINCT k.name || ' ' || p.oid::regprocedure::text
             FROM pg_proc p
             JOIN unnest($1::text[], $2::text[]) AS k (name, pattern)
               ON p.oid::regprocedure::text ~ k.pattern
             WHERE p.pronamespace = 'pg_catalog'::regnamespace
               AND has_function_privilege($3, p.oid, 'EXECUTE')
             ORDER BY 1",
            &[&names, &patterns, &role],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn shared_state_builtins_left_to_the_tenant_roles_are_exactly_the_listed_ones() {
    let w = world().await;
    let mut expected: Vec<String> = REMAINING
        .iter()
        .map(|(category, signature, reason)| {
            assert!(!reason.is_empty());
            format!("{category} {signature}")
        })
        .collect();
    expected.sort();
    // Asked as tenantry_app itself, about itself and the login it comes from.
    begin_as(&w.app, w.a).await;
    for role in [
        "tenantry_app",
        "tenantry_app_own",
        "tenantry_app_shared",
        "tenantry_server",
    ] {
        assert_eq!(executable(&w.app, role).await, expected, "{role}");
    }
    // The views over the refused functions are refused too.
    assert_eq!(
        strings(
            &w.app,
            "SELECT c.relname::text FROM pg_class c
             WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'v'
               AND (c.relname ~ '^pg_stat(io)?_' OR c.relname IN ('pg_locks', 'pg_prepared_xacts'))
               AND has_table_privilege('tenantry_app', c.oid, 'SELECT')"
        )
        .await,
        Vec::<String>::new()
    );
    // Monitoring keeps them through pg_monitor, which no tenantry role is.
    assert_eq!(
        strings(
            &w.app,
            "SELECT (has_table_privilege('pg_monitor', 'pg_stat_activity', 'SELECT')
                     AND has_table_privilege('pg_monitor', 'pg_stat_user_tables', 'SELECT')
                     AND has_table_privilege('pg_monitor', 'pg_locks', 'SELECT')
                     AND has_function_privilege('pg_monitor', 'pg_stat_get_activity(integer)', 'EXECUTE')
                     AND has_function_privilege('pg_monitor', 'pg_stat_get_live_tuples(oid)', 'EXECUTE')
                     AND has_function_privilege('pg_monitor', 'pg_lock_status()', 'EXECUTE')
                     AND has_function_privilege('pg_monitor', 'pg_database_size(name)', 'EXECUTE')
                     AND has_function_privilege('pg_monitor', 'txid_current()', 'EXECUTE'))::text"
        )
        .await,
        ["true"]
    );
    assert_eq!(
        strings(
            &w.app,
            "SELECT r.rolname || ' in ' || m.rolname FROM pg_roles r, pg_roles m
             WHERE r.rolname LIKE 'tenantry\\_%' AND m.rolname LIKE 'pg\\_%'
               AND pg_has_role(r.oid, m.oid, 'MEMBER')"
        )
        .await,
        Vec::<String>::new()
    );
    rollback(&w.app).await;
}

#[tokio::test]
async fn no_sequence_is_usable_by_the_tenant_roles() {
    let w = world().await;
    begin_as(&w.app, w.a).await;
    assert_eq!(
        strings(
            &w.app,
            "SELECT c.oid::regclass::text || ' ' || r.role FROM pg_class c,
                    unnest(ARRAY['tenantry_app', 'tenantry_app_own', 'tenantry_app_shared', 'tenantry_server']) AS r (role)
             WHERE c.relkind = 'S'
               AND has_sequence_privilege(r.role, c.oid, 'USAGE, SELECT, UPDATE')"
        )
        .await,
        Vec::<String>::new(),
        "a sequence's value orders every tenant's rows"
    );
    rollback(&w.app).await;
}

#[tokio::test]
async fn tenant_roles_cannot_take_or_hold_any_advisory_lock_reparenting_still_takes_its_own_and_the_migration_role_takes_any(
) {
    let w = world().await;
    let key = "hashtext('tenantry.tenant_hierarchy')";
    let calls = [
        format!("pg_advisory_xact_lock({key})"),
        format!("pg_try_advisory_xact_lock({key})"),
        format!("pg_advisory_lock({key})"),
        format!("pg_try_advisory_lock({key})"),
        format!("pg_advisory_lock_shared({key})"),
        format!("pg_advisory_xact_lock_shared({key})"),
        format!("pg_try_advisory_lock_shared({key})"),
        format!("pg_try_advisory_xact_lock_shared({key})"),
        format!("pg_advisory_unlock({key})"),
        format!("pg_advisory_unlock_shared({key})"),
        "pg_advisory_lock(1, 2)".to_owned(),
        "pg_advisory_xact_lock(1, 2)".to_owned(),
        "pg_try_advisory_lock(1, 2)".to_owned(),
        "pg_try_advisory_xact_lock(1, 2)".to_owned(),
        "pg_advisory_lock_shared(1, 2)".to_owned(),
        "pg_advisory_xact_lock_shared(1, 2)".to_owned(),
        "pg_try_advisory_lock_shared(1, 2)".to_owned(),
        "pg_try_advisory_xact_lock_shared(1, 2)".to_owned(),
        "pg_advisory_unlock(1, 2)".to_owned(),
        "pg_advisory_unlock_shared(1, 2)".to_owned(),
        "pg_advisory_unlock_all()".to_owned(),
    ];
    // As tenantry_app in a tenant's transaction, and as the login itself.
    for login in [false, true] {
        if login {
            exec(&w.app, "RESET ROLE; BEGIN").await;
        } else {
            begin_as(&w.app, w.a).await;
        }
        exec(&w.app, "SAVEPOINT s").await;
        for call in &calls {
            let (code, message, _) =
                fails(&w.app, &format!("ROLLBACK TO SAVEPOINT s; SELECT {call}")).await;
            assert_eq!(code, "42501", "login={login} {call}: {message}");
        }
        rollback(&w.app).await;
    }
    exec(&w.app, "SET ROLE tenantry_app").await;

    // Nobody else holds the re-parenting key, and re-parenting (which takes
    // it as tenantry_owner) works.
    let su = w.tdb.superuser_client().await;
    let held: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
             WHERE l.locktype = 'advisory' AND d.datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0);
    let moved = w
        .admin
        .execute(
            "UPDATE tenantry.tenants SET parent_id = $1 WHERE tenant_id = $2",
            &[&w.a, &w.b],
        )
        .await
        .unwrap();
    assert_eq!(moved, 1);

    // The team's migration role (a member of tenantry_owner, no superuser)
    // takes every one of them: its tools lock their runs with them
    // (node-pg-migrate's pg_try_advisory_lock(bigint) was refused with 42501:
    // found by a review of migration tools).
    su.batch_execute("CREATE ROLE team_migrator NOLOGIN; GRANT tenantry_owner TO team_migrator")
        .await
        .unwrap();
    for call in &calls {
        su.batch_execute(&format!(
            "BEGIN; SET LOCAL ROLE team_migrator; SELECT {call}; ROLLBACK"
        ))
        .await
        .unwrap_or_else(|e| panic!("{call} as the migration role: {e:?}"));
    }
    su.batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .unwrap();
}

/// psql as `tenantry_server` switched to `tenantry_app`; returns (success, output).
fn psql(url: &str, command: &str) -> (bool, String) {
    let out = Command::new("psql")
        .arg(url)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-c", command])
        .env("PGOPTIONS", "-c role=tenantry_app")
        .output()
        .expect("running psql (the PostgreSQL client must be installed)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && !text.contains("ERROR"), text)
}

#[tokio::test]
async fn psqls_describe_commands_still_work_for_tenantry_app_but_size_listings_do_not() {
    let w = world().await;
    let silo = crate::common::create_silo(&w.admin, "silo").await;
    let schema = crate::common::schema_of(&w.admin, silo).await;
    let url = w.tdb.server_url();
    for command in [
        r"\d".to_owned(),
        r"\dt tenantry.*".to_owned(),
        r"\d tenantry.resources".to_owned(),
        r"\d+ tenantry.resources".to_owned(),
        r"\d tenantry.tenants".to_owned(),
        format!(r"\d {schema}.resources"),
        format!(r"\d+ {schema}.resources"),
        r"\dn".to_owned(),
        r"\df tenantry.*".to_owned(),
        r"\dv tenantry.*".to_owned(),
        r"\di tenantry.*".to_owned(),
        r"\dp tenantry.*".to_owned(),
        r"\du".to_owned(),
        r"\dx".to_owned(),
        r"\l".to_owned(),
    ] {
        let (ok, text) = psql(&url, &command);
        assert!(ok, "{command}: {text}");
    }
    // The verbose listings show sizes, which the tenant roles no longer read.
    for command in [r"\dt+ tenantry.*", r"\l+"] {
        let (ok, text) = psql(&url, command);
        assert!(
            !ok && text.contains("permission denied for function pg_"),
            "{command}: {text}"
        );
    }
}

/// Extensions a team installs that PostgreSQL leaves to PUBLIC and that
/// read or reach state every tenant shares (found by a DBA's review):
/// installed after `tenantry migrate`, the doctor names each extension (rule
/// `shared_state`) and its fix closes it; any later run of `migrate` takes
/// them from PUBLIC, with nothing pending. Those this server's build of
/// PostgreSQL ships are checked (Debian's packages ship all three).
#[tokio::test]
async fn extensions_that_reach_shared_state_are_named_by_the_doctor_and_taken_from_public_by_migrate(
) {
    let w = world().await;
    let mut su = w.tdb.superuser_client().await;
    let available = strings(
        &su,
        "SELECT name::text FROM pg_available_extensions
         WHERE name IN ('pg_prewarm', 'pgrowlocks', 'dblink') ORDER BY 1",
    )
    .await;
    for name in &available {
        exec(&su, &format!("CREATE EXTENSION {name}")).await;
    }
    let attacks: Vec<(&str, &str)> = [
        (
            "pg_prewarm",
            "SELECT pg_prewarm('tenantry.resources', 'prefetch')",
        ),
        (
            "pgrowlocks",
            "SELECT count(*) FROM pgrowlocks('tenantry.resources')",
        ),
        ("dblink", "SELECT dblink_get_connections()"),
    ]
    .into_iter()
    .filter(|(name, _)| available.iter().any(|a| a == name))
    .collect();
    // As the app role with a tenant's context: each works.
    begin_as(&w.app, w.a).await;
    for (_, sql) in &attacks {
        exec(&w.app, sql).await;
    }
    rollback(&w.app).await;

    let doctor = w.tdb.superuser_client().await;
    let found = shared_state_problems(&doctor).await;
    for name in &available {
        assert!(
            found.iter().any(|p| p.table == format!("extension {name}")),
            "{name}: {found:#?}"
        );
    }
    for p in &found {
        exec(&su, &p.fix).await;
    }
    assert!(shared_state_problems(&doctor).await.is_empty());
    begin_as(&w.app, w.a).await;
    for (name, sql) in &attacks {
        let (code, message, _) = fails(&w.app, sql).await;
        assert_eq!(code, "42501", "{name}: {message}");
        rollback(&w.app).await;
        begin_as(&w.app, w.a).await;
    }
    rollback(&w.app).await;

    // Installed again: a run of migrate with nothing pending takes them.
    for name in &available {
        exec(
            &su,
            &format!("DROP EXTENSION {name}; CREATE EXTENSION {name}"),
        )
        .await;
    }
    assert_eq!(shared_state_problems(&doctor).await.len(), found.len());
    assert!(tenantry_db::migrate::migrate(&mut su)
        .await
        .unwrap()
        .is_empty());
    assert!(shared_state_problems(&doctor).await.is_empty());
}

/// The doctor's `shared_state` findings.
async fn shared_state_problems(c: &tokio_postgres::Client) -> Vec<tenantry_db::TableProblem> {
    tenantry_db::tables::table_problems(c)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.rule == "shared_state")
        .collect()
}
