//! The test server: a real `Application` on port 0 over a fresh test database,
//! a reqwest client, and typed helpers for the setup every test needs.

use reqwest::{header, Method};
use serde_json::{json, Value};
use tenantry_api::config::{AdminToken, Settings};
use tenantry_db::testing::TestDatabase;

use crate::server::{test_settings, Server};

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The admin token the server was built with.
    pub admin_token: String,
    /// A client for every request.
    pub client: reqwest::Client,
    /// The database behind the server (superuser checks only).
    pub db: TestDatabase,
    server: Server,
    /// Held while a server running the upkeep serves (dropped after it).
    _upkeep: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// One server of this process at a time runs the upkeep: its gauges on
/// `/metrics` (`tenantry_request_log_days_without_partition`,
/// `tenantry_table_problems`) are the process's, and two such servers at
/// once overwrote each other's values every second, so that a test reading
/// one could see another server's (found by a review of the suite).
async fn upkeep_alone() -> tokio::sync::OwnedMutexGuard<()> {
    static UPKEEP: std::sync::OnceLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
        std::sync::OnceLock::new();
    UPKEEP
        .get_or_init(Default::default)
        .clone()
        .lock_owned()
        .await
}

/// Another server over the same database.
pub struct Sibling {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    server: Server,
}

impl Sibling {
    /// Stops it gracefully.
    pub async fn shutdown(mut self) {
        let _ = self.server.stop().await;
    }
}

/// A tenant with an unbound (all-permission) key.
pub struct TenantKey {
    /// The tenant.
    pub id: String,
    /// Its key.
    pub key: String,
    /// The key's id.
    pub key_id: String,
}

/// A response, read completely.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    /// The body; a problem's without its `request_id` (checked equal to `request_id` here).
    pub text: String,
    pub body: Value,
    /// The answer's `X-Request-Id`.
    pub request_id: String,
    /// The answer's `Location`, if any.
    pub location: Option<String>,
}

impl Resp {
    /// Panics (showing the body) unless the status is `status`; returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "expected {status}, got {}: {}",
            self.status, self.text
        );
        &self.body
    }

    /// Asserts a problem+json response with this status and code and every
    /// required field; returns the body.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!(
            self.status, status,
            "expected {status} {code}, got {}: {}",
            self.status, self.text
        );
        assert_problem_shape(self);
        assert_eq!(self.body["code"], code, "wrong code: {}", self.text);
        &self.body
    }

    /// `items` of a page.
    #[track_caller]
    pub fn items(&self) -> Vec<Value> {
        self.expect(200)["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items array: {}", self.text))
            .clone()
    }
}

/// Every error body: problem+json with type, title, status, detail and code.
#[track_caller]
pub fn assert_problem_shape(r: &Resp) {
    assert!(
        r.content_type.starts_with("application/problem+json"),
        "status {} content type {:?} is not application/problem+json: {}",
        r.status,
        r.content_type,
        r.text
    );
    for field in ["type", "title", "detail", "code"] {
        assert!(
            r.body[field].is_string(),
            "problem body lacks string field {field}: {}",
            r.text
        );
    }
    assert_eq!(
        r.body["status"].as_u64(),
        Some(u64::from(r.status)),
        "problem status field must equal the HTTP status: {}",
        r.text
    );
    assert_eq!(
        r.body["type"].as_str().unwrap(),
        format!("urn:tenantry:problem:{}", r.body["code"].as_str().unwrap())
    );
}

/// The `id`s of a list of JSON objects, in order.
pub fn ids(items: &[Value], field: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| i[field].as_str().expect("id field").to_owned())
        .collect()
}

/// A random UUID in text form.
pub fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl TestApp {
    /// A server with the test settings.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server with the test settings, adjusted by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_on_with(TestDatabase::new().await, adjust).await
    }

    /// A server over `db` (prepared by the test before the server starts),
    /// with the test settings adjusted by `adjust`.
    pub async fn spawn_on_with(db: TestDatabase, adjust: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = test_settings();
        adjust(&mut settings);
        let upkeep = match settings.metrics_refresh_secs {
            0 => None,
            _ => Some(upkeep_alone().await),
        };
        let admin_token = AdminToken::generate();
        let server = Server::start(&settings, db.database(), &admin_token).await;
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            base: server.base.clone(),
            admin_token,
            client,
            db,
            server,
            _upkeep: upkeep,
        }
    }

    /// A second server over the same database (its own key cache), default settings.
    pub async fn sibling(&self) -> Sibling {
        self.sibling_on(self.db.database()).await
    }

    /// A second server over the same database, with test settings adjusted by `adjust`.
    pub async fn sibling_with(&self, adjust: impl FnOnce(&mut Settings)) -> Sibling {
        let mut settings = test_settings();
        adjust(&mut settings);
        let server = Server::start(&settings, self.db.database(), &self.admin_token).await;
        Sibling {
            base: server.base.clone(),
            server,
        }
    }

    /// A second server over `database` (e.g. a pool holding another context key).
    pub async fn sibling_on(&self, database: tenantry_db::Database) -> Sibling {
        self.sibling_on_with(database, |_| {}).await
    }

    /// A second server over `database`, with test settings adjusted by `adjust`.
    pub async fn sibling_on_with(
        &self,
        database: tenantry_db::Database,
        adjust: impl FnOnce(&mut Settings),
    ) -> Sibling {
        let mut settings = test_settings();
        adjust(&mut settings);
        let server = Server::start(&settings, database, &self.admin_token).await;
        Sibling {
            base: server.base.clone(),
            server,
        }
    }

    /// A connection of the server's login switched to `tenantry_logger`, in
    /// a transaction of the administrative context its request-log writer
    /// proves (policy request_log_append): rows appended on it are the
    /// server's own once the caller commits.
    pub async fn request_log_writer(&self) -> tokio_postgres::Client {
        let c = self.db.server_client().await;
        c.batch_execute("SET ROLE tenantry_logger; BEGIN")
            .await
            .unwrap();
        let signed = tenantry_db::SignedContext::admin(Some("request_log".into()));
        let part = tenantry_db::testing::enter_signed(&c, &signed)
            .await
            .unwrap();
        assert!(part.is_some(), "the writer's context was refused");
        c
    }

    /// Triggers a graceful shutdown and waits for the server (and request-log flush).
    pub async fn shutdown(&mut self) {
        self.stop().await.expect("server returned an error");
    }

    /// Triggers a graceful shutdown and returns what the server's run
    /// returned: an error when its request log could not be flushed.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        match self.server.stop().await {
            Some(stopped) => stopped
                .expect("server did not stop within 60 s")
                .expect("server task panicked"),
            None => Ok(()),
        }
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request; `body` is sent as JSON when given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        read(req.send().await.expect("request failed")).await
    }

    /// Sends a raw request (any headers and body).
    pub async fn send_raw(&self, req: reqwest::RequestBuilder) -> Resp {
        read(req.send().await.expect("request failed")).await
    }

    /// Reads a response already received (its headers looked at first).
    pub async fn send_raw_response(&self, response: reqwest::Response) -> Resp {
        read(response).await
    }

    /// Sends `raw` bytes on a new connection and reads until the server
    /// closes it (at most 10 s): every answer it gave, as text.
    pub async fn raw_exchange(&self, raw: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(raw.as_bytes()).await.unwrap();
        let mut text = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_to_string(&mut text),
        )
        .await
        .expect("answered and closed within 10 s")
        .unwrap();
        text
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(Method::GET, path, Some(token), None).await
    }

    /// POST JSON with a token.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.send(Method::POST, path, Some(token), Some(body)).await
    }

    /// PATCH JSON with a token.
    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.send(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    /// PUT without a body.
    pub async fn put(&self, path: &str, token: &str) -> Resp {
        self.send(Method::PUT, path, Some(token), None).await
    }

    /// DELETE with a token.
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.send(Method::DELETE, path, Some(token), None).await
    }

    /// GET with the admin token.
    pub async fn admin_get(&self, path: &str) -> Resp {
        self.get(path, &self.admin_token).await
    }

    /// Polls `/metrics` (with the admin token) until `want` holds for the values
    /// of the series `names` (each `None` while absent; a series with labels
    /// named with them, `tenantry_x{a="b"}`), and returns them; panics with
    /// the last values seen after `within`.
    pub async fn metrics_until(
        &self,
        names: &[&str],
        within: std::time::Duration,
        want: impl Fn(&[Option<f64>]) -> bool,
    ) -> Vec<Option<f64>> {
        self.metrics_of_until(&self.base, names, within, want).await
    }

    /// [`TestApp::metrics_until`] of the server at `base` (a sibling's).
    pub async fn metrics_of_until(
        &self,
        base: &str,
        names: &[&str],
        within: std::time::Duration,
        want: impl Fn(&[Option<f64>]) -> bool,
    ) -> Vec<Option<f64>> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let text = read(
                self.client
                    .get(format!("{base}/metrics"))
                    .bearer_auth(&self.admin_token)
                    .send()
                    .await
                    .expect("request failed"),
            )
            .await
            .text;
            let seen: Vec<Option<f64>> = names
                .iter()
                .map(|name| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name} ")))
                        .and_then(|v| v.parse().ok())
                })
                .collect();
            if want(&seen) {
                return seen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{names:?} not as wanted within {within:?}: {seen:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// POST with the admin token.
    pub async fn admin_post(&self, path: &str, body: &Value) -> Resp {
        self.post(path, &self.admin_token, body).await
    }

    /// Creates a tenant with the admin token (201 expected); returns the tenant body.
    pub async fn create_tenant_with(&self, body: Value) -> Value {
        self.admin_post("/v1/tenants", &body)
            .await
            .expect(201)
            .clone()
    }

    /// Creates a tenant (optionally a child) with the admin token; returns its id.
    pub async fn create_tenant(&self, name: &str, parent: Option<&str>) -> String {
        let mut body = json!({ "name": name });
        if let Some(p) = parent {
            body["parent_id"] = json!(p);
        }
        self.create_tenant_with(body).await["tenant_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Adds a member by `email` with the tenant's `key` (no person signs in
    /// as it: its id is the database's); returns its user id.
    pub async fn add_member(&self, key: &str, email: &str) -> String {
        self.post("/v1/members", key, &json!({ "email": email }))
            .await
            .expect(201)["user_id"]
            .as_str()
            .expect("a user id")
            .to_owned()
    }

    /// Creates a key for `tenant` with the admin token; returns (key, key_id).
    pub async fn create_key(&self, tenant: &str, body: Value) -> (String, String) {
        let r = self
            .admin_post(&format!("/v1/tenants/{tenant}/keys"), &body)
            .await;
        let b = r.expect(201);
        (
            b["key"].as_str().unwrap().to_owned(),
            b["key_info"]["key_id"].as_str().unwrap().to_owned(),
        )
    }

    /// A tenant with an unbound key.
    pub async fn tenant(&self, name: &str) -> TenantKey {
        self.child_tenant(name, None).await
    }

    /// A tenant (child of `parent` when given) with an unbound key.
    pub async fn child_tenant(&self, name: &str, parent: Option<&str>) -> TenantKey {
        let id = self.create_tenant(name, parent).await;
        let (key, key_id) = self.create_key(&id, json!({})).await;
        TenantKey { id, key, key_id }
    }

    /// Creates a resource with `key` (201 expected); returns its id.
    pub async fn create_resource(&self, key: &str, name: &str) -> String {
        self.create_resource_with(key, json!({ "name": name, "data": { "n": name } }))
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a resource from a body (201 expected); returns the resource.
    pub async fn create_resource_with(&self, key: &str, body: Value) -> Value {
        self.post("/v1/resources", key, &body)
            .await
            .expect(201)
            .clone()
    }

    /// Creates a role with the given permissions (tenant key with roles.write); returns its id.
    pub async fn create_role(&self, key: &str, name: &str, permissions: &[&str]) -> String {
        let role = self
            .post("/v1/roles", key, &json!({ "name": name }))
            .await
            .expect(201)["role_id"]
            .as_str()
            .unwrap()
            .to_owned();
        for p in permissions {
            self.put(&format!("/v1/roles/{role}/permissions/{p}"), key)
                .await
                .expect(200);
        }
        role
    }

    /// Creates a key bound to `role` through `POST /v1/keys`; returns (key, key_id).
    pub async fn create_role_key(&self, key: &str, role: &str) -> (String, String) {
        let r = self
            .post("/v1/keys", key, &json!({ "role_id": role }))
            .await;
        let b = r.expect(201);
        (
            b["key"].as_str().unwrap().to_owned(),
            b["key_info"]["key_id"].as_str().unwrap().to_owned(),
        )
    }

    /// Names of the resources `key` lists with the query `query` (one page of up to 1000).
    pub async fn resource_names(&self, key: &str, query: &str) -> Vec<String> {
        let sep = if query.is_empty() { "" } else { "&" };
        let items = self
            .get(&format!("/v1/resources?limit=1000{sep}{query}"), key)
            .await
            .items();
        let mut names = ids(&items, "name");
        names.sort();
        names
    }

    /// Runs a superuser query returning one bigint.
    pub async fn count(&self, sql: &str) -> i64 {
        let client = self.db.superuser_client().await;
        client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
    }

    /// The schema of a schema-isolated tenant (`tenants.schema_name`, random), read as superuser.
    pub async fn schema_of(&self, tenant_id: &str) -> String {
        let client = self.db.superuser_client().await;
        client
            .query_one(
                "SELECT schema_name FROM tenantry.tenants WHERE tenant_id = $1::text::uuid",
                &[&tenant_id],
            )
            .await
            .unwrap()
            .get(0)
    }
}

async fn read(response: reqwest::Response) -> Resp {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let request_id = response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("a {status} answer without X-Request-Id"))
        .to_str()
        .expect("a printable X-Request-Id")
        .to_owned();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().expect("a printable Location").to_owned());
    let mut text = response.text().await.expect("reading the body");
    let mut body = serde_json::from_str(&text).unwrap_or(Value::Null);
    if content_type.starts_with("application/problem+json") {
        // Every problem names its request, as the header does. It is the one
        // member that differs between two otherwise identical answers, so it
        // is taken out of `body` and `text` (tests compare those to prove
        // that a foreign id answers exactly like a missing one).
        let named = body
            .as_object_mut()
            .and_then(|problem| problem.remove("request_id"));
        assert_eq!(
            named.as_ref().and_then(Value::as_str),
            Some(request_id.as_str()),
            "a problem must name its request as X-Request-Id does: {text}"
        );
        text = text.replace(&format!(",\"request_id\":\"{request_id}\""), "");
    }
    Resp {
        status,
        content_type,
        text,
        body,
        request_id,
        location,
    }
}

/// The body with each of `ids` replaced by `<id>`.
pub fn scrub(r: &Resp, ids: &[&str]) -> String {
    ids.iter()
        .fold(r.text.clone(), |t, id| t.replace(id, "<id>"))
}

/// Sends `method path` (with `body`) for a foreign id and for a missing id;
/// both must be 404 not_found with the same bytes once the ids are scrubbed.
pub async fn same_404(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    foreign: &str,
    body: Option<&Value>,
) {
    let missing = random_id();
    let a = app
        .send(
            method.clone(),
            &path.replace("{id}", foreign),
            Some(key),
            body,
        )
        .await;
    let b = app
        .send(
            method.clone(),
            &path.replace("{id}", &missing),
            Some(key),
            body,
        )
        .await;
    a.problem(404, "not_found");
    b.problem(404, "not_found");
    assert_eq!(
        scrub(&a, &[foreign, &missing]),
        scrub(&b, &[foreign, &missing]),
        "{method} {path}: a foreign id must answer exactly like a missing one"
    );
    assert_eq!(a.content_type, b.content_type);
}

/// Every item of `path` (a list of `field`s) walked `limit` at a time with
/// its cursors, in the order the pages give them.
pub async fn walk(
    app: &TestApp,
    path: &str,
    token: &str,
    limit: usize,
    field: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
            None => format!("{path}?limit={limit}"),
        };
        let body = app.get(&page, token).await.expect(200).clone();
        let items = body["items"].as_array().unwrap().clone();
        assert!(items.len() <= limit);
        seen.extend(ids(&items, field));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return seen,
        }
    }
}
