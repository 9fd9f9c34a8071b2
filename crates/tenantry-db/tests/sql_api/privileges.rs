//! Database privileges: the server's login role cannot own, switch off or
//! bypass RLS (flaw 2), SECURITY DEFINER functions pin a safe search_path
//! (flaw 9) and are executable only by the roles they serve (flaw 5).

use serde_json::Value;
use tenantry_db::testing::TestDatabase;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::common::{
    count, create_silo, create_tenant, describe, exec, schema_of, strings, SERVER_ROLES,
};
use crate::helpers::{
    admin, app, create_resource, denied, expect_sqlstate, log_requests, logger, resource_names,
    set_context, verified_tenant,
};

async fn truth(c: &Client, sql: &str) -> bool {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

// -----------------------------------------------------------------------------
// Flaw 2: owners and superusers bypass RLS.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn the_server_login_role_cannot_own_switch_off_or_bypass_row_level_security() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;
    create_resource(&app, a, "a-doc").await;
    create_resource(&app, b, "b-secret").await;

    let server = tdb.server_client().await;
    // Catalogue facts: no login-reachable role is superuser, has BYPASSRLS or owns anything.
    let rows = server
        .query(
            "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls, r.rolcanlogin,
                    (SELECT count(*) FROM pg_class WHERE relowner = r.oid)
                  + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)
                  + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)
                  + (SELECT count(*) FROM pg_type WHERE typowner = r.oid),
                    pg_has_role('tenantry_server', r.oid, 'MEMBER')
             FROM pg_roles r WHERE r.rolname LIKE 'tenantry\\_%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 7);
    for row in &rows {
        let name: String = row.get(0);
        let (sup, bypass, login, owned, reachable): (bool, bool, bool, i64, bool) =
            (row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
        assert!(!sup, "{name} is superuser");
        if name == "tenantry_owner" {
            // The owner bypasses RLS, so nobody may reach it.
            assert!(bypass && owned > 0 && !login && !reachable, "{name}");
        } else {
            assert!(!bypass, "{name} has BYPASSRLS");
            assert_eq!(owned, 0, "{name} owns objects");
            assert!(reachable, "{name} should be reachable from tenantry_server");
            assert_eq!(login, name == "tenantry_server", "{name} LOGIN");
        }
    }
    // Every tenantry table has RLS enabled and forced, except the global
    // catalogues (storage_sample_runs: the hours sampled, no tenant data,
    // granted to none; spare_tenant_schemas: empty schemas made ahead, the
    // same; request_log_batches: ids of the log's batches, the same;
    // tenant_metric_rollups: the hours whose usage was rolled up, the same).
    assert_eq!(
        strings(
            &server,
            "SELECT relname::text FROM pg_class
             WHERE relnamespace = 'tenantry'::regnamespace AND relkind IN ('r', 'p')
               AND NOT (relrowsecurity AND relforcerowsecurity)"
        )
        .await,
        [
            "context_keys",
            "permissions",
            "purge_policy",
            "request_log_batches",
            "schema_definitions",
            "schema_migrations",
            "signup_policy",
            "spare_tenant_schemas",
            "storage_sample_runs",
            "tenant_metric_rollups",
            "tenant_tables"
        ]
    );

    // Attacks, as the login role itself and as every role it can become.
    let attacks = [
        "ALTER TABLE tenantry.resources DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE tenantry.resources NO FORCE ROW LEVEL SECURITY",
        "CREATE TABLE tenantry.planted () INHERITS (tenantry.resources)",
        "ALTER TABLE tenantry.tenants NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON tenantry.resources",
        "ALTER POLICY tenant_isolation ON tenantry.resources USING (true)",
        "CREATE POLICY open_door ON tenantry.resources USING (true)",
        "ALTER TABLE tenantry.resources OWNER TO tenantry_server",
        "SET ROLE tenantry_owner",
        "SET SESSION AUTHORIZATION tenantry_owner",
        "ALTER ROLE tenantry_server BYPASSRLS",
        "ALTER ROLE tenantry_app BYPASSRLS",
        "GRANT tenantry_owner TO tenantry_server",
        "CREATE FUNCTION tenantry.peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM tenantry.resources'",
        "CREATE SCHEMA attacker",
        "SELECT tenantry.tier_move_start(gen_random_uuid(), 'schema')",
        "TRUNCATE tenantry.resources",
        "DROP TABLE tenantry.resources",
    ];
    for role in SERVER_ROLES {
        exec(
            &server,
            &match role {
                Some(r) => format!("SET ROLE {r}"),
                None => "RESET ROLE".into(),
            },
        )
        .await;
        for sql in attacks {
            expect_sqlstate(
                server.batch_execute(sql).await,
                "42501",
                &format!("{sql} as {role:?}"),
            );
        }
    }

    // The login role alone can do nothing (NOINHERIT): no table, no function.
    exec(&server, "RESET ROLE").await;
    denied(&server, "SELECT count(*) FROM tenantry.resources", "42501").await;
    denied(&server, "SELECT count(*) FROM tenantry.tenants", "42501").await;
    denied(
        &server,
        &format!("SELECT tenantry.set_tenant_context('{a}')"),
        "42501",
    )
    .await;
    // Administrators cannot read resources at all.
    denied(&admin, "SELECT count(*) FROM tenantry.resources", "42501").await;

    // row_security = off makes a query that RLS would filter fail instead of
    // bypassing the policies.
    set_context(&app, a).await;
    assert_eq!(resource_names(&app).await, ["a-doc"]);
    exec(&app, "SET row_security = off").await;
    denied(&app, "SELECT count(*) FROM tenantry.resources", "42501").await;
    exec(&app, "RESET row_security").await;
    assert_eq!(resource_names(&app).await, ["a-doc"]);

    // Everything is still in place.
    let su = tdb.superuser_client().await;
    assert_eq!(
        count(&su, "SELECT count(*) FROM tenantry.resources").await,
        2
    );
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM pg_policy WHERE polrelid = 'tenantry.resources'::regclass"
        )
        .await,
        4,
        "tenant_isolation and the three restrictive write-permission policies"
    );
}

// -----------------------------------------------------------------------------
// Flaw 9: SECURITY DEFINER without a pinned search_path; %s for identifiers.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn every_security_definer_function_pins_a_safe_search_path() {
    let tdb = TestDatabase::new().await;
    let server = tdb.server_client().await;
    let rows = server
        .query(
            "SELECT p.oid::regprocedure::text, coalesce(p.proconfig, '{}')
             FROM pg_proc p
             WHERE p.prosecdef AND p.pronamespace = 'tenantry'::regnamespace",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 20, "only {} definer functions?", rows.len());
    for row in &rows {
        let name: String = row.get(0);
        let config: Vec<String> = row.get(1);
        let path = config
            .iter()
            .find_map(|c| c.strip_prefix("search_path="))
            .unwrap_or_else(|| panic!("{name} has no pinned search_path: {config:?}"));
        let parts: Vec<&str> = path.split(',').map(str::trim).collect();
        assert!(
            parts
                .iter()
                .all(|p| ["pg_catalog", "pg_temp", "tenantry"].contains(p)),
            "{name}: {path}"
        );
        // pg_temp must be named, and last: otherwise it is searched first.
        assert_eq!(parts.last(), Some(&"pg_temp"), "{name}: {path}");
    }

    // Dynamic SQL quotes identifiers (%I), never splices them with %s, and no
    // function switches the session's identity.
    // The exception: the adopted-table functions (10_tables.sql) and the
    // tenant-copy functions (07_schemas.sql) print
    // relations they hold as `regclass`, whose text form PostgreSQL quotes
    // itself (schema-qualified, each part quoted as needed); they take no
    // identifier as text. rows_shared_with_me takes its relation as the row
    // type of its argument and holds it as regclass too; family_source
    // splices family_tables()' regclass texts, first_table_with_rows and
    // tables_left_behind the regclass of each table they find in pg_class,
    // and copy_column_drift and copy_constraint_drift
    // print regclass, format_type(), pg_get_indexdef() and
    // pg_get_constraintdef() texts into the fixes they return;
    // alter_tenant_table and alter_tenant_copy (its recorded step) splice
    // the caller's change, which is SQL by design
    // (an operator's, run with the operator's rights); the key column's type
    // is spliced as format_type() prints it, which quotes it as well. The
    // functions that read one tenant's resources (or each relation's
    // tenants, subtree_resources; the owner's row a declined share is of,
    // decline_share) splice the relation
    // resources_relation() prints: ONLY and a %I-quoted schema, or the
    // family's qualified name; they take no identifier as text either.
    let offenders = strings(
        &server,
        "SELECT p.oid::regprocedure::text FROM pg_proc p
         WHERE p.pronamespace = 'tenantry'::regnamespace
           AND (p.prosrc ~* '(schema|table|on|into|from|join|tenant_)\\s*%s'
                OR p.prosrc ~* 'session\\s+authorization')
           AND NOT (p.proname IN ('adopt_table', 'release_table', 'check_adoptable', 'secure_tenant_table',
                                  'table_findings', 'backfill_prepare', 'backfill_validate',
                                  'backfill_tenant_id_pages', 'lock_shareable_row', 'rows_shared_with_me',
                                  'ensure_tenant_fk', 'secure_tenant_copy', 'add_tenant_schema_table',
                                  'drop_trigger_if_any', 'check_adopt_options', 'adopted_table_triggers',
                                  'backfill_undo_prepare', 'lock_for_tenant_key', 'refuse_before_adopting',
                                  'hand_over_for_validation', 'give_back_handover', 'hand_to_owner_role',
                                  'refuse_deleted_owners')
                    AND ('regclass'::regtype = ANY (p.proargtypes::regtype[]) OR p.proname = 'rows_shared_with_me')
                    AND NOT p.prosrc ~* 'session\\s+authorization')
           AND NOT (p.proname IN ('family_source', 'copy_column_drift', 'copy_constraint_drift', 'alter_tenant_table',
                                  'first_table_with_rows', 'alter_tenant_copy', 'tables_left_behind')
                    AND NOT p.prosrc ~* 'session\\s+authorization')
           AND NOT (p.proname IN ('lock_shareable_resource', 'recount_quota_usage', 'sample_tenant_storage',
                                  'tenant_resource_totals', 'subtree_resources', 'decline_share')
                    AND p.prosrc ~ 'tenantry\\.(visible_)?resources_relations?\\('
                    AND NOT p.prosrc ~* 'session\\s+authorization')",
    )
    .await;
    assert!(offenders.is_empty(), "{offenders:?}");
    let quoting = strings(
        &server,
        "SELECT p.proname::text FROM pg_proc p
         WHERE p.pronamespace = 'tenantry'::regnamespace AND p.prosrc LIKE '%\\%I%'",
    )
    .await;
    for quoted in [
        "build_tenant_tables",
        "tier_move_cutover",
        "create_resource_row",
    ] {
        assert!(
            quoting.contains(&quoted.to_owned()),
            "{quoted}: {quoting:?}"
        );
    }
}

#[tokio::test]
async fn objects_shadowing_builtins_on_the_callers_search_path_do_not_change_what_definer_functions_do(
) {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let b = create_tenant(&admin, "b", None).await;
    let c = create_tenant(&admin, "c", None).await;
    let ra = create_resource(&app, a, "a-doc").await;
    let rb = create_resource(&app, b, "b-doc").await;
    let kb: String = app
        .query_one("SELECT create_api_key('b key')", &[])
        .await
        .unwrap()
        .get(0);
    set_context(&app, a).await;
    let ka: String = app
        .query_one("SELECT create_api_key('a key')", &[])
        .await
        .unwrap()
        .get(0);
    let ka_id: Uuid = app
        .query_one("SELECT key_id FROM api_keys", &[])
        .await
        .unwrap()
        .get(0);
    log_requests(&logger(&tdb).await, a, &[Uuid::new_v4()]).await;
    log_requests(&logger(&tdb).await, b, &[Uuid::new_v4()]).await;
    exec(&admin, "SELECT refresh_tenant_metrics()").await;

    // A hostile schema that everyone can use: a frozen clock, a sha256 that
    // turns any input into the hash of a's real key, uuid operators that call
    // everything equal, and a fake tenants table.
    let fake = Uuid::new_v4();
    let su = tdb.superuser_client().await;
    exec(
        &su,
        &format!(
            "CREATE SCHEMA evil;
             CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql
                 AS $$ SELECT timestamptz '2000-01-01 00:00:00+00' $$;
             CREATE FUNCTION evil.sha256(bytea) RETURNS bytea LANGUAGE sql
                 AS $$ SELECT pg_catalog.sha256(pg_catalog.convert_to('{ka}', 'UTF8')) $$;
             CREATE FUNCTION evil.uuid_eq(uuid, uuid) RETURNS boolean LANGUAGE sql AS 'SELECT true';
             CREATE FUNCTION evil.uuid_ne(uuid, uuid) RETURNS boolean LANGUAGE sql AS 'SELECT false';
             CREATE OPERATOR evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = evil.uuid_eq);
             CREATE OPERATOR evil.<> (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = evil.uuid_ne);
             CREATE TABLE evil.tenants AS
                 SELECT '{fake}'::uuid AS tenant_id, 'fake'::text AS name, 'active'::text AS status,
                        'shared'::text AS isolation, NULL::uuid AS parent_id;
             GRANT USAGE ON SCHEMA evil TO PUBLIC;
             GRANT SELECT ON evil.tenants TO PUBLIC;
             -- Control: a definer function without a pinned search_path, as the guide wrote them.
             CREATE SCHEMA probe;
             CREATE FUNCTION probe.unpinned_now() RETURNS timestamptz LANGUAGE plpgsql SECURITY DEFINER
                 AS $$ BEGIN RETURN now(); END $$;
             GRANT USAGE ON SCHEMA probe TO PUBLIC;"
        ),
    )
    .await;

    let forged = format!("{}{}", &ka[..16], "0".repeat(64));
    let evil_path = "SET search_path = evil, pg_catalog, tenantry, public";
    exec(&app, evil_path).await;
    exec(&admin, evil_path).await;

    // The shadows are live for whoever resolves names with this path ...
    let row = app
        .query_one(
            "SELECT now() < '2001-01-01',
                    '00000000-0000-0000-0000-000000000001'::uuid = '00000000-0000-0000-0000-000000000002'::uuid,
                    sha256(convert_to($1, 'UTF8')) = pg_catalog.sha256(pg_catalog.convert_to($2, 'UTF8')),
                    probe.unpinned_now() < '2001-01-01',
                    (SELECT count(*) FROM tenants WHERE name = 'fake')",
            &[&forged, &ka],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "evil.now() shadows now()");
    assert!(row.get::<_, bool>(1), "evil.= shadows uuid equality");
    assert!(row.get::<_, bool>(2), "evil.sha256 shadows sha256");
    assert!(
        row.get::<_, bool>(3),
        "an unpinned definer function is fooled"
    );
    assert_eq!(row.get::<_, i64>(4), 1, "evil.tenants shadows tenants");

    // ... but not inside tenantry's functions.
    expect_sqlstate(
        app.execute("SELECT set_tenant_context($1)", &[&fake]).await,
        "TN404",
        "context for a tenant that exists only in evil.tenants",
    );
    set_context(&app, a).await;
    let visible: Vec<Uuid> = app
        .query_one("SELECT visible_tenant_ids()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(visible, [a]);
    let verified: Option<Value> = app
        .query_one("SELECT verify_api_key($1)", &[&forged])
        .await
        .unwrap()
        .get(0);
    assert_eq!(verified, None, "a forged key must not verify");
    let validated: Option<Value> = app
        .query_one("SELECT validate_tenant_key($1)", &[&forged])
        .await
        .unwrap()
        .get(0);
    assert_eq!(validated, None);
    let foreign: Option<Value> = app
        .query_one("SELECT validate_tenant_key($1)", &[&kb])
        .await
        .unwrap()
        .get(0);
    assert_eq!(foreign, None, "b's key under a's context");
    expect_sqlstate(
        app.execute("SELECT share_resource($1, $2)", &[&rb, &c])
            .await,
        "TN404",
        "sharing b's resource from a",
    );
    expect_sqlstate(
        app.execute("SELECT share_resource($1, $2)", &[&ra, &fake])
            .await,
        "TN404",
        "sharing with a tenant that exists only in evil.tenants",
    );
    let metric_tenants: Vec<Uuid> = app
        .query("SELECT tenant_id FROM current_tenant_metrics()", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(metric_tenants, [a]);
    app.execute("SELECT revoke_api_key($1)", &[&ka_id])
        .await
        .unwrap();
    admin
        // Compared as text: evil.= would make a uuid comparison match every row.
        .execute(
            "UPDATE tenantry.tenants SET name = 'b2' WHERE tenant_id::text = $1",
            &[&b.to_string()],
        )
        .await
        .unwrap();
    let silo = create_silo(&admin, "silo").await;

    // Checked with a clean search path.
    assert!(
        truth(&su, "SELECT bool_and(revoked_at > now() - interval '1 hour') FROM tenantry.api_keys WHERE revoked_at IS NOT NULL").await,
        "revoked_at comes from the real clock"
    );
    assert!(
        truth(&su, "SELECT bool_and(updated_at > now() - interval '1 hour') FROM tenantry.tenants WHERE name = 'b2'").await,
        "the tenants trigger uses the real clock"
    );
    assert_eq!(
        count(&su, "SELECT count(*) FROM tenantry.shared_resources").await,
        0
    );
    let schemas = strings(
        &su,
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'
           AND nspname NOT IN (SELECT schema_name FROM tenantry.spare_tenant_schemas)",
    )
    .await;
    assert_eq!(schemas, [schema_of(&su, silo).await]);
    exec(&app, "SET search_path = tenantry, public").await;
    assert_eq!(verified_tenant(&app, &ka).await, None, "a's key is revoked");
    assert_eq!(verified_tenant(&app, &kb).await, Some(b.to_string()));
}

// -----------------------------------------------------------------------------
// Flaw 5, the other half: definer functions stay narrow.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn security_definer_functions_are_executable_only_by_the_roles_they_serve() {
    let tdb = TestDatabase::new().await;
    let server = tdb.server_client().await;
    async fn executable_by(c: &Client, role: &str) -> Vec<String> {
        let mut v: Vec<String> = c
            .query(
                "SELECT p.proname::text FROM pg_proc p
                 WHERE p.prosecdef AND p.pronamespace = 'tenantry'::regnamespace
                   AND has_function_privilege($1::name, p.oid, 'EXECUTE')",
                &[&role],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        v.sort();
        v
    }
    assert_eq!(
        executable_by(&server, "tenantry_app").await,
        [
            "accept_invitation",
            "check_tenant_route",
            "child_tenant",
            "claim_operator_idempotency_key",
            "claim_person_idempotency_key",
            "complete_operator_idempotency_key",
            "complete_person_idempotency_key",
            "context_key_live",
            "context_route_current",
            "context_session_nonce",
            "create_api_key",
            "create_child_tenant",
            "create_invitation",
            "create_invitation_row",
            "create_my_tenant",
            "current_tenant_metrics",
            "current_tenant_table_homes",
            "decline_row_share",
            "decline_share",
            "define_permission",
            "end_impersonation",
            "enter_context",
            "enter_context_signed",
            "impersonate",
            "key_permissions",
            "member_identity",
            "member_info",
            "my_tenants",
            "new_api_key_info",
            "new_impersonation_info",
            "open_context_session",
            "resources_shared_with_me",
            "revoke_api_key",
            "revoke_invitation",
            "revoke_invitation_row",
            "revoke_orphaned_invitations",
            "rotate_api_key",
            "rows_shared_with_me",
            "share_resource",
            "share_resource_row",
            "share_row",
            "shares_of_my_rows",
            "start_impersonation",
            "stop_impersonating",
            "subtree_resources",
            "subtree_source",
            "tenant_home_schema",
            "transfer_ownership",
            "unshare_resource",
            "unshare_row",
            "verify_api_key_hash",
            "verify_impersonation",
            "visible_resources_relation",
            "write_operator_context",
        ]
    );
    assert_eq!(
        executable_by(&server, "tenantry_admin").await,
        [
            "claim_operator_idempotency_key",
            "complete_operator_idempotency_key",
            "copy_column_drift",
            "copy_constraint_drift",
            "create_tenant",
            "define_permission",
            "drop_request_log_partitions",
            "ensure_request_log_partitions",
            "enter_context",
            "enter_context_signed",
            "expire_idempotency_keys",
            "migrate_tenant_schema",
            "purge_tenant",
            "refresh_tenant_metrics",
            "set_admin_context",
            "set_tenant_isolation",
            "set_tenant_parent",
            "tenant_row_count",
            "tenant_schemas_behind",
            "tier_move_abort",
            "tier_move_catch_up",
            "tier_move_cleanup",
            "tier_move_copy",
            "tier_move_finish",
            "tier_move_start",
            "tier_move_wait",
            "usage_top",
            "usage_upkeep",
        ]
    );
    // The narrow "shared with me" role reads through the fence only (and
    // asks whether its route is stale: assert_transaction_intact).
    assert_eq!(
        executable_by(&server, "tenantry_app_shared").await,
        [
            "context_route_current",
            "resources_shared_with_me",
            "rows_shared_with_me"
        ]
    );
    // The narrow "own rows" role: where its own rows live (create_resource_row,
    // which runs as the caller, asks), and a wide subtree's rows through the fence.
    assert_eq!(
        executable_by(&server, "tenantry_app_own").await,
        [
            "context_route_current",
            "subtree_resources",
            "tenant_home_schema"
        ]
    );
    // The request-log writer proves its administrative context, as the
    // server's other transactions do (policy request_log_append).
    assert_eq!(
        executable_by(&server, "tenantry_logger").await,
        [
            "claim_request_log_batch",
            "enter_context",
            "enter_context_signed"
        ]
    );
    for role in ["tenantry_server", "public"] {
        assert!(
            executable_by(&server, role).await.is_empty(),
            "{role} can execute definer functions"
        );
    }

    // And calling the internal ones as the app fails.
    let admin = admin(&tdb).await;
    let a = create_tenant(&admin, "a", None).await;
    let app = app(&tdb).await;
    set_context(&app, a).await;
    for sql in [
        format!("SELECT tenantry.write_audit('{a}', 'x', 'y', NULL)"),
        format!("SELECT tenantry.tenant_context_row('{a}')"),
        format!(
            "SELECT tenantry.issue_api_key('{a}', 'd', '{{}}', NULL, NULL, NULL, NULL, NULL, NULL)"
        ),
        format!("SELECT tenantry.secure_tenant_schema('{a}')"),
        format!("SELECT tenantry.create_tenant_tables('{a}')"),
        format!("SELECT tenantry.tier_move_finish('{a}')"),
        format!("SELECT tenantry.set_tenant_isolation('{a}', 'schema')"),
        "SELECT tenantry.create_tenant('x')".to_owned(),
        "SELECT tenantry.ensure_request_log_partitions(1)".to_owned(),
        "SELECT tenantry.drop_request_log_partitions('35 days')".to_owned(),
        "SELECT tenantry.lock_shareable_row('tenantry.tenants', '1')".to_owned(),
        "SELECT tenantry.revoke_table_shares('tenantry.tenants')".to_owned(),
        "SELECT tenantry.revoke_ancestor_table_shares('tenantry.tenants')".to_owned(),
    ] {
        denied(&app, &sql, "42501").await;
    }
}
