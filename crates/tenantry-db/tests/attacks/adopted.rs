//! The attacks on `resources`, repeated on a table of the team's own adopted with `tenantry.adopt_table` (issue 11): foreign ids, forged and moved tenants, ON CONFLICT, leaky functions, COPY, statistics and the hierarchy, all as the server's roles.

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::common::{count, create_tenant, exec, strings};
use crate::helpers::{app, begin_as, commit, fails, rollback, same_failure};
use tenantry_db::testing::TestDatabase;

/// Tenants a (with a child), b; an adopted `public.invoices` holding one row each.
struct Adopted {
    tdb: TestDatabase,
    app: Client,
    a: Uuid,
    child: Uuid,
    b: Uuid,
    /// Invoice ids of a, the child and b.
    ia: Uuid,
    ic: Uuid,
    ib: Uuid,
}

async fn adopted() -> Adopted {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    exec(
        &su,
        "CREATE TABLE public.invoices (
             tenant_id uuid NOT NULL,
             id        uuid NOT NULL DEFAULT gen_random_uuid(),
             number    text NOT NULL,
             amount    numeric NOT NULL DEFAULT 0,
             PRIMARY KEY (tenant_id, id),
             UNIQUE (tenant_id, number));
         SELECT tenantry.adopt_table('public.invoices');",
    )
    .await;
    let admin = tdb.server_client().await;
    exec(&admin, "SET ROLE tenantry_admin").await;
    let a = create_tenant(&admin, "a", None).await;
    let child = create_tenant(&admin, "a-child", Some(a)).await;
    let b = create_tenant(&admin, "b", None).await;
    let app = app(&tdb).await;
    let mut ids = Vec::new();
    for (t, number) in [(a, "A-1"), (child, "C-1"), (b, "B-1")] {
        begin_as(&app, t).await;
        let id: Uuid = app
            .query_one(
                "INSERT INTO public.invoices (number, amount) VALUES ($1, 10) RETURNING id",
                &[&number],
            )
            .await
            .unwrap()
            .get(0);
        commit(&app).await;
        ids.push(id);
    }
    Adopted {
        tdb,
        app,
        a,
        child,
        b,
        ia: ids[0],
        ic: ids[1],
        ib: ids[2],
    }
}

/// Invoice numbers `t` reads.
async fn numbers_seen_by(c: &Client, t: Uuid) -> Vec<String> {
    begin_as(c, t).await;
    let v = strings(c, "SELECT number FROM public.invoices").await;
    commit(c).await;
    v
}

#[tokio::test]
async fn a_foreign_row_of_an_adopted_table_is_selected_updated_and_deleted_exactly_like_a_missing_one(
) {
    let w = adopted().await;
    begin_as(&w.app, w.a).await;
    for id in [w.ib, Uuid::new_v4()] {
        assert_eq!(
            count(
                &w.app,
                &format!("SELECT count(*) FROM public.invoices WHERE id = '{id}'")
            )
            .await,
            0
        );
        let updated = w
            .app
            .execute(
                &format!("UPDATE public.invoices SET amount = 0 WHERE id = '{id}'"),
                &[],
            )
            .await
            .unwrap();
        let deleted = w
            .app
            .execute(
                &format!("DELETE FROM public.invoices WHERE id = '{id}'"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!((updated, deleted), (0, 0));
    }
    commit(&w.app).await;
    let su = w.tdb.superuser_client().await;
    assert_eq!(
        strings(
            &su,
            &format!(
                "SELECT amount::text FROM public.invoices WHERE id = '{}'",
                w.ib
            )
        )
        .await,
        ["10"]
    );
}

#[tokio::test]
async fn writing_or_moving_a_row_of_an_adopted_table_into_another_tenant_fails_alike_for_an_existing_and_a_missing_one(
) {
    let w = adopted().await;
    begin_as(&w.app, w.a).await;
    exec(&w.app, "SAVEPOINT s").await;
    let insert = same_failure(&w.app, w.b, Uuid::new_v4(), |t| {
        format!(
            "ROLLBACK TO SAVEPOINT s; INSERT INTO public.invoices (tenant_id, number) VALUES ('{t}', 'planted')"
        )
    })
    .await;
    assert_eq!(insert, "42501", "RLS refuses before any foreign-key check");
    let moved = same_failure(&w.app, w.b, Uuid::new_v4(), |t| {
        format!(
            "ROLLBACK TO SAVEPOINT s; UPDATE public.invoices SET tenant_id = '{t}' WHERE id = '{}'",
            w.ia
        )
    })
    .await;
    assert_eq!(
        moved, "TN422",
        "a row keeps its tenant, whatever the target"
    );
    // Delete and re-insert under another tenant: refused as well.
    exec(&w.app, "ROLLBACK TO SAVEPOINT s").await;
    let (code, _, _) = fails(
        &w.app,
        &format!(
            "WITH gone AS (DELETE FROM public.invoices WHERE id = '{}' RETURNING number)
             INSERT INTO public.invoices (tenant_id, number) SELECT '{}', number FROM gone",
            w.ia, w.b
        ),
    )
    .await;
    assert_eq!(code, "42501");
    rollback(&w.app).await;
    assert_eq!(numbers_seen_by(&w.app, w.b).await, ["B-1"]);
}

#[tokio::test]
async fn on_conflict_against_another_tenants_key_of_an_adopted_table_is_no_oracle() {
    let w = adopted().await;
    // b's invoice number and its row id, and fresh ones: each insert is a's own
    // row; a conflict could only be with a's own rows, never b's.
    for (number, id) in [("B-1", w.ib), ("FREE-1", Uuid::new_v4()), ("B-1x", w.ib)] {
        begin_as(&w.app, w.a).await;
        let rows = w
            .app
            .execute(
                &format!(
                    "INSERT INTO public.invoices (id, number) VALUES ('{id}', '{number}')
                     ON CONFLICT (tenant_id, number) DO UPDATE SET amount = 999"
                ),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows, 1);
        rollback(&w.app).await;
    }
    assert_eq!(numbers_seen_by(&w.app, w.a).await, ["A-1", "C-1"]);
    let su = w.tdb.superuser_client().await;
    assert_eq!(
        count(
            &su,
            "SELECT count(*) FROM public.invoices WHERE amount = 999"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_leaky_function_over_an_adopted_table_never_sees_a_foreign_row() {
    let w = adopted().await;
    exec(
        &w.app,
        "CREATE TEMP TABLE seen (number text);
         CREATE FUNCTION pg_temp.peek(n text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
         BEGIN INSERT INTO pg_temp.seen VALUES (n); RETURN true; END $$;",
    )
    .await;
    begin_as(&w.app, w.child).await;
    assert_eq!(
        count(
            &w.app,
            "SELECT count(*) FROM public.invoices WHERE pg_temp.peek(number)"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &w.app,
            "SELECT count(*) FROM public.invoices WHERE CASE WHEN number = 'B-1' THEN 1 / (length(number) - 3) ELSE 1 END = 1"
        )
        .await,
        1,
        "a division by zero on b's row would have raised"
    );
    commit(&w.app).await;
    assert_eq!(
        strings(&w.app, "SELECT number FROM pg_temp.seen").await,
        ["C-1"]
    );
}

#[tokio::test]
async fn copy_of_an_adopted_table_reads_only_the_contexts_rows_and_statistics_stay_hidden() {
    let w = adopted().await;
    let su = w.tdb.superuser_client().await;
    exec(&su, "ANALYZE public.invoices").await;
    begin_as(&w.app, w.b).await;
    for sql in [
        "COPY public.invoices (number) TO STDOUT",
        "COPY (SELECT number FROM public.invoices) TO STDOUT",
    ] {
        let stream = w.app.copy_out(sql).await.unwrap();
        pin_mut!(stream);
        let mut out = Vec::new();
        while let Some(chunk) = stream.try_next().await.unwrap() {
            out.extend_from_slice(&chunk);
        }
        assert_eq!(String::from_utf8(out).unwrap(), "B-1\n", "{sql}");
    }
    assert_eq!(
        count(
            &w.app,
            "SELECT count(*) FROM pg_stats WHERE tablename = 'invoices'"
        )
        .await,
        0
    );
    let (code, _, _) = fails(&w.app, "SELECT * FROM pg_stat_user_tables").await;
    assert_eq!(code, "42501");
    rollback(&w.app).await;
    begin_as(&w.app, w.b).await;
    let (code, _, _) = fails(
        &w.app,
        "COPY public.invoices (tenant_id, number) FROM PROGRAM 'true'",
    )
    .await;
    assert_eq!(code, "42501");
    rollback(&w.app).await;
}

#[tokio::test]
async fn the_hierarchy_on_an_adopted_table_reaches_descendants_never_parents_or_siblings() {
    let w = adopted().await;
    assert_eq!(numbers_seen_by(&w.app, w.a).await, ["A-1", "C-1"]);
    assert_eq!(numbers_seen_by(&w.app, w.child).await, ["C-1"]);
    assert_eq!(numbers_seen_by(&w.app, w.b).await, ["B-1"]);
    // The parent edits its child's row; the child cannot touch its parent's.
    begin_as(&w.app, w.a).await;
    let n = w
        .app
        .execute(
            &format!(
                "UPDATE public.invoices SET amount = 11 WHERE id = '{}'",
                w.ic
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    commit(&w.app).await;
    begin_as(&w.app, w.child).await;
    let n = w
        .app
        .execute(
            &format!(
                "UPDATE public.invoices SET amount = 0 WHERE id = '{}'",
                w.ia
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 0);
    commit(&w.app).await;
    // No context at all: nothing.
    assert_eq!(
        count(&w.app, "SELECT count(*) FROM public.invoices").await,
        0
    );
}
