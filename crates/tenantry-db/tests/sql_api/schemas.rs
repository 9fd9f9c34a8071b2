//! Schema per tenant: creating a tenant schema by its name, how tenant schemas
//! are named and owned (flaw 9's identifiers), `setup_connection` (flaw 10),
//! and another tenant cannot reach a tenant's own table.

use tenantry_db::testing::TestDatabase;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::common::{count, create_silo, create_tenant, exec, schema_of, strings};
use crate::helpers::{
    admin, app, clear_context, create_resource, denied, expect_sqlstate_any, resource_names,
    set_context,
};

#[tokio::test]
async fn create_tenant_schema_by_its_name_moves_the_tenant_into_its_own_schema() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let t = create_tenant(&admin, "silo", None).await;
    create_resource(&app, t, "kept").await;

    denied(
        &app,
        &format!("SELECT create_tenant_schema('{t}')"),
        "42501",
    )
    .await;
    for _ in 0..2 {
        // Idempotent.
        admin
            .execute("SELECT create_tenant_schema($1)", &[&t])
            .await
            .unwrap();
    }
    let schema = schema_of(&admin, t).await;
    assert_eq!(
        strings(
            &admin,
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'"
        )
        .await,
        std::slice::from_ref(&schema)
    );
    set_context(&app, t).await;
    assert_eq!(
        strings(
            &app,
            "SELECT name || '@' || tableoid::regclass::text FROM resources"
        )
        .await,
        [format!("kept@{schema}.resources")]
    );
    let current: Option<String> = app
        .query_one("SELECT current_tenant_schema()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(current, Some(schema));
}

#[tokio::test]
async fn tenant_schemas_are_named_tenant_hex_owned_by_the_owner_and_forced_under_rls() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let silo = create_silo(&admin, "silo").await;
    let pooled = create_tenant(&admin, "pooled", None).await;
    admin
        .execute("SELECT create_tenant_schema($1)", &[&pooled])
        .await
        .unwrap();
    let server = tdb.server_client().await;
    let rows = server
        .query(
            "SELECT n.nspname::text, n.nspowner::regrole::text, c.relowner::regrole::text,
                    c.relrowsecurity, c.relforcerowsecurity,
                    (SELECT count(*) FROM pg_inherits i
                     WHERE i.inhrelid = c.oid AND i.inhparent = 'tenantry.resources'::regclass)
             FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'resources'
             WHERE n.nspname NOT IN ('tenantry') ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let mut expected = vec![
        schema_of(&admin, silo).await,
        schema_of(&admin, pooled).await,
    ];
    expected.sort();
    assert_eq!(
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>(),
        expected
    );
    for r in &rows {
        let name: String = r.get(0);
        // tenant_ and 20 random hex digits: nothing of the tenant's id.
        assert!(
            name.len() == 27
                && name.starts_with("tenant_")
                && ![silo, pooled]
                    .iter()
                    .any(|t| t.simple().to_string().contains(&name[7..]))
                && name[7..]
                    .chars()
                    .all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase()),
            "{name}"
        );
        assert_eq!(r.get::<_, String>(1), "tenantry_owner");
        assert_eq!(r.get::<_, String>(2), "tenantry_owner");
        assert!(
            r.get::<_, bool>(3) && r.get::<_, bool>(4),
            "{name}: RLS forced"
        );
        assert_eq!(
            r.get::<_, i64>(5),
            1,
            "{name}: a partition of tenantry.resources"
        );
    }
}

// -----------------------------------------------------------------------------
// Flaw 10: setup_connection.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn setup_connection_routes_to_the_tenant_schema_without_changing_the_session_identity() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let silo = create_silo(&admin, "silo").await;
    let pooled = create_tenant(&admin, "pooled", None).await;
    create_resource(&app, silo, "in-silo").await;
    create_resource(&app, pooled, "in-pool").await;

    async fn identity(c: &Client) -> (String, String) {
        let r = c
            .query_one("SELECT session_user::text, current_user::text", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    }
    // The operator's login stays the session user; the role stays tenantry_app.
    let operator = tdb.superuser_config().get_user().unwrap().to_owned();
    let who = (operator, "tenantry_app".to_owned());

    // Without a tenant: refused, nothing changed.
    clear_context(&app).await;
    denied(&app, "SELECT setup_connection()", "TN403").await;
    assert_eq!(
        strings(&app, "SELECT current_setting('search_path')").await,
        ["tenantry, public"]
    );

    // A schema-isolated tenant: its schema first, identifiers quoted.
    set_context(&app, silo).await;
    exec(&app, "SELECT setup_connection()").await;
    assert_eq!(identity(&app).await, who);
    let expected_path: String = app
        .query_one(
            "SELECT quote_ident($1) || ', public, tenantry'",
            &[&schema_of(&admin, silo).await],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        strings(&app, "SELECT current_setting('search_path')").await,
        [expected_path]
    );
    assert_eq!(
        strings(&app, "SELECT current_schema()::text").await,
        [schema_of(&admin, silo).await]
    );
    // Unqualified names reach the tenant's own table; the context survives.
    assert_eq!(
        strings(
            &app,
            "SELECT name || '@' || tableoid::regclass::text FROM resources"
        )
        .await,
        ["in-silo@resources"]
    );
    let ctx: Option<Uuid> = app
        .query_one("SELECT tenantry.current_tenant_id()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ctx, Some(silo));

    // A pooled tenant: back to the shared tables.
    set_context(&app, pooled).await;
    exec(&app, "SELECT setup_connection()").await;
    assert_eq!(identity(&app).await, who);
    assert_eq!(
        strings(&app, "SELECT current_setting('search_path')").await,
        ["public, tenantry"]
    );
    assert_eq!(resource_names(&app).await, ["in-pool"]);
}

#[tokio::test]
async fn a_route_set_by_setup_connection_follows_the_tenant_when_the_context_changes() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let silo = create_silo(&admin, "silo").await;
    let other_silo = create_silo(&admin, "other-silo").await;
    let pooled = create_tenant(&admin, "pooled", None).await;
    create_resource(&app, silo, "in-silo").await;
    create_resource(&app, other_silo, "in-other-silo").await;
    create_resource(&app, pooled, "in-pool").await;
    let mut paths = Vec::new();
    for t in [silo, other_silo] {
        let schema = schema_of(&admin, t).await;
        paths.push(
            strings(
                &app,
                &format!("SELECT tenantry.tenant_search_path('{schema}')"),
            )
            .await[0]
                .clone(),
        );
    }
    let [silo_path, other_path] = [paths[0].clone(), paths[1].clone()];
    let path = || strings(&app, "SELECT current_setting('search_path')");

    // Routed for the silo (the session), as the guide does it.
    set_context(&app, silo).await;
    exec(&app, "SELECT setup_connection()").await;
    assert_eq!(path().await, [silo_path.as_str()]);

    // Another tenant for one transaction: its route for that transaction,
    // its rows through the unqualified name, its inserts accepted (the
    // silo's table answered nothing and refused inserts as tier_moved).
    exec(&app, "BEGIN").await;
    exec(
        &app,
        &format!("SELECT set_tenant_context_local('{pooled}')"),
    )
    .await;
    assert_eq!(path().await, ["public, tenantry"]);
    assert_eq!(
        strings(&app, "SELECT name FROM resources ORDER BY name").await,
        ["in-pool"]
    );
    exec(&app, "INSERT INTO resources (name) VALUES ('pool-insert')").await;
    exec(
        &app,
        &format!("SELECT set_tenant_context_local('{other_silo}')"),
    )
    .await;
    assert_eq!(path().await, [other_path.as_str()]);
    assert_eq!(
        strings(&app, "SELECT name FROM resources ORDER BY name").await,
        ["in-other-silo"]
    );
    exec(&app, "COMMIT").await;
    // The session's tenant and route again.
    assert_eq!(path().await, [silo_path.as_str()]);
    assert_eq!(
        strings(&app, "SELECT name FROM resources ORDER BY name").await,
        ["in-silo"]
    );

    // The session's tenant changed: the session's route follows it.
    set_context(&app, pooled).await;
    assert_eq!(path().await, ["public, tenantry"]);
    assert_eq!(
        strings(&app, "SELECT name FROM resources ORDER BY name").await,
        ["in-pool", "pool-insert"]
    );
    // Not routed by setup_connection(): a search_path of the caller's own is
    // left alone.
    exec(&app, "SET search_path = tenantry, public").await;
    set_context(&app, other_silo).await;
    assert_eq!(path().await, ["tenantry, public"]);
    // Nor one that begins with a tenant schema but is not setup_connection()'s.
    let own_path = format!(
        "{}, tenantry, public, pg_catalog",
        schema_of(&admin, silo).await
    );
    exec(&app, &format!("SET search_path = {own_path}")).await;
    set_context(&app, pooled).await;
    assert_eq!(path().await, [own_path.as_str()]);
}

/// A team's own table named like one of tenantry's (`roles`): after
/// `setup_connection()`, the unqualified name is the team's table, as the
/// guide's path (the tenant's schema, then public) has it. tenantry's schema
/// came first and a psql session read tenantry's roles instead (found by an
/// outside review); the guide's functions keep their unqualified names.
#[tokio::test]
async fn after_setup_connection_a_teams_table_named_like_one_of_tenantrys_is_the_teams() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let su = tdb.superuser_client().await;
    exec(
        &su,
        "CREATE TABLE public.roles (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                    title text NOT NULL, PRIMARY KEY (tenant_id, id));
         SELECT tenantry.adopt_table('public.roles');",
    )
    .await;
    let t = create_tenant(&admin, "acme", None).await;
    set_context(&app, t).await;
    exec(&app, "SELECT setup_connection()").await;
    exec(&app, "INSERT INTO roles (title) VALUES ('goalkeeper')").await;
    assert_eq!(
        strings(&app, "SELECT title FROM roles").await,
        ["goalkeeper"]
    );
    assert_eq!(
        strings(
            &app,
            "SELECT n.nspname::text FROM roles r JOIN pg_class c ON c.oid = r.tableoid
             JOIN pg_namespace n ON n.oid = c.relnamespace"
        )
        .await,
        ["public"]
    );
    // The guide's names still resolve.
    let id = create_resource(&app, t, "doc").await;
    assert_eq!(
        strings(
            &app,
            &format!("SELECT name FROM resources WHERE id = '{id}'")
        )
        .await,
        ["doc"]
    );
}

// -----------------------------------------------------------------------------
// Schema per tenant: another tenant cannot reach a tenant's own table.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn a_tenant_schema_table_is_unreachable_from_another_tenants_context() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let s1 = create_silo(&admin, "silo-1").await;
    let s2 = create_silo(&admin, "silo-2").await;
    let p = create_tenant(&admin, "pooled", None).await;
    let r1 = create_resource(&app, s1, "s1-secret").await;
    create_resource(&app, s2, "s2-doc").await;
    let table = format!("\"{}\".resources", schema_of(&admin, s1).await);

    set_context(&app, s1).await;
    assert_eq!(
        strings(&app, &format!("SELECT name FROM {table}")).await,
        ["s1-secret"]
    );
    for (t, name) in [(s2, "another silo"), (p, "a pooled tenant")] {
        set_context(&app, t).await;
        assert_eq!(
            count(&app, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{name}"
        );
        assert_eq!(
            count(
                &app,
                &format!("SELECT count(*) FROM tenantry.resources WHERE tenant_id = '{s1}'")
            )
            .await,
            0,
            "{name} through tenantry.resources"
        );
        let n = app
            .execute(&format!("UPDATE {table} SET name = 'pwned'"), &[])
            .await
            .unwrap();
        assert_eq!(n, 0, "{name} updates");
        let n = app
            .execute(&format!("DELETE FROM {table}"), &[])
            .await
            .unwrap();
        assert_eq!(n, 0, "{name} deletes");
        // Planting a row: another tenant's, refused by the policy (which
        // says nothing of that tenant); its own, refused as written outside
        // its tier (tenant_row_home).
        for (owner, code) in [(s1, "42501"), (t, "TN409")] {
            expect_sqlstate_any(
                app.batch_execute(&format!(
                    "INSERT INTO {table} (tenant_id, name) VALUES ('{owner}', 'planted')"
                ))
                .await,
                &[code],
            );
        }
        denied(
            &app,
            &format!("ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"),
            "42501",
        )
        .await;
        denied(
            &app,
            &format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"),
            "42501",
        )
        .await;
        denied(
            &app,
            &format!("DROP SCHEMA \"{}\" CASCADE", schema_of(&admin, s1).await),
            "42501",
        )
        .await;
    }
    clear_context(&app).await;
    assert_eq!(
        count(&app, &format!("SELECT count(*) FROM {table}")).await,
        0
    );
    let server = tdb.server_client().await;
    denied(&server, &format!("SELECT count(*) FROM {table}"), "42501").await;

    set_context(&app, s1).await;
    let row = app
        .query_one(&format!("SELECT name FROM {table} WHERE id = $1"), &[&r1])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "s1-secret");
    assert_eq!(
        count(&app, &format!("SELECT count(*) FROM {table}")).await,
        1,
        "nothing planted"
    );
}
