//! `EXPLAIN ANALYZE` as an existence oracle (issue 10, finding 8) on
//! tenantry's own tables: where a policy is a filter instead of an index
//! condition, "Rows Removed by Filter" (and the other counters of a plan)
//! count foreign rows the scan touched. The probes and how they are judged
//! are in `oracle`.

use serde_json::json;
use uuid::Uuid;

use crate::common::{create_silo, create_tenant, exec, strings};
use crate::helpers::{
    across_tiers, add_member, begin_as, commit, create_key, create_resource, create_role,
    key_id_of, share, World,
};
use crate::oracle::{assert_no_oracle, probe, range};

across_tiers!(explain_analyze_answers_alike_for_a_foreign_thing_that_exists_and_one_that_does_not);

async fn explain_analyze_answers_alike_for_a_foreign_thing_that_exists_and_one_that_does_not(
    w: World,
) {
    let (a, b, app) = (w.a, w.b, &w.app);
    // The victim b: many resources with a common name prefix, one shared with a
    // third tenant and one shared with the attacker (so the attacker reads
    // under the sharing rules too), a child, a member holding a role, a key.
    // Everything of b is made after this instant, nothing of a's.
    let t0: String = w
        .tdb
        .superuser_client()
        .await
        .query_one("SELECT clock_timestamp()::text", &[])
        .await
        .unwrap()
        .get(0);
    for i in 0..30 {
        create_resource(app, b, &format!("b-secret-{i:02}")).await;
    }
    let c = create_tenant(&w.admin, "tenant-c", None).await;
    let b_child = create_tenant(&w.admin, "tenant-b-child", Some(b)).await;
    share(app, b, w.rb, c).await;
    let given = create_resource(app, b, "b-given-to-a").await;
    share(app, b, given, a).await;
    let member = add_member(app, b, "victim@b.example").await;
    let role = create_role(app, b, "b-operators").await;
    begin_as(app, b).await;
    exec(
        app,
        &format!(
            "SELECT tenantry.assign_tenant_permission('{role}', 'resources.read');
             SELECT tenantry.assign_member_role('{member}', '{role}');"
        ),
    )
    .await;
    commit(app).await;
    let key = create_key(app, b, json!({})).await;
    let key_id = key_id_of(app, b, &key).await;
    let prefix = &key[3..15];
    // A schema-isolated victim too: its rows sit in their own partition.
    let silo = create_silo(&w.admin, "silo").await;
    let silo_resource = create_resource(app, silo, "silo-secret").await;
    // Statistics, so the planner weighs real numbers (a superuser check step).
    exec(&w.tdb.superuser_client().await, "ANALYZE").await;
    // A sanity check of the set-up: the attacker reads what b gave it, nothing else of b.
    begin_as(app, a).await;
    let seen = strings(
        app,
        "SELECT name FROM tenantry.resources WHERE tenant_id <> tenantry.current_tenant_id()
         UNION ALL SELECT name FROM tenantry.resources_shared_with_me()",
    )
    .await;
    commit(app).await;
    assert_eq!(seen, vec!["b-given-to-a".to_owned()]);

    let missing = Uuid::new_v4;
    let probes = [
        // Existence of a foreign id: not shared at all, shared with someone
        // else, owned by a tenant that shares something else with the attacker,
        // in a schema tenant's partition.
        probe("SELECT id FROM tenantry.resources WHERE id = $1", "uuid", w.rb, missing()),
        probe("SELECT id FROM tenantry.resources WHERE id = $1", "uuid", given, missing()),
        probe("SELECT id FROM tenantry.resources WHERE id = $1", "uuid", silo_resource, missing()),
        // A tenant's exact row count.
        probe("SELECT id FROM tenantry.resources WHERE tenant_id = $1", "uuid", b, missing()),
        // A schema tenant's exact row count: its table inherits the pooled
        // one, with no constraint the planner could prune by.
        probe("SELECT id FROM tenantry.resources WHERE tenant_id = $1", "uuid", silo, missing()),
        // Names and name ranges (a binary search needs only these).
        probe("SELECT id FROM tenantry.resources WHERE name = $1", "text", "b-secret-07", "b-secret-99"),
        range(
            "SELECT id FROM tenantry.resources WHERE name >= $1 AND name < 'b-secret-1'",
            "text",
            "b-secret-0",
            "b-secret-0~",
        ),
        range(
            "SELECT id FROM tenantry.resources WHERE name LIKE $1",
            "text",
            "b-secret-0%",
            "b-secret-x%",
        ),
        range(
            "SELECT id FROM tenantry.resources WHERE tenant_id = $1 AND name >= 'b-s' AND name < 'b-t'",
            "uuid",
            b,
            missing(),
        ),
        range("SELECT id FROM tenantry.resources WHERE created_at > $1", "timestamptz", &t0, "2999-01-01"),
        // Shares: of a foreign resource, by a foreign owner, to a foreign target.
        probe("SELECT 1 FROM tenantry.shared_resources WHERE resource_id = $1", "uuid", w.rb, missing()),
        probe("SELECT 1 FROM tenantry.shared_resources WHERE tenant_id = $1", "uuid", b, missing()),
        probe("SELECT 1 FROM tenantry.shared_resources WHERE shared_with = $1", "uuid", c, missing()),
        // Keys: by prefix (what verification looks up) and by id.
        probe("SELECT key_id FROM tenantry.api_keys WHERE prefix = $1", "text", prefix, "0123456789ab"),
        probe("SELECT key_id FROM tenantry.api_keys WHERE key_id = $1", "uuid", key_id, missing()),
        probe("SELECT key_id FROM tenantry.api_keys WHERE tenant_id = $1", "uuid", b, missing()),
        // Members, roles and their links.
        probe("SELECT user_id FROM tenantry.tenant_members WHERE lower(email) = $1", "text", "victim@b.example", "nobody@b.example"),
        probe("SELECT user_id FROM tenantry.tenant_members WHERE user_id = $1", "uuid", member, missing()),
        probe("SELECT user_id FROM tenantry.tenant_members WHERE tenant_id = $1", "uuid", b, missing()),
        probe("SELECT role_id FROM tenantry.roles WHERE name = $1", "text", "b-operators", "b-nobody"),
        probe("SELECT role_id FROM tenantry.roles WHERE role_id = $1", "uuid", role, missing()),
        probe("SELECT 1 FROM tenantry.role_permissions WHERE role_id = $1", "uuid", role, missing()),
        probe("SELECT 1 FROM tenantry.member_roles WHERE user_id = $1", "uuid", member, missing()),
        probe("SELECT 1 FROM tenantry.member_roles WHERE role_id = $1", "uuid", role, missing()),
        // The hierarchy: a foreign tenant's children, its place in the closure.
        probe("SELECT tenant_id FROM tenantry.tenants WHERE parent_id = $1", "uuid", b, missing()),
        probe("SELECT tenant_id FROM tenantry.tenants WHERE tenant_id = $1", "uuid", b_child, missing()),
        probe("SELECT depth FROM tenantry.tenant_hierarchy WHERE child_id = $1", "uuid", b_child, missing()),
        probe("SELECT depth FROM tenantry.tenant_hierarchy WHERE parent_id = $1", "uuid", b, missing()),
        // The audit log of a foreign tenant.
        probe("SELECT 1 FROM tenantry.audit_log WHERE tenant_id = $1", "uuid", b, missing()),
    ];

    assert_no_oracle(app, a, &probes).await;
}
