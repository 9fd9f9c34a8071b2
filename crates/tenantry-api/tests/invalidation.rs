//! Two real servers on one database: what one of them changes, the other one's key and context caches forget within a second, through the database's invalidation feed (LISTEN/NOTIFY), never through their time to live (set to an hour here); and a listener whose connection is killed empties the cache and comes back.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tenantry_api::config::{AdminToken, Settings};
use tenantry_db::{invalidation::APPLICATION_NAME, testing::TestDatabase, Database};

#[path = "common/server.rs"]
#[allow(dead_code)]
mod server;
use server::{test_settings, Server};

/// How soon the other server must see a change.
const WITHIN: Duration = Duration::from_secs(1);

/// Two servers over one fresh database, keys cached for an hour.
struct Pair {
    db: TestDatabase,
    one: Server,
    two: Server,
    admin: String,
    http: reqwest::Client,
}

impl Pair {
    async fn start() -> Self {
        let db = TestDatabase::new().await;
        let settings = Settings {
            key_cache_ttl_ms: 3_600_000,
            ..test_settings()
        };
        let admin = AdminToken::generate();
        // Context parts too are trusted for an hour: what the other server
        // sees within a second, it learnt from the feed.
        let pool = || {
            let mut config = db.database_config();
            config.context_cache_ttl = Duration::from_secs(3600);
            Database::connect(&config).expect("pool")
        };
        let one = Server::start(&settings, pool(), &admin).await;
        let two = Server::start(&settings, pool(), &admin).await;
        let pair = Self {
            db,
            one,
            two,
            admin,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        pair.wait_for_listeners(2).await;
        pair
    }

    /// Waits (at most 10 s) until `n` invalidation listeners are connected.
    async fn wait_for_listeners(&self, n: i64) {
        let su = self.db.superuser_client().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listening: i64 = su
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE application_name = $1 AND datname = current_database() AND state = 'idle'",
                    &[&APPLICATION_NAME],
                )
                .await
                .unwrap()
                .get(0);
            if listening == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{listening} listeners after 10 s, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: String,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request failed");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A request to server one that must answer `expected`; returns the body.
    async fn on_one(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        expected: u16,
    ) -> Value {
        let (status, body) = self
            .send(method, format!("{}{path}", self.one.base), token, body)
            .await;
        assert_eq!(status, expected, "{path}: {body}");
        body
    }

    /// Waits (at most 10 s) until server two counts its listener as
    /// listening (a heartbeat confirmed within the last second), as its
    /// `/metrics` says: only then does it trust a cached entry past a second.
    /// A loaded machine can hold a heartbeat's probe back for longer.
    async fn until_two_listens(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self
                .http
                .get(format!("{}/metrics", self.two.base))
                .bearer_auth(&self.admin)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text
                .lines()
                .any(|l| l.trim() == "tenantry_invalidation_listening 1")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server two not listening within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The status server two answers `GET path` with `token`.
    async fn on_two(&self, path: &str, token: &str) -> u16 {
        self.send(
            reqwest::Method::GET,
            format!("{}{path}", self.two.base),
            token,
            None,
        )
        .await
        .0
    }

    /// Polls server two until `GET path` answers `expected`; panics after
    /// [`WITHIN`]. Returns how long it took from `since`.
    async fn two_answers_within(
        &self,
        path: &str,
        token: &str,
        expected: u16,
        since: Instant,
    ) -> Duration {
        self.two_answers_before(path, token, expected, since, WITHIN)
            .await
    }

    /// Polls server two until `GET path` answers `expected`; panics when
    /// `within` has passed since `since`. Returns how long it took.
    async fn two_answers_before(
        &self,
        path: &str,
        token: &str,
        expected: u16,
        since: Instant,
        within: Duration,
    ) -> Duration {
        loop {
            let status = self.on_two(path, token).await;
            let waited = since.elapsed();
            if status == expected {
                return waited;
            }
            assert!(
                waited < within,
                "server two still answers {status} (not {expected}) to GET {path} {waited:?} after the change"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A tenant and an unbound key of it, made on server one: (tenant, key).
    async fn tenant(&self, name: &str) -> (String, String) {
        let t = self
            .on_one(
                reqwest::Method::POST,
                "/v1/tenants",
                &self.admin,
                Some(json!({ "name": name })),
                201,
            )
            .await["tenant_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let key = self.key_for(&t).await.0;
        (t, key)
    }

    /// A new unbound key of tenant `t`, made on server one: (key, key id).
    async fn key_for(&self, t: &str) -> (String, String) {
        let b = self
            .on_one(
                reqwest::Method::POST,
                &format!("/v1/tenants/{t}/keys"),
                &self.admin,
                Some(json!({})),
                201,
            )
            .await;
        (
            b["key"].as_str().unwrap().to_owned(),
            b["key_info"]["key_id"].as_str().unwrap().to_owned(),
        )
    }

    /// A key made on server one with `owner` and `body` (`POST /v1/keys`): (key, key id).
    async fn key_with(&self, owner: &str, body: Value) -> (String, String) {
        let b = self
            .on_one(reqwest::Method::POST, "/v1/keys", owner, Some(body), 201)
            .await;
        (
            b["key"].as_str().unwrap().to_owned(),
            b["key_info"]["key_id"].as_str().unwrap().to_owned(),
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_server_is_refused_by_the_other_within_a_second_a_hundred_times_over()
{
    let pair = Pair::start().await;
    let (_, owner) = pair.tenant("t").await;
    let started = Instant::now();
    let mut delays = Vec::new();
    for _ in 0..100 {
        let (key, key_id) = pair.key_with(&owner, json!({})).await;
        // Verified and cached by server two.
        assert_eq!(pair.on_two("/v1/tenant", &key).await, 200);
        assert_eq!(pair.on_two("/v1/tenant", &key).await, 200);

        pair.on_one(
            reqwest::Method::DELETE,
            &format!("/v1/keys/{key_id}"),
            &owner,
            None,
            204,
        )
        .await;
        let revoked = Instant::now();
        delays.push(
            pair.two_answers_within("/v1/tenant", &key, 401, revoked)
                .await,
        );
    }
    delays.sort();
    println!(
        "revocation seen by the other server: p50 {:?}, p99 {:?}, max {:?} (100 keys, {:?} in all)",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays[delays.len() - 1],
        started.elapsed()
    );
    // The owner key was never touched: still cached and valid on both.
    assert_eq!(pair.on_two("/v1/tenant", &owner).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_without_grace_on_one_server_is_refused_by_the_other_within_a_second() {
    let pair = Pair::start().await;
    let (_, owner) = pair.tenant("t").await;
    let (key, key_id) = pair.key_with(&owner, json!({})).await;
    assert_eq!(pair.on_two("/v1/tenant", &key).await, 200);

    let successor = pair
        .on_one(
            reqwest::Method::POST,
            &format!("/v1/keys/{key_id}/rotate"),
            &owner,
            Some(json!({ "grace_seconds": 0 })),
            201,
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = Instant::now();
    pair.two_answers_within("/v1/tenant", &key, 401, rotated)
        .await;
    assert_eq!(pair.on_two("/v1/tenant", &successor).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_reactivating_and_deleting_a_tenant_on_one_server_is_seen_by_the_other_within_a_second(
) {
    let pair = Pair::start().await;
    let (t, key) = pair.tenant("t").await;
    let (_, bystander) = pair.tenant("bystander").await;
    assert_eq!(pair.on_two("/v1/tenant", &key).await, 200);
    assert_eq!(pair.on_two("/v1/tenant", &bystander).await, 200);

    for (action, method, path, expected) in [
        (
            "suspend",
            reqwest::Method::POST,
            format!("/v1/tenants/{t}/suspend"),
            403,
        ),
        (
            "activate",
            reqwest::Method::POST,
            format!("/v1/tenants/{t}/activate"),
            200,
        ),
        (
            "delete",
            reqwest::Method::DELETE,
            format!("/v1/tenants/{t}"),
            401,
        ),
    ] {
        let (status, body) = pair
            .send(
                method,
                format!("{}{path}", pair.one.base),
                &pair.admin,
                None,
            )
            .await;
        assert!(status < 300, "{action}: {status} {body}");
        let changed = Instant::now();
        let waited = pair
            .two_answers_within("/v1/tenant", &key, expected, changed)
            .await;
        println!("{action} seen by the other server after {waited:?}");
    }
    assert_eq!(pair.on_two("/v1/tenant", &bystander).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_losing_a_permission_or_a_member_gaining_a_role_on_one_server_is_seen_by_the_other_within_a_second(
) {
    let pair = Pair::start().await;
    let (_, owner) = pair.tenant("t").await;
    let role = pair
        .on_one(
            reqwest::Method::POST,
            "/v1/roles",
            &owner,
            Some(json!({ "name": "reader" })),
            201,
        )
        .await["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let grant = format!("/v1/roles/{role}/permissions/resources.read");
    pair.on_one(reqwest::Method::PUT, &grant, &owner, None, 200)
        .await;
    let (role_key, _) = pair.key_with(&owner, json!({ "role_id": role })).await;
    // The first member owns the tenant, and a key acting as the owner holds
    // every permission: the member below comes second.
    pair.on_one(
        reqwest::Method::POST,
        "/v1/members",
        &owner,
        Some(json!({ "email": "owner@example.com" })),
        201,
    )
    .await;
    let user = pair
        .on_one(
            reqwest::Method::POST,
            "/v1/members",
            &owner,
            Some(json!({ "email": "m@example.com" })),
            201,
        )
        .await["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (member_key, _) = pair.key_with(&owner, json!({ "user_id": user })).await;
    assert_eq!(pair.on_two("/v1/resources", &role_key).await, 200);
    assert_eq!(pair.on_two("/v1/resources", &member_key).await, 403);

    pair.on_one(reqwest::Method::DELETE, &grant, &owner, None, 200)
        .await;
    let revoked = Instant::now();
    pair.two_answers_within("/v1/resources", &role_key, 403, revoked)
        .await;

    pair.on_one(reqwest::Method::PUT, &grant, &owner, None, 200)
        .await;
    pair.on_one(
        reqwest::Method::PUT,
        &format!("/v1/members/{user}/roles/{role}"),
        &owner,
        None,
        200,
    )
    .await;
    let assigned = Instant::now();
    pair.two_answers_within("/v1/resources", &member_key, 200, assigned)
        .await;
    pair.two_answers_within("/v1/resources", &role_key, 200, assigned)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_created_through_one_server_is_listed_by_its_parent_on_the_other_within_a_second() {
    let pair = Pair::start().await;
    let (parent, key) = pair.tenant("parent").await;
    let children = |pair: &Pair| {
        let url = format!("{}/v1/tenant/children", pair.two.base);
        let request = pair.http.get(url).bearer_auth(&key);
        async move {
            let r = request.send().await.expect("request failed");
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["tenant_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // Server two has the parent's context cached, without children.
    assert!(children(&pair).await.is_empty());

    let child = pair
        .on_one(
            reqwest::Method::POST,
            "/v1/tenants",
            &key,
            Some(json!({ "name": "child" })),
            201,
        )
        .await;
    assert_eq!(child["parent_id"], parent.as_str());
    let created = Instant::now();
    loop {
        let listed = children(&pair).await;
        if listed == [child["tenant_id"].as_str().unwrap()] {
            println!(
                "the child listed by the other server after {:?}",
                created.elapsed()
            );
            break;
        }
        assert!(
            created.elapsed() < WITHIN,
            "server two lists {listed:?} {:?} after the child's creation",
            created.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Revokes a key behind the triggers' back (replica mode fires no trigger):
/// nothing tells the servers.
async fn revoke_silently(su: &tokio_postgres::Client, key_id: &str) {
    su.batch_execute(&format!(
        "SET session_replication_role = replica;
         UPDATE tenantry.api_keys SET revoked_at = now() WHERE key_id = '{key_id}';
         RESET session_replication_role"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_listeners_connection_empties_the_cache_and_the_listener_comes_back() {
    let pair = Pair::start().await;
    let su = pair.db.superuser_client().await;
    let (_, owner) = pair.tenant("t").await;

    // While the listener listens, server two trusts an entry past the 1 s a
    // cache allows without one, and a silent revocation goes unseen.
    let (old, old_id) = pair.key_with(&owner, json!({})).await;
    assert_eq!(pair.on_two("/v1/tenant", &old).await, 200);
    revoke_silently(&su, &old_id).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    pair.until_two_listens().await;
    assert_eq!(
        pair.on_two("/v1/tenant", &old).await,
        200,
        "served from the cache"
    );

    // An entry cached just now: only emptying the cache on the kill refuses
    // it before its 1 s without a listener would be over.
    let (young, young_id) = pair.key_with(&owner, json!({})).await;
    assert_eq!(pair.on_two("/v1/tenant", &young).await, 200);
    let cached = Instant::now();
    revoke_silently(&su, &young_id).await;
    let killed = pair.db.kill_invalidation_listeners().await;
    assert_eq!(killed, 2, "both servers' listeners");
    let kill = Instant::now();
    pair.two_answers_before(
        "/v1/tenant",
        &young,
        401,
        cached,
        Duration::from_millis(700),
    )
    .await;
    println!(
        "cache emptied {:?} after its listener's connection was killed",
        kill.elapsed()
    );
    assert_eq!(pair.on_two("/v1/tenant", &old).await, 401);

    // Back, and listening: an entry is trusted past the 1 s a cache allows
    // while its listener is down, and a revocation on server one reaches
    // server two again.
    pair.wait_for_listeners(2).await;
    println!("listeners back {:?} after the kill", kill.elapsed());
    let (other, other_id) = pair.key_with(&owner, json!({})).await;
    assert_eq!(pair.on_two("/v1/tenant", &other).await, 200);
    revoke_silently(&su, &other_id).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    pair.until_two_listens().await;
    assert_eq!(
        pair.on_two("/v1/tenant", &other).await,
        200,
        "trusted for the cache's full lifetime again"
    );
    let (third, third_id) = pair.key_with(&owner, json!({})).await;
    assert_eq!(pair.on_two("/v1/tenant", &third).await, 200);
    pair.on_one(
        reqwest::Method::DELETE,
        &format!("/v1/keys/{third_id}"),
        &owner,
        None,
        204,
    )
    .await;
    let revoked = Instant::now();
    pair.two_answers_within("/v1/tenant", &third, 401, revoked)
        .await;
}
