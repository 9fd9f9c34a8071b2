//! Bugs the model found, kept as plain tests.

use tenantry_db::testing::TestDatabase;
use tenantry_db::{DbError, Isolation, KeyId, NewKeyOptions, NewResource, NewTenant, TenantStatus};

use crate::checks::ctx;
use crate::PERMS;

/// A root tenant named `name`, made in the operator's transaction `admin`.
async fn root(admin: &mut tenantry_db::AdminScope, name: &str) -> tenantry_db::TenantId {
    admin
        .create_tenant(&NewTenant {
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .tenant_id
}

/// Found by this model: `key_permissions` of a key outside the caller's
/// subtree (or of no key at all) panicked on the SQL function's NULL instead of
/// answering not found.
#[tokio::test]
async fn key_permissions_of_a_key_outside_the_subtree_is_not_found_like_a_missing_key() {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let mut admin = db.admin("model").await.unwrap();
    let a = root(&mut admin, "a").await;
    let b = root(&mut admin, "b").await;
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

/// Found by this model: a deleted tenant's tier move is a conflict (it is
/// there, and can no longer change), where the model still expected the
/// not found that the tier move answered before; an unknown tenant stays not
/// found.
#[tokio::test]
async fn a_deleted_tenants_tier_move_is_a_conflict_and_an_unknown_tenants_is_not_found() {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let mut admin = db.admin("model").await.unwrap();
    let a = root(&mut admin, "a").await;
    admin.commit().await.unwrap();
    let mut s = db.tenant(ctx(a)).await.unwrap();
    s.create_resource(&NewResource {
        name: "r".into(),
        data: serde_json::json!({}).into(),
    })
    .await
    .unwrap();
    s.commit().await.unwrap();
    let mut admin = db.admin("model").await.unwrap();
    admin.set_status(a, TenantStatus::Deleted).await.unwrap();
    admin.commit().await.unwrap();

    for isolation in [Isolation::Shared, Isolation::Schema] {
        let mut admin = db.admin("model").await.unwrap();
        let moved = admin.set_isolation(a, isolation).await;
        assert!(matches!(moved, Err(DbError::Conflict(_))), "{moved:?}");
    }
    let mut admin = db.admin("model").await.unwrap();
    let unknown = admin
        .set_isolation(
            tenantry_db::TenantId::from_uuid(uuid::Uuid::new_v4()),
            Isolation::Shared,
        )
        .await;
    assert!(matches!(unknown, Err(DbError::NotFound(_))), "{unknown:?}");
}
