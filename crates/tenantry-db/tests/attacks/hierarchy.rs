//! Hierarchy: reads go downwards only, at any depth; cycles are refused;
//! detaching a child hides it from the parent's next transaction.

use tokio_postgres::{Client, Error};
use uuid::Uuid;

use crate::common::{count, create_tenant, describe, exec};
use crate::helpers::{begin_as, commit, create_resource, denied, names_seen_by, rollback, world};

async fn set_parent(admin: &Client, t: Uuid, parent: Option<Uuid>) -> Result<u64, Error> {
    admin
        .execute(
            "UPDATE tenantry.tenants SET parent_id = $1 WHERE tenant_id = $2",
            &[&parent, &t],
        )
        .await
}

#[tokio::test]
async fn a_child_never_reads_its_parent_and_a_sibling_never_reads_its_sibling() {
    let w = world().await;
    let left = create_tenant(&w.admin, "left", Some(w.a)).await;
    let right = create_tenant(&w.admin, "right", Some(w.a)).await;
    let rl = create_resource(&w.app, left, "left-doc").await;
    create_resource(&w.app, right, "right-doc").await;
    assert_eq!(
        names_seen_by(&w.app, w.a).await,
        ["a-doc", "left-doc", "right-doc"]
    );
    assert_eq!(names_seen_by(&w.app, left).await, ["left-doc"]);
    assert_eq!(names_seen_by(&w.app, right).await, ["right-doc"]);
    begin_as(&w.app, right).await;
    for sql in [
        format!(
            "SELECT count(*) FROM tenantry.tenants WHERE tenant_id IN ('{}', '{left}')",
            w.a
        ),
        format!(
            "SELECT count(*) FROM tenantry.tenant_hierarchy WHERE parent_id = '{}'",
            w.a
        ),
        format!(
            "SELECT count(*) FROM tenantry.resources WHERE id IN ('{}', '{rl}')",
            w.ra
        ),
    ] {
        assert_eq!(count(&w.app, &sql).await, 0, "{sql}");
    }
    let n = w
        .app
        .execute(
            "UPDATE tenantry.resources SET name = 'pwned' WHERE id = ANY($1)",
            &[&vec![w.ra, rl]],
        )
        .await
        .unwrap();
    assert_eq!(n, 0);
    commit(&w.app).await;
    assert_eq!(names_seen_by(&w.app, left).await, ["left-doc"]);
}

#[tokio::test]
async fn a_great_grandparent_reads_depth_three_and_nothing_reads_upwards() {
    let w = world().await;
    let t1 = create_tenant(&w.admin, "d1", Some(w.a)).await;
    let t2 = create_tenant(&w.admin, "d2", Some(t1)).await;
    let t3 = create_tenant(&w.admin, "d3", Some(t2)).await;
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

#[tokio::test]
async fn reparenting_into_a_cycle_is_refused_at_any_depth_and_changes_nothing() {
    let w = world().await;
    let t1 = create_tenant(&w.admin, "d1", Some(w.a)).await;
    let t2 = create_tenant(&w.admin, "d2", Some(t1)).await;
    let t3 = create_tenant(&w.admin, "d3", Some(t2)).await;
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

#[tokio::test]
async fn detaching_a_child_hides_it_from_the_parents_next_transaction() {
    let w = world().await;
    let child = create_tenant(&w.admin, "child", Some(w.a)).await;
    let grandchild = create_tenant(&w.admin, "grandchild", Some(child)).await;
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
