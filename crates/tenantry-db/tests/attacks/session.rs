//! Session state left by SQL through the library's door: an application passes SQL it did not write to `TenantScope::execute` (injection), and that SQL changes the connection's session for good (SET without LOCAL, set_config(…, false), SET ROLE, RESET ROLE) or ends the library's transaction (COMMIT, ROLLBACK). The next tenant's transaction on that connection never runs with those settings (its reads answered from another tenant's schema, its commits not durable, its requests failing): the library checks the session first, closes the connection and runs the transaction again on another. A commit after SQL that ended the transaction is an error, not a success.

use tenantry_db::{Database, DbError, StatementMode, TenantContext, TenantId};
use uuid::Uuid;

use crate::common::{create_tenant_in, exec};
use crate::helpers::{world, Tier};

/// Reads `projects` by its unqualified name, as a team's code does.
async fn project_names(db: &Database, tenant: TenantId) -> Result<Vec<String>, DbError> {
    db.in_tenant(&TenantContext::new(tenant), &(), |scope, ()| {
        Box::pin(async move {
            let rows: Vec<(String,)> = scope
                .query("SELECT name FROM projects ORDER BY name", &[])
                .await?;
            Ok(rows.into_iter().map(|(n,)| n).collect())
        })
    })
    .await
}

/// What a clean server connection says about the settings the check covers.
async fn settings(db: &Database, tenant: TenantId) -> Vec<String> {
    db.in_tenant(&TenantContext::new(tenant), &(), |scope, ()| {
        Box::pin(async move {
            let row: (String, String, String, String, String, String) = scope
                .query_one(
                    "SELECT current_user::text, current_setting('search_path'), current_setting('synchronous_commit'),
                            current_setting('default_transaction_read_only'), current_setting('TimeZone'),
                            current_setting('enable_indexscan')",
                    &[],
                )
                .await?;
            Ok(vec![row.0, row.1, row.2, row.3, row.4, row.5])
        })
    })
    .await
    .unwrap()
}

/// Sets up `public.projects` (adopted), a schema tenant `c` with its own
/// table of it, b's row, and a pool of one connection.
async fn projects_world() -> (crate::helpers::World, Database, TenantId, TenantId, String) {
    let w = world().await;
    let su = w.tdb.superuser_client().await;
    exec(
        &su,
        "CREATE TABLE public.projects (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                       name text NOT NULL, PRIMARY KEY (tenant_id, id));
         SELECT tenantry.adopt_table('public.projects');",
    )
    .await;
    let c = create_tenant_in(&w.admin, "tenant-c", None, Tier::Schema.isolation()).await;
    let c_schema: String = su
        .query_one(
            "SELECT schema_name FROM tenantry.tenants WHERE tenant_id = $1",
            &[&c],
        )
        .await
        .unwrap()
        .get(0);
    let (a, b) = (TenantId::from_uuid(w.a), TenantId::from_uuid(w.b));
    let db = w.tdb.database_with(StatementMode::Prepared, 1);
    add_project(&db, b, "b-project").await;
    (w, db, a, b, c_schema)
}

/// Inserts `tenant`'s project `name`, as a team's code does.
async fn add_project(db: &Database, tenant: TenantId, name: &str) {
    db.in_tenant(&TenantContext::new(tenant), name, |scope, name| {
        Box::pin(async move {
            scope
                .execute("INSERT INTO projects (name) VALUES ($1)", &[&name])
                .await
        })
    })
    .await
    .unwrap();
}

/// The backend serving `tenant`'s next transaction from the pool: the same
/// pid before and after shows the connection was kept.
async fn backend_pid(db: &Database, tenant: TenantId) -> i32 {
    db.in_tenant(&TenantContext::new(tenant), &(), |scope, ()| {
        Box::pin(async move {
            scope
                .query_one::<(i32,)>("SELECT pg_backend_pid()", &[])
                .await
        })
    })
    .await
    .unwrap()
    .0
}

#[tokio::test]
async fn session_settings_changed_by_sql_through_the_librarys_door_never_reach_another_tenants_transaction(
) {
    // A table of the team's, adopted; a schema tenant with its own table of it.
    let (_w, db, a, b, c_schema) = projects_world().await;
    let clean = settings(&db, b).await;
    assert_eq!(clean[0], "tenantry_app");

    let cases = [
        format!("SET search_path = {c_schema}, public"),
        // (the test cluster runs with synchronous_commit = off: another value)
        "SET synchronous_commit = local".to_owned(),
        "SELECT set_config('default_transaction_read_only', 'on', false)".to_owned(),
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE".to_owned(),
        "SET ROLE tenantry_admin".to_owned(),
        "SET ROLE tenantry_app_shared".to_owned(),
        "RESET ROLE".to_owned(),
        "SET row_security = off".to_owned(),
        "SET statement_timeout = '5s'".to_owned(),
        "SET TIME ZONE 'Pacific/Kiritimati'".to_owned(),
        "SET enable_indexscan = off".to_owned(),
        "DO $$ BEGIN EXECUTE 'SE' || 'T work_mem = ''64kB'''; END $$".to_owned(),
    ];
    for sql in &cases {
        let spoiled = backend_pid(&db, a).await;
        // a's request carries the injected SQL, and commits.
        let mut scope = db.tenant(TenantContext::new(a)).await.unwrap();
        scope
            .execute(sql.as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        scope
            .commit()
            .await
            .unwrap_or_else(|e| panic!("{sql}: commit: {e}"));
        // b's next transaction is refused on that connection before its
        // context, and the library sends it again on another one at once: b
        // reads its own row, with the settings every server connection has,
        // and never sees the refusal (a's SQL must not fail b's request).
        let mut scope = db.tenant(TenantContext::new(b)).await.unwrap();
        let names: Vec<(String,)> = scope
            .query("SELECT name FROM projects", &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: b's transaction failed: {e}"));
        assert_eq!(names, [("b-project".to_owned(),)], "{sql}");
        let pid: (i32,) = scope
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap();
        // A role switched for the session is checked, and the connection
        // closed; settings are reset before the connection is reused (and
        // checked after: the role, which RESET ALL leaves, is one of them).
        // Transactions that start read-only cannot even draw the reset's
        // nonce (the reset runs in one): that connection is closed too.
        if sql.contains("ROLE") || sql.contains("read_only") {
            assert_ne!(
                pid.0, spoiled,
                "{sql}: b ran on the connection a's SQL changed"
            );
        } else {
            assert_eq!(pid.0, spoiled, "{sql}: the connection is reset and kept");
        }
        scope.commit().await.unwrap();
        assert_eq!(settings(&db, b).await, clean, "{sql}");
    }

    // SQL that changes settings for its own transaction only (SET LOCAL) or
    // changes none leaves the connection in use: no refusal, no reconnect.
    let before = backend_pid(&db, b).await;
    for sql in [
        "SET LOCAL statement_timeout = '5s'",
        "SELECT count(*) FROM projects",
    ] {
        let mut scope = db.tenant(TenantContext::new(a)).await.unwrap();
        scope.execute(sql, &[]).await.unwrap();
        scope.commit().await.unwrap();
        let mut scope = db.tenant(TenantContext::new(b)).await.unwrap();
        let names: Vec<(String,)> = scope.query("SELECT name FROM projects", &[]).await.unwrap();
        assert_eq!(names, [("b-project".to_owned(),)], "{sql}");
        scope.commit().await.unwrap();
    }
    assert_eq!(backend_pid(&db, b).await, before, "the connection was kept");
}

/// Found by an audit of a team's service: state SQL leaves in the session
/// beyond the settings the check covers reached the next tenant's
/// transaction on the connection: the rows of a cursor declared WITH HOLD,
/// custom settings (`app.*`, set for the session), channels listened to.
#[tokio::test]
async fn a_held_cursor_custom_settings_and_channels_left_by_sql_never_reach_the_next_tenant() {
    let (_w, db, a, b, _c) = projects_world().await;
    add_project(&db, a, "a-secret").await;
    let mut scope = db.tenant(TenantContext::new(a)).await.unwrap();
    for sql in [
        "DECLARE page CURSOR WITH HOLD FOR SELECT name FROM projects",
        "SET app.last_invoice = 'a: INV-42'",
        "SELECT set_config('app.current_user_email', 'ceo@a.test', false)",
        "SET application_name = 'a-was-here'",
        "LISTEN a_private_channel",
    ] {
        scope
            .execute(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    scope.commit().await.unwrap();

    // b's next transaction runs on the same (only) connection, and finds none of it.
    let mut scope = db.tenant(TenantContext::new(b)).await.unwrap();
    let seen: (String, String, String, i64) = scope
        .query_one(
            "SELECT coalesce(current_setting('app.last_invoice', true), ''),
                    coalesce(current_setting('app.current_user_email', true), ''),
                    current_setting('application_name'),
                    (SELECT count(*) FROM pg_listening_channels())",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(seen.0, "");
    assert_eq!(seen.1, "");
    assert_ne!(seen.2, "a-was-here");
    assert_eq!(seen.3, 0);
    let fetched = scope.query::<(String,)>("FETCH ALL FROM page", &[]).await;
    assert!(
        matches!(&fetched, Err(e) if e.to_string().contains("page")),
        "b fetched from a's cursor: {fetched:?}"
    );
    drop(scope);
    assert_eq!(project_names(&db, b).await.unwrap(), ["b-project"]);
}

#[tokio::test]
async fn a_commit_after_sql_that_ended_the_librarys_transaction_is_an_error_and_reports_nothing_committed_that_was_not(
) {
    let (w, db, a, _b, _c_schema) = projects_world().await;
    let su = w.tdb.superuser_client().await;
    for (ending, kept) in [("ROLLBACK", 0_i64), ("COMMIT", 1)] {
        let name = format!("before-{ending}-{}", Uuid::new_v4());
        let mut scope = db.tenant(TenantContext::new(a)).await.unwrap();
        scope
            .execute("INSERT INTO projects (name) VALUES ($1)", &[&name])
            .await
            .unwrap();
        scope.execute(ending, &[]).await.unwrap();
        // Outside the library's transaction now: no context, nothing visible.
        let after: Vec<(String,)> = scope.query("SELECT name FROM projects", &[]).await.unwrap();
        assert!(after.is_empty(), "{ending}: {after:?}");
        match scope.commit().await {
            Err(DbError::Internal(message)) => {
                assert!(
                    message.contains("committed or rolled it back"),
                    "{ending}: {message}"
                )
            }
            other => panic!("{ending}: the commit was reported: {other:?}"),
        }
        // What SQL committed itself is there; what it rolled back is not.
        let n: i64 = su
            .query_one(
                "SELECT count(*) FROM public.projects WHERE name = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, kept, "{ending}");
        // The connection was closed; the next transaction works.
        let rows = db
            .in_tenant(&TenantContext::new(a), &(), |scope, ()| {
                Box::pin(async move {
                    scope
                        .query::<(String,)>("SELECT name FROM projects", &[])
                        .await
                })
            })
            .await
            .unwrap();
        assert_eq!(rows.len() as i64, if ending == "COMMIT" { 1 } else { 0 });
    }
}

/// A COMMIT of the caller's own, then a statement that fails: the scope
/// cannot say "nothing was committed", since the first write was.
#[tokio::test]
async fn a_failure_after_sql_that_committed_for_itself_does_not_report_that_nothing_was_committed()
{
    let (w, db, a, _b, _c_schema) = projects_world().await;
    let su = w.tdb.superuser_client().await;
    let name = format!("committed-by-sql-{}", Uuid::new_v4());
    let mut scope = db.tenant(TenantContext::new(a)).await.unwrap();
    scope
        .execute("INSERT INTO projects (name) VALUES ($1)", &[&name])
        .await
        .unwrap();
    scope.execute("COMMIT", &[]).await.unwrap();
    // Outside the transaction, without a context: the policy refuses it.
    scope
        .execute("INSERT INTO projects (name) VALUES ('after')", &[])
        .await
        .unwrap_err();
    match scope.commit().await {
        Err(DbError::Internal(message)) => {
            assert!(!message.ends_with("nothing was committed"), "{message}");
            assert!(message.contains("stays"), "{message}");
        }
        other => panic!("the commit was reported: {other:?}"),
    }
    let n: i64 = su
        .query_one(
            "SELECT count(*) FROM public.projects WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_scope_that_sends_nothing_in_between_does_not_spare_the_next_transaction_the_session_check(
) {
    let (_w, db, a, b, c_schema) = projects_world().await;
    let mut scope = db.tenant(TenantContext::new(a)).await.unwrap();
    scope
        .execute(
            format!("SET search_path = {c_schema}, public").as_str(),
            &[],
        )
        .await
        .unwrap();
    scope.commit().await.unwrap();
    // Requests that end before their first statement (a validation error, a
    // commit or rollback of nothing, a dropped scope).
    let refused: Result<(), DbError> = db
        .in_tenant(&TenantContext::new(b), &(), |_scope, ()| {
            Box::pin(async move { Err(DbError::invalid("name", "name must not be empty")) })
        })
        .await;
    assert!(matches!(refused, Err(DbError::Invalid { .. })));
    db.tenant(TenantContext::new(b))
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    db.tenant(TenantContext::new(b))
        .await
        .unwrap()
        .rollback()
        .await
        .unwrap();
    drop(db.tenant(TenantContext::new(b)).await.unwrap());
    // b's next reads still get the check: its own row, never c's empty table.
    assert_eq!(project_names(&db, b).await.unwrap(), ["b-project"]);
    assert_eq!(project_names(&db, b).await.unwrap(), ["b-project"]);
}

#[tokio::test]
async fn a_configuration_reload_is_not_taken_for_sql_that_changed_the_session() {
    let (w, db, a, b, _c_schema) = projects_world().await;
    let su = w.tdb.superuser_client().await;
    let before = backend_pid(&db, b).await;
    // The next transaction on the connection is checked.
    let mut scope = db.tenant(TenantContext::new(a)).await.unwrap();
    scope.execute("SELECT 1", &[]).await.unwrap();
    scope.commit().await.unwrap();
    // A setting of the list changes for every session (the cluster's
    // configuration), not by SQL on the connection.
    exec(&su, "ALTER SYSTEM SET cursor_tuple_fraction = 0.2").await;
    exec(&su, "SELECT pg_reload_conf()").await;
    // Until a new session starts with it: the postmaster has read the file
    // and signalled every session (a fixed 500 ms was a guess a loaded
    // machine could miss); the pooled connection takes it before its next
    // statement.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let fresh = w.tdb.superuser_client().await;
        let seen: String = fresh
            .query_one("SELECT current_setting('cursor_tuple_fraction')", &[])
            .await
            .unwrap()
            .get(0);
        if seen == "0.2" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reload did not reach a new session within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let result = async {
        let mut scope = db.tenant(TenantContext::new(b)).await.unwrap();
        let names: Vec<(String,)> = scope.query("SELECT name FROM projects", &[]).await?;
        let (fraction,): (String,) = scope
            .query_one("SELECT current_setting('cursor_tuple_fraction')", &[])
            .await?;
        scope.commit().await?;
        Ok::<_, DbError>((names, fraction))
    }
    .await;
    exec(&su, "ALTER SYSTEM RESET cursor_tuple_fraction").await;
    exec(&su, "SELECT pg_reload_conf()").await;
    let (names, fraction) = result.expect("not refused after a reload");
    assert_eq!(names, [("b-project".to_owned(),)]);
    assert_eq!(fraction, "0.2", "the reload had reached the connection");
    // The same connection throughout: nothing was closed.
    assert_eq!(backend_pid(&db, b).await, before);
}

/// A transaction sent again on another connection (its first was spoiled by
/// earlier SQL) whose own SQL changes the session there: that connection is
/// checked before its next transaction too, so b never runs under a's
/// settings (found by a review of the resend: the new connection was not
/// marked as having run caller SQL when the resent flight carried it).
#[tokio::test]
async fn sql_resent_on_another_connection_is_checked_there_too() {
    let (_w, db, a, b, c_schema) = projects_world().await;
    let clean = settings(&db, b).await;
    // a spoils the one connection...
    let mut scope = db.tenant(TenantContext::new(a)).await.unwrap();
    scope
        .execute("SET enable_indexscan = off", &[])
        .await
        .unwrap();
    scope.commit().await.unwrap();
    // ... and its next transaction, refused there and sent again on a new
    // connection, changes that one's session with its only statement.
    let mut scope = db.tenant(TenantContext::new(a)).await.unwrap();
    scope
        .execute(
            format!("SELECT set_config('search_path', '{c_schema}, public', false)").as_str(),
            &[],
        )
        .await
        .unwrap();
    scope.commit().await.unwrap();
    // b reads its own row with clean settings: the second connection was
    // checked and replaced too.
    assert_eq!(project_names(&db, b).await.unwrap(), ["b-project"]);
    assert_eq!(settings(&db, b).await, clean);
}
