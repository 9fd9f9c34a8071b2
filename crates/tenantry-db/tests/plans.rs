//! Plan-shape tests: with realistic statistics, the policies on `resources` drive index scans (no sequential scan) for point reads and lists, in every role the server uses.

use serde_json::Value;
use tenantry_db::testing::TestDatabase;
use tokio_postgres::Client;

struct Fixture {
    tdb: TestDatabase,
    root: uuid::Uuid,
    leaf: uuid::Uuid,
    own_id: uuid::Uuid,
    shared_id: uuid::Uuid,
}

/// 200 tenants (20 roots with 9 descendants each) × 200 resources, 100 shares into `root`.
async fn fixture() -> Fixture {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    su.batch_execute(
        "SET ROLE tenantry_admin;
         DO $$ DECLARE r uuid; c uuid; BEGIN
           FOR i IN 1..20 LOOP
             r := tenantry.create_tenant('root-' || i);
             FOR j IN 1..3 LOOP
               c := tenantry.create_tenant('child-' || i || '-' || j, r);
               FOR k IN 1..2 LOOP PERFORM tenantry.create_tenant('gc-' || i || '-' || j || '-' || k, c); END LOOP;
             END LOOP;
           END LOOP; END $$;
         RESET ROLE;
         INSERT INTO tenantry.resources (tenant_id, name, data, created_at)
         SELECT t.tenant_id, 'res-' || g, jsonb_build_object('n', g), now() - g * interval '1 minute'
         FROM tenantry.tenants t, generate_series(1, 200) g;",
    )
    .await
    .unwrap();
    let root: uuid::Uuid = su
        .query_one(
            "SELECT tenant_id FROM tenantry.tenants WHERE name = 'root-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let leaf: uuid::Uuid = su
        .query_one(
            "SELECT tenant_id FROM tenantry.tenants WHERE name = 'gc-7-1-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    su.execute(
        "WITH src AS (SELECT DISTINCT ON (tenant_id) tenant_id, id FROM tenantry.resources
                      WHERE tenant_id NOT IN (SELECT child_id FROM tenantry.tenant_hierarchy WHERE parent_id = $1)
                      ORDER BY tenant_id, id LIMIT 100)
         INSERT INTO tenantry.shared_resources (tenant_id, resource_id, shared_with) SELECT tenant_id, id, $1 FROM src",
        &[&root],
    )
    .await
    .unwrap();
    su.batch_execute(
        "UPDATE tenantry.resources r SET shared_with = ARRAY[s.shared_with]
         FROM tenantry.shared_resources s WHERE s.tenant_id = r.tenant_id AND s.resource_id = r.id;
         ANALYZE;",
    )
    .await
    .unwrap();
    let own_id = su
        .query_one(
            "SELECT id FROM tenantry.resources WHERE tenant_id = $1 LIMIT 1",
            &[&root],
        )
        .await
        .unwrap()
        .get(0);
    // Not one of the leaf's own rows, which the leaf would read as its own
    // (LIMIT 1 alone picked whichever row came first, now and then the leaf's).
    let shared_id = su
        .query_one(
            "SELECT id FROM tenantry.resources WHERE shared_with @> ARRAY[$1::uuid] AND tenant_id <> $2
             ORDER BY id LIMIT 1",
            &[&root, &leaf],
        )
        .await
        .unwrap()
        .get(0);
    Fixture {
        tdb,
        root,
        leaf,
        own_id,
        shared_id,
    }
}

fn nodes<'a>(plan: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(plan);
    if let Some(children) = plan.get("Plans").and_then(Value::as_array) {
        for c in children {
            nodes(c, out);
        }
    }
}

/// Runs EXPLAIN (ANALYZE) as the server's login role in `role` with `tenant`'s context; returns all plan nodes.
async fn explain(c: &Client, tenant: uuid::Uuid, role: &str, sql: &str) -> Vec<Value> {
    c.batch_execute("SET ROLE tenantry_app").await.unwrap();
    tenantry_db::testing::begin_in_tenant(c, tenant).await;
    c.batch_execute(&format!("SET LOCAL ROLE {role}"))
        .await
        .unwrap();
    let row = c
        .query_one(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"), &[])
        .await
        .unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    let json: Value = row.get(0);
    let mut out = Vec::new();
    nodes(&json[0]["Plan"], &mut out);
    out.into_iter().cloned().collect()
}

/// The top node's actual rows per loop: a whole number up to PostgreSQL 17,
/// written with decimals from 18 on.
fn actual_rows(plan: &[Value]) -> f64 {
    plan[0]["Actual Rows"].as_f64().expect("Actual Rows")
}

fn assert_index_driven(plan: &[Value], what: &str) {
    let types: Vec<&str> = plan
        .iter()
        .filter_map(|n| n["Node Type"].as_str())
        .collect();
    assert!(
        !types.contains(&"Seq Scan"),
        "{what}: sequential scan in {types:?}"
    );
    assert!(
        types.iter().any(|t| t.contains("Index")),
        "{what}: no index scan in {types:?}"
    );
}

#[tokio::test]
async fn policies_drive_index_scans_for_point_reads_and_lists() {
    let f = fixture().await;
    let c = f.tdb.server_client().await;
    let point = |id: uuid::Uuid| format!("SELECT * FROM tenantry.resources WHERE id = '{id}'");
    let newest = "SELECT id FROM tenantry.resources ORDER BY created_at DESC, id DESC LIMIT 50";

    // The library's point read: the subtree through the primary key, then
    // (only if that found nothing) the fence of rows shared with the caller.
    let point_or_shared = |id: uuid::Uuid| {
        format!(
            "(SELECT id FROM tenantry.resources WHERE id = '{id}')
             UNION ALL (SELECT id FROM tenantry.resources_shared_with_me('{id}')) LIMIT 1"
        )
    };
    let plan = explain(&c, f.root, "tenantry_app", &point(f.own_id)).await;
    assert_index_driven(&plan, "own point read");
    assert_eq!(actual_rows(&plan), 1.0, "own point read");
    assert!(
        plan.iter().any(|n| n["Index Name"]
            .as_str()
            .is_some_and(|i| i.ends_with("_pkey"))),
        "own point read goes through (tenant_id, id): {plan:?}"
    );
    for (what, tenant, id, rows) in [
        ("own point read", f.root, f.own_id, 1.0),
        ("shared point read", f.root, f.shared_id, 1.0),
        ("foreign point read", f.leaf, f.shared_id, 0.0),
    ] {
        let plan = explain(&c, tenant, "tenantry_app", &point_or_shared(id)).await;
        assert_index_driven(&plan, what);
        assert_eq!(actual_rows(&plan), rows, "{what}");
    }
    let plan = explain(&c, f.leaf, "tenantry_app", &point(f.shared_id)).await;
    assert_index_driven(&plan, "foreign point read");
    assert_eq!(actual_rows(&plan), 0.0, "a foreign row is invisible");

    let own_list = format!(
        "SELECT id FROM tenantry.resources WHERE tenant_id = '{}' ORDER BY created_at DESC, id DESC LIMIT 50",
        f.leaf
    );
    let plan = explain(&c, f.leaf, "tenantry_app_own", &own_list).await;
    assert_index_driven(&plan, "own newest 50");
    assert!(
        !plan.iter().any(|n| n["Node Type"] == "Sort"),
        "own newest 50 must come straight off the index, got {plan:?}"
    );

    let plan = explain(
        &c,
        f.root,
        "tenantry_app_shared",
        "SELECT id FROM tenantry.resources_shared_with_me(max_rows => 50)",
    )
    .await;
    assert_eq!(actual_rows(&plan), 50.0);
    // Inside the fence, as its owner: the GIN index on shared_with drives it.
    let su = f.tdb.superuser_client().await;
    let row = su
        .query_one(
            &format!(
                "EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM tenantry.resources r
                 WHERE r.shared_with @> ARRAY['{}'::uuid] ORDER BY r.created_at DESC, r.id DESC LIMIT 50",
                f.root
            ),
            &[],
        )
        .await
        .unwrap();
    let json: Value = row.get(0);
    let mut inner = Vec::new();
    nodes(&json[0]["Plan"], &mut inner);
    let inner: Vec<Value> = inner.into_iter().cloned().collect();
    assert_index_driven(&inner, "shared with me");
    assert!(
        inner.iter().any(|n| n["Index Name"]
            .as_str()
            .is_some_and(|i| i.contains("shared_with"))),
        "GIN index drives shared-with-me"
    );

    let plan = explain(&c, f.root, "tenantry_app", newest).await;
    assert_index_driven(&plan, "everything root may read");
}

/// The `Output` of a one-row `EXPLAIN (VERBOSE)` of `sql`, as the superuser.
async fn verbose_output(c: &Client, sql: &str) -> String {
    let row = c
        .query_one(&format!("EXPLAIN (VERBOSE, FORMAT JSON) {sql}"), &[])
        .await
        .unwrap();
    let json: Value = row.get(0);
    json[0]["Plan"]["Output"].to_string()
}

/// PostgreSQL never inlines an SQL function whose body has a sub-query, and
/// then parses and plans that body again in every statement that calls it:
/// `context_value` did so in every request's `enter_context` (about 70 µs of
/// the database's CPU per request). The functions a request's context goes
/// through must stay inlinable.
#[tokio::test]
async fn the_context_functions_of_every_request_are_inlined_by_the_planner() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let tid = "'9e506445-43ce-48c0-c900-37c81cca1504'::uuid";
    for (name, call) in [
        (
            "context_value",
            format!("tenantry.context_value({tid}, NULL, 'key:k', ARRAY['resources.read'], NULL, ',stenantry,v9e50644543ce48c0c90037c81cca1504')"),
        ),
        (
            "checked_context_part",
            format!("tenantry.checked_context_part({tid}, NULL, 'key:k', ',stenantry,v9e50644543ce48c0c90037c81cca1504')"),
        ),
        ("visible_tenant_ids", "tenantry.visible_tenant_ids()".into()),
        ("current_tenant_id", "tenantry.current_tenant_id()".into()),
        (
            "setting_in_force",
            "tenantry.setting_in_force(t.settings, 'max_roles') FROM tenantry.tenants t".into(),
        ),
    ] {
        let output = verbose_output(&su, &format!("SELECT {call}")).await;
        assert!(
            !output.contains(name),
            "{name} is called, not inlined: {output}"
        );
    }
}

/// The grants part of a context keeps the permission names, in order, and
/// drops everything else (a name with a comma could otherwise forge another
/// part of the value, such as the visible subtree).
#[tokio::test]
async fn a_context_keeps_only_permission_names_among_its_grants() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    for (grants, expected) in [
        ("ARRAY['resources.read', 'keys.manage']", " resources0read keys0manage "),
        ("ARRAY[]::text[]", "  "),
        ("ARRAY[NULL, 'resources.write']::text[]", " resources0write "),
        (
            "ARRAY['resources.read,vffffffffffffffffffffffffffffffff', 'x', 'a.b c.d', 'audit.read']",
            " audit0read ",
        ),
    ] {
        let value: String = su
            .query_one(
                &format!(
                    "SELECT tenantry.context_value('9e506445-43ce-48c0-c900-37c81cca1504', NULL, '', {grants}, NULL, ',s')"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let part = value
            .split(",p")
            .nth(1)
            .and_then(|rest| rest.strip_suffix(",s"))
            .unwrap_or_else(|| panic!("no grants part in {value}"));
        assert_eq!(part, expected, "grants {grants}");
    }
}
