//! The tracker over HTTP on port 0, as `tenantry_server` on a fresh database per test: what a tenant does with its projects, issues and comments, each next to what another tenant's key gets for the same ids (exactly what a missing id gets).

use issue_tracker::{Application, Settings};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tenantry_db::{testing::TestDatabase, NewKeyOptions, NewTenant, TenantContext, TenantId};

/// A running tracker and its database.
struct TestApp {
    base: String,
    http: reqwest::Client,
    tdb: TestDatabase,
}

/// An answer: status, content type and body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: String,
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
        let tdb = TestDatabase::new().await;
        let app = Application::build(&Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            migration: tdb.superuser_config(),
            server: tdb.server_config(),
        })
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
        let db = self.tdb.database();
        let mut admin = db.admin("test").await.unwrap();
        let tenant = admin
            .create_tenant(&NewTenant {
                name: name.into(),
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

    async fn call(&self, key: &str, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the tracker answers");
        Answer {
            status: response.status(),
            content_type: response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
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
    let project = project.id();
    let issue = app
        .post(
            key,
            &format!("/projects/{project}/issues"),
            json!({"title": "Write the announcement"}),
        )
        .await;
    assert_eq!(issue.status, StatusCode::CREATED, "{}", issue.body);
    let issue = issue.id();
    let comment = app
        .post(
            key,
            &format!("/issues/{issue}/comments"),
            json!({"body": "Draft in the shared folder"}),
        )
        .await;
    assert_eq!(comment.status, StatusCode::CREATED, "{}", comment.body);
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
    assert_eq!(projects.as_array().unwrap().len(), 1);
    assert_eq!(projects[0]["id"], project.as_str());
    let issues = app
        .get(&key, &format!("/projects/{project}/issues"))
        .await
        .json();
    assert_eq!(issues[0]["id"], issue.as_str());
    assert_eq!(issues[0]["project_id"], project.as_str());
    let comments = app
        .get(&key, &format!("/issues/{issue}/comments"))
        .await
        .json();
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
async fn another_tenants_ids_answer_byte_for_byte_like_missing_ones_on_every_route() {
    let app = TestApp::spawn().await;
    let (_, acme) = app.tenant_key("acme").await;
    let (_, globex) = app.tenant_key("globex").await;
    let (project, issue, _) = project_issue_comment(&app, &acme).await;
    let missing = uuid::Uuid::new_v4().to_string();

    // Each attempt of globex's, with acme's id and with an id nobody has.
    type Attempt = (Method, String, Option<Value>);
    let attempts = |p: &str, i: &str| -> Vec<Attempt> {
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
        ]
    };
    for (foreign, absent) in attempts(&project, &issue)
        .into_iter()
        .zip(attempts(&missing, &missing))
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
    assert_eq!(issues.as_array().unwrap().len(), 1, "{issues}");
    let comments = app
        .get(&acme, &format!("/issues/{issue}/comments"))
        .await
        .json();
    assert_eq!(comments.as_array().unwrap().len(), 1, "{comments}");
    assert_eq!(app.get(&globex, "/projects").await.json(), json!([]));
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

#[tokio::test]
async fn the_tracker_refuses_to_start_over_a_table_of_its_name_that_another_application_made() {
    let tdb = TestDatabase::new().await;
    // The README's psql walkthrough once made a `projects` of its own here.
    tdb.superuser_client()
        .await
        .batch_execute(
            "CREATE TABLE projects (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
                                    name text NOT NULL, PRIMARY KEY (tenant_id, id))",
        )
        .await
        .unwrap();
    let refused = Application::build(&Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        migration: tdb.superuser_config(),
        server: tdb.server_config(),
    })
    .await
    .err()
    .expect("the tracker refuses to start");
    let message = format!("{refused:#}");
    assert!(
        message.contains("table projects in this database is not the issue tracker's (it has no column created_at)"),
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
