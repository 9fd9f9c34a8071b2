//! tenantry on a real Citus cluster (a coordinator and workers, such as `scripts/citus.sh start` runs): the first install distributes the schema, tenant statements route to one shard, the worker nodes hold the roles and functions, and a distributed schema refuses an in-place upgrade.
//!
//! Runs when `TENANTRY_CITUS_URL` names a superuser connection to the
//! coordinator's maintenance database (`postgres`), whose `pg_dist_node`
//! lists the workers: `export TENANTRY_CITUS_URL=$(scripts/citus.sh url)`.
//! Without it every test here says loudly that it did not run and passes:
//! Citus is not in Debian's archive, so CI machines have no cluster unless
//! someone builds one (docs/scale-out.md).

use tenantry_db::{
    testing::{
        citus::{citus_url, migrated, ClusterDb},
        enter_signed_with,
    },
    ContextKey, DbError, Isolation, NewInvitation, NewKeyOptions, NewMember, NewResource,
    NewTenant, ResourceId, ResourceQuery, SignedContext, TenantContext, TenantId, TenantUpdate,
    UserId, Visibility,
};
use tokio_postgres::{Client, Config};

/// How to run this binary against a cluster (the notice when it is skipped).
const RERUN: &str = "cargo test -p tenantry-db --test citus";

/// Each worker's answer to `sql`, which must succeed on all.
async fn on_workers(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(
            "SELECT success, result FROM run_command_on_workers($1) ORDER BY nodeport",
            &[&sql],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let ok: bool = r.get(0);
            let result: String = r.get(1);
            assert!(ok, "{sql} failed on a worker: {result}");
            result
        })
        .collect()
}

/// The first column of each row of `sql`, as text, in the order it gives.
async fn texts(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn task_count(plan: &[String]) -> Option<u32> {
    plan.iter()
        .find_map(|l| l.trim().strip_prefix("Task Count: ")?.parse().ok())
}

async fn explain(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(&format!("EXPLAIN {sql}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// One cluster database for the whole story: the first install takes about
/// twenty seconds of distribution on a small machine.
#[tokio::test]
async fn the_first_install_distributes_the_schema_and_tenant_statements_route_to_one_shard() {
    let Some(url) = citus_url(RERUN) else { return };
    let db = ClusterDb::create(&url, "install").await;
    let mut client = db.client().await;

    let applied = tenantry_db::migrate::migrate(&mut client)
        .await
        .expect("the migrations apply on the coordinator and are distributed");
    assert!(!applied.is_empty());

    // Every tenant table is distributed by tenant_id, colocated with
    // resources; the tenant tree and the small catalogues are reference
    // tables; only the runner's bookkeeping stays on the coordinator.
    let tables: Vec<(String, String, Option<String>, i32)> = client
        .query(
            "SELECT c.relname::text, t.citus_table_type, t.distribution_column, t.colocation_id
             FROM pg_class c LEFT JOIN citus_tables t ON t.table_name = c.oid
             WHERE c.relnamespace = 'tenantry'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get::<_, Option<String>>(1).unwrap_or_else(|| "local".into()),
                r.get(2),
                r.get::<_, Option<i32>>(3).unwrap_or(0),
            )
        })
        .collect();
    let colocation = tables
        .iter()
        .find(|t| t.0 == "resources")
        .map(|t| t.3)
        .unwrap();
    let has_tenant: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
             WHERE c.relnamespace = 'tenantry'::regnamespace AND c.relkind IN ('r', 'p')
               AND NOT c.relispartition AND a.attname = 'tenant_id' AND c.relname <> 'tenants'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (name, kind, column, group) in &tables {
        match name.as_str() {
            "schema_migrations"
            | "schema_definitions"
            | "tenant_schema_steps"
            | "operator_audit_log" => {
                assert_eq!(kind, "local", "{name} stays on the coordinator")
            }
            // Sharded by tenant in a group of its own (citus.rs: written as
            // tenantry_app around writes made as other roles).
            "idempotency_keys" => {
                assert_eq!(kind, "distributed", "{name}");
                assert_eq!(column.as_deref(), Some("tenant_id"), "{name}");
                assert_ne!(*group, colocation, "{name} is not colocated with resources");
            }
            n if has_tenant.iter().any(|t| t == n) => {
                assert_eq!(kind, "distributed", "{name}");
                assert_eq!(column.as_deref(), Some("tenant_id"), "{name}");
                assert_eq!(*group, colocation, "{name} is colocated with resources");
            }
            _ => assert_eq!(kind, "reference", "{name}"),
        }
    }
    assert!(
        tables
            .iter()
            .any(|t| t.0 == "tenants" && t.1 == "reference"),
        "{tables:?}"
    );

    // The workers hold the roles, able to log in (Citus connects as the
    // current role), and every function but the two over coordinator-only
    // tables.
    for login in on_workers(
        &client,
        "SELECT bool_and(rolcanlogin)::text FROM pg_roles WHERE rolname LIKE 'tenantry\\_%'",
    )
    .await
    {
        assert_eq!(login, "true");
    }
    // And on the coordinator: Citus copies a role to the workers as the
    // coordinator has it whenever a table it owns is distributed.
    let coordinator_login: bool = client
        .query_one(
            "SELECT bool_and(rolcanlogin) FROM pg_roles WHERE rolname LIKE 'tenantry\\_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(coordinator_login);
    let coordinator_functions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'tenantry'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for count in on_workers(
        &client,
        "SELECT count(*) FROM pg_proc WHERE pronamespace = 'tenantry'::regnamespace",
    )
    .await
    {
        // Every one: the two over coordinator-only tables too, which are
        // PL/pgSQL on Citus (citus.sql) and never called there.
        assert_eq!(count.parse::<i64>().unwrap(), coordinator_functions);
    }
    // Invalidations are sent from the coordinator only.
    for on_worker in on_workers(&client, "SELECT tenantry.on_citus_worker()::text").await {
        assert_eq!(on_worker, "true");
    }
    let on_coordinator: bool = client
        .query_one("SELECT tenantry.on_citus_worker()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!on_coordinator);

    // A statement naming its tenant goes to one shard; by id alone, to all.
    let tenant = uuid::Uuid::new_v4();
    let id = uuid::Uuid::new_v4();
    let routed = explain(
        &client,
        &format!("SELECT * FROM tenantry.resources WHERE tenant_id = '{tenant}' AND id = '{id}'"),
    )
    .await;
    assert_eq!(task_count(&routed), Some(1), "{routed:#?}");
    let fanned = explain(
        &client,
        &format!("SELECT * FROM tenantry.resources WHERE id = '{id}'"),
    )
    .await;
    assert!(task_count(&fanned).unwrap() > 1, "{fanned:#?}");

    // Migrating again changes nothing.
    let again = tenantry_db::migrate::migrate(&mut client).await.unwrap();
    assert!(again.is_empty());

    // A pending migration on a distributed schema is refused, not half-applied.
    client
        .execute(
            "DELETE FROM tenantry.schema_migrations WHERE version = (SELECT max(version) FROM tenantry.schema_migrations)",
            &[],
        )
        .await
        .unwrap();
    let refused = tenantry_db::migrate::migrate(&mut client)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            tenantry_db::migrate::MigrateError::CitusUpgrade { .. }
        ),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("docs/scale-out.md"),
        "{refused}"
    );

    drop(client);
    db.drop_all().await;
}

/// Two tenants with `rows` resources each, written as the superuser with
/// triggers off on every node (the rows are the test's fixture; creating
/// tenants through tenantry is tested on its own). Returns the tenants.
async fn two_tenants_with_resources(client: &Client, rows: i32) -> (uuid::Uuid, uuid::Uuid) {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // One statement per query: Citus sends a whole multi-statement string
    // to the workers once a SET LOCAL is propagated.
    for sql in [
        "BEGIN".to_owned(),
        "SET LOCAL citus.propagate_set_commands = 'local'".to_owned(),
        "SET LOCAL session_replication_role = replica".to_owned(),
        format!("INSERT INTO tenantry.tenants (tenant_id, name) VALUES ('{a}', 'a'), ('{b}', 'b')"),
        format!(
            "INSERT INTO tenantry.tenant_hierarchy (parent_id, child_id, depth) VALUES ('{a}', '{a}', 0), ('{b}', '{b}', 0)"
        ),
        format!(
            "INSERT INTO tenantry.resources (tenant_id, name)
             SELECT t, 'r' || g FROM generate_series(1, {rows}) g, (VALUES ('{a}'::uuid), ('{b}'::uuid)) v(t)"
        ),
        "COMMIT".to_owned(),
    ] {
        client.batch_execute(&sql).await.unwrap();
    }
    (a, b)
}

/// Opens a transaction on a server connection and enters `tenant`'s context
/// with `enter_context_signed`, as the server does on pooled connections.
async fn begin_signed(client: &Client, key: &ContextKey, tenant: uuid::Uuid) {
    client.batch_execute("BEGIN").await.unwrap();
    let signed = SignedContext::new(TenantId::from_uuid(tenant));
    let part = enter_signed_with(client, key, &signed).await.unwrap();
    assert!(part.is_some(), "the coordinator refused a signed context");
}

/// How many resources of `tenant` the open transaction reads.
async fn resources_of(client: &Client, tenant: uuid::Uuid) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM tenantry.resources WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0)
}

/// The context reaches the workers: every shard of `resources` is on a
/// worker, so a tenant reading its own rows there proves the workers saw its
/// context (without it the policies read zero rows, not an error). A value
/// captured in one transaction and replayed in another, and a value with a
/// forged MAC, read zero rows; the app role cannot give its transaction
/// another's distributed id nor run SQL on the workers itself.
#[tokio::test]
async fn the_tenant_context_reaches_the_workers_and_a_replayed_or_forged_one_reads_nothing() {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, key) = migrated(&url, "context").await;
    let (a, b) = two_tenants_with_resources(&admin, 5).await;
    let on_coordinator: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid)
             WHERE s.logicalrelid = 'tenantry.resources'::regclass AND p.groupid = 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        on_coordinator, 0,
        "the shards of resources are on the workers"
    );

    // The server's own flight (open_context_session, then enter_context on
    // each transaction), through the library: each tenant reads its own
    // resource on a worker, and the other's is not found.
    let first_of = |tenant: uuid::Uuid| {
        let admin = &admin;
        async move {
            let id: uuid::Uuid = admin
                .query_one(
                    "SELECT id FROM tenantry.resources WHERE tenant_id = $1 LIMIT 1",
                    &[&tenant],
                )
                .await
                .unwrap()
                .get(0);
            ResourceId::from_uuid(id)
        }
    };
    let server = db.server_database(key.clone()).await;
    for (tenant, other) in [(a, b), (b, a)] {
        let (own, others) = (first_of(tenant).await, first_of(other).await);
        let mut scope = server
            .tenant(TenantContext::new(TenantId::from_uuid(tenant)))
            .await
            .unwrap();
        let found = scope.get_resource(own).await.unwrap();
        assert_eq!(*found.tenant_id.as_uuid(), tenant);
        let refused = scope.get_resource(others).await.unwrap_err();
        assert!(matches!(refused, DbError::NotFound(_)), "{refused:?}");
    }

    // A signed context on a pooled connection, as tenantry_server.
    let client = db.server_client().await;
    begin_signed(&client, &key, a).await;
    assert_eq!(resources_of(&client, a).await, 5);
    assert_eq!(resources_of(&client, b).await, 0);
    let captured: String = client
        .query_one("SELECT current_setting('tenantry.context')", &[])
        .await
        .unwrap()
        .get(0);
    client.batch_execute("COMMIT").await.unwrap();
    assert!(captured.contains("tenantry_v1_"), "{captured}");

    // Replayed into another transaction, with no context of its own and
    // with B's: the distributed transaction id differs, nothing is read.
    let replay = format!("SET LOCAL tenantry.context = '{captured}'");
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("SET LOCAL citus.propagate_set_commands = 'local'")
        .await
        .unwrap();
    client.batch_execute(&replay).await.unwrap();
    assert_eq!(
        resources_of(&client, a).await,
        0,
        "a replayed context reads nothing"
    );
    client.batch_execute("COMMIT").await.unwrap();
    begin_signed(&client, &key, b).await;
    client.batch_execute(&replay).await.unwrap();
    assert_eq!(
        resources_of(&client, a).await,
        0,
        "a replayed context reads nothing"
    );
    assert_eq!(
        resources_of(&client, b).await,
        0,
        "a bad value leaves no context at all"
    );
    client.batch_execute("COMMIT").await.unwrap();

    // A forged MAC over A's context, in a transaction of B's own.
    begin_signed(&client, &key, b).await;
    let carried: String = client
        .query_one("SELECT current_setting('tenantry.context')", &[])
        .await
        .unwrap()
        .get(0);
    let (key_and_mac, value) = carried.split_at(carried.find(".tenantry_").unwrap());
    let forged_value = value.replace(&b.simple().to_string(), &a.simple().to_string());
    assert_ne!(forged_value, value);
    let forged_mac = format!("{}.{}", key.id(), "0".repeat(64));
    for forged in [
        format!("{key_and_mac}{forged_value}"),
        format!("{forged_mac}{forged_value}"),
    ] {
        client
            .batch_execute(&format!("SET LOCAL tenantry.context = '{forged}'"))
            .await
            .unwrap();
        assert_eq!(
            resources_of(&client, a).await,
            0,
            "a forged context reads nothing"
        );
    }
    // The server's own value again: B reads B's rows.
    client
        .batch_execute(&format!("SET LOCAL tenantry.context = '{carried}'"))
        .await
        .unwrap();
    assert_eq!(resources_of(&client, b).await, 5);
    client.batch_execute("COMMIT").await.unwrap();

    // What would let the app role mint a transaction id or reach the
    // workers directly is not its to call.
    for sql in [
        "SELECT assign_distributed_transaction_id(0, 1, now())",
        "SELECT * FROM run_command_on_workers('SELECT 1')",
        "SELECT * FROM run_command_on_shards('tenantry.resources', 'SELECT 1')",
    ] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }

    drop((client, admin, server));
    db.drop_all().await;
}

/// Citus replays a transaction's SET LOCAL statements on its worker
/// connections once the context is carried there, and a replayed `SET LOCAL
/// ROLE` is refused on the workers: the server's flight switches roles with
/// `set_config('role', …, true)` on Citus. A tenant reads its own rows under
/// each narrower set of policies, several switches in one transaction.
#[tokio::test]
async fn the_servers_role_switches_work_on_the_workers() {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, key) = migrated(&url, "roles").await;
    let (a, _) = two_tenants_with_resources(&admin, 3).await;
    let server = db.server_database(key).await;
    let count = "SELECT count(*) FROM tenantry.resources WHERE tenant_id = $1";
    let mut scope = server
        .tenant(TenantContext::new(TenantId::from_uuid(a)))
        .await
        .unwrap();
    for _ in 0..2 {
        let (own,): (i64,) = scope
            .under(Visibility::Owned)
            .query_one(count, &[&a])
            .await
            .unwrap();
        assert_eq!(
            own, 3,
            "tenantry_app_own reads the tenant's rows on the workers"
        );
        let (shared,): (i64,) = scope
            .under(Visibility::SharedWithMe)
            .query_one(
                "SELECT count(*) FROM tenantry.resources_shared_with_me()",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(shared, 0, "nothing of B's is shared with A");
        let (all,): (i64,) = scope.query_one(count, &[&a]).await.unwrap();
        assert_eq!(all, 3);
    }
    scope.commit().await.unwrap();

    // An administrative transaction (tenantry_admin) reads every tenant.
    let mut admin_scope = server.admin("admin").await.unwrap();
    let tenants = admin_scope.list_tenants(None, 10).await.unwrap();
    assert_eq!(tenants.len(), 2);
    admin_scope.commit().await.unwrap();

    drop((admin, server));
    db.drop_all().await;
}

/// Each copy's value of `column` for one tenant's row of the `tenants`
/// reference table (the coordinator's and every worker's), read from the
/// placements themselves.
async fn tenant_row_copies(client: &Client, tenant: uuid::Uuid, column: &str) -> Vec<String> {
    on_placements(
        client,
        "tenantry.tenants",
        &format!("SELECT {column}::text FROM %s WHERE tenant_id = '{tenant}'"),
    )
    .await
    .into_iter()
    .map(|(_, result)| result)
    .collect()
}

/// `command` (`%s`: the shard's name) on every placement of `table`, as the
/// superuser, which must succeed on each: (shard id, result), by node.
async fn on_placements(client: &Client, table: &str, command: &str) -> Vec<(i64, String)> {
    client
        .query(
            "SELECT shardid, success, result FROM run_command_on_placements($1::text::regclass, $2)
             ORDER BY nodeport, shardid",
            &[&table, &command],
        )
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"))
        .iter()
        .map(|r| {
            let (shard, ok, result): (i64, bool, String) = (r.get(0), r.get(1), r.get(2));
            assert!(ok, "{table} shard {shard}: {command}: {result}");
            (shard, result)
        })
        .collect()
}

/// The server's work on a coordinator: an administrative transaction creates
/// and renames tenants (the triggers of the `tenants` reference table do
/// their cross-table work once, from the coordinator's copy, and every copy
/// of the row stays the same), and tenants create, read, change and delete
/// their resources, each reading only its own.
#[tokio::test]
async fn a_server_on_the_coordinator_creates_tenants_and_their_resources() {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, key) = migrated(&url, "server").await;
    let server = db.server_database(key).await;

    let mut ops = server.admin("admin").await.unwrap();
    let create = |name: &str| NewTenant {
        name: name.into(),
        parent_id: None,
        isolation: Isolation::Shared,
        settings: None,
    };
    let a = ops.create_tenant(&create("a")).await.unwrap();
    let b = ops.create_tenant(&create("b")).await.unwrap();
    let child = ops
        .create_tenant(&NewTenant {
            parent_id: Some(a.tenant_id),
            ..create("a child")
        })
        .await
        .unwrap();
    ops.commit().await.unwrap();
    let mut ops = server.admin("admin").await.unwrap();
    ops.update_tenant(
        a.tenant_id,
        &TenantUpdate {
            name: Some("  a renamed ".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ops.commit().await.unwrap();
    let (a, b) = (*a.tenant_id.as_uuid(), *b.tenant_id.as_uuid());
    for column in ["name", "updated_at", "created_at", "status"] {
        let copies = tenant_row_copies(&admin, a, column).await;
        assert_eq!(copies.len(), 3, "a copy on every node");
        assert!(
            copies.iter().all(|c| *c == copies[0]),
            "{column}: {copies:?}"
        );
    }
    assert_eq!(tenant_row_copies(&admin, a, "name").await[0], "a renamed");
    // The cross-table work happened once: one audit row per event, the
    // closure rows of the child, A's child counted once.
    let audit: Vec<String> = admin
        .query(
            "SELECT action FROM tenantry.audit_log WHERE tenant_id = $1 ORDER BY action",
            &[&a],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        audit,
        ["tenant.child_created", "tenant.created", "tenant.renamed"]
    );
    let closure: i64 = admin
        .query_one(
            "SELECT count(*) FROM tenantry.tenant_hierarchy WHERE child_id = $1",
            &[child.tenant_id.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(closure, 2);

    // A's resource: created, read, changed, deleted by A; not found for B.
    let mut scope = server
        .tenant(TenantContext::new(TenantId::from_uuid(a)))
        .await
        .unwrap();
    let made = scope
        .create_resource(&NewResource {
            name: "doc".into(),
            data: serde_json::json!({"v": 1}).into(),
        })
        .await
        .unwrap();
    scope.commit().await.unwrap();
    // A lists its own and its child's resources, newest first; B lists none.
    let mut scope = server
        .tenant(TenantContext::new(child.tenant_id))
        .await
        .unwrap();
    let childs = scope
        .create_resource(&NewResource {
            name: "child doc".into(),
            data: serde_json::json!({}).into(),
        })
        .await
        .unwrap();
    scope.commit().await.unwrap();
    for (tenant, expected) in [(a, vec![childs.id, made.id]), (b, vec![])] {
        let page = server
            .tenant(TenantContext::new(TenantId::from_uuid(tenant)))
            .await
            .unwrap()
            .list_resources_and_commit(&ResourceQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let ids: Vec<ResourceId> = page.items.iter().map(|r| r.id).collect();
        assert_eq!(ids, expected);
    }
    // The server's point read (GET /v1/resources/{id}) goes to the shard of
    // the tenant's subtree alone; by id alone it would go to every shard.
    admin
        .batch_execute(&format!(
            "PREPARE point_read(uuid, uuid[]) AS {}",
            tenantry_db::citus::resource_point_read()
        ))
        .await
        .unwrap();
    let plan = explain(
        &admin,
        &format!("EXECUTE point_read('{}', ARRAY['{b}']::uuid[])", made.id),
    )
    .await;
    assert_eq!(task_count(&plan), Some(1), "{plan:#?}");
    // So does its listing of a tenant without descendants.
    admin
        .batch_execute(&format!(
            "PREPARE listing(uuid, text, timestamptz, uuid, bigint, uuid[]) AS {}",
            tenantry_db::citus::resource_listing()
        ))
        .await
        .unwrap();
    let plan = explain(
        &admin,
        &format!("EXECUTE listing('{b}', NULL, NULL, NULL, 11, ARRAY['{b}']::uuid[])"),
    )
    .await;
    assert_eq!(task_count(&plan), Some(1), "{plan:#?}");
    // The coordinator still refuses an id chosen by the tenant (the shards
    // take the defaults Citus fills in, nothing more).
    let mut scope = server
        .tenant(TenantContext::new(TenantId::from_uuid(a)))
        .await
        .unwrap();
    let planted = scope
        .execute(
            "INSERT INTO tenantry.resources (id, tenant_id, name) VALUES (gen_random_uuid(), $1, 'x')",
            &[&a],
        )
        .await
        .unwrap_err();
    assert!(matches!(planted, DbError::Forbidden(_)), "{planted:?}");
    scope.rollback().await.unwrap();
    let mut scope = server
        .tenant(TenantContext::new(TenantId::from_uuid(b)))
        .await
        .unwrap();
    let refused = scope.get_resource(made.id).await.unwrap_err();
    assert!(matches!(refused, DbError::NotFound(_)), "{refused:?}");
    let refused = scope.delete_resource(made.id).await.unwrap_err();
    assert!(matches!(refused, DbError::NotFound(_)), "{refused:?}");
    scope.commit().await.unwrap();
    let mut scope = server
        .tenant(TenantContext::new(TenantId::from_uuid(a)))
        .await
        .unwrap();
    assert_eq!(scope.get_resource(made.id).await.unwrap().name, "doc");
    scope.delete_resource(made.id).await.unwrap();
    scope.commit().await.unwrap();
    // (A new transaction: Citus refuses to read, as tenantry_app, shards this
    // transaction changed as tenantry_app_own; docs/scale-out.md.)
    let mut scope = server
        .tenant(TenantContext::new(TenantId::from_uuid(a)))
        .await
        .unwrap();
    let gone = scope.get_resource(made.id).await.unwrap_err();
    assert!(matches!(gone, DbError::NotFound(_)), "{gone:?}");
    scope.commit().await.unwrap();

    drop((admin, server));
    db.drop_all().await;
}

/// A plain connection (its driver task spawned).
async fn connect_to(config: &Config) -> Client {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connecting to a Citus node");
    tokio::spawn(connection);
    client
}

/// Writes set-up rows as the superuser in one transaction without firing
/// triggers, on the workers too (`SET LOCAL` is what Citus passes on), one
/// statement per call: Citus sends a multi-statement string whole to the
/// workers. The set-up is not what the tests are about.
async fn as_replica(client: &Client, statements: &[String]) {
    let mut all = vec![
        "SET citus.propagate_set_commands = 'local'".to_owned(),
        "BEGIN".into(),
        "SET LOCAL session_replication_role = replica".into(),
    ];
    all.extend_from_slice(statements);
    all.push("COMMIT".into());
    for sql in all {
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Rows of a tenant in one table, counted as the superuser on the placement
/// of `shard` (`run_command_on_placements`): a count through the
/// distributed table would not say where the rows are.
async fn rows_in_shard(client: &Client, table: &str, shard: i64, tenant: uuid::Uuid) -> i64 {
    on_shard(
        client,
        table,
        shard,
        &format!("SELECT count(*) FROM %s WHERE tenant_id = '{tenant}'"),
    )
    .await
    .parse()
    .unwrap()
}

/// `command`'s result on the placement of `shard` of `table`.
async fn on_shard(client: &Client, table: &str, shard: i64, command: &str) -> String {
    on_placements(client, table, command)
        .await
        .into_iter()
        .find(|(s, _)| *s == shard)
        .unwrap_or_else(|| panic!("{table}: no placement of shard {shard}"))
        .1
}

/// A large tenant gets shards of its own, online, then a node of its own:
/// its rows of every tenant table move with it, nobody else's, and doing it
/// again changes nothing.
#[tokio::test]
async fn a_large_tenant_is_isolated_to_its_own_shards_and_moved_to_another_node_with_all_its_rows()
{
    use tenantry_db::citus::{isolate_tenant, IsolateError};
    use tenantry_db::TenantId;

    let Some(url) = citus_url(RERUN) else { return };
    let db = ClusterDb::create(&url, "isolate").await;
    let mut client = db.client().await;
    tenantry_db::migrate::migrate(&mut client).await.unwrap();

    // Two tenants sharing a shard, and their rows, written as the superuser
    // without triggers (the set-up is not what this test is about).
    let big = uuid::Uuid::new_v4();
    let small: uuid::Uuid = client
        .query_one(
            "SELECT u FROM (SELECT gen_random_uuid() FROM generate_series(1, 10000)) x(u)
             WHERE get_shard_id_for_distribution_column('tenantry.resources', u)
                 = get_shard_id_for_distribution_column('tenantry.resources', $1::uuid)
             LIMIT 1",
            &[&big],
        )
        .await
        .unwrap()
        .get(0);
    as_replica(
        &client,
        &[
            format!("INSERT INTO tenantry.tenants (tenant_id, name) VALUES ('{big}', 'big'), ('{small}', 'small')"),
            format!("INSERT INTO tenantry.tenant_hierarchy (parent_id, child_id, depth) VALUES ('{big}', '{big}', 0), ('{small}', '{small}', 0)"),
            format!("INSERT INTO tenantry.resources (tenant_id, name) SELECT '{big}', 'r' || g FROM generate_series(1, 300) g"),
            format!("INSERT INTO tenantry.resources (tenant_id, name) SELECT '{small}', 's' || g FROM generate_series(1, 7) g"),
            format!("INSERT INTO tenantry.request_log (tenant_id, route, status) SELECT '{big}', '/v1/resources', 200 FROM generate_series(1, 40)"),
        ],
    )
    .await;

    // The tenant sharing the shard keeps writing all along: its writes wait
    // while the rows are copied, and every acknowledged one is kept.
    let writer = db.client().await;
    writer
        .batch_execute("SET citus.propagate_set_commands = 'local'")
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acknowledged = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writer.batch_execute("BEGIN").await.unwrap();
                writer
                    .batch_execute("SET LOCAL session_replication_role = replica")
                    .await
                    .unwrap();
                writer
                    .execute(
                        "INSERT INTO tenantry.resources (tenant_id, id, name, created_by)
                         VALUES ($1, gen_random_uuid(), 'during', NULL)",
                        &[&small],
                    )
                    .await
                    .unwrap();
                writer.batch_execute("COMMIT").await.unwrap();
                acknowledged += 1;
            }
            acknowledged
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let shard = isolate_tenant(&client, TenantId::from_uuid(big), None)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let during = writes.await.unwrap();
    assert!(during > 0);
    let small_rows: i64 = client
        .query_one(
            "SELECT count(*) FROM tenantry.resources WHERE tenant_id = $1",
            &[&small],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        small_rows,
        7 + during,
        "every acknowledged write of the neighbour is kept, once"
    );
    assert!(shard.newly_isolated && !shard.moved, "{shard:?}");
    // The shard holds exactly the tenant's hash value, in every colocated
    // table, and all of its rows.
    let (min, max, hash): (String, String, i32) = {
        let r = client
            .query_one(
                "SELECT shardminvalue, shardmaxvalue,
                        worker_hash($1::uuid)
                 FROM pg_dist_shard WHERE shardid = $2",
                &[&big, &shard.shard_id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (min.as_str(), max.as_str()),
        (&*hash.to_string(), &*hash.to_string())
    );
    assert_eq!(
        rows_in_shard(&client, "tenantry.resources", shard.shard_id, big).await,
        300
    );
    assert_eq!(
        rows_in_shard(&client, "tenantry.resources", shard.shard_id, small).await,
        0
    );
    // Today's request-log partition is a distributed table of the group too.
    let (log_part, log_shard): (String, i64) = {
        let r = client
            .query_one(
                "SELECT p::text, get_shard_id_for_distribution_column(p, $1::uuid)
                 FROM (SELECT format('tenantry.request_log_%s', to_char(now(), 'YYYYMMDD'))::regclass) x(p)",
                &[&big],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(rows_in_shard(&client, &log_part, log_shard, big).await, 40);
    let log_own: bool = client
        .query_one(
            "SELECT shardminvalue = shardmaxvalue FROM pg_dist_shard WHERE shardid = $1",
            &[&log_shard],
        )
        .await
        .unwrap()
        .get(0);
    assert!(log_own, "CASCADE split the request log's partitions too");
    // The new shards let the app insert into the columns Citus fills in,
    // as the others do (the coordinator's own table does not).
    let granted = on_shard(
        &client,
        "tenantry.resources",
        shard.shard_id,
        "SELECT has_column_privilege('tenantry_app_own', '%s', 'id', 'INSERT')::text",
    )
    .await;
    assert_eq!(granted, "true");
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM tenantry.resources WHERE tenant_id = ANY ($1)",
            &[&vec![big, small]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 307 + during, "nothing lost or duplicated");

    // Again: nothing to do.
    let again = isolate_tenant(&client, TenantId::from_uuid(big), None)
        .await
        .unwrap();
    assert_eq!(again.shard_id, shard.shard_id);
    assert!(!again.newly_isolated && !again.moved);

    // A node of its own: the whole group moves, rows and all.
    let other: (String, i32) = {
        let r = client
            .query_one(
                "SELECT nodename::text, nodeport FROM pg_dist_node
                 WHERE isactive AND shouldhaveshards AND nodename || ':' || nodeport <> $1
                 ORDER BY nodeport LIMIT 1",
                &[&shard.node],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let moved = isolate_tenant(
        &client,
        TenantId::from_uuid(big),
        Some((&other.0, other.1 as u16)),
    )
    .await
    .unwrap();
    assert!(moved.moved, "{moved:?}");
    assert_eq!(moved.node, format!("{}:{}", other.0, other.1));
    assert_eq!(
        rows_in_shard(&client, "tenantry.resources", moved.shard_id, big).await,
        300
    );
    let (_, again) = (
        (),
        isolate_tenant(
            &client,
            TenantId::from_uuid(big),
            Some((&other.0, other.1 as u16)),
        )
        .await
        .unwrap(),
    );
    assert!(!again.moved, "already there: {again:?}");

    // Refusals: an unknown tenant, an unknown node; nothing changes.
    let ghost = TenantId::from_uuid(uuid::Uuid::new_v4());
    let refused = isolate_tenant(&client, ghost, None).await.unwrap_err();
    assert!(
        matches!(refused, IsolateError::NotFound(t) if t == ghost),
        "{refused}"
    );
    let refused = isolate_tenant(&client, TenantId::from_uuid(small), Some(("127.0.0.1", 1)))
        .await
        .unwrap_err();
    assert!(matches!(refused, IsolateError::UnknownNode(_)), "{refused}");
    let small_shard: (String, String) = {
        let r = client
            .query_one(
                "SELECT shardminvalue, shardmaxvalue FROM pg_dist_shard
                 WHERE shardid = get_shard_id_for_distribution_column('tenantry.resources', $1::uuid)",
                &[&small],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_ne!(
        small_shard.0, small_shard.1,
        "the refused call isolated nothing"
    );

    drop(client);
    db.drop_all().await;
}

/// A database without Citus says so instead of failing somewhere inside.
#[tokio::test]
async fn isolating_a_tenant_outside_a_citus_coordinator_is_refused_with_the_reason() {
    let Some(url) = citus_url(RERUN) else { return };
    let admin: Config = url.parse().unwrap();
    let maintenance = connect_to(&admin).await;
    let name = format!("tenantry_plain_{}", std::process::id());
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        maintenance.batch_execute(&sql).await.unwrap();
    }
    let mut config = admin.clone();
    config.dbname(&name);
    let client = connect_to(&config).await;
    let refused = tenantry_db::citus::isolate_tenant(
        &client,
        tenantry_db::TenantId::from_uuid(uuid::Uuid::new_v4()),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, tenantry_db::citus::IsolateError::NotDistributed),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("tenantry migrate"),
        "{refused}"
    );
    drop(client);
    maintenance
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}

/// The tenant_isolation policy of every placement of `table`.
async fn placement_policies(client: &Client, table: &str) -> Vec<String> {
    on_placements(
        client,
        table,
        "SELECT coalesce(pg_get_expr(polqual, polrelid), 'none') FROM pg_policy
         WHERE polrelid = '%s'::regclass AND polname = 'tenant_isolation'",
    )
    .await
    .into_iter()
    .map(|(_, result)| result)
    .collect()
}

/// Sharing rows of an adopted table is refused on a cluster, changing
/// nothing: a share names its table by object id, which every node gives
/// another table, so the tenant it was shared with read nothing. A table
/// adopted with sharing before the refusal is named by the doctor, whose fix
/// adopts it again without.
#[tokio::test]
async fn adopting_a_table_with_sharing_is_refused_on_the_cluster_and_the_doctor_names_one_adopted_so_before(
) {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, client, _) = migrated(&url, "nosharing").await;
    client
        .batch_execute(
            "CREATE TABLE public.invoices (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                           amount numeric NOT NULL, PRIMARY KEY (tenant_id, id))",
        )
        .await
        .unwrap();
    let refused = client
        .execute(
            "SELECT tenantry.adopt_table('public.invoices', sharing => true)",
            &[],
        )
        .await
        .unwrap_err();
    let refused = refused.as_db_error().expect("a database error");
    assert_eq!(refused.code().code(), "TN409", "{}", refused.message());
    assert!(
        refused
            .message()
            .contains("not available on a Citus cluster"),
        "{}",
        refused.message()
    );
    assert!(
        refused
            .hint()
            .is_some_and(|h| h.contains("sharing => false")),
        "{:?}",
        refused.hint()
    );
    let (adopted, distributed): (bool, bool) = {
        let r = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM tenantry.tenant_tables WHERE table_id = 'public.invoices'::regclass),
                        EXISTS (SELECT 1 FROM citus_tables WHERE table_name = 'public.invoices'::regclass),
                        (SELECT relrowsecurity FROM pg_class WHERE oid = 'public.invoices'::regclass)",
                &[],
            )
            .await
            .unwrap();
        assert!(!r.get::<_, bool>(2), "row level security untouched");
        (r.get(0), r.get(1))
    };
    assert!(!adopted && !distributed, "the refusal changed nothing");

    // A table adopted with sharing before: its registry row says so (its
    // share triggers, which such a table had, are missing here: the doctor
    // names them too, and the same fix mends both).
    client
        .execute("SELECT tenantry.adopt_table('public.invoices')", &[])
        .await
        .unwrap();
    client
        .execute(
            "UPDATE tenantry.tenant_tables SET sharing = true WHERE table_id = 'public.invoices'::regclass",
            &[],
        )
        .await
        .unwrap();
    let problems = client
        .query(
            "SELECT rule, severity, fix FROM tenantry.table_problems('public.invoices')",
            &[],
        )
        .await
        .unwrap();
    let problems: Vec<(String, String, String)> = problems
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let fix =
        "SELECT tenantry.adopt_table('public.invoices', hierarchy => true, sharing => false);";
    assert!(
        problems.contains(&(
            "citus_sharing".to_owned(),
            "warning".to_owned(),
            fix.to_owned()
        )),
        "{problems:?}"
    );
    assert!(problems.iter().all(|p| p.2 == fix), "{problems:?}");
    // The server's login, which runs the doctor at boot, finds it with its
    // own rights (the rule reads Citus's catalog itself).
    let server = db.server_client().await;
    // As the library's Database::table_problems runs it: as the login itself.
    server
        .batch_execute("BEGIN; SET LOCAL ROLE NONE")
        .await
        .unwrap();
    let rules: Vec<String> = server
        .query(
            "SELECT rule FROM tenantry.table_problems('public.invoices')",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("the doctor as tenantry_server: {e:?}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    server.batch_execute("COMMIT").await.unwrap();
    assert!(rules.iter().any(|r| r == "citus_sharing"), "{rules:?}");
    drop(server);
    // Adopting it again keeps its options, sharing included: refused.
    let again = client
        .execute("SELECT tenantry.adopt_table('public.invoices')", &[])
        .await
        .unwrap_err();
    assert_eq!(again.code().map(|c| c.code()), Some("TN409"));
    client.batch_execute(fix).await.unwrap();
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM tenantry.table_problems('public.invoices')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the doctor's fix mends it");
    drop(client);
    db.drop_all().await;
}

/// `tenantry table adopt` (the library's adopt_table) and `CALL
/// backfill_tenant_id` on the cluster: both checked the table first by
/// registering it for a dry run, which every node of the registry (a
/// reference table) had to resolve before the table was distributed, so the
/// library refused every new table with "relation ... does not exist"
/// (found 2026-12-07 running the backfill on the cluster). They adopt and
/// distribute it now, its rows backfilled, and the tenant reads them.
#[tokio::test]
async fn a_table_holding_rows_is_backfilled_and_adopted_on_the_cluster_by_the_library_and_by_sql() {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, client, _) = migrated(&url, "backfill").await;
    let tenant: uuid::Uuid = client
        .query_one("SELECT tenantry.create_tenant('legacy')", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(
            "CREATE TABLE public.legacy (id bigint, body text);
             INSERT INTO public.legacy SELECT g, 'r' || g FROM generate_series(1, 300) g;
             CREATE TABLE public.legacy_sql (id bigint, body text);
             INSERT INTO public.legacy_sql SELECT g, 'r' || g FROM generate_series(1, 200) g;",
        )
        .await
        .unwrap();
    let options = tenantry_db::tables::AdoptOptions {
        existing_rows: tenantry_db::tables::ExistingRows::Tenant(TenantId::from_uuid(tenant)),
        ..Default::default()
    };
    tenantry_db::tables::adopt_table(&client, "public.legacy", &options, |_| {})
        .await
        .unwrap_or_else(|e| panic!("the library's adoption on the cluster: {e}"));
    client
        .batch_execute(&format!(
            "CALL tenantry.backfill_tenant_id('public.legacy_sql', '{tenant}')"
        ))
        .await
        .unwrap();
    client
        .batch_execute("SELECT tenantry.adopt_table('public.legacy_sql')")
        .await
        .unwrap();
    for (table, rows) in [("public.legacy", 300_i64), ("public.legacy_sql", 200)] {
        let distributed: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM citus_tables WHERE table_name = $1::text::regclass AND citus_table_type = 'distributed')",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        assert!(distributed, "{table}");
        let owned: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"),
                &[&tenant],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(owned, rows, "{table}");
        // None of them left in the coordinator's own file of the table,
        // where a purge would not reach them.
        let local: i64 = client
            .query_one("SELECT pg_relation_size($1::text::regclass)", &[&table])
            .await
            .unwrap()
            .get(0);
        assert_eq!(local, 0, "{table}: its rows stayed on the coordinator");
    }
    drop(client);
    db.drop_all().await;
}

/// The team's own table, adopted on the cluster, is sharded by tenant next
/// to tenantry's tables with its policy on every shard; adopting it again
/// changes the policy everywhere; releasing it is refused, changing nothing.
#[tokio::test]
async fn a_table_adopted_on_the_cluster_is_sharded_by_tenant_with_its_policy_on_every_shard() {
    let Some(url) = citus_url(RERUN) else { return };
    let db = ClusterDb::create(&url, "adopt").await;
    let mut client = db.client().await;
    tenantry_db::migrate::migrate(&mut client).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE public.invoices (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                           amount numeric NOT NULL, PRIMARY KEY (tenant_id, id))",
        )
        .await
        .unwrap();
    client
        .execute("SELECT tenantry.adopt_table('public.invoices')", &[])
        .await
        .expect("adopt_table distributes the table on Citus");

    let (column, colocated): (Option<String>, bool) = {
        let r = client
            .query_one(
                "SELECT t.distribution_column,
                        t.colocation_id = (SELECT colocation_id FROM citus_tables WHERE table_name = 'tenantry.resources'::regclass)
                 FROM citus_tables t WHERE t.table_name = 'public.invoices'::regclass",
                &[],
            )
            .await
            .expect("invoices is a Citus table");
        (r.get(0), r.get(1))
    };
    assert_eq!(column.as_deref(), Some("tenant_id"));
    assert!(colocated, "colocated with tenantry.resources");
    let policies = placement_policies(&client, "public.invoices").await;
    assert!(policies.len() >= 32, "{} placements", policies.len());
    assert!(
        policies
            .iter()
            .all(|p| p == "(tenant_id = ANY (tenantry.visible_tenant_ids()))"),
        "{policies:?}"
    );
    for registry in on_workers(
        &client,
        "SELECT string_agg(table_id::text, ',') FROM tenantry.tenant_tables",
    )
    .await
    {
        assert!(registry.contains("invoices"), "{registry}");
    }

    // Again, without the hierarchy: every shard's policy follows.
    client
        .execute(
            "SELECT tenantry.adopt_table('public.invoices', hierarchy => false)",
            &[],
        )
        .await
        .expect("adopting a distributed table again");
    let policies = placement_policies(&client, "public.invoices").await;
    assert!(
        policies
            .iter()
            .all(|p| p == "(tenant_id = tenantry.current_tenant_id())"),
        "{policies:?}"
    );
    let problems: i64 = client
        .query_one(
            "SELECT count(*) FROM tenantry.table_problems('public.invoices')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(problems, 0, "the doctor's rules hold on the coordinator");

    let refused = client
        .execute("SELECT tenantry.release_table('public.invoices')", &[])
        .await
        .unwrap_err();
    let refused = refused.as_db_error().expect("a database error");
    assert_eq!(refused.code().code(), "TN409", "{}", refused.message());
    let still: i64 = client
        .query_one(
            "SELECT count(*) FROM tenantry.tenant_tables WHERE table_id = 'public.invoices'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, 1, "the refused release changed nothing");
    assert_eq!(
        placement_policies(&client, "public.invoices").await.len(),
        policies.len()
    );

    // A table that already holds rows: they get their tenant while the
    // table is still on the coordinator, then move into the shards, each
    // once, with the foreign key to tenants checked on every shard.
    let owner = uuid::Uuid::new_v4();
    as_replica(
        &client,
        &[
            format!("INSERT INTO tenantry.tenants (tenant_id, name) VALUES ('{owner}', 'legacy owner')"),
            format!("INSERT INTO tenantry.tenant_hierarchy (parent_id, child_id, depth) VALUES ('{owner}', '{owner}', 0)"),
        ],
    )
    .await;
    client
        .batch_execute("CREATE TABLE public.legacy (id bigint NOT NULL, note text)")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO public.legacy SELECT g, 'old' FROM generate_series(1, 500) g")
        .await
        .unwrap();
    client
        .execute(
            "SELECT tenantry.adopt_table('public.legacy', existing_rows_tenant => $1)",
            &[&owner],
        )
        .await
        .expect("adopting a table with rows on Citus");
    let (kind, fk): (String, bool) = {
        let r = client
            .query_one(
                "SELECT (SELECT citus_table_type FROM citus_tables WHERE table_name = 'public.legacy'::regclass),
                        (SELECT convalidated FROM pg_constraint
                         WHERE conrelid = 'public.legacy'::regclass AND conname = 'tenantry_tenant_id_fkey')",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let (rows, owners): (i64, i64) = {
        let r = client
            .query_one(
                "SELECT count(*), count(DISTINCT tenant_id) FROM public.legacy",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (kind.as_str(), rows, owners, fk),
        ("distributed", 500, 1, true)
    );

    // Moving a tenant's shards to another node creates the adopted tables'
    // shards there as their owner, tenantry_owner, which PostgreSQL 15 does
    // not let create in public: the move is refused before anything is
    // split, naming the GRANT, and goes through once it is made.
    use tenantry_db::citus::{isolate_tenant, IsolateError};
    let tenant = tenantry_db::TenantId::from_uuid(
        client
            .query_one("SELECT tenant_id FROM public.legacy LIMIT 1", &[])
            .await
            .unwrap()
            .get(0),
    );
    let node_of = "SELECT n.nodename::text, n.nodeport FROM pg_dist_placement p
                   JOIN pg_dist_node n ON n.groupid = p.groupid
                   WHERE p.shardid = get_shard_id_for_distribution_column('tenantry.resources', $1::uuid)";
    let (host, port): (String, i32) = {
        let r = client
            .query_one(node_of, &[tenant.as_uuid()])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let (other_host, other_port): (String, i32) = {
        let r = client
            .query_one(
                "SELECT nodename::text, nodeport FROM pg_dist_node
                 WHERE isactive AND shouldhaveshards AND (nodename, nodeport) <> ($1, $2) LIMIT 1",
                &[&host, &port],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    // Isolated where it is: nothing is created on another node, nothing to refuse.
    let here = Some((host.as_str(), u16::try_from(port).unwrap()));
    let stayed = isolate_tenant(&client, tenant, here).await.unwrap();
    assert!(stayed.newly_isolated && !stayed.moved, "{stayed:?}");
    let to = Some((other_host.as_str(), u16::try_from(other_port).unwrap()));
    let refused = isolate_tenant(&client, tenant, to).await.unwrap_err();
    match &refused {
        IsolateError::OwnerCannotCreate { schemas, grants } => {
            assert_eq!(schemas, "public");
            assert_eq!(grants, "GRANT CREATE ON SCHEMA public TO tenantry_owner;");
        }
        other => panic!("{other:?}"),
    }
    let still: (String, i32) = {
        let r = client
            .query_one(node_of, &[tenant.as_uuid()])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(still, (host, port), "nothing moved");
    client
        .batch_execute("GRANT CREATE ON SCHEMA public TO tenantry_owner")
        .await
        .unwrap();
    let moved = isolate_tenant(&client, tenant, to).await.unwrap();
    assert!(moved.moved && !moved.newly_isolated, "{moved:?}");
    let legacy_rows: i64 = client
        .query_one("SELECT count(*) FROM public.legacy", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(legacy_rows, 500);

    drop(client);
    db.drop_all().await;
}

/// Runs one of the installed PostgreSQL client programs, which must succeed.
fn pg_program(name: &str, args: &[&str], pgoptions: Option<&str>) -> String {
    let bindir = tenantry_embedded::PgBinaries::discover()
        .expect("the PostgreSQL binaries the harness uses")
        .bindir()
        .to_owned();
    let mut cmd = std::process::Command::new(bindir.join(name));
    cmd.args(args);
    if let Some(options) = pgoptions {
        cmd.env("PGOPTIONS", options);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{name} {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a database holds, table by table, as the superuser sees it.
async fn counts(client: &Client) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for table in [
        "tenantry.tenants",
        "tenantry.tenant_hierarchy",
        "tenantry.resources",
        "tenantry.api_keys",
        "tenantry.audit_log",
        "tenantry.tenant_tables",
        "public.invoices",
    ] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        out.push((table.to_owned(), n));
    }
    out
}

/// The documented move from one PostgreSQL server to the cluster
/// (docs/scale-out.md): the roles with pg_dumpall --globals-only, the
/// database with pg_dump and pg_restore (DDL propagation off), then
/// `tenantry migrate`, which distributes every table, the team's adopted
/// ones included, with every row once and no trigger run twice.
#[tokio::test]
async fn a_single_node_database_moves_to_the_cluster_with_every_row_by_dump_restore_and_migrate() {
    let Some(url) = citus_url(RERUN) else { return };

    // The single node: two tenants with keys and resources, and the team's
    // own table adopted with rows in it.
    let source = tenantry_db::testing::TestDatabase::new().await;
    let su = source.superuser_client().await;
    su.batch_execute(
        "CREATE TABLE public.invoices (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                       amount numeric NOT NULL, PRIMARY KEY (tenant_id, id));
         SELECT tenantry.adopt_table('public.invoices');
         DO $$ DECLARE t uuid; BEGIN
             FOREACH t IN ARRAY ARRAY[tenantry.create_tenant('acme'), tenantry.create_tenant('globex')] LOOP
                 PERFORM tenantry.set_tenant_context_local(t);
                 INSERT INTO tenantry.resources (name, data)
                     SELECT 'doc ' || g, jsonb_build_object('n', g) FROM generate_series(1, 50) g;
                 INSERT INTO public.invoices (amount) SELECT g FROM generate_series(1, 20) g;
             END LOOP;
         END $$;",
    )
    .await
    .unwrap();
    let before = counts(&su).await;
    assert!(
        before
            .iter()
            .any(|(t, n)| t == "public.invoices" && *n == 40),
        "{before:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("app.dump");
    let globals = dir.path().join("globals.sql");
    let source_url = source.superuser_url();
    std::fs::write(
        &globals,
        pg_program("pg_dumpall", &["--globals-only", "-d", &source_url], None),
    )
    .unwrap();
    pg_program(
        "pg_dump",
        &["-Fc", "-f", dump.to_str().unwrap(), &source_url],
        None,
    );

    let db = ClusterDb::create(&url, "recipe").await;
    // Roles existing already are reported and left as they are.
    let maintenance = tenantry_db::provision::conninfo(&{
        let mut c = db.coordinator_config();
        c.dbname("postgres");
        c
    });
    let _ = std::process::Command::new(
        tenantry_embedded::PgBinaries::discover()
            .unwrap()
            .bindir()
            .join("psql"),
    )
    .args(["-X", "-q", "-f", globals.to_str().unwrap(), &maintenance])
    .output()
    .expect("psql");
    pg_program(
        "pg_restore",
        &[
            "-d",
            &tenantry_db::provision::conninfo(&db.coordinator_config()),
            dump.to_str().unwrap(),
        ],
        Some("-c citus.enable_ddl_propagation=off"),
    );
    let mut client = db.client().await;
    let applied = tenantry_db::migrate::migrate(&mut client)
        .await
        .expect("migrate distributes the restored database");
    assert!(applied.is_empty(), "nothing to apply: {applied:?}");

    let kinds: Vec<(String, String)> = client
        .query(
            "SELECT table_name::text, citus_table_type FROM citus_tables
             WHERE table_name IN ('tenantry.resources'::regclass, 'public.invoices'::regclass, 'tenantry.tenants'::regclass)
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        kinds,
        [
            ("invoices".to_owned(), "distributed".to_owned()),
            ("tenantry.resources".to_owned(), "distributed".to_owned()),
            ("tenantry.tenants".to_owned(), "reference".to_owned()),
        ]
    );
    assert_eq!(counts(&client).await, before, "every row once");
    // The restored rows were copied into the shards, and none stayed in
    // the coordinator's own files of the tables, where a purge would not
    // reach them.
    let left = texts(
        &client,
        "SELECT p.logicalrelid::regclass::text FROM pg_dist_partition p
         WHERE pg_relation_size(p.logicalrelid) > 0 ORDER BY 1",
    )
    .await;
    assert_eq!(left, Vec::<String>::new(), "rows left on the coordinator");

    drop(client);
    db.drop_all().await;
}

/// A resource of `t` named `name`, made through the library; its id.
async fn new_resource(server: &tenantry_db::Database, t: TenantId, name: &str) -> ResourceId {
    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    let id = scope
        .create_resource(&NewResource {
            name: name.into(),
            data: serde_json::json!({}).into(),
        })
        .await
        .unwrap()
        .id;
    scope.commit().await.unwrap();
    id
}

/// A pooled tenant made through the library's administrative scope.
async fn pooled_tenant(
    ops: &mut tenantry_db::AdminScope,
    name: &str,
    parent: Option<TenantId>,
) -> TenantId {
    ops.create_tenant(&NewTenant {
        name: name.into(),
        parent_id: parent,
        isolation: Isolation::Shared,
        settings: None,
    })
    .await
    .unwrap()
    .tenant_id
}

/// Sharing on the cluster: a tenant shares one of its resources (and its
/// child's, so the lock on the resource must reach one shard of a subtree
/// that spans several) with another, which then reads it and cannot change
/// it; the owner lists the share, revokes it, and the other tenant no
/// longer finds the resource; shared again, the other tenant declines it. A key of the tenant rotates, locked the same way.
#[tokio::test]
async fn a_tenant_shares_a_resource_with_another_and_revokes_it_on_the_cluster() {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, key) = migrated(&url, "sharing").await;
    let server = db.server_database(key).await;
    // Made through tenantry: sharing counts against the owner's limits.
    let mut ops = server.admin("admin").await.unwrap();
    let ta = pooled_tenant(&mut ops, "a", None).await;
    let tb = pooled_tenant(&mut ops, "b", None).await;
    // A child of a: a's subtree spans shards, and a shares its child's
    // resource too (the lock on the resource must reach one shard).
    let child = pooled_tenant(&mut ops, "a child", Some(ta)).await;
    ops.commit().await.unwrap();
    let child_rid = new_resource(&server, child, "child's").await;
    let mut scope = server.tenant(TenantContext::new(ta)).await.unwrap();
    let share = scope.share_resource(child_rid, tb).await.unwrap();
    assert_eq!(share.owner_tenant_id, child);
    scope.unshare_resource(child_rid, tb).await.unwrap();
    scope.commit().await.unwrap();
    // Rotating a key locks it by its tenant too (a's subtree spans shards).
    let mut scope = server.tenant(TenantContext::new(ta)).await.unwrap();
    let key = scope
        .create_api_key(&tenantry_db::NewKeyOptions {
            description: "rotated on the cluster".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    scope.commit().await.unwrap();
    let mut scope = server.tenant(TenantContext::new(ta)).await.unwrap();
    let rotated = scope
        .rotate_api_key(key.info.key_id, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_ne!(rotated.info.key_id, key.info.key_id);
    scope.commit().await.unwrap();
    let rid = new_resource(&server, ta, "r1").await;

    let mut scope = server.tenant(TenantContext::new(ta)).await.unwrap();
    let share = scope.share_resource(rid, tb).await.unwrap();
    assert_eq!(share.owner_tenant_id, ta);
    assert_eq!(share.tenant_id, tb);
    scope.commit().await.unwrap();

    let mut scope = server.tenant(TenantContext::new(tb)).await.unwrap();
    let seen = scope.get_resource(rid).await.unwrap();
    assert_eq!(seen.tenant_id, ta);
    let refused = scope
        .update_resource(
            rid,
            &tenantry_db::ResourceUpdate {
                name: Some("b was here".into()),
                data: None,
            },
        )
        .await;
    assert!(matches!(refused, Err(DbError::NotFound(_))), "{refused:?}");
    drop(scope);

    let mut scope = server.tenant(TenantContext::new(ta)).await.unwrap();
    let shares = scope.list_shares(rid).await.unwrap();
    assert_eq!(shares.len(), 1);
    scope.unshare_resource(rid, tb).await.unwrap();
    scope.commit().await.unwrap();

    let mut scope = server.tenant(TenantContext::new(tb)).await.unwrap();
    let gone = scope.get_resource(rid).await;
    assert!(matches!(gone, Err(DbError::NotFound(_))), "{gone:?}");
    drop(scope);

    // Shared again, the target declines it: the owner's row changes on its
    // shard from the target's context, and the owner lists no share.
    let mut scope = server.tenant(TenantContext::new(ta)).await.unwrap();
    scope.share_resource(rid, tb).await.unwrap();
    scope.commit().await.unwrap();
    let mut scope = server.tenant(TenantContext::new(tb)).await.unwrap();
    scope.decline_share(rid).await.unwrap();
    let gone = scope.get_resource(rid).await;
    assert!(matches!(gone, Err(DbError::NotFound(_))), "{gone:?}");
    scope.commit().await.unwrap();
    let mut scope = server.tenant(TenantContext::new(ta)).await.unwrap();
    assert_eq!(scope.list_shares(rid).await.unwrap().len(), 0);
    drop(scope);

    // Deleting a tenant others share with ends those shares: the trigger
    // finds their owners on the shards, then changes each owner's rows from
    // the coordinator (a function that reads the tenants reference table,
    // called inside the shard query, failed with XX000 "cannot execute a
    // distributed query from a query on a shard": a 500 on DELETE).
    let mut scope = server.tenant(TenantContext::new(ta)).await.unwrap();
    scope.share_resource(rid, tb).await.unwrap();
    scope.commit().await.unwrap();
    let mut ops = server.admin("admin").await.unwrap();
    ops.set_status(tb, tenantry_db::TenantStatus::Deleted)
        .await
        .unwrap();
    ops.commit().await.unwrap();
    let mut scope = server.tenant(TenantContext::new(ta)).await.unwrap();
    assert_eq!(scope.list_shares(rid).await.unwrap().len(), 0);
    drop(scope);
    // The metrics refresh (which first deletes request-log rows of tenants
    // purged in the last day, one tenant's shard at a time) runs here too,
    // with a purged tenant's late row to delete.
    admin
        .batch_execute(&format!(
            "INSERT INTO tenantry.purged_tenants (tenant_id, name, deleted_at, purged_by)
                  VALUES ('{tb}', 'b', now(), 'test');
             INSERT INTO tenantry.request_log (tenant_id, method, route, status)
                  VALUES ('{tb}', 'GET', '/v1/tenant', 200);"
        ))
        .await
        .unwrap();
    let mut ops = server.admin("admin").await.unwrap();
    ops.refresh_metrics().await.unwrap();
    ops.commit().await.unwrap();
    let left: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM tenantry.request_log WHERE tenant_id = '{tb}'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);

    drop((admin, server));
    db.drop_all().await;
}

/// Members and roles on the cluster: their triggers fire on the shards,
/// whose tables are named `<table>_<shard id>`; a role's name is still
/// cleaned (the role branch of access_clean_names) and every change is
/// audited once (access_audit switches on the table it was made for).
#[tokio::test]
async fn roles_and_members_made_on_the_cluster_are_cleaned_and_audited_once() {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, key) = migrated(&url, "access").await;
    let server = db.server_database(key).await;
    let mut ops = server.admin("admin").await.unwrap();
    let t = pooled_tenant(&mut ops, "a", None).await;
    ops.commit().await.unwrap();

    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    let role = scope.create_role("  Ops  ", "").await.unwrap();
    assert_eq!(role.name, "Ops");
    scope.commit().await.unwrap();
    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    scope
        .add_member(&tenantry_db::NewMember {
            user_id: None,
            email: "  Ann@Example.com ".into(),
            display_name: Some("Ann".into()),
        })
        .await
        .unwrap();
    scope.commit().await.unwrap();

    let actions: Vec<String> = admin
        .query(
            "SELECT action FROM tenantry.audit_log WHERE tenant_id = $1 AND action IN ('role.created', 'member.added')
             ORDER BY action",
            &[t.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actions, ["member.added", "role.created"]);
    let email: String = admin
        .query_one(
            "SELECT email FROM tenantry.tenant_members WHERE tenant_id = $1",
            &[t.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(email, "Ann@Example.com");

    drop((admin, server));
    db.drop_all().await;
}

/// An operator in psql on the coordinator: a session's context would not
/// reach the workers (its reads would find nothing, like an empty tenant),
/// so the session setters refuse and name the transaction-local one, which
/// reads the tenant's rows on the workers.
#[tokio::test]
async fn an_operators_session_context_is_refused_on_the_cluster_and_the_transaction_local_one_reads_the_tenant(
) {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, _) = migrated(&url, "operator").await;
    let (a, _) = two_tenants_with_resources(&admin, 3).await;

    let err = admin
        .execute("SELECT tenantry.set_tenant_context($1)", &[&a])
        .await
        .unwrap_err();
    let e = err.as_db_error().expect("a database error");
    assert_eq!(e.code().code(), "0A000", "{e:?}");
    assert!(
        e.hint().unwrap_or("").contains("set_tenant_context_local"),
        "{e:?}"
    );
    let err = admin
        .execute("SELECT tenantry.set_admin_context('op')", &[])
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("0A000"));

    for sql in [
        "BEGIN".to_owned(),
        format!("SELECT tenantry.set_tenant_context_local('{a}')"),
        "SELECT set_config('role', 'tenantry_app', true)".to_owned(),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    assert_eq!(resources_of(&admin, a).await, 3);
    admin.batch_execute("COMMIT").await.unwrap();

    drop(admin);
    db.drop_all().await;
}

/// Built-ins of pg_catalog the app role may call or read, a line each.
const CALLABLE: &str = "SELECT coalesce(string_agg(x, E'\\n' ORDER BY x), '') FROM (
     SELECT p.oid::regprocedure::text AS x FROM pg_catalog.pg_proc p
     WHERE p.pronamespace = 'pg_catalog'::regnamespace
       AND has_function_privilege('tenantry_app', p.oid, 'EXECUTE')
     UNION ALL
     SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
     WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind IN ('r', 'v')
       AND has_table_privilege('tenantry_app', c.oid, 'SELECT')) s";

fn granted_to_app(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What a worker lets the app role use that the coordinator does not, but
/// the transaction id and the shard locks Citus itself sends there (the
/// second to a reference table's first worker, as the writing role).
async fn beyond_coordinator(
    admin: &Client,
    coordinator: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    let mut extra = Vec::new();
    for worker in on_workers(admin, CALLABLE).await {
        extra.extend(
            granted_to_app(&worker)
                .difference(coordinator)
                .filter(|f| {
                    f.as_str()
                        != "assign_distributed_transaction_id(integer,bigint,timestamp with time zone)"
                        && f.as_str() != "lock_shard_resources(integer,bigint[])"
                })
                .cloned(),
        );
    }
    extra
}

/// What tenantry takes from PUBLIC in a database (other sessions' activity
/// and locks, the transaction counter, sizes, large objects, Citus's entry
/// points) is taken on every worker too: Citus checks no EXECUTE on the
/// coordinator for a function in a query it sends to a shard, so the
/// worker's privileges are the ones that count. A worker's connections see
/// the other sessions' carried contexts in their query text; through
/// `pg_stat_get_activity` on a worker an app role captured them, and replayed
/// them with `assign_distributed_transaction_id` (which Citus must be able
/// to send there, so it alone stays). Run again, `migrate` takes the same
/// from a worker added since.
#[tokio::test]
async fn the_workers_take_from_the_app_roles_what_the_coordinator_takes() {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, _key) = migrated(&url, "hardened").await;
    let (a, _b) = two_tenants_with_resources(&admin, 1).await;

    let coordinator = granted_to_app(
        &admin
            .query_one(CALLABLE, &[])
            .await
            .unwrap()
            .get::<_, String>(0),
    );
    assert!(!coordinator.contains("pg_stat_get_activity(integer)"));
    assert_eq!(
        beyond_coordinator(&admin, &coordinator).await,
        Vec::<String>::new()
    );

    // The attack: the server's login, as the app role, sends a shard query
    // that reads the worker's sessions.
    let client = db.server_client().await;
    client.batch_execute("SET ROLE tenantry_app").await.unwrap();
    for sql in [
        "SELECT array(SELECT x.query FROM pg_catalog.pg_stat_get_activity(NULL) x) \
         FROM tenantry.resources WHERE tenant_id = $1 GROUP BY ()",
        "SELECT array(SELECT l.pid FROM pg_catalog.pg_locks l) \
         FROM tenantry.resources WHERE tenant_id = $1 GROUP BY ()",
        "SELECT (SELECT count(*) FROM pg_catalog.run_command_on_workers('SELECT 1')) \
         FROM tenantry.resources WHERE tenant_id = $1 GROUP BY ()",
    ] {
        let err = client.query(sql, &[&a]).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }

    // A worker that lost the hardening (as a node added later has none) gets
    // it back when migrate runs again.
    on_workers(
        &admin,
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) TO PUBLIC",
    )
    .await;
    tenantry_db::migrate::migrate(&mut db.client().await)
        .await
        .unwrap();
    assert_eq!(
        beyond_coordinator(&admin, &coordinator).await,
        Vec::<String>::new()
    );

    drop((client, admin));
    db.drop_all().await;
}

/// People on the cluster (migration 0037): a member a tenant adds by a
/// person's id is pending, unseen and not acting, until the person accepts
/// an invitation naming them; then they act there and own the tenant
/// (`accept_invitation` checks for an owner in a statement of its own:
/// Citus refuses a subquery in `UPDATE … SET` on a distributed table).
#[tokio::test]
async fn a_pending_member_joins_by_accepting_an_invitation_on_the_cluster() {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, _admin, key) = migrated(&url, "people").await;
    let server = db.server_database(key).await;
    let mut ops = server.admin("admin").await.unwrap();
    let t = pooled_tenant(&mut ops, "t", None).await;
    ops.commit().await.unwrap();
    let person = UserId::from_uuid(uuid::Uuid::new_v4());
    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    let member = scope
        .add_member(&NewMember {
            user_id: Some(person),
            email: "p@t.test".into(),
            display_name: None,
        })
        .await
        .unwrap();
    assert!(member.pending && !member.is_owner);
    // The invitation in a transaction of its own, as the API makes it: Citus
    // refuses one transaction that writes the same shards as two roles.
    scope.commit().await.unwrap();
    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    let invitation = scope
        .create_invitation(&NewInvitation {
            email: None,
            user_id: Some(person),
            role_id: None,
            valid_for: None,
        })
        .await
        .unwrap();
    scope.commit().await.unwrap();
    assert!(server.member_identity(person, t).await.unwrap().is_none());
    assert!(server.my_tenants(person).await.unwrap().is_empty());

    assert_eq!(
        server
            .accept_invitation(person, &invitation.token, Some("p@t.test"))
            .await
            .unwrap(),
        t
    );
    let identity = server.member_identity(person, t).await.unwrap().unwrap();
    assert!(identity.is_owner);
    let mine = server.my_tenants(person).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert!(mine[0].is_owner);
}

/// Invitations made by a member in their own request and by a key, on the
/// cluster (migration 0069): each records its maker, acceptance reads the
/// maker's standing from the shards, a rotation hands the key's pending
/// invitations to its successor, and once the member is removed and the
/// successor revoked their invitations are refused like revoked ones.
#[tokio::test]
async fn an_invitation_ends_with_the_member_or_key_that_made_it_on_the_cluster() {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, _admin, key) = migrated(&url, "makers").await;
    let server = db.server_database(key).await;
    let mut ops = server.admin("admin").await.unwrap();
    let t = pooled_tenant(&mut ops, "t", None).await;
    ops.commit().await.unwrap();
    // Each write in a transaction of its own, as the API makes them: Citus
    // refuses one transaction that writes the same shards as two roles.
    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    let role = scope
        .create_role("inviter", "invites")
        .await
        .unwrap()
        .role_id;
    scope.commit().await.unwrap();
    let inviting = ["members.invite", "resources.read"];
    for p in inviting {
        let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
        scope.grant_permission(role, p).await.unwrap();
        scope.commit().await.unwrap();
    }
    // The first member owns the tenant; the inviting member is the second.
    let mut members = Vec::new();
    for email in ["owner@t.test", "m@t.test"] {
        let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
        let added = scope
            .add_member(&NewMember {
                user_id: None,
                email: email.into(),
                display_name: None,
            })
            .await
            .unwrap();
        scope.commit().await.unwrap();
        members.push(added.user_id);
    }
    let member = members[1];
    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    scope.set_member_roles(member, &[role]).await.unwrap();
    scope.commit().await.unwrap();
    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    let key_id = scope
        .create_api_key(&NewKeyOptions {
            description: "inviter".into(),
            role_id: Some(role),
            ..NewKeyOptions::default()
        })
        .await
        .unwrap()
        .info
        .key_id;
    scope.commit().await.unwrap();

    let as_member = TenantContext::new(t)
        .with_user(Some(member))
        .with_actor(format!("user:{member}"))
        .with_permissions(inviting.into_iter().collect());
    let as_key = TenantContext::new(t)
        .with_actor(format!("key:{key_id}"))
        .with_permissions(inviting.into_iter().collect());
    let mut tokens = Vec::new();
    for (n, context) in [&as_member, &as_member, &as_key, &as_key]
        .into_iter()
        .enumerate()
    {
        let mut scope = server.tenant(context.clone()).await.unwrap();
        let invitation = scope
            .create_invitation(&NewInvitation {
                email: Some(format!("p{n}@t.test")),
                user_id: None,
                role_id: Some(role),
                valid_for: None,
            })
            .await
            .unwrap();
        scope.commit().await.unwrap();
        tokens.push(invitation.token);
    }
    let accept = |n: usize| {
        let (server, token) = (&server, &tokens[n]);
        async move {
            server
                .accept_invitation(
                    UserId::from_uuid(uuid::Uuid::new_v4()),
                    token,
                    Some(&format!("p{n}@t.test")),
                )
                .await
        }
    };
    assert_eq!(accept(0).await.unwrap(), t);
    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    scope.remove_member(member).await.unwrap();
    scope.commit().await.unwrap();
    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    let successor = scope
        .rotate_api_key(key_id, std::time::Duration::ZERO)
        .await
        .unwrap()
        .info
        .key_id;
    scope.commit().await.unwrap();
    assert!(
        matches!(accept(1).await, Err(DbError::NotFound(_))),
        "the member removed"
    );
    assert!(statuses(&server, t)
        .await
        .contains(&("p1@t.test".into(), "pending".into())));
    assert_eq!(
        accept(2).await.unwrap(),
        t,
        "on the rotated key's successor"
    );
    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    scope.revoke_api_key(successor).await.unwrap();
    scope.commit().await.unwrap();
    assert!(
        matches!(accept(3).await, Err(DbError::NotFound(_))),
        "the successor revoked"
    );
    // The member's removal runs as its caller and leaves their invitations
    // listed pending on a cluster (one transaction may not touch the
    // placements as two roles), refused all the same; the key's revocation
    // runs as the owner throughout and revokes the tenant's invitations whose
    // maker is gone, the member's among them.
    assert_eq!(
        statuses(&server, t).await,
        [
            ("p0@t.test", "accepted"),
            ("p1@t.test", "revoked"),
            ("p2@t.test", "accepted"),
            ("p3@t.test", "revoked"),
        ]
        .map(|(e, s)| (e.to_owned(), s.to_owned()))
    );
}

/// Each invitation of `t` as (email, status), sorted.
async fn statuses(server: &tenantry_db::Database, t: TenantId) -> Vec<(String, String)> {
    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    let mut statuses: Vec<(String, String)> = scope
        .list_invitations()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.email.unwrap_or_default(), i.status))
        .collect();
    scope.commit().await.unwrap();
    statuses.sort();
    statuses
}

/// A team's keys on the cluster: a taken name, a reference to a missing row
/// and a row still referenced are told in the same words and by the same
/// constraint and table names as on one node, without the shards' ids
/// (PostgreSQL reports them of the shard, and a coordinator relays a
/// worker's error without its fields: `Conflict::constraint` was `None` and
/// the 409's words named `projects_tenant_id_name_key_102041`).
#[tokio::test]
async fn a_teams_key_conflicts_on_the_cluster_name_its_own_constraints_not_the_shards() {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, key) = migrated(&url, "keys").await;
    admin
        .batch_execute(
            "CREATE TABLE public.projects (tenant_id uuid NOT NULL, id int NOT NULL, name text NOT NULL,
                                           PRIMARY KEY (tenant_id, id), UNIQUE (tenant_id, name))",
        )
        .await
        .unwrap();
    admin
        .batch_execute(
            "CREATE TABLE public.tasks (tenant_id uuid NOT NULL, id int NOT NULL, project_id int NOT NULL,
                                        PRIMARY KEY (tenant_id, id),
                                        FOREIGN KEY (tenant_id, project_id) REFERENCES public.projects (tenant_id, id))",
        )
        .await
        .unwrap();
    for table in ["public.projects", "public.tasks"] {
        admin
            .execute("SELECT tenantry.adopt_table($1::text::regclass)", &[&table])
            .await
            .unwrap_or_else(|e| panic!("adopting {table}: {e}"));
    }
    let server = db.server_database(key).await;
    let mut ops = server.admin("admin").await.unwrap();
    let t = pooled_tenant(&mut ops, "a", None).await;
    ops.commit().await.unwrap();
    let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
    scope
        .execute(
            "INSERT INTO public.projects (id, name) VALUES (1, 'p')",
            &[],
        )
        .await
        .unwrap();
    scope
        .execute(
            "INSERT INTO public.tasks (id, project_id) VALUES (1, 1)",
            &[],
        )
        .await
        .unwrap();
    scope.commit().await.unwrap();

    // Each refusal in a transaction of its own: an error ends one.
    let refused = |sql: &'static str| {
        let server = &server;
        async move {
            let mut scope = server.tenant(TenantContext::new(t)).await.unwrap();
            scope.execute(sql, &[]).await.unwrap_err()
        }
    };
    let shard_id = |text: &str| {
        text.split(|c: char| !c.is_ascii_digit())
            .any(|n| n.len() >= 6)
    };

    for (sql, constraint) in [
        (
            "INSERT INTO public.projects (id, name) VALUES (2, 'p')",
            "projects_tenant_id_name_key",
        ),
        (
            "INSERT INTO public.projects (id, name) VALUES (1, 'q')",
            "projects_pkey",
        ),
    ] {
        match refused(sql).await {
            DbError::Conflict(conflict) => {
                assert_eq!(conflict.constraint(), Some(constraint), "{conflict}");
                assert!(!shard_id(conflict.message()), "{conflict}");
                assert!(conflict.message().contains("already exists"), "{conflict}");
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    match refused("INSERT INTO public.tasks (id, project_id) VALUES (2, 9)").await {
        DbError::NotFound(message) => {
            assert!(!shard_id(&message), "{message}");
            assert!(message.contains("projects"), "{message}");
            assert!(message.contains("tasks"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match refused("DELETE FROM public.projects WHERE id = 1").await {
        DbError::Conflict(conflict) => assert_eq!(
            conflict.message(),
            "the row is still named by rows of tasks"
        ),
        other => panic!("{other:?}"),
    }

    drop(admin);
    db.drop_all().await;
}

/// The usage upkeep on a cluster (migration 0058): each ended hour of the
/// distributed request log is counted once into the distributed
/// `tenant_metric_hours`, the guide's `tenant_metrics` answers what its own
/// definition answers, the upkeep rolls nothing up twice, and a tenant's
/// hours are counted again on demand.
#[tokio::test]
async fn the_usage_roll_up_answers_as_the_guides_definition_on_the_cluster() {
    let Some(url) = citus_url(RERUN) else { return };
    let (_db, admin, _key) = migrated(&url, "usage").await;
    let (a, b) = two_tenants_with_resources(&admin, 1).await;
    admin
        .batch_execute(&format!(
            "INSERT INTO tenantry.request_log (tenant_id, created_at, user_id, method, route, status, latency_ms)
             SELECT CASE WHEN i % 2 = 0 THEN '{a}'::uuid ELSE '{b}'::uuid END,
                    now() - (i % 30) * interval '1 hour',
                    CASE WHEN i % 3 = 0 THEN gen_random_uuid() END, 'GET', '/v1/resources',
                    (ARRAY[200, 404, 500])[1 + i % 3], (i % 17) * 2.5
             FROM generate_series(1, 600) i"
        ))
        .await
        .unwrap();
    let rows = |sql: &'static str| {
        let admin = &admin;
        async move {
            let mut v: Vec<String> = admin
                .query(
                    &format!(
                        "SELECT format('%s %s %s %s %s %s', tenant_id, hour, request_count, unique_users,
                                       client_errors + server_errors, round(p95_latency_ms::numeric, 6))
                         FROM ({sql}) m"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            v.sort();
            v
        }
    };
    let guide = "SELECT tenant_id, date_trunc('hour', created_at, 'UTC') AS hour, count(*) AS request_count,
                        count(DISTINCT user_id) AS unique_users,
                        count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS client_errors,
                        count(*) FILTER (WHERE status >= 500) AS server_errors,
                        percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_latency_ms
                 FROM tenantry.request_log WHERE created_at > now() - interval '30 days' GROUP BY 1, 2";
    let expected = rows(guide).await;
    assert!(expected.len() >= 25, "{}", expected.len());
    admin
        .batch_execute("SELECT tenantry.refresh_tenant_metrics()")
        .await
        .unwrap();
    assert_eq!(
        rows("SELECT * FROM tenantry.tenant_metrics").await,
        expected
    );
    assert_eq!(
        rows("SELECT * FROM tenantry.tenant_metrics_now").await,
        expected
    );
    let rolled: i64 = admin
        .query_one("SELECT count(*) FROM tenantry.tenant_metric_hours", &[])
        .await
        .unwrap()
        .get(0);
    assert!(rolled >= 25, "{rolled}");
    let again: i32 = admin
        .query_one("SELECT tenantry.usage_upkeep()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(again <= 1, "{again} hours rolled up twice");
    admin
        .query_one("SELECT tenantry.recount_tenant_metrics($1)", &[&a])
        .await
        .unwrap();
    assert_eq!(
        rows("SELECT * FROM tenantry.tenant_metrics_now").await,
        expected
    );
}

/// Citus 13 copies a table's policies to its shards without `AS
/// RESTRICTIVE`: on the shards every restrictive policy was one more
/// permissive one, so a member holding `resources.read` alone wrote
/// resources (found running the attack suite on a cluster). The first
/// install makes them restrictive on every placement.
#[tokio::test]
async fn restrictive_policies_stay_restrictive_on_the_shards_and_a_reader_writes_nothing() {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, key) = migrated(&url, "restrictive").await;
    let tables: Vec<(String, i64)> = admin
        .query(
            "SELECT c.oid::regclass::text, count(*) FROM pg_policy p
               JOIN pg_class c ON c.oid = p.polrelid
               JOIN pg_dist_partition d ON d.logicalrelid = c.oid
              WHERE NOT p.polpermissive GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        tables.iter().any(|(t, _)| t == "tenantry.resources"),
        "{tables:?}"
    );
    for (table, restrictive) in &tables {
        for (shard, result) in on_placements(
            &admin,
            table,
            "SELECT count(*) FROM pg_policy WHERE polrelid = '%s'::regclass AND NOT polpermissive",
        )
        .await
        {
            assert_eq!(result, restrictive.to_string(), "{table} shard {shard}");
        }
    }

    let server = db.server_database(key).await;
    let mut ops = server.admin("admin").await.unwrap();
    let t = pooled_tenant(&mut ops, "reader", None).await;
    ops.commit().await.unwrap();
    let reader = TenantContext::new(t).with_permissions(["resources.read"].into_iter().collect());
    let mut scope = server.tenant(reader).await.unwrap();
    let written = scope
        .create_resource(&NewResource {
            name: "not mine to write".into(),
            data: serde_json::json!({}).into(),
        })
        .await;
    // Refused by the shard's restrictive policy (42501), as on one server.
    assert!(
        matches!(&written, Err(DbError::Forbidden(m)) if m.contains("resources_insert_needs_permission")),
        "{written:?}"
    );
    drop(scope);
    let rows: i64 = admin
        .query_one(
            "SELECT count(*) FROM tenantry.resources WHERE tenant_id = $1",
            &[t.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    drop((admin, server));
    db.drop_all().await;
}

/// Sign-up on the cluster: an operator's plain-SQL change of the sign-up
/// policy is recorded once (the policy is a reference table, whose every
/// copy fires its trigger: the coordinator's alone records), and a person's
/// creation of their own tenant under an idempotency key (kept in a
/// reference table) makes one tenant however often it is retried, and its
/// key expires with the others.
#[tokio::test]
async fn a_persons_retried_tenant_creation_makes_one_tenant_and_a_policy_change_is_recorded_once_on_the_cluster(
) {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, key) = migrated(&url, "signup").await;
    admin
        .batch_execute("UPDATE tenantry.signup_policy SET tenants_per_person = 2")
        .await
        .unwrap();
    let logged: i64 = admin
        .query_one(
            "SELECT count(*) FROM tenantry.operator_audit_log WHERE action = 'policy.changed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 1);

    let server = db.server_database(key).await;
    let person = UserId::from_uuid(uuid::Uuid::new_v4());
    let request = tenantry_db::IdempotentRequest::new(
        tenantry_db::IdempotencyKey::parse("signup-1").unwrap(),
        "POST",
        "/v1/me/tenants",
        br#"{"name":"mine"}"#,
    );
    let respond = |t: &tenantry_db::MyTenant| {
        Ok(tenantry_db::StoredResponse {
            status: 201,
            body: Some(serde_json::to_vec(t).unwrap()),
        })
    };
    let first = server
        .create_my_tenant_idempotent(person, "mine", "me@p.test", Some(&request), respond)
        .await
        .unwrap();
    let tenantry_db::Idempotent::Fresh(made) = first else {
        panic!("the first request creates")
    };
    let again = server
        .create_my_tenant_idempotent(person, "mine", "me@p.test", Some(&request), respond)
        .await
        .unwrap();
    let tenantry_db::Idempotent::Replayed(stored) = again else {
        panic!("the retry replays")
    };
    assert_eq!(stored.body, Some(serde_json::to_vec(&made).unwrap()));
    let mine = server.my_tenants(person).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].tenant_id, made.tenant_id);

    admin
        .batch_execute(
            "UPDATE tenantry.person_idempotency_keys SET created_at = now() - interval '25 hours'",
        )
        .await
        .unwrap();
    let mut ops = server.admin("admin").await.unwrap();
    assert_eq!(ops.expire_idempotency_keys(100).await.unwrap(), 1);
    ops.commit().await.unwrap();
}

/// A table adopted on the cluster with a write permission: Citus copies its
/// policies to every shard without `AS RESTRICTIVE`, so the write policies
/// are permissive ones that name the tenant's rows themselves (when they
/// were restrictive policies of the permission alone, each became one more
/// permissive policy on the shards, OR'd with the tenant's, and a member
/// holding the permission wrote every tenant's rows). A writer of one tenant
/// neither inserts into, changes nor deletes another's rows, and a reader
/// writes nothing, on every shard.
#[tokio::test]
async fn a_table_adopted_on_the_cluster_with_a_write_permission_lets_a_writer_write_only_its_own_rows(
) {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, key) = migrated(&url, "writeperm").await;
    admin
        .batch_execute(
            "CREATE TABLE public.bills (tenant_id uuid NOT NULL, id int NOT NULL, amount int NOT NULL,
                                        PRIMARY KEY (tenant_id, id))",
        )
        .await
        .unwrap();
    admin
        .batch_execute("SELECT tenantry.define_permission('bills.write', 'Write bills')")
        .await
        .unwrap();
    admin
        .batch_execute(
            "SELECT tenantry.adopt_table('public.bills', write_permission => 'bills.write')",
        )
        .await
        .expect("adopting with a write permission on the cluster");
    let restrictive = on_placements(
        &admin,
        "public.bills",
        "SELECT count(*) FILTER (WHERE NOT polpermissive) || ' ' || count(*) FILTER (
                    WHERE starts_with(polname, 'tenantry_write_permission_')
                      AND coalesce(pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid))
                          ~ 'visible_tenant_ids.*tenantry.authorize')
           FROM pg_policy WHERE polrelid = '%s'::regclass",
    )
    .await;
    assert!(restrictive.len() >= 32, "{} placements", restrictive.len());
    for (shard, counts) in &restrictive {
        assert_eq!(
            counts, "0 3",
            "shard {shard}: restrictive, write policies naming the tenant's rows"
        );
    }

    let server = db.server_database(key).await;
    let mut ops = server.admin("admin").await.unwrap();
    let a = pooled_tenant(&mut ops, "writer a", None).await;
    let b = pooled_tenant(&mut ops, "victim b", None).await;
    ops.commit().await.unwrap();
    let writer = |t: TenantId| {
        TenantContext::new(t).with_permissions(["bills.write".to_string()].into_iter().collect())
    };
    let mut scope = server.tenant(writer(b)).await.unwrap();
    scope
        .execute(
            "INSERT INTO public.bills (id, amount) VALUES (1, 100), (2, 200)",
            &[],
        )
        .await
        .expect("b writes its own bills");
    scope.commit().await.unwrap();

    let mut scope = server.tenant(writer(a)).await.unwrap();
    scope
        .execute("INSERT INTO public.bills (id, amount) VALUES (1, 5)", &[])
        .await
        .expect("a writes its own bill");
    let changed = scope
        .execute("UPDATE public.bills SET amount = 0", &[])
        .await
        .unwrap();
    assert_eq!(changed, 1, "a's update reaches its own bill only");
    let deleted = scope
        .execute("DELETE FROM public.bills WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(deleted, 0, "b's bill 2 is not a's to delete");
    scope.commit().await.unwrap();
    let mut scope = server.tenant(writer(a)).await.unwrap();
    let forged = scope
        .execute(
            "INSERT INTO public.bills (tenant_id, id, amount) VALUES ($1, 3, 1)",
            &[b.as_uuid()],
        )
        .await;
    assert!(matches!(forged, Err(DbError::Forbidden(_))), "{forged:?}");
    drop(scope);

    let reader = TenantContext::new(a)
        .with_permissions(["resources.read".to_string()].into_iter().collect());
    let mut scope = server.tenant(reader).await.unwrap();
    let inserted = scope
        .execute("INSERT INTO public.bills (id, amount) VALUES (9, 9)", &[])
        .await;
    // Refused for the permission, told apart from a row of another tenant.
    assert!(
        matches!(&inserted, Err(DbError::PermissionDenied(m)) if m.contains("tenantry_write_permission_insert")),
        "{inserted:?}"
    );
    drop(scope);
    let mut scope = server
        .tenant(
            TenantContext::new(a)
                .with_permissions(["resources.read".to_string()].into_iter().collect()),
        )
        .await
        .unwrap();
    let changed = scope
        .execute("UPDATE public.bills SET amount = 7", &[])
        .await
        .unwrap();
    assert_eq!(changed, 0, "a reader changes nothing");
    drop(scope);

    let rows: Vec<(uuid::Uuid, i32, i32)> = admin
        .query(
            "SELECT tenant_id, id, amount FROM public.bills ORDER BY tenant_id = $1, id",
            &[b.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (*a.as_uuid(), 1, 0),
            (*b.as_uuid(), 1, 100),
            (*b.as_uuid(), 2, 200)
        ]
    );

    // A restrictive policy of the team's would be a permissive one on the
    // shards: adopting a table that has one is refused, changing nothing,
    // and one made after the adoption is a finding of the doctor.
    admin
        .batch_execute(
            "CREATE TABLE public.notes (tenant_id uuid NOT NULL, id int NOT NULL, body text,
                                        PRIMARY KEY (tenant_id, id));
             ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
             CREATE POLICY not_empty ON public.notes AS RESTRICTIVE USING (body <> '')",
        )
        .await
        .unwrap();
    let refused = admin
        .batch_execute("SELECT tenantry.adopt_table('public.notes')")
        .await
        .unwrap_err();
    let refused = refused.as_db_error().expect("a database error");
    assert_eq!(refused.code().code(), "TN422", "{}", refused.message());
    assert!(
        refused.message().contains("not_empty") && refused.message().contains("Citus"),
        "{}",
        refused.message()
    );
    let adopted: i64 = admin
        .query_one(
            "SELECT count(*) FROM tenantry.tenant_tables WHERE table_id = 'public.notes'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let distributed: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 'public.notes'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (adopted, distributed),
        (0, 0),
        "the refused adoption changed nothing"
    );
    admin
        .batch_execute(
            "CREATE POLICY positive ON public.bills AS RESTRICTIVE FOR SELECT TO tenantry_app_own USING (amount > 0)",
        )
        .await
        .unwrap();
    let findings: Vec<(String, String)> = admin
        .query(
            "SELECT problem, fix FROM tenantry.table_problems('public.bills')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        findings
            .iter()
            .any(|(problem, fix)| problem.contains("positive")
                && problem.contains("Citus")
                && fix.starts_with("DROP POLICY positive ON public.bills")),
        "{findings:?}"
    );
    drop((admin, server));
    db.drop_all().await;
}

/// A shard moved by hand (as the rebalancer moves them after a node is
/// added) is made with the coordinator's grants and with its policies
/// without `AS RESTRICTIVE`: on it every insert was refused (the defaulted
/// columns' grants are the shards' own), and a tenant holding
/// `resources.read` alone changed its resources. The doctor's check names
/// the table, and `tenantry migrate` (nothing pending) gives the moved
/// placements their grants and restrictive policies again: the reader is
/// refused, a writer inserts, and a second check finds nothing.
#[tokio::test]
async fn a_shard_moved_by_hand_is_named_by_the_doctor_and_migrate_restricts_its_policies_again() {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, key) = migrated(&url, "moved").await;
    let server = db.server_database(key).await;
    let mut ops = server.admin("admin").await.unwrap();
    let t = pooled_tenant(&mut ops, "moved", None).await;
    ops.commit().await.unwrap();
    let id = new_resource(&server, t, "before the move").await;
    assert!(
        tenantry_db::citus::shards_with_permissive_copies(&admin)
            .await
            .unwrap()
            .is_empty(),
        "right after the install"
    );
    // A distributed table of the team's whose restrictive policy has `%`
    // in its name and condition, which Citus's format() of each
    // placement's command must not take for its own.
    admin
        .batch_execute(
            r#"CREATE TABLE public.memo (tenant_id uuid NOT NULL, id int NOT NULL, note text,
                                          PRIMARY KEY (tenant_id, id));
               ALTER TABLE public.memo ENABLE ROW LEVEL SECURITY;
               CREATE POLICY "no_x_100%" ON public.memo AS RESTRICTIVE USING (note NOT LIKE '%x');
               SELECT create_distributed_table('public.memo', 'tenant_id');"#,
        )
        .await
        .unwrap();
    let (shard, host, port): (i64, String, i32) = {
        let r = admin
            .query_one(
                "SELECT p.shardid, n.nodename::text, n.nodeport FROM pg_dist_placement p
                   JOIN pg_dist_node n ON n.groupid = p.groupid
                  WHERE p.shardid = get_shard_id_for_distribution_column('tenantry.resources', $1::uuid)",
                &[t.as_uuid()],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let (to_host, to_port): (String, i32) = {
        let r = admin
            .query_one(
                "SELECT nodename::text, nodeport FROM pg_dist_node
                 WHERE isactive AND shouldhaveshards AND (nodename, nodeport) <> ($1, $2) LIMIT 1",
                &[&host, &port],
            )
            .await
            .expect("a second worker");
        (r.get(0), r.get(1))
    };
    admin
        .execute(
            "SELECT citus_move_shard_placement($1, $2, $3, $4, $5, shard_transfer_mode => 'block_writes')",
            &[&shard, &host, &port, &to_host, &to_port],
        )
        .await
        .unwrap();
    let as_holder = |permissions: &'static [&'static str]| {
        TenantContext::new(t).with_permissions(permissions.iter().map(|p| p.to_string()).collect())
    };
    let rename = |name: &'static str| {
        let server = &server;
        async move {
            let mut scope = server.tenant(as_holder(&["resources.read"])).await.unwrap();
            let renamed = scope
                .update_resource(
                    id,
                    &tenantry_db::ResourceUpdate {
                        name: Some(name.into()),
                        data: None,
                    },
                )
                .await;
            if renamed.is_ok() {
                scope.commit().await.unwrap();
            }
            renamed
        }
    };
    let insert = || {
        let server = &server;
        async move {
            let mut scope = server
                .tenant(as_holder(&["resources.write"]))
                .await
                .unwrap();
            let made = scope
                .create_resource(&NewResource {
                    name: "after the move".into(),
                    data: serde_json::json!({}).into(),
                })
                .await;
            if made.is_ok() {
                scope.commit().await.unwrap();
            }
            made
        }
    };
    let wrong = tenantry_db::citus::shards_with_permissive_copies(&admin)
        .await
        .unwrap();
    assert!(
        wrong
            .iter()
            .any(|(table, n)| table == "tenantry.resources" && *n >= 1)
            && wrong.iter().any(|(table, _)| table == "public.memo"),
        "{wrong:?}"
    );
    // What the move broke, shown: the reader's change went through, and a
    // writer's insert is refused by the moved shard's grants.
    assert!(rename("changed by a reader").await.is_ok());
    let refused = insert().await;
    assert!(
        matches!(&refused, Err(DbError::Forbidden(m)) if m.contains("permission denied for table resources_")),
        "{refused:?}"
    );

    let mut client = db.client().await;
    tenantry_db::migrate::migrate(&mut client)
        .await
        .expect("migrate with nothing pending on the cluster");
    assert!(
        tenantry_db::citus::shards_with_permissive_copies(&admin)
            .await
            .unwrap()
            .is_empty(),
        "restrictive again on every placement"
    );
    assert!(
        rename("changed by a reader again").await.is_err(),
        "the reader is refused once more"
    );
    insert().await.expect("a writer inserts on the moved shard");
    drop((admin, client, server));
    db.drop_all().await;
}

/// Citus functions open to PUBLIC that reach past one tenant's rows are
/// refused to every role the server's login can become, on the coordinator
/// and in a query sent to a shard: holding every shard's lock in one's
/// transaction (a tenant stalled other tenants' multi-shard writes for as
/// long as it held them: found by a review of the cluster), connecting from
/// the database host to any host and port, listing every node's
/// transactions, resetting the operator's per-tenant statistics, reading
/// the disk's free space (the sizes' pg_monitor grant).
#[tokio::test]
async fn a_tenant_on_the_cluster_cannot_lock_other_tenants_shards_probe_hosts_or_list_every_nodes_transactions(
) {
    let Some(url) = citus_url(RERUN) else { return };
    let (db, admin, key) = migrated(&url, "citus_public").await;
    let (a, _b) = two_tenants_with_resources(&admin, 2).await;
    let shards = texts(
        &admin,
        "SELECT shardid::text FROM pg_dist_shard WHERE logicalrelid = 'tenantry.resources'::regclass ORDER BY 1",
    )
    .await;
    let calls = [
        format!(
            "SELECT lock_shard_resources(7, ARRAY[{}]::bigint[])",
            shards.join(", ")
        ),
        "SELECT citus_check_connection_to_node('localhost', 1)".to_owned(),
        "SELECT citus_check_cluster_node_health()".to_owned(),
        "SELECT count(*) FROM get_global_active_transactions()".to_owned(),
        "SELECT count(*) FROM get_all_active_transactions()".to_owned(),
        "SELECT citus_stat_tenants_local_reset()".to_owned(),
        "SELECT citus_stat_tenants_reset()".to_owned(),
        "SELECT * FROM citus_local_disk_space_stats()".to_owned(),
    ];
    let client = db.server_client().await;
    for role in [
        "tenantry_app",
        "tenantry_app_own",
        "tenantry_app_shared",
        "tenantry_admin",
        "tenantry_logger",
    ] {
        for call in &calls {
            begin_signed(&client, &key, a).await;
            client
                .batch_execute(&format!("SELECT set_config('role', '{role}', true)"))
                .await
                .unwrap();
            let err = client.batch_execute(call).await.unwrap_err();
            assert_eq!(
                err.code(),
                Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
                "{role}: {call}: {err}"
            );
            client.batch_execute("ROLLBACK").await.unwrap();
        }
    }
    // Sent to a shard in a tenant's query, the worker refuses them too.
    begin_signed(&client, &key, a).await;
    client
        .batch_execute("SELECT set_config('role', 'tenantry_app', true)")
        .await
        .unwrap();
    let err = client
        .query(
            "SELECT (SELECT count(*) FROM pg_catalog.get_all_active_transactions()) \
             FROM tenantry.resources WHERE tenant_id = $1 GROUP BY ()",
            &[&a],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
    client.batch_execute("ROLLBACK").await.unwrap();

    drop((client, admin));
    db.drop_all().await;
}
