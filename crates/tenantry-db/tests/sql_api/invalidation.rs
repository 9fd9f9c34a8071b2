//! Cache invalidation: each change that a server's caches must not outlive
//! notifies `tenantry_invalidate` with the tag of what changed (and nothing
//! else does), seen by a session that LISTENs as the server's login.

use std::{collections::BTreeSet, time::Duration};

use serde_json::json;
use tenantry_db::{testing::TestDatabase, Invalidation, KeyId, TenantId};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use uuid::Uuid;

use crate::common::{create_tenant, exec, set_status};
use crate::helpers::{admin, app, set_context};

/// A session LISTENing on `tenantry_invalidate` as `tenantry_server` (any
/// login can: LISTEN cannot be revoked).
struct Listener {
    payloads: mpsc::UnboundedReceiver<String>,
    client: Client,
    channel: String,
    barriers: u32,
}

impl Listener {
    async fn start(tdb: &TestDatabase) -> Self {
        Self::on(tdb, "tenantry_invalidate").await
    }

    /// A session LISTENing on `channel` as `tenantry_server`.
    async fn on(tdb: &TestDatabase, channel: &str) -> Self {
        let (client, mut connection) = tdb.server_config().connect(NoTls).await.unwrap();
        let (tx, payloads) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) =
                futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let AsyncMessage::Notification(n) = message {
                    let _ = tx.send(n.payload().to_owned());
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .unwrap();
        Self {
            payloads,
            client,
            channel: channel.to_owned(),
            barriers: 0,
        }
    }

    /// Every payload of the transactions committed before the call: read
    /// until a marker this session sends then comes back (PostgreSQL
    /// delivers notifications in commit order). A quiet 300 ms was the
    /// bound: a loaded machine delivered later, and the late payload went
    /// to the next step.
    async fn received(&mut self) -> BTreeSet<String> {
        self.barriers += 1;
        let barrier = format!("test-barrier-{}", self.barriers);
        self.client
            .execute("SELECT pg_notify($1, $2)", &[&self.channel, &barrier])
            .await
            .unwrap();
        let mut got = BTreeSet::new();
        loop {
            let p = tokio::time::timeout(Duration::from_secs(30), self.payloads.recv())
                .await
                .expect("the marker came back within 30 s")
                .expect("the listening session is open");
            if p == barrier {
                return got;
            }
            got.insert(p);
        }
    }
}

fn key(id: Uuid) -> String {
    Invalidation::key(KeyId::from_uuid(id)).payload()
}

fn tenants(ids: &[Uuid]) -> BTreeSet<String> {
    ids.iter()
        .map(|t| Invalidation::tenant(TenantId::from_uuid(*t)).payload())
        .collect()
}

fn set(payloads: &[String]) -> BTreeSet<String> {
    payloads.iter().cloned().collect()
}

/// Creates a key of the app session's current tenant; returns (key, key id).
async fn create_key(app: &Client) -> (String, Uuid) {
    let k: String = app
        .query_one("SELECT create_api_key('k', '{}')", &[])
        .await
        .unwrap()
        .get(0);
    let id: String = app
        .query_one("SELECT verify_api_key($1)->>'key_id'", &[&k])
        .await
        .unwrap()
        .get(0);
    (k, id.parse().unwrap())
}

#[tokio::test]
async fn revoking_rotating_expiring_and_deleting_a_key_notify_its_tag_and_creating_or_using_one_nothing(
) {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let su = tdb.superuser_client().await;
    let t = create_tenant(&admin, "t", None).await;
    set_context(&app, t).await;
    let mut listener = Listener::start(&tdb).await;

    let (k1, k1_id) = create_key(&app).await;
    // Verification writes last_used_at: silent.
    app.query_one("SELECT verify_api_key($1)", &[&k1])
        .await
        .unwrap();
    assert_eq!(listener.received().await, BTreeSet::new(), "create, verify");

    app.execute("SELECT revoke_api_key($1)", &[&k1_id])
        .await
        .unwrap();
    assert_eq!(listener.received().await, set(&[key(k1_id)]), "revoke");

    let (_, k2_id) = create_key(&app).await;
    app.query_one("SELECT rotate_api_key($1, interval '1 hour')", &[&k2_id])
        .await
        .unwrap();
    // The successor is new (nothing cached it); the old key's expiry moved.
    assert_eq!(listener.received().await, set(&[key(k2_id)]), "rotate");

    su.execute(
        "UPDATE tenantry.api_keys SET expires_at = now() WHERE key_id = $1",
        &[&k2_id],
    )
    .await
    .unwrap();
    assert_eq!(listener.received().await, set(&[key(k2_id)]), "expiry");

    let (_, k3_id) = create_key(&app).await;
    su.execute(
        "DELETE FROM tenantry.api_key_lookup WHERE key_id = $1",
        &[&k3_id],
    )
    .await
    .unwrap();
    su.execute("DELETE FROM tenantry.api_keys WHERE key_id = $1", &[&k3_id])
        .await
        .unwrap();
    assert_eq!(listener.received().await, set(&[key(k3_id)]), "delete");
}

#[tokio::test]
async fn suspending_and_deleting_a_tenant_notify_it_and_its_ancestors_and_settings_only_itself() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let mut listener = Listener::start(&tdb).await;
    let root = create_tenant(&admin, "root", None).await;
    assert_eq!(
        listener.received().await,
        BTreeSet::new(),
        "a root's creation"
    );
    let child = create_tenant(&admin, "child", Some(root)).await;
    assert_eq!(listener.received().await, tenants(&[root]), "a child's");
    let grandchild = create_tenant(&admin, "grandchild", Some(child)).await;
    assert_eq!(
        listener.received().await,
        tenants(&[child, root]),
        "a grandchild's creation: every ancestor's subtree grew"
    );
    exec(
        &admin,
        &format!("UPDATE tenantry.tenants SET name = 'renamed' WHERE tenant_id = '{child}'"),
    )
    .await;
    assert_eq!(listener.received().await, BTreeSet::new(), "rename");
    // An import runs with row triggers off and says the same itself, and
    // names the imported id.
    let su = tdb.superuser_client().await;
    let import = |id: Uuid, row: serde_json::Value| {
        let su = &su;
        async move {
            su.batch_execute("BEGIN").await.unwrap();
            su.execute("SELECT tenantry.import_tenant($1, $2)", &[&id, &row])
                .await
                .unwrap();
            su.execute("SELECT tenantry.import_tenant_finish($1)", &[&id])
                .await
                .unwrap();
            su.batch_execute("COMMIT").await.unwrap();
        }
    };
    let imported = Uuid::new_v4();
    import(imported, json!({ "name": "imported", "parent_id": child })).await;
    assert_eq!(
        listener.received().await,
        tenants(&[imported, child, root]),
        "an import under child: the id itself (servers may hold answers about it) and its ancestors"
    );
    let imported = Uuid::new_v4();
    import(imported, json!({ "name": "imported root" })).await;
    assert_eq!(
        listener.received().await,
        tenants(&[imported]),
        "a root's import"
    );

    set_status(&admin, grandchild, "suspended").await;
    assert_eq!(
        listener.received().await,
        tenants(&[grandchild, child, root]),
        "suspend"
    );
    set_status(&admin, grandchild, "active").await;
    assert_eq!(
        listener.received().await,
        tenants(&[grandchild, child, root]),
        "activate"
    );

    admin
        .execute(
            "UPDATE tenantry.tenants SET settings = $1 WHERE tenant_id = $2",
            &[&json!({"rate_limit_per_second": 5}), &child],
        )
        .await
        .unwrap();
    assert_eq!(listener.received().await, tenants(&[child]), "settings");

    set_status(&admin, grandchild, "deleted").await;
    assert_eq!(
        listener.received().await,
        tenants(&[grandchild, child, root]),
        "delete"
    );
}

#[tokio::test]
async fn moving_a_subtree_notifies_its_tenants_and_their_old_and_new_ancestors() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let mut listener = Listener::start(&tdb).await;
    let old_root = create_tenant(&admin, "old", None).await;
    let new_root = create_tenant(&admin, "new", None).await;
    let moved = create_tenant(&admin, "moved", Some(old_root)).await;
    let below = create_tenant(&admin, "below", Some(moved)).await;
    let bystander = create_tenant(&admin, "bystander", Some(old_root)).await;
    assert_eq!(
        listener.received().await,
        tenants(&[old_root, moved]),
        "creations: their ancestors"
    );

    admin
        .execute(
            "UPDATE tenantry.tenants SET parent_id = $1 WHERE tenant_id = $2",
            &[&new_root, &moved],
        )
        .await
        .unwrap();
    let got = listener.received().await;
    assert_eq!(got, tenants(&[old_root, new_root, moved, below]), "move");
    assert!(!got.contains(&tenants(&[bystander]).pop_first().unwrap()));

    // A root moved under another tenant loses no closure row: the tenants
    // trigger alone names it, its new ancestors and its descendants.
    admin
        .execute(
            "UPDATE tenantry.tenants SET parent_id = $1 WHERE tenant_id = $2",
            &[&bystander, &new_root],
        )
        .await
        .unwrap();
    assert_eq!(
        listener.received().await,
        tenants(&[new_root, bystander, old_root, moved, below]),
        "a root moved"
    );
}

#[tokio::test]
async fn granting_and_revoking_permissions_and_assigning_roles_notify_their_tenant() {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let t = create_tenant(&admin, "t", None).await;
    set_context(&app, t).await;
    let mut listener = Listener::start(&tdb).await;

    let role: Uuid = app
        .query_one("SELECT create_tenant_role($1, 'editor')", &[&t])
        .await
        .unwrap()
        .get(0);
    let user: Uuid = app
        .query_one(
            "INSERT INTO tenant_members (tenant_id, email) VALUES ($1, 'a@example.com') RETURNING user_id",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    // A new role changes no one's permissions; a new member may have been
    // refused a moment ago (a cached "not a member"): the tenant is named.
    assert_eq!(listener.received().await, tenants(&[t]), "role, member");

    app.execute(
        "SELECT assign_tenant_permission($1, 'resources.read')",
        &[&role],
    )
    .await
    .unwrap();
    assert_eq!(listener.received().await, tenants(&[t]), "grant");
    app.execute("SELECT assign_member_role($1, $2)", &[&user, &role])
        .await
        .unwrap();
    assert_eq!(listener.received().await, tenants(&[t]), "assign");
    app.execute(
        "SELECT revoke_tenant_permission($1, 'resources.read')",
        &[&role],
    )
    .await
    .unwrap();
    assert_eq!(listener.received().await, tenants(&[t]), "revoke");
    app.execute("DELETE FROM roles WHERE role_id = $1", &[&role])
        .await
        .unwrap();
    assert_eq!(listener.received().await, tenants(&[t]), "role deleted");
}

#[tokio::test]
async fn the_permission_catalogue_changing_or_a_table_truncated_notifies_all_and_a_rollback_nothing(
) {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let su = tdb.superuser_client().await;
    let t = create_tenant(&admin, "t", None).await;
    let mut listener = Listener::start(&tdb).await;

    exec(
        &su,
        "UPDATE tenantry.permissions SET description = description || '.' WHERE name = 'tenant.read'",
    )
    .await;
    assert_eq!(listener.received().await, set(&["all".into()]), "catalogue");
    exec(&su, "TRUNCATE tenantry.member_roles").await;
    assert_eq!(listener.received().await, set(&["all".into()]), "truncate");

    exec(
        &admin,
        &format!(
            "BEGIN; UPDATE tenantry.tenants SET status = 'suspended' WHERE tenant_id = '{t}'; ROLLBACK"
        ),
    )
    .await;
    assert_eq!(listener.received().await, BTreeSet::new(), "rollback");
}

/// The tcn extension's trigger on an adopted table sends every change's key,
/// `tenant_id` included, to whoever LISTENs on its channel: any tenant, as
/// LISTEN cannot be revoked (found by a DBA's review). The doctor names it
/// (rule `notify_trigger`), and after its fix nothing is sent.
#[tokio::test]
async fn a_tcn_trigger_on_an_adopted_table_tells_any_listener_other_tenants_ids_and_the_doctor_names_it(
) {
    let tdb = TestDatabase::new().await;
    let su = tdb.superuser_client().await;
    let available: bool = su
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'tcn')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if !available {
        return;
    }
    exec(
        &su,
        "CREATE EXTENSION tcn;
         CREATE TABLE cards (tenant_id uuid NOT NULL, id bigint NOT NULL, title text,
                             PRIMARY KEY (tenant_id, id));
         SELECT tenantry.adopt_table('cards');
         CREATE TRIGGER cards_tcn AFTER INSERT OR UPDATE OR DELETE ON cards
             FOR EACH ROW EXECUTE FUNCTION triggered_change_notification();",
    )
    .await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let victim = create_tenant(&admin, "victim", None).await;
    set_context(&app, victim).await;
    // Another tenant's session listens.
    let mut listener = Listener::on(&tdb, "tcn").await;
    exec(
        &app,
        "INSERT INTO cards (id, title) VALUES (1, 'secret plan')",
    )
    .await;
    let heard = listener.received().await;
    assert!(
        heard.iter().any(|p| p.contains(&victim.to_string())),
        "{heard:?}"
    );

    let found: Vec<_> = tenantry_db::tables::table_problems(&su)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.rule == "notify_trigger")
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0]
            .fix
            .starts_with("DROP TRIGGER cards_tcn ON public.cards;"),
        "{}",
        found[0]
    );
    exec(&su, &found[0].fix).await;
    exec(
        &app,
        "INSERT INTO cards (id, title) VALUES (2, 'next plan')",
    )
    .await;
    assert!(listener.received().await.is_empty());
    assert_eq!(
        tenantry_db::tables::table_problems(&su).await.unwrap(),
        Vec::new()
    );
}
