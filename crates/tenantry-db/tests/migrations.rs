//! Migration runner: applying every migration to an empty database once and in order, concurrent runs, and refusing edited or unknown migrations (through `migrate` and `check`).

use tenantry_db::{
    migrate::{self, MigrateError},
    testing::TestDatabase,
};
use tokio_postgres::{Client, NoTls};

/// The runner's advisory lock key ("tenantry").
const LOCK_KEY: i64 = 0x7465_6e61_6e74_7279;

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Creates an empty database (no tenantry schema) on the test server and returns its superuser connection string.
async fn empty_database(tdb: &TestDatabase) -> String {
    let name = format!("empty_{}", uuid::Uuid::new_v4().simple());
    tdb.superuser_client()
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating an empty database");
    // The test database's name is a unique uuid-based word: replacing it swaps the dbname.
    let url = tdb.superuser_url().replace(tdb.name(), &name);
    assert!(url.contains(&name), "{url}");
    url
}

async fn recorded(client: &Client) -> Vec<(i32, String, Vec<u8>, String)> {
    client
        .query(
            "SELECT version, name, checksum, applied_by FROM tenantry.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn versions(applied: &[migrate::Migration]) -> Vec<i32> {
    applied.iter().map(|m| m.version).collect()
}

#[tokio::test]
async fn migrating_an_empty_database_applies_every_migration_in_order_and_a_second_run_applies_nothing(
) {
    let tdb = TestDatabase::new().await;
    let url = empty_database(&tdb).await;
    let mut client = connect(&url).await;
    let all = migrate::migrations();

    let applied = migrate::migrate(&mut client).await.expect("first run");
    assert_eq!(versions(&applied), versions(all));

    let session_user: String = client
        .query_one("SELECT session_user::text", &[])
        .await
        .unwrap()
        .get(0);
    let rows = recorded(&client).await;
    assert_eq!(rows.len(), all.len());
    for ((version, name, checksum, applied_by), m) in rows.iter().zip(all) {
        assert_eq!((*version, name.as_str()), (m.version, m.name));
        assert_eq!(checksum, &m.checksum(), "checksum of migration {version}");
        assert_eq!(checksum.len(), 32, "SHA-256 of migration {version}");
        assert_eq!(applied_by, &session_user);
    }
    // Applied in order: each row committed no earlier than the one before it.
    let in_order: bool = client
        .query_one(
            "SELECT bool_and(applied_at >= prev) FROM (
                 SELECT applied_at, lag(applied_at, 1, '-infinity') OVER (ORDER BY version) AS prev
                 FROM tenantry.schema_migrations) s",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(in_order, "migrations were not applied in version order");

    let again = migrate::migrate(&mut client).await.expect("second run");
    assert!(
        again.is_empty(),
        "second run applied {:?}",
        versions(&again)
    );
    assert_eq!(recorded(&client).await, rows);
    migrate::check(&client).await.expect("up to date");
}

#[tokio::test]
async fn two_concurrent_migrations_of_an_empty_database_both_succeed_and_apply_each_migration_once()
{
    let tdb = TestDatabase::new().await;
    let url = empty_database(&tdb).await;
    let mut first = connect(&url).await;
    let mut second = connect(&url).await;

    let (a, b) = tokio::join!(migrate::migrate(&mut first), migrate::migrate(&mut second));
    let a = a.expect("first concurrent run");
    let b = b.expect("second concurrent run");

    let mut applied = versions(&a);
    applied.extend(versions(&b));
    applied.sort();
    assert_eq!(
        applied,
        versions(migrate::migrations()),
        "each migration exactly once (first applied {:?}, second {:?})",
        versions(&a),
        versions(&b)
    );
    assert_eq!(recorded(&first).await.len(), migrate::migrations().len());
    migrate::check(&second).await.expect("up to date");
}

#[tokio::test]
async fn an_edited_migration_that_has_landed_is_refused_by_migrate_and_check() {
    let tdb = TestDatabase::new().await;
    let mut client = tdb.superuser_client().await;
    client
        .execute(
            "UPDATE tenantry.schema_migrations SET checksum = '\\x00' WHERE version = 1",
            &[],
        )
        .await
        .unwrap();

    let err = migrate::migrate(&mut client).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::Edited { version: 1, name } if name == "roles_and_context"),
        "{err:?}"
    );
    let err = migrate::check(&client).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::Edited { version: 1, .. }),
        "{err:?}"
    );
    assert_eq!(
        recorded(&client).await.len(),
        migrate::migrations().len(),
        "nothing was recorded or removed"
    );

    // The refused run released its lock: another session can take it at once.
    let other = tdb.superuser_client().await;
    let locked: bool = other
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .unwrap()
        .get(0);
    assert!(locked, "the refused migration kept the advisory lock");
}

#[tokio::test]
async fn a_database_with_an_unknown_newer_migration_is_refused_by_migrate_and_check() {
    let tdb = TestDatabase::new().await;
    let mut client = tdb.superuser_client().await;
    client
        .execute(
            "INSERT INTO tenantry.schema_migrations (version, name, checksum)
             VALUES (9999, 'from_the_future', '\\x00')",
            &[],
        )
        .await
        .unwrap();

    let err = migrate::migrate(&mut client).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::Unknown { version: 9999, name } if name == "from_the_future"),
        "{err:?}"
    );
    let err = migrate::check(&client).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::Unknown { version: 9999, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn check_accepts_an_up_to_date_database_and_reports_an_empty_one_as_pending() {
    let tdb = TestDatabase::new().await;
    migrate::check(&tdb.superuser_client().await)
        .await
        .expect("a migrated test database is up to date");

    let empty = connect(&empty_database(&tdb).await).await;
    let err = migrate::check(&empty).await.unwrap_err();
    assert!(
        matches!(err, MigrateError::Pending { pending } if pending == migrate::migrations().len()),
        "{err:?}"
    );
    // check changes nothing: the empty database stays empty.
    let has_schema: bool = empty
        .query_one("SELECT to_regnamespace('tenantry') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!has_schema, "check created the tenantry schema");
}
