//! Tiers (issue 13): what the pooled and the schema tier add to the doors of
//! the other modules. Routing oneself to another tenant's schema, writing
//! without a context into another tier's table, shares between tiers, and a
//! tenant moved between tiers while another tenant watches: at no step does
//! the watcher read a foreign row or tell a foreign tenant from a missing one.

use uuid::Uuid;

use crate::common::{count, exec, schema_of, strings};
use crate::helpers::{
    across_tiers, begin_as, commit, create_resource, denied, names_seen_by, rollback, same_failure,
    share, unshare, Tier, World,
};

across_tiers!(
    routing_oneself_to_another_tenants_schema_reads_and_changes_nothing_of_it,
    writing_without_a_context_answers_alike_for_a_foreign_tenant_of_either_tier_and_a_missing_one,
    a_share_between_tiers_is_read_only_through_the_fence_and_ends_with_its_revocation_or_its_resource,
    moving_the_victim_between_tiers_step_by_step_keeps_its_rows_and_shares_and_shows_the_attacker_nothing_new,
);

/// The schema holding `t`'s resources: its own, or `tenantry` when pooled.
async fn home_schema(w: &World, t: Uuid) -> String {
    if t == w.a && w.tiers.0 == Tier::Schema || t == w.b && w.tiers.1 == Tier::Schema {
        schema_of(&w.admin, t).await
    } else {
        "tenantry".to_owned()
    }
}

/// The table the server's route names for `t`'s rows (`ONLY` the pooled
/// table, or its schema's own).
async fn home_table(w: &World, t: Uuid) -> String {
    match home_schema(w, t).await.as_str() {
        "tenantry" => "ONLY tenantry.resources".to_owned(),
        schema => format!("\"{schema}\".resources"),
    }
}

async fn routing_oneself_to_another_tenants_schema_reads_and_changes_nothing_of_it(w: World) {
    let victim = home_schema(&w, w.b).await;
    let own = home_schema(&w, w.a).await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    // The server's own route is refused for a schema not the caller's, alike
    // for the victim's and for one that does not exist (a stale route: the
    // server would retry with the tenant's own). Two pooled tenants share
    // theirs (tenantry), where the policies alone decide, as below.
    for schema in [victim.clone(), "tenant_00000000000000000000".to_owned()] {
        if schema == own {
            continue;
        }
        denied(
            &w.app,
            &format!("ROLLBACK TO SAVEPOINT s; SELECT tenantry.use_tenant_schema('{schema}')"),
            "40001",
        )
        .await;
    }
    // The search path set by hand.
    for route in [format!("SET LOCAL search_path = \"{victim}\", tenantry")] {
        exec(&w.app, &format!("ROLLBACK TO SAVEPOINT s; {route}")).await;
        assert_eq!(
            count(
                &w.app,
                "SELECT count(*) FROM resources WHERE tenant_id <> tenantry.current_tenant_id()"
            )
            .await,
            0,
            "{route}"
        );
        for sql in [
            "UPDATE resources SET name = 'pwned' WHERE tenant_id <> tenantry.current_tenant_id()",
            "DELETE FROM resources WHERE tenant_id <> tenantry.current_tenant_id()",
        ] {
            assert_eq!(w.app.execute(sql, &[]).await.unwrap(), 0, "{route}: {sql}");
        }
        let code = same_failure(&w.app, w.b, Uuid::new_v4(), |t| {
            format!(
                "ROLLBACK TO SAVEPOINT s; {route};
                 INSERT INTO resources (tenant_id, name) VALUES ('{t}', 'planted')"
            )
        })
        .await;
        assert_eq!(code, "42501", "{route}");
    }
    rollback(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

/// OPEN ATTACK (found by this test; fails today in the three combinations
/// with a schema tenant): without a context, `tenant_row_home` looks the
/// row's tenant up before the policy refuses the row, and answers 40001
/// "tenant <id> lives in another tier now" for an existing tenant of the
/// other tier, where a missing tenant gets the policy's 42501: whether a
/// uuid is a tenant, and its tier, for anyone holding the login.
async fn writing_without_a_context_answers_alike_for_a_foreign_tenant_of_either_tier_and_a_missing_one(
    w: World,
) {
    // The attacker's session has no tenant context at all (no transaction
    // entered one): the policies see nothing, and the row triggers that
    // look a tenant up (tenant_row_home) must not answer for one either.
    exec(&w.app, "BEGIN; SAVEPOINT s").await;
    for table in w.insertable_tables().await {
        for victim in [w.a, w.b] {
            let code = same_failure(&w.app, victim, Uuid::new_v4(), |t| {
                format!(
                    "ROLLBACK TO SAVEPOINT s;
                     INSERT INTO {table} (tenant_id, name) VALUES ('{t}', 'planted')"
                )
            })
            .await;
            assert_eq!(code, "42501", "{table}");
        }
    }
    exec(&w.app, "ROLLBACK TO SAVEPOINT s").await;
    for table in w.resource_tables().await {
        for sql in [
            format!("UPDATE {table} SET name = 'pwned'"),
            format!("DELETE FROM {table}"),
        ] {
            assert_eq!(w.app.execute(&sql, &[]).await.unwrap(), 0, "{sql}");
        }
    }
    rollback(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

async fn a_share_between_tiers_is_read_only_through_the_fence_and_ends_with_its_revocation_or_its_resource(
    w: World,
) {
    // From the victim's tier to the attacker's, and back.
    share(&w.app, w.b, w.rb, w.a).await;
    share(&w.app, w.a, w.ra, w.b).await;
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc", "b-secret"]);
    assert_eq!(names_seen_by(&w.app, w.b).await, ["a-doc", "b-secret"]);
    let tables = w.resource_tables().await;
    for (me, theirs) in [(w.a, w.rb), (w.b, w.ra)] {
        begin_as(&w.app, me).await;
        // Through resources_shared_with_me() only: no table of either tier
        // shows the row, and the share record is the owner's.
        for table in &tables {
            let sql = format!("SELECT count(*) FROM {table} WHERE id = '{theirs}'");
            assert_eq!(count(&w.app, &sql).await, 0, "{sql}");
        }
        for (sql, n) in [
            (
                format!("SELECT count(*) FROM tenantry.resources_shared_with_me('{theirs}')"),
                1,
            ),
            (
                format!(
                    "SELECT count(*) FROM tenantry.shared_resources WHERE resource_id = '{theirs}'"
                ),
                0,
            ),
        ] {
            assert_eq!(count(&w.app, &sql).await, n, "{sql}");
        }
        commit(&w.app).await;
    }
    // Revoked: gone for the target at once, still the owner's.
    unshare(&w.app, w.b, w.rb, w.a).await;
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
    assert_eq!(names_seen_by(&w.app, w.b).await, ["a-doc", "b-secret"]);
    // Shared again, then each owner deletes its resource, b through its own
    // tier's table (the server's route), a through the family: the shares go
    // with them.
    share(&w.app, w.b, w.rb, w.a).await;
    for (owner, id, table) in [
        (w.b, w.rb, home_table(&w, w.b).await),
        (w.a, w.ra, "tenantry.resources".to_owned()),
    ] {
        begin_as(&w.app, owner).await;
        let n = w
            .app
            .execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&id])
            .await
            .unwrap();
        assert_eq!(n, 1, "{table}");
        commit(&w.app).await;
    }
    assert_eq!(names_seen_by(&w.app, w.a).await, Vec::<String>::new());
    assert_eq!(names_seen_by(&w.app, w.b).await, Vec::<String>::new());
    let su = w.tdb.superuser_client().await;
    assert_eq!(
        count(&su, "SELECT count(*) FROM tenantry.shared_resources").await,
        0,
        "a deleted resource takes its shares with it"
    );
}

/// What the attacker (`a`) and the mover (`b`) read at one step of `b`'s move.
async fn watch(w: &World, step: &str, b_names: &[String]) {
    // The attacker: its own row and what b shares with it, nothing else,
    // through the family, the pooled table and every schema tenant's table
    // (the mover's not yet inherited one included, while it moves there).
    assert_eq!(
        names_seen_by(&w.app, w.a).await,
        ["a-doc", "b-secret"],
        "{step}"
    );
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for table in w.resource_tables().await {
        let sql =
            format!("SELECT count(*) FROM {table} WHERE tenant_id <> tenantry.current_tenant_id()");
        assert_eq!(count(&w.app, &sql).await, 0, "{step}: {sql}");
        let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id = '{}'", w.b);
        assert_eq!(count(&w.app, &sql).await, 0, "{step}: {sql}");
    }
    // The move's bookkeeping is nobody's to read.
    for sql in [
        "SELECT count(*) FROM tenantry.tier_moves",
        "SELECT count(*) FROM tenantry.tier_move_changes",
    ] {
        denied(&w.app, &format!("ROLLBACK TO SAVEPOINT s; {sql}"), "42501").await;
    }
    // Sharing the mover's resource is refused like sharing a missing one.
    let code = same_failure(&w.app, w.rb, Uuid::new_v4(), |id| {
        format!(
            "ROLLBACK TO SAVEPOINT s; SELECT tenantry.share_resource('{id}', '{}')",
            w.b
        )
    })
    .await;
    assert_eq!(code, "TN404", "{step}");
    rollback(&w.app).await;
    // The mover: each of its rows exactly once, and what a shares with it.
    assert_eq!(names_seen_by(&w.app, w.b).await, b_names, "{step}");
}

async fn moving_the_victim_between_tiers_step_by_step_keeps_its_rows_and_shares_and_shows_the_attacker_nothing_new(
    w: World,
) {
    for i in 0..5 {
        create_resource(&w.app, w.b, &format!("b-{i}")).await;
    }
    share(&w.app, w.b, w.rb, w.a).await;
    share(&w.app, w.a, w.ra, w.b).await;
    let mut b_names: Vec<String> = ["a-doc", "b-0", "b-1", "b-2", "b-3", "b-4", "b-secret"]
        .map(String::from)
        .to_vec();
    let target = w.tiers.1.other();
    let b = w.b;
    watch(&w, "before", &b_names).await;

    let started: String = w
        .admin
        .query_one(
            "SELECT tenantry.tier_move_start($1, $2)",
            &[&b, &target.isolation()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(started, "started");
    // Towards the shared tier the batches wait for older transactions first.
    tenantry_db::testing::older_transactions_ended(&w.admin, b).await;
    watch(&w, "started", &b_names).await;
    // Part of the rows copied: towards the schema tier they are now in the
    // pooled table and in the mover's not yet inherited table.
    let copied = copy_batch(&w, 2).await;
    // Towards the shared tier they moved: two rows in the pooled table, the
    // rest in the mover's.
    assert_eq!(copied, 2);
    watch(&w, "partly copied", &b_names).await;
    // The mover keeps writing meanwhile.
    create_resource(&w.app, b, "b-during").await;
    begin_as(&w.app, b).await;
    exec(
        &w.app,
        "UPDATE tenantry.resources SET name = 'b-0-renamed' WHERE name = 'b-0';
         DELETE FROM tenantry.resources WHERE name = 'b-1';",
    )
    .await;
    commit(&w.app).await;
    b_names.retain(|n| n != "b-0" && n != "b-1");
    b_names.extend(["b-during".to_owned(), "b-0-renamed".to_owned()]);
    b_names.sort();
    watch(&w, "written during the move", &b_names).await;
    while copy_batch(&w, 2).await > 0 {}
    watch(&w, "copied", &b_names).await;
    loop {
        let n: i64 = w
            .admin
            .query_one("SELECT tenantry.tier_move_catch_up($1, 2)", &[&b])
            .await
            .unwrap()
            .get(0);
        if n < 2 {
            break;
        }
    }
    watch(&w, "caught up", &b_names).await;
    let finished: serde_json::Value = w
        .admin
        .query_one("SELECT tenantry.tier_move_finish($1)", &[&b])
        .await
        .unwrap()
        .get(0);
    assert_eq!(finished["isolation"], target.isolation());
    watch(&w, "finished", &b_names).await;

    // Every row of the mover once, in its new tier's table; its shares both ways.
    let su = w.tdb.superuser_client().await;
    let places = strings(
        &su,
        &format!(
            "SELECT tableoid::regclass::text || ' ' || count(*) FROM tenantry.resources
             WHERE tenant_id = '{b}' GROUP BY tableoid"
        ),
    )
    .await;
    let home = match target {
        Tier::Pooled => "tenantry.resources".to_owned(),
        Tier::Schema => format!("{}.resources", schema_of(&su, b).await),
    };
    assert_eq!(places, [format!("{home} 6")]);
    assert_eq!(
        crate::helpers::tier_of_row(&su, w.rb).await,
        target,
        "the shared row moved too"
    );
    assert_eq!(
        count(
            &su,
            &format!("SELECT count(*) FROM ONLY tenantry.resources WHERE tenant_id = '{b}'")
        )
        .await,
        if target == Tier::Pooled { 6 } else { 0 }
    );
    assert_eq!(
        count(&su, "SELECT count(*) FROM tenantry.shared_resources").await,
        2
    );

    // And the attacker moved too (in one transaction): nothing changes.
    exec(
        &w.admin,
        &format!(
            "SELECT tenantry.set_tenant_isolation('{}', '{}')",
            w.a,
            w.tiers.0.other().isolation()
        ),
    )
    .await;
    assert_eq!(
        crate::helpers::tier_of_row(&su, w.ra).await,
        w.tiers.0.other()
    );
    watch(&w, "attacker moved", &b_names).await;
}

/// One `tier_move_copy` batch of the mover's rows; how many it copied.
async fn copy_batch(w: &World, rows: i32) -> i64 {
    w.admin
        .query_one("SELECT tenantry.tier_move_copy($1, $2)", &[&w.b, &rows])
        .await
        .unwrap()
        .get(0)
}
