//! Helpers the attack suite shares: sessions as `tenantry_server` switched to a
//! granted role, failure comparisons without an existence oracle, setup of
//! tenants' resources, roles, members and keys, and the two-tenant world.

use serde_json::json;
use tenantry_db::testing::TestDatabase;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::common::{create_tenant_in, describe, exec, strings};

async fn login(tdb: &TestDatabase, role: &str) -> Client {
    let c = tdb.server_client().await;
    exec(&c, &format!("SET ROLE {role}")).await;
    c
}

/// The attacker: `tenantry_server` switched to `tenantry_app`.
pub async fn app(tdb: &TestDatabase) -> Client {
    login(tdb, "tenantry_app").await
}

/// Setup through the administrative role (still not a superuser).
/// Setup of tenants. Changing tenants needs a proven administrative
/// context, which the server's login cannot mint (that is attacked in
/// forging.rs): setup runs as an operator, a superuser session.
async fn admin(tdb: &TestDatabase) -> Client {
    tdb.superuser_client().await
}

/// (SQLSTATE, message, detail) of a statement that must fail.
pub async fn fails(c: &Client, sql: &str) -> (String, String, String) {
    match c.batch_execute(sql).await {
        Ok(()) => panic!("{sql}: expected an error, but it succeeded"),
        Err(e) => {
            let d = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{sql}: not a database error: {e}"));
            (
                d.code().code().to_owned(),
                d.message().to_owned(),
                d.detail().unwrap_or("").to_owned(),
            )
        }
    }
}

/// Like [`fails`], and the SQLSTATE must be `code`.
pub async fn denied(c: &Client, sql: &str, code: &str) -> String {
    let (got, message, _) = fails(c, sql).await;
    assert_eq!(got, code, "{sql}: expected {code}, got {got}: {message}");
    message
}

/// Replaces each of `ids` by `<id>`, so that answers about two ids compare;
/// on a Citus cluster also the number of the shard a message names
/// (`invoices_103089`), which follows from the tenant id's hash whether or
/// not that tenant exists.
fn scrub(text: &str, ids: &[Uuid]) -> String {
    let text = ids
        .iter()
        .fold(text.to_owned(), |t, id| t.replace(&id.to_string(), "<id>"));
    if tenantry_db::testing::on_citus() {
        scrub_shard_numbers(&text)
    } else {
        text
    }
}

/// `name_<digits>` ending a word becomes `name_<shard>`.
fn scrub_shard_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('_') {
        let (head, tail) = rest.split_at(at + 1);
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        let ends_word = !tail[digits..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if digits >= 4 && ends_word {
            out.push_str("<shard>");
            rest = &tail[digits..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// Runs `sql_for(foreign)` and `sql_for(missing)`: both must fail with the same
/// SQLSTATE, message and detail once the ids are scrubbed. Returns the SQLSTATE.
pub async fn same_failure(
    c: &Client,
    foreign: Uuid,
    missing: Uuid,
    sql_for: impl Fn(Uuid) -> String,
) -> String {
    let a = fails(c, &sql_for(foreign)).await;
    let b = fails(c, &sql_for(missing)).await;
    let ids = [foreign, missing];
    assert_eq!(
        (a.0.clone(), scrub(&a.1, &ids), scrub(&a.2, &ids)),
        (b.0, scrub(&b.1, &ids), scrub(&b.2, &ids)),
        "a foreign id and a missing id must fail alike"
    );
    a.0
}

/// Opens a transaction with the server's proven context for `t`.
pub async fn begin_as(c: &Client, t: Uuid) {
    tenantry_db::testing::begin_in_tenant(c, t).await;
}

/// Opens a transaction in `t` as a key (or, with `user`, a member) holding
/// exactly `grants`, as the server proves it.
pub async fn begin_with_grants(c: &Client, t: Uuid, user: Option<Uuid>, grants: &[&str]) {
    exec(c, "BEGIN").await;
    let mut signed = tenantry_db::SignedContext::new(tenantry_db::TenantId::from_uuid(t));
    signed.user = user.map(tenantry_db::UserId::from_uuid);
    signed.grants = Some(grants.iter().map(|g| (*g).to_owned()).collect());
    let part = enter_signed(c, &signed)
        .await
        .expect("enter_context_signed");
    assert!(part.is_some(), "the database refused the context");
}

/// Opens a transaction in a signed-in person's context (no tenant).
pub async fn begin_person(c: &Client, user: Uuid) {
    exec(c, "BEGIN").await;
    let mut signed = tenantry_db::SignedContext::admin(None);
    signed.user = Some(tenantry_db::UserId::from_uuid(user));
    let part = enter_signed(c, &signed)
        .await
        .expect("enter_context_signed");
    assert_eq!(
        part.as_deref(),
        Some(""),
        "a user context has no tenant part"
    );
}

pub async fn commit(c: &Client) {
    exec(c, "COMMIT").await;
}

pub async fn rollback(c: &Client) {
    exec(c, "ROLLBACK").await;
}

/// A resource of `t`, created in its own transaction; returns its id.
pub async fn create_resource(c: &Client, t: Uuid, name: &str) -> Uuid {
    begin_as(c, t).await;
    let id = c
        .query_one(
            "SELECT tenantry.create_resource($1)",
            &[&json!({ "name": name })],
        )
        .await
        .unwrap_or_else(|e| panic!("create_resource({name}): {}", describe(&e)))
        .get(0);
    commit(c).await;
    id
}

/// The names of every resource the context's tenant reads: its subtree's,
/// from the table, and those shared with it, through the fence
/// `resources_shared_with_me()` (the table's policy covers the subtree only).
pub const READABLE_NAMES: &str = "SELECT name FROM tenantry.resources
     UNION ALL SELECT name FROM tenantry.resources_shared_with_me() ORDER BY 1";

/// Resource names `t` reads in one transaction.
pub async fn names_seen_by(c: &Client, t: Uuid) -> Vec<String> {
    begin_as(c, t).await;
    let v = strings(c, READABLE_NAMES).await;
    commit(c).await;
    v
}

/// Moves `t` under `parent` (None: makes it a root), as an operator.
pub async fn set_parent(
    admin: &Client,
    t: Uuid,
    parent: Option<Uuid>,
) -> Result<u64, tokio_postgres::Error> {
    admin
        .execute(
            "UPDATE tenantry.tenants SET parent_id = $1 WHERE tenant_id = $2",
            &[&parent, &t],
        )
        .await
}

pub async fn share(c: &Client, owner: Uuid, resource: Uuid, target: Uuid) {
    begin_as(c, owner).await;
    exec(
        c,
        &format!("SELECT tenantry.share_resource('{resource}', '{target}')"),
    )
    .await;
    commit(c).await;
}

pub async fn unshare(c: &Client, owner: Uuid, resource: Uuid, target: Uuid) {
    begin_as(c, owner).await;
    exec(
        c,
        &format!("SELECT tenantry.unshare_resource('{resource}', '{target}')"),
    )
    .await;
    commit(c).await;
}

/// The SQLSTATE of a write that moves a row to another tenant: `single_node`
/// (tenantry's trigger, a policy or a grant); on a Citus cluster Citus's own
/// refusal comes first (0A000: a change of the distribution column, or a
/// re-insert it sends to the shards by COPY, which they refuse under row
/// level security).
pub fn move_refused(single_node: &'static str) -> &'static str {
    if tenantry_db::testing::on_citus() {
        "0A000"
    } else {
        single_node
    }
}

/// Whether the adopted tables of the attacks share rows: everywhere but on
/// a Citus cluster, which refuses sharing rows of adopted tables.
pub fn adopted_sharing() -> bool {
    !tenantry_db::testing::on_citus()
}

/// [`tenantry_db::testing::skip_on_citus`] for an attack on row sharing of
/// adopted tables.
pub fn skip_adopted_sharing_on_citus(test: &str) -> bool {
    tenantry_db::testing::skip_on_citus(test, "a cluster refuses sharing rows of adopted tables")
}

/// The tier a tenant's resources live in: the pooled table, or its own
/// schema's table (which inherits the pooled one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Pooled,
    Schema,
}

impl Tier {
    /// `tenants.isolation` for this tier.
    pub fn isolation(self) -> &'static str {
        match self {
            Tier::Pooled => "shared",
            Tier::Schema => "schema",
        }
    }

    /// The other tier.
    pub fn other(self) -> Tier {
        match self {
            Tier::Pooled => Tier::Schema,
            Tier::Schema => Tier::Pooled,
        }
    }
}

/// Two unrelated tenants, each with one resource, and the attacker's session.
/// The attacker is mostly `a`, the victim `b`; each lives in the tier `tiers`
/// says (pooled for [`world`]).
pub struct World {
    pub tdb: TestDatabase,
    pub admin: Client,
    pub app: Client,
    pub a: Uuid,
    pub b: Uuid,
    pub ra: Uuid,
    pub rb: Uuid,
    /// The tiers of `a` and `b`.
    pub tiers: (Tier, Tier),
}

pub async fn world() -> World {
    world_in(Tier::Pooled, Tier::Pooled).await
}

/// [`world`] with `a` in tier `a_tier` and `b` in `b_tier` from their creation.
pub async fn world_in(a_tier: Tier, b_tier: Tier) -> World {
    let tdb = TestDatabase::new().await;
    let admin = admin(&tdb).await;
    let app = app(&tdb).await;
    let a = create_tenant_in(&admin, "tenant-a", None, a_tier.isolation()).await;
    let b = create_tenant_in(&admin, "tenant-b", None, b_tier.isolation()).await;
    let ra = create_resource(&app, a, "a-doc").await;
    let rb = create_resource(&app, b, "b-secret").await;
    let su = tdb.superuser_client().await;
    assert_eq!(
        (tier_of_row(&su, ra).await, tier_of_row(&su, rb).await),
        (a_tier, b_tier),
        "the world's rows are in the tiers asked for"
    );
    World {
        tdb,
        admin,
        app,
        a,
        b,
        ra,
        rb,
        tiers: (a_tier, b_tier),
    }
}

/// The tier of the table holding resource `id` (through a superuser
/// connection: `tableoid` of the row wherever it lives).
pub async fn tier_of_row(su: &Client, id: Uuid) -> Tier {
    let table: String = su
        .query_one(
            "SELECT tableoid::regclass::text FROM tenantry.resources WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap_or_else(|e| panic!("the table of {id}: {}", describe(&e)))
        .get(0);
    // On a Citus cluster the row is read from a shard of the pooled table
    // (`tenantry.resources_102008`); a cluster has no schema tenants.
    let shard = table
        .strip_prefix("tenantry.resources_")
        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
    if table == "tenantry.resources" || shard {
        Tier::Pooled
    } else {
        Tier::Schema
    }
}

impl World {
    /// Another tenant, created by the operator in `tier`.
    pub async fn tenant(&self, name: &str, parent: Option<Uuid>, tier: Tier) -> Uuid {
        create_tenant_in(&self.admin, name, parent, tier.isolation()).await
    }

    /// Every table through which a statement can name resources: the family
    /// (`tenantry.resources`, every tier), the pooled table alone (`ONLY`,
    /// the server's route for pooled tenants) and each schema tenant's own
    /// table by its qualified name (the server's route for that tenant).
    pub async fn resource_tables(&self) -> Vec<String> {
        let mut tables = vec![
            "tenantry.resources".to_owned(),
            "ONLY tenantry.resources".to_owned(),
        ];
        tables.extend(
            strings(
                &self.admin,
                "SELECT format('%I.resources', schema_name) FROM tenantry.tenants
                 WHERE isolation = 'schema' OR moving_to = 'schema'",
            )
            .await,
        );
        tables
    }

    /// [`World::resource_tables`] an INSERT can name (it takes no `ONLY`).
    pub async fn insertable_tables(&self) -> Vec<String> {
        let mut tables = self.resource_tables().await;
        tables.retain(|t| !t.starts_with("ONLY "));
        tables
    }
}

/// Declares, for each named attack `async fn <attack>(w: World)`, a module of
/// the same name with one test per combination of tiers of the attacker
/// (`a`) and the victim (`b`): `<attack>::pooled_attacker_schema_victim` and
/// so on.
macro_rules! across_tiers {
    ($($attack:ident),* $(,)?) => {$(
        mod $attack {
            use crate::helpers::{world_in, Tier::{Pooled, Schema}};

            #[tokio::test]
            async fn pooled_attacker_pooled_victim() {
                super::$attack(world_in(Pooled, Pooled).await).await
            }

            #[tokio::test]
            async fn schema_attacker_pooled_victim() {
                if tenantry_db::testing::skip_schema_tier_on_citus(concat!(module_path!(), "::schema_attacker_pooled_victim")) {
                    return;
                }
                super::$attack(world_in(Schema, Pooled).await).await
            }

            #[tokio::test]
            async fn pooled_attacker_schema_victim() {
                if tenantry_db::testing::skip_schema_tier_on_citus(concat!(module_path!(), "::pooled_attacker_schema_victim")) {
                    return;
                }
                super::$attack(world_in(Pooled, Schema).await).await
            }

            #[tokio::test]
            async fn schema_attacker_schema_victim() {
                if tenantry_db::testing::skip_schema_tier_on_citus(concat!(module_path!(), "::schema_attacker_schema_victim")) {
                    return;
                }
                super::$attack(world_in(Schema, Schema).await).await
            }
        }
    )*};
}
pub(crate) use across_tiers;

/// Grants `permissions` to `role` of `t`, in a transaction of its own.
pub async fn grant(c: &Client, t: Uuid, role: Uuid, permissions: &[&str]) {
    begin_as(c, t).await;
    for p in permissions {
        c.execute(
            "SELECT tenantry.assign_tenant_permission($1, $2)",
            &[&role, p],
        )
        .await
        .unwrap();
    }
    commit(c).await;
}

/// A role of `t` with the given name; returns its id.
pub async fn create_role(c: &Client, t: Uuid, name: &str) -> Uuid {
    begin_as(c, t).await;
    let id = c
        .query_one(
            "SELECT tenantry.create_tenant_role($1::uuid, $2::text)",
            &[&t, &name],
        )
        .await
        .unwrap_or_else(|e| panic!("create_tenant_role({name}): {}", describe(&e)))
        .get(0);
    commit(c).await;
    id
}

/// A member of `t`; returns its user id.
pub async fn add_member(c: &Client, t: Uuid, email: &str) -> Uuid {
    begin_as(c, t).await;
    let id = c
        .query_one(
            "INSERT INTO tenantry.tenant_members (email) VALUES ($1) RETURNING user_id",
            &[&email],
        )
        .await
        .unwrap_or_else(|e| panic!("member {email}: {}", describe(&e)))
        .get(0);
    commit(c).await;
    id
}

/// `person`, named by their user id, as a pending member of `t` (what the
/// server's `POST /v1/members` with a `user_id` makes).
pub async fn add_pending_member(c: &Client, t: Uuid, person: Uuid, email: &str) {
    begin_as(c, t).await;
    c.execute(
        "INSERT INTO tenantry.tenant_members (user_id, email, pending) VALUES ($1, $2, true)",
        &[&person, &email],
    )
    .await
    .unwrap_or_else(|e| panic!("pending member {email}: {}", describe(&e)));
    commit(c).await;
}

/// An API key of `t` (unbound) with optional extra metadata; returns the key.
pub async fn create_key(c: &Client, t: Uuid, metadata: serde_json::Value) -> String {
    begin_as(c, t).await;
    let key = c
        .query_one(
            "SELECT tenantry.create_api_key('attack', $1::jsonb)",
            &[&metadata],
        )
        .await
        .unwrap_or_else(|e| panic!("create_api_key: {}", describe(&e)))
        .get(0);
    commit(c).await;
    key
}

pub async fn key_id_of(c: &Client, t: Uuid, key: &str) -> Uuid {
    begin_as(c, t).await;
    let id = c
        .query_one(
            "SELECT key_id FROM tenantry.api_keys WHERE prefix = substr($1, 4, 12)",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    commit(c).await;
    id
}

/// `verify_api_key(key)->>'tenant_id'` without any context.
pub async fn verified_tenant(c: &Client, key: &str) -> Option<String> {
    c.query_one("SELECT tenantry.verify_api_key($1)->>'tenant_id'", &[&key])
        .await
        .unwrap()
        .get(0)
}

/// Every table and view a tenant role can read, with the column naming the owning tenant.
pub const TENANT_RELATIONS: &[(&str, &str)] = &[
    ("tenantry.resources", "tenant_id"),
    ("tenantry.shared_resources", "tenant_id"),
    ("tenantry.tenants", "tenant_id"),
    ("tenantry.tenant_hierarchy", "child_id"),
    ("tenantry.tenant_members", "tenant_id"),
    ("tenantry.roles", "tenant_id"),
    ("tenantry.role_permissions", "tenant_id"),
    ("tenantry.member_roles", "tenant_id"),
    ("tenantry.api_keys", "tenant_id"),
    ("tenantry.audit_log", "tenant_id"),
    ("tenantry.request_log", "tenant_id"),
    ("tenantry.tenant_resource_usage", "tenant_id"),
    ("tenantry.current_tenant_metrics()", "tenant_id"),
];

/// HMAC-SHA-256 of `message` under the test databases' context key, as the
/// server computes it (`tenantry.context_mac` in SQL).
pub fn context_mac(message: &str) -> Vec<u8> {
    tenantry_db::testing::context_key().mac(message)
}

/// Unix milliseconds `seconds` from now (negative: in the past).
pub fn unix_ms_in(seconds: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now + seconds * 1000
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// A bytea literal for SQL text.
pub fn bytea(bytes: &[u8]) -> String {
    format!("'\\x{}'::bytea", hex::encode(bytes))
}

/// A connection readied exactly as the server readies its own (prepared mode,
/// `session.rs`): the login `tenantry_server` switched to `tenantry_app` for
/// the session, its context session opened with a commitment signed by the
/// context key over the session's draw; each transaction reveals the chain's
/// secret and commits to the next (`scope.rs`); after a rolled-back
/// transaction that revealed, the session is opened again. It remembers what
/// it revealed, for replay attacks.
pub struct ServerConn {
    pub client: Client,
    pub pid: i32,
    key: tenantry_db::ContextKey,
    secret: [u8; 32],
    pending: Option<[u8; 32]>,
    /// Every secret this connection revealed, oldest first.
    pub revealed: Vec<[u8; 32]>,
    /// The arguments of the open_context_session call that last opened it:
    /// (nonce, expires_at, commitment, mac).
    pub opened_with: (i64, i64, [u8; 32], Vec<u8>),
    /// The secret that opening committed to (its first reveal).
    pub opened_secret: [u8; 32],
}

impl ServerConn {
    pub async fn open(tdb: &TestDatabase) -> ServerConn {
        Self::open_with(tdb, tenantry_db::testing::context_key())
            .await
            .unwrap_or_else(|refused| panic!("open_context_session: {refused}"))
    }

    /// Like [`ServerConn::open`], with `key`; `Err` with the database's answer when it refuses.
    pub async fn open_with(
        tdb: &TestDatabase,
        key: &tenantry_db::ContextKey,
    ) -> Result<ServerConn, String> {
        let client = tdb.server_client().await;
        exec(&client, "SET ROLE tenantry_app").await;
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let mut conn = ServerConn {
            client,
            pid,
            key: key.clone(),
            secret: [0; 32],
            pending: None,
            revealed: Vec::new(),
            opened_with: (0, 0, [0; 32], Vec::new()),
            opened_secret: [0; 32],
        };
        conn.open_session().await?;
        Ok(conn)
    }

    /// Draws the session's nonce and opens its chain with a fresh secret, as
    /// the server does when it connects and after a rolled-back reveal.
    async fn open_session(&mut self) -> Result<(), String> {
        let nonce: i64 = self
            .client
            .query_one("SELECT tenantry.context_session_nonce()", &[])
            .await
            .map_err(|e| describe(&e))?
            .get(0);
        let secret: [u8; 32] = rand::random();
        let commitment = sha256(&secret);
        let expires_at = unix_ms_in(60);
        let pid = self.pid;
        let mac = self.key.mac(&format!(
            "open|{pid}|{nonce}|{expires_at}|{}",
            hex::encode(commitment)
        ));
        let key_id = self.key.id();
        let answer: String = self
            .client
            .query_one(
                "SELECT tenantry.open_context_session($1, $2, $3, $4, $5, $6)",
                &[
                    &pid,
                    &nonce,
                    &expires_at,
                    &commitment.as_slice(),
                    &key_id,
                    &mac,
                ],
            )
            .await
            .map_err(|e| describe(&e))?
            .get(0);
        if answer != "ok" {
            return Err(answer);
        }
        self.secret = secret;
        self.pending = None;
        self.opened_with = (nonce, expires_at, commitment, mac);
        self.opened_secret = secret;
        Ok(())
    }

    /// The server's `enter_context` for `t` in the open transaction (the
    /// database looks the tenant's part up): the tenant's part, `None` when
    /// the database refused (the server then closes the connection).
    pub async fn enter(
        &mut self,
        t: Option<Uuid>,
    ) -> Result<Option<String>, tokio_postgres::Error> {
        let next: [u8; 32] = rand::random();
        self.revealed.push(self.secret);
        let part: Option<String> = self
            .client
            .query_one(
                "SELECT tenantry.enter_context($1, $2, $3, NULL, NULL, NULL, NULL, NULL)",
                &[&self.secret.as_slice(), &sha256(&next).as_slice(), &t],
            )
            .await?
            .get(0);
        self.pending = part.as_ref().map(|_| next);
        Ok(part)
    }

    /// BEGIN and [`ServerConn::enter`]; `None` when the database refused or
    /// failed (the transaction is then rolled back, as the server does before
    /// closing the connection).
    pub async fn begin(&mut self, t: Uuid) -> Option<String> {
        if self.client.batch_execute("BEGIN").await.is_err() {
            return None;
        }
        match self.enter(Some(t)).await {
            Ok(Some(part)) => Some(part),
            Ok(None) | Err(_) => {
                self.rollback().await;
                None
            }
        }
    }

    /// The secret this connection reveals next (what an attacker would have to capture).
    pub fn secret(&self) -> [u8; 32] {
        self.secret
    }

    /// The commitment the database holds for this connection's next
    /// transaction (as of the server's bookkeeping).
    pub fn commitment(&self) -> [u8; 32] {
        sha256(self.pending.as_ref().unwrap_or(&self.secret))
    }

    /// COMMIT: the revealed secret's successor becomes the secret.
    pub async fn commit(&mut self) {
        // As the server does, the outcome decides: a transaction an earlier
        // statement aborted answers COMMIT with a rollback (25P02 before it).
        let aborted = self.client.batch_execute("SELECT 1").await.is_err();
        let _ = self.client.batch_execute("COMMIT").await;
        if aborted {
            self.rolled_back().await;
        } else if let Some(next) = self.pending.take() {
            self.secret = next;
        }
    }

    /// ROLLBACK: the database keeps the commitment but refuses its secret
    /// from now on, so the server opens the session again.
    pub async fn rollback(&mut self) {
        let _ = self.client.batch_execute("ROLLBACK").await;
        self.rolled_back().await;
    }

    async fn rolled_back(&mut self) {
        if self.pending.take().is_some() {
            // Refused: the next context is refused too, and the server closes the connection.
            let _ = self.open_session().await;
        }
    }

    /// The resource names `t` reads in one transaction of this connection;
    /// `None` when the database refused the context.
    pub async fn names_seen_by(&mut self, t: Uuid) -> Option<Vec<String>> {
        self.begin(t).await?;
        let names = strings(&self.client, READABLE_NAMES).await;
        self.commit().await;
        Some(names)
    }
}

pub use tenantry_db::testing::enter_signed;

/// A signed context for `t` on any backend, valid for a minute.
pub fn signed_for(t: Uuid) -> tenantry_db::SignedContext {
    tenantry_db::SignedContext::new(tenantry_db::TenantId::from_uuid(t))
}
