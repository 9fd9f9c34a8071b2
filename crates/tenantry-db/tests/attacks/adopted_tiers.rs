//! The attacks on a table of the team's own (adopted with hierarchy and sharing) with the attacker and the victim in either tier: schema tenants' tables of it stand alone (migration 0036), so every table a statement can name is tried — the team's table, with and without `ONLY`, the attacker's own and the victim's by its qualified name — for foreign ids, forged and moved tenants, the cross-tier reads (`subtree_rows`, `rows_shared_with_me`) and sharing a foreign row, all as the server's roles.

use tokio_postgres::Client;
use uuid::Uuid;

use crate::common::{count, exec, strings};
use crate::helpers::{
    across_tiers, adopted_sharing, begin_as, commit, move_refused, rollback, same_failure,
    skip_adopted_sharing_on_citus, World,
};

/// Adopts `public.invoices` (hierarchy and sharing on) in `w`, gives every
/// schema tenant its table of it (`tenantry migrate`'s step), and one invoice
/// to each of a and b: (its id, the qualified table holding it) for a, then b.
async fn invoices(w: &World) -> [(Uuid, String); 2] {
    exec(
        &w.admin,
        &format!(
            "CREATE TABLE public.invoices (
                 tenant_id uuid NOT NULL,
                 id        uuid NOT NULL DEFAULT gen_random_uuid(),
                 number    text NOT NULL,
                 PRIMARY KEY (tenant_id, id),
                 UNIQUE (tenant_id, number));
             SELECT tenantry.adopt_table('public.invoices', hierarchy => true, sharing => {});",
            adopted_sharing()
        ),
    )
    .await;
    let mut out = Vec::new();
    for (t, number) in [(w.a, "A-1"), (w.b, "B-1")] {
        exec(
            &w.admin,
            &format!("SELECT tenantry.migrate_tenant_schema('{t}')"),
        )
        .await;
        let home = strings(
            &w.admin,
            &format!("SELECT tenantry.tenant_home_table('{t}', 'public.invoices')::text"),
        )
        .await
        .remove(0);
        begin_as(&w.app, t).await;
        let id: Uuid = w
            .app
            .query_one(
                &format!("INSERT INTO {home} (number) VALUES ($1) RETURNING id"),
                &[&number],
            )
            .await
            .unwrap()
            .get(0);
        commit(&w.app).await;
        out.push((id, home));
    }
    [out[0].clone(), out[1].clone()]
}

/// Every table through which a statement can name invoices in `w`.
fn tables(a_home: &str, b_home: &str) -> Vec<String> {
    let mut v = vec![
        "public.invoices".to_owned(),
        "ONLY public.invoices".to_owned(),
    ];
    for home in [a_home, b_home] {
        if !v.iter().any(|t| t == home) {
            v.push(home.to_owned());
        }
    }
    v
}

async fn victims_rows(su: &Client, b_home: &str, b: Uuid) -> Vec<String> {
    strings(
        su,
        &format!("SELECT number FROM {b_home} WHERE tenant_id = '{b}' ORDER BY 1"),
    )
    .await
}

across_tiers!(
    a_foreign_adopted_row_is_a_missing_one_through_every_table_and_every_cross_tier_read,
    an_adopted_row_cannot_be_planted_for_or_moved_to_a_tenant_of_either_tier,
    sharing_a_foreign_adopted_row_fails_like_a_missing_one_and_shares_nothing,
);

async fn a_foreign_adopted_row_is_a_missing_one_through_every_table_and_every_cross_tier_read(
    w: World,
) {
    let [(_, a_home), (ib, b_home)] = invoices(&w).await;
    begin_as(&w.app, w.a).await;
    for table in tables(&a_home, &b_home) {
        for id in [ib, Uuid::new_v4()] {
            assert_eq!(
                count(
                    &w.app,
                    &format!("SELECT count(*) FROM {table} WHERE id = '{id}'")
                )
                .await,
                0,
                "{table}"
            );
            let changed = w
                .app
                .execute(
                    &format!("UPDATE {table} SET number = 'pwned' WHERE id = '{id}'"),
                    &[],
                )
                .await
                .unwrap()
                + w.app
                    .execute(&format!("DELETE FROM {table} WHERE id = '{id}'"), &[])
                    .await
                    .unwrap();
            assert_eq!(changed, 0, "{table}");
        }
    }
    let cross_tier = if adopted_sharing() {
        "SELECT number FROM tenantry.subtree_rows(NULL::public.invoices)
         UNION ALL SELECT number FROM tenantry.rows_shared_with_me(NULL::public.invoices)"
    } else {
        "SELECT number FROM tenantry.subtree_rows(NULL::public.invoices)"
    };
    assert_eq!(strings(&w.app, cross_tier).await, ["A-1"]);
    commit(&w.app).await;
    assert_eq!(victims_rows(&w.admin, &b_home, w.b).await, ["B-1"]);
}

async fn an_adopted_row_cannot_be_planted_for_or_moved_to_a_tenant_of_either_tier(w: World) {
    let [(ia, a_home), (_, b_home)] = invoices(&w).await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    for table in tables(&a_home, &b_home) {
        if table.starts_with("ONLY ") {
            continue;
        }
        let code = same_failure(&w.app, w.b, Uuid::new_v4(), |t| {
            format!(
                "ROLLBACK TO SAVEPOINT s; INSERT INTO {table} (tenant_id, number) VALUES ('{t}', 'planted')"
            )
        })
        .await;
        assert_eq!(code, "42501", "{table}: RLS refuses before anything else");
    }
    // Its own row stays its own, through its own table.
    let code = same_failure(&w.app, w.b, Uuid::new_v4(), |t| {
        format!("ROLLBACK TO SAVEPOINT s; UPDATE {a_home} SET tenant_id = '{t}' WHERE id = '{ia}'")
    })
    .await;
    assert_eq!(code, move_refused("TN422"), "tenant_id cannot change");
    rollback(&w.app).await;
    assert_eq!(victims_rows(&w.admin, &b_home, w.b).await, ["B-1"]);
    assert_eq!(
        strings(
            &w.admin,
            &format!(
                "SELECT number FROM {a_home} WHERE id = '{ia}' AND tenant_id = '{}'",
                w.a
            )
        )
        .await,
        ["A-1"]
    );
}

async fn sharing_a_foreign_adopted_row_fails_like_a_missing_one_and_shares_nothing(w: World) {
    if skip_adopted_sharing_on_citus(
        "sharing_a_foreign_adopted_row_fails_like_a_missing_one_and_shares_nothing",
    ) {
        return;
    }
    let [(ia, _), (ib, b_home)] = invoices(&w).await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    same_failure(&w.app, ib, Uuid::new_v4(), |id| {
        format!(
            "ROLLBACK TO SAVEPOINT s; SELECT tenantry.share_row('public.invoices', '{id}', '{}')",
            w.b
        )
    })
    .await;
    exec(&w.app, "ROLLBACK TO SAVEPOINT s").await;
    // Sharing its own row with the victim lends the victim that row only,
    // and the attacker nothing of the victim's.
    exec(
        &w.app,
        &format!(
            "SELECT tenantry.share_row('public.invoices', '{ia}', '{}')",
            w.b
        ),
    )
    .await;
    commit(&w.app).await;
    for (t, seen) in [(w.b, vec!["A-1".to_owned()]), (w.a, vec![])] {
        begin_as(&w.app, t).await;
        assert_eq!(
            strings(
                &w.app,
                "SELECT number FROM tenantry.rows_shared_with_me(NULL::public.invoices)"
            )
            .await,
            seen
        );
        commit(&w.app).await;
    }
    assert_eq!(victims_rows(&w.admin, &b_home, w.b).await, ["B-1"]);
}
