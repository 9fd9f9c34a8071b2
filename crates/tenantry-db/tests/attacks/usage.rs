//! Usage: usage functions and views show a tenant only its own subtree; the
//! metrics view and table partitions are unreadable to `tenantry_app`.

use uuid::Uuid;

use tenantry_db::testing::enter_signed;
use tenantry_db::SignedContext;
use tokio_postgres::Client;

use crate::common::{count, create_silo, create_tenant, exec, strings};
use crate::helpers::{app, begin_as, commit, create_resource, denied, fails, rollback, world};

/// On a connection of the server's login switched to `tenantry_logger`: a
/// transaction in the administrative context the server's request-log
/// writer proves (signed with the context key, as on a pooled connection).
async fn begin_as_logger(logger: &Client) {
    exec(logger, "BEGIN").await;
    let part = enter_signed(logger, &SignedContext::admin(Some("request_log".into())))
        .await
        .expect("entering the writer's context");
    assert!(part.is_some(), "the writer's context was refused");
}

#[tokio::test]
async fn usage_functions_and_views_show_a_child_neither_its_parent_nor_its_sibling() {
    let w = world().await;
    let left = create_tenant(&w.admin, "left", Some(w.a)).await;
    let right = create_tenant(&w.admin, "right", Some(w.a)).await;
    create_resource(&w.app, right, "right-doc").await;
    for t in [w.a, left, right, w.b] {
        begin_as(&w.app, t).await;
        exec(
            &w.app,
            &format!("INSERT INTO tenantry.request_log (tenant_id, route, status) VALUES ('{t}', '/r', 200)"),
        )
        .await;
        commit(&w.app).await;
    }
    exec(&w.admin, "SELECT tenantry.refresh_tenant_metrics()").await;
    for (t, expected) in [
        (w.a, vec![w.a, left, right]),
        (left, vec![left]),
        (right, vec![right]),
    ] {
        let mut expected: Vec<String> = expected.iter().map(Uuid::to_string).collect();
        expected.sort();
        begin_as(&w.app, t).await;
        for sql in [
            "SELECT DISTINCT tenant_id::text FROM tenantry.current_tenant_metrics()",
            "SELECT tenant_id::text FROM tenantry.tenant_resource_usage",
        ] {
            assert_eq!(strings(&w.app, sql).await, expected, "{t}: {sql}");
        }
        assert_eq!(
            strings(
                &w.app,
                "SELECT DISTINCT tenant_id::text FROM tenantry.request_log"
            )
            .await,
            [t.to_string()]
        );
        commit(&w.app).await;
    }
}

#[tokio::test]
async fn the_metrics_view_and_table_partitions_are_unreadable_by_tenantry_app() {
    let w = world().await;
    let silo = create_silo(&w.admin, "silo").await;
    create_resource(&w.app, silo, "silo-doc").await;
    exec(&w.admin, "SELECT tenantry.refresh_tenant_metrics()").await;
    // The schema tenant's own table: readable like tenantry.resources, under
    // the same policy (another tenant sees none of its rows).
    let silo_table: String = w
        .tdb
        .superuser_client()
        .await
        .query_one(
            "SELECT format('%I.resources', schema_name) FROM tenantry.tenants WHERE tenant_id = $1",
            &[&silo],
        )
        .await
        .unwrap()
        .get(0);
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SET LOCAL ROLE tenantry_app_own").await;
    assert_eq!(
        count(&w.app, &format!("SELECT count(*) FROM {silo_table}")).await,
        0
    );
    exec(&w.app, "SET LOCAL ROLE tenantry_app").await;
    exec(&w.app, "SAVEPOINT s").await;
    for relation in [
        "tenantry.tenant_metrics",
        "tenantry.request_log_default",
        "tenantry.schema_migrations",
        "tenantry.schema_definitions",
    ] {
        let (code, message, _) = fails(
            &w.app,
            &format!("ROLLBACK TO SAVEPOINT s; SELECT count(*) FROM {relation}"),
        )
        .await;
        assert_eq!(code, "42501", "{relation}: {message}");
    }
    denied(
        &w.app,
        "ROLLBACK TO SAVEPOINT s; REFRESH MATERIALIZED VIEW tenantry.tenant_metrics",
        "42501",
    )
    .await;
    rollback(&w.app).await;
}

/// Found by an audit of a team's service: SQL run through the library could
/// `SET LOCAL ROLE tenantry_admin` and read every tenant's row (names,
/// settings, parents, schemas) and every tenant's audit log.
#[tokio::test]
async fn the_admin_role_without_a_proven_context_reads_no_tenant_hierarchy_audit_or_purge_record() {
    let w = world().await;
    let su = w.tdb.superuser_client().await;
    let tables = [
        "tenantry.tenants",
        "tenantry.tenant_hierarchy",
        "tenantry.audit_log",
        "tenantry.purged_tenants",
    ];
    for table in &tables[..3] {
        assert!(
            count(&su, &format!("SELECT count(*) FROM {table}")).await > 0,
            "{table} holds rows to read"
        );
    }
    let server = w.tdb.server_client().await;
    for role in [
        "SET ROLE tenantry_admin",
        "BEGIN; SET LOCAL ROLE tenantry_admin",
    ] {
        exec(&server, role).await;
        for table in tables {
            assert_eq!(
                count(&server, &format!("SELECT count(*) FROM {table}")).await,
                0,
                "{role}: {table}"
            );
        }
        exec(&server, "ROLLBACK; RESET ROLE").await;
    }
}

/// tenantry_admin is a role the server's login may assume (SQL injection in
/// the server runs as it): without the proven administrative context it
/// neither ranks every tenant's usage nor empties, refreshes or stretches the
/// request log's partitions, which hold every tenant's requests.
#[tokio::test]
async fn the_admin_role_without_a_proven_context_neither_reads_every_tenants_usage_nor_drops_the_log(
) {
    let w = world().await;
    for t in [w.a, w.b] {
        begin_as(&w.app, t).await;
        exec(
            &w.app,
            &format!("INSERT INTO tenantry.request_log (tenant_id, route, status) VALUES ('{t}', '/r', 200)"),
        )
        .await;
        commit(&w.app).await;
    }
    let su = w.tdb.superuser_client().await;
    let logged = "SELECT count(*) FROM tenantry.request_log";
    let before = count(&su, logged).await;
    let server = w.tdb.server_client().await;
    exec(&server, "SET ROLE tenantry_admin").await;
    for sql in [
        "SELECT * FROM tenantry.usage_top(1, 'storage', 100)",
        "SELECT tenantry.drop_request_log_partitions(interval '-100 years')",
        "SELECT tenantry.drop_request_log_partitions()",
        "SELECT tenantry.refresh_tenant_metrics()",
        "SELECT tenantry.usage_upkeep()",
        "SELECT tenantry.ensure_request_log_partitions(100000)",
        // Not granted at all: the roll-up's internals and the recount.
        "SELECT tenantry.keep_usage(true)",
        "SELECT tenantry.roll_up_tenant_metrics()",
        "SELECT tenantry.recount_tenant_metrics(gen_random_uuid())",
        "SELECT tenantry.count_usage_hours(now() - interval '1 day', now(), NULL)",
        "SELECT * FROM tenantry.tenant_metrics_now",
        "SELECT * FROM tenantry.tenant_metric_hours",
    ] {
        let (code, message, _) = fails(&server, sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    assert_eq!(count(&su, logged).await, before);
    // An operator (or the server's scheduler, with its proven context) may;
    // a retention that would take today's rows is refused all the same.
    for (sql, code) in [
        (
            "SELECT tenantry.drop_request_log_partitions(interval '-100 years')",
            "TN422",
        ),
        (
            "SELECT tenantry.drop_request_log_partitions(interval '1 day')",
            "TN422",
        ),
        (
            "SELECT tenantry.ensure_request_log_partitions(100000)",
            "TN422",
        ),
    ] {
        let (got, message, _) = fails(&su, sql).await;
        assert_eq!(got, code, "{sql}: {message}");
    }
    exec(
        &su,
        "SELECT tenantry.drop_request_log_partitions(interval '35 days')",
    )
    .await;
    exec(&su, "SELECT tenantry.refresh_tenant_metrics()").await;
    assert_eq!(count(&su, logged).await, before);
}

/// Request-log rows dated far ahead (or far back) would land in the default
/// partition, which then takes the place of those days' own partitions for
/// every tenant: the tenant role and the logger append rows dated around
/// now only, and retention empties the default partition of old rows too.
#[tokio::test]
async fn request_log_rows_dated_far_from_now_are_refused_and_old_ones_leave_the_default_partition()
{
    let w = world().await;
    let logger = w.tdb.server_client().await;
    exec(&logger, "SET ROLE tenantry_logger").await;
    for when in ["now() + interval '8 days'", "now() - interval '100 days'"] {
        begin_as_logger(&logger).await;
        begin_as(&w.app, w.a).await;
        let (code, message, _) = fails(
            &w.app,
            &format!("INSERT INTO tenantry.request_log (tenant_id, created_at, route, status) VALUES ('{}', {when}, '/r', 200)", w.a),
        )
        .await;
        assert_eq!(code, "42501", "{when}: {message}");
        rollback(&w.app).await;
        let (code, message, _) = fails(
            &logger,
            &format!("INSERT INTO tenantry.request_log (tenant_id, created_at, route, status) VALUES ('{}', {when}, '/r', 200)", w.b),
        )
        .await;
        assert_eq!(code, "42501", "logger, {when}: {message}");
        rollback(&logger).await;
    }
    begin_as_logger(&logger).await;
    exec(
        &logger,
        &format!("INSERT INTO tenantry.request_log (tenant_id, created_at, route, status) VALUES ('{}', now() - interval '2 days', '/r', 200)", w.b),
    )
    .await;
    commit(&logger).await;
    let su = w.tdb.superuser_client().await;
    exec(
        &su,
        &format!("INSERT INTO tenantry.request_log (tenant_id, created_at, route, status) VALUES ('{}', now() - interval '40 days', '/old', 200)", w.a),
    )
    .await;
    exec(&su, "SELECT tenantry.drop_request_log_partitions()").await;
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM tenantry.request_log WHERE route = '/old'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM tenantry.request_log WHERE route = '/r'"
        )
        .await,
        1
    );
}

/// SQL injected into a tenant's transaction (the server's login, a proven
/// context for `a`) may switch to `tenantry_logger`, which appends request-log
/// rows for every tenant. Before the fix it planted rows for `b`: two million
/// of them with made-up key ids made `b`'s key usage (`GET /v1/usage/keys`,
/// the console's usage page) 264 MB and the server 700 MB, and rows of
/// megabytes filled the disk every tenant shares (red-team review). The
/// logger appends in a proven administrative context only, whatever way the
/// switch is made, and no role writes an unbounded row.
#[tokio::test]
async fn sql_in_a_tenants_transaction_cannot_append_request_log_rows_for_another_tenant() {
    let w = world().await;
    let su = w.tdb.superuser_client().await;
    let planted = |t: Uuid| {
        format!(
            "INSERT INTO tenantry.request_log (tenant_id, method, route, status, latency_ms, key_id)
             SELECT '{t}', 'GET', '/planted', 200, 1, gen_random_uuid() FROM generate_series(1, 10)"
        )
    };
    for attempt in [
        format!("SET LOCAL ROLE tenantry_logger; {}", planted(w.b)),
        format!(
            "DO $$ BEGIN SET LOCAL ROLE tenantry_logger; {}; END $$",
            planted(w.b)
        ),
        format!(
            "SELECT pg_catalog.set_config('role', 'tenantry_logger', true); {}",
            planted(w.b)
        ),
        // The logger's role with the tenant's own id is no way round either.
        format!("SET LOCAL ROLE tenantry_logger; {}", planted(w.a)),
        // Nor the guide's setter for an administrative context.
        format!(
            "SET LOCAL ROLE tenantry_admin; SELECT tenantry.set_admin_context('request_log', true);
             SET LOCAL ROLE tenantry_logger; {}",
            planted(w.b)
        ),
    ] {
        begin_as(&w.app, w.a).await;
        let (code, message, _) = fails(&w.app, &attempt).await;
        assert_eq!(code, "42501", "{attempt}: {message}");
        rollback(&w.app).await;
    }
    // As tenant a itself (its own policy): its own rows only, and none of a
    // size without bound.
    begin_as(&w.app, w.a).await;
    denied(&w.app, &planted(w.b), "42501").await;
    rollback(&w.app).await;
    for (what, row) in [
        (
            "a route of a megabyte",
            "'GET', repeat('x', 1000000), 200, 1",
        ),
        ("a method of a kilobyte", "repeat('M', 1000), '/r', 200, 1"),
        ("a status no HTTP has", "'GET', '/r', 32000, 1"),
        ("a latency of NaN", "'GET', '/r', 200, 'NaN'"),
        ("an infinite latency", "'GET', '/r', 200, 'Infinity'"),
    ] {
        begin_as(&w.app, w.a).await;
        let (code, message, _) = fails(
            &w.app,
            &format!(
                "INSERT INTO tenantry.request_log (tenant_id, method, route, status, latency_ms) VALUES ('{}', {row})",
                w.a
            ),
        )
        .await;
        assert_eq!(code, "23514", "{what}: {message}");
        rollback(&w.app).await;
    }
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM tenantry.request_log WHERE route = '/planted' OR method <> 'GET'"
        )
        .await,
        0,
        "nothing was planted"
    );
    // The writer's context is no tenantry_admin context (a signed one seen
    // once must not open the admin role), and the logger takes no other.
    let server = w.tdb.server_client().await;
    for (role, actor) in [
        ("tenantry_admin", "request_log"),
        ("tenantry_logger", "scheduler"),
        ("tenantry_logger", "admin"),
    ] {
        exec(&server, &format!("SET ROLE {role}; BEGIN")).await;
        let part = enter_signed(&server, &SignedContext::admin(Some(actor.into())))
            .await
            .unwrap();
        assert_eq!(part, None, "{role} entered the context of actor {actor}");
        rollback(&server).await;
    }
    // The server's writer still appends for any tenant, in its own context.
    let logger = w.tdb.server_client().await;
    exec(&logger, "SET ROLE tenantry_logger").await;
    begin_as_logger(&logger).await;
    exec(&logger, &planted(w.b)).await;
    commit(&logger).await;
    assert_eq!(
        count(
            &su,
            &format!(
                "SELECT count(*) FROM tenantry.request_log WHERE route = '/planted' AND tenant_id = '{}'",
                w.b
            )
        )
        .await,
        10
    );
}

/// A tenant's long read of its request log cannot make the log's partition
/// upkeep queue every other tenant behind it: creating a partition locks the
/// whole log, so it waits at most 100 ms for that lock and leaves a day it
/// could not lock for its next call (found by a review: a server's first
/// upkeep waited on one tenant's 30-day usage read while holding its place
/// in the lock queue, then held the log through the metrics' refresh; every
/// tenant's usage reads and the log's writer waited 6 s).
#[tokio::test]
async fn a_tenants_long_read_of_the_request_log_never_queues_others_behind_the_partition_upkeep() {
    let w = world().await;
    let su = w.tdb.superuser_client().await;
    let day = "request_log_' || to_char(current_date + 7, 'YYYYMMDD')";
    exec(
        &su,
        &format!("DO $$ BEGIN EXECUTE format('DROP TABLE tenantry.%I', '{day}); END $$"),
    )
    .await;
    let exists = format!("SELECT count(*) FROM pg_class WHERE relname = '{day} AND relnamespace = 'tenantry'::regnamespace");
    assert_eq!(count(&su, &exists).await, 0);

    // Tenant a reads its log in a transaction it keeps open.
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SELECT count(*) FROM tenantry.request_log").await;

    // The upkeep (an operator here) does not wait for it: nothing created,
    // no error, within a statement timeout far above its lock wait.
    exec(&su, "SET statement_timeout = '10s'").await;
    let created = su
        .query_one("SELECT tenantry.ensure_request_log_partitions(7)", &[])
        .await
        .expect("the partition upkeep returns instead of waiting")
        .get::<_, i32>(0);
    assert_eq!(created, 0);
    assert_eq!(count(&su, &exists).await, 0);
    // Tenant b reads its log meanwhile: no lock left queued before it.
    let other = app(&w.tdb).await;
    exec(&other, "SET statement_timeout = '10s'").await;
    begin_as(&other, w.b).await;
    exec(&other, "SELECT count(*) FROM tenantry.request_log").await;
    commit(&other).await;

    // Once a's read ends, the next call creates the day.
    commit(&w.app).await;
    let created = su
        .query_one("SELECT tenantry.ensure_request_log_partitions(7)", &[])
        .await
        .unwrap()
        .get::<_, i32>(0);
    assert_eq!(created, 1);
    assert_eq!(count(&su, &exists).await, 1);
}

/// The request-log writer's batch claims need its proven administrative
/// context, as its appends do: SQL that takes the logger's role in a
/// tenant's transaction claims nothing (a verification review claimed a
/// million ids, 88 MB of a table every tenant's disk holds, in 14 s).
#[tokio::test]
async fn the_logger_role_without_a_proven_context_claims_no_request_log_batch() {
    let w = world().await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SET LOCAL ROLE tenantry_logger").await;
    let (code, message, _) = fails(
        &w.app,
        "SELECT tenantry.claim_request_log_batch(gen_random_uuid()) FROM generate_series(1, 1000)",
    )
    .await;
    assert_eq!(code, "42501", "{message}");
    rollback(&w.app).await;
    let su = w.tdb.superuser_client().await;
    assert_eq!(
        count(&su, "SELECT count(*) FROM tenantry.request_log_batches").await,
        0
    );
}

/// The operator's audit log (migration 0061) records what operators did to
/// every tenant at once: SQL injected into the server, as its login or any
/// role that login can become, in a tenant's context or none, can neither
/// read it, add a row to it, nor change or erase one.
#[tokio::test]
async fn the_operators_audit_log_is_neither_readable_nor_writable_by_the_servers_roles() {
    let w = world().await;
    let su = w.tdb.superuser_client().await;
    exec(
        &su,
        "SELECT tenantry.define_permission('invoices.approve', 'Approve invoices')",
    )
    .await;
    let log = "SELECT count(*)::bigint FROM tenantry.operator_audit_log";
    let before = count(&su, log).await;
    assert!(before > 0, "the definition is on record");

    let writes = [
        "INSERT INTO tenantry.operator_audit_log (actor, action, target_type) VALUES ('admin', 'table.released', 'table')",
        "UPDATE tenantry.operator_audit_log SET actor = 'someone else'",
        "DELETE FROM tenantry.operator_audit_log",
        "TRUNCATE tenantry.operator_audit_log",
        "SELECT tenantry.write_operator_audit('table.released', 'table', 'public.invoices', '{}')",
        "SELECT tenantry.expire_audit_log('1 day', 1000)",
    ];
    // A tenant's transaction as tenantry_app: not even a count.
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for sql in std::iter::once(log).chain(writes) {
        denied(&w.app, &format!("ROLLBACK TO SAVEPOINT s; {sql}"), "42501").await;
    }
    rollback(&w.app).await;
    // The login itself and every other role it can become, without a context.
    for role in [
        "tenantry_server",
        "tenantry_admin",
        "tenantry_logger",
        "tenantry_app_own",
    ] {
        let server = w.tdb.server_client().await;
        if role != "tenantry_server" {
            exec(&server, &format!("SET ROLE {role}")).await;
        }
        // The administrative context is not the login's to give itself.
        let (code, _, _) = fails(&server, "SELECT tenantry.set_admin_context('operator')").await;
        assert_eq!(code, "42501", "{role}: set_admin_context");
        if role == "tenantry_admin" {
            assert_eq!(count(&server, log).await, 0, "{role} reads nothing");
        } else {
            denied(&server, log, "42501").await;
        }
        for sql in writes {
            denied(&server, sql, "42501").await;
        }
    }
    assert_eq!(count(&su, log).await, before, "nothing added or removed");
}
