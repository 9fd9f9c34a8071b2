//! A tenant's own write that arrives during the cut-over of its move back to the shared tier, found by the benchmark's moves (`tier_move_*` figures): it waits for the cut-over and must then land in the pooled table (or be retried there by the library), not fail because the tenant's tables changed under it (the cut-over now moves rows only; the emptied tables go later, in tier_move_cleanup, without waiting). Deterministic: the cut-over is held open in one session while the write waits on it.

use tenantry_db::{testing::TestDatabase, Database, NewResource, TenantContext, TenantId};
use tokio_postgres::Client;

/// Creates a schema tenant as an operator; returns its id.
async fn schema_tenant(su: &Client) -> uuid::Uuid {
    su.query_one(
        "SELECT tenantry.create_tenant('moving back', NULL, 'schema', '{}')",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn write(db: &Database, tenant: uuid::Uuid) -> Result<(), tenantry_db::DbError> {
    let new = NewResource {
        name: "written during the cut-over".into(),
        data: serde_json::json!({}).into(),
    };
    db.in_tenant(
        &TenantContext::new(TenantId::from_uuid(tenant)),
        &new,
        |scope, new| Box::pin(scope.create_resource(new)),
    )
    .await
    .map(|_| ())
}

/// Holds the cut-over of `tenant`'s move to the shared tier open (its schema
/// dropped, not committed) in `admin`, runs a write of the tenant that waits
/// for it, commits the cut-over, and returns the write's answer.
async fn write_during_cutover(
    test: &TestDatabase,
    db: &Database,
    tenant: uuid::Uuid,
) -> Result<(), tenantry_db::DbError> {
    let admin = test.superuser_client().await;
    admin
        .execute("SELECT tenantry.tier_move_start($1, 'shared')", &[&tenant])
        .await
        .unwrap();
    tenantry_db::testing::older_transactions_ended(&admin, tenant).await;
    admin.batch_execute("BEGIN").await.unwrap();
    admin
        .execute("SELECT tenantry.tier_move_finish($1)", &[&tenant])
        .await
        .unwrap();
    let writer = tokio::spawn({
        let db = db.clone();
        async move { write(&db, tenant).await }
    });
    // Until the write waits on a lock the cut-over holds (a condition, not a timing).
    let watcher = test.superuser_client().await;
    let waited = tenantry_db::testing::a_server_session_waits_for_a_lock(&watcher).await;
    assert!(waited, "the write never waited for the cut-over");
    admin.batch_execute("COMMIT").await.unwrap();
    writer.await.unwrap()
}

async fn pooled_rows(su: &Client, tenant: uuid::Uuid) -> i64 {
    su.query_one(
        "SELECT count(*) FROM ONLY tenantry.resources WHERE tenant_id = $1",
        &[&tenant],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn a_write_routed_to_the_tenants_schema_during_its_move_back_lands_in_the_pooled_table() {
    let test = TestDatabase::new().await;
    let su = test.superuser_client().await;
    let tenant = schema_tenant(&su).await;
    let db = test.database_with(tenantry_db::StatementMode::Prepared, 1);
    // A first write caches the tenant's part: the next is routed to its schema.
    write(&db, tenant).await.unwrap();

    let answer = write_during_cutover(&test, &db, tenant).await;

    assert!(answer.is_ok(), "the write failed: {answer:?}");
    assert_eq!(pooled_rows(&su, tenant).await, 2);
}

#[tokio::test]
async fn a_write_of_a_tenant_whose_tier_is_not_known_yet_during_its_move_back_lands_in_the_pooled_table(
) {
    let test = TestDatabase::new().await;
    let su = test.superuser_client().await;
    let tenant = schema_tenant(&su).await;
    // A fresh pool: the tenant's part is not cached, the write goes through
    // create_resource_row (the family route).
    let db = test.database_with(tenantry_db::StatementMode::Prepared, 1);

    let answer = write_during_cutover(&test, &db, tenant).await;

    assert!(answer.is_ok(), "the write failed: {answer:?}");
    assert_eq!(pooled_rows(&su, tenant).await, 1);
}
