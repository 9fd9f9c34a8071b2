//! Object access: a foreign resource, share or tenant row is read, changed or
//! shared exactly like a missing one, and no tenant relation yields a foreign row.

use serde_json::json;
use uuid::Uuid;

use crate::common::{count, create_tenant, exec};
use crate::helpers::{
    add_member, begin_as, commit, create_key, create_role, names_seen_by, rollback, same_failure,
    share, world, TENANT_RELATIONS,
};

#[tokio::test]
async fn a_foreign_resource_id_selects_zero_rows_exactly_like_a_missing_id() {
    let w = world().await;
    let missing = Uuid::new_v4();
    begin_as(&w.app, w.a).await;
    for id in [w.rb, missing] {
        let rows = w
            .app
            .query("SELECT * FROM tenantry.resources WHERE id = $1", &[&id])
            .await
            .unwrap();
        assert!(rows.is_empty(), "{id}: {} rows", rows.len());
        let rows = w
            .app
            .query(
                "SELECT * FROM tenantry.resources WHERE tenant_id = $1 AND id = $2",
                &[&w.b, &id],
            )
            .await
            .unwrap();
        assert!(rows.is_empty());
    }
    // Its own row is there, so the query itself works.
    assert_eq!(
        count(
            &w.app,
            &format!(
                "SELECT count(*) FROM tenantry.resources WHERE id = '{}'",
                w.ra
            )
        )
        .await,
        1
    );
    commit(&w.app).await;
}

#[tokio::test]
async fn update_and_delete_of_a_foreign_resource_change_zero_rows_and_leave_it_intact() {
    let w = world().await;
    let missing = Uuid::new_v4();
    begin_as(&w.app, w.a).await;
    for id in [w.rb, missing] {
        let n = w
            .app
            .execute(
                "UPDATE tenantry.resources SET name = 'pwned', data = '{\"x\":1}' WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(n, 0, "update of {id}");
        let n = w
            .app
            .execute("DELETE FROM tenantry.resources WHERE id = $1", &[&id])
            .await
            .unwrap();
        assert_eq!(n, 0, "delete of {id}");
    }
    // A blanket update or delete touches only the caller's own row.
    let n = w
        .app
        .execute("UPDATE tenantry.resources SET name = name", &[])
        .await
        .unwrap();
    assert_eq!(n, 1);
    commit(&w.app).await;
    assert_eq!(names_seen_by(&w.app, w.b).await, ["b-secret"]);
}

#[tokio::test]
async fn sharing_or_unsharing_a_foreign_resource_fails_with_the_same_error_as_a_missing_one() {
    let w = world().await;
    let c = create_tenant(&w.admin, "tenant-c", None).await;
    let missing = Uuid::new_v4();
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for f in ["share_resource", "unshare_resource"] {
        let code = same_failure(&w.app, w.rb, missing, |id| {
            format!("ROLLBACK TO SAVEPOINT s; SELECT tenantry.{f}('{id}', '{c}')")
        })
        .await;
        assert_eq!(code, "TN404", "{f}");
    }
    rollback(&w.app).await;
    begin_as(&w.app, c).await;
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM tenantry.resources").await,
        0,
        "nothing of b's reached c"
    );
    commit(&w.app).await;
}

#[tokio::test]
async fn no_tenant_table_view_or_function_yields_a_row_of_another_tenant() {
    let w = world().await;
    // Give b a row in every table.
    let member = add_member(&w.app, w.b, "b@example.com").await;
    let role = create_role(&w.app, w.b, "b-role").await;
    begin_as(&w.app, w.b).await;
    exec(
        &w.app,
        &format!(
            "SELECT tenantry.assign_tenant_permission('{role}', 'resources.read');
             SELECT tenantry.assign_member_role('{member}', '{role}');
             INSERT INTO tenantry.request_log (tenant_id, route, status) VALUES ('{}', '/x', 200);",
            w.b
        ),
    )
    .await;
    commit(&w.app).await;
    create_key(&w.app, w.b, json!({})).await;
    share(&w.app, w.b, w.rb, create_tenant(&w.admin, "c", None).await).await;
    exec(&w.admin, "SELECT tenantry.refresh_tenant_metrics()").await;

    // Every relation holds b's rows (checked as b) and none of them reaches a.
    for (relation, column) in TENANT_RELATIONS {
        let sql = format!("SELECT count(*) FROM {relation} WHERE {column} = '{}'", w.b);
        begin_as(&w.app, w.b).await;
        let own = count(&w.app, &sql).await;
        commit(&w.app).await;
        assert!(own > 0, "{relation}: b should see its own rows");
        begin_as(&w.app, w.a).await;
        assert_eq!(
            count(&w.app, &sql).await,
            0,
            "{relation} leaked b's rows to a"
        );
        let all = format!(
            "SELECT count(*) FROM {relation} WHERE {column} IS DISTINCT FROM '{}'",
            w.a
        );
        assert_eq!(
            count(&w.app, &all).await,
            0,
            "{relation}: a sees only itself"
        );
        commit(&w.app).await;
    }
}
