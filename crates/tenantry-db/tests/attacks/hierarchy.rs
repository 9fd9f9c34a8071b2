//! Hierarchy: reads go downwards only, at any depth; cycles are refused;
//! detaching a child hides it from the parent's next transaction. Each attack
//! runs across tiers: descendants alternate between the victim's (`b`'s) tier
//! and the attacker's (`a`'s), so a parent and its child, and two siblings,
//! sit in different tiers whenever `a` and `b` do.

use crate::common::{count, describe, exec};
use crate::helpers::{
    across_tiers, begin_as, commit, create_resource, denied, names_seen_by, rollback, set_parent,
    World,
};

across_tiers!(
    a_child_never_reads_its_parent_and_a_sibling_never_reads_its_sibling,
    a_great_grandparent_reads_depth_three_and_nothing_reads_upwards,
    reparenting_into_a_cycle_is_refused_at_any_depth_and_changes_nothing,
    detaching_a_child_hides_it_from_the_parents_next_transaction,
);

async fn a_child_never_reads_its_parent_and_a_sibling_never_reads_its_sibling(w: World) {
    let left = w.tenant("left", Some(w.a), w.tiers.1).await;
    let right = w.tenant("right", Some(w.a), w.tiers.0).await;
    let rl = create_resource(&w.app, left, "left-doc").await;
    create_resource(&w.app, right, "right-doc").await;
    assert_eq!(
        names_seen_by(&w.app, w.a).await,
        ["a-doc", "left-doc", "right-doc"]
    );
    assert_eq!(names_seen_by(&w.app, left).await, ["left-doc"]);
    assert_eq!(names_seen_by(&w.app, right).await, ["right-doc"]);
    let tables = w.resource_tables().await;
    begin_as(&w.app, right).await;
    let mut probes = vec![
        format!(
            "SELECT count(*) FROM tenantry.tenants WHERE tenant_id IN ('{}', '{left}')",
            w.a
        ),
        format!(
            "SELECT count(*) FROM tenantry.tenant_hierarchy WHERE parent_id = '{}'",
            w.a
        ),
    ];
    probes.extend(tables.iter().map(|table| {
        format!(
            "SELECT count(*) FROM {table} WHERE id IN ('{}', '{rl}')",
            w.ra
        )
    }));
    for sql in probes {
        assert_eq!(count(&w.app, &sql).await, 0, "{sql}");
    }
    for table in &tables {
        let n = w
            .app
            .execute(
                &format!("UPDATE {table} SET name = 'pwned' WHERE id = ANY($1)"),
                &[&vec![w.ra, rl]],
            )
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    commit(&w.app).await;
    assert_eq!(names_seen_by(&w.app, left).await, ["left-doc"]);
}

async fn a_great_grandparent_reads_depth_three_and_nothing_reads_upwards(w: World) {
    let t1 = w.tenant("d1", Some(w.a), w.tiers.1).await;
    let t2 = w.tenant("d2", Some(t1), w.tiers.0).await;
    let t3 = w.tenant("d3", Some(t2), w.tiers.1).await;
    for (t, n) in [(t1, "d1-doc"), (t2, "d2-doc"), (t3, "d3-doc")] {
        create_resource(&w.app, t, n).await;
    }
    assert_eq!(
        names_seen_by(&w.app, w.a).await,
        ["a-doc", "d1-doc", "d2-doc", "d3-doc"]
    );
    assert_eq!(names_seen_by(&w.app, t2).await, ["d2-doc", "d3-doc"]);
    assert_eq!(names_seen_by(&w.app, t3).await, ["d3-doc"]);
    begin_as(&w.app, w.a).await;
    let depth: i32 = w
        .app
        .query_one(
            "SELECT depth FROM tenantry.tenant_hierarchy WHERE parent_id = $1 AND child_id = $2",
            &[&w.a, &t3],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(depth, 3);
    commit(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

async fn reparenting_into_a_cycle_is_refused_at_any_depth_and_changes_nothing(w: World) {
    let t1 = w.tenant("d1", Some(w.a), w.tiers.1).await;
    let t2 = w.tenant("d2", Some(t1), w.tiers.0).await;
    let t3 = w.tenant("d3", Some(t2), w.tiers.1).await;
    for (t, parent) in [(w.a, t3), (w.a, t1), (t1, t3), (t3, t3)] {
        exec(&w.admin, "BEGIN").await;
        let e = set_parent(&w.admin, t, Some(parent))
            .await
            .expect_err("a cycle must be refused");
        let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
        assert!(
            ["TN409", "TN422", "23514"].contains(&code.as_str()),
            "{t} under {parent}: {}",
            describe(&e)
        );
        rollback(&w.admin).await;
    }
    // The tenant role cannot re-parent at all.
    begin_as(&w.app, w.a).await;
    denied(
        &w.app,
        &format!(
            "UPDATE tenantry.tenants SET parent_id = '{t3}' WHERE tenant_id = '{}'",
            w.a
        ),
        "42501",
    )
    .await;
    rollback(&w.app).await;
    assert_eq!(names_seen_by(&w.app, t3).await, Vec::<String>::new());
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
}

async fn detaching_a_child_hides_it_from_the_parents_next_transaction(w: World) {
    let child = w.tenant("child", Some(w.a), w.tiers.1).await;
    let grandchild = w.tenant("grandchild", Some(child), w.tiers.0).await;
    create_resource(&w.app, child, "child-doc").await;
    create_resource(&w.app, grandchild, "grandchild-doc").await;
    assert_eq!(
        names_seen_by(&w.app, w.a).await,
        ["a-doc", "child-doc", "grandchild-doc"]
    );
    set_parent(&w.admin, child, None).await.unwrap();
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
    begin_as(&w.app, w.a).await;
    assert_eq!(
        count(
            &w.app,
            &format!(
                "SELECT count(*) FROM tenantry.tenants WHERE tenant_id IN ('{child}', '{grandchild}')"
            )
        )
        .await,
        0
    );
    commit(&w.app).await;
    // Re-attached elsewhere: the new parent sees it, the old one still does not.
    set_parent(&w.admin, child, Some(w.b)).await.unwrap();
    assert_eq!(names_seen_by(&w.app, w.a).await, ["a-doc"]);
    assert_eq!(
        names_seen_by(&w.app, w.b).await,
        ["b-secret", "child-doc", "grandchild-doc"]
    );
}
