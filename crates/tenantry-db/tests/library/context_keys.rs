//! Context key rotation through the library: a pool holding the old key keeps serving after a key is added, and once that key is retired every one of its transactions fails closed with `DbError::Unavailable` (the server's 503), on its open connections and on new ones, while a pool holding the new key serves on.

use tenantry_db::{
    context_keys, testing::TestDatabase, Database, DbError, StatementMode, TenantContext, TenantId,
};

use super::{resource, tenant};

/// The resource's name as `t` reads it (one transaction), or why not.
async fn read(db: &Database, t: TenantId, r: tenantry_db::ResourceId) -> Result<String, DbError> {
    let scope = db.tenant(TenantContext::new(t)).await?;
    Ok(scope.get_resource_and_commit(r).await?.name)
}

#[tokio::test]
async fn a_database_on_the_old_key_serves_after_rotate_and_fails_closed_after_retire_while_one_on_the_new_key_serves(
) {
    for mode in [StatementMode::Prepared, StatementMode::Unnamed] {
        let tdb = TestDatabase::new().await;
        let old_db = tdb.database_with(mode, 2);
        let a = tenant(&old_db, "a", None).await;
        let b = tenant(&old_db, "b", None).await;
        let ra = resource(&old_db, a, "a-doc").await.id;
        let rb = resource(&old_db, b, "b-doc").await.id;
        assert_eq!(read(&old_db, a, ra).await.unwrap(), "a-doc");

        let operator = tdb.superuser_client().await;
        let old_key = tdb.context_key().clone();
        let new_key = context_keys::add(&operator).await.unwrap();
        // Rotated: the old pool's open connections and new ones both serve.
        for _ in 0..4 {
            assert_eq!(read(&old_db, a, ra).await.unwrap(), "a-doc", "{mode:?}");
        }
        let mut config = tdb.database_config().with_context_key(new_key.clone());
        config.statement_mode = mode;
        let new_db = Database::connect(&config).unwrap();
        assert_eq!(read(&new_db, b, rb).await.unwrap(), "b-doc");

        context_keys::retire(&operator, old_key.id()).await.unwrap();
        // Retired: every transaction of the old pool is refused alike, for
        // every tenant, on the connections it holds (their sessions end with
        // the key) and on the ones it opens next ("unknown key").
        for _ in 0..4 {
            for (t, r) in [(a, ra), (b, rb)] {
                let refused = read(&old_db, t, r).await;
                assert!(
                    matches!(refused, Err(DbError::Unavailable(_))),
                    "{mode:?}: {refused:?}"
                );
            }
            let admin = old_db.admin("rotation-test").await;
            let refused = match admin {
                Ok(mut scope) => scope.list_tenants(None, 10).await.map(|_| ()),
                Err(e) => Err(e),
            };
            assert!(
                matches!(refused, Err(DbError::Unavailable(_))),
                "{mode:?} admin: {refused:?}"
            );
        }
        assert_eq!(read(&new_db, a, ra).await.unwrap(), "a-doc", "{mode:?}");
        assert_eq!(read(&new_db, b, rb).await.unwrap(), "b-doc", "{mode:?}");
    }
}
