//! Object access: a foreign resource, share or tenant row is read, changed or
//! shared exactly like a missing one, and no tenant relation yields a foreign row.

use serde_json::json;
use uuid::Uuid;

use crate::common::{count, create_tenant, exec};
use crate::helpers::{
    across_tiers, add_member, begin_as, commit, create_key, create_role, names_seen_by, rollback,
    same_failure, share, World, TENANT_RELATIONS,
};

across_tiers!(
    a_foreign_resource_id_selects_zero_rows_exactly_like_a_missing_id,
    update_and_delete_of_a_foreign_resource_change_zero_rows_and_leave_it_intact,
    sharing_or_unsharing_a_foreign_resource_fails_with_the_same_error_as_a_missing_one,
    no_tenant_table_view_or_function_yields_a_row_of_another_tenant,
);

async fn a_foreign_resource_id_selects_zero_rows_exactly_like_a_missing_id(w: World) {
    let missing = Uuid::new_v4();
    begin_as(&w.app, w.a).await;
    // Through the family, the pooled table alone and each schema tenant's
    // table by its qualified name (the victim's own, when it has one).
    for table in w.resource_tables().await {
        for id in [w.rb, missing] {
            let rows = w
                .app
                .query(&format!("SELECT * FROM {table} WHERE id = $1"), &[&id])
                .await
                .unwrap();
            assert!(rows.is_empty(), "{table}, {id}: {} rows", rows.len());
            let rows = w
                .app
                .query(
                    &format!("SELECT * FROM {table} WHERE tenant_id = $1 AND id = $2"),
                    &[&w.b, &id],
                )
                .await
                .unwrap();
            assert!(rows.is_empty(), "{table}, {id}");
        }
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

async fn update_and_delete_of_a_foreign_resource_change_zero_rows_and_leave_it_intact(w: World) {
    let missing = Uuid::new_v4();
    begin_as(&w.app, w.a).await;
    for table in w.resource_tables().await {
        for id in [w.rb, missing] {
            let n = w
                .app
                .execute(
                    &format!(
                        "UPDATE {table} SET name = 'pwned', data = '{{\"x\":1}}' WHERE id = $1"
                    ),
                    &[&id],
                )
                .await
                .unwrap();
            assert_eq!(n, 0, "update of {id} through {table}");
            let n = w
                .app
                .execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&id])
                .await
                .unwrap();
            assert_eq!(n, 0, "delete of {id} through {table}");
        }
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

async fn sharing_or_unsharing_a_foreign_resource_fails_with_the_same_error_as_a_missing_one(
    w: World,
) {
    // The share target in the tier the victim is not in.
    let c = w.tenant("tenant-c", None, w.tiers.1.other()).await;
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

async fn no_tenant_table_view_or_function_yields_a_row_of_another_tenant(w: World) {
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
