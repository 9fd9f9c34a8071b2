//! Hierarchy: transitive, including the tenant itself, never upwards, and
//! without cycles (flaw 6).

use tenantry_db::testing::TestDatabase;
use uuid::Uuid;

use crate::common::{count, create_tenant, exec};
use crate::helpers::{
    admin, app, create_resource, expect_sqlstate, expect_sqlstate_any, resource_names, set_context,
    sorted, uuids,
};

// -----------------------------------------------------------------------------
// Flaw 6: hierarchy only one level deep, self omitted, cycles possible.
// -----------------------------------------------------------------------------

#[tokio::test]
async fn hierarchy_is_transitive_includes_the_tenant_itself_never_goes_upwards_and_rejects_cycles()
{
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let root = create_tenant(&admin, "root", None).await;
    let child = create_tenant(&admin, "child", Some(root)).await;
    let grandchild = create_tenant(&admin, "grandchild", Some(child)).await;
    let sibling = create_tenant(&admin, "sibling", Some(root)).await;
    for (t, n) in [(root, "r"), (child, "c"), (grandchild, "g"), (sibling, "s")] {
        create_resource(&app, t, n).await;
    }

    set_context(&app, root).await;
    assert_eq!(resource_names(&app).await, ["c", "g", "r", "s"]);
    assert_eq!(
        uuids(&app, "SELECT tenant_id FROM tenants").await,
        sorted(vec![root, child, grandchild, sibling])
    );
    set_context(&app, child).await;
    assert_eq!(resource_names(&app).await, ["c", "g"]);
    assert_eq!(
        uuids(&app, "SELECT tenant_id FROM tenants").await,
        sorted(vec![child, grandchild])
    );
    assert_eq!(
        count(
            &app,
            &format!("SELECT count(*) FROM tenant_hierarchy WHERE parent_id = '{root}'")
        )
        .await,
        0
    );
    set_context(&app, grandchild).await;
    assert_eq!(resource_names(&app).await, ["g"]);
    assert_eq!(
        uuids(&app, "SELECT tenant_id FROM tenants").await,
        [grandchild]
    );

    // Cycles and self-parenting are rejected; a tenant cannot re-parent itself.
    let move_sql = "UPDATE tenantry.tenants SET parent_id = $1 WHERE tenant_id = $2";
    expect_sqlstate(
        admin.execute(move_sql, &[&grandchild, &root]).await,
        "TN409",
        "root under its grandchild",
    );
    expect_sqlstate(
        admin.execute(move_sql, &[&child, &root]).await,
        "TN409",
        "root under its child",
    );
    expect_sqlstate(
        admin.execute(move_sql, &[&root, &root]).await,
        "TN422",
        "root under itself",
    );
    let unknown = Uuid::new_v4();
    expect_sqlstate(
        admin.execute(move_sql, &[&unknown, &child]).await,
        "TN404",
        "child under an unknown tenant",
    );
    set_context(&app, child).await;
    expect_sqlstate(
        app.execute(move_sql, &[&child, &sibling]).await,
        "42501",
        "a tenant adopting its sibling",
    );

    // An allowed move: sibling under grandchild. The closure follows.
    admin
        .execute(move_sql, &[&grandchild, &sibling])
        .await
        .unwrap();
    set_context(&app, child).await;
    assert_eq!(resource_names(&app).await, ["c", "g", "s"]);
    set_context(&app, sibling).await;
    assert_eq!(resource_names(&app).await, ["s"]);
    set_context(&app, root).await;
    assert_eq!(resource_names(&app).await, ["c", "g", "r", "s"]);
    // And the cycle the move made newly possible is rejected too.
    expect_sqlstate(
        admin.execute(move_sql, &[&sibling, &child]).await,
        "TN409",
        "child under its new great-grandchild",
    );
}

#[tokio::test]
async fn a_cycle_built_by_one_multi_row_update_is_rejected_and_changes_nothing() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let x = create_tenant(&admin, "x", None).await;
    let y = create_tenant(&admin, "y", None).await;
    let z = create_tenant(&admin, "z", None).await;
    // Each row's BEFORE trigger checks the closure as it was before the
    // statement (the closure is maintained by AFTER triggers), so a ring
    // written in one statement is caught when the closure is extended, and
    // reported with the same code as any other cycle.
    let swap = "UPDATE tenantry.tenants
                SET parent_id = CASE tenant_id WHEN $1 THEN $2 ELSE $1 END
                WHERE tenant_id IN ($1, $2)";
    expect_sqlstate_any(admin.execute(swap, &[&x, &y]).await, &["TN409"]);
    let ring = "UPDATE tenantry.tenants
                SET parent_id = CASE tenant_id WHEN $1 THEN $2 WHEN $2 THEN $3 ELSE $1 END
                WHERE tenant_id IN ($1, $2, $3)";
    expect_sqlstate_any(admin.execute(ring, &[&x, &y, &z]).await, &["TN409"]);
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM tenants WHERE parent_id IS NOT NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM tenant_hierarchy WHERE depth > 0"
        )
        .await,
        0
    );
    // The same moves one at a time: the last one closes the ring and is refused.
    let move_sql = "UPDATE tenantry.tenants SET parent_id = $1 WHERE tenant_id = $2";
    admin.execute(move_sql, &[&y, &x]).await.unwrap();
    admin.execute(move_sql, &[&z, &y]).await.unwrap();
    expect_sqlstate(
        admin.execute(move_sql, &[&x, &z]).await,
        "TN409",
        "closing the ring",
    );
}

/// The closure as the parent links say it is: every (ancestor, tenant,
/// depth) found by walking `parent_id` up from each tenant.
const CLOSURE_FROM_PARENTS: &str = "
    WITH RECURSIVE up(parent_id, child_id, depth) AS (
        SELECT tenant_id, tenant_id, 0 FROM tenantry.tenants
        UNION ALL
        SELECT t.parent_id, up.child_id, up.depth + 1
        FROM up JOIN tenantry.tenants t ON t.tenant_id = up.parent_id
        WHERE t.parent_id IS NOT NULL)
    SELECT count(*) FROM (
        (SELECT parent_id, child_id, depth FROM up
         EXCEPT SELECT parent_id, child_id, depth FROM tenantry.tenant_hierarchy)
        UNION ALL
        (SELECT parent_id, child_id, depth FROM tenantry.tenant_hierarchy
         EXCEPT SELECT parent_id, child_id, depth FROM up)) differ";

/// Found by a contention audit: a tenant made a root (parent NULL) while
/// another tenant moved under its subtree left the old ancestor's closure
/// row to the mover (R read and changed Y's rows through `descendants`):
/// a move to the root took no hierarchy lock, so the other move extended a
/// closure that was being cut. Every change of a parent serialises now.
#[tokio::test]
async fn a_move_to_the_root_and_a_move_under_its_old_subtree_at_once_leave_the_closure_as_the_parents_say(
) {
    let tdb = TestDatabase::new().await;
    let first = admin(&tdb).await;
    let second = admin(&tdb).await;
    let r = create_tenant(&first, "r", None).await;
    let x = create_tenant(&first, "x", Some(r)).await;
    let z = create_tenant(&first, "z", Some(x)).await;
    let y = create_tenant(&first, "y", None).await;
    let move_sql = "UPDATE tenantry.tenants SET parent_id = $1 WHERE tenant_id = $2";

    first.batch_execute("BEGIN").await.unwrap();
    first
        .execute(move_sql, &[&None::<Uuid>, &x])
        .await
        .expect("x becomes a root");
    // y goes under z while x's move is not committed: it must wait for it
    // (the lock), not extend the closure x's move is cutting.
    let under = tokio::spawn(async move {
        second
            .batch_execute("SELECT tenantry.set_admin_context('operator')")
            .await
            .unwrap();
        let moved = second.execute(move_sql, &[&Some(z), &y]).await;
        (second, moved)
    });
    // Once it tries for the lock (a fixed 300 ms was a guess): it polls
    // for it without queueing, sleeping between two tries.
    let watcher = tdb.superuser_client().await;
    assert!(tenantry_db::testing::a_session_sleeps_in(&watcher, "SET parent_id").await);
    first.batch_execute("COMMIT").await.unwrap();
    let (_second, moved) = under.await.unwrap();
    moved.expect("y goes under z once x's move is committed");

    assert_eq!(count(&first, CLOSURE_FROM_PARENTS).await, 0);
    assert_eq!(
        count(
            &first,
            &format!(
                "SELECT count(*) FROM tenantry.tenant_hierarchy WHERE parent_id = '{r}' AND child_id = '{y}'"
            )
        )
        .await,
        0,
        "r is no ancestor of y"
    );
}

/// Found by a contention re-audit: a move waiting for the hierarchy lock
/// (another move holds it) held its tenant's row meanwhile, a wait the
/// deadlock detector cannot see. That tenant's share then waited on the row,
/// and the move holding the lock waited on the share's counter row: all
/// three, and every child creation, stalled for 5 s. A move now tries for
/// the lock holding nothing, and waits 100 ms at most for the rows it needs
/// under it; a share tries for the lock shared (since 2026-12-04) for
/// 150 ms, then 55P03.
#[tokio::test]
async fn a_move_waiting_for_the_hierarchy_lock_holds_back_no_share_of_the_tenant_it_moves() {
    let tdb = TestDatabase::new().await;
    let first = admin(&tdb).await;
    let second = admin(&tdb).await;
    let r = create_tenant(&first, "r", None).await;
    let s = create_tenant(&first, "s", None).await;
    let u = create_tenant(&first, "u", None).await;
    let z0 = create_tenant(&first, "z0", None).await;
    let z = create_tenant(&first, "z", Some(z0)).await;
    let app = app(&tdb).await;
    let doc = create_resource(&app, r, "doc").await;
    let parent_sql = "SELECT count(*) FROM tenantry.set_tenant_parent($1, $2)";

    // The first move holds the hierarchy lock.
    first.batch_execute("BEGIN").await.unwrap();
    first
        .execute(parent_sql, &[&z, &None::<Uuid>])
        .await
        .unwrap();
    // The second, of r, tries for it.
    let moving_r = tokio::spawn(async move {
        second.batch_execute("BEGIN").await.unwrap();
        let moved = second.execute(parent_sql, &[&r, &Some(s)]).await;
        let _ = second.batch_execute("ROLLBACK").await;
        moved
    });
    // Once the second move tries for the lock (a fixed 300 ms was a guess).
    let watcher = tdb.superuser_client().await;
    assert!(tenantry_db::testing::a_session_sleeps_in(&watcher, "set_tenant_parent").await);
    // r shares meanwhile: the share never queues behind the moves. It tries
    // the hierarchy lock for 150 ms (a share checks the closure under it,
    // so that no share of a moving subtree outlives the move), then answers
    // 55P03, which the server runs again; nothing of r was held meanwhile.
    // Queued behind them, it would wait until the first move's ROLLBACK
    // below: the 30 s here.
    exec(&app, "BEGIN").await;
    let shared = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        app.execute("SELECT share_resource($1, $2)", &[&doc, &u]),
    )
    .await
    .expect("the share waited for the move of its tenant");
    expect_sqlstate_any(shared, &["55P03"]);
    exec(&app, "ROLLBACK").await;
    first.batch_execute("ROLLBACK").await.unwrap();
    let moved = moving_r.await.unwrap();
    if let Err(e) = &moved {
        assert_eq!(
            e.code().map(|c| c.code()),
            Some("55P03"),
            "the move of r is made or retried: {e:?}"
        );
    }
    assert_eq!(
        count(&tdb.superuser_client().await, CLOSURE_FROM_PARENTS).await,
        0
    );
    // Run again once the moves are over, the share is made.
    exec(&app, "BEGIN").await;
    app.execute("SELECT share_resource($1, $2)", &[&doc, &u])
        .await
        .unwrap();
    exec(&app, "COMMIT").await;
}

/// Found by a contention re-audit: a leaf deleted while its parent was made
/// a root came off its old ancestors' descendant counts twice (the move
/// subtracted the subtree with it, the deletion subtracted it again through
/// the closure it had read), and `max_descendants` then let more through.
/// The deletion takes the hierarchy lock shared, as a creation does.
#[tokio::test]
async fn a_leaf_deleted_while_its_parent_becomes_a_root_is_counted_off_once() {
    let tdb = TestDatabase::new().await;
    let first = admin(&tdb).await;
    let second = admin(&tdb).await;
    let a = create_tenant(&first, "a", None).await;
    create_tenant(&first, "s1", Some(a)).await;
    create_tenant(&first, "s2", Some(a)).await;
    let p = create_tenant(&first, "p", Some(a)).await;
    let leaf = create_tenant(&first, "leaf", Some(p)).await;

    first.batch_execute("BEGIN").await.unwrap();
    first
        .execute(
            "SELECT count(*) FROM tenantry.set_tenant_parent($1, NULL)",
            &[&p],
        )
        .await
        .unwrap();
    let deleting = tokio::spawn(async move {
        second
            .execute(
                "UPDATE tenantry.tenants SET status = 'deleted' WHERE tenant_id = $1",
                &[&leaf],
            )
            .await
            .map(|_| ())
    });
    let watcher = tdb.superuser_client().await;
    assert!(tenantry_db::testing::a_session_waits_for_a_lock(&watcher).await);
    first.batch_execute("COMMIT").await.unwrap();
    deleting.await.unwrap().unwrap();

    let su = tdb.superuser_client().await;
    let counts = |t: Uuid| {
        let su = &su;
        async move {
            let row = su
                .query_one(
                    "SELECT children, descendants FROM tenantry.tenant_limit_usage WHERE tenant_id = $1",
                    &[&t],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0), row.get::<_, i64>(1))
        }
    };
    assert_eq!(counts(a).await, (2, 2), "a keeps s1 and s2");
    assert_eq!(counts(p).await, (0, 0), "p's one child is deleted");
}
