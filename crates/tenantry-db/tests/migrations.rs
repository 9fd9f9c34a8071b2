//! Migration runner: applying every migration to an empty database once and in order, concurrent runs, refusing edited or unknown migrations (through `migrate` and `check`), and the repeatable definitions: an upgraded database and a fresh one end with identical catalogs.

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

/// A migration role that may not create tenantry's roles (no superuser, no
/// CREATEROLE, though it owns the database) is refused, in tenantry's words
/// since a review of managed PostgreSQL, before the run makes anything: no
/// `tenantry` schema, no bookkeeping table, so that a run by the right role
/// later starts from nothing.
#[tokio::test]
async fn a_migration_refused_partway_leaves_the_database_without_a_tenantry_schema() {
    let tdb = TestDatabase::new().await;
    let (login, mut config) = tdb.login_role("migrator", &[]).await;
    let name = tdb.scratch_database(&login).await;
    config.dbname(&name);
    let (mut client, connection) = config
        .connect(NoTls)
        .await
        .expect("connecting as the migrator");
    tokio::spawn(async move {
        let _ = connection.await;
    });

    let err = migrate::migrate(&mut client)
        .await
        .expect_err("a role that cannot create roles cannot install tenantry");
    assert!(
        matches!(&err, MigrateError::Refused(m) if m.contains("run it as a superuser")),
        "{err:?}"
    );
    assert!(
        !tdb.has_tenantry_schema(&name).await,
        "the refused run left a tenantry schema: {err}"
    );
    drop(client);
    tdb.drop_scratch(&name, &login).await;
}

/// A migration file that fails partway through a first install (here 0002,
/// on a table of the same name made beforehand) leaves nothing of the run:
/// no bookkeeping table, no object of 0001, the table as it was.
#[tokio::test]
async fn a_migration_file_failing_midway_through_a_first_install_leaves_nothing_of_the_run() {
    let tdb = TestDatabase::new().await;
    let url = empty_database(&tdb).await;
    let mut client = connect(&url).await;
    client
        .batch_execute("CREATE SCHEMA tenantry; CREATE TABLE tenantry.tenants (mine int)")
        .await
        .unwrap();
    let err = migrate::migrate(&mut client).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::Failed { version: 2, .. }),
        "{err:?}"
    );
    let left: Vec<String> = client
        .query(
            "SELECT c.relname::text || '(' || string_agg(a.attname::text, ',' ORDER BY a.attnum) || ')'
             FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
             WHERE c.relnamespace = 'tenantry'::regnamespace AND c.relkind = 'r'
             GROUP BY c.relname UNION ALL
             SELECT p.proname::text FROM pg_proc p WHERE p.pronamespace = 'tenantry'::regnamespace
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["tenants(mine)"]);
}

/// A context key retired before migration 0040 left no trace: on an
/// upgrade, the next key's id starts 1000 past the largest present, so it
/// cannot be the retired one's; a new install counts on from 1.
#[tokio::test]
async fn after_the_upgrade_to_0040_a_new_context_key_never_takes_an_id_retired_before_it() {
    let tdb = TestDatabase::new().await;
    let url = empty_database(&tdb).await;
    let mut client = connect(&url).await;
    migrate::migrate_to_version(&mut client, 39).await.unwrap();
    // Key 2 added and retired under the old numbering.
    client
        .batch_execute(
            "INSERT INTO tenantry.context_keys (key_id, secret, inner_pad, outer_pad)
             VALUES (2, decode(repeat('01', 32), 'hex'), decode(repeat('02', 64), 'hex'), decode(repeat('03', 64), 'hex'));
             DELETE FROM tenantry.context_keys WHERE key_id = 2;",
        )
        .await
        .unwrap();
    migrate::migrate(&mut client).await.unwrap();
    let next: i32 = client
        .query_one("SELECT tenantry.add_context_key()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(next > 1000, "{next}");

    let fresh = connect(&empty_database(&tdb).await).await;
    let mut fresh = fresh;
    migrate::migrate(&mut fresh).await.unwrap();
    let next: i32 = fresh
        .query_one("SELECT tenantry.add_context_key()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 2, "a new install counts on from its first key");
}

/// Every fact of schema tenantry's catalog (functions with their bodies, ACLs
/// and comments; relations, columns, constraints, indexes, triggers, policies,
/// views), one line each.
async fn catalog(client: &Client) -> Vec<String> {
    client
        .query(include_str!("sql/catalog_snapshot.sql"), &[])
        .await
        .expect("catalog snapshot")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every fact of one schema tenant's schema (as [`catalog`] for schema
/// tenantry: ACLs, comments, relations, constraints, indexes, policies, its
/// partition bound), with its schema name written `<schema>` and its id `<id>`,
/// so that two tenants' schemas compare.
async fn tenant_schema(client: &Client, tenant: uuid::Uuid) -> Vec<String> {
    let schema: String = client
        .query_one(
            "SELECT schema_name FROM tenantry.tenants WHERE tenant_id = $1 AND isolation = 'schema'",
            &[&tenant],
        )
        .await
        .expect("a schema tenant")
        .get(0);
    let lines: Vec<String> = client
        .query(
            "SELECT line FROM (
                 SELECT 'schema ' || n.nspname || ' owner=' || n.nspowner::regrole::text
                        || ' acl=' || coalesce(n.nspacl::text, '-')
                        || ' comment=' || coalesce(obj_description(n.oid, 'pg_namespace'), '-') AS line
                 FROM pg_namespace n WHERE n.nspname = $1
                 UNION ALL
                 SELECT 'relation ' || c.relname || ' kind=' || c.relkind::text
                        || ' rls=' || c.relrowsecurity || ' force=' || c.relforcerowsecurity
                        || ' acl=' || coalesce(c.relacl::text, '-')
                        || ' owner=' || c.relowner::regrole::text
                        || ' bound=' || coalesce(pg_get_expr(c.relpartbound, c.oid), '-')
                        || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-')
                 FROM pg_class c WHERE c.relnamespace = $1::regnamespace
                 UNION ALL
                 SELECT 'column ' || c.relname || '.' || a.attname || ' acl=' || coalesce(a.attacl::text, '-')
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                 WHERE c.relnamespace = $1::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
                 UNION ALL
                 SELECT 'constraint ' || c.conname || ' ' || pg_get_constraintdef(c.oid)
                 FROM pg_constraint c WHERE c.connamespace = $1::regnamespace
                 UNION ALL
                 SELECT 'index ' || pg_get_indexdef(i.indexrelid)
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 WHERE c.relnamespace = $1::regnamespace
                 UNION ALL
                 SELECT 'policy ' || p.polname || ' cmd=' || p.polcmd::text
                        || ' using=' || coalesce(pg_get_expr(p.polqual, p.polrelid), '-')
                        || ' check=' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-')
                        || ' comment=' || coalesce(obj_description(p.oid, 'pg_policy'), '-')
                 FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
                 WHERE c.relnamespace = $1::regnamespace
             ) facts ORDER BY line",
            &[&schema],
        )
        .await
        .expect("tenant schema snapshot")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut lines: Vec<String> = lines
        .iter()
        .map(|l| {
            l.replace(&schema, "<schema>")
                .replace(&tenant.to_string(), "<id>")
                .replace(&tenant.simple().to_string(), "<id>")
        })
        .collect();
    lines.sort();
    lines
}

/// Lines only in `a` and only in `b`, for a readable failure.
fn difference(a: &[String], b: &[String]) -> String {
    let only = |x: &[String], y: &[String]| {
        x.iter()
            .filter(|l| !y.contains(l))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "only in the first:\n{}\n\nonly in the second:\n{}",
        only(a, b),
        only(b, a)
    )
}

#[tokio::test]
async fn a_database_at_0007_upgraded_and_a_fresh_one_end_with_identical_catalogs() {
    let tdb = TestDatabase::new().await;
    let mut fresh = connect(&empty_database(&tdb).await).await;
    migrate::migrate(&mut fresh).await.expect("fresh database");

    // As the last build before migrations/repeatable/ left it: 0001..0007 only.
    let mut old = connect(&empty_database(&tdb).await).await;
    let applied = migrate::migrate_to_version(&mut old, 7)
        .await
        .expect("database at 0007");
    assert_eq!(versions(&applied), (1..=7).collect::<Vec<_>>());
    let has_definitions: bool = old
        .query_one(
            "SELECT to_regclass('tenantry.schema_definitions') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!has_definitions, "0007 predates the definitions table");
    assert!(
        matches!(
            migrate::check(&old).await,
            Err(MigrateError::Pending { .. })
        ),
        "a database at 0007 is behind"
    );

    // Data the upgrade must carry: a tenant already over the quota 0008 starts
    // enforcing, and a schema-isolated tenant whose partition predates it.
    let capped: uuid::Uuid = old
        .query_one(
            "SELECT tenantry.create_tenant('capped', NULL, 'shared', '{\"max_resources\": 2}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let silo: uuid::Uuid = old
        .query_one(
            "SELECT tenantry.create_tenant('silo', NULL, 'schema', '{\"max_resources\": 1}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    old.batch_execute(&format!(
        "INSERT INTO tenantry.resources (tenant_id, name) VALUES
             ('{capped}', 'a'), ('{capped}', 'b'), ('{capped}', 'c'), ('{silo}', 's')"
    ))
    .await
    .unwrap();

    let upgraded = migrate::migrate(&mut old).await.expect("upgrade from 0007");
    assert!(
        versions(&upgraded).iter().all(|v| *v > 7),
        "{:?}",
        versions(&upgraded)
    );
    migrate::check(&old)
        .await
        .expect("upgraded database is current");

    let (a, b) = (catalog(&fresh).await, catalog(&old).await);
    assert!(a.len() > 500, "the snapshot saw {} facts", a.len());
    assert!(a == b, "{}", difference(&a, &b));

    // The schema tenant made before the upgrade (its schema was named after
    // its id) ends exactly like one made after it: a random schema name, and
    // the id nowhere in the catalog.
    let new_silo: uuid::Uuid = fresh
        .query_one("SELECT tenantry.create_tenant('silo', NULL, 'schema')", &[])
        .await
        .unwrap()
        .get(0);
    let (a, b) = (
        tenant_schema(&fresh, new_silo).await,
        tenant_schema(&old, silo).await,
    );
    assert!(a.len() > 10, "the snapshot saw {} facts", a.len());
    assert!(a == b, "{}", difference(&a, &b));
    // Its table inherits the pooled one (0020): no partition bound names it.
    let naming_the_id: Vec<&String> = b.iter().filter(|l| l.contains("<id>")).collect();
    assert!(
        naming_the_id.is_empty(),
        "the id is in the catalog: {naming_the_id:#?}"
    );
    let old_name = format!("tenant_{}", silo.simple());
    let left: i64 = old
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&old_name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the schema named after the id was renamed");

    // The quota counters were filled from the rows already there, and both
    // kinds of tenant are held to them from now on.
    let counters: Vec<(uuid::Uuid, i64)> = old
        .query(
            "SELECT tenant_id, resource_count FROM tenantry.tenant_quota_usage ORDER BY resource_count",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(counters, [(silo, 1), (capped, 3)]);
    let silo_schema = schema_of(&old, silo).await;
    for (t, table) in [
        (capped, "tenantry.resources".to_owned()),
        (silo, format!("{silo_schema}.resources")),
    ] {
        let err = old
            .batch_execute(&format!(
                "BEGIN; SET LOCAL ROLE tenantry_app;
                 SELECT tenantry.set_tenant_context_local('{t}');
                 INSERT INTO {table} (tenant_id, name) VALUES ('{t}', 'over')"
            ))
            .await
            .expect_err("a write past the quota");
        assert_eq!(err.code().map(|c| c.code()), Some("TN429"), "{err}");
        old.batch_execute("ROLLBACK").await.unwrap();
    }
}

#[tokio::test]
async fn applying_the_definitions_again_changes_nothing_and_check_reports_changed_ones() {
    let tdb = TestDatabase::new().await;
    let mut client = tdb.superuser_client().await;
    let before = catalog(&client).await;

    // A definition file that differs from the recorded one: check names it,
    // migrate applies every file again (nothing versioned is pending).
    client
        .execute(
            "UPDATE tenantry.schema_definitions SET checksum = '\\x00' WHERE name = '03_resources.sql'",
            &[],
        )
        .await
        .unwrap();
    let err = migrate::check(&client).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::DefinitionsPending { names } if names == "03_resources.sql"),
        "{err:?}"
    );
    let applied = migrate::migrate(&mut client).await.expect("re-apply");
    assert!(applied.is_empty(), "{:?}", versions(&applied));
    migrate::check(&client).await.expect("current again");
    let after = catalog(&client).await;
    assert!(before == after, "{}", difference(&before, &after));

    // Records of files this build does not have are dropped on the next apply.
    client
        .batch_execute(
            "INSERT INTO tenantry.schema_definitions (name, checksum) VALUES ('99_gone.sql', '\\x00');
             DELETE FROM tenantry.schema_definitions WHERE name = '00_reset.sql';",
        )
        .await
        .unwrap();
    migrate::migrate(&mut client).await.expect("re-apply");
    let names: Vec<String> = client
        .query(
            "SELECT DISTINCT name FROM tenantry.schema_definitions ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<String> = migrate::definitions()
        .iter()
        .map(|d| d.name.to_owned())
        .collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn definitions_newer_than_the_build_are_refused_by_migrate_and_check_and_left_alone() {
    let tdb = TestDatabase::new().await;
    let mut client = tdb.superuser_client().await;
    // A newer build applied another version of 03_resources.sql after ours.
    client
        .execute(
            "INSERT INTO tenantry.schema_definitions (name, checksum, applied_at)
             VALUES ('03_resources.sql', '\\x01', clock_timestamp() + interval '1 minute')",
            &[],
        )
        .await
        .unwrap();
    let before = catalog(&client).await;
    let err = migrate::migrate(&mut client).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::DefinitionsNewer { names } if names == "03_resources.sql"),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade tenantry"), "{err}");
    let err = migrate::check(&client).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::DefinitionsNewer { .. }),
        "{err:?}"
    );
    let after = catalog(&client).await;
    assert!(before == after, "{}", difference(&before, &after));
}

#[tokio::test]
async fn an_upgrade_keeps_role_descriptions_longer_than_the_new_limit_and_holds_new_writes_to_it() {
    let tdb = TestDatabase::new().await;
    let mut old = connect(&empty_database(&tdb).await).await;
    migrate::migrate_to_version(&mut old, 7)
        .await
        .expect("database at 0007");
    // Before 0008 only the HTTP API held descriptions to 500 characters.
    let tenant: uuid::Uuid = old
        .query_one("SELECT tenantry.create_tenant('t')", &[])
        .await
        .unwrap()
        .get(0);
    old.execute(
        "INSERT INTO tenantry.roles (tenant_id, name, description) VALUES ($1, 'long', repeat('d', 600))",
        &[&tenant],
    )
    .await
    .unwrap();

    migrate::migrate(&mut old)
        .await
        .expect("upgrade keeps the row");
    let kept: i32 = old
        .query_one(
            "SELECT length(description) FROM tenantry.roles WHERE name = 'long'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 600);
    let err = old
        .execute(
            "INSERT INTO tenantry.roles (tenant_id, name, description) VALUES ($1, 'new', repeat('d', 501))",
            &[&tenant],
        )
        .await
        .expect_err("a new description over the limit");
    assert_eq!(err.code().map(|c| c.code()), Some("23514"), "{err}");
}

#[tokio::test]
async fn two_databases_of_a_new_cluster_installed_at_the_same_time_both_succeed() {
    // Roles, their memberships and parameter grants are the cluster's, and
    // the runner's advisory lock is per database: the harness's cluster has
    // tenantry's roles already, so this needs a cluster of its own.
    if std::env::var(tenantry_db::testing::TEST_DATABASE_URL_ENV).is_ok()
        || tenantry_db::testing::on_citus()
    {
        eprintln!("skipped: needs the installed PostgreSQL binaries to start a new cluster");
        return;
    }
    let cluster = tokio::task::spawn_blocking(|| {
        let dir = tenantry_embedded::temp_data_dir("tenantry-race").unwrap();
        let mut options = tenantry_embedded::ClusterOptions::new(dir);
        options.extra_settings.push(("fsync".into(), "off".into()));
        tenantry_embedded::EmbeddedCluster::start(options).unwrap()
    })
    .await
    .unwrap();
    let admin = cluster.superuser_config("postgres");
    let (admin, conn) = admin.connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    for name in ["race_a", "race_b"] {
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    }
    let mut clients = Vec::new();
    for name in ["race_a", "race_b"] {
        let (client, conn) = cluster.superuser_config(name).connect(NoTls).await.unwrap();
        tokio::spawn(conn);
        clients.push(client);
    }
    let [mut a, mut b]: [Client; 2] = clients.try_into().ok().unwrap();
    let (ra, rb) = tokio::join!(migrate::migrate(&mut a), migrate::migrate(&mut b));
    let all = versions(migrate::migrations());
    assert_eq!(versions(&ra.expect("race_a")), all);
    assert_eq!(versions(&rb.expect("race_b")), all);
    migrate::check(&a).await.expect("race_a up to date");
    migrate::check(&b).await.expect("race_b up to date");
}

/// Several processes provisioning the same new database at once (two
/// `tenantry migrate` on a brand-new embedded data directory) all succeed:
/// a CREATE DATABASE that lost the race fails on pg_database's unique index,
/// which means the database is there.
#[tokio::test]
async fn provisioning_one_new_database_from_several_sessions_at_once_succeeds_in_each() {
    if tenantry_db::testing::on_citus() {
        eprintln!("skipped: Citus propagates CREATE DATABASE differently");
        return;
    }
    let tdb = TestDatabase::new().await;
    let superuser = tdb.superuser_config();
    let name = format!("{}_same", tdb.name());
    let provisions = (0..4).map(|_| {
        let superuser = superuser.clone();
        let name = name.clone();
        tokio::spawn(async move {
            tenantry_db::provision(&superuser, &name, tenantry_db::ServerLogin::Trust).await
        })
    });
    for (i, done) in futures_util::future::join_all(provisions)
        .await
        .into_iter()
        .enumerate()
    {
        let provisioned = done
            .unwrap()
            .unwrap_or_else(|e| panic!("provision {i}: {e}"));
        assert_eq!(provisioned.superuser.get_dbname(), Some(name.as_str()));
    }
    let su = connect(&tdb.superuser_url()).await;
    su.batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}

/// An upgrade that needs a lock a long transaction holds (a report, a
/// `pg_dump`) stops waiting after `UPGRADE_LOCK_WAIT` and tries again, so
/// other sessions' queries of that table queue behind it for at most about
/// that long, not for the whole transaction (found by a rolling-upgrade
/// review: every request stalled for 50 s and some got 503); it finishes once
/// the long transaction ends.
#[tokio::test]
async fn an_upgrade_blocked_by_a_long_transaction_lets_other_queries_through_and_finishes_after_it()
{
    let tdb = TestDatabase::new().await;
    let (url, mut old, blocker) = at_0044_with_a_long_reader(&tdb).await;
    let upgrade = tokio::spawn(async move { migrate::migrate(&mut old).await });
    waiting_for_a_lock(&blocker).await;

    // Another session's read of the table the upgrade waits for.
    let reader = connect(&url).await;
    let started = std::time::Instant::now();
    let limit = migrate::UPGRADE_LOCK_WAIT + std::time::Duration::from_millis(1500);
    tokio::time::timeout(
        limit,
        reader.query_one("SELECT count(*) FROM tenantry.shared_resources", &[]),
    )
    .await
    .unwrap_or_else(|_| panic!("a read waited more than {limit:?} behind the upgrade"))
    .unwrap();

    // The long transaction ends well after that; the upgrade then applies.
    tokio::time::sleep(std::time::Duration::from_secs(6).saturating_sub(started.elapsed())).await;
    assert!(!upgrade.is_finished(), "it waited for the long transaction");
    blocker.batch_execute("COMMIT").await.unwrap();
    let applied = upgrade.await.unwrap().expect("the upgrade applies");
    let after_44: Vec<i32> = versions(migrate::migrations())
        .into_iter()
        .filter(|v| *v > 44)
        .collect();
    assert_eq!(versions(&applied), after_44);
    migrate::check(&reader).await.expect("up to date");
}

/// A database at migration 0044 (0045 alters `tenantry.shared_resources`):
/// its URL, a connection to upgrade it with, and another in a transaction
/// that has read that table and stays open (a report, a `pg_dump`).
async fn at_0044_with_a_long_reader(tdb: &TestDatabase) -> (String, Client, Client) {
    let url = empty_database(tdb).await;
    let mut old = connect(&url).await;
    migrate::migrate_to_version(&mut old, 44)
        .await
        .expect("an older schema");
    let blocker = connect(&url).await;
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM tenantry.shared_resources")
        .await
        .unwrap();
    (url, old, blocker)
}

/// Returns once another session of this database waits for a lock (the
/// upgrade, behind the long transaction); panics after 20 s.
async fn waiting_for_a_lock(client: &Client) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session waited for a lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An upgrade chosen as a deadlock's victim tries again like one whose lock
/// wait ran out: while it waited for a long transaction's table, that
/// transaction asked for a table the upgrade already held (requests take
/// the policies' tables in another order than its reset; an upgrade review
/// saw three of three upgrades beside a 30 s report fail on "deadlock
/// detected" instead of trying again).
#[tokio::test]
async fn an_upgrade_that_loses_a_deadlock_tries_again_and_applies() {
    let tdb = TestDatabase::new().await;
    let (_, mut old, blocker) = at_0044_with_a_long_reader(&tdb).await;
    let upgrade = tokio::spawn(async move { migrate::migrate(&mut old).await });
    waiting_for_a_lock(&blocker).await;
    // A table the waiting upgrade holds (its bookkeeping, read at its
    // start): the long transaction asks for it too, and each now waits for
    // the other.
    let held: String = blocker
        .query_one(
            "SELECT l.relation::regclass::text FROM pg_locks l
             JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE a.datname = current_database() AND a.wait_event_type = 'Lock'
               AND l.granted AND l.relation IS NOT NULL
               AND l.relation::regclass::text LIKE 'tenantry.%'
             ORDER BY 1 LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // PostgreSQL ends the deadlock by rolling the upgrade's try back (it
    // waited first, so its check runs first); this lock is then granted.
    blocker
        .batch_execute(&format!("LOCK TABLE {held} IN ACCESS EXCLUSIVE MODE"))
        .await
        .expect("the long transaction's lock is granted once the upgrade's try is rolled back");
    blocker.batch_execute("COMMIT").await.unwrap();
    upgrade
        .await
        .unwrap()
        .expect("the upgrade tries again and applies");
    migrate::check(&blocker).await.expect("up to date");
}

/// A migration URL's own `lock_timeout` replaces the upgrade's 2 s, and the
/// upgrade still backs off and tries again until the long transaction ends
/// (found by a review: with its own timeout it failed at the first wait).
#[tokio::test]
async fn an_upgrade_under_its_own_lock_timeout_tries_again_until_the_long_transaction_ends() {
    let tdb = TestDatabase::new().await;
    let (_, mut old, blocker) = at_0044_with_a_long_reader(&tdb).await;
    old.batch_execute("SET lock_timeout = '300ms'")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let upgrade = tokio::spawn(async move { migrate::migrate(&mut old).await });
    waiting_for_a_lock(&blocker).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(!upgrade.is_finished(), "it gave up or did not wait");
    blocker.batch_execute("COMMIT").await.unwrap();
    upgrade.await.unwrap().expect("the upgrade applies");
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    migrate::check(&blocker).await.expect("up to date");
}

/// The schema of schema tenant `t`.
async fn schema_of(client: &Client, t: uuid::Uuid) -> String {
    client
        .query_one(
            "SELECT schema_name FROM tenantry.tenants WHERE tenant_id = $1",
            &[&t],
        )
        .await
        .unwrap()
        .get(0)
}

/// The tables of the schema tenant, as `schema.table <- parent` for each
/// parent it inherits (none: `schema.table`).
async fn parents_in(client: &Client, schema: &str) -> Vec<String> {
    let mut v: Vec<String> = client
        .query(
            "SELECT c.relname || coalesce(' <- ' || i.inhparent::regclass::text, '')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
             WHERE n.nspname = $1 AND c.relkind = 'r'",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    v.sort();
    v
}

/// Builds before 0036 made a schema tenant's table of an adopted table
/// inherit the team's table; 0036 detaches it (and leaves its table of
/// resources inheriting tenantry.resources), keeping its rows.
#[tokio::test]
async fn migration_0036_detaches_schema_tenants_tables_of_adopted_tables_and_keeps_their_rows() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    su.batch_execute(
        "CREATE TABLE public.projects (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                       name text NOT NULL, PRIMARY KEY (tenant_id, id));
         SELECT tenantry.adopt_table('public.projects');",
    )
    .await
    .unwrap();
    let silo: uuid::Uuid = su
        .query_one("SELECT tenantry.create_tenant('silo', NULL, 'schema')", &[])
        .await
        .unwrap()
        .get(0);
    let schema = schema_of(&su, silo).await;
    assert_eq!(
        parents_in(&su, &schema).await,
        ["projects", "resources <- tenantry.resources"]
    );
    // As an older build left it.
    su.batch_execute(&format!(
        "ALTER TABLE {schema}.projects INHERIT public.projects;
         INSERT INTO {schema}.projects (tenant_id, name) VALUES ('{silo}', 'kept')"
    ))
    .await
    .unwrap();
    assert_eq!(
        parents_in(&su, &schema).await,
        ["projects <- projects", "resources <- tenantry.resources"]
    );
    su.batch_execute(&format!(
        "BEGIN; {} COMMIT;",
        include_str!("../../../migrations/0036_adopted_copies_stand_alone.sql")
    ))
    .await
    .unwrap();
    assert_eq!(
        parents_in(&su, &schema).await,
        ["projects", "resources <- tenantry.resources"]
    );
    let kept: i64 = su
        .query_one(
            &format!("SELECT count(*) FROM ONLY {schema}.projects WHERE name = 'kept'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
}

/// A database where the race fixed with 0041 (a move to the root not
/// serialised with a move under its old subtree) left a stale closure row
/// and a drifted counter: 0041 removes the row, adds a missing one, and
/// recounts the counters of the tenants whose closure changed.
#[tokio::test]
async fn migration_0041_repairs_a_closure_the_parent_links_do_not_give_and_the_counts_on_it() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let id = |name: &'static str, parent: Option<uuid::Uuid>| {
        let su = &su;
        async move {
            su.query_one(
                "SELECT tenantry.create_tenant($1::text, $2::uuid)",
                &[&name, &parent],
            )
            .await
            .unwrap()
            .get::<_, uuid::Uuid>(0)
        }
    };
    let r = id("r", None).await;
    let x = id("x", Some(r)).await;
    let y = id("y", None).await;
    let kept = id("kept", Some(x)).await;
    // As the race left it: r still above y (which is a root), and x's row
    // to kept gone; r's descendant count built on that.
    su.batch_execute(&format!(
        "SET session_replication_role = replica;
         INSERT INTO tenantry.tenant_hierarchy (parent_id, child_id, depth) VALUES ('{r}', '{y}', 1);
         DELETE FROM tenantry.tenant_hierarchy WHERE parent_id = '{x}' AND child_id = '{kept}';
         UPDATE tenantry.tenant_limit_usage SET descendants = 7 WHERE tenant_id = '{r}';
         RESET session_replication_role;"
    ))
    .await
    .unwrap();
    su.batch_execute(&format!(
        "BEGIN; {} COMMIT;",
        include_str!("../../../migrations/0041_tenant_closure_repaired.sql")
    ))
    .await
    .unwrap();
    let rows: Vec<(uuid::Uuid, uuid::Uuid, i32)> = su
        .query(
            "SELECT parent_id, child_id, depth FROM tenantry.tenant_hierarchy
              WHERE depth > 0 ORDER BY depth, parent_id, child_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let mut expected = vec![(r, x, 1), (x, kept, 1)];
    expected.sort();
    expected.push((r, kept, 2));
    assert_eq!(rows, expected);
    let (children, descendants): (i64, i64) = su
        .query_one(
            "SELECT children, descendants FROM tenantry.tenant_limit_usage WHERE tenant_id = $1",
            &[&r],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert_eq!((children, descendants), (1, 2));
}

/// A database where the race fixed before 0042 (a share made while its
/// target or its owner was being deleted) left shares of deleted tenants:
/// 0042 revokes them as the deletion would have (the record, the row's
/// `shared_with`, the owner's share count, an audit row each), drops a
/// deleted tenant from a row's `shared_with` even without a record, recounts
/// drifted children and descendants, and leaves the shares between live
/// tenants alone.
#[tokio::test]
async fn migration_0042_revokes_shares_that_outlived_a_deleted_target_or_owner() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let tenant = |name: &'static str| create_tenant(&su, name);
    let (owner, gone, kept) = (
        tenant("owner").await,
        tenant("gone").await,
        tenant("kept").await,
    );
    let (gone_owner, reader) = (tenant("gone-owner").await, tenant("reader").await);
    // Shares made the ordinary way (counted, recorded), as an operator in each owner's context.
    let share = |tid: uuid::Uuid, name: &'static str, targets: Vec<uuid::Uuid>| {
        let su = &su;
        async move {
            su.batch_execute("BEGIN").await.unwrap();
            su.execute("SELECT tenantry.set_tenant_context_local($1)", &[&tid])
                .await
                .unwrap();
            let id: uuid::Uuid = su
                .query_one(
                    "SELECT tenantry.create_resource(jsonb_build_object('name', $1::text))",
                    &[&name],
                )
                .await
                .unwrap()
                .get(0);
            for target in targets {
                su.execute("SELECT tenantry.share_resource($1, $2)", &[&id, &target])
                    .await
                    .unwrap();
            }
            su.batch_execute("COMMIT").await.unwrap();
            id
        }
    };
    let doc = share(owner, "doc", vec![gone, kept]).await;
    let other = share(gone_owner, "other", vec![reader]).await;
    // A tenant deleted the ordinary way, whose revocation a move back to the
    // shared tier lost: named in the row's shared_with, with no record.
    let lost = tenant("lost").await;
    su.batch_execute(&format!(
        "SELECT tenantry.set_admin_context('operator');
         UPDATE tenantry.tenants SET status = 'deleted' WHERE tenant_id = '{lost}';"
    ))
    .await
    .unwrap();
    // As the races left it: the tenants deleted, their shares not revoked,
    // and a descendant count drifted low.
    su.batch_execute(&format!(
        "SET session_replication_role = replica;
         UPDATE tenantry.tenants SET status = 'deleted' WHERE tenant_id IN ('{gone}', '{gone_owner}');
         UPDATE tenantry.resources SET shared_with = shared_with || '{{{lost}}}'::uuid[] WHERE id = '{doc}';
         UPDATE tenantry.tenant_limit_usage SET children = 3, descendants = 7 WHERE tenant_id = '{owner}';
         RESET session_replication_role;"
    ))
    .await
    .unwrap();
    let shares_of = |tid: uuid::Uuid| {
        let su = &su;
        async move {
            su.query_one(
                "SELECT coalesce((SELECT shares FROM tenantry.tenant_limit_usage WHERE tenant_id = $1), 0)",
                &[&tid],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert_eq!(
        (shares_of(owner).await, shares_of(gone_owner).await),
        (2, 1)
    );

    su.batch_execute(&format!(
        "BEGIN; {} COMMIT;",
        include_str!("../../../migrations/0042_shares_of_deleted_tenants_revoked.sql")
    ))
    .await
    .unwrap();

    let records: Vec<(uuid::Uuid, uuid::Uuid)> = su
        .query(
            "SELECT resource_id, shared_with FROM tenantry.shared_resources ORDER BY resource_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        records,
        [(doc, kept)],
        "only the share between live tenants is left"
    );
    let shared_with = |id: uuid::Uuid| {
        let su = &su;
        async move {
            su.query_one(
                "SELECT shared_with FROM tenantry.resources WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, Vec<uuid::Uuid>>(0)
        }
    };
    assert_eq!(shared_with(doc).await, [kept]);
    assert!(shared_with(other).await.is_empty());
    assert_eq!(
        (shares_of(owner).await, shares_of(gone_owner).await),
        (1, 0)
    );
    let revoked: i64 = su
        .query_one(
            "SELECT count(*) FROM tenantry.audit_log WHERE action = 'share.revoked'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(revoked, 2, "each revocation is audited");
    let owner_counts: (i64, i64) = su
        .query_one(
            "SELECT children, descendants FROM tenantry.tenant_limit_usage WHERE tenant_id = $1",
            &[&owner],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert_eq!(owner_counts, (0, 0), "counts recounted from the closure");

    // Applied again, it finds nothing to do.
    su.batch_execute(&format!(
        "BEGIN; {} COMMIT;",
        include_str!("../../../migrations/0042_shares_of_deleted_tenants_revoked.sql")
    ))
    .await
    .unwrap();
    assert_eq!(shared_with(doc).await, [kept]);
}

/// The comment on a schema tenant's table of resources.
async fn copy_comment(client: &Client, schema: &str) -> Option<String> {
    client
        .query_one(
            "SELECT obj_description(format('%I.resources', $1::text)::regclass, 'pg_class')",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0)
}

/// Re-applying the definitions secures every schema tenant's tables again,
/// in its transaction for a few schema tenants; past
/// `tenantry.secure_schemas_inline_max` (500 by default: thousands would
/// lock every table at once, 53200) it records a tenant-schema step
/// instead, and `tenantry migrate` secures them schema by schema.
#[tokio::test]
async fn with_many_schema_tenants_the_definitions_secure_their_tables_through_a_tenant_schema_step()
{
    let tdb = TestDatabase::new().await;
    let mut client = tdb.superuser_client().await;
    let mut schemas = Vec::new();
    for name in ["one", "two"] {
        let t: uuid::Uuid = client
            .query_one(
                "SELECT tenantry.create_tenant($1, NULL, 'schema')",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        schemas.push(schema_of(&client, t).await);
    }
    let standard = copy_comment(&client, &schemas[0]).await;
    let reapply = "DELETE FROM tenantry.schema_definitions WHERE name = '07_schemas.sql'";
    for (inline_max, inline) in [("1", false), ("500", true)] {
        for s in &schemas {
            client
                .batch_execute(&format!(
                    "COMMENT ON TABLE {s}.resources IS 'changed by hand'"
                ))
                .await
                .unwrap();
        }
        client
            .batch_execute(&format!(
                "SET tenantry.secure_schemas_inline_max = {inline_max}; {reapply}"
            ))
            .await
            .unwrap();
        migrate::migrate(&mut client).await.expect("re-apply");
        let behind = migrate::tenant_schemas_behind(&client, 10)
            .await
            .unwrap()
            .len();
        assert_eq!(
            behind,
            if inline { 0 } else { 2 },
            "inline max {inline_max}"
        );
        for s in &schemas {
            let comment = copy_comment(&client, s).await;
            if inline {
                assert_eq!(comment, standard, "{s}");
            } else {
                assert_eq!(comment.as_deref(), Some("changed by hand"), "{s}");
            }
        }
        let secured = migrate::migrate_tenant_schemas(&mut client, |_, _| {})
            .await
            .unwrap();
        assert_eq!(secured, if inline { 0 } else { 2 });
        for s in &schemas {
            assert_eq!(copy_comment(&client, s).await, standard, "{s}");
        }
    }
}

/// A database whose sessions are read-only (a standby, or
/// `default_transaction_read_only`) is refused in tenantry's words before
/// anything is tried, not with PostgreSQL's "cannot execute CREATE SCHEMA in
/// a read-only transaction" (found by an operations review).
#[tokio::test]
async fn migrating_a_database_whose_sessions_are_read_only_is_refused_saying_so() {
    let tdb = TestDatabase::new().await;
    let url = empty_database(&tdb).await;
    let setup = connect(&url).await;
    setup
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); END $$",
        )
        .await
        .unwrap();
    let mut client = connect(&url).await;
    let err = migrate::migrate(&mut client).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::Refused(m) if m.contains("read-only")),
        "{err}"
    );
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenantry'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "nothing was made");
}

/// A server built without ICU (PostgreSQL's own build without
/// `--with-icu`, some pip and npm packagings) is refused before anything is
/// tried, naming what is missing: it failed at migration 13 with "collation
/// und-x-icu does not exist", found running the suite on other builds. The
/// collation is taken from this one database to stand for such a server.
#[tokio::test]
async fn migrating_on_a_server_without_icu_is_refused_naming_icu_before_anything_is_made() {
    let tdb = TestDatabase::new().await;
    let url = empty_database(&tdb).await;
    let mut client = connect(&url).await;
    client
        .batch_execute(r#"DROP COLLATION pg_catalog."und-x-icu""#)
        .await
        .unwrap();
    let err = migrate::migrate(&mut client).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::Refused(m) if m.contains("built with ICU") && m.contains("und-x-icu")),
        "{err}"
    );
    let made: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenantry'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(made, 0, "nothing was made");
}

/// Shares recorded before 0055 spelled their row's key as the sharing
/// session wrote it (a time zone's offset, a DateStyle's order, a numeric's
/// scale): 0055 brings each to the row's own spelling, so that the owner's
/// revocation and the row's deletion find it, keeps one share where a row
/// was shared twice with a tenant under two spellings, and never moves a
/// share to another row: a key that could name another day under the
/// writer's DateStyle, one that no longer parses (which stopped the upgrade:
/// a verification review) and one whose row is gone are revoked.
#[tokio::test]
async fn migration_0055_brings_share_keys_to_the_rows_spelling_and_revokes_what_could_name_another_row(
) {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let (owner, reader) = (
        create_tenant(&su, "owner").await,
        create_tenant(&su, "reader").await,
    );
    su.batch_execute(&format!(
        "CREATE TABLE public.events (tenant_id uuid NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (tenant_id, at));
         CREATE TABLE public.daily (tenant_id uuid NOT NULL, day date NOT NULL, PRIMARY KEY (tenant_id, day));
         CREATE TABLE public.nums (tenant_id uuid NOT NULL, n numeric NOT NULL, PRIMARY KEY (tenant_id, n));
         CREATE TABLE public.spans (tenant_id uuid NOT NULL, d interval NOT NULL, PRIMARY KEY (tenant_id, d));
         CREATE DOMAIN public.recent_day AS date;
         CREATE TABLE public.days (tenant_id uuid NOT NULL, d public.recent_day NOT NULL, PRIMARY KEY (tenant_id, d));
         SELECT tenantry.adopt_table('public.events', sharing => true);
         SELECT tenantry.adopt_table('public.daily', sharing => true);
         SELECT tenantry.adopt_table('public.nums', sharing => true);
         SELECT tenantry.adopt_table('public.spans', sharing => true);
         SELECT tenantry.adopt_table('public.days', sharing => true);
         INSERT INTO public.events VALUES ('{owner}', '2026-01-01 10:00+00');
         INSERT INTO public.daily VALUES ('{owner}', '2026-01-02'), ('{owner}', '2026-02-01'), ('{owner}', '2026-01-13');
         INSERT INTO public.nums VALUES ('{owner}', 1.00);
         INSERT INTO public.spans VALUES ('{owner}', '-1 days -02:03:04'), ('{owner}', '-1 days +02:03:04');
         INSERT INTO public.days VALUES ('{owner}', '2025-06-01');
         -- as sessions in Berlin and New York, under DateStyle SQL with DMY
         -- and MDY, and with a numeric's other scale, recorded them
         INSERT INTO tenantry.shared_rows (tenant_id, table_id, row_id, shared_with, shared_at) VALUES
             ('{owner}', 'public.events', '2026-01-01 11:00:00+01', '{reader}', now() - interval '2 days'),
             ('{owner}', 'public.events', '2026-01-01 05:00:00-05', '{reader}', now() - interval '1 day'),
             ('{owner}', 'public.events', '2025-12-31 09:00:00+00', '{reader}', now()),
             ('{owner}', 'public.daily', '01/02/2026', '{reader}', now()),
             ('{owner}', 'public.daily', '13/01/2026', '{reader}', now()),
             ('{owner}', 'public.daily', '2026-02-01', '{reader}', now()),
             ('{owner}', 'public.nums', '1.0', '{reader}', now()),
             -- IntervalStyle sql_standard's spelling of -1 days -02:03:04,
             -- DateStyle Postgres in India, and a day a later CHECK refuses
             ('{owner}', 'public.spans', '-1 2:03:04', '{reader}', now()),
             ('{owner}', 'public.events', 'Thu Jan 01 15:30:00 2026 IST', '{reader}', now() - interval '3 days'),
             ('{owner}', 'public.days', '2025-06-01', '{reader}', now());
         ALTER DOMAIN public.recent_day ADD CONSTRAINT recent CHECK (VALUE >= '2026-01-01') NOT VALID;"
    ))
    .await
    .unwrap();

    su.batch_execute(&format!(
        "BEGIN; {} COMMIT;",
        include_str!("../../../migrations/0055_share_keys_in_one_spelling.sql")
    ))
    .await
    .unwrap();

    let rows: Vec<String> = su
        .query(
            "SELECT table_id::text || ' ' || row_id FROM tenantry.shared_rows ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        rows,
        [
            "daily 2026-02-01",
            "events 2026-01-01 10:00:00+00",
            "nums 1.00"
        ]
    );
    let revoked = su
        .query_one(
            "SELECT count(*) FROM tenantry.audit_log WHERE tenant_id = $1 AND action = 'share.revoked'",
            &[&owner],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(
        revoked, 7,
        "the ambiguous (a day, an interval, a zone by letters), unparsable (two), gone and second spellings"
    );
    // The owner's revocation, in a session of any zone, and the row's
    // deletion find what is left.
    su.batch_execute(&format!(
        "SET TimeZone = 'Asia/Tokyo';
         BEGIN;
         SELECT tenantry.set_tenant_context_local('{owner}');
         SELECT tenantry.unshare_row('public.events', '2026-01-01 19:00:00+09', '{reader}');
         SELECT tenantry.unshare_row('public.nums', '1', '{reader}');
         DELETE FROM public.daily WHERE tenant_id = '{owner}' AND day = '2026-02-01';
         COMMIT;"
    ))
    .await
    .unwrap();
    let left = su
        .query_one("SELECT count(*) FROM tenantry.shared_rows", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(left, 0);
}

/// A tenant made by `tenantry.create_tenant` as the superuser.
async fn create_tenant(su: &Client, name: &str) -> uuid::Uuid {
    su.query_one("SELECT tenantry.create_tenant($1::text)", &[&name])
        .await
        .unwrap()
        .get::<_, uuid::Uuid>(0)
}

/// Migration 0067 on what 0060 left: every invitation then pending said it
/// may make an owner. Run again on such rows, it keeps that for the admin
/// token's, the CLI's, the tenant's unbound key's and its owner's only; a
/// scoped key's (members.invite alone, the hole 0060 closed), a member's who
/// does not own the tenant, a gone key's, a context's that named no actor
/// (`db:<login>`, which a restricted library context records) and an
/// unknown label's may not. An accepted invitation, and one made after 0060
/// (its may_own is create_invitation's), are left as they were.
#[tokio::test]
async fn the_upgrade_to_0067_lets_only_invitations_of_callers_holding_every_permission_make_an_owner(
) {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let tenant: uuid::Uuid = su
        .query_one("SELECT tenantry.create_tenant('ownerless')", &[])
        .await
        .unwrap()
        .get(0);
    let mut keys = Vec::new();
    for description in ["unbound", "scoped"] {
        su.query_one(
            "SELECT tenantry.create_tenant_api_key($1, $2)",
            &[&tenant, &description],
        )
        .await
        .unwrap();
        let id: uuid::Uuid = su
            .query_one(
                "SELECT key_id FROM tenantry.api_keys WHERE tenant_id = $1 AND description = $2",
                &[&tenant, &description],
            )
            .await
            .unwrap()
            .get(0);
        keys.push(id);
    }
    su.execute(
        "UPDATE tenantry.api_keys SET scopes = ARRAY['members.invite'] WHERE key_id = $1",
        &[&keys[1]],
    )
    .await
    .unwrap();
    let (owner, member) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    su.execute(
        "INSERT INTO tenantry.tenant_members (tenant_id, user_id, email, is_owner)
         VALUES ($1, $2, 'owner@example.com', true), ($1, $3, 'member@example.com', false)",
        &[&tenant, &owner, &member],
    )
    .await
    .unwrap();
    let made_by = [
        ("admin", true),
        ("cli:alice@host", true),
        ("db:postgres", false),
        (&*format!("key:{}", keys[0]), true),
        (&*format!("key:{}", keys[1]), false),
        (&*format!("key:{}", uuid::Uuid::new_v4()), false),
        (&*format!("user:{owner}"), true),
        (&*format!("user:{member}"), false),
        ("nightly-job", false),
    ];
    // Made before 0060 was applied, as a database upgraded across it holds them.
    for (n, (created_by, _)) in made_by.iter().enumerate() {
        su.execute(
            "INSERT INTO tenantry.invitations (tenant_id, email, token_hash, created_by, created_at, expires_at, may_own)
             VALUES ($1, $2, sha256(convert_to($2, 'UTF8')), $3,
                     (SELECT applied_at - interval '1 hour' FROM tenantry.schema_migrations WHERE version = 60),
                     now() + interval '7 days', true)",
            &[&tenant, &format!("p{n}@example.com"), created_by],
        )
        .await
        .unwrap();
    }
    // Made since, by a caller create_invitation found holding every
    // permission (an unrestricted context labelled by its application).
    su.execute(
        "INSERT INTO tenantry.invitations (tenant_id, email, token_hash, created_by, expires_at, may_own)
         VALUES ($1, 'since@example.com', sha256('since'), 'signup-service', now() + interval '7 days', true)",
        &[&tenant],
    )
    .await
    .unwrap();
    // Accepted before the upgrade: what it did is done, and it is kept as it was.
    su.execute(
        "INSERT INTO tenantry.invitations (tenant_id, email, token_hash, created_by, expires_at, accepted_at, may_own)
         VALUES ($1, 'done@example.com', sha256('done'), $2, now() + interval '7 days', now(), true)",
        &[&tenant, &format!("key:{}", keys[1])],
    )
    .await
    .unwrap();

    su.batch_execute(&format!(
        "BEGIN; {} COMMIT; RESET ROLE",
        include_str!("../../../migrations/0067_pending_invitations_that_may_own.sql")
    ))
    .await
    .unwrap();
    for (n, (created_by, may_own)) in made_by.iter().enumerate() {
        let now: bool = su
            .query_one(
                "SELECT may_own FROM tenantry.invitations WHERE email = $1",
                &[&format!("p{n}@example.com")],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(now, *may_own, "made by {created_by}");
    }
    for untouched in ["done@example.com", "since@example.com"] {
        let may_own: bool = su
            .query_one(
                "SELECT may_own FROM tenantry.invitations WHERE email = $1",
                &[&untouched],
            )
            .await
            .unwrap()
            .get(0);
        assert!(may_own, "{untouched}");
    }
}

/// Migration 0069 on invitations pending from before it: each gets the
/// standing its `created_by` names where that can be told (every key, live,
/// revoked, rotated, gone or another tenant's; a person still an active
/// member, the owner or not), and none otherwise (the operator's, a pending
/// member's, someone no longer or never a member, labels that are no ids);
/// accepted and revoked invitations are left as they were. (What accepting one then does is
/// `an_invitation_ends_with_the_member_or_key_that_made_it`, attacks.)
#[tokio::test]
async fn the_upgrade_to_0069_gives_pending_invitations_the_member_or_key_they_rest_on() {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let tenant = create_tenant(&su, "inviting").await;
    let other = create_tenant(&su, "other").await;
    let mut keys = Vec::new();
    for (t, description) in [
        (tenant, "live"),
        (tenant, "revoked"),
        (other, "elsewhere"),
        (tenant, "rotated"),
    ] {
        su.query_one(
            "SELECT tenantry.create_tenant_api_key($1, $2)",
            &[&t, &description],
        )
        .await
        .unwrap();
        let id: uuid::Uuid = su
            .query_one(
                "SELECT key_id FROM tenantry.api_keys WHERE tenant_id = $1 AND description = $2",
                &[&t, &description],
            )
            .await
            .unwrap()
            .get(0);
        keys.push(id);
    }
    su.execute(
        "UPDATE tenantry.api_keys SET revoked_at = now() WHERE key_id = $1",
        &[&keys[1]],
    )
    .await
    .unwrap();
    // Rotated before the upgrade: recorded as itself (accept_invitation
    // follows the rotation once it has expired).
    su.execute(
        "UPDATE tenantry.api_keys SET rotated_to = $2 WHERE key_id = $1",
        &[&keys[3], &keys[0]],
    )
    .await
    .unwrap();
    let (active, pending, member) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let gone = uuid::Uuid::new_v4();
    su.execute(
        "INSERT INTO tenantry.tenant_members (tenant_id, user_id, email, is_owner, pending)
         VALUES ($1, $2, 'active@example.com', true, false), ($1, $3, 'pending@example.com', false, true),
                ($1, $4, 'member@example.com', false, false)",
        &[&tenant, &active, &pending, &member],
    )
    .await
    .unwrap();
    let made_by = [
        ("admin".to_owned(), None, None),
        (format!("key:{}", keys[0]), None, Some(keys[0])),
        (format!("key:{}", keys[1]), None, Some(keys[1])),
        // Another tenant's key and a key gone since: recorded, and so
        // refused on acceptance (no live key of the tenant by that id).
        (format!("key:{}", keys[2]), None, Some(keys[2])),
        (format!("key:{gone}"), None, Some(gone)),
        (format!("key:{}", keys[3]), None, Some(keys[3])),
        ("key:xyz".to_owned(), None, None),
        ("user:alice".to_owned(), None, None),
        (format!("user:{member}"), Some(member), None),
        (format!("user:{active}"), Some(active), None),
        (format!("user:{pending}"), None, None),
        (format!("user:{}", uuid::Uuid::new_v4()), None, None),
    ];
    for (n, (created_by, _, _)) in made_by.iter().enumerate() {
        su.execute(
            "INSERT INTO tenantry.invitations (tenant_id, email, token_hash, created_by, expires_at)
             VALUES ($1, $2, sha256(convert_to($2, 'UTF8')), $3, now() + interval '7 days')",
            &[&tenant, &format!("p{n}@example.com"), created_by],
        )
        .await
        .unwrap();
    }
    su.execute(
        "INSERT INTO tenantry.invitations (tenant_id, email, token_hash, created_by, expires_at, accepted_at)
         VALUES ($1, 'done@example.com', sha256('done'), $2, now() + interval '7 days', now())",
        &[&tenant, &format!("key:{}", keys[0])],
    )
    .await
    .unwrap();

    su.execute(
        "INSERT INTO tenantry.invitations (tenant_id, email, token_hash, created_by, expires_at, revoked_at)
         VALUES ($1, 'revoked@example.com', sha256('revoked'), $2, now() + interval '7 days', now())",
        &[&tenant, &format!("key:{}", keys[0])],
    )
    .await
    .unwrap();

    // The columns as a database before 0069 lacks them, then the migration.
    su.batch_execute(&format!(
        "ALTER TABLE tenantry.invitations DROP COLUMN maker_user, DROP COLUMN maker_key;
         BEGIN; {} COMMIT; RESET ROLE",
        include_str!("../../../migrations/0069_invitations_rest_on_their_maker.sql")
    ))
    .await
    .unwrap();
    for (n, (created_by, user, key)) in made_by.iter().enumerate() {
        let row = su
            .query_one(
                "SELECT maker_user, maker_key FROM tenantry.invitations WHERE email = $1",
                &[&format!("p{n}@example.com")],
            )
            .await
            .unwrap();
        let got: (Option<uuid::Uuid>, Option<uuid::Uuid>) = (row.get(0), row.get(1));
        assert_eq!(got, (*user, *key), "made by {created_by}");
    }
    for untouched in ["done@example.com", "revoked@example.com"] {
        let row = su
            .query_one(
                "SELECT maker_user, maker_key FROM tenantry.invitations WHERE email = $1",
                &[&untouched],
            )
            .await
            .unwrap();
        let got: (Option<uuid::Uuid>, Option<uuid::Uuid>) = (row.get(0), row.get(1));
        assert_eq!(
            got,
            (None, None),
            "{untouched}: an accepted or revoked invitation is left as it was"
        );
    }
}

/// Migration 0068 after 0055 in one upgrade: a row share whose key was
/// written under a DateStyle other than ISO (`12/25/2026`), which 0055
/// revoked because one ISO field order could not read it, is shared again
/// under the row's own spelling; one whose key two orders read as two days
/// (`01/02/2026`) stays revoked, as does one of a child's row, which its
/// parent may have made (the maker is not known); and 0068 run in a later
/// transaction gives back nothing (0055 did not run in it).
#[tokio::test]
async fn the_upgrade_to_0068_gives_back_the_row_shares_0055_revoked_in_it_for_a_key_of_one_meaning()
{
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let owner: uuid::Uuid = su
        .query_one("SELECT tenantry.create_tenant('owner')", &[])
        .await
        .unwrap()
        .get(0);
    let reader: uuid::Uuid = su
        .query_one("SELECT tenantry.create_tenant('reader')", &[])
        .await
        .unwrap()
        .get(0);
    let kid: uuid::Uuid = su
        .query_one("SELECT tenantry.create_tenant('kid', $1)", &[&owner])
        .await
        .unwrap()
        .get(0);
    su.batch_execute(
        "CREATE TABLE public.days (tenant_id uuid NOT NULL, d date NOT NULL, v text,
                                   PRIMARY KEY (tenant_id, d));
         SELECT tenantry.adopt_table('public.days', sharing => true);",
    )
    .await
    .unwrap();
    su.execute(
        "INSERT INTO public.days VALUES ($1, '2026-12-25', 'xmas'), ($1, '2026-03-03', 'mar3'),
                                        ($1, '2026-01-02', 'jan2'), ($1, '2026-02-01', 'feb1')",
        &[&owner],
    )
    .await
    .unwrap();
    su.execute(
        "INSERT INTO public.days VALUES ($1, '2026-12-25', 'kid xmas')",
        &[&kid],
    )
    .await
    .unwrap();
    let shares = || async {
        let rows = su
            .query(
                "SELECT row_id FROM tenantry.shared_rows WHERE tenant_id = $1 AND shared_with = $2 ORDER BY 1",
                &[&owner, &reader],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect::<Vec<String>>()
    };
    // Shares as an older release recorded them: the writer's own spelling.
    let old_shares = format!(
        "SET LOCAL session_replication_role = replica;
         INSERT INTO tenantry.shared_rows (tenant_id, table_id, row_id, shared_with)
         VALUES ('{owner}', 'public.days', '12/25/2026', '{reader}'),
                ('{owner}', 'public.days', '03/03/2026', '{reader}'),
                ('{owner}', 'public.days', '01/02/2026', '{reader}'),
                ('{kid}', 'public.days', '12/25/2026', '{reader}');
         SET LOCAL session_replication_role = origin;"
    );
    su.batch_execute(&format!(
        "BEGIN; {old_shares}
         {} RESET ROLE;
         UPDATE tenantry.schema_migrations SET applied_at = now() WHERE version = 55;",
        include_str!("../../../migrations/0055_share_keys_in_one_spelling.sql")
    ))
    .await
    .unwrap();
    assert!(shares().await.is_empty(), "0055 revoked all three");
    su.batch_execute(&format!(
        "{} RESET ROLE; COMMIT;",
        include_str!("../../../migrations/0068_row_shares_0055_revoked_wrongly.sql")
    ))
    .await
    .unwrap();
    assert_eq!(shares().await, ["2026-03-03", "2026-12-25"]);
    let kids: i64 = su
        .query_one(
            "SELECT count(*) FROM tenantry.shared_rows WHERE tenant_id = $1",
            &[&kid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kids, 0, "a child's row may have been shared by its parent");
    let makers: i64 = su
        .query_one(
            "SELECT count(*) FROM tenantry.shared_rows WHERE tenant_id = $1 AND shared_by_tenant = $1",
            &[&owner],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(makers, 2, "given back as the owner's own");
    let created: i64 = su
        .query_one(
            "SELECT count(*) FROM tenantry.audit_log WHERE tenant_id = $1 AND action = 'share.created'
               AND target_id IN ('2026-03-03', '2026-12-25')",
            &[&owner],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 2);

    // In a later transaction (0055 applied before it), nothing comes back.
    su.batch_execute(&format!(
        "BEGIN; DELETE FROM tenantry.shared_rows WHERE tenant_id = '{owner}';
         {} RESET ROLE; COMMIT;",
        include_str!("../../../migrations/0068_row_shares_0055_revoked_wrongly.sql")
    ))
    .await
    .unwrap();
    assert!(shares().await.is_empty());
}
