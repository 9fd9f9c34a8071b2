//! Tiers through the library: a schema tenant's resources, hierarchy and
//! sharing across tiers through `Database::tenant` and `in_tenant` scopes, and
//! a pool whose cached route went stale when another pool moved the tenant.

use std::time::Duration;

use serde_json::json;
use tenantry_db::{
    testing::TestDatabase, Database, DbError, Isolation, NewResource, NewTenant, OwnerFilter,
    ResourceId, ResourceUpdate, TenantContext, TenantId,
};
use tokio_postgres::Client;

use super::{names, resource};

/// A tenant created by the operator in `isolation`.
async fn tenant_in(
    db: &Database,
    name: &str,
    parent: Option<TenantId>,
    isolation: Isolation,
) -> TenantId {
    let mut admin = db.admin("admin").await.unwrap();
    let t = admin
        .create_tenant(&NewTenant {
            name: name.into(),
            parent_id: parent,
            isolation,
            ..Default::default()
        })
        .await
        .unwrap();
    admin.commit().await.unwrap();
    t.tenant_id
}

/// The table holding resource `id` (`tableoid` as a superuser sees it), or
/// `None` when no table holds it.
async fn table_of(su: &Client, id: ResourceId) -> Option<String> {
    su.query_opt(
        "SELECT tableoid::regclass::text FROM tenantry.resources WHERE id = $1",
        &[id.as_uuid()],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}

/// The table `t`'s rows belong in now: its schema's, or the pooled one.
async fn home_of(su: &Client, t: TenantId) -> String {
    su.query_one(
        "SELECT CASE WHEN isolation = 'schema' THEN schema_name || '.resources'
                     ELSE 'tenantry.resources' END
         FROM tenantry.tenants WHERE tenant_id = $1",
        &[t.as_uuid()],
    )
    .await
    .unwrap()
    .get(0)
}

/// Every table holding a row of `t`, with how many.
async fn places_of(su: &Client, t: TenantId) -> Vec<(String, i64)> {
    su.query(
        "SELECT tableoid::regclass::text, count(*) FROM tenantry.resources
         WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1",
        &[t.as_uuid()],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Updating and deleting `id` in `s` are both not found.
async fn cannot_change(s: &mut tenantry_db::TenantScope, id: ResourceId) {
    assert!(matches!(
        s.update_resource(id, &renamed("pwned")).await,
        Err(DbError::NotFound(_))
    ));
    assert!(matches!(
        s.delete_resource(id).await,
        Err(DbError::NotFound(_))
    ));
}

fn named(name: &str) -> NewResource {
    NewResource {
        name: name.into(),
        data: json!({ "n": name }).into(),
    }
}

fn renamed(name: &str) -> ResourceUpdate {
    ResourceUpdate {
        name: Some(name.into()),
        data: None,
    }
}

#[tokio::test]
async fn a_schema_tenants_resources_live_in_its_own_table_and_are_a_missing_id_for_a_pooled_tenant_and_back(
) {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let su = tdb.superuser_client().await;
    let silo = tenant_in(&db, "silo", None, Isolation::Schema).await;
    let pooled = tenant_in(&db, "pooled", None, Isolation::Shared).await;
    let silo_home = home_of(&su, silo).await;
    assert_ne!(silo_home, "tenantry.resources");

    // Create (retrying scope), read, update, list and delete (plain scopes).
    let ctx = TenantContext::new(silo);
    let r = db
        .in_tenant(&ctx, &named("s-doc"), |s, new| {
            Box::pin(s.create_resource(new))
        })
        .await
        .unwrap();
    assert_eq!(
        table_of(&su, r.id).await.as_deref(),
        Some(silo_home.as_str())
    );
    let p = resource(&db, pooled, "p-doc").await;
    assert_eq!(
        table_of(&su, p.id).await.as_deref(),
        Some("tenantry.resources")
    );
    let mut s = db.tenant(ctx.clone()).await.unwrap();
    assert_eq!(s.get_resource(r.id).await.unwrap().name, "s-doc");
    let updated = s.update_resource(r.id, &renamed("s-doc-2")).await.unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.created_at),
        ("s-doc-2", r.created_at)
    );
    s.commit().await.unwrap();
    assert_eq!(
        table_of(&su, r.id).await.as_deref(),
        Some(silo_home.as_str())
    );
    assert_eq!(names(&db, silo, OwnerFilter::Own).await, ["s-doc-2"]);
    assert_eq!(names(&db, silo, OwnerFilter::All).await, ["s-doc-2"]);

    // Each tier's resource is a missing id for the other tier's tenant.
    for (me, foreign) in [(pooled, r.id), (silo, p.id)] {
        let missing = ResourceId::from_uuid(uuid::Uuid::new_v4());
        let mut s = db.tenant(TenantContext::new(me)).await.unwrap();
        for id in [foreign, missing] {
            assert!(matches!(
                s.get_resource(id).await,
                Err(DbError::NotFound(_))
            ));
            cannot_change(&mut s, id).await;
        }
        s.commit().await.unwrap();
    }
    assert_eq!(names(&db, pooled, OwnerFilter::All).await, ["p-doc"]);

    let mut s = db.tenant(ctx).await.unwrap();
    s.delete_resource(r.id).await.unwrap();
    s.commit().await.unwrap();
    assert_eq!(table_of(&su, r.id).await, None);
    assert_eq!(
        table_of(&su, p.id).await.as_deref(),
        Some("tenantry.resources")
    );
}

#[tokio::test]
async fn hierarchy_across_tiers_shows_the_parent_its_children_and_never_a_child_its_parent_or_sibling(
) {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let su = tdb.superuser_client().await;
    for parent_tier in [Isolation::Shared, Isolation::Schema] {
        let other = match parent_tier {
            Isolation::Shared => Isolation::Schema,
            Isolation::Schema => Isolation::Shared,
        };
        let parent = tenant_in(&db, "parent", None, parent_tier).await;
        // One child in the other tier, one in the parent's.
        let across = tenant_in(&db, "across", Some(parent), other).await;
        let beside = tenant_in(&db, "beside", Some(parent), parent_tier).await;
        resource(&db, parent, "parent-doc").await;
        let ra = resource(&db, across, "across-doc").await;
        resource(&db, beside, "beside-doc").await;
        let step = format!("parent {parent_tier:?}");
        assert_eq!(
            names(&db, parent, OwnerFilter::All).await,
            ["across-doc", "beside-doc", "parent-doc"],
            "{step}"
        );
        assert_eq!(
            names(&db, parent, OwnerFilter::Own).await,
            ["parent-doc"],
            "{step}"
        );
        assert_eq!(
            names(&db, parent, OwnerFilter::Descendants).await,
            ["across-doc", "beside-doc"],
            "{step}"
        );
        assert!(names(&db, parent, OwnerFilter::Shared).await.is_empty());
        for (child, doc) in [(across, "across-doc"), (beside, "beside-doc")] {
            for filter in [OwnerFilter::All, OwnerFilter::Own] {
                assert_eq!(names(&db, child, filter).await, [doc], "{step}");
            }
            for filter in [OwnerFilter::Descendants, OwnerFilter::Shared] {
                assert!(names(&db, child, filter).await.is_empty(), "{step}");
            }
        }
        // The parent edits its child's resource: it stays in the child's table.
        let mut s = db.tenant(TenantContext::new(parent)).await.unwrap();
        s.update_resource(ra.id, &renamed("across-doc"))
            .await
            .unwrap();
        s.commit().await.unwrap();
        assert_eq!(table_of(&su, ra.id).await, Some(home_of(&su, across).await));
        // The sibling neither reads nor changes it.
        let mut s = db.tenant(TenantContext::new(beside)).await.unwrap();
        assert!(matches!(
            s.get_resource(ra.id).await,
            Err(DbError::NotFound(_))
        ));
        assert!(matches!(
            s.update_resource(ra.id, &renamed("pwned")).await,
            Err(DbError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn shares_between_tiers_are_read_only_listed_as_shared_and_end_with_revocation() {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let silo = tenant_in(&db, "silo", None, Isolation::Schema).await;
    let pooled = tenant_in(&db, "pooled", None, Isolation::Shared).await;
    let rs = resource(&db, silo, "s-doc").await;
    let rp = resource(&db, pooled, "p-doc").await;
    for (owner, r, target) in [(silo, rs.id, pooled), (pooled, rp.id, silo)] {
        let mut s = db.tenant(TenantContext::new(owner)).await.unwrap();
        s.share_resource(r, target).await.unwrap();
        s.commit().await.unwrap();
    }
    assert_eq!(names(&db, pooled, OwnerFilter::Shared).await, ["s-doc"]);
    assert_eq!(names(&db, silo, OwnerFilter::Shared).await, ["p-doc"]);
    assert_eq!(
        names(&db, pooled, OwnerFilter::All).await,
        ["p-doc", "s-doc"]
    );
    assert_eq!(names(&db, silo, OwnerFilter::All).await, ["p-doc", "s-doc"]);
    assert_eq!(names(&db, pooled, OwnerFilter::Own).await, ["p-doc"]);
    for (me, theirs) in [(pooled, rs.id), (silo, rp.id)] {
        let mut s = db.tenant(TenantContext::new(me)).await.unwrap();
        assert!(s.get_resource(theirs).await.is_ok());
        cannot_change(&mut s, theirs).await;
    }
    let mut s = db.tenant(TenantContext::new(silo)).await.unwrap();
    s.unshare_resource(rs.id, pooled).await.unwrap();
    s.commit().await.unwrap();
    assert!(names(&db, pooled, OwnerFilter::Shared).await.is_empty());
    assert_eq!(names(&db, silo, OwnerFilter::Shared).await, ["p-doc"]);
}

/// One answer of the stale handle, as the report spells it.
fn answer<T>(result: &Result<T, DbError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(DbError::NotFound(_)) => "NotFound".into(),
        Err(DbError::Contention(_)) => "Contention".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// A pool whose cached context parts stay for a minute, so that the
/// window in which its route is stale spans the whole test.
fn long_cache(tdb: &TestDatabase) -> Database {
    let mut config = tdb.database_config();
    config.context_cache_ttl = Duration::from_secs(60);
    Database::connect(&config).unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Get,
    Update,
    Delete,
}

/// One attempt at `op` on the resource `id` in scope `s`: the resource it
/// created, if any.
fn attempt<'s>(
    s: &'s mut tenantry_db::TenantScope,
    &(op, id): &'s (Op, ResourceId),
) -> tenantry_db::ScopeFuture<'s, Option<ResourceId>> {
    Box::pin(async move {
        match op {
            Op::Create => s
                .create_resource(&named("stale-create"))
                .await
                .map(|r| Some(r.id)),
            Op::Get => s.get_resource(id).await.map(|_| None),
            Op::Update => s
                .update_resource(id, &renamed("stale-update"))
                .await
                .map(|_| None),
            Op::Delete => s.delete_resource(id).await.map(|_| None),
        }
    })
}

/// `op` on `existing` of `t` through `db`, in one transaction: in a scope of
/// its own (no retry), or through `in_tenant` (which retries contention).
/// Its answer, and the resource it acknowledged creating.
async fn run(
    db: &Database,
    t: TenantId,
    op: Op,
    existing: ResourceId,
    retrying: bool,
) -> (String, Option<ResourceId>) {
    let ctx = TenantContext::new(t);
    let args = (op, existing);
    let result = if retrying {
        db.in_tenant(&ctx, &args, attempt).await
    } else {
        let mut s = db.tenant(ctx).await.unwrap();
        match attempt(&mut s, &args).await {
            Ok(created) => s.commit().await.map(|_| created),
            Err(e) => Err(e),
        }
    };
    (answer(&result), result.ok().flatten())
}

#[tokio::test]
async fn a_pool_whose_route_went_stale_when_another_pool_moved_the_tenant_never_writes_outside_its_tier(
) {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let stale = long_cache(&tdb);
    let mover = tdb.database();
    let mut observed = Vec::new();
    for (from, to) in [
        (Isolation::Shared, Isolation::Schema),
        (Isolation::Schema, Isolation::Shared),
    ] {
        for retrying in [false, true] {
            for op in [Op::Create, Op::Get, Op::Update, Op::Delete] {
                let t = tenant_in(&mover, &format!("{op:?}"), None, from).await;
                let keep = resource(&mover, t, "keep").await;
                let target = resource(&mover, t, "target").await;
                // One request caches the tenant's part (its route) in `stale`.
                let mut s = stale.tenant(TenantContext::new(t)).await.unwrap();
                assert_eq!(s.get_resource(keep.id).await.unwrap().name, "keep");
                s.commit().await.unwrap();
                // Another pool moves it: `stale` hears nothing.
                let mut admin = mover.admin("mover").await.unwrap();
                admin.set_isolation(t, to).await.unwrap();
                admin.commit().await.unwrap();
                let home = home_of(&su, t).await;

                let (got, created) = run(&stale, t, op, target.id, retrying).await;
                let scope = if retrying { "in_tenant" } else { "tenant()" };
                let step = format!("{from:?} -> {to:?}, {scope} {op:?}: {got}");
                // Right answers, or a stale route's contention (in_tenant runs
                // the request again); never "not found" for a row that is
                // there (the route is asked about after a read that found
                // nothing, or refused at a write).
                assert!(got == "ok" || (!retrying && got == "Contention"), "{step}");
                // Every acknowledged write is in the tenant's table now,
                // exactly once, and nothing of the tenant is anywhere else.
                for id in [Some(keep.id), created].into_iter().flatten() {
                    assert_eq!(table_of(&su, id).await, Some(home.clone()), "{step}");
                }
                let target_now = table_of(&su, target.id).await;
                match (op, got.as_str()) {
                    (Op::Delete, "ok") => assert_eq!(target_now, None, "{step}"),
                    _ => assert_eq!(target_now, Some(home.clone()), "{step}"),
                }
                if target_now.is_some() {
                    let name: String = su
                        .query_one(
                            "SELECT name FROM tenantry.resources WHERE id = $1",
                            &[target.id.as_uuid()],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    let updated = matches!(op, Op::Update) && got == "ok";
                    assert_eq!(name == "stale-update", updated, "{step}");
                }
                let places = places_of(&su, t).await;
                assert_eq!(places.len(), 1, "{step}: {places:?}");
                assert_eq!(places[0].0, home, "{step}");
                // The next request through the stale pool answers right.
                let mut s = stale.tenant(TenantContext::new(t)).await.unwrap();
                let next = answer(&s.get_resource(keep.id).await);
                observed.push(format!("{step}; next get {next}"));
            }
        }
    }
    eprintln!("stale route answers: {observed:#?}");
}

/// Two callers moving one tenant to the same tier at once (two requests, a
/// CLI run resumed while another finishes): both end well, whichever
/// finishes the move, and the tenant is there with every row once. One of
/// them answered 404 "not being moved" before (outside load review).
#[tokio::test]
async fn two_callers_moving_a_tenant_to_the_same_tier_at_once_both_end_well() {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let su = tdb.superuser_client().await;
    for round in 0..4 {
        let t = tenant_in(&db, &format!("racing {round}"), None, Isolation::Shared).await;
        for i in 0..30 {
            resource(&db, t, &format!("r{i}")).await;
        }
        for to in [Isolation::Schema, Isolation::Shared] {
            let (first, second) = tokio::join!(
                db.move_tenant("one", t, to, 7, |_| {}),
                db.move_tenant("two", t, to, 7, |_| {}),
            );
            let (first, second) = (first.unwrap(), second.unwrap());
            assert_eq!((first.isolation, second.isolation), (to, to));
            let places = places_of(&su, t).await;
            assert_eq!(places.len(), 1, "{places:?}");
            assert_eq!(places[0].1, 30, "{places:?}");
            assert_eq!(places[0].0, home_of(&su, t).await);
        }
    }
}
