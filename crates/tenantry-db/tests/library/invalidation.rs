//! The invalidation feed through the library: a listener on its own connection publishes typed invalidations of what another pool changed, says `All` when its connection is killed, and listens again.

use std::{collections::HashSet, time::Duration};

use tenantry_db::{
    testing::TestDatabase, Invalidation, Invalidations, ListenOptions, ListenTo, Subscription,
    TenantContext, TenantId,
};

use super::tenant;

/// The next invalidation (at most 30 s).
async fn next(feed: &mut Subscription) -> Invalidation {
    tokio::time::timeout(Duration::from_secs(30), feed.recv())
        .await
        .expect("an invalidation within 30 s")
        .expect("the feed is open")
}

/// Invalidations of the transactions committed before the call: received
/// until a marker sent then (a tenant no one has) comes back, PostgreSQL
/// delivering notifications in commit order. A quiet 300 ms was the bound:
/// a loaded machine delivered later, and the late one went to the next step.
async fn drain(feed: &mut Subscription, tdb: &TestDatabase) -> HashSet<Invalidation> {
    let marker = Invalidation::tenant(TenantId::from_uuid(uuid::Uuid::new_v4()));
    tdb.superuser_client()
        .await
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&tenantry_db::invalidation::CHANNEL, &marker.payload()],
        )
        .await
        .unwrap();
    let mut got = HashSet::new();
    loop {
        let i = next(feed).await;
        if i == marker {
            return got;
        }
        got.insert(i);
    }
}

/// Suspends `t` through the operator's library call (it notifies `tenant:`).
async fn suspend(db: &tenantry_db::Database, t: TenantId) {
    let mut admin = db.admin("test").await.unwrap();
    admin
        .set_status(t, tenantry_db::TenantStatus::Suspended)
        .await
        .unwrap();
    admin.commit().await.unwrap();
}

async fn listening(feed: &Invalidations) -> bool {
    for _ in 0..500 {
        if feed.is_listening() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn the_listener_publishes_a_move_made_through_another_pool_as_the_moved_tenants_and_their_ancestors(
) {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let feed = Invalidations::start(&db, &ListenTo::Database, ListenOptions::default());
    let mut sub = feed.subscribe();
    assert!(listening(&feed).await, "listening within 5 s");
    assert_eq!(
        next(&mut sub).await,
        Invalidation::All,
        "anything before LISTEN"
    );

    let other = tdb.database();
    let old_root = tenant(&other, "old", None).await;
    let new_root = tenant(&other, "new", None).await;
    assert_eq!(
        drain(&mut sub, &tdb).await,
        HashSet::new(),
        "a root tenant's creation is silent"
    );
    let moved = tenant(&other, "moved", Some(old_root)).await;
    assert_eq!(
        drain(&mut sub, &tdb).await,
        [Invalidation::tenant(old_root)].into(),
        "a child's creation names its parent"
    );

    let mut admin = other.admin("test").await.unwrap();
    admin.set_parent(moved, Some(new_root)).await.unwrap();
    admin.commit().await.unwrap();
    let expected: HashSet<Invalidation> = [old_root, new_root, moved]
        .into_iter()
        .map(Invalidation::tenant)
        .collect();
    assert_eq!(drain(&mut sub, &tdb).await, expected);
    let stranger = TenantId::from_uuid(uuid::Uuid::new_v4());
    assert!(!expected.contains(&Invalidation::tenant(stranger)));
}

#[tokio::test]
async fn a_child_created_through_another_pool_names_every_ancestor_and_nobody_else() {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let feed = Invalidations::start(&db, &ListenTo::Database, ListenOptions::default());
    let mut sub = feed.subscribe();
    assert!(listening(&feed).await, "listening within 5 s");

    let other = tdb.database();
    let root = tenant(&other, "root", None).await;
    let mid = tenant(&other, "mid", Some(root)).await;
    let bystander = tenant(&other, "bystander", None).await;
    drain(&mut sub, &tdb).await;
    // Their visible subtree gains the new tenant: servers that cached their
    // context must read it again to see it.
    let leaf = tenant(&other, "leaf", Some(mid)).await;
    let expected: HashSet<Invalidation> =
        [root, mid].into_iter().map(Invalidation::tenant).collect();
    let got = drain(&mut sub, &tdb).await;
    assert_eq!(got, expected, "an operator's creation");
    assert!(!got.contains(&Invalidation::tenant(bystander)));

    // The same through the tenant itself (a tenant key's child).
    let mut scope = other.tenant(TenantContext::new(leaf)).await.unwrap();
    scope
        .create_child_tenant("below leaf", tenantry_db::Isolation::Shared, None)
        .await
        .unwrap();
    scope.commit().await.unwrap();
    let expected: HashSet<Invalidation> = [root, mid, leaf]
        .into_iter()
        .map(Invalidation::tenant)
        .collect();
    assert_eq!(
        drain(&mut sub, &tdb).await,
        expected,
        "a tenant's own child"
    );
}

#[tokio::test]
async fn a_tier_move_started_and_aborted_through_another_pool_names_the_moving_tenant() {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let feed = Invalidations::start(&db, &ListenTo::Database, ListenOptions::default());
    let mut sub = feed.subscribe();
    assert!(listening(&feed).await, "listening within 5 s");
    drain(&mut sub, &tdb).await;

    let other = tdb.database();
    let mover = tenant(&other, "mover", None).await;
    let bystander = tenant(&other, "bystander", None).await;
    drain(&mut sub, &tdb).await;
    // The move changes the tenant's context (while it moves back, it reads
    // both tables): servers that cached it must hear of it, and only of it.
    let mut admin = other.admin("test").await.unwrap();
    admin
        .tier_move_start(mover, tenantry_db::Isolation::Schema)
        .await
        .unwrap();
    admin.commit().await.unwrap();
    let expected: HashSet<Invalidation> = [Invalidation::tenant(mover)].into();
    assert_eq!(drain(&mut sub, &tdb).await, expected, "the start");
    let mut admin = other.admin("test").await.unwrap();
    assert!(admin.tier_move_abort(mover).await.unwrap());
    admin.commit().await.unwrap();
    let got = drain(&mut sub, &tdb).await;
    assert_eq!(got, expected, "the abort");
    assert!(!got.contains(&Invalidation::tenant(bystander)));
}

#[tokio::test]
async fn a_killed_listener_connection_publishes_all_and_listens_again() {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let feed = Invalidations::start(&db, &ListenTo::Database, ListenOptions::default());
    let mut sub = feed.subscribe();
    assert!(listening(&feed).await);
    assert_eq!(feed.sessions(), 1);
    drain(&mut sub, &tdb).await;

    let killed = tdb.kill_invalidation_listeners().await;
    assert_eq!(killed, 1);
    assert_eq!(next(&mut sub).await, Invalidation::All, "on the loss");
    assert_eq!(
        next(&mut sub).await,
        Invalidation::All,
        "on listening again"
    );
    assert!(feed.is_listening());
    assert_eq!(feed.sessions(), 2);

    // Listening for real: a suspension arrives.
    let t = tenant(&db, "t", None).await;
    suspend(&db, t).await;
    assert_eq!(next(&mut sub).await, Invalidation::tenant(t));

    // The last handle dropped: the listener stops and subscribers hear the end.
    drop(feed);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap(),
        None
    );
}

/// Any session may NOTIFY the channel (found by an audit as the server's
/// login: `SELECT pg_notify('tenantry_invalidate', 'all')` in a loop kept
/// every server's caches empty). A flood of `all`s is published as one at
/// once and one when 250 ms are up, never none; what names one tenant still
/// arrives on its own.
#[tokio::test]
async fn a_flood_of_forged_alls_is_published_as_two_and_named_invalidations_still_arrive() {
    let tdb = TestDatabase::new().await;
    let db = tdb.database();
    let feed = Invalidations::start(&db, &ListenTo::Database, ListenOptions::default());
    let mut sub = feed.subscribe();
    assert!(listening(&feed).await);
    drain(&mut sub, &tdb).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (attacker, connection) = tdb
        .server_config()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    attacker
        .batch_execute(
            "SELECT pg_notify('tenantry_invalidate', 'all') FROM generate_series(1, 1);
             SELECT pg_notify('tenantry_invalidate', 'all' || i) FROM generate_series(1, 500) i;",
        )
        .await
        .unwrap();
    // The first at once, the rest as one when 250 ms were up: two, or a few
    // more if a loaded machine spread their delivery over several such
    // windows (a fixed second of counting saw one when the first came late),
    // never one per notification.
    let mut alls = 0;
    let mut quiet_since = std::time::Instant::now();
    while alls < 2 || quiet_since.elapsed() < Duration::from_secs(1) {
        match tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            Ok(Some(Invalidation::All)) => {
                alls += 1;
                quiet_since = std::time::Instant::now();
            }
            Ok(other) => panic!("only alls were sent: {other:?}"),
            Err(_) => assert!(
                alls >= 2 || quiet_since.elapsed() < Duration::from_secs(30),
                "{alls} alls published within 30 s"
            ),
        }
    }
    assert!(
        (2..=10).contains(&alls),
        "{alls} alls published for 501 sent"
    );

    let t = tenant(&db, "t", None).await;
    suspend(&db, t).await;
    assert_eq!(next(&mut sub).await, Invalidation::tenant(t));
}
