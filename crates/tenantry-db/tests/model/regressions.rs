//! Bugs the model found, kept as plain tests.

use tenantry_db::testing::TestDatabase;
use tenantry_db::{DbError, KeyId, NewKeyOptions, NewTenant};

use crate::checks::ctx;
use crate::PERMS;

/// Found by this model: `key_permissions` of a key outside the caller's
/// subtree (or of no key at all) panicked on the SQL function's NULL instead of
/// answering not found.
#[tokio::test]
async fn key_permissions_of_a_key_outside_the_subtree_is_not_found_like_a_missing_key() {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let mut admin = db.admin("model").await.unwrap();
    let a = admin
        .create_tenant(&NewTenant {
            name: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .tenant_id;
    let b = admin
        .create_tenant(&NewTenant {
            name: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .tenant_id;
    admin.commit().await.unwrap();
    let mut s = db.tenant(ctx(b)).await.unwrap();
    let b_key = s.create_api_key(&NewKeyOptions::default()).await.unwrap();
    assert_eq!(
        s.key_permissions(b_key.info.key_id).await.unwrap().len(),
        PERMS.len()
    );
    s.commit().await.unwrap();

    let mut s = db.tenant(ctx(a)).await.unwrap();
    let foreign = s.key_permissions(b_key.info.key_id).await;
    assert!(matches!(foreign, Err(DbError::NotFound(_))), "{foreign:?}");
    drop(s);
    let mut s = db.tenant(ctx(a)).await.unwrap();
    let missing = s
        .key_permissions(KeyId::from_uuid(uuid::Uuid::new_v4()))
        .await;
    assert!(matches!(missing, Err(DbError::NotFound(_))), "{missing:?}");
}
