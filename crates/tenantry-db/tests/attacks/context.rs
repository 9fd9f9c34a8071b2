//! Context: no context means no rows, settings and setters fail closed, pooled
//! connections inherit nothing, role switches and definer functions stay inside
//! the caller's subtree, and planted or injected objects change nothing.

use serde_json::json;
use uuid::Uuid;

use crate::common::{
    count, create_silo, create_tenant, describe, exec, schema_of, set_status, strings,
};
use crate::helpers::{
    app, begin_as, commit, create_key, create_resource, denied, enter_signed, fails, key_id_of,
    names_seen_by, rollback, same_failure, signed_for, verified_tenant, world, ServerConn,
    TENANT_RELATIONS,
};

#[tokio::test]
async fn without_context_reads_return_zero_rows_without_error_and_writes_are_refused() {
    let w = world().await;
    for (relation, _) in TENANT_RELATIONS {
        assert_eq!(
            count(&w.app, &format!("SELECT count(*) FROM {relation}")).await,
            0,
            "{relation}"
        );
    }
    denied(
        &w.app,
        "SELECT tenantry.create_resource('{\"name\":\"x\"}')",
        "TN403",
    )
    .await;
    denied(
        &w.app,
        "INSERT INTO tenantry.resources (name) VALUES ('no tenant')",
        "42501",
    )
    .await;
    denied(
        &w.app,
        &format!("SELECT tenantry.share_resource('{}', '{}')", w.rb, w.a),
        "TN403",
    )
    .await;
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
}

#[tokio::test]
async fn an_empty_tenant_setting_sees_nothing_and_a_malformed_one_fails_closed() {
    let w = world().await;
    // The carrier of the verified context cannot be set by the attacker at
    // all, neither to nothing nor to garbage; the old app.* names are inert.
    for bad in ["", "not-a-uuid", "tenantry_v1_garbage", "' OR true --"] {
        exec(&w.app, "BEGIN").await;
        let (code, message, _) = fails(
            &w.app,
            &format!(
                "SELECT set_config('backtrace_functions', '{}', true)",
                bad.replace('\'', "''")
            ),
        )
        .await;
        assert_eq!(code, "42501", "{bad:?}: {message}");
        rollback(&w.app).await;
    }
    denied(&w.app, "SET backtrace_functions = ''", "42501").await;
    exec(
        &w.app,
        &format!("BEGIN; SET LOCAL app.current_tenant_id = '{}'", w.b),
    )
    .await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        0
    );
    rollback(&w.app).await;
    // An operator (a superuser session, then the app role) who writes an
    // empty or malformed value fails closed: never a row.
    let su = w.tdb.superuser_client().await;
    let hex = |t: Uuid| t.simple().to_string();
    for bad in [
        String::new(),
        " ".to_owned(),
        "not-a-uuid".to_owned(),
        "tenantry_c_00".to_owned(),
        "tenantry_v1_garbage".to_owned(),
        format!("tenantry_v1_{}", hex(w.a)),
        format!(
            "tenantry_v1_{}_{},a,stenantry,v{},garbage",
            hex(w.a),
            "0".repeat(32),
            hex(w.a)
        ),
        format!(
            "tenantry_v1_{}_{},a,stenantry,vzz",
            hex(w.a),
            "0".repeat(32)
        ),
    ] {
        exec(&su, "BEGIN").await;
        if let Err(e) = su
            .execute(
                "SELECT set_config('backtrace_functions', $1, true)",
                &[&bad],
            )
            .await
        {
            // The setting takes letters, digits, underscores and commas only.
            assert_eq!(
                e.code().map(|c| c.code()),
                Some("22023"),
                "{bad:?}: {}",
                describe(&e)
            );
            exec(&su, "ROLLBACK").await;
            continue;
        }
        exec(&su, "SET LOCAL ROLE tenantry_app").await;
        let r = su.query("SELECT name FROM tenantry.resources", &[]).await;
        match r {
            Ok(rows) => assert!(rows.is_empty(), "{bad:?} gave {} rows", rows.len()),
            // A value with the context's prefix but a malformed body fails the cast.
            Err(e) => assert_eq!(
                e.code().map(|c| c.code()),
                Some("22P02"),
                "{bad:?}: {}",
                describe(&e)
            ),
        }
        exec(&su, "ROLLBACK").await;
    }
}

#[tokio::test]
async fn entering_a_null_unknown_or_deleted_tenant_is_refused_on_every_path() {
    let w = world().await;
    let gone = create_tenant(&w.admin, "gone", None).await;
    create_resource(&w.app, gone, "gone-doc").await;
    set_status(&w.admin, gone, "deleted").await;
    let unknown = Uuid::new_v4();
    let su = w.tdb.superuser_client().await;
    let mut server = ServerConn::open(&w.tdb).await;
    for (tid, code) in [
        (None, "TN422"),
        (Some(unknown), "TN404"),
        (Some(gone), "TN403"),
    ] {
        // The server's connection, tenant part looked up by the database.
        exec(&server.client, "BEGIN").await;
        match tid {
            // Without a tenant the server proves administrative work, which
            // only tenantry_admin may enter (and which names no tenant).
            None => {
                assert_eq!(server.enter(tid).await.unwrap(), None);
                exec(&server.client, "SET LOCAL ROLE tenantry_admin").await;
                assert_eq!(server.enter(tid).await.unwrap().as_deref(), Some(""));
                exec(&server.client, "SET LOCAL ROLE tenantry_app").await;
                assert!(strings(&server.client, crate::helpers::READABLE_NAMES)
                    .await
                    .is_empty());
            }
            Some(_) => {
                let e = server.enter(tid).await.expect_err("refused");
                assert_eq!(
                    e.code().map(|c| c.code()),
                    Some(code),
                    "{tid:?}: {}",
                    describe(&e)
                );
            }
        }
        server.rollback().await;
        // A signed context (pooled connections), tenant part looked up alike.
        exec(&w.app, "BEGIN").await;
        match tid {
            None => {
                // Signed for no tenant: an administrative context, which
                // only tenantry_admin may enter.
                let admin = tenantry_db::SignedContext::admin(None);
                assert_eq!(enter_signed(&w.app, &admin).await.unwrap(), None);
                exec(&w.app, "SET LOCAL ROLE tenantry_admin").await;
                let part = enter_signed(&w.app, &admin).await.unwrap();
                exec(&w.app, "SET LOCAL ROLE tenantry_app").await;
                assert_eq!(
                    part.as_deref(),
                    Some(""),
                    "no tenant: an administrative context"
                );
                let nothing: bool = w
                    .app
                    .query_one(
                        "SELECT tenantry.current_tenant_id() IS NULL
                                AND NOT EXISTS (SELECT 1 FROM tenantry.resources)",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert!(nothing, "an administrative context reads no tenant's rows");
            }
            Some(t) => {
                let e = enter_signed(&w.app, &signed_for(t))
                    .await
                    .expect_err("refused");
                assert_eq!(
                    e.code().map(|c| c.code()),
                    Some(code),
                    "{t}: {}",
                    describe(&e)
                );
            }
        }
        rollback(&w.app).await;
        // An operator in psql: refused, or for no tenant no context at all.
        let literal = tid.map_or("NULL".to_owned(), |t| format!("'{t}'"));
        exec(&su, "BEGIN").await;
        if tid.is_some() {
            denied(
                &su,
                &format!("SELECT tenantry.set_tenant_context_local({literal})"),
                code,
            )
            .await;
            exec(&su, "ROLLBACK").await;
            denied(
                &su,
                &format!("SELECT tenantry.set_tenant_context({literal})"),
                code,
            )
            .await;
        } else {
            exec(&su, "SELECT tenantry.set_tenant_context_local(NULL)").await;
            assert_eq!(
                strings(
                    &su,
                    "SELECT coalesce(tenantry.current_tenant_id()::text, 'none')"
                )
                .await,
                ["none"]
            );
            exec(&su, "ROLLBACK").await;
        }
        // The app role is refused alike, whatever the tenant.
        denied(
            &w.app,
            &format!("SELECT tenantry.set_tenant_context({literal})"),
            "42501",
        )
        .await;
    }
    // No context was left behind; the chain is still in step.
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        0
    );
    assert_eq!(
        server.names_seen_by(w.a).await,
        Some(vec!["a-doc".to_owned()])
    );
}

#[tokio::test]
async fn a_pooled_connection_carries_no_session_context_and_leftover_settings_are_ignored() {
    let w = world().await;
    let user = Uuid::new_v4();
    // A previous borrower tries to leave b's session context: refused, and a
    // refused attempt leaves nothing.
    denied(
        &w.app,
        &format!("SELECT tenantry.set_tenant_context('{}')", w.b),
        "42501",
    )
    .await;
    let value = format!(
        "tenantry_v1_{}_{},a,stenantry,v{}",
        w.b.simple(),
        "0".repeat(32),
        w.b.simple()
    );
    denied(
        &w.app,
        &format!("SELECT set_config('backtrace_functions', '{value}', false)"),
        "42501",
    )
    .await;
    // Settings the old context read are still settable, and read by nothing.
    exec(
        &w.app,
        &format!(
            "SELECT set_config('app.current_tenant_id', '{b}', false);
             SELECT set_config('app.visible_tenant_ids', '{{{b}}}', false);
             SELECT set_config('app.current_user_id', '{user}', false);
             SELECT set_config('app.actor', 'user:forged', false);",
            b = w.b
        ),
    )
    .await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        0,
        "nothing was left on the connection"
    );
    // The server's next transaction on this connection: a's context only.
    begin_as(&w.app, w.a).await;
    assert_eq!(
        strings(&w.app, "SELECT name FROM tenantry.resources").await,
        ["a-doc"]
    );
    let row = w
        .app
        .query_one(
            "SELECT tenantry.current_user_id(), tenantry.current_actor(), tenantry.visible_tenant_ids()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Uuid>>(0), None, "no inherited member");
    assert!(
        !row.get::<_, String>(1).contains("forged"),
        "no inherited actor"
    );
    assert_eq!(row.get::<_, Vec<Uuid>>(2), [w.a]);
    let id: Uuid = w
        .app
        .query_one("SELECT tenantry.create_resource('{\"name\":\"new\"}')", &[])
        .await
        .unwrap()
        .get(0);
    let created_by: Option<Uuid> = w
        .app
        .query_one(
            "SELECT created_by FROM tenantry.resources WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created_by, None);
    commit(&w.app).await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        0,
        "the context ended with its transaction"
    );
}

#[tokio::test]
async fn reset_all_and_discard_all_leave_no_tenant_context_and_no_tenant_role() {
    let w = world().await;
    let mut server = ServerConn::open(&w.tdb).await;
    assert_eq!(
        server.names_seen_by(w.a).await,
        Some(vec!["a-doc".to_owned()])
    );
    // Inside a transaction: RESET ALL drops the context (the role is not a
    // RESET ALL setting: it stays tenantry_app) and, once committed, the
    // connection's chain: the server's next context is refused and it closes
    // the connection.
    assert!(server.begin(w.a).await.is_some());
    exec(&server.client, "RESET ALL").await;
    assert_eq!(
        strings(&server.client, "SELECT current_user::text").await,
        ["tenantry_app"]
    );
    assert_eq!(
        count(&server.client, "SELECT count(*) FROM tenantry.resources").await,
        0
    );
    server.commit().await;
    assert_eq!(
        strings(&server.client, "SELECT current_user::text").await,
        ["tenantry_app"]
    );
    assert_eq!(
        server.names_seen_by(w.a).await,
        None,
        "chain broken: refused"
    );
    // Outside a transaction, likewise.
    let mut server = ServerConn::open(&w.tdb).await;
    exec(&server.client, "RESET ALL").await;
    assert_eq!(
        count(&server.client, "SELECT count(*) FROM tenantry.resources").await,
        0
    );
    assert_eq!(server.names_seen_by(w.a).await, None);
    // DISCARD ALL drops the chain and the role: back to the bare login, which
    // reads nothing and may not enter a context.
    let mut server = ServerConn::open(&w.tdb).await;
    exec(&server.client, "DISCARD ALL").await;
    assert_eq!(
        strings(&server.client, "SELECT current_user::text").await,
        ["tenantry_server"]
    );
    denied(
        &server.client,
        "SELECT count(*) FROM tenantry.resources",
        "42501",
    )
    .await;
    assert_eq!(server.names_seen_by(w.a).await, None);
    exec(&server.client, "SET ROLE tenantry_app").await;
    assert_eq!(
        count(&server.client, "SELECT count(*) FROM tenantry.resources").await,
        0
    );
    assert_eq!(server.names_seen_by(w.a).await, None);
    // And it cannot run inside a transaction at all.
    let mut server = ServerConn::open(&w.tdb).await;
    assert!(server.begin(w.a).await.is_some());
    denied(&server.client, "DISCARD ALL", "25001").await;
    server.rollback().await;
    assert_eq!(
        server.names_seen_by(w.a).await,
        Some(vec!["a-doc".to_owned()])
    );
}

#[tokio::test]
async fn set_role_from_tenantry_app_to_the_owner_a_superuser_or_a_builtin_role_is_refused() {
    let w = world().await;
    let superuser: String = w
        .tdb
        .superuser_client()
        .await
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    for role in [
        "tenantry_owner".to_owned(),
        format!("\"{superuser}\""),
        "pg_read_all_data".to_owned(),
        "pg_write_all_data".to_owned(),
        "pg_execute_server_program".to_owned(),
        "pg_read_server_files".to_owned(),
        "pg_signal_backend".to_owned(),
    ] {
        denied(&w.app, &format!("SET ROLE {role}"), "42501").await;
        exec(&w.app, "BEGIN").await;
        denied(&w.app, &format!("SET LOCAL ROLE {role}"), "42501").await;
        rollback(&w.app).await;
    }
    denied(
        &w.app,
        &format!("SET SESSION AUTHORIZATION \"{superuser}\""),
        "42501",
    )
    .await;
    for sql in [
        "ALTER ROLE tenantry_app BYPASSRLS",
        "ALTER ROLE tenantry_server SUPERUSER",
        "GRANT tenantry_owner TO tenantry_app",
        "CREATE ROLE sneaky LOGIN",
        "ALTER TABLE tenantry.resources NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE tenantry.resources DISABLE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON tenantry.resources",
    ] {
        let (code, message, _) = fails(&w.app, sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    // Still tenantry_app, still one tenant at a time.
    assert_eq!(
        strings(&w.app, "SELECT current_user::text").await,
        ["tenantry_app"]
    );
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
}

#[tokio::test]
async fn switching_to_the_other_granted_roles_never_reaches_a_resource() {
    let w = world().await;
    for role in ["tenantry_admin", "tenantry_logger", "tenantry_server"] {
        let c = w.tdb.server_client().await;
        if role != "tenantry_server" {
            exec(&c, &format!("SET ROLE {role}")).await;
        }
        exec(
            &c,
            &format!(
                "SELECT set_config('app.current_tenant_id', '{}', false)",
                w.b
            ),
        )
        .await;
        for relation in [
            "tenantry.resources",
            "ONLY tenantry.resources",
            "tenantry.tenant_metrics",
            "tenantry.api_keys",
        ] {
            let (code, message, _) = fails(&c, &format!("SELECT * FROM {relation} LIMIT 1")).await;
            assert_eq!(code, "42501", "{role} on {relation}: {message}");
        }
    }
}

#[tokio::test]
async fn definer_functions_refuse_keys_and_tenants_outside_the_callers_subtree_alike() {
    let w = world().await;
    let key_b = create_key(&w.app, w.b, json!({})).await;
    let key_b_id = key_id_of(&w.app, w.b, &key_b).await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for f in [
        "SELECT tenantry.revoke_api_key('{id}')",
        "SELECT tenantry.rotate_api_key('{id}', interval '0')",
        "SELECT tenantry.create_api_key('k', jsonb_build_object('tenant_id', '{id}'::uuid))",
        "SELECT tenantry.create_tenant_api_key('{id}', 'k')",
        "SELECT tenantry.create_tenant_role('{id}', 'r')",
    ] {
        let foreign = if f.contains("tenant") { w.b } else { key_b_id };
        let code = same_failure(&w.app, foreign, Uuid::new_v4(), |id| {
            format!(
                "ROLLBACK TO SAVEPOINT s; {}",
                f.replace("{id}", &id.to_string())
            )
        })
        .await;
        assert!(code == "TN404" || code == "TN403", "{f}: {code}");
    }
    exec(&w.app, "ROLLBACK TO SAVEPOINT s").await;
    let perms: Option<Vec<String>> = w
        .app
        .query_one("SELECT tenantry.key_permissions($1)", &[&key_b_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(perms, None);
    let metrics = count(
        &w.app,
        &format!(
            "SELECT count(*) FROM tenantry.current_tenant_metrics('-infinity', 'infinity') WHERE tenant_id = '{}'",
            w.b
        ),
    )
    .await;
    assert_eq!(metrics, 0);
    rollback(&w.app).await;
    assert_eq!(
        verified_tenant(&w.app, &key_b).await,
        Some(w.b.to_string()),
        "b's key still works"
    );
}

#[tokio::test]
async fn internal_definer_and_admin_functions_are_not_executable_by_tenantry_app() {
    let w = world().await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for sql in [
        format!("SELECT * FROM tenantry.tenant_context_row('{}')", w.b),
        format!("SELECT * FROM tenantry.tenant_subtree('{}')", w.b),
        format!(
            "SELECT * FROM tenantry.issue_api_key('{}', 'x', '{{}}', NULL, NULL, NULL, NULL, NULL, NULL)",
            w.b
        ),
        format!(
            "SELECT tenantry.identity_permissions('{}', NULL, NULL)",
            w.b
        ),
        format!("SELECT tenantry.set_tenant_isolation('{}', 'schema')", w.b),
        format!("SELECT tenantry.create_tenant_schema('{}')", w.b),
        format!("SELECT tenantry.secure_tenant_partition('{}')", w.b),
        format!("SELECT tenantry.create_tenant('evil', '{}')", w.b),
        "SELECT tenantry.refresh_tenant_metrics()".to_owned(),
        "SELECT tenantry.ensure_request_log_partitions(1)".to_owned(),
        "SELECT tenantry.drop_request_log_partitions(interval '0')".to_owned(),
        format!(
            "SELECT tenantry.write_audit('{}', 'x', 'y', 'z', '{{}}')",
            w.b
        ),
    ] {
        let (code, message, _) = fails(&w.app, &format!("ROLLBACK TO SAVEPOINT s; {sql}")).await;
        assert!(
            code == "42501" || code == "42883",
            "{sql}: expected a refusal, got {code}: {message}"
        );
    }
    rollback(&w.app).await;
    let su = w.tdb.superuser_client().await;
    let isolation: String = su
        .query_one(
            "SELECT isolation FROM tenantry.tenants WHERE tenant_id = $1",
            &[&w.b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(isolation, "shared");
}

#[tokio::test]
async fn injection_strings_in_function_arguments_are_stored_as_data() {
    let w = world().await;
    let evil = "x'; SET LOCAL app.current_tenant_id = 'B'; --\"; DROP TABLE tenantry.resources; --";
    let evil = evil.replace('B', &w.b.to_string());
    exec(&w.app, "BEGIN").await;
    let mut signed = signed_for(w.a);
    signed.actor = Some(evil.clone());
    assert!(enter_signed(&w.app, &signed).await.unwrap().is_some());
    assert_eq!(
        strings(&w.app, "SELECT tenantry.current_tenant_id()::text").await,
        [w.a.to_string()]
    );
    assert_eq!(
        strings(&w.app, "SELECT tenantry.current_actor()").await,
        std::slice::from_ref(&evil)
    );
    w.app
        .execute("SELECT tenantry.set_actor_local($1)", &[&evil])
        .await
        .unwrap();
    let id: Uuid = w
        .app
        .query_one(
            "SELECT tenantry.create_resource(jsonb_build_object('name', $1::text))",
            &[&evil],
        )
        .await
        .unwrap()
        .get(0);
    let child: Uuid = w
        .app
        .query_one("SELECT tenantry.create_child_tenant($1)", &[&evil])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        strings(&w.app, "SELECT tenantry.current_tenant_id()::text").await,
        [w.a.to_string()]
    );
    commit(&w.app).await;
    begin_as(&w.app, w.a).await;
    let row = w
        .app
        .query_one(
            "SELECT r.name, t.name FROM tenantry.resources r, tenantry.tenants t WHERE r.id = $1 AND t.tenant_id = $2",
            &[&id, &child],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), evil);
    assert_eq!(row.get::<_, String>(1), evil);
    commit(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

#[tokio::test]
async fn pg_temp_objects_shadowing_tenantry_names_change_nothing() {
    let w = world().await;
    let c = create_tenant(&w.admin, "c", None).await;
    // The attacker plants look-alikes where an unpinned search_path would
    // find them, inside a transaction of its own tenant (a session that
    // already holds temporary relations is refused every context, below).
    begin_as(&w.app, w.a).await;
    exec(
        &w.app,
        &format!(
            "CREATE FUNCTION pg_temp.current_tenant_id() RETURNS uuid LANGUAGE sql AS $$ SELECT '{b}'::uuid $$;
             CREATE FUNCTION pg_temp.visible_tenant_ids() RETURNS uuid[] LANGUAGE sql AS $$ SELECT ARRAY['{b}'::uuid] $$;
             CREATE TEMP TABLE resources (tenant_id uuid, id uuid, name text, shared_with uuid[]);
             INSERT INTO pg_temp.resources VALUES ('{a}', '{rb}', 'fake', '{{}}');
             CREATE TEMP TABLE tenants (tenant_id uuid, status text, isolation text);
             INSERT INTO pg_temp.tenants VALUES ('{b}', 'active', 'shared');
             CREATE TEMP TABLE tenant_hierarchy (parent_id uuid, child_id uuid, depth int);
             INSERT INTO pg_temp.tenant_hierarchy VALUES ('{a}', '{b}', 1);
             SET search_path = pg_temp, tenantry, public, pg_catalog;",
            a = w.a,
            b = w.b,
            rb = w.rb
        ),
    )
    .await;
    // Unqualified calls never resolve to pg_temp functions.
    assert_eq!(
        strings(&w.app, "SELECT current_tenant_id()::text").await,
        [w.a.to_string()]
    );
    assert_eq!(
        strings(&w.app, "SELECT unnest(visible_tenant_ids())::text").await,
        [w.a.to_string()]
    );
    assert_eq!(
        strings(&w.app, "SELECT name FROM tenantry.resources").await,
        ["a-doc"]
    );
    // The definer functions read the real tables, not the planted ones.
    exec(&w.app, "SAVEPOINT s").await;
    denied(
        &w.app,
        &format!("SELECT tenantry.share_resource('{}', '{c}')", w.rb),
        "TN404",
    )
    .await;
    exec(&w.app, "ROLLBACK TO SAVEPOINT s").await;
    // setup_connection (invoker, search_path-setting) with the planted objects.
    exec(&w.app, "SELECT tenantry.setup_connection()").await;
    assert_eq!(
        strings(&w.app, "SELECT unnest(tenantry.visible_tenant_ids())::text").await,
        [w.a.to_string()]
    );
    assert_eq!(
        strings(&w.app, "SELECT name FROM tenantry.resources").await,
        ["a-doc"]
    );
    commit(&w.app).await;
    // The planted relations outlive the transaction: this session is refused
    // every later context, signed or chained, so nothing it planted is ever
    // read by another tenant's transaction.
    exec(&w.app, "BEGIN").await;
    let refused = enter_signed(&w.app, &signed_for(c)).await.unwrap_err();
    assert_eq!(
        refused.code().map(|c| c.code()),
        Some("55000"),
        "{refused:?}"
    );
    rollback(&w.app).await;
    assert_eq!(
        names_seen_by(&app(&w.tdb).await, c).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn tenantry_app_cannot_plant_objects_in_public_tenantry_or_tenant_schemas() {
    // Its world holds a schema tenant throughout (the public and tenantry
    // schemas' cases too).
    if tenantry_db::testing::skip_schema_tier_on_citus(
        "tenantry_app_cannot_plant_objects_in_public_tenantry_or_tenant_schemas",
    ) {
        return;
    }
    let w = world().await;
    let silo = create_silo(&w.admin, "silo").await;
    let silo_schema = schema_of(&w.admin, silo).await;
    for sql in [
        "CREATE TABLE public.resources (id uuid)".to_owned(),
        "CREATE FUNCTION public.current_tenant_id() RETURNS uuid LANGUAGE sql AS $$ SELECT NULL::uuid $$"
            .to_owned(),
        "CREATE VIEW public.tenants AS SELECT 1".to_owned(),
        "CREATE TABLE tenantry.evil (id uuid)".to_owned(),
        "CREATE FUNCTION tenantry.evil() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$".to_owned(),
        format!("CREATE TABLE \"{silo_schema}\".evil (id uuid)"),
        "CREATE SCHEMA evil".to_owned(),
        "CREATE OR REPLACE FUNCTION tenantry.current_tenant_id() RETURNS uuid LANGUAGE sql AS $$ SELECT NULL::uuid $$"
            .to_owned(),
        "ALTER FUNCTION tenantry.visible_tenant_ids() OWNER TO tenantry_app".to_owned(),
    ] {
        let (code, message, _) = fails(&w.app, &sql).await;
        assert_eq!(code, "42501", "{sql}: {message}");
    }
}
