//! Usage, metrics and the audit log: the guide's usage names,
//! `tenant_resource_usage` (flaw 3), `tenant_metrics` and its refresh (flaws 4
//! and 5), and the append-only audit log.

use tenantry_db::testing::TestDatabase;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::common::{count, create_tenant, exec, strings};
use crate::helpers::{
    admin, app, clear_context, create_resource, denied, expect_sqlstate, log_requests, logger,
    set_context, sorted, uuids,
};

#[tokio::test]
async fn guide_usage_names_answer_and_tenant_metrics_itself_is_not_readable() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    create_resource(&app, a, "doc").await;
    log_requests(&logger(&tdb).await, a, &[Uuid::new_v4()]).await;
    exec(&admin, "SELECT refresh_tenant_metrics()").await;

    set_context(&app, a).await;
    let row = app
        .query_one(
            "SELECT tenant_id, tenant_name, total_resources, storage_used > 0 FROM tenant_resource_usage",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Uuid>(0), a);
    assert_eq!(row.get::<_, String>(1), "a");
    assert_eq!(row.get::<_, i64>(2), 1);
    assert!(row.get::<_, bool>(3));
    let m = app
        .query(
            "SELECT tenant_id, request_count FROM current_tenant_metrics()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].get::<_, Uuid>(0), a);
    assert_eq!(m[0].get::<_, i64>(1), 1);
    denied(&app, "SELECT * FROM tenant_metrics", "42501").await;
}

// -----------------------------------------------------------------------------
// Flaw 3: tenant_resource_usage as an owner-rights view.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn tenant_resource_usage_shows_a_tenant_only_itself_and_its_descendants() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let child = create_tenant(&admin, "a-child", Some(a)).await;
    let b = create_tenant(&admin, "b", None).await;
    create_resource(&app, a, "a1").await;
    create_resource(&app, child, "c1").await;
    let b1 = create_resource(&app, b, "b1").await;
    create_resource(&app, b, "b2").await;
    // A resource of b shared with a still counts for b only.
    app.execute("SELECT share_resource($1, $2)", &[&b1, &a])
        .await
        .unwrap();

    async fn usage(app: &Client) -> Vec<(Uuid, i64)> {
        let mut v: Vec<(Uuid, i64)> = app
            .query(
                "SELECT tenant_id, total_resources FROM tenantry.tenant_resource_usage",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        v.sort();
        v
    }
    set_context(&app, a).await;
    assert_eq!(usage(&app).await, {
        let mut v = vec![(a, 1), (child, 1)];
        v.sort();
        v
    });
    set_context(&app, child).await;
    assert_eq!(usage(&app).await, [(child, 1)]);
    set_context(&app, b).await;
    assert_eq!(usage(&app).await, [(b, 2)]);
    clear_context(&app).await;
    assert!(usage(&app).await.is_empty());

    // An operator's overview: a superuser without a tenant context sees
    // every tenant's real totals; with one, that tenant's subtree only (the
    // others are left out, never shown empty).
    let su = tdb.superuser_client().await;
    assert_eq!(usage(&su).await, {
        let mut v = vec![(a, 1), (child, 1), (b, 2)];
        v.sort();
        v
    });
    su.execute("SELECT tenantry.set_tenant_context($1)", &[&b])
        .await
        .unwrap();
    assert_eq!(usage(&su).await, [(b, 2)]);
    exec(&su, "SELECT tenantry.set_tenant_context(NULL)").await;
    assert_eq!(
        strings(
            &su,
            "SELECT unnest(reloptions) FROM pg_class WHERE oid = 'tenantry.tenant_resource_usage'::regclass"
        )
        .await,
        ["security_barrier=true", "security_invoker=true"]
    );
}

// -----------------------------------------------------------------------------
// Flaw 4: the materialized view tenant_metrics has no RLS.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn tenant_metrics_is_unreadable_by_tenant_roles_and_current_tenant_metrics_shows_only_the_callers_subtree(
) {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let logger = logger(&tdb).await;
    let root = create_tenant(&admin, "root", None).await;
    let child = create_tenant(&admin, "child", Some(root)).await;
    let other = create_tenant(&admin, "other", None).await;
    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
    log_requests(&logger, root, &[u1, u1, u2]).await;
    log_requests(&logger, child, &[u1, u2]).await;
    log_requests(&logger, other, &[u1, u1, u1, u1]).await;
    exec(&admin, "SELECT refresh_tenant_metrics()").await;

    let server = tdb.server_client().await;
    exec(&server, "SET search_path = tenantry, public").await;
    for role in [
        None,
        Some("tenantry_app"),
        Some("tenantry_app_own"),
        Some("tenantry_app_shared"),
        Some("tenantry_logger"),
    ] {
        exec(
            &server,
            &match role {
                Some(r) => format!("SET ROLE {r}"),
                None => "RESET ROLE".into(),
            },
        )
        .await;
        for sql in [
            "SELECT * FROM tenantry.tenant_metrics",
            "SELECT count(*) FROM tenantry.tenant_metrics",
            "TABLE tenantry.tenant_metrics",
        ] {
            // As tenantry_app, a tenant context (the server's) does not open it either.
            let in_tenant = role == Some("tenantry_app");
            if in_tenant {
                tenantry_db::testing::begin_in_tenant(&server, root).await;
            }
            expect_sqlstate(
                server.batch_execute(sql).await,
                "42501",
                &format!("{sql} as {role:?}"),
            );
            if in_tenant {
                exec(&server, "ROLLBACK").await;
            }
        }
    }

    async fn metrics(app: &Client) -> Vec<(Uuid, i64, i64, bool)> {
        let mut v: Vec<(Uuid, i64, i64, bool)> = app
            .query(
                "SELECT tenant_id, sum(request_count)::bigint, max(unique_users), bool_and(is_descendant)
                 FROM current_tenant_metrics() GROUP BY tenant_id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        v.sort();
        v
    }
    set_context(&app, root).await;
    let mut expected = vec![(root, 3, 2, false), (child, 2, 2, true)];
    expected.sort();
    assert_eq!(metrics(&app).await, expected);
    set_context(&app, child).await;
    assert_eq!(metrics(&app).await, [(child, 2, 2, false)]);
    set_context(&app, other).await;
    assert_eq!(metrics(&app).await, [(other, 4, 1, false)]);
    clear_context(&app).await;
    assert!(metrics(&app).await.is_empty());

    // The request log itself: the logger appends and reads nothing; a tenant
    // reads and appends only its own rows.
    denied(
        &logger,
        "SELECT count(*) FROM tenantry.request_log",
        "42501",
    )
    .await;
    set_context(&app, root).await;
    assert_eq!(count(&app, "SELECT count(*) FROM request_log").await, 3);
    app.execute(
        "INSERT INTO request_log (tenant_id, route, status) VALUES ($1, '/x', 200)",
        &[&root],
    )
    .await
    .unwrap();
    expect_sqlstate(
        app.execute(
            "INSERT INTO request_log (tenant_id, route, status) VALUES ($1, '/x', 200)",
            &[&other],
        )
        .await,
        "42501",
        "logging a request for another tenant",
    );
}

// -----------------------------------------------------------------------------
// Flaw 5: the refresh must see every tenant and be run by someone entitled.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn refresh_tenant_metrics_runs_as_admin_sees_every_tenant_and_is_refused_to_tenant_roles() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let logger = logger(&tdb).await;
    let t1 = create_tenant(&admin, "t1", None).await;
    let t2 = create_tenant(&admin, "t2", None).await;
    let t3 = create_tenant(&admin, "t3", Some(t1)).await;
    log_requests(&logger, t1, &[Uuid::new_v4()]).await;
    log_requests(&logger, t2, &[Uuid::new_v4(), Uuid::new_v4()]).await;
    log_requests(&logger, t3, &[Uuid::new_v4(); 3]).await;

    let su = tdb.superuser_client().await;
    async fn totals(su: &Client) -> Vec<(Uuid, i64)> {
        let mut v: Vec<(Uuid, i64)> = su
            .query(
                "SELECT tenant_id, sum(request_count)::bigint FROM tenantry.tenant_metrics GROUP BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        v.sort();
        v
    }
    assert!(totals(&su).await.is_empty(), "nothing before a refresh");

    // Tenant roles may not refresh.
    set_context(&app, t1).await;
    denied(&app, "SELECT tenantry.refresh_tenant_metrics()", "42501").await;
    denied(
        &app,
        "REFRESH MATERIALIZED VIEW tenantry.tenant_metrics",
        "42501",
    )
    .await;
    denied(
        &admin,
        "REFRESH MATERIALIZED VIEW tenantry.tenant_metrics",
        "42501",
    )
    .await;
    assert!(totals(&su).await.is_empty());

    // The admin refreshes; a tenant id left on its session changes nothing:
    // the view is computed as its BYPASSRLS owner and holds every tenant.
    exec(&admin, &format!("SET app.current_tenant_id = '{t1}'")).await;
    exec(&admin, "SELECT refresh_tenant_metrics()").await;
    let mut expected = vec![(t1, 1), (t2, 2), (t3, 3)];
    expected.sort();
    assert_eq!(totals(&su).await, expected);

    // Concurrent refresh of a populated view picks up new rows.
    log_requests(&logger, t2, &[Uuid::new_v4()]).await;
    exec(
        &admin,
        "RESET app.current_tenant_id; SELECT refresh_tenant_metrics()",
    )
    .await;
    let mut expected = vec![(t1, 1), (t2, 3), (t3, 3)];
    expected.sort();
    assert_eq!(totals(&su).await, expected);
}

// -----------------------------------------------------------------------------
// Audit log: append-only, each tenant reads its own.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn audit_log_is_append_only_and_each_tenant_reads_only_its_own_rows() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;
    for t in [a, b] {
        set_context(&app, t).await;
        app.execute("SELECT create_tenant_role($1, 'editor')", &[&t])
            .await
            .unwrap();
        exec(&app, "SELECT create_api_key('k')").await;
    }

    for (t, name) in [(a, "a"), (b, "b")] {
        set_context(&app, t).await;
        assert_eq!(
            uuids(&app, "SELECT DISTINCT tenant_id FROM audit_log").await,
            [t],
            "{name} reads only its own audit rows"
        );
        let actions = strings(&app, "SELECT action FROM audit_log").await;
        for expected in ["key.created", "role.created", "tenant.created"] {
            assert!(
                actions.contains(&expected.to_owned()),
                "{name}: {actions:?}"
            );
        }
    }
    assert_eq!(
        uuids(&admin, "SELECT DISTINCT tenant_id FROM audit_log").await,
        sorted(vec![a, b]),
        "administrators read every tenant's audit rows"
    );

    set_context(&app, a).await;
    let before = count(&admin, "SELECT count(*) FROM audit_log").await;
    for c in [&app, &admin] {
        denied(
            c,
            "UPDATE tenantry.audit_log SET action = 'forged'",
            "42501",
        )
        .await;
        denied(c, "DELETE FROM tenantry.audit_log", "42501").await;
        denied(c, "TRUNCATE tenantry.audit_log", "42501").await;
        denied(
            c,
            &format!(
                "INSERT INTO tenantry.audit_log (tenant_id, actor, action, target_type)
                 VALUES ('{b}', 'admin', 'forged', 'tenant')"
            ),
            "42501",
        )
        .await;
        denied(
            c,
            &format!("SELECT tenantry.write_audit('{b}', 'forged', 'tenant', NULL)"),
            "42501",
        )
        .await;
    }
    // Even the owning role cannot rewrite history (the superuser is used only
    // to become that role, which no login role can).
    let su = tdb.superuser_client().await;
    exec(&su, "SET ROLE tenantry_owner").await;
    denied(
        &su,
        "UPDATE tenantry.audit_log SET action = 'forged'",
        "TN403",
    )
    .await;
    denied(&su, "DELETE FROM tenantry.audit_log", "TN403").await;
    denied(&su, "TRUNCATE tenantry.audit_log", "TN403").await;
    assert_eq!(
        count(&admin, "SELECT count(*) FROM audit_log").await,
        before
    );
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM audit_log WHERE action = 'forged'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn only_the_migration_role_expires_old_audit_rows_and_the_log_stays_append_only_otherwise() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;
    let su = tdb.superuser_client().await;
    // Five rows of each tenant from 40 days ago, written as a restore would.
    for t in [a, b] {
        exec(
            &su,
            &format!(
                "INSERT INTO tenantry.audit_log (tenant_id, occurred_at, actor, action, target_type)
                 SELECT '{t}', now() - interval '40 days' + n * interval '1 second', 'old', 'old.thing', 'tenant'
                 FROM generate_series(1, 5) n"
            ),
        )
        .await;
    }
    let old = "SELECT count(*) FROM tenantry.audit_log WHERE action = 'old.thing'";
    let recent = "SELECT count(*) FROM tenantry.audit_log WHERE action <> 'old.thing'";
    let recent_before = count(&su, recent).await;
    // The server's login and every role it may become: no such power.
    let server = tdb.server_client().await;
    denied(
        &server,
        "SELECT tenantry.expire_audit_log('30 days')",
        "42501",
    )
    .await;
    for role in ["tenantry_app", "tenantry_admin", "tenantry_logger"] {
        let c = tdb.server_client().await;
        exec(&c, &format!("SET ROLE {role}")).await;
        denied(&c, "SELECT tenantry.expire_audit_log('30 days')", "42501").await;
    }
    assert_eq!(count(&su, old).await, 10);

    // As the owner role (the migration role's, or a superuser).
    exec(&su, "SET ROLE tenantry_owner").await;
    // A year back and 362 days forward compares as 2 days (a month is 30
    // days to an interval), but reaches 3 or 4 days ahead.
    for short in ["1 hour", "-12 mons +362 days"] {
        expect_sqlstate(
            su.query_one(&format!("SELECT tenantry.expire_audit_log('{short}')"), &[])
                .await,
            "TN422",
            &format!("a retention under a day: {short}"),
        );
    }
    let first: i64 = su
        .query_one("SELECT tenantry.expire_audit_log('30 days', 3)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(first, 3, "at most max_rows a call");
    let mut total = first;
    loop {
        let n: i64 = su
            .query_one("SELECT tenantry.expire_audit_log('30 days', 3)", &[])
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, 10);
    assert_eq!(count(&su, old).await, 0, "every old row, of both tenants");
    assert_eq!(count(&su, recent).await, recent_before, "nothing newer");
    // Afterwards the log is append-only again, for the owner too.
    denied(&su, "DELETE FROM tenantry.audit_log", "TN403").await;
    let role: String = su
        .query_one("SELECT current_setting('session_replication_role')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, "origin");
}

#[tokio::test]
async fn tenant_metrics_hours_are_utc_hours_whatever_the_time_zone_of_the_session_that_refreshes() {
    // date_trunc('hour', …) cuts hours in the session's time zone: refreshed
    // from a database set to Asia/Kolkata (+05:30), every hour was labelled
    // half past a UTC hour, and a query for 10:00-11:00Z counted requests
    // of 10:30-11:30Z (found by a review of time-based behaviour).
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let logger = logger(&tdb).await;
    let t = create_tenant(&admin, "t", None).await;
    log_requests(&logger, t, &[Uuid::new_v4(), Uuid::new_v4()]).await;
    let su = tdb.superuser_client().await;
    su.batch_execute("SET TimeZone = 'Asia/Kolkata'; SELECT tenantry.refresh_tenant_metrics()")
        .await
        .unwrap();
    let rows = su
        .query(
            "SELECT extract(minute FROM hour AT TIME ZONE 'UTC')::int, request_count::bigint
               FROM tenantry.tenant_metrics WHERE tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap();
    let hours: Vec<(i32, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(hours.iter().map(|h| h.1).sum::<i64>(), 2, "{hours:?}");
    assert!(hours.iter().all(|h| h.0 == 0), "{hours:?}");
    // The session keeps its own time zone.
    let zone: String = su.query_one("SHOW TimeZone", &[]).await.unwrap().get(0);
    assert_eq!(zone, "Asia/Kolkata");
}

/// A request-log batch retried under the same id after a try whose commit
/// went through (its connection lost once COMMIT was sent: the server's
/// writer cannot tell) is written once; another batch of the same rows is
/// its own (found by a resilience review: usage counted such a batch's
/// requests twice).
#[tokio::test]
async fn a_request_log_batch_retried_after_its_commit_is_written_once() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let db = tdb.database();
    let entries: Vec<tenantry_db::RequestLogEntry> = (0..3)
        .map(|i| tenantry_db::RequestLogEntry {
            request_id: Some(format!("batch-probe-{i}")),
            ..tenantry_db::RequestLogEntry::new(
                tenantry_db::TenantId::from_uuid(a),
                "GET",
                "/v1/resources",
                200,
                1.0,
            )
        })
        .collect();
    let su = tdb.superuser_client().await;
    let logged = "SELECT count(*) FROM tenantry.request_log WHERE request_id LIKE 'batch-probe-%'";
    let batch = Uuid::new_v4();
    assert_eq!(db.log_request_batch(&entries, batch).await.unwrap(), 3);
    assert_eq!(count(&su, logged).await, 3);
    // The retry of a batch that committed: the log holds its rows, once.
    assert_eq!(db.log_request_batch(&entries, batch).await.unwrap(), 3);
    assert_eq!(count(&su, logged).await, 3);
    // Another batch is written, even of the same rows.
    db.log_requests(&entries).await.unwrap();
    assert_eq!(count(&su, logged).await, 6);
}

/// Each ended hour is counted once into `tenant_metric_hours` (migration
/// 0058), and `tenant_metrics` answers exactly what the guide's definition
/// over `request_log` answers: the rolled-up hours from there, the later
/// ones from the log. A refresh re-counted every request of 30 days before
/// (41 s at 3.25 million rows).
#[tokio::test]
async fn each_ended_hour_is_rolled_up_once_and_tenant_metrics_answers_as_the_guides_definition() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let su = tdb.superuser_client().await;
    let t1 = create_tenant(&admin, "t1", None).await;
    let t2 = create_tenant(&admin, "t2", None).await;
    // Requests over three days, the current hour included: users, keys,
    // resources, statuses and latencies that differ, some NULL.
    su.batch_execute(&format!(
        "INSERT INTO tenantry.request_log (tenant_id, created_at, user_id, key_id, resource_id, method, route, status, latency_ms)
         SELECT CASE WHEN i % 3 = 0 THEN '{t2}'::uuid ELSE '{t1}'::uuid END,
                now() - (i % 70) * interval '1 hour' - (i % 7) * interval '1 minute',
                CASE WHEN i % 5 = 0 THEN NULL ELSE ('00000000-0000-0000-0000-00000000000' || (i % 4))::uuid END,
                ('00000000-0000-0000-0000-0000000000' || lpad((i % 11)::text, 2, '0'))::uuid,
                CASE WHEN i % 2 = 0 THEN ('00000000-0000-0000-0000-0000000001' || lpad((i % 13)::text, 2, '0'))::uuid END,
                'GET', '/v1/resources', (ARRAY[200, 201, 404, 422, 500, 503])[1 + i % 6], (i % 97) * 1.5
         FROM generate_series(1, 3000) i"
    ))
    .await
    .unwrap();
    // The guide's definition (migration 0026's), hours cut in UTC.
    let guide = "SELECT tenant_id, date_trunc('hour', created_at, 'UTC') AS hour, count(*) AS request_count,
                        count(DISTINCT user_id) AS unique_users, count(DISTINCT resource_id) AS resources_accessed,
                        count(DISTINCT key_id) AS unique_keys,
                        count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS client_errors,
                        count(*) FILTER (WHERE status >= 500) AS server_errors,
                        percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_latency_ms
                 FROM tenantry.request_log WHERE created_at > now() - interval '30 days'
                 GROUP BY 1, 2";
    let rows = |sql: String| {
        let su = &su;
        async move {
            let mut v: Vec<String> = su
                .query(
                    &format!(
                        "SELECT format('%s %s %s %s %s %s %s %s %s', tenant_id, hour, request_count, unique_users,
                                       resources_accessed, unique_keys, client_errors, server_errors,
                                       round(p95_latency_ms::numeric, 6))
                         FROM ({sql}) m"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            v.sort();
            v
        }
    };
    let count_of = |sql: &'static str| {
        let su = &su;
        async move { su.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let expected = rows(guide.to_owned()).await;
    assert!(expected.len() > 100, "{}", expected.len());
    // The copy (defined in migration 0058) is the live view's query (defined
    // in repeatable/06_usage.sql): a change to one is made to both.
    let same: bool = su
        .query_one(
            "SELECT pg_get_viewdef('tenantry.tenant_metrics'::regclass)
                  = pg_get_viewdef('tenantry.tenant_metrics_now'::regclass)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(same, "tenant_metrics and tenant_metrics_now differ");

    exec(&admin, "SELECT refresh_tenant_metrics()").await;
    assert_eq!(
        rows("SELECT * FROM tenantry.tenant_metrics".into()).await,
        expected
    );
    // The hours that ended five minutes ago or more are rolled up, and no
    // later one; the view's other rows come from the log.
    let (rolled, open): (i64, i64) = {
        let r = su
            .query_one(
                "SELECT (SELECT count(*) FROM tenantry.tenant_metric_hours),
                        (SELECT count(*) FROM tenantry.tenant_metric_hours
                          WHERE hour >= date_trunc('hour', now() - interval '5 minutes', 'UTC'))",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(rolled > 100 && open == 0, "{rolled} rolled, {open} open");
    assert_eq!(
        count_of(
            "SELECT count(*) FROM tenantry.tenant_metric_rollups
              WHERE hour > now() - interval '30 days' - interval '1 hour'"
        )
        .await,
        count_of(
            "SELECT (extract(epoch FROM date_trunc('hour', now() - interval '5 minutes', 'UTC')
                      - date_trunc('hour', now() - interval '30 days', 'UTC')) / 3600)::bigint"
        )
        .await,
        "every ended hour of the last 30 days, without a gap"
    );

    // Again: nothing is counted twice, and a request of the current hour
    // is in the next refresh.
    exec(&admin, "SELECT refresh_tenant_metrics()").await;
    assert_eq!(
        count_of("SELECT count(*) FROM tenantry.tenant_metric_hours").await,
        rolled
    );
    su.batch_execute(&format!(
        "INSERT INTO tenantry.request_log (tenant_id, created_at, method, route, status, latency_ms)
         VALUES ('{t2}', now(), 'GET', '/v1/resources', 200, 3)"
    ))
    .await
    .unwrap();
    let expected = rows(guide.to_owned()).await;
    exec(&admin, "SELECT refresh_tenant_metrics()").await;
    assert_eq!(
        rows("SELECT * FROM tenantry.tenant_metrics".into()).await,
        expected
    );
    // The guide's own statement, by an operator in another time zone.
    su.batch_execute(
        "SET TimeZone = 'Asia/Kolkata'; REFRESH MATERIALIZED VIEW CONCURRENTLY tenantry.tenant_metrics; RESET TimeZone",
    )
    .await
    .unwrap();
    assert_eq!(
        rows("SELECT * FROM tenantry.tenant_metrics".into()).await,
        expected
    );
    // A tenant's own usage is live, between refreshes too; the server's
    // upkeep refreshes the guide's copy only once it rolled an hour up.
    let app = app(&tdb).await;
    let own = |t: Uuid| {
        let app = &app;
        async move {
            set_context(app, t).await;
            let n: i64 = app
                .query_one(
                    "SELECT coalesce(sum(request_count), 0)::bigint FROM tenantry.current_tenant_metrics()
                      WHERE NOT is_descendant",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            clear_context(app).await;
            n
        }
    };
    let copy_of = |t: Uuid| {
        let su = &su;
        async move {
            su.query_one(
                "SELECT coalesce(sum(request_count), 0)::bigint FROM tenantry.tenant_metrics WHERE tenant_id = $1",
                &[&t],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    let before = own(t2).await;
    assert_eq!(before, copy_of(t2).await);
    su.batch_execute(&format!(
        "INSERT INTO tenantry.request_log (tenant_id, created_at, method, route, status, latency_ms)
         VALUES ('{t2}', now(), 'GET', '/v1/resources', 200, 3)"
    ))
    .await
    .unwrap();
    assert_eq!(own(t2).await, before + 1, "live, before any refresh");
    let rolled: i32 = admin
        .query_one("SELECT tenantry.usage_upkeep()", &[])
        .await
        .unwrap()
        .get(0);
    // (Unless the clock passed five past an hour meanwhile, which rolls
    // one up and refreshes the copy.)
    if rolled == 0 {
        assert_eq!(copy_of(t2).await, before, "the copy waits for an hour");
    }
    // No tenant role reads the rolled-up hours.
    set_context(&app, t1).await;
    denied(&app, "SELECT * FROM tenantry.tenant_metric_hours", "42501").await;
    denied(&app, "SELECT * FROM tenantry.tenant_metrics_now", "42501").await;
}

/// Several servers run the usage upkeep: one at a time, and a server whose
/// run finds another's under way leaves the work to it at once instead of
/// waiting on the hours the other claimed until its lock timeout (which
/// counted a failure every hour on every other server: a verification
/// review). An explicit refresh waits its turn.
#[tokio::test]
async fn a_servers_upkeep_leaves_the_work_to_another_under_way_and_an_explicit_refresh_waits() {
    let tdb = TestDatabase::new().await;
    let first = admin(&tdb).await;
    let second = admin(&tdb).await;
    let t = create_tenant(&first, "t", None).await;
    let logger = logger(&tdb).await;
    log_requests(&logger, t, &[Uuid::new_v4()]).await;
    exec(&first, "BEGIN").await;
    let rolled: i32 = first
        .query_one("SELECT tenantry.usage_upkeep()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(rolled > 0, "the first upkeep counts 30 days");
    exec(&second, "SET lock_timeout = '1s'").await;
    let started = std::time::Instant::now();
    let skipped: i32 = second
        .query_one("SELECT tenantry.usage_upkeep()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(skipped, 0);
    assert!(started.elapsed() < std::time::Duration::from_millis(900));
    expect_sqlstate(
        second
            .batch_execute("SELECT tenantry.refresh_tenant_metrics()")
            .await,
        "55P03",
        "an explicit refresh while another upkeep runs",
    );
    exec(&first, "COMMIT").await;
    exec(&second, "SELECT tenantry.refresh_tenant_metrics()").await;
    let su = tdb.superuser_client().await;
    assert_eq!(
        count(
            &su,
            &format!("SELECT count(*) FROM tenantry.tenant_metrics WHERE tenant_id = '{t}'")
        )
        .await,
        1
    );
}

/// The request log's daily partitions are UTC's days whatever the session's
/// (or the database's) TimeZone: made under another zone, a day's bounds
/// moved by its offset, overlapped the days made before, and the server's
/// upkeep failed every minute until the days made ahead ran out and every row
/// went to the default partition (found by a review of clocks).
#[tokio::test]
async fn request_log_partitions_are_utc_days_whatever_the_sessions_time_zone() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    for zone in ["Asia/Tokyo", "America/New_York", "Pacific/Chatham"] {
        exec(&su, &format!("SET TimeZone = '{zone}'")).await;
        su.query_one("SELECT tenantry.ensure_request_log_partitions(10)", &[])
            .await
            .unwrap_or_else(|e| panic!("{zone}: {e:?}"));
        su.query_one(
            "SELECT tenantry.drop_request_log_partitions(interval '35 days')",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{zone}: {e:?}"));
    }
    exec(&su, "SET TimeZone = 'UTC'").await;
    let bounds = strings(
        &su,
        "SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid)
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'tenantry.request_log'::regclass AND c.relname ~ '^request_log_[0-9]{8}$'
          ORDER BY 1",
    )
    .await;
    // Yesterday to ten days ahead (UTC), each from one UTC midnight to the next.
    assert!(bounds.len() >= 12, "{bounds:?}");
    for b in &bounds {
        let day = &b["request_log_".len().."request_log_".len() + 8];
        let from = format!("{}-{}-{} 00:00:00+00", &day[..4], &day[4..6], &day[6..]);
        assert!(
            b.contains(&format!("FROM ('{from}') TO ('")) && b.ends_with(" 00:00:00+00')"),
            "{b}"
        );
    }
}
