//! Side channels of a raw SQL session: leaky functions in a WHERE clause,
//! COPY, planner statistics and other sessions' queries.

use crate::common::{count, describe, exec, strings};
use crate::helpers::{
    across_tiers, app, begin_as, commit, fails, names_seen_by, rollback, world, Tier, World,
};

across_tiers!(
    a_leaky_function_in_a_where_clause_never_sees_a_foreign_row,
    copy_reads_only_the_contexts_rows_and_copy_from_is_refused,
    planner_statistics_and_other_sessions_queries_are_hidden_from_tenantry_app,
);

async fn a_leaky_function_in_a_where_clause_never_sees_a_foreign_row(w: World) {
    // The classic leaky-view attack: a volatile function that records (or
    // raises on) every row it is shown, placed in the attacker's own WHERE,
    // directly and behind an operator of its own. Planted inside the
    // transaction: a session that already holds temporary relations is
    // refused every context (objects.rs).
    begin_as(&w.app, w.a).await;
    exec(
        &w.app,
        "CREATE TEMP TABLE seen (name text);
         CREATE FUNCTION pg_temp.peek(n text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
         BEGIN INSERT INTO pg_temp.seen VALUES (n); RETURN true; END $$;
         CREATE FUNCTION pg_temp.trap(n text, probe text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
         BEGIN
             RAISE NOTICE 'row %', n;
             IF n <> probe THEN RAISE EXCEPTION 'saw %', n; END IF;
             RETURN true;
         END $$;
         CREATE OPERATOR pg_temp.=~= (LEFTARG = text, RIGHTARG = text, FUNCTION = pg_temp.trap);",
    )
    .await;
    let mut seen_through = Vec::new();
    for table in w.resource_tables().await {
        let own = count(&w.app, &format!("SELECT count(*) FROM {table}")).await;
        assert!(own <= 1, "{table}: {own} rows");
        if own == 1 {
            seen_through.push(table.clone());
        }
        for sql in [
            format!("SELECT count(*) FROM {table} WHERE pg_temp.peek(name)"),
            format!("SELECT count(*) FROM {table} WHERE name OPERATOR(pg_temp.=~=) 'a-doc'"),
            format!(
                "SELECT count(*) FROM {table}
                 WHERE CASE WHEN name = 'b-secret' THEN 1 / (length(name) - 8) ELSE 1 END = 1"
            ),
        ] {
            assert_eq!(
                count(&w.app, &sql).await,
                own,
                "{sql}: b's row would have been recorded or raised"
            );
        }
        let n = w
            .app
            .execute(
                &format!("UPDATE {table} SET name = name WHERE pg_temp.peek(name || '@update')"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(n, own as u64, "{table}");
        let n = w
            .app
            .execute(
                &format!("DELETE FROM {table} WHERE NOT name OPERATOR(pg_temp.=~=) 'a-doc'"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    commit(&w.app).await;
    // Its own row is read through the family and through its own tier's table.
    assert_eq!(seen_through.len(), 2, "{seen_through:?}");
    assert_eq!(
        strings(&w.app, "SELECT DISTINCT name FROM pg_temp.seen").await,
        ["a-doc", "a-doc@update"]
    );
    assert_eq!(names_seen_by(&app(&w.tdb).await, w.b).await, ["b-secret"]);
}

async fn copy_reads_only_the_contexts_rows_and_copy_from_is_refused(w: World) {
    begin_as(&w.app, w.a).await;
    // Server-side programs and files are a superuser's (or pg_execute_server_program's).
    let (code, message, _) = fails(
        &w.app,
        "COPY tenantry.resources (tenant_id, name) FROM PROGRAM 'true'",
    )
    .await;
    assert_eq!(code, "42501", "{message}");
    rollback(&w.app).await;
    let copy = w
        .app
        .copy_out("COPY tenantry.resources (name) TO STDOUT")
        .await;
    // Without a context COPY TO yields nothing at all.
    let bytes = collect_copy(copy.unwrap()).await;
    assert!(bytes.is_empty(), "{}", String::from_utf8_lossy(&bytes));
    // COPY of a table itself runs the policies over that table alone (the
    // pooled one without its children): the caller's own rows where they
    // live, nothing elsewhere. COPY of a query returns exactly what a SELECT
    // does. Through the pooled table and each schema tenant's own table (the
    // victim's too).
    let a_schema = match w.tiers.0 {
        Tier::Pooled => None,
        Tier::Schema => Some(crate::common::schema_of(&w.admin, w.a).await),
    };
    begin_as(&w.app, w.a).await;
    for table in w.insertable_tables().await {
        let copy = w
            .app
            .copy_out(&format!("COPY {table} (name) TO STDOUT"))
            .await
            .unwrap();
        let rows = collect_copy(copy).await;
        let own = match &a_schema {
            None => table == "tenantry.resources",
            Some(schema) => table.starts_with(&format!("{schema}.")),
        };
        let expected: &[u8] = if own { b"a-doc\n" } else { b"" };
        assert_eq!(
            rows,
            expected,
            "{table}: {}",
            String::from_utf8_lossy(&rows)
        );
        let copy = w
            .app
            .copy_out(&format!(
                "COPY (SELECT name FROM {table} WHERE tenant_id <> tenantry.current_tenant_id()) TO STDOUT"
            ))
            .await
            .unwrap();
        assert!(collect_copy(copy).await.is_empty(), "{table}");
    }
    let copy = w
        .app
        .copy_out("COPY (SELECT name FROM tenantry.resources) TO STDOUT")
        .await
        .unwrap();
    assert_eq!(collect_copy(copy).await, b"a-doc\n");
    commit(&w.app).await;
    // COPY FROM on its own connection (a refused COPY leaves the driver's state unusable).
    let copier = app(&w.tdb).await;
    begin_as(&copier, w.a).await;
    let sink = copier
        .copy_in::<_, bytes::Bytes>("COPY tenantry.resources (tenant_id, name) FROM STDIN")
        .await;
    let e = match sink {
        Err(e) => e,
        // A Citus coordinator starts the COPY and sends the rows to the
        // shards, whose nodes refuse it at the first row (measured: 0A000,
        // "COPY FROM not supported with row-level security").
        Ok(sink) if tenantry_db::testing::on_citus() => {
            use futures_util::SinkExt;
            let mut sink = std::pin::pin!(sink);
            let row = bytes::Bytes::from(format!("{}\tplanted\n", w.b));
            match sink.send(row).await {
                Err(e) => e,
                Ok(()) => sink
                    .finish()
                    .await
                    .expect_err("COPY FROM into a table under RLS must be refused"),
            }
        }
        Ok(_) => panic!("COPY FROM into a table under RLS must be refused"),
    };
    assert!(
        ["0A000", "42501"].contains(&e.code().map(|c| c.code()).unwrap_or("")),
        "{}",
        describe(&e)
    );
    drop(copier);
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

async fn collect_copy(stream: tokio_postgres::CopyOutStream) -> Vec<u8> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

async fn planner_statistics_and_other_sessions_queries_are_hidden_from_tenantry_app(w: World) {
    // Statistics exist (gathered by the superuser, as autovacuum would), of
    // the family, the pooled table and each schema tenant's table.
    let su = w.tdb.superuser_client().await;
    exec(&su, "ANALYZE").await;
    let stats = "SELECT count(*) FROM pg_stats
                 WHERE (schemaname = 'tenantry' OR schemaname LIKE 'tenant\\_%')
                   AND tablename IN ('resources', 'tenants', 'api_keys')";
    assert!(count(&su, stats).await > 0, "the statistics exist");
    begin_as(&w.app, w.a).await;
    assert_eq!(count(&w.app, stats).await, 0);
    assert_eq!(
        count(
            &w.app,
            "SELECT count(*) FROM pg_stats_ext WHERE tablename = 'resources'"
        )
        .await,
        0
    );
    commit(&w.app).await;
    // Another server session, idle in b's transaction after a literal query.
    let other = app(&w.tdb).await;
    begin_as(&other, w.b).await;
    exec(&other, "SELECT 'b-secret-literal' AS x").await;
    // Not even the sessions: pg_stat_activity is refused (08_shared_state.sql).
    let (code, message, _) = fails(
        &w.app,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%b-secret-literal%' AND pid <> pg_backend_pid()",
    )
    .await;
    assert_eq!(code, "42501", "{message}");
    commit(&other).await;
}

/// Issue 10, finding 10: every tenant acts as the same role, so large objects
/// one tenant made were readable, writable and removable by any other.
#[tokio::test]
async fn large_objects_cannot_be_made_read_or_removed_by_the_tenant_roles() {
    let w = world().await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for sql in [
        "SELECT lo_from_bytea(0, 'a-secret')",
        "SELECT lo_create(0)",
        "SELECT lo_get(1)",
        "SELECT lo_put(1, 0, 'x')",
        "SELECT lo_unlink(1)",
        "SELECT lo_open(1, 262144)",
    ] {
        let (code, message, _) = fails(&w.app, &format!("ROLLBACK TO SAVEPOINT s; {sql}")).await;
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    rollback(&w.app).await;
    // What remains executable for the tenant roles among the large-object
    // functions: nothing.
    assert_eq!(
        strings(
            &w.app,
            "SELECT p.oid::regprocedure::text FROM pg_proc p
             WHERE p.proname ~ '^(lo_|loread$|lowrite$)'
               AND (has_function_privilege('tenantry_app', p.oid, 'EXECUTE')
                    OR has_function_privilege('tenantry_app_own', p.oid, 'EXECUTE')
                    OR has_function_privilege('tenantry_server', p.oid, 'EXECUTE'))"
        )
        .await,
        Vec::<String>::new()
    );
}
