//! The tracker over HTTP on port 0, as `tenantry_server` on a fresh database per test: what a tenant does with its projects, issues and comments, each next to what another tenant's key gets for the same ids (exactly what a missing id gets); what keys bound to roles and people's tokens may read and write; request ids; and the database named by `DATABASE_URL`.

use issue_tracker::{
    config::{jwt_from_env, DatabaseSource},
    Application, Settings,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tenantry_axum::jwt::{
    testing::{IdentityProvider, AUDIENCE},
    JwtConfig,
};
use tenantry_db::{
    testing::TestDatabase, DbError, NewInvitation, NewKeyOptions, NewMember, NewTenant,
    PermissionSet, TenantContext, TenantId, UserId,
};

/// A running tracker and its database.
struct TestApp {
    base: String,
    http: reqwest::Client,
    tdb: TestDatabase,
}

/// An answer: status, content type, `X-Request-Id`, `Location` and body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: String,
    request_id: Option<String>,
    location: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn id(&self) -> String {
        self.json()["id"].as_str().expect("an id").to_owned()
    }

    /// The body with every uuid replaced, so answers about different ids compare.
    fn scrubbed(&self) -> String {
        let mut out = String::new();
        let mut rest = self.body.as_str();
        while !rest.is_empty() {
            let candidate = rest.get(..36).filter(|s| uuid::Uuid::parse_str(s).is_ok());
            match candidate {
                Some(_) => {
                    out.push_str("<id>");
                    rest = &rest[36..];
                }
                None => {
                    let c = rest.chars().next().expect("not empty");
                    out.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        out
    }
}

impl TestApp {
    async fn spawn() -> Self {
        Self::spawn_with(None).await
    }

    /// A tracker that also accepts the tokens `jwt` describes.
    async fn spawn_with(jwt: Option<JwtConfig>) -> Self {
        let tdb = TestDatabase::new().await;
        let settings = Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            migration: tdb.superuser_config(),
            server: tdb.server_config(),
            jwt,
        };
        Self::start(tdb, &settings).await
    }

    async fn start(tdb: TestDatabase, settings: &Settings) -> Self {
        let app = Application::build(settings)
            .await
            .expect("the tracker starts");
        let base = format!("http://{}", app.local_addr());
        tokio::spawn(app.run(std::future::pending()));
        Self {
            base,
            http: reqwest::Client::new(),
            tdb,
        }
    }

    /// A new tenant and an API key of it.
    async fn tenant_key(&self, name: &str) -> (TenantId, String) {
        self.tenant_key_under(name, None).await
    }

    /// [`tenant_key`](Self::tenant_key) for a child of `parent`.
    async fn tenant_key_under(&self, name: &str, parent: Option<TenantId>) -> (TenantId, String) {
        let db = self.tdb.database();
        let mut admin = db.admin("test").await.unwrap();
        let tenant = admin
            .create_tenant(&NewTenant {
                name: name.into(),
                parent_id: parent,
                ..Default::default()
            })
            .await
            .unwrap()
            .tenant_id;
        admin.commit().await.unwrap();
        let mut scope = db.tenant(TenantContext::new(tenant)).await.unwrap();
        let key = scope
            .create_api_key(&NewKeyOptions::default())
            .await
            .unwrap();
        scope.commit().await.unwrap();
        (tenant, key.secret.expose().to_owned())
    }

    /// A key of `tenant` bound to a new role `name` granted `permissions`.
    async fn role_key(&self, tenant: TenantId, name: &str, permissions: &[&str]) -> String {
        let db = self.tdb.database();
        let mut scope = db.tenant(TenantContext::new(tenant)).await.unwrap();
        let role = scope.create_role(name, "").await.unwrap();
        for permission in permissions {
            scope
                .grant_permission(role.role_id, permission)
                .await
                .unwrap();
        }
        let key = scope
            .create_api_key(&NewKeyOptions {
                role_id: Some(role.role_id),
                ..Default::default()
            })
            .await
            .unwrap();
        scope.commit().await.unwrap();
        key.secret.expose().to_owned()
    }

    /// Makes `user` a member of `tenant` (the first member owns it), with
    /// a new role `role` granted `permissions` when given: the tenant adds
    /// them (pending) and invites them, and they accept, as a person joins.
    async fn add_member(&self, tenant: TenantId, user: uuid::Uuid, role: Option<(&str, &[&str])>) {
        let db = self.tdb.database();
        let mut scope = db.tenant(TenantContext::new(tenant)).await.unwrap();
        let user = UserId::from_uuid(user);
        let email = format!("{user}@example.test");
        scope
            .add_member(&NewMember {
                user_id: Some(user),
                email: email.clone(),
                display_name: None,
            })
            .await
            .unwrap();
        let invitation = scope
            .create_invitation(&NewInvitation {
                email: None,
                user_id: Some(user),
                role_id: None,
                valid_for: None,
            })
            .await
            .unwrap();
        scope.commit().await.unwrap();
        db.accept_invitation(user, &invitation.token, Some(&email))
            .await
            .unwrap();
        let mut scope = db.tenant(TenantContext::new(tenant)).await.unwrap();
        if let Some((name, permissions)) = role {
            let role = scope.create_role(name, "").await.unwrap();
            for permission in permissions {
                scope
                    .grant_permission(role.role_id, permission)
                    .await
                    .unwrap();
            }
            scope.assign_role(user, role.role_id).await.unwrap();
        }
        scope.commit().await.unwrap();
    }

    async fn call(&self, key: &str, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call_with(key, &[], method, path, body).await
    }

    /// A request with extra `headers`.
    async fn call_with(
        &self,
        key: &str,
        headers: &[(&str, &str)],
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the tracker answers");
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Answer {
            status: response.status(),
            content_type: header(reqwest::header::CONTENT_TYPE.as_str()).unwrap_or_default(),
            request_id: header("x-request-id"),
            location: header("location"),
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&self, key: &str, path: &str) -> Answer {
        self.call(key, Method::GET, path, None).await
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> Answer {
        self.call(key, Method::POST, path, Some(body)).await
    }

    async fn patch(&self, key: &str, path: &str, body: Value) -> Answer {
        self.call(key, Method::PATCH, path, Some(body)).await
    }
}

/// A project with one issue that has one comment, made by `key`: their ids.
async fn project_issue_comment(app: &TestApp, key: &str) -> (String, String, String) {
    let project = app.post(key, "/projects", json!({"name": "Launch"})).await;
    assert_eq!(project.status, StatusCode::CREATED, "{}", project.body);
    assert_eq!(
        project.location,
        Some(format!("/projects/{}", project.id())),
        "a created row says where it is read"
    );
    let project = project.id();
    let issue = app
        .post(
            key,
            &format!("/projects/{project}/issues"),
            json!({"title": "Write the announcement"}),
        )
        .await;
    assert_eq!(issue.status, StatusCode::CREATED, "{}", issue.body);
    assert_eq!(issue.location, Some(format!("/issues/{}", issue.id())));
    let issue = issue.id();
    let comment = app
        .post(
            key,
            &format!("/issues/{issue}/comments"),
            json!({"body": "Draft in the shared folder"}),
        )
        .await;
    assert_eq!(comment.status, StatusCode::CREATED, "{}", comment.body);
    assert_eq!(
        comment.location,
        Some(format!("/comments/{}", comment.id()))
    );
    (project, issue, comment.id())
}

#[tokio::test]
async fn a_tenant_creates_updates_and_reads_back_its_projects_issues_and_comments() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_key("acme").await;
    let (project, issue, comment) = project_issue_comment(&app, &key).await;

    let renamed = app
        .patch(
            &key,
            &format!("/projects/{project}"),
            json!({"name": "Launch v2"}),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.json()["name"], "Launch v2");
    let closed = app
        .patch(
            &key,
            &format!("/issues/{issue}"),
            json!({"state": "closed"}),
        )
        .await;
    assert_eq!(closed.json()["state"], "closed");
    assert_eq!(closed.json()["title"], "Write the announcement");

    let projects = app.get(&key, "/projects").await.json();
    assert_eq!(projects["items"].as_array().unwrap().len(), 1);
    assert_eq!(projects["items"][0]["id"], project.as_str());
    assert_eq!(projects["next_cursor"], Value::Null);
    let issues = app
        .get(&key, &format!("/projects/{project}/issues"))
        .await
        .json()["items"]
        .clone();
    assert_eq!(issues[0]["id"], issue.as_str());
    assert_eq!(issues[0]["project_id"], project.as_str());
    let comments = app
        .get(&key, &format!("/issues/{issue}/comments"))
        .await
        .json()["items"]
        .clone();
    assert_eq!(comments[0]["id"], comment.as_str());
    assert_eq!(comments[0]["body"], "Draft in the shared folder");
    let got = app.get(&key, &format!("/issues/{issue}")).await;
    assert_eq!(got.json()["state"], "closed");

    let empty = app.post(&key, "/projects", json!({"name": ""})).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(empty.content_type, "application/problem+json");
    assert_eq!(empty.json()["field"], "name");
}

#[tokio::test]
async fn a_migration_that_retypes_a_column_while_the_tracker_serves_never_reaches_a_client_as_an_error(
) {
    // Every pooled connection keeps the read of a project prepared; a
    // column retyped since (text to varchar) makes PostgreSQL refuse that
    // statement on every later run. The read is run again after the pool
    // prepares its statements anew: every answer is a 200.
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_key("acme").await;
    let (project, issue, _) = project_issue_comment(&app, &key).await;
    let reads = [
        format!("/projects/{project}"),
        format!("/issues/{issue}"),
        "/projects".to_owned(),
        format!("/projects/{project}/issues"),
    ];
    let read_all = || async {
        let mut answers = Vec::new();
        for _ in 0..10 {
            for path in &reads {
                let answer = app.get(&key, path).await;
                answers.push((path.clone(), answer.status, answer.body));
            }
        }
        answers
    };
    read_all().await;
    let su = app.tdb.superuser_client().await;
    su.batch_execute(
        "ALTER TABLE projects ALTER COLUMN name TYPE varchar(200);
         ALTER TABLE issues ADD COLUMN estimate integer",
    )
    .await
    .unwrap();
    let refused: Vec<_> = read_all()
        .await
        .into_iter()
        .filter(|(_, status, _)| *status != StatusCode::OK)
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
}

/// Deleting a comment, an issue and a project answers 204 and takes what
/// names them along (an issue's comments, a project's issues); a second
/// delete of the same row is a 404 like a missing id, and a delete retried
/// with its `Idempotency-Key` gets the first 204 again.
#[tokio::test]
async fn a_tenant_deletes_a_comment_an_issue_and_a_project_with_what_hangs_off_them() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_key("acme").await;
    let (project, issue, comment) = project_issue_comment(&app, &key).await;
    let got = app.get(&key, &format!("/comments/{comment}")).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.json()["issue_id"], issue.as_str());

    let gone = app
        .call(&key, Method::DELETE, &format!("/comments/{comment}"), None)
        .await;
    assert_eq!(
        (gone.status, gone.body.as_str()),
        (StatusCode::NO_CONTENT, "")
    );
    let again = app
        .call(&key, Method::DELETE, &format!("/comments/{comment}"), None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);
    assert_eq!(again.content_type, "application/problem+json");
    assert_eq!(
        app.get(&key, &format!("/comments/{comment}")).await.status,
        StatusCode::NOT_FOUND
    );

    // An issue goes with its comments.
    let second = app
        .post(
            &key,
            &format!("/issues/{issue}/comments"),
            json!({"body": "Another"}),
        )
        .await
        .id();
    let delete_issue = |key: String| {
        let (app, path) = (&app, format!("/issues/{issue}"));
        async move {
            app.call_with(
                &key,
                &[("Idempotency-Key", "drop-issue")],
                Method::DELETE,
                &path,
                None,
            )
            .await
        }
    };
    let first = delete_issue(key.clone()).await;
    assert_eq!(first.status, StatusCode::NO_CONTENT, "{}", first.body);
    let retried = delete_issue(key.clone()).await;
    assert_eq!(retried.status, StatusCode::NO_CONTENT, "{}", retried.body);
    assert_eq!(
        app.get(&key, &format!("/comments/{second}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&key, &format!("/issues/{issue}/comments"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // A project goes with its issues and their comments.
    let issue = app
        .post(
            &key,
            &format!("/projects/{project}/issues"),
            json!({"title": "Left behind?"}),
        )
        .await
        .id();
    let comment = app
        .post(
            &key,
            &format!("/issues/{issue}/comments"),
            json!({"body": "No"}),
        )
        .await
        .id();
    let gone = app
        .call(&key, Method::DELETE, &format!("/projects/{project}"), None)
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.body);
    for path in [
        format!("/projects/{project}"),
        format!("/issues/{issue}"),
        format!("/comments/{comment}"),
    ] {
        assert_eq!(
            app.get(&key, &path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(
        app.get(&key, "/projects").await.json(),
        json!({"items": [], "next_cursor": null})
    );
    let counts: (i64, i64, i64) = {
        let su = app.tdb.superuser_client().await;
        let row = su
            .query_one(
                "SELECT (SELECT count(*) FROM projects), (SELECT count(*) FROM issues), \
                 (SELECT count(*) FROM comments)",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(counts, (0, 0, 0));
}

#[tokio::test]
async fn another_tenants_ids_answer_byte_for_byte_like_missing_ones_on_every_route() {
    let app = TestApp::spawn().await;
    let (_, acme) = app.tenant_key("acme").await;
    let (_, globex) = app.tenant_key("globex").await;
    let (project, issue, comment) = project_issue_comment(&app, &acme).await;
    let missing = uuid::Uuid::new_v4().to_string();

    // Each attempt of globex's, with acme's id and with an id nobody has.
    type Attempt = (Method, String, Option<Value>);
    let attempts = |p: &str, i: &str, c: &str| -> Vec<Attempt> {
        vec![
            (Method::GET, format!("/projects/{p}"), None),
            (
                Method::PATCH,
                format!("/projects/{p}"),
                Some(json!({"name": "mine"})),
            ),
            (Method::GET, format!("/projects/{p}/issues"), None),
            (
                Method::POST,
                format!("/projects/{p}/issues"),
                Some(json!({"title": "planted"})),
            ),
            (Method::GET, format!("/issues/{i}"), None),
            (
                Method::PATCH,
                format!("/issues/{i}"),
                Some(json!({"state": "closed"})),
            ),
            (Method::GET, format!("/issues/{i}/comments"), None),
            (
                Method::POST,
                format!("/issues/{i}/comments"),
                Some(json!({"body": "planted"})),
            ),
            (Method::GET, format!("/comments/{c}"), None),
            (Method::DELETE, format!("/comments/{c}"), None),
            (Method::DELETE, format!("/issues/{i}"), None),
            (Method::DELETE, format!("/projects/{p}"), None),
        ]
    };
    for (foreign, absent) in attempts(&project, &issue, &comment)
        .into_iter()
        .zip(attempts(&missing, &missing, &missing))
    {
        let what = format!("{} {}", foreign.0, foreign.1);
        let foreign = app.call(&globex, foreign.0, &foreign.1, foreign.2).await;
        let absent = app.call(&globex, absent.0, &absent.1, absent.2).await;
        assert_eq!(
            foreign.status,
            StatusCode::NOT_FOUND,
            "{what}: {}",
            foreign.body
        );
        assert_eq!(foreign.content_type, "application/problem+json", "{what}");
        assert_eq!(
            (
                foreign.status,
                foreign.content_type.as_str(),
                foreign.scrubbed()
            ),
            (
                absent.status,
                absent.content_type.as_str(),
                absent.scrubbed()
            ),
            "{what}"
        );
    }

    // Nothing of globex's reached acme's rows, and globex lists nothing.
    let issue_now = app.get(&acme, &format!("/issues/{issue}")).await.json();
    assert_eq!(issue_now["state"], "open");
    let project_now = app.get(&acme, &format!("/projects/{project}")).await.json();
    assert_eq!(project_now["name"], "Launch");
    let issues = app
        .get(&acme, &format!("/projects/{project}/issues"))
        .await
        .json();
    assert_eq!(issues["items"].as_array().unwrap().len(), 1, "{issues}");
    let comments = app
        .get(&acme, &format!("/issues/{issue}/comments"))
        .await
        .json();
    assert_eq!(comments["items"].as_array().unwrap().len(), 1, "{comments}");
    let comment_now = app.get(&acme, &format!("/comments/{comment}")).await;
    assert_eq!(comment_now.status, StatusCode::OK, "{}", comment_now.body);
    assert_eq!(
        app.get(&globex, "/projects").await.json(),
        json!({"items": [], "next_cursor": null})
    );
}

/// Lists come in pages, oldest first, each ending with the cursor of the
/// next (found by a review: they stopped at 1,000 rows without a word); a
/// cursor that is not a page's, or a limit out of range, is refused naming
/// the parameter; a project name taken answers 409 naming `name`.
#[tokio::test]
async fn lists_page_through_every_row_and_a_taken_name_names_its_field() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_key("acme").await;
    let mut made = Vec::new();
    for n in 0..5 {
        made.push(
            app.post(&key, "/projects", json!({"name": format!("p{n}")}))
                .await
                .id(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/projects?limit=2&cursor={c}"),
            None => "/projects?limit=2".to_owned(),
        };
        let page = app.get(&key, &path).await.json();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!((seen, pages), (made, 3));
    for (query, status, code, field) in [
        ("cursor=nope", 400, "invalid_cursor", "cursor"),
        ("limit=0", 422, "validation_failed", "limit"),
        ("limit=201", 422, "validation_failed", "limit"),
    ] {
        let refused = app.get(&key, &format!("/projects?{query}")).await;
        assert_eq!(refused.status.as_u16(), status, "{query}: {}", refused.body);
        assert_eq!(refused.json()["code"], code, "{query}");
        assert_eq!(refused.json()["field"], field, "{query}");
    }
    let taken = app.post(&key, "/projects", json!({"name": "p0"})).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    assert_eq!(taken.json()["field"], "name");
}

/// A create sent again with its `Idempotency-Key` (a client retrying after a
/// lost answer) is answered with the first response and writes nothing more;
/// the key with another body is refused, and another tenant's same key is
/// its own (found by a review: the header was ignored, and retries wrote twice).
#[tokio::test]
async fn a_create_retried_with_its_idempotency_key_is_answered_once_and_written_once() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_key("acme").await;
    let (_, other_key) = app.tenant_key("globex").await;
    let send = |key: String, body: Value| {
        let app = &app;
        async move {
            app.call_with(
                &key,
                &[("Idempotency-Key", "order-42")],
                Method::POST,
                "/projects",
                Some(body),
            )
            .await
        }
    };
    let first = send(key.clone(), json!({"name": "Launch"})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = send(key.clone(), json!({"name": "Launch"})).await;
    assert_eq!(
        (again.status, &again.body),
        (StatusCode::CREATED, &first.body)
    );
    let changed = send(key.clone(), json!({"name": "Other"})).await;
    assert_eq!(
        changed.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        changed.body
    );
    let projects = app.get(&key, "/projects").await.json();
    assert_eq!(projects["items"].as_array().unwrap().len(), 1, "{projects}");
    let theirs = send(other_key, json!({"name": "Launch"})).await;
    assert_eq!(theirs.status, StatusCode::CREATED, "{}", theirs.body);
    assert_ne!(theirs.id(), first.id());
}

/// A parent tenant reads and changes its child's rows (the tables keep the
/// hierarchy on); an issue or comment it adds to its child's project or
/// issue goes to the child, where the others are. An unrelated tenant gets
/// the missing id's answer on the same routes.
#[tokio::test]
async fn a_parent_tenant_files_issues_and_comments_in_its_childs_project_with_the_child() {
    let app = TestApp::spawn().await;
    let (parent, parent_key) = app.tenant_key("acme").await;
    let (_, stranger) = app.tenant_key("globex").await;
    let (_, child_key) = app.tenant_key_under("acme-eu", Some(parent)).await;
    let project = app
        .post(&child_key, "/projects", json!({"name": "eu"}))
        .await
        .id();
    let issue = app
        .post(
            &parent_key,
            &format!("/projects/{project}/issues"),
            json!({"title": "from the parent"}),
        )
        .await;
    assert_eq!(issue.status, StatusCode::CREATED, "{}", issue.body);
    let issue = issue.id();
    let comment = app
        .post(
            &parent_key,
            &format!("/issues/{issue}/comments"),
            json!({"body": "noted"}),
        )
        .await;
    assert_eq!(comment.status, StatusCode::CREATED, "{}", comment.body);
    // The child sees them as its own.
    let issues = app
        .get(&child_key, &format!("/projects/{project}/issues"))
        .await
        .json();
    assert_eq!(issues["items"][0]["id"], issue.as_str());
    let comments = app
        .get(&child_key, &format!("/issues/{issue}/comments"))
        .await
        .json();
    assert_eq!(comments["items"][0]["body"], "noted");
    // A stranger: the answers of ids that do not exist.
    let missing = uuid::Uuid::new_v4();
    for (theirs, nobodys) in [
        (
            format!("/projects/{project}/issues"),
            format!("/projects/{missing}/issues"),
        ),
        (
            format!("/issues/{issue}/comments"),
            format!("/issues/{missing}/comments"),
        ),
    ] {
        let body = json!({"title": "x", "body": "x"});
        let (a, b) = (
            app.post(&stranger, &theirs, body.clone()).await,
            app.post(&stranger, &nobodys, body).await,
        );
        assert_eq!(
            (a.status, a.json()["detail"].clone()),
            (b.status, b.json()["detail"].clone()),
            "{theirs}"
        );
    }
}

#[tokio::test]
async fn requests_without_a_valid_key_or_of_a_suspended_tenant_are_refused_as_problem_json() {
    let app = TestApp::spawn().await;
    let (tenant, key) = app.tenant_key("acme").await;
    for bad in [
        "",
        "not-a-key",
        "tk_000000000000_0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let answer = app.get(bad, "/projects").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        assert_eq!(answer.content_type, "application/problem+json");
        assert_eq!(answer.json()["code"], "unauthorized");
    }
    let db = app.tdb.database();
    let mut admin = db.admin("test").await.unwrap();
    admin
        .set_status(tenant, tenantry_db::TenantStatus::Suspended)
        .await
        .unwrap();
    admin.commit().await.unwrap();
    // The key cache trusts a verified key for a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let answer = app.get(&key, "/projects").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(answer.json()["code"], "tenant_suspended");
}

#[tokio::test]
async fn a_method_a_route_does_not_take_and_an_unknown_route_answer_problem_json() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_key("acme").await;
    for method in [Method::DELETE, Method::PUT] {
        let answer = app.call(&key, method.clone(), "/projects", None).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(answer.content_type, "application/problem+json", "{method}");
        assert_eq!(answer.json()["code"], "method_not_allowed", "{method}");
    }
    let answer = app.get(&key, "/nowhere").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.content_type, "application/problem+json");
}

/// A grant the tracker's tables need, revoked by hand while it serves (a
/// DBA undoing what looked like a stray grant): every client would be
/// refused alike, so the answer is the service's (503, problem+json), never
/// a 403 that blames the client and names the table (found by a DBA's
/// review: "permission denied for table roles" reached tenants). Granted
/// back, the tracker serves again.
#[tokio::test]
async fn a_grant_revoked_from_under_the_tracker_answers_503_naming_no_table_and_serving_resumes_once_restored(
) {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_key("acme").await;
    assert_eq!(app.get(&key, "/projects").await.status, StatusCode::OK);
    let su = app.tdb.superuser_client().await;
    su.batch_execute(
        "REVOKE SELECT ON projects FROM tenantry_app, tenantry_app_own, tenantry_app_shared",
    )
    .await
    .unwrap();
    let answer = app.get(&key, "/projects").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.json()["code"], "service_unavailable");
    assert!(
        !answer.body.contains("projects") && !answer.body.contains("permission denied"),
        "{}",
        answer.body
    );
    // Adopting again gives back what adoption grants (the doctor's fix).
    su.batch_execute("SELECT tenantry.adopt_table('projects')")
        .await
        .unwrap();
    assert_eq!(app.get(&key, "/projects").await.status, StatusCode::OK);
}

/// The tenant's own key holds every permission defined; a route that
/// requires one no migration defined is the application's mistake, not the
/// key's: 503 (problem+json, the operator told in the log), where a 403 said
/// the key lacked it (found by a review of the Rust path). Defined, the key
/// holds it.
#[tokio::test]
async fn a_permission_a_route_requires_that_nothing_defined_answers_503_to_the_tenants_own_key() {
    let app = TestApp::spawn().await;
    let su = app.tdb.superuser_client().await;
    su.batch_execute("DELETE FROM tenantry.permissions WHERE name = 'tracker.read'")
        .await
        .unwrap();
    let (_, key) = app.tenant_key("acme").await;
    let answer = app.get(&key, "/projects").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.content_type, "application/problem+json");
    assert!(!answer.body.contains("tracker.read"), "{}", answer.body);
    su.batch_execute("SELECT tenantry.define_permission('tracker.read', 'Issue tracker: read')")
        .await
        .unwrap();
    // The key's permissions as verified are cached for a second.
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        status = app.get(&key, "/projects").await.status;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK);
}

/// The tracker's refusal over `projects` made by another application as
/// `create_projects` makes it.
async fn refusal_over(create_projects: &str) -> String {
    let tdb = TestDatabase::new().await;
    tdb.superuser_client()
        .await
        .batch_execute(create_projects)
        .await
        .unwrap();
    let refused = Application::build(&Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        migration: tdb.superuser_config(),
        server: tdb.server_config(),
        jwt: None,
    })
    .await
    .err()
    .expect("the tracker refuses to start");
    format!("{refused:#}")
}

#[tokio::test]
async fn the_tracker_refuses_to_start_over_a_table_of_its_name_that_another_application_made() {
    // The README's psql walkthrough once made a `projects` of its own here.
    let message = refusal_over(
        "CREATE TABLE projects (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                name text NOT NULL, PRIMARY KEY (tenant_id, id))",
    )
    .await;
    assert!(
        message.contains("table projects in this database is not the issue tracker's (it has no column created_at)"),
        "{message}"
    );
    // One the migration's references cannot use: named the same way, not
    // with PostgreSQL's words about a foreign key (found by a review of the
    // docs).
    let message = refusal_over("CREATE TABLE projects (x int)").await;
    assert!(
        message.contains(
            "table projects in this database is not the issue tracker's (it has no column tenant_id, id, name, created_at)"
        ),
        "{message}"
    );
    assert!(
        message.contains("TENANTRY_DATA_DIR=.tenantry-tracker"),
        "{message}"
    );
}

#[tokio::test]
async fn every_tenant_request_leaves_a_request_log_row_with_its_route() {
    let app = TestApp::spawn().await;
    let (tenant, key) = app.tenant_key("acme").await;
    let (project, _, _) = project_issue_comment(&app, &key).await;
    assert_eq!(
        app.get(&key, &format!("/projects/{project}")).await.status,
        StatusCode::OK
    );

    let su = app.tdb.superuser_client().await;
    let mut routes = Vec::new();
    for _ in 0..50 {
        routes = su
            .query(
                "SELECT method || ' ' || route FROM tenantry.request_log WHERE tenant_id = $1 ORDER BY created_at",
                &[tenant.as_uuid()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>();
        if routes.len() == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        routes,
        [
            "POST /projects",
            "POST /projects/{id}/issues",
            "POST /issues/{id}/comments",
            "GET /projects/{id}",
        ]
    );
}

/// Every read route and every write route for one project and issue.
type Call = (Method, String, Option<Value>);

fn reads(project: &str, issue: &str) -> Vec<Call> {
    vec![
        (Method::GET, "/projects".into(), None),
        (Method::GET, format!("/projects/{project}"), None),
        (Method::GET, format!("/projects/{project}/issues"), None),
        (Method::GET, format!("/issues/{issue}"), None),
        (Method::GET, format!("/issues/{issue}/comments"), None),
    ]
}

fn writes(project: &str, issue: &str) -> Vec<Call> {
    vec![
        (
            Method::POST,
            "/projects".into(),
            Some(json!({"name": "Planted"})),
        ),
        (
            Method::PATCH,
            format!("/projects/{project}"),
            Some(json!({"name": "Renamed"})),
        ),
        (
            Method::POST,
            format!("/projects/{project}/issues"),
            Some(json!({"title": "Planted"})),
        ),
        (
            Method::PATCH,
            format!("/issues/{issue}"),
            Some(json!({"state": "closed"})),
        ),
        (
            Method::POST,
            format!("/issues/{issue}/comments"),
            Some(json!({"body": "Planted"})),
        ),
        // Last: they remove the rows the writes above name.
        (Method::DELETE, format!("/issues/{issue}"), None),
        (Method::DELETE, format!("/projects/{project}"), None),
    ]
}

/// Asserts `answer` is the 403 of a caller lacking `permission`.
fn assert_lacks(answer: &Answer, permission: &str, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::FORBIDDEN,
        "{what}: {}",
        answer.body
    );
    assert_eq!(answer.content_type, "application/problem+json", "{what}");
    assert_eq!(answer.json()["code"], "permission_denied", "{what}");
    let detail = answer.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(detail.contains(permission), "{what}: {detail}");
}

/// What `key`'s tenant holds: project names, issue states and the comment count.
async fn holdings(app: &TestApp, key: &str, project: &str, issue: &str) -> (Value, Value, usize) {
    let projects = app.get(key, "/projects").await.json()["items"].clone();
    let names = json!(projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect::<Vec<_>>());
    let issues = app
        .get(key, &format!("/projects/{project}/issues"))
        .await
        .json()["items"]
        .clone();
    let states = json!(issues
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].clone())
        .collect::<Vec<_>>());
    let comments = app
        .get(key, &format!("/issues/{issue}/comments"))
        .await
        .json();
    (names, states, comments["items"].as_array().unwrap().len())
}

#[tokio::test]
async fn a_key_bound_to_a_read_only_role_reads_every_route_and_is_refused_every_write() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant_key("acme").await;
    let (project, issue, _) = project_issue_comment(&app, &owner).await;
    let reader = app.role_key(tenant, "readers", &["tracker.read"]).await;
    // tenantry's own read permission is not the tracker's.
    let resources = app
        .role_key(
            tenant,
            "resource readers",
            &["resources.read", "resources.write"],
        )
        .await;
    let before = holdings(&app, &owner, &project, &issue).await;

    for (method, path, body) in reads(&project, &issue) {
        let answer = app.call(&reader, method.clone(), &path, body).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{method} {path}: {}",
            answer.body
        );
    }
    for (method, path, body) in writes(&project, &issue) {
        let what = format!("{method} {path}");
        let answer = app.call(&reader, method, &path, body).await;
        assert_lacks(&answer, "tracker.write", &what);
    }
    for (method, path, body) in reads(&project, &issue)
        .into_iter()
        .chain(writes(&project, &issue))
    {
        let what = format!("{method} {path} with resources.*");
        let permission = if method == Method::GET {
            "tracker.read"
        } else {
            "tracker.write"
        };
        let answer = app.call(&resources, method, &path, body).await;
        assert_lacks(&answer, permission, &what);
    }
    // A write the reader cannot make is refused before its body is checked.
    let empty = app.post(&reader, "/projects", json!({"name": ""})).await;
    assert_lacks(&empty, "tracker.write", "POST /projects with an empty name");
    assert_eq!(holdings(&app, &owner, &project, &issue).await, before);

    // A role granted both reads and writes, like the tenant's own key.
    let writer = app
        .role_key(tenant, "writers", &["tracker.read", "tracker.write"])
        .await;
    for (method, path, body) in writes(&project, &issue) {
        let answer = app.call(&writer, method.clone(), &path, body).await;
        assert!(
            answer.status.is_success(),
            "{method} {path}: {}",
            answer.body
        );
    }
}

#[tokio::test]
async fn a_key_bound_to_a_role_without_permissions_is_refused_reads_and_writes_alike() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant_key("acme").await;
    let (project, issue, _) = project_issue_comment(&app, &owner).await;
    let nobody = app.role_key(tenant, "nobody", &[]).await;
    let missing = uuid::Uuid::new_v4().to_string();
    for (method, path, body) in reads(&project, &issue).into_iter().chain(
        // The refusal does not depend on the ids: nothing is learnt from it.
        reads(&missing, &missing),
    ) {
        let what = format!("{method} {path}");
        assert_lacks(
            &app.call(&nobody, method, &path, body).await,
            "tracker.read",
            &what,
        );
    }
    for (method, path, body) in writes(&project, &issue)
        .into_iter()
        .chain(writes(&missing, &missing))
    {
        let what = format!("{method} {path}");
        assert_lacks(
            &app.call(&nobody, method, &path, body).await,
            "tracker.write",
            &what,
        );
    }
    // The tenant's own (unbound) key holds every permission, as before.
    for (method, path, body) in reads(&project, &issue) {
        let answer = app.call(&owner, method.clone(), &path, body).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{method} {path}: {}",
            answer.body
        );
    }
}

#[tokio::test]
async fn the_database_itself_refuses_writes_to_the_tracker_tables_without_tracker_write() {
    let app = TestApp::spawn().await;
    let (tenant, owner) = app.tenant_key("acme").await;
    let (project, issue, _) = project_issue_comment(&app, &owner).await;
    let su = app.tdb.superuser_client().await;
    let adopted = tenantry_db::tables::tenant_tables(&su).await.unwrap();
    let ours: Vec<(String, Option<String>)> = adopted
        .into_iter()
        .filter(|t| ["projects", "issues", "comments"].contains(&t.table.as_str()))
        .map(|t| (t.table, t.write_permission))
        .collect();
    assert_eq!(ours.len(), 3, "{ours:?}");
    for (table, permission) in &ours {
        assert_eq!(permission.as_deref(), Some("tracker.write"), "{table}");
    }

    // Straight SQL in the tenant's transaction, past every handler.
    let db = app.tdb.database();
    let reader = || {
        TenantContext::new(tenant)
            .with_permissions(["tracker.read"].into_iter().collect::<PermissionSet>())
    };
    let project = uuid::Uuid::parse_str(&project).unwrap();
    let issue = uuid::Uuid::parse_str(&issue).unwrap();
    let inserts: [(&str, &[&(dyn tokio_postgres::types::ToSql + Sync)]); 3] = [
        ("INSERT INTO projects (name) VALUES ('planted')", &[]),
        (
            "INSERT INTO issues (project_id, title) VALUES ($1, 'planted')",
            &[&project],
        ),
        (
            "INSERT INTO comments (issue_id, body) VALUES ($1, 'planted')",
            &[&issue],
        ),
    ];
    for (sql, params) in inserts {
        let mut scope = db.tenant(reader()).await.unwrap();
        let err = scope.execute(sql, params).await.unwrap_err();
        assert!(
            matches!(err, DbError::PermissionDenied(_)),
            "{sql}: {err:?}"
        );
    }
    // Rows a caller may not change are not there for its UPDATE (PostgreSQL's
    // policies filter them): nothing is updated.
    let mut scope = db.tenant(reader()).await.unwrap();
    let updated = scope
        .execute(
            "UPDATE issues SET state = 'closed' WHERE id = $1",
            &[&issue],
        )
        .await
        .unwrap();
    assert_eq!(updated, 0);
    scope.commit().await.unwrap();
    let mut scope = db.tenant(reader()).await.unwrap();
    let counts: (i64, i64, i64, String) = scope
        .query_one(
            "SELECT (SELECT count(*) FROM projects), (SELECT count(*) FROM issues),
                    (SELECT count(*) FROM comments), (SELECT state FROM issues)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(counts, (1, 1, 1, "open".to_owned()));
}

const HS_SECRET: &str = "a shared secret of at least thirty-two bytes";

#[tokio::test]
async fn a_persons_token_reads_the_tenant_it_names_and_another_tenant_answers_like_a_missing_one() {
    let idp = IdentityProvider::start().await;
    // Configured as the tracker's main() reads it: the TENANTRY_JWT_* variables.
    let issuer = idp.issuer();
    let jwt = jwt_from_env(|name| match name {
        "TENANTRY_JWT_ISSUER" => Some(issuer.clone()),
        "TENANTRY_JWT_AUDIENCE" => Some(AUDIENCE.into()),
        "TENANTRY_JWT_HS256_SECRET" => Some(HS_SECRET.into()),
        _ => None,
    })
    .unwrap();
    let app = TestApp::spawn_with(jwt).await;
    let (acme, acme_key) = app.tenant_key("acme").await;
    let (globex, _) = app.tenant_key("globex").await;
    let (project, issue, _) = project_issue_comment(&app, &acme_key).await;
    // Alice owns acme (its first member); Bob's only role there reads.
    let (alice, bob) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    app.add_member(acme, alice, None).await;
    app.add_member(acme, bob, Some(("readers", &["tracker.read"])))
        .await;
    let token = |user: uuid::Uuid| idp.hs256(HS_SECRET, idp.claims(&user.to_string()));
    let (alice, bob) = (token(alice), token(bob));
    let acme = acme.to_string();

    let mine = app
        .call_with(
            &alice,
            &[("X-Tenant-Id", &acme)],
            Method::GET,
            "/projects",
            None,
        )
        .await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.body);
    assert_eq!(mine.json()["items"][0]["id"], project.as_str());
    let created = app
        .call_with(
            &alice,
            &[("X-Tenant-Id", &acme)],
            Method::POST,
            &format!("/projects/{project}/issues"),
            Some(json!({"title": "Filed by Alice"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    // Another tenant, and one that does not exist: the same 404.
    let missing = uuid::Uuid::new_v4().to_string();
    let elsewhere = app
        .call_with(
            &alice,
            &[("X-Tenant-Id", &globex.to_string())],
            Method::GET,
            "/projects",
            None,
        )
        .await;
    let nowhere = app
        .call_with(
            &alice,
            &[("X-Tenant-Id", &missing)],
            Method::GET,
            "/projects",
            None,
        )
        .await;
    assert_eq!(
        elsewhere.status,
        StatusCode::NOT_FOUND,
        "{}",
        elsewhere.body
    );
    assert_eq!(elsewhere.content_type, "application/problem+json");
    assert_eq!(
        (
            elsewhere.status,
            elsewhere.content_type.as_str(),
            elsewhere.scrubbed()
        ),
        (
            nowhere.status,
            nowhere.content_type.as_str(),
            nowhere.scrubbed()
        )
    );

    // Bob reads every route and writes none.
    for (method, path, body) in reads(&project, &issue) {
        let answer = app
            .call_with(&bob, &[("X-Tenant-Id", &acme)], method.clone(), &path, body)
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{method} {path}: {}",
            answer.body
        );
    }
    for (method, path, body) in writes(&project, &issue) {
        let what = format!("{method} {path}");
        let answer = app
            .call_with(&bob, &[("X-Tenant-Id", &acme)], method, &path, body)
            .await;
        assert_lacks(&answer, "tracker.write", &what);
    }
    let issues = app
        .get(&acme_key, &format!("/projects/{project}/issues"))
        .await
        .json()["items"]
        .clone();
    assert_eq!(issues.as_array().unwrap().len(), 2, "{issues}");
    assert_eq!(issues[0]["state"], "open");
}

#[tokio::test]
async fn every_response_carries_a_request_id_that_problem_bodies_repeat() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_key("acme").await;
    let ok = app.get(&key, "/projects").await;
    assert_eq!(ok.status, StatusCode::OK);
    let made = ok.request_id.as_deref().expect("an X-Request-Id");
    assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");

    let missing = format!("/projects/{}", uuid::Uuid::new_v4());
    let sent = "ticket-42.retry:1_a";
    for (key, path) in [
        (key.as_str(), missing.as_str()),
        ("not-a-key", "/projects"),
        (key.as_str(), "/nowhere"),
    ] {
        let problem = app
            .call_with(key, &[("X-Request-Id", sent)], Method::GET, path, None)
            .await;
        assert_eq!(problem.content_type, "application/problem+json", "{path}");
        assert_eq!(problem.request_id.as_deref(), Some(sent), "{path}");
        assert_eq!(problem.json()["request_id"], sent, "{path}");
    }
}

#[tokio::test]
async fn the_tracker_serves_the_database_database_url_names_and_migrates_it_through_its_migration_url(
) {
    let tdb = TestDatabase::new().await;
    let (server, migration) = (tdb.server_url(), tdb.superuser_url());
    let source = DatabaseSource::from_env(|name| match name {
        "DATABASE_URL" => Some(server.clone()),
        "ISSUE_TRACKER_MIGRATION_URL" => Some(migration.clone()),
        _ => None,
    })
    .unwrap();
    let DatabaseSource::Url { server, migration } = source else {
        panic!("DATABASE_URL is set: {source:?}");
    };
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        migration: *migration,
        server: *server,
        jwt: None,
    };
    let app = TestApp::start(tdb, &settings).await;
    let (_, key) = app.tenant_key("acme").await;
    let created = app.post(&key, "/projects", json!({"name": "Launch"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        app.get(&key, "/projects").await.json()["items"][0]["name"],
        "Launch"
    );
}

#[tokio::test]
async fn the_tracker_refuses_to_start_on_a_database_tenantry_has_not_migrated() {
    let tdb = TestDatabase::new().await;
    let bare = format!("{}_bare", tdb.name());
    let su = tdb.superuser_client().await;
    su.batch_execute(&format!("CREATE DATABASE {bare}"))
        .await
        .unwrap();
    let mut migration = tdb.superuser_config();
    migration.dbname(&bare);
    let mut server = tdb.server_config();
    server.dbname(&bare);
    let refused = Application::build(&Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        migration,
        server,
        jwt: None,
    })
    .await
    .err()
    .expect("the tracker refuses to start");
    su.batch_execute(&format!("DROP DATABASE {bare} WITH (FORCE)"))
        .await
        .unwrap();
    let message = format!("{refused:#}");
    assert!(
        message.contains("cargo run -p tenantry-cli -- migrate"),
        "{message}"
    );
}

/// The tracker's router carries the HTTP hygiene `tenantry serve` has
/// (`tenantry_axum::serve::http_hygiene`): its answers, which hold tenants'
/// data, are not stored by caches, a write whose precondition cannot hold is
/// 412, and a request without a Host is refused before any route reads it.
#[tokio::test]
async fn the_trackers_answers_are_not_cached_and_malformed_requests_are_refused_first() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant_key("acme").await;
    let response = app
        .http
        .get(format!("{}/projects", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[reqwest::header::CACHE_CONTROL],
        "no-store"
    );
    // A write whose precondition cannot hold is refused after the key is
    // accepted, and changes nothing.
    let (project, _, _) = project_issue_comment(&app, &key).await;
    let guarded = app
        .call_with(
            &key,
            &[("if-none-match", "*")],
            Method::PATCH,
            &format!("/projects/{project}"),
            Some(json!({"name": "Changed"})),
        )
        .await;
    assert_eq!(
        guarded.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        guarded.body
    );
    let unchanged = app.get(&key, &format!("/projects/{project}")).await;
    assert_ne!(unchanged.json()["name"], "Changed");
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut client = tokio::net::TcpStream::connect(&addr).await.unwrap();
    client
        .write_all(b"GET /projects HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    client.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("invalid_header"), "{text}");
}
